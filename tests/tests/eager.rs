//! Eager loading named on the query (`with_children`, `with_parent`,
//! `through`): one statement per relation whatever the number of rows,
//! collections readable afterwards without SQL, results identity-mapped.

mod support;

use std::future::Future;
use std::time::Duration;

use orm_core::{Database, DatabaseConfig, Entity, Error, Tracked};
use orm_tests::TestDb;
use support::blog::{self, Comment, Post, User};

#[derive(Entity, Clone, Debug, PartialEq)]
struct Article {
    #[orm(primary_key, generated)]
    id: i64,
    title: String,
}

#[derive(Entity, Clone, Debug, PartialEq)]
struct Tag {
    #[orm(primary_key)]
    name: String,
}

/// The join entity of the many-to-many relation between articles and tags.
#[derive(Entity, Clone, Debug, PartialEq)]
struct ArticleTag {
    #[orm(primary_key, references = Article)]
    article_id: i64,
    #[orm(primary_key, references = Tag, relation = "tag")]
    tag_name: String,
}

/// Beside `blog::SCHEMA`: `users` 1..=`users`, each with `posts` posts
/// (post `p` of user `u` titled "u p"), each with `comments` comments.
fn seed(users: i64, posts: i64, comments: i64) -> String {
    format!(
        "INSERT INTO users (name) SELECT 'user ' || u FROM generate_series(1, {users}) u;
         INSERT INTO post (author_id, title) SELECT u, u || ' ' || p
             FROM generate_series(1, {users}) u, generate_series(1, {posts}) p ORDER BY u, p;
         INSERT INTO comment (post_id, body) SELECT p.id, p.title || ' comment ' || c
             FROM post p, generate_series(1, {comments}) c ORDER BY p.id, c;
         CREATE INDEX ON post (author_id); CREATE INDEX ON comment (post_id);
         CREATE TABLE article (id bigserial PRIMARY KEY, title text NOT NULL);
         CREATE TABLE tag (name text PRIMARY KEY);
         CREATE TABLE article_tag (article_id bigint REFERENCES article, tag_name text REFERENCES tag,
                                   PRIMARY KEY (article_id, tag_name));"
    )
}

async fn setup(users: i64, posts: i64, comments: i64) -> (TestDb, Database) {
    let test_db = TestDb::new().await;
    let client = test_db.client().await;
    client.batch_execute(blog::SCHEMA).await.unwrap();
    client.batch_execute(&seed(users, posts, comments)).await.unwrap();
    let db = Database::with_config(DatabaseConfig::from_url(test_db.url()).unwrap()).unwrap();
    (test_db, db)
}

/// Runs a test body with a bound, so that a hang fails instead of stalling.
async fn bounded<F: Future<Output = ()>>(body: F) {
    tokio::time::timeout(Duration::from_secs(60), body).await.expect("the test finished within 60 s");
}

/// Every user in key order, with their posts and the posts' comments.
async fn every_user_with_posts_and_comments(session: &mut orm_core::Session) -> Vec<Tracked<User>> {
    session
        .query::<User>()
        .order_by(User::ID.asc())
        .with_children_nested(Post::AUTHOR, |posts| posts.with_children(Comment::POST))
        .all()
        .await
        .unwrap()
}

#[tokio::test]
async fn three_levels_for_100_users_1000_posts_10000_comments_are_three_statements() {
    bounded(async {
        let (_test_db, db) = setup(100, 10, 10).await;
        let mut session = db.session();
        let users = every_user_with_posts_and_comments(&mut session).await;
        assert_eq!(users.len(), 100);
        assert_eq!(session.stats().statements, 3, "users, posts, comments: one statement per level");

        let before = session.stats();
        let (mut posts_seen, mut comments_seen) = (0, 0);
        for user in &users {
            let posts = session.children(user, Post::AUTHOR).unwrap();
            assert_eq!(posts.len(), 10);
            for post in &posts {
                assert_eq!(post.read().author_id, user.read().id);
                let comments = session.children(post, Comment::POST).unwrap();
                assert_eq!(comments.len(), 10);
                assert!(comments.iter().all(|comment| comment.read().post_id == post.read().id));
                let author = session.parent(post, Post::AUTHOR).unwrap().unwrap();
                assert!(Tracked::ptr_eq(&author, user));
                comments_seen += comments.len();
            }
            posts_seen += posts.len();
        }
        assert_eq!((posts_seen, comments_seen), (1_000, 10_000));
        assert_eq!(session.stats(), before, "reading the loaded collections sends nothing");
    })
    .await;
}

#[tokio::test]
async fn eager_results_are_identity_mapped_and_keep_pending_changes() {
    bounded(async {
        let (_test_db, db) = setup(3, 2, 2).await;
        let mut session = db.session();
        // Off, so that the change stays pending through the eager load.
        session.set_autoflush(false);
        let edited = session.get_one::<Post>(1).await.unwrap();
        edited.write().title = "edited".into();

        let users = every_user_with_posts_and_comments(&mut session).await;
        let anns = session.children(&users[0], Post::AUTHOR).unwrap();
        let held = anns.iter().find(|post| post.key() == 1).expect("post 1 is ann's");
        assert!(Tracked::ptr_eq(held, &edited), "the loaded post is the instance the session tracked");
        assert_eq!(held.read().title, "edited", "the row did not overwrite the pending change");
        assert!(held.is_modified());

        let again = session.query::<User>().order_by(User::ID.asc()).all().await.unwrap();
        assert!(again.iter().zip(&users).all(|(a, b)| Tracked::ptr_eq(a, b)));
        let comments = session.children(held, Comment::POST).unwrap();
        let comment = session.get_one::<Comment>(comments[0].key()).await.unwrap();
        assert!(Tracked::ptr_eq(&comment, &comments[0]), "a get of a loaded child is an identity-map hit");
    })
    .await;
}

#[tokio::test]
async fn with_parent_loads_each_missing_parent_once_and_nests() {
    bounded(async {
        let (_test_db, db) = setup(3, 2, 2).await;
        let mut session = db.session();
        let bob = session.get_one::<User>(2).await.unwrap();

        let posts = session.query::<Post>().order_by(Post::ID.asc()).with_parent(Post::AUTHOR).all().await.unwrap();
        assert_eq!(session.stats().statements, 3, "bob, the posts, then ann and cat in one statement");
        let authors: Vec<Tracked<User>> =
            posts.iter().map(|post| session.parent(post, Post::AUTHOR).unwrap().unwrap()).collect();
        assert!(Tracked::ptr_eq(&authors[2], &bob));
        let names: Vec<String> = authors.iter().map(|user| user.read().name.clone()).collect();
        assert_eq!(names, ["user 1", "user 1", "user 2", "user 2", "user 3", "user 3"]);

        // Every author is tracked now: only the posts' statement is sent.
        let before = session.stats().statements;
        session.query::<Post>().with_parent(Post::AUTHOR).all().await.unwrap();
        assert_eq!(session.stats().statements, before + 1);

        // Many-to-one nested: comments, their posts, the posts' authors.
        let mut session = db.session();
        let comments = session
            .query::<Comment>()
            .filter(Comment::BODY.like("3 %"))
            .with_parent_nested(Comment::POST, |posts| posts.with_parent(Post::AUTHOR))
            .all()
            .await
            .unwrap();
        assert_eq!(comments.len(), 4, "two comments on each of the two posts of user 3");
        assert_eq!(session.stats().statements, 3);
        for comment in &comments {
            let post = session.parent(comment, Comment::POST).unwrap().unwrap();
            let author = session.parent(&post, Post::AUTHOR).unwrap().unwrap();
            assert_eq!(author.read().name, "user 3");
        }
        assert_eq!(session.stats().statements, 3);
    })
    .await;
}

#[tokio::test]
async fn many_to_many_through_a_join_entity_is_one_step() {
    bounded(async {
        let (test_db, db) = setup(0, 0, 0).await;
        test_db
            .client()
            .await
            .batch_execute(
                "INSERT INTO article (title) VALUES ('tea'), ('jam'), ('bread');
                 INSERT INTO tag VALUES ('drink'), ('food'), ('sweet'), ('unused');
                 INSERT INTO article_tag VALUES (1, 'drink'), (1, 'food'), (2, 'food'), (2, 'sweet')",
            )
            .await
            .unwrap();
        let mut session = db.session();
        let articles =
            session.query::<Article>().order_by(Article::ID.asc()).through(ArticleTag::ARTICLE, ArticleTag::TAG);
        let articles = articles.all().await.unwrap();
        assert_eq!(session.stats().statements, 3, "articles, article_tag rows, tags");

        let before = session.stats();
        let mut tags_of = Vec::new();
        for article in &articles {
            let related = session.related(article, ArticleTag::ARTICLE, ArticleTag::TAG).unwrap();
            let mut names: Vec<String> = related.iter().map(|tag| tag.read().name.clone()).collect();
            names.sort();
            tags_of.push(names);
        }
        assert_eq!(tags_of, [vec!["drink", "food"], vec!["food", "sweet"], vec![]]);
        assert_eq!(session.stats(), before);

        // One instance per tag: "food" of tea is "food" of jam.
        let food_of = |session: &mut orm_core::Session, article: &Tracked<Article>| {
            let related = session.related(article, ArticleTag::ARTICLE, ArticleTag::TAG).unwrap();
            related.into_iter().find(|tag| tag.read().name == "food").unwrap()
        };
        assert!(Tracked::ptr_eq(&food_of(&mut session, &articles[0]), &food_of(&mut session, &articles[1])));

        // The spelled-out form is the same two statements.
        let mut session = db.session();
        let jam = session
            .query::<Article>()
            .filter(Article::TITLE.eq("jam"))
            .with_children_nested(ArticleTag::ARTICLE, |links| links.with_parent(ArticleTag::TAG))
            .one()
            .await
            .unwrap();
        assert_eq!(session.stats().statements, 3);
        assert_eq!(session.related(&jam, ArticleTag::ARTICLE, ArticleTag::TAG).unwrap().len(), 2);

        // Not loaded: an error, not a query.
        let mut session = db.session();
        let tea = session.get_one::<Article>(1).await.unwrap();
        let error = session.related(&tea, ArticleTag::ARTICLE, ArticleTag::TAG).unwrap_err();
        assert!(matches!(error, Error::RelationNotLoaded { entity: "Article", relation: "article" }));
    })
    .await;
}

#[tokio::test]
async fn a_filter_order_and_limit_on_the_root_query_narrow_what_is_loaded() {
    bounded(async {
        let (_test_db, db) = setup(5, 3, 2).await;
        let mut session = db.session();
        let users = session
            .query::<User>()
            .filter(User::ID.gt(1))
            .with_children_nested(Post::AUTHOR, |posts| posts.with_children(Comment::POST))
            .order_by(User::ID.desc())
            .limit(2)
            .all()
            .await
            .unwrap();
        let ids: Vec<i64> = users.iter().map(Tracked::key).collect();
        assert_eq!(ids, [5, 4]);
        assert_eq!(session.stats().statements, 3);
        for user in &users {
            for post in session.children(user, Post::AUTHOR).unwrap() {
                assert_eq!(session.children(&post, Comment::POST).unwrap().len(), 2);
            }
        }

        // Only the posts of users 4 and 5 were loaded: user 3's first post
        // (id 7) costs a statement, and user 3's collection was never loaded.
        let before = session.stats().statements;
        let third = session.get_one::<User>(3).await.unwrap();
        assert!(matches!(session.children(&third, Post::AUTHOR), Err(Error::RelationNotLoaded { .. })));
        session.get_one::<Post>(7).await.unwrap();
        assert_eq!(session.stats().statements, before + 2);
    })
    .await;
}

#[tokio::test]
async fn an_empty_root_result_sends_no_child_statements() {
    bounded(async {
        let (_test_db, db) = setup(3, 2, 2).await;
        let mut session = db.session();
        let nobody = session
            .query::<User>()
            .filter(User::NAME.eq("nobody"))
            .with_children_nested(Post::AUTHOR, |posts| posts.with_children(Comment::POST))
            .all()
            .await
            .unwrap();
        assert!(nobody.is_empty());
        assert_eq!(session.stats().statements, 1, "the root query only");

        let none = session.query::<Post>().filter(Post::ID.lt(0)).with_parent(Post::AUTHOR).first().await.unwrap();
        assert!(none.is_none());
        let none = session.query::<Post>().filter(Post::ID.lt(0)).with_parent(Post::AUTHOR).optional().await.unwrap();
        assert!(none.is_none());
        assert_eq!(session.stats().statements, 3, "one statement for each root query, no more");
    })
    .await;
}

#[tokio::test]
async fn first_one_and_optional_load_the_relations_of_their_entity() {
    bounded(async {
        let (_test_db, db) = setup(3, 2, 2).await;
        let mut session = db.session();
        let first = session.query::<User>().order_by(User::ID.asc()).with_children(Post::AUTHOR).first().await;
        let first = first.unwrap().expect("a user");
        assert_eq!(session.stats().statements, 2);
        assert_eq!(session.children(&first, Post::AUTHOR).unwrap().len(), 2);

        let bob = session.query::<User>().filter(User::NAME.eq("user 2")).with_children(Post::AUTHOR).one().await;
        let bob = bob.unwrap();
        assert_eq!(session.stats().statements, 4);
        assert_eq!(session.children(&bob, Post::AUTHOR).unwrap().len(), 2);

        let post = session.query::<Post>().filter(Post::ID.eq(6)).with_parent(Post::AUTHOR).optional().await;
        let post = post.unwrap().expect("post 6");
        assert_eq!(session.stats().statements, 6, "the post, then its author");
        assert_eq!(session.parent(&post, Post::AUTHOR).unwrap().unwrap().read().name, "user 3");

        let many = session.query::<User>().with_children(Post::AUTHOR).one().await;
        assert!(matches!(many, Err(Error::MultipleRows { entity: "User" })));
        assert_eq!(session.stats().statements, 7, "no relation is loaded for a failed one()");
    })
    .await;
}

/// The titles of `user`'s posts as the session sees them now, sorted.
fn titles_of(session: &mut orm_core::Session, user: &Tracked<User>) -> Vec<String> {
    let mut titles: Vec<String> =
        session.children(user, Post::AUTHOR).unwrap().iter().map(|post| post.read().title.clone()).collect();
    titles.sort();
    titles
}

#[tokio::test]
async fn eagerly_loaded_collections_follow_every_later_change_without_sql() {
    bounded(async {
        let (_test_db, db) = setup(2, 3, 0).await;
        let mut session = db.session();
        let users = session.query::<User>().order_by(User::ID.asc()).with_children(Post::AUTHOR).all().await.unwrap();
        let (first, second) = (&users[0], &users[1]);
        assert_eq!(titles_of(&mut session, first), ["1 1", "1 2", "1 3"]);
        assert_eq!(titles_of(&mut session, second), ["2 1", "2 2", "2 3"]);
        let posts = session.children(first, Post::AUTHOR).unwrap();
        let post = |title: &str| posts.iter().find(|p| p.read().title == title).unwrap().clone();

        // A child moved to another parent through its handle.
        post("1 2").modify(|p| p.author_id = 2);
        assert_eq!(titles_of(&mut session, first), ["1 1", "1 3"]);
        assert_eq!(titles_of(&mut session, second), ["1 2", "2 1", "2 2", "2 3"]);

        // A child deleted, one no longer tracked, one added.
        session.delete(&post("1 1")).unwrap();
        let theirs = session.children(second, Post::AUTHOR).unwrap();
        let expunged = theirs.iter().find(|p| p.read().title == "2 1").unwrap();
        assert!(session.expunge(expunged));
        session.add(blog::post(1, "1 4"));
        assert_eq!(titles_of(&mut session, first), ["1 3", "1 4"]);
        assert_eq!(titles_of(&mut session, second), ["1 2", "2 2", "2 3"]);
        assert_eq!(session.stats().statements, 2, "users and posts; every collection after that without SQL");

        // The flush makes them what the database holds.
        session.flush().await.unwrap();
        assert_eq!(titles_of(&mut session, first), ["1 3", "1 4"]);
        assert_eq!(titles_of(&mut session, second), ["1 2", "2 2", "2 3"]);
    })
    .await;
}

#[tokio::test]
async fn collections_read_after_later_queries_stay_right_and_follow_changes() {
    bounded(async {
        let (_test_db, db) = setup(2, 3, 2).await;
        let mut session = db.session();
        let users = every_user_with_posts_and_comments(&mut session).await;
        let (first, second) = (&users[0], &users[1]);

        // Another query, whose autoflush has nothing to write.
        assert_eq!(session.query::<User>().count().await.unwrap(), 2);
        assert_eq!(titles_of(&mut session, first), ["1 1", "1 2", "1 3"]);
        assert_eq!(titles_of(&mut session, second), ["2 1", "2 2", "2 3"]);
        let posts = session.children(first, Post::AUTHOR).unwrap();
        let comments = session.children(&posts[1], Comment::POST).unwrap();
        let bodies: Vec<String> = comments.iter().map(|c| c.read().body.clone()).collect();
        assert_eq!(bodies, ["1 2 comment 1", "1 2 comment 2"]);

        // A child moved, then a query whose autoflush writes the move.
        posts[1].modify(|p| p.author_id = 2);
        assert_eq!(session.query::<User>().count().await.unwrap(), 2);
        assert_eq!(titles_of(&mut session, first), ["1 1", "1 3"]);
        assert_eq!(titles_of(&mut session, second), ["1 2", "2 1", "2 2", "2 3"]);
        assert_eq!(session.children(&posts[1], Comment::POST).unwrap().len(), 2);
        assert_eq!(session.stats().statements, 6, "three loads, two counts and the update");
    })
    .await;
}

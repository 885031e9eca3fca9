//! Relationships: foreign keys in the derive, flush order from the
//! dependency graph, pending parents, batch loading without N+1, cascades.

mod support;

use orm_core::{Database, DatabaseConfig, Entity, Error, Tracked};
use orm_tests::TestDb;
use support::blog::{self, post, user, Comment, Post, User};

#[derive(Entity, Clone, Debug, PartialEq)]
struct Category {
    #[orm(primary_key, generated)]
    id: i64,
    #[orm(references = Category)]
    parent_id: Option<i64>,
    name: String,
}

#[derive(Entity, Clone, Debug, PartialEq)]
struct Tag {
    #[orm(primary_key)]
    name: String,
}

/// The join entity of the many-to-many relation between posts and tags.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "post_tag")]
struct PostTag {
    #[orm(primary_key, references = Post)]
    post_id: i64,
    #[orm(primary_key, references = Tag, relation = "tag")]
    tag_name: String,
}

/// Beside `blog::SCHEMA`.
const SCHEMA: &str = "
    CREATE TABLE category (id bigserial PRIMARY KEY, parent_id bigint REFERENCES category, name text NOT NULL);
    CREATE TABLE tag (name text PRIMARY KEY);
    CREATE TABLE post_tag (post_id bigint REFERENCES post, tag_name text REFERENCES tag, PRIMARY KEY (post_id, tag_name));
";

async fn setup() -> (TestDb, Database) {
    let test_db = TestDb::new().await;
    let client = test_db.client().await;
    client.batch_execute(blog::SCHEMA).await.unwrap();
    client.batch_execute(SCHEMA).await.unwrap();
    let db = Database::with_config(DatabaseConfig::from_url(test_db.url()).unwrap()).unwrap();
    (test_db, db)
}

#[tokio::test]
async fn pending_parents_a_thousand_users_with_ten_posts_each_are_two_inserts() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    for u in 0..1_000 {
        let author = session.add(user(&format!("user {u}")));
        for p in 0..10 {
            let post = session.add(post(0, &format!("user {u} post {p}")));
            session.set_parent(&post, Post::AUTHOR, &author).unwrap();
        }
    }
    let stats = session.commit().await.unwrap();
    // The 10,000 posts go by COPY (tests/copy_insert.rs): asking about the
    // table, taking their keys beside the users' INSERT, then the COPY;
    // through PgBouncer (the unnamed statement mode, which never copies),
    // one INSERT for them.
    let expected = if orm_tests::via_pgbouncer() { (2, 0) } else { (4, 10_000) };
    assert_eq!((stats.statements, stats.copied_rows), expected, "one INSERT for the users, the posts copied");
    let client = test_db.client().await;
    let misfiled: i64 = client
        .query_one(
            "SELECT count(*) FROM post p JOIN users u ON u.id = p.author_id WHERE p.title NOT LIKE u.name || ' post %'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let posts: i64 = client.query_one("SELECT count(*) FROM post", &[]).await.unwrap().get(0);
    assert_eq!((posts, misfiled), (10_000, 0), "every post points at its own user");
}

#[tokio::test]
async fn a_failed_flush_with_pending_parents_applies_nothing_and_can_be_retried() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let author = session.add(user("ann"));
    let first = session.add(post(0, "first"));
    session.set_parent(&first, Post::AUTHOR, &author).unwrap();
    // A child pointing at a parent that does not exist fails the second round trip.
    let orphan = session.add(post(999, "orphan"));
    assert!(matches!(session.flush().await, Err(Error::ForeignKeyViolation { .. })));
    assert_eq!(author.read().id, 0, "the parent's key from the rolled-back insert was not applied");
    session.expunge(&orphan);
    session.commit().await.unwrap();
    let author_id = author.read().id;
    assert!(author_id > 0);
    assert_eq!(first.read().author_id, author_id);
    let stored: i64 = test_db.client().await.query_one("SELECT author_id FROM post", &[]).await.unwrap().get(0);
    assert_eq!(stored, author_id);
}

#[tokio::test]
async fn linking_a_loaded_child_to_a_pending_parent_updates_it_after_the_insert() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let old = session.add(user("old"));
    session.flush().await.unwrap();
    let moved = session.add(post(0, "moved"));
    session.set_parent(&moved, Post::AUTHOR, &old).unwrap();
    session.commit().await.unwrap();

    let mut session = db.session();
    let moved = session.get_one::<Post>(1).await.unwrap();
    let new = session.add(user("new"));
    session.set_parent(&moved, Post::AUTHOR, &new).unwrap();
    assert!(Tracked::ptr_eq(&session.parent(&moved, Post::AUTHOR).unwrap().unwrap(), &new));
    session.commit().await.unwrap();
    let row = test_db
        .client()
        .await
        .query_one("SELECT u.name FROM post p JOIN users u ON u.id = p.author_id", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "new");
}

#[tokio::test]
async fn inserts_go_parents_first_and_deletes_children_first_whatever_the_order_of_use() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    // Children's types are used first; the flush still inserts users first.
    let ann = session.add(user("ann"));
    session.commit().await.unwrap();
    let mut session = db.session();
    // The session meets comments, then posts, then users.
    assert!(session.query::<Comment>().all().await.unwrap().is_empty());
    assert!(session.query::<Post>().all().await.unwrap().is_empty());
    let author = session.get_one::<User>(ann.read().id).await.unwrap();
    let comment = session.add(Comment { id: 0, post_id: 0, body: "c".into() });
    let post = session.add(post(0, "p"));
    session.set_parent(&post, Post::AUTHOR, &author).unwrap();
    session.set_parent(&comment, Comment::POST, &post).unwrap();
    session.commit().await.unwrap();

    let mut session = db.session();
    let comment = session.get_one::<Comment>(comment.read().id).await.unwrap();
    let post = session.get_one::<Post>(post.read().id).await.unwrap();
    let author = session.get_one::<User>(author.read().id).await.unwrap();
    session.delete(&author).unwrap();
    session.delete(&post).unwrap();
    session.delete(&comment).unwrap();
    session.commit().await.unwrap();
    let left: i64 = test_db
        .client()
        .await
        .query_one(
            "SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM post) + (SELECT count(*) FROM comment)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

async fn seed_users_posts_comments(db: &Database, users: usize) {
    let mut session = db.session();
    for u in 0..users {
        let author = session.add(user(&format!("user {u}")));
        for p in 0..3 {
            let post = session.add(post(0, &format!("u{u} p{p}")));
            session.set_parent(&post, Post::AUTHOR, &author).unwrap();
            for c in 0..2 {
                let comment = session.add(Comment { id: 0, post_id: 0, body: format!("u{u} p{p} c{c}") });
                session.set_parent(&comment, Comment::POST, &post).unwrap();
            }
        }
    }
    session.commit().await.unwrap();
}

#[tokio::test]
async fn users_with_posts_with_comments_load_in_three_queries() {
    let (_test_db, db) = setup().await;
    seed_users_posts_comments(&db, 100).await;
    let mut session = db.session();
    let users = session.query::<User>().order_by(User::ID.asc()).all().await.unwrap();
    let posts = session.load_children(&users, Post::AUTHOR).await.unwrap();
    let comments = session.load_children(&posts, Comment::POST).await.unwrap();
    assert_eq!((users.len(), posts.len(), comments.len()), (100, 300, 600));
    assert_eq!(session.stats().statements, 3);

    // Walking the loaded relations costs nothing more.
    let before = session.stats();
    for user in &users {
        let posts = session.children(user, Post::AUTHOR).unwrap();
        assert_eq!(posts.len(), 3);
        for post in &posts {
            assert!(Tracked::ptr_eq(&session.parent(post, Post::AUTHOR).unwrap().unwrap(), user));
            let comments = session.children(post, Comment::POST).unwrap();
            assert_eq!(comments.len(), 2);
            assert!(comments.iter().all(|c| c.read().body.starts_with(&post.read().title)));
        }
    }
    assert_eq!(session.stats(), before);
}

#[tokio::test]
async fn parents_already_tracked_are_not_loaded_again() {
    let (_test_db, db) = setup().await;
    seed_users_posts_comments(&db, 5).await;
    let mut session = db.session();
    let first = session.get_one::<User>(1).await.unwrap();
    let posts = session.query::<Post>().all().await.unwrap();
    let before = session.stats();
    let authors = session.load_parents(&posts, Post::AUTHOR).await.unwrap();
    assert_eq!(authors.len(), 5);
    assert_eq!(session.stats().statements - before.statements, 1, "one query");
    assert_eq!(session.stats().rows - before.rows, 4, "for the four untracked authors only");
    assert!(authors.iter().any(|a| Tracked::ptr_eq(a, &first)));
    let before = session.stats();
    session.load_parents(&posts, Post::AUTHOR).await.unwrap();
    assert_eq!(session.stats(), before, "all tracked now: no SQL");
}

#[tokio::test]
async fn an_unloaded_relation_is_an_error_not_a_hidden_query() {
    let (_test_db, db) = setup().await;
    seed_users_posts_comments(&db, 1).await;
    let mut session = db.session();
    let author = session.get_one::<User>(1).await.unwrap();
    let post = session.get_one::<Post>(1).await.unwrap();
    session.expunge(&author);
    let before = session.stats();
    assert!(matches!(
        session.children(&author, Post::AUTHOR),
        Err(Error::RelationNotLoaded { entity: "User", relation: "author" })
    ));
    assert!(matches!(session.parent(&post, Post::AUTHOR), Err(Error::RelationNotLoaded { entity: "Post", .. })));
    assert_eq!(session.stats(), before);
}

#[tokio::test]
async fn loaded_collections_follow_the_sessions_changes() {
    let (_test_db, db) = setup().await;
    seed_users_posts_comments(&db, 2).await;
    let mut session = db.session();
    let users = session.query::<User>().order_by(User::ID.asc()).all().await.unwrap();
    let posts = session.load_children(&users, Post::AUTHOR).await.unwrap();
    let extra = session.add(post(0, "extra"));
    session.set_parent(&extra, Post::AUTHOR, &users[0]).unwrap();
    session.delete(&posts[0]).unwrap();
    let first_posts = session.children(&users[0], Post::AUTHOR).unwrap();
    assert_eq!(first_posts.len(), 3, "one deleted, one added");
    assert!(first_posts.iter().any(|p| Tracked::ptr_eq(p, &extra)));
}

#[tokio::test]
async fn deleting_a_parent_cascades_to_its_loaded_children_in_the_same_flush() {
    let (test_db, db) = setup().await;
    seed_users_posts_comments(&db, 1).await;
    let mut session = db.session();
    let posts = session.query::<Post>().all().await.unwrap();
    session.load_children(&posts, Comment::POST).await.unwrap();
    session.delete(&posts[0]).unwrap();
    session.commit().await.unwrap();
    let client = test_db.client().await;
    let comments: i64 = client.query_one("SELECT count(*) FROM comment", &[]).await.unwrap().get(0);
    let remaining_posts: i64 = client.query_one("SELECT count(*) FROM post", &[]).await.unwrap().get(0);
    assert_eq!((remaining_posts, comments), (2, 4), "the post and its two comments are gone");
}

#[tokio::test]
async fn a_cascade_follows_links_and_forgets_pending_children() {
    let (test_db, db) = setup().await;
    seed_users_posts_comments(&db, 1).await;
    let mut session = db.session();
    let posts = session.query::<Post>().order_by(Post::ID.asc()).all().await.unwrap();
    let comments = session.load_children(&posts[..1], Comment::POST).await.unwrap();
    // Moved to a post not inserted yet: the link wins over its old key.
    let new_post = session.add(post(1, "u0 p3"));
    session.set_parent(&comments[0], Comment::POST, &new_post).unwrap();
    // Pending children of deleted parents have no row to delete: forgotten.
    let post_id = posts[0].read().id;
    session.add(Comment { id: 0, post_id, body: "new on p0".into() });
    let short_lived = session.add(post(1, "short-lived"));
    let orphan = session.add(Comment { id: 0, post_id: 0, body: "orphan".into() });
    session.set_parent(&orphan, Comment::POST, &short_lived).unwrap();
    session.delete(&short_lived).unwrap();

    session.delete(&posts[0]).unwrap();
    assert_eq!(session.pending().unwrap().inserts, 1, "only the new post is left to insert");
    session.commit().await.unwrap();

    let client = test_db.client().await;
    let rows = client
        .query("SELECT c.body, p.title FROM comment c JOIN post p ON p.id = c.post_id ORDER BY c.id", &[])
        .await
        .unwrap();
    let comments: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(comments.len(), 5, "of p0's comments only the moved one is left: {comments:?}");
    assert_eq!(comments[0], ("u0 p0 c0".to_owned(), "u0 p3".to_owned()));
}

#[tokio::test]
async fn expunging_a_pending_child_drops_its_link_to_a_pending_parent() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let author = session.add(user("ann"));
    let draft = session.add(post(0, "draft"));
    session.set_parent(&draft, Post::AUTHOR, &author).unwrap();
    assert!(session.expunge(&draft));
    assert!(session.expunge(&author));
    let stats = session.commit().await.unwrap();
    assert_eq!(stats.statements, 0, "nothing waits for the expunged parent");
    let posts: i64 = test_db.client().await.query_one("SELECT count(*) FROM post", &[]).await.unwrap().get(0);
    assert_eq!(posts, 0);
}

#[tokio::test]
async fn without_cascade_the_databases_foreign_key_error_comes_back_typed() {
    let (test_db, db) = setup().await;
    seed_users_posts_comments(&db, 1).await;
    let mut session = db.session();
    let author = session.get_one::<User>(1).await.unwrap();
    session.load_children(std::slice::from_ref(&author), Post::AUTHOR).await.unwrap();
    session.delete(&author).unwrap();
    let error = session.commit().await.unwrap_err();
    assert!(
        matches!(&error, Error::ForeignKeyViolation { table: Some(table), .. } if table == "post"),
        "got {error:?}"
    );
    let users: i64 = test_db.client().await.query_one("SELECT count(*) FROM users", &[]).await.unwrap().get(0);
    assert_eq!(users, 1);
}

#[tokio::test]
async fn a_tree_of_pending_categories_is_inserted_level_by_level() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let root = session.add(Category { id: 0, parent_id: None, name: "root".into() });
    let mut level = vec![root.clone()];
    for depth in 1..4 {
        let mut next = Vec::new();
        for (i, parent) in level.iter().enumerate() {
            for j in 0..2 {
                let child = session.add(Category { id: 0, parent_id: None, name: format!("d{depth} {i}.{j}") });
                session.set_parent(&child, Category::PARENT, parent).unwrap();
                next.push(child);
            }
        }
        level = next;
    }
    let stats = session.commit().await.unwrap();
    assert_eq!(stats.statements, 4, "one INSERT per level of the tree");
    let client = test_db.client().await;
    let rows = client
        .query(
            "WITH RECURSIVE t AS (SELECT id, 0 AS depth FROM category WHERE parent_id IS NULL
             UNION ALL SELECT c.id, t.depth + 1 FROM category c JOIN t ON c.parent_id = t.id)
             SELECT depth, count(*) FROM t GROUP BY depth ORDER BY depth",
            &[],
        )
        .await
        .unwrap();
    let levels: Vec<(i32, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(levels, vec![(0, 1), (1, 2), (2, 4), (3, 8)]);
}

/// `category` with keys the application assigns.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "category")]
struct NumberedCategory {
    #[orm(primary_key)]
    id: i64,
    #[orm(references = NumberedCategory)]
    parent_id: Option<i64>,
    name: String,
}

#[tokio::test]
async fn rows_of_one_table_with_known_keys_go_in_one_statement_whatever_their_order() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    // Children before their parents: PostgreSQL checks the foreign key at
    // the end of the statement, so one INSERT and one DELETE suffice.
    session.add_all([
        NumberedCategory { id: 30, parent_id: Some(20), name: "sonnets".into() },
        NumberedCategory { id: 20, parent_id: Some(10), name: "poetry".into() },
        NumberedCategory { id: 10, parent_id: None, name: "books".into() },
    ]);
    let stats = session.commit().await.unwrap();
    assert_eq!(stats.statements, 1);
    let client = test_db.client().await;
    let rows = client.query("SELECT id, parent_id FROM category ORDER BY id", &[]).await.unwrap();
    let tree: Vec<(i64, Option<i64>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(tree, vec![(10, None), (20, Some(10)), (30, Some(20))]);

    let mut session = db.session();
    for category in session.query::<NumberedCategory>().order_by(NumberedCategory::ID.asc()).all().await.unwrap() {
        session.delete(&category).unwrap();
    }
    let before = session.stats().statements;
    let stats = session.commit().await.unwrap();
    assert_eq!(stats.statements - before, 1, "parents and children in one DELETE");
    let left: i64 = client.query_one("SELECT count(*) FROM category", &[]).await.unwrap().get(0);
    assert_eq!(left, 0);
}

#[tokio::test]
async fn many_to_many_through_a_join_entity_loads_in_two_queries() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    let author = session.add(user("ann"));
    let tags: Vec<_> = ["rust", "sql", "orm"].iter().map(|t| session.add(Tag { name: (*t).into() })).collect();
    for p in 0..4 {
        let post = session.add(post(0, &format!("p{p}")));
        session.set_parent(&post, Post::AUTHOR, &author).unwrap();
        for tag in tags.iter().take(p % 3 + 1) {
            let link = session.add(PostTag { post_id: 0, tag_name: tag.read().name.clone() });
            session.set_parent(&link, PostTag::POST, &post).unwrap();
        }
    }
    session.commit().await.unwrap();

    let mut session = db.session();
    let posts = session.query::<Post>().order_by(Post::ID.asc()).all().await.unwrap();
    let links = session.load_children(&posts, PostTag::POST).await.unwrap();
    session.load_parents(&links, PostTag::TAG).await.unwrap();
    assert_eq!(session.stats().statements, 3, "posts, their links, the tags");
    let mut tag_counts = Vec::new();
    for post in &posts {
        let mut names = Vec::new();
        for link in session.children(post, PostTag::POST).unwrap() {
            names.push(session.parent(&link, PostTag::TAG).unwrap().unwrap().read().name.clone());
        }
        tag_counts.push(names.len());
    }
    assert_eq!(tag_counts, vec![1, 2, 3, 1]);
}

#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "a")]
struct A {
    #[orm(primary_key)]
    id: i64,
    #[orm(references = B)]
    b_id: i64,
}

#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "b")]
struct B {
    #[orm(primary_key)]
    id: i64,
    #[orm(references = A)]
    a_id: i64,
}

#[tokio::test]
async fn inserting_into_tables_that_reference_each_other_is_a_clear_error() {
    let (test_db, db) = setup().await;
    test_db
        .client()
        .await
        .batch_execute("CREATE TABLE a (id bigint PRIMARY KEY, b_id bigint NOT NULL); CREATE TABLE b (id bigint PRIMARY KEY, a_id bigint NOT NULL REFERENCES a); ALTER TABLE a ADD FOREIGN KEY (b_id) REFERENCES b")
        .await
        .unwrap();
    let mut session = db.session();
    session.add(A { id: 1, b_id: 1 });
    session.add(B { id: 1, a_id: 1 });
    match session.commit().await {
        Err(Error::DependencyCycle { mut tables }) => {
            tables.sort_unstable();
            assert_eq!(tables, vec!["a", "b"]);
        }
        other => panic!("expected DependencyCycle, got {other:?}"),
    }
}

#[tokio::test]
async fn filters_across_relations_are_semi_joins_through_the_identity_map() {
    let (_test_db, db) = setup().await;
    seed_users_posts_comments(&db, 3).await;
    let mut session = db.session();
    let loaded = session.get_one::<Post>(4).await.unwrap();
    let posts = session
        .query::<Post>()
        .filter(Post::AUTHOR.has(User::NAME.eq("user 1")))
        .order_by(Post::ID.asc())
        .all()
        .await
        .unwrap();
    let titles: Vec<String> = posts.iter().map(|p| p.read().title.clone()).collect();
    assert_eq!(titles, ["u1 p0", "u1 p1", "u1 p2"]);
    assert!(posts.iter().any(|p| Tracked::ptr_eq(p, &loaded)), "results are identity-mapped");

    let writers = session.query::<User>().filter(Post::AUTHOR.any(Post::TITLE.eq("u2 p1"))).all().await.unwrap();
    assert_eq!(writers.iter().map(|u| u.read().name.clone()).collect::<Vec<_>>(), ["user 2"]);

    // Two levels: comments on posts by user 0, combined with a local filter.
    let comments = session
        .query::<Comment>()
        .filter(Comment::POST.has(Post::AUTHOR.has(User::NAME.eq("user 0"))).and(Comment::BODY.like("%c1")))
        .count()
        .await
        .unwrap();
    assert_eq!(comments, 3);
    let nobody = session.query::<User>().filter(Post::AUTHOR.any(Post::TITLE.eq("nothing"))).exists().await.unwrap();
    assert!(!nobody);
}

#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "team")]
struct Team {
    #[orm(primary_key)]
    id: i64,
    /// Nullable: a team may have no captain yet, which breaks the cycle.
    #[orm(references = Player)]
    captain_id: Option<i64>,
}

#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "player")]
struct Player {
    #[orm(primary_key)]
    id: i64,
    #[orm(references = Team)]
    team_id: i64,
}

#[tokio::test]
async fn a_cycle_through_a_nullable_column_is_broken_with_a_post_update() {
    let (test_db, db) = setup().await;
    let client = test_db.client().await;
    client
        .batch_execute(
            "CREATE TABLE team (id bigint PRIMARY KEY, captain_id bigint);
             CREATE TABLE player (id bigint PRIMARY KEY, team_id bigint NOT NULL REFERENCES team);
             ALTER TABLE team ADD FOREIGN KEY (captain_id) REFERENCES player",
        )
        .await
        .unwrap();
    let mut session = db.session();
    // Players first: the flush still has to insert teams first, captains last.
    session.add_all((1..=3).map(|id| Player { id, team_id: (id + 1) / 2 }));
    session.add_all((1..=2).map(|id| Team { id, captain_id: Some(id * 2 - 1) }));
    let stats = session.commit().await.unwrap();
    assert_eq!(stats.statements, 3, "INSERT teams without captains, INSERT players, UPDATE the captains");
    let rows = client.query("SELECT id, captain_id FROM team ORDER BY id", &[]).await.unwrap();
    let teams: Vec<(i64, Option<i64>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(teams, vec![(1, Some(1)), (2, Some(3))]);
}

/// A database with one user, `ann` (id 1), and her post `ann 1`.
async fn with_ann_and_her_post() -> (TestDb, Database) {
    let (test_db, db) = setup().await;
    test_db
        .client()
        .await
        .batch_execute(
            "INSERT INTO users (name) VALUES ('ann'); INSERT INTO post (author_id, title) VALUES (1, 'ann 1')",
        )
        .await
        .unwrap();
    (test_db, db)
}

// Loading and reading relations while parents are still pending: batch
// loads see the keys the autoflush generates, and a link to a pending
// parent decides which collection a child is in.

#[tokio::test]
async fn load_children_of_a_pending_parent_finds_the_children_the_autoflush_inserted() {
    let (_test_db, db) = with_ann_and_her_post().await;
    let mut session = db.session();
    let bob = session.add(User { id: 0, name: "bob".into() });
    let post = session.add(Post { id: 0, author_id: 0, title: "bob 1".into() });
    session.set_parent(&post, Post::AUTHOR, &bob).unwrap();

    let loaded = session.load_children(std::slice::from_ref(&bob), Post::AUTHOR).await.unwrap();
    assert_eq!(bob.read().id, 2, "the autoflush inserted bob");
    assert_eq!(loaded.len(), 1, "the query used bob's generated key, not the placeholder");
    assert!(Tracked::ptr_eq(&loaded[0], &post));
    let children = session.children(&bob, Post::AUTHOR).unwrap();
    assert_eq!(children.len(), 1);
}

#[tokio::test]
async fn load_parents_of_children_linked_to_pending_parents_returns_those_parents() {
    let (_test_db, db) = with_ann_and_her_post().await;
    let mut session = db.session();
    let ann = session.get_one::<User>(1).await.unwrap();
    let old = session.get_one::<Post>(1).await.unwrap();
    let bob = session.add(User { id: 0, name: "bob".into() });
    let new = session.add(Post { id: 0, author_id: 0, title: "bob 1".into() });
    session.set_parent(&new, Post::AUTHOR, &bob).unwrap();

    let parents = session.load_parents(&[old, new], Post::AUTHOR).await.unwrap();
    assert_eq!(parents.len(), 2, "ann, and bob once the autoflush gave him a key");
    assert!(Tracked::ptr_eq(&parents[0], &ann));
    assert!(Tracked::ptr_eq(&parents[1], &bob));
}

#[tokio::test]
async fn load_parents_without_pending_links_does_not_flush() {
    let (_test_db, db) = with_ann_and_her_post().await;
    let mut session = db.session();
    let posts = session.query::<Post>().all().await.unwrap();
    session.get_one::<User>(1).await.unwrap();
    // Unrelated pending work stays pending: nothing needs a key from it.
    session.add(User { id: 0, name: "bob".into() });
    let before = session.stats();
    let parents = session.load_parents(&posts, Post::AUTHOR).await.unwrap();
    assert_eq!(parents.len(), 1);
    assert_eq!(session.stats(), before, "every parent is tracked: no SQL at all");
}

#[tokio::test]
async fn a_child_moved_to_a_pending_parent_leaves_its_old_parents_collection_at_once() {
    let (test_db, db) = with_ann_and_her_post().await;
    let mut session = db.session();
    let ann = session.get_one::<User>(1).await.unwrap();
    session.load_children(std::slice::from_ref(&ann), Post::AUTHOR).await.unwrap();
    let post = session.children(&ann, Post::AUTHOR).unwrap().pop().expect("ann's post");
    let bob = session.add(User { id: 0, name: "bob".into() });
    session.set_parent(&post, Post::AUTHOR, &bob).unwrap();

    assert_eq!(post.read().author_id, 1, "the foreign key waits for bob's key");
    assert!(session.children(&ann, Post::AUTHOR).unwrap().is_empty(), "the link wins over the old key");
    assert!(Tracked::ptr_eq(&session.parent(&post, Post::AUTHOR).unwrap().unwrap(), &bob));

    session.commit().await.unwrap();
    let author: i64 =
        test_db.client().await.query_one("SELECT author_id FROM post WHERE id = 1", &[]).await.unwrap().get(0);
    assert_eq!(author, 2);
}

// The parent-to-children index: `children` and cascades look up a parent's
// children instead of scanning the identity map, so each of these changes a
// child's parent after the index was built (by a first `children` call) and
// checks that both collections, the old parent's and the new one's, follow.

/// Titles of `parent`'s posts, sorted.
fn titles(session: &mut orm_core::Session, parent: &Tracked<User>) -> Vec<String> {
    let mut titles: Vec<String> =
        session.children(parent, Post::AUTHOR).unwrap().iter().map(|p| p.read().title.clone()).collect();
    titles.sort();
    titles
}

/// Two users with three posts each (two comments per post), users and their
/// posts loaded as collections, and the index built.
async fn two_loaded_users(db: &Database) -> (orm_core::Session, Vec<Tracked<User>>) {
    seed_users_posts_comments(db, 2).await;
    let mut session = db.session();
    let users = session.query::<User>().order_by(User::ID.asc()).all().await.unwrap();
    session.load_children(&users, Post::AUTHOR).await.unwrap();
    assert_eq!(titles(&mut session, &users[0]), ["u0 p0", "u0 p1", "u0 p2"]);
    (session, users)
}

#[tokio::test]
async fn a_foreign_key_changed_through_modify_moves_the_child_between_collections() {
    let (_test_db, db) = setup().await;
    let (mut session, users) = two_loaded_users(&db).await;
    let moved = session.children(&users[0], Post::AUTHOR).unwrap().remove(0);
    let to = users[1].read().id;
    moved.modify(|p| p.author_id = to);
    assert_eq!(titles(&mut session, &users[0]), ["u0 p1", "u0 p2"]);
    assert_eq!(titles(&mut session, &users[1]), ["u0 p0", "u1 p0", "u1 p1", "u1 p2"]);

    // Moved back and forth between two lookups, then flushed: the flush
    // empties the write log, the collections stay right.
    let from = users[0].read().id;
    moved.modify(|p| p.author_id = from);
    moved.modify(|p| p.author_id = to);
    session.flush().await.unwrap();
    assert_eq!(titles(&mut session, &users[0]), ["u0 p1", "u0 p2"]);
    assert_eq!(titles(&mut session, &users[1]).len(), 4);
}

#[tokio::test]
async fn children_linked_to_a_pending_parent_follow_the_link_then_the_filled_in_key() {
    let (_test_db, db) = setup().await;
    let (mut session, users) = two_loaded_users(&db).await;
    let moved = session.children(&users[0], Post::AUTHOR).unwrap().remove(0);
    let bob = session.add(user("bob"));
    session.set_parent(&moved, Post::AUTHOR, &bob).unwrap();
    let draft = session.add(post(0, "bob draft"));
    session.set_parent(&draft, Post::AUTHOR, &bob).unwrap();
    assert_eq!(titles(&mut session, &users[0]), ["u0 p1", "u0 p2"], "the link wins over the old key");

    // The flush fills in both foreign keys without a handle write.
    session.load_children(std::slice::from_ref(&bob), Post::AUTHOR).await.unwrap();
    assert!(bob.read().id > 0);
    assert_eq!(titles(&mut session, &bob), ["bob draft", "u0 p0"]);
    assert_eq!(titles(&mut session, &users[0]), ["u0 p1", "u0 p2"]);
}

#[tokio::test]
async fn an_expunged_child_leaves_its_collection_and_its_reload_comes_back() {
    let (_test_db, db) = setup().await;
    let (mut session, users) = two_loaded_users(&db).await;
    let gone = session.children(&users[0], Post::AUTHOR).unwrap().remove(0);
    assert!(session.expunge(&gone));
    let left = session.children(&users[0], Post::AUTHOR).unwrap();
    assert_eq!(left.len(), 2);
    assert!(!left.iter().any(|p| Tracked::ptr_eq(p, &gone)));

    let fresh = session.get_one::<Post>(gone.read().id).await.unwrap();
    let back = session.children(&users[0], Post::AUTHOR).unwrap();
    assert_eq!(back.len(), 3);
    assert!(back.iter().any(|p| Tracked::ptr_eq(p, &fresh)), "the reloaded instance, not the expunged one");
}

#[tokio::test]
async fn children_taken_out_one_after_another_leave_the_others_in_their_collection() {
    // A child leaving a collection makes room by moving the collection's
    // last child into its place: each removal below moves a child the
    // previous one moved, and the index must still find all the others.
    let (_test_db, db) = setup().await;
    let (mut session, users) = two_loaded_users(&db).await;
    let first = session.children(&users[0], Post::AUTHOR).unwrap().remove(0);
    assert!(session.expunge(&first));
    assert_eq!(titles(&mut session, &users[0]), ["u0 p1", "u0 p2"]);
    let second = session.children(&users[0], Post::AUTHOR).unwrap().remove(0);
    assert!(session.expunge(&second));
    let last = session.children(&users[0], Post::AUTHOR).unwrap();
    assert_eq!(last.len(), 1);
    let to = users[1].read().id;
    last[0].modify(|p| p.author_id = to);
    assert!(titles(&mut session, &users[0]).is_empty());
    assert_eq!(titles(&mut session, &users[1]).len(), 4);

    // Loaded again, the two expunged rows are filed at once as fresh instances.
    let reloaded = session.query::<Post>().all().await.unwrap();
    assert_eq!(reloaded.len(), 6);
    assert_eq!(titles(&mut session, &users[0]).len(), 2);
    assert_eq!(titles(&mut session, &users[1]).len(), 4, "the moved child keeps its change over the row");
}

#[tokio::test]
async fn a_savepoint_rollback_restores_both_collections() {
    let (_test_db, db) = setup().await;
    let (mut session, users) = two_loaded_users(&db).await;
    let before = (titles(&mut session, &users[0]), titles(&mut session, &users[1]));
    let posts = session.children(&users[0], Post::AUTHOR).unwrap();

    let savepoint = session.begin_nested().await.unwrap();
    let to = users[1].read().id;
    posts[0].modify(|p| p.author_id = to);
    let comments = session.load_children(&posts[1..2], Comment::POST).await.unwrap();
    for comment in &comments {
        session.delete(comment).unwrap();
    }
    session.delete(&posts[1]).unwrap();
    let added = session.add(post(users[0].read().id, "inside"));
    session.flush().await.unwrap();
    assert_eq!(titles(&mut session, &users[0]), ["inside", "u0 p2"]);
    assert_eq!(titles(&mut session, &users[1]).len(), 4);

    session.rollback_nested(savepoint).await.unwrap();
    assert_eq!((titles(&mut session, &users[0]), titles(&mut session, &users[1])), before);
    let restored = session.children(&users[0], Post::AUTHOR).unwrap();
    assert!(!restored.iter().any(|p| Tracked::ptr_eq(p, &added)), "the inserted post left the session");
    assert!(restored.iter().any(|p| Tracked::ptr_eq(p, &posts[1])), "the deleted post is back");
}

#[tokio::test]
async fn a_deleted_row_leaves_its_collection_and_a_row_switch_takes_its_place() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    session.add_all([
        NumberedCategory { id: 10, parent_id: None, name: "books".into() },
        NumberedCategory { id: 20, parent_id: Some(10), name: "poetry".into() },
        NumberedCategory { id: 21, parent_id: Some(10), name: "prose".into() },
        NumberedCategory { id: 30, parent_id: None, name: "music".into() },
    ]);
    session.commit().await.unwrap();

    let mut session = db.session();
    let roots = session.get_many::<NumberedCategory>(&[10, 30]).await.unwrap();
    let children = session.load_children(&roots, NumberedCategory::PARENT).await.unwrap();
    assert_eq!(session.children(&roots[0], NumberedCategory::PARENT).unwrap().len(), 2);
    let prose = children.iter().find(|c| c.read().id == 21).unwrap();
    session.delete(prose).unwrap();
    session.flush().await.unwrap();
    let names = |session: &mut orm_core::Session, parent| -> Vec<String> {
        let found = session.children(parent, NumberedCategory::PARENT).unwrap();
        found.iter().map(|c| c.read().name.clone()).collect()
    };
    assert_eq!(names(&mut session, &roots[0]), ["poetry"]);

    // Deleted and replaced by a new entity with the same key, under another parent.
    let poetry = children.iter().find(|c| c.read().id == 20).unwrap();
    session.delete(poetry).unwrap();
    session.add(NumberedCategory { id: 20, parent_id: Some(30), name: "songs".into() });
    session.flush().await.unwrap();
    assert!(names(&mut session, &roots[0]).is_empty());
    assert_eq!(names(&mut session, &roots[1]), ["songs"]);
}

#[tokio::test]
async fn a_cascade_follows_a_foreign_key_changed_after_the_index_was_built() {
    let (test_db, db) = setup().await;
    seed_users_posts_comments(&db, 1).await;
    let mut session = db.session();
    let posts = session.query::<Post>().order_by(Post::ID.asc()).all().await.unwrap();
    session.load_children(&posts, Comment::POST).await.unwrap();
    let moved = session.children(&posts[0], Comment::POST).unwrap().remove(0);
    let to = posts[1].read().id;
    moved.modify(|c| c.post_id = to);

    session.delete(&posts[0]).unwrap();
    assert_eq!(session.pending().unwrap().deletes, 2, "p0 and the comment still on it");
    session.delete(&posts[1]).unwrap();
    assert_eq!(session.pending().unwrap().deletes, 6, "and p1 with its two comments and the moved one");
    session.commit().await.unwrap();
    let client = test_db.client().await;
    let rows = client.query("SELECT body FROM comment ORDER BY id", &[]).await.unwrap();
    let left: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(left, ["u0 p2 c0", "u0 p2 c1"]);
}

/// Children linked to a pending parent and then deleted before any flush
/// leave the parent and the child kept to be inserted, and forgetting each
/// link costs a constant time: when each one shifted the others, these
/// 20,000 deletes took 23 s in a debug build (0.09 s since). The bound
/// makes a return to that fail, not crawl; it is fifty times what the
/// deletes take.
#[tokio::test]
async fn deleting_many_children_linked_to_a_pending_parent_is_not_quadratic() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let ann = session.add(user("ann"));
    let posts = session.add_all((0..20_000).map(|i| post(0, &format!("p{i}"))));
    for linked in &posts {
        session.set_parent(linked, Post::AUTHOR, &ann).unwrap();
    }
    let kept = session.add(post(0, "kept"));
    session.set_parent(&kept, Post::AUTHOR, &ann).unwrap();
    let started = std::time::Instant::now();
    for linked in &posts {
        session.delete(linked).unwrap();
    }
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(5), "20,000 deletes of linked pending children took {took:?}");
    session.commit().await.unwrap();

    let client = test_db.client().await;
    let stored = client.query_one("SELECT u.name, p.title FROM post p JOIN users u ON u.id = p.author_id", &[]).await;
    let stored = stored.expect("one post, written with its author's generated key");
    assert_eq!((stored.get::<_, String>(0), stored.get::<_, String>(1)), ("ann".to_owned(), "kept".to_owned()));
    assert_eq!(kept.read().author_id, ann.read().id);
}

/// A flush fills in the foreign keys of children linked to a pending parent
/// once the parent's key is generated, and remembers each child's values
/// before, to put back if the flush fails: remembering them costs a
/// constant time each. When each child was first looked for among those
/// already remembered, committing 20,000 such children took 11 s in a
/// debug build and 40,000 would take four times that; 40,000 take 0.7 s
/// since. The bound makes a return to that fail, not crawl.
#[tokio::test]
async fn a_flush_fills_in_many_links_to_a_pending_parent_in_linear_time() {
    const CHILDREN: usize = 40_000;
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let ann = session.add(user("ann"));
    let posts = session.add_all((0..CHILDREN).map(|i| post(0, &format!("p{i}"))));
    for linked in &posts {
        session.set_parent(linked, Post::AUTHOR, &ann).unwrap();
    }
    let started = std::time::Instant::now();
    session.commit().await.unwrap();
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(10), "committing {CHILDREN} linked children took {took:?}");

    let ann_id = ann.read().id;
    assert!(posts.iter().all(|linked| linked.read().author_id == ann_id));
    let client = test_db.client().await;
    let written: i64 =
        client.query_one("SELECT count(*) FROM post WHERE author_id = $1", &[&ann_id]).await.unwrap().get(0);
    assert_eq!(written, i64::try_from(CHILDREN).unwrap());
}

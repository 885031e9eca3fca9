//! Joins across declared relations: each child with its parent, both
//! identity-mapped (or both plain values, untracked), from one statement.

mod support;

use orm_core::{Database, DatabaseConfig, Session, Tracked};
use support::blog::{self, Post, User};

async fn setup() -> (orm_tests::TestDb, Database) {
    let test_db = orm_tests::TestDb::new().await;
    let client = test_db.client().await;
    client.batch_execute(blog::SCHEMA).await.unwrap();
    client
        .batch_execute(
            "INSERT INTO users (name) SELECT 'user ' || n FROM generate_series(1, 10) AS n;
             INSERT INTO post (author_id, title) SELECT 1 + n % 10, 'post ' || n FROM generate_series(1, 100) AS n;",
        )
        .await
        .unwrap();
    let db = Database::connect(test_db.url()).unwrap();
    (test_db, db)
}

#[tokio::test]
async fn a_join_returns_each_child_with_its_parent_in_one_statement_through_the_identity_map() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    let tracked_author = session.get_one::<User>(3).await.unwrap();
    tracked_author.modify(|u| u.name = "renamed, not flushed".into());
    session.set_autoflush(false);
    let before = session.stats().statements;
    let rows = session.query::<Post>().join(Post::AUTHOR).order_by(Post::ID.asc()).all().await.unwrap();
    assert_eq!(session.stats().statements, before + 1);
    assert_eq!(rows.len(), 100);
    for (post, author) in &rows {
        assert_eq!(post.read().author_id, author.read().id);
    }
    // Ten authors, one instance each, and the tracked one kept its change.
    let by_three: Vec<_> = rows.iter().filter(|(_, author)| author.read().id == 3).collect();
    assert_eq!(by_three.len(), 10);
    assert!(by_three.iter().all(|(_, author)| Tracked::ptr_eq(author, &tracked_author)));
    assert_eq!(tracked_author.read().name, "renamed, not flushed");
    // The other nine authors were not tracked before, and each repeats
    // within the load: one instance each too.
    for (_, author) in &rows {
        let id = author.read().id;
        let first = rows.iter().map(|(_, a)| a).find(|a| a.read().id == id).unwrap();
        assert!(Tracked::ptr_eq(author, first), "author {id} has one instance");
    }
    // The posts are tracked too: getting one costs nothing.
    let statements = session.stats().statements;
    assert!(Tracked::ptr_eq(&session.get_one::<Post>(1).await.unwrap(), &rows[0].0));
    assert_eq!(session.stats().statements, statements);
}

#[tokio::test]
async fn a_join_filters_on_either_side_and_pages() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    let rows = session
        .query::<Post>()
        .join(Post::AUTHOR)
        .filter(Post::TITLE.like("post 1%"))
        .filter_parent(User::NAME.eq("user 2"))
        .order_by(Post::ID.desc())
        .limit(2)
        .all()
        .await
        .unwrap();
    let titles: Vec<String> = rows.iter().map(|(post, _)| post.read().title.clone()).collect();
    assert_eq!(titles, ["post 11", "post 1"]);
}

#[tokio::test]
async fn a_join_into_a_fresh_session_gives_a_parent_repeated_within_a_block_one_instance() {
    let (_test_db, db) = setup().await;
    // Ten authors with ten posts each, so each author repeats within the
    // load's first block, into a session that tracked nothing before: the
    // repeats meet the first instance in the identity map's insert.
    let mut session = db.session();
    let rows = session.query::<Post>().join(Post::AUTHOR).order_by(Post::ID.asc()).all().await.unwrap();
    assert_eq!(rows.len(), 100);
    let mut firsts: Vec<&Tracked<User>> = Vec::new();
    for (post, author) in &rows {
        assert_eq!(post.read().author_id, author.read().id);
        match firsts.iter().find(|first| first.read().id == author.read().id) {
            Some(first) => assert!(Tracked::ptr_eq(author, first), "author {} has one instance", author.read().id),
            None => firsts.push(author),
        }
    }
    assert_eq!(firsts.len(), 10);
    let statements = session.stats().statements;
    for first in firsts {
        let id = first.read().id;
        assert!(Tracked::ptr_eq(&session.get_one::<User>(id).await.unwrap(), first), "author {id} is the tracked one");
    }
    assert_eq!(session.stats().statements, statements, "the authors are in the identity map");
}

#[tokio::test]
async fn a_join_into_a_fresh_session_gives_a_parent_repeated_in_a_later_block_one_instance() {
    let (test_db, db) = setup().await;
    // 100 authors, each with a post among the first 100 and another among
    // the next 100: each repeat comes after 64 new authors, so in a later
    // block of the load than its first row, into a session that tracked
    // nothing before (which skips looking rows up in the identity map).
    test_db
        .client()
        .await
        .batch_execute(
            "DELETE FROM post;
             INSERT INTO users (name) SELECT 'more ' || n FROM generate_series(11, 100) AS n;
             INSERT INTO post (author_id, title) SELECT (n - 1) % 100 + 1, 'again ' || n FROM generate_series(1, 200) AS n;",
        )
        .await
        .unwrap();
    let mut session = db.session();
    let rows = session.query::<Post>().join(Post::AUTHOR).order_by(Post::ID.asc()).all().await.unwrap();
    assert_eq!(rows.len(), 200);
    for ((first_post, first), (again_post, again)) in rows[..100].iter().zip(&rows[100..]) {
        assert_eq!(first_post.read().author_id, again_post.read().author_id);
        assert!(Tracked::ptr_eq(first, again), "author {} has one instance", first.read().id);
    }
    let statements = session.stats().statements;
    assert!(Tracked::ptr_eq(&session.get_one::<User>(77).await.unwrap(), &rows[76].1));
    assert_eq!(session.stats().statements, statements, "the author is in the identity map");
}

#[tokio::test]
async fn a_child_repeated_within_one_load_is_one_instance_and_one_child_of_its_parent() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    let users = session.get_many::<User>(&[1, 2]).await.unwrap();
    // The children index is built (and posts are tracked) before the load
    // that repeats rows: each repeat is filed in the index as it is made,
    // then meets its first instance in the identity map.
    session.load_children(&users[..1], Post::AUTHOR).await.unwrap();
    let repeated = session
        .query_raw::<Post>(
            "SELECT p.* FROM post AS p WHERE p.author_id = $1
             UNION ALL SELECT p.* FROM post AS p WHERE p.author_id = $1 ORDER BY 1",
            &[&2_i64],
        )
        .await
        .unwrap();
    assert_eq!(repeated.len(), 20);
    for pair in repeated.chunks(2) {
        assert!(Tracked::ptr_eq(&pair[0], &pair[1]), "post {} has one instance", pair[0].read().id);
    }
    let posts = session.load_children(&users[1..], Post::AUTHOR).await.unwrap();
    let children = session.children(&users[1], Post::AUTHOR).unwrap();
    assert_eq!(children.len(), 10, "each post once");
    for (child, (loaded, first)) in children.iter().zip(posts.iter().zip(repeated.iter().step_by(2))) {
        assert!(Tracked::ptr_eq(child, loaded) && Tracked::ptr_eq(child, first));
    }
}

/// A page of posts joined to their authors, the count of all posts and
/// the first two posts left-joined to theirs, loaded together.
async fn page_beside_count(
    session: &mut Session,
) -> (Vec<(Tracked<Post>, Tracked<User>)>, i64, Vec<(Tracked<Post>, Option<Tracked<User>>)>) {
    let page = session.query::<Post>().join(Post::AUTHOR).order_by(Post::ID.desc()).limit(3).all_later();
    let total = session.query::<Post>().count_later();
    let first_two = session.query::<Post>().left_join(Post::AUTHOR).filter(Post::ID.le(2)).all_later();
    session.load_together((page, total, first_two)).await.unwrap()
}

#[tokio::test]
async fn a_join_loaded_later_travels_beside_a_count_in_one_round_trip() {
    let (test_db, _) = setup().await;
    // One connection, on which a first session prepares the statements:
    // the second's round trips are the loads' own.
    let mut config = DatabaseConfig::from_url(test_db.url()).unwrap();
    config.max_connections = 1;
    let db = Database::with_config(config).unwrap();
    page_beside_count(&mut db.session()).await;
    let mut session = db.session();
    let tracked_author = session.get_one::<User>(2).await.unwrap();
    let before = session.stats();
    let (page, total, first_two) = page_beside_count(&mut session).await;
    let after = session.stats();
    assert_eq!((after.statements - before.statements, after.round_trips - before.round_trips), (3, 1));
    assert_eq!(total, 100);
    let ids: Vec<(i64, i64)> = page.iter().map(|(post, author)| (post.read().id, author.read().id)).collect();
    // Post n is by user 1 + n % 10.
    assert_eq!(ids, [(100, 1), (99, 10), (98, 9)]);
    assert_eq!(first_two.len(), 2);
    // Post 1 is by user 2, tracked before: that instance.
    let (first, author) = &first_two[0];
    assert_eq!(first.read().id, 1);
    assert!(Tracked::ptr_eq(author.as_ref().unwrap(), &tracked_author));
    // The posts went through the identity map too.
    let statements = session.stats().statements;
    assert!(Tracked::ptr_eq(&session.get_one::<Post>(100).await.unwrap(), &page[0].0));
    assert_eq!(session.stats().statements, statements);
}

#[tokio::test]
async fn an_untracked_join_returns_plain_values_and_tracks_nothing() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    // A change not flushed yet: the join's autoflush writes it first, so
    // the plain rows show it, as a tracked join's would.
    let tracked_author = session.get_one::<User>(3).await.unwrap();
    tracked_author.modify(|u| u.name = "renamed".into());
    let before = session.stats().statements;
    let rows: Vec<(Post, User)> =
        session.query::<Post>().order_by(Post::ID.asc()).untracked().join(Post::AUTHOR).all().await.unwrap();
    // The flush of the rename, then the join.
    assert_eq!(session.stats().statements, before + 2);
    assert_eq!(rows.len(), 100);
    for (n, (post, author)) in (1..).zip(&rows) {
        // Post n is by user 1 + n % 10.
        assert_eq!(post, &Post { id: n, author_id: 1 + n % 10, title: format!("post {n}") });
        let name = if author.id == 3 { "renamed".to_owned() } else { format!("user {}", author.id) };
        assert_eq!(author, &User { id: post.author_id, name });
    }
    // Nothing was tracked: a post is loaded again, and changing a plain
    // value writes nothing.
    let mut post = rows[0].0.clone();
    post.title = "changed in memory only".into();
    let statements = session.stats().statements;
    let loaded = session.get_one::<Post>(1).await.unwrap();
    assert_eq!(session.stats().statements, statements + 1);
    assert_eq!(loaded.read().title, "post 1");
    session.commit().await.unwrap();
    let titles: Vec<String> =
        db.session().query::<Post>().untracked().all().await.unwrap().into_iter().map(|post| post.title).collect();
    assert!(titles.iter().all(|title| title.starts_with("post ")));
}

#[tokio::test]
async fn an_untracked_join_filters_on_either_side_pages_and_left_joins() {
    let (test_db, db) = setup().await;
    let client = test_db.client().await;
    client.batch_execute("ALTER TABLE post ALTER COLUMN author_id DROP NOT NULL").await.unwrap();
    client.batch_execute("UPDATE post SET author_id = NULL WHERE id = 2").await.unwrap();
    let mut session = db.session();
    let rows = session
        .query::<OptionalPost>()
        .filter(OptionalPost::TITLE.like("post 1%"))
        .order_by(OptionalPost::ID.desc())
        .limit(2)
        .untracked()
        .join(OptionalPost::AUTHOR)
        .filter_parent(User::NAME.eq("user 2"))
        .all()
        .await
        .unwrap();
    let found: Vec<(i64, i64)> = rows.iter().map(|(post, author)| (post.id, author.id)).collect();
    assert_eq!(found, [(11, 2), (1, 2)]);
    let first_three = session
        .query::<OptionalPost>()
        .filter(OptionalPost::ID.le(3))
        .order_by(OptionalPost::ID.asc())
        .untracked()
        .left_join(OptionalPost::AUTHOR)
        .all()
        .await
        .unwrap();
    let authors: Vec<Option<String>> =
        first_three.iter().map(|(_, author)| author.as_ref().map(|a| a.name.clone())).collect();
    assert_eq!(authors, [Some("user 2".to_owned()), None, Some("user 4".to_owned())]);
    assert_eq!(first_three[1].0, OptionalPost { id: 2, author_id: None, title: "post 2".into() });
    // The inner join leaves the post without an author out.
    let inner = session.query::<OptionalPost>().filter(OptionalPost::ID.le(3)).untracked().join(OptionalPost::AUTHOR);
    assert_eq!(inner.all().await.unwrap().len(), 2);
}

/// [`Post`] on the same table, whose author may be missing.
#[derive(orm_core::Entity, Clone, Debug, PartialEq)]
#[orm(table = "post")]
struct OptionalPost {
    #[orm(primary_key, generated)]
    id: i64,
    #[orm(references = User)]
    author_id: Option<i64>,
    title: String,
}

#[tokio::test]
async fn untracked_loads_travel_beside_a_count_in_one_round_trip() {
    let (test_db, _) = setup().await;
    let mut config = DatabaseConfig::from_url(test_db.url()).unwrap();
    config.max_connections = 1;
    let db = Database::with_config(config).unwrap();
    let mut session = db.session();
    // Prepares the statements: the round trip counted next is the loads'.
    session.query::<Post>().count().await.unwrap();
    let load = |session: &mut Session| {
        let page =
            session.query::<Post>().order_by(Post::ID.desc()).limit(3).untracked().join(Post::AUTHOR).all_later();
        let users = session.query::<User>().filter(User::ID.le(2)).order_by(User::ID.asc()).untracked().all_later();
        let total = session.query::<Post>().count_later();
        (page, users, total)
    };
    let loads = load(&mut session);
    session.load_together(loads).await.unwrap();
    let before = session.stats();
    let loads = load(&mut session);
    let (page, users, total) = session.load_together(loads).await.unwrap();
    let after = session.stats();
    assert_eq!((after.statements - before.statements, after.round_trips - before.round_trips), (3, 1));
    let ids: Vec<(i64, i64)> = page.iter().map(|(post, author)| (post.id, author.id)).collect();
    assert_eq!(ids, [(100, 1), (99, 10), (98, 9)]);
    assert_eq!(users, [User { id: 1, name: "user 1".into() }, User { id: 2, name: "user 2".into() }]);
    assert_eq!(total, 100);
    // Still nothing tracked: a get of a loaded user costs a statement.
    session.get_one::<User>(1).await.unwrap();
    assert_eq!(session.stats().statements, after.statements + 1);
}

/// A selected value that cannot be decoded (a NULL for an `i32`) fails the
/// whole join before any row is tracked, alone or in a group: the identity
/// map is as it was, and the posts are loaded again.
#[tokio::test]
async fn a_tracked_join_whose_selected_values_fail_to_decode_tracks_nothing() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    let null = || orm_core::Expr::<Post, i32>::raw("NULL", vec![]);
    let alone = session.query::<Post>().join(Post::AUTHOR).with(null()).all().await;
    assert!(matches!(alone, Err(orm_core::Error::Decode { .. })), "{alone:?}");
    let later = session.query::<Post>().join(Post::AUTHOR).with(null()).all_later();
    let together = session.load_together((later,)).await;
    assert!(matches!(together, Err(orm_core::Error::Decode { .. })), "{together:?}");
    let statements = session.stats().statements;
    session.get_one::<Post>(1).await.unwrap();
    session.get_one::<User>(2).await.unwrap();
    assert_eq!(session.stats().statements, statements + 2, "neither the post nor its author was tracked");
}

/// A locking read with a join locks the query's own rows, not the parents
/// beside them: another transaction can still lock an author, and a left
/// join, whose missing parents cannot be locked, runs at all.
#[tokio::test]
async fn a_locking_join_locks_the_children_only() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let locked = session.query::<Post>().filter(Post::AUTHOR_ID.eq(3_i64)).for_update().join(Post::AUTHOR).all();
    assert_eq!(locked.await.unwrap().len(), 10);
    let other = test_db.client().await;
    let author = other.query("SELECT id FROM users WHERE id = 3 FOR UPDATE NOWAIT", &[]).await;
    assert!(author.is_ok(), "the author is not locked: {author:?}");
    let post = other.query("SELECT id FROM post WHERE author_id = 3 FOR UPDATE NOWAIT", &[]).await;
    let code = post.expect_err("the posts are locked").code().cloned();
    assert_eq!(code, Some(orm_core::tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE));

    let left = session.query::<Post>().filter(Post::AUTHOR_ID.eq(4_i64)).for_update().left_join(Post::AUTHOR).all();
    assert_eq!(left.await.unwrap().len(), 10);
    session.commit().await.unwrap();
}

/// A join keeps the query's `DISTINCT ON`, tracked or not: the latest post
/// of each author, with its author, as the query alone would load them.
#[tokio::test]
async fn a_join_keeps_the_querys_distinct_on() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    // Post n is by user 1 + n % 10: the latest of each are 91 to 100.
    let tracked = session
        .query::<Post>()
        .distinct_on(Post::AUTHOR_ID)
        .order_by(Post::AUTHOR_ID.asc())
        .order_by(Post::ID.desc())
        .join(Post::AUTHOR)
        .all()
        .await
        .unwrap();
    let mut ids: Vec<i64> = tracked.iter().map(|(post, _)| post.read().id).collect();
    ids.sort_unstable();
    assert_eq!(ids, (91..=100).collect::<Vec<_>>());
    assert!(tracked.iter().all(|(post, author)| post.read().author_id == author.read().id));

    let plain: Vec<(Post, User)> = session
        .query::<Post>()
        .distinct_on(Post::AUTHOR_ID)
        .order_by(Post::AUTHOR_ID.asc())
        .order_by(Post::ID.desc())
        .untracked()
        .join(Post::AUTHOR)
        .all()
        .await
        .unwrap();
    let mut ids: Vec<i64> = plain.iter().map(|(post, _)| post.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, (91..=100).collect::<Vec<_>>());
}

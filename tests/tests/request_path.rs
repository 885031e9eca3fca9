//! The web request path: read-only work runs without `BEGIN`/`COMMIT`
//! whatever API it uses, and independent loads travel together in one
//! round trip.

mod support;

use std::future::Future;
use std::time::Duration;

use orm_core::{Expr, Load, RawSql};
use support::blog::{self, Comment, Post, User};
use support::{customer, seeded, Customer, LogBuffer};

/// Runs a test body under a timeout: a pipelined batch that waited for an
/// answer never sent would hang.
async fn in_time<T>(body: impl Future<Output = T>) -> T {
    // Boxed: a test's whole body is one large future.
    tokio::time::timeout(Duration::from_secs(60), Box::pin(body)).await.expect("the test finished within 60 s")
}

/// How many statements named `name` (`BEGIN`, `COMMIT`) the log shows sent.
fn sent(log: &LogBuffer, name: &str) -> usize {
    let quoted = format!(r#"otel.name="{name}""#);
    log.text()
        .lines()
        .filter(|line| line.contains("close") && line.contains("orm.statement{") && line.contains(&quoted))
        .count()
}

#[tokio::test]
async fn reads_of_every_kind_send_no_begin_and_no_commit() {
    in_time(async {
        let (_test_db, db) = seeded(&["ann", "ben"]).await;
        let log = LogBuffer::default();
        let _guard = log.install_spans();

        let mut session = db.session();
        let all = session.query::<Customer>().all().await.unwrap();
        let count = session.query::<Customer>().count().await.unwrap();
        let names: Vec<String> = session.query::<Customer>().select(Customer::NAME).all().await.unwrap();
        let longest: Option<i32> = session
            .query::<Customer>()
            .select(Expr::<Customer, Option<i32>>::raw("max(length(name))", Vec::new()))
            .one()
            .await
            .unwrap();
        let raw = session.query_rows(RawSql::once("SELECT count(*) FROM customer").read_only(), &[]).await.unwrap();
        let raw_entities = session
            .query_raw::<Customer>(RawSql::cached("SELECT * FROM customer WHERE name = $1").read_only(), &[&"ann"])
            .await
            .unwrap();
        let stats = session.commit().await.unwrap();

        assert_eq!((all.len(), count, names.len(), longest, raw_entities.len()), (2, 2, 2, Some(3), 1));
        assert_eq!(raw[0].get::<_, i64>(0), 2);
        assert_eq!(stats.statements, 6);
        assert_eq!((sent(&log, "BEGIN"), sent(&log, "COMMIT")), (0, 0), "{}", log.text());
    })
    .await;
}

#[tokio::test]
async fn a_raw_statement_not_marked_read_only_still_opens_the_transaction() {
    in_time(async {
        let (_test_db, db) = seeded(&["ann"]).await;
        let log = LogBuffer::default();
        let _guard = log.install_spans();

        let mut session = db.session();
        session.query_rows("SELECT count(*) FROM customer", &[]).await.unwrap();
        session.commit().await.unwrap();
        // A row lock needs the transaction too.
        let mut session = db.session();
        session.query::<Customer>().for_update().all().await.unwrap();
        session.commit().await.unwrap();

        assert_eq!((sent(&log, "BEGIN"), sent(&log, "COMMIT")), (2, 2), "{}", log.text());
    })
    .await;
}

#[tokio::test]
async fn a_write_after_reads_is_one_transaction_begun_with_the_write() {
    in_time(async {
        let (test_db, db) = seeded(&["ann"]).await;
        let log = LogBuffer::default();
        let _guard = log.install_spans();

        let mut session = db.session();
        let ann = session.query::<Customer>().one().await.unwrap();
        session.query_rows(RawSql::once("SELECT 1").read_only(), &[]).await.unwrap();
        assert_eq!(sent(&log, "BEGIN"), 0, "reads alone open nothing");
        ann.write().description = Some("first".into());
        session.add(customer("ben"));
        session.flush().await.unwrap();
        // After the first write, reads (raw ones too) see the transaction's rows.
        let inside = session.query_rows(RawSql::once("SELECT count(*) FROM customer").read_only(), &[]).await.unwrap();
        assert_eq!(inside[0].get::<_, i64>(0), 2);
        session.execute("UPDATE customer SET description = 'raw' WHERE name = 'ben'", &[]).await.unwrap();
        session.commit().await.unwrap();

        assert_eq!((sent(&log, "BEGIN"), sent(&log, "COMMIT")), (1, 1), "{}", log.text());
        let client = test_db.client().await;
        let rows = client.query("SELECT name, description FROM customer ORDER BY id", &[]).await.unwrap();
        let found: Vec<(String, Option<String>)> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
        assert_eq!(found, [("ann".into(), Some("first".into())), ("ben".into(), Some("raw".into()))]);
    })
    .await;
}

/// Two users with two posts each, and comments on the first post.
async fn blog() -> (orm_tests::TestDb, orm_core::Database) {
    let test_db = orm_tests::TestDb::new().await;
    test_db
        .client()
        .await
        .batch_execute(&format!(
            "{}
            INSERT INTO users (name) VALUES ('ann'), ('ben');
            INSERT INTO post (author_id, title) VALUES (1, 'a1'), (2, 'b1'), (1, 'a2'), (2, 'b2');
            INSERT INTO comment (post_id, body) VALUES (1, 'first'), (1, 'second'), (2, 'third');",
            blog::SCHEMA
        ))
        .await
        .unwrap();
    // One connection, so that what one session prepared the next finds.
    let mut config = orm_core::DatabaseConfig::from_url(test_db.url()).unwrap();
    config.max_connections = 1;
    let db = orm_core::Database::with_config(config).unwrap();
    (test_db, db)
}

/// A page of posts (the newest three) and what it shows, in two groups:
/// the page beside the count, then everything keyed by the page.
async fn page_with_relations(
    session: &mut orm_core::Session,
) -> (Vec<orm_core::Tracked<Post>>, i64, Vec<orm_core::Tracked<User>>, Vec<(i64, i64)>) {
    let page = session.query::<Post>().order_by(Post::ID.desc()).limit(3).all_later();
    let total = session.query::<Post>().count_later();
    let (posts, total) = session.load_together((page, total)).await.unwrap();
    let ids: Vec<i64> = posts.iter().map(|post| post.read().id).collect();
    let counts = session
        .query::<Comment>()
        .select((Comment::POST_ID, Expr::count_all()))
        .filter(Comment::POST_ID.is_in(ids.iter().copied()))
        .group_by(Comment::POST_ID)
        .order_by(Comment::POST_ID.asc())
        .all_later();
    let (authors, _comments, counts) = session
        .load_together((Load::parents(&posts, Post::AUTHOR), Load::children(&posts, Comment::POST), counts))
        .await
        .unwrap();
    (posts, total, authors, counts)
}

#[tokio::test]
async fn independent_loads_cost_one_round_trip_per_group_and_go_through_the_identity_map() {
    in_time(async {
        let (_test_db, db) = blog().await;
        // The first run on the pool's one connection prepares the statements.
        let mut warm_up = db.session();
        warm_up.get_one::<User>(1).await.unwrap();
        page_with_relations(&mut warm_up).await;
        warm_up.commit().await.unwrap();
        let log = LogBuffer::default();
        let _guard = log.install_spans();

        let mut session = db.session();
        let ann = session.get_one::<User>(1).await.unwrap();
        let before = session.stats();
        let (posts, total, authors, counts) = page_with_relations(&mut session).await;
        let during = session.stats();
        assert_eq!((during.statements - before.statements, during.round_trips - before.round_trips), (5, 2));

        let titles: Vec<String> = posts.iter().map(|post| post.read().title.clone()).collect();
        assert_eq!((titles, total), (vec!["b2".to_owned(), "a2".into(), "b1".into()], 4));
        assert_eq!(authors.len(), 2);
        assert!(authors.iter().any(|author| orm_core::Tracked::ptr_eq(author, &ann)), "ann came from the identity map");
        let author = session.parent(&posts[1], Post::AUTHOR).unwrap().unwrap();
        assert!(orm_core::Tracked::ptr_eq(&author, &ann));
        let comments = session.children(&posts[2], Comment::POST).unwrap();
        assert_eq!(comments.iter().map(|c| c.read().body.clone()).collect::<Vec<_>>(), ["third"]);
        assert!(session.children(&posts[0], Comment::POST).unwrap().is_empty());
        assert_eq!(counts, [(2, 1)]);
        // A load of rows the session tracks already sends nothing.
        let (again,) = session.load_together((Load::<Vec<orm_core::Tracked<User>>>::get_many(&[1, 2]),)).await.unwrap();
        assert_eq!((again.len(), session.stats().statements), (2, during.statements));

        let stats = session.commit().await.unwrap();
        assert_eq!((stats.statements, stats.round_trips), (6, 3), "nothing to commit: no COMMIT");
        assert_eq!((sent(&log, "BEGIN"), sent(&log, "COMMIT")), (0, 0), "{}", log.text());
    })
    .await;
}

#[tokio::test]
async fn a_locking_load_in_a_group_begins_the_transaction_in_the_same_round_trip() {
    in_time(async {
        let (test_db, db) = blog().await;
        let log = LogBuffer::default();
        let _guard = log.install_spans();

        let mut session = db.session();
        let locked = session.query::<User>().filter(User::ID.eq(1)).for_update().all_later();
        let posts = session.query::<Post>().all_later();
        let (users, posts) = session.load_together((locked, posts)).await.unwrap();
        assert_eq!((users.len(), posts.len()), (1, 4));
        assert_eq!(sent(&log, "BEGIN"), 1, "{}", log.text());
        // The lock holds until the session ends: another transaction cannot take it.
        let other = test_db.client().await;
        let taken = other.query("SELECT id FROM users WHERE id = 1 FOR UPDATE NOWAIT", &[]).await;
        assert!(taken.is_err(), "the row is locked by the session's transaction");
        users[0].write().name = "ann 2".into();
        session.commit().await.unwrap();
        let name: String = other.query_one("SELECT name FROM users WHERE id = 1", &[]).await.unwrap().get(0);
        assert_eq!(name, "ann 2");
    })
    .await;
}

#[tokio::test]
async fn a_failing_load_in_a_group_returns_its_error_and_the_session_goes_on() {
    in_time(async {
        let (_test_db, db) = blog().await;
        let mut session = db.session();
        let posts = session.query::<Post>().all_later();
        let broken = session
            .query::<User>()
            .filter(User::ID.eq(1))
            .select(Expr::<User, i64>::raw("1 / 0", Vec::new()))
            .all_later();
        let failed = session.load_together((posts, broken)).await;
        assert!(failed.is_err(), "division by zero");
        assert!(session.query::<Post>().all().await.is_ok(), "outside a transaction nothing was lost");
        assert!(session.query::<User>().all().await.unwrap().len() == 2);
    })
    .await;
}

#[tokio::test]
async fn a_group_autoflushes_first_and_reads_what_it_wrote() {
    in_time(async {
        let (_test_db, db) = blog().await;
        let mut session = db.session();
        let cy = session.add(blog::user("cy"));
        let posts_of_cy = session.add(blog::post(0, "c1"));
        session.set_parent(&posts_of_cy, Post::AUTHOR, &cy).unwrap();
        let users = session.query::<User>().count_later();
        let (count, posts) =
            session.load_together((users, Load::children(std::slice::from_ref(&cy), Post::AUTHOR))).await.unwrap();
        assert_eq!(count, 3);
        assert_eq!(posts.len(), 1);
        assert!(orm_core::Tracked::ptr_eq(&posts[0], &posts_of_cy));
        session.commit().await.unwrap();
    })
    .await;
}

/// Loads between flushes autoflush with nothing to do, which takes a
/// shortcut (no registry's flush state to end after a flush that ended);
/// writes made after them, and written again, are flushed as usual.
#[tokio::test]
async fn writes_after_empty_autoflushes_are_flushed_as_usual() {
    in_time(async {
        let (test_db, db) = seeded(&["ann", "ben"]).await;
        let mut session = db.session();
        let ann = session.get_one::<Customer>(1).await.unwrap();
        ann.write().name = "anna".into();
        let cara = session.add(customer("cara"));
        session.flush().await.unwrap();
        // Empty autoflushes: the flush above ended, nothing is pending.
        let ben = session.get_one::<Customer>(2).await.unwrap();
        assert_eq!(session.query::<Customer>().count().await.unwrap(), 3);
        ben.write().name = "benedict".into();
        ann.write().description = Some("twice written".into());
        cara.write().name = "carla".into();
        // This autoflush has the three writes to send.
        assert_eq!(session.query::<Customer>().filter(Customer::NAME.eq("carla")).count().await.unwrap(), 1);
        session.get_one::<Customer>(1).await.unwrap();
        session.commit().await.unwrap();

        let client = test_db.client().await;
        let rows = client.query("SELECT name, description FROM customer ORDER BY id", &[]).await.unwrap();
        let rows: Vec<(String, Option<String>)> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
        assert_eq!(
            rows,
            [
                ("anna".to_owned(), Some("twice written".to_owned())),
                ("benedict".to_owned(), None),
                ("carla".to_owned(), None)
            ]
        );
    })
    .await;
}

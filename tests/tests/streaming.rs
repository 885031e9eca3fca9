//! `Query::stream` and `Query::stream_tracked`: large results read as rows
//! arrive, on the real server.

mod support;

use std::future::Future;
use std::time::Duration;

use orm_core::{Database, Entity, Error, Tracked};
use orm_tests::TestDb;
use support::{checkout_state, setup, setup_with, Customer};

/// Runs a test body under a bound, so a stream that never ends fails the
/// test instead of hanging it.
async fn bounded<T>(body: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), body).await.expect("the test took over two minutes")
}

/// Fills `customer` with `n` rows: ids 1..=n, named `customer <id>`.
async fn seed(test_db: &TestDb, n: i32) {
    test_db
        .client()
        .await
        .execute(
            "INSERT INTO customer (name, description)
             SELECT 'customer ' || n, 'description ' || n FROM generate_series(1, $1) AS n",
            &[&n],
        )
        .await
        .expect("seed the customers");
}

async fn setup_one_connection() -> (TestDb, Database) {
    setup_with(|config| {
        config.max_connections = 1;
        config.wait_timeout = Duration::from_secs(20);
    })
    .await
}

#[tokio::test]
async fn a_stream_of_50000_rows_decodes_every_row_in_order() {
    bounded(async {
        let (test_db, db) = setup().await;
        seed(&test_db, 50_000).await;
        let mut session = db.session();
        let mut stream = session
            .query::<Customer>()
            .filter(Customer::ID.gt(0))
            .order_by(Customer::ID.asc())
            .stream()
            .await
            .expect("the query starts");
        let mut expected = 0;
        while let Some(customer) = stream.try_next().await.expect("a row") {
            expected += 1;
            assert_eq!(customer.id, expected, "rows come in the query's order");
            assert_eq!(customer.name, format!("customer {expected}"));
            assert_eq!(customer.description, Some(format!("description {expected}")));
        }
        assert_eq!(expected, 50_000);
        assert!(stream.try_next().await.expect("an ended stream").is_none(), "an ended stream stays ended");
        drop(stream);
        let stats = session.stats();
        assert_eq!((stats.statements, stats.rows), (1, 50_000));
        // Untracked: loading a key again reads it.
        assert!(session.get::<Customer>(1).await.expect("get").is_some());
        assert_eq!(session.stats().statements, 2);
        session.commit().await.expect("commit");
    })
    .await;
}

#[tokio::test]
async fn a_stream_is_a_futures_stream() {
    use futures_util::TryStreamExt;
    bounded(async {
        let (test_db, db) = setup().await;
        seed(&test_db, 100).await;
        let mut session = db.session();
        let stream = session.query::<Customer>().filter(Customer::ID.le(10)).stream().await.expect("the query starts");
        let ids: Vec<i32> = stream.map_ok(|customer| customer.id).try_collect().await.expect("all rows");
        assert_eq!(ids.len(), 10);
    })
    .await;
}

#[tokio::test]
async fn a_stream_dropped_mid_way_outside_a_transaction_leaves_the_session_usable() {
    bounded(async {
        let (test_db, db) = setup_one_connection().await;
        seed(&test_db, 50_000).await;
        let mut session = db.session();
        let mut stream = session.query::<Customer>().stream().await.expect("the query starts");
        for _ in 0..10 {
            stream.try_next().await.expect("a row").expect("more rows");
        }
        drop(stream);

        // The next statement neither waits for nor reads the rest of the
        // dropped one's rows.
        assert_eq!(session.query::<Customer>().count().await.expect("a statement after the drop"), 50_000);
        session.add(support::customer("after the stream"));
        session.commit().await.expect("commit after the drop");
        let (clean, _) = checkout_state(&db).await;
        assert!(clean, "the connection came back inside a transaction");
        assert_eq!(support::count_rows(&test_db, "customer").await, 50_001);
    })
    .await;
}

#[tokio::test]
async fn a_stream_dropped_mid_way_inside_a_transaction_leaves_only_a_rollback() {
    bounded(async {
        let (test_db, db) = setup_one_connection().await;
        seed(&test_db, 50_000).await;
        let mut session = db.session();
        session.add(support::customer("flushed before the stream"));
        session.flush().await.expect("flush");
        let mut stream = session.query::<Customer>().stream().await.expect("the query starts");
        stream.try_next().await.expect("a row").expect("more rows");
        drop(stream);

        // The transaction went with the abandoned connection.
        assert!(matches!(session.commit().await, Err(Error::TransactionFailed)));
        let (clean, _) = checkout_state(&db).await;
        assert!(clean, "the next borrower is inside the abandoned transaction");
        assert_eq!(support::count_rows(&test_db, "customer").await, 50_000, "the flushed row was not committed");
    })
    .await;
}

/// `customer` with its nullable description mapped as never null: a row
/// whose description is NULL cannot be decoded.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "customer")]
struct StrictCustomer {
    #[orm(primary_key, generated)]
    id: i32,
    name: String,
    description: String,
}

#[tokio::test]
async fn a_row_that_cannot_be_decoded_ends_the_stream_and_the_session_stays_usable() {
    bounded(async {
        let (test_db, db) = setup_one_connection().await;
        seed(&test_db, 10_000).await;
        test_db.client().await.execute("UPDATE customer SET description = NULL WHERE id = 3", &[]).await.unwrap();
        let mut session = db.session();
        let mut stream =
            session.query::<StrictCustomer>().order_by(StrictCustomer::ID.asc()).stream().await.expect("starts");
        assert_eq!(stream.try_next().await.expect("row 1").map(|c| c.id), Some(1));
        assert_eq!(stream.try_next().await.expect("row 2").map(|c| c.id), Some(2));
        let error = stream.try_next().await.expect_err("row 3 has no description");
        assert!(matches!(error, Error::Decode { entity: "StrictCustomer", .. }), "{error:?}");
        assert!(stream.try_next().await.expect("ended").is_none(), "an error ends the stream");
        drop(stream);

        assert_eq!(session.query::<Customer>().count().await.expect("the session is usable"), 10_000);
        session.add(support::customer("after the error"));
        session.commit().await.expect("commit after the error");
        assert_eq!(support::count_rows(&test_db, "customer").await, 10_001);
    })
    .await;
}

#[tokio::test]
async fn tracked_chunks_flush_changes_between_chunks_and_commit_them_all() {
    bounded(async {
        let (test_db, db) = setup().await;
        seed(&test_db, 10_000).await;
        let mut session = db.session();
        let mut chunks = session
            .query::<Customer>()
            .filter(Customer::ID.gt(0))
            .order_by(Customer::ID.asc())
            .stream_tracked(1000)
            .await
            .expect("the cursor opens");
        let mut seen = 0;
        while let Some(chunk) = chunks.next_chunk().await.expect("a chunk") {
            assert_eq!(chunk.len(), 1000);
            for customer in &chunk {
                seen += 1;
                assert_eq!(customer.read().id, seen, "rows come in the query's order");
                customer.modify(|c| c.name = c.name.to_uppercase());
            }
        }
        assert_eq!(seen, 10_000);
        drop(chunks);
        let stats = session.commit().await.expect("commit");
        // DECLARE, 11 FETCHes (the last finds no rows), an UPDATE per chunk.
        assert_eq!(stats.statements, 1 + 11 + 10);
        let client = test_db.client().await;
        let renamed: i64 =
            client.query_one("SELECT count(*) FROM customer WHERE name LIKE 'CUSTOMER %'", &[]).await.unwrap().get(0);
        assert_eq!(renamed, 10_000);
    })
    .await;
}

#[tokio::test]
async fn tracked_chunks_keep_about_one_chunk_in_the_identity_map() {
    bounded(async {
        let (test_db, db) = setup().await;
        seed(&test_db, 10_000).await;
        let mut session = db.session();
        let known = session.get_one::<Customer>(1).await.expect("customer 1");
        let mut chunks =
            session.query::<Customer>().order_by(Customer::ID.asc()).stream_tracked(100).await.expect("opens");
        let first = chunks.next_chunk().await.expect("chunk 1").expect("rows");
        assert!(Tracked::ptr_eq(&first[0], &known), "a row the session tracks comes back as its instance");
        first[1].modify(|c| c.name = "changed in chunk 1".into());
        let mut last = Vec::new();
        for _ in 0..4 {
            last = chunks.next_chunk().await.expect("a chunk").expect("rows");
        }
        drop(chunks);
        assert_eq!(session.pending().expect("pending").updates, 0, "each change was flushed before the next chunk");

        let before = session.stats().statements;
        // The last chunk is still tracked: no SQL, the same instance.
        let in_last = session.get_one::<Customer>(last[0].read().id).await.expect("from the last chunk");
        assert!(Tracked::ptr_eq(&in_last, &last[0]));
        // An instance tracked before the stream stays tracked.
        assert!(Tracked::ptr_eq(&session.get_one::<Customer>(1).await.expect("customer 1"), &known));
        assert_eq!(session.stats().statements, before);
        // Earlier chunks left the identity map: their keys are read again,
        // into fresh instances holding what the flush wrote.
        let reloaded = session.get_one::<Customer>(2).await.expect("customer 2");
        assert!(!Tracked::ptr_eq(&reloaded, &first[1]));
        assert_eq!(reloaded.read().name, "changed in chunk 1");
        assert_eq!(session.stats().statements, before + 1);
        session.commit().await.expect("commit");
    })
    .await;
}

#[tokio::test]
async fn tracked_chunks_with_autoflush_off_keep_unflushed_entities_tracked() {
    bounded(async {
        let (test_db, db) = setup().await;
        seed(&test_db, 300).await;
        let mut session = db.session();
        session.set_autoflush(false);
        let mut chunks =
            session.query::<Customer>().order_by(Customer::ID.asc()).stream_tracked(100).await.expect("opens");
        let first = chunks.next_chunk().await.expect("chunk 1").expect("rows");
        first[0].modify(|c| c.name = "kept until the commit".into());
        while chunks.next_chunk().await.expect("a chunk").is_some() {}
        drop(chunks);
        assert_eq!(session.pending().expect("pending").updates, 1, "the change is still pending, and tracked");
        session.commit().await.expect("commit");
        let name: String =
            test_db.client().await.query_one("SELECT name FROM customer WHERE id = 1", &[]).await.unwrap().get(0);
        assert_eq!(name, "kept until the commit");
    })
    .await;
}

#[tokio::test]
async fn a_chunk_that_cannot_be_decoded_is_an_error_and_the_session_stays_usable() {
    bounded(async {
        let (test_db, db) = setup().await;
        seed(&test_db, 300).await;
        test_db.client().await.execute("UPDATE customer SET description = NULL WHERE id = 150", &[]).await.unwrap();
        let mut session = db.session();
        let mut chunks =
            session.query::<StrictCustomer>().order_by(StrictCustomer::ID.asc()).stream_tracked(100).await.unwrap();
        let first = chunks.next_chunk().await.expect("chunk 1").expect("rows");
        first[0].modify(|c| c.name = "changed before the error".into());
        let error = chunks.next_chunk().await.expect_err("row 150 has no description");
        assert!(matches!(error, Error::Decode { entity: "StrictCustomer", .. }), "{error:?}");
        assert!(chunks.next_chunk().await.expect("ended").is_none(), "an error ends the stream");
        drop(chunks);
        session.commit().await.expect("the session is usable and commits what was flushed");
        let name: String =
            test_db.client().await.query_one("SELECT name FROM customer WHERE id = 1", &[]).await.unwrap().get(0);
        assert_eq!(name, "changed before the error");
    })
    .await;
}

/// A chunk size of any `usize` is taken: the largest ones fetch as many
/// rows as a `FETCH` can, and room is made for the rows that come, not for
/// the size asked (`usize::MAX` panicked making room for it).
#[tokio::test]
async fn tracked_chunks_of_any_size_fetch_what_there_is() {
    bounded(async {
        let (test_db, db) = setup().await;
        seed(&test_db, 300).await;
        let mut session = db.session();
        for size in [usize::MAX, 1 << 40] {
            let mut chunks = session.query::<Customer>().stream_tracked(size).await.expect("opens");
            let chunk = chunks.next_chunk().await.expect("the chunk").expect("rows");
            assert_eq!(chunk.len(), 300);
            assert!(chunks.next_chunk().await.expect("the end").is_none());
        }
        session.commit().await.expect("commits");
    })
    .await;
}

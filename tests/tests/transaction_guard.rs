//! The transaction guard: a flush pipelines its statements behind its
//! `BEGIN`, and the server runs each of them whatever became of that
//! `BEGIN`. If the `BEGIN` failed (a cancel request landing on it), they
//! must write nothing; if it failed after opening the transaction, the
//! session must roll that transaction back before its connection is reused.

mod support;

use std::time::Duration;

use orm_core::tokio_postgres::types::{ToSql, Type};
use orm_core::{Database, Error};
use orm_tests::TestDb;
use support::{checkout_state, customer, setup_with, Customer};

async fn setup_one_connection() -> (TestDb, Database) {
    setup_with(|config| {
        config.max_connections = 1;
        config.wait_timeout = Duration::from_secs(20);
    })
    .await
}

async fn customer_rows(test_db: &TestDb) -> Vec<(String, Option<String>)> {
    let rows = test_db.client().await.query("SELECT name, description FROM customer ORDER BY name", &[]).await.unwrap();
    rows.iter().map(|row| (row.get(0), row.get(1))).collect()
}

/// Whether a flush statement returns the keys of the rows it did not
/// write (updates and deletes), rather than what it wrote.
fn reports_unmatched(text: &str) -> bool {
    text.starts_with("WITH written AS (")
}

/// Parameters for flush statement number `statement` on `customer`, by
/// type: the key of the row named "kept", then names and descriptions no
/// other statement uses.
fn parameters(types: &[Type], kept: i32, statement: usize) -> Vec<Box<dyn ToSql + Sync + Send>> {
    types
        .iter()
        .enumerate()
        .map(|(n, ty)| -> Box<dyn ToSql + Sync + Send> {
            match (n, ty.clone()) {
                (0, Type::INT4) => Box::new(kept),
                (0, Type::INT4_ARRAY) => Box::new(vec![kept]),
                (_, Type::VARCHAR | Type::TEXT) => Box::new(format!("ghost {statement}.{n}")),
                (_, Type::VARCHAR_ARRAY | Type::TEXT_ARRAY) => Box::new(vec![format!("ghost {statement}.{n}")]),
                other => panic!("unexpected parameter {other:?} in a flush statement on customer"),
            }
        })
        .collect()
}

#[tokio::test]
async fn the_statements_of_a_flush_write_nothing_outside_the_sessions_transaction() {
    let (test_db, db) = setup_one_connection().await;
    // Every statement shape a flush sends for `customer` behind its
    // `BEGIN`, prepared on the pool's one connection: a single insert, a
    // batch insert, an update, a delete. (Flushed before the commit: a
    // commit of one insert alone sends it without `BEGIN`, and unguarded.)
    let mut session = db.session();
    session.add(customer("kept"));
    session.flush().await.unwrap();
    session.commit().await.unwrap();
    let mut session = db.session();
    session.add_all([customer("gone"), customer("other")]);
    session.flush().await.unwrap();
    session.commit().await.unwrap();
    let mut session = db.session();
    for tracked in session.query::<Customer>().all().await.unwrap() {
        if tracked.read().name == "gone" {
            session.delete(&tracked).unwrap();
        } else {
            tracked.write().description = Some("seen".to_owned());
        }
    }
    session.commit().await.unwrap();
    let before = customer_rows(&test_db).await;
    assert_eq!(before.len(), 2);

    let client = db.checkout().await.unwrap();
    let kept: i32 = client.query_one("SELECT id FROM customer WHERE name = 'kept'", &[]).await.unwrap().get(0);
    let texts: Vec<String> = client
        .query(
            "SELECT statement FROM pg_prepared_statements
              WHERE (statement LIKE 'INSERT%' OR statement LIKE 'WITH written AS (%')
                AND statement LIKE '%orm_core.in_unit_of_work%'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(texts.len(), 4, "{texts:?}");

    // What the server runs when the `BEGIN` before them failed: each one
    // alone, in a transaction of its own.
    let mut shapes = Vec::new();
    for (number, text) in texts.iter().enumerate() {
        let statement = client.prepare(text).await.unwrap();
        shapes.push((text, statement.params().to_vec()));
        let values = parameters(statement.params(), kept, number);
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref() as &(dyn ToSql + Sync)).collect();
        let rows = client.execute(&statement, &refs).await.unwrap();
        // Each statement is given one row; an update or a delete names it
        // as not written.
        let untouched = u64::from(reports_unmatched(text));
        assert_eq!(rows, untouched, "{text} wrote outside the session's transaction");
    }
    assert_eq!(customer_rows(&test_db).await, before);

    // Inside a transaction the ORM opened, the same statements write: the
    // guard is what stopped them above.
    drop(client);
    let mut session = db.session();
    let mut written = 0;
    for (number, (text, types)) in shapes.iter().enumerate() {
        let values = parameters(types, kept, number);
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref() as &(dyn ToSql + Sync)).collect();
        let rows = session.execute(text.as_str(), &refs).await.unwrap();
        written += if reports_unmatched(text) { 1 - rows } else { rows };
    }
    assert!(written >= 3, "the guarded statements wrote {written} rows inside the transaction");
    session.rollback().await.unwrap();
    assert_eq!(customer_rows(&test_db).await, before);
}

/// Leaves the pool's one connection inside an aborted transaction: what a
/// `BEGIN` that ran, followed by a failure in the same message, leaves.
async fn abort_a_transaction_on_the_pooled_connection(db: &Database) {
    let client = db.checkout().await.unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    client.batch_execute("SELECT 1 / 0").await.unwrap_err();
}

#[tokio::test]
async fn a_failed_begin_that_left_a_transaction_open_is_rolled_back_with_the_session() {
    let (test_db, db) = setup_one_connection().await;
    abort_a_transaction_on_the_pooled_connection(&db).await;

    let mut session = db.session();
    session.add(customer("first"));
    let error = session.flush().await.unwrap_err();
    assert!(matches!(error, Error::Database(_) | Error::TransactionFailed), "{error:?}");
    // The transaction the failed prefix may have opened counts as open and
    // failed: only a rollback remains, and it ends that transaction.
    let again = session.flush().await.unwrap_err();
    assert!(matches!(again, Error::TransactionFailed), "{again:?}");
    session.rollback().await.unwrap();

    let (clean, _) = checkout_state(&db).await;
    assert!(clean, "the connection went back to the pool inside the aborted transaction");
    let mut session = db.session();
    session.add(customer("second"));
    session.commit().await.unwrap();
    assert_eq!(customer_rows(&test_db).await, [("second".to_owned(), None)]);
}

#[tokio::test]
async fn a_session_dropped_after_a_failed_begin_rolls_back_before_the_connection_is_reused() {
    let (test_db, db) = setup_one_connection().await;
    abort_a_transaction_on_the_pooled_connection(&db).await;

    let mut session = db.session();
    session.add(customer("first"));
    session.flush().await.unwrap_err();
    drop(session);

    let mut session = db.session();
    session.add(customer("second"));
    session.commit().await.unwrap();
    assert_eq!(customer_rows(&test_db).await, [("second".to_owned(), None)]);
}

#[tokio::test]
async fn a_commit_after_a_failed_begin_reports_the_failure_and_writes_nothing() {
    let (test_db, db) = setup_one_connection().await;
    abort_a_transaction_on_the_pooled_connection(&db).await;

    let mut session = db.session();
    session.add(customer("first"));
    session.commit().await.unwrap_err();

    let (clean, _) = checkout_state(&db).await;
    assert!(clean, "the connection went back to the pool inside the aborted transaction");
    assert!(customer_rows(&test_db).await.is_empty());
}

/// A raw statement that opened the session's transaction and was cut off
/// while its rows arrived takes that transaction with it (its connection
/// is closed). The next statement, on a new connection, opens one again:
/// sent without `BEGIN`, it committed on its own, and a rollback then
/// undid nothing.
#[tokio::test]
async fn a_statement_after_a_cut_off_one_that_opened_the_transaction_opens_it_again() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (test_db, db) = setup_with(|_| {}).await;
        let mut session = db.session();
        let rows = "SELECT g, repeat('x', 2000) FROM generate_series(1, 2000000) AS g";
        let cut = tokio::time::timeout(Duration::from_millis(300), session.execute(rows, &[])).await;
        assert!(cut.is_err(), "the statement was cut off while its rows arrived");
        session.execute("INSERT INTO customer (name) VALUES ('rolled back')", &[]).await.unwrap();
        session.rollback().await.unwrap();
        assert!(customer_rows(&test_db).await.is_empty(), "the insert was rolled back with the session");
    })
    .await
    .expect("the test finished within 60 s");
}

/// A row that fails to decode leaves the rest of its statement's answer
/// unread, and an error in that rest aborted the transaction unseen: a
/// `COMMIT` of an aborted transaction rolls back without an error. The
/// commit finds out and says so, instead of succeeding with nothing
/// written.
#[tokio::test]
async fn a_commit_after_rows_left_unread_reports_an_error_they_hid() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (test_db, db) = setup_with(|_| {}).await;
        let mut session = db.session();
        session.add(customer("flushed, then lost"));
        session.flush().await.unwrap();
        // Row 1's NULL name does not decode; computing row 2 fails on the
        // server, after row 1 was sent.
        let rows = "SELECT g AS id, CASE WHEN g = 1 THEN NULL ELSE (1 / (g - 2))::text END AS name, \
                    NULL::text AS description FROM generate_series(1, 3) AS g";
        let decoded = session.query_raw_untracked::<Customer>(rows, &[]).await;
        assert!(matches!(decoded, Err(Error::Decode { .. })), "{decoded:?}");
        let committed = session.commit().await;
        assert!(matches!(committed, Err(Error::TransactionFailed)), "{committed:?}");
        assert!(customer_rows(&test_db).await.is_empty());

        // A transaction whose unread rows hid nothing commits as usual.
        let mut session = db.session();
        session.add(customer("kept"));
        session.flush().await.unwrap();
        let rows = "SELECT g AS id, CASE WHEN g = 1 THEN NULL ELSE 'x' END AS name, NULL::text AS description \
                    FROM generate_series(1, 3) AS g";
        let decoded = session.query_raw_untracked::<Customer>(rows, &[]).await;
        assert!(matches!(decoded, Err(Error::Decode { .. })), "{decoded:?}");
        session.commit().await.unwrap();
        assert_eq!(customer_rows(&test_db).await, [("kept".to_owned(), None)]);
    })
    .await
    .expect("the test finished within 60 s");
}

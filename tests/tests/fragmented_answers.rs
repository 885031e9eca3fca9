//! The server's answers arriving a message at a time, through a
//! [`FragmentingProxy`], as a pooler or a busy network may pass them on.
//! On loopback an answer nearly always arrives whole, so these are the
//! tests that see a session wait for an answer the driver stopped reading.
//! Each runs under `orm_tests::within` and fails instead of hanging. The model-based
//! test runs its random programs through the proxy too (`model_based.rs`).

mod support;

use orm_core::Database;
use orm_tests::{within, FragmentingProxy, TestDb};
use support::{count_rows, customer, Customer, SCHEMA};

/// A test database with the shared schema, and an ORM pool on it through
/// a proxy, with `params` (the statement mode) added to its URL.
async fn through_proxy(params: &str) -> (TestDb, Database, FragmentingProxy) {
    let test_db = TestDb::new().await;
    test_db.client().await.batch_execute(SCHEMA).await.expect("create the test schema");
    let proxy = FragmentingProxy::start(&test_db.config()).await;
    let db = Database::connect(&format!("{} {params}", proxy.url(&test_db))).expect("the proxy's URL");
    (test_db, db, proxy)
}

/// A flush that keeps its transaction open, a query and a savepoint inside
/// it, and the commit. The flush's `BEGIN; SET LOCAL ...` is answered in
/// three messages while its insert is prepared (or described): a session
/// that read the prepare's answer before the `BEGIN`'s waited forever.
async fn flush_query_and_commit(params: &str) {
    let (test_db, db, _proxy) = through_proxy(params).await;
    let mut session = db.session();
    within(async {
        session.add_all([customer("ann"), customer("ben")]);
        session.flush().await.unwrap();
        let names: Vec<String> =
            session.query::<Customer>().all().await.unwrap().iter().map(|c| c.read().name.clone()).collect();
        assert_eq!(names.len(), 2, "the query sees the flushed rows: {names:?}");
        let savepoint = session.begin_nested().await.unwrap();
        session.add(customer("cy"));
        session.rollback_nested(savepoint).await.unwrap();
        session.add(customer("dee"));
        session.commit().await.unwrap();
    })
    .await;
    assert_eq!(count_rows(&test_db, "customer").await, 3, "ann, ben and dee; cy was rolled back");
}

#[tokio::test]
async fn a_flush_answered_a_message_at_a_time_finishes_with_prepared_statements() {
    flush_query_and_commit("").await;
}

#[tokio::test]
async fn a_flush_answered_a_message_at_a_time_finishes_with_unnamed_statements() {
    flush_query_and_commit("statement_mode=unnamed").await;
}

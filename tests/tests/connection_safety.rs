//! Connections under failure: whatever happened to a session (dropped, cancelled
//! mid-statement, failed), the next borrower gets a connection outside any
//! transaction, quickly, and a failed transaction never reports a commit.

mod support;

use std::time::{Duration, Instant};

use futures_util::FutureExt;
use orm_core::tokio_postgres::error::SqlState;
use orm_core::{Database, Entity, Error, Tracked};
use orm_tests::TestDb;
use support::{checkout_state, customer, drop_mid_statement, running_sleep, setup, setup_with, Customer, LogBuffer};

/// A pool of one connection, so the next borrower gets the same connection
/// the previous session used.
async fn setup_one_connection() -> (TestDb, Database) {
    setup_with(|config| {
        config.max_connections = 1;
        // Longer than any cleanup may take, so a slow cleanup fails the
        // test's own bound rather than the pool's.
        config.wait_timeout = Duration::from_secs(20);
    })
    .await
}

/// A pool of one connection whose waiters give up after 200 ms: a session
/// that keeps the connection shows as a quick `PoolTimeout` in another.
async fn one_connection_failing_fast() -> (TestDb, Database) {
    setup_with(|config| {
        config.max_connections = 1;
        config.wait_timeout = Duration::from_millis(200);
    })
    .await
}

async fn customer_names(test_db: &TestDb) -> Vec<String> {
    let rows = test_db.client().await.query("SELECT name FROM customer ORDER BY name", &[]).await.unwrap();
    rows.iter().map(|row| row.get(0)).collect()
}

#[tokio::test]
async fn dropping_a_session_with_an_open_transaction_rolls_it_back() {
    let (test_db, db) = setup_one_connection().await;

    let mut session = db.session();
    session.add(customer("dropped"));
    session.flush().await.expect("flush");
    let pid: i32 = session.query_rows("SELECT pg_backend_pid()", &[]).await.unwrap()[0].get(0);
    drop(session);

    let (clean, reused) = checkout_state(&db).await;
    assert!(clean, "the next borrower is inside the dropped session's transaction");
    assert_eq!(reused, pid, "the connection itself goes back to the pool");
    let mut session = db.session();
    assert_eq!(session.query::<Customer>().count().await.unwrap(), 0);
    session.commit().await.unwrap();
    assert!(customer_names(&test_db).await.is_empty());
}

#[tokio::test]
async fn dropping_a_session_whose_transaction_failed_returns_the_connection_clean() {
    let (_test_db, db) = setup_one_connection().await;

    let mut session = db.session();
    session.execute("SELECT 1", &[]).await.unwrap();
    session.execute("SELECT 1/0", &[]).await.expect_err("division by zero");
    drop(session);

    assert!(checkout_state(&db).await.0, "the next borrower is inside the failed transaction");
}

/// Drops a session while the server runs its statement, then checks how the
/// next borrower of the only connection finds it.
async fn cancel_mid_statement(after_first_statement: bool) {
    let (test_db, db) = setup_one_connection().await;
    let monitor = test_db.client().await;
    drop_mid_statement(&db, &monitor, after_first_statement).await;
    assert_eq!(customer_names(&test_db).await, ["after"]);
}

#[tokio::test]
async fn a_session_dropped_during_its_first_statement_frees_the_connection() {
    cancel_mid_statement(false).await;
}

#[tokio::test]
async fn a_session_dropped_mid_statement_inside_its_transaction_frees_the_connection() {
    cancel_mid_statement(true).await;
}

/// Cuts off a statement of `session` once the server runs it, as a timeout
/// around the handler would, and keeps the session.
async fn cut_off_a_statement(session: &mut orm_core::Session, monitor: &orm_core::tokio_postgres::Client) -> i32 {
    tokio::select! {
        result = session.execute("SELECT pg_sleep(30)", &[]) => panic!("the statement ended: {result:?}"),
        pid = running_sleep(monitor) => pid,
    }
}

/// Ends a session whose statement was cut off inside its transaction with
/// `end`, checks that this was quick, kept nothing, and left the only
/// connection of the pool clean for the next borrower, and returns what
/// `end` returned.
async fn end_after_a_cut_off_statement(
    end: impl AsyncFnOnce(orm_core::Session) -> orm_core::Result<()>,
) -> orm_core::Result<()> {
    let (test_db, db) = setup_one_connection().await;
    let monitor = test_db.client().await;
    let mut session = db.session();
    session.add(customer("cut off"));
    session.flush().await.unwrap();
    let pid = cut_off_a_statement(&mut session, &monitor).await;

    let started = Instant::now();
    let ended = end(session).await;
    let (clean, reused) = checkout_state(&db).await;
    assert!(started.elapsed() < Duration::from_secs(5), "ending took {:?}", started.elapsed());
    assert!(clean, "the next borrower is inside the cut-off transaction");
    assert_ne!(reused, pid, "the connection of the cut-off statement went back to the pool");
    assert!(customer_names(&test_db).await.is_empty(), "the flushed row was not committed");
    ended
}

#[tokio::test]
async fn rollback_after_a_cut_off_statement_is_quick_and_clean() {
    end_after_a_cut_off_statement(async |session| session.rollback().await).await.unwrap();
}

#[tokio::test]
async fn commit_after_a_cut_off_statement_is_an_error_and_keeps_nothing() {
    let error = end_after_a_cut_off_statement(async |session| session.commit().await.map(drop)).await.unwrap_err();
    assert!(matches!(error, Error::TransactionFailed), "{error:?}");
}

#[tokio::test]
async fn a_read_cut_off_before_any_write_leaves_the_session_usable() {
    let (test_db, db) = setup_one_connection().await;
    let monitor = test_db.client().await;
    let mut session = db.session();
    let pid = cut_off_a_statement(&mut session, &monitor).await;

    // No transaction was open, so nothing is lost: the session goes on with
    // a fresh connection while the cut-off one is cancelled and closed.
    session.add(customer("after"));
    let rows = session.query_rows("SELECT pg_backend_pid()", &[]).await.unwrap();
    assert_ne!(rows[0].get::<_, i32>(0), pid);
    session.commit().await.unwrap();
    assert_eq!(customer_names(&test_db).await, ["after"]);
}

#[tokio::test]
async fn a_session_dropped_while_its_statement_finishes_does_not_cancel_the_next_borrower() {
    let (_test_db, db) = setup_one_connection().await;

    let mut session = db.session();
    session.execute("SELECT 1", &[]).await.unwrap();
    // Polled once, the statement is sent; dropped, nobody waits for its
    // answer. It finishes on the server at once, so a cancel request the
    // dropped session sends finds nothing to cancel now and must not be
    // left to land on whatever the connection runs next.
    assert!(session.execute("SELECT 1", &[]).now_or_never().is_none(), "the answer cannot have arrived yet");
    drop(session);

    let client = db.pool().get().await.expect("a connection from the pool");
    client.simple_query("SELECT pg_sleep(0.5)").await.expect("the next borrower's statement runs undisturbed");
}

#[tokio::test]
async fn commit_after_a_failed_statement_is_an_error_and_keeps_nothing() {
    let (test_db, db) = setup().await;

    let mut session = db.session();
    session.add(customer("written"));
    session.flush().await.expect("flush");
    let error = session.execute("SELECT 1/0", &[]).await.expect_err("division by zero");
    // Division by zero is SQLSTATE class 22, a data exception.
    assert!(matches!(error, Error::BadData { .. }), "expected BadData, got {error:?}");
    assert_eq!(error.sql_state(), Some(&SqlState::DIVISION_BY_ZERO));

    let committed = session.commit().await;
    assert!(matches!(committed, Err(Error::TransactionFailed)), "expected TransactionFailed, got {committed:?}");
    assert!(customer_names(&test_db).await.is_empty(), "the flushed write survived a failed transaction");
}

#[tokio::test]
async fn after_a_failed_statement_every_operation_is_transaction_failed() {
    let (test_db, db) = setup().await;
    test_db.client().await.batch_execute("INSERT INTO customer (name) VALUES ('existing')").await.unwrap();

    let mut session = db.session();
    session.add(customer("flushed"));
    session.flush().await.expect("flush");
    session.execute("SELECT 1/0", &[]).await.expect_err("division by zero");

    let failed = |result: Result<(), Error>, what: &str| {
        assert!(matches!(result, Err(Error::TransactionFailed)), "{what}: expected TransactionFailed, got {result:?}");
    };
    failed(session.get::<Customer>(1).await.map(drop), "get");
    failed(session.query::<Customer>().all().await.map(drop), "query");
    failed(session.execute("SELECT 1", &[]).await.map(drop), "execute");
    failed(session.begin_nested().await.map(drop), "begin_nested");
    // A flush must not recover the transaction by rolling back to the
    // savepoint of the earlier, successful flush: that would silently undo
    // the earlier flush's insert.
    session.add(customer("pending"));
    failed(session.flush().await, "flush");
    failed(session.query_rows("SELECT 1", &[]).await.map(drop), "query_rows after the flush");

    let committed = session.commit().await;
    assert!(matches!(committed, Err(Error::TransactionFailed)), "expected TransactionFailed, got {committed:?}");
    assert_eq!(customer_names(&test_db).await, ["existing"]);
}

/// An entity whose table does not exist: its statements fail to prepare.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "no_such_table")]
struct Ghost {
    #[orm(primary_key)]
    id: i32,
}

#[tokio::test]
async fn a_flush_failing_to_prepare_keeps_an_earlier_flush_and_the_session() {
    let (test_db, db) = setup().await;

    let mut session = db.session();
    session.add(customer("flushed"));
    session.flush().await.expect("flush");
    let ghost = session.add(Ghost { id: 1 });
    let error = session.flush().await.expect_err("no such table");
    assert_eq!(error.sql_state(), Some(&SqlState::UNDEFINED_TABLE), "got {error:?}");
    // The failed PREPARE aborted the transaction, but the flush's savepoint
    // went out ahead of it: rolling back to it keeps the earlier flush.
    assert!(session.expunge(&ghost), "the failed insert is still pending");
    session.add(customer("after"));
    session.commit().await.expect("commit");
    assert_eq!(customer_names(&test_db).await, ["after", "flushed"]);
}

#[tokio::test]
async fn a_first_flush_failing_before_it_runs_leaves_the_session_usable() {
    let (test_db, db) = setup().await;

    let mut session = db.session();
    let ghost = session.add(Ghost { id: 1 });
    let error = session.flush().await.expect_err("no such table");
    assert_eq!(error.sql_state(), Some(&SqlState::UNDEFINED_TABLE), "got {error:?}");
    // No transaction had started: nothing was lost and the session goes on.
    session.expunge(&ghost);
    session.add(customer("after"));
    session.flush().await.expect("flush after the failed one");
    session.commit().await.expect("commit");
    assert_eq!(customer_names(&test_db).await, ["after"]);
}

#[tokio::test]
async fn rollback_nested_recovers_from_a_failed_statement() {
    let (test_db, db) = setup().await;

    let mut session = db.session();
    let kept = session.add(customer("kept"));
    let savepoint = session.begin_nested().await.expect("begin_nested");
    session.execute("INSERT INTO customer (name) VALUES ('undone')", &[]).await.unwrap();
    session.execute("SELECT 1/0", &[]).await.expect_err("division by zero");
    let error = session.execute("SELECT 1", &[]).await.expect_err("the transaction is aborted");
    assert!(matches!(error, Error::TransactionFailed), "expected TransactionFailed, got {error:?}");

    session.rollback_nested(savepoint).await.expect("rollback_nested recovers");
    let rows = session.query_rows("SELECT name FROM customer", &[]).await.expect("usable again");
    assert_eq!(rows.iter().map(|r| r.get(0)).collect::<Vec<String>>(), ["kept"]);
    session.commit().await.expect("commit after recovering");
    assert_eq!(customer_names(&test_db).await, ["kept"]);
    assert_ne!(kept.read().id, 0);
}

#[tokio::test]
async fn a_failed_commit_returns_the_connection_clean() {
    let (test_db, db) = setup_one_connection().await;
    test_db.client().await.batch_execute("INSERT INTO customer (name) VALUES ('taken')").await.unwrap();

    let mut session = db.session();
    session.add(customer("new"));
    session.add(customer("taken"));
    let error = session.commit().await.expect_err("duplicate name");
    assert!(matches!(error, Error::UniqueViolation { .. }), "expected UniqueViolation, got {error:?}");

    assert!(checkout_state(&db).await.0, "the next borrower is inside the failed transaction");
    assert_eq!(customer_names(&test_db).await, ["taken"]);
}

#[tokio::test]
async fn a_read_only_commit_returns_the_connection_clean() {
    let (test_db, db) = setup_one_connection().await;
    test_db.client().await.batch_execute("INSERT INTO customer (name) VALUES ('read')").await.unwrap();

    let mut session = db.session();
    assert_eq!(session.get_one::<Customer>(1).await.unwrap().read().name, "read");
    session.commit().await.expect("commit");

    assert!(checkout_state(&db).await.0, "the next borrower is inside the read-only transaction");
}

#[tokio::test]
async fn opening_a_session_takes_no_connection() {
    let (_test_db, db) = one_connection_failing_fast().await;

    let mut idle = db.session();
    let mut working = db.session();
    working.execute("SELECT 1", &[]).await.expect("the only connection is free");
    working.commit().await.unwrap();
    idle.execute("SELECT 1", &[]).await.expect("and free again after the commit");
    idle.commit().await.unwrap();
}

#[tokio::test]
async fn identity_map_hits_issue_no_sql() {
    let (test_db, db) = setup().await;
    test_db.client().await.batch_execute("INSERT INTO customer (name) VALUES ('a'), ('b')").await.unwrap();

    let mut session = db.session();
    let loaded = session.get_one::<Customer>(1).await.unwrap();
    let pid: i32 = session.query_rows("SELECT pg_backend_pid()", &[]).await.unwrap()[0].get(0);
    let before = session.stats();
    // Without a connection, only what needs no SQL can still succeed.
    let terminated = test_db.client().await.query_one("SELECT pg_terminate_backend($1, 5000)", &[&pid]).await.unwrap();
    assert!(terminated.get::<_, bool>(0));

    let again = session.get_one::<Customer>(1).await.expect("served from the identity map");
    assert!(Tracked::ptr_eq(&loaded, &again));
    let many = session.get_many::<Customer>(&[1, 1]).await.expect("served from the identity map");
    assert!(many.iter().all(|t| Tracked::ptr_eq(&loaded, t)));
    assert_eq!(session.stats(), before);
    let error = session.get::<Customer>(2).await.expect_err("a miss needs the lost connection");
    assert!(matches!(error, Error::ConnectionLost(_)), "expected ConnectionLost, got {error:?}");
}

const DISCARDED_WARNING: &str = "session dropped with unflushed changes";

#[tokio::test]
async fn dropping_a_session_with_unflushed_changes_logs_a_warning() {
    let (_test_db, db) = setup().await;
    let log = LogBuffer::default();
    let _guard = log.install();

    let mut session = db.session();
    session.add(customer("forgotten"));
    drop(session);

    let text = log.text();
    assert!(text.contains(DISCARDED_WARNING), "no warning logged: {text:?}");
    assert!(text.contains("WARN"), "not at warn level: {text:?}");
}

#[tokio::test]
async fn committed_or_clean_sessions_log_no_warning() {
    let (_test_db, db) = setup().await;
    let log = LogBuffer::default();
    let _guard = log.install();

    let mut session = db.session();
    session.add(customer("kept"));
    session.commit().await.expect("commit");
    let mut session = db.session();
    session.add(customer("rolled back"));
    session.rollback().await.expect("rollback");
    let mut session = db.session();
    session.get::<Customer>(1).await.unwrap();
    drop(session);
    // Changes to an entity the session no longer tracks are not its work.
    let mut session = db.session();
    let kept = session.get_one::<Customer>(1).await.unwrap();
    kept.write().name = "changed, then expunged".to_owned();
    assert!(session.expunge(&kept));
    drop(session);

    let text = log.text();
    assert!(!text.contains(DISCARDED_WARNING), "unexpected warning: {text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_moves_into_a_spawned_task() {
    let (test_db, db) = setup().await;

    let mut session = db.session();
    session.add(customer("from a task"));
    let stats = tokio::spawn(async move {
        session.get::<Customer>(1).await.expect("autoflush and get");
        session.commit().await
    })
    .await
    .expect("the task")
    .expect("commit");
    assert!(stats.statements >= 2);
    assert_eq!(customer_names(&test_db).await, ["from a task"]);
}

#[tokio::test]
async fn a_read_outside_a_transaction_gives_the_connection_back_as_soon_as_it_is_answered() {
    let (test_db, db) = one_connection_failing_fast().await;
    test_db.client().await.batch_execute("INSERT INTO customer (name) VALUES ('a'), ('b')").await.unwrap();

    // Two sessions alive at once on a pool of one: each read takes the
    // only connection and gives it back with its answer.
    let mut first = db.session();
    let mut second = db.session();
    let a = first.get_one::<Customer>(1).await.expect("the connection is free");
    assert_eq!(second.get_one::<Customer>(2).await.expect("and free again").read().name, "b");
    let mut stream = second.query::<Customer>().stream().await.expect("the stream starts");
    let mut streamed = 0;
    while stream.try_next().await.expect("a row").is_some() {
        streamed += 1;
    }
    assert_eq!(streamed, 2, "and gives it back at its end");
    assert_eq!(first.query::<Customer>().count().await.expect("an aggregate too"), 2);
    assert_eq!(db.pool().status().available, 1, "no session holds the connection between reads");

    // A write opens the transaction, which keeps the connection until it ends.
    a.modify(|customer| customer.name = "changed".into());
    first.flush().await.unwrap();
    let error = second.query::<Customer>().count().await.expect_err("the transaction holds the only connection");
    assert!(matches!(error, Error::PoolTimeout { .. }), "expected PoolTimeout, got {error:?}");
    first.commit().await.unwrap();
    assert_eq!(second.get_one::<Customer>(1).await.expect("free after the commit").read().name, "changed");
    second.commit().await.unwrap();
}

#[tokio::test]
async fn reads_of_one_session_take_the_same_connection_again_when_it_is_idle() {
    let (_test_db, db) = setup_with(|config| config.max_connections = 4).await;
    let backend = orm_core::RawSql::cached("SELECT pg_backend_pid()").read_only();
    // Every connection of the pool opened, and idle.
    let mut sessions: Vec<_> = (0..4).map(|_| db.session()).collect();
    for session in &mut sessions {
        // Not read-only: each opens a transaction, which holds its connection.
        session.execute("SELECT 1", &[]).await.unwrap();
    }
    for session in sessions {
        session.commit().await.unwrap();
    }
    assert_eq!(db.pool().status().size, 4);

    // The connection given back last is the one taken next, with what it
    // has prepared.
    let mut session = db.session();
    let mut pids: Vec<i32> = Vec::new();
    for _ in 0..3 {
        pids.push(session.query_rows(backend, &[]).await.unwrap()[0].get(0));
        assert_eq!(db.pool().status().available, 4, "each read gives its connection back");
    }
    assert!(pids.windows(2).all(|pair| pair[0] == pair[1]), "reads took different connections: {pids:?}");
    session.commit().await.unwrap();
}

#[tokio::test]
async fn a_failed_read_outside_a_transaction_gives_the_connection_back_too() {
    let (_test_db, db) = one_connection_failing_fast().await;
    let mut failing = db.session();
    let mut other = db.session();
    let error = failing
        .query_rows(orm_core::RawSql::cached("SELECT 1 / 0").read_only(), &[])
        .await
        .expect_err("division by zero");
    assert_eq!(error.sql_state(), Some(&SqlState::DIVISION_BY_ZERO), "got {error:?}");
    let missing =
        failing.query_rows(orm_core::RawSql::cached("SELECT no_such_column FROM customer").read_only(), &[]).await;
    assert!(missing.is_err(), "a statement the server cannot prepare fails");
    assert_eq!(other.query::<Customer>().count().await.expect("the connection came back after each failure"), 0);
    failing.commit().await.unwrap();
    other.commit().await.unwrap();
}

#[tokio::test]
async fn a_locking_read_or_a_stricter_isolation_level_keeps_the_connection() {
    let (test_db, db) = setup().await;
    test_db.client().await.batch_execute("INSERT INTO customer (name) VALUES ('a')").await.unwrap();

    let mut locking = db.session();
    locking.query::<Customer>().for_update().all().await.unwrap();
    assert_eq!(db.pool().status().available, 0, "the lock lives in the session's transaction");
    locking.commit().await.unwrap();

    let mut repeatable = db.session_with_isolation(orm_core::IsolationLevel::RepeatableRead);
    repeatable.get_one::<Customer>(1).await.unwrap();
    assert_eq!(db.pool().status().available, 0, "the snapshot lives in the session's transaction");
    repeatable.commit().await.unwrap();
    assert_eq!(db.pool().status().available, 1);
}

/// `COPY ... FROM STDIN` (or `TO STDOUT`) as raw SQL would leave the
/// server waiting for rows that a statement's answer cannot carry: the
/// connection hung, and with it the session's rollback. It is refused
/// before it is sent, and the session goes on.
#[tokio::test]
async fn a_raw_copy_with_the_client_is_refused_and_the_session_goes_on() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let (test_db, db) = setup_one_connection().await;
        let mut session = db.session();
        session.add(customer("kept"));
        session.flush().await.unwrap();
        let refused = session.execute("COPY customer (name) FROM STDIN", &[]).await;
        assert!(matches!(refused, Err(Error::CopyInRawSql)), "{refused:?}");
        let refused = session.query_rows("copy (select 1) to stdout", &[]).await;
        assert!(matches!(refused, Err(Error::CopyInRawSql)), "{refused:?}");
        session.commit().await.unwrap();
        assert_eq!(customer_names(&test_db).await, ["kept"]);
    })
    .await
    .expect("the test finished within 30 s");
}

/// A migration that changes the type of a column under statements a
/// connection prepared (`varchar` to `text`) makes them fail on it with
/// "cached plan must not change result type": the statement that meets
/// it fails, and the connection forgets what it prepared, so the next
/// sessions succeed (every statement prepared anew) instead of failing
/// until the connection closes.
#[tokio::test]
async fn a_column_type_changed_under_prepared_statements_fails_one_statement() {
    if orm_tests::skip_via_pgbouncer("the unnamed mode prepares nothing for a migration to outdate") {
        return;
    }
    let (test_db, db) = setup_one_connection().await;
    let mut session = db.session();
    let ann = session.add(customer("ann"));
    session.commit().await.unwrap();
    let id = ann.read().id;

    let mut session = db.session();
    session.get_one::<Customer>(id).await.unwrap();
    session.query::<Customer>().filter(Customer::NAME.eq("ann")).all().await.unwrap();
    session.commit().await.unwrap();
    test_db.client().await.batch_execute("ALTER TABLE customer ALTER COLUMN name TYPE text").await.unwrap();

    let mut session = db.session();
    let error = session.get_one::<Customer>(id).await.unwrap_err();
    assert_eq!(error.sql_state(), Some(&SqlState::FEATURE_NOT_SUPPORTED), "got {error:?}");
    session.rollback().await.unwrap();

    let mut session = db.session();
    let by_key = session.get_one::<Customer>(id).await.expect("prepared anew");
    let by_name = session.query::<Customer>().filter(Customer::NAME.eq("ann")).all().await.expect("prepared anew");
    assert!(Tracked::ptr_eq(&by_key, &by_name[0]));
    by_key.modify(|customer| customer.name = "anne".into());
    session.commit().await.unwrap();
    assert_eq!(customer_names(&test_db).await, ["anne"]);
}

/// What the connection holds that outlives a transaction, as seen by the
/// next session on it: its `application_name`, the advisory locks it
/// holds, and whether its temporary table `scratch` exists.
async fn leftover_state(db: &Database, test_db: &TestDb) -> (String, i64, bool) {
    let mut session = db.session();
    let rows = session
        .query_rows("SELECT current_setting('application_name'), to_regclass('pg_temp.scratch') IS NOT NULL", &[])
        .await
        .unwrap();
    session.commit().await.unwrap();
    let locks: i64 = test_db
        .client()
        .await
        .query_one("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'", &[])
        .await
        .unwrap()
        .get(0);
    (rows[0].get(0), locks, rows[0].get(1))
}

/// Leaves on the session's connection what [`leftover_state`] sees.
async fn leave_state(session: &mut orm_core::Session) {
    session.execute("SET application_name = 'leaked'", &[]).await.unwrap();
    session.query_rows("SELECT pg_advisory_lock(7)", &[]).await.unwrap();
    session.execute("CREATE TEMP TABLE scratch (x int)", &[]).await.unwrap();
}

/// The application's own SQL may leave state on the connection beyond its
/// transaction: a setting, a session advisory lock, a temporary table.
/// The pool must not hand it to the next request (another user's), so
/// the connection is reset before it goes back: after a commit, a
/// rollback, a dropped session, and a read outside any transaction.
#[tokio::test]
async fn state_the_applications_sql_leaves_on_a_connection_is_reset_before_the_next_session() {
    if orm_tests::skip_via_pgbouncer("a transaction pooler's server connections are not the session's to reset") {
        return;
    }
    let (test_db, db) = setup_one_connection().await;
    let fresh = leftover_state(&db, &test_db).await;
    assert_eq!((fresh.1, fresh.2), (0, false));

    let mut session = db.session();
    leave_state(&mut session).await;
    session.commit().await.unwrap();
    assert_eq!(leftover_state(&db, &test_db).await, fresh, "after a commit");

    let mut session = db.session();
    leave_state(&mut session).await;
    session.query_rows("SELECT pg_advisory_lock(8)", &[]).await.unwrap();
    session.rollback().await.unwrap();
    assert_eq!(leftover_state(&db, &test_db).await, fresh, "after a rollback (the locks outlive it)");

    let mut session = db.session();
    leave_state(&mut session).await;
    drop(session);
    assert_eq!(leftover_state(&db, &test_db).await, fresh, "after a dropped session");

    let mut session = db.session();
    let set = orm_core::RawSql::once("SELECT set_config('application_name', 'leaked', false)").read_only();
    session.query_rows(set, &[]).await.unwrap();
    assert_eq!(leftover_state(&db, &test_db).await, fresh, "after a read that opened no transaction");
    drop(session);
}

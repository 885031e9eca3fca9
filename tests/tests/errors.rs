//! Typed errors: each failure PostgreSQL or the pool reports reaches the caller
//! as its own `orm_core::Error` case, with the names a caller needs and without
//! the row values PostgreSQL echoes in its `DETAIL`.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use orm_core::tokio_postgres::error::SqlState;
use orm_core::{Database, DatabaseConfig, Entity, Error, ErrorKind, IsolationLevel, Tracked};
use support::{customer, setup, setup_with, Account, Customer};
use tokio::sync::Barrier;

#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "parent")]
struct Parent {
    #[orm(primary_key)]
    id: i32,
}

#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "child")]
struct Child {
    #[orm(primary_key)]
    id: i32,
    parent_id: i32,
}

const FAMILY: &str = "
    CREATE TABLE parent (id int PRIMARY KEY);
    CREATE TABLE child (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES parent (id));
";

/// `account` mapped without its NOT NULL on `owner`, as an outdated mapping would be.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "account")]
struct LooseAccount {
    #[orm(primary_key, generated)]
    id: i64,
    owner: Option<String>,
    balance: i64,
    version: i32,
}

/// A field whose type does not match its column (`amount` is `text`).
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "mistyped")]
struct Mistyped {
    #[orm(primary_key)]
    id: i32,
    amount: i64,
}

fn account(owner: &str, balance: i64) -> Account {
    Account { id: 0, owner: owner.to_owned(), balance, version: 0 }
}

/// The driver error a typed case wraps, to look at what PostgreSQL reported.
fn driver_error(error: &Error) -> &orm_core::tokio_postgres::Error {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<orm_core::tokio_postgres::Error>())
        .expect("the driver error is the source")
}

#[tokio::test]
async fn a_duplicate_key_is_a_unique_violation_naming_constraint_and_table() {
    let (test_db, db) = setup().await;
    test_db.client().await.batch_execute("INSERT INTO customer (name) VALUES ('alice-secret')").await.unwrap();

    let mut session = db.session();
    session.add(customer("alice-secret"));
    let error = session.commit().await.expect_err("the name is taken");

    let Error::UniqueViolation { constraint, table, .. } = &error else {
        panic!("expected UniqueViolation, got {error:?}")
    };
    assert_eq!(constraint.as_deref(), Some("customer_name_key"));
    assert_eq!(table.as_deref(), Some("customer"));
    assert!(!error.is_retryable());
    assert_eq!(error.sql_state(), Some(&SqlState::UNIQUE_VIOLATION));
    // PostgreSQL's DETAIL names the duplicated value; Display must not.
    let detail = driver_error(&error).as_db_error().and_then(|db| db.detail()).unwrap_or_default();
    assert!(detail.contains("alice-secret"), "the server echoes the key: {detail}");
    let shown = error.to_string();
    assert!(!shown.contains("alice-secret"), "Display leaks the key value: {shown}");
    assert!(shown.contains("customer_name_key"), "Display names the constraint: {shown}");
}

#[tokio::test]
async fn a_missing_parent_is_a_foreign_key_violation() {
    let (test_db, db) = setup().await;
    test_db.client().await.batch_execute(FAMILY).await.unwrap();

    let mut session = db.session();
    session.add(Child { id: 1, parent_id: 99 });
    let error = session.flush().await.expect_err("parent 99 does not exist");
    let Error::ForeignKeyViolation { constraint, table, .. } = &error else {
        panic!("expected ForeignKeyViolation, got {error:?}")
    };
    assert_eq!(constraint.as_deref(), Some("child_parent_id_fkey"));
    assert_eq!(table.as_deref(), Some("child"));
    assert!(!error.is_retryable());
    assert!(!error.to_string().contains("99"), "Display leaks the key value: {error}");

    // The failed flush is undone and its work stays pending: once the
    // parent exists the same unit of work succeeds.
    let client = test_db.client().await;
    client.batch_execute("INSERT INTO parent VALUES (99)").await.unwrap();
    session.commit().await.expect("commit once the parent exists");
    let rows = client.query("SELECT id, parent_id FROM child", &[]).await.unwrap();
    assert_eq!(rows.iter().map(|r| (r.get(0), r.get(1))).collect::<Vec<(i32, i32)>>(), vec![(1, 99)]);
}

#[tokio::test]
async fn deleting_a_referenced_parent_is_a_foreign_key_violation() {
    let (test_db, db) = setup().await;
    let client = test_db.client().await;
    client.batch_execute(FAMILY).await.unwrap();
    client.batch_execute("INSERT INTO parent VALUES (1); INSERT INTO child VALUES (10, 1)").await.unwrap();

    let mut session = db.session();
    let parent = session.get_one::<Parent>(1).await.unwrap();
    session.delete(&parent).unwrap();
    let error = session.commit().await.expect_err("a child still points at the parent");
    let Error::ForeignKeyViolation { constraint, table, .. } = &error else {
        panic!("expected ForeignKeyViolation, got {error:?}")
    };
    assert_eq!(constraint.as_deref(), Some("child_parent_id_fkey"));
    // PostgreSQL reports the referencing table for this direction too.
    assert_eq!(table.as_deref(), Some("child"));
    let parents = client.query_one("SELECT count(*) FROM parent", &[]).await.unwrap();
    assert_eq!(parents.get::<_, i64>(0), 1);
}

#[tokio::test]
async fn a_null_in_a_not_null_column_is_a_not_null_violation_naming_the_column() {
    let (test_db, db) = setup().await;

    let mut session = db.session();
    session.add(LooseAccount { id: 0, owner: None, balance: 5, version: 0 });
    let error = session.commit().await.expect_err("owner is NOT NULL");
    let Error::NotNullViolation { column, table, .. } = &error else {
        panic!("expected NotNullViolation, got {error:?}")
    };
    assert_eq!(column.as_deref(), Some("owner"));
    assert_eq!(table.as_deref(), Some("account"));
    assert!(!error.is_retryable());

    // The same through a raw statement.
    let mut session = db.session();
    let error = session
        .execute("INSERT INTO customer (name) VALUES ($1)", &[&None::<String>])
        .await
        .expect_err("name is NOT NULL");
    let Error::NotNullViolation { column, table, .. } = &error else {
        panic!("expected NotNullViolation, got {error:?}")
    };
    assert_eq!(column.as_deref(), Some("name"));
    assert_eq!(table.as_deref(), Some("customer"));

    let client = test_db.client().await;
    let count = |table: &'static str| {
        let client = &client;
        async move { client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!((count("account").await, count("customer").await), (0, 0));
}

#[tokio::test]
async fn a_rejected_check_is_a_check_violation_on_insert_and_update() {
    let (test_db, db) = setup().await;

    let mut session = db.session();
    session.add(account("overdrawn", -1));
    let error = session.commit().await.expect_err("balance >= 0");
    let Error::CheckViolation { constraint, table, .. } = &error else {
        panic!("expected CheckViolation, got {error:?}")
    };
    assert_eq!(constraint.as_deref(), Some("account_balance_check"));
    assert_eq!(table.as_deref(), Some("account"));
    assert!(!error.is_retryable());

    let mut session = db.session();
    let saved = session.add(account("saver", 10));
    session.commit().await.unwrap();
    let mut session = db.session();
    let loaded = session.get_one::<Account>(saved.read().id).await.unwrap();
    loaded.write().balance = -5;
    let error = session.commit().await.expect_err("balance >= 0");
    assert!(
        matches!(&error, Error::CheckViolation { constraint: Some(c), table: Some(t), .. }
            if c == "account_balance_check" && t == "account"),
        "expected CheckViolation, got {error:?}"
    );
    let row = test_db.client().await.query_one("SELECT balance FROM account", &[]).await.unwrap();
    assert_eq!(row.get::<_, i64>(0), 10);
}

fn serializable(db: &Database) -> orm_core::Session {
    db.session_with_isolation(IsolationLevel::Serializable)
}

#[tokio::test]
async fn a_concurrent_update_at_serializable_is_a_retryable_serialization_failure() {
    let (test_db, db) = setup().await;
    test_db
        .client()
        .await
        .batch_execute("INSERT INTO account (owner, balance, version) VALUES ('x', 100, 0)")
        .await
        .unwrap();

    let mut first = serializable(&db);
    let mut second = serializable(&db);
    let in_first = first.get_one::<Account>(1).await.unwrap();
    let in_second = second.get_one::<Account>(1).await.unwrap();
    in_first.write().balance -= 30;
    first.commit().await.expect("the first writer wins");
    in_second.write().balance -= 50;
    let error = second.commit().await.expect_err("the second read a row changed since");

    // Not StaleData: at SERIALIZABLE PostgreSQL refuses the update itself.
    assert!(matches!(error, Error::SerializationFailure(_)), "expected SerializationFailure, got {error:?}");
    assert!(error.is_retryable());
    assert_eq!(error.sql_state(), Some(&SqlState::T_R_SERIALIZATION_FAILURE));
    let row = test_db.client().await.query_one("SELECT balance FROM account", &[]).await.unwrap();
    assert_eq!(row.get::<_, i64>(0), 70);
}

#[tokio::test]
async fn write_skew_at_serializable_is_a_retryable_serialization_failure() {
    let (test_db, db) = setup().await;

    // Each session opens an account only if there is none yet: run one
    // after the other, only one account would exist.
    let mut first = serializable(&db);
    let mut second = serializable(&db);
    assert_eq!(first.query::<Account>().count().await.unwrap(), 0);
    assert_eq!(second.query::<Account>().count().await.unwrap(), 0);
    first.add(account("first", 1));
    second.add(account("second", 1));
    first.commit().await.expect("the first commits");
    let error = second.commit().await.expect_err("the second decided on a stale read");

    assert!(matches!(error, Error::SerializationFailure(_)), "expected SerializationFailure, got {error:?}");
    assert!(error.is_retryable());
    let rows = test_db.client().await.query("SELECT owner FROM account", &[]).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.get(0)).collect::<Vec<String>>(), vec!["first".to_owned()]);
}

/// Adds one to the balances of two accounts, locking `first` and, once the
/// other task holds its first lock too, `second`.
async fn credit_both(db: Database, first: i64, second: i64, barrier: Arc<Barrier>) -> orm_core::Result<()> {
    let mut session = db.session();
    let account = session.get_one::<Account>(first).await?;
    account.write().balance += 1;
    let flushed = session.flush().await;
    // Wait also on failure, or the other task would wait forever.
    barrier.wait().await;
    flushed?;
    let account = session.get_one::<Account>(second).await?;
    account.write().balance += 1;
    session.flush().await?;
    session.commit().await?;
    Ok(())
}

#[tokio::test]
async fn locking_in_opposite_orders_is_a_retryable_deadlock() {
    let (test_db, db) = setup().await;
    test_db
        .client()
        .await
        .batch_execute("INSERT INTO account (owner, balance, version) VALUES ('a', 0, 0), ('b', 0, 0)")
        .await
        .unwrap();

    let barrier = Arc::new(Barrier::new(2));
    let one = tokio::spawn(credit_both(db.clone(), 1, 2, barrier.clone()));
    let two = tokio::spawn(credit_both(db.clone(), 2, 1, barrier));
    let (one, two) = tokio::time::timeout(Duration::from_secs(30), async { (one.await, two.await) })
        .await
        .expect("PostgreSQL breaks the deadlock");
    let results = [one.unwrap(), two.unwrap()];

    let deadlocks: Vec<&Error> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(deadlocks.len(), 1, "exactly one side is aborted: {results:?}");
    assert!(matches!(deadlocks[0], Error::Deadlock(_)), "expected Deadlock, got {:?}", deadlocks[0]);
    assert!(deadlocks[0].is_retryable());
    assert_eq!(deadlocks[0].sql_state(), Some(&SqlState::T_R_DEADLOCK_DETECTED));
    // Only the survivor's credits remain.
    let rows = test_db.client().await.query("SELECT balance FROM account ORDER BY id", &[]).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.get(0)).collect::<Vec<i64>>(), vec![1, 1]);
}

#[test]
fn every_pool_timeout_is_finite_by_default() {
    let config = orm_core::DatabaseConfig::from_url("postgres://postgres@127.0.0.1/app").unwrap();
    assert_eq!(config.keepalive_idle, Duration::from_secs(60), "half-open connections are noticed");
    let db = Database::with_config(config).unwrap();
    let timeouts = db.pool().timeouts();
    let five_seconds = Some(Duration::from_secs(5));
    assert_eq!((timeouts.wait, timeouts.create, timeouts.recycle), (five_seconds, five_seconds, five_seconds));
    assert_eq!(db.pool().status().max_size, 16);
    assert_eq!(db.pool().status().size, 0, "building the pool opens no connection");
}

#[tokio::test]
async fn an_exhausted_pool_is_a_pool_timeout_in_bounded_time() {
    let (test_db, db) = setup_with(|config| {
        config.max_connections = 1;
        config.wait_timeout = Duration::from_millis(200);
    })
    .await;

    let mut holder = db.session();
    holder.execute("SELECT 1", &[]).await.unwrap();

    let mut waiter = db.session();
    let started = Instant::now();
    let error = waiter.get::<Customer>(1).await.expect_err("the only connection is taken");
    assert!(started.elapsed() < Duration::from_secs(5), "waited {:?}", started.elapsed());
    assert!(
        matches!(error, Error::PoolTimeout { stage: "waiting for a free connection" }),
        "expected PoolTimeout, got {error:?}"
    );
    assert!(!error.is_retryable());

    // A flush that timed out keeps its work pending.
    waiter.add(customer("waiting"));
    let error = waiter.flush().await.expect_err("the only connection is still taken");
    assert!(matches!(error, Error::PoolTimeout { .. }), "expected PoolTimeout, got {error:?}");

    // Nothing had started in the waiter: once the connection is free it works.
    holder.commit().await.unwrap();
    waiter.flush().await.expect("flush once the connection is free");
    waiter.commit().await.unwrap();
    let rows = test_db.client().await.query("SELECT name FROM customer", &[]).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.get(0)).collect::<Vec<String>>(), ["waiting"]);
}

#[tokio::test]
async fn a_terminated_backend_is_connection_lost_and_not_reused() {
    let (test_db, db) = setup_with(|config| config.max_connections = 1).await;
    test_db.client().await.batch_execute("INSERT INTO customer (name) VALUES ('a'), ('b')").await.unwrap();

    let mut session = db.session();
    let rows = session.query_rows("SELECT pg_backend_pid()", &[]).await.unwrap();
    let pid: i32 = rows[0].get(0);
    let terminated = test_db.client().await.query_one("SELECT pg_terminate_backend($1, 5000)", &[&pid]).await.unwrap();
    assert!(terminated.get::<_, bool>(0), "the backend exited");

    let error = session.get::<Customer>(1).await.expect_err("the backend is gone");
    assert!(matches!(error, Error::ConnectionLost(_)), "expected ConnectionLost, got {error:?}");
    assert!(error.is_retryable(), "a new session takes a fresh connection");
    // The transaction died with its connection.
    let error = session.query_rows("SELECT 1", &[]).await.expect_err("nothing runs any more");
    assert!(matches!(error, Error::TransactionFailed), "expected TransactionFailed, got {error:?}");
    assert!(matches!(session.commit().await, Err(Error::TransactionFailed)));

    // The dead connection does not come back: the next session gets a new one.
    let mut session = db.session();
    let rows = session.query_rows("SELECT pg_backend_pid()", &[]).await.expect("a fresh connection");
    assert_ne!(rows[0].get::<_, i32>(0), pid);
    assert_eq!(session.get_one::<Customer>(2).await.unwrap().read().name, "b");
}

#[tokio::test]
async fn a_column_of_the_wrong_type_is_a_decode_error_naming_entity_and_column() {
    let (test_db, db) = setup().await;
    test_db
        .client()
        .await
        .batch_execute(
            "CREATE TABLE mistyped (id int PRIMARY KEY, amount text); INSERT INTO mistyped VALUES (1, 'abc')",
        )
        .await
        .unwrap();

    let mut session = db.session();
    let error = session.get::<Mistyped>(1).await.expect_err("text is not an i64");
    let Error::Decode { entity, column, .. } = &error else { panic!("expected Decode, got {error:?}") };
    assert_eq!((*entity, *column), ("Mistyped", "amount"));
    assert!(!error.is_retryable());
    assert!(error.to_string().contains("amount") && error.to_string().contains("Mistyped"), "{error}");

    // Nothing failed on the server: the session goes on.
    assert_eq!(session.query_rows("SELECT 2", &[]).await.unwrap()[0].get::<_, i32>(0), 2);
    session.commit().await.expect("commit");
}

#[tokio::test]
async fn get_one_of_a_missing_key_is_not_found() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    let error = session.get_one::<Customer>(42).await.expect_err("no rows");
    let Error::NotFound { entity, key } = &error else { panic!("expected NotFound, got {error:?}") };
    assert_eq!((*entity, key.as_str()), ("Customer", "42"));
    assert!(!error.is_retryable());
    // A miss is not a failure: the session goes on.
    session.commit().await.expect("commit");
}

/// A pool on the test server with `adjust` applied to its connection
/// settings, and a password the error must never show.
fn pool_with(test_db: &orm_tests::TestDb, adjust: impl FnOnce(&mut orm_core::tokio_postgres::Config)) -> Database {
    let mut config = DatabaseConfig::from_url(test_db.url()).unwrap();
    config.postgres.password("hunter2-secret");
    adjust(&mut config.postgres);
    config.create_timeout = Duration::from_secs(5);
    Database::with_config(config).unwrap()
}

/// The error of a session's first statement on `db`, in bounded time.
async fn first_statement_error(db: &Database) -> Error {
    let mut session = db.session();
    tokio::time::timeout(Duration::from_secs(20), session.execute("SELECT 1", &[]))
        .await
        .expect("a connection failure is reported, not a hang")
        .expect_err("no connection can be made")
}

#[tokio::test]
async fn an_unknown_database_is_a_connect_error_naming_where_and_why() {
    if orm_tests::skip_via_pgbouncer("the error would be PgBouncer's, not the server's") {
        return;
    }
    let test_db = orm_tests::TestDb::new().await;
    let db = pool_with(&test_db, |config| {
        config.dbname("no_such_database_here");
    });
    let error = first_statement_error(&db).await;
    let Error::Connect { host, port, database, user, reason, .. } = &error else {
        panic!("expected Connect, got {error:?}")
    };
    // Where DATABASE_URL points, which need not be the default port.
    let server = test_db.config();
    let Some(orm_core::tokio_postgres::config::Host::Tcp(server_host)) = server.get_hosts().first() else {
        panic!("DATABASE_URL names a TCP host")
    };
    let server_port = server.get_ports().first().copied().unwrap_or(5432);
    assert_eq!((host.as_str(), *port), (server_host.as_str(), server_port));
    assert_eq!((database.as_str(), user.as_str()), ("no_such_database_here", "postgres"));
    assert!(reason.contains(r#"database "no_such_database_here" does not exist"#), "{reason}");
    assert_eq!(error.sql_state(), Some(&SqlState::INVALID_CATALOG_NAME));
    assert_eq!(error.kind(), ErrorKind::Connect);
    assert_eq!(error.kind().as_str(), "connect");
    assert!(!error.is_retryable());
    let shown = error.to_string();
    let address = format!("{server_host}:{server_port}");
    for expected in ["no_such_database_here", "postgres", &address, "3D000", "does not exist"] {
        assert!(shown.contains(expected), "Display lacks {expected}: {shown}");
    }
    assert!(!shown.contains("hunter2") && !format!("{error:?}").contains("hunter2"), "the password leaked: {error:?}");

    // The same error from a connection checked out for hand-written SQL.
    let error = db.checkout().await.expect_err("no such database");
    assert_eq!(error.kind(), ErrorKind::Connect, "{error:?}");
}

#[tokio::test]
async fn an_unknown_role_is_a_connect_error_with_the_servers_reason() {
    if orm_tests::skip_via_pgbouncer("the test PgBouncer logs every client in as one server user") {
        return;
    }
    let test_db = orm_tests::TestDb::new().await;
    let db = pool_with(&test_db, |config| {
        config.user("no_such_role_here");
    });
    let error = first_statement_error(&db).await;
    let Error::Connect { user, reason, .. } = &error else { panic!("expected Connect, got {error:?}") };
    assert_eq!(user, "no_such_role_here");
    assert!(reason.contains(r#"role "no_such_role_here" does not exist"#), "{reason}");
    assert_eq!(error.sql_state(), Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION));
    let shown = error.to_string();
    assert!(shown.contains("28000") && shown.contains("no_such_role_here"), "{shown}");
    assert!(!shown.contains("hunter2"), "the password leaked: {shown}");
}

#[tokio::test]
async fn a_refused_port_is_a_connect_error_with_the_network_error() {
    let test_db = orm_tests::TestDb::new().await;
    // Nothing listens on port 1.
    let url = format!("postgres://postgres:hunter2-secret@127.0.0.1:1/{}", test_db.name());
    let db = Database::connect(&url).unwrap();
    let error = first_statement_error(&db).await;
    let Error::Connect { host, port, reason, .. } = &error else { panic!("expected Connect, got {error:?}") };
    assert_eq!((host.as_str(), *port), ("127.0.0.1", 1));
    assert!(reason.to_lowercase().contains("refused"), "{reason}");
    assert_eq!(error.sql_state(), None, "no server answered");
    assert!(error.to_string().contains("127.0.0.1:1:"), "{error}");
    assert!(!error.to_string().contains("hunter2"), "the password leaked: {error}");
    assert_eq!(error.kind(), ErrorKind::Connect);
}

#[tokio::test]
async fn another_server_error_shows_its_sqlstate_and_message_but_not_its_detail() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    let error = session.execute("SELECT * FROM no_such_table", &[]).await.unwrap_err();
    assert!(matches!(error, Error::Database(_)), "expected Database, got {error:?}");
    assert_eq!(error.kind(), ErrorKind::Database);
    let shown = error.to_string();
    assert!(shown.contains("42P01") && shown.contains(r#"relation "no_such_table" does not exist"#), "{shown}");

    let raise =
        "DO $$ BEGIN RAISE EXCEPTION 'order refused' USING DETAIL = 'card 4111-secret', ERRCODE = 'P0001'; END $$";
    let error = db.session().execute(raise, &[]).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Database);
    let detail = driver_error(&error).as_db_error().and_then(|db| db.detail()).unwrap_or_default();
    assert!(detail.contains("4111-secret"), "the driver's report has the DETAIL: {detail}");
    let shown = error.to_string();
    assert!(shown.contains("order refused") && shown.contains("P0001"), "{shown}");
    assert!(!shown.contains("4111-secret"), "Display leaks the DETAIL: {shown}");
}

#[tokio::test]
async fn a_driver_error_shows_the_drivers_reason() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    let error = session.query_rows("SELECT $1::int", &[&"not an int"]).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Database, "{error:?}");
    assert_eq!(error.sql_state(), None, "refused before it reached the server");
    let shown = error.to_string();
    assert!(shown.contains("cannot convert") && shown.contains("int4"), "{shown}");
}

#[tokio::test]
async fn text_too_long_for_its_column_is_bad_data_and_the_session_goes_on() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let long = session.add(customer(&"x".repeat(300)));
    let error = session.flush().await.expect_err("varchar(255)");
    let Error::BadData { sql_state, message, .. } = &error else { panic!("expected BadData, got {error:?}") };
    assert_eq!(sql_state, "22001");
    assert!(message.contains("value too long for type character varying(255)"), "{message}");
    assert_eq!(error.kind(), ErrorKind::BadData);
    assert_eq!(error.kind().as_str(), "bad_data");
    assert_eq!(error.sql_state(), Some(&SqlState::STRING_DATA_RIGHT_TRUNCATION));
    let shown = error.to_string();
    assert!(shown.contains("22001") && shown.contains("value too long"), "{shown}");
    assert!(!shown.contains("xxxx"), "Display leaks the value: {shown}");

    // A failed flush is undone and stays pending: fix the data and commit.
    long.write().name = "short".into();
    session.commit().await.expect("commit the fixed row");
    assert_eq!(support::count_rows(&test_db, "customer").await, 1);
}

#[tokio::test]
async fn data_exceptions_and_program_limits_are_bad_data() {
    let (test_db, db) = setup().await;
    test_db.client().await.batch_execute("CREATE TABLE indexed (v text PRIMARY KEY)").await.unwrap();
    let cases: [(&str, &[&(dyn orm_core::tokio_postgres::types::ToSql + Sync)], &str); 4] = [
        ("SELECT $1::bigint::int", &[&(1_i64 << 40)], "22003"),
        ("SELECT $1::text::int", &[&"ten"], "22P02"),
        ("SELECT 1 / $1", &[&0_i32], "22012"),
        // Too large for a btree index entry even compressed (hex digits).
        ("INSERT INTO indexed SELECT string_agg(md5(i::text), '') FROM generate_series(1, 400) AS i", &[], "54000"),
    ];
    for (sql, params, code) in cases {
        let mut session = db.session();
        let error = session.execute(sql, params).await.expect_err(sql);
        let Error::BadData { sql_state, .. } = &error else { panic!("{sql}: expected BadData, got {error:?}") };
        assert_eq!(sql_state, code, "{sql}");
        assert!(error.to_string().contains(code), "{error}");
        assert_eq!(error.kind(), ErrorKind::BadData);
    }
}

#[tokio::test]
async fn a_nul_byte_in_text_is_bad_data_from_the_server() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    session.add(customer("nul\0byte"));
    let error = session.flush().await.expect_err("PostgreSQL text cannot hold NUL");
    let Error::BadData { sql_state, .. } = &error else { panic!("expected BadData, got {error:?}") };
    // tokio-postgres sends the bytes as they are; the server refuses them.
    assert_eq!(sql_state, "22021");
    assert_eq!(error.sql_state(), Some(&SqlState::CHARACTER_NOT_IN_REPERTOIRE));
    session.rollback().await.unwrap();
}

/// `note` is mapped as never NULL, but the column allows it.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "strict")]
struct Strict {
    #[orm(primary_key)]
    id: i32,
    note: String,
}

#[tokio::test]
async fn decode_errors_say_why_naming_entity_and_column() {
    let (test_db, db) = setup().await;
    test_db
        .client()
        .await
        .batch_execute(
            "CREATE TABLE mistyped (id int PRIMARY KEY, amount text); INSERT INTO mistyped VALUES (1, 'abc');
             CREATE TABLE strict (id int PRIMARY KEY, note text); INSERT INTO strict VALUES (1, NULL)",
        )
        .await
        .unwrap();
    let mut session = db.session();

    let error = session.get::<Strict>(1).await.expect_err("NULL into a String");
    assert_eq!(error.kind(), ErrorKind::Decode);
    let shown = error.to_string();
    assert!(shown.contains("note") && shown.contains("Strict"), "{shown}");
    assert!(shown.contains("NULL") && shown.contains("not an Option"), "{shown}");

    let error = session.get::<Mistyped>(1).await.expect_err("text into an i64");
    let shown = error.to_string();
    assert!(shown.contains("amount") && shown.contains("Mistyped"), "{shown}");
    assert!(shown.contains("i64") && shown.contains("text"), "names both types: {shown}");
    assert!(!shown.contains("abc"), "Display leaks the value: {shown}");
}

#[tokio::test]
async fn a_tracked_load_that_fails_partway_leaves_the_identity_map_as_it_was() {
    let (test_db, db) = setup().await;
    // Row 150 cannot be decoded: none of the 149 rows before it may stay
    // tracked, and the instance tracked before the load keeps its change.
    test_db
        .client()
        .await
        .batch_execute(
            "CREATE TABLE strict (id int PRIMARY KEY, note text);
             INSERT INTO strict SELECT i, CASE WHEN i = 150 THEN NULL ELSE 'n' || i END FROM generate_series(1, 200) i",
        )
        .await
        .unwrap();
    let mut session = db.session();
    let held = session.get_one::<Strict>(2).await.unwrap();
    held.modify(|strict| strict.note = "changed".to_owned());

    let error = session.query::<Strict>().order_by(Strict::ID.asc()).all().await.expect_err("NULL into a String");
    assert_eq!(error.kind(), ErrorKind::Decode);

    let before = session.stats().statements;
    let again = session.get_one::<Strict>(2).await.unwrap();
    assert!(Tracked::ptr_eq(&held, &again), "the instance tracked before the load stays");
    assert_eq!(again.read().note, "changed");
    assert_eq!(session.stats().statements, before, "still in the identity map");
    let first = session.get_one::<Strict>(1).await.unwrap();
    assert_eq!(session.stats().statements, before + 1, "row 1 of the failed load was not kept: loaded again");
    assert_eq!(first.read().note, "n1");
    let all = session.query::<Strict>().filter(Strict::ID.lt(150)).order_by(Strict::ID.asc()).all().await.unwrap();
    assert_eq!(all.len(), 149);
    assert!(Tracked::ptr_eq(&all[0], &first) && Tracked::ptr_eq(&all[1], &held));
    assert_eq!(all[1].read().note, "changed", "pending changes win over the row");
}

/// Terminates the backend running the statement that reads it.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "doomed")]
struct Doomed {
    #[orm(primary_key)]
    id: i32,
    terminated: bool,
}

#[tokio::test]
async fn a_connection_lost_outside_a_transaction_is_replaced_for_the_next_statement() {
    let (test_db, db) = setup().await;
    test_db
        .client()
        .await
        .batch_execute(
            "INSERT INTO customer (name) VALUES ('a'), ('b');
             CREATE VIEW doomed AS SELECT 1 AS id, pg_terminate_backend(pg_backend_pid()) AS terminated",
        )
        .await
        .unwrap();

    let mut session = db.session();
    let error = session.get::<Doomed>(1).await.expect_err("the backend exits mid-statement");
    assert_eq!(error.kind(), ErrorKind::ConnectionLost, "{error:?}");
    // No transaction was open: nothing was lost, and the session goes on.
    let b = session.get_one::<Customer>(2).await.expect("a load on a fresh connection");
    assert_eq!(b.read().name, "b");
    b.write().name = "bee".into();
    session.commit().await.expect("commit on the fresh connection");
    let name: String =
        test_db.client().await.query_one("SELECT name FROM customer WHERE id = 2", &[]).await.unwrap().get(0);
    assert_eq!(name, "bee");
}

#[tokio::test]
async fn a_backend_terminated_between_loads_is_replaced_for_the_next_load() {
    let (test_db, db) = setup_with(|config| config.max_connections = 1).await;
    test_db.client().await.batch_execute("INSERT INTO customer (name) VALUES ('a'), ('b')").await.unwrap();

    let mut session = db.session();
    session.get_one::<Customer>(1).await.unwrap(); // a load: no transaction
    let admin = test_db.client().await;
    let terminated = admin
        .query_one(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .expect("the session's backend is the only other one");
    assert!(terminated.get::<_, bool>(0), "the backend exited");

    let next = tokio::time::timeout(Duration::from_secs(10), session.get::<Customer>(2)).await.expect("no hang");
    // The session either noticed the closed connection before sending, or
    // the statement reported the loss; either way the one after it runs.
    match next {
        Ok(found) => assert_eq!(found.expect("row 2").read().name, "b"),
        Err(error) => assert_eq!(error.kind(), ErrorKind::ConnectionLost, "{error:?}"),
    }
    let count = session.query::<Customer>().count().await.expect("a load on a fresh connection");
    assert_eq!(count, 2);
    session.commit().await.unwrap();
}

//! The ORM through PgBouncer in transaction mode (`scripts/pgbouncer.sh`
//! starts it with `default_pool_size = 4`), in the unnamed statement mode:
//! many sessions share a few server connections, each transaction (and
//! each statement outside one) on whichever is free, and no statement is
//! left prepared on any of them. Much of the rest of the suite runs through
//! it too: see `scripts/test.sh`.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use futures_util::future::try_join_all;
use orm_core::{Database, DatabaseConfig, Error, RawSql, SessionStats, StatementMode};
use orm_tests::TestDb;
use support::{customer, Customer, SCHEMA};

/// The server connections PgBouncer keeps per database and user.
const SERVER_CONNECTIONS: usize = 4;

const SESSIONS: usize = 20;
const ROUNDS: usize = 5;

async fn setup() -> TestDb {
    let test_db = TestDb::new().await;
    test_db.client().await.batch_execute(SCHEMA).await.expect("create the test schema");
    test_db
}

fn database(url: &str) -> Database {
    let mut config = DatabaseConfig::from_url(url).expect("test database URL");
    config.max_connections = SESSIONS;
    Database::with_config(config).expect("pool")
}

/// One unit of work of one session, the way a request handler does it:
/// reads outside a transaction first, then inserts, a savepoint, an update
/// and reads inside one. Returns the server connections it ran on, which
/// PgBouncer picked.
async fn unit_of_work(
    db: &Database,
    session_number: usize,
    round: usize,
) -> orm_core::Result<(HashSet<i32>, SessionStats)> {
    let mut pids = HashSet::new();
    let mut session = db.session();
    // Outside a transaction: each statement may run on another server connection.
    session.query::<Customer>().filter(Customer::NAME.eq(format!("s{session_number}-r{round}-0"))).all().await?;
    session.get::<Customer>(0).await?; // none: the rows counted do not depend on timing

    let added: Vec<_> = (0..3).map(|i| session.add(customer(&format!("s{session_number}-r{round}-{i}")))).collect();
    session.flush().await?; // BEGIN: the rest of the unit runs on one server connection
    pids.insert(session.query_rows("SELECT pg_backend_pid()", &[]).await?[0].get(0));
    let savepoint = session.begin_nested().await?;
    added[0].write().description = Some("inside the savepoint".to_owned());
    session.flush().await?;
    session.rollback_nested(savepoint).await?;
    added[1].write().description = Some("kept".to_owned());
    let mine = session
        .query::<Customer>()
        .filter(Customer::NAME.like(format!("s{session_number}-r{round}-%")))
        .order_by(Customer::NAME.asc())
        .all()
        .await?;
    assert_eq!(mine.len(), 3);
    let found: Vec<Customer> = session
        .query_raw_untracked(
            RawSql::cached("SELECT id, name, description FROM customer WHERE name = $1"),
            &[&format!("s{session_number}-r{round}-1")],
        )
        .await?;
    assert_eq!(found[0].description.as_deref(), Some("kept"), "autoflushed before the raw query");
    pids.insert(session.query_rows("SELECT pg_backend_pid()", &[]).await?[0].get(0));
    let stats = session.commit().await?;
    Ok((pids, stats))
}

async fn run_all(db: &Database) -> (HashSet<i32>, Vec<SessionStats>) {
    let units = (0..SESSIONS).map(|session_number| {
        let db = db.clone();
        tokio::spawn(async move {
            let mut pids = HashSet::new();
            let mut stats = Vec::new();
            for round in 0..ROUNDS {
                let (used, spent) = unit_of_work(&db, session_number, round).await.expect("a unit of work");
                assert_eq!(used.len(), 1, "a transaction stays on one server connection");
                pids.extend(used);
                stats.push(spent);
            }
            (pids, stats)
        })
    });
    let mut pids = HashSet::new();
    let mut stats = Vec::new();
    for (used, spent) in orm_tests::within(try_join_all(units)).await.expect("no unit of work panicked") {
        pids.extend(used);
        stats.extend(spent);
    }
    (pids, stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_sessions_share_a_few_server_connections_in_the_unnamed_mode() {
    let test_db = setup().await;
    let db = database(&test_db.pgbouncer_url());
    let (pids, stats) = run_all(&db).await;
    assert!(
        pids.len() <= SERVER_CONNECTIONS,
        "{SESSIONS} sessions ran on {} server connections, more than PgBouncer keeps",
        pids.len()
    );
    let client = test_db.client().await;
    let rows: i64 = client.query_one("SELECT count(*) FROM customer", &[]).await.unwrap().get(0);
    assert_eq!(rows, i64::try_from(SESSIONS * ROUNDS * 3).unwrap());
    let kept: i64 =
        client.query_one("SELECT count(*) FROM customer WHERE description = 'kept'", &[]).await.unwrap().get(0);
    assert_eq!(kept, i64::try_from(SESSIONS * ROUNDS).unwrap(), "the savepoint's update was rolled back");

    // The same work directly against the server, statements prepared:
    // the statistics count the same statements and rows.
    let direct = setup().await;
    let mut config = DatabaseConfig::from_url(&orm_tests::database_url()).unwrap();
    config.postgres.dbname(direct.name());
    assert_eq!(config.statements, StatementMode::Prepared);
    // As many connections as PgBouncer has: the server's are shared.
    config.max_connections = SERVER_CONNECTIONS;
    config.wait_timeout = Duration::from_secs(30);
    let (_, prepared) = run_all(&Database::with_config(config).unwrap()).await;
    let total = |stats: &[SessionStats]| stats.iter().fold((0, 0), |(s, r), one| (s + one.statements, r + one.rows));
    assert_eq!(total(&stats), total(&prepared));
}

/// Holds a transaction on every server connection PgBouncer keeps (plus
/// one, which waits for none), and reads each one's prepared statements.
async fn prepared_statements_on_every_server_connection(db: &Database) -> Vec<(i32, i64)> {
    let mut sessions: Vec<_> = (0..SERVER_CONNECTIONS).map(|_| db.session()).collect();
    let mut seen = Vec::new();
    for session in &mut sessions {
        // Raw SQL opens the session's transaction, which keeps the server
        // connection until the session ends.
        let row = &session
            .query_rows("SELECT pg_backend_pid(), (SELECT count(*) FROM pg_prepared_statements)", &[])
            .await
            .unwrap()[0];
        seen.push((row.get(0), row.get(1)));
    }
    for session in sessions {
        session.commit().await.unwrap();
    }
    seen
}

#[tokio::test]
async fn raw_sql_runs_unnamed_and_leaves_no_statement_on_any_server_connection() {
    let test_db = setup().await;
    let db = database(&test_db.pgbouncer_url());

    let mut session = db.session();
    // Cached and not, each described in a transaction of its own (the
    // first), or in the session's, then run unnamed.
    let insert = RawSql::cached("INSERT INTO customer (name, description) VALUES ($1, $2)");
    session.execute(insert, &[&"ann", &None::<String>]).await.unwrap();
    session.execute(insert, &[&"bob", &Some("b")]).await.unwrap();
    let rows = session.query_rows("SELECT name FROM customer WHERE name <> $1 ORDER BY name", &[&"ann"]).await.unwrap();
    assert_eq!(rows.iter().map(|row| row.get(0)).collect::<Vec<String>>(), ["bob"]);
    session.commit().await.unwrap();

    // The parameters must be as many as the statement takes, as in the
    // prepared mode: the driver refuses before anything is sent.
    let error = db.session().query_rows("SELECT $1::int", &[&1_i32, &2_i32]).await.unwrap_err();
    assert!(matches!(error, Error::Database(_)), "{error:?}");
    assert!(error.to_string().contains("expected 1 parameters but got 2"), "{error}");
    let error = db.session().execute(insert, &[&"cy"]).await.unwrap_err();
    assert!(error.to_string().contains("expected 2 parameters but got 1"), "{error}");
    // A statement the server refuses to describe before the session's
    // transaction begins, in its own: the session goes on, as it does when
    // a prepare fails in the prepared mode.
    let mut session = db.session();
    let refused = session.query_rows("SELECT no_such_column FROM customer WHERE id = $1", &[&1_i32]).await;
    assert!(refused.unwrap_err().to_string().contains("no_such_column"));
    let ann = session.get_one::<Customer>(1).await.unwrap();
    assert_eq!(ann.read().name, "ann");
    // Inside the transaction, a refused statement fails it, as always.
    session.execute("UPDATE customer SET description = $1 WHERE id = 2", &[&"changed"]).await.unwrap();
    session.execute("UPDATE customer SET no_such_column = $1", &[&"x"]).await.unwrap_err();
    assert!(matches!(session.query_rows("SELECT 1", &[]).await, Err(Error::TransactionFailed)));
    session.rollback().await.unwrap();

    let mut session = db.session();
    assert_eq!(session.query::<Customer>().count().await.unwrap(), 2);
    let refused = session.query_raw::<Customer>("SELECT id, name FROM customer", &[]).await.unwrap_err();
    assert!(matches!(refused, Error::ColumnMismatch { .. }), "{refused:?}");
    session.rollback().await.unwrap();

    for (pid, prepared) in prepared_statements_on_every_server_connection(&db).await {
        assert_eq!(prepared, 0, "server connection {pid} keeps prepared statements");
    }
}

/// Large insert batches, which go by COPY against the server directly, keep
/// `INSERT ... RETURNING` in the unnamed mode: PgBouncer 1.18 takes the
/// Sync the driver sends ahead of a COPY's data for the end of the
/// transaction and hands the server connection to another client in the
/// middle of the COPY ("prepared statement does not exist", then the
/// server connection closed), which concurrent sessions here showed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batches_get_correct_keys_through_the_pooler() {
    const ROWS: usize = 5_000;
    let test_db = setup().await;
    let db = database(&test_db.pgbouncer_url());
    let mut warm = db.session();
    warm.add_all((0..ROWS).map(|i| customer(&format!("warm-{i}"))));
    warm.commit().await.unwrap();
    let sessions = (0..SERVER_CONNECTIONS * 2).map(|session_number| {
        let db = db.clone();
        tokio::spawn(async move {
            let mut session = db.session();
            let added = session.add_all((0..ROWS).map(|i| customer(&format!("s{session_number}-{i}"))));
            let stats = session.commit().await.expect("a commit");
            assert_eq!(stats.copied_rows, 0);
            added.iter().map(|c| (c.read().id, c.read().name.clone())).collect::<Vec<_>>()
        })
    });
    let written: Vec<(i32, String)> =
        orm_tests::within(try_join_all(sessions)).await.expect("no session panicked").into_iter().flatten().collect();
    let client = test_db.client().await;
    let stored: std::collections::HashMap<i32, String> = client
        .query("SELECT id, name FROM customer", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(stored.len(), SERVER_CONNECTIONS * 2 * ROWS + ROWS);
    for (id, name) in &written {
        assert_eq!(stored.get(id), Some(name), "key {id} is on its own object");
    }
    for (pid, prepared) in prepared_statements_on_every_server_connection(&db).await {
        assert_eq!(prepared, 0, "server connection {pid} keeps prepared statements");
    }
}

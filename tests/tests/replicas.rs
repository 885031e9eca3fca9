//! Read replicas, against the primary and streaming replica that
//! `scripts/replica_db.sh` starts: read sessions run on the replica
//! (`pg_is_in_recovery()` on the connection they use says so), writes
//! through them are refused, a commit token makes a later session read its
//! writes even while the replica's replay is paused, and a replica that is
//! stopped or lagging is skipped until it is healthy again.

mod support;

use std::future::Future;
use std::time::Duration;

use orm_core::{CommitToken, Database, DatabaseConfig, Error, ReplicaConfig, ServedBy, Session};
use orm_tests::{ReplicaPair, TestDb};
use support::{customer, Customer, SCHEMA};

/// `future`, or a panic if it takes longer than a test of this file could.
/// A test's whole body is a large future: callers box it.
async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), future).await.expect("timed out")
}

/// A fresh database with the shared schema on the pair's primary, present
/// on the replica too, and a pool on the primary that reads from the
/// replica, whose lag may be up to `max_lag`. Health is checked by every
/// read session.
async fn setup(pair: &ReplicaPair, max_lag: Duration) -> (TestDb, Database) {
    setup_with(pair, |config| config.max_replica_lag = max_lag).await
}

/// [`setup`] with the configuration changed by `configure`.
async fn setup_with(pair: &ReplicaPair, configure: impl FnOnce(&mut DatabaseConfig)) -> (TestDb, Database) {
    let test_db = pair.test_db().await;
    test_db.client().await.batch_execute(SCHEMA).await.expect("schema");
    pair.wait_for_replay().await;
    let mut config = DatabaseConfig::from_url(test_db.url()).expect("primary URL");
    config.replicas.push(ReplicaConfig::from_url(&pair.replica_url_of(&test_db)).expect("replica URL"));
    config.replica_check_interval = Duration::ZERO;
    configure(&mut config);
    (test_db, Database::with_config(config).expect("pool"))
}

/// Whether the server `session` runs on is a replica, by its own account.
async fn in_recovery(session: &mut Session) -> bool {
    session.query_rows("SELECT pg_is_in_recovery()", &[]).await.expect("pg_is_in_recovery")[0].get(0)
}

async fn customers(session: &mut Session) -> i64 {
    session.query::<Customer>().count().await.expect("count")
}

/// Commits one new customer on the primary and returns the commit's token.
async fn write(db: &Database, name: &str) -> CommitToken {
    let mut session = db.session();
    session.add(customer(name));
    let (_, token) = session.commit_with_token().await.expect("commit");
    token.expect("a transaction was committed")
}

#[tokio::test]
async fn read_sessions_run_on_the_replica_and_sessions_on_the_primary() {
    let pair = ReplicaPair::take().await;
    bounded(Box::pin(async {
        let (_test_db, db) = setup(&pair, Duration::from_secs(60)).await;
        write(&db, "alice").await;
        pair.wait_for_replay().await;

        let mut reading = db.read_session();
        assert_eq!(reading.served_by(), None, "no connection before the first statement");
        assert_eq!(customers(&mut reading).await, 1, "the replica has the committed row");
        assert!(in_recovery(&mut reading).await, "the read session runs on the replica");
        assert_eq!(reading.served_by(), Some(ServedBy::Replica(0)));
        reading.commit().await.expect("a read session commits");

        let mut writing = db.session();
        assert!(!in_recovery(&mut writing).await, "an ordinary session runs on the primary");
        assert_eq!(writing.served_by(), Some(ServedBy::Primary));
    }))
    .await;
}

#[tokio::test]
async fn writing_through_a_read_session_is_refused_on_the_replica_and_on_the_primary() {
    let pair = ReplicaPair::take().await;
    bounded(Box::pin(async {
        let (test_db, db) = setup(&pair, Duration::from_secs(60)).await;
        // The same, with no replica configured: read sessions use the primary.
        let primary_only = Database::connect(test_db.url()).expect("pool");
        for (db, served_by) in [(&db, ServedBy::Replica(0)), (&primary_only, ServedBy::Primary)] {
            let mut reading = db.read_session();
            reading.add(customer("mallory"));
            let refused = reading.flush().await.unwrap_err();
            assert!(matches!(refused, Error::ReadOnlySession), "{refused}");
            assert_eq!(reading.pending().expect("pending").inserts, 1, "the insert is still pending");
            assert_eq!(reading.stats().statements, 0, "nothing was sent");

            reading.set_autoflush(false); // else the pending insert is refused first
            let raw = reading.execute("INSERT INTO customer (name) VALUES ($1)", &[&"eve"]).await;
            let raw = raw.unwrap_err();
            assert!(raw.to_string().contains("SQLSTATE 25006"), "a read-only transaction refuses it: {raw}");
            assert_eq!(reading.served_by(), Some(served_by));
            let refused = reading.commit().await.unwrap_err();
            assert!(matches!(refused, Error::ReadOnlySession | Error::TransactionFailed), "{refused}");
        }
        let rows: i64 =
            test_db.client().await.query_one("SELECT count(*) FROM customer", &[]).await.expect("count").get(0);
        assert_eq!(rows, 0, "nothing was written");
    }))
    .await;
}

#[tokio::test]
async fn a_commit_token_reads_its_write_while_other_readers_stay_on_the_paused_replica() {
    let pair = ReplicaPair::take().await;
    bounded(Box::pin(async {
        let (_test_db, db) = setup(&pair, Duration::from_secs(60)).await;
        let before = write(&db, "alice").await;
        pair.wait_for_replay().await;
        pair.pause_replay().await;

        let token = write(&db, "bob").await;
        assert!(token > before, "tokens follow the log: {token} after {before}");
        let header = token.to_string(); // as a request would carry it
        let mut writer = db.read_session_after(header.parse().expect("token"));
        assert_eq!(customers(&mut writer).await, 2, "the writer sees its write");
        assert!(!in_recovery(&mut writer).await, "from the primary: the replica has not replayed it");
        assert_eq!(writer.served_by(), Some(ServedBy::Primary));

        let mut other = db.read_session();
        assert_eq!(customers(&mut other).await, 1, "other readers see the replica, without the write");
        assert!(in_recovery(&mut other).await);
        let mut earlier = db.read_session_after(before);
        assert_eq!(customers(&mut earlier).await, 1, "a token the replica has replayed reads from it");
        assert_eq!(earlier.served_by(), Some(ServedBy::Replica(0)));

        pair.resume_replay().await;
        pair.wait_for_replay().await;
        let mut writer = db.read_session_after(token);
        assert_eq!(customers(&mut writer).await, 2);
        assert_eq!(writer.served_by(), Some(ServedBy::Replica(0)), "once replayed, the replica serves it");
    }))
    .await;
}

#[tokio::test]
async fn a_lagging_replica_is_skipped_until_it_catches_up() {
    let pair = ReplicaPair::take().await;
    bounded(Box::pin(async {
        let (_test_db, db) = setup(&pair, Duration::from_millis(200)).await;
        pair.pause_replay().await;
        write(&db, "alice").await;
        tokio::time::sleep(Duration::from_millis(600)).await;

        let mut reading = db.read_session();
        assert_eq!(customers(&mut reading).await, 1, "reads go to the primary");
        assert_eq!(reading.served_by(), Some(ServedBy::Primary));

        pair.resume_replay().await;
        pair.wait_for_replay().await;
        let mut reading = db.read_session();
        assert_eq!(customers(&mut reading).await, 1);
        assert_eq!(reading.served_by(), Some(ServedBy::Replica(0)), "back in service");
    }))
    .await;
}

#[tokio::test]
async fn reads_keep_working_from_the_primary_while_the_replica_is_stopped() {
    let pair = ReplicaPair::take().await;
    bounded(Box::pin(async {
        let (_test_db, db) = setup(&pair, Duration::from_secs(60)).await;
        write(&db, "alice").await;
        pair.wait_for_replay().await;
        let mut held = db.read_session();
        assert_eq!(customers(&mut held).await, 1);
        assert_eq!(held.served_by(), Some(ServedBy::Replica(0)));

        pair.stop_replica().await;
        for _ in 0..3 {
            let mut reading = db.read_session();
            assert_eq!(customers(&mut reading).await, 1, "read from the primary");
            assert!(!in_recovery(&mut reading).await);
            assert_eq!(reading.served_by(), Some(ServedBy::Primary));
        }
        // A session whose replica went away mid-run: at most the statement
        // on the lost connection fails, and the next reads from the primary.
        if let Err(error) = held.query::<Customer>().count().await {
            assert!(matches!(error, Error::ConnectionLost(_)), "{error}");
        }
        assert_eq!(customers(&mut held).await, 1);
        assert_eq!(held.served_by(), Some(ServedBy::Primary));

        pair.start_replica().await;
        pair.wait_for_replay().await;
        let mut reading = db.read_session();
        assert_eq!(customers(&mut reading).await, 1);
        assert_eq!(reading.served_by(), Some(ServedBy::Replica(0)), "back in service once it runs again");
    }))
    .await;
}

/// A read session's own SQL may leave state on its replica connection (a
/// setting, a session advisory lock, which a replica allows): the
/// connection is reset before the next read session gets it, with a reset
/// the replica accepts.
#[tokio::test]
async fn state_a_read_session_leaves_on_its_replica_connection_is_reset() {
    let pair = ReplicaPair::take().await;
    bounded(Box::pin(async {
        let (test_db, db) = setup_with(&pair, |config| config.max_connections = 1).await;
        let mut reading = db.read_session();
        let leave = "SELECT pg_backend_pid(), set_config('application_name', 'leaked', false), \
                     pg_advisory_lock(7)::text";
        let pid: i32 = reading.query_rows(leave, &[]).await.expect("a replica takes both")[0].get(0);
        assert_eq!(reading.served_by(), Some(ServedBy::Replica(0)));
        reading.commit().await.expect("commit");

        let mut reading = db.read_session();
        let state = "SELECT pg_backend_pid(), current_setting('application_name'), \
                     (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())";
        let rows = reading.query_rows(state, &[]).await.expect("state");
        assert_eq!(rows[0].get::<_, i32>(0), pid, "the same connection");
        assert_eq!((rows[0].get::<_, String>(1), rows[0].get::<_, i64>(2)), (String::new(), 0));
        drop(test_db);
    }))
    .await;
}

/// A replica whose link to the primary broke (its WAL receiver stopped)
/// has replayed all it received, which no longer says it is up to date:
/// it is skipped once its last replayed transaction is older than the
/// bound, and serves again once it streams again.
#[tokio::test]
async fn a_replica_that_stopped_receiving_is_skipped_once_its_data_is_older_than_the_bound() {
    let pair = ReplicaPair::take().await;
    bounded(Box::pin(async {
        let (_test_db, db) = setup(&pair, Duration::from_millis(500)).await;
        write(&db, "alice").await;
        pair.wait_for_replay().await;
        pair.stop_streaming().await;
        write(&db, "bob").await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut reading = db.read_session();
        let (seen, served) = (customers(&mut reading).await, reading.served_by());
        drop(reading);
        pair.resume_streaming().await;
        assert_eq!((seen, served), (2, Some(ServedBy::Primary)), "the replica that lost the primary is skipped");

        let mut reading = db.read_session();
        assert_eq!(customers(&mut reading).await, 2);
        assert_eq!(reading.served_by(), Some(ServedBy::Replica(0)), "back in service once it streams again");
    }))
    .await;
}

/// A read session on a replica that opened a transaction (raw SQL not
/// marked read-only opens one, read-only on a read session) commits with
/// a token as it commits without one: it wrote nothing, so there is no
/// commit of its own to wait for, and the replica could not say where the
/// primary's log is.
#[tokio::test]
async fn a_read_session_on_a_replica_commits_with_a_token_after_opening_a_transaction() {
    let pair = ReplicaPair::take().await;
    bounded(Box::pin(async {
        let (_test_db, db) = setup(&pair, Duration::from_secs(60)).await;
        let mut reading = db.read_session();
        reading.execute("SELECT count(*) FROM customer", &[]).await.expect("read in a transaction");
        assert_eq!(reading.served_by(), Some(ServedBy::Replica(0)));
        let (_, token) = reading.commit_with_token().await.expect("the commit succeeds");
        assert_eq!(token, None, "a read session commits nothing");
    }))
    .await;
}

//! [`ReplicaPair`]: the private primary and streaming replica that
//! `scripts/replica_db.sh` starts.

use std::process::Command;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, MutexGuard};
use tokio_postgres::Client;

use crate::{connect, parse_config, with_dbname, TestDb};

/// Held by the test using the pair: pausing replay or stopping the
/// replica changes it for every test of the process.
static IN_USE: Mutex<()> = Mutex::const_new(());

/// The replica's `primary_conninfo` while [`ReplicaPair::stop_streaming`]
/// has it cleared, to put back.
static STOPPED_CONNINFO: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// The primary and replica `scripts/replica_db.sh` started, from the
/// variables it exports. Test databases are made on the primary
/// ([`ReplicaPair::test_db`]) and reach the replica by streaming
/// replication.
///
/// Pausing replay and stopping the replica change the replica for every
/// test of the process, so a test holds the pair for its whole run
/// ([`ReplicaPair::take`]), which also undoes what a test that failed
/// midway left paused, stopped or cut off from the primary.
#[derive(Debug)]
pub struct ReplicaPair {
    /// `ORM_PRIMARY_URL`: `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub primary_url: String,
    /// `ORM_REPLICA_URL`: the replica, on another port.
    pub replica_url: String,
    data: String,
    user: String,
    pg_ctl: String,
    _in_use: MutexGuard<'static, ()>,
}

impl ReplicaPair {
    /// The pair, once no other test of the process uses it, with the
    /// replica running and replaying.
    ///
    /// # Panics
    ///
    /// If one of its variables is not set (the tests that need it fail,
    /// saying how to start it, rather than pass without it), or the
    /// replica cannot be started.
    pub async fn take() -> Self {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!(
                    "{name} is not set: run the tests through scripts/test.sh, or start the primary and \
                     replica with `eval \"$(bash scripts/replica_db.sh)\"` first"
                )
            })
        };
        let (primary_url, replica_url) = (var("ORM_PRIMARY_URL"), var("ORM_REPLICA_URL"));
        let (data, user, pg_ctl) = (var("ORM_REPLICA_DATA"), var("ORM_REPLICA_USER"), var("ORM_REPLICA_PG_CTL"));
        let in_use = IN_USE.lock().await;
        let pair = ReplicaPair { primary_url, replica_url, data, user, pg_ctl, _in_use: in_use };
        if !std::path::Path::new(&format!("{}/postmaster.pid", pair.data)).exists() {
            pair.start_replica().await;
        }
        pair.resume_replay().await;
        pair.resume_streaming().await;
        pair
    }

    /// A fresh database on the primary, once the replica has it too.
    pub async fn test_db(&self) -> TestDb {
        let test_db = TestDb::on(&self.primary_url).await;
        self.wait_for_replay().await;
        test_db
    }

    /// The replica's URL for `test_db`'s database.
    pub fn replica_url_of(&self, test_db: &TestDb) -> String {
        with_dbname(&self.replica_url, test_db.name())
    }

    /// Connects to the replica's `postgres` database.
    ///
    /// # Panics
    ///
    /// If the connection fails.
    pub async fn replica_client(&self) -> Client {
        connect(&parse_config(&self.replica_url)).await.unwrap_or_else(|e| panic!("cannot connect to the replica: {e}"))
    }

    /// Waits until the replica has replayed everything the primary has
    /// written so far: every commit, and every commit token handed out.
    ///
    /// # Panics
    ///
    /// After 20 s, or if a query fails.
    pub async fn wait_for_replay(&self) {
        let primary = connect(&parse_config(&self.primary_url)).await.expect("connect to the primary");
        // A commit token is the insert position, which other sessions'
        // records not yet flushed may have moved past the flush position;
        // a commit of our own flushes them all. Then the flush position,
        // not the insert position: when the last record ends a log page,
        // the insert position is past the next page's header, which the
        // replica's replay position reaches only once another record is
        // written.
        primary.batch_execute("SELECT pg_current_xact_id()").await.expect("commit on the primary");
        let written: String =
            primary.query_one("SELECT pg_current_wal_flush_lsn()::text", &[]).await.expect("read the log").get(0);
        let replica = self.replica_client().await;
        let started = Instant::now();
        loop {
            let row = replica
                .query_one("SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", &[&written])
                .await
                .expect("read the replay position");
            if row.get::<_, bool>(0) {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "the replica did not replay up to {written}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Pauses replay on the replica: it keeps receiving the primary's log
    /// but applies none of it.
    ///
    /// # Panics
    ///
    /// If the replica refuses.
    pub async fn pause_replay(&self) {
        self.replica_client().await.batch_execute("SELECT pg_wal_replay_pause()").await.expect("pause replay");
    }

    /// Resumes replay on the replica.
    ///
    /// # Panics
    ///
    /// If the replica refuses.
    pub async fn resume_replay(&self) {
        self.replica_client().await.batch_execute("SELECT pg_wal_replay_resume()").await.expect("resume replay");
    }

    /// Stops the replica's WAL receiver, as a broken link to the primary
    /// would (an empty `primary_conninfo`, reloaded): the replica keeps
    /// serving what it replayed, until
    /// [`resume_streaming`](Self::resume_streaming) (or the next
    /// [`take`](Self::take), after a test that failed midway).
    ///
    /// # Panics
    ///
    /// If the replica refuses, or its receiver runs on after 20 s.
    pub async fn stop_streaming(&self) {
        let replica = self.replica_client().await;
        let conninfo: String =
            replica.query_one("SHOW primary_conninfo", &[]).await.expect("read primary_conninfo").get(0);
        *STOPPED_CONNINFO.lock().expect("not poisoned") = Some(conninfo);
        replica.batch_execute("ALTER SYSTEM SET primary_conninfo = ''").await.expect("clear primary_conninfo");
        replica.batch_execute("SELECT pg_reload_conf()").await.expect("reload");
        let started = Instant::now();
        loop {
            let receivers: i64 = replica
                .query_one("SELECT count(*) FROM pg_stat_wal_receiver", &[])
                .await
                .expect("read pg_stat_wal_receiver")
                .get(0);
            if receivers == 0 {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "the WAL receiver did not stop");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Streams again from the primary, if
    /// [`stop_streaming`](Self::stop_streaming) stopped it, and waits until
    /// the replica has caught up.
    ///
    /// # Panics
    ///
    /// If the replica refuses, or does not catch up within 20 s.
    pub async fn resume_streaming(&self) {
        let Some(conninfo) = STOPPED_CONNINFO.lock().expect("not poisoned").take() else { return };
        let replica = self.replica_client().await;
        let quoted = conninfo.replace('\'', "''");
        replica.batch_execute(&format!("ALTER SYSTEM SET primary_conninfo = '{quoted}'")).await.expect("restore");
        replica.batch_execute("SELECT pg_reload_conf()").await.expect("reload");
        self.wait_for_replay().await;
    }

    /// Stops the replica (`pg_ctl stop -m fast`), cutting its connections.
    ///
    /// # Panics
    ///
    /// If `pg_ctl` fails.
    pub async fn stop_replica(&self) {
        self.pg_ctl(&["-m", "fast", "-w", "stop"]).await;
    }

    /// Starts the replica again; it catches up by streaming.
    ///
    /// # Panics
    ///
    /// If `pg_ctl` fails.
    pub async fn start_replica(&self) {
        let log = format!("{}/../replica.log", self.data);
        self.pg_ctl(&["-l", &log, "-w", "-t", "60", "start"]).await;
    }

    /// Runs `pg_ctl -D <replica> args` as the replica's owner.
    async fn pg_ctl(&self, args: &[&str]) {
        let mut command = if whoami() == self.user {
            Command::new(&self.pg_ctl)
        } else {
            let mut runuser = Command::new("runuser");
            runuser.args(["-u", &self.user, "--", &self.pg_ctl]);
            runuser
        };
        command.args(["-D", &self.data]).args(args).current_dir("/");
        let output = tokio::task::spawn_blocking(move || command.output()).await.expect("pg_ctl ran");
        let output = output.unwrap_or_else(|e| panic!("cannot run pg_ctl: {e}"));
        assert!(output.status.success(), "pg_ctl {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    }
}

/// The user this process runs as.
fn whoami() -> String {
    Command::new("id")
        .arg("-un")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_default()
}

//! Read replicas: which server a read session's statements go to, and which
//! replicas are fit to serve them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{Object, Pool};
use parking_lot::Mutex;
use tokio_postgres::SimpleQueryMessage;

use crate::commit_token::CommitToken;
use crate::database::ConnectTarget;
use crate::error::Result;
use crate::statement_mode::{StatementMode, Statements};
use crate::tls::TlsConfig;

/// How to reach one read replica, for
/// [`DatabaseConfig::replicas`](crate::DatabaseConfig::replicas). Its pool
/// is sized and timed as the primary's.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// Connection parameters (host, user, database, ...).
    pub postgres: tokio_postgres::Config,
    /// Whether and how its connections use TLS.
    pub tls: TlsConfig,
    /// How statements are sent to it (see [`StatementMode`]).
    pub statements: StatementMode,
}

impl ReplicaConfig {
    /// The replica at `url`, read as
    /// [`DatabaseConfig::from_url`](crate::DatabaseConfig::from_url) reads
    /// the primary's: `sslmode`, `sslrootcert` and `statement_mode` apply
    /// to this replica alone.
    pub fn from_url(url: &str) -> Result<Self> {
        let (postgres, tls, statements) = crate::database::parse_url(url)?;
        Ok(ReplicaConfig { postgres, tls, statements: statements.unwrap_or_default() })
    }
}

/// The server a session's statements went to, from
/// [`Session::served_by`](crate::Session::served_by).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServedBy {
    /// The primary.
    Primary,
    /// The replica at this index of
    /// [`DatabaseConfig::replicas`](crate::DatabaseConfig::replicas).
    Replica(usize),
}

/// One server's pool, with what a session needs to use it.
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub(crate) pool: Pool,
    pub(crate) target: Arc<ConnectTarget>,
    pub(crate) statements: Statements,
}

impl Endpoint {
    async fn get(&self) -> Result<Object> {
        self.pool.get().await.map_err(|error| self.target.error(error))
    }
}

/// Where read sessions go: the replicas fit to serve them, else the primary.
pub(crate) struct Replicas {
    primary: Endpoint,
    servers: Vec<Replica>,
    max_lag: Duration,
    check_interval: Duration,
    /// Where the next read session starts looking, so that sessions spread
    /// over the replicas.
    next: AtomicUsize,
}

struct Replica {
    endpoint: Endpoint,
    health: Mutex<Health>,
}

/// What the last check of a replica found.
#[derive(Clone, Copy)]
struct Health {
    checked: Option<Instant>,
    state: State,
    /// How far it had replayed the primary's log. It only grows, so a
    /// token at or before it is known to be replayed without asking again.
    replayed: Option<CommitToken>,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum State {
    Healthy,
    /// Unreachable, or a statement on it lost its connection.
    Down,
    /// Behind the primary by more than the configured bound.
    Lagging,
    /// Not in recovery: a promoted replica, or a primary named as one.
    NotReplica,
}

/// The replica's state in one round trip: whether it replays a primary's
/// log, how far it got, and its lag in seconds. The lag is 0 while it
/// streams from the primary and has replayed all it received (a primary
/// without writes does not make a replica lag), else the age of the last
/// transaction it replayed: a replica whose WAL receiver stopped (its link
/// to the primary broke) has replayed all it received, which no longer
/// says it is up to date. Cut off and with no transaction replayed since
/// it started, its lag is unknown (NULL), which counts as lagging. (The
/// receiver's status is shown only to privileged users; to others, a
/// receiver running counts as streaming.)
const HEALTH_SQL: &str = "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn(), \
     CASE WHEN streaming AND pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 \
     WHEN streaming THEN COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0) \
     ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) END \
     FROM (SELECT EXISTS (SELECT FROM pg_stat_wal_receiver WHERE status IS NULL OR status = 'streaming') \
     AS streaming) AS receiver";

impl Replicas {
    pub(crate) fn new(primary: Endpoint, replicas: Vec<Endpoint>, max_lag: Duration, check_interval: Duration) -> Self {
        let replicas = replicas
            .into_iter()
            .map(|endpoint| Replica {
                endpoint,
                health: Mutex::new(Health { checked: None, state: State::Healthy, replayed: None }),
            })
            .collect();
        Replicas { primary, servers: replicas, max_lag, check_interval, next: AtomicUsize::new(0) }
    }

    /// How many replicas there are.
    pub(crate) fn count(&self) -> usize {
        self.servers.len()
    }

    /// A connection for a read session: from a replica that is up, within
    /// the lag bound and (given a `token`) has replayed past it, else from
    /// the primary.
    pub(crate) async fn checkout(&self, token: Option<CommitToken>) -> Result<(Object, Endpoint, ServedBy)> {
        let count = self.servers.len();
        let start = if count > 1 { self.next.fetch_add(1, Ordering::Relaxed) } else { 0 };
        for offset in 0..count {
            let index = (start + offset) % count;
            let replica = &self.servers[index];
            if let Some(client) = self.serve(replica, token).await {
                return Ok((client, replica.endpoint.clone(), ServedBy::Replica(index)));
            }
        }
        let client = self.primary.get().await?;
        Ok((client, self.primary.clone(), ServedBy::Primary))
    }

    /// A connection to `replica` if it may serve a session given `token`.
    /// Its health is checked at most once per check interval; a token it
    /// is not known to have replayed is checked against its state now.
    async fn serve(&self, replica: &Replica, token: Option<CommitToken>) -> Option<Object> {
        let health = *replica.health.lock();
        let fresh = health.checked.is_some_and(|at| at.elapsed() < self.check_interval);
        if fresh && health.state != State::Healthy {
            return None;
        }
        let client = match replica.endpoint.get().await {
            Ok(client) => client,
            Err(error) => {
                replica.record(State::Down, None, &error.to_string());
                return None;
            }
        };
        let unknown_token =
            token.is_some_and(|token| health.replayed.is_none_or(|replayed| !token.is_replayed_by(replayed)));
        let health = if fresh && !unknown_token { health } else { self.check(replica, &client).await };
        let replayed = token.is_none_or(|token| health.replayed.is_some_and(|replayed| token.is_replayed_by(replayed)));
        (health.state == State::Healthy && replayed).then_some(client)
    }

    /// Asks the replica how it is, and records the answer.
    async fn check(&self, replica: &Replica, client: &Object) -> Health {
        let row = match client.simple_query(HEALTH_SQL).await {
            Ok(messages) => messages.into_iter().find_map(|message| match message {
                SimpleQueryMessage::Row(row) => Some(row),
                _ => None,
            }),
            Err(error) => {
                return replica.record(State::Down, None, &error.to_string());
            }
        };
        let Some(row) = row else {
            return replica.record(State::Down, None, "its health check returned no row");
        };
        if row.get(0) != Some("t") {
            return replica.record(State::NotReplica, None, "it is not in recovery (not a replica)");
        }
        let replayed = row.get(1).and_then(|lsn| CommitToken::parse_lsn(lsn, "replay position").ok());
        let Some(lag) = row.get(2).and_then(|lag| lag.parse::<f64>().ok()) else {
            let reason = "it does not stream from the primary, and has replayed nothing since it started";
            return replica.record(State::Lagging, replayed, reason);
        };
        if lag > self.max_lag.as_secs_f64() {
            let reason = format!("it lags {lag:.1} s behind, more than the bound of {:?}", self.max_lag);
            return replica.record(State::Lagging, replayed, &reason);
        }
        replica.record(State::Healthy, replayed, "")
    }

    /// Takes replica `index` out of service until its next check: a
    /// statement on it lost its connection.
    pub(crate) fn lost(&self, index: usize, reason: &str) {
        if let Some(replica) = self.servers.get(index) {
            replica.record(State::Down, None, reason);
        }
    }
}

impl Replica {
    /// Records a replica's state, warning when it leaves service and
    /// saying when it returns.
    fn record(&self, state: State, replayed: Option<CommitToken>, reason: &str) -> Health {
        let mut health = self.health.lock();
        let target = &self.endpoint.target;
        if state != health.state {
            if state == State::Healthy {
                tracing::info!(host = target.host, port = target.port, "replica back in service");
            } else {
                tracing::warn!(
                    host = target.host,
                    port = target.port,
                    reason,
                    "replica skipped: reads go to the primary until it is healthy again"
                );
            }
        }
        health.checked = Some(Instant::now());
        health.state = state;
        health.replayed = replayed.max(health.replayed);
        *health
    }
}

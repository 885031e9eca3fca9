//! [`Database::transaction`]: a unit of work run in a fresh session and
//! committed, run again on the failures that another try may not meet
//! (a serialization failure, a deadlock, a connection lost before `COMMIT`
//! was sent), and never again once `COMMIT` may have reached the server.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::time::Duration;

use crate::database::Database;
use crate::error::Error;
use crate::isolation::IsolationLevel;
use crate::session::Session;

/// How [`Database::transaction_with`] runs and retries a unit of work.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Tries in all, the first included. Default: 5.
    pub max_attempts: u32,
    /// The wait before the first retry; each retry doubles it, up to
    /// `max_delay`, and waits a random part of it (full jitter), so that
    /// transactions that collided do not collide again in step.
    /// Default: 10 ms.
    pub base_delay: Duration,
    /// The longest wait between two tries. Default: 1 s.
    pub max_delay: Duration,
    /// The isolation level of each try's transaction; `None` for the
    /// database's configured one. Default: `None`.
    pub isolation: Option<IsolationLevel>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_secs(1),
            isolation: None,
        }
    }
}

impl RetryPolicy {
    /// The default policy, each try at `level`: SERIALIZABLE transactions
    /// are the ones that need retries most.
    #[must_use]
    pub fn with_isolation(level: IsolationLevel) -> Self {
        RetryPolicy { isolation: Some(level), ..RetryPolicy::default() }
    }

    /// The wait before retry number `retry` (1 for the first).
    fn delay(&self, retry: u32, jitter: &RandomState) -> Duration {
        let doubled = self.base_delay.saturating_mul(1 << retry.saturating_sub(1).min(20));
        let ceiling = doubled.min(self.max_delay);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(jitter.hash_one(retry) % nanos)
    }
}

/// What a unit of work given to [`Database::transaction`] returns: a boxed
/// future borrowing the session, written `Box::pin(async move { ... })`.
/// Boxed and `Send`, so that the transaction's own future is `Send` and can
/// run in a spawned task or a web handler (an `async` closure's future
/// cannot promise that for every borrow of the session).
pub type UnitOfWork<'s, T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 's>>;

/// How a unit of work's error tells [`Database::transaction`] whether it
/// came from the database, and which. Implemented for [`Error`]; implement
/// it for an application's own error type (one that wraps the ORM's) so
/// that a closure can fail with either and still be retried when the
/// database asks for it.
pub trait AsOrmError {
    /// The ORM's error inside, if this is one.
    fn as_orm_error(&self) -> Option<&Error>;
}

impl AsOrmError for Error {
    fn as_orm_error(&self) -> Option<&Error> {
        Some(self)
    }
}

impl Database {
    /// Runs `work` in a fresh session and commits it, with the default
    /// [`RetryPolicy`]: a try that fails with a serialization failure, a
    /// deadlock or a connection lost before `COMMIT` was sent is rolled
    /// back and run again in a new session, up to 5 tries in all, with
    /// exponential backoff and jitter in between. Any other error, or the
    /// last try's, is returned at once, after a rollback. Once `COMMIT`
    /// was sent nothing is retried: a connection lost then is
    /// [`Error::CommitUnknown`], as the transaction may have committed.
    ///
    /// `work` may run more than once, so it should change nothing outside
    /// the session that a second run would change again. It returns its
    /// future boxed ([`UnitOfWork`]); its error type is the ORM's [`Error`]
    /// or one that wraps it ([`AsOrmError`]).
    ///
    /// ```
    /// # use orm_core::{Database, Entity, Error, IsolationLevel, RetryPolicy};
    /// #[derive(Entity, Clone, Debug, PartialEq)]
    /// struct Counter {
    ///     #[orm(primary_key)]
    ///     name: String,
    ///     value: i64,
    /// }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE counter (name text PRIMARY KEY, value int8 NOT NULL);
    /// #     INSERT INTO counter VALUES ('visits', 0)").await?;
    /// let db = Database::connect(test_db.url())?;
    /// let value = db
    ///     .transaction(|session| {
    ///         Box::pin(async move {
    ///             let counter = session.get_one::<Counter>("visits".to_owned()).await?;
    ///             Ok::<_, Error>(counter.modify(|c| {
    ///                 c.value += 1;
    ///                 c.value
    ///             }))
    ///         })
    ///     })
    ///     .await?; // committed
    /// assert_eq!(value, 1);
    ///
    /// let serializable = RetryPolicy::with_isolation(IsolationLevel::Serializable);
    /// let task = tokio::spawn(async move {
    ///     // Send: it runs in a spawned task, as in a web handler.
    ///     db.transaction_with(&serializable, |session| Box::pin(session.query::<Counter>().count())).await
    /// });
    /// assert_eq!(task.await.expect("task")?, 1);
    /// # Ok(()) }
    /// ```
    pub async fn transaction<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: for<'s> FnMut(&'s mut Session) -> UnitOfWork<'s, T, E>,
        E: From<Error> + AsOrmError,
    {
        self.transaction_with(&RetryPolicy::default(), work).await
    }

    /// [`transaction`](Self::transaction) with `policy`'s attempts,
    /// backoff and isolation level.
    pub async fn transaction_with<T, E, F>(&self, policy: &RetryPolicy, mut work: F) -> Result<T, E>
    where
        F: for<'s> FnMut(&'s mut Session) -> UnitOfWork<'s, T, E>,
        E: From<Error> + AsOrmError,
    {
        let jitter = RandomState::new();
        let mut attempt = 1;
        loop {
            let mut session = match policy.isolation {
                Some(level) => self.session_with_isolation(level),
                None => self.session(),
            };
            let outcome = match work(&mut session).await {
                Ok(value) => session.commit().await.map(|_| value).map_err(E::from),
                Err(error) => {
                    // The try's own error is the one to report; a failed
                    // rollback leaves nothing behind but a discarded connection.
                    if let Err(rollback) = session.rollback().await {
                        tracing::debug!(%rollback, "rollback after a failed unit of work failed");
                    }
                    Err(error)
                }
            };
            let error = match outcome {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let again = attempt < policy.max_attempts && error.as_orm_error().is_some_and(Error::is_retryable);
            if !again {
                return Err(error);
            }
            if let Some(cause) = error.as_orm_error() {
                tracing::debug!(attempt, error = %cause, "retrying the unit of work");
            }
            tokio::time::sleep(policy.delay(attempt, &jitter)).await;
            attempt += 1;
        }
    }
}

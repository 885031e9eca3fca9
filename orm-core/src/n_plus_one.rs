//! The N+1 guard: a session counts how often it sends each load statement and
//! reports a statement that runs suspiciously often, the mark of rows loaded
//! one at a time in a loop.

use std::collections::HashMap;
use std::hash::BuildHasher;

use smallvec::SmallVec;

use crate::error::{Error, Result};

/// What a session does when one load statement runs more than `threshold`
/// times in it: the N+1 pattern, where code loads rows one at a time in a
/// loop (`get` per key, a query per parent) instead of all at once. Set it
/// with [`DatabaseConfig::n_plus_one`](crate::DatabaseConfig::n_plus_one),
/// or per session with [`Session::set_n_plus_one`](crate::Session::set_n_plus_one).
///
/// Only loads are counted: `get` and `get_one` that reach the database
/// (identity-map hits send nothing and count nothing), `get_many`, queries
/// and [`query_raw`](crate::Session::query_raw). Statement text never
/// contains values, so loading key 1, then key 2, then key 3 runs one
/// statement three times. Flushes, `refresh`, `execute` and `query_rows`
/// are not counted.
///
/// ```
/// # use orm_core::{Database, DatabaseConfig, Entity, Error, NPlusOne};
/// # #[derive(Entity, Clone, Debug, PartialEq)]
/// # struct Customer { #[orm(primary_key, generated)] id: i64, name: String }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
/// # let test_db = orm_tests::TestDb::new().await;
/// # test_db.client().await.batch_execute("CREATE TABLE customer (id bigserial PRIMARY KEY, name text NOT NULL);
/// #     INSERT INTO customer (name) SELECT 'customer ' || i FROM generate_series(1, 5) AS i").await?;
/// let mut config = DatabaseConfig::from_url(test_db.url())?;
/// config.n_plus_one = NPlusOne::Error { threshold: 3 }; // in a test suite: fail, don't warn
/// let db = Database::with_config(config)?;
///
/// let mut session = db.session();
/// for id in 1..=3 {
///     session.get_one::<Customer>(id).await?; // one statement per key...
/// }
/// let refused = session.get_one::<Customer>(4).await; // ...once too often
/// assert!(matches!(refused, Err(Error::NPlusOne { count: 4, .. })));
///
/// let all = session.get_many::<Customer>(&[1, 2, 3, 4, 5]).await?; // the fix: one statement
/// assert_eq!(all.len(), 5);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NPlusOne {
    /// Count nothing.
    Off,
    /// Log a `tracing` warning, once per statement and session, naming the
    /// statement, when it runs for the `threshold + 1`th time. The default,
    /// with a threshold of [`NPlusOne::DEFAULT_THRESHOLD`].
    Warn {
        /// How many runs of one statement a session allows silently.
        threshold: usize,
    },
    /// Refuse to send a statement that would run for the `threshold + 1`th
    /// time, returning [`Error::NPlusOne`]: for tests that must not
    /// regress into N+1 loads.
    Error {
        /// How many runs of one statement a session allows.
        threshold: usize,
    },
}

impl NPlusOne {
    /// The default threshold: more runs of one load statement than this in
    /// one unit of work are almost always a loop that should be one load.
    pub const DEFAULT_THRESHOLD: usize = 25;
}

impl Default for NPlusOne {
    /// Warn, after [`NPlusOne::DEFAULT_THRESHOLD`] runs.
    fn default() -> Self {
        NPlusOne::Warn { threshold: NPlusOne::DEFAULT_THRESHOLD }
    }
}

/// How often a session sent each load statement.
pub(crate) struct LoadCounter {
    setting: NPlusOne,
    /// The counts of the first [`FEW`] statements, found by a scan: most
    /// sessions send a few, and the map's first insert (its table's
    /// allocation, and freeing it with the session) was ~350 instructions
    /// of a one-get request.
    few: SmallVec<[(u64, usize); FEW]>,
    /// The counts of the statements after the first [`FEW`]. Keyed, as
    /// `few` is, by a 64-bit hash of the statement's text ([`TEXT_HASH`]),
    /// not by the text: copying each statement into the map on its first
    /// run was 0.7% of a request's instructions in the demo, whose sessions
    /// each send a few statements once. Two statements of one session
    /// would share a count only if their hashes collided, a chance of
    /// about n²/2⁶⁵ for n distinct statements.
    many: HashMap<u64, usize, foldhash::fast::RandomState>,
}

/// How many statements' counts a session keeps inline.
const FEW: usize = 4;

/// The hash of statement texts: fixed, as the texts are the application's
/// own, not input an attacker picks to collide.
const TEXT_HASH: foldhash::fast::FixedState = foldhash::fast::FixedState::with_seed(0x6e2b_1f0c_4d95_a7e3);

impl LoadCounter {
    pub(crate) fn new(setting: NPlusOne) -> Self {
        LoadCounter { setting, few: SmallVec::new(), many: HashMap::default() }
    }

    /// The count of the statement with this hash, created at 0.
    fn runs(&mut self, hash: u64) -> &mut usize {
        if let Some(at) = self.few.iter().position(|&(held, _)| held == hash) {
            return &mut self.few[at].1;
        }
        if self.few.len() < FEW {
            self.few.push((hash, 0));
            let Some((_, runs)) = self.few.last_mut() else { unreachable!("just pushed") };
            return runs;
        }
        self.many.entry(hash).or_insert(0)
    }

    pub(crate) fn set(&mut self, setting: NPlusOne) {
        self.setting = setting;
    }

    /// Counts one run of `statement`, which is about to be sent; an error
    /// means it must not be sent.
    pub(crate) fn record(&mut self, statement: &str) -> Result<()> {
        let (threshold, refuse) = match self.setting {
            NPlusOne::Off => return Ok(()),
            NPlusOne::Warn { threshold } => (threshold, false),
            NPlusOne::Error { threshold } => (threshold, true),
        };
        let runs = self.runs(TEXT_HASH.hash_one(statement));
        let count = *runs + 1;
        if count > threshold && refuse {
            // Not counted: it does not run, and every retry is refused alike.
            return Err(Error::NPlusOne { statement: statement.to_owned(), count });
        }
        *runs = count;
        if count == threshold + 1 {
            tracing::warn!(
                %statement,
                count,
                threshold,
                "N+1 query: one statement ran {count} times in this session; load the rows with one statement \
                 instead (Session::get_many for keys, Column::is_in for a filter, or relationship loading)"
            );
        }
        Ok(())
    }
}

//! What the model-based test and the fault-injection test share: the
//! database they run in and the proptest loop that generates, runs and
//! shrinks programs.

use std::cell::Cell;
use std::time::{Duration, Instant};

use orm_core::{Database, DatabaseConfig};
use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use tokio_postgres::Client;

use super::ops::Op;
use super::runner::Counts;
use super::schema;

pub fn env_number(name: &str, default: u32) -> u32 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One database for the whole run: each program starts from the seed rows.
/// `adjust` sets up the pool.
pub async fn setup(adjust: impl FnOnce(&mut DatabaseConfig)) -> (orm_tests::TestDb, Database, Client) {
    let (test_db, writer) = database().await;
    let mut config = DatabaseConfig::from_url(test_db.url()).expect("the test database's URL");
    adjust(&mut config);
    let db = Database::with_config(config).expect("a database");
    (test_db, db, writer)
}

/// The test database with the schema, and the other writer's connection.
pub async fn database() -> (orm_tests::TestDb, Client) {
    let test_db = orm_tests::TestDb::new().await;
    let writer = test_db.client().await;
    writer.batch_execute(schema::SCHEMA).await.expect("the schema");
    // A writer that would wait for the session's locks fails instead: the
    // model only lets it touch rows the session does not hold.
    writer.batch_execute("SET lock_timeout = '3s'").await.expect("lock_timeout");
    (test_db, writer)
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime")
}

/// Runs `cases` programs of `strategy` (at most `ORM_MODEL_SECONDS`
/// seconds) with `run`, which adds to the counts what it ran; panics with
/// the shortest failing program.
pub fn explore(
    name: &str,
    cases: u32,
    strategy: &impl Strategy<Value = Vec<Op>>,
    run: impl Fn(&[Op], &mut Counts) -> Result<(), String>,
) {
    let config = Config { cases, failure_persistence: None, max_shrink_iters: 4096, ..Config::default() };
    let mut proptest = TestRunner::new(config);
    // The test closure must be `Fn`: the counts live in a `Cell`.
    let counts = Cell::new(Counts::default());
    let started = Instant::now();
    let budget = Duration::from_secs(env_number("ORM_MODEL_SECONDS", u32::MAX).into());
    let result = proptest.run(strategy, |program| {
        if started.elapsed() > budget {
            // Out of time: the remaining cases pass without running.
            return Ok(());
        }
        let mut sum = counts.get();
        let outcome = run(&program, &mut sum);
        counts.set(sum);
        outcome.map_err(TestCaseError::fail)
    });
    let counts = counts.get();
    eprintln!(
        "{name}: {} programs, {} steps, {} faults injected ({} hit) in {:.1?}",
        counts.programs,
        counts.steps,
        counts.faults,
        counts.faults_hit,
        started.elapsed()
    );
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, program)) => panic!("shortest failing program: {program:#?}\n{reason}"),
        Err(TestError::Abort(reason)) => panic!("aborted: {reason}"),
    }
}

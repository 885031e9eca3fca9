//! Model-based testing of the session: random programs of session
//! operations (over a parent and a child table with foreign keys, a
//! versioned table and a table with a composite key and a unique column),
//! run against the real PostgreSQL and checked step by step against a plain
//! in-memory model of the documented semantics. A failure is shrunk by
//! proptest to the shortest program that shows it; each one found is kept
//! below as a plain regression test.
//!
//! `ORM_MODEL_CASES` sets the number of programs (default 150),
//! `ORM_MODEL_STEPS` their maximal length (default 30) and
//! `ORM_MODEL_SECONDS` a time budget after which no new program starts;
//! the long run is documented in docs/testing.md.

#[path = "model_based/model.rs"]
mod model;
#[path = "model_based/ops.rs"]
mod ops;
#[path = "model_based/runner.rs"]
mod runner;
#[path = "model_based/schema.rs"]
mod schema;

use std::cell::Cell;
use std::time::{Duration, Instant};

use orm_core::Database;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use tokio_postgres::Client;

use ops::Op;
use runner::Counts;
use schema::Table;

fn env_number(name: &str, default: u32) -> u32 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One database for the whole run: each program starts from the seed rows.
async fn setup() -> (orm_tests::TestDb, Database, Client) {
    let test_db = orm_tests::TestDb::new().await;
    let writer = test_db.client().await;
    writer.batch_execute(schema::SCHEMA).await.expect("the schema");
    // A writer that would wait for the session's locks fails instead: the
    // model only lets it touch rows the session does not hold.
    writer.batch_execute("SET lock_timeout = '3s'").await.expect("lock_timeout");
    let db = Database::connect(test_db.url()).expect("a database");
    (test_db, db, writer)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime")
}

/// Runs fixed programs: the regression tests.
fn run_programs(programs: &[Vec<Op>]) {
    let runtime = runtime();
    runtime.block_on(async {
        let (_test_db, db, writer) = setup().await;
        let mut counts = Counts::default();
        for program in programs {
            if let Err(failure) = runner::run(&db, &writer, program, &mut counts).await {
                panic!("{failure}\nprogram: {program:#?}");
            }
        }
    });
}

#[test]
fn random_programs_behave_as_the_model_says() {
    let cases = env_number("ORM_MODEL_CASES", 150);
    let steps = env_number("ORM_MODEL_STEPS", 30) as usize;
    let runtime = runtime();
    let (_test_db, db, writer) = runtime.block_on(setup());
    let config = Config { cases, failure_persistence: None, max_shrink_iters: 4096, ..Config::default() };
    let mut proptest = TestRunner::new(config);
    // The test closure must be `Fn`: the counts live in a `Cell`.
    let counts = Cell::new(Counts::default());
    let started = Instant::now();
    let budget = Duration::from_secs(env_number("ORM_MODEL_SECONDS", u32::MAX).into());
    let result = proptest.run(&ops::program(steps), |program| {
        if started.elapsed() > budget {
            // Out of time: the remaining cases pass without running.
            return Ok(());
        }
        let mut sum = counts.get();
        let outcome = runtime.block_on(runner::run(&db, &writer, &program, &mut sum));
        counts.set(sum);
        outcome.map_err(TestCaseError::fail)
    });
    let counts = counts.get();
    eprintln!("model-based run: {} programs, {} steps in {:.1?}", counts.programs, counts.steps, started.elapsed());
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, program)) => panic!("shortest failing program: {program:#?}\n{reason}"),
        Err(TestError::Abort(reason)) => panic!("aborted: {reason}"),
    }
}

// The shrunk programs of the failures found, kept as regression tests.

/// A savepoint's rollback reset an entity expunged before it: its write
/// after the expunge was still in the session's write log.
#[test]
fn a_savepoint_rollback_leaves_an_expunged_entity_alone() {
    run_programs(&[vec![
        Op::GetMany { table: Table::Parent, keys: vec![0] },
        Op::Expunge { handle: 0 },
        Op::Write { handle: 0, field: 0, value: 1 },
        Op::BeginNested,
        Op::RollbackNested { level: 0 },
    ]]);
}

/// A flush that failed after filling in a child's foreign key from the key
/// its pending parent got (a rolled-back insert) left that key on the
/// child.
#[test]
fn a_failed_flush_leaves_linked_children_as_they_were() {
    run_programs(&[vec![
        // Child 1 exists already: its insert fails.
        Op::Add { table: Table::Child, seed: 155 },
        Op::Add { table: Table::Parent, seed: 22 },
        Op::SetParent { child: 0, parent: 0, sponsor: false },
        Op::Flush,
    ]]);
}

/// An entity deleted inside a savepoint comes back at its rollback without
/// the change written to it after the delete, which was never flushed.
#[test]
fn an_entity_deleted_inside_a_savepoint_comes_back_without_unflushed_changes() {
    run_programs(&[vec![
        Op::BeginNested,
        Op::GetMany { table: Table::Child, keys: vec![60] },
        Op::Delete { handle: 0 },
        Op::Write { handle: 0, field: 3, value: 0 },
        Op::Flush,
        Op::RollbackNested { level: 0 },
    ]]);
}

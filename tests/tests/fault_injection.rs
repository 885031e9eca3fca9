//! Faults in the middle: the model-based test's random programs (see
//! `model_based.rs` and docs/testing.md) with faults injected into random
//! flushes and commits, a random 0 to 2.55 ms into them: the future
//! dropped (a timeout), the statements cancelled (`pg_cancel_backend`), the
//! backends terminated (`pg_terminate_backend`); or the pool exhausted
//! while they run.
//!
//! What must hold whatever the fault hit: a commit is all or nothing, and
//! says so (a success committed everything, a failure nothing,
//! `CommitUnknown` or a cut-off commit one of the two); after every
//! program no connection is checked out and none sits idle inside a
//! transaction; no step hangs (each runs under a timeout); nothing panics.
//!
//! `ORM_FAULT_CASES` sets the number of programs (default 100);
//! `ORM_MODEL_STEPS` and `ORM_MODEL_SECONDS` work as for the model-based
//! test.

#[path = "model_based/harness.rs"]
mod harness;
#[path = "model_based/model.rs"]
mod model;
#[path = "model_based/ops.rs"]
mod ops;
#[path = "model_based/runner.rs"]
mod runner;
#[path = "model_based/schema.rs"]
mod schema;

use std::time::{Duration, Instant};

use orm_core::Database;
use proptest::prelude::*;
use tokio_postgres::Client;

use harness::{env_number, runtime, setup};
use ops::{Fault, Op};
use runner::Counts;

/// A few connections, so that exhausting the pool is cheap, and a short
/// wait for one, so that a session waiting on an exhausted pool fails fast.
fn small_pool(config: &mut orm_core::DatabaseConfig) {
    config.max_connections = 3;
    config.wait_timeout = Duration::from_millis(300);
}

fn faulty_op() -> impl Strategy<Value = Op> {
    let fault = proptest::sample::select(vec![Fault::Timeout, Fault::Cancel, Fault::Terminate, Fault::ExhaustPool]);
    (fault, any::<u8>(), any::<bool>()).prop_map(|(fault, tens_of_micros, commit)| Op::Faulty {
        fault,
        tens_of_micros,
        commit,
    })
}

/// How long the pool may take to get back a connection a dropped session
/// cleans up.
const SETTLE: Duration = Duration::from_secs(5);

/// After a program: every connection is back in the pool, and none of the
/// database's connections is inside a transaction.
async fn check_connections(db: &Database, writer: &Client) -> Result<(), String> {
    let deadline = Instant::now() + SETTLE;
    while db.pool_state().in_use > 0 {
        if Instant::now() > deadline {
            return Err(format!("connections still checked out after the program: {:?}", db.pool_state()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let sql = "SELECT pid, state, query, now() - state_change FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'";
    // A dropped session queues its `ROLLBACK` and gives its connection back
    // at once (the next borrower is served after it), so the server may
    // not have run it yet: only a transaction that outlasts SETTLE is left.
    let rows = loop {
        let rows = writer.query(sql, &[]).await.map_err(|e| format!("reading pg_stat_activity: {e}"))?;
        if rows.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let stuck: Vec<String> = rows
        .iter()
        .map(|row| {
            let (pid, state, query): (i32, String, String) = (row.get(0), row.get(1), row.get(2));
            format!("{pid} {state} after {query:?}")
        })
        .collect();
    Err(format!("connections inside a transaction: {stuck:?}, the pool: {:?}", db.pool_state()))
}

async fn run(db: &Database, writer: &Client, program: &[Op], counts: &mut Counts) -> Result<(), String> {
    runner::run(db, writer, program, counts).await?;
    let checked = check_connections(db, writer).await;
    if let Err(failure) = &checked {
        // Later programs may fail for it too: the one that left it is this.
        eprintln!("{failure} after {program:?}");
    }
    checked
}

#[test]
fn random_programs_with_faults_commit_all_or_nothing() {
    let cases = env_number("ORM_FAULT_CASES", 100);
    let steps = env_number("ORM_MODEL_STEPS", 30) as usize;
    let runtime = runtime();
    let (_test_db, db, writer) = runtime.block_on(setup(small_pool));
    let op = prop_oneof![10 => ops::op(), 2 => faulty_op()];
    harness::explore("fault-injection run", cases, &ops::program(steps, op), |program, counts| {
        runtime.block_on(run(&db, &writer, program, counts))
    });
}

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

use harness::{env_number, runtime, setup};
use ops::Op;
use orm_core::Database;
use orm_tests::FragmentingProxy;
use runner::Counts;
use schema::Table;

/// Runs fixed programs: the regression tests.
fn run_programs(programs: &[Vec<Op>]) {
    let runtime = runtime();
    runtime.block_on(async {
        let (_test_db, db, writer) = setup(|_| {}).await;
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
    let (_test_db, db, writer) = runtime.block_on(setup(|_| {}));
    harness::explore("model-based run", cases, &ops::program(steps, ops::op()), |program, counts| {
        runtime.block_on(runner::run(&db, &writer, program, counts))
    });
}

/// Random programs through a proxy that passes the server's answers on a
/// message at a time (see `fragmented_answers.rs`), in `params`' statement
/// mode: every kind of round trip the session makes, read in pieces.
fn random_programs_with_answers_in_pieces(params: &str) {
    let cases = env_number("ORM_MODEL_CASES", 150) / 5;
    let steps = env_number("ORM_MODEL_STEPS", 30) as usize;
    let runtime = runtime();
    let (test_db, writer) = runtime.block_on(harness::database());
    let proxy = runtime.block_on(FragmentingProxy::start(&test_db.config()));
    let db = Database::connect(&format!("{} {params}", proxy.url(&test_db))).expect("the proxy's URL");
    harness::explore(
        "model-based run, answers in pieces",
        cases,
        &ops::program(steps, ops::op()),
        |program, counts| runtime.block_on(runner::run(&db, &writer, program, counts)),
    );
}

#[test]
fn random_programs_behave_as_the_model_says_with_answers_in_pieces() {
    random_programs_with_answers_in_pieces("");
}

#[test]
fn random_programs_behave_as_the_model_says_with_answers_in_pieces_and_unnamed_statements() {
    random_programs_with_answers_in_pieces("statement_mode=unnamed");
}

// The shrunk programs of the failures found, kept as regression tests.

/// A row switch (an unversioned child deleted and added again with its key)
/// whose row another writer had deleted failed with `StaleData`, where the
/// delete and insert it stands for would both have succeeded.
#[test]
fn a_row_switch_over_a_row_deleted_meanwhile_inserts_it() {
    run_programs(&[vec![
        Op::GetMany { table: Table::Child, keys: vec![155] },
        Op::Delete { handle: 0 },
        Op::AddAll { table: Table::Child, seeds: vec![200] },
        Op::WriterDelete { table: Table::Child, pick: 14 },
        Op::Get { table: Table::Parent, key: 0 },
    ]]);
}

/// Two adds of a deleted row's key became two row switches of one row, in
/// one upsert (which PostgreSQL refuses) where the second add must fail on
/// the key as it would after the delete.
#[test]
fn two_adds_of_a_deleted_rows_key_fail_on_the_key() {
    run_programs(&[vec![
        Op::Add { table: Table::Pair, seed: 9 },
        Op::WriterDelete { table: Table::Pair, pick: 0 },
        Op::Get { table: Table::Parent, key: 110 },
        Op::AddAll { table: Table::Pair, seeds: vec![177, 12] },
        Op::Add { table: Table::Pair, seed: 159 },
        Op::Delete { handle: 28 },
        Op::Flush,
    ]]);
}

/// A loaded child linked to a pending parent, then both deleted: the model
/// took the link to a parent that will never be inserted for an error, but
/// the child is not written, so the flush (deleting the child) succeeds.
#[test]
fn a_deleted_child_linked_to_a_forgotten_parent_is_just_deleted() {
    run_programs(&[vec![
        Op::GetMany { table: Table::Parent, keys: vec![84] },
        Op::LoadChildren { parents: vec![0], sponsor: false },
        Op::Add { table: Table::Account, seed: 0 },
        Op::Add { table: Table::Parent, seed: 0 },
        Op::SetParent { child: 0, parent: 13, sponsor: false },
        Op::Delete { handle: 129 },
        Op::Delete { handle: 143 },
        Op::Get { table: Table::Parent, key: 1 },
    ]]);
}

/// A child added with the key of one the session had loaded, whose row
/// another writer deleted: the insert succeeded and the loaded handle left
/// the session unnoticed (its later writes would never be flushed). The
/// flush now refuses the second handle of one row.
#[test]
fn a_new_row_with_a_tracked_key_is_refused_when_its_insert_succeeds() {
    run_programs(&[vec![
        Op::Get { table: Table::Child, key: 255 },
        Op::AddAll { table: Table::Child, seeds: vec![62, 40] },
        Op::WriterDelete { table: Table::Child, pick: 20 },
        Op::GetMany { table: Table::Parent, keys: vec![8] },
        Op::Refresh { handle: 255 },
    ]]);
}

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

/// An entity inserted and then deleted inside a savepoint is detached at
/// its rollback with the values the application gave it, the change
/// written before the delete included.
#[test]
fn an_entity_inserted_and_deleted_inside_a_savepoint_keeps_its_values_at_the_rollback() {
    run_programs(&[vec![
        Op::BeginNested,
        Op::Add { table: Table::Account, seed: 0 },
        Op::Flush,
        Op::Write { handle: 0, field: 0, value: 1 },
        Op::Delete { handle: 0 },
        Op::Flush,
        Op::RollbackNested { level: 0 },
    ]]);
}

/// Two pending children with one key, the first linked to a pending
/// parent, the second naming a parent that does not exist: the flush
/// inserts the second first (it waits for no key) and fails on its foreign
/// key before the first collides with it. The model expected only the
/// unique violation (found by the long release run).
#[test]
fn a_duplicate_insert_may_fail_on_its_foreign_key_first() {
    run_programs(&[vec![
        // Child 5 of parent 1.
        Op::AddAll { table: Table::Child, seeds: vec![164] },
        Op::Add { table: Table::Parent, seed: 2 },
        Op::SetParent { child: 0, parent: 0, sponsor: false },
        // Child 5 again, of parent 4, which does not exist.
        Op::Add { table: Table::Child, seed: 59 },
        Op::SetParent { child: 12, parent: 0, sponsor: false },
        Op::Flush,
    ]]);
}

/// A child marked for deletion, then linked to a pending parent: the flush
/// deletes its row and fills nothing into it, so its instance keeps the
/// key of its old parent (found by the model-based run).
#[test]
fn a_link_set_on_a_child_marked_for_deletion_fills_nothing_in() {
    run_programs(&[vec![
        Op::GetMany { table: Table::Child, keys: vec![235] },
        Op::Write { handle: 0, field: 0, value: 0 },
        Op::AddAll { table: Table::Account, seeds: vec![0, 0, 0] },
        Op::Add { table: Table::Account, seed: 0 },
        Op::Add { table: Table::Account, seed: 0 },
        Op::Add { table: Table::Parent, seed: 77 },
        Op::Delete { handle: 238 },
        Op::SetParent { child: 0, parent: 0, sponsor: false },
        Op::Get { table: Table::Parent, key: 0 },
    ]]);
}

//! The unit of work: collect what changed, send it as a few batched
//! statements in one round trip, and apply the results to the objects only
//! after every statement succeeded.
//!
//! Per table, [`plan`] builds one statement per operation and set of written
//! columns, each with one array parameter per column, so the statement count
//! does not depend on the number of rows. This module orders them (inserts,
//! then updates, then deletes) and runs them as one pipelined batch.

mod plan;

use tracing::Instrument;

pub(crate) use plan::{plan_table, TablePlan};

use crate::connection::{Outcome, SessionConnection};
use crate::error::{Error, Result};
use crate::identity::Registries;
use crate::stats::SessionStats;
use plan::TableOutcomes;

/// How the flush ends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum FlushEnd {
    /// Inside a savepoint: a failed flush is rolled back to it and the
    /// session stays usable with its work still pending.
    KeepOpen,
    /// As part of commit: the transaction commits with it, or rolls back.
    Commit,
}

/// Where each statement's outcome goes back to.
#[derive(Clone, Copy)]
enum Phase {
    Insert,
    Update,
    Delete,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Insert => "insert",
            Phase::Update => "update",
            Phase::Delete => "delete",
        }
    }
}

pub(crate) async fn flush(
    registries: &mut Registries,
    connection: &mut SessionConnection,
    stats: &mut SessionStats,
    end: FlushEnd,
) -> Result<()> {
    let mut plans: Vec<(usize, Box<dyn TablePlan>)> = Vec::new();
    for (index, registry) in registries.all.iter().enumerate() {
        if let Some(plan) = registry.plan()? {
            plans.push((index, plan));
        }
    }
    if plans.is_empty() {
        return match end {
            FlushEnd::Commit => connection.finish("COMMIT", stats).await,
            FlushEnd::KeepOpen => Ok(()),
        };
    }
    let span = tracing::debug_span!("orm.flush", tables = plans.len(), statements = tracing::field::Empty);
    async move {
        let (statements, routes) = order_statements(&mut plans);
        tracing::Span::current().record("statements", statements.len());
        // Updates and deletes are checked for matched rows before the
        // transaction may commit or the savepoint be released.
        let verify_first = plans.iter().any(|(_, plan)| plan.needs_verification());
        let savepoint = connection.reopen_flush_savepoint();
        let (before, after) = match end {
            FlushEnd::KeepOpen => (Some(savepoint.as_str()), None),
            FlushEnd::Commit => (None, (!verify_first).then_some("COMMIT")),
        };
        let outcomes = match connection.run_batch(before, &statements, after, stats).await {
            Ok(outcomes) => outcomes,
            Err(error) => return Err(recover(connection, stats, end, after.is_some(), error).await),
        };
        let mut per_table: Vec<TableOutcomes> = plans.iter().map(|_| TableOutcomes::default()).collect();
        for ((table, phase), outcome) in routes.into_iter().zip(outcomes) {
            let rows = match &outcome {
                Outcome::Rows(rows) => rows.len() as u64,
                Outcome::Count(count) => *count,
            };
            tracing::debug!(table = plans[table].1.meta().table, operation = phase.name(), rows, "flushed");
            let target = &mut per_table[table];
            match phase {
                Phase::Insert => target.inserts.push(outcome),
                Phase::Update => target.updates.push(outcome),
                Phase::Delete => target.deletes.push(outcome),
            }
        }
        if let Err(error) = plans.iter().zip(&per_table).try_for_each(|((_, plan), outcomes)| plan.verify(outcomes)) {
            return Err(recover(connection, stats, end, after.is_some(), error).await);
        }
        match (end, after.is_some()) {
            (FlushEnd::Commit, true) => connection.ended(None),
            (FlushEnd::Commit, false) => connection.finish("COMMIT", stats).await?,
            (FlushEnd::KeepOpen, _) => {}
        }
        for ((index, plan), outcomes) in plans.into_iter().zip(per_table) {
            plan.apply(outcomes, registries.all[index].as_mut())?;
        }
        Ok(())
    }
    .instrument(span)
    .await
}

/// Flattens the plans into wire order: inserts parents first, then updates,
/// then deletes children first. Returns each statement's route back to its
/// table and phase.
fn order_statements(
    plans: &mut [(usize, Box<dyn TablePlan>)],
) -> (Vec<crate::connection::Statement>, Vec<(usize, Phase)>) {
    let taken: Vec<_> = plans.iter_mut().map(|(_, plan)| plan.take_statements()).collect();
    let mut statements = Vec::new();
    let mut routes = Vec::new();
    let mut inserts = Vec::new();
    let mut updates = Vec::new();
    let mut deletes = Vec::new();
    for (table, parts) in taken.into_iter().enumerate() {
        inserts.extend(parts.inserts.into_iter().map(|s| (table, Phase::Insert, s)));
        updates.extend(parts.updates.into_iter().map(|s| (table, Phase::Update, s)));
        deletes.push(parts.deletes.into_iter().map(move |s| (table, Phase::Delete, s)));
    }
    for (table, phase, statement) in inserts.into_iter().chain(updates).chain(deletes.into_iter().rev().flatten()) {
        routes.push((table, phase));
        statements.push(statement);
    }
    (statements, routes)
}

/// Undoes a failed flush on the server and returns its error. Inside a
/// session the transaction goes back to the flush savepoint and stays
/// usable; in commit it is rolled back and over.
async fn recover(
    connection: &mut SessionConnection,
    stats: &mut SessionStats,
    end: FlushEnd,
    commit_was_sent: bool,
    error: Error,
) -> Error {
    tracing::debug!(%error, "flush failed");
    match end {
        FlushEnd::KeepOpen => {
            if let Err(recovery) = connection.recover_flush_savepoint(stats).await {
                tracing::warn!(%recovery, "could not roll back to the flush savepoint");
            }
        }
        FlushEnd::Commit if commit_was_sent => connection.ended(Some(&error)),
        FlushEnd::Commit => {
            if let Err(rollback) = connection.finish("ROLLBACK", stats).await {
                tracing::warn!(%rollback, "rollback after a failed commit failed");
            }
        }
    }
    error
}

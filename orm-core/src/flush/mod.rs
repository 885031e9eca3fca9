//! The unit of work: collect what changed, send it as a few batched
//! statements, and apply the results to the objects only after every
//! statement succeeded.
//!
//! Per table, [`plan`] builds one statement per operation and set of written
//! columns, each with one array parameter per column, so the statement count
//! does not depend on the number of rows. This module orders them (inserts
//! parents first, then updates, then deletes children first; see [`order`])
//! and runs them as one pipelined batch. Only keys the database generates
//! cost more round trips: a child linked to a pending parent waits for the
//! insert that returns the parent's key, and the post-update that breaks a
//! reference cycle waits for the keys of the rows it updates.

mod copy;
mod copy_update;
mod order;
mod plan;

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use smallvec::SmallVec;

use tracing::Instrument;

use copy::CopyTarget;
pub(crate) use copy::CopyTargets;
pub use copy::DEFAULT_COPY_THRESHOLD;
pub use copy_update::DEFAULT_COPY_UPDATE_THRESHOLD;
use order::PerTable;
use plan::Unbound;
pub(crate) use plan::{plan_table, PlanScope, TablePlan};

use crate::connection::{Outcome, SessionConnection, Statement};
use crate::entity::{ColumnSet, EntityMeta};
use crate::error::{Error, Result};
use crate::identity::{LinkState, Registries};
use crate::poll_budget::ROWS_PER_YIELD;
use crate::stats::SessionStats;
use crate::tracked::AddressSet;
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
    Copy,
    Insert,
    Update,
    Delete,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Copy => "copy",
            Phase::Insert => "insert",
            Phase::Update => "update",
            Phase::Delete => "delete",
        }
    }
}

/// What is kept beside each statement of a round trip, inline for the few
/// a request's flush sends.
type Few<T> = SmallVec<[T; 2]>;

/// One table's part of one round trip, and what it produced.
struct Sent {
    registry: usize,
    plan: Box<dyn TablePlan>,
    outcomes: TableOutcomes,
}

pub(crate) async fn flush(
    registries: &mut Registries,
    connection: &mut SessionConnection,
    stats: &mut SessionStats,
    end: FlushEnd,
) -> Result<()> {
    connection.poison_if_applying();
    let span = flush_span(end);
    let before = *stats;
    let result = if registries.has_pending_work() {
        connection.begin_flush_with_work();
        // Boxed: planning and sending keep several KiB of state across their
        // awaits, which every caller's future would otherwise hold and move,
        // also for the commit of a unit of work that only read.
        Box::pin(run(registries, connection, stats, end)).instrument(span.clone()).await
    } else {
        // The common case of a read-only unit of work, and of the autoflush
        // before each query: nothing to order, plan or send.
        // Pinned where it is, not copied into the span's wrapper.
        std::pin::pin!(finish_empty(connection, stats, end)).instrument(span.clone()).await
    };
    connection.set_applying(false);
    span.record("statements", stats.statements - before.statements);
    span.record("round_trips", stats.round_trips - before.round_trips);
    // Only a flush with work leaves state in the registries, also one cut
    // off before it ended (its future dropped), which is ended here then.
    if connection.take_unended_flush() {
        for registry in &mut registries.all {
            registry.end_flush(result.is_ok());
        }
    }
    result
}

/// A flush that has nothing to do and nothing to end, done at once
/// without a future: the autoflush before each load of a session that
/// only reads. Its span is there as for any flush, with nothing sent.
/// `false` (and nothing done) when there is something to flush: then
/// call [`flush`].
pub(crate) fn flush_nothing(registries: &Registries, connection: &SessionConnection) -> bool {
    if registries.has_pending_work() || connection.flush_unended() {
        return false;
    }
    let span = flush_span(FlushEnd::KeepOpen);
    span.record("statements", 0);
    span.record("round_trips", 0);
    let _entered = span.enter();
    true
}

fn flush_span(end: FlushEnd) -> tracing::Span {
    tracing::debug_span!(
        "orm.flush",
        commit = end == FlushEnd::Commit,
        statements = tracing::field::Empty,
        round_trips = tracing::field::Empty
    )
}

async fn run(
    registries: &mut Registries,
    connection: &mut SessionConnection,
    stats: &mut SessionStats,
    end: FlushEnd,
) -> Result<()> {
    let metas: PerTable<_> = registries.all.iter().map(|r| r.meta()).collect();
    let (order, cyclic, deferred) = order::flush_order(&metas);
    // Pending inserts already sent by an earlier round trip of this flush.
    let mut inserted: HashMap<usize, AddressSet> = HashMap::new();
    let mut sent: Vec<Sent> = Vec::new();
    let mut first = true;
    // Whether COMMIT went out with the last round trip.
    let mut committed = false;
    let nothing = AddressSet::default();
    let mut copy_next: Option<PendingCopy> = None;
    // Asked before anything is sent: between round trips the transaction
    // holds rows the objects do not show yet, and takes no other statement.
    let candidates = copy_candidates(registries, connection, &deferred);
    let copy_targets = copy_targets(registries.all.len(), connection, stats, candidates).await?;
    for registry in &mut registries.all {
        // A flush cut off earlier (its future dropped) never ended.
        registry.end_flush(false);
        registry.begin_flush();
    }
    loop {
        let resolved: Result<PerTable<LinkState>> =
            registries.all.iter().zip(&deferred).map(|(r, &deferred)| r.resolve_links(registries, deferred)).collect();
        let links = match resolved {
            Ok(links) => links,
            Err(error) if !first => return Err(recover(connection, stats, end, false, error).await),
            Err(error) => return Err(error),
        };
        // A post-update names its rows by key: rows whose keys the database
        // generates must have come back from an earlier round trip.
        let keys_awaited = registries.all.iter().enumerate().any(|(index, registry)| {
            deferred[index] != 0
                && metas[index].key_columns().any(|k| metas[index].columns[k].generated)
                && registry.has_inserts_besides(inserted.get(&index).unwrap_or(&nothing))
        });
        let copying = choose_copy(registries, &copy_targets, &order, &links, &inserted);
        // A table that takes keys now sends its rows in another round trip.
        let last = !keys_awaited && !links.iter().any(|l| l.unresolved) && copying.is_none();
        // One `COPY` a round trip, first in it: none into a temporary table
        // behind the `COPY` of inserts whose keys the last round trip took.
        let copy_update =
            connection.copy_targets().update_threshold().filter(|_| copy_allowed(connection) && copy_next.is_none());
        let scopes = Scopes { links: &links, inserted: &inserted, deferred: &deferred, last, copying: &copying };
        let planned = plan_round(registries, &order, &scopes, copy_update);
        let mut round = match planned.and_then(|round| check_cycles(&round, &cyclic, &metas).map(|()| round)) {
            Ok(round) => round,
            // Earlier round trips of this flush wrote rows: undo them.
            Err(error) if !first => return Err(recover(connection, stats, end, false, error).await),
            Err(error) => return Err(error),
        };
        if round.is_empty() && copy_next.is_none() {
            if !last {
                let error = stuck(registries, &links);
                return Err(if first { error } else { recover(connection, stats, end, false, error).await });
            }
            if first {
                // Written entities turned out unchanged: nothing to write.
                return finish_empty(connection, stats, end).await;
            }
        } else {
            let verify = last && sent.iter().chain(&round).any(|s| s.plan.needs_verification());
            let alone = first && last && end == FlushEnd::Commit && !verify && runs_alone(&mut round, connection);
            let (mut unbound, routes) = order_statements(&mut round);
            let copy_sent = copy_next.take().map(|copy| copy.lead(&mut unbound));
            // Bound before the savepoint is named: nothing is sent if binding fails.
            let statements = match bind(unbound).await {
                Ok(statements) => statements,
                Err(error) if !first => return Err(recover(connection, stats, end, false, error).await),
                Err(error) => return Err(error),
            };
            if connection.read_only() {
                // Before anything is sent, or the flush's savepoint is
                // taken for open: the work stays pending.
                return Err(Error::ReadOnlySession);
            }
            let savepoint =
                if first && end == FlushEnd::KeepOpen { Some(connection.reopen_flush_savepoint()) } else { None };
            let commit = (last && end == FlushEnd::Commit && !verify && !alone).then_some(connection.commit_sql());
            connection.set_applying(false);
            let result = if alone {
                connection.run_alone(&statements, stats).await
            } else {
                connection.run_batch(with_copy_prefix(savepoint, &round).as_deref(), &statements, commit, stats).await
            };
            // From here until the flush ends, what the transaction holds is
            // not yet on the objects, and the flush yields to the runtime.
            connection.set_applying(true);
            // Sent alone, the statement is its commit.
            committed = (alone || commit.is_some()) && connection.batch_sent();
            if let Err(error) = result.and_then(|outcomes| deliver(&mut round, routes, outcomes, copy_sent, stats)) {
                if alone && !committed {
                    // Not sent, so nothing written; but the connection may
                    // sit in a transaction nobody knew of, which `ended`
                    // rolls back before the pool hands it out again.
                    connection.ended(Some(&error));
                    return Err(error);
                }
                return Err(recover(connection, stats, end, committed, error).await);
            }
            if !last {
                let keys_wanted = links.iter().any(|l| l.unresolved) || deferred.iter().any(|&d| d != 0);
                match carry_over(&mut round, registries, &mut inserted, keys_wanted) {
                    Ok(copy) => copy_next = copy,
                    Err(error) => return Err(recover(connection, stats, end, false, error).await),
                }
            }
            first = false;
            if sent.is_empty() {
                // The first round trip's list becomes the flush's, as it is
                // for a flush of one round trip: no second list.
                sent = round;
            } else {
                sent.extend(round);
            }
        }
        if last {
            break;
        }
    }
    conclude(registries, connection, stats, end, sent, committed).await
}

/// Whether a commit whose only round trip is `round` sends it as one
/// statement alone, its own transaction (see
/// [`SessionConnection::run_alone`]): the server then runs no `BEGIN`, mark
/// or `COMMIT`, and the statement no guard. If so, the plan's statement is
/// made the one that runs alone.
fn runs_alone(round: &mut [Sent], connection: &SessionConnection) -> bool {
    match round {
        [part] => connection.may_run_alone() && part.plan.run_alone(),
        _ => false,
    }
}

/// What the plans of one round trip share: each table's links, inserts
/// sent earlier and deferred columns, whether it is the flush's last, and
/// the table whose inserts take keys for a `COPY`.
struct Scopes<'a> {
    links: &'a [LinkState],
    inserted: &'a HashMap<usize, AddressSet>,
    deferred: &'a [ColumnSet],
    last: bool,
    copying: &'a Option<(usize, Arc<CopyTarget>)>,
}

/// Plans one round trip, table by table in `order`. `copy_update` (see
/// [`PlanScope::copy_update`]) goes to each table until one takes it.
fn plan_round(
    registries: &Registries,
    order: &[usize],
    scopes: &Scopes<'_>,
    mut copy_update: Option<usize>,
) -> Result<Vec<Sent>> {
    let nothing = AddressSet::default();
    order.iter().try_fold(Vec::new(), |mut round, &index| {
        let scope = PlanScope {
            waiting: &scopes.links[index].waiting,
            inserted: scopes.inserted.get(&index).unwrap_or(&nothing),
            last: scopes.last,
            deferred: scopes.deferred[index],
            preview: false,
            copy: scopes.copying.as_ref().filter(|(chosen, _)| *chosen == index).map(|(_, target)| target),
            copy_update,
        };
        if let Some(plan) = registries.all[index].plan(&scope)? {
            copy_update = copy_update.filter(|_| plan.copy_prefix().is_none());
            round.push(Sent { registry: index, plan, outcomes: TableOutcomes::default() });
        }
        Ok(round)
    })
}

/// Checks what the statements of a flush returned, ends the transaction if
/// the flush is a commit (`committed`: its `COMMIT` was sent already), and
/// only then applies the results to the objects.
async fn conclude(
    registries: &mut Registries,
    connection: &mut SessionConnection,
    stats: &mut SessionStats,
    end: FlushEnd,
    mut sent: Vec<Sent>,
    committed: bool,
) -> Result<()> {
    // Large flushes come back with a row per insert: every step over them
    // below goes a chunk of rows at a time, yielding to the runtime between
    // chunks, so that no poll applies a whole batch. A flush that applies
    // at most one chunk of rows (a web request's) is checked and applied in the
    // poll that received it: a yield there would cost every small commit a
    // trip through the scheduler.
    let applied: usize = sent.iter().map(|part| part.outcomes.applied_rows()).sum();
    let verified =
        sent.iter_mut().try_for_each(|part| part.plan.verify(&part.outcomes, registries.all[part.registry].as_ref()));
    let checked = async {
        verified?;
        if applied > ROWS_PER_YIELD {
            tokio::task::yield_now().await;
        }
        for part in &sent {
            let mut from = 0;
            while !part.plan.set_generated(&part.outcomes, from)? {
                from += ROWS_PER_YIELD;
                tokio::task::yield_now().await;
            }
        }
        Ok(())
    }
    .await;
    if let Err(error) = checked {
        if committed {
            connection.ended(None);
            return Err(Error::AfterCommit(Box::new(error)));
        }
        return Err(recover(connection, stats, end, false, error).await);
    }
    match end {
        FlushEnd::Commit if committed => connection.ended(None),
        FlushEnd::Commit => {
            connection.set_applying(false);
            connection.finish(connection.commit_sql(), stats).await?;
        }
        FlushEnd::KeepOpen => {}
    }
    // The flush yielded since `verify`, and a task of this thread may have
    // taken a guard meanwhile. Each part's `apply` borrows all its objects
    // before changing any, so a failure of the first part changes nothing;
    // with several parts, all are checked first, with no await between the
    // check and the changes. Either way a failure there still leaves the
    // database and the objects agreeing.
    let checked_free = if sent.len() > 1 { sent.iter().try_for_each(|part| part.plan.check_free()) } else { Ok(()) };
    if let Err(error) = checked_free {
        return Err(failed_before_changes(connection, stats, end, error).await);
    }
    let mut applied = Ok(());
    // Which parts were applied, inline for a request's few: those enter
    // the identity map.
    let mut entering: Few<bool> = Few::with_capacity(sent.len());
    for (index, part) in sent.iter_mut().enumerate() {
        match part.plan.apply(registries.all[part.registry].as_mut()) {
            Ok(()) => entering.push(true),
            Err(error) if index == 0 => return Err(failed_before_changes(connection, stats, end, error).await),
            // Only another thread's guard, taken in the instant since the
            // check above and held for over a second, can fail this.
            Err(error) => {
                entering.push(false);
                applied = Err(error);
            }
        }
    }
    for part in sent.iter_mut().zip(entering).filter_map(|(part, entering)| entering.then_some(part)) {
        let registry = registries.all[part.registry].as_mut();
        let mut from = 0;
        while !part.plan.enter_inserted(registry, from) {
            from += ROWS_PER_YIELD;
            tokio::task::yield_now().await;
        }
        // A row per insert came back; freeing them is a chunk at a time too.
        for outcome in &mut part.outcomes.inserts {
            if let Outcome::Rows(rows) = outcome {
                while rows.len() > ROWS_PER_YIELD {
                    rows.truncate(rows.len() - ROWS_PER_YIELD);
                    tokio::task::yield_now().await;
                }
            }
        }
    }
    applied.map_err(|error| {
        if end == FlushEnd::Commit {
            return Error::AfterCommit(Box::new(error));
        }
        // The transaction holds the rows of every plan, but the objects of
        // the plan that failed still look pending: flushing again would
        // write them twice, so only a rollback is left.
        connection.poison();
        error
    })
}

/// The error of a flush whose objects could not be changed, none of them
/// changed yet: inside a session the database goes back to the flush
/// savepoint, so both agree again; a commit is over, its objects unchanged.
async fn failed_before_changes(
    connection: &mut SessionConnection,
    stats: &mut SessionStats,
    end: FlushEnd,
    error: Error,
) -> Error {
    match end {
        FlushEnd::KeepOpen => recover(connection, stats, end, false, error).await,
        FlushEnd::Commit => Error::AfterCommit(Box::new(error)),
    }
}

/// Ends a flush that has nothing to write.
async fn finish_empty(connection: &mut SessionConnection, stats: &mut SessionStats, end: FlushEnd) -> Result<()> {
    match end {
        FlushEnd::Commit => connection.finish(connection.commit_sql(), stats).await,
        FlushEnd::KeepOpen => Ok(()),
    }
}

/// The tables with at least the `COPY` threshold of plain inserts pending,
/// and the threshold.
fn copy_candidates(
    registries: &Registries,
    connection: &SessionConnection,
    deferred: &[ColumnSet],
) -> Vec<(usize, &'static EntityMeta, usize)> {
    let Some(threshold) = connection.copy_targets().threshold().filter(|_| copy_allowed(connection)) else {
        return Vec::new();
    };
    let nothing = AddressSet::default();
    registries
        .all
        .iter()
        .enumerate()
        .filter(|&(index, registry)| {
            deferred[index] == 0 && registry.plain_inserts_besides(&nothing, &nothing) >= threshold
        })
        .map(|(index, registry)| (index, registry.meta(), threshold))
        .collect()
}

/// Whether batches, of inserts (see [`copy`]) or of updates (see
/// [`copy_update`]), may go by `COPY` on this connection at all. None does
/// in the unnamed statement mode: PgBouncer (1.18, transaction mode) takes
/// the Sync the driver sends ahead of a COPY's data for the end of the
/// transaction, and hands the server connection to another client in the
/// middle of the COPY.
fn copy_allowed(connection: &SessionConnection) -> bool {
    !connection.read_only() && !connection.unnamed_statements()
}

/// The simple-query prefix of a round trip: the flush savepoint, if this
/// round trip opens it, then what a plan's temporary table needs (see
/// [`TablePlan::copy_prefix`]), which must run before the round trip's
/// statements are prepared.
fn with_copy_prefix(savepoint: Option<String>, round: &[Sent]) -> Option<String> {
    let Some(prefix) = round.iter().find_map(|part| part.plan.copy_prefix()) else { return savepoint };
    Some(match savepoint {
        Some(savepoint) => format!("{savepoint}; {prefix}"),
        None => prefix.to_owned(),
    })
}

/// Per table, where its plain inserts may go by `COPY` (see [`copy`]),
/// and from how many on, for the `candidates` that allow it; empty, and
/// not allocated, when there are none, as for a short request's flush.
async fn copy_targets(
    tables: usize,
    connection: &mut SessionConnection,
    stats: &mut SessionStats,
    candidates: Vec<(usize, &'static EntityMeta, usize)>,
) -> Result<Vec<Option<(usize, Arc<CopyTarget>)>>> {
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    // Boxed, as `recover` is: only a flush with a large batch looks up
    // its `COPY` targets.
    Box::pin(async move {
        let mut targets = vec![None; tables];
        for (index, meta, threshold) in candidates {
            targets[index] = CopyTargets::target(connection, stats, meta).await?.map(|target| (threshold, target));
        }
        Ok(targets)
    })
    .await
}

/// The table, if any, whose plain inserts this round trip takes keys for,
/// to `COPY` them in the next: the first in insert order whose batch
/// reaches the threshold and whose table allows it. One a round trip: its
/// `COPY` must go first in the next one.
fn choose_copy(
    registries: &Registries,
    targets: &[Option<(usize, Arc<CopyTarget>)>],
    order: &[usize],
    links: &[LinkState],
    inserted: &HashMap<usize, AddressSet>,
) -> Option<(usize, Arc<CopyTarget>)> {
    let nothing = AddressSet::default();
    order.iter().find_map(|&index| {
        let (threshold, target) = targets.get(index)?.as_ref()?;
        let sent = inserted.get(&index).unwrap_or(&nothing);
        (registries.all[index].plain_inserts_besides(&links[index].waiting, sent) >= *threshold)
            .then(|| (index, target.clone()))
    })
}

/// The `COPY` of the rows whose keys a round trip took: the first
/// statement of the next round trip.
struct PendingCopy {
    statement: Unbound,
    /// How many rows it writes.
    rows: usize,
    meta: &'static EntityMeta,
}

impl PendingCopy {
    /// Puts the `COPY` first in its round trip's `statements`, behind
    /// nothing that could fail: the driver loses track of the connection
    /// if a `COPY` fails to start (see `connection::copy_rows`). Returns how
    /// many rows it writes, and into which table.
    fn lead(self, statements: &mut Vec<Unbound>) -> (usize, &'static EntityMeta) {
        statements.insert(0, self.statement);
        (self.rows, self.meta)
    }
}

/// Hands each statement's outcome to its table's plan, after checking the
/// row count of the round trip's `COPY` (its first statement), if any.
fn deliver(
    round: &mut [Sent],
    routes: Few<(usize, Phase)>,
    mut outcomes: Vec<Outcome>,
    copied: Option<(usize, &'static EntityMeta)>,
    stats: &mut SessionStats,
) -> Result<()> {
    if let Some((rows, meta)) = copied {
        check_copied(&outcomes.remove(0), rows, meta)?;
        stats.copied_rows += rows as u64;
    }
    for ((_, phase), outcome) in routes.iter().zip(&outcomes) {
        if let Phase::Copy = phase {
            stats.copied_rows += outcome.rows();
        }
    }
    route(round, routes, outcomes);
    Ok(())
}

/// What a round trip that is not the flush's last leaves to the next: the
/// keys the inserts generated, for children that wait for them and for
/// post-updates (`keys_wanted`: a round trip that is not the last only
/// because it took keys for a `COPY` has neither to serve), the inserts it
/// sent (in `inserted`), and the `COPY` of the rows whose keys it took.
fn carry_over(
    round: &mut [Sent],
    registries: &mut Registries,
    inserted: &mut HashMap<usize, AddressSet>,
    keys_wanted: bool,
) -> Result<Option<PendingCopy>> {
    let mut copy = None;
    for part in round.iter_mut() {
        // First: a `COPY`'s keys are read there, for what follows.
        if let Some((statement, rows)) = part.plan.take_copy(&part.outcomes)? {
            copy = Some(PendingCopy { statement, rows, meta: part.plan.meta() });
        }
        if keys_wanted {
            part.plan.record_keys(&part.outcomes, registries.all[part.registry].as_mut())?;
        }
    }
    for part in round.iter() {
        inserted.entry(part.registry).or_default().extend(part.plan.inserted());
    }
    Ok(copy)
}

/// Fails if a `COPY` wrote another number of rows than it was given.
fn check_copied(outcome: &Outcome, expected: usize, meta: &'static EntityMeta) -> Result<()> {
    let inserted = usize::try_from(outcome.rows()).unwrap_or(usize::MAX);
    if inserted == expected {
        return Ok(());
    }
    Err(Error::RowsNotInserted { entity: meta.name, table: meta.table, expected, inserted })
}

/// Refuses a round trip that inserts into two tables referencing each
/// other through columns no post-update can set: neither insert can go first.
fn check_cycles(round: &[Sent], cyclic: &[usize], metas: &[&'static crate::entity::EntityMeta]) -> Result<()> {
    let inserting: Vec<usize> =
        round.iter().filter(|s| s.plan.inserts_rows() && cyclic.contains(&s.registry)).map(|s| s.registry).collect();
    if inserting.len() > 1 {
        return Err(Error::DependencyCycle { tables: inserting.iter().map(|&i| metas[i].table).collect() });
    }
    Ok(())
}

/// The error when linked children wait for parents that no round trip
/// will insert (a parent was expunged, or parents wait for each other).
fn stuck(registries: &Registries, links: &[LinkState]) -> Error {
    let tables = links
        .iter()
        .zip(&registries.all)
        .filter(|(links, _)| links.unresolved)
        .map(|(_, registry)| registry.meta().table)
        .collect();
    Error::DependencyCycle { tables }
}

/// Makes the array parameters the plans left to the flush, yielding to the
/// runtime after each chunk of rows so that no poll binds a whole batch.
async fn bind(unbound: Vec<Unbound>) -> Result<Vec<Statement>> {
    let mut statements = Vec::with_capacity(unbound.len());
    for Unbound { mut statement, binding } in unbound {
        if let Some(mut binding) = binding {
            // The first yield ends the poll that planned the flush.
            loop {
                tokio::task::yield_now().await;
                if binding.bind_chunk()? {
                    break;
                }
            }
            binding.finish(&mut statement);
        }
        statements.push(statement);
    }
    Ok(statements)
}

/// Flattens a round trip's plans into wire order: inserts parents first,
/// then updates, then deletes children first. Returns each statement's
/// route back to its part of the round trip and phase.
fn order_statements(round: &mut [Sent]) -> (Vec<Unbound>, Few<(usize, Phase)>) {
    let mut taken: Few<_> = round.iter_mut().map(|part| part.plan.take_statements()).collect();
    // Filled in place, in wire order: a short request's flush pays for
    // `statements` only, and keeps `taken` and `routes` inline (the
    // statements themselves are large enough that moving them inline cost
    // as much as their lists' allocations).
    let count = taken.iter().map(|s| s.copies.len() + s.inserts.len() + s.updates.len() + s.deletes.len()).sum();
    let mut statements = Vec::with_capacity(count);
    let mut routes = Few::with_capacity(count);
    let mut add = |part: usize, phase: Phase, from: &mut Vec<Unbound>| {
        for statement in from.drain(..) {
            statements.push(statement);
            routes.push((part, phase));
        }
    };
    for (part, table) in taken.iter_mut().enumerate() {
        add(part, Phase::Copy, &mut table.copies);
    }
    for (part, table) in taken.iter_mut().enumerate() {
        add(part, Phase::Insert, &mut table.inserts);
    }
    for (part, table) in taken.iter_mut().enumerate() {
        add(part, Phase::Update, &mut table.updates);
    }
    for (part, table) in taken.iter_mut().enumerate().rev() {
        add(part, Phase::Delete, &mut table.deletes);
    }
    (statements, routes)
}

/// Hands each statement's outcome to its table's plan.
fn route(round: &mut [Sent], routes: Few<(usize, Phase)>, outcomes: Vec<Outcome>) {
    for ((part, phase), outcome) in routes.into_iter().zip(outcomes) {
        let target = &mut round[part];
        tracing::debug!(table = target.plan.meta().table, operation = phase.name(), rows = outcome.rows(), "flushed");
        match phase {
            Phase::Copy => target.outcomes.copies.push(outcome),
            Phase::Insert => target.outcomes.inserts.push(outcome),
            Phase::Update => target.outcomes.updates.push(outcome),
            Phase::Delete => target.outcomes.deletes.push(outcome),
        }
    }
}

/// Undoes a failed flush on the server and returns its error. Inside a
/// session the transaction goes back to the flush savepoint and stays
/// usable; in commit it is rolled back and over.
///
/// Boxed, as each path a flush takes only after a failure: a future has
/// room for everything it may await, and the commit of every short request
/// would otherwise carry and move the state of its rare paths.
fn recover<'a>(
    connection: &'a mut SessionConnection,
    stats: &'a mut SessionStats,
    end: FlushEnd,
    commit_was_sent: bool,
    error: Error,
) -> BoxFuture<'a, Error> {
    Box::pin(async move {
        tracing::debug!(%error, "flush failed");
        connection.set_applying(false);
        match end {
            FlushEnd::KeepOpen => {
                if let Err(recovery) = connection.recover_flush_savepoint(stats).await {
                    tracing::warn!(%recovery, "could not roll back to the flush savepoint");
                }
            }
            FlushEnd::Commit if commit_was_sent => {
                connection.ended(Some(&error));
                return error.after_commit_sent();
            }
            FlushEnd::Commit => {
                if let Err(rollback) = connection.finish("ROLLBACK", stats).await {
                    tracing::warn!(%rollback, "rollback after a failed commit failed");
                }
            }
        }
        error
    })
}

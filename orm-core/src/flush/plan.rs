//! Turning one table's pending work into batched statements, and applying
//! their results back to the tracked objects.

use std::borrow::Cow;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use parking_lot::RwLockWriteGuard;
use postgres_types::Kind;
use smallvec::SmallVec;

use super::copy::{self, CopyTarget};
use super::copy_update::{copy_update, CopyUpdate};
use crate::connection::{Outcome, Statement};
use crate::entity::{ColumnSet, Entity, EntityMeta};
use crate::error::{Error, Result};
use crate::identity::{ErasedRegistry, Registry};
use crate::poll_budget::ROWS_PER_YIELD;
use crate::session::PendingChanges;
use crate::sql;
use crate::statement_mode::ResultColumns;
use crate::tracked::{AddressSet, EntityState, Tracked};
use crate::transaction_mark::Guard;
use crate::types::ArrayChunks;
use crate::upsert::ConflictRule;

/// One table's statements, in the order the flush sends them.
#[derive(Default)]
pub(crate) struct TableStatements {
    /// `COPY`s into temporary tables, which go first in their round trip
    /// (see [`copy_update`](super::copy_update)).
    pub(crate) copies: Vec<Unbound>,
    pub(crate) inserts: Vec<Unbound>,
    pub(crate) updates: Vec<Unbound>,
    pub(crate) deletes: Vec<Unbound>,
}

/// A statement, and the binding that makes its array parameters if they
/// are left to the flush (see [`Binding`]).
pub(crate) struct Unbound {
    pub(crate) statement: Statement,
    pub(crate) binding: Option<Box<dyn Binding>>,
}

impl From<Statement> for Unbound {
    fn from(statement: Statement) -> Self {
        Unbound { statement, binding: None }
    }
}

/// The array parameters of a batch, bound [`ROWS_PER_YIELD`] rows at a time so
/// that the flush can yield to the runtime in between: binding 100,000 rows
/// at once held the thread for tens of milliseconds. No guard is held
/// between chunks, so other tasks can borrow the entities meanwhile; a
/// write to a row already bound keeps what was bound (see
/// [`EntityState::bind`]), and one to a row not bound yet is sent.
pub(crate) trait Binding: Send + Sync {
    /// Binds the next chunk of rows; true once every row is bound.
    fn bind_chunk(&mut self) -> Result<bool>;
    /// Puts what was bound into `statement`, after every chunk was bound:
    /// its parameters, one array per column, or the rows of its `COPY`.
    fn finish(self: Box<Self>, statement: &mut Statement);
}

/// [`bind_columns`], a chunk at a time.
struct ColumnBinding<T: Entity> {
    rows: Vec<Tracked<T>>,
    columns: Vec<usize>,
    flush: Option<u64>,
    /// What the statement sends, if it updates stored rows (see
    /// [`bind_all`]).
    updated: Option<UpdatedColumns>,
    /// Rows bound so far.
    bound: usize,
    /// Per column, one array for each chunk bound so far.
    chunks: Vec<Vec<crate::types::Param>>,
}

impl<T: Entity> ColumnBinding<T> {
    /// Binds new rows' columns `columns`.
    fn boxed(rows: &[Tracked<T>], columns: Vec<usize>, flush: Option<u64>) -> Box<dyn Binding> {
        Self::boxed_for(rows, columns, flush, None)
    }

    /// Binds columns `columns` of stored rows, for an update of those
    /// planned when the type's write log counted `planned_at` writes.
    fn boxed_update(rows: &[Tracked<T>], columns: Vec<usize>, flush: Option<u64>, planned_at: u64) -> Box<dyn Binding> {
        let updated = Some(UpdatedColumns { sent: column_set(&columns), planned_at });
        Self::boxed_for(rows, columns, flush, updated)
    }

    fn boxed_for(
        rows: &[Tracked<T>],
        columns: Vec<usize>,
        flush: Option<u64>,
        updated: Option<UpdatedColumns>,
    ) -> Box<dyn Binding> {
        let chunks = columns.iter().map(|_| Vec::with_capacity(rows.len().div_ceil(ROWS_PER_YIELD))).collect();
        Box::new(ColumnBinding { rows: rows.to_vec(), columns, flush, updated, bound: 0, chunks })
    }
}

/// The set of the columns `columns`.
pub(super) fn column_set(columns: &[usize]) -> ColumnSet {
    columns.iter().fold(0, |set, &column| set | 1 << column)
}

/// What an update sends of the stored rows it binds: the columns `sent`,
/// as planned when the type's write log counted `planned_at` writes
/// through handles.
#[derive(Clone, Copy)]
pub(super) struct UpdatedColumns {
    pub(super) sent: ColumnSet,
    pub(super) planned_at: u64,
}

impl<T: Entity> Binding for ColumnBinding<T> {
    fn bind_chunk(&mut self) -> Result<bool> {
        let end = self.rows.len().min(self.bound + ROWS_PER_YIELD);
        let arrays = bind_columns(&self.rows[self.bound..end], &self.columns, self.flush, self.updated)?;
        for (chunks, array) in self.chunks.iter_mut().zip(arrays) {
            chunks.push(array);
        }
        self.bound = end;
        Ok(end == self.rows.len())
    }

    fn finish(self: Box<Self>, statement: &mut Statement) {
        statement.params = self
            .chunks
            .into_iter()
            .map(|mut chunks| match chunks.pop() {
                Some(only) if chunks.is_empty() => only,
                last => {
                    chunks.extend(last);
                    Box::new(ArrayChunks(chunks))
                }
            })
            .collect();
    }
}

/// What those statements produced, in the same order. Inline: a table
/// sends at most a few statements of each kind, a request's one insert.
#[derive(Default)]
pub(crate) struct TableOutcomes {
    pub(crate) copies: Outcomes,
    pub(crate) inserts: Outcomes,
    pub(crate) updates: Outcomes,
    pub(crate) deletes: Outcomes,
}

/// The outcomes of one kind of a table's statements.
pub(crate) type Outcomes = SmallVec<[Outcome; 1]>;

impl TableOutcomes {
    /// How many rows the flush checks and applies to the objects after
    /// these statements: those they returned (`RETURNING`), and those an
    /// update or delete wrote (it returns only the ones it missed).
    pub(crate) fn applied_rows(&self) -> usize {
        self.inserts
            .iter()
            .chain(&self.updates)
            .chain(&self.deletes)
            .map(|outcome| match outcome {
                Outcome::Rows(rows) => rows.len(),
                Outcome::Count(_) => 0,
                Outcome::Unmatched { expected, .. } => usize::try_from(*expected).unwrap_or(usize::MAX),
            })
            .sum()
    }
}

/// Which part of a table's pending work one round trip of a flush carries.
pub(crate) struct PlanScope<'a> {
    /// Pending inserts waiting for a parent's key, by handle address.
    pub(crate) waiting: &'a AddressSet,
    /// Pending inserts sent by an earlier round trip of this flush.
    pub(crate) inserted: &'a AddressSet,
    /// The flush's last round trip, which also carries updates, deletes and
    /// post-updates.
    pub(crate) last: bool,
    /// Foreign-key columns on a reference cycle: inserted as NULL, then set
    /// by an UPDATE (a post-update) in the flush's last round trip, and set
    /// to NULL before the rows are deleted.
    pub(crate) deferred: ColumnSet,
    /// Only counting what a flush would do: the session must not change.
    pub(crate) preview: bool,
    /// The table takes the keys of its plain inserts from its sequence
    /// in this round trip, and `COPY`s the rows in the next (see
    /// [`copy`](super::copy)).
    pub(crate) copy: Option<&'a Arc<CopyTarget>>,
    /// The smallest batch of updates that goes by `COPY` into a temporary
    /// table (see [`copy_update`](super::copy_update)), if one may in this
    /// round trip: none may when another `COPY` goes first in it.
    pub(crate) copy_update: Option<usize>,
}

impl PlanScope<'_> {
    /// A look at everything pending, for [`Session::pending`](crate::Session::pending).
    pub(crate) fn preview(empty: &AddressSet) -> PlanScope<'_> {
        PlanScope {
            waiting: empty,
            inserted: empty,
            last: true,
            deferred: 0,
            preview: true,
            copy: None,
            copy_update: None,
        }
    }
}

/// One table's part of a flush, seen without its entity type.
pub(crate) trait TablePlan: Send + Sync {
    fn meta(&self) -> &'static EntityMeta;
    /// The statements to send; called once.
    fn take_statements(&mut self) -> TableStatements;
    /// How many entities and statements the plan covers.
    fn counts(&self) -> PendingChanges;
    /// Whether the results must be checked before the transaction may commit
    /// (updates and deletes can match fewer rows than they should).
    fn needs_verification(&self) -> bool;
    /// Makes the plan's statement run as the unit of work's only one,
    /// without `BEGIN` or `COMMIT` around it (see [`Guard::Alone`]), if it
    /// has a single statement that may: an insert (plain, or the upsert of
    /// one on-conflict rule) or a delete that nothing checks, which write
    /// all their rows or fail as a whole. False, and nothing changed,
    /// otherwise.
    fn run_alone(&mut self) -> bool;
    /// Whether the plan inserts rows.
    fn inserts_rows(&self) -> bool;
    /// The handle addresses of the entities the plan inserts.
    fn inserted(&self) -> Vec<usize>;
    /// The `COPY` of the rows whose keys this plan took from the sequence
    /// (see [`PlanScope::copy`]), and how many rows it writes; taken once,
    /// after the round trip that took the keys, before any other step reads
    /// those keys: it keeps them for them.
    fn take_copy(&mut self, outcomes: &TableOutcomes) -> Result<Option<(Unbound, usize)>>;
    /// What the round trip's simple-query prefix must run before its
    /// statements are prepared: the temporary table of an update batch
    /// that goes by `COPY`, created and emptied.
    fn copy_prefix(&self) -> Option<&str>;
    /// Keeps the keys the inserts generated, for children that wait for them
    /// in the flush's next round trip; the entities are not changed yet.
    fn record_keys(&mut self, outcomes: &TableOutcomes, registry: &mut dyn ErasedRegistry) -> Result<()>;
    /// Checks the inserted and matched row counts, and that no upsert met
    /// a row tracked through another handle; nothing is applied yet.
    fn verify(&mut self, outcomes: &TableOutcomes, registry: &dyn ErasedRegistry) -> Result<()>;
    /// Fails with [`Error::Borrowed`] if a guard is held on an object
    /// [`apply`](Self::apply) changes.
    fn check_free(&self) -> Result<()>;
    /// Stores the generated columns the inserts returned in the inserted
    /// entities `from..from + ROWS_PER_YIELD`, which stay pending until
    /// [`apply`](Self::apply). True once no inserted entity is left after them.
    fn set_generated(&self, outcomes: &TableOutcomes, from: usize) -> Result<bool>;
    /// Applies versions and snapshots to the objects, and moves them between
    /// pending and persistent, except that the inserted ones enter the
    /// identity map later, by [`enter_inserted`](Self::enter_inserted).
    /// Fails only if another thread took a guard on one of them since
    /// [`verify`](Self::verify) and holds it for over a second; the objects
    /// are then left as they were.
    fn apply(&mut self, registry: &mut dyn ErasedRegistry) -> Result<()>;
    /// Puts the inserted entities `from..from + ROWS_PER_YIELD` in the identity
    /// map, after [`apply`](Self::apply); true once none is left after them.
    /// Cannot fail: no guard is taken.
    fn enter_inserted(&mut self, registry: &mut dyn ErasedRegistry, from: usize) -> bool;
}

struct Plan<T: Entity> {
    statements: TableStatements,
    /// Entities to insert: first the `plain` ones, which one INSERT
    /// carries, then those added with an on-conflict rule, one upsert
    /// statement per rule, in `upserts` order.
    inserts: Vec<Tracked<T>>,
    plain: usize,
    /// Each upsert statement's rule, and how many entities it carries.
    upserts: Vec<(ConflictRule, usize)>,
    /// Per upserted entity (those after the first `plain` of `inserts`),
    /// the row its statement returned; `None` if `DO NOTHING` skipped it.
    /// Read from the outcomes once, by the first step that needs them.
    returned: Option<Vec<Option<T>>>,
    /// Whether an upserted row may be one the session tracks through
    /// another handle, which `verify` must refuse before the commit.
    check_clash: bool,
    /// Whether a plain insert, its key chosen by the application, may write
    /// a row the session tracks through another handle, which `verify`
    /// must refuse before the commit.
    check_tracked: bool,
    /// Written entities, grouped by the set of columns that changed.
    updates: Vec<Vec<Tracked<T>>>,
    /// Inserted entities whose reference-cycle columns a post-update sets.
    post_updated: Vec<Tracked<T>>,
    deletes: Vec<Tracked<T>>,
    /// Row switches: a pending insert replacing a pending delete of the same
    /// key, grouped by the columns that differ. A versioned entity's are
    /// written as an UPDATE of those columns per group, which checks the
    /// version (see [`switch_sends`]); an unversioned entity's as one
    /// upsert of them all (see [`switch_upsert`]).
    switches: Vec<(ColumnSet, Vec<RowSwitch<T>>)>,
    /// The rows the switches wrote, in the order of `switches`: read by
    /// `verify`, which every flush runs before `apply` takes them.
    switched_rows: Vec<T>,
    /// The keys the inserted entities enter the identity map under, in the
    /// order of `inserts`: set by `apply`, used by `enter_inserted`.
    /// Each is taken as its entity enters.
    inserted_keys: Vec<Option<T::Key>>,
    /// The columns the plain inserts write.
    insert_columns: ColumnSet,
    /// Where the plain inserts go by `COPY`, their keys taken first.
    copy: Option<Arc<CopyTarget>>,
    /// The keys the sequence gave the plain inserts that go by `COPY`, in
    /// their order: read once from the key statement's array, by
    /// `take_copy`, which every later step follows.
    sequence_keys: Option<Vec<T::Key>>,
    /// The flush that binds the rows, for the `COPY`'s binding.
    flush: Option<u64>,
    /// For the update batch that goes by `COPY` into a temporary table:
    /// the prefix that readies the table, and how many rows are copied.
    copy_update: Option<(String, usize)>,
}

/// A new entity taking over the row of a deleted one with the same key.
struct RowSwitch<T: Entity> {
    new: Tracked<T>,
    old: Tracked<T>,
    /// The row as the database holds it (the old entity as last loaded or
    /// flushed), whose version the UPDATE checks.
    stored: T,
}

/// The pending inserts of this round trip, and those among them that
/// replace a pending delete of the same key, grouped by changed columns.
type InsertsAndSwitches<T> = (Vec<Tracked<T>>, BTreeMap<ColumnSet, Vec<RowSwitch<T>>>);

/// Splits the pending inserts into plain inserts and row switches. An
/// insert whose key a pending delete frees would violate the key's unique
/// index if it ran before the delete; as SQLAlchemy does, it updates the
/// row instead, which keeps the statement count independent of the rows.
/// Row switches go in the flush's last round trip, with the deletes.
fn split_row_switches<T: Entity>(
    registry: &Registry<T>,
    scope: &PlanScope<'_>,
    unsent: impl Fn(&&Tracked<T>) -> bool,
) -> Result<InsertsAndSwitches<T>> {
    let meta = T::META;
    let mut switches: BTreeMap<ColumnSet, Vec<RowSwitch<T>>> = BTreeMap::new();
    if registry.pending_deletes.is_empty() || meta.key_columns().any(|k| meta.columns[k].generated) {
        return Ok((registry.pending_inserts.values().filter(unsent).cloned().collect(), switches));
    }
    // The pending delete each pending insert would replace, and how many
    // would replace each: a switch takes the place of one delete and one
    // insert. Two inserts of a deleted row's key are left plain, and the
    // delete too, so that the second fails on the key as it would after the
    // delete, instead of two switches of one row (one of them lost).
    let mut candidates = Vec::new();
    let mut claims: HashMap<usize, usize> = HashMap::new();
    for tracked in registry.pending_inserts.values() {
        let key = tracked.lock_read()?.current.key();
        let replaced = registry.pending_deletes.get(&key).cloned();
        if let Some(old) = &replaced {
            *claims.entry(old.address()).or_default() += 1;
        }
        if unsent(&tracked) {
            candidates.push((tracked, replaced));
        }
    }
    let mut inserts = Vec::new();
    for (tracked, replaced) in candidates {
        let Some(old) = replaced.filter(|old| claims.get(&old.address()) == Some(&1)) else {
            inserts.push(tracked.clone());
            continue;
        };
        if !scope.last {
            continue;
        }
        let stored = old.stored(&*old.lock_read()?, T::clone);
        let changed =
            tracked.lock_read()?.current.changed_columns(&stored) & !(meta.key_set() | assigned_by_switch::<T>());
        switches.entry(changed).or_default().push(RowSwitch { new: tracked.clone(), old, stored });
    }
    Ok((inserts, switches))
}

/// Whether row switches send a checked UPDATE of the columns they change:
/// those of a versioned entity, even one that changes no column, since it
/// checks (and advances) the version of the row it takes over, as the
/// delete it replaces would have, instead of silently keeping a row that
/// someone else changed or deleted meanwhile.
fn switch_sends<T: Entity>() -> bool {
    T::META.version_column().is_some()
}

/// The columns whose values a row switch takes from the database rather
/// than from the new entity: the generated ones, which take their defaults
/// as in the insert the switch stands for (one generated `ALWAYS` takes no
/// other value), and the version, which continues the row's.
fn assigned_by_switch<T: Entity>() -> ColumnSet {
    let meta = T::META;
    (sql::generated_set(meta) & !meta.key_set()) | meta.version_column().map_or(0, |v| 1 << v)
}

/// The one statement of an unversioned entity's row switches: an upsert of
/// the new rows on their key, which reaches what the delete and the insert
/// they stand for would. The delete of an unversioned row does not care
/// whether the row is still there, so an UPDATE, which changes nothing
/// when another writer deleted the row meanwhile, would lose the new row
/// (or fail where the delete and insert succeed); the upsert inserts it
/// then, and otherwise gives the row every value of the new entity, and
/// its generated columns their defaults. It returns the rows written: a
/// row that is all key is "updated" to itself, so that it comes back too.
/// Reference-cycle columns are written with the rest: the switches come
/// after every insert of the flush.
fn switch_upsert<T: Entity>(new: &[Tracked<T>], flush: Option<u64>) -> Unbound {
    let meta = T::META;
    let columns = meta.insert_columns();
    let update = match (columns | sql::generated_set(meta)) & !meta.key_set() {
        0 => meta.key_set(),
        update => update,
    };
    let statement = Statement {
        check: Some(check_returned_rows::<T>),
        ..Statement::new(
            sql::upsert(meta, columns, meta.key_set(), update, true, Guard::InUnitOfWork),
            Vec::new(),
            true,
        )
    };
    Unbound { statement, binding: Some(ColumnBinding::boxed(new, sql::batch_insert_parameters(columns), flush)) }
}

/// Applies a flushed row switch to the new entity, which takes what the
/// database assigned in `row`, the row written: its generated columns and
/// its version. Returns whether a write landed while the flush was on the
/// wire. `state` is `new`'s.
fn switch_flushed<T: Entity>(new: &Tracked<T>, state: &mut EntityState<T>, row: &T) -> bool {
    let assigned = assigned_by_switch::<T>();
    state.current.copy_columns(row, assigned);
    if let Some(sent) = &mut state.sent {
        sent.copy_columns(row, assigned);
    }
    new.mark_flushed(state)
}

/// [`bind_columns`] for row switches: the new entities' values, checked
/// against the version of the rows they replace.
fn bind_switches<T: Entity>(
    switches: &[RowSwitch<T>],
    columns: &[usize],
    flush: Option<u64>,
) -> Result<Vec<crate::types::Param>> {
    let new: Vec<Tracked<T>> = switches.iter().map(|s| s.new.clone()).collect();
    let guards = bind_all(&new, flush, None)?;
    let current: Vec<&T> = guards.iter().map(|g| &g.current).collect();
    let stored: Vec<&T> = switches.iter().map(|s| &s.stored).collect();
    let version = T::META.version_column();
    Ok(columns
        .iter()
        .map(|&column| T::column_array(if Some(column) == version { &stored } else { &current }, column))
        .collect())
}

/// Guards over a batch of entities, so their values can be bound without
/// copying the entities. Each is marked as bound by `flush` while its guard
/// is held, so that a write after the values were read keeps what was sent.
/// A guard a user holds fails the flush at once ([`Error::Borrowed`]).
/// `updated` says what the statement sends when it updates stored rows: a
/// write since the plan to any other column stays pending. Looked for
/// row by row only if some write was made since (one count for the chunk,
/// read once its rows are locked, so every write to them is counted).
pub(super) fn bind_all<T: Entity>(
    rows: &[Tracked<T>],
    flush: Option<u64>,
    updated: Option<UpdatedColumns>,
) -> Result<Vec<RwLockWriteGuard<'_, EntityState<T>>>> {
    let mut guards = lock_all(rows.iter(), rows.len())?;
    if let Some(flush) = flush {
        let late = updated.filter(|updated| rows.first().is_some_and(|row| row.writes_since(updated.planned_at)));
        for (tracked, state) in rows.iter().zip(&mut guards) {
            state.bind(flush);
            if let Some(updated) = late {
                tracked.keep_unsent_changes(state, updated.sent)?;
            }
        }
    }
    Ok(guards)
}

/// The session's exclusive borrows of `count` entities, `rows`, in order.
/// Sized at once: collected into a `Result`, the list grew by doublings
/// (the collection cannot know its length), a reallocation and copy each.
fn lock_all<'a, T: Entity>(
    rows: impl Iterator<Item = &'a Tracked<T>>,
    count: usize,
) -> Result<Vec<RwLockWriteGuard<'a, EntityState<T>>>> {
    let mut guards = Vec::with_capacity(count);
    for tracked in rows {
        guards.push(tracked.lock_write()?);
    }
    Ok(guards)
}

fn bind_columns<T: Entity>(
    rows: &[Tracked<T>],
    columns: &[usize],
    flush: Option<u64>,
    updated: Option<UpdatedColumns>,
) -> Result<Vec<crate::types::Param>> {
    let guards = bind_all(rows, flush, updated)?;
    let entities: Vec<&T> = guards.iter().map(|g| &g.current).collect();
    Ok(columns.iter().map(|&column| T::column_array(&entities, column)).collect())
}

/// [`bind_columns`] with the values the database holds, for deletes: the
/// key (and version) as loaded or last flushed, whatever the fields were
/// changed to since, so the row deleted is the one the entity was read from.
fn bind_stored<T: Entity>(rows: &[Tracked<T>], columns: &[usize]) -> Result<Vec<crate::types::Param>> {
    let guards = bind_all(rows, None, None)?;
    // A snapshot is read under its block's lock, one at a time: the
    // written ones are copied, the others borrowed.
    let stored: Vec<Cow<'_, T>> = rows
        .iter()
        .zip(&guards)
        .map(|(tracked, state)| {
            tracked.snapshot(state, |snapshot| Cow::Owned(snapshot.clone())).unwrap_or(Cow::Borrowed(&state.current))
        })
        .collect();
    let entities: Vec<&T> = stored.iter().map(|entity| &**entity).collect();
    Ok(columns.iter().map(|&column| T::column_array(&entities, column)).collect())
}

/// [`bind_columns`] for a post-update of rows inserted by this flush: their
/// keys are the ones the database generated, which the entities get only
/// when the flush succeeds.
fn bind_post_update<T: Entity>(
    registry: &Registry<T>,
    rows: &[Tracked<T>],
    columns: &[usize],
    flush: Option<u64>,
) -> Result<Vec<crate::types::Param>> {
    let guards = bind_all(rows, flush, None)?;
    let current: Vec<&T> = guards.iter().map(|g| &g.current).collect();
    let inserted: Vec<&T> = rows
        .iter()
        .zip(&current)
        .map(|(tracked, &current)| registry.provisional.get(&tracked.address()).unwrap_or(current))
        .collect();
    Ok(columns
        .iter()
        .map(|&column| T::column_array(if T::META.columns[column].primary_key { &inserted } else { &current }, column))
        .collect())
}

/// The written entities with changes to update, grouped by the set of
/// columns that changed; written ones that turned out unchanged are marked
/// synced.
fn group_updates<T: Entity>(
    registry: &Registry<T>,
    scope: &PlanScope<'_>,
) -> Result<BTreeMap<ColumnSet, Vec<Tracked<T>>>> {
    let meta = T::META;
    let version_bit = meta.version_column().map_or(0, |v| 1 << v);
    let key_set = meta.key_set();
    let mut groups: BTreeMap<ColumnSet, Vec<Tracked<T>>> = BTreeMap::new();
    // Entities written alike come in runs (a loop setting one field on
    // each): a run goes into its group at its end, not a map lookup per row.
    let mut run: (ColumnSet, Vec<Tracked<T>>) = (0, Vec::new());
    for tracked in registry.written() {
        let Some((original_key, changed)) = registry.update_candidate(&tracked)? else { continue };
        if changed & key_set != 0 {
            return Err(Error::PrimaryKeyChanged { entity: meta.name, key: format!("{original_key:?}") });
        }
        let changed = changed & !version_bit;
        if changed == 0 {
            // Written but not changed: nothing to send, and nothing that a
            // failed flush would have to restore. (A preview leaves it be:
            // a link to a pending parent may still change it.)
            if !scope.preview {
                tracked.mark_synced_if_free();
            }
        } else {
            if changed != run.0 {
                end_run(&mut groups, &mut run.1, run.0);
                run.0 = changed;
            }
            run.1.push(tracked);
        }
    }
    end_run(&mut groups, &mut run.1, run.0);
    Ok(groups)
}

/// Puts a run of entities that changed the same columns, `changed`, at
/// the end of their group; a group's first run becomes the group as it is.
fn end_run<T: Entity>(
    groups: &mut BTreeMap<ColumnSet, Vec<Tracked<T>>>,
    run: &mut Vec<Tracked<T>>,
    changed: ColumnSet,
) {
    if run.is_empty() {
        return;
    }
    match groups.entry(changed) {
        Entry::Vacant(vacant) => {
            vacant.insert(std::mem::take(run));
        }
        Entry::Occupied(occupied) => occupied.into_mut().append(run),
    }
}

/// Puts the entities added with an on-conflict rule after the plain
/// inserts, grouped by rule, and counts each group.
fn split_upserts<T: Entity>(inserts: Vec<Tracked<T>>) -> (Vec<Tracked<T>>, Vec<(ConflictRule, usize)>) {
    if inserts.iter().all(|tracked| tracked.conflict_rule().is_none()) {
        return (inserts, Vec::new());
    }
    let mut ordered = Vec::with_capacity(inserts.len());
    let mut by_rule: BTreeMap<ConflictRule, Vec<Tracked<T>>> = BTreeMap::new();
    for tracked in inserts {
        match tracked.conflict_rule() {
            Some(rule) => by_rule.entry(rule).or_default().push(tracked),
            None => ordered.push(tracked),
        }
    }
    let upserts = by_rule.iter().map(|(&rule, rows)| (rule, rows.len())).collect();
    ordered.extend(by_rule.into_values().flatten());
    (ordered, upserts)
}

/// The upsert of `rows`, whatever their number one statement, returning
/// every column of the rows written so that each entity holds what the
/// database holds.
fn upsert_statement<T: Entity>(
    rows: &[Tracked<T>],
    columns: ColumnSet,
    rule: ConflictRule,
    flush: Option<u64>,
) -> Unbound {
    let statement = Statement {
        sql: sql::upsert(T::META, columns, rule.target, rule.update, true, Guard::InUnitOfWork).into(),
        params: Vec::new(),
        returns_rows: true,
        check: Some(check_returned_rows::<T>),
        copy: None,
        unmatched_of: None,
    };
    Unbound { statement, binding: Some(ColumnBinding::boxed(rows, sql::batch_insert_parameters(columns), flush)) }
}

/// The plain INSERT of the first `plain` of `inserts`, then an upsert per
/// rule for the rest.
fn insert_statements<T: Entity>(
    inserts: &[Tracked<T>],
    plain: usize,
    upserts: &[(ConflictRule, usize)],
    columns: ColumnSet,
    flush: Option<u64>,
    copy: Option<&CopyTarget>,
) -> Result<Vec<Unbound>> {
    let mut statements = Vec::with_capacity(usize::from(plain > 0) + upserts.len());
    if let (Some(target), true) = (copy, plain > 0) {
        // The keys come back first, as one array; the rows follow.
        let mut statement = copy::allocate_keys(T::META, target, plain);
        statement.check = Some(check_key_arrays::<T>);
        statements.push(statement.into());
    } else if plain > 0 {
        statements.push(insert_statement(&inserts[..plain], columns, flush)?);
    }
    let mut from = plain;
    for &(rule, count) in upserts {
        statements.push(upsert_statement(&inserts[from..from + count], columns, rule, flush));
        from += count;
    }
    Ok(statements)
}

/// The INSERT of `inserts`: a batch's arrays are left to its [`Binding`];
/// a single row, as the `VALUES` of hand-written code, is bound at once.
fn insert_statement<T: Entity>(inserts: &[Tracked<T>], columns: ColumnSet, flush: Option<u64>) -> Result<Unbound> {
    let meta = T::META;
    let returns_rows = meta.generated_columns().next().is_some();
    let (sql, params, binding) = match inserts {
        [tracked] => {
            // Locked alone: `bind_all`'s list of guards would be an allocation.
            let mut state = tracked.lock_write()?;
            if let Some(flush) = flush {
                state.bind(flush);
            }
            let entity = &state.current;
            (
                sql::insert_one_of::<T>(columns, Guard::InUnitOfWork),
                sql::indexes(columns).map(|column| entity.column_value(column)).collect(),
                None,
            )
        }
        _ => (
            Cow::Owned(sql::insert(meta, columns, Guard::InUnitOfWork)),
            Vec::new(),
            Some(ColumnBinding::boxed(inserts, sql::batch_insert_parameters(columns), flush)),
        ),
    };
    let statement = Statement {
        sql,
        params,
        returns_rows,
        check: returns_rows.then_some(check_returning::<T>),
        copy: None,
        unmatched_of: None,
    };
    Ok(Unbound { statement, binding })
}

/// The updates of `groups`, one statement per set of changed columns, into
/// `statements.updates`; the first group of at least `copy_threshold` rows
/// (the update threshold) goes by `COPY` into a temporary table (see
/// [`copy_update`]), its `COPY` into `statements.copies`, and then its
/// prefix and row count are returned. `planned_at` is the count of writes
/// through handles when the groups were made (see [`bind_all`]).
fn update_statements<T: Entity>(
    groups: &BTreeMap<ColumnSet, Vec<Tracked<T>>>,
    copy_threshold: Option<usize>,
    flush: Option<u64>,
    planned_at: u64,
    statements: &mut TableStatements,
) -> Option<(String, usize)> {
    let meta = T::META;
    let mut copy_updated = None;
    for (&changed, rows) in groups {
        // One batch a table at most: the `COPY` goes first in the round trip.
        let by_copy = copy_threshold
            .filter(|&threshold| copy_updated.is_none() && rows.len() >= threshold)
            .and_then(|_| copy_update(rows, changed, flush, planned_at));
        if let Some(CopyUpdate { prefix, copy, update }) = by_copy {
            copy_updated = Some((prefix, rows.len()));
            statements.copies.push(copy);
            statements.updates.push(update);
            continue;
        }
        let statement = Statement::reporting_unmatched(sql::update(meta, changed), Vec::new(), rows.len());
        let binding = ColumnBinding::boxed_update(rows, sql::update_parameters(meta, changed), flush, planned_at);
        statements.updates.push(Unbound { statement, binding: Some(binding) });
    }
    copy_updated
}

pub(crate) fn plan_table<T: Entity>(
    registry: &Registry<T>,
    scope: &PlanScope<'_>,
) -> Result<Option<Box<dyn TablePlan>>> {
    let meta = T::META;
    let flush = if scope.preview { None } else { registry.write_log().flushing() };
    // Counted before the rows are read: a write while they are is looked
    // for again as they are bound.
    let planned_at = registry.write_log().writes();
    let groups = if scope.last { group_updates(registry, scope)? } else { BTreeMap::new() };
    let unsent = |t: &&Tracked<T>| !scope.waiting.contains(&t.address()) && !scope.inserted.contains(&t.address());
    let (inserts, switches) = split_row_switches(registry, scope, unsent)?;
    let replaced: HashSet<usize> = switches.values().flatten().map(|s| s.old.address()).collect();
    let deletes: Vec<Tracked<T>> = if scope.last {
        registry.pending_deletes.values().filter(|t| !replaced.contains(&t.address())).cloned().collect()
    } else {
        Vec::new()
    };
    // The rows this flush inserts that reference something through a
    // deferred column, once all rows are inserted: the flush makes sure that
    // rows with generated keys were sent by an earlier round trip. Not the
    // switches': they come after every insert, and write those columns.
    let mut post_updated: Vec<Tracked<T>> = Vec::new();
    if scope.last && scope.deferred != 0 {
        let switching: HashSet<usize> = switches.values().flatten().map(|s| s.new.address()).collect();
        for tracked in registry.pending_inserts.values().filter(|t| !switching.contains(&t.address())) {
            let state = tracked.lock_read()?;
            if sql::indexes(scope.deferred).any(|column| !state.current.column_is_null(column)) {
                post_updated.push(tracked.clone());
            }
        }
    }
    if inserts.is_empty() && groups.is_empty() && deletes.is_empty() && post_updated.is_empty() && switches.is_empty() {
        return Ok(None);
    }

    let mut statements = TableStatements::default();
    let (inserts, upserts) = split_upserts(inserts);
    let plain = inserts.len() - upserts.iter().map(|&(_, count)| count).sum::<usize>();
    let copy = scope.copy.filter(|_| scope.deferred == 0 && plain > 0).cloned();
    let insert_columns = meta.insert_columns() & !scope.deferred;
    statements.inserts = insert_statements(&inserts, plain, &upserts, insert_columns, flush, copy.as_deref())?;
    // One row, two handles: an upsert meeting a row already tracked, or
    // one that another insert of this flush wrote.
    let check_tracked =
        plain > 0 && !registry.identity.is_empty() && !meta.key_columns().any(|k| meta.columns[k].generated);
    let check_clash = !upserts.is_empty()
        && (!registry.identity.is_empty() || !scope.inserted.is_empty() || upserts.len() + usize::from(plain > 0) > 1);
    let copy_updated = update_statements(&groups, scope.copy_update, flush, planned_at, &mut statements);
    for (&changed, switched) in switches.iter().filter(|_| switch_sends::<T>()) {
        let params = bind_switches(switched, &sql::update_parameters(meta, changed), flush)?;
        let statement = Statement::new(sql::switch_update(meta, changed), params, true);
        statements.updates.push(Statement { check: Some(check_returned_rows::<T>), ..statement }.into());
    }
    // `verify` pairs the grouped updates and the switches' statements with
    // their outcomes in order. The statements after those are not checked:
    // they touch only rows this transaction inserted or deletes.
    if !switches.is_empty() && !switch_sends::<T>() {
        let new: Vec<Tracked<T>> = switches.values().flatten().map(|switch| switch.new.clone()).collect();
        statements.updates.push(switch_upsert(&new, flush));
    }
    if !post_updated.is_empty() {
        statements.updates.push(
            Statement::reporting_unmatched(
                sql::update(meta, scope.deferred),
                bind_post_update(registry, &post_updated, &sql::update_parameters(meta, scope.deferred), flush)?,
                post_updated.len(),
            )
            .into(),
        );
    }
    if !deletes.is_empty() && scope.deferred != 0 {
        // Before any delete: the rows these rows reference may be deleted in
        // the same flush.
        statements.updates.push(
            Statement::new(
                sql::clear(meta, scope.deferred),
                bind_stored(&deletes, &meta.key_columns().collect::<Vec<_>>())?,
                false,
            )
            .into(),
        );
    }
    if !deletes.is_empty() {
        statements.deletes.push(
            Statement::reporting_unmatched(
                sql::session_delete(meta, Guard::InUnitOfWork),
                bind_stored(&deletes, &sql::update_parameters(meta, 0))?,
                deletes.len(),
            )
            .into(),
        );
    }
    let updates = groups.into_values().collect();
    let switches = switches.into_iter().collect();
    Ok(Some(Box::new(Plan {
        statements,
        inserts,
        plain,
        upserts,
        returned: None,
        check_clash,
        check_tracked,
        updates,
        post_updated,
        deletes,
        switches,
        switched_rows: Vec::new(),
        inserted_keys: Vec::new(),
        sequence_keys: None,
        insert_columns,
        copy,
        flush,
        copy_update: copy_updated,
    })))
}

/// Refuses an insert whose `RETURNING` columns the entity's generated
/// fields cannot hold, before it runs: found afterwards, the rows could be
/// committed already (`COMMIT` travels with the last statements).
fn check_returning<T: Entity>(columns: ResultColumns<'_>) -> Result<()> {
    check_columns::<T>(columns, T::META.generated_columns())
}

/// [`check_returning`] for the keys taken from the key's sequence, one
/// array per key column.
fn check_key_arrays<T: Entity>(columns: ResultColumns<'_>) -> Result<()> {
    for ((_, type_), index) in columns.iter().zip(T::META.key_columns()) {
        if !matches!(type_.kind(), Kind::Array(member) if T::accepts(index, member)) {
            return Err(Error::ColumnType {
                entity: T::META.name,
                column: T::META.columns[index].name,
                found: type_.name().to_owned(),
            });
        }
    }
    Ok(())
}

/// [`check_returning`] for an upsert or a row switch, which return every
/// column.
fn check_returned_rows<T: Entity>(columns: ResultColumns<'_>) -> Result<()> {
    check_columns::<T>(columns, 0..T::META.columns.len())
}

/// Fails if a result column cannot be read into the field of the entity
/// column it stands for (`fields`, in result order).
fn check_columns<T: Entity>(columns: ResultColumns<'_>, fields: impl Iterator<Item = usize>) -> Result<()> {
    for ((_, type_), index) in columns.iter().zip(fields) {
        if !T::accepts(index, type_) {
            return Err(Error::ColumnType {
                entity: T::META.name,
                column: T::META.columns[index].name,
                found: type_.name().to_owned(),
            });
        }
    }
    Ok(())
}

/// The rows a statement returned, or how many it wrote.
fn rows_of(outcome: Option<&Outcome>) -> (&[tokio_postgres::Row], usize) {
    match outcome {
        Some(Outcome::Rows(rows)) => (rows, rows.len()),
        Some(Outcome::Count(count)) => (&[], usize::try_from(*count).unwrap_or(usize::MAX)),
        Some(outcome @ Outcome::Unmatched { .. }) => (&[], usize::try_from(outcome.rows()).unwrap_or(usize::MAX)),
        None => (&[], 0),
    }
}

/// The addresses of `rows`, to look them up.
fn addresses<T: Entity>(rows: &[Tracked<T>]) -> AddressSet {
    rows.iter().map(Tracked::address).collect()
}

impl<T: Entity> Plan<T> {
    /// The post-updated entities that this plan does not insert too, each
    /// borrowed for `apply`.
    fn lock_post_updated_only(&self) -> Result<Vec<RwLockWriteGuard<'_, EntityState<T>>>> {
        if self.post_updated.is_empty() {
            // A request's insert: no set of the inserted addresses to build.
            return Ok(Vec::new());
        }
        let inserting = addresses(&self.inserts);
        self.post_updated
            .iter()
            .filter(|tracked| !inserting.contains(&tracked.address()))
            .map(Tracked::lock_write)
            .collect()
    }

    /// The rows the plain insert returned, or how many it wrote.
    fn inserted_rows<'o>(&self, outcomes: &'o TableOutcomes) -> (&'o [tokio_postgres::Row], usize) {
        rows_of(outcomes.inserts.first().filter(|_| self.plain > 0))
    }

    /// How many plain inserts the database took: the keys its sequence
    /// gave, for a `COPY`, or the rows the `INSERT` wrote.
    fn inserted_count(&self, outcomes: &TableOutcomes) -> usize {
        match &self.sequence_keys {
            Some(keys) => keys.len(),
            None => self.inserted_rows(outcomes).1,
        }
    }

    /// Stores in `entity` what the database generated for plain insert
    /// `n`: the key the sequence gave it (for a `COPY`), or the columns of
    /// its `RETURNING` row.
    fn fill_generated(&self, entity: &mut T, rows: &[tokio_postgres::Row], n: usize) -> Result<()> {
        match &self.sequence_keys {
            Some(keys) => {
                if let Some(key) = keys.get(n) {
                    entity.set_key(key.clone());
                }
            }
            None => {
                if let Some(row) = rows.get(n) {
                    entity.set_generated(row)?;
                }
            }
        }
        Ok(())
    }

    /// The outcomes of the upsert statements, in `upserts` order.
    fn upsert_outcomes<'o>(&self, outcomes: &'o TableOutcomes) -> impl Iterator<Item = &'o Outcome> {
        outcomes.inserts.iter().skip(usize::from(self.plain > 0))
    }

    /// Whether an upsert's `DO UPDATE` may leave a clashing row alone: one
    /// of another tenant (see [`sql::upsert`]). Only the count it returns
    /// tells, so the flush reads it before it commits.
    fn upsert_may_skip(&self) -> bool {
        T::META.tenant_column().is_some() && self.upserts.iter().any(|(rule, _)| rule.update != 0)
    }

    /// Fails if an insert wrote fewer rows than it was given: generated
    /// keys come back in input order, so a skipped row would shift them
    /// all. Only an upsert that does nothing on conflict may skip rows,
    /// and one that updates a tenant entity's row, which leaves another
    /// tenant's alone ([`Error::WrongTenant`]).
    fn check_inserted(&self, outcomes: &TableOutcomes) -> Result<()> {
        let not_inserted = |expected, inserted| Error::RowsNotInserted {
            entity: T::META.name,
            table: T::META.table,
            expected,
            inserted,
        };
        let inserted = self.inserted_count(outcomes);
        if self.plain > 0 && inserted != self.plain {
            return Err(not_inserted(self.plain, inserted));
        }
        for (&(rule, expected), outcome) in self.upserts.iter().zip(self.upsert_outcomes(outcomes)) {
            let (_, written) = rows_of(Some(outcome));
            if rule.update != 0 && written < expected && T::META.tenant_column().is_some() {
                return Err(Error::WrongTenant { entity: T::META.name });
            }
            if written > expected || (rule.update != 0 && written != expected) {
                return Err(not_inserted(expected, written));
            }
        }
        Ok(())
    }

    /// Reads the rows the upserts returned into `returned`, once. Rows
    /// come back in input order; where `DO NOTHING` skipped some, each
    /// returned row belongs to the next entity with the same values in
    /// the conflict columns.
    fn read_returned(&mut self, outcomes: &TableOutcomes) -> Result<()> {
        if self.returned.is_some() || self.upserts.is_empty() {
            return Ok(());
        }
        let mut returned = Vec::with_capacity(self.inserts.len() - self.plain);
        let mut entities = self.inserts[self.plain..].iter();
        for (&(rule, count), outcome) in self.upserts.iter().zip(self.upsert_outcomes(outcomes)) {
            let (rows, _) = rows_of(Some(outcome));
            let group: Vec<&Tracked<T>> = entities.by_ref().take(count).collect();
            let every_row = rows.len() == count;
            let mut rows = rows.iter().map(|row| T::from_row(row, 0)).peekable();
            for tracked in group {
                let next = match rows.peek() {
                    Some(Ok(row)) if !every_row => {
                        // Compared as stored: the row holds rounded values.
                        let mut sent = tracked.lock_read()?.current.clone();
                        sent.round_to_stored();
                        sent.changed_columns(row) & rule.target == 0
                    }
                    Some(_) => true,
                    None => false,
                };
                returned.push(if next { rows.next().transpose()? } else { None });
            }
            if rows.next().is_some() {
                // A trigger changed a conflict column: rows cannot be matched.
                return Err(Error::RowsNotInserted {
                    entity: T::META.name,
                    table: T::META.table,
                    expected: count,
                    inserted: 0,
                });
            }
        }
        self.returned = Some(returned);
        Ok(())
    }

    /// The keys this plan inserts (plain ones only where `rows`, what
    /// the plain insert returned, has them or the key is assigned).
    fn plain_keys(&self, rows: &[tokio_postgres::Row]) -> Result<Vec<T::Key>> {
        let generated = T::META.key_columns().any(|k| T::META.columns[k].generated);
        self.inserts[..self.plain]
            .iter()
            .enumerate()
            .map(|(n, tracked)| {
                let mut entity = tracked.lock_read()?.current.clone();
                if generated {
                    self.fill_generated(&mut entity, rows, n)?;
                }
                Ok(entity.key())
            })
            .collect()
    }

    /// Fails with [`Error::AlreadyTracked`] if a plain insert wrote a row
    /// the session tracks through another handle. The insert succeeds only
    /// if another writer deleted that row since it was loaded (otherwise it
    /// fails on the key), and two handles of one row would leave the loaded
    /// one out of the session, its later writes never flushed.
    fn check_tracked_keys(&self, registry: &Registry<T>) -> Result<()> {
        if !self.check_tracked {
            return Ok(());
        }
        for tracked in &self.inserts[..self.plain] {
            let key = tracked.lock_read()?.current.key();
            if registry.identity.get(&key).is_some_and(|held| !Tracked::ptr_eq(held, tracked)) {
                return Err(Error::AlreadyTracked { entity: T::META.name, key: format!("{key:?}") });
            }
        }
        Ok(())
    }

    /// Fails with [`Error::AlreadyTracked`] if an upserted row is one the
    /// session tracks through another handle, or that another insert of
    /// this flush wrote.
    fn check_clashes(&self, outcomes: &TableOutcomes, registry: &Registry<T>) -> Result<()> {
        if !self.check_clash {
            return Ok(());
        }
        let (rows, _) = self.inserted_rows(outcomes);
        let mut seen: HashSet<T::Key> = self.plain_keys(rows)?.into_iter().collect();
        seen.extend(registry.provisional.values().map(Entity::key));
        let upserted = self.inserts[self.plain..].iter().zip(self.returned.iter().flatten());
        for (tracked, row) in upserted {
            let Some(row) = row else { continue };
            let key = row.key();
            let elsewhere = registry.identity.get(&key).is_some_and(|held| !Tracked::ptr_eq(held, tracked));
            if elsewhere || !seen.insert(key.clone()) {
                return Err(Error::AlreadyTracked { entity: T::META.name, key: format!("{key:?}") });
            }
        }
        Ok(())
    }

    /// Fails if the `COPY` into the temporary table wrote another number
    /// of rows than it was given: the `UPDATE` would not see the missing
    /// ones, and could not name them.
    fn check_copied(&self, outcomes: &TableOutcomes) -> Result<()> {
        let Some((_, expected)) = self.copy_update else { return Ok(()) };
        let (_, copied) = rows_of(outcomes.copies.first());
        if copied == expected {
            return Ok(());
        }
        Err(Error::RowsNotInserted { entity: T::META.name, table: T::META.table, expected, inserted: copied })
    }

    /// Reads the rows the switches' statements wrote into `switched_rows`,
    /// in the order of the switches, matched by key. A switch whose row is
    /// missing fails the flush: a versioned row changed or deleted since it
    /// was loaded (`StaleData`, as its delete would have), a row of another
    /// tenant left alone by the upsert (`WrongTenant`), or a key changed
    /// before the upsert bound it (`PrimaryKeyChanged`), which wrote
    /// another row.
    fn read_switched(&mut self, outcomes: &TableOutcomes) -> Result<()> {
        let count: usize = self.switches.iter().map(|(_, switched)| switched.len()).sum();
        if count == 0 {
            return Ok(());
        }
        let statements = if switch_sends::<T>() { self.switches.len() } else { 1 };
        let mut written: HashMap<T::Key, T> = HashMap::with_capacity(count);
        for outcome in outcomes.updates.iter().skip(self.updates.len()).take(statements) {
            for row in rows_of(Some(outcome)).0 {
                let row = T::from_row(row, 0)?;
                written.insert(row.key(), row);
            }
        }
        let mut rows = Vec::with_capacity(count);
        let mut missed = Vec::new();
        for switch in self.switches.iter().flat_map(|(_, switched)| switched) {
            let key = switch.stored.key();
            match written.remove(&key) {
                Some(row) => rows.push(row),
                None if switch.new.lock_read()?.current.key() != key => {
                    return Err(Error::PrimaryKeyChanged { entity: T::META.name, key: format!("{key:?}") });
                }
                None => missed.push(format!("{key:?}")),
            }
        }
        if missed.is_empty() {
            self.switched_rows = rows;
            return Ok(());
        }
        let (entity, table) = (T::META.name, T::META.table);
        Err(if switch_sends::<T>() {
            Error::StaleData { entity, table, matched: rows.len(), expected: count, keys: missed }
        } else if T::META.tenant_column().is_some() {
            Error::WrongTenant { entity }
        } else {
            Error::RowsNotInserted { entity, table, expected: count, inserted: rows.len() }
        })
    }

    /// Fails with `StaleData` naming the rows a statement should have
    /// matched and did not: its outcome names them (see
    /// [`Statement::reporting_unmatched`]), and they are named in the order
    /// of `expected`, the statement's input.
    fn check_matched(expected: &[Tracked<T>], outcome: &Outcome) -> Result<()> {
        let Outcome::Unmatched { keys: unmatched, .. } = outcome else { return Ok(()) };
        if unmatched.is_empty() {
            return Ok(());
        }
        let unmatched: HashSet<T::Key> = unmatched.iter().map(T::key_from_row).collect::<Result<_>>()?;
        let keys: Vec<String> = expected
            .iter()
            .filter_map(Tracked::identity_key)
            .filter(|key| unmatched.contains(key))
            .map(|key| format!("{key:?}"))
            .collect();
        Err(Error::StaleData {
            entity: T::META.name,
            table: T::META.table,
            matched: expected.len().saturating_sub(unmatched.len()),
            keys,
            expected: expected.len(),
        })
    }
}

impl<T: Entity> TablePlan for Plan<T> {
    fn meta(&self) -> &'static EntityMeta {
        T::META
    }

    fn take_statements(&mut self) -> TableStatements {
        std::mem::take(&mut self.statements)
    }

    fn counts(&self) -> PendingChanges {
        let statements = &self.statements;
        PendingChanges {
            inserts: self.inserts.len(),
            updates: self.updates.iter().map(Vec::len).sum::<usize>()
                + self.switches.iter().map(|(_, switched)| switched.len()).sum::<usize>(),
            deletes: self.deletes.len(),
            statements: statements.copies.len()
                + statements.inserts.len()
                + statements.updates.len()
                + statements.deletes.len(),
        }
    }

    fn run_alone(&mut self) -> bool {
        if self.needs_verification() {
            return false;
        }
        let TableStatements { copies, inserts, updates, deletes } = &mut self.statements;
        let (statement, sql) = match (&mut copies[..], &mut inserts[..], &mut updates[..], &mut deletes[..]) {
            ([], [insert], [], []) if self.copy.is_none() => {
                let sql = match (self.plain, &self.upserts[..]) {
                    (1, []) => sql::insert_one_of::<T>(self.insert_columns, Guard::Alone),
                    (_, []) => Cow::Owned(sql::insert(T::META, self.insert_columns, Guard::Alone)),
                    (0, [(rule, _)]) => Cow::Owned(sql::upsert(
                        T::META,
                        self.insert_columns,
                        rule.target,
                        rule.update,
                        true,
                        Guard::Alone,
                    )),
                    _ => return false,
                };
                (insert, sql)
            }
            ([], [], [], [delete]) => (delete, Cow::Owned(sql::session_delete(T::META, Guard::Alone))),
            _ => return false,
        };
        statement.statement.sql = sql;
        true
    }

    fn inserts_rows(&self) -> bool {
        !self.inserts.is_empty()
    }

    fn inserted(&self) -> Vec<usize> {
        self.inserts.iter().map(Tracked::address).collect()
    }

    fn take_copy(&mut self, outcomes: &TableOutcomes) -> Result<Option<(Unbound, usize)>> {
        let Some(target) = self.copy.take() else { return Ok(None) };
        let keys = match self.inserted_rows(outcomes).0 {
            [row] => T::keys_from_arrays(row)?,
            _ => Vec::new(),
        };
        self.sequence_keys = Some(keys.clone());
        self.check_inserted(outcomes)?;
        let (statement, binding) = copy::copy_statement(&target, &self.inserts[..self.plain], keys, self.flush);
        Ok(Some((Unbound { statement, binding: Some(binding) }, self.plain)))
    }

    fn copy_prefix(&self) -> Option<&str> {
        self.copy_update.as_ref().map(|(prefix, _)| prefix.as_str())
    }

    fn record_keys(&mut self, outcomes: &TableOutcomes, registry: &mut dyn ErasedRegistry) -> Result<()> {
        let registry =
            registry.as_any_mut().downcast_mut::<Registry<T>>().ok_or(Error::NotInSession { entity: T::META.name })?;
        self.check_inserted(outcomes)?;
        self.read_returned(outcomes)?;
        let (rows, _) = self.inserted_rows(outcomes);
        for (n, tracked) in self.inserts[..self.plain].iter().enumerate() {
            let mut entity = tracked.lock_read()?.current.clone();
            self.fill_generated(&mut entity, rows, n)?;
            registry.provisional.insert(tracked.address(), entity);
        }
        // A row `DO NOTHING` skipped has no key to give.
        let upserted = self.inserts[self.plain..].iter().zip(self.returned.iter().flatten());
        for (tracked, row) in upserted {
            if let Some(row) = row {
                registry.provisional.insert(tracked.address(), row.clone());
            }
        }
        Ok(())
    }

    fn needs_verification(&self) -> bool {
        !self.updates.is_empty()
            || self.check_clash
            || self.check_tracked
            || !self.switches.is_empty()
            || (!self.deletes.is_empty() && T::META.version_column().is_some())
            || self.upsert_may_skip()
    }

    fn check_free(&self) -> Result<()> {
        let switched = self.switches.iter().flat_map(|(_, switched)| switched.iter().map(|s| &s.new));
        for tracked in
            self.inserts.iter().chain(self.updates.iter().flatten()).chain(&self.post_updated).chain(switched)
        {
            drop(tracked.lock_write()?);
        }
        Ok(())
    }

    fn verify(&mut self, outcomes: &TableOutcomes, registry: &dyn ErasedRegistry) -> Result<()> {
        // The objects `apply` changes must be free now, while a failure can
        // still roll the flush back: a guard held by the flush's own task
        // (under `join!`, say) is one nobody will drop until it returns.
        self.check_free()?;
        self.check_inserted(outcomes)?;
        self.read_returned(outcomes)?;
        let registry =
            registry.as_any().downcast_ref::<Registry<T>>().ok_or(Error::NotInSession { entity: T::META.name })?;
        self.check_clashes(outcomes, registry)?;
        self.check_tracked_keys(registry)?;
        self.check_copied(outcomes)?;
        for (rows, outcome) in self.updates.iter().zip(&outcomes.updates) {
            Self::check_matched(rows, outcome)?;
        }
        self.read_switched(outcomes)?;
        // Deleting a row that is already gone reaches the desired state,
        // unless a version says the caller decided on data that changed.
        if T::META.version_column().is_some() {
            for outcome in &outcomes.deletes {
                Self::check_matched(&self.deletes, outcome)?;
            }
        }
        Ok(())
    }

    fn set_generated(&self, outcomes: &TableOutcomes, from: usize) -> Result<bool> {
        let (rows, _) = self.inserted_rows(outcomes);
        let plain = self.inserted_count(outcomes).min(self.plain);
        let count = if self.upserts.is_empty() { plain } else { self.inserts.len() };
        let end = count.min(from.saturating_add(ROWS_PER_YIELD));
        let from = from.min(end);
        let plain_end = end.min(plain);
        let plain_from = from.min(plain_end);
        for (n, tracked) in (plain_from..plain_end).zip(&self.inserts[plain_from..plain_end]) {
            tracked.lock_write()?.apply_from_database(|entity| self.fill_generated(entity, rows, n))?;
        }
        let returned = self.returned.as_deref().unwrap_or_default();
        for index in from.max(self.plain)..end {
            if let Some(Some(row)) = returned.get(index - self.plain) {
                self.inserts[index].lock_write()?.take_returned(row.clone());
            }
        }
        Ok(end == count)
    }

    fn enter_inserted(&mut self, registry: &mut dyn ErasedRegistry, from: usize) -> bool {
        let Some(registry) = registry.as_any_mut().downcast_mut::<Registry<T>>() else {
            unreachable!("a plan is applied to the registry that made it")
        };
        let count = self.inserted_keys.len();
        let end = count.min(from.saturating_add(ROWS_PER_YIELD));
        let from = from.min(end);
        if from == 0 {
            registry.identity.reserve(count);
        }
        for (tracked, key) in self.inserts[from..end].iter().zip(&mut self.inserted_keys[from..end]) {
            let Some(key) = key.take() else { continue };
            registry.enter(key, tracked.clone());
            if let Some(undo) = registry.savepoints.last_mut() {
                undo.inserted.push(tracked.clone());
            }
        }
        end == count
    }

    fn apply(&mut self, registry: &mut dyn ErasedRegistry) -> Result<()> {
        let Some(registry) = registry.as_any_mut().downcast_mut::<Registry<T>>() else {
            unreachable!("a plan is applied to the registry that made it")
        };
        let in_savepoint = !registry.savepoints.is_empty();
        let post_updated = addresses(&self.post_updated);
        // Every object is borrowed before any changes, so that one borrowed
        // elsewhere leaves all of them as they were.
        let mut inserted = lock_all(self.inserts.iter(), self.inserts.len())?;
        let mut post_updated_only = self.lock_post_updated_only()?;
        let mut updated = lock_all(self.updates.iter().flatten(), self.updates.iter().map(Vec::len).sum())?;
        let switched: Vec<&RowSwitch<T>> = self.switches.iter().flat_map(|(_, switched)| switched).collect();
        if switched.len() != self.switched_rows.len() {
            // `verify` reads a row for each switch, or fails.
            return Err(Error::RowsNotInserted {
                entity: T::META.name,
                table: T::META.table,
                expected: switched.len(),
                inserted: self.switched_rows.len(),
            });
        }
        let mut switching = switched.iter().map(|s| s.new.lock_write()).collect::<Result<Vec<_>>>()?;

        // The post-update advanced the version the insert wrote.
        for state in &mut post_updated_only {
            state.advance_version();
        }
        let mut inserted_keys = Vec::with_capacity(inserted.len());
        let mut rewritten = Vec::new();
        let mut skipped = Vec::new();
        let returned = self.returned.as_deref().unwrap_or_default();
        for (index, (tracked, state)) in self.inserts.iter().zip(&mut inserted).enumerate() {
            if index >= self.plain && returned.get(index - self.plain).is_some_and(Option::is_none) {
                state.mark_skipped();
                skipped.push(tracked);
                inserted_keys.push(None);
                continue;
            }
            if post_updated.contains(&tracked.address()) {
                state.advance_version();
            }
            if tracked.mark_flushed(state) {
                rewritten.push(tracked);
            }
            // The key as inserted: a write since may have changed the field.
            inserted_keys.push(Some(tracked.stored(state, T::key)));
        }
        // Inside a savepoint, the values before, which rolling it back
        // restores; otherwise `mark_flushed` frees each snapshot as it goes,
        // instead of a list of them all being freed at the end.
        let mut befores = Vec::with_capacity(if in_savepoint { updated.len() } else { 0 });
        for (tracked, state) in self.updates.iter().flatten().zip(&mut updated) {
            if in_savepoint {
                if let Some(before) = tracked.take_snapshot(state) {
                    befores.push((tracked.clone(), before));
                }
            }
            state.advance_version();
            if tracked.mark_flushed(state) {
                rewritten.push(tracked);
            }
        }
        let mut switched_keys = Vec::with_capacity(switched.len());
        for ((&switch, state), row) in switched.iter().zip(&mut switching).zip(&self.switched_rows) {
            if switch_flushed(&switch.new, state, row) {
                rewritten.push(&switch.new);
            }
            switched_keys.push(switch.new.stored(state, T::key));
        }
        drop((inserted, post_updated_only, updated, switching));

        // The inserts are distinct entities: as many as their addresses.
        let leaving = self.inserts.len() + switched.len();
        if leaving == registry.pending_inserts.len() {
            // The planned inserts are a subset of the pending ones: all of them.
            registry.pending_inserts.clear();
        } else {
            // Built only here: a request's insert leaves no other pending.
            let inserting = addresses(&self.inserts);
            let switched: AddressSet = switched.iter().map(|s| s.new.address()).collect();
            registry.pending_inserts.retain(|address, _| !inserting.contains(&address) && !switched.contains(&address));
        }
        // Not written: out of the session, as an expunged pending insert.
        for tracked in skipped {
            registry.forget_links(tracked);
            registry.forget_in_index(tracked);
        }
        for (switch, key) in switched.iter().zip(switched_keys) {
            // The new entity takes the deleted one's place under its key.
            registry.pending_deletes.swap_remove(&key);
            registry.enter(key, switch.new.clone());
            if let Some(undo) = registry.savepoints.last_mut() {
                undo.deleted.push(switch.old.clone());
                undo.inserted.push(switch.new.clone());
            }
        }
        self.inserted_keys = inserted_keys;
        if let Some(undo) = registry.savepoints.last_mut() {
            undo.updated.extend(befores);
        }
        // Storing rounds values (a foreign key among them) as the column does.
        self.updates.iter().flatten().for_each(|tracked| registry.changed(tracked));
        for tracked in std::mem::take(&mut self.deletes) {
            // Deleted objects keep the key they had, so a rolled-back
            // savepoint can put them back under it.
            if let Some(key) = tracked.identity_key() {
                registry.pending_deletes.swap_remove(&key);
                registry.identity.swap_remove(&key);
            }
            registry.forget_in_index(&tracked);
            if let Some(undo) = registry.savepoints.last_mut() {
                undo.deleted.push(tracked);
            }
        }
        // Writes that landed while the statements were on the wire are
        // pending for the next flush.
        for tracked in rewritten {
            tracked.log_write();
        }
        Ok(())
    }
}

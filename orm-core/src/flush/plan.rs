//! Turning one table's pending work into batched statements, and applying
//! their results back to the tracked objects.

use std::collections::{BTreeMap, HashSet};

use parking_lot::RwLockReadGuard;

use crate::connection::{Outcome, Statement};
use crate::entity::{ColumnSet, Entity, EntityMeta};
use crate::error::{Error, Result};
use crate::identity::{ErasedRegistry, Registry};
use crate::session::PendingChanges;
use crate::sql;
use crate::tracked::{EntityState, Tracked};

/// One table's statements, in the order the flush sends them.
#[derive(Default)]
pub(crate) struct TableStatements {
    pub(crate) inserts: Vec<Statement>,
    pub(crate) updates: Vec<Statement>,
    pub(crate) deletes: Vec<Statement>,
}

/// What those statements produced, in the same order.
#[derive(Default)]
pub(crate) struct TableOutcomes {
    pub(crate) inserts: Vec<Outcome>,
    pub(crate) updates: Vec<Outcome>,
    pub(crate) deletes: Vec<Outcome>,
}

/// Which part of a table's pending work one round trip of a flush carries.
pub(crate) struct PlanScope<'a> {
    /// Pending inserts waiting for a parent's key, by handle address.
    pub(crate) waiting: &'a HashSet<usize>,
    /// Pending inserts sent by an earlier round trip of this flush.
    pub(crate) inserted: &'a HashSet<usize>,
    /// The flush's last round trip, which also carries updates, deletes and
    /// post-updates.
    pub(crate) last: bool,
    /// Foreign-key columns on a reference cycle: inserted as NULL, then set
    /// by an UPDATE (a post-update) in the flush's last round trip, and set
    /// to NULL before the rows are deleted.
    pub(crate) deferred: ColumnSet,
    /// Only counting what a flush would do: the session must not change.
    pub(crate) preview: bool,
}

impl PlanScope<'_> {
    /// A look at everything pending, for [`Session::pending`](crate::Session::pending).
    pub(crate) fn preview(empty: &HashSet<usize>) -> PlanScope<'_> {
        PlanScope { waiting: empty, inserted: empty, last: true, deferred: 0, preview: true }
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
    /// Whether the plan inserts rows.
    fn inserts_rows(&self) -> bool;
    /// The handle addresses of the entities the plan inserts.
    fn inserted(&self) -> Vec<usize>;
    /// Keeps the keys the inserts generated, for children that wait for them
    /// in the flush's next round trip; the entities are not changed yet.
    fn record_keys(&self, outcomes: &TableOutcomes, registry: &mut dyn ErasedRegistry) -> Result<()>;
    /// Checks the inserted and matched row counts; nothing is applied yet.
    fn verify(&self, outcomes: &TableOutcomes) -> Result<()>;
    /// Stores the generated columns the inserts returned in the inserted
    /// entities, which stay pending until [`apply`](Self::apply).
    fn set_generated(&self, outcomes: &TableOutcomes) -> Result<()>;
    /// Applies versions and snapshots to the objects, and moves them between
    /// pending and persistent. Cannot fail: everything that can was checked
    /// before.
    fn apply(self: Box<Self>, registry: &mut dyn ErasedRegistry);
}

struct Plan<T: Entity> {
    statements: TableStatements,
    inserts: Vec<Tracked<T>>,
    /// Written entities, grouped by the set of columns that changed.
    updates: Vec<Vec<Tracked<T>>>,
    /// Inserted entities whose reference-cycle columns a post-update sets.
    post_updated: Vec<Tracked<T>>,
    deletes: Vec<Tracked<T>>,
}

/// Read guards over a batch of entities, so their values can be bound
/// without copying the entities.
fn read_all<T: Entity>(rows: &[Tracked<T>]) -> Vec<RwLockReadGuard<'_, EntityState<T>>> {
    rows.iter().map(|t| t.state().read()).collect()
}

fn bind_columns<T: Entity>(rows: &[Tracked<T>], columns: &[usize]) -> Vec<crate::types::Param> {
    let guards = read_all(rows);
    let entities: Vec<&T> = guards.iter().map(|g| &g.current).collect();
    columns.iter().map(|&column| T::column_array(&entities, column)).collect()
}

/// [`bind_columns`] for a post-update of rows inserted by this flush: their
/// keys are the ones the database generated, which the entities get only
/// when the flush succeeds.
fn bind_post_update<T: Entity>(
    registry: &Registry<T>,
    rows: &[Tracked<T>],
    columns: &[usize],
) -> Vec<crate::types::Param> {
    let guards = read_all(rows);
    let current: Vec<&T> = guards.iter().map(|g| &g.current).collect();
    let inserted: Vec<&T> = rows
        .iter()
        .zip(&current)
        .map(|(tracked, &current)| registry.provisional.get(&tracked.address()).unwrap_or(current))
        .collect();
    columns
        .iter()
        .map(|&column| T::column_array(if T::META.columns[column].primary_key { &inserted } else { &current }, column))
        .collect()
}

pub(crate) fn plan_table<T: Entity>(
    registry: &Registry<T>,
    scope: &PlanScope<'_>,
) -> Result<Option<Box<dyn TablePlan>>> {
    let meta = T::META;
    let version_bit = meta.version_column().map_or(0, |v| 1 << v);
    let mut groups: BTreeMap<ColumnSet, Vec<Tracked<T>>> = BTreeMap::new();
    let written = if scope.last { registry.written() } else { Vec::new() };
    for tracked in written {
        let (original_key, changed) = {
            let state = tracked.state().read();
            let Some(snapshot) = &state.snapshot else { continue };
            (snapshot.key(), state.current.changed_columns(snapshot))
        };
        // Written entities that are pending inserts, pending deletes or no
        // longer tracked are not updated.
        let persistent = registry.identity.get(&original_key).is_some_and(|t| Tracked::ptr_eq(t, &tracked));
        if !persistent || registry.pending_deletes.contains_key(&original_key) {
            continue;
        }
        if changed & meta.key_set() != 0 {
            return Err(Error::PrimaryKeyChanged { entity: meta.name, key: format!("{original_key:?}") });
        }
        let changed = changed & !version_bit;
        if changed == 0 {
            // Written but not changed: nothing to send, and nothing that a
            // failed flush would have to restore. (A preview leaves it be:
            // a link to a pending parent may still change it.)
            if !scope.preview {
                tracked.mark_synced();
            }
        } else {
            groups.entry(changed).or_default().push(tracked);
        }
    }
    let unsent = |t: &&Tracked<T>| !scope.waiting.contains(&t.address()) && !scope.inserted.contains(&t.address());
    let inserts: Vec<Tracked<T>> = registry.pending_inserts.values().filter(unsent).cloned().collect();
    let deletes: Vec<Tracked<T>> =
        if scope.last { registry.pending_deletes.values().cloned().collect() } else { Vec::new() };
    // The rows this flush inserts that reference something through a
    // deferred column, once all rows are inserted: the flush makes sure that
    // rows with generated keys were sent by an earlier round trip.
    let post_updated: Vec<Tracked<T>> = if scope.last && scope.deferred != 0 {
        let references = |t: &&Tracked<T>| {
            let entity = t.read();
            sql::indexes(scope.deferred).any(|column| !entity.column_is_null(column))
        };
        registry.pending_inserts.values().filter(references).cloned().collect()
    } else {
        Vec::new()
    };
    if inserts.is_empty() && groups.is_empty() && deletes.is_empty() && post_updated.is_empty() {
        return Ok(None);
    }

    let mut statements = TableStatements::default();
    if !inserts.is_empty() {
        let columns = meta.insert_columns() & !scope.deferred;
        let returns_rows = meta.generated_columns().next().is_some();
        let (sql, params) = match inserts.as_slice() {
            [single] => {
                let entity = single.read();
                (
                    sql::insert_one(meta, columns),
                    sql::indexes(columns).map(|column| entity.column_value(column)).collect(),
                )
            }
            _ => (sql::insert(meta, columns), bind_columns(&inserts, &sql::batch_insert_parameters(columns))),
        };
        statements.inserts.push(Statement {
            sql,
            params,
            returns_rows,
            check: returns_rows.then_some(check_returning::<T>),
        });
    }
    for (&changed, rows) in &groups {
        statements.updates.push(Statement {
            sql: sql::update(meta, changed),
            params: bind_columns(rows, &sql::update_parameters(meta, changed)),
            returns_rows: true,
            check: None,
        });
    }
    // The statements below come after every update whose outcome `verify`
    // checks (it pairs `updates` with their outcomes in order), and are not
    // checked: they touch only rows this transaction inserted or deletes.
    if !post_updated.is_empty() {
        statements.updates.push(Statement {
            sql: sql::update(meta, scope.deferred),
            params: bind_post_update(registry, &post_updated, &sql::update_parameters(meta, scope.deferred)),
            returns_rows: true,
            check: None,
        });
    }
    if !deletes.is_empty() && scope.deferred != 0 {
        // Before any delete: the rows these rows reference may be deleted in
        // the same flush.
        statements.updates.push(Statement {
            sql: sql::clear(meta, scope.deferred),
            params: bind_columns(&deletes, &meta.key_columns().collect::<Vec<_>>()),
            returns_rows: false,
            check: None,
        });
    }
    if !deletes.is_empty() {
        statements.deletes.push(Statement {
            sql: sql::delete(meta),
            params: bind_columns(&deletes, &sql::update_parameters(meta, 0)),
            returns_rows: true,
            check: None,
        });
    }
    let updates = groups.into_values().collect();
    Ok(Some(Box::new(Plan { statements, inserts, updates, post_updated, deletes })))
}

/// Refuses an insert whose `RETURNING` columns the entity's generated
/// fields cannot hold, before it runs: found afterwards, the rows could be
/// committed already (`COMMIT` travels with the last statements).
fn check_returning<T: Entity>(statement: &tokio_postgres::Statement) -> Result<()> {
    for (column, index) in statement.columns().iter().zip(T::META.generated_columns()) {
        if !T::accepts(index, column.type_()) {
            return Err(Error::ColumnType {
                entity: T::META.name,
                column: T::META.columns[index].name,
                found: column.type_().name().to_owned(),
            });
        }
    }
    Ok(())
}

impl<T: Entity> Plan<T> {
    /// The rows the insert returned, or how many it wrote.
    fn inserted_rows(outcomes: &TableOutcomes) -> (&[tokio_postgres::Row], usize) {
        match outcomes.inserts.first() {
            Some(Outcome::Rows(rows)) => (rows, rows.len()),
            Some(Outcome::Count(count)) => (&[], usize::try_from(*count).unwrap_or(usize::MAX)),
            None => (&[], 0),
        }
    }

    /// Fails if the insert wrote fewer rows than it was given: generated keys
    /// come back in input order, so a skipped row would shift them all.
    fn check_inserted(&self, outcomes: &TableOutcomes) -> Result<()> {
        let (_, inserted) = Self::inserted_rows(outcomes);
        if self.inserts.is_empty() || inserted == self.inserts.len() {
            return Ok(());
        }
        Err(Error::RowsNotInserted {
            entity: T::META.name,
            table: T::META.table,
            expected: self.inserts.len(),
            inserted,
        })
    }

    /// Fails with `StaleData` naming the rows a statement should have matched and did not.
    fn check_matched(expected: &[Tracked<T>], outcome: &Outcome) -> Result<()> {
        let Outcome::Rows(rows) = outcome else { return Ok(()) };
        if rows.len() == expected.len() {
            return Ok(());
        }
        let matched: HashSet<T::Key> = rows.iter().filter_map(|row| T::key_from_row(row).ok()).collect();
        let keys = expected
            .iter()
            .map(Tracked::key)
            .filter(|key| !matched.contains(key))
            .map(|key| format!("{key:?}"))
            .collect();
        Err(Error::StaleData {
            entity: T::META.name,
            table: T::META.table,
            keys,
            expected: expected.len(),
            matched: rows.len(),
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
            updates: self.updates.iter().map(Vec::len).sum(),
            deletes: self.deletes.len(),
            statements: statements.inserts.len() + statements.updates.len() + statements.deletes.len(),
        }
    }

    fn inserts_rows(&self) -> bool {
        !self.inserts.is_empty()
    }

    fn inserted(&self) -> Vec<usize> {
        self.inserts.iter().map(Tracked::address).collect()
    }

    fn record_keys(&self, outcomes: &TableOutcomes, registry: &mut dyn ErasedRegistry) -> Result<()> {
        let registry =
            registry.as_any_mut().downcast_mut::<Registry<T>>().ok_or(Error::NotInSession { entity: T::META.name })?;
        self.check_inserted(outcomes)?;
        let (rows, _) = Self::inserted_rows(outcomes);
        for (n, tracked) in self.inserts.iter().enumerate() {
            let mut entity = tracked.get();
            if let Some(row) = rows.get(n) {
                entity.set_generated(row)?;
            }
            registry.provisional.insert(tracked.address(), entity);
        }
        Ok(())
    }

    fn needs_verification(&self) -> bool {
        !self.updates.is_empty() || (!self.deletes.is_empty() && T::META.version_column().is_some())
    }

    fn verify(&self, outcomes: &TableOutcomes) -> Result<()> {
        self.check_inserted(outcomes)?;
        for (rows, outcome) in self.updates.iter().zip(&outcomes.updates) {
            Self::check_matched(rows, outcome)?;
        }
        // Deleting a row that is already gone reaches the desired state,
        // unless a version says the caller decided on data that changed.
        if T::META.version_column().is_some() {
            for outcome in &outcomes.deletes {
                Self::check_matched(&self.deletes, outcome)?;
            }
        }
        Ok(())
    }

    fn set_generated(&self, outcomes: &TableOutcomes) -> Result<()> {
        let (rows, _) = Self::inserted_rows(outcomes);
        for (tracked, row) in self.inserts.iter().zip(rows) {
            tracked.state().write().current.set_generated(row)?;
        }
        Ok(())
    }

    fn apply(self: Box<Self>, registry: &mut dyn ErasedRegistry) {
        let Some(registry) = registry.as_any_mut().downcast_mut::<Registry<T>>() else {
            unreachable!("a plan is applied to the registry that made it")
        };
        let in_savepoint = !registry.savepoints.is_empty();
        if self.inserts.len() == registry.pending_inserts.len() {
            // The planned inserts are a subset of the pending ones: all of them.
            registry.pending_inserts.clear();
        } else {
            let inserted: HashSet<usize> = self.inserts.iter().map(Tracked::address).collect();
            registry.pending_inserts.retain(|address, _| !inserted.contains(address));
        }
        registry.identity.reserve(self.inserts.len());
        for tracked in self.inserts {
            let key = {
                let mut state = tracked.state().write();
                state.snapshot = None;
                state.current.key()
            };
            registry.identity.insert(key, tracked.clone());
            if let Some(undo) = registry.savepoints.last_mut() {
                undo.inserted.push(tracked);
            }
        }
        for tracked in self.post_updated {
            // The post-update advanced the version the insert wrote.
            tracked.state().write().current.increment_version();
        }
        for tracked in self.updates.into_iter().flatten() {
            let mut state = tracked.state().write();
            state.current.increment_version();
            let before = state.snapshot.take();
            drop(state);
            if let (true, Some(before), Some(undo)) = (in_savepoint, before, registry.savepoints.last_mut()) {
                undo.updated.push((tracked, before));
            }
        }
        for tracked in self.deletes {
            let key = tracked.key();
            registry.pending_deletes.swap_remove(&key);
            registry.identity.swap_remove(&key);
            if let Some(undo) = registry.savepoints.last_mut() {
                undo.deleted.push(tracked);
            }
        }
    }
}

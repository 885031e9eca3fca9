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
    /// Pending inserts to leave out, by handle address: sent by an earlier
    /// round trip of this flush, or waiting for a parent's key.
    pub(crate) skip: &'a HashSet<usize>,
    /// The flush's last round trip, which also carries updates and deletes.
    pub(crate) last: bool,
    /// Foreign-key columns on a reference cycle: inserted as NULL, then set
    /// by an UPDATE later in the same round trip.
    pub(crate) deferred: ColumnSet,
}

impl PlanScope<'_> {
    /// Everything pending, in one round trip.
    pub(crate) fn everything(empty: &HashSet<usize>) -> PlanScope<'_> {
        PlanScope { skip: empty, last: true, deferred: 0 }
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
    /// Checks the matched row counts; nothing is applied yet.
    fn verify(&self, outcomes: &TableOutcomes) -> Result<()>;
    /// Applies generated keys, versions and snapshots to the objects, and
    /// moves them between pending and persistent.
    fn apply(self: Box<Self>, outcomes: TableOutcomes, registry: &mut dyn ErasedRegistry) -> Result<()>;
}

struct Plan<T: Entity> {
    statements: TableStatements,
    inserts: Vec<Tracked<T>>,
    /// Written entities, grouped by the set of columns that changed.
    updates: Vec<Vec<Tracked<T>>>,
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
            // failed flush would have to restore.
            tracked.mark_synced();
        } else {
            groups.entry(changed).or_default().push(tracked);
        }
    }
    let inserts: Vec<Tracked<T>> =
        registry.pending_inserts.iter().filter(|t| !scope.skip.contains(&t.address())).cloned().collect();
    let deletes: Vec<Tracked<T>> =
        if scope.last { registry.pending_deletes.values().cloned().collect() } else { Vec::new() };
    if inserts.is_empty() && groups.is_empty() && deletes.is_empty() {
        return Ok(None);
    }

    let mut statements = TableStatements::default();
    let mut updates = Vec::new();
    if !inserts.is_empty() {
        let columns = meta.insert_columns() & !scope.deferred;
        let order: Vec<usize> = sql::indexes(columns).collect();
        statements.inserts.push(Statement {
            sql: sql::insert(meta, columns),
            params: bind_columns(&inserts, &order),
            returns_rows: meta.generated_columns().next().is_some(),
        });
        if scope.deferred != 0 {
            statements.updates.push(Statement {
                sql: sql::update(meta, scope.deferred),
                params: bind_columns(&inserts, &sql::update_parameters(meta, scope.deferred)),
                returns_rows: true,
            });
            updates.push(inserts.clone());
        }
    }
    for (&changed, rows) in &groups {
        statements.updates.push(Statement {
            sql: sql::update(meta, changed),
            params: bind_columns(rows, &sql::update_parameters(meta, changed)),
            returns_rows: true,
        });
    }
    if !deletes.is_empty() {
        statements.deletes.push(Statement {
            sql: sql::delete(meta),
            params: bind_columns(&deletes, &sql::update_parameters(meta, 0)),
            returns_rows: true,
        });
    }
    updates.extend(groups.into_values());
    Ok(Some(Box::new(Plan { statements, inserts, updates, deletes })))
}

impl<T: Entity> Plan<T> {
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
        let rows = match outcomes.inserts.first() {
            Some(Outcome::Rows(rows)) => rows.as_slice(),
            _ => &[],
        };
        for (n, tracked) in self.inserts.iter().enumerate() {
            let mut entity = tracked.get();
            if let Some(row) = rows.get(n) {
                entity.set_generated(row)?;
            }
            registry.provisional.insert(tracked.address(), entity.key());
        }
        Ok(())
    }

    fn needs_verification(&self) -> bool {
        !self.updates.is_empty() || (!self.deletes.is_empty() && T::META.version_column().is_some())
    }

    fn verify(&self, outcomes: &TableOutcomes) -> Result<()> {
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

    fn apply(self: Box<Self>, outcomes: TableOutcomes, registry: &mut dyn ErasedRegistry) -> Result<()> {
        let registry =
            registry.as_any_mut().downcast_mut::<Registry<T>>().ok_or(Error::NotInSession { entity: T::META.name })?;
        let in_savepoint = !registry.savepoints.is_empty();
        let generated = match outcomes.inserts.first() {
            Some(Outcome::Rows(rows)) if T::META.generated_columns().next().is_some() => rows.as_slice(),
            _ => &[],
        };
        if self.inserts.len() == registry.pending_inserts.len() {
            // The planned inserts are a subset of the pending ones: all of them.
            registry.pending_inserts.clear();
        } else {
            let inserted: HashSet<usize> = self.inserts.iter().map(Tracked::address).collect();
            registry.pending_inserts.retain(|t| !inserted.contains(&t.address()));
        }
        registry.identity.reserve(self.inserts.len());
        for (n, tracked) in self.inserts.into_iter().enumerate() {
            let key = {
                let mut state = tracked.state().write();
                if let Some(row) = generated.get(n) {
                    state.current.set_generated(row)?;
                }
                state.snapshot = None;
                state.current.key()
            };
            registry.identity.insert(key, tracked.clone());
            if let Some(undo) = registry.savepoints.last_mut() {
                undo.inserted.push(tracked);
            }
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
        Ok(())
    }
}

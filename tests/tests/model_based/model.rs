//! The model: a plain in-memory description of what the database holds and
//! what each handle of the session reads, under the documented semantics
//! (docs/guide/02-sessions.md, `Session`'s rustdoc).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use orm_core::ErrorKind;

use super::schema::{Key, Row, Table, Val, TABLES};

pub type Tables = BTreeMap<Table, BTreeMap<Key, Row>>;

/// Where a handle stands in the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Added, not inserted yet.
    Pending,
    /// In the identity map, under the key of its snapshot.
    Persistent,
    /// In the identity map, to be deleted by the next flush.
    PendingDelete,
    /// No longer (or never again) tracked: plain data.
    Detached,
}

#[derive(Clone, Debug)]
pub struct Handle {
    pub table: Table,
    pub state: State,
    /// What the handle reads.
    pub current: Row,
    /// The values as last loaded or flushed (meaningless while pending).
    pub snapshot: Row,
    /// Made by `add`, not by a load.
    pub added: bool,
    /// The row as first loaded, or as added and then as inserted.
    pub loaded: Row,
}

/// What the session holds that a savepoint's rollback restores.
#[derive(Clone, Debug, Default)]
pub struct Core {
    /// Every handle the session gave out, in order.
    pub handles: Vec<Handle>,
    /// `(child handle, column)` to the pending parent handle whose key the
    /// flush fills in.
    pub links: BTreeMap<(usize, usize), usize>,
    /// The rows this transaction wrote: `None` for a deleted one.
    pub writes: BTreeMap<(Table, Key), Option<Row>>,
}

/// The outcome the model allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    Ok,
    /// An error of one of these kinds.
    Err(HashSet<ErrorKind>),
    /// Success, or an error of one of these kinds: which statement runs
    /// first decides, and the documented semantics do not say.
    Either(HashSet<ErrorKind>),
    /// Any error: the transaction failed, or the semantics are not fixed.
    AnyErr,
}

impl Expect {
    pub fn allows_ok(&self) -> bool {
        matches!(self, Expect::Ok | Expect::Either(_))
    }

    pub fn allows_err(&self, kind: ErrorKind) -> bool {
        match self {
            Expect::Ok => false,
            Expect::Err(kinds) | Expect::Either(kinds) => kinds.contains(&kind),
            Expect::AnyErr => true,
        }
    }
}

/// A flush the model worked out: what it must return, and the session
/// after it if it succeeds.
pub struct FlushPlan {
    pub expect: Expect,
    pub after: Core,
    /// Rows whose locks the transaction holds after it.
    pub locks: Vec<(Table, Key)>,
}

#[derive(Clone, Debug)]
pub struct SavepointModel {
    pub saved: Core,
    /// Its `Savepoint` was consumed by a failed `release_nested`.
    pub lost: bool,
}

#[derive(Clone, Debug)]
pub struct Model {
    /// What is committed.
    pub committed: Tables,
    pub core: Core,
    pub savepoints: Vec<SavepointModel>,
    /// The rows another session must not write or delete: they are locked
    /// by this session's transaction and the writer would wait.
    pub locked: BTreeSet<(Table, Key)>,
    /// A statement failed and no savepoint rollback recovered.
    pub failed: bool,
}

/// A placeholder key for an insert that did not run.
fn placeholder(handle: usize) -> i64 {
    1_000_000 + i64::try_from(handle).unwrap_or(0)
}

fn kinds(list: &[ErrorKind]) -> HashSet<ErrorKind> {
    list.iter().copied().collect()
}

impl Model {
    pub fn new() -> Self {
        let committed =
            TABLES.iter().map(|&t| (t, t.seed_rows().into_iter().map(|row| (t.key_of(&row), row)).collect())).collect();
        Model { committed, core: Core::default(), savepoints: Vec::new(), locked: BTreeSet::new(), failed: false }
    }

    /// The table as this session's transaction reads it.
    pub fn view(&self, table: Table) -> BTreeMap<Key, Row> {
        view_of(&self.committed, &self.core.writes, table)
    }

    /// The handle tracked under `key`, if any.
    pub fn identity(&self, table: Table, key: &Key) -> Option<usize> {
        self.core.handles.iter().position(|h| {
            h.table == table
                && matches!(h.state, State::Persistent | State::PendingDelete)
                && &table.key_of(&h.snapshot) == key
        })
    }

    /// Whether a flush has anything to write.
    pub fn has_pending_work(&self) -> bool {
        !self.core.links.is_empty()
            || self.core.handles.iter().any(|h| match h.state {
                State::Pending | State::PendingDelete => true,
                State::Persistent => h.current != h.snapshot,
                State::Detached => false,
            })
    }

    /// Works out a flush. `generated` gives the key the database generated
    /// for a pending handle when the real flush succeeded.
    pub fn plan_flush(&self, generated: Option<&dyn Fn(usize) -> i64>) -> FlushPlan {
        let mut after = self.core.clone();
        if !self.has_pending_work() {
            return FlushPlan { expect: Expect::Ok, after, locks: Vec::new() };
        }
        if self.failed {
            return FlushPlan { expect: Expect::AnyErr, after, locks: Vec::new() };
        }
        let mut errors = HashSet::new();
        let handles = &self.core.handles;
        let Some(mut rows) = self.rows_to_write(generated, &mut errors) else {
            // A link to a parent that will never be inserted: the
            // semantics do not say what happens.
            return FlushPlan { expect: Expect::AnyErr, after, locks: Vec::new() };
        };
        let mut tables: Tables = TABLES.iter().map(|&t| (t, self.view(t))).collect();
        let start = tables.clone();
        let mut touched: Vec<(Table, Key)> = Vec::new();
        let mut deleted_parents = BTreeSet::new();
        for h in handles.iter().filter(|h| h.state == State::PendingDelete) {
            let key = h.table.key_of(&h.snapshot);
            let table = tables.get_mut(&h.table).expect("every table");
            let version = h.table.spec().version;
            match table.get(&key) {
                None if version.is_some() => {
                    errors.insert(ErrorKind::StaleData);
                }
                Some(row) if version.is_some_and(|v| row[v] != h.snapshot[v]) => {
                    errors.insert(ErrorKind::StaleData);
                }
                _ => {
                    table.remove(&key);
                }
            }
            if h.table == Table::Parent {
                deleted_parents.insert(key[0].clone());
            }
            touched.push((h.table, key));
        }
        let mut updated = BTreeSet::new();
        let mut duplicates = Vec::new();
        for (&i, row) in &mut rows {
            let h = &handles[i];
            let spec = h.table.spec();
            let table = tables.get_mut(&h.table).expect("every table");
            if h.state == State::Pending {
                let key = h.table.key_of(row);
                if table.contains_key(&key) {
                    duplicates.push((h.table, row.clone()));
                } else {
                    table.insert(key.clone(), row.clone());
                }
                touched.push((h.table, key));
                continue;
            }
            if *row == h.snapshot || errors.contains(&ErrorKind::PrimaryKeyChanged) {
                continue;
            }
            updated.insert(i);
            let key = h.table.key_of(&h.snapshot);
            let Some(stored) = table.get_mut(&key) else {
                errors.insert(ErrorKind::StaleData);
                continue;
            };
            if spec.version.is_some_and(|v| stored[v] != h.snapshot[v]) {
                errors.insert(ErrorKind::StaleData);
                continue;
            }
            for column in 0..row.len() {
                if row[column] != h.snapshot[column] {
                    stored[column] = row[column].clone();
                }
            }
            if let Some(v) = spec.version {
                let Val::Int(old) = h.snapshot[v] else { unreachable!("versions are integers") };
                let next = i32::try_from(old).map_or(0, |old| old.wrapping_add(1));
                stored[v] = Val::Int(i64::from(next));
                row[v] = Val::Int(i64::from(next));
            }
            touched.push((h.table, key));
        }
        let hazard = Self::check_outcome(&start, &tables, &deleted_parents, &mut errors);
        Self::check_duplicates(&duplicates, &tables, &mut errors);
        let mut locks = touched.clone();
        for (&i, row) in &rows {
            for &column in handles[i].table.spec().foreign_keys {
                if row[column] != Val::Null {
                    locks.push((Table::Parent, vec![row[column].clone()]));
                }
            }
        }
        let expect = if !errors.is_empty() {
            if hazard {
                errors.extend([ErrorKind::UniqueViolation, ErrorKind::ForeignKeyViolation]);
            }
            Expect::Err(errors)
        } else if hazard {
            Expect::Either(kinds(&[ErrorKind::UniqueViolation, ErrorKind::ForeignKeyViolation]))
        } else {
            Expect::Ok
        };
        Self::take_flushed(&mut after, &rows, &updated, &tables, touched);
        FlushPlan { expect, after, locks }
    }

    /// Whether a new row's key is one the session tracks through a
    /// persistent handle: the flush refuses it once the insert succeeded
    /// (another writer deleted the row; otherwise the key fails first).
    fn inserts_tracked_key(&self, rows: &BTreeMap<usize, Row>) -> bool {
        let handles = &self.core.handles;
        rows.iter().any(|(&i, row)| {
            let h = &handles[i];
            let key = h.table.key_of(row);
            h.state == State::Pending
                && !h.table.spec().generated_key
                && handles.iter().any(|other| {
                    other.table == h.table
                        && other.state == State::Persistent
                        && other.table.key_of(&other.snapshot) == key
                })
        })
    }

    /// The session after a flush that succeeded: inserted handles are
    /// persistent, updated ones have new snapshots, deleted ones are gone,
    /// and the transaction holds the rows written.
    fn take_flushed(
        after: &mut Core,
        rows: &BTreeMap<usize, Row>,
        updated: &BTreeSet<usize>,
        tables: &Tables,
        touched: Vec<(Table, Key)>,
    ) {
        for (i, h) in after.handles.iter_mut().enumerate() {
            match h.state {
                State::Pending => {
                    h.current.clone_from(&rows[&i]);
                    h.snapshot.clone_from(&rows[&i]);
                    h.loaded.clone_from(&rows[&i]);
                    h.state = State::Persistent;
                }
                State::Persistent if updated.contains(&i) => {
                    h.current.clone_from(&rows[&i]);
                    h.snapshot.clone_from(&rows[&i]);
                }
                State::PendingDelete => h.state = State::Detached,
                _ => {}
            }
        }
        after.links.clear();
        for (table, key) in touched {
            let row = tables[&table].get(&key).cloned();
            after.writes.insert((table, key), row);
        }
    }

    /// The rows of pending and persistent handles as a flush writes them:
    /// generated keys, then keys filled in from links. `None` for a link to
    /// a parent that will never be inserted. Notes in `errors` what the
    /// rows themselves make fail: a changed key, a new row whose key the
    /// session tracks already.
    fn rows_to_write(
        &self,
        generated: Option<&dyn Fn(usize) -> i64>,
        errors: &mut HashSet<ErrorKind>,
    ) -> Option<BTreeMap<usize, Row>> {
        let handles = &self.core.handles;
        let mut rows: BTreeMap<usize, Row> = BTreeMap::new();
        for (i, h) in handles.iter().enumerate() {
            match h.state {
                State::Pending => {
                    let mut row = h.current.clone();
                    if h.table.spec().generated_key {
                        row[0] = Val::Int(generated.map_or_else(|| placeholder(i), |g| g(i)));
                    }
                    rows.insert(i, row);
                }
                State::Persistent => {
                    if h.table.key_of(&h.current) != h.table.key_of(&h.snapshot) {
                        errors.insert(ErrorKind::PrimaryKeyChanged);
                    }
                    rows.insert(i, h.current.clone());
                }
                State::PendingDelete | State::Detached => {}
            }
        }
        for (&(child, column), &parent) in &self.core.links {
            // A child the flush does not write (deleted, or detached) fills
            // nothing in from its link, wherever the link points.
            if !rows.contains_key(&child) {
                continue;
            }
            let key = match handles[parent].state {
                State::Pending => rows[&parent][0].clone(),
                State::Persistent | State::PendingDelete => handles[parent].snapshot[0].clone(),
                State::Detached => return None,
            };
            if let Some(row) = rows.get_mut(&child) {
                row[column] = key;
            }
        }
        if self.inserts_tracked_key(&rows) {
            errors.insert(ErrorKind::AlreadyTracked);
        }
        Some(rows)
    }

    /// Checks the tables after a flush: the errors their constraints
    /// raise, and whether some order of the flush's statements could fail
    /// on the way to a valid outcome (a unique value or a parent's
    /// children moving between rows in one flush).
    fn check_outcome(
        start: &Tables,
        tables: &Tables,
        deleted_parents: &BTreeSet<Val>,
        errors: &mut HashSet<ErrorKind>,
    ) -> bool {
        let mut hazard = false;
        for &t in &TABLES {
            let spec = t.spec();
            if let Some(u) = spec.unique {
                let values: Vec<&Val> = tables[&t].values().map(|row| &row[u]).collect();
                if values.iter().collect::<BTreeSet<_>>().len() != values.len() {
                    errors.insert(ErrorKind::UniqueViolation);
                }
                for (key, row) in &tables[&t] {
                    let taken_from_other = start[&t].iter().any(|(other, old)| other != key && old[u] == row[u]);
                    let changed = start[&t].get(key).is_none_or(|old| old != row);
                    if taken_from_other && changed {
                        hazard = true;
                    }
                }
            }
            for &column in spec.foreign_keys {
                for (key, row) in &tables[&t] {
                    if row[column] != Val::Null && !tables[&Table::Parent].contains_key(&vec![row[column].clone()]) {
                        errors.insert(ErrorKind::ForeignKeyViolation);
                    }
                    let moved_away = start[&t]
                        .get(key)
                        .is_some_and(|old| old[column] != row[column] && deleted_parents.contains(&old[column]));
                    if moved_away {
                        hazard = true;
                    }
                }
            }
        }
        hazard
    }

    /// The errors of inserts whose key is taken: a unique violation, and
    /// maybe a foreign-key one. A duplicate is left out of the tables, but
    /// the database may run it before the row it collides with (in an
    /// earlier statement, when that row waits for a pending parent's key):
    /// then its own missing parent fails first.
    fn check_duplicates(duplicates: &[(Table, Row)], tables: &Tables, errors: &mut HashSet<ErrorKind>) {
        for (table, row) in duplicates {
            errors.insert(ErrorKind::UniqueViolation);
            for &column in table.spec().foreign_keys {
                if row[column] != Val::Null && !tables[&Table::Parent].contains_key(&vec![row[column].clone()]) {
                    errors.insert(ErrorKind::ForeignKeyViolation);
                }
            }
        }
    }

    /// Takes the outcome of a successful flush.
    pub fn apply(&mut self, plan: FlushPlan) {
        self.core = plan.after;
        self.locked.extend(plan.locks);
    }

    /// A row just read from the database: its tracked handle, or a new one.
    pub fn track(&mut self, table: Table, row: Row) -> usize {
        if let Some(i) = self.identity(table, &table.key_of(&row)) {
            return i;
        }
        self.core.handles.push(Handle {
            table,
            state: State::Persistent,
            current: row.clone(),
            snapshot: row.clone(),
            added: false,
            loaded: row,
        });
        self.core.handles.len() - 1
    }

    pub fn add(&mut self, table: Table, row: Row) -> usize {
        self.core.handles.push(Handle {
            table,
            state: State::Pending,
            current: row.clone(),
            snapshot: row.clone(),
            added: true,
            loaded: row,
        });
        self.core.handles.len() - 1
    }

    fn forget_links(&mut self, child: usize) {
        self.core.links.retain(|&(c, _), _| c != child);
    }

    /// `delete`: `Err` if the handle is not in the session.
    pub fn delete(&mut self, i: usize) -> Result<(), ErrorKind> {
        match self.core.handles[i].state {
            State::Pending => {
                self.core.handles[i].state = State::Detached;
                self.forget_links(i);
                Ok(())
            }
            State::Persistent | State::PendingDelete => {
                self.core.handles[i].state = State::PendingDelete;
                Ok(())
            }
            State::Detached => Err(ErrorKind::NotInSession),
        }
    }

    /// `expunge`: whether the session was tracking the handle.
    pub fn expunge(&mut self, i: usize) -> bool {
        let h = &mut self.core.handles[i];
        if h.state == State::Detached {
            return false;
        }
        h.state = State::Detached;
        self.forget_links(i);
        true
    }

    /// `refresh` of a tracked handle (not one pending deletion).
    pub fn refresh(&mut self, i: usize) -> Result<(), Expect> {
        if self.failed {
            return Err(Expect::AnyErr);
        }
        let h = &self.core.handles[i];
        if h.state != State::Persistent {
            return Err(Expect::Err(kinds(&[ErrorKind::NotInSession])));
        }
        let Some(row) = self.view(h.table).get(&h.table.key_of(&h.snapshot)).cloned() else {
            return Err(Expect::Err(kinds(&[ErrorKind::NotFound])));
        };
        let h = &mut self.core.handles[i];
        h.current.clone_from(&row);
        h.snapshot = row;
        self.forget_links(i);
        Ok(())
    }

    /// `set_parent` to a parent already in the database: a write.
    pub fn set_parent(&mut self, child: usize, column: usize, parent: usize) -> Result<(), ErrorKind> {
        let in_session = |h: &Handle| h.state != State::Detached;
        if !in_session(&self.core.handles[parent]) || !in_session(&self.core.handles[child]) {
            return Err(ErrorKind::NotInSession);
        }
        self.core.links.remove(&(child, column));
        if self.core.handles[parent].state == State::Pending {
            self.core.links.insert((child, column), parent);
        } else {
            let key = self.core.handles[parent].snapshot[0].clone();
            self.core.handles[child].current[column] = key;
        }
        Ok(())
    }

    /// An `UPDATE` through the session's transaction.
    pub fn raw_bump(&mut self, key: &Key) -> u64 {
        let Some(mut row) = self.view(Table::Account).get(key).cloned() else { return 0 };
        let Val::Int(balance) = row[1] else { unreachable!("balances are integers") };
        row[1] = Val::Int(balance + 1);
        self.core.writes.insert((Table::Account, key.clone()), Some(row));
        self.locked.insert((Table::Account, key.clone()));
        1
    }

    pub fn begin_nested(&mut self) {
        self.savepoints.push(SavepointModel { saved: self.core.clone(), lost: false });
    }

    /// Rolls back to the savepoint at `depth`, as `rollback_nested`
    /// documents it.
    pub fn rollback_nested(&mut self, depth: usize) {
        let saved = self.savepoints[depth].saved.clone();
        self.savepoints.truncate(depth);
        let before = saved.handles.len();
        // Handles that were plain data already keep what was written to them.
        let mut handles: Vec<Handle> = saved
            .handles
            .into_iter()
            .zip(&self.core.handles)
            .map(|(saved, now)| if saved.state == State::Detached { now.clone() } else { saved })
            .collect();
        for h in self.core.handles.drain(before..) {
            let mut h = h;
            if h.added && h.state == State::Detached {
                // Forgotten already: plain data.
            } else if h.added {
                // Inserted (or added) since: leaves the session, with the
                // values it was inserted (or added) with: its later updates
                // are undone like any other.
                h.state = State::Detached;
                h.current.clone_from(&h.loaded);
            } else {
                // Loaded since: back to the values it was loaded with.
                h.current.clone_from(&h.loaded);
                h.snapshot.clone_from(&h.loaded);
                if h.state == State::PendingDelete || h.state == State::Detached {
                    h.state = State::Persistent;
                }
            }
            handles.push(h);
        }
        self.core = Core { handles, links: saved.links, writes: saved.writes };
        self.failed = false;
    }

    pub fn release_nested(&mut self, depth: usize) {
        self.savepoints.truncate(depth);
    }

    /// The session ended: committed (`true`) or rolled back.
    pub fn end(&mut self, committed: bool) {
        if committed {
            for t in TABLES {
                let view = self.view(t);
                self.committed.insert(t, view);
            }
        }
        self.core = Core::default();
        self.savepoints.clear();
        self.locked.clear();
        self.failed = false;
    }

    /// The committed rows another session may change without waiting
    /// for this one's locks (and, to delete, that nothing references).
    pub fn writable_rows(&self, table: Table, delete: bool) -> Vec<Key> {
        let referenced = |key: &Key| {
            let in_tables = |tables: &BTreeMap<Key, Row>| {
                tables.values().any(|row| Table::Child.spec().foreign_keys.iter().any(|&c| row[c] == key[0]))
            };
            in_tables(&self.committed[&Table::Child]) || in_tables(&self.view(Table::Child))
        };
        self.committed[&table]
            .keys()
            .filter(|key| !self.locked.contains(&(table, (*key).clone())))
            .filter(|key| !self.core.writes.contains_key(&(table, (*key).clone())))
            .filter(|key| !(delete && table == Table::Parent && referenced(key)))
            .cloned()
            .collect()
    }
}

fn view_of(committed: &Tables, writes: &BTreeMap<(Table, Key), Option<Row>>, table: Table) -> BTreeMap<Key, Row> {
    let mut rows = committed[&table].clone();
    for ((t, key), row) in writes {
        if *t == table {
            match row {
                Some(row) => rows.insert(key.clone(), row.clone()),
                None => rows.remove(key),
            };
        }
    }
    rows
}

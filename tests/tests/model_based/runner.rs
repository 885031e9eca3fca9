//! Runs a program against the real session and the model side by side,
//! comparing after every step: the result (value or error kind) of the
//! operation, what every handle reads, and after every commit or rollback
//! the committed tables.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use orm_core::{Database, Error, ErrorKind, Savepoint, Session, Tracked};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use super::model::{Expect, FlushPlan, Model, State, Tables};
use super::ops::{self, Fault, Op};
use super::schema::{self, Account, AnyHandle, Child, Key, ModelEntity, Pair, Parent, Row, Table, Val, RESET, TABLES};

/// Calls a method generic over the entity with the entity of `table`.
macro_rules! on_table {
    (await $table:expr, $self:ident . $method:ident ( $($arg:expr),* )) => {
        match $table {
            Table::Parent => $self.$method::<Parent>($($arg),*).await,
            Table::Child => $self.$method::<Child>($($arg),*).await,
            Table::Account => $self.$method::<Account>($($arg),*).await,
            Table::Pair => $self.$method::<Pair>($($arg),*).await,
        }
    };
    ($table:expr, $self:ident . $method:ident ( $($arg:expr),* )) => {
        match $table {
            Table::Parent => $self.$method::<Parent>($($arg),*),
            Table::Child => $self.$method::<Child>($($arg),*),
            Table::Account => $self.$method::<Account>($($arg),*),
            Table::Pair => $self.$method::<Pair>($($arg),*),
        }
    };
}

/// No step may take longer: a hang is a failure, not a stuck test.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

type Checked<T = ()> = Result<T, String>;

/// What a run did, for the figures in the docs.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub programs: u64,
    pub steps: u64,
    /// Flushes and commits with a fault injected.
    pub faults: u64,
    /// Those the fault cut off or made fail.
    pub faults_hit: u64,
}

pub struct Runner<'a> {
    db: &'a Database,
    /// Another session's connection: the concurrent writer.
    writer: &'a Client,
    session: Option<Session>,
    handles: Vec<AnyHandle>,
    savepoints: Vec<Option<Savepoint>>,
    model: Model,
    steps: u64,
    faults: u64,
    faults_hit: u64,
}

async fn timed<T>(what: &str, future: impl Future<Output = T>) -> Checked<T> {
    tokio::time::timeout(STEP_TIMEOUT, future).await.map_err(|_| format!("{what} hung for {STEP_TIMEOUT:?}"))
}

/// Checks a result against what the model allows; `Ok(true)` if it succeeded.
fn check<T>(expect: &Expect, result: &Result<T, Error>) -> Checked<bool> {
    match result {
        Ok(_) if expect.allows_ok() => Ok(true),
        Ok(_) => Err(format!("succeeded, the model expected {expect:?}")),
        Err(error) if expect.allows_err(error.kind()) => Ok(false),
        Err(error) => Err(format!("failed with {error:?} ({:?}), the model expected {expect:?}", error.kind())),
    }
}

/// Runs one program on a database reset to the seed rows.
pub async fn run(db: &Database, writer: &Client, program: &[Op], counts: &mut Counts) -> Checked {
    timed("reset", writer.batch_execute(RESET)).await?.map_err(|e| format!("reset: {e}"))?;
    let mut runner = Runner {
        db,
        writer,
        session: None,
        handles: Vec::new(),
        savepoints: Vec::new(),
        model: Model::new(),
        steps: 0,
        faults: 0,
        faults_hit: 0,
    };
    for (n, op) in program.iter().enumerate() {
        runner.step(op).await.map_err(|e| format!("step {n} ({op:?}): {e}"))?;
        runner.compare_handles().map_err(|e| format!("after step {n} ({op:?}): {e}"))?;
    }
    let end = runner.step(&Op::Rollback).await.map_err(|e| format!("final rollback: {e}"));
    counts.programs += 1;
    counts.steps += runner.steps;
    counts.faults += runner.faults;
    counts.faults_hit += runner.faults_hit;
    end
}

impl Runner<'_> {
    fn session(&mut self) -> &mut Session {
        self.session.get_or_insert_with(|| self.db.session())
    }

    /// Index `n` modulo the handles of `table` (or of all tables).
    fn pick(&self, n: u8, table: Option<Table>) -> Option<usize> {
        let candidates: Vec<usize> =
            (0..self.handles.len()).filter(|&i| table.is_none_or(|t| self.model.core.handles[i].table == t)).collect();
        (!candidates.is_empty()).then(|| candidates[usize::from(n) % candidates.len()])
    }

    fn handle<E: ModelEntity>(&self, i: usize) -> Tracked<E> {
        E::unwrap(&self.handles[i]).expect("the model and the session agree on tables").clone()
    }

    fn compare_handles(&self) -> Checked {
        for (i, (handle, model)) in self.handles.iter().zip(&self.model.core.handles).enumerate() {
            let row = handle.row();
            if row != model.current {
                return Err(format!(
                    "handle {i} reads {row:?}, the model says {:?} ({:?})",
                    model.current, model.state
                ));
            }
        }
        Ok(())
    }

    /// The keys the database generated for the pending handles, read from
    /// the session's handles after a flush that succeeded.
    fn generated_keys(&self) -> BTreeMap<usize, i64> {
        self.model
            .core
            .handles
            .iter()
            .enumerate()
            .filter(|(_, h)| h.state == State::Pending && h.table.spec().generated_key)
            .map(|(i, _)| match self.handles[i].row()[0] {
                Val::Int(key) => (i, key),
                ref other => panic!("generated keys are integers, got {other:?}"),
            })
            .collect()
    }

    /// The model's flush; `succeeded`: the real one did, and the keys the
    /// database generated are on the handles.
    fn plan_flush(&self, succeeded: bool) -> FlushPlan {
        let keys = self.generated_keys();
        let generated = |i: usize| keys[&i];
        self.model.plan_flush(succeeded.then_some(&generated as &dyn Fn(usize) -> i64))
    }

    /// The model's side of an autoflush that ran (or not) before an
    /// operation that ended with `result`. `Ok(false)`: the operation
    /// failed as allowed, nothing more to compare.
    fn autoflush<T>(&mut self, needed: bool, result: &Result<T, Error>) -> Checked<bool> {
        if !needed || !self.model.has_pending_work() {
            return match result {
                Err(error) if self.model.failed => {
                    let _ = error;
                    Ok(false)
                }
                Err(error) => Err(format!("failed with {error:?}, the model expected success")),
                Ok(_) if self.model.failed && needed => Err("succeeded in a failed transaction".to_owned()),
                Ok(_) => Ok(true),
            };
        }
        let plan = self.plan_flush(result.is_ok());
        let ok = check(&plan.expect, result).map_err(|e| format!("autoflush: {e}"))?;
        if ok {
            self.model.apply(plan);
        }
        Ok(ok)
    }

    /// Compares the handles an operation returned with the model's, and
    /// takes the new ones.
    fn take_loaded(&mut self, loaded: Vec<AnyHandle>, expected: &[usize]) -> Checked {
        if loaded.len() != expected.len() {
            return Err(format!("returned {} entities, the model expected {}", loaded.len(), expected.len()));
        }
        for (handle, &want) in loaded.into_iter().zip(expected) {
            let known = self.handles.iter().position(|h| same(h, &handle));
            match known {
                Some(i) if i == want => {}
                None if want == self.handles.len() => self.handles.push(handle),
                other => return Err(format!("returned handle {other:?}, the model expected handle {want}")),
            }
        }
        Ok(())
    }

    async fn step(&mut self, op: &Op) -> Checked {
        self.steps += 1;
        match op.clone() {
            Op::Add { table, seed } => {
                self.add(table, &[ops::new_row(table, seed)]);
                Ok(())
            }
            Op::AddAll { table, seeds } => {
                self.add(table, &seeds.iter().map(|&s| ops::new_row(table, s)).collect::<Vec<_>>());
                Ok(())
            }
            Op::Get { table, key } => on_table!(await table, self.get(ops::key(table, key))),
            Op::GetMany { table, keys } => {
                on_table!(await table, self.get_many(keys.iter().map(|&k| ops::key(table, k)).collect()))
            }
            Op::Query { table, upto } => on_table!(await table, self.query(i64::from(upto % 7))),
            Op::Write { handle, field, value } => {
                let Some(i) = self.pick(handle, None) else { return self.skip() };
                let (column, value) = ops::field(self.model.core.handles[i].table, field, value);
                self.model.core.handles[i].current[column] = value;
                let row = self.model.core.handles[i].current.clone();
                on_table!(self.model.core.handles[i].table, self.write(i, &row));
                Ok(())
            }
            Op::Delete { handle } => {
                let Some(i) = self.pick(handle, None) else { return self.skip() };
                on_table!(self.model.core.handles[i].table, self.delete(i))
            }
            Op::Expunge { handle } => {
                // What a savepoint's rollback does with an entity expunged
                // inside it is not documented.
                let Some(i) = self.pick(handle, None).filter(|_| self.model.savepoints.is_empty()) else {
                    return self.skip();
                };
                on_table!(self.model.core.handles[i].table, self.expunge(i))
            }
            Op::Refresh { handle } => {
                // Refreshing an entity pending deletion is not documented.
                let Some(i) =
                    self.pick(handle, None).filter(|&i| self.model.core.handles[i].state != State::PendingDelete)
                else {
                    return self.skip();
                };
                on_table!(await self.model.core.handles[i].table, self.refresh(i))
            }
            Op::Flush => self.flush().await,
            Op::BeginNested => self.begin_nested().await,
            Op::RollbackNested { level } => self.close_nested(level, false).await,
            Op::ReleaseNested { level } => self.close_nested(level, true).await,
            Op::Commit => self.commit().await,
            Op::Rollback => self.end_without_commit(true).await,
            Op::Drop => self.end_without_commit(false).await,
            Op::SetParent { child, parent, sponsor } => self.set_parent(child, parent, sponsor),
            Op::LoadChildren { parents, sponsor } => self.load_children(&parents, sponsor).await,
            Op::RawBump { key } => self.raw_bump(key).await,
            Op::RawFail => self.raw_fail().await,
            Op::WriterUpdate { table, pick } => self.writer(table, pick, false).await,
            Op::WriterDelete { table, pick } => self.writer(table, pick, true).await,
            Op::Faulty { fault, tens_of_micros, commit } => Box::pin(self.faulty(fault, tens_of_micros, commit)).await,
        }
    }

    /// An operation with nothing to act on: not counted as a step.
    #[expect(clippy::unnecessary_wraps, reason = "step functions end with `return self.skip()`")]
    fn skip(&mut self) -> Checked {
        self.steps -= 1;
        Ok(())
    }

    fn add(&mut self, table: Table, rows: &[Row]) {
        for row in rows {
            self.model.add(table, row.clone());
        }
        let session = self.session.get_or_insert_with(|| self.db.session());
        let added: Vec<AnyHandle> = match table {
            Table::Parent => {
                session.add_all(rows.iter().map(Parent::from_model_row)).into_iter().map(Parent::wrap).collect()
            }
            Table::Child => {
                session.add_all(rows.iter().map(Child::from_model_row)).into_iter().map(Child::wrap).collect()
            }
            Table::Account => {
                session.add_all(rows.iter().map(Account::from_model_row)).into_iter().map(Account::wrap).collect()
            }
            Table::Pair => session.add_all(rows.iter().map(Pair::from_model_row)).into_iter().map(Pair::wrap).collect(),
        };
        self.handles.extend(added);
    }

    async fn get<E: ModelEntity>(&mut self, key: Key) -> Checked {
        let model_key = key.clone();
        let result = timed("get", self.session().get::<E>(E::model_key(&key))).await?;
        let pending_delete = self.model.core.handles.iter().any(|h| {
            h.table == E::TABLE && h.state == State::PendingDelete && E::TABLE.key_of(&h.snapshot) == model_key
        });
        let expected: Vec<usize> = if pending_delete {
            check(&Expect::Ok, &result)?;
            Vec::new()
        } else if let Some(i) = self.model.identity(E::TABLE, &model_key) {
            check(&Expect::Ok, &result)?;
            vec![i]
        } else {
            if !self.autoflush(true, &result)? {
                return Ok(());
            }
            match self.model.view(E::TABLE).get(&model_key).cloned() {
                Some(row) => vec![self.model.track(E::TABLE, row)],
                None => Vec::new(),
            }
        };
        let loaded = result.map_err(|e| e.to_string())?.into_iter().map(E::wrap).collect();
        self.take_loaded(loaded, &expected)
    }

    async fn get_many<E: ModelEntity>(&mut self, keys: Vec<Key>) -> Checked {
        let sut_keys: Vec<E::Key> = keys.iter().map(E::model_key).collect();
        let result = timed("get_many", self.session().get_many::<E>(&sut_keys)).await?;
        let tracked = |model: &Model, key: &Key| {
            model.core.handles.iter().any(|h| {
                h.table == E::TABLE
                    && matches!(h.state, State::Persistent | State::PendingDelete)
                    && &E::TABLE.key_of(&h.snapshot) == key
            })
        };
        let missing: Vec<Key> = keys.iter().filter(|k| !tracked(&self.model, k)).cloned().collect();
        if !self.autoflush(!missing.is_empty(), &result)? {
            return Ok(());
        }
        let view = self.model.view(E::TABLE);
        let mut expected = Vec::new();
        for key in &keys {
            let pending_delete = self.model.core.handles.iter().any(|h| {
                h.table == E::TABLE && h.state == State::PendingDelete && &E::TABLE.key_of(&h.snapshot) == key
            });
            if pending_delete {
                continue;
            }
            if let Some(i) = self.model.identity(E::TABLE, key) {
                expected.push(i);
            } else if let Some(row) = view.get(key).filter(|_| missing.contains(key)) {
                expected.push(self.model.track(E::TABLE, row.clone()));
            }
        }
        let loaded = result.map_err(|e| e.to_string())?.into_iter().map(E::wrap).collect();
        self.take_loaded(loaded, &expected)
    }

    async fn query<E: ModelEntity>(&mut self, upto: i64) -> Checked {
        let (condition, orders) = E::up_to(upto);
        let mut query = self.session().query::<E>().filter(condition);
        for order in orders {
            query = query.order_by(order);
        }
        let result = timed("query", query.all()).await?;
        if !self.autoflush(true, &result)? {
            return Ok(());
        }
        let rows: Vec<Row> = self.model.view(E::TABLE).into_values().filter(|row| row[0] <= Val::Int(upto)).collect();
        let expected: Vec<usize> = rows.into_iter().map(|row| self.model.track(E::TABLE, row)).collect();
        let loaded = result.map_err(|e| e.to_string())?.into_iter().map(E::wrap).collect();
        self.take_loaded(loaded, &expected)
    }

    fn write<E: ModelEntity>(&self, i: usize, row: &Row) {
        let handle = self.handle::<E>(i);
        handle.modify(|entity| *entity = E::from_model_row(row));
    }

    fn delete<E: ModelEntity>(&mut self, i: usize) -> Checked {
        let handle = self.handle::<E>(i);
        let result = self.session().delete(&handle);
        let expect = match self.model.delete(i) {
            Ok(()) => Expect::Ok,
            Err(kind) => Expect::Err([kind].into()),
        };
        check(&expect, &result).map(drop)
    }

    fn expunge<E: ModelEntity>(&mut self, i: usize) -> Checked {
        let handle = self.handle::<E>(i);
        let was_tracked = self.session().expunge(&handle);
        let expected = self.model.expunge(i);
        if was_tracked == expected {
            Ok(())
        } else {
            Err(format!("expunge returned {was_tracked}, the model expected {expected}"))
        }
    }

    async fn refresh<E: ModelEntity>(&mut self, i: usize) -> Checked {
        let handle = self.handle::<E>(i);
        let result = timed("refresh", self.session().refresh(&handle)).await?;
        let mut model = self.model.clone();
        match model.refresh(i) {
            Ok(()) => {
                check(&Expect::Ok, &result)?;
                self.model = model;
            }
            Err(expect) => {
                check(&expect, &result)?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Checked {
        let result = timed("flush", self.session().flush()).await?;
        let plan = self.plan_flush(result.is_ok());
        if check(&plan.expect, &result)? {
            self.model.apply(plan);
        }
        Ok(())
    }

    async fn begin_nested(&mut self) -> Checked {
        let result = timed("begin_nested", self.session().begin_nested()).await?;
        if self.model.failed {
            return check(&Expect::AnyErr, &result).map(drop);
        }
        let plan = self.plan_flush(result.is_ok());
        if check(&plan.expect, &result)? {
            self.model.apply(plan);
            self.model.begin_nested();
            self.savepoints.push(result.ok());
        }
        Ok(())
    }

    async fn close_nested(&mut self, level: u8, release: bool) -> Checked {
        let open: Vec<usize> = (0..self.savepoints.len()).filter(|&d| self.savepoints[d].is_some()).collect();
        if open.is_empty() {
            return self.skip();
        }
        let depth = open[usize::from(level) % open.len()];
        let savepoint = self.savepoints[depth].take().expect("an open savepoint");
        if !release {
            let result = timed("rollback_nested", self.session().rollback_nested(savepoint)).await?;
            check(&Expect::Ok, &result)?;
            self.model.rollback_nested(depth);
            self.savepoints.truncate(depth);
            return Ok(());
        }
        let result = timed("release_nested", self.session().release_nested(savepoint)).await?;
        let plan = self.plan_flush(result.is_ok());
        let expect = if self.model.failed { Expect::AnyErr } else { plan.expect.clone() };
        if check(&expect, &result)? {
            self.model.apply(plan);
            self.model.release_nested(depth);
            self.savepoints.truncate(depth);
        } else {
            self.model.savepoints[depth].lost = true;
        }
        Ok(())
    }

    async fn commit(&mut self) -> Checked {
        let session = self.session.take().unwrap_or_else(|| self.db.session());
        let result = timed("commit", session.commit()).await?;
        let plan = self.plan_flush(result.is_ok());
        let expect =
            if self.model.failed { Expect::Err([ErrorKind::TransactionFailed].into()) } else { plan.expect.clone() };
        let committed = check(&expect, &result)?;
        if committed {
            self.model.apply(plan);
        }
        self.model.end(committed);
        self.ended().await
    }

    async fn end_without_commit(&mut self, rollback: bool) -> Checked {
        if let Some(session) = self.session.take() {
            if rollback {
                let result = timed("rollback", session.rollback()).await?;
                check(&Expect::Ok, &result)?;
            }
        }
        self.model.end(false);
        self.ended().await
    }

    /// A flush or a commit with `fault` injected `10 * tens_of_micros` µs
    /// into it.
    /// Whatever the fault hit, the unit of work is all or nothing: a flush
    /// or commit that succeeded is checked as without the fault; after a
    /// flush that failed or was cut off the session is dropped and nothing
    /// it wrote is committed; a commit that failed committed nothing, and
    /// one cut off or reported `CommitUnknown` committed all or nothing.
    async fn faulty(&mut self, fault: Fault, tens_of_micros: u8, commit: bool) -> Checked {
        self.faults += 1;
        let delay = Duration::from_micros(10 * u64::from(tens_of_micros));
        let held = if fault == Fault::ExhaustPool { self.exhaust_pool().await? } else { Vec::new() };
        let mut session = self.session.take().unwrap_or_else(|| self.db.session());
        let writer = self.writer;
        if !commit {
            let outcome = Box::pin(timed("flush", under_fault(writer, fault, delay, session.flush()))).await??;
            drop(held);
            self.count_hit(outcome.as_ref());
            // A terminated session's backend may go after the flush
            // succeeded: the session ends either way.
            if let (Some(Ok(())), false) = (&outcome, fault == Fault::Terminate) {
                let plan = self.plan_flush(true);
                check(&plan.expect, &Ok::<(), Error>(()))?;
                self.model.apply(plan);
                self.session = Some(session);
                return Ok(());
            }
            drop(session);
            self.model.end(false);
            return self.ended().await;
        }
        let outcome = Box::pin(timed("commit", under_fault(writer, fault, delay, session.commit()))).await??;
        drop(held);
        let plan = self.plan_flush(matches!(outcome, Some(Ok(_))));
        let could_commit = !self.model.failed && plan.expect.allows_ok();
        self.count_hit(outcome.as_ref());
        match outcome {
            Some(Ok(_)) if !could_commit => {
                Err(format!("committed, the model expected {:?} (failed: {})", plan.expect, self.model.failed))
            }
            Some(Ok(_)) => {
                self.model.apply(plan);
                self.model.end(true);
                self.ended().await
            }
            Some(Err(error)) if error.kind() != ErrorKind::CommitUnknown => {
                self.model.end(false);
                self.ended().await
            }
            unknown => {
                self.settle().await?;
                let tables = self.read_tables().await?;
                let with_commit = (!self.model.failed).then(|| self.committed_as(&tables)).flatten();
                self.handles.clear();
                self.savepoints.clear();
                if tables == self.model.committed {
                    self.model.end(false);
                    return Ok(());
                }
                if let Some(model) = with_commit.filter(|model| model.committed == tables) {
                    self.model = model;
                    return Ok(());
                }
                Err(format!(
                    "after a commit ending with {unknown:?} the tables hold {tables:?}: neither as before it, {:?}, \
                     nor as committed",
                    self.model.committed
                ))
            }
        }
    }

    /// The model after a commit that went through, with the keys the
    /// database generated for it taken from `tables`: the keys no row had
    /// before, committed or flushed, in the order of the handles (the
    /// order of the inserts).
    /// `None` if the model does not allow that commit.
    fn committed_as(&self, tables: &Tables) -> Option<Model> {
        let mut keys = BTreeMap::new();
        for table in TABLES.into_iter().filter(|t| t.spec().generated_key) {
            // Keys of rows an earlier flush of this transaction inserted
            // are the session's already, not the commit's to hand out.
            let known = self.model.view(table);
            let mut fresh = tables[&table].keys().filter(|key| !known.contains_key(*key));
            for (i, h) in self.model.core.handles.iter().enumerate() {
                if h.table == table && h.state == State::Pending {
                    let Val::Int(key) = fresh.next()?[0] else { return None };
                    keys.insert(i, key);
                }
            }
        }
        let generated = |i: usize| keys[&i];
        let plan = self.model.plan_flush(Some(&generated));
        if !plan.expect.allows_ok() {
            return None;
        }
        let mut model = self.model.clone();
        model.apply(plan);
        model.end(true);
        Some(model)
    }

    /// Counts a fault that hit: its step was cut off, or failed with an
    /// error the model does not expect without the fault.
    fn count_hit<T>(&mut self, outcome: Option<&Result<T, Error>>) {
        let expected = |error: &Error| !self.model.failed && self.plan_flush(false).expect.allows_err(error.kind());
        match outcome {
            Some(Ok(_)) => {}
            Some(Err(error)) if expected(error) => {}
            _ => self.faults_hit += 1,
        }
    }

    /// Waits until the backend of a session dropped mid-statement has
    /// ended its transaction (or is gone): a commit it had sent may land
    /// until then. Every other backend of the database (the writer's
    /// aside) is the pool's, idle. Counting backends against the pool's
    /// open connections is not enough: the pool may still count a
    /// connection whose backend an earlier fault terminated, and the read
    /// then came before a late `COMMIT` (found by the long release run).
    async fn settle(&self) -> Checked {
        let sql = "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid() AND state <> 'idle'";
        let deadline = std::time::Instant::now() + STEP_TIMEOUT;
        loop {
            let row = timed("pg_stat_activity", self.writer.query_one(sql, &[])).await?.map_err(|e| e.to_string())?;
            let busy = row.get::<_, i64>(0);
            if busy == 0 {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(format!(
                    "{busy} backends still in a transaction, the pool holds {:?}",
                    self.db.pool_state()
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Checks out every connection of the pool the session does not hold
    /// (one it took for its transaction; outside one it holds none between
    /// statements, so its next statement then waits for the pool).
    async fn exhaust_pool(&self) -> Checked<Vec<deadpool_postgres::Object>> {
        let mut held = Vec::new();
        while self.db.pool_state().in_use < self.db.pool_state().max {
            let connection = timed("taking a connection", self.db.pool().get()).await?;
            held.push(connection.map_err(|e| format!("taking a connection: {e}"))?);
        }
        Ok(held)
    }

    /// After a commit or rollback: the handles are plain data now, and the
    /// tables must equal the model's.
    async fn ended(&mut self) -> Checked {
        self.handles.clear();
        self.savepoints.clear();
        let tables = self.read_tables().await?;
        if tables == self.model.committed {
            return Ok(());
        }
        Err(format!("the tables hold {tables:?}, the model says {:?}", self.model.committed))
    }

    /// What the tables hold.
    async fn read_tables(&self) -> Checked<Tables> {
        let mut tables = Tables::new();
        for table in TABLES {
            let spec = table.spec();
            let sql = format!("{} ORDER BY 1, 2", spec.select);
            let rows = timed("reading the tables", self.writer.query(&sql, &[])).await?.map_err(|e| e.to_string())?;
            let rows: Vec<Row> = rows
                .iter()
                .map(|row| {
                    (0..row.len())
                        .map(|c| {
                            if spec.text_columns.contains(&c) {
                                row.get::<_, Option<String>>(c).map_or(Val::Null, Val::Text)
                            } else {
                                row.get::<_, Option<i64>>(c).map_or(Val::Null, Val::Int)
                            }
                        })
                        .collect()
                })
                .collect();
            tables.insert(table, rows.into_iter().map(|row| (table.key_of(&row), row)).collect());
        }
        Ok(tables)
    }

    fn set_parent(&mut self, child: u8, parent: u8, sponsor: bool) -> Checked {
        let (Some(c), Some(p)) = (self.pick(child, Some(Table::Child)), self.pick(parent, Some(Table::Parent))) else {
            return self.skip();
        };
        let (child, parent) = (self.handle::<Child>(c), self.handle::<Parent>(p));
        let result = self.session().set_parent(&child, schema::relation(sponsor), &parent);
        let expect = match self.model.set_parent(c, schema::relation_column(sponsor), p) {
            Ok(()) => Expect::Ok,
            Err(kind) => Expect::Err([kind].into()),
        };
        check(&expect, &result).map(drop)
    }

    async fn load_children(&mut self, picks: &[u8], sponsor: bool) -> Checked {
        let Some(parents) = picks.iter().map(|&n| self.pick(n, Some(Table::Parent))).collect::<Option<Vec<usize>>>()
        else {
            return self.skip();
        };
        let handles: Vec<Tracked<Parent>> = parents.iter().map(|&p| self.handle::<Parent>(p)).collect();
        let result = timed("load_children", self.session().load_children(&handles, schema::relation(sponsor))).await?;
        if !self.autoflush(true, &result)? {
            return Ok(());
        }
        let keys: Vec<Val> = parents.iter().map(|&p| self.model.core.handles[p].current[0].clone()).collect();
        let column = schema::relation_column(sponsor);
        let rows: Vec<Row> =
            self.model.view(Table::Child).into_values().filter(|row| keys.contains(&row[column])).collect();
        let expected: Vec<usize> = rows.into_iter().map(|row| self.model.track(Table::Child, row)).collect();
        let mut loaded = result.map_err(|e| e.to_string())?;
        loaded.sort_by_key(|child| child.read().id);
        self.take_loaded(loaded.into_iter().map(Child::wrap).collect(), &expected)
    }

    async fn raw_bump(&mut self, key: u8) -> Checked {
        let key = ops::key(Table::Account, key);
        let id = Account::model_key(&key);
        let params: [&(dyn ToSql + Sync); 1] = [&id];
        let sql = "UPDATE mb_account SET balance = balance + 1 WHERE id = $1";
        let result = timed("execute", self.session().execute(sql, &params)).await?;
        if !self.autoflush(true, &result)? {
            return Ok(());
        }
        let count = self.model.raw_bump(&key);
        match result {
            Ok(n) if n == count => Ok(()),
            other => Err(format!("execute returned {other:?}, the model expected Ok({count})")),
        }
    }

    async fn raw_fail(&mut self) -> Checked {
        // With pending work, which of the autoflush and the statement
        // failed could not be told apart.
        if self.model.has_pending_work() {
            return self.skip();
        }
        let result = timed("execute", self.session().execute("SELECT 1 / 0", &[])).await?;
        check(&Expect::AnyErr, &result)?;
        self.model.failed = true;
        Ok(())
    }

    async fn writer(&mut self, table: Table, pick: u8, delete: bool) -> Checked {
        let rows = self.model.writable_rows(table, delete);
        if rows.is_empty() || (table == Table::Pair && !delete) {
            return self.skip();
        }
        let key = rows[usize::from(pick) % rows.len()].clone();
        let spec = table.spec();
        let ints: Vec<i64> = key.iter().map(|v| if let Val::Int(n) = v { *n } else { 0 }).collect();
        let params: Vec<&(dyn ToSql + Sync)> = ints.iter().map(|n| n as &(dyn ToSql + Sync)).collect();
        let sql = match (table, delete) {
            (Table::Pair, _) => format!("DELETE FROM {} WHERE a = $1 AND b = $2", spec.sql_name),
            (_, true) => format!("DELETE FROM {} WHERE id = $1", spec.sql_name),
            (Table::Parent, false) => "UPDATE mb_parent SET rank = rank + 1 WHERE id = $1".to_owned(),
            (Table::Child, false) => "UPDATE mb_child SET note = note || '!' WHERE id = $1".to_owned(),
            (Table::Account, false) => {
                "UPDATE mb_account SET balance = balance + 1, version = version + 1 WHERE id = $1".to_owned()
            }
        };
        let changed =
            timed("the concurrent writer", self.writer.execute(&sql, &params)).await?.map_err(|e| e.to_string())?;
        if changed != 1 {
            return Err(format!("the concurrent writer changed {changed} rows"));
        }
        let committed = self.model.committed.get_mut(&table).expect("every table");
        if delete {
            committed.remove(&key);
            return Ok(());
        }
        let row = committed.get_mut(&key).expect("a committed row");
        let bump = |v: &mut Val| {
            if let Val::Int(n) = v {
                *n += 1;
            }
        };
        match table {
            Table::Parent => bump(&mut row[2]),
            Table::Child => {
                if let Val::Text(note) = &mut row[3] {
                    note.push('!');
                }
            }
            Table::Account => {
                bump(&mut row[1]);
                bump(&mut row[2]);
            }
            Table::Pair => {}
        }
        Ok(())
    }
}

/// Runs `step` with `fault` injected `delay` into it: cut off
/// (`None`) by a timeout, or with the statement run from `writer` (to its
/// end, so that the fault is over when the step is).
async fn under_fault<T>(
    writer: &Client,
    fault: Fault,
    delay: Duration,
    step: impl Future<Output = T>,
) -> Checked<Option<T>> {
    // The session's backend: the pool's other connections are idle. (An
    // idle one terminated fails the first statement of its next session
    // with `ConnectionLost`, before any transaction: not a fault in the
    // middle of one.)
    const OTHERS: &str = "FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND state <> 'idle'";
    let sql = match fault {
        Fault::Timeout => return Ok(tokio::select! { result = step => Some(result), () = wait(delay) => None }),
        Fault::ExhaustPool => return Ok(Some(step.await)),
        Fault::Cancel => format!("SELECT pg_cancel_backend(pid) {OTHERS}"),
        Fault::Terminate => format!("SELECT pg_terminate_backend(pid) {OTHERS}"),
    };
    let inject = async {
        wait(delay).await;
        writer.batch_execute(&sql).await.map_err(|e| format!("injecting {fault:?}: {e}"))?;
        if fault == Fault::Terminate {
            // The backend exits on its own schedule: give it, and the
            // pool's client of its connection, time to notice.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok::<(), String>(())
    };
    let (result, injected) = tokio::join!(step, inject);
    injected?;
    Ok(Some(result))
}

/// Waits `delay`. Statements on a local server take well under tokio's
/// timer resolution of a millisecond: this yields to the step instead.
async fn wait(delay: Duration) {
    let until = std::time::Instant::now() + delay;
    while std::time::Instant::now() < until {
        tokio::task::yield_now().await;
    }
}

/// Whether two handles are the same instance.
fn same(a: &AnyHandle, b: &AnyHandle) -> bool {
    match (a, b) {
        (AnyHandle::Parent(a), AnyHandle::Parent(b)) => Tracked::ptr_eq(a, b),
        (AnyHandle::Child(a), AnyHandle::Child(b)) => Tracked::ptr_eq(a, b),
        (AnyHandle::Account(a), AnyHandle::Account(b)) => Tracked::ptr_eq(a, b),
        (AnyHandle::Pair(a), AnyHandle::Pair(b)) => Tracked::ptr_eq(a, b),
        _ => false,
    }
}

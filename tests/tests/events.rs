//! Session and entity hooks (`SessionEvents`, `EntityEvents`): what they
//! write lands in the same flush and transaction, a refusal leaves nothing
//! written and the session usable, `after_commit` runs only after a
//! commit that succeeded, and hooks run in registration order, the
//! database's for every session and a session's for it alone.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use orm_core::{
    async_trait, ChangedColumns, Database, DatabaseConfig, Entity, EntityEvents, Error, HookResult, Session,
    SessionEvents, SessionStats, Tracked,
};
use orm_tests::TestDb;

#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "item")]
struct Item {
    #[orm(primary_key, generated)]
    id: i64,
    name: String,
    price: i64,
    updated_at: Option<DateTime<Utc>>,
}

#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "audit")]
struct Audit {
    #[orm(primary_key, generated)]
    id: i64,
    action: String,
    item_id: i64,
}

/// `parent_id` is checked only at COMMIT, and the entity does not declare
/// the reference: a bad one makes the INSERT succeed and the COMMIT fail.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "child")]
struct Child {
    #[orm(primary_key, generated)]
    id: i64,
    parent_id: i64,
}

const SCHEMA: &str = "
    CREATE TABLE item (id bigserial PRIMARY KEY, name text NOT NULL, price bigint NOT NULL, updated_at timestamptz);
    CREATE TABLE audit (id bigserial PRIMARY KEY, action text NOT NULL, item_id bigint NOT NULL);
    CREATE TABLE parent (id bigint PRIMARY KEY);
    CREATE TABLE child (id bigserial PRIMARY KEY,
                        parent_id bigint NOT NULL REFERENCES parent DEFERRABLE INITIALLY DEFERRED);
";

const TEST_TIMEOUT: Duration = Duration::from_secs(120);

async fn within<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, test).await.expect("the test finished in time")
}

/// A fresh database with `items` rows in `item`, and a pool whose sessions
/// run the hooks `register` puts on its configuration.
async fn setup(items: i64, register: impl FnOnce(&mut DatabaseConfig)) -> (TestDb, Database) {
    let test_db = TestDb::new().await;
    let client = test_db.client().await;
    client.batch_execute(SCHEMA).await.expect("schema");
    client
        .execute(
            "INSERT INTO item (name, price) SELECT 'item ' || n, n FROM generate_series(1, $1::bigint) AS n",
            &[&items],
        )
        .await
        .expect("items");
    let mut config = DatabaseConfig::from_url(test_db.url()).expect("URL");
    register(&mut config);
    let db = Database::with_config(config).expect("pool");
    (test_db, db)
}

async fn count(test_db: &TestDb, sql: &str) -> i64 {
    test_db.client().await.query_one(sql, &[]).await.expect(sql).get(0)
}

/// Stamps `updated_at` on every updated item, and counts the column sets
/// it was given.
struct Stamp {
    at: DateTime<Utc>,
    seen: Arc<Mutex<Vec<Vec<&'static str>>>>,
}

#[async_trait]
impl EntityEvents<Item> for Stamp {
    async fn before_update(&self, item: &Tracked<Item>, changed: ChangedColumns<Item>, _: &mut Session) -> HookResult {
        assert!(changed.contains(Item::NAME) || changed.contains(Item::PRICE));
        self.seen.lock().unwrap().push(changed.names().collect());
        item.modify(|item| item.updated_at = Some(self.at));
        Ok(())
    }
}

#[tokio::test]
async fn before_update_stamps_exactly_the_updated_rows_with_one_update_per_column_set() {
    within(async {
        let at = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let hook = Stamp { at, seen: seen.clone() };
        // The UNNEST form, with `COPY` off: one statement per column set.
        let (test_db, db) = setup(10_000, |config| {
            config.events.on_entity(hook);
            config.copy_update_threshold = None;
        })
        .await;
        let mut session = db.session();
        let items = session.query::<Item>().all().await.unwrap();
        assert_eq!(items.len(), 10_000);
        for item in &items {
            let id = item.read().id;
            if id % 2 == 0 {
                item.write().name = format!("renamed {id}");
            } else if id % 5 == 0 {
                item.write().price += 1;
            } else if id % 7 == 0 {
                item.write().price += 0; // written, unchanged: no update, no stamp
            }
        }
        let stats = session.commit().await.unwrap();
        // The load, then one UPDATE for {name, updated_at} and one for {price, updated_at}.
        assert_eq!(stats.statements, 3);

        let seen = std::mem::take(&mut *seen.lock().unwrap());
        assert_eq!(seen.len(), 6_000);
        assert_eq!(seen.iter().filter(|names| **names == ["name"]).count(), 5_000);
        assert_eq!(seen.iter().filter(|names| **names == ["price"]).count(), 1_000);
        let stamped = "SELECT count(*) FROM item WHERE updated_at = '2026-01-02 03:04:05+00'";
        assert_eq!(count(&test_db, stamped).await, 6_000);
        let wrong = "SELECT count(*) FROM item WHERE (updated_at IS NOT NULL) <> (id % 2 = 0 OR id % 5 = 0)";
        assert_eq!(count(&test_db, wrong).await, 0);
    })
    .await;
}

/// Writes an audit row for every deleted item, as an entity the same
/// flush inserts, and one for every flush, by SQL after it.
struct AuditDeletes;

#[async_trait]
impl EntityEvents<Item> for AuditDeletes {
    async fn before_delete(&self, item: &Tracked<Item>, session: &mut Session) -> HookResult {
        let item_id = item.read().id;
        session.add(Audit { id: 0, action: "delete".into(), item_id });
        Ok(())
    }
}

#[async_trait]
impl SessionEvents for AuditDeletes {
    async fn after_flush(&self, session: &mut Session) -> HookResult {
        session.execute("INSERT INTO audit (action, item_id) VALUES ('flush', 0)", &[]).await?;
        Ok(())
    }
}

#[tokio::test]
async fn audit_rows_written_by_hooks_commit_and_roll_back_with_the_flush() {
    within(async {
        let (test_db, db) = setup(5, |config| {
            config.events.on_entity(AuditDeletes).on_session(AuditDeletes);
        })
        .await;

        let mut session = db.session();
        for item in session.get_many::<Item>(&[1, 2, 3]).await.unwrap() {
            session.delete(&item).unwrap();
        }
        session.flush().await.unwrap();
        // Inside the transaction: the three audit entities and the flush's row.
        let inside: i64 = session.query_rows("SELECT count(*) FROM audit", &[]).await.unwrap()[0].get(0);
        assert_eq!(inside, 4);
        assert_eq!(count(&test_db, "SELECT count(*) FROM audit").await, 0); // not committed
        session.rollback().await.unwrap();
        assert_eq!(count(&test_db, "SELECT count(*) FROM audit").await, 0);
        assert_eq!(count(&test_db, "SELECT count(*) FROM item").await, 5);

        let mut session = db.session();
        let item = session.get_one::<Item>(4).await.unwrap();
        session.delete(&item).unwrap();
        session.commit().await.unwrap();
        let audited = test_db.client().await.query("SELECT action, item_id FROM audit ORDER BY id", &[]).await.unwrap();
        let audited: Vec<(String, i64)> = audited.iter().map(|row| (row.get(0), row.get(1))).collect();
        assert_eq!(audited, [("delete".to_owned(), 4), ("flush".to_owned(), 0)]);
        assert_eq!(count(&test_db, "SELECT count(*) FROM item").await, 4);
    })
    .await;
}

/// Records which hooks ran, as `name:hook`, into a log shared by several.
#[derive(Clone)]
struct Recorder {
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    fn new(name: &'static str, log: &Arc<Mutex<Vec<String>>>) -> Self {
        Recorder { name, log: log.clone() }
    }

    fn record(&self, hook: &str) {
        self.log.lock().unwrap().push(format!("{}:{hook}", self.name));
    }
}

#[async_trait]
impl SessionEvents for Recorder {
    async fn before_flush(&self, _: &mut Session) -> HookResult {
        self.record("before_flush");
        Ok(())
    }

    async fn after_flush(&self, _: &mut Session) -> HookResult {
        self.record("after_flush");
        Ok(())
    }

    async fn after_commit(&self, _: &SessionStats) -> HookResult {
        self.record("after_commit");
        Ok(())
    }

    async fn after_rollback(&self) -> HookResult {
        self.record("after_rollback");
        Ok(())
    }
}

#[async_trait]
impl EntityEvents<Item> for Recorder {
    async fn before_insert(&self, item: &Tracked<Item>, _: &mut Session) -> HookResult {
        self.record(&format!("before_insert {}", item.read().name));
        Ok(())
    }
}

fn taken(log: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    std::mem::take(&mut *log.lock().unwrap())
}

#[tokio::test]
async fn after_commit_runs_only_when_the_commit_succeeded() {
    within(async {
        let log = Arc::new(Mutex::new(Vec::new()));
        let recorder = Recorder::new("db", &log);
        let (test_db, db) = setup(0, |config| {
            config.events.on_session(recorder);
        })
        .await;

        let mut session = db.session();
        session.add(Child { id: 0, parent_id: 999 });
        session.flush().await.unwrap(); // the deferred foreign key is not checked yet
        let error = session.commit().await.unwrap_err();
        assert!(matches!(error, Error::ForeignKeyViolation { .. }), "{error}");
        assert_eq!(taken(&log), ["db:before_flush", "db:after_flush", "db:after_rollback"]);
        assert_eq!(count(&test_db, "SELECT count(*) FROM child").await, 0);

        test_db.client().await.batch_execute("INSERT INTO parent VALUES (999)").await.unwrap();
        let mut session = db.session();
        session.add(Child { id: 0, parent_id: 999 });
        session.commit().await.unwrap();
        assert_eq!(taken(&log), ["db:before_flush", "db:after_flush", "db:after_commit"]);
        assert_eq!(count(&test_db, "SELECT count(*) FROM child").await, 1);

        db.session().rollback().await.unwrap();
        assert_eq!(taken(&log), ["db:after_rollback"]);
    })
    .await;
}

/// Refuses items without a name.
struct RequireName;

#[derive(Debug)]
struct Invalid(String);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid: {}", self.0)
    }
}

impl std::error::Error for Invalid {}

#[async_trait]
impl EntityEvents<Item> for RequireName {
    async fn before_insert(&self, item: &Tracked<Item>, _: &mut Session) -> HookResult {
        if item.read().name.is_empty() {
            return Err(Invalid("an item needs a name".into()).into());
        }
        Ok(())
    }

    async fn before_update(&self, item: &Tracked<Item>, _: ChangedColumns<Item>, session: &mut Session) -> HookResult {
        self.before_insert(item, session).await
    }
}

#[tokio::test]
async fn a_validation_hook_refusing_one_entity_of_a_batch_writes_nothing_and_leaves_the_session_usable() {
    within(async {
        let (test_db, db) = setup(1, |config| {
            config.events.on_entity(RequireName);
        })
        .await;
        let mut session = db.session();
        let existing = session.get_one::<Item>(1).await.unwrap();
        existing.write().price = 10;
        let added = session.add_all((0..100).map(|n| Item {
            id: 0,
            name: if n == 57 { String::new() } else { format!("new {n}") },
            price: n,
            updated_at: None,
        }));
        let before = session.stats();
        let error = session.flush().await.unwrap_err();
        let Error::Hook { hook, entity, source } = &error else { panic!("expected a hook error, got {error}") };
        assert_eq!((*hook, *entity), ("before_insert", Some("Item")));
        assert_eq!(source.downcast_ref::<Invalid>().map(|invalid| invalid.0.as_str()), Some("an item needs a name"));
        assert_eq!(error.to_string(), "the before_insert hook of Item refused: invalid: an item needs a name");
        assert_eq!(session.stats().statements, before.statements); // nothing sent
        let pending = session.pending().unwrap();
        assert_eq!((pending.inserts, pending.updates), (100, 1));

        added[57].write().name = "fixed".into();
        session.commit().await.unwrap();
        assert_eq!(count(&test_db, "SELECT count(*) FROM item").await, 101);
        assert_eq!(count(&test_db, "SELECT price FROM item WHERE id = 1").await, 10);

        // Refused at commit: rolled back, nothing written.
        let mut session = db.session();
        session.get_one::<Item>(1).await.unwrap().write().name = String::new();
        session.add(Item { id: 0, name: "fine".into(), price: 1, updated_at: None });
        let error = session.commit().await.unwrap_err();
        assert!(matches!(error, Error::Hook { hook: "before_update", .. }), "{error}");
        assert_eq!(count(&test_db, "SELECT count(*) FROM item").await, 101);
    })
    .await;
}

/// Adds an audit row to every flush that writes items.
struct AuditFlushes;

#[async_trait]
impl SessionEvents for AuditFlushes {
    async fn before_flush(&self, session: &mut Session) -> HookResult {
        // A query inside a hook does not autoflush: it sees the database.
        let items = session.query::<Item>().count().await?;
        session.add(Audit { id: 0, action: format!("flush after {items} items"), item_id: 0 });
        Ok(())
    }
}

#[tokio::test]
async fn before_flush_may_add_entities_that_the_same_flush_writes() {
    within(async {
        let (test_db, db) = setup(2, |_| {}).await;
        let mut session = db.session();
        session.events_mut().on_session(AuditFlushes);
        session.add(Item { id: 0, name: "third".into(), price: 3, updated_at: None });
        let before = session.stats();
        session.flush().await.unwrap();
        let sent = session.stats().statements - before.statements;
        assert_eq!(sent, 3, "the hook's count, then the two inserts");
        assert_eq!(session.pending().unwrap().inserts, 0);
        let audits = session.query::<Audit>().all().await.unwrap();
        assert_eq!(audits.len(), 1);
        assert_eq!(audits[0].read().action, "flush after 2 items");
        session.commit().await.unwrap();
        assert_eq!(count(&test_db, "SELECT count(*) FROM audit").await, 1);
        assert_eq!(count(&test_db, "SELECT count(*) FROM item").await, 3);
    })
    .await;
}

#[tokio::test]
async fn database_hooks_run_in_every_session_and_session_hooks_in_theirs_in_registration_order() {
    within(async {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (first, second) = (Recorder::new("db1", &log), Recorder::new("db2", &log));
        let (_test_db, db) = setup(0, |config| {
            config.events.on_session(first.clone()).on_entity(first).on_entity(second.clone()).on_session(second);
        })
        .await;

        let mut with_own = db.session();
        with_own.events_mut().on_entity(Recorder::new("own", &log)).on_session(Recorder::new("own", &log));
        with_own.add_all(["a", "b"].map(|name| Item { id: 0, name: name.into(), price: 1, updated_at: None }));
        with_own.commit().await.unwrap();
        assert_eq!(
            taken(&log),
            [
                "db1:before_flush",
                "db2:before_flush",
                "own:before_flush",
                "db1:before_insert a",
                "db1:before_insert b",
                "db2:before_insert a",
                "db2:before_insert b",
                "own:before_insert a",
                "own:before_insert b",
                "db1:after_flush",
                "db2:after_flush",
                "own:after_flush",
                "db1:after_commit",
                "db2:after_commit",
                "own:after_commit",
            ]
        );

        let mut plain = db.session();
        plain.add(Item { id: 0, name: "c".into(), price: 1, updated_at: None });
        plain.commit().await.unwrap();
        assert_eq!(
            taken(&log),
            [
                "db1:before_flush",
                "db2:before_flush",
                "db1:before_insert c",
                "db2:before_insert c",
                "db1:after_flush",
                "db2:after_flush",
                "db1:after_commit",
                "db2:after_commit",
            ]
        );
    })
    .await;
}

/// Tries to flush from inside a hook.
struct FlushesItself;

#[async_trait]
impl SessionEvents for FlushesItself {
    async fn before_flush(&self, session: &mut Session) -> HookResult {
        session.flush().await?;
        Ok(())
    }
}

#[tokio::test]
async fn a_hook_cannot_flush_its_own_session() {
    within(async {
        let (test_db, db) = setup(0, |config| {
            config.events.on_session(FlushesItself);
        })
        .await;
        let mut session = db.session();
        let item = session.add(Item { id: 0, name: "a".into(), price: 1, updated_at: None });
        let error = session.flush().await.unwrap_err();
        let Error::Hook { hook: "before_flush", source, .. } = &error else { panic!("{error}") };
        assert!(matches!(source.downcast_ref::<Error>(), Some(Error::FlushInHook)), "{source}");
        assert_eq!(session.pending().unwrap().inserts, 1); // still pending
        drop(session);
        assert_eq!(count(&test_db, "SELECT count(*) FROM item").await, 0);
        assert_eq!(item.read().id, 0);
    })
    .await;
}

/// Hangs in its first `before_flush`, until the caller gives up.
#[derive(Default)]
struct HangsOnce {
    hung: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl SessionEvents for HangsOnce {
    async fn before_flush(&self, _: &mut Session) -> HookResult {
        if !self.hung.swap(true, std::sync::atomic::Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_flush_cancelled_inside_a_hook_leaves_the_session_able_to_flush() {
    within(async {
        let (test_db, db) = setup(0, |_| {}).await;
        let mut session = db.session();
        session.events_mut().on_session(HangsOnce::default());
        session.add(Item { id: 0, name: "a".into(), price: 1, updated_at: None });
        let cancelled = tokio::time::timeout(Duration::from_millis(50), session.flush()).await;
        assert!(cancelled.is_err(), "the first flush hangs in its hook");
        session.commit().await.unwrap(); // not refused as a flush inside a hook
        assert_eq!(count(&test_db, "SELECT count(*) FROM item").await, 1);
    })
    .await;
}

/// An `after_flush` hook whose statement fails and that carries on (a
/// best-effort audit row, its error ignored).
struct CarelessAudit;

#[async_trait]
impl SessionEvents for CarelessAudit {
    async fn after_flush(&self, session: &mut Session) -> HookResult {
        let _ = session.execute("INSERT INTO audit (action, item_id) VALUES (NULL, 0)", &[]).await;
        Ok(())
    }
}

/// A hook's failed statement aborts the transaction, whether or not the
/// hook reports it: the commit must then fail, roll back and say so,
/// rather than send a `COMMIT` that PostgreSQL answers by rolling back
/// without an error (the flushed rows gone, `after_commit` run).
#[tokio::test]
async fn a_commit_after_a_hooks_failed_statement_fails_and_rolls_back() {
    within(async {
        let log = Arc::new(Mutex::new(Vec::new()));
        let recorder = Recorder::new("db", &log);
        let (test_db, db) = setup(0, |config| {
            config.events.on_session(CarelessAudit).on_session(recorder);
        })
        .await;
        let mut session = db.session();
        session.add(Item { id: 0, name: "lost".into(), price: 1, updated_at: None });
        let error = session.commit().await.expect_err("the transaction was aborted");
        assert!(matches!(error, Error::TransactionFailed), "{error:?}");
        assert_eq!(count(&test_db, "SELECT count(*) FROM item").await, 0);
        let ran = taken(&log);
        assert!(
            ran.contains(&"db:after_rollback".to_owned()) && !ran.contains(&"db:after_commit".to_owned()),
            "{ran:?}"
        );
    })
    .await;
}

//! Large insert batches go by binary `COPY`, their keys taken from the
//! key's sequence first; small ones, and tables where `COPY` would not
//! write what the `INSERT` does, keep `INSERT ... UNNEST ... RETURNING`.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use orm_core::{Database, DatabaseConfig, Entity, Error, Session, StatementMode, Tracked};
use orm_tests::TestDb;
use support::blog::{self, Post};
use support::{setup_with, Customer};

/// Batches of this many rows and more go by `COPY` in these tests.
const THRESHOLD: usize = 100;

/// Runs `test` under a timeout: nothing here may hang.
async fn timed<F: std::future::Future>(test: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(120), test).await.expect("the test finished in time")
}

async fn setup() -> (TestDb, Database) {
    setup_with(|config| config.copy_threshold = Some(THRESHOLD)).await
}

fn customers(prefix: &str, count: usize) -> Vec<Customer> {
    (0..count)
        .map(|n| Customer { id: 0, name: format!("{prefix} {n}"), description: (n % 3 == 0).then(|| format!("#{n}")) })
        .collect()
}

/// Every row of `customer`, by key.
async fn stored(test_db: &TestDb) -> HashMap<i32, (String, Option<String>)> {
    let rows = test_db.client().await.query("SELECT id, name, description FROM customer", &[]).await.unwrap();
    rows.iter().map(|row| (row.get(0), (row.get(1), row.get(2)))).collect()
}

/// Checks that each handle holds the key of the row holding its values.
fn assert_keys_match(handles: &[Tracked<Customer>], rows: &HashMap<i32, (String, Option<String>)>) {
    let mut keys = HashSet::new();
    for handle in handles {
        let customer = handle.read();
        assert!(keys.insert(customer.id), "key {} given twice", customer.id);
        let row = rows.get(&customer.id).unwrap_or_else(|| panic!("no row with key {}", customer.id));
        assert_eq!((&row.0, &row.1), (&customer.name, &customer.description), "the row of key {}", customer.id);
    }
}

#[tokio::test]
async fn a_large_batch_is_copied_with_keys_from_the_sequence() {
    timed(async {
        let (test_db, db) = setup().await;
        let mut session = db.session();
        let handles = session.add_all(customers("copied", 5000));
        session.flush().await.unwrap();
        let stats = session.stats();
        assert_eq!(stats.copied_rows, 5000);
        // The table's facts, the keys, and the COPY.
        assert_eq!(stats.statements, 3);
        session.commit().await.unwrap();
        let rows = stored(&test_db).await;
        assert_eq!(rows.len(), 5000);
        assert_keys_match(&handles, &rows);

        // A later session of the same pool knows the table already, and
        // finds the copied rows in its identity map after the flush.
        let mut session = db.session();
        let more = session.add_all(customers("more", 200));
        session.flush().await.unwrap();
        assert_eq!((session.stats().statements, session.stats().copied_rows), (2, 200));
        let id = more[7].read().id;
        let found = session.get::<Customer>(id).await.unwrap().unwrap();
        assert!(Tracked::ptr_eq(&found, &more[7]), "the inserted entity is the one in the identity map");
        session.commit().await.unwrap();
        assert_keys_match(&more, &stored(&test_db).await);
    })
    .await;
}

#[tokio::test]
async fn a_batch_below_the_threshold_is_one_insert_returning_keys() {
    timed(async {
        let (test_db, db) = setup().await;
        let mut session = db.session();
        let handles = session.add_all(customers("few", THRESHOLD - 1));
        let stats = session.commit().await.unwrap();
        assert_eq!((stats.statements, stats.copied_rows), (1, 0));
        assert_keys_match(&handles, &stored(&test_db).await);
    })
    .await;
}

#[tokio::test]
async fn the_commit_of_a_copy_travels_with_it() {
    timed(async {
        let (test_db, db) = setup().await;
        // Learn the table's facts first.
        let mut session = db.session();
        session.add_all(customers("first", THRESHOLD));
        session.commit().await.unwrap();
        let mut session = db.session();
        let handles = session.add_all(customers("second", THRESHOLD));
        let stats = session.commit().await.unwrap();
        // BEGIN and the keys; then the COPY and COMMIT.
        assert_eq!((stats.statements, stats.round_trips, stats.copied_rows), (2, 2, THRESHOLD as u64));
        assert_keys_match(&handles, &stored(&test_db).await);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sessions_get_disjoint_keys() {
    timed(async {
        let (test_db, db) = setup().await;
        let run = |db: Database, prefix: &'static str| async move {
            let mut session = db.session();
            let handles = session.add_all(customers(prefix, 3000));
            let stats = session.commit().await.unwrap();
            assert_eq!(stats.copied_rows, 3000);
            handles
        };
        let (first, second) =
            tokio::join!(tokio::spawn(run(db.clone(), "left")), tokio::spawn(run(db.clone(), "right")));
        let mut handles = first.unwrap();
        handles.extend(second.unwrap());
        let rows = stored(&test_db).await;
        assert_eq!(rows.len(), 6000);
        assert_keys_match(&handles, &rows);
        // The table's default keeps going after the keys the sessions took.
        let client = test_db.client().await;
        let next: i32 =
            client.query_one("INSERT INTO customer (name) VALUES ('plain') RETURNING id", &[]).await.unwrap().get(0);
        assert!(rows.keys().all(|&key| key < next));
    })
    .await;
}

#[tokio::test]
async fn a_failed_copy_writes_nothing_and_leaves_the_batch_pending_without_keys() {
    timed(async {
        let (test_db, db) = setup().await;
        let mut session = db.session();
        let mut batch = customers("dup", 1000);
        batch[900].name = batch[10].name.clone(); // `name` is unique
        let handles = session.add_all(batch);
        let error = session.flush().await.unwrap_err();
        assert!(matches!(error, Error::UniqueViolation { .. }), "{error:?}");
        assert_eq!(stored(&test_db).await.len(), 0);
        assert!(handles.iter().all(|handle| handle.read().id == 0), "no key was kept");
        assert_eq!(session.pending().unwrap().inserts, 1000);

        // Fixed, the same session flushes them.
        handles[900].write().name = "dup fixed".to_owned();
        session.flush().await.unwrap();
        assert_eq!(session.stats().copied_rows, 1000);
        session.commit().await.unwrap();
        assert_keys_match(&handles, &stored(&test_db).await);
    })
    .await;
}

#[tokio::test]
async fn a_failed_copy_in_commit_rolls_back_what_was_flushed_before() {
    timed(async {
        let (test_db, db) = setup().await;
        let mut session = db.session();
        session.add_all(customers("flushed", 10));
        session.flush().await.unwrap();
        let mut batch = customers("dup", 500);
        batch[400].name = "flushed 3".to_owned();
        let handles = session.add_all(batch);
        let error = session.commit().await.unwrap_err();
        assert!(matches!(error, Error::UniqueViolation { .. }), "{error:?}");
        assert_eq!(stored(&test_db).await.len(), 0);
        assert!(handles.iter().all(|handle| handle.read().id == 0));
        assert!(support::checkout_state(&db).await.0, "the connection came back outside a transaction");
    })
    .await;
}

#[tokio::test]
async fn a_rolled_back_savepoint_forgets_copied_rows() {
    timed(async {
        let (test_db, db) = setup().await;
        let mut session = db.session();
        let kept = session.add_all(customers("kept", 5));
        session.flush().await.unwrap();
        let savepoint = session.begin_nested().await.unwrap();
        let dropped = session.add_all(customers("dropped", 500));
        session.flush().await.unwrap();
        assert_eq!(session.stats().copied_rows, 500);
        session.rollback_nested(savepoint).await.unwrap();
        assert_eq!(session.pending().unwrap().inserts, 0, "rows inserted inside the savepoint are transient again");
        assert!(session.get::<Customer>(dropped[0].read().id).await.unwrap().is_none());
        session.commit().await.unwrap();
        let rows = stored(&test_db).await;
        assert_eq!(rows.len(), 5);
        assert_keys_match(&kept, &rows);
    })
    .await;
}

#[tokio::test]
async fn children_of_copied_parents_get_their_keys() {
    timed(async {
        let test_db = TestDb::new().await;
        test_db.client().await.batch_execute(blog::SCHEMA).await.unwrap();
        let mut config = DatabaseConfig::from_url(test_db.url()).unwrap();
        config.copy_threshold = Some(THRESHOLD);
        let db = Database::with_config(config).unwrap();
        let mut session = db.session();
        let authors = session.add_all((0..300).map(|n| blog::user(&format!("author {n}"))));
        let mut posts = Vec::new();
        for (n, author) in authors.iter().enumerate() {
            let post = session.add(blog::post(0, &format!("post of {n}")));
            session.set_parent(&post, Post::AUTHOR, author).unwrap();
            posts.push(post);
        }
        let stats = session.commit().await.unwrap();
        assert_eq!(stats.copied_rows, 600, "users, then posts");
        let client = test_db.client().await;
        for (n, post) in posts.iter().enumerate() {
            let post = post.read();
            let row = client.query_one("SELECT author_id, title FROM post WHERE id = $1", &[&post.id]).await.unwrap();
            assert_eq!(row.get::<_, i64>(0), authors[n].read().id);
            assert_eq!(row.get::<_, String>(1), format!("post of {n}"));
            assert_eq!(post.author_id, authors[n].read().id);
        }
        let users: i64 = client.query_one("SELECT count(*) FROM users", &[]).await.unwrap().get(0);
        assert_eq!(users, 300);
    })
    .await;
}

/// `created` has a server default the entity reads back.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "stamped")]
struct Stamped {
    #[orm(primary_key, generated)]
    id: i64,
    name: String,
    #[orm(generated)]
    created: chrono::DateTime<chrono::Utc>,
}

#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "audited")]
struct Audited {
    #[orm(primary_key, generated)]
    id: i64,
    name: String,
}

/// `account.id` is `GENERATED ALWAYS`.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "account")]
struct Account {
    #[orm(primary_key, generated)]
    id: i64,
    owner: String,
    balance: i64,
    #[orm(version)]
    version: i32,
}

const OTHER_TABLES: &str = "
    CREATE TABLE stamped (id bigserial PRIMARY KEY, name text NOT NULL, created timestamptz NOT NULL DEFAULT now());
    CREATE TABLE audited (id bigserial PRIMARY KEY, name text NOT NULL);
    CREATE FUNCTION shout() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.name := upper(NEW.name); RETURN NEW; END $$;
    CREATE TRIGGER shout BEFORE INSERT ON audited FOR EACH ROW EXECUTE FUNCTION shout();
";

/// Adds `count` entities made by `make`, commits, and returns the statistics.
async fn commit_batch<E: Entity>(db: &Database, make: impl Fn(usize) -> E) -> orm_core::SessionStats {
    let mut session: Session = db.session();
    session.add_all((0..THRESHOLD * 2).map(make));
    session.commit().await.unwrap()
}

#[tokio::test]
async fn tables_copy_cannot_write_as_insert_does_keep_insert_returning() {
    timed(async {
        let (test_db, db) = setup().await;
        test_db.client().await.batch_execute(OTHER_TABLES).await.unwrap();

        let stats = commit_batch(&db, |n| Stamped { id: 0, name: format!("s{n}"), created: chrono::Utc::now() }).await;
        assert_eq!((stats.copied_rows, stats.statements), (0, 1), "another generated column: RETURNING");

        let stats = commit_batch(&db, |n| Audited { id: 0, name: format!("a{n}") }).await;
        assert_eq!((stats.copied_rows, stats.statements), (0, 2), "an insert trigger: the facts, then INSERT");
        let upper: i64 = test_db
            .client()
            .await
            .query_one("SELECT count(*) FROM audited WHERE name = upper(name)", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(upper, i64::try_from(THRESHOLD * 2).unwrap(), "the trigger ran");

        let stats = commit_batch(&db, |n| Account { id: 0, owner: format!("o{n}"), balance: 0, version: 1 }).await;
        assert_eq!((stats.copied_rows, stats.statements), (0, 2), "GENERATED ALWAYS: the facts, then INSERT");

        // Opted out: never COPY.
        let mut config = DatabaseConfig::from_url(test_db.url()).unwrap();
        config.copy_threshold = None;
        let opted_out = Database::with_config(config).unwrap();
        let mut session = opted_out.session();
        let handles = session.add_all(customers("insert", 5000));
        let stats = session.commit().await.unwrap();
        assert_eq!((stats.copied_rows, stats.statements), (0, 1));
        assert_keys_match(&handles, &stored(&test_db).await);
    })
    .await;
}

/// A serial key whose default was changed to another sequence (one shared
/// between tables, say) takes its keys from that sequence: the one the
/// column still owns is unused and behind, so `COPY`, which takes keys
/// from it, is not used.
#[tokio::test]
async fn a_key_whose_default_calls_another_sequence_keeps_insert_returning() {
    timed(async {
        let (test_db, db) = setup().await;
        test_db
            .client()
            .await
            .batch_execute(
                "CREATE SEQUENCE shared_ids START 1000000;
                 ALTER TABLE customer ALTER id SET DEFAULT nextval('shared_ids')",
            )
            .await
            .unwrap();
        let mut session = db.session();
        let handles = session.add_all(customers("shared", THRESHOLD * 2));
        let stats = session.commit().await.unwrap();
        assert_eq!(stats.copied_rows, 0, "INSERT ... RETURNING, not COPY");
        let rows = stored(&test_db).await;
        assert_keys_match(&handles, &rows);
        assert!(rows.keys().all(|&id| id >= 1_000_000), "every key came from the column's default");
    })
    .await;
}

/// The unnamed mode is for poolers in transaction mode, and PgBouncer
/// loses track of a transaction during an extended-protocol COPY
/// (tests/pgbouncer.rs): large batches keep the INSERT there.
#[tokio::test]
async fn the_unnamed_statement_mode_keeps_insert_returning() {
    timed(async {
        let (test_db, db) = setup_with(|config| {
            config.copy_threshold = Some(THRESHOLD);
            config.statements = StatementMode::Unnamed;
        })
        .await;
        let mut session = db.session();
        let handles = session.add_all(customers("unnamed", 1000));
        let stats = session.commit().await.unwrap();
        assert_eq!((stats.statements, stats.copied_rows), (1, 0));
        assert_keys_match(&handles[..], &stored(&test_db).await);
    })
    .await;
}

/// A row of every kind of column `COPY` writes field by field from the
/// entity, NULLs among them, under an `int8` key.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "assorted")]
struct Assorted {
    #[orm(primary_key, generated)]
    id: i64,
    small: i16,
    ratio: f64,
    flag: bool,
    label: Option<String>,
    blob: Vec<u8>,
    token: uuid::Uuid,
    day: chrono::NaiveDate,
    at: Option<chrono::DateTime<chrono::Utc>>,
    doc: serde_json::Value,
    amount: rust_decimal::Decimal,
}

const ASSORTED: &str = "
    CREATE TABLE assorted (
        id bigserial PRIMARY KEY, small int2 NOT NULL, ratio float8 NOT NULL, flag bool NOT NULL,
        label text, blob bytea NOT NULL, token uuid NOT NULL, day date NOT NULL, at timestamptz,
        doc jsonb NOT NULL, amount numeric NOT NULL
    );
";

fn assorted(n: usize) -> Assorted {
    let small = i16::try_from(n).unwrap();
    Assorted {
        id: 0,
        small,
        ratio: f64::from(small) / 7.0,
        flag: n % 2 == 0,
        label: (n % 3 != 0).then(|| format!("label {n} 'quoted' \\ and ünïcode")),
        blob: vec![u8::try_from(n % 256).unwrap(); n % 5],
        token: uuid::Uuid::from_u128(u128::try_from(n).unwrap() * 7919),
        day: chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + chrono::Days::new(u64::try_from(n).unwrap()),
        at: (n % 4 != 0)
            .then(|| chrono::DateTime::from_timestamp_micros(1_700_000_000_000_000 + i64::from(small)).unwrap()),
        doc: serde_json::json!({ "n": n, "tags": ["a", "b"] }),
        amount: rust_decimal::Decimal::new(i64::from(small) * 1001, 2),
    }
}

#[tokio::test]
async fn every_column_type_is_copied_as_the_insert_would_write_it() {
    timed(async {
        let (test_db, db) = setup().await;
        test_db.client().await.batch_execute(ASSORTED).await.unwrap();
        let mut session = db.session();
        let handles = session.add_all((0..THRESHOLD * 3).map(assorted));
        let stats = session.commit().await.unwrap();
        assert_eq!(stats.copied_rows, u64::try_from(THRESHOLD * 3).unwrap());

        let mut session = db.session();
        let loaded = session.query::<Assorted>().untracked().all().await.unwrap();
        let loaded: HashMap<i64, Assorted> = loaded.into_iter().map(|row| (row.id, row)).collect();
        assert_eq!(loaded.len(), THRESHOLD * 3);
        for (n, handle) in handles.iter().enumerate() {
            let inserted = handle.get();
            let expected = Assorted { id: inserted.id, ..assorted(n) };
            assert_eq!(inserted, expected, "the handle keeps the values it was given, with its key");
            assert_eq!(loaded.get(&inserted.id), Some(&expected), "row {n} as stored");
        }
    })
    .await;
}

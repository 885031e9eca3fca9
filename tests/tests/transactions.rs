//! `Database::transaction`: a unit of work committed in a fresh session,
//! retried on serialization failures and deadlocks, run once on any other
//! error, and never retried once `COMMIT` may have reached the server.

use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use orm_core::{Database, Entity, Error, ErrorKind, IsolationLevel, RetryPolicy};
use orm_tests::TestDb;
use tokio::sync::Barrier;
use tokio::time::timeout;

#[derive(Entity, Clone, Debug, PartialEq)]
struct Counter {
    #[orm(primary_key)]
    name: String,
    value: i64,
}

#[derive(Entity, Clone, Debug, PartialEq)]
struct Audit {
    #[orm(primary_key, generated)]
    id: i64,
    note: String,
}

const SCHEMA: &str = "
    CREATE TABLE counter (name text PRIMARY KEY, value int8 NOT NULL);
    INSERT INTO counter VALUES ('a', 0), ('b', 0);
    CREATE TABLE audit (id bigserial PRIMARY KEY, note text NOT NULL);
    CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(3); RETURN NULL; END $$;
    CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON audit DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW EXECUTE FUNCTION slow_commit();
";

async fn setup() -> (TestDb, Database) {
    let test_db = TestDb::new().await;
    test_db.client().await.batch_execute(SCHEMA).await.unwrap();
    let db = Database::connect(test_db.url()).unwrap();
    (test_db, db)
}

async fn value(test_db: &TestDb, name: &str) -> i64 {
    test_db.client().await.query_one("SELECT value FROM counter WHERE name = $1", &[&name]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_serializable_increments_all_land() {
    let (test_db, db) = setup().await;
    let attempts = Arc::new(AtomicUsize::new(0));
    let policy = RetryPolicy {
        max_attempts: 100,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(100),
        isolation: Some(IsolationLevel::Serializable),
    };
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (db, attempts, policy) = (db.clone(), attempts.clone(), policy.clone());
            tokio::spawn(async move {
                db.transaction_with(&policy, |session| {
                    attempts.fetch_add(1, Ordering::Relaxed);
                    Box::pin(async move {
                        let counter = session.get_one::<Counter>("a".to_owned()).await?;
                        // Read, wait, write: every increment overlaps others.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        counter.modify(|c| c.value += 1);
                        Ok::<_, Error>(())
                    })
                })
                .await
            })
        })
        .collect();
    for task in tasks {
        timeout(Duration::from_secs(60), task).await.expect("no hang").unwrap().unwrap();
    }
    assert_eq!(value(&test_db, "a").await, 20);
    assert!(attempts.load(Ordering::Relaxed) > 20, "conflicting tries were retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_is_retried() {
    let (test_db, db) = setup().await;
    let attempts = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(2));
    let run = |first: &'static str, second: &'static str| {
        let (db, attempts, barrier) = (db.clone(), attempts.clone(), barrier.clone());
        tokio::spawn(async move {
            let mut tried = 0;
            db.transaction(|session| {
                tried += 1;
                attempts.fetch_add(1, Ordering::Relaxed);
                let (first_try, barrier) = (tried == 1, barrier.clone());
                Box::pin(async move {
                    let bump = "UPDATE counter SET value = value + 1 WHERE name = $1";
                    session.execute(bump, &[&first]).await?;
                    if first_try {
                        // Both hold their first row before either takes its second.
                        barrier.wait().await;
                    }
                    session.execute(bump, &[&second]).await?;
                    Ok::<_, Error>(())
                })
            })
            .await
        })
    };
    let one = run("a", "b");
    let other = run("b", "a");
    for task in [one, other] {
        timeout(Duration::from_secs(30), task).await.expect("no hang").unwrap().unwrap();
    }
    assert_eq!((value(&test_db, "a").await, value(&test_db, "b").await), (2, 2));
    // Usually three tries: the victim runs again once. On a loaded machine
    // the victim's retry can update the row it gave up before the survivor,
    // woken by the victim's abort, takes it (a row whose locker aborted is
    // free to whoever comes first), and the two deadlock again: a fourth
    // try. Each deadlock is retried, and both increments land once.
    let tries = attempts.load(Ordering::Relaxed);
    assert!(tries >= 3, "the deadlock's victim ran again: {tries} tries");
}

#[tokio::test]
async fn a_non_retryable_error_runs_once_and_rolls_back() {
    let (test_db, db) = setup().await;
    let mut attempts = 0;
    let result = db
        .transaction(|session| {
            attempts += 1;
            Box::pin(async move {
                session.execute("UPDATE counter SET value = 7 WHERE name = 'a'", &[]).await?;
                session.add(Counter { name: "b".into(), value: 1 }); // the key exists
                session.flush().await
            })
        })
        .await;
    assert_eq!(result.unwrap_err().kind(), ErrorKind::UniqueViolation);
    assert_eq!(attempts, 1);
    assert_eq!(value(&test_db, "a").await, 0, "rolled back");

    let mut attempts = 0;
    let missing = db
        .transaction(|session| {
            attempts += 1;
            Box::pin(async move { session.get_one::<Counter>("missing".to_owned()).await.map(drop) })
        })
        .await;
    assert_eq!((missing.unwrap_err().kind(), attempts), (ErrorKind::NotFound, 1));
}

/// An application's own error type, wrapping the ORM's, is retried too.
#[derive(Debug)]
enum AppError {
    Orm(Error),
    Invalid,
}

impl From<Error> for AppError {
    fn from(error: Error) -> Self {
        AppError::Orm(error)
    }
}

impl orm_core::AsOrmError for AppError {
    fn as_orm_error(&self) -> Option<&Error> {
        match self {
            AppError::Orm(error) => Some(error),
            AppError::Invalid => None,
        }
    }
}

#[tokio::test]
async fn an_application_error_is_returned_as_it_is_after_one_try() {
    let (test_db, db) = setup().await;
    let mut attempts = 0;
    let result: Result<(), AppError> = db
        .transaction(|session| {
            attempts += 1;
            Box::pin(async move {
                let counter = session.get_one::<Counter>("a".to_owned()).await?;
                counter.modify(|c| c.value = 100);
                Err(AppError::Invalid)
            })
        })
        .await;
    assert!(matches!(result, Err(AppError::Invalid)));
    assert_eq!(attempts, 1);
    assert_eq!(value(&test_db, "a").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_after_commit_was_sent_is_not_retried() {
    let (test_db, db) = setup().await;
    let pid = Arc::new(AtomicI32::new(0));
    let killer = {
        let (pid, client) = (pid.clone(), test_db.client().await);
        tokio::spawn(async move {
            // The deferred trigger sleeps inside COMMIT: end the backend then.
            loop {
                let backend = pid.load(Ordering::Acquire);
                if backend != 0 {
                    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event = 'PgSleep'";
                    let sleeping: i64 = client.query_one(waiting, &[&backend]).await.unwrap().get(0);
                    if sleeping == 1 {
                        client.execute("SELECT pg_terminate_backend($1)", &[&backend]).await.unwrap();
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let mut attempts = 0;
    let result = timeout(
        Duration::from_secs(30),
        db.transaction(|session| {
            attempts += 1;
            let pid = pid.clone();
            Box::pin(async move {
                let backend: i32 = session.query_rows("SELECT pg_backend_pid()", &[]).await?[0].get(0);
                pid.store(backend, Ordering::Release);
                session.add(Audit { id: 0, note: "written at commit".into() });
                Ok::<_, Error>(())
            })
        }),
    )
    .await
    .expect("no hang");
    let error = result.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::CommitUnknown, "{error}");
    assert!(error.to_string().contains("not retried"), "{error}");
    assert_eq!(attempts, 1);
    killer.await.unwrap();
}

//! Handles (`Tracked<T>`) never block forever and never lose a write: a
//! conflicting borrow fails at once, the session fails instead of waiting
//! on a user's guard, and a write that lands while a flush is on the wire
//! stays pending for the next one.

mod support;

use std::future::Future;
use std::time::Duration;

use orm_core::{Entity, Error, Tracked};
use support::blog::{self, Post, User};
use support::{customer, setup, Account, Customer};

/// Long enough for any of these tests; a hang fails the test instead.
const LIMIT: Duration = Duration::from_secs(30);

async fn within_limit<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, future).await.expect("the ORM must not block")
}

/// A committed customer's key.
async fn seed(db: &orm_core::Database, name: &str) -> i32 {
    let mut session = db.session();
    let added = session.add(customer(name));
    session.commit().await.unwrap();
    let id = added.read().id;
    id
}

async fn stored(test_db: &orm_tests::TestDb, id: i32) -> (String, Option<String>) {
    let row =
        test_db.client().await.query_one("SELECT name, description FROM customer WHERE id = $1", &[&id]).await.unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn a_read_and_a_write_of_one_handle_in_one_expression_panic_at_once_naming_it() {
    let (_test_db, db) = setup().await;
    let id = seed(&db, "alice").await;
    let mut session = db.session();
    let alice = session.get_one::<Customer>(id).await.unwrap();

    let handle = alice.clone();
    let outcome = within_limit(tokio::task::spawn_blocking(move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // The read guard is a temporary that lives to the end of the
            // statement: with a lock, this waits for itself forever.
            handle.write().description = Some(handle.read().name.clone());
        }))
    }))
    .await
    .unwrap();
    let message = *outcome.expect_err("a conflicting borrow panics").downcast::<String>().unwrap();
    assert!(message.contains("Customer") && message.contains(&id.to_string()), "{message}");
    assert!(message.contains("this thread"), "{message}");

    // The try_ forms return the same as a typed error, in both directions.
    let reading = alice.read();
    let error = alice.try_write().expect_err("a write while a read guard is held");
    assert!(matches!(&error, Error::Borrowed { entity: "Customer", key, .. } if *key == id.to_string()), "{error}");
    let also_reading = alice.try_read().expect("two reads on one thread are fine");
    drop((reading, also_reading));
    let writing = alice.write();
    assert!(matches!(alice.try_read(), Err(Error::Borrowed { .. })));
    drop(writing);

    // Nothing was left borrowed by the failed attempts.
    alice.modify(|c| c.description = Some("fine".into()));
    within_limit(session.commit()).await.unwrap();
}

#[tokio::test]
async fn a_borrow_waits_for_another_threads_short_guard() {
    let (_test_db, db) = setup().await;
    let id = seed(&db, "alice").await;
    let mut session = db.session();
    let alice = session.get_one::<Customer>(id).await.unwrap();
    let holder = alice.clone();
    let (held, release) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let guard = holder.write();
        held.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        drop(guard);
    });
    release.recv().unwrap();
    // Another thread's guard is not a conflict with itself: wait for it.
    alice.modify(|c| c.name.push_str(" smith"));
    thread.join().unwrap();
    assert_eq!(alice.read().name, "alice smith");
}

#[tokio::test]
async fn a_guard_held_across_flush_commit_or_refresh_fails_them_before_anything_is_sent() {
    let (test_db, db) = setup().await;
    let id = seed(&db, "alice").await;
    let mut session = db.session();
    let alice = session.get_one::<Customer>(id).await.unwrap();
    alice.modify(|c| c.description = Some("changed".into()));
    let sent = session.stats().statements;

    let guard = alice.read();
    let error = within_limit(session.flush()).await.expect_err("the flush cannot write a borrowed entity");
    assert!(matches!(&error, Error::Borrowed { entity: "Customer", .. }), "{error}");
    drop(guard);
    assert_eq!(session.stats().statements, sent, "nothing was sent");
    assert!(alice.is_modified(), "the change is still pending");

    let guard = alice.write();
    let error = within_limit(session.refresh(&alice)).await.expect_err("refresh cannot overwrite a borrowed entity");
    assert!(matches!(error, Error::Borrowed { .. }), "{error}");
    drop(guard);
    assert_eq!(session.stats().statements, sent, "refresh checked before it loaded");

    let guard = alice.read();
    let error = within_limit(session.commit()).await.expect_err("the commit cannot write a borrowed entity");
    assert!(matches!(error, Error::Borrowed { .. }), "{error}");
    drop(guard);
    assert_eq!(stored(&test_db, id).await, ("alice".to_owned(), None), "nothing was committed");
}

#[tokio::test]
async fn a_write_guard_held_across_relation_loads_is_an_error_not_a_hang() {
    let test_db = orm_tests::TestDb::new().await;
    test_db.client().await.batch_execute(blog::SCHEMA).await.unwrap();
    let db = orm_core::Database::connect(test_db.url()).unwrap();
    let mut session = db.session();
    let ann = session.add(blog::user("ann"));
    session.flush().await.unwrap();
    let ann_id = ann.read().id;
    let post = session.add(blog::post(ann_id, "hello"));
    session.flush().await.unwrap();

    let guard = ann.write();
    let error = within_limit(session.load_children(std::slice::from_ref(&ann), Post::AUTHOR)).await.unwrap_err();
    assert!(matches!(error, Error::Borrowed { entity: "User", .. }), "{error}");
    drop(guard);

    let guard = post.write();
    let error = within_limit(session.load_parents(std::slice::from_ref(&post), Post::AUTHOR)).await.unwrap_err();
    assert!(matches!(error, Error::Borrowed { entity: "Post", .. }), "{error}");
    drop(guard);

    let loaded =
        within_limit(session.load_children::<Post, User>(std::slice::from_ref(&ann), Post::AUTHOR)).await.unwrap();
    assert!(Tracked::ptr_eq(&loaded[0], &post));
}

/// Makes every write to `table` take half a second, so that a test can
/// write to an entity while its flush is on the wire.
async fn slow_writes(test_db: &orm_tests::TestDb, table: &str) {
    let sql = format!(
        "CREATE OR REPLACE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.5); RETURN NEW; END $$;
         CREATE TRIGGER slow BEFORE INSERT OR UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION slow();"
    );
    test_db.client().await.batch_execute(&sql).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_lands_while_an_update_is_on_the_wire_stays_pending() {
    let (test_db, db) = setup().await;
    let id = seed(&db, "alice").await;
    slow_writes(&test_db, "customer").await;
    let mut session = db.session();
    let alice = session.get_one::<Customer>(id).await.unwrap();
    alice.modify(|c| c.name = "flushed".into());

    let clone = alice.clone();
    let flushing = tokio::spawn(async move {
        let result = session.flush().await;
        (session, result)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Back to the value the flush replaces, and a new column: both must
    // reach the database, though the first equals what was last loaded.
    clone.modify(|c| {
        c.name = "alice".into();
        c.description = Some("late".into());
    });
    let (session, flushed) = within_limit(flushing).await.unwrap();
    flushed.unwrap();

    assert!(alice.is_modified(), "the write made during the flush is pending");
    assert_eq!(session.pending().unwrap().updates, 1);
    within_limit(session.commit()).await.unwrap();
    assert_eq!(stored(&test_db, id).await, ("alice".to_owned(), Some("late".to_owned())));
    assert!(!alice.is_modified());
}

/// Flushes `session`, running `write` after the flush's first poll, which
/// planned its statements and yields before it binds their rows.
async fn flush_writing_after_its_plan(session: &mut orm_core::Session, write: impl FnOnce()) -> orm_core::Result<()> {
    let mut flush = std::pin::pin!(session.flush());
    let pending = futures_util::poll!(flush.as_mut()).is_pending();
    assert!(pending, "the flush yielded before it bound its rows");
    write();
    flush.await
}

/// The flush plans each update's columns, then binds the rows a chunk at
/// a time with a yield before each: a write in between, to a column the
/// plan did not see changed, is not in the statement and stays pending,
/// whether the update goes by `UNNEST` or by `COPY`.
#[tokio::test]
async fn a_write_that_lands_between_the_flush_plan_and_its_binding_stays_pending() {
    for copy_update_threshold in [None, Some(1)] {
        a_write_between_the_flush_plan_and_its_binding_stays_pending(copy_update_threshold).await;
    }
}

async fn a_write_between_the_flush_plan_and_its_binding_stays_pending(copy_update_threshold: Option<usize>) {
    within_limit(async {
        let (test_db, db) = support::setup_with(|config| config.copy_update_threshold = copy_update_threshold).await;
        let id = seed(&db, "alice").await;
        let mut session = db.session();
        let alice = session.get_one::<Customer>(id).await.unwrap();
        alice.modify(|c| c.name = "flushed".into());
        flush_writing_after_its_plan(&mut session, || alice.modify(|c| c.description = Some("late".into())))
            .await
            .unwrap();
        assert!(alice.is_modified(), "the write made during the flush is pending");
        assert_eq!(session.pending().unwrap().updates, 1);
        session.commit().await.unwrap();
        assert_eq!(stored(&test_db, id).await, ("flushed".to_owned(), Some("late".to_owned())));
        assert!(!alice.is_modified());
    })
    .await;
}

/// A key changed between the flush's plan and its binding is refused
/// before anything is sent, as one changed before the flush is: the update
/// would find its row by the new key, another row.
#[tokio::test]
async fn a_key_changed_between_the_flush_plan_and_its_binding_fails_the_flush_before_it_writes() {
    within_limit(async {
        let (test_db, db) = setup().await;
        let id = seed(&db, "alice").await;
        let other = seed(&db, "bob").await;
        let mut session = db.session();
        let alice = session.get_one::<Customer>(id).await.unwrap();
        alice.modify(|c| c.name = "flushed".into());
        let flushed = flush_writing_after_its_plan(&mut session, || alice.modify(|c| c.id = other)).await;
        assert!(matches!(flushed, Err(Error::PrimaryKeyChanged { .. })), "{flushed:?}");
        session.rollback().await.unwrap();
        assert_eq!(stored(&test_db, id).await, ("alice".to_owned(), None));
        assert_eq!(stored(&test_db, other).await, ("bob".to_owned(), None));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_lands_while_an_insert_is_on_the_wire_stays_pending_with_its_version() {
    let (test_db, db) = setup().await;
    slow_writes(&test_db, "account").await;
    let mut session = db.session();
    let account = session.add(Account { id: 0, owner: "ann".into(), balance: 10, version: 0 });

    let clone = account.clone();
    let flushing = tokio::spawn(async move {
        let result = session.flush().await;
        (session, result)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    clone.modify(|a| a.balance = 25);
    let (session, flushed) = within_limit(flushing).await.unwrap();
    flushed.unwrap();

    let id = account.read().id;
    assert!(id > 0, "the generated key reached the object");
    assert!(account.is_modified(), "the balance written during the insert is pending");
    within_limit(session.commit()).await.unwrap();
    let row =
        test_db.client().await.query_one("SELECT balance, version FROM account WHERE id = $1", &[&id]).await.unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i32>(1)), (25, account.read().version));
}

#[derive(Entity, Clone, Debug, PartialEq, serde::Serialize)]
#[orm(table = "customer")]
struct PublicCustomer {
    #[orm(primary_key, generated)]
    id: i32,
    name: String,
    description: Option<String>,
}

#[tokio::test]
async fn a_handle_serializes_as_its_entity() {
    let (_test_db, db) = setup().await;
    let id = seed(&db, "alice").await;
    let mut session = db.session();
    let alice = session.get_one::<PublicCustomer>(id).await.unwrap();
    let json = serde_json::to_value(&alice).unwrap();
    assert_eq!(json, serde_json::json!({ "id": id, "name": "alice", "description": null }));
    assert_eq!(json, serde_json::to_value(alice.get()).unwrap());

    let guard = alice.write();
    let error = serde_json::to_string(&alice).expect_err("a handle borrowed for writing");
    assert!(error.to_string().contains("borrowed"), "{error}");
    drop(guard);
}

#[tokio::test]
async fn delete_and_expunge_find_an_entity_whose_key_field_was_changed() {
    let (test_db, db) = setup().await;
    let first = seed(&db, "first").await;
    let second = seed(&db, "second").await;
    let mut session = db.session();
    let entity = session.get_one::<Customer>(first).await.unwrap();
    entity.modify(|c| c.id = second);
    session.delete(&entity).unwrap();
    within_limit(session.commit()).await.unwrap();
    let remaining: Vec<i32> =
        test_db.client().await.query("SELECT id FROM customer", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(remaining, [second], "the row the entity was loaded from is the one deleted");

    let mut session = db.session();
    let entity = session.get_one::<Customer>(second).await.unwrap();
    entity.modify(|c| c.id = 12345);
    assert!(session.expunge(&entity));
    let fresh = session.get_one::<Customer>(second).await.unwrap();
    assert!(!Tracked::ptr_eq(&fresh, &entity));
    assert_eq!(session.pending().unwrap().updates, 0);
}

#[tokio::test]
async fn a_guard_taken_while_a_large_flush_yields_fails_it_cleanly_and_a_retry_writes_each_row_once() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let added = session.add_all((0..20_000).map(|n| customer(&format!("c{n}"))));
    let first = added[0].clone();
    // On this thread, between the flush's yields: once the first key is
    // back, hold a guard on it for a while, as a task awaiting something
    // with a guard in hand would.
    let holder = async move {
        loop {
            let seen_key = first.try_read().is_ok_and(|c| c.id != 0);
            if seen_key {
                let guard = first.read();
                tokio::time::sleep(Duration::from_millis(300)).await;
                drop(guard);
                return;
            }
            tokio::task::yield_now().await;
        }
    };
    let (flushed, ()) = within_limit(async { tokio::join!(session.flush(), holder) }).await;
    let error = flushed.expect_err("the flush cannot change a borrowed object");
    assert!(matches!(error, Error::Borrowed { entity: "Customer", .. }), "{error}");
    assert_eq!(session.pending().unwrap().inserts, 20_000, "nothing was taken as inserted");

    within_limit(session.commit()).await.unwrap();
    assert_eq!(support::count_rows(&test_db, "customer").await, 20_000, "each row once");
    assert!(added.iter().all(|c| c.read().id > 0));
}

#[tokio::test]
async fn a_guard_held_across_rollback_nested_fails_it_before_the_database_rolls_back() {
    let (test_db, db) = setup().await;
    let id = seed(&db, "alice").await;
    let mut session = db.session();
    let alice = session.get_one::<Customer>(id).await.unwrap();
    let savepoint = session.begin_nested().await.unwrap();
    alice.modify(|c| c.description = Some("inside".into()));
    session.flush().await.unwrap();

    let guard = alice.read();
    let error =
        within_limit(session.rollback_nested(savepoint)).await.expect_err("a borrowed object cannot be restored");
    assert!(matches!(error, Error::Borrowed { entity: "Customer", .. }), "{error}");
    drop(guard);
    // Nothing was rolled back: the savepoint's work is still there and commits.
    within_limit(session.commit()).await.unwrap();
    assert_eq!(stored(&test_db, id).await, ("alice".to_owned(), Some("inside".to_owned())));
}

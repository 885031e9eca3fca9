//! Sessions: adding, loading through the identity map, change tracking.

mod support;

use orm_core::{Entity, IsolationLevel, Tracked};
use support::{customer, seeded, setup, Customer};

#[tokio::test]
async fn commit_inserts_and_brings_back_generated_keys() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let alice = session.add(customer("alice"));
    let bob = session.add(customer("bob"));
    let stats = session.commit().await.expect("commit");
    assert_eq!(stats.statements, 1, "one batched INSERT");
    assert_ne!(alice.read().id, bob.read().id);

    let client = test_db.client().await;
    let rows = client.query("SELECT id, name FROM customer ORDER BY id", &[]).await.unwrap();
    let stored: Vec<(i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(stored, vec![(alice.read().id, "alice".to_owned()), (bob.read().id, "bob".to_owned())]);
}

#[tokio::test]
async fn get_returns_the_same_instance_without_sql_the_second_time() {
    let (test_db, db) = setup().await;
    test_db.client().await.batch_execute("INSERT INTO customer (name) VALUES ('carol')").await.unwrap();
    let mut session = db.session();
    let first = session.get_one::<Customer>(1).await.expect("first get");
    let after_first = session.stats();
    let second = session.get_one::<Customer>(1).await.expect("second get");
    assert!(Tracked::ptr_eq(&first, &second));
    assert_eq!(session.stats(), after_first, "the second get issues no SQL");
    assert_eq!(after_first.statements, 1);
    assert!(session.get::<Customer>(99).await.unwrap().is_none());
}

#[tokio::test]
async fn rollback_discards_flushed_and_pending_work() {
    let (test_db, db) = seeded(&["ann"]).await;
    let mut session = db.session();
    let ann = session.get_one::<Customer>(1).await.unwrap();
    ann.write().name = "renamed and flushed".to_owned();
    session.add(customer("flushed"));
    session.flush().await.unwrap();
    session.add(customer("pending"));
    session.rollback().await.unwrap();

    let rows = test_db.client().await.query("SELECT name FROM customer ORDER BY id", &[]).await.unwrap();
    let names: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
    assert_eq!(names, ["ann"]);
}

#[tokio::test]
async fn a_repeatable_read_session_reads_one_snapshot_from_its_first_load() {
    let (test_db, db) = seeded(&["ann"]).await;
    let mut session = db.session_with_isolation(IsolationLevel::RepeatableRead);
    let first = session.get_one::<Customer>(1).await.unwrap();
    assert_eq!(first.read().name, "ann");
    test_db.client().await.batch_execute("UPDATE customer SET name = 'changed meanwhile'").await.unwrap();

    let again = session.query::<Customer>().untracked().all().await.unwrap();
    assert_eq!(again[0].name, "ann", "the second load reads the snapshot of the first");
    session.commit().await.unwrap();
    let mut session = db.session();
    let now = session.query::<Customer>().untracked().all().await.unwrap();
    assert_eq!(now[0].name, "changed meanwhile", "at the default level, a load reads what is committed");
}

#[tokio::test]
async fn query_results_already_in_the_map_keep_their_pending_changes() {
    let (_test_db, db) = seeded(&["ann", "ben"]).await;
    let mut session = db.session();
    session.set_autoflush(false);
    let ann = session.get_one::<Customer>(1).await.unwrap();
    ann.write().name = "changed, not flushed".to_owned();
    let all = session.query::<Customer>().order_by(Customer::ID.asc()).all().await.unwrap();
    assert!(Tracked::ptr_eq(&all[0], &ann), "the query returns the tracked instance");
    assert_eq!(all[0].read().name, "changed, not flushed", "the row did not overwrite pending changes");
    assert!(ann.is_modified());
}

/// A row of a table whose key column repeats: a load can return the same
/// key more than once.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "repeated")]
struct Repeated {
    #[orm(primary_key)]
    id: i32,
    seq: i32,
}

#[tokio::test]
async fn a_load_that_repeats_keys_returns_one_instance_per_key() {
    let (test_db, db) = setup().await;
    // Keys 1..=100 twice (the second time in other blocks of 64 new rows
    // than the first), then key 5 four times in a row.
    test_db
        .client()
        .await
        .batch_execute(
            "CREATE TABLE repeated (id int NOT NULL, seq int NOT NULL);
             INSERT INTO repeated SELECT (s - 1) % 100 + 1, s FROM generate_series(1, 200) s;
             INSERT INTO repeated SELECT 5, s FROM generate_series(201, 204) s",
        )
        .await
        .unwrap();
    let mut session = db.session();
    session.set_autoflush(false);
    let held = session.query::<Repeated>().filter(Repeated::SEQ.eq(50)).all().await.unwrap().remove(0);
    held.write().seq = -50;

    let all = session.query::<Repeated>().order_by(Repeated::SEQ.asc()).all().await.unwrap();
    assert_eq!(all.len(), 204);
    for (first, again) in all[..100].iter().zip(&all[100..200]) {
        assert!(Tracked::ptr_eq(first, again), "key {} twice", first.read().id);
    }
    assert!(all[200..].iter().all(|again| Tracked::ptr_eq(again, &all[4])));
    assert!(Tracked::ptr_eq(&all[49], &held));
    assert_eq!(all[49].read().seq, -50, "the pending change wins over both rows");
    assert_eq!((all[0].read().seq, all[99].read().seq), (1, 100), "the first row of a key wins");

    let statements = session.stats().statements;
    for (index, key) in [(0, 1), (76, 77), (99, 100)] {
        let got = session.get_one::<Repeated>(key).await.unwrap();
        assert!(Tracked::ptr_eq(&got, &all[index]), "key {key} is tracked as the load returned it");
    }
    assert_eq!(session.stats().statements, statements, "every key is in the identity map");
}

#[tokio::test]
async fn queries_autoflush_so_they_see_pending_work() {
    let (_test_db, db) = seeded(&["ann"]).await;
    let mut session = db.session();
    session.add(customer("pending"));
    let found = session.query::<Customer>().filter(Customer::NAME.eq("pending")).all().await.unwrap();
    assert_eq!(found.len(), 1);

    session.set_autoflush(false);
    session.add(customer("invisible"));
    let found = session.query::<Customer>().filter(Customer::NAME.eq("invisible")).all().await.unwrap();
    assert!(found.is_empty(), "without autoflush the pending insert is not in the database yet");
}

#[tokio::test]
async fn get_many_loads_missing_keys_in_one_statement() {
    let (_test_db, db) = seeded(&["a", "b", "c", "d"]).await;
    let mut session = db.session();
    let b = session.get_one::<Customer>(2).await.unwrap();
    let before = session.stats().statements;
    let found = session.get_many::<Customer>(&[4, 2, 99, 1]).await.unwrap();
    assert_eq!(session.stats().statements - before, 1);
    let ids: Vec<i32> = found.iter().map(|t| t.read().id).collect();
    assert_eq!(ids, vec![4, 2, 1], "in the order asked for, missing keys skipped");
    assert!(Tracked::ptr_eq(&found[1], &b));
    let before = session.stats();
    session.get_many::<Customer>(&[1, 2, 4]).await.unwrap();
    assert_eq!(session.stats(), before, "all in the identity map: no SQL");
}

#[tokio::test]
async fn refresh_discards_unflushed_changes_and_reads_the_row() {
    let (test_db, db) = seeded(&["ann"]).await;
    let mut session = db.session();
    let ann = session.get_one::<Customer>(1).await.unwrap();
    ann.write().name = "local".to_owned();
    test_db.client().await.batch_execute("UPDATE customer SET description = 'remote' WHERE id = 1").await.unwrap();
    session.refresh(&ann).await.unwrap();
    assert_eq!(ann.read().name, "ann");
    assert_eq!(ann.read().description.as_deref(), Some("remote"));
    assert!(!ann.is_modified());
    let stats = session.commit().await.unwrap();
    assert_eq!(stats.statements, 2, "the get and the refresh; the discarded change is not written");
}

#[tokio::test]
async fn expunge_forgets_the_instance_and_its_changes() {
    let (test_db, db) = seeded(&["ann"]).await;
    let mut session = db.session();
    let ann = session.get_one::<Customer>(1).await.unwrap();
    ann.write().name = "forgotten".to_owned();
    assert!(session.expunge(&ann));
    assert!(!session.expunge(&ann), "already gone");
    let again = session.get_one::<Customer>(1).await.unwrap();
    assert!(!Tracked::ptr_eq(&again, &ann), "a fresh instance after expunge");
    assert_eq!(again.read().name, "ann");
    session.commit().await.unwrap();
    let name: String = test_db.client().await.query_one("SELECT name FROM customer", &[]).await.unwrap().get(0);
    assert_eq!(name, "ann");
}

#[tokio::test]
async fn a_handle_from_another_session_is_refused() {
    let (_test_db, db) = seeded(&["ann"]).await;
    let mut first = db.session();
    let ann = first.get_one::<Customer>(1).await.unwrap();
    let mut second = db.session();
    assert!(matches!(second.delete(&ann), Err(orm_core::Error::NotInSession { entity: "Customer" })));
    assert!(matches!(second.refresh(&ann).await, Err(orm_core::Error::NotInSession { .. })));
}

#[tokio::test]
async fn a_session_that_does_nothing_sends_nothing() {
    let (_test_db, db) = setup().await;
    let session = db.session();
    let stats = session.commit().await.unwrap();
    assert_eq!(stats, orm_core::SessionStats::default());
}

/// Whether a raw connection from the pool is inside a transaction: inside
/// one, `now()` is the transaction's start, before this statement's.
async fn pool_connection_is_in_transaction(db: &orm_core::Database) -> bool {
    let client = db.pool().get().await.unwrap();
    let messages = client.simple_query("SELECT now() = statement_timestamp()").await.unwrap();
    let fresh = messages.iter().find_map(|message| match message {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(|v| v == "t"),
        _ => None,
    });
    fresh != Some(true)
}

#[tokio::test]
async fn a_read_only_session_sends_only_its_reads() {
    let (_test_db, db) = support::setup_with(|config| config.max_connections = 1).await;
    let mut session = db.session();
    session.add(customer("ann"));
    session.commit().await.unwrap();
    let mut warm_up = db.session();
    warm_up.get_one::<Customer>(1).await.unwrap();
    warm_up.commit().await.unwrap();

    // Reads before the first write need no transaction: one statement, one
    // round trip, like a bare prepared statement.
    let mut session = db.session();
    session.get_one::<Customer>(1).await.unwrap();
    let stats = session.commit().await.unwrap();
    assert_eq!((stats.statements, stats.round_trips), (1, 1));
    assert!(!pool_connection_is_in_transaction(&db).await);

    // The first write opens the transaction; reads after it run inside it
    // and see its uncommitted rows; dropping the session rolls it back.
    let mut session = db.session();
    session.get_one::<Customer>(1).await.unwrap();
    session.add(customer("ben"));
    session.flush().await.unwrap();
    let inside = session.query::<Customer>().untracked().all().await.unwrap();
    assert_eq!(inside.len(), 2, "a read after the first write runs in the transaction");
    drop(session);
    assert!(!pool_connection_is_in_transaction(&db).await, "the queued ROLLBACK ran before the next borrower");
    let mut after = db.session();
    assert_eq!(after.query::<Customer>().count().await.unwrap(), 1, "the dropped session's insert was rolled back");
}

#[tokio::test]
async fn attach_tracks_a_known_row_without_sql_and_flushes_its_changes() {
    let (test_db, db) = seeded(&["ann"]).await;
    let mut session = db.session();
    let cached = Customer { id: 1, name: "ann".into(), description: None };
    let ann = session.attach(cached.clone());
    assert_eq!(session.stats(), orm_core::SessionStats::default(), "attach sends nothing");
    assert!(Tracked::ptr_eq(&session.attach(cached), &ann), "one instance per key");
    assert!(Tracked::ptr_eq(&session.get_one::<Customer>(1).await.unwrap(), &ann));
    ann.write().description = Some("from cache".into());
    session.commit().await.unwrap();
    let description: Option<String> =
        test_db.client().await.query_one("SELECT description FROM customer", &[]).await.unwrap().get(0);
    assert_eq!(description.as_deref(), Some("from cache"));
}

#[tokio::test]
async fn pending_reports_what_the_next_flush_writes() {
    let (_test_db, db) = seeded(&["ann", "ben", "cy"]).await;
    let mut session = db.session();
    let all = session.query::<Customer>().order_by(Customer::ID.asc()).all().await.unwrap();
    all[0].write().name = "ann 2".into();
    all[1].write().description = Some("x".into());
    let _ = all[2].write(); // written, unchanged
    session.delete(&all[2]).unwrap();
    session.add(customer("dee"));
    let pending = session.pending().unwrap();
    assert_eq!(
        pending,
        orm_core::PendingChanges { inserts: 1, updates: 2, deletes: 1, statements: 4 },
        "one INSERT, two UPDATEs (different columns), one DELETE"
    );
    let before = session.stats().statements;
    session.flush().await.unwrap();
    assert_eq!(session.stats().statements - before, 4);
    assert_eq!(session.pending().unwrap(), orm_core::PendingChanges::default());
}

#[tokio::test]
async fn get_of_a_key_the_autoflush_inserts_returns_the_added_instance() {
    let (_test_db, db) = seeded(&["ann", "ben"]).await;
    let mut session = db.session();
    let cal = session.add(customer("cal"));
    // The autoflush before the load inserts cal as id 3, and enters it in
    // the identity map; the row the load then reads for key 3 is that
    // instance, not a second one.
    let found = session.get::<Customer>(3).await.unwrap().expect("cal's row");
    assert!(Tracked::ptr_eq(&found, &cal));
    assert_eq!(session.stats().statements, 2, "the insert, then the load");
    found.write().description = Some("added".into());
    assert_eq!(cal.read().description.as_deref(), Some("added"));
    session.commit().await.unwrap();

    let mut session = db.session();
    let again = session.get_one::<Customer>(3).await.unwrap();
    assert_eq!((again.read().name.as_str(), again.read().description.as_deref()), ("cal", Some("added")));
    assert!(session.get::<Customer>(4).await.unwrap().is_none());
    assert!(Tracked::ptr_eq(&session.get_one::<Customer>(3).await.unwrap(), &again));
    assert_eq!(session.stats().statements, 2, "the second get of 3 is an identity-map hit");
}

/// Deleting or expunging entities that were never flushed leaves the others
/// to be inserted in the order they were added, whichever were forgotten and
/// however many (the session closes the gaps they leave from time to time).
#[tokio::test]
async fn forgetting_pending_entities_keeps_the_others_in_the_order_added() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let added = session.add_all((0..300).map(|i| customer(&format!("c{i:03}"))));
    let mut kept = Vec::new();
    for (i, entity) in added.iter().enumerate() {
        match i % 5 {
            0 | 3 => session.delete(entity).unwrap(),
            1 => assert!(session.expunge(entity)),
            _ => kept.push(entity.read().name.clone()),
        }
    }
    assert_eq!(session.pending().unwrap().inserts, kept.len());
    let late = session.add(customer("late"));
    kept.push("late".to_owned());
    session.commit().await.expect("commit");

    let rows = test_db.client().await.query("SELECT id, name FROM customer ORDER BY id", &[]).await.unwrap();
    let names: Vec<String> = rows.iter().map(|row| row.get(1)).collect();
    assert_eq!(names, kept, "the keys were generated in the order the kept entities were added");
    assert_eq!(rows.last().map(|row| row.get::<_, i32>(0)), Some(late.read().id));
}

/// Forgetting many pending entities one by one costs each of them a
/// constant time, not time in proportion to those still pending: when each
/// one shifted the others, these 20,000 deletes took 23 s in a debug build
/// (0.04 s since). The bound makes a return to that fail, not crawl; it is
/// a hundred times what the deletes take, so a loaded machine passes.
#[tokio::test]
async fn deleting_many_pending_entities_one_by_one_is_not_quadratic() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let added = session.add_all((0..20_000).map(|i| customer(&format!("c{i}"))));
    let started = std::time::Instant::now();
    for entity in &added {
        session.delete(entity).unwrap();
    }
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(5), "20,000 deletes of pending entities took {took:?}");
    assert_eq!(session.pending().unwrap().inserts, 0);
    let stats = session.commit().await.expect("commit");
    assert_eq!(stats.statements, 0, "nothing was left to insert");
    assert_eq!(
        test_db.client().await.query_one("SELECT count(*) FROM customer", &[]).await.unwrap().get::<_, i64>(0),
        0
    );
}

/// A read session refuses a flush before it sends anything, the flush's
/// savepoint included: the session's next savepoint statement must not
/// release one that was never made.
#[tokio::test]
async fn a_refused_flush_in_a_read_session_leaves_its_savepoints_working() {
    let (_test_db, db) = seeded(&["ann"]).await;
    let mut reading = db.read_session();
    let ann = reading.get_one::<Customer>(1).await.unwrap();
    ann.modify(|c| c.name = "not allowed".into());
    let refused = reading.query::<Customer>().count().await.unwrap_err();
    assert!(matches!(refused, orm_core::Error::ReadOnlySession), "{refused}");
    reading.refresh(&ann).await.unwrap();
    assert_eq!(ann.read().name, "ann", "the refused change is discarded");
    let savepoint = reading.begin_nested().await.unwrap();
    assert_eq!(reading.query::<Customer>().count().await.unwrap(), 1);
    reading.rollback_nested(savepoint).await.unwrap();
    reading.commit().await.unwrap();
}

//! The unit of work: batching, change detection, version checks, and what a
//! failed flush leaves behind.

mod support;

use std::collections::HashMap;

use orm_core::{Error, Tracked};
use support::{count_rows, customer, setup, setup_with, Account, Customer};

#[tokio::test]
async fn ten_thousand_inserts_are_one_statement_and_one_round_trip() {
    // Without COPY, which takes two (tests/copy_insert.rs).
    let (test_db, db) = support::setup_with(|config| config.copy_threshold = None).await;
    // Warm the connection's statement cache so the count shows the steady state.
    let mut warm_up = db.session();
    warm_up.add_all([customer("warm-up 1"), customer("warm-up 2")]);
    warm_up.commit().await.unwrap();

    let mut session = db.session();
    let added = session.add_all((0..10_000).map(|i| customer(&format!("c{i}"))));
    let stats = session.commit().await.unwrap();
    assert_eq!(stats.statements, 1, "one INSERT for 10,000 rows");
    assert_eq!(stats.round_trips, 1, "BEGIN, INSERT and COMMIT travel together");
    assert_eq!(stats.rows, 10_000);
    assert_eq!(count_rows(&test_db, "customer").await, 10_002);

    let client = test_db.client().await;
    let stored: HashMap<i32, String> = client
        .query("SELECT id, name FROM customer", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    for tracked in &added {
        let entity = tracked.read();
        assert_eq!(stored.get(&entity.id), Some(&entity.name), "generated id landed on its own object");
    }
}

/// The `UNNEST` form, with `COPY` off (the `COPY` form is in
/// `tests/copy_update.rs`).
#[tokio::test]
async fn ten_thousand_updates_of_one_column_are_one_statement() {
    let (test_db, db) = setup_with(|config| {
        config.copy_threshold = None;
        config.copy_update_threshold = None;
    })
    .await;
    let mut session = db.session();
    session.add_all((0..10_000).map(|i| customer(&format!("c{i}"))));
    session.commit().await.unwrap();

    let mut session = db.session();
    let all = session.query::<Customer>().all().await.unwrap();
    assert_eq!(all.len(), 10_000);
    for tracked in &all {
        let mut entity = tracked.write();
        entity.description = Some(format!("about {}", entity.name));
    }
    let before = session.stats();
    let stats = session.commit().await.unwrap();
    assert_eq!(stats.statements - before.statements, 1, "one UPDATE for 10,000 rows");
    let client = test_db.client().await;
    let described: i64 = client
        .query_one("SELECT count(*) FROM customer WHERE description = 'about ' || name", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(described, 10_000);
}

#[tokio::test]
async fn statement_text_does_not_depend_on_the_row_count() {
    if orm_tests::skip_via_pgbouncer("reads pg_prepared_statements, which the unnamed mode leaves empty") {
        return;
    }
    let (test_db, db) = setup_one_connection().await;
    for batch in [1, 7, 500] {
        let mut session = db.session();
        session.add_all((0..batch).map(|i| customer(&format!("b{batch}-{i}"))));
        session.commit().await.unwrap();
        let mut session = db.session();
        for tracked in session.query::<Customer>().all().await.unwrap() {
            tracked.write().description = Some(format!("batch {batch}"));
        }
        session.commit().await.unwrap();
    }
    // One connection, so its prepared statements are all the flushes ever sent.
    let mut session = db.session();
    let rows = session
        .query_rows(
            "SELECT statement FROM pg_prepared_statements \
             WHERE statement LIKE 'INSERT%' OR statement LIKE 'WITH written AS (UPDATE%'",
            &[],
        )
        .await
        .unwrap();
    let texts: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
    assert_eq!(texts.len(), 3, "one UPDATE, and one INSERT for a single row and one for any batch: {texts:?}");
    let single_row = |text: &&String| text.starts_with("INSERT") && !text.contains("UNNEST");
    assert_eq!(texts.iter().filter(single_row).count(), 1, "{texts:?}");
    assert_eq!(texts.iter().filter(|text| text.contains("UNNEST")).count(), 2, "{texts:?}");
    drop(test_db);
}

async fn setup_one_connection() -> (orm_tests::TestDb, orm_core::Database) {
    support::setup_with(|config| config.max_connections = 1).await
}

#[tokio::test]
async fn unchanged_writes_cost_no_sql_and_updates_touch_only_changed_columns() {
    let (test_db, db) = setup().await;
    let client = test_db.client().await;
    client.batch_execute("INSERT INTO customer (name, description) VALUES ('dora', 'old')").await.unwrap();

    let mut session = db.session();
    let dora = session.get_one::<Customer>(1).await.unwrap();
    // A write that changes nothing is not an update.
    dora.write().name = "dora".to_owned();
    let before = session.stats();
    session.flush().await.unwrap();
    assert_eq!(session.stats(), before, "an unchanged entity costs no SQL");

    // Another writer changes `description` meanwhile; our update of `name`
    // must not overwrite it with the stale value we loaded.
    client.batch_execute("UPDATE customer SET description = 'theirs' WHERE id = 1").await.unwrap();
    dora.write().name = "dorothy".to_owned();
    session.commit().await.unwrap();
    let row = client.query_one("SELECT name, description FROM customer WHERE id = 1", &[]).await.unwrap();
    assert_eq!((row.get::<_, String>(0), row.get::<_, String>(1)), ("dorothy".to_owned(), "theirs".to_owned()));
}

#[tokio::test]
async fn updates_with_different_column_sets_are_one_statement_each() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    session.add_all((0..6).map(|i| customer(&format!("c{i}"))));
    session.commit().await.unwrap();

    let mut session = db.session();
    let all = session.query::<Customer>().order_by(Customer::ID.asc()).all().await.unwrap();
    for (i, tracked) in all.iter().enumerate() {
        let mut entity = tracked.write();
        match i % 3 {
            0 => entity.name.push_str("-renamed"),
            1 => entity.description = Some("described".to_owned()),
            _ => {
                entity.name.push_str("-both");
                entity.description = Some("both".to_owned());
            }
        }
    }
    let before = session.stats().statements;
    let stats = session.commit().await.unwrap();
    assert_eq!(stats.statements - before, 3, "one UPDATE per set of changed columns");
    let client = test_db.client().await;
    let renamed: i64 = client
        .query_one("SELECT count(*) FROM customer WHERE name LIKE '%-renamed' AND description IS NULL", &[])
        .await
        .unwrap()
        .get(0);
    let both: i64 = client
        .query_one("SELECT count(*) FROM customer WHERE name LIKE '%-both' AND description = 'both'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!((renamed, both), (2, 2));
}

#[tokio::test]
async fn deletes_are_batched_and_leave_the_identity_map() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    session.add_all((0..100).map(|i| customer(&format!("c{i}"))));
    session.commit().await.unwrap();

    let mut session = db.session();
    let all = session.query::<Customer>().all().await.unwrap();
    for tracked in all.iter().filter(|t| t.read().id % 2 == 0) {
        session.delete(tracked).unwrap();
    }
    let first_deleted = all.iter().find(|t| t.read().id % 2 == 0).unwrap().key();
    assert!(session.get::<Customer>(first_deleted).await.unwrap().is_none(), "pending deletion hides the key");
    let before = session.stats().statements;
    session.flush().await.unwrap();
    assert_eq!(session.stats().statements - before, 1, "one DELETE");
    assert!(session.get::<Customer>(first_deleted).await.unwrap().is_none());
    session.commit().await.unwrap();
    assert_eq!(count_rows(&test_db, "customer").await, 50);
}

#[tokio::test]
async fn deleting_an_unflushed_entity_forgets_it() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let ghost = session.add(customer("ghost"));
    session.delete(&ghost).unwrap();
    let stats = session.commit().await.unwrap();
    assert_eq!(stats.statements, 0);
    assert_eq!(count_rows(&test_db, "customer").await, 0);
}

#[tokio::test]
async fn generated_keys_land_on_the_right_objects_under_concurrent_writers() {
    let (test_db, db) = setup().await;
    let writers = (0..2).map(|writer| {
        let db = db.clone();
        tokio::spawn(async move {
            let mut session = db.session();
            let added = session.add_all((0..4_000).map(|i| customer(&format!("w{writer}-{i}"))));
            session.commit().await.unwrap();
            added.iter().map(|t| (t.read().id, t.read().name.clone())).collect::<Vec<_>>()
        })
    });
    let results = orm_tests::within(futures_util::future::join_all(writers)).await;
    let client = test_db.client().await;
    let stored: HashMap<i32, String> = client
        .query("SELECT id, name FROM customer", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(stored.len(), 8_000);
    for (id, name) in results.into_iter().flat_map(Result::unwrap) {
        assert_eq!(stored.get(&id), Some(&name), "object {name} got the key of another row");
    }
}

#[tokio::test]
async fn a_concurrent_change_makes_the_flush_fail_with_stale_data_and_commits_nothing() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    session.add(Account { id: 0, owner: "ann".into(), balance: 10, version: 1 });
    session.add(Account { id: 0, owner: "ben".into(), balance: 10, version: 1 });
    session.commit().await.unwrap();

    let mut session = db.session();
    let accounts = session.query::<Account>().order_by(Account::ID.asc()).all().await.unwrap();
    let ann_id = accounts[0].read().id;
    // Someone else changes ann's account after we loaded it.
    let client = test_db.client().await;
    client.execute("UPDATE account SET balance = 99, version = version + 1 WHERE id = $1", &[&ann_id]).await.unwrap();

    for tracked in &accounts {
        tracked.write().balance -= 5;
    }
    session.add(Account { id: 0, owner: "cy".into(), balance: 1, version: 1 });
    let error = session.commit().await.unwrap_err();
    match error {
        Error::StaleData { entity, keys, expected, matched, .. } => {
            assert_eq!(entity, "Account");
            assert_eq!(keys, vec![format!("{ann_id}")]);
            assert_eq!((expected, matched), (2, 1));
        }
        other => panic!("expected StaleData, got {other:?}"),
    }
    let rows = client.query("SELECT owner, balance, version FROM account ORDER BY id", &[]).await.unwrap();
    let state: Vec<(String, i64, i32)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    assert_eq!(state, vec![("ann".into(), 99, 2), ("ben".into(), 10, 1)], "nothing of the failed flush is committed");
}

#[tokio::test]
async fn stale_data_in_a_flush_leaves_the_session_usable_and_refresh_recovers() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    session.add(Account { id: 0, owner: "ann".into(), balance: 10, version: 1 });
    session.commit().await.unwrap();

    let mut session = db.session();
    let ann = session.get_one::<Account>(1).await.unwrap();
    let client = test_db.client().await;
    client.execute("UPDATE account SET balance = 50, version = version + 1", &[]).await.unwrap();
    ann.write().balance -= 5;
    let error = session.flush().await.unwrap_err();
    assert!(matches!(error, Error::StaleData { entity: "Account", .. }), "{error:?}");
    assert!(ann.is_modified(), "the change is still pending");
    assert_eq!(ann.read().version, 1, "nothing was applied");

    // Reload what the other writer committed, decide again, and flush.
    session.refresh(&ann).await.unwrap();
    assert_eq!((ann.read().balance, ann.read().version), (50, 2));
    ann.write().balance -= 5;
    session.commit().await.unwrap();
    let row = client.query_one("SELECT balance, version FROM account", &[]).await.unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i32>(1)), (45, 3));
}

#[tokio::test]
async fn deleting_a_row_changed_since_it_was_loaded_is_stale_data() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    session.add_all([
        Account { id: 0, owner: "ann".into(), balance: 10, version: 1 },
        Account { id: 0, owner: "ben".into(), balance: 10, version: 1 },
    ]);
    session.commit().await.unwrap();

    let mut session = db.session();
    let accounts = session.query::<Account>().order_by(Account::ID.asc()).all().await.unwrap();
    let client = test_db.client().await;
    client.execute("UPDATE account SET balance = 0, version = version + 1 WHERE owner = 'ben'", &[]).await.unwrap();
    for account in &accounts {
        session.delete(account).unwrap();
    }
    let error = session.commit().await.unwrap_err();
    match error {
        Error::StaleData { keys, expected, matched, .. } => {
            assert_eq!(keys, vec!["2".to_owned()], "ben's row changed after it was loaded");
            assert_eq!((expected, matched), (2, 1));
        }
        other => panic!("expected StaleData, got {other:?}"),
    }
    let left: i64 = client.query_one("SELECT count(*) FROM account", &[]).await.unwrap().get(0);
    assert_eq!(left, 2, "neither row was deleted");
}

#[tokio::test]
async fn version_columns_advance_on_update() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let account = session.add(Account { id: 0, owner: "dee".into(), balance: 5, version: 1 });
    session.flush().await.unwrap();
    account.write().balance = 6;
    session.flush().await.unwrap();
    assert_eq!(account.read().version, 2);
    account.write().balance = 7;
    session.commit().await.unwrap();
    assert_eq!(account.read().version, 3);
    let client = test_db.client().await;
    let row = client.query_one("SELECT balance, version FROM account", &[]).await.unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i32>(1)), (7, 3));
}

#[tokio::test]
async fn after_a_failed_flush_the_work_is_still_pending_and_a_corrected_retry_commits() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    session.add(customer("taken"));
    session.flush().await.unwrap();

    let fine = session.add(customer("fine"));
    let duplicate = session.add(customer("taken"));
    let error = session.flush().await.unwrap_err();
    assert!(matches!(error, Error::UniqueViolation { .. }), "got {error:?}");
    assert_eq!(fine.read().id, 0, "no generated key is applied from a failed flush");

    duplicate.write().name = "corrected".to_owned();
    session.flush().await.unwrap();
    assert_ne!(fine.read().id, 0);
    session.commit().await.unwrap();
    let client = test_db.client().await;
    let names: Vec<String> =
        client.query("SELECT name FROM customer ORDER BY name", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(names, vec!["corrected", "fine", "taken"]);
}

#[tokio::test]
async fn a_failed_commit_rolls_back_everything() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    session.add(customer("first"));
    session.flush().await.unwrap();
    session.add(customer("first"));
    let error = session.commit().await.unwrap_err();
    assert!(matches!(error, Error::UniqueViolation { .. }), "got {error:?}");
    assert_eq!(count_rows(&test_db, "customer").await, 0);
}

#[tokio::test]
async fn changing_a_primary_key_is_refused() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    let added = session.add(customer("key"));
    session.flush().await.unwrap();
    added.write().id += 1000;
    assert!(matches!(session.flush().await, Err(Error::PrimaryKeyChanged { entity: "Customer", .. })));
}

#[tokio::test]
async fn handles_outlive_the_session_as_plain_data() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    let kept: Tracked<Customer> = session.add(customer("kept"));
    session.commit().await.unwrap();
    assert_eq!(kept.get().name, "kept");
    assert!(kept.read().id > 0);
}

#[tokio::test]
async fn an_entity_written_again_after_a_failed_flush_is_updated_once() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    session.add_all([customer("ann"), customer("ben")]);
    session.flush().await.unwrap();
    let ann = session.get_one::<Customer>(1).await.unwrap();
    ann.write().description = Some("first".into());
    let clash = session.add(customer("ben"));
    assert!(session.flush().await.is_err());
    session.expunge(&clash);
    // Refreshed and written again: the write log now holds the handle twice.
    session.refresh(&ann).await.unwrap();
    ann.write().description = Some("second".into());
    ann.write().name = "ann 2".into();
    assert_eq!(session.pending().unwrap().updates, 1);
    let before = session.stats();
    session.flush().await.unwrap();
    assert_eq!(session.stats().rows - before.rows, 1, "one row updated, once");
    session.commit().await.unwrap();
    let row =
        test_db.client().await.query_one("SELECT name, description FROM customer WHERE id = 1", &[]).await.unwrap();
    assert_eq!((row.get::<_, String>(0), row.get::<_, String>(1)), ("ann 2".to_owned(), "second".to_owned()));
}

/// A version that reaches its type's maximum quickly.
#[derive(orm_core::Entity, Clone, Debug, PartialEq)]
#[orm(table = "counter")]
struct Counter {
    #[orm(primary_key)]
    id: i32,
    hits: i64,
    #[orm(version)]
    version: i16,
}

/// [`Counter`] with its version's type spelled as SQL spells it.
#[derive(orm_core::Entity, Clone, Debug, PartialEq)]
#[orm(table = "counter")]
struct SpelledCounter {
    #[orm(primary_key)]
    id: i32,
    hits: i64,
    #[orm(version, sql_type = "smallint")]
    version: i16,
}

#[tokio::test]
async fn a_version_at_its_types_maximum_wraps_in_memory_and_in_the_database_alike() {
    let (test_db, db) = setup().await;
    let client = test_db.client().await;
    client
        .batch_execute(
            "CREATE TABLE counter (id int PRIMARY KEY, hits bigint NOT NULL, version smallint NOT NULL);
                          INSERT INTO counter VALUES (1, 0, 32766)",
        )
        .await
        .unwrap();
    for expected in [i16::MAX, i16::MIN, i16::MIN + 1] {
        let mut session = db.session();
        let counter = session.get_one::<Counter>(1).await.unwrap();
        counter.modify(|c| c.hits += 1);
        session.commit().await.unwrap();
        assert_eq!(counter.read().version, expected);
        let stored: i16 = client.query_one("SELECT version FROM counter", &[]).await.unwrap().get(0);
        assert_eq!(stored, expected);
    }
    client.batch_execute("UPDATE counter SET version = 32766").await.unwrap();
    for expected in [i16::MAX, i16::MIN] {
        let mut session = db.session();
        let counter = session.get_one::<SpelledCounter>(1).await.unwrap();
        counter.modify(|c| c.hits += 1);
        session.commit().await.expect("`smallint` wraps as `int2` does");
        let stored: i16 = client.query_one("SELECT version FROM counter", &[]).await.unwrap().get(0);
        assert_eq!((counter.read().version, stored), (expected, expected));
    }
}

//! Set-based UPDATE and DELETE by filter: one statement, and the session's
//! tracked instances brought in line with what the statement did.

mod support;

use orm_core::{Database, Entity, Error, Tracked};
use orm_tests::TestDb;

#[derive(Entity, Clone, Debug, PartialEq)]
struct Item {
    #[orm(primary_key, generated)]
    id: i64,
    name: String,
    stock: i32,
    note: Option<String>,
    #[orm(version)]
    version: i32,
}

async fn setup() -> (TestDb, Database) {
    let test_db = TestDb::new().await;
    test_db
        .client()
        .await
        .batch_execute(
            "CREATE TABLE item (id bigserial PRIMARY KEY, name text NOT NULL, stock int NOT NULL, note text, version int NOT NULL);
             INSERT INTO item (name, stock, note, version)
                 SELECT 'item ' || n, n % 3, 'n', 0 FROM generate_series(1, 30) AS n",
        )
        .await
        .unwrap();
    let db = Database::connect(test_db.url()).unwrap();
    (test_db, db)
}

async fn count(test_db: &TestDb, sql: &str) -> i64 {
    test_db.client().await.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn a_delete_by_filter_is_one_statement_and_its_rows_leave_the_session() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let out_of_stock = session.get_one::<Item>(3).await.unwrap(); // stock 0
    let kept = session.get_one::<Item>(1).await.unwrap(); // stock 1
    let before = session.stats().statements;
    let deleted = session.query::<Item>().filter(Item::STOCK.eq(0)).delete().await.unwrap();
    assert_eq!(deleted, 10);
    assert_eq!(session.stats().statements, before + 1);
    assert!(session.get::<Item>(3).await.unwrap().is_none(), "the deleted row's instance left the session");
    assert!(!session.expunge(&out_of_stock));
    assert!(Tracked::ptr_eq(&session.get_one::<Item>(1).await.unwrap(), &kept));
    session.commit().await.unwrap();
    assert_eq!(count(&test_db, "SELECT count(*) FROM item").await, 20);
}

#[tokio::test]
async fn a_rolled_back_savepoint_brings_bulk_deleted_instances_back() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let third = session.get_one::<Item>(3).await.unwrap();
    let savepoint = session.begin_nested().await.unwrap();
    session.query::<Item>().filter(Item::STOCK.eq(0)).delete().await.unwrap();
    session.rollback_nested(savepoint).await.unwrap();
    assert!(Tracked::ptr_eq(&session.get_one::<Item>(3).await.unwrap(), &third));
    session.commit().await.unwrap();
    assert_eq!(count(&test_db, "SELECT count(*) FROM item").await, 30);
}

#[tokio::test]
async fn an_update_by_filter_refreshes_tracked_instances_and_advances_versions() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let second = session.get_one::<Item>(2).await.unwrap(); // stock 2
    let updated = session
        .query::<Item>()
        .filter(Item::STOCK.eq(2))
        .update([Item::STOCK.set(Item::STOCK + 10), Item::NOTE.set_null()])
        .await
        .unwrap();
    assert_eq!(updated, 10);
    assert_eq!((second.read().stock, second.read().note.clone(), second.read().version), (12, None, 1));
    assert!(!second.is_modified());
    // A later change of the refreshed instance is checked against its new version.
    second.modify(|item| item.name = "renamed".into());
    session.commit().await.unwrap();
    assert_eq!(
        count(&test_db, "SELECT count(*) FROM item WHERE stock = 12 AND note IS NULL AND version >= 1").await,
        10
    );
    assert_eq!(count(&test_db, "SELECT version::int8 FROM item WHERE id = 2").await, 2);
}

#[tokio::test]
async fn an_update_with_a_limit_picks_its_rows_by_key_and_can_skip_locked_ones() {
    let (test_db, db) = setup().await;
    let mut holder = db.session();
    holder.query::<Item>().filter(Item::ID.le(2)).for_update().all().await.unwrap();

    let mut session = db.session();
    let taken = session
        .query::<Item>()
        .filter(Item::NOTE.eq("n"))
        .order_by(Item::ID.asc())
        .limit(3)
        .for_update()
        .skip_locked()
        .update([Item::NOTE.set("taken")])
        .await
        .unwrap();
    assert_eq!(taken, 3);
    session.commit().await.unwrap();
    holder.rollback().await.unwrap();
    let ids: Vec<i64> = test_db
        .client()
        .await
        .query("SELECT id FROM item WHERE note = 'taken' ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(ids, [3, 4, 5], "the first three rows nobody held");

    let mut session = db.session();
    let removed = session.query::<Item>().order_by(Item::ID.desc()).limit(2).delete().await.unwrap();
    assert_eq!(removed, 2);
    session.commit().await.unwrap();
    assert_eq!(count(&test_db, "SELECT max(id) FROM item").await, 28);
}

#[tokio::test]
async fn an_update_that_would_overwrite_unflushed_changes_is_an_error() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    session.set_autoflush(false);
    let first = session.get_one::<Item>(1).await.unwrap();
    first.modify(|item| item.name = "mine".into());
    let error = session.query::<Item>().filter(Item::ID.eq(1)).update([Item::STOCK.set(5)]).await.unwrap_err();
    assert!(matches!(error, Error::UnflushedChanges { entity: "Item", .. }), "{error}");
    assert_eq!(first.read().name, "mine");
}

#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "item")]
struct NewItem {
    #[orm(primary_key)]
    id: i64,
    name: String,
    stock: i32,
    note: Option<String>,
    #[orm(version)]
    version: i32,
}

fn new_item(id: i64, stock: i32) -> NewItem {
    NewItem { id, name: format!("item {id}"), stock, note: None, version: 0 }
}

#[tokio::test]
async fn ten_thousand_upserts_some_of_existing_rows_are_one_statement() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let tracked = session.get_one::<NewItem>(7).await.unwrap();
    let rows: Vec<NewItem> = (16..10_016).map(|id| new_item(id, 100)).collect();
    let before = session.stats().statements;
    let written = session.upsert(rows).do_update([NewItem::STOCK]).await.unwrap();
    assert_eq!(written, 10_000);
    assert_eq!(session.stats().statements, before + 1);
    // An instance the session tracks is refreshed with what the database holds.
    let again: Vec<NewItem> = vec![new_item(7, 77)];
    session.upsert(again).do_update([NewItem::STOCK]).await.unwrap();
    assert_eq!((tracked.read().stock, tracked.read().version), (77, 1));
    assert!(!tracked.is_modified());

    let skipped = session.upsert(vec![new_item(1, 0), new_item(20_000, 5)]).do_nothing().await.unwrap();
    assert_eq!(skipped, 1, "only the new row was written");
    session.commit().await.unwrap();
    assert_eq!(count(&test_db, "SELECT count(*) FROM item").await, 10_016);
    assert_eq!(count(&test_db, "SELECT count(*) FROM item WHERE stock = 100 AND version = 1").await, 15);
    assert_eq!(count(&test_db, "SELECT count(*) FROM item WHERE stock = 100 AND version = 0").await, 9_985);
}

#[tokio::test]
async fn an_upsert_on_another_unique_column_updates_by_it() {
    let (test_db, db) = setup().await;
    test_db.client().await.batch_execute("CREATE UNIQUE INDEX item_name ON item (name)").await.unwrap();
    let mut session = db.session();
    let renamed = NewItem { id: 999, name: "item 3".into(), stock: 42, note: Some("by name".into()), version: 0 };
    let written = session.upsert(vec![renamed]).on_conflict(NewItem::NAME).do_update([NewItem::NOTE]).await.unwrap();
    assert_eq!(written, 1);
    session.commit().await.unwrap();
    assert_eq!(count(&test_db, "SELECT id FROM item WHERE note = 'by name'").await, 3);
}

/// Setting a key column by filter is refused, as a flush refuses a changed
/// key: the session would keep the rows under their old keys.
#[tokio::test]
async fn a_set_based_update_of_a_key_column_is_refused() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let first = session.get_one::<Item>(1).await.unwrap();
    let error = session.query::<Item>().update([Item::ID.set(Item::ID + 1000)]).await.unwrap_err();
    assert!(matches!(error, Error::PrimaryKeyChanged { entity: "Item", .. }), "{error:?}");
    assert!(Tracked::ptr_eq(&session.get_one::<Item>(1).await.unwrap(), &first));
    session.commit().await.unwrap();
    assert_eq!(count(&test_db, "SELECT max(id) FROM item").await, 30);
}

/// Longer than any statement of these tests takes, unless it waits for a lock.
const WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// `skip_locked()` and `nowait()` pick the rows of a set-based write with no
/// limit or order too: a worker takes the rows nobody holds, or fails at
/// once, instead of waiting behind another worker's rows.
#[tokio::test]
async fn skip_locked_and_nowait_apply_to_a_set_based_write_without_a_limit() {
    let (test_db, db) = setup().await;
    let mut holder = db.session();
    holder.query::<Item>().filter(Item::ID.le(2)).for_update().all().await.unwrap();

    let mut session = db.session();
    let taken = tokio::time::timeout(WAIT, session.query::<Item>().skip_locked().update([Item::NOTE.set("taken")]))
        .await
        .expect("no wait for the held rows")
        .unwrap();
    assert_eq!(taken, 28, "every row but the two held");
    session.commit().await.unwrap();

    let mut session = db.session();
    let refused = tokio::time::timeout(WAIT, session.query::<Item>().filter(Item::ID.eq(1)).nowait().delete())
        .await
        .expect("no wait for the held row");
    let error = refused.unwrap_err();
    assert_eq!(error.sql_state(), Some(&orm_core::tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE), "{error:?}");
    session.rollback().await.unwrap();
    holder.rollback().await.unwrap();
    assert_eq!(count(&test_db, "SELECT count(*) FROM item WHERE note = 'taken'").await, 28);
}

#[derive(Entity, Clone, Debug, PartialEq)]
struct Note {
    #[orm(primary_key, generated)]
    id: i64,
    text: String,
    #[orm(soft_delete)]
    deleted_at: Option<chrono::DateTime<chrono::Utc>>,
    #[orm(version)]
    version: i32,
}

/// A set-based soft delete sets the marker of live rows only, even with
/// `include_deleted()`: a row in the bin keeps the time it was deleted
/// (which a purge job goes by) and its version.
#[tokio::test]
async fn a_set_based_soft_delete_leaves_the_rows_in_the_bin_as_they_are() {
    let (test_db, db) = setup().await;
    test_db
        .client()
        .await
        .batch_execute(
            "CREATE TABLE note (id bigserial PRIMARY KEY, text text NOT NULL, deleted_at timestamptz, version int NOT NULL);
             INSERT INTO note (text, deleted_at, version) VALUES ('live', NULL, 0), ('binned', '2000-01-01', 5)",
        )
        .await
        .unwrap();
    let mut session = db.session();
    let deleted = session.query::<Note>().include_deleted().delete().await.unwrap();
    assert_eq!(deleted, 1, "only the live row");
    session.commit().await.unwrap();
    let binned = "SELECT count(*) FROM note WHERE text = 'binned' AND deleted_at = '2000-01-01' AND version = 5";
    assert_eq!(count(&test_db, binned).await, 1);
    assert_eq!(count(&test_db, "SELECT count(*) FROM note WHERE deleted_at IS NOT NULL").await, 2);
}

/// A set-based write picks its rows with `FOR UPDATE` whatever lock the
/// query asked for: with `for_share()`, it would pick rows another
/// reader holds shared, and then wait for them (or deadlock with a second
/// writer that picked them too).
#[tokio::test]
async fn a_shared_lock_that_skips_locked_rows_picks_rows_for_the_write() {
    let (test_db, db) = setup().await;
    let mut reader = db.session();
    reader.query::<Item>().filter(Item::ID.le(2)).for_share().all().await.unwrap();

    let mut session = db.session();
    let write = session.query::<Item>().for_share().skip_locked().update([Item::NOTE.set("taken")]);
    let taken = tokio::time::timeout(WAIT, write).await.expect("no wait for the rows read shared").unwrap();
    assert_eq!(taken, 28, "every row but the two the reader holds");
    session.commit().await.unwrap();
    reader.rollback().await.unwrap();
    assert_eq!(count(&test_db, "SELECT count(*) FROM item WHERE note = 'taken'").await, 28);
}

//! Upsert in the unit of work: entities added with an on-conflict rule are
//! flushed in one `INSERT ... ON CONFLICT ... RETURNING` per rule, beside
//! the plain inserts, and each handle then holds what the database holds.

use std::time::Duration;

use orm_core::{Database, Entity, Error, OnConflict, Tracked};
use orm_tests::TestDb;

#[derive(Entity, Clone, Debug, PartialEq)]
struct Member {
    #[orm(primary_key, generated)]
    id: i64,
    email: String,
    name: String,
    visits: i32,
    #[orm(version)]
    version: i32,
}

#[derive(Entity, Clone, Debug, PartialEq)]
struct Visit {
    #[orm(primary_key, generated)]
    id: i64,
    #[orm(references = Member)]
    member_id: i64,
    page: String,
}

#[derive(Entity, Clone, Debug, PartialEq)]
struct Stock {
    #[orm(primary_key)]
    sku: i64,
    units: i32,
    label: String,
}

const SCHEMA: &str = "
    CREATE TABLE member (id bigserial PRIMARY KEY, email text NOT NULL UNIQUE, name text NOT NULL,
                         visits int NOT NULL, version int NOT NULL);
    CREATE TABLE visit (id bigserial PRIMARY KEY, member_id bigint NOT NULL REFERENCES member, page text NOT NULL);
    CREATE TABLE stock (sku bigint PRIMARY KEY, units int NOT NULL, label text NOT NULL);
    INSERT INTO member (email, name, visits, version) VALUES ('ann@example.com', 'Ann', 7, 3);
    INSERT INTO stock SELECT n, 100, 'old ' || n FROM generate_series(1, 5000) AS n;
";

async fn setup() -> (TestDb, Database) {
    let test_db = TestDb::new().await;
    test_db.client().await.batch_execute(SCHEMA).await.unwrap();
    let db = Database::connect(test_db.url()).unwrap();
    (test_db, db)
}

fn member(email: &str, name: &str) -> Member {
    Member { id: 0, email: email.into(), name: name.into(), visits: 0, version: 0 }
}

async fn stock_rows(test_db: &TestDb) -> Vec<(i64, i32, String)> {
    let rows = test_db.client().await.query("SELECT sku, units, label FROM stock ORDER BY sku", &[]).await.unwrap();
    rows.iter().map(|row| (row.get(0), row.get(1), row.get(2))).collect()
}

#[tokio::test]
async fn ten_thousand_upserts_half_existing_are_one_statement_and_hold_the_database_rows() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let rule = OnConflict::key().do_update([Stock::UNITS]);
    let feed = (2501..=12_500).map(|sku| Stock { sku, units: 1, label: format!("new {sku}") });
    let stock = session.add_all_on_conflict(feed, rule);
    assert_eq!(session.pending().unwrap().inserts, 10_000);
    session.flush().await.unwrap();
    assert_eq!(session.stats().statements, 1);

    // An existing row took the new units and kept its label; a new row is the new entity.
    assert_eq!(*stock[0].read(), Stock { sku: 2501, units: 1, label: "old 2501".into() });
    assert_eq!(*stock[9999].read(), Stock { sku: 12_500, units: 1, label: "new 12500".into() });
    assert!(!stock[0].is_modified(), "the handle holds what the database holds");

    // Tracked like loaded entities: found without SQL, and changes are updates.
    let before = session.stats().statements;
    assert!(Tracked::ptr_eq(&session.get_one::<Stock>(2501).await.unwrap(), &stock[0]));
    assert_eq!(session.stats().statements, before);
    stock[0].modify(|s| s.label = "relabelled".into());
    session.commit().await.unwrap();

    let rows = stock_rows(&test_db).await;
    assert_eq!(rows.len(), 12_500);
    assert_eq!(rows[0], (1, 100, "old 1".into()));
    assert_eq!(rows[2500], (2501, 1, "relabelled".into()));
    assert_eq!(rows[12_499], (12_500, 1, "new 12500".into()));
}

#[tokio::test]
async fn an_upsert_on_a_unique_column_takes_the_existing_rows_key_and_advances_its_version() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let sign_up = OnConflict::columns(Member::EMAIL).do_update([Member::NAME]);
    let ann = session.add_on_conflict(member("ann@example.com", "Ann Lee"), sign_up);
    let bo = session.add_on_conflict(member("bo@example.com", "Bo"), sign_up);
    let cy = session.add(member("cy@example.com", "Cy")); // a plain insert beside them
    let stats = session.commit().await.unwrap();
    assert_eq!(stats.statements, 2, "the plain INSERT and the upsert");

    assert_eq!(
        *ann.read(),
        Member { id: 1, email: "ann@example.com".into(), name: "Ann Lee".into(), visits: 7, version: 4 }
    );
    assert_eq!(bo.read().version, 0);
    assert_ne!(bo.read().id, cy.read().id);
    let row =
        test_db.client().await.query_one("SELECT name, visits, version FROM member WHERE id = 1", &[]).await.unwrap();
    assert_eq!((row.get::<_, String>(0), row.get::<_, i32>(1), row.get::<_, i32>(2)), ("Ann Lee".into(), 7, 4));
}

#[tokio::test]
async fn do_nothing_leaves_existing_rows_alone_and_takes_skipped_entities_out_of_the_session() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let keep = OnConflict::key().do_nothing();
    let stock = session.add_all_on_conflict(
        [4999, 5000, 5001, 5001].map(|sku| Stock { sku, units: 1, label: format!("new {sku}") }),
        keep,
    );
    session.flush().await.unwrap();
    assert_eq!(session.stats().statements, 1);

    // The two existing rows and the second 5001 were skipped.
    for skipped in [&stock[0], &stock[1], &stock[3]] {
        assert!(!session.expunge(skipped), "a skipped entity is not tracked");
    }
    assert!(Tracked::ptr_eq(&session.get_one::<Stock>(5001).await.unwrap(), &stock[2]));
    let existing = session.get_one::<Stock>(5000).await.unwrap();
    assert!(!Tracked::ptr_eq(&existing, &stock[1]));
    assert_eq!(existing.read().units, 100);
    // A write to a skipped entity is not flushed: it is not the row's instance.
    stock[1].modify(|s| s.units = 0);
    assert_eq!(session.pending().unwrap().updates, 0);
    session.commit().await.unwrap();

    let rows = stock_rows(&test_db).await;
    assert_eq!(rows.len(), 5001);
    assert_eq!(rows[4999], (5000, 100, "old 5000".into()));
    assert_eq!(rows[5000], (5001, 1, "new 5001".into()));
}

#[tokio::test]
async fn an_upsert_meeting_a_tracked_row_fails_the_flush_and_writes_nothing() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let loaded = session.get_one::<Stock>(7).await.unwrap();
    let upserted = session.add_on_conflict(
        Stock { sku: 7, units: 1, label: "twice".into() },
        OnConflict::key().do_update((Stock::UNITS, Stock::LABEL)),
    );
    let fresh =
        session.add_on_conflict(Stock { sku: 9000, units: 1, label: "new".into() }, OnConflict::key().do_nothing());
    let error = session.flush().await.unwrap_err();
    assert!(matches!(error, Error::AlreadyTracked { entity: "Stock", .. }), "{error:?}");

    // The flush was rolled back; with the clashing handle gone the rest goes through.
    assert!(session.expunge(&upserted));
    loaded.modify(|s| s.units = 3);
    session.commit().await.unwrap();
    let rows = stock_rows(&test_db).await;
    assert_eq!(rows[6], (7, 3, "old 7".into()));
    assert_eq!(rows.len(), 5001);
    assert_eq!(fresh.read().sku, 9000);
}

#[tokio::test]
async fn two_rules_meeting_one_row_in_a_commit_fail_before_commit() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    session.add(member("dee@example.com", "Dee"));
    session.add_on_conflict(
        member("dee@example.com", "Dee again"),
        OnConflict::columns(Member::EMAIL).do_update([Member::NAME]),
    );
    let error = session.commit().await.unwrap_err();
    assert!(matches!(error, Error::AlreadyTracked { entity: "Member", .. }), "{error:?}");
    let members: i64 = test_db.client().await.query_one("SELECT count(*) FROM member", &[]).await.unwrap().get(0);
    assert_eq!(members, 1, "the commit was rolled back");
}

#[tokio::test]
async fn a_child_linked_to_an_upserted_parent_gets_the_key_of_the_row_it_met() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let ann = session.add_on_conflict(
        member("ann@example.com", "Ann"),
        OnConflict::columns(Member::EMAIL).do_update([Member::VISITS]),
    );
    let visit = session.add(Visit { id: 0, member_id: 0, page: "/home".into() });
    session.set_parent(&visit, Visit::MEMBER, &ann).unwrap();
    session.commit().await.unwrap();
    assert_eq!(ann.read().id, 1);
    assert_eq!(visit.read().member_id, 1);
    let member_id: i64 = test_db.client().await.query_one("SELECT member_id FROM visit", &[]).await.unwrap().get(0);
    assert_eq!(member_id, 1);
}

#[tokio::test]
async fn a_rolled_back_savepoint_takes_an_upserted_entity_out_as_an_inserted_one() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let savepoint = session.begin_nested().await.unwrap();
    let stock = session
        .add_on_conflict(Stock { sku: 1, units: 9, label: "new".into() }, OnConflict::key().do_update([Stock::UNITS]));
    session.flush().await.unwrap();
    assert_eq!(stock.read().label, "old 1");
    session.rollback_nested(savepoint).await.unwrap();
    assert!(!session.expunge(&stock), "it left the session");
    let reloaded = session.get_one::<Stock>(1).await.unwrap();
    assert_eq!(reloaded.read().units, 100);
    session.commit().await.unwrap();
    assert_eq!(stock_rows(&test_db).await[0], (1, 100, "old 1".into()));
}

#[tokio::test]
async fn a_batch_that_updates_one_row_twice_is_a_database_error_and_writes_nothing() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let rule = OnConflict::key().do_update([Stock::UNITS]);
    session.add_all_on_conflict([1, 1].map(|sku| Stock { sku, units: 0, label: String::new() }), rule);
    let error = tokio::time::timeout(Duration::from_secs(30), session.commit()).await.unwrap().unwrap_err();
    assert!(error.to_string().contains("affect row a second time"), "{error}");
    assert_eq!(stock_rows(&test_db).await[0], (1, 100, "old 1".into()));
}

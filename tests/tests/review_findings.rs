//! Regression tests for problems found in review of the sound-handles,
//! savepoint, row-switch and `query_raw` work.

use std::future::Future;
use std::time::Duration;

use orm_core::{Database, Entity, Error, Tracked};
use orm_tests::TestDb;

const LIMIT: Duration = Duration::from_secs(30);

async fn within_limit<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, future).await.expect("the ORM must not block")
}

/// A row keyed by a name the application chooses, with a version.
#[derive(Entity, Clone, Debug, PartialEq)]
struct Team {
    #[orm(primary_key)]
    code: String,
    name: String,
    #[orm(version)]
    version: i32,
}

/// A row referencing a team by its application-assigned key.
#[derive(Entity, Clone, Debug, PartialEq)]
struct Member {
    #[orm(primary_key, generated)]
    id: i64,
    #[orm(references = Team)]
    team_id: String,
    name: String,
}

async fn setup() -> (TestDb, Database) {
    let test_db = TestDb::new().await;
    test_db
        .client()
        .await
        .batch_execute(
            "CREATE TABLE team (code text PRIMARY KEY, name text NOT NULL, version int NOT NULL);
             CREATE TABLE member (id bigserial PRIMARY KEY, team_id text NOT NULL REFERENCES team, name text NOT NULL);
             INSERT INTO team VALUES ('red', 'Red', 0), ('blue', 'Blue', 0);",
        )
        .await
        .unwrap();
    let db = Database::connect(test_db.url()).unwrap();
    (test_db, db)
}

async fn team_row(test_db: &TestDb, code: &str) -> (String, i32) {
    let row =
        test_db.client().await.query_one("SELECT name, version FROM team WHERE code = $1", &[&code]).await.unwrap();
    (row.get(0), row.get(1))
}

/// A row switch whose new object equals the deleted one's loaded values
/// sent no statement at all, so it did not check the version of the row it
/// took over: a concurrent change survived silently, and memory said
/// otherwise. The delete it replaces would have been `StaleData`.
#[tokio::test]
async fn an_unchanged_row_switch_still_checks_the_version_of_the_row_it_replaces() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let old = session.get_one::<Team>("red".to_owned()).await.unwrap();
    test_db
        .client()
        .await
        .execute("UPDATE team SET name = 'Theirs', version = 1 WHERE code = 'red'", &[])
        .await
        .unwrap();
    session.delete(&old).unwrap();
    let new = session.add(Team { code: "red".into(), name: "Red".into(), version: 0 });
    let result = within_limit(session.commit()).await;
    let stored = team_row(&test_db, "red").await;
    assert!(
        matches!(&result, Err(Error::StaleData { entity: "Team", .. })),
        "{result:?}: the database holds {stored:?} while the new object says {:?}",
        new.get()
    );
    assert_eq!(stored, ("Theirs".to_owned(), 1));
}

/// Without a concurrent change, an unchanged switch keeps the row as it was.
#[tokio::test]
async fn an_unchanged_row_switch_leaves_the_row_and_the_version_in_memory_matching() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let old = session.get_one::<Team>("red".to_owned()).await.unwrap();
    session.delete(&old).unwrap();
    let new = session.add(Team { code: "red".into(), name: "Red".into(), version: 0 });
    within_limit(session.commit()).await.unwrap();
    let (name, version) = team_row(&test_db, "red").await;
    assert_eq!(name, "Red");
    assert_eq!(new.read().version, version, "memory and row agree on the version");
    let mut session = db.session();
    let again = session.get_one::<Team>("red".to_owned()).await.unwrap();
    again.modify(|t| t.name = "Rouge".into());
    within_limit(session.commit()).await.unwrap();
}

/// A child linked to a new parent that takes over a deleted parent's row
/// (a row switch) waited for a key that no round trip would produce: the
/// switch goes only in the last round trip, which never came, and the
/// flush failed with `DependencyCycle`.
#[tokio::test]
async fn a_child_linked_to_a_parent_that_switches_rows_is_flushed() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let old = session.get_one::<Team>("red".to_owned()).await.unwrap();
    session.delete(&old).unwrap();
    let new = session.add(Team { code: "red".into(), name: "Scarlet".into(), version: 0 });
    let member = session.add(Member { id: 0, team_id: String::new(), name: "ann".into() });
    session.set_parent(&member, Member::TEAM, &new).unwrap();
    within_limit(session.commit()).await.unwrap();
    assert_eq!(member.read().team_id, "red");
    assert_eq!(team_row(&test_db, "red").await, ("Scarlet".to_owned(), 1));
    let row = test_db.client().await.query_one("SELECT team_id FROM member", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "red");
}

/// `query_raw` refreshes a tracked instance with what a statement inside a
/// savepoint returned; rolling the savepoint back undid the row but not
/// the instance, which then disagreed with the database (its version too,
/// so its next update was refused as stale).
#[tokio::test]
async fn rows_refreshed_inside_a_rolled_back_savepoint_get_their_old_values_back() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let red = session.get_one::<Team>("red".to_owned()).await.unwrap();
    let savepoint = within_limit(session.begin_nested()).await.unwrap();
    let renamed = within_limit(session.query_raw::<Team>(
        "UPDATE team SET name = 'Crimson', version = version + 1 WHERE code = 'red' RETURNING *",
        &[],
    ))
    .await
    .unwrap();
    assert!(Tracked::ptr_eq(&renamed[0], &red));
    assert_eq!(red.read().name, "Crimson");
    within_limit(session.rollback_nested(savepoint)).await.unwrap();
    assert_eq!(red.get(), Team { code: "red".into(), name: "Red".into(), version: 0 }, "memory follows the database");

    red.modify(|t| t.name = "Ruby".into());
    within_limit(session.commit()).await.unwrap();
    assert_eq!(team_row(&test_db, "red").await, ("Ruby".to_owned(), 1));
}

/// The same for `refresh` inside a savepoint.
#[tokio::test]
async fn an_instance_refreshed_inside_a_rolled_back_savepoint_gets_its_old_values_back() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let red = session.get_one::<Team>("red".to_owned()).await.unwrap();
    let savepoint = within_limit(session.begin_nested()).await.unwrap();
    within_limit(session.execute("UPDATE team SET name = 'Crimson', version = 5 WHERE code = 'red'", &[]))
        .await
        .unwrap();
    within_limit(session.refresh(&red)).await.unwrap();
    assert_eq!(red.read().version, 5);
    within_limit(session.rollback_nested(savepoint)).await.unwrap();
    assert_eq!(red.get(), Team { code: "red".into(), name: "Red".into(), version: 0 });
    red.modify(|t| t.name = "Ruby".into());
    within_limit(session.commit()).await.unwrap();
    assert_eq!(team_row(&test_db, "red").await, ("Ruby".to_owned(), 1));
}

//! Row switch: deleting an entity and adding a new one with the same key in
//! one flush updates the row instead of inserting before the delete (which
//! would violate the key), as SQLAlchemy does.

mod support;

use orm_core::{Database, Entity, Error, Tracked};
use orm_tests::TestDb;

/// A row keyed by a name the application chooses, with a version.
#[derive(Entity, Clone, Debug, PartialEq)]
struct Setting {
    #[orm(primary_key)]
    name: String,
    value: String,
    note: Option<String>,
    #[orm(version)]
    version: i32,
}

fn setting(name: &str, value: &str) -> Setting {
    Setting { name: name.into(), value: value.into(), note: None, version: 0 }
}

async fn setup(rows: usize) -> (TestDb, Database) {
    let test_db = TestDb::new().await;
    let client = test_db.client().await;
    client
        .batch_execute(
            "CREATE TABLE setting (name text PRIMARY KEY, value text NOT NULL, note text, version int NOT NULL)",
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO setting SELECT 's' || n, 'old', 'kept', 0 FROM generate_series(1, $1::int) AS n",
            &[&i32::try_from(rows).unwrap()],
        )
        .await
        .unwrap();
    let db = Database::connect(test_db.url()).unwrap();
    (test_db, db)
}

async fn stored(test_db: &TestDb) -> Vec<(String, String, Option<String>, i32)> {
    let client = test_db.client().await;
    let rows = client.query("SELECT name, value, note, version FROM setting ORDER BY name", &[]).await.unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect()
}

#[tokio::test]
async fn ten_thousand_deletes_replaced_by_adds_of_the_same_keys_are_one_update() {
    let (test_db, db) = setup(10_000).await;
    let mut session = db.session();
    let old = session.query::<Setting>().all().await.unwrap();
    for entity in &old {
        session.delete(entity).unwrap();
    }
    let new = session.add_all(old.iter().map(|entity| {
        let mut replacement = setting(&entity.read().name, "new");
        replacement.note = Some("kept".into()); // the same as the row's: not written
        replacement
    }));
    assert_eq!(session.pending().unwrap().updates, 10_000);
    let before = session.stats().statements;
    let stats = session.commit().await.unwrap();
    assert_eq!(stats.statements - before, 1, "one UPDATE of `value` for 10,000 row switches");

    let rows = stored(&test_db).await;
    assert_eq!(rows.len(), 10_000);
    assert!(rows
        .iter()
        .all(|(_, value, note, version)| value == "new" && note.as_deref() == Some("kept") && *version == 1));
    assert!(new.iter().all(|entity| entity.read().version == 1), "the new objects carry the row's version");

    let mut session = db.session();
    let reloaded = session.get_one::<Setting>("s1".to_owned()).await.unwrap();
    reloaded.modify(|s| s.value = "newer".into());
    session.commit().await.unwrap(); // the version the switch left in memory matches the row's
}

#[tokio::test]
async fn a_switch_tracks_the_new_object_and_a_rolled_back_savepoint_brings_the_old_one_back() {
    let (test_db, db) = setup(2).await;
    let mut session = db.session();
    let old = session.get_one::<Setting>("s1".to_owned()).await.unwrap();
    let savepoint = session.begin_nested().await.unwrap();
    session.delete(&old).unwrap();
    let new = session.add(setting("s1", "new"));
    session.flush().await.unwrap();
    let tracked = session.get_one::<Setting>("s1".to_owned()).await.unwrap();
    assert!(Tracked::ptr_eq(&tracked, &new));

    session.rollback_nested(savepoint).await.unwrap();
    let tracked = session.get_one::<Setting>("s1".to_owned()).await.unwrap();
    assert!(Tracked::ptr_eq(&tracked, &old), "the deleted object is back");
    assert!(!session.expunge(&new), "the new object left with the savepoint");

    // Unchanged columns write nothing, but the version of the row taken
    // over is still checked (and advanced), as the delete would have.
    session.delete(&old).unwrap();
    let same = session.add(Setting { name: "s1".into(), value: "old".into(), note: Some("kept".into()), version: 0 });
    let before = session.stats().statements;
    let stats = session.commit().await.unwrap();
    assert_eq!(stats.statements, before + 1, "one UPDATE of the version alone");
    assert_eq!(same.read().version, 1);
    assert_eq!(stored(&test_db).await[0], ("s1".to_owned(), "old".to_owned(), Some("kept".to_owned()), 1));
}

#[tokio::test]
async fn a_switch_checks_the_version_of_the_row_it_replaces() {
    let (test_db, db) = setup(1).await;
    let mut session = db.session();
    let old = session.get_one::<Setting>("s1".to_owned()).await.unwrap();
    test_db.client().await.execute("UPDATE setting SET value = 'theirs', version = 1", &[]).await.unwrap();
    session.delete(&old).unwrap();
    session.add(setting("s1", "mine"));
    let error = session.commit().await.unwrap_err();
    assert!(matches!(&error, Error::StaleData { entity: "Setting", .. }), "{error}");
    assert_eq!(stored(&test_db).await[0].1, "theirs");
}

/// A row keyed by a name the application chooses, without a version.
#[derive(Entity, Clone, Debug, PartialEq)]
struct Label {
    #[orm(primary_key)]
    name: String,
    text: String,
}

/// The `label` table, with a row of text `old` for each of `names`.
async fn create_labels(test_db: &TestDb, names: &[&str]) {
    let client = test_db.client().await;
    client.batch_execute("CREATE TABLE label (name text PRIMARY KEY, text text NOT NULL)").await.unwrap();
    client.execute("INSERT INTO label SELECT unnest($1::text[]), 'old'", &[&names]).await.unwrap();
}

async fn labels(test_db: &TestDb) -> Vec<(String, String)> {
    let client = test_db.client().await;
    let rows = client.query("SELECT name, text FROM label ORDER BY name", &[]).await.unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// An unversioned switch stands for a delete, which does not care whether
/// the row is still there, and an insert: if another writer deleted the
/// row meanwhile, the new one is inserted, whether or not it differs from
/// the one loaded; if the row is there, it takes the new values.
#[tokio::test]
async fn an_unversioned_switch_inserts_the_row_another_writer_deleted() {
    let (test_db, db) = setup(0).await;
    let client = test_db.client().await;
    create_labels(&test_db, &["changed", "same", "kept"]).await;
    let mut session = db.session();
    let loaded = session.query::<Label>().all().await.unwrap();
    for old in &loaded {
        session.delete(old).unwrap();
    }
    let new_text = |name: &str| if name == "changed" { "new" } else { "old" };
    let added = session.add_all(loaded.iter().map(|old| {
        let name = old.read().name.clone();
        Label { text: new_text(&name).to_owned(), name }
    }));
    client.execute("DELETE FROM label WHERE name IN ('changed', 'same')", &[]).await.unwrap();
    let before = session.stats().statements;
    let stats = session.commit().await.expect("the switches reach the state a delete and an insert would");
    assert_eq!(
        labels(&test_db).await,
        [("changed".into(), "new".into()), ("kept".into(), "old".into()), ("same".into(), "old".into())]
    );
    assert_eq!(stats.statements - before, 1, "one statement for the three switches, whatever they change");
    let mut again = db.session();
    for label in &added {
        let name = label.read().name.clone();
        let reloaded = again.get_one::<Label>(name.clone()).await.unwrap();
        assert_eq!(reloaded.read().text, new_text(&name));
    }
}

/// A deleted row's key added twice is not two switches of one row: the
/// second add fails on the key, as it would after the delete, and nothing
/// of the flush is kept; versioned or not.
#[tokio::test]
async fn a_deleted_rows_key_added_twice_fails_on_the_key() {
    let (test_db, db) = setup(1).await;
    create_labels(&test_db, &["a"]).await;

    let mut session = db.session();
    let old = session.get_one::<Label>("a".to_owned()).await.unwrap();
    session.delete(&old).unwrap();
    session.add(Label { name: "a".into(), text: "first".into() });
    session.add(Label { name: "a".into(), text: "second".into() });
    let error = session.commit().await.unwrap_err();
    assert!(matches!(&error, Error::UniqueViolation { .. }), "{error:?}");
    assert_eq!(labels(&test_db).await, [("a".into(), "old".into())]);

    let mut session = db.session();
    let old = session.get_one::<Setting>("s1".to_owned()).await.unwrap();
    session.delete(&old).unwrap();
    session.add(setting("s1", "first"));
    session.add(setting("s1", "second"));
    let error = session.commit().await.unwrap_err();
    assert!(matches!(&error, Error::UniqueViolation { .. }), "{error:?}");
    assert_eq!(stored(&test_db).await[0].1, "old");
}

/// Adding an entity with the key of one the session tracks (not deleted)
/// is no switch: it fails on the key while the row is there, and if
/// another writer deleted the row meanwhile, the flush refuses a second
/// handle of one row rather than leave the loaded one out of the session,
/// its later writes never flushed.
#[tokio::test]
async fn a_new_row_with_the_key_of_a_tracked_one_is_refused() {
    let (test_db, db) = setup(0).await;
    let client = test_db.client().await;
    create_labels(&test_db, &["a"]).await;

    let mut session = db.session();
    let _loaded = session.get_one::<Label>("a".to_owned()).await.unwrap();
    session.add(Label { name: "a".into(), text: "new".into() });
    let error = session.commit().await.unwrap_err();
    assert!(matches!(&error, Error::UniqueViolation { .. }), "{error:?}");

    let mut session = db.session();
    let loaded = session.get_one::<Label>("a".to_owned()).await.unwrap();
    client.execute("DELETE FROM label", &[]).await.unwrap();
    session.add(Label { name: "a".into(), text: "new".into() });
    let error = session.commit().await.unwrap_err();
    assert!(matches!(&error, Error::AlreadyTracked { entity: "Label", .. }), "{error:?}");
    assert_eq!(labels(&test_db).await, [], "nothing of the failed flush is kept");
    assert_eq!(loaded.read().text, "old");
}

/// A versioned row whose `size` the database computes from `body`
/// (`GENERATED ALWAYS AS ... STORED`) and whose `made` it numbers by
/// default, as it does for an insert.
#[derive(Entity, Clone, Debug, PartialEq)]
struct Sheet {
    #[orm(primary_key)]
    name: String,
    body: String,
    #[orm(generated)]
    size: i32,
    #[orm(generated)]
    made: i64,
    #[orm(version)]
    version: i32,
}

/// [`Sheet`] without a version.
#[derive(Entity, Clone, Debug, PartialEq)]
struct Jotting {
    #[orm(primary_key)]
    name: String,
    body: String,
    #[orm(generated)]
    size: i32,
    #[orm(generated)]
    made: i64,
}

const GENERATED_TABLES: &str = "
    CREATE SEQUENCE made;
    CREATE TABLE sheet (name text PRIMARY KEY, body text NOT NULL,
        size int GENERATED ALWAYS AS (length(body)) STORED, made bigint NOT NULL DEFAULT nextval('made'),
        version int NOT NULL);
    CREATE TABLE jotting (name text PRIMARY KEY, body text NOT NULL,
        size int GENERATED ALWAYS AS (length(body)) STORED, made bigint NOT NULL DEFAULT nextval('made'));
    INSERT INTO sheet (name, body, version) VALUES ('a', 'old', 0), ('b', 'old', 0);
    INSERT INTO jotting (name, body) VALUES ('a', 'old'), ('b', 'old');
";

/// `(body, size, made)` of each row of `table`, by name.
async fn generated_rows(test_db: &TestDb, table: &str) -> Vec<(String, i32, i64)> {
    let client = test_db.client().await;
    let rows = client.query(&format!("SELECT body, size, made FROM {table} ORDER BY name"), &[]).await.unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect()
}

/// A switch stands for an insert: the database computes the new row's
/// generated columns as it would for one (a stored generated column can
/// only be set to its default), and the new object holds what it computed,
/// as an inserted one does, instead of the placeholders it was added with.
#[tokio::test]
async fn a_switch_gives_generated_columns_their_defaults_and_reads_them_back() {
    let (test_db, db) = setup(0).await;
    test_db.client().await.batch_execute(GENERATED_TABLES).await.unwrap();

    let mut session = db.session();
    let old = session.query::<Sheet>().all().await.unwrap();
    for sheet in &old {
        session.delete(sheet).unwrap();
    }
    let new = session.add_all(old.iter().map(|sheet| Sheet {
        name: sheet.read().name.clone(),
        body: if sheet.read().name == "a" { "a longer body".into() } else { "old".into() },
        size: 0,
        made: 0,
        version: 0,
    }));
    session.flush().await.expect("the switch sets the generated column to its default");
    let made: Vec<i64> = new.iter().map(|sheet| sheet.read().made).collect();
    for (sheet, size) in new.iter().zip([13, 3]) {
        assert_eq!((sheet.read().size, sheet.read().version), (size, 1));
    }
    assert!(made.iter().all(|&made| made > 2), "each switched row was numbered anew, as an insert is: {made:?}");
    new[0].modify(|sheet| sheet.body = "short".into());
    session.commit().await.expect("the values in memory are the row's: only `body` is written");
    let rows = generated_rows(&test_db, "sheet").await;
    assert_eq!(rows, [("short".into(), 5, made[0]), ("old".into(), 3, made[1])]);

    let mut session = db.session();
    let old = session.query::<Jotting>().all().await.unwrap();
    for jotting in &old {
        session.delete(jotting).unwrap();
    }
    test_db.client().await.execute("DELETE FROM jotting WHERE name = 'b'", &[]).await.unwrap();
    let new = session.add_all(old.iter().map(|jotting| Jotting {
        name: jotting.read().name.clone(),
        body: "a longer body".into(),
        size: 0,
        made: 0,
    }));
    let before = session.stats().statements;
    let stats = session.commit().await.expect("the upsert sets the generated column to its default");
    assert_eq!(stats.statements - before, 1, "one upsert for both switches");
    let rows = generated_rows(&test_db, "jotting").await;
    assert!(rows.iter().all(|row| row.0 == "a longer body" && row.1 == 13 && row.2 > 4), "{rows:?}");
    for (jotting, row) in new.iter().zip(&rows) {
        assert_eq!((jotting.read().size, jotting.read().made), (row.1, row.2), "row `b` was inserted, `a` updated");
    }

    // An upsert that lists a generated column gives it its default too.
    let mut session = db.session();
    let jotting = Jotting { name: "a".into(), body: "four".into(), size: 0, made: 0 };
    session.upsert(vec![jotting]).do_update((Jotting::BODY, Jotting::SIZE, Jotting::MADE)).await.unwrap();
    session.commit().await.unwrap();
    let row = &generated_rows(&test_db, "jotting").await[0];
    assert_eq!((row.0.as_str(), row.1), ("four", 4));
    assert!(row.2 > rows[1].2, "numbered anew: {row:?}");
}

/// A row that is all key: what a switch would write is already there.
#[derive(Entity, Clone, Debug, PartialEq)]
struct Tagging {
    #[orm(primary_key)]
    post: i64,
    #[orm(primary_key)]
    tag: String,
}

/// Deleting a row that is all key and adding it back in one flush (a tag
/// taken off a post and put back) is a switch that changes nothing: it
/// succeeds, and the row stays, as a delete and an insert would leave it;
/// the new object takes the old one's place.
#[tokio::test]
async fn a_switch_of_a_row_that_is_all_key_keeps_the_row() {
    let (test_db, db) = setup(0).await;
    let client = test_db.client().await;
    client
        .batch_execute(
            "CREATE TABLE tagging (post bigint, tag text, PRIMARY KEY (post, tag));
             INSERT INTO tagging VALUES (1, 'rust'), (1, 'sql')",
        )
        .await
        .unwrap();
    let mut session = db.session();
    let old = session.query::<Tagging>().all().await.unwrap();
    for tagging in &old {
        session.delete(tagging).unwrap();
    }
    let new = session.add_all(old.iter().map(|tagging| tagging.read().clone()));
    client.execute("DELETE FROM tagging WHERE tag = 'sql'", &[]).await.unwrap();
    session.flush().await.expect("a switch that writes nothing");
    let again = session.get_one::<Tagging>((1, "rust".to_owned())).await.unwrap();
    assert!(Tracked::ptr_eq(&again, &new[0]));
    session.commit().await.unwrap();
    let rows = client.query("SELECT tag FROM tagging ORDER BY tag", &[]).await.unwrap();
    let tags: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
    assert_eq!(tags, ["rust", "sql"], "the row another writer deleted is inserted again");
}

/// A club names its star member, and a member its club: a reference cycle,
/// whose nullable side (`star_id`) a plain insert leaves to a post-update.
#[derive(Entity, Clone, Debug, PartialEq)]
struct Club {
    #[orm(primary_key)]
    code: String,
    name: String,
    #[orm(references = Member)]
    star_id: Option<String>,
}

#[derive(Entity, Clone, Debug, PartialEq)]
struct Member {
    #[orm(primary_key)]
    name: String,
    #[orm(references = Club)]
    club_id: String,
    #[orm(version)]
    version: i32,
}

/// Switches on a reference cycle write the cycle's columns themselves,
/// after the round trip's inserts, instead of leaving them to the
/// post-update that plain inserts need: versioned or not.
#[tokio::test]
async fn switches_on_a_reference_cycle_write_its_columns() {
    let (test_db, db) = setup(0).await;
    let client = test_db.client().await;
    client
        .batch_execute(
            "CREATE TABLE club (code text PRIMARY KEY, name text NOT NULL, star_id text);
             CREATE TABLE member (name text PRIMARY KEY, club_id text NOT NULL REFERENCES club, version int NOT NULL);
             ALTER TABLE club ADD FOREIGN KEY (star_id) REFERENCES member;
             INSERT INTO club VALUES ('c', 'old', NULL);
             INSERT INTO member VALUES ('m', 'c', 0)",
        )
        .await
        .unwrap();
    let mut session = db.session();
    let club = session.get_one::<Club>("c".to_owned()).await.unwrap();
    let member = session.get_one::<Member>("m".to_owned()).await.unwrap();
    session.delete(&club).unwrap();
    session.delete(&member).unwrap();
    session.add(Club { code: "c".into(), name: "new".into(), star_id: Some("n".into()) });
    session.add(Member { name: "n".into(), club_id: "c".into(), version: 0 });
    session.add(Member { name: "m".into(), club_id: "c".into(), version: 0 });
    let committed = tokio::time::timeout(std::time::Duration::from_secs(10), session.commit()).await;
    committed.expect("no wait on the session's own objects").expect("commit");
    let rows = client.query("SELECT name, star_id FROM club", &[]).await.unwrap();
    assert_eq!((rows[0].get::<_, String>(0), rows[0].get::<_, Option<String>>(1)), ("new".into(), Some("n".into())));
    let members = client.query("SELECT name, version FROM member ORDER BY name", &[]).await.unwrap();
    let members: Vec<(String, i32)> = members.iter().map(|row| (row.get(0), row.get(1))).collect();
    assert_eq!(members, [("m".to_owned(), 1), ("n".to_owned(), 0)]);
}

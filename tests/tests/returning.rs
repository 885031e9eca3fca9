//! What a flush reads back from its inserts: generated columns reach the
//! objects only when all of them could be read, a mismatch the prepared
//! statement shows is refused before anything runs, and what can only be
//! found afterwards never looks like a rollback once it is committed.

mod support;

use orm_core::{Database, DatabaseConfig, Entity, Error};
use orm_tests::TestDb;
use support::count_rows;

/// A table with a column named like the row-number column of the insert.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "line")]
struct Line {
    #[orm(primary_key, generated)]
    id: i64,
    ord: i32,
    text: String,
}

/// `id` is `bigserial`: an `i32` field cannot hold it.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "line")]
struct NarrowLine {
    #[orm(primary_key, generated)]
    id: i32,
    ord: i32,
    text: String,
}

/// `stamp` has no default, so the database generates NULL, which a plain
/// `i64` cannot hold.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "stamped")]
struct Stamped {
    #[orm(primary_key, generated)]
    id: i64,
    #[orm(generated)]
    stamp: i64,
    text: String,
}

const SCHEMA: &str = "
    CREATE TABLE line (id bigserial PRIMARY KEY, ord int NOT NULL, text text NOT NULL);
    CREATE TABLE stamped (id bigserial PRIMARY KEY, stamp bigint, text text NOT NULL);
    -- Skips the lines whose text is 'skip', as an application's trigger may.
    CREATE FUNCTION skip_some() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN IF NEW.text = 'skip' THEN RETURN NULL; END IF; RETURN NEW; END $$;
    CREATE TRIGGER skip_some BEFORE INSERT ON line FOR EACH ROW EXECUTE FUNCTION skip_some();
";

async fn setup() -> (TestDb, Database) {
    let test_db = TestDb::new().await;
    test_db.client().await.batch_execute(SCHEMA).await.unwrap();
    let db = Database::with_config(DatabaseConfig::from_url(test_db.url()).unwrap()).unwrap();
    (test_db, db)
}

fn line(ord: i32, text: &str) -> Line {
    Line { id: 0, ord, text: text.into() }
}

#[tokio::test]
async fn a_column_named_ord_does_not_clash_with_the_inserts_row_numbers() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let lines = session.add_all((0..3).map(|n| line(10 - n, &format!("line {n}"))));
    session.commit().await.unwrap();
    let rows = test_db.client().await.query("SELECT id, ord, text FROM line ORDER BY id", &[]).await.unwrap();
    let stored: Vec<(i64, i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    let objects: Vec<(i64, i32, String)> =
        lines.iter().map(|l| (l.read().id, l.read().ord, l.read().text.clone())).collect();
    assert_eq!(stored, objects);
}

#[tokio::test]
async fn a_generated_column_the_field_cannot_hold_is_refused_before_the_insert_runs() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let narrow = session.add(NarrowLine { id: 0, ord: 1, text: "narrow".into() });
    let error = session.flush().await.unwrap_err();
    assert!(
        matches!(&error, Error::ColumnType { entity: "NarrowLine", column: "id", found } if found == "int8"),
        "{error:?}"
    );
    assert_eq!(session.pending().unwrap().inserts, 1, "still pending");
    assert!(session.expunge(&narrow));
    session.add(line(1, "wide"));
    session.commit().await.unwrap();
    assert_eq!(count_rows(&test_db, "line").await, 1, "the session stayed usable; the refused row never ran");

    // In commit, where COMMIT travels with the insert, it is refused before too.
    let mut session = db.session();
    session.add(NarrowLine { id: 0, ord: 2, text: "narrow".into() });
    assert!(matches!(session.commit().await, Err(Error::ColumnType { .. })));
    assert_eq!(count_rows(&test_db, "line").await, 1);
}

#[tokio::test]
async fn a_generated_value_that_cannot_be_read_fails_the_flush_and_applies_nothing() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let stamped = session.add(Stamped { id: 0, stamp: 0, text: "no default".into() });
    let error = session.flush().await.unwrap_err();
    assert!(matches!(error, Error::Decode { entity: "Stamped", column: "stamp", .. }), "{error:?}");
    assert_eq!(session.pending().unwrap().inserts, 1, "still pending");
    assert!(session.expunge(&stamped));
    session.commit().await.unwrap();
    assert_eq!(count_rows(&test_db, "stamped").await, 0, "the insert was rolled back to the flush's savepoint");
}

#[tokio::test]
async fn a_failure_found_after_a_pipelined_commit_says_that_the_data_is_committed() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    session.add(Stamped { id: 0, stamp: 0, text: "no default".into() });
    let error = session.commit().await.unwrap_err();
    assert!(matches!(&error, Error::AfterCommit(inner) if matches!(**inner, Error::Decode { .. })), "{error:?}");
    assert!(!error.is_retryable());
    assert_eq!(count_rows(&test_db, "stamped").await, 1, "committed, as the error says");
}

#[tokio::test]
async fn rows_a_trigger_skips_fail_the_flush_instead_of_shifting_keys() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    session.add_all([line(1, "kept"), line(2, "skip"), line(3, "kept too")]);
    let error = session.flush().await.unwrap_err();
    assert!(matches!(error, Error::RowsNotInserted { entity: "Line", expected: 3, inserted: 2, .. }), "{error:?}");
    session.rollback().await.unwrap();
    assert_eq!(count_rows(&test_db, "line").await, 0);
}

#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "line")]
struct Note {
    #[orm(primary_key, generated)]
    id: i64,
    ord: i32,
    text: String,
}

async fn three_notes() -> (TestDb, Database) {
    let test_db = TestDb::new().await;
    test_db
        .client()
        .await
        .batch_execute(
            "CREATE TABLE line (id bigserial PRIMARY KEY, ord int NOT NULL, text text NOT NULL);
             INSERT INTO line (ord, text) VALUES (1, 'a'), (2, 'b'), (3, 'c')",
        )
        .await
        .unwrap();
    let db = Database::connect(test_db.url()).unwrap();
    (test_db, db)
}

#[tokio::test]
async fn raw_rows_of_an_update_or_upsert_refresh_the_tracked_instances() {
    let (_test_db, db) = three_notes().await;
    let mut session = db.session();
    let first = session.get_one::<Note>(1).await.unwrap();
    let updated = session.query_raw::<Note>("UPDATE line SET text = upper(text) RETURNING *", &[]).await.unwrap();
    assert_eq!(updated.len(), 3);
    assert!(updated.iter().any(|note| orm_core::Tracked::ptr_eq(note, &first)));
    assert_eq!(first.read().text, "A", "the instance holds what the database holds now");
    assert!(!first.is_modified());

    let upserted = session
        .query_raw::<Note>(
            "INSERT INTO line (id, ord, text) VALUES (1, 9, 'z') ON CONFLICT (id) DO UPDATE SET ord = EXCLUDED.ord RETURNING *",
            &[],
        )
        .await
        .unwrap();
    assert!(orm_core::Tracked::ptr_eq(&upserted[0], &first));
    assert_eq!((first.read().ord, first.read().text.as_str()), (9, "A"));
    session.commit().await.unwrap();
}

#[tokio::test]
async fn raw_rows_for_an_instance_with_unflushed_changes_are_an_error_that_changes_nothing() {
    let (_test_db, db) = three_notes().await;
    let mut session = db.session();
    session.set_autoflush(false);
    let notes = session.get_many::<Note>(&[1, 2]).await.unwrap();
    notes[1].modify(|note| note.text = "mine".into());
    let error = session.query_raw::<Note>("SELECT * FROM line ORDER BY id", &[]).await.unwrap_err();
    assert!(matches!(&error, Error::UnflushedChanges { entity: "Note", key } if key == "2"), "{error}");
    assert_eq!(notes[0].read().text, "a");
    assert_eq!(notes[1].read().text, "mine", "the unflushed change is kept");

    session.flush().await.unwrap();
    let all = session.query_raw::<Note>("SELECT * FROM line ORDER BY id", &[]).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(notes[1].read().text, "mine");
}

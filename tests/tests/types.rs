//! Field types: every supported column type round-trips through a real table,
//! updates of columns of different types reach the database, and a bad value
//! read back from the database is a typed decode error.

mod support;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use orm_core::{DbEnum, Entity, Error, Json};
use orm_tests::TestDb;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

#[derive(DbEnum, Clone, Copy, Debug, PartialEq)]
enum Status {
    Active,
    OnHold,
    #[orm(rename = "gone-for-good")]
    Closed,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Preferences {
    theme: String,
    font_size: u8,
    tags: Vec<String>,
}

#[derive(Entity, Clone, Debug, PartialEq)]
struct Sample {
    #[orm(primary_key, generated)]
    id: i64,
    small: i16,
    medium: i32,
    big: i64,
    single: f32,
    double: f64,
    flag: bool,
    label: String,
    payload: Vec<u8>,
    uid: Uuid,
    created_at: DateTime<Utc>,
    local_at: NaiveDateTime,
    birthday: NaiveDate,
    alarm: NaiveTime,
    document: serde_json::Value,
    preferences: Json<Preferences>,
    status: Status,
    maybe_small: Option<i16>,
    maybe_medium: Option<i32>,
    maybe_big: Option<i64>,
    maybe_single: Option<f32>,
    maybe_double: Option<f64>,
    maybe_flag: Option<bool>,
    maybe_label: Option<String>,
    maybe_payload: Option<Vec<u8>>,
    maybe_uid: Option<Uuid>,
    maybe_at: Option<DateTime<Utc>>,
    maybe_local_at: Option<NaiveDateTime>,
    maybe_date: Option<NaiveDate>,
    maybe_alarm: Option<NaiveTime>,
    maybe_document: Option<serde_json::Value>,
    maybe_preferences: Option<Json<Preferences>>,
    maybe_status: Option<Status>,
}

const SCHEMA: &str = "
    CREATE TABLE sample (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        small smallint NOT NULL, medium integer NOT NULL, big bigint NOT NULL,
        single real NOT NULL, double double precision NOT NULL, flag boolean NOT NULL,
        label text NOT NULL, payload bytea NOT NULL, uid uuid NOT NULL,
        created_at timestamptz NOT NULL, local_at timestamp NOT NULL, birthday date NOT NULL,
        alarm time NOT NULL, document jsonb NOT NULL, preferences jsonb NOT NULL, status text NOT NULL,
        maybe_small smallint, maybe_medium integer, maybe_big bigint, maybe_single real,
        maybe_double double precision, maybe_flag boolean,
        maybe_label text, maybe_payload bytea, maybe_uid uuid, maybe_at timestamptz,
        maybe_local_at timestamp, maybe_date date, maybe_alarm time, maybe_document jsonb, maybe_preferences jsonb,
        maybe_status text
    );
";

async fn setup() -> (TestDb, orm_core::Database) {
    let (test_db, db) = support::setup().await;
    test_db.client().await.batch_execute(SCHEMA).await.expect("create the sample table");
    (test_db, db)
}

fn date(year: i32, month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, day).unwrap()
}

/// A timestamp with microseconds, PostgreSQL's precision, so it survives the
/// round trip exactly.
fn local(year: i32, month: u32, day: u32, micros: u32) -> NaiveDateTime {
    date(year, month, day).and_hms_micro_opt(13, 37, 42, micros).unwrap()
}

fn preferences(theme: &str) -> Preferences {
    Preferences { theme: theme.to_owned(), font_size: 14, tags: vec!["a".to_owned(), "ünïcode ✓".to_owned()] }
}

/// Every field set, with values at the edges of their types.
fn full() -> Sample {
    Sample {
        id: 0,
        small: i16::MIN,
        medium: i32::MAX,
        big: i64::MIN,
        single: 3.140_625,
        double: -0.1,
        flag: true,
        label: "O'Reilly \"quoted\" \\ ünïcode ✓".to_owned(),
        payload: vec![0, 1, 2, 255, 0],
        uid: Uuid::new_v4(),
        created_at: local(2024, 2, 29, 123_456).and_utc(),
        local_at: local(1999, 12, 31, 999_999),
        birthday: date(1970, 1, 1),
        alarm: NaiveTime::from_hms_micro_opt(23, 59, 59, 500_000).unwrap(),
        document: json!({"nested": {"list": [1, 2.5, null, "x"]}, "empty": {}}),
        preferences: Json(preferences("dark")),
        status: Status::Closed,
        maybe_small: Some(i16::MAX),
        maybe_medium: Some(i32::MIN),
        maybe_big: Some(i64::MAX),
        maybe_single: Some(f32::MIN_POSITIVE),
        maybe_double: Some(f64::MAX),
        maybe_flag: Some(false),
        maybe_label: Some(String::new()),
        maybe_payload: Some(Vec::new()),
        maybe_uid: Some(Uuid::new_v4()),
        maybe_at: Some(local(2000, 1, 1, 1).and_utc()),
        maybe_local_at: Some(local(2038, 1, 19, 0)),
        maybe_date: Some(date(9999, 12, 31)),
        maybe_alarm: Some(NaiveTime::from_hms_micro_opt(0, 0, 0, 1).unwrap()),
        maybe_document: Some(json!([true, false])),
        maybe_preferences: Some(Json(preferences("light"))),
        maybe_status: Some(Status::OnHold),
    }
}

/// Every nullable field `None`.
fn sparse() -> Sample {
    Sample {
        maybe_small: None,
        maybe_medium: None,
        maybe_big: None,
        maybe_single: None,
        maybe_double: None,
        maybe_flag: None,
        maybe_label: None,
        maybe_payload: None,
        maybe_uid: None,
        maybe_at: None,
        maybe_local_at: None,
        maybe_date: None,
        maybe_alarm: None,
        maybe_document: None,
        maybe_preferences: None,
        maybe_status: None,
        status: Status::Active,
        ..full()
    }
}

#[tokio::test]
async fn every_type_round_trips_with_some_and_none() {
    let (test_db, db) = setup().await;
    let originals = [full(), sparse()];
    let mut session = db.session();
    let added = session.add_all(originals.clone());
    session.commit().await.expect("commit");
    let (full_id, sparse_id) = (added[0].read().id, added[1].read().id);
    let expected_full = Sample { id: full_id, ..originals[0].clone() };
    let expected_sparse = Sample { id: sparse_id, ..originals[1].clone() };
    // The insert gave the handles their ids and changed nothing else.
    assert_eq!((added[0].get(), added[1].get()), (expected_full.clone(), expected_sparse.clone()));

    let mut session = db.session();
    let loaded_full = session.get_one::<Sample>(full_id).await.expect("get full");
    let loaded_sparse = session.get_one::<Sample>(sparse_id).await.expect("get sparse");
    assert_eq!(loaded_full.get(), expected_full);
    assert_eq!(loaded_sparse.get(), expected_sparse);

    let untracked = db.session().query::<Sample>().order_by(Sample::ID.asc()).untracked().all().await.expect("query");
    assert_eq!(untracked, vec![loaded_full.get(), loaded_sparse.get()]);

    // NULL in the database for None, not a zero value or JSON null.
    let client = test_db.client().await;
    let row = client
        .query_one(
            "SELECT num_nulls(maybe_small, maybe_medium, maybe_big, maybe_single, maybe_double, maybe_flag,
                              maybe_label, maybe_payload, maybe_uid, maybe_at, maybe_local_at, maybe_date,
                              maybe_alarm, maybe_document, maybe_preferences, maybe_status),
                    (SELECT num_nulls(maybe_label, maybe_payload, maybe_document) FROM sample WHERE id = $2)
             FROM sample WHERE id = $1",
            &[&sparse_id, &full_id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 16, "every None is stored as NULL");
    assert_eq!(row.get::<_, i32>(1), 0, "empty string and empty bytes are not NULL");
}

#[tokio::test]
async fn stored_values_are_what_sql_sees() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let added = session.add(full());
    session.commit().await.expect("commit");
    let expected = added.get();

    let client = test_db.client().await;
    let row = client
        .query_one(
            "SELECT status, maybe_status, preferences ->> 'theme', (preferences -> 'font_size')::int,
                    document #>> '{nested,list,3}', uid, created_at = '2024-02-29 13:37:42.123456+00',
                    octet_length(payload), birthday::text
             FROM sample WHERE id = $1",
            &[&expected.id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "gone-for-good", "a renamed variant is stored under its rename");
    assert_eq!(row.get::<_, String>(1), "on_hold", "other variants are stored in snake case");
    assert_eq!(row.get::<_, String>(2), "dark", "Json<T> is stored as a JSON object, not a string");
    assert_eq!(row.get::<_, i32>(3), 14);
    assert_eq!(row.get::<_, String>(4), "x");
    assert_eq!(row.get::<_, Uuid>(5), expected.uid);
    assert!(row.get::<_, bool>(6), "the instant is stored exactly");
    assert_eq!(row.get::<_, i32>(7), 5);
    assert_eq!(row.get::<_, String>(8), "1970-01-01");
}

#[tokio::test]
async fn filters_bind_values_of_every_kind() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    let added = session.add_all([full(), sparse()]);
    session.commit().await.expect("commit");
    let (full, sparse) = (added[0].get(), added[1].get());

    let mut session = db.session();
    let ids = |rows: Vec<orm_core::Tracked<Sample>>| rows.iter().map(|s| s.read().id).collect::<Vec<_>>();
    let by_uid = session.query::<Sample>().filter(Sample::UID.eq(sparse.uid)).all().await.unwrap();
    assert_eq!(ids(by_uid), vec![sparse.id]);
    let by_status = session.query::<Sample>().filter(Sample::STATUS.eq(Status::Closed)).all().await.unwrap();
    assert_eq!(ids(by_status), vec![full.id]);
    let by_maybe_status =
        session.query::<Sample>().filter(Sample::MAYBE_STATUS.eq(Status::OnHold)).all().await.unwrap();
    assert_eq!(ids(by_maybe_status), vec![full.id]);
    let by_time = session
        .query::<Sample>()
        .filter(Sample::CREATED_AT.eq(full.created_at).and(Sample::BIRTHDAY.le(date(1970, 1, 1))))
        .order_by(Sample::ID.asc())
        .all()
        .await
        .unwrap();
    assert_eq!(ids(by_time), vec![full.id, sparse.id]);
    let by_null = session.query::<Sample>().filter(Sample::MAYBE_PREFERENCES.is_null()).all().await.unwrap();
    assert_eq!(ids(by_null), vec![sparse.id]);
    let by_bytes = session.query::<Sample>().filter(Sample::MAYBE_PAYLOAD.eq(Vec::new())).all().await.unwrap();
    assert_eq!(ids(by_bytes), vec![full.id]);
}

#[tokio::test]
async fn changing_columns_of_different_types_writes_them() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let added = session.add_all([full(), sparse()]);
    session.commit().await.expect("commit");
    let (full_id, sparse_id) = (added[0].read().id, added[1].read().id);

    let mut session = db.session();
    let first = session.get_one::<Sample>(full_id).await.unwrap();
    let second = session.get_one::<Sample>(sparse_id).await.unwrap();
    let new_uid = Uuid::new_v4();
    {
        let mut first = first.write();
        first.small = 7;
        first.double = 2.5;
        first.flag = false;
        first.label = "renamed".to_owned();
        first.payload = vec![9; 3];
        first.created_at = local(2025, 6, 1, 42).and_utc();
        first.document = json!({"replaced": true});
        first.preferences.theme = "solarized".to_owned();
        first.status = Status::OnHold;
        first.maybe_label = None;
        first.maybe_status = None;
    }
    {
        let mut second = second.write();
        second.maybe_uid = Some(new_uid);
        second.maybe_date = Some(date(2001, 9, 9));
        second.maybe_preferences = Some(Json(preferences("contrast")));
        second.maybe_status = Some(Status::Closed);
        second.alarm = NaiveTime::from_hms_opt(6, 0, 0).unwrap();
    }
    let expected = (first.get(), second.get());
    session.commit().await.expect("commit");

    let client = test_db.client().await;
    let row = client
        .query_one(
            "SELECT small, double, flag, label, payload, created_at, document, preferences ->> 'theme',
                    status, maybe_label IS NULL, maybe_status IS NULL
             FROM sample WHERE id = $1",
            &[&full_id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i16>(0), 7);
    assert!((row.get::<_, f64>(1) - 2.5).abs() < f64::EPSILON);
    assert!(!row.get::<_, bool>(2));
    assert_eq!(row.get::<_, String>(3), "renamed");
    assert_eq!(row.get::<_, Vec<u8>>(4), vec![9; 3]);
    assert_eq!(row.get::<_, DateTime<Utc>>(5), local(2025, 6, 1, 42).and_utc());
    assert_eq!(row.get::<_, serde_json::Value>(6), json!({"replaced": true}));
    assert_eq!(row.get::<_, String>(7), "solarized");
    assert_eq!(row.get::<_, String>(8), "on_hold");
    assert!(row.get::<_, bool>(9));
    assert!(row.get::<_, bool>(10));
    let row = client
        .query_one("SELECT maybe_uid, maybe_date, maybe_preferences ->> 'theme', maybe_status, alarm::text FROM sample WHERE id = $1", &[&sparse_id])
        .await
        .unwrap();
    assert_eq!(row.get::<_, Uuid>(0), new_uid);
    assert_eq!(row.get::<_, NaiveDate>(1), date(2001, 9, 9));
    assert_eq!(row.get::<_, String>(2), "contrast");
    assert_eq!(row.get::<_, String>(3), "gone-for-good");
    assert_eq!(row.get::<_, String>(4), "06:00:00");

    let mut session = db.session();
    let reloaded = session.get_many::<Sample>(&[full_id, sparse_id]).await.unwrap();
    assert_eq!((reloaded[0].get(), reloaded[1].get()), expected);
}

#[tokio::test]
async fn unknown_enum_text_is_a_decode_error_naming_entity_and_column() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let added = session.add_all([full(), sparse()]);
    session.commit().await.expect("commit");
    let (bad_id, good_id) = (added[0].read().id, added[1].read().id);
    // The text a renamed variant would have had without its rename.
    test_db.client().await.execute("UPDATE sample SET status = 'closed' WHERE id = $1", &[&bad_id]).await.unwrap();

    let mut session = db.session();
    let error = session.get::<Sample>(bad_id).await.expect_err("an unknown variant cannot be read");
    assert!(
        matches!(error, Error::Decode { entity: "Sample", column: "status", .. }),
        "expected a decode error for Sample.status, got {error:?}"
    );
    assert!(error.to_string().contains("status") && error.to_string().contains("Sample"), "{error}");

    let error = session.query::<Sample>().untracked().all().await.expect_err("the query reads the bad row too");
    assert!(matches!(error, Error::Decode { entity: "Sample", column: "status", .. }), "{error:?}");

    // The failure was in decoding, not in the transaction: the session goes on.
    let good = session.get_one::<Sample>(good_id).await.expect("the good row still loads");
    good.write().label = "still usable".to_owned();
    session.commit().await.expect("commit after a decode error");
    let label: String =
        test_db.client().await.query_one("SELECT label FROM sample WHERE id = $1", &[&good_id]).await.unwrap().get(0);
    assert_eq!(label, "still usable");
}

#[tokio::test]
async fn timestamps_with_nanoseconds_hold_what_a_reload_gives_after_the_flush() {
    let (_test_db, db) = setup().await;
    let nanos = |year: i32, nano: u32| date(year, 6, 1).and_hms_nano_opt(12, 0, 0, nano).unwrap();
    let mut sample = full();
    sample.created_at = nanos(2024, 123_456_789).and_utc();
    sample.local_at = nanos(1969, 999_999_999); // before the driver's epoch: truncated toward it
    sample.alarm = NaiveTime::from_hms_nano_opt(7, 30, 0, 1_999).unwrap();
    sample.maybe_at = Some(nanos(2001, 5).and_utc());
    let mut session = db.session();
    let added = session.add(sample);
    session.flush().await.unwrap();
    updated_nanoseconds_too(&added);
    session.flush().await.unwrap();
    session.commit().await.unwrap();

    let mut session = db.session();
    let reloaded = session.get_one::<Sample>(added.read().id).await.unwrap();
    assert_eq!(*added.read(), *reloaded.read(), "memory after the flush equals a reload");
    assert_eq!(added.read().created_at, nanos(2024, 123_456_000).and_utc());
}

/// Writes a timestamp with nanoseconds to an inserted sample.
fn updated_nanoseconds_too(sample: &orm_core::Tracked<Sample>) {
    sample.modify(|s| s.maybe_local_at = Some(date(2030, 1, 2).and_hms_nano_opt(3, 4, 5, 6_789).unwrap()));
}

/// A `String` field over each kind of text column: the built-in text types,
/// whose binary form is the text itself, and extension types (`citext`,
/// `ltree`), which the driver decodes; `ltree`'s binary form starts with a
/// version byte that must not reach the field.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "text_kinds")]
struct TextKinds {
    #[orm(primary_key)]
    id: i64,
    plain: String,
    varying: String,
    padded: String,
    system: String,
    caseless: String,
    path: String,
    maybe_path: Option<String>,
    maybe_varying: Option<String>,
}

#[tokio::test]
async fn string_fields_read_builtin_and_extension_text_types() {
    let (test_db, db) = support::setup().await;
    test_db
        .client()
        .await
        .batch_execute(
            "CREATE EXTENSION IF NOT EXISTS citext;
             CREATE EXTENSION IF NOT EXISTS ltree;
             CREATE TABLE text_kinds (
                 id bigint PRIMARY KEY, plain text NOT NULL, varying varchar(20) NOT NULL,
                 padded char(6) NOT NULL, system name NOT NULL, caseless citext NOT NULL,
                 path ltree NOT NULL, maybe_path ltree, maybe_varying varchar(20));
             INSERT INTO text_kinds VALUES
                 (1, 'ünïcode ✓', 'var', 'ab', 'pg_class', 'MiXeD', 'top.science.astronomy', 'a.b', 'x'),
                 (2, '', '', '', '', '', '', NULL, NULL);",
        )
        .await
        .expect("create the text kinds");

    let mut session = db.session();
    let rows = session.query::<TextKinds>().order_by(TextKinds::ID.asc()).all().await.expect("load");
    let rows: Vec<TextKinds> = rows.iter().map(orm_core::Tracked::get).collect();
    assert_eq!(
        rows,
        [
            TextKinds {
                id: 1,
                plain: "ünïcode ✓".into(),
                varying: "var".into(),
                padded: "ab    ".into(),
                system: "pg_class".into(),
                caseless: "MiXeD".into(),
                path: "top.science.astronomy".into(),
                maybe_path: Some("a.b".into()),
                maybe_varying: Some("x".into()),
            },
            TextKinds {
                id: 2,
                plain: String::new(),
                varying: String::new(),
                padded: "      ".into(),
                system: String::new(),
                caseless: String::new(),
                path: String::new(),
                maybe_path: None,
                maybe_varying: None,
            },
        ]
    );

    // A NULL in a column whose field cannot hold one is a decode error
    // naming the column, through the fast path as through the driver's.
    test_db
        .client()
        .await
        .batch_execute(
            "ALTER TABLE text_kinds ALTER varying DROP NOT NULL;
        UPDATE text_kinds SET varying = NULL WHERE id = 2",
        )
        .await
        .expect("make a NULL");
    let error = db.session().query::<TextKinds>().untracked().all().await.expect_err("NULL in a String field");
    assert!(matches!(error, Error::Decode { entity: "TextKinds", column: "varying", .. }), "{error:?}");
}

#[derive(Entity, Clone, Debug, PartialEq)]
struct Reading {
    #[orm(primary_key)]
    id: i64,
    value: f64,
    values: Vec<f64>,
    maybe: Option<f32>,
}

/// Change detection compares floats as the database stores them: a NaN
/// written again is no change (NaN != NaN would send it, and advance a
/// version, at every flush), and `-0.0` over `0.0` is one (they are `==`,
/// but PostgreSQL keeps the sign).
#[tokio::test]
async fn floats_are_compared_as_stored_nan_unchanged_and_negative_zero_changed() {
    let test_db = TestDb::new().await;
    let client = test_db.client().await;
    client
        .batch_execute(
            "CREATE TABLE reading (id bigint PRIMARY KEY, value float8 NOT NULL, values float8[] NOT NULL, maybe float4);
             INSERT INTO reading VALUES (1, 'NaN', '{NaN}', 'NaN'), (2, 0, '{0}', 0)",
        )
        .await
        .unwrap();
    let db = orm_core::Database::connect(test_db.url()).unwrap();
    let mut session = db.session();
    let readings = session.query::<Reading>().order_by(Reading::ID.asc()).all().await.unwrap();
    readings[0].modify(|reading| {
        reading.value = f64::NAN;
        reading.values = vec![f64::NAN];
        reading.maybe = Some(f32::NAN);
    });
    assert!(!readings[0].is_modified(), "NaN written over NaN changes nothing");
    readings[1].modify(|reading| {
        reading.value = -0.0;
        reading.values = vec![-0.0];
        reading.maybe = Some(-0.0);
    });
    assert!(readings[1].is_modified(), "-0 over 0 is a change");
    let before = session.stats().statements;
    let stats = session.commit().await.unwrap();
    assert_eq!(stats.statements, before + 1, "one UPDATE, of row 2");
    let row =
        client.query_one("SELECT value::text, values::text, maybe::text FROM reading WHERE id = 2", &[]).await.unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1), row.get::<_, String>(2)),
        ("-0".into(), "{-0}".into(), "-0".into())
    );
}

//! Array columns (`Vec<T>` fields): batched and single-row writes, NULL
//! arrays and elements, text that needs quoting in an array literal, every
//! element type through both paths, the array filters, change detection,
//! upserts, decoding errors, DDL and the schema check.

mod support;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use orm_core::{create_table_sql, Database, DbEnum, Entity, ErrorKind, OnConflict, SchemaCheck, Tracked};
use orm_tests::TestDb;
use support::moods::{Level, Mood, ENUM_TYPES};
use uuid::Uuid;

/// A text-stored enum: a `text[]` column.
#[derive(DbEnum, Clone, Copy, Debug, PartialEq)]
enum Color {
    Red,
    DarkBlue,
}

#[derive(Entity, Clone, Debug, PartialEq)]
struct Post {
    #[orm(primary_key, generated)]
    id: i64,
    title: String,
    tags: Vec<String>,
    scores: Vec<i32>,
    ratings: Option<Vec<i64>>,
    gaps: Vec<Option<i32>>,
}

#[derive(Entity, Clone, Debug, PartialEq)]
struct Sample {
    #[orm(primary_key)]
    id: i32,
    small: Vec<i16>,
    big: Vec<i64>,
    real: Vec<f32>,
    double: Vec<f64>,
    flags: Vec<bool>,
    ids: Vec<Uuid>,
    days: Vec<NaiveDate>,
    stamps: Vec<NaiveDateTime>,
    instants: Vec<DateTime<Utc>>,
    times: Vec<NaiveTime>,
    moods: Vec<Mood>,
    levels: Option<Vec<Level>>,
    colors: Vec<Color>,
    maybe_days: Vec<Option<NaiveDate>>,
}

const SCHEMA: &str = "
    CREATE TABLE post (id bigserial PRIMARY KEY, title text NOT NULL, tags text[] NOT NULL, scores int4[] NOT NULL,
                       ratings int8[], gaps int4[] NOT NULL);
    CREATE TABLE sample (id int4 PRIMARY KEY, small int2[] NOT NULL, big int8[] NOT NULL, real float4[] NOT NULL,
                         double float8[] NOT NULL, flags bool[] NOT NULL, ids uuid[] NOT NULL, days date[] NOT NULL,
                         stamps timestamp[] NOT NULL, instants timestamptz[] NOT NULL, times time[] NOT NULL,
                         moods mood[] NOT NULL, levels app.level[], colors text[] NOT NULL,
                         maybe_days date[] NOT NULL);
";

async fn setup() -> (TestDb, Database) {
    let test_db = TestDb::new().await;
    test_db.client().await.batch_execute(&format!("{ENUM_TYPES}{SCHEMA}")).await.unwrap();
    let db = Database::connect(test_db.url()).unwrap();
    (test_db, db)
}

/// [`setup`] with posts `0..n` committed.
async fn with_posts(n: usize) -> (TestDb, Database) {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    session.add_all((0..n).map(post));
    session.commit().await.unwrap();
    (test_db, db)
}

/// Text that an array literal must quote or escape, or that looks like
/// something else in one.
const AWKWARD: [&str; 12] = [
    "",
    "NULL",
    "null",
    "a,b",
    "{braces}",
    "}",
    "say \"hi\"",
    "back\\slash",
    "\\\"",
    "  padded  ",
    "line\nbreak\ttab",
    "ünïcödé ✓",
];

fn post(n: usize) -> Post {
    let n32 = i32::try_from(n).unwrap();
    Post {
        id: 0,
        title: format!("post {n}"),
        tags: match n % 4 {
            0 => Vec::new(),
            1 => AWKWARD.map(String::from).to_vec(),
            _ => vec![format!("tag {n}"), "common".into()],
        },
        scores: (0..n32 % 5).map(|s| s * n32 - 7).collect(),
        ratings: match n % 3 {
            0 => None,
            1 => Some(Vec::new()),
            _ => Some(vec![i64::MIN, i64::try_from(n).unwrap(), i64::MAX]),
        },
        gaps: if n % 2 == 0 { vec![None, Some(n32), None] } else { Vec::new() },
    }
}

async fn load_posts(db: &Database) -> Vec<Post> {
    let mut session = db.session();
    session.query::<Post>().order_by(Post::ID.asc()).untracked().all().await.unwrap()
}

fn values(tracked: &[Tracked<Post>]) -> Vec<Post> {
    tracked.iter().map(Tracked::get).collect()
}

#[tokio::test]
async fn a_batch_of_array_rows_is_one_statement_and_reads_back_equal() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    // More rows than a flush binds between two yields, so the text arrays
    // are also sent as chunks joined into one parameter.
    let added = session.add_all((0..10_000).map(post));
    session.flush().await.unwrap();
    assert_eq!(session.stats().statements, 1);
    session.commit().await.unwrap();
    assert_eq!(load_posts(&db).await, values(&added));
}

#[tokio::test]
async fn a_single_row_binds_its_arrays_directly() {
    let (test_db, db) = setup().await;
    for n in 0..6 {
        let mut session = db.session();
        let added = session.add(post(n));
        let stats = session.commit().await.unwrap();
        assert_eq!(stats.statements, 1);
        let mut session = db.session();
        assert_eq!(session.get_one::<Post>(added.key()).await.unwrap().get(), added.get());
    }
    let client = test_db.client().await;
    let stored: Vec<Option<String>> = client
        .query("SELECT ratings::text FROM post ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let full = |n| Some(format!("{{-9223372036854775808,{n},9223372036854775807}}"));
    assert_eq!(stored, [None, Some("{}".into()), full(2), None, Some("{}".into()), full(5)]);
    let tags: Vec<String> = client.query_one("SELECT tags FROM post WHERE id = 2", &[]).await.unwrap().get(0);
    assert_eq!(tags, AWKWARD);
}

#[tokio::test]
async fn the_batched_and_the_single_row_forms_store_the_same_values() {
    let (test_db, db) = with_posts(8).await;
    for n in 0..8 {
        let mut session = db.session();
        session.add(post(n));
        session.commit().await.unwrap();
    }
    let client = test_db.client().await;
    let rows = client
        .query("SELECT tags::text, scores::text, ratings::text, gaps::text FROM post ORDER BY id", &[])
        .await
        .unwrap();
    let text: Vec<[Option<String>; 4]> = rows.iter().map(|r| [r.get(0), r.get(1), r.get(2), r.get(3)]).collect();
    assert_eq!(text[..8], text[8..]);
    assert_eq!(text[0][3].as_deref(), Some("{NULL,0,NULL}"), "NULL elements");
}

#[tokio::test]
async fn changing_an_array_is_a_change_and_a_batch_of_them_one_update() {
    let (test_db, db) = with_posts(100).await;

    let mut session = db.session();
    let posts = session.query::<Post>().order_by(Post::ID.asc()).all().await.unwrap();
    for post in &posts {
        let _unchanged = post.write(); // written, not changed: no SQL
    }
    assert_eq!(session.pending().unwrap().updates, 0);
    for post in &posts[..50] {
        post.write().tags.push("pushed \"1\"".into());
    }
    for post in &posts[50..] {
        // The same column set: the same statement.
        let mut post = post.write();
        post.tags.clear();
        post.tags.extend(["x", "y\\z", "NULL"].map(String::from));
    }
    assert_eq!(session.pending().unwrap().updates, 100);
    let stats = session.commit().await.unwrap();
    assert_eq!(stats.statements, 2, "the SELECT and one UPDATE");

    let reloaded = load_posts(&db).await;
    assert_eq!(reloaded, values(&posts));
    assert_eq!(reloaded[1].tags.last().map(String::as_str), Some("pushed \"1\""));

    // Setting an array to NULL and back, through the batched UPDATE.
    let mut session = db.session();
    let posts = session.query::<Post>().order_by(Post::ID.asc()).limit(4).all().await.unwrap();
    for post in &posts {
        post.modify(|p| p.ratings = if p.ratings.is_some() { None } else { Some(vec![1, 2]) });
    }
    session.commit().await.unwrap();
    let ratings: Vec<Option<String>> = test_db
        .client()
        .await
        .query("SELECT ratings::text FROM post ORDER BY id LIMIT 4", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(ratings, [Some("{1,2}".into()), None, None, Some("{1,2}".into())]);
}

#[tokio::test]
async fn filters_look_inside_arrays() {
    let (_test_db, db) = with_posts(12).await;

    let mut session = db.session();
    let mut ids = async |filter| -> Vec<i64> {
        let found = session.query::<Post>().filter(filter).order_by(Post::ID.asc()).all().await.unwrap();
        found.iter().map(|p| p.read().id).collect()
    };
    // Posts 1, 5, 9 (ids 2, 6, 10) carry the awkward texts.
    assert_eq!(ids(Post::TAGS.has("NULL")).await, [2, 6, 10]);
    assert_eq!(ids(Post::TAGS.has("a,b")).await, [2, 6, 10]);
    assert_eq!(ids(Post::TAGS.contains(["say \"hi\"", "back\\slash"])).await, [2, 6, 10]);
    assert_eq!(ids(Post::TAGS.contains(["common", "tag 2"])).await, [3]);
    assert_eq!(ids(Post::TAGS.overlaps(["tag 2", "tag 3", "}"])).await, [2, 3, 4, 6, 10]);
    // Every element among the values: the empty arrays too.
    assert_eq!(ids(Post::TAGS.contained_by(["tag 2", "common"])).await, [1, 3, 5, 9]);
    assert_eq!(ids(Post::SCORES.has(-7)).await, [2, 3, 4, 5, 7, 8, 9, 10, 12]);
    assert_eq!(ids(Post::SCORES.contains([-7, 11])).await, [10]);
    // A nullable array column: NULL matches none of them.
    assert_eq!(ids(Post::RATINGS.has(i64::MAX)).await, [3, 6, 9, 12]);
    assert_eq!(ids(Post::RATINGS.contained_by(Vec::<i64>::new())).await, [2, 5, 8, 11]);
    // NULL elements never match; the others do, by their plain type.
    assert_eq!(ids(Post::GAPS.has(4)).await, [5]);
    assert_eq!(ids(Post::GAPS.overlaps([0, 2])).await, [1, 3]);
    // Negated, and beside the other filters.
    assert_eq!(ids(Post::TAGS.has("common").not().and(Post::TITLE.like("post 1%"))).await, [2]);
    // An empty list: contains holds, overlaps never does.
    assert_eq!(ids(Post::TAGS.contains(Vec::<String>::new())).await.len(), 12);
    assert!(ids(Post::TAGS.overlaps(Vec::<String>::new())).await.is_empty());
    // The whole array compares with = too.
    assert_eq!(ids(Post::SCORES.eq(vec![-7, -5])).await, [3]);
}

fn sample(id: i32) -> Sample {
    let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
    let stamp = |date: NaiveDate, nanos| date.and_hms_nano_opt(13, 14, 15, nanos).unwrap();
    let ms = u32::try_from(id).unwrap();
    Sample {
        id,
        small: vec![i16::MIN, -1, 0, i16::MAX],
        big: vec![i64::MIN, i64::from(id), i64::MAX],
        real: vec![0.1, -0.0, f32::MAX, f32::MIN_POSITIVE, 1e-45, f32::INFINITY, 3.5],
        double: vec![0.1, 1e300, -1e-300, 5e-324, f64::MAX, f64::NEG_INFINITY, 1.0 / 3.0],
        flags: vec![true, false, id % 2 == 0],
        ids: vec![Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef), Uuid::nil()],
        days: vec![day(2024, 2, 29), day(-43, 3, 15), day(12_345, 6, 7), day(1, 1, 1), day(0, 12, 31)],
        // Nanoseconds are truncated as the driver truncates them, before
        // and after its epoch of 2000.
        stamps: vec![
            stamp(day(1999, 12, 31), 123_456_789),
            stamp(day(2031, 1, 2), 987_654_321 + ms),
            stamp(day(-43, 3, 15), 0),
        ],
        instants: vec![stamp(day(1970, 1, 1), 1_001).and_utc(), stamp(day(2262, 4, 11), 999_999_999).and_utc()],
        times: vec![NaiveTime::MIN, NaiveTime::from_hms_nano_opt(23, 59, 59, 999_999_999).unwrap()],
        moods: vec![Mood::SoSo, Mood::Happy, Mood::SoSo],
        levels: (id % 2 == 0).then(|| vec![Level::High, Level::Low]),
        colors: vec![Color::DarkBlue, Color::Red],
        maybe_days: vec![None, Some(day(2000, 1, 1))],
    }
}

#[tokio::test]
async fn every_element_type_round_trips_batched_and_alone() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let batch = session.add_all((1..=3).map(sample));
    session.flush().await.unwrap();
    let alone = session.add(sample(4));
    session.commit().await.unwrap();

    // What the flush kept in memory is what the database stored.
    let mut session = db.session();
    let loaded = session.query::<Sample>().order_by(Sample::ID.asc()).untracked().all().await.unwrap();
    let written: Vec<Sample> = batch.iter().chain([&alone]).map(Tracked::get).collect();
    assert_eq!(loaded, written);
    assert_eq!(loaded[0].stamps[0].and_utc().timestamp_subsec_nanos(), 123_457_000);
    assert_eq!(loaded[1].stamps[1].and_utc().timestamp_subsec_nanos(), 987_654_000);
    assert_eq!(loaded[0].times[1].to_string(), "23:59:59.999999");
    assert!(loaded[0].double[5].is_infinite() && loaded[0].double[5].is_sign_negative());
    assert!(loaded[0].real[1].is_sign_negative(), "-0 stays negative");

    // Both forms wrote the same text, row for row.
    let client = test_db.client().await;
    let text = async |id: i32| -> String {
        let sql = "SELECT ROW(small, real, double, flags, ids, days, stamps, instants, times, moods, levels,
                              colors, maybe_days)::text FROM sample WHERE id = $1";
        client.query_one(sql, &[&id]).await.unwrap().get(0)
    };
    assert_eq!(text(2).await, text(4).await);
    let days: String = client.query_one("SELECT days::text FROM sample WHERE id = 1", &[]).await.unwrap().get(0);
    assert_eq!(days, r#"{2024-02-29,"0044-03-15 BC",12345-06-07,0001-01-01,"0001-12-31 BC"}"#);

    // NaN is no PartialEq value, so on its own: both forms store NaN.
    let mut nan = sample(5);
    nan.double = vec![f64::NAN];
    let mut session = db.session();
    session.add_all([nan.clone(), Sample { id: 6, ..nan }]);
    session.commit().await.unwrap();
    let stored: Vec<Vec<f64>> =
        client.query("SELECT double FROM sample WHERE id >= 5", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert!(stored.iter().flatten().all(|d| d.is_nan()) && stored.len() == 2);
}

#[tokio::test]
async fn enum_and_time_arrays_filter_and_update_in_a_batch() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    session.add_all((1..=4).map(sample));
    session.commit().await.unwrap();

    let mut session = db.session();
    let sad = session.query::<Sample>().filter(Sample::MOODS.has(Mood::Sad)).count().await.unwrap();
    let high = session.query::<Sample>().filter(Sample::LEVELS.contains([Level::High])).count().await.unwrap();
    let blue = session.query::<Sample>().filter(Sample::COLORS.overlaps([Color::DarkBlue])).count().await.unwrap();
    let leap = NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
    let leap_day = session.query::<Sample>().filter(Sample::DAYS.has(leap)).count().await.unwrap();
    let y2k =
        session.query::<Sample>().filter(Sample::MAYBE_DAYS.has(NaiveDate::from_ymd_opt(2000, 1, 1).unwrap())).count();
    assert_eq!((sad, high, blue, leap_day, y2k.await.unwrap()), (0, 2, 4, 4, 4));

    let mut session = db.session();
    let all = session.query::<Sample>().all().await.unwrap();
    for sample in &all {
        sample.modify(|s| {
            s.moods.push(Mood::Sad);
            s.levels = Some(Vec::new());
            s.stamps.push(NaiveDate::from_ymd_opt(1990, 5, 6).unwrap().and_hms_nano_opt(1, 2, 3, 4_000_999).unwrap());
        });
    }
    let stats = session.commit().await.unwrap();
    assert_eq!(stats.statements, 2, "the SELECT and one UPDATE");
    assert_eq!(all[0].read().stamps[3].and_utc().timestamp_subsec_nanos(), 4_001_000, "truncated toward 2000");

    let mut session = db.session();
    let reloaded = session.query::<Sample>().untracked().all().await.unwrap();
    assert!(reloaded.iter().all(|s| s.moods.last() == Some(&Mood::Sad) && s.levels == Some(Vec::new())));
    assert_eq!(reloaded.iter().find(|s| s.id == 1), Some(&all.iter().find(|s| s.read().id == 1).unwrap().get()));
}

#[tokio::test]
async fn upserts_and_set_based_updates_write_arrays() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    session.add_all((1..=2).map(sample));
    session.commit().await.unwrap();

    let mut session = db.session();
    let incoming = (2..=3).map(|id| Sample { moods: vec![Mood::Sad], big: Vec::new(), ..sample(id) });
    let upserted = session.add_all_on_conflict(incoming, OnConflict::key().do_update((Sample::MOODS, Sample::BIG)));
    let stats = session.commit().await.unwrap();
    assert_eq!(stats.statements, 1);
    assert_eq!(upserted[0].read().moods, [Mood::Sad]);

    let mut session = db.session();
    let written = session.upsert(vec![Sample { colors: vec![], ..sample(1) }]).do_update(Sample::COLORS).await.unwrap();
    assert_eq!(written, 1);
    let changed = session.query::<Sample>().filter(Sample::ID.ge(3)).update([Sample::BIG.set(vec![42_i64])]).await;
    assert_eq!(changed.unwrap(), 1);
    session.commit().await.unwrap();
    let client = test_db.client().await;
    let rows =
        client.query("SELECT id, moods::text, big::text, colors::text FROM sample ORDER BY id", &[]).await.unwrap();
    let stored: Vec<(i32, String, String, String)> =
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
    assert_eq!(
        stored,
        [
            (1, "{so-so,happy,so-so}".into(), "{-9223372036854775808,1,9223372036854775807}".into(), "{}".into()),
            (2, "{sad}".into(), "{}".into(), "{dark_blue,red}".into()),
            (3, "{sad}".into(), "{42}".into(), "{dark_blue,red}".into()),
        ]
    );
}

#[tokio::test]
async fn arrays_the_fields_cannot_hold_are_decode_errors() {
    let (test_db, db) = setup().await;
    let client = test_db.client().await;
    client
        .batch_execute("INSERT INTO post (title, tags, scores, gaps) VALUES ('square', '{}', '{{1,2},{3,4}}', '{}')")
        .await
        .unwrap();
    let error = db.session().query::<Post>().all().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Decode, "{error}");
    assert!(error.to_string().contains("Post") && error.to_string().contains("scores"), "{error}");

    client.batch_execute("UPDATE post SET scores = '{1,NULL}'").await.unwrap();
    let error = db.session().query::<Post>().all().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Decode, "a NULL element in a Vec<i32>: {error}");
    assert!(error.to_string().contains("scores"), "{error}");

    // A Vec<Option<i32>> takes them.
    client.batch_execute("UPDATE post SET scores = '{}', gaps = '{1,NULL}'").await.unwrap();
    let loaded = db.session().query::<Post>().untracked().all().await.unwrap();
    assert_eq!(loaded[0].gaps, [Some(1), None]);
}

#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "labelled")]
struct Labelled {
    #[orm(primary_key, generated)]
    id: i64,
    #[orm(sql_type = "varchar[]")]
    labels: Vec<String>,
    moods: Option<Vec<Mood>>,
    levels: Vec<Level>,
}

#[tokio::test]
async fn ddl_schema_check_and_a_type_override_know_array_columns() {
    let test_db = TestDb::new().await;
    let client = test_db.client().await;
    client.batch_execute("CREATE SCHEMA app").await.unwrap();
    let ddl = create_table_sql::<Labelled>();
    assert_eq!(
        ddl,
        "CREATE TYPE mood AS ENUM ('happy', 'sad', 'so-so');\nCREATE TYPE app.level AS ENUM ('low', 'high');\n\
         CREATE TABLE \"labelled\" (\n    \"id\" int8 GENERATED BY DEFAULT AS IDENTITY NOT NULL,\n    \
         \"labels\" varchar[] NOT NULL,\n    \"moods\" mood[],\n    \"levels\" app.level[] NOT NULL,\n    PRIMARY KEY (\"id\")\n);"
    );
    client.batch_execute(&ddl).await.unwrap();
    let db = Database::connect(test_db.url()).unwrap();
    SchemaCheck::new().entity::<Labelled>().run(&db).await.unwrap();

    let mut session = db.session();
    let added = session.add_all([
        Labelled {
            id: 0,
            labels: vec!["a".into(), "b c".into()],
            moods: Some(vec![Mood::Happy]),
            levels: vec![Level::Low],
        },
        Labelled { id: 0, labels: vec![], moods: None, levels: vec![Level::High, Level::High] },
    ]);
    session.commit().await.unwrap();
    let mut session = db.session();
    let alone = session.add(Labelled { id: 0, labels: vec!["x".into()], moods: Some(vec![]), levels: vec![] });
    session.commit().await.unwrap(); // VALUES ($1::varchar[], $2::mood[], $3::app.level[])
    let mut session = db.session();
    let loaded = session.query::<Labelled>().order_by(Labelled::ID.asc()).untracked().all().await.unwrap();
    assert_eq!(loaded, added.iter().chain([&alone]).map(Tracked::get).collect::<Vec<_>>());

    // A table whose array column holds another element type is reported.
    client.batch_execute("ALTER TABLE labelled ALTER COLUMN levels TYPE mood[] USING '{}'").await.unwrap();
    let error = SchemaCheck::new().entity::<Labelled>().run(&db).await.unwrap_err();
    assert!(error.to_string().contains("levels"), "{error}");
}

/// Array columns of the types whose text form is not a plain number or
/// string: `inet[]`, `numeric[]` and `interval[]`.
#[derive(Entity, Clone, Debug, PartialEq)]
struct Tariff {
    #[orm(primary_key)]
    id: i32,
    addresses: Vec<std::net::IpAddr>,
    prices: Vec<rust_decimal::Decimal>,
    periods: Vec<orm_core::Interval>,
}

fn tariff(id: i32) -> Tariff {
    use orm_core::Interval;
    Tariff {
        id,
        addresses: vec!["10.0.0.1".parse().unwrap(), "2001:db8::ff00:42:8329".parse().unwrap()],
        prices: vec![
            "12.50".parse().unwrap(),
            "-0.000001".parse().unwrap(),
            "79228162514264337593543950335".parse().unwrap(),
        ],
        periods: vec![
            Interval { months: 14, days: -3, microseconds: 100 * 3_600_000_000 + 61_000_007 },
            Interval::microseconds(-1),
            Interval::microseconds(i64::MIN + 1),
            Interval::default(),
            Interval { months: -1, days: 2, microseconds: 3_600_000_000 },
        ],
    }
}

/// With `IntervalStyle = sql_standard` too, where a leading `-` on an
/// interval with no other explicit sign negates every field.
#[tokio::test]
async fn addresses_decimals_and_intervals_round_trip_batched_and_alone() {
    let test_db = TestDb::new().await;
    let client = test_db.client().await;
    client
        .batch_execute(
            "CREATE TABLE tariff (id int4 PRIMARY KEY, addresses inet[] NOT NULL, prices numeric[] NOT NULL,
                                  periods interval[] NOT NULL)",
        )
        .await
        .unwrap();
    let mut config = orm_core::DatabaseConfig::from_url(test_db.url()).unwrap();
    config.postgres.options("-c IntervalStyle=sql_standard");
    let db = Database::with_config(config).unwrap();
    let mut session = db.session();
    let batch = session.add_all((1..=3).map(tariff));
    session.flush().await.unwrap();
    assert_eq!(session.stats().statements, 1, "one batched INSERT for three rows");
    let alone = session.add(tariff(4));
    session.commit().await.unwrap();

    let mut session = db.session();
    let loaded = session.query::<Tariff>().order_by(Tariff::ID.asc()).untracked().all().await.unwrap();
    assert_eq!(loaded, batch.iter().chain([&alone]).map(Tracked::get).collect::<Vec<_>>());
    assert_eq!(loaded[0].prices[0].to_string(), "12.50", "the scale is kept");

    // The batched form (array literals) and the single-row form (binary
    // arrays) stored the same values.
    let text = async |id: i32| -> String {
        let sql = "SELECT ROW(addresses, prices, periods)::text FROM tariff WHERE id = $1";
        client.query_one(sql, &[&id]).await.unwrap().get(0)
    };
    assert_eq!(text(1).await, text(4).await);
}

/// Array columns of the `time` crate's types.
#[derive(Entity, Clone, Debug, PartialEq)]
struct Shift {
    #[orm(primary_key)]
    id: i32,
    days: Vec<time::Date>,
    starts: Vec<time::Time>,
    local: Vec<time::PrimitiveDateTime>,
    instants: Vec<time::OffsetDateTime>,
}

fn shift(id: i32) -> Shift {
    // Nanoseconds below the microsecond, an offset of +02:00, and a year BC.
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789 + i128::from(id)).unwrap();
    let bc = time::Date::from_calendar_date(-43, time::Month::March, 15).unwrap();
    Shift {
        id,
        days: vec![at.date(), bc],
        starts: vec![at.time(), time::Time::MIDNIGHT],
        local: vec![time::PrimitiveDateTime::new(at.date(), at.time()), time::PrimitiveDateTime::new(bc, at.time())],
        instants: vec![at.to_offset(time::UtcOffset::from_hms(2, 0, 0).unwrap())],
    }
}

#[tokio::test]
async fn time_crate_arrays_round_trip_batched_and_alone() {
    let test_db = TestDb::new().await;
    let client = test_db.client().await;
    client
        .batch_execute(
            "CREATE TABLE shift (id int4 PRIMARY KEY, days date[] NOT NULL, starts time[] NOT NULL,
                                 local timestamp[] NOT NULL, instants timestamptz[] NOT NULL)",
        )
        .await
        .unwrap();
    let db = Database::connect(test_db.url()).unwrap();
    let mut session = db.session();
    let batch = session.add_all((1..=3).map(shift));
    session.flush().await.unwrap();
    assert_eq!(session.stats().statements, 1, "one batched INSERT for three rows");
    let alone = session.add(shift(4));
    session.commit().await.unwrap();

    // What the flush kept in memory (brought to the microsecond, in UTC)
    // is what the database stored.
    let mut session = db.session();
    let loaded = session.query::<Shift>().order_by(Shift::ID.asc()).untracked().all().await.unwrap();
    assert_eq!(loaded, batch.iter().chain([&alone]).map(Tracked::get).collect::<Vec<_>>());
    assert_eq!(loaded[0].starts[0].microsecond(), 123_456, "cut to the microsecond as the driver does");

    let text = async |id: i32| -> String {
        let sql = "SELECT ROW(days, starts, local, instants)::text FROM shift WHERE id = $1";
        client.query_one(sql, &[&id]).await.unwrap().get(0)
    };
    // Rows 1 and 4 differ below the microsecond only: the batched and the
    // single-row form stored the same text.
    assert_eq!(text(1).await, text(4).await);
    assert!(text(1).await.contains("0044-03-15 BC"), "{}", text(1).await);
}

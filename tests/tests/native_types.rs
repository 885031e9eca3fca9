//! The types real schemas use: PostgreSQL enum types, `numeric`, the `time`
//! crate, `inet` and `interval`, through single-row and batched statements,
//! filters and loads.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

mod support;

use orm_core::{Database, Entity, ErrorKind, Interval};
use orm_tests::TestDb;
use rust_decimal::Decimal;
use support::moods::{Level, Mood, ENUM_TYPES};

#[derive(Entity, Clone, Debug, PartialEq)]
struct Person {
    #[orm(primary_key, generated)]
    id: i64,
    mood: Mood,
    was: Option<Mood>,
    level: Level,
}

#[derive(Entity, Clone, Debug, PartialEq)]
struct Reading {
    #[orm(primary_key, generated)]
    id: i64,
    amount: Decimal,
    fee: Option<Decimal>,
    taken_at: time::OffsetDateTime,
    local: time::PrimitiveDateTime,
    day: time::Date,
    at: time::Time,
    source: IpAddr,
    every: Interval,
}

const SCHEMA: &str = "
    CREATE TABLE person (id bigserial PRIMARY KEY, mood mood NOT NULL, was mood, level app.level NOT NULL);
    CREATE TABLE reading (id bigserial PRIMARY KEY, amount numeric(14, 4) NOT NULL, fee numeric, taken_at timestamptz NOT NULL,
                          local timestamp NOT NULL, day date NOT NULL, at time NOT NULL, source inet NOT NULL,
                          every interval NOT NULL);
";

async fn setup() -> (TestDb, Database) {
    let test_db = TestDb::new().await;
    test_db.client().await.batch_execute(&format!("{ENUM_TYPES}{SCHEMA}")).await.unwrap();
    let db = Database::connect(test_db.url()).unwrap();
    (test_db, db)
}

fn person(mood: Mood, was: Option<Mood>, level: Level) -> Person {
    Person { id: 0, mood, was, level }
}

#[tokio::test]
async fn enum_types_in_batched_and_single_statements_filters_and_loads() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let batch = session.add_all([
        person(Mood::Happy, None, Level::Low),
        person(Mood::SoSo, Some(Mood::Sad), Level::High),
        person(Mood::Sad, Some(Mood::Happy), Level::Low),
    ]);
    session.flush().await.unwrap();
    session.add(person(Mood::SoSo, None, Level::High)); // one row: VALUES ($1::mood, ...)
    session.flush().await.unwrap();
    assert_eq!(session.stats().statements, 2);

    // A batched UPDATE of one column: its values travel as one mood[] array.
    for tracked in &batch {
        tracked.modify(|p| p.was = Some(Mood::SoSo));
    }
    session.commit().await.unwrap();
    let client = test_db.client().await;
    let rows = client.query("SELECT mood::text, was::text, level::text FROM person ORDER BY id", &[]).await.unwrap();
    let stored: Vec<(String, Option<String>, String)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    assert_eq!(
        stored,
        [
            ("happy".into(), Some("so-so".into()), "low".into()),
            ("so-so".into(), Some("so-so".into()), "high".into()),
            ("sad".into(), Some("so-so".into()), "low".into()),
            ("so-so".into(), None, "high".into()),
        ]
    );

    let mut session = db.session();
    let so_so = session.query::<Person>().filter(Person::MOOD.eq(Mood::SoSo)).count().await.unwrap();
    let either = session.query::<Person>().filter(Person::MOOD.is_in([Mood::Happy, Mood::Sad])).all().await.unwrap();
    assert_eq!((so_so, either.len()), (2, 2));
    let high = session.query::<Person>().filter(Person::LEVEL.eq(Level::High)).all().await.unwrap();
    assert_eq!(high.iter().map(|p| p.read().mood).collect::<Vec<_>>(), [Mood::SoSo, Mood::SoSo]);
}

#[tokio::test]
async fn an_enum_label_missing_from_the_rust_enum_is_a_decode_error() {
    let (test_db, db) = setup().await;
    let client = test_db.client().await;
    // Two statements: a new label cannot be used in the transaction that adds it.
    client.batch_execute("ALTER TYPE mood ADD VALUE 'elated'").await.unwrap();
    client.batch_execute("INSERT INTO person (mood, level) VALUES ('elated', 'low')").await.unwrap();
    let error = db.session().query::<Person>().all().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Decode, "{error}");
    assert!(error.to_string().contains("mood"), "names the column: {error}");
}

fn reading(n: i64) -> Reading {
    let taken_at = time::OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789 + i128::from(n)).unwrap();
    Reading {
        id: 0,
        amount: Decimal::new(123_456_789 + n, 4),
        fee: (n % 2 == 0).then(|| Decimal::from_str("0.000000000000000000000000001").unwrap()),
        taken_at: taken_at.to_offset(time::UtcOffset::from_hms(2, 0, 0).unwrap()),
        local: time::PrimitiveDateTime::new(taken_at.date(), taken_at.time()),
        day: taken_at.date(),
        at: taken_at.time(),
        source: if n % 2 == 0 { IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)) } else { IpAddr::V6(Ipv6Addr::LOCALHOST) },
        every: Interval { months: 1, days: 2, microseconds: 3_000_000 + n },
    }
}

#[tokio::test]
async fn numeric_time_inet_and_interval_round_trip_in_batches_and_alone() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    let batch = session.add_all((0..3).map(reading));
    let alone = session.add(reading(7));
    session.commit().await.unwrap();

    // Nanoseconds were dropped on the way, in memory as in the database.
    assert_eq!(batch[0].read().at.nanosecond() % 1_000, 0);
    let mut session = db.session();
    let mut loaded = session.query::<Reading>().untracked().all().await.unwrap();
    loaded.sort_by_key(|r| r.id);
    let written: Vec<Reading> = batch.iter().chain([&alone]).map(orm_core::Tracked::get).collect();
    assert_eq!(loaded, written);
    assert_eq!(loaded[0].fee.unwrap().to_string(), "0.000000000000000000000000001");
    assert_eq!(loaded[1].amount.to_string(), "12345.6790");

    let cheap =
        session.query::<Reading>().filter(Reading::AMOUNT.lt(Decimal::new(123_456_791, 4))).count().await.unwrap();
    let local =
        session.query::<Reading>().filter(Reading::SOURCE.eq(IpAddr::V6(Ipv6Addr::LOCALHOST))).count().await.unwrap();
    assert_eq!((cheap, local), (2, 2));
    let text: String =
        session.query_rows("SELECT every::text FROM reading ORDER BY id LIMIT 1", &[]).await.unwrap()[0].get(0);
    assert_eq!(text, "1 mon 2 days 00:00:03");
}

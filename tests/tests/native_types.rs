//! The types real schemas use: PostgreSQL enum types, `numeric`, the `time`
//! crate, `inet` and `interval`, through single-row and batched statements,
//! filters and loads.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

mod support;

use orm_core::{Database, DatabaseConfig, Entity, ErrorKind, Interval, StatementMode};
use orm_tests::{within, TestDb};
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

/// In the unnamed mode a statement's description is shared by the pool's
/// connections, but the driver looks up an enum type once per connection,
/// and running a statement unnamed it does so while the rows wait unread:
/// past a few kilobytes of rows it stopped reading the connection and the
/// lookup's answer never came. A connection now describes a statement
/// whose types its driver has not looked up, once.
#[tokio::test]
async fn an_enum_result_described_on_one_connection_loads_on_another() {
    let test_db = TestDb::new().await;
    let client = test_db.client().await;
    client.batch_execute(&format!("{ENUM_TYPES}{SCHEMA}")).await.unwrap();
    seed_people(&client, "'happy', 'sad', 'high'", 20_000).await;
    let mut config = DatabaseConfig::from_url(test_db.url()).unwrap();
    config.statements = StatementMode::Unnamed;
    let db = Database::with_config(config).unwrap();
    let load = |db: Database| async move {
        let mut session = db.session();
        let people = within(session.query::<Person>().all()).await.unwrap();
        assert!(people.iter().all(|person| person.read().mood == Mood::Happy && person.read().level == Level::High));
        (people.len(), session.stats().round_trips)
    };
    assert_eq!(load(db.clone()).await, (20_000, 2), "described, then run, on the first connection");
    // The first connection is busy: the load takes a second one, whose
    // driver has not looked `mood` and `app.level` up.
    let busy = db.checkout().await.unwrap();
    assert_eq!(load(db.clone()).await, (20_000, 2), "described again on the second connection");
    assert_eq!(load(db.clone()).await, (20_000, 1), "the second connection knows the types now");
    drop(busy);
}

/// A chunked stream reads its rows by `FETCH`, which runs as the unnamed
/// statement: on a connection that had not met `mood` and `app.level`,
/// the driver looked them up while a chunk's rows waited unread and
/// stopped reading the connection. The stream's query is prepared first,
/// which looks them up before the first chunk.
#[tokio::test]
async fn a_chunked_stream_of_enum_rows_reads_every_chunk() {
    let (test_db, db) = setup().await;
    let client = test_db.client().await;
    seed_people(&client, "'so-so', NULL, 'low'", 5_000).await;
    let mut session = db.session();
    let read = within(async {
        let mut chunks = session.query::<Person>().stream_tracked(2_000).await.unwrap();
        let mut sizes = Vec::new();
        while let Some(chunk) = chunks.next_chunk().await.unwrap() {
            assert!(chunk.iter().all(|person| person.read().mood == Mood::SoSo && person.read().was.is_none()));
            sizes.push(chunk.len());
        }
        sizes
    })
    .await;
    assert_eq!(read, [2_000, 2_000, 1_000]);
    session.rollback().await.unwrap();
}

/// Raw rows without parameters used to run as the unnamed statement at
/// once: the driver met `mood` in the answer and looked it up while 20,000
/// rows waited unread, and stopped reading the connection. They are now
/// prepared first, and closed after the run.
#[tokio::test]
async fn raw_rows_of_an_enum_without_parameters_are_all_read() {
    let (test_db, db) = setup().await;
    let client = test_db.client().await;
    seed_people(&client, "'sad', 'happy', 'low'", 20_000).await;
    let mut session = db.session();
    let rows = within(session.query_rows("SELECT * FROM person", &[])).await.unwrap();
    assert_eq!(rows.len(), 20_000);
    assert!(rows.iter().all(|row| row.get::<_, Mood>("mood") == Mood::Sad));
    // Raw SQL may write: its BEGIN is confirmed before it is prepared and run.
    assert_eq!(session.stats().round_trips, 3, "BEGIN, prepare, run");
}

/// `execute` reads no rows, but a statement's rows arrive all the same: a
/// `DELETE ... RETURNING` of 20,000 enums hung as raw rows did. A
/// statement that may return rows is prepared first; one that cannot
/// still costs one round trip.
#[tokio::test]
async fn execute_of_a_statement_returning_enums_finishes_and_a_plain_update_costs_one_round_trip() {
    let (test_db, db) = setup().await;
    let client = test_db.client().await;
    seed_people(&client, "'happy', NULL, 'high'", 20_000).await;
    let mut session = db.session();
    let updated = within(session.execute("UPDATE person SET was = 'sad'", &[])).await.unwrap();
    assert_eq!((updated, session.stats().round_trips), (20_000, 2), "BEGIN, then the update alone");
    let deleted = within(session.execute("DELETE FROM person RETURNING mood, level", &[])).await.unwrap();
    assert_eq!((deleted, session.stats().round_trips), (20_000, 4), "prepared, then run");
    session.commit().await.unwrap();
    assert_eq!(client.query_one("SELECT count(*) FROM person", &[]).await.unwrap().get::<_, i64>(0), 0);
}

/// Inserts `count` people, each with the values of `moods_and_level` (SQL
/// for `mood, was, level`).
async fn seed_people(client: &tokio_postgres::Client, moods_and_level: &str, count: i32) {
    let sql = format!("INSERT INTO person (mood, was, level) SELECT {moods_and_level} FROM generate_series(1, $1)");
    client.execute(&sql, &[&count]).await.unwrap();
}

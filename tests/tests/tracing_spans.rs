//! Observability: a flush and each statement are tracing spans carrying what
//! they did, with OpenTelemetry's database attributes, so a slow request can
//! be read off its logs or any OpenTelemetry back end; a statement slower
//! than the configured threshold is a warning naming it.

mod support;

use std::time::Duration;

use support::{customer, setup, setup_with, Customer, LogBuffer};

/// The fields of the closed `orm.statement` spans of the log, one span
/// each (without those of the spans it is inside).
fn statement_spans(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|line| line.contains("close"))
        .filter_map(|line| line.rsplit_once("orm.statement{").map(|(_, own)| own))
        .collect()
}

#[tokio::test]
async fn flushes_and_statements_are_spans_with_their_sql_and_counts() {
    let (test_db, db) = setup().await;
    let log = LogBuffer::default();
    let _guard = log.install_spans();

    let mut session = db.session();
    session.add_all([customer("ann"), customer("ben")]);
    session.flush().await.unwrap();
    let loaded = session.query::<Customer>().all().await.unwrap();
    assert_eq!(loaded.len(), 2);
    session.commit().await.unwrap();

    let text = log.text();
    let closed = |name: &str| text.lines().filter(|line| line.contains(name) && line.contains("close")).count();
    assert_eq!(closed("orm.flush{commit=false statements=1 round_trips=2}"), 1, "prepare and run: {text}");
    assert_eq!(closed("orm.flush{commit=true statements=0 round_trips=1}"), 1, "the commit's flush: {text}");

    let spans = statement_spans(&text);
    let with = |parts: &[&str]| spans.iter().filter(|line| parts.iter().all(|part| line.contains(part))).count();
    let namespace = format!(r#"db.namespace="{}""#, test_db.name());
    let common = [r#"db.system.name="postgresql""#, r#"otel.kind="client""#, namespace.as_str()];
    assert_eq!(spans.len(), with(&common), "every statement span names system and database: {text}");
    let insert = [
        r#"otel.name="INSERT customer""#,
        r#"db.operation.name="INSERT""#,
        r#"db.collection.name="customer""#,
        r#"db.query.text="INSERT INTO \"customer\""#,
        "rows=2",
    ];
    assert_eq!(with(&insert), 1, "{text}");
    let select = [
        r#"otel.name="SELECT customer""#,
        r#"db.operation.name="SELECT""#,
        r#"db.collection.name="customer""#,
        r#"db.query.text="SELECT t.\"id\", t.\"name\", t.\"description\" FROM \"customer\" AS t"#,
        "rows=2",
    ];
    assert_eq!(with(&select), 1, "{text}");
    assert_eq!(with(&[r#"otel.name="BEGIN""#, r#"db.operation.name="BEGIN""#]), 1, "{text}");
    assert_eq!(with(&[r#"otel.name="COMMIT""#, r#"db.query.text="COMMIT""#]), 1, "{text}");
    assert!(
        !spans.iter().any(|line| line.contains("ann") || line.contains("ben")),
        "values are bound, not shown: {text}"
    );
}

/// The autoflush before each load of a session that only reads has nothing
/// to do and takes a shortcut, but is still a flush span like any other.
#[tokio::test]
async fn an_empty_autoflush_is_a_span_too() {
    let (_test_db, db) = setup().await;
    let mut writer = db.session();
    writer.add_all([customer("ann"), customer("ben")]);
    writer.commit().await.unwrap();
    let log = LogBuffer::default();
    let _guard = log.install_spans();

    let mut session = db.session();
    assert!(session.get::<Customer>(1).await.unwrap().is_some());
    assert!(session.get::<Customer>(2).await.unwrap().is_some());
    assert!(session.get::<Customer>(3).await.unwrap().is_none());
    session.commit().await.unwrap();

    let text = log.text();
    let closed = |name: &str| text.lines().filter(|line| line.contains(name) && line.contains("close")).count();
    assert_eq!(closed("orm.flush{commit=false statements=0 round_trips=0}"), 3, "one per get: {text}");
    assert_eq!(closed("orm.flush{commit=true statements=0 round_trips=0}"), 1, "nothing to commit: {text}");
    assert_eq!(closed("orm.flush"), 4, "{text}");
    assert_eq!(statement_spans(&text).len(), 3, "the three loads: {text}");
}

#[tokio::test]
async fn raw_sql_spans_name_its_operation_and_only_a_certain_table() {
    let (_test_db, db) = setup().await;
    let log = LogBuffer::default();
    let _guard = log.install_spans();

    let mut session = db.session();
    session.query_rows("SELECT count(*) FROM customer", &[]).await.unwrap();
    session.query_rows("SELECT 1 FROM customer a JOIN account b ON a.id = b.id", &[]).await.unwrap();
    session.rollback().await.unwrap();

    let text = log.text();
    let spans: Vec<&str> =
        statement_spans(&text).into_iter().filter(|line| line.contains(r#"db.operation.name="SELECT""#)).collect();
    assert_eq!(spans.len(), 2, "{text}");
    assert!(
        spans[0].contains(r#"otel.name="SELECT customer""#) && spans[0].contains(r#"db.collection.name="customer""#)
    );
    assert!(spans[1].contains(r#"otel.name="SELECT""#), "{text}");
    assert!(!spans[1].contains("db.collection.name"), "a join has no one table: {text}");
}

/// What the slow-statement warning starts with.
const SLOW: &str = "slow statement";

#[tokio::test]
async fn a_statement_slower_than_the_threshold_is_a_warning_naming_it() {
    let (test_db, db) = setup_with(|config| config.slow_statement_threshold = Some(Duration::from_millis(200))).await;
    let log = LogBuffer::default();
    let _guard = log.install();

    let mut session = db.session();
    session.query_rows("SELECT pg_sleep(0.3), 'a' AS mark", &[]).await.unwrap();
    let text = log.text();
    assert_eq!(text.matches(SLOW).count(), 1, "{text}");
    assert!(text.contains("WARN"), "at warn level: {text}");
    assert!(text.contains("SELECT pg_sleep(0.3), 'a' AS mark"), "names the SQL: {text}");
    let took: u64 = text
        .split("duration_ms=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("no duration: {text}"));
    assert!((300..10_000).contains(&took), "the statement's duration: {text}");
    assert!(text.contains("threshold_ms=200"), "{text}");

    session.rollback().await.unwrap();

    // The ORM's own statements: an insert that a trigger slows down.
    let client = test_db.client().await;
    client
        .batch_execute(
            "CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS
                 'BEGIN PERFORM pg_sleep(0.3); RETURN NEW; END';
             CREATE TRIGGER slow BEFORE INSERT ON customer FOR EACH ROW EXECUTE FUNCTION slow_insert()",
        )
        .await
        .unwrap();
    let mut session = db.session();
    session.add(customer("slow"));
    session.commit().await.unwrap();
    let text = log.text();
    assert_eq!(text.matches(SLOW).count(), 2, "{text}");
    let insert = text.lines().find(|line| line.contains("INSERT customer")).unwrap_or_else(|| panic!("{text}"));
    assert!(insert.contains(r#"db.query.text="INSERT INTO \"customer\""#), "{insert}");
    assert!(insert.contains(r#"db.collection.name="customer""#) && !insert.contains("\"slow\""), "{insert}");
}

#[tokio::test]
async fn fast_statements_and_a_disabled_threshold_do_not_warn() {
    let (_test_db, db) = setup_with(|config| config.slow_statement_threshold = Some(Duration::from_millis(200))).await;
    let log = LogBuffer::default();
    let _guard = log.install();
    let mut session = db.session();
    session.query_rows("SELECT pg_sleep(0.01)", &[]).await.unwrap();
    session.add(customer("fast"));
    session.commit().await.unwrap();
    assert!(!log.text().contains(SLOW), "{}", log.text());

    let (_test_db, db) = setup_with(|config| config.slow_statement_threshold = None).await;
    db.session().query_rows("SELECT pg_sleep(0.3)", &[]).await.unwrap();
    assert!(!log.text().contains(SLOW), "no threshold, no warning: {}", log.text());
}

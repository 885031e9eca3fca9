//! Observability: a flush and each statement are tracing spans carrying what
//! they did, so a slow request can be read off its logs.

mod support;

use support::{customer, setup, Customer, LogBuffer};

#[tokio::test]
async fn flushes_and_statements_are_spans_with_their_sql_and_counts() {
    let (_test_db, db) = setup().await;
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
    assert_eq!(closed(r#"orm.statement{sql="INSERT INTO \"customer\""#), 1, "{text}");
    assert!(text.contains("rows=2"), "the insert's and the load's row counts: {text}");
    assert_eq!(
        closed(r#"orm.statement{sql="SELECT t.\"id\", t.\"name\", t.\"description\" FROM \"customer\" AS t"#),
        1,
        "{text}"
    );
}

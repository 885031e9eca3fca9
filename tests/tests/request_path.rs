//! The web request path: read-only work runs without `BEGIN`/`COMMIT`
//! whatever API it uses, and independent loads travel together in one
//! round trip.

mod support;

use std::future::Future;
use std::time::Duration;

use orm_core::{Expr, RawSql};
use support::{customer, setup, Customer, LogBuffer};

/// Runs a test body under a timeout: a pipelined batch that waited for an
/// answer never sent would hang.
async fn in_time<T>(body: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), body).await.expect("the test finished within 60 s")
}

/// How many statements named `name` (`BEGIN`, `COMMIT`) the log shows sent.
fn sent(log: &LogBuffer, name: &str) -> usize {
    let quoted = format!(r#"otel.name="{name}""#);
    log.text()
        .lines()
        .filter(|line| line.contains("close") && line.contains("orm.statement{") && line.contains(&quoted))
        .count()
}

async fn seeded(names: &[&str]) -> (orm_tests::TestDb, orm_core::Database) {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    session.add_all(names.iter().map(|name| customer(name)));
    session.commit().await.unwrap();
    (test_db, db)
}

#[tokio::test]
async fn reads_of_every_kind_send_no_begin_and_no_commit() {
    in_time(async {
        let (_test_db, db) = seeded(&["ann", "ben"]).await;
        let log = LogBuffer::default();
        let _guard = log.install_spans();

        let mut session = db.session();
        let all = session.query::<Customer>().all().await.unwrap();
        let count = session.query::<Customer>().count().await.unwrap();
        let names: Vec<String> = session.query::<Customer>().select(Customer::NAME).all().await.unwrap();
        let longest: Option<i32> = session
            .query::<Customer>()
            .select(Expr::<Customer, Option<i32>>::raw("max(length(name))", Vec::new()))
            .one()
            .await
            .unwrap();
        let raw = session.query_rows(RawSql::once("SELECT count(*) FROM customer").read_only(), &[]).await.unwrap();
        let raw_entities = session
            .query_raw::<Customer>(RawSql::cached("SELECT * FROM customer WHERE name = $1").read_only(), &[&"ann"])
            .await
            .unwrap();
        let stats = session.commit().await.unwrap();

        assert_eq!((all.len(), count, names.len(), longest, raw_entities.len()), (2, 2, 2, Some(3), 1));
        assert_eq!(raw[0].get::<_, i64>(0), 2);
        assert_eq!(stats.statements, 6);
        assert_eq!((sent(&log, "BEGIN"), sent(&log, "COMMIT")), (0, 0), "{}", log.text());
    })
    .await;
}

#[tokio::test]
async fn a_raw_statement_not_marked_read_only_still_opens_the_transaction() {
    in_time(async {
        let (_test_db, db) = seeded(&["ann"]).await;
        let log = LogBuffer::default();
        let _guard = log.install_spans();

        let mut session = db.session();
        session.query_rows("SELECT count(*) FROM customer", &[]).await.unwrap();
        session.commit().await.unwrap();
        // A row lock needs the transaction too.
        let mut session = db.session();
        session.query::<Customer>().for_update().all().await.unwrap();
        session.commit().await.unwrap();

        assert_eq!((sent(&log, "BEGIN"), sent(&log, "COMMIT")), (2, 2), "{}", log.text());
    })
    .await;
}

#[tokio::test]
async fn a_write_after_reads_is_one_transaction_begun_with_the_write() {
    in_time(async {
        let (test_db, db) = seeded(&["ann"]).await;
        let log = LogBuffer::default();
        let _guard = log.install_spans();

        let mut session = db.session();
        let ann = session.query::<Customer>().one().await.unwrap();
        session.query_rows(RawSql::once("SELECT 1").read_only(), &[]).await.unwrap();
        assert_eq!(sent(&log, "BEGIN"), 0, "reads alone open nothing");
        ann.write().description = Some("first".into());
        session.add(customer("ben"));
        session.flush().await.unwrap();
        // After the first write, reads (raw ones too) see the transaction's rows.
        let inside = session.query_rows(RawSql::once("SELECT count(*) FROM customer").read_only(), &[]).await.unwrap();
        assert_eq!(inside[0].get::<_, i64>(0), 2);
        session.execute("UPDATE customer SET description = 'raw' WHERE name = 'ben'", &[]).await.unwrap();
        session.commit().await.unwrap();

        assert_eq!((sent(&log, "BEGIN"), sent(&log, "COMMIT")), (1, 1), "{}", log.text());
        let client = test_db.client().await;
        let rows = client.query("SELECT name, description FROM customer ORDER BY id", &[]).await.unwrap();
        let found: Vec<(String, Option<String>)> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
        assert_eq!(found, [("ann".into(), Some("first".into())), ("ben".into(), Some("raw".into()))]);
    })
    .await;
}

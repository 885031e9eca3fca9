//! Raw SQL does not grow a connection's prepared-statement cache: text built
//! at run time is prepared for one run only, while the ORM's own statements
//! and raw statements marked `RawSql::cached` stay prepared.

mod support;

use std::time::Duration;

use orm_core::{RawSql, Session};
use support::{customer, setup_with, Customer};
use tokio::time::timeout;

/// Statements prepared on the session's connection, as the server sees
/// them, but for this query itself, which is prepared while it runs.
async fn prepared_on_server(session: &mut Session) -> i64 {
    let sql = "SELECT count(*) FROM pg_prepared_statements WHERE statement NOT LIKE '%pg_prepared_statements%'";
    session.query_rows(sql, &[]).await.unwrap()[0].get(0)
}

#[tokio::test]
async fn ten_thousand_distinct_raw_statements_leave_the_cache_as_the_orm_left_it() {
    // One connection, so every statement below runs on it.
    let (_test_db, db) = setup_with(|config| config.max_connections = 1).await;
    let mut session = db.session();
    session.add(customer("ann"));
    session.flush().await.unwrap();
    session.get::<Customer>(1).await.unwrap(); // from the identity map: no SQL
    session.query::<Customer>().filter(Customer::NAME.eq("ann")).all().await.unwrap();
    let orm_statements = prepared_on_server(&mut session).await;
    assert!(orm_statements >= 2, "the ORM's insert and query are cached: {orm_statements}");

    timeout(Duration::from_secs(300), async {
        for i in 0..10_000_i32 {
            // Each a named statement, closed after its run: without
            // parameters too, so that the driver learns the result's types
            // before the rows arrive.
            let rows = if i % 2 == 0 {
                session.query_rows(&format!("SELECT $1::int + {i}"), &[&1_i32]).await.unwrap()
            } else {
                session.query_rows(&format!("SELECT {i} + 1"), &[]).await.unwrap()
            };
            assert_eq!(rows[0].get::<_, i32>(0), i + 1);
        }
    })
    .await
    .expect("10,000 statements in bounded time");

    assert_eq!(prepared_on_server(&mut session).await, orm_statements, "raw statements stayed prepared");
    // The ORM's statement is still prepared: running it again is one round trip.
    let before = session.stats();
    session.query::<Customer>().filter(Customer::NAME.eq("bob")).all().await.unwrap();
    assert_eq!(session.stats().round_trips - before.round_trips, 1);
    session.commit().await.unwrap();

    // The client side of the cache did not grow either.
    let client = db.pool().get().await.unwrap();
    assert_eq!(i64::try_from(client.statement_cache.size()).unwrap(), orm_statements);
}

#[tokio::test]
async fn every_raw_method_leaves_nothing_prepared_and_says_what_it_cost() {
    let (_test_db, db) = setup_with(|config| config.max_connections = 1).await;
    let mut session = db.session();
    session.execute("INSERT INTO customer (name) VALUES ('ann'), ('bob')", &[]).await.unwrap();
    let before = prepared_on_server(&mut session).await;

    // Without parameters: one round trip, as with a cached statement.
    let stats = session.stats();
    session.execute("UPDATE customer SET description = 'x'", &[]).await.unwrap();
    assert_eq!(session.stats().round_trips - stats.round_trips, 1);

    // With parameters: one round trip to prepare, one to run.
    let stats = session.stats();
    assert_eq!(session.execute("UPDATE customer SET description = $1", &[&"y"]).await.unwrap(), 2);
    assert_eq!(session.stats().round_trips - stats.round_trips, 2);
    let rows = session.query_rows("SELECT name FROM customer WHERE id = $1", &[&1_i32]).await.unwrap();
    assert_eq!(rows[0].get::<_, String>(0), "ann");
    // Rows refer to their statement: it is closed once they are dropped.
    drop(rows);
    let found = session.query_raw::<Customer>("SELECT * FROM customer WHERE id = $1", &[&2_i32]).await.unwrap();
    assert_eq!(found[0].read().name, "bob");
    let plain = session.query_raw_untracked::<Customer>("SELECT * FROM customer ORDER BY id", &[]).await.unwrap();
    assert_eq!(plain.len(), 2);

    assert_eq!(prepared_on_server(&mut session).await, before);
}

#[tokio::test]
async fn a_cached_raw_statement_is_prepared_once_per_connection() {
    let (_test_db, db) = setup_with(|config| config.max_connections = 1).await;
    let mut session = db.session();
    let before = prepared_on_server(&mut session).await;
    let insert = RawSql::cached("INSERT INTO customer (name) VALUES ($1)");

    let stats = session.stats();
    session.execute(insert, &[&"ann"]).await.unwrap();
    assert_eq!(session.stats().round_trips - stats.round_trips, 2, "prepare, then run");
    let stats = session.stats();
    session.execute(insert, &[&"bob"]).await.unwrap();
    assert_eq!(session.stats().round_trips - stats.round_trips, 1, "already prepared");

    assert_eq!(prepared_on_server(&mut session).await, before + 1);
    session.commit().await.unwrap();
}

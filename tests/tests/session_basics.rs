//! Sessions: adding, loading through the identity map, change tracking.

mod support;

use orm_core::Tracked;
use support::{customer, setup, Customer};

#[tokio::test]
async fn commit_inserts_and_brings_back_generated_keys() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let alice = session.add(customer("alice"));
    let bob = session.add(customer("bob"));
    let stats = session.commit().await.expect("commit");
    assert_eq!(stats.statements, 1, "one batched INSERT");
    assert_ne!(alice.read().id, bob.read().id);

    let client = test_db.client().await;
    let rows = client.query("SELECT id, name FROM customer ORDER BY id", &[]).await.unwrap();
    let stored: Vec<(i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(stored, vec![(alice.read().id, "alice".to_owned()), (bob.read().id, "bob".to_owned())]);
}

#[tokio::test]
async fn get_returns_the_same_instance_without_sql_the_second_time() {
    let (test_db, db) = setup().await;
    test_db.client().await.batch_execute("INSERT INTO customer (name) VALUES ('carol')").await.unwrap();
    let mut session = db.session();
    let first = session.get_one::<Customer>(1).await.expect("first get");
    let after_first = session.stats();
    let second = session.get_one::<Customer>(1).await.expect("second get");
    assert!(Tracked::ptr_eq(&first, &second));
    assert_eq!(session.stats(), after_first, "the second get issues no SQL");
    assert_eq!(after_first.statements, 1);
    assert!(session.get::<Customer>(99).await.unwrap().is_none());
}

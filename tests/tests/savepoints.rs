//! Nested transactions: partial rollback with `begin_nested`, in the
//! database and in the session's memory.

mod support;

use support::{customer, setup, Customer};

async fn names_in_db(test_db: &orm_tests::TestDb) -> Vec<String> {
    let client = test_db.client().await;
    client.query("SELECT name FROM customer ORDER BY name", &[]).await.unwrap().iter().map(|r| r.get(0)).collect()
}

#[tokio::test]
async fn rolling_back_a_savepoint_undoes_only_its_work() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let kept = session.add(customer("kept"));
    let savepoint = session.begin_nested().await.unwrap();
    let kept_id = kept.read().id;
    assert_ne!(kept_id, 0, "begin_nested flushed the pending insert");

    let discarded = session.add(customer("discarded"));
    kept.write().description = Some("changed inside".to_owned());
    session.flush().await.unwrap();
    let discarded_id = discarded.read().id;
    session.rollback_nested(savepoint).await.unwrap();

    // In memory: the update is undone, the insert inside is pending again
    // (so expunge it before anything autoflushes it back in).
    assert_eq!(kept.read().description, None);
    assert!(session.expunge(&discarded), "the rolled-back insert is pending again");
    assert!(session.get::<Customer>(discarded_id).await.unwrap().is_none());
    session.commit().await.unwrap();
    assert_eq!(names_in_db(&test_db).await, ["kept"]);
    let client = test_db.client().await;
    let description: Option<String> = client.query_one("SELECT description FROM customer", &[]).await.unwrap().get(0);
    assert_eq!(description, None);
}

#[tokio::test]
async fn rolled_back_inserts_and_deletes_come_back_to_their_earlier_state() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let old = session.add(customer("old"));
    session.flush().await.unwrap();

    let savepoint = session.begin_nested().await.unwrap();
    session.delete(&old).unwrap();
    let new = session.add(customer("new"));
    session.flush().await.unwrap();
    session.rollback_nested(savepoint).await.unwrap();

    // The deleted entity is tracked again; the inserted one is pending again
    // and goes in with the commit.
    let again = session.get_one::<Customer>(old.read().id).await.unwrap();
    assert!(orm_core::Tracked::ptr_eq(&again, &old));
    session.commit().await.unwrap();
    assert_eq!(names_in_db(&test_db).await, ["new", "old"]);
    assert!(new.read().id > 0);
}

#[tokio::test]
async fn releasing_a_savepoint_keeps_its_work() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let outer = session.begin_nested().await.unwrap();
    session.add(customer("outer"));
    let inner = session.begin_nested().await.unwrap();
    session.add(customer("inner"));
    session.release_nested(inner).await.unwrap();
    session.release_nested(outer).await.unwrap();
    session.commit().await.unwrap();
    assert_eq!(names_in_db(&test_db).await, ["inner", "outer"]);
}

#[tokio::test]
async fn rolling_back_an_outer_savepoint_closes_the_inner_ones() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    session.add(customer("before"));
    let outer = session.begin_nested().await.unwrap();
    session.add(customer("outer"));
    let _inner = session.begin_nested().await.unwrap();
    let inner_added = session.add(customer("inner"));
    session.flush().await.unwrap();
    session.rollback_nested(outer).await.unwrap();
    // Both inserts since the outer savepoint are pending again; drop them.
    session.expunge(&inner_added);
    let pending_outer = session.query::<Customer>().filter(Customer::NAME.eq("outer")).all().await.unwrap();
    assert_eq!(pending_outer.len(), 1, "autoflush re-inserted the pending 'outer'");
    session.delete(&pending_outer[0]).unwrap();
    session.commit().await.unwrap();
    assert_eq!(names_in_db(&test_db).await, ["before"]);
}

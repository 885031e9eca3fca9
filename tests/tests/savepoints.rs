//! Nested transactions: partial rollback with `begin_nested`, in the
//! database and in the session's memory.

mod support;

use orm_core::{Database, Error, PendingChanges};
use support::blog::{self, Post, User};
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

    // In memory: the update is undone, and the entity inserted inside left
    // the session, as in SQLAlchemy: no row holds it and no commit inserts it.
    assert_eq!(kept.read().description, None);
    assert!(!session.expunge(&discarded), "the rolled-back insert is no longer tracked");
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

    // The deleted entity is tracked again; the inserted one left the session.
    let again = session.get_one::<Customer>(old.read().id).await.unwrap();
    assert!(orm_core::Tracked::ptr_eq(&again, &old));
    assert_eq!(session.pending().unwrap(), orm_core::PendingChanges::default());
    session.commit().await.unwrap();
    assert_eq!(names_in_db(&test_db).await, ["old"]);

    // Adding a copy inserts it again.
    let mut session = db.session();
    session.add(new.get());
    session.commit().await.unwrap();
    assert_eq!(names_in_db(&test_db).await, ["new", "old"]);
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
    // Both inserts since the outer savepoint left the session.
    assert!(!session.expunge(&inner_added));
    assert!(session.query::<Customer>().filter(Customer::NAME.eq("outer")).all().await.unwrap().is_empty());
    session.commit().await.unwrap();
    assert_eq!(names_in_db(&test_db).await, ["before"]);
}

#[tokio::test]
async fn a_parent_and_child_added_inside_a_rolled_back_savepoint_leave_the_session() {
    let test_db = orm_tests::TestDb::new().await;
    test_db.client().await.batch_execute(blog::SCHEMA).await.unwrap();
    let db = Database::connect(test_db.url()).unwrap();
    let mut session = db.session();
    let ann = session.add(blog::user("ann"));
    let savepoint = session.begin_nested().await.unwrap();
    let bob = session.add(blog::user("bob"));
    let post = session.add(blog::post(0, "by bob"));
    session.set_parent(&post, Post::AUTHOR, &bob).unwrap();
    session.flush().await.unwrap();
    assert_eq!(post.read().author_id, bob.read().id);
    session.rollback_nested(savepoint).await.unwrap();

    // Nothing pending is left pointing at the rows that are gone: the
    // commit neither fails on the foreign key nor writes them.
    assert_eq!(session.pending().unwrap(), PendingChanges::default());
    let ann_id = ann.read().id;
    session.commit().await.unwrap();
    let client = test_db.client().await;
    let users: Vec<i64> = client.query("SELECT id FROM users", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(users, [ann_id]);
    assert_eq!(client.query_one("SELECT count(*) FROM post", &[]).await.unwrap().get::<_, i64>(0), 0);
}

#[tokio::test]
async fn a_child_added_inside_under_a_parent_added_outside_leaves_with_the_savepoint() {
    let test_db = orm_tests::TestDb::new().await;
    test_db.client().await.batch_execute(blog::SCHEMA).await.unwrap();
    let db = Database::connect(test_db.url()).unwrap();
    let mut session = db.session();
    let ann = session.add(blog::user("ann"));
    let savepoint = session.begin_nested().await.unwrap();
    let post = session.add(blog::post(0, "draft"));
    session.set_parent(&post, Post::AUTHOR, &ann).unwrap();
    session.load_children::<Post, User>(std::slice::from_ref(&ann), Post::AUTHOR).await.unwrap();
    assert_eq!(session.children(&ann, Post::AUTHOR).unwrap().len(), 1);
    session.rollback_nested(savepoint).await.unwrap();

    assert!(session.children(&ann, Post::AUTHOR).unwrap().is_empty(), "the post left the session");
    assert!(!session.expunge(&post));
    session.commit().await.unwrap();
    let client = test_db.client().await;
    assert_eq!(client.query_one("SELECT count(*) FROM users", &[]).await.unwrap().get::<_, i64>(0), 1);
    assert_eq!(client.query_one("SELECT count(*) FROM post", &[]).await.unwrap().get::<_, i64>(0), 0);
}

#[tokio::test]
async fn a_savepoint_of_another_session_or_an_outer_level_already_closed_is_refused() {
    let (test_db, db) = setup().await;
    let mut first = db.session();
    let mut second = db.session();
    first.add(customer("first"));
    second.add(customer("second"));
    let first_savepoint = first.begin_nested().await.unwrap();
    let second_savepoint = second.begin_nested().await.unwrap();
    second.add(customer("second, inside"));

    // A savepoint of another session, at the same depth, changes nothing.
    assert!(matches!(first.rollback_nested(second_savepoint).await, Err(Error::SavepointNotOpen)));
    // An inner savepoint closed by its outer one is refused, and the
    // session stays usable (PostgreSQL would end it with 3B001).
    let inner = first.begin_nested().await.unwrap();
    first.add(customer("first, inner"));
    first.rollback_nested(first_savepoint).await.unwrap();
    assert!(matches!(first.rollback_nested(inner).await, Err(Error::SavepointNotOpen)));
    let of_second = second.begin_nested().await.unwrap();
    assert!(matches!(first.release_nested(of_second).await, Err(Error::SavepointNotOpen)));

    first.commit().await.unwrap();
    second.commit().await.unwrap();
    assert_eq!(names_in_db(&test_db).await, ["first", "second", "second, inside"]);
}

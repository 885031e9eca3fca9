//! Loading with the typed query builder: filters, ordering, paging, counting,
//! and untracked loads.

mod support;

use orm_core::{Database, Tracked};
use support::{setup, Customer};

async fn seeded() -> (orm_tests::TestDb, Database) {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    for (name, description) in
        [("alice", Some("admin")), ("bob", None), ("carol", Some("user")), ("dave", None), ("erin", Some("user"))]
    {
        session.add(Customer { id: 0, name: name.into(), description: description.map(Into::into) });
    }
    session.commit().await.unwrap();
    (test_db, db)
}

fn names(found: &[Tracked<Customer>]) -> Vec<String> {
    found.iter().map(|t| t.read().name.clone()).collect()
}

#[tokio::test]
async fn comparison_filters() {
    let (_test_db, db) = seeded().await;
    let mut session = db.session();
    let by_id = |ids: Vec<Tracked<Customer>>| names(&ids);
    let q = session.query::<Customer>().filter(Customer::NAME.eq("bob")).all().await.unwrap();
    assert_eq!(by_id(q), ["bob"]);
    let q = session.query::<Customer>().filter(Customer::ID.lt(3)).order_by(Customer::ID.asc()).all().await.unwrap();
    assert_eq!(by_id(q), ["alice", "bob"]);
    let q = session.query::<Customer>().filter(Customer::ID.le(2)).order_by(Customer::ID.desc()).all().await.unwrap();
    assert_eq!(by_id(q), ["bob", "alice"]);
    let q = session.query::<Customer>().filter(Customer::ID.gt(4)).all().await.unwrap();
    assert_eq!(by_id(q), ["erin"]);
    let q = session.query::<Customer>().filter(Customer::ID.ge(4)).order_by(Customer::ID.asc()).all().await.unwrap();
    assert_eq!(by_id(q), ["dave", "erin"]);
    let q = session.query::<Customer>().filter(Customer::ID.ne(1)).all().await.unwrap();
    assert_eq!(q.len(), 4);
}

#[tokio::test]
async fn null_like_and_boolean_combinations() {
    let (_test_db, db) = seeded().await;
    let mut session = db.session();
    let ordered = || Customer::NAME.asc();
    let q = session.query::<Customer>().filter(Customer::DESCRIPTION.is_null()).order_by(ordered()).all().await;
    assert_eq!(names(&q.unwrap()), ["bob", "dave"]);
    let q = session.query::<Customer>().filter(Customer::DESCRIPTION.is_not_null()).order_by(ordered()).all().await;
    assert_eq!(names(&q.unwrap()), ["alice", "carol", "erin"]);
    let q = session.query::<Customer>().filter(Customer::NAME.like("%e%")).order_by(ordered()).all().await;
    assert_eq!(names(&q.unwrap()), ["alice", "dave", "erin"]);
    // A nullable column compares with a plain value.
    let users = Customer::DESCRIPTION.eq("user");
    let q = session.query::<Customer>().filter(users.and(Customer::ID.gt(3))).all().await;
    assert_eq!(names(&q.unwrap()), ["erin"]);
    let either = Customer::NAME.eq("alice").or(Customer::NAME.eq("bob")).or(Customer::NAME.eq("zed"));
    let q = session.query::<Customer>().filter(either).order_by(ordered()).all().await;
    assert_eq!(names(&q.unwrap()), ["alice", "bob"]);
    let q = session.query::<Customer>().filter(Customer::NAME.like("%e%").not()).order_by(ordered()).all().await;
    assert_eq!(names(&q.unwrap()), ["bob", "carol"]);
    // Two filters must both hold.
    let q = session
        .query::<Customer>()
        .filter(Customer::DESCRIPTION.is_null())
        .filter(Customer::NAME.eq("dave"))
        .all()
        .await;
    assert_eq!(names(&q.unwrap()), ["dave"]);
}

#[tokio::test]
async fn order_limit_offset_first_and_count() {
    let (_test_db, db) = seeded().await;
    let mut session = db.session();
    let page = session
        .query::<Customer>()
        .order_by(Customer::DESCRIPTION.asc())
        .order_by(Customer::NAME.desc())
        .limit(2)
        .offset(1)
        .all()
        .await
        .unwrap();
    // NULLs sort last ascending: admin(alice), user(erin, carol), null(dave, bob).
    assert_eq!(names(&page), ["erin", "carol"]);
    let first = session.query::<Customer>().order_by(Customer::NAME.desc()).first().await.unwrap();
    assert_eq!(first.map(|t| t.read().name.clone()), Some("erin".to_owned()));
    let none = session.query::<Customer>().filter(Customer::NAME.eq("nobody")).first().await.unwrap();
    assert!(none.is_none());
    let users = session.query::<Customer>().filter(Customer::DESCRIPTION.eq("user")).limit(1).count().await.unwrap();
    assert_eq!(users, 2, "count ignores limit");
}

#[tokio::test]
async fn untracked_loads_bypass_the_identity_map() {
    let (_test_db, db) = seeded().await;
    let mut session = db.session();
    let alice = session.get_one::<Customer>(1).await.unwrap();
    alice.write().name = "alice (edited)".to_owned();
    session.set_autoflush(false);
    let plain: Vec<Customer> =
        session.query::<Customer>().order_by(Customer::ID.asc()).untracked().all().await.unwrap();
    assert_eq!(plain.len(), 5);
    assert_eq!(plain[0].name, "alice", "untracked rows are the database's values");
    // Untracked rows are not tracked: the next get of another key still needs SQL.
    let before = session.stats().statements;
    session.get_one::<Customer>(2).await.unwrap();
    assert_eq!(session.stats().statements - before, 1);
}

#[tokio::test]
async fn the_statement_text_depends_on_the_shape_not_the_values() {
    let (_test_db, db) = support::setup_with(|config| config.max_connections = 1).await;
    let mut session = db.session();
    for name in ["a", "b", "c"] {
        session.query::<Customer>().filter(Customer::NAME.eq(name)).limit(10).all().await.unwrap();
    }
    let rows = session
        .query_rows("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE 'SELECT t.%LIMIT%'", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 1);
}

#[tokio::test]
async fn in_between_and_ilike() {
    let (_test_db, db) = seeded().await;
    let mut session = db.session();
    let q = session.query::<Customer>().filter(Customer::ID.is_in([5, 1, 3])).order_by(Customer::ID.asc()).all().await;
    assert_eq!(names(&q.unwrap()), ["alice", "carol", "erin"]);
    let q = session.query::<Customer>().filter(Customer::NAME.is_in(["bob", "nobody"])).all().await;
    assert_eq!(names(&q.unwrap()), ["bob"]);
    let none: [i32; 0] = [];
    assert!(session.query::<Customer>().filter(Customer::ID.is_in(none)).all().await.unwrap().is_empty());
    let q = session.query::<Customer>().filter(Customer::ID.between(2, 4)).order_by(Customer::ID.asc()).all().await;
    assert_eq!(names(&q.unwrap()), ["bob", "carol", "dave"]);
    let q = session.query::<Customer>().filter(Customer::NAME.ilike("A%")).all().await;
    assert_eq!(names(&q.unwrap()), ["alice"]);
}

#[tokio::test]
async fn in_takes_a_hundred_thousand_values_as_one_parameter() {
    let (_test_db, db) = seeded().await;
    let mut session = db.session();
    let ids: Vec<i32> = (1..=100_000).collect();
    let found = session.query::<Customer>().filter(Customer::ID.is_in(ids)).count().await.unwrap();
    assert_eq!(found, 5);
    assert_eq!(session.stats().statements, 1);
}

/// `eq(None)` and `ne(None)` of a nullable expression test for NULL, as
/// `IS NULL` and `IS NOT NULL`: `= NULL` never holds, and matched no row.
/// (A nullable column compares with its values' type; `is_null()` tests
/// it for NULL.)
#[tokio::test]
async fn comparing_with_none_tests_for_null() {
    let (_test_db, db) = seeded().await;
    let mut session = db.session();
    let user = || Some("user".to_owned());
    for (condition, expected) in [
        (Customer::DESCRIPTION.nullable().eq(None), 2),
        (Customer::DESCRIPTION.nullable().ne(None), 3),
        (Customer::NAME.nullable().ne(None), 5),
        (Customer::DESCRIPTION.nullable().eq(user()), 2),
        (Customer::DESCRIPTION.nullable().ne(user()), 1),
    ] {
        assert_eq!(session.query::<Customer>().filter(condition).count().await.unwrap(), expected);
    }
}

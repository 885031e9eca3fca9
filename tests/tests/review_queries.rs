//! Regression tests for problems found in review of expressions, selects,
//! DISTINCT ON, set-based updates and deletes, upserts and joins.

use orm_core::{Condition, Database, Entity, Error, Expr};
use orm_tests::TestDb;

#[derive(Entity, Clone, Debug, PartialEq)]
struct Item {
    #[orm(primary_key, generated)]
    id: i64,
    name: String,
    price: i32,
    note: Option<String>,
}

#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "users")]
struct User {
    #[orm(primary_key, generated)]
    id: i64,
    name: String,
}

#[derive(Entity, Clone, Debug, PartialEq)]
struct Post {
    #[orm(primary_key, generated)]
    id: i64,
    #[orm(references = User)]
    author_id: Option<i64>,
    title: String,
}

#[derive(Entity, Clone, Debug, PartialEq)]
struct Pair {
    #[orm(primary_key)]
    a: i32,
    #[orm(primary_key)]
    b: i32,
    v: i32,
}

async fn setup() -> (TestDb, Database) {
    let test_db = TestDb::new().await;
    test_db
        .client()
        .await
        .batch_execute(
            "CREATE TABLE item (id bigserial PRIMARY KEY, name text NOT NULL, price int NOT NULL, note text);
             INSERT INTO item (name, price, note) VALUES ('tea', 4, NULL), ('jam', 5, 'x'), ('$1', 6, NULL), ('scones', 6, 'y');
             CREATE TABLE users (id bigserial PRIMARY KEY, name text NOT NULL);
             CREATE TABLE post (id bigserial PRIMARY KEY, author_id bigint REFERENCES users, title text NOT NULL);
             INSERT INTO users (name) VALUES ('ann'), ('bob');
             INSERT INTO post (author_id, title) VALUES (2, 'hello'), (1, 'hi'), (NULL, 'anon');
             CREATE TABLE pair (a int, b int, v int NOT NULL, PRIMARY KEY (a, b));
             INSERT INTO pair VALUES (1, 1, 10), (1, 2, 20), (2, 1, 30);",
        )
        .await
        .unwrap();
    let db = Database::connect(test_db.url()).unwrap();
    (test_db, db)
}

/// A raw fragment referring to `$2` with one parameter of its own silently
/// read another clause's parameter (here the filter's 0): it must fail.
#[tokio::test]
async fn raw_fragment_reference_beyond_its_params_is_an_error() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    let result: orm_core::Result<Vec<i32>> = session
        .query::<Item>()
        .select(Expr::<Item, i32>::raw("$1::int4 + $2::int4", vec![Box::new(1_i32)]))
        .filter(Item::PRICE.gt(0))
        .all()
        .await;
    assert!(result.is_err(), "bound another clause's parameter: {result:?}");
}

/// `$1` inside a string literal of a raw fragment is text, not a parameter.
#[tokio::test]
async fn raw_fragment_leaves_string_literals_alone() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    let found = session
        .query::<Item>()
        .filter(Item::PRICE.gt(0))
        .filter(Condition::raw(
            "t.name = '$1' OR t.name = $$$1$$ OR t.\"name\" = $1",
            vec![Box::new("none".to_owned())],
        ))
        .count()
        .await
        .unwrap();
    assert_eq!(found, 1);
}

/// With a limit, a set-based update named its table `target`, so a raw
/// fragment in SET written against `t`, as documented, failed.
#[tokio::test]
async fn limited_bulk_update_with_raw_fragment_refers_to_t() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let updated = session
        .query::<Item>()
        .filter(Item::PRICE.eq(6))
        .order_by(Item::ID.asc())
        .limit(1)
        .update([Item::PRICE.set(Expr::raw("t.price + $1", vec![Box::new(100_i32)]))])
        .await
        .unwrap();
    assert_eq!(updated, 1);
    session.commit().await.unwrap();
    let row = test_db.client().await.query_one("SELECT price FROM item WHERE name = '$1'", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 106);
}

/// Bulk update with a limit and parameters in SET and WHERE, and a limited
/// delete, on a composite key.
#[tokio::test]
async fn limited_bulk_update_and_delete_on_composite_key() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let updated = session
        .query::<Pair>()
        .filter(Pair::A.eq(1))
        .order_by(Pair::B.desc())
        .limit(1)
        .update([Pair::V.set(Pair::V + 5)])
        .await
        .unwrap();
    assert_eq!(updated, 1);
    let deleted =
        session.query::<Pair>().filter(Pair::V.gt(15)).order_by(Pair::V.asc()).limit(1).delete().await.unwrap();
    assert_eq!(deleted, 1);
    session.commit().await.unwrap();
    let rows = test_db.client().await.query("SELECT a, b, v FROM pair ORDER BY a, b", &[]).await.unwrap();
    let rows: Vec<(i32, i32, i32)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    assert_eq!(rows, [(1, 1, 10), (2, 1, 30)]);
}

/// `optional()` on a select ignored a smaller limit and reported two rows.
#[tokio::test]
async fn select_optional_keeps_a_smaller_limit() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    let found = session.query::<Item>().select(Item::NAME).order_by(Item::ID.asc()).limit(1).optional().await;
    assert_eq!(found.unwrap(), Some("tea".to_owned()));
}

/// Every clause carrying parameters, in text order.
#[tokio::test]
async fn parameters_in_every_clause_are_numbered_in_text_order() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    let rows: Vec<(String, i64)> = session
        .query::<Item>()
        .select((Item::NAME.coalesce("?"), Expr::<Item, i64>::raw("count(*) + $1", vec![Box::new(1000_i64)])))
        .filter(Condition::raw("t.price >= $1", vec![Box::new(5_i32)]).and(Item::NAME.ne("zzz")))
        .group_by(Item::NAME)
        .having(Item::PRICE.sum().ge(Some(5)).or(Expr::count_all().gt(100)))
        .order_by(Expr::<Item, i32>::raw("length(t.name) * $1", vec![Box::new(-1_i32)]).max().asc().nulls_last())
        .limit(2)
        .offset(1)
        .all()
        .await
        .unwrap();
    assert_eq!(rows, [("jam".to_owned(), 1001), ("$1".to_owned(), 1001)]);
}

/// `count()` with DISTINCT ON and a filter with parameters.
#[tokio::test]
async fn count_with_distinct_on_and_filter() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    let count = session
        .query::<Item>()
        .distinct_on(Item::PRICE)
        .filter(Item::NAME.ne("tea"))
        .order_by(Item::PRICE.asc())
        .order_by(Item::NAME.desc())
        .count()
        .await
        .unwrap();
    assert_eq!(count, 2);
}

/// Grouping and sorting by a selected expression that holds a value: each
/// rendering got its own `$n`, which PostgreSQL does not see as the same
/// expression, so GROUP BY and ORDER BY now name it by position.
#[tokio::test]
async fn group_by_an_expression_with_a_value() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    let doubled = Item::PRICE * 2;
    let rows: Vec<(i32, i64)> = session
        .query::<Item>()
        .select((doubled.clone(), Expr::count_all()))
        .group_by(doubled.clone())
        .order_by(doubled.asc())
        .all()
        .await
        .unwrap();
    assert_eq!(rows, [(8, 1), (10, 1), (12, 2)]);
}

/// A nullable column selected without `.nullable()`: a Decode error, not a panic.
#[tokio::test]
async fn nullable_column_without_nullable_is_a_decode_error() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    let result = session.query::<Item>().select(Item::NOTE).all().await;
    assert!(matches!(result, Err(Error::Decode { .. })), "{result:?}");
    let notes: Vec<Option<String>> =
        session.query::<Item>().select(Item::NOTE.nullable()).order_by(Item::ID.asc()).all().await.unwrap();
    assert_eq!(notes, [None, Some("x".to_owned()), None, Some("y".to_owned())]);
}

/// A left join filtered on the parent, with parameters on both sides.
#[tokio::test]
async fn left_join_with_parent_filter() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    let rows = session
        .query::<Post>()
        .left_join(Post::AUTHOR)
        .filter(Post::TITLE.ne("zzz"))
        .filter_parent(User::NAME.eq("ann").or(User::ID.is_null()))
        .order_by(Post::ID.asc())
        .all()
        .await
        .unwrap();
    let found: Vec<(String, Option<String>)> =
        rows.iter().map(|(p, u)| (p.read().title.clone(), u.as_ref().map(|u| u.read().name.clone()))).collect();
    assert_eq!(found, [("hi".to_owned(), Some("ann".to_owned())), ("anon".to_owned(), None)]);
}

/// A raw condition on the joined parent: `t` named the child's table, so
/// `t.id` filtered on the post's id, silently.
#[tokio::test]
async fn raw_condition_on_joined_parent() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    let rows = session
        .query::<Post>()
        .join(Post::AUTHOR)
        .filter_parent(Condition::raw("t.id = $1", vec![Box::new(1_i64)]))
        .all()
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1.read().name, "ann");
}

/// Raw fragments across a relation name the related table `t`, and a
/// negated one keeps the meaning of NOT EXISTS although a post has no author.
#[tokio::test]
async fn raw_conditions_across_a_relation_name_the_related_table() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    let by_ann = session
        .query::<Post>()
        .filter(Post::AUTHOR.has(Condition::raw("t.name = $1", vec![Box::new("ann")])))
        .all()
        .await
        .unwrap();
    let titles: Vec<String> = by_ann.iter().map(|post| post.read().title.clone()).collect();
    assert_eq!(titles, ["hi"]);

    // Not by ann: the post without an author too, as with a typed
    // condition (its NULL key made the raw form's IN NULL, and NOT of it).
    for not_by_ann in [
        Post::AUTHOR.has(Condition::raw("t.name = $1", vec![Box::new("ann")])).not(),
        Post::AUTHOR.has(User::NAME.eq("ann")).not(),
    ] {
        let found = session.query::<Post>().filter(not_by_ann).order_by(Post::TITLE.asc()).all().await.unwrap();
        let titles: Vec<String> = found.iter().map(|post| post.read().title.clone()).collect();
        assert_eq!(titles, ["anon", "hello"]);
    }

    let said_hi = || Post::AUTHOR.any(Condition::raw("t.title = $1", vec![Box::new("hi")]));
    let quiet = session.query::<User>().filter(said_hi().not()).all().await.unwrap();
    let names: Vec<String> = quiet.iter().map(|user| user.read().name.clone()).collect();
    assert_eq!(names, ["bob"]);
    assert_eq!(session.query::<User>().filter(said_hi()).count().await.unwrap(), 1);
}

/// DISTINCT ON an expression holding a value, ordered by the same
/// expression: its value travels once, so PostgreSQL sees one expression.
#[tokio::test]
async fn distinct_on_an_expression_with_a_value_matches_the_order() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    let noted = Item::NOTE.coalesce("none");
    let rows = session
        .query::<Item>()
        .distinct_on(noted.clone())
        .order_by(noted.clone().asc())
        .order_by(Item::PRICE.desc())
        .all()
        .await
        .unwrap();
    let names: Vec<String> = rows.iter().map(|item| item.read().name.clone()).collect();
    assert_eq!(names, ["$1", "jam", "scones"]);

    let distinct_notes = session
        .query::<Item>()
        .distinct_on(noted.clone())
        .select(noted.clone())
        .distinct()
        .order_by(noted.asc())
        .all()
        .await
        .unwrap();
    assert_eq!(distinct_notes, ["none", "x", "y"]);
}

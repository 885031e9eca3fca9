//! The query API beyond `all`: `one`, `optional`, `exists` and untracked
//! `first`/`one`/`optional`; raw SQL mapped to entities (`query_raw`) with
//! identity-map semantics and column checking; and the N+1 guard that
//! notices one load statement sent over and over in a session.

mod support;

use orm_core::{Database, Error, NPlusOne, Tracked};
use support::{customer, setup, setup_with, Customer, LogBuffer};

/// Five customers, ids 1 to 5; bob and dave have no description.
async fn seed(db: &Database) {
    let mut session = db.session();
    for (name, description) in
        [("alice", Some("admin")), ("bob", None), ("carol", Some("user")), ("dave", None), ("erin", Some("user"))]
    {
        session.add(Customer { id: 0, name: name.into(), description: description.map(Into::into) });
    }
    session.commit().await.unwrap();
}

/// `count` customers named `customer 1` to `customer {count}`, ids 1 to `count`.
async fn seed_many(test_db: &orm_tests::TestDb, count: i32) {
    let client = test_db.client().await;
    client
        .execute("INSERT INTO customer (name) SELECT 'customer ' || i FROM generate_series(1, $1) AS i", &[&count])
        .await
        .unwrap();
}

#[tokio::test]
async fn one_returns_the_only_match() {
    let (_test_db, db) = setup().await;
    seed(&db).await;
    let mut session = db.session();
    let bob = session.query::<Customer>().filter(Customer::NAME.eq("bob")).one().await.unwrap();
    assert_eq!((bob.read().id, bob.read().name.as_str()), (2, "bob"));
    assert_eq!(session.stats().statements, 1);
    // Tracked: the same instance as a later get, which costs no statement.
    let again = session.get_one::<Customer>(2).await.unwrap();
    assert!(Tracked::ptr_eq(&bob, &again));
    assert_eq!(session.stats().statements, 1);
}

#[tokio::test]
async fn one_without_a_match_is_not_found_naming_the_filter_not_its_values() {
    let (_test_db, db) = setup().await;
    seed(&db).await;
    let mut session = db.session();
    let error = session.query::<Customer>().filter(Customer::NAME.eq("zed")).one().await.expect_err("no such row");
    let Error::NotFound { entity, key } = &error else { panic!("expected NotFound, got {error:?}") };
    assert_eq!(*entity, "Customer");
    assert_eq!(key, r#"WHERE t."name" = $1"#);
    assert!(!error.to_string().contains("zed"), "values stay out of messages: {error}");

    let error = session.query::<Customer>().filter(Customer::ID.gt(100)).untracked().one().await.unwrap_err();
    assert!(matches!(error, Error::NotFound { entity: "Customer", .. }), "{error:?}");
    // A miss is not a failure: the session goes on.
    session.commit().await.unwrap();
}

#[tokio::test]
async fn one_with_several_matches_is_an_error_and_reads_only_two_rows() {
    let (_test_db, db) = setup().await;
    seed(&db).await;
    let mut session = db.session();
    // Three customers have a description.
    let error = session.query::<Customer>().filter(Customer::DESCRIPTION.is_not_null()).one().await.unwrap_err();
    assert!(matches!(error, Error::MultipleRows { entity: "Customer" }), "{error:?}");
    let stats = session.stats();
    assert_eq!((stats.statements, stats.rows), (1, 2), "LIMIT 2, whatever the number of matches");

    let error = session.query::<Customer>().filter(Customer::DESCRIPTION.is_not_null()).optional().await.unwrap_err();
    assert!(matches!(error, Error::MultipleRows { entity: "Customer" }), "{error:?}");
    let error = session.query::<Customer>().untracked().one().await.unwrap_err();
    assert!(matches!(error, Error::MultipleRows { .. }), "{error:?}");
    let error = session.query::<Customer>().untracked().optional().await.unwrap_err();
    assert!(matches!(error, Error::MultipleRows { .. }), "{error:?}");

    // The rows read by the failed calls were not tracked: loading alice sends a statement.
    let before = session.stats().statements;
    session.get_one::<Customer>(1).await.unwrap();
    assert_eq!(session.stats().statements, before + 1);
    session.commit().await.unwrap();
}

#[tokio::test]
async fn one_honours_a_smaller_limit_and_the_offset() {
    let (_test_db, db) = setup().await;
    seed(&db).await;
    let mut session = db.session();
    // The last row by id, reached through the offset: exactly one remains.
    let erin = session.query::<Customer>().order_by(Customer::ID.asc()).offset(4).one().await.unwrap();
    assert_eq!(erin.read().name, "erin");
    // limit(1) asks for the first of many, which one() then accepts.
    let first = session.query::<Customer>().order_by(Customer::ID.asc()).limit(1).one().await.unwrap();
    assert_eq!(first.read().name, "alice");
}

#[tokio::test]
async fn optional_returns_none_or_the_only_match() {
    let (_test_db, db) = setup().await;
    seed(&db).await;
    let mut session = db.session();
    let none = session.query::<Customer>().filter(Customer::NAME.eq("zed")).optional().await.unwrap();
    assert!(none.is_none());
    let carol = session.query::<Customer>().filter(Customer::NAME.ilike("CAROL")).optional().await.unwrap();
    let carol = carol.expect("carol matches");
    assert!(Tracked::ptr_eq(&carol, &session.get_one::<Customer>(3).await.unwrap()));

    let dave = session.query::<Customer>().filter(Customer::NAME.eq("dave")).untracked().optional().await.unwrap();
    assert_eq!(dave.map(|d| d.id), Some(4));
    assert_eq!(session.stats().statements, 3);
}

#[tokio::test]
async fn a_query_result_keeps_the_unflushed_changes_of_tracked_instances() {
    let (_test_db, db) = setup().await;
    seed(&db).await;
    let mut session = db.session();
    session.set_autoflush(false);
    let bob = session.get_one::<Customer>(2).await.unwrap();
    bob.write().description = Some("changed, not flushed".into());

    let found = session.query::<Customer>().filter(Customer::NAME.eq("bob")).one().await.unwrap();
    assert!(Tracked::ptr_eq(&found, &bob));
    assert_eq!(found.read().description.as_deref(), Some("changed, not flushed"));
    let found = session.query::<Customer>().filter(Customer::ID.eq(2)).optional().await.unwrap().unwrap();
    assert!(Tracked::ptr_eq(&found, &bob));
    assert!(bob.is_modified());
}

#[tokio::test]
async fn exists_sends_one_statement_and_one_row() {
    let (_test_db, db) = setup().await;
    seed(&db).await;
    let mut session = db.session();
    assert!(session.query::<Customer>().filter(Customer::DESCRIPTION.eq("user")).exists().await.unwrap());
    assert!(!session.query::<Customer>().filter(Customer::NAME.eq("zed")).exists().await.unwrap());
    let stats = session.stats();
    assert_eq!((stats.statements, stats.rows), (2, 2));

    // Limit and offset are part of the question: is there a fifth row, a sixth?
    assert!(session.query::<Customer>().order_by(Customer::ID.asc()).offset(4).exists().await.unwrap());
    assert!(!session.query::<Customer>().offset(5).exists().await.unwrap());
    assert!(!session.query::<Customer>().limit(0).exists().await.unwrap());
}

#[tokio::test]
async fn exists_sees_pending_inserts_through_autoflush() {
    let (_test_db, db) = setup().await;
    let mut session = db.session();
    assert!(!session.query::<Customer>().exists().await.unwrap());
    session.add(customer("frank"));
    assert!(session.query::<Customer>().filter(Customer::NAME.eq("frank")).exists().await.unwrap());
}

#[tokio::test]
async fn untracked_first_returns_a_plain_value() {
    let (_test_db, db) = setup().await;
    seed(&db).await;
    let mut session = db.session();
    let last = session.query::<Customer>().order_by(Customer::ID.desc()).untracked().first().await.unwrap();
    assert_eq!(last.map(|c| c.name), Some("erin".to_owned()));
    let none = session.query::<Customer>().filter(Customer::ID.gt(100)).untracked().first().await.unwrap();
    assert_eq!(none, None);
    // Not tracked: getting erin sends a statement.
    let before = session.stats().statements;
    session.get_one::<Customer>(5).await.unwrap();
    assert_eq!(session.stats().statements, before + 1);
}

#[tokio::test]
async fn query_raw_goes_through_the_identity_map_and_refreshes_what_it_tracks() {
    let (_test_db, db) = setup().await;
    seed(&db).await;
    let mut session = db.session();
    let alice = session.get_one::<Customer>(1).await.unwrap();
    alice.write().description = Some("flushed first".into());

    let ids: Vec<i32> = vec![1, 2];
    let found = session
        .query_raw::<Customer>("SELECT id, name, description FROM customer WHERE id = ANY($1) ORDER BY id", &[&ids])
        .await
        .unwrap();
    assert_eq!(found.len(), 2);
    assert!(Tracked::ptr_eq(&found[0], &alice), "a tracked key returns its instance");
    assert_eq!(found[0].read().description.as_deref(), Some("flushed first"), "autoflush wrote it before");
    assert!(!alice.is_modified());
    assert_eq!(found[1].read().name, "bob");
    // Bob is tracked now: getting him costs nothing.
    let statements = session.stats().statements;
    assert!(Tracked::ptr_eq(&session.get_one::<Customer>(2).await.unwrap(), &found[1]));
    assert_eq!(session.stats().statements, statements);

    session.commit().await.unwrap();
    let mut check = db.session();
    assert_eq!(check.get_one::<Customer>(1).await.unwrap().read().description.as_deref(), Some("flushed first"));
}

#[tokio::test]
async fn query_raw_autoflushes_and_runs_in_the_sessions_transaction() {
    let (test_db, db) = setup().await;
    seed(&db).await;
    let mut session = db.session();
    session.add(customer("frank"));
    let named = session
        .query_raw::<Customer>("SELECT * FROM customer WHERE name = $1", &[&"frank"])
        .await
        .expect("the pending insert was flushed first");
    assert_eq!(named.len(), 1);

    // A raw UPDATE ... RETURNING is part of the unit of work: dropping the
    // session undoes it.
    let updated = session
        .query_raw::<Customer>(
            "UPDATE customer SET description = 'raw' WHERE id <= 2 RETURNING id, name, description",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(updated.len(), 2);
    drop(session);
    let raw: i64 = test_db
        .client()
        .await
        .query_one("SELECT count(*) FROM customer WHERE description = 'raw' OR name = 'frank'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(raw, 0);
}

#[tokio::test]
async fn query_raw_untracked_returns_plain_values() {
    let (_test_db, db) = setup().await;
    seed(&db).await;
    let mut session = db.session();
    let users = session
        .query_raw_untracked::<Customer>(
            "SELECT id, name, description FROM customer WHERE description = $1 ORDER BY id",
            &[&"user"],
        )
        .await
        .unwrap();
    let names: Vec<&str> = users.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["carol", "erin"]);
    let before = session.stats().statements;
    session.get_one::<Customer>(3).await.unwrap();
    assert_eq!(session.stats().statements, before + 1, "not tracked");
}

#[tokio::test]
async fn query_raw_refuses_columns_that_do_not_match_the_entity() {
    let (_test_db, db) = setup().await;
    seed(&db).await;
    let mut session = db.session();
    let cases: [(&str, &[&str]); 4] = [
        ("SELECT name, id, description FROM customer", &["name", "id", "description"]),
        ("SELECT id, name FROM customer", &["id", "name"]),
        ("SELECT id, name, description, 1 AS extra FROM customer", &["id", "name", "description", "extra"]),
        // No rows at all: the statement's columns are checked, not the rows'.
        ("SELECT id, name AS title, description FROM customer WHERE false", &["id", "title", "description"]),
    ];
    for (sql, columns) in cases {
        let error = session.query_raw::<Customer>(sql, &[]).await.expect_err(sql);
        let Error::ColumnMismatch { entity, expected, found } = &error else {
            panic!("expected ColumnMismatch for {sql}, got {error:?}")
        };
        assert_eq!(*entity, "Customer");
        assert_eq!(expected, &["id", "name", "description"]);
        assert_eq!(found, columns);
        let message = error.to_string();
        assert!(message.contains("expected (id, name, description)"), "{message}");
    }
    let error = session.query_raw_untracked::<Customer>("SELECT name, id, description FROM customer", &[]).await;
    assert!(matches!(error, Err(Error::ColumnMismatch { .. })), "{error:?}");

    // Refused before running: nothing was executed and the session is usable.
    assert_eq!(session.stats().statements, 0);
    let all = session.query_raw::<Customer>("SELECT * FROM customer ORDER BY id", &[]).await.unwrap();
    assert_eq!(all.len(), 5);
    session.commit().await.unwrap();
}

#[tokio::test]
async fn query_raw_reports_a_value_of_the_wrong_type_as_a_decode_error() {
    let (_test_db, db) = setup().await;
    seed(&db).await;
    let mut session = db.session();
    // The names match, the types do not: `id` is bigint here, i32 in Customer.
    let error = session
        .query_raw::<Customer>("SELECT id::bigint AS id, name, description FROM customer", &[])
        .await
        .expect_err("bigint does not decode into i32");
    assert!(matches!(error, Error::Decode { entity: "Customer", column: "id", .. }), "{error:?}");
}

const N_PLUS_ONE_WARNING: &str = "N+1 query";
const SELECT_BY_KEY: &str = r#"FROM "customer" AS t WHERE t."id" = $1"#;

#[tokio::test]
async fn a_loop_of_gets_fails_at_the_threshold_in_error_mode() {
    let (test_db, db) = setup_with(|config| config.n_plus_one = NPlusOne::Error { threshold: 25 }).await;
    seed_many(&test_db, 30).await;
    let mut session = db.session();
    let mut loaded = Vec::new();
    let mut refused = None;
    for id in 1..=30 {
        match session.get::<Customer>(id).await {
            Ok(found) => loaded.push(found.expect("every key has a row")),
            Err(error) => {
                refused = Some((id, error));
                break;
            }
        }
    }
    let (id, error) = refused.expect("the guard refuses the loop");
    assert_eq!(id, 26, "the 26th run of one statement crosses a threshold of 25");
    let Error::NPlusOne { statement, count } = &error else { panic!("expected NPlusOne, got {error:?}") };
    assert_eq!(*count, 26);
    assert!(statement.starts_with("SELECT ") && statement.ends_with(SELECT_BY_KEY), "{statement}");
    let message = error.to_string();
    assert!(message.contains("get_many") && message.contains(SELECT_BY_KEY), "{message}");
    assert_eq!(session.stats().statements, 25, "the refused statement was not sent");

    // The session is usable, and the refusal sticks for that statement.
    assert!(matches!(session.get::<Customer>(27).await, Err(Error::NPlusOne { count: 26, .. })));
    let rest = session.get_many::<Customer>(&(26..=30).collect::<Vec<_>>()).await.unwrap();
    assert_eq!(rest.len(), 5);
    // Identity-map hits send nothing and count nothing.
    for _ in 0..100 {
        session.get_one::<Customer>(1).await.unwrap();
    }
    assert_eq!(session.stats().statements, 26);
    session.commit().await.unwrap();

    // The count is per session.
    let mut session = db.session();
    assert!(session.get::<Customer>(30).await.unwrap().is_some());
}

#[tokio::test]
async fn the_same_rows_through_get_many_pass_in_error_mode() {
    let (test_db, db) = setup_with(|config| config.n_plus_one = NPlusOne::Error { threshold: 25 }).await;
    seed_many(&test_db, 30).await;
    let mut session = db.session();
    let keys: Vec<i32> = (1..=30).collect();
    let all = session.get_many::<Customer>(&keys).await.unwrap();
    assert_eq!(all.len(), 30);
    assert_eq!(session.stats().statements, 1);
    // A loop of is_in queries is still a loop: its statement's 26th run is refused.
    for n in 1..=25 {
        let some = session.query::<Customer>().filter(Customer::ID.is_in(1..=n)).count().await.unwrap();
        assert_eq!(some, i64::from(n));
    }
    let error = session.query::<Customer>().filter(Customer::ID.is_in([1])).count().await.unwrap_err();
    assert!(matches!(&error, Error::NPlusOne { statement, count: 26 } if statement.contains("= ANY($1)")), "{error:?}");
}

#[tokio::test]
async fn many_shapes_in_one_session_each_keep_their_own_count() {
    let (test_db, db) = setup_with(|config| config.n_plus_one = NPlusOne::Error { threshold: 2 }).await;
    seed_many(&test_db, 10).await;
    let mut session = db.session();
    // Seven shapes, more than a session counts inline: each runs twice,
    // interleaved with the others, and its third run alone is refused.
    let shapes: Vec<String> = (1..=7).map(|n| format!("SELECT * FROM customer WHERE id = $1 AND {n} = {n}")).collect();
    for round in 1..=2 {
        for shape in &shapes {
            let found = session.query_raw::<Customer>(shape.as_str(), &[&round]).await.unwrap();
            assert_eq!(found.len(), 1, "{shape}");
        }
    }
    for shape in shapes.iter().rev() {
        let error = session.query_raw::<Customer>(shape.as_str(), &[&3]).await.unwrap_err();
        assert!(matches!(&error, Error::NPlusOne { statement, count: 3 } if statement == shape), "{error:?}");
    }
    assert_eq!(session.stats().statements, 14, "the refused runs were not sent");
}

#[tokio::test]
async fn queries_count_by_shape_not_by_values() {
    let (test_db, db) = setup_with(|config| config.n_plus_one = NPlusOne::Error { threshold: 3 }).await;
    seed_many(&test_db, 10).await;
    let mut session = db.session();
    for n in 1..=3 {
        let name = format!("customer {n}");
        session.query::<Customer>().filter(Customer::NAME.eq(name)).one().await.unwrap();
    }
    // Another shape has its own count...
    session.query::<Customer>().filter(Customer::NAME.ne("x")).all().await.unwrap();
    let raw = "SELECT * FROM customer WHERE id = $1";
    for id in 1..=3 {
        session.query_raw::<Customer>(raw, &[&id]).await.unwrap();
    }
    // ...and the fourth run of each is refused.
    let error = session.query::<Customer>().filter(Customer::NAME.eq("customer 4")).one().await.unwrap_err();
    assert!(matches!(&error, Error::NPlusOne { statement, count: 4 } if statement.contains(r#"t."name" = $1"#)));
    let error = session.query_raw::<Customer>(raw, &[&4]).await.unwrap_err();
    assert!(matches!(&error, Error::NPlusOne { statement, count: 4 } if statement == raw), "{error:?}");

    // refresh has no batched form and is not counted.
    let one = session.get_one::<Customer>(1).await.unwrap();
    for _ in 0..5 {
        session.refresh(&one).await.unwrap();
    }
}

#[tokio::test]
async fn warn_mode_logs_once_per_statement_and_does_not_fail() {
    // The default configuration warns after 25 runs.
    let (test_db, db) = setup().await;
    seed_many(&test_db, 60).await;
    let log = LogBuffer::default();
    let _guard = log.install();

    let mut session = db.session();
    for id in 1..=25 {
        session.get_one::<Customer>(id).await.unwrap();
    }
    assert!(!log.text().contains(N_PLUS_ONE_WARNING), "nothing before the threshold: {}", log.text());
    for id in 26..=60 {
        session.get_one::<Customer>(id).await.unwrap();
    }
    assert_eq!(session.stats().statements, 60);

    let text = log.text();
    assert_eq!(text.matches(N_PLUS_ONE_WARNING).count(), 1, "one warning per statement: {text}");
    assert!(text.contains("WARN"), "not at warn level: {text}");
    assert!(text.contains(SELECT_BY_KEY), "the statement is named: {text}");
    assert!(text.contains("26 times") && text.contains("get_many"), "count and remedy: {text}");
}

#[tokio::test]
async fn off_mode_is_silent_and_sessions_can_opt_out() {
    let (test_db, db) = setup_with(|config| config.n_plus_one = NPlusOne::Off).await;
    seed_many(&test_db, 30).await;
    let log = LogBuffer::default();
    let _guard = log.install();
    let mut session = db.session();
    for id in 1..=30 {
        session.get_one::<Customer>(id).await.unwrap();
    }
    assert_eq!(session.stats().statements, 30);
    assert!(!log.text().contains(N_PLUS_ONE_WARNING), "{}", log.text());

    // A database in Error mode, and a session that loops on purpose.
    let (test_db, db) = setup_with(|config| config.n_plus_one = NPlusOne::Error { threshold: 25 }).await;
    seed_many(&test_db, 30).await;
    let mut session = db.session();
    session.set_n_plus_one(NPlusOne::Off);
    for id in 1..=30 {
        session.get_one::<Customer>(id).await.unwrap();
    }
    assert!(!log.text().contains(N_PLUS_ONE_WARNING), "{}", log.text());
}

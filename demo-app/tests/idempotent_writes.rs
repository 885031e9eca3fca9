//! Following and favoriting, and undoing them, are idempotent also when
//! requests race: every request answers 200 and the table ends up with
//! exactly one row (or none), where a naive handler's commit would hit the
//! primary key and answer 409.

mod support;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use support::{lock_waiters_reach, request, send, Answer, TestApp};
use tokio::task::JoinSet;

/// How many identical requests race.
const RACERS: usize = 6;

/// Sends `RACERS` identical requests at once and returns their answers,
/// arranged so that every one of them has read the table before any writes
/// it: a transaction of the test's own holds a SHARE lock on `table`, which
/// lets the requests' reads through and holds back their `INSERT` or
/// `DELETE`. Once all of them wait for the lock, it commits, and the writes
/// race.
async fn race(app: &TestApp, method: &Method, uri: &str, token: &str, table: &str) -> Vec<Answer> {
    let mut blocker = app.test_db.client().await;
    let lock = blocker.transaction().await.expect("BEGIN");
    lock.batch_execute(&format!("LOCK TABLE {table} IN SHARE MODE")).await.expect("LOCK TABLE");
    let mut requests = JoinSet::new();
    for _ in 0..RACERS {
        requests.spawn(send(app.router(Router::new()), request(method.clone(), uri, Some(token), None)));
    }
    let racers = i64::try_from(RACERS).expect("a few requests");
    assert!(lock_waiters_reach(&app.test_db, racers, Duration::from_secs(10)).await, "the requests wait for the lock");
    lock.commit().await.expect("COMMIT");
    requests.join_all().await
}

/// Asserts that every answer is a 200 whose JSON has `expected` at
/// `pointer`.
fn assert_all_say(answers: &[Answer], pointer: &str, expected: &Value) {
    assert_eq!(answers.len(), RACERS);
    for answer in answers {
        assert_eq!((answer.status, answer.json.pointer(pointer)), (StatusCode::OK, Some(expected)), "{answers:#?}");
    }
}

#[tokio::test]
async fn concurrent_follows_and_unfollows_all_answer_200_and_leave_one_row_then_none() {
    let app = TestApp::with(RACERS + 2, Duration::from_secs(30)).await;
    let fan = app.register("fan").await;
    app.register("star").await;

    let answers = race(&app, &Method::POST, "/api/profiles/star/follow", &fan, "follows").await;
    assert_all_say(&answers, "/profile/following", &json!(true));
    assert_eq!(app.count("follows").await, 1);

    let answers = race(&app, &Method::DELETE, "/api/profiles/star/follow", &fan, "follows").await;
    assert_all_say(&answers, "/profile/following", &json!(false));
    assert_eq!(app.count("follows").await, 0);
    app.assert_settles().await;
}

#[tokio::test]
async fn concurrent_favorites_and_unfavorites_all_answer_200_and_leave_one_row_then_none() {
    let app = TestApp::with(RACERS + 2, Duration::from_secs(30)).await;
    let fan = app.register("fan").await;
    let writer = app.register("writer").await;
    let article = json!({ "article": { "title": "Popular", "description": "d", "body": "b" } });
    let created = app.call(Method::POST, "/api/articles", Some(&writer), Some(article)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");

    let answers = race(&app, &Method::POST, "/api/articles/popular/favorite", &fan, "favorites").await;
    assert_all_say(&answers, "/article/favorited", &json!(true));
    assert_all_say(&answers, "/article/favoritesCount", &json!(1));
    assert_eq!(app.count("favorites").await, 1);

    let answers = race(&app, &Method::DELETE, "/api/articles/popular/favorite", &fan, "favorites").await;
    assert_all_say(&answers, "/article/favorited", &json!(false));
    assert_all_say(&answers, "/article/favoritesCount", &json!(0));
    assert_eq!(app.count("favorites").await, 0);
    app.assert_settles().await;
}

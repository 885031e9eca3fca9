//! The demo app with a read replica (`DATABASE_REPLICA_URLS`), against the
//! primary and streaming replica `scripts/replica_db.sh` starts: `GET`
//! requests read from the replica, and a user who has just written sees
//! the write on their next request even while the replica's replay is
//! paused, through the commit token the write's response handed out.

mod support;

use std::time::Duration;

use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{Method, StatusCode};
use axum::Router;
use orm_core::axum::COMMIT_TOKEN_HEADER;
use orm_core::ServedBy;
use orm_tests::ReplicaPair;
use serde_json::json;
use support::{request, send, TestApp};

fn article(title: &str) -> serde_json::Value {
    json!({ "article": { "title": title, "description": "d", "body": "b", "tagList": [] } })
}

#[tokio::test]
async fn reads_go_to_the_replica_and_a_writer_reads_its_write_while_replay_is_paused() {
    let pair = ReplicaPair::take().await;
    tokio::time::timeout(Duration::from_secs(60), async {
        let app = TestApp::on_replicas(&pair).await;
        let token = app.register("alice").await;
        pair.wait_for_replay().await;

        let listed = app.call(Method::GET, "/api/articles", None, None).await;
        assert_eq!(listed.status, StatusCode::OK, "{listed:?}");
        assert_eq!(listed.served_by, Some(ServedBy::Replica(0)), "reads go to the replica");
        assert_eq!(listed.commit_token, None, "a read hands out no token");

        pair.pause_replay().await;
        let created = app.call(Method::POST, "/api/articles", Some(&token), Some(article("Fresh"))).await;
        assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
        assert_eq!(created.served_by, Some(ServedBy::Primary), "writes go to the primary");
        let commit_token = created.commit_token.expect("the write's response hands out a commit token");
        let slug = created.json["article"]["slug"].as_str().expect("a slug");
        let path = format!("/api/articles/{slug}");

        // The writer's next request, carrying the token in the header...
        let mut next = request(Method::GET, &path, Some(&token), None);
        next.headers_mut().insert(COMMIT_TOKEN_HEADER, commit_token.parse().expect("a header value"));
        let seen = send(app.router(Router::new()), next).await;
        assert_eq!(seen.status, StatusCode::OK, "the writer sees its article: {seen:?}");
        assert_eq!(seen.served_by, Some(ServedBy::Primary));
        // ...or in the cookie, as a browser sends it back.
        let mut next = request(Method::GET, &path, None, None);
        next.headers_mut().insert(COOKIE, format!("orm_commit_token={commit_token}").parse().expect("a cookie"));
        let seen = send(app.router(Router::new()), next).await;
        assert_eq!(seen.status, StatusCode::OK, "{seen:?}");

        let other = app.call(Method::GET, &path, None, None).await;
        assert_eq!(other.status, StatusCode::NOT_FOUND, "others read the paused replica: {other:?}");
        assert_eq!(other.served_by, Some(ServedBy::Replica(0)));

        pair.resume_replay().await;
        pair.wait_for_replay().await;
        let other = app.call(Method::GET, &path, None, None).await;
        assert_eq!(other.status, StatusCode::OK, "the replica has it once replayed: {other:?}");
        assert_eq!(other.served_by, Some(ServedBy::Replica(0)));
    })
    .await
    .expect("timed out");
}

#[tokio::test]
async fn a_write_sets_the_commit_token_cookie() {
    let pair = ReplicaPair::take().await;
    tokio::time::timeout(Duration::from_secs(60), async {
        let app = TestApp::on_replicas(&pair).await;
        let token = app.register("bob").await;
        let router = app.router(Router::new());
        let request = request(Method::POST, "/api/articles", Some(&token), Some(article("Cookie")));
        let response = tower::ServiceExt::oneshot(router, request).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::CREATED);
        let cookie = response.headers().get(SET_COOKIE).expect("a cookie").to_str().expect("ASCII");
        let header = response.headers().get(COMMIT_TOKEN_HEADER).expect("a header").to_str().expect("ASCII");
        assert!(cookie.starts_with(&format!("orm_commit_token={header}; ")), "{cookie}");
        assert!(cookie.contains("HttpOnly"), "{cookie}");
    })
    .await
    .expect("timed out");
}

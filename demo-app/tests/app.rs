//! The middleware around the API: request ids, RealWorld error bodies for
//! what no handler answers, and authentication before any database work.

mod support;

use axum::http::{Method, StatusCode};
use serde_json::json;
use support::{request, send, TestApp};

#[tokio::test]
async fn every_response_carries_a_request_id_and_a_clients_id_is_kept() {
    let app = TestApp::new().await;
    let first = app.call(Method::GET, "/api/tags", None, None).await;
    let second = app.call(Method::GET, "/api/tags", None, None).await;
    let (first, second) = (first.request_id.unwrap(), second.request_id.unwrap());
    assert_eq!(first.len(), 36, "a UUID: {first}");
    assert_ne!(first, second);

    let mut traced = request(Method::GET, "/api/tags", None, None);
    traced.headers_mut().insert("x-request-id", "from-the-client".parse().unwrap());
    let answer = send(app.router(axum::Router::new()), traced).await;
    assert_eq!(answer.request_id.as_deref(), Some("from-the-client"));
}

#[tokio::test]
async fn unknown_routes_and_bad_tokens_get_realworld_errors() {
    let app = TestApp::new().await;
    let answer = app.call(Method::GET, "/api/nothing-here", None, None).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.json, json!({ "errors": { "route": ["not found"] } }));

    let answer = app.call(Method::GET, "/api/user", Some("not-a-jwt"), None).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.json, json!({ "errors": { "token": ["is invalid"] } }));
    assert_eq!(answer.stats, None, "no session for a request refused at authentication");

    // A body that is not JSON: 422, before the handler.
    let mut broken = request(Method::POST, "/api/users", None, None);
    *broken.body_mut() = axum::body::Body::from("{not json");
    let answer = send(app.router(axum::Router::new()), broken).await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(answer.json["errors"]["body"][0].is_string(), "{answer:?}");
}

#[tokio::test]
async fn a_new_title_gives_a_new_slug_and_taken_slugs_get_a_suffix() {
    let app = TestApp::new().await;
    let token = app.register("writer").await;
    let create = |title: &str| json!({ "article": { "title": title, "description": "d", "body": "b" } });
    let first = app.call(Method::POST, "/api/articles", Some(&token), Some(create("Hello World"))).await;
    assert_eq!(first.json["article"]["slug"], "hello-world");
    let second = app.call(Method::POST, "/api/articles", Some(&token), Some(create("Hello, world!"))).await;
    let slug = second.json["article"]["slug"].as_str().unwrap().to_owned();
    assert!(slug.starts_with("hello-world-") && slug.len() == "hello-world-".len() + 8, "{slug}");

    let rename = json!({ "article": { "title": "Goodbye World" } });
    let answer = app.call(Method::PUT, &format!("/api/articles/{slug}"), Some(&token), Some(rename)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json["article"]["slug"], "goodbye-world");
    assert_eq!(app.call(Method::GET, "/api/articles/goodbye-world", None, None).await.status, StatusCode::OK);
    assert_eq!(app.call(Method::GET, &format!("/api/articles/{slug}"), None, None).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn what_one_writes_shows_whether_one_follows_oneself_and_a_comment_needs_its_article() {
    let app = TestApp::new().await;
    let token = app.register("narcissus").await;
    let article = json!({ "article": { "title": "Mirror", "description": "d", "body": "b" } });
    let comment = json!({ "comment": { "body": "lovely" } });
    let created = app.call(Method::POST, "/api/articles", Some(&token), Some(article.clone())).await;
    assert_eq!(created.json["article"]["author"]["following"], false, "{created:?}");
    let answer = app.call(Method::POST, "/api/articles/mirror/comments", Some(&token), Some(comment.clone())).await;
    assert_eq!(answer.json["comment"]["author"]["following"], false, "{answer:?}");

    let follow = app.call(Method::POST, "/api/profiles/narcissus/follow", Some(&token), None).await;
    assert_eq!(follow.status, StatusCode::OK, "{follow:?}");
    let created = app.call(Method::POST, "/api/articles", Some(&token), Some(article)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    assert_eq!(created.json["article"]["author"]["following"], true, "{created:?}");
    let answer = app.call(Method::POST, "/api/articles/mirror/comments", Some(&token), Some(comment.clone())).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
    assert_eq!(answer.json["comment"]["author"]["following"], true, "{answer:?}");
    assert_eq!(app.count("comments").await, 2);

    let missing = app.call(Method::POST, "/api/articles/no-such-article/comments", Some(&token), Some(comment)).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{missing:?}");
    assert_eq!(missing.json, json!({ "errors": { "article": ["not found"] } }));
    assert_eq!(app.count("comments").await, 2, "nothing written for a missing article");
}

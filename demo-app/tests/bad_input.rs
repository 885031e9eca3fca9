//! Bad input is answered as the RealWorld spec expects, never with a 500:
//! NUL bytes and over-long values are 422, a token of a deleted user or an
//! expired one 401, a body that is not an object 422, a body over the limit
//! 413, each with the spec's error body.

mod support;

use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use demo_app::entities::User;
use demo_app::error::ApiResult;
use demo_app::json::BODY_LIMIT;
use demo_app::routes::articles::TAG_MAX;
use demo_app::routes::users::{EMAIL_MAX, USERNAME_MAX};
use demo_app::state::AppState;
use orm_core::axum::DbSession;
use serde_json::{json, Value};
use support::{request, send, Answer, TestApp};

/// Every request of these tests is answered well within this.
const PATIENCE: Duration = Duration::from_secs(30);

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future).await.unwrap_or_else(|_| panic!("{what}: no answer within {PATIENCE:?}"))
}

async fn call(app: &TestApp, method: Method, uri: &str, token: Option<&str>, body: Option<Value>) -> Answer {
    within(&format!("{method} {uri}"), app.call(method.clone(), uri, token, body)).await
}

/// Sends `body` as it is, not necessarily JSON.
async fn call_raw(app: &TestApp, method: Method, uri: &str, token: Option<&str>, body: impl Into<Body>) -> Answer {
    let mut raw = request(method.clone(), uri, token, None);
    *raw.body_mut() = body.into();
    within(&format!("{method} {uri}"), send(app.router(Router::new()), raw)).await
}

fn errors(field: &str, message: &str) -> Value {
    json!({ "errors": { field: [message] } })
}

const NUL: &str = "must not contain NUL bytes";

/// A request (method, URI, token, body) and the field its answer names.
type Case<'a> = (Method, String, Option<&'a str>, Option<Value>, &'a str);

/// Alice, her token, and the slug of an article of hers.
async fn alice_with_article(app: &TestApp) -> (String, String) {
    let token = app.register("alice").await;
    let article = json!({ "article": { "title": "Kept", "description": "d", "body": "b", "tagList": ["t"] } });
    let created = call(app, Method::POST, "/api/articles", Some(&token), Some(article)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    (token, created.json["article"]["slug"].as_str().expect("a slug").to_owned())
}

#[tokio::test]
async fn a_nul_byte_in_any_body_field_is_422() {
    let app = TestApp::new().await;
    let (token, slug) = alice_with_article(&app).await;
    let bad = "a\u{0}b";
    let new_user = |field: &str| {
        let mut user = json!({ "username": "bob", "email": "bob@example.com", "password": "password123" });
        user[field] = json!(bad);
        json!({ "user": user })
    };
    let login = |field: &str| {
        let mut user = json!({ "email": "alice@example.com", "password": "password123" });
        user[field] = json!(bad);
        json!({ "user": user })
    };
    let new_article = |field: &str, value: Value| {
        let mut article = json!({ "title": "T", "description": "d", "body": "b", "tagList": ["x"] });
        article[field] = value;
        json!({ "article": article })
    };
    let token = Some(token.as_str());
    let article_uri = format!("/api/articles/{slug}");
    let mut cases: Vec<Case> = vec![];
    for field in ["username", "email", "password"] {
        cases.push((Method::POST, "/api/users".into(), None, Some(new_user(field)), field));
    }
    for field in ["email", "password"] {
        cases.push((Method::POST, "/api/users/login".into(), None, Some(login(field)), field));
    }
    for field in ["username", "email", "password", "bio", "image"] {
        cases.push((Method::PUT, "/api/user".into(), token, Some(json!({ "user": { field: bad } })), field));
    }
    for field in ["title", "description", "body"] {
        cases.push((Method::POST, "/api/articles".into(), token, Some(new_article(field, json!(bad))), field));
        cases.push((Method::PUT, article_uri.clone(), token, Some(json!({ "article": { field: bad } })), field));
    }
    let tags = json!(["fine", bad]);
    cases.push((Method::POST, "/api/articles".into(), token, Some(new_article("tagList", tags.clone())), "tagList"));
    cases.push((Method::PUT, article_uri, token, Some(json!({ "article": { "tagList": tags } })), "tagList"));
    let comment = json!({ "comment": { "body": bad } });
    cases.push((Method::POST, format!("/api/articles/{slug}/comments"), token, Some(comment), "body"));

    for (method, uri, token, body, field) in cases {
        let answer = call(&app, method.clone(), &uri, token, body).await;
        assert_eq!(
            (answer.status, &answer.json),
            (StatusCode::UNPROCESSABLE_ENTITY, &errors(field, NUL)),
            "{method} {uri}"
        );
    }
    // A key with a NUL byte is named by the object it is in; every field
    // with one is named.
    let body = json!({ "user": { "username": bad, "email": bad, "password": "password123", "x\u{0}": 1 } });
    let answer = call(&app, Method::POST, "/api/users", None, Some(body)).await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer.json, json!({ "errors": { "email": [NUL], "user": [NUL], "username": [NUL] } }));
    // Nothing was written.
    let counts = (app.count("users").await, app.count("articles").await, app.count("comments").await);
    assert_eq!(counts, (1, 1, 0));
    let tags = call(&app, Method::GET, "/api/tags", None, None).await;
    assert_eq!(tags.json, json!({ "tags": ["t"] }));
}

#[tokio::test]
async fn a_nul_byte_in_a_path_or_query_parameter_is_422() {
    let app = TestApp::new().await;
    let (token, slug) = alice_with_article(&app).await;
    let token = Some(token.as_str());
    let comment = json!({ "comment": { "body": "c" } });
    let change = json!({ "article": { "body": "new" } });
    let cases: Vec<Case> = vec![
        (Method::GET, "/api/articles?tag=a%00b".into(), None, None, "tag"),
        (Method::GET, "/api/articles?author=a%00b".into(), None, None, "author"),
        (Method::GET, "/api/articles?favorited=a%00b".into(), token, None, "favorited"),
        (Method::GET, "/api/articles?tag=ok&author=%00".into(), None, None, "author"),
        (Method::GET, "/api/articles/feed?limit=1&x=%00".into(), token, None, "x"),
        (Method::GET, "/api/articles?a%00=1".into(), None, None, "query"),
        (Method::GET, "/api/articles/a%00b".into(), None, None, "slug"),
        (Method::PUT, "/api/articles/a%00b".into(), token, Some(change), "slug"),
        (Method::DELETE, "/api/articles/a%00b".into(), token, None, "slug"),
        (Method::POST, "/api/articles/a%00b/favorite".into(), token, None, "slug"),
        (Method::DELETE, "/api/articles/a%00b/favorite".into(), token, None, "slug"),
        (Method::GET, "/api/articles/a%00b/comments".into(), None, None, "slug"),
        (Method::POST, "/api/articles/a%00b/comments".into(), token, Some(comment), "slug"),
        (Method::DELETE, format!("/api/articles/{slug}/comments/1%00"), token, None, "id"),
        (Method::GET, "/api/profiles/a%00b".into(), None, None, "username"),
        (Method::POST, "/api/profiles/a%00b/follow".into(), token, None, "username"),
        (Method::DELETE, "/api/profiles/a%00b/follow".into(), token, None, "username"),
    ];
    for (method, uri, token, body, field) in cases {
        let answer = call(&app, method.clone(), &uri, token, body).await;
        assert_eq!(
            (answer.status, &answer.json),
            (StatusCode::UNPROCESSABLE_ENTITY, &errors(field, NUL)),
            "{method} {uri}"
        );
        assert_eq!(answer.stats.map_or(0, |stats| stats.statements), 0, "refused before the database: {method} {uri}");
    }
    // A path that is not UTF-8, and a malformed query parameter, are 422 too.
    let answer = call(&app, Method::GET, "/api/profiles/%FF", None, None).await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(answer.json["errors"]["path"][0].is_string(), "{answer:?}");
    let answer = call(&app, Method::GET, "/api/articles?limit=ten", None, None).await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(answer.json["errors"]["query"][0].is_string(), "{answer:?}");
}

#[tokio::test]
async fn a_body_that_is_not_an_object_where_one_is_expected_is_422() {
    let app = TestApp::new().await;
    let token = app.register("alice").await;
    let user = json!({ "user": { "username": "bob", "email": "bob@example.com", "password": "password123" } });
    let cases = [
        (Method::POST, "/api/users", json!([user])),
        // serde alone would take the array for the struct's fields, in order.
        (Method::POST, "/api/users", json!({ "user": ["bob", "bob@example.com", "password123"] })),
        (Method::POST, "/api/users", json!("user")),
        (Method::POST, "/api/users", json!(null)),
        (Method::POST, "/api/users/login", json!({ "user": ["alice@example.com", "password123"] })),
        (Method::PUT, "/api/user", json!({ "user": ["bob"] })),
        (Method::POST, "/api/articles", json!({ "article": ["T", "d", "b"] })),
        (Method::POST, "/api/articles", json!([{ "article": { "title": "T", "description": "d", "body": "b" } }])),
    ];
    for (method, uri, body) in cases {
        let answer = call(&app, method.clone(), uri, Some(&token), Some(body.clone())).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{method} {uri} {body}");
        let messages = answer.json["errors"]["body"].as_array().map_or(0, Vec::len);
        assert_eq!((answer.json["errors"].as_object().map(serde_json::Map::len), messages), (Some(1), 1), "{answer:?}");
    }
    assert_eq!((app.count("users").await, app.count("articles").await), (1, 0));
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let app = TestApp::new().await;
    let token = app.register("alice").await;
    // A valid article padded with spaces to exactly `size` bytes.
    let article = |size: usize| {
        let json = json!({ "article": { "title": "Big", "description": "d", "body": "b" } }).to_string();
        format!("{json}{}", " ".repeat(size - json.len()))
    };
    let answer = call_raw(&app, Method::POST, "/api/articles", Some(&token), article(BODY_LIMIT + 1)).await;
    let expected = errors("body", &format!("is too large (maximum is {BODY_LIMIT} bytes)"));
    assert_eq!((answer.status, answer.json), (StatusCode::PAYLOAD_TOO_LARGE, expected));
    let answer = call_raw(&app, Method::POST, "/api/users", None, "x".repeat(4 * BODY_LIMIT)).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE, "{answer:?}");
    assert_eq!(app.count("articles").await, 0);

    let answer = call_raw(&app, Method::POST, "/api/articles", Some(&token), article(BODY_LIMIT)).await;
    assert_eq!(answer.status, StatusCode::CREATED, "the limit itself is accepted: {answer:?}");
}

#[tokio::test]
async fn over_long_user_names_emails_and_tags_are_422() {
    let app = TestApp::new().await;
    let (token, slug) = alice_with_article(&app).await;
    let long = "x".repeat(10_000);
    let long_email = format!("{long}@example.com");
    let too_long = |max: usize| format!("is too long (maximum is {max} characters)");

    let register = json!({ "user": { "username": long, "email": "bob@example.com", "password": "password123" } });
    let answer = call(&app, Method::POST, "/api/users", None, Some(register)).await;
    assert_eq!(
        (answer.status, answer.json),
        (StatusCode::UNPROCESSABLE_ENTITY, errors("username", &too_long(USERNAME_MAX)))
    );
    let register = json!({ "user": { "username": "bob", "email": long_email, "password": "password123" } });
    let answer = call(&app, Method::POST, "/api/users", None, Some(register)).await;
    assert_eq!((answer.status, answer.json), (StatusCode::UNPROCESSABLE_ENTITY, errors("email", &too_long(EMAIL_MAX))));

    let update = json!({ "user": { "username": long } });
    let answer = call(&app, Method::PUT, "/api/user", Some(&token), Some(update)).await;
    assert_eq!(
        (answer.status, answer.json),
        (StatusCode::UNPROCESSABLE_ENTITY, errors("username", &too_long(USERNAME_MAX)))
    );
    let update = json!({ "user": { "email": long_email } });
    let answer = call(&app, Method::PUT, "/api/user", Some(&token), Some(update)).await;
    assert_eq!((answer.status, answer.json), (StatusCode::UNPROCESSABLE_ENTITY, errors("email", &too_long(EMAIL_MAX))));

    let article = json!({ "article": { "title": "T", "description": "d", "body": "b", "tagList": ["ok", long] } });
    let answer = call(&app, Method::POST, "/api/articles", Some(&token), Some(article)).await;
    assert_eq!((answer.status, answer.json), (StatusCode::UNPROCESSABLE_ENTITY, errors("tagList", &too_long(TAG_MAX))));
    let change = json!({ "article": { "tagList": [long] } });
    let answer = call(&app, Method::PUT, &format!("/api/articles/{slug}"), Some(&token), Some(change)).await;
    assert_eq!((answer.status, answer.json), (StatusCode::UNPROCESSABLE_ENTITY, errors("tagList", &too_long(TAG_MAX))));

    // The maxima themselves are accepted (counted in characters, after
    // trimming, as stored), multi-byte characters too.
    let name = "é".repeat(USERNAME_MAX);
    let email = format!("{}@example.com", "b".repeat(EMAIL_MAX - "@example.com".len()));
    let register = json!({ "user": { "username": format!(" {name} "), "email": email, "password": "password123" } });
    let answer = call(&app, Method::POST, "/api/users", None, Some(register)).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
    assert_eq!(answer.json["user"]["username"], name.as_str());
    let tag = "ü".repeat(TAG_MAX);
    let change = json!({ "article": { "tagList": [tag] } });
    let answer = call(&app, Method::PUT, &format!("/api/articles/{slug}"), Some(&token), Some(change)).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.json["article"]["tagList"], json!([tag]));
}

/// Test-only routes that send what validation would have refused straight
/// to the database, as a handler with a missing check would.
fn unchecked_routes() -> Router<AppState> {
    async fn nul(mut db: DbSession) -> ApiResult<Json<Value>> {
        db.execute("SELECT $1::text", &[&"a\u{0}b"]).await?;
        Ok(Json(json!({ "done": true })))
    }
    async fn huge_username(mut db: DbSession) -> ApiResult<Json<Value>> {
        // Random hex does not compress below the index's row limit.
        let username: String = (0..320).map(|_| uuid::Uuid::new_v4().simple().to_string()).collect();
        let email = "huge@example.com".to_owned();
        db.add(User { id: 0, username, email, password_hash: "x".to_owned(), bio: None, image: None });
        db.flush().await?;
        Ok(Json(json!({ "done": true })))
    }
    Router::new().route("/test/nul", post(nul)).route("/test/huge-username", post(huge_username))
}

#[tokio::test]
async fn values_the_database_refuses_are_422_even_unvalidated() {
    let app = TestApp::new().await;
    let expected = errors("request", "has a value the database cannot store");
    for uri in ["/test/nul", "/test/huge-username"] {
        let answer = within(uri, send(app.router(unchecked_routes()), request(Method::POST, uri, None, None))).await;
        assert_eq!((answer.status, &answer.json), (StatusCode::UNPROCESSABLE_ENTITY, &expected), "{uri}");
    }
    assert_eq!(app.count("users").await, 0);
    within("settling", app.assert_settles()).await;
}

/// A token for `user` signed with the tests' secret, expiring `expires_in`
/// seconds from now (negative: in the past).
fn token_expiring(user: i64, expires_in: i64) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({ "sub": user.to_string(), "iat": now - 3600, "exp": now + expires_in });
    let key = jsonwebtoken::EncodingKey::from_secret(b"test secret");
    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256), &claims, &key).expect("a token")
}

#[tokio::test]
async fn an_expired_token_is_401_without_leeway() {
    let app = TestApp::new().await;
    app.register("alice").await;
    let client = app.test_db.client().await;
    let alice: i64 = client.query_one("SELECT id FROM users", &[]).await.expect("alice").get(0);

    let fresh = token_expiring(alice, 60);
    assert_eq!(call(&app, Method::GET, "/api/user", Some(&fresh), None).await.status, StatusCode::OK);
    let expired = token_expiring(alice, -5);
    for uri in ["/api/user", "/api/articles"] {
        let answer = call(&app, Method::GET, uri, Some(&expired), None).await;
        assert_eq!((answer.status, answer.json), (StatusCode::UNAUTHORIZED, errors("token", "is invalid")), "{uri}");
    }
}

#[tokio::test]
async fn a_deleted_users_token_is_401_on_reads_writes_and_the_feed() {
    let app = TestApp::new().await;
    let bob = app.register("bob").await;
    let article = json!({ "article": { "title": "Bobs", "description": "d", "body": "b" } });
    let created = call(&app, Method::POST, "/api/articles", Some(&bob), Some(article.clone())).await;
    let slug = created.json["article"]["slug"].as_str().expect("a slug").to_owned();
    let ghost = app.register("ghost").await;
    app.test_db.client().await.execute("DELETE FROM users WHERE username = 'ghost'", &[]).await.expect("delete");

    let comment = json!({ "comment": { "body": "boo" } });
    let cases: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/api/user".into(), None),
        (Method::PUT, "/api/user".into(), Some(json!({ "user": { "bio": "boo" } }))),
        (Method::GET, "/api/articles".into(), None),
        // A page without rows, which cannot carry the check of the viewer.
        (Method::GET, "/api/articles?tag=nope".into(), None),
        (Method::GET, "/api/articles/feed".into(), None),
        (Method::GET, format!("/api/articles/{slug}"), None),
        (Method::GET, format!("/api/articles/{slug}/comments"), None),
        (Method::GET, "/api/profiles/bob".into(), None),
        (Method::POST, "/api/articles".into(), Some(article)),
        (Method::PUT, format!("/api/articles/{slug}"), Some(json!({ "article": { "body": "boo" } }))),
        (Method::DELETE, format!("/api/articles/{slug}"), None),
        (Method::POST, format!("/api/articles/{slug}/favorite"), None),
        (Method::DELETE, format!("/api/articles/{slug}/favorite"), None),
        (Method::POST, format!("/api/articles/{slug}/comments"), Some(comment.clone())),
        // No article either: still the token's 401.
        (Method::POST, "/api/articles/no-such-article/comments".into(), Some(comment)),
        (Method::POST, "/api/profiles/bob/follow".into(), None),
        (Method::DELETE, "/api/profiles/bob/follow".into(), None),
    ];
    for (method, uri, body) in cases {
        let answer = call(&app, method.clone(), &uri, Some(&ghost), body).await;
        let expected = errors("token", "is invalid");
        assert_eq!((answer.status, &answer.json), (StatusCode::UNAUTHORIZED, &expected), "{method} {uri}");
    }
    let counts = (app.count("articles").await, app.count("favorites").await, app.count("follows").await);
    assert_eq!((counts, app.count("comments").await), ((1, 0, 0), 0), "nothing was written");
    // A live user's token is unaffected.
    assert_eq!(call(&app, Method::GET, "/api/articles/feed", Some(&bob), None).await.status, StatusCode::OK);
    within("settling", app.assert_settles()).await;
}

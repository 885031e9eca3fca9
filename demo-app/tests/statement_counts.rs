//! Article lists cost a constant number of statements whatever the page
//! size: authors, tags, favorites and follows are loaded in batches, not
//! per article, and the identity map saves the loads it already has.

mod support;

use std::collections::HashMap;

use axum::http::{Method, StatusCode};
use serde_json::Value;
use support::TestApp;

/// Five authors, twenty articles (two tags each, one minute apart), some
/// favorites; the viewer follows authors 1 and 2.
const SEED: &str = "
    INSERT INTO users (username, email, password_hash)
        SELECT 'author' || i, 'author' || i || '@example.com', 'x' FROM generate_series(1, 5) AS i;
    INSERT INTO articles (slug, title, description, body, author_id, created_at, updated_at)
        SELECT 'article-' || i, 'Article ' || i, 'About ' || i, 'Body ' || i,
               (SELECT id FROM users WHERE username = 'author' || (i % 5 + 1)),
               now() - i * interval '1 minute', now() - i * interval '1 minute'
        FROM generate_series(1, 20) AS i;
    INSERT INTO article_tags (article_id, tag) SELECT a.id, t FROM articles a, unnest(ARRAY['rust', 'orm']) AS t;
    INSERT INTO favorites (user_id, article_id)
        SELECT u.id, a.id FROM users u, articles a WHERE (u.id + a.id) % 3 = 0;
";

async fn seeded() -> (TestApp, String) {
    let app = TestApp::new().await;
    app.test_db.client().await.batch_execute(SEED).await.expect("seed");
    let token = app.register("viewer").await;
    app.test_db
        .client()
        .await
        .batch_execute(
            "INSERT INTO follows (follower_id, followee_id)
             SELECT v.id, a.id FROM users v, users a
             WHERE v.username = 'viewer' AND a.username IN ('author1', 'author2');
             INSERT INTO favorites (user_id, article_id)
             SELECT v.id, a.id FROM users v, articles a WHERE v.username = 'viewer' AND a.slug = 'article-2'",
        )
        .await
        .expect("follows");
    (app, token)
}

/// Statements of a list request, checking the page it returned.
async fn statements_for(app: &TestApp, uri: &str, token: Option<&str>, expected_len: usize) -> u64 {
    let answer = app.call(Method::GET, uri, token, None).await;
    assert_eq!(answer.status, StatusCode::OK, "{uri}: {answer:?}");
    assert_eq!(answer.json["articles"].as_array().unwrap().len(), expected_len, "{uri}");
    answer.stats.expect("the session's stats").statements
}

/// The statement counts of `base` with `limit` 1, 5 and 20, which must all
/// be equal; returns that count.
async fn constant_over_page_sizes(app: &TestApp, base: &str, token: Option<&str>, total: usize) -> u64 {
    let separator = if base.contains('?') { '&' } else { '?' };
    let mut counts = Vec::new();
    for limit in [1, 5, 20] {
        let uri = format!("{base}{separator}limit={limit}");
        counts.push(statements_for(app, &uri, token, limit.min(total)).await);
    }
    assert!(counts.iter().all(|&count| count == counts[0]), "{base}: {counts:?} statements for 1, 5, 20 articles");
    counts[0]
}

#[tokio::test]
async fn the_global_list_costs_the_same_for_1_5_and_20_articles() {
    let (app, token) = seeded().await;
    // Page, count, authors, tags, favorite counts.
    assert_eq!(constant_over_page_sizes(&app, "/api/articles", None, 20).await, 5);
    // And the viewer's favorites and follows.
    assert_eq!(constant_over_page_sizes(&app, "/api/articles", Some(&token), 20).await, 7);
}

#[tokio::test]
async fn filtered_lists_and_the_feed_cost_the_same_for_any_page_size() {
    let (app, token) = seeded().await;
    // The author (loaded to filter by) is in the identity map: no authors
    // statement, but one for the user: still 5.
    assert_eq!(constant_over_page_sizes(&app, "/api/articles?author=author1", None, 4).await, 5);
    // One raw statement for ids and total, then the articles by key.
    assert_eq!(constant_over_page_sizes(&app, "/api/articles?tag=rust", None, 20).await, 5);
    assert_eq!(constant_over_page_sizes(&app, "/api/articles?tag=rust", Some(&token), 20).await, 7);
    // Follows, page, count, authors, tags, favorite counts, the viewer's
    // favorites; the viewer's follows of the authors are already loaded.
    assert_eq!(constant_over_page_sizes(&app, "/api/articles/feed", Some(&token), 8).await, 7);
}

#[tokio::test]
async fn a_list_shows_what_the_database_holds() {
    let (app, token) = seeded().await;
    let answer = app.call(Method::GET, "/api/articles?limit=20", Some(&token), None).await;
    assert_eq!(answer.json["articlesCount"], 20);
    let client = app.test_db.client().await;
    let expected: HashMap<String, i64> = client
        .query("SELECT a.slug, count(f.user_id) FROM articles a LEFT JOIN favorites f ON f.article_id = a.id GROUP BY a.slug", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let articles = answer.json["articles"].as_array().unwrap();
    // Newest first.
    let slugs: Vec<&str> = articles.iter().map(|a| a["slug"].as_str().unwrap()).collect();
    let newest: Vec<String> = (1..=20).map(|i| format!("article-{i}")).collect();
    assert_eq!(slugs, newest);
    for article in articles {
        let slug = article["slug"].as_str().unwrap();
        assert_eq!(article["favoritesCount"], expected[slug], "{slug}");
        assert_eq!(article["favorited"], slug == "article-2", "{slug}");
        assert_eq!(article["tagList"], serde_json::json!(["orm", "rust"]));
        assert_eq!(article.get("body"), None::<&Value>);
        let author = article["author"]["username"].as_str().unwrap();
        assert_eq!(article["author"]["following"], author == "author1" || author == "author2", "{slug}");
    }
}

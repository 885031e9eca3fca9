//! Lists cost a constant number of statements whatever the page size: an
//! article page's authors, tags, favorites and follows, and its total,
//! come with the page, in its statement (a join with correlated
//! subqueries, and an uncorrelated count); a comment page's
//! follows are loaded in a batch, not per comment; and the identity map
//! saves the loads it already has. And a page costs at most two round
//! trips: the loads that do not depend on each other travel together.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::Value;
use support::TestApp;

/// Three authors, 300 articles (one minute apart, a hundred by each author,
/// tagged `rust` and `orm`, odd ids also `odd`), each favorited by half of
/// the authors; a hundred comments on `article-1` and one on `article-2`.
const SEED: &str = "
    INSERT INTO users (username, email, password_hash)
        SELECT 'author' || i, 'author' || i || '@example.com', 'x' FROM generate_series(1, 3) AS i;
    INSERT INTO articles (slug, title, description, body, author_id, created_at, updated_at)
        SELECT 'article-' || i, 'Article ' || i, 'About ' || i, 'Body ' || i,
               (SELECT id FROM users WHERE username = 'author' || (i % 3 + 1)),
               now() - i * interval '1 minute', now() - i * interval '1 minute'
        FROM generate_series(1, 300) AS i;
    INSERT INTO article_tags (article_id, tag) SELECT a.id, t FROM articles a, unnest(ARRAY['rust', 'orm']) AS t;
    INSERT INTO article_tags (article_id, tag) SELECT id, 'odd' FROM articles WHERE id % 2 = 1;
    INSERT INTO favorites (user_id, article_id)
        SELECT u.id, a.id FROM users u, articles a WHERE (u.id + a.id) % 2 = 0;
    INSERT INTO comments (article_id, author_id, body, created_at, updated_at)
        SELECT a.id, (SELECT id FROM users WHERE username = 'author' || (i % 3 + 1)), 'Comment ' || i, now(), now()
        FROM articles a, generate_series(1, 100) AS i WHERE a.slug = 'article-1';
    INSERT INTO comments (article_id, author_id, body, created_at, updated_at)
        SELECT a.id, u.id, 'The only comment', now(), now()
        FROM articles a, users u WHERE a.slug = 'article-2' AND u.username = 'author3';
";

/// The seeded app and the token of `viewer`, who follows author1 and
/// author2 and favorited `article-2`.
async fn seeded() -> (TestApp, String) {
    seeded_on(TestApp::new().await).await
}

/// [`seeded`] on `app`.
async fn seeded_on(app: TestApp) -> (TestApp, String) {
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

/// A successful GET's answer and the number of statements it cost.
async fn get(app: &TestApp, uri: &str, token: Option<&str>) -> (Value, u64) {
    let answer = app.call(Method::GET, uri, token, None).await;
    assert_eq!(answer.status, StatusCode::OK, "{uri}: {answer:?}");
    (answer.json, answer.stats.expect("the session's stats").statements)
}

/// The statement counts of the list `base` with `limit` 1, 5, 20 and 100,
/// which must all be equal; returns that count. `articlesCount` must be
/// `total`, the number of matching articles, and each page as full as that
/// allows.
async fn constant_over_page_sizes(app: &TestApp, base: &str, token: Option<&str>, total: usize) -> u64 {
    let separator = if base.contains('?') { '&' } else { '?' };
    let mut counts = Vec::new();
    for limit in [1, 5, 20, 100] {
        let uri = format!("{base}{separator}limit={limit}");
        let (json, statements) = get(app, &uri, token).await;
        assert_eq!(json["articles"].as_array().unwrap().len(), limit.min(total), "{uri}");
        assert_eq!(json["articlesCount"], total, "{uri}");
        counts.push(statements);
    }
    assert!(counts.iter().all(|&count| count == counts[0]), "{base}: {counts:?} statements for 1, 5, 20, 100 articles");
    counts[0]
}

/// Counts rows with `sql`, through a connection of the test's own.
async fn count(app: &TestApp, sql: &str) -> usize {
    let count: i64 = app.test_db.client().await.query_one(sql, &[]).await.expect("count").get(0);
    usize::try_from(count).expect("a count")
}

#[tokio::test]
async fn the_global_list_costs_the_same_for_1_to_100_articles() {
    let (app, token) = seeded().await;
    // The page with its authors, tags, favorite counts and total: one
    // statement.
    assert_eq!(constant_over_page_sizes(&app, "/api/articles", None, 300).await, 1);
    // With a viewer, the viewer's favorites and follows come with the
    // page, and so does the viewer's row for the session middleware's
    // check that the token's user exists.
    assert_eq!(constant_over_page_sizes(&app, "/api/articles", Some(&token), 300).await, 1);
}

#[tokio::test]
async fn filtered_lists_cost_the_same_for_1_to_100_articles() {
    let (app, token) = seeded().await;
    // 150, 100, 150 and 50: pages of 100 for each filter alone.
    let odd = count(&app, "SELECT count(*) FROM article_tags WHERE tag = 'odd'").await;
    let by_author1 =
        count(&app, "SELECT count(*) FROM articles a JOIN users u ON u.id = a.author_id WHERE u.username = 'author1'")
            .await;
    let favorited_by_author2 =
        count(&app, "SELECT count(*) FROM favorites f JOIN users u ON u.id = f.user_id WHERE u.username = 'author2'")
            .await;
    let odd_by_author1 = count(
        &app,
        "SELECT count(*) FROM articles a JOIN users u ON u.id = a.author_id JOIN article_tags t ON t.article_id = a.id
         WHERE u.username = 'author1' AND t.tag = 'odd'",
    )
    .await;
    // Each filter is a semi-join in the page's and its total's WHERE: the
    // same statement as the unfiltered list.
    for token in [None, Some(token.as_str())] {
        assert_eq!(constant_over_page_sizes(&app, "/api/articles?tag=odd", token, odd).await, 1);
        assert_eq!(constant_over_page_sizes(&app, "/api/articles?author=author1", token, by_author1).await, 1);
        let favorited = "/api/articles?favorited=author2";
        assert_eq!(constant_over_page_sizes(&app, favorited, token, favorited_by_author2).await, 1);
        let both = "/api/articles?tag=odd&author=author1";
        assert_eq!(constant_over_page_sizes(&app, both, token, odd_by_author1).await, 1);
    }
}

#[tokio::test]
async fn unknown_filter_values_match_nothing() {
    let (app, _) = seeded().await;
    for uri in ["/api/articles?tag=nope", "/api/articles?author=nobody", "/api/articles?favorited=nobody"] {
        let (json, statements) = get(&app, uri, None).await;
        assert_eq!(json["articlesCount"], 0, "{uri}");
        assert_eq!(json["articles"], serde_json::json!([]), "{uri}");
        // The page: a first page without rows has nothing to count.
        assert_eq!(statements, 1, "{uri}");
    }
}

#[tokio::test]
async fn a_page_past_the_end_still_counts_the_articles() {
    let (app, token) = seeded().await;
    let odd = count(&app, "SELECT count(*) FROM article_tags WHERE tag = 'odd'").await;
    let past_the_end = "/api/articles?tag=odd&offset=1000";
    let (json, _) = get(&app, past_the_end, None).await;
    assert_eq!(json["articles"], serde_json::json!([]));
    assert_eq!(json["articlesCount"], odd);
    // Its total, which the page's rows would have carried, counted apart;
    // and, with a viewer, the session middleware's lookup of the viewer's
    // row, which they would have carried too.
    assert_eq!(warm_cost(&app, Method::GET, past_the_end, None).await, (2, 2));
    assert_eq!(warm_cost(&app, Method::GET, past_the_end, Some(&token)).await, (3, 3));
}

#[tokio::test]
async fn the_feed_costs_the_same_for_1_to_100_articles() {
    let (app, token) = seeded().await;
    let followed = count(
        &app,
        "SELECT count(*) FROM articles a JOIN users u ON u.id = a.author_id WHERE u.username IN ('author1', 'author2')",
    )
    .await;
    // The page with all it shows, its total and the viewer's row.
    assert_eq!(constant_over_page_sizes(&app, "/api/articles/feed", Some(&token), followed).await, 1);
}

#[tokio::test]
async fn a_comment_list_costs_the_same_for_1_and_100_comments() {
    let (app, token) = seeded().await;
    for (token, expected) in [(None, 2), (Some(token.as_str()), 4)] {
        // The article, its comments with their authors (a join), and the
        // viewer's follows and the check that the viewer exists.
        let (many, statements_for_many) = get(&app, "/api/articles/article-1/comments", token).await;
        let (one, statements_for_one) = get(&app, "/api/articles/article-2/comments", token).await;
        assert_eq!(many["comments"].as_array().unwrap().len(), 100);
        assert_eq!(one["comments"].as_array().unwrap().len(), 1);
        assert_eq!((statements_for_many, statements_for_one), (expected, expected), "token: {token:?}");
    }
}

#[tokio::test]
async fn a_comment_list_shows_what_the_database_holds() {
    let (app, token) = seeded().await;
    let (json, _) = get(&app, "/api/articles/article-1/comments", Some(&token)).await;
    let comments = json["comments"].as_array().unwrap();
    // Oldest first.
    let ids: Vec<i64> = comments.iter().map(|c| c["id"].as_i64().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted);
    let client = app.test_db.client().await;
    let authors: HashMap<i64, String> = client
        .query("SELECT c.id, u.username FROM comments c JOIN users u ON u.id = c.author_id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    for comment in comments {
        let author = &authors[&comment["id"].as_i64().unwrap()];
        assert_eq!(comment["author"]["username"], author.as_str());
        assert_eq!(comment["author"]["following"], author == "author1" || author == "author2", "{comment}");
    }
}

#[tokio::test]
async fn a_list_shows_what_the_database_holds() {
    let (app, token) = seeded().await;
    let (json, _) = get(&app, "/api/articles?limit=20", Some(&token)).await;
    assert_eq!(json["articlesCount"], 300);
    let client = app.test_db.client().await;
    let expected: HashMap<String, (i64, Vec<String>)> = client
        .query(
            "SELECT a.slug, (SELECT count(*) FROM favorites f WHERE f.article_id = a.id),
                    ARRAY(SELECT t.tag FROM article_tags t WHERE t.article_id = a.id ORDER BY t.tag)
             FROM articles a",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), (row.get(1), row.get(2))))
        .collect();
    let articles = json["articles"].as_array().unwrap();
    // Newest first.
    let slugs: Vec<&str> = articles.iter().map(|a| a["slug"].as_str().unwrap()).collect();
    let newest: Vec<String> = (1..=20).map(|i| format!("article-{i}")).collect();
    assert_eq!(slugs, newest);
    for article in articles {
        let slug = article["slug"].as_str().unwrap();
        let (favorites, tags) = &expected[slug];
        assert_eq!(article["favoritesCount"], *favorites, "{slug}");
        assert_eq!(article["favorited"], slug == "article-2", "{slug}");
        assert_eq!(article["tagList"], serde_json::json!(tags), "{slug}");
        assert_eq!(article.get("body"), None::<&Value>);
        let author = article["author"]["username"].as_str().unwrap();
        assert_eq!(article["author"]["following"], author == "author1" || author == "author2", "{slug}");
    }
}

/// The statements and round trips of one request, after a first run of the
/// same request has prepared its statements on the pool's one connection.
async fn warm_cost(app: &TestApp, method: Method, uri: &str, token: Option<&str>) -> (u64, u64) {
    let mut costs = Vec::new();
    for _ in 0..2 {
        let answer = app.call(method.clone(), uri, token, None).await;
        assert!(answer.status.is_success(), "{method} {uri}: {answer:?}");
        let stats = answer.stats.expect("the session's stats");
        costs.push((stats.statements, stats.round_trips));
    }
    costs[1]
}

#[tokio::test]
async fn pages_cost_at_most_two_round_trips() {
    let (app, token) = seeded_on(TestApp::with(1, Duration::from_secs(30)).await).await;
    for token in [None, Some(token.as_str())] {
        // The page with all it shows, its total (and the viewer's row):
        // one statement.
        assert_eq!(warm_cost(&app, Method::GET, "/api/articles?limit=20", token).await, (1, 1));
        assert_eq!(warm_cost(&app, Method::GET, "/api/articles?tag=odd&author=author1", token).await, (1, 1));
        // The article with all it shows (and the viewer's row).
        assert_eq!(warm_cost(&app, Method::GET, "/api/articles/article-2", token).await, (1, 1));
        // The article beside its comments with their authors; then the
        // viewer's follows and own row, if there is a viewer.
        let (comments, round_trips) = if token.is_some() { (4, 2) } else { (2, 1) };
        assert_eq!(
            warm_cost(&app, Method::GET, "/api/articles/article-1/comments", token).await,
            (comments, round_trips)
        );
        // The profile beside the viewer's follow of it and the viewer.
        let profile = if token.is_some() { 3 } else { 1 };
        assert_eq!(warm_cost(&app, Method::GET, "/api/profiles/author1", token).await, (profile, 1));
    }
    // The page with all it shows, its total and the viewer's row.
    assert_eq!(warm_cost(&app, Method::GET, "/api/articles/feed", Some(&token)).await, (1, 1));
}

#[tokio::test]
async fn a_favorite_costs_the_page_it_returns_and_one_round_trip_for_the_write() {
    let (app, token) = seeded_on(TestApp::with(1, Duration::from_secs(30)).await).await;
    // The article with all it shows beside the viewer's favorite of it and
    // the viewer's row; the insert with BEGIN and COMMIT. Favoriting again
    // finds the favorite and writes nothing: no transaction, no COMMIT.
    let favorite = "/api/articles/article-5/favorite";
    let first = app.call(Method::POST, favorite, Some(&token), None).await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    // Counted before the write, the new favorite included.
    let favorites_of_article_5 = count(
        &app,
        "SELECT count(*) FROM favorites f JOIN articles a ON a.id = f.article_id WHERE a.slug = 'article-5'",
    )
    .await;
    assert_eq!(first.json["article"]["favorited"], true);
    assert_eq!(first.json["article"]["favoritesCount"], favorites_of_article_5);
    let again = app.call(Method::POST, favorite, Some(&token), None).await;
    assert_eq!(again.json, first.json);
    assert_eq!(warm_cost(&app, Method::POST, favorite, Some(&token)).await, (3, 1));
    assert_eq!(app.call(Method::DELETE, favorite, Some(&token), None).await.status, StatusCode::OK);
    let again = app.call(Method::POST, favorite, Some(&token), None).await;
    assert_eq!(again.json, first.json);
    let stats = again.stats.expect("the session's stats");
    assert_eq!((stats.statements, stats.round_trips), (4, 2), "{again:?}");
    let favorites: i64 = app
        .test_db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM favorites f JOIN users u ON u.id = f.user_id JOIN articles a ON a.id = f.article_id
             WHERE u.username = 'viewer' AND a.slug = 'article-5'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(favorites, 1);
}

#[tokio::test]
async fn deleting_an_article_costs_a_read_and_the_write() {
    let (app, token) = seeded_on(TestApp::with(1, Duration::from_secs(30)).await).await;
    let article = serde_json::json!({"article": {"title": "Mine", "description": "d", "body": "b", "tagList": []}});
    let mut slugs = Vec::new();
    for _ in 0..2 {
        let created = app.call(Method::POST, "/api/articles", Some(&token), Some(article.clone())).await;
        assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
        slugs.push(created.json["article"]["slug"].as_str().unwrap().to_owned());
    }
    let mut costs = Vec::new();
    for slug in &slugs {
        // The first delete prepares the statements on the one connection.
        let deleted = app.call(Method::DELETE, &format!("/api/articles/{slug}"), Some(&token), None).await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{deleted:?}");
        let stats = deleted.stats.expect("the session's stats");
        costs.push((stats.statements, stats.round_trips));
    }
    // The article beside the author's row (which the token check finds in
    // the identity map); the delete with BEGIN and COMMIT.
    assert_eq!(costs[1], (3, 2));
}

#[tokio::test]
async fn the_app_sums_what_requests_cost_for_the_load_script() {
    let (app, token) = seeded().await;
    let before = app.state.costs.totals();
    let list = app.call(Method::GET, "/api/articles?limit=5", Some(&token), None).await.stats.expect("stats");
    let tags = app.call(Method::GET, "/api/tags", None, None).await.stats.expect("stats");
    let refused = app.call(Method::GET, "/api/articles?limit=0", None, None).await;
    assert_eq!(refused.stats.map(|stats| stats.statements), Some(0), "refused before the database");
    let after = app.state.costs.totals();
    assert_eq!(after.requests - before.requests, 3);
    assert_eq!(after.statements - before.statements, list.statements + tags.statements);
    assert_eq!(after.round_trips - before.round_trips, list.round_trips + tags.round_trips);
    let health = app.call(Method::GET, "/health", None, None).await;
    // The health request itself is added once it is answered.
    assert_eq!(health.json["costs"]["requests"], after.requests, "{health:?}");
}

#[tokio::test]
async fn a_new_comment_costs_two_round_trips_and_a_new_article_three() {
    let (app, token) = seeded_on(TestApp::with(1, Duration::from_secs(30)).await).await;
    // The viewer's row with their follow of themselves and the article's
    // id, one statement; the insert, alone, the answer (with the comment's
    // generated id) written after. The second of each runs prepared.
    let mut costs = Vec::new();
    for number in 0..2 {
        let body = serde_json::json!({ "comment": { "body": format!("comment {number}") } });
        let answer = app.call(Method::POST, "/api/articles/article-3/comments", Some(&token), Some(body)).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
        assert_eq!(answer.json["comment"]["body"], format!("comment {number}"));
        assert_eq!(answer.json["comment"]["author"]["username"], "viewer");
        assert_eq!(answer.json["comment"]["author"]["following"], false);
        let (comments, _) = get(&app, "/api/articles/article-3/comments", Some(&token)).await;
        let stored = comments["comments"]
            .as_array()
            .expect("a list")
            .iter()
            .find(|c| c["body"] == answer.json["comment"]["body"]);
        assert_eq!(stored, Some(&answer.json["comment"]), "the answer shows the committed comment, its id included");
        let stats = answer.stats.expect("the session's stats");
        costs.push((stats.statements, stats.round_trips));
    }
    assert_eq!(costs[1], (2, 2));
    // The viewer's row with their follow of themselves; the article's
    // insert with BEGIN; its tags' insert with COMMIT.
    let mut costs = Vec::new();
    for number in 0..2 {
        let body = serde_json::json!({
            "article": { "title": format!("New {number}"), "description": "d", "body": "b", "tagList": ["z", "a", "z"] }
        });
        let answer = app.call(Method::POST, "/api/articles", Some(&token), Some(body)).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
        let article = &answer.json["article"];
        assert_eq!(
            (article["slug"].as_str(), article["body"].as_str()),
            (Some(format!("new-{number}").as_str()), Some("b"))
        );
        assert_eq!(article["tagList"], serde_json::json!(["a", "z"]));
        assert_eq!((article["favorited"].as_bool(), article["favoritesCount"].as_i64()), (Some(false), Some(0)));
        assert_eq!(article["author"]["username"], "viewer");
        let stats = answer.stats.expect("the session's stats");
        costs.push((stats.statements, stats.round_trips));
        // What the answer showed is what a read finds.
        let (read, _) = get(&app, &format!("/api/articles/new-{number}"), Some(&token)).await;
        assert_eq!(read["article"], *article);
    }
    assert_eq!(costs[1], (3, 3));
}

//! Memory stays bounded under a burst of password hashing: argon2 fills
//! 19 MiB per hash, so concurrent registrations run at most one hash per
//! core, and the process does not keep hundreds of MiB afterwards. In a
//! test binary of its own: the resident size is the process's.

mod support;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use support::TestApp;

/// The process's resident set size, in KiB (`VmRSS` of /proc/self/status).
fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_registrations_and_a_load_leave_at_most_64_mib_resident() {
    let test = async {
        let app = TestApp::new().await;
        let before = resident_kib();
        let registrations = (0..16).map(|n| {
            let app = &app;
            async move {
                let body = serde_json::json!({
                    "user": { "username": format!("burst{n}"), "email": format!("burst{n}@example.com"),
                              "password": "password123" }
                });
                app.call(Method::POST, "/api/users", None, Some(body)).await
            }
        });
        let answers = futures_util::future::join_all(registrations).await;
        assert!(answers.iter().all(|answer| answer.status == StatusCode::CREATED), "{answers:?}");
        let tokens: Vec<String> =
            answers.iter().map(|answer| answer.json["user"]["token"].as_str().unwrap().to_owned()).collect();
        // A load run: logins (a hash each), pages and writes.
        for (n, token) in tokens.iter().enumerate() {
            let login =
                serde_json::json!({ "user": { "email": format!("burst{n}@example.com"), "password": "password123" } });
            assert_eq!(app.call(Method::POST, "/api/users/login", None, Some(login)).await.status, StatusCode::OK);
            let article =
                serde_json::json!({ "article": { "title": format!("t{n}"), "description": "d", "body": "b" } });
            let created = app.call(Method::POST, "/api/articles", Some(token), Some(article)).await;
            assert_eq!(created.status, StatusCode::CREATED);
            assert_eq!(app.call(Method::GET, "/api/articles?limit=20", Some(token), None).await.status, StatusCode::OK);
        }
        let after = resident_kib();
        (before, after)
    };
    let (before, after) = tokio::time::timeout(Duration::from_secs(120), test).await.expect("finished within 120 s");
    eprintln!("resident: {before} KiB before the burst, {after} KiB after");
    assert!(after <= 64 * 1024, "{after} KiB resident after the burst (before: {before} KiB)");
}

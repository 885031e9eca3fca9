//! `orm_core::testing::TestDatabase`, the fixture users' own tests get: a
//! fresh database per test, gone afterwards however the test ends.

use std::future::Future;
use std::time::Duration;

use orm_core::testing::TestDatabase;
use orm_tests::TestDb;

/// Whether a database of this name exists on the `DATABASE_URL` server.
async fn exists(name: &str) -> bool {
    let admin = TestDb::admin_client().await;
    admin.query_one("SELECT count(*) FROM pg_database WHERE datname = $1", &[&name]).await.unwrap().get::<_, i64>(0)
        == 1
}

/// Creating and dropping databases waits on the server: a test must not hang.
async fn within_a_minute<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), test).await.expect("the test took over a minute")
}

#[tokio::test]
async fn cleanup_drops_the_database_with_its_open_connections() {
    within_a_minute(async {
        let test_db = TestDatabase::new().await.unwrap();
        let name = test_db.name().to_owned();
        assert!(name.starts_with(&format!("test_{}_", std::process::id())), "{name}");
        test_db.execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)").await.unwrap();
        let db = test_db.database().unwrap();
        let mut session = db.session();
        let rows = session.query_rows("SELECT current_database(), count(*) FROM t", &[]).await.unwrap();
        assert_eq!(rows[0].get::<_, String>(0), name);
        assert_eq!(rows[0].get::<_, i64>(1), 1);
        assert!(exists(&name).await);

        // The session still holds a connection inside its transaction.
        test_db.cleanup().await.unwrap();
        assert!(!exists(&name).await, "{name} is still there");
        assert!(session.query_rows("SELECT 1", &[]).await.is_err(), "its connections were ended");
    })
    .await;
}

#[tokio::test]
async fn dropping_the_fixture_inside_the_runtime_drops_the_database() {
    within_a_minute(async {
        let test_db = TestDatabase::new().await.unwrap();
        let name = test_db.name().to_owned();
        let db = test_db.database().unwrap();
        db.session().query_rows("SELECT 1", &[]).await.unwrap(); // a pooled connection stays open
        drop(test_db);
        assert!(!exists(&name).await, "{name} is still there");
    })
    .await;
}

#[tokio::test]
async fn a_test_that_panics_still_drops_its_database() {
    within_a_minute(async {
        let (name_tx, name_rx) = tokio::sync::oneshot::channel();
        let failing_test = tokio::spawn(async move {
            let test_db = TestDatabase::new().await.unwrap();
            name_tx.send(test_db.name().to_owned()).unwrap();
            panic!("the test failed");
        });
        assert!(failing_test.await.unwrap_err().is_panic());
        let name = name_rx.await.unwrap();
        assert!(!exists(&name).await, "{name} is still there");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixtures_created_at_once_are_separate_databases() {
    within_a_minute(async {
        let (a, b) = tokio::join!(TestDatabase::new(), TestDatabase::new());
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_ne!(a.name(), b.name());
        for (test_db, value) in [(&a, 1), (&b, 2)] {
            test_db.execute(&format!("CREATE TABLE t (v int); INSERT INTO t VALUES ({value})")).await.unwrap();
        }
        for (test_db, value) in [(&a, 1), (&b, 2)] {
            let rows = test_db.database().unwrap().session().query_rows("SELECT v FROM t", &[]).await.unwrap();
            let values: Vec<i32> = rows.iter().map(|row| row.get(0)).collect();
            assert_eq!(values, [value], "{} sees only its own table", test_db.name());
        }
        let names = [a.name().to_owned(), b.name().to_owned()];
        let (a, b) = tokio::join!(a.cleanup(), b.cleanup());
        a.unwrap();
        b.unwrap();
        for name in names {
            assert!(!exists(&name).await, "{name} is still there");
        }
    })
    .await;
}

#[tokio::test]
async fn a_prefix_names_the_project_and_the_url_keeps_its_parameters() {
    within_a_minute(async {
        // The server's URL may carry parameters of its own (`?sslmode=...`).
        let base = orm_tests::database_url();
        let separator = if base.contains('?') { '&' } else { '?' };
        let server = format!("{base}{separator}application_name=fixture_test");
        let test_db = TestDatabase::with_prefix(&server, "myapp_").await.unwrap();
        assert!(test_db.name().starts_with("myapp_"), "{}", test_db.name());
        let parameters = server.find('?').map_or("", |at| &server[at..]);
        assert!(test_db.url().ends_with(&format!("/{}{parameters}", test_db.name())), "{}", test_db.url());
        let rows = test_db.database().unwrap().session().query_rows("SHOW application_name", &[]).await.unwrap();
        assert_eq!(rows[0].get::<_, String>(0), "fixture_test");
        test_db.cleanup().await.unwrap();
    })
    .await;
}

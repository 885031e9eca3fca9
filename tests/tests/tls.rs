//! TLS, against the server `scripts/tls_db.sh` starts: it takes the test
//! databases over TLS only, with a certificate for `localhost` (and not for
//! 127.0.0.1) signed by `ORM_TLS_CA`. `sslmode` and `sslrootcert` mean what
//! they mean to libpq, a failure says what TLS had to do with it, and a
//! statement cut off mid-flight is cancelled over TLS too.

mod support;

use std::future::Future;
use std::time::Duration;

use orm_core::{Database, DatabaseConfig, Error, ErrorKind, SslMode};
use orm_tests::{TestDb, TlsServer};
use support::{drop_mid_statement, SCHEMA};

/// A fresh database on the TLS server.
async fn tls_db() -> (TestDb, TlsServer) {
    let server = TlsServer::from_env();
    (TestDb::on(&server.url).await, server)
}

/// `test_db`'s URL with `params` (`sslmode=...`) and with `host` for its host.
fn url_at(test_db: &TestDb, host: &str, params: &str) -> String {
    let url = test_db.url().replacen("@localhost:", &format!("@{host}:"), 1);
    format!("{url}?{params}")
}

fn url(test_db: &TestDb, params: &str) -> String {
    url_at(test_db, "localhost", params)
}

/// `future`, or a panic if it takes longer than a connection could.
async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), future).await.expect("timed out")
}

/// Connects with `url` and says whether the connection is encrypted.
async fn connects_with_tls(url: &str) -> orm_core::Result<bool> {
    bounded(async {
        let db = Database::connect(url)?;
        let rows = db.session().query_rows("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await?;
        Ok(rows[0].get(0))
    })
    .await
}

/// The message of the connection error `url` gets.
async fn connect_error(url: &str) -> String {
    let error = connects_with_tls(url).await.expect_err("connected");
    assert_eq!(error.kind(), ErrorKind::Connect, "{error}");
    error.to_string()
}

#[tokio::test]
async fn verify_full_with_the_servers_ca_connects_over_tls() {
    let (test_db, server) = tls_db().await;
    let url = url(&test_db, &format!("sslmode=verify-full&sslrootcert={}", server.ca));
    assert!(connects_with_tls(&url).await.unwrap());
}

#[tokio::test]
async fn the_tls_parameters_work_in_key_value_form() {
    let (test_db, server) = tls_db().await;
    let config = test_db.config();
    let url = format!(
        "host=localhost port={} user=postgres dbname={} sslmode=verify-full sslrootcert='{}'",
        config.get_ports()[0],
        test_db.name(),
        server.ca
    );
    assert!(connects_with_tls(&url).await.unwrap());
}

#[tokio::test]
async fn verify_full_with_another_ca_names_the_untrusted_certificate() {
    let (test_db, server) = tls_db().await;
    let message = connect_error(&url(&test_db, &format!("sslmode=verify-full&sslrootcert={}", server.wrong_ca))).await;
    assert!(message.contains(&format!("certificate not trusted by sslrootcert {}", server.wrong_ca)), "{message}");
    assert!(message.contains(&format!("database \"{}\"", test_db.name())), "{message}");
}

#[tokio::test]
async fn verify_full_by_an_address_the_certificate_does_not_name_is_a_host_name_mismatch() {
    let (test_db, server) = tls_db().await;
    let url = url_at(&test_db, "127.0.0.1", &format!("sslmode=verify-full&sslrootcert={}", server.ca));
    let message = connect_error(&url).await;
    assert!(message.contains("host name mismatch"), "{message}");
    assert!(message.contains("does not name 127.0.0.1"), "{message}");
}

#[tokio::test]
async fn verify_ca_checks_the_chain_but_not_the_host_name() {
    let (test_db, server) = tls_db().await;
    let url = url_at(&test_db, "127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={}", server.ca));
    assert!(connects_with_tls(&url).await.unwrap());

    let url = url_at(&test_db, "127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={}", server.wrong_ca));
    let message = connect_error(&url).await;
    assert!(message.contains("certificate not trusted by sslrootcert"), "{message}");
}

#[tokio::test]
async fn require_encrypts_without_checking_unless_given_a_ca() {
    let (test_db, server) = tls_db().await;
    // The server's CA is unknown here, and the address is not in its certificate.
    assert!(connects_with_tls(&url_at(&test_db, "127.0.0.1", "sslmode=require")).await.unwrap());

    // As in libpq, require with sslrootcert checks the chain (verify-ca).
    let message = connect_error(&url(&test_db, &format!("sslmode=require&sslrootcert={}", server.wrong_ca))).await;
    assert!(message.contains("certificate not trusted by sslrootcert"), "{message}");
    let url = url_at(&test_db, "127.0.0.1", &format!("sslmode=require&sslrootcert={}", server.ca));
    assert!(connects_with_tls(&url).await.unwrap());
}

#[tokio::test]
async fn prefer_the_default_connects_with_tls() {
    let (test_db, _server) = tls_db().await;
    assert!(connects_with_tls(&url(&test_db, "sslmode=prefer")).await.unwrap());
    assert!(connects_with_tls(test_db.url()).await.unwrap());
}

#[tokio::test]
async fn disable_against_a_server_that_requires_tls_says_so() {
    let (test_db, _server) = tls_db().await;
    let message = connect_error(&url(&test_db, "sslmode=disable")).await;
    assert!(message.contains("server requires TLS"), "{message}");
    assert!(message.contains("no pg_hba.conf entry"), "{message}");
}

#[tokio::test]
async fn a_missing_or_empty_ca_file_is_a_configuration_error() {
    let (test_db, server) = tls_db().await;
    let missing = format!("{}.missing", server.ca);
    let Err(error) = Database::connect(&url(&test_db, &format!("sslmode=verify-full&sslrootcert={missing}"))) else {
        panic!("a pool with a missing CA file");
    };
    assert!(matches!(&error, Error::Config(message) if message.contains(&missing)), "{error}");

    let mut config = DatabaseConfig::from_url(&url(&test_db, "sslmode=verify-ca")).unwrap();
    assert_eq!(config.tls.mode, SslMode::VerifyCa);
    let Err(error) = Database::with_config(config.clone()) else { panic!("verify-ca without a CA file") };
    assert!(error.to_string().contains("sslmode=verify-ca needs sslrootcert"), "{error}");
    let not_a_certificate = std::env::temp_dir().join(format!("{}.pem", test_db.name()));
    std::fs::write(&not_a_certificate, "a file of something else\n").unwrap();
    config.tls.root_cert = Some(not_a_certificate.clone());
    let built = Database::with_config(config);
    std::fs::remove_file(not_a_certificate).unwrap();
    let Err(error) = built else { panic!("a CA file without a certificate") };
    assert!(error.to_string().contains("holds no PEM certificate"), "{error}");
}

/// Drops a session mid-statement on a TLS connection: the cancel request
/// must go over TLS too, or the statement would run on for its 30 s.
async fn cancel_mid_statement_over_tls(after_first_statement: bool) {
    let (test_db, server) = tls_db().await;
    let mut config =
        DatabaseConfig::from_url(&url(&test_db, &format!("sslmode=verify-full&sslrootcert={}", server.ca)))
            .expect("the test database's URL");
    config.max_connections = 1;
    config.wait_timeout = Duration::from_secs(20);
    let db = Database::with_config(config.clone()).expect("pool");
    let watcher = Database::with_config(config).expect("pool");
    bounded(async {
        let monitor = watcher.checkout().await.expect("a TLS connection");
        monitor.batch_execute(SCHEMA).await.expect("create the test schema");
        drop_mid_statement(&db, &monitor, after_first_statement).await;
        let names = monitor.query("SELECT name FROM customer", &[]).await.unwrap();
        assert_eq!(names.len(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_session_dropped_mid_statement_over_tls_cancels_it() {
    cancel_mid_statement_over_tls(false).await;
}

#[tokio::test]
async fn a_session_dropped_mid_statement_inside_its_transaction_over_tls_cancels_it() {
    cancel_mid_statement_over_tls(true).await;
}

//! The test database itself: reachable through tokio-postgres and through a
//! deadpool-postgres pool, private to its test, and gone once dropped.

use orm_tests::TestDb;

async fn database_exists(name: &str) -> bool {
    let admin = TestDb::admin_client().await;
    let row = admin.query_one("SELECT count(*) FROM pg_database WHERE datname = $1", &[&name]).await.unwrap();
    row.get::<_, i64>(0) == 1
}

#[tokio::test]
async fn raw_client_writes_and_reads_a_row() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client.batch_execute("CREATE TABLE customer (id bigint PRIMARY KEY, name text NOT NULL)").await.unwrap();
    client.execute("INSERT INTO customer (id, name) VALUES ($1, $2)", &[&1_i64, &"Ada"]).await.unwrap();

    let row = client.query_one("SELECT name, current_database() FROM customer WHERE id = $1", &[&1_i64]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "Ada");
    assert_eq!(row.get::<_, String>(1), db.name());
}

#[tokio::test]
async fn pool_writes_and_reads_a_row() {
    let db = TestDb::new().await;
    let pool = db.pool(4);
    let writer = pool.get().await.unwrap();
    writer.batch_execute("CREATE TABLE customer (id bigint PRIMARY KEY, name text NOT NULL)").await.unwrap();
    let insert = writer.prepare_cached("INSERT INTO customer (id, name) VALUES ($1, $2)").await.unwrap();
    writer.execute(&insert, &[&7_i64, &"Grace"]).await.unwrap();

    // A second connection sees the row: the pool really is on this database
    // and the insert was committed.
    let reader = pool.get().await.unwrap();
    let row = reader.query_one("SELECT name FROM customer WHERE id = $1", &[&7_i64]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "Grace");
    assert_eq!(pool.status().size, 2);
}

#[tokio::test]
async fn url_connects_to_the_test_database() {
    let db = TestDb::new().await;
    let (client, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let row = client.query_one("SELECT current_database()", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), db.name());
    assert_eq!(db.config().get_dbname(), Some(db.name()));
}

#[tokio::test]
async fn test_databases_are_distinct_and_dropped_with_their_handle() {
    let first = TestDb::new().await;
    let second = TestDb::new().await;
    assert_ne!(first.name(), second.name());
    assert_ne!(first.url(), second.url());

    first.client().await.batch_execute("CREATE TABLE only_in_first (id int)").await.unwrap();
    let row = second.client().await.query_one("SELECT to_regclass('only_in_first') IS NULL", &[]).await.unwrap();
    assert!(row.get::<_, bool>(0), "a table leaked between test databases");

    // An open connection must not keep the database alive.
    let _open = first.client().await;
    let first_name = first.name().to_owned();
    assert!(database_exists(&first_name).await);
    drop(first);
    assert!(!database_exists(&first_name).await);
    assert!(database_exists(second.name()).await);
}

#[test]
fn database_is_dropped_when_the_test_panics() {
    let (names, received) = std::sync::mpsc::channel();
    let panicked = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let db = TestDb::new().await;
            names.send(db.name().to_owned()).unwrap();
            panic!("deliberate panic while a TestDb is alive");
        });
    })
    .join();
    assert!(panicked.is_err());

    let name = received.recv().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    assert!(!runtime.block_on(database_exists(&name)));
}

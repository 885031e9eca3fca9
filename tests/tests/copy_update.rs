//! Large update batches go by binary `COPY` into a temporary table and one
//! `UPDATE ... FROM` it, writing what the `UNNEST` update writes; small
//! ones, and the unnamed statement mode, keep `UPDATE ... FROM UNNEST`.
//! Which form a flush took shows in its statements (two against one) and
//! in `SessionStats::copied_rows`.

mod support;

use std::future::Future;
use std::time::Duration;

use orm_core::{Database, Error, Session, SessionStats, StatementMode, Tracked};
use orm_tests::TestDb;
use support::{setup_with, Account, Customer};

/// Batches of this many rows and more go by `COPY` in these tests.
const THRESHOLD: usize = 100;

/// Rows per table: several of the flush's binding chunks (4,096 rows).
const ROWS: i64 = 10_000;
/// [`ROWS`], counted as entities.
const COUNT: usize = 10_000;
/// [`ROWS`], counted as the session's statistics count rows.
const COPIED: u64 = 10_000;

async fn within_time<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(120), test).await.expect("the test finished in time")
}

async fn setup() -> (TestDb, Database) {
    setup_with(|config| config.copy_update_threshold = Some(THRESHOLD)).await
}

/// `ROWS` accounts (owner `o{i}`, balance `i`, version 1, ids 1 to
/// `ROWS`) and as many customers (name `c{i}`, no description).
async fn seed(test_db: &TestDb) {
    let sql = format!(
        "INSERT INTO account (owner, balance, version) SELECT 'o' || i, i, 1 FROM generate_series(1, {ROWS}) i;
         INSERT INTO customer (name) SELECT 'c' || i FROM generate_series(1, {ROWS}) i"
    );
    test_db.client().await.batch_execute(&sql).await.unwrap();
}

/// A seeded database (see [`seed`]) and a session that loaded every
/// account, in key order.
async fn loaded() -> (TestDb, Session, Vec<Tracked<Account>>) {
    let (test_db, db) = setup().await;
    seed(&test_db).await;
    let mut session = db.session();
    let accounts = session.query::<Account>().order_by(Account::ID.asc()).all().await.unwrap();
    (test_db, session, accounts)
}

/// Every account, by id: (id, balance, version).
async fn accounts_stored(test_db: &TestDb) -> Vec<(i64, i64, i32)> {
    let client = test_db.client().await;
    let rows = client.query("SELECT id, balance, version FROM account ORDER BY id", &[]).await.unwrap();
    rows.iter().map(|row| (row.get(0), row.get(1), row.get(2))).collect()
}

/// Every customer's description, by id.
async fn descriptions_stored(test_db: &TestDb) -> Vec<(i32, Option<String>)> {
    let client = test_db.client().await;
    let rows = client.query("SELECT id, description FROM customer ORDER BY id", &[]).await.unwrap();
    rows.iter().map(|row| (row.get(0), row.get(1))).collect()
}

/// What a flush or commit added to the counts: statements and rows copied.
fn sent(before: SessionStats, after: SessionStats) -> (u64, u64) {
    (after.statements - before.statements, after.copied_rows - before.copied_rows)
}

#[tokio::test]
async fn a_large_update_batch_is_copied_and_writes_exactly_its_rows() {
    within_time(async {
        let (test_db, session, accounts) = loaded().await;
        // Every seventh row is written to its own value: nothing to update.
        for account in &accounts {
            let mut account = account.write();
            if account.id % 7 != 0 {
                account.balance += 1_000;
            }
        }
        let changed = accounts.len() - accounts.len() / 7;
        let before = session.stats();
        let stats = session.commit().await.unwrap();
        assert_eq!(sent(before, stats), (2, u64::try_from(changed).unwrap()), "the COPY and the UPDATE");

        let expected: Vec<(i64, i64, i32)> =
            (1..=ROWS).map(|id| if id % 7 == 0 { (id, id, 1) } else { (id, id + 1_000, 2) }).collect();
        assert_eq!(accounts_stored(&test_db).await, expected);
        let versions: Vec<i32> = accounts.iter().map(|account| account.read().version).collect();
        assert_eq!(versions, expected.iter().map(|&(_, _, version)| version).collect::<Vec<_>>());
        assert!(!accounts.iter().any(Tracked::is_modified));
    })
    .await;
}

#[tokio::test]
async fn a_batch_below_the_threshold_keeps_one_unnest_update() {
    within_time(async {
        let (test_db, session, accounts) = loaded().await;
        for account in &accounts[..THRESHOLD - 1] {
            account.write().balance = 0;
        }
        let before = session.stats();
        let stats = session.commit().await.unwrap();
        assert_eq!(sent(before, stats), (1, 0), "one UPDATE, nothing copied");
        let stored = accounts_stored(&test_db).await;
        assert!(stored[..THRESHOLD - 1].iter().all(|&(_, balance, version)| (balance, version) == (0, 2)));
        assert!(stored[THRESHOLD - 1..].iter().all(|&(id, balance, version)| (balance, version) == (id, 1)));
    })
    .await;
}

/// Updates have a threshold of their own, since `COPY` pays later for them
/// than for inserts: a batch of updates as large as a batch of inserts
/// that goes by `COPY` can keep `UNNEST`.
#[tokio::test]
async fn updates_and_inserts_go_by_copy_at_their_own_thresholds() {
    within_time(async {
        let (test_db, db) = setup_with(|config| {
            config.copy_threshold = Some(THRESHOLD);
            config.copy_update_threshold = Some(THRESHOLD * 10);
        })
        .await;
        seed(&test_db).await;
        let mut session = db.session();
        let accounts = session.query::<Account>().order_by(Account::ID.asc()).all().await.unwrap();
        for account in &accounts[..THRESHOLD * 2] {
            account.write().balance = 0;
        }
        let before = session.stats();
        session.flush().await.unwrap();
        assert_eq!(sent(before, session.stats()), (1, 0), "one UNNEST update, nothing copied");

        session.add_all((0..THRESHOLD * 2).map(|n| Customer { id: 0, name: format!("new {n}"), description: None }));
        let before = session.stats();
        session.flush().await.unwrap();
        assert_eq!(session.stats().copied_rows - before.copied_rows, THRESHOLD as u64 * 2, "the inserts were copied");

        for account in &accounts[..THRESHOLD * 10] {
            account.write().balance = 7;
        }
        let before = session.stats();
        let stats = session.commit().await.unwrap();
        assert_eq!(sent(before, stats), (2, THRESHOLD as u64 * 10), "COPY and UPDATE");
        let stored = accounts_stored(&test_db).await;
        assert!(stored[..THRESHOLD * 2].iter().all(|&(_, balance, version)| (balance, version) == (7, 3)));
        assert!(stored[THRESHOLD * 2..THRESHOLD * 10]
            .iter()
            .all(|&(_, balance, version)| (balance, version) == (7, 2)));
        assert!(stored[THRESHOLD * 10..].iter().all(|&(id, balance, version)| (balance, version) == (id, 1)));
        let customers = test_db.client().await.query_one("SELECT count(*) FROM customer", &[]).await.unwrap();
        assert_eq!(customers.get::<_, i64>(0), ROWS + i64::try_from(THRESHOLD * 2).unwrap());
    })
    .await;
}

/// The unnamed mode is for poolers in transaction mode, which hand the
/// server connection (and its temporary tables) on between transactions
/// and lose track of a transaction during an extended-protocol COPY.
#[tokio::test]
async fn the_unnamed_statement_mode_keeps_one_unnest_update() {
    within_time(async {
        let (test_db, db) = setup_with(|config| {
            config.copy_update_threshold = Some(THRESHOLD);
            config.statements = StatementMode::Unnamed;
        })
        .await;
        seed(&test_db).await;
        let mut session = db.session();
        let accounts = session.query::<Account>().all().await.unwrap();
        for account in &accounts {
            account.write().balance += 1;
        }
        let before = session.stats();
        let stats = session.commit().await.unwrap();
        assert_eq!(sent(before, stats), (1, 0), "one UPDATE, nothing copied");
        assert!(accounts_stored(&test_db)
            .await
            .iter()
            .all(|&(id, balance, version)| (balance, version) == (id + 1, 2)));
    })
    .await;
}

#[tokio::test]
async fn stale_rows_are_named_nothing_is_written_and_the_session_goes_on() {
    within_time(async {
        let (test_db, mut session, accounts) = loaded().await;
        // After the load: two rows change and one goes.
        test_db
            .client()
            .await
            .batch_execute(
                "UPDATE account SET version = version + 1 WHERE id IN (9999, 5); DELETE FROM account WHERE id = 4321",
            )
            .await
            .unwrap();
        let before = accounts_stored(&test_db).await;
        for account in &accounts {
            account.write().balance += 1_000;
        }
        let stats = session.stats();
        let error = session.flush().await.unwrap_err();
        assert_eq!(sent(stats, session.stats()), (2, COPIED), "sent by COPY");
        match &error {
            Error::StaleData { entity, keys, expected, matched, .. } => {
                assert_eq!(*entity, "Account");
                assert_eq!(keys, &["5", "4321", "9999"], "in the order the rows were sent");
                assert_eq!((*expected, *matched), (COUNT, COUNT - 3));
            }
            other => panic!("expected StaleData, got {other:?}"),
        }
        assert_eq!(accounts_stored(&test_db).await, before, "nothing of the failed flush is written");
        assert!(accounts.iter().all(Tracked::is_modified), "every change is still pending");
        assert!(accounts.iter().all(|account| account.read().version == 1), "no version advanced");

        // The rollback to the flush savepoint dropped the temporary table
        // this flush created: the next one creates it again, and the
        // UPDATE prepared against the first is planned again.
        for id in [5, 4_321, 9_999] {
            session.expunge(&accounts[id - 1]);
        }
        let stats = session.stats();
        let committed = session.commit().await.unwrap();
        assert_eq!(sent(stats, committed), (2, COPIED - 3), "sent by COPY");
        let after = accounts_stored(&test_db).await;
        assert_eq!(after.len(), COUNT - 1);
        for (id, balance, version) in after {
            let stale = id == 5 || id == 9_999;
            let expected = if stale { (id, 2) } else { (id + 1_000, 2) };
            assert_eq!((balance, version), expected, "row {id}");
        }
    })
    .await;
}

#[tokio::test]
async fn a_stale_row_fails_the_commit_and_nothing_is_committed() {
    within_time(async {
        let (test_db, session, accounts) = loaded().await;
        test_db.client().await.batch_execute("UPDATE account SET version = 7 WHERE id = 7000").await.unwrap();
        let before = accounts_stored(&test_db).await;
        for account in &accounts {
            account.write().balance += 1;
        }
        match session.commit().await.unwrap_err() {
            Error::StaleData { keys, expected, matched, .. } => {
                assert_eq!(keys, &["7000"]);
                assert_eq!((expected, matched), (COUNT, COUNT - 1));
            }
            other => panic!("expected StaleData, got {other:?}"),
        }
        assert_eq!(accounts_stored(&test_db).await, before, "nothing committed");
    })
    .await;
}

/// A failing row (a CHECK violation) fails the whole batch; the session
/// keeps its work pending, and once the row is fixed the batch goes
/// through on the same connection.
#[tokio::test]
async fn a_failed_batch_leaves_the_session_as_before() {
    within_time(async {
        let (test_db, mut session, accounts) = loaded().await;
        for account in &accounts {
            account.write().balance -= 1;
        }
        // Account 1 had balance 1: now 0, fine; make one negative.
        accounts[3].write().balance = -5;
        let before = accounts_stored(&test_db).await;
        let error = session.flush().await.unwrap_err();
        assert!(matches!(error, Error::CheckViolation { .. }), "got {error:?}");
        assert_eq!(accounts_stored(&test_db).await, before);
        assert!(accounts.iter().all(Tracked::is_modified));

        accounts[3].write().balance = 3;
        let before = session.stats();
        let committed = session.commit().await.unwrap();
        assert_eq!(sent(before, committed), (2, COPIED), "sent by COPY");
        let expected: Vec<(i64, i64, i32)> = (1..=ROWS).map(|id| (id, id - 1, 2)).collect();
        assert_eq!(accounts_stored(&test_db).await, expected);
    })
    .await;
}

/// Two flushes of one transaction share the temporary table of a column
/// set: the second copies only its own rows, so what a raw statement
/// wrote between the two over rows of the first is not written back.
#[tokio::test]
async fn two_flushes_of_one_transaction_each_write_only_their_rows() {
    within_time(async {
        let (test_db, db) = setup().await;
        seed(&test_db).await;
        let mut session = db.session();
        let customers = session.query::<Customer>().order_by(Customer::ID.asc()).all().await.unwrap();
        for customer in &customers[..200] {
            customer.write().description = Some("first".to_owned());
        }
        let before = session.stats();
        session.flush().await.unwrap();
        assert_eq!(sent(before, session.stats()), (2, 200));
        session.execute("UPDATE customer SET description = 'raw' WHERE id <= 200", &[]).await.unwrap();
        for customer in &customers[200..500] {
            customer.write().description = Some("second".to_owned());
        }
        let before = session.stats();
        session.flush().await.unwrap();
        let after = session.stats();
        assert_eq!(sent(before, after), (2, 300));
        assert_eq!(after.rows - before.rows, 600, "300 copied, 300 updated");
        session.commit().await.unwrap();

        let expected: Vec<(i32, Option<String>)> = (1..=10_000)
            .map(|id| {
                let description = match id {
                    1..=200 => Some("raw".to_owned()),
                    201..=500 => Some("second".to_owned()),
                    _ => None,
                };
                (id, description)
            })
            .collect();
        assert_eq!(descriptions_stored(&test_db).await, expected);
    })
    .await;
}

/// Batches of different column sets each take their own table; only one
/// `COPY` goes per round trip, so the second set keeps `UNNEST`.
#[tokio::test]
async fn one_batch_of_a_flush_goes_by_copy_and_the_others_by_unnest() {
    within_time(async {
        let (test_db, session, accounts) = loaded().await;
        for account in &accounts[..300] {
            account.write().balance = 0;
        }
        for account in &accounts[300..700] {
            let mut account = account.write();
            account.owner = format!("new {}", account.id);
            account.balance = 1;
        }
        let before = session.stats();
        let stats = session.commit().await.unwrap();
        let (statements, copied) = sent(before, stats);
        assert_eq!(statements, 3, "a COPY, its UPDATE, and one UNNEST update");
        assert!(copied == 300 || copied == 400, "one batch copied, not {copied}");
        let client = test_db.client().await;
        let rows = client.query("SELECT id, owner, balance, version FROM account ORDER BY id", &[]).await.unwrap();
        for row in rows {
            let (id, owner, balance, version): (i64, String, i64, i32) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            let expected = match id {
                1..=300 => (format!("o{id}"), 0, 2),
                301..=700 => (format!("new {id}"), 1, 2),
                _ => (format!("o{id}"), id, 1),
            };
            assert_eq!((owner, balance, version), expected, "row {id}");
        }
    })
    .await;
}

//! Large update and delete batches: one statement each, which sends back
//! no row when every row matched and the keys of the rows it missed when
//! some did not, so that a stale row among 20,000 is still named.

mod support;

use std::future::Future;
use std::time::Duration;

use orm_core::{Error, Tracked};
use support::{setup, setup_with, Account};

/// Rows per batch: several of the flush's binding chunks (4,096 rows).
const ROWS: i64 = 20_000;

async fn within_time<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(120), test).await.expect("the test finished in time")
}

/// `ROWS` accounts: owner `o{i}`, balance `i`, version 1, with ids 1 to `ROWS`.
async fn seed(test_db: &orm_tests::TestDb) {
    let sql = format!(
        "INSERT INTO account (owner, balance, version) SELECT 'o' || i, i, 1 FROM generate_series(1, {ROWS}) i"
    );
    test_db.client().await.batch_execute(&sql).await.unwrap();
}

/// Every row, by id: (id, balance, version).
async fn stored(test_db: &orm_tests::TestDb) -> Vec<(i64, i64, i32)> {
    let client = test_db.client().await;
    let rows = client.query("SELECT id, balance, version FROM account ORDER BY id", &[]).await.unwrap();
    rows.iter().map(|row| (row.get(0), row.get(1), row.get(2))).collect()
}

/// The `UNNEST` form: with `COPY` off, as batches below the `COPY`
/// threshold and the unnamed statement mode send it (the `COPY` form is
/// in `tests/copy_update.rs`).
#[tokio::test]
async fn a_large_update_batch_writes_exactly_its_rows_in_one_statement() {
    within_time(async {
        let (test_db, db) = setup_with(|config| config.copy_update_threshold = None).await;
        seed(&test_db).await;
        let mut session = db.session();
        let accounts = session.query::<Account>().order_by(Account::ID.asc()).all().await.unwrap();
        assert_eq!(accounts.len(), 20_000);
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
        assert_eq!(stats.statements - before.statements, 1, "one UPDATE for every changed row");
        assert_eq!(stats.rows - before.rows, changed as u64, "the rows it updated count, not the rows it returned");

        let expected: Vec<(i64, i64, i32)> =
            (1..=ROWS).map(|id| if id % 7 == 0 { (id, id, 1) } else { (id, id + 1_000, 2) }).collect();
        assert_eq!(stored(&test_db).await, expected);
        let versions: Vec<i32> = accounts.iter().map(|account| account.read().version).collect();
        assert_eq!(versions, expected.iter().map(|&(_, _, version)| version).collect::<Vec<_>>());
    })
    .await;
}

#[tokio::test]
async fn stale_rows_in_a_large_update_batch_are_named_and_nothing_is_written() {
    within_time(async {
        let (test_db, db) = setup().await;
        seed(&test_db).await;
        let mut session = db.session();
        let accounts = session.query::<Account>().order_by(Account::ID.asc()).all().await.unwrap();
        // After the load: two rows change and one goes.
        let client = test_db.client().await;
        client
            .batch_execute(
                "UPDATE account SET version = version + 1 WHERE id IN (19999, 5);
                 DELETE FROM account WHERE id = 12345",
            )
            .await
            .unwrap();
        let before = stored(&test_db).await;
        for account in &accounts {
            account.write().balance += 1_000;
        }
        let error = session.flush().await.unwrap_err();
        match &error {
            Error::StaleData { entity, keys, expected, matched, .. } => {
                assert_eq!(*entity, "Account");
                assert_eq!(keys, &["5", "12345", "19999"], "in the order the rows were sent");
                assert_eq!((*expected, *matched), (20_000, 19_997));
            }
            other => panic!("expected StaleData, got {other:?}"),
        }
        assert_eq!(stored(&test_db).await, before, "nothing of the failed flush is written");
        assert!(accounts.iter().all(Tracked::is_modified), "every change is still pending");
        assert!(accounts.iter().all(|account| account.read().version == 1), "no version advanced");

        // The session is usable: without the stale rows, the rest goes through.
        for id in [5, 12_345, 19_999] {
            session.expunge(&accounts[id - 1]);
        }
        session.commit().await.unwrap();
        let after = stored(&test_db).await;
        assert_eq!(after.len(), 19_999);
        for (id, balance, version) in after {
            let stale = id == 5 || id == 19_999;
            let expected = if stale { (id, 2) } else { (id + 1_000, 2) };
            assert_eq!((balance, version), expected, "row {id}");
        }
    })
    .await;
}

#[tokio::test]
async fn a_stale_row_in_a_large_delete_batch_is_named_and_nothing_is_deleted() {
    within_time(async {
        let (test_db, db) = setup().await;
        seed(&test_db).await;
        let mut session = db.session();
        let accounts = session.query::<Account>().order_by(Account::ID.asc()).all().await.unwrap();
        test_db.client().await.batch_execute("UPDATE account SET version = 7 WHERE id = 17000").await.unwrap();
        for account in &accounts {
            session.delete(account).unwrap();
        }
        let error = session.commit().await.unwrap_err();
        match &error {
            Error::StaleData { keys, expected, matched, .. } => {
                assert_eq!(keys, &["17000"]);
                assert_eq!((*expected, *matched), (20_000, 19_999));
            }
            other => panic!("expected StaleData, got {other:?}"),
        }
        assert_eq!(stored(&test_db).await.len(), 20_000, "no row was deleted");
    })
    .await;
}

/// Each row's snapshot is its own, though the rows of a load keep theirs
/// together, per block of rows: written out of load order, some to the
/// values they had, flushed, then written again inside a savepoint that is
/// rolled back, every row keeps what it had at each step.
#[tokio::test]
async fn rows_written_out_of_load_order_keep_their_own_snapshots() {
    within_time(async {
        let (test_db, db) = setup().await;
        seed(&test_db).await;
        let mut session = db.session();
        let accounts = session.query::<Account>().order_by(Account::ID.asc()).all().await.unwrap();
        // Last row first; every third row written to the values it had.
        for account in accounts.iter().rev() {
            let mut account = account.write();
            if account.id % 3 != 0 {
                account.balance += 1_000;
            }
        }
        let changed = |account: &Tracked<Account>| account.read().id % 3 != 0;
        assert!(accounts.iter().all(|account| account.is_modified() == changed(account)));
        assert_eq!(session.pending().unwrap().updates, accounts.iter().filter(|a| changed(a)).count());
        session.flush().await.unwrap();
        assert!(!accounts.iter().any(Tracked::is_modified), "flushed");

        // Inside a savepoint, the even rows in a scattered order (7,919 is
        // prime, so each row comes once), flushed, then rolled back.
        let savepoint = session.begin_nested().await.unwrap();
        let count = accounts.len();
        for step in 0..count {
            let account = &accounts[step * 7_919 % count];
            if account.read().id % 2 == 0 {
                account.write().balance += 5;
            }
        }
        session.flush().await.unwrap();
        session.rollback_nested(savepoint).await.unwrap();
        let flushed = |id: i64| if id % 3 != 0 { (id, id + 1_000, 2) } else { (id, id, 1) };
        for account in &accounts {
            let account = account.read();
            assert_eq!(
                (account.id, account.balance, account.version),
                flushed(account.id),
                "as the first flush left it"
            );
        }
        assert!(!accounts.iter().any(Tracked::is_modified), "the rollback leaves nothing pending");

        // One row of a block written again, the others of it not.
        accounts[70].write().balance = 1;
        assert!(accounts[70].is_modified() && !accounts[69].is_modified() && !accounts[71].is_modified());
        session.commit().await.unwrap();
        let expected: Vec<(i64, i64, i32)> =
            (1..=ROWS).map(|id| if id == 71 { (71, 1, 3) } else { flushed(id) }).collect();
        assert_eq!(stored(&test_db).await, expected);

        // A handle outliving its session keeps telling its changes.
        accounts[5].write().balance = 0;
        assert!(accounts[5].is_modified() && !accounts[6].is_modified());
    })
    .await;
}

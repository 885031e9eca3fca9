//! A large load hands its thread back to the runtime between chunks of
//! rows, as a large flush does: cut off at any of those points (its future
//! dropped, as by a request's timeout), it leaves a session whose identity
//! map holds each row at most once, and whose next load finds the rest.

mod support;

use std::task::Poll;
use std::time::Duration;

use orm_core::{Session, Tracked};
use orm_tests::{within, TestDb};
use support::{setup, Customer};

/// More than a few chunks of rows between two yields.
const ROWS: i32 = 20_000;

async fn seed(test_db: &TestDb) {
    test_db
        .client()
        .await
        .execute("INSERT INTO customer (name) SELECT 'customer ' || n FROM generate_series(1, $1) AS n", &[&ROWS])
        .await
        .expect("seed the customers");
}

/// Polls a tracked load of every customer `polls` times at most, letting
/// its rows arrive in between, then drops it; whether it finished.
async fn load_cut_off_after(session: &mut Session, polls: usize) -> bool {
    let mut load = Box::pin(session.query::<Customer>().all());
    for _ in 0..polls {
        if let Poll::Ready(loaded) = futures_util::poll!(load.as_mut()) {
            assert_eq!(loaded.expect("the load").len(), usize::try_from(ROWS).unwrap());
            return true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    false
}

#[tokio::test]
async fn a_large_load_cut_off_at_any_poll_leaves_each_row_tracked_once_or_not_at_all() {
    let (test_db, db) = setup().await;
    seed(&test_db).await;
    let keys: Vec<i32> = (1..=ROWS).collect();
    within(async {
        let mut partly_tracked = 0;
        for cut_after in 1.. {
            let mut session = db.session();
            let finished = load_cut_off_after(&mut session, cut_after).await;
            let before = session.stats();
            let found = session.get_many::<Customer>(&keys).await.expect("a load after the cut-off one");
            let tracked_before = u64::try_from(ROWS).unwrap() - (session.stats().rows - before.rows);
            assert_eq!(found.len(), keys.len(), "cut after {cut_after} polls");
            for (customer, key) in found.iter().zip(&keys) {
                let customer = customer.read();
                assert_eq!((customer.id, customer.name.as_str()), (*key, format!("customer {key}").as_str()));
            }
            let statements = session.stats().statements;
            let again = session.get_many::<Customer>(&keys).await.unwrap();
            assert_eq!(session.stats().statements, statements, "every row is tracked now");
            assert!(again.iter().zip(&found).all(|(a, b)| Tracked::ptr_eq(a, b)), "cut after {cut_after} polls");
            session.commit().await.expect("the session commits");
            if finished {
                assert_eq!(tracked_before, u64::try_from(ROWS).unwrap(), "the finished load tracked every row");
                break;
            }
            if 0 < tracked_before && tracked_before < u64::try_from(ROWS).unwrap() {
                partly_tracked += 1;
            }
        }
        // Its rows enter the identity map a chunk at a time after they all
        // arrived: a cut between two chunks left some of them tracked.
        assert!(partly_tracked > 0, "the load yielded while its rows entered the identity map");
    })
    .await;
}

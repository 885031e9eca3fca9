//! A large load hands its thread back to the runtime between chunks of
//! rows, as a large flush does: cut off at any of those points (its future
//! dropped, as by a request's timeout), it leaves a session whose identity
//! map holds each row at most once, and whose next load finds the rest.
//! So do a relation load, an eager load's levels and a raw query's new
//! rows, which track their rows once all are read.

mod support;

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use orm_core::{Error, Session, Tracked};
use orm_tests::{within, TestDb};
use support::blog::{self, Post, User};
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

/// Polls `load` `polls` times at most, letting its rows arrive in
/// between, then drops it; its result if it finished.
async fn cut_off_after<T>(load: impl Future<Output = orm_core::Result<T>>, polls: usize) -> Option<T> {
    let mut load = std::pin::pin!(load);
    for _ in 0..polls {
        if let Poll::Ready(loaded) = futures_util::poll!(load.as_mut()) {
            return Some(loaded.expect("the load"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    None
}

/// How a test loads every customer, tracked.
#[derive(Clone, Copy, Debug)]
enum CustomerLoad {
    /// A query's `all()`, whose rows enter the map after they all arrived.
    Query,
    /// A raw query, whose new rows are tracked after they all arrived.
    Raw,
}

/// Polls a tracked load of every customer `polls` times at most, then
/// drops it; whether it finished.
async fn load_cut_off_after(session: &mut Session, how: CustomerLoad, polls: usize) -> bool {
    let loaded = match how {
        CustomerLoad::Query => cut_off_after(session.query::<Customer>().all(), polls).await,
        CustomerLoad::Raw => {
            let raw = session.query_raw::<Customer>("SELECT id, name, description FROM customer ORDER BY id", &[]);
            cut_off_after(raw, polls).await
        }
    };
    loaded.is_some_and(|loaded| loaded.len() == usize::try_from(ROWS).unwrap())
}

/// Cuts a load of every customer off after each number of polls in turn
/// until one finishes, checking after each cut that every customer comes
/// back once, right, and stays tracked; and that some cut left part of the
/// rows tracked (the load yielded while it tracked them).
async fn every_cut_off_leaves_each_row_tracked_once_or_not_at_all(how: CustomerLoad) {
    let (test_db, db) = setup().await;
    seed(&test_db).await;
    let keys: Vec<i32> = (1..=ROWS).collect();
    let all = u64::try_from(ROWS).unwrap();
    within(async {
        let mut partly_tracked = 0;
        for cut_after in 1.. {
            let mut session = db.session();
            let finished = load_cut_off_after(&mut session, how, cut_after).await;
            let before = session.stats();
            let found = session.get_many::<Customer>(&keys).await.expect("a load after the cut-off one");
            let tracked_before = all - (session.stats().rows - before.rows);
            assert_eq!(found.len(), keys.len(), "{how:?} cut after {cut_after} polls");
            for (customer, key) in found.iter().zip(&keys) {
                let customer = customer.read();
                assert_eq!((customer.id, customer.name.as_str()), (*key, format!("customer {key}").as_str()));
            }
            let statements = session.stats().statements;
            let again = session.get_many::<Customer>(&keys).await.unwrap();
            assert_eq!(session.stats().statements, statements, "every row is tracked now");
            assert!(again.iter().zip(&found).all(|(a, b)| Tracked::ptr_eq(a, b)), "{how:?} cut after {cut_after}");
            session.commit().await.expect("the session commits");
            if finished {
                assert_eq!(tracked_before, all, "the finished load tracked every row");
                break;
            }
            if 0 < tracked_before && tracked_before < all {
                partly_tracked += 1;
            }
        }
        assert!(partly_tracked > 0, "the {how:?} load yielded while it tracked its rows");
    })
    .await;
}

/// A query's rows enter the identity map a chunk at a time after they all
/// arrived: a cut between two chunks leaves some of them tracked.
#[tokio::test]
async fn a_large_load_cut_off_at_any_poll_leaves_each_row_tracked_once_or_not_at_all() {
    every_cut_off_leaves_each_row_tracked_once_or_not_at_all(CustomerLoad::Query).await;
}

#[tokio::test]
async fn a_large_raw_query_cut_off_at_any_poll_leaves_each_row_tracked_once_or_not_at_all() {
    every_cut_off_leaves_each_row_tracked_once_or_not_at_all(CustomerLoad::Raw).await;
}

/// Ten users with 2,000 posts each.
async fn seed_posts(test_db: &TestDb) {
    let client = test_db.client().await;
    client.batch_execute(blog::SCHEMA).await.expect("the blog's tables");
    client
        .batch_execute(
            "INSERT INTO users (name) SELECT 'user ' || n FROM generate_series(1, 10) AS n;
             INSERT INTO post (author_id, title) SELECT n % 10 + 1, 'post ' || n FROM generate_series(1, 20000) AS n;",
        )
        .await
        .expect("seed the posts");
}

#[tokio::test]
async fn a_large_relation_load_cut_off_at_any_poll_leaves_its_collections_unloaded_and_each_row_tracked_once() {
    let (test_db, db) = setup().await;
    seed_posts(&test_db).await;
    let keys: Vec<i64> = (1..=20_000).collect();
    within(async {
        let mut partly_tracked = 0;
        for cut_after in 1.. {
            let mut session = db.session();
            let users = session.query::<User>().all().await.unwrap();
            let finished = cut_off_after(session.load_children(&users, Post::AUTHOR), cut_after).await;
            // What the cut-off load had tracked: the rows a load of every
            // post by key does not read again.
            let before = session.stats();
            let found = session.get_many::<Post>(&keys).await.unwrap();
            let tracked_before = 20_000 - (session.stats().rows - before.rows);
            if let Some(posts) = &finished {
                assert_eq!((posts.len(), tracked_before), (20_000, 20_000), "cut after {cut_after} polls");
                for user in &users {
                    assert_eq!(session.children(user, Post::AUTHOR).unwrap().len(), 2_000);
                }
            } else {
                // The collections are not loaded until every child is tracked.
                let unloaded = session.children(&users[0], Post::AUTHOR);
                assert!(matches!(unloaded, Err(Error::RelationNotLoaded { .. })), "cut after {cut_after} polls");
            }
            // Loading them again gives each post one instance, the ones the
            // cut-off load tracked among them.
            let posts = session.load_children(&users, Post::AUTHOR).await.unwrap();
            assert_eq!(posts.len(), 20_000);
            let mut ids: Vec<i64> = posts.iter().map(Tracked::key).collect();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), 20_000, "one instance per post");
            for post in &posts {
                let at = usize::try_from(post.key() - 1).unwrap();
                assert!(Tracked::ptr_eq(post, &found[at]), "one instance for post {}", post.key());
                let post = post.read();
                assert_eq!(post.title, format!("post {}", post.id));
            }
            for user in &users {
                assert_eq!(session.children(user, Post::AUTHOR).unwrap().len(), 2_000);
            }
            session.commit().await.expect("the session commits");
            if finished.is_some() {
                break;
            }
            if 0 < tracked_before && tracked_before < 20_000 {
                partly_tracked += 1;
            }
        }
        assert!(partly_tracked > 0, "the relation load yielded while it tracked its rows");
    })
    .await;
}

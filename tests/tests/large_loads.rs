//! A large load hands its thread back to the runtime between chunks of
//! rows, as a large flush does: cut off at any of those points (its future
//! dropped, as by a request's timeout), it leaves a session whose identity
//! map holds each row at most once, and whose next load finds the rest.
//! So do a relation load, an eager load's levels, a join, a raw query's
//! new rows and loads run together, which track their rows once all are
//! read, and a load of rows the session holds already, in part or in all.

mod support;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use orm_core::{Database, Error, Load, Session, Tracked};
use orm_tests::{within, TestDb};
use support::blog::{self, Post, User};
use support::{setup, Customer};

/// More than a few chunks of rows between two yields: customers, and
/// posts (2,000 for each of 10 users).
const ROWS: i32 = 20_000;

async fn seed(test_db: &TestDb) {
    test_db
        .client()
        .await
        .execute("INSERT INTO customer (name) SELECT 'customer ' || n FROM generate_series(1, $1) AS n", &[&ROWS])
        .await
        .expect("seed the customers");
}

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

/// Runs `attempt` in a new session for each number of polls in turn (1, 2,
/// ...), committing the session after each, until an attempt's load
/// finished. An attempt cuts its load off after that many polls, checks
/// the session, and says whether the load finished and how many of its
/// [`ROWS`] rows were tracked, `preloaded` of them before the load. Some
/// cut must have left part of the others tracked: the load yielded while
/// it tracked its rows. The polls its rows take to arrive vary from one
/// attempt to the next, so a sweep can step over the few polls of the
/// tracking; up to three sweeps are made.
async fn cut_off_at_every_poll(
    db: &Database,
    what: &str,
    preloaded: u64,
    mut attempt: impl AsyncFnMut(&mut Session, usize) -> (bool, u64),
) {
    let all = u64::try_from(ROWS).unwrap();
    within(async {
        let mut partly_tracked = 0;
        for _sweep in 0..3 {
            for cut_after in 1.. {
                let mut session = db.session();
                let (finished, tracked_before) = attempt(&mut session, cut_after).await;
                session.commit().await.expect("the session commits");
                if finished {
                    assert_eq!(tracked_before, all, "the finished {what} tracked every row");
                    break;
                }
                if preloaded < tracked_before && tracked_before < all {
                    partly_tracked += 1;
                }
            }
            if partly_tracked > 0 {
                break;
            }
        }
        assert!(partly_tracked > 0, "the {what} yielded while it tracked its rows");
    })
    .await;
}

/// Loads every `E` by key: each comes back once and stays tracked. Returns
/// them with how many were tracked before (not read again).
async fn every_row_by_key<E: orm_core::Entity<Key = K>, K: Clone>(
    session: &mut Session,
    keys: &[K],
) -> (Vec<Tracked<E>>, u64) {
    let before = session.stats();
    let found = session.get_many::<E>(keys).await.expect("a load after the cut-off one");
    let tracked_before = u64::try_from(ROWS).unwrap() - (session.stats().rows - before.rows);
    assert_eq!(found.len(), keys.len());
    let statements = session.stats().statements;
    let again = session.get_many::<E>(keys).await.unwrap();
    assert_eq!(session.stats().statements, statements, "every row is tracked now");
    assert!(again.iter().zip(&found).all(|(a, b)| Tracked::ptr_eq(a, b)), "one instance per row");
    (found, tracked_before)
}

/// How a test loads every customer, tracked.
#[derive(Clone, Copy)]
enum CustomerLoad {
    /// A query's `all()`, whose rows enter the map after they all arrived.
    Query,
    /// A raw query, whose new rows are tracked after they all arrived.
    Raw,
    /// A query's `all_later()` run by `load_together`.
    Together,
    /// `Load::get_many` of every key run by `load_together`.
    TogetherByKey,
    /// Two loads run by `load_together` whose rows overlap: a query's
    /// `all_later()` of the first three quarters, `Load::get_many` of the
    /// last three.
    TogetherOverlapping,
}

/// Whether a session tracks some of the customers before the load that is
/// cut off.
#[derive(Clone, Copy, PartialEq)]
enum Preload {
    Nothing,
    /// Every other customer (the even keys), so that held and new rows
    /// alternate in every block.
    EveryOther,
}

async fn every_cut_off_customer_load_leaves_each_row_tracked_once_or_not_at_all(
    how: CustomerLoad,
    what: &str,
    preload: Preload,
) {
    let (test_db, db) = setup().await;
    seed(&test_db).await;
    let keys: Vec<i32> = (1..=ROWS).collect();
    let preloaded = if preload == Preload::EveryOther { ROWS / 2 } else { 0 };
    cut_off_at_every_poll(&db, what, u64::try_from(preloaded).unwrap(), async |session, cut_after| {
        let held = match preload {
            Preload::Nothing => vec![],
            Preload::EveryOther => {
                // A query, not a raw one, which would open a transaction
                // that the cut load, in flight, would then leave failed.
                let even = orm_core::Expr::<Customer, i32>::raw("t.id % 2", vec![]).eq(0);
                session.query::<Customer>().filter(even).all().await.expect("every other customer")
            }
        };
        let loaded = match how {
            CustomerLoad::Query => cut_off_after(session.query::<Customer>().all(), cut_after).await,
            CustomerLoad::Raw => {
                let raw = session.query_raw::<Customer>("SELECT id, name, description FROM customer ORDER BY id", &[]);
                cut_off_after(raw, cut_after).await
            }
            CustomerLoad::Together => {
                let load = session.query::<Customer>().order_by(Customer::ID.asc()).all_later();
                cut_off_after(session.load_together((load,)), cut_after).await.map(|(loaded,)| loaded)
            }
            CustomerLoad::TogetherByKey => {
                let load = Load::get_many(&keys);
                cut_off_after(session.load_together((load,)), cut_after).await.map(|(loaded,)| loaded)
            }
            CustomerLoad::TogetherOverlapping => {
                let first = session.query::<Customer>().filter(Customer::ID.le(ROWS / 4 * 3)).all_later();
                let last = Load::get_many(&keys[usize::try_from(ROWS / 4).unwrap()..]);
                let both = cut_off_after(session.load_together((first, last)), cut_after).await;
                both.map(|(first, last)| first.into_iter().chain(last).collect())
            }
        };
        let (found, tracked_before) = every_row_by_key::<Customer, i32>(session, &keys).await;
        for (customer, key) in found.iter().zip(&keys) {
            let customer = customer.read();
            assert_eq!((customer.id, customer.name.as_str()), (*key, format!("customer {key}").as_str()));
        }
        let key_of = |customer: &Tracked<Customer>| usize::try_from(customer.key() - 1).unwrap();
        for customer in held.iter().chain(loaded.iter().flatten()) {
            assert!(
                Tracked::ptr_eq(customer, &found[key_of(customer)]),
                "one instance for customer {}",
                customer.key()
            );
        }
        (loaded.is_some(), tracked_before)
    })
    .await;
}

/// A query's rows enter the identity map a chunk at a time after they all
/// arrived: a cut between two chunks leaves some of them tracked.
#[tokio::test]
async fn a_large_load_cut_off_at_any_poll_leaves_each_row_tracked_once_or_not_at_all() {
    every_cut_off_customer_load_leaves_each_row_tracked_once_or_not_at_all(
        CustomerLoad::Query,
        "query",
        Preload::Nothing,
    )
    .await;
}

#[tokio::test]
async fn a_large_raw_query_cut_off_at_any_poll_leaves_each_row_tracked_once_or_not_at_all() {
    every_cut_off_customer_load_leaves_each_row_tracked_once_or_not_at_all(
        CustomerLoad::Raw,
        "raw query",
        Preload::Nothing,
    )
    .await;
}

/// A group's loads decode and track their rows in a first step that
/// yields, before any load's result is made.
#[tokio::test]
async fn a_large_load_run_together_cut_off_at_any_poll_leaves_each_row_tracked_once_or_not_at_all() {
    for (how, what) in [
        (CustomerLoad::Together, "grouped query"),
        (CustomerLoad::TogetherByKey, "grouped get"),
        (CustomerLoad::TogetherOverlapping, "grouped overlapping loads"),
    ] {
        every_cut_off_customer_load_leaves_each_row_tracked_once_or_not_at_all(how, what, Preload::Nothing).await;
    }
}

/// Rows the session tracks already, between new ones in every block: a
/// cut leaves the held instances in place and each new row tracked once
/// or not at all, whatever the load.
#[tokio::test]
async fn a_large_load_of_half_tracked_rows_cut_off_at_any_poll_leaves_each_row_tracked_once_or_not_at_all() {
    for (how, what) in [
        (CustomerLoad::Query, "query over held rows"),
        (CustomerLoad::Raw, "raw query over held rows"),
        (CustomerLoad::Together, "grouped query over held rows"),
        (CustomerLoad::TogetherOverlapping, "grouped overlapping loads over held rows"),
    ] {
        every_cut_off_customer_load_leaves_each_row_tracked_once_or_not_at_all(how, what, Preload::EveryOther).await;
    }
}

/// Every post by key, checked against the seed.
async fn every_post_by_key(session: &mut Session) -> (Vec<Tracked<Post>>, u64) {
    let keys: Vec<i64> = (1..=i64::from(ROWS)).collect();
    let (found, tracked_before) = every_row_by_key::<Post, i64>(session, &keys).await;
    for (post, key) in found.iter().zip(&keys) {
        let post = post.read();
        assert_eq!((post.id, post.title.as_str()), (*key, format!("post {key}").as_str()));
    }
    (found, tracked_before)
}

/// The post of `found` (every post, by key) with `post`'s key.
fn same_post<'a>(found: &'a [Tracked<Post>], post: &Tracked<Post>) -> &'a Tracked<Post> {
    &found[usize::try_from(post.key() - 1).unwrap()]
}

#[tokio::test]
async fn a_large_relation_load_cut_off_at_any_poll_leaves_its_collections_unloaded_and_each_row_tracked_once() {
    let (test_db, db) = setup().await;
    seed_posts(&test_db).await;
    cut_off_at_every_poll(&db, "relation load", 0, async |session, cut_after| {
        let users = session.query::<User>().all().await.unwrap();
        let loaded = cut_off_after(session.load_children(&users, Post::AUTHOR), cut_after).await;
        let (found, tracked_before) = every_post_by_key(session).await;
        if loaded.is_none() {
            // The collections are not loaded until every child is tracked.
            let unloaded = session.children(&users[0], Post::AUTHOR);
            assert!(matches!(unloaded, Err(Error::RelationNotLoaded { .. })), "cut after {cut_after} polls");
        }
        // Loading them again gives each post its one instance.
        let posts = session.load_children(&users, Post::AUTHOR).await.unwrap();
        assert_eq!(posts.len(), found.len());
        for post in loaded.iter().flatten().chain(&posts) {
            assert!(Tracked::ptr_eq(post, same_post(&found, post)), "one instance for post {}", post.key());
        }
        for user in &users {
            assert_eq!(session.children(user, Post::AUTHOR).unwrap().len(), 2_000);
        }
        (loaded.is_some(), tracked_before)
    })
    .await;
}

#[tokio::test]
async fn a_large_join_cut_off_at_any_poll_leaves_each_row_tracked_once_or_not_at_all() {
    let (test_db, db) = setup().await;
    seed_posts(&test_db).await;
    cut_off_at_every_poll(&db, "join", 0, async |session, cut_after| {
        let loaded = cut_off_after(session.query::<Post>().join(Post::AUTHOR).all(), cut_after).await;
        let (found, tracked_before) = every_post_by_key(session).await;
        // Joined again, each post and author is its one instance.
        let joined = session.query::<Post>().join(Post::AUTHOR).all().await.unwrap();
        let authors = session.query::<User>().order_by(User::ID.asc()).all().await.unwrap();
        for (post, author) in loaded.iter().flatten().chain(&joined) {
            assert!(Tracked::ptr_eq(post, same_post(&found, post)), "one instance for post {}", post.key());
            assert_eq!(author.key(), post.read().author_id);
            let author_at = usize::try_from(author.key() - 1).unwrap();
            assert!(Tracked::ptr_eq(author, &authors[author_at]), "one instance for user {}", author.key());
        }
        (loaded.is_some(), tracked_before)
    })
    .await;
}

/// A waker that counts the times the thread polling a load woke it: its
/// yields to the runtime. A load waiting for rows is woken by the
/// connection's task, on another thread.
struct YieldCounter {
    polling: Thread,
    yields: AtomicUsize,
    woken: AtomicBool,
}

impl Wake for YieldCounter {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if std::thread::current().id() == self.polling.id() {
            self.yields.fetch_add(1, Ordering::Relaxed);
        }
        self.woken.store(true, Ordering::Release);
        self.polling.unpark();
    }
}

/// Runs `load` to its end on a thread of its own, outside the runtime's
/// workers (there a yield wakes its task at once, while it is polled),
/// and counts its yields.
fn count_yields<T: Send>(load: impl Future<Output = T> + Send) -> (T, usize) {
    let runtime = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            let polled = scope.spawn(|| {
                let _runtime = runtime.enter();
                let counter = Arc::new(YieldCounter {
                    polling: std::thread::current(),
                    yields: AtomicUsize::new(0),
                    woken: AtomicBool::new(false),
                });
                let waker = Waker::from(Arc::clone(&counter));
                let mut context = Context::from_waker(&waker);
                let mut load = std::pin::pin!(load);
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    if let Poll::Ready(loaded) = load.as_mut().poll(&mut context) {
                        return (loaded, counter.yields.load(Ordering::Relaxed));
                    }
                    while !counter.woken.swap(false, Ordering::Acquire) {
                        assert!(Instant::now() < deadline, "the load finished within 60 s");
                        std::thread::park_timeout(Duration::from_millis(100));
                    }
                }
            });
            polled.join().expect("the polling thread")
        })
    })
}

/// A load of rows the session tracks already makes no instance, and must
/// yield as often as the load that first tracked them: it went through
/// them all in one poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_load_of_rows_tracked_already_yields_as_often_as_the_first() {
    let (test_db, db) = setup().await;
    seed(&test_db).await;
    seed_posts(&test_db).await;
    let mut session = db.session();
    let mut runs = vec![];
    for _ in 0..2 {
        let load = session.query::<Customer>().all_later();
        let (loaded, yields) = count_yields(session.load_together((load,)));
        runs.push((loaded.expect("every customer").0, yields));
    }
    let [(first, first_yields), (again, yields)] = <[_; 2]>::try_from(runs).ok().unwrap();
    assert!(first.iter().zip(&again).all(|(a, b)| Tracked::ptr_eq(a, b)), "one instance per customer");
    assert!(first_yields > 1 && yields >= first_yields, "grouped query: {yields} yields, first {first_yields}");

    let mut runs = vec![];
    for _ in 0..2 {
        let (joined, yields) = count_yields(session.query::<Post>().join(Post::AUTHOR).all());
        runs.push((joined.expect("every post with its author"), yields));
    }
    let [(first, first_yields), (again, yields)] = <[_; 2]>::try_from(runs).ok().unwrap();
    assert!(first.iter().zip(&again).all(|(a, b)| Tracked::ptr_eq(&a.0, &b.0)), "one instance per post");
    assert!(first_yields > 1 && yields >= first_yields, "join: {yields} yields, first {first_yields}");
    session.commit().await.expect("the session commits");
}

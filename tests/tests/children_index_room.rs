//! The children index takes room for what a session loaded, however the
//! rows came. A load of children sizes the index's buckets for the
//! children it found per parent, for its own parents' buckets only: a later
//! load of children of many other parents (a page of posts after one
//! prolific author's) must not give each of their buckets the room of the
//! prolific author's thousands. And children that arrive alternating
//! between their parents, row by row, are entered once each. In a test
//! binary of its own, its tests one at a time: the memory measured is the
//! process's.

mod support;

use orm_core::Database;
use orm_tests::{within, TestDb};
use support::blog::{self, Post, User};

/// Posts of the prolific author, and other authors with one post each.
const POSTS: i64 = 4_000;

/// Held by each test while it runs: they measure the one process.
static MEASURED: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The process's data segment (heap included, touched or not), in KiB:
/// `VmData` of /proc/self/status. Room reserved and not written yet shows
/// here, not in the resident size.
fn data_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmData:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmData line")
}

/// A database with the blog's tables, holding the rows `rows` inserts.
async fn blog_with(rows: &str) -> (TestDb, Database) {
    let test_db = TestDb::new().await;
    let client = test_db.client().await;
    client.batch_execute(blog::SCHEMA).await.expect("the blog's tables");
    client.batch_execute(rows).await.expect("seed the posts");
    let db = Database::connect(test_db.url()).expect("pool");
    (test_db, db)
}

#[tokio::test]
async fn a_load_of_many_parents_children_after_one_parents_many_takes_room_for_what_it_loads() {
    let _alone = MEASURED.lock().await;
    within(async {
        let (_test_db, db) = blog_with(&format!(
            "INSERT INTO users (name) SELECT 'user ' || n FROM generate_series(1, {POSTS} + 1) AS n;
             INSERT INTO post (author_id, title) SELECT 1, 'post ' || n FROM generate_series(1, {POSTS}) AS n;
             INSERT INTO post (author_id, title) SELECT n, 'post ' || n FROM generate_series(2, {POSTS} + 1) AS n;"
        ))
        .await;
        let mut session = db.session();

        let prolific = session.get::<User>(1).await.unwrap().expect("the prolific author");
        let theirs = session.load_children(std::slice::from_ref(&prolific), Post::AUTHOR).await.unwrap();
        assert_eq!(theirs.len(), usize::try_from(POSTS).unwrap());

        let before = data_kib();
        let others = session.query::<Post>().filter(Post::AUTHOR_ID.gt(1_i64)).all().await.unwrap();
        let grown_mib = data_kib().saturating_sub(before) / 1024;
        assert_eq!(others.len(), usize::try_from(POSTS).unwrap());
        // Each of the 4,000 buckets with room for 4,000 handles would be
        // 250 MiB; the posts themselves take a few.
        assert!(grown_mib < 32, "loading {POSTS} posts of as many authors grew the heap by {grown_mib} MiB");

        let author = session.get::<User>(2).await.unwrap().expect("another author");
        session.load_children(std::slice::from_ref(&author), Post::AUTHOR).await.unwrap();
        assert_eq!(session.children(&author, Post::AUTHOR).unwrap().len(), 1, "the index files them all the same");
        assert_eq!(session.children(&prolific, Post::AUTHOR).unwrap().len(), usize::try_from(POSTS).unwrap());
        session.commit().await.unwrap();
    })
    .await;
}

/// Posts stored alternating between ten authors (as rows inserted over
/// time are), loaded by a relation load: every row starts a run of its
/// author's children. Bringing the index up to date after a write (here a
/// title changed) enters each post once, not each run's rows to the end
/// of its bucket (20,000 posts took 1.1 GiB so).
#[tokio::test]
async fn children_that_arrive_alternating_between_parents_are_entered_once_each() {
    let _alone = MEASURED.lock().await;
    within(async {
        let (_test_db, db) = blog_with(
            "INSERT INTO users (name) SELECT 'user ' || n FROM generate_series(1, 10) AS n;
             INSERT INTO post (author_id, title) SELECT n % 10 + 1, 'post ' || n FROM generate_series(1, 20000) AS n;",
        )
        .await;
        let mut session = db.session();
        let users = session.query::<User>().all().await.unwrap();
        session.load_children(&users, Post::AUTHOR).await.unwrap();
        let first = session.children(&users[0], Post::AUTHOR).unwrap();

        let before = data_kib();
        first[0].modify(|post| post.title = "retitled".into());
        for user in &users {
            assert_eq!(session.children(user, Post::AUTHOR).unwrap().len(), 2_000);
        }
        let grown_mib = data_kib().saturating_sub(before) / 1024;
        assert!(grown_mib < 32, "bringing the index of 20,000 posts up to date grew the heap by {grown_mib} MiB");
        session.commit().await.unwrap();
    })
    .await;
}

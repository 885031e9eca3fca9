//! A flush that fails, at whatever step, leaves the database and the session
//! agreeing: nothing half-committed, no connection handed back inside a
//! transaction, and no link to a pending parent left waiting for ever.

use std::collections::HashMap;
use std::task::Poll;
use std::time::Duration;

mod support;

use orm_core::{Database, DatabaseConfig, Entity, Error, Json};
use orm_tests::TestDb;
use support::blog::{self, user, Comment, Post, User};
use support::{checkout_state, count_rows};

/// `note.id` is `bigserial`: an `i32` field cannot hold it.
#[derive(Entity, Clone, Debug, PartialEq)]
struct Note {
    #[orm(primary_key, generated)]
    id: i32,
    #[orm(references = User)]
    user_id: i64,
}

/// A table that does not exist: preparing its INSERT fails.
#[derive(Entity, Clone, Debug, PartialEq)]
struct Missing {
    #[orm(primary_key)]
    id: i64,
}

/// A map whose keys are not strings, which JSON cannot hold.
type ByPoint = HashMap<(i32, i32), i32>;

/// Its body cannot be serialized: the parameter fails to encode, and its
/// statement is never sent.
#[derive(Entity, Clone, Debug, PartialEq)]
struct Doc {
    #[orm(primary_key, generated)]
    id: i64,
    body: Json<ByPoint>,
}

/// Beside `blog::SCHEMA`.
const SCHEMA: &str = "
    CREATE TABLE note (id bigserial PRIMARY KEY, user_id bigint NOT NULL REFERENCES users);
    CREATE TABLE doc (id bigserial PRIMARY KEY, body jsonb NOT NULL);
    INSERT INTO users (name) VALUES ('ann');
    INSERT INTO post (author_id, title) VALUES (1, 'ann 1');
    INSERT INTO comment (post_id, body) VALUES (1, 'first');
";

/// One connection, so the next session gets the connection the last one used.
async fn setup() -> (TestDb, Database) {
    let test_db = TestDb::new().await;
    let client = test_db.client().await;
    client.batch_execute(blog::SCHEMA).await.unwrap();
    client.batch_execute(SCHEMA).await.unwrap();
    let mut config = DatabaseConfig::from_url(test_db.url()).unwrap();
    config.max_connections = 1;
    config.wait_timeout = Duration::from_secs(20);
    (test_db, Database::with_config(config).unwrap())
}

#[tokio::test]
async fn a_parameter_that_cannot_be_encoded_commits_nothing() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    session.add(user("ben"));
    session.add(Doc { id: 0, body: Json(HashMap::from([((1, 2), 3)])) });
    let error = session.commit().await.unwrap_err();
    assert!(matches!(error, Error::Database(_)), "{error:?}");
    assert_eq!(count_rows(&test_db, "users").await, 1, "the insert sent beside it was not committed");
    assert!(checkout_state(&db).await.0);
}

#[tokio::test]
async fn a_commit_whose_statement_cannot_be_prepared_rolls_back_what_was_flushed() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    session.add(user("ben"));
    session.flush().await.unwrap();
    session.add(Missing { id: 1 });
    let error = session.commit().await.unwrap_err();
    assert!(matches!(error, Error::Database(_)), "{error:?}");
    assert_eq!(count_rows(&test_db, "users").await, 1);
    assert!(checkout_state(&db).await.0, "the connection went back inside the failed transaction");
}

#[tokio::test]
async fn a_later_round_trip_refused_before_it_is_sent_undoes_the_earlier_ones() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let ben = session.add(user("ben"));
    let note = session.add(Note { id: 0, user_id: 0 });
    session.set_parent(&note, Note::USER, &ben).unwrap();
    // Ben goes in the first round trip; the note, which waits for his key,
    // is refused in the second before it is sent.
    let error = session.flush().await.unwrap_err();
    assert!(matches!(error, Error::ColumnType { entity: "Note", .. }), "{error:?}");

    assert!(session.expunge(&note));
    session.commit().await.unwrap();
    assert_eq!(count_rows(&test_db, "users").await, 2, "ben was inserted once, by the commit");
}

#[tokio::test]
async fn expunging_a_child_linked_to_a_pending_parent_drops_the_link() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let post = session.get_one::<Post>(1).await.unwrap();
    let ben = session.add(user("ben"));
    session.set_parent(&post, Post::AUTHOR, &ben).unwrap();
    assert!(session.expunge(&post));
    session.commit().await.unwrap();

    assert_eq!(count_rows(&test_db, "users").await, 2, "ben was committed");
    let author: i64 =
        test_db.client().await.query_one("SELECT author_id FROM post WHERE id = 1", &[]).await.unwrap().get(0);
    assert_eq!(author, 1, "the expunged post was not changed");
    assert!(checkout_state(&db).await.0, "the commit ended the transaction");
}

#[tokio::test]
async fn refresh_discards_a_pending_change_of_parent() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let post = session.get_one::<Post>(1).await.unwrap();
    let ben = session.add(user("ben"));
    session.set_parent(&post, Post::AUTHOR, &ben).unwrap();
    session.refresh(&post).await.unwrap();
    session.commit().await.unwrap();

    assert_eq!(post.read().author_id, 1, "the object agrees with the database");
    let author: i64 =
        test_db.client().await.query_one("SELECT author_id FROM post WHERE id = 1", &[]).await.unwrap().get(0);
    assert_eq!(author, 1);
}

#[tokio::test]
async fn links_made_inside_a_rolled_back_savepoint_are_gone_with_it() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let savepoint = session.begin_nested().await.unwrap();
    let ben = session.add(user("ben"));
    let post = session.add(Post { id: 0, author_id: 0, title: "ben 1".into() });
    session.set_parent(&post, Post::AUTHOR, &ben).unwrap();
    session.rollback_nested(savepoint).await.unwrap();

    session.add(user("cy"));
    session.commit().await.unwrap();
    assert_eq!((count_rows(&test_db, "users").await, count_rows(&test_db, "post").await), (2, 1));
}

#[tokio::test]
async fn a_loaded_child_moved_to_a_deleted_pending_parent_is_deleted_with_it() {
    let (test_db, db) = setup().await;
    let mut session = db.session();
    let comment = session.get_one::<Comment>(1).await.unwrap();
    let draft = session.add(Post { id: 0, author_id: 1, title: "draft".into() });
    session.set_parent(&comment, Comment::POST, &draft).unwrap();
    session.delete(&draft).unwrap();
    session.commit().await.unwrap();
    assert_eq!((count_rows(&test_db, "post").await, count_rows(&test_db, "comment").await), (1, 0));
}

/// Polls the session's flush `polls` times at most, letting its round
/// trips progress in between, and then drops it; whether it finished.
async fn flush_cut_off_after(session: &mut orm_core::Session, polls: usize) -> bool {
    let mut flush = Box::pin(session.flush());
    for _ in 0..polls {
        if let Poll::Ready(result) = futures_util::poll!(flush.as_mut()) {
            result.unwrap();
            return true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    false
}

/// A flush cut off at any poll leaves state of it in the session; with its
/// work then discarded, the next flush has nothing to send but still ends
/// that state (only a flush that ended lets the next empty one skip it),
/// and what the session commits after is what its objects say.
#[tokio::test]
async fn a_flush_cut_off_and_discarded_is_ended_by_the_next_empty_flush() {
    const ROWS: usize = 10_000;
    let (test_db, db) = setup().await;
    for cut_after in 1.. {
        let mut session = db.session();
        let added = session.add_all((0..ROWS).map(|i| user(&format!("u{i}"))));
        let finished = flush_cut_off_after(&mut session, cut_after).await;
        for user in &added {
            // Cut off while applying, some are neither pending nor tracked.
            match session.delete(user) {
                Ok(()) | Err(Error::NotInSession { .. }) => {}
                Err(error) => panic!("cut after {cut_after} polls: {error:?}"),
            }
        }
        // Its autoflush: nothing pending unless the flush had inserted the
        // rows (then their deletes).
        let ann = match session.get::<User>(1).await {
            Ok(ann) => ann,
            Err(error) => {
                assert!(matches!(error, Error::TransactionFailed), "cut after {cut_after} polls: {error:?}");
                None
            }
        };
        if let Some(ann) = &ann {
            ann.write().name = format!("ann {cut_after}");
        }
        let committed = session.commit().await;
        if let Err(error) = &committed {
            assert!(matches!(error, Error::TransactionFailed), "cut after {cut_after} polls: {error:?}");
        }
        assert_eq!(count_rows(&test_db, "users").await, 1, "cut after {cut_after} polls");
        let name: String = test_db.client().await.query_one("SELECT name FROM users", &[]).await.unwrap().get(0);
        let expected = if committed.is_ok() && ann.is_some() { format!("ann {cut_after}") } else { "ann".to_owned() };
        assert_eq!(name, expected, "cut after {cut_after} polls");
        test_db.client().await.batch_execute("UPDATE users SET name = 'ann'").await.unwrap();
        if finished {
            break;
        }
    }
}

/// A flush of many rows binds and applies them a chunk at a time, yielding
/// to the runtime in between. Cut off at any of its polls (its future
/// dropped, as by a timeout), it leaves a session that either never sent
/// the rows and still has them pending, or can only roll back: never one
/// whose objects disagree with the transaction.
#[tokio::test]
async fn a_large_flush_cut_off_at_any_poll_leaves_no_half_applied_session() {
    const ROWS: usize = 20_000;
    let (test_db, db) = setup().await;
    for cut_after in 1.. {
        let mut session = db.session();
        session.add_all((0..ROWS).map(|i| user(&format!("u{i}"))));
        let finished = flush_cut_off_after(&mut session, cut_after).await;
        let committed = session.commit().await;
        let expected = if committed.is_ok() { 1 + ROWS } else { 1 };
        if let Err(error) = &committed {
            assert!(matches!(error, Error::TransactionFailed), "cut after {cut_after} polls: {error:?}");
        }
        assert_eq!(
            count_rows(&test_db, "users").await,
            i64::try_from(expected).unwrap(),
            "cut after {cut_after} polls"
        );
        test_db.client().await.batch_execute("DELETE FROM users WHERE name <> 'ann'").await.unwrap();
        if finished {
            break;
        }
    }
}

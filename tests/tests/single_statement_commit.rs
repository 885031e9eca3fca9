//! A commit whose whole unit of work is one statement that writes all its
//! rows or none (an insert, an unversioned delete) sends that
//! statement alone, as its own transaction: no `BEGIN`, no `COMMIT`, no
//! transaction guard for the server to run. Everything else still gets
//! its transaction, and a failure is still all or nothing (or, when the
//! connection is lost under the statement, reported as unknown).

mod support;

use orm_core::{CommitToken, Entity, ErrorKind, IsolationLevel, OnConflict};
use orm_tests::{within, TestDb};
use support::{checkout_state, count_rows, customer, seeded, setup_with, Account, Customer, LogBuffer};

/// What went to the server: the `db.query.text` of each closed statement
/// span of the log, in order.
fn statements_sent(log: &LogBuffer) -> Vec<String> {
    log.text()
        .lines()
        .filter(|line| line.contains("close"))
        .filter_map(|line| line.rsplit_once("orm.statement{").map(|(_, own)| own))
        .filter_map(|fields| fields.split_once("db.query.text=\"").map(|(_, text)| unquote(text)))
        .collect()
}

/// The quoted field value `text` starts with, up to its closing quote,
/// its escapes undone.
fn unquote(text: &str) -> String {
    let mut value = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => value.extend(chars.next()),
            '"' => break,
            c => value.push(c),
        }
    }
    value
}

/// Whether `text` is the check the ORM runs right behind a statement
/// alone (with the log position after it for a commit token).
fn is_check(text: &str) -> bool {
    text.starts_with("SELECT pg_current_xact_id_if_assigned() IS NOT NULL")
}

/// The unversioned child of the tests below, for a delete that needs no check.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "note")]
struct Note {
    #[orm(primary_key, generated)]
    id: i64,
    text: String,
}

async fn create_notes(test_db: &TestDb) {
    let client = test_db.client().await;
    client.batch_execute("CREATE TABLE note (id bigserial PRIMARY KEY, text text NOT NULL)").await.unwrap();
}

#[tokio::test]
async fn a_commit_of_one_insert_or_one_delete_sends_that_statement_alone() {
    // One connection, so that a statement prepared once stays prepared.
    let (test_db, db) = setup_with(|config| config.max_connections = 1).await;
    create_notes(&test_db).await;
    let log = LogBuffer::default();
    let _guard = log.install_spans();

    // One row, then a batch: one statement each, and nothing around it.
    // (The first of each shape also costs the round trip that prepares it.)
    for name in ["ann", "ben"] {
        let mut session = db.session();
        let added = session.add(customer(name));
        let stats = session.commit().await.unwrap();
        assert_eq!(stats.statements, 1);
        assert!(added.read().id > 0, "the key came back");
    }
    let mut session = db.session();
    let notes = session.add_all([Note { id: 0, text: "a".into() }, Note { id: 0, text: "b".into() }]);
    let stats = session.commit().await.unwrap();
    assert_eq!(stats.statements, 1);
    assert!(notes[0].read().id < notes[1].read().id, "keys in input order");

    // An insert with an on-conflict rule: one clashing row left as it is.
    let mut session = db.session();
    let clash = session.add_on_conflict(customer("ann"), OnConflict::columns(Customer::NAME).do_nothing());
    let stats = session.commit().await.unwrap();
    assert_eq!(stats.statements, 1);
    assert_eq!(clash.read().id, 0, "no row written, so no key");

    // A read first (alone too, as reads before a write are), then one delete.
    let mut session = db.session();
    let first = session.get_one::<Note>(notes[0].read().id).await.unwrap();
    session.delete(&first).unwrap();
    let stats = session.commit().await.unwrap();
    assert_eq!(stats.statements, 2);

    // A commit token is read after the statement, in its round trip: a
    // position at or after the statement's commit.
    let client = test_db.client().await;
    let position = "SELECT pg_current_wal_insert_lsn()::text";
    let before: CommitToken = client.query_one(position, &[]).await.unwrap().get::<_, String>(0).parse().unwrap();
    let mut session = db.session();
    session.add(customer("cat"));
    let (stats, token) = session.commit_with_token().await.unwrap();
    assert_eq!((stats.statements, stats.round_trips), (1, 1));
    let after: CommitToken = client.query_one(position, &[]).await.unwrap().get::<_, String>(0).parse().unwrap();
    let token = token.expect("the position of the commit");
    assert!(before < token && token <= after, "{before} < {token} <= {after}");

    // Each write is followed, in its round trip, by the check that it
    // committed (see the last test), and by the log position for a token.
    let sent = statements_sent(&log);
    let (checks, writes): (Vec<_>, Vec<_>) = sent.iter().partition(|text| is_check(text));
    assert_eq!(writes.len(), 7, "{sent:#?}");
    assert_eq!(checks.len(), 6, "one after each write: {sent:#?}");
    let with_position: Vec<bool> = checks.iter().map(|text| text.contains("pg_current_wal_insert_lsn")).collect();
    assert_eq!(with_position, [false, false, false, false, false, true], "{sent:#?}");
    assert!(writes[0].starts_with(r#"INSERT INTO "customer""#), "{sent:#?}");
    assert_eq!(writes[0], writes[1], "one shape");
    assert!(writes[2].starts_with(r#"INSERT INTO "note""#), "{sent:#?}");
    assert!(writes[3].contains("ON CONFLICT"), "{sent:#?}");
    assert!(writes[4].starts_with("SELECT"), "{sent:#?}");
    assert!(writes[5].contains(r#"DELETE FROM "note""#), "{sent:#?}");
    assert_eq!(writes[6], writes[0], "the same insert, alone");
    for (n, _) in sent.iter().enumerate().filter(|(_, text)| is_check(text)) {
        assert!(n > 0 && !sent[n - 1].starts_with("SELECT"), "{sent:#?}");
    }
    for text in &sent {
        assert!(!text.contains("orm_core.in_unit_of_work"), "no guard on a statement alone: {text}");
    }
    assert_eq!(count_rows(&test_db, "customer").await, 3);
    let left: Vec<String> = test_db
        .client()
        .await
        .query("SELECT text FROM note", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(left, ["b"]);
    let (clean, _) = checkout_state(&db).await;
    assert!(clean, "the connection went back outside any transaction");
}

#[tokio::test]
async fn work_that_needs_a_transaction_still_gets_one() {
    let (test_db, db) = seeded(&["ann"]).await;
    create_notes(&test_db).await;
    let log = LogBuffer::default();
    let _guard = log.install_spans();
    let transactions = |log: &LogBuffer| {
        let sent = statements_sent(log);
        (
            sent.iter().filter(|text| text.starts_with("BEGIN")).count(),
            sent.iter().filter(|text| text.starts_with("COMMIT")).count(),
        )
    };
    let mut expected = (0, 0);
    let mut one_more = |log: &LogBuffer, case: &str| {
        expected = (expected.0 + 1, expected.1 + 1);
        assert_eq!(transactions(log), expected, "{case}: {:#?}", statements_sent(log));
    };

    // Two statements (two tables): one transaction around both, whose
    // `COMMIT` the log position follows when a token is asked for.
    let mut session = db.session();
    session.add(customer("ben"));
    session.add(Note { id: 0, text: "a".into() });
    let (_, token) = session.commit_with_token().await.unwrap();
    assert!(token.is_some(), "the position of the commit");
    one_more(&log, "two tables");

    // An update is checked for a row gone meanwhile before it commits.
    let mut session = db.session();
    let ann = session.query::<Customer>().filter(Customer::NAME.eq("ann")).all().await.unwrap().remove(0);
    ann.write().description = Some("seen".into());
    session.commit().await.unwrap();
    one_more(&log, "an update");

    // A versioned delete is checked too.
    let mut session = db.session();
    let account = session.add(Account { id: 0, owner: "ann".into(), balance: 1, version: 0 });
    session.commit().await.unwrap();
    let mut session = db.session();
    let account = session.get_one::<Account>(account.read().id).await.unwrap();
    session.delete(&account).unwrap();
    session.commit().await.unwrap();
    // The insert of the account went alone.
    one_more(&log, "a versioned delete");

    // Work flushed earlier is inside the open transaction already.
    let mut session = db.session();
    session.add(customer("cat"));
    session.flush().await.unwrap();
    session.add(customer("dan"));
    session.commit().await.unwrap();
    one_more(&log, "after a flush");

    // An isolation level the session asked for.
    let mut session = db.session_with_isolation(IsolationLevel::RepeatableRead);
    session.add(customer("eve"));
    session.commit().await.unwrap();
    one_more(&log, "an isolation level");

    assert_eq!(count_rows(&test_db, "customer").await, 5);
}

#[tokio::test]
async fn a_statement_alone_that_fails_commits_nothing_and_leaves_the_connection_clean() {
    // One connection: the one each check below is handed is the one used.
    let (test_db, db) = setup_with(|config| config.max_connections = 1).await;
    let mut session = db.session();
    session.add(customer("ann"));
    session.commit().await.unwrap();
    let mut session = db.session();
    let clash = session.add_all([customer("ben"), customer("ann")]);
    let error = within(session.commit()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::UniqueViolation, "{error}");
    assert_eq!(clash[0].read().id, 0, "no key on an object whose row was not committed");
    assert_eq!(count_rows(&test_db, "customer").await, 1, "neither row of the batch");
    let (clean, _) = checkout_state(&db).await;
    assert!(clean, "the connection went back outside any transaction");

    // A connection left inside an aborted transaction by hand-written SQL:
    // the statement alone fails there, whether it is prepared on the
    // connection already (a customer) or not yet (an account), and the
    // connection is rolled back before the pool hands it out again.
    for prepared in [true, false] {
        let client = db.checkout().await.unwrap();
        client.batch_execute("BEGIN").await.unwrap();
        client.batch_execute("SELECT 1 / 0").await.unwrap_err();
        drop(client);
        let mut session = db.session();
        if prepared {
            session.add(customer("cat"));
        } else {
            session.add(Account { id: 0, owner: "cat".into(), balance: 1, version: 0 });
        }
        session.commit().await.unwrap_err();
        let (clean, _) = checkout_state(&db).await;
        assert!(clean, "the connection went back inside the aborted transaction (prepared: {prepared})");
    }
    let mut session = db.session();
    session.add(customer("cat"));
    session.commit().await.unwrap();
    assert_eq!(count_rows(&test_db, "customer").await, 2);
    assert_eq!(count_rows(&test_db, "account").await, 0);

    // One left inside an open transaction: the write would wait there,
    // uncommitted, while the commit said it was done. The check behind the
    // statement finds it: an error, and the transaction rolled back with
    // the write, before the connection is used again.
    let client = db.checkout().await.unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    drop(client);
    let mut session = db.session();
    session.add(customer("dan"));
    let error = session.commit().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Pool, "{error}");
    assert!(error.to_string().contains("inside a transaction"), "{error}");
    let (clean, _) = checkout_state(&db).await;
    assert!(clean, "the connection went back inside the open transaction");
    assert_eq!(count_rows(&test_db, "customer").await, 2, "dan was not committed");
    let mut session = db.session();
    session.add(customer("dan"));
    session.commit().await.unwrap();
    assert_eq!(count_rows(&test_db, "customer").await, 3);

    // A statement that writes nothing there (a delete of a row that is not
    // there) leaves no transaction id behind; the transaction is found all
    // the same, begun before the check.
    let client = db.checkout().await.unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    drop(client);
    let mut session = db.session();
    let gone = session.attach(Customer { id: 999, name: "gone".into(), description: None });
    session.delete(&gone).unwrap();
    let error = session.commit().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Pool, "{error}");
    let (clean, _) = checkout_state(&db).await;
    assert!(clean, "the connection went back inside the open transaction");
}

/// A backend ended while the statement alone runs: the statement may or
/// may not have committed as far as the client can tell, as for a
/// `COMMIT` sent on a connection that is then lost, and the error says so;
/// nothing hangs, and the pool is left with no broken connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_ended_under_a_statement_alone_leaves_the_outcome_unknown() {
    within(async {
        let (test_db, db) = seeded(&[]).await;
        create_notes(&test_db).await;
        let client = test_db.client().await;
        client
            .batch_execute(
                "CREATE FUNCTION slow_note() RETURNS trigger LANGUAGE plpgsql AS $$
                     BEGIN PERFORM pg_sleep(30); RETURN NEW; END $$;
                 CREATE TRIGGER slow_note BEFORE INSERT ON note FOR EACH ROW EXECUTE FUNCTION slow_note();",
            )
            .await
            .unwrap();
        let mut session = db.session();
        // A read takes the connection and opens no transaction.
        assert_eq!(session.query::<Note>().count().await.unwrap(), 0);
        let killer = tokio::spawn(async move {
            // Inside the session's transaction the insert would carry its guard.
            let sleeping = "SELECT pid, query FROM pg_stat_activity
                WHERE wait_event = 'PgSleep' AND query LIKE 'INSERT%' AND datname = current_database()";
            loop {
                if let Some(row) = client.query_opt(sleeping, &[]).await.unwrap() {
                    let backend: i32 = row.get(0);
                    client.execute("SELECT pg_terminate_backend($1)", &[&backend]).await.unwrap();
                    return (backend, row.get::<_, String>(1));
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        });
        session.add(Note { id: 0, text: "cut off".into() });
        let error = session.commit().await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::CommitUnknown, "{error}");
        let (backend, text) = killer.await.unwrap();
        assert!(text.starts_with(r#"INSERT INTO "note""#) && !text.contains("in_unit_of_work"), "alone: {text}");
        assert_eq!(count_rows(&test_db, "note").await, 0, "ended inside the statement, before it could commit");
        let (clean, pid) = checkout_state(&db).await;
        assert!(clean && pid != backend, "a new connection, outside any transaction");
    })
    .await;
}

/// The statement alone was answered but the check behind it failed: only
/// the check could tell whether the write committed (or waits in a
/// transaction someone left open), so the outcome is unknown, and the
/// error says so rather than that it failed or succeeded.
#[tokio::test]
async fn a_failed_check_behind_a_statement_alone_leaves_the_outcome_unknown() {
    within(async {
        let (test_db, _) = seeded(&[]).await;
        create_notes(&test_db).await;
        // The check calls the function unqualified: one of the same name
        // earlier on the search path answers it with an error.
        let refuse = "
            CREATE FUNCTION public.pg_current_xact_id_if_assigned() RETURNS xid8 LANGUAGE plpgsql
                AS $$ BEGIN RAISE EXCEPTION 'the check refused'; END $$;
            DO $$ BEGIN
                EXECUTE format('ALTER DATABASE %I SET search_path = public, pg_catalog', current_database());
            END $$;";
        test_db.client().await.batch_execute(refuse).await.unwrap();
        let db = orm_core::Database::connect(test_db.url()).unwrap();
        let mut session = db.session();
        session.add(Note { id: 0, text: "checked".into() });
        let error = session.commit().await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::CommitUnknown, "{error}");
        assert_eq!(count_rows(&test_db, "note").await, 1, "committed before the check ran");
        let (clean, _) = checkout_state(&db).await;
        assert!(clean, "the connection is back outside any transaction");
    })
    .await;
}

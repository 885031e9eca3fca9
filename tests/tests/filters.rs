//! Global filters: a soft-delete marker and a tenant column hide rows from
//! every load of their entity (`get`, `get_many`, queries, counts, projections,
//! joins, relation loads, eager loading, set-based updates and deletes),
//! one query lifts them explicitly, the session's delete of a soft-deletable
//! entity is one batched UPDATE, and a tenant's session never reads or
//! writes another tenant's rows, nor commits an upsert that met one.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use orm_core::{Database, DatabaseConfig, Entity, Error, OnConflict, Tracked};
use orm_tests::TestDb;

#[derive(Entity, Clone, Debug, PartialEq)]
struct Project {
    #[orm(primary_key, generated)]
    id: i64,
    #[orm(tenant)]
    tenant_id: i64,
    name: String,
    #[orm(soft_delete)]
    deleted_at: Option<DateTime<Utc>>,
}

#[derive(Entity, Clone, Debug, PartialEq)]
struct Task {
    #[orm(primary_key, generated)]
    id: i64,
    #[orm(tenant)]
    tenant_id: i64,
    #[orm(references = Project, on_delete = "cascade")]
    project_id: i64,
    title: String,
    #[orm(soft_delete)]
    deleted_at: Option<DateTime<Utc>>,
    #[orm(version)]
    version: i32,
}

/// A child without filters of its own: what a soft-deleted task leaves be.
#[derive(Entity, Clone, Debug, PartialEq)]
struct Label {
    #[orm(primary_key, generated)]
    id: i64,
    #[orm(references = Task, on_delete = "cascade")]
    task_id: i64,
    text: String,
}

/// Keyed by name across tenants: an upsert of one tenant can meet
/// another's row.
#[derive(Entity, Clone, Debug, PartialEq)]
struct Setting {
    #[orm(primary_key)]
    name: String,
    #[orm(tenant)]
    tenant_id: i64,
    value: String,
}

/// Tenant 1: project 1 (live) and 2 (deleted); tenant 2: project 3.
/// Tasks: 1 (project 1, live), 2 (project 1, deleted), 3 (project 2,
/// live), 4 (tenant 2, project 3). Task 1 has label 1.
const SCHEMA: &str = "
    CREATE TABLE project (id bigserial PRIMARY KEY, tenant_id bigint NOT NULL, name text NOT NULL,
                          deleted_at timestamptz);
    CREATE TABLE task (id bigserial PRIMARY KEY, tenant_id bigint NOT NULL,
                       project_id bigint NOT NULL REFERENCES project, title text NOT NULL,
                       deleted_at timestamptz, version int NOT NULL);
    CREATE TABLE label (id bigserial PRIMARY KEY, task_id bigint NOT NULL REFERENCES task ON DELETE CASCADE,
                        text text NOT NULL);
    INSERT INTO project (tenant_id, name, deleted_at) VALUES
        (1, 'one', NULL), (1, 'one, deleted', now()), (2, 'two', NULL);
    INSERT INTO task (tenant_id, project_id, title, deleted_at, version) VALUES
        (1, 1, 'live', NULL, 1), (1, 1, 'deleted', now(), 1), (1, 2, 'orphaned', NULL, 1), (2, 3, 'theirs', NULL, 1);
    INSERT INTO label (task_id, text) VALUES (1, 'urgent');
    CREATE TABLE setting (name text PRIMARY KEY, tenant_id bigint NOT NULL, value text NOT NULL);
    INSERT INTO setting VALUES ('theme', 1, 'dark');
";

async fn setup() -> (TestDb, Database) {
    let test_db = TestDb::new().await;
    test_db.client().await.batch_execute(SCHEMA).await.unwrap();
    let db = Database::with_config(DatabaseConfig::from_url(test_db.url()).unwrap()).unwrap();
    (test_db, db)
}

/// Runs a test body under a timeout: nothing here may hang.
async fn within<T>(body: impl Future<Output = T>) -> T {
    // Boxed: a test's whole body is one large future.
    tokio::time::timeout(Duration::from_secs(60), Box::pin(body)).await.expect("the test finished within 60 s")
}

fn ids<E: Entity<Key = i64>>(found: &[Tracked<E>]) -> Vec<i64> {
    let mut ids: Vec<i64> = found.iter().map(Tracked::key).collect();
    ids.sort_unstable();
    ids
}

/// Every project row as text, to compare before and after.
const PROJECTS: &str =
    "SELECT id, tenant_id || ' ' || name || ' ' || coalesce(deleted_at::text, '-') FROM project ORDER BY id";

/// Every task row as text, to compare before and after.
const TASKS: &str = "SELECT id, tenant_id || ' ' || title || ' ' || version || ' ' || coalesce(deleted_at::text, '-')
    FROM task ORDER BY id";

/// The text of one column of `table`'s rows, by id, read past the ORM.
async fn column(test_db: &TestDb, sql: &str) -> Vec<(i64, Option<String>)> {
    let rows = test_db.client().await.query(sql, &[]).await.unwrap();
    rows.iter().map(|row| (row.get(0), row.get(1))).collect()
}

/// Records every UPDATE and DELETE statement run on `task`, one row per
/// statement whatever the number of rows, in `task_statements`.
const STATEMENT_LOG: &str = "
    CREATE TABLE task_statements (n serial, operation text NOT NULL);
    CREATE FUNCTION log_task_statement() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO task_statements (operation) VALUES (TG_OP); RETURN NULL; END $$;
    CREATE TRIGGER task_statements AFTER UPDATE OR DELETE ON task
        FOR EACH STATEMENT EXECUTE FUNCTION log_task_statement();
";

#[tokio::test]
async fn get_and_get_many_hide_soft_deleted_rows() {
    within(async {
        let (_test_db, db) = setup().await;
        let mut session = db.session();
        assert!(session.get::<Project>(2).await.unwrap().is_none());
        assert!(session.get::<Project>(1).await.unwrap().is_some());
        let found = session.get_many::<Project>(&[1, 2, 3]).await.unwrap();
        assert_eq!(ids(&found), [1, 3]);

        // Lifted: the same rows through a query.
        let deleted = session.query::<Project>().include_deleted().filter(Project::ID.eq(2)).one().await.unwrap();
        assert!(deleted.read().deleted_at.is_some());
    })
    .await;
}

#[tokio::test]
async fn queries_counts_and_projections_hide_soft_deleted_rows_unless_lifted() {
    within(async {
        let (_test_db, db) = setup().await;
        let mut session = db.session();
        assert_eq!(ids(&session.query::<Task>().all().await.unwrap()), [1, 3, 4]);
        assert_eq!(ids(&session.query::<Task>().include_deleted().all().await.unwrap()), [1, 2, 3, 4]);
        assert_eq!(session.query::<Task>().count().await.unwrap(), 3);
        assert_eq!(session.query::<Task>().include_deleted().count().await.unwrap(), 4);
        let deleted = session.query::<Task>().filter(Task::TITLE.eq("deleted"));
        assert!(!deleted.exists().await.unwrap());
        assert!(session.query::<Task>().include_deleted().filter(Task::TITLE.eq("deleted")).exists().await.unwrap());

        let mut titles: Vec<String> = session.query::<Task>().select(Task::TITLE).all().await.unwrap();
        titles.sort();
        assert_eq!(titles, ["live", "orphaned", "theirs"]);
        let per_project: Vec<(i64, i64)> = session
            .query::<Task>()
            .include_deleted()
            .select((Task::PROJECT_ID, Task::ID.count()))
            .group_by(Task::PROJECT_ID)
            .order_by(Task::PROJECT_ID.asc())
            .all()
            .await
            .unwrap();
        assert_eq!(per_project, [(1, 2), (2, 1), (3, 1)]);
        let untracked = session.query::<Task>().untracked().all().await.unwrap();
        assert_eq!(untracked.len(), 3);

        // Filters across a relation (semi-joins) hide the related rows too.
        let with_deleted_task = || Task::PROJECT.any(Task::TITLE.eq("deleted"));
        assert_eq!(session.query::<Project>().filter(with_deleted_task()).count().await.unwrap(), 0);
        assert_eq!(session.query::<Project>().include_deleted().filter(with_deleted_task()).count().await.unwrap(), 1);
        let in_project_one = || Task::PROJECT.has(Project::NAME.like("one%"));
        assert_eq!(ids(&session.query::<Task>().filter(in_project_one()).all().await.unwrap()), [1]);
        let lifted = session.query::<Task>().include_deleted().filter(in_project_one()).all().await.unwrap();
        assert_eq!(ids(&lifted), [1, 2, 3]);
    })
    .await;
}

#[tokio::test]
async fn joins_hide_soft_deleted_rows_on_both_sides() {
    within(async {
        let (_test_db, db) = setup().await;
        let mut session = db.session();
        // Task 3's project is deleted: no parent, so an inner join drops it.
        let joined = session.query::<Task>().join(Task::PROJECT).order_by(Task::ID.asc()).all().await.unwrap();
        let pairs: Vec<(i64, i64)> = joined.iter().map(|(t, p)| (t.key(), p.key())).collect();
        assert_eq!(pairs, [(1, 1), (4, 3)]);
        let left = session.query::<Task>().left_join(Task::PROJECT).order_by(Task::ID.asc()).all().await.unwrap();
        let pairs: Vec<(i64, Option<i64>)> =
            left.iter().map(|(t, p)| (t.key(), p.as_ref().map(Tracked::key))).collect();
        assert_eq!(pairs, [(1, Some(1)), (3, None), (4, Some(3))]);

        let lifted =
            session.query::<Task>().include_deleted().join(Task::PROJECT).order_by(Task::ID.asc()).all().await.unwrap();
        let pairs: Vec<(i64, i64)> = lifted.iter().map(|(t, p)| (t.key(), p.key())).collect();
        assert_eq!(pairs, [(1, 1), (2, 1), (3, 2), (4, 3)]);
    })
    .await;
}

#[tokio::test]
async fn relation_loads_and_eager_loading_hide_soft_deleted_rows() {
    within(async {
        let (_test_db, db) = setup().await;
        let mut session = db.session();
        let projects = session.query::<Project>().order_by(Project::ID.asc()).all().await.unwrap();
        let tasks = session.load_children(&projects, Task::PROJECT).await.unwrap();
        assert_eq!(ids(&tasks), [1, 4]);
        assert_eq!(ids(&session.children(&projects[0], Task::PROJECT).unwrap()), [1]);

        let tasks = session.query::<Task>().all().await.unwrap();
        let parents = session.load_parents(&tasks, Task::PROJECT).await.unwrap();
        assert_eq!(ids(&parents), [1, 3]);
        let orphaned = tasks.iter().find(|t| t.key() == 3).unwrap();
        let parent = session.parent(orphaned, Task::PROJECT).unwrap();
        assert!(parent.is_none(), "project 2 is hidden: the load found none");

        let mut session = db.session();
        let eager = session
            .query::<Project>()
            .include_deleted()
            .order_by(Project::ID.asc())
            .with_children(Task::PROJECT)
            .all()
            .await
            .unwrap();
        assert_eq!(ids(&eager), [1, 2, 3], "the query itself is lifted");
        assert_eq!(ids(&session.children(&eager[0], Task::PROJECT).unwrap()), [1], "its loaders are not");
        assert_eq!(ids(&session.children(&eager[1], Task::PROJECT).unwrap()), [3]);
    })
    .await;
}

#[tokio::test]
async fn set_based_update_and_delete_touch_only_live_rows_and_delete_is_soft() {
    within(async {
        let (test_db, db) = setup().await;
        let mut session = db.session();
        let updated = session.query::<Task>().update([Task::TITLE.set("renamed".to_owned())]).await.unwrap();
        assert_eq!(updated, 3);
        assert_eq!(column(&test_db, "SELECT id, title FROM task WHERE id = 2").await, [(2, Some("deleted".into()))]);

        let deleted = session.query::<Task>().filter(Task::ID.le(3)).delete().await.unwrap();
        assert_eq!(deleted, 2, "tasks 1 and 3; 2 was deleted already");
        session.commit().await.unwrap();
        let rows = column(&test_db, "SELECT id, deleted_at::text FROM task ORDER BY id").await;
        assert_eq!(rows.len(), 4, "a soft delete keeps the rows");
        assert!(rows[..3].iter().all(|(_, at)| at.is_some()) && rows[3].1.is_none(), "{rows:?}");
        assert_eq!(column(&test_db, "SELECT id, version::text FROM task WHERE id = 1").await, [(1, Some("3".into()))]);

        // The purge job: soft-deleted rows, for good.
        let mut session = db.session();
        let purged =
            session.query::<Task>().include_deleted().filter(Task::DELETED_AT.is_not_null()).purge().await.unwrap();
        assert_eq!(purged, 3);
        session.commit().await.unwrap();
        assert_eq!(column(&test_db, "SELECT id, title FROM task").await, [(4, Some("renamed".into()))]);
    })
    .await;
}

#[tokio::test]
async fn session_delete_of_a_batch_is_one_update_and_no_delete_and_restore_clears_it() {
    within(async {
        let (test_db, db) = setup().await;
        test_db
            .client()
            .await
            .batch_execute(
                "INSERT INTO task (tenant_id, project_id, title, version)
                 SELECT 1, 1, 'bulk ' || n, 1 FROM generate_series(1, 1000) n",
            )
            .await
            .unwrap();
        test_db.client().await.batch_execute(STATEMENT_LOG).await.unwrap();
        let mut session = db.session();
        let bulk = session.query::<Task>().filter(Task::TITLE.like("bulk %")).all().await.unwrap();
        assert_eq!(bulk.len(), 1000);
        for task in &bulk {
            session.delete(task).unwrap();
        }
        assert!(session.get::<Task>(bulk[0].key()).await.unwrap().is_none(), "gone from view before the flush");
        let before = session.stats().statements;
        session.flush().await.unwrap();
        assert_eq!(session.stats().statements - before, 1, "one statement for the batch");
        assert!(session.get::<Task>(bulk[0].key()).await.unwrap().is_none(), "and after it");
        session.commit().await.unwrap();

        let operations = column(&test_db, "SELECT n::bigint, operation FROM task_statements").await;
        assert_eq!(operations, [(1, Some("UPDATE".into()))], "one UPDATE, no DELETE");
        let kept: i64 = test_db
            .client()
            .await
            .query_one(
                "SELECT count(*) FROM task WHERE title LIKE 'bulk %' AND deleted_at IS NOT NULL AND version = 2",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(kept, 1000, "rows kept, marked, versions advanced");

        // Restore: load it with the filter lifted, clear the marker.
        let mut session = db.session();
        let task = session.query::<Task>().include_deleted().filter(Task::ID.eq(bulk[0].key())).one().await.unwrap();
        assert!(session.get::<Task>(task.key()).await.unwrap().is_none(), "tracked, but deleted: hidden from get");
        task.write().deleted_at = None;
        assert!(session.get::<Task>(task.key()).await.unwrap().is_some(), "restored in memory: visible");
        session.commit().await.unwrap();
        let mut session = db.session();
        assert!(session.get::<Task>(bulk[0].key()).await.unwrap().is_some(), "restored in the database");
    })
    .await;
}

#[tokio::test]
async fn soft_deleting_a_parent_cascades_to_soft_deletable_children_only() {
    within(async {
        let (test_db, db) = setup().await;
        let mut session = db.session();
        let project = session.get_one::<Project>(1).await.unwrap();
        let tasks = session.load_children(std::slice::from_ref(&project), Task::PROJECT).await.unwrap();
        session.load_children(&tasks, Label::TASK).await.unwrap();
        session.delete(&project).unwrap();
        assert_eq!(session.pending().unwrap().deletes, 2, "the project and its live task, not the label");
        session.commit().await.unwrap();
        let rows = column(&test_db, "SELECT id, deleted_at::text FROM project WHERE id = 1").await;
        assert!(rows[0].1.is_some());
        let rows = column(&test_db, "SELECT id, deleted_at::text FROM task WHERE id = 1").await;
        assert!(rows[0].1.is_some());
        assert_eq!(column(&test_db, "SELECT id, text FROM label").await, [(1, Some("urgent".into()))]);
    })
    .await;
}

#[tokio::test]
async fn a_tenant_session_never_reads_another_tenants_rows() {
    within(async {
        let (_test_db, db) = setup().await;
        let mut session = db.session_for_tenant(2_i64);
        assert!(session.get::<Project>(1).await.unwrap().is_none());
        assert_eq!(ids(&session.get_many::<Project>(&[1, 2, 3]).await.unwrap()), [3]);
        assert_eq!(ids(&session.query::<Task>().all().await.unwrap()), [4]);
        assert_eq!(session.query::<Task>().count().await.unwrap(), 1);
        let titles: Vec<String> = session.query::<Task>().select(Task::TITLE).all().await.unwrap();
        assert_eq!(titles, ["theirs"]);
        assert_eq!(session.query::<Task>().join(Task::PROJECT).all().await.unwrap().len(), 1);
        let projects = session.query::<Project>().all().await.unwrap();
        assert_eq!(ids(&session.load_children(&projects, Task::PROJECT).await.unwrap()), [4]);
        let eager = session.query::<Project>().with_children(Task::PROJECT).all().await.unwrap();
        assert_eq!(ids(&session.children(&eager[0], Task::PROJECT).unwrap()), [4]);

        // Lifted for one query: every tenant's live rows, still not the deleted ones.
        assert_eq!(session.query::<Task>().all_tenants().count().await.unwrap(), 3);
        assert_eq!(session.query::<Task>().all_tenants().include_deleted().count().await.unwrap(), 4);
        // Raw SQL is not filtered: it is the escape hatch.
        let raw = session.query_rows("SELECT id FROM task", &[]).await.unwrap();
        assert_eq!(raw.len(), 4);

        // A row of another tenant already tracked is hidden from get.
        let mut session = db.session_for_tenant(2_i64);
        let other = session.query::<Project>().all_tenants().filter(Project::ID.eq(1)).one().await.unwrap();
        assert!(session.get::<Project>(other.key()).await.unwrap().is_none());
    })
    .await;
}

#[tokio::test]
async fn a_tenant_session_never_writes_another_tenants_rows() {
    within(async {
        let (test_db, db) = setup().await;
        let (projects_before, tasks_before) = (column(&test_db, PROJECTS).await, column(&test_db, TASKS).await);

        // Set-based update and delete: this tenant's rows only.
        let mut session = db.session_for_tenant(2_i64);
        assert_eq!(session.query::<Task>().update([Task::TITLE.set("mine".to_owned())]).await.unwrap(), 1);
        assert_eq!(session.query::<Project>().filter(Project::ID.le(2)).delete().await.unwrap(), 0);
        session.rollback().await.unwrap();

        // An entity attached under this tenant with another tenant's key
        // matches no row: the flush's UPDATE matches the tenant too.
        let mut session = db.session_for_tenant(2_i64);
        let forged = session.attach(Project { id: 1, tenant_id: 2, name: "one".into(), deleted_at: None });
        forged.write().name = "forged".into();
        let error = session.flush().await.unwrap_err();
        assert!(matches!(error, Error::StaleData { entity: "Project", .. }), "{error:?}");
        drop(session);

        assert_eq!(column(&test_db, PROJECTS).await, projects_before, "nothing written");
        assert_eq!(column(&test_db, TASKS).await, tasks_before, "nothing written");
    })
    .await;
}

#[tokio::test]
async fn a_tenant_session_refuses_at_flush_to_write_another_tenants_rows() {
    within(async {
        let (test_db, db) = setup().await;
        let (projects_before, tasks_before) = (column(&test_db, PROJECTS).await, column(&test_db, TASKS).await);

        // A new entity gets the session's tenant; one of another tenant is refused.
        let mut session = db.session_for_tenant(2_i64);
        let filled = session.add(Project { id: 0, tenant_id: 0, name: "new".into(), deleted_at: None });
        assert_eq!(filled.read().tenant_id, 2, "filled at add");
        session.add(Project { id: 0, tenant_id: 1, name: "planted".into(), deleted_at: None });
        let error = session.flush().await.unwrap_err();
        assert!(matches!(error, Error::WrongTenant { entity: "Project" }), "{error:?}");
        assert_eq!(session.pending().unwrap().inserts, 2, "nothing written, the work still pending");
        let error = session.commit().await.unwrap_err();
        assert!(matches!(error, Error::WrongTenant { .. }), "{error:?}");

        // Moving a loaded row to another tenant is refused.
        let mut session = db.session_for_tenant(2_i64);
        let theirs = session.get_one::<Project>(3).await.unwrap();
        theirs.write().tenant_id = 1;
        assert!(matches!(session.flush().await.unwrap_err(), Error::WrongTenant { .. }));
        drop(session);

        // Rows of another tenant loaded across tenants: changes and deletes refused.
        let mut session = db.session_for_tenant(2_i64);
        let others = session
            .query::<Task>()
            .all_tenants()
            .filter(Task::TENANT_ID.eq(1))
            .order_by(Task::ID.asc())
            .all()
            .await
            .unwrap();
        others[0].write().title = "hijacked".into();
        assert!(matches!(session.flush().await.unwrap_err(), Error::WrongTenant { .. }));
        session.expunge(&others[0]);
        session.delete(&others[1]).unwrap();
        assert!(matches!(session.flush().await.unwrap_err(), Error::WrongTenant { .. }));
        drop(session);

        assert_eq!(column(&test_db, PROJECTS).await, projects_before, "nothing written");
        assert_eq!(column(&test_db, TASKS).await, tasks_before, "nothing written");
    })
    .await;
}

#[tokio::test]
async fn an_upsert_that_meets_another_tenants_row_fails_and_commits_nothing() {
    within(async {
        let (test_db, db) = setup().await;
        let settings = "SELECT tenant_id, name || ' ' || value FROM setting ORDER BY name";
        let before = column(&test_db, settings).await;
        let setting = |name: &str, value: &str| Setting { name: name.into(), tenant_id: 0, value: value.into() };
        let overwrite = || OnConflict::key().do_update([Setting::VALUE]);

        // One entity: the unit of work of one statement that a commit
        // otherwise sends alone, committed as it runs.
        let mut session = db.session_for_tenant(2_i64);
        session.add_on_conflict(setting("theme", "light"), overwrite());
        let error = session.commit().await.unwrap_err();
        assert!(matches!(error, Error::WrongTenant { entity: "Setting" }), "{error:?}");
        assert_eq!(column(&test_db, settings).await, before, "tenant 1's row left alone");

        // A batch: the row that is new is not committed without the one
        // the statement left alone.
        let mut session = db.session_for_tenant(2_i64);
        session.add_all_on_conflict([setting("theme", "light"), setting("lang", "fr")], overwrite());
        let error = session.flush().await.unwrap_err();
        assert!(matches!(error, Error::WrongTenant { entity: "Setting" }), "{error:?}");
        assert_eq!(session.pending().unwrap().inserts, 2, "the work still pending");
        let error = session.commit().await.unwrap_err();
        assert!(matches!(error, Error::WrongTenant { .. }), "{error:?}");
        assert_eq!(column(&test_db, settings).await, before, "nothing committed");

        // Its own rows upsert as in any session.
        let mut session = db.session_for_tenant(2_i64);
        session.add_all_on_conflict([setting("lang", "fr"), setting("zone", "utc")], overwrite());
        session.commit().await.unwrap();
        let mut session = db.session_for_tenant(2_i64);
        let lang = session.add_on_conflict(setting("lang", "de"), overwrite());
        session.commit().await.unwrap();
        assert_eq!(lang.read().value, "de");
        let after = column(&test_db, settings).await;
        assert_eq!(after, [(2, Some("lang de".into())), (1, Some("theme dark".into())), (2, Some("zone utc".into()))]);
    })
    .await;
}

/// `Session::upsert` writes at once, without a flush to check its rows: it
/// fills in and checks their tenant itself, so a tenant's session neither
/// inserts nor overwrites another tenant's rows.
#[tokio::test]
async fn a_direct_upsert_writes_only_the_sessions_own_tenant() {
    within(async {
        let (test_db, db) = setup().await;
        let settings = "SELECT tenant_id, name || ' ' || value FROM setting ORDER BY name";
        let mut session = db.session_for_tenant(2_i64);
        let theirs = || vec![Setting { name: "theme".into(), tenant_id: 1, value: "hacked".into() }];
        let error = session.upsert(theirs()).do_update([Setting::VALUE]).await.unwrap_err();
        assert!(matches!(error, Error::WrongTenant { entity: "Setting" }), "{error:?}");
        let error = session.upsert(theirs()).do_nothing().await.unwrap_err();
        assert!(matches!(error, Error::WrongTenant { entity: "Setting" }), "{error:?}");

        // Rows without a tenant get the session's; the one whose key
        // tenant 1 holds is left alone, and not counted.
        let setting = |name: &str, value: &str| Setting { name: name.into(), tenant_id: 0, value: value.into() };
        let rows = vec![setting("theme", "light"), setting("lang", "fr")];
        assert_eq!(session.upsert(rows).do_update([Setting::VALUE]).await.unwrap(), 1);
        session.commit().await.unwrap();
        assert_eq!(column(&test_db, settings).await, [(2, Some("lang fr".into())), (1, Some("theme dark".into()))]);
    })
    .await;
}

/// Set-based writes in a tenant's session reach only its own rows, as
/// the flush's do: moving rows to another tenant, or writing with the
/// tenant filter lifted, is refused before anything is sent.
#[tokio::test]
async fn set_based_writes_of_a_tenants_session_stay_within_its_rows() {
    within(async {
        let (test_db, db) = setup().await;
        let before = column(&test_db, TASKS).await;
        let mut session = db.session_for_tenant(2_i64);
        let moved = session.query::<Task>().update([Task::TENANT_ID.set(1_i64)]).await.unwrap_err();
        assert!(matches!(moved, Error::WrongTenant { entity: "Task" }), "{moved:?}");
        let everyone = session.query::<Task>().all_tenants().update([Task::TITLE.set("mine")]).await.unwrap_err();
        assert!(matches!(everyone, Error::WrongTenant { entity: "Task" }), "{everyone:?}");
        let deleted = session.query::<Task>().all_tenants().delete().await.unwrap_err();
        assert!(matches!(deleted, Error::WrongTenant { entity: "Task" }), "{deleted:?}");
        let purged = session.query::<Task>().all_tenants().include_deleted().purge().await.unwrap_err();
        assert!(matches!(purged, Error::WrongTenant { entity: "Task" }), "{purged:?}");
        session.commit().await.unwrap();
        assert_eq!(column(&test_db, TASKS).await, before, "nothing written");

        // Its own rows, as before.
        let mut session = db.session_for_tenant(2_i64);
        assert_eq!(session.query::<Task>().update([Task::TITLE.set("renamed")]).await.unwrap(), 1);
        session.commit().await.unwrap();
        let titles = column(&test_db, "SELECT id, title FROM task WHERE title = 'renamed'").await;
        assert_eq!(titles, [(4, Some("renamed".into()))]);
    })
    .await;
}

#[tokio::test]
async fn a_tenant_of_the_wrong_type_is_a_typed_error() {
    within(async {
        let (test_db, db) = setup().await;
        let mut session = db.session_for_tenant(2_i32);
        session.add(Project { id: 0, tenant_id: 2, name: "new".into(), deleted_at: None });
        let error = session.commit().await.unwrap_err();
        assert!(matches!(error, Error::TenantType { entity: "Project", column: "tenant_id" }), "{error:?}");
        assert_eq!(column(&test_db, "SELECT id, name FROM project WHERE name = 'new'").await, []);
    })
    .await;
}

#[tokio::test]
async fn statement_text_does_not_depend_on_the_tenant() {
    if orm_tests::skip_via_pgbouncer("reads pg_prepared_statements, which the unnamed mode leaves empty") {
        return;
    }
    within(async {
        let test_db = TestDb::new().await;
        test_db.client().await.batch_execute(SCHEMA).await.unwrap();
        let mut config = DatabaseConfig::from_url(test_db.url()).unwrap();
        config.max_connections = 1;
        let db = Database::with_config(config).unwrap();
        for tenant in [1_i64, 2, 3] {
            let mut session = db.session_for_tenant(tenant);
            session.get::<Project>(3).await.unwrap();
            session.query::<Task>().count().await.unwrap();
        }
        // One connection, so its prepared statements are all the loads sent.
        let mut session = db.session();
        // Not this query itself, which is prepared while it runs.
        let rows = session
            .query_rows(
                "SELECT statement FROM pg_prepared_statements
                 WHERE statement LIKE '%tenant_id\" = $%' AND statement NOT LIKE '%pg_prepared_statements%'",
                &[],
            )
            .await
            .unwrap();
        let mut texts: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
        texts.sort();
        assert_eq!(texts.len(), 2, "one get and one count for three tenants: {texts:?}");
        assert!(texts[0].ends_with(r#"WHERE (t."deleted_at" IS NULL AND t."tenant_id" = $1)"#), "{texts:?}");
        assert!(
            texts[1].ends_with(r#"WHERE t."id" = $1 AND (t."deleted_at" IS NULL AND t."tenant_id" = $2)"#),
            "{texts:?}"
        );
    })
    .await;
}

/// A set-based soft delete with `include_deleted()` leaves the task rows
/// already in the bin alone, and still lets its condition see the binned
/// project the live tasks belong to.
#[tokio::test]
async fn a_soft_delete_of_the_tasks_of_a_binned_project_reaches_them() {
    within(async {
        let (test_db, db) = setup().await;
        let mut session = db.session();
        let of_binned = Task::PROJECT.has(Project::NAME.eq("one, deleted"));
        let deleted = session.query::<Task>().include_deleted().filter(of_binned).delete().await.unwrap();
        assert_eq!(deleted, 1, "task 3, live, of project 2, binned");
        let everything = session.query::<Task>().include_deleted().filter(Task::ID.le(2)).delete().await.unwrap();
        assert_eq!(everything, 1, "task 1; task 2 was in the bin already");
        session.commit().await.unwrap();
        let binned = column(&test_db, "SELECT id, title FROM task WHERE deleted_at IS NOT NULL ORDER BY id").await;
        assert_eq!(binned.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [1, 2, 3]);
    })
    .await;
}

/// A child whose parent a load of parents did not find (soft-deleted
/// here) has no parent, rather than one not loaded: eagerly, by a load of
/// parents, or by one in a group of loads.
#[tokio::test]
async fn a_child_of_a_soft_deleted_parent_has_no_parent_once_parents_are_loaded() {
    within(async {
        let (_test_db, db) = setup().await;
        let mut session = db.session();
        let orphaned = session.query::<Task>().filter(Task::ID.eq(3)).all().await.unwrap();
        let error = session.parent(&orphaned[0], Task::PROJECT).unwrap_err();
        assert!(matches!(error, Error::RelationNotLoaded { .. }), "not loaded yet: {error:?}");
        assert!(session.load_parents(&orphaned, Task::PROJECT).await.unwrap().is_empty());
        assert!(session.parent(&orphaned[0], Task::PROJECT).unwrap().is_none(), "project 2 is in the bin");

        let mut session = db.session();
        let tasks = session.query::<Task>().with_parent(Task::PROJECT).order_by(Task::ID.asc()).all().await.unwrap();
        let projects: Vec<Option<i64>> =
            tasks.iter().map(|task| session.parent(task, Task::PROJECT).unwrap().map(|p| p.key())).collect();
        assert_eq!(projects, [Some(1), None, Some(3)], "the live tasks 1, 3 and 4");

        let mut session = db.session();
        let orphaned = session.query::<Task>().filter(Task::ID.eq(3)).all().await.unwrap();
        let (parents,) = session.load_together((orm_core::Load::parents(&orphaned, Task::PROJECT),)).await.unwrap();
        assert!(parents.is_empty());
        assert!(session.parent(&orphaned[0], Task::PROJECT).unwrap().is_none());
    })
    .await;
}

/// What a load of parents found missing holds only until the session
/// writes: a raw write, or a rolled-back savepoint, may bring the row
/// back, and the parent is then one not loaded again, not "none".
#[tokio::test]
async fn a_parent_found_missing_is_forgotten_when_the_session_writes() {
    within(async {
        let (test_db, db) = setup().await;
        let mut session = db.session();
        let orphaned = session.query::<Task>().filter(Task::ID.eq(3)).all().await.unwrap();
        session.load_parents(&orphaned, Task::PROJECT).await.unwrap();
        assert!(session.parent(&orphaned[0], Task::PROJECT).unwrap().is_none());
        session.execute("UPDATE project SET deleted_at = NULL WHERE id = 2", &[]).await.unwrap();
        let error = session.parent(&orphaned[0], Task::PROJECT).unwrap_err();
        assert!(matches!(error, Error::RelationNotLoaded { .. }), "the write may have brought it back: {error:?}");
        let found = session.load_parents(&orphaned, Task::PROJECT).await.unwrap();
        assert_eq!(ids(&found), [2]);
        assert_eq!(session.parent(&orphaned[0], Task::PROJECT).unwrap().map(|p| p.key()), Some(2));
        session.rollback().await.unwrap();

        let mut session = db.session();
        let tasks = session.query::<Task>().filter(Task::ID.eq(1)).all().await.unwrap();
        let savepoint = session.begin_nested().await.unwrap();
        session.execute("UPDATE project SET deleted_at = now() WHERE id = 1", &[]).await.unwrap();
        assert!(session.load_parents(&tasks, Task::PROJECT).await.unwrap().is_empty());
        assert!(session.parent(&tasks[0], Task::PROJECT).unwrap().is_none());
        session.rollback_nested(savepoint).await.unwrap();
        let error = session.parent(&tasks[0], Task::PROJECT).unwrap_err();
        assert!(matches!(error, Error::RelationNotLoaded { .. }), "project 1 is back: {error:?}");
        session.rollback().await.unwrap();

        // Another transaction restores project 2; a later load finds it, and
        // the note goes: once the session lets go of it, it is not loaded.
        let mut session = db.session();
        let orphaned = session.query::<Task>().filter(Task::ID.eq(3)).all().await.unwrap();
        session.load_parents(&orphaned, Task::PROJECT).await.unwrap();
        test_db.client().await.execute("UPDATE project SET deleted_at = NULL WHERE id = 2", &[]).await.unwrap();
        let found = session.load_parents(&orphaned, Task::PROJECT).await.unwrap();
        assert!(session.expunge(&found[0]));
        let error = session.parent(&orphaned[0], Task::PROJECT).unwrap_err();
        assert!(matches!(error, Error::RelationNotLoaded { .. }), "found since: {error:?}");
    })
    .await;
}

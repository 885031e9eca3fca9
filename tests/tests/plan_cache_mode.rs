//! `DatabaseConfig::plan_cache_mode` reaches every connection the pool
//! opens, and the server plans the ORM's prepared statements as it says:
//! read back from `pg_prepared_statements`, which counts each statement's
//! generic and custom plans.

mod support;

use orm_core::{Database, DatabaseConfig, Error, PlanCacheMode, ReplicaConfig, Session, StatementMode};
use orm_tests::skip_via_pgbouncer;
use support::{customer, seeded, setup_with, Customer};

const THROUGH_A_POOLER: &str = "the mode is a startup option, which a pooler in transaction mode refuses";

/// The generic and custom plans the server made for the session's
/// connection's prepared statement that reads `customer` by name.
async fn plans_of_the_name_query(session: &mut Session) -> (i64, i64) {
    let rows = session
        .query_rows(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements \
             WHERE statement LIKE 'SELECT %FROM \"customer\"%WHERE%name%' \
             AND statement NOT LIKE '%pg_prepared_statements%'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "one prepared statement reads customers by name");
    (rows[0].get(0), rows[0].get(1))
}

/// Runs the ORM's query by name `runs` times on one session (one
/// connection) and returns the server's plan counts for it.
async fn plans_after_runs(mode: Option<PlanCacheMode>, runs: usize) -> (i64, i64) {
    let (_test_db, db) = setup_with(|config| {
        config.max_connections = 1;
        config.plan_cache_mode = mode;
    })
    .await;
    let mut session = db.session();
    session.add_all(["ann", "bob"].map(customer));
    session.commit().await.unwrap();
    let mut session = db.session();
    for _ in 0..runs {
        let found = session.query::<Customer>().filter(Customer::NAME.eq("ann")).untracked().all().await.unwrap();
        assert_eq!(found.len(), 1);
    }
    plans_of_the_name_query(&mut session).await
}

#[tokio::test]
async fn force_generic_plans_each_statement_once_where_the_default_plans_every_run() {
    if skip_via_pgbouncer(THROUGH_A_POOLER) {
        return;
    }
    // The server's default: the first five runs are planned for their values.
    assert_eq!(plans_after_runs(None, 3).await, (0, 3));
    // Forced generic: one plan, reused from the first run on.
    assert_eq!(plans_after_runs(Some(PlanCacheMode::ForceGeneric), 3).await, (3, 0));
    // Forced custom: past the fifth run too.
    assert_eq!(plans_after_runs(Some(PlanCacheMode::ForceCustom), 7).await, (0, 7));
}

#[tokio::test]
async fn the_mode_joins_the_connection_strings_options_and_wins_over_theirs() {
    if skip_via_pgbouncer(THROUGH_A_POOLER) {
        return;
    }
    let (_test_db, db) = setup_with(|config| {
        config.postgres.options("-c statement_timeout=12345 -c plan_cache_mode=force_custom_plan");
        config.plan_cache_mode = Some(PlanCacheMode::ForceGeneric);
    })
    .await;
    let mut session = db.session();
    let rows = session
        .query_rows("SELECT current_setting('statement_timeout'), current_setting('plan_cache_mode')", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, String>(0), "12345ms", "the connection string's option is kept");
    assert_eq!(rows[0].get::<_, String>(1), "force_generic_plan");
}

#[tokio::test]
async fn without_a_mode_the_connection_keeps_the_servers_setting() {
    if skip_via_pgbouncer(THROUGH_A_POOLER) {
        return;
    }
    let (_test_db, db) = seeded(&["ann"]).await;
    let mut session = db.session();
    let rows = session.query_rows("SELECT current_setting('plan_cache_mode')", &[]).await.unwrap();
    assert_eq!(rows[0].get::<_, String>(0), "auto");
}

#[tokio::test]
async fn a_mode_with_unnamed_statements_is_refused_before_anything_connects() {
    let url = "postgres://app@db.internal/shop";
    let mut config = DatabaseConfig::from_url(url).unwrap();
    config.statements = StatementMode::Unnamed;
    config.plan_cache_mode = Some(PlanCacheMode::ForceGeneric);
    let refused = Database::with_config(config).err().expect("refused");
    assert!(matches!(&refused, Error::Config(message) if message.contains("statement_mode=unnamed")), "{refused}");

    // A replica with unnamed statements is refused too.
    let mut config = DatabaseConfig::from_url(url).unwrap();
    config
        .replicas
        .push(ReplicaConfig::from_url("postgres://app@replica.internal/shop?statement_mode=unnamed").unwrap());
    config.plan_cache_mode = Some(PlanCacheMode::Auto);
    assert!(matches!(Database::with_config(config), Err(Error::Config(_))));

    // Without a mode, unnamed statements are fine.
    let mut config = DatabaseConfig::from_url(url).unwrap();
    config.statements = StatementMode::Unnamed;
    assert!(Database::with_config(config).is_ok());
}

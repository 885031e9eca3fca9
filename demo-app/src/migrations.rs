//! The schema, as refinery migrations embedded from `migrations/` and run
//! at start-up, then checked against the entities.

use orm_core::{Database, SchemaCheck};

use crate::entities::{Article, ArticleTag, Comment, Favorite, Follow, User};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// No connection to run them on.
    #[error("cannot connect to run migrations: {0}")]
    Connect(#[from] orm_core::Error),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] refinery::Error),
}

/// Applies the migrations the database does not have yet, on one
/// connection of the pool. Returns how many were applied.
pub async fn run(db: &Database) -> Result<usize, MigrationError> {
    let mut connection = db.checkout().await?;
    let client: &mut orm_core::tokio_postgres::Client = &mut connection;
    let report = embedded::migrations::runner().run_async(client).await?;
    for migration in report.applied_migrations() {
        tracing::info!(version = migration.version(), name = migration.name(), "applied migration");
    }
    Ok(report.applied_migrations().len())
}

/// Compares every entity of [`entities`](crate::entities) with the migrated
/// tables, so that a schema changed by hand, or a migration that does not
/// match the structs, stops the start with the list of differences instead
/// of failing requests one by one. One round trip.
pub async fn check_schema(db: &Database) -> Result<(), orm_core::Error> {
    SchemaCheck::new()
        .entity::<User>()
        .entity::<Follow>()
        .entity::<Article>()
        .entity::<ArticleTag>()
        .entity::<Favorite>()
        .entity::<Comment>()
        .run(db)
        .await
}

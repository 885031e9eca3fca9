//! Start-up, serving, and graceful shutdown.

use std::net::SocketAddr;

use orm_core::{Database, DatabaseConfig, ReplicaConfig};
use tokio::net::TcpListener;

use crate::app;
use crate::config::Config;
use crate::migrations;
use crate::state::AppState;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The database URL or pool settings are invalid.
    #[error("database configuration: {0}")]
    Database(#[from] orm_core::Error),
    /// No connection to the database could be made at start-up. The core's
    /// error names host, port, database and user, and the cause: the
    /// server's refusal (no such database or role, a wrong password) or
    /// the network's (connection refused, unknown host).
    #[error("cannot start: check DATABASE_URL: {0}")]
    Unreachable(orm_core::Error),
    /// The schema could not be migrated.
    #[error(transparent)]
    Migration(#[from] migrations::MigrationError),
    /// After the migrations, the tables do not match the entities: the
    /// core's error lists every difference, one per line.
    #[error("cannot start after the migrations: {0}")]
    Schema(orm_core::Error),
    /// The address could not be bound, or serving failed.
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

/// Connects, migrates, checks the schema, listens, and serves until Ctrl-C
/// or SIGTERM; then stops accepting connections and lets the requests in
/// progress finish.
pub async fn run(config: Config) -> Result<(), ServerError> {
    if config.jwt_secret_generated {
        tracing::warn!("JWT_SECRET is not set: signing tokens with a random secret, so they stop working at restart");
    }
    let mut db_config = DatabaseConfig::from_url(&config.database_url)?;
    db_config.max_connections = config.max_connections;
    db_config.plan_cache_mode = config.plan_cache_mode;
    for url in &config.database_replica_urls {
        db_config.replicas.push(ReplicaConfig::from_url(url)?);
    }
    let db = Database::with_config(db_config)?;
    // One connection now, so that a wrong setting fails the start with its
    // cause rather than every request with a 503. It goes back to the pool
    // for the migrations.
    let connection = db.checkout().await.map_err(ServerError::Unreachable)?;
    drop(connection);
    let applied = migrations::run(&db).await?;
    migrations::check_schema(&db).await.map_err(ServerError::Schema)?;
    tracing::info!(applied, "schema is up to date and matches the entities");

    let mut state = AppState::new(db, config.jwt_secret.as_bytes(), config.request_timeout);
    state.cors_origins = config.cors_origins;
    let listener = TcpListener::bind(SocketAddr::new(config.host, config.port)).await?;
    let address = listener.local_addr()?;
    // The address actually bound (PORT=0 picks a free port): scripts/demo.sh
    // and the scripts that test the app read the URL from this line.
    tracing::info!("serving at http://{address}/api");
    axum::serve(listener, app::router(state)).with_graceful_shutdown(shutdown_signal()).await?;
    tracing::info!("shut down");
    Ok(())
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: finishing the requests in progress");
}

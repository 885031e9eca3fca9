//! `GET /health`: liveness and the connection pool's state, for operators
//! and the load script (which checks that every connection is back).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::state::AppState;

/// The routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new().route("/health", get(health))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Health {
    status: &'static str,
    pool: PoolStatus,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PoolStatus {
    max_size: usize,
    /// Open connections.
    size: usize,
    /// Open connections not checked out.
    available: usize,
    /// Requests waiting for a connection.
    waiting: usize,
}

/// Answers without touching the database.
async fn health(State(state): State<AppState>) -> Json<Health> {
    let status = state.db.pool().status();
    Json(Health {
        status: "ok",
        pool: PoolStatus {
            max_size: status.max_size,
            size: status.size,
            available: status.available,
            waiting: status.waiting,
        },
    })
}

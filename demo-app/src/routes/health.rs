//! `GET /health`: liveness, the connection pool's state and what requests
//! have cost the database, for operators and the load script (which checks
//! that every connection is back, and reports statements and round trips
//! per request).
//! `GET /ready`: readiness, whether the database answers.
//!
//! An orchestrator restarts a process whose liveness check fails, and stops
//! sending traffic to one that is not ready. So `/health` never touches the
//! database (a database outage restarting every server would help no one),
//! and `/ready` answers 503 while the database is unreachable and 200 again
//! once it is back.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use orm_core::Database;
use serde::Serialize;

use crate::request_costs::CostTotals;
use crate::state::AppState;

/// How long `/ready` waits for the database: under the 1 s an orchestrator
/// gives a probe by default (Kubernetes' `timeoutSeconds`), so that a
/// database that does not answer at all is reported as a 503, not as a
/// probe that timed out.
const READY_TIMEOUT: Duration = Duration::from_millis(800);

/// The routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new().route("/health", get(health)).route("/ready", get(ready))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Health {
    status: &'static str,
    pool: PoolStatus,
    /// What requests have cost the database since the process started.
    costs: CostTotals,
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
        costs: state.costs.totals(),
    })
}

#[derive(Serialize)]
struct Ready {
    status: &'static str,
}

/// 200 when a connection of the pool answers `SELECT 1` within
/// [`READY_TIMEOUT`], 503 otherwise (the reason is logged, not sent). While
/// every connection is busy, waiting for one counts against the timeout:
/// a saturated server is not ready for more either.
async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Ready>) {
    match tokio::time::timeout(READY_TIMEOUT, ping(&state.db)).await {
        Ok(Ok(())) => (StatusCode::OK, Json(Ready { status: "ready" })),
        Ok(Err(error)) => {
            tracing::warn!(%error, "not ready: the database does not answer");
            (StatusCode::SERVICE_UNAVAILABLE, Json(Ready { status: "unavailable" }))
        }
        Err(_) => {
            tracing::warn!(timeout = ?READY_TIMEOUT, "not ready: the database did not answer in time");
            (StatusCode::SERVICE_UNAVAILABLE, Json(Ready { status: "unavailable" }))
        }
    }
}

async fn ping(db: &Database) -> orm_core::Result<()> {
    db.checkout().await?.simple_query("SELECT 1").await?;
    Ok(())
}

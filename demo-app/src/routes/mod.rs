//! The RealWorld API's routes, one module per resource, and `idempotent`,
//! the race-safe insert that following uses.

use axum::Router;

use crate::error::ApiError;
use crate::state::AppState;

pub mod articles;
pub mod comments;
pub mod health;
pub mod idempotent;
pub mod profiles;
pub mod tags;
pub mod users;

/// Every route of the API, without middleware (see `app`).
pub fn api() -> Router<AppState> {
    Router::new()
        .merge(users::routes())
        .merge(profiles::routes())
        .merge(articles::routes())
        .merge(comments::routes())
        .merge(tags::routes())
        .merge(health::routes())
        .fallback(|| async { ApiError::NotFound("route") })
}

//! The application state every handler and middleware can reach.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use orm_core::Database;

use crate::auth::JwtKeys;
use crate::config::CorsOrigins;
use crate::request_costs::RequestCosts;

/// Shared by all requests; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The connection pool that request sessions borrow from.
    pub db: Database,
    /// The keys that sign and check tokens.
    pub jwt: Arc<JwtKeys>,
    /// How long a request may run before it is answered 503 and rolled back.
    pub request_timeout: Duration,
    /// Which browser origins may call the API (none, from [`new`](Self::new)).
    pub cors_origins: CorsOrigins,
    /// What requests have cost the database so far.
    pub costs: Arc<RequestCosts>,
}

impl AppState {
    /// State over `db`, signing tokens with `jwt_secret`.
    pub fn new(db: Database, jwt_secret: &[u8], request_timeout: Duration) -> Self {
        AppState {
            db,
            jwt: Arc::new(JwtKeys::new(jwt_secret)),
            request_timeout,
            cors_origins: CorsOrigins::None,
            costs: Arc::default(),
        }
    }
}

impl FromRef<AppState> for Arc<JwtKeys> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.jwt)
    }
}

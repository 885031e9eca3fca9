//! The application state every handler and middleware can reach.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use orm_core::Database;

use crate::auth::JwtKeys;
use crate::config::CorsOrigins;
use crate::request_costs::RequestCosts;

/// Shared by all requests; one reference count to clone. axum clones the
/// state for every route service it calls and every extractor that takes
/// it, about 25 times a request under the load mix: field by field that
/// was 81 instructions a clone, and the drop after it.
///
/// Its fields are [`Shared`]'s, reached through `Deref`; changing one
/// (`DerefMut`) changes this handle's own copy, as when the state was
/// cloned field by field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// What [`AppState`] holds.
#[derive(Clone)]
pub struct Shared {
    /// The connection pool that request sessions borrow from.
    pub db: Database,
    /// The keys that sign and check tokens.
    pub jwt: Arc<JwtKeys>,
    /// How long a request may run before it is answered 503 and rolled back.
    pub request_timeout: Duration,
    /// Which browser origins may call the API (none, from [`new`](AppState::new)).
    pub cors_origins: CorsOrigins,
    /// What requests have cost the database so far.
    pub costs: Arc<RequestCosts>,
}

impl AppState {
    /// State over `db`, signing tokens with `jwt_secret`.
    pub fn new(db: Database, jwt_secret: &[u8], request_timeout: Duration) -> Self {
        AppState(Arc::new(Shared {
            db,
            jwt: Arc::new(JwtKeys::new(jwt_secret)),
            request_timeout,
            cors_origins: CorsOrigins::None,
            costs: Arc::default(),
        }))
    }
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl DerefMut for AppState {
    fn deref_mut(&mut self) -> &mut Shared {
        Arc::make_mut(&mut self.0)
    }
}

impl FromRef<AppState> for Arc<JwtKeys> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.jwt)
    }
}

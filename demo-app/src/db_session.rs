//! One ORM [`Session`] per request: `FastAPI`'s `Depends(get_db)` in axum.
//!
//! [`session_per_request`] is a middleware that gives every request an
//! empty session slot; the [`DbSession`] extractor opens the session in it
//! on first use (a session takes no connection until its first statement,
//! so extractors and validation that run before the handler's first query
//! hold none). When the handler has answered, the middleware takes the
//! session back and ends it:
//!
//! - a 2xx or 3xx response commits it; a failed commit replaces the
//!   response with an error (409 for a conflict, 503 or 500 otherwise);
//! - any other response rolls it back. That includes a panic and a
//!   timeout, which the layers inside this one (see `app`) turn into a 500
//!   and a 503: the handler's future is dropped, possibly mid-statement, and
//!   the rollback then cancels that statement and discards its connection;
//! - a client that goes away drops the whole request's future, this
//!   middleware's included, and with it the session: its transaction rolls
//!   back and a statement still running is cancelled.
//!
//! In every case the connection goes back to the pool (or, after a
//! cancelled statement, is closed and replaced). The timeout bounds the
//! handler only: a `COMMIT` this middleware has started is never cut off
//! by it, so a success response always means a committed transaction.
//!
//! The session is `Send` but not `Sync`, so it lives behind a
//! `tokio::sync::Mutex`; the extractor holds the lock for the handler's
//! whole run.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use orm_core::{Session, SessionStats};
use tokio::sync::{Mutex, OwnedMappedMutexGuard, OwnedMutexGuard};

use crate::error::ApiError;
use crate::state::AppState;

type Slot = Arc<Mutex<Option<Session>>>;

/// The request extension through which the extractor finds the slot.
#[derive(Clone)]
struct SessionSlot(Slot);

/// What the request's session sent to the database, attached to the
/// response's extensions (not sent to the client) for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestDbStats(pub SessionStats);

/// The request's session. Take it as a handler argument and use it as a
/// `&mut Session`; never commit it yourself: the middleware does, if the
/// handler succeeds.
pub struct DbSession(OwnedMappedMutexGuard<Option<Session>, Session>);

impl Deref for DbSession {
    type Target = Session;

    fn deref(&self) -> &Session {
        &self.0
    }
}

impl DerefMut for DbSession {
    fn deref_mut(&mut self) -> &mut Session {
        &mut self.0
    }
}

impl FromRequestParts<AppState> for DbSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(SessionSlot(slot)) = parts.extensions.get::<SessionSlot>().cloned() else {
            tracing::error!("DbSession used on a route without the session_per_request middleware");
            return Err(ApiError::Internal);
        };
        // Uncontended unless a handler takes DbSession twice, which would
        // wait forever: refuse that instead.
        let Ok(mut guard) = slot.try_lock_owned() else {
            tracing::error!("DbSession extracted twice in one request");
            return Err(ApiError::Internal);
        };
        if guard.is_none() {
            *guard = Some(state.db.session());
        }
        OwnedMutexGuard::try_map(guard, Option::as_mut).map(DbSession).map_err(|_| ApiError::Internal)
    }
}

/// The middleware: see the module documentation. Install it with
/// `axum::middleware::from_fn`, outside the panic and timeout layers.
pub async fn session_per_request(mut request: Request, next: Next) -> Response {
    let slot: Slot = Arc::new(Mutex::new(None));
    request.extensions_mut().insert(SessionSlot(Arc::clone(&slot)));
    let response = next.run(request).await;
    // The handler has returned, so its DbSession guard is gone.
    let Ok(mut guard) = slot.try_lock() else {
        tracing::error!("the request's session is still borrowed after the handler returned");
        return ApiError::Internal.into_response();
    };
    let session = guard.take();
    drop(guard);
    match session {
        Some(session) => finish(session, response).await,
        None => response,
    }
}

/// Commits after success, rolls back otherwise.
async fn finish(session: Session, mut response: Response) -> Response {
    let succeeded = response.status().is_success() || response.status().is_redirection();
    if !succeeded {
        let stats = session.stats();
        // Explicit, rather than a drop, which would warn about the work the
        // handler left pending; free if no transaction was opened.
        if let Err(error) = session.rollback().await {
            tracing::warn!(%error, "rollback failed");
        }
        tracing::debug!(statements = stats.statements, round_trips = stats.round_trips, "session rolled back");
        response.extensions_mut().insert(RequestDbStats(stats));
        return response;
    }
    match session.commit().await {
        Ok(stats) => {
            tracing::debug!(statements = stats.statements, round_trips = stats.round_trips, "session committed");
            response.extensions_mut().insert(RequestDbStats(stats));
            response
        }
        Err(error) => {
            tracing::warn!("commit failed; the handler's response is replaced by an error");
            ApiError::from(error).into_response()
        }
    }
}

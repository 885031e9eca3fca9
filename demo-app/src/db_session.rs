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
//! Before that, if the request's token named a user (see `auth`), the
//! middleware checks, in the same transaction, that the user still exists:
//! a token outlives its user, and a deleted user's token is answered 401
//! whatever the handler answered (it would otherwise read as anyone, and
//! fail writes with a 409 from a foreign key). The check is a lookup by
//! primary key, free when the handler loaded the user already (the identity
//! map has it: `GET` and `PUT /api/user`); it is skipped for a request that
//! sent no statement, so input refused before the database is still
//! refused without a connection (and answered 422, not 401).
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
use std::sync::{Arc, OnceLock};

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use orm_core::{Session, SessionStats};
use tokio::sync::{Mutex, OwnedMappedMutexGuard, OwnedMutexGuard};

use crate::entities::User;
use crate::error::ApiError;
use crate::state::AppState;

type Slot = Arc<Mutex<Option<Session>>>;

/// The request extension through which the extractors find the session's
/// slot, and record the user the request's token names.
#[derive(Clone)]
struct SessionSlot {
    session: Slot,
    token_user: Arc<OnceLock<i64>>,
}

/// Records that the request's token names user `id`, whose existence the
/// middleware checks after the handler (see the module documentation).
/// Called by the authentication extractors.
pub fn note_token_user(parts: &Parts, id: i64) {
    if let Some(slot) = parts.extensions.get::<SessionSlot>() {
        // Set once: a handler taking both AuthUser and MaybeAuthUser reads
        // one token, so the id is the same.
        let _ = slot.token_user.set(id);
    }
}

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
        let Some(SessionSlot { session: slot, .. }) = parts.extensions.get::<SessionSlot>().cloned() else {
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
    let token_user = Arc::new(OnceLock::new());
    request.extensions_mut().insert(SessionSlot { session: Arc::clone(&slot), token_user: Arc::clone(&token_user) });
    let response = next.run(request).await;
    // The handler has returned, so its DbSession guard is gone.
    let Ok(mut guard) = slot.try_lock() else {
        tracing::error!("the request's session is still borrowed after the handler returned");
        return ApiError::Internal.into_response();
    };
    let session = guard.take();
    drop(guard);
    match session {
        Some(mut session) => {
            let response = match token_user.get() {
                Some(&user) => check_token_user(&mut session, user, response).await,
                None => response,
            };
            finish(session, response).await
        }
        None => response,
    }
}

/// The handler's response if the token's user exists, 401 if not. Not
/// checked when the session sent nothing (no connection is taken for the
/// check alone) or the answer is a 401 or a server error already.
async fn check_token_user(session: &mut Session, user: i64, response: Response) -> Response {
    let status = response.status();
    if session.stats().statements == 0 || status == StatusCode::UNAUTHORIZED || status.is_server_error() {
        return response;
    }
    // Without autoflush: a flush that failed in the handler (a foreign key
    // to the missing user, say) left its work pending, which would fail
    // the check too. Pending work cannot create the user, and the commit
    // flushes it regardless.
    session.set_autoflush(false);
    match session.get::<User>(user).await {
        Ok(Some(_)) => response,
        Ok(None) => {
            tracing::info!(user, "the token's user does not exist; the request is answered 401");
            ApiError::InvalidToken.into_response()
        }
        // The commit would fail the same way.
        Err(error) if status.is_success() || status.is_redirection() => ApiError::from(error).into_response(),
        // An error answer whose transaction may have failed already: it stands.
        Err(error) => {
            tracing::debug!(%error, "cannot check the token's user after an error response");
            response
        }
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

//! One ORM session per request, from the library (`orm_core::axum`): its
//! layer opens the session for each request, commits it when the handler
//! answers 2xx or 3xx and rolls it back otherwise (an error response, a
//! panic, a timeout, a client that hangs up). What is configured here:
//!
//! - a failed commit is answered with the API's error body ([`layer`]);
//! - the token's user must still exist ([`check_token_user`]): a token
//!   outlives its user, and a deleted user's token is answered 401
//!   whatever the handler answered (it would otherwise read as anyone, and
//!   fail writes with a 409 from a foreign key). The check runs after the
//!   handler, in the request's transaction, as a lookup by primary key,
//!   free when the handler loaded the user already (the identity map has
//!   it: `GET` and `PUT /api/user`) or found it in a statement of its own
//!   (a list page counts the user's row beside the page and says so,
//!   [`TokenUser::found`]). It is skipped for a request that sent
//!   no statement, so input refused before the database is still refused
//!   without a connection (and answered 422, not 401).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use orm_core::axum::{RequestSession, SessionLayer};
use orm_core::{Database, Session};

use crate::entities::User;
use crate::error::ApiError;

/// The session layer, with the API's error body for a failed commit; with
/// read replicas, `GET` requests read from them and a client that wrote
/// gets a commit token (a cookie and a header) to read its writes with
/// (see `SessionLayer::route_reads`).
pub fn layer(db: Database) -> SessionLayer {
    let with_replicas = db.has_replicas();
    let layer = SessionLayer::new(db).on_commit_error(|error| ApiError::from(error).into_response());
    if with_replicas {
        layer.route_reads()
    } else {
        layer
    }
}

/// What [`check_token_user`] knows of the request's token: the user it
/// names, and whether the handler found that user in the database.
#[derive(Debug, Default)]
struct TokenState {
    user: OnceLock<i64>,
    found: AtomicBool,
}

/// Where the authentication extractors record the user the request's
/// token names, for [`check_token_user`], and where a handler that found
/// that user anyway says so ([`found`](Self::found)).
#[derive(Clone, Debug, Default)]
pub struct TokenUser(Arc<TokenState>);

impl TokenUser {
    /// Records that the token's user exists, as a statement the handler
    /// sent anyway found (a page's, which counts the user's row beside its
    /// own): the check after the handler then sends no lookup of its own.
    pub fn found(&self) {
        self.0.found.store(true, Ordering::Relaxed);
    }
}

/// Records that the request's token names user `id`, whose existence
/// [`check_token_user`] checks after the handler. Called by the
/// authentication extractors; returns where the handler can say it found
/// the user (none outside the middleware).
pub fn note_token_user(parts: &Parts, id: i64) -> Option<TokenUser> {
    let token_user = parts.extensions.get::<TokenUser>()?;
    // Set once: a handler taking both AuthUser and MaybeAuthUser reads one
    // token, so the id is the same.
    let _ = token_user.0.user.set(id);
    Some(token_user.clone())
}

/// The middleware that checks the token's user (see the module
/// documentation). Install it inside the session layer, so that it runs
/// before the commit, and outside the timeout, which bounds the handler
/// only.
pub async fn check_token_user(mut request: Request, next: Next) -> Response {
    let token_user = TokenUser::default();
    request.extensions_mut().insert(token_user.clone());
    let session = RequestSession::from_extensions(request.extensions());
    let response = next.run(request).await;
    if token_user.0.found.load(Ordering::Relaxed) {
        return response;
    }
    match (token_user.0.user.get(), session.and_then(|session| session.opened())) {
        (Some(&user), Some(mut db)) => user_exists_or_401(&mut db, user, response).await,
        _ => response,
    }
}

/// The handler's response if the token's user exists, 401 if not. Not
/// checked when the session sent nothing (no connection is taken for the
/// check alone) or the answer is a 401 or a server error already.
async fn user_exists_or_401(session: &mut Session, user: i64, response: Response) -> Response {
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

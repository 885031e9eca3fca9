//! One [`Session`] per request in an [axum](https://docs.rs/axum) app
//! (feature `axum`): opened for the request, committed when the handler
//! succeeds, rolled back when it fails, always closed.
//!
//! Install a [`SessionLayer`] on the router and take a [`DbSession`] as a
//! handler argument; use it as a `&mut Session` and never commit it
//! yourself:
//!
//! ```
//! use axum::routing::post;
//! use axum::{Json, Router};
//! use orm_core::axum::{DbSession, SessionLayer};
//! use orm_core::{Database, Entity};
//!
//! #[derive(Entity, Clone, Debug, PartialEq, serde::Deserialize)]
//! struct Note {
//!     #[orm(primary_key, generated)]
//!     #[serde(default)]
//!     id: i64,
//!     text: String,
//! }
//!
//! // Json runs before the handler and takes no connection: a bad body is
//! // refused without touching the pool. Any orm_core::Error answers with a
//! // status and a generic message (see `error_status`).
//! async fn add_note(mut db: DbSession, Json(note): Json<Note>) -> orm_core::Result<Json<i64>> {
//!     let note = db.add(note);
//!     db.flush().await?; // INSERT ... RETURNING id, inside the request's transaction
//!     let id = note.read().id;
//!     Ok(Json(id)) // a 2xx: the layer commits
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
//! # let test_db = orm_tests::TestDb::new().await;
//! # test_db.client().await.batch_execute("CREATE TABLE note (id bigserial PRIMARY KEY, text text NOT NULL)").await?;
//! let db = Database::connect(test_db.url())?;
//! let app: Router = Router::new().route("/notes", post(add_note)).layer(SessionLayer::new(db.clone()));
//! # use tower::ServiceExt;
//! # let request = axum::http::Request::post("/notes").header("content-type", "application/json")
//! #     .body(axum::body::Body::from(r#"{"text": "hello"}"#)).unwrap();
//! # let response = app.oneshot(request).await.unwrap();
//! # assert_eq!(response.status(), 200);
//! # assert_eq!(db.session().query::<Note>().count().await?, 1);
//! # Ok(()) }
//! ```
//!
//! What ends the session, once the handler has answered:
//!
//! - a response the commit policy accepts (by default 2xx and 3xx, see
//!   [`success_or_redirect`] and [`SessionLayer::commit_when`]) commits it.
//!   A failed commit replaces the response with an error response (by
//!   default from [`error_status`]: 409 for a conflict, 503 when the
//!   database is unreachable, 500 otherwise; see
//!   [`SessionLayer::on_commit_error`]), so a success always means a
//!   committed transaction;
//! - any other response rolls it back. Install panic and timeout layers
//!   (tower-http's `CatchPanicLayer` and `TimeoutLayer`) *inside* this one:
//!   they turn a panic and a timeout into a 500 and a 503, which roll back,
//!   and the timeout then bounds the handler but never the `COMMIT`. The
//!   handler's future is dropped, possibly mid-statement; the session
//!   cancels that statement and the connection comes back clean;
//! - a client that hangs up while the handler runs makes the server drop
//!   the request's future, this layer's included, and with it the
//!   session, which rolls back the same way. So does a panic with no
//!   `CatchPanicLayer` to catch it. Once the handler has answered, the
//!   layer ends the session in a task of its own, which a hang-up does not
//!   cut off: a commit under way completes, with its `after_commit` hooks;
//! - a step that fails after a successful `COMMIT` ([`Error::AfterCommit`]:
//!   an `after_commit` hook, say) leaves the handler's response as it is
//!   (and its commit token) and logs the error: the transaction committed.
//!   Only an [`AfterCommit`] body, made from objects the commit may have
//!   failed to update, is replaced, unless it was a hook that failed.
//!
//! A handler that answers with what it inserted (a generated key, say)
//! can leave the insert to the commit, which sends it with `BEGIN` and
//! `COMMIT` in one round trip, and answer with [`AfterCommit`], whose body
//! is made once the layer has committed, instead of flushing first.
//!
//! A request whose handler takes no `DbSession` costs nothing, and a
//! `DbSession` takes no connection until its first statement: extractors
//! that run before the handler (authentication, `Json`, validation) refuse
//! bad requests while holding no connection.
//!
//! With read replicas (see [`DatabaseConfig::replicas`](crate::DatabaseConfig::replicas)),
//! [`SessionLayer::route_reads`] gives `GET`, `HEAD` and `OPTIONS` requests
//! a [read session](crate::Database::read_session) and hands the client
//! that wrote a [`CommitToken`], so that its next
//! requests read its writes.
//!
//! A middleware between this layer and the handler can reach the same
//! session, after the handler, through [`RequestSession`]: to check
//! something in the request's transaction before the commit, say.

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ::axum::extract::{FromRequestParts, Request};
use ::axum::http::request::Parts;
use ::axum::http::{Extensions, StatusCode};
use ::axum::response::{IntoResponse, Response};
use tokio::sync::{Mutex, OwnedMappedMutexGuard, OwnedMutexGuard};
use tracing::Instrument;

pub use crate::axum_after_commit::AfterCommit;
use crate::axum_after_commit::RendersAfterCommit;
use crate::axum_reads::{self, Route};
pub use crate::axum_reads::{COMMIT_TOKEN_COOKIE, COMMIT_TOKEN_HEADER};
use crate::commit_token::CommitToken;
use crate::database::Database;
use crate::error::Error;
use crate::replicas::ServedBy;
use crate::session::Session;
use crate::stats::SessionStats;

type CommitPolicy = dyn Fn(&Response) -> bool + Send + Sync;
type CommitErrorResponse = dyn Fn(Error) -> Response + Send + Sync;

/// The tower layer that gives every request a session slot and ends the
/// session the handler opened in it; see the [module
/// documentation](self) for what commits and what rolls back.
///
/// ```
/// use axum::http::StatusCode;
/// use axum::response::{IntoResponse, Response};
/// use orm_core::axum::SessionLayer;
///
/// # fn layer(db: orm_core::Database) -> SessionLayer {
/// SessionLayer::new(db)
///     // Commit only on 2xx: a redirect rolls back too.
///     .commit_when(|response: &Response| response.status().is_success())
///     // The application's own error body for a failed commit.
///     .on_commit_error(|error| {
///         if error.is_retryable() {
///             (StatusCode::CONFLICT, "try again").into_response()
///         } else {
///             error.into_response()
///         }
///     })
/// # }
/// ```
#[derive(Clone)]
pub struct SessionLayer {
    /// Shared by the layer's services and each request's
    /// [`RequestSession`]: a request clones one `Arc`, not the database's
    /// handles and the policies one by one.
    settings: Arc<LayerSettings>,
}

/// What a [`SessionLayer`] was configured with.
#[derive(Clone)]
struct LayerSettings {
    db: Database,
    commit_when: Arc<CommitPolicy>,
    on_commit_error: Arc<CommitErrorResponse>,
    route_reads: bool,
}

impl SessionLayer {
    /// Sessions from `db`, committed on 2xx and 3xx responses, with
    /// [`Error`]'s own response for a failed commit.
    pub fn new(db: Database) -> Self {
        let settings = LayerSettings {
            db,
            commit_when: Arc::new(success_or_redirect),
            on_commit_error: Arc::new(IntoResponse::into_response),
            route_reads: false,
        };
        SessionLayer { settings: Arc::new(settings) }
    }

    /// Sends reads to the read replicas, with read-your-writes for the
    /// client that wrote:
    ///
    /// - a `GET`, `HEAD` or `OPTIONS` request gets a
    ///   [read session](crate::Database::read_session): a replica serves it
    ///   (the primary when none is fit), and a handler that writes through
    ///   it fails with [`Error::ReadOnlySession`]. A request carrying a
    ///   commit token (the [`COMMIT_TOKEN_HEADER`] header, or else the
    ///   [`COMMIT_TOKEN_COOKIE`] cookie) reads from a replica only once it
    ///   has replayed that commit
    ///   ([`Database::read_session_after`](crate::Database::read_session_after));
    ///   a malformed token is ignored;
    /// - any other request gets an ordinary session on the primary, which
    ///   commits with [`Session::commit_with_token`]: the response carries
    ///   the token in the header and sets the cookie (`HttpOnly`,
    ///   `SameSite=Lax`, an hour), so that browsers send it back unasked
    ///   and API clients can.
    ///
    /// A client that drops the token still reads, from replicas that may
    /// not have its latest writes yet.
    #[must_use]
    pub fn route_reads(mut self) -> Self {
        Arc::make_mut(&mut self.settings).route_reads = true;
        self
    }

    /// Decides which responses commit (the rest roll back), instead of
    /// [`success_or_redirect`]. The policy sees the whole response, so a
    /// handler can also ask for a rollback with a marker in the response's
    /// extensions (a dry run that answers 200, say).
    #[must_use]
    pub fn commit_when(mut self, policy: impl Fn(&Response) -> bool + Send + Sync + 'static) -> Self {
        Arc::make_mut(&mut self.settings).commit_when = Arc::new(policy);
        self
    }

    /// Makes the response that replaces the handler's when the commit
    /// fails, instead of [`Error`]'s own (see [`error_status`]): for an
    /// application with its own error bodies. The transaction was rolled
    /// back; the error is the commit's.
    #[must_use]
    pub fn on_commit_error(mut self, respond: impl Fn(Error) -> Response + Send + Sync + 'static) -> Self {
        Arc::make_mut(&mut self.settings).on_commit_error = Arc::new(respond);
        self
    }
}

impl<S> tower::Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> SessionService<S> {
        SessionService { inner, settings: Arc::clone(&self.settings) }
    }
}

/// The service [`SessionLayer`] wraps around the router's.
#[derive(Clone)]
pub struct SessionService<S> {
    inner: S,
    settings: Arc<LayerSettings>,
}

impl<S> tower::Service<Request> for SessionService<S>
where
    S: tower::Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        // The service that was polled ready serves this request; a clone
        // stays behind for the next (tower's rule for services that move
        // into a future).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let held = if self.settings.route_reads { axum_reads::token_of(request.headers()) } else { None };
        let route = if self.settings.route_reads && axum_reads::only_reads(request.method()) {
            Route::Read(held)
        } else {
            Route::Primary
        };
        let settings = Arc::clone(&self.settings);
        let slot = RequestSession { slot: Arc::new(Mutex::new(None)), settings, route, held };
        request.extensions_mut().insert(slot.clone());
        Box::pin(async move {
            let response = inner.call(request).await?;
            Ok(slot.end(response).await)
        })
    }
}

/// The default commit policy: commit when the status is 2xx or 3xx (a
/// redirect after a successful form post is a success).
pub fn success_or_redirect(response: &Response) -> bool {
    response.status().is_success() || response.status().is_redirection()
}

/// The status that [`Error`]'s `IntoResponse` answers with, and so the
/// default response to a failed commit:
///
/// | error | status |
/// | --- | --- |
/// | [`Error::NotFound`] | 404 |
/// | unique or foreign-key violation, stale data, serialization failure, deadlock | 409: a concurrent change; retrying may succeed |
/// | [`Error::BadData`] | 422: the input holds a value the database refuses |
/// | pool timeout, connection lost, cannot connect, pool error | 503 |
/// | anything else | 500 |
///
/// The body is a short generic message: database errors echo row values
/// and constraint names, which a client must not see. The error itself is
/// logged (`tracing`, without PostgreSQL's `DETAIL`).
///
/// ```
/// use axum::http::StatusCode;
/// use orm_core::axum::error_status;
///
/// let error = orm_core::Error::PoolTimeout { stage: "waiting for a free connection" };
/// assert_eq!(error_status(&error), StatusCode::SERVICE_UNAVAILABLE);
/// assert_eq!(error_status(&orm_core::Error::TransactionFailed), StatusCode::INTERNAL_SERVER_ERROR);
/// ```
pub fn error_status(error: &Error) -> StatusCode {
    match error {
        Error::NotFound { .. } => StatusCode::NOT_FOUND,
        Error::UniqueViolation { .. }
        | Error::ForeignKeyViolation { .. }
        | Error::StaleData { .. }
        | Error::SerializationFailure(_)
        | Error::Deadlock(_) => StatusCode::CONFLICT,
        Error::BadData { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        Error::PoolTimeout { .. } | Error::ConnectionLost(_) | Error::Connect { .. } | Error::Pool(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The status of [`error_status`] with a generic message, so a handler can
/// return `orm_core::Result<T>` and use `?` on the session.
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = error_status(&self);
        let message = match status {
            StatusCode::NOT_FOUND => "not found",
            StatusCode::CONFLICT => "conflicts with a concurrent change; try again",
            StatusCode::UNPROCESSABLE_ENTITY => "has a value the database cannot store",
            StatusCode::SERVICE_UNAVAILABLE => "the database is temporarily unavailable; try again",
            _ => "internal error",
        };
        if status.is_server_error() {
            tracing::error!(error = %self, "database error");
        } else {
            tracing::warn!(error = %self, "database error");
        }
        (status, message).into_response()
    }
}

/// The request's session: take it as a handler argument and use it as a
/// `&mut Session`. Extracting it opens the request's session, which takes
/// no connection until its first statement; the [`SessionLayer`] ends it
/// after the handler.
///
/// Take it once per request: a second `DbSession` in the same request is
/// refused ([`SessionRejection::AlreadyTaken`]) rather than left waiting
/// for the first.
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

impl<S: Send + Sync> FromRequestParts<S> for DbSession {
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, SessionRejection> {
        RequestSession::from_extensions(&parts.extensions).ok_or(SessionRejection::NoLayer)?.open()
    }
}

/// Why a [`DbSession`] could not be had: a bug in the application's
/// wiring, answered 500 (with a generic message) and logged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionRejection {
    /// The route is not under a [`SessionLayer`].
    #[error("DbSession used on a route without a SessionLayer")]
    NoLayer,
    /// The request's session is held already: a handler or middleware
    /// took it twice.
    #[error("the request's DbSession is taken already (extracted twice in one request?)")]
    AlreadyTaken,
}

impl IntoResponse for SessionRejection {
    fn into_response(self) -> Response {
        tracing::error!(error = %self, "no session for the request");
        (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
    }
}

/// The request's session slot, as [`SessionLayer`] puts it in the
/// request's extensions: what [`DbSession`] is extracted from, and how a
/// middleware inside the layer reaches the same session after the handler.
///
/// ```
/// use axum::extract::Request;
/// use axum::middleware::Next;
/// use axum::response::Response;
/// use orm_core::axum::RequestSession;
///
/// /// Records the request in the handler's transaction, if it opened one.
/// async fn audit(request: Request, next: Next) -> Response {
///     let session = RequestSession::from_extensions(request.extensions());
///     let path = request.uri().path().to_owned();
///     let response = next.run(request).await;
///     if let Some(mut db) = session.and_then(|session| session.opened()) {
///         if db.stats().statements > 0 {
///             // Commits or rolls back with the handler's work; a failure
///             // here would fail the commit too, so answer for it.
///             if let Err(error) = db.execute("INSERT INTO audit (path) VALUES ($1)", &[&path]).await {
///                 return axum::response::IntoResponse::into_response(error);
///             }
///         }
///     }
///     response
/// }
/// # use axum::routing::{get, post};
/// # use orm_core::axum::{DbSession, SessionLayer};
/// # use tower::ServiceExt;
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
/// # let test_db = orm_tests::TestDb::new().await;
/// # test_db.client().await.batch_execute("CREATE TABLE audit (path text NOT NULL)").await?;
/// # let db = orm_core::Database::connect(test_db.url())?;
/// # async fn touch(mut db: DbSession) -> orm_core::Result<()> { db.execute("SELECT 1", &[]).await?; Ok(()) }
/// let app = axum::Router::new()
///     .route("/touch", post(touch))
///     .route("/nothing", get(|| async { "no session" }))
///     .layer(axum::middleware::from_fn(audit)) // inside: runs before the commit
///     .layer(SessionLayer::new(db.clone()));
/// # for path in ["/touch", "/nothing"] {
/// #     let method = if path == "/touch" { "POST" } else { "GET" };
/// #     let request = axum::http::Request::builder().method(method).uri(path).body(axum::body::Body::empty()).unwrap();
/// #     assert_eq!(app.clone().oneshot(request).await.unwrap().status(), 200);
/// # }
/// # let paths: Vec<String> = db.session().query_rows("SELECT path FROM audit", &[]).await?.iter().map(|row| row.get(0)).collect();
/// # assert_eq!(paths, ["/touch"]);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RequestSession {
    slot: Arc<Mutex<Option<Session>>>,
    /// The layer's, for its database and its policies.
    settings: Arc<LayerSettings>,
    /// Which session the request gets.
    route: Route,
    /// The commit token the request came with, when reads are routed: the
    /// token handed back is never older.
    held: Option<CommitToken>,
}

impl RequestSession {
    /// The slot in a request's extensions, if the request went through a
    /// [`SessionLayer`].
    pub fn from_extensions(extensions: &Extensions) -> Option<Self> {
        extensions.get::<RequestSession>().cloned()
    }

    /// The request's session, opened now if nobody opened it yet: what the
    /// [`DbSession`] extractor does.
    pub fn open(&self) -> Result<DbSession, SessionRejection> {
        // Uncontended unless the session is taken twice, which would wait
        // forever: refused instead.
        let mut guard = Arc::clone(&self.slot).try_lock_owned().map_err(|_| SessionRejection::AlreadyTaken)?;
        if guard.is_none() {
            *guard = Some(self.route.open(&self.settings.db));
        }
        OwnedMutexGuard::try_map(guard, Option::as_mut).map(DbSession).map_err(|_| SessionRejection::AlreadyTaken)
    }

    /// The request's session if the handler opened one and nobody holds it
    /// now; `None` otherwise (no statement to check, nothing to add to).
    /// For a middleware inside the [`SessionLayer`], after the handler.
    pub fn opened(&self) -> Option<DbSession> {
        let guard = Arc::clone(&self.slot).try_lock_owned().ok()?;
        OwnedMutexGuard::try_map(guard, Option::as_mut).map(DbSession).ok()
    }

    /// Takes the session back once everything inside the layer has
    /// answered, and commits or rolls it back.
    async fn end(self, response: Response) -> Response {
        // Everything inside the layer has returned, so no DbSession should
        // be left; one that was moved into a spawned task still is.
        let Ok(mut guard) = self.slot.try_lock() else {
            tracing::error!(
                "the request's DbSession is still held after the response: it rolls back when dropped; \
                 do not move it into a spawned task"
            );
            return (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
        };
        let Some(session) = guard.take() else { return response };
        drop(guard);
        // A task of its own, which the server cannot drop with the request
        // when the client hangs up: a `COMMIT` cut off there would leave
        // the outcome unknown, and a commit that went through without its
        // `after_commit` hooks.
        let (settings, held) = (self.settings, self.held);
        let ending = tokio::spawn(
            async move {
                if (settings.commit_when)(&response) {
                    commit(session, response, &settings, held).await
                } else {
                    rollback(session, response).await
                }
            }
            .in_current_span(),
        );
        ending.await.unwrap_or_else(|error| {
            tracing::error!(%error, "ending the request's session failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        })
    }
}

/// How the request's session ended, in the response's extensions (not sent
/// to the client): for logs, metrics and tests. Absent when the handler
/// opened no session, when the commit failed (the response is then the
/// commit error's), and when a step after a successful commit failed
/// ([`Error::AfterCommit`]: the handler's response stands, the error is
/// logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionOutcome {
    /// What the session sent to the database.
    pub stats: SessionStats,
    /// Whether it committed (rather than rolled back).
    pub committed: bool,
    /// The server its connection came from (see [`Session::served_by`]).
    pub served_by: Option<ServedBy>,
}

async fn commit(
    session: Session,
    mut response: Response,
    layer: &LayerSettings,
    held: Option<CommitToken>,
) -> Response {
    let served_by = session.served_by();
    let (committed, token) = if layer.route_reads && !session.is_read_only() {
        session.commit_keeping_token().await
    } else {
        (session.commit().await, None)
    };
    if let Some(token) = token {
        axum_reads::give(response.headers_mut(), token, held);
    }
    match committed {
        Ok(stats) => {
            tracing::debug!(statements = stats.statements, round_trips = stats.round_trips, "session committed");
            response.extensions_mut().insert(SessionOutcome { stats, committed: true, served_by });
            response
        }
        // Committed: an error status would have the client write again
        // what is written. Unless the body is still to be made from
        // objects the commit could not update (only a hook failed after it
        // leaves them right): that would be a wrong answer.
        Err(Error::AfterCommit(error))
            if matches!(*error, Error::Hook { .. }) || response.extensions().get::<RendersAfterCommit>().is_none() =>
        {
            tracing::error!(%error, "the transaction committed, but a step after the commit failed");
            response
        }
        Err(error) => {
            tracing::warn!(%error, "commit failed: the handler's response is replaced by an error");
            (layer.on_commit_error)(error)
        }
    }
}

async fn rollback(session: Session, mut response: Response) -> Response {
    let (stats, served_by) = (session.stats(), session.served_by());
    // Explicit rather than a drop, which would warn about the work the
    // handler left pending; free when no transaction was opened.
    if let Err(error) = session.rollback().await {
        tracing::warn!(%error, "rollback failed");
    }
    tracing::debug!(statements = stats.statements, round_trips = stats.round_trips, "session rolled back");
    response.extensions_mut().insert(SessionOutcome { stats, committed: false, served_by });
    response
}

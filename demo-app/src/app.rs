//! The router with its middleware stack, outermost first:
//!
//! 1. a request id (`x-request-id`, taken from the request or a new UUID),
//!    echoed in the response;
//! 2. tracing: a span per request carrying the id, and a log line per
//!    response with status and latency;
//! 3. CORS, when `CORS_ORIGINS` names origins: it answers preflight
//!    requests itself, before any session;
//! 4. the sums of what requests cost the database (`request_costs`), read
//!    from the session's outcome on the response;
//! 5. the session per request (`orm_core::axum`, configured in
//!    `db_session`): it commits or rolls back after everything below has
//!    answered;
//! 6. the check that the token's user still exists (`db_session`), in the
//!    request's transaction;
//! 7. panics become a 500 with a RealWorld error body;
//! 8. the request timeout (503, with a RealWorld error body), around the
//!    handler only.
//!
//! The order of 5 to 8 is what makes the outcome truthful. The timeout
//! bounds the handler, never the session's `COMMIT`: were it outside the
//! session layer, it could answer "503, rolled back" while a `COMMIT` it cut
//! off had already gone through. And a panic or a timeout reaches the
//! session layer as an ordinary 500 or 503, which it rolls back explicitly
//! (a statement the handler left running is cancelled and its connection
//! discarded).

use std::any::Any;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderName, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use orm_core::axum::COMMIT_TOKEN_HEADER;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::config::CorsOrigins;
use crate::db_session;
use crate::error::ApiError;
use crate::json::BODY_LIMIT;
use crate::request_costs;
use crate::routes;
use crate::state::AppState;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole application.
pub fn router(state: AppState) -> Router {
    with_middleware(routes::api(), state)
}

/// Wraps `routes` in the middleware stack. Tests use it to run extra routes
/// under the same middleware as the API.
///
/// The stack is one layer of the router, and the request id and tracing
/// another, rather than a layer per middleware: the router boxes each of
/// its layers around every route, and calling a boxed level clones the
/// service inside it, which clones every boxed level below, each of which
/// clones its own inner ones again when called. With a layer per
/// middleware that was 93 boxed clones (and their drops) a request under
/// the load mix; with two `ServiceBuilder` stacks, each one box of plain
/// nested services, and the response maps below, it is 8.
pub fn with_middleware(routes: Router<AppState>, state: AppState) -> Router {
    let timeout = state.request_timeout;
    let routes = routes.layer(
        ServiceBuilder::new()
            .layer(request_costs::layer(state.costs.clone()))
            .layer(db_session::layer(state.db.clone()))
            .layer(axum::middleware::from_fn(db_session::check_token_user))
            .layer(CatchPanicLayer::custom(panic_response))
            .map_response(with_error_body)
            .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, timeout))
            .layer(DefaultBodyLimit::max(BODY_LIMIT)),
    );
    let routes = match cors(&state.cors_origins) {
        Some(cors) => routes.layer(cors),
        None => routes,
    };
    routes
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_response(DefaultOnResponse::new().level(Level::INFO)),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID)),
        )
        .with_state(state)
}

/// The CORS layer for `origins`, if any. The API's browser clients send
/// JSON and a token in `Authorization`, never cookies, so credentials stay
/// off (which also makes `*` safe). The commit token travels as a header
/// both ways, for a page to read its own writes from a replica (the
/// cookie, without credentials, does not).
fn cors(origins: &CorsOrigins) -> Option<CorsLayer> {
    let allow_origin = match origins {
        CorsOrigins::None => return None,
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(origins) => AllowOrigin::list(origins.iter().cloned()),
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([
                AUTHORIZATION,
                CONTENT_TYPE,
                HeaderName::from_static("x-requested-with"),
                HeaderName::from_static(COMMIT_TOKEN_HEADER),
            ])
            .expose_headers([REQUEST_ID, HeaderName::from_static(COMMIT_TOKEN_HEADER)])
            // Browsers cap this (Chromium at 2 hours); it spares a preflight
            // per request.
            .max_age(Duration::from_secs(3600)),
    )
}

/// Gives the timeout layer's empty 503 a RealWorld error body. A plain map
/// of the response (`axum::middleware::map_response` boxed a future and a
/// copy of the services inside it for every request).
fn with_error_body(response: Response) -> Response {
    if response.status() == StatusCode::SERVICE_UNAVAILABLE && !response.headers().contains_key(CONTENT_TYPE) {
        tracing::warn!("request timed out; its session will be rolled back");
        return ApiError::Unavailable.into_response();
    }
    response
}

fn request_span(request: &Request) -> tracing::Span {
    let id = request.headers().get(REQUEST_ID).and_then(|id| id.to_str().ok()).unwrap_or("-");
    tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path())
}

#[allow(clippy::needless_pass_by_value)] // the signature CatchPanicLayer calls
fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    tracing::error!(panic = message, "handler panicked; its session will be rolled back");
    ApiError::Internal.into_response()
}

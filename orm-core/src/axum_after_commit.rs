//! [`AfterCommit`]: a response whose body is written once the request's
//! session has committed, so that it can show what the commit's flush
//! generated (keys, defaults) without a flush of its own first.

use std::convert::Infallible;

use ::axum::body::Body;
use ::axum::http::header::CONTENT_TYPE;
use ::axum::http::{HeaderValue, StatusCode};
use ::axum::response::{IntoResponse, Response};
use bytes::Bytes;

/// A response whose body is made by `render` only after the
/// [`SessionLayer`](crate::axum::SessionLayer) has committed the request's
/// session: the body is made when the server first reads it, and the
/// server reads it only once the layer has answered.
///
/// A handler that answers with what it inserted usually needs the keys the
/// database generates, and so flushes before it answers; the layer's
/// `COMMIT` is then a round trip of its own. Leaving the insert to the
/// commit and answering with `AfterCommit` sends `BEGIN`, the `INSERT`
/// and `COMMIT` in one round trip, and `render` reads the keys from the
/// handles, which outlive the session.
///
/// `render` runs only if the response is sent: a commit that fails
/// replaces the response with its error response (see
/// [`SessionLayer::on_commit_error`](crate::axum::SessionLayer::on_commit_error)),
/// and `render` never runs. Give it a status the commit policy commits (any
/// 2xx or 3xx by default): after a rollback the handles hold no generated
/// values. A middleware between the layer and the handler that reads the
/// response's body would make it before the commit; none of axum's or
/// tower-http's usual ones (timeouts, panics, tracing, request ids) does.
/// The body's length is not known beforehand, so HTTP/1.1 sends it chunked.
///
/// ```
/// use axum::http::{HeaderValue, StatusCode};
/// use axum::routing::post;
/// use axum::Router;
/// use orm_core::axum::{AfterCommit, DbSession, SessionLayer, SessionOutcome};
/// use orm_core::{Database, Entity};
///
/// #[derive(Entity, Clone, Debug, PartialEq)]
/// struct Note {
///     #[orm(primary_key, generated)]
///     id: i64,
///     text: String,
/// }
///
/// async fn add_note(mut db: DbSession, text: String) -> impl axum::response::IntoResponse {
///     // No flush: the INSERT goes with the layer's COMMIT.
///     let note = db.add(Note { id: 0, text });
///     let json = HeaderValue::from_static("application/json");
///     AfterCommit::new(StatusCode::CREATED, json, move || format!(r#"{{"id":{}}}"#, note.read().id))
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let test_db = orm_tests::TestDb::new().await;
/// # test_db.client().await.batch_execute("CREATE TABLE note (id bigserial PRIMARY KEY, text text NOT NULL)").await?;
/// let db = Database::connect(test_db.url())?;
/// let app: Router = Router::new().route("/notes", post(add_note)).layer(SessionLayer::new(db.clone()));
/// # use tower::ServiceExt;
/// # for id in 1..=2 {
/// #     let request = axum::http::Request::post("/notes").body(axum::body::Body::from("hello"))?;
/// #     let response = app.clone().oneshot(request).await?;
/// #     assert_eq!(response.status(), StatusCode::CREATED);
/// #     let outcome = *response.extensions().get::<SessionOutcome>().expect("an outcome");
/// #     // The second request's INSERT is prepared already: one round trip.
/// #     assert_eq!((outcome.stats.statements, outcome.stats.round_trips), (1, if id == 1 { 2 } else { 1 }));
/// #     let body = axum::body::to_bytes(response.into_body(), 1024).await?;
/// #     assert_eq!(body, format!(r#"{{"id":{id}}}"#));
/// # }
/// # Ok(()) }
/// ```
pub struct AfterCommit<F> {
    status: StatusCode,
    content_type: HeaderValue,
    render: F,
}

impl<F, B> AfterCommit<F>
where
    F: FnOnce() -> B + Send + 'static,
    B: Into<Bytes>,
{
    /// A response with `status` and the `Content-Type` `content_type`,
    /// whose body `render` makes after the commit.
    pub fn new(status: StatusCode, content_type: HeaderValue, render: F) -> Self {
        AfterCommit { status, content_type, render }
    }
}

impl<F, B> IntoResponse for AfterCommit<F>
where
    F: FnOnce() -> B + Send + 'static,
    B: Into<Bytes>,
{
    fn into_response(self) -> Response {
        let render = self.render;
        let body =
            Body::from_stream(futures_util::stream::once(async move { Ok::<Bytes, Infallible>(render().into()) }));
        let mut response = (self.status, [(CONTENT_TYPE, self.content_type)], body).into_response();
        response.extensions_mut().insert(RendersAfterCommit);
        response
    }
}

/// Marks a response whose body an [`AfterCommit`] makes from the handles
/// once the layer has committed: a commit that could not update them
/// (see [`Error::AfterCommit`](crate::Error::AfterCommit)) would make a
/// wrong body.
#[derive(Clone, Copy)]
pub(crate) struct RendersAfterCommit;

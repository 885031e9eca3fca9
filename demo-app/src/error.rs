//! API errors and their RealWorld bodies: `{"errors": {"field": ["message"]}}`.
//!
//! Database errors are logged here, with the request's span, and turned into
//! a status and a generic message: no SQL, constraint or value reaches the
//! client.

use std::borrow::Cow;
use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// The message of [`ApiError::OutcomeUnknown`]; `demo-app/load/mix.lua`
/// looks for it to tell such an answer from an error.
pub const OUTCOME_UNKNOWN: &str = "may or may not have been saved: check before retrying";

/// Everything a handler can answer instead of its result.
#[derive(Debug, PartialEq, Eq)]
pub enum ApiError {
    /// 401: no `Authorization` header.
    MissingToken,
    /// 401: a token that is malformed, badly signed, expired, or names no user.
    InvalidToken,
    /// 401: login with an unknown e-mail address or a wrong password.
    InvalidCredentials,
    /// 422: invalid input, as (field, message) pairs. A field is usually a
    /// static name, but a path or query parameter, or a body field holding a
    /// NUL byte, is named as the client sent it.
    Invalid(Vec<(Cow<'static, str>, String)>),
    /// 413: a body over [`BODY_LIMIT`](crate::json::BODY_LIMIT).
    TooLarge,
    /// 404: the named resource (`article`, `profile`, `comment`) does not exist.
    NotFound(&'static str),
    /// 403: the named resource belongs to someone else.
    Forbidden(&'static str),
    /// 409: a unique field (`username`, `email`) already holds this value.
    Taken(&'static str),
    /// 409: a concurrent request changed the same data; retrying may succeed.
    Conflict,
    /// 503: the database cannot be reached or has no free connection.
    Unavailable,
    /// 500: the connection broke after `COMMIT` was sent, so the request's
    /// writes may or may not have been saved. Said apart from
    /// [`ApiError::Internal`] so that a client checks before it retries,
    /// instead of taking the write as failed and making it twice.
    OutcomeUnknown,
    /// 500: anything else; the details are in the log.
    Internal,
}

impl ApiError {
    /// A 422 with one message for one field.
    pub fn invalid(field: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        ApiError::Invalid(vec![(field.into(), message.into())])
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MissingToken | ApiError::InvalidToken | ApiError::InvalidCredentials => StatusCode::UNAUTHORIZED,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Taken(_) | ApiError::Conflict => StatusCode::CONFLICT,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::OutcomeUnknown | ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `errors` object of the body.
    fn errors(self) -> BTreeMap<Cow<'static, str>, Vec<String>> {
        let one = |field: &'static str, message: String| vec![(Cow::Borrowed(field), message)];
        let pairs = match self {
            ApiError::MissingToken => one("token", "is missing".to_owned()),
            ApiError::InvalidToken => one("token", "is invalid".to_owned()),
            ApiError::InvalidCredentials => one("credentials", "invalid".to_owned()),
            ApiError::Invalid(pairs) => pairs,
            ApiError::TooLarge => one("body", format!("is too large (maximum is {} bytes)", crate::json::BODY_LIMIT)),
            ApiError::NotFound(resource) => one(resource, "not found".to_owned()),
            ApiError::Forbidden(resource) => one(resource, "forbidden".to_owned()),
            ApiError::Taken(field) => one(field, "has already been taken".to_owned()),
            ApiError::Conflict => one("request", "conflicts with a concurrent change; try again".to_owned()),
            ApiError::Unavailable => one("server", "is temporarily unavailable; try again".to_owned()),
            ApiError::OutcomeUnknown => one("request", OUTCOME_UNKNOWN.to_owned()),
            ApiError::Internal => one("server", "internal error".to_owned()),
        };
        let mut errors: BTreeMap<Cow<'static, str>, Vec<String>> = BTreeMap::new();
        for (field, message) in pairs {
            errors.entry(field).or_default().push(message);
        }
        errors
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        (status, Json(serde_json::json!({ "errors": self.errors() }))).into_response()
    }
}

impl From<orm_core::Error> for ApiError {
    fn from(error: orm_core::Error) -> Self {
        use orm_core::Error as E;
        // `Display` of the ORM's errors leaves out PostgreSQL's DETAIL, which
        // echoes row values, so the log holds no user data either.
        match error {
            E::UniqueViolation { .. }
            | E::ForeignKeyViolation { .. }
            | E::StaleData { .. }
            | E::SerializationFailure(_)
            | E::Deadlock(_) => {
                tracing::warn!(%error, "database conflict");
                ApiError::Conflict
            }
            E::PoolTimeout { .. } | E::ConnectionLost(_) | E::Connect { .. } | E::Pool(_) => {
                tracing::error!(%error, "database unavailable");
                ApiError::Unavailable
            }
            E::CommitUnknown(_) => {
                tracing::error!(%error, "the commit's outcome is unknown");
                ApiError::OutcomeUnknown
            }
            // Input validation should catch these first (a NUL byte in
            // text, a number out of range, a value too large for an index
            // row); this safety net makes a missed case a 422, not a 500.
            E::BadData { .. } => {
                tracing::warn!(%error, "the database refused a value");
                ApiError::invalid("request", "has a value the database cannot store")
            }
            error => {
                tracing::error!(%error, "database error");
                ApiError::Internal
            }
        }
    }
}

/// Handler results.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(error: ApiError) -> (StatusCode, serde_json::Value) {
        let response = error.into_response();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn bodies_follow_the_realworld_shape() {
        let (status, json) = body(ApiError::MissingToken).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(json, serde_json::json!({ "errors": { "token": ["is missing"] } }));

        let (status, json) = body(ApiError::Invalid(vec![
            ("title".into(), "can't be blank".into()),
            ("title".into(), "is too long".into()),
        ]))
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(json, serde_json::json!({ "errors": { "title": ["can't be blank", "is too long"] } }));

        let (status, json) = body(ApiError::Forbidden("article")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(json, serde_json::json!({ "errors": { "article": ["forbidden"] } }));
    }

    #[tokio::test]
    async fn database_errors_become_generic_messages() {
        let error = ApiError::from(orm_core::Error::PoolTimeout { stage: "waiting for a free connection" });
        assert_eq!(error, ApiError::Unavailable);
        let (status, json) = body(error).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!json.to_string().contains("connection"), "{json}");

        let error = ApiError::from(orm_core::Error::TransactionFailed);
        let (status, json) = body(error).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(json, serde_json::json!({ "errors": { "server": ["internal error"] } }));
    }

    /// A commit cut off by a terminated backend (`scripts/chaos.sh` found
    /// it answered "internal error", which a client takes as failed).
    #[tokio::test]
    async fn an_unknown_commit_outcome_is_told_apart_from_an_error() {
        let lost = orm_core::Error::CommitUnknown(Box::new(orm_core::Error::TransactionFailed));
        let error = ApiError::from(lost);
        assert_eq!(error, ApiError::OutcomeUnknown);
        let (status, json) = body(error).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(json, serde_json::json!({ "errors": { "request": [OUTCOME_UNKNOWN] } }));
    }
}

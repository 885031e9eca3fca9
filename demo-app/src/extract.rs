//! The path and query extractors the routes use in place of axum's: they
//! answer a NUL byte in any parameter (PostgreSQL cannot store one in
//! text) and any malformed parameter 422 with the RealWorld error body,
//! before the handler runs. JSON bodies get the same from `json::Valid`.

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The message for a value with a NUL byte.
pub const NUL_MESSAGE: &str = "must not contain NUL bytes";

/// Whether `text` has a NUL byte, which PostgreSQL refuses in text
/// (SQLSTATE 22021).
pub fn has_nul(text: &str) -> bool {
    text.contains('\0')
}

/// The path parameters, as `axum::extract::Path`, but without NUL bytes.
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let raw = RawPathParams::from_request_parts(parts, state).await.map_err(path_rejection)?;
        let with_nul: Vec<_> = raw
            .iter()
            .filter(|(_, value)| has_nul(value))
            .map(|(name, _)| (name.to_owned().into(), NUL_MESSAGE.to_owned()))
            .collect();
        if !with_nul.is_empty() {
            return Err(ApiError::Invalid(with_nul));
        }
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(params)| Path(params))
            .map_err(path_rejection)
    }
}

/// A path that cannot be decoded (not UTF-8, say) is the client's error; a
/// route without the parameters its handler asks for is ours.
fn path_rejection(rejection: impl axum::response::IntoResponse + std::fmt::Display) -> ApiError {
    let message = rejection.to_string();
    if rejection.into_response().status().is_server_error() {
        tracing::error!(%message, "a handler's path parameters do not match its route");
        ApiError::Internal
    } else {
        ApiError::invalid("path", message)
    }
}

/// The query string, as `axum::extract::Query`, but without NUL bytes, and
/// a malformed one (`?limit=ten`) is a 422.
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let invalid =
            |rejection: axum::extract::rejection::QueryRejection| ApiError::invalid("query", rejection.body_text());
        let axum::extract::Query(pairs) =
            axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri).map_err(invalid)?;
        let mut with_nul = Vec::new();
        for (name, value) in &pairs {
            // A name with a NUL byte is not echoed back as a field name.
            let field = if has_nul(name) { "query" } else { name.as_str() };
            if (has_nul(name) || has_nul(value)) && !with_nul.iter().any(|(known, _)| known == field) {
                with_nul.push((field.to_owned().into(), NUL_MESSAGE.to_owned()));
            }
        }
        if !with_nul.is_empty() {
            return Err(ApiError::Invalid(with_nul));
        }
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|axum::extract::Query(params)| Query(params))
            .map_err(invalid)
    }
}

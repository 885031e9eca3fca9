//! JSON response bodies, serialized as `axum::Json` does but into a buffer
//! sized for a page of articles at the start.

use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, BytesMut};
use serde::Serialize;

use crate::error::ApiError;

/// The buffer a response body is serialized into, at the start: a page of
/// 20 articles is about 9 KiB. `axum::Json` starts at 128 bytes and doubles,
/// which cost a page seven reallocations and copies (1.3% of a request's
/// instructions under the load mix, in `BytesMut::reserve_inner`). Only
/// until the response is written: at most this per request in flight.
const INITIAL_CAPACITY: usize = 16 * 1024;

/// A response whose body is `T` as JSON (`Content-Type: application/json`);
/// a value that cannot be serialized is answered 500.
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        let mut body = BytesMut::with_capacity(INITIAL_CAPACITY).writer();
        match serde_json::to_writer(&mut body, &self.0) {
            Ok(()) => ([(CONTENT_TYPE, HeaderValue::from_static("application/json"))], Bytes::from(body.into_inner()))
                .into_response(),
            Err(error) => {
                tracing::error!(%error, "cannot serialize a response");
                ApiError::Internal.into_response()
            }
        }
    }
}

//! JSON request bodies: parsed and validated by the [`Valid`] extractor,
//! before the handler runs and so before any connection is taken.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::error::ApiError;

/// A request body type that can check itself.
pub trait Validate {
    /// Every problem with the input, as (field, message) pairs; empty if none.
    fn problems(&self) -> Vec<(&'static str, String)>;
}

/// A JSON body of type `T` that parsed and passed [`Validate`]; otherwise
/// the request is answered 422. The `Content-Type` is not checked, as some
/// RealWorld clients leave it out.
pub struct Valid<T>(pub T);

impl<S, T> FromRequest<S> for Valid<T>
where
    T: DeserializeOwned + Validate,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| ApiError::invalid("body", rejection.body_text()))?;
        let value: T = serde_json::from_slice(&bytes).map_err(|error| ApiError::invalid("body", error.to_string()))?;
        let problems = value.problems();
        if problems.is_empty() {
            Ok(Valid(value))
        } else {
            Err(ApiError::Invalid(problems))
        }
    }
}

/// A field of a partial update: absent (leave it), `null`, or a value.
/// Use with `#[serde(default)]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Patch<T> {
    /// Not in the body.
    #[default]
    Absent,
    /// `null`.
    Null,
    /// A value.
    Value(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patch<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Option::<T>::deserialize(deserializer).map(|value| value.map_or(Patch::Null, Patch::Value))
    }
}

/// The message for an empty required field.
pub const BLANK: &str = "can't be blank";

/// Adds a "can't be blank" problem if `value` is empty or only whitespace.
pub fn require(problems: &mut Vec<(&'static str, String)>, field: &'static str, value: &str) {
    if value.trim().is_empty() {
        problems.push((field, BLANK.to_owned()));
    }
}

/// Adds a problem for a patch of a required field: `null`, or blank.
pub fn require_patch(problems: &mut Vec<(&'static str, String)>, field: &'static str, value: &Patch<String>) {
    match value {
        Patch::Absent => {}
        Patch::Null => problems.push((field, BLANK.to_owned())),
        Patch::Value(value) => require(problems, field, value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Update {
        #[serde(default)]
        bio: Patch<String>,
    }

    #[test]
    fn patch_tells_absent_from_null_from_a_value() {
        let parse = |json: &str| serde_json::from_str::<Update>(json).unwrap().bio;
        assert_eq!(parse("{}"), Patch::Absent);
        assert_eq!(parse(r#"{"bio": null}"#), Patch::Null);
        assert_eq!(parse(r#"{"bio": "x"}"#), Patch::Value("x".to_owned()));
    }
}

//! JSON request bodies: parsed and validated by the [`Valid`] extractor,
//! before the handler runs and so before any connection is taken.
//!
//! What every body gets, whatever its type: at most [`BODY_LIMIT`] bytes
//! (413 beyond); an object wherever the type has a struct (serde would
//! otherwise take `["name", "e-mail", "password"]` for a user); and no NUL
//! byte in any string or key (PostgreSQL cannot store one in text). All of
//! these, and a type's own [`Validate`] problems, are answered 422 with the
//! RealWorld error body.

use std::borrow::Cow;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::value::StringDeserializer;
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::extract::{has_nul, NUL_MESSAGE};

/// The largest request body accepted, in bytes: 1 MiB, far above any
/// article a person writes, and small enough that a flood of big bodies
/// costs little memory. The router sets it with `DefaultBodyLimit`; a
/// larger body is answered 413.
pub const BODY_LIMIT: usize = 1 << 20;

/// A request body type that can check itself.
pub trait Validate {
    /// Every problem with the input, as (field, message) pairs; empty if none.
    fn problems(&self) -> Vec<(&'static str, String)>;
}

/// A JSON body of type `T` that parsed and passed [`Validate`]; otherwise
/// the request is answered 422 (413 if too large). The `Content-Type` is
/// not checked, as some RealWorld clients leave it out.
pub struct Valid<T>(pub T);

impl<S, T> FromRequest<S> for Valid<T>
where
    T: DeserializeOwned + Validate,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge
            } else {
                ApiError::invalid("body", rejection.body_text())
            }
        })?;
        let json: Value =
            serde_json::from_slice(&bytes).map_err(|error| ApiError::invalid("body", error.to_string()))?;
        let mut with_nul = Vec::new();
        fields_with_nul(&json, "body", &mut with_nul);
        if !with_nul.is_empty() {
            return Err(ApiError::Invalid(with_nul.into_iter().map(|field| (field, NUL_MESSAGE.to_owned())).collect()));
        }
        let value = T::deserialize(ObjectsOnly(json)).map_err(|error| ApiError::invalid("body", error.to_string()))?;
        let problems = value.problems();
        if problems.is_empty() {
            Ok(Valid(value))
        } else {
            Err(ApiError::Invalid(problems.into_iter().map(|(field, message)| (field.into(), message)).collect()))
        }
    }
}

/// Adds to `found`, once each, the fields of `value` that hold a string with
/// a NUL byte: a string is named by the key it is under (an array's
/// elements by the array's key), a key with a NUL byte by the object's own
/// key; `field` names `value` itself.
fn fields_with_nul(value: &Value, field: &str, found: &mut Vec<Cow<'static, str>>) {
    let mut add = |field: &str| {
        if !found.iter().any(|known| known == field) {
            found.push(Cow::Owned(field.to_owned()));
        }
    };
    match value {
        Value::String(text) if has_nul(text) => add(field),
        Value::Array(items) => items.iter().for_each(|item| fields_with_nul(item, field, found)),
        Value::Object(members) => {
            if members.keys().any(|key| has_nul(key)) {
                add(field);
            }
            for (key, member) in members.iter().filter(|(key, _)| !has_nul(key)) {
                fields_with_nul(member, key, found);
            }
        }
        _ => {}
    }
}

/// A JSON value that deserializes like `serde_json::Value` does, except that
/// a struct or map must be a JSON object, at any depth. (`serde_json` also
/// takes an array for a struct, its fields in order.)
struct ObjectsOnly(Value);

impl<'de> Deserializer<'de> for ObjectsOnly {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Array(items) => visitor.visit_seq(Elements(items.into_iter())),
            Value::Object(members) => visitor.visit_map(Members { members: members.into_iter(), value: None }),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            other => visitor.visit_some(ObjectsOnly(other)),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Object(members) => visitor.visit_map(Members { members: members.into_iter(), value: None }),
            other => Err(de::Error::invalid_type(unexpected(&other), &visitor)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        // No body has an enum with struct variants; unit variants are strings.
        self.0.deserialize_enum(name, variants, visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct identifier ignored_any
    }
}

/// How an error message names a value of the wrong type.
fn unexpected(value: &Value) -> de::Unexpected<'_> {
    match value {
        Value::Null => de::Unexpected::Unit,
        Value::Bool(flag) => de::Unexpected::Bool(*flag),
        Value::Number(_) => de::Unexpected::Other("number"),
        Value::String(text) => de::Unexpected::Str(text),
        Value::Array(_) => de::Unexpected::Seq,
        Value::Object(_) => de::Unexpected::Map,
    }
}

/// An array's elements, each deserialized as [`ObjectsOnly`].
struct Elements(std::vec::IntoIter<Value>);

impl<'de> SeqAccess<'de> for Elements {
    type Error = serde_json::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Self::Error> {
        self.0.next().map(|item| seed.deserialize(ObjectsOnly(item))).transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

/// An object's members, each value deserialized as [`ObjectsOnly`].
struct Members {
    members: <Map<String, Value> as IntoIterator>::IntoIter,
    /// The value of the key just returned.
    value: Option<Value>,
}

impl<'de> MapAccess<'de> for Members {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Self::Error> {
        let Some((key, value)) = self.members.next() else { return Ok(None) };
        self.value = Some(value);
        let key: StringDeserializer<Self::Error> = key.into_deserializer();
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Self::Error> {
        let value = self.value.take().ok_or_else(|| de::Error::custom("a value asked for before its key"))?;
        seed.deserialize(ObjectsOnly(value))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.members.len())
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

/// Adds an "is too long" problem if `value`, trimmed as it is stored, has
/// more than `max` characters. Indexed text columns need a bound: a btree
/// index refuses an entry over about 2,700 bytes.
pub fn limit(problems: &mut Vec<(&'static str, String)>, field: &'static str, value: &str, max: usize) {
    if value.trim().chars().count() > max {
        problems.push((field, format!("is too long (maximum is {max} characters)")));
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

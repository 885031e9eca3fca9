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
        let value: T = parse(&bytes)?;
        let problems = value.problems();
        if problems.is_empty() {
            Ok(Valid(value))
        } else {
            Err(ApiError::Invalid(problems.into_iter().map(|(field, message)| (field.into(), message)).collect()))
        }
    }
}

/// Parses a body as `T`, refusing NUL bytes and non-objects where `T` has
/// a struct, with the errors the module's documentation describes.
///
/// A body is parsed once, straight into `T` ([`parse_once`]); only a body
/// that this fails on, or that may hold a NUL byte, goes through
/// [`parse_checked`], which parses it into a `serde_json::Value` first and
/// so can name every field with a NUL byte and report the same error for
/// the same input whatever `T` reads of it. The error a client gets is
/// therefore always [`parse_checked`]'s, and a body [`parse_once`] accepts
/// is one [`parse_checked`] accepts with the same value (the unit tests
/// compare the two on tricky inputs): good bodies, nearly all of them,
/// are parsed once.
///
/// Out of line (one call per body, a few instructions) so that a profile
/// shows what a body's parse costs as one function.
#[inline(never)]
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match parse_once(bytes) {
        Some(value) => Ok(value),
        None => parse_checked(bytes),
    }
}

/// `T` parsed from `bytes` in one pass, or `None` if the body may hold a
/// NUL byte or fails to parse for any reason (syntax, a wrong type, a
/// non-object for a struct, a duplicate field), for [`parse_checked`] to
/// answer with its errors.
///
/// Why this accepts only what [`parse_checked`] accepts, with the same
/// value:
/// - JSON text can put U+0000 in a string or a key only as the escape
///   `\u0000` (a raw control character in a string is a syntax error), so
///   a body without that escape has no NUL byte anywhere, ignored fields
///   and duplicate keys included ([`may_hold_nul`]).
/// - Every byte of the body goes through `serde_json`'s parser as it would
///   into a `Value`: the fields `T` ignores are read with `deserialize_any`
///   (not `serde_json`'s lighter skipping, which lets through numbers out of
///   range and nesting beyond its limit), and `end` refuses trailing
///   characters.
/// - [`Strict`] refuses an array wherever `T` asks for a struct or a map,
///   as [`ObjectsOnly`] does, and enums and byte strings, which no body
///   has, rather than reason about how they differ from a `Value`'s.
/// - A key given twice is an error for a struct's field (serde's derive),
///   where [`parse_checked`] keeps the last value: the fallback then
///   answers, so both agree.
fn parse_once<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    if may_hold_nul(bytes) {
        return None;
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = T::deserialize(Strict(&mut deserializer)).ok()?;
    deserializer.end().ok()?;
    Some(value)
}

/// Whether `bytes` holds the JSON escape `\u0000` (or a `\\` followed by
/// `u0000`, which is no NUL but costs only the slower path): the only way
/// a JSON text that parses can put a NUL byte in a string or a key.
fn may_hold_nul(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    while let Some(at) = rest.iter().position(|&byte| byte == b'\\') {
        let after = rest.get(at + 1..).unwrap_or_default();
        if after.starts_with(b"u0000") {
            return true;
        }
        rest = after;
    }
    false
}

/// The body parsed into a `serde_json::Value`, checked for NUL bytes (every
/// field that has one named), then deserialized as `T` through
/// [`ObjectsOnly`]: the errors clients get.
fn parse_checked<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let json: Value = serde_json::from_slice(bytes).map_err(|error| ApiError::invalid("body", error.to_string()))?;
    let mut with_nul = Vec::new();
    fields_with_nul(&json, "body", &mut with_nul);
    if !with_nul.is_empty() {
        return Err(ApiError::Invalid(with_nul.into_iter().map(|field| (field, NUL_MESSAGE.to_owned())).collect()));
    }
    T::deserialize(ObjectsOnly(json)).map_err(|error| ApiError::invalid("body", error.to_string()))
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

/// A deserializer (`serde_json`'s, for [`parse_once`]) that refuses a
/// non-object where the type asks for a struct or a map, at any depth, as
/// [`ObjectsOnly`] does; reads what the type ignores with `deserialize_any`,
/// so that all of it is parsed as into a `Value`; and refuses enums and byte
/// strings outright. Its errors only send the body to [`parse_checked`],
/// so they say little.
struct Strict<D>(D);

/// The error of what [`Strict`] refuses outright.
fn refused<E: de::Error>() -> E {
    E::custom("left to the checked parse")
}

/// Forwards `deserialize_*` methods to the inner deserializer with the
/// visitor wrapped in [`Checked::any`].
macro_rules! forward_checked {
    ($($method:ident($($argument:ident: $type:ty),*)),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, $($argument: $type,)* visitor: V) -> Result<V::Value, Self::Error> {
                self.0.$method($($argument,)* Checked::any(visitor))
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Strict<D> {
    type Error = D::Error;

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        // Parsed as a `Value` would be, not skipped: see `parse_once`.
        self.0.deserialize_any(Checked::any(visitor))
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.0.deserialize_map(Checked::object(visitor))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_struct(name, fields, Checked::object(visitor))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        Err(refused())
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(refused())
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(refused())
    }

    forward_checked! {
        deserialize_any(), deserialize_option(), deserialize_unit(), deserialize_seq(),
        deserialize_identifier(), deserialize_str(), deserialize_string(), deserialize_char(),
        deserialize_bool(), deserialize_f32(), deserialize_f64(),
        deserialize_i8(), deserialize_i16(), deserialize_i32(), deserialize_i64(), deserialize_i128(),
        deserialize_u8(), deserialize_u16(), deserialize_u32(), deserialize_u64(), deserialize_u128(),
        deserialize_newtype_struct(name: &'static str), deserialize_unit_struct(name: &'static str),
        deserialize_tuple(len: usize), deserialize_tuple_struct(name: &'static str, len: usize),
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// A visitor passed through [`Strict`]: what it is given to read further
/// (an array's elements, an object's keys and values, an option's value)
/// is read through [`Strict`] too; with `objects_only`, an array is refused.
struct Checked<V> {
    visitor: V,
    objects_only: bool,
}

impl<V> Checked<V> {
    /// For a value that may be of any JSON type.
    fn any(visitor: V) -> Self {
        Checked { visitor, objects_only: false }
    }

    /// For a struct or a map: an object only.
    fn object(visitor: V) -> Self {
        Checked { visitor, objects_only: true }
    }
}

/// Forwards `visit_*` methods that carry a plain value unchanged.
macro_rules! forward_values {
    ($($method:ident($type:ty)),* $(,)?) => {
        $(
            fn $method<E: de::Error>(self, value: $type) -> Result<Self::Value, E> {
                self.visitor.$method(value)
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Checked<V> {
    type Value = V::Value;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        self.visitor.expecting(formatter)
    }

    forward_values! {
        visit_bool(bool), visit_i8(i8), visit_i16(i16), visit_i32(i32), visit_i64(i64), visit_i128(i128),
        visit_u8(u8), visit_u16(u16), visit_u32(u32), visit_u64(u64), visit_u128(u128),
        visit_f32(f32), visit_f64(f64), visit_char(char), visit_str(&str), visit_borrowed_str(&'de str),
        visit_string(String),
    }

    fn visit_bytes<E: de::Error>(self, _value: &[u8]) -> Result<Self::Value, E> {
        Err(refused())
    }

    fn visit_borrowed_bytes<E: de::Error>(self, _value: &'de [u8]) -> Result<Self::Value, E> {
        Err(refused())
    }

    fn visit_byte_buf<E: de::Error>(self, _value: Vec<u8>) -> Result<Self::Value, E> {
        Err(refused())
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.visitor.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.visitor.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        self.visitor.visit_some(Strict(deserializer))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        self.visitor.visit_newtype_struct(Strict(deserializer))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        if self.objects_only {
            return Err(de::Error::invalid_type(de::Unexpected::Seq, &self));
        }
        self.visitor.visit_seq(Strict(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.visitor.visit_map(Strict(map))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _data: A) -> Result<Self::Value, A::Error> {
        Err(refused())
    }
}

/// A seed whose value is read through [`Strict`].
struct StrictSeed<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for StrictSeed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(Strict(deserializer))
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Strict<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Self::Error> {
        self.0.next_element_seed(StrictSeed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Strict<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Self::Error> {
        self.0.next_key_seed(StrictSeed(seed))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Self::Error> {
        self.0.next_value_seed(StrictSeed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
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

    /// The shape of the article bodies (`routes/articles.rs`).
    #[derive(Deserialize, Debug, PartialEq)]
    struct CreateArticle {
        article: NewArticle,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct NewArticle {
        #[serde(default)]
        title: String,
        #[serde(default)]
        body: String,
        #[serde(default)]
        tag_list: Patch<Vec<String>>,
    }

    /// Types no body has today, for the generic paths: structs in arrays,
    /// maps, options, a `Value` and a number.
    #[derive(Deserialize, Debug, PartialEq)]
    struct Generic {
        #[serde(default)]
        items: Vec<Item>,
        #[serde(default)]
        map: std::collections::HashMap<String, String>,
        #[serde(default)]
        maybe: Option<Item>,
        #[serde(default)]
        any: Value,
        #[serde(default)]
        number: Option<i32>,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    struct Item {
        name: String,
    }

    /// Checks that `parse` answers `body` exactly as the checked parse (the
    /// extractor's code before bodies were parsed once) does, and that the
    /// one-pass parse, when it takes a body, gives the same value. Returns
    /// whether the one-pass parse took it.
    fn agree<T: DeserializeOwned + PartialEq + std::fmt::Debug>(body: &[u8]) -> bool {
        let checked = parse_checked::<T>(body);
        let once = parse_once::<T>(body);
        if let Some(value) = &once {
            assert_eq!(checked.as_ref(), Ok(value), "{}", String::from_utf8_lossy(body));
        }
        assert_eq!(parse::<T>(body), checked, "{}", String::from_utf8_lossy(body));
        once.is_some()
    }

    fn invalid(pairs: &[(&'static str, &str)]) -> ApiError {
        ApiError::Invalid(pairs.iter().map(|&(field, message)| (Cow::Borrowed(field), message.to_owned())).collect())
    }

    #[test]
    fn good_bodies_are_parsed_once() {
        for body in [
            r#"{"article":{"title":"t","body":"b","tagList":["a","b"]}}"#,
            r#"{"article":{"title":"t","tagList":null}}"#,
            r#"{"article":{}}"#,
            // An escaped key names the same field; escapes in values.
            r#"{"article":{"t\u0069tle":"x","body":"a\n\"\\ \u00e9\ud83d\ude00 \/"}}"#,
            // Unknown fields of every JSON type, ignored.
            r#"{"article":{"title":"t","extra":[1,-2,3.5e10,true,null,{"k":["v"]}]},"more":{"a":{}}}"#,
            " \n{\"article\" : {\"title\" : \"t\"} } \n",
        ] {
            assert!(agree::<CreateArticle>(body.as_bytes()), "not parsed once: {body}");
        }
        let body = br#"{"items":[{"name":"a"},{"name":"b"}],"map":{"k":"1","k":"2"},"maybe":{"name":"c"},"any":{"b":[1,{"c":null}],"a":"x","a":"y"},"number":-7}"#;
        assert!(agree::<Generic>(body));
        let Ok(value) = parse::<Generic>(body) else { panic!("refused") };
        assert_eq!(value.map.get("k").map(String::as_str), Some("2"));
        assert_eq!(value.any, serde_json::json!({"a": "y", "b": [1, {"c": null}]}));
    }

    #[test]
    fn nul_bytes_are_named_as_before() {
        let nul = |field| invalid(&[(field, NUL_MESSAGE)]);
        let cases: &[(&str, ApiError)] = &[
            (r#"{"article":{"title":"a\u0000"}}"#, nul("title")),
            // A key with a NUL names the object it is in.
            (r#"{"article":{"ti\u0000tle":"x"}}"#, nul("article")),
            (r#"{"article":{"title":"t","extra":{"k\u0000":1}}}"#, nul("extra")),
            // The top level's name is "body".
            (r#"{"\u0000":1,"article":{}}"#, nul("body")),
            // An array's elements are named by the array's key.
            (r#"{"article":{"tagList":["ok","b\u0000"]}}"#, nul("tagList")),
            // In a field the type ignores, at any depth.
            (r#"{"article":{"title":"t"},"extra":{"deep":[["\u0000"]]}}"#, nul("deep")),
            // Each field once, whatever its number of NULs; the whole body
            // is checked before the type is read.
            (
                r#"{"article":{"title":"\u0000","body":"\u0000","tagList":["\u0000","\u0000"]},"x":5}"#,
                invalid(&[("body", NUL_MESSAGE), ("tagList", NUL_MESSAGE), ("title", NUL_MESSAGE)]),
            ),
            (r#"{"article":["\u0000"]}"#, nul("article")),
        ];
        for (body, expected) in cases {
            assert!(!agree::<CreateArticle>(body.as_bytes()), "parsed once: {body}");
            assert_eq!(parse::<CreateArticle>(body.as_bytes()).as_ref(), Err(expected), "{body}");
        }
    }

    #[test]
    fn duplicate_keys_keep_the_last_value_as_before() {
        // A struct's field given twice: serde's derive refuses it, the
        // checked parse keeps the last value, and that is the answer.
        let body = br#"{"article":{"title":"a","title":"b"}}"#;
        assert!(!agree::<CreateArticle>(body));
        assert_eq!(parse::<CreateArticle>(body).map(|request| request.article.title), Ok("b".to_owned()));
        // A NUL in a value that a later duplicate replaces was never seen.
        let body = br#"{"article":{"title":"t"},"x":"\u0000","x":"y"}"#;
        assert!(!agree::<CreateArticle>(body));
        assert!(parse::<CreateArticle>(body).is_ok());
        let body = br#"{"article":{"title":"\u0000","title":"t"}}"#;
        assert!(!agree::<CreateArticle>(body));
        assert_eq!(parse::<CreateArticle>(body).map(|request| request.article.title), Ok("t".to_owned()));
        // A wrong type replaced by a right one.
        let body = br#"{"article":{"title":5,"title":"t"}}"#;
        assert!(!agree::<CreateArticle>(body));
        assert!(parse::<CreateArticle>(body).is_ok());
    }

    #[test]
    fn bad_bodies_get_the_checked_errors() {
        let bodies: &[&[u8]] = &[
            // Arrays and other non-objects for structs, at any depth.
            br#"{"article":["t","b"]}"#,
            br#"[{"title":"t"}]"#,
            br#"[{"title":"t","body":"b","tagList":[]}]"#,
            br#"{"article":null}"#,
            br#"{"article":"t"}"#,
            b"{}",
            b"",
            b"null",
            // Wrong types.
            br#"{"article":{"title":5}}"#,
            br#"{"article":{"tagList":"a"}}"#,
            br#"{"article":{"tagList":[1]}}"#,
            // Syntax, also after or inside what the type ignores.
            br#"{"article":{"title":"t"}} x"#,
            br#"{"article":{"title":"t"},}"#,
            br#"{"article":{"title":"t"},"x":[1,]}"#,
            br#"{"article":{"title":"t"},"x":"\q"}"#,
            br#"{"article":{"title":"t"},"x":1e400}"#,
            br#"{"article":{"title":"t"},"x":01}"#,
            br#"{"article":{"title":"t"},"x":"\ud800"}"#,
            br#"{"article":{"title":"t"},"\ud800":1}"#,
            b"{\"article\":{\"title\":\"t\"},\"x\":\"\xff\"}",
            b"{\"article\":{\"title\":\"t\"},\"x\":\"\x01\"}",
            b"{\"article\":{\"title\":\"t\x00\"}}",
            br#"{"article":{"title":"t"}"#,
            // An escaped backslash before "u0000" is no NUL: the slower
            // path, the same answer.
            br#"{"article":{"title":5,"body":"\\u0000"}}"#,
        ];
        for body in bodies {
            assert!(!agree::<CreateArticle>(body), "parsed once: {}", String::from_utf8_lossy(body));
            assert!(parse::<CreateArticle>(body).is_err());
        }
        let body = br#"{"article":{"title":"\\u0000"}}"#;
        assert!(!agree::<CreateArticle>(body));
        assert_eq!(parse::<CreateArticle>(body).map(|request| request.article.title), Ok("\\u0000".to_owned()));
        for body in [
            &br#"{"items":[["a"]]}"#[..],
            br#"{"items":[{"name":"a"},"b"]}"#,
            br#"{"maybe":["a"]}"#,
            br#"{"map":["a"]}"#,
            br#"{"map":{"k":1}}"#,
            br#"{"number":2147483648}"#,
            br#"{"number":1.0}"#,
            br#"{"any":1e400}"#,
        ] {
            assert!(!agree::<Generic>(body), "parsed once: {}", String::from_utf8_lossy(body));
            assert!(parse::<Generic>(body).is_err());
        }
    }

    #[test]
    fn nesting_beyond_the_limit_is_refused_in_ignored_fields_too() {
        for depth in [100, 126, 127, 128, 200, 10_000] {
            let body = format!(r#"{{"article":{{}},"x":{}1{}}}"#, "[".repeat(depth), "]".repeat(depth));
            let once = agree::<CreateArticle>(body.as_bytes());
            assert_eq!(once, parse_checked::<CreateArticle>(body.as_bytes()).is_ok(), "depth {depth}");
        }
    }

    #[test]
    fn patch_tells_absent_from_null_from_a_value() {
        let parse = |json: &str| serde_json::from_str::<Update>(json).unwrap().bio;
        assert_eq!(parse("{}"), Patch::Absent);
        assert_eq!(parse(r#"{"bio": null}"#), Patch::Null);
        assert_eq!(parse(r#"{"bio": "x"}"#), Patch::Value("x".to_owned()));
    }
}

//! [`TextColumn`]: how a `String` field reads a text column.
//!
//! The driver's own `String` decoding asks the column's type for its name
//! three times per value (to tell the `ltree` extension's types apart, whose
//! binary form carries a version byte), then compares those names: about 60
//! instructions of a short string's 240, on every text value of every row.
//! A field's column is almost always one of the built-in text types, whose
//! binary form is the UTF-8 text itself; those are recognised by the type's
//! identity alone, and anything else goes through the driver as before.

use std::error::Error as StdError;

use postgres_types::{FromSql, Type};

/// A `String` read from a text column, decoded without the driver's
/// per-value type-name lookups when the column is a built-in text type.
pub(crate) struct TextColumn(pub(crate) String);

/// Whether `ty`'s binary form is its UTF-8 text, as it is for the built-in
/// text types (`ltree` and its kin, whose form starts with a version byte,
/// are extension types, never these).
fn is_builtin_text(ty: &Type) -> bool {
    *ty == Type::TEXT || *ty == Type::VARCHAR || *ty == Type::BPCHAR || *ty == Type::NAME || *ty == Type::UNKNOWN
}

impl<'a> FromSql<'a> for TextColumn {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        if is_builtin_text(ty) {
            return Ok(TextColumn(std::str::from_utf8(raw)?.to_owned()));
        }
        String::from_sql(ty, raw).map(TextColumn)
    }

    fn accepts(ty: &Type) -> bool {
        is_builtin_text(ty) || <String as FromSql>::accepts(ty)
    }
}

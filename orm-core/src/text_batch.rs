//! A batch of text values as one array parameter, copied into a single
//! buffer instead of cloned one `String` at a time.
//!
//! A flush binds a text column of a batch (`UNNEST($2::text[])`) while it
//! holds the rows' guards, and sends it after releasing them, so it must
//! own a copy of the values. A `Vec<String>` costs an allocation per value
//! to clone, and a free per value once the statement ran: for 20,000 rows,
//! some 9 M instructions of the bulk update's commit (docs/performance.md,
//! W3). One buffer of all the values and their bounds costs two.

use std::error::Error as StdError;

use bytes::{BufMut, BytesMut};
use postgres_types::{IsNull, Kind, ToSql, Type};

use crate::types::ARRAY_HEADER;

/// The values of a text column in one batch: their bytes end to end, and
/// where each ends (`None` for NULL).
#[derive(Debug, Default)]
pub(crate) struct TextBatch {
    text: String,
    ends: Vec<Option<usize>>,
}

impl TextBatch {
    /// The batch of `values`, `None` standing for NULL.
    pub(crate) fn new<'a>(values: impl Iterator<Item = Option<&'a str>>) -> TextBatch {
        let mut batch = TextBatch { text: String::new(), ends: Vec::with_capacity(values.size_hint().0) };
        for value in values {
            let end = value.map(|value| {
                batch.text.push_str(value);
                batch.text.len()
            });
            batch.ends.push(end);
        }
        batch
    }

    /// The values in order.
    fn values(&self) -> impl Iterator<Item = Option<&str>> {
        let mut start = 0;
        self.ends.iter().map(move |end| {
            end.map(|end| {
                let value = self.text.get(start..end).unwrap_or_default();
                start = end;
                value
            })
        })
    }
}

impl ToSql for TextBatch {
    /// PostgreSQL's binary array format (`array_send`), each element
    /// encoded by the driver's own `&str` encoding for the element type,
    /// as a `Vec<String>` of the same values would be.
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        let Kind::Array(element) = ty.kind() else {
            return Err(format!("a batch of text values cannot be sent as {ty}").into());
        };
        let length = i32::try_from(self.ends.len()).map_err(|_| "an array parameter has too many elements")?;
        out.reserve(ARRAY_HEADER + self.text.len() + 4 * self.ends.len());
        out.put_i32(1);
        out.put_i32(i32::from(self.ends.iter().any(Option::is_none)));
        out.put_u32(element.oid());
        out.put_i32(length);
        out.put_i32(1);
        if encodes_as_is(element) {
            for value in self.values() {
                match value {
                    Some(value) => {
                        out.put_i32(i32::try_from(value.len()).map_err(|_| "a text value is too long")?);
                        out.put_slice(value.as_bytes());
                    }
                    None => out.put_i32(-1),
                }
            }
            return Ok(IsNull::No);
        }
        for value in self.values() {
            let Some(value) = value else {
                out.put_i32(-1);
                continue;
            };
            let start = out.len();
            out.put_i32(0);
            if let IsNull::Yes = value.to_sql(element, out)? {
                return Err("a text value encoded as NULL".into());
            }
            let written = i32::try_from(out.len() - start - 4).map_err(|_| "a text value is too long")?;
            out[start..start + 4].copy_from_slice(&written.to_be_bytes());
        }
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(ty.kind(), Kind::Array(element) if <&str as ToSql>::accepts(element))
    }

    postgres_types::to_sql_checked!();
}

/// Whether the driver's `&str` encoding for `element` is the text's bytes
/// as they are, as it is for every type but the three whose binary form
/// has a version byte: the batch then writes them without asking the
/// driver for each value, which matched the element's name against those
/// three every time.
fn encodes_as_is(element: &Type) -> bool {
    !matches!(element.name(), "ltree" | "lquery" | "ltxtquery")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::tests::encoded;

    #[test]
    fn encodes_as_the_vec_of_the_same_values() {
        let values = vec![Some("Ann".to_owned()), None, Some(String::new()), Some("a \"b\" ü".to_owned())];
        let batch = TextBatch::new(values.iter().map(Option::as_deref));
        for ty in [Type::TEXT_ARRAY, Type::VARCHAR_ARRAY] {
            assert_eq!(encoded(&batch, &ty), encoded(&values, &ty));
        }
        let plain = ["x".to_owned(), "yz".to_owned()];
        assert_eq!(
            encoded(&TextBatch::new(plain.iter().map(|v| Some(v.as_str()))), &Type::TEXT_ARRAY),
            encoded(&plain.to_vec(), &Type::TEXT_ARRAY)
        );
        assert_eq!(
            encoded(&TextBatch::default(), &Type::TEXT_ARRAY),
            encoded(&Vec::<String>::new(), &Type::TEXT_ARRAY)
        );
    }

    #[test]
    fn encodes_a_versioned_text_type_as_the_driver_does() {
        let ltree = Type::new("ltree".into(), 90_001, Kind::Simple, "public".into());
        let array = Type::new("_ltree".into(), 90_002, Kind::Array(ltree), "public".into());
        let values = vec![Some("a.b".to_owned()), None, Some("c".to_owned())];
        let batch = TextBatch::new(values.iter().map(Option::as_deref));
        let mut expected = BytesMut::new();
        values.to_sql(&array, &mut expected).unwrap();
        let mut sent = BytesMut::new();
        batch.to_sql(&array, &mut sent).unwrap();
        assert_eq!(sent, expected);
    }

    #[test]
    fn refuses_what_a_vec_of_strings_refuses() {
        let batch = TextBatch::new(["1"].into_iter().map(Some));
        assert!(batch.to_sql_checked(&Type::INT4_ARRAY, &mut BytesMut::new()).is_err());
        assert!(batch.to_sql_checked(&Type::TEXT, &mut BytesMut::new()).is_err());
    }
}

//! A batch of integer values as one array parameter, written straight
//! into the binary array format.
//!
//! The driver encodes a `Vec<i32>` one element at a time through the
//! element's `ToSql`, each behind a length placeholder it fills in
//! afterwards: some 60 instructions per key of a bulk update's key array.
//! An integer's binary form is its big-endian bytes, of a fixed width, so
//! a batch of them is written in one pass instead.

use std::error::Error as StdError;

use bytes::{BufMut, BytesMut};
use postgres_types::{IsNull, Kind, ToSql, Type};

/// An integer type whose binary form is its big-endian bytes.
pub(crate) trait BigEndian: ToSql + Copy + Sync + Send + std::fmt::Debug {
    /// Its width in bytes, as an array element's length field holds it.
    const WIDTH: i32;
    /// Writes its binary form.
    fn put(self, out: &mut BytesMut);
}

impl BigEndian for i16 {
    const WIDTH: i32 = 2;
    fn put(self, out: &mut BytesMut) {
        out.put_i16(self);
    }
}

impl BigEndian for i32 {
    const WIDTH: i32 = 4;
    fn put(self, out: &mut BytesMut) {
        out.put_i32(self);
    }
}

impl BigEndian for i64 {
    const WIDTH: i32 = 8;
    fn put(self, out: &mut BytesMut) {
        out.put_i64(self);
    }
}

/// The values of an integer column in one batch, with no NULL among them.
#[derive(Debug)]
pub(crate) struct IntBatch<T>(pub(crate) Vec<T>);

impl<T: BigEndian> ToSql for IntBatch<T> {
    /// PostgreSQL's binary array format (`array_send`), the bytes a
    /// `Vec<T>` of the same values encodes to.
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        let Kind::Array(element) = ty.kind() else {
            return Err(format!("a batch of integers cannot be sent as {ty}").into());
        };
        let length = i32::try_from(self.0.len()).map_err(|_| "an array parameter has too many elements")?;
        let width = usize::try_from(T::WIDTH).unwrap_or_default();
        out.reserve(crate::types::ARRAY_HEADER + (4 + width) * self.0.len());
        out.put_i32(1);
        out.put_i32(0);
        out.put_u32(element.oid());
        out.put_i32(length);
        out.put_i32(1);
        for &value in &self.0 {
            out.put_i32(T::WIDTH);
            value.put(out);
        }
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(ty.kind(), Kind::Array(element) if T::accepts(element))
    }

    postgres_types::to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::tests::encoded;

    #[test]
    fn encodes_as_the_vec_of_the_same_values() {
        let small = vec![i16::MIN, -1, 0, 7, i16::MAX];
        assert_eq!(encoded(&IntBatch(small.clone()), &Type::INT2_ARRAY), encoded(&small, &Type::INT2_ARRAY));
        let keys = vec![i32::MIN, -1, 0, 1, 20_000, i32::MAX];
        assert_eq!(encoded(&IntBatch(keys.clone()), &Type::INT4_ARRAY), encoded(&keys, &Type::INT4_ARRAY));
        let big = vec![i64::MIN, 0, 1 << 40, i64::MAX];
        assert_eq!(encoded(&IntBatch(big.clone()), &Type::INT8_ARRAY), encoded(&big, &Type::INT8_ARRAY));
        let none: Vec<i32> = Vec::new();
        assert_eq!(encoded(&IntBatch(none.clone()), &Type::INT4_ARRAY), encoded(&none, &Type::INT4_ARRAY));
    }

    #[test]
    fn refuses_what_a_vec_refuses() {
        let batch = IntBatch(vec![1_i32]);
        for ty in [Type::INT8_ARRAY, Type::TEXT_ARRAY, Type::INT4] {
            assert!(batch.to_sql_checked(&ty, &mut BytesMut::new()).is_err());
            assert!(vec![1_i32].to_sql_checked(&ty, &mut BytesMut::new()).is_err());
        }
    }
}

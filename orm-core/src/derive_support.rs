//! The functions `#[derive(Entity)]` expands to. Each is bound on
//! [`ColumnType`], so a field of an unsupported type fails to compile with
//! one message at the field.

use tokio_postgres::Row;

use crate::error::{Error, Result};
use crate::types::{ColumnType, Param};

/// Reads column `index` of `row` as `T`, naming entity and column on failure.
pub fn decode<T: ColumnType>(row: &Row, index: usize, entity: &'static str, column: &'static str) -> Result<T> {
    row.try_get::<_, T>(index).map_err(|source| Error::Decode { entity, column, source })
}

/// Whether a field of type `T` can be read from a column of type `ty`.
pub fn accepts<T: ColumnType>(ty: &tokio_postgres::types::Type) -> bool {
    <T as tokio_postgres::types::FromSql>::accepts(ty)
}

/// One value as a bind parameter.
pub fn param<T: ColumnType>(value: &T) -> Param {
    Box::new(value.clone())
}

/// One field of every row as one array parameter.
pub fn array<T: ColumnType, R>(rows: &[R], field: impl Fn(&R) -> &T) -> Param {
    T::batch_param(rows.iter().map(field))
}

/// A type that can serve as an optimistic-concurrency version counter.
#[diagnostic::on_unimplemented(message = "a `version` column must be i16, i32 or i64, not `{Self}`")]
pub trait VersionColumn {
    /// Adds one, wrapping from the maximum to the minimum as the flush's
    /// UPDATE does in the database.
    fn increment(&mut self);
}

macro_rules! version_columns {
    ($($ty:ty),*) => {
        $(impl VersionColumn for $ty {
            fn increment(&mut self) {
                *self = self.wrapping_add(1);
            }
        })*
    };
}

version_columns!(i16, i32, i64);

/// Adds one to a version field.
pub fn increment_version<T: VersionColumn>(field: &mut T) {
    field.increment();
}

/// The flush asks only for columns of the entity's own metadata; anything
/// else is a bug in this crate, not bad input.
pub fn no_such_column(entity: &str, column: usize) -> Param {
    unreachable!("{entity} has no column {column}")
}

/// A field that can hold a foreign key of type `K`: `K` itself, or
/// `Option<K>` for a nullable reference.
#[diagnostic::on_unimplemented(
    message = "a `references` field must hold the referenced entity's key `{K}` (or an Option of it), not `{Self}`"
)]
pub trait ForeignKeyField<K> {
    /// The referenced key, `None` for a NULL reference.
    fn key(&self) -> Option<K>;
    /// Points the field at `key`.
    fn set_key(&mut self, key: K);
}

impl<K: Clone> ForeignKeyField<K> for K {
    fn key(&self) -> Option<K> {
        Some(self.clone())
    }

    fn set_key(&mut self, key: K) {
        *self = key;
    }
}

impl<K: Clone> ForeignKeyField<K> for Option<K> {
    fn key(&self) -> Option<K> {
        self.clone()
    }

    fn set_key(&mut self, key: K) {
        *self = Some(key);
    }
}

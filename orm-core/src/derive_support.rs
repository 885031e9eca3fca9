//! The helpers `#[derive(Entity)]` expands to besides
//! [`ColumnType`](crate::ColumnType)'s own methods (which it calls for
//! every field, so that an unsupported type is one error at the field).

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

/// A field that can be an entity's soft-delete marker (`#[orm(soft_delete)]`):
/// an `Option` of a timestamp or date, NULL while the row is live. The
/// session's delete sets it to the transaction's `now()`.
#[diagnostic::on_unimplemented(
    message = "a `soft_delete` field must be an Option of a timestamp or date (None while the row is live), not `{Self}`",
    note = "for example `deleted_at: Option<chrono::DateTime<chrono::Utc>>` on a nullable timestamptz column"
)]
pub trait SoftDeleteField {}

impl SoftDeleteField for Option<chrono::DateTime<chrono::Utc>> {}
impl SoftDeleteField for Option<chrono::NaiveDateTime> {}
impl SoftDeleteField for Option<chrono::NaiveDate> {}
#[cfg(feature = "time")]
impl SoftDeleteField for Option<time::OffsetDateTime> {}
#[cfg(feature = "time")]
impl SoftDeleteField for Option<time::PrimitiveDateTime> {}
#[cfg(feature = "time")]
impl SoftDeleteField for Option<time::Date> {}

/// Refuses, at compile time, a `soft_delete` field of another type.
pub const fn soft_delete_field<T: SoftDeleteField>() {}

/// A field that can be an entity's tenant column (`#[orm(tenant)]`): a
/// value that is never NULL, compared with the session's tenant, and whose
/// default (0, "", the nil UUID) means "not set yet, take the session's".
#[diagnostic::on_unimplemented(
    message = "a `tenant` field must be an integer, a String or a Uuid (not NULL), not `{Self}`",
    note = "the session compares it with its tenant and fills it on new entities that hold the type's default"
)]
pub trait TenantField: PartialEq + Default + Clone + std::any::Any + Send + Sync {}

impl TenantField for i16 {}
impl TenantField for i32 {}
impl TenantField for i64 {}
impl TenantField for String {}
impl TenantField for uuid::Uuid {}

/// [`Entity::tenant_is`](crate::Entity::tenant_is) of a tenant field.
pub fn tenant_is<T: TenantField>(field: &T, tenant: &dyn std::any::Any) -> Option<bool> {
    tenant.downcast_ref::<T>().map(|tenant| tenant == field)
}

/// [`Entity::fill_tenant`](crate::Entity::fill_tenant) of a tenant field.
pub fn fill_tenant<T: TenantField>(field: &mut T, tenant: &dyn std::any::Any) -> bool {
    match tenant.downcast_ref::<T>() {
        Some(tenant) if *field == T::default() => {
            *field = tenant.clone();
            true
        }
        _ => false,
    }
}

/// The flush asks only for columns of the entity's own metadata; anything
/// else is a bug in this crate, not bad input.
pub fn no_such_column<R>(entity: &str, column: usize) -> R {
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

/// The types of the fields of a foreign key over several columns
/// (`#[orm(foreign_key(fields(a, b), references = Parent))]`), as a tuple,
/// holding the parent's composite key `K`: one field per key column, in the
/// key's order, each holding that part (or an Option of it). One trait for
/// reading and setting, so that a mismatch is one error.
#[diagnostic::on_unimplemented(
    message = "the `foreign_key` fields of types `{Self}` cannot hold the referenced entity's key `{K}`",
    label = "as many fields as the key has columns, in the key's order, each of its part's type (or an Option of it)"
)]
pub trait ForeignKeyFields<K> {
    /// The fields, borrowed.
    type Refs<'a>
    where
        Self: 'a;
    /// The fields, borrowed mutably.
    type Muts<'a>
    where
        Self: 'a;
    /// The referenced key, `None` if any of the fields is NULL.
    fn key(fields: Self::Refs<'_>) -> Option<K>;
    /// Points the fields at `key`, part by part.
    fn set_key(fields: Self::Muts<'_>, key: K);
}

macro_rules! foreign_key_fields {
    ($(($($part:ident $field:ident $n:tt),+)),*) => {
        $(
            impl<$($part, $field: ForeignKeyField<$part>),+> ForeignKeyFields<($($part,)+)> for ($($field,)+) {
                type Refs<'a> = ($(&'a $field,)+) where Self: 'a;
                type Muts<'a> = ($(&'a mut $field,)+) where Self: 'a;

                fn key(fields: Self::Refs<'_>) -> Option<($($part,)+)> {
                    Some(($(fields.$n.key()?,)+))
                }

                fn set_key(fields: Self::Muts<'_>, key: ($($part,)+)) {
                    $(fields.$n.set_key(key.$n);)+
                }
            }
        )*
    };
}

foreign_key_fields!(
    (A FA 0, B FB 1),
    (A FA 0, B FB 1, C FC 2),
    (A FA 0, B FB 1, C FC 2, D FD 3),
    (A FA 0, B FB 1, C FC 2, D FD 3, E FE 4)
);

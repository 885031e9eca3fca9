//! The [`Entity`] trait that `#[derive(Entity)]` implements, and the table and
//! column metadata the session builds its SQL from.

use std::fmt::Debug;
use std::hash::Hash;

use tokio_postgres::Row;

use crate::error::Result;
use crate::types::Param;

/// A set of columns, as a bit per column index. Entities have at most 64 columns.
pub type ColumnSet = u64;

/// What the session knows about one mapped column.
#[derive(Debug, Clone, Copy)]
pub struct ColumnMeta {
    /// The column's name in the table.
    pub name: &'static str,
    /// The struct field it maps to.
    pub field: &'static str,
    /// The PostgreSQL type used in array casts.
    pub sql_type: &'static str,
    /// The type a batched statement's array parameter carries this
    /// column's values as, when not `sql_type` itself (see
    /// [`ColumnType::BATCH_TYPE`](crate::ColumnType::BATCH_TYPE)): `text`
    /// for array columns, cast back to `sql_type` in the statement.
    pub batch_type: Option<&'static str>,
    /// Whether the column accepts NULL.
    pub nullable: bool,
    /// Part of the primary key.
    pub primary_key: bool,
    /// Assigned by the database on insert (identity, serial, default) and read
    /// back with `RETURNING`.
    pub generated: bool,
    /// The optimistic-concurrency version counter.
    pub version: bool,
    /// For a foreign key (`references = Parent`): the parent's metadata.
    pub references: Option<fn() -> &'static EntityMeta>,
    /// For a foreign-key column (one with `references`): the indexes of all
    /// the columns of its foreign key, in the order of the parent's key,
    /// this column first. One column for `#[orm(references = Parent)]`,
    /// several for `#[orm(foreign_key(...))]`, whose other columns carry no
    /// `references` of their own. Empty for any other column.
    pub foreign_key_columns: &'static [usize],
    /// Deleting a parent through the session deletes the children it has
    /// loaded through this foreign key (`on_delete = "cascade"`).
    pub cascade_delete: bool,
    /// For a column of a PostgreSQL enum type, the type's labels (see
    /// [`ColumnType::ENUM_LABELS`](crate::ColumnType::ENUM_LABELS)).
    pub enum_labels: Option<&'static [&'static str]>,
    /// The soft-delete marker (`#[orm(soft_delete)]`): NULL while the row
    /// is live, the time of its deletion once deleted. Loads skip rows
    /// where it is set, and the session's delete sets it instead of
    /// deleting the row.
    pub soft_delete: bool,
    /// The tenant column (`#[orm(tenant)]`): a session opened for a tenant
    /// ([`Database::session_for_tenant`](crate::Database::session_for_tenant))
    /// loads only rows holding its tenant and writes only those.
    pub tenant: bool,
}

impl ColumnMeta {
    /// Whether this column is a foreign key to `parent`.
    pub fn references(&self, parent: &EntityMeta) -> bool {
        // By name, not address: `META` is a constant, and each use of a
        // constant may be a copy of its own.
        self.references.is_some_and(|meta| meta().same_entity(parent))
    }
}

/// What the session knows about one mapped table.
#[derive(Debug, Clone, Copy)]
pub struct EntityMeta {
    /// The Rust type's name, used in errors.
    pub name: &'static str,
    /// The table's name.
    pub table: &'static str,
    /// The mapped columns, in field order; a column's index is its bit in a [`ColumnSet`].
    pub columns: &'static [ColumnMeta],
}

impl EntityMeta {
    /// Whether `other` describes the same entity (same type name and table).
    pub fn same_entity(&self, other: &EntityMeta) -> bool {
        self.name == other.name && self.table == other.table
    }

    /// Indexes of the primary-key columns, in field order.
    pub fn key_columns(&self) -> impl Iterator<Item = usize> + '_ {
        self.columns.iter().enumerate().filter(|(_, c)| c.primary_key).map(|(i, _)| i)
    }

    /// Indexes of the columns the database assigns on insert.
    pub fn generated_columns(&self) -> impl Iterator<Item = usize> + '_ {
        self.columns.iter().enumerate().filter(|(_, c)| c.generated).map(|(i, _)| i)
    }

    /// Index of the version column, if the entity has one.
    pub fn version_column(&self) -> Option<usize> {
        self.columns.iter().position(|c| c.version)
    }

    /// The columns written by an insert: all but the generated ones.
    pub fn insert_columns(&self) -> ColumnSet {
        self.columns.iter().enumerate().filter(|(_, c)| !c.generated).fold(0, |set, (i, _)| set | (1 << i))
    }

    /// The primary-key columns as a set.
    pub fn key_set(&self) -> ColumnSet {
        self.key_columns().fold(0, |set, i| set | (1 << i))
    }

    /// Index of the soft-delete marker column, if the entity has one.
    /// A `const fn`, so that code asking it of a type's `META` on every
    /// call (whether a session's filters may hide a row) can ask it once, at
    /// compile time.
    pub const fn soft_delete_column(&self) -> Option<usize> {
        self.first_marked(Marker::SoftDelete)
    }

    /// Index of the tenant column, if the entity has one; a `const fn`, as
    /// [`soft_delete_column`](Self::soft_delete_column) is.
    pub const fn tenant_column(&self) -> Option<usize> {
        self.first_marked(Marker::Tenant)
    }

    /// Index of the first column that carries `marker`.
    const fn first_marked(&self, marker: Marker) -> Option<usize> {
        let mut at = 0;
        while at < self.columns.len() {
            let column = &self.columns[at];
            let carries = match marker {
                Marker::SoftDelete => column.soft_delete,
                Marker::Tenant => column.tenant,
            };
            if carries {
                return Some(at);
            }
            at += 1;
        }
        None
    }
}

/// A column role that at most one column of an entity has, found by
/// [`EntityMeta::first_marked`].
#[derive(Clone, Copy)]
enum Marker {
    SoftDelete,
    Tenant,
}

/// A struct mapped to a table. Implement it with
/// [`#[derive(Entity)]`](derive@crate::Entity), whose page lists the
/// attributes.
///
/// The methods are the derive's contract with the session; applications use
/// the session and the generated column constants instead of calling them.
/// The metadata is public, for tools that need the mapping:
///
/// ```
/// use orm_core::Entity;
///
/// #[derive(Entity, Clone, Debug, PartialEq)]
/// #[orm(table = "customers")]
/// struct Customer {
///     #[orm(primary_key, generated)]
///     id: i64,
///     #[orm(column = "full_name")]
///     name: String,
///     note: Option<String>,
/// }
///
/// let meta = Customer::META;
/// assert_eq!((meta.name, meta.table), ("Customer", "customers"));
/// let columns: Vec<&str> = meta.columns.iter().map(|column| column.name).collect();
/// assert_eq!(columns, ["id", "full_name", "note"]);
/// assert!(meta.columns[0].generated && meta.columns[2].nullable);
/// assert_eq!(meta.columns[1].sql_type, "text");
///
/// let customer = Customer { id: 7, name: "Ann".into(), note: None };
/// assert_eq!(customer.key(), 7); // Customer::Key is i64
/// ```
pub trait Entity: Clone + Send + Sync + 'static {
    /// The primary key: the key field's type, or a tuple for a composite key.
    type Key: Clone + Eq + Hash + Debug + Send + Sync + 'static;

    /// The table and column metadata.
    const META: &'static EntityMeta;

    /// Builds an entity from a row whose columns `offset..offset + META.columns.len()`
    /// are this entity's columns in `META` order.
    fn from_row(row: &Row, offset: usize) -> Result<Self>;

    /// The entity's primary key.
    fn key(&self) -> Self::Key;

    /// Reads a key from a row holding exactly the key columns, in `META` order.
    fn key_from_row(row: &Row) -> Result<Self::Key>;

    /// Reads keys from a row holding one array per key column, in `META`
    /// order: many keys in one value, as the flush takes a batch's keys
    /// from the key's sequence before a `COPY`.
    #[doc(hidden)]
    fn keys_from_arrays(row: &Row) -> Result<Vec<Self::Key>>;

    /// Sets the key fields to `key`.
    #[doc(hidden)]
    fn set_key(&mut self, key: Self::Key);

    /// One scalar parameter per key column, for `WHERE key = $1`.
    fn key_params(key: &Self::Key) -> Vec<Param>;

    /// One array parameter per key column, for loading or matching many keys at once.
    fn key_arrays(keys: &[Self::Key]) -> Vec<Param>;

    /// The values of column `column` of every row, as one array parameter.
    fn column_array(rows: &[&Self], column: usize) -> Param;

    /// Writes the value of column `column` of this row in the binary form
    /// of type `ty` to `out`, as `COPY` and array elements carry it: a
    /// batch encoded straight from the entities, without a copy of each
    /// value first.
    #[doc(hidden)]
    fn write_column(
        &self,
        column: usize,
        ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<postgres_types::IsNull, Box<dyn std::error::Error + Sync + Send>>;

    /// The value of column `column` of this row, as one parameter.
    fn column_value(&self, column: usize) -> Param;

    /// Whether column `column` of this row is NULL.
    fn column_is_null(&self, column: usize) -> bool;

    /// The columns whose values differ from `snapshot`.
    fn changed_columns(&self, snapshot: &Self) -> ColumnSet;

    /// Stores the generated columns read back by `RETURNING`, in `META` order.
    fn set_generated(&mut self, row: &Row) -> Result<()>;

    /// The statement texts of this entity type, built once; the derive
    /// gives each entity type its own.
    #[doc(hidden)]
    fn statements() -> &'static crate::sql::EntityStatements;

    /// Whether the field of column `column` can be read from a database
    /// column of type `ty`, checked when a statement is prepared so that a
    /// mismatch is refused before the statement runs.
    fn accepts(column: usize, ty: &tokio_postgres::types::Type) -> bool;

    /// Adds one to the version column after a successful update (no-op without one).
    fn increment_version(&mut self);

    /// Changes every field to the value the database stores for it (see
    /// [`ColumnType::round_to_stored`](crate::ColumnType::round_to_stored)).
    fn round_to_stored(&mut self);

    /// Sets the fields of the columns in `columns` to `from`'s: the values
    /// the database holds after an update that sent only those columns.
    fn copy_columns(&mut self, from: &Self, columns: ColumnSet);

    /// Whether foreign-key column `column` holds `key`, a key of the entity
    /// it references (false for any other column or key type).
    fn references_key(&self, column: usize, key: &dyn std::any::Any) -> bool;

    /// The hash of the key foreign-key column `column` holds, as the
    /// session's parent-to-children index files it; `None` for NULL or a
    /// column that is not a foreign key.
    fn reference_hash(&self, column: usize) -> Option<u64>;

    /// Whether the tenant column holds `tenant`; `None` when the entity
    /// has no tenant column or `tenant` is not of the column's type.
    fn tenant_is(&self, tenant: &dyn std::any::Any) -> Option<bool> {
        let _ = tenant;
        None
    }

    /// Sets the tenant column to `tenant` if it holds its type's default
    /// (a new entity whose tenant was left to the session); returns
    /// whether it did.
    fn fill_tenant(&mut self, tenant: &dyn std::any::Any) -> bool {
        let _ = tenant;
        false
    }
}

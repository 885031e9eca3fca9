//! Large update batches by binary `COPY` into a temporary table and one
//! `UPDATE ... FROM` it.
//!
//! The `UPDATE ... FROM UNNEST(...)` of a batch makes the server unpack one
//! array per column; binary `COPY` into a temporary table and an `UPDATE`
//! joined to it took 0.73-1.04 of that time in the bench's hand-written
//! floor at 100,000 rows. A batch of at least
//! [`DatabaseConfig::copy_update_threshold`](crate::DatabaseConfig::copy_update_threshold)
//! rows goes this way, writing what the `UNNEST` form writes: the same
//! changed columns, matched on key, version and tenant, the version
//! advanced, and the keys of the rows it did not match returned.
//!
//! The temporary table is created once per connection, `ON COMMIT DELETE
//! ROWS`, under a name fixed by the table and the columns it carries, so
//! that the `UPDATE` against it is prepared once and cached like any other
//! statement and the catalogs get one table per connection and column set
//! instead of one per flush (a table created and dropped per flush would
//! leave dead catalog rows behind each time). It is created, and emptied
//! of what an earlier flush of the same transaction left, by
//! `CREATE TEMP TABLE IF NOT EXISTS` and `DELETE` in the simple-query
//! prefix of the round trip that sends the `COPY`: the server runs them
//! before it parses the `UPDATE`, so the batch costs no round trip more
//! than the `UNNEST` form. The `COPY` goes first among the round trip's
//! statements (see `connection::copy_rows`).
//!
//! Not used in the unnamed statement mode (PgBouncer in transaction mode
//! hands the server connection on between transactions, with its
//! temporary tables, and mid-`COPY`; see `copy_candidates`), nor for
//! columns whose type is not a built-in one the driver encodes by name
//! (enums, arrays): those batches keep `UNNEST`.

use std::hash::{DefaultHasher, Hash, Hasher};

use postgres_types::Type;

use super::copy::copy_in;
use super::plan::{column_set, Unbound, UpdatedColumns};
use crate::connection::Statement;
use crate::entity::{ColumnSet, Entity};
use crate::sql::{self, quote_ident};
use crate::tracked::Tracked;

/// The default [`DatabaseConfig::copy_update_threshold`](crate::DatabaseConfig::copy_update_threshold).
/// At 5,000 rows `COPY` and `UNNEST` updates could not be told apart in
/// the bench, at 20,000 and more `COPY` was ahead (docs/performance.md):
/// below about 10,000 the temporary table's `DELETE` and the join's
/// planning cost what `COPY` saves.
pub const DEFAULT_COPY_UPDATE_THRESHOLD: usize = 10_000;

/// What one batch by `COPY` sends: the prefix that readies its temporary
/// table, the `COPY` into it and the `UPDATE ... FROM` it.
pub(super) struct CopyUpdate {
    /// `CREATE TEMP TABLE IF NOT EXISTS ...; DELETE FROM ...`, for the
    /// round trip's simple-query prefix.
    pub(super) prefix: String,
    pub(super) copy: Unbound,
    pub(super) update: Unbound,
}

/// The `COPY` and `UPDATE` of `rows`, which changed the columns `changed`;
/// `None` if a column the batch carries has no built-in type to encode
/// its fields as, for which the batch keeps `UNNEST`.
pub(super) fn copy_update<T: Entity>(
    rows: &[Tracked<T>],
    changed: ColumnSet,
    flush: Option<u64>,
    planned_at: u64,
) -> Option<CopyUpdate> {
    let meta = T::META;
    let columns = sql::update_parameters(meta, changed);
    let fields = columns
        .iter()
        .map(|&c| meta.columns[c].batch_type.is_none().then(|| field_type(meta.columns[c].sql_type)).flatten())
        .collect::<Option<Vec<Type>>>()?;
    let definition: Vec<String> = columns
        .iter()
        .map(|&c| format!("{} {}", quote_ident(meta.columns[c].name), meta.columns[c].sql_type))
        .collect();
    let definition = definition.join(", ");
    let table = format!("pg_temp.{}", quote_ident(&temporary_name(meta.table, &definition)));
    let prefix =
        format!("CREATE TEMP TABLE IF NOT EXISTS {table} ({definition}) ON COMMIT DELETE ROWS; DELETE FROM {table}");
    let updated = Some(UpdatedColumns { sent: column_set(&columns), planned_at });
    let (statement, binding) = copy_in(&table, rows, columns, fields, None, flush, updated);
    let copy = Unbound { statement, binding: Some(binding) };
    let count = i64::try_from(rows.len()).unwrap_or(i64::MAX);
    let update = Statement::reporting_unmatched(
        sql::update_from_table(meta, changed, &table),
        vec![Box::new(count)],
        rows.len(),
    )
    .into();
    Some(CopyUpdate { prefix, copy, update })
}

/// The temporary table's name: the prefix `orm_update_` and a hash of the
/// table's name and the temporary table's columns, so that two batches
/// share a table only if they carry the same columns of the same types,
/// and the name stays within PostgreSQL's 63 bytes whatever the table's.
fn temporary_name(table: &str, definition: &str) -> String {
    let mut hasher = DefaultHasher::new();
    (table, definition).hash(&mut hasher);
    format!("orm_update_{:016x}", hasher.finish())
}

/// The built-in type named `name`, as entities' columns name them (see
/// [`ColumnType::SQL_TYPE`](crate::ColumnType::SQL_TYPE)); `None` for
/// others, whose object ids only the server knows.
fn field_type(name: &str) -> Option<Type> {
    Some(match name {
        "int2" => Type::INT2,
        "int4" => Type::INT4,
        "int8" => Type::INT8,
        "float4" => Type::FLOAT4,
        "float8" => Type::FLOAT8,
        "bool" => Type::BOOL,
        "text" => Type::TEXT,
        "varchar" => Type::VARCHAR,
        "bytea" => Type::BYTEA,
        "uuid" => Type::UUID,
        "date" => Type::DATE,
        "time" => Type::TIME,
        "timestamp" => Type::TIMESTAMP,
        "timestamptz" => Type::TIMESTAMPTZ,
        "interval" => Type::INTERVAL,
        "jsonb" => Type::JSONB,
        "json" => Type::JSON,
        "inet" => Type::INET,
        "numeric" => Type::NUMERIC,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::{field_type, temporary_name};

    #[test]
    fn names_differ_by_table_and_columns_and_fit_an_identifier() {
        let a = temporary_name("customer", "\"id\" int8, \"name\" text");
        assert_eq!(a, temporary_name("customer", "\"id\" int8, \"name\" text"));
        assert_ne!(a, temporary_name("customer", "\"id\" int8, \"email\" text"));
        assert_ne!(a, temporary_name("client", "\"id\" int8, \"name\" text"));
        assert!(temporary_name(&"t".repeat(200), "").len() <= 63);
    }

    #[test]
    fn only_built_in_types_are_encoded_by_name() {
        assert_eq!(field_type("int8"), Some(postgres_types::Type::INT8));
        assert_eq!(field_type("mood"), None);
        assert_eq!(field_type("int4[]"), None);
    }
}

//! Large insert batches by binary `COPY`, with keys taken from the key's
//! sequence first.
//!
//! `INSERT ... SELECT * FROM UNNEST(...) RETURNING id` costs about twice
//! what binary `COPY` costs, but `COPY` cannot return the keys the
//! database generates. A unit of work can take them itself, as Hibernate's
//! sequence optimizers do: one statement takes N values of the key's
//! sequence (`SELECT ARRAY(SELECT nextval(...) FROM generate_series(1, N))`),
//! which come back as one array in the flush's first round trip; the next
//! round trip starts with the `COPY` of the rows with those keys.
//! Concurrent sessions get disjoint keys: `nextval` never hands a value out
//! twice.
//!
//! It is used only where it writes what the `INSERT` would have written
//! (see [`CopyTargets::target`]), and for batches of at least
//! [`DatabaseConfig::copy_threshold`](crate::DatabaseConfig::copy_threshold)
//! rows, below which the extra round trip costs more than `COPY` saves.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use postgres_types::{IsNull, Kind, Type};

use super::plan::{bind_all, Binding, UpdatedColumns};
use crate::connection::{Access, SessionConnection, Statement};
use crate::entity::{Entity, EntityMeta};
use crate::error::{Error, Result};
use crate::poll_budget::ROWS_PER_YIELD;
use crate::raw_sql::RawSql;
use crate::sql::{indexes, quote_ident};
use crate::stats::SessionStats;
use crate::tracked::Tracked;
use crate::transaction_mark::IN_UNIT_OF_WORK;
use crate::types::Param;

/// The default [`DatabaseConfig::copy_threshold`](crate::DatabaseConfig::copy_threshold).
pub const DEFAULT_COPY_THRESHOLD: usize = 4000;

/// What the server said about a table whose inserts may go by `COPY`.
pub(crate) struct CopyTarget {
    /// The key's sequence, by object id: cast to `regclass` in SQL, it
    /// costs no lookup by name per row.
    sequence: u32,
    /// The array type each column's values are encoded as: the key first,
    /// then the inserted columns in field order.
    arrays: Vec<Type>,
}

/// Which tables of a database take their large insert batches by `COPY`,
/// found out once per table and kept for the pool's lifetime.
pub(crate) struct CopyTargets {
    threshold: Option<usize>,
    update_threshold: Option<usize>,
    known: Mutex<Known>,
}

/// What is known of each table, by entity and table name; `None` for a
/// table that cannot take `COPY`.
type Known = HashMap<(&'static str, &'static str), Option<Arc<CopyTarget>>>;

/// One query per table, run once per pool: whether `COPY` writes what the
/// `INSERT` would (a plain table, no rules, which `COPY` ignores, no row
/// security, which refuses `COPY`, no insert trigger, which could change
/// or skip rows, insert privilege), whether the key takes its default from
/// a sequence the session may call (serial, or identity `BY DEFAULT`:
/// `COPY` would write over a `GENERATED ALWAYS` one unchecked) and that
/// sequence is the one the column owns, where the keys are taken from (a
/// default changed to another sequence, shared between tables, would
/// otherwise get keys from the owned one, unused and behind), and, per
/// column, the array type to encode its values as, if the column's type
/// reads that type's binary form (`NULL` otherwise). It raises no error
/// for a missing table or type: it may run inside the session's transaction.
const FACTS: &str = "SELECT c.relkind = 'r' AND NOT c.relrowsecurity AND NOT c.relhasrules \
     AND NOT EXISTS (SELECT FROM pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal AND t.tgtype & 4 <> 0) \
     AND has_table_privilege(c.oid, 'INSERT') \
     AND (k.attidentity = 'd' OR (k.attidentity = '' AND pg_get_expr(d.adbin, d.adrelid) LIKE 'nextval(%' \
          AND EXISTS (SELECT FROM pg_depend p WHERE p.classid = 'pg_attrdef'::regclass AND p.objid = d.oid \
                      AND p.refclassid = 'pg_class'::regclass AND p.refobjid = s.owned))), \
     s.owned, \
     ARRAY(SELECT CASE WHEN a.atttypid = w.type OR (w.type = 'text'::regtype::oid \
                   AND a.atttypid IN ('varchar'::regtype::oid, 'bpchar'::regtype::oid)) \
                 THEN (SELECT p.typarray FROM pg_type p WHERE p.oid = w.type) END \
           FROM unnest($3::text[], $4::text[]) WITH ORDINALITY AS v(name, sql_type, n) \
           CROSS JOIN LATERAL (SELECT to_regtype(v.sql_type)::oid AS type) w \
           LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = v.name AND a.attnum > 0 AND NOT a.attisdropped \
           ORDER BY v.n) \
     FROM pg_class c \
     JOIN pg_attribute k ON k.attrelid = c.oid AND k.attname = $2 AND k.attnum > 0 AND NOT k.attisdropped \
     LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = k.attnum \
     CROSS JOIN LATERAL (SELECT pg_get_serial_sequence(c.oid::regclass::text, k.attname)::regclass::oid AS owned) s \
     WHERE c.oid = to_regclass($1)";

impl CopyTargets {
    /// No table known yet; the thresholds of inserts and of updates as
    /// configured (`None`: never by `COPY`).
    pub(crate) fn new(threshold: Option<usize>, update_threshold: Option<usize>) -> Self {
        CopyTargets { threshold, update_threshold, known: Mutex::new(HashMap::new()) }
    }

    /// The smallest batch of plain inserts that goes by `COPY`, if any does.
    pub(crate) fn threshold(&self) -> Option<usize> {
        self.threshold
    }

    /// The smallest batch of updates of one set of columns that goes by
    /// `COPY` into a temporary table (see [`super::copy_update`]), if any does.
    pub(crate) fn update_threshold(&self) -> Option<usize> {
        self.update_threshold
    }

    /// How `meta`'s table takes `COPY`, or `None` if it cannot. The entity
    /// must have one key column, generated, of an integer type, and no
    /// other generated column (nothing else to read back); the table is
    /// asked about once (see [`FACTS`]). A table changed afterwards (a
    /// trigger added, say) is seen by a new [`Database`](crate::Database).
    pub(crate) async fn target(
        connection: &mut SessionConnection,
        stats: &mut SessionStats,
        meta: &'static EntityMeta,
    ) -> Result<Option<Arc<CopyTarget>>> {
        let mut generated = meta.generated_columns();
        let (Some(key), None) = (generated.next(), generated.next()) else { return Ok(None) };
        let column = &meta.columns[key];
        let columns: Vec<_> = indexes(meta.insert_columns()).map(|i| &meta.columns[i]).collect();
        if !column.primary_key
            || meta.key_columns().count() != 1
            || !matches!(column.sql_type, "int2" | "int4" | "int8")
            || columns.iter().any(|c| c.batch_type.is_some())
        {
            return Ok(None);
        }
        let targets = connection.copy_targets();
        if let Some(known) = targets.known.lock().get(&(meta.name, meta.table)) {
            return Ok(known.clone());
        }
        let names: Vec<&str> = std::iter::once(column).chain(columns.iter().copied()).map(|c| c.name).collect();
        let types: Vec<&str> = std::iter::once(column).chain(columns).map(|c| c.sql_type).collect();
        let table = quote_ident(meta.table);
        let mut found = None;
        connection
            .for_each_row(RawSql::cached(FACTS), &[&table, &column.name, &names, &types], Access::Read, stats, |row| {
                let usable: Option<bool> = row.try_get(0)?;
                let sequence: Option<u32> = row.try_get(1)?;
                let arrays: Vec<Option<u32>> = row.try_get(2)?;
                let arrays: Option<Vec<Type>> = arrays.into_iter().map(|oid| oid.and_then(Type::from_oid)).collect();
                if let (Some(true), Some(sequence), Some(arrays)) = (usable, sequence, arrays) {
                    found = Some(Arc::new(CopyTarget { sequence, arrays }));
                }
                Ok(())
            })
            .await?;
        targets.known.lock().insert((meta.name, meta.table), found.clone());
        Ok(found)
    }
}

/// The statement that takes `count` values of the key's sequence, as one
/// array of the key column's type in one row: a row per key would cost
/// the server a message and the client a decoded row each, for values
/// that are only copied into the entities.
pub(crate) fn allocate_keys(meta: &EntityMeta, target: &CopyTarget, count: usize) -> Statement {
    let key_type = meta.key_columns().next().map_or("int8", |key| meta.columns[key].sql_type);
    Statement {
        sql: format!(
            "SELECT ARRAY(SELECT nextval($1::oid::regclass)::{key_type} FROM generate_series(1, $2::int8) WHERE {IN_UNIT_OF_WORK})"
        )
        .into(),
        params: vec![Box::new(target.sequence), Box::new(i64::try_from(count).unwrap_or(i64::MAX))],
        returns_rows: true,
        check: None,
        copy: None,
        unmatched_of: None,
    }
}

/// `COPY` of `rows` with `keys` (in the same order) into `T`'s table; its
/// rows are left to the returned binding.
pub(crate) fn copy_statement<T: Entity>(
    target: &Arc<CopyTarget>,
    rows: &[Tracked<T>],
    keys: Vec<T::Key>,
    flush: Option<u64>,
) -> (Statement, Box<dyn Binding>) {
    let meta = T::META;
    let columns: Vec<usize> = meta.key_columns().chain(indexes(meta.insert_columns())).collect();
    let fields = target
        .arrays
        .iter()
        .map(|array| match array.kind() {
            Kind::Array(member) => member.clone(),
            _ => array.clone(),
        })
        .collect();
    let keys = SequenceKeys { keys, target: target.clone() };
    copy_in(&quote_ident(meta.table), rows, columns, fields, Some(keys), flush, None)
}

/// `COPY` of columns `columns` of `rows` into `table` (its name as SQL),
/// each column's fields of the type in `fields`: the key columns from
/// `keys` if given, the others from the entities; `updated` is the set of
/// `columns` when the rows update stored ones (see [`bind_all`]). Its rows
/// are left to the returned binding.
pub(super) fn copy_in<T: Entity>(
    table: &str,
    rows: &[Tracked<T>],
    columns: Vec<usize>,
    fields: Vec<Type>,
    keys: Option<SequenceKeys<T>>,
    flush: Option<u64>,
    updated: Option<UpdatedColumns>,
) -> (Statement, Box<dyn Binding>) {
    let meta = T::META;
    let names: Vec<String> = columns.iter().map(|&c| quote_ident(meta.columns[c].name)).collect();
    let statement = Statement {
        sql: format!("COPY {table} ({}) FROM STDIN (FORMAT binary)", names.join(", ")).into(),
        params: Vec::new(),
        returns_rows: false,
        check: None,
        copy: None,
        unmatched_of: None,
    };
    let mut data = BytesMut::with_capacity(rows.len() * 64 + 32);
    data.put_slice(b"PGCOPY\n\xff\r\n\0");
    data.put_i32(0); // flags
    data.put_i32(0); // header extension length
    let binding = CopyBinding { rows: rows.to_vec(), keys, columns, fields, flush, updated, bound: 0, data };
    (statement, Box::new(binding))
}

/// Keys the entities do not hold yet, taken from the key's sequence, and
/// the array types they are encoded as.
pub(super) struct SequenceKeys<T: Entity> {
    keys: Vec<T::Key>,
    target: Arc<CopyTarget>,
}

/// The rows of a `COPY` in its binary format, made [`ROWS_PER_YIELD`] rows at
/// a time. Each field is written straight from the entity by the field's
/// own `ToSql`, as the `INSERT`'s arrays write their elements; keys taken
/// from the sequence, which the entities do not hold yet, are encoded as
/// one array per chunk, whose elements are laid out as `COPY`'s fields are
/// (a length, -1 for NULL, then the value's binary form), and copied out
/// of it.
struct CopyBinding<T: Entity> {
    rows: Vec<Tracked<T>>,
    keys: Option<SequenceKeys<T>>,
    /// The key columns first if `keys` gives them, then the others.
    columns: Vec<usize>,
    /// The type of each column's fields, in `columns` order.
    fields: Vec<Type>,
    flush: Option<u64>,
    /// What is sent, if the rows update stored ones (see [`bind_all`]).
    updated: Option<UpdatedColumns>,
    bound: usize,
    data: BytesMut,
}

impl<T: Entity> CopyBinding<T> {
    /// Key column `n` of the chunk as an array in binary form.
    fn encode_keys(&self, n: usize, array: &Type, param: &Param, rows: usize) -> Result<Bytes> {
        let meta = T::META;
        let column = meta.columns[self.columns[n]].name;
        let failed = |reason: String| Error::Encode { entity: meta.name, column, reason };
        let mut out = BytesMut::with_capacity(rows * 16 + 20);
        match param.to_sql_checked(array, &mut out) {
            Ok(IsNull::No) => Ok(out.freeze()),
            Ok(IsNull::Yes) => Err(failed("an array of values encoded as NULL".to_owned())),
            Err(error) => Err(failed(error.to_string())),
        }
    }

    /// The fields of the chunk's keys taken from the sequence, one list per
    /// key column; none without such keys.
    fn key_fields(&self, end: usize) -> Result<Vec<Bytes>> {
        let Some(SequenceKeys { keys, target }) = &self.keys else { return Ok(Vec::new()) };
        let arrays = T::key_arrays(&keys[self.bound..end]);
        let mut fields = Vec::with_capacity(arrays.len());
        for (n, (param, array)) in arrays.iter().zip(&target.arrays).enumerate() {
            let array = self.encode_keys(n, array, param, end - self.bound)?;
            fields.push(elements(array).ok_or_else(|| malformed::<T>("a malformed array encoding"))?);
        }
        Ok(fields)
    }
}

impl<T: Entity> Binding for CopyBinding<T> {
    fn bind_chunk(&mut self) -> Result<bool> {
        let end = self.rows.len().min(self.bound + ROWS_PER_YIELD);
        let mut key_fields = self.key_fields(end)?;
        let fields = i16::try_from(self.columns.len()).unwrap_or(i16::MAX);
        let guards = bind_all(&self.rows[self.bound..end], self.flush, self.updated)?;
        for guard in &guards {
            self.data.put_i16(fields);
            for column in &mut key_fields {
                let field =
                    next_field(column).ok_or_else(|| malformed::<T>("an array with fewer elements than rows"))?;
                self.data.put_slice(&field);
            }
            for (&column, ty) in self.columns.iter().zip(&self.fields).skip(key_fields.len()) {
                write_field(&mut self.data, &guard.current, column, ty)?;
            }
        }
        drop(guards);
        self.bound = end;
        if end == self.rows.len() {
            self.data.put_i16(-1);
        }
        Ok(end == self.rows.len())
    }

    fn finish(self: Box<Self>, statement: &mut Statement) {
        statement.copy = Some(self.data.freeze());
    }
}

/// The error of a key array that is not laid out as the driver lays
/// arrays out: a bug, not bad input, but reported rather than sent.
fn malformed<T: Entity>(reason: &str) -> Error {
    Error::Encode { entity: T::META.name, column: "", reason: reason.to_owned() }
}

/// Appends column `column` of `entity` to `data` as a `COPY` field of type
/// `ty`: its length (-1 for NULL), then its binary form.
fn write_field<T: Entity>(data: &mut BytesMut, entity: &T, column: usize, ty: &Type) -> Result<()> {
    let failed = |reason: String| Error::Encode { entity: T::META.name, column: T::META.columns[column].name, reason };
    let start = data.len();
    data.put_i32(-1);
    match entity.write_column(column, ty, data) {
        Ok(IsNull::Yes) => {
            data.truncate(start + 4);
            Ok(())
        }
        Ok(IsNull::No) => {
            let length = i32::try_from(data.len() - start - 4).map_err(|_| failed("a value over 2 GiB".to_owned()))?;
            data[start..start + 4].copy_from_slice(&length.to_be_bytes());
            Ok(())
        }
        Err(error) => Err(failed(error.to_string())),
    }
}

/// The elements of a one-dimensional array in binary form (or of an empty
/// one), skipping its header: `None` if it is not one.
fn elements(mut array: Bytes) -> Option<Bytes> {
    if array.len() < 12 {
        return None;
    }
    let dimensions = array.get_i32();
    array.advance(8); // has-null flag, element type
    match dimensions {
        0 => Some(Bytes::new()),
        1 if array.len() >= 8 => {
            array.advance(8); // length, lower bound
            Some(array)
        }
        _ => None,
    }
}

/// Takes the next element off `elements`: its length and value, as a `COPY`
/// field.
fn next_field(elements: &mut Bytes) -> Option<Bytes> {
    let length = i32::from_be_bytes(elements.get(..4)?.try_into().ok()?);
    let size = 4 + usize::try_from(length).unwrap_or(0);
    (elements.len() >= size).then(|| elements.split_to(size))
}

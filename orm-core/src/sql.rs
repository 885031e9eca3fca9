//! Statement text. Every statement's text depends only on the table, the
//! operation and the set of columns, never on the data or the row count, so
//! each shape is prepared once per connection and cached.

use std::borrow::Cow;
use std::fmt::Write;
use std::sync::OnceLock;

use crate::entity::{ColumnMeta, ColumnSet, Entity, EntityMeta};
use crate::transaction_mark::{Guard, IN_UNIT_OF_WORK};

/// The statement texts of one entity type that depend on nothing else,
/// built at first use and kept: every `get` of a short request would build
/// the same text again otherwise. `#[derive(Entity)]` gives each entity type
/// its own, through [`Entity::statements`].
#[doc(hidden)]
pub struct EntityStatements {
    from: OnceLock<String>,
    by_key: OnceLock<String>,
    by_keys: OnceLock<String>,
    /// The one-row insert of the first set of columns inserted (almost
    /// always the only one): each web request that adds a row needs it.
    insert_one: OnceLock<(ColumnSet, String)>,
    /// [`insert_one`](Self::insert_one) as a unit of work's only statement,
    /// sent without `BEGIN`: each web request that adds one row and nothing
    /// else needs it.
    insert_alone: OnceLock<(ColumnSet, String)>,
}

impl EntityStatements {
    /// Nothing built yet.
    pub const fn new() -> Self {
        EntityStatements {
            from: OnceLock::new(),
            by_key: OnceLock::new(),
            by_keys: OnceLock::new(),
            insert_one: OnceLock::new(),
            insert_alone: OnceLock::new(),
        }
    }
}

impl Default for EntityStatements {
    fn default() -> Self {
        Self::new()
    }
}

/// [`select_from`] of `E`, built once.
pub(crate) fn select_from_of<E: Entity>() -> &'static str {
    E::statements().from.get_or_init(|| select_from(E::META))
}

/// [`insert_one`] of `E`: the text built once for the first set of
/// columns (for each [`Guard`]), borrowed; built anew for any other.
pub(crate) fn insert_one_of<E: Entity>(columns: ColumnSet, guard: Guard) -> Cow<'static, str> {
    let statements = E::statements();
    let cache = match guard {
        Guard::InUnitOfWork => &statements.insert_one,
        Guard::Alone => &statements.insert_alone,
    };
    let (cached_columns, cached) = cache.get_or_init(|| (columns, insert_one(E::META, columns, guard)));
    if *cached_columns == columns {
        Cow::Borrowed(cached.as_str())
    } else {
        Cow::Owned(insert_one(E::META, columns, guard))
    }
}

/// [`select_by_key`] of `E`, built once.
pub(crate) fn select_by_key_of<E: Entity>() -> &'static str {
    E::statements().by_key.get_or_init(|| select_by_key(E::META))
}

/// [`select_by_keys`] of `E`, built once.
pub(crate) fn select_by_keys_of<E: Entity>() -> &'static str {
    E::statements().by_keys.get_or_init(|| select_by_keys(E::META))
}

/// Quotes an identifier for PostgreSQL, doubling embedded quotes.
pub fn quote_ident(name: &str) -> String {
    let mut quoted = String::with_capacity(name.len() + 2);
    push_quoted(&mut quoted, name);
    quoted
}

/// Appends `name` to `sql` as [`quote_ident`] quotes it. Statements are
/// built on every query, and a `String` per identifier, formatted into the
/// statement, was a good part of their cost.
pub(crate) fn push_quoted(sql: &mut String, name: &str) {
    sql.reserve(name.len() + 2);
    sql.push('"');
    if name.contains('"') {
        sql.push_str(&name.replace('"', "\"\""));
    } else {
        sql.push_str(name);
    }
    sql.push('"');
}

/// Appends `table.column`, the column quoted.
pub(crate) fn push_column(sql: &mut String, table: &str, column: &str) {
    sql.push_str(table);
    sql.push('.');
    push_quoted(sql, column);
}

/// Appends the placeholder of bind parameter `number`, `$number`, without
/// the formatting machinery.
pub(crate) fn push_placeholder(sql: &mut String, number: usize) {
    sql.push('$');
    sql.push_str(itoa::Buffer::new().format(number));
}

fn join_columns(meta: &EntityMeta, set: ColumnSet, prefix: &str) -> String {
    let mut out = String::new();
    for (n, i) in indexes(set).enumerate() {
        if n > 0 {
            out.push_str(", ");
        }
        out.push_str(prefix);
        out.push_str(&quote_ident(meta.columns[i].name));
    }
    out
}

/// `UNNEST($1::type[], ...) AS v("a", ...)` over `columns` in that order: the
/// parameter list of every batched statement. With `ordinality`, a last
/// column of that name numbers the input rows. A column whose batch travels
/// as another type (an array column, as `text`) is read back through
/// [`batch_value`].
fn unnest(meta: &EntityMeta, columns: &[usize], ordinality: Option<&str>) -> String {
    let mut names: Vec<String> = columns.iter().map(|&i| quote_ident(meta.columns[i].name)).collect();
    names.extend(ordinality.map(str::to_owned));
    let with_ordinality = if ordinality.is_some() { " WITH ORDINALITY" } else { "" };
    format!("{}{with_ordinality} AS v({})", unnest_types(meta, columns), names.join(", "))
}

/// `UNNEST($1::text[], ...)` of the array parameters of `columns`, the
/// first numbered `$1`.
fn unnest_types(meta: &EntityMeta, columns: &[usize]) -> String {
    let types: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(n, &i)| {
            let column = &meta.columns[i];
            format!("${}::{}[]", n + 1, column.batch_type.unwrap_or(column.sql_type))
        })
        .collect();
    format!("UNNEST({})", types.join(", "))
}

/// A column's value in a row of [`unnest`]: `v."a"`, or for a column
/// whose batch travels as another type, `v."a"` cast back to its own.
fn batch_value(column: &ColumnMeta) -> String {
    let value = format!("v.{}", quote_ident(column.name));
    match column.batch_type {
        Some(_) => format!("{value}::{}", column.sql_type),
        None => value,
    }
}

/// [`batch_value`] of each column in `set`, comma-separated.
fn batch_values(meta: &EntityMeta, set: ColumnSet) -> String {
    indexes(set).map(|i| batch_value(&meta.columns[i])).collect::<Vec<_>>().join(", ")
}

/// The quoted name of an insert's row-number column: `"ord"`, lengthened
/// while the table has a column of that name, which would make it ambiguous.
fn ordinality_name(meta: &EntityMeta) -> String {
    let mut name = String::from("ord");
    while meta.columns.iter().any(|column| column.name == name) {
        name.push('_');
    }
    quote_ident(&name)
}

/// All columns, in `META` order, for a SELECT list.
pub(crate) fn select_list(meta: &EntityMeta, alias: &str) -> String {
    let all = (0..meta.columns.len()).fold(0, |set, i| set | (1 << i));
    join_columns(meta, all, &format!("{alias}."))
}

/// `SELECT <all columns> FROM "table" AS t`
fn select_from(meta: &EntityMeta) -> String {
    format!("SELECT {} FROM {} AS t", select_list(meta, "t"), quote_ident(meta.table))
}

/// Loads one row by key: `... WHERE t."id" = $1` (one parameter per key column).
fn select_by_key(meta: &EntityMeta) -> String {
    let mut sql = select_from(meta);
    for (n, i) in meta.key_columns().enumerate() {
        sql.push_str(if n == 0 { " WHERE " } else { " AND " });
        let _ = write!(sql, "t.{} = ${}", quote_ident(meta.columns[i].name), n + 1);
    }
    sql
}

/// Loads many rows by key with one array parameter per key column.
fn select_by_keys(meta: &EntityMeta) -> String {
    let keys = meta.key_set();
    let mut sql = select_from(meta);
    if meta.key_columns().count() == 1 {
        let column = meta.key_columns().map(|i| &meta.columns[i]).next();
        if let Some(column) = column {
            let _ = write!(sql, " WHERE t.{} = ANY($1::{}[])", quote_ident(column.name), column.sql_type);
        }
    } else {
        let _ = write!(
            sql,
            " WHERE ({}) IN (SELECT {} FROM {})",
            join_columns(meta, keys, "t."),
            join_columns(meta, keys, "v."),
            unnest(meta, &indexes(keys).collect::<Vec<_>>(), None)
        );
    }
    sql
}

/// Loads the children of many parents through a foreign key of several
/// columns (`foreign` of `child`, in the order of `parent`'s key): one
/// array parameter per parent key column, `WHERE (t."a", t."b") IN (SELECT
/// ... FROM UNNEST($1::t1[], $2::t2[]))`, so that the text, and with it the
/// prepared statement, is the same for any number of parents.
pub(crate) fn select_children_by_keys(child: &EntityMeta, foreign: &[usize], parent: &EntityMeta) -> String {
    // In key order, which need not be the child's field order.
    let foreign: Vec<String> = foreign.iter().map(|&i| format!("t.{}", quote_ident(child.columns[i].name))).collect();
    let keys = parent.key_set();
    format!(
        "{} WHERE ({}) IN (SELECT {} FROM {})",
        select_from(child),
        foreign.join(", "),
        join_columns(parent, keys, "v."),
        unnest(parent, &indexes(keys).collect::<Vec<_>>(), None)
    )
}

/// The columns a batch insert of `columns` binds, in parameter order. With
/// no column to write (all generated, or set later by a post-update), it
/// still needs one array, only to give the number of rows. ([`insert_one`]
/// binds `columns` themselves, none for none.)
pub(crate) fn batch_insert_parameters(columns: ColumnSet) -> Vec<usize> {
    if columns == 0 {
        vec![0]
    } else {
        indexes(columns).collect()
    }
}

/// Inserts a batch: one array parameter per inserted column, rows inserted in
/// input order (`ORDER BY ord`) so that `RETURNING` yields their generated
/// columns in that order. Parameters follow [`batch_insert_parameters`].
pub(crate) fn insert(meta: &EntityMeta, columns: ColumnSet, guard: Guard) -> String {
    let ord = ordinality_name(meta);
    let target = if columns == 0 { String::new() } else { format!(" ({})", join_columns(meta, columns, "")) };
    let mut sql = format!(
        "INSERT INTO {}{target} SELECT {} FROM {}{} ORDER BY v.{ord}",
        quote_ident(meta.table),
        batch_values(meta, columns),
        unnest(meta, &batch_insert_parameters(columns), Some(&ord)),
        where_guard(guard),
    );
    returning_generated(meta, &mut sql);
    sql
}

/// Inserts a batch as [`insert`] does, rows whose `conflict` columns clash
/// with an existing row updating its `update` columns from the new row (and
/// advancing its version) or, with none, leaving it alone; with
/// `returning`, returns every column of the rows written. Parameters follow
/// [`batch_insert_parameters`].
pub(crate) fn upsert(
    meta: &EntityMeta,
    columns: ColumnSet,
    conflict: ColumnSet,
    update: ColumnSet,
    returning: bool,
    guard: Guard,
) -> String {
    let table = quote_ident(meta.table);
    let mut sql = format!(
        "INSERT INTO {table} AS t ({}) SELECT {} FROM {}{} ORDER BY v.{} ON CONFLICT ({}) DO ",
        join_columns(meta, columns, ""),
        batch_values(meta, columns),
        unnest(meta, &batch_insert_parameters(columns), Some(&ordinality_name(meta))),
        where_guard(guard),
        ordinality_name(meta),
        join_columns(meta, conflict, ""),
    );
    if update == 0 {
        sql.push_str("NOTHING");
    } else {
        // A generated column takes its default, as it would in a new row:
        // one generated `ALWAYS` takes no other value.
        let generated = generated_set(meta);
        let mut assignments: Vec<String> = indexes(update)
            .map(|i| {
                let name = quote_ident(meta.columns[i].name);
                if generated & (1 << i) == 0 {
                    format!("{name} = EXCLUDED.{name}")
                } else {
                    format!("{name} = DEFAULT")
                }
            })
            .collect();
        if let Some(v) = meta.version_column().filter(|v| update & (1 << v) == 0) {
            assignments.push(format!(
                "{} = {}",
                quote_ident(meta.columns[v].name),
                next_version(&meta.columns[v], "t")
            ));
        }
        let _ = write!(sql, "UPDATE SET {}", assignments.join(", "));
        // A clash with another tenant's row leaves it alone, as DO NOTHING.
        if let Some(tenant) = meta.tenant_column() {
            let _ = write!(sql, " WHERE t.{0} = EXCLUDED.{0}", quote_ident(meta.columns[tenant].name));
        }
    }
    if returning {
        let _ = write!(sql, " RETURNING {}", select_list(meta, "t"));
    }
    sql
}

/// Inserts one row: what most units of work of a web request insert. One
/// row of parameters spares the server unpacking arrays and ordering their
/// rows, and the casts give its parameters the types the batch form's
/// arrays have. (A `SELECT` rather than `VALUES`, to carry the transaction
/// guard; with no columns, it inserts the defaults.) Only this shape and the
/// batch form exist per set of columns and [`Guard`], so the statement
/// cache stays bounded.
pub(crate) fn insert_one(meta: &EntityMeta, columns: ColumnSet, guard: Guard) -> String {
    let mut sql = if columns == 0 {
        format!("INSERT INTO {} SELECT{}", quote_ident(meta.table), where_guard(guard))
    } else {
        let values: Vec<String> =
            indexes(columns).enumerate().map(|(n, i)| format!("${}::{}", n + 1, meta.columns[i].sql_type)).collect();
        format!(
            "INSERT INTO {} ({}) SELECT {}{}",
            quote_ident(meta.table),
            join_columns(meta, columns, ""),
            values.join(", "),
            where_guard(guard),
        )
    };
    returning_generated(meta, &mut sql);
    sql
}

/// ` WHERE` and the guard's condition, or nothing for a statement alone.
fn where_guard(guard: Guard) -> String {
    guard.condition().map_or_else(String::new, |condition| format!(" WHERE {condition}"))
}

/// The columns the database assigns on insert.
pub(crate) fn generated_set(meta: &EntityMeta) -> ColumnSet {
    meta.generated_columns().fold(0, |set, i| set | (1 << i))
}

fn returning_generated(meta: &EntityMeta, sql: &mut String) {
    let generated = generated_set(meta);
    if generated != 0 {
        let _ = write!(sql, " RETURNING {}", join_columns(meta, generated, ""));
    }
}

/// The expression of a row's next version: one more, wrapping from the
/// type's maximum to its minimum as the counter in memory does
/// ([`VersionColumn`](crate::__private::VersionColumn)), so a version column
/// never stops a row from being updated (a `smallint` reaches its maximum
/// after 32,767 updates). A version only has to differ from the last one.
pub(crate) fn next_version(column: &ColumnMeta, alias: &str) -> String {
    let name = quote_ident(column.name);
    let max = match column.sql_type.to_ascii_lowercase().as_str() {
        "int2" | "smallint" => "32767",
        "int4" | "int" | "integer" => "2147483647",
        _ => "9223372036854775807",
    };
    format!("CASE WHEN {alias}.{name} = {max} THEN -{max} - 1 ELSE {alias}.{name} + 1 END")
}

/// Wraps a batched write that matches its input rows by key, `write`
/// (ending in `RETURNING` the keys of the rows it wrote, its key arrays
/// first among its parameters), so that it returns the keys of the input
/// rows it did not match instead: no row when it matched every one, which
/// is the rule, so a large batch sends no row back for the client to read.
///
/// The server counts the rows written against the input's length once (a
/// one-time filter) and only when they differ looks for the keys that
/// were not written. The input's keys are distinct (one instance per key
/// in a session), so the two counts differ exactly when a row is missing.
fn unmatched_keys(meta: &EntityMeta, write: &str) -> String {
    let keys: Vec<usize> = meta.key_columns().collect();
    let first = keys.first().map_or("int8", |&i| meta.columns[i].batch_type.unwrap_or(meta.columns[i].sql_type));
    unmatched_of(meta, write, &unnest_types(meta, &keys), &format!("cardinality($1::{first}[])"))
}

/// [`unmatched_keys`] over any input: `sent`, a row source whose first
/// columns are the key columns, of `count` rows (an SQL expression).
fn unmatched_of(meta: &EntityMeta, write: &str, sent: &str, count: &str) -> String {
    let names: Vec<String> = meta.key_columns().map(|i| quote_ident(meta.columns[i].name)).collect();
    let sent_keys: Vec<String> = names.iter().map(|name| format!("sent.{name}")).collect();
    let matches: Vec<String> = names.iter().map(|name| format!("written.{name} = sent.{name}")).collect();
    format!(
        "WITH written AS ({write}) SELECT {} FROM {sent} AS sent({}) \
         WHERE (SELECT count(*) FROM written) < {count} \
         AND NOT EXISTS (SELECT FROM written WHERE {})",
        sent_keys.join(", "),
        names.join(", "),
        matches.join(" AND "),
    )
}

/// Updates a batch of rows that changed the same columns. Parameters follow
/// [`update_parameters`]. Returns the keys of the input rows it did not
/// match (see [`unmatched_keys`]).
pub(crate) fn update(meta: &EntityMeta, changed: ColumnSet) -> String {
    let source = unnest(meta, &update_parameters(meta, changed), None);
    unmatched_keys(meta, &update_write(meta, changed, 0, &source, &join_columns(meta, meta.key_set(), "t.")))
}

/// The UPDATE of a batch of row switches, new entities taking over the
/// rows of deleted ones with their keys: [`update`]'s, which also gives
/// the generated columns their defaults, as the insert a switch stands for
/// would, and returns every column of the rows written, for the new
/// entities to take. Parameters follow [`update_parameters`].
pub(crate) fn switch_update(meta: &EntityMeta, changed: ColumnSet) -> String {
    let source = unnest(meta, &update_parameters(meta, changed), None);
    update_write(meta, changed, generated_set(meta) & !meta.key_set(), &source, &select_list(meta, "t"))
}

/// [`update`] of the rows of `table`, a (temporary) table whose columns
/// are those of [`update_parameters`], by name and in that order, holding
/// `$1` rows. Returns the keys of its rows it did not match.
pub(crate) fn update_from_table(meta: &EntityMeta, changed: ColumnSet, table: &str) -> String {
    let write = update_write(meta, changed, 0, &format!("{table} AS v"), &join_columns(meta, meta.key_set(), "t."));
    unmatched_of(meta, &write, table, "$1::int8")
}

/// `UPDATE ... FROM source ... RETURNING returning`: the changed columns
/// set from `source`'s row `v` and the `defaults` columns to their
/// defaults, matched as [`match_condition`] says, the version advanced.
fn update_write(meta: &EntityMeta, changed: ColumnSet, defaults: ColumnSet, source: &str, returning: &str) -> String {
    let version = meta.version_column();
    let mut assignments: Vec<String> = indexes(changed)
        .map(|i| format!("{} = {}", quote_ident(meta.columns[i].name), batch_value(&meta.columns[i])))
        .chain(indexes(defaults).map(|i| format!("{} = DEFAULT", quote_ident(meta.columns[i].name))))
        .collect();
    if let Some(v) = version {
        assignments.push(format!("{} = {}", quote_ident(meta.columns[v].name), next_version(&meta.columns[v], "t")));
    }
    format!(
        "UPDATE {} AS t SET {} FROM {source} WHERE {} RETURNING {returning}",
        quote_ident(meta.table),
        assignments.join(", "),
        match_condition(meta, Guard::InUnitOfWork),
    )
}

/// Deletes a batch by key (and expected version if versioned); parameters
/// follow [`update_parameters`] with no changed columns. Returns the keys of
/// the input rows it did not match (see [`unmatched_keys`]).
fn delete(meta: &EntityMeta, guard: Guard) -> String {
    let write = format!(
        "DELETE FROM {} AS t USING {} WHERE {} RETURNING {}",
        quote_ident(meta.table),
        unnest(meta, &update_parameters(meta, 0), None),
        match_condition(meta, guard),
        join_columns(meta, meta.key_set(), "t."),
    );
    unmatched_keys(meta, &write)
}

/// The statement of a batch of the session's deletes: [`soft_delete`] for
/// an entity with a soft-delete marker, which keeps its rows, else
/// [`delete`].
pub(crate) fn session_delete(meta: &EntityMeta, guard: Guard) -> String {
    meta.soft_delete_column().map_or_else(|| delete(meta, guard), |marker| soft_delete(meta, marker, guard))
}

/// Soft-deletes a batch: sets the soft-delete marker of the rows to the
/// transaction's `now()` (and advances the version, so that sessions
/// holding the row see it changed), matching them as [`delete`] does and
/// only while they are live, so that deleting a row deleted meanwhile is
/// deleting a row that is gone. Parameters and result as [`delete`]'s.
fn soft_delete(meta: &EntityMeta, marker: usize, guard: Guard) -> String {
    let marker = quote_ident(meta.columns[marker].name);
    let mut assignments = format!("{marker} = now()");
    if let Some(v) = meta.version_column() {
        let _ =
            write!(assignments, ", {} = {}", quote_ident(meta.columns[v].name), next_version(&meta.columns[v], "t"));
    }
    let write = format!(
        "UPDATE {} AS t SET {assignments} FROM {} WHERE {} AND t.{marker} IS NULL RETURNING {}",
        quote_ident(meta.table),
        unnest(meta, &update_parameters(meta, 0), None),
        match_condition(meta, guard),
        join_columns(meta, meta.key_set(), "t."),
    );
    unmatched_keys(meta, &write)
}

/// Sets `columns` to NULL in a batch of rows, by key, leaving the version
/// alone: rows on a reference cycle are cleared this way before they are
/// deleted, so that the rows they reference can be deleted first.
pub(crate) fn clear(meta: &EntityMeta, columns: ColumnSet) -> String {
    let keys: Vec<usize> = meta.key_columns().collect();
    let assignments: Vec<String> =
        indexes(columns).map(|i| format!("{} = NULL", quote_ident(meta.columns[i].name))).collect();
    let matches: Vec<String> =
        keys.iter().map(|&i| format!("t.{0} = v.{0}", quote_ident(meta.columns[i].name))).collect();
    format!(
        "UPDATE {} AS t SET {} FROM {} WHERE {} AND {IN_UNIT_OF_WORK}",
        quote_ident(meta.table),
        assignments.join(", "),
        unnest(meta, &keys, None),
        matches.join(" AND "),
    )
}

/// The columns bound by updates and deletes, in parameter order: the key,
/// the changed columns, then the expected version.
pub(crate) fn update_parameters(meta: &EntityMeta, changed: ColumnSet) -> Vec<usize> {
    meta.key_columns().chain(indexes(changed)).chain(meta.version_column()).chain(tenant_match(meta)).collect()
}

/// The tenant column, when updates and deletes match it besides the key:
/// a row is written only if it holds the tenant the entity holds, which a
/// tenant's session has checked is its own, so an entity attached with
/// another tenant's key matches nothing. Not when it is part of the key.
fn tenant_match(meta: &EntityMeta) -> Option<usize> {
    meta.tenant_column().filter(|&column| !meta.columns[column].primary_key)
}

/// Matches a table row to its input row on the key and, if versioned, the
/// version (and the tenant, see [`tenant_match`]), inside the unit of
/// work's transaction only, unless the statement is the whole unit of work.
fn match_condition(meta: &EntityMeta, guard: Guard) -> String {
    meta.key_columns()
        .chain(meta.version_column())
        .chain(tenant_match(meta))
        .map(|i| format!("t.{0} = v.{0}", quote_ident(meta.columns[i].name)))
        .chain(guard.condition().map(str::to_owned))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// The indexes of the columns in `set`, ascending.
pub(crate) fn indexes(set: ColumnSet) -> impl Iterator<Item = usize> {
    (0..64).filter(move |i| set & (1 << i) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_with_embedded_quotes_doubled() {
        assert_eq!(quote_ident("plain"), r#""plain""#);
        assert_eq!(quote_ident(r#"we"ird"name""#), r#""we""ird""name""""#);
        let mut sql = String::from("SELECT ");
        push_column(&mut sql, "t", r#"a"b"#);
        sql.push_str(" = ");
        push_placeholder(&mut sql, 12);
        assert_eq!(sql, r#"SELECT t."a""b" = $12"#);
    }
}

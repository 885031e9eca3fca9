//! Set-based `UPDATE` and `DELETE` by filter: one statement for every
//! matching row, with the session's tracked instances brought in line
//! afterwards, as SQLAlchemy's `synchronize_session` does.

use std::marker::PhantomData;

use crate::column::Column;
use crate::connection::Access;
use crate::entity::Entity;
use crate::error::{Error, Result};
use crate::expr::{ExprNode, IntoExpr};
use crate::query::Query;
use crate::sql::{self, quote_ident};
use crate::types::{param_refs, ColumnType, Param};

/// One `SET column = value` of a set-based update, made by [`Column::set`]
/// or [`Column::set_null`] and passed to [`Query::update`].
pub struct Assignment<E> {
    column: &'static str,
    value: ExprNode,
    _entity: PhantomData<fn() -> E>,
}

impl<E: Entity, V: ColumnType> Column<E, V> {
    /// `SET column = value` for [`Query::update`]: a value, or an expression
    /// over the row's own columns (`Item::STOCK.set(Item::STOCK - 1)`).
    pub fn set(self, value: impl IntoExpr<E, V>) -> Assignment<E> {
        Assignment { column: self.name(), value: value.into_expr().node, _entity: PhantomData }
    }

    /// `SET column = NULL` for [`Query::update`]; the database refuses it
    /// for a `NOT NULL` column ([`Error::NotNullViolation`](crate::Error::NotNullViolation)).
    pub fn set_null(self) -> Assignment<E> {
        let null = ExprNode::Raw { sql: "NULL".into(), params: Vec::new() };
        Assignment { column: self.name(), value: null, _entity: PhantomData }
    }
}

/// The alias of the updated or deleted table: `t`, as conditions and raw
/// fragments name it. With a limit, offset or order the statement picks its
/// rows by key in a sub-select (PostgreSQL's `UPDATE` and `DELETE` take none
/// of them) whose own table is also `t`, shadowing the outer one there.
fn target_alias<E: Entity>(_query: &Query<'_, E>) -> &'static str {
    "t"
}

/// `head` (`UPDATE ... AS <alias> SET ...` or `DELETE FROM ... AS <alias>`)
/// with the rows to change: the query's `WHERE`, or the sub-select of keys
/// of the rows the query would load (its `DISTINCT ON` included).
fn with_rows<E: Entity>(query: &mut Query<'_, E>, head: String, mut params: Vec<Param>) -> (String, Vec<Param>) {
    if !query.picks_rows_by_key() {
        // A row lock that waits means nothing on the rows an UPDATE or
        // DELETE changes, which it locks anyway; one that skips locked rows
        // or does not wait for them picks the rows, in a sub-select.
        query.take_lock();
        let built = query.build_clauses(head, params, &[], None);
        return (built.sql, built.params);
    }
    query.lock_for_write();
    let meta = E::META;
    let keys: Vec<String> = meta.key_columns().map(|k| quote_ident(meta.columns[k].name)).collect();
    let picked = keys.iter().map(|k| format!("t.{k}")).collect::<Vec<_>>().join(", ");
    let mut select = "SELECT ".to_owned();
    if query.has_distinct_on() {
        query.render_select_prefix(&mut select, &mut params);
    }
    select.push_str(&picked);
    select.push_str(" FROM ");
    select.push_str(&quote_ident(meta.table));
    select.push_str(" AS t");
    let built = query.build_clauses(select, params, &[], None);
    (format!("{head} WHERE ({picked}) IN ({})", built.sql), built.params)
}

/// Refuses, in a tenant's session, a set-based write that could reach
/// another tenant's rows, as the flush refuses such a write of an entity:
/// one whose query lifted the tenant filter
/// ([`all_tenants`](Query::all_tenants)), or that sets the tenant column
/// (moving the rows to another tenant).
fn refuse_other_tenants<E: Entity>(query: &Query<'_, E>, assigned: &[&str]) -> Result<()> {
    let Some(column) = E::META.tenant_column() else { return Ok(()) };
    let reaches_others = query.lift().tenants || assigned.contains(&E::META.columns[column].name);
    if query.session.filters.tenant().is_some() && reaches_others {
        return Err(Error::WrongTenant { entity: E::META.name });
    }
    Ok(())
}

/// Runs [`Query::delete`] (soft for a soft-deletable entity unless
/// `purge`) and [`Query::purge`].
pub(crate) async fn delete<E: Entity>(mut query: Query<'_, E>, purge: bool) -> Result<u64> {
    refuse_other_tenants(&query, &[])?;
    query.session.autoflush_for_query().await?;
    let meta = E::META;
    let alias = target_alias(&query);
    let head = match meta.soft_delete_column().filter(|_| !purge) {
        // As the session's delete of one: the marker set, the version
        // advanced, on live rows only.
        Some(marker) => {
            query.live_rows_only();
            let mut head = format!(
                "UPDATE {} AS {alias} SET {} = now()",
                quote_ident(meta.table),
                quote_ident(meta.columns[marker].name)
            );
            if let Some(version) = meta.version_column() {
                head.push_str(", ");
                head.push_str(&quote_ident(meta.columns[version].name));
                head.push_str(" = ");
                head.push_str(&sql::next_version(&meta.columns[version], alias));
            }
            head
        }
        None => format!("DELETE FROM {} AS {alias}", quote_ident(meta.table)),
    };
    let (mut sql, params) = with_rows(&mut query, head, Vec::new());
    let keys: Vec<String> =
        meta.key_columns().map(|k| format!("{alias}.{}", quote_ident(meta.columns[k].name))).collect();
    sql.push_str(" RETURNING ");
    sql.push_str(&keys.join(", "));
    let session = &mut *query.session;
    let rows = session.rows(&sql, &param_refs(&params), Access::RawWrite).await?;
    let keys = rows.iter().map(E::key_from_row).collect::<Result<Vec<_>>>()?;
    session.registries.of::<E>().forget_deleted(&keys);
    Ok(keys.len() as u64)
}

/// Runs [`Query::update`].
pub(crate) async fn update<E: Entity>(
    mut query: Query<'_, E>,
    assignments: impl IntoIterator<Item = Assignment<E>>,
) -> Result<u64> {
    query.session.autoflush_for_query().await?;
    let meta = E::META;
    let alias = target_alias(&query);
    let mut head = format!("UPDATE {} AS {alias} SET ", quote_ident(meta.table));
    let mut params = Vec::new();
    let mut assigned = Vec::new();
    for (n, assignment) in assignments.into_iter().enumerate() {
        if meta.key_columns().any(|k| meta.columns[k].name == assignment.column) {
            // As the flush refuses it: the session would keep the rows
            // under their old keys.
            return Err(Error::PrimaryKeyChanged { entity: meta.name, key: "(set-based update)".to_owned() });
        }
        if n > 0 {
            head.push_str(", ");
        }
        head.push_str(&quote_ident(assignment.column));
        head.push_str(" = ");
        // The value may reach other tables (a relation's count): their
        // global filters apply, as in a query.
        query.with_related_filters(&assignment.value).render(alias, &mut head, &mut params);
        assigned.push(assignment.column);
    }
    if assigned.is_empty() {
        return Ok(0);
    }
    refuse_other_tenants(&query, &assigned)?;
    // A changed row gets a new version, so that sessions holding the old
    // one see it as changed (StaleData), as after a flushed update.
    if let Some(version) = meta.version_column().filter(|&v| !assigned.contains(&meta.columns[v].name)) {
        head.push_str(", ");
        head.push_str(&quote_ident(meta.columns[version].name));
        head.push_str(" = ");
        head.push_str(&sql::next_version(&meta.columns[version], alias));
    }
    let (mut sql, params) = with_rows(&mut query, head, params);
    sql.push_str(" RETURNING ");
    sql.push_str(&sql::select_list(meta, alias));
    let session = &mut *query.session;
    let rows = session.rows(&sql, &param_refs(&params), Access::RawWrite).await?;
    let updated = rows.iter().map(|row| E::from_row(row, 0)).collect::<Result<Vec<E>>>()?;
    let count = updated.len() as u64;
    session.populate_existing(updated, false).await?;
    Ok(count)
}

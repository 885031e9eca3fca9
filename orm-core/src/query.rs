//! [`Query`]: loading entities with a typed filter, order, limit and offset.

use std::fmt::Write;

use crate::column::{Condition, Order};
use crate::connection::Access;
use crate::entity::Entity;
use crate::error::Result;
use crate::session::Session;
use crate::sql;
use crate::tracked::Tracked;
use crate::types::{param_refs, Param};

/// A query over entity `E`, started with [`Session::query`].
///
/// ```no_run
/// # use orm_core::{Entity, Session};
/// # #[derive(Entity, Clone, Debug, PartialEq)]
/// # #[orm(table = "customers")]
/// # struct Customer { #[orm(primary_key, generated)] id: i64, name: String }
/// # async fn example(session: &mut Session) -> orm_core::Result<()> {
/// let customers = session
///     .query::<Customer>()
///     .filter(Customer::NAME.like("A%").and(Customer::ID.gt(10)))
///     .order_by(Customer::NAME.asc())
///     .limit(20)
///     .all()
///     .await?;
/// # Ok(()) }
/// ```
///
/// Tracked results go through the identity map: a row whose key the session
/// already tracks comes back as that instance, with its pending changes
/// intact. [`untracked`](Self::untracked) skips the map for large read-only loads.
#[must_use = "a query does nothing until it is run with all(), first() or count()"]
pub struct Query<'s, E: Entity> {
    session: &'s mut Session,
    filter: Option<Condition<E>>,
    order: Vec<Order<E>>,
    limit: Option<i64>,
    offset: Option<i64>,
}

/// A query whose results bypass the identity map, made by [`Query::untracked`].
#[must_use = "a query does nothing until it is run with all()"]
pub struct UntrackedQuery<'s, E: Entity> {
    query: Query<'s, E>,
}

impl<'s, E: Entity> Query<'s, E> {
    pub(crate) fn new(session: &'s mut Session) -> Self {
        Query { session, filter: None, order: Vec::new(), limit: None, offset: None }
    }

    /// Keeps rows matching `condition`; several filters must all match.
    pub fn filter(mut self, condition: Condition<E>) -> Self {
        self.filter = Some(match self.filter.take() {
            Some(existing) => existing.and(condition),
            None => condition,
        });
        self
    }

    /// Sorts by a column; call again for ties.
    pub fn order_by(mut self, order: Order<E>) -> Self {
        self.order.push(order);
        self
    }

    /// Returns at most `count` rows.
    pub fn limit(mut self, count: i64) -> Self {
        self.limit = Some(count);
        self
    }

    /// Skips the first `count` rows.
    pub fn offset(mut self, count: i64) -> Self {
        self.offset = Some(count);
        self
    }

    /// Loads plain values that the session does not track.
    pub fn untracked(self) -> UntrackedQuery<'s, E> {
        UntrackedQuery { query: self }
    }

    /// Builds the statement: only the shape of the query is in the text,
    /// every value is a parameter.
    fn build(&mut self, select: &str) -> (String, Vec<Param>) {
        let mut sql = String::from(select);
        let mut params = Vec::new();
        if let Some(filter) = self.filter.take() {
            sql.push_str(" WHERE ");
            filter.render(&mut sql, &mut params);
        }
        for (n, order) in self.order.iter().enumerate() {
            sql.push_str(if n == 0 { " ORDER BY " } else { ", " });
            order.render(&mut sql);
        }
        if let Some(limit) = self.limit {
            params.push(Box::new(limit));
            let _ = write!(sql, " LIMIT ${}", params.len());
        }
        if let Some(offset) = self.offset {
            params.push(Box::new(offset));
            let _ = write!(sql, " OFFSET ${}", params.len());
        }
        (sql, params)
    }

    /// Runs the query and returns the matching entities, tracked.
    pub async fn all(mut self) -> Result<Vec<Tracked<E>>> {
        self.session.autoflush_for_query().await?;
        let (sql, params) = self.build(&sql::select_from(E::META));
        self.session.load::<E>(&sql, &param_refs(&params)).await
    }

    /// Runs the query with `LIMIT 1` and returns the first entity, if any.
    pub async fn first(self) -> Result<Option<Tracked<E>>> {
        Ok(self.limit(1).all().await?.pop())
    }

    /// Counts the matching rows (ignoring order, limit and offset).
    pub async fn count(mut self) -> Result<i64> {
        self.session.autoflush_for_query().await?;
        self.order.clear();
        self.limit = None;
        self.offset = None;
        let select = format!("SELECT count(*) FROM {} AS t", sql::quote_ident(E::META.table));
        let (sql, params) = self.build(&select);
        let rows = self.session.rows(&sql, &param_refs(&params), Access::Read).await?;
        rows.first().map_or(Ok(0), |row| row.try_get(0).map_err(crate::Error::from))
    }
}

impl<E: Entity> UntrackedQuery<'_, E> {
    /// Runs the query and returns plain values, streaming and decoding rows
    /// as they arrive.
    pub async fn all(mut self) -> Result<Vec<E>> {
        self.query.session.autoflush_for_query().await?;
        let (sql, params) = self.query.build(&sql::select_from(E::META));
        self.query.session.load_untracked::<E>(&sql, &param_refs(&params)).await
    }
}

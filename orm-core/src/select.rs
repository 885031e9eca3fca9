//! [`Select`]: a query that returns chosen expressions (columns, computed
//! values, aggregates) instead of whole entities, with `GROUP BY` and
//! `HAVING`.

use tokio_postgres::Row;

use crate::column::{Column, Condition};
use crate::connection::Access;
use crate::entity::Entity;
use crate::error::{Error, Result};
use crate::expr::{Expr, ExprNode, IntoExpr};
use crate::load_together::{prepared, Load, Prepare};
use crate::poll_budget::map_in_chunks;
use crate::query::{query_shape, Built, Query};
use crate::sql::push_quoted;
use crate::types::{param_refs, ColumnType};

/// The expressions of a [`Select`], in the order of its result columns.
/// Opaque: the builder fills it.
#[doc(hidden)]
#[derive(Default)]
pub struct SelectList(pub(crate) Vec<ExprNode>);

/// One expression a [`Select`] returns: a [`Column`] or an [`Expr`], decoded
/// into its value type.
pub trait SelectItem<E> {
    /// The Rust type of the value.
    type Value;
    #[doc(hidden)]
    fn push(&self, list: &mut SelectList);
    #[doc(hidden)]
    fn decode(&self, row: &Row, index: usize) -> Result<Self::Value>;
}

impl<E: Entity, V: ColumnType> SelectItem<E> for Column<E, V> {
    type Value = V;

    fn push(&self, list: &mut SelectList) {
        list.0.push(self.expr().node);
    }

    fn decode(&self, row: &Row, index: usize) -> Result<V> {
        V::decode_column(row, index, E::META.name, self.name())
    }
}

impl<E: Entity, V: ColumnType> SelectItem<E> for Expr<E, V> {
    type Value = V;

    fn push(&self, list: &mut SelectList) {
        list.0.push(self.node.clone());
    }

    fn decode(&self, row: &Row, index: usize) -> Result<V> {
        V::decode_column(row, index, E::META.name, "(selected expression)")
    }
}

/// What a [`Select`] returns per row: one [`SelectItem`] (a column or an
/// expression), or a tuple of up to eight, decoded into a tuple of their
/// value types.
pub trait Selection<E> {
    /// One row of the result.
    type Output;
    #[doc(hidden)]
    fn list(&self) -> SelectList;
    /// Decodes the selection from the row's columns from `offset` on: 0 for
    /// a [`Select`], after the entities' columns for a [`Join::with`](crate::Join::with).
    #[doc(hidden)]
    fn decode_at(&self, row: &Row, offset: usize) -> Result<Self::Output>;
}

/// One item selected alone decodes to its value, not a one-tuple.
macro_rules! single_selection {
    ($($item:ident),*) => {$(
        impl<E: Entity, V: ColumnType> Selection<E> for $item<E, V> {
            type Output = V;

            fn list(&self) -> SelectList {
                let mut list = SelectList::default();
                self.push(&mut list);
                list
            }

            fn decode_at(&self, row: &Row, offset: usize) -> Result<V> {
                self.decode(row, offset)
            }
        }
    )*};
}

single_selection!(Column, Expr);

macro_rules! tuple_selection {
    ($($item:ident $index:tt),+) => {
        impl<E, $($item: SelectItem<E>),+> Selection<E> for ($($item,)+) {
            type Output = ($($item::Value,)+);

            fn list(&self) -> SelectList {
                let mut list = SelectList::default();
                $(self.$index.push(&mut list);)+
                list
            }

            fn decode_at(&self, row: &Row, offset: usize) -> Result<Self::Output> {
                Ok(($(self.$index.decode(row, offset + $index)?,)+))
            }
        }
    };
}

tuple_selection!(A 0);
tuple_selection!(A 0, B 1);
tuple_selection!(A 0, B 1, C 2);
tuple_selection!(A 0, B 1, C 2, D 3);
tuple_selection!(A 0, B 1, C 2, D 3, F 4);
tuple_selection!(A 0, B 1, C 2, D 3, F 4, G 5);
tuple_selection!(A 0, B 1, C 2, D 3, F 4, G 5, H 6);
tuple_selection!(A 0, B 1, C 2, D 3, F 4, G 5, H 6, I 7);

/// A query over entity `E` returning the expressions of `S` per row, made
/// by [`Query::select`]. Its rows are plain values: nothing is tracked.
#[must_use = "a select does nothing until it is run with all(), first(), one() or optional()"]
pub struct Select<'s, E: Entity, S> {
    query: Query<'s, E>,
    selection: S,
    group_by: Vec<ExprNode>,
    having: Option<Condition<E>>,
}

impl<'s, E: Entity, S: Selection<E>> Select<'s, E, S> {
    pub(crate) fn new(query: Query<'s, E>, selection: S) -> Self {
        Select { query, selection, group_by: Vec::new(), having: None }
    }

    query_shape!(E);

    /// Groups rows equal in `expr` into one (`GROUP BY`); call again to
    /// group by several expressions. Every selected expression must then be
    /// grouped or an aggregate, which PostgreSQL checks.
    pub fn group_by<V>(mut self, expr: impl IntoExpr<E, V>) -> Self {
        self.group_by.push(expr.into_expr().node);
        self
    }

    /// Keeps groups matching `condition`, usually on an aggregate
    /// (`HAVING count(*) > 1`); several calls must all match.
    pub fn having(mut self, condition: Condition<E>) -> Self {
        self.having = Some(match self.having.take() {
            Some(existing) => existing.and(condition),
            None => condition,
        });
        self
    }

    /// Returns each distinct row once (`SELECT DISTINCT`).
    ///
    /// ```
    /// # use orm_core::{Database, Entity};
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # struct Book { #[orm(primary_key, generated)] id: i64, title: String, author: String, pages: i32 }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE book (id bigserial PRIMARY KEY, title text NOT NULL, author text NOT NULL, pages int NOT NULL);
    /// #     INSERT INTO book (title, author, pages) VALUES ('Emma', 'Austen', 474), ('Persuasion', 'Austen', 249), ('Ulysses', 'Joyce', 730)").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let authors: Vec<String> =
    ///     session.query::<Book>().select(Book::AUTHOR).distinct().order_by(Book::AUTHOR.asc()).all().await?;
    /// assert_eq!(authors, ["Austen", "Joyce"]);
    /// # Ok(()) }
    /// ```
    pub fn distinct(mut self) -> Self {
        self.query.set_distinct();
        self
    }

    /// Runs the query and returns its rows, decoded.
    pub async fn all(mut self) -> Result<Vec<S::Output>> {
        self.query.session.autoflush_for_query().await?;
        let (built, access) = self.statement();
        let session = &mut *self.query.session;
        session.record_load(&built.sql)?;
        let rows = session.rows(&built.sql, &param_refs(&built.params), access).await?;
        decode_rows(&self.selection, &rows, 0).await
    }

    /// [`all`](Self::all) as a [`Load`], to run with other loads in one
    /// round trip by [`Session::load_together`](crate::Session::load_together):
    /// counts per key beside the rows they count, say.
    pub fn all_later(mut self) -> Load<Vec<S::Output>>
    where
        S: Send + Sync + 'static,
        S::Output: Send + 'static,
    {
        let (built, access) = self.statement();
        let selection = self.selection;
        let prepare: Prepare =
            Box::new(move |_, rows| Box::pin(async move { Ok(prepared(decode_rows(&selection, &rows, 0).await?)) }));
        Load::of_statement_yielding(built.sql, built.params, access, prepare, |_, values| Ok(values))
    }

    /// The statement of [`all`](Self::all), and whether it needs the
    /// transaction.
    fn statement(&mut self) -> (Built, Access) {
        let mut sql = String::from("SELECT ");
        let mut params = Vec::new();
        let selected = self.selection.list().0;
        // Grouped, sorted or made distinct by a selected expression: by its
        // position.
        let by_position = |node: &ExprNode| match selected.iter().position(|item| item == node) {
            Some(at) => ExprNode::Position(at + 1),
            None => node.clone(),
        };
        self.query.map_distinct(by_position);
        self.query.render_select_prefix(&mut sql, &mut params);
        for (n, node) in selected.iter().enumerate() {
            if n > 0 {
                sql.push_str(", ");
            }
            self.query.with_related_filters(node).render("t", &mut sql, &mut params);
        }
        sql.push_str(" FROM ");
        push_quoted(&mut sql, E::META.table);
        sql.push_str(" AS t");
        let having = self.having.take();
        let group_by: Vec<ExprNode> = self.group_by.iter().map(by_position).collect();
        self.query.map_order(by_position);
        let built = self.query.build_clauses(sql, params, &group_by, having);
        (built, self.query.access())
    }

    /// Runs the query and returns its rows as structs of `#[derive(Projection)]`
    /// (or any type built `From` the row's tuple).
    ///
    /// ```
    /// # use orm_core::{Database, Entity, Expr, Projection};
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # struct Book { #[orm(primary_key, generated)] id: i64, title: String, author: String, pages: i32 }
    /// #[derive(Projection, Debug, PartialEq)]
    /// struct AuthorStats {
    ///     author: String,
    ///     books: i64,
    ///     pages: Option<i64>,
    /// }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE book (id bigserial PRIMARY KEY, title text NOT NULL, author text NOT NULL, pages int NOT NULL);
    /// #     INSERT INTO book (title, author, pages) VALUES ('Emma', 'Austen', 474), ('Persuasion', 'Austen', 249), ('Ulysses', 'Joyce', 730)").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let stats: Vec<AuthorStats> = session
    ///     .query::<Book>()
    ///     .select((Book::AUTHOR, Expr::count_all(), Book::PAGES.sum()))
    ///     .group_by(Book::AUTHOR)
    ///     .order_by(Book::AUTHOR.asc())
    ///     .all_as()
    ///     .await?;
    /// assert_eq!(stats[1], AuthorStats { author: "Joyce".into(), books: 1, pages: Some(730) });
    /// # Ok(()) }
    /// ```
    pub async fn all_as<T: From<S::Output>>(self) -> Result<Vec<T>> {
        Ok(self.all().await?.into_iter().map(T::from).collect())
    }

    /// Runs the query with `LIMIT 1` and returns the first row, if any.
    pub async fn first(self) -> Result<Option<S::Output>> {
        Ok(self.limit(1).all().await?.into_iter().next())
    }

    /// Runs the query and returns its only row: [`Error::NotFound`] when no
    /// row matches, [`Error::MultipleRows`] when more than one does. Reads
    /// at most two rows.
    pub async fn one(self) -> Result<S::Output> {
        self.optional().await?.ok_or(Error::NotFound { entity: E::META.name, key: "(a selected row)".to_owned() })
    }

    /// Runs the query and returns its only row or `None`;
    /// [`Error::MultipleRows`] when more than one matches.
    pub async fn optional(self) -> Result<Option<S::Output>> {
        let limit = self.query.limit_or(2).min(2);
        let mut rows = self.limit(limit).all().await?;
        if rows.len() > 1 {
            return Err(Error::MultipleRows { entity: E::META.name });
        }
        Ok(rows.pop())
    }
}

/// Each row's selected values, from its column `offset` on:
/// [`ROWS_PER_YIELD`](crate::poll_budget::ROWS_PER_YIELD) rows at a time
/// with a yield to the runtime in between.
pub(crate) async fn decode_rows<E, S: Selection<E>>(
    selection: &S,
    rows: &[Row],
    offset: usize,
) -> Result<Vec<S::Output>> {
    map_in_chunks(rows, |row| selection.decode_at(row, offset)).await
}

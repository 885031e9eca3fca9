//! [`UntrackedWith`]: an untracked query of one entity that also selects
//! expressions beside each row, in the same statement, as
//! [`JoinWith`](crate::JoinWith) does for a join: a user's row with
//! whether the viewer follows them, or with the key of a row a handler
//! needs beside it ([`Condition::collect_rows`](crate::Condition::collect_rows)),
//! where asking apart costs a statement each.

use tokio_postgres::Row;

use crate::entity::Entity;
use crate::error::Result;
use crate::load_together::{prepared, Load, Prepare};
use crate::poll_budget::map_in_chunks;
use crate::query::{Built, UntrackedQuery};
use crate::select::Selection;
use crate::sql;
use crate::types::param_refs;

/// An [`UntrackedQuery`] with expressions selected beside each row, made by
/// [`UntrackedQuery::with`]. Rows come back as pairs: the entity (a plain
/// value, as the untracked query returns it) and the selection's values,
/// decoded as [`Query::select`](crate::Query::select) decodes them.
#[must_use = "a query does nothing until it is run with all()"]
pub struct UntrackedWith<'s, E: Entity, S> {
    query: UntrackedQuery<'s, E>,
    selection: S,
}

impl<'s, E: Entity> UntrackedQuery<'s, E> {
    /// Selects `selection` (an expression of the entity, or a tuple of up
    /// to eight) beside each row, in the query's own statement: the
    /// query's filters, order and limit, set before, still apply. What a
    /// handler shows beside a row (whether the viewer follows this user,
    /// how many posts they wrote) or needs with it (another table's key,
    /// by [`Condition::collect_rows`](crate::Condition::collect_rows)) then
    /// comes with the row instead of from a statement of its own.
    ///
    /// ```
    /// # use orm_core::{Database, Entity};
    /// #[derive(Entity, Clone, Debug, PartialEq)]
    /// #[orm(table = "users")]
    /// struct User {
    ///     #[orm(primary_key, generated)]
    ///     id: i64,
    ///     name: String,
    /// }
    ///
    /// #[derive(Entity, Clone, Debug, PartialEq)]
    /// struct Post {
    ///     #[orm(primary_key, generated)]
    ///     id: i64,
    ///     #[orm(references = User)]
    ///     author_id: i64,
    /// }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE users (id bigserial PRIMARY KEY, name text NOT NULL);
    /// #     CREATE TABLE post (id bigserial PRIMARY KEY, author_id bigint NOT NULL REFERENCES users);
    /// #     INSERT INTO users (name) VALUES ('ann'), ('bob'); INSERT INTO post (author_id) VALUES (1), (1), (2)").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let users = session
    ///     .query::<User>()
    ///     .order_by(User::ID.asc())
    ///     .untracked()
    ///     .with(Post::AUTHOR.count())
    ///     .all()
    ///     .await?;
    /// assert_eq!(users, [(User { id: 1, name: "ann".into() }, 2), (User { id: 2, name: "bob".into() }, 1)]);
    /// assert_eq!(session.stats().statements, 1);
    /// # Ok(()) }
    /// ```
    pub fn with<S: Selection<E>>(self, selection: S) -> UntrackedWith<'s, E, S> {
        UntrackedWith { query: self, selection }
    }
}

impl<E: Entity, S: Selection<E>> UntrackedWith<'_, E, S> {
    /// Runs the query and returns each row with its selected values.
    pub async fn all(mut self) -> Result<Vec<(E, S::Output)>> {
        self.query.query.session.autoflush_for_query().await?;
        let built = self.statement();
        let access = self.query.query.access();
        let session = &mut *self.query.query.session;
        session.record_load(&built.sql)?;
        let rows = session.rows(&built.sql, &param_refs(&built.params), access).await?;
        decode(&self.selection, &rows).await
    }

    /// [`all`](Self::all) as a [`Load`], to send in one round trip with
    /// others by [`Session::load_together`](crate::Session::load_together).
    pub fn all_later(mut self) -> Load<Vec<(E, S::Output)>>
    where
        S: Send + Sync + 'static,
        S::Output: Send + 'static,
    {
        let built = self.statement();
        let access = self.query.query.access();
        let selection = self.selection;
        let prepare: Prepare =
            Box::new(move |_, rows| Box::pin(async move { Ok(prepared(decode(&selection, &rows).await?)) }));
        Load::of_statement_yielding(built.sql, built.params, access, prepare, |_, found| Ok(found))
    }

    /// `SELECT <the entity's columns>, <the selection> FROM table AS t`
    /// and the query's clauses.
    fn statement(&mut self) -> Built {
        let query = &mut self.query.query;
        let columns = sql::select_list(E::META, "t");
        let mut text = String::with_capacity(columns.len() + 160);
        let mut params = Vec::new();
        text.push_str("SELECT ");
        query.render_select_prefix(&mut text, &mut params);
        text.push_str(&columns);
        for node in self.selection.list().0 {
            text.push_str(", ");
            query.with_related_filters(&node).render("t", &mut text, &mut params);
        }
        text.push_str(" FROM ");
        sql::push_quoted(&mut text, E::META.table);
        text.push_str(" AS t");
        query.build_clauses(text, params, &[], None)
    }
}

/// Each row's entity, from its first columns, and its selected values,
/// after them: [`ROWS_PER_YIELD`](crate::poll_budget::ROWS_PER_YIELD) rows
/// at a time with a yield to the runtime in between.
async fn decode<E: Entity, S: Selection<E>>(selection: &S, rows: &[Row]) -> Result<Vec<(E, S::Output)>> {
    let at = E::META.columns.len();
    map_in_chunks(rows, |row| Ok((E::from_row(row, 0)?, selection.decode_at(row, at)?))).await
}

//! [`Join`]: a query over a child entity that returns each row with its
//! parent through a declared relation, both identity-mapped, in one
//! statement.

use crate::column::Condition;
use crate::entity::Entity;
use crate::error::Result;
use crate::query::{query_shape, Query};
use crate::relation::{parent_key_columns, Relation};
use crate::sql::{quote_ident, select_list};
use crate::tracked::Tracked;
use crate::types::param_refs;

/// The alias of the joined parent's table in the statement.
const PARENT: &str = "j";

/// A query over child entity `C` joined to its parent `P` through a
/// [`Relation`], made by [`Query::join`] or [`Query::left_join`]. Rows come
/// back as `(Tracked<C>, Tracked<P>)` (inner join) or `(Tracked<C>,
/// Option<Tracked<P>>)` (left join), through the identity map on both
/// sides, from one statement.
#[must_use = "a join does nothing until it is run with all()"]
pub struct Join<'s, C: Entity, P: Entity, Parent> {
    query: Query<'s, C>,
    relation: Relation<C, P>,
    left: bool,
    _parent: std::marker::PhantomData<fn() -> Parent>,
}

impl<'s, C: Entity> Query<'s, C> {
    /// Joins each row to its parent through `relation` (`INNER JOIN`): rows
    /// without one are left out. One statement returns both entities, each
    /// identity-mapped as a load would; filter on the parent with
    /// [`Join::filter_parent`].
    ///
    /// ```
    /// # use orm_core::{Database, Entity, Tracked};
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
    ///     author_id: Option<i64>,
    ///     title: String,
    /// }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE users (id bigserial PRIMARY KEY, name text NOT NULL);
    /// #     CREATE TABLE post (id bigserial PRIMARY KEY, author_id bigint REFERENCES users, title text NOT NULL);
    /// #     INSERT INTO users (name) VALUES ('ann'), ('bob');
    /// #     INSERT INTO post (author_id, title) VALUES (1, 'hello'), (2, 'hi'), (1, 'again'), (NULL, 'anonymous')").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let by_ann = session
    ///     .query::<Post>()
    ///     .join(Post::AUTHOR)
    ///     .filter_parent(User::NAME.eq("ann"))
    ///     .order_by(Post::ID.asc())
    ///     .all()
    ///     .await?;
    /// assert_eq!(by_ann.len(), 2);
    /// assert!(Tracked::ptr_eq(&by_ann[0].1, &by_ann[1].1)); // one instance of ann
    ///
    /// let all = session.query::<Post>().left_join(Post::AUTHOR).order_by(Post::ID.asc()).all().await?;
    /// assert!(all[3].1.is_none()); // the anonymous post
    /// assert!(Tracked::ptr_eq(all[0].1.as_ref().unwrap(), &by_ann[0].1));
    /// assert_eq!(session.stats().statements, 2);
    /// # Ok(()) }
    /// ```
    pub fn join<P: Entity>(self, relation: Relation<C, P>) -> Join<'s, C, P, Tracked<P>> {
        Join { query: self, relation, left: false, _parent: std::marker::PhantomData }
    }

    /// Joins each row to its parent through `relation` (`LEFT JOIN`): rows
    /// without one (a NULL foreign key) come back with `None`.
    pub fn left_join<P: Entity>(self, relation: Relation<C, P>) -> Join<'s, C, P, Option<Tracked<P>>> {
        Join { query: self, relation, left: true, _parent: std::marker::PhantomData }
    }
}

impl<C: Entity, P: Entity, Parent> Join<'_, C, P, Parent> {
    query_shape!(C);

    /// Keeps rows whose joined parent matches `condition` (with a left
    /// join, rows without a parent are then left out too).
    pub fn filter_parent(mut self, condition: Condition<P>) -> Self {
        self.query.push_filter(Condition::on_alias(PARENT, condition));
        self
    }

    /// Runs the statement and returns child and parent entities, tracked.
    async fn fetch(mut self) -> Result<Vec<(Tracked<C>, Option<Tracked<P>>)>> {
        self.query.session.autoflush_for_query().await?;
        let (child, parent) = (C::META, P::META);
        let parent_key = parent_key_columns::<P>();
        // One equality per key column: `p."id" = t."author_id"`, or for a
        // composite foreign key `p."region" = t."order_region" AND ...`.
        let on: Vec<String> = parent_key
            .iter()
            .zip(self.relation.column_names())
            .map(|(key, column)| format!("{PARENT}.{} = t.{}", quote_ident(key), quote_ident(column)))
            .collect();
        let mut sql = format!(
            "SELECT {}, {PARENT}.{} IS NOT NULL, {} FROM {} AS t {} {} AS {PARENT} ON {}",
            select_list(child, "t"),
            quote_ident(parent_key[0]),
            select_list(parent, PARENT),
            quote_ident(child.table),
            if self.left { "LEFT JOIN" } else { "JOIN" },
            quote_ident(parent.table),
            on.join(" AND "),
        );
        // The parent's global filters join the ON clause: a hidden parent
        // is no parent (a left join returns the child with `None`).
        let mut params = Vec::new();
        if let Some(hidden) = self.query.session.filters.condition::<P>(self.query.lift()) {
            sql.push_str(" AND ");
            Condition::<C>::on_alias(PARENT, hidden).render(&mut sql, &mut params);
        }
        let built = self.query.build_clauses(sql, params, &[], None);
        let access = self.query.access();
        let session = &mut *self.query.session;
        session.record_load(&built.sql)?;
        let rows = session.rows(&built.sql, &param_refs(&built.params), access).await?;
        let joined_at = child.columns.len();
        let mut children = Vec::with_capacity(rows.len());
        let mut parents = Vec::with_capacity(rows.len());
        let mut present = Vec::with_capacity(rows.len());
        for row in &rows {
            children.push(C::from_row(row, 0)?);
            let joined: bool = row.try_get(joined_at)?;
            if joined {
                parents.push(P::from_row(row, joined_at + 1)?);
            }
            present.push(joined);
        }
        let children = session.track(children);
        let mut parents = session.track(parents).into_iter();
        Ok(children
            .into_iter()
            .zip(present)
            .map(|(child, joined)| (child, joined.then(|| parents.next()).flatten()))
            .collect())
    }
}

impl<C: Entity, P: Entity> Join<'_, C, P, Tracked<P>> {
    /// Runs the query and returns each child with its parent, tracked.
    pub async fn all(self) -> Result<Vec<(Tracked<C>, Tracked<P>)>> {
        let rows = self.fetch().await?;
        Ok(rows.into_iter().filter_map(|(child, parent)| Some((child, parent?))).collect())
    }
}

impl<C: Entity, P: Entity> Join<'_, C, P, Option<Tracked<P>>> {
    /// Runs the query and returns each child with its parent if it has one,
    /// tracked.
    pub async fn all(self) -> Result<Vec<(Tracked<C>, Option<Tracked<P>>)>> {
        self.fetch().await
    }
}

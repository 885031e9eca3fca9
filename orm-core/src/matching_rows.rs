//! What the rows of a table that match a condition are, as a value beside
//! each row of a query of any table: how many there are
//! ([`Condition::count_rows`], a page's total in the page's own statement)
//! and the values of one of their columns ([`Condition::collect_rows`], the
//! key of a row looked up by another column, beside the row a handler loads
//! anyway), where asking apart costs a statement of its own.
//!
//! Each is an uncorrelated subquery, `(SELECT count(*) FROM table WHERE
//! condition)` or `ARRAY(SELECT column FROM table WHERE condition ORDER BY
//! ...)`, which PostgreSQL runs once per statement (an `InitPlan`), not
//! once per row, and only if the statement returns a row: a page past the
//! last row has no total to carry.

use std::sync::Arc;

use crate::array::ArrayElement;
use crate::column::{Column, Condition, Correlated, Order};
use crate::entity::Entity;
use crate::expr::{Expr, ExprNode, Gather, SharedCorrelated};

impl<C: Entity> Condition<C> {
    /// How many rows of `C` match the condition, as the same value beside
    /// every row of a query of any entity: a page's total with the page,
    /// from one statement, where
    /// [`count_later`](crate::Query::count_later) beside the page is a
    /// second statement for the server to bind, start and end. `C`'s
    /// global filters apply inside as they apply to a query of `C` (a
    /// soft-deleted or another tenant's row counts only where the query
    /// that selects the count lifts the filter), so counting the page's own
    /// condition counts what the page pages through.
    ///
    /// The value comes with the rows, so a statement that returns none
    /// (a page past the end) has no total: count then with
    /// [`count`](crate::Query::count) (a first page that is empty needs no
    /// count: there is nothing to page through).
    ///
    /// ```
    /// # use orm_core::{Database, Entity};
    /// #[derive(Entity, Clone, Debug, PartialEq)]
    /// struct Post {
    ///     #[orm(primary_key, generated)]
    ///     id: i64,
    ///     title: String,
    ///     draft: bool,
    /// }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE post (id bigserial PRIMARY KEY, title text NOT NULL, draft bool NOT NULL);
    /// #     INSERT INTO post (title, draft) VALUES ('one', false), ('two', false), ('three', true), ('four', false)").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let published = || Post::DRAFT.eq(false);
    /// let page = session
    ///     .query::<Post>()
    ///     .filter(published())
    ///     .select((Post::TITLE, published().count_rows()))
    ///     .order_by(Post::ID.desc())
    ///     .limit(2)
    ///     .all()
    ///     .await?;
    /// assert_eq!(page, [("four".to_string(), 3), ("two".to_string(), 3)]);
    /// assert_eq!(session.stats().statements, 1);
    /// # Ok(()) }
    /// ```
    pub fn count_rows<P: Entity>(self) -> Expr<P, i64> {
        self.gather(Gather::Count)
    }

    /// The values of `column` of the rows of `C` that match the condition,
    /// in `order`, as an array (empty for none), the same beside every row
    /// of a query of any entity. Where a handler looks a row up by another
    /// column only for its key (the article a new comment belongs to, by
    /// the slug in the URL), that key then comes with the row the handler
    /// loads anyway, in its statement, instead of from one of its own.
    /// `C`'s global filters apply inside as they do to a query of `C`, as
    /// in [`count_rows`](Self::count_rows); like it, the value comes only
    /// with a row of the query.
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
    ///     slug: String,
    /// }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE users (id bigserial PRIMARY KEY, name text NOT NULL);
    /// #     CREATE TABLE post (id bigserial PRIMARY KEY, slug text NOT NULL UNIQUE);
    /// #     INSERT INTO users (name) VALUES ('ann'); INSERT INTO post (slug) VALUES ('hello'), ('hi')").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let post_key = |slug: &str| Post::SLUG.eq(slug).collect_rows(Post::ID, Post::ID.asc());
    /// let found = session.query::<User>().filter(User::ID.eq(1)).untracked().with(post_key("hi")).all().await?;
    /// assert_eq!(found, [(User { id: 1, name: "ann".into() }, vec![2])]);
    /// let missing = session.query::<User>().filter(User::ID.eq(1)).untracked().with(post_key("nope")).all().await?;
    /// assert_eq!(missing[0].1, Vec::<i64>::new());
    /// assert_eq!(session.stats().statements, 2);
    /// # Ok(()) }
    /// ```
    pub fn collect_rows<P: Entity, V: ArrayElement>(self, column: Column<C, V>, order: Order<C>) -> Expr<P, Vec<V>> {
        let (order, descending, nulls_first) = order.into_parts();
        self.gather(Gather::Array { column: column.name(), order: Box::new(order), descending, nulls_first })
    }

    /// `gather` over the rows that match the condition, as an expression of
    /// any entity: a subquery related to the outer row by no column at all.
    fn gather<P: Entity, V>(self, gather: Gather) -> Expr<P, V> {
        let subquery = Correlated::new(C::META, Vec::new(), Vec::new(), self);
        Expr::from_node(ExprNode::Correlated { subquery: SharedCorrelated(Arc::new(subquery)), gather })
    }
}

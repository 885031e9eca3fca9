//! How many rows of a table match a condition, as a value beside each row
//! of a query ([`Condition::count_rows`]): a page's total in the page's own
//! statement, where counting apart costs a statement of its own.
//!
//! It is an uncorrelated subquery, `(SELECT count(*) FROM table WHERE
//! condition)`, which PostgreSQL runs once per statement (an `InitPlan`),
//! not once per row, and only if the statement returns a row: a page past
//! the last row has no total to carry.

use std::sync::Arc;

use crate::column::{Condition, Correlated};
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
        // A subquery related to the outer row by no column at all.
        let subquery = Correlated::new(C::META, Vec::new(), Vec::new(), self);
        Expr::from_node(ExprNode::Correlated { subquery: SharedCorrelated(Arc::new(subquery)), gather: Gather::Count })
    }
}

//! A relation's children aggregated per parent row, as expressions of the
//! parent: how many children a row has ([`Relation::count`],
//! [`Relation::count_where`]) and one of their columns as an array
//! ([`Relation::collect`]). With [`Condition::into_expr`] of a
//! [`Relation::any`] (whether a row has a child matching a condition),
//! they select a page's per-row facts beside the page, in its own
//! statement ([`Query::select`](crate::Query::select),
//! [`Join::with`](crate::Join::with)), where loading them after the page
//! costs a statement each: on a database server that shares its cores with
//! the application, each statement costs a bind, an executor start and an
//! implicit transaction of its own, however little it reads.
//!
//! Each is a correlated subquery, `(SELECT count(*) FROM child WHERE
//! child.fk = row.key ...)`, which PostgreSQL runs once per row it returns,
//! by the foreign key's index where there is one: meant for the rows of a
//! page, not for sorting a whole table by them. The child entity's global
//! filters apply inside, as they do in [`Relation::any`]: a soft-deleted or
//! another tenant's child counts nowhere, unless the query that selects,
//! filters, sorts or assigns the aggregate lifts the filter
//! ([`Query::include_deleted`](crate::Query::include_deleted) counts
//! deleted children too). SQL written by hand in a condition or an order
//! of the aggregate names the child table `t`.

use crate::array::ArrayElement;
use crate::column::{Column, Condition, Correlated, Order};
use crate::entity::Entity;
use crate::expr::{Expr, ExprNode, Gather, SharedCorrelated};
use crate::relation::{parent_key_columns, Relation};

impl<C: Entity, P: Entity> Relation<C, P> {
    /// How many children each parent row has (`0` for none), as an
    /// expression of the parent: a post's number of comments, an article's
    /// number of favorites.
    ///
    /// ```
    /// # use orm_core::{Database, Entity};
    /// #[derive(Entity, Clone, Debug, PartialEq)]
    /// struct Post {
    ///     #[orm(primary_key, generated)]
    ///     id: i64,
    ///     title: String,
    /// }
    ///
    /// #[derive(Entity, Clone, Debug, PartialEq)]
    /// struct Reply {
    ///     #[orm(primary_key, generated)]
    ///     id: i64,
    ///     #[orm(references = Post)]
    ///     post_id: i64,
    ///     spam: bool,
    /// }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE post (id bigserial PRIMARY KEY, title text NOT NULL);
    /// #     CREATE TABLE reply (id bigserial PRIMARY KEY, post_id bigint NOT NULL REFERENCES post, spam bool NOT NULL);
    /// #     INSERT INTO post (title) VALUES ('hello'), ('quiet');
    /// #     INSERT INTO reply (post_id, spam) VALUES (1, false), (1, true), (1, false)").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let replies = session
    ///     .query::<Post>()
    ///     .select((Post::TITLE, Reply::POST.count(), Reply::POST.count_where(Reply::SPAM.eq(false))))
    ///     .order_by(Post::ID.asc())
    ///     .all()
    ///     .await?;
    /// assert_eq!(replies, [("hello".to_string(), 3, 2), ("quiet".to_string(), 0, 0)]);
    /// assert_eq!(session.stats().statements, 1);
    /// # Ok(()) }
    /// ```
    pub fn count(self) -> Expr<P, i64> {
        self.count_where(Condition::all([]))
    }

    /// How many children matching `condition` each parent row has: an
    /// article's comments that are not spam, or, with a condition on the
    /// viewer, whether they favorited it (see also [`Relation::any`] with
    /// [`Condition::into_expr`], which stops at the first match).
    pub fn count_where(self, condition: Condition<C>) -> Expr<P, i64> {
        self.aggregate(condition, Gather::Count)
    }

    /// The values of `column` of each parent row's children, as an array in
    /// `order` (empty for none): an article's tags in alphabetical order,
    /// in the statement that loads the article. For a few values a row;
    /// whole child rows come with [`Session::load_children`](crate::Session::load_children).
    ///
    /// ```
    /// # use orm_core::{Database, Entity};
    /// #[derive(Entity, Clone, Debug, PartialEq)]
    /// struct Article {
    ///     #[orm(primary_key, generated)]
    ///     id: i64,
    ///     title: String,
    /// }
    ///
    /// #[derive(Entity, Clone, Debug, PartialEq)]
    /// struct Tagging {
    ///     #[orm(primary_key, references = Article)]
    ///     article_id: i64,
    ///     #[orm(primary_key)]
    ///     tag: String,
    /// }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE article (id bigserial PRIMARY KEY, title text NOT NULL);
    /// #     CREATE TABLE tagging (article_id bigint REFERENCES article, tag text, PRIMARY KEY (article_id, tag));
    /// #     INSERT INTO article (title) VALUES ('tea'), ('untagged');
    /// #     INSERT INTO tagging VALUES (1, 'drinks'), (1, 'breakfast')").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let tagged = session
    ///     .query::<Article>()
    ///     .select((Article::TITLE, Tagging::ARTICLE.collect(Tagging::TAG, Tagging::TAG.asc())))
    ///     .order_by(Article::ID.asc())
    ///     .all()
    ///     .await?;
    /// assert_eq!(tagged[0], ("tea".to_string(), vec!["breakfast".to_string(), "drinks".to_string()]));
    /// assert_eq!(tagged[1], ("untagged".to_string(), vec![]));
    /// # Ok(()) }
    /// ```
    pub fn collect<V: ArrayElement>(self, column: Column<C, V>, order: Order<C>) -> Expr<P, Vec<V>> {
        let (order, descending, nulls_first) = order.into_parts();
        self.aggregate(
            Condition::all([]),
            Gather::Array { column: column.name(), order: Box::new(order), descending, nulls_first },
        )
    }

    fn aggregate<V>(self, condition: Condition<C>, gather: Gather) -> Expr<P, V> {
        let subquery = Correlated::new(C::META, self.column_names(), parent_key_columns::<P>(), condition);
        Expr::from_node(ExprNode::Correlated { subquery: SharedCorrelated(std::sync::Arc::new(subquery)), gather })
    }
}

//! [`Query::distinct_values`]: the distinct values of an indexed column,
//! found by walking its index one value at a time instead of reading every
//! row.
//!
//! `SELECT DISTINCT tag FROM article_tags` reads every row of the table
//! and hashes or sorts them all, however few values they hold: its cost
//! grows with the rows. A B-tree index on the column already holds the
//! values in order, so the next value after `v` is one descent of the
//! index (`WHERE tag > v ORDER BY tag LIMIT 1`). PostgreSQL 15 does not
//! make that walk itself (a "loose index scan"); a recursive query does,
//! one step per distinct value, so its cost grows with the values instead
//! of the rows.

use crate::column::Column;
use crate::connection::Access;
use crate::entity::Entity;
use crate::error::Result;
use crate::expr::ExprNode;
use crate::load_together::Load;
use crate::query::{Built, Query};
use crate::sql;
use crate::types::{param_refs, ColumnType};

impl<E: Entity> Query<'_, E> {
    /// The distinct non-NULL values of `column` among the matching rows, in
    /// ascending order, read from an index on the column one value at a
    /// time: as many index descents as there are values, however many rows
    /// hold them. The tags in use over thousands of tagged articles, the
    /// countries of a million customers.
    ///
    /// Use it where the column has a B-tree index whose first column it is
    /// (a primary key's, a unique constraint's, or `CREATE INDEX ... (column)`)
    /// and the rows far outnumber the values: against `SELECT DISTINCT`,
    /// which reads every row, a table of 8,000 rows holding 22 values
    /// answers in a sixth of the time, and the gap grows with the rows; at
    /// 9,700 rows holding 262 values (37 rows a value) the two cost about
    /// the same. Without such an index every step reads the table, and
    /// where most values are distinct a step per value costs more than one
    /// pass: there, [`select`](Self::select) the column with
    /// [`distinct`](crate::Select::distinct).
    ///
    /// The query's filters apply (its global filters too), and its
    /// [`limit`](Self::limit) and [`offset`](Self::offset) count values:
    /// `limit(10)` stops the walk after ten values. The values come in the
    /// column's own order, so the query's order is not used; nor is a row
    /// lock or `DISTINCT ON`.
    ///
    /// ```
    /// # use orm_core::{Database, Entity};
    /// #[derive(Entity, Clone, Debug, PartialEq)]
    /// struct ArticleTag {
    ///     #[orm(primary_key)]
    ///     article_id: i64,
    ///     #[orm(primary_key)]
    ///     tag: String,
    /// }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE article_tag (article_id bigint, tag text, PRIMARY KEY (article_id, tag));
    /// #     CREATE INDEX article_tag_tag ON article_tag (tag);
    /// #     INSERT INTO article_tag SELECT n, 'tag' || n % 3 FROM generate_series(1, 1000) AS n").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let tags = session.query::<ArticleTag>().distinct_values(ArticleTag::TAG).await?;
    /// assert_eq!(tags, ["tag0", "tag1", "tag2"]);
    ///
    /// let recent = session
    ///     .query::<ArticleTag>()
    ///     .filter(ArticleTag::ARTICLE_ID.gt(998))
    ///     .distinct_values(ArticleTag::TAG)
    ///     .await?;
    /// assert_eq!(recent, ["tag0", "tag1"]); // articles 999 and 1000
    /// # Ok(()) }
    /// ```
    pub async fn distinct_values<V: ColumnType>(mut self, column: Column<E, V>) -> Result<Vec<V>> {
        self.session.autoflush_for_query().await?;
        let built = self.distinct_values_statement(column);
        self.session.record_load(&built.sql)?;
        let rows = self.session.rows(&built.sql, &param_refs(&built.params), Access::Read).await?;
        rows.iter().map(|row| V::decode_column(row, 0, E::META.name, column.name())).collect()
    }

    /// [`distinct_values`](Self::distinct_values) as a [`Load`], to run
    /// with other loads in one round trip by
    /// [`Session::load_together`](crate::Session::load_together).
    pub fn distinct_values_later<V: ColumnType + 'static>(mut self, column: Column<E, V>) -> Load<Vec<V>> {
        let built = self.distinct_values_statement(column);
        Load::of_statement(built.sql, built.params, Access::Read, move |_, rows| {
            rows.iter().map(|row| V::decode_column(row, 0, E::META.name, column.name())).collect()
        })
    }

    /// The recursive statement of [`distinct_values`](Self::distinct_values):
    /// its first step finds the smallest value, each next step the smallest
    /// one above the last, both through the index, until a step finds none.
    fn distinct_values_statement<V: ColumnType>(&mut self, column: Column<E, V>) -> Built {
        let page = self.take_page();
        let mut column_sql = String::new();
        ExprNode::Column(column.name()).render("t", &mut column_sql, &mut Vec::new());
        let mut from = String::from("SELECT ");
        from.push_str(&column_sql);
        from.push_str(" FROM ");
        sql::push_quoted(&mut from, E::META.table);
        from.push_str(" AS t");
        let built = self.build_clauses(from.clone(), Vec::new(), &[], None);
        let condition = built.filter_condition().map(str::to_owned);
        let mut params = built.params;
        // The filter's placeholders are written into both steps: they name
        // the same parameters, sent once.
        let step = |sql: &mut String, bound: &str| {
            sql.push_str(&from);
            sql.push_str(" WHERE ");
            if let Some(condition) = &condition {
                sql.push('(');
                sql.push_str(condition);
                sql.push_str(") AND ");
            }
            sql.push_str(&column_sql);
            sql.push_str(bound);
            sql.push_str(" ORDER BY ");
            sql.push_str(&column_sql);
            sql.push_str(" LIMIT 1");
        };
        let mut sql = String::from("WITH RECURSIVE orm_walk(value) AS ((");
        step(&mut sql, " IS NOT NULL");
        sql.push_str(") UNION ALL SELECT (");
        step(&mut sql, " > orm_walk.value");
        sql.push_str(
            ") FROM orm_walk WHERE orm_walk.value IS NOT NULL) SELECT value FROM orm_walk WHERE value IS NOT NULL",
        );
        page.render(&mut sql, &mut params);
        Built::new(sql, params)
    }
}

//! [`Query`]: loading entities with a typed filter, order, limit and offset.

use std::ops::Range;

use crate::column::{Condition, Order};
use crate::connection::Access;
use crate::entity::Entity;
use crate::error::{Error, Result};
use crate::expr::{ExprNode, IntoExpr};
use crate::filters::Lift;
use crate::load_together::{prepared, Load, Prepare};
use crate::relation_loading::decode;
use crate::select::{Select, Selection};
use crate::session::Session;
use crate::sql;
use crate::statement_mode::ResultColumns;
use crate::stream::{EntityStream, TrackedChunks};
use crate::tracked::Tracked;
use crate::types::{param_refs, Param};

/// A query over entity `E`, started with [`Session::query`].
///
/// ```
/// # use orm_core::{Database, Entity, Error};
/// # #[derive(Entity, Clone, Debug, PartialEq)]
/// # struct Customer { #[orm(primary_key, generated)] id: i64, name: String, city: Option<String> }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
/// # let test_db = orm_tests::TestDb::new().await;
/// # test_db.client().await.batch_execute("CREATE TABLE customer (id bigserial PRIMARY KEY, name text NOT NULL, city text);
/// #     INSERT INTO customer (name, city) VALUES ('Alice', 'Paris'), ('Bob', NULL), ('Anna', 'Paris'), ('Abe', 'Rome')").await?;
/// # let db = Database::connect(test_db.url())?;
/// let mut session = db.session();
// SELECT ... FROM "customer" AS t WHERE (t."name" LIKE $1 AND t."id" > $2)
/// //     ORDER BY t."name" LIMIT $3 OFFSET $4
/// let page = session
///     .query::<Customer>()
///     .filter(Customer::NAME.like("A%").and(Customer::ID.gt(1)))
///     .order_by(Customer::NAME.asc())
///     .limit(20)
///     .offset(1)
///     .all()
///     .await?;
/// assert_eq!(page.len(), 1);
/// assert_eq!(page[0].read().name, "Anna"); // after "Abe"
///
/// let parisians = session.query::<Customer>().filter(Customer::CITY.eq("Paris"));
/// assert_eq!(parisians.count().await?, 2);
/// assert!(session.query::<Customer>().filter(Customer::CITY.eq("Rome")).exists().await?);
/// let first = session.query::<Customer>().order_by(Customer::ID.desc()).first().await?;
/// assert_eq!(first.map(|abe| abe.key()), Some(4));
/// # Ok(()) }
/// ```
///
/// Tracked results go through the identity map: a row whose key the session
/// already tracks comes back as that instance, with its pending changes
/// intact. [`untracked`](Self::untracked) skips the map for large read-only loads.
#[must_use = "a query does nothing until it is run with all(), first(), one(), optional(), count() or exists()"]
pub struct Query<'s, E: Entity> {
    pub(crate) session: &'s mut Session,
    filter: Option<Condition<E>>,
    order: Vec<Order<E>>,
    limit: Option<i64>,
    offset: Option<i64>,
    /// `DISTINCT` (empty) or `DISTINCT ON (...)`.
    distinct: Option<Vec<ExprNode>>,
    /// The `DISTINCT ON` expressions as rendered, which an ORDER BY term
    /// sorting by one of them repeats word for word: rendered again, a
    /// value in it would get a parameter of its own, and PostgreSQL would
    /// refuse the order as not starting with the `DISTINCT ON` expressions.
    distinct_sql: Vec<(ExprNode, String)>,
    lock: Option<RowLock>,
    /// The global filters this query lifts.
    lift: Lift,
}

/// A row-locking clause: `FOR UPDATE` or `FOR SHARE`, and what to do with
/// rows another transaction has locked.
#[derive(Clone, Copy)]
struct RowLock {
    strength: &'static str,
    wait: &'static str,
}

/// A query whose results bypass the identity map, made by [`Query::untracked`].
#[must_use = "a query does nothing until it is run with all(), first(), one() or optional()"]
pub struct UntrackedQuery<'s, E: Entity> {
    pub(crate) query: Query<'s, E>,
}

impl<'s, E: Entity> Query<'s, E> {
    pub(crate) fn new(session: &'s mut Session) -> Self {
        Query {
            session,
            filter: None,
            order: Vec::new(),
            limit: None,
            offset: None,
            distinct: None,
            distinct_sql: Vec::new(),
            lock: None,
            lift: Lift::default(),
        }
    }

    /// Loads soft-deleted rows too: this query only, for an admin view of
    /// the bin, a restore, or a purge job. Without it, a query of an entity
    /// with an `#[orm(soft_delete)]` marker keeps only rows whose marker is
    /// NULL, as do [`Session::get`], relation loads, joins (for both
    /// entities), counts, projections and set-based updates and deletes.
    ///
    /// ```
    /// # use orm_core::{Database, Entity};
    /// #[derive(Entity, Clone, Debug, PartialEq)]
    /// struct Note {
    ///     #[orm(primary_key, generated)]
    ///     id: i64,
    ///     text: String,
    ///     #[orm(soft_delete)]
    ///     deleted_at: Option<chrono::DateTime<chrono::Utc>>,
    /// }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE note (id bigserial PRIMARY KEY, text text NOT NULL, deleted_at timestamptz);
    /// #     INSERT INTO note (text) VALUES ('keep'), ('bin')").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let bin = session.get_one::<Note>(2).await?;
    /// session.delete(&bin)?; // UPDATE note SET deleted_at = now() ...
    /// session.flush().await?;
    /// assert_eq!(session.query::<Note>().count().await?, 1);
    /// assert_eq!(session.query::<Note>().include_deleted().count().await?, 2);
    /// # Ok(()) }
    /// ```
    pub fn include_deleted(mut self) -> Self {
        self.lift.deleted = true;
        self
    }

    /// Loads the rows of every tenant, in a session opened for one
    /// ([`Database::session_for_tenant`](crate::Database::session_for_tenant)):
    /// this query only, for a report across tenants. The session still
    /// refuses to write another tenant's rows it loads this way, and a
    /// set-based [`update`](Self::update), [`delete`](Self::delete) or
    /// [`purge`](Self::purge) of this query is refused with
    /// [`Error::WrongTenant`](crate::Error::WrongTenant), as is an update
    /// that sets the tenant column.
    pub fn all_tenants(mut self) -> Self {
        self.lift.tenants = true;
        self
    }

    /// The global filters this query lifts.
    pub(crate) fn lift(&self) -> Lift {
        self.lift
    }

    /// Keeps the query's own soft-deleted rows out, whatever
    /// [`include_deleted`](Self::include_deleted) said (which still lets
    /// conditions on related tables see theirs): for a soft delete, which
    /// leaves the rows already in the bin as they are.
    pub(crate) fn live_rows_only(&mut self) {
        if let Some(marker) = E::META.soft_delete_column().filter(|_| self.lift.deleted) {
            self.push_filter(Condition::null_expr(ExprNode::Column(E::META.columns[marker].name), false));
        }
    }

    /// Makes the row lock, if any, `FOR UPDATE`: the lock of the rows a
    /// write picks in a sub-select. A share lock there would let two
    /// writers pick the same rows and deadlock taking them over.
    pub(crate) fn lock_for_write(&mut self) {
        if let Some(lock) = &mut self.lock {
            lock.strength = " FOR UPDATE";
        }
    }

    /// Returns each distinct row once (`SELECT DISTINCT`): for projections,
    /// see [`Select::distinct`](crate::Select::distinct); whole entities
    /// differ by their keys anyway.
    pub fn distinct(mut self) -> Self {
        self.distinct = Some(Vec::new());
        self
    }

    /// Keeps the first row of each group of rows equal in `expr`
    /// (`SELECT DISTINCT ON (expr)`), first by the query's order, which
    /// must start with `expr`: the latest post of each author, say. An
    /// expression holding a value (`coalesce(note, 'none')`) is the same
    /// in the order when it is a clone of this one.
    ///
    /// ```
    /// # use orm_core::{Database, Entity, Tracked};
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # struct Post { #[orm(primary_key, generated)] id: i64, author: String, title: String }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE post (id bigserial PRIMARY KEY, author text NOT NULL, title text NOT NULL);
    /// #     INSERT INTO post (author, title) VALUES ('ann', 'one'), ('bob', 'two'), ('ann', 'three')").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let latest = session
    ///     .query::<Post>()
    ///     .distinct_on(Post::AUTHOR)
    ///     .order_by(Post::AUTHOR.asc())
    ///     .order_by(Post::ID.desc())
    ///     .all()
    ///     .await?;
    /// let titles: Vec<String> = latest.iter().map(|p| p.read().title.clone()).collect();
    /// assert_eq!(titles, ["three", "two"]);
    /// # Ok(()) }
    /// ```
    pub fn distinct_on<V>(mut self, expr: impl IntoExpr<E, V>) -> Self {
        self.distinct.get_or_insert_with(Vec::new).push(expr.into_expr().node);
        self
    }

    /// Locks the rows it returns until the transaction ends (`FOR UPDATE`):
    /// another transaction that wants to change or lock them waits. The
    /// query runs inside the session's transaction, opening it if needed.
    /// Only the query's own entities are locked: the parents a
    /// [`join`](Self::join) returns beside them are read, not locked.
    pub fn for_update(mut self) -> Self {
        self.lock = Some(RowLock { strength: " FOR UPDATE", wait: "" });
        self
    }

    /// Locks the rows it returns against changes, not against other
    /// readers that lock them the same way (`FOR SHARE`).
    pub fn for_share(mut self) -> Self {
        self.lock = Some(RowLock { strength: " FOR SHARE", wait: "" });
        self
    }

    /// With [`for_update`](Self::for_update) or [`for_share`](Self::for_share):
    /// skips rows another transaction has locked instead of waiting for
    /// them (`SKIP LOCKED`), which is how several workers take jobs from
    /// one table without taking the same job twice.
    pub fn skip_locked(mut self) -> Self {
        self.lock = Some(RowLock {
            wait: " SKIP LOCKED",
            ..self.lock.unwrap_or(RowLock { strength: " FOR UPDATE", wait: "" })
        });
        self
    }

    /// With [`for_update`](Self::for_update) or [`for_share`](Self::for_share):
    /// fails at once if a row is locked (`NOWAIT`), with a
    /// [`Error::Database`] of SQLSTATE `55P03`, instead of waiting.
    pub fn nowait(mut self) -> Self {
        self.lock =
            Some(RowLock { wait: " NOWAIT", ..self.lock.unwrap_or(RowLock { strength: " FOR UPDATE", wait: "" }) });
        self
    }

    /// Deletes every matching row with one statement, without loading
    /// them, and returns how many it deleted. It autoflushes first; the
    /// session's instances of the deleted rows leave it, as after a
    /// flushed delete (a rolled-back savepoint brings them back). Cascades
    /// are the database's (`ON DELETE CASCADE`): the session does not know
    /// the children of rows it never loaded. With a limit, offset, order or
    /// a lock that skips locked rows or does not wait for them, the rows
    /// are picked by key in a sub-select. An entity with an
    /// `#[orm(soft_delete)]` marker has it set, on live rows only (rows
    /// already in the bin keep theirs, [`include_deleted`](Self::include_deleted)
    /// or not).
    ///
    /// ```
    /// # use orm_core::{Database, Entity};
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # struct Item { #[orm(primary_key, generated)] id: i64, name: String, stock: i32 }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE item (id bigserial PRIMARY KEY, name text NOT NULL, stock int NOT NULL);
    /// #     INSERT INTO item (name, stock) VALUES ('tea', 0), ('jam', 3), ('honey', 0)").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let tea = session.get_one::<Item>(1).await?;
    /// let deleted = session.query::<Item>().filter(Item::STOCK.eq(0)).delete().await?;
    /// assert_eq!(deleted, 2);
    /// assert!(session.get::<Item>(1).await?.is_none()); // tea left the session
    ///
    /// let restocked = session.query::<Item>().update([Item::STOCK.set(Item::STOCK + 10)]).await?;
    /// assert_eq!(restocked, 1);
    /// session.commit().await?;
    /// # drop(tea);
    /// # Ok(()) }
    /// ```
    pub async fn delete(self) -> Result<u64> {
        crate::bulk::delete(self, false).await
    }

    /// Deletes every matching row for good (`DELETE`), as
    /// [`delete`](Self::delete) does, also for an entity with an
    /// `#[orm(soft_delete)]` marker, whose `delete` only sets the marker:
    /// for a job that empties the bin. The filters still apply, so a
    /// purge of soft-deleted rows lifts that one:
    /// `query().include_deleted().filter(Note::DELETED_AT.lt(cutoff)).purge()`.
    pub async fn purge(self) -> Result<u64> {
        crate::bulk::delete(self, true).await
    }

    /// Updates every matching row with one statement (`UPDATE ... SET ...
    /// WHERE ...`), without loading them, and returns how many it updated.
    /// It autoflushes first; instances the session tracks are refreshed
    /// with the rows' new values (unflushed changes on one of them, possible
    /// only with autoflush off, are [`Error::UnflushedChanges`], after the
    /// statement ran: roll back). A version column advances on every row,
    /// so that other sessions holding the old version see the change. With
    /// a limit, offset, order or a lock that skips locked rows or does not
    /// wait for them, the rows are picked by key in a sub-select. Setting a
    /// key column is [`Error::PrimaryKeyChanged`], before anything is sent,
    /// as in a flush: keys identify the rows the session tracks.
    pub async fn update(self, assignments: impl IntoIterator<Item = crate::bulk::Assignment<E>>) -> Result<u64> {
        crate::bulk::update(self, assignments).await
    }

    /// Selects expressions instead of whole entities: a column, an
    /// [`Expr`](crate::Expr), or a tuple of them, decoded into their Rust
    /// types and not tracked. With aggregates it can
    /// [`group_by`](crate::Select::group_by) and
    /// [`having`](crate::Select::having).
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
    /// let titles: Vec<(i64, String)> =
    ///     session.query::<Book>().select((Book::ID, Book::TITLE)).order_by(Book::ID.asc()).all().await?;
    /// assert_eq!(titles[0], (1, "Emma".to_owned()));
    ///
    /// // Books and pages per author, for authors with more than one book.
    /// let per_author: Vec<(String, i64, Option<i64>)> = session
    ///     .query::<Book>()
    ///     .select((Book::AUTHOR, Book::ID.count(), Book::PAGES.sum()))
    ///     .group_by(Book::AUTHOR)
    ///     .having(Book::ID.count().gt(1))
    ///     .all()
    ///     .await?;
    /// assert_eq!(per_author, [("Austen".to_owned(), 2, Some(723))]);
    /// # Ok(()) }
    /// ```
    pub fn select<S: Selection<E>>(self, selection: S) -> Select<'s, E, S> {
        Select::new(self, selection)
    }

    /// Keeps rows matching `condition`; several filters must all match.
    pub fn filter(mut self, condition: Condition<E>) -> Self {
        self.push_filter(condition);
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

    /// Loads plain values that the session does not track: no identity
    /// map, no snapshot, nothing to flush. For large read-only loads (a
    /// report, an export), which it makes cheaper.
    ///
    /// ```
    /// # use orm_core::{Database, Entity, Error};
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # struct Customer { #[orm(primary_key, generated)] id: i64, name: String, city: Option<String> }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE customer (id bigserial PRIMARY KEY, name text NOT NULL, city text);
    /// #     INSERT INTO customer (name, city) VALUES ('Alice', 'Paris'), ('Bob', NULL), ('Anna', 'Paris'), ('Abe', 'Rome')").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let rows: Vec<Customer> = session.query::<Customer>().order_by(Customer::ID.asc()).untracked().all().await?;
    /// assert_eq!(rows[1], Customer { id: 2, name: "Bob".into(), city: None });
    /// assert!(session.get::<Customer>(2).await?.is_some()); // not tracked: loaded again
    /// assert_eq!(session.stats().statements, 2);
    /// # Ok(()) }
    /// ```
    pub fn untracked(self) -> UntrackedQuery<'s, E> {
        UntrackedQuery { query: self }
    }

    /// Builds the statement over `select` (`SELECT <list> FROM <table> AS
    /// t`): only the shape of the query is in the text, every value is a
    /// parameter.
    fn build(&mut self, select: &str) -> Built {
        let mut sql = String::with_capacity(select.len() + 64);
        let mut params = Vec::new();
        match select.strip_prefix("SELECT ") {
            Some(rest) if self.distinct.is_some() => {
                sql.push_str("SELECT ");
                self.render_select_prefix(&mut sql, &mut params);
                sql.push_str(rest);
            }
            _ => sql.push_str(select),
        }
        self.build_clauses(sql, params, &[], None)
    }

    /// Appends WHERE, GROUP BY, HAVING, ORDER BY, LIMIT, OFFSET and the row
    /// lock to a statement's `SELECT ... FROM ...` part.
    pub(crate) fn build_clauses(
        &mut self,
        mut sql: String,
        mut params: Vec<Param>,
        group_by: &[ExprNode],
        having: Option<Condition<E>>,
    ) -> Built {
        if let Some(global) = self.session.filters.condition::<E>(self.lift) {
            self.push_filter(global);
        }
        let filter_start = sql.len();
        let (filters, lift) = (&self.session.filters, self.lift);
        let related = |meta| filters.condition_of(meta, lift);
        if let Some(filter) = self.filter.take() {
            let filter = filter.with_related_filters(&related);
            sql.push_str(" WHERE ");
            filter.render(&mut sql, &mut params);
        }
        let filter = filter_start..sql.len();
        for (n, node) in group_by.iter().enumerate() {
            sql.push_str(if n == 0 { " GROUP BY " } else { ", " });
            node.with_related_filters(&related).render("t", &mut sql, &mut params);
        }
        if let Some(having) = having {
            sql.push_str(" HAVING ");
            having.with_related_filters(&related).render(&mut sql, &mut params);
        }
        for (n, order) in self.order.iter().enumerate() {
            sql.push_str(if n == 0 { " ORDER BY " } else { ", " });
            if let Some((_, rendered)) = self.distinct_sql.iter().find(|(node, _)| node == order.node()) {
                sql.push_str(rendered);
            } else {
                order.node().with_related_filters(&related).render("t", &mut sql, &mut params);
            }
            order.render_direction(&mut sql);
        }
        Page { limit: self.limit, offset: self.offset }.render(&mut sql, &mut params);
        if let Some(lock) = self.lock {
            sql.push_str(lock.strength);
            // The query's own rows only: a join's parents are read, not
            // locked (and a left join's missing ones cannot be).
            sql.push_str(" OF t");
            sql.push_str(lock.wait);
        }
        Built { sql, params, filter }
    }

    /// `node` with the global filters of every other table it reaches (see
    /// [`ExprNode::with_related_filters`]), for a selected expression.
    pub(crate) fn with_related_filters(&self, node: &ExprNode) -> ExprNode {
        let (filters, lift) = (&self.session.filters, self.lift);
        node.with_related_filters(&|meta| filters.condition_of(meta, lift))
    }

    /// How the statement reaches the database: a locking read needs the
    /// transaction.
    pub(crate) fn access(&self) -> Access {
        if self.lock.is_some() {
            Access::Lock
        } else {
            Access::Read
        }
    }

    /// The part of `SELECT` before the list: `DISTINCT [ON (...)] `, if any.
    pub(crate) fn render_select_prefix(&mut self, sql: &mut String, params: &mut Vec<Param>) {
        let Some(on) = &self.distinct else { return };
        sql.push_str("DISTINCT ");
        if on.is_empty() {
            return;
        }
        sql.push_str("ON (");
        let mut rendered = Vec::with_capacity(on.len());
        for (n, node) in on.iter().enumerate() {
            if n > 0 {
                sql.push_str(", ");
            }
            let start = sql.len();
            self.with_related_filters(node).render("t", sql, params);
            rendered.push((node.clone(), sql[start..].to_owned()));
        }
        sql.push_str(") ");
        self.distinct_sql = rendered;
    }

    /// Replaces each `DISTINCT ON` expression.
    pub(crate) fn map_distinct(&mut self, map: impl Fn(&ExprNode) -> ExprNode) {
        for node in self.distinct.iter_mut().flatten() {
            *node = map(node);
        }
    }

    /// Asks for `DISTINCT` rows (for [`Select`]); `DISTINCT ON`
    /// expressions already named stay, as they return distinct rows too.
    pub(crate) fn set_distinct(&mut self) {
        self.distinct.get_or_insert_with(Vec::new);
    }

    /// Adds a filter, as [`filter`](Self::filter) does, in place.
    pub(crate) fn push_filter(&mut self, condition: Condition<E>) {
        self.filter = Some(match self.filter.take() {
            Some(existing) => existing.and(condition),
            None => condition,
        });
    }

    /// Adds an order term in place.
    pub(crate) fn push_order(&mut self, order: Order<E>) {
        self.order.push(order);
    }

    /// The limit, or `default` without one.
    pub(crate) fn limit_or(&self, default: i64) -> i64 {
        self.limit.unwrap_or(default)
    }

    /// Replaces the expression of each order term.
    pub(crate) fn map_order(&mut self, map: impl Fn(&ExprNode) -> ExprNode) {
        for order in &mut self.order {
            order.map_node(&map);
        }
    }

    /// Sets the limit in place.
    pub(crate) fn set_limit(&mut self, count: i64) {
        self.limit = Some(count);
    }

    /// Whether a set-based `UPDATE` or `DELETE` must pick its rows by key
    /// in a sub-select: a limit, offset, order or `DISTINCT ON` narrows
    /// them, or a row lock says what to do with rows another transaction
    /// holds (`SKIP LOCKED`, `NOWAIT`), which picks them rather than only
    /// locking them.
    pub(crate) fn picks_rows_by_key(&self) -> bool {
        let lock_picks = self.lock.as_ref().is_some_and(|lock| !lock.wait.is_empty());
        self.limit.is_some() || self.offset.is_some() || !self.order.is_empty() || self.has_distinct_on() || lock_picks
    }

    /// Whether the query keeps one row per value of `DISTINCT ON`
    /// expressions (a plain `DISTINCT` keeps every entity's row: their
    /// keys differ).
    pub(crate) fn has_distinct_on(&self) -> bool {
        self.distinct.as_ref().is_some_and(|on| !on.is_empty())
    }

    /// Takes the limit and offset out, and drops the order, `DISTINCT` and
    /// row lock: for a statement that orders and pages a result of its own
    /// ([`distinct_values`](Self::distinct_values)) around the query's
    /// filter.
    pub(crate) fn take_page(&mut self) -> Page {
        self.order.clear();
        self.distinct = None;
        self.lock = None;
        Page { limit: self.limit.take(), offset: self.offset.take() }
    }

    /// Drops the row lock, if any.
    pub(crate) fn take_lock(&mut self) {
        self.lock = None;
    }

    /// Sets the offset in place.
    pub(crate) fn set_offset(&mut self, count: i64) {
        self.offset = Some(count);
    }

    /// Runs the query and returns the matching entities, tracked.
    pub async fn all(mut self) -> Result<Vec<Tracked<E>>> {
        self.session.autoflush_for_query().await?;
        let built = self.build(sql::select_from_of::<E>());
        let access = self.access();
        self.session.load_with::<E>(&built.sql, &param_refs(&built.params), access).await
    }

    /// Runs the query and hands over its entities one at a time as the rows
    /// arrive, untracked, with memory bounded by a row rather than by the
    /// result: for exports and reports over many rows. See [`EntityStream`].
    pub async fn stream(mut self) -> Result<EntityStream<'s, E>> {
        self.session.autoflush_for_query().await?;
        let built = self.build(sql::select_from_of::<E>());
        let access = self.access();
        EntityStream::open(self.session, &built, access).await
    }

    /// Runs the query through a server-side cursor and hands over its
    /// entities in tracked chunks of `chunk_size` (at least 1), flushing
    /// and letting the previous chunk go before each next one: for batch
    /// jobs that change many rows. See [`TrackedChunks`].
    pub async fn stream_tracked(mut self, chunk_size: usize) -> Result<TrackedChunks<'s, E>> {
        self.session.autoflush_for_query().await?;
        let built = self.build(sql::select_from_of::<E>());
        TrackedChunks::declare(self.session, &built, chunk_size).await
    }

    /// Runs the query with `LIMIT 1` and returns the first entity, if any.
    pub async fn first(self) -> Result<Option<Tracked<E>>> {
        Ok(self.limit(1).all().await?.pop())
    }

    /// Runs the query and returns its only entity: [`Error::NotFound`] when
    /// no row matches, [`Error::MultipleRows`] when more than one does.
    ///
    /// It reads at most two rows (`LIMIT 2`), however many match; the entity
    /// is tracked only when it is the only one.
    ///
    /// ```
    /// # use orm_core::{Database, Entity, Error};
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # struct Customer { #[orm(primary_key, generated)] id: i64, name: String, city: Option<String> }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE customer (id bigserial PRIMARY KEY, name text NOT NULL, city text);
    /// #     INSERT INTO customer (name, city) VALUES ('Alice', 'Paris'), ('Bob', NULL), ('Anna', 'Paris'), ('Abe', 'Rome')").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let bob = session.query::<Customer>().filter(Customer::NAME.eq("Bob")).one().await?;
    /// assert_eq!(bob.key(), 2);
    ///
    /// let nobody = session.query::<Customer>().filter(Customer::NAME.eq("Zoe")).one().await;
    /// assert!(matches!(nobody, Err(Error::NotFound { entity: "Customer", .. })));
    /// let parisians = session.query::<Customer>().filter(Customer::CITY.eq("Paris")).one().await;
    /// assert!(matches!(parisians, Err(Error::MultipleRows { entity: "Customer" })));
    /// # Ok(()) }
    /// ```
    pub async fn one(self) -> Result<Tracked<E>> {
        let (rows, session, filter) = self.at_most_two().await?;
        let entity = only(rows)?.ok_or(Error::NotFound { entity: E::META.name, key: filter })?;
        Ok(session.attach(entity))
    }

    /// Runs the query and returns its only entity, or `None` when no row
    /// matches; [`Error::MultipleRows`] when more than one does. Reads at
    /// most two rows, like [`one`](Self::one).
    pub async fn optional(self) -> Result<Option<Tracked<E>>> {
        let (rows, session, _) = self.at_most_two().await?;
        Ok(only(rows)?.map(|entity| session.attach(entity)))
    }

    /// Whether any row matches, as `SELECT EXISTS (SELECT 1 FROM ... WHERE ...)`:
    /// the server stops at the first match and sends back one boolean. Limit
    /// and offset are kept (`offset(10).exists()` asks whether there is an
    /// 11th row); the order is dropped.
    pub async fn exists(mut self) -> Result<bool> {
        self.session.autoflush_for_query().await?;
        self.order.clear();
        self.distinct = None;
        self.lock = None;
        let select = format!("SELECT EXISTS (SELECT 1 FROM {} AS t", sql::quote_ident(E::META.table));
        let mut built = self.build(&select);
        built.sql.push(')');
        self.session.record_load(&built.sql)?;
        let rows = self.session.rows(&built.sql, &param_refs(&built.params), Access::Read).await?;
        rows.first().map_or(Ok(false), |row| row.try_get(0).map_err(Error::from))
    }

    /// Counts the matching rows (ignoring order, limit and offset; with
    /// [`distinct_on`](Self::distinct_on), the rows it keeps).
    pub async fn count(mut self) -> Result<i64> {
        self.session.autoflush_for_query().await?;
        let built = self.count_statement();
        self.session.record_load(&built.sql)?;
        let rows = self.session.rows(&built.sql, &param_refs(&built.params), Access::Read).await?;
        first_count(&rows)
    }

    /// [`all`](Self::all) as a [`Load`], to run with other loads in one
    /// round trip by [`Session::load_together`]: the matching entities,
    /// tracked.
    pub fn all_later(mut self) -> Load<Vec<Tracked<E>>> {
        let built = self.build(sql::select_from_of::<E>());
        let access = self.access();
        let prepare: Prepare = Box::new(|session, rows| {
            Box::pin(async move {
                let found = decode::<E>(&rows).await?;
                Ok(prepared(session.registries.of::<E>().track_all(found).await))
            })
        });
        Load::of_statement_yielding(built.sql, built.params, access, prepare, |_, tracked| Ok(tracked))
    }

    /// [`count`](Self::count) as a [`Load`], to run with other loads in
    /// one round trip by [`Session::load_together`]: a page's total beside
    /// the page, say.
    pub fn count_later(mut self) -> Load<i64> {
        let built = self.count_statement();
        Load::of_statement(built.sql, built.params, Access::Read, |_, rows| first_count(&rows))
    }

    /// The statement of [`count`](Self::count).
    fn count_statement(&mut self) -> Built {
        self.limit = None;
        self.offset = None;
        self.lock = None;
        if self.distinct.as_ref().is_some_and(|on| !on.is_empty()) {
            // DISTINCT ON keeps one row per group: count those rows.
            let mut inner = self.build(&format!("SELECT t.* FROM {} AS t", sql::quote_ident(E::META.table)));
            inner.sql = format!("SELECT count(*) FROM ({}) AS kept", inner.sql);
            inner
        } else {
            self.order.clear();
            self.distinct = None;
            let mut head = String::from("SELECT count(*) FROM ");
            sql::push_quoted(&mut head, E::META.table);
            head.push_str(" AS t");
            self.build(&head)
        }
    }

    /// Loads at most two matching rows, untracked, for [`one`](Self::one)
    /// and [`optional`](Self::optional). Returns them with the session and,
    /// when there are none, the `WHERE` clause for [`Error::NotFound`].
    async fn at_most_two(mut self) -> Result<(Vec<E>, &'s mut Session, String)> {
        self.session.autoflush_for_query().await?;
        self.limit = Some(self.limit.map_or(2, |limit| limit.min(2)));
        let built = self.build(sql::select_from_of::<E>());
        let access = self.access();
        let rows: Vec<E> = self.session.load_untracked_with(&built.sql, &param_refs(&built.params), access).await?;
        let filter = if rows.is_empty() { built.filter_text() } else { String::new() };
        Ok((rows, self.session, filter))
    }

    /// Moves the query into one that borrows the session from this one, so
    /// that the session is still at hand after it ran: eager loading
    /// (`eager.rs`) runs its loaders on the same session next.
    pub(crate) fn reborrow(&mut self) -> Query<'_, E> {
        Query {
            session: &mut *self.session,
            filter: self.filter.take(),
            order: std::mem::take(&mut self.order),
            limit: self.limit,
            offset: self.offset,
            distinct: self.distinct.take(),
            distinct_sql: std::mem::take(&mut self.distinct_sql),
            lock: self.lock,
            lift: self.lift,
        }
    }
}

impl<E: Entity> UntrackedQuery<'_, E> {
    /// Runs the query and returns plain values, streaming and decoding rows
    /// as they arrive.
    pub async fn all(mut self) -> Result<Vec<E>> {
        self.query.session.autoflush_for_query().await?;
        let built = self.query.build(sql::select_from_of::<E>());
        let access = self.query.access();
        self.query.session.load_untracked_with(&built.sql, &param_refs(&built.params), access).await
    }

    /// [`all`](Self::all) as a [`Load`], to run with other loads in one
    /// round trip by [`Session::load_together`]: plain values, as `all`
    /// returns them.
    ///
    /// ```
    /// # use orm_core::{Database, Entity};
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # struct Customer { #[orm(primary_key, generated)] id: i64, name: String }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE customer (id bigserial PRIMARY KEY, name text NOT NULL);
    /// #     INSERT INTO customer (name) VALUES ('Alice'), ('Bob'), ('Carol')").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let page = session.query::<Customer>().order_by(Customer::ID.asc()).limit(2).untracked().all_later();
    /// let total = session.query::<Customer>().count_later();
    /// let (page, total) = session.load_together((page, total)).await?;
    /// assert_eq!((page[1].name.as_str(), total), ("Bob", 3));
    /// assert_eq!(session.stats().statements, 2); // sent together
    /// # Ok(()) }
    /// ```
    pub fn all_later(mut self) -> Load<Vec<E>> {
        let built = self.query.build(sql::select_from_of::<E>());
        let access = self.query.access();
        let prepare: Prepare = Box::new(|_, rows| Box::pin(async move { Ok(prepared(decode::<E>(&rows).await?)) }));
        Load::of_statement_yielding(built.sql, built.params, access, prepare, |_, found| Ok(found))
    }

    /// Runs the query with `LIMIT 1` and returns the first value, if any.
    pub async fn first(self) -> Result<Option<E>> {
        Ok(self.query.limit(1).untracked().all().await?.pop())
    }

    /// Runs the query and returns its only value, as [`Query::one`] does.
    pub async fn one(self) -> Result<E> {
        let (rows, _, filter) = self.query.at_most_two().await?;
        only(rows)?.ok_or(Error::NotFound { entity: E::META.name, key: filter })
    }

    /// Runs the query and returns its only value or `None`, as
    /// [`Query::optional`] does.
    pub async fn optional(self) -> Result<Option<E>> {
        let (rows, _, _) = self.query.at_most_two().await?;
        only(rows)
    }
}

/// A statement built from a query.
pub(crate) struct Built {
    pub(crate) sql: String,
    pub(crate) params: Vec<Param>,
    /// Where ` WHERE ...` is in `sql` (empty without a filter).
    filter: Range<usize>,
}

/// A query's `LIMIT` and `OFFSET`, each a parameter.
pub(crate) struct Page {
    limit: Option<i64>,
    offset: Option<i64>,
}

impl Page {
    /// Appends ` LIMIT $n OFFSET $m`, each part only if set.
    pub(crate) fn render(self, sql: &mut String, params: &mut Vec<Param>) {
        if let Some(limit) = self.limit {
            params.push(Box::new(limit));
            sql.push_str(" LIMIT ");
            sql::push_placeholder(sql, params.len());
        }
        if let Some(offset) = self.offset {
            params.push(Box::new(offset));
            sql.push_str(" OFFSET ");
            sql::push_placeholder(sql, params.len());
        }
    }
}

impl Built {
    /// A statement whose text has no `WHERE` clause of the query's own.
    pub(crate) fn new(sql: String, params: Vec<Param>) -> Self {
        Built { sql, params, filter: 0..0 }
    }

    /// The condition of the `WHERE` clause, values as `$n`, if there is one.
    pub(crate) fn filter_condition(&self) -> Option<&str> {
        self.sql.get(self.filter.clone())?.trim_start().strip_prefix("WHERE ")
    }

    /// The `WHERE` clause, values as `$n`: what [`Error::NotFound`] reports
    /// of a query, which has no key.
    pub(crate) fn filter_text(&self) -> String {
        match self.sql.get(self.filter.clone()).map(str::trim_start) {
            Some(filter) if !filter.is_empty() => filter.to_owned(),
            _ => "(any row)".to_owned(),
        }
    }
}

/// The count in the first row of a `count(*)` result.
fn first_count(rows: &[tokio_postgres::Row]) -> Result<i64> {
    rows.first().map_or(Ok(0), |row| row.try_get(0).map_err(Error::from))
}

/// The row of a result of at most two rows: none, or an error for two.
fn only<E: Entity>(mut rows: Vec<E>) -> Result<Option<E>> {
    match (rows.pop(), rows.is_empty()) {
        (Some(_), false) => Err(Error::MultipleRows { entity: E::META.name }),
        (row, _) => Ok(row),
    }
}

/// Checks that a raw query returns `E`'s columns, named and ordered as in
/// `E::META`, before its rows are decoded by position.
pub(crate) fn check_columns<E: Entity>(found: ResultColumns<'_>) -> Result<()> {
    let expected = E::META.columns;
    if found.len() == expected.len() && found.iter().zip(expected).all(|((found, _), expected)| found == expected.name)
    {
        return Ok(());
    }
    Err(Error::ColumnMismatch {
        entity: E::META.name,
        expected: expected.iter().map(|column| column.name).collect(),
        found: found.iter().map(|(name, _)| name.to_owned()).collect(),
    })
}

/// The filter, order, limit and offset of a builder that wraps a [`Query`]
/// of entity `$entity` in a field `query` ([`Select`], [`Join`](crate::Join),
/// [`EagerQuery`](crate::EagerQuery)), as [`Query`] itself has them.
macro_rules! query_shape {
    ($entity:ident) => {
        /// Keeps rows matching `condition`; several filters must all match.
        pub fn filter(mut self, condition: $crate::Condition<$entity>) -> Self {
            self.query.push_filter(condition);
            self
        }

        /// Sorts by a column or expression; call again for ties.
        pub fn order_by(mut self, order: $crate::Order<$entity>) -> Self {
            self.query.push_order(order);
            self
        }

        /// Returns at most `count` rows.
        pub fn limit(mut self, count: i64) -> Self {
            self.query.set_limit(count);
            self
        }

        /// Skips the first `count` rows.
        pub fn offset(mut self, count: i64) -> Self {
            self.query.set_offset(count);
            self
        }
    };
}

pub(crate) use query_shape;

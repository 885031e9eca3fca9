//! [`Join`]: a query over a child entity that returns each row with its
//! parent through a declared relation, in one statement: both
//! identity-mapped, or both plain values for an
//! [untracked](crate::Query::untracked) query.

use std::any::TypeId;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use smallvec::SmallVec;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::Row;

use crate::column::Condition;
use crate::entity::Entity;
use crate::error::Result;
use crate::expr::ExprNode;
use crate::load_together::{prepared, Load, Prepare};
use crate::poll_budget::for_each_chunk;
use crate::query::{query_shape, Built, Query, UntrackedQuery};
use crate::relation::{parent_key_columns, Relation};
use crate::session::Session;
use crate::sql::{quote_ident, select_list};
use crate::tracked::Tracked;
use crate::types::param_refs;

/// The alias of the joined parent's table in the statement.
const PARENT: &str = "j";

/// A query over child entity `C` joined to its parent `P` through a
/// [`Relation`], made by [`Query::join`] or [`Query::left_join`]. Rows come
/// back as `(Tracked<C>, Tracked<P>)` (inner join) or `(Tracked<C>,
/// Option<Tracked<P>>)` (left join), through the identity map on both
/// sides, from one statement. Made by [`UntrackedQuery::join`] or
/// [`UntrackedQuery::left_join`], rows come back as plain values, `(C, P)`
/// or `(C, Option<P>)`, and the session tracks neither.
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

    /// Runs the statement and returns what `finish` makes of its rows.
    pub(crate) async fn fetch<T>(
        mut self,
        extras: &[ExprNode],
        finish: impl AsyncFnOnce(&mut Session, &[Row]) -> Result<T>,
    ) -> Result<T> {
        self.query.session.autoflush_for_query().await?;
        let built = self.statement(extras);
        let access = self.query.access();
        let session = &mut *self.query.session;
        session.record_load(&built.sql)?;
        let rows = session.rows(&built.sql, &param_refs(&built.params), access).await?;
        finish(session, &rows).await
    }

    /// The statement: the child's columns, whether a parent was joined, the
    /// parent's columns, then the `extras` of [`with`](Self::with).
    fn statement(&mut self, extras: &[ExprNode]) -> Built {
        let (head, list_end) = head(&self.relation, self.left);
        // Room for the clauses that follow.
        let mut sql = String::with_capacity(head.len() + 128);
        let mut params = Vec::new();
        // The query's `DISTINCT [ON (...)]` after the head's `SELECT `, as
        // its own load would have it.
        let list = &head[..list_end];
        sql.push_str("SELECT ");
        self.query.render_select_prefix(&mut sql, &mut params);
        sql.push_str(list.strip_prefix("SELECT ").unwrap_or(list));
        for extra in extras {
            sql.push_str(", ");
            self.query.with_related_filters(extra).render("t", &mut sql, &mut params);
        }
        sql.push_str(&head[list_end..]);
        // The parent's global filters join the ON clause: a hidden parent
        // is no parent (a left join returns the child with `None`).
        if let Some(hidden) = self.query.session.filters.condition::<P>(self.query.lift()) {
            sql.push_str(" AND ");
            Condition::<C>::on_alias(PARENT, hidden).render(&mut sql, &mut params);
        }
        self.query.build_clauses(sql, params, &[], None)
    }

    /// The join as a [`Load`], for
    /// [`Session::load_together`](crate::Session::load_together): `prepare`
    /// decodes its rows, yielding to the runtime, and `complete` makes the
    /// result of what it gave.
    pub(crate) fn later<M: Send + 'static, T: 'static>(
        mut self,
        extras: &[ExprNode],
        prepare: Prepare,
        complete: impl FnOnce(&mut Session, M) -> Result<T> + Send + 'static,
    ) -> Load<T> {
        let built = self.statement(extras);
        let access = self.query.access();
        Load::of_statement_yielding(built.sql, built.params, access, prepare, complete)
    }
}

/// Each row of a join: the child, with its parent if the row joined one.
type JoinedRows<C, P> = Vec<(Tracked<C>, Option<Tracked<P>>)>;

/// Each row of an untracked join: the child, with its parent if the row
/// joined one.
type PlainJoinedRows<C, P> = Vec<(C, Option<P>)>;

/// Which join a [`head`] is of: the child's and the parent's types, the
/// relation (its name and first column, unique among the child's), and
/// whether it is a left join.
type HeadKey = (TypeId, TypeId, &'static str, &'static str, bool);

/// The heads of the program's joins, built once each: a head depends only
/// on the types and the relation, and building it (two column lists, every
/// name quoted) cost about 18,500 instructions a statement in the demo
/// app's pages. A program has as many heads as its code names joins.
static HEADS: OnceLock<RwLock<HashMap<HeadKey, Head, foldhash::fast::RandomState>>> = OnceLock::new();

/// A join's statement up to its `ON` clause, and where its select list
/// ends (where [`Join::with`]'s expressions go).
type Head = (Arc<str>, usize);

/// The statement of a join up to its `ON` clause included: the child's
/// columns, whether a parent was joined, the parent's columns.
fn head<C: Entity, P: Entity>(relation: &Relation<C, P>, left: bool) -> Head {
    let key = (TypeId::of::<C>(), TypeId::of::<P>(), relation.name(), relation.column().name, left);
    let heads = HEADS.get_or_init(RwLock::default);
    // A poisoned lock only means another thread panicked while inserting a
    // head: building it again gives the same text.
    if let Some(cached) = heads.read().ok().and_then(|heads| heads.get(&key).cloned()) {
        return cached;
    }
    let built = build_head(relation, left);
    if let Ok(mut heads) = heads.write() {
        heads.insert(key, built.clone());
    }
    built
}

/// [`head`], built.
fn build_head<C: Entity, P: Entity>(relation: &Relation<C, P>, left: bool) -> Head {
    let (child, parent) = (C::META, P::META);
    let parent_key = parent_key_columns::<P>();
    // One equality per key column: `p."id" = t."author_id"`, or for a
    // composite foreign key `p."region" = t."order_region" AND ...`.
    let on: Vec<String> = parent_key
        .iter()
        .zip(relation.column_names())
        .map(|(key, column)| format!("{PARENT}.{} = t.{}", quote_ident(key), quote_ident(column)))
        .collect();
    let list = format!(
        "SELECT {}, {PARENT}.{} IS NOT NULL, {}",
        select_list(child, "t"),
        quote_ident(parent_key[0]),
        select_list(parent, PARENT)
    );
    let from = format!(
        " FROM {} AS t {} {} AS {PARENT} ON {}",
        quote_ident(child.table),
        if left { "LEFT JOIN" } else { "JOIN" },
        quote_ident(parent.table),
        on.join(" AND "),
    );
    (format!("{list}{from}").into(), list.len())
}

/// The rows of a join, decoded: the children in order, each parent once,
/// and for each child the position of its parent among them, if the row
/// joined one. A parent repeated on several rows (the author of several
/// posts) is decoded once: the rows are of one snapshot, so its columns are
/// the same on each, and the identity map would keep one instance of it
/// anyway. Its rows are told apart by its key columns' bytes as the server
/// sent them.
struct Decoded<C, P> {
    children: Vec<C>,
    parents: Vec<P>,
    parent_of: Vec<Option<usize>>,
}

/// Decodes a join's rows into a [`Decoded`], a slice of rows at a time.
struct JoinedDecoder<'r, C, P> {
    /// Where the flag saying whether a parent was joined is.
    joined_at: usize,
    /// Where the parent's columns start.
    parent_at: usize,
    /// The parent's key columns.
    key_columns: SmallVec<[usize; 2]>,
    decoded: Decoded<C, P>,
    /// Each parent decoded so far, by its key columns' bytes.
    seen: HashMap<SmallVec<[&'r [u8]; 2]>, usize, foldhash::fast::RandomState>,
}

impl<'r, C: Entity, P: Entity> JoinedDecoder<'r, C, P> {
    /// A decoder for a join of `rows` rows.
    fn new(rows: usize) -> Self {
        let joined_at = C::META.columns.len();
        let parent_at = joined_at + 1;
        JoinedDecoder {
            joined_at,
            parent_at,
            key_columns: P::META.key_columns().map(|column| parent_at + column).collect(),
            decoded: Decoded {
                children: Vec::with_capacity(rows),
                parents: Vec::new(),
                parent_of: Vec::with_capacity(rows),
            },
            seen: HashMap::default(),
        }
    }

    /// Decodes the next rows.
    fn decode(&mut self, rows: &'r [Row]) -> Result<()> {
        let Decoded { children, parents, parent_of } = &mut self.decoded;
        for row in rows {
            children.push(C::from_row(row, 0)?);
            let joined: bool = row.try_get(self.joined_at)?;
            if !joined {
                parent_of.push(None);
                continue;
            }
            let mut key = SmallVec::new();
            for &column in &self.key_columns {
                key.push(row.try_get::<_, RawValue<'_>>(column)?.0);
            }
            let index = match self.seen.entry(key) {
                Entry::Occupied(found) => *found.get(),
                Entry::Vacant(new) => {
                    parents.push(P::from_row(row, self.parent_at)?);
                    *new.insert(parents.len() - 1)
                }
            };
            parent_of.push(Some(index));
        }
        Ok(())
    }
}

/// A join's rows, decoded
/// [`ROWS_PER_YIELD`](crate::poll_budget::ROWS_PER_YIELD) at a time with a
/// yield to the runtime in between, as a large load reads its rows.
async fn decode_joined<C: Entity, P: Entity>(rows: &[Row]) -> Result<Decoded<C, P>> {
    let mut decoder = JoinedDecoder::new(rows.len());
    for_each_chunk(rows, |chunk| decoder.decode(chunk)).await?;
    Ok(decoder.decoded)
}

/// The rows of a join, decoded and tracked: each child with its parent, if
/// the row joined one, one instance per row through the identity map;
/// yielding to the runtime every
/// [`ROWS_PER_YIELD`](crate::poll_budget::ROWS_PER_YIELD) rows decoded or
/// tracked. Cut off, it leaves the rows it tracked tracked, each once, and
/// the others not.
pub(crate) async fn track_joined<C: Entity, P: Entity>(
    session: &mut Session,
    rows: &[Row],
) -> Result<JoinedRows<C, P>> {
    let Decoded { children, parents, parent_of } = decode_joined::<C, P>(rows).await?;
    let children = session.registries.of::<C>().track_all(children).await;
    let parents = session.registries.of::<P>().track_all(parents).await;
    Ok(tracked_pairs(children, &parents, parent_of))
}

/// Each tracked child with its tracked parent, if its row joined one.
fn tracked_pairs<C: Entity, P: Entity>(
    children: Vec<Tracked<C>>,
    parents: &[Tracked<P>],
    parent_of: Vec<Option<usize>>,
) -> JoinedRows<C, P> {
    children
        .into_iter()
        .zip(parent_of)
        .map(|(child, parent)| (child, parent.and_then(|at| parents.get(at).cloned())))
        .collect()
}

/// The rows of an untracked join, decoded: each child with its parent, if
/// the row joined one; yielding to the runtime every
/// [`ROWS_PER_YIELD`](crate::poll_budget::ROWS_PER_YIELD) rows decoded.
pub(crate) async fn plain_joined<C: Entity, P: Entity>(_: &mut Session, rows: &[Row]) -> Result<PlainJoinedRows<C, P>> {
    Ok(plain_pairs(decode_joined::<C, P>(rows).await?))
}

/// The first step of a tracked join run in a group: its rows decoded and
/// tracked ([`track_joined`]).
fn tracked_rows<C: Entity, P: Entity>() -> Prepare {
    Box::new(|session, rows| Box::pin(async move { Ok(prepared(track_joined::<C, P>(session, &rows).await?)) }))
}

/// [`tracked_rows`] for an untracked join ([`plain_joined`]).
fn plain_rows<C: Entity, P: Entity>() -> Prepare {
    Box::new(|session, rows| Box::pin(async move { Ok(prepared(plain_joined::<C, P>(session, &rows).await?)) }))
}

/// Each child with its parent, if its row joined one. A parent's last row
/// takes the decoded value, the rows before it a clone: a parent on one
/// row is not copied at all.
fn plain_pairs<C: Entity, P: Entity>(decoded: Decoded<C, P>) -> PlainJoinedRows<C, P> {
    let Decoded { children, parents, parent_of } = decoded;
    let mut uses_left = vec![0usize; parents.len()];
    for &at in parent_of.iter().flatten() {
        if let Some(uses) = uses_left.get_mut(at) {
            *uses += 1;
        }
    }
    let mut parents: Vec<Option<P>> = parents.into_iter().map(Some).collect();
    let mut parent_for = |at: usize| {
        let (uses, parent) = (uses_left.get_mut(at)?, parents.get_mut(at)?);
        *uses = uses.saturating_sub(1);
        if *uses == 0 {
            parent.take()
        } else {
            parent.clone()
        }
    };
    children.into_iter().zip(parent_of).map(|(child, parent)| (child, parent.and_then(&mut parent_for))).collect()
}

/// A column's bytes as the server sent them, undecoded: a key column's,
/// to tell a parent's rows apart. A key column is never NULL.
struct RawValue<'a>(&'a [u8]);

impl<'a> FromSql<'a> for RawValue<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawValue(raw))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

impl<C: Entity, P: Entity> Join<'_, C, P, Tracked<P>> {
    /// Runs the query and returns each child with its parent, tracked.
    pub async fn all(self) -> Result<Vec<(Tracked<C>, Tracked<P>)>> {
        self.fetch(&[], async |session, rows| track_joined::<C, P>(session, rows).await.map(with_parents)).await
    }

    /// [`all`](Self::all) as a [`Load`], to run with other loads in one
    /// round trip by [`Session::load_together`](crate::Session::load_together):
    /// a page with its parents beside the page's count, say.
    pub fn all_later(self) -> Load<Vec<(Tracked<C>, Tracked<P>)>> {
        self.later(&[], tracked_rows::<C, P>(), |_, joined: JoinedRows<C, P>| Ok(with_parents(joined)))
    }
}

/// The rows of an inner join: each has its parent.
fn with_parents<C, P>(rows: Vec<(C, Option<P>)>) -> Vec<(C, P)> {
    rows.into_iter().filter_map(|(child, parent)| Some((child, parent?))).collect()
}

impl<C: Entity, P: Entity> Join<'_, C, P, Option<Tracked<P>>> {
    /// Runs the query and returns each child with its parent if it has one,
    /// tracked.
    pub async fn all(self) -> Result<Vec<(Tracked<C>, Option<Tracked<P>>)>> {
        self.fetch(&[], track_joined::<C, P>).await
    }

    /// [`all`](Self::all) as a [`Load`], to run with other loads in one
    /// round trip by [`Session::load_together`](crate::Session::load_together).
    pub fn all_later(self) -> Load<JoinedRows<C, P>> {
        self.later(&[], tracked_rows::<C, P>(), |_, joined: JoinedRows<C, P>| Ok(joined))
    }
}

impl<'s, C: Entity> UntrackedQuery<'s, C> {
    /// Joins each row to its parent through `relation` (`INNER JOIN`), as
    /// [`Query::join`] does, and returns both as plain values that the
    /// session does not track: for pages that only show what they load (a
    /// web request's `GET`), which skip the identity map's work for every
    /// row. A parent on several rows (the author of several posts) is
    /// decoded once and cloned for each.
    ///
    /// ```
    /// # use orm_core::{Database, Entity};
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # #[orm(table = "users")]
    /// # struct User { #[orm(primary_key, generated)] id: i64, name: String }
    /// # #[derive(Entity, Clone, Debug, PartialEq)]
    /// # struct Post { #[orm(primary_key, generated)] id: i64, #[orm(references = User)] author_id: Option<i64>, title: String }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
    /// # let test_db = orm_tests::TestDb::new().await;
    /// # test_db.client().await.batch_execute("CREATE TABLE users (id bigserial PRIMARY KEY, name text NOT NULL);
    /// #     CREATE TABLE post (id bigserial PRIMARY KEY, author_id bigint REFERENCES users, title text NOT NULL);
    /// #     INSERT INTO users (name) VALUES ('ann'), ('bob');
    /// #     INSERT INTO post (author_id, title) VALUES (1, 'hello'), (2, 'hi'), (NULL, 'anonymous')").await?;
    /// # let db = Database::connect(test_db.url())?;
    /// let mut session = db.session();
    /// let posts: Vec<(Post, User)> =
    ///     session.query::<Post>().order_by(Post::ID.asc()).untracked().join(Post::AUTHOR).all().await?;
    /// assert_eq!((posts[1].0.title.as_str(), posts[1].1.name.as_str()), ("hi", "bob"));
    /// assert_eq!(posts.len(), 2); // the anonymous post has no author to join
    ///
    /// let all = session.query::<Post>().order_by(Post::ID.asc()).untracked().left_join(Post::AUTHOR).all().await?;
    /// assert_eq!(all[2], (Post { id: 3, author_id: None, title: "anonymous".into() }, None));
    /// assert!(session.get::<User>(1).await?.is_some()); // not tracked: loaded again
    /// assert_eq!(session.stats().statements, 3);
    /// # Ok(()) }
    /// ```
    pub fn join<P: Entity>(self, relation: Relation<C, P>) -> Join<'s, C, P, P> {
        Join { query: self.query, relation, left: false, _parent: std::marker::PhantomData }
    }

    /// Joins each row to its parent through `relation` (`LEFT JOIN`), as
    /// [`Query::left_join`] does, and returns both as plain values: rows
    /// without a parent come back with `None`.
    pub fn left_join<P: Entity>(self, relation: Relation<C, P>) -> Join<'s, C, P, Option<P>> {
        Join { query: self.query, relation, left: true, _parent: std::marker::PhantomData }
    }
}

impl<C: Entity, Plain: Entity> Join<'_, C, Plain, Plain> {
    /// Runs the query and returns each child with its parent, as plain
    /// values.
    pub async fn all(self) -> Result<Vec<(C, Plain)>> {
        self.fetch(&[], async |session, rows| plain_joined::<C, Plain>(session, rows).await.map(with_parents)).await
    }

    /// [`all`](Self::all) as a [`Load`], to run with other loads in one
    /// round trip by [`Session::load_together`](crate::Session::load_together).
    pub fn all_later(self) -> Load<Vec<(C, Plain)>> {
        self.later(&[], plain_rows::<C, Plain>(), |_, joined: PlainJoinedRows<C, Plain>| Ok(with_parents(joined)))
    }
}

impl<C: Entity, P: Entity> Join<'_, C, P, Option<P>> {
    /// Runs the query and returns each child with its parent if it has one,
    /// as plain values.
    pub async fn all(self) -> Result<PlainJoinedRows<C, P>> {
        self.fetch(&[], plain_joined::<C, P>).await
    }

    /// [`all`](Self::all) as a [`Load`], to run with other loads in one
    /// round trip by [`Session::load_together`](crate::Session::load_together).
    pub fn all_later(self) -> Load<PlainJoinedRows<C, P>> {
        self.later(&[], plain_rows::<C, P>(), |_, joined: PlainJoinedRows<C, P>| Ok(joined))
    }
}

//! Reading a lot: query results handed over as rows arrive, so that memory
//! is bounded by a row or a chunk instead of by the result.
//!
//! [`EntityStream`] (from [`Query::stream`](crate::Query::stream)) decodes
//! plain, untracked entities from one statement's rows as tokio-postgres
//! receives them. tokio-postgres passes a statement's messages from its
//! connection task to the reader through a channel of one slot and stops
//! reading the socket while that slot is full, so a slow reader holds up
//! the server through TCP instead of piling rows up in memory.
//!
//! [`TrackedChunks`] (from
//! [`Query::stream_tracked`](crate::Query::stream_tracked)) is for batch
//! jobs that change what they read. It needs the connection between chunks
//! (to flush), which a statement whose rows are still arriving would hold,
//! so it reads through a server-side cursor, one `FETCH` per chunk.

use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};

use futures_util::{Stream, TryStreamExt};

use crate::connection::{Access, OpenRows};
use crate::entity::Entity;
use crate::error::Result;
use crate::poll_budget::ROWS_PER_YIELD;
use crate::query::Built;
use crate::raw_sql::RawSql;
use crate::session::Session;
use crate::tracked::Tracked;
use crate::types::param_refs;

/// The entities of a query, decoded one at a time as their rows arrive and
/// not tracked: made by [`Query::stream`](crate::Query::stream).
///
/// Memory stays bounded by a few rows however many the query returns: the
/// ORM keeps no row it has handed over, and tokio-postgres stops reading
/// from the server while the reader is behind. Read it with
/// [`try_next`](Self::try_next), or as a [`futures_util::Stream`] of
/// `Result<E>`.
///
/// The stream borrows the session, which runs one statement at a time: the
/// session is usable again once the stream is dropped.
///
/// - **Read to the end** (`try_next` gives `Ok(None)`): the statement is
///   over, the session goes on as after any query.
/// - **An error** ends the stream: the next call gives `Ok(None)`. A row
///   that cannot be decoded ([`Error::Decode`](crate::Error::Decode)) leaves
///   the session usable (the rest of the rows are read and dropped before
///   its next statement); an error of the server or the connection counts
///   as a failed statement, which inside a transaction leaves only a
///   rollback, as for any query.
/// - **Dropped before the end**: the server is still sending rows, so the
///   session gives up that connection as it does for a statement future
///   dropped mid-way: the statement is cancelled and the connection closed,
///   and the session's next statement takes another one from the pool.
///   Outside a transaction (a read-only session, by default) nothing is
///   lost; inside one, the transaction is gone with its connection and the
///   session can only roll back. To stop early inside a transaction, ask
///   for fewer rows with [`limit`](crate::Query::limit).
///
/// ```
/// # use orm_core::{Database, Entity};
/// # #[derive(Entity, Clone, Debug, PartialEq)]
/// # struct Customer { #[orm(primary_key, generated)] id: i64, name: String }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
/// # let test_db = orm_tests::TestDb::new().await;
/// # test_db.client().await.batch_execute("CREATE TABLE customer (id bigserial PRIMARY KEY, name text NOT NULL);
/// #     INSERT INTO customer (name) SELECT 'customer ' || n FROM generate_series(1, 10000) AS n").await?;
/// # let db = Database::connect(test_db.url())?;
/// let mut session = db.session();
/// let mut customers = session.query::<Customer>().order_by(Customer::ID.asc()).stream().await?;
/// let mut longest = 0;
/// while let Some(customer) = customers.try_next().await? {
///     longest = longest.max(customer.name.len()); // each row is dropped after use
/// }
/// assert_eq!(longest, "customer 10000".len());
/// drop(customers);
/// assert_eq!(session.stats().statements, 1);
/// # Ok(()) }
/// ```
#[must_use = "a stream reads nothing until it is polled"]
pub struct EntityStream<'s, E: Entity> {
    session: &'s mut Session,
    /// The statement whose rows are arriving; `None` once it ended.
    open: Option<OpenRows>,
    /// Its text, which a warning names if it turns out slow.
    sql: String,
    /// Rows read so far: the statement's row count if the server gives none.
    read: u64,
    _entity: PhantomData<fn() -> E>,
}

impl<'s, E: Entity> EntityStream<'s, E> {
    /// Sends the query and waits for the server to accept it; its rows
    /// follow as the stream is read.
    pub(crate) async fn open(session: &'s mut Session, built: &Built, access: Access) -> Result<Self> {
        session.record_load(&built.sql)?;
        let (connection, stats) = session.connection_and_stats();
        let open =
            connection.open_rows(RawSql::cached(&built.sql), &param_refs(&built.params), access, stats, None).await?;
        Ok(EntityStream { session, open: Some(open), sql: built.sql.clone(), read: 0, _entity: PhantomData })
    }

    /// The next entity, `Ok(None)` after the last one or after an error.
    /// (The same as [`TryStreamExt::try_next`], without the import.)
    pub async fn try_next(&mut self) -> Result<Option<E>> {
        TryStreamExt::try_next(self).await
    }
}

impl<E: Entity> Stream for EntityStream<'_, E> {
    type Item = Result<E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<E>>> {
        let this = self.get_mut();
        let Some(open) = this.open.as_mut() else { return Poll::Ready(None) };
        let polled = {
            let _entered = open.statement.span.enter();
            ready!(open.rows.as_mut().poll_next(cx))
        };
        let (connection, stats) = this.session.connection_and_stats();
        let item = match polled {
            Some(Ok(row)) => {
                this.read += 1;
                match E::from_row(&row, 0) {
                    Ok(entity) => return Poll::Ready(Some(Ok(entity))),
                    Err(error) => {
                        connection.rows_dropped();
                        Some(Err(error))
                    }
                }
            }
            None => {
                let rows = open.rows.rows_affected().unwrap_or(this.read);
                connection.rows_ended(Ok(rows), &open.statement, &this.sql, stats).err().map(Err)
            }
            Some(Err(error)) => connection.rows_ended(Err(error), &open.statement, &this.sql, stats).err().map(Err),
        };
        // Ended: dropping the row stream now lets the connection task read
        // and drop whatever is left (nothing, unless a row failed to decode).
        this.open = None;
        Poll::Ready(item)
    }
}

/// The serial number of the last cursor opened, in any session: cursors
/// of one transaction need distinct names.
static CURSORS: AtomicU64 = AtomicU64::new(0);

/// The largest chunk a cursor fetches at once: `FETCH`'s count is an `int`.
const MAX_CHUNK: usize = i32::MAX as usize;

/// The entities of a query in chunks of tracked instances, for batch jobs
/// that change what they read, with memory bounded by a chunk: made by
/// [`Query::stream_tracked`](crate::Query::stream_tracked). This is
/// SQLAlchemy's `yield_per`.
///
/// The query runs in the session's transaction (opening it) as a
/// server-side cursor (`DECLARE ... CURSOR`), and each
/// [`next_chunk`](Self::next_chunk) reads the next rows with one `FETCH`.
/// Before it does, it
///
/// 1. flushes the session (with autoflush on, the default), so that the
///    changes made to the previous chunk, and any other pending work, are
///    written, and then
/// 2. takes the previous chunk's entities out of the identity map, so that
///    the session holds about one chunk at a time. Kept are those the
///    session tracked before this stream read them, and those with changes
///    still to flush (with autoflush off), or a borrow held.
///
/// So change a chunk's entities before asking for the next chunk: a handle
/// kept from an earlier chunk is no longer tracked, and changes made to it
/// later are not saved. Loading its key again reads a fresh instance.
///
/// The cursor reads the data as it was when the stream began (rows the job
/// changes or inserts meanwhile are not read again), and it is closed when
/// the transaction ends. Each `FETCH` completes before its chunk is handed
/// over, so dropping the stream at any point between chunks leaves the
/// session as it is, ready for its next statement or commit. An error ends
/// the stream; a failed statement inside the transaction leaves only a
/// rollback, as always.
///
/// ```
/// # use orm_core::{Database, Entity};
/// # #[derive(Entity, Clone, Debug, PartialEq)]
/// # struct Customer { #[orm(primary_key, generated)] id: i64, name: String }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
/// # let test_db = orm_tests::TestDb::new().await;
/// # test_db.client().await.batch_execute("CREATE TABLE customer (id bigserial PRIMARY KEY, name text NOT NULL);
/// #     INSERT INTO customer (name) SELECT 'customer ' || n FROM generate_series(1, 10000) AS n").await?;
/// # let db = Database::connect(test_db.url())?;
/// let mut session = db.session();
/// let mut chunks = session.query::<Customer>().stream_tracked(1000).await?;
/// while let Some(chunk) = chunks.next_chunk().await? {
///     for customer in &chunk {
///         customer.modify(|c| c.name = c.name.to_uppercase());
///     } // written by the flush before the next FETCH
/// }
/// drop(chunks);
/// let stats = session.commit().await?;
/// // DECLARE, 11 FETCHes (the last one finds no more rows), 10 UPDATEs.
/// assert_eq!(stats.statements, 22);
/// assert_eq!(db.session().get_one::<Customer>(1).await?.read().name, "CUSTOMER 1");
/// # Ok(()) }
/// ```
#[must_use = "a stream reads nothing until next_chunk is called"]
pub struct TrackedChunks<'s, E: Entity> {
    session: &'s mut Session,
    /// `FETCH FORWARD <chunk size> FROM <cursor>`.
    fetch: String,
    chunk_size: usize,
    /// The entities the last chunk put into the identity map, which leave
    /// it before the next chunk is read.
    entered: Vec<Tracked<E>>,
    /// The cursor has no more rows, or an error ended the stream.
    exhausted: bool,
}

impl<'s, E: Entity> TrackedChunks<'s, E> {
    /// Opens the cursor for `built`, inside the session's transaction.
    pub(crate) async fn declare(session: &'s mut Session, built: &Built, chunk_size: usize) -> Result<Self> {
        session.record_load(&built.sql)?;
        let cursor = format!("orm_stream_{}", CURSORS.fetch_add(1, Ordering::Relaxed) + 1);
        // The cursor's name is in the text, so neither statement is kept
        // prepared: they run once per stream (or per chunk), and caching
        // them would grow the connection's statement cache with every stream.
        let declare = format!("DECLARE {cursor} NO SCROLL CURSOR FOR {}", built.sql);
        let (connection, stats) = session.connection_and_stats();
        let params = param_refs(&built.params);
        // The `FETCH`es run unnamed: their rows' types must be known first.
        connection.look_up_result_types(RawSql::cached(&built.sql), &params, stats).await?;
        connection.for_each_row(RawSql::once(&declare), &params, Access::Lock, stats, |_| Ok(())).await?;
        let chunk_size = chunk_size.clamp(1, MAX_CHUNK);
        Ok(TrackedChunks {
            session,
            fetch: format!("FETCH FORWARD {chunk_size} FROM {cursor}"),
            chunk_size,
            entered: Vec::new(),
            exhausted: false,
        })
    }

    /// The next chunk of at most `chunk_size` tracked entities, `Ok(None)`
    /// after the last one. First flushes (with autoflush on) and lets the
    /// previous chunk's entities go, as the [type's docs](Self) say.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<Tracked<E>>>> {
        self.session.autoflush_for_query().await?;
        self.release_previous();
        if self.exhausted {
            return Ok(None);
        }
        // Ended unless this chunk comes back whole; an error ends it too.
        self.exhausted = true;
        // Room for a chunk of a sensible size at most: a chunk larger than
        // the rows left would otherwise be allocated whole for nothing.
        let mut rows = Vec::with_capacity(self.chunk_size.min(ROWS_PER_YIELD));
        let (connection, stats) = self.session.connection_and_stats();
        connection
            .for_each_row(RawSql::once(&self.fetch), &[], Access::Lock, stats, |row| {
                rows.push(E::from_row(&row, 0)?);
                Ok(())
            })
            .await?;
        self.exhausted = rows.len() < self.chunk_size;
        if rows.is_empty() {
            return Ok(None);
        }
        let registry = self.session.registries.of::<E>();
        registry.identity.reserve(rows.len());
        let chunk = rows
            .into_iter()
            .map(|entity| {
                let before = registry.identity.len();
                let tracked = registry.track_loaded(entity);
                if registry.identity.len() > before {
                    self.entered.push(tracked.clone());
                }
                tracked
            })
            .collect();
        Ok(Some(chunk))
    }

    /// Takes the entities the previous chunk brought in out of the
    /// identity map, except those whose pending work a flush has not
    /// written yet: changed columns, a deletion, a link to a pending parent.
    fn release_previous(&mut self) {
        let Some(registry) = self.session.registries.get::<E>() else { return };
        for tracked in self.entered.drain(..) {
            let Some(key) = tracked.identity_key() else { continue };
            // `None`: a guard is held, so the entity may be changing.
            let unchanged = tracked.try_changed_columns() == Some(0);
            let linked =
                (0..E::META.columns.len()).any(|column| registry.links.contains_key(&(column, tracked.address())));
            if unchanged && !linked && !registry.pending_deletes.contains_key(&key) && registry.owns(&tracked) {
                registry.leave(&tracked);
            }
        }
    }
}

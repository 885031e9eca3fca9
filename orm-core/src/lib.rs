//! An async PostgreSQL ORM with an identity map, change tracking and a
//! batched unit-of-work flush, in the manner of SQLAlchemy's `Session`.
//!
//! Map a plain struct with `#[derive(Entity)]`, open a [`Session`] per unit
//! of work (one per web request), load and change entities through it, and
//! [`commit`](Session::commit):
//!
//! ```
//! use orm_core::{Database, Entity};
//!
//! #[derive(Entity, Clone, Debug, PartialEq)]
//! #[orm(table = "customers")]
//! pub struct Customer {
//!     #[orm(primary_key, generated)]
//!     pub id: i64,
//!     pub name: String,
//!     pub note: Option<String>,
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> orm_core::Result<()> {
//! # let test_db = orm_tests::TestDb::new().await;
//! # test_db.client().await.batch_execute("CREATE TABLE customers (id bigserial PRIMARY KEY, name text NOT NULL, note text);
//! #     INSERT INTO customers (name) VALUES ('Bob')").await?;
//! let db = Database::connect(test_db.url())?; // your postgres:// URL
//! let mut session = db.session();
//! let alice = session.add(Customer { id: 0, name: "Alice".into(), note: None });
//! let bob = session.get_one::<Customer>(1).await?; // SELECT ... WHERE id = $1
//! bob.write().note = Some("prefers email".into()); // tracked: UPDATE only "note"
//! let stats = session.commit().await?; // INSERT, UPDATE and COMMIT
//! assert_eq!(stats.statements, 3); // the SELECT, one INSERT, one UPDATE
//! assert_eq!(alice.read().id, 2); // the generated key, read back
//! # Ok(()) }
//! ```
//!
//! The session remembers every row it loaded (the identity map: one
//! instance per key), notices which columns changed, and on commit writes
//! all inserts, updates and deletes as one statement per table, operation
//! and set of changed columns, with one array parameter per column
//! (`INSERT ... SELECT * FROM UNNEST($1::text[], ...)`), pipelined with
//! `BEGIN` and `COMMIT`. Ten thousand inserts are one statement; a request
//! that inserts one row is one round trip, and one statement: a unit of
//! work that is a single statement needs no `BEGIN` and `COMMIT` around it.
//!
//! The guide in the `docs` crate of the repository walks through every feature.
//!
//! Cargo features: `tls-rustls` (on by default) encrypts connections as the
//! URL's `sslmode` asks; the others are off by default:
//!
//! - `decimal`: `rust_decimal::Decimal` fields for `numeric` columns;
//! - `time`: the `time` crate's dates, times and timestamps as fields;
//! - `serde`: `Serialize` for [`Tracked<T>`](Tracked), as `T`, so a web
//!   handler can return a tracked entity without copying it;
//! - `axum`: `orm_core::axum`, a session per request in an axum app
//!   (a layer and the `DbSession` extractor, committed on success and rolled
//!   back otherwise), and `IntoResponse` for [`Error`];
//! - `testing`: `orm_core::testing`, a fresh database for each of your own
//!   tests (`TestDatabase`), created on the server of `DATABASE_URL` and
//!   dropped at the end of the test.

mod array;
#[cfg(feature = "axum")]
pub mod axum;
#[cfg(feature = "axum")]
mod axum_after_commit;
#[cfg(feature = "axum")]
mod axum_reads;
mod bulk;
mod children_index;
mod column;
mod column_value;
mod commit_token;
mod connection;
mod database;
mod ddl;
mod derive_support;
mod distinct_values;
mod eager;
mod entity;
mod error;
mod event_dispatch;
mod events;
mod expr;
mod filters;
mod flush;
mod held_guards;
mod identity;
mod int_batch;
mod interval;
mod isolation;
mod join;
mod join_with;
mod key_table;
mod load_together;
mod load_tracking;
mod matching_rows;
mod n_plus_one;
mod pending_inserts;
mod plan_cache;
mod poll_budget;
mod pool_state;
mod query;
mod query_with;
mod raw_sql;
mod relation;
mod relation_aggregate;
mod relation_loading;
mod replicas;
mod row_chunks;
mod schema_check;
mod select;
mod session;
mod sql;
mod statement_mode;
mod stats;
mod stream;
mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
mod text_batch;
mod text_decode;
#[cfg(feature = "time")]
mod time_types;
mod tls;
mod tracked;
mod transaction;
mod transaction_mark;
mod type_lookups;
mod types;
mod upsert;
mod watched;

pub use array::ArrayElement;
pub use bulk::Assignment;
pub use column::{Column, Condition, Order};
pub use column_value::IntoColumnValue;
pub use commit_token::CommitToken;
pub use database::{Database, DatabaseConfig};
pub use ddl::create_table_sql;
pub use eager::{Eager, EagerQuery};
pub use entity::{ColumnMeta, ColumnSet, Entity, EntityMeta};
pub use error::{Error, ErrorKind, Result};
pub use events::{ChangedColumns, EntityEvents, Events, HookError, HookResult, SessionEvents};
pub use expr::{Expr, IntoExpr, Numeric, Ordered};
pub use flush::{DEFAULT_COPY_THRESHOLD, DEFAULT_COPY_UPDATE_THRESHOLD};
pub use interval::Interval;
pub use isolation::IsolationLevel;
pub use join::Join;
pub use join_with::JoinWith;
pub use load_together::{Load, LoadGroup};
pub use n_plus_one::NPlusOne;
/// Derives [`Entity`](trait@Entity) for a struct. An example with every
/// attribute, each described below:
///
/// ```
/// use orm_core::{Database, Entity};
///
/// #[derive(Entity, Clone, Debug, PartialEq)]
/// #[orm(table = "authors")] // default: "author", the name in snake case
/// struct Author {
///     #[orm(primary_key, generated)] // a bigserial key, read back on insert
///     id: i64,
///     name: String,
/// }
///
/// #[derive(Entity, Clone, Debug, PartialEq)]
/// struct Book {
///     #[orm(primary_key)] // chosen by the application
///     isbn: String,
///     #[orm(references = Author, relation = "writer", on_delete = "cascade")]
///     written_by: i64, // Book::WRITER: Relation<Book, Author>
///     #[orm(column = "book_title")]
///     title: String, // Book::TITLE, column "book_title"
///     #[orm(sql_type = "json")] // a json column: the default is jsonb
///     extra: serde_json::Value,
///     #[orm(version)] // checked and incremented by every update
///     version: i32,
///     #[orm(skip)] // not a column: Default::default() when loaded
///     selected: bool,
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
/// # let test_db = orm_tests::TestDb::new().await;
/// # test_db.client().await.batch_execute("CREATE TABLE authors (id bigserial PRIMARY KEY, name text NOT NULL);
/// #     CREATE TABLE book (isbn text PRIMARY KEY, written_by bigint NOT NULL REFERENCES authors ON DELETE CASCADE,
/// #         book_title text NOT NULL, extra json NOT NULL, version int NOT NULL)").await?;
/// # let db = Database::connect(test_db.url())?;
///
/// let mut session = db.session();
/// let author = session.add(Author { id: 0, name: "Ann".into() });
/// let book = session.add(Book {
///     isbn: "978-0".into(),
///     written_by: 0, // set from the author's generated key by the flush
///     title: "Tea".into(),
///     extra: serde_json::json!({}),
///     version: 1,
///     selected: true,
/// });
/// session.set_parent(&book, Book::WRITER, &author)?;
/// session.commit().await?;
///
/// let mut session = db.session();
/// let book = session.get_one::<Book>("978-0".to_owned()).await?;
/// assert_eq!((book.read().written_by, book.read().selected), (author.key(), false));
/// book.write().title = "More tea".into();
/// session.commit().await?;
/// assert_eq!(book.read().version, 2);
/// assert_eq!(Book::TITLE.name(), "book_title");
/// # Ok(()) }
/// ```
pub use orm_derive::Entity;
pub use tls::{SslMode, TlsConfig};

/// Derives the column type of a fieldless enum, stored as text. An example,
/// with the attributes described below:
///
/// ```
/// use orm_core::{Database, DbEnum, Entity};
///
/// #[derive(DbEnum, Clone, Copy, Debug, PartialEq)]
/// enum Status {
///     Open,       // stored as 'open'
///     InProgress, // 'in_progress'
///     #[orm(rename = "closed")]
///     Done,
/// }
///
/// #[derive(Entity, Clone, Debug, PartialEq)]
/// struct Ticket {
///     #[orm(primary_key, generated)]
///     id: i64,
///     status: Status,
///     reopened_from: Option<Status>, // a nullable text column
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
/// # let test_db = orm_tests::TestDb::new().await;
/// # test_db.client().await.batch_execute("CREATE TABLE ticket (id bigserial PRIMARY KEY, status text NOT NULL, reopened_from text)").await?;
/// # let db = Database::connect(test_db.url())?;
///
/// let mut session = db.session();
/// session.add_all([
///     Ticket { id: 0, status: Status::InProgress, reopened_from: None },
///     Ticket { id: 0, status: Status::Done, reopened_from: Some(Status::Open) },
/// ]);
/// let done = session.query::<Ticket>().filter(Ticket::STATUS.eq(Status::Done)).one().await?;
/// assert_eq!(done.read().reopened_from, Some(Status::Open));
///
/// let stored: Vec<String> = session
///     .query_rows("SELECT status FROM ticket ORDER BY id", &[])
///     .await?
///     .iter()
///     .map(|row| row.get(0))
///     .collect();
/// assert_eq!(stored, ["in_progress", "closed"]);
/// # Ok(()) }
/// ```
pub use orm_derive::DbEnum;
pub use orm_derive::Projection;
pub use plan_cache::PlanCacheMode;
pub use pool_state::PoolState;
pub use query::{Query, UntrackedQuery};
pub use query_with::UntrackedWith;
pub use raw_sql::RawSql;
pub use relation::Relation;
pub use replicas::{ReplicaConfig, ServedBy};
pub use schema_check::{SchemaCheck, SchemaMismatch};
pub use select::{Select, SelectItem, SelectList, Selection};
pub use session::{PendingChanges, Savepoint, Session};
pub use sql::quote_ident;
pub use statement_mode::StatementMode;
pub use stats::SessionStats;
pub use stream::{EntityStream, TrackedChunks};
pub use tracked::Tracked;
pub use transaction::{AsOrmError, RetryPolicy, UnitOfWork};
pub use types::{ColumnType, Json, Param};
pub use upsert::{ConflictTarget, OnConflict, UpdateColumns, Upsert};

/// The attribute to put on an `impl` of [`SessionEvents`] or
/// [`EntityEvents`], whose methods are `async`: re-exported, so that an
/// application needs no dependency of its own on `async-trait`.
pub use async_trait::async_trait;
/// The driver, re-exported for raw statements and parameter types.
pub use tokio_postgres;

/// Paths the derive macros expand to; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::array::write_quoted;
    pub use crate::children_index::key_hash;
    pub use crate::derive_support::*;
    pub use crate::sql::EntityStatements;
    pub use bytes::BytesMut;
    pub use postgres_types;
    pub use tokio_postgres::types::Type;
    pub use tokio_postgres::Row;
}

//! An async PostgreSQL ORM with an identity map, change tracking and a
//! batched unit-of-work flush, in the manner of SQLAlchemy's `Session`.
//!
//! Map a plain struct with `#[derive(Entity)]`, open a [`Session`] per unit
//! of work (one per web request), load and change entities through it, and
//! [`commit`](Session::commit):
//!
//! ```no_run
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
//! # async fn example() -> orm_core::Result<()> {
//! let db = Database::connect("postgres://postgres@127.0.0.1/app")?;
//! let mut session = db.session();
//! let alice = session.add(Customer { id: 0, name: "Alice".into(), note: None });
//! let bob = session.get_one::<Customer>(2).await?; // SELECT ... WHERE id = $1
//! bob.write().note = Some("prefers email".into()); // tracked: UPDATE only "note"
//! session.commit().await?; // INSERT, UPDATE and COMMIT
//! println!("Alice got id {}", alice.read().id);
//! # Ok(()) }
//! ```
//!
//! The session remembers every row it loaded (the identity map: one
//! instance per key), notices which columns changed, and on commit writes
//! all inserts, updates and deletes as one statement per table, operation
//! and set of changed columns, with one array parameter per column
//! (`INSERT ... SELECT * FROM UNNEST($1::text[], ...)`), pipelined with
//! `BEGIN` and `COMMIT`. Ten thousand inserts are one statement; a request
//! that inserts one row is one round trip.
//!
//! The guide in the `docs` crate of the repository walks through every feature.

mod column;
mod connection;
mod database;
mod derive_support;
mod entity;
mod error;
mod flush;
mod identity;
mod n_plus_one;
mod query;
mod relation;
mod relation_loading;
mod session;
mod sql;
mod stats;
mod tracked;
mod types;

pub use column::{Column, Condition, Order};
pub use database::{Database, DatabaseConfig};
pub use entity::{ColumnMeta, ColumnSet, Entity, EntityMeta};
pub use error::{Error, Result};
pub use n_plus_one::NPlusOne;
pub use orm_derive::{DbEnum, Entity};
pub use query::{Query, UntrackedQuery};
pub use relation::Relation;
pub use session::{PendingChanges, Savepoint, Session};
pub use sql::quote_ident;
pub use stats::SessionStats;
pub use tracked::Tracked;
pub use types::{ColumnType, Json, Param};

/// The driver, re-exported for raw statements and parameter types.
pub use tokio_postgres;

/// Paths the derive macros expand to; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::derive_support::*;
    pub use bytes::BytesMut;
    pub use postgres_types;
    pub use tokio_postgres::Row;
}

//! # The guide
//!
//! How to use `orm-core`, the async PostgreSQL ORM of this repository, from
//! an application: map structs to tables, open a session per unit of work,
//! load, change and commit.
//!
//! Each chapter is a markdown file in `docs/guide/`, shown here as a module.
//! Every Rust example in it is a doc test that runs against a fresh
//! PostgreSQL database (`cargo test -p orm-docs`, with `DATABASE_URL`
//! pointing at a server), so what the guide says is what the code does.
//!
//! 1. [Getting started](getting_started): what the ORM does, mapping a struct
//!    with `#[derive(Entity)]` (field types, array columns), connecting,
//!    adding, loading and querying.
//! 2. [Sessions and the unit of work](sessions): the session's lifecycle, the
//!    identity map, change tracking, how a flush is batched, optimistic
//!    concurrency, savepoints, raw SQL, errors and retries.
//! 3. [Queries](queries): filters (including `is_in` with one array
//!    parameter), ordering and paging, `one`/`optional`/`exists`, why
//!    statement text never depends on values, compile-time checks, raw SQL
//!    mapped to entities, the N+1 guard, and reading a lot with streams
//!    and tracked chunks.
//! 4. [Relationships](relationships): foreign keys with `references`,
//!    one-to-many, many-to-many and self-references, foreign keys over
//!    several columns to a composite key (`foreign_key`), the flush's
//!    parents-first order and reference cycles, linking to parents not yet
//!    inserted, loading related entities without N+1, eager loading named on
//!    the query (nested, and many-to-many in one step), cascading deletes, and
//!    filters across relations.
//! 5. [Deploying](deploying): TLS for the connections (`sslmode` and
//!    `sslrootcert` in the URL, with libpq's meanings), the errors that name
//!    what failed, and the `tls-rustls` feature; PgBouncer in transaction
//!    mode (the unnamed statement mode, and the session-level state that is
//!    unsafe there); read replicas, commit tokens for reading your own
//!    writes, replica health, pool sizing, and the path to Citus.
//! 6. [A session per request in a web app](web): the `axum` feature's layer
//!    and extractor, what commits and what rolls back (errors, panics,
//!    timeouts, clients that hang up), the order of the layers, errors as
//!    responses, and a middleware in the request's transaction.
//! 7. [Testing your code](testing): a database per test.
//! 8. [Events and filters](events_and_filters): hooks on the unit of work
//!    (timestamps, an audit log in the same transaction, validation,
//!    publishing after commit), their order, what they may do and what they
//!    cost; global filters: soft delete (`#[orm(soft_delete)]`, one batched
//!    UPDATE, restore and purge) and tenants (`#[orm(tenant)]`,
//!    `session_for_tenant`, what is refused), what every load path does,
//!    lifting a filter for one query, and the identity map.

#[doc = include_str!("../guide/01-getting-started.md")]
pub mod getting_started {}

#[doc = include_str!("../guide/02-sessions.md")]
pub mod sessions {}

#[doc = include_str!("../guide/03-queries.md")]
pub mod queries {}

#[doc = include_str!("../guide/04-relationships.md")]
pub mod relationships {}

#[doc = include_str!("../guide/05-deploying.md")]
pub mod deploying {}
#[doc = include_str!("../guide/06-web.md")]
pub mod web {}

#[doc = include_str!("../guide/07-testing.md")]
pub mod testing {}

#[doc = include_str!("../guide/08-events-and-filters.md")]
pub mod events_and_filters {}

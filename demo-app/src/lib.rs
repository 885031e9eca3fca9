//! The RealWorld ("Conduit") backend API on axum and the ORM: how the ORM is
//! meant to be used in a web service.
//!
//! Every request that touches the database gets its own [`orm_core::Session`]
//! through the library's [`orm_core::axum::DbSession`] extractor; its
//! layer (configured in [`db_session`]) commits it when the handler
//! succeeds and rolls it back otherwise (an error, a panic, a timeout, a
//! client that went away). Handlers load entities, change them,
//! add and delete them, and never write SQL for what the ORM can say.

pub mod app;
pub mod auth;
pub mod config;
pub mod db_session;
pub mod entities;
pub mod error;
pub mod extract;
pub mod id_hash;
pub mod json;
pub mod json_writer;
pub mod loaders;
pub mod migrations;
pub mod password;
pub mod request_costs;
pub mod routes;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod views;

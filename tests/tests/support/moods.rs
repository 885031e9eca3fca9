//! PostgreSQL enum types and the `DbEnum`s that map them, shared by the
//! tests of native types and of array columns.

use orm_core::DbEnum;

/// The enum type `mood`, one label renamed.
#[derive(DbEnum, Clone, Copy, Debug, PartialEq)]
#[orm(pg_type = "mood")]
pub enum Mood {
    Happy,
    Sad,
    #[orm(rename = "so-so")]
    SoSo,
}

/// The enum type `level` of schema `app`.
#[derive(DbEnum, Clone, Copy, Debug, PartialEq)]
#[orm(pg_type = "app.level")]
pub enum Level {
    Low,
    High,
}

/// Creates `mood`, the schema `app` and `app.level`.
pub const ENUM_TYPES: &str = "
    CREATE TYPE mood AS ENUM ('happy', 'sad', 'so-so');
    CREATE SCHEMA app;
    CREATE TYPE app.level AS ENUM ('low', 'high');
";

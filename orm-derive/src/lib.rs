//! The derive macros of `orm-core`: `#[derive(Entity)]` maps a struct to a
//! table, `#[derive(DbEnum)]` stores a fieldless enum as text. Use them
//! through `orm_core`, which re-exports both.

mod attr;
mod case;
mod db_enum;
mod entity;

use proc_macro::TokenStream;
use syn::{parse_macro_input, DeriveInput};

/// Maps a struct with named fields to a table; see `orm_core::Entity`.
///
/// Struct attribute: `#[orm(table = "name")]` (default: the struct's name in
/// snake case). Field attributes: `primary_key`, `generated`, `version`,
/// `skip`, `column = "name"`, `sql_type = "type"`.
#[proc_macro_derive(Entity, attributes(orm))]
pub fn derive_entity(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    entity::expand(&input).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// Stores a fieldless enum as text; each variant is its name in snake case,
/// or `#[orm(rename = "...")]`.
#[proc_macro_derive(DbEnum, attributes(orm))]
pub fn derive_db_enum(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    db_enum::expand(&input).unwrap_or_else(syn::Error::into_compile_error).into()
}

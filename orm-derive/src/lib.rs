//! The derive macros of `orm-core`: `#[derive(Entity)]` maps a struct to a
//! table, `#[derive(DbEnum)]` stores a fieldless enum as text. Use them
//! through `orm_core`, which re-exports both.

mod attr;
mod case;
mod db_enum;
mod entity;
mod projection;

use proc_macro::TokenStream;
use syn::{parse_macro_input, DeriveInput};

/// Maps a struct with named fields to a table: implements the
/// `orm_core::Entity` trait and adds a typed column constant per field
/// (`Customer::NAME`, a `Column<Customer, String>`) and a relation constant
/// per foreign key.
///
/// Each field that is not `skip` must have a type a column can store
/// (integers, floats, `bool`, `String`, `Vec<u8>`, `Uuid`, chrono dates and
/// times, JSON, a `#[derive(DbEnum)]` enum, or an `Option` of one for a
/// nullable column).
/// Mistakes in attributes are compile errors pointing at the attribute.
///
/// On the struct:
///
/// | attribute | meaning |
/// | --- | --- |
/// | `#[orm(table = "customers")]` | The table. Default: the struct's name in snake case (`OrderLine` maps to `order_line`). |
/// | `#[orm(foreign_key(fields(order_region, order_no), references = Order, relation = "order"))]` | A foreign key over several fields to an entity with a composite key: the fields in the order of `Order`'s key columns, each holding its part (or an `Option` of it). Adds `OrderLine::ORDER`; `on_delete = "cascade"` as for `references`. |
///
/// On a field:
///
/// | attribute | meaning |
/// | --- | --- |
/// | `#[orm(primary_key)]` | Part of the primary key; every entity has one. Several fields make a composite key, a tuple in field order. |
/// | `#[orm(primary_key, generated)]` | `generated`: the database assigns the value (identity, `serial`, `DEFAULT now()`); inserts leave it out and read it back with `RETURNING`. |
/// | `#[orm(version)]` | An `i16`/`i32`/`i64` optimistic-concurrency counter: every update and delete checks it, every update increments it. |
/// | `#[orm(column = "full_name")]` | The column's name, when it differs from the field's. |
/// | `#[orm(sql_type = "json")]` | The PostgreSQL type the flush casts this column's parameters to, instead of the one implied by the Rust type; a name without length or precision (`varchar`, not `varchar(255)`). |
/// | `#[orm(skip)]` | Not a column: never written, `Default::default()` when loaded. |
/// | `#[orm(soft_delete)]` | The soft-delete marker, an `Option` of a timestamp or date: loads skip rows where it is set, and the session's delete sets it to `now()` instead of deleting the row (see `Query::include_deleted`). |
/// | `#[orm(tenant)]` | The tenant column (an integer, `String` or `Uuid`): a session from `Database::session_for_tenant` loads only its tenant's rows, fills it on new entities and refuses to write another tenant's rows. |
/// | `#[orm(references = Author)]` | A foreign key to entity `Author`: the field holds `Author`'s key type (or an `Option` of it). Adds `Book::AUTHOR` for `author_id`. |
/// | `#[orm(references = Author, relation = "writer")]` | Names the relation constant (`Book::WRITER`); required when the field's name does not end in `_id`. |
/// | `#[orm(references = Author, on_delete = "cascade")]` | Deleting an author through the session deletes the books it has loaded. |
///
/// Read through `orm_core`, which re-exports this derive, this page starts
/// with a runnable example that uses every attribute. The guide (the `docs`
/// crate) covers each attribute in depth.
#[proc_macro_derive(Entity, attributes(orm))]
pub fn derive_entity(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    entity::expand(&input).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// Stores a fieldless enum in a `text` column, or in a column of a
/// PostgreSQL enum type (`CREATE TYPE mood AS ENUM (...)`), as a field type
/// of an entity.
///
/// Each variant is stored as its name in snake case (`InProgress` as
/// `in_progress`), or as its one attribute says:
///
/// | attribute | meaning |
/// | --- | --- |
/// | `#[orm(pg_type = "mood")]` (on the enum) | The column is of PostgreSQL enum type `mood` (optionally schema-qualified, `app.mood`), whose labels are the variants' texts: batches are sent as `mood[]` arrays. Without it the column is `text`. |
/// | `#[orm(rename = "closed")]` (on a variant) | The text (or enum label) stored for this variant. |
///
/// Reading text that matches no variant is a decode error naming the entity
/// and column. The enum must also be `Clone`, `PartialEq` and `Debug`, like
/// every field type. Read through `orm_core`, which re-exports this derive,
/// this page starts with a runnable example.
#[proc_macro_derive(DbEnum, attributes(orm))]
pub fn derive_db_enum(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    db_enum::expand(&input).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// Builds a struct from the rows of a projection: implements `From` the
/// tuple of the struct's field types, in field order, so that
/// `Select::all_as::<Stats>()` returns structs instead of tuples. A
/// selection whose types differ from the fields' does not compile.
#[proc_macro_derive(Projection)]
pub fn derive_projection(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    projection::expand(&input).unwrap_or_else(syn::Error::into_compile_error).into()
}

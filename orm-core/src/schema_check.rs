//! [`SchemaCheck`]: comparing entities with the database catalog at
//! start-up, so that a migration gone wrong is a clear report before the
//! first request instead of a decode error in the middle of one.

use std::collections::{HashMap, HashSet};
use std::fmt;

use tokio_postgres::types::{Kind, Type};

use crate::database::Database;
use crate::ddl::foreign_key_names;
use crate::entity::{Entity, EntityMeta};
use crate::error::{Error, Result};

/// The entities a service maps, to compare with the database it runs on:
/// build it with [`entity`](Self::entity) for each, and
/// [`run`](Self::run) it after the migrations. Three catalog queries,
/// sent together, however many entities there are.
///
/// It checks that each table exists; that each mapped column exists with a
/// type the field can encode and decode; that nullability agrees with
/// `Option`; that the primary key is the entity's; that generated columns
/// have a default or are identity columns, and that columns the database
/// always generates (`GENERATED ALWAYS AS IDENTITY`, or `AS (...) STORED`)
/// are marked `generated`; and that each declared foreign key exists.
/// A domain's column is checked as its base type (with the domain's
/// `NOT NULL`); an entity on a view is checked for its columns and types
/// only, as a view has no primary key nor foreign keys, and its columns
/// read as nullable.
/// Every mismatch is reported at once, in [`Error::SchemaMismatch`].
///
/// ```
/// # use orm_core::{Database, Entity, Error, SchemaCheck};
/// #[derive(Entity, Clone, Debug, PartialEq)]
/// struct Author {
///     #[orm(primary_key, generated)]
///     id: i64,
///     name: String,
/// }
///
/// #[derive(Entity, Clone, Debug, PartialEq)]
/// struct Book {
///     #[orm(primary_key, generated)]
///     id: i64,
///     #[orm(references = Author)]
///     author_id: i64,
///     title: String,
///     pages: i32,
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> orm_core::Result<()> {
/// # let test_db = orm_tests::TestDb::new().await;
/// # test_db.client().await.batch_execute("CREATE TABLE author (id bigserial PRIMARY KEY, name text NOT NULL);
/// #     CREATE TABLE book (id bigserial PRIMARY KEY, author_id bigint NOT NULL REFERENCES author, title text, pages int8 NOT NULL)").await?;
/// let db = Database::connect(test_db.url())?;
/// let check = SchemaCheck::new().entity::<Author>().entity::<Book>();
/// let Err(Error::SchemaMismatch(mismatches)) = check.run(&db).await else { panic!("the schema drifted") };
/// let found: Vec<String> = mismatches.iter().map(ToString::to_string).collect();
/// assert_eq!(found, [
///     "Book.title (column book.title): expected NOT NULL (the field is not an Option), found nullable",
///     "Book.pages (column book.pages): expected a type the field reads (int4), found int8",
/// ]);
/// # Ok(()) }
/// ```
#[derive(Default, Clone)]
#[must_use = "a schema check does nothing until it is run"]
pub struct SchemaCheck {
    entities: Vec<Checked>,
}

/// One entity to check: its mapping, and which database types its fields take.
#[derive(Clone, Copy)]
struct Checked {
    meta: &'static EntityMeta,
    accepts: fn(usize, &Type) -> bool,
}

/// One way an entity and its table disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaMismatch {
    /// The entity type's name.
    pub entity: &'static str,
    /// The field concerned, if the mismatch is about one.
    pub field: Option<&'static str>,
    /// The table.
    pub table: &'static str,
    /// The column concerned, if the mismatch is about one.
    pub column: Option<&'static str>,
    /// What the entity needs.
    pub expected: String,
    /// What the database has.
    pub found: String,
}

impl fmt::Display for SchemaMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.field, self.column) {
            (Some(field), Some(column)) => write!(f, "{}.{field} (column {}.{column})", self.entity, self.table)?,
            _ => write!(f, "{} (table {})", self.entity, self.table)?,
        }
        write!(f, ": expected {}, found {}", self.expected, self.found)
    }
}

/// A column as the catalog describes it.
struct CatalogColumn {
    /// The column's type, or a domain's base type: the type PostgreSQL
    /// sends the column's values as.
    type_oid: u32,
    type_name: String,
    /// `NOT NULL` on the column, or on its domain.
    not_null: bool,
    /// `a` for GENERATED ALWAYS AS IDENTITY, `d` for BY DEFAULT, empty otherwise.
    identity: String,
    has_default: bool,
    /// `s` for GENERATED ALWAYS AS (...) STORED, empty otherwise.
    generated: String,
}

/// The catalog's view of the checked tables.
struct Catalog {
    columns: HashMap<(String, String), CatalogColumn>,
    tables: HashSet<String>,
    /// Those of `tables` that are views or materialized views: they have
    /// no primary key nor foreign keys, and their columns' nullability is
    /// unknown.
    views: HashSet<String>,
    primary_keys: HashMap<String, HashSet<String>>,
    /// (table, columns in the constraint's order, referenced table) of
    /// every foreign key.
    foreign_keys: HashSet<(String, Vec<String>, String)>,
}

impl SchemaCheck {
    /// A check of no entities yet.
    pub fn new() -> Self {
        SchemaCheck::default()
    }

    /// Adds entity `E` to the check.
    pub fn entity<E: Entity>(mut self) -> Self {
        self.entities.push(Checked { meta: E::META, accepts: E::accepts });
        self
    }

    /// Compares every entity with the catalog of `db`'s database (tables
    /// found through the `search_path`), and fails with
    /// [`Error::SchemaMismatch`] listing every mismatch.
    pub async fn run(&self, db: &Database) -> Result<()> {
        let catalog = self.read_catalog(db).await?;
        let mismatches: Vec<SchemaMismatch> =
            self.entities.iter().flat_map(|checked| compare(*checked, &catalog)).collect();
        if mismatches.is_empty() {
            Ok(())
        } else {
            Err(Error::SchemaMismatch(mismatches))
        }
    }

    async fn read_catalog(&self, db: &Database) -> Result<Catalog> {
        let tables: Vec<&str> = self.entities.iter().map(|checked| checked.meta.table).collect();
        let client = db.checkout().await?;
        let columns_sql = "SELECT c.relname::text, a.attname::text,
                CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END,
                CASE WHEN t.typtype = 'd' THEN b.typname::text ELSE t.typname::text END,
                a.attnotnull OR (t.typtype = 'd' AND t.typnotnull),
                a.attidentity::text, a.atthasdef, c.relkind IN ('v', 'm'), a.attgenerated::text
            FROM pg_class c
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            JOIN pg_type t ON t.oid = a.atttypid
            LEFT JOIN pg_type b ON b.oid = t.typbasetype
            WHERE c.relname = ANY($1) AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND pg_table_is_visible(c.oid)";
        let keys_sql = "SELECT c.relname::text, a.attname::text
            FROM pg_index i
            JOIN pg_class c ON c.oid = i.indrelid
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey)
            WHERE i.indisprimary AND c.relname = ANY($1) AND pg_table_is_visible(c.oid)";
        // A foreign key's columns in its own order, which is the order of
        // the referenced key's columns.
        let foreign_sql = "SELECT c.relname::text,
                ARRAY(SELECT a.attname::text FROM unnest(k.conkey) WITH ORDINALITY AS u(attnum, n)
                    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = u.attnum ORDER BY u.n),
                p.relname::text
            FROM pg_constraint k
            JOIN pg_class c ON c.oid = k.conrelid
            JOIN pg_class p ON p.oid = k.confrelid
            WHERE k.contype = 'f' AND c.relname = ANY($1) AND pg_table_is_visible(c.oid)";
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&tables];
        // Sent together: one round trip for the three.
        let (columns, keys, foreign) = futures_util::try_join!(
            client.query(columns_sql, &params),
            client.query(keys_sql, &params),
            client.query(foreign_sql, &params),
        )?;
        let mut catalog = Catalog {
            columns: HashMap::new(),
            tables: HashSet::new(),
            views: HashSet::new(),
            primary_keys: HashMap::new(),
            foreign_keys: HashSet::new(),
        };
        for row in &columns {
            let table: String = row.try_get(0)?;
            catalog.tables.insert(table.clone());
            if row.try_get(7)? {
                catalog.views.insert(table.clone());
            }
            let column = CatalogColumn {
                type_oid: row.try_get(2)?,
                type_name: row.try_get(3)?,
                not_null: row.try_get(4)?,
                identity: row.try_get(5)?,
                has_default: row.try_get(6)?,
                generated: row.try_get(8)?,
            };
            catalog.columns.insert((table, row.try_get(1)?), column);
        }
        for row in &keys {
            catalog.primary_keys.entry(row.try_get(0)?).or_default().insert(row.try_get(1)?);
        }
        for row in &foreign {
            catalog.foreign_keys.insert((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
        }
        Ok(catalog)
    }
}

/// Whether a field whose casts name `sql_type` can take a column of the
/// catalog's type: by the field's own check for the types the driver
/// knows, and for the others first by that check on the type's name (an
/// extension's `citext`, which `String` reads), then by name for enum
/// types, and arrays of them, which the catalog names with a leading
/// underscore: `_mood` for `mood[]`.
fn type_fits(checked: Checked, index: usize, column: &CatalogColumn) -> bool {
    if let Some(ty) = Type::from_oid(column.type_oid) {
        return (checked.accepts)(index, &ty);
    }
    let named = Type::new(column.type_name.clone(), column.type_oid, Kind::Simple, String::new());
    if (checked.accepts)(index, &named) {
        return true;
    }
    let sql_type = checked.meta.columns[index].sql_type;
    let (element, catalog_name) = match sql_type.strip_suffix("[]") {
        Some(element) => (element, column.type_name.strip_prefix('_')),
        None => (sql_type, Some(column.type_name.as_str())),
    };
    element.rsplit('.').next().is_some_and(|name| Some(name.trim_matches('"')) == catalog_name)
}

fn compare(checked: Checked, catalog: &Catalog) -> Vec<SchemaMismatch> {
    let meta = checked.meta;
    let table = meta.table.to_owned();
    let mismatch = |index: Option<usize>, expected: String, found: String| SchemaMismatch {
        entity: meta.name,
        field: index.map(|i| meta.columns[i].field),
        table: meta.table,
        column: index.map(|i| meta.columns[i].name),
        expected,
        found,
    };
    if !catalog.tables.contains(&table) {
        return vec![mismatch(None, "a table".into(), "none (not in the search_path)".into())];
    }
    let mut found = Vec::new();
    for (index, column) in meta.columns.iter().enumerate() {
        let Some(stored) = catalog.columns.get(&(table.clone(), column.name.to_owned())) else {
            found.push(mismatch(Some(index), "a column".into(), "none".into()));
            continue;
        };
        if !type_fits(checked, index, stored) {
            let expected = format!("a type the field reads ({})", column.sql_type);
            found.push(mismatch(Some(index), expected, stored.type_name.clone()));
        }
        // A view's columns read as nullable whatever they hold.
        let view = catalog.views.contains(&table);
        if column.nullable == stored.not_null && (stored.not_null || !view) {
            let (expected, was) = if column.nullable {
                ("nullable (the field is an Option)", "NOT NULL")
            } else {
                ("NOT NULL (the field is not an Option)", "nullable")
            };
            found.push(mismatch(Some(index), expected.into(), was.into()));
        }
        let generated_by_database = !stored.identity.is_empty() || stored.has_default;
        if column.generated && !generated_by_database {
            found.push(mismatch(
                Some(index),
                "a default or an identity (the field is generated)".into(),
                "neither".into(),
            ));
        }
        if !column.generated && stored.identity == "a" {
            found.push(mismatch(
                Some(index),
                "a column the application writes".into(),
                "GENERATED ALWAYS AS IDENTITY (mark the field generated)".into(),
            ));
        }
        if !column.generated && stored.generated == "s" {
            found.push(mismatch(
                Some(index),
                "a column the application writes".into(),
                "GENERATED ALWAYS AS (...) STORED (mark the field generated)".into(),
            ));
        }
        if let Some(parent) = column.references.filter(|_| !view) {
            let parent = parent().table.to_owned();
            let columns = foreign_key_names(meta, column);
            let names = columns.iter().map(|&name| name.to_owned()).collect();
            if !catalog.foreign_keys.contains(&(table.clone(), names, parent.clone())) {
                let expected = match columns.as_slice() {
                    [_] => format!("a foreign key to {parent}"),
                    _ => format!("a foreign key ({}) to {parent}", columns.join(", ")),
                };
                found.push(mismatch(Some(index), expected, "none".into()));
            }
        }
    }
    let key: HashSet<String> = meta.key_columns().map(|i| meta.columns[i].name.to_owned()).collect();
    let stored_key = catalog.primary_keys.get(&table).cloned().unwrap_or_default();
    // A view has no primary key (nor foreign keys) to compare: the
    // entity's says how to tell its rows apart.
    if key != stored_key && !catalog.views.contains(&table) {
        found.push(mismatch(None, format!("primary key ({})", sorted(&key)), format!("({})", sorted(&stored_key))));
    }
    found
}

fn sorted(columns: &HashSet<String>) -> String {
    let mut names: Vec<&str> = columns.iter().map(String::as_str).collect();
    names.sort_unstable();
    names.join(", ")
}

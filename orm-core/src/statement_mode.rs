//! [`StatementMode`]: whether a connection keeps the statements it runs
//! prepared, or sends every one as the unnamed statement, which is what a
//! pooler in transaction mode (PgBouncer's `pool_mode = transaction`) needs.

use std::borrow::Cow;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use deadpool_postgres::StatementCache;
use parking_lot::Mutex;
use tokio_postgres::types::Type;

use crate::error::{Error, Result};
use crate::type_lookups::TypeLookups;

/// How a connection sends statements: prepared once and kept by name, or
/// each time as PostgreSQL's unnamed statement. Set it with
/// [`DatabaseConfig::statements`](crate::DatabaseConfig::statements), or
/// with the connection string's `statement_mode` parameter
/// (`postgres://host/db?statement_mode=unnamed`, or
/// `statement_mode=unnamed` in `key=value` form), which
/// [`DatabaseConfig::from_url`](crate::DatabaseConfig::from_url) takes out
/// before the driver reads the rest.
///
/// A pooler in transaction mode (PgBouncer with `pool_mode = transaction`,
/// before version 1.21 or without `max_prepared_statements`) hands each
/// transaction, and each statement outside one, whichever server connection
/// is free. A statement prepared by name on one of them is missing on the
/// next ("prepared statement "s3" does not exist"), and one left behind
/// collides with another client's of the same name ("already exists"). Use
/// [`Unnamed`](Self::Unnamed) there:
///
/// ```
/// use orm_core::{DatabaseConfig, StatementMode};
///
/// let config = DatabaseConfig::from_url("postgres://app@pgbouncer:6432/shop?statement_mode=unnamed")?;
/// assert_eq!(config.statements, StatementMode::Unnamed);
/// assert_eq!(config.postgres.get_dbname(), Some("shop")); // the rest as the driver reads it
///
/// let config = DatabaseConfig::from_url("host=db user=app statement_mode=prepared")?;
/// assert_eq!(config.statements, StatementMode::Prepared);
/// assert!(DatabaseConfig::from_url("postgres://db/shop?statement_mode=named").is_err());
/// # Ok::<(), orm_core::Error>(())
/// ```
///
/// What the unnamed mode costs, measured, is in `docs/performance.md`; the
/// guide's chapter on deploying says what else a transaction pooler rules
/// out (session-level state: `SET`, advisory locks, `LISTEN`, temporary
/// tables).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StatementMode {
    /// Each connection prepares a statement the first time it runs it and
    /// keeps it by name, so later runs skip parsing, and often planning (the
    /// default). Raw SQL is kept only when asked to: see
    /// [`RawSql`](crate::RawSql).
    #[default]
    Prepared,
    /// Every statement is parsed, bound and run as the unnamed statement in
    /// one message, and the server forgets it when the next one arrives:
    /// nothing is left on a server connection for another transaction to
    /// trip over. The types of a statement's parameters, which the driver
    /// must send with it, are learned by having the server describe it:
    /// once per [`Database`](crate::Database) for the ORM's statements and
    /// [`RawSql::cached`](crate::RawSql::cached) text (and once more on each
    /// connection whose driver must look up a type of the statement's, such
    /// as an enum), at each run for other raw SQL. The statement a
    /// description takes is prepared and closed inside one transaction, so
    /// even that leaves nothing behind. The server parses and plans each
    /// run afresh, which is what this mode costs.
    Unnamed,
}

/// The connection-string parameter that sets the mode.
const PARAMETER: &str = "statement_mode";

/// Reads `prepared` or `unnamed`, as the connection string's parameter
/// takes them (from an environment variable of the application's, say).
impl FromStr for StatementMode {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self> {
        match value {
            "prepared" => Ok(StatementMode::Prepared),
            "unnamed" => Ok(StatementMode::Unnamed),
            other => Err(Error::Config(format!("{PARAMETER} must be `prepared` or `unnamed`, not `{other}`"))),
        }
    }
}

impl StatementMode {
    /// Takes the `statement_mode` parameter out of a connection string, in
    /// URL or `key=value` form, returning the rest for the driver (which
    /// refuses parameters it does not know) and the mode the parameter
    /// named, if it was there. The last one wins, as with the driver's own.
    pub(crate) fn take_from_url(url: &str) -> Result<(Cow<'_, str>, Option<Self>)> {
        let is_url = ["postgres://", "postgresql://"].iter().any(|scheme| url.starts_with(scheme));
        if is_url {
            take_from_query(url)
        } else {
            take_from_key_values(url)
        }
    }
}

fn take_from_query(url: &str) -> Result<(Cow<'_, str>, Option<StatementMode>)> {
    let Some((main, query)) = url.split_once('?') else {
        return Ok((Cow::Borrowed(url), None));
    };
    let mut mode = None;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some((PARAMETER, value)) => mode = Some(value.parse()?),
            _ => kept.push(pair),
        }
    }
    if mode.is_none() {
        return Ok((Cow::Borrowed(url), None));
    }
    let rest = if kept.is_empty() { main.to_owned() } else { format!("{main}?{}", kept.join("&")) };
    Ok((Cow::Owned(rest), mode))
}

/// `key = value` pairs separated by spaces, a value in single quotes when it
/// has spaces, with `\` escaping a quote or a backslash (libpq's syntax).
fn take_from_key_values(url: &str) -> Result<(Cow<'_, str>, Option<StatementMode>)> {
    let mut mode = None;
    let mut rest = String::with_capacity(url.len());
    let mut chars = url.char_indices().peekable();
    let mut kept_from = 0;
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut key = String::new();
        while let Some(&(_, c)) = chars.peek().filter(|(_, c)| *c != '=' && !c.is_whitespace()) {
            key.push(c);
            chars.next();
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            // Not a pair: the driver will say what is wrong with it.
            return Ok((Cow::Borrowed(url), None));
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if(|(_, c)| *c == '\'').is_some() {
            while let Some((_, c)) = chars.next() {
                match c {
                    '\'' => break,
                    '\\' => value.extend(chars.next().map(|(_, c)| c)),
                    c => value.push(c),
                }
            }
        } else {
            while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
                value.push(c);
            }
        }
        if key == PARAMETER {
            mode = Some(value.parse()?);
            rest.push_str(&url[kept_from..start]);
            while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
            kept_from = chars.peek().map_or(url.len(), |&(end, _)| end);
        }
    }
    if mode.is_none() {
        return Ok((Cow::Borrowed(url), None));
    }
    rest.push_str(&url[kept_from..]);
    Ok((Cow::Owned(rest), mode))
}

/// How a [`Database`](crate::Database)'s sessions send statements, with
/// what the unnamed mode has learned about them.
#[derive(Debug, Clone)]
pub(crate) enum Statements {
    Prepared,
    Unnamed(Arc<Descriptions>),
}

impl Statements {
    pub(crate) fn new(mode: StatementMode) -> Self {
        match mode {
            StatementMode::Prepared => Statements::Prepared,
            StatementMode::Unnamed => Statements::Unnamed(Arc::default()),
        }
    }
}

/// What the server said about a statement's text: the types of its
/// parameters and its result columns.
#[derive(Debug)]
pub(crate) struct Description {
    pub(crate) params: Vec<Type>,
    pub(crate) columns: Vec<ResultColumn>,
    /// The types among them the driver does not know built in, which it
    /// looks up once per connection (see [`TypeLookups`]).
    lookups: Vec<u32>,
}

/// A result column, as a statement's check sees it.
#[derive(Debug)]
pub(crate) struct ResultColumn {
    pub(crate) name: String,
    pub(crate) type_: Type,
}

impl Description {
    /// What a prepared statement says of itself.
    pub(crate) fn of(statement: &tokio_postgres::Statement) -> Self {
        let params = statement.params().to_vec();
        let columns = ResultColumn::of(statement);
        let mut lookups: Vec<u32> = params
            .iter()
            .chain(columns.iter().map(|column| &column.type_))
            .map(Type::oid)
            .filter(|&oid| Type::from_oid(oid).is_none())
            .collect();
        lookups.sort_unstable();
        lookups.dedup();
        Description { params, columns, lookups }
    }
}

impl ResultColumn {
    /// A prepared statement's result columns.
    pub(crate) fn of(statement: &tokio_postgres::Statement) -> Vec<Self> {
        let columns = statement.columns().iter();
        columns.map(|column| ResultColumn { name: column.name().to_owned(), type_: column.type_().clone() }).collect()
    }
}

/// A statement's result columns, as its check sees them: those described
/// for the unnamed mode, or a prepared statement's own, read in place so
/// that checking a cached statement before each run copies nothing.
#[derive(Clone, Copy)]
pub(crate) enum ResultColumns<'a> {
    Described(&'a [ResultColumn]),
    Prepared(&'a [tokio_postgres::Column]),
}

impl<'a> ResultColumns<'a> {
    pub(crate) fn len(self) -> usize {
        match self {
            ResultColumns::Described(columns) => columns.len(),
            ResultColumns::Prepared(columns) => columns.len(),
        }
    }

    /// Each column's name and type, in result order.
    pub(crate) fn iter(self) -> impl Iterator<Item = (&'a str, &'a Type)> {
        (0..self.len()).map(move |index| match self {
            ResultColumns::Described(columns) => (columns[index].name.as_str(), &columns[index].type_),
            ResultColumns::Prepared(columns) => (columns[index].name(), columns[index].type_()),
        })
    }
}

/// The descriptions of the statements a [`Database`](crate::Database) runs
/// unnamed, by text, shared by its connections: a description holds on
/// every connection to the same database, unlike a prepared statement. It
/// grows with the ORM's statement shapes and the text of `RawSql::cached`,
/// both bounded by the program, as the prepared mode's caches are.
///
/// A description of a statement whose types the driver must look up is
/// used only on connections whose driver has looked them up: elsewhere
/// the statement would wait forever for its rows (see [`TypeLookups`]).
#[derive(Debug, Default)]
pub(crate) struct Descriptions {
    by_text: Mutex<HashMap<String, Arc<Description>>>,
    lookups: TypeLookups,
}

impl Descriptions {
    /// The description kept for `sql`, if `connection` may run the
    /// statement unnamed as described.
    pub(crate) fn get(&self, sql: &str, connection: &Arc<StatementCache>) -> Option<Arc<Description>> {
        let description = self.by_text.lock().get(sql).cloned()?;
        self.lookups.knows(connection, &description.lookups).then_some(description)
    }

    /// Records `description`, made on `connection` (whose driver looked up
    /// its types making it), and keeps it for `sql` if given.
    pub(crate) fn described(
        &self,
        sql: Option<&str>,
        description: &Arc<Description>,
        connection: &Arc<StatementCache>,
    ) {
        self.lookups.record(connection, &description.lookups);
        if let Some(sql) = sql {
            self.by_text.lock().insert(sql.to_owned(), description.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(url: &str) -> (String, Option<StatementMode>) {
        let (rest, mode) = StatementMode::take_from_url(url).unwrap();
        (rest.into_owned(), mode)
    }

    #[test]
    fn takes_the_parameter_out_of_a_url() {
        assert_eq!(taken("postgres://h/db"), ("postgres://h/db".into(), None));
        assert_eq!(
            taken("postgres://h/db?statement_mode=unnamed"),
            ("postgres://h/db".into(), Some(StatementMode::Unnamed))
        );
        assert_eq!(
            taken("postgresql://h/db?connect_timeout=5&statement_mode=prepared&application_name=x"),
            ("postgresql://h/db?connect_timeout=5&application_name=x".into(), Some(StatementMode::Prepared))
        );
        assert_eq!(
            taken("postgres://h/db?statement_mode=prepared&statement_mode=unnamed"),
            ("postgres://h/db".into(), Some(StatementMode::Unnamed))
        );
        assert!(StatementMode::take_from_url("postgres://h/db?statement_mode=").is_err());
    }

    #[test]
    fn takes_the_parameter_out_of_key_values() {
        assert_eq!(taken("host=h dbname=db"), ("host=h dbname=db".into(), None));
        assert_eq!(
            taken("host=h statement_mode=unnamed dbname=db"),
            ("host=h dbname=db".into(), Some(StatementMode::Unnamed))
        );
        assert_eq!(
            taken("host=h password='a b\\' c' statement_mode = 'unnamed'"),
            ("host=h password='a b\\' c' ".into(), Some(StatementMode::Unnamed))
        );
        assert_eq!(taken("statement_mode=prepared"), (String::new(), Some(StatementMode::Prepared)));
        assert!(StatementMode::take_from_url("host=h statement_mode=on").is_err());
        // What the driver refuses is left for it to refuse.
        assert_eq!(taken("host"), ("host".into(), None));
    }
}

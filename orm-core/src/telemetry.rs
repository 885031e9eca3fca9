//! The tracing span of each statement, with OpenTelemetry's database
//! attributes, and the warning about a slow one.
//!
//! Every statement the ORM sends runs inside an `orm.statement` span at
//! debug level whose fields follow OpenTelemetry's semantic conventions for
//! database client spans, so that `tracing-opentelemetry` exports it as a
//! proper database span: `otel.name` (`"SELECT users"`), `otel.kind`,
//! `db.system.name`, `db.namespace`, `db.operation.name`,
//! `db.collection.name` and `db.query.text`. The query text holds no
//! values: the ORM sends every value as a bind parameter (`$1`), and the
//! parameters are not recorded.
//!
//! Building the span costs one `enabled` check when no subscriber wants
//! debug spans of this crate: the operation and table are parsed out of the
//! SQL only for a span that is recorded.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use parking_lot::Mutex;
use tracing::field::Empty;
use tracing::{Instrument, Span};

/// What a pool's sessions put into their statements' spans and warnings.
#[derive(Debug)]
pub(crate) struct Telemetry {
    /// The database name, OpenTelemetry's `db.namespace`.
    namespace: Option<String>,
    /// A statement slower than this is logged as a warning.
    slow_threshold: Option<Duration>,
}

impl Telemetry {
    pub(crate) fn new(namespace: Option<String>, slow_threshold: Option<Duration>) -> Arc<Self> {
        Arc::new(Telemetry { namespace, slow_threshold })
    }

    /// Opens the span of a statement about to be sent, and starts its clock.
    pub(crate) fn statement(&self, sql: &str) -> StatementSpan {
        let span = tracing::debug_span!(
            "orm.statement",
            otel.name = Empty,
            otel.kind = "client",
            db.system.name = "postgresql",
            db.namespace = self.namespace.as_deref(),
            db.operation.name = Empty,
            db.collection.name = Empty,
            db.query.text = sql,
            rows = Empty,
        );
        if !span.is_disabled() {
            let summary = Summary::of(sql);
            span.record("otel.name", summary.span_name().as_str());
            if let Some(operation) = &summary.operation {
                span.record("db.operation.name", operation.as_str());
            }
            if let Some(collection) = &summary.collection {
                span.record("db.collection.name", collection.as_str());
            }
        }
        StatementSpan { span, started: Instant::now(), slow_threshold: self.slow_threshold }
    }

    /// Runs `request`, the sending of `sql` and the wait for its answer,
    /// inside the statement's span.
    pub(crate) fn traced<'a, F: Future + 'a>(&self, sql: &'a str, request: F) -> impl Future<Output = F::Output> + 'a {
        self.statement(sql).run(sql, request)
    }

    /// The clock of one round trip's pipelined requests (see [`Pipeline`]).
    pub(crate) fn pipeline(&self) -> Pipeline<'_> {
        Pipeline { telemetry: self, last_answer: Mutex::new(None) }
    }
}

/// The requests of one round trip, queued together and answered in order.
/// Each has a span from its sending to its answer, but the server starts on
/// a request only after answering the one before: so its time, which the
/// slow-statement warning judges, starts with the previous answer. (Two
/// answers that arrive together leave the second with almost no time: a
/// statement is never called slow for waiting behind another.)
pub(crate) struct Pipeline<'t> {
    telemetry: &'t Telemetry,
    last_answer: Mutex<Option<Instant>>,
}

impl Pipeline<'_> {
    /// [`Telemetry::traced`], for a request of this pipeline.
    pub(crate) fn traced<'a, F: Future + 'a>(
        &'a self,
        sql: &'a str,
        request: F,
    ) -> impl Future<Output = F::Output> + 'a {
        let statement = self.telemetry.statement(sql);
        let last_answer = &self.last_answer;
        // A combinator rather than an `async fn`: one would keep `request`
        // twice, as its argument and as the future it awaits (the driver's,
        // about a KiB), and copy it from one to the other.
        request.instrument(statement.span.clone()).map(move |output| {
            // One clock read serves as this answer's time and the next request's start.
            let now = Instant::now();
            let previous = last_answer.lock().replace(now);
            let started = previous.map_or(statement.started, |previous| previous.max(statement.started));
            statement.report(sql, now.saturating_duration_since(started));
            output
        })
    }
}

/// The span of one statement on its way, from [`Telemetry::statement`].
/// It holds no copy of the statement's text: whoever ends it still has
/// the text, which a slow statement's warning names.
#[derive(Debug)]
pub(crate) struct StatementSpan {
    pub(crate) span: Span,
    started: Instant,
    /// A statement slower than this is logged as a warning.
    slow_threshold: Option<Duration>,
}

impl StatementSpan {
    /// Runs `request`, the sending of `sql` and the wait for its answer,
    /// inside the span, and then [`ended`](Self::ended).
    pub(crate) fn run<'a, F: Future + 'a>(self, sql: &'a str, request: F) -> impl Future<Output = F::Output> + 'a {
        // A combinator, as in `Pipeline::traced`: the request's future (the
        // driver's, several hundred bytes) is neither kept twice nor copied.
        request.instrument(self.span.clone()).map(move |output| {
            self.ended(sql);
            output
        })
    }

    /// Records that the statement `sql`'s answer is complete (all its rows
    /// read, or its row count or error received), with a warning if it
    /// took longer than the slow-statement threshold.
    pub(crate) fn ended(&self, sql: &str) {
        if self.slow_threshold.is_some() {
            self.report(sql, self.started.elapsed());
        }
    }

    /// Warns if the statement `took` longer than the threshold.
    fn report(&self, sql: &str, took: Duration) {
        let Some(threshold) = self.slow_threshold else { return };
        if took > threshold {
            let summary = Summary::of(sql);
            tracing::warn!(
                db.operation.name = summary.operation.as_deref(),
                db.collection.name = summary.collection.as_deref(),
                db.query.text = sql,
                duration_ms = millis(took),
                threshold_ms = millis(threshold),
                "slow statement: {} took {took:?}",
                summary.span_name(),
            );
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The operation and the table of a statement, read off its text.
#[derive(Debug, PartialEq)]
struct Summary {
    /// The first keyword, upper-cased: `SELECT`, `INSERT`, `BEGIN`, ...
    operation: Option<String>,
    /// The table written by an INSERT, UPDATE, DELETE, COPY or TRUNCATE of
    /// one table, or the only table a SELECT reads (no join, subquery or
    /// second `FROM`); otherwise `None` rather than a guess.
    collection: Option<String>,
}

impl Summary {
    fn of(sql: &str) -> Self {
        let Some(tokens) = tokens(sql) else {
            // A comment or a quoting this reading does not follow: only the
            // leading keyword is certain.
            let operation = sql.split(|c: char| !c.is_ascii_alphabetic()).find(|word| !word.is_empty());
            return Summary { operation: operation.map(str::to_ascii_uppercase), collection: None };
        };
        let operation = match tokens.first() {
            Some(Token::Word(word)) => Some(word.to_ascii_uppercase()),
            _ => None,
        };
        let collection = operation.as_deref().and_then(|operation| collection(operation, &tokens));
        Summary { operation, collection }
    }

    /// OpenTelemetry's span name: `{operation} {table}`, or what there is
    /// of the two, or the database system.
    fn span_name(&self) -> String {
        match (&self.operation, &self.collection) {
            (Some(operation), Some(collection)) => format!("{operation} {collection}"),
            (Some(operation), None) => operation.clone(),
            (None, Some(collection)) => collection.clone(),
            (None, None) => "postgresql".to_owned(),
        }
    }
}

#[derive(Debug, PartialEq)]
enum Token<'a> {
    /// A keyword or an unquoted identifier (or a number or `$1`).
    Word(&'a str),
    /// A double-quoted identifier, unescaped.
    Quoted(String),
    /// A string literal: its content is never looked at.
    Literal,
    Punct(char),
}

impl Token<'_> {
    fn is_keyword(&self, keyword: &str) -> bool {
        matches!(self, Token::Word(word) if word.eq_ignore_ascii_case(keyword))
    }
}

/// The statement's tokens, or `None` for text with comments, dollar quoting
/// or backslash escapes, which this reading does not follow.
fn tokens(sql: &str) -> Option<Vec<Token<'_>>> {
    if sql.contains("--") || sql.contains("/*") || sql.contains('\\') || sql.contains("$$") {
        return None;
    }
    let mut tokens = Vec::new();
    let mut rest = sql;
    while let Some(c) = rest.chars().next() {
        if c.is_whitespace() {
            rest = &rest[c.len_utf8()..];
        } else if c == '\'' || c == '"' {
            let (content, after) = quoted(rest, c)?;
            tokens.push(if c == '"' { Token::Quoted(content) } else { Token::Literal });
            rest = after;
        } else if c.is_alphanumeric() || c == '_' || c == '$' {
            let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$')).unwrap_or(rest.len());
            tokens.push(Token::Word(&rest[..end]));
            rest = &rest[end..];
        } else {
            tokens.push(Token::Punct(c));
            rest = &rest[c.len_utf8()..];
        }
    }
    Some(tokens)
}

/// The content of the quoted text at the start of `text` (a doubled quote
/// stands for one) and what follows it, or `None` if it is not closed.
fn quoted(text: &str, quote: char) -> Option<(String, &str)> {
    let mut content = String::new();
    let mut rest = &text[1..];
    loop {
        let end = rest.find(quote)?;
        content.push_str(&rest[..end]);
        rest = &rest[end + 1..];
        if rest.starts_with(quote) {
            content.push(quote);
            rest = &rest[1..];
        } else {
            return Some((content, rest));
        }
    }
}

/// The one table of a statement with one, by its operation.
fn collection(operation: &str, tokens: &[Token<'_>]) -> Option<String> {
    let after = |keyword: &str| tokens.iter().position(|token| token.is_keyword(keyword)).map(|i| i + 1);
    let start = match operation {
        "INSERT" => after("INTO")?,
        "UPDATE" | "COPY" => 1,
        "DELETE" => after("FROM")?,
        "TRUNCATE" => usize::from(tokens.get(1).is_some_and(|token| token.is_keyword("TABLE"))) + 1,
        "SELECT" => {
            let froms = tokens.iter().filter(|token| token.is_keyword("FROM")).count();
            let joins = tokens.iter().any(|token| token.is_keyword("JOIN"));
            if froms != 1 || joins {
                return None;
            }
            after("FROM")?
        }
        _ => return None,
    };
    let start = start + usize::from(tokens.get(start).is_some_and(|token| token.is_keyword("ONLY")));
    let (name, end) = qualified_name(tokens, start)?;
    let next = tokens.get(end);
    let listed = |at: usize| matches!(tokens.get(at), Some(Token::Punct(',')));
    match operation {
        "SELECT" => {
            // `FROM unnest(...)` reads a function, not a table.
            if matches!(next, Some(Token::Punct('('))) {
                return None;
            }
            let alias_end = match next {
                Some(token) if token.is_keyword("AS") => end + 2,
                Some(Token::Word(_) | Token::Quoted(_)) => end + 1,
                _ => end,
            };
            if listed(alias_end) {
                return None;
            }
        }
        "TRUNCATE" if listed(end) => return None,
        _ => {}
    }
    Some(name)
}

/// A possibly schema-qualified table name starting at `start`, as
/// `schema.table`, and the index of the token after it.
fn qualified_name(tokens: &[Token<'_>], start: usize) -> Option<(String, usize)> {
    let mut parts = Vec::new();
    let mut i = start;
    loop {
        match tokens.get(i)? {
            Token::Word(word) => parts.push((*word).to_owned()),
            Token::Quoted(name) => parts.push(name.clone()),
            _ => return None,
        }
        i += 1;
        if tokens.get(i) == Some(&Token::Punct('.')) {
            i += 1;
        } else {
            return Some((parts.join("."), i));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(sql: &str) -> (Option<String>, Option<String>) {
        let summary = Summary::of(sql);
        (summary.operation, summary.collection)
    }

    fn table(sql: &str) -> Option<String> {
        Summary::of(sql).collection
    }

    fn named(operation: &str, table: Option<&str>) -> (Option<String>, Option<String>) {
        (Some(operation.to_owned()), table.map(str::to_owned))
    }

    #[test]
    fn reads_the_operation_and_table_of_the_orms_statements() {
        let select = r#"SELECT t."id", t."name" FROM "customer" AS t WHERE t."id" = ANY($1)"#;
        assert_eq!(summary(select), named("SELECT", Some("customer")));
        let insert = r#"INSERT INTO "customer" ("name") SELECT * FROM UNNEST($1::text[]) ORDER BY v.ord"#;
        assert_eq!(summary(insert), named("INSERT", Some("customer")));
        let update = r#"UPDATE "customer" AS t SET "name" = v."name" FROM UNNEST($1) AS v WHERE t.id = v.id"#;
        assert_eq!(table(update).as_deref(), Some("customer"));
        let delete = r#"DELETE FROM "order line" AS t USING UNNEST($1) AS v WHERE t.id = v.id"#;
        assert_eq!(table(delete).as_deref(), Some("order line"));
        assert_eq!(table(r#"COPY "public"."Customer" ("name") FROM STDIN BINARY"#).as_deref(), Some("public.Customer"));
    }

    #[test]
    fn names_no_table_when_the_statement_has_several_or_none() {
        assert_eq!(table("SELECT * FROM a JOIN b ON a.id = b.a_id"), None);
        assert_eq!(table("SELECT * FROM a, b"), None);
        assert_eq!(table("SELECT * FROM a WHERE id IN (SELECT a_id FROM b)"), None);
        assert_eq!(table("SELECT * FROM generate_series(1, 3)"), None);
        assert_eq!(table("SELECT 1"), None);
        assert_eq!(table("TRUNCATE a, b"), None);
        assert_eq!(table("WITH x AS (SELECT 1) SELECT * FROM x"), None);
        assert_eq!(summary("begin"), named("BEGIN", None));
    }

    #[test]
    fn looks_past_quoted_text_and_gives_up_on_comments() {
        assert_eq!(table("SELECT 'from b' FROM a"), Some("a".to_owned()));
        assert_eq!(table(r#"SELECT * FROM "a ""x"" b" t WHERE t.v = 1"#), Some(r#"a "x" b"#.to_owned()));
        assert_eq!(table("SELECT * FROM only_one WHERE x = 'it''s'"), Some("only_one".to_owned()));
        assert_eq!(summary("SELECT * FROM a -- FROM b"), named("SELECT", None));
        assert_eq!(table("SELECT 'unclosed FROM a"), None);
        assert_eq!(table("UPDATE ONLY t SET x = 1"), Some("t".to_owned()));
    }

    #[test]
    fn the_span_name_is_operation_and_table() {
        assert_eq!(Summary::of(r#"INSERT INTO "users" DEFAULT VALUES"#).span_name(), "INSERT users");
        assert_eq!(Summary::of("COMMIT").span_name(), "COMMIT");
        assert_eq!(Summary::of("").span_name(), "postgresql");
    }
}

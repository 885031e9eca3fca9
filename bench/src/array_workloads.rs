//! W10, array columns: rows with a `text[]` and an `int4[]` column, inserted
//! and updated through the ORM (one statement, each row's arrays sent as
//! array literals in one `text[]` per column) and by hand in every way that
//! keeps one statement for any row count, and one statement per row.
//!
//! A batch cannot send an array column as an array of arrays: PostgreSQL's
//! arrays are rectangular, and `UNNEST` of a two-dimensional array yields
//! its elements. So each batched variant sends something one-dimensional
//! and rebuilds the arrays in SQL:
//! - literals: a `text[]` of array literals (`{"a","b"}`), cast back; what
//!   the ORM does;
//! - jsonb: a `jsonb[]` of JSON arrays, unpacked by a subquery per row;
//! - flattened, aggregated: every element in one array, with the row each
//!   belongs to, grouped back with `array_agg`;
//! - flattened, sliced: every element in one array, with each row's
//!   offset and length, cut out with an array slice.
//!
//! Binary COPY, which cannot return keys, is the floor.

use std::fmt::Write;

use futures_util::future::{join, try_join_all};
use futures_util::pin_mut;
use orm_core::{Database, Entity, Tracked};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{Json, ToSql, Type};

use crate::measure::Traffic;
use crate::workloads::{check, BenchError};

type Outcome = Result<Traffic, BenchError>;
/// An outcome with the outputs, for the caller to free after the clock.
type Kept<K> = Result<(Traffic, K), BenchError>;

/// A row with two array columns.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "bench_tagged")]
pub struct Tagged {
    /// Assigned by the database.
    #[orm(primary_key, generated)]
    pub id: i64,
    /// Three short texts, one with quotes to escape.
    pub tags: Vec<String>,
    /// Five numbers.
    pub scores: Vec<i32>,
}

/// Creates the table of this workload.
pub const SCHEMA: &str =
    "CREATE TABLE bench_tagged (id bigserial PRIMARY KEY, tags text[] NOT NULL, scores int4[] NOT NULL)";

/// The input: `n` new rows, built before the clock starts.
pub fn new_tagged(n: usize) -> Vec<Tagged> {
    (0..n)
        .map(|i| Tagged {
            id: 0,
            tags: vec![format!("tag {}", i % 100), "rust".into(), format!("say \"{}\"", i % 7)],
            scores: (0..5).map(|k| i32::try_from((i * k) % 1000).unwrap_or(0)).collect(),
        })
        .collect()
}

/// Empties the table and restarts its ids.
pub async fn reset(db: &Database) -> Result<(), BenchError> {
    db.pool().get().await?.batch_execute("TRUNCATE bench_tagged RESTART IDENTITY").await?;
    Ok(())
}

/// Fills the table with `n` rows, for the update.
pub async fn seed(db: &Database, n: usize) -> Result<(), BenchError> {
    reset(db).await?;
    let mut session = db.session();
    session.add_all(new_tagged(n));
    session.commit().await?;
    db.pool().get().await?.batch_execute("VACUUM ANALYZE bench_tagged").await?;
    Ok(())
}

/// Inserts through the ORM: one flush, one statement, keys on the objects.
pub async fn orm_insert(db: &Database, rows: Vec<Tagged>) -> Kept<Vec<Tracked<Tagged>>> {
    let mut session = db.session();
    let added = session.add_all(rows);
    let stats = session.commit().await?;
    check(added.iter().all(|t| t.read().id > 0), "every inserted object has its key")?;
    let mut traffic = Traffic::default();
    traffic.add_session(stats);
    Ok((traffic, added))
}

/// Sets the keys `RETURNING` gave, in input order.
fn set_keys(rows: &mut [Tagged], returned: &[tokio_postgres::Row]) -> Result<(), BenchError> {
    check(returned.len() == rows.len(), "one key per row")?;
    for (row, key) in rows.iter_mut().zip(returned) {
        row.id = key.try_get(0)?;
    }
    Ok(())
}

/// Runs one batched INSERT ... RETURNING id in a transaction, pipelined
/// with BEGIN and COMMIT, as the ORM sends its flush; returns the keys.
async fn batched(
    db: &Database,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, BenchError> {
    let client = db.pool().get().await?;
    let statement = client.prepare_cached(sql).await?;
    let (begin, (inserted, commit)) =
        join(client.batch_execute("BEGIN"), join(client.query(&statement, params), client.batch_execute("COMMIT")))
            .await;
    begin?;
    let returned = inserted?;
    commit?;
    Ok(returned)
}

/// What one batched statement in one round trip costs.
fn one_statement() -> Traffic {
    let mut traffic = Traffic::default();
    traffic.add(1, 1);
    traffic
}

/// Appends `text` as a quoted element of an array literal.
fn quoted(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

fn text_literal(values: &[String]) -> String {
    let mut out = String::from("{");
    for (n, value) in values.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        quoted(&mut out, value);
    }
    out.push('}');
    out
}

fn int_literal(values: &[i32]) -> String {
    let mut out = String::from("{");
    for (n, value) in values.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        let _ = write!(out, "{value}");
    }
    out.push('}');
    out
}

/// By hand, as the ORM does it: a `text[]` of array literals per column.
pub async fn raw_literals(db: &Database, mut rows: Vec<Tagged>) -> Kept<Vec<Tagged>> {
    let tags: Vec<String> = rows.iter().map(|r| text_literal(&r.tags)).collect();
    let scores: Vec<String> = rows.iter().map(|r| int_literal(&r.scores)).collect();
    let sql = "INSERT INTO bench_tagged (tags, scores) SELECT v.tags::text[], v.scores::int4[] \
               FROM UNNEST($1::text[], $2::text[]) WITH ORDINALITY AS v(tags, scores, ord) ORDER BY v.ord RETURNING id";
    let returned = batched(db, sql, &[&tags, &scores]).await?;
    set_keys(&mut rows, &returned)?;
    Ok((one_statement(), rows))
}

/// By hand: a `jsonb[]` of JSON arrays per column, serialized straight
/// from the structs, unpacked with `jsonb_array_elements_text`.
pub async fn raw_jsonb(db: &Database, mut rows: Vec<Tagged>) -> Kept<Vec<Tagged>> {
    let returned = {
        let tags: Vec<Json<&[String]>> = rows.iter().map(|r| Json(r.tags.as_slice())).collect();
        let scores: Vec<Json<&[i32]>> = rows.iter().map(|r| Json(r.scores.as_slice())).collect();
        let sql = "INSERT INTO bench_tagged (tags, scores) \
                   SELECT ARRAY(SELECT jsonb_array_elements_text(v.tags)), \
                          ARRAY(SELECT jsonb_array_elements_text(v.scores)::int4) \
                   FROM UNNEST($1::jsonb[], $2::jsonb[]) WITH ORDINALITY AS v(tags, scores, ord) ORDER BY v.ord RETURNING id";
        batched(db, sql, &[&tags, &scores]).await?
    };
    set_keys(&mut rows, &returned)?;
    Ok((one_statement(), rows))
}

/// Every element of one column in one array, with the 1-based row each
/// belongs to.
fn flattened<T: Clone>(rows: &[Tagged], field: impl Fn(&Tagged) -> &[T]) -> Result<(Vec<i32>, Vec<T>), BenchError> {
    let mut owners = Vec::new();
    let mut elements = Vec::new();
    for (n, row) in rows.iter().enumerate() {
        let owner = i32::try_from(n + 1)?;
        for element in field(row) {
            owners.push(owner);
            elements.push(element.clone());
        }
    }
    Ok((owners, elements))
}

/// By hand: the elements flattened, each with its row, grouped back with
/// `array_agg` (a hash aggregate: linear in the elements).
pub async fn raw_flat_aggregated(db: &Database, mut rows: Vec<Tagged>) -> Kept<Vec<Tagged>> {
    let (tag_rows, tags) = flattened(&rows, |r| &r.tags)?;
    let (score_rows, scores) = flattened(&rows, |r| &r.scores)?;
    let count = i32::try_from(rows.len())?;
    let sql = "WITH t AS (SELECT r, array_agg(x ORDER BY o) AS a FROM UNNEST($1::int4[], $2::text[]) WITH ORDINALITY AS e(r, x, o) GROUP BY r), \
                    s AS (SELECT r, array_agg(x ORDER BY o) AS a FROM UNNEST($3::int4[], $4::int4[]) WITH ORDINALITY AS e(r, x, o) GROUP BY r) \
               INSERT INTO bench_tagged (tags, scores) SELECT coalesce(t.a, '{}'), coalesce(s.a, '{}') \
               FROM generate_series(1, $5::int4) AS v(ord) LEFT JOIN t ON t.r = v.ord LEFT JOIN s ON s.r = v.ord \
               ORDER BY v.ord RETURNING id";
    let returned = batched(db, sql, &[&tag_rows, &tags, &score_rows, &scores, &count]).await?;
    set_keys(&mut rows, &returned)?;
    Ok((one_statement(), rows))
}

/// Each row's 1-based offset into the flattened elements, and its length.
fn offsets<T>(rows: &[Tagged], field: impl Fn(&Tagged) -> &[T]) -> Result<(Vec<i32>, Vec<i32>), BenchError> {
    let mut starts = Vec::with_capacity(rows.len());
    let mut lengths = Vec::with_capacity(rows.len());
    let mut next = 1;
    for row in rows {
        let length = i32::try_from(field(row).len())?;
        starts.push(next);
        lengths.push(length);
        next += length;
    }
    Ok((starts, lengths))
}

/// By hand: the elements flattened, each row's cut out with a slice of the
/// parameter (`$1[start:end]`), which finds the start of a slice of text
/// by walking the elements before it.
pub async fn raw_flat_sliced(db: &Database, mut rows: Vec<Tagged>) -> Kept<Vec<Tagged>> {
    let (tag_starts, tag_lengths) = offsets(&rows, |r| &r.tags)?;
    let (score_starts, score_lengths) = offsets(&rows, |r| &r.scores)?;
    let returned = {
        let tags: Vec<&str> = rows.iter().flat_map(|r| r.tags.iter().map(String::as_str)).collect();
        let scores: Vec<i32> = rows.iter().flat_map(|r| r.scores.iter().copied()).collect();
        let sql = "INSERT INTO bench_tagged (tags, scores) \
               SELECT ($1::text[])[v.ts : v.ts + v.tl - 1], ($2::int4[])[v.ss : v.ss + v.sl - 1] \
               FROM UNNEST($3::int4[], $4::int4[], $5::int4[], $6::int4[]) WITH ORDINALITY AS v(ts, tl, ss, sl, ord) \
               ORDER BY v.ord RETURNING id";
        let params: [&(dyn ToSql + Sync); 6] =
            [&tags, &scores, &tag_starts, &tag_lengths, &score_starts, &score_lengths];
        batched(db, sql, &params).await?
    };
    set_keys(&mut rows, &returned)?;
    Ok((one_statement(), rows))
}

/// By hand, one INSERT per row with its arrays bound in binary, all
/// pipelined on one connection in one transaction.
pub async fn raw_single_inserts(db: &Database, mut rows: Vec<Tagged>) -> Kept<Vec<Tagged>> {
    let client = db.pool().get().await?;
    let statement =
        client.prepare_cached("INSERT INTO bench_tagged (tags, scores) VALUES ($1, $2) RETURNING id").await?;
    let inserts =
        try_join_all(rows.iter().map(|row| async { client.query_one(&statement, &[&row.tags, &row.scores]).await }));
    let (begin, (inserted, commit)) =
        join(client.batch_execute("BEGIN"), join(inserts, client.batch_execute("COMMIT"))).await;
    begin?;
    let returned = inserted?;
    commit?;
    set_keys(&mut rows, &returned)?;
    let mut traffic = Traffic::default();
    traffic.add(rows.len() as u64, 1);
    Ok((traffic, rows))
}

/// The floor: binary COPY, arrays in binary, no keys returned.
pub async fn raw_copy(db: &Database, rows: Vec<Tagged>) -> Kept<Vec<Tagged>> {
    let client = db.pool().get().await?;
    let sink = client.copy_in("COPY bench_tagged (tags, scores) FROM STDIN BINARY").await?;
    let writer = BinaryCopyInWriter::new(sink, &[Type::TEXT_ARRAY, Type::INT4_ARRAY]);
    pin_mut!(writer);
    for row in &rows {
        writer.as_mut().write(&[&row.tags as &(dyn ToSql + Sync), &row.scores]).await?;
    }
    let written = writer.finish().await?;
    check(usize::try_from(written)? == rows.len(), "COPY wrote every row")?;
    let mut traffic = Traffic::default();
    traffic.add(1, 2);
    Ok((traffic, rows))
}

/// The tag each update round adds.
fn added_tag(round: usize) -> String {
    format!("round {round}")
}

/// Updates through the ORM: load every row, add a tag to each, commit.
pub async fn orm_update(db: &Database, n: usize, round: usize) -> Outcome {
    let mut session = db.session();
    let all = session.query::<Tagged>().all().await?;
    check(all.len() == n, "loaded every row")?;
    for row in &all {
        row.write().tags.push(added_tag(round));
    }
    let mut traffic = Traffic::default();
    traffic.add_session(session.commit().await?);
    Ok(traffic)
}

/// The hand-written load of every row.
const SELECT_ALL: &str = "SELECT id, tags, scores FROM bench_tagged";

/// Loads every row by hand with `select`, in a transaction begun with it,
/// and adds round `round`'s tag to each.
async fn load_and_tag(
    client: &tokio_postgres::Client,
    select: &tokio_postgres::Statement,
    n: usize,
    round: usize,
) -> Result<Vec<Tagged>, BenchError> {
    let (begin, rows) = join(client.batch_execute("BEGIN"), client.query(select, &[])).await;
    begin?;
    let mut rows: Vec<Tagged> = rows?
        .iter()
        .map(|row| Ok(Tagged { id: row.try_get(0)?, tags: row.try_get(1)?, scores: row.try_get(2)? }))
        .collect::<Result<_, tokio_postgres::Error>>()?;
    check(rows.len() == n, "loaded every row")?;
    for row in &mut rows {
        row.tags.push(added_tag(round));
    }
    Ok(rows)
}

/// Updates by hand as the ORM does: one UPDATE with the new arrays as a
/// `text[]` of literals.
pub async fn raw_literal_update(db: &Database, n: usize, round: usize) -> Outcome {
    let client = db.pool().get().await?;
    let select = client.prepare_cached(SELECT_ALL).await?;
    let rows = load_and_tag(&client, &select, n, round).await?;
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let tags: Vec<String> = rows.iter().map(|r| text_literal(&r.tags)).collect();
    let update = client
        .prepare_cached(
            "UPDATE bench_tagged AS t SET tags = v.tags::text[] FROM UNNEST($1::int8[], $2::text[]) AS v(id, tags) \
             WHERE t.id = v.id",
        )
        .await?;
    let (updated, commit) = join(client.execute(&update, &[&ids, &tags]), client.batch_execute("COMMIT")).await;
    check(usize::try_from(updated?)? == n, "updated every row")?;
    commit?;
    let mut traffic = Traffic::default();
    traffic.add(2, 2);
    Ok(traffic)
}

/// Updates by hand with one UPDATE per row, arrays bound in binary, all
/// pipelined.
pub async fn raw_single_updates(db: &Database, n: usize, round: usize) -> Outcome {
    let client = db.pool().get().await?;
    let select = client.prepare_cached(SELECT_ALL).await?;
    let rows = load_and_tag(&client, &select, n, round).await?;
    let update = client.prepare_cached("UPDATE bench_tagged SET tags = $2 WHERE id = $1").await?;
    let per_row = try_join_all(rows.iter().map(|row| async { client.execute(&update, &[&row.id, &row.tags]).await }));
    let (updated, commit) = join(per_row, client.batch_execute("COMMIT")).await;
    check(updated?.iter().all(|&count| count == 1), "updated every row")?;
    commit?;
    let mut traffic = Traffic::default();
    traffic.add(1 + n as u64, 2);
    Ok(traffic)
}

//! The workloads of the query builder beyond whole-entity loads: W8, an
//! aggregate grouped by a column, and W9, an upsert of rows half of which
//! exist. Each through the ORM and through the best hand-written
//! tokio-postgres code for the same job.

use orm_core::{Database, Entity, Expr};

use crate::measure::Traffic;
use crate::workloads::BenchError;

type Outcome = Result<Traffic, BenchError>;

/// A comment of one of a thousand posts.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "bench_comment")]
pub struct Comment {
    /// Assigned by the database.
    #[orm(primary_key, generated)]
    pub id: i64,
    /// The post commented on.
    pub post_id: i64,
    /// The text.
    pub body: String,
}

/// A price keyed by an application-chosen SKU.
#[derive(Entity, Clone, Debug, PartialEq)]
#[orm(table = "bench_price")]
pub struct Price {
    /// The SKU.
    #[orm(primary_key)]
    pub sku: String,
    /// The price in cents.
    pub cents: i64,
}

/// Creates the tables of these workloads.
pub const SCHEMA: &str = "
    CREATE TABLE bench_comment (id bigserial PRIMARY KEY, post_id bigint NOT NULL, body text NOT NULL);
    CREATE TABLE bench_price (sku text PRIMARY KEY, cents bigint NOT NULL);
";

fn check(condition: bool, what: &str) -> Result<(), BenchError> {
    if condition {
        Ok(())
    } else {
        Err(format!("benchmark self-check failed: {what}").into())
    }
}

/// W8's table: `n` comments over a thousand posts.
pub async fn seed_comments(db: &Database, n: usize) -> Result<(), BenchError> {
    let client = db.pool().get().await?;
    client.batch_execute("TRUNCATE bench_comment RESTART IDENTITY").await?;
    let n = i64::try_from(n)?;
    client
        .execute(
            "INSERT INTO bench_comment (post_id, body) SELECT n % 1000, 'comment ' || n FROM generate_series(1, $1::int8) AS n",
            &[&n],
        )
        .await?;
    client.batch_execute("VACUUM ANALYZE bench_comment").await?;
    Ok(())
}

/// W8 through the ORM: comment counts per post, grouped in the database.
pub async fn orm_comment_counts(db: &Database, n: usize) -> Outcome {
    let mut session = db.session();
    let counts = session
        .query::<Comment>()
        .select((Comment::POST_ID, Expr::count_all()))
        .group_by(Comment::POST_ID)
        .all()
        .await?;
    check(counts.iter().map(|&(_, count)| count).sum::<i64>() == i64::try_from(n)?, "every comment counted")?;
    let mut traffic = Traffic::default();
    traffic.add_session(session.commit().await?);
    Ok(traffic)
}

/// W8 by hand: the same `GROUP BY`, prepared, rows decoded into pairs.
pub async fn raw_comment_counts(db: &Database, n: usize) -> Outcome {
    let client = db.pool().get().await?;
    let statement = client.prepare_cached("SELECT post_id, count(*) FROM bench_comment GROUP BY post_id").await?;
    let rows = client.query(&statement, &[]).await?;
    let counts = rows
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<Vec<(i64, i64)>, tokio_postgres::Error>>()?;
    check(counts.iter().map(|&(_, count)| count).sum::<i64>() == i64::try_from(n)?, "every comment counted")?;
    let mut traffic = Traffic::default();
    traffic.add(1, 1);
    Ok(traffic)
}

/// W9's table: the first half of the SKUs of [`prices`], at their old price.
pub async fn seed_prices(db: &Database, n: usize) -> Result<(), BenchError> {
    let client = db.pool().get().await?;
    client.batch_execute("TRUNCATE bench_price").await?;
    let half = i64::try_from(n / 2)?;
    client
        .execute("INSERT INTO bench_price SELECT 'sku ' || n, 1 FROM generate_series(0, $1::int8 - 1) AS n", &[&half])
        .await?;
    client.batch_execute("VACUUM ANALYZE bench_price").await?;
    Ok(())
}

/// W9's input: `n` prices, half of them for SKUs the table holds.
pub fn prices(n: usize, round: usize) -> Vec<Price> {
    (0..n).map(|i| Price { sku: format!("sku {i}"), cents: i64::try_from(i + round).unwrap_or(0) }).collect()
}

/// W9 through the ORM: one upsert of every row, and commit.
pub async fn orm_upsert(db: &Database, rows: Vec<Price>) -> Outcome {
    let n = rows.len() as u64;
    let mut session = db.session();
    let written = session.upsert(rows).do_update([Price::CENTS]).await?;
    check(written == n, "every row inserted or updated")?;
    let mut traffic = Traffic::default();
    traffic.add_session(session.commit().await?);
    Ok(traffic)
}

/// W9 by hand: `INSERT ... SELECT FROM UNNEST ... ON CONFLICT DO UPDATE`,
/// binding the structs' own strings, in a transaction.
pub async fn raw_upsert(db: &Database, rows: Vec<Price>) -> Outcome {
    let mut client = db.pool().get().await?;
    let transaction = client.transaction().await?;
    let statement = transaction
        .prepare_cached(
            "INSERT INTO bench_price (sku, cents) SELECT * FROM UNNEST($1::text[], $2::int8[]) \
             ON CONFLICT (sku) DO UPDATE SET cents = EXCLUDED.cents",
        )
        .await?;
    let skus: Vec<&str> = rows.iter().map(|p| p.sku.as_str()).collect();
    let cents: Vec<i64> = rows.iter().map(|p| p.cents).collect();
    let written = transaction.execute(&statement, &[&skus, &cents]).await?;
    check(written == rows.len() as u64, "every row inserted or updated")?;
    transaction.commit().await?;
    let mut traffic = Traffic::default();
    traffic.add(1, 3);
    Ok(traffic)
}

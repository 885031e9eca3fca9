//! The six workloads of DESIGN.md (W7, nested eager loading, is in
//! `nested.rs`), each through the ORM and through the best
//! hand-written tokio-postgres code for the same job.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::join3;
use futures_util::{pin_mut, TryStreamExt};
use orm_core::{Database, Session, Tracked};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use crate::customer::{new_customer, Customer};
use crate::measure::{longest_poll, Traffic};

/// The error of a benchmark step.
pub type BenchError = Box<dyn std::error::Error>;
type Outcome = Result<Traffic, BenchError>;
/// An outcome with the outputs, for the caller to free after the clock.
type Kept<K> = Result<(Traffic, K), BenchError>;

/// Fails the run unless `condition` holds: both sides check their outputs.
pub fn check(condition: bool, what: &str) -> Result<(), BenchError> {
    if condition {
        Ok(())
    } else {
        Err(format!("benchmark self-check failed: {what}").into())
    }
}

/// Empties the table and restarts its ids, between insert runs.
pub async fn reset(db: &Database) -> Result<(), BenchError> {
    db.pool().get().await?.batch_execute("TRUNCATE customer RESTART IDENTITY").await?;
    Ok(())
}

/// Fills the table with `n` rows (ids 1..=n), for the read and update workloads.
pub async fn seed(db: &Database, n: usize) -> Result<(), BenchError> {
    reset(db).await?;
    raw_copy_insert(db, &new_customers(n)).await?;
    db.pool().get().await?.batch_execute("VACUUM ANALYZE customer").await?;
    Ok(())
}

/// W1's input: `n` new entities, built before the clock starts.
pub fn new_customers(n: usize) -> Vec<Customer> {
    (0..n).map(new_customer).collect()
}

/// W1 through the ORM: add the entities, commit, keys land on the objects.
/// Hands the objects back, to be freed after the clock stops, and times the
/// longest poll of the commit alone (the synchronous `add_all` before it is
/// a poll of its own cost: see docs/performance.md).
pub async fn orm_bulk_insert(db: &Database, customers: Vec<Customer>) -> Kept<Vec<Tracked<Customer>>> {
    let mut session = db.session();
    let added = session.add_all(customers);
    let (stats, commit_poll) = longest_poll(session.commit()).await;
    let stats = stats?;
    check(added.iter().all(|c| c.read().id > 0), "every inserted object has its key")?;
    let mut traffic = Traffic { call_longest_poll: Some(commit_poll), ..Traffic::default() };
    traffic.add_session(stats);
    Ok((traffic, added))
}

/// W1 by hand: one UNNEST insert returning the generated keys, which go
/// back into the structs, as the ORM puts them on its objects.
pub async fn raw_bulk_insert(db: &Database, mut customers: Vec<Customer>) -> Kept<Vec<Customer>> {
    let client = db.pool().get().await?;
    let statement = client
        .prepare_cached(
            "INSERT INTO customer (name, description) SELECT * FROM UNNEST($1::text[], $2::text[]) RETURNING id",
        )
        .await?;
    let rows = {
        // Borrowed, not copied: hand-written code binds the structs' own strings.
        let names: Vec<&str> = customers.iter().map(|c| c.name.as_str()).collect();
        let descriptions: Vec<Option<&str>> = customers.iter().map(|c| c.description.as_deref()).collect();
        client.query(&statement, &[&names, &descriptions]).await?
    };
    check(rows.len() == customers.len(), "one key per row")?;
    for (customer, row) in customers.iter_mut().zip(&rows) {
        customer.id = row.try_get(0)?;
    }
    check(customers.iter().all(|c| c.id > 0), "every struct has its key")?;
    let mut traffic = Traffic::default();
    traffic.add(1, 1);
    Ok((traffic, customers))
}

/// W1's floor: binary COPY, which cannot return the generated keys.
pub async fn raw_copy_insert(db: &Database, customers: &[Customer]) -> Outcome {
    let client = db.pool().get().await?;
    let sink = client.copy_in("COPY customer (name, description) FROM STDIN BINARY").await?;
    let writer = BinaryCopyInWriter::new(sink, &[Type::VARCHAR, Type::VARCHAR]);
    pin_mut!(writer);
    for customer in customers {
        writer.as_mut().write(&[&customer.name as &(dyn ToSql + Sync), &customer.description]).await?;
    }
    let written = writer.finish().await?;
    check(usize::try_from(written)? == customers.len(), "COPY wrote every row")?;
    let mut traffic = Traffic::default();
    traffic.add(1, 2);
    Ok(traffic)
}

/// W2 through the ORM: a session per entity of `customers` (built before
/// the clock), each adding it and committing.
pub async fn orm_single_inserts(db: &Database, customers: Vec<Customer>) -> Outcome {
    let mut traffic = Traffic::default();
    for customer in customers {
        let mut session = db.session();
        let added = session.add(customer);
        traffic.add_session(session.commit().await?);
        check(added.read().id > 0, "the key is on the object")?;
    }
    Ok(traffic)
}

/// W2 by hand: BEGIN, INSERT ... RETURNING and COMMIT pipelined on a pooled connection.
pub async fn raw_single_inserts(db: &Database, customers: Vec<Customer>) -> Outcome {
    let mut traffic = Traffic::default();
    for customer in customers {
        let client = db.pool().get().await?;
        let statement =
            client.prepare_cached("INSERT INTO customer (name, description) VALUES ($1, $2) RETURNING id").await?;
        let (begin, inserted, commit) = join3(
            client.batch_execute("BEGIN"),
            client.query_one(&statement, &[&customer.name, &customer.description]),
            client.batch_execute("COMMIT"),
        )
        .await;
        begin?;
        let id: i32 = inserted?.get(0);
        commit?;
        check(id > 0, "a key came back")?;
        traffic.add(1, 1);
    }
    Ok(traffic)
}

/// W2's floor by hand: each INSERT ... RETURNING alone on a pooled
/// connection, its own transaction, with no BEGIN or COMMIT: what the ORM
/// sends for a unit of work of one insert.
pub async fn raw_single_inserts_alone(db: &Database, customers: Vec<Customer>) -> Outcome {
    let mut traffic = Traffic::default();
    for customer in customers {
        let client = db.pool().get().await?;
        let statement =
            client.prepare_cached("INSERT INTO customer (name, description) VALUES ($1, $2) RETURNING id").await?;
        let id: i32 = client.query_one(&statement, &[&customer.name, &customer.description]).await?.get(0);
        check(id > 0, "a key came back")?;
        traffic.add(1, 1);
    }
    Ok(traffic)
}

/// W3's and W11's input: the new name of row `id` at index `id - 1`, built before
/// the clock starts; each side moves them into what it loaded.
pub fn new_names(n: usize, round: usize) -> Vec<String> {
    (1..=n).map(|id| format!("customer {id} renamed in round {round}")).collect()
}

/// Moves row `id`'s new name out of `names`.
pub fn take_name(names: &mut [String], id: i32) -> Result<String, BenchError> {
    let at = usize::try_from(id)?.checked_sub(1).ok_or("a key below 1")?;
    Ok(std::mem::take(names.get_mut(at).ok_or("a key beyond the input")?))
}

/// W3 through the ORM: load every row, change `name` on each, commit.
pub async fn orm_bulk_update(db: &Database, n: usize, mut names: Vec<String>) -> Outcome {
    let mut session = db.session();
    let all = session.query::<Customer>().all().await?;
    check(all.len() == n, "loaded every row")?;
    for customer in &all {
        let mut customer = customer.write();
        customer.name = take_name(&mut names, customer.id)?;
    }
    let mut traffic = Traffic::default();
    traffic.add_session(session.commit().await?);
    Ok(traffic)
}

/// W3 by hand: load every row, change the names, one UNNEST update, in one transaction.
pub async fn raw_bulk_update(db: &Database, n: usize, mut names: Vec<String>) -> Outcome {
    let client = db.pool().get().await?;
    let select = client.prepare_cached(SELECT_ALL).await?;
    let update = client
        .prepare_cached("UPDATE customer SET name = v.name FROM UNNEST($1::int4[], $2::text[]) AS v(id, name) WHERE customer.id = v.id")
        .await?;
    let mut customers = begin_and_load_all(&client, &select, n).await?;
    for customer in &mut customers {
        customer.name = take_name(&mut names, customer.id)?;
    }
    let ids: Vec<i32> = customers.iter().map(|c| c.id).collect();
    let names: Vec<&str> = customers.iter().map(|c| c.name.as_str()).collect();
    let (updated, commit) =
        futures_util::future::join(client.execute(&update, &[&ids, &names]), client.batch_execute("COMMIT")).await;
    check(usize::try_from(updated?)? == n, "updated every row")?;
    commit?;
    let mut traffic = Traffic::default();
    traffic.add(2, 2);
    Ok(traffic)
}

/// W3's floor by hand: load every row and change the names as
/// [`raw_bulk_update`] does, then `COPY` the new names into a temporary
/// table and update from it: no array parameter for the server to take
/// apart, and a join the planner sees the size of.
pub async fn raw_bulk_update_copy(db: &Database, n: usize, mut names: Vec<String>) -> Outcome {
    let client = db.pool().get().await?;
    let select = client.prepare_cached(SELECT_ALL).await?;
    let mut customers = begin_and_load_all(&client, &select, n).await?;
    for customer in &mut customers {
        customer.name = take_name(&mut names, customer.id)?;
    }
    let (created, sink) = futures_util::future::join(
        client.batch_execute("CREATE TEMP TABLE new_name (id int4, name text) ON COMMIT DROP"),
        client.copy_in("COPY new_name (id, name) FROM STDIN BINARY"),
    )
    .await;
    created?;
    let writer = BinaryCopyInWriter::new(sink?, &[Type::INT4, Type::TEXT]);
    pin_mut!(writer);
    for customer in &customers {
        writer.as_mut().write(&[&customer.id as &(dyn ToSql + Sync), &customer.name]).await?;
    }
    check(usize::try_from(writer.finish().await?)? == n, "COPY wrote every row")?;
    // Prepared once the table exists; later runs' tables are new ones,
    // which the server finds again by name when it revalidates the plan.
    let update =
        client.prepare_cached("UPDATE customer SET name = v.name FROM new_name AS v WHERE customer.id = v.id").await?;
    let (updated, commit) =
        futures_util::future::join(client.execute(&update, &[]), client.batch_execute("COMMIT")).await;
    check(usize::try_from(updated?)? == n, "updated every row")?;
    commit?;
    let mut traffic = Traffic::default();
    traffic.add(4, 4);
    Ok(traffic)
}

/// The statement that loads every customer, for [`begin_and_load_all`].
pub const SELECT_ALL: &str = "SELECT id, name, description FROM customer";

/// Sends `BEGIN` and `select` ([`SELECT_ALL`], prepared), pipelined, as
/// the hand-written updates start; checks that there are `n` customers.
pub async fn begin_and_load_all(
    client: &tokio_postgres::Client,
    select: &tokio_postgres::Statement,
    n: usize,
) -> Result<Vec<Customer>, BenchError> {
    let (begin, rows) = futures_util::future::join(client.batch_execute("BEGIN"), client.query(select, &[])).await;
    begin?;
    let customers: Vec<Customer> = rows?
        .iter()
        .map(|row| Ok(Customer { id: row.try_get(0)?, name: row.try_get(1)?, description: row.try_get(2)? }))
        .collect::<Result<_, tokio_postgres::Error>>()?;
    check(customers.len() == n, "loaded every row")?;
    Ok(customers)
}

/// W4's reading of a loaded row: its key and the lengths of its strings,
/// summed over every row by both sides, so neither skips decoding (or, for
/// the ORM, borrowing through the handles) work whose result nobody reads.
fn checksum(customer: &Customer) -> u64 {
    u64::try_from(customer.id).unwrap_or(0)
        + customer.name.len() as u64
        + customer.description.as_ref().map_or(0, |d| d.len() as u64)
}

/// The checksum W4's loads must find, computed by the server before any
/// clock starts.
pub async fn expected_checksum(db: &Database) -> Result<u64, BenchError> {
    let client = db.pool().get().await?;
    let row = client
        .query_one(
            "SELECT coalesce(sum(id + octet_length(name) + coalesce(octet_length(description), 0)), 0)::int8 FROM customer",
            &[],
        )
        .await?;
    Ok(u64::try_from(row.try_get::<_, i64>(0)?)?)
}

/// W4 through the ORM, tracked: every row becomes an identity-mapped
/// entity, read back through its handle.
pub async fn orm_select_tracked(db: &Database, n: usize, expected: u64) -> Outcome {
    let mut session = db.session();
    let (all, load_poll) = longest_poll(session.query::<Customer>().all()).await;
    let all = all?;
    check(all.len() == n, "loaded every row")?;
    let sum: u64 = all.iter().map(|customer| checksum(&customer.read())).sum();
    check(sum == expected, "read every row through its handle")?;
    let mut traffic = Traffic { call_longest_poll: Some(load_poll), ..Traffic::default() };
    traffic.add_session(session.commit().await?);
    Ok(traffic)
}

/// W4 through the ORM, untracked: plain values for a read-only load.
pub async fn orm_select_untracked(db: &Database, n: usize, expected: u64) -> Outcome {
    let mut session = db.session();
    let (all, load_poll) = longest_poll(session.query::<Customer>().untracked().all()).await;
    let all = all?;
    check(all.len() == n, "loaded every row")?;
    check(all.iter().map(checksum).sum::<u64>() == expected, "read every row")?;
    let mut traffic = Traffic { call_longest_poll: Some(load_poll), ..Traffic::default() };
    traffic.add_session(session.commit().await?);
    Ok(traffic)
}

/// W4 by hand: one query, rows decoded into structs as they stream in.
pub async fn raw_select(db: &Database, n: usize, expected: u64) -> Outcome {
    let client = db.pool().get().await?;
    let statement = client.prepare_cached("SELECT id, name, description FROM customer").await?;
    let stream = client.query_raw(&statement, std::iter::empty::<i32>()).await?;
    pin_mut!(stream);
    let mut all = Vec::new();
    while let Some(row) = stream.try_next().await? {
        all.push(Customer { id: row.try_get(0)?, name: row.try_get(1)?, description: row.try_get(2)? });
    }
    check(all.len() == n, "loaded every row")?;
    check(all.iter().map(checksum).sum::<u64>() == expected, "read every row")?;
    let mut traffic = Traffic::default();
    traffic.add(1, 1);
    Ok(traffic)
}

/// How many entities one chunk of [`orm_select_chunks`] holds.
pub const CHUNK: usize = 1000;

/// W4 through the ORM as a stream: each entity is read and dropped as its
/// row arrives, so memory does not grow with N.
pub async fn orm_select_stream(db: &Database, n: usize, expected: u64) -> Outcome {
    let mut session = db.session();
    let mut stream = session.query::<Customer>().stream().await?;
    let (mut count, mut sum) = (0, 0);
    while let Some(customer) = stream.try_next().await? {
        count += 1;
        sum += checksum(&customer);
    }
    drop(stream);
    check(count == n && sum == expected, "streamed every row")?;
    let mut traffic = Traffic::default();
    traffic.add_session(session.commit().await?);
    Ok(traffic)
}

/// W4 through the ORM in tracked chunks of [`CHUNK`] (a cursor, one FETCH
/// per chunk), as a batch job that might change what it reads would.
pub async fn orm_select_chunks(db: &Database, n: usize, expected: u64) -> Outcome {
    let mut session = db.session();
    let mut chunks = session.query::<Customer>().stream_tracked(CHUNK).await?;
    let (mut count, mut sum) = (0, 0);
    while let Some(chunk) = chunks.next_chunk().await? {
        count += chunk.len();
        sum += chunk.iter().map(|customer| checksum(&customer.read())).sum::<u64>();
    }
    drop(chunks);
    check(count == n && sum == expected, "read every row in chunks")?;
    let mut traffic = Traffic::default();
    traffic.add_session(session.commit().await?);
    Ok(traffic)
}

/// W4 by hand, streamed: one query, each row decoded into a struct, read
/// and dropped as it arrives.
pub async fn raw_select_stream(db: &Database, n: usize, expected: u64) -> Outcome {
    let client = db.pool().get().await?;
    let statement = client.prepare_cached("SELECT id, name, description FROM customer").await?;
    let stream = client.query_raw(&statement, std::iter::empty::<i32>()).await?;
    pin_mut!(stream);
    let (mut count, mut sum) = (0, 0);
    while let Some(row) = stream.try_next().await? {
        let customer = Customer { id: row.try_get(0)?, name: row.try_get(1)?, description: row.try_get(2)? };
        count += 1;
        sum += checksum(&customer);
    }
    check(count == n && sum == expected, "streamed every row")?;
    let mut traffic = Traffic::default();
    traffic.add(1, 1);
    Ok(traffic)
}

/// The keys W5 reads: a fixed pseudo-random sequence (xorshift), so both
/// sides read the same rows.
pub fn random_keys(count: usize, rows: usize) -> Vec<i32> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            i32::try_from(state % rows as u64).unwrap_or(0) + 1
        })
        .collect()
}

/// W5 through the ORM: a session per lookup, one row by key, commit.
pub async fn orm_short_selects(db: &Database, keys: &[i32]) -> Outcome {
    let mut traffic = Traffic::default();
    for &key in keys {
        let mut session = db.session();
        let found = session.get::<Customer>(key).await?;
        check(found.is_some(), "the row exists")?;
        traffic.add_session(session.commit().await?);
    }
    Ok(traffic)
}

/// W5 by hand: a cached prepared statement on a pooled connection.
pub async fn raw_short_selects(db: &Database, keys: &[i32]) -> Outcome {
    let mut traffic = Traffic::default();
    for key in keys {
        let client = db.pool().get().await?;
        let statement = client.prepare_cached("SELECT id, name, description FROM customer WHERE id = $1").await?;
        let row = client.query_opt(&statement, &[key]).await?;
        let found = row
            .map(|row| {
                Ok::<_, tokio_postgres::Error>(Customer {
                    id: row.try_get(0)?,
                    name: row.try_get(1)?,
                    description: row.try_get(2)?,
                })
            })
            .transpose()?;
        check(found.is_some(), "the row exists")?;
        traffic.add(1, 1);
    }
    Ok(traffic)
}

/// W6: the same key `n` times in one session; all but the first are
/// identity-map hits with no SQL.
pub async fn orm_identity_hits(db: &Database, n: usize) -> Outcome {
    let mut session = db.session();
    for _ in 0..n {
        let found = session.get::<Customer>(1).await?;
        check(found.is_some(), "the row exists")?;
    }
    let mut traffic = Traffic::default();
    traffic.add_session(session.commit().await?);
    Ok(traffic)
}

/// The mixed identity-map workload's session: the rows of `keys` loaded
/// (one statement) before the clock starts, so that what is timed is only
/// the gets, all hits in a map of that many entries.
pub async fn orm_identity_session(db: &Database, keys: &[i32]) -> Result<Session, BenchError> {
    let mut session = db.session();
    let loaded = session.get_many::<Customer>(keys).await?;
    check(loaded.len() == keys.len(), "every key has its row")?;
    Ok(session)
}

/// W6, mixed: gets of `gets` (keys among those the session tracks, in a
/// pseudo-random order) in one session, each a hit in the identity map,
/// each handle read. Hands the session back, to be dropped after the clock.
pub async fn orm_identity_mixed(mut session: Session, gets: &[i32]) -> Kept<Session> {
    let mut sum = 0_i64;
    for &key in gets {
        let found = session.get::<Customer>(key).await?.ok_or("a key without its row")?;
        sum += i64::from(found.read().id);
    }
    check(sum == gets.iter().copied().map(i64::from).sum::<i64>(), "read every handle")?;
    check(session.stats().statements == 1, "every get was a hit")?;
    Ok((Traffic::default(), session))
}

/// The hand-written counterpart of the identity map: the same rows, loaded
/// before the clock into a `HashMap` of shared structs.
pub async fn raw_identity_cache(db: &Database, keys: &[i32]) -> Result<HashMap<i32, Arc<Customer>>, BenchError> {
    let client = db.pool().get().await?;
    let rows = client.query("SELECT id, name, description FROM customer WHERE id = ANY($1)", &[&keys]).await?;
    let mut cache = HashMap::with_capacity(rows.len());
    for row in rows {
        let customer = Customer { id: row.try_get(0)?, name: row.try_get(1)?, description: row.try_get(2)? };
        cache.insert(customer.id, Arc::new(customer));
    }
    check(cache.len() == keys.len(), "every key has its row")?;
    Ok(cache)
}

/// W6, mixed, by hand: the same gets as lookups in the `HashMap`, each
/// result cloned out (a shared pointer, as a handle is) and read.
#[allow(clippy::unused_async)] // A future, as every side of a comparison is.
pub async fn raw_identity_mixed(cache: &HashMap<i32, Arc<Customer>>, gets: &[i32]) -> Outcome {
    let mut sum = 0_i64;
    for key in gets {
        let found = Arc::clone(cache.get(key).ok_or("a key without its row")?);
        sum += i64::from(found.id);
    }
    check(sum == gets.iter().copied().map(i64::from).sum::<i64>(), "read every struct")?;
    Ok(Traffic::default())
}

//! The benchmark binary: each workload of DESIGN.md through the ORM and
//! through the best hand-written tokio-postgres code, alternating in one
//! run, with the ratio of their median times.
//!
//! ```text
//! cargo run --release -p bench -- [--workloads W1,W3] [--scale 0.1] [--runs 5] [--json] [--statement-mode unnamed] [--copy-threshold off] [--copy-update-threshold off]
//! ```
//!
//! Uses `DATABASE_URL` (see `scripts/db.sh`) and creates its own database there.

mod array_workloads;
mod customer;
mod event_workloads;
mod measure;
mod memory;
mod nested;
mod query_workloads;
mod report;
mod workloads;

use clap::Parser;
use orm_core::{Database, DatabaseConfig, StatementMode};
use orm_tests::TestDb;

use measure::{median, timed, timed_keeping, Run};
use report::Row;
use workloads::BenchError;

/// Command-line options.
#[derive(Parser, Debug)]
#[command(about = "The ORM against hand-written tokio-postgres on the DESIGN.md workloads")]
struct Options {
    /// Workloads to run, comma-separated (W1..W11).
    #[arg(long, value_delimiter = ',', default_value = "W1,W2,W3,W4,W5,W6,W7,W8,W9,W10,W11")]
    workloads: Vec<String>,
    /// Row or request count for every selected workload, instead of the defaults.
    #[arg(long)]
    n: Option<usize>,
    /// Multiplies the default counts (0.01 for a quick check).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Runs of each side; the median is reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// How the ORM side sends statements: `prepared` (the default) or
    /// `unnamed`, the mode for a pooler in transaction mode. The
    /// hand-written side prepares its statements either way.
    #[arg(long, default_value = "prepared")]
    statement_mode: StatementMode,
    /// The ORM's `DatabaseConfig::copy_threshold`: the smallest insert
    /// batch it writes by binary COPY, or `off` for never (W1 then
    /// measures the UNNEST insert). Default: the ORM's default.
    #[arg(long, value_parser = parse_copy_threshold)]
    copy_threshold: Option<CopyThreshold>,
    /// The ORM's `DatabaseConfig::copy_update_threshold`: the smallest
    /// update batch it writes by binary COPY into a temporary table, or
    /// `off` for never (W3 then measures the UNNEST update). Default: the
    /// ORM's default.
    #[arg(long, value_parser = parse_copy_threshold)]
    copy_update_threshold: Option<CopyThreshold>,
    /// Prints JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// A quick check that every workload works: small counts, one run.
    #[arg(long)]
    smoke: bool,
    /// Which sides to run: `both` (the default), or `orm`, `raw` or `none`
    /// alone, for a profiler: the instructions of one side are its run's
    /// count minus that of `none` (the setup alone).
    #[arg(long, default_value = "both")]
    side: Side,
    /// Internal: load W4 once in this process and print its peak memory growth.
    #[arg(long, hide = true)]
    memory_probe: Option<String>,
    /// The tokio runtime both sides run on: `multi-thread` (the default,
    /// as `#[tokio::main]` builds it) or `current-thread`, where a request
    /// and its connection's task share one thread.
    #[arg(long, default_value = "multi-thread")]
    runtime: Flavour,
}

/// The kinds of tokio runtime a run can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Flavour {
    MultiThread,
    CurrentThread,
}

/// The sides of a comparison that a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Side {
    Both,
    Orm,
    Raw,
    None,
}

/// The `--side` of this run, set once at start.
static SIDE: std::sync::OnceLock<Side> = std::sync::OnceLock::new();

/// A `--copy-threshold` or `--copy-update-threshold`: a row count, or
/// `None` for `off`.
#[derive(Clone, Copy, Debug)]
struct CopyThreshold(Option<usize>);

fn parse_copy_threshold(text: &str) -> Result<CopyThreshold, String> {
    if text == "off" {
        return Ok(CopyThreshold(None));
    }
    text.parse().map(|rows| CopyThreshold(Some(rows))).map_err(|_| format!("{text}: a row count or `off`"))
}

/// The default N of each workload, from DESIGN.md.
fn default_n(workload: &str) -> usize {
    match workload {
        "W1" | "W3" | "W6" | "W8" | "W9" | "W11" => 100_000,
        "W4" => 500_000,
        // Users, each with 10 posts with 10 comments each.
        "W7" => 100,
        _ => 10_000,
    }
}

fn main() -> Result<(), BenchError> {
    let options = Options::parse();
    let mut runtime = match options.runtime {
        Flavour::MultiThread => tokio::runtime::Builder::new_multi_thread(),
        Flavour::CurrentThread => tokio::runtime::Builder::new_current_thread(),
    };
    runtime.enable_all().build()?.block_on(run(options))
}

async fn run(mut options: Options) -> Result<(), BenchError> {
    if let Some(variant) = options.memory_probe.take() {
        return memory_probe(&variant, options.n.unwrap_or(default_n("W4"))).await;
    }
    SIDE.get_or_init(|| options.side);
    if options.smoke {
        options.scale = options.scale.min(0.01);
        options.runs = 1;
    }
    let test_db = TestDb::new().await;
    let mut config = DatabaseConfig::from_url(test_db.url())?;
    config.max_connections = 4;
    config.statements = options.statement_mode;
    if let Some(CopyThreshold(threshold)) = options.copy_threshold {
        config.copy_threshold = threshold;
    }
    if let Some(CopyThreshold(threshold)) = options.copy_update_threshold {
        config.copy_update_threshold = threshold;
    }
    let db = Database::with_config(config)?;
    db.pool().get().await?.batch_execute(customer::SCHEMA).await?;
    db.pool().get().await?.batch_execute(query_workloads::SCHEMA).await?;
    db.pool().get().await?.batch_execute(array_workloads::SCHEMA).await?;

    let mut rows = Vec::new();
    for workload in &options.workloads {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
        let n = options.n.unwrap_or_else(|| ((default_n(workload) as f64 * options.scale) as usize).max(10));
        eprintln!("running {workload} with N = {n}, {} run(s) per side", options.runs);
        rows.extend(run_workload(&db, workload, n, options.runs, test_db.url()).await?);
    }
    if options.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", report::table(&rows));
    }
    Ok(())
}

/// Runs the ORM and the hand-written side alternately (who goes first
/// alternates too, so drift of the machine cancels out).
async fn compare<O, R, OF, RF>(runs: usize, mut orm: O, mut raw: R) -> Result<(Run, Run), BenchError>
where
    O: FnMut(usize) -> OF,
    R: FnMut(usize) -> RF,
    OF: std::future::Future<Output = Result<Run, BenchError>>,
    RF: std::future::Future<Output = Result<Run, BenchError>>,
{
    let side = SIDE.get().copied().unwrap_or(Side::Both);
    let (run_orm, run_raw) = (matches!(side, Side::Both | Side::Orm), matches!(side, Side::Both | Side::Raw));
    let mut orm_runs = Vec::new();
    let mut raw_runs = Vec::new();
    for round in 0..runs {
        if round % 2 == 0 {
            if run_orm {
                orm_runs.push(orm(round).await?);
            }
            if run_raw {
                raw_runs.push(raw(round).await?);
            }
        } else {
            if run_raw {
                raw_runs.push(raw(round).await?);
            }
            if run_orm {
                orm_runs.push(orm(round).await?);
            }
        }
    }
    Ok((median(&orm_runs), median(&raw_runs)))
}

async fn run_workload(db: &Database, workload: &str, n: usize, runs: usize, url: &str) -> Result<Vec<Row>, BenchError> {
    use workloads as w;
    let row = |name: &str, raw_name: &str, orm: Run, raw: Run| Row::new(workload, name, raw_name, n, orm, raw);
    Ok(match workload {
        "W1" => {
            let (orm, raw) = compare(
                runs,
                |_| async {
                    w::reset(db).await?;
                    let input = w::new_customers(n);
                    let (run, output) = timed_keeping(w::orm_bulk_insert(db, input)).await?;
                    drop(output);
                    Ok(run)
                },
                |_| async {
                    w::reset(db).await?;
                    let input = w::new_customers(n);
                    let (run, output) = timed_keeping(w::raw_bulk_insert(db, input)).await?;
                    drop(output);
                    Ok(run)
                },
            )
            .await?;
            let (_, copy) = compare(
                runs,
                |_| async { Ok(Run::default()) },
                |_| async {
                    w::reset(db).await?;
                    let input = w::new_customers(n);
                    timed(w::raw_copy_insert(db, &input)).await
                },
            )
            .await?;
            vec![
                row("bulk insert", "UNNEST ... RETURNING", orm, raw),
                row("bulk insert", "COPY (floor, no keys)", orm, copy),
            ]
        }
        "W2" => {
            w::reset(db).await?;
            let ((orm, raw), (orm_again, alone)) = compare_single_inserts(db, n, runs).await?;
            vec![
                row("single inserts", "BEGIN+INSERT+COMMIT pipelined", orm, raw),
                row("single inserts", "INSERT alone (floor)", orm_again, alone),
            ]
        }
        "W3" => {
            w::seed(db, n).await?;
            let (orm, raw) = compare(
                runs,
                |round| {
                    let names = w::new_names(n, 2 * round);
                    timed(w::orm_bulk_update(db, n, names))
                },
                |round| {
                    let names = w::new_names(n, 2 * round + 1);
                    timed(w::raw_bulk_update(db, n, names))
                },
            )
            .await?;
            let (_, copy) = compare(
                runs,
                |_| async { Ok(Run::default()) },
                |round| {
                    let names = w::new_names(n, 2 * round + 1);
                    timed(w::raw_bulk_update_copy(db, n, names))
                },
            )
            .await?;
            vec![
                row("bulk update", "SELECT + UNNEST UPDATE", orm, raw),
                row("bulk update", "SELECT + COPY to temp + UPDATE (floor)", orm, copy),
            ]
        }
        "W4" => return run_large_select(db, n, runs, url).await,
        "W5" => {
            w::seed(db, n).await?;
            let keys = w::random_keys(n, n);
            let (orm, raw) =
                compare(runs, |_| timed(w::orm_short_selects(db, &keys)), |_| timed(w::raw_short_selects(db, &keys)))
                    .await?;
            vec![row("short selects", "prepared statement, same pool", orm, raw)]
        }
        "W6" => return run_identity_workload(db, n, runs).await,
        "W7" => {
            let (orm, raw) = compare_nested(db, n, runs).await?;
            vec![row("users/posts/comments", "3 x = ANY($1), HashMap grouping", orm, raw)]
        }
        later => return run_later_workload(db, later, n, runs, url).await,
    })
}

/// The workloads added after W1-W7, each run by its own function.
async fn run_later_workload(
    db: &Database,
    workload: &str,
    n: usize,
    runs: usize,
    url: &str,
) -> Result<Vec<Row>, BenchError> {
    match workload {
        "W8" | "W9" => run_query_workload(db, workload, n, runs).await,
        "W10" => run_array_workload(db, n, runs).await,
        "W11" => run_event_workload(db, n, runs, url).await,
        other => Err(format!("unknown workload {other}; expected W1..W11").into()),
    }
}

/// W11, hooks: W3 through a pool whose sessions stamp every update with
/// an entity hook, on the same database.
async fn run_event_workload(db: &Database, n: usize, runs: usize, url: &str) -> Result<Vec<Row>, BenchError> {
    let mut config = DatabaseConfig::from_url(url)?;
    config.max_connections = 4;
    config.events.on_entity(event_workloads::Stamp);
    let hooked = Database::with_config(config)?;
    workloads::seed(db, n).await?;
    let (orm, raw) = compare(
        runs,
        |round| timed(workloads::orm_bulk_update(&hooked, n, workloads::new_names(n, 2 * round))),
        |round| timed(event_workloads::raw_stamped_update(db, n, workloads::new_names(n, 2 * round + 1))),
    )
    .await?;
    Ok(vec![Row::new("W11", "bulk update, stamped by a hook", "SELECT + UNNEST UPDATE of 2 columns", n, orm, raw)])
}

/// W4, a large select: tracked, untracked, streamed and in tracked chunks,
/// each against the hand-written load in the same alternation, with the
/// peak memory of each measured in a child process.
async fn run_large_select(db: &Database, n: usize, runs: usize, url: &str) -> Result<Vec<Row>, BenchError> {
    use workloads as w;
    let row = |name: &str, raw_name: &str, orm: Run, raw: Run| Row::new("W4", name, raw_name, n, orm, raw);
    w::seed(db, n).await?;
    let sum = w::expected_checksum(db).await?;
    let (tracked, raw) =
        compare(runs, |_| timed(w::orm_select_tracked(db, n, sum)), |_| timed(w::raw_select(db, n, sum))).await?;
    let (untracked, raw_again) =
        compare(runs, |_| timed(w::orm_select_untracked(db, n, sum)), |_| timed(w::raw_select(db, n, sum))).await?;
    let (stream, raw_stream) =
        compare(runs, |_| timed(w::orm_select_stream(db, n, sum)), |_| timed(w::raw_select_stream(db, n, sum))).await?;
    let (chunks, raw_stream_again) =
        compare(runs, |_| timed(w::orm_select_chunks(db, n, sum)), |_| timed(w::raw_select_stream(db, n, sum))).await?;
    let raw_peak = memory::probe_in_child("raw", n, url);
    let raw_stream_peak = memory::probe_in_child("raw-stream", n, url);
    Ok(vec![
        row("large select, tracked", "query_raw into structs", tracked, raw)
            .with_peak(memory::probe_in_child("tracked", n, url), raw_peak),
        row("large select, untracked", "query_raw into structs", untracked, raw_again)
            .with_peak(memory::probe_in_child("untracked", n, url), raw_peak),
        row("large select, stream()", "query_raw, decode, drop", stream, raw_stream)
            .with_peak(memory::probe_in_child("stream", n, url), raw_stream_peak),
        row("large select, chunks", "query_raw, decode, drop", chunks, raw_stream_again)
            .with_peak(memory::probe_in_child("chunks", n, url), raw_stream_peak),
    ])
}

/// W6, identity-map hits: N gets of one key, and a tenth of N gets over a
/// hundredth of N keys against a `HashMap` of the same rows.
async fn run_identity_workload(db: &Database, n: usize, runs: usize) -> Result<Vec<Row>, BenchError> {
    use workloads as w;
    let workload = "W6";
    let row = |name: &str, raw_name: &str, orm: Run, raw: Run| Row::new(workload, name, raw_name, n, orm, raw);
    // The mixed row: a tenth of N gets over a hundredth of N keys
    // (10,000 over 1,000 at the default N).
    let rows = (n / 100).max(1);
    let gets = w::random_keys((n / 10).max(1), rows);
    let mut keys = gets.clone();
    keys.sort_unstable();
    keys.dedup();
    w::seed(db, rows).await?;
    let (orm, _) = compare(runs, |_| timed(w::orm_identity_hits(db, n)), |_| async { Ok(Run::default()) }).await?;
    let cache = w::raw_identity_cache(db, &keys).await?;
    let (mixed, raw_mixed) = compare(
        runs,
        |_| async {
            let session = w::orm_identity_session(db, &keys).await?;
            let (run, session) = timed_keeping(w::orm_identity_mixed(session, &gets)).await?;
            drop(session);
            Ok(run)
        },
        |_| timed(w::raw_identity_mixed(&cache, &gets)),
    )
    .await?;
    let distinct = format!("identity-map hits, {} keys", keys.len());
    Ok(vec![
        row("identity-map hits, 1 key", "(none: no SQL to compare)", orm, Run::default()),
        Row::new(workload, &distinct, "HashMap<i32, Arc<struct>> lookups", gets.len(), mixed, raw_mixed),
    ])
}

/// W8 and W9, the workloads of the query builder beyond entity loads.
async fn run_query_workload(db: &Database, workload: &str, n: usize, runs: usize) -> Result<Vec<Row>, BenchError> {
    let row = |name: &str, raw_name: &str, orm: Run, raw: Run| Row::new(workload, name, raw_name, n, orm, raw);
    Ok(match workload {
        "W8" => {
            query_workloads::seed_comments(db, n).await?;
            let (orm, raw) = compare(
                runs,
                |_| timed(query_workloads::orm_comment_counts(db, n)),
                |_| timed(query_workloads::raw_comment_counts(db, n)),
            )
            .await?;
            vec![row("aggregate: counts per post", "prepared GROUP BY", orm, raw)]
        }
        "W9" => {
            let (orm, raw) = compare(
                runs,
                |round| async move {
                    query_workloads::seed_prices(db, n).await?;
                    let input = query_workloads::prices(n, round);
                    timed(query_workloads::orm_upsert(db, input)).await
                },
                |round| async move {
                    query_workloads::seed_prices(db, n).await?;
                    let input = query_workloads::prices(n, round);
                    timed(query_workloads::raw_upsert(db, input)).await
                },
            )
            .await?;
            vec![row("upsert, half existing", "UNNEST ... ON CONFLICT DO UPDATE", orm, raw)]
        }
        other => return Err(format!("unknown workload {other}").into()),
    })
}

/// W10, array columns: the ORM's batched insert and update against each
/// hand-written way of batching array columns, and against one statement
/// per row, pipelined.
async fn run_array_workload(db: &Database, n: usize, runs: usize) -> Result<Vec<Row>, BenchError> {
    use array_workloads as a;
    let row = |name: &str, raw_name: &str, orm: Run, raw: Run| Row::new("W10", name, raw_name, n, orm, raw);
    let orm_insert = async |_| {
        a::reset(db).await?;
        let input = a::new_tagged(n);
        let (run, output) = timed_keeping(a::orm_insert(db, input)).await?;
        drop(output);
        Ok(run)
    };
    // Each hand-written insert, against the ORM's in the same alternation.
    macro_rules! insert_against {
        ($raw:path) => {
            compare(runs, orm_insert, async |_| {
                a::reset(db).await?;
                let input = a::new_tagged(n);
                let (run, output) = timed_keeping($raw(db, input)).await?;
                drop(output);
                Ok(run)
            })
            .await?
        };
    }
    let (orm, literals) = insert_against!(a::raw_literals);
    let (orm_2, jsonb) = insert_against!(a::raw_jsonb);
    let (orm_3, aggregated) = insert_against!(a::raw_flat_aggregated);
    let (orm_4, sliced) = insert_against!(a::raw_flat_sliced);
    let (orm_5, single) = insert_against!(a::raw_single_inserts);
    let (orm_6, copy) = insert_against!(a::raw_copy);
    a::seed(db, n).await?;
    let (orm_update, literal_update) = compare(
        runs,
        |round| timed(a::orm_update(db, n, 2 * round)),
        |round| timed(a::raw_literal_update(db, n, 2 * round + 1)),
    )
    .await?;
    let (orm_update_2, single_update) = compare(
        runs,
        |round| timed(a::orm_update(db, n, 2 * round + 100)),
        |round| timed(a::raw_single_updates(db, n, 2 * round + 101)),
    )
    .await?;
    let insert = "array columns: insert";
    let update = "array columns: update";
    Ok(vec![
        row(insert, "text[] of array literals, cast back", orm, literals),
        row(insert, "jsonb[], unpacked per row", orm_2, jsonb),
        row(insert, "flattened elements + row numbers, array_agg", orm_3, aggregated),
        row(insert, "flattened elements + offsets, slices", orm_4, sliced),
        row(insert, "one INSERT per row, pipelined", orm_5, single),
        row(insert, "binary COPY (floor, no keys)", orm_6, copy),
        row(update, "text[] of array literals, cast back", orm_update, literal_update),
        row(update, "one UPDATE per row, pipelined", orm_update_2, single_update),
    ])
}

/// W7: `n` users with their posts and comments, loaded as a tree on both
/// sides; each side's tree (the ORM's is its session) is freed after the clock.
/// W2: the ORM beside pipelined `BEGIN`+`INSERT`+`COMMIT`, then beside
/// each `INSERT` alone (what the ORM sends for such a unit of work), each
/// pair alternating.
async fn compare_single_inserts(db: &Database, n: usize, runs: usize) -> Result<((Run, Run), (Run, Run)), BenchError> {
    use workloads as w;
    let pipelined = compare(
        runs,
        |_| timed(w::orm_single_inserts(db, w::new_customers(n))),
        |_| timed(w::raw_single_inserts(db, w::new_customers(n))),
    )
    .await?;
    let alone = compare(
        runs,
        |_| timed(w::orm_single_inserts(db, w::new_customers(n))),
        |_| timed(w::raw_single_inserts_alone(db, w::new_customers(n))),
    )
    .await?;
    Ok((pipelined, alone))
}

async fn compare_nested(db: &Database, n: usize, runs: usize) -> Result<(Run, Run), BenchError> {
    let expected = nested::seed(db, n).await?;
    compare(
        runs,
        |_| async {
            let (run, session) = timed_keeping(nested::orm_nested(db, &expected)).await?;
            drop(session);
            Ok(run)
        },
        |_| async {
            let (run, tree) = timed_keeping(nested::raw_nested(db, &expected)).await?;
            drop(tree);
            Ok(run)
        },
    )
    .await
}

/// Child-process side of [`memory::probe_in_child`]: loads the table once
/// and prints how far the peak resident set grew.
async fn memory_probe(variant: &str, n: usize) -> Result<(), BenchError> {
    let url = std::env::var("BENCH_DATABASE_URL")?;
    let db = Database::connect(&url)?;
    // Connect first, so the pool's own memory is in the baseline.
    drop(db.pool().get().await?);
    let sum = workloads::expected_checksum(&db).await?;
    let baseline = memory::current_rss_bytes().unwrap_or(0);
    match variant {
        "tracked" => workloads::orm_select_tracked(&db, n, sum).await?,
        "untracked" => workloads::orm_select_untracked(&db, n, sum).await?,
        "raw" => workloads::raw_select(&db, n, sum).await?,
        "stream" => workloads::orm_select_stream(&db, n, sum).await?,
        "chunks" => workloads::orm_select_chunks(&db, n, sum).await?,
        "raw-stream" => workloads::raw_select_stream(&db, n, sum).await?,
        other => return Err(format!("unknown memory probe {other}").into()),
    };
    println!("{}", memory::peak_rss_bytes().unwrap_or(0).saturating_sub(baseline));
    Ok(())
}

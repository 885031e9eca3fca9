//! The results table and its JSON form.

use std::fmt::Write;

use serde::Serialize;

use crate::measure::Run;

/// One line of the report: a workload, the ORM side and the hand-written side.
#[derive(Debug, Serialize)]
pub struct Row {
    /// W1..W7.
    pub workload: String,
    /// What the workload does.
    pub name: String,
    /// How the hand-written side does it.
    pub raw_method: String,
    /// Rows or requests.
    pub n: usize,
    /// Median ORM seconds.
    pub orm_seconds: f64,
    /// Median hand-written seconds (0 where there is nothing to compare).
    pub raw_seconds: f64,
    /// ORM time over hand-written time.
    pub ratio: Option<f64>,
    /// Rows (or requests, or hits) per second through the ORM.
    pub orm_rows_per_second: f64,
    /// ORM statements and round trips in the median run.
    pub orm_statements: u64,
    /// See `orm_statements`.
    pub orm_round_trips: u64,
    /// Hand-written statements and round trips.
    pub raw_statements: u64,
    /// See `raw_statements`.
    pub raw_round_trips: u64,
    /// Longest single poll of the ORM side's future, in milliseconds
    /// (median over the runs): how long it kept its runtime thread from
    /// every other task.
    pub orm_longest_poll_ms: f64,
    /// The same for the hand-written side (0 where there is none).
    pub raw_longest_poll_ms: f64,
    /// Longest single poll of the one ORM call the workload times alone
    /// (W1's `commit`, W4's load), in milliseconds (median over the runs).
    pub orm_call_longest_poll_ms: Option<f64>,
    /// Peak memory growth of the ORM side, in MiB (W4 only).
    pub orm_peak_mib: Option<f64>,
    /// Peak memory growth of the hand-written side, in MiB (W4 only).
    pub raw_peak_mib: Option<f64>,
}

#[allow(clippy::cast_precision_loss)]
fn mib(bytes: Option<u64>) -> Option<f64> {
    bytes.map(|b| b as f64 / (1024.0 * 1024.0))
}

impl Row {
    /// A line comparing `orm` with `raw`.
    #[allow(clippy::cast_precision_loss)]
    pub fn new(workload: &str, name: &str, raw_method: &str, n: usize, orm: Run, raw: Run) -> Self {
        Row {
            workload: workload.to_owned(),
            name: name.to_owned(),
            raw_method: raw_method.to_owned(),
            n,
            orm_seconds: orm.seconds,
            raw_seconds: raw.seconds,
            ratio: (raw.seconds > 0.0).then(|| orm.seconds / raw.seconds),
            orm_rows_per_second: if orm.seconds > 0.0 { n as f64 / orm.seconds } else { 0.0 },
            orm_statements: orm.statements,
            orm_round_trips: orm.round_trips,
            raw_statements: raw.statements,
            raw_round_trips: raw.round_trips,
            orm_longest_poll_ms: orm.longest_poll * 1000.0,
            raw_longest_poll_ms: raw.longest_poll * 1000.0,
            orm_call_longest_poll_ms: orm.call_longest_poll.map(|poll| poll * 1000.0),
            orm_peak_mib: None,
            raw_peak_mib: None,
        }
    }

    /// Adds the peak memory of both sides.
    pub fn with_peak(mut self, orm: Option<u64>, raw: Option<u64>) -> Self {
        self.orm_peak_mib = mib(orm);
        self.raw_peak_mib = mib(raw);
        self
    }
}

/// The rows as an aligned text table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<4} {:<24} {:<31} {:>8} {:>9} {:>9} {:>6} {:>12} {:>11} {:>11} {:>13} {:>11} {:>15}",
        "wl",
        "workload",
        "hand-written side",
        "N",
        "ORM s",
        "raw s",
        "ratio",
        "ORM rows/s",
        "ORM st/rt",
        "raw st/rt",
        "max poll ms",
        "call poll",
        "peak MiB o/r"
    );
    for row in rows {
        let ratio = row.ratio.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"));
        let peak = match (row.orm_peak_mib, row.raw_peak_mib) {
            (Some(orm), Some(raw)) => format!("{orm:.1}/{raw:.1}"),
            _ => "-".to_owned(),
        };
        let _ = writeln!(
            out,
            "{:<4} {:<24} {:<31} {:>8} {:>9.3} {:>9.3} {:>6} {:>12.0} {:>11} {:>11} {:>13} {:>11} {:>15}",
            row.workload,
            row.name,
            row.raw_method,
            row.n,
            row.orm_seconds,
            row.raw_seconds,
            ratio,
            row.orm_rows_per_second,
            format!("{}/{}", row.orm_statements, row.orm_round_trips),
            format!("{}/{}", row.raw_statements, row.raw_round_trips),
            format!("{:.1}/{:.1}", row.orm_longest_poll_ms, row.raw_longest_poll_ms),
            row.orm_call_longest_poll_ms.map_or_else(|| "-".to_owned(), |poll| format!("{poll:.1}")),
            peak,
        );
    }
    out
}

//! What one run of one side of a workload measured.

use std::future::Future;
use std::time::Instant;

use orm_core::SessionStats;

/// Time and database traffic of one run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Run {
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Data statements sent.
    pub statements: u64,
    /// Round trips waited for (prepares included when not cached).
    pub round_trips: u64,
}

/// Statements and round trips of hand-written code, counted by that code
/// where it sends them (the ORM counts its own in [`SessionStats`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Traffic {
    /// Data statements sent.
    pub statements: u64,
    /// Round trips waited for.
    pub round_trips: u64,
}

impl Traffic {
    /// Adds what one session sent.
    pub fn add_session(&mut self, stats: SessionStats) {
        self.statements += stats.statements;
        self.round_trips += stats.round_trips;
    }

    /// Adds `statements` sent together in `round_trips` waits.
    pub fn add(&mut self, statements: u64, round_trips: u64) {
        self.statements += statements;
        self.round_trips += round_trips;
    }
}

/// Times `work`, which reports the traffic it caused.
pub async fn timed<F>(work: F) -> Result<Run, Box<dyn std::error::Error>>
where
    F: Future<Output = Result<Traffic, Box<dyn std::error::Error>>>,
{
    let start = Instant::now();
    let traffic = work.await?;
    Ok(Run { seconds: start.elapsed().as_secs_f64(), statements: traffic.statements, round_trips: traffic.round_trips })
}

/// The median of the runs' seconds, with the traffic of the median run.
pub fn median(runs: &[Run]) -> Run {
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

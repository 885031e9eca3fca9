//! What one run of one side of a workload measured.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

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
    /// Seconds of the longest single `poll` of the run's future: how long
    /// it held its runtime thread at once, during which every other task
    /// scheduled on that thread (other requests of a server) waited.
    pub longest_poll: f64,
    /// Seconds of the longest poll of the one ORM call the workload times
    /// alone: `commit` in W1, the load in W4 (tracked and untracked), apart
    /// from the caller's own work around it (reading and dropping the rows).
    pub call_longest_poll: Option<f64>,
}

/// Statements and round trips of hand-written code, counted by that code
/// where it sends them (the ORM counts its own in [`SessionStats`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Traffic {
    /// Data statements sent.
    pub statements: u64,
    /// Round trips waited for.
    pub round_trips: u64,
    /// The longest poll of the ORM call the workload times alone (see
    /// [`Run::call_longest_poll`]).
    pub call_longest_poll: Option<Duration>,
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

/// Times `work`, which reports the traffic it caused, and the longest of
/// its polls.
pub async fn timed<F>(work: F) -> Result<Run, Box<dyn std::error::Error>>
where
    F: Future<Output = Result<Traffic, Box<dyn std::error::Error>>>,
{
    // Boxed, so that this future does not hold a second copy of `work`'s.
    let (run, ()) = timed_keeping(Box::pin(async { work.await.map(|traffic| (traffic, ())) })).await?;
    Ok(run)
}

/// [`timed`] for work that hands back its outputs, so that the caller frees
/// them after the clock stops, as the inputs were built before it started.
pub async fn timed_keeping<F, K>(work: F) -> Result<(Run, K), Box<dyn std::error::Error>>
where
    F: Future<Output = Result<(Traffic, K), Box<dyn std::error::Error>>>,
{
    let start = Instant::now();
    let (outcome, longest_poll) = longest_poll(work).await;
    let seconds = start.elapsed().as_secs_f64();
    let (traffic, kept) = outcome?;
    let run = Run {
        seconds,
        statements: traffic.statements,
        round_trips: traffic.round_trips,
        longest_poll: longest_poll.as_secs_f64(),
        call_longest_poll: traffic.call_longest_poll.map(|poll| poll.as_secs_f64()),
    };
    Ok((run, kept))
}

/// Runs `work` and returns its output with the longest time one `poll` of
/// it took.
pub async fn longest_poll<F: Future>(work: F) -> (F::Output, Duration) {
    PollTimed::new(work).await
}

/// Runs a future and keeps the longest time one `poll` of it took: the
/// longest stretch its thread ran no other task. (The clock also counts
/// time the thread was descheduled by the OS mid-poll, so on a busy machine
/// it can only overstate.)
struct PollTimed<F> {
    inner: Pin<Box<F>>,
    longest: Duration,
}

impl<F> PollTimed<F> {
    fn new(inner: F) -> Self {
        PollTimed { inner: Box::pin(inner), longest: Duration::ZERO }
    }
}

impl<F: Future> Future for PollTimed<F> {
    type Output = (F::Output, Duration);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let start = Instant::now();
        let polled = self.inner.as_mut().poll(cx);
        let took = start.elapsed();
        self.longest = self.longest.max(took);
        polled.map(|output| (output, self.longest))
    }
}

/// The median of the runs' seconds, with the traffic of the median run,
/// and the median of the runs' longest polls (a figure of its own: the run
/// of median time need not be the one of median longest poll).
pub fn median(runs: &[Run]) -> Run {
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    let mut run = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
    sorted.sort_by(|a, b| a.longest_poll.total_cmp(&b.longest_poll));
    run.longest_poll = sorted.get(sorted.len() / 2).map_or(0.0, |r| r.longest_poll);
    let mut calls: Vec<f64> = runs.iter().filter_map(|r| r.call_longest_poll).collect();
    calls.sort_by(f64::total_cmp);
    run.call_longest_poll = calls.get(calls.len() / 2).copied();
    run
}

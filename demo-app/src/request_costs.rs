//! What requests cost the database, summed over the life of the process:
//! requests answered, and the statements and round trips their sessions
//! sent. `GET /health` reports the sums; the load script reads them before
//! and after a run and divides, so that every change sees its cost per
//! request beside requests/s and latency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::response::Response;
use orm_core::axum::SessionOutcome;
use serde::Serialize;
use tower::util::MapResponseLayer;

/// The sums, shared by all requests: three relaxed atomic additions per
/// request.
#[derive(Default, Debug)]
pub struct RequestCosts {
    requests: AtomicU64,
    statements: AtomicU64,
    round_trips: AtomicU64,
}

/// The sums at one moment.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CostTotals {
    /// Requests answered.
    pub requests: u64,
    /// Statements their sessions sent (transaction control not counted).
    pub statements: u64,
    /// Round trips their sessions waited for, `BEGIN` and `COMMIT` included.
    pub round_trips: u64,
}

impl RequestCosts {
    /// The sums so far.
    pub fn totals(&self) -> CostTotals {
        CostTotals {
            requests: self.requests.load(Ordering::Relaxed),
            statements: self.statements.load(Ordering::Relaxed),
            round_trips: self.round_trips.load(Ordering::Relaxed),
        }
    }

    fn add(&self, outcome: Option<&SessionOutcome>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if let Some(outcome) = outcome {
            self.statements.fetch_add(outcome.stats.statements, Ordering::Relaxed);
            self.round_trips.fetch_add(outcome.stats.round_trips, Ordering::Relaxed);
        }
    }
}

/// The middleware that adds each request's costs to `costs`, read from the
/// [`SessionOutcome`] the session layer leaves on the response: install it
/// outside the session layer. A plain map of the response: as
/// `axum::middleware::from_fn` it boxed a future and a copy of the
/// services inside it for every request.
pub fn layer(
    costs: Arc<RequestCosts>,
) -> MapResponseLayer<impl Fn(Response) -> Response + Clone + Send + Sync + 'static> {
    MapResponseLayer::new(move |response: Response| {
        costs.add(response.extensions().get::<SessionOutcome>());
        response
    })
}

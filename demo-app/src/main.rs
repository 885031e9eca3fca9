//! `demo-app`: the RealWorld API server. See the crate's README section in
//! the repository's README for the environment it reads.

use std::process::ExitCode;

use demo_app::config::Config;

/// The server's allocator: mimalloc instead of glibc's, with the
/// `mimalloc` feature (on by default).
///
/// Profiled under load, glibc's allocator was 18% of the app's CPU, a
/// quarter of it in `malloc_consolidate`: glibc merges its fast bins
/// whenever a request of 1 KiB or more comes, and a request's HTTP and
/// protocol buffers and row vectors are that size, so each paid for the
/// small frees before it. Under `scripts/load.sh` the server ran 26% fewer
/// instructions per request on mimalloc (22% on jemalloc, also tried); see
/// docs/performance.md. Built without transparent huge pages (`no_thp`),
/// which added 11 MiB to the resident size at start.
///
/// Declared here, not in the library, so it is the server's alone: the
/// tests keep the system allocator, against which `tests/memory.rs`
/// bounds a test process's resident size (mimalloc's fixed overhead put
/// that process 2 MiB over its bound; the server's own resident size after
/// the same burst is in docs/performance.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match demo_app::telemetry::init().and_then(|()| Config::from_env()) {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(%error, "invalid configuration");
            return ExitCode::from(2);
        }
    };
    match demo_app::server::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "demo-app failed");
            ExitCode::FAILURE
        }
    }
}

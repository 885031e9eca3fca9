//! `demo-app`: the RealWorld API server. See the crate's README section in
//! the repository's README for the environment it reads.

use std::process::ExitCode;

use demo_app::config::Config;

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

//! Structured logs with `tracing`: `RUST_LOG` filters (default `info`),
//! `LOG_FORMAT=json` switches from text lines to one JSON object per line.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Call once, at start-up.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(std::io::stdout().is_terminal());
    if std::env::var("LOG_FORMAT").is_ok_and(|format| format == "json") {
        builder.json().with_current_span(true).init();
    } else {
        builder.init();
    }
}

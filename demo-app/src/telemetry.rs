//! Structured logs with `tracing`: `RUST_LOG` filters (default `info`),
//! `LOG_FORMAT=json` switches from text lines to one JSON object per line.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::ConfigError;

/// Installs the global subscriber. Call once, at start-up. An invalid
/// `RUST_LOG` is an error, returned once logging works (at `info`), so
/// that the caller can log it and refuse to start.
pub fn init() -> Result<(), ConfigError> {
    let (filter, invalid) = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => match EnvFilter::try_new(&directives) {
            Ok(filter) => (filter, None),
            Err(error) => {
                (EnvFilter::new("info"), Some(ConfigError::new("RUST_LOG", format!("{directives:?}: {error}"))))
            }
        },
        _ => (EnvFilter::new("info"), None),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(std::io::stdout().is_terminal());
    if std::env::var("LOG_FORMAT").is_ok_and(|format| format == "json") {
        builder.json().with_current_span(true).init();
    } else {
        builder.init();
    }
    invalid.map_or(Ok(()), Err)
}

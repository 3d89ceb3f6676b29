//! Logs on standard error: plain text (colours only on a terminal, never in a file or a
//! collector) or one JSON object per line (`--log-json`), for every line the process
//! writes there, its last error included ([`fail`]).

use std::io::IsTerminal;

/// Installs the global subscriber. `filter_var` names the variable of the filter
/// (`PREAU_LOG`, `RUST_LOG`), `default` the filter without it.
pub fn init(json: bool, filter_var: &str, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env(filter_var)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

/// Logs why the process stops and exits with status 1, so a failure at start-up is a log
/// line like the others (JSON under `--log-json`), not Rust's own `Error: ...`. `{:#}`
/// gives an `anyhow` error's causes too.
pub fn fail(e: impl std::fmt::Display) -> ! {
    tracing::error!(error = format!("{e:#}"), "stopped");
    std::process::exit(1)
}

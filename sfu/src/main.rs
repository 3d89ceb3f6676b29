//! `preau-sfu`: parses the flags, sets up logs and metrics, binds, and calls
//! [`preau_sfu::run`].

use clap::Parser;
use preau_sfu::Sfu;
use preau_sfu::config::SfuConfig;
use std::io::Write;

/// Préau live-class SFU.
#[derive(Parser)]
#[command(name = "preau-sfu", version, about)]
struct Cli {
    #[command(flatten)]
    config: SfuConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = Cli::parse().config;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,str0m=warn"));
    if cfg.log_json {
        tracing_subscriber::fmt().json().with_env_filter(filter).init();
    } else {
        // Colours only on a terminal: a log file or a collector gets plain text.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
        tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).init();
    }
    let prom = preau_sfu::metrics::install()?;
    let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
    let addr = listener.local_addr()?;
    let url = cfg.public_url(addr);
    let drain = std::time::Duration::from_secs(cfg.drain_seconds);
    let sfu = Sfu::start(cfg, url.clone(), Some(prom)).await?;
    // Tests and scripts read this line to find the ports when listening on :0.
    println!(
        "preau-sfu listening on http://{addr} udp {} signaling {url} engine threads {}",
        sfu.udp_addr(),
        sfu.engine_threads()
    );
    std::io::stdout().flush()?;
    preau_sfu::run(listener, sfu, drain, shutdown_signal(), shutdown_signal()).await
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending().await,
            }
        } => {}
    }
}

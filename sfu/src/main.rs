//! `preau-sfu`: parses the flags, sets up logs and metrics, binds, and calls
//! [`preau_sfu::run`].

use clap::Parser;
use preau_ops::tls::{Listener, Reloading};
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
async fn main() {
    let cfg = Cli::parse().config;
    preau_ops::logging::init(cfg.log_json, "RUST_LOG", "info,str0m=warn");
    if let Err(e) = serve(cfg).await {
        preau_ops::logging::fail(e);
    }
}

async fn serve(cfg: SfuConfig) -> anyhow::Result<()> {
    cfg.validate().map_err(anyhow::Error::msg)?;
    let tls = match cfg.tls().map_err(anyhow::Error::msg)? {
        Some(files) => Some(Reloading::start(files).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let prom = preau_sfu::metrics::install()?;
    let tcp =
        tokio::net::TcpListener::bind(cfg.listen).await.map_err(|e| anyhow::anyhow!("--listen {}: {e}", cfg.listen))?;
    let addr = tcp.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = Listener::new(tcp, tls)?;
    let url = cfg.public_url(addr);
    let drain = std::time::Duration::from_secs(cfg.drain_seconds);
    let sfu = Sfu::start(cfg, url.clone(), Some(prom)).await?;
    // Tests and scripts read this line to find the ports when listening on :0.
    println!(
        "preau-sfu listening on {scheme}://{addr} udp {} signaling {url} engine threads {}",
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

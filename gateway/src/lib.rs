//! The Préau gateway: WebSocket sessions of pupils, parents, teachers and staff, the
//! school's communication policy enforced on every command, durable channel logs and the
//! fan-out of their events.
//!
//! # Layout
//! - [`config`]: flags and `PREAU_*` variables, validated at startup.
//! - [`service`]: [`Gateway`], the node's state (directory, store, bus, hub, keys) and
//!   the store's commit hook.
//! - [`cmd`]: the commands, one file per family: gather facts, decide with a pure
//!   function, apply.
//! - [`hub`]: the sharded registry of sessions and subscriptions, and fan-out.
//! - [`order`]: each channel's events in seq order on this node, gaps read from the store
//!   (several gateways, a bus outage).
//! - [`session`]: the driver task of one WebSocket connection.
//! - [`http`]: the HTTP routes, including the WebSocket upgrade; [`admin`]: the admin
//!   API (directory imports, suspensions).
//! - [`limits`]: the token bucket; [`metrics`]: metric names; [`pii`]: hiding user ids.
//!
//! [`run`] serves a listener until a shutdown future resolves, then drains.

pub mod admin;
pub mod cmd;
pub mod config;
pub mod export;
pub mod http;
pub mod hub;
pub mod jwks;
mod keys;
pub mod limits;
pub mod metrics;
pub mod order;
pub mod pii;
pub mod purge;
pub mod server_api;
pub mod service;
pub mod session;
pub mod webhook;

pub use service::Gateway;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};

/// Serves `listener` until `shutdown` resolves; then drains: `/readyz` and new upgrades
/// answer 503 `draining`, every session is told to reconnect after a jittered delay and
/// closed then, and serving ends once they are gone or the drain time is over.
pub async fn run(
    listener: preau_ops::tls::Listener,
    g: Arc<Gateway>,
    prom: Option<metrics_exporter_prometheus::PrometheusHandle>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (tx, rx) = watch::channel(false);
    let conns = Arc::new(Semaphore::new(g.cfg.max_connections));
    let state = http::AppState { g: g.clone(), prom, conns: conns.clone(), shutdown: rx };
    let app = http::router(state);
    let g2 = g.clone();
    let conns2 = conns.clone();
    let max = g.cfg.max_connections;
    let drain = Duration::from_secs(g.cfg.drain_seconds);
    // The listener stays open during the drain: `/readyz` answers 503 and upgrades 503
    // `draining`, so load balancers and clients see the state; sessions get `reconnect`
    // and close after their jittered delay. Serving ends once every session is gone or
    // the drain time is over.
    let stop = async move {
        shutdown.await;
        tracing::info!("shutdown requested: draining");
        g2.draining.store(true, Ordering::Relaxed);
        let _ = tx.send(true);
        let drained = tokio::time::timeout(drain, async {
            while conns2.available_permits() < max {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(open = max - conns2.available_permits(), "drain time over; closing the rest");
        }
    };
    // Readiness comes back by itself: the store is probed every 2 s, so a node that gets
    // no traffic (or that a load balancer took out) notices a freed disk.
    let prober = {
        let g = g.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(2));
            loop {
                every.tick().await;
                // For the alerts (deploy/prometheus/alerts.yml): readiness and the bus.
                let ready = g.ready().await;
                ::metrics::gauge!(metrics::READY).set(if ready { 1.0 } else { 0.0 });
                ::metrics::gauge!(metrics::BUS_UP).set(if g.bus.healthy() { 1.0 } else { 0.0 });
            }
        })
    };
    // The portal's keys, fetched again on a schedule (`--jwks-url`).
    let rotator = g.jwks.clone().map(|j| {
        let g = g.clone();
        let every = Duration::from_secs(g.cfg.jwks_refresh_seconds);
        tokio::spawn(async move { j.refresh_every(&g.verifier, every).await })
    });
    // Retention of the audit trail and the purge of departed users: hourly, and once at
    // start.
    let purger = {
        let g = g.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(3600));
            loop {
                every.tick().await;
                let n = g.purge_expired().await;
                if n > 0 {
                    tracing::info!(removed = n, "audit entries past their retention removed");
                }
                match g.purge_departed(&g.cfg.node_id(), false).await {
                    Ok(r) if !r.purged.is_empty() => {
                        let rows: u64 = r.purged.iter().map(|p| p.rows).sum();
                        tracing::info!(people = r.purged.len(), rows, "personal data of departed users erased");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e.message, "purge of departed users failed; next run retries"),
                }
            }
        })
    };
    // The listener sets TCP_NODELAY: frames are small and latency matters more than
    // packet count.
    axum::serve(listener, app).with_graceful_shutdown(stop).await?;
    purger.abort();
    prober.abort();
    if let Some(r) = rotator {
        r.abort();
    }
    Ok(())
}

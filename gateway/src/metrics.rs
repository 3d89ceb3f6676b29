//! Metric names and the Prometheus recorder. Names are constants so dashboards and the
//! deploy checks can grep them.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use preau_ops::metrics::Kind;

/// Open WebSocket connections (gauge).
pub const CONNECTIONS: &str = "preau_connections";
/// Connections refused at upgrade, by reason (counter).
pub const CONNECTIONS_REFUSED: &str = "preau_connections_refused_total";
/// Frames received from clients (counter).
pub const FRAMES_IN: &str = "preau_frames_in_total";
/// Frames written to clients (counter).
pub const FRAMES_OUT: &str = "preau_frames_out_total";
/// Frames queued to sessions by fan-out (counter).
pub const DELIVERIES: &str = "preau_deliveries_total";
/// Store reads that repaired a channel's order (a gap that stayed open, a catch-up after a
/// bus outage).
pub const ORDER_FILLS: &str = "preau_order_fills_total";
/// How long each channel event was held for order before delivery on this node, seconds
/// (histogram; zero for an event that arrived in order).
pub const ORDER_HOLD_SECONDS: &str = "preau_order_hold_seconds";
/// Frames dropped because a session's queue was full; the session is cut off (counter).
pub const QUEUE_DROPS: &str = "preau_queue_drops_total";
/// Errors answered to clients, by code (counter).
pub const ERRORS: &str = "preau_errors_total";
/// From a send frame's arrival to its ack, seconds (histogram).
pub const SEND_ACK_SECONDS: &str = "preau_send_ack_seconds";
/// Store operation latency, seconds, by operation (histogram).
pub const STORE_SECONDS: &str = "preau_store_seconds";
/// Messages stored (counter).
pub const MESSAGES_STORED: &str = "preau_messages_stored_total";
/// Rows removed or rewritten by personal-data erasures (counter).
pub const PURGE_ROWS: &str = "preau_purge_rows_total";
/// Duration of one person's erasure, seconds (histogram).
pub const PURGE_SECONDS: &str = "preau_purge_seconds";
/// When the last purge run ended, seconds since the epoch (gauge).
pub const PURGE_LAST_RUN: &str = "preau_purge_last_run_timestamp_seconds";

/// Whether this node answers ready (1) or not (0), as `/readyz` (gauge, every 2 s).
pub const READY: &str = "preau_ready";
/// Whether the bus (Redis, when configured) is connected (1) or not (0) (gauge).
pub const BUS_UP: &str = "preau_bus_up";

/// Push-notification events for the ENT's back end, by outcome: `sent`, `failed`
/// (dropped after every retry), `dropped` (queue full), `not_wanted` (opt-out, quiet
/// hours) (counter).
pub const WEBHOOK_EVENTS: &str = "preau_webhook_events_total";

/// Every metric with its kind and its HELP text (promtool checks each has one).
pub const DESCRIBED: &[(&str, Kind, &str)] = &[
    (CONNECTIONS, Kind::Gauge, "Open WebSocket connections."),
    (CONNECTIONS_REFUSED, Kind::Counter, "Connections refused at upgrade, by reason."),
    (FRAMES_IN, Kind::Counter, "Frames received from clients."),
    (FRAMES_OUT, Kind::Counter, "Frames written to clients."),
    (DELIVERIES, Kind::Counter, "Frames queued to sessions by fan-out."),
    (ORDER_FILLS, Kind::Counter, "Store reads that repaired a channel's order (a gap that stayed open, a catch-up)."),
    (ORDER_HOLD_SECONDS, Kind::Histogram, "How long channel events were held for order before delivery, in seconds."),
    (QUEUE_DROPS, Kind::Counter, "Frames dropped because a session's queue was full (the session is cut off)."),
    (ERRORS, Kind::Counter, "Errors answered to clients, by code."),
    (SEND_ACK_SECONDS, Kind::Histogram, "From a send frame's arrival to its ack, in seconds."),
    (STORE_SECONDS, Kind::Histogram, "Store operation latency by operation, in seconds."),
    (MESSAGES_STORED, Kind::Counter, "Messages stored."),
    (PURGE_ROWS, Kind::Counter, "Rows removed or rewritten by personal-data erasures and retention."),
    (PURGE_SECONDS, Kind::Histogram, "Duration of one person's erasure, in seconds."),
    (PURGE_LAST_RUN, Kind::Gauge, "When the last purge run ended, in seconds since the epoch."),
    (READY, Kind::Gauge, "Whether this node answers ready (1) or not (0), as /readyz."),
    (WEBHOOK_EVENTS, Kind::Counter, "Push-notification events for the ENT's back end, by outcome."),
    (BUS_UP, Kind::Gauge, "Whether the bus (Redis when configured) is connected (1) or not (0)."),
];

/// Installs the global recorder and returns the handle rendering /metrics.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let buckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(ORDER_HOLD_SECONDS.into()),
            &[0.0, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0],
        )?
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)?
        .install_recorder()?;
    preau_ops::metrics::describe(DESCRIBED);
    // Present from the first scrape, before anything happened.
    metrics::gauge!(CONNECTIONS).set(0.0);
    for c in [FRAMES_IN, FRAMES_OUT, DELIVERIES, QUEUE_DROPS, MESSAGES_STORED, PURGE_ROWS] {
        metrics::counter!(c).increment(0);
    }
    Ok(handle)
}

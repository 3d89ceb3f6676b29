//! Metric names of the SFU and its Prometheus recorder. Names are constants so the
//! dashboards in deploy/ and the deploy checks can grep them.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use preau_ops::metrics::Kind;

/// Rooms open on this node (gauge).
pub const ROOMS: &str = "preau_sfu_rooms";
/// Peers (WebSocket sessions) on this node (gauge).
pub const PEERS: &str = "preau_sfu_peers";
/// Published tracks (sources) on this node (gauge).
pub const TRACKS: &str = "preau_sfu_tracks";
/// RTP packets received from publishers, by kind (counter).
pub const PACKETS_IN: &str = "preau_sfu_packets_in_total";
/// RTP bytes received from publishers, by kind (counter).
pub const BYTES_IN: &str = "preau_sfu_bytes_in_total";
/// RTP packets forwarded to subscribers, by kind (counter).
pub const PACKETS_OUT: &str = "preau_sfu_packets_out_total";
/// RTP bytes forwarded to subscribers, by kind (counter).
pub const BYTES_OUT: &str = "preau_sfu_bytes_out_total";
/// Packets not forwarded, by reason (counter).
pub const PACKETS_DROPPED: &str = "preau_sfu_packets_dropped_total";
/// NACKs received from subscribers (counter); the responder resends from its buffer.
pub const NACKS: &str = "preau_sfu_nacks_total";
/// Keyframe requests, `dir` = `sent` to publishers or `received` from subscribers (counter).
pub const PLIS: &str = "preau_sfu_plis_total";
/// Simulcast layer switches done for subscribers (counter).
pub const LAYER_SWITCHES: &str = "preau_sfu_layer_switches_total";
/// Sessions ended because the media engine failed on one of their connections (a caught
/// panic; the node goes on) (counter).
pub const ENGINE_PANICS: &str = "preau_sfu_engine_panics_total";
/// Signaling requests refused, by code (counter).
pub const ERRORS: &str = "preau_sfu_errors_total";

/// Class recordings, by `result`: `written`, `failed`, `listed` (in the class
/// announcements), `deleted` (past retention) (counter).
pub const RECORDINGS: &str = "preau_sfu_recordings_total";
/// Packets a recording could not write, by reason: `queue` (its writer was behind),
/// `voices` (more pupils speaking at once than audio tracks) (counter).
pub const RECORDING_DROPPED: &str = "preau_sfu_recording_dropped_total";

/// Every metric with its kind and its HELP text (promtool checks each has one).
pub const DESCRIBED: &[(&str, Kind, &str)] = &[
    (ROOMS, Kind::Gauge, "Rooms open on this node."),
    (PEERS, Kind::Gauge, "Peers (signaling sessions) on this node."),
    (TRACKS, Kind::Gauge, "Published tracks (sources) on this node."),
    (PACKETS_IN, Kind::Counter, "RTP packets received from publishers, by kind."),
    (BYTES_IN, Kind::Counter, "RTP bytes received from publishers, by kind."),
    (PACKETS_OUT, Kind::Counter, "RTP packets forwarded to subscribers, by kind."),
    (BYTES_OUT, Kind::Counter, "RTP bytes forwarded to subscribers, by kind."),
    (PACKETS_DROPPED, Kind::Counter, "RTP packets not forwarded, by reason."),
    (NACKS, Kind::Counter, "NACKs received from subscribers (lost packets they asked again)."),
    (PLIS, Kind::Counter, "Keyframe requests, sent to publishers or received from subscribers (dir)."),
    (LAYER_SWITCHES, Kind::Counter, "Simulcast layer switches done for subscribers."),
    (ENGINE_PANICS, Kind::Counter, "Sessions ended because the media engine failed on one of their connections."),
    (ERRORS, Kind::Counter, "Signaling requests refused, by code."),
    (RECORDINGS, Kind::Counter, "Class recordings written, failed, listed in the announcements, or deleted (result)."),
    (RECORDING_DROPPED, Kind::Counter, "Packets a recording could not write, by reason."),
];

/// Installs the global recorder and returns the handle rendering /metrics.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new().install_recorder()?;
    preau_ops::metrics::describe(DESCRIBED);
    for g in [ROOMS, PEERS, TRACKS] {
        metrics::gauge!(g).set(0.0);
    }
    for c in [NACKS, LAYER_SWITCHES, ENGINE_PANICS, RECORDINGS] {
        metrics::counter!(c).increment(0);
    }
    Ok(handle)
}

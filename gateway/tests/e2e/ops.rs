//! Operations: health, readiness, metrics, and draining on SIGTERM.

use crate::harness::{FAST, Server};
use preau_client::http_get;
use preau_proto::{ChannelId, Command, ServerFrame, close};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_metrics_and_dev_endpoints() {
    let s = Server::start(FAST);
    assert_eq!(http_get(&s.addr, "/healthz").await.expect("healthz").0, 200);
    let (st, body) = http_get(&s.addr, "/readyz").await.expect("readyz");
    assert!(st == 200 && body.contains("true"), "{st} {body}");
    let t01 = s.connect("t01").await;
    t01.send_message(&ChannelId::announcements("6A"), "métriques").await.expect("send");
    let (st, m) = http_get(&s.addr, "/metrics").await.expect("metrics");
    assert_eq!(st, 200);
    for name in [
        "preau_connections",
        "preau_frames_in_total",
        "preau_frames_out_total",
        "preau_deliveries_total",
        "preau_queue_drops_total",
        "preau_send_ack_seconds_bucket",
        "preau_store_seconds_bucket",
    ] {
        assert!(m.contains(name), "{name} missing from /metrics");
    }
    let (st, users) = http_get(&s.addr, "/dev/users").await.expect("users");
    let v: serde_json::Value = serde_json::from_str(&users).expect("json");
    let list = v["users"].as_array().expect("users");
    let count = |p: &str| list.iter().filter(|u| u["profile"] == p).count();
    assert_eq!((st, count("pupil"), count("parent"), count("staff")), (200, 75, 100, 2));
    assert!(count("teacher") >= 6);
    assert_eq!(http_get(&s.addr, "/dev/token?user=nobody").await.expect("token").0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_mode_has_no_dev_endpoints() {
    let pubkey = concat!(env!("CARGO_MANIFEST_DIR"), "/../crates/auth/testdata/ed.pub");
    let s = Server::start(&["--jwt-public-key", pubkey, "--jwt-alg", "EdDSA"]);
    assert_eq!(http_get(&s.addr, "/dev/users").await.expect("users").0, 404);
    assert_eq!(http_get(&s.addr, "/dev/token?user=t01").await.expect("token").0, 404);
    assert_eq!(http_get(&s.addr, "/healthz").await.expect("healthz").0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_tells_clients_to_reconnect_and_exits_in_bounded_time() {
    let mut s = Server::start(&["--drain-seconds", "5", "--reconnect-jitter-ms", "3000"]);
    let mut clients = Vec::new();
    for u in ["e001", "e002", "pa001", "t01"] {
        clients.push(s.connect(u).await);
    }
    clients[3].request(Command::Ping {}).await.expect("ping");
    let took = s.term();
    assert!(took < Duration::from_secs(8), "drain took {took:?}");
    for c in &mut clients {
        let mut delay = None;
        while let Some(f) = c.next_event(Duration::from_secs(3)).await {
            if let ServerFrame::Reconnect { after_ms, .. } = f {
                delay = Some(after_ms);
            }
        }
        assert!(delay.is_some_and(|d| d <= 3000), "reconnect delay {delay:?}");
        assert_eq!(c.close_reason().map(|r| r.0), Some(close::SERVICE_RESTART));
    }
}

//! Issue 20's engine spike: the live-class forwarding path of `preau-sfu` rebuilt on two
//! sans-IO WebRTC engines, webrtc-rs's core `rtc` 0.21 and str0m 0.25, so that they,
//! today's engine and Janus are measured by the same clients in one run
//! (`load-tests/engine-spike.sh` and its siblings; the figures and the decision are in
//! ARCHITECTURE.md).
//!
//! What it keeps of `preau-sfu`: the signaling protocol's media part (`join`, `publish`,
//! the SFU's `offer` on `sub`, `answer`, `candidate`, `restart_ice`), room tokens, and the
//! forwarding decisions ([`preau_sfu::forward::Forward`]: keyframe-gated layer choice,
//! sequence and timestamp rewriting). What it leaves out, as it costs little per packet
//! and nothing per peer: room control (admit, grant and quality are acknowledged),
//! speakers and last-N.
//!
//! How it is laid out: this file has the flags, the WebSocket sessions (they talk to the
//! engine only through its command queue), what both engines share ([`Router`], our
//! routing index; [`Wire`], the socket and its `sendto` or `sendmmsg` flush; the layer
//! choice and the keyframe-request throttle) and `/stats`. `rtc_engine.rs` and
//! `str0m_engine.rs` are the same engine over the two libraries: one thread owns every
//! peer connection and the node's one UDP socket; a datagram is routed, handed to its
//! connection, and every output of the connection is drained; a publisher's packet is
//! rewritten per subscriber, its payload shared.

use anyhow::Context;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::IntoResponse;
use bytes::Bytes;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use preau_auth::Verifier;
use preau_live::signal::{self, ClientCmd, Media, Pc, PeerId, Role, ServerMsg};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

mod rtc_engine;
mod str0m_engine;

/// Flags, as `preau-sfu`'s where they overlap.
#[derive(Parser, Debug)]
struct Args {
    /// Signaling (HTTP and WebSocket) address.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// The node's one UDP socket.
    #[arg(long, default_value = "127.0.0.1:8091")]
    udp: SocketAddr,
    /// HS256 key room tokens are checked with.
    #[arg(long)]
    room_key_file: std::path::PathBuf,
    /// Send each input's datagrams with one `sendmmsg` instead of one `sendto` each.
    #[arg(long)]
    sendmmsg: bool,
    /// Estimate each `sub` connection's bandwidth from the subscriber's transport-wide
    /// feedback (TWCC): str0m's estimator (with probing and pacing) or rtc's GCC. The
    /// estimates are served at `/stats`, per peer.
    #[arg(long)]
    bwe: bool,
    /// The address announced in the SFU's candidate, when clients reach the socket through
    /// a relay (load-tests/spike-relay.py drops packets for the NACK/RTX check).
    #[arg(long)]
    announce: Option<SocketAddr>,
    /// The engine: `rtc` (webrtc-rs's sans-IO core) or `str0m`.
    #[arg(long, default_value = "rtc")]
    engine: String,
}

/// What the WebSocket tasks ask of the engine.
pub(crate) enum Cmd {
    Join {
        peer: PeerId,
        room: String,
        out: mpsc::Sender<String>,
    },
    Publish {
        peer: PeerId,
        id: Option<u64>,
        sdp: String,
        tracks: BTreeMap<String, Media>,
    },
    Answer {
        peer: PeerId,
        sdp: String,
    },
    Candidate {
        peer: PeerId,
        pc: Pc,
        candidate: signal::Candidate,
    },
    /// The `sub` connection restarts ICE: the SFU offers new credentials.
    RestartIce {
        peer: PeerId,
    },
    Leave {
        peer: PeerId,
    },
}

/// Counters printed at exit and served at `/stats`.
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) datagrams_in: AtomicU64,
    pub(crate) datagrams_out: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) send_calls: AtomicU64,
    pub(crate) rtp_in: AtomicU64,
    /// Published packets older than the newest of their stream (repairs, reordering).
    pub(crate) rtp_in_late: AtomicU64,
    /// Of those, copies written to subscribers.
    pub(crate) rtp_out_late: AtomicU64,
    pub(crate) rtp_out: AtomicU64,
    pub(crate) unrouted: AtomicU64,
    pub(crate) send_errors: AtomicU64,
    pub(crate) connections: AtomicU64,
    pub(crate) connected: AtomicU64,
    pub(crate) failed: AtomicU64,
    /// The latest bandwidth estimate of each peer's `sub` connection, bits per second.
    pub(crate) estimates: std::sync::Mutex<BTreeMap<PeerId, u64>>,
}

impl Stats {
    fn json(&self) -> serde_json::Value {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "datagrams_in": g(&self.datagrams_in), "datagrams_out": g(&self.datagrams_out), "bytes_out": g(&self.bytes_out),
            "send_calls": g(&self.send_calls), "rtp_in": g(&self.rtp_in), "rtp_in_late": g(&self.rtp_in_late), "rtp_out_late": g(&self.rtp_out_late), "rtp_out": g(&self.rtp_out),
            "unrouted": g(&self.unrouted), "send_errors": g(&self.send_errors),
            "connections": g(&self.connections), "connected": g(&self.connected), "failed": g(&self.failed),
            "estimates": self.estimates.lock().map(|e| e.clone()).unwrap_or_default(),
        })
    }
}

struct Shared {
    verifier: Verifier,
    /// Signs room tokens for the interop page (loopback measurement only).
    issuer: preau_auth::Issuer,
    next_peer: AtomicU64,
    engine: mpsc::Sender<Cmd>,
    stats: Arc<Stats>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let key = std::fs::read(&args.room_key_file)
        .with_context(|| format!("--room-key-file {}", args.room_key_file.display()))?;
    let udp = std::net::UdpSocket::bind(args.udp).with_context(|| format!("--udp {}", args.udp))?;
    udp.set_nonblocking(true)?;
    let stats = Arc::new(Stats::default());
    let (tx, rx) = mpsc::channel::<Cmd>(4096);
    let engine_stats = stats.clone();
    let sendmmsg = args.sendmmsg;
    anyhow::ensure!(matches!(args.engine.as_str(), "rtc" | "str0m"), "--engine: `rtc` or `str0m`");
    let engine_name = args.engine.clone();
    let bwe = args.bwe;
    let announce = args.announce;
    let engine = std::thread::Builder::new().name("engine".into()).spawn(move || -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async move {
            let sock = tokio::net::UdpSocket::from_std(udp)?;
            let mut wire = Wire::new(sock, sendmmsg, engine_stats)?;
            if let Some(a) = announce {
                wire.local = a;
            }
            match engine_name.as_str() {
                "str0m" => str0m_engine::Engine::new(wire, bwe).run(rx).await,
                _ => rtc_engine::Engine::new(wire, bwe).run(rx).await,
            }
        })
    })?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let shared = Arc::new(Shared {
        verifier: Verifier::hs256(&key),
        issuer: preau_auth::Issuer::hs256(&key),
        next_peer: AtomicU64::new(1),
        engine: tx,
        stats,
    });
    rt.block_on(async move {
        let mut app = axum::Router::new()
            .route("/ws", axum::routing::get(ws))
            .route(
                "/interop",
                axum::routing::get(|| async { axum::response::Html(include_str!("../static/interop.html")) }),
            )
            .route(
                "/stats",
                axum::routing::get(|State(s): State<Arc<Shared>>| async move { axum::Json(s.stats.json()) }),
            );
        // Anyone who reaches `/token` gets a room token: only on a loopback address.
        if args.listen.ip().is_loopback() {
            app = app.route("/token", axum::routing::get(token));
        }
        let app = app.with_state(shared);
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        axum::serve(listener, app).with_graceful_shutdown(async { _ = tokio::signal::ctrl_c().await }).await?;
        anyhow::Ok(())
    })?;
    drop(engine);
    Ok(())
}

/// A room token for the interop page: `?user=&role=&room=` (the spike listens on loopback).
async fn token(
    State(s): State<Arc<Shared>>,
    axum::extract::Query(q): axum::extract::Query<BTreeMap<String, String>>,
) -> String {
    let get = |k: &str, d: &str| q.get(k).cloned().unwrap_or_else(|| d.to_owned());
    let user = get("user", "u");
    s.issuer.issue_room(&user, &user, "0750001A", &get("room", "class:interop"), &get("role", "participant"), 600)
}

async fn ws(State(s): State<Arc<Shared>>, up: WebSocketUpgrade) -> impl IntoResponse {
    // Signaling messages are small (an SDP offer is a few KB): tungstenite's 128 KiB
    // default buffers would be most of a peer's memory.
    up.read_buffer_size(4096).write_buffer_size(4096).on_upgrade(move |socket| session(s, socket))
}

fn text(msg: &ServerMsg) -> String {
    serde_json::to_string(msg).unwrap_or_default()
}

async fn session(s: Arc<Shared>, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (out, mut out_rx) = mpsc::channel::<String>(256);
    tokio::spawn(async move {
        while let Some(t) = out_rx.recv().await {
            if sink.send(Message::Text(t.into())).await.is_err() {
                break;
            }
        }
    });
    let ack = |id: Option<u64>| id.map(|id| text(&ServerMsg::Ack { id }));
    let error = |id, e: signal::SignalError| text(&ServerMsg::Error { id, code: e.code, message: e.message });
    let mut peer = None;
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Text(t) = msg else { continue };
        let m = match signal::decode(&t) {
            Ok(m) => m,
            Err((id, e)) => {
                let _ = out.send(error(id, e)).await;
                continue;
            }
        };
        let Some(p) = peer else {
            let ClientCmd::Join { token } = m.cmd else {
                let e = signal::SignalError::new(signal::SignalCode::NotJoined, "send `join` first");
                let _ = out.send(error(m.id, e)).await;
                return;
            };
            let claims = match s.verifier.verify_room(&token) {
                Ok(c) => c,
                Err(e) => {
                    let e = signal::SignalError::new(signal::SignalCode::Unauthorized, e.to_string());
                    let _ = out.send(error(m.id, e)).await;
                    return;
                }
            };
            let role = match claims.role.as_str() {
                "host" => Role::Host,
                "observer" => Role::Observer,
                _ => Role::Participant,
            };
            let p = s.next_peer.fetch_add(1, Ordering::Relaxed);
            peer = Some(p);
            let _ = out.send(text(&ServerMsg::Welcome { peer: p, role, ice_servers: vec![] })).await;
            let room = format!("{}/{}", claims.school, claims.room);
            if s.engine.send(Cmd::Join { peer: p, room, out: out.clone() }).await.is_err() {
                return;
            }
            continue;
        };
        let cmd = match m.cmd {
            ClientCmd::Publish { sdp, tracks } => Cmd::Publish { peer: p, id: m.id, sdp, tracks },
            ClientCmd::Answer { sdp } => Cmd::Answer { peer: p, sdp },
            ClientCmd::Candidate { pc, candidate } => Cmd::Candidate { peer: p, pc, candidate },
            ClientCmd::RestartIce => {
                if let Some(a) = ack(m.id) {
                    let _ = out.send(a).await;
                }
                Cmd::RestartIce { peer: p }
            }
            ClientCmd::Leave => break,
            _ => {
                // Room control is not what the spike measures: acknowledged.
                if let Some(a) = ack(m.id) {
                    let _ = out.send(a).await;
                }
                continue;
            }
        };
        if s.engine.send(cmd).await.is_err() {
            break;
        }
    }
    if let Some(p) = peer {
        let _ = s.engine.send(Cmd::Leave { peer: p }).await;
    }
}

pub(crate) const PLI_INTERVAL: Duration = Duration::from_millis(300);
pub(crate) use preau_sfu::net::BATCH;

/// The layer a subscriber's tile gets: the middle one of three (as `preau-sfu` gives a
/// pupil's tile), else the highest present below it; the only one without simulcast.
pub(crate) fn wanted_layer(simulcast: bool, present: [bool; 3]) -> Option<usize> {
    let want = if simulcast { 1 } else { 0 };
    (0..=want).rev().find(|&l| present[l])
}

/// Whether a keyframe request for a layer may go now (at most one per [`PLI_INTERVAL`]);
/// records it when it may.
pub(crate) fn pli_due(last: &mut Option<std::time::Instant>, now: std::time::Instant) -> bool {
    if last.is_some_and(|t| now.saturating_duration_since(t) < PLI_INTERVAL) {
        return false;
    }
    *last = Some(now);
    true
}

pub(crate) fn rid_rank(rid: &str) -> usize {
    match rid {
        "q" | "l" | "low" => 0,
        "h" | "m" | "mid" => 1,
        _ => 2,
    }
}

/// The node's one UDP socket and the datagrams waiting to leave by it: flushed after
/// each input, with one `sendto` each or, with `--sendmmsg`, one `sendmmsg` per [`BATCH`].
pub struct Wire {
    sock: tokio::net::UdpSocket,
    local: SocketAddr,
    out: Vec<(SocketAddr, Bytes)>,
    sendmmsg: bool,
    stats: Arc<Stats>,
}

impl Wire {
    fn new(sock: tokio::net::UdpSocket, sendmmsg: bool, stats: Arc<Stats>) -> std::io::Result<Wire> {
        let local = sock.local_addr()?;
        preau_sfu::net::size_buffers(&sock);
        Ok(Wire { sock, local, out: Vec::with_capacity(BATCH), sendmmsg, stats })
    }

    fn push(&mut self, to: SocketAddr, datagram: Bytes) {
        self.out.push((to, datagram));
    }

    async fn flush(&mut self) {
        if self.out.is_empty() {
            return;
        }
        self.stats.datagrams_out.fetch_add(self.out.len() as u64, Ordering::Relaxed);
        let bytes: usize = self.out.iter().map(|(_, b)| b.len()).sum();
        self.stats.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
        if self.sendmmsg {
            for chunk in self.out.chunks(BATCH) {
                self.stats.send_calls.fetch_add(1, Ordering::Relaxed);
                if send_batch(&self.sock, chunk).is_err() {
                    self.stats.send_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        } else {
            for (addr, b) in &self.out {
                self.stats.send_calls.fetch_add(1, Ordering::Relaxed);
                let r = match self.sock.try_send_to(b, *addr) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => self.sock.send_to(b, *addr).await,
                    r => r,
                };
                if r.is_err() {
                    self.stats.send_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.out.clear();
    }
}

/// The routing index over the node's one socket (preau-sfu's, which came from here):
/// connections are table indices.
pub(crate) type Router = preau_sfu::net::Router<usize>;

/// The engines' clock (tokio's, so that it is the one the runtime's timers use).
pub(crate) fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Queues a message for a member's WebSocket (dropped when its queue is full).
pub(crate) fn send_to_peer(out: &mpsc::Sender<String>, msg: &ServerMsg) {
    let _ = out.try_send(text(msg));
}

/// One `sendmmsg` for up to [`BATCH`] datagrams (preau-sfu's).
fn send_batch(sock: &tokio::net::UdpSocket, chunk: &[(SocketAddr, Bytes)]) -> std::io::Result<()> {
    preau_sfu::net::send_batch(sock, chunk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_are_ranked_by_rid() {
        assert_eq!(rid_rank("q"), 0);
        assert_eq!(rid_rank("h"), 1);
        assert_eq!(rid_rank("f"), 2);
    }

    #[test]
    fn layers_and_keyframe_requests() {
        assert_eq!(wanted_layer(true, [true, true, true]), Some(1));
        assert_eq!(wanted_layer(true, [true, false, true]), Some(0));
        assert_eq!(wanted_layer(true, [false, false, true]), None);
        assert_eq!(wanted_layer(false, [true, false, false]), Some(0));
        let t0 = crate::now();
        let mut last = None;
        assert!(pli_due(&mut last, t0));
        assert!(!pli_due(&mut last, t0 + Duration::from_millis(299)));
        assert!(pli_due(&mut last, t0 + PLI_INTERVAL));
    }
}

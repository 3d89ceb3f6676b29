//! The media engine: str0m (sans-IO WebRTC, RTP mode) driven by a few engine threads
//! over the node's one UDP socket.
//!
//! - One receiving thread reads the socket and routes each datagram with the
//!   [`Router`] to the shard owning its connection (routes are added by the shards as
//!   connections and ICE credentials appear).
//! - Each shard (one thread, with a single-threaded tokio runtime for its timers and
//!   channels) owns the connections of the members it was given (a member's `pub` and
//!   `sub` connections live on the same shard), the publisher side of their sources
//!   (layers, keyframe requests, audio levels, bitrates) and the subscriber side of what
//!   they receive (one [`Forward`] each). A published packet is wrapped once in a
//!   shared [`Packet`] and handed to every shard with a subscriber to it; no task per
//!   track, no lock on the packet path.
//! - After each batch of inputs a shard drains every connection it wrote to (str0m
//!   releases queued RTP when told the time) and sends what they produced with
//!   `sendmmsg`, across peers.
//! - A panic inside str0m is caught at the connection it happened on: that member's
//!   connections on the shard are closed and its session ends with an error; the rest of
//!   the shard goes on.
//! - Timers: a heap of connection deadlines. A subscriber whose bandwidth is estimated
//!   here (str0m's TWCC estimator) is woken at str0m's exact moments; every other
//!   connection on a 5 ms tick, which costs far fewer passes.
//! - Layers per subscriber come from [`crate::budget`] (its estimate shared across the
//!   videos it receives, holds against flapping, what to probe for) and its receive mode
//!   (`low`, or sound only: video sections turned inactive).
//!
//! Peer tasks and room tasks talk to shards with [`ShardCmd`]s.

use crate::budget::{LayerHold, VideoWant, allocate, probe_rates};
use crate::error::{bad_sdp, internal};
use crate::forward::{Forward, LayerStat, Verdict, extend_seq, vp8_is_keyframe};
use crate::media::{Packet, Source};
use crate::metrics as m;
use crate::net::{BATCH, Router, send_batch, size_buffers};
use crate::room::{Media, PeerId};
use crate::room_task::{RoomMsg, RoomRef};
use crate::speaker::LevelWindow;
use preau_live::signal::{Pc, Quality, ReceiveMode, SignalCode, SignalError};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use str0m::bwe::{Bitrate, BweKind};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::{Codec, CodecConfig};
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionMap, RtpWrite, SeqNo, Ssrc};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::sync::{mpsc, oneshot};

/// Media waiting for a shard (datagrams from the socket, packets from other shards);
/// beyond this a shard is overloaded and media is dropped (counted), as a full socket
/// buffer would.
const MEDIA_QUEUE: usize = 16384;
/// Shortest time between two keyframe requests for one layer.
const PLI_INTERVAL: Duration = Duration::from_millis(300);
/// How often str0m reports a subscriber's sending streams (NACKs received).
const STATS_EVERY: Duration = Duration::from_secs(5);
/// How often connections' timers are looked at at most (str0m's own deadlines are
/// checked then).
const TICK: Duration = Duration::from_millis(5);
/// How often a source's layers' bitrates are measured.
const MEASURE_EVERY: Duration = Duration::from_millis(500);
/// A subscriber's estimate starts here (as browsers do) and its estimator probes up
/// towards [`BWE_DESIRED`]: a new pupil starts on a small layer, which comes fast.
const BWE_START: u64 = 300_000;
/// What the estimator probes for: the top layer, a screen share and the audio.
const BWE_DESIRED: u64 = 3_000_000;
/// What one received audio source takes from a subscriber's budget.
const AUDIO_BPS: u64 = 40_000;
/// While the estimate stays below what the tiles want, the estimator is asked to probe
/// again this often.
const PROBE_AGAIN: Duration = Duration::from_secs(4);
/// How long a new subscription stays on its first (lowest) layer when no estimate is
/// known yet: its first picture, then its tile's layer.
const FIRST_LAYER_FOR: Duration = Duration::from_millis(300);
/// Layers are chosen again at most this often on estimate changes alone.
const REALLOCATE_EVERY: Duration = Duration::from_millis(250);
/// Audio level window sent to the room (five a second per speaker).
const LEVEL_WINDOW: Duration = Duration::from_millis(200);

/// How the node's connections reach the network.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// The one UDP socket's address (all peers of the node share it).
    pub udp: SocketAddr,
    /// Addresses to announce instead of the local ones (1:1 NAT, a Kubernetes node's
    /// public address).
    pub public_ips: Vec<IpAddr>,
    /// Engine threads (0: one per core).
    pub threads: usize,
    /// Whether subscribers' bandwidth is estimated here (TWCC, with probing), rather than
    /// taken from their REMB.
    pub estimate: bool,
}

/// What a shard tells a peer task.
#[derive(Debug)]
pub(crate) enum Internal {
    Connected(Pc),
    Failed(Pc),
    /// The engine failed on this member's connection (a caught panic): the session ends.
    Crashed,
    /// `sub` must be offered again (its video sections turn off or on).
    Renegotiate,
}

/// Commands to a shard.
pub(crate) enum ShardCmd {
    /// A member's session starts on this shard.
    Open {
        peer: PeerId,
        room: Arc<RoomRef>,
        events: mpsc::Sender<Internal>,
    },
    /// A `publish` offer: the answer's SDP.
    Publish {
        peer: PeerId,
        sdp: String,
        labels: BTreeMap<String, Media>,
        early: Vec<String>,
        reply: oneshot::Sender<Result<String, SignalError>>,
    },
    /// Send `source` to `peer` (an offer on `sub` follows).
    Subscribe {
        peer: PeerId,
        source: Arc<Source>,
        forwarded: bool,
        /// Its place in the subscriber's budget ([`crate::budget::rank`]).
        rank: u8,
    },
    Unsubscribe {
        peer: PeerId,
        key: u64,
    },
    /// Last-N turned a source's video on or off for `peer`.
    Forward {
        peer: PeerId,
        key: u64,
        on: bool,
    },
    Quality {
        peer: PeerId,
        key: u64,
        quality: Quality,
    },
    /// What `peer` receives: its own choice, or (`class`) the class's.
    Receive {
        peer: PeerId,
        mode: ReceiveMode,
        class: bool,
    },
    /// The `sub` offer to send now, if anything changed.
    Offer {
        peer: PeerId,
        ice_restart: bool,
        reply: oneshot::Sender<Result<Option<String>, SignalError>>,
    },
    Answer {
        peer: PeerId,
        sdp: String,
        reply: oneshot::Sender<Result<(), SignalError>>,
    },
    Candidate {
        peer: PeerId,
        pc: Pc,
        candidate: String,
        reply: oneshot::Sender<Result<(), SignalError>>,
    },
    Leave {
        peer: PeerId,
    },
    /// To the publisher's shard: a subscriber needs a keyframe of `layer`.
    Keyframe {
        key: u64,
        layer: usize,
    },
    /// To the publisher's shard: a recording hears this source from now on (`Some`), or
    /// no longer.
    Tap {
        key: u64,
        tap: Option<crate::record::Tap>,
    },
    /// To subscribers' shards: the source's layers changed (`reset`: renumbered).
    Relayer {
        key: u64,
        reset: bool,
    },
    /// Panics inside the engine on `peer`'s behalf (the containment test).
    #[cfg(test)]
    Panic {
        peer: PeerId,
    },
}

/// Media for a shard.
enum MediaIn {
    Datagram { conn: u32, from: SocketAddr, data: Vec<u8> },
    Packet(Arc<Packet>),
}

/// A routing table change, from a shard to the receiving thread.
enum Route {
    Ufrag(u64, String),
    Remove(u64),
}

fn route_key(shard: usize, conn: u32) -> u64 {
    ((shard as u64) << 32) | u64::from(conn)
}

struct Inner {
    ctl: Vec<mpsc::UnboundedSender<ShardCmd>>,
    media: Vec<mpsc::Sender<MediaIn>>,
    routes: mpsc::UnboundedSender<Route>,
    udp_addr: SocketAddr,
    dropped: AtomicU64,
}

/// The node's engine: held by the node; the threads stop when it is dropped.
pub struct Engine {
    inner: Arc<Inner>,
}

/// How shards, sources and peers reach the shards without keeping them alive.
#[derive(Clone)]
pub(crate) struct Shards {
    inner: Weak<Inner>,
}

impl Shards {
    /// Sends a command to `shard` (lost only when the engine is stopping).
    pub(crate) fn send(&self, shard: usize, cmd: ShardCmd) {
        if let Some(i) = self.inner.upgrade()
            && let Some(tx) = i.ctl.get(shard)
        {
            let _ = tx.send(cmd);
        }
    }

    fn media(&self, shard: usize, m: MediaIn) {
        if let Some(i) = self.inner.upgrade()
            && let Some(tx) = i.media.get(shard)
            && tx.try_send(m).is_err()
        {
            i.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn route(&self, r: Route) {
        if let Some(i) = self.inner.upgrade() {
            let _ = i.routes.send(r);
        }
    }
}

impl Engine {
    /// Binds the node's UDP socket and starts the receiving thread and the shards.
    pub fn start(net: &NetConfig) -> anyhow::Result<Engine> {
        let sock = std::net::UdpSocket::bind(net.udp)?;
        sock.set_nonblocking(true)?;
        size_buffers(&sock);
        let udp_addr = sock.local_addr()?;
        let candidates = announced(udp_addr, &net.public_ips);
        let threads = if net.threads == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        } else {
            net.threads
        }
        .clamp(1, 64);
        let provider = str0m::crypto::from_feature_flags();
        // One DTLS certificate for the node: generating one per connection was 40% of
        // the engine's instructions in a short class (the spike's callgrind).
        let cert = provider.dtls_provider.generate_certificate();
        provider.install_process_default();
        let (routes_tx, routes_rx) = mpsc::unbounded_channel();
        let mut ctl = Vec::new();
        let mut media = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..threads {
            let (c, crx) = mpsc::unbounded_channel();
            let (mtx, mrx) = mpsc::channel(MEDIA_QUEUE);
            ctl.push(c);
            media.push(mtx);
            receivers.push((crx, mrx));
        }
        let inner =
            Arc::new(Inner { ctl, media: media.clone(), routes: routes_tx, udp_addr, dropped: AtomicU64::new(0) });
        let sock = Arc::new(sock);
        for (id, (crx, mrx)) in receivers.into_iter().enumerate() {
            let shard = Shard {
                id,
                shards: Shards { inner: Arc::downgrade(&inner) },
                sock: sock.clone(),
                candidates: candidates.clone(),
                cert: cert.clone(),
                conns: Vec::new(),
                free: Vec::new(),
                members: HashMap::new(),
                published: HashMap::new(),
                by_ssrc: HashMap::new(),
                subs: HashMap::new(),
                out: Vec::new(),
                written: Vec::new(),
                counters: Counters::default(),
                timers: BinaryHeap::new(),
                estimate: net.estimate,
            };
            std::thread::Builder::new().name(format!("sfu-engine-{id}")).spawn(move || {
                match tokio::runtime::Builder::new_current_thread().enable_time().build() {
                    Ok(rt) => rt.block_on(shard.run(crx, mrx)),
                    Err(e) => tracing::error!(error = %e, "engine thread could not start"),
                }
            })?;
        }
        let recv = sock.try_clone()?;
        std::thread::Builder::new().name("sfu-recv".into()).spawn(move || {
            match tokio::runtime::Builder::new_current_thread().enable_io().build() {
                Ok(rt) => rt.block_on(receive(recv, media, routes_rx)),
                Err(e) => tracing::error!(error = %e, "receiving thread could not start"),
            }
        })?;
        tracing::debug!(%udp_addr, threads, "media engine started (str0m)");
        Ok(Engine { inner })
    }

    /// The UDP address bound.
    pub fn udp_addr(&self) -> SocketAddr {
        self.inner.udp_addr
    }

    /// Engine threads.
    pub fn shard_count(&self) -> usize {
        self.inner.ctl.len()
    }

    /// The shard a member's connections live on.
    pub(crate) fn shard_of(&self, peer: PeerId) -> usize {
        (peer % self.inner.ctl.len() as u64) as usize
    }

    /// Sends a command to `shard`.
    pub(crate) fn send(&self, shard: usize, cmd: ShardCmd) {
        let _ = self.inner.ctl.get(shard).map(|tx| tx.send(cmd));
    }

    /// Sends a command built around a reply channel and waits for the reply (`None` if
    /// the shard stopped).
    pub(crate) async fn ask<T>(&self, shard: usize, f: impl FnOnce(oneshot::Sender<T>) -> ShardCmd) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.send(shard, f(tx));
        rx.await.ok()
    }
}

/// The addresses announced as host candidates: the public ones (same port) when given,
/// else the bound address, else (bound to every interface) each interface's address.
fn announced(bound: SocketAddr, public: &[IpAddr]) -> Vec<SocketAddr> {
    if !public.is_empty() {
        return public.iter().map(|ip| SocketAddr::new(*ip, bound.port())).collect();
    }
    if !bound.ip().is_unspecified() {
        return vec![bound];
    }
    let v4 = bound.is_ipv4();
    let mut found: Vec<SocketAddr> = nix::ifaddrs::getifaddrs()
        .map(|addrs| {
            addrs
                .filter_map(|a| {
                    let s = a.address?;
                    let ip: IpAddr = match (s.as_sockaddr_in(), s.as_sockaddr_in6()) {
                        (Some(i), _) => IpAddr::V4(i.ip()),
                        (_, Some(i)) if !v4 => IpAddr::V6(i.ip()),
                        _ => return None,
                    };
                    (!ip.is_loopback() && !ip.is_unspecified()).then(|| SocketAddr::new(ip, bound.port()))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.dedup();
    if found.is_empty() {
        found.push(SocketAddr::new(
            if v4 { [127, 0, 0, 1].into() } else { IpAddr::V6(std::net::Ipv6Addr::LOCALHOST) },
            bound.port(),
        ));
    }
    found
}

/// The receiving thread: reads the socket and hands each datagram to its shard.
async fn receive(
    sock: std::net::UdpSocket,
    media: Vec<mpsc::Sender<MediaIn>>,
    mut routes: mpsc::UnboundedReceiver<Route>,
) {
    let sock = match tokio::net::UdpSocket::from_std(sock) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "UDP socket unusable");
            return;
        }
    };
    let mut router: Router<u64> = Router::default();
    let mut buf = vec![0u8; 2048];
    let mut dropped = 0u64;
    let apply = |router: &mut Router<u64>, r: Route| match r {
        Route::Ufrag(k, u) => router.add_ufrag(k, u),
        Route::Remove(k) => router.remove(k),
    };
    loop {
        tokio::select! {
            r = routes.recv() => match r {
                Some(r) => apply(&mut router, r),
                None => return,
            },
            r = sock.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                // Routes first: a connection's credentials are always sent before the
                // SDP that lets its client reach it.
                while let Ok(r) = routes.try_recv() {
                    apply(&mut router, r);
                }
                let mut next = Some((n, from));
                let mut batch = 0;
                while let Some((n, from)) = next.take() {
                    if let Some(key) = router.route(from, &buf[..n]) {
                        let shard = (key >> 32) as usize;
                        let m = MediaIn::Datagram { conn: key as u32, from, data: buf[..n].to_vec() };
                        if media.get(shard).is_none_or(|tx| tx.try_send(m).is_err()) {
                            dropped += 1;
                            if dropped.is_power_of_two() {
                                tracing::warn!(dropped, "engine overloaded: datagrams dropped");
                            }
                        }
                    }
                    batch += 1;
                    if batch < BATCH
                        && let Ok(r) = sock.try_recv_from(&mut buf)
                    {
                        next = Some(r);
                    }
                }
            }
        }
    }
}

type ConnId = u32;

struct Conn {
    rtc: Rtc,
    peer: PeerId,
    kind: Pc,
    deadline: Instant,
    /// Media was written since the last drain.
    wrote: bool,
    /// NACKs received so far on each of its sending streams (str0m reports totals).
    nacks: Vec<(Mid, u64)>,
}

struct Member {
    room: Arc<RoomRef>,
    events: mpsc::Sender<Internal>,
    publish: Option<ConnId>,
    subscribe: Option<ConnId>,
    labels: BTreeMap<String, Media>,
    pending: Option<SdpPendingOffer>,
    /// Sources added to `sub` and not yet offered.
    to_add: Vec<Arc<Source>>,
    /// Media sections of `sub` to turn off at the next offer.
    to_stop: Vec<Mid>,
    sub_connected: bool,
    /// The `sub` connection's bandwidth estimate, bits per second, 0 when unknown: str0m's
    /// send-side estimate from TWCC feedback, else the browser's REMB.
    estimate: u64,
    /// TWCC feedback drives the estimate (REMB is then ignored).
    twcc: bool,
    /// Keys of the sources this member receives.
    receiving: Vec<u64>,
    /// When its layers are to be chosen again (an estimate change, a climb due).
    recheck: Option<Instant>,
    last_allocation: Option<Instant>,
    /// The estimator's last `(minimum, desired)` and when they were set.
    probe: (u64, u64, Option<Instant>),
    /// What it receives: its own choice and the class's; the stricter applies.
    own_mode: ReceiveMode,
    class_mode: ReceiveMode,
    /// Its video sections are off (sound only): no media and no padding is sent on them.
    video_off: bool,
    /// Video sections to turn off or on at the next offer.
    redirect: Vec<(Mid, Direction)>,
    /// Video sections are being turned on: video waits for the answer (str0m sends
    /// nothing on a section still inactive, and the keyframe would be lost).
    video_pending: bool,
}

/// The publisher side of one layer.
struct PubLayer {
    rank: u8,
    ssrc: Ssrc,
    bytes: u64,
    packets: u64,
    /// As of the last measure: the stat, the counters then, when.
    stat: (LayerStat, u64, u64, Instant),
    last_pli: Option<Instant>,
    /// A request came within the throttle window: one more goes when it ends.
    pli_pending: bool,
}

/// The publisher side of one source, on the publisher's shard.
struct Published {
    source: Arc<Source>,
    conn: ConnId,
    mid: Mid,
    /// Present layers, lowest first.
    layers: Vec<PubLayer>,
    next_measure: Instant,
    level: LevelWindow,
    level_start: Instant,
    /// A recording hears this source (set by the room task through `ShardCmd::Tap`).
    tap: Option<crate::record::Tap>,
}

/// The subscriber side: one member receiving one source.
struct Sub {
    peer: PeerId,
    conn: ConnId,
    source: Arc<Source>,
    mid: Option<Mid>,
    pt: Option<Pt>,
    fwd: Forward,
    /// The last extended sequence number sent (str0m takes 64-bit sequence numbers).
    last_seq: Option<u64>,
    want: Quality,
    forwarded: bool,
    rank: u8,
    hold: LayerHold,
}

#[derive(Default)]
struct Counters {
    packets_in: [u64; 2],
    bytes_in: [u64; 2],
    packets_out: [u64; 2],
    bytes_out: [u64; 2],
    not_granted: u64,
    plis_sent: u64,
    plis_received: u64,
    switches: u64,
    nacks: u64,
}

struct Shard {
    id: usize,
    shards: Shards,
    sock: Arc<std::net::UdpSocket>,
    candidates: Vec<SocketAddr>,
    cert: Option<str0m::config::DtlsCert>,
    conns: Vec<Option<Conn>>,
    free: Vec<ConnId>,
    members: HashMap<PeerId, Member>,
    /// Sources published by this shard's members, by key.
    published: HashMap<u64, Published>,
    by_ssrc: HashMap<(ConnId, Ssrc), (u64, u8)>,
    /// What this shard's members receive, by source key.
    subs: HashMap<u64, Vec<Sub>>,
    out: Vec<(SocketAddr, Vec<u8>)>,
    written: Vec<ConnId>,
    counters: Counters,
    /// Subscribers' bandwidth estimated here (`--estimate-bandwidth`).
    estimate: bool,
    /// Connections' deadlines, earliest first (an entry whose connection's deadline has
    /// moved since is skipped when it comes up).
    timers: BinaryHeap<Reverse<(Instant, ConnId)>>,
}

fn kind_index(media: Media) -> usize {
    usize::from(media != Media::Audio)
}

fn rid_rank(rid: &str) -> u8 {
    match rid {
        "q" | "l" | "low" => 0,
        "h" | "m" | "mid" => 1,
        _ => 2,
    }
}

fn crashed() -> SignalError {
    SignalError::new(SignalCode::Internal, "the media connection failed inside the SFU: join again")
}

/// A video being sent to a member, as its budget sees it.
struct SentVideo {
    at: SubAt,
    layers: Vec<LayerStat>,
    quality: Quality,
    rank: u8,
    held: Option<usize>,
}

/// Where a subscription is: its source's key, its index there.
type SubAt = (u64, usize);

/// Subscription `i` of source `k`.
fn sub_at(subs: &HashMap<u64, Vec<Sub>>, (k, i): SubAt) -> Option<&Sub> {
    subs.get(&k).and_then(|v| v.get(i))
}

fn no_connection() -> SignalError {
    SignalError::new(SignalCode::NoConnection, "that connection is not negotiated yet")
}

impl Shard {
    async fn run(mut self, mut ctl: mpsc::UnboundedReceiver<ShardCmd>, mut media: mpsc::Receiver<MediaIn>) {
        let mut next_report = now() + Duration::from_secs(1);
        let mut next_tick = now() + TICK;
        loop {
            // The earliest connection deadline (str0m's pacer and probes want their
            // moments: its estimator reads the send times), else the next tick.
            let first = self.timers.peek().map(|Reverse((t, _))| *t);
            let due = tokio::time::Instant::from_std(first.map_or(next_tick, |t| t.min(next_tick)));
            tokio::select! {
                biased;
                c = ctl.recv() => {
                    let Some(c) = c else { break };
                    self.command(now(), c);
                    for _ in 0..BATCH {
                        let Ok(c) = ctl.try_recv() else { break };
                        self.command(now(), c);
                    }
                }
                Some(m) = media.recv() => {
                    let t = now();
                    self.media(t, m);
                    for _ in 0..4 * BATCH {
                        let Ok(m) = media.try_recv() else { break };
                        self.media(t, m);
                    }
                }
                _ = tokio::time::sleep_until(due) => {}
            }
            // Deadlines are honoured whatever kept the shard busy (a stream of media must
            // not starve the timers).
            let t = now();
            self.due_connections(t);
            if t >= next_tick {
                next_tick = t + TICK;
                self.timeouts(t);
            }
            if t >= next_report {
                next_report = t + Duration::from_secs(1);
                self.report();
            }
            self.flush(now());
        }
        let peers: Vec<PeerId> = self.members.keys().copied().collect();
        for p in peers {
            self.leave(p);
        }
        self.flush(now());
    }

    /// Runs `f` for `peer`; a panic in it (str0m's) ends that member, not the shard.
    fn guarded(&mut self, peer: PeerId, f: impl FnOnce(&mut Self)) {
        if catch_unwind(AssertUnwindSafe(|| f(self))).is_err() {
            self.crashed(peer);
        }
    }

    fn crashed(&mut self, peer: PeerId) {
        tracing::error!(peer, shard = self.id, "media engine failed on this member's connection: session closed");
        metrics::counter!(m::ENGINE_PANICS).increment(1);
        if let Some(mb) = self.members.get(&peer) {
            let _ = mb.events.try_send(Internal::Crashed);
        }
        self.leave(peer);
    }

    fn new_conn(&mut self, now: Instant, peer: PeerId, kind: Pc) -> Result<ConnId, SignalError> {
        let mut b = Rtc::builder().set_rtp_mode(true).set_ice_lite(true).clear_codecs();
        if kind == Pc::Sub {
            // Sending streams' totals (NACKs received) every few seconds, for the metrics.
            b = b.set_stats_interval(Some(STATS_EVERY));
        }
        if let Some(cert) = &self.cert {
            b = b.set_dtls_cert(cert.clone());
        }
        let mut codecs = CodecConfig::empty();
        codecs.enable_opus(true, false);
        codecs.enable_vp8(true);
        let estimate = kind == Pc::Sub && self.estimate;
        if estimate {
            // The SFU estimates each subscriber's bandwidth from its TWCC feedback and
            // probes for more; a browser that answers without transport-cc sends REMB.
            b = b.enable_bwe(Some(Bitrate::from(BWE_START as f64)));
            // Audio carries no transport-cc: the estimator then never pads on an audio
            // section, so a sound-only subscriber (video sections off) gets no padding.
            let params = codecs
                .params()
                .iter()
                .cloned()
                .map(|mut p| {
                    if p.spec().codec.is_audio() {
                        p.set_fb_transport_cc(false);
                    }
                    p
                })
                .collect();
            codecs = CodecConfig::new_from_payload_params(params);
        } else if kind == Pc::Sub {
            // No estimator on this node: subscribers estimate for themselves and say it
            // by REMB (from abs-send-time), which a browser does without transport-cc.
            let params = codecs
                .params()
                .iter()
                .cloned()
                .map(|mut p| {
                    p.set_fb_transport_cc(false);
                    p
                })
                .collect();
            codecs = CodecConfig::new_from_payload_params(params);
            let mut exts = ExtensionMap::empty();
            exts.set(2, str0m::rtp::Extension::AbsoluteSendTime);
            exts.set(4, str0m::rtp::Extension::RtpMid);
            b = b.set_extension_map(exts);
        }
        *b.codec_config() = codecs;
        let mut rtc = b.build(now);
        if estimate {
            rtc.bwe().set_bitrate(Bitrate::from(0.0), Bitrate::from(BWE_DESIRED as f64));
        }
        for c in &self.candidates {
            let cand = Candidate::host(*c, "udp").map_err(|e| internal("local candidate", e))?;
            rtc.add_local_candidate(cand);
        }
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag.clone();
        let conn = Conn { rtc, peer, kind, deadline: now, wrote: false, nacks: Vec::new() };
        let id = match self.free.pop() {
            Some(i) => {
                self.conns[i as usize] = Some(conn);
                i
            }
            None => {
                self.conns.push(Some(conn));
                (self.conns.len() - 1) as ConnId
            }
        };
        self.shards.route(Route::Ufrag(route_key(self.id, id), ufrag));
        self.timers.push(Reverse((now, id)));
        Ok(id)
    }

    fn close_conn(&mut self, id: ConnId) {
        let Some(mut c) = self.conns.get_mut(id as usize).and_then(Option::take) else { return };
        // A panic here must not take the shard down with the member it was for.
        let _ = catch_unwind(AssertUnwindSafe(|| c.rtc.disconnect()));
        self.shards.route(Route::Remove(route_key(self.id, id)));
        self.by_ssrc.retain(|(conn, _), _| *conn != id);
        self.free.push(id);
    }

    fn conn(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(id as usize).and_then(Option::as_mut)
    }

    fn command(&mut self, now: Instant, c: ShardCmd) {
        match c {
            ShardCmd::Open { peer, room, events } => {
                self.members.insert(
                    peer,
                    Member {
                        room,
                        events,
                        publish: None,
                        subscribe: None,
                        labels: BTreeMap::new(),
                        pending: None,
                        to_add: Vec::new(),
                        to_stop: Vec::new(),
                        sub_connected: false,
                        estimate: 0,
                        twcc: false,
                        receiving: Vec::new(),
                        recheck: None,
                        last_allocation: None,
                        probe: (0, 0, None),
                        own_mode: ReceiveMode::All,
                        class_mode: ReceiveMode::All,
                        video_off: false,
                        redirect: Vec::new(),
                        video_pending: false,
                    },
                );
            }
            ShardCmd::Publish { peer, sdp, labels, early, reply } => {
                let mut r = None;
                self.guarded(peer, |s| r = Some(s.publish(now, peer, sdp, labels, early)));
                let _ = reply.send(r.unwrap_or_else(|| Err(crashed())));
            }
            ShardCmd::Subscribe { peer, source, forwarded, rank } => {
                self.guarded(peer, |s| s.subscribe(now, peer, source, forwarded, rank));
            }
            ShardCmd::Unsubscribe { peer, key } => self.unsubscribe(peer, key),
            ShardCmd::Forward { peer, key, on } => {
                if let Some(i) = self.sub_index(key, peer) {
                    if let Some(v) = self.subs.get_mut(&key) {
                        v[i].forwarded = on;
                    }
                    self.refresh_member(now, peer);
                }
            }
            ShardCmd::Quality { peer, key, quality } => {
                if let Some(i) = self.sub_index(key, peer) {
                    if let Some(v) = self.subs.get_mut(&key) {
                        v[i].want = quality;
                        // A new tile size is a fresh choice, not a climb to wait for.
                        v[i].hold = LayerHold::default();
                    }
                    self.refresh_member(now, peer);
                }
            }
            ShardCmd::Receive { peer, mode, class } => {
                if let Some(mb) = self.members.get_mut(&peer) {
                    if class {
                        mb.class_mode = mode;
                    } else {
                        mb.own_mode = mode;
                    }
                }
                self.video_sections(peer);
                self.refresh_member(now, peer);
            }
            ShardCmd::Offer { peer, ice_restart, reply } => {
                let mut r = None;
                self.guarded(peer, |s| r = Some(s.offer(peer, ice_restart)));
                let _ = reply.send(r.unwrap_or_else(|| Err(crashed())));
            }
            ShardCmd::Answer { peer, sdp, reply } => {
                let mut r = None;
                self.guarded(peer, |s| r = Some(s.answer(now, peer, sdp)));
                let _ = reply.send(r.unwrap_or_else(|| Err(crashed())));
            }
            ShardCmd::Candidate { peer, pc, candidate, reply } => {
                let mut r = None;
                self.guarded(peer, |s| r = Some(s.candidate(peer, pc, &candidate)));
                let _ = reply.send(r.unwrap_or_else(|| Err(crashed())));
            }
            ShardCmd::Leave { peer } => self.leave(peer),
            ShardCmd::Keyframe { key, layer } => self.pli(now, key, layer),
            ShardCmd::Tap { key, tap } => {
                if let Some(p) = self.published.get_mut(&key) {
                    p.tap = tap;
                }
            }
            ShardCmd::Relayer { key, reset } => self.relayer(now, key, reset),
            #[cfg(test)]
            ShardCmd::Panic { peer } => self.guarded(peer, |_| panic!("a test panic inside the engine")),
        }
    }

    fn publish(
        &mut self,
        now: Instant,
        peer: PeerId,
        sdp: String,
        labels: BTreeMap<String, Media>,
        early: Vec<String>,
    ) -> Result<String, SignalError> {
        let offer = SdpOffer::from_sdp_string(&sdp).map_err(|e| bad_sdp("offer", e))?;
        let Some(mb) = self.members.get_mut(&peer) else { return Err(no_connection()) };
        mb.labels.extend(labels);
        let conn = match mb.publish {
            Some(c) => c,
            None => {
                let c = self.new_conn(now, peer, Pc::Pub)?;
                if let Some(mb) = self.members.get_mut(&peer) {
                    mb.publish = Some(c);
                }
                c
            }
        };
        let Some(c) = self.conn(conn) else { return Err(no_connection()) };
        let answer = c.rtc.sdp_api().accept_offer(offer).map_err(|e| bad_sdp("offer", e))?;
        for cand in early {
            if let Ok(cand) = Candidate::from_sdp_string(&cand) {
                c.rtc.add_remote_candidate(cand);
            }
        }
        // A publisher's ICE restart gives this side new credentials too.
        let ufrag = c.rtc.direct_api().local_ice_credentials().ufrag.clone();
        self.shards.route(Route::Ufrag(route_key(self.id, conn), ufrag));
        self.drain(now, conn);
        Ok(answer.to_sdp_string())
    }

    fn subscribe(&mut self, now: Instant, peer: PeerId, source: Arc<Source>, forwarded: bool, rank: u8) {
        let Some(mb) = self.members.get(&peer) else { return };
        if source.is_closed() {
            return;
        }
        let conn = match mb.subscribe {
            Some(c) => c,
            None => match self.new_conn(now, peer, Pc::Sub) {
                Ok(c) => {
                    if let Some(mb) = self.members.get_mut(&peer) {
                        mb.subscribe = Some(c);
                    }
                    c
                }
                Err(e) => {
                    tracing::warn!(peer, error = %e.message, "sub connection not created");
                    return;
                }
            },
        };
        self.unsubscribe(peer, source.key);
        let clock = if source.is_video() { 90000 } else { 48000 };
        let mut fwd = if source.is_video() { Forward::video(clock) } else { Forward::audio(clock) };
        // Until `sub` is up and the track negotiated: forwarding starts on a fresh keyframe.
        fwd.pause();
        let want = if source.media == Media::Video { Quality::Medium } else { Quality::High };
        let key = source.key;
        if let Some(mb) = self.members.get_mut(&peer) {
            mb.to_add.push(source.clone());
            mb.receiving.push(key);
        }
        self.subs.entry(key).or_default().push(Sub {
            peer,
            conn,
            source,
            mid: None,
            pt: None,
            fwd,
            last_seq: None,
            want,
            forwarded,
            rank,
            hold: LayerHold::default(),
        });
    }

    fn sub_index(&self, key: u64, peer: PeerId) -> Option<usize> {
        self.subs.get(&key)?.iter().position(|s| s.peer == peer)
    }

    fn unsubscribe(&mut self, peer: PeerId, key: u64) {
        let Some(v) = self.subs.get_mut(&key) else { return };
        let Some(i) = v.iter().position(|s| s.peer == peer) else { return };
        let sub = v.swap_remove(i);
        if v.is_empty() {
            self.subs.remove(&key);
        }
        if let Some(mb) = self.members.get_mut(&peer) {
            mb.to_add.retain(|s| s.key != key);
            mb.receiving.retain(|k| *k != key);
            if let Some(mid) = sub.mid {
                mb.to_stop.push(mid);
            }
        }
    }

    /// Chooses the layers of everything `peer` receives (its budget shared in rank order,
    /// each choice through its hold), and sets each subscription going or paused.
    fn refresh_member(&mut self, now: Instant, peer: PeerId) {
        let Some(mb) = self.members.get(&peer) else { return };
        let (connected, estimate) = (mb.sub_connected, mb.estimate);
        let mode = mb.own_mode.max(mb.class_mode);
        let video_held = mb.video_off || mb.video_pending;
        let estimating = self.estimate;
        let entries: Vec<(u64, usize)> =
            mb.receiving.iter().filter_map(|&k| self.sub_index(k, peer).map(|i| (k, i))).collect();
        // Audio-only: no video is sent at all.
        let live = |s: &Sub| {
            connected
                && s.pt.is_some()
                && s.forwarded
                && !s.source.is_closed()
                && !((mode == ReceiveMode::Audio || video_held) && s.source.is_video())
        };
        // Low: every video on its lowest layer.
        let cap = |q: Quality| if mode == ReceiveMode::Low { Quality::Low } else { q };
        let audio = entries.iter().filter(|e| sub_at(&self.subs, **e).is_some_and(|s| !s.source.is_video())).count();
        let budget = (estimate > 0).then(|| estimate.saturating_sub(AUDIO_BPS * audio as u64));
        // The videos that take bandwidth: those being sent.
        let videos: Vec<SentVideo> = entries
            .iter()
            .filter_map(|e| sub_at(&self.subs, *e).map(|s| (*e, s)))
            .filter(|(_, s)| s.source.is_video() && live(s))
            .map(|(at, s)| SentVideo {
                at,
                layers: s.source.layers.read().clone(),
                quality: cap(s.want),
                rank: s.rank,
                held: s.hold.held(),
            })
            .collect();
        let wants: Vec<VideoWant<'_>> = videos
            .iter()
            .map(|v| VideoWant { layers: &v.layers, quality: v.quality, rank: v.rank, held: v.held })
            .collect();
        let chosen = allocate(budget, &wants);
        let mut proposals: HashMap<(u64, usize), Option<usize>> =
            videos.iter().zip(chosen).map(|(v, c)| (v.at, c)).collect();
        let mut recheck: Option<Instant> = None;
        let mut plis = Vec::new();
        let mut held: HashMap<SubAt, Option<usize>> = HashMap::new();
        for e in entries {
            let Some(sub) = self.subs.get_mut(&e.0).and_then(|v| v.get_mut(e.1)) else { continue };
            let is_live = live(sub);
            let target = if !sub.source.is_video() {
                Some(0)
            } else if let Some(p) = proposals.remove(&e) {
                // Where subscribers are estimated, a new subscription starts on the lowest
                // layer (its keyframe is the smallest, so the first picture comes soonest)
                // and climbs: by the estimate's holds, or, while no estimate is known yet,
                // straight to its tile's layer a moment later.
                let lowest = sub.source.layers.read().iter().position(|l| l.active);
                let fresh = sub.hold.held().is_none() && is_live && estimating && lowest.is_some();
                let p = if fresh { lowest } else { p };
                if budget.is_none() && !fresh {
                    // Without an estimate there is nothing noisy to hold against: layers
                    // follow the tile and the publisher's layers at once.
                    sub.hold = LayerHold::default();
                }
                if fresh && budget.is_none() {
                    let soon = now + FIRST_LAYER_FOR;
                    recheck = Some(recheck.map_or(soon, |r| r.min(soon)));
                }
                sub.hold.decide(now, p)
            } else {
                sub.hold.held()
            };
            if let Some(t) = sub.hold.move_due() {
                recheck = Some(recheck.map_or(t, |r| r.min(t)));
            }
            held.insert(e, target);
            if target != sub.fwd.target() && sub.source.is_video() {
                tracing::debug!(peer, source = %sub.source.id, ?target, ?budget, "layer");
            }
            // Low: a screen at its base frame rate (the page sends screens in temporal
            // layers).
            let screen_low = mode == ReceiveMode::Low && sub.source.media == Media::Screen;
            sub.fwd.set_max_temporal(screen_low.then_some(0));
            let mut pli = sub.fwd.set_target(target);
            if is_live {
                pli |= sub.fwd.resume();
            } else {
                sub.fwd.pause();
            }
            if pli && let Some(l) = target {
                plis.push((sub.source.shard, e.0, l));
            }
        }
        let probing: Vec<(VideoWant<'_>, Option<usize>)> =
            videos.iter().zip(&wants).map(|(v, w)| (*w, held.get(&v.at).copied().flatten())).collect();
        let (minimum, desired) = probe_rates(&probing);
        let audio_bps = AUDIO_BPS * audio as u64;
        let rates = (if minimum > 0 { minimum + audio_bps } else { 0 }, desired + audio_bps);
        if let Some(mb) = self.members.get_mut(&peer) {
            mb.recheck = recheck;
            mb.last_allocation = Some(now);
            // Ask the estimator for what the tiles want: a rise starts a probe, and while
            // the estimate stays short of it, a slightly higher ask every few seconds
            // starts another (asking the same again does not).
            let (min0, des0, at) = mb.probe;
            let short = rates.1 > estimate && at.is_some_and(|t| now.saturating_duration_since(t) >= PROBE_AGAIN);
            let rates = if short && (min0, des0) == (rates.0, rates.1) { (rates.0, rates.1 + 1000) } else { rates };
            if (min0, des0) != rates || short {
                mb.probe = (rates.0, rates.1, Some(now));
                if let Some(c_id) = mb.subscribe
                    && let Some(c) = self.conns.get_mut(c_id as usize).and_then(Option::as_mut)
                {
                    c.rtc
                        .bwe()
                        .set_bitrate(Bitrate::from(rates.0 as f64), Bitrate::from(rates.1.max(BWE_START) as f64));
                    // Its timers moved: look at it now.
                    c.deadline = now;
                    self.timers.push(Reverse((now, c_id)));
                }
            }
            if rates.1 > estimate && mb.twcc {
                let again = now + PROBE_AGAIN;
                mb.recheck = Some(mb.recheck.map_or(again, |r| r.min(again)));
            }
        }
        for (shard, key, layer) in plis {
            self.keyframe(now, shard, key, layer);
        }
    }

    /// Sound only turns `peer`'s video sections off, anything else turns them on; `sub` is
    /// offered again either way. The estimator pads on the first section that may send
    /// video with transport-cc (audio sections are never padded: see `new_conn`), so with
    /// them off a family on a poor line gets no padding either.
    fn video_sections(&mut self, peer: PeerId) {
        let Some(mb) = self.members.get(&peer) else { return };
        let off = mb.own_mode.max(mb.class_mode) == ReceiveMode::Audio;
        if off == mb.video_off {
            return;
        }
        let dir = if off { Direction::Inactive } else { Direction::SendOnly };
        let mids: Vec<Mid> = mb
            .receiving
            .iter()
            .filter_map(|&k| self.sub_index(k, peer).and_then(|i| self.subs.get(&k)?.get(i)))
            .filter(|s| s.source.is_video())
            .filter_map(|s| s.mid)
            .collect();
        if let Some(mb) = self.members.get_mut(&peer) {
            mb.video_off = off;
            mb.video_pending = !off;
            mb.redirect.retain(|(m, _)| !mids.contains(m));
            mb.redirect.extend(mids.into_iter().map(|m| (m, dir)));
            let _ = mb.events.try_send(Internal::Renegotiate);
        }
    }

    /// The estimate of `peer`'s `sub` connection changed: its layers are chosen again soon
    /// (at most every [`REALLOCATE_EVERY`]).
    fn estimate_changed(&mut self, now: Instant, peer: PeerId, bps: u64, twcc: bool) {
        let Some(mb) = self.members.get_mut(&peer) else { return };
        if mb.twcc && !twcc {
            return;
        }
        mb.twcc |= twcc;
        if mb.estimate == bps {
            return;
        }
        mb.estimate = bps;
        tracing::trace!(peer, bps, twcc, "estimate");
        let at = mb.last_allocation.map_or(now, |t| (t + REALLOCATE_EVERY).max(now));
        mb.recheck = Some(mb.recheck.map_or(at, |r| r.min(at)));
    }

    fn relayer(&mut self, now: Instant, key: u64, reset: bool) {
        let peers: Vec<PeerId> = match self.subs.get_mut(&key) {
            Some(v) => {
                if reset {
                    for s in v.iter_mut() {
                        s.fwd.reset();
                        s.hold = LayerHold::default();
                    }
                }
                v.iter().map(|s| s.peer).collect()
            }
            None => Vec::new(),
        };
        for p in peers {
            self.refresh_member(now, p);
        }
    }

    /// Asks the publisher's shard for a keyframe.
    fn keyframe(&mut self, now: Instant, shard: usize, key: u64, layer: usize) {
        if shard == self.id {
            self.pli(now, key, layer);
        } else {
            self.shards.send(shard, ShardCmd::Keyframe { key, layer });
        }
    }

    /// Requests a keyframe of `layer` from the publisher, at most every 300 ms per layer;
    /// a request inside that window is sent when it closes (browsers send keyframes only
    /// when asked, so a dropped request would leave a subscriber without picture).
    fn pli(&mut self, now: Instant, key: u64, layer: usize) {
        let Some(p) = self.published.get_mut(&key) else { return };
        let conn = p.conn;
        let Some(l) = p.layers.get_mut(layer) else { return };
        if l.last_pli.is_some_and(|t| now.saturating_duration_since(t) < PLI_INTERVAL) {
            l.pli_pending = true;
            return;
        }
        l.last_pli = Some(now);
        l.pli_pending = false;
        let ssrc = l.ssrc;
        let peer = self.conns.get(conn as usize).and_then(Option::as_ref).map(|c| c.peer);
        let Some(peer) = peer else { return };
        self.guarded(peer, |s| {
            if let Some(c) = s.conn(conn)
                && let Some(rx) = c.rtc.direct_api().stream_rx(&ssrc)
            {
                rx.request_keyframe(KeyframeRequestKind::Pli);
                s.counters.plis_sent += 1;
                s.drain(now, conn);
            }
        });
    }

    fn offer(&mut self, peer: PeerId, ice_restart: bool) -> Result<Option<String>, SignalError> {
        let Some(mb) = self.members.get_mut(&peer) else { return Err(no_connection()) };
        let Some(conn) = mb.subscribe else { return Ok(None) };
        let adds = std::mem::take(&mut mb.to_add);
        let stops = std::mem::take(&mut mb.to_stop);
        let redirect = std::mem::take(&mut mb.redirect);
        let video_off = mb.video_off;
        let Some(c) = self.conns.get_mut(conn as usize).and_then(Option::as_mut) else { return Ok(None) };
        let mut api = c.rtc.sdp_api();
        let new_ufrag = ice_restart.then(|| api.ice_restart(true).ufrag);
        for (mid, dir) in redirect.into_iter().filter(|(m, _)| !stops.contains(m)) {
            api.set_direction(mid, dir);
        }
        for mid in stops {
            api.set_direction(mid, Direction::Inactive);
        }
        let mut mids = Vec::new();
        for s in adds.iter().filter(|s| !s.is_closed()) {
            let kind = if s.is_video() { MediaKind::Video } else { MediaKind::Audio };
            // Microphone and camera share a stream (kept in sync); a screen has its own.
            let stream = match s.media {
                Media::Screen => format!("p{}-screen", s.peer),
                _ => format!("p{}", s.peer),
            };
            let dir = if video_off && s.is_video() { Direction::Inactive } else { Direction::SendOnly };
            let mid = api.add_media(kind, dir, Some(stream), Some(s.id.clone()), None);
            mids.push((s.key, mid));
        }
        let Some((offer, pending)) = api.apply() else { return Ok(None) };
        if let Some(u) = new_ufrag {
            self.shards.route(Route::Ufrag(route_key(self.id, conn), u));
        }
        for (key, mid) in mids {
            if let Some(sub) = self.subs.get_mut(&key).and_then(|v| v.iter_mut().find(|s| s.peer == peer)) {
                sub.mid = Some(mid);
            }
        }
        if let Some(mb) = self.members.get_mut(&peer) {
            mb.pending = Some(pending);
        }
        Ok(Some(offer.to_sdp_string()))
    }

    fn answer(&mut self, now: Instant, peer: PeerId, sdp: String) -> Result<(), SignalError> {
        let answer = SdpAnswer::from_sdp_string(&sdp).map_err(|e| bad_sdp("answer", e))?;
        let Some(mb) = self.members.get_mut(&peer) else { return Err(no_connection()) };
        let no_offer = || SignalError::new(SignalCode::NoOffer, "no offer to answer");
        let (Some(conn), Some(pending)) = (mb.subscribe, mb.pending.take()) else { return Err(no_offer()) };
        let Some(c) = self.conn(conn) else { return Err(no_connection()) };
        c.rtc.sdp_api().accept_answer(pending, answer).map_err(|e| bad_sdp("answer", e))?;
        if let Some(mb) = self.members.get_mut(&peer)
            && mb.redirect.is_empty()
        {
            mb.video_pending = false;
        }
        // Each new track's payload type: the codec the answer kept for its section.
        let mut found = Vec::new();
        for (key, v) in &self.subs {
            for (i, sub) in v.iter().enumerate() {
                if sub.peer != peer || sub.pt.is_some() {
                    continue;
                }
                let Some(mid) = sub.mid else { continue };
                let want = if sub.source.is_video() { Codec::Vp8 } else { Codec::Opus };
                let Some(c) = self.conns.get(conn as usize).and_then(Option::as_ref) else { continue };
                let pts: Vec<Pt> = c.rtc.media(mid).map(|m| m.remote_pts().to_vec()).unwrap_or_default();
                let pt = c
                    .rtc
                    .codec_config()
                    .params()
                    .iter()
                    .find(|p| p.spec().codec == want && pts.contains(&p.pt()))
                    .map(|p| p.pt());
                found.push((*key, i, pt));
            }
        }
        for (key, i, pt) in found {
            if let Some(sub) = self.subs.get_mut(&key).and_then(|v| v.get_mut(i)) {
                sub.pt = pt;
            }
        }
        self.refresh_member(now, peer);
        self.drain(now, conn);
        Ok(())
    }

    fn candidate(&mut self, peer: PeerId, pc: Pc, candidate: &str) -> Result<(), SignalError> {
        let Some(mb) = self.members.get(&peer) else { return Err(no_connection()) };
        let conn = match pc {
            Pc::Pub => mb.publish,
            Pc::Sub => mb.subscribe,
        };
        let Some(c) = conn.and_then(|c| self.conn(c)) else { return Err(no_connection()) };
        let line = candidate.strip_prefix("a=").unwrap_or(candidate);
        let cand = Candidate::from_sdp_string(line).map_err(|e| {
            tracing::debug!(error = %e, "unusable candidate");
            SignalError::new(SignalCode::BadCandidate, "the candidate could not be used")
        })?;
        // ICE lite: the client's checks tell its address; its candidates are a hint.
        c.rtc.add_remote_candidate(cand);
        Ok(())
    }

    fn leave(&mut self, peer: PeerId) {
        let Some(mb) = self.members.remove(&peer) else { return };
        self.subs.retain(|_, v| {
            v.retain(|s| s.peer != peer);
            !v.is_empty()
        });
        let own: Vec<u64> = self.published.iter().filter(|(_, p)| p.source.peer == peer).map(|(k, _)| *k).collect();
        for k in own {
            if let Some(p) = self.published.remove(&k) {
                p.source.close();
                let _ = mb.room.closed.try_send(p.source.id.clone());
            }
        }
        for c in [mb.publish, mb.subscribe].into_iter().flatten() {
            self.close_conn(c);
        }
    }

    fn media(&mut self, now: Instant, m: MediaIn) {
        match m {
            MediaIn::Datagram { conn, from, data } => {
                let Some(c) = self.conn(conn) else { return };
                let peer = c.peer;
                // The destination is the announced address the client's checks name.
                let destination = self.candidates.first().copied().unwrap_or(from);
                self.guarded(peer, |s| {
                    let Some(c) = s.conn(conn) else { return };
                    let Ok(contents) = data.as_slice().try_into() else { return };
                    let input =
                        Input::Receive(now, Receive { proto: Protocol::Udp, source: from, destination, contents });
                    if let Err(e) = c.rtc.handle_input(input) {
                        tracing::debug!(error = %e, "datagram refused");
                    }
                    s.drain(now, conn);
                });
            }
            MediaIn::Packet(p) => self.forward(now, &p),
        }
    }

    /// Connections whose deadline has come: told the time, drained.
    fn due_connections(&mut self, now: Instant) {
        while let Some(Reverse((t, id))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(c) = self.conn(id) else { continue };
            if c.deadline != t {
                continue; // moved since: its current deadline has its own entry
            }
            let peer = c.peer;
            self.guarded(peer, |s| {
                if let Some(c) = s.conn(id) {
                    let _ = c.rtc.handle_input(Input::Timeout(now));
                }
                s.drain(now, id);
            });
        }
    }

    /// Every tick: layer choices and keyframe requests that were waiting.
    fn timeouts(&mut self, now: Instant) {
        // Layer choices due (an estimate change, a climb).
        let due: Vec<PeerId> =
            self.members.iter().filter(|(_, m)| m.recheck.is_some_and(|t| t <= now)).map(|(p, _)| *p).collect();
        for p in due {
            self.refresh_member(now, p);
        }
        // Keyframe requests held back by the throttle.
        let due: Vec<(u64, usize)> = self
            .published
            .iter()
            .flat_map(|(k, p)| p.layers.iter().enumerate().filter(|(_, l)| l.pli_pending).map(move |(i, _)| (*k, i)))
            .collect();
        for (k, l) in due {
            self.pli(now, k, l);
        }
    }

    /// Drains what was written, then sends every datagram produced.
    fn flush(&mut self, now: Instant) {
        for id in std::mem::take(&mut self.written) {
            let Some(c) = self.conn(id) else { continue };
            let peer = c.peer;
            self.guarded(peer, |s| s.drain(now, id));
        }
        if !self.out.is_empty() {
            if let Err(e) = send_batch(&*self.sock, &self.out) {
                tracing::debug!(error = %e, "send failed");
            }
            self.out.clear();
        }
    }

    /// Every output of connection `id` until it asks for a timeout; then its events.
    fn drain(&mut self, now: Instant, id: ConnId) {
        let mut events = Vec::new();
        let (peer, kind) = {
            let Some(c) = self.conns.get_mut(id as usize).and_then(Option::as_mut) else { return };
            if std::mem::take(&mut c.wrote) {
                // str0m releases queued RTP when it is told the time.
                let _ = c.rtc.handle_input(Input::Timeout(now));
            }
            loop {
                match c.rtc.poll_output() {
                    Ok(Output::Transmit(t)) => self.out.push((t.destination, t.contents.into())),
                    Ok(Output::Timeout(t)) => {
                        // A subscriber whose bandwidth is estimated gets str0m's moments
                        // exactly (its estimator reads the send times); every other
                        // connection is served by the tick, which costs far fewer passes.
                        let precise = c.kind == Pc::Sub && self.members.get(&c.peer).is_some_and(|m| m.twcc);
                        let t = if precise { t } else { t.max(now + TICK) };
                        if c.deadline != t {
                            c.deadline = t;
                            self.timers.push(Reverse((t, id)));
                        }
                        break;
                    }
                    Ok(Output::Event(e)) => events.push(e),
                    Err(e) => {
                        tracing::debug!(error = %e, "connection failed");
                        c.deadline = now + Duration::from_secs(3600);
                        break;
                    }
                }
            }
            (c.peer, c.kind)
        };
        for e in events {
            self.event(now, id, peer, kind, e);
        }
    }

    fn tell(&self, peer: PeerId, i: Internal) {
        if let Some(mb) = self.members.get(&peer) {
            let _ = mb.events.try_send(i);
        }
    }

    fn event(&mut self, now: Instant, id: ConnId, peer: PeerId, kind: Pc, e: Event) {
        match e {
            Event::Connected => {
                tracing::debug!(peer, ?kind, "connected");
                if kind == Pc::Sub {
                    if let Some(mb) = self.members.get_mut(&peer) {
                        mb.sub_connected = true;
                    }
                    self.refresh_member(now, peer);
                }
                self.tell(peer, Internal::Connected(kind));
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                tracing::info!(peer, ?kind, "connection lost");
                self.tell(peer, Internal::Failed(kind));
            }
            Event::MediaAdded(added) if kind == Pc::Pub => self.source_added(now, id, peer, added.mid, added.kind),
            Event::MediaChanged(ch) if kind == Pc::Pub && !ch.direction.is_receiving() => {
                let gone: Vec<u64> =
                    self.published.iter().filter(|(_, p)| p.conn == id && p.mid == ch.mid).map(|(k, _)| *k).collect();
                for k in gone {
                    if let Some(p) = self.published.remove(&k) {
                        p.source.close();
                        if let Some(mb) = self.members.get(&peer) {
                            let _ = mb.room.closed.try_send(p.source.id.clone());
                        }
                    }
                }
            }
            Event::RtpPacket(p) if kind == Pc::Pub => self.rtp(now, id, p),
            Event::KeyframeRequest(req) if kind == Pc::Sub => {
                self.counters.plis_received += 1;
                let found = self
                    .subs
                    .iter()
                    .find_map(|(k, v)| v.iter().find(|s| s.conn == id && s.mid == Some(req.mid)).map(|s| (*k, s)));
                if let Some((key, s)) = found
                    && let Some(l) = s.fwd.current().or(s.fwd.target())
                {
                    let shard = s.source.shard;
                    self.keyframe(now, shard, key, l);
                }
            }
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, can_probe: true }) if kind == Pc::Sub => {
                self.estimate_changed(now, peer, estimate.as_u64(), true);
            }
            Event::EgressBitrateEstimate(BweKind::Remb { estimate, .. }) if kind == Pc::Sub => {
                self.estimate_changed(now, peer, estimate.as_u64(), false);
            }
            Event::MediaEgressStats(s) => {
                if let Some(c) = self.conns.get_mut(id as usize).and_then(Option::as_mut) {
                    let i = c.nacks.iter().position(|(m, _)| *m == s.mid).unwrap_or_else(|| {
                        c.nacks.push((s.mid, 0));
                        c.nacks.len() - 1
                    });
                    let seen = &mut c.nacks[i].1;
                    self.counters.nacks += s.nacks.saturating_sub(*seen);
                    *seen = s.nacks.max(*seen);
                }
            }
            _ => {}
        }
    }

    fn source_added(&mut self, now: Instant, conn: ConnId, peer: PeerId, mid: Mid, kind: MediaKind) {
        let Some(c) = self.conns.get(conn as usize).and_then(Option::as_ref) else { return };
        let track = c.rtc.media(mid).map(|m| m.track_id().to_owned()).unwrap_or_default();
        let Some(mb) = self.members.get(&peer) else { return };
        let media = mb.labels.get(&track).copied().unwrap_or(match kind {
            MediaKind::Audio => Media::Audio,
            MediaKind::Video => Media::Video,
        });
        // A track published again replaces the old one (the room drops the old source).
        let old: Vec<u64> = self
            .published
            .iter()
            .filter(|(_, p)| p.source.peer == peer && p.source.media == media)
            .map(|(k, _)| *k)
            .collect();
        for k in old {
            if let Some(p) = self.published.remove(&k) {
                p.source.close();
            }
        }
        let source = Source::new(self.shards.clone(), self.id, peer, media, false);
        tracing::info!(peer, source = %source.id, ?mid, "source added");
        self.published.insert(
            source.key,
            Published {
                source: source.clone(),
                conn,
                mid,
                layers: Vec::new(),
                next_measure: now + MEASURE_EVERY,
                level: LevelWindow::default(),
                level_start: now,
                tap: None,
            },
        );
        let msg = RoomMsg::SourceAdded(source);
        if let Err(mpsc::error::TrySendError::Full(msg)) = mb.room.tx.try_send(msg) {
            let tx = mb.room.tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(msg).await;
            });
        }
    }

    /// One published packet: measured, checked against grants, handed to every shard
    /// with a subscriber.
    fn rtp(&mut self, now: Instant, conn: ConnId, p: str0m::rtp::RtpPacket) {
        let ssrc = p.header.ssrc;
        let (key, rank) = match self.by_ssrc.get(&(conn, ssrc)) {
            Some(&x) => x,
            None => match self.new_layer(now, conn, ssrc) {
                Some(x) => x,
                None => return,
            },
        };
        let Some(pb) = self.published.get_mut(&key) else { return };
        let source = pb.source.clone();
        let k = kind_index(source.media);
        let size = p.payload.len() as u64 + 12;
        self.counters.packets_in[k] += 1;
        self.counters.bytes_in[k] += size;
        let Some(layer) = pb.layers.iter().position(|l| l.rank == rank) else { return };
        pb.layers[layer].bytes += size;
        pb.layers[layer].packets += 1;
        if now >= pb.next_measure {
            pb.next_measure = now + MEASURE_EVERY;
            if measure(pb, now) {
                self.relayer_everywhere(now, &source, false);
            }
        }
        if source.is_closed() {
            return;
        }
        if !source.allowed.load(Ordering::Acquire) {
            self.counters.not_granted += 1;
            return;
        }
        let Some(pb) = self.published.get_mut(&key) else { return };
        if source.media == Media::Audio {
            if let Some(level) = p.header.ext_vals.audio_level {
                pb.level.add(level.unsigned_abs());
            }
            if now.saturating_duration_since(pb.level_start) >= LEVEL_WINDOW {
                pb.level_start = now;
                if let Some(r) = pb.level.take()
                    && let Some(mb) = self.members.get(&source.peer)
                {
                    // The room hears at most five reports a second; when busy it misses
                    // one, never media.
                    let _ = mb.room.levels.try_send((source.peer, r));
                }
            }
        }
        let keyframe = source.is_video() && vp8_is_keyframe(&p.payload);
        let temporal = if source.is_video() { preau_live::vp8::temporal(&p.payload) } else { None };
        let pkt = Arc::new(Packet {
            source: source.clone(),
            layer,
            seq: p.header.sequence_number,
            ts: p.header.timestamp,
            marker: p.header.marker,
            keyframe,
            temporal,
            arrived: p.timestamp,
            level: p.header.ext_vals.audio_level.map(|l| l.unsigned_abs()),
            payload: p.payload,
        });
        if let Some(t) = &pb.tap {
            t.packet(&pkt, rank);
        }
        let mask = source.shard_mask.load(Ordering::Acquire);
        for shard in (0..64).filter(|s| mask & (1 << s) != 0) {
            if shard == self.id {
                self.forward(now, &pkt);
            } else {
                self.shards.media(shard, MediaIn::Packet(pkt.clone()));
            }
        }
    }

    /// A stream not seen before on a publisher's connection: its mid and rid say which
    /// source and layer it is.
    fn new_layer(&mut self, now: Instant, conn: ConnId, ssrc: Ssrc) -> Option<(u64, u8)> {
        let c = self.conns.get_mut(conn as usize).and_then(Option::as_mut)?;
        let mut api = c.rtc.direct_api();
        let rx = api.stream_rx(&ssrc)?;
        let (mid, rid) = (rx.mid(), rx.rid());
        let key = *self.published.iter().find(|(_, p)| p.conn == conn && p.mid == mid)?.0;
        let rank = rid.map(|r| rid_rank(&r.to_string())).unwrap_or(0);
        let pb = self.published.get_mut(&key)?;
        let moved = match pb.layers.iter_mut().find(|l| l.rank == rank) {
            Some(l) => {
                // The same layer under a new SSRC (the browser restarted its encoder).
                l.ssrc = ssrc;
                false
            }
            None => {
                pb.layers.push(PubLayer {
                    rank,
                    ssrc,
                    bytes: 0,
                    packets: 0,
                    stat: (LayerStat::default(), 0, 0, now),
                    last_pli: None,
                    pli_pending: false,
                });
                pb.layers.sort_by_key(|l| l.rank);
                // Layers arrive in any order: indices held by subscribers are stale
                // unless the new one went last.
                pb.layers.last().is_some_and(|l| l.rank != rank)
            }
        };
        *pb.source.layers.write() = pb.layers.iter().map(|l| l.stat.0).collect();
        tracing::info!(source = %pb.source.id, rank, ssrc = *ssrc, "layer started");
        let source = pb.source.clone();
        self.by_ssrc.insert((conn, ssrc), (key, rank));
        self.relayer_everywhere(now, &source, moved);
        Some((key, rank))
    }

    fn relayer_everywhere(&mut self, now: Instant, source: &Arc<Source>, reset: bool) {
        let mask = source.shard_mask.load(Ordering::Acquire);
        for shard in (0..64).filter(|s| mask & (1 << s) != 0) {
            if shard == self.id {
                self.relayer(now, source.key, reset);
            } else {
                self.shards.send(shard, ShardCmd::Relayer { key: source.key, reset });
            }
        }
    }

    /// One published packet to this shard's subscribers whose forward takes it.
    fn forward(&mut self, now: Instant, p: &Packet) {
        let Some(subs) = self.subs.get_mut(&p.source.key) else { return };
        let k = kind_index(p.source.media);
        let size = p.payload.len() as u64 + 12;
        for sub in subs.iter_mut() {
            let (Some(mid), Some(pt)) = (sub.mid, sub.pt) else { continue };
            let Verdict::Send { seq, ts, switched } =
                sub.fwd.on_frame_packet(now, p.layer, p.seq, p.ts, p.keyframe, p.temporal)
            else {
                continue;
            };
            if switched {
                self.counters.switches += 1;
            }
            let seq_no: SeqNo = extend_seq(&mut sub.last_seq, seq).into();
            let Some(c) = self.conns.get_mut(sub.conn as usize).and_then(Option::as_mut) else { continue };
            let w = RtpWrite::new(pt, seq_no, ts, p.arrived, p.payload.clone()).marker(p.marker).nackable(true);
            let wrote = catch_unwind(AssertUnwindSafe(|| {
                let mut api = c.rtc.direct_api();
                match api.stream_tx_by_mid(mid, None) {
                    Some(tx) => {
                        tx.write_rtp(w);
                        true
                    }
                    None => false,
                }
            }));
            match wrote {
                Ok(true) => {
                    if !c.wrote {
                        c.wrote = true;
                        self.written.push(sub.conn);
                    }
                    self.counters.packets_out[k] += 1;
                    self.counters.bytes_out[k] += size;
                }
                Ok(false) => {}
                Err(_) => {
                    // Its member is closed by its session (told below), outside this loop.
                    c.wrote = false;
                    let peer = sub.peer;
                    tracing::error!(peer, "media engine failed writing to this member");
                    if let Some(mb) = self.members.get(&peer) {
                        let _ = mb.events.try_send(Internal::Crashed);
                    }
                }
            }
        }
    }

    /// Publishes the shard's counters.
    fn report(&mut self) {
        let c = std::mem::take(&mut self.counters);
        for (k, kind) in ["audio", "video"].into_iter().enumerate() {
            metrics::counter!(m::PACKETS_IN, "kind" => kind).increment(c.packets_in[k]);
            metrics::counter!(m::BYTES_IN, "kind" => kind).increment(c.bytes_in[k]);
            metrics::counter!(m::PACKETS_OUT, "kind" => kind).increment(c.packets_out[k]);
            metrics::counter!(m::BYTES_OUT, "kind" => kind).increment(c.bytes_out[k]);
        }
        metrics::counter!(m::PACKETS_DROPPED, "reason" => "not_granted").increment(c.not_granted);
        metrics::counter!(m::PLIS, "dir" => "sent").increment(c.plis_sent);
        metrics::counter!(m::PLIS, "dir" => "received").increment(c.plis_received);
        metrics::counter!(m::LAYER_SWITCHES).increment(c.switches);
        metrics::counter!(m::NACKS).increment(c.nacks);
        if let Some(i) = self.shards.inner.upgrade() {
            let d = i.dropped.swap(0, Ordering::Relaxed);
            metrics::counter!(m::PACKETS_DROPPED, "reason" => "overload").increment(d);
        }
    }
}

/// Refreshes each layer's bitrate and activity; returns whether a layer turned on or
/// off (subscribers then choose again).
fn measure(pb: &mut Published, now: Instant) -> bool {
    let mut changed = false;
    for l in &mut pb.layers {
        let (stat, bytes, packets, at) = l.stat;
        let dt = now.saturating_duration_since(at).as_secs_f64();
        if dt < 0.2 {
            continue;
        }
        let active = l.packets > packets;
        let bitrate = (((l.bytes - bytes) as f64 * 8.0) / dt) as u64;
        changed |= active != stat.active;
        // Smoothed: one keyframe burst must not look like a new bitrate.
        let br = if stat.bitrate == 0 { bitrate } else { (stat.bitrate * 7 + bitrate * 3) / 10 };
        l.stat = (LayerStat { active, bitrate: if active { br } else { 0 } }, l.bytes, l.packets, now);
    }
    *pb.source.layers.write() = pb.layers.iter().map(|l| l.stat.0).collect();
    changed
}

/// The engines' clock (tokio's: the runtime's timers use it).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic inside the engine ends the member it happened for: its session is told
    /// (`Crashed`, then close 1011), and the shard goes on serving the others.
    #[tokio::test]
    async fn a_panic_in_the_engine_ends_its_member_only() {
        let udp = "127.0.0.1:0".parse().expect("addr");
        let net = NetConfig { udp, public_ips: Vec::new(), threads: 1, estimate: true };
        let engine = Engine::start(&net).expect("engine");
        let (tx, _rx) = mpsc::channel(8);
        let (levels, _lrx) = mpsc::channel(8);
        let (closed, _crx) = mpsc::channel(8);
        let room = Arc::new(RoomRef { tx, levels, closed });
        let (e1, mut r1) = mpsc::channel(8);
        let (e2, mut r2) = mpsc::channel(8);
        engine.send(0, ShardCmd::Open { peer: 1, room: room.clone(), events: e1 });
        engine.send(0, ShardCmd::Open { peer: 2, room, events: e2 });
        engine.send(0, ShardCmd::Panic { peer: 1 });
        let told = tokio::time::timeout(Duration::from_secs(5), r1.recv()).await.expect("in time");
        assert!(matches!(told, Some(Internal::Crashed)), "{told:?}");
        let offer = |peer| engine.ask(0, move |reply| ShardCmd::Offer { peer, ice_restart: false, reply });
        let other = offer(2).await.expect("the shard still runs");
        assert!(matches!(other, Ok(None)), "the other member is served");
        let gone = offer(1).await.expect("the shard still runs");
        assert_eq!(gone.map_err(|e| e.code), Err(SignalCode::NoConnection), "the crashed member is gone");
        assert!(r2.try_recv().is_err(), "the other member was told nothing");
        // Bad input gets its stable code, and changes nothing.
        let sdp = "v=0\r\nnot an offer".to_owned();
        let bad = engine
            .ask(0, |reply| ShardCmd::Publish { peer: 2, sdp, labels: BTreeMap::new(), early: Vec::new(), reply })
            .await
            .expect("reply");
        assert_eq!(bad.map_err(|e| e.code), Err(SignalCode::BadSdp));
        let sdp = "v=0\r\n".to_owned();
        let early = engine.ask(0, |reply| ShardCmd::Answer { peer: 2, sdp, reply }).await.expect("reply");
        assert_eq!(early.map_err(|e| e.code), Err(SignalCode::BadSdp));
    }
}

//! The SFU node: HTTP (signaling WebSocket, probes, metrics, the classroom page), one
//! task per room owning its [`Room`] and sources, one task per peer owning its two
//! peer connections.
//!
//! The room task is the only writer of a room's state; peers talk to it through a
//! channel, and it talks back through each peer's channel. Media never goes through it:
//! packets flow from a source's reader tasks straight to the subscribers' tracks
//! ([`crate::media`]).

use crate::config::SfuConfig;
use crate::media::{AUDIO_LEVEL_URI, Engines, LevelSink, NetConfig, Source, extension_id};
use crate::metrics as m;
use crate::room::{Event, Media, PeerId, Role, Room, RoomConfig, RoomError};
use crate::signal::{self, Candidate, ClientCmd, Pc, ServerMsg, SignalError, SourceInfo};
use crate::speaker::{LevelReport, Speakers, last_n};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use preau_auth::Verifier;
use preau_bus::Bus;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::offer_answer_options::RTCOfferOptions;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use webrtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use webrtc::rtp_transceiver::rtp_codec::RTPCodecType;
use webrtc::rtp_transceiver::rtp_sender::RTCRtpSender;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;

/// The classroom page (also served by the gateway).
pub const CLASSROOM_HTML: &str = include_str!("../static/classroom.html");

/// WebSocket close codes (same meanings as the messaging gateway's).
pub mod close {
    /// Normal: left, or the class ended.
    pub const NORMAL: u16 = 1000;
    /// Bad or expired room token.
    pub const AUTH: u16 = 4001;
    /// Removed by the host, or refused.
    pub const REMOVED: u16 = 4003;
    /// Did not keep up with signaling.
    pub const SLOW: u16 = 4008;
    /// The room lives on another node, or this one is full.
    pub const ELSEWHERE: u16 = 4009;
}

/// Messages to a room task.
enum RoomMsg {
    Join {
        peer: PeerId,
        user: String,
        name: String,
        role: Role,
        tx: mpsc::Sender<PeerCmd>,
        reply: oneshot::Sender<Result<(), RoomError>>,
    },
    Control {
        peer: PeerId,
        cmd: ClientCmd,
        reply: oneshot::Sender<Result<(), SignalError>>,
    },
    MayPublish {
        peer: PeerId,
        media: Vec<Media>,
        reply: oneshot::Sender<Result<(), RoomError>>,
    },
    SourceAdded(Arc<Source>),
    Leave {
        peer: PeerId,
    },
}

/// Messages to a peer task.
enum PeerCmd {
    Text(Arc<str>),
    Subscribe {
        source: Arc<Source>,
        forwarded: bool,
    },
    Unsubscribe(String),
    /// Last-N turned a source's video on or off for this member.
    Forward(String, bool),
    Close {
        code: u16,
        reason: String,
    },
}

struct RoomRef {
    tx: mpsc::Sender<RoomMsg>,
    levels: LevelSink,
}

/// One SFU node.
pub struct Sfu {
    cfg: SfuConfig,
    engines: Engines,
    verifier: Verifier,
    rooms: Mutex<HashMap<String, Arc<RoomRef>>>,
    next_peer: AtomicU64,
    peers: AtomicU64,
    bus: Option<Arc<preau_bus::redis::RedisBus>>,
    ice_servers: Vec<serde_json::Value>,
    prom: Option<metrics_exporter_prometheus::PrometheusHandle>,
    draining: std::sync::atomic::AtomicBool,
}

fn json<T: serde::Serialize>(v: &T) -> Arc<str> {
    serde_json::to_string(v)
        .unwrap_or_else(|_| r#"{"type":"error","code":"internal","message":"encoding"}"#.into())
        .into()
}

impl Sfu {
    /// Binds the UDP port, loads the room key, joins the registry when `--redis` is set.
    pub async fn start(
        cfg: SfuConfig,
        public_url: String,
        prom: Option<metrics_exporter_prometheus::PrometheusHandle>,
    ) -> anyhow::Result<Arc<Sfu>> {
        let engines = Engines::new(&NetConfig { udp: cfg.udp, public_ips: cfg.public_ip.clone() }).await?;
        let verifier = match &cfg.room_public_key {
            Some(pem) => {
                let alg = preau_auth::parse_algorithm(&cfg.room_alg)?;
                Verifier::from_pem(alg, &std::fs::read(pem)?)?
            }
            None => {
                let key = std::fs::read(&cfg.room_key_file).map_err(|e| {
                    anyhow::anyhow!(
                        "room key {}: {e} (start the gateway first in development mode, or pass --room-public-key)",
                        cfg.room_key_file.display()
                    )
                })?;
                Verifier::hs256(&key)
            }
        };
        let bus = match &cfg.redis {
            Some(url) => Some(preau_bus::redis::RedisBus::connect(url, &cfg.node_id, "sfu", &public_url).await?),
            None => None,
        };
        let ice_servers = ice_servers(&cfg);
        Ok(Arc::new(Sfu {
            cfg,
            engines,
            verifier,
            rooms: Mutex::new(HashMap::new()),
            next_peer: AtomicU64::new(1),
            peers: AtomicU64::new(0),
            bus,
            ice_servers,
            prom,
            draining: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// The UDP address media uses.
    pub fn udp_addr(&self) -> std::net::SocketAddr {
        self.engines.udp_addr
    }

    fn set_load(&self) {
        let peers = self.peers.load(Ordering::Relaxed);
        metrics::gauge!(m::PEERS).set(peers as f64);
        if let Some(b) = &self.bus {
            // A draining node looks full, so placement sends new classes elsewhere.
            b.set_load(if self.draining.load(Ordering::Relaxed) { u64::MAX / 2 } else { peers });
        }
    }

    /// Peers connected now.
    pub fn peer_count(&self) -> u64 {
        self.peers.load(Ordering::Relaxed)
    }

    /// Stops taking new rooms (SIGTERM): readiness fails, placement avoids this node;
    /// running classes go on until they end or the drain time runs out.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.set_load();
    }

    /// The room task for `key`, started on first use. `None` when the registry places the
    /// room on another node.
    async fn room(self: &Arc<Self>, key: &str) -> Result<Arc<RoomRef>, SignalError> {
        if let Some(r) = self.rooms.lock().get(key).filter(|r| !r.tx.is_closed()) {
            return Ok(r.clone());
        }
        if self.draining.load(Ordering::Relaxed) {
            return Err(SignalError::new("elsewhere", "this node is restarting: ask the gateway again"));
        }
        if let Some(bus) = &self.bus {
            match bus.hold_room(key).await {
                Ok(true) => {}
                Ok(false) => {
                    return Err(SignalError::new(
                        "elsewhere",
                        "this class is live on another node: ask the gateway again",
                    ));
                }
                Err(e) => {
                    return Err(SignalError::new("unavailable", format!("the room registry is unreachable: {e}")));
                }
            }
        }
        let mut rooms = self.rooms.lock();
        if let Some(r) = rooms.get(key).filter(|r| !r.tx.is_closed()) {
            return Ok(r.clone());
        }
        let (tx, rx) = mpsc::channel(1024);
        let (ltx, lrx) = mpsc::channel(1024);
        let r = Arc::new(RoomRef { tx, levels: ltx });
        rooms.insert(key.to_owned(), r.clone());
        let capacity = if key.contains("/assembly:") { self.cfg.assembly_capacity } else { self.cfg.class_capacity };
        let rc = RoomConfig { capacity, host_grace: Duration::from_secs(self.cfg.host_grace), waiting_room: true };
        metrics::gauge!(m::ROOMS).increment(1.0);
        tokio::spawn(room_task(self.clone(), key.to_owned(), rc, rx, lrx));
        Ok(r)
    }
}

/// ICE servers for browsers; TURN credentials follow coturn's REST scheme
/// (`use-auth-secret`): user `<expiry>:preau`, password base64(HMAC-SHA1(secret, user)).
fn ice_servers(cfg: &SfuConfig) -> Vec<serde_json::Value> {
    use base64::Engine as _;
    use hmac::Mac as _;
    cfg.ice_servers
        .iter()
        .map(|url| {
            if url.starts_with("turn")
                && let Some(secret) = &cfg.turn_secret
            {
                {
                    let expiry = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0)
                        + 12 * 3600;
                    let user = format!("{expiry}:preau");
                    let cred = hmac::Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes())
                        .map(|mut mac| {
                            mac.update(user.as_bytes());
                            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
                        })
                        .unwrap_or_default();
                    return serde_json::json!({"urls": url, "username": user, "credential": cred});
                }
            }
            serde_json::json!({"urls": url})
        })
        .collect()
}

// ---------------------------------------------------------------- room task

struct PeerLink {
    tx: mpsc::Sender<PeerCmd>,
    role: Role,
    admitted: bool,
    /// Source id to forwarded (last-N), as last told to the peer.
    sources: BTreeMap<String, bool>,
}

struct RoomTask {
    sfu: Arc<Sfu>,
    key: String,
    room: Room,
    peers: HashMap<PeerId, PeerLink>,
    sources: Vec<Arc<Source>>,
    speakers: Speakers,
    /// Who spoke last, as of the last last-N layout.
    laid_out_for: Vec<PeerId>,
}

impl RoomTask {
    fn send(&mut self, peer: PeerId, cmd: PeerCmd) {
        let Some(p) = self.peers.get(&peer) else { return };
        if let Err(mpsc::error::TrySendError::Full(_)) = p.tx.try_send(cmd) {
            // A peer that does not read its signaling is dropped, not waited for.
            tracing::warn!(peer, "peer too slow on signaling: dropped");
            let _ = p.tx.try_send(PeerCmd::Close { code: close::SLOW, reason: "too slow".into() });
            self.peers.remove(&peer);
            let _ = self.room.handle_leave(Instant::now(), peer);
        }
    }

    fn broadcast_admitted(&mut self, text: Arc<str>) {
        let ids: Vec<PeerId> = self.peers.iter().filter(|(_, p)| p.admitted).map(|(id, _)| *id).collect();
        for id in ids {
            self.send(id, PeerCmd::Text(text.clone()));
        }
    }

    /// Sends the room's outputs and applies what they mean for media.
    async fn flush(&mut self) {
        while let Some(out) = self.room.poll_output() {
            match &out.event {
                Event::Admitted { .. } => {
                    if let Some(to) = out.to
                        && let Some(p) = self.peers.get_mut(&to)
                    {
                        p.admitted = true;
                    }
                }
                Event::Grants { peer, grants } => {
                    for s in self.sources.iter().filter(|s| s.peer == *peer) {
                        let on = match s.media {
                            Media::Audio => grants.audio,
                            Media::Video => grants.video,
                            Media::Screen => grants.screen,
                        };
                        s.allowed.store(on, Ordering::Release);
                        if !on && s.media == Media::Audio {
                            self.speakers.forget(*peer);
                        }
                    }
                }
                Event::Left { peer } => self.drop_peer_media(*peer),
                _ => {}
            }
            let text = json(&out.event);
            match out.to {
                Some(to) => self.send(to, PeerCmd::Text(text)),
                None => self.broadcast_admitted(text),
            }
            if let (Event::Admitted { .. }, Some(to)) = (&out.event, out.to) {
                // Everything already published reaches the newcomer.
                for s in self.sources.clone() {
                    if s.peer != to {
                        self.subscribe(to, &s);
                    }
                }
                self.relayout().await;
            }
            if let (Event::Refused { .. }, Some(to)) = (&out.event, out.to) {
                self.drop_peer_media(to);
                self.send(to, PeerCmd::Close { code: close::REMOVED, reason: "refused".into() });
                self.peers.remove(&to);
            }
        }
    }

    fn subscribe(&mut self, peer: PeerId, s: &Arc<Source>) {
        let forwarded = s.media != Media::Video || self.video_chosen().contains(&s.peer);
        if let Some(p) = self.peers.get_mut(&peer) {
            p.sources.insert(s.id.clone(), forwarded);
        }
        self.send(peer, PeerCmd::Subscribe { source: s.clone(), forwarded });
        self.tell_sources(peer);
    }

    fn tell_sources(&mut self, peer: PeerId) {
        let Some(p) = self.peers.get(&peer) else { return };
        let sources = p
            .sources
            .iter()
            .filter_map(|(id, fwd)| {
                let s = self.sources.iter().find(|s| &s.id == id)?;
                Some((id.clone(), SourceInfo { peer: s.peer, media: s.media, forwarded: *fwd }))
            })
            .collect();
        self.send(peer, PeerCmd::Text(json(&ServerMsg::Sources { sources })));
    }

    /// Whose video is forwarded (last-N).
    fn video_chosen(&self) -> Vec<PeerId> {
        let publishers: Vec<PeerId> =
            self.sources.iter().filter(|s| s.media == Media::Video && !s.is_closed()).map(|s| s.peer).collect();
        let hosts: Vec<PeerId> = self.peers.iter().filter(|(_, p)| p.role == Role::Host).map(|(id, _)| *id).collect();
        last_n(&publishers, &hosts, &self.speakers.recent(), self.sfu.cfg.last_n)
    }

    /// Applies last-N to every subscriber's video.
    async fn relayout(&mut self) {
        let chosen = self.video_chosen();
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for peer in ids {
            let mut changed = Vec::new();
            if let Some(p) = self.peers.get_mut(&peer) {
                for s in self.sources.iter().filter(|s| s.media == Media::Video) {
                    let on = chosen.contains(&s.peer);
                    if let Some(f) = p.sources.get_mut(&s.id)
                        && *f != on
                    {
                        *f = on;
                        changed.push((s.clone(), on));
                    }
                }
            }
            if !changed.is_empty() {
                for (s, on) in changed {
                    self.send(peer, PeerCmd::Forward(s.id.clone(), on));
                }
                self.tell_sources(peer);
            }
        }
    }

    fn remove_source(&mut self, id: &str) {
        let Some(i) = self.sources.iter().position(|s| s.id == id) else { return };
        let s = self.sources.remove(i);
        s.close();
        metrics::gauge!(m::TRACKS).decrement(1.0);
        for peer in s.subscribers() {
            s.unsubscribe(peer);
        }
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for peer in ids {
            let had = self.peers.get_mut(&peer).is_some_and(|p| p.sources.remove(id).is_some());
            if had {
                self.send(peer, PeerCmd::Unsubscribe(id.to_owned()));
                self.tell_sources(peer);
            }
        }
    }

    fn drop_peer_media(&mut self, peer: PeerId) {
        let own: Vec<String> = self.sources.iter().filter(|s| s.peer == peer).map(|s| s.id.clone()).collect();
        for id in own {
            self.remove_source(&id);
        }
        for s in &self.sources {
            s.unsubscribe(peer);
        }
        self.speakers.forget(peer);
    }

    async fn add_source(&mut self, s: Arc<Source>) {
        if !self.peers.get(&s.peer).is_some_and(|p| p.admitted) {
            s.close();
            return;
        }
        self.remove_source(&s.id);
        let allowed = self.room.may_publish(s.peer, s.media).is_ok();
        s.allowed.store(allowed, Ordering::Release);
        metrics::gauge!(m::TRACKS).increment(1.0);
        tracing::info!(room = %self.key, source = %s.id, allowed, "source published");
        self.sources.push(s.clone());
        let ids: Vec<PeerId> =
            self.peers.iter().filter(|(id, p)| p.admitted && **id != s.peer).map(|(id, _)| *id).collect();
        for id in ids {
            self.subscribe(id, &s);
        }
        self.relayout().await;
    }

    async fn control(&mut self, peer: PeerId, cmd: ClientCmd) -> Result<(), SignalError> {
        let now = Instant::now();
        let e = |r: Result<(), RoomError>| r.map_err(|e| SignalError::new(e.code(), e.to_string()));
        match cmd {
            ClientCmd::Admit { peer: p } => e(self.room.handle_admit(now, peer, p)),
            ClientCmd::Deny { peer: p } => e(self.room.handle_deny(now, peer, p)),
            ClientCmd::RaiseHand => e(self.room.handle_raise_hand(now, peer)),
            ClientCmd::LowerHand { peer: p } => e(self.room.handle_lower_hand(now, peer, p.unwrap_or(peer))),
            ClientCmd::Grant { peer: p, media, allow } => e(self.room.handle_grant(now, peer, p, media, allow)),
            ClientCmd::MuteAll => e(self.room.handle_mute_all(now, peer)),
            ClientCmd::Remove { peer: p } => e(self.room.handle_remove(now, peer, p)),
            ClientCmd::Lock { locked } => e(self.room.handle_lock(now, peer, locked)),
            ClientCmd::End => e(self.room.handle_end(now, peer)),
            ClientCmd::Quality { source, quality } => {
                let s = self.sources.iter().find(|s| s.id == source).cloned();
                match s {
                    Some(s) if s.subscribers().contains(&peer) => {
                        s.set_quality(peer, quality).await;
                        Ok(())
                    }
                    _ => Err(SignalError::new("unknown_source", format!("you receive no source `{source}`"))),
                }
            }
            _ => Err(SignalError::new("bad_request", "not a room command")),
        }
    }

    async fn speakers_tick(&mut self, now: Instant) {
        if let Some((active, dominant)) = self.speakers.poll_change(now) {
            self.broadcast_admitted(json(&ServerMsg::Speakers { active, dominant }));
        }
        let recent = self.speakers.recent();
        if recent != self.laid_out_for {
            self.laid_out_for = recent;
            self.relayout().await;
        }
    }
}

async fn room_task(
    sfu: Arc<Sfu>,
    key: String,
    cfg: RoomConfig,
    mut rx: mpsc::Receiver<RoomMsg>,
    mut levels: mpsc::Receiver<(PeerId, LevelReport)>,
) {
    let mut t = RoomTask {
        sfu: sfu.clone(),
        key: key.clone(),
        room: Room::new(cfg, Instant::now()),
        peers: HashMap::new(),
        sources: Vec::new(),
        speakers: Speakers::default(),
        laid_out_for: Vec::new(),
    };
    tracing::info!(room = %key, "room opened");
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last_hold = Instant::now();
    loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                match msg {
                    RoomMsg::Join { peer, user, name, role, tx, reply } => {
                        t.peers.insert(peer, PeerLink { tx, role, admitted: false, sources: BTreeMap::new() });
                        let r = t.room.handle_join(Instant::now(), peer, &user, &name, role);
                        if r.is_err() {
                            t.peers.remove(&peer);
                        }
                        let _ = reply.send(r);
                    }
                    RoomMsg::Control { peer, cmd, reply } => {
                        let r = t.control(peer, cmd).await;
                        let _ = reply.send(r);
                    }
                    RoomMsg::MayPublish { peer, media, reply } => {
                        let r = media.iter().try_for_each(|m| t.room.may_publish(peer, *m));
                        let _ = reply.send(r);
                    }
                    RoomMsg::SourceAdded(s) => t.add_source(s).await,
                    RoomMsg::Leave { peer } => {
                        t.peers.remove(&peer);
                        let _ = t.room.handle_leave(Instant::now(), peer);
                        t.drop_peer_media(peer);
                    }
                }
            }
            Some((peer, r)) = levels.recv() => {
                t.speakers.observe(Instant::now(), peer, r);
            }
            _ = tick.tick() => {
                let now = Instant::now();
                t.room.handle_timeout(now);
                let closed: Vec<String> = t.sources.iter().filter(|s| s.is_closed()).map(|s| s.id.clone()).collect();
                for id in closed {
                    t.remove_source(&id);
                }
                t.speakers_tick(now).await;
                if now.duration_since(last_hold) > Duration::from_secs(20) {
                    last_hold = now;
                    if let Some(b) = &sfu.bus {
                        let _ = b.hold_room(&key).await;
                    }
                }
            }
        }
        t.flush().await;
        if t.room.is_ended().is_some() {
            let ids: Vec<PeerId> = t.peers.keys().copied().collect();
            for id in ids {
                t.send(id, PeerCmd::Close { code: close::NORMAL, reason: "the class has ended".into() });
            }
            break;
        }
    }
    for s in &t.sources {
        s.close();
    }
    metrics::gauge!(m::TRACKS).decrement(t.sources.len() as f64);
    sfu.rooms.lock().remove(&key);
    if let Some(b) = &sfu.bus {
        b.release_room(&key).await;
    }
    metrics::gauge!(m::ROOMS).decrement(1.0);
    tracing::info!(room = %key, "room closed");
}

// ---------------------------------------------------------------- peer task

enum Internal {
    Candidate(Pc, Candidate),
    Connected(Pc),
    Failed(Pc),
}

struct PeerTask {
    sfu: Arc<Sfu>,
    peer: PeerId,
    room: Arc<RoomRef>,
    out: mpsc::Sender<Message>,
    internal: mpsc::Sender<Internal>,
    publish: Option<Arc<RTCPeerConnection>>,
    subscribe: Option<Arc<RTCPeerConnection>>,
    senders: HashMap<String, Arc<RTCRtpSender>>,
    /// What this member receives, and whether the room forwards it (last-N).
    receiving: HashMap<String, (Arc<Source>, bool)>,
    /// Whether `sub` is connected: forwarding starts then, on a fresh keyframe (one sent
    /// before the connection is up would be lost, and the picture with it).
    sub_connected: bool,
    labels: Arc<Mutex<HashMap<String, Media>>>,
    by_track: Arc<Mutex<HashMap<String, Arc<Source>>>>,
    estimate: Arc<AtomicU64>,
    offering: bool,
    dirty: bool,
    restart: bool,
    /// Candidates that came before the `publish` offer they belong to (a browser starts
    /// trickling as soon as it sets its local description).
    early: Vec<webrtc::ice_transport::ice_candidate::RTCIceCandidateInit>,
}

impl PeerTask {
    async fn text(&self, msg: &ServerMsg) {
        let _ = self.out.send(Message::Text(json(msg).as_ref().into())).await;
    }

    async fn ask<T>(&self, f: impl FnOnce(oneshot::Sender<T>) -> RoomMsg) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.room.tx.send(f(tx)).await.ok()?;
        rx.await.ok()
    }

    fn watch(&self, pc: &Arc<RTCPeerConnection>, which: Pc) {
        let internal = self.internal.clone();
        pc.on_ice_candidate(Box::new(move |c| {
            let internal = internal.clone();
            Box::pin(async move {
                if let Some(c) = c
                    && let Ok(j) = c.to_json()
                {
                    let _ = internal.send(Internal::Candidate(which, j.into())).await;
                }
            })
        }));
        let internal = self.internal.clone();
        let peer = self.peer;
        pc.on_peer_connection_state_change(Box::new(move |s| {
            let internal = internal.clone();
            tracing::debug!(peer, pc = ?which, state = %s, "peer connection state");
            Box::pin(async move {
                match s {
                    RTCPeerConnectionState::Failed => {
                        let _ = internal.send(Internal::Failed(which)).await;
                    }
                    RTCPeerConnectionState::Connected => {
                        let _ = internal.send(Internal::Connected(which)).await;
                    }
                    _ => {}
                }
            })
        }));
    }

    async fn publish(&mut self, sdp: String, tracks: BTreeMap<String, Media>) -> Result<(), SignalError> {
        let offer = RTCSessionDescription::offer(sdp).map_err(|e| SignalError::new("bad_sdp", e.to_string()))?;
        // The grants checked are those of the tracks this offer adds (named in `tracks`);
        // an offer naming none is judged by what its SDP sends. A track whose grant is
        // withdrawn later is dropped packet by packet, whatever the browser does.
        let mut kinds: Vec<Media> = tracks.values().copied().collect();
        let parsed = offer.unmarshal().map_err(|e| SignalError::new("bad_sdp", format!("unreadable offer: {e}")))?;
        if tracks.is_empty() {
            for md in &parsed.media_descriptions {
                let sends = md.attribute("sendonly").is_some() || md.attribute("sendrecv").is_some();
                match md.media_name.media.as_str() {
                    "audio" if sends => kinds.push(Media::Audio),
                    "video" if sends => kinds.push(Media::Video),
                    _ => {}
                }
            }
        }
        kinds.sort_by_key(|m| *m as u8);
        kinds.dedup();
        match self.ask(|reply| RoomMsg::MayPublish { peer: self.peer, media: kinds.clone(), reply }).await {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(SignalError::new(e.code(), e.to_string())),
            None => return Err(SignalError::new("room_ended", "the class has ended")),
        }
        self.labels.lock().extend(tracks);
        let pc = match &self.publish {
            Some(pc) => pc.clone(),
            None => {
                let pc = Arc::new(
                    self.sfu
                        .engines
                        .publish
                        .new_peer_connection(RTCConfiguration::default())
                        .await
                        .map_err(|e| SignalError::new("internal", e.to_string()))?,
                );
                self.watch(&pc, Pc::Pub);
                let labels = self.labels.clone();
                let by_track = self.by_track.clone();
                let room = self.room.clone();
                let peer = self.peer;
                let weak = Arc::downgrade(&pc);
                pc.on_track(Box::new(move |track, receiver, _| {
                    let labels = labels.clone();
                    let by_track = by_track.clone();
                    let room = room.clone();
                    let weak = weak.clone();
                    Box::pin(async move {
                        let Some(pc) = weak.upgrade() else { return };
                        let media = labels.lock().get(&track.id()).copied().unwrap_or(match track.kind() {
                            RTPCodecType::Audio => Media::Audio,
                            _ => Media::Video,
                        });
                        let (source, new) = {
                            let mut by = by_track.lock();
                            match by.get(&track.id()).filter(|s| !s.is_closed()) {
                                Some(s) => (s.clone(), false),
                                None => {
                                    let s = Source::new(peer, media, track.codec().capability, &pc, false);
                                    by.insert(track.id(), s.clone());
                                    (s, true)
                                }
                            }
                        };
                        if new {
                            let _ = room.tx.send(RoomMsg::SourceAdded(source.clone())).await;
                        }
                        let levels = if media == Media::Audio {
                            let params = receiver.get_parameters().await;
                            extension_id(&params, AUDIO_LEVEL_URI).map(|id| (id, room.levels.clone()))
                        } else {
                            None
                        };
                        tokio::spawn(source.read_layer(track, levels));
                    })
                }));
                self.publish = Some(pc.clone());
                pc
            }
        };
        pc.set_remote_description(offer).await.map_err(|e| SignalError::new("bad_sdp", e.to_string()))?;
        for c in std::mem::take(&mut self.early) {
            let _ = pc.add_ice_candidate(c).await;
        }
        let answer = pc.create_answer(None).await.map_err(|e| SignalError::new("bad_sdp", e.to_string()))?;
        pc.set_local_description(answer).await.map_err(|e| SignalError::new("internal", e.to_string()))?;
        let sdp = pc.local_description().await.map(|d| d.sdp).unwrap_or_default();
        self.text(&ServerMsg::Answer { sdp }).await;
        Ok(())
    }

    async fn sub_pc(&mut self) -> anyhow::Result<Arc<RTCPeerConnection>> {
        if let Some(pc) = &self.subscribe {
            return Ok(pc.clone());
        }
        let pc = Arc::new(self.sfu.engines.subscribe.new_peer_connection(RTCConfiguration::default()).await?);
        self.watch(&pc, Pc::Sub);
        self.subscribe = Some(pc.clone());
        Ok(pc)
    }

    async fn add_subscription(&mut self, source: Arc<Source>, forwarded: bool) -> anyhow::Result<()> {
        let pc = self.sub_pc().await?;
        let track =
            Arc::new(TrackLocalStaticRTP::new(source.codec.clone(), source.id.clone(), format!("p{}", source.peer)));
        let sender = pc.add_track(track.clone()).await?;
        // RTCP from the subscriber: keyframe requests, NACKs (answered by the
        // interceptor from its buffer), bandwidth estimates.
        let (s2, src, est, peer) = (sender.clone(), source.clone(), self.estimate.clone(), self.peer);
        tokio::spawn(async move {
            while let Ok((pkts, _)) = s2.read_rtcp().await {
                for p in pkts {
                    let any = p.as_any();
                    if any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>() {
                        metrics::counter!(m::PLIS, "dir" => "received").increment(1);
                        src.keyframe_for(peer).await;
                    } else if let Some(n) = any.downcast_ref::<TransportLayerNack>() {
                        metrics::counter!(m::NACKS).increment(n.nacks.len() as u64);
                    } else if let Some(r) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
                        est.store(r.bitrate as u64, Ordering::Relaxed);
                        src.retarget_peer(peer).await;
                    }
                }
            }
        });
        source.subscribe(self.peer, track, !(forwarded && self.sub_connected), self.estimate.clone()).await;
        self.receiving.insert(source.id.clone(), (source.clone(), forwarded));
        self.senders.insert(source.id.clone(), sender);
        self.dirty = true;
        Ok(())
    }

    /// `sub` connected: start what the room forwards, each on a keyframe.
    async fn sub_up(&mut self) {
        if self.sub_connected {
            return;
        }
        self.sub_connected = true;
        for (source, forwarded) in self.receiving.values() {
            if *forwarded {
                source.set_forwarded(self.peer, true).await;
            }
        }
    }

    async fn remove_subscription(&mut self, id: &str) {
        self.receiving.remove(id);
        if let (Some(sender), Some(pc)) = (self.senders.remove(id), &self.subscribe) {
            let _ = pc.remove_track(&sender).await;
            self.dirty = true;
        }
    }

    /// Offers on `sub` when something changed and no offer is pending.
    async fn negotiate(&mut self) -> anyhow::Result<()> {
        if self.offering || !(self.dirty || self.restart) {
            return Ok(());
        }
        let Some(pc) = self.subscribe.clone() else { return Ok(()) };
        let opts = RTCOfferOptions { ice_restart: self.restart, ..Default::default() };
        self.dirty = false;
        self.restart = false;
        let offer = pc.create_offer(Some(opts)).await?;
        pc.set_local_description(offer).await?;
        let sdp = pc.local_description().await.map(|d| d.sdp).unwrap_or_default();
        self.offering = true;
        self.text(&ServerMsg::Offer { sdp }).await;
        Ok(())
    }

    async fn on_client(&mut self, cmd: ClientCmd) -> Result<(), SignalError> {
        match cmd {
            ClientCmd::Join { .. } => Err(SignalError::new("already_joined", "already in this room")),
            ClientCmd::Publish { sdp, tracks } => self.publish(sdp, tracks).await,
            ClientCmd::Answer { sdp } => {
                let pc = self.subscribe.clone().ok_or_else(|| SignalError::new("no_offer", "no offer to answer"))?;
                if !self.offering {
                    return Err(SignalError::new("no_offer", "no offer to answer"));
                }
                let d = RTCSessionDescription::answer(sdp).map_err(|e| SignalError::new("bad_sdp", e.to_string()))?;
                pc.set_remote_description(d).await.map_err(|e| SignalError::new("bad_sdp", e.to_string()))?;
                self.offering = false;
                Ok(())
            }
            ClientCmd::Candidate { pc, candidate } => {
                let init = webrtc::ice_transport::ice_candidate::RTCIceCandidateInit::from(candidate);
                let target = match pc {
                    Pc::Pub => self.publish.clone(),
                    Pc::Sub => self.subscribe.clone(),
                };
                match target {
                    Some(t) if t.remote_description().await.is_some() => {
                        t.add_ice_candidate(init).await.map_err(|e| SignalError::new("bad_candidate", e.to_string()))
                    }
                    _ if pc == Pc::Pub && self.early.len() < 64 => {
                        self.early.push(init);
                        Ok(())
                    }
                    _ => Err(SignalError::new("no_connection", "that connection is not negotiated yet")),
                }
            }
            ClientCmd::RestartIce => {
                self.restart = true;
                Ok(())
            }
            ClientCmd::Leave => Err(SignalError::new("leaving", "bye")),
            cmd => match self.ask(|reply| RoomMsg::Control { peer: self.peer, cmd, reply }).await {
                Some(r) => r,
                None => Err(SignalError::new("room_ended", "the class has ended")),
            },
        }
    }

    async fn close_all(&mut self) {
        if let Some(pc) = self.publish.take() {
            let _ = pc.close().await;
        }
        if let Some(pc) = self.subscribe.take() {
            let _ = pc.close().await;
        }
        for s in self.by_track.lock().values() {
            s.close();
        }
    }
}

impl Source {
    /// A subscriber asked for a keyframe: ask the publisher for one of the layer that
    /// subscriber receives.
    pub async fn keyframe_for(self: &Arc<Self>, peer: PeerId) {
        if let Some(l) = self.current_layer(peer) {
            self.request_keyframe(l).await;
        }
    }
}

async fn close_ws(out: &mpsc::Sender<Message>, code: u16, reason: &str) {
    let _ = out.send(Message::Close(Some(CloseFrame { code, reason: reason.to_owned().into() }))).await;
}

async fn peer_session(sfu: Arc<Sfu>, ws: WebSocket, token: Option<String>) {
    let (mut sink, mut stream) = ws.split();
    let (out, mut out_rx) = mpsc::channel::<Message>(256);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            let is_close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || is_close {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let err = |id: Option<u64>, e: SignalError| {
        metrics::counter!(m::ERRORS, "code" => e.code).increment(1);
        Message::Text(json(&ServerMsg::Error { id, code: e.code.into(), message: e.message }).as_ref().into())
    };

    // The first message (or the query) carries the room token.
    let (token, join_id) = match token {
        Some(t) => (t, None),
        None => {
            let first = tokio::time::timeout(Duration::from_secs(10), stream.next()).await;
            let text = match first {
                Ok(Some(Ok(Message::Text(t)))) => t,
                _ => {
                    close_ws(&out, close::AUTH, "join first").await;
                    let _ = writer.await;
                    return;
                }
            };
            match signal::decode(&text) {
                Ok(signal::ClientMsg { id, cmd: ClientCmd::Join { token } }) => (token, id),
                Ok(msg) => {
                    let _ = out.send(err(msg.id, SignalError::new("not_joined", "send `join` first"))).await;
                    close_ws(&out, close::AUTH, "join first").await;
                    let _ = writer.await;
                    return;
                }
                Err((id, e)) => {
                    let _ = out.send(err(id, e)).await;
                    close_ws(&out, close::AUTH, "join first").await;
                    let _ = writer.await;
                    return;
                }
            }
        }
    };
    let claims = match sfu.verifier.verify_room(&token) {
        Ok(c) => c,
        Err(e) => {
            let _ = out.send(err(join_id, SignalError::new("unauthorized", e.to_string()))).await;
            close_ws(&out, close::AUTH, "bad room token").await;
            let _ = writer.await;
            return;
        }
    };
    let role = match claims.role.as_str() {
        "host" => Role::Host,
        "participant" => Role::Participant,
        "observer" => Role::Observer,
        _ => {
            let _ = out.send(err(join_id, SignalError::new("unauthorized", "unknown role in the room token"))).await;
            close_ws(&out, close::AUTH, "bad room token").await;
            let _ = writer.await;
            return;
        }
    };
    if sfu.peers.load(Ordering::Relaxed) >= sfu.cfg.max_peers {
        let _ = out.send(err(join_id, SignalError::new("node_full", "this live-class node is full"))).await;
        close_ws(&out, close::ELSEWHERE, "node full").await;
        let _ = writer.await;
        return;
    }
    let key = format!("{}/{}", claims.school, claims.room);
    let room = match sfu.room(&key).await {
        Ok(r) => r,
        Err(e) => {
            let _ = out.send(err(join_id, e)).await;
            close_ws(&out, close::ELSEWHERE, "elsewhere").await;
            let _ = writer.await;
            return;
        }
    };
    let peer = sfu.next_peer.fetch_add(1, Ordering::Relaxed);
    let (ptx, mut prx) = mpsc::channel::<PeerCmd>(1024);
    let (rtx, rrx) = oneshot::channel();
    let join = RoomMsg::Join { peer, user: claims.sub.clone(), name: claims.name.clone(), role, tx: ptx, reply: rtx };
    let joined = match room.tx.send(join).await {
        Ok(()) => rrx.await.unwrap_or(Err(RoomError::Ended)),
        Err(_) => Err(RoomError::Ended),
    };
    // Welcome goes before any room event: room events wait in `prx` until the loop.
    if let Err(e) = joined {
        let _ = out.send(err(join_id, SignalError::new(e.code(), e.to_string()))).await;
        close_ws(&out, close::REMOVED, e.code()).await;
        let _ = writer.await;
        return;
    }
    sfu.peers.fetch_add(1, Ordering::Relaxed);
    sfu.set_load();
    tracing::info!(room = %key, peer, role = ?role, "joined");
    let (itx, mut irx) = mpsc::channel::<Internal>(256);
    let mut p = PeerTask {
        sfu: sfu.clone(),
        peer,
        room: room.clone(),
        out: out.clone(),
        internal: itx,
        publish: None,
        subscribe: None,
        senders: HashMap::new(),
        receiving: HashMap::new(),
        sub_connected: false,
        labels: Arc::new(Mutex::new(HashMap::new())),
        by_track: Arc::new(Mutex::new(HashMap::new())),
        estimate: Arc::new(AtomicU64::new(0)),
        offering: false,
        dirty: false,
        restart: false,
        early: Vec::new(),
    };
    p.text(&ServerMsg::Welcome { peer, role, ice_servers: sfu.ice_servers.clone() }).await;
    if let Some(id) = join_id {
        p.text(&ServerMsg::Ack { id }).await;
    }
    let (code, reason) = loop {
        tokio::select! {
            biased;
            cmd = prx.recv() => match cmd {
                Some(PeerCmd::Text(t)) => { let _ = out.send(Message::Text(t.as_ref().into())).await; }
                Some(PeerCmd::Subscribe { source, forwarded }) => {
                    if let Err(e) = p.add_subscription(source, forwarded).await {
                        tracing::warn!(peer, error = %e, "subscription failed");
                    }
                }
                Some(PeerCmd::Unsubscribe(id)) => p.remove_subscription(&id).await,
                Some(PeerCmd::Forward(id, on)) => {
                    if let Some((source, fwd)) = p.receiving.get_mut(&id) {
                        *fwd = on;
                        if p.sub_connected {
                            source.set_forwarded(p.peer, on).await;
                        }
                    }
                }
                Some(PeerCmd::Close { code, reason }) => break (code, reason),
                None => break (close::SLOW, "dropped by the room".into()),
            },
            i = irx.recv() => match i {
                Some(Internal::Candidate(pc, candidate)) => p.text(&ServerMsg::Candidate { pc, candidate }).await,
                Some(Internal::Connected(Pc::Sub)) => p.sub_up().await,
                Some(Internal::Connected(Pc::Pub)) => {}
                Some(Internal::Failed(pc)) => {
                    tracing::info!(peer, ?pc, "peer connection failed");
                    p.text(&ServerMsg::Error { id: None, code: "connection_failed".into(), message: format!("the {pc:?} connection failed: restart ICE") }).await;
                }
                None => {}
            },
            msg = stream.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Binary(_))) => {
                        let _ = out.send(err(None, SignalError::new("bad_frame", "signaling is JSON text"))).await;
                        continue;
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break (close::NORMAL, String::new()),
                    Some(Ok(_)) => continue,
                };
                match signal::decode(&text) {
                    Ok(msg) => {
                        if matches!(msg.cmd, ClientCmd::Leave) {
                            if let Some(id) = msg.id { p.text(&ServerMsg::Ack { id }).await; }
                            break (close::NORMAL, "left".into());
                        }
                        match p.on_client(msg.cmd).await {
                            Ok(()) => if let Some(id) = msg.id { p.text(&ServerMsg::Ack { id }).await; },
                            Err(e) => { let _ = out.send(err(msg.id, e)).await; }
                        }
                    }
                    Err((id, e)) => { let _ = out.send(err(id, e)).await; }
                }
            }
        }
        if let Err(e) = p.negotiate().await {
            tracing::warn!(peer, error = %e, "renegotiation failed");
        }
    };
    let _ = room.tx.send(RoomMsg::Leave { peer }).await;
    p.close_all().await;
    if !reason.is_empty() {
        close_ws(&out, code, &reason).await;
    }
    drop(out);
    drop(p);
    let _ = writer.await;
    sfu.peers.fetch_sub(1, Ordering::Relaxed);
    sfu.set_load();
    tracing::info!(room = %key, peer, "left");
}

// ---------------------------------------------------------------- HTTP

#[derive(serde::Deserialize)]
struct WsQuery {
    token: Option<String>,
}

async fn ws(State(sfu): State<Arc<Sfu>>, Query(q): Query<WsQuery>, up: WebSocketUpgrade) -> Response {
    up.max_message_size(signal::MAX_MESSAGE).on_upgrade(move |ws| peer_session(sfu, ws, q.token))
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(sfu): State<Arc<Sfu>>) -> Response {
    let registry_ok = sfu.bus.as_ref().is_none_or(|b| b.healthy());
    let draining = sfu.draining.load(Ordering::Relaxed);
    if registry_ok && !draining && sfu.peers.load(Ordering::Relaxed) < sfu.cfg.max_peers {
        axum::Json(serde_json::json!({"ready": true})).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({"ready": false, "draining": draining})))
            .into_response()
    }
}

async fn metrics_page(State(sfu): State<Arc<Sfu>>) -> Response {
    match &sfu.prom {
        Some(h) => h.render().into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are off").into_response(),
    }
}

async fn classroom() -> Html<&'static str> {
    Html(CLASSROOM_HTML)
}

/// The node's HTTP routes.
pub fn router(sfu: Arc<Sfu>) -> axum::Router {
    axum::Router::new()
        .route("/ws", get(ws))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_page))
        .route("/classroom", get(classroom))
        .route("/", get(|| async { Redirect::temporary("/classroom") }))
        .with_state(sfu)
}

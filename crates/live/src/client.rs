//! A Rust live-class client on webrtc-rs: joins with a room token, publishes generated
//! VP8 (with simulcast layers) and Opus with audio levels, receives what the SFU sends
//! and counts it. The integration tests and the `live-class` load scenario drive it.
//!
//! The frames are not real video: each is one RTP packet whose VP8 payload descriptor
//! and keyframe bit are right (the SFU reads nothing else), padded to the layer's size.

use crate::signal::{Candidate, Pc};
use crate::vp8::is_keyframe as vp8_is_keyframe;
use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use webrtc::api::interceptor_registry::{configure_nack, configure_rtcp_reports};
use webrtc::api::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{API, APIBuilder};
use webrtc::ice::network_type::NetworkType;
use webrtc::ice_transport::ice_candidate::RTCIceCandidateInit;
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp::extension::HeaderExtension;
use webrtc::rtp::extension::audio_level_extension::AudioLevelExtension;
use webrtc::rtp_transceiver::rtp_codec::{RTCRtpCodecCapability, RTCRtpHeaderExtensionCapability, RTPCodecType};
use webrtc::track::track_local::TrackLocalWriter;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;

/// What one received track brought.
#[derive(Clone, Debug, Default)]
pub struct TrackStats {
    /// Packets.
    pub packets: u64,
    /// Payload bytes.
    pub bytes: u64,
    /// Size of the last payload (tells the simulcast layer of generated frames).
    pub last_size: usize,
    /// VP8 keyframes.
    pub keyframes: u64,
    /// Packets missing from the sequence (forwarding must keep it continuous).
    pub gaps: u64,
    last_seq: Option<u16>,
}

/// Everything a client received, by track id (`p<peer>-<media>`).
pub type Received = Arc<Mutex<HashMap<String, TrackStats>>>;

/// Publisher-to-subscriber latency of generated packets, microseconds (HDR histogram).
pub type Latency = Arc<Mutex<hdrhistogram::Histogram<u64>>>;

/// Generated payloads carry this marker and their send time (microseconds since the
/// epoch) after the first 11 bytes (a VP8 payload descriptor and keyframe header), so a
/// subscriber measures latency.
const STAMP: &[u8; 2] = b"PR";
const STAMP_AT: usize = 11;

/// Latency stamps are compared across processes on one host: the system clock.
fn now_us() -> u64 {
    use preau_proto::clock::Clock as _;
    preau_proto::clock::SystemClock.now_us()
}

fn stamp(payload: &mut [u8]) {
    if payload.len() >= STAMP_AT + 10 {
        payload[STAMP_AT..STAMP_AT + 2].copy_from_slice(STAMP);
        payload[STAMP_AT + 2..STAMP_AT + 10].copy_from_slice(&now_us().to_le_bytes());
    }
}

fn stamped_at(payload: &[u8]) -> Option<u64> {
    (payload.len() >= STAMP_AT + 10 && &payload[STAMP_AT..STAMP_AT + 2] == STAMP)
        .then(|| u64::from_le_bytes(payload[STAMP_AT + 2..STAMP_AT + 10].try_into().unwrap_or_default()))
}

/// The client's webrtc-rs factory (loopback only, simulcast and audio-level extensions).
pub fn api() -> anyhow::Result<API> {
    let mut m = MediaEngine::default();
    m.register_default_codecs()?;
    for uri in [
        "urn:ietf:params:rtp-hdrext:sdes:mid",
        "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
        "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
    ] {
        m.register_header_extension(RTCRtpHeaderExtensionCapability { uri: uri.into() }, RTPCodecType::Video, None)?;
    }
    m.register_header_extension(
        RTCRtpHeaderExtensionCapability { uri: crate::signal::AUDIO_LEVEL_URI.into() },
        RTPCodecType::Audio,
        None,
    )?;
    // NACK and reports, but no transport-cc: webrtc-rs 0.17 stamps TWCC arrivals when its
    // interceptor reads them, in bursts, which a delay-based estimator (the SFU's) reads as
    // congestion and sinks to its floor. Without it the SFU forwards by tile quality, as
    // the tests and load runs expect; browsers negotiate transport-cc and get estimated.
    let reg = configure_rtcp_reports(configure_nack(Registry::new(), &mut m));
    let mut s = SettingEngine::default();
    // Loopback tests and load runs: the SFU is on 127.0.0.0/8.
    s.set_include_loopback_candidate(true);
    s.set_ip_filter(Box::new(|ip| ip.is_loopback()));
    s.set_network_types(vec![NetworkType::Udp4]);
    Ok(APIBuilder::new().with_media_engine(m).with_interceptor_registry(reg).with_setting_engine(s).build())
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<(), String>>>>>;

/// A connected live-class client.
pub struct LiveClient {
    /// Peer id the SFU gave.
    pub peer: u64,
    /// Role the SFU confirmed.
    pub role: String,
    out: mpsc::Sender<String>,
    events: mpsc::Receiver<Value>,
    pending: Pending,
    next_id: AtomicU64,
    publish_pc: Arc<Mutex<Option<Arc<RTCPeerConnection>>>>,
    answer_tx: Arc<Mutex<Option<oneshot::Sender<String>>>>,
    /// What arrived on the `sub` connection.
    pub received: Received,
    sub_pc: Arc<RTCPeerConnection>,
    /// Latency of what arrived (generated media only).
    pub latency: Latency,
    /// SFU offers answered on `sub` (one per renegotiation or ICE restart).
    pub offers: Arc<AtomicU64>,
    api: Arc<API>,
    closed: Arc<AtomicBool>,
}

/// A running publication of generated media.
pub struct Publication {
    /// Keyframe requests (PLI or FIR) received, by rid (`""` without simulcast).
    pub keyframe_requests: Arc<Mutex<HashMap<String, u64>>>,
    /// Packets sent, all layers.
    pub sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Publication {
    /// Stops sending.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Drop for Publication {
    fn drop(&mut self) {
        self.stop();
    }
}

impl LiveClient {
    /// Connects to the SFU's signaling URL and joins with `token`.
    pub async fn join(url: &str, token: &str) -> anyhow::Result<LiveClient> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.context("signaling connect")?;
        let (sink, mut stream) = ws.split();
        let out = spawn_text_writer(sink, 256);
        out.send(json!({"type":"join","token":token}).to_string()).await?;
        let (events_tx, mut events) = mpsc::channel::<Value>(1024);
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let api = Arc::new(api()?);
        let sub_pc = Arc::new(api.new_peer_connection(RTCConfiguration::default()).await?);
        let publish_pc: Arc<Mutex<Option<Arc<RTCPeerConnection>>>> = Arc::new(Mutex::new(None));
        let answer_tx: Arc<Mutex<Option<oneshot::Sender<String>>>> = Arc::new(Mutex::new(None));
        let received: Received = Arc::new(Mutex::new(HashMap::new()));
        let closed = Arc::new(AtomicBool::new(false));
        let latency: Latency = Arc::new(Mutex::new(hdrhistogram::Histogram::new(3)?));
        watch_candidates(&sub_pc, Pc::Sub, out.clone());
        record_tracks(&sub_pc, received.clone(), latency.clone());
        // Reader: answers the SFU's offers, applies candidates, settles requests, passes
        // the rest on as events.
        let offers = Arc::new(AtomicU64::new(0));
        let (p2, pub2, ans2, out2, sub2, closed2, offers2) = (
            pending.clone(),
            publish_pc.clone(),
            answer_tx.clone(),
            out.clone(),
            sub_pc.clone(),
            closed.clone(),
            offers.clone(),
        );
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Text(t) = msg else { continue };
                let Ok(v) = serde_json::from_str::<Value>(&t) else { continue };
                let ty = v["type"].as_str().unwrap_or_default().to_owned();
                match ty.as_str() {
                    "ack" => {
                        if let Some(tx) = v["id"].as_u64().and_then(|id| p2.lock().remove(&id)) {
                            let _ = tx.send(Ok(()));
                        }
                    }
                    "error" if v["id"].as_u64().is_some_and(|id| p2.lock().contains_key(&id)) => {
                        if let Some(tx) = v["id"].as_u64().and_then(|id| p2.lock().remove(&id)) {
                            let _ = tx.send(Err(format!("{}: {}", v["code"], v["message"])));
                        }
                    }
                    "offer" => {
                        let sdp = v["sdp"].as_str().unwrap_or_default().to_owned();
                        match answer_offer(&sub2, sdp, &out2).await {
                            Ok(()) => {
                                offers2.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => tracing::warn!(error = %e, "answering the SFU's offer failed"),
                        }
                    }
                    "answer" => {
                        if let Some(tx) = ans2.lock().take() {
                            let _ = tx.send(v["sdp"].as_str().unwrap_or_default().to_owned());
                        }
                    }
                    "candidate" => {
                        let Ok(c) = serde_json::from_value::<Candidate>(v["candidate"].clone()) else { continue };
                        let init = RTCIceCandidateInit::from(c);
                        let pc = if v["pc"] == "pub" { pub2.lock().clone() } else { Some(sub2.clone()) };
                        if let Some(pc) = pc {
                            let _ = pc.add_ice_candidate(init).await;
                        }
                    }
                    _ => {
                        let _ = events_tx.try_send(v);
                    }
                }
            }
            closed2.store(true, Ordering::Relaxed);
        });
        // The welcome comes first (or an error).
        let first =
            tokio::time::timeout(Duration::from_secs(10), events.recv()).await?.ok_or_else(|| anyhow!("closed"))?;
        if first["type"] != "welcome" {
            bail!("join refused: {first}");
        }
        Ok(LiveClient {
            peer: first["peer"].as_u64().unwrap_or_default(),
            role: first["role"].as_str().unwrap_or_default().to_owned(),
            out,
            events,
            pending,
            next_id: AtomicU64::new(1),
            publish_pc,
            answer_tx,
            received,
            sub_pc,
            latency,
            offers,
            api,
            closed,
        })
    }

    /// The ICE username fragment of the `sub` connection's current remote description.
    pub async fn sub_ufrag(&self) -> Option<String> {
        let pc = self.sub_pc.clone();
        let sdp = pc.remote_description().await?.sdp;
        sdp.lines().find_map(|l| l.strip_prefix("a=ice-ufrag:")).map(str::to_owned)
    }

    /// Whether the SFU closed the connection.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Sends a command and waits for its `ack` (or its error's code and message).
    pub async fn request(&self, mut cmd: Value) -> anyhow::Result<()> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        cmd["id"] = json!(id);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(id, tx);
        self.out.send(cmd.to_string()).await?;
        match tokio::time::timeout(Duration::from_secs(10), rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => bail!("{e}"),
            _ => bail!("no answer"),
        }
    }

    /// The next event of type `ty` (others are skipped), within `within`.
    pub async fn event(&mut self, ty: &str, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let v = tokio::time::timeout_at(deadline, self.events.recv()).await.ok()??;
            if v["type"] == ty {
                return Some(v);
            }
        }
    }

    /// A snapshot of what arrived for track `id`.
    pub fn track(&self, id: &str) -> TrackStats {
        self.received.lock().get(id).cloned().unwrap_or_default()
    }

    /// Publishes generated media: Opus at 50 packets/s with a voice level of
    /// `audio_level` (-dBov; `None`: no audio), and VP8 at 30 frames/s in the given
    /// simulcast layers (`(rid, bytes per frame)`, lowest first; one unnamed layer when
    /// a single one is given with an empty rid). Keyframes every 2 s and on request.
    pub async fn publish(&self, layers: &[(&str, usize)], audio_level: Option<u8>) -> anyhow::Result<Publication> {
        let pc = Arc::new(self.api.new_peer_connection(RTCConfiguration::default()).await?);
        *self.publish_pc.lock() = Some(pc.clone());
        watch_candidates(&pc, Pc::Pub, self.out.clone());
        let (publication, labels) = add_generated_tracks(&pc, self.peer, layers, audio_level).await?;
        let offer = pc.create_offer(None).await?;
        pc.set_local_description(offer).await?;
        let sdp = pc.local_description().await.map(|d| d.sdp).unwrap_or_default();
        let (tx, rx) = oneshot::channel();
        *self.answer_tx.lock() = Some(tx);
        self.request(json!({"type":"publish","sdp":sdp,"tracks":labels})).await?;
        let answer = tokio::time::timeout(Duration::from_secs(10), rx).await??;
        pc.set_remote_description(RTCSessionDescription::answer(answer)?).await?;
        Ok(publication)
    }

    /// Leaves the room.
    pub async fn leave(&self) {
        let _ = self.out.send(json!({"type":"leave"}).to_string()).await;
    }
}

/// Adds generated media to `pc` and starts sending it (packets are dropped until the
/// connection is up): Opus at 50 packets/s with a voice level of `audio_level` (-dBov;
/// `None`: no audio), and VP8 at 30 frames/s in the given simulcast layers (`(rid, bytes
/// per frame)`, lowest first; one unnamed layer when a single one is given with an empty
/// rid). Keyframes every 2 s and on request. Returns the publication and the track
/// labels (track id to `video` or `audio`).
pub async fn add_generated_tracks(
    pc: &Arc<RTCPeerConnection>,
    peer: u64,
    layers: &[(&str, usize)],
    audio_level: Option<u8>,
) -> anyhow::Result<(Publication, serde_json::Map<String, Value>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let requests: Arc<Mutex<HashMap<String, u64>>> = Arc::new(Mutex::new(HashMap::new()));
    let stream = format!("client-{}", peer);
    let mut labels = serde_json::Map::new();
    let mut pumps = Vec::new();
    if !layers.is_empty() {
        let vp8 = RTCRtpCodecCapability { mime_type: MIME_TYPE_VP8.into(), clock_rate: 90000, ..Default::default() };
        let track_id = format!("video-{}", peer);
        labels.insert(track_id.clone(), json!("video"));
        let tracks: Vec<Arc<TrackLocalStaticRTP>> = layers
            .iter()
            .map(|(rid, _)| {
                Arc::new(if rid.is_empty() {
                    TrackLocalStaticRTP::new(vp8.clone(), track_id.clone(), stream.clone())
                } else {
                    TrackLocalStaticRTP::new_with_rid(vp8.clone(), track_id.clone(), (*rid).into(), stream.clone())
                })
            })
            .collect();
        let sender = pc.add_track(tracks[0].clone()).await?;
        for t in &tracks[1..] {
            sender.add_encoding(t.clone()).await?;
        }
        for ((rid, size), track) in layers.iter().zip(tracks) {
            let want_key = Arc::new(AtomicBool::new(true));
            let (s2, rid2, w2, req2) = (sender.clone(), rid.to_string(), want_key.clone(), requests.clone());
            tokio::spawn(async move {
                loop {
                    let r = if rid2.is_empty() { s2.read_rtcp().await } else { s2.read_rtcp_simulcast(&rid2).await };
                    let Ok((pkts, _)) = r else { break };
                    for p in pkts {
                        let any = p.as_any();
                        if any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>() {
                            *req2.lock().entry(rid2.clone()).or_default() += 1;
                            w2.store(true, Ordering::Relaxed);
                        }
                    }
                }
            });
            pumps.push(tokio::spawn(pump_video(track, *size, want_key, stop.clone(), sent.clone())));
        }
    }
    if let Some(level) = audio_level {
        let opus = RTCRtpCodecCapability {
            mime_type: MIME_TYPE_OPUS.into(),
            clock_rate: 48000,
            channels: 2,
            ..Default::default()
        };
        let track_id = format!("audio-{}", peer);
        labels.insert(track_id.clone(), json!("audio"));
        let track = Arc::new(TrackLocalStaticRTP::new(opus, track_id, stream.clone()));
        let sender = pc.add_track(track.clone()).await?;
        tokio::spawn(async move { while sender.read_rtcp().await.is_ok() {} });
        pumps.push(tokio::spawn(pump_audio(track, level, stop.clone(), sent.clone())));
    }
    drop(pumps);
    Ok((Publication { keyframe_requests: requests, sent, stop }, labels))
}

/// Spawns the task that writes a WebSocket's text frames from a queue of `depth` (so that
/// several tasks can send), and closes the socket when every sender is gone.
pub fn spawn_text_writer<S>(mut sink: S, depth: usize) -> mpsc::Sender<String>
where
    S: futures_util::Sink<Message> + Unpin + Send + 'static,
{
    let (out, mut rx) = mpsc::channel::<String>(depth);
    tokio::spawn(async move {
        while let Some(t) = rx.recv().await {
            if sink.send(Message::Text(t.into())).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    out
}

/// Counts what arrives on `pc` into `received` (by track id) and `latency`. Like a
/// browser's decoder, a video track that starts without a keyframe asks for one (PLI),
/// again every 15 packets until one comes: the first packets of a track can arrive
/// before the receiver knows it and be dropped.
pub fn record_tracks(pc: &Arc<RTCPeerConnection>, received: Received, latency: Latency) {
    let weak = Arc::downgrade(pc);
    pc.on_track(Box::new(move |track, _, _| {
        let (rec, lat, weak) = (received.clone(), latency.clone(), weak.clone());
        Box::pin(async move {
            tokio::spawn(async move {
                let id = track.id();
                // Non-key packets seen on a video track before its first keyframe.
                let mut before_key: Option<u32> = (track.kind() == RTPCodecType::Video).then_some(0);
                while let Ok((p, _)) = track.read_rtp().await {
                    if let Some(n) = before_key {
                        if vp8_is_keyframe(&p.payload) {
                            before_key = None;
                        } else {
                            if n % 15 == 0
                                && let Some(pc) = weak.upgrade()
                            {
                                let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc: track.ssrc() };
                                let _ = pc.write_rtcp(&[Box::new(pli)]).await;
                            }
                            before_key = Some(n + 1);
                        }
                    }
                    if let Some(sent) = stamped_at(&p.payload) {
                        let _ = lat.lock().record(now_us().saturating_sub(sent).max(1));
                    }
                    let mut r = rec.lock();
                    let s = r.entry(id.clone()).or_default();
                    if let Some(last) = s.last_seq {
                        let d = p.header.sequence_number.wrapping_sub(last);
                        if d > 1 && d < 0x8000 {
                            s.gaps += u64::from(d - 1);
                        }
                    }
                    s.last_seq = Some(p.header.sequence_number);
                    s.packets += 1;
                    s.bytes += p.payload.len() as u64;
                    s.last_size = p.payload.len();
                    if vp8_is_keyframe(&p.payload) && track.kind() == RTPCodecType::Video {
                        s.keyframes += 1;
                    }
                }
            });
        })
    }));
}

fn watch_candidates(pc: &Arc<RTCPeerConnection>, which: Pc, out: mpsc::Sender<String>) {
    pc.on_ice_candidate(Box::new(move |c| {
        let out = out.clone();
        Box::pin(async move {
            if let Some(c) = c
                && let Ok(j) = c.to_json()
            {
                let cand = Candidate::from(j);
                let _ = out.send(json!({"type":"candidate","pc":which,"candidate":cand}).to_string()).await;
            }
        })
    }));
}

async fn answer_offer(pc: &Arc<RTCPeerConnection>, sdp: String, out: &mpsc::Sender<String>) -> anyhow::Result<()> {
    pc.set_remote_description(RTCSessionDescription::offer(sdp)?).await?;
    let answer = pc.create_answer(None).await?;
    pc.set_local_description(answer).await?;
    let sdp = pc.local_description().await.map(|d| d.sdp).unwrap_or_default();
    out.send(json!({"type":"answer","sdp":sdp}).to_string()).await?;
    Ok(())
}

/// Sends generated VP8 frames on `track` at 30 fps until `stop`; a keyframe every 2 s and
/// whenever `want_key` is set.
pub async fn pump_video(
    track: Arc<TrackLocalStaticRTP>,
    size: usize,
    want_key: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(33));
    let (mut seq, mut ts, mut frame) = (rand::random::<u16>(), rand::random::<u32>(), 0u64);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let key = want_key.swap(false, Ordering::Relaxed) || frame.is_multiple_of(60);
        let mut payload = vec![0u8; size.max(STAMP_AT + 10)];
        payload[0] = 0x10; // payload descriptor: S=1, PID=0, no extensions
        // Frame tag (P bit 0 on keyframes, show_frame), then a keyframe's start code and
        // size, as SFUs that parse further than the P bit (Janus) expect.
        payload[1] = if key { 0x10 } else { 0x11 };
        payload[4..7].copy_from_slice(&[0x9d, 0x01, 0x2a]);
        payload[7..11].copy_from_slice(&[0x80, 0x02, 0xe0, 0x01]);
        stamp(&mut payload);
        let p = webrtc::rtp::packet::Packet {
            header: webrtc::rtp::header::Header {
                version: 2,
                marker: true,
                payload_type: 96,
                sequence_number: seq,
                timestamp: ts,
                ..Default::default()
            },
            payload: payload.into(),
        };
        if track.write_rtp(&p).await.is_ok() {
            sent.fetch_add(1, Ordering::Relaxed);
        }
        seq = seq.wrapping_add(1);
        ts = ts.wrapping_add(3000);
        frame += 1;
    }
}

/// Sends generated Opus packets (50/s) with an audio level until `stop`.
pub async fn pump_audio(track: Arc<TrackLocalStaticRTP>, level: u8, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let (mut seq, mut ts) = (rand::random::<u16>(), rand::random::<u32>());
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let p = webrtc::rtp::packet::Packet {
            header: webrtc::rtp::header::Header {
                version: 2,
                payload_type: 111,
                sequence_number: seq,
                timestamp: ts,
                ..Default::default()
            },
            payload: {
                let mut b = vec![0xf8u8; 80];
                stamp(&mut b);
                b.into()
            },
        };
        let ext = [HeaderExtension::AudioLevel(AudioLevelExtension { level, voice: level < 127 })];
        if track.write_rtp_with_extensions(&p, &ext).await.is_ok() {
            sent.fetch_add(1, Ordering::Relaxed);
        }
        seq = seq.wrapping_add(1);
        ts = ts.wrapping_add(960);
    }
}

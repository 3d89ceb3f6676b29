//! Published media on webrtc-rs 0.17: sources and their forwarding to subscribers (the
//! factories are in [`crate::engines`]).
//!
//! A [`Source`] is one published track (a pupil's microphone, the teacher's camera with
//! its three simulcast layers, a screen). One reader task per layer reads RTP and, for
//! each subscriber, asks that subscriber's [`Forward`] what to send; no lock is shared
//! between sources, and a source's subscriber list is a snapshot swapped on change, so
//! the packet path takes only the subscriber's own small lock.

use crate::forward::{Forward, LayerStat, Verdict, pick_layer, vp8_is_keyframe};
use crate::metrics as m;
use crate::room::{Media, PeerId};
use crate::room_task::now;
use crate::speaker::{LevelReport, LevelWindow};
use parking_lot::{Mutex, RwLock};
use preau_live::signal::Quality;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp_transceiver::rtp_codec::RTCRtpCodecCapability;
use webrtc::rtp_transceiver::rtp_sender::RTCRtpSender;
use webrtc::track::track_local::TrackLocalWriter;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_remote::TrackRemote;

pub use crate::engines::{Engines, NetConfig, extension_id};
pub use preau_live::signal::AUDIO_LEVEL_URI;
/// Shortest time between two keyframe requests for one layer.
const PLI_INTERVAL: Duration = Duration::from_millis(300);

/// Where a source's readers report audio levels (to the room).
pub type LevelSink = mpsc::Sender<(PeerId, LevelReport)>;

/// Where a source's last reader reports that the source closed (to the room).
pub type ClosedSink = mpsc::Sender<String>;

/// One simulcast layer (or the only layer) of a source.
#[derive(Debug)]
struct Layer {
    rid: String,
    ssrc: AtomicU64,
    bytes: AtomicU64,
    packets: AtomicU64,
    stat: Mutex<(LayerStat, u64, u64, Instant)>,
    last_pli: Mutex<Option<Instant>>,
    /// A request came within the throttle window: one more is sent when it ends.
    pli_pending: AtomicBool,
}

/// A subscriber's output for one source.
pub struct SubOut {
    /// Subscriber.
    pub peer: PeerId,
    /// The track on the subscriber's `sub` connection.
    pub track: Arc<TrackLocalStaticRTP>,
    fwd: Mutex<Forward>,
    want: Mutex<Quality>,
    estimate: Arc<AtomicU64>,
}

/// One published track.
pub struct Source {
    /// `p<peer>-<media>`, also the track id subscribers see.
    pub id: String,
    /// Publisher.
    pub peer: PeerId,
    /// Kind.
    pub media: Media,
    /// Codec, for subscribers' tracks.
    pub codec: RTCRtpCodecCapability,
    /// Whether the room lets this source through (grants); checked per packet.
    pub allowed: AtomicBool,
    layers: RwLock<Vec<Arc<Layer>>>,
    subs: RwLock<Arc<Vec<Arc<SubOut>>>>,
    publisher: std::sync::Weak<RTCPeerConnection>,
    closed: AtomicBool,
    readers: AtomicU64,
}

fn rid_rank(rid: &str) -> u8 {
    match rid {
        "q" | "l" | "low" => 0,
        "h" | "m" | "mid" => 1,
        _ => 2,
    }
}

impl Source {
    /// A source of `peer`, published on `publisher`.
    pub fn new(
        peer: PeerId,
        media: Media,
        codec: RTCRtpCodecCapability,
        publisher: &Arc<RTCPeerConnection>,
        allowed: bool,
    ) -> Arc<Source> {
        Arc::new(Source {
            id: preau_live::signal::source_id(peer, media),
            peer,
            media,
            codec,
            allowed: AtomicBool::new(allowed),
            layers: RwLock::new(Vec::new()),
            subs: RwLock::new(Arc::new(Vec::new())),
            publisher: Arc::downgrade(publisher),
            closed: AtomicBool::new(false),
            readers: AtomicU64::new(0),
        })
    }

    fn is_video(&self) -> bool {
        self.media != Media::Audio
    }

    /// Whether every reader stopped (the publisher left or stopped the track).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Marks the source closed; its readers stop at their next packet.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Adds a layer as its track arrives; layers stay ordered lowest first. True when an
    /// existing layer's index moved (subscribers must choose again).
    fn add_layer(&self, rid: &str, ssrc: u32) -> (Arc<Layer>, bool) {
        let mut layers = self.layers.write();
        if let Some(l) = layers.iter().find(|l| l.rid == rid) {
            l.ssrc.store(u64::from(ssrc), Ordering::Relaxed);
            return (l.clone(), false);
        }
        let l = Arc::new(Layer {
            rid: rid.to_owned(),
            ssrc: AtomicU64::new(u64::from(ssrc)),
            bytes: AtomicU64::new(0),
            packets: AtomicU64::new(0),
            stat: Mutex::new((LayerStat::default(), 0, 0, now())),
            last_pli: Mutex::new(None),
            pli_pending: AtomicBool::new(false),
        });
        layers.push(l.clone());
        layers.sort_by_key(|l| rid_rank(&l.rid));
        let moved = !Arc::ptr_eq(&layers[layers.len() - 1], &l);
        (l, moved)
    }

    fn layer_index(&self, layer: &Arc<Layer>) -> usize {
        self.layers.read().iter().position(|l| Arc::ptr_eq(l, layer)).unwrap_or(0)
    }

    fn layer_stats(&self) -> Vec<LayerStat> {
        self.layers.read().iter().map(|l| l.stat.lock().0).collect()
    }

    /// Asks the publisher for a keyframe of layer `idx`, at most every 300 ms per layer; a
    /// request inside that window is sent when it closes (browsers send keyframes only
    /// when asked, so a dropped request would leave a subscriber without picture).
    pub async fn request_keyframe(self: &Arc<Self>, idx: usize) {
        let Some(layer) = self.layers.read().get(idx).cloned() else { return };
        let wait = {
            let mut last = layer.last_pli.lock();
            match *last {
                Some(t) if t.elapsed() < PLI_INTERVAL => Some(PLI_INTERVAL - t.elapsed()),
                _ => {
                    *last = Some(now());
                    None
                }
            }
        };
        if let Some(wait) = wait {
            if !layer.pli_pending.swap(true, Ordering::AcqRel) {
                let (me, layer) = (self.clone(), layer.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    layer.pli_pending.store(false, Ordering::Release);
                    *layer.last_pli.lock() = Some(now());
                    me.send_pli(&layer, idx).await;
                });
            }
            return;
        }
        self.send_pli(&layer, idx).await;
    }

    async fn send_pli(&self, layer: &Layer, idx: usize) {
        let Some(pc) = self.publisher.upgrade() else { return };
        let media_ssrc = layer.ssrc.load(Ordering::Relaxed) as u32;
        metrics::counter!(m::PLIS, "dir" => "sent").increment(1);
        tracing::debug!(source = %self.id, layer = idx, media_ssrc, "keyframe requested");
        if let Err(e) = pc.write_rtcp(&[Box::new(PictureLossIndication { sender_ssrc: 0, media_ssrc })]).await {
            tracing::debug!(source = %self.id, error = %e, "keyframe request not sent");
        }
    }

    /// Starts forwarding to a subscriber. `estimate` is the subscriber connection's
    /// bandwidth estimate (bits per second, 0 when unknown), shared by its sources.
    pub async fn subscribe(
        self: &Arc<Self>,
        peer: PeerId,
        track: Arc<TrackLocalStaticRTP>,
        paused: bool,
        estimate: Arc<AtomicU64>,
    ) {
        let clock = self.codec.clock_rate;
        let mut fwd = if self.is_video() { Forward::video(clock) } else { Forward::audio(clock) };
        if paused {
            fwd.pause();
        }
        let want = if self.media == Media::Video { Quality::Medium } else { Quality::High };
        let sub = Arc::new(SubOut { peer, track, fwd: Mutex::new(fwd), want: Mutex::new(want), estimate });
        {
            let mut subs = self.subs.write();
            let mut v: Vec<Arc<SubOut>> = subs.iter().filter(|s| s.peer != peer).cloned().collect();
            v.push(sub.clone());
            *subs = Arc::new(v);
        }
        self.retarget(&sub).await;
    }

    /// Stops forwarding to `peer`.
    pub fn unsubscribe(&self, peer: PeerId) {
        let mut subs = self.subs.write();
        if subs.iter().any(|s| s.peer == peer) {
            *subs = Arc::new(subs.iter().filter(|s| s.peer != peer).cloned().collect());
        }
    }

    fn sub(&self, peer: PeerId) -> Option<Arc<SubOut>> {
        self.subs.read().iter().find(|s| s.peer == peer).cloned()
    }

    /// Pauses or resumes a subscriber's video (last-N).
    pub async fn set_forwarded(self: &Arc<Self>, peer: PeerId, on: bool) {
        let Some(sub) = self.sub(peer) else { return };
        let pli = {
            let mut f = sub.fwd.lock();
            if on {
                f.resume().then(|| f.target()).flatten()
            } else {
                f.pause();
                None
            }
        };
        if let Some(l) = pli {
            self.request_keyframe(l).await;
        }
    }

    /// A subscriber's wanted quality for this source (its tile's size).
    pub async fn set_quality(self: &Arc<Self>, peer: PeerId, q: Quality) {
        if let Some(sub) = self.sub(peer) {
            *sub.want.lock() = q;
            self.retarget(&sub).await;
        }
    }

    /// Re-chooses the layer of every subscriber (after an estimate or layer change).
    pub async fn retarget_all(self: &Arc<Self>) {
        let subs = self.subs.read().clone();
        for s in subs.iter() {
            self.retarget(s).await;
        }
    }

    async fn retarget(self: &Arc<Self>, sub: &SubOut) {
        if !self.is_video() {
            return;
        }
        let stats = self.layer_stats();
        let est = sub.estimate.load(Ordering::Relaxed);
        let want = *sub.want.lock();
        let target = pick_layer(&stats, want, (est > 0).then_some(est));
        let pli = {
            let mut f = sub.fwd.lock();
            f.set_target(target).then_some(target).flatten()
        };
        if let Some(l) = pli {
            self.request_keyframe(l).await;
        }
    }

    /// Refreshes each layer's bitrate and activity from the byte counters; returns
    /// whether a layer turned on or off (then subscribers are re-targeted).
    fn measure(&self) -> bool {
        let now = now();
        let mut changed = false;
        for l in self.layers.read().iter() {
            let bytes = l.bytes.load(Ordering::Relaxed);
            let packets = l.packets.load(Ordering::Relaxed);
            let mut st = l.stat.lock();
            let dt = now.saturating_duration_since(st.3).as_secs_f64();
            if dt < 0.2 {
                continue;
            }
            let active = packets > st.2;
            let bitrate = (((bytes - st.1) as f64 * 8.0) / dt) as u64;
            if active != st.0.active {
                changed = true;
            }
            // Smoothed: one keyframe burst must not look like a new bitrate.
            let br = if st.0.bitrate == 0 { bitrate } else { (st.0.bitrate * 7 + bitrate * 3) / 10 };
            *st = (LayerStat { active, bitrate: if active { br } else { 0 } }, bytes, packets, now);
        }
        changed
    }

    /// Reads one layer of the published track until it ends, forwarding every packet.
    pub async fn read_layer(
        self: Arc<Self>,
        track: Arc<TrackRemote>,
        levels: Option<(u8, LevelSink)>,
        closed: ClosedSink,
    ) {
        let (layer, moved) = self.add_layer(track.rid(), track.ssrc());
        if moved {
            // Layers arrive in any order: indices held by subscribers are stale.
            let subs = self.subs.read().clone();
            for s in subs.iter() {
                s.fwd.lock().reset();
            }
            self.retarget_all().await;
        }
        self.readers.fetch_add(1, Ordering::AcqRel);
        let kind = if self.is_video() { "video" } else { "audio" };
        let mut window = LevelWindow::default();
        let mut window_start = now();
        let mut next_measure = now() + Duration::from_millis(500);
        tracing::info!(source = %self.id, rid = track.rid(), ssrc = track.ssrc(), "layer started");
        while !self.is_closed() {
            let pkt = match track.read_rtp().await {
                Ok((p, _)) => p,
                Err(e) => {
                    tracing::debug!(source = %self.id, error = %e, "layer ended");
                    break;
                }
            };
            let now = now();
            let size = pkt.payload.len() as u64 + 12;
            layer.bytes.fetch_add(size, Ordering::Relaxed);
            layer.packets.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(m::PACKETS_IN, "kind" => kind).increment(1);
            metrics::counter!(m::BYTES_IN, "kind" => kind).increment(size);
            if now >= next_measure {
                next_measure = now + Duration::from_millis(500);
                if self.measure() {
                    self.retarget_all().await;
                }
            }
            if !self.allowed.load(Ordering::Acquire) {
                metrics::counter!(m::PACKETS_DROPPED, "reason" => "not_granted").increment(1);
                continue;
            }
            if let Some((ext_id, sink)) = &levels {
                self.audio_level(now, &pkt, *ext_id, sink, &mut window, &mut window_start);
            }
            let idx = if self.is_video() { self.layer_index(&layer) } else { 0 };
            let keyframe = self.is_video() && vp8_is_keyframe(&pkt.payload);
            if keyframe {
                tracing::debug!(source = %self.id, rid = track.rid(), "keyframe in");
            }
            self.fan_out(now, &pkt, idx, keyframe, size).await;
        }
        if self.readers.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.close();
            // If the room is busy, its next timer sweeps the source instead.
            let _ = closed.try_send(self.id.clone());
        }
    }

    /// Adds a packet's audio level to the window; every 200 ms, tells the room.
    fn audio_level(
        &self,
        now: Instant,
        pkt: &webrtc::rtp::packet::Packet,
        ext_id: u8,
        sink: &LevelSink,
        window: &mut LevelWindow,
        window_start: &mut Instant,
    ) {
        if let Some(b) = pkt.header.get_extension(ext_id)
            && let Some(&level) = b.first()
        {
            window.add(level);
        }
        if now.saturating_duration_since(*window_start) >= Duration::from_millis(200) {
            *window_start = now;
            if let Some(r) = window.take() {
                // The room is told at most five times a second; if it is busy the report
                // is dropped, never the media.
                let _ = sink.try_send((self.peer, r));
            }
        }
    }

    /// Sends one packet of layer `idx` to every subscriber whose forward takes it.
    async fn fan_out(&self, now: Instant, pkt: &webrtc::rtp::packet::Packet, idx: usize, keyframe: bool, size: u64) {
        let kind = if self.is_video() { "video" } else { "audio" };
        let subs = self.subs.read().clone();
        for s in subs.iter() {
            let v = s.fwd.lock().on_packet(now, idx, pkt.header.sequence_number, pkt.header.timestamp, keyframe);
            let Verdict::Send { seq, ts, switched } = v else { continue };
            if switched {
                metrics::counter!(m::LAYER_SWITCHES).increment(1);
            }
            if keyframe {
                tracing::debug!(source = %self.id, peer = s.peer, layer = idx, seq, "keyframe forwarded");
            }
            let out = crate::forward::rewrite(pkt, seq, ts);
            match s.track.write_rtp(&out).await {
                Ok(_) => {
                    metrics::counter!(m::PACKETS_OUT, "kind" => kind).increment(1);
                    metrics::counter!(m::BYTES_OUT, "kind" => kind).increment(size);
                }
                Err(e) => tracing::debug!(error = %e, "write to subscriber failed"),
            }
        }
    }

    /// The layer a subscriber receives (or waits for).
    pub fn current_layer(&self, peer: PeerId) -> Option<usize> {
        let s = self.sub(peer)?;
        let f = s.fwd.lock();
        f.current().or(f.target())
    }

    /// Re-chooses one subscriber's layer (its bandwidth estimate changed).
    pub async fn retarget_peer(self: &Arc<Self>, peer: PeerId) {
        if let Some(s) = self.sub(peer) {
            self.retarget(&s).await;
        }
    }

    /// Reads one subscriber's RTCP for this source until its sender closes: keyframe
    /// requests go to the publisher for the layer that subscriber receives, NACKs are
    /// counted (the interceptor answers them from its buffer), bandwidth estimates
    /// retarget the subscriber's layer.
    pub async fn read_rtcp(self: Arc<Self>, sender: Arc<RTCRtpSender>, peer: PeerId, estimate: Arc<AtomicU64>) {
        use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
        use webrtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
        use webrtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
        while let Ok((pkts, _)) = sender.read_rtcp().await {
            for p in pkts {
                let any = p.as_any();
                if any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>() {
                    metrics::counter!(m::PLIS, "dir" => "received").increment(1);
                    self.keyframe_for(peer).await;
                } else if let Some(n) = any.downcast_ref::<TransportLayerNack>() {
                    metrics::counter!(m::NACKS).increment(n.nacks.len() as u64);
                } else if let Some(r) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
                    estimate.store(r.bitrate as u64, Ordering::Relaxed);
                    self.retarget_peer(peer).await;
                }
            }
        }
    }

    /// A subscriber asked for a keyframe: ask the publisher for one of the layer that
    /// subscriber receives.
    pub async fn keyframe_for(self: &Arc<Self>, peer: PeerId) {
        if let Some(l) = self.current_layer(peer) {
            self.request_keyframe(l).await;
        }
    }

    /// Ids of the subscribers.
    pub fn subscribers(&self) -> Vec<PeerId> {
        self.subs.read().iter().map(|s| s.peer).collect()
    }
}

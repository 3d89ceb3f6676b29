//! The spike's engine on webrtc-rs's sans-IO core (`rtc` 0.21): peer connections in a
//! table, routed by [`crate::route`], drained after every input.

use crate::{BATCH, Cmd, Router, Stats, Wire, rid_rank, send_to_peer};
use bytes::BytesMut;
use preau_live::signal::{self, Media, Pc, PeerId, ServerMsg};
use preau_sfu::forward::{Forward, Verdict, vp8_is_keyframe};
use rtc::interceptor::Gcc;
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::{
    CongestionFeedback, configure_congestion_control, configure_nack, configure_rtcp_reports,
};
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc::statistics::StatsSelector;
use rtc::statistics::report::RTCStatsReportEntry;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A connection's position in the engine's table.
type ConnId = usize;

struct Conn {
    pc: RTCPeerConnection,
    peer: PeerId,
    kind: Pc,
    deadline: Option<Instant>,
}

struct Member {
    room: String,
    out: mpsc::Sender<String>,
    publish: Option<ConnId>,
    subscribe: Option<ConnId>,
    /// Whether the `sub` connection carries the SFU's host candidate yet.
    sub_candidate: bool,
    labels: BTreeMap<String, Media>,
    /// An offer on `sub` waits for its answer.
    offering: bool,
    /// Tracks changed since the last offer.
    renegotiate: bool,
    sub_connected: bool,
}

struct Layer {
    ssrc: u32,
    receiver: RTCRtpReceiverId,
    last_pli: Option<Instant>,
}

struct Sub {
    peer: PeerId,
    conn: ConnId,
    sender: RTCRtpSenderId,
    ssrc: u32,
    payload_type: u8,
    fwd: Forward,
    /// In an offer sent on `sub`.
    offered: bool,
    /// In an answered offer: the subscriber knows its SSRC, so packets may flow (ones
    /// sent before would arrive on an SSRC the subscriber cannot place).
    ready: bool,
}

struct Source {
    id: String,
    peer: PeerId,
    room: String,
    media: Media,
    conn: ConnId,
    /// By rank: `q`, `h`, `f` (or the one unnamed layer at 0).
    layers: [Option<Layer>; 3],
    simulcast: bool,
    subs: Vec<Sub>,
    /// Its publisher left: kept in place (indices are held by `by_ssrc`), never offered.
    gone: bool,
}

fn codecs() -> (RTCRtpCodecParameters, RTCRtpCodecParameters) {
    let opus = RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: 111,
    };
    let vp8 = RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_VP8.to_owned(),
            clock_rate: 90000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![
                rtc::rtp_transceiver::rtp_sender::RTCPFeedback { typ: "nack".into(), parameter: String::new() },
                rtc::rtp_transceiver::rtp_sender::RTCPFeedback { typ: "nack".into(), parameter: "pli".into() },
                rtc::rtp_transceiver::rtp_sender::RTCPFeedback { typ: "ccm".into(), parameter: "fir".into() },
            ],
        },
        payload_type: 96,
    };
    (opus, vp8)
}

pub struct Engine {
    wire: Wire,
    local: SocketAddr,
    stats: Arc<Stats>,
    conns: Vec<Option<Conn>>,
    free: Vec<ConnId>,
    router: Router,
    members: HashMap<PeerId, Member>,
    sources: Vec<Source>,
    /// (publishing connection, SSRC) to (source index, layer).
    by_ssrc: HashMap<(ConnId, u32), (usize, usize)>,
    /// Connections with outputs to drain.
    dirty: Vec<ConnId>,
    bwe: bool,
    next_stats: Instant,
}

impl Engine {
    /// An engine sending and receiving on `wire`.
    pub fn new(wire: Wire, bwe: bool) -> Engine {
        let (local, stats) = (wire.local, wire.stats.clone());
        Engine {
            wire,
            local,
            stats,
            conns: Vec::new(),
            free: Vec::new(),
            router: Router::default(),
            members: HashMap::new(),
            sources: Vec::new(),
            by_ssrc: HashMap::new(),
            dirty: Vec::new(),
            bwe,
            next_stats: crate::now(),
        }
    }

    /// Runs until the command queue closes.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) -> anyhow::Result<()> {
        let mut buf = vec![0u8; 2048];
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                r = self.wire.sock.recv_from(&mut buf) => {
                    let Ok((n, from)) = r else { continue };
                    self.datagram(crate::now(), from, &buf[..n]);
                    // Whatever else is queued, without waiting (one wake-up, many datagrams).
                    for _ in 0..BATCH {
                        match self.wire.sock.try_recv_from(&mut buf) {
                            Ok((n, from)) => self.datagram(crate::now(), from, &buf[..n]),
                            Err(_) => break,
                        }
                    }
                }
                c = rx.recv() => {
                    let Some(c) = c else { return Ok(()) };
                    self.command(crate::now(), c);
                }
                _ = tick.tick() => self.timeouts(crate::now()),
            }
            self.wire.flush().await;
        }
    }

    fn new_conn(&mut self, now: Instant, peer: PeerId, kind: Pc) -> anyhow::Result<ConnId> {
        let (opus, vp8) = codecs();
        let mut me = MediaEngine::default();
        me.register_codec(opus, RtpCodecKind::Audio)?;
        me.register_codec(vp8, RtpCodecKind::Video)?;
        for uri in [
            "urn:ietf:params:rtp-hdrext:sdes:mid",
            "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
            "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
        ] {
            me.register_header_extension(
                RTCRtpHeaderExtensionCapability { uri: uri.to_owned() },
                RtpCodecKind::Video,
                None,
            )?;
        }
        me.register_header_extension(
            RTCRtpHeaderExtensionCapability { uri: signal::AUDIO_LEVEL_URI.to_owned() },
            RtpCodecKind::Audio,
            None,
        )?;
        let mut reg = configure_rtcp_reports(configure_nack(Registry::new(), &mut me));
        if self.bwe && kind == Pc::Sub {
            reg = configure_congestion_control(reg, Gcc::default(), CongestionFeedback::Twcc, &mut me)?;
        }
        let ufrag = format!("{:016x}", rand::random::<u64>());
        let pwd = format!("{:032x}", rand::random::<u128>());
        let se = SettingEngineBuilder::new()
            .with_answering_dtls_role(RTCDtlsRole::Server)
            .with_lite(true)
            .with_ice_credentials(ufrag.clone(), pwd)
            .build();
        let pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_setting_engine(se)
            .with_media_engine(me)
            .with_interceptor_registry(reg)
            .build(now)?;
        let conn = Conn { pc, peer, kind, deadline: None };
        let id = match self.free.pop() {
            Some(i) => {
                self.conns[i] = Some(conn);
                i
            }
            None => {
                self.conns.push(Some(conn));
                self.conns.len() - 1
            }
        };
        self.router.add_ufrag(id, ufrag);
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        Ok(id)
    }

    fn host_candidate(&self) -> anyhow::Result<RTCIceCandidateInit> {
        let c = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: self.local.ip().to_string(),
                port: self.local.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()?;
        Ok(RTCIceCandidate::from(&c).to_json()?)
    }

    fn close_conn(&mut self, id: ConnId) {
        let Some(mut c) = self.conns.get_mut(id).and_then(Option::take) else { return };
        let _ = c.pc.close();
        self.router.remove(id);
        self.by_ssrc.retain(|(conn, _), _| *conn != id);
        self.free.push(id);
        self.stats.connections.fetch_sub(1, Ordering::Relaxed);
    }

    fn send_to_peer(&self, peer: PeerId, msg: &ServerMsg) {
        if let Some(m) = self.members.get(&peer) {
            send_to_peer(&m.out, msg);
        }
    }

    fn command(&mut self, now: Instant, c: Cmd) {
        let result = match c {
            Cmd::Join { peer, room, out } => {
                let m = Member {
                    room: room.clone(),
                    out,
                    publish: None,
                    subscribe: None,
                    sub_candidate: false,
                    labels: BTreeMap::new(),
                    offering: false,
                    renegotiate: false,
                    sub_connected: false,
                };
                self.members.insert(peer, m);
                let existing: Vec<usize> = (0..self.sources.len())
                    .filter(|&i| self.sources[i].room == room && self.sources[i].peer != peer && !self.sources[i].gone)
                    .collect();
                for s in existing {
                    if let Err(e) = self.subscribe(now, peer, s) {
                        tracing::warn!(peer, error = %e, "subscribe failed");
                    }
                }
                Ok(())
            }
            Cmd::Publish { peer, id, sdp, tracks } => self.publish(now, peer, id, sdp, tracks),
            Cmd::Answer { peer, sdp } => self.answer(now, peer, sdp),
            Cmd::Candidate { peer, pc, candidate } => {
                let conn = self.members.get(&peer).and_then(|m| if pc == Pc::Pub { m.publish } else { m.subscribe });
                if let Some(c) = conn.and_then(|c| self.conns[c].as_mut()) {
                    let init = RTCIceCandidateInit {
                        candidate: candidate.candidate,
                        sdp_mid: candidate.sdp_mid,
                        sdp_mline_index: candidate.sdp_m_line_index,
                        username_fragment: None,
                        url: None,
                    };
                    // ICE lite: the client's checks tell its address; its candidates are optional.
                    let _ = c.pc.add_remote_candidate(init);
                }
                Ok(())
            }
            Cmd::RestartIce { peer } => {
                // The spike restarts ICE on str0m only (the interop run); rtc's offer
                // would need its new ufrag routed like str0m's.
                tracing::warn!(peer, "restart_ice is not handled by the rtc engine");
                Ok(())
            }
            Cmd::Leave { peer } => {
                self.leave(peer);
                Ok(())
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "command failed");
        }
        self.offers(now);
    }

    fn publish(
        &mut self,
        now: Instant,
        peer: PeerId,
        id: Option<u64>,
        sdp: String,
        tracks: BTreeMap<String, Media>,
    ) -> anyhow::Result<()> {
        let Some(m) = self.members.get_mut(&peer) else { return Ok(()) };
        m.labels.extend(tracks);
        let existing = m.publish;
        let conn = match existing {
            Some(c) => c,
            None => {
                let c = self.new_conn(now, peer, Pc::Pub)?;
                if let Some(m) = self.members.get_mut(&peer) {
                    m.publish = Some(c);
                }
                c
            }
        };
        let cand = self.host_candidate()?;
        let Some(c) = self.conns[conn].as_mut() else { return Ok(()) };
        c.pc.set_remote_description(now, RTCSessionDescription::offer(sdp)?)?;
        if existing.is_none() {
            c.pc.add_local_candidate(cand)?;
        }
        let answer = c.pc.create_answer(None)?;
        c.pc.set_local_description(now, answer)?;
        let sdp = c.pc.local_description().map(|d| d.sdp).unwrap_or_default();
        self.dirty.push(conn);
        self.send_to_peer(peer, &ServerMsg::Answer { sdp });
        if let Some(id) = id {
            self.send_to_peer(peer, &ServerMsg::Ack { id });
        }
        Ok(())
    }

    fn answer(&mut self, now: Instant, peer: PeerId, sdp: String) -> anyhow::Result<()> {
        let Some(m) = self.members.get_mut(&peer) else { return Ok(()) };
        let Some(conn) = m.subscribe else { return Ok(()) };
        m.offering = false;
        if let Some(c) = self.conns[conn].as_mut() {
            c.pc.set_remote_description(now, RTCSessionDescription::answer(sdp)?)?;
        }
        self.dirty.push(conn);
        for s in 0..self.sources.len() {
            for i in 0..self.sources[s].subs.len() {
                let sub = &mut self.sources[s].subs[i];
                if sub.peer == peer && sub.offered && !sub.ready {
                    sub.ready = true;
                    self.retarget(now, s, i);
                }
            }
        }
        Ok(())
    }

    /// Adds source `s` to `peer`'s `sub` connection (an offer follows).
    fn subscribe(&mut self, now: Instant, peer: PeerId, s: usize) -> anyhow::Result<()> {
        let Some(m) = self.members.get(&peer) else { return Ok(()) };
        let conn = match m.subscribe {
            Some(c) => c,
            None => {
                let c = self.new_conn(now, peer, Pc::Sub)?;
                if let Some(m) = self.members.get_mut(&peer) {
                    m.subscribe = Some(c);
                }
                c
            }
        };
        let (opus, vp8) = codecs();
        let src = &self.sources[s];
        let (kind, codec) =
            if src.media == Media::Audio { (RtpCodecKind::Audio, opus) } else { (RtpCodecKind::Video, vp8) };
        let ssrc = rand::random::<u32>();
        let track = MediaStreamTrack::new(
            src.id.clone(),
            src.id.clone(),
            src.id.clone(),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                codec: codec.rtp_codec.clone(),
                ..Default::default()
            }],
        );
        let Some(c) = self.conns[conn].as_mut() else { return Ok(()) };
        let sender = c.pc.add_track(track)?;
        let fwd = if src.media == Media::Audio { Forward::audio(48000) } else { Forward::video(90000) };
        self.sources[s].subs.push(Sub {
            peer,
            conn,
            sender,
            ssrc,
            payload_type: codec.payload_type,
            fwd,
            offered: false,
            ready: false,
        });
        if let Some(m) = self.members.get_mut(&peer) {
            m.renegotiate = true;
        }
        Ok(())
    }

    /// Sends an offer on every `sub` connection whose tracks changed and that has no
    /// offer waiting for its answer.
    fn offers(&mut self, now: Instant) {
        let cand = match self.host_candidate() {
            Ok(c) => c,
            Err(_) => return,
        };
        let peers: Vec<PeerId> =
            self.members.iter().filter(|(_, m)| m.renegotiate && !m.offering).map(|(p, _)| *p).collect();
        for peer in peers {
            let Some(m) = self.members.get_mut(&peer) else { continue };
            let Some(conn) = m.subscribe else { continue };
            let first = !m.sub_candidate;
            m.sub_candidate = true;
            m.renegotiate = false;
            m.offering = true;
            let Some(c) = self.conns[conn].as_mut() else { continue };
            if first {
                let _ = c.pc.add_local_candidate(cand.clone());
            }
            let offer = match c.pc.create_offer(None) {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(peer, error = %e, "offer failed");
                    continue;
                }
            };
            if let Err(e) = c.pc.set_local_description(now, offer) {
                tracing::warn!(peer, error = %e, "offer not applied");
                continue;
            }
            let sdp = c.pc.local_description().map(|d| d.sdp).unwrap_or_default();
            self.dirty.push(conn);
            self.send_to_peer(peer, &ServerMsg::Offer { sdp });
            for src in &mut self.sources {
                for sub in src.subs.iter_mut().filter(|x| x.peer == peer) {
                    sub.offered = true;
                }
            }
        }
    }

    fn leave(&mut self, peer: PeerId) {
        let Some(m) = self.members.remove(&peer) else { return };
        for s in &mut self.sources {
            s.subs.retain(|x| x.peer != peer);
        }
        // A source's index is held by `by_ssrc`: the departed publisher's sources are
        // emptied, not removed (the spike's rooms end with the run).
        for s in self.sources.iter_mut().filter(|s| s.peer == peer) {
            s.subs.clear();
            s.layers = [None, None, None];
            s.gone = true;
        }
        for c in [m.publish, m.subscribe].into_iter().flatten() {
            self.close_conn(c);
        }
    }

    fn datagram(&mut self, now: Instant, from: SocketAddr, b: &[u8]) {
        self.stats.datagrams_in.fetch_add(1, Ordering::Relaxed);
        let Some(id) = self.router.route(from, b) else {
            self.stats.unrouted.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let local = self.local;
        let Some(c) = self.conns[id].as_mut() else { return };
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: local,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(b),
        };
        if let Err(e) = c.pc.handle_read(msg) {
            tracing::debug!(error = %e, "read refused");
        }
        self.drain(now, id);
    }

    /// The GCC estimates, once a second (rtc reports them in its statistics).
    fn estimates(&mut self, now: Instant) {
        if !self.bwe || now < self.next_stats {
            return;
        }
        self.next_stats = now + Duration::from_secs(1);
        let mut found = Vec::new();
        for c in self.conns.iter_mut().flatten().filter(|c| c.kind == Pc::Sub) {
            let report = c.pc.get_stats(now, StatsSelector::None);
            let best = report
                .iter()
                .filter_map(|e| match e {
                    RTCStatsReportEntry::OutboundRtp(o) => Some(o.target_bitrate),
                    _ => None,
                })
                .fold(0.0f64, f64::max);
            if best > 0.0 {
                found.push((c.peer, best as u64));
            }
        }
        if let Ok(mut e) = self.stats.estimates.lock() {
            e.extend(found);
        }
    }

    fn timeouts(&mut self, now: Instant) {
        self.estimates(now);
        for id in 0..self.conns.len() {
            let Some(c) = self.conns[id].as_mut() else { continue };
            if c.deadline.is_some_and(|d| d <= now) {
                let _ = c.pc.handle_timeout(now);
                self.dirty.push(id);
            }
        }
        self.drain_dirty(now);
    }

    fn drain_dirty(&mut self, now: Instant) {
        while let Some(id) = self.dirty.pop() {
            self.drain(now, id);
        }
    }

    /// Every output of connection `id`: datagrams, events, media.
    fn drain(&mut self, now: Instant, id: ConnId) {
        let mut events = Vec::new();
        let mut reads = Vec::new();
        {
            let Some(c) = self.conns[id].as_mut() else { return };
            loop {
                let mut any = false;
                while let Some(w) = c.pc.poll_write() {
                    self.wire.push(w.transport.peer_addr, w.message.freeze());
                    any = true;
                }
                while let Some(e) = c.pc.poll_event() {
                    events.push(e);
                    any = true;
                }
                while let Some(r) = c.pc.poll_read() {
                    reads.push(r.message);
                    any = true;
                }
                if !any {
                    break;
                }
            }
            c.deadline = c.pc.poll_timeout();
        }
        let (peer, kind) = match self.conns[id].as_ref() {
            Some(c) => (c.peer, c.kind),
            None => return,
        };
        for e in events {
            self.event(now, id, peer, kind, e);
        }
        for r in reads {
            match r {
                RTCMessage::RtpPacket(track, p) if kind == Pc::Pub => self.rtp(now, id, peer, &track, p),
                RTCMessage::RtcpPacket(track, pkts) if kind == Pc::Sub => {
                    let asks = pkts
                        .iter()
                        .any(|p| p.as_any().is::<PictureLossIndication>() || p.as_any().is::<FullIntraRequest>());
                    if asks
                        && let Some(s) = self.sources.iter().position(|s| s.id == track)
                        && let Some(i) = self.sources[s].subs.iter().position(|x| x.peer == peer)
                    {
                        let f = &self.sources[s].subs[i].fwd;
                        if let Some(l) = f.current().or(f.target()) {
                            self.pli(now, s, l);
                        }
                    }
                }
                _ => {}
            }
        }
        if !self.dirty.is_empty() {
            self.drain_dirty(now);
        }
    }

    fn event(&mut self, now: Instant, id: ConnId, peer: PeerId, kind: Pc, e: RTCPeerConnectionEvent) {
        match e {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(s) => {
                tracing::debug!(peer, ?kind, state = %s, "connection state");
                match s {
                    RTCPeerConnectionState::Connected => {
                        self.stats.connected.fetch_add(1, Ordering::Relaxed);
                        if kind == Pc::Sub {
                            if let Some(m) = self.members.get_mut(&peer) {
                                m.sub_connected = true;
                            }
                            for s in 0..self.sources.len() {
                                if let Some(i) = self.sources[s].subs.iter().position(|x| x.peer == peer) {
                                    self.retarget(now, s, i);
                                }
                            }
                        }
                    }
                    RTCPeerConnectionState::Failed => {
                        self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) if kind == Pc::Pub => {
                let (room, media) = match self.members.get(&peer) {
                    Some(m) => (m.room.clone(), m.labels.get(&init.track_id).copied()),
                    None => return,
                };
                let receiver = init.receiver_id;
                let kind_media = media.unwrap_or_else(|| {
                    let is_audio = self.conns[id]
                        .as_mut()
                        .and_then(|c| c.pc.rtp_receiver(receiver).map(|r| r.track().kind() == RtpCodecKind::Audio))
                        .unwrap_or(false);
                    if is_audio { Media::Audio } else { Media::Video }
                });
                let sid = signal::source_id(peer, kind_media);
                let layer = init.rid.as_deref().map(rid_rank).unwrap_or(0);
                let s = match self.sources.iter().position(|s| s.id == sid && s.conn == id && !s.gone) {
                    Some(s) => s,
                    None => {
                        self.sources.push(Source {
                            id: sid.clone(),
                            peer,
                            room: room.clone(),
                            media: kind_media,
                            conn: id,
                            layers: [None, None, None],
                            simulcast: init.rid.is_some(),
                            subs: Vec::new(),
                            gone: false,
                        });
                        let s = self.sources.len() - 1;
                        let others: Vec<PeerId> = self
                            .members
                            .iter()
                            .filter(|(p, m)| **p != peer && m.room == room)
                            .map(|(p, _)| *p)
                            .collect();
                        for o in others {
                            if let Err(e) = self.subscribe(now, o, s) {
                                tracing::warn!(peer = o, error = %e, "subscribe failed");
                            }
                        }
                        self.offers(now);
                        s
                    }
                };
                self.sources[s].layers[layer] = Some(Layer { ssrc: init.ssrc, receiver, last_pli: None });
                self.by_ssrc.insert((id, init.ssrc), (s, layer));
                for i in 0..self.sources[s].subs.len() {
                    self.retarget(now, s, i);
                }
            }
            _ => {}
        }
    }

    /// Chooses subscriber `i`'s layer of source `s` (the middle one when there are
    /// three, as `preau-sfu` gives a pupil's tile), asking for a keyframe on a change.
    fn retarget(&mut self, now: Instant, s: usize, i: usize) {
        let src = &self.sources[s];
        if src.media == Media::Audio {
            return;
        }
        let live = self.members.get(&src.subs[i].peer).is_some_and(|m| m.sub_connected);
        if !live || !src.subs[i].ready {
            return;
        }
        let target = crate::wanted_layer(src.simulcast, src.layers.each_ref().map(Option::is_some));
        if self.sources[s].subs[i].fwd.set_target(target)
            && let Some(l) = target
        {
            self.pli(now, s, l);
        }
    }

    fn pli(&mut self, now: Instant, s: usize, l: usize) {
        let conn = self.sources[s].conn;
        let Some(layer) = self.sources[s].layers[l].as_mut() else { return };
        if !crate::pli_due(&mut layer.last_pli, now) {
            return;
        }
        let (receiver, media_ssrc) = (layer.receiver, layer.ssrc);
        if let Some(c) = self.conns[conn].as_mut()
            && let Some(mut r) = c.pc.rtp_receiver(receiver)
        {
            let _ = r.write_rtcp(now, vec![Box::new(PictureLossIndication { sender_ssrc: 0, media_ssrc })]);
            self.dirty.push(conn);
        }
    }

    /// One published packet: to every subscriber whose forward takes it.
    fn rtp(&mut self, now: Instant, conn: ConnId, _peer: PeerId, _track: &str, p: rtc::rtp::Packet) {
        self.stats.rtp_in.fetch_add(1, Ordering::Relaxed);
        let Some(&(s, layer)) = self.by_ssrc.get(&(conn, p.header.ssrc)) else { return };
        let src = &mut self.sources[s];
        let keyframe = src.media != Media::Audio && vp8_is_keyframe(&p.payload);
        let mut sent = 0;
        for sub in src.subs.iter_mut().filter(|x| x.ready) {
            let Verdict::Send { seq, ts, .. } =
                sub.fwd.on_packet(now, layer, p.header.sequence_number, p.header.timestamp, keyframe)
            else {
                continue;
            };
            let mut out = rtc::rtp::Packet { header: p.header.clone(), payload: p.payload.clone() };
            out.header.sequence_number = seq;
            out.header.timestamp = ts;
            out.header.ssrc = sub.ssrc;
            out.header.payload_type = sub.payload_type;
            out.header.extension = false;
            out.header.extensions.clear();
            out.header.padding = false;
            let Some(c) = self.conns[sub.conn].as_mut() else { continue };
            let Some(mut sender) = c.pc.rtp_sender(sub.sender) else { continue };
            if sender.write_rtp(now, out).is_ok() {
                sent += 1;
                self.dirty.push(sub.conn);
            }
        }
        self.stats.rtp_out.fetch_add(sent, Ordering::Relaxed);
    }
}

//! The spike's engine on str0m (sans-IO, RTP mode: payloads arrive and leave as shared
//! `Arc<[u8]>`): the same table, routing and forwarding as [`crate::rtc_engine`].

use crate::{Cmd, Router, Stats, Wire, rid_rank, send_to_peer};
use bytes::Bytes;
use preau_live::signal::{self, Media, Pc, PeerId, ServerMsg};
use preau_sfu::forward::{Forward, Verdict, extend_seq, vp8_is_keyframe};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use str0m::bwe::{Bitrate, BweKind};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo, Ssrc};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::sync::mpsc;

type ConnId = usize;

struct Conn {
    rtc: Rtc,
    peer: PeerId,
    kind: Pc,
    deadline: Instant,
    /// Media was written since the last drain: str0m releases queued packets when time
    /// moves (an input), so the drain first tells it the time.
    wrote: bool,
}

struct Member {
    room: String,
    out: mpsc::Sender<String>,
    publish: Option<ConnId>,
    subscribe: Option<ConnId>,
    pending: Option<SdpPendingOffer>,
    renegotiate: bool,
    sub_connected: bool,
    /// Sources added to `sub` and not yet in an offer.
    to_add: Vec<usize>,
    /// The member asked for new ICE credentials on `sub`.
    restart: bool,
    /// The first offer on `sub` was sent: the next waits until `sub` connects (a webrtc-rs
    /// 0.17 client given a second offer while its ICE is still checking answers with new
    /// ICE credentials, an ICE restart that str0m rightly refuses in an answer).
    offered: bool,
}

struct Layer {
    ssrc: Ssrc,
    last_pli: Option<Instant>,
    /// The newest extended sequence number received.
    newest: u64,
}

struct Sub {
    peer: PeerId,
    conn: ConnId,
    mid: Option<Mid>,
    payload_type: Option<Pt>,
    fwd: Forward,
    /// The last extended sequence number sent (str0m takes 64-bit sequence numbers).
    last_seq: Option<u64>,
    ready: bool,
}

struct Source {
    id: String,
    peer: PeerId,
    room: String,
    media: Media,
    conn: ConnId,
    mid: Mid,
    layers: [Option<Layer>; 3],
    simulcast: bool,
    subs: Vec<Sub>,
    /// Its publisher left: kept in place (indices are held by `by_ssrc`), never offered.
    gone: bool,
}

/// The node's peers on str0m.
pub struct Engine {
    wire: Wire,
    local: SocketAddr,
    stats: Arc<Stats>,
    conns: Vec<Option<Conn>>,
    free: Vec<ConnId>,
    router: Router,
    members: HashMap<PeerId, Member>,
    sources: Vec<Source>,
    by_ssrc: HashMap<(ConnId, Ssrc), (usize, usize)>,
    dirty: Vec<ConnId>,
    /// Connections written to since the last flush: drained once per batch of inputs,
    /// not once per published packet (telling str0m the time costs a timer pass).
    written: Vec<ConnId>,
    bwe: bool,
    /// One DTLS certificate for every connection of the node: generating one per
    /// connection was 40% of the engine's instructions in a short class (callgrind).
    cert: Option<str0m::config::DtlsCert>,
}

impl Engine {
    /// An engine sending and receiving on `wire`.
    pub fn new(wire: Wire, bwe: bool) -> Engine {
        let provider = str0m::crypto::from_feature_flags();
        let cert = provider.dtls_provider.generate_certificate();
        provider.install_process_default();
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
            written: Vec::new(),
            bwe,
            cert,
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
                    for _ in 0..crate::BATCH {
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
            self.flush_written(crate::now());
            self.wire.flush().await;
        }
    }

    fn new_conn(&mut self, now: Instant, peer: PeerId, kind: Pc) -> anyhow::Result<ConnId> {
        let estimate = self.bwe && kind == Pc::Sub;
        let mut builder = Rtc::builder().set_rtp_mode(true).set_ice_lite(true);
        if let Some(cert) = &self.cert {
            builder = builder.set_dtls_cert(cert.clone());
        }
        if estimate {
            builder = builder.enable_bwe(Some(Bitrate::kbps(300)));
        }
        let mut rtc = builder.build(now);
        if estimate {
            // Probe towards what the top layer and the audio would need.
            rtc.bwe().set_bitrate(Bitrate::kbps(100), Bitrate::mbps(2));
        }
        rtc.add_local_candidate(Candidate::host(self.local, "udp")?);
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag.clone();
        let conn = Conn { rtc, peer, kind, deadline: now, wrote: false };
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

    fn close_conn(&mut self, id: ConnId) {
        let Some(mut c) = self.conns.get_mut(id).and_then(Option::take) else { return };
        c.rtc.disconnect();
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
                    pending: None,
                    renegotiate: false,
                    sub_connected: false,
                    to_add: Vec::new(),
                    restart: false,
                    offered: false,
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
            Cmd::Publish { peer, id, sdp, .. } => self.publish(now, peer, id, sdp),
            Cmd::Answer { peer, sdp } => self.answer(now, peer, sdp),
            Cmd::Candidate { peer, pc, candidate } => {
                let conn = self.members.get(&peer).and_then(|m| if pc == Pc::Pub { m.publish } else { m.subscribe });
                if let Some(c) = conn.and_then(|c| self.conns[c].as_mut())
                    && let Ok(cand) = Candidate::from_sdp_string(&candidate.candidate)
                {
                    // ICE lite: the client's checks tell its address; its candidates are optional.
                    c.rtc.add_remote_candidate(cand);
                }
                Ok(())
            }
            Cmd::RestartIce { peer } => {
                if let Some(m) = self.members.get_mut(&peer) {
                    m.restart = true;
                    m.renegotiate = true;
                }
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
        self.drain_dirty(now);
    }

    fn publish(&mut self, now: Instant, peer: PeerId, id: Option<u64>, sdp: String) -> anyhow::Result<()> {
        let Some(m) = self.members.get(&peer) else { return Ok(()) };
        let conn = match m.publish {
            Some(c) => c,
            None => {
                let c = self.new_conn(now, peer, Pc::Pub)?;
                if let Some(m) = self.members.get_mut(&peer) {
                    m.publish = Some(c);
                }
                c
            }
        };
        let Some(c) = self.conns[conn].as_mut() else { return Ok(()) };
        let answer = c.rtc.sdp_api().accept_offer(SdpOffer::from_sdp_string(&sdp)?)?;
        // A publisher's ICE restart gives this side new credentials too.
        let ufrag = c.rtc.direct_api().local_ice_credentials().ufrag.clone();
        // A publisher's ICE restart changes it.
        self.router.add_ufrag(conn, ufrag);
        self.dirty.push(conn);
        self.send_to_peer(peer, &ServerMsg::Answer { sdp: answer.to_sdp_string() });
        if let Some(id) = id {
            self.send_to_peer(peer, &ServerMsg::Ack { id });
        }
        Ok(())
    }

    fn answer(&mut self, now: Instant, peer: PeerId, sdp: String) -> anyhow::Result<()> {
        let Some(m) = self.members.get_mut(&peer) else { return Ok(()) };
        let (Some(conn), Some(pending)) = (m.subscribe, m.pending.take()) else { return Ok(()) };
        let Some(c) = self.conns[conn].as_mut() else { return Ok(()) };
        tracing::debug!(peer, creds = ?sdp.lines().filter(|l| l.starts_with("a=ice-ufrag")).collect::<Vec<_>>(), "answer");
        if let Err(e) = c.rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&sdp)?) {
            let ufrags: Vec<&str> = sdp.lines().filter(|l| l.starts_with("a=ice-ufrag")).collect();
            tracing::warn!(peer, ?ufrags, "answer refused");
            return Err(e.into());
        }
        self.dirty.push(conn);
        for s in 0..self.sources.len() {
            for i in 0..self.sources[s].subs.len() {
                let sub = &self.sources[s].subs[i];
                if sub.peer != peer || sub.ready {
                    continue;
                }
                let Some(mid) = sub.mid else { continue };
                let want = if self.sources[s].media == Media::Audio { Codec::Opus } else { Codec::Vp8 };
                let Some(c) = self.conns[conn].as_mut() else { continue };
                let pts: Vec<Pt> = c.rtc.media(mid).map(|m| m.remote_pts().to_vec()).unwrap_or_default();
                let pt = c
                    .rtc
                    .codec_config()
                    .params()
                    .iter()
                    .find(|p| p.spec().codec == want && pts.contains(&p.pt()))
                    .map(|p| p.pt());
                let sub = &mut self.sources[s].subs[i];
                sub.payload_type = pt;
                sub.ready = pt.is_some();
                self.retarget(now, s, i);
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
        let fwd = if self.sources[s].media == Media::Audio { Forward::audio(48000) } else { Forward::video(90000) };
        self.sources[s].subs.push(Sub { peer, conn, mid: None, payload_type: None, fwd, last_seq: None, ready: false });
        if let Some(m) = self.members.get_mut(&peer) {
            m.to_add.push(s);
            m.renegotiate = true;
        }
        Ok(())
    }

    /// Sends an offer on every `sub` connection whose tracks changed and that has no
    /// offer waiting for its answer.
    fn offers(&mut self, _now: Instant) {
        let peers: Vec<PeerId> = self
            .members
            .iter()
            .filter(|(_, m)| m.renegotiate && m.pending.is_none() && (!m.offered || m.sub_connected))
            .map(|(p, _)| *p)
            .collect();
        for peer in peers {
            let Some(m) = self.members.get_mut(&peer) else { continue };
            let Some(conn) = m.subscribe else { continue };
            let adds = std::mem::take(&mut m.to_add);
            let restart = std::mem::take(&mut m.restart);
            m.renegotiate = false;
            m.offered = true;
            let Some(c) = self.conns[conn].as_mut() else { continue };
            let mut api = c.rtc.sdp_api();
            let new_ufrag = restart.then(|| api.ice_restart(true).ufrag);
            let mut mids = Vec::new();
            for &s in &adds {
                let src = &self.sources[s];
                let kind = if src.media == Media::Audio { MediaKind::Audio } else { MediaKind::Video };
                let mid = api.add_media(kind, Direction::SendOnly, Some(src.id.clone()), Some(src.id.clone()), None);
                mids.push((s, mid));
            }
            let Some((offer, pending)) = api.apply() else { continue };
            if let Some(u) = new_ufrag {
                self.router.add_ufrag(conn, u);
            }
            for (s, mid) in mids {
                if let Some(sub) = self.sources[s].subs.iter_mut().find(|x| x.peer == peer) {
                    sub.mid = Some(mid);
                }
            }
            if let Some(m) = self.members.get_mut(&peer) {
                m.pending = Some(pending);
            }
            self.dirty.push(conn);
            let sdp = offer.to_sdp_string();
            tracing::debug!(peer, creds = ?sdp.lines().filter(|l| l.starts_with("a=ice-ufrag") || l.starts_with("a=mid")).collect::<Vec<_>>(), "offer");
            self.send_to_peer(peer, &ServerMsg::Offer { sdp });
        }
    }

    fn leave(&mut self, peer: PeerId) {
        let Some(m) = self.members.remove(&peer) else { return };
        for s in &mut self.sources {
            s.subs.retain(|x| x.peer != peer);
        }
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
        let Ok(contents) = b.try_into() else { return };
        let input = Input::Receive(now, Receive { proto: Protocol::Udp, source: from, destination: local, contents });
        if let Err(e) = c.rtc.handle_input(input) {
            tracing::debug!(error = %e, "read refused");
        }
        self.drain(now, id);
    }

    fn timeouts(&mut self, now: Instant) {
        for id in 0..self.conns.len() {
            let Some(c) = self.conns[id].as_mut() else { continue };
            if c.deadline <= now {
                let _ = c.rtc.handle_input(Input::Timeout(now));
                self.dirty.push(id);
            }
        }
        self.drain_dirty(now);
    }

    fn flush_written(&mut self, now: Instant) {
        for id in std::mem::take(&mut self.written) {
            self.drain(now, id);
        }
    }

    fn drain_dirty(&mut self, now: Instant) {
        while let Some(id) = self.dirty.pop() {
            self.drain(now, id);
        }
    }

    /// Every output of connection `id` until it asks for a timeout.
    fn drain(&mut self, now: Instant, id: ConnId) {
        let mut events = Vec::new();
        {
            let Some(c) = self.conns[id].as_mut() else { return };
            if std::mem::take(&mut c.wrote) {
                let _ = c.rtc.handle_input(Input::Timeout(now));
            }
            loop {
                match c.rtc.poll_output() {
                    Ok(Output::Transmit(t)) => self.wire.push(t.destination, Bytes::from(Vec::from(t.contents))),
                    Ok(Output::Timeout(t)) => {
                        c.deadline = t;
                        break;
                    }
                    Ok(Output::Event(e)) => events.push(e),
                    Err(e) => {
                        tracing::debug!(error = %e, "peer failed");
                        self.stats.failed.fetch_add(1, Ordering::Relaxed);
                        c.deadline = now + Duration::from_secs(3600);
                        break;
                    }
                }
            }
        }
        let (peer, kind) = match self.conns[id].as_ref() {
            Some(c) => (c.peer, c.kind),
            None => return,
        };
        for e in events {
            self.event(now, id, peer, kind, e);
        }
        if !self.dirty.is_empty() {
            self.drain_dirty(now);
        }
    }

    fn event(&mut self, now: Instant, id: ConnId, peer: PeerId, kind: Pc, e: Event) {
        match e {
            Event::IceConnectionStateChange(st) => tracing::debug!(peer, ?kind, ?st, "ice"),
            Event::Connected => {
                tracing::debug!(peer, ?kind, "connected");
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
                    self.offers(now);
                }
            }
            Event::MediaAdded(added) if kind == Pc::Pub => {
                let Some(room) = self.members.get(&peer).map(|m| m.room.clone()) else { return };
                let media = if added.kind == MediaKind::Audio { Media::Audio } else { Media::Video };
                self.sources.push(Source {
                    id: signal::source_id(peer, media),
                    peer,
                    room: room.clone(),
                    media,
                    conn: id,
                    mid: added.mid,
                    layers: [None, None, None],
                    simulcast: added.simulcast.is_some(),
                    subs: Vec::new(),
                    gone: false,
                });
                let s = self.sources.len() - 1;
                let others: Vec<PeerId> =
                    self.members.iter().filter(|(p, m)| **p != peer && m.room == room).map(|(p, _)| *p).collect();
                for o in others {
                    if let Err(e) = self.subscribe(now, o, s) {
                        tracing::warn!(peer = o, error = %e, "subscribe failed");
                    }
                }
                self.offers(now);
            }
            Event::RtpPacket(p) if kind == Pc::Pub => self.rtp(now, id, p),
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
                if let Ok(mut e) = self.stats.estimates.lock() {
                    e.insert(peer, estimate.as_u64());
                }
            }
            Event::KeyframeRequest(req) if kind == Pc::Sub => {
                let found = self.sources.iter().enumerate().find_map(|(s, src)| {
                    src.subs.iter().position(|x| x.peer == peer && x.mid == Some(req.mid)).map(|i| (s, i))
                });
                if let Some((s, i)) = found {
                    let f = &self.sources[s].subs[i].fwd;
                    if let Some(l) = f.current().or(f.target()) {
                        self.pli(now, s, l);
                    }
                }
            }
            _ => {}
        }
    }

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
        let ssrc = layer.ssrc;
        if let Some(c) = self.conns[conn].as_mut() {
            let mut api = c.rtc.direct_api();
            if let Some(rx) = api.stream_rx(&ssrc) {
                rx.request_keyframe(KeyframeRequestKind::Pli);
                self.dirty.push(conn);
            }
        }
    }

    /// One published packet: to every subscriber whose forward takes it.
    fn rtp(&mut self, now: Instant, conn: ConnId, p: str0m::rtp::RtpPacket) {
        self.stats.rtp_in.fetch_add(1, Ordering::Relaxed);
        let ssrc = p.header.ssrc;
        let (s, layer) = match self.by_ssrc.get(&(conn, ssrc)) {
            Some(&x) => x,
            None => {
                // A new stream: its mid and rid say which source and layer it is.
                let Some(c) = self.conns[conn].as_mut() else { return };
                let mut api = c.rtc.direct_api();
                let Some(rx) = api.stream_rx(&ssrc) else { return };
                let (mid, rid) = (rx.mid(), rx.rid());
                let Some(s) = self.sources.iter().position(|x| x.conn == conn && x.mid == mid && !x.gone) else {
                    return;
                };
                let layer = rid.map(|r| rid_rank(&r.to_string())).unwrap_or(0);
                self.sources[s].layers[layer] = Some(Layer { ssrc, last_pli: None, newest: 0 });
                self.by_ssrc.insert((conn, ssrc), (s, layer));
                for i in 0..self.sources[s].subs.len() {
                    self.retarget(now, s, i);
                }
                (s, layer)
            }
        };
        let src = &mut self.sources[s];
        let mut late = false;
        if let Some(l) = src.layers[layer].as_mut() {
            late = *p.seq_no < l.newest;
            l.newest = l.newest.max(*p.seq_no);
        }
        if late {
            self.stats.rtp_in_late.fetch_add(1, Ordering::Relaxed);
        }
        let keyframe = src.media != Media::Audio && vp8_is_keyframe(&p.payload);
        let mut sent = 0;
        for sub in src.subs.iter_mut().filter(|x| x.ready) {
            let Verdict::Send { seq, ts, .. } =
                sub.fwd.on_packet(now, layer, p.header.sequence_number, p.header.timestamp, keyframe)
            else {
                continue;
            };
            let (Some(mid), Some(pt)) = (sub.mid, sub.payload_type) else { continue };
            let seq_no: SeqNo = extend_seq(&mut sub.last_seq, seq).into();
            let Some(c) = self.conns[sub.conn].as_mut() else { continue };
            let mut api = c.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(mid, None) else { continue };
            let w =
                RtpWrite::new(pt, seq_no, ts, p.timestamp, p.payload.clone()).marker(p.header.marker).nackable(true);
            tx.write_rtp(w);
            if !c.wrote {
                c.wrote = true;
                self.written.push(sub.conn);
            }
            sent += 1;
        }
        self.stats.rtp_out.fetch_add(sent, Ordering::Relaxed);
        if late {
            self.stats.rtp_out_late.fetch_add(sent, Ordering::Relaxed);
        }
    }
}

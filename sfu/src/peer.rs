//! The peer task: one per member, owning the member's two peer connections (`pub`,
//! which the browser offers, and `sub`, which the SFU offers through its
//! [`Negotiator`]) and its signaling WebSocket. It `select!`s on the room's commands,
//! webrtc-rs's callbacks and the socket; room commands go to the room task.

use crate::admission::{self, Admitted};
use crate::error::{bad_sdp, internal};
use crate::media::{AUDIO_LEVEL_URI, Source, extension_id};
use crate::metrics as m;
use crate::negotiator::Negotiator;
use crate::node::Sfu;
use crate::room::{Media, PeerId};
use crate::room_task::{PeerCmd, RoomMsg, RoomRef, json};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use preau_live::signal::{self, Candidate, ClientCmd, Pc, ServerMsg, SignalCode, SignalError};
use preau_proto::close;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use tokio::sync::{mpsc, oneshot};
use webrtc::ice_transport::ice_candidate::RTCIceCandidateInit;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::offer_answer_options::RTCOfferOptions;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::rtp_transceiver::rtp_codec::RTPCodecType;
use webrtc::rtp_transceiver::rtp_sender::RTCRtpSender;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;

/// Messages waiting for the socket writer; the peer task waits when it is full.
const OUT_QUEUE: usize = 256;
/// webrtc-rs callbacks waiting for the peer task.
const INTERNAL_QUEUE: usize = 256;
/// Candidates kept that came before the `publish` offer they belong to.
const EARLY_CANDIDATES: usize = 64;

/// What webrtc-rs's callbacks tell the peer task.
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
    negotiator: Negotiator,
    /// Candidates that came before the `publish` offer they belong to (a browser starts
    /// trickling as soon as it sets its local description).
    early: Vec<RTCIceCandidateInit>,
}

fn error_msg(id: Option<u64>, e: SignalError) -> Message {
    metrics::counter!(m::ERRORS, "code" => e.code.as_str()).increment(1);
    Message::Text(json(&ServerMsg::Error { id, code: e.code, message: e.message }).as_ref().into())
}

fn room_ended() -> SignalError {
    SignalError::new(SignalCode::RoomEnded, "the class has ended")
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

    /// The kinds a `publish` offer adds: those named in `tracks`, or, when it names
    /// none, what its SDP sends.
    fn offered_kinds(
        offer: &RTCSessionDescription,
        tracks: &BTreeMap<String, Media>,
    ) -> Result<Vec<Media>, SignalError> {
        let mut kinds: Vec<Media> = tracks.values().copied().collect();
        let parsed = offer.unmarshal().map_err(|e| bad_sdp("offer", e))?;
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
        Ok(kinds)
    }

    async fn pub_pc(&mut self) -> Result<Arc<RTCPeerConnection>, SignalError> {
        if let Some(pc) = &self.publish {
            return Ok(pc.clone());
        }
        let pc = Arc::new(
            self.sfu
                .engines
                .publish
                .new_peer_connection(RTCConfiguration::default())
                .await
                .map_err(|e| internal("new pub connection", e))?,
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
                tokio::spawn(source.read_layer(track, levels, room.closed.clone()));
            })
        }));
        self.publish = Some(pc.clone());
        Ok(pc)
    }

    async fn publish(&mut self, sdp: String, tracks: BTreeMap<String, Media>) -> Result<(), SignalError> {
        let offer = RTCSessionDescription::offer(sdp).map_err(|e| bad_sdp("offer", e))?;
        // The grants checked are those of the tracks this offer adds (named in `tracks`);
        // an offer naming none is judged by what its SDP sends. A track whose grant is
        // withdrawn later is dropped packet by packet, whatever the browser does.
        let kinds = PeerTask::offered_kinds(&offer, &tracks)?;
        match self.ask(|reply| RoomMsg::MayPublish { peer: self.peer, media: kinds, reply }).await {
            Some(r) => r?,
            None => return Err(room_ended()),
        }
        self.labels.lock().extend(tracks);
        let pc = self.pub_pc().await?;
        pc.set_remote_description(offer).await.map_err(|e| bad_sdp("offer", e))?;
        for c in std::mem::take(&mut self.early) {
            let _ = pc.add_ice_candidate(c).await;
        }
        let answer = pc.create_answer(None).await.map_err(|e| bad_sdp("offer", e))?;
        pc.set_local_description(answer).await.map_err(|e| internal("set local answer", e))?;
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
        tokio::spawn(source.clone().read_rtcp(sender.clone(), self.peer, self.estimate.clone()));
        source.subscribe(self.peer, track, !(forwarded && self.sub_connected), self.estimate.clone()).await;
        self.receiving.insert(source.id.clone(), (source.clone(), forwarded));
        self.senders.insert(source.id.clone(), sender);
        self.negotiator.tracks_changed();
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
            self.negotiator.tracks_changed();
        }
    }

    /// Offers on `sub` when the negotiator says so.
    async fn negotiate(&mut self) {
        let Some(pc) = self.subscribe.clone() else { return };
        let Some(plan) = self.negotiator.poll_offer() else { return };
        let made = async {
            let offer =
                pc.create_offer(Some(RTCOfferOptions { ice_restart: plan.ice_restart, ..Default::default() })).await?;
            pc.set_local_description(offer).await?;
            Ok::<_, webrtc::Error>(pc.local_description().await.map(|d| d.sdp).unwrap_or_default())
        };
        match made.await {
            Ok(sdp) => self.text(&ServerMsg::Offer { sdp }).await,
            Err(e) => {
                tracing::warn!(peer = self.peer, error = %e, "renegotiation failed; will try again");
                self.negotiator.offer_failed(plan);
            }
        }
    }

    async fn on_client(&mut self, cmd: ClientCmd) -> Result<(), SignalError> {
        match cmd {
            ClientCmd::Join { .. } => Err(SignalError::new(SignalCode::AlreadyJoined, "already in this room")),
            ClientCmd::Publish { sdp, tracks } => self.publish(sdp, tracks).await,
            ClientCmd::Answer { sdp } => {
                let no_offer = || SignalError::new(SignalCode::NoOffer, "no offer to answer");
                let pc = self.subscribe.clone().ok_or_else(no_offer)?;
                self.negotiator.handle_answer()?;
                let d = RTCSessionDescription::answer(sdp).map_err(|e| bad_sdp("answer", e))?;
                pc.set_remote_description(d).await.map_err(|e| bad_sdp("answer", e))?;
                self.negotiator.answer_applied();
                Ok(())
            }
            ClientCmd::Candidate { pc, candidate } => {
                let init = RTCIceCandidateInit::from(candidate);
                let target = match pc {
                    Pc::Pub => self.publish.clone(),
                    Pc::Sub => self.subscribe.clone(),
                };
                match target {
                    Some(t) if t.remote_description().await.is_some() => t.add_ice_candidate(init).await.map_err(|e| {
                        tracing::debug!(error = %e, "unusable candidate");
                        SignalError::new(SignalCode::BadCandidate, "the candidate could not be used")
                    }),
                    _ if pc == Pc::Pub && self.early.len() < EARLY_CANDIDATES => {
                        self.early.push(init);
                        Ok(())
                    }
                    _ => Err(SignalError::new(SignalCode::NoConnection, "that connection is not negotiated yet")),
                }
            }
            ClientCmd::RestartIce => {
                self.negotiator.restart_ice();
                Ok(())
            }
            ClientCmd::Leave => Ok(()),
            cmd => match self.ask(|reply| RoomMsg::Control { peer: self.peer, cmd, reply }).await {
                Some(r) => r,
                None => Err(room_ended()),
            },
        }
    }

    /// A command from the room task; `Some((code, reason))` when the session must end.
    async fn on_room(&mut self, cmd: Option<PeerCmd>) -> Option<(u16, String)> {
        match cmd {
            Some(PeerCmd::Text(t)) => {
                let _ = self.out.send(Message::Text(t.as_ref().into())).await;
            }
            Some(PeerCmd::Subscribe { source, forwarded }) => {
                if let Err(e) = self.add_subscription(source, forwarded).await {
                    tracing::warn!(peer = self.peer, error = %e, "subscription failed");
                }
            }
            Some(PeerCmd::Unsubscribe(id)) => self.remove_subscription(&id).await,
            Some(PeerCmd::Forward(id, on)) => {
                if let Some((source, fwd)) = self.receiving.get_mut(&id) {
                    *fwd = on;
                    if self.sub_connected {
                        source.set_forwarded(self.peer, on).await;
                    }
                }
            }
            Some(PeerCmd::Close { code, reason }) => return Some((code, reason)),
            None => return Some((close::SLOW_CONSUMER, "dropped by the room".into())),
        }
        None
    }

    async fn on_internal(&mut self, i: Option<Internal>) {
        match i {
            Some(Internal::Candidate(pc, candidate)) => self.text(&ServerMsg::Candidate { pc, candidate }).await,
            Some(Internal::Connected(Pc::Sub)) => self.sub_up().await,
            Some(Internal::Connected(Pc::Pub)) | None => {}
            Some(Internal::Failed(pc)) => {
                tracing::info!(peer = self.peer, ?pc, "peer connection failed");
                let e = SignalError::new(
                    SignalCode::ConnectionFailed,
                    format!("the {pc:?} connection failed: restart ICE"),
                );
                self.text(&ServerMsg::Error { id: None, code: e.code, message: e.message }).await;
            }
        }
    }

    /// A text message from the client; `true` when the client leaves.
    async fn on_text(&mut self, text: &str) -> bool {
        match signal::decode(text) {
            Ok(msg) => {
                let leaving = matches!(msg.cmd, ClientCmd::Leave);
                match self.on_client(msg.cmd).await {
                    Ok(()) => {
                        if let Some(id) = msg.id {
                            self.text(&ServerMsg::Ack { id }).await;
                        }
                    }
                    Err(e) => {
                        let _ = self.out.send(error_msg(msg.id, e)).await;
                    }
                }
                leaving
            }
            Err((id, e)) => {
                let _ = self.out.send(error_msg(id, e)).await;
                false
            }
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

async fn close_ws(out: &mpsc::Sender<Message>, code: u16, reason: &str) {
    let _ = out.send(Message::Close(Some(CloseFrame { code, reason: reason.to_owned().into() }))).await;
}

/// Runs one member's session: admission, then the peer task until the member leaves,
/// is removed, or the class ends.
pub(crate) async fn session(sfu: Arc<Sfu>, ws: WebSocket, token: Option<String>) {
    let (mut sink, mut stream) = ws.split();
    let (out, mut out_rx) = mpsc::channel::<Message>(OUT_QUEUE);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            let is_close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || is_close {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let Admitted { peer, role, key, room, rx: mut prx, join_id } =
        match admission::admit(&sfu, token, &mut stream).await {
            Ok(a) => a,
            Err(r) => {
                let _ = out.send(error_msg(r.id, r.error)).await;
                close_ws(&out, r.close, r.reason).await;
                drop(out);
                let _ = writer.await;
                return;
            }
        };
    sfu.peer_joined();
    tracing::info!(room = %key, peer, role = ?role, "joined");
    let (itx, mut irx) = mpsc::channel::<Internal>(INTERNAL_QUEUE);
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
        negotiator: Negotiator::default(),
        early: Vec::new(),
    };
    // Welcome goes before any room event: room events wait in `prx` until the loop.
    let ice_servers =
        crate::turn::ice_servers(&sfu.cfg.ice_servers, sfu.cfg.turn_secret.as_deref(), preau_auth::now_secs());
    p.text(&ServerMsg::Welcome { peer, role, ice_servers }).await;
    if let Some(id) = join_id {
        p.text(&ServerMsg::Ack { id }).await;
    }
    let (code, reason) = loop {
        tokio::select! {
            biased;
            cmd = prx.recv() => if let Some(end) = p.on_room(cmd).await { break end },
            i = irx.recv() => p.on_internal(i).await,
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(t))) => if p.on_text(&t).await { break (close::NORMAL, "left".into()) },
                Some(Ok(Message::Binary(_))) => {
                    let _ = out.send(error_msg(None, SignalError::new(SignalCode::BadFrame, "signaling is JSON text"))).await;
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break (close::NORMAL, String::new()),
                Some(Ok(_)) => {}
            },
        }
        p.negotiate().await;
    };
    let _ = room.tx.send(RoomMsg::Leave { peer }).await;
    p.close_all().await;
    if !reason.is_empty() {
        close_ws(&out, code, &reason).await;
    }
    drop(out);
    drop(p);
    let _ = writer.await;
    sfu.peer_left();
    tracing::info!(room = %key, peer, "left");
}

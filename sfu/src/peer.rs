//! The peer task: one per member, owning the member's signaling WebSocket. Its two
//! connections (`pub`, which the browser offers, and `sub`, which the SFU offers through
//! its [`Negotiator`]) live on one engine shard ([`crate::engine`]); the task `select!`s
//! on the room's commands, the shard's notices and the socket, sends room commands to
//! the room task and connection work to the shard.

use crate::admission::{self, Admitted};
use crate::engine::{Internal, ShardCmd};
use crate::error::bad_sdp;
use crate::media::Source;
use crate::metrics as m;
use crate::negotiator::Negotiator;
use crate::node::Sfu;
use crate::room::{Media, PeerId};
use crate::room_task::{PeerCmd, RoomMsg, RoomRef, json};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use preau_live::signal::{self, ClientCmd, Pc, ServerMsg, SignalCode, SignalError};
use preau_proto::close;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Messages waiting for the socket writer; the peer task waits when it is full.
const OUT_QUEUE: usize = 256;
/// Shard notices waiting for the peer task.
const INTERNAL_QUEUE: usize = 64;
/// Candidates kept that came before the `publish` offer they belong to.
const EARLY_CANDIDATES: usize = 64;

struct PeerTask {
    sfu: Arc<Sfu>,
    peer: PeerId,
    shard: usize,
    room: Arc<RoomRef>,
    out: mpsc::Sender<Message>,
    /// What this member receives, and whether the room forwards it (last-N).
    receiving: HashMap<String, (Arc<Source>, bool)>,
    /// Whether `pub` was negotiated (candidates for it are applied, not kept).
    published: bool,
    negotiator: Negotiator,
    /// Candidates that came before the `publish` offer they belong to (a browser starts
    /// trickling as soon as it sets its local description).
    early: Vec<String>,
}

fn error_msg(id: Option<u64>, e: SignalError) -> Message {
    metrics::counter!(m::ERRORS, "code" => e.code.as_str()).increment(1);
    Message::Text(json(&ServerMsg::Error { id, code: e.code, message: e.message }).as_ref().into())
}

fn room_ended() -> SignalError {
    SignalError::new(SignalCode::RoomEnded, "the class has ended")
}

fn engine_stopped() -> SignalError {
    SignalError::new(SignalCode::Internal, "the media engine is stopping")
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

    /// The kinds a `publish` offer adds: those named in `tracks`, or, when it names
    /// none, what its SDP sends.
    fn offered_kinds(sdp: &str, tracks: &BTreeMap<String, Media>) -> Result<Vec<Media>, SignalError> {
        if !sdp.starts_with("v=0") {
            return Err(bad_sdp("offer", "not an SDP session description"));
        }
        let mut kinds: Vec<Media> = tracks.values().copied().collect();
        if tracks.is_empty() {
            let mut section: Option<&str> = None;
            let mut sends = false;
            let close = |section: Option<&str>, sends: bool, kinds: &mut Vec<Media>| match section {
                Some("audio") if sends => kinds.push(Media::Audio),
                Some("video") if sends => kinds.push(Media::Video),
                _ => {}
            };
            for line in sdp.lines().map(str::trim_end) {
                if let Some(rest) = line.strip_prefix("m=") {
                    close(section, sends, &mut kinds);
                    section = rest.split(' ').next();
                    sends = false;
                } else if line == "a=sendonly" || line == "a=sendrecv" {
                    sends = true;
                }
            }
            close(section, sends, &mut kinds);
        }
        kinds.sort_by_key(|m| *m as u8);
        kinds.dedup();
        Ok(kinds)
    }

    async fn publish(&mut self, sdp: String, tracks: BTreeMap<String, Media>) -> Result<(), SignalError> {
        // The grants checked are those of the tracks this offer adds (named in `tracks`);
        // an offer naming none is judged by what its SDP sends. A track whose grant is
        // withdrawn later is dropped packet by packet, whatever the browser does.
        let kinds = PeerTask::offered_kinds(&sdp, &tracks)?;
        match self.ask(|reply| RoomMsg::MayPublish { peer: self.peer, media: kinds, reply }).await {
            Some(r) => r?,
            None => return Err(room_ended()),
        }
        let early = std::mem::take(&mut self.early);
        let (peer, labels) = (self.peer, tracks);
        let sdp = self
            .sfu
            .engine
            .ask(self.shard, |reply| ShardCmd::Publish { peer, sdp, labels, early, reply })
            .await
            .ok_or_else(engine_stopped)??;
        self.published = true;
        self.text(&ServerMsg::Answer { sdp }).await;
        Ok(())
    }

    fn add_subscription(&mut self, source: Arc<Source>, forwarded: bool, rank: u8) {
        source.add_subscriber(self.peer, self.shard);
        let cmd = ShardCmd::Subscribe { peer: self.peer, source: source.clone(), forwarded, rank };
        self.sfu.engine.send(self.shard, cmd);
        self.receiving.insert(source.id.clone(), (source, forwarded));
        self.negotiator.tracks_changed();
    }

    fn remove_subscription(&mut self, id: &str) {
        if let Some((source, _)) = self.receiving.remove(id) {
            // Tells the shard too, unless the room already did.
            source.unsubscribe(self.peer);
            self.negotiator.tracks_changed();
        }
    }

    /// Offers on `sub` when the negotiator says so.
    async fn negotiate(&mut self) {
        let Some(plan) = self.negotiator.poll_offer() else { return };
        let (peer, ice_restart) = (self.peer, plan.ice_restart);
        match self.sfu.engine.ask(self.shard, |reply| ShardCmd::Offer { peer, ice_restart, reply }).await {
            Some(Ok(Some(sdp))) => self.text(&ServerMsg::Offer { sdp }).await,
            // Nothing to offer after all (a track added and removed before it was offered).
            Some(Ok(None)) => self.negotiator.answer_applied(),
            Some(Err(e)) => {
                tracing::warn!(peer = self.peer, error = %e.message, "renegotiation failed; will try again");
                self.negotiator.offer_failed(plan);
            }
            None => self.negotiator.offer_failed(plan),
        }
    }

    async fn on_client(&mut self, cmd: ClientCmd) -> Result<(), SignalError> {
        let peer = self.peer;
        match cmd {
            ClientCmd::Join { .. } => Err(SignalError::new(SignalCode::AlreadyJoined, "already in this room")),
            ClientCmd::Publish { sdp, tracks } => self.publish(sdp, tracks).await,
            ClientCmd::Answer { sdp } => {
                self.negotiator.handle_answer()?;
                self.sfu
                    .engine
                    .ask(self.shard, |reply| ShardCmd::Answer { peer, sdp, reply })
                    .await
                    .ok_or_else(engine_stopped)??;
                self.negotiator.answer_applied();
                Ok(())
            }
            ClientCmd::Candidate { pc, candidate } => {
                if pc == Pc::Pub && !self.published {
                    if self.early.len() >= EARLY_CANDIDATES {
                        return Err(SignalError::new(
                            SignalCode::NoConnection,
                            "that connection is not negotiated yet",
                        ));
                    }
                    self.early.push(candidate.candidate);
                    return Ok(());
                }
                let candidate = candidate.candidate;
                self.sfu
                    .engine
                    .ask(self.shard, |reply| ShardCmd::Candidate { peer, pc, candidate, reply })
                    .await
                    .ok_or_else(engine_stopped)?
            }
            ClientCmd::Receive { mode } => {
                self.sfu.engine.send(self.shard, ShardCmd::Receive { peer, mode, class: false });
                Ok(())
            }
            ClientCmd::RestartIce => {
                self.negotiator.restart_ice();
                Ok(())
            }
            ClientCmd::Leave => Ok(()),
            cmd => match self.ask(|reply| RoomMsg::Control { peer, cmd, reply }).await {
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
            Some(PeerCmd::Subscribe { source, forwarded, rank }) => self.add_subscription(source, forwarded, rank),
            Some(PeerCmd::Unsubscribe(id)) => self.remove_subscription(&id),
            Some(PeerCmd::Forward(id, on)) => {
                if let Some((source, fwd)) = self.receiving.get_mut(&id) {
                    *fwd = on;
                    let key = source.key;
                    self.sfu.engine.send(self.shard, ShardCmd::Forward { peer: self.peer, key, on });
                }
            }
            Some(PeerCmd::ClassReceive(mode)) => {
                self.sfu.engine.send(self.shard, ShardCmd::Receive { peer: self.peer, mode, class: true });
            }
            Some(PeerCmd::Close { code, reason }) => return Some((code, reason)),
            None => return Some((close::SLOW_CONSUMER, "dropped by the room".into())),
        }
        None
    }

    /// A notice from the shard; `Some((code, reason))` when the session must end.
    async fn on_internal(&mut self, i: Option<Internal>) -> Option<(u16, String)> {
        match i {
            Some(Internal::Connected(Pc::Sub)) => self.negotiator.connected(),
            Some(Internal::Connected(Pc::Pub)) | None => {}
            Some(Internal::Renegotiate) => self.negotiator.tracks_changed(),
            Some(Internal::Failed(pc)) => {
                tracing::info!(peer = self.peer, ?pc, "peer connection failed");
                let e = SignalError::new(
                    SignalCode::ConnectionFailed,
                    format!("the {pc:?} connection failed: restart ICE"),
                );
                self.text(&ServerMsg::Error { id: None, code: e.code, message: e.message }).await;
            }
            Some(Internal::Crashed) => {
                let e =
                    SignalError::new(SignalCode::Internal, "the media connection failed inside the SFU: join again");
                let _ = self.out.send(error_msg(None, e)).await;
                return Some((close::INTERNAL_ERROR, "media engine failure".into()));
            }
        }
        None
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
    let shard = sfu.engine.shard_of(peer);
    sfu.engine.send(shard, ShardCmd::Open { peer, room: room.clone(), events: itx });
    let mut p = PeerTask {
        sfu: sfu.clone(),
        peer,
        shard,
        room: room.clone(),
        out: out.clone(),
        receiving: HashMap::new(),
        published: false,
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
            i = irx.recv() => if let Some(end) = p.on_internal(i).await { break end },
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
    // The shard forgets everything of the member at `Leave`: the sources only need to.
    for (source, _) in p.receiving.values() {
        source.forget_subscriber(peer);
    }
    sfu.engine.send(shard, ShardCmd::Leave { peer });
    if !reason.is_empty() {
        close_ws(&out, code, &reason).await;
    }
    drop(out);
    drop(p);
    let _ = writer.await;
    sfu.peer_left();
    tracing::info!(room = %key, peer, "left");
}

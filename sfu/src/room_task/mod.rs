//! The room task: the only writer of a room's state. It owns the [`Room`] (control),
//! the published sources, the speakers and last-N; peers talk to it through
//! [`RoomRef`], and it talks back through each peer's channel. Media never goes through
//! it: packets flow from the publisher's engine shard straight to the subscribers' shards.
//!
//! It sleeps until the next thing due: the room's own deadline
//! ([`Room::poll_timeout`], the host's grace period), a speaker's hold running out
//! ([`Speakers::poll_timeout`]), or the registry claim's refresh.

mod groups;
mod recording;

use crate::media::{ClosedSink, LevelSink, Source};
use crate::metrics as m;
use crate::node::Sfu;
use crate::room::{Event, Media, PeerId, Role, Room, RoomConfig, RoomError};
use crate::speaker::{LevelReport, Speakers, last_n};
use preau_live::signal::{ClientCmd, ReceiveMode, ServerMsg, SignalCode, SignalError, SourceInfo};
use preau_proto::close;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Messages waiting for the room task. Bounded: a peer that sends faster than the room
/// handles waits on `send` (its own task only).
const ROOM_QUEUE: usize = 1024;
/// Audio level reports waiting (five per second per speaker); when full, readers drop
/// reports, never media.
const LEVEL_QUEUE: usize = 1024;
/// Closed-source notices waiting; when full, the source is swept at the next timer.
const CLOSED_QUEUE: usize = 256;
/// Signaling messages waiting for a peer task; a peer this far behind is dropped (4008).
pub const PEER_QUEUE: usize = 1024;
/// How often a live room's claim in the registry is refreshed (it expires after 60 s).
const HOLD_EVERY: Duration = Duration::from_secs(20);

/// The room's clock: tokio's, so tests on paused time drive it.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Messages to a room task.
pub(crate) enum RoomMsg {
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
pub(crate) enum PeerCmd {
    Text(Arc<str>),
    Subscribe {
        source: Arc<Source>,
        forwarded: bool,
        /// Its place in the subscriber's bandwidth budget.
        rank: u8,
    },
    Unsubscribe(String),
    /// Last-N turned a source's video on or off for this member.
    Forward(String, bool),
    /// What the whole class receives at most changed (or this member was just admitted).
    ClassReceive(ReceiveMode),
    Close {
        code: u16,
        reason: String,
    },
}

/// How peers reach a room task.
pub(crate) struct RoomRef {
    pub tx: mpsc::Sender<RoomMsg>,
    pub levels: LevelSink,
    pub closed: ClosedSink,
}

impl RoomRef {
    /// Whether the room task still runs.
    pub fn is_open(&self) -> bool {
        !self.tx.is_closed()
    }
}

pub(crate) fn json<T: serde::Serialize>(v: &T) -> Arc<str> {
    serde_json::to_string(v)
        .unwrap_or_else(|_| r#"{"type":"error","code":"internal","message":"encoding"}"#.into())
        .into()
}

/// A breakout group's room with nobody in it ends after this long.
const GROUP_EMPTY_END: Duration = Duration::from_secs(60);

/// Starts the task of room `key`.
pub(crate) fn spawn(sfu: Arc<Sfu>, key: String, cfg: RoomConfig) -> Arc<RoomRef> {
    let (tx, rx) = mpsc::channel(ROOM_QUEUE);
    let (levels, lrx) = mpsc::channel(LEVEL_QUEUE);
    let (closed, crx) = mpsc::channel(CLOSED_QUEUE);
    metrics::gauge!(m::ROOMS).increment(1.0);
    let cfg_group = key.contains('~');
    let t = RoomTask {
        sfu,
        key,
        room: Room::new(cfg, now()),
        peers: HashMap::new(),
        sources: Vec::new(),
        speakers: Speakers::default(),
        laid_out_for: Vec::new(),
        chosen: Vec::new(),
        recording: None,
        group: cfg_group,
        empty_since: Some(now()),
        registered: 0,
    };
    tokio::spawn(t.run(rx, lrx, crx));
    Arc::new(RoomRef { tx, levels, closed })
}

struct PeerLink {
    tx: mpsc::Sender<PeerCmd>,
    role: Role,
    admitted: bool,
    /// Out in a breakout group: the class forwards them nothing and lets nothing of
    /// theirs through; their signaling stays (the class's word reaches them here).
    away: bool,
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
    /// Whose video was forwarded as of the last layout.
    chosen: Vec<PeerId>,
    /// The recording running, if any.
    recording: Option<(crate::record::Meta, crate::record::Running)>,
    /// A breakout group's room (`class:<id>~g<n>`): open floor, ends once empty.
    group: bool,
    /// Since when the room has had nobody.
    empty_since: Option<Instant>,
    /// The room's breakout version the registry holds (`Room::breakout_version`).
    registered: u64,
}

impl RoomTask {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<RoomMsg>,
        mut levels: mpsc::Receiver<(PeerId, LevelReport)>,
        mut closed: mpsc::Receiver<String>,
    ) {
        tracing::info!(room = %self.key, "room opened");
        let mut next_hold = tokio::time::Instant::now() + HOLD_EVERY;
        loop {
            let due = [self.room.poll_timeout(), self.speakers.poll_timeout()]
                .into_iter()
                .flatten()
                .map(tokio::time::Instant::from_std)
                .fold(next_hold, |a, b| a.min(b));
            tokio::select! {
                msg = rx.recv() => {
                    let Some(msg) = msg else { break };
                    self.on_msg(msg).await;
                }
                Some((peer, r)) = levels.recv() => {
                    let now = now();
                    self.speakers.observe(now, peer, r);
                    self.speakers_changed(now).await;
                }
                Some(id) = closed.recv() => self.remove_source(&id),
                _ = tokio::time::sleep_until(due) => {
                    let now = now();
                    self.room.handle_timeout(now);
                    self.sweep_closed();
                    self.speakers_changed(now).await;
                    if self.group && self.empty_since.is_some_and(|t| now.saturating_duration_since(t) >= GROUP_EMPTY_END) {
                        tracing::info!(room = %self.key, "breakout group empty: closed");
                        break;
                    }
                    if tokio::time::Instant::now() >= next_hold {
                        next_hold = tokio::time::Instant::now() + HOLD_EVERY;
                        if let Some(b) = &self.sfu.bus {
                            let _ = b.hold_room(&self.key).await;
                        }
                    }
                }
            }
            self.flush().await;
            self.empty_since = if self.peers.is_empty() { self.empty_since.or(Some(now())) } else { None };
            // Whatever changed (a publisher left, a source closed, someone spoke), the
            // layout follows: last-N never waits for the next speaker report.
            if self.video_chosen() != self.chosen {
                self.relayout().await;
            }
            if self.room.is_ended().is_some() {
                let ids: Vec<PeerId> = self.peers.keys().copied().collect();
                for id in ids {
                    self.send(id, PeerCmd::Close { code: close::NORMAL, reason: "the class has ended".into() });
                }
                break;
            }
        }
        self.stop_recording();
        if self.room.breakouts_out() {
            self.sfu.set_breakouts(&self.key, Vec::new()).await;
        }
        for s in &self.sources {
            s.close();
        }
        metrics::gauge!(m::TRACKS).decrement(self.sources.len() as f64);
        self.sfu.room_closed(&self.key);
        if let Some(b) = &self.sfu.bus {
            b.release_room(&self.key).await;
        }
        metrics::gauge!(m::ROOMS).decrement(1.0);
        tracing::info!(room = %self.key, "room closed");
    }

    async fn on_msg(&mut self, msg: RoomMsg) {
        match msg {
            RoomMsg::Join { peer, user, name, role, tx, reply } => {
                self.peers.insert(peer, PeerLink { tx, role, admitted: false, away: false, sources: BTreeMap::new() });
                let r = self.room.handle_join(now(), peer, &user, &name, role);
                if r.is_err() {
                    self.peers.remove(&peer);
                }
                let _ = reply.send(r);
            }
            RoomMsg::Control { peer, cmd, reply } => {
                let r = self.control(peer, cmd).await;
                let _ = reply.send(r);
            }
            RoomMsg::MayPublish { peer, media, reply } => {
                let r = media.iter().try_for_each(|m| self.room.may_publish(peer, *m));
                let _ = reply.send(r);
            }
            RoomMsg::SourceAdded(s) => self.add_source(s).await,
            RoomMsg::Leave { peer } => {
                self.peers.remove(&peer);
                let _ = self.room.handle_leave(now(), peer);
                self.drop_peer_media(peer);
            }
        }
    }

    fn send(&mut self, peer: PeerId, cmd: PeerCmd) {
        let Some(p) = self.peers.get(&peer) else { return };
        if let Err(mpsc::error::TrySendError::Full(_)) = p.tx.try_send(cmd) {
            // A peer that does not read its signaling is dropped, not waited for.
            tracing::warn!(peer, "peer too slow on signaling: dropped");
            let _ = p.tx.try_send(PeerCmd::Close { code: close::SLOW_CONSUMER, reason: "too slow".into() });
            self.peers.remove(&peer);
            let _ = self.room.handle_leave(now(), peer);
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
        self.sync_registry().await;
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
                        let granted = match s.media {
                            Media::Audio => grants.audio,
                            Media::Video => grants.video,
                            Media::Screen => grants.screen,
                        };
                        // An audio-only class keeps cameras off whatever is granted; a pupil
                        // out in a group is heard there, not here.
                        let on = granted
                            && !(s.media == Media::Video && self.room.class_receive() == ReceiveMode::Audio)
                            && !self.room.is_away(*peer);
                        s.allowed.store(on, Ordering::Release);
                        if !on && s.media == Media::Audio {
                            self.speakers.forget(*peer);
                        }
                    }
                }
                Event::Left { peer } => self.drop_peer_media(*peer),
                Event::ClassReceive { mode } => {
                    let to: Vec<PeerId> = match out.to {
                        Some(p) => vec![p],
                        None => self.peers.keys().copied().collect(),
                    };
                    for p in to {
                        self.send(p, PeerCmd::ClassReceive(*mode));
                    }
                    if *mode == ReceiveMode::Audio {
                        // Cameras already published stop here, whatever the browsers do.
                        for s in self.sources.iter().filter(|s| s.media == Media::Video) {
                            s.allowed.store(false, Ordering::Release);
                        }
                    } else if out.to.is_none() {
                        for s in self.sources.iter().filter(|s| s.media == Media::Video) {
                            s.allowed.store(self.room.may_publish(s.peer, s.media).is_ok(), Ordering::Release);
                        }
                    }
                }
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
            if let (Event::Refused { code, .. }, Some(to)) = (&out.event, out.to) {
                self.drop_peer_media(to);
                // The reason tells a removal from a refusal at the door (and from a
                // locked or full room, refused at join with their own codes).
                let reason = code.as_str().into();
                self.send(to, PeerCmd::Close { code: close::ACCOUNT_REMOVED, reason });
                self.peers.remove(&to);
            }
        }
        self.apply_away();
    }

    fn subscribe(&mut self, peer: PeerId, s: &Arc<Source>) {
        let away = self.peers.get(&peer).is_some_and(|p| p.away);
        let forwarded = !away && (s.media != Media::Video || self.video_chosen().contains(&s.peer));
        if let Some(p) = self.peers.get_mut(&peer) {
            p.sources.insert(s.id.clone(), forwarded);
        }
        let from_host = self.peers.get(&s.peer).is_some_and(|p| p.role == Role::Host);
        let rank = crate::budget::rank(from_host, s.media == Media::Screen);
        self.send(peer, PeerCmd::Subscribe { source: s.clone(), forwarded, rank });
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
        self.chosen = chosen.clone();
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for peer in ids {
            let mut changed = Vec::new();
            if let Some(p) = self.peers.get_mut(&peer) {
                for s in self.sources.iter().filter(|s| s.media == Media::Video) {
                    let on = chosen.contains(&s.peer) && !p.away;
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
        if let Some((_, r)) = self.recording.as_mut() {
            r.untap(&s);
        }
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

    /// Sources whose readers all stopped, in case their notice did not fit the queue.
    fn sweep_closed(&mut self) {
        let closed: Vec<String> = self.sources.iter().filter(|s| s.is_closed()).map(|s| s.id.clone()).collect();
        for id in closed {
            self.remove_source(&id);
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
        let allowed = self.room.may_publish(s.peer, s.media).is_ok() && !self.room.is_away(s.peer);
        s.allowed.store(allowed, Ordering::Release);
        metrics::gauge!(m::TRACKS).increment(1.0);
        tracing::info!(room = %self.key, source = %s.id, allowed, "source published");
        self.sources.push(s.clone());
        let host = self.is_host(s.peer);
        if let Some((_, r)) = self.recording.as_mut()
            && crate::record::heard(s.media, host)
        {
            r.tap(&s, host);
        }
        let ids: Vec<PeerId> =
            self.peers.iter().filter(|(id, p)| p.admitted && **id != s.peer).map(|(id, _)| *id).collect();
        for id in ids {
            self.subscribe(id, &s);
        }
        self.relayout().await;
    }

    async fn control(&mut self, peer: PeerId, cmd: ClientCmd) -> Result<(), SignalError> {
        let now = now();
        let r = match cmd {
            ClientCmd::Admit { peer: p } => self.room.handle_admit(now, peer, p),
            ClientCmd::Deny { peer: p } => self.room.handle_deny(now, peer, p),
            ClientCmd::RaiseHand => self.room.handle_raise_hand(now, peer),
            ClientCmd::LowerHand { peer: p } => self.room.handle_lower_hand(now, peer, p.unwrap_or(peer)),
            ClientCmd::Grant { peer: p, media, allow } => self.room.handle_grant(now, peer, p, media, allow),
            ClientCmd::LowerAllHands => self.room.handle_lower_all_hands(now, peer),
            ClientCmd::PollStart { question, choices } => self.room.handle_poll_start(now, peer, &question, &choices),
            ClientCmd::PollAnswer { poll, choice } => self.room.handle_poll_answer(now, peer, poll, choice),
            ClientCmd::PollEnd { poll, show } => self.room.handle_poll_end(now, peer, poll, show),
            ClientCmd::MuteAll => self.room.handle_mute_all(now, peer),
            ClientCmd::Remove { peer: p } => self.room.handle_remove(now, peer, p),
            ClientCmd::Lock { locked } => self.room.handle_lock(now, peer, locked),
            ClientCmd::Chat { thread } => self.room.handle_chat(now, peer, thread),
            ClientCmd::Record { on } => return self.record(peer, on),
            ClientCmd::BreakoutStart { count, groups, minutes } => {
                return self.breakout_start(now, peer, count, groups, minutes);
            }
            ClientCmd::BreakoutBroadcast { text } => self.room.handle_breakout_broadcast(now, peer, &text),
            ClientCmd::BreakoutEnd { in_s } => self.room.handle_breakout_end(now, peer, in_s),
            ClientCmd::ClassReceive { mode } => self.room.handle_class_receive(now, peer, mode),
            ClientCmd::End => self.room.handle_end(now, peer),
            ClientCmd::Quality { source, quality } => {
                let s = self.sources.iter().find(|s| s.id == source).cloned();
                return match s {
                    Some(s) if s.subscribers().contains(&peer) => {
                        s.set_quality(peer, quality);
                        Ok(())
                    }
                    _ => Err(SignalError::new(SignalCode::UnknownSource, format!("you receive no source `{source}`"))),
                };
            }
            _ => return Err(SignalError::new(SignalCode::BadRequest, "not a room command")),
        };
        r.map_err(SignalError::from)
    }

    fn is_host(&self, peer: PeerId) -> bool {
        self.peers.get(&peer).is_some_and(|p| p.role == Role::Host)
    }

    /// The speakers may have changed: tell the room, and redo last-N if the latest
    /// speakers did.
    async fn speakers_changed(&mut self, now: Instant) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SfuConfig;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        c: SfuConfig,
    }

    async fn node(dir: &tempfile::TempDir) -> Arc<Sfu> {
        let key = dir.path().join("key");
        std::fs::write(&key, b"a room task test key, 32 bytes!!").expect("key");
        let args = ["preau-sfu", "--udp", "127.0.0.1:0", "--room-key-file", key.to_str().expect("utf-8")];
        Sfu::start(Cli::parse_from(args).c, "ws://127.0.0.1:1/ws".into(), None).await.expect("sfu")
    }

    async fn join(room: &RoomRef, peer: PeerId, role: Role) -> mpsc::Receiver<PeerCmd> {
        let (tx, rx) = mpsc::channel(PEER_QUEUE);
        let (reply, answer) = oneshot::channel();
        let msg = RoomMsg::Join { peer, user: format!("u{peer}"), name: "Mme Colin".into(), role, tx, reply };
        assert!(room.tx.send(msg).await.is_ok());
        answer.await.expect("answer").expect("joined");
        rx
    }

    /// The room task sleeps until the room's own deadline: a class whose teacher left
    /// ends when the grace period is over, not a tick later or earlier, on paused time.
    #[tokio::test(start_paused = true)]
    async fn a_class_without_its_teacher_ends_after_the_grace_period() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sfu = node(&dir).await;
        let grace = Duration::from_secs(120);
        let room =
            spawn(sfu.clone(), "0750001A/class:6A".into(), RoomConfig { host_grace: grace, ..RoomConfig::default() });
        let _host = join(&room, 1, Role::Host).await;
        let mut pupil = join(&room, 2, Role::Observer).await;
        let _ = room.tx.send(RoomMsg::Leave { peer: 1 }).await;
        let left = tokio::time::Instant::now();
        tokio::time::sleep(grace - Duration::from_secs(1)).await;
        assert!(room.is_open(), "still waiting for the teacher to come back");
        // The observer is told the class ended, then closed with 1000.
        let mut ended = false;
        let code = loop {
            match pupil.recv().await {
                Some(PeerCmd::Text(t)) if t.contains(r#""type":"ended""#) => ended = true,
                Some(PeerCmd::Close { code, .. }) => break code,
                Some(_) => {}
                None => panic!("closed without a word"),
            }
        };
        assert!(ended && code == close::NORMAL);
        let waited = left.elapsed();
        assert!(waited >= grace && waited < grace + Duration::from_secs(1), "ended after {waited:?}");
        tokio::time::timeout(Duration::from_secs(5), async {
            while room.is_open() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the room task stops");
    }
}

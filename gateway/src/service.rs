//! The gateway's shared state and the handling of every command: authorise with the
//! policy, act on the store, publish on the bus. Sessions call [`Gateway::handle`]; the
//! store's commit hook publishes what was committed, in order.

use crate::config::Config;
use crate::hub::{DirectoryReload, Hub, Node};
use crate::metrics as m;
use parking_lot::RwLock;
use preau_auth::{Issuer, Verifier};
use preau_bus::{Bus, BusMessage, LocalBus, Topic};
use preau_directory::policy::{class_access, class_channels, may_write_first};
use preau_directory::{Directory, DirectoryDoc, Profile, UserRec};
use preau_proto::*;
use preau_store::{
    ChannelState, CommitHook, Committed, Conversation, NewConversation, SqliteOptions, SqliteStore, Store, StoreError,
    Write,
};
use rand::Rng;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// Longest client message id.
pub const MAX_CLIENT_ID: usize = 64;
/// Longest thread title and group name, bytes.
pub const MAX_TITLE_BYTES: usize = 200;
/// Most entries per page of history or sync.
pub const MAX_PAGE: u32 = 200;
/// Longest forum mute, minutes (a week).
pub const MAX_MUTE_MINUTES: u32 = 7 * 24 * 60;

/// A refused command: a stable code and a plain message, never internals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdError {
    /// Stable code.
    pub code: ErrorCode,
    /// Plain explanation.
    pub message: String,
    /// For `rate_limited`.
    pub retry_after_ms: Option<u64>,
}

impl CmdError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        CmdError { code, message: message.into(), retry_after_ms: None }
    }
}

fn bad(msg: impl Into<String>) -> CmdError {
    CmdError::new(ErrorCode::BadRequest, msg)
}

fn forbidden(msg: impl Into<String>) -> CmdError {
    CmdError::new(ErrorCode::Forbidden, msg)
}

/// The same answer for a channel that does not exist and one the user may not see, so
/// nothing leaks about channels beyond the user's reach.
fn no_channel() -> CmdError {
    forbidden("this channel is not available to you")
}

impl From<StoreError> for CmdError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => CmdError::new(ErrorCode::NotFound, "no such message or thread"),
            StoreError::NotAuthor => forbidden("only its author (or a moderator) may do this"),
            StoreError::Locked => CmdError::new(ErrorCode::Locked, "this thread is locked"),
            StoreError::Invalid(why) => bad(why),
            StoreError::Unavailable(detail) => {
                tracing::warn!(%detail, "store unavailable");
                CmdError::new(ErrorCode::Unavailable, "storage is unavailable; retry shortly")
            }
        }
    }
}

/// What a user may do in a channel, with the conversation when it is one.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Sees it.
    pub read: bool,
    /// May post.
    pub post: bool,
    /// May open threads (forums).
    pub create_thread: bool,
    /// Moderates it (or, for a group, created it).
    pub moderate: bool,
    /// The conversation, for direct and group channels.
    pub conv: Option<Conversation>,
}

/// Milliseconds since the Unix epoch (wall clock, for mutes).
pub fn wall_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

async fn timed<T>(op: &'static str, f: impl Future<Output = T>) -> T {
    let t = Instant::now();
    let r = f.await;
    metrics::histogram!(m::STORE_SECONDS, "op" => op).record(t.elapsed().as_secs_f64());
    r
}

/// The gateway of one node.
pub struct Gateway {
    /// Settings.
    pub cfg: Config,
    dir: RwLock<Arc<Directory>>,
    /// Storage.
    pub store: Arc<dyn Store>,
    /// Fan-out between nodes.
    pub bus: Arc<dyn Bus>,
    /// Local sessions and subscriptions.
    pub hub: Arc<Hub>,
    /// Token verification.
    pub verifier: Verifier,
    /// Token issuing (development mode only).
    pub issuer: Option<Issuer>,
    /// Room token signing (development key in development mode).
    pub room_issuer: Option<Issuer>,
    next_session: AtomicU64,
    /// Set on SIGTERM: refuse new connections, tell sessions to reconnect elsewhere.
    pub draining: AtomicBool,
    /// Open sessions on this node (the load it reports to the registry).
    pub open: AtomicU64,
}

struct Reloader(Weak<Gateway>);

impl DirectoryReload for Reloader {
    fn reload(&self, _schools: &[String]) {
        let Some(g) = self.0.upgrade() else { return };
        tokio::spawn(async move {
            if let Err(e) = g.reload_directory().await {
                tracing::warn!(error = %e.message, "directory reload failed; keeping the current one");
            }
        });
    }
}

/// Turns committed store changes into bus messages; runs on the store's writer thread,
/// in commit order, so a channel's events are published in seq order.
fn commit_hook(bus: Arc<dyn Bus>) -> CommitHook {
    Box::new(move |c| match c {
        Committed::Entry(a) => {
            metrics::counter!(m::MESSAGES_STORED).increment(1);
            let frame = ServerFrame::Event { channel: a.channel.clone(), entry: a.entry.clone() };
            bus.publish(BusMessage::Frame {
                topic: Topic::Channel(a.channel.clone()),
                frame: Arc::new(SharedFrame::new(frame)),
            });
        }
        Committed::Read { channel, user, seq } => {
            let frame = Arc::new(SharedFrame::new(ServerFrame::Read {
                channel: channel.clone(),
                user: user.clone(),
                seq: *seq,
            }));
            // In conversations members see each other's read markers; in class channels
            // only the reader's own sessions learn of them (receipts are for authors).
            let topic = match channel.kind() {
                ChannelKind::Direct | ChannelKind::Group => Topic::Channel(channel.clone()),
                _ => Topic::User(user.clone()),
            };
            bus.publish(BusMessage::Frame { topic, frame });
        }
    })
}

impl Gateway {
    /// Opens the store in the data folder, loads (or, in development mode, seeds) the
    /// directory and attaches the hub to the in-process bus.
    pub async fn start(cfg: Config) -> anyhow::Result<Arc<Gateway>> {
        std::fs::create_dir_all(&cfg.data_dir)?;
        let bus: Arc<dyn Bus> = match &cfg.redis {
            Some(url) => {
                let id = cfg.node_id();
                let bus = preau_bus::redis::RedisBus::connect(url, &id, "gateway", &cfg.listen.to_string()).await?;
                tracing::info!(node = %id, "redis bus connected");
                bus
            }
            None => Arc::new(LocalBus::new()),
        };
        let store: Arc<dyn Store> = match cfg.scylla() {
            Some(so) => Arc::new(preau_store::scylla::ScyllaStore::open(&so, commit_hook(bus.clone())).await?),
            None => {
                let mut opts = SqliteOptions::new(cfg.data_dir.join("preau.db"));
                opts.sync_full = cfg.sync_full;
                opts.shared = cfg.store_shared();
                Arc::new(SqliteStore::open(opts, commit_hook(bus.clone()))?)
            }
        };
        let (verifier, issuer) = keys(&cfg)?;
        let room_issuer = match &cfg.room_signing_key {
            Some(pem) => {
                let alg = preau_auth::parse_algorithm(&cfg.room_signing_alg)?;
                Some(Issuer::from_pem(alg, &std::fs::read(pem)?, None)?)
            }
            None if cfg.dev_mode() => Some(Issuer::hs256(&dev_key(&cfg.data_dir)?)),
            None => None,
        };
        let dir = load_directory(store.as_ref(), cfg.dev_mode()).await?;
        let hub = Arc::new(Hub::new(cfg.max_connections_per_user, (cfg.sends_per_second, cfg.send_burst)));
        let g = Arc::new(Gateway {
            cfg,
            dir: RwLock::new(Arc::new(dir)),
            store,
            bus: bus.clone(),
            hub: hub.clone(),
            verifier,
            issuer,
            room_issuer,
            next_session: AtomicU64::new(1),
            draining: AtomicBool::new(false),
            open: AtomicU64::new(0),
        });
        let weak_bus = Arc::downgrade(&bus);
        hub.set_interest(Box::new(move |t, on| {
            if let Some(b) = weak_bus.upgrade() {
                b.interest(t, on);
            }
        }));
        bus.attach(Arc::new(Node { hub, reload: Arc::new(Reloader(Arc::downgrade(&g))) }));
        Ok(g)
    }

    /// The current directory.
    pub fn dir(&self) -> Arc<Directory> {
        self.dir.read().clone()
    }

    /// A fresh session id.
    pub fn session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Limits announced in `hello`.
    pub fn limits(&self) -> Limits {
        Limits {
            max_frame_bytes: self.cfg.max_frame_bytes as u32,
            max_body_bytes: self.cfg.max_body_bytes as u32,
            max_group_members: self.cfg.max_group_members as u32,
            sends_per_second: self.cfg.sends_per_second,
            send_burst: self.cfg.send_burst,
        }
    }

    /// Validates, saves and applies a directory document; sessions re-check their
    /// channels at once. Returns the schools replaced.
    pub async fn import(&self, doc: DirectoryDoc) -> Result<Vec<String>, CmdError> {
        let (next, replaced) = self.dir().with_import(doc).map_err(|e| bad(e.to_string()))?;
        for (uai, d) in next.school_docs().filter(|(u, _)| replaced.iter().any(|r| r == u)) {
            let json = serde_json::to_string(d).map_err(|e| bad(e.to_string()))?;
            timed("save_directory", self.store.save_directory(uai, json)).await?;
        }
        *self.dir.write() = Arc::new(next);
        self.hub.recheck_all();
        self.bus.publish(BusMessage::DirectoryChanged { schools: replaced.clone() });
        Ok(replaced)
    }

    /// Reloads the directory from the store (after another node imported).
    pub async fn reload_directory(&self) -> Result<(), CmdError> {
        let d = load_directory(self.store.as_ref(), false).await.map_err(|e| bad(e.to_string()))?;
        *self.dir.write() = Arc::new(d);
        self.hub.recheck_all();
        Ok(())
    }

    /// Whether the node can serve: store answers and bus is up.
    pub async fn ready(&self) -> bool {
        !self.draining.load(Ordering::Relaxed) && self.bus.healthy() && self.store.ping().await.is_ok()
    }

    /// Publishes a frame to a topic.
    pub fn publish(&self, topic: Topic, frame: ServerFrame) {
        self.bus.publish(BusMessage::Frame { topic, frame: Arc::new(SharedFrame::new(frame)) });
    }

    /// What `me` may do in `ch`; `forbidden` when it may not even see it.
    pub async fn access(&self, dir: &Directory, me: &UserRec, ch: &ChannelId) -> Result<Access, CmdError> {
        let a = match ch.kind() {
            ChannelKind::Forum | ChannelKind::Announcements => {
                let class = ch.class().unwrap_or_default();
                let c = class_access(dir, me, class, ch.kind() == ChannelKind::Announcements);
                Access { read: c.read, post: c.post, create_thread: c.create_thread, moderate: c.moderate, conv: None }
            }
            ChannelKind::Direct => {
                let Some((x, y)) = ch.direct_pair() else { return Err(no_channel()) };
                if x != me.id && y != me.id {
                    return Err(no_channel());
                }
                let other = if x == me.id { y } else { x };
                let Some(conv) = timed("conversation", self.store.conversation(ch)).await? else {
                    return Err(no_channel());
                };
                let post = match dir.user(other) {
                    Some(o) if may_write_first(dir, me, o) => true,
                    // Anyone may answer a message sent to them.
                    Some(_) => timed("has_posted", self.store.has_posted(ch, other)).await?,
                    None => false,
                };
                Access { read: true, post, create_thread: false, moderate: false, conv: Some(conv) }
            }
            ChannelKind::Group => {
                let Some(conv) = timed("conversation", self.store.conversation(ch)).await? else {
                    return Err(no_channel());
                };
                if !conv.members.contains(&me.id) {
                    return Err(no_channel());
                }
                let creator = conv.creator == me.id;
                Access { read: true, post: true, create_thread: false, moderate: creator, conv: Some(conv) }
            }
        };
        if a.read { Ok(a) } else { Err(no_channel()) }
    }

    /// Every channel `me` sees, with a title and access.
    pub async fn visible(&self, dir: &Directory, me: &UserRec) -> Result<Vec<(ChannelId, String, Access)>, CmdError> {
        let mut out = Vec::new();
        for (class, forum, ann) in class_channels(dir, me) {
            let name = dir.class(&class).map(|c| c.name.clone()).unwrap_or_default();
            if forum {
                let ch = ChannelId::forum(&class);
                let c = class_access(dir, me, &class, false);
                let a = Access {
                    read: true,
                    post: c.post,
                    create_thread: c.create_thread,
                    moderate: c.moderate,
                    conv: None,
                };
                out.push((ch, format!("Forum {name}"), a));
            }
            if ann {
                let ch = ChannelId::announcements(&class);
                let c = class_access(dir, me, &class, true);
                let a = Access { read: true, post: c.post, create_thread: false, moderate: c.moderate, conv: None };
                out.push((ch, format!("Annonces {name}"), a));
            }
        }
        for conv in timed("conversations_of", self.store.conversations_of(&me.id)).await? {
            let (title, post) = match conv.kind {
                ChannelKind::Direct => {
                    let other = conv.members.iter().find(|u| **u != me.id).cloned().unwrap_or_default();
                    let o = dir.user(&other);
                    let title = o.map(|o| o.name.clone()).unwrap_or_else(|| "(compte supprimé)".into());
                    // Advisory: the exact answer rule is applied when posting.
                    (title, o.is_some())
                }
                _ => (conv.title.clone(), true),
            };
            let moderate = conv.kind == ChannelKind::Group && conv.creator == me.id;
            out.push((
                conv.channel.clone(),
                title,
                Access { read: true, post, create_thread: false, moderate, conv: Some(conv) },
            ));
        }
        Ok(out)
    }

    fn info(ch: &ChannelId, title: String, a: &Access, st: &ChannelState) -> ChannelInfo {
        ChannelInfo {
            channel: ch.clone(),
            kind: ch.kind(),
            title,
            last_seq: st.last_seq,
            read_seq: st.read_seq,
            unread: st.unread,
            can_post: a.post,
            moderator: a.moderate,
            entries: Vec::new(),
            more: false,
        }
    }

    /// A channel's summary for `me`, for `channel_added`.
    pub async fn channel_info(&self, me: &str, ch: &ChannelId, title: String, a: &Access) -> ChannelInfo {
        let st = timed("summaries", self.store.summaries(me, std::slice::from_ref(ch)))
            .await
            .ok()
            .and_then(|v| v.into_iter().next())
            .unwrap_or_default();
        Gateway::info(ch, title, a, &st)
    }

    fn take_send(&self, me: &str) -> Result<(), CmdError> {
        self.hub.take_send_token(me, Instant::now()).map_err(|wait| CmdError {
            code: ErrorCode::RateLimited,
            message: "too many messages; slow down".into(),
            retry_after_ms: Some(wait.as_millis().max(1) as u64),
        })
    }

    fn check_text(&self, what: &str, s: &str, max: usize) -> Result<(), CmdError> {
        if s.trim().is_empty() {
            return Err(bad(format!("`{what}` is empty")));
        }
        if s.len() > max {
            return Err(CmdError::new(ErrorCode::TooLarge, format!("`{what}` is longer than {max} bytes")));
        }
        Ok(())
    }

    fn check_client_id(cid: &str) -> Result<(), CmdError> {
        if cid.is_empty() || cid.len() > MAX_CLIENT_ID {
            return Err(bad(format!("`client_id` must be 1 to {MAX_CLIENT_ID} bytes")));
        }
        Ok(())
    }

    /// Handles one command of `user`.
    pub async fn handle(&self, user: &str, id: u64, cmd: Command) -> Result<Ack, CmdError> {
        let dir = self.dir();
        let Some(me) = dir.user(user) else {
            return Err(forbidden("your account is no longer in the directory"));
        };
        let ack = Ack { id, ..Ack::default() };
        if cmd_publishes(&cmd) && !self.bus.healthy() {
            // Its events could not reach members on other nodes: refuse before storing.
            return Err(CmdError::new(ErrorCode::Unavailable, "messaging is briefly unavailable; retry shortly"));
        }
        match cmd {
            Command::Ping {} => Ok(ack),
            Command::Send { channel, client_id, body, thread, reply_to } => {
                let started = Instant::now();
                Gateway::check_client_id(&client_id)?;
                self.check_text("body", &body, self.cfg.max_body_bytes)?;
                let a = self.access(&dir, me, &channel).await?;
                if !a.post {
                    return Err(forbidden("you may not post in this channel"));
                }
                match channel.kind() {
                    ChannelKind::Forum => {
                        if thread.is_none() {
                            return Err(bad("posts in a forum belong to a thread: give `thread`"));
                        }
                        if !a.moderate {
                            let until = timed("muted_until", self.store.muted_until(&channel, &me.id)).await?;
                            if until > wall_ms() {
                                return Err(CmdError::new(
                                    ErrorCode::Muted,
                                    "a teacher has muted you in this forum for now",
                                ));
                            }
                        }
                    }
                    _ if thread.is_some() || reply_to.is_some() => {
                        return Err(bad("`thread` and `reply_to` exist only in forums"));
                    }
                    _ => {}
                }
                self.take_send(&me.id)?;
                let w = Write::Post {
                    channel,
                    kind: EntryKind::Message,
                    author: me.id.clone(),
                    client_id,
                    body,
                    title: None,
                    thread,
                    reply_to,
                    respect_lock: !a.moderate,
                };
                let r = timed("write", self.store.write(w)).await?;
                metrics::histogram!(m::SEND_ACK_SECONDS).record(started.elapsed().as_secs_f64());
                Ok(Ack { seq: Some(r.entry.seq), duplicate: r.duplicate, ..ack })
            }
            Command::CreateThread { channel, client_id, title, body } => {
                Gateway::check_client_id(&client_id)?;
                self.check_text("title", &title, MAX_TITLE_BYTES)?;
                self.check_text("body", &body, self.cfg.max_body_bytes)?;
                if channel.kind() != ChannelKind::Forum {
                    return Err(bad("threads exist only in forums"));
                }
                let a = self.access(&dir, me, &channel).await?;
                if !a.create_thread {
                    return Err(forbidden("only teachers and staff open threads"));
                }
                self.take_send(&me.id)?;
                let w = Write::Post {
                    channel,
                    kind: EntryKind::Thread,
                    author: me.id.clone(),
                    client_id,
                    body,
                    title: Some(title),
                    thread: None,
                    reply_to: None,
                    respect_lock: false,
                };
                let r = timed("write", self.store.write(w)).await?;
                Ok(Ack { seq: Some(r.entry.seq), duplicate: r.duplicate, ..ack })
            }
            Command::Edit { channel, seq, body } => {
                self.check_text("body", &body, self.cfg.max_body_bytes)?;
                let a = self.access(&dir, me, &channel).await?;
                if !a.post {
                    return Err(forbidden("you may not post in this channel"));
                }
                self.take_send(&me.id)?;
                let w = Write::Edit { channel, author: me.id.clone(), target: seq, body };
                let r = timed("write", self.store.write(w)).await?;
                Ok(Ack { seq: Some(r.entry.seq), ..ack })
            }
            Command::Delete { channel, seq } => {
                let a = self.access(&dir, me, &channel).await?;
                let w = Write::Delete { channel, author: me.id.clone(), target: seq, moderator: a.moderate };
                let r = timed("write", self.store.write(w)).await?;
                Ok(Ack { seq: Some(r.entry.seq), ..ack })
            }
            Command::SetThread { channel, thread, locked, pinned } => {
                if channel.kind() != ChannelKind::Forum {
                    return Err(bad("threads exist only in forums"));
                }
                if locked.is_none() && pinned.is_none() {
                    return Err(bad("give `locked`, `pinned` or both"));
                }
                let a = self.access(&dir, me, &channel).await?;
                if !a.moderate {
                    return Err(forbidden("only the class's teachers moderate its forum"));
                }
                let w = Write::ThreadState { channel, author: me.id.clone(), thread, locked, pinned };
                let r = timed("write", self.store.write(w)).await?;
                Ok(Ack { seq: Some(r.entry.seq), ..ack })
            }
            Command::Mute { channel, user, minutes } => {
                if channel.kind() != ChannelKind::Forum {
                    return Err(bad("mutes exist only in forums"));
                }
                if minutes > MAX_MUTE_MINUTES {
                    return Err(bad(format!("`minutes` is at most {MAX_MUTE_MINUTES}")));
                }
                let a = self.access(&dir, me, &channel).await?;
                if !a.moderate {
                    return Err(forbidden("only the class's teachers moderate its forum"));
                }
                let class = channel.class().and_then(|c| dir.class(c));
                if !class.is_some_and(|c| c.pupils.contains(&user)) {
                    return Err(CmdError::new(ErrorCode::NotFound, "no such pupil in this class"));
                }
                let until = if minutes == 0 { 0 } else { wall_ms() + i64::from(minutes) * 60_000 };
                timed("set_mute", self.store.set_mute(&channel, &user, until)).await?;
                Ok(ack)
            }
            Command::OpenDirect { user: other } => {
                // One answer whether the user does not exist or the rules keep them apart.
                let denied = || forbidden("you may not write to this user");
                let o = dir.user(&other).filter(|o| o.id != me.id).ok_or_else(denied)?;
                let ch = ChannelId::direct(&me.id, &o.id);
                // An existing conversation is the other's message to answer.
                if let Some(existing) = timed("conversation", self.store.conversation(&ch)).await? {
                    return Ok(Ack { channel: Some(existing.channel), ..ack });
                }
                if !may_write_first(&dir, me, o) {
                    return Err(denied());
                }
                self.take_send(&me.id)?;
                let nc = NewConversation {
                    channel: ch.clone(),
                    title: String::new(),
                    creator: me.id.clone(),
                    client_id: None,
                    members: vec![me.id.clone(), o.id.clone()],
                };
                let conv = timed("create_conversation", self.store.create_conversation(nc)).await?;
                self.announce_conversation(&dir, &conv, &conv.members).await;
                Ok(Ack { channel: Some(ch), ..ack })
            }
            Command::CreateGroup { client_id, name, members } => {
                Gateway::check_client_id(&client_id)?;
                self.check_text("name", &name, MAX_TITLE_BYTES)?;
                let mut set: Vec<String> = members.into_iter().filter(|m| *m != me.id).collect();
                set.sort();
                set.dedup();
                if set.is_empty() {
                    return Err(bad("a group needs at least one other member"));
                }
                self.check_new_members(&dir, me, 1, &set)?;
                self.take_send(&me.id)?;
                let gid: String = {
                    let mut r = rand::rng();
                    (0..16).map(|_| char::from(b"0123456789abcdef"[r.random_range(0..16)])).collect()
                };
                set.push(me.id.clone());
                let nc = NewConversation {
                    channel: ChannelId::group(&gid),
                    title: name,
                    creator: me.id.clone(),
                    client_id: Some(client_id),
                    members: set,
                };
                let conv = timed("create_conversation", self.store.create_conversation(nc)).await?;
                self.announce_conversation(&dir, &conv, &conv.members).await;
                Ok(Ack { channel: Some(conv.channel), ..ack })
            }
            Command::AddMembers { channel, members } => {
                if channel.kind() != ChannelKind::Group {
                    return Err(bad("members are added to group conversations only"));
                }
                let a = self.access(&dir, me, &channel).await?;
                if !a.moderate {
                    return Err(forbidden("only the group's creator adds members"));
                }
                let conv = a.conv.ok_or_else(no_channel)?;
                let mut new: Vec<String> = members.into_iter().filter(|m| !conv.members.contains(m)).collect();
                new.sort();
                new.dedup();
                if new.is_empty() {
                    return Ok(ack);
                }
                self.check_new_members(&dir, me, conv.members.len(), &new)?;
                let w = Write::Membership {
                    channel: channel.clone(),
                    author: me.id.clone(),
                    members: new.clone(),
                    joined: true,
                };
                let r = timed("write", self.store.write(w)).await?;
                if let Some(conv) = timed("conversation", self.store.conversation(&channel)).await? {
                    self.announce_conversation(&dir, &conv, &new).await;
                }
                Ok(Ack { seq: Some(r.entry.seq), ..ack })
            }
            Command::Leave { channel } => {
                if channel.kind() != ChannelKind::Group {
                    return Err(bad("only group conversations can be left"));
                }
                self.access(&dir, me, &channel).await?;
                let w = Write::Membership {
                    channel: channel.clone(),
                    author: me.id.clone(),
                    members: vec![me.id.clone()],
                    joined: false,
                };
                let r = timed("write", self.store.write(w)).await?;
                self.publish(Topic::User(me.id.clone()), ServerFrame::ChannelRemoved { channel });
                Ok(Ack { seq: Some(r.entry.seq), ..ack })
            }
            Command::Sync { positions, limit } => {
                let limit = limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
                let vis = self.visible(&dir, me).await?;
                let chans: Vec<ChannelId> = vis.iter().map(|(c, _, _)| c.clone()).collect();
                let states = timed("summaries", self.store.summaries(&me.id, &chans)).await?;
                let pos: HashMap<&ChannelId, Seq> = positions.iter().map(|p| (&p.channel, p.seq)).collect();
                let mut infos = Vec::with_capacity(vis.len());
                for ((ch, title, a), st) in vis.iter().zip(states.iter()) {
                    let mut info = Gateway::info(ch, title.clone(), a, st);
                    if let Some(after) = pos.get(ch).copied()
                        && after < st.last_seq
                    {
                        let (entries, more) =
                            timed("history", self.store.history(ch, Some(after), None, limit)).await?;
                        info.entries = entries;
                        info.more = more;
                    }
                    infos.push(info);
                }
                let seen: HashSet<&ChannelId> = chans.iter().collect();
                let removed =
                    positions.iter().filter(|p| !seen.contains(&p.channel)).map(|p| p.channel.clone()).collect();
                Ok(Ack { channels: infos, removed, ..ack })
            }
            Command::History { channel, after, before, limit } => {
                if after.is_some() && before.is_some() {
                    return Err(bad("give `after` or `before`, not both"));
                }
                let limit = limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
                self.access(&dir, me, &channel).await?;
                let (entries, more) = timed("history", self.store.history(&channel, after, before, limit)).await?;
                Ok(Ack { entries, more, ..ack })
            }
            Command::MarkRead { channel, seq } => {
                self.access(&dir, me, &channel).await?;
                let s = timed("mark_read", self.store.mark_read(&me.id, &channel, seq)).await?;
                Ok(Ack { seq: Some(s), ..ack })
            }
            Command::Receipts { channel, seq } => {
                let a = self.access(&dir, me, &channel).await?;
                let entry = timed("entry", self.store.entry(&channel, seq)).await?;
                let Some(entry) = entry.filter(|e| matches!(e.kind, EntryKind::Message | EntryKind::Thread)) else {
                    return Err(CmdError::new(ErrorCode::NotFound, "no such message"));
                };
                if entry.author != me.id && !(a.moderate && a.conv.is_none()) {
                    return Err(forbidden("read receipts are for the message's author"));
                }
                let mut readers: Vec<String> = match (&a.conv, channel.class().and_then(|c| dir.class(c))) {
                    (Some(conv), _) => conv.members.clone(),
                    (None, Some(class)) => {
                        let mut v: Vec<String> = class.pupils.iter().cloned().collect();
                        if channel.kind() == ChannelKind::Announcements {
                            for p in &class.pupils {
                                if let Some(u) = dir.user(p) {
                                    v.extend(u.parents.iter().cloned());
                                }
                            }
                        }
                        v
                    }
                    _ => Vec::new(),
                };
                readers.retain(|u| *u != entry.author);
                readers.sort();
                readers.dedup();
                let marks = timed("read_markers", self.store.read_markers(&channel, &readers)).await?;
                let receipts =
                    readers.into_iter().zip(marks).map(|(user, m)| Receipt { user, read: m >= seq }).collect();
                Ok(Ack { receipts, ..ack })
            }
            Command::Members { channel } => {
                if !matches!(channel.kind(), ChannelKind::Direct | ChannelKind::Group) {
                    return Err(bad("member lists exist for conversations only"));
                }
                let a = self.access(&dir, me, &channel).await?;
                let conv = a.conv.ok_or_else(no_channel)?;
                let elsewhere = self.bus.online_elsewhere(conv.members.clone()).await;
                let members = conv
                    .members
                    .iter()
                    .zip(elsewhere)
                    .map(|(u, far)| {
                        let rec = dir.user(u);
                        MemberInfo {
                            user: u.clone(),
                            name: rec.map(|r| r.name.clone()).unwrap_or_else(|| "(compte supprimé)".into()),
                            profile: rec.map(|r| r.profile.as_str().to_owned()).unwrap_or_default(),
                            online: far || self.hub.online(u),
                        }
                    })
                    .collect();
                Ok(Ack { members, ..ack })
            }
            Command::Typing { channel } => {
                if !matches!(channel.kind(), ChannelKind::Direct | ChannelKind::Group) {
                    return Err(bad("typing is shown in conversations only"));
                }
                let a = self.access(&dir, me, &channel).await?;
                if !a.post {
                    return Err(forbidden("you may not post in this channel"));
                }
                self.publish(Topic::Channel(channel.clone()), ServerFrame::Typing { channel, user: me.id.clone() });
                Ok(ack)
            }
        }
    }

    /// A group of `current` members may take `new` ones: under the size limit, and `me`
    /// may write to each (one answer for unknown and forbidden users).
    fn check_new_members(&self, dir: &Directory, me: &UserRec, current: usize, new: &[String]) -> Result<(), CmdError> {
        if current + new.len() > self.cfg.max_group_members {
            return Err(CmdError::new(
                ErrorCode::GroupFull,
                format!("a group has at most {} members", self.cfg.max_group_members),
            ));
        }
        let denied: Vec<&str> = new
            .iter()
            .filter(|m| !dir.user(m).is_some_and(|u| may_write_first(dir, me, u)))
            .map(String::as_str)
            .collect();
        if denied.is_empty() { Ok(()) } else { Err(forbidden(format!("you may not write to: {}", denied.join(", ")))) }
    }

    /// Tells each of `to` (members of `conv`) that they now see it; their sessions on
    /// every node subscribe.
    async fn announce_conversation(&self, dir: &Directory, conv: &Conversation, to: &[String]) {
        for u in to {
            let Some(rec) = dir.user(u) else { continue };
            let (title, post) = match conv.kind {
                ChannelKind::Direct => {
                    let other = conv.members.iter().find(|m| *m != u).and_then(|o| dir.user(o));
                    (
                        other.map(|o| o.name.clone()).unwrap_or_default(),
                        other.is_some_and(|o| conv.creator != rec.id || may_write_first(dir, rec, o)),
                    )
                }
                _ => (conv.title.clone(), true),
            };
            let a = Access {
                read: true,
                post,
                create_thread: false,
                moderate: conv.kind == ChannelKind::Group && conv.creator == *u,
                conv: None,
            };
            let info = self.channel_info(u, &conv.channel, title, &a).await;
            self.publish(Topic::User(u.clone()), ServerFrame::ChannelAdded { info });
        }
    }

    /// Publishes a user's presence to the conversations they belong to.
    pub fn publish_presence(&self, user: &str, conversations: &[ChannelId], online: bool) {
        if conversations.is_empty() {
            return;
        }
        let frame = Arc::new(SharedFrame::new(ServerFrame::Presence { user: user.to_owned(), online }));
        for ch in conversations {
            self.bus.publish(BusMessage::Frame { topic: Topic::Channel(ch.clone()), frame: frame.clone() });
        }
    }

    /// A room token for `user` in the live session of `class`, and the SFU node to
    /// present it to, after the directory says
    /// which role they get. `forbidden` for everyone else, and for unknown classes alike.
    pub async fn room_token(&self, user: &str, class: &str) -> Result<RoomTicket, CmdError> {
        let dir = self.dir();
        let me = dir.user(user).ok_or_else(|| forbidden("your account is no longer in the directory"))?;
        let (room, role) = preau_directory::room_role(&dir, me, class)
            .ok_or_else(|| forbidden("you may not join this class's live session"))?;
        let issuer = self
            .room_issuer
            .as_ref()
            .ok_or_else(|| CmdError::new(ErrorCode::Unavailable, "live classes are not configured on this server"))?;
        let token = issuer.issue_room(&me.id, &me.name, &me.school, &room, role.as_str(), self.cfg.room_token_ttl);
        // The SFU keys rooms by school and room, as the registry does.
        let key = format!("{}/{room}", me.school);
        let sfu = self.bus.place_room(&key).await.unwrap_or_else(|| self.cfg.sfu_url.clone());
        Ok(RoomTicket { token, role: role.as_str(), room, sfu })
    }

    /// A development token for a directory user.
    pub fn dev_token(&self, user: &str) -> Option<String> {
        let issuer = self.issuer.as_ref()?;
        let u = self.dir().user(user)?.clone();
        Some(issuer.issue(&u.id, u.profile.as_str(), &u.school, self.cfg.dev_token_ttl))
    }

    /// Checks that a token's claims match the directory: the user exists in that school
    /// with that profile.
    pub fn resolve(&self, claims: &preau_auth::Claims) -> Option<UserRec> {
        let dir = self.dir();
        let u = dir.user(&claims.sub)?;
        (u.school == claims.school && Profile::parse(&claims.profile) == Some(u.profile)).then(|| u.clone())
    }
}

/// Commands whose result other nodes must hear of: refused while the bus is down.
fn cmd_publishes(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::Send { .. }
            | Command::CreateThread { .. }
            | Command::Edit { .. }
            | Command::Delete { .. }
            | Command::SetThread { .. }
            | Command::OpenDirect { .. }
            | Command::CreateGroup { .. }
            | Command::AddMembers { .. }
            | Command::Leave { .. }
    )
}

async fn load_directory(store: &dyn Store, seed_demo: bool) -> anyhow::Result<Directory> {
    let docs = store.load_directories().await?;
    if docs.is_empty() && seed_demo {
        let demo = preau_directory::demo::demo_doc();
        let dir = Directory::from_docs([demo.clone()])?;
        for (uai, d) in dir.school_docs() {
            store.save_directory(uai, serde_json::to_string(d)?).await?;
        }
        tracing::info!(users = dir.user_count(), "loaded the demo school");
        return Ok(dir);
    }
    let parsed = docs.iter().map(|d| serde_json::from_str::<DirectoryDoc>(d)).collect::<Result<Vec<_>, _>>()?;
    Ok(Directory::from_docs(parsed)?)
}

fn keys(cfg: &Config) -> anyhow::Result<(Verifier, Option<Issuer>)> {
    let (v, i) = if let Some(jwks) = &cfg.jwks {
        (Verifier::from_jwks(&std::fs::read_to_string(jwks)?)?, None)
    } else if let Some(pem) = &cfg.jwt_public_key {
        let alg = preau_auth::parse_algorithm(&cfg.jwt_alg)?;
        (Verifier::from_pem(alg, &std::fs::read(pem)?)?, None)
    } else {
        let key = dev_key(&cfg.data_dir)?;
        (Verifier::hs256(&key), Some(Issuer::hs256(&key)))
    };
    let v = v.with_issuer(cfg.jwt_issuer.clone()).with_audience(cfg.jwt_audience.clone());
    let i = i.map(|i| i.with_claims(cfg.jwt_issuer.clone(), cfg.jwt_audience.clone()));
    Ok((v, if cfg.dev_mode() { i } else { None }))
}

/// What a member needs to join a live class.
#[derive(Debug, Clone)]
pub struct RoomTicket {
    /// Room token (audience `preau-sfu`).
    pub token: String,
    /// `host`, `participant` or `observer`.
    pub role: &'static str,
    /// Room id (`class:<class>`).
    pub room: String,
    /// Signaling URL of the SFU node hosting the room.
    pub sfu: String,
}

/// The development HS256 key, created in the data folder on first start so tokens
/// survive restarts.
fn dev_key(data: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let path = data.join("dev-signing-key");
    if let Ok(k) = std::fs::read(&path)
        && k.len() >= 32
    {
        return Ok(k);
    }
    let mut k = vec![0u8; 32];
    rand::rng().fill(&mut k[..]);
    std::fs::write(&path, &k)?;
    Ok(k)
}

/// A jittered reconnect delay, spreading a node's clients over `spread_ms`.
pub fn reconnect_delay(spread_ms: u64) -> Duration {
    Duration::from_millis(rand::rng().random_range(0..=spread_ms.max(1)))
}

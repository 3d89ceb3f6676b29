//! The hub: which sessions of this node hold which channel, and each user's sessions.
//! Fan-out queues one shared, already encoded frame on each subscriber's bounded queue;
//! [`Ordered`] puts each channel's events in seq order first ([`crate::order`]).
//!
//! Sharded by channel (and by user) over [`SHARDS`] mutexes, never one global lock; a
//! shard's lock is held only to walk its subscribers and push (one atomic counter bounds
//! each session's queue, then an unbounded channel's send), which never waits.
//! A full queue means the client does not read fast enough: the frame is dropped, the
//! session is flagged and woken, and closes with `SLOW_CONSUMER`; the client resumes from
//! its last seq, so nothing is lost.

use crate::limits::TokenBucket;
use crate::metrics as m;
use crate::order::{Fill, Sequencer};
use parking_lot::Mutex;
use preau_bus::{BusMessage, Deliver, Topic};
use preau_proto::{ChannelId, Seq, ServerFrame, SharedFrame};
use preau_store::Store;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

/// Number of shards of the channel and user maps.
pub const SHARDS: usize = 64;

/// Why the hub asks a session to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    /// Its queue overflowed.
    SlowConsumer,
    /// The ENT signed the user out everywhere (the server API).
    Disconnected,
}

/// The hub's side of a session.
pub struct SessionHandle {
    /// Node-unique session id.
    pub id: u64,
    /// The user.
    pub user: Arc<str>,
    tx: mpsc::UnboundedSender<Arc<SharedFrame>>,
    /// Frames queued and not yet taken, bounded by `capacity`: one atomic add per
    /// delivery, where a bounded channel's semaphore cost several atomics and a lock.
    queued: AtomicUsize,
    capacity: usize,
    overflowed: AtomicBool,
    recheck: AtomicBool,
    disconnected: AtomicBool,
    /// Wakes the session's driver for a flag or a directory re-check.
    pub wake: Notify,
    /// A handful per session: a list costs less memory than a set and is as fast.
    subs: Mutex<Vec<ChannelId>>,
}

impl SessionHandle {
    /// A handle and the receiving end of its outbound queue of `capacity` frames.
    pub fn new(id: u64, user: Arc<str>, capacity: usize) -> (Arc<Self>, Outbox) {
        let (tx, rx) = mpsc::unbounded_channel();
        let h = SessionHandle {
            id,
            user,
            tx,
            queued: AtomicUsize::new(0),
            capacity: capacity.max(1),
            overflowed: AtomicBool::new(false),
            recheck: AtomicBool::new(false),
            disconnected: AtomicBool::new(false),
            wake: Notify::new(),
            subs: Mutex::new(Vec::new()),
        };
        let h = Arc::new(h);
        (h.clone(), Outbox { rx, handle: h })
    }

    /// The flag raised, if any.
    pub fn flag(&self) -> Option<Flag> {
        if self.overflowed.load(Ordering::Acquire) {
            Some(Flag::SlowConsumer)
        } else {
            self.disconnected.load(Ordering::Acquire).then_some(Flag::Disconnected)
        }
    }

    /// Takes the pending directory re-check request.
    pub fn take_recheck(&self) -> bool {
        self.recheck.swap(false, Ordering::AcqRel)
    }

    /// Channels this session is subscribed to.
    pub fn subscriptions(&self) -> HashSet<ChannelId> {
        self.subs.lock().iter().cloned().collect()
    }
}

/// A session's end of its outbound queue.
pub struct Outbox {
    rx: mpsc::UnboundedReceiver<Arc<SharedFrame>>,
    handle: Arc<SessionHandle>,
}

impl Outbox {
    /// The next queued frame (`None` once the hub dropped the session).
    pub async fn recv(&mut self) -> Option<Arc<SharedFrame>> {
        let f = self.rx.recv().await;
        if f.is_some() {
            self.handle.queued.fetch_sub(1, Ordering::AcqRel);
        }
        f
    }

    /// A queued frame, if one is waiting.
    pub fn try_recv(&mut self) -> Result<Arc<SharedFrame>, mpsc::error::TryRecvError> {
        let f = self.rx.try_recv()?;
        self.handle.queued.fetch_sub(1, Ordering::AcqRel);
        Ok(f)
    }
}

struct UserSlot {
    sessions: HashMap<u64, Arc<SessionHandle>>,
    sends: TokenBucket,
}

/// One shard of the channel map: channel -> subscribed sessions by id.
type ChannelShard = Mutex<HashMap<ChannelId, HashMap<u64, Arc<SessionHandle>>>>;
/// One shard of the user map.
type UserShard = Mutex<HashMap<Arc<str>, UserSlot>>;

/// Registry and fan-out of one node.
pub struct Hub {
    channels: Box<[ChannelShard]>,
    users: Box<[UserShard]>,
    hasher: RandomState,
    max_per_user: usize,
    send_rate: (u32, u32),
    interest: OnceLock<Interest>,
}

/// Told when this node starts or stops holding sessions for a topic (a channel's first
/// subscriber, a user's first session), so the bus subscribes only to what is held here.
/// Called under a shard lock: it must only queue.
pub type Interest = Box<dyn Fn(&Topic, bool) + Send + Sync>;

/// Registration refused.
#[derive(Debug, PartialEq, Eq)]
pub struct TooManySessions;

impl Hub {
    /// A hub allowing `max_per_user` sessions per user and `send_rate` (rate, burst)
    /// sends per user.
    pub fn new(max_per_user: usize, send_rate: (u32, u32)) -> Self {
        Hub {
            channels: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            users: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            max_per_user,
            send_rate,
            interest: OnceLock::new(),
        }
    }

    /// Sets where interest changes go (the bus); once.
    pub fn set_interest(&self, f: Interest) {
        let _ = self.interest.set(f);
    }

    fn interested(&self, t: &Topic, on: bool) {
        if let Some(f) = self.interest.get() {
            f(t, on);
        }
    }

    fn shard<K: Hash + ?Sized>(&self, k: &K) -> usize {
        (self.hasher.hash_one(k) as usize) % SHARDS
    }

    /// Adds a session. Returns whether it is the user's first on this node.
    pub fn register(&self, h: &Arc<SessionHandle>) -> Result<bool, TooManySessions> {
        let mut users = self.users[self.shard(&*h.user)].lock();
        let slot = users.entry(h.user.clone()).or_insert_with(|| UserSlot {
            sessions: HashMap::new(),
            sends: TokenBucket::new(self.send_rate.0, self.send_rate.1, Instant::now()),
        });
        if slot.sessions.len() >= self.max_per_user {
            return Err(TooManySessions);
        }
        slot.sessions.insert(h.id, h.clone());
        let first = slot.sessions.len() == 1;
        if first {
            self.interested(&Topic::User(h.user.to_string()), true);
        }
        Ok(first)
    }

    /// Removes a session and its subscriptions. Returns whether the user has no session
    /// left on this node.
    pub fn unregister(&self, h: &Arc<SessionHandle>) -> bool {
        let subs: Vec<ChannelId> = std::mem::take(&mut *h.subs.lock());
        for ch in subs {
            self.unsubscribe_raw(h.id, &ch);
        }
        let mut users = self.users[self.shard(&*h.user)].lock();
        let Some(slot) = users.get_mut(&*h.user) else {
            return true;
        };
        slot.sessions.remove(&h.id);
        if slot.sessions.is_empty() {
            users.remove(&*h.user);
            self.interested(&Topic::User(h.user.to_string()), false);
            true
        } else {
            false
        }
    }

    /// Subscribes a session to a channel.
    pub fn subscribe(&self, h: &Arc<SessionHandle>, ch: &ChannelId) {
        let added = {
            let mut subs = h.subs.lock();
            let new = !subs.contains(ch);
            if new {
                subs.push(ch.clone());
            }
            new
        };
        if added {
            let mut shard = self.channels[self.shard(ch)].lock();
            let subs = shard.entry(ch.clone()).or_default();
            if subs.is_empty() {
                self.interested(&Topic::Channel(ch.clone()), true);
            }
            subs.insert(h.id, h.clone());
        }
    }

    /// Unsubscribes a session from a channel.
    pub fn unsubscribe(&self, h: &Arc<SessionHandle>, ch: &ChannelId) {
        let removed = {
            let mut subs = h.subs.lock();
            let at = subs.iter().position(|c| c == ch);
            at.map(|i| subs.swap_remove(i)).is_some()
        };
        if removed {
            self.unsubscribe_raw(h.id, ch);
        }
    }

    fn unsubscribe_raw(&self, id: u64, ch: &ChannelId) {
        let mut shard = self.channels[self.shard(ch)].lock();
        if let Some(subs) = shard.get_mut(ch) {
            subs.remove(&id);
            if subs.is_empty() {
                shard.remove(ch);
                self.interested(&Topic::Channel(ch.clone()), false);
            }
        }
    }

    /// Takes a send token for `user`, or says when to retry.
    pub fn take_send_token(&self, user: &str, now: Instant) -> Result<(), Duration> {
        let mut users = self.users[self.shard(user)].lock();
        match users.get_mut(user) {
            Some(slot) => slot.sends.try_take(now),
            None => Ok(()),
        }
    }

    /// Whether a session of this node is subscribed to `ch`.
    pub fn has_subscribers(&self, ch: &ChannelId) -> bool {
        self.channels[self.shard(ch)].lock().contains_key(ch)
    }

    /// Whether the user has a session on this node.
    pub fn online(&self, user: &str) -> bool {
        self.users[self.shard(user)].lock().contains_key(user)
    }

    /// Number of sessions of a user on this node.
    pub fn session_count(&self, user: &str) -> usize {
        self.users[self.shard(user)].lock().get(user).map_or(0, |s| s.sessions.len())
    }

    /// Queues a frame on one session; returns whether it was queued. Metrics are counted
    /// by the caller once per fan-out, not per recipient.
    fn push(h: &SessionHandle, frame: &Arc<SharedFrame>) -> bool {
        if h.queued.fetch_add(1, Ordering::AcqRel) >= h.capacity {
            h.queued.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!(m::QUEUE_DROPS).increment(1);
            if !h.overflowed.swap(true, Ordering::AcqRel) {
                h.wake.notify_one();
            }
            return false;
        }
        if h.tx.send(frame.clone()).is_err() {
            // The session is closing; it will resume elsewhere.
            h.queued.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Queues a frame on every session subscribed to `ch`.
    pub fn deliver_channel(&self, ch: &ChannelId, frame: &Arc<SharedFrame>) {
        let mut queued = 0u64;
        if let Some(subs) = self.channels[self.shard(ch)].lock().get(ch) {
            for h in subs.values() {
                queued += u64::from(Hub::push(h, frame));
            }
        }
        if queued > 0 {
            metrics::counter!(m::DELIVERIES).increment(queued);
        }
    }

    /// Queues a frame on every session of `user`; `channel_added` and `channel_removed`
    /// also change their subscriptions first.
    pub fn deliver_user(&self, user: &str, frame: &Arc<SharedFrame>) {
        let sessions: Vec<Arc<SessionHandle>> = self.users[self.shard(user)]
            .lock()
            .get(user)
            .map(|s| s.sessions.values().cloned().collect())
            .unwrap_or_default();
        let mut queued = 0u64;
        for h in &sessions {
            match frame.frame() {
                ServerFrame::ChannelAdded { info } => self.subscribe(h, &info.channel),
                ServerFrame::ChannelRemoved { channel } => self.unsubscribe(h, channel),
                _ => {}
            }
            queued += u64::from(Hub::push(h, frame));
        }
        if queued > 0 {
            metrics::counter!(m::DELIVERIES).increment(queued);
        }
    }

    /// Ends every session of `user` on this node (they are told to get a new token);
    /// returns how many.
    pub fn disconnect_user(&self, user: &str) -> usize {
        let shard = self.users[self.shard(user)].lock();
        let Some(slot) = shard.get(user) else { return 0 };
        for h in slot.sessions.values() {
            h.disconnected.store(true, Ordering::Release);
            h.wake.notify_one();
        }
        slot.sessions.len()
    }

    /// Asks every session to re-check its channels against the directory.
    pub fn recheck_all(&self) {
        for shard in self.users.iter() {
            for slot in shard.lock().values() {
                for h in slot.sessions.values() {
                    h.recheck.store(true, Ordering::Release);
                    h.wake.notify_one();
                }
            }
        }
    }
}

/// What the node does with messages from the bus, besides delivering frames.
pub trait DirectoryReload: Send + Sync {
    /// Reloads the named schools' directory from the store, then asks sessions to
    /// re-check.
    fn reload(&self, schools: &[String]);
    /// Reloads a node-wide setting from the store.
    fn reload_settings(&self, key: &str);
}

/// The hub attached to a bus, with the node's directory reload.
pub struct Node {
    /// The hub.
    pub hub: Arc<Hub>,
    /// Directory reload.
    pub reload: Arc<dyn DirectoryReload>,
    /// Puts each channel's events in seq order before the hub.
    pub order: Arc<Ordered>,
}

/// The node's [`Sequencer`]s, sharded by channel, and the store reads they ask for.
pub struct Ordered {
    shards: Box<[Mutex<Sequencer>]>,
    /// Channels that just became active here, to read their last seq.
    activations: mpsc::UnboundedSender<ChannelId>,
    hasher: RandomState,
    hub: Arc<Hub>,
    store: Arc<dyn Store>,
    /// Fills are read on the runtime; events may arrive from the store's dispatcher thread.
    rt: tokio::runtime::Handle,
}

impl Ordered {
    /// The sequencers of a node whose hub is `hub`; fills read `store` on `rt`.
    pub fn new(hub: Arc<Hub>, store: Arc<dyn Store>, rt: tokio::runtime::Handle) -> Arc<Self> {
        let (activations, mut rx) = mpsc::unbounded_channel::<ChannelId>();
        let me = Arc::new(Ordered {
            shards: (0..SHARDS).map(|_| Mutex::new(Sequencer::default())).collect(),
            activations,
            hasher: RandomState::new(),
            hub,
            store,
            rt: rt.clone(),
        });
        let weak = Arc::downgrade(&me);
        rt.spawn(async move {
            while let Some(ch) = rx.recv().await {
                let Some(me) = weak.upgrade() else { return };
                // The newest entry: its seq is where this node's order starts.
                if let Ok((newest, _)) = me.store.history(&ch, None, None, 1).await {
                    let last = newest.last().map_or(0, |e| e.seq);
                    me.shard(&ch).lock().activate(&ch, last);
                }
            }
        });
        me
    }

    /// `ch` got its first session on this node: its order starts from its last stored
    /// seq. Only queues (called under the hub's shard lock).
    pub fn activated(&self, ch: &ChannelId) {
        let _ = self.activations.send(ch.clone());
    }

    fn shard(&self, ch: &ChannelId) -> &Mutex<Sequencer> {
        &self.shards[(self.hasher.hash_one(ch) as usize) % SHARDS]
    }

    /// An event of `ch`: delivered in seq order. Delivery happens under the shard's lock,
    /// so two threads delivering one channel cannot interleave its events.
    pub fn event(self: &Arc<Self>, ch: &ChannelId, seq: Seq, frame: &Arc<SharedFrame>) {
        let mut out = Vec::new();
        let fill = {
            let mut s = self.shard(ch).lock();
            let fill = s.event(ch, seq, frame.clone(), Instant::now(), &mut out);
            for f in &out {
                self.hub.deliver_channel(ch, f);
            }
            record_waits(&mut s);
            fill
        };
        if let Some(f) = fill {
            self.read(f);
        }
    }

    /// Reads a fill from the store and delivers it (and what it released), in order.
    fn read(self: &Arc<Self>, fill: Fill) {
        let me = self.clone();
        self.rt.spawn(async move {
            let r = me.store.history(&fill.channel, Some(fill.after), None, FILL_PAGE).await;
            let next = {
                let mut s = me.shard(&fill.channel).lock();
                match r {
                    Ok((entries, more)) => {
                        metrics::counter!(m::ORDER_FILLS).increment(1);
                        let frames = entries
                            .into_iter()
                            .map(|e| {
                                let seq = e.seq;
                                let f = ServerFrame::Event { channel: fill.channel.clone(), entry: e };
                                (seq, Arc::new(SharedFrame::new(f)))
                            })
                            .collect();
                        let mut out = Vec::new();
                        let next = s.filled(&fill.channel, frames, more, Instant::now(), &mut out);
                        for f in &out {
                            me.hub.deliver_channel(&fill.channel, f);
                        }
                        record_waits(&mut s);
                        next
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, channel = %fill.channel, "order repair: store read failed");
                        s.fill_failed(&fill.channel);
                        None
                    }
                }
            };
            if let Some(f) = next {
                me.read(f);
            }
        });
    }

    /// Reads the gaps that stayed open a whole window.
    pub fn tick(self: &Arc<Self>) {
        let now = Instant::now();
        self.read_each(|s| s.tick(now));
    }

    /// The bus is back after an outage: every channel catches up from the store.
    pub fn catch_up(self: &Arc<Self>) {
        self.read_each(Sequencer::catch_up);
    }

    /// Reads the fills `f` returns for each shard (outside the shard's lock).
    fn read_each(self: &Arc<Self>, f: impl Fn(&mut Sequencer) -> Vec<Fill>) {
        for shard in self.shards.iter() {
            let fills = f(&mut shard.lock());
            for fill in fills {
                self.read(fill);
            }
        }
    }

    /// Forgets the channels no session of this node holds any more.
    pub fn forget_idle(&self) {
        for shard in self.shards.iter() {
            shard.lock().retain(|ch| self.hub.has_subscribers(ch));
        }
    }
}

/// The latency order repair added to each event (zero for most).
fn record_waits(s: &mut Sequencer) {
    for w in s.take_waits() {
        metrics::histogram!(m::ORDER_HOLD_SECONDS).record(w.as_secs_f64());
    }
}

/// Entries read per store read of an order repair or a catch-up.
const FILL_PAGE: u32 = 500;

impl Deliver for Node {
    fn deliver(&self, msg: &BusMessage) {
        match msg {
            BusMessage::Frame { topic: Topic::Channel(ch), frame } => match frame.frame() {
                ServerFrame::Event { entry, .. } => self.order.event(ch, entry.seq, frame),
                _ => self.hub.deliver_channel(ch, frame),
            },
            BusMessage::Frame { topic: Topic::User(u), frame } => self.hub.deliver_user(u, frame),
            BusMessage::DirectoryChanged { schools } => self.reload.reload(schools),
            BusMessage::SettingsChanged { key } => self.reload.reload_settings(key),
            BusMessage::Disconnect { user } => {
                self.hub.disconnect_user(user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u64) -> Arc<SharedFrame> {
        Arc::new(SharedFrame::new(ServerFrame::Read { channel: ChannelId::group("g"), user: "u".into(), seq: n }))
    }

    #[tokio::test]
    async fn fans_out_one_shared_frame() {
        let hub = Hub::new(4, (5, 10));
        let ch = ChannelId::group("g");
        let (a, mut ra) = SessionHandle::new(1, "a".into(), 8);
        let (b, mut rb) = SessionHandle::new(2, "b".into(), 8);
        for h in [&a, &b] {
            assert_eq!(hub.register(h), Ok(true));
            hub.subscribe(h, &ch);
        }
        let f = frame(1);
        hub.deliver_channel(&ch, &f);
        let (fa, fb) = (ra.recv().await.expect("a"), rb.recv().await.expect("b"));
        assert!(Arc::ptr_eq(&fa, &fb), "one frame shared by both recipients");
        hub.unsubscribe(&b, &ch);
        hub.deliver_channel(&ch, &frame(2));
        assert!(ra.try_recv().is_ok() && rb.try_recv().is_err());
    }

    #[tokio::test]
    async fn full_queue_flags_slow_consumer() {
        let hub = Hub::new(4, (5, 10));
        let ch = ChannelId::group("g");
        let (a, _ra) = SessionHandle::new(1, "a".into(), 2);
        hub.register(&a).expect("register");
        hub.subscribe(&a, &ch);
        for n in 0..2 {
            hub.deliver_channel(&ch, &frame(n));
        }
        assert_eq!(a.flag(), None);
        hub.deliver_channel(&ch, &frame(3));
        assert_eq!(a.flag(), Some(Flag::SlowConsumer));
    }

    #[tokio::test]
    async fn per_user_session_cap_and_membership_frames() {
        let hub = Hub::new(2, (5, 10));
        let (a1, mut r1) = SessionHandle::new(1, "a".into(), 8);
        let (a2, _r2) = SessionHandle::new(2, "a".into(), 8);
        let (a3, _r3) = SessionHandle::new(3, "a".into(), 8);
        assert_eq!(hub.register(&a1), Ok(true));
        assert_eq!(hub.register(&a2), Ok(false));
        assert_eq!(hub.register(&a3), Err(TooManySessions));
        let ch = ChannelId::group("new");
        let info = preau_proto::ChannelInfo {
            channel: ch.clone(),
            kind: ch.kind(),
            title: "t".into(),
            last_seq: 0,
            read_seq: 0,
            unread: 0,
            can_post: true,
            moderator: false,
            entries: vec![],
            more: false,
        };
        hub.deliver_user("a", &Arc::new(SharedFrame::new(ServerFrame::ChannelAdded { info })));
        assert!(a1.subscriptions().contains(&ch) && a2.subscriptions().contains(&ch));
        assert!(r1.try_recv().is_ok());
        assert!(!hub.unregister(&a1));
        assert!(hub.unregister(&a2));
        assert!(!hub.online("a"));
    }
}

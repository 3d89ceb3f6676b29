//! Published media as the room task sees it: a [`Source`] (one published track: a
//! pupil's microphone, the teacher's camera with its simulcast layers, a screen) is
//! shared between the room task, which decides who receives it and whether it is
//! allowed through, and the engine shards, which forward its packets.
//!
//! The packets themselves never pass here: the shard that owns the publisher's
//! connection hands each one, as a shared [`Packet`], to the shards that own its
//! subscribers' connections ([`crate::engine`]).

use crate::engine::{ShardCmd, Shards};
use crate::forward::LayerStat;
use crate::room::{Media, PeerId};
use crate::speaker::LevelReport;
use parking_lot::{Mutex, RwLock};
use preau_live::signal::Quality;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::mpsc;

pub use preau_live::signal::AUDIO_LEVEL_URI;

/// Where a publisher's shard reports audio levels (to the room).
pub type LevelSink = mpsc::Sender<(PeerId, LevelReport)>;

/// Where a publisher's shard reports that a source closed (to the room).
pub type ClosedSink = mpsc::Sender<String>;

/// One published track.
pub struct Source {
    /// `p<peer>-<media>`, also the track id subscribers see.
    pub id: String,
    /// Unique on the node for the node's life (ids come back when a publisher
    /// publishes again; keys do not).
    pub key: u64,
    /// Publisher.
    pub peer: PeerId,
    /// Kind.
    pub media: Media,
    /// Whether the room lets this source through (grants); checked per packet by the
    /// publisher's shard.
    pub allowed: AtomicBool,
    /// The shard owning the publisher's connection.
    pub(crate) shard: usize,
    /// Each present layer's bitrate and activity, lowest first; written by the
    /// publisher's shard twice a second, read when a subscriber's layer is chosen.
    pub(crate) layers: RwLock<Vec<LayerStat>>,
    /// Subscribers and the shard of each.
    subs: Mutex<BTreeMap<PeerId, usize>>,
    /// Shards with at least one subscriber, one bit each: the publisher's shard reads
    /// it per packet to know where to hand the packet.
    pub(crate) shard_mask: AtomicU64,
    closed: AtomicBool,
    engine: Shards,
}

impl Source {
    /// A source of `peer` published on `shard`.
    pub(crate) fn new(engine: Shards, shard: usize, peer: PeerId, media: Media, allowed: bool) -> Arc<Source> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Arc::new(Source {
            id: preau_live::signal::source_id(peer, media),
            key: NEXT.fetch_add(1, Ordering::Relaxed),
            peer,
            media,
            allowed: AtomicBool::new(allowed),
            shard,
            layers: RwLock::new(Vec::new()),
            subs: Mutex::new(BTreeMap::new()),
            shard_mask: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            engine,
        })
    }

    /// Whether it carries video (a camera or a screen).
    pub fn is_video(&self) -> bool {
        self.media != Media::Audio
    }

    /// Whether the publisher stopped it (left, or stopped the track).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Marks the source closed: its shard stops forwarding it.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    fn remask(&self, subs: &BTreeMap<PeerId, usize>) {
        let mask = subs.values().fold(0u64, |m, s| m | (1 << s));
        self.shard_mask.store(mask, Ordering::Release);
    }

    /// Records that `peer`, whose connections are on `shard`, receives this source.
    pub(crate) fn add_subscriber(&self, peer: PeerId, shard: usize) {
        let mut subs = self.subs.lock();
        subs.insert(peer, shard);
        self.remask(&subs);
    }

    /// Stops forwarding to `peer` (its shard is told).
    pub fn unsubscribe(self: &Arc<Self>, peer: PeerId) {
        if let Some(shard) = self.forget_subscriber(peer) {
            self.engine.send(shard, ShardCmd::Unsubscribe { peer, key: self.key });
        }
    }

    /// Takes `peer` off the subscribers without telling its shard (which forgets the
    /// whole member when it leaves); the shard it was on, if it was a subscriber.
    pub(crate) fn forget_subscriber(&self, peer: PeerId) -> Option<usize> {
        let mut subs = self.subs.lock();
        let shard = subs.remove(&peer)?;
        self.remask(&subs);
        Some(shard)
    }

    /// A recording starts (`Some`) or stops hearing this source: its publisher's shard,
    /// which owns what it publishes, hands the recording each packet let through.
    pub(crate) fn set_tap(&self, tap: Option<crate::record::Tap>) {
        self.engine.send(self.shard, ShardCmd::Tap { key: self.key, tap });
    }

    /// Asks the publisher for a keyframe of `layer` (a recording starting on it).
    pub(crate) fn ask_keyframe(&self, layer: usize) {
        self.engine.send(self.shard, ShardCmd::Keyframe { key: self.key, layer });
    }

    /// A subscriber's wanted quality for this source (its tile's size).
    pub fn set_quality(&self, peer: PeerId, quality: Quality) {
        if let Some(&shard) = self.subs.lock().get(&peer) {
            self.engine.send(shard, ShardCmd::Quality { peer, key: self.key, quality });
        }
    }

    /// Ids of the subscribers.
    pub fn subscribers(&self) -> Vec<PeerId> {
        self.subs.lock().keys().copied().collect()
    }
}

/// One published RTP packet on its way to the subscribers' shards: built once, shared
/// by all (the payload is never copied).
pub struct Packet {
    /// Whose.
    pub source: Arc<Source>,
    /// Its layer's index among the source's present layers, lowest first.
    pub layer: usize,
    /// The publisher's sequence number and timestamp (each subscriber's [`Forward`]
    /// rewrites them).
    ///
    /// [`Forward`]: crate::forward::Forward
    pub seq: u16,
    /// RTP timestamp.
    pub ts: u32,
    /// Marker bit.
    pub marker: bool,
    /// A VP8 keyframe's first packet.
    pub keyframe: bool,
    /// Whether it starts its frame, and the frame's temporal layer, when the publisher
    /// sends temporal layers (screens do: a "low" subscriber gets the base layer only).
    pub temporal: Option<(bool, u8)>,
    /// When it arrived (the RTCP sender reports' wall clock).
    pub arrived: Instant,
    /// Audio: the level the publisher measured (RFC 6464: 0 loudest, 127 silence).
    pub level: Option<u8>,
    /// Payload.
    pub payload: Arc<[u8]>,
}

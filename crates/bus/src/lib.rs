//! Fan-out between gateway nodes. A node publishes what must reach users; every node
//! (this one included) delivers it to the sessions it holds.
//!
//! # Layout
//! - [`BusMessage`]: what travels: an already encoded frame for a channel's subscribers
//!   or for one user's sessions, or a control notice.
//! - [`Bus`]: the contract; [`Deliver`]: what a node does with a message it receives.
//! - [`LocalBus`]: the in-process default, for a single node: publishing is delivering.
//! - [`redis::RedisBus`]: several nodes over Redis pub/sub, with presence and a registry
//!   of nodes.
//! - [`wire`]: the form messages take between nodes (pure, fuzzed).
//!
//! Frames travel as [`SharedFrame`]s so a node encodes each frame at most once per
//! encoding, whatever the number of recipients. A cross-node bus ships the MessagePack
//! encoding and rebuilds a `SharedFrame` on arrival.

pub mod redis;
pub mod wire;

use preau_proto::{ChannelId, SharedFrame, UserId};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

/// A boxed future, so the trait stays object-safe.
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A node as the registry knows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeInfo {
    /// Node id.
    pub id: String,
    /// `gateway` or `sfu`.
    pub kind: String,
    /// Address clients or peers reach it at.
    pub addr: String,
    /// Current load (open connections, or peers for an SFU).
    pub load: u64,
    /// Last heartbeat, milliseconds since the epoch.
    pub updated_ms: i64,
}

/// Who a frame is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Every session subscribed to the channel.
    Channel(ChannelId),
    /// Every session of the user. `channel_added` and `channel_removed` frames also
    /// (un)subscribe those sessions, so membership changes reach every node.
    User(UserId),
}

/// A message on the bus.
#[derive(Clone, Debug)]
pub enum BusMessage {
    /// Deliver a frame.
    Frame {
        /// Recipients.
        topic: Topic,
        /// The frame, shared.
        frame: Arc<SharedFrame>,
    },
    /// The directory of a school changed: reload it and re-check every session's channels.
    DirectoryChanged {
        /// UAIs of the schools replaced.
        schools: Vec<String>,
    },
    /// A node-wide setting changed in the store (the messaging suspensions): reload it.
    SettingsChanged {
        /// The setting's key.
        key: String,
    },
    /// End every session of a user, on every node (the ENT signed them out).
    Disconnect {
        /// The user.
        user: UserId,
    },
}

/// What a node does with a message from the bus. Must not block: it only queues.
pub trait Deliver: Send + Sync {
    /// Handles one message.
    fn deliver(&self, msg: &BusMessage);
}

/// The bus contract.
pub trait Bus: Send + Sync {
    /// Publishes to every node, this one first. Never blocks; per-publisher order is kept.
    fn publish(&self, msg: BusMessage);
    /// Sets the local node's handler; messages published before are dropped.
    fn attach(&self, node: Arc<dyn Deliver>);
    /// Whether the bus can publish now (for readiness, and to refuse writes whose events
    /// could not reach other nodes).
    fn healthy(&self) -> bool;
    /// This node now holds (or no longer holds) sessions interested in `topic`, so it must
    /// receive (or may stop receiving) what other nodes publish to it.
    fn interest(&self, _topic: &Topic, _on: bool) {}
    /// Which of `users` have a session on some other node (this node's own sessions are
    /// known to its hub).
    fn online_elsewhere(&self, users: Vec<UserId>) -> BoxFut<'_, Vec<bool>> {
        let n = users.len();
        Box::pin(async move { vec![false; n] })
    }
    /// Reports this node's load to the registry.
    fn set_load(&self, _load: u64) {}
    /// The signaling URL of the SFU node hosting live room `room`, placing the room on the
    /// least loaded live SFU node when it is not live yet. `None` without a registry (the
    /// gateway then uses its configured SFU).
    fn place_room<'a>(&'a self, _room: &'a str) -> BoxFut<'a, Option<String>> {
        Box::pin(async { None })
    }
    /// Every live node of the registry (none for an in-process bus).
    fn nodes(&self) -> BoxFut<'_, Vec<NodeInfo>> {
        Box::pin(async { Vec::new() })
    }
}

/// The in-process bus: one node, publishing is delivering locally.
#[derive(Default)]
pub struct LocalBus {
    node: OnceLock<Arc<dyn Deliver>>,
}

impl LocalBus {
    /// A bus with no node attached yet.
    pub fn new() -> Self {
        LocalBus::default()
    }
}

impl Bus for LocalBus {
    fn publish(&self, msg: BusMessage) {
        if let Some(n) = self.node.get() {
            n.deliver(&msg);
        }
    }

    fn attach(&self, node: Arc<dyn Deliver>) {
        let _ = self.node.set(node);
    }

    fn healthy(&self) -> bool {
        self.node.get().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use preau_proto::ServerFrame;
    use std::sync::Mutex;

    struct Rec(Mutex<Vec<String>>);
    impl Deliver for Rec {
        fn deliver(&self, msg: &BusMessage) {
            if let (Ok(mut v), BusMessage::Frame { topic: Topic::User(u), .. }) = (self.0.lock(), msg) {
                v.push(u.clone());
            }
        }
    }

    #[test]
    fn local_bus_delivers_in_order_once_attached() {
        let bus = LocalBus::new();
        let frame = Arc::new(SharedFrame::new(ServerFrame::Presence { user: "a".into(), online: true }));
        bus.publish(BusMessage::Frame { topic: Topic::User("lost".into()), frame: frame.clone() });
        assert!(!bus.healthy());
        let rec = Arc::new(Rec(Mutex::new(Vec::new())));
        bus.attach(rec.clone());
        for u in ["a", "b", "c"] {
            bus.publish(BusMessage::Frame { topic: Topic::User(u.into()), frame: frame.clone() });
        }
        assert_eq!(*rec.0.lock().expect("lock"), vec!["a", "b", "c"]);
        assert!(bus.healthy());
    }
}

//! The Redis bus: several gateway nodes share fan-out, presence and a node registry
//! through one Redis.
//!
//! - **Fan-out.** A node delivers what it publishes to its own sessions at once, then
//!   publishes it on `preau:c:<channel>` or `preau:u:<user>` (control on `preau:ctl`)
//!   with its node id; other nodes deliver it to their sessions and skip their own
//!   messages. A node subscribes only to the channels and users its sessions hold (the
//!   hub reports them through [`Bus::interest`]). Frames travel MessagePack-encoded and
//!   are not encoded again on arrival.
//! - **Order.** One publisher task per node keeps each node's order; a channel written
//!   from several nodes may arrive out of order, which the receiving gateway repairs from
//!   the gapless seqs before its sessions see them (`gateway/src/order.rs`).
//! - **Outage.** A PING every second and any failed publish decide [`Bus::healthy`]; the
//!   connection manager reconnects with backoff and re-subscribes by itself. While
//!   unhealthy the gateway is not ready and refuses writes with a retryable error; what is
//!   published meanwhile is dropped (it is durable in the store, and every gateway
//!   catches its channels up from it once the bus is healthy again).
//! - **Presence.** `preau:p:<user>` is a sorted set of node ids scored by expiry; each
//!   node refreshes its users every 20 s with a 60 s expiry, so a dead node's users age
//!   out. **Registry.** `preau:nodes` maps node ids to [`NodeInfo`] JSON.
//!
//! Sequences are not allocated here: a seq taken from Redis and then not stored (a crash
//! between the two) would leave a hole. The store allocates them inside the durable write.

use crate::{BoxFut, Bus, BusMessage, Deliver, NodeInfo, Topic};
use preau_proto::clock::Clock as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, PushInfo, PushKind, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::mpsc;

/// Messages waiting for the publisher task. Bounded: while Redis is down, publishing
/// drops rather than grows memory (the store holds everything; clients resume).
const PUBLISH_QUEUE: usize = 16_384;
/// How often presence is refreshed, and how long it lasts without refresh.
const PRESENCE_EVERY: Duration = Duration::from_secs(20);
const PRESENCE_TTL_MS: i64 = 60_000;
/// Registry heartbeat, and the age after which a node is considered gone.
const REGISTRY_EVERY: Duration = Duration::from_secs(5);
const REGISTRY_STALE_MS: i64 = 20_000;
use crate::wire::{CONTROL, decode, encode, topic_key};

/// Why the Redis bus could not start.
#[derive(Debug, thiserror::Error)]
pub enum RedisBusError {
    /// The URL is invalid or Redis did not answer.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer in time.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
}

/// Presence and registry stamps are compared across nodes: the system clock.
fn now_ms() -> i64 {
    preau_proto::clock::SystemClock.now_ms()
}

enum Sub {
    On(String),
    Off(String),
}

/// The Redis bus of one node.
pub struct RedisBus {
    id: String,
    conn: ConnectionManager,
    node: Arc<OnceLock<Arc<dyn Deliver>>>,
    publish: mpsc::Sender<(String, Vec<u8>)>,
    subs: mpsc::UnboundedSender<Sub>,
    healthy: Arc<AtomicBool>,
    /// Users with a session on this node, refreshed in Redis presence.
    local_users: Arc<Mutex<HashSet<String>>>,
    /// What this node tells the registry about itself.
    info: Arc<Mutex<NodeInfo>>,
}

impl RedisBus {
    /// Connects to `url` (RESP3 is switched on if the URL does not say so) and starts the
    /// publisher, subscriber, health, presence and registry tasks.
    pub async fn connect(url: &str, node_id: &str, kind: &str, addr: &str) -> Result<Arc<RedisBus>, RedisBusError> {
        let url = if url.contains("protocol=") {
            url.to_owned()
        } else if url.contains('?') {
            format!("{url}&protocol=resp3")
        } else {
            format!("{url}/?protocol=resp3").replace("//?", "/?")
        };
        let client = redis::Client::open(url)?;
        let node: Arc<OnceLock<Arc<dyn Deliver>>> = Arc::new(OnceLock::new());
        let me = node_id.to_owned();
        let n2 = node.clone();
        // Runs on the connection's task: decode and queue to sessions, never block.
        let push = move |p: PushInfo| -> Result<(), std::convert::Infallible> {
            if p.kind != PushKind::Message {
                return Ok(());
            }
            let (Some(Value::BulkString(ch)), Some(Value::BulkString(payload))) = (p.data.first(), p.data.get(1))
            else {
                return Ok(());
            };
            let Ok(ch) = std::str::from_utf8(ch) else { return Ok(()) };
            if let (Some(msg), Some(n)) = (decode(&me, ch, payload), n2.get()) {
                n.deliver(&msg);
            }
            Ok(())
        };
        let cfg = ConnectionManagerConfig::new()
            .set_push_sender(push)
            .set_automatic_resubscription()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_max_delay(Duration::from_secs(2));
        let timeout = Duration::from_secs(5);
        let mut conn = tokio::time::timeout(timeout, client.get_connection_manager_with_config(cfg))
            .await
            .map_err(|_| RedisBusError::Timeout(timeout))??;
        conn.subscribe(CONTROL).await?;
        let (publish, mut pub_rx) = mpsc::channel::<(String, Vec<u8>)>(PUBLISH_QUEUE);
        let (subs, mut sub_rx) = mpsc::unbounded_channel::<Sub>();
        let healthy = Arc::new(AtomicBool::new(true));
        let info = Arc::new(Mutex::new(NodeInfo {
            id: node_id.to_owned(),
            kind: kind.to_owned(),
            addr: addr.to_owned(),
            load: 0,
            updated_ms: now_ms(),
        }));
        let bus = Arc::new(RedisBus {
            id: node_id.to_owned(),
            conn: conn.clone(),
            node,
            publish,
            subs,
            healthy: healthy.clone(),
            local_users: Arc::new(Mutex::new(HashSet::new())),
            info,
        });
        // Publisher: one task, so this node's order is Redis's order.
        let mut c = conn.clone();
        let h = healthy.clone();
        tokio::spawn(async move {
            while let Some((ch, payload)) = pub_rx.recv().await {
                if let Err(e) = c.publish::<_, _, ()>(&ch, payload).await {
                    h.store(false, Ordering::Relaxed);
                    tracing::debug!(error = %e, "publish to redis failed; dropped (durable in the store)");
                }
            }
        });
        // Subscriber: applies interest changes in order.
        let mut c = conn.clone();
        tokio::spawn(async move {
            while let Some(s) = sub_rx.recv().await {
                let r = match &s {
                    Sub::On(ch) => c.subscribe(ch).await,
                    Sub::Off(ch) => c.unsubscribe(ch).await,
                };
                if let Err(e) = r {
                    // The manager re-subscribes what it knows after reconnecting; a failed
                    // subscribe is retried once the connection is back.
                    tracing::warn!(error = %e, "redis (un)subscribe failed");
                    if let Sub::On(ch) = s {
                        let mut c2 = c.clone();
                        tokio::spawn(async move {
                            for _ in 0..30 {
                                tokio::time::sleep(Duration::from_secs(1)).await;
                                if c2.subscribe(&ch).await.is_ok() {
                                    break;
                                }
                            }
                        });
                    }
                }
            }
        });
        // Health, presence and registry heartbeats.
        let weak = Arc::downgrade(&bus);
        tokio::spawn(heartbeats(weak));
        Ok(bus)
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.id
    }

    /// The SFU node hosting live room `room`: the node holding it while it lives, else
    /// the least loaded live SFU node, claimed for it. `None` when no SFU node is live.
    pub async fn place_room_node(&self, room: &str) -> Result<Option<NodeInfo>, RedisBusError> {
        let mut c = self.conn.clone();
        let sfus: Vec<NodeInfo> = self.nodes().await.into_iter().filter(|n| n.kind == "sfu").collect();
        let key = room_key(room);
        for _ in 0..3 {
            let owner: Option<String> = c.get(&key).await?;
            if let Some(o) = owner {
                if let Some(n) = sfus.iter().find(|n| n.id == o) {
                    return Ok(Some(n.clone()));
                }
                // Its node stopped heartbeating: the room is placed again.
                c.del::<_, ()>(&key).await?;
            }
            let Some(n) = least_loaded(&sfus) else { return Ok(None) };
            let set: Option<String> =
                redis::cmd("SET").arg(&key).arg(&n.id).arg("NX").arg("EX").arg(ROOM_TTL_S).query_async(&mut c).await?;
            if set.is_some() {
                return Ok(Some(n.clone()));
            }
        }
        Ok(None)
    }

    /// An SFU node holds `room` while it lives (claims or refreshes it). False when a
    /// live node holds it already: its members must go there.
    pub async fn hold_room(&self, room: &str) -> Result<bool, RedisBusError> {
        let mut c = self.conn.clone();
        let key = room_key(room);
        let set: Option<String> =
            redis::cmd("SET").arg(&key).arg(&self.id).arg("NX").arg("EX").arg(ROOM_TTL_S).query_async(&mut c).await?;
        if set.is_some() {
            return Ok(true);
        }
        let owner: Option<String> = c.get(&key).await?;
        match owner {
            Some(o) if o == self.id => {
                c.expire::<_, ()>(&key, ROOM_TTL_S as i64).await?;
                Ok(true)
            }
            Some(o) if self.nodes().await.iter().any(|n| n.id == o) => Ok(false),
            _ => {
                c.set_ex::<_, _, ()>(&key, &self.id, ROOM_TTL_S).await?;
                Ok(true)
            }
        }
    }

    /// An SFU node's room ended: the next class may be placed anywhere.
    pub async fn release_room(&self, room: &str) {
        let mut c = self.conn.clone();
        let key = room_key(room);
        if c.get::<_, Option<String>>(&key).await.ok().flatten().as_deref() == Some(self.id.as_str()) {
            let _ = c.del::<_, ()>(&key).await;
        }
    }
}

impl RedisBus {
    /// Who is in which breakout group of `class_room` (`school/class:<id>`), for the
    /// groups' rooms on any node; empty: the groups are back. Kept 4 hours at most.
    pub async fn set_breakouts(&self, class_room: &str, assignments: &[(String, String)]) -> Result<(), RedisBusError> {
        let mut c = self.conn.clone();
        let key = format!("preau:breakout:{class_room}");
        let mut pipe = redis::pipe();
        pipe.atomic().del(&key);
        if !assignments.is_empty() {
            pipe.hset_multiple(&key, assignments).expire(&key, 4 * 3600);
        }
        pipe.query_async::<()>(&mut c).await?;
        Ok(())
    }

    /// The breakout group `user` is in, in `class_room`.
    pub async fn breakout_group(&self, class_room: &str, user: &str) -> Result<Option<String>, RedisBusError> {
        let mut c = self.conn.clone();
        Ok(c.hget(format!("preau:breakout:{class_room}"), user).await?)
    }
}

/// How long a room stays placed without its node refreshing it.
const ROOM_TTL_S: u64 = 60;

fn room_key(room: &str) -> String {
    format!("preau:room:{room}")
}

/// The least loaded node (ties go to the smallest id, so concurrent placers agree).
pub fn least_loaded(nodes: &[NodeInfo]) -> Option<&NodeInfo> {
    nodes.iter().min_by(|a, b| a.load.cmp(&b.load).then_with(|| a.id.cmp(&b.id)))
}

async fn heartbeats(bus: Weak<RedisBus>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        let Some(b) = bus.upgrade() else { return };
        let mut c = b.conn.clone();
        let ok = tokio::time::timeout(Duration::from_secs(1), redis::cmd("PING").query_async::<String>(&mut c))
            .await
            .is_ok_and(|r| r.is_ok());
        let was = b.healthy.swap(ok, Ordering::Relaxed);
        if was != ok {
            if ok {
                tracing::info!("redis reachable again");
            } else {
                tracing::warn!("redis unreachable: not ready, refusing writes");
            }
        }
        if !ok {
            continue;
        }
        if n.is_multiple_of(REGISTRY_EVERY.as_secs()) {
            let info = b.info.lock().map(|i| i.clone()).ok();
            if let Some(mut info) = info {
                info.updated_ms = now_ms();
                if let Ok(json) = serde_json::to_string(&info) {
                    let _ = c.hset::<_, _, _, ()>("preau:nodes", &info.id, json).await;
                }
            }
        }
        if n.is_multiple_of(PRESENCE_EVERY.as_secs()) || !was {
            let users: Vec<String> = b.local_users.lock().map(|u| u.iter().cloned().collect()).unwrap_or_default();
            let expiry = now_ms() + PRESENCE_TTL_MS;
            for chunk in users.chunks(500) {
                let mut p = redis::pipe();
                for u in chunk {
                    p.zadd(format!("preau:p:{u}"), &b.id, expiry).ignore();
                    p.pexpire(format!("preau:p:{u}"), PRESENCE_TTL_MS).ignore();
                }
                let _ = p.query_async::<()>(&mut c).await;
            }
        }
        n += 1;
    }
}

impl Bus for RedisBus {
    fn publish(&self, msg: BusMessage) {
        if let Some(n) = self.node.get() {
            n.deliver(&msg);
        }
        if let Some(out) = encode(&self.id, &msg)
            && self.publish.try_send(out).is_err()
        {
            tracing::debug!("redis publish queue full; dropped (durable in the store)");
        }
    }

    fn attach(&self, node: Arc<dyn Deliver>) {
        let _ = self.node.set(node);
    }

    fn healthy(&self) -> bool {
        self.node.get().is_some() && self.healthy.load(Ordering::Relaxed)
    }

    fn interest(&self, topic: &Topic, on: bool) {
        let key = topic_key(topic);
        let _ = self.subs.send(if on { Sub::On(key) } else { Sub::Off(key) });
        if let Topic::User(u) = topic {
            let added = self.local_users.lock().map(|mut s| if on { s.insert(u.clone()) } else { s.remove(u) });
            if added.unwrap_or(false) {
                let mut c = self.conn.clone();
                let (id, key) = (self.id.clone(), format!("preau:p:{u}"));
                tokio::spawn(async move {
                    let _ = if on {
                        c.zadd::<_, _, _, ()>(&key, &id, now_ms() + PRESENCE_TTL_MS).await
                    } else {
                        c.zrem::<_, _, ()>(&key, &id).await
                    };
                });
            }
        }
    }

    fn set_load(&self, load: u64) {
        if let Ok(mut i) = self.info.lock() {
            i.load = load;
        }
    }

    fn online_elsewhere(&self, users: Vec<String>) -> BoxFut<'_, Vec<bool>> {
        Box::pin(async move {
            let mut c = self.conn.clone();
            let now = now_ms();
            let mut p = redis::pipe();
            for u in &users {
                p.zrangebyscore(format!("preau:p:{u}"), now, "+inf");
            }
            let nodes: Vec<Vec<String>> = p.query_async(&mut c).await.unwrap_or_else(|_| vec![Vec::new(); users.len()]);
            nodes.into_iter().map(|ns| ns.iter().any(|n| *n != self.id)).collect()
        })
    }

    fn place_room<'a>(&'a self, room: &'a str) -> BoxFut<'a, Option<String>> {
        Box::pin(async move {
            match self.place_room_node(room).await {
                Ok(n) => n.map(|n| n.addr),
                Err(e) => {
                    tracing::warn!(error = %e, "room placement failed");
                    None
                }
            }
        })
    }

    fn nodes(&self) -> BoxFut<'_, Vec<NodeInfo>> {
        Box::pin(async move {
            let mut c = self.conn.clone();
            let all: Vec<(String, String)> = c.hgetall("preau:nodes").await.unwrap_or_default();
            let now = now_ms();
            all.into_iter()
                .filter_map(|(_, json)| serde_json::from_str::<NodeInfo>(&json).ok())
                .filter(|n| now - n.updated_ms < REGISTRY_STALE_MS)
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_picks_the_least_loaded_node() {
        let n =
            |id: &str, load| NodeInfo { id: id.into(), kind: "sfu".into(), addr: String::new(), load, updated_ms: 0 };
        let nodes = [n("b", 10), n("a", 10), n("c", 3)];
        assert_eq!(least_loaded(&nodes).map(|n| n.id.as_str()), Some("c"));
        assert_eq!(least_loaded(&nodes[..2]).map(|n| n.id.as_str()), Some("a"), "ties: smallest id");
        assert_eq!(least_loaded(&[]), None);
    }
}

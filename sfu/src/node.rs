//! One SFU node: its media engine over one UDP port, the room-token verifier, the
//! live rooms (one task each, started on first join) and its entry in the registry.

use crate::config::SfuConfig;
use crate::engine::{Engine, NetConfig};
use crate::error::registry_unavailable;
use crate::metrics as m;
use crate::room::RoomConfig;
use crate::room_task::{self, RoomRef};
use parking_lot::Mutex;
use preau_auth::Verifier;
use preau_bus::Bus;
use preau_live::signal::{SignalCode, SignalError};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// One SFU node.
pub struct Sfu {
    pub(crate) cfg: SfuConfig,
    pub(crate) engine: Engine,
    pub(crate) verifier: Verifier,
    /// Live rooms by `school/room`. Locked only to find or start a room, never on the
    /// media or signaling path.
    rooms: Mutex<HashMap<String, Arc<RoomRef>>>,
    next_peer: AtomicU64,
    peers: AtomicU64,
    pub(crate) bus: Option<Arc<preau_bus::redis::RedisBus>>,
    pub(crate) prom: Option<metrics_exporter_prometheus::PrometheusHandle>,
    draining: AtomicBool,
    /// Recordings: the folder, this node's download base, the gateway to list them with.
    pub(crate) recordings: Arc<crate::record::Store>,
    /// Breakout groups of the classes live here: class room key to (user, group). The
    /// registry holds them too, for groups placed on other nodes.
    breakouts: Mutex<HashMap<String, HashMap<String, String>>>,
}

impl Sfu {
    /// Binds the UDP port, loads the room key, joins the registry when `--redis` is set.
    pub async fn start(
        cfg: SfuConfig,
        public_url: String,
        prom: Option<metrics_exporter_prometheus::PrometheusHandle>,
    ) -> anyhow::Result<Arc<Sfu>> {
        let engine = Engine::start(&NetConfig {
            udp: cfg.udp,
            public_ips: cfg.public_ip.clone(),
            threads: cfg.engine_threads,
            estimate: cfg.estimate_bandwidth,
        })?;
        let verifier = match &cfg.room_public_key {
            Some(pem) => {
                let alg = preau_auth::parse_algorithm(&cfg.room_alg)?;
                let key = std::fs::read(pem).map_err(|e| anyhow::anyhow!("room public key {}: {e}", pem.display()))?;
                Verifier::from_pem(alg, &key).map_err(|e| {
                    anyhow::anyhow!("room public key {}: not a usable {} key: {e}", pem.display(), cfg.room_alg)
                })?
            }
            None => {
                let key = std::fs::read(&cfg.room_key_file).map_err(|e| {
                    anyhow::anyhow!(
                        "room key {}: {e} (start the gateway first in development mode, or pass --room-public-key)",
                        cfg.room_key_file.display()
                    )
                })?;
                Verifier::hs256(&key)
            }
        };
        let bus = match &cfg.redis {
            Some(url) => Some(preau_bus::redis::RedisBus::connect(url, &cfg.node_id, "sfu", &public_url).await?),
            None => None,
        };
        let recordings = crate::record::Store::new(&cfg, crate::config::http_base(&public_url))?;
        if recordings.enabled() {
            recordings.spawn_sweeper();
        }
        Ok(Arc::new(Sfu {
            recordings,
            breakouts: Mutex::new(HashMap::new()),
            cfg,
            engine,
            verifier,
            rooms: Mutex::new(HashMap::new()),
            next_peer: AtomicU64::new(1),
            peers: AtomicU64::new(0),
            bus,
            prom,
            draining: AtomicBool::new(false),
        }))
    }

    /// Media engine threads.
    pub fn engine_threads(&self) -> usize {
        self.engine.shard_count()
    }

    /// The UDP address media uses.
    pub fn udp_addr(&self) -> std::net::SocketAddr {
        self.engine.udp_addr()
    }

    fn set_load(&self) {
        let peers = self.peers.load(Ordering::Relaxed);
        metrics::gauge!(m::PEERS).set(peers as f64);
        if let Some(b) = &self.bus {
            // A draining node looks full, so placement sends new classes elsewhere.
            b.set_load(if self.is_draining() { u64::MAX / 2 } else { peers });
        }
    }

    /// Peers connected now.
    pub fn peer_count(&self) -> u64 {
        self.peers.load(Ordering::Relaxed)
    }

    /// Whether the node is full.
    pub fn is_full(&self) -> bool {
        self.peer_count() >= self.cfg.max_peers
    }

    /// Whether the node is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Whether the node takes new peers: registry reachable, not draining, not full.
    pub fn ready(&self) -> bool {
        self.bus.as_ref().is_none_or(|b| b.healthy()) && !self.is_draining() && !self.is_full()
    }

    /// Stops taking new rooms (SIGTERM): readiness fails, placement avoids this node;
    /// running classes go on until they end or the drain time runs out.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.set_load();
    }

    /// A new peer id on this node.
    pub(crate) fn new_peer(&self) -> u64 {
        self.next_peer.fetch_add(1, Ordering::Relaxed)
    }

    /// A peer joined a room (counted for load and readiness).
    pub(crate) fn peer_joined(&self) {
        self.peers.fetch_add(1, Ordering::Relaxed);
        self.set_load();
    }

    /// A peer left.
    pub(crate) fn peer_left(&self) {
        self.peers.fetch_sub(1, Ordering::Relaxed);
        self.set_load();
    }

    /// Records who is in which breakout group of `class_room` (empty: back), here and in
    /// the registry.
    pub(crate) async fn set_breakouts(&self, class_room: &str, assignments: Vec<(String, String)>) {
        if let Some(b) = &self.bus
            && let Err(e) = b.set_breakouts(class_room, &assignments).await
        {
            tracing::warn!(room = %class_room, error = %e, "registry unreachable: breakout groups known on this node only");
        }
        let mut all = self.breakouts.lock();
        if assignments.is_empty() {
            all.remove(class_room);
        } else {
            all.insert(class_room.to_owned(), assignments.into_iter().collect());
        }
    }

    /// The breakout group `user` is in, in `class_room`: known here when the class is
    /// live on this node, else from the registry.
    pub(crate) async fn breakout_group(&self, class_room: &str, user: &str) -> Option<String> {
        if let Some(g) = self.breakouts.lock().get(class_room).and_then(|m| m.get(user)) {
            return Some(g.clone());
        }
        match &self.bus {
            Some(b) => b.breakout_group(class_room, user).await.ok().flatten(),
            None => None,
        }
    }

    /// A room task ended.
    pub(crate) fn room_closed(&self, key: &str) {
        self.rooms.lock().remove(key);
    }

    /// The room task for `key`, started on first use; `elsewhere` when the registry
    /// places the room on another node or this one is draining.
    pub(crate) async fn room(self: &Arc<Self>, key: &str) -> Result<Arc<RoomRef>, SignalError> {
        if let Some(r) = self.rooms.lock().get(key).filter(|r| r.is_open()) {
            return Ok(r.clone());
        }
        if self.is_draining() {
            return Err(SignalError::new(SignalCode::Elsewhere, "this node is restarting: ask the gateway again"));
        }
        if let Some(bus) = &self.bus {
            match bus.hold_room(key).await {
                Ok(true) => {}
                Ok(false) => {
                    return Err(SignalError::new(
                        SignalCode::Elsewhere,
                        "this class is live on another node: ask the gateway again",
                    ));
                }
                Err(e) => return Err(registry_unavailable(e)),
            }
        }
        let mut rooms = self.rooms.lock();
        if let Some(r) = rooms.get(key).filter(|r| r.is_open()) {
            return Ok(r.clone());
        }
        let capacity = if key.contains("/assembly:") { self.cfg.assembly_capacity } else { self.cfg.class_capacity };
        let rc = if key.contains('~') {
            // A breakout group: pupils sent by their class talk at once; it lives while
            // anyone is in it, with or without the teacher.
            RoomConfig { capacity, host_grace: Duration::from_secs(4 * 3600), waiting_room: false, open_floor: true }
        } else {
            let host_grace = Duration::from_secs(self.cfg.host_grace);
            RoomConfig { capacity, host_grace, waiting_room: true, open_floor: false }
        };
        let r = room_task::spawn(self.clone(), key.to_owned(), rc);
        rooms.insert(key.to_owned(), r.clone());
        Ok(r)
    }
}

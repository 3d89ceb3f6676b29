//! The gateway's shared state: settings, directory snapshot, store, bus, hub and keys.
//! Commands live in [`crate::cmd`]; the store's commit hook, here, publishes what was
//! committed, in order.

use crate::cmd::error::bad;
use crate::cmd::suspension::{self, Scope, Suspension, Suspensions};
use crate::cmd::{self, CmdError};
use crate::config::Config;
use crate::hub::{DirectoryReload, Hub, Node};
use crate::metrics as m;
use parking_lot::RwLock;
use preau_auth::{Issuer, Verifier};
use preau_bus::{Bus, BusMessage, LocalBus, Topic};
use preau_directory::{Directory, DirectoryDoc, Profile, UserRec};
use preau_proto::clock::SharedClock;
use preau_proto::*;
use preau_store::{Appended, CommitHook, Committed, SqliteOptions, SqliteStore, Store};
use rand::Rng;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::time::Instant;

pub use crate::cmd::room::RoomTicket;
pub use crate::cmd::{Access, error::MAX_CLIENT_ID, forum::MAX_MUTE_MINUTES, post::MAX_TITLE_BYTES, read::MAX_PAGE};

/// Times a store call into the `op` histogram.
pub(crate) async fn timed<T>(op: &'static str, f: impl Future<Output = T>) -> T {
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
    /// The portal's JWKS URL, when the keys come from there (`--jwks-url`).
    pub jwks: Option<Arc<crate::jwks::Jwks>>,
    /// Token issuing (development mode only).
    pub issuer: Option<Issuer>,
    /// Room token signing (development key in development mode).
    pub room_issuer: Option<Issuer>,
    next_session: AtomicU64,
    /// Set on SIGTERM: refuse new connections, tell sessions to reconnect elsewhere.
    pub draining: AtomicBool,
    /// Open sessions on this node (the load it reports to the registry).
    pub open: AtomicU64,
    /// The wall clock (message stamps, mute deadlines).
    pub clock: SharedClock,
    /// Messaging suspensions in force (read-mostly; swapped whole).
    suspensions: RwLock<Arc<Suspensions>>,
    /// Mass-send brakes, per user.
    brakes: cmd::brake::Brakes,
    /// The ENT back end's API keys (`--api-keys-file`).
    pub api_keys: Vec<crate::server_api::ApiKey>,
    /// Push-notification settings read lately, with when (kept a minute: other nodes
    /// may change them).
    pub(crate) notify: parking_lot::Mutex<std::collections::HashMap<String, (Instant, crate::webhook::NotifyPrefs)>>,
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

    fn reload_settings(&self, key: &str) {
        let Some(g) = self.0.upgrade() else { return };
        if key != suspension::KEY {
            return;
        }
        tokio::spawn(async move {
            match load_suspensions(g.store.as_ref()).await {
                Ok(s) => *g.suspensions.write() = Arc::new(s),
                Err(e) => tracing::warn!(error = %e, "suspensions reload failed; keeping the current ones"),
            }
        });
    }
}

async fn load_suspensions(store: &dyn Store) -> anyhow::Result<Suspensions> {
    Ok(match store.load_setting(suspension::KEY).await? {
        Some(json) => serde_json::from_str(&json)?,
        None => Suspensions::default(),
    })
}

/// Turns committed store changes into bus messages; runs on the store's writer thread,
/// in commit order, so a channel's events are published in seq order.
fn commit_hook(bus: Arc<dyn Bus>, webhook: Option<tokio::sync::mpsc::Sender<Appended>>) -> CommitHook {
    Box::new(move |c| match c {
        Committed::Entry(a) => {
            metrics::counter!(m::MESSAGES_STORED).increment(1);
            // Offered to the push notices; never waits (the writer must not).
            if let Some(w) = &webhook
                && crate::webhook::interesting(a)
                && w.try_send(a.clone()).is_err()
            {
                metrics::counter!(m::WEBHOOK_EVENTS, "outcome" => "dropped").increment(1);
            }
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

/// Every 50 ms: reads the gaps that stayed open a whole window; when the bus comes back
/// after an outage, catches every channel up from the store; every 10 s, forgets the
/// channels no session holds any more.
async fn repair_order(order: std::sync::Weak<crate::hub::Ordered>, bus: std::sync::Weak<dyn Bus>) {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut healthy = true;
    let mut n = 0u64;
    loop {
        tick.tick().await;
        let (Some(order), Some(bus)) = (order.upgrade(), bus.upgrade()) else { return };
        let now = bus.healthy();
        if now && !healthy {
            tracing::info!("bus back: catching every channel up from the store");
            order.catch_up();
        }
        healthy = now;
        order.tick();
        n += 1;
        if n.is_multiple_of(200) {
            order.forget_idle();
        }
    }
}

impl Gateway {
    /// Opens the store in the data folder, loads (or, in development mode, seeds) the
    /// directory and attaches the hub to the in-process bus.
    pub async fn start(cfg: Config) -> anyhow::Result<Arc<Gateway>> {
        Gateway::start_with_clock(cfg, preau_proto::clock::system()).await
    }

    /// [`Gateway::start`] with a given wall clock (tests move it by hand).
    pub async fn start_with_clock(cfg: Config, clock: SharedClock) -> anyhow::Result<Arc<Gateway>> {
        Gateway::start_inner(cfg, clock, false).await
    }

    /// The gateway of a command-line tool (`import`, `purge`, `erase`, `export`): it
    /// serves nobody, so it never loads the demo school nor makes a development key, and
    /// needs no token keys (a production folder stays as it was but for the tool's work).
    pub async fn start_tool(cfg: Config) -> anyhow::Result<Arc<Gateway>> {
        Gateway::start_inner(cfg, preau_proto::clock::system(), true).await
    }

    async fn start_inner(cfg: Config, clock: SharedClock, tool: bool) -> anyhow::Result<Arc<Gateway>> {
        std::fs::create_dir_all(&cfg.data_dir)?;
        let (webhook_tx, webhook_rx) = match (&cfg.webhook_url, tool) {
            (Some(_), false) => {
                let (tx, rx) = tokio::sync::mpsc::channel(crate::webhook::ENTRY_QUEUE);
                (Some(tx), Some(rx))
            }
            _ => (None, None),
        };
        let api_keys = match &cfg.api_keys_file {
            Some(p) if !tool => crate::server_api::load_keys(p).map_err(anyhow::Error::msg)?,
            _ => Vec::new(),
        };
        let bus: Arc<dyn Bus> = match &cfg.redis {
            Some(url) => {
                let id = cfg.node_id();
                let bus = preau_bus::redis::RedisBus::connect(url, &id, "gateway", &cfg.listen.to_string()).await?;
                tracing::info!(node = %id, "redis bus connected");
                bus
            }
            None => Arc::new(LocalBus::new()),
        };
        let store: Arc<dyn Store> = match (cfg.postgres(), cfg.scylla()) {
            (Some(mut po), _) => {
                po.clock = clock.clone();
                Arc::new(preau_store::PgStore::open(po, commit_hook(bus.clone(), webhook_tx.clone())).await?)
            }
            (None, Some(mut so)) => {
                so.clock = clock.clone();
                open_scylla(&so, commit_hook(bus.clone(), webhook_tx.clone())).await?
            }
            (None, None) => {
                let mut opts = SqliteOptions::new(cfg.data_dir.join("preau.db"));
                opts.sync_full = cfg.sync_full;
                opts.shared = cfg.store_shared();
                opts.clock = clock.clone();
                Arc::new(SqliteStore::open(opts, commit_hook(bus.clone(), webhook_tx.clone()))?)
            }
        };
        let keys = crate::keys::load(&cfg, tool).await?;
        let dir = load_directory(store.as_ref(), cfg.dev_mode() && !tool).await?;
        let suspensions = load_suspensions(store.as_ref()).await?;
        let cfg_brake = cfg.brake();
        let hub = Arc::new(Hub::new(cfg.max_connections_per_user, (cfg.sends_per_second, cfg.send_burst)));
        let g = Arc::new(Gateway {
            cfg,
            dir: RwLock::new(Arc::new(dir)),
            store,
            bus: bus.clone(),
            hub: hub.clone(),
            verifier: keys.verifier,
            jwks: keys.jwks,
            issuer: keys.issuer,
            room_issuer: keys.room_issuer,
            next_session: AtomicU64::new(1),
            draining: AtomicBool::new(false),
            open: AtomicU64::new(0),
            clock,
            suspensions: RwLock::new(Arc::new(suspensions)),
            brakes: cmd::brake::Brakes::new(cfg_brake),
            api_keys,
            notify: parking_lot::Mutex::new(std::collections::HashMap::new()),
        });
        if let (Some(rx), Some(url), Some(secret)) = (webhook_rx, &g.cfg.webhook_url, &g.cfg.webhook_secret_file) {
            let secret = std::fs::read(secret)
                .map_err(|e| anyhow::anyhow!("--webhook-secret-file {}: {e}", secret.display()))?;
            anyhow::ensure!(secret.len() >= 32, "--webhook-secret-file: the key must hold at least 32 bytes");
            let settings = crate::webhook::Settings {
                url: url.clone(),
                secret,
                max_batch: g.cfg.webhook_max_batch,
                batch_wait: Duration::from_millis(g.cfg.webhook_batch_ms),
                previews: g.cfg.webhook_previews,
            };
            crate::webhook::start(&g, settings, rx);
        }
        let order = crate::hub::Ordered::new(hub.clone(), g.store.clone(), tokio::runtime::Handle::current());
        let (weak_bus, weak_order) = (Arc::downgrade(&bus), Arc::downgrade(&order));
        hub.set_interest(Box::new(move |t, on| {
            if let Some(b) = weak_bus.upgrade() {
                b.interest(t, on);
            }
            if let (Topic::Channel(ch), true, Some(o)) = (t, on, weak_order.upgrade()) {
                o.activated(ch);
            }
        }));
        bus.attach(Arc::new(Node { hub, reload: Arc::new(Reloader(Arc::downgrade(&g))), order: order.clone() }));
        tokio::spawn(repair_order(Arc::downgrade(&order), Arc::downgrade(&bus)));
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
        let before = self.dir();
        let (next, replaced) = before.with_import(doc).map_err(|e| bad(e.to_string()))?;
        let left = crate::purge::departures(&before, &next, &replaced);
        for (uai, d) in next.school_docs().filter(|(u, _)| replaced.iter().any(|r| r == u)) {
            let json = serde_json::to_string(d).map_err(|e| bad(e.to_string()))?;
            timed("save_directory", self.store.save_directory(uai, json)).await?;
        }
        *self.dir.write() = Arc::new(next);
        self.record_departures(&left).await;
        self.hub.recheck_all();
        self.bus.publish(BusMessage::DirectoryChanged { schools: replaced.clone() });
        Ok(replaced)
    }

    /// [`Gateway::import`], recorded in each replaced school's audit trail as `actor`'s.
    pub async fn import_as(&self, doc: DirectoryDoc, actor: &str) -> Result<Vec<String>, CmdError> {
        let users = doc.users.len();
        let replaced = self.import(doc).await?;
        for school in &replaced {
            let detail = format!("directory imported ({users} users in the document)");
            let e = cmd::audit::AuditEntry::new(self.clock.now_ms(), school, actor, "directory_import", detail);
            cmd::audit::record(self, e).await;
        }
        Ok(replaced)
    }

    /// Reloads the directory from the store (after another node imported).
    pub async fn reload_directory(&self) -> Result<(), CmdError> {
        let d = load_directory(self.store.as_ref(), false).await.map_err(|e| bad(e.to_string()))?;
        *self.dir.write() = Arc::new(d);
        self.hub.recheck_all();
        Ok(())
    }

    /// The suspensions in force.
    pub fn suspensions(&self) -> Arc<Suspensions> {
        self.suspensions.read().clone()
    }

    /// Suspends (`Some`) or lifts (`None`) messaging in `scope`: saved, applied here at
    /// once, and on every other node as soon as the bus tells them.
    pub async fn set_suspension(&self, scope: &Scope, s: Option<Suspension>) -> Result<Arc<Suspensions>, CmdError> {
        let next = Arc::new(self.suspensions().with(scope, s));
        let json = serde_json::to_string(next.as_ref()).map_err(|e| bad(e.to_string()))?;
        timed("save_setting", self.store.save_setting(suspension::KEY, json)).await?;
        *self.suspensions.write() = next.clone();
        self.bus.publish(BusMessage::SettingsChanged { key: suspension::KEY.into() });
        Ok(next)
    }

    /// Removes audit entries past `--audit-retention-days`; returns how many.
    pub async fn purge_expired(&self) -> u64 {
        let before = self.clock.now_ms() - i64::from(self.cfg.audit_retention_days) * 86_400_000;
        let mut n = 0;
        for kind in [cmd::audit::KIND, cmd::report::KIND] {
            match self.store.purge_records(kind, before).await {
                Ok(k) => n += k,
                Err(e) => tracing::warn!(error = %e, kind, "retention: purge failed; will try again"),
            }
        }
        n
    }

    /// Whether the node can serve: store answers and bus is up.
    pub async fn ready(&self) -> bool {
        !self.draining.load(Ordering::Relaxed) && self.bus.healthy() && self.store.ping().await.is_ok()
    }

    /// Publishes a frame to a topic.
    pub fn publish(&self, topic: Topic, frame: ServerFrame) {
        self.bus.publish(BusMessage::Frame { topic, frame: Arc::new(SharedFrame::new(frame)) });
    }

    /// Handles one command of `user` ([`crate::cmd`] routes it).
    pub async fn handle(&self, user: &str, id: u64, cmd: Command) -> Result<Ack, CmdError> {
        cmd::handle(self, user, id, cmd).await
    }

    /// Handles one command up to its answer, or, for a `send`, up to its write being
    /// queued ([`cmd::start`]).
    pub async fn begin(&self, user: &str, id: u64, cmd: Command) -> cmd::Answer {
        cmd::start(self, user, id, cmd).await
    }

    /// Takes one of the user's send tokens (shared by all their sessions on this node).
    pub fn take_send(&self, me: &str) -> Result<(), CmdError> {
        self.hub
            .take_send_token(me, Instant::now())
            .map_err(|wait| CmdError::rate_limited("too many messages; slow down", wait))
    }

    /// The mass-send brake for `me` writing to conversation `to`: `rate_limited` when
    /// slowed, `held` when held (the school's direction is told once per hold).
    pub fn brake(&self, me: &UserRec, to: &ChannelId) -> Result<(), CmdError> {
        use cmd::brake::Verdict;
        match self.brakes.on_write(&me.id, to, Instant::now()) {
            Verdict::Go => Ok(()),
            Verdict::Slow(wait) => {
                Err(CmdError::rate_limited("you are writing to many conversations at once; wait a little", wait))
            }
            Verdict::Held { left, alert, distinct } => {
                if alert {
                    metrics::counter!(m::ERRORS, "code" => "held").increment(1);
                    tracing::warn!(user = %crate::pii::Pii(&me.id), distinct, "mass-send brake: account held");
                    self.alert_direction(
                        me,
                        "mass_send",
                        format!(
                            "{} a écrit à {distinct} conversations en moins d'une minute : compte suspendu pour {} min",
                            me.name,
                            left.as_secs().div_ceil(60)
                        ),
                    );
                }
                let mut e = CmdError::new(
                    ErrorCode::Held,
                    "your account is held for a while: it wrote to too many conversations at once; the school was told",
                );
                e.retry_after_ms = Some(left.as_millis() as u64);
                Err(e)
            }
        }
    }

    /// Tells the school's direction (its staff and admins), on every node.
    pub fn alert_direction(&self, about: &UserRec, kind: &str, detail: String) {
        self.alert(self.dir().direction(&about.school), about, kind, detail);
    }

    /// Sends an `alert` about `about` to each of `to`, on every node (one encoding).
    pub fn alert(&self, to: &[String], about: &UserRec, kind: &str, detail: String) {
        let frame = Arc::new(SharedFrame::new(ServerFrame::Alert {
            kind: kind.to_owned(),
            user: about.id.clone(),
            name: about.name.clone(),
            detail,
        }));
        for u in to {
            self.bus.publish(BusMessage::Frame { topic: Topic::User(u.clone()), frame: frame.clone() });
        }
    }

    /// A fresh random group id (16 hex digits).
    pub fn new_group_id(&self) -> String {
        let mut r = rand::rng();
        (0..16).map(|_| char::from(b"0123456789abcdef"[r.random_range(0..16)])).collect()
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

    /// A room ticket for `user` in the live session of `class`, or in one of its
    /// breakout groups ([`cmd::room::ticket`]).
    pub async fn room_token(&self, user: &str, class: &str, group: Option<&str>) -> Result<RoomTicket, CmdError> {
        cmd::room::ticket(self, user, class, group).await
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

/// A jittered reconnect delay, spreading a node's clients over `spread_ms`.
pub fn reconnect_delay(spread_ms: u64) -> Duration {
    Duration::from_millis(rand::rng().random_range(0..=spread_ms.max(1)))
}

#[cfg(feature = "scylla")]
async fn open_scylla(so: &preau_store::ScyllaOptions, hook: CommitHook) -> anyhow::Result<Arc<dyn Store>> {
    Ok(Arc::new(preau_store::scylla::ScyllaStore::open(so, hook).await?))
}

#[cfg(not(feature = "scylla"))]
async fn open_scylla(_: &preau_store::ScyllaOptions, _: CommitHook) -> anyhow::Result<Arc<dyn Store>> {
    anyhow::bail!("this preau-gateway was built without ScyllaDB support: rebuild with `--features scylla`")
}

//! Typed configuration, read once at startup from flags or `PREAU_*` environment
//! variables, failing fast on anything invalid.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// `preau-gateway`: the Préau messaging gateway.
#[derive(Parser, Debug, Clone)]
#[command(name = "preau-gateway", version, about)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Server settings (also used by `serve`).
    #[command(flatten)]
    pub config: Config,
}

/// Subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Run the gateway (the default).
    Serve,
    /// Import a directory JSON file into the data folder (the gateway may be running:
    /// it picks the change up on its next start; use POST /admin/directory to apply at once).
    Import {
        /// The directory document (docs/directory.md).
        #[arg(long)]
        file: PathBuf,
    },
    /// Create or complete the database schema: PostgreSQL (`--postgres-url`) or ScyllaDB
    /// (`--scylla-nodes`). Idempotent; several gateways may run it at once.
    Migrate,
    /// Erase the personal data of departed users past `--departed-retention-days` now
    /// (the gateway also does it hourly); `--dry-run` prints who and how many rows.
    Purge {
        /// Count, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Erase one person's personal data now (a request under the RGPD), whether or not
    /// they are still in the directory.
    Erase {
        /// User id.
        #[arg(long)]
        user: String,
        /// School UAI (default: the user's school in the directory).
        #[arg(long)]
        school: Option<String>,
        /// The person objected to their shared posts being kept: their text goes too.
        #[arg(long)]
        remove_posts: bool,
        /// Count, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write everything held about one person as JSON to standard output (a request
    /// under the RGPD; docs/data-protection.md gives the format).
    Export {
        /// User id.
        #[arg(long)]
        user: String,
        /// School UAI (default: the user's school in the directory).
        #[arg(long)]
        school: Option<String>,
    },
    /// Copy the SQLite store to a file while the gateway serves (a consistent snapshot of
    /// one moment). PostgreSQL and ScyllaDB are backed up with their own tools.
    Backup {
        /// The copy to write (must not exist).
        #[arg(long)]
        to: PathBuf,
    },
    /// Put a backup in place as the store of a new data folder (`--data-dir`), checked
    /// first; start the gateway there afterwards.
    Restore {
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
    },
    /// Print a development token for a user of the directory (development mode only).
    Token {
        /// User id.
        #[arg(long)]
        user: String,
    },
}

/// Gateway settings.
#[derive(Args, Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "PREAU_LISTEN", default_value = "127.0.0.1:8080", global = true)]
    pub listen: SocketAddr,
    /// Connections the kernel may hold waiting to be accepted (the listen backlog). A
    /// reconnect storm of tens of thousands overflows a small one and those clients wait
    /// for their SYN retry (1 s, then 3 s...). The kernel caps it at net.core.somaxconn.
    #[arg(long, env = "PREAU_LISTEN_BACKLOG", default_value_t = 4096, global = true)]
    pub listen_backlog: u32,
    /// Folder of the embedded store and development key.
    #[arg(long, env = "PREAU_DATA_DIR", default_value = "data", global = true)]
    pub data_dir: PathBuf,
    /// Development mode: HS256 key in the data folder, demo school on first start,
    /// /dev/users and /dev/token. On unless a production key is given.
    #[arg(long, env = "PREAU_DEV", global = true)]
    pub dev: Option<bool>,
    /// Let development mode listen on a non-loopback address. Development mode hands out
    /// tokens to anyone who asks (`/dev/token`), so by default it refuses to start
    /// anywhere but 127.0.0.0/8 or ::1.
    #[arg(long, env = "PREAU_DEV_ALLOW_PUBLIC", default_value_t = false, global = true)]
    pub dev_allow_public: bool,
    /// PEM public key verifying tokens (production).
    #[arg(long, env = "PREAU_JWT_PUBLIC_KEY", global = true)]
    pub jwt_public_key: Option<PathBuf>,
    /// Algorithm of `--jwt-public-key`: RS256, ES256 or EdDSA.
    #[arg(long, env = "PREAU_JWT_ALG", default_value = "RS256", global = true)]
    pub jwt_alg: String,
    /// JWKS file verifying tokens by `kid` (production).
    #[arg(long, env = "PREAU_JWKS", global = true)]
    pub jwks: Option<PathBuf>,
    /// The ENT portal's JWKS URL (production): its keys are fetched at start, every
    /// `--jwks-refresh-seconds` and when a token names an unknown `kid`; the last good set
    /// is kept (and cached in the data folder) while the portal is unreachable.
    #[arg(long, env = "PREAU_JWKS_URL", global = true)]
    pub jwks_url: Option<String>,
    /// Seconds between two fetches of `--jwks-url`.
    #[arg(long, env = "PREAU_JWKS_REFRESH_SECONDS", default_value_t = 300, global = true)]
    pub jwks_refresh_seconds: u64,
    /// Fewest seconds between two fetches for unknown key ids (a flood of forged tokens
    /// must not become a flood of fetches).
    #[arg(long, env = "PREAU_JWKS_MIN_INTERVAL_SECONDS", default_value_t = 10, global = true)]
    pub jwks_min_interval_seconds: u64,
    /// A CA certificate (PEM) trusted, besides the system's, for the HTTPS the gateway
    /// calls itself (`--jwks-url`, webhooks): a region's private PKI.
    #[arg(long, env = "PREAU_HTTP_CA", global = true)]
    pub http_ca: Option<PathBuf>,
    /// Origins whose pages may call the gateway's HTTP endpoints from a browser (CORS),
    /// e.g. `https://ent.example.fr`; comma-separated, exact. Without it, none.
    #[arg(long, env = "PREAU_CORS_ORIGINS", value_delimiter = ',', global = true)]
    pub cors_origins: Vec<String>,
    /// API keys of the ENT's back end for the server API (`/server/v1/...`), JSON:
    /// `{"keys": [{"name", "key" (32+ characters), "schools": ["*" or UAIs]}]}`. Without
    /// it the server API answers 401 to everyone.
    #[arg(long, env = "PREAU_API_KEYS_FILE", global = true)]
    pub api_keys_file: Option<PathBuf>,
    /// Where push-notification events for people with no open session are POSTed
    /// (the ENT's back end; docs/server-api.md). Needs `--webhook-secret-file`.
    #[arg(long, env = "PREAU_WEBHOOK_URL", global = true)]
    pub webhook_url: Option<String>,
    /// The HMAC-SHA256 key that signs each webhook batch.
    #[arg(long, env = "PREAU_WEBHOOK_SECRET_FILE", global = true)]
    pub webhook_secret_file: Option<PathBuf>,
    /// Most events in one webhook batch.
    #[arg(long, env = "PREAU_WEBHOOK_MAX_BATCH", default_value_t = 100, global = true)]
    pub webhook_max_batch: usize,
    /// Longest wait, in milliseconds, for a webhook batch to fill.
    #[arg(long, env = "PREAU_WEBHOOK_BATCH_MS", default_value_t = 1000, global = true)]
    pub webhook_batch_ms: u64,
    /// Events carry the first 120 characters of the message (shown on a lock screen:
    /// off by default).
    #[arg(long, env = "PREAU_WEBHOOK_PREVIEWS", default_value_t = false, action = clap::ArgAction::Set, global = true)]
    pub webhook_previews: bool,
    /// Required `iss` claim (a token without one is refused).
    #[arg(long, env = "PREAU_JWT_ISSUER", global = true)]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim (a token without one, or naming other audiences only, is
    /// refused).
    #[arg(long, env = "PREAU_JWT_AUDIENCE", global = true)]
    pub jwt_audience: Option<String>,
    /// Clock skew tolerated on tokens' `exp` and `nbf`, seconds.
    #[arg(long, env = "PREAU_JWT_LEEWAY_SECONDS", default_value_t = 30, global = true)]
    pub jwt_leeway_seconds: u64,
    /// Most open WebSocket connections on this node (keep under the open-file limit).
    #[arg(long, env = "PREAU_MAX_CONNECTIONS", default_value_t = 19_000, global = true)]
    pub max_connections: usize,
    /// Most open connections per user (phone, computer, tablet...).
    #[arg(long, env = "PREAU_MAX_CONNECTIONS_PER_USER", default_value_t = 8, global = true)]
    pub max_connections_per_user: usize,
    /// Largest client frame answered with `too_large` and kept; bigger frames (up to 4x)
    /// are refused the same way, beyond that the WebSocket layer closes with 1009.
    #[arg(long, env = "PREAU_MAX_FRAME_BYTES", default_value_t = 65_536, global = true)]
    pub max_frame_bytes: usize,
    /// Longest message body, bytes of UTF-8.
    #[arg(long, env = "PREAU_MAX_BODY_BYTES", default_value_t = 8_192, global = true)]
    pub max_body_bytes: usize,
    /// Most members of a group conversation, creator included.
    #[arg(long, env = "PREAU_MAX_GROUP_MEMBERS", default_value_t = 50, global = true)]
    pub max_group_members: usize,
    /// Sustained sends per second per user (token bucket rate).
    #[arg(long, env = "PREAU_SENDS_PER_SECOND", default_value_t = 5, global = true)]
    pub sends_per_second: u32,
    /// Burst of sends per user (token bucket size).
    #[arg(long, env = "PREAU_SEND_BURST", default_value_t = 30, global = true)]
    pub send_burst: u32,
    /// Frames per second per connection, all commands together (bucket of 4x).
    #[arg(long, env = "PREAU_FRAMES_PER_SECOND", default_value_t = 50, global = true)]
    pub frames_per_second: u32,
    /// Days the moderation audit trail and closed reports are kept.
    #[arg(long, env = "PREAU_AUDIT_RETENTION_DAYS", default_value_t = 365, global = true)]
    pub audit_retention_days: u32,
    /// Days after a person leaves the directory before their personal data is erased.
    #[arg(long, env = "PREAU_DEPARTED_RETENTION_DAYS", default_value_t = 90, global = true)]
    pub departed_retention_days: u32,
    /// A departed person's posts in shared channels (forums, announcements, groups) stay
    /// with the author pseudonymised (true) or lose their text (false).
    #[arg(long, env = "PREAU_PURGE_KEEP_SHARED_POSTS", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub purge_keep_shared_posts: bool,
    /// A departed person's direct conversations are removed even when the other side is
    /// still in the directory (by default, only when both sides are gone).
    #[arg(long, env = "PREAU_PURGE_DIRECT_ALWAYS", default_value_t = false, action = clap::ArgAction::Set, global = true)]
    pub purge_direct_always: bool,
    /// Mass-send brake: the window distinct conversations are counted in, seconds.
    #[arg(long, env = "PREAU_BRAKE_WINDOW_SECONDS", default_value_t = 60, global = true)]
    pub brake_window_seconds: u64,
    /// Mass-send brake: beyond this many distinct conversations in the window, each new
    /// one waits `--brake-slow-interval-seconds`.
    #[arg(long, env = "PREAU_BRAKE_SLOW_AFTER", default_value_t = 10, global = true)]
    pub brake_slow_after: usize,
    /// Mass-send brake: the wait between two new conversations once slowed, seconds.
    #[arg(long, env = "PREAU_BRAKE_SLOW_INTERVAL_SECONDS", default_value_t = 5, global = true)]
    pub brake_slow_interval_seconds: u64,
    /// Mass-send brake: beyond this many, the account is held and the direction alerted.
    #[arg(long, env = "PREAU_BRAKE_HOLD_AFTER", default_value_t = 20, global = true)]
    pub brake_hold_after: usize,
    /// Mass-send brake: how long a hold lasts, minutes.
    #[arg(long, env = "PREAU_BRAKE_HOLD_MINUTES", default_value_t = 15, global = true)]
    pub brake_hold_minutes: u64,
    /// Frames queued for a connection before it is cut off as a slow consumer.
    #[arg(long, env = "PREAU_OUTBOUND_QUEUE", default_value_t = 1024, global = true)]
    pub outbound_queue: usize,
    /// Seconds to drain connections on SIGTERM before exiting.
    #[arg(long, env = "PREAU_DRAIN_SECONDS", default_value_t = 10, global = true)]
    pub drain_seconds: u64,
    /// Spread of the reconnect delays told to clients when draining, in milliseconds.
    #[arg(long, env = "PREAU_RECONNECT_JITTER_MS", default_value_t = 5_000, global = true)]
    pub reconnect_jitter_ms: u64,
    /// `synchronous=FULL` in SQLite (survives power loss); false keeps `NORMAL`
    /// (survives a process crash).
    #[arg(long, env = "PREAU_SYNC_FULL", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub sync_full: bool,
    /// Redis URL: fan-out, presence and the node registry across gateways. Without it the
    /// bus is in-process (one node).
    #[arg(long, env = "PREAU_REDIS_URL", global = true)]
    pub redis: Option<String>,
    /// This node's id in the registry and on the bus (default: host name and process id).
    #[arg(long, env = "PREAU_NODE_ID", global = true)]
    pub node_id: Option<String>,
    /// Other gateway processes write the same data folder (several gateways on one host):
    /// sequences are read inside each write transaction. Defaults to on with `--redis`.
    #[arg(long, env = "PREAU_STORE_SHARED", action = clap::ArgAction::Set, global = true)]
    pub store_shared: Option<bool>,
    /// PostgreSQL connection string (`postgres://user:password@host:5432/db` or
    /// `host=... user=... dbname=...`): history in PostgreSQL instead of the embedded store,
    /// for gateways on several hosts. `preau-gateway migrate` creates the schema first.
    #[arg(long, env = "PREAU_POSTGRES_URL", global = true, hide_env_values = true)]
    pub postgres_url: Option<String>,
    /// Read connections each gateway keeps to PostgreSQL (its writer has one more).
    #[arg(long, env = "PREAU_POSTGRES_POOL", default_value_t = 8, global = true)]
    pub postgres_pool: usize,
    /// ScyllaDB contact points (`host:port`, comma-separated): history in ScyllaDB instead
    /// of the embedded store.
    #[arg(long, env = "PREAU_SCYLLA_NODES", value_delimiter = ',', global = true)]
    pub scylla_nodes: Vec<String>,
    /// ScyllaDB keyspace.
    #[arg(long, env = "PREAU_SCYLLA_KEYSPACE", default_value = "preau", global = true)]
    pub scylla_keyspace: String,
    /// Replication factor `migrate` gives a new keyspace.
    #[arg(long, env = "PREAU_SCYLLA_REPLICATION", default_value_t = 3, global = true)]
    pub scylla_replication: u32,
    /// Days messages are kept (a school may choose its own for its class channels); 0
    /// keeps them. SQLite and PostgreSQL remove older ones hourly; ScyllaDB by row TTL,
    /// set by `migrate`.
    #[arg(long, env = "PREAU_RETENTION_DAYS", default_value_t = 400, global = true)]
    pub retention_days: u32,
    /// Private key (PEM) signing room tokens for the SFU (production); development mode
    /// signs them with the development key.
    #[arg(long, env = "PREAU_ROOM_SIGNING_KEY", global = true)]
    pub room_signing_key: Option<PathBuf>,
    /// Algorithm of `--room-signing-key`: RS256, ES256 or EdDSA.
    #[arg(long, env = "PREAU_ROOM_SIGNING_ALG", default_value = "EdDSA", global = true)]
    pub room_signing_alg: String,
    /// Lifetime of room tokens, seconds (they only serve to join).
    #[arg(long, env = "PREAU_ROOM_TOKEN_TTL", default_value_t = 300, global = true)]
    pub room_token_ttl: u64,
    /// Signaling URL of the live-class SFU when no registry places rooms (without
    /// `--redis`, or while no SFU node is registered).
    #[arg(long, env = "PREAU_SFU_URL", default_value = "ws://127.0.0.1:8090/ws", global = true)]
    pub sfu_url: String,
    /// Logs as JSON lines.
    #[arg(long, env = "PREAU_LOG_JSON", global = true)]
    pub log_json: bool,
    /// TLS certificate chain (PEM, leaf first): the gateway serves HTTPS and WSS itself
    /// and reads the files again when they change (a renewal needs no restart). Without
    /// it, plain HTTP behind a proxy that terminates TLS.
    #[arg(long, env = "PREAU_TLS_CERT", global = true)]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM).
    #[arg(long, env = "PREAU_TLS_KEY", global = true)]
    pub tls_key: Option<PathBuf>,
    /// Show user ids in logs (hidden by default: they identify minors).
    #[arg(long, env = "PREAU_LOG_PII", global = true)]
    pub log_pii: bool,
    /// Lifetime of development tokens, seconds.
    #[arg(long, env = "PREAU_DEV_TOKEN_TTL", default_value_t = 8 * 3600, global = true)]
    pub dev_token_ttl: u64,
}

impl Config {
    /// Whether development mode is on: explicitly, or by default when no production key
    /// is configured.
    pub fn dev_mode(&self) -> bool {
        self.dev.unwrap_or(self.jwt_public_key.is_none() && self.jwks.is_none() && self.jwks_url.is_none())
    }

    /// This node's id.
    pub fn node_id(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
            format!("gw-{}-{}", if host.is_empty() { "local" } else { &host }, std::process::id())
        })
    }

    /// The PostgreSQL options, when PostgreSQL is configured.
    pub fn postgres(&self) -> Option<preau_store::PgOptions> {
        self.postgres_url.as_ref().map(|url| {
            let mut o = preau_store::PgOptions::new(url.clone());
            o.pool_size = self.postgres_pool;
            o
        })
    }

    /// The ScyllaDB options, when ScyllaDB is configured.
    pub fn scylla(&self) -> Option<preau_store::ScyllaOptions> {
        (!self.scylla_nodes.is_empty()).then(|| preau_store::ScyllaOptions {
            nodes: self.scylla_nodes.clone(),
            keyspace: self.scylla_keyspace.clone(),
            replication_factor: self.scylla_replication,
            retention_days: self.retention_days,
            clock: preau_proto::clock::system(),
        })
    }

    /// The mass-send brake's thresholds.
    pub fn brake(&self) -> crate::cmd::brake::BrakeConfig {
        use std::time::Duration;
        crate::cmd::brake::BrakeConfig {
            window: Duration::from_secs(self.brake_window_seconds),
            slow_after: self.brake_slow_after,
            slow_interval: Duration::from_secs(self.brake_slow_interval_seconds),
            hold_after: self.brake_hold_after,
            hold_for: Duration::from_secs(self.brake_hold_minutes * 60),
        }
    }

    /// Whether the store is shared with other processes.
    pub fn store_shared(&self) -> bool {
        self.store_shared.unwrap_or(self.redis.is_some())
    }

    /// The TLS files, if TLS is on (both flags, or neither).
    pub fn tls(&self) -> Result<Option<preau_ops::tls::TlsFiles>, String> {
        preau_ops::tls::TlsFiles::from_flags(
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            "--tls-cert",
            "--tls-key",
        )
    }

    /// Checks values that clap cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.max_connections > 0, "--max-connections must be positive");
        anyhow::ensure!(self.max_connections_per_user > 0, "--max-connections-per-user must be positive");
        anyhow::ensure!(self.max_frame_bytes >= 1024, "--max-frame-bytes must be at least 1024");
        anyhow::ensure!(
            self.max_body_bytes >= 1 && self.max_body_bytes < self.max_frame_bytes,
            "--max-body-bytes must be below --max-frame-bytes"
        );
        anyhow::ensure!(self.max_group_members >= 2, "--max-group-members must be at least 2");
        anyhow::ensure!(self.sends_per_second > 0 && self.send_burst > 0, "send rate and burst must be positive");
        anyhow::ensure!(self.frames_per_second > 0, "--frames-per-second must be positive");
        anyhow::ensure!(
            self.brake_slow_after >= 1
                && self.brake_hold_after > self.brake_slow_after
                && self.brake_window_seconds >= 1,
            "mass-send brake: --brake-hold-after must exceed --brake-slow-after, both and the window positive"
        );
        anyhow::ensure!(self.audit_retention_days >= 1, "--audit-retention-days must be at least 1");
        anyhow::ensure!(self.jwt_leeway_seconds <= 300, "--jwt-leeway-seconds is at most 300 (five minutes)");
        anyhow::ensure!(self.outbound_queue >= 16, "--outbound-queue must be at least 16");
        anyhow::ensure!(
            self.scylla_keyspace.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !self.scylla_keyspace.is_empty(),
            "--scylla-keyspace must be letters, digits and _"
        );
        anyhow::ensure!(
            self.postgres_url.is_none() || self.scylla_nodes.is_empty(),
            "give --postgres-url or --scylla-nodes, not both"
        );
        anyhow::ensure!((1..=256).contains(&self.postgres_pool), "--postgres-pool must be between 1 and 256");
        anyhow::ensure!(
            cfg!(feature = "scylla") || self.scylla_nodes.is_empty(),
            "this preau-gateway was built without ScyllaDB support: rebuild with `--features scylla`"
        );
        let sources = [self.jwt_public_key.is_some(), self.jwks.is_some(), self.jwks_url.is_some()];
        anyhow::ensure!(
            sources.iter().filter(|s| **s).count() <= 1,
            "give one of --jwt-public-key, --jwks and --jwks-url"
        );
        anyhow::ensure!(
            self.dev_mode() || sources.contains(&true),
            "production mode needs --jwt-public-key, --jwks or --jwks-url"
        );
        if let Some(u) = &self.jwks_url {
            anyhow::ensure!(
                u.starts_with("https://") || u.starts_with("http://"),
                "--jwks-url {u}: expected an https:// URL (the portal's JWKS)"
            );
        }
        for o in &self.cors_origins {
            let host = o.strip_prefix("https://").or_else(|| o.strip_prefix("http://")).unwrap_or("");
            anyhow::ensure!(
                !host.is_empty() && !host.contains('/') && !host.contains('*'),
                "--cors-origins {o}: expected an origin such as https://ent.example.fr (scheme and host, no path, no wildcard)"
            );
        }
        anyhow::ensure!(
            self.webhook_url.is_some() == self.webhook_secret_file.is_some(),
            "--webhook-url and --webhook-secret-file go together"
        );
        if let Some(u) = &self.webhook_url {
            anyhow::ensure!(
                u.starts_with("https://") || u.starts_with("http://"),
                "--webhook-url {u}: expected an https:// URL (the ENT's back end)"
            );
        }
        anyhow::ensure!(
            (1..=1000).contains(&self.webhook_max_batch) && (10..=60_000).contains(&self.webhook_batch_ms),
            "--webhook-max-batch is 1 to 1000 and --webhook-batch-ms 10 to 60000"
        );
        anyhow::ensure!(
            self.jwks_refresh_seconds >= 2 && self.jwks_min_interval_seconds >= 1,
            "--jwks-refresh-seconds must be at least 2 and --jwks-min-interval-seconds at least 1"
        );
        self.tls().map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            !self.dev_mode() || self.listen.ip().is_loopback() || self.dev_allow_public,
            "development mode (demo school, /dev/token handing tokens to anyone) refuses to listen on {}: \
             listen on 127.0.0.1, configure production keys (--jwt-public-key or --jwks), \
             or pass --dev-allow-public true if you really mean it",
            self.listen
        );
        Ok(())
    }
}

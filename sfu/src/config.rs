//! Settings of `preau-sfu`: flags, each with a `PREAU_SFU_*` (or shared `PREAU_*`)
//! environment variable, as deploy/ uses them.

use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The base of a node's HTTP URLs (recording downloads) from its signaling URL:
/// `wss://sfu.example.fr/ws` gives `https://sfu.example.fr`.
pub fn http_base(signaling: &str) -> String {
    let http = if let Some(rest) = signaling.strip_prefix("wss://") {
        format!("https://{rest}")
    } else if let Some(rest) = signaling.strip_prefix("ws://") {
        format!("http://{rest}")
    } else {
        signaling.to_owned()
    };
    http.strip_suffix("/ws").map(str::to_owned).unwrap_or(http)
}

/// SFU settings.
#[derive(Args, Clone, Debug)]
pub struct SfuConfig {
    /// HTTP and WebSocket signaling address.
    #[arg(long, env = "PREAU_SFU_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// The one UDP port all media of this node uses (school firewalls and Kubernetes
    /// open one port, not a range).
    #[arg(long, env = "PREAU_SFU_UDP", default_value = "127.0.0.1:8091")]
    pub udp: SocketAddr,
    /// Addresses announced in ICE candidates instead of the local ones (the node's public
    /// address behind 1:1 NAT or a Kubernetes hostPort). Comma-separated.
    #[arg(long, env = "PREAU_SFU_PUBLIC_IP", value_delimiter = ',')]
    pub public_ip: Vec<std::net::IpAddr>,
    /// The signaling URL clients use to reach this node (the registry hands it out).
    /// Defaults to `ws://<listen>/ws`.
    #[arg(long, env = "PREAU_SFU_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// HS256 secret shared with the gateway (development: the gateway's
    /// `data/dev-signing-key`).
    #[arg(long, env = "PREAU_SFU_ROOM_KEY_FILE", default_value = "data/dev-signing-key")]
    pub room_key_file: PathBuf,
    /// Public key (PEM) verifying room tokens (production); replaces `--room-key-file`.
    #[arg(long, env = "PREAU_SFU_ROOM_PUBLIC_KEY")]
    pub room_public_key: Option<PathBuf>,
    /// Algorithm of `--room-public-key`: RS256, ES256 or EdDSA. The default is the
    /// gateway's `--room-signing-alg` default, so the two agree unless both are set.
    #[arg(long, env = "PREAU_SFU_ROOM_ALG", default_value = "EdDSA")]
    pub room_alg: String,
    /// STUN/TURN URLs handed to browsers, e.g. `turn:turn.example.fr:3478?transport=tcp`
    /// for networks that block UDP. Comma-separated.
    #[arg(long, env = "PREAU_SFU_ICE_SERVERS", value_delimiter = ',')]
    pub ice_servers: Vec<String>,
    /// coturn's `static-auth-secret`: browsers get time-limited TURN credentials.
    #[arg(long, env = "PREAU_SFU_TURN_SECRET")]
    pub turn_secret: Option<String>,
    /// Redis URL: announce this node and its load, and hold its rooms in the registry.
    #[arg(long, env = "PREAU_REDIS_URL")]
    pub redis: Option<String>,
    /// This node's id in the registry.
    #[arg(long, env = "PREAU_NODE_ID", default_value = "sfu-1")]
    pub node_id: String,
    /// Estimate each subscriber's bandwidth here (transport-cc feedback, probing for what
    /// its tiles want); `false`: take the browsers' own REMB estimates, which saves about a
    /// microsecond of CPU per forwarded packet and estimates less well.
    #[arg(long, env = "PREAU_SFU_ESTIMATE_BANDWIDTH", default_value_t = true, action = clap::ArgAction::Set)]
    pub estimate_bandwidth: bool,
    /// Media engine threads, each owning a share of the peers (0: one per core).
    #[arg(long, env = "PREAU_SFU_ENGINE_THREADS", default_value_t = 0)]
    pub engine_threads: usize,
    /// In rooms with more video publishers than this, a subscriber receives the hosts'
    /// video and that of the latest speakers only.
    #[arg(long, env = "PREAU_SFU_LAST_N", default_value_t = 6)]
    pub last_n: usize,
    /// Most members of a class room, waiting room included.
    #[arg(long, env = "PREAU_SFU_CLASS_CAPACITY", default_value_t = 40)]
    pub class_capacity: usize,
    /// Most members of an assembly room (`assembly:` rooms: a head teacher and a school).
    #[arg(long, env = "PREAU_SFU_ASSEMBLY_CAPACITY", default_value_t = 400)]
    pub assembly_capacity: usize,
    /// Seconds a room outlives its last host.
    #[arg(long, env = "PREAU_SFU_HOST_GRACE", default_value_t = 120)]
    pub host_grace: u64,
    /// Most peers on this node; joins beyond get `node_full` (the gateway places on
    /// another node).
    #[arg(long, env = "PREAU_SFU_MAX_PEERS", default_value_t = 2000)]
    pub max_peers: u64,
    /// On SIGTERM, how long running classes may go on before the node exits (new rooms
    /// go elsewhere at once).
    #[arg(long, env = "PREAU_SFU_DRAIN_SECONDS", default_value_t = 3600)]
    pub drain_seconds: u64,
    /// Whether hosts may record their classes on this node.
    #[arg(long, env = "PREAU_SFU_RECORDING", default_value_t = true, action = clap::ArgAction::Set)]
    pub recording: bool,
    /// Where class recordings are written (WebM, one file each, with a `.json` beside it
    /// saying what it is); created at the first recording.
    #[arg(long, env = "PREAU_SFU_RECORDINGS_DIR", default_value = "data/recordings")]
    pub recordings_dir: PathBuf,
    /// Days a recording is kept before this node deletes it (docs/data-protection.md).
    #[arg(long, env = "PREAU_SFU_RECORDING_RETENTION_DAYS", default_value_t = 30)]
    pub recording_retention_days: u64,
    /// The gateway's base URL (`http://gateway:8080`): a finished recording is listed in
    /// the class announcements through its server API.
    #[arg(long, env = "PREAU_SFU_GATEWAY_URL")]
    pub gateway_url: Option<String>,
    /// A file holding the gateway server-API key the SFU lists recordings with (one of
    /// the gateway's `--api-keys-file`).
    #[arg(long, env = "PREAU_SFU_GATEWAY_API_KEY_FILE")]
    pub gateway_api_key_file: Option<PathBuf>,
    /// Logs as JSON lines.
    #[arg(long, env = "PREAU_LOG_JSON")]
    pub log_json: bool,
    /// TLS certificate chain (PEM, leaf first): the node serves its page and signaling
    /// over HTTPS and WSS itself, and reads the files again when they change. Without
    /// it, plain HTTP behind a proxy that terminates TLS (browsers give cameras only to
    /// secure pages).
    #[arg(long, env = "PREAU_SFU_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM).
    #[arg(long, env = "PREAU_SFU_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
}

impl SfuConfig {
    /// The URL clients use for signaling.
    pub fn public_url(&self, bound: SocketAddr) -> String {
        let scheme = if self.tls_cert.is_some() { "wss" } else { "ws" };
        self.public_url.clone().unwrap_or_else(|| format!("{scheme}://{bound}/ws"))
    }

    /// The TLS files, if TLS is on.
    pub fn tls(&self) -> Result<Option<preau_ops::tls::TlsFiles>, String> {
        preau_ops::tls::TlsFiles::from_flags(
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            "--tls-cert",
            "--tls-key",
        )
    }

    /// Checks what clap cannot: every error names the flag and what it takes.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("--class-capacity", self.class_capacity as u64),
            ("--assembly-capacity", self.assembly_capacity as u64),
            ("--max-peers", self.max_peers),
            ("--last-n", self.last_n as u64),
        ];
        for (flag, v) in positive {
            if v == 0 {
                return Err(format!("{flag} must be above zero"));
            }
        }
        if let Some(u) = &self.public_url
            && (!(u.starts_with("ws://") || u.starts_with("wss://")) || u.contains(char::is_whitespace))
        {
            return Err(format!("--public-url {u}: expected a ws:// or wss:// URL (e.g. wss://sfu1.example.fr/ws)"));
        }
        for ice in &self.ice_servers {
            let scheme = ice.split(':').next().unwrap_or("");
            if !matches!(scheme, "stun" | "stuns" | "turn" | "turns") || ice.len() <= scheme.len() + 1 {
                return Err(format!(
                    "--ice-servers {ice}: expected stun:, turn: or turns: URLs (e.g. turns:turn.example.fr:443?transport=tcp)"
                ));
            }
        }
        if let Some(r) = &self.redis
            && !(r.starts_with("redis://") || r.starts_with("rediss://") || r.starts_with("unix://"))
        {
            return Err(format!("--redis {r}: expected a redis://, rediss:// or unix:// URL"));
        }
        if self.node_id.is_empty() || self.node_id.contains(char::is_whitespace) {
            return Err(format!("--node-id {:?}: expected a name without spaces", self.node_id));
        }
        if self.tls_cert.is_some() && self.public_url.as_deref().is_some_and(|u| u.starts_with("ws://")) {
            return Err("--public-url is ws:// while --tls-cert serves TLS: announce wss://".into());
        }
        self.tls().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        cfg: SfuConfig,
    }

    /// `--public-ip notanip` used to be taken and announced in every ICE candidate.
    #[test]
    fn public_addresses_must_be_ip_addresses() {
        let bad = Cli::try_parse_from(["preau-sfu", "--public-ip", "notanip"]).err().expect("refused");
        assert!(bad.to_string().contains("notanip"), "{bad}");
        let ok = Cli::try_parse_from(["preau-sfu", "--public-ip", "203.0.113.7,2001:db8::7"]).expect("addresses");
        assert_eq!(ok.cfg.public_ip.len(), 2);
    }

    #[test]
    fn every_flag_is_checked_and_the_error_names_it() {
        let check = |args: &[&str]| {
            let mut all = vec!["preau-sfu"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all).expect("parses").cfg.validate()
        };
        assert_eq!(check(&[]), Ok(()));
        for (args, flag) in [
            (&["--class-capacity", "0"][..], "--class-capacity"),
            (&["--max-peers", "0"][..], "--max-peers"),
            (&["--public-url", "sfu1.example.fr/ws"][..], "--public-url"),
            (&["--ice-servers", "turn.example.fr:3478"][..], "--ice-servers"),
            (&["--redis", "localhost:6379"][..], "--redis"),
            (&["--tls-cert", "/etc/preau/tls.crt"][..], "--tls-cert needs --tls-key"),
            (&["--tls-cert", "a", "--tls-key", "b", "--public-url", "ws://x/ws"][..], "--public-url"),
        ] {
            let e = check(args).expect_err("refused");
            assert!(e.contains(flag), "{args:?}: {e}");
        }
        assert_eq!(
            check(&["--ice-servers", "stun:stun.example.fr:3478,turns:turn.example.fr:443?transport=tcp"]),
            Ok(())
        );
    }

    #[test]
    fn with_tls_the_announced_url_is_wss() {
        let cfg = Cli::try_parse_from(["preau-sfu", "--tls-cert", "c", "--tls-key", "k"]).expect("flags").cfg;
        assert_eq!(cfg.public_url("127.0.0.1:8443".parse().expect("addr")), "wss://127.0.0.1:8443/ws");
        assert_eq!(http_base("wss://127.0.0.1:8443/ws"), "https://127.0.0.1:8443");
        assert_eq!(http_base("ws://sfu-2.lycee.fr/ws"), "http://sfu-2.lycee.fr");
    }

    /// The SFU expected ES256 room tokens by default while the gateway signs EdDSA.
    #[test]
    fn the_room_token_algorithm_defaults_to_the_gateways() {
        let cfg = Cli::try_parse_from(["preau-sfu"]).expect("defaults").cfg;
        assert_eq!(cfg.room_alg, "EdDSA");
    }
}

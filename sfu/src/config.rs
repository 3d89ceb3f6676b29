//! Settings of `preau-sfu`: flags, each with a `PREAU_SFU_*` (or shared `PREAU_*`)
//! environment variable, as deploy/ uses them.

use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;

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
    /// Logs as JSON lines.
    #[arg(long, env = "PREAU_LOG_JSON")]
    pub log_json: bool,
}

impl SfuConfig {
    /// The URL clients use for signaling.
    pub fn public_url(&self, bound: SocketAddr) -> String {
        self.public_url.clone().unwrap_or_else(|| format!("ws://{bound}/ws"))
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

    /// The SFU expected ES256 room tokens by default while the gateway signs EdDSA.
    #[test]
    fn the_room_token_algorithm_defaults_to_the_gateways() {
        let cfg = Cli::try_parse_from(["preau-sfu"]).expect("defaults").cfg;
        assert_eq!(cfg.room_alg, "EdDSA");
    }
}

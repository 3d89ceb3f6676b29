//! An in-process SFU node for the integration tests: loopback TCP and UDP ports, a room
//! key of its own, optional extra flags.

#![allow(dead_code)]

pub mod impair;

use clap::Parser;
use preau_auth::Issuer;
use preau_sfu::Sfu;
use preau_sfu::config::SfuConfig;
use preau_sfu::http::router;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    c: SfuConfig,
}

/// Polls `f` every 100 ms until it holds, for at most `secs` (generous: CI machines are
/// shared, and WebRTC set-up on two loaded cores can take many seconds).
pub async fn until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..secs * 10 {
        if f() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// The HS256 key every test node checks room tokens with.
pub const KEY: &[u8] = b"an SFU integration test key!!!!!";

/// A running node.
pub struct Node {
    /// `ws://<ip>:<port>/ws`.
    pub url: String,
    /// `<ip>:<port>` (HTTP: the classroom page, probes).
    pub addr: std::net::SocketAddr,
    /// Signs room tokens the node accepts.
    pub issuer: Issuer,
    _dir: tempfile::TempDir,
}

impl Node {
    /// Starts a node on loopback with `extra` flags (`--redis`, `--node-id`,
    /// `--host-grace`...).
    pub async fn start(extra: &[&str]) -> Node {
        Node::start_on("127.0.0.1", 0, extra).await
    }

    /// Starts a node listening on `ip` (HTTP on a free port, media on `udp_port`, 0: any).
    pub async fn start_on(ip: &str, udp_port: u16, extra: &[&str]) -> Node {
        // RUST_LOG=preau_sfu=debug shows the SFU's side.
        let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).try_init();
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("key");
        std::fs::write(&key, KEY).expect("key");
        let (listen, udp) = (format!("{ip}:0"), format!("{ip}:{udp_port}"));
        let mut args = vec!["preau-sfu", "--listen", &listen, "--udp", &udp, "--room-key-file"];
        args.push(key.to_str().expect("utf-8"));
        args.extend_from_slice(extra);
        let cfg = Cli::parse_from(args).c;
        let listener = tokio::net::TcpListener::bind(cfg.listen).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let url = format!("ws://{addr}/ws");
        let sfu = Sfu::start(cfg, url.clone(), None).await.expect("sfu");
        tokio::spawn(async move { axum::serve(listener, router(sfu)).await });
        Node { url, addr, issuer: Issuer::hs256(KEY), _dir: dir }
    }

    /// Starts a node on 127.0.0.1 serving TLS with `files`, its signaling announced as
    /// `wss://<name>:<port>/ws` (the name the test maps to 127.0.0.1).
    pub async fn start_tls(name: &str, files: &preau_ops::tls::TlsFiles) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("key");
        std::fs::write(&key, KEY).expect("key");
        let (cert, tls_key) = (files.cert.to_str().expect("utf-8"), files.key.to_str().expect("utf-8"));
        let args =
            ["preau-sfu", "--listen", "127.0.0.1:0", "--udp", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", tls_key];
        let mut args = args.to_vec();
        args.extend_from_slice(&["--room-key-file", key.to_str().expect("utf-8")]);
        let cfg = Cli::parse_from(args).c;
        cfg.validate().expect("valid flags");
        let tls = preau_ops::tls::Reloading::start(files.clone()).expect("certificate");
        let tcp = tokio::net::TcpListener::bind(cfg.listen).await.expect("bind");
        let addr = tcp.local_addr().expect("addr");
        let listener = preau_ops::tls::Listener::new(tcp, Some(tls)).expect("listener");
        let url = format!("wss://{name}:{}/ws", addr.port());
        let sfu = Sfu::start(cfg, url.clone(), None).await.expect("sfu");
        tokio::spawn(async move { axum::serve(listener, router(sfu)).await });
        Node { url, addr, issuer: Issuer::hs256(KEY), _dir: dir }
    }

    /// A room token for `user` in class 6A of the demo school.
    pub fn token(&self, user: &str, role: &str) -> String {
        self.issuer.issue_room(user, user, "0750001A", "class:6A", role, 300)
    }
}

//! Two SFU nodes sharing a real Redis registry (a private redis-server on loopback): a
//! class's room lives on the node that first holds it, and a member sent to the other
//! node is refused with `elsewhere` while the room lives; once it ends, the room may be
//! held anywhere.

use clap::Parser;
use preau_auth::Issuer;
use preau_sfu::client::LiveClient;
use preau_sfu::config::SfuConfig;
use preau_sfu::server::{Sfu, router};
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    c: SfuConfig,
}

const KEY: &[u8] = b"a placement test key of 32 bytes";

struct Redis(Child, u16);

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test installs it)");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Redis(child, port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server did not start");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn node(redis: &Redis, id: &str, key: &std::path::Path) -> String {
    let url = format!("redis://127.0.0.1:{}", redis.1);
    let cfg = Cli::parse_from([
        "preau-sfu",
        "--listen",
        "127.0.0.1:0",
        "--udp",
        "127.0.0.1:0",
        "--room-key-file",
        key.to_str().expect("utf-8"),
        "--redis",
        &url,
        "--node-id",
        id,
    ])
    .c;
    let listener = tokio::net::TcpListener::bind(cfg.listen).await.expect("bind");
    let ws = format!("ws://{}/ws", listener.local_addr().expect("addr"));
    let sfu = Sfu::start(cfg, ws.clone(), None).await.expect("sfu");
    tokio::spawn(async move { axum::serve(listener, router(sfu)).await });
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_lives_on_one_node_while_it_lives() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("key");
    std::fs::write(&key, KEY).expect("key");
    let (a, b) = (node(&redis, "sfu-a", &key).await, node(&redis, "sfu-b", &key).await);
    let iss = Issuer::hs256(KEY);
    let token = |user: &str, role: &str| iss.issue_room(user, user, "0750001A", "class:6A", role, 60);

    let host = LiveClient::join(&a, &token("t01", "host")).await.expect("the first node holds the room");
    let e = LiveClient::join(&b, &token("e001", "participant")).await.err().expect("the other node refuses");
    assert!(e.to_string().contains("elsewhere"), "{e}");
    let pupil = LiveClient::join(&a, &token("e001", "participant")).await.expect("the room's node admits");
    assert_eq!(pupil.role, "participant");
    let other = LiveClient::join(&b, &iss.issue_room("t02", "t02", "0750001A", "class:4C", "host", 60)).await;
    assert!(other.is_ok(), "another class may live on the other node");

    // The class ends: its placement is released, and the room may start on the other node.
    host.request(json!({"type":"end"})).await.expect("end");
    let mut joined = None;
    for _ in 0..50 {
        if let Ok(c) = LiveClient::join(&b, &token("t01", "host")).await {
            joined = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(joined.is_some(), "after the end, the room may live elsewhere");
}

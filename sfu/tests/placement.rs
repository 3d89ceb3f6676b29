//! Two SFU nodes sharing a real Redis registry (a private redis-server on loopback): a
//! class's room lives on the node that first holds it, and a member sent to the other
//! node is refused with `elsewhere` while the room lives; once it ends, the room may be
//! held anywhere.

mod common;

use preau_live::client::LiveClient;
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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

async fn node(redis: &Redis, id: &str) -> common::Node {
    let url = format!("redis://127.0.0.1:{}", redis.1);
    common::Node::start(&["--redis", &url, "--node-id", id]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_lives_on_one_node_while_it_lives() {
    let redis = Redis::start();
    let (na, nb) = (node(&redis, "sfu-a").await, node(&redis, "sfu-b").await);
    let (a, b) = (na.url.clone(), nb.url.clone());
    let iss = &na.issuer;
    let token = |user: &str, role: &str| na.token(user, role);

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

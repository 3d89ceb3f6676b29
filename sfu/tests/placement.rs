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

/// Issue 15: a class's breakout groups are rooms of their own, placed by the registry
/// like any room (here one group on each node); the group's room on the other node lets
/// in the pupils sent there (it reads the assignment from Redis) and no one else, their
/// media flows there, the teacher visits, speaks to every group through the class, and
/// brings everyone back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breakout_groups_live_on_either_node_and_let_in_their_own_pupils_only() {
    let redis = Redis::start();
    let (na, nb) = (node(&redis, "sfu-a").await, node(&redis, "sfu-b").await);
    let group = |user: &str, role: &str, g: &str| {
        na.issuer.issue_room(user, user, "0750001A", &format!("class:6A~{g}"), role, 60)
    };
    let mut host = LiveClient::join(&na.url, &na.token("t01", "host")).await.expect("class on A");
    let mut pupils = Vec::new();
    for u in ["e001", "e002", "e003", "e004"] {
        let p = LiveClient::join(&na.url, &na.token(u, "participant")).await.expect("pupil");
        host.request(json!({"type":"admit","peer":p.peer})).await.expect("admit");
        pupils.push(p);
    }
    let peers: Vec<u64> = pupils.iter().map(|p| p.peer).collect();
    let e = pupils[0].request(json!({"type":"breakout_start","count":2})).await.expect_err("pupils split nothing");
    assert!(e.to_string().contains("not_host"), "{e}");
    let plan = json!({"type":"breakout_start","groups":[[peers[0], peers[1]], [peers[2], peers[3]]],"minutes":20});
    host.request(plan).await.expect("split");
    for (i, p) in pupils.iter_mut().enumerate() {
        let ev = p.event("breakout", Duration::from_secs(5)).await.expect("sent to a group");
        assert_eq!(ev["group"], if i < 2 { "g1" } else { "g2" });
    }
    let told = host.event("breakouts", Duration::from_secs(5)).await.expect("groups told");
    assert_eq!(told["ends_in_s"], json!(1200));

    // Group 1 on node A, group 2 on node B (its first member holds it there).
    let _a1 = LiveClient::join(&na.url, &group("e001", "participant", "g1")).await.expect("own group");
    let b3 = LiveClient::join(&nb.url, &group("e003", "participant", "g2")).await.expect("own group, other node");
    let e = LiveClient::join(&nb.url, &group("e001", "participant", "g2")).await.err().expect("not theirs");
    assert!(e.to_string().contains("not_in_group"), "{e}");
    let e = LiveClient::join(&na.url, &group("e003", "participant", "g2")).await.err().expect("lives on B");
    assert!(e.to_string().contains("elsewhere"), "{e}");
    let b4 = LiveClient::join(&nb.url, &group("e004", "participant", "g2")).await.expect("own group");
    assert_eq!(b4.role, "participant");

    // Pupils talk at once in their group (no grant needed), and the teacher visits.
    let talk = b3.publish(&[("q", 200)], Some(30)).await.expect("the floor is open in a group");
    let (video, audio) = (format!("p{}-video", b3.peer), format!("p{}-audio", b3.peer));
    let visit = LiveClient::join(&nb.url, &group("t01", "host", "g2")).await.expect("the teacher visits");
    common::until(60, "the group's pupil reaches the other pupil and the visiting teacher", || {
        b4.track(&video).packets > 20 && b4.track(&audio).packets > 20 && visit.track(&audio).packets > 20
    })
    .await;

    // The teacher's word reaches every pupil through the class; then the recall.
    host.request(json!({"type":"breakout_broadcast","text":"Encore cinq minutes"})).await.expect("broadcast");
    for p in pupils.iter_mut() {
        let ev = p.event("broadcast", Duration::from_secs(5)).await.expect("heard in the group");
        assert_eq!(ev["text"], "Encore cinq minutes");
    }
    host.request(json!({"type":"breakout_end"})).await.expect("recall");
    for p in pupils.iter_mut() {
        assert!(p.event("breakout_ended", Duration::from_secs(5)).await.is_some(), "everyone is called back");
    }
    let mut refused = false;
    for _ in 0..50 {
        match LiveClient::join(&nb.url, &group("e004", "participant", "g2")).await {
            Err(e) if e.to_string().contains("not_in_group") => {
                refused = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(refused, "once back, the groups let nobody in");
    talk.stop();
}

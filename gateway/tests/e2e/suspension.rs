//! Suspension switches over real sockets: a school's admin suspends messaging on one
//! gateway; a second gateway joined by Redis refuses posts within a second, reading
//! stays, the direction's announcements stay open, `hello` and `sync` show it, it
//! survives a restart, and lifting it restores posting.

use crate::harness::{Redis, Server};
use preau_client::{Client, http_with};
use preau_proto::{ChannelId, Command, Encoding, ErrorCode, ServerFrame};
use std::time::Duration;
use tokio::time::Instant;

async fn put(s: &Server, token: &str, body: serde_json::Value) -> (u16, String) {
    http_with(&s.addr, "PUT", "/admin/suspension", token, &body.to_string()).await.expect("put")
}

/// Sends until the answer is `want` (the other node hears of the change through the bus),
/// returning how long it took.
async fn until_code(c: &Client, ch: &ChannelId, want: Option<ErrorCode>, within: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let got = c.send_message(ch, "bonjour").await.err().and_then(|e| e.code());
        if got == want {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < within, "still {got:?} after {within:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_school_suspension_applies_on_every_gateway_at_once_and_survives_a_restart() {
    let redis = Redis::start();
    let root = tempfile::tempdir().expect("tempdir");
    let url = redis.url();
    let gw1 = Server::start_in(root.path(), &["--redis", &url, "--node-id", "gw1"], "gw1.log");
    let mut gw2 = Server::start_in(root.path(), &["--redis", &url, "--node-id", "gw2"], "gw2.log");
    let dm = ChannelId::direct("e001", "e002");
    let ann = ChannelId::announcements("0750001A", "6A");
    let e001 = gw2.connect("e001").await;
    e001.request(Command::OpenDirect { user: "e002".into() }).await.expect("open");
    e001.send_message(&dm, "avant").await.expect("before the suspension");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Only admins, and a pupil gets 403.
    let pupil = gw1.token("e002").await;
    assert_eq!(
        put(&gw1, &pupil, serde_json::json!({"scope": "school", "suspended": true, "reason": "x"})).await.0,
        403
    );
    let admin = gw1.token("ad01").await;
    let (status, body) = put(
        &gw1,
        &admin,
        serde_json::json!({"scope": "school", "suspended": true, "reason": "menaces reçues", "announcements_open": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let took = until_code(&e001, &dm, Some(ErrorCode::Suspended), Duration::from_secs(1)).await;
    println!("suspension seen on the second gateway after {took:?}");
    // Reading stays; new conversations wait; the direction's announcements stay open.
    let h = e001.request(Command::History { channel: dm.clone(), after: Some(0), before: None, limit: None }).await;
    // (Sends that beat the bus's notice were accepted, and are there too.)
    assert_eq!(h.expect("history").entries.first().and_then(|e| e.body.clone()), Some("avant".to_owned()));
    let r = e001.request(Command::OpenDirect { user: "t01".into() }).await;
    assert_eq!(r.expect_err("new conversation").code(), Some(ErrorCode::Suspended));
    let s01 = gw2.connect("s01").await;
    s01.send_message(&ann, "Information de la direction").await.expect("the direction's announcement");
    let t01 = gw2.connect("t01").await;
    assert_eq!(t01.send_message(&ann, "x").await.expect_err("teacher").code(), Some(ErrorCode::Suspended));
    // `sync` and `hello` tell front ends.
    let ack = e001.request(Command::Sync { positions: vec![], limit: None }).await.expect("sync");
    let sus = ack.suspension.expect("sync shows the suspension");
    assert_eq!((sus.scope.as_str(), sus.reason.as_str(), sus.announcements_open), ("school", "menaces reçues", true));
    let token = gw2.token("e002").await;
    let c = Client::connect(&gw2.addr, &token, Encoding::Json).await.expect("connect");
    assert!(matches!(c.hello(), ServerFrame::Hello { suspension: Some(_), .. }), "hello shows the suspension");

    // It survives a restart.
    drop(e001);
    gw2.restart();
    let e001 = gw2.connect("e001").await;
    assert_eq!(e001.send_message(&dm, "x").await.expect_err("after restart").code(), Some(ErrorCode::Suspended));

    // Lifted on one node, lifted everywhere.
    let (status, _) = put(&gw1, &admin, serde_json::json!({"scope": "school", "suspended": false})).await;
    assert_eq!(status, 200);
    until_code(&e001, &dm, None, Duration::from_secs(1)).await;
}

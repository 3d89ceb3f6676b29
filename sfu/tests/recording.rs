//! A class recording over loopback with the Rust WebRTC clients: the teacher publishes
//! VP8 and Opus, a pupil granted the microphone speaks; the host records four seconds;
//! the file is WebM that ffprobe (Debian's ffmpeg) reads back with its length and
//! tracks, and the node serves it only to a link it can verify.

mod common;

use common::{Node, until};
use preau_auth::Issuer;
use preau_live::client::LiveClient;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn join(node: &Node, user: &str, role: &str) -> LiveClient {
    LiveClient::join(&node.url, &node.token(user, role)).await.expect("join")
}

/// `GET path` on the node: status and body.
async fn get(node: &Node, path: &str) -> (u16, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(node.addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", node.addr);
    s.write_all(req.as_bytes()).await.expect("write");
    let mut all = Vec::new();
    s.read_to_end(&mut all).await.expect("read");
    let end = all.windows(4).position(|w| w == b"\r\n\r\n").expect("headers") + 4;
    let head = String::from_utf8_lossy(&all[..end]).into_owned();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("status");
    (status, all[end..].to_vec())
}

/// ffprobe's view of a file: its streams (with packets counted) and format.
fn probe(path: &Path) -> Value {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-count_packets", "-show_streams", "-show_format", "-of", "json"])
        .arg(path)
        .output()
        .expect("ffprobe (Debian's ffmpeg; scripts/test installs it)");
    assert!(out.status.success(), "ffprobe: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("ffprobe json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_holds_the_teacher_and_a_speaking_pupil_and_is_served_to_a_signed_link_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = dir.path().to_str().expect("utf-8");
    let node = Node::start(&["--host-grace", "5", "--recordings-dir", folder]).await;
    let host = join(&node, "t01", "host").await;
    let publication = host.publish(&[("q", 200), ("h", 600), ("f", 1200)], Some(20)).await.expect("publish");
    let mut a = join(&node, "e001", "participant").await;
    host.request(json!({"type":"admit","peer":a.peer})).await.expect("admit");
    host.request(json!({"type":"grant","peer":a.peer,"media":"audio","allow":true})).await.expect("grant");
    let voice = a.publish(&[], Some(30)).await.expect("the pupil speaks");
    let (video, pupil_audio) = (format!("p{}-video", host.peer), format!("p{}-audio", a.peer));
    until(60, "media flowing both ways", || a.track(&video).packets > 30 && host.track(&pupil_audio).packets > 30)
        .await;

    let e = a.request(json!({"type":"record","on":true})).await.expect_err("a pupil records nothing");
    assert!(e.to_string().contains("not_host"), "{e}");
    host.request(json!({"type":"record","on":true})).await.expect("record");
    let told = a.event("recording", Duration::from_secs(5)).await.expect("the pupil is told");
    assert_eq!(told["on"], json!(true));
    tokio::time::sleep(Duration::from_secs(4)).await;
    host.request(json!({"type":"record","on":false})).await.expect("stop");
    let told = a.event("recording", Duration::from_secs(5)).await.expect("told it stopped");
    assert_eq!(told["on"], json!(false));

    // The file and its description, once the writer finished.
    let described = || {
        std::fs::read_dir(dir.path())
            .expect("folder")
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "json"))
    };
    until(20, "the recording is written", || described().is_some()).await;
    let meta: Value = serde_json::from_slice(&std::fs::read(described().expect("json")).expect("read")).expect("json");
    let id = meta["id"].as_str().expect("id").to_owned();
    let file = dir.path().join(format!("{id}.webm"));
    assert_eq!(meta["video"], json!([640, 480]), "the size of the teacher's keyframes");
    assert_eq!(
        (meta["school"].as_str(), meta["class"].as_str(), meta["author"].as_str()),
        (Some("0750001A"), Some("6A"), Some("t01"))
    );
    assert_eq!(meta["bytes"], json!(std::fs::metadata(&file).expect("file").len()));

    let p = probe(&file);
    let duration: f64 = p["format"]["duration"].as_str().and_then(|d| d.parse().ok()).expect("duration");
    assert!((3.0..6.0).contains(&duration), "about four seconds: {duration}");
    let streams = p["streams"].as_array().expect("streams");
    let count = |i: usize| streams[i]["nb_read_packets"].as_str().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
    assert_eq!(streams[0]["codec_name"], "vp8");
    assert_eq!((streams[0]["width"].as_u64(), streams[0]["height"].as_u64()), (Some(640), Some(480)));
    assert!(count(0) >= 60, "about 30 frames a second of picture: {}", count(0));
    let opus: Vec<usize> = (0..streams.len()).filter(|i| streams[*i]["codec_name"] == "opus").collect();
    assert_eq!(opus.len(), 5, "the loudest voice, the teacher's, and three for pupils");
    assert!(count(opus[0]) >= 100, "the loudest voice (the teacher's here), 50 packets a second: {}", count(opus[0]));
    assert!(count(opus[1]) >= 100, "the teacher's own: {}", count(opus[1]));
    assert!(count(opus[2]) >= 100, "the pupil's voice on the next track: {}", count(opus[2]));

    // Served to a link the gateway's key signed for this recording, and to nothing else.
    let link = Issuer::hs256(common::KEY).issue_link(&id, 60);
    let (status, body) = get(&node, &format!("/recordings/{id}.webm?token={link}")).await;
    assert_eq!(status, 200);
    assert_eq!(body, std::fs::read(&file).expect("file"), "the whole file");
    let (status, body) = get(&node, &format!("/recordings/{id}.webm")).await;
    assert_eq!(status, 401);
    assert!(String::from_utf8_lossy(&body).contains("link_invalid"));
    let other = Issuer::hs256(common::KEY).issue_link("20261203-000000-00000000", 60);
    assert_eq!(get(&node, &format!("/recordings/{id}.webm?token={other}")).await.0, 401, "a link for another");
    let room = node.token("e001", "participant");
    assert_eq!(get(&node, &format!("/recordings/{id}.webm?token={room}")).await.0, 401, "a room token is no link");
    let forged = Issuer::hs256(b"not the key of this node, 32 b!!").issue_link(&id, 60);
    assert_eq!(get(&node, &format!("/recordings/{id}.webm?token={forged}")).await.0, 401);
    let (status, _) = get(&node, "/recordings/..%2F..%2Fetc%2Fpasswd.webm?token=x").await;
    assert!(status == 401 || status == 404);
    publication.stop();
    voice.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_does_not_record_says_so_and_nobody_is_told_of_a_recording() {
    let node = Node::start(&["--recording", "false"]).await;
    let mut host = join(&node, "t01", "host").await;
    let e = host.request(json!({"type":"record","on":true})).await.expect_err("recording off");
    assert!(e.to_string().contains("recording_unavailable"), "{e}");
    assert!(host.event("recording", Duration::from_millis(500)).await.is_none(), "nobody told of a recording not made");
}

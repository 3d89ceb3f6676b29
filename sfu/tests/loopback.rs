//! Live classes over loopback with Rust WebRTC clients: a teacher publishes VP8 in three
//! simulcast layers and Opus; pupils receive it, switch layers (the keyframe request
//! reaches the publisher), see who speaks; a pupil publishes only once granted, and a
//! mute stops their audio reaching the others.

mod common;

use common::{KEY, Node, until};
use preau_auth::Issuer;
use preau_live::client::{LiveClient, Publication};
use serde_json::json;
use std::time::Duration;

async fn join(node: &Node, user: &str, role: &str) -> LiveClient {
    LiveClient::join(&node.url, &node.token(user, role)).await.expect("join")
}

async fn admit(host: &mut LiveClient, pupil: &LiveClient) {
    host.request(json!({"type":"admit","peer":pupil.peer})).await.expect("admit");
}

/// A teacher publishing three VP8 layers (200, 600 and 1,200 byte frames) and Opus (level
/// -20 dBov), and two pupils admitted who receive both.
struct Lesson {
    host: LiveClient,
    publication: Publication,
    a: LiveClient,
    b: LiveClient,
    video: String,
    audio: String,
}

async fn lesson(node: &Node) -> Lesson {
    let mut host = join(node, "t01", "host").await;
    assert_eq!(host.role, "host");
    let publication = host.publish(&[("q", 200), ("h", 600), ("f", 1200)], Some(20)).await.expect("publish");
    let a = join(node, "e001", "participant").await;
    let b = join(node, "e002", "participant").await;
    admit(&mut host, &a).await;
    admit(&mut host, &b).await;
    let video = format!("p{}-video", host.peer);
    let audio = format!("p{}-audio", host.peer);
    for p in [&a, &b] {
        until(60, "video and audio reach both pupils", || p.track(&video).packets > 30 && p.track(&audio).packets > 30)
            .await;
    }
    Lesson { host, publication, a, b, video, audio }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulcast_reaches_subscribers_who_switch_layers_on_keyframes() {
    let node = Node::start(&["--host-grace", "5"]).await;
    let Lesson { host, publication, a, b, video, audio: _ } = lesson(&node).await;
    for p in [&a, &b] {
        assert!(p.track(&video).keyframes >= 1, "a subscriber starts on a keyframe");
        assert_eq!(p.track(&video).last_size, 600, "without a bandwidth estimate, a tile gets the middle layer");
    }

    // A small tile: the low layer, switched on one of its keyframes, requested by PLI.
    let before = publication.keyframe_requests.lock().get("q").copied().unwrap_or(0);
    a.request(json!({"type":"quality","source":video,"quality":"low"})).await.expect("quality");
    until(30, "pupil A on the low layer", || a.track(&video).last_size == 200).await;
    assert!(
        publication.keyframe_requests.lock().get("q").copied().unwrap_or(0) > before,
        "the switch asked the publisher for a keyframe of the low layer"
    );
    // The speaker's full layer for B.
    b.request(json!({"type":"quality","source":video,"quality":"high"})).await.expect("quality");
    until(30, "pupil B on the high layer", || b.track(&video).last_size == 1200).await;
    assert!(publication.keyframe_requests.lock().get("f").copied().unwrap_or(0) >= 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(b.track(&video).last_size, 1200, "B stays on its layer");
    assert_eq!(a.track(&video).last_size, 200, "A stays on its layer");
    for p in [&a, &b] {
        assert_eq!(p.track(&video).gaps, 0, "sequence numbers stay continuous across switches");
    }

    // Pupil A's network changes: an ICE restart on `sub` brings a new offer with new
    // credentials, and the media goes on.
    let ufrag = a.sub_ufrag().await.expect("ufrag");
    let offers = a.offers.load(std::sync::atomic::Ordering::Relaxed);
    a.request(json!({"type":"restart_ice"})).await.expect("restart");
    until(30, "a new offer after the ICE restart", || a.offers.load(std::sync::atomic::Ordering::Relaxed) > offers)
        .await;
    assert_ne!(a.sub_ufrag().await.expect("ufrag"), ufrag, "new ICE credentials");
    let got = a.track(&video).packets;
    until(30, "media flowing after the restart", || a.track(&video).packets > got + 30).await;

    // The teacher speaks (level -20 dBov): everyone hears who.
    let mut a = a;
    let ev = a.event("speakers", Duration::from_secs(5)).await.expect("speakers event");
    assert_eq!(ev["dominant"], json!(host.peer), "{ev}");

    // Unknown sources and bad input get clear errors.
    let e = a.request(json!({"type":"quality","source":"p999-video","quality":"low"})).await.expect_err("unknown");
    assert!(e.to_string().contains("unknown_source"), "{e}");
    let e = a.request(json!({"type":"grant","peer":b.peer,"media":"audio","allow":true})).await.expect_err("not host");
    assert!(e.to_string().contains("not_host"), "{e}");
    publication.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pupil_speaks_only_when_granted_and_a_mute_stops_their_audio_reaching_others() {
    let node = Node::start(&["--host-grace", "5"]).await;
    let mut host = join(&node, "t01", "host").await;
    let a = join(&node, "e001", "participant").await;
    let b = join(&node, "e002", "participant").await;
    admit(&mut host, &a).await;
    admit(&mut host, &b).await;

    let e = a.publish(&[], Some(30)).await.err().expect("publishing without a grant is refused");
    assert!(e.to_string().contains("not_granted"), "{e}");

    host.request(json!({"type":"grant","peer":a.peer,"media":"audio","allow":true})).await.expect("grant");
    let a2 = join(&node, "e001", "participant").await; // a second tab of the same pupil waits
    let _publication = a.publish(&[], Some(30)).await.expect("publish once granted");
    let audio = format!("p{}-audio", a.peer);
    until(45, "A's voice reaches B and the teacher", || {
        b.track(&audio).packets > 20 && host.track(&audio).packets > 20
    })
    .await;

    host.request(json!({"type":"grant","peer":a.peer,"media":"audio","allow":false})).await.expect("mute");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let muted_at = b.track(&audio).packets;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(b.track(&audio).packets, muted_at, "after the mute, nothing of A's audio reaches B");
    assert_eq!(host.track(&audio).packets, host.track(&audio).packets);

    // Granted again: heard again.
    host.request(json!({"type":"grant","peer":a.peer,"media":"audio","allow":true})).await.expect("unmute");
    until(30, "A heard again", || b.track(&audio).packets > muted_at + 20).await;

    // A publisher who leaves takes their track away from the others: the SFU
    // renegotiates their `sub` connections.
    let c = join(&node, "e004", "participant").await;
    admit(&mut host, &c).await;
    host.request(json!({"type":"grant","peer":c.peer,"media":"audio","allow":true})).await.expect("grant");
    let c_pub = c.publish(&[], Some(40)).await.expect("publish");
    let c_audio = format!("p{}-audio", c.peer);
    until(30, "C heard by the teacher", || host.track(&c_audio).packets > 10).await;
    let offers = host.offers.load(std::sync::atomic::Ordering::Relaxed);
    c.leave().await;
    drop(c_pub);
    until(30, "the teacher's connection renegotiated without C's track", || {
        host.offers.load(std::sync::atomic::Ordering::Relaxed) > offers
    })
    .await;

    // Removal closes the pupil's connection; the lock keeps newcomers out.
    host.request(json!({"type":"remove","peer":b.peer})).await.expect("remove");
    until(15, "B disconnected", || b.is_closed()).await;
    host.request(json!({"type":"lock","locked":true})).await.expect("lock");
    let refused = LiveClient::join(&node.url, &node.token("e003", "participant")).await;
    assert!(refused.err().expect("locked").to_string().contains("room_locked"));
    drop(a2);

    // The end closes everyone.
    host.request(json!({"type":"end"})).await.expect("end");
    until(15, "A disconnected at the end", || a.is_closed()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_before_anything_else() {
    let node = Node::start(&["--host-grace", "5"]).await;
    let forged =
        Issuer::hs256(b"another key, not the gateway one").issue_room("x", "x", "0750001A", "class:6A", "host", 60);
    let e = LiveClient::join(&node.url, &forged).await.err().expect("forged token refused");
    assert!(e.to_string().contains("unauthorized"), "{e}");
    let user_token = Issuer::hs256(KEY).issue("t01", "teacher", "0750001A", 60);
    let e = LiveClient::join(&node.url, &user_token).await.err().expect("a user token is no room token");
    assert!(e.to_string().contains("unauthorized"), "{e}");
    let e = LiveClient::join(&node.url, &node.issuer.issue_room("x", "x", "0750001A", "class:6A", "king", 60))
        .await
        .err()
        .expect("unknown role");
    assert!(e.to_string().contains("unauthorized"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_n_forwards_the_host_and_the_latest_speakers_video() {
    // N = 1: besides the host, one pupil's video reaches each member.
    let node = Node::start(&["--last-n", "1"]).await;
    let mut host = join(&node, "t01", "host").await;
    let _host_pub = host.publish(&[("", 400)], None).await.expect("host video");
    let (a, b, mut c) = (
        join(&node, "e001", "participant").await,
        join(&node, "e002", "participant").await,
        join(&node, "e003", "participant").await,
    );
    for p in [&a, &b, &c] {
        admit(&mut host, p).await;
    }
    for (p, media) in [(&a, "video"), (&a, "audio"), (&b, "video"), (&b, "audio")] {
        host.request(json!({"type":"grant","peer":p.peer,"media":media,"allow":true})).await.expect("grant");
    }
    // A is silent (level 127), B speaks (-30 dBov).
    let _a_pub = a.publish(&[("", 300)], Some(127)).await.expect("A publishes");
    let b_pub = b.publish(&[("", 300)], Some(30)).await.expect("B publishes");
    let (host_v, a_v, b_v) =
        (format!("p{}-video", host.peer), format!("p{}-video", a.peer), format!("p{}-video", b.peer));
    // Up to 30 s: on a loaded CI machine the three peer connections take a while.
    for _ in 0..300 {
        if c.track(&host_v).packets > 20 && c.track(&b_v).packets > 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got: Vec<(String, u64)> = c.received.lock().iter().map(|(k, v)| (k.clone(), v.packets)).collect();
    assert!(
        c.track(&host_v).packets > 20 && c.track(&b_v).packets > 20,
        "C receives the host and B, the speaker: {got:?}"
    );
    let held = c.track(&a_v).packets;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(c.track(&a_v).packets, held, "A's video is held back: B spoke last");
    let ev = c.event("sources", Duration::from_secs(2)).await;
    let mut last = ev;
    while let Some(e) = c.event("sources", Duration::from_millis(200)).await {
        last = Some(e);
    }
    let sources = last.expect("sources")["sources"].clone();
    assert_eq!(sources[&a_v]["forwarded"], json!(false), "{sources}");
    assert_eq!(sources[&b_v]["forwarded"], json!(true), "{sources}");
    assert_eq!(sources[&host_v]["forwarded"], json!(true), "the host is always seen");

    // B leaves: A's video takes its place, starting on a keyframe.
    b.leave().await;
    drop(b_pub);
    until(30, "A's video now reaches C", || c.track(&a_v).packets > held + 20).await;
    assert!(c.track(&a_v).keyframes >= 1);
}

/// Issue 18: a pupil on a poor connection chooses sound only (no video packet reaches
/// them) or the low layer; the teacher makes the whole class audio-only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pupils_choose_audio_only_or_low_and_the_teacher_makes_the_class_audio_only() {
    let node = Node::start(&["--host-grace", "5"]).await;
    let Lesson { host, publication, a, mut b, video, audio } = lesson(&node).await;

    // A: sound only. Not one more video packet; the voice goes on.
    a.request(json!({"type":"receive","mode":"audio"})).await.expect("audio only");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (v, s) = (a.track(&video).packets, a.track(&audio).packets);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(a.track(&video).packets, v, "audio only: no video reaches A");
    assert!(a.track(&audio).packets > s + 30, "A still hears the teacher");
    // B: the low layer, whatever its tile asks.
    b.request(json!({"type":"quality","source":video,"quality":"high"})).await.expect("quality");
    b.request(json!({"type":"receive","mode":"low"})).await.expect("low");
    until(30, "B on the low layer", || b.track(&video).last_size == 200).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(b.track(&video).last_size, 200, "B stays on the low layer");
    // A back to everything: the picture comes back, on a keyframe.
    let keyframes = a.track(&video).keyframes;
    a.request(json!({"type":"receive","mode":"all"})).await.expect("all");
    until(30, "A's video back", || a.track(&video).packets > v + 30).await;
    assert!(a.track(&video).keyframes > keyframes, "restarted on a keyframe");
    assert_eq!(a.track(&video).gaps, 0, "the stream stays continuous across the pause");

    // The teacher makes the class audio-only: the camera stops for everyone.
    let e = a.request(json!({"type":"class_receive","mode":"audio"})).await.expect_err("pupils cannot");
    assert!(e.to_string().contains("not_host"), "{e}");
    host.request(json!({"type":"class_receive","mode":"audio"})).await.expect("class audio only");
    let ev = b.event("class_receive", Duration::from_secs(5)).await.expect("B is told");
    assert_eq!(ev["mode"], json!("audio"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (va, vb, sb) = (a.track(&video).packets, b.track(&video).packets, b.track(&audio).packets);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!((a.track(&video).packets, b.track(&video).packets), (va, vb), "no video in an audio-only class");
    assert!(b.track(&audio).packets > sb + 30, "the class still hears the teacher");
    publication.stop();
}

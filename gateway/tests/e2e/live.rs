//! Room tokens for live classes: the gateway checks the directory and hands a short-lived
//! token with the role; everyone else is refused.

use crate::harness::Server;
use preau_client::http_post;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_tokens_follow_the_directory() {
    let s = Server::start(&[]);
    let key = std::fs::read(s.data_path().join("data/dev-signing-key")).expect("dev key");
    let sfu_side = preau_auth::Verifier::hs256(&key);
    let rows = [
        ("t01", "6A", Some("host")),
        ("e001", "6A", Some("participant")),
        ("s01", "6A", Some("observer")),
        ("pa001", "6A", None),
        ("t03", "6A", None),
        ("e026", "6A", None),
        ("t01", "nope", None),
        ("s01", "assembly", Some("host")),
        ("e070", "assembly", Some("participant")),
        ("pa002", "assembly", None),
    ];
    let mut refusals = Vec::new();
    for (user, class, role) in rows {
        let token = s.token(user).await;
        let (status, body) = http_post(&s.addr, &format!("/rooms/{class}/token"), &token, "").await.expect("post");
        match role {
            Some(role) => {
                assert_eq!(status, 200, "{user} in {class}: {body}");
                let v: serde_json::Value = serde_json::from_str(&body).expect("json");
                let claims = sfu_side.verify_room(v["token"].as_str().expect("token")).expect("the SFU accepts it");
                assert_eq!((claims.sub.as_str(), claims.role.as_str()), (user, role));
                let room = if class == "assembly" { "assembly:0750001A".to_owned() } else { format!("class:{class}") };
                assert_eq!(claims.room, room);
                assert_eq!(v["sfu"], "ws://127.0.0.1:8090/ws", "without a registry: the configured SFU");
                assert!(claims.exp <= preau_auth::now_secs() + 300, "short-lived");
                // It is not a user token.
                let c = preau_client::Client::connect(
                    &s.addr,
                    v["token"].as_str().expect("token"),
                    preau_proto::Encoding::Json,
                )
                .await;
                assert!(
                    matches!(c, Err(preau_client::ClientError::Http { status: 401, .. })),
                    "{user}: room token accepted as a user token"
                );
            }
            None => {
                assert_eq!(status, 403, "{user} in {class}: {body}");
                refusals.push(serde_json::from_str::<serde_json::Value>(&body).expect("json")["message"].clone());
            }
        }
    }
    refusals.dedup();
    assert_eq!(refusals.len(), 1, "one answer for every refusal, unknown classes included");
    let (status, _) = http_post(&s.addr, "/rooms/6A/token", "forged", "").await.expect("post");
    assert_eq!(status, 401);
    // A breakout group's room: the same role as in the class, in `class:<id>~<group>`.
    for (user, role) in [("t01", "host"), ("e001", "participant")] {
        let (status, body) =
            http_post(&s.addr, "/rooms/6A/token?group=g2", &s.token(user).await, "").await.expect("post");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        let claims = sfu_side.verify_room(v["token"].as_str().expect("token")).expect("the SFU accepts it");
        assert_eq!((claims.room.as_str(), claims.role.as_str()), ("class:6A~g2", role));
    }
    for (user, path, want) in [
        ("t01", "/rooms/6A/token?group=g0", 400),
        ("t01", "/rooms/6A/token?group=g21", 400),
        ("s01", "/rooms/assembly/token?group=g1", 400),
        ("pa001", "/rooms/6A/token?group=g1", 403),
        ("e026", "/rooms/6A/token?group=g1", 403),
    ] {
        let (status, body) = http_post(&s.addr, path, &s.token(user).await, "").await.expect("post");
        assert_eq!(status, want, "{user} {path}: {body}");
    }
    // The classroom page that uses all this.
    let (status, page) = preau_client::http_get(&s.addr, "/classroom").await.expect("get");
    assert_eq!(status, 200);
    assert!(page.contains("/rooms/") && page.contains("window.preau"), "the classroom page");
}

const API_KEY: &str = "sfu-recordings-key-0123456789abcdef";

/// Issue 15: an SFU node lists a class recording in the class announcements through
/// the server API; whoever reads the announcements gets a short-lived download link the
/// SFU can verify, nobody else; a recording taken down is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_are_listed_in_the_announcements_and_linked_to_their_readers_only() {
    use preau_proto::{ChannelId, Command, EntryKind, RecordingInfo};
    use serde_json::{Value, json};
    let dir = tempfile::tempdir().expect("dir");
    let keys = dir.path().join("api-keys.json");
    std::fs::write(&keys, json!({"keys": [{"name": "sfu", "key": API_KEY, "schools": ["*"]}]}).to_string())
        .expect("keys");
    let s = Server::start(&["--api-keys-file", keys.to_str().expect("utf-8")]);
    let key = std::fs::read(s.data_path().join("data/dev-signing-key")).expect("dev key");
    let sfu_side = preau_auth::Verifier::hs256(&key);
    let id = "20261203-101500-0a1b2c3d";
    let listing = json!({
        "school": "0750001A", "class": "6A", "author": "t01", "id": id,
        "url": format!("http://127.0.0.1:8090/recordings/{id}.webm"),
        "duration_ms": 4000, "size": 123456, "started_at": 1_796_292_900_000i64,
    });
    let post = |body: Value| {
        let addr = s.addr.clone();
        async move {
            let (st, b) = http_post(&addr, "/server/v1/recordings", API_KEY, &body.to_string()).await.expect("post");
            (st, serde_json::from_str::<Value>(&b).unwrap_or(Value::Null))
        }
    };

    // Refusals: a pupil is no host, an unknown class, a bad id, no key.
    let mut bad = listing.clone();
    bad["author"] = json!("e001");
    assert_eq!(post(bad).await.1["reason"], "not_host");
    let mut bad = listing.clone();
    bad["class"] = json!("nope");
    assert_eq!(post(bad).await.0, 404);
    let mut bad = listing.clone();
    bad["id"] = json!("../../etc/passwd");
    assert_eq!(post(bad).await.1["reason"], "bad_recording");
    assert_eq!(http_post(&s.addr, "/server/v1/recordings", "", &listing.to_string()).await.expect("post").0, 401);

    let (st, first) = post(listing.clone()).await;
    assert_eq!(st, 200, "{first}");
    let seq = first["seq"].as_u64().expect("seq");
    let (_, again) = post(listing.clone()).await;
    assert_eq!((again["seq"].as_u64(), again["duplicate"].as_bool()), (Some(seq), Some(true)), "listed once per id");

    // A pupil of the class sees it in the announcements.
    let ann = ChannelId::announcements("0750001A", "6A");
    let pupil = s.connect("e001").await;
    let h = pupil
        .request(Command::History { channel: ann.clone(), after: Some(0), before: None, limit: None })
        .await
        .expect("history");
    let entry = h.entries.iter().find(|e| e.seq == seq).expect("listed");
    assert_eq!((entry.kind, entry.author.as_str()), (EntryKind::Recording, "t01"));
    let info: RecordingInfo = serde_json::from_str(entry.body.as_deref().expect("body")).expect("a RecordingInfo");
    assert_eq!((info.id.as_str(), info.duration_ms), (id, 4000));

    // Links: for readers of the announcements (the pupil, a parent of the class, its
    // teacher), valid for the SFU, for this recording, minutes-lived.
    let ask = json!({"channel": ann, "seq": seq}).to_string();
    for user in ["e001", "pa001", "t01"] {
        let (st, b) = http_post(&s.addr, "/recordings/link", &s.token(user).await, &ask).await.expect("post");
        assert_eq!(st, 200, "{user}: {b}");
        let v: Value = serde_json::from_str(&b).expect("json");
        let url = v["url"].as_str().expect("url");
        let token = url.strip_prefix(&format!("{}?token=", info.url)).expect("the recording's url with a token");
        let claims = sfu_side.verify_link(token).expect("the SFU accepts it");
        assert_eq!(claims.sub, id);
        assert!(claims.exp <= preau_auth::now_secs() + 300 && v["expires_in"] == 300);
    }
    // Not for a pupil of another class, a parent of another class, a forged token.
    for user in ["e026", "pa050"] {
        let (st, b) = http_post(&s.addr, "/recordings/link", &s.token(user).await, &ask).await.expect("post");
        assert_eq!(st, 403, "{user}: {b}");
    }
    assert_eq!(http_post(&s.addr, "/recordings/link", "forged", &ask).await.expect("post").0, 401);
    // Not for what is not a recording; bad input is said.
    let teacher = s.connect("t01").await;
    let msg = teacher.send_message(&ann, "Sortie au musée jeudi").await.expect("post");
    let not_rec = json!({"channel": ann, "seq": msg.seq}).to_string();
    let (st, _) = http_post(&s.addr, "/recordings/link", &s.token("e001").await, &not_rec).await.expect("post");
    assert_eq!(st, 404, "an announcement is no recording");
    let (st, b) = http_post(&s.addr, "/recordings/link", &s.token("e001").await, "{\"seq\": 1}").await.expect("post");
    assert_eq!(st, 400, "{b}");

    // The teacher takes it down: no more links.
    teacher.request(Command::Delete { channel: ann.clone(), seq }).await.expect("the teacher deletes it");
    let (st, b) = http_post(&s.addr, "/recordings/link", &s.token("e001").await, &ask).await.expect("post");
    assert_eq!(st, 404, "{b}");
}

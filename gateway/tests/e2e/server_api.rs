//! Issue 16: the ENT's back end talks to Préau with an API key of its own
//! (docs/server-api.md): announcements it posts reach pupils and parents in order, a
//! sign-out closes every session of a user, it sees who of a class is online, and a
//! message to a parent with no open session reaches its webhook receiver once, signed,
//! retried while the receiver fails, and held by the parent's settings.

use crate::harness::{FAST, Server, expect_event};
use hmac::{Hmac, Mac};
use preau_client::{http_get, http_post, http_with};
use preau_directory::{Directory, demo};
use preau_proto::{ChannelId, ServerFrame, close};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY: &str = "ent-backend-key-0123456789abcdef-ACADEMIE";
const SECRET: &[u8] = b"webhook-secret-0123456789abcdef!!";

/// What the receiver saw: each request's delivery id, signature and body.
#[derive(Default)]
struct Seen {
    requests: Vec<(String, String, Value)>,
    fail_next: usize,
}

async fn receiver(seen: Arc<Mutex<Seen>>) -> String {
    let app = axum::Router::new().route(
        "/hooks/preau",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                let mut s = seen.lock().expect("lock");
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let sig = h("x-preau-signature");
                // Checked as a receiver would: HMAC-SHA256 of "<t>.<body>".
                let (t, v1) = sig.split_once(",v1=").unwrap_or(("", ""));
                let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET).expect("key");
                mac.update(t.trim_start_matches("t=").as_bytes());
                mac.update(b".");
                mac.update(&body);
                let want: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
                assert_eq!(v1, want, "a valid signature");
                s.requests.push((h("x-preau-delivery"), sig, v));
                if s.fail_next > 0 {
                    s.fail_next -= 1;
                    return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hooks/preau", l.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(l, app).await });
    url
}

/// Events accepted by the receiver (answered 2xx) for `user`.
fn events_for(seen: &Arc<Mutex<Seen>>, user: &str) -> Vec<Value> {
    let s = seen.lock().expect("lock");
    let mut out = Vec::new();
    let mut taken = std::collections::HashSet::new();
    for (delivery, _, body) in &s.requests {
        // A delivery retried shows several times: a receiver keeps one.
        if !taken.insert(delivery.clone()) {
            continue;
        }
        for e in body["events"].as_array().into_iter().flatten() {
            if e["user"] == user {
                out.push(e.clone());
            }
        }
    }
    out
}

async fn announce(s: &Server, body: Value) -> (u16, Value) {
    let (st, b) = http_post(&s.addr, "/server/v1/announcements", KEY, &body.to_string()).await.expect("post");
    (st, serde_json::from_str(&b).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ent_back_end_announces_signs_out_sees_who_is_online_and_gets_pushes() {
    let dir = tempfile::tempdir().expect("dir");
    let keys = dir.path().join("api-keys.json");
    let keys_doc = json!({"keys": [
        {"name": "ent", "key": KEY, "schools": ["*"]},
        {"name": "other", "key": "another-school-key-0123456789abcdef", "schools": ["0999999Z"]},
    ]});
    std::fs::write(&keys, keys_doc.to_string()).expect("keys");
    let secret = dir.path().join("webhook.key");
    std::fs::write(&secret, SECRET).expect("secret");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let hook = receiver(seen.clone()).await;
    let (keys, secret) = (keys.to_str().expect("utf-8"), secret.to_str().expect("utf-8"));
    let mut args = FAST.to_vec();
    args.extend_from_slice(&["--api-keys-file", keys, "--webhook-url", &hook, "--webhook-secret-file", secret]);
    args.extend_from_slice(&["--webhook-batch-ms", "100", "--webhook-max-batch", "1000"]);
    let s = Server::start(&args);

    // A pupil of 6A and their parent, both connected; another parent of 6A is not.
    let d = Directory::from_docs([demo::demo_doc()]).expect("demo");
    let class = d.class(demo::SCHOOL, "6A").expect("6A");
    let pupil = class.pupils.iter().find(|p| d.user(p).is_some_and(|u| !u.parents.is_empty())).expect("pupil").clone();
    let parent = d.user(&pupil).expect("pupil").parents.iter().next().expect("parent").clone();
    let away = class
        .pupils
        .iter()
        .filter(|p| **p != pupil)
        .flat_map(|p| d.user(p).expect("pupil").parents.iter().cloned())
        .find(|p| !d.user(&pupil).expect("pupil").parents.contains(p))
        .expect("another parent");
    let mut c_pupil = s.connect(&pupil).await;
    let mut c_parent = s.connect(&parent).await;
    let ann = ChannelId::announcements(demo::SCHOOL, "6A");

    // Refusals first: no key, a wrong key, a key for another school.
    assert_eq!(http_post(&s.addr, "/server/v1/announcements", "", "{}").await.expect("post").0, 401);
    let (st, b) = http_post(&s.addr, "/server/v1/announcements", "not-a-key", "{}").await.expect("post");
    assert!(st == 401 && b.contains("api_key_invalid"), "{st} {b}");
    let one = json!({"school": demo::SCHOOL, "class": "6A", "author": "t01", "body": "x", "client_id": "k0"});
    let (st, b) =
        http_post(&s.addr, "/server/v1/announcements", "another-school-key-0123456789abcdef", &one.to_string())
            .await
            .expect("post");
    assert!(st == 403 && b.contains("other_school"), "{st} {b}");
    let (st, b) = announce(&s, json!({"school": demo::SCHOOL, "class": "6A", "body": "x"})).await;
    assert!(st == 400 && b["reason"] == "invalid_json", "a missing client_id: {st} {b}");

    // Announcements from the ENT, on behalf of a teacher then of the school: in order.
    let texts = ["L'emploi du temps de jeudi change.", "Sortie au musée vendredi.", "Cantine fermée lundi."];
    let mut seqs = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        let author = if i < 2 { json!("t01") } else { Value::Null };
        let body = json!({"school": demo::SCHOOL, "class": "6A", "author": author, "body": t, "client_id": format!("edt-{i}")});
        let (st, v) = announce(&s, body).await;
        assert_eq!(st, 200, "{v}");
        seqs.push(v["seq"].as_u64().expect("seq"));
    }
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let (st, again) = announce(
        &s,
        json!({"school": demo::SCHOOL, "class": "6A", "author": "t01", "body": texts[0], "client_id": "edt-0"}),
    )
    .await;
    assert!(st == 200 && again["duplicate"] == true && again["seq"].as_u64() == Some(seqs[0]), "{again}");
    for c in [&mut c_pupil, &mut c_parent] {
        let mut got = Vec::new();
        while got.len() < 3 {
            let (seq, author) = expect_event(c, 10, |f| match f {
                ServerFrame::Event { channel, entry } if *channel == ann => Some((entry.seq, entry.author.clone())),
                _ => None,
            })
            .await;
            got.push((seq, author));
        }
        let want: Vec<(u64, String)> =
            seqs.iter().zip(["t01", "t01", "school:0750001A"]).map(|(s, a)| (*s, a.to_owned())).collect();
        assert_eq!(got, want, "each reader gets the announcements once, in order");
    }

    // Who is online in 6A: the pupil and the parent, not the parent away.
    let (st, b) =
        http_with(&s.addr, "GET", "/server/v1/schools/0750001A/classes/6A/online", KEY, "").await.expect("get");
    let v: Value = serde_json::from_str(&b).expect("json");
    let ids: Vec<&str> = v["online"].as_array().expect("online").iter().filter_map(|u| u["id"].as_str()).collect();
    assert!(st == 200 && ids.contains(&pupil.as_str()) && ids.contains(&parent.as_str()), "{b}");
    assert!(!ids.contains(&away.as_str()));

    // The parent away was pushed each announcement once, signed; the connected ones never.
    for _ in 0..40 {
        if events_for(&seen, &away).len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pushed = events_for(&seen, &away);
    let got: Vec<u64> = pushed.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(got, seqs, "one event per announcement: {pushed:?}");
    assert_eq!(pushed[0]["author_name"], "Mme Colin (français)");
    assert_eq!(pushed[0]["channel_kind"], "announcements");
    assert!(pushed[0].get("preview").is_none(), "no text unless --webhook-previews");
    assert!(events_for(&seen, &pupil).is_empty() && events_for(&seen, &parent).is_empty(), "connected: not pushed");

    // The receiver fails twice: the batch comes again, same delivery, then is taken once.
    seen.lock().expect("lock").fail_next = 2;
    let (st, v) = announce(
        &s,
        json!({"school": demo::SCHOOL, "class": "6A", "author": "t05", "body": "Réunion", "client_id": "r1"}),
    )
    .await;
    assert_eq!(st, 200);
    let seq = v["seq"].as_u64().expect("seq");
    let has = |b: &Value| b["events"].as_array().is_some_and(|v| v.iter().any(|e| e["seq"].as_u64() == Some(seq)));
    let deliveries = || -> Vec<String> {
        let s = seen.lock().expect("lock");
        s.requests.iter().filter(|(_, _, b)| has(b)).map(|(d, _, _)| d.clone()).collect()
    };
    for _ in 0..100 {
        if deliveries().len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deliveries = deliveries();
    assert_eq!(deliveries.len(), 3, "two refusals, then taken: {deliveries:?}");
    assert!(deliveries.iter().all(|d| *d == deliveries[0]), "the same delivery each time");
    assert_eq!(events_for(&seen, &away).iter().filter(|e| e["seq"].as_u64() == Some(seq)).count(), 1);

    // The parent turns pushes off: nothing more for them.
    let path = format!("/server/v1/users/{away}/notifications");
    let (st, b) = http_with(&s.addr, "PUT", &path, KEY, &json!({"push": false}).to_string()).await.expect("put");
    assert_eq!(st, 200, "{b}");
    let (st, b) = http_with(&s.addr, "GET", &path, KEY, "").await.expect("get");
    assert!(st == 200 && b.contains("\"push\":false"), "{b}");
    let bad = json!({"quiet_hours": {"start": "25:00", "end": "07:00"}}).to_string();
    let (st, b) = http_with(&s.addr, "PUT", &path, KEY, &bad).await.expect("put");
    assert!(st == 400 && b.contains("bad_quiet_hours"), "{st} {b}");
    let before = events_for(&seen, &away).len();
    let (st, _) = announce(
        &s,
        json!({"school": demo::SCHOOL, "class": "6A", "author": "t01", "body": "Chut", "client_id": "q1"}),
    )
    .await;
    assert_eq!(st, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(events_for(&seen, &away).len(), before, "opted out: not pushed");

    // Signed out everywhere: every session of the pupil closes with 4001.
    let mut second = s.connect(&pupil).await;
    let (st, b) = http_post(&s.addr, &format!("/server/v1/users/{pupil}/disconnect"), KEY, "").await.expect("post");
    assert!(st == 200 && b.contains("\"sessions_on_this_node\":2"), "{b}");
    for c in [&mut c_pupil, &mut second] {
        while c.next_event(Duration::from_secs(5)).await.is_some() {}
        assert_eq!(c.close_reason().map(|r| r.0), Some(close::TOKEN_EXPIRED), "told to sign in again");
    }
    assert!(
        c_parent
            .next_event(Duration::from_millis(300))
            .await
            .is_none_or(|f| !matches!(f, ServerFrame::Reconnect { .. }))
    );
    assert!(c_parent.close_reason().is_none(), "the parent stays connected");
    assert_eq!(http_get(&s.addr, "/healthz").await.expect("healthz").0, 200);
}

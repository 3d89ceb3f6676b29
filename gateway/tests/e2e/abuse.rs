//! Bad input: every kind is answered with a clear error, the server stays up, nothing
//! already accepted is lost, and other users see nothing.

use crate::harness::{FAST, Server};
use preau_client::{Client, ClientError, WsMessage, http_get};
use preau_proto::{ChannelId, Command, Encoding, ErrorCode, ServerFrame};
use std::time::Duration;

/// The next error frame (skipping events), as (id, code).
async fn next_error(c: &mut Client) -> (Option<u64>, ErrorCode) {
    loop {
        match c.next_event(Duration::from_secs(5)).await {
            Some(ServerFrame::Error { id, code, .. }) => return (id, code),
            Some(_) => continue,
            None => panic!("no error frame; closed: {:?}", c.close_reason()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_errors_and_change_nothing() {
    let s = Server::start(FAST);
    let ann = ChannelId::announcements("0750001A", "6A");
    let t01 = s.connect("t01").await;
    t01.send_message(&ann, "accepté avant").await.expect("send");
    let mut watcher = s.connect("e001").await;
    let mut json = s.connect_with("t02", Encoding::Json).await;
    let mut mp = s.connect_with("t05", Encoding::MsgPack).await;

    let text = |s: &str| WsMessage::Text(s.to_owned().into());
    let cases: Vec<(&mut Client, WsMessage, Option<u64>, ErrorCode, &str)> = vec![];
    drop(cases);
    // JSON session.
    for (msg, id, code, what) in [
        (text("{not json"), None, ErrorCode::BadFrame, "malformed JSON"),
        (text("[1,2,3]"), None, ErrorCode::BadFrame, "not an object"),
        (text(r#"{"id":1,"type":"launch_missiles"}"#), Some(1), ErrorCode::UnknownCommand, "unknown command"),
        (
            text(r#"{"id":2,"type":"send","channel":"ann:0750001A:6A","client_id":7,"body":"x"}"#),
            Some(2),
            ErrorCode::BadRequest,
            "wrong type",
        ),
        (
            text(r#"{"id":3,"type":"send","channel":"../etc","client_id":"a","body":"x"}"#),
            Some(3),
            ErrorCode::BadRequest,
            "bad channel id",
        ),
        (
            text(r#"{"id":4,"type":"history","channel":"ann:0750001A:6A","limit":-5}"#),
            Some(4),
            ErrorCode::BadRequest,
            "negative limit",
        ),
        (text(r#"{"type":"ping"}"#), None, ErrorCode::BadRequest, "no id"),
        (WsMessage::Binary(vec![0xde, 0xad, 0xbe, 0xef, 0x00].into()), None, ErrorCode::BadFrame, "binary garbage"),
        (
            text(&format!(
                r#"{{"id":5,"type":"send","channel":"ann:0750001A:6A","client_id":"a","body":"{}"}}"#,
                "é".repeat(5000)
            )),
            Some(5),
            ErrorCode::TooLarge,
            "body over the limit",
        ),
        (
            text(&format!(
                r#"{{"id":6,"type":"send","channel":"ann:0750001A:6A","client_id":"{}","body":"x"}}"#,
                "k".repeat(65)
            )),
            Some(6),
            ErrorCode::BadRequest,
            "client id too long",
        ),
        (
            text(r#"{"id":7,"type":"send","channel":"ann:0750001A:6A","client_id":"a","body":"   "}"#),
            Some(7),
            ErrorCode::BadRequest,
            "empty body",
        ),
        (text(&"x".repeat(100_000)), None, ErrorCode::TooLarge, "oversize frame"),
        (
            text(&format!(r#"{{"id":8,"type":"send","channel":"ann:0750001A:6A","body":"{}"}}"#, "x".repeat(100_000))),
            Some(8),
            ErrorCode::TooLarge,
            "oversize frame answered with its id",
        ),
        (
            text(r#"{"id":9,"type":"history","channel":"ann:0750001A:6A","limit":0}"#),
            Some(9),
            ErrorCode::BadRequest,
            "limit 0",
        ),
        (text(r#"{"id":10,"type":"sync","positions":[],"limit":201}"#), Some(10), ErrorCode::BadRequest, "limit 201"),
    ] {
        json.send_raw(msg).expect("send raw");
        assert_eq!(next_error(&mut json).await, (id, code), "{what}");
    }
    // MessagePack session.
    for (bytes, code, what) in [
        (vec![0xc1u8], ErrorCode::BadFrame, "reserved byte"),
        (vec![0x93, 0x01, 0x02, 0x03], ErrorCode::BadFrame, "array"),
        (
            vec![0x82, 0xa2, b'i', b'd', 0x09, 0xa4, b't', b'y', b'p', b'e', 0xa3, b'f', b'o', b'o'],
            ErrorCode::UnknownCommand,
            "unknown command",
        ),
        (
            vec![0x81, 0xa4, b't', b'y', b'p', b'e', 0xa4, b's', b'e', b'n', b'd'],
            ErrorCode::BadRequest,
            "send without fields",
        ),
        (vec![0xdd, 0xff, 0xff, 0xff, 0xff], ErrorCode::BadFrame, "huge array header"),
    ] {
        mp.send_raw(WsMessage::Binary(bytes.into())).expect("send raw");
        assert_eq!(next_error(&mut mp).await.1, code, "{what}");
    }
    // Both sessions still work.
    json.request(Command::Ping {}).await.expect("json alive");
    mp.request(Command::Ping {}).await.expect("msgpack alive");
    // Nobody else saw anything, and what was accepted before is intact.
    assert!(watcher.next_event(Duration::from_millis(300)).await.is_none(), "bystander saw something");
    let h = watcher
        .request(Command::History { channel: ann, after: Some(0), before: None, limit: None })
        .await
        .expect("history");
    assert_eq!(h.entries.len(), 1);
    assert_eq!(h.entries[0].body.as_deref(), Some("accepté avant"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_are_rate_limited_and_the_server_stays_up() {
    // Default limits: 5 sends per second with a burst of 30, 50 frames per second.
    let s = Server::start(&[]);
    let ann = ChannelId::announcements("0750001A", "6A");
    let t01 = std::sync::Arc::new(s.connect("t01").await);
    let mut limited = 0;
    let mut accepted = 0;
    let mut retry = None;
    for _ in 0..60 {
        match t01.send_message(&ann, "spam").await {
            Ok(_) => accepted += 1,
            Err(ClientError::Server { code: ErrorCode::RateLimited, retry_after_ms, .. }) => {
                limited += 1;
                retry = retry_after_ms;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(accepted >= 30 && limited > 0, "accepted {accepted}, limited {limited}");
    assert!(retry.is_some_and(|ms| ms > 0 && ms <= 1000), "retry after {retry:?}");
    // A raw frame flood: answered with rate_limited, connection kept.
    let mut flood = s.connect_with("t02", Encoding::Json).await;
    for i in 0..400 {
        flood.send_raw(WsMessage::Text(format!(r#"{{"id":{i},"type":"ping"}}"#).into())).expect("flood");
    }
    let mut errors = 0;
    let mut answered = std::collections::BTreeMap::<u64, u32>::new();
    while let Some(f) = flood.next_event(Duration::from_millis(500)).await {
        match f {
            ServerFrame::Error { code: ErrorCode::RateLimited, id, .. } => {
                errors += 1;
                *answered.entry(id.expect("a rate-limited frame is answered with its id")).or_default() += 1;
            }
            ServerFrame::Ack(a) => *answered.entry(a.id).or_default() += 1,
            _ => {}
        }
    }
    assert!(errors > 100, "only {errors} rate_limited answers");
    assert_eq!(answered.len(), 400, "every frame answered");
    assert!(answered.values().all(|n| *n == 1), "exactly once each");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    flood.request(Command::Ping {}).await.expect("still connected after the flood");
    let (status, _) = http_get(&s.addr, "/healthz").await.expect("healthz");
    assert_eq!(status, 200);
    // The retry after the wait goes through, and every accepted send is stored once.
    tokio::time::sleep(Duration::from_millis(retry.unwrap_or(200))).await;
    t01.send_message(&ann, "après la pause").await.expect("after waiting");
    let h = t01
        .request(Command::History { channel: ann, after: Some(0), before: None, limit: None })
        .await
        .expect("history");
    assert_eq!(h.entries.len(), accepted + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_beyond_the_hard_cap_close_only_that_connection() {
    let s = Server::start(FAST);
    let mut big = s.connect_with("t01", Encoding::Json).await;
    let other = s.connect("t02").await;
    big.send_raw(WsMessage::Text("x".repeat(1_000_000).into())).expect("send");
    while big.next_event(Duration::from_secs(5)).await.is_some() {}
    assert_eq!(big.close_reason().map(|r| r.0), Some(1009), "message too big");
    other.request(Command::Ping {}).await.expect("others unaffected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_missing_expired_forged_or_for_someone_else_get_401() {
    let s = Server::start(&["--jwt-audience", "preau"]);
    let key = std::fs::read(s.data_path().join("data/dev-signing-key")).expect("dev key");
    let iss = preau_auth::Issuer::hs256(&key);
    let claims = |exp: u64, aud: Option<&str>, sub: &str, profile: &str| preau_auth::Claims {
        sub: sub.into(),
        profile: profile.into(),
        school: "0750001A".into(),
        exp,
        iat: None,
        iss: None,
        aud: aud.map(Into::into),
    };
    let now = preau_auth::now_secs();
    // Without a token the upgrade waits for an `auth` frame (browser_auth.rs tests it).
    let cases = [
        (iss.sign(&claims(now - 3600, Some("preau"), "t01", "teacher")), "token_expired"),
        (
            preau_auth::Issuer::hs256(b"not-the-key-not-the-key-not-the!").sign(&claims(
                now + 60,
                Some("preau"),
                "t01",
                "teacher",
            )),
            "token_invalid",
        ),
        (iss.sign(&claims(now + 60, Some("another-service"), "t01", "teacher")), "token_wrong_audience"),
        ("a.b.c".to_owned(), "token_malformed"),
        (iss.sign(&claims(now + 60, Some("preau"), "nobody", "teacher")), "unknown_user"),
        (iss.sign(&claims(now + 60, Some("preau"), "e001", "teacher")), "unknown_user"),
    ];
    for (token, reason) in cases {
        match Client::connect(&s.addr, &token, Encoding::Json).await {
            Err(ClientError::Http { status, body }) => {
                assert_eq!(status, 401, "{reason}");
                let v: serde_json::Value = serde_json::from_str(&body).expect("json error body");
                assert_eq!((v["code"].as_str(), v["reason"].as_str()), (Some("unauthorized"), Some(reason)));
            }
            other => panic!("{reason}: expected 401, got {:?}", other.map(|_| ())),
        }
    }
    let good = iss.sign(&claims(now + 60, Some("preau"), "t01", "teacher"));
    Client::connect(&s.addr, &good, Encoding::Json).await.expect("a good token connects");
    // A token expiring during the session closes it with the documented code.
    let short = iss.sign(&claims(now + 2, Some("preau"), "t02", "teacher"));
    let mut c = Client::connect(&s.addr, &short, Encoding::Json).await.expect("connect");
    while c.next_event(Duration::from_secs(6)).await.is_some() {}
    assert_eq!(c.close_reason().map(|r| r.0), Some(preau_proto::close::TOKEN_EXPIRED));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_user_are_capped() {
    let s = Server::start(&["--max-connections-per-user", "2"]);
    let _a = s.connect("e001").await;
    let _b = s.connect("e001").await;
    let t = s.token("e001").await;
    match Client::connect(&s.addr, &t, Encoding::Json).await {
        Err(ClientError::Http { status, body }) => {
            assert!(status == 429 && body.contains("too_many_connections"), "{status} {body}")
        }
        other => panic!("third connection: {:?}", other.map(|_| ())),
    }
    s.connect("e002").await;
}

/// Configured `aud` and `iss` are required; `nbf` is honoured with the leeway; standard
/// tokens (array `aud`, fractional dates) pass; `alg: none` is `token_invalid`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_claims_and_standard_tokens() {
    use base64::Engine as _;
    let s = Server::start(&["--jwt-audience", "preau", "--jwt-issuer", "ent", "--jwt-leeway-seconds", "5"]);
    let key = std::fs::read(s.data_path().join("data/dev-signing-key")).expect("dev key");
    let now = preau_auth::now_secs();
    let sign = |claims: serde_json::Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&key),
        )
        .expect("sign")
    };
    let base = |extra: serde_json::Value| {
        let mut c = serde_json::json!({"sub": "t01", "profile": "teacher", "school": "0750001A", "exp": now + 60});
        for (k, v) in extra.as_object().expect("object") {
            c[k] = v.clone();
        }
        c
    };
    let b64 = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let unsigned = format!(
        "{}.{}.",
        b64(serde_json::json!({"alg": "none"})),
        b64(base(serde_json::json!({"aud": "preau", "iss": "ent"})))
    );
    let refused = [
        (sign(base(serde_json::json!({"iss": "ent"}))), "token_wrong_audience"),
        (sign(base(serde_json::json!({"aud": "preau"}))), "token_wrong_issuer"),
        (sign(base(serde_json::json!({"aud": "preau", "iss": "ent", "nbf": now + 120}))), "token_not_yet_valid"),
        (unsigned, "token_invalid"),
    ];
    for (token, reason) in refused {
        match Client::connect(&s.addr, &token, Encoding::Json).await {
            Err(ClientError::Http { status, body }) => {
                let v: serde_json::Value = serde_json::from_str(&body).expect("json error body");
                assert_eq!((status, v["reason"].as_str()), (401, Some(reason)), "{body}");
            }
            other => panic!("{reason}: expected 401, got {:?}", other.map(|_| ())),
        }
    }
    let standard = sign(base(serde_json::json!({
        "aud": ["ent-portal", "preau"], "iss": "ent", "exp": now as f64 + 60.5, "nbf": now + 2, "iat": now as f64 - 0.5
    })));
    let c = Client::connect(&s.addr, &standard, Encoding::Json).await.expect("a standard token connects");
    c.request(Command::Ping {}).await.expect("ping");
}

/// A text frame that is not UTF-8 closes with 1007 (RFC 6455). Written on a raw socket:
/// WebSocket libraries refuse to send such a frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_a_text_frame_closes_with_1007() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Server::start(FAST);
    let token = s.token("e001").await;
    let mut tcp = tokio::net::TcpStream::connect(&s.addr).await.expect("connect");
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {token}\r\n\r\n",
        s.addr
    );
    tcp.write_all(req.as_bytes()).await.expect("upgrade");
    // A masked text frame (FIN, opcode 1) of three bytes that are not UTF-8.
    let mask = [1u8, 2, 3, 4];
    let payload = [0xffu8, 0xfe, 0xc3];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    tcp.write_all(&frame).await.expect("frame");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    // After the 101 answer and `hello`, a close frame (opcode 8) with code 1007.
    let close = buf.windows(4).position(|w| w[0] == 0x88 && w[2..4] == 1007u16.to_be_bytes());
    assert!(close.is_some(), "no 1007 close in {:?}", String::from_utf8_lossy(&buf));
}

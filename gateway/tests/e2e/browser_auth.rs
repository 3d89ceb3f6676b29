//! Issue 14 (browser-friendly auth): a session may give its token in a first `auth` frame
//! instead of the URL, which would land in proxies' logs; bad or missing ones close with
//! 4001 and the reason. CORS lets only the listed origins' pages call the HTTP endpoints,
//! checked with the preflight a browser sends.

use crate::harness::{FAST, Server};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(addr: &str, protocol: &str) -> Ws {
    let mut req = format!("ws://{addr}/ws").into_client_request().expect("request");
    req.headers_mut().insert("sec-websocket-protocol", protocol.parse().expect("header"));
    tokio_tungstenite::connect_async(req).await.expect("upgrade without a token").0
}

async fn next(ws: &mut Ws) -> Message {
    tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a frame in time").expect("open").expect("ok")
}

async fn closed_with(ws: &mut Ws) -> (u16, String) {
    loop {
        match next(ws).await {
            Message::Close(Some(f)) => return (u16::from(f.code), f.reason.to_string()),
            Message::Close(None) => return (0, String::new()),
            _ => {}
        }
    }
}

/// A raw request as a browser sends it; the status line and headers, lowercased.
async fn raw(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out.to_lowercase())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_in_the_first_frame_opens_a_session_and_cors_admits_only_listed_origins() {
    let mut args = FAST.to_vec();
    args.extend_from_slice(&["--cors-origins", "https://ent.example.fr,https://college.example.fr"]);
    let s = Server::start(&args);
    let token = s.token("e001").await;

    // JSON: the token in the first frame, then `hello` as usual.
    let mut ws = open(&s.addr, "preau.v1.json").await;
    ws.send(Message::text(json!({"type": "auth", "token": token}).to_string())).await.expect("auth");
    let hello: Value = serde_json::from_str(next(&mut ws).await.to_text().expect("text")).expect("json");
    assert_eq!((hello["type"].as_str(), hello["user"].as_str()), (Some("hello"), Some("e001")), "{hello}");
    ws.send(Message::text(json!({"id": 1, "type": "sync", "positions": []}).to_string())).await.expect("sync");
    let ack: Value = serde_json::from_str(next(&mut ws).await.to_text().expect("text")).expect("json");
    assert_eq!(ack["type"], "ack", "the session works: {ack}");

    // MessagePack: the same frame as a map in a binary frame.
    let mut mp = open(&s.addr, "preau.v1.msgpack").await;
    let frame = preau_proto::AuthFrame { token: token.clone() };
    mp.send(Message::binary(rmp_serde::to_vec_named(&frame).expect("msgpack"))).await.expect("auth");
    let hello = preau_proto::decode_server(preau_proto::Encoding::MsgPack, &next(&mut mp).await.into_data())
        .expect("a server frame");
    assert!(matches!(hello, preau_proto::ServerFrame::Hello { .. }), "{hello:?}");

    // Anything else first, a bad token, or a token of nobody: closed with the reason.
    let mut other = open(&s.addr, "preau.v1.json").await;
    other.send(Message::text(json!({"id": 1, "type": "sync", "positions": []}).to_string())).await.expect("send");
    assert_eq!(closed_with(&mut other).await, (4001, "token_missing".into()));
    let mut forged = open(&s.addr, "preau.v1.json").await;
    forged.send(Message::text(json!({"type": "auth", "token": "e30.e30.c2ln"}).to_string())).await.expect("send");
    let (code, reason) = closed_with(&mut forged).await;
    assert!(code == 4001 && reason.starts_with("token_"), "{code} {reason}");
    // The header and ?token= still work.
    assert!(preau_client::Client::connect(&s.addr, &token, preau_proto::Encoding::Json).await.is_ok());

    // CORS: the preflight of a listed origin's page, then its request.
    let pre = [
        ("Origin", "https://ent.example.fr"),
        ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Headers", "authorization, content-type"),
    ];
    let (st, h) = raw(&s.addr, "OPTIONS", "/rooms/6A/token", &pre).await;
    assert_eq!(st, 204, "{h}");
    assert!(h.contains("access-control-allow-origin: https://ent.example.fr"), "{h}");
    assert!(h.contains("access-control-allow-methods: get, post, put, delete"), "{h}");
    assert!(h.contains("access-control-allow-headers: authorization, content-type"), "{h}");
    let t01 = s.token("t01").await;
    let auth = format!("Bearer {t01}");
    let (st, h) =
        raw(&s.addr, "POST", "/rooms/6A/token", &[("Origin", "https://ent.example.fr"), ("Authorization", &auth)])
            .await;
    assert!(st == 200 && h.contains("access-control-allow-origin: https://ent.example.fr"), "{st} {h}");
    // Another origin: its preflight is refused, its answers carry no permission.
    let evil = [("Origin", "https://evil.example"), ("Access-Control-Request-Method", "POST")];
    let (st, h) = raw(&s.addr, "OPTIONS", "/rooms/6A/token", &evil).await;
    assert!(st == 403 && h.contains("origin_not_allowed"), "{st} {h}");
    let (_, h) =
        raw(&s.addr, "POST", "/rooms/6A/token", &[("Origin", "https://evil.example"), ("Authorization", &auth)]).await;
    assert!(!h.contains("access-control-allow-origin"), "{h}");
    // A bad origin setting stops the start, naming it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_preau-gateway"))
        .args(["--listen", "127.0.0.1:0", "--cors-origins", "https://*.example.fr"])
        .output()
        .expect("run");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--cors-origins"));
}

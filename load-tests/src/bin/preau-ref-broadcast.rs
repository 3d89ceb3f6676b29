//! `preau-ref-broadcast`: the reference the gateway is measured against. The same
//! WebSocket library (tokio-tungstenite, as axum uses), the same 4 KiB read buffer and the
//! same frame types and encoding, but no authentication, no policy, no storage and one
//! global broadcast: the ceiling of the stack. It speaks just enough of the protocol for
//! `preau-load --scenario fanout --reference` to drive it unchanged: `hello`, `ping`,
//! `sync` (lists the channels it counts), `send` (numbers, broadcasts to every
//! connection, acks).

// A load generator, bench or test of real sockets measures real time: the clock rule
// (clippy.toml) is for the libraries.
#![allow(clippy::disallowed_methods)]

use futures_util::{SinkExt, StreamExt};
use preau_proto::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

type Seqs = Arc<Mutex<HashMap<ChannelId, Seq>>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8090".into());
    anyhow::ensure!(addr.starts_with("127."), "loopback only");
    let listener = TcpListener::bind(&addr).await?;
    println!("preau-ref-broadcast listening on {}", listener.local_addr()?);
    // One broadcast channel; a receiver that lags is dropped, as a slow consumer would be.
    let (tx, _) = broadcast::channel::<Arc<SharedFrame>>(1024);
    let seqs: Seqs = Arc::new(Mutex::new(HashMap::from([(ChannelId::announcements("0750001A", "6A"), 0)])));
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let (tx, seqs) = (tx.clone(), seqs.clone());
        tokio::spawn(async move {
            let mut enc = Encoding::Json;
            // The error type is tungstenite's callback signature, not ours to shrink.
            #[allow(clippy::result_large_err)]
            let cb = |req: &Request, mut resp: Response| {
                let offered = req.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()).unwrap_or("");
                if offered.contains(SUBPROTOCOL_MSGPACK) {
                    enc = Encoding::MsgPack;
                    if let Ok(v) = SUBPROTOCOL_MSGPACK.parse() {
                        resp.headers_mut().insert("sec-websocket-protocol", v);
                    }
                } else if let Ok(v) = SUBPROTOCOL_JSON.parse() {
                    resp.headers_mut().insert("sec-websocket-protocol", v);
                }
                Ok(resp)
            };
            let mut cfg = WebSocketConfig::default();
            cfg.read_buffer_size = 4 * 1024;
            cfg.write_buffer_size = 4 * 1024;
            let Ok(ws) = tokio_tungstenite::accept_hdr_async_with_config(tcp, cb, Some(cfg)).await else { return };
            let (mut sink, mut stream) = ws.split();
            let msg = |enc: Encoding, b: bytes_of::Bytes| match enc {
                Encoding::Json => Message::Text(String::from_utf8_lossy(&b).into_owned().into()),
                Encoding::MsgPack => Message::Binary(b),
            };
            let hello = ServerFrame::Hello {
                version: PROTOCOL_VERSION,
                user: "ref".into(),
                profile: "ref".into(),
                school: "ref".into(),
                limits: Limits {
                    max_frame_bytes: 65536,
                    max_body_bytes: 8192,
                    max_group_members: 50,
                    sends_per_second: 0,
                    send_burst: 0,
                },
                suspension: None,
            };
            if sink.send(msg(enc, encode_server(enc, &hello))).await.is_err() {
                return;
            }
            let mut rx = tx.subscribe();
            loop {
                tokio::select! {
                    f = rx.recv() => match f {
                        Ok(f) => {
                            if sink.feed(msg(enc, f.encoded(enc))).await.is_err() { return }
                            while let Ok(f) = rx.try_recv() {
                                if sink.feed(msg(enc, f.encoded(enc))).await.is_err() { return }
                            }
                            if sink.flush().await.is_err() { return }
                        }
                        Err(_) => return,
                    },
                    m = stream.next() => {
                        let Some(Ok(m)) = m else { return };
                        let bytes = match m {
                            Message::Text(t) => bytes_of::Bytes::from(t),
                            Message::Binary(b) => b,
                            Message::Close(_) => return,
                            _ => continue,
                        };
                        let Ok(frame) = decode_client(enc, &bytes) else { continue };
                        let mut ack = Ack { id: frame.id, ..Ack::default() };
                        match frame.cmd {
                            Command::Send { channel, client_id, body, .. } => {
                                let seq = {
                                    let Ok(mut s) = seqs.lock() else { return };
                                    let n = s.entry(channel.clone()).or_insert(0);
                                    *n += 1;
                                    *n
                                };
                                let entry = Entry {
                                    seq, kind: EntryKind::Message, author: "ref".into(), at: 0, body: Some(body), title: None,
                                    thread: None, reply_to: None, target: None, locked: None, pinned: None, members: vec![],
                                    joined: None, edited: false, deleted: false, client_id: Some(client_id),
                                };
                                let _ = tx.send(Arc::new(SharedFrame::new(ServerFrame::Event { channel, entry })));
                                ack.seq = Some(seq);
                            }
                            Command::Sync { .. } => {
                                let Ok(s) = seqs.lock() else { return };
                                ack.channels = s.iter().map(|(c, n)| ChannelInfo {
                                    channel: c.clone(), kind: c.kind(), title: String::new(), last_seq: *n, read_seq: 0,
                                    unread: 0, can_post: true, moderator: false, entries: vec![], more: false,
                                }).collect();
                            }
                            _ => {}
                        }
                        if sink.send(msg(enc, encode_server(enc, &ServerFrame::Ack(ack)))).await.is_err() { return }
                    }
                }
            }
        });
    }
}

/// `bytes` through tokio-tungstenite's re-export, to avoid another direct dependency.
mod bytes_of {
    pub use tokio_tungstenite::tungstenite::Bytes;
}

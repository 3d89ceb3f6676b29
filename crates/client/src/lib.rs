//! The Rust client of Préau: connects over WebSocket with either encoding, matches
//! answers to requests, hands out events, tracks each channel's last seq and resumes
//! after a reconnect. The tests and the load generator drive the gateway through it.
//!
//! # Layout
//! - [`Client`]: one connection: [`Client::request`] sends a command and awaits its ack
//!   or error, [`Client::next_event`] yields everything else.
//! - [`SeqTracker`]: per-channel last seq, duplicates and gaps; [`Client::resume`] asks
//!   for exactly what was missed, page by page.
//! - [`http_get`]/[`http_post`]: a minimal HTTP/1.1 client for the gateway's own HTTP
//!   endpoints (development tokens, admin import) on loopback.

use futures_util::{SinkExt, StreamExt};
use preau_proto::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
pub use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// What went wrong on the client side.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ClientError {
    /// The connection could not be set up (refused, HTTP error at upgrade).
    #[error("connect failed: {0}")]
    Connect(String),
    /// The upgrade was answered with an HTTP error.
    #[error("HTTP {status}: {body}")]
    Http {
        /// Status code.
        status: u16,
        /// Body.
        body: String,
    },
    /// The server answered the command with an error.
    #[error("{code}: {message}")]
    Server {
        /// Stable code.
        code: ErrorCode,
        /// Message.
        message: String,
        /// For `rate_limited`.
        retry_after_ms: Option<u64>,
    },
    /// The connection closed (with the close code and reason when given).
    #[error("connection closed: {0:?}")]
    Closed(Option<(u16, String)>),
    /// No answer in time.
    #[error("timed out")]
    Timeout,
}

impl ClientError {
    /// The server's error code, if the server refused the command.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<ServerFrame>>>>;

/// One connection to a gateway.
pub struct Client {
    out: mpsc::UnboundedSender<WsMessage>,
    pending: Pending,
    events: mpsc::UnboundedReceiver<ServerFrame>,
    next_id: AtomicU64,
    closed: Arc<Mutex<Option<(u16, String)>>>,
    /// False once the reader stopped: requests then fail at once instead of timing out.
    alive: Arc<AtomicBool>,
    pause: watch::Sender<bool>,
    enc: Encoding,
    /// The server's `hello`.
    pub hello: ServerFrame,
    /// How long `request` waits for an answer.
    pub timeout: Duration,
}

/// A fresh client message id: a UUID v7 (48 bits of milliseconds, then 74 random bits),
/// unique for ever, not only in this process. An id made of the process id and a counter
/// (as it once was) repeats after a restart — in a container the pid is always 1 — and
/// the server then takes a new message for a retry of an old one and never stores it.
pub fn new_client_id() -> String {
    use preau_proto::clock::Clock as _;
    uuid_v7(preau_proto::clock::SystemClock.now_ms().max(0) as u64, rand::random())
}

/// The UUID v7 of a time (ms) and 80 random bits.
fn uuid_v7(ms: u64, r: u128) -> String {
    let hi = (ms & 0xffff_ffff_ffff) << 16 | 0x7000 | (r as u64 & 0x0fff);
    let lo = (r >> 12) as u64 & 0x3fff_ffff_ffff_ffff | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

impl Client {
    /// Connects to `ws://addr/ws` with a token and an encoding, and waits for `hello`.
    pub async fn connect(addr: &str, token: &str, enc: Encoding) -> Result<Client, ClientError> {
        Client::connect_from(addr, token, enc, None).await
    }

    /// Like [`Client::connect`], from a given local address (load tests spread their
    /// connections over 127.0.0.x to get past one address's ephemeral ports).
    pub async fn connect_from(
        addr: &str,
        token: &str,
        enc: Encoding,
        local: Option<std::net::IpAddr>,
    ) -> Result<Client, ClientError> {
        let mut req =
            format!("ws://{addr}/ws").into_client_request().map_err(|e| ClientError::Connect(e.to_string()))?;
        let h = req.headers_mut();
        if !token.is_empty() {
            let v = format!("Bearer {token}").parse().map_err(|_| ClientError::Connect("bad token".into()))?;
            h.insert("authorization", v);
        }
        h.insert(
            "sec-websocket-protocol",
            enc.subprotocol().parse().map_err(|_| ClientError::Connect("bad protocol".into()))?,
        );
        let mut cfg = WebSocketConfig::default();
        cfg.read_buffer_size = 4 * 1024;
        cfg.write_buffer_size = 0;
        let remote: std::net::SocketAddr =
            addr.parse().map_err(|_| ClientError::Connect(format!("bad address {addr}")))?;
        let sock = if remote.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        if let Some(ip) = local {
            sock.bind(std::net::SocketAddr::new(ip, 0)).map_err(|e| ClientError::Connect(e.to_string()))?;
        }
        let tcp = sock.connect(remote).await.map_err(|e| ClientError::Connect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let (ws, _) = tokio_tungstenite::client_async_with_config(req, tcp, Some(cfg)).await.map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(resp) => ClientError::Http {
                status: resp.status().as_u16(),
                body: resp.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default(),
            },
            other => ClientError::Connect(other.to_string()),
        })?;
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<WsMessage>();
        let (ev_tx, mut events) = mpsc::unbounded_channel();
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let closed = Arc::new(Mutex::new(None));
        let (pause, mut paused) = watch::channel(false);
        tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                let close = matches!(m, WsMessage::Close(_));
                if sink.send(m).await.is_err() || close {
                    break;
                }
            }
        });
        let alive = Arc::new(AtomicBool::new(true));
        let (p2, c2, a2) = (pending.clone(), closed.clone(), alive.clone());
        tokio::spawn(async move {
            loop {
                while *paused.borrow() {
                    if paused.changed().await.is_err() {
                        break;
                    }
                }
                let Some(Ok(msg)) = stream.next().await else { break };
                let bytes = match msg {
                    WsMessage::Text(t) => bytes::Bytes::from(t),
                    WsMessage::Binary(b) => b,
                    WsMessage::Close(f) => {
                        if let Ok(mut c) = c2.lock() {
                            *c = Some(
                                f.map(|f| (u16::from(f.code), f.reason.to_string())).unwrap_or((1005, String::new())),
                            );
                        }
                        break;
                    }
                    _ => continue,
                };
                let Ok(frame) = decode_server(enc, &bytes) else { continue };
                let id = match &frame {
                    ServerFrame::Ack(a) => Some(a.id),
                    ServerFrame::Error { id: Some(id), .. } => Some(*id),
                    _ => None,
                };
                let waiter = id.and_then(|id| p2.lock().ok().and_then(|mut p| p.remove(&id)));
                match waiter {
                    Some(w) => {
                        let _ = w.send(frame);
                    }
                    None => {
                        if ev_tx.send(frame).is_err() {
                            break;
                        }
                    }
                }
            }
            // Flag first, then fail the waiting requests: a request checks the flag
            // after registering, so none is left waiting.
            a2.store(false, Ordering::SeqCst);
            if let Ok(mut p) = p2.lock() {
                p.clear();
            }
        });
        let hello = match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Some(h @ ServerFrame::Hello { .. })) => h,
            Ok(Some(other)) => return Err(ClientError::Connect(format!("expected hello, got {other:?}"))),
            Ok(None) => return Err(ClientError::Closed(closed.lock().ok().and_then(|c| c.clone()))),
            Err(_) => return Err(ClientError::Timeout),
        };
        Ok(Client {
            out,
            pending,
            events,
            next_id: AtomicU64::new(1),
            closed,
            alive,
            pause,
            enc,
            hello,
            timeout: Duration::from_secs(30),
        })
    }

    /// The server's `hello`.
    pub fn hello(&self) -> &ServerFrame {
        &self.hello
    }

    /// The user this connection is for.
    pub fn user(&self) -> &str {
        match &self.hello {
            ServerFrame::Hello { user, .. } => user,
            _ => "",
        }
    }

    /// Sends a command and waits for its ack or error.
    pub async fn request(&self, cmd: Command) -> Result<Ack, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = self.pending.lock() {
            p.insert(id, tx);
        }
        if !self.alive.load(Ordering::SeqCst) {
            if let Ok(mut p) = self.pending.lock() {
                p.remove(&id);
            }
            return Err(self.closed_error());
        }
        let bytes = encode_client(self.enc, &ClientFrame { id, cmd });
        let msg = match self.enc {
            Encoding::Json => WsMessage::Text(String::from_utf8_lossy(&bytes).into_owned().into()),
            Encoding::MsgPack => WsMessage::Binary(bytes),
        };
        self.out.send(msg).map_err(|_| self.closed_error())?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(ServerFrame::Ack(a))) => Ok(a),
            Ok(Ok(ServerFrame::Error { code, message, retry_after_ms, .. })) => {
                Err(ClientError::Server { code, message, retry_after_ms })
            }
            Ok(Ok(other)) => Err(ClientError::Connect(format!("unexpected answer {other:?}"))),
            Ok(Err(_)) => Err(self.closed_error()),
            Err(_) => {
                if let Ok(mut p) = self.pending.lock() {
                    p.remove(&id);
                }
                Err(ClientError::Timeout)
            }
        }
    }

    fn closed_error(&self) -> ClientError {
        ClientError::Closed(self.closed.lock().ok().and_then(|c| c.clone()))
    }

    /// Sends a raw WebSocket message (tests of bad input).
    pub fn send_raw(&self, msg: WsMessage) -> Result<(), ClientError> {
        self.out.send(msg).map_err(|_| self.closed_error())
    }

    /// Posts a message with a fresh client id; returns the ack.
    pub async fn send_message(&self, channel: &ChannelId, body: &str) -> Result<Ack, ClientError> {
        self.request(Command::Send {
            channel: channel.clone(),
            client_id: new_client_id(),
            body: body.into(),
            thread: None,
            reply_to: None,
        })
        .await
    }

    /// The next event (a frame that is not an answer), or `None` after `wait` or once
    /// the connection closed.
    pub async fn next_event(&mut self, wait: Duration) -> Option<ServerFrame> {
        tokio::time::timeout(wait, self.events.recv()).await.ok().flatten()
    }

    /// Stops (or restarts) reading the socket, to play a client that cannot keep up.
    pub fn pause_reading(&self, paused: bool) {
        let _ = self.pause.send(paused);
    }

    /// The close code and reason, once the server closed the connection.
    pub fn close_reason(&self) -> Option<(u16, String)> {
        self.closed.lock().ok().and_then(|c| c.clone())
    }

    /// Closes the connection.
    pub fn close(&self) {
        let _ = self.out.send(WsMessage::Close(None));
    }

    /// Resumes after a reconnect: asks for every entry after the tracker's positions,
    /// page by page, feeds them to the tracker, and returns them with their channel.
    pub async fn resume(&self, tracker: &mut SeqTracker) -> Result<Vec<(ChannelId, Entry)>, ClientError> {
        let positions = tracker.positions();
        let ack = self.request(Command::Sync { positions, limit: None }).await?;
        let mut out = Vec::new();
        for info in ack.channels {
            if !tracker.knows(&info.channel) {
                continue;
            }
            let mut more = info.more;
            for e in info.entries {
                tracker.observe(&info.channel, e.seq);
                out.push((info.channel.clone(), e));
            }
            while more {
                let after = tracker.last(&info.channel);
                let page = self
                    .request(Command::History {
                        channel: info.channel.clone(),
                        after: Some(after),
                        before: None,
                        limit: None,
                    })
                    .await?;
                more = page.more && !page.entries.is_empty();
                for e in page.entries {
                    tracker.observe(&info.channel, e.seq);
                    out.push((info.channel.clone(), e));
                }
            }
        }
        Ok(out)
    }
}

impl Client {
    /// Fetches everything after the tracker's position in `channel` (after a gap), feeds
    /// it to the tracker and returns it.
    pub async fn catch_up(&self, tracker: &mut SeqTracker, channel: &ChannelId) -> Result<Vec<Entry>, ClientError> {
        let mut out = Vec::new();
        loop {
            let after = tracker.last(channel);
            let page = self
                .request(Command::History { channel: channel.clone(), after: Some(after), before: None, limit: None })
                .await?;
            for e in &page.entries {
                tracker.observe(channel, e.seq);
            }
            let done = !page.more || page.entries.is_empty();
            out.extend(page.entries);
            if done {
                return Ok(out);
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.close();
    }
}

/// What [`SeqTracker::observe`] made of a seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// The next one expected.
    Next,
    /// Already seen.
    Duplicate,
    /// Some seqs were skipped (`missing` of them): nothing was recorded; fetch them with
    /// [`Client::catch_up`] (the entry just seen is among those it returns).
    Gap {
        /// How many are missing.
        missing: u64,
    },
}

/// Per-channel last seq, with duplicate and gap counts: "nothing lost, nothing twice" is
/// checked from these. The position only moves one seq at a time, so a channel's last seq
/// means everything up to it was seen.
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    last: HashMap<ChannelId, Seq>,
    /// Seqs seen again.
    pub duplicates: u64,
    /// Times an event arrived ahead of a missing one (each repaired by a catch-up).
    pub gaps: u64,
}

impl SeqTracker {
    /// Starts tracking a channel from a seq (0 for its start).
    pub fn track(&mut self, ch: &ChannelId, from: Seq) {
        self.last.entry(ch.clone()).or_insert(from);
    }

    /// Whether the channel is tracked.
    pub fn knows(&self, ch: &ChannelId) -> bool {
        self.last.contains_key(ch)
    }

    /// Last seq seen in a channel.
    pub fn last(&self, ch: &ChannelId) -> Seq {
        self.last.get(ch).copied().unwrap_or(0)
    }

    /// Records a seq seen in a channel.
    pub fn observe(&mut self, ch: &ChannelId, seq: Seq) -> Observed {
        let last = self.last.entry(ch.clone()).or_insert(0);
        if seq <= *last {
            self.duplicates += 1;
            Observed::Duplicate
        } else if seq == *last + 1 {
            *last = seq;
            Observed::Next
        } else {
            self.gaps += 1;
            Observed::Gap { missing: seq - *last - 1 }
        }
    }

    /// Positions to resume from.
    pub fn positions(&self) -> Vec<Position> {
        self.last.iter().map(|(c, s)| Position { channel: c.clone(), seq: *s }).collect()
    }
}

/// A plain HTTP/1.1 exchange on loopback: returns the status and body.
async fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    s.write_all(body).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(rest) } else { rest.to_owned() };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// GET on loopback.
pub async fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    http(addr, "GET", path, &[], b"").await
}

/// POST of a JSON body with a bearer token, on loopback.
pub async fn http_post(addr: &str, path: &str, token: &str, json: &str) -> std::io::Result<(u16, String)> {
    let auth = format!("Bearer {token}");
    http(addr, "POST", path, &[("Authorization", &auth), ("Content-Type", "application/json")], json.as_bytes()).await
}

/// A request with a bearer token and an optional JSON body (`PUT`, `DELETE`, an
/// authenticated `GET`), on loopback.
pub async fn http_with(
    addr: &str,
    method: &str,
    path: &str,
    token: &str,
    json: &str,
) -> std::io::Result<(u16, String)> {
    let auth = format!("Bearer {token}");
    http(addr, method, path, &[("Authorization", &auth), ("Content-Type", "application/json")], json.as_bytes()).await
}

/// A development token for `user` from a gateway in development mode.
pub async fn dev_token(addr: &str, user: &str) -> Result<String, ClientError> {
    let (status, body) =
        http_get(addr, &format!("/dev/token?user={user}")).await.map_err(|e| ClientError::Connect(e.to_string()))?;
    if status != 200 {
        return Err(ClientError::Http { status, body });
    }
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("token").and_then(|t| t.as_str()).map(str::to_owned))
        .ok_or(ClientError::Http { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_uuid_v7_and_never_repeat() {
        let a = uuid_v7(0x0190_1234_5678, 0);
        assert_eq!(a, "01901234-5678-7000-8000-000000000000");
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| new_client_id()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(10) {
            assert_eq!(id.len(), 36);
            assert_eq!(&id[14..15], "7", "version 7: {id}");
            assert!(!id.starts_with(&format!("{}-", std::process::id())), "no process id in {id}");
        }
    }

    #[test]
    fn tracker_counts_gaps_and_duplicates() {
        let ch = ChannelId::group("g");
        let mut t = SeqTracker::default();
        t.track(&ch, 0);
        assert_eq!(t.observe(&ch, 1), Observed::Next);
        assert_eq!(t.observe(&ch, 1), Observed::Duplicate);
        assert_eq!(t.observe(&ch, 4), Observed::Gap { missing: 2 });
        assert_eq!((t.duplicates, t.gaps, t.last(&ch)), (1, 1, 1), "a gap does not move the position");
        assert_eq!(t.observe(&ch, 2), Observed::Next);
    }

    #[test]
    fn dechunks() {
        assert_eq!(dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), "hello world");
    }
}

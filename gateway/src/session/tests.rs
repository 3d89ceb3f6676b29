//! The session driver on paused time: each way a session ends (token expiry 4001, slow
//! consumer 4008, abuse 4002, drain 1012, idle timeout) runs in milliseconds of real
//! time, against a real gateway (SQLite store in a temporary folder) and an in-memory
//! socket.

use super::*;
use crate::config::Cli;
use clap::Parser;
use futures_util::task::AtomicWaker;
use preau_bus::Topic;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use tokio::sync::Notify;
use tokio::sync::mpsc;

/// The server's side of an in-memory WebSocket: what the client sends arrives on
/// `incoming`; what the server writes lands in `written`, which holds at most `room`
/// messages until the test reads them (a client that stops reading).
struct MemSocket {
    incoming: mpsc::UnboundedReceiver<Result<Message, axum::Error>>,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    written: parking_lot::Mutex<VecDeque<Message>>,
    room: AtomicUsize,
    closed: AtomicBool,
    /// Wakes the server's writer when the test reads.
    writer: AtomicWaker,
    /// Wakes the test when the server writes or closes.
    wrote: Notify,
}

/// The test's side.
struct Client {
    tx: mpsc::UnboundedSender<Result<Message, axum::Error>>,
    shared: Arc<Shared>,
}

fn pair(room: usize) -> (MemSocket, Client) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared { room: AtomicUsize::new(room), ..Shared::default() });
    (MemSocket { incoming: rx, shared: shared.clone() }, Client { tx, shared })
}

impl Stream for MemSocket {
    type Item = Result<Message, axum::Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.incoming.poll_recv(cx)
    }
}

impl Sink<Message> for MemSocket {
    type Error = axum::Error;
    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        let s = &self.shared;
        s.writer.register(cx.waker());
        if s.written.lock().len() < s.room.load(Ordering::Relaxed) { Poll::Ready(Ok(())) } else { Poll::Pending }
    }
    fn start_send(self: Pin<&mut Self>, m: Message) -> Result<(), axum::Error> {
        self.shared.written.lock().push_back(m);
        self.shared.wrote.notify_one();
        Ok(())
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        self.shared.closed.store(true, Ordering::Relaxed);
        self.shared.wrote.notify_one();
        Poll::Ready(Ok(()))
    }
}

impl Client {
    fn send_text(&self, t: &str) {
        let _ = self.tx.send(Ok(Message::Text(t.into())));
    }

    /// The next message the server wrote, or `None` once it closed the socket.
    async fn next(&self) -> Option<Message> {
        loop {
            let notified = self.shared.wrote.notified();
            if let Some(m) = self.shared.written.lock().pop_front() {
                self.shared.writer.wake();
                return Some(m);
            }
            if self.shared.closed.load(Ordering::Relaxed) {
                return None;
            }
            notified.await;
        }
    }

    /// Reads until the server's close frame; its code (`None` if it closed without one).
    async fn close_code(&self) -> Option<u16> {
        while let Some(m) = self.next().await {
            if let Message::Close(c) = m {
                return c.map(|c| c.code);
            }
        }
        None
    }
}

struct Setup {
    g: Arc<Gateway>,
    _dir: tempfile::TempDir,
    shutdown: watch::Sender<bool>,
}

async fn gateway(extra: &[&str]) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = vec!["preau-gateway", "--data-dir", dir.path().to_str().expect("utf-8")];
    args.extend_from_slice(extra);
    let g = Gateway::start(Cli::parse_from(args).config).await.expect("gateway");
    let (shutdown, _) = watch::channel(false);
    Setup { g, _dir: dir, shutdown }
}

/// Starts a session of `user` whose token expires `ttl` seconds from now.
fn session(s: &Setup, user: &str, ttl: u64, room: usize) -> (Client, tokio::task::JoinHandle<()>) {
    let (sock, client) = pair(room);
    let user = s.g.dir().user(user).expect("demo user").clone();
    let start =
        SessionStart { user, exp: s.g.clock.now_secs() + ttl, enc: Encoding::Json, shutdown: s.shutdown.subscribe() };
    let task = tokio::spawn(run(s.g.clone(), sock, start));
    (client, task)
}

async fn hello(c: &Client) {
    let m = c.next().await.expect("hello");
    assert!(matches!(&m, Message::Text(t) if t.as_str().contains(r#""hello""#)), "{m:?}");
}

#[tokio::test(start_paused = true)]
async fn an_expired_token_closes_with_4001() {
    let s = gateway(&[]).await;
    let (c, task) = session(&s, "e001", 5, 1000);
    hello(&c).await;
    assert_eq!(c.close_code().await, Some(close::TOKEN_EXPIRED));
    task.await.expect("session ends");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_is_closed_with_4008() {
    // The smallest queue; the client's socket takes 4 messages, then it stops reading.
    let s = gateway(&["--outbound-queue", "16"]).await;
    let (c, task) = session(&s, "e001", 3600, 4);
    hello(&c).await;
    for i in 0..200u64 {
        s.g.publish(
            Topic::Channel(ChannelId::forum("0750001A", "6A")),
            ServerFrame::Typing { channel: ChannelId::forum("0750001A", "6A"), user: format!("u{i}") },
        );
    }
    tokio::task::yield_now().await;
    assert_eq!(c.close_code().await, Some(close::SLOW_CONSUMER));
    task.await.expect("session ends");
}

#[tokio::test(start_paused = true)]
async fn too_many_bad_frames_close_with_4002() {
    // A frame rate high enough that only the bad frames count.
    let s = gateway(&["--frames-per-second", "100000"]).await;
    let (c, task) = session(&s, "e001", 3600, 10_000);
    hello(&c).await;
    for _ in 0..ABUSE_LIMIT {
        c.send_text("not json");
    }
    let mut errors = 0;
    let code = loop {
        match c.next().await {
            Some(Message::Text(t)) if t.as_str().contains("bad_frame") => errors += 1,
            Some(Message::Close(f)) => break f.map(|f| f.code),
            Some(_) => {}
            None => break None,
        }
    };
    assert_eq!(code, Some(close::PROTOCOL_ABUSE));
    assert_eq!(errors, ABUSE_LIMIT, "every bad frame got its error first");
    task.await.expect("session ends");
}

#[tokio::test(start_paused = true)]
async fn a_draining_node_says_reconnect_then_1012() {
    let s = gateway(&["--reconnect-jitter-ms", "5000"]).await;
    let (c, task) = session(&s, "e001", 3600, 1000);
    hello(&c).await;
    let _ = s.shutdown.send(true);
    let m = c.next().await.expect("reconnect");
    let Message::Text(t) = m else { panic!("a reconnect frame first: {m:?}") };
    let v: serde_json::Value = serde_json::from_str(t.as_str()).expect("json");
    assert_eq!(v["type"], "reconnect");
    assert!(v["after_ms"].as_u64().is_some_and(|ms| ms <= 5000), "{v}");
    assert_eq!(c.close_code().await, Some(close::SERVICE_RESTART));
    task.await.expect("session ends");
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_pinged_then_dropped() {
    let s = gateway(&[]).await;
    let (c, task) = session(&s, "e001", 24 * 3600, 1000);
    hello(&c).await;
    let t0 = Instant::now();
    let mut pings = 0;
    while let Some(m) = c.next().await {
        assert!(matches!(m, Message::Ping(_)), "only pings to a silent client: {m:?}");
        pings += 1;
    }
    assert!(pings >= 2, "pinged every {PING_AFTER:?} before giving up");
    let silent = t0.elapsed();
    assert!(silent > IDLE_LIMIT && silent <= IDLE_LIMIT + PING_AFTER, "dropped after {silent:?}");
    task.await.expect("session ends");
}

#[tokio::test(start_paused = true)]
async fn an_answering_client_stays() {
    let s = gateway(&[]).await;
    let (c, task) = session(&s, "e001", 24 * 3600, 1000);
    hello(&c).await;
    // Five minutes of a client that answers every ping with a frame of its own.
    let until = Instant::now() + Duration::from_secs(300);
    while Instant::now() < until {
        match c.next().await {
            Some(Message::Ping(_)) => c.send_text(r#"{"id":1,"type":"ping"}"#),
            Some(Message::Text(_)) => {}
            other => panic!("the session must go on: {other:?}"),
        }
    }
    let _ = s.shutdown.send(true);
    assert_eq!(c.close_code().await, Some(close::SERVICE_RESTART));
    task.await.expect("session ends");
}

#[tokio::test(start_paused = true)]
async fn pipelined_sends_are_answered_in_command_order_and_a_later_read_sees_them() {
    let s = gateway(&["--sends-per-second", "100000", "--send-burst", "100000", "--frames-per-second", "100000"]).await;
    let (c, task) = session(&s, "t01", 3600, 10_000);
    hello(&c).await;
    // 150 sends without waiting for any ack, then a `history`: more than may be in flight.
    let sends = 150u64;
    for id in 1..=sends {
        c.send_text(&format!(
            r#"{{"id":{id},"type":"send","channel":"ann:0750001A:6A","client_id":"pipe-{id}","body":"n{id}"}}"#
        ));
    }
    c.send_text(r#"{"id":1000,"type":"history","channel":"ann:0750001A:6A","after":0,"limit":200}"#);
    let (mut next_id, mut last_seq, mut acked, mut refused) = (1u64, 0u64, 0u64, 0u64);
    let history = loop {
        let Some(Message::Text(t)) = c.next().await else { panic!("the session ended") };
        let v: serde_json::Value = serde_json::from_str(t.as_str()).expect("json");
        if v["type"] == "event" {
            continue;
        }
        if v["id"] == 1000 {
            break v;
        }
        assert_eq!(v["id"], next_id, "answers come back in command order: {v}");
        next_id += 1;
        match v["type"].as_str() {
            Some("ack") => {
                let seq = v["seq"].as_u64().expect("seq");
                assert!(seq > last_seq, "each send is stored after the one before it: {v}");
                last_seq = seq;
                acked += 1;
            }
            _ => {
                assert_eq!(v["code"], "overloaded", "{v}");
                assert!(v["retry_after_ms"].as_u64().is_some(), "{v}");
                refused += 1;
            }
        }
    };
    assert_eq!(next_id, sends + 1, "every send answered before the history");
    assert_eq!(acked + refused, sends);
    let stored = history["entries"].as_array().expect("entries").len() as u64;
    assert_eq!(stored, acked, "the history after the sends holds every acknowledged one, and no refused one");
    drop(c);
    task.abort();
}

#[test]
fn one_timer_serves_the_three_deadlines_most_final_first() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let mut t = Timers { expires: t0 + s(100), next_ping: t0 + s(30), restart_at: None };
    assert_eq!(t.next(), t0 + s(30));
    assert_eq!(t.due(t0 + s(29)), None);
    assert_eq!(t.due(t0 + s(30)), Some(Due::Ping));
    t.restart_at = Some(t0 + s(5));
    assert_eq!(t.next(), t0 + s(5), "a drain's end comes first");
    assert_eq!(t.due(t0 + s(200)), Some(Due::Restart), "closing for the drain wins over expiry");
    t.restart_at = None;
    assert_eq!(t.due(t0 + s(100)), Some(Due::Expired), "expiry wins over a heartbeat due at once");
}

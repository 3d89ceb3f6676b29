//! One task per WebSocket connection: it `select!`s on the socket, its outbound queue,
//! the answers of its pipelined sends, the hub's wake-ups (slow consumer, directory
//! re-check), one timer (token expiry, heartbeat, the end of a drain) and the node's
//! shutdown. Commands are handled in order and answered in order; up to
//! [`MAX_SENDS_IN_FLIGHT`] sends may wait for their writes meanwhile, and any other
//! command waits for them first. A client that floods only slows itself.

mod pipeline;
mod timers;

use crate::cmd::{Access, Answer, CmdError, access};
use crate::hub::{Flag, Outbox, SessionHandle};
use crate::limits::TokenBucket;
use crate::metrics as m;
use crate::pii::Pii;
use crate::service::{Gateway, reconnect_delay};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
pub use pipeline::MAX_SENDS_IN_FLIGHT;
use pipeline::{InFlight, MAX_ANSWERS_WAITING};
use preau_directory::UserRec;
use preau_proto::{
    Ack, ChannelId, ChannelKind, Command, Encoding, ErrorCode, PROTOCOL_VERSION, ServerFrame, SharedFrame, close,
    decode_client, encode_server, peek_id,
};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use timers::{Due, Timers};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tracing::Instrument;

/// Frames written per wake-up before flushing; bounds a flush's size and latency.
const WRITE_BATCH: usize = 64;
/// Heartbeat: a ping when the client was silent this long...
const PING_AFTER: Duration = Duration::from_secs(30);
/// ...and the connection is dropped when it stays silent this long.
const IDLE_LIMIT: Duration = Duration::from_secs(75);
/// Bad or rate-limited frames in a row before the connection is closed as abusive.
const ABUSE_LIMIT: u32 = 500;
/// Longest a write to the socket may stall (the client stopped reading) before the
/// session is cut off as a slow consumer.
const WRITE_STALL: Duration = Duration::from_secs(10);
/// Time given to the close frame of a slow consumer to get through (a client that reads
/// again soon then learns it must resume, with 4008).
const CLOSE_GRACE: Duration = Duration::from_secs(10);
/// Time given to the socket's closing handshake: after that the socket is dropped, so
/// the TCP connection (and the node's connection permit) is freed whether the client
/// reads or not, at most `CLOSE_GRACE + SOCKET_GRACE` after the cut.
const SOCKET_GRACE: Duration = Duration::from_secs(2);
/// How often a write waiting on a stuck socket looks whether the hub cut the session.
const CUT_CHECK: Duration = Duration::from_millis(100);

/// What a session needs from the upgrade.
pub struct SessionStart {
    /// The authenticated user.
    pub user: UserRec,
    /// Token expiry, seconds since the epoch.
    pub exp: u64,
    /// Negotiated encoding.
    pub enc: Encoding,
    /// Node shutdown signal.
    pub shutdown: watch::Receiver<bool>,
}

fn ws_message(enc: Encoding, b: Bytes) -> Option<Message> {
    if enc.is_text() { Utf8Bytes::try_from(b).ok().map(Message::Text) } else { Some(Message::Binary(b)) }
}

fn close_msg(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) }))
}

fn error_frame(id: Option<u64>, e: &CmdError) -> ServerFrame {
    metrics::counter!(m::ERRORS, "code" => e.code.as_str()).increment(1);
    ServerFrame::Error { id, code: e.code, message: e.message.clone(), retry_after_ms: e.retry_after_ms }
}

/// Runs a session to its end.
pub async fn run<S>(g: Arc<Gateway>, socket: S, start: SessionStart)
where
    S: Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Send + Unpin + 'static,
{
    let sid = g.session_id();
    let span = tracing::info_span!("session", sid, user = %Pii(&start.user.id));
    let fut = async move {
        metrics::gauge!(m::CONNECTIONS).increment(1.0);
        g.bus.set_load(g.open.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1);
        let (handle, rx) = SessionHandle::new(sid, Arc::from(start.user.id.as_str()), g.cfg.outbound_queue);
        let mut s = Session { g: g.clone(), handle, enc: start.enc, user: start.user.id.clone() };
        let (mut sink, stream) = socket.split();
        match g.hub.register(&s.handle) {
            Ok(first) => {
                let reason = s.drive(&mut sink, stream, rx, start, first).await;
                tracing::debug!(?reason, "session ended");
                // The conversations now, not at the start: one opened during the session
                // hears that its member left too.
                let convs = s.conversations();
                if g.hub.unregister(&s.handle) {
                    g.publish_presence(&s.user, &convs, false);
                }
            }
            Err(_) => {
                let _ = sink.send(close_msg(close::TOO_MANY_CONNECTIONS, "too many connections for this user")).await;
            }
        }
        // Bounded: a client that stopped reading would keep this (and the TCP connection)
        // waiting for ever; dropping the socket closes it.
        let _ = tokio::time::timeout(SOCKET_GRACE, sink.close()).await;
        metrics::gauge!(m::CONNECTIONS).decrement(1.0);
        g.bus.set_load(g.open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed).saturating_sub(1));
    };
    fut.instrument(span).await
}

/// A read error: a frame beyond the WebSocket layer's hard cap gets close code 1009;
/// anything else means the socket is gone.
async fn read_error<K: Sink<Message, Error = axum::Error> + Unpin>(sink: &mut K, e: axum::Error) -> End {
    use tokio_tungstenite::tungstenite::{Error as WsError, error::CapacityError};
    let inner = e.into_inner();
    match inner.downcast_ref::<WsError>() {
        Some(WsError::Capacity(CapacityError::MessageTooLong { .. })) => {
            let _ = sink.send(close_msg(close::TOO_BIG, "frame too large")).await;
            End::Abuse
        }
        // RFC 6455: a text frame that is not UTF-8 closes with 1007.
        Some(WsError::Utf8(_)) => {
            let _ = sink.send(close_msg(close::INVALID_UTF8, "text frames must be UTF-8")).await;
            End::Abuse
        }
        _ => End::SocketError,
    }
}

/// Closes a slow consumer with its documented code, if the socket still takes it.
async fn slow_consumer<K: Sink<Message, Error = axum::Error> + Unpin>(sink: &mut K) -> End {
    metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => "slow_consumer").increment(1);
    let msg = close_msg(close::SLOW_CONSUMER, "too slow to read; resume from your last seq");
    let _ = tokio::time::timeout(CLOSE_GRACE, sink.send(msg)).await;
    End::SlowConsumer
}

struct Session {
    g: Arc<Gateway>,
    handle: Arc<SessionHandle>,
    enc: Encoding,
    user: String,
}

/// The reading side's state.
struct Reader {
    /// Pipelined sends.
    inflight: InFlight,
    /// Frames per second from this connection.
    frames: TokenBucket,
    /// Last frame of any kind from the client (the idle timeout).
    last_seen: Instant,
    /// Refused frames in a row.
    strikes: u32,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    ClientClosed,
    SocketError,
    SlowConsumer,
    TokenExpired,
    AccountRemoved,
    Idle,
    Abuse,
    Shutdown,
}

impl Session {
    async fn send<K: Sink<Message, Error = axum::Error> + Unpin>(
        &self,
        sink: &mut K,
        f: &ServerFrame,
    ) -> Result<(), End> {
        let Some(msg) = ws_message(self.enc, encode_server(self.enc, f)) else { return Ok(()) };
        metrics::counter!(m::FRAMES_OUT).increment(1);
        sink.send(msg).await.map_err(|_| End::SocketError)
    }

    /// Every channel the user sees (an error if the user is gone).
    async fn subscribe_visible(&self) -> Result<Vec<(ChannelId, String, Access)>, CmdError> {
        let dir = self.g.dir();
        let me = dir.user(&self.user).ok_or_else(|| CmdError::new(ErrorCode::Forbidden, "account removed"))?;
        access::visible(&self.g, &dir, me).await
    }

    /// The direct and group conversations the session is subscribed to: whom its
    /// presence concerns.
    fn conversations(&self) -> Vec<ChannelId> {
        self.handle
            .subscriptions()
            .into_iter()
            .filter(|c| matches!(c.kind(), ChannelKind::Direct | ChannelKind::Group))
            .collect()
    }

    /// Subscribes, announces presence, says hello. Subscribing comes first, so nothing
    /// published between the client's sync and its subscription can fall in between.
    async fn greet<K: Sink<Message, Error = axum::Error> + Unpin>(
        &mut self,
        sink: &mut K,
        me: &UserRec,
        first: bool,
    ) -> Result<(), End> {
        let vis = match Box::pin(self.subscribe_visible()).await {
            Ok(v) => v,
            Err(e) => {
                let _ = self.send(sink, &error_frame(None, &e)).await;
                return Err(End::AccountRemoved);
            }
        };
        for (ch, _, _) in &vis {
            self.g.hub.subscribe(&self.handle, ch);
        }
        if first {
            self.g.publish_presence(&self.user, &self.conversations(), true);
        }
        let hello = ServerFrame::Hello {
            version: PROTOCOL_VERSION,
            user: me.id.clone(),
            profile: me.profile.as_str().to_owned(),
            school: me.school.clone(),
            limits: self.g.limits(),
            suspension: self.g.suspensions().info(&me.school),
        };
        self.send(sink, &hello).await
    }

    async fn drive<K, T>(
        &mut self,
        sink: &mut K,
        mut stream: T,
        mut rx: Outbox,
        start: SessionStart,
        first: bool,
    ) -> End
    where
        K: Sink<Message, Error = axum::Error> + Unpin,
        T: Stream<Item = Result<Message, axum::Error>> + Unpin,
    {
        // The user's record serves the greeting only: dropped before the loop rather than
        // held for the connection's life (commands read the current directory).
        let SessionStart { user, exp, enc: _, mut shutdown } = start;
        if let Err(e) = self.greet(sink, &user, first).await {
            return e;
        }
        drop(user);
        // The token's wall-clock expiry, turned into the session's (pausable) clock.
        let expires = Instant::now() + Duration::from_secs(exp.saturating_sub(self.g.clock.now_secs()));
        let mut reader = Reader {
            frames: TokenBucket::new(self.g.cfg.frames_per_second, self.g.cfg.frames_per_second * 4, Instant::now()),
            last_seen: Instant::now(),
            strikes: 0,
            inflight: InFlight::default(),
        };
        // One timer for the session's three deadlines (token expiry, heartbeat, the end
        // of a drain): each idle turn of the loop polls one timer entry, not three.
        let mut timers = Timers { expires, next_ping: Instant::now() + PING_AFTER, restart_at: None };
        let timer = sleep_until(timers.next());
        tokio::pin!(timer);
        let handle = self.handle.clone();
        // Made once, not per loop turn: a waiter registration per wake-up was a
        // measurable share of the CPU per delivery.
        let wake = handle.wake.notified();
        tokio::pin!(wake);
        // Also made once: a new `changed()` each turn registered and removed a waiter
        // (two locks) for every delivery. It fires once; then `restart_at` is set.
        let shutdown = shutdown.changed();
        tokio::pin!(shutdown);
        loop {
            let turn = tokio::select! {
                // Fixed order: control first, then queued frames, then the socket. A
                // wake-up for a delivery then never polls the socket for reading, which in
                // tungstenite costs zeroing the read buffer each time. Reading still runs
                // whenever the queue is empty, which a batch of 64 makes frequent.
                biased;
                // Draining: say `reconnect` with a jittered delay, go on serving, and close
                // with 1012 when the delay is over (clients spread their reconnects).
                _ = &mut shutdown, if timers.restart_at.is_none() => {
                    // Boxed, as `answered` below: a frame being encoded is large, and an
                    // inline future would be carried by every idle session.
                    let after = Box::pin(self.reconnecting(sink)).await;
                    timers.restart_at = Some(Instant::now() + after);
                    timer.as_mut().reset(timers.next());
                    Ok(())
                }
                _ = &mut wake => {
                    wake.set(handle.wake.notified());
                    self.woken(sink).await
                }
                Some(done) = reader.inflight.next(), if !reader.inflight.is_empty() => {
                    // Boxed: an answer and its frame made this arm 1.1 KB of every idle
                    // session's 2.6 KB loop (one allocation per answer instead).
                    Box::pin(self.answered(sink, done, &mut reader.inflight)).await
                }
                Some(f) = rx.recv() => self.queued(sink, f, &mut rx).await,
                msg = stream.next(), if reader.inflight.len() < MAX_ANSWERS_WAITING => {
                    self.read(sink, msg, &mut reader).await
                }
                _ = &mut timer => {
                    let now = Instant::now();
                    let r = match timers.due(now) {
                        Some(Due::Restart) => {
                            let _ = sink.send(close_msg(close::SERVICE_RESTART, "node restarting; reconnect")).await;
                            Err(End::Shutdown)
                        }
                        Some(Due::Expired) => {
                            let m = close_msg(close::TOKEN_EXPIRED, "token expired; reconnect with a new one");
                            let _ = sink.send(m).await;
                            Err(End::TokenExpired)
                        }
                        Some(Due::Ping) if reader.last_seen.elapsed() > IDLE_LIMIT => Err(End::Idle),
                        Some(Due::Ping) => {
                            timers.next_ping = now + PING_AFTER;
                            sink.send(Message::Ping(Bytes::new())).await.map_err(|_| End::SocketError)
                        }
                        None => Ok(()),
                    };
                    timer.as_mut().reset(timers.next());
                    r
                }
            };
            if let Err(end) = turn {
                return end;
            }
        }
    }

    /// The node is draining: a `reconnect` frame with a jittered delay, returned.
    async fn reconnecting<K: Sink<Message, Error = axum::Error> + Unpin>(&self, sink: &mut K) -> Duration {
        let after = reconnect_delay(self.g.cfg.reconnect_jitter_ms);
        let f = ServerFrame::Reconnect { after_ms: after.as_millis() as u64, reason: "node restarting".into() };
        let _ = self.send(sink, &f).await;
        after
    }

    /// The hub woke the session: it overflowed (slow consumer), or the directory changed.
    async fn woken<K: Sink<Message, Error = axum::Error> + Unpin>(&mut self, sink: &mut K) -> Result<(), End> {
        match self.handle.flag() {
            Some(Flag::SlowConsumer) => return Err(slow_consumer(sink).await),
            Some(Flag::Disconnected) => {
                let msg = close_msg(close::TOKEN_EXPIRED, "signed out by the ENT; sign in again");
                let _ = tokio::time::timeout(CLOSE_GRACE, sink.send(msg)).await;
                return Err(End::TokenExpired);
            }
            None => {}
        }
        if self.handle.take_recheck() {
            Box::pin(self.recheck(sink)).await?;
        }
        Ok(())
    }

    /// Queued frames to write. Most batches complete at once: only a write that has to
    /// wait gets the stall timer.
    async fn queued<K: Sink<Message, Error = axum::Error> + Unpin>(
        &self,
        sink: &mut K,
        f: Arc<SharedFrame>,
        rx: &mut Outbox,
    ) -> Result<(), End> {
        let done = {
            let mut write = std::pin::pin!(self.write_batch(sink, f, rx));
            let first = std::future::poll_fn(|cx| std::task::Poll::Ready(write.as_mut().poll(cx))).await;
            match first {
                std::task::Poll::Ready(r) => Some(r),
                // A write that waits: give up when it stalls too long, or as soon as the hub
                // cut the session (its queue overflowed), rather than wait for the client.
                std::task::Poll::Pending => {
                    let stall = tokio::time::sleep(WRITE_STALL);
                    tokio::pin!(stall);
                    loop {
                        tokio::select! {
                            r = write.as_mut() => break Some(r),
                            _ = &mut stall => break None,
                            _ = tokio::time::sleep(CUT_CHECK) => {
                                if self.handle.flag().is_some() {
                                    break None;
                                }
                            }
                        }
                    }
                }
            }
        };
        match done {
            Some(Ok(())) => Ok(()),
            Some(Err(End::SlowConsumer)) | None => Err(slow_consumer(sink).await),
            Some(Err(e)) => Err(e),
        }
    }

    /// What the socket gave: a command to run, a close, or an error.
    async fn read<K: Sink<Message, Error = axum::Error> + Unpin>(
        &mut self,
        sink: &mut K,
        msg: Option<Result<Message, axum::Error>>,
        r: &mut Reader,
    ) -> Result<(), End> {
        let msg = match msg {
            Some(Ok(m)) => m,
            Some(Err(e)) => return Err(read_error(sink, e).await),
            None => return Err(End::ClientClosed),
        };
        r.last_seen = Instant::now();
        let (bytes, enc) = match msg {
            Message::Text(t) => (Bytes::from(t), Encoding::Json),
            Message::Binary(b) => (b, self.enc),
            Message::Close(_) => return Err(End::ClientClosed),
            Message::Ping(_) | Message::Pong(_) => return Ok(()),
        };
        metrics::counter!(m::FRAMES_IN).increment(1);
        let ok = Box::pin(self.command(sink, &bytes, enc, &mut r.frames, &mut r.inflight)).await?;
        r.strikes = if ok { 0 } else { r.strikes + 1 };
        if r.strikes >= ABUSE_LIMIT {
            let _ = sink.send(close_msg(close::PROTOCOL_ABUSE, "too many bad frames")).await;
            return Err(End::Abuse);
        }
        Ok(())
    }

    /// Writes a frame and whatever else is queued (up to a batch), then flushes once.
    async fn write_batch<K: Sink<Message, Error = axum::Error> + Unpin>(
        &self,
        sink: &mut K,
        first: Arc<SharedFrame>,
        rx: &mut Outbox,
    ) -> Result<(), End> {
        let mut next = Some(first);
        let mut n = 0u64;
        while let Some(f) = next.take() {
            // Once the hub dropped a frame for this session, the stream has a hole:
            // stop here and let the client resume rather than deliver past it.
            if self.handle.flag().is_some() {
                return Err(End::SlowConsumer);
            }
            if let Some(msg) = ws_message(self.enc, f.encoded(self.enc)) {
                sink.feed(msg).await.map_err(|_| End::SocketError)?;
                n += 1;
            }
            if n < WRITE_BATCH as u64 {
                next = rx.try_recv().ok();
            }
        }
        metrics::counter!(m::FRAMES_OUT).increment(n);
        sink.flush().await.map_err(|_| End::SocketError)
    }

    /// Decodes and runs one client frame; answers it. Returns whether it was accepted.
    async fn command<K: Sink<Message, Error = axum::Error> + Unpin>(
        &mut self,
        sink: &mut K,
        bytes: &[u8],
        enc: Encoding,
        frames: &mut TokenBucket,
        inflight: &mut InFlight,
    ) -> Result<bool, End> {
        // Refused before decoding, but answered with the frame's id when it has one: every
        // command gets exactly one answer carrying its id.
        if bytes.len() > self.g.cfg.max_frame_bytes {
            let e = CmdError::new(
                ErrorCode::TooLarge,
                format!("frames are limited to {} bytes", self.g.cfg.max_frame_bytes),
            );
            self.send(sink, &error_frame(peek_id(enc, bytes), &e)).await?;
            return Ok(false);
        }
        if let Err(wait) = frames.try_take(Instant::now()) {
            let e = CmdError::rate_limited("too many frames; slow down", wait);
            self.send(sink, &error_frame(peek_id(enc, bytes), &e)).await?;
            return Ok(false);
        }
        let frame = match decode_client(enc, bytes) {
            Ok(f) => f,
            Err(d) => {
                let e = CmdError::new(d.code, d.message);
                self.send(sink, &error_frame(d.id, &e)).await?;
                return Ok(false);
            }
        };
        let id = frame.id;
        let is_send = matches!(frame.cmd, Command::Send { .. });
        if !is_send {
            // Anything else runs after the sends before it, as if they had been handled
            // one at a time: a `history` after a `send` sees it.
            self.drain(sink, inflight).await?;
        } else if inflight.writes >= MAX_SENDS_IN_FLIGHT {
            let e = CmdError::overloaded(format!(
                "at most {MAX_SENDS_IN_FLIGHT} sends in flight per connection; wait for their acks"
            ));
            inflight.push(Box::pin(std::future::ready((id, Err(e), false))));
            return Ok(true);
        }
        // Boxed: the command's state machine is large and only lives while it runs, so an
        // idle session does not carry it.
        match Box::pin(self.g.begin(&self.user, id, frame.cmd)).await {
            Answer::Ready(r) if inflight.is_empty() => self.reply(sink, id, r).await?,
            // Behind sends still in flight: answered in its turn.
            Answer::Ready(r) => inflight.push(Box::pin(std::future::ready((id, r, false)))),
            Answer::Queued(f) => {
                inflight.writes += 1;
                inflight.push(Box::pin(async move { (id, f.await, true) }));
            }
        }
        Ok(true)
    }

    async fn reply<K: Sink<Message, Error = axum::Error> + Unpin>(
        &self,
        sink: &mut K,
        id: u64,
        r: Result<Ack, CmdError>,
    ) -> Result<(), End> {
        let reply = match r {
            Ok(ack) => ServerFrame::Ack(ack),
            Err(e) => error_frame(Some(id), &e),
        };
        self.send(sink, &reply).await
    }

    /// The next pipelined answer is ready: write it.
    async fn answered<K: Sink<Message, Error = axum::Error> + Unpin>(
        &self,
        sink: &mut K,
        (id, r, write): (u64, Result<Ack, CmdError>, bool),
        inflight: &mut InFlight,
    ) -> Result<(), End> {
        if write {
            inflight.writes -= 1;
        }
        self.reply(sink, id, r).await
    }

    /// Waits for every pipelined answer and writes them, in order.
    async fn drain<K: Sink<Message, Error = axum::Error> + Unpin>(
        &self,
        sink: &mut K,
        inflight: &mut InFlight,
    ) -> Result<(), End> {
        while !inflight.is_empty() {
            let Some(done) = inflight.next().await else { break };
            self.answered(sink, done, inflight).await?;
        }
        Ok(())
    }

    /// Re-checks the channels after a directory change: channels no longer visible are
    /// dropped (with `channel_removed`), new ones added (with `channel_added`).
    async fn recheck<K: Sink<Message, Error = axum::Error> + Unpin>(&mut self, sink: &mut K) -> Result<(), End> {
        let vis = match self.subscribe_visible().await {
            Ok(v) => v,
            Err(e) if e.code == ErrorCode::Forbidden => {
                let _ = sink.send(close_msg(close::ACCOUNT_REMOVED, "account removed from the directory")).await;
                return Err(End::AccountRemoved);
            }
            // Storage trouble: keep the current channels and try at the next change.
            Err(_) => return Ok(()),
        };
        let now: HashSet<ChannelId> = vis.iter().map(|(c, _, _)| c.clone()).collect();
        for ch in self.handle.subscriptions().difference(&now) {
            self.g.hub.unsubscribe(&self.handle, ch);
            self.send(sink, &ServerFrame::ChannelRemoved { channel: ch.clone() }).await?;
        }
        let had = self.handle.subscriptions();
        for (ch, title, a) in vis {
            if !had.contains(&ch) {
                self.g.hub.subscribe(&self.handle, &ch);
                let info = access::channel_info(&self.g, &self.user, &ch, title, &a).await;
                self.send(sink, &ServerFrame::ChannelAdded { info }).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

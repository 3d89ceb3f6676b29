//! The NATS reference for `fanout`: the same listeners and sender against a NATS server
//! with WebSocket enabled (Debian's `nats-server`, on its own port), speaking the NATS
//! text protocol over WebSocket. No auth, policy or storage: NATS is the ceiling of a
//! mature broker on the same machine. Messages carry their index and send time, so
//! listeners count losses and duplicates and measure latency.

use crate::{percentiles, proc_sample};
use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects and completes the NATS handshake (INFO, CONNECT, PING/PONG).
async fn connect(url: &str) -> anyhow::Result<Ws> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.context("nats websocket")?;
    ws.send(Message::Text("CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1}\r\nPING\r\n".into())).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = String::new();
    while !buf.contains("PONG") {
        let m = tokio::time::timeout_at(deadline.into(), ws.next()).await?.context("closed")??;
        buf.push_str(&String::from_utf8_lossy(&m.into_data()));
        if buf.contains("-ERR") {
            bail!("nats refused: {buf}");
        }
    }
    Ok(ws)
}

/// `connections` against NATS: `connections` WebSocket clients connecting `concurrency`
/// at a time (all at once for a storm), each completing the NATS handshake; reports the
/// same figures as the gateway's run (time until all are ready, connect latency, server
/// CPU and memory per connection).
pub async fn storm(
    url: &str,
    pid: &[u32],
    connections: usize,
    concurrency: usize,
) -> anyhow::Result<serde_json::Value> {
    let (rss0, cpu0) = proc_sample(pid)?;
    let started = Instant::now();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (url, sem) = (url.to_owned(), sem.clone());
            tokio::spawn(async move {
                let _permit = sem.acquire().await.ok();
                let t = Instant::now();
                (connect(&url).await, t.elapsed())
            })
        })
        .collect();
    let mut open = Vec::with_capacity(connections);
    let mut hist = Histogram::<u64>::new(3)?;
    let mut failed = 0usize;
    for t in tasks {
        match t.await? {
            (Ok(ws), took) => {
                hist.record(took.as_micros().max(1) as u64)?;
                open.push(ws);
            }
            (Err(_), _) => failed += 1,
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rss1, cpu1) = proc_sample(pid)?;
    let n = open.len().max(1) as f64;
    Ok(serde_json::json!({
        "scenario": "connections",
        "target": "nats",
        "connections_requested": connections,
        "connections_open": open.len(),
        "connections_failed": failed,
        "connect_seconds": connect_secs,
        "connect_latency_us": percentiles(&hist),
        "gateway_bytes_per_connection": (rss1 as f64 - rss0 as f64) / n,
        "gateway_cpu_ms_per_connection": (cpu1 - cpu0) * 1e3 / n,
    }))
}

/// Reads `MSG` payloads (`<index> <sent_us>`) until `messages` distinct indices came or
/// the stream went quiet; answers the server's PINGs.
async fn listen(mut ws: Ws, messages: u64, base: Instant) -> (Vec<bool>, u64, Histogram<u64>) {
    let mut seen = vec![false; messages as usize];
    let mut dups = 0;
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    let mut got = 0u64;
    let mut pending = String::new();
    while got < messages {
        let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(20), ws.next()).await else { break };
        let now = base.elapsed().as_micros() as u64;
        pending.push_str(&String::from_utf8_lossy(&m.into_data()));
        // Frames may split or join protocol lines: parse complete `MSG` blocks only.
        while let Some(eol) = pending.find("\r\n") {
            let line = pending[..eol].to_owned();
            if line == "PING" {
                pending.drain(..eol + 2);
                let _ = ws.send(Message::Text("PONG\r\n".into())).await;
                continue;
            }
            if let Some(rest) = line.strip_prefix("MSG ") {
                let len: usize = rest.rsplit(' ').next().and_then(|l| l.parse().ok()).unwrap_or(0);
                if pending.len() < eol + 2 + len + 2 {
                    break;
                }
                let body = pending[eol + 2..eol + 2 + len].to_owned();
                pending.drain(..eol + 2 + len + 2);
                let mut it = body.split(' ');
                let (Some(i), Some(sent)) =
                    (it.next().and_then(|i| i.parse::<usize>().ok()), it.next().and_then(|s| s.parse::<u64>().ok()))
                else {
                    continue;
                };
                if let Some(s) = seen.get_mut(i) {
                    if *s {
                        dups += 1;
                    } else {
                        *s = true;
                        got += 1;
                        let _ = h.record(now.saturating_sub(sent).max(1));
                    }
                }
                continue;
            }
            pending.drain(..eol + 2);
        }
    }
    (seen, dups, h)
}

/// `fanout` against NATS: `listeners` subscribers, one publisher sending `messages` at
/// `rate` per second.
pub async fn fanout(
    url: &str,
    pid: &[u32],
    listeners: usize,
    messages: u64,
    rate: u64,
) -> anyhow::Result<serde_json::Value> {
    let subject = "preau.fanout";
    let base = Instant::now();
    let mut subs = Vec::with_capacity(listeners);
    for i in 0..listeners {
        let mut ws = connect(url).await?;
        ws.send(Message::Text(format!("SUB {subject} {i}\r\nPING\r\n").into())).await?;
        subs.push(ws);
    }
    // The PINGs above make sure every SUB is registered before publishing.
    let mut ready = Vec::with_capacity(listeners);
    for mut ws in subs {
        let mut buf = String::new();
        while !buf.contains("PONG") {
            let m = tokio::time::timeout(Duration::from_secs(10), ws.next()).await?.context("closed")??;
            buf.push_str(&String::from_utf8_lossy(&m.into_data()));
        }
        ready.push(ws);
    }
    let (rss0, cpu0) = proc_sample(pid)?;
    let tasks: Vec<_> = ready.into_iter().map(|ws| tokio::spawn(listen(ws, messages, base))).collect();
    let mut publisher = connect(url).await?;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
    let send_start = Instant::now();
    for i in 0..messages {
        tick.tick().await;
        let body = format!("{i} {}", base.elapsed().as_micros());
        publisher.send(Message::Text(format!("PUB {subject} {}\r\n{body}\r\n", body.len()).into())).await?;
    }
    let (mut lost, mut dups, mut received) = (0u64, 0u64, 0u64);
    let mut deliver = Histogram::<u64>::new(3)?;
    for t in tasks {
        let (seen, d, h) = t.await?;
        let got = seen.iter().filter(|s| **s).count() as u64;
        received += got;
        lost += messages - got;
        dups += d;
        deliver.add(&h)?;
    }
    let elapsed = send_start.elapsed().as_secs_f64();
    let (rss1, cpu1) = proc_sample(pid)?;
    Ok(serde_json::json!({
        "scenario": "fanout",
        "target": "nats-server (websocket)",
        "listeners": listeners,
        "messages": messages,
        "rate_per_second": rate,
        "deliveries": received,
        "deliveries_per_second": received as f64 / elapsed,
        "lost": lost,
        "duplicated": dups,
        "send_to_deliver_us": percentiles(&deliver),
        "gateway_cpu_seconds": cpu1 - cpu0,
        "gateway_cpu_us_per_delivery": (cpu1 - cpu0) * 1e6 / received.max(1) as f64,
        "gateway_rss_bytes": rss1,
        "gateway_rss_growth_bytes": rss1 as i64 - rss0 as i64,
        "seconds": elapsed,
    }))
}

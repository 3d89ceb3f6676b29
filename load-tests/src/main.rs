//! `preau-load`: drives a running gateway through the Rust client and reports what a
//! run costs the server, from /proc, next to latency percentiles from HDR histograms.
//!
//! Scenarios so far:
//! - `connections`: open N WebSockets (spread over 127.0.0.x source addresses, demo users
//!   round-robin), hold them, and report connect latency and the gateway's resident
//!   memory per connection; then check every connection still answers.
//! - `morning-storm`: teachers post the morning's announcements; then N users (the
//!   school's profile mix, round-robin) connect within T seconds, `sync`, read every
//!   unread message page by page and mark it read. Each user must read exactly the seqs
//!   after their marker, up to the channel's end: a gap or a missing page fails the run.
//! - `forums`: a thread in every class forum; the pupils of every class post replies at
//!   once (M per class at R per second per class) while N class members listen; the same
//!   latency and loss checks as `fanout`, over many channels and many senders.
//! - `chat`: teacher–parent direct conversations and pupil groups, every member posting
//!   and listening; each member must see every seq of their conversation (`chat.rs`).
//! - `live-class`: K rooms against `preau-sfu`, a teacher publishing simulcast video and
//!   audio, P pupils receiving, S of them speaking (see `live.rs`).
//! - `fanout`: N listeners on one class's announcements, one teacher sending M messages at
//!   a set rate; reports send-to-ack and send-to-deliver latency, deliveries per second,
//!   gateway CPU per delivered message, and fails on any message lost or duplicated
//!   (checked from the gapless sequences; a listener cut off as slow resumes and counts).

// A load generator, bench or test of real sockets measures real time: the clock rule
// (clippy.toml) is for the libraries.
#![allow(clippy::disallowed_methods)]

/// The UAI of the demo school the scenarios run against (class channels name their school).
const DEMO_SCHOOL: &str = "0750001A";

mod chat;
mod janus;
mod live;
mod nats;
mod report;
mod summary;

use anyhow::{Context, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use preau_client::{Client, dev_token, http_get};
use preau_proto::{Command, Encoding};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(name = "preau-load", about = "Préau load generator")]
struct Args {
    /// A scenario file (TOML): its keys are these flags (`listeners = 2000`); flags given
    /// on the command line win.
    #[arg(long)]
    file: Option<std::path::PathBuf>,
    /// Folder to write `<name>.json`, `<name>.md` and `<name>.svg` into.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Name of the run's files (default: the scenario).
    #[arg(long)]
    name: Option<String>,
    /// Scenario: `connections`.
    #[arg(long, default_value = "connections")]
    scenario: String,
    /// Gateway address (loopback only).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Server process ids (comma-separated), to sample memory and CPU from /proc; several
    /// gateways of one machine are summed.
    #[arg(long, value_delimiter = ',')]
    pid: Vec<u32>,
    /// Source addresses start at 127.0.0.<first-source> (so several load processes use
    /// distinct ones).
    #[arg(long, default_value_t = 2)]
    first_source: u8,
    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Connections opened at once.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Number of 127.0.0.x source addresses to spread over (x from 2).
    #[arg(long, default_value_t = 4)]
    sources: u8,
    /// Seconds to hold the connections before measuring.
    #[arg(long, default_value_t = 3)]
    hold: u64,
    /// Encoding.
    #[arg(long, default_value = "msgpack")]
    encoding: String,
    /// fanout: listening connections.
    #[arg(long, default_value_t = 1000)]
    listeners: usize,
    /// fanout: messages sent.
    #[arg(long, default_value_t = 200)]
    messages: u64,
    /// fanout: messages per second.
    #[arg(long, default_value_t = 50)]
    rate: u64,
    /// fanout: the class whose announcements carry the traffic.
    #[arg(long, default_value = "6A")]
    class: String,
    /// fanout: the target is `preau-ref-broadcast` (no users, no tokens).
    #[arg(long)]
    reference: bool,
    /// fanout: the target is a NATS server's WebSocket port at `--addr` (the reference of
    /// a mature broker).
    #[arg(long)]
    nats: bool,
    /// morning-storm: seconds over which the connections arrive.
    #[arg(long, default_value_t = 10)]
    within: u64,
    /// morning-storm: announcements each teacher posts to each of their classes first.
    #[arg(long, default_value_t = 5)]
    posts: u64,
    /// chat: teacher–parent direct conversations.
    #[arg(long, default_value_t = 50)]
    conversations: usize,
    /// chat: pupil groups of five classmates.
    #[arg(long, default_value_t = 10)]
    groups: usize,
    /// live-class: the SFU's signaling URL.
    #[arg(long, default_value = "ws://127.0.0.1:8090/ws")]
    sfu: String,
    /// live-class: the HS256 key the SFU checks room tokens with.
    #[arg(long, default_value = "data/dev-signing-key")]
    room_key: std::path::PathBuf,
    /// live-class: rooms.
    #[arg(long, default_value_t = 2)]
    rooms: usize,
    /// live-class: pupils per room.
    #[arg(long, default_value_t = 30)]
    pupils: usize,
    /// live-class: pupils speaking per room.
    #[arg(long, default_value_t = 2)]
    speakers: usize,
    /// live-class: seconds measured.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// live-class: `--sfu` is Janus's WebSocket API (the videoroom reference).
    #[arg(long)]
    janus: bool,
}

/// Resident memory (bytes) and CPU seconds (user + system), summed over processes.
fn proc_sample(pids: &[u32]) -> anyhow::Result<(u64, f64)> {
    let mut total = (0u64, 0f64);
    for p in pids {
        let (rss, cpu) = proc_sample_one(*p)?;
        total.0 += rss;
        total.1 += cpu;
    }
    Ok(total)
}

/// CPU seconds the processes spent in the kernel (system calls, the network stack).
fn proc_system_seconds(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let rest = stat.rsplit_once(") ").map(|(_, r)| r)?;
            rest.split_whitespace().nth(12)?.parse::<f64>().ok()
        })
        .sum::<f64>()
        / 100.0
}

/// Resident memory (bytes) and CPU seconds (user + system) of a process.
fn proc_sample_one(pid: u32) -> anyhow::Result<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("read /proc status")?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("read /proc stat")?;
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).context("stat format")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    Ok((rss_kb * 1024, ticks / 100.0))
}

/// The command line, with a scenario file's keys put before the flags given.
fn args_with_file() -> anyhow::Result<Args> {
    let argv: Vec<String> = std::env::args().collect();
    let Some(i) = argv.iter().position(|a| a == "--file") else { return Ok(Args::parse()) };
    let path = argv.get(i + 1).context("--file needs a path")?;
    let text = std::fs::read_to_string(path).with_context(|| format!("scenario file {path}"))?;
    let table: toml::Table = text.parse().with_context(|| format!("{path}: not TOML"))?;
    Ok(Args::try_parse_from(merge_scenario(&argv, table))?)
}

/// The command line `argv` with the scenario file's keys put first as flags, except
/// those the command line gives itself (they win).
fn merge_scenario(argv: &[String], table: toml::Table) -> Vec<String> {
    let (program, given) = argv.split_first().map(|(p, g)| (p.clone(), g)).unwrap_or_default();
    let mut merged = vec![program];
    for (k, v) in table {
        let flag = format!("--{}", k.replace('_', "-"));
        // A flag given on the command line wins over the file's key.
        if given.iter().any(|a| *a == flag || a.starts_with(&format!("{flag}="))) {
            continue;
        }
        match v {
            toml::Value::Boolean(true) => merged.push(flag),
            toml::Value::Boolean(false) => {}
            toml::Value::String(s) => merged.extend([flag, s]),
            toml::Value::Array(a) => merged.extend([flag, a.iter().map(scalar).collect::<Vec<_>>().join(",")]),
            other => merged.extend([flag, scalar(&other)]),
        }
    }
    merged.extend(given.iter().cloned());
    merged
}

fn scalar(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}

static TIMELINE: std::sync::OnceLock<report::Timeline> = std::sync::OnceLock::new();

/// Prints a run's report and, with `--out`, writes it with its timeline and plot.
fn emit(a: &Args, report: &serde_json::Value) -> anyhow::Result<()> {
    let samples = TIMELINE.get().map(|t| t.samples()).unwrap_or_default();
    let mut full = report.clone();
    full["timeline"] = serde_json::to_value(&samples)?;
    full["machine"] = serde_json::json!(report::machine());
    println!("{}", serde_json::to_string_pretty(report)?);
    if let Some(dir) = &a.out {
        let name = a.name.clone().unwrap_or_else(|| a.scenario.clone());
        let command = std::env::args().collect::<Vec<_>>().join(" ");
        report::write(dir, &name, &command, &full, &samples)?;
        eprintln!("report written to {}/{name}.{{json,md,svg}}", dir.display());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args_with_file()?;
    if a.scenario == "summary" {
        let dir = a.out.clone().context("summary needs --out <folder of reports>")?;
        summary::summarize(&dir)?;
        return Ok(());
    }
    if a.pid.is_empty() {
        bail!("--pid: the server process ids to sample");
    }
    let _ = TIMELINE.set(report::Timeline::start(a.pid.clone()));
    if !a.addr.starts_with("127.") || !a.sfu.starts_with("ws://127.") {
        bail!("load tests target 127.0.0.0/8 only");
    }
    match a.scenario.as_str() {
        "connections" => connections(a).await,
        "fanout" => fanout(a).await,
        "morning-storm" => morning_storm(a).await,
        "forums" => forums(a).await,
        "chat" => chat::chat(a).await,
        "live-class" => {
            let report = live::live_class(live::LiveArgs {
                sfu: a.sfu.clone(),
                pid: a.pid.clone(),
                room_key: a.room_key.clone(),
                rooms: a.rooms,
                pupils: a.pupils,
                speakers: a.speakers,
                seconds: a.seconds,
                janus: a.janus,
            })
            .await?;
            emit(&a, &report)?;
            match live::failure(&report) {
                Some(why) => bail!("live-class failed: {why}"),
                None => Ok(()),
            }
        }
        other => bail!("unknown scenario `{other}`"),
    }
}

async fn connections(a: Args) -> anyhow::Result<()> {
    if a.nats {
        let report = nats::storm(&format!("ws://{}", a.addr), &a.pid, a.connections, a.concurrency).await?;
        return emit(&a, &report);
    }
    let enc = if a.encoding == "json" { Encoding::Json } else { Encoding::MsgPack };
    let (_, users) = http_get(&a.addr, "/dev/users").await?;
    let users: serde_json::Value = serde_json::from_str(&users)?;
    let ids: Vec<String> = users["users"]
        .as_array()
        .context("users")?
        .iter()
        .filter_map(|u| u["id"].as_str().map(str::to_owned))
        .collect();
    let mut tokens = Vec::with_capacity(ids.len());
    for id in &ids {
        tokens.push(dev_token(&a.addr, id).await?);
    }
    let tokens = Arc::new(tokens);
    let (rss0, cpu0) = proc_sample(&a.pid)?;
    let started = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(a.concurrency));
    let mut tasks = Vec::with_capacity(a.connections);
    for i in 0..a.connections {
        let (tokens, addr, sem) = (tokens.clone(), a.addr.clone(), sem.clone());
        let src =
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, a.first_source.saturating_add((i % a.sources.max(1) as usize) as u8)));
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.ok();
            let t = Instant::now();
            let c = Client::connect_from(&addr, &tokens[i % tokens.len()], enc, Some(src)).await;
            (c, t.elapsed())
        }));
    }
    let mut clients = Vec::with_capacity(a.connections);
    let mut hist = Histogram::<u64>::new(3)?;
    let mut failed = 0usize;
    let mut first_error = None;
    for t in tasks {
        let (c, took) = t.await?;
        match c {
            Ok(c) => {
                hist.record(took.as_micros() as u64)?;
                clients.push(c);
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(a.hold)).await;
    let (rss1, cpu1) = proc_sample(&a.pid)?;
    // Every connection still answers.
    let mut alive = 0usize;
    for c in &clients {
        alive += usize::from(c.request(Command::Ping {}).await.is_ok());
    }
    let n = clients.len().max(1) as f64;
    let report = serde_json::json!({
        "scenario": "connections",
        "connections_requested": a.connections,
        "connections_open": clients.len(),
        "connections_failed": failed,
        "first_error": first_error,
        "alive_after_hold": alive,
        "connect_seconds": connect_secs,
        "connect_latency_us": {
            "p50": hist.value_at_quantile(0.50), "p99": hist.value_at_quantile(0.99),
            "p999": hist.value_at_quantile(0.999), "max": hist.max(),
        },
        "gateway_rss_before_bytes": rss0,
        "gateway_rss_after_bytes": rss1,
        "gateway_bytes_per_connection": ((rss1 as f64 - rss0 as f64) / n).round(),
        "gateway_cpu_seconds": cpu1 - cpu0,
        "gateway_cpu_ms_per_connection": (cpu1 - cpu0) * 1000.0 / n,
    });
    emit(&a, &report)?;
    if failed > 0 || alive != clients.len() {
        bail!("{failed} connections failed, {} of {} alive", alive, clients.len());
    }
    Ok(())
}

/// Demo users and their development tokens.
async fn users(addr: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let (_, body) = http_get(addr, "/dev/users").await?;
    let v: serde_json::Value = serde_json::from_str(&body)?;
    Ok(v["users"].as_array().context("users")?.clone())
}

fn percentiles(h: &Histogram<u64>) -> serde_json::Value {
    serde_json::json!({
        "p50": h.value_at_quantile(0.50), "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999), "max": h.max(), "count": h.len(),
    })
}

/// One listening connection: follows a channel from `start` to `target`, recording
/// send-to-deliver latency (bodies carry their send time), repairing gaps with `history`,
/// and reconnecting and resuming if cut off.
struct Listener {
    ch: preau_proto::ChannelId,
    start: preau_proto::Seq,
    target: preau_proto::Seq,
    base: Instant,
    addr: String,
    token: String,
    src: IpAddr,
    enc: Encoding,
}

impl Listener {
    async fn follow(self, mut c: Client) -> (preau_client::SeqTracker, Histogram<u64>, u32) {
        use preau_client::Observed;
        use preau_proto::ServerFrame;
        let ch = &self.ch;
        let mut t = preau_client::SeqTracker::default();
        t.track(ch, self.start);
        let mut h = Histogram::<u64>::new(3).expect("histogram");
        let mut cut = 0u32;
        while t.last(ch) < self.target {
            match c.next_event(Duration::from_secs(20)).await {
                Some(ServerFrame::Event { channel, entry }) if channel == *ch => {
                    let now = self.base.elapsed().as_micros() as u64;
                    let sent = entry.body.as_deref().and_then(|b| b.parse::<u64>().ok());
                    match t.observe(&channel, entry.seq) {
                        Observed::Next => {
                            if let Some(sent) = sent {
                                let _ = h.record(now.saturating_sub(sent));
                            }
                        }
                        // Arrived ahead of a missing one: fetch what is missing.
                        Observed::Gap { .. } => {
                            let _ = c.catch_up(&mut t, ch).await;
                        }
                        Observed::Duplicate => {}
                    }
                }
                Some(_) => {}
                None => {
                    // Cut off (slow consumer) or stalled: reconnect and resume.
                    cut += 1;
                    if cut > 5 {
                        break;
                    }
                    let Ok(n) = Client::connect_from(&self.addr, &self.token, self.enc, Some(self.src)).await else {
                        continue;
                    };
                    c = n;
                    let _ = c.resume(&mut t).await;
                }
            }
        }
        (t, h, cut)
    }
}

/// What the sender measured.
struct SendReport {
    acks: Histogram<u64>,
    refusals: u64,
    offered_seconds: f64,
    acked_seconds: f64,
    send_start: Instant,
}

/// Sends `messages` to `ch` at `rate` per second and waits for every ack.
async fn send_at_rate(
    sender: Arc<Client>,
    ch: preau_proto::ChannelId,
    messages: u64,
    rate: u64,
    base: Instant,
) -> anyhow::Result<SendReport> {
    // Send at the set rate, without waiting for acks (the protocol pipelines up to 64
    // sends): the offered rate is the rate, whatever the server's ack latency. Each body
    // is the send time, so listeners measure delivery. A send refused `overloaded` (or
    // rate-limited) is retried after `retry_after_ms` with the same client id, so every
    // message is eventually stored once: the run checks nothing is lost.
    let period = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let send_start = Instant::now();
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..messages {
        tick.tick().await;
        let (sender, ch) = (sender.clone(), ch.clone());
        sends.spawn(async move {
            let sent = base.elapsed().as_micros() as u64;
            let t = Instant::now();
            let client_id = format!("fanout-{sent}-{i}");
            let mut refused = 0u64;
            loop {
                let cmd = preau_proto::Command::Send {
                    channel: ch.clone(),
                    client_id: client_id.clone(),
                    body: sent.to_string(),
                    thread: None,
                    reply_to: None,
                };
                match sender.request(cmd).await {
                    Ok(_) => return Ok::<_, anyhow::Error>((t.elapsed().as_micros() as u64, refused)),
                    Err(preau_client::ClientError::Server { retry_after_ms: Some(ms), .. }) => {
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        });
    }
    let offered_seconds = send_start.elapsed().as_secs_f64();
    let mut acks = Histogram::<u64>::new(3)?;
    let mut refusals = 0u64;
    while let Some(r) = sends.join_next().await {
        let (us, refused) = r??;
        acks.record(us.max(1))?;
        refusals += refused;
    }
    let acked_seconds = send_start.elapsed().as_secs_f64();
    Ok(SendReport { acks, refusals, offered_seconds, acked_seconds, send_start })
}

async fn fanout(a: Args) -> anyhow::Result<()> {
    use preau_proto::ChannelId;
    if a.nats {
        let report = nats::fanout(&format!("ws://{}", a.addr), &a.pid, a.listeners, a.messages, a.rate).await?;
        emit(&a, &report)?;
        let lost = report["lost"].as_u64().unwrap_or(0);
        if lost > 0 {
            bail!("{lost} messages lost");
        }
        return Ok(());
    }
    let enc = if a.encoding == "json" { Encoding::Json } else { Encoding::MsgPack };
    let (tokens, sender_token) = if a.reference {
        (vec![String::new()], String::new())
    } else {
        let all = users(&a.addr).await?;
        let in_class = |u: &serde_json::Value| u["classes"].as_array().is_some_and(|c| c.iter().any(|c| c == &a.class));
        let pupils: Vec<String> = all
            .iter()
            .filter(|u| u["profile"] == "pupil" && in_class(u))
            .filter_map(|u| u["id"].as_str().map(str::to_owned))
            .collect();
        let readers: Vec<String> = all
            .iter()
            .filter(|u| {
                (u["profile"] == "pupil" && in_class(u))
                    || (u["profile"] == "parent"
                        && u["children"].as_array().is_some_and(|c| c.iter().any(|c| pupils.iter().any(|p| c == p))))
            })
            .filter_map(|u| u["id"].as_str().map(str::to_owned))
            .collect();
        let sender_id = all
            .iter()
            .find(|u| u["profile"] == "teacher" && in_class(u))
            .and_then(|u| u["id"].as_str())
            .context("no teacher of that class")?
            .to_owned();
        let mut tokens = Vec::new();
        for r in &readers {
            tokens.push(dev_token(&a.addr, r).await?);
        }
        (tokens, dev_token(&a.addr, &sender_id).await?)
    };
    let ch = ChannelId::announcements(DEMO_SCHOOL, &a.class);
    let base = Instant::now();
    // The sender runs on a thread and runtime of its own: on the listeners' runtime its
    // acks would wait behind the 5,000 tasks each message wakes in this process, and the
    // ack latency measured would be the load generator's.
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<anyhow::Result<u64>>();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let sending = {
        let (addr, ch, messages, rate) = (a.addr.clone(), ch.clone(), a.messages, a.rate);
        std::thread::spawn(move || -> anyhow::Result<SendReport> {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async move {
                let connected = async {
                    let sender = Client::connect(&addr, &sender_token, enc).await?;
                    let start = sender
                        .request(Command::Sync { positions: vec![], limit: None })
                        .await?
                        .channels
                        .iter()
                        .find(|c| c.channel == ch)
                        .map(|c| c.last_seq)
                        .context("sender does not see the channel")?;
                    Ok::<_, anyhow::Error>((sender, start))
                };
                let (sender, start) = match connected.await {
                    Ok(v) => v,
                    Err(e) => {
                        let msg = e.to_string();
                        let _ = ready_tx.send(Err(e));
                        bail!("sender: {msg}");
                    }
                };
                let _ = ready_tx.send(Ok(start));
                go_rx.await.context("the run stopped before sending")?;
                send_at_rate(Arc::new(sender), ch, messages, rate, base).await
            })
        })
    };
    let start_seq = ready_rx.await.context("sender thread")??;
    let target = start_seq + a.messages;
    let mut listeners = Vec::with_capacity(a.listeners);
    for i in 0..a.listeners {
        let src =
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, a.first_source.saturating_add((i % a.sources.max(1) as usize) as u8)));
        let c = Client::connect_from(&a.addr, &tokens[i % tokens.len()], enc, Some(src)).await?;
        listeners.push((c, tokens[i % tokens.len()].clone(), src));
    }
    let (rss0, cpu0) = proc_sample(&a.pid)?;
    let mut tasks = Vec::new();
    for (c, token, src) in listeners {
        let l = Listener { ch: ch.clone(), start: start_seq, target, base, addr: a.addr.clone(), token, src, enc };
        tasks.push(tokio::spawn(l.follow(c)));
    }
    let _ = go_tx.send(());
    let SendReport { acks, refusals, offered_seconds, acked_seconds, send_start } =
        tokio::task::spawn_blocking(move || {
            sending.join().map_err(|_| anyhow::anyhow!("the sender thread panicked"))?
        })
        .await??;
    let mut deliver = Histogram::<u64>::new(3)?;
    let (mut lost, mut dups, mut gaps, mut cut_total, mut received) = (0u64, 0u64, 0u64, 0u32, 0u64);
    for t in tasks {
        let (tr, h, cut) = t.await?;
        lost += target.saturating_sub(tr.last(&ch));
        dups += tr.duplicates;
        gaps += tr.gaps;
        cut_total += cut;
        received += tr.last(&ch).saturating_sub(start_seq);
        deliver.add(&h)?;
    }
    let elapsed = send_start.elapsed().as_secs_f64();
    let (rss1, cpu1) = proc_sample(&a.pid)?;
    let report = serde_json::json!({
        "scenario": "fanout",
        "target": if a.reference { "preau-ref-broadcast" } else { "preau-gateway" },
        "channel": ch.to_string(),
        "listeners": a.listeners,
        "messages": a.messages,
        "rate_per_second": a.rate,
        "encoding": a.encoding,
        "deliveries": received,
        "deliveries_per_second": received as f64 / elapsed,
        "lost": lost,
        "duplicated": dups,
        "gaps_repaired": gaps,
        "listeners_cut_off_and_resumed": cut_total,
        "send_to_ack_us": percentiles(&acks),
        "offered_seconds": offered_seconds,
        "last_ack_after_seconds": acked_seconds,
        "sends_refused_then_retried": refusals,
        // The server kept up when the last ack came within a second of the last send;
        // otherwise latencies include the backlog's drain and say so.
        "kept_up": acked_seconds - offered_seconds < 1.0,
        "send_to_deliver_us": percentiles(&deliver),
        "gateway_cpu_seconds": cpu1 - cpu0,
        "gateway_cpu_us_per_delivery": (cpu1 - cpu0) * 1e6 / received.max(1) as f64,
        "gateway_rss_bytes": rss1,
        "gateway_rss_growth_bytes": rss1 as i64 - rss0 as i64,
        "seconds": elapsed,
    });
    emit(&a, &report)?;
    // Duplicates can follow a resume and clients drop them by seq; a loss fails the run.
    if lost > 0 {
        bail!("{lost} messages lost");
    }
    Ok(())
}

async fn morning_storm(a: Args) -> anyhow::Result<()> {
    use preau_proto::ChannelId;
    let enc = if a.encoding == "json" { Encoding::Json } else { Encoding::MsgPack };
    let all = users(&a.addr).await?;
    // The morning's announcements, from every teacher to each of their classes.
    let mut posted = 0u64;
    for t in all.iter().filter(|u| u["profile"] == "teacher") {
        let id = t["id"].as_str().context("id")?;
        let c = Client::connect(&a.addr, &dev_token(&a.addr, id).await?, enc).await?;
        for class in t["classes"].as_array().into_iter().flatten().filter_map(|c| c.as_str()) {
            for k in 0..a.posts {
                let body = format!("Annonce {k} de {id} : travail à faire pour aujourd'hui");
                match c.send_message(&ChannelId::announcements(DEMO_SCHOOL, class), &body).await {
                    Ok(_) => posted += 1,
                    Err(e) if e.code() == Some(preau_proto::ErrorCode::RateLimited) => {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(e) => bail!("posting: {e}"),
                }
            }
        }
    }
    let ids: Vec<String> = all.iter().filter_map(|u| u["id"].as_str().map(str::to_owned)).collect();
    let mut tokens = Vec::with_capacity(ids.len());
    for id in &ids {
        tokens.push(dev_token(&a.addr, id).await?);
    }
    let tokens = Arc::new(tokens);
    let (rss0, cpu0) = proc_sample(&a.pid)?;
    let started = Instant::now();
    let gap = Duration::from_secs_f64(a.within as f64 / a.connections.max(1) as f64);
    let mut tasks = Vec::with_capacity(a.connections);
    for i in 0..a.connections {
        let (tokens, addr) = (tokens.clone(), a.addr.clone());
        let src =
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, a.first_source.saturating_add((i % a.sources.max(1) as usize) as u8)));
        let at = started + gap * i as u32;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let t0 = Instant::now();
            let c = Client::connect_from(&addr, &tokens[i % tokens.len()], enc, Some(src)).await?;
            let connected = t0.elapsed();
            let sync = c.request(Command::Sync { positions: vec![], limit: None }).await?;
            let mut read = 0u64;
            let mut wrong = 0u64;
            for info in sync.channels.iter().filter(|i| i.last_seq > i.read_seq) {
                let mut expect = info.read_seq + 1;
                while expect <= info.last_seq {
                    let page = c
                        .request(Command::History {
                            channel: info.channel.clone(),
                            after: Some(expect - 1),
                            before: None,
                            limit: None,
                        })
                        .await?;
                    if page.entries.is_empty() {
                        break;
                    }
                    for e in &page.entries {
                        if e.seq != expect {
                            wrong += 1;
                        }
                        expect = e.seq + 1;
                        read += 1;
                    }
                }
                wrong += info.last_seq.saturating_sub(expect - 1);
                c.request(Command::MarkRead { channel: info.channel.clone(), seq: info.last_seq }).await?;
            }
            Ok::<_, preau_client::ClientError>((connected, t0.elapsed(), read, wrong, c))
        }));
    }
    let mut connect = Histogram::<u64>::new(3)?;
    let mut ready = Histogram::<u64>::new(3)?;
    let (mut read, mut wrong, mut failed) = (0u64, 0u64, 0u64);
    let mut first_error = None;
    let mut clients = Vec::new();
    for t in tasks {
        match t.await? {
            Ok((c, r, n, w, client)) => {
                connect.record(c.as_micros() as u64)?;
                ready.record(r.as_micros() as u64)?;
                read += n;
                wrong += w;
                clients.push(client);
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (rss1, cpu1) = proc_sample(&a.pid)?;
    let report = serde_json::json!({
        "scenario": "morning-storm",
        "connections": a.connections,
        "within_seconds": a.within,
        "announcements_posted": posted,
        "connections_failed": failed,
        "first_error": first_error,
        "messages_read": read,
        "messages_missing_or_out_of_order": wrong,
        "connect_latency_us": percentiles(&connect),
        "connect_to_all_read_us": percentiles(&ready),
        "seconds": elapsed,
        "gateway_cpu_seconds": cpu1 - cpu0,
        "gateway_cpu_ms_per_user_morning": (cpu1 - cpu0) * 1000.0 / clients.len().max(1) as f64,
        "gateway_rss_bytes": rss1,
        "gateway_rss_growth_bytes": rss1 as i64 - rss0 as i64,
    });
    emit(&a, &report)?;
    if failed > 0 || wrong > 0 {
        bail!("{failed} users failed, {wrong} messages missing or out of order");
    }
    Ok(())
}

async fn forums(a: Args) -> anyhow::Result<()> {
    use preau_proto::ChannelId;
    let enc = if a.encoding == "json" { Encoding::Json } else { Encoding::MsgPack };
    let all = users(&a.addr).await?;
    let mut classes: Vec<String> = all
        .iter()
        .filter(|u| u["profile"] == "pupil")
        .flat_map(|u| u["classes"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect();
    classes.sort();
    classes.dedup();
    let of = |profile: &str, class: &str| -> Vec<String> {
        all.iter()
            .filter(|u| {
                u["profile"] == profile && u["classes"].as_array().is_some_and(|c| c.iter().any(|c| c == class))
            })
            .filter_map(|u| u["id"].as_str().map(str::to_owned))
            .collect()
    };
    let base = Instant::now();
    // One thread per class forum, opened by one of its teachers.
    let mut plan = Vec::new();
    for class in &classes {
        let (teachers, pupils) = (of("teacher", class), of("pupil", class));
        let Some(teacher) = teachers.first() else { continue };
        let ch = ChannelId::forum(DEMO_SCHOOL, class);
        let t = Client::connect(&a.addr, &dev_token(&a.addr, teacher).await?, enc).await?;
        let thread = t
            .request(Command::CreateThread {
                channel: ch.clone(),
                client_id: preau_client::new_client_id(),
                title: "Questions du jour".into(),
                body: "Posez vos questions ici.".into(),
            })
            .await?
            .seq
            .context("thread seq")?;
        let mut members = pupils.clone();
        members.extend(teachers.iter().cloned());
        plan.push((ch, thread, pupils, members));
    }
    // Listeners, round-robin over (member, class).
    let pairs: Vec<(usize, String)> =
        plan.iter().enumerate().flat_map(|(i, (_, _, _, m))| m.iter().map(move |u| (i, u.clone()))).collect();
    let mut tokens = std::collections::HashMap::new();
    for (_, u) in &pairs {
        if !tokens.contains_key(u) {
            tokens.insert(u.clone(), dev_token(&a.addr, u).await?);
        }
    }
    let mut tasks = Vec::with_capacity(a.listeners);
    for i in 0..a.listeners {
        let (k, u) = &pairs[i % pairs.len()];
        let (ch, thread) = (&plan[*k].0, plan[*k].1);
        let src =
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, a.first_source.saturating_add((i % a.sources.max(1) as usize) as u8)));
        let token = tokens[u].clone();
        let c = Client::connect_from(&a.addr, &token, enc, Some(src)).await?;
        let target = thread + a.messages;
        let l = Listener { ch: ch.clone(), start: thread, target, base, addr: a.addr.clone(), token, src, enc };
        tasks.push((thread, target, tokio::spawn(l.follow(c))));
    }
    let (rss0, cpu0) = proc_sample(&a.pid)?;
    // Posters: every pupil of a class takes turns, each class at `rate` per second.
    let started = Instant::now();
    let mut senders = Vec::new();
    for (ch, thread, pupils, _) in &plan {
        let mut clients = Vec::new();
        for p in pupils {
            clients.push(Client::connect(&a.addr, &tokens[p], enc).await?);
        }
        let (ch, thread, messages, rate) = (ch.clone(), *thread, a.messages, a.rate.max(1));
        senders.push(tokio::spawn(async move {
            let mut acks = Histogram::<u64>::new(3).expect("histogram");
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
            for k in 0..messages {
                tick.tick().await;
                let c = &clients[k as usize % clients.len()];
                let sent = base.elapsed().as_micros() as u64;
                let cmd = Command::Send {
                    channel: ch.clone(),
                    client_id: preau_client::new_client_id(),
                    body: sent.to_string(),
                    thread: Some(thread),
                    reply_to: None,
                };
                loop {
                    let t = Instant::now();
                    match c.request(cmd.clone()).await {
                        Ok(_) => {
                            let _ = acks.record(t.elapsed().as_micros() as u64);
                            break;
                        }
                        Err(e) if e.code().is_some_and(|c| c.retryable()) => {
                            tokio::time::sleep(Duration::from_millis(200)).await
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            Ok(acks)
        }));
    }
    let mut acks = Histogram::<u64>::new(3)?;
    for s in senders {
        acks.add(&s.await??)?;
    }
    let mut deliver = Histogram::<u64>::new(3)?;
    let (mut lost, mut dups, mut gaps, mut cut_total, mut received) = (0u64, 0u64, 0u64, 0u32, 0u64);
    for (start, target, t) in tasks {
        let (tr, h, cut) = t.await?;
        // One channel is tracked: its position is everything seen without a hole.
        let last = tr.positions().first().map(|p| p.seq).unwrap_or(start);
        deliver.add(&h)?;
        dups += tr.duplicates;
        gaps += tr.gaps;
        cut_total += cut;
        received += last.saturating_sub(start);
        lost += target.saturating_sub(last);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (rss1, cpu1) = proc_sample(&a.pid)?;
    let report = serde_json::json!({
        "scenario": "forums",
        "forums": plan.len(),
        "listeners": a.listeners,
        "posts_per_forum": a.messages,
        "rate_per_forum_per_second": a.rate,
        "deliveries": received,
        "lost": lost,
        "duplicated": dups,
        "gaps_repaired": gaps,
        "listeners_cut_off_and_resumed": cut_total,
        "send_to_ack_us": percentiles(&acks),
        "send_to_deliver_us": percentiles(&deliver),
        "gateway_cpu_seconds": cpu1 - cpu0,
        "gateway_cpu_us_per_delivery": (cpu1 - cpu0) * 1e6 / received.max(1) as f64,
        "gateway_rss_bytes": rss1,
        "gateway_rss_growth_bytes": rss1 as i64 - rss0 as i64,
        "seconds": elapsed,
    });
    emit(&a, &report)?;
    if lost > 0 {
        bail!("{lost} posts lost");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn scenario_keys_become_flags_and_the_command_line_wins() {
        let table: toml::Table =
            "scenario = \"live-class\"\nrooms = 4\npupils = 30\njanus = false\nreference = true".parse().expect("toml");
        let line = argv("preau-load --file f.toml --rooms 1 --pupils=300 --pid 7");
        let merged = merge_scenario(&line, table);
        let a = Args::try_parse_from(&merged).expect("parses");
        assert_eq!((a.scenario.as_str(), a.rooms, a.pupils), ("live-class", 1, 300));
        assert!(a.reference && !a.janus);
        assert_eq!(merged.iter().filter(|x| x.starts_with("--rooms")).count(), 1);
    }
}

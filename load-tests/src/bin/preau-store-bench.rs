//! `preau-store-bench`: appends per second of the stores, side by side in one run — the
//! embedded SQLite store and PostgreSQL — with one writer waiting for each ack, and with
//! many concurrent writers (on many channels, and all on one channel, the gapless hot
//! spot). Reports appends per second, ack latency percentiles (HDR) and the CPU seconds
//! per append of this process and of the PostgreSQL server's processes, and checks every
//! channel's log is gapless afterwards.
//!
//! `preau-store-bench [--postgres "host=127.0.0.1 user=postgres dbname=postgres"] [--seconds 5]`
//! creates a database of its own on that server and drops it at the end.

// A bench measures real time: the clock rule (clippy.toml) is for the libraries.
#![allow(clippy::disallowed_methods)]

use anyhow::Context;
use clap::Parser;
use hdrhistogram::Histogram;
use preau_proto::ChannelId;
use preau_store::contract::{HookLog, post};
use preau_store::postgres::testing::TestDb;
use preau_store::{PgOptions, PgStore, SqliteOptions, SqliteStore, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// The PostgreSQL server (a database of the bench's own is created on it).
    #[arg(long, default_value = "host=127.0.0.1 port=5432 user=postgres dbname=postgres")]
    postgres: String,
    /// Seconds of each run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent writers of the concurrent runs.
    #[arg(long, default_value_t = 64)]
    writers: usize,
    /// Where to write the JSON report.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

/// CPU seconds (user + system) of every process whose name is `name`, or of `pid`.
fn cpu_of(filter: impl Fn(u32, &str) -> bool) -> f64 {
    let mut total = 0.0;
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0.0 };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some((head, rest)) = stat.rsplit_once(") ") else { continue };
        let comm = head.split_once('(').map(|(_, c)| c).unwrap_or("");
        if !filter(pid, comm) {
            continue;
        }
        let f: Vec<&str> = rest.split_whitespace().collect();
        total += f.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    }
    total / 100.0
}

fn my_cpu() -> f64 {
    let me = std::process::id();
    cpu_of(|pid, _| pid == me)
}

fn pg_cpu() -> f64 {
    cpu_of(|_, comm| comm == "postgres")
}

/// `writers` tasks append for `secs`, each waiting for its ack before the next; on one
/// channel when `one_channel`. Returns the report of the run.
async fn run(
    store: Arc<dyn Store>,
    name: &str,
    writers: usize,
    one_channel: bool,
    secs: u64,
) -> anyhow::Result<serde_json::Value> {
    let (cpu0, pg0) = (my_cpu(), pg_cpu());
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let s = store.clone();
        let ch = if one_channel {
            ChannelId::group(&format!("{name}-one"))
        } else {
            ChannelId::group(&format!("{name}-w{w}"))
        };
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new(3).expect("histogram");
            let mut i = 0u64;
            while Instant::now() < end {
                let t = Instant::now();
                s.write(post(&ch, &format!("u{w}"), &format!("c{i}"), "Bonjour à tous, voici le travail pour demain."))
                    .await?;
                let _ = h.record(t.elapsed().as_micros() as u64);
                i += 1;
            }
            anyhow::Ok((ch, h))
        }));
    }
    let mut h = Histogram::<u64>::new(3)?;
    let mut channels = Vec::new();
    for t in tasks {
        let (ch, th) = t.await??;
        h.add(&th)?;
        channels.push(ch);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (cpu1, pg1) = (my_cpu(), pg_cpu());
    channels.dedup();
    for ch in &channels {
        let mut after = 0;
        loop {
            let (page, more) = store.history(ch, Some(after), None, 1000).await?;
            for e in &page {
                anyhow::ensure!(e.seq == after + 1, "{ch}: seq {} after {after}: a gap", e.seq);
                after = e.seq;
            }
            if !more {
                break;
            }
        }
    }
    let n = h.len();
    Ok(serde_json::json!({
        "run": name,
        "writers": writers,
        "channels": if one_channel { 1 } else { writers },
        "appends": n,
        "appends_per_second": (n as f64 / elapsed).round(),
        "ack_us": { "p50": h.value_at_quantile(0.5), "p99": h.value_at_quantile(0.99), "max": h.max() },
        "bench_cpu_us_per_append": ((cpu1 - cpu0) * 1e6 / n.max(1) as f64).round(),
        "postgres_cpu_us_per_append": ((pg1 - pg0) * 1e6 / n.max(1) as f64).round(),
        "gapless": true,
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let dir = tempfile::tempdir()?;
    let sqlite: Arc<dyn Store> =
        Arc::new(SqliteStore::open(SqliteOptions::new(dir.path().join("preau.db")), HookLog::default().hook())?);
    let db = TestDb::create_on(&a.postgres).await;
    let pg: Arc<dyn Store> = Arc::new(
        PgStore::open(PgOptions::new(&db.url), HookLog::default().hook())
            .await
            .with_context(|| format!("open PostgreSQL at {}", a.postgres))?,
    );
    let mut rows = Vec::new();
    for (label, store) in [("sqlite", sqlite), ("postgres", pg)] {
        for (kind, writers, one) in
            [("1 writer", 1, false), ("many channels", a.writers, false), ("one channel", a.writers, true)]
        {
            let name = format!("{label}-{}", kind.replace(' ', "-"));
            let r = run(store.clone(), &name, writers, one, a.seconds).await?;
            eprintln!("{name}: {r}");
            rows.push(serde_json::json!({ "store": label, "case": kind, "result": r }));
        }
    }
    println!("| store | case | writers | appends/s | ack p50 | ack p99 | CPU µs/append (bench + PostgreSQL) |");
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        let x = &r["result"];
        println!(
            "| {} | {} | {} | {} | {:.2} ms | {:.2} ms | {} + {} |",
            r["store"].as_str().unwrap_or(""),
            r["case"].as_str().unwrap_or(""),
            x["writers"],
            x["appends_per_second"],
            x["ack_us"]["p50"].as_f64().unwrap_or(0.0) / 1000.0,
            x["ack_us"]["p99"].as_f64().unwrap_or(0.0) / 1000.0,
            x["bench_cpu_us_per_append"],
            x["postgres_cpu_us_per_append"],
        );
    }
    if let Some(out) = &a.out {
        std::fs::write(out, serde_json::to_string_pretty(&rows)?)?;
    }
    Ok(())
}

//! `chat`: the lockdown's conversations. Teachers write to the parents of their pupils
//! (direct conversations), and pupils talk in small groups with classmates; everyone in a
//! conversation posts M messages at R per second while listening to it. Each member must
//! see every seq of their conversation up to its end (gaps repaired with `history`,
//! slow consumers resumed); publish-to-deliver latency comes from the bodies' send times.

use crate::{Args, Listener, emit, percentiles, proc_sample, users};
use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use preau_client::{Client, dev_token};
use preau_proto::{ChannelId, Command, Encoding};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

struct Conversation {
    channel: ChannelId,
    members: Vec<String>,
}

fn ids(all: &[serde_json::Value], f: impl Fn(&serde_json::Value) -> bool) -> Vec<String> {
    all.iter().filter(|u| f(u)).filter_map(|u| u["id"].as_str().map(str::to_owned)).collect()
}

fn in_class(u: &serde_json::Value, class: &str) -> bool {
    u["classes"].as_array().is_some_and(|c| c.iter().any(|c| c == class))
}

/// Opens the conversations: `a.conversations` teacher–parent pairs and `a.groups` pupil
/// groups of five classmates.
async fn open(a: &Args, enc: Encoding) -> anyhow::Result<Vec<Conversation>> {
    let all = users(&a.addr).await?;
    let mut out = Vec::new();
    let classes = ["6A", "5B", "4C"];
    let mut pairs = Vec::new();
    for class in classes {
        let teachers = ids(&all, |u| u["profile"] == "teacher" && in_class(u, class));
        let pupils = ids(&all, |u| u["profile"] == "pupil" && in_class(u, class));
        let parents = ids(&all, |u| {
            u["profile"] == "parent"
                && u["children"].as_array().is_some_and(|c| c.iter().any(|c| pupils.iter().any(|p| c == p)))
        });
        for (i, p) in parents.iter().enumerate() {
            if let Some(t) = teachers.get(i % teachers.len().max(1)) {
                pairs.push((t.clone(), p.clone()));
            }
        }
    }
    for (t, p) in pairs.into_iter().take(a.conversations) {
        let c = Client::connect(&a.addr, &dev_token(&a.addr, &t).await?, enc).await?;
        let ack = c.request(Command::OpenDirect { user: p.clone() }).await.context("open_direct")?;
        out.push(Conversation { channel: ack.channel.context("no channel")?, members: vec![t, p] });
    }
    let mut made = 0;
    'classes: for class in classes {
        let pupils = ids(&all, |u| u["profile"] == "pupil" && in_class(u, class));
        for g in pupils.chunks(5).filter(|g| g.len() == 5) {
            if made >= a.groups {
                break 'classes;
            }
            let c = Client::connect(&a.addr, &dev_token(&a.addr, &g[0]).await?, enc).await?;
            let ack = c
                .request(Command::CreateGroup {
                    client_id: format!("load-chat-{class}-{made}-{}", std::process::id()),
                    name: format!("Groupe {}", made + 1),
                    members: g[1..].to_vec(),
                })
                .await
                .context("create_group")?;
            out.push(Conversation { channel: ack.channel.context("no channel")?, members: g.to_vec() });
            made += 1;
        }
    }
    Ok(out)
}

/// Runs the scenario.
pub async fn chat(a: Args) -> anyhow::Result<()> {
    let enc = if a.encoding == "json" { Encoding::Json } else { Encoding::MsgPack };
    let convs = open(&a, enc).await?;
    let base = Instant::now();
    let mut listen_tasks = Vec::new();
    let mut senders = Vec::new();
    let mut i = 0usize;
    for conv in &convs {
        // Where the conversation stands before the run (membership entries, earlier runs).
        let first = dev_token(&a.addr, &conv.members[0]).await?;
        let probe = Client::connect(&a.addr, &first, enc).await?;
        let start = probe
            .request(Command::Sync { positions: vec![], limit: None })
            .await?
            .channels
            .iter()
            .find(|c| c.channel == conv.channel)
            .map(|c| c.last_seq)
            .context("conversation not in sync")?;
        let target = start + a.messages * conv.members.len() as u64;
        for m in &conv.members {
            let token = dev_token(&a.addr, m).await?;
            let src = IpAddr::V4(Ipv4Addr::new(
                127,
                0,
                0,
                a.first_source.saturating_add((i % a.sources.max(1) as usize) as u8),
            ));
            i += 1;
            let listener = Client::connect_from(&a.addr, &token, enc, Some(src)).await?;
            let l = Listener {
                ch: conv.channel.clone(),
                start,
                target,
                base,
                addr: a.addr.clone(),
                token: token.clone(),
                src,
                enc,
            };
            listen_tasks.push((conv.channel.clone(), target, tokio::spawn(l.follow(listener))));
            senders.push((Client::connect_from(&a.addr, &token, enc, Some(src)).await?, conv.channel.clone()));
        }
    }
    let (rss0, cpu0) = proc_sample(&a.pid)?;
    let send_start = Instant::now();
    let period = Duration::from_secs_f64(1.0 / a.rate.max(1) as f64);
    let messages = a.messages;
    let send_tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(k, (c, ch))| {
            tokio::spawn(async move {
                // Spread the members' first sends over one period.
                tokio::time::sleep(period.mul_f64((k % 17) as f64 / 17.0)).await;
                let mut acks = Histogram::<u64>::new(3).expect("histogram");
                let mut tick = tokio::time::interval(period);
                let mut failed = 0u64;
                for _ in 0..messages {
                    tick.tick().await;
                    let t = Instant::now();
                    let sent = base.elapsed().as_micros() as u64;
                    match c.send_message(&ch, &sent.to_string()).await {
                        Ok(_) => {
                            let _ = acks.record(t.elapsed().as_micros() as u64);
                        }
                        Err(_) => failed += 1,
                    }
                }
                (acks, failed)
            })
        })
        .collect();
    let mut acks = Histogram::<u64>::new(3)?;
    let mut send_failed = 0;
    for t in send_tasks {
        let (h, f) = t.await?;
        acks.add(&h)?;
        send_failed += f;
    }
    let mut deliver = Histogram::<u64>::new(3)?;
    let (mut lost, mut dups, mut gaps) = (0u64, 0u64, 0u64);
    for (ch, target, t) in listen_tasks {
        let (tr, h, _) = t.await?;
        deliver.add(&h)?;
        dups += tr.duplicates;
        gaps += tr.gaps;
        lost += target.saturating_sub(tr.last(&ch));
    }
    let elapsed = send_start.elapsed().as_secs_f64();
    let (rss1, cpu1) = proc_sample(&a.pid)?;
    let delivered = deliver.len();
    let report = serde_json::json!({
        "scenario": "chat",
        "conversations_direct": convs.iter().filter(|c| c.members.len() == 2).count(),
        "conversations_groups": convs.iter().filter(|c| c.members.len() > 2).count(),
        "members": convs.iter().map(|c| c.members.len()).sum::<usize>(),
        "messages_per_member": a.messages,
        "rate_per_member_per_second": a.rate,
        "sends_failed": send_failed,
        "deliveries": delivered,
        "deliveries_per_second": delivered as f64 / elapsed,
        "lost": lost,
        "duplicated": dups,
        "gaps_repaired": gaps,
        "send_to_ack_us": percentiles(&acks),
        "send_to_deliver_us": percentiles(&deliver),
        "gateway_cpu_seconds": cpu1 - cpu0,
        "gateway_cpu_us_per_delivery": (cpu1 - cpu0) * 1e6 / delivered.max(1) as f64,
        "gateway_cpu_us_per_message_sent": (cpu1 - cpu0) * 1e6 / acks.len().max(1) as f64,
        "gateway_rss_bytes": rss1,
        "gateway_rss_growth_bytes": rss1 as i64 - rss0 as i64,
        "seconds": elapsed,
    });
    emit(&a, &report)?;
    if lost > 0 || send_failed > 0 {
        bail!("{lost} messages lost, {send_failed} sends failed");
    }
    Ok(())
}

//! `live-class`: K rooms against a running `preau-sfu`, each with a teacher publishing
//! simulcast video (three layers) and audio, P pupils subscribing, S of them granted the
//! microphone and speaking. Reports what the SFU forwards per CPU-second and its memory
//! per peer (from /proc), publisher-to-subscriber latency (HDR), and packets lost
//! (sequence gaps seen by subscribers).

use crate::{janus, percentiles, proc_sample, proc_system_seconds};
use anyhow::Context;
use preau_auth::Issuer;
use preau_live::client::{Latency, LiveClient, Publication, Received};
use serde_json::json;
use std::time::{Duration, Instant};

/// What the scenario needs.
pub struct LiveArgs {
    /// SFU signaling URL.
    pub sfu: String,
    /// SFU process ids.
    pub pid: Vec<u32>,
    /// HS256 key the SFU checks room tokens with.
    pub room_key: std::path::PathBuf,
    /// Rooms.
    pub rooms: usize,
    /// Pupils per room.
    pub pupils: usize,
    /// Pupils speaking per room.
    pub speakers: usize,
    /// Seconds measured, after the warm-up.
    pub seconds: u64,
    /// `sfu` is a Janus WebSocket API (the reference), not `preau-sfu`.
    pub janus: bool,
}

/// What one receiving client gives the measurement.
struct Rx {
    received: Received,
    latency: Latency,
    pupil: bool,
}

struct RoomLoad {
    teacher: LiveClient,
    pupils: Vec<LiveClient>,
    _publications: Vec<Publication>,
}

async fn join_room(a: &LiveArgs, issuer: &Issuer, r: usize) -> anyhow::Result<RoomLoad> {
    // Classes hold 40; larger rooms are school assemblies (capacity 400, last-N).
    let room = if a.pupils >= 40 { format!("assembly:load{r}") } else { format!("class:load{r}") };
    let token = |user: &str, role: &str| issuer.issue_room(user, user, "0750001A", &room, role, 600);
    let mut teacher = LiveClient::join(&a.sfu, &token(&format!("t{r}"), "host")).await.context("teacher join")?;
    let mut publications = vec![teacher.publish(&[("q", 250), ("h", 700), ("f", 1150)], Some(25)).await?];
    let mut pupils = Vec::with_capacity(a.pupils);
    for p in 0..a.pupils {
        let c = LiveClient::join(&a.sfu, &token(&format!("e{r}-{p}"), "participant")).await.context("pupil join")?;
        teacher.request(json!({"type":"admit","peer":c.peer})).await.context("admit")?;
        pupils.push(c);
    }
    for c in pupils.iter().take(a.speakers) {
        teacher.request(json!({"type":"grant","peer":c.peer,"media":"audio","allow":true})).await?;
        publications.push(c.publish(&[], Some(35)).await?);
    }
    // Most pupils' tiles are small: the teacher's video in the middle layer; the speakers
    // see the teacher large.
    let _ = teacher.event("speakers", Duration::from_millis(1)).await;
    Ok(RoomLoad { teacher, pupils, _publications: publications })
}

fn received_packets(rx: &[Rx]) -> (u64, u64) {
    let mut packets = 0;
    let mut gaps = 0;
    for c in rx {
        for s in c.received.lock().values() {
            packets += s.packets;
            gaps += s.gaps;
        }
    }
    (packets, gaps)
}

/// The rooms joined, on either server.
enum Rooms {
    Preau(Vec<RoomLoad>),
    Janus(Vec<janus::JanusRoom>),
}

impl Rooms {
    fn receivers(&self) -> Vec<Rx> {
        let rx = |received: &Received, latency: &Latency, pupil| Rx {
            received: received.clone(),
            latency: latency.clone(),
            pupil,
        };
        let mut out = Vec::new();
        match self {
            Rooms::Preau(rooms) => {
                for r in rooms {
                    out.extend(r.pupils.iter().map(|c| rx(&c.received, &c.latency, true)));
                    out.push(rx(&r.teacher.received, &r.teacher.latency, false));
                }
            }
            Rooms::Janus(rooms) => {
                for r in rooms {
                    out.extend(r.pupils.iter().map(|c| rx(&c.received, &c.latency, true)));
                    out.extend(r.teacher.iter().map(|c| rx(&c.received, &c.latency, false)));
                }
            }
        }
        out
    }

    async fn leave(&self) {
        if let Rooms::Preau(rooms) = self {
            for r in rooms {
                r.teacher.leave().await;
            }
        }
    }
}

/// Runs the scenario and prints the JSON report.
pub async fn live_class(a: LiveArgs) -> anyhow::Result<serde_json::Value> {
    let (rss0, cpu0) = proc_sample(&a.pid)?;
    let t0 = Instant::now();
    let rooms = if a.janus {
        let mut rooms = Vec::with_capacity(a.rooms);
        for r in 0..a.rooms {
            rooms.push(janus::join_room(&a.sfu, r, a.pupils, a.speakers).await.context("Janus room")?);
        }
        Rooms::Janus(rooms)
    } else {
        let key = std::fs::read(&a.room_key).with_context(|| format!("room key {}", a.room_key.display()))?;
        let issuer = Issuer::hs256(&key);
        let mut rooms = Vec::with_capacity(a.rooms);
        for r in 0..a.rooms {
            rooms.push(join_room(&a, &issuer, r).await?);
        }
        Rooms::Preau(rooms)
    };
    let rx = rooms.receivers();
    let setup_secs = t0.elapsed().as_secs_f64();
    let peers = a.rooms * (a.pupils + 1);
    // Warm-up: ICE, DTLS, first keyframes, layer choice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for c in rx.iter().filter(|c| c.pupil) {
        c.latency.lock().reset();
    }
    let (rss1, cpu1) = proc_sample(&a.pid)?;
    let sys1 = proc_system_seconds(&a.pid);
    let (p1, g1) = received_packets(&rx);
    let mut rss_max = rss1;
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(a.seconds) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (rss, cpu) = proc_sample(&a.pid)?;
        rss_max = rss_max.max(rss);
        samples.push(json!({"t": start.elapsed().as_secs_f64(), "rss": rss, "cpu": cpu - cpu1, "packets": received_packets(&rx).0 - p1}));
    }
    let (rss2, cpu2) = proc_sample(&a.pid)?;
    let sys = proc_system_seconds(&a.pid) - sys1;
    let (p2, g2) = received_packets(&rx);

    let secs = start.elapsed().as_secs_f64();
    let mut lat = hdrhistogram::Histogram::<u64>::new(3)?;
    for c in rx.iter().filter(|c| c.pupil) {
        lat.add(&*c.latency.lock())?;
    }
    let forwarded = p2 - p1;
    let cpu = cpu2 - cpu1;
    // Every pupil sees the teacher: some video track with keyframes.
    let no_video = rx.iter().filter(|c| c.pupil && !c.received.lock().values().any(|t| t.keyframes > 0)).count();
    let report = json!({
        "scenario": "live-class",
        "server": if a.janus { "janus" } else { "preau-sfu" },
        "rooms": a.rooms, "pupils_per_room": a.pupils, "speakers_per_room": a.speakers, "peers": peers,
        "setup_seconds": setup_secs,
        "measured_seconds": secs,
        "packets_forwarded": forwarded,
        "packets_forwarded_per_second": forwarded as f64 / secs,
        "packets_lost": g2 - g1,
        "loss_ratio": (g2 - g1) as f64 / forwarded.max(1) as f64,
        "pupils_without_video": no_video,
        "sfu_cpu_seconds": cpu,
        "sfu_cpu_share_of_one_core": cpu / secs,
        "sfu_packets_per_cpu_second": forwarded as f64 / cpu.max(1e-9),
        "sfu_cpu_us_per_packet": cpu * 1e6 / forwarded.max(1) as f64,
        // The kernel's share (system calls, the UDP stack) and the process's own.
        "sfu_cpu_us_per_packet_system": sys * 1e6 / forwarded.max(1) as f64,
        "sfu_cpu_us_per_packet_user": (cpu - sys) * 1e6 / forwarded.max(1) as f64,
        "sfu_cpu_seconds_setup_and_warmup": cpu1 - cpu0,
        "sfu_rss_before_bytes": rss0,
        "sfu_rss_after_setup_bytes": rss1,
        "sfu_rss_max_bytes": rss_max,
        "sfu_rss_end_bytes": rss2,
        "sfu_bytes_per_peer": ((rss1 as f64 - rss0 as f64) / peers as f64).round(),
        "publish_to_receive_latency_us": percentiles(&lat),
        "samples": samples,
    });
    rooms.leave().await;
    Ok(report)
}

/// Why a run fails, if it does: a pupil without the teacher's video (on either server),
/// or a packet lost by `preau-sfu`. The reference's losses are one of its figures.
pub fn failure(report: &serde_json::Value) -> Option<String> {
    let no_video = report["pupils_without_video"].as_u64().unwrap_or(0);
    let lost = report["packets_lost"].as_u64().unwrap_or(0);
    if no_video > 0 {
        Some(format!("{no_video} pupils received no video"))
    } else if lost > 0 && report["server"] == "preau-sfu" {
        Some(format!("{lost} packets lost"))
    } else {
        None
    }
}

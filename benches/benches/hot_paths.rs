//! Hot paths, each per operation so results read as CPU time per message:
//! - frame codecs: encoding an event and decoding a send, JSON and MessagePack;
//! - policy: who may write to whom, and class channel access;
//! - hub fan-out: one shared frame queued to N sessions (time per recipient);
//! - store: appends through the SQLite writer's group commit, with and without fsync.
//!
//! `cargo bench -p preau-benches --bench hot_paths` (add `-- --quick` for a short run).

// A load generator, bench or test of real sockets measures real time: the clock rule
// (clippy.toml) is for the libraries.
#![allow(clippy::disallowed_methods)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use preau_directory::{Directory, demo, policy};
use preau_gateway::hub::{Hub, SessionHandle};
use preau_proto::*;
use preau_store::{SqliteOptions, SqliteStore, Store, contract};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn event() -> ServerFrame {
    let mut entry = Entry::new(4211, EntryKind::Message, "t01", 1_795_000_000_000);
    entry.body = Some("Bonjour à tous, la sortie au musée est confirmée pour jeudi. Pensez aux autorisations.".into());
    entry.client_id = Some("b3f1-42".into());
    ServerFrame::Event { channel: ChannelId::announcements("0750001A", "6A"), entry }
}

fn codecs(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    let frame = event();
    let send = ClientFrame {
        id: 17,
        cmd: Command::Send {
            channel: ChannelId::direct("pa001", "t01"),
            client_id: "pa001-17".into(),
            body: "Bonjour Madame, Léa sera absente demain matin.".into(),
            thread: None,
            reply_to: None,
        },
    };
    for enc in [Encoding::Json, Encoding::MsgPack] {
        g.bench_function(format!("encode_event/{enc:?}"), |b| b.iter(|| encode_server(enc, black_box(&frame))));
        let bytes = encode_client(enc, &send);
        g.bench_function(format!("decode_send/{enc:?}"), |b| b.iter(|| decode_client(enc, black_box(&bytes))));
    }
    g.finish();
}

fn policy_checks(c: &mut Criterion) {
    let dir = Directory::from_docs([demo::demo_doc()]).expect("demo");
    let pairs: Vec<(&str, &str)> =
        vec![("t01", "e001"), ("e001", "e002"), ("e001", "t03"), ("pa001", "e002"), ("pa001", "t01"), ("pa051", "t01")];
    let recs: Vec<_> = pairs.iter().map(|(a, b)| (dir.user(a).expect("a"), dir.user(b).expect("b"))).collect();
    let mut g = c.benchmark_group("policy");
    g.throughput(Throughput::Elements(recs.len() as u64));
    g.bench_function("may_write_first", |b| {
        b.iter(|| recs.iter().filter(|(a, b)| policy::may_write_first(&dir, a, b)).count())
    });
    let users: Vec<_> =
        ["t01", "e001", "pa001", "s01", "pa051", "e026"].iter().map(|u| dir.user(u).expect("u")).collect();
    g.throughput(Throughput::Elements(users.len() as u64));
    g.bench_function("class_access", |b| {
        b.iter(|| {
            users.iter().filter(|u| policy::class_access(&dir, u, "0750001A", black_box("6A"), true).read).count()
        })
    });
    g.finish();
}

fn fanout(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let _guard = rt.enter();
    let mut g = c.benchmark_group("hub_fanout");
    for n in [100usize, 1000, 10_000] {
        let hub = Hub::new(8, (5, 30));
        let ch = ChannelId::announcements("0750001A", "6A");
        let mut rxs = Vec::with_capacity(n);
        for i in 0..n {
            let (h, rx) = SessionHandle::new(i as u64, Arc::from(format!("u{i}").as_str()), 64);
            let _ = hub.register(&h);
            hub.subscribe(&h, &ch);
            rxs.push(rx);
        }
        let frame = Arc::new(SharedFrame::new(event()));
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("deliver_channel/{n}"), |b| {
            b.iter_batched(
                || {
                    for rx in rxs.iter_mut() {
                        while rx.try_recv().is_ok() {}
                    }
                },
                |_| hub.deliver_channel(&ch, &frame),
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

fn store_appends(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let mut g = c.benchmark_group("store_append");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    for (sync_full, concurrency) in [(false, 1usize), (false, 64), (true, 1), (true, 64)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut opts = SqliteOptions::new(dir.path().join("bench.db"));
        opts.sync_full = sync_full;
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(opts, Box::new(|_| {})).expect("open"));
        g.throughput(Throughput::Elements(concurrency as u64));
        let name = format!("{}/concurrent_{concurrency}", if sync_full { "fsync" } else { "no_fsync" });
        let mut n = 0u64;
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                rt.block_on(async {
                    for _ in 0..iters {
                        let mut tasks = Vec::with_capacity(concurrency);
                        for k in 0..concurrency {
                            n += 1;
                            let (s, ch) = (store.clone(), ChannelId::group(&format!("g{}", k % 16)));
                            let cid = format!("c{n}");
                            tasks.push(tokio::spawn(async move {
                                s.write(contract::post(&ch, "u", &cid, "message")).await
                            }));
                        }
                        for t in tasks {
                            let _ = t.await;
                        }
                    }
                });
                start.elapsed()
            })
        });
    }
    g.finish();
}

/// The SFU's own per-packet work for one subscriber, without the engine and the socket:
/// the forwarding decision (layer, keyframe gate, seq/ts rewrite) and the shared
/// payload handed to the subscriber's connection (an `Arc` clone; str0m then
/// packetises and encrypts, measured by load-tests/live.sh).
fn rtp_forwarding(c: &mut Criterion) {
    use preau_sfu::forward::{Forward, vp8_is_keyframe};
    let mut g = c.benchmark_group("rtp_forward");
    let payload = {
        let mut p = vec![0u8; 1100];
        p[0] = 0x90;
        p[1] = 0x80;
        p[2] = 0x81;
        p[3] = 0x23;
        p
    };
    let payload: std::sync::Arc<[u8]> = payload.into();
    for subs in [1usize, 30, 300] {
        g.throughput(Throughput::Elements(subs as u64));
        g.bench_function(format!("per_packet_to_{subs}_subscribers"), |b| {
            let now = std::time::Instant::now();
            let mut fwd: Vec<Forward> = (0..subs)
                .map(|_| {
                    let mut f = Forward::video(90_000);
                    f.set_target(Some(1));
                    f.on_packet(now, 1, 0, 0, true);
                    f
                })
                .collect();
            let mut seq = 1u16;
            b.iter(|| {
                seq = seq.wrapping_add(1);
                let key = vp8_is_keyframe(&payload);
                let mut out = Vec::with_capacity(subs);
                for f in fwd.iter_mut() {
                    if let preau_sfu::forward::Verdict::Send { seq, ts, .. } = f.on_packet(now, 1, seq, 3000, key) {
                        out.push((seq, ts, payload.clone()));
                    }
                }
                std::hint::black_box(out)
            });
        });
    }
    g.finish();
}

/// A class recording's own work per packet, without the muxer's writes: one second of a
/// class (the teacher's picture at 30 frames a second, 4 packets a frame, on the layer
/// recorded and on two others it ignores; three voices at 50 packets a second), VP8
/// frames assembled, the picture and the loudest voice chosen, every frame timed and
/// put in order.
fn recording(c: &mut Criterion) {
    use preau_sfu::record::timeline::Timeline;
    use preau_sfu::room::Media;
    let mut g = c.benchmark_group("recording");
    let key_payload = |first: bool, key: bool| -> Vec<u8> {
        let mut p = vec![0u8; 1100];
        p[0] = if first { 0x10 } else { 0x00 };
        if first {
            p[1] = if key { 0x10 } else { 0x11 };
            p[4..7].copy_from_slice(&[0x9d, 0x01, 0x2a]);
            p[7..11].copy_from_slice(&[0x80, 0x02, 0xe0, 0x01]);
        }
        p
    };
    let opus = vec![0xfcu8; 80];
    struct Rtp<'a> {
        ms: u64,
        src: u64,
        rank: u8,
        seq: u16,
        ts: u32,
        marker: bool,
        level: Option<u8>,
        payload: &'a [u8],
    }
    let mut second: Vec<Rtp> = Vec::new();
    let frames: Vec<Vec<Vec<u8>>> = (0..30).map(|f| (0..4).map(|i| key_payload(i == 0, f == 0)).collect()).collect();
    for (f, packets) in frames.iter().enumerate() {
        for rank in 0..3u8 {
            for (i, p) in packets.iter().enumerate() {
                let seq = (f * 4 + i) as u16;
                let (ms, ts, marker) = (f as u64 * 33, f as u32 * 3000, i == 3);
                second.push(Rtp { ms, src: 1, rank, seq, ts, marker, level: None, payload: p.as_slice() });
            }
        }
    }
    for k in 0..50u64 {
        for (v, level) in [(2u64, 20u8), (3, 60), (4, 90)] {
            let (ms, seq, ts) = (k * 20, k as u16, k as u32 * 960);
            second.push(Rtp {
                ms,
                src: v,
                rank: 0,
                seq,
                ts,
                marker: true,
                level: Some(level),
                payload: opus.as_slice(),
            });
        }
    }
    second.sort_by_key(|x| x.ms);
    g.throughput(Throughput::Elements(second.len() as u64));
    g.bench_function("one_second_of_a_class", |b| {
        b.iter_batched(
            || {
                let t0 = std::time::Instant::now();
                let mut tl = Timeline::new(t0, true);
                tl.add_source(1, 1, Media::Video, true);
                for v in 2..5 {
                    tl.add_source(v, v, Media::Audio, v == 2);
                }
                (t0, tl)
            },
            |(t0, mut tl)| {
                for p in &second {
                    let now = t0 + std::time::Duration::from_millis(p.ms);
                    tl.packet(now, p.src, p.rank as usize, p.rank, p.seq, p.ts, p.marker, now, p.level, p.payload);
                    while let Some(f) = tl.poll_frame(now) {
                        std::hint::black_box(f);
                    }
                    let _ = tl.poll_header();
                }
                std::hint::black_box(tl.finish())
            },
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

criterion_group!(benches, codecs, policy_checks, fanout, store_appends, rtp_forwarding, recording);
criterion_main!(benches);

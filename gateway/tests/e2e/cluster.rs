//! Several gateways joined by a real Redis (a private redis-server per test, so a test may
//! stop it), with history in one shared data folder (SQLite, one host) or in PostgreSQL (a
//! database of its own per test on the machine's server: gateways on several hosts). The
//! tests of order, kill -9 and Redis outages run on both stores.

use crate::harness::{Redis, Server};
use preau_client::{Client, Observed, SeqTracker, http_get};
use preau_proto::{ChannelId, Command, EntryKind, ErrorCode, ServerFrame};
use preau_store::postgres::testing::TestDb;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

const FAST: &[&str] = &["--sends-per-second", "5000", "--send-burst", "5000", "--frames-per-second", "5000"];

/// Where the cluster keeps its history.
enum Backend {
    /// The shared data folder's SQLite database.
    Sqlite,
    /// A PostgreSQL database of the test's own (dropped at the end).
    Postgres(TestDb),
}

impl Backend {
    async fn postgres() -> Backend {
        Backend::Postgres(TestDb::create().await)
    }

    fn args(&self) -> Vec<&str> {
        match self {
            Backend::Sqlite => Vec::new(),
            Backend::Postgres(db) => vec!["--postgres-url", &db.url],
        }
    }
}

/// Gateways `gw1`..`gwn` on SQLite in one folder.
fn cluster(redis: &Redis, root: &std::path::Path, n: usize) -> Vec<Server> {
    cluster_on(redis, root, n, &Backend::Sqlite)
}

/// Gateways `gw1`..`gwn` on `store`; they share a folder for the development key. The
/// first starts alone so it creates that key and the demo school the others then read.
fn cluster_on(redis: &Redis, root: &std::path::Path, n: usize, store: &Backend) -> Vec<Server> {
    let url = redis.url();
    (1..=n)
        .map(|i| {
            let id = format!("gw{i}");
            let mut args = vec!["--redis", &url, "--node-id", &id];
            args.extend(store.args());
            args.extend_from_slice(FAST);
            Server::start_in(root, &args, &format!("{id}.log"))
        })
        .collect()
}

/// Reads events of `ch` into the tracker (repairing gaps) until `upto`; after a close,
/// reconnects with `reconnect` and resumes.
async fn follow(c: &mut Client, t: &mut SeqTracker, ch: &ChannelId, upto: u64, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while t.last(ch) < upto {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "stuck at {} of {upto}", t.last(ch));
        match c.next_event(left).await {
            Some(ServerFrame::Event { channel, entry }) if channel == *ch => {
                if let Observed::Gap { .. } = t.observe(&channel, entry.seq) {
                    c.catch_up(t, ch).await.expect("catch up");
                }
            }
            Some(_) => {}
            None => return,
        }
    }
}

async fn wait_ready(s: &Server, ready: bool, secs: u64) {
    let want = if ready { 200 } else { 503 };
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let st = http_get(&s.addr, "/readyz").await.map(|r| r.0).unwrap_or(0);
        if st == want {
            return;
        }
        assert!(Instant::now() < deadline, "{} never became {want} (is {st})", s.addr);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_on_one_gateway_reaches_members_on_the_others_in_order() {
    a_message_sent_on_one_gateway_reaches_members_on_the_others_in_order_on(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_on_one_gateway_reaches_members_on_the_others_in_order_on_postgres() {
    a_message_sent_on_one_gateway_reaches_members_on_the_others_in_order_on(Backend::postgres().await).await
}

async fn a_message_sent_on_one_gateway_reaches_members_on_the_others_in_order_on(store: Backend) {
    let redis = Redis::start();
    let root = tempfile::tempdir().expect("tempdir");
    let gws = cluster_on(&redis, root.path(), 3, &store);
    let ann = ChannelId::announcements("0750001A", "6A");
    let t01 = gws[0].connect("t01").await;
    let mut listeners = vec![gws[1].connect("e001").await, gws[2].connect("pa001").await, gws[0].connect("e002").await];
    // Let the other nodes' subscriptions reach Redis.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..100 {
        t01.send_message(&ann, &format!("annonce {i}")).await.expect("send");
    }
    for l in &mut listeners {
        let mut seen = Vec::new();
        while seen.len() < 100 {
            match l.next_event(Duration::from_secs(10)).await.expect("event") {
                ServerFrame::Event { channel, entry } if channel == ann => seen.push(entry.seq),
                _ => {}
            }
        }
        assert_eq!(seen, (1..=100).collect::<Vec<u64>>(), "in order, nothing missing, nothing twice");
    }
    // Conversations and membership cross nodes too.
    let mut pa001 = listeners.remove(1);
    let dm = t01.request(Command::OpenDirect { user: "pa001".into() }).await.expect("open").channel.expect("dm");
    crate::harness::expect_event(&mut pa001, 5, |f| {
        matches!(f, ServerFrame::ChannelAdded { info } if info.channel == dm).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    t01.send_message(&dm, "Bonjour").await.expect("dm");
    let body = crate::harness::expect_event(&mut pa001, 5, |f| match f {
        ServerFrame::Event { channel, entry } if *channel == dm => entry.body.clone(),
        _ => None,
    })
    .await;
    assert_eq!(body, "Bonjour");
    let members = t01.request(Command::Members { channel: dm }).await.expect("members");
    assert!(members.members.iter().all(|m| m.online), "presence crosses nodes: {:?}", members.members);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_killed_gateway_resume_on_another_with_nothing_lost_or_twice() {
    clients_of_a_killed_gateway_resume_on_another_with_nothing_lost_or_twice_on(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_killed_gateway_resume_on_another_with_nothing_lost_or_twice_on_postgres() {
    clients_of_a_killed_gateway_resume_on_another_with_nothing_lost_or_twice_on(Backend::postgres().await).await
}

async fn clients_of_a_killed_gateway_resume_on_another_with_nothing_lost_or_twice_on(store: Backend) {
    let redis = Redis::start();
    let root = tempfile::tempdir().expect("tempdir");
    let mut gws = cluster_on(&redis, root.path(), 3, &store);
    let ann = ChannelId::announcements("0750001A", "6A");
    let pupils: Vec<String> = (1..=10).map(|n| format!("e{n:03}")).collect();
    let mut listeners = Vec::new();
    for p in &pupils {
        let mut t = SeqTracker::default();
        t.track(&ann, 0);
        listeners.push((gws[1].connect(p).await, t, p.clone()));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let total = 300u64;
    let sender = gws[0].connect("t01").await;
    let send = tokio::spawn(async move {
        let mut acked = HashMap::new();
        for i in 0..total {
            let cid = format!("k{i}");
            let cmd = Command::Send {
                channel: ChannelId::announcements("0750001A", "6A"),
                client_id: cid.clone(),
                body: format!("m{i}"),
                thread: None,
                reply_to: None,
            };
            // The sender's own gateway stays up; retry until acknowledged.
            loop {
                match sender.request(cmd.clone()).await {
                    Ok(a) => {
                        acked.insert(cid.clone(), a.seq.expect("seq"));
                        break;
                    }
                    Err(e) => assert!(e.code().is_some_and(|c| c.retryable()), "{e}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (sender, acked)
    });
    // Kill gw2 in the middle of the stream.
    tokio::time::sleep(Duration::from_millis(600)).await;
    gws[1].kill9();
    let survivor = gws[2].addr.clone();
    let mut tasks = Vec::new();
    for (mut c, mut t, user) in listeners {
        let (ann, addr) = (ann.clone(), survivor.clone());
        tasks.push(tokio::spawn(async move {
            follow(&mut c, &mut t, &ann, total, 30).await;
            if t.last(&ann) < total {
                // Cut off by the kill: reconnect to a surviving node and resume.
                let token = preau_client::dev_token(&addr, &user).await.expect("token");
                let mut c2 = Client::connect(&addr, &token, preau_proto::Encoding::MsgPack).await.expect("reconnect");
                c2.resume(&mut t).await.expect("resume");
                follow(&mut c2, &mut t, &ann, total, 30).await;
            }
            t
        }));
    }
    let (sender, acked) = send.await.expect("sender");
    for task in tasks {
        let t = task.await.expect("listener");
        assert_eq!(t.last(&ann), total, "every message reached the listener");
    }
    let h = sender
        .request(Command::History { channel: ann.clone(), after: Some(0), before: None, limit: None })
        .await
        .expect("history");
    let mut all = h.entries;
    let mut more = h.more;
    while more {
        let after = all.last().map(|e| e.seq).unwrap_or(0);
        let p = sender
            .request(Command::History { channel: ann.clone(), after: Some(after), before: None, limit: None })
            .await
            .expect("history");
        more = p.more;
        all.extend(p.entries);
    }
    let cids: Vec<&str> =
        all.iter().filter(|e| e.kind == EntryKind::Message).filter_map(|e| e.client_id.as_deref()).collect();
    assert_eq!(cids.len(), total as usize, "stored once each");
    for (cid, seq) in &acked {
        assert_eq!(all.get(*seq as usize - 1).and_then(|e| e.client_id.as_deref()), Some(cid.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_drops_readiness_refuses_writes_and_loses_nothing() {
    a_redis_outage_drops_readiness_refuses_writes_and_loses_nothing_on(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_drops_readiness_refuses_writes_and_loses_nothing_on_postgres() {
    a_redis_outage_drops_readiness_refuses_writes_and_loses_nothing_on(Backend::postgres().await).await
}

async fn a_redis_outage_drops_readiness_refuses_writes_and_loses_nothing_on(store: Backend) {
    let mut redis = Redis::start();
    let root = tempfile::tempdir().expect("tempdir");
    let gws = cluster_on(&redis, root.path(), 2, &store);
    let ann = ChannelId::announcements("0750001A", "6A");
    let t01 = gws[0].connect("t01").await;
    let mut e001 = gws[1].connect("e001").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..5 {
        t01.send_message(&ann, &format!("avant {i}")).await.expect("send");
    }
    let mut t = SeqTracker::default();
    t.track(&ann, 0);
    follow(&mut e001, &mut t, &ann, 5, 10).await;
    let outage = Instant::now();
    redis.stop();
    for g in &gws {
        wait_ready(g, false, 5).await;
    }
    let e = t01.send_message(&ann, "pendant").await.expect_err("refused while redis is down");
    assert_eq!(e.code(), Some(ErrorCode::Unavailable));
    assert!(e.code().is_some_and(|c| c.retryable()));
    // What does not need Redis is still served: reads on both nodes.
    let h = e001
        .request(Command::History { channel: ann.clone(), after: Some(0), before: None, limit: None })
        .await
        .expect("read");
    assert_eq!(h.entries.len(), 5);
    t01.request(Command::Ping {}).await.expect("sessions stay open");
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(outage.elapsed())).await;
    redis.restart();
    for g in &gws {
        wait_ready(g, true, 15).await;
    }
    t01.send_message(&ann, "après").await.expect("send after the outage");
    follow(&mut e001, &mut t, &ann, 6, 10).await;
    assert_eq!(t.last(&ann), 6, "delivery across nodes resumed");
    let h = t01
        .request(Command::History { channel: ann, after: Some(0), before: None, limit: None })
        .await
        .expect("history");
    let bodies: Vec<&str> = h.entries.iter().filter_map(|e| e.body.as_deref()).collect();
    assert_eq!(bodies, vec!["avant 0", "avant 1", "avant 2", "avant 3", "avant 4", "après"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_moves_clients_and_keeps_latency_bounded() {
    let redis = Redis::start();
    let root = tempfile::tempdir().expect("tempdir");
    let url = redis.url();
    let mut gws: Vec<Server> = (1..=3)
        .map(|i| {
            let id = format!("gw{i}");
            let mut args =
                vec!["--redis", &url, "--node-id", &id, "--reconnect-jitter-ms", "1000", "--drain-seconds", "5"];
            args.extend_from_slice(FAST);
            Server::start_in(root.path(), &args, &format!("{id}.log"))
        })
        .collect();
    let ann = ChannelId::announcements("0750001A", "6A");
    let base = std::time::Instant::now();
    // 24 listeners, 8 per node; those of gw2 will be drained.
    let readers: Vec<String> = (1..=24).map(|n| format!("e{n:03}")).collect();
    let mut listeners = Vec::new();
    for (i, r) in readers.iter().enumerate() {
        let node = i % 3;
        listeners.push((gws[node].connect(r).await, r.clone(), node));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let total = 250u64;
    let sender = gws[0].connect("t01").await;
    let drain_at = Duration::from_millis(1500);
    let survivors = [gws[0].addr.clone(), gws[2].addr.clone()];
    let mut tasks = Vec::new();
    for (mut c, user, node) in listeners {
        let (ann, survivors) = (ann.clone(), survivors.clone());
        tasks.push(tokio::spawn(async move {
            let mut t = SeqTracker::default();
            t.track(&ann, 0);
            let mut during = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
            let mut moved = false;
            while t.last(&ann) < total {
                match c.next_event(Duration::from_secs(20)).await {
                    Some(ServerFrame::Event { channel, entry }) if channel == ann => {
                        let now = base.elapsed();
                        match t.observe(&channel, entry.seq) {
                            Observed::Next => {
                                let sent = entry.body.as_deref().and_then(|b| b.parse::<u64>().ok()).unwrap_or(0);
                                let in_drain = now >= drain_at && now < drain_at + Duration::from_secs(3);
                                if node != 1 && in_drain {
                                    let _ = during.record((now.as_micros() as u64).saturating_sub(sent));
                                }
                            }
                            Observed::Gap { .. } => {
                                c.catch_up(&mut t, &ann).await.expect("catch up");
                            }
                            Observed::Duplicate => {}
                        }
                    }
                    Some(ServerFrame::Reconnect { after_ms, .. }) => {
                        assert!(after_ms <= 1000, "jitter bound");
                        tokio::time::sleep(Duration::from_millis(after_ms)).await;
                    }
                    Some(_) => {}
                    None => {
                        assert!(!moved, "{user} cut twice");
                        moved = true;
                        let addr = &survivors[user.len() % 2];
                        let token = preau_client::dev_token(addr, &user).await.expect("token");
                        c = Client::connect(addr, &token, preau_proto::Encoding::MsgPack).await.expect("reconnect");
                        c.resume(&mut t).await.expect("resume");
                    }
                }
            }
            (t.last(&ann), moved, node, during)
        }));
    }
    let send = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for i in 0..total {
            tick.tick().await;
            let sent = base.elapsed().as_micros() as u64;
            let cmd = Command::Send {
                channel: ChannelId::announcements("0750001A", "6A"),
                client_id: format!("r{i}"),
                body: sent.to_string(),
                thread: None,
                reply_to: None,
            };
            sender.request(cmd).await.expect("the sender's node is not drained");
        }
    });
    tokio::time::sleep(drain_at.saturating_sub(base.elapsed())).await;
    let took = gws[1].term();
    send.await.expect("sender");
    let mut during = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    for task in tasks {
        let (last, moved, node, h) = task.await.expect("listener");
        assert_eq!(last, total, "nothing lost");
        assert_eq!(moved, node == 1, "exactly the drained node's clients moved");
        during.add(&h).expect("merge");
    }
    let p99 = during.value_at_quantile(0.99);
    eprintln!(
        "rolling restart: drain took {took:?}; send-to-deliver on the other nodes during the drain: p50 {} us, p99 {} us, max {} us over {} deliveries",
        during.value_at_quantile(0.5),
        p99,
        during.max(),
        during.len()
    );
    assert!(!during.is_empty(), "deliveries were measured during the drain");
    assert!(took < Duration::from_secs(8), "drain bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_import_on_one_gateway_applies_on_the_others() {
    let redis = Redis::start();
    let root = tempfile::tempdir().expect("tempdir");
    let gws = cluster(&redis, root.path(), 2);
    let mut e001 = gws[1].connect("e001").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut doc = preau_directory::demo::demo_doc();
    for u in doc.users.iter_mut().filter(|u| u.id == "e001") {
        u.classes = vec!["4C".into()];
    }
    let admin = gws[0].token("ad01").await;
    let (status, body) =
        preau_client::http_post(&gws[0].addr, "/admin/directory", &admin, &serde_json::to_string(&doc).expect("json"))
            .await
            .expect("import");
    assert_eq!(status, 200, "{body}");
    let mut removed = Vec::new();
    while removed.len() < 2 {
        let ev = e001.next_event(Duration::from_secs(10)).await.expect("the other node re-checks");
        if let ServerFrame::ChannelRemoved { channel } = ev {
            removed.push(channel.to_string());
        }
    }
    removed.sort();
    assert_eq!(removed, vec!["ann:0750001A:6A", "forum:0750001A:6A"]);
}

/// Registers a fake SFU node in the registry the way `preau-sfu --redis` does.
fn register_sfu(redis: &Redis, id: &str, load: u64) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis();
    let info = serde_json::json!({"id": id, "kind": "sfu", "addr": format!("ws://{id}/ws"), "load": load, "updated_ms": now as i64});
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "HSET", "preau:nodes", id, &info.to_string()])
        .output()
        .expect("redis-cli (installed with redis-server)");
    assert!(out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_rooms_go_to_the_least_loaded_sfu_and_stay_there() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let gws = cluster(&redis, dir.path(), 2);
    register_sfu(&redis, "sfu-a", 10);
    register_sfu(&redis, "sfu-b", 2);
    let place = |gw: usize, user: &'static str, class: &'static str| {
        let s = &gws[gw];
        async move {
            let token = s.token(user).await;
            let (status, body) =
                preau_client::http_post(&s.addr, &format!("/rooms/{class}/token"), &token, "").await.expect("post");
            assert_eq!(status, 200, "{body}");
            serde_json::from_str::<serde_json::Value>(&body).expect("json")["sfu"].as_str().expect("sfu").to_owned()
        }
    };
    assert_eq!(place(0, "t01", "6A").await, "ws://sfu-b/ws", "the least loaded node");
    register_sfu(&redis, "sfu-b", 50);
    assert_eq!(place(1, "e001", "6A").await, "ws://sfu-b/ws", "the whole class goes where its room lives");
    assert_eq!(place(0, "t04", "5B").await, "ws://sfu-a/ws", "a new room goes to the now least loaded node");
}

/// Collects the seqs of `ch`'s events in arrival order until `n` arrived (no `history`).
async fn arrivals(c: &mut Client, ch: &ChannelId, n: usize, secs: u64) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut seen = Vec::new();
    while seen.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{} of {n} events arrived: {:?}", seen.len(), &seen[seen.len().saturating_sub(5)..]);
        match c.next_event(left).await {
            Some(ServerFrame::Event { channel, entry }) if channel == *ch => seen.push(entry.seq),
            Some(_) => {}
            None => panic!("closed after {} events", seen.len()),
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_written_on_three_gateways_reach_every_session_in_seq_order() {
    events_written_on_three_gateways_reach_every_session_in_seq_order_on(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_written_on_three_gateways_reach_every_session_in_seq_order_on_postgres() {
    events_written_on_three_gateways_reach_every_session_in_seq_order_on(Backend::postgres().await).await
}

async fn events_written_on_three_gateways_reach_every_session_in_seq_order_on(store: Backend) {
    let redis = Redis::start();
    let root = tempfile::tempdir().expect("tempdir");
    let gws = cluster_on(&redis, root.path(), 3, &store);
    let ann = ChannelId::announcements("0750001A", "6A");
    // Members spread over the three nodes; the teacher writes from all three at once.
    let mut listeners = vec![
        gws[0].connect("e001").await,
        gws[1].connect("e002").await,
        gws[2].connect("pa001").await,
        gws[1].connect("e003").await,
    ];
    let senders: Vec<std::sync::Arc<Client>> = vec![
        gws[0].connect("t01").await.into(),
        gws[1].connect("t01").await.into(),
        gws[2].connect("t01").await.into(),
    ];
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut tasks = Vec::new();
    for (i, s) in senders.iter().enumerate() {
        for k in 0..3 {
            let (s, ann) = (s.clone(), ann.clone());
            tasks.push(tokio::spawn(async move {
                for n in 0..50 {
                    s.send_message(&ann, &format!("gw{i} t{k} n{n}")).await.expect("send");
                }
            }));
        }
    }
    for t in tasks {
        t.await.expect("sender");
    }
    for l in &mut listeners {
        let seen = arrivals(l, &ann, 450, 20).await;
        let out_of_order = seen.windows(2).filter(|w| w[1] != w[0] + 1).count();
        assert_eq!(out_of_order, 0, "{} events out of order: {:?}", out_of_order, seen);
        assert_eq!(seen, (1..=450).collect::<Vec<u64>>());
    }
    // The latency order repair added, per node (`--nocapture` shows it).
    for g in &gws {
        let (_, m) = http_get(&g.addr, "/metrics").await.expect("metrics");
        for l in m.lines().filter(|l| l.starts_with("preau_order_")) {
            eprintln!("{} {l}", g.addr);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_redis_outage_every_accepted_send_is_delivered_live_in_order() {
    let mut redis = Redis::start();
    let root = tempfile::tempdir().expect("tempdir");
    let gws = cluster(&redis, root.path(), 2);
    let ann = ChannelId::announcements("0750001A", "6A");
    let t01 = std::sync::Arc::new(gws[0].connect("t01").await);
    let mut e001 = gws[1].connect("e001").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A steady stream of sends from gw1 while Redis goes away for 10 s and comes back:
    // some are accepted before gw1 notices, the rest are refused (retryable).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (t, st, ch) = (t01.clone(), stop.clone(), ann.clone());
    let sender = tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut n = 0;
        while !st.load(std::sync::atomic::Ordering::Relaxed) {
            n += 1;
            match t.send_message(&ch, &format!("n{n}")).await {
                Ok(a) => acked.push(a.seq.expect("seq")),
                Err(e) => assert!(e.code().is_some_and(|c| c.retryable()), "{e}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        acked
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.stop();
    tokio::time::sleep(Duration::from_secs(10)).await;
    redis.restart();
    for g in &gws {
        wait_ready(g, true, 15).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = sender.await.expect("sender");
    let last = *acked.last().expect("some sends were accepted");
    assert_eq!(acked, (1..=last).collect::<Vec<u64>>(), "accepted sends are gapless");
    // Every accepted send reaches the member on the other node live, in order: the node
    // catches up from the store once Redis is back.
    let seen = arrivals(&mut e001, &ann, last as usize, 20).await;
    assert_eq!(seen, (1..=last).collect::<Vec<u64>>(), "live, in order, nothing missing");
}

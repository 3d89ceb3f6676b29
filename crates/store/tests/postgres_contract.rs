//! The storage contract against a real PostgreSQL server (a database of its own on the
//! machine's server, or `PREAU_TEST_POSTGRES`), gapless seqs with writers in several
//! processes, the schema versions, and a restart of the server under a stream of writes.

use preau_proto::ChannelId;
use preau_store::contract::{self, HookLog};
use preau_store::postgres::testing::{PgServer, TestDb};
use preau_store::{PgOptions, PgStore, Store, StoreError};
use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

async fn open(url: &str, log: &HookLog) -> PgStore {
    PgStore::open(PgOptions::new(url), log.hook()).await.expect("open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_the_contract() {
    let db = TestDb::create().await;
    let log = HookLog::default();
    let store = open(&db.url, &log).await;
    let store = Arc::new(store);
    contract::run_all(store.clone(), log).await;
    contract::erasure(store.as_ref()).await;
    contract::expiry(store.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_store_keeps_everything_and_continues_the_sequence() {
    let db = TestDb::create().await;
    let ch = ChannelId::group("durable");
    {
        let s = open(&db.url, &HookLog::default()).await;
        for i in 0..10 {
            s.write(contract::post(&ch, "u", &format!("k{i}"), "m")).await.expect("write");
        }
    }
    let s = open(&db.url, &HookLog::default()).await;
    let (h, more) = s.history(&ch, Some(0), None, 100).await.expect("history");
    assert_eq!((h.len(), more), (10, false));
    let dup = s.write(contract::post(&ch, "u", "k3", "m")).await.expect("retry after restart");
    assert!(dup.duplicate && dup.entry.seq == 4);
    assert_eq!(s.write(contract::post(&ch, "u", "k10", "m")).await.expect("write").entry.seq, 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_idempotent_and_an_unknown_schema_is_refused() {
    let db = TestDb::create().await;
    assert_eq!(PgStore::migrate(&db.url).await, Ok(preau_store::postgres::SCHEMA_VERSION), "already current");
    let fresh = TestDb::create().await;
    // A database without the schema: the gateway says what to run.
    let admin = fresh.url.clone();
    let (c, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(conn);
    c.batch_execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public").await.expect("empty it");
    let err = PgStore::open(PgOptions::new(&fresh.url), HookLog::default().hook()).await.err().expect("refused");
    assert!(err.to_string().contains("schema version 0") && err.to_string().contains("preau-gateway migrate"), "{err}");
    assert_eq!(PgStore::migrate(&fresh.url).await, Ok(0));
    open(&fresh.url, &HookLog::default()).await;
    // A database a newer build migrated: neither opened nor migrated back.
    c.batch_execute("INSERT INTO preau_schema (version) VALUES (99)").await.expect("newer");
    let err = PgStore::open(PgOptions::new(&fresh.url), HookLog::default().hook()).await.err().expect("refused");
    assert!(err.to_string().contains("schema version 99"), "{err}");
    assert!(PgStore::migrate(&fresh.url).await.is_err(), "never migrates a newer schema");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_writes_keep_their_order_and_a_full_backlog_is_refused_with_nothing_stored() {
    let db = TestDb::create().await;
    let mut opts = PgOptions::new(&db.url);
    opts.queue = 4;
    let store = PgStore::open(opts, HookLog::default().hook()).await.expect("open");
    contract::small_backlog(&store).await;
}

const WRITERS: usize = 3;
const PER_WRITER: usize = 120;

/// The child side of the next test: writes `PER_WRITER` posts to one channel from four
/// tasks and prints each acknowledged seq. Does nothing unless the parent started it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_process() {
    let (Ok(url), Ok(me)) = (std::env::var("PREAU_PG_WRITER_URL"), std::env::var("PREAU_PG_WRITER_ID")) else {
        return;
    };
    let store = Arc::new(open(&url, &HookLog::default()).await);
    let ch = ChannelId::group("many-hosts");
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let (s, ch, me) = (store.clone(), ch.clone(), me.clone());
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..PER_WRITER / 4 {
                    let w = contract::post(&ch, &format!("{me}-{t}"), &format!("c{i}"), "x");
                    seqs.push(s.write(w).await.expect("write").entry.seq);
                }
                seqs
            })
        })
        .collect();
    for t in tasks {
        for s in t.await.expect("task") {
            println!("ACK {s}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seqs_stay_gapless_with_writers_in_several_processes() {
    let db = TestDb::create().await;
    let exe = std::env::current_exe().expect("test binary");
    let children: Vec<_> = (0..WRITERS)
        .map(|i| {
            Command::new(&exe)
                .args(["--exact", "writer_process", "--nocapture", "--test-threads", "1"])
                .env("PREAU_PG_WRITER_URL", &db.url)
                .env("PREAU_PG_WRITER_ID", format!("p{i}"))
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("spawn a writer process")
        })
        .collect();
    let mut acked = Vec::new();
    for c in children {
        let out = tokio::task::spawn_blocking(move || c.wait_with_output()).await.expect("join").expect("wait");
        assert!(out.status.success(), "a writer process failed");
        let text = String::from_utf8_lossy(&out.stdout);
        // libtest may print its own "test writer_process ... " before the first line.
        acked
            .extend(text.lines().filter_map(|l| l.split("ACK ").nth(1)).map(|s| s.trim().parse::<u64>().expect("seq")));
    }
    let n = (WRITERS * PER_WRITER) as u64;
    let unique: BTreeSet<u64> = acked.iter().copied().collect();
    assert_eq!(acked.len() as u64, n, "every write acknowledged once");
    assert_eq!(unique, (1..=n).collect(), "acknowledged seqs are 1..=n, none twice");
    let store = open(&db.url, &HookLog::default()).await;
    let (h, more) = store.history(&ChannelId::group("many-hosts"), Some(0), None, 1000).await.expect("history");
    assert!(!more);
    assert_eq!(h.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=n).collect::<Vec<_>>(), "the log is gapless");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_under_a_stream_of_writes_refuses_then_recovers_and_loses_nothing_acknowledged() {
    let server = tokio::task::spawn_blocking(PgServer::start).await.expect("start a private server");
    let db = TestDb::create_on(&server.url()).await;
    let mut opts = PgOptions::new(&db.url);
    opts.timeout = Duration::from_secs(2);
    let store = Arc::new(PgStore::open(opts, HookLog::default().hook()).await.expect("open"));
    let ch = ChannelId::group("restart");
    let writer = {
        let store = store.clone();
        let ch = ch.clone();
        tokio::spawn(async move {
            // Each message is retried with its client id until acknowledged.
            let (mut acked, mut refused) = (Vec::new(), 0);
            for i in 0..150 {
                let cid = format!("m{i}");
                loop {
                    match store.write(contract::post(&ch, "u", &cid, "texte")).await {
                        Ok(a) => {
                            acked.push((cid.clone(), a.entry.seq));
                            break;
                        }
                        Err(StoreError::Unavailable(_)) => {
                            refused += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(e) => panic!("unexpected: {e}"),
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (acked, refused)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let srv = Arc::new(server);
    let s2 = srv.clone();
    tokio::task::spawn_blocking(move || s2.stop()).await.expect("stop");
    assert!(store.ping().await.is_err(), "not ready while the server is down");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s2 = srv.clone();
    tokio::task::spawn_blocking(move || s2.start_again()).await.expect("start");
    let (acked, refused) =
        tokio::time::timeout(Duration::from_secs(60), writer).await.expect("stream ends").expect("writer");
    assert!(refused > 0, "writes were refused while the server was down");
    store.ping().await.expect("ready again by itself");
    let (h, _) = store.history(&ch, Some(0), None, 1000).await.expect("history");
    assert_eq!(h.len(), 150, "every message stored once");
    for (cid, seq) in &acked {
        let stored: Vec<_> = h.iter().filter(|e| e.client_id.as_deref() == Some(cid.as_str())).collect();
        assert_eq!(stored.len(), 1, "{cid} stored once");
        assert_eq!(stored[0].seq, *seq, "{cid} at its acknowledged seq");
    }
    assert_eq!(h.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=150).collect::<Vec<_>>(), "gapless");
    drop(store);
    drop(db);
}

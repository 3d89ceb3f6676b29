//! The storage contract against a live ScyllaDB cluster. No ScyllaDB server can run on
//! the development machines, so these tests are ignored by default and show as SKIPPED
//! by name; `scripts/test` runs them when `PREAU_SCYLLA_NODES` names a cluster (see
//! deploy/README.md). Run by hand without a cluster, they fail: they never pass silently.

use preau_proto::ChannelId;
use preau_store::Store;
use preau_store::contract::{self, HookLog};
use preau_store::scylla::{ScyllaOptions, ScyllaStore};
use std::sync::Arc;

fn options() -> ScyllaOptions {
    let nodes = std::env::var("PREAU_SCYLLA_NODES")
        .expect("PREAU_SCYLLA_NODES must name a live ScyllaDB cluster (host:port,...) for these tests");
    ScyllaOptions {
        nodes: nodes.split(',').map(str::to_owned).collect(),
        // A fresh keyspace per run, so runs do not see each other.
        keyspace: format!("preau_test_{:08x}", rand::random::<u32>()),
        replication_factor: std::env::var("PREAU_SCYLLA_REPLICATION").ok().and_then(|r| r.parse().ok()).unwrap_or(1),
        retention_days: 1,
        clock: preau_proto::clock::system(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a ScyllaDB cluster: set PREAU_SCYLLA_NODES"]
async fn scylla_keeps_the_contract() {
    let opts = options();
    ScyllaStore::migrate(&opts).await.expect("migrate");
    let log = HookLog::default();
    let store = ScyllaStore::open(&opts, log.hook()).await.expect("open");
    contract::run_all(Arc::new(store), log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a ScyllaDB cluster: set PREAU_SCYLLA_NODES"]
async fn scylla_sequences_stay_gapless_with_several_writers_on_one_channel() {
    // Two stores play two gateways writing one channel.
    let opts = options();
    ScyllaStore::migrate(&opts).await.expect("migrate");
    let a = Arc::new(ScyllaStore::open(&opts, HookLog::default().hook()).await.expect("open a"));
    let b = Arc::new(ScyllaStore::open(&opts, HookLog::default().hook()).await.expect("open b"));
    let ch = ChannelId::group("contended");
    let mut tasks = Vec::new();
    for (i, s) in [a.clone(), b.clone(), a.clone(), b.clone()].into_iter().enumerate() {
        let ch = ch.clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..50 {
                s.write(contract::post(&ch, &format!("w{i}"), &format!("k{k}"), "x")).await.expect("write");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let mut seqs = Vec::new();
    let mut after = 0;
    loop {
        let (page, more) = a.history(&ch, Some(after), None, 100).await.expect("history");
        after = page.last().map(|e| e.seq).unwrap_or(after);
        seqs.extend(page.into_iter().map(|e| e.seq));
        if !more {
            break;
        }
    }
    assert_eq!(seqs, (1..=200).collect::<Vec<u64>>());
    // Retries from the other "gateway" are recognised.
    let dup = b.write(contract::post(&ch, "w0", "k7", "x")).await.expect("retry");
    assert!(dup.duplicate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a ScyllaDB cluster: set PREAU_SCYLLA_NODES"]
async fn scylla_erases_a_person_and_expires_messages() {
    let opts = options();
    ScyllaStore::migrate(&opts).await.expect("migrate");
    let store = ScyllaStore::open(&opts, HookLog::default().hook()).await.expect("open");
    contract::erasure(&store).await;
    contract::expiry(&store).await;
    // A retention names one of the scopes the store indexes channels under.
    let odd = preau_store::Expiry { prefix: "forum:".into(), before_ms: 0, limit: 10 };
    assert!(matches!(store.expire(odd).await, Err(preau_store::StoreError::Invalid(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a ScyllaDB cluster: set PREAU_SCYLLA_NODES"]
async fn scylla_migrate_is_idempotent_and_keeps_the_data() {
    let opts = options();
    ScyllaStore::migrate(&opts).await.expect("migrate");
    let store = ScyllaStore::open(&opts, HookLog::default().hook()).await.expect("open");
    let ch = ChannelId::group("kept");
    store.write(contract::post(&ch, "u1", "k1", "bonjour")).await.expect("post");
    ScyllaStore::migrate(&opts).await.expect("migrate again");
    let again = ScyllaStore::open(&opts, HookLog::default().hook()).await.expect("open again");
    assert_eq!(again.authored("u1", None, 10).await.map(|v| v.len()), Ok(1), "indexed once");
    assert_eq!(again.history(&ch, Some(0), None, 10).await.map(|h| h.0.len()), Ok(1));
}

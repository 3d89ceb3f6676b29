//! The storage contract against the embedded SQLite store, plus durability across reopen.

use preau_proto::ChannelId;
use preau_store::contract::{self, HookLog};
use preau_store::{SqliteOptions, SqliteStore, Store};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_the_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = HookLog::default();
    let store = SqliteStore::open(SqliteOptions::new(dir.path().join("preau.db")), log.hook()).expect("open");
    let store = Arc::new(store);
    contract::run_all(store.clone(), log).await;
    contract::erasure(store.as_ref()).await;
    contract::expiry(store.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopened_store_keeps_everything_and_continues_the_sequence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("preau.db");
    let ch = ChannelId::group("durable");
    {
        let s = SqliteStore::open(SqliteOptions::new(&path), HookLog::default().hook()).expect("open");
        for i in 0..10 {
            s.write(contract::post(&ch, "u", &format!("k{i}"), "m")).await.expect("write");
        }
    }
    let s = SqliteStore::open(SqliteOptions::new(&path), HookLog::default().hook()).expect("reopen");
    let (h, more) = s.history(&ch, Some(0), None, 100).await.expect("history");
    assert_eq!((h.len(), more), (10, false));
    let dup = s.write(contract::post(&ch, "u", "k3", "m")).await.expect("retry after restart");
    assert!(dup.duplicate && dup.entry.seq == 4);
    let next = s.write(contract::post(&ch, "u", "k10", "m")).await.expect("write");
    assert_eq!(next.entry.seq, 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_writes_keep_their_order_and_a_full_backlog_is_refused_with_nothing_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = SqliteOptions::new(dir.path().join("preau.db"));
    opts.queue = 4;
    let store = SqliteStore::open(opts, HookLog::default().hook()).expect("open");
    contract::small_backlog(&store).await;
}

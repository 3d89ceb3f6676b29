//! A gateway on PostgreSQL whose server restarts under a stream of sends: writes are
//! refused with the retryable `unavailable` while it is down, `/readyz` drops and comes
//! back by itself, and every acknowledged message is stored exactly once.

use crate::harness::{FAST, Server};
use preau_client::http_get;
use preau_proto::{ChannelId, Command, EntryKind, ErrorCode};
use preau_store::postgres::testing::{PgServer, TestDb};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;

async fn wait_ready(s: &Server, ready: bool, secs: u64) {
    let want = if ready { 200 } else { 503 };
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if http_get(&s.addr, "/readyz").await.map(|r| r.0).unwrap_or(0) == want {
            return;
        }
        assert!(Instant::now() < deadline, "/readyz never became {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_restart_under_a_stream_of_sends_refuses_then_recovers_and_loses_nothing_acknowledged() {
    let pg = Arc::new(tokio::task::spawn_blocking(PgServer::start).await.expect("a private PostgreSQL"));
    let db = TestDb::create_on(&pg.url()).await;
    let mut args = vec!["--postgres-url", db.url.as_str()];
    args.extend_from_slice(FAST);
    let gw = Server::start(&args);
    let ann = ChannelId::announcements("0750001A", "6A");
    let t01 = Arc::new(gw.connect("t01").await);
    wait_ready(&gw, true, 10).await;
    let stop = Arc::new(AtomicBool::new(false));
    let unavailable = Arc::new(AtomicUsize::new(0));
    let sender = {
        let (t, stop, refused, ann) = (t01.clone(), stop.clone(), unavailable.clone(), ann.clone());
        tokio::spawn(async move {
            let mut acked: HashMap<String, u64> = HashMap::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let cid = format!("k{n}");
                let cmd = Command::Send {
                    channel: ann.clone(),
                    client_id: cid.clone(),
                    body: format!("m{n}"),
                    thread: None,
                    reply_to: None,
                };
                // Retried with the same client id until acknowledged, as a client does.
                loop {
                    match t.request(cmd.clone()).await {
                        Ok(a) => {
                            acked.insert(cid.clone(), a.seq.expect("seq"));
                            break;
                        }
                        Err(e) => {
                            assert!(e.code().is_some_and(|c| c.retryable()), "{e}");
                            if e.code() == Some(ErrorCode::Unavailable) {
                                refused.fetch_add(1, Ordering::Relaxed);
                            }
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.stop()).await.expect("stop PostgreSQL");
    wait_ready(&gw, false, 10).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.start_again()).await.expect("start PostgreSQL");
    wait_ready(&gw, true, 20).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let acked = tokio::time::timeout(Duration::from_secs(30), sender).await.expect("the stream ends").expect("sender");
    assert!(unavailable.load(Ordering::Relaxed) > 0, "sends were refused `unavailable` while PostgreSQL was down");
    let mut all = Vec::new();
    loop {
        let after = all.last().map(|e: &preau_proto::Entry| e.seq).unwrap_or(0);
        let h = t01
            .request(Command::History { channel: ann.clone(), after: Some(after), before: None, limit: None })
            .await
            .expect("history");
        all.extend(h.entries);
        if !h.more {
            break;
        }
    }
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=all.len() as u64).collect::<Vec<_>>(), "gapless");
    let msgs: Vec<_> = all.iter().filter(|e| e.kind == EntryKind::Message).collect();
    assert_eq!(msgs.len(), acked.len(), "every acknowledged send stored, nothing else");
    for (cid, seq) in &acked {
        let stored: Vec<_> = msgs.iter().filter(|e| e.client_id.as_deref() == Some(cid.as_str())).collect();
        assert_eq!(stored.len(), 1, "{cid} stored once");
        assert_eq!(stored[0].seq, *seq, "{cid} at its acknowledged seq");
    }
    drop(gw);
    drop(db);
}

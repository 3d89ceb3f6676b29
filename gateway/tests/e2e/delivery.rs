//! Delivery: idempotent retries, every session of a user, resume after reconnect, resume
//! after a SIGKILL in the middle of a stream of sends, slow consumers.

use crate::harness::{FAST, Server, expect_event};
use preau_client::{Client, ClientError, SeqTracker};
use preau_proto::{ChannelId, Command, Encoding, EntryKind, ServerFrame, close};
use std::collections::HashMap;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_send_is_acknowledged_again_and_stored_once() {
    let s = Server::start(FAST);
    let t01 = s.connect_with("t01", Encoding::Json).await;
    let ann = ChannelId::announcements("0750001A", "6A");
    let send = || Command::Send {
        channel: ann.clone(),
        client_id: "retry-1".into(),
        body: "Sortie annulée".into(),
        thread: None,
        reply_to: None,
    };
    let a = t01.request(send()).await.expect("first");
    let b = t01.request(send()).await.expect("retry");
    assert_eq!((a.seq, a.duplicate, b.seq, b.duplicate), (Some(1), false, Some(1), true));
    // A retry from another connection (the phone after the computer) is the same send.
    let again = s.connect("t01").await;
    assert_eq!(again.request(send()).await.expect("other session").seq, Some(1));
    let h = t01
        .request(Command::History { channel: ann, after: Some(0), before: None, limit: None })
        .await
        .expect("history");
    assert_eq!(h.entries.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_session_of_a_user_gets_every_event() {
    let s = Server::start(FAST);
    let mut phone = s.connect("pa001").await;
    let mut computer = s.connect_with("pa001", Encoding::Json).await;
    let t01 = s.connect("t01").await;
    let dm = t01.request(Command::OpenDirect { user: "pa001".into() }).await.expect("open").channel.expect("dm");
    for c in [&mut phone, &mut computer] {
        expect_event(c, 5, |f| matches!(f, ServerFrame::ChannelAdded { info } if info.channel == dm).then_some(()))
            .await;
    }
    t01.send_message(&dm, "Bonjour, Léa a oublié son cahier").await.expect("send");
    for c in [&mut phone, &mut computer] {
        let body = expect_event(c, 5, |f| match f {
            ServerFrame::Event { channel, entry } if *channel == dm => entry.body.clone(),
            _ => None,
        })
        .await;
        assert_eq!(body, "Bonjour, Léa a oublié son cahier");
    }
    // Read on the phone: the computer learns it too, and the unread count follows.
    phone.request(Command::MarkRead { channel: dm.clone(), seq: 1 }).await.expect("read");
    expect_event(&mut computer, 5, |f| {
        matches!(f, ServerFrame::Read { user, seq: 1, .. } if user == "pa001").then_some(())
    })
    .await;
    let sync = computer.request(Command::Sync { positions: vec![], limit: None }).await.expect("sync");
    let info = sync.channels.iter().find(|c| c.channel == dm).expect("dm listed");
    assert_eq!((info.last_seq, info.read_seq, info.unread), (1, 1, 0));
}

/// Follows events of `ch` into a tracker until `n` were seen.
async fn drain(c: &mut Client, t: &mut SeqTracker, ch: &ChannelId, upto: u64, secs: u64) {
    while t.last(ch) < upto {
        match c.next_event(Duration::from_secs(secs)).await {
            Some(ServerFrame::Event { channel, entry }) if channel == *ch => {
                t.observe(&channel, entry.seq);
            }
            Some(_) => {}
            None => panic!("stream stopped at {} of {upto}", t.last(ch)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_reconnect_gets_exactly_what_was_missed() {
    let s = Server::start(FAST);
    let ann = ChannelId::announcements("0750001A", "5B");
    let t01 = s.connect("t01").await;
    let mut e026 = s.connect("e026").await;
    let mut tracker = SeqTracker::default();
    tracker.track(&ann, 0);
    for i in 0..5 {
        t01.send_message(&ann, &format!("avant {i}")).await.expect("send");
    }
    drain(&mut e026, &mut tracker, &ann, 5, 5).await;
    drop(e026);
    // 450 messages while the pupil is away: more than two pages.
    for i in 0..450 {
        t01.send_message(&ann, &format!("pendant {i}")).await.expect("send");
    }
    let e026 = s.connect("e026").await;
    let missed = e026.resume(&mut tracker).await.expect("resume");
    let seqs: Vec<u64> = missed.iter().map(|(_, e)| e.seq).collect();
    assert_eq!(seqs, (6..=455).collect::<Vec<u64>>(), "exactly what was missed, in order");
    assert_eq!((tracker.gaps, tracker.duplicates), (0, 0));
    assert_eq!(missed[0].1.body.as_deref(), Some("pendant 0"));
    // History pages back from the end too.
    let back = e026
        .request(Command::History { channel: ann.clone(), after: None, before: Some(6), limit: Some(3) })
        .await
        .expect("back");
    assert_eq!((back.entries.iter().map(|e| e.seq).collect::<Vec<_>>(), back.more), (vec![3, 4, 5], true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_sends_loses_no_acknowledged_message_and_stores_none_twice() {
    let mut s = Server::start(FAST);
    let ann = ChannelId::announcements("0750001A", "4C");
    // Send as fast as acks come back, on four connections (so the kill lands in the
    // middle of grouped commits), until the process dies.
    let mut tasks = Vec::new();
    for w in 0..4 {
        let c = s.connect("t03").await;
        let ann = ann.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked: Vec<(String, u64)> = Vec::new();
            let mut in_flight = None;
            for i in 0..100_000 {
                let cid = format!("w{w}-{i}");
                in_flight = Some(cid.clone());
                let cmd = Command::Send {
                    channel: ann.clone(),
                    client_id: cid.clone(),
                    body: format!("message {cid}"),
                    thread: None,
                    reply_to: None,
                };
                match c.request(cmd).await {
                    Ok(a) => acked.push((cid, a.seq.expect("seq"))),
                    Err(_) => break,
                }
            }
            (acked, in_flight)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.kill9();
    let mut acked = HashMap::new();
    let mut unsure = Vec::new();
    for t in tasks {
        let (a, f) = t.await.expect("task");
        acked.extend(a);
        unsure.extend(f);
    }
    assert!(acked.len() > 50, "only {} sends were acknowledged before the kill", acked.len());
    s.restart();
    let t03 = s.connect("t03").await;
    // The sends that were in flight are retried with their client ids.
    for cid in &unsure {
        let cmd = Command::Send {
            channel: ann.clone(),
            client_id: cid.clone(),
            body: format!("message {cid}"),
            thread: None,
            reply_to: None,
        };
        t03.request(cmd).await.expect("retry after restart");
    }
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = t03
            .request(Command::History { channel: ann.clone(), after: Some(after), before: None, limit: None })
            .await
            .expect("history");
        if page.entries.is_empty() {
            break;
        }
        after = page.entries.last().map(|e| e.seq).unwrap_or(after);
        all.extend(page.entries);
        if !page.more {
            break;
        }
    }
    let seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=all.len() as u64).collect::<Vec<_>>(), "gapless after the crash");
    let mut by_cid: HashMap<&str, u64> = HashMap::new();
    for e in all.iter().filter(|e| e.kind == EntryKind::Message) {
        let cid = e.client_id.as_deref().expect("client id");
        assert!(by_cid.insert(cid, e.seq).is_none(), "{cid} stored twice");
    }
    for (cid, seq) in &acked {
        assert_eq!(by_cid.get(cid.as_str()), Some(seq), "acknowledged {cid} lost or moved");
    }
    for cid in &unsure {
        assert!(by_cid.contains_key(cid.as_str()), "retried {cid} missing");
    }
    eprintln!(
        "sigkill test: {} acknowledged before the kill, {} in flight, {} stored",
        acked.len(),
        unsure.len(),
        all.len()
    );
}

/// A gateway whose small outbound queues make a paused reader a slow consumer quickly.
const SLOW_CONSUMER_ARGS: &[&str] = &[
    "--sends-per-second",
    "100000",
    "--send-burst",
    "100000",
    "--frames-per-second",
    "100000",
    "--outbound-queue",
    // Room for the sender's own events: its sends are pipelined, so a commit brings
    // several of them at once.
    "128",
    "--sync-full",
    "false",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_cut_off_and_resumes_without_loss() {
    let s = Server::start(SLOW_CONSUMER_ARGS);
    let ann = ChannelId::announcements("0750001A", "6A");
    let mut slow = s.connect("e003").await;
    let mut tracker = SeqTracker::default();
    tracker.track(&ann, 0);
    slow.pause_reading(true);
    let t01 = std::sync::Arc::new(s.connect("t01").await);
    let body = "x".repeat(4000);
    // About 16 MB of events: more than loopback socket buffers hold.
    let total = 4000u64;
    let mut senders = Vec::new();
    for w in 0..8u64 {
        let (c, ann, body) = (t01.clone(), ann.clone(), body.clone());
        senders.push(tokio::spawn(async move {
            for _ in 0..total / 8 {
                c.send_message(&ann, &body).await.expect("send");
            }
            w
        }));
    }
    for t in senders {
        t.await.expect("sender");
    }
    slow.pause_reading(false);
    // Read what got through, until the server's close.
    while let Some(f) = slow.next_event(Duration::from_secs(15)).await {
        if let ServerFrame::Event { channel, entry } = f {
            tracker.observe(&channel, entry.seq);
        }
    }
    let reason = slow.close_reason();
    assert_eq!(reason.as_ref().map(|r| r.0), Some(close::SLOW_CONSUMER), "closed with {reason:?}");
    assert!(tracker.last(&ann) < total, "the slow client was cut off before the end");
    assert_eq!(tracker.gaps, 0, "no hole before the cut: the server stops at the first dropped frame");
    let resumed = s.connect("e003").await;
    resumed.resume(&mut tracker).await.expect("resume");
    assert_eq!((tracker.last(&ann), tracker.gaps, tracker.duplicates), (total, 0, 0));
    // The sender was never slowed by the slow reader beyond its own acks.
    let ok: Result<_, ClientError> = t01.send_message(&ann, "après").await;
    assert!(ok.is_ok());
}

/// Channels of large messages resume: 150 messages at the 8 KiB body limit (1.2 MiB, more
/// than a socket may hold at once) come back through `sync` and `history` in pages cut by
/// bytes, every one of them, and the connection stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_page_by_bytes_through_history_and_sync() {
    let s = Server::start(FAST);
    let t01 = s.connect("t01").await;
    let ann = ChannelId::announcements("0750001A", "6A");
    let body = "x".repeat(8000);
    for _ in 0..150 {
        t01.send_message(&ann, &body).await.expect("send");
    }
    let e001 = s.connect("e001").await;
    // history, forward from the start.
    let (mut after, mut pages, mut seen) = (0, 0, Vec::new());
    loop {
        let h = e001
            .request(Command::History { channel: ann.clone(), after: Some(after), before: None, limit: None })
            .await
            .expect("a page, not a dropped connection");
        pages += 1;
        seen.extend(h.entries.iter().map(|e| e.seq));
        after = h.entries.last().map(|e| e.seq).unwrap_or(after);
        if !h.more {
            break;
        }
        assert!(pages < 20, "paging must end");
    }
    assert_eq!(seen, (1..=150).collect::<Vec<u64>>());
    assert!(pages >= 3, "cut by bytes, not only by count: {pages} pages");
    // history, backward from the end.
    let h = e001.request(Command::History { channel: ann.clone(), after: None, before: Some(151), limit: None }).await;
    let h = h.expect("newest page");
    assert!(h.more && h.entries.last().map(|e| e.seq) == Some(150));
    // sync from position 0, then paged with history as the docs say.
    let positions = vec![preau_proto::Position { channel: ann.clone(), seq: 0 }];
    let ack = e001.request(Command::Sync { positions, limit: None }).await.expect("sync answers");
    let info = ack.channels.iter().find(|c| c.channel == ann).expect("the channel");
    assert!(info.more, "sync says more");
    let mut got: Vec<u64> = info.entries.iter().map(|e| e.seq).collect();
    let mut after = got.last().copied().unwrap_or(0);
    loop {
        let h = e001
            .request(Command::History { channel: ann.clone(), after: Some(after), before: None, limit: None })
            .await
            .expect("page");
        got.extend(h.entries.iter().map(|e| e.seq));
        after = h.entries.last().map(|e| e.seq).unwrap_or(after);
        if !h.more {
            break;
        }
    }
    assert_eq!(got, (1..=150).collect::<Vec<u64>>());
    e001.request(Command::Ping {}).await.expect("still connected");
}

/// A cut slow consumer's connection is closed within a bounded time (12 s) even though
/// the client never reads again: on a node that takes two connections, a third gets in
/// once the cut one is gone (before, its socket and permit stayed until it read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_slow_consumer_frees_its_connection_without_reading() {
    let s = Server::start(&[SLOW_CONSUMER_ARGS, &["--max-connections", "2"]].concat());
    let ann = ChannelId::announcements("0750001A", "6A");
    let slow = s.connect("e003").await;
    slow.pause_reading(true);
    let t01 = std::sync::Arc::new(s.connect("t01").await);
    let body = "x".repeat(4000);
    let mut senders = Vec::new();
    for _ in 0..8 {
        let (c, ann, body) = (t01.clone(), ann.clone(), body.clone());
        senders.push(tokio::spawn(async move {
            for _ in 0..500 {
                c.send_message(&ann, &body).await.expect("send");
            }
        }));
    }
    for t in senders {
        t.await.expect("sender");
    }
    // The slow client never reads again; its place frees up within a few seconds.
    let token = s.token("e004").await;
    let t0 = std::time::Instant::now();
    loop {
        match Client::connect(&s.addr, &token, Encoding::Json).await {
            Ok(_) => break,
            Err(ClientError::Http { status: 503, .. }) => {
                // The bound: 10 s for the close frame, 2 s for the closing handshake.
                assert!(t0.elapsed() < Duration::from_secs(16), "the cut connection still holds its place");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    drop(slow);
}

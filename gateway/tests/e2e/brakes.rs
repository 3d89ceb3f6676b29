//! The mass-send brake over real sockets: an account writing to 30 conversations within a
//! minute is slowed, then held, and the school's direction gets an `alert`; a teacher
//! posting 30 times in their class forum is not held.

use crate::harness::{FAST, Server};
use preau_proto::{ChannelId, Command, ErrorCode, ServerFrame};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_conversations_in_a_minute_hold_the_account_but_thirty_forum_posts_do_not() {
    let s = Server::start(FAST);
    let mut s01 = s.connect("s01").await; // the school's CPE: direction
    let t01 = s.connect("t01").await;
    let pupils: Vec<String> = (1..=30).map(|i| format!("e{i:03}")).collect();
    let mut codes = Vec::new();
    for p in &pupils {
        let r = t01.request(Command::OpenDirect { user: p.clone() }).await;
        codes.push(r.err().and_then(|e| e.code()));
    }
    assert!(codes[..10].iter().all(Option::is_none), "ten new conversations are free: {codes:?}");
    assert!(codes[10..20].iter().all(|c| *c == Some(ErrorCode::RateLimited)), "then slowed: {codes:?}");
    assert!(codes[20..].iter().all(|c| *c == Some(ErrorCode::Held)), "then held: {codes:?}");
    // Held everywhere, old conversations too.
    let old = ChannelId::direct("e001", "t01");
    let e = t01.send_message(&old, "x").await.expect_err("held");
    assert_eq!(e.code(), Some(ErrorCode::Held));
    // The direction was told, once.
    let mut alerts = 0;
    while let Some(f) = s01.next_event(Duration::from_millis(500)).await {
        if let ServerFrame::Alert { kind, user, .. } = f {
            assert_eq!((kind.as_str(), user.as_str()), ("mass_send", "t01"));
            alerts += 1;
        }
    }
    assert_eq!(alerts, 1);
    // A teacher posting thirty times in their class forum is not hampered.
    let t05 = s.connect("t05").await;
    let forum = ChannelId::forum("0750001A", "6A");
    let ack = t05
        .request(Command::CreateThread {
            channel: forum.clone(),
            client_id: "t".into(),
            title: "Devoirs".into(),
            body: "Pour lundi".into(),
        })
        .await
        .expect("thread");
    let thread = ack.seq;
    for i in 0..30 {
        let post = Command::Send {
            channel: forum.clone(),
            client_id: format!("p{i}"),
            body: format!("exercice {i}"),
            thread,
            reply_to: None,
        };
        t05.request(post).await.expect("forum posts are never braked");
    }
}

//! The answer rule end to end, through the real commands and store: for every pair of
//! demo users of every profile (related and not), what `sync` and `channel_added` say of
//! `can_post` in their direct conversation is what `send` then does — before anyone
//! wrote, and after the one who opened it did.

use crate::config::Cli;
use crate::hub::SessionHandle;
use crate::service::Gateway;
use clap::Parser;
use preau_proto::{Ack, ChannelId, Command, ServerFrame};
use std::sync::Arc;

/// One user of each profile, related and unrelated to each other (see the demo's doc).
const USERS: &[&str] = &["t01", "t03", "s01", "ad01", "e001", "e002", "e026", "pa001", "pa002", "pa051"];

async fn gateway() -> (Arc<Gateway>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = [
        "preau-gateway",
        "--data-dir",
        dir.path().to_str().expect("utf-8"),
        "--sends-per-second",
        "100000",
        "--send-burst",
        "100000",
    ];
    (Gateway::start(Cli::parse_from(args).config).await.expect("gateway"), dir)
}

fn cmd(g: &Gateway, user: &str, c: Command) -> impl std::future::Future<Output = Result<Ack, super::CmdError>> {
    g.handle(user, 1, c)
}

async fn sync_can_post(g: &Gateway, user: &str, ch: &ChannelId) -> bool {
    let ack = cmd(g, user, Command::Sync { positions: vec![], limit: None }).await.expect("sync");
    ack.channels.iter().find(|i| &i.channel == ch).map(|i| i.can_post).expect("the conversation is listed")
}

async fn send_ok(g: &Gateway, user: &str, ch: &ChannelId, n: &mut u32) -> bool {
    *n += 1;
    let send = Command::Send {
        channel: ch.clone(),
        client_id: format!("c{n}"),
        body: "Bonjour".into(),
        thread: None,
        reply_to: None,
    };
    match cmd(g, user, send).await {
        Ok(_) => true,
        Err(e) => {
            assert_eq!(e.code, preau_proto::ErrorCode::Forbidden, "{user} in {ch}: {e:?}");
            false
        }
    }
}

/// The `can_post` of the `channel_added` that reached `user`'s queue.
fn added_can_post(rx: &mut crate::hub::Outbox, ch: &ChannelId) -> bool {
    while let Ok(f) = rx.try_recv() {
        if let ServerFrame::ChannelAdded { info } = f.frame()
            && &info.channel == ch
        {
            return info.can_post;
        }
    }
    panic!("no channel_added for {ch}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn can_post_is_what_send_does_for_every_profile_pair() {
    let (g, _dir) = gateway().await;
    let mut n = 0;
    let mut checked = 0;
    for (i, a) in USERS.iter().enumerate() {
        for b in &USERS[i + 1..] {
            // Whoever may open it does (a first); a pair nobody may open has nothing to check.
            let opener = [(*a, *b), (*b, *a)].into_iter().find(|(x, y)| {
                let d = g.dir();
                preau_directory::may_write_first(&d, d.user(x).expect("user"), d.user(y).expect("user"))
            });
            let Some((x, y)) = opener else { continue };
            let (hx, mut rx_x) = SessionHandle::new(9000 + n as u64, Arc::from(x), 64);
            let (hy, mut rx_y) = SessionHandle::new(9001 + n as u64, Arc::from(y), 64);
            g.hub.register(&hx).expect("register");
            g.hub.register(&hy).expect("register");
            let ack = cmd(&g, x, Command::OpenDirect { user: y.to_string() }).await.expect("open");
            let ch = ack.channel.expect("channel");
            tokio::task::yield_now().await;
            for (u, rx) in [(x, &mut rx_x), (y, &mut rx_y)] {
                let added = added_can_post(rx, &ch);
                let synced = sync_can_post(&g, u, &ch).await;
                assert_eq!(added, synced, "{u} in {ch}: channel_added and sync agree");
            }
            // `y` first: once `x` has written, the answer rule lets `y` post anyway.
            let y_may = sync_can_post(&g, y, &ch).await;
            assert_eq!(send_ok(&g, y, &ch, &mut n).await, y_may, "{y} answering nobody in {ch}");
            let x_may = sync_can_post(&g, x, &ch).await;
            assert!(x_may, "{x} opened {ch}: may write");
            assert!(send_ok(&g, x, &ch, &mut n).await, "{x} writes in {ch}");
            // Once x wrote, y may always answer.
            assert!(sync_can_post(&g, y, &ch).await, "{y} may answer in {ch}");
            assert!(send_ok(&g, y, &ch, &mut n).await, "{y} answers in {ch}");
            g.hub.unregister(&hx);
            g.hub.unregister(&hy);
            checked += 1;
        }
    }
    assert!(checked >= 30, "pairs checked: {checked}");
}

/// Discussion hours through the real commands, on a simulated clock: a pupil's message
/// at 22:30 in Paris waits for 07:00, and goes through once the clock gets there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discussion_hours_on_simulated_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["preau-gateway", "--data-dir", dir.path().to_str().expect("utf-8")];
    // 2026-12-01 21:30 UTC: 22:30 in Paris.
    let clock = preau_proto::clock::ManualClock::at(1_796_160_600_000);
    let g = Gateway::start_with_clock(Cli::parse_from(args).config, clock.clone()).await.expect("gateway");
    let mut doc = preau_directory::demo::demo_doc();
    doc.schools[0].policy.discussion_hours = Some(preau_directory::hours::DiscussionHours {
        start: "07:00".into(),
        end: "20:00".into(),
        time_zone: "Europe/Paris".into(),
    });
    g.import(doc).await.expect("import");
    let open = cmd(&g, "e001", Command::OpenDirect { user: "e002".into() }).await;
    let e = open.expect_err("closed at night");
    assert_eq!((e.code, e.retry_after_ms), (preau_proto::ErrorCode::OutsideHours, Some(30_600_000)));
    // The teacher may still write to the pupil, who reads it but answers in the morning.
    let ch = cmd(&g, "t01", Command::OpenDirect { user: "e001".into() }).await.expect("teacher").channel.expect("ch");
    let mut n = 0;
    assert!(send_ok(&g, "t01", &ch, &mut n).await);
    let h = cmd(&g, "e001", Command::History { channel: ch.clone(), after: Some(0), before: None, limit: None });
    assert_eq!(h.await.expect("reading stays open").entries.len(), 1);
    clock.advance(30_600_000);
    assert!(send_ok(&g, "e001", &ch, &mut n).await, "07:00: open");
}

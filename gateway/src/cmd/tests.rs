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
fn added_can_post(rx: &mut tokio::sync::mpsc::Receiver<Arc<preau_proto::SharedFrame>>, ch: &ChannelId) -> bool {
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

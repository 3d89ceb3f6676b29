//! The communication policy over real sockets: every row of the table, allowed and
//! denied; forum, announcement and group rules; nothing leaks.

use crate::harness::{FAST, Server, expect_event};
use preau_client::new_client_id;
use preau_proto::{ChannelId, Command, ErrorCode, ServerFrame};

/// (from, to, allowed, what): the CONTEXT.md table on the demo school (see
/// preau_directory::demo for who is who).
const ROWS: &[(&str, &str, bool, &str)] = &[
    ("t01", "e001", true, "teacher -> pupil of own class"),
    ("t03", "e001", true, "teacher -> any pupil of the school"),
    ("t03", "pa001", true, "teacher -> any parent"),
    ("t01", "t03", true, "teacher -> teacher"),
    ("t01", "s01", true, "teacher -> staff"),
    ("s01", "e051", true, "staff -> pupil"),
    ("s01", "pa051", true, "staff -> parent"),
    ("s01", "t03", true, "staff -> teacher"),
    ("s01", "s02", true, "staff -> staff"),
    ("e001", "e002", true, "pupil -> classmate"),
    ("e001", "e026", false, "pupil -> pupil of another class"),
    ("e001", "pa001", true, "pupil -> own parent"),
    ("e001", "pa002", false, "pupil -> another pupil's parent"),
    ("e001", "t01", true, "pupil -> teacher of own class"),
    ("e001", "t03", false, "pupil -> teacher of another class"),
    ("e001", "s01", true, "pupil -> staff"),
    ("pa001", "e001", true, "parent -> own child"),
    ("pa001", "e002", false, "parent -> another family's child"),
    ("pa001", "pa002", false, "parent -> another parent"),
    ("pa001", "t01", true, "parent -> teacher of the child's class"),
    ("pa051", "t01", false, "parent -> teacher not of the child's class"),
    ("pa001", "s02", true, "parent -> staff"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_of_the_table_allowed_and_denied() {
    let s = Server::start(FAST);
    // Denied rows first: once the other side has opened a conversation, answering in it
    // is allowed, which is a different rule (tested below).
    let mut rows = ROWS.to_vec();
    rows.sort_by_key(|r| r.2);
    for (from, to, allowed, what) in &rows {
        let c = s.connect(from).await;
        let r = c.request(Command::OpenDirect { user: (*to).into() }).await;
        if *allowed {
            let ack = r.unwrap_or_else(|e| panic!("{what}: {from} -> {to} refused: {e}"));
            let ch = ack.channel.expect("channel");
            let sent = c.send_message(&ch, "Bonjour").await;
            assert!(sent.is_ok(), "{what}: posting refused: {sent:?}");
        } else {
            let e = r.expect_err(what);
            assert_eq!(e.code(), Some(ErrorCode::Forbidden), "{what}: {from} -> {to}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anyone_may_answer_a_message_received() {
    let s = Server::start(FAST);
    let t03 = s.connect("t03").await;
    let mut e001 = s.connect("e001").await;
    // e001 may not write first to t03 (not a teacher of 6A)...
    let dm = ChannelId::direct("e001", "t03");
    assert_eq!(
        e001.request(Command::OpenDirect { user: "t03".into() }).await.expect_err("write first").code(),
        Some(ErrorCode::Forbidden)
    );
    // ...but once t03 writes, e001 sees the conversation and may answer.
    t03.request(Command::OpenDirect { user: "e001".into() }).await.expect("open");
    expect_event(&mut e001, 5, |f| matches!(f, ServerFrame::ChannelAdded { info } if info.channel == dm).then_some(()))
        .await;
    assert_eq!(e001.send_message(&dm, "avant").await.expect_err("no message yet").code(), Some(ErrorCode::Forbidden));
    t03.send_message(&dm, "Peux-tu rendre ton devoir ?").await.expect("teacher writes");
    let seq = e001.send_message(&dm, "Oui madame").await.expect("pupil answers").seq;
    assert_eq!(seq, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forum_rules() {
    let s = Server::start(FAST);
    let forum = ChannelId::forum("0750001A", "6A");
    let t01 = s.connect("t01").await;
    let e001 = s.connect("e001").await;
    let e002 = s.connect("e002").await;
    let thread = |title: &str| Command::CreateThread {
        channel: forum.clone(),
        client_id: new_client_id(),
        title: title.into(),
        body: "Consignes".into(),
    };
    let post = |t: u64, body: &str| Command::Send {
        channel: forum.clone(),
        client_id: new_client_id(),
        body: body.into(),
        thread: Some(t),
        reply_to: None,
    };
    assert_eq!(e001.request(thread("x")).await.expect_err("pupil thread").code(), Some(ErrorCode::Forbidden));
    let t = t01.request(thread("Chapitre 3")).await.expect("teacher thread").seq.expect("seq");
    let p = e001.request(post(t, "Question")).await.expect("pupil posts").seq.expect("seq");
    // Reply to a post.
    e002.request(Command::Send {
        channel: forum.clone(),
        client_id: new_client_id(),
        body: "Réponse".into(),
        thread: Some(t),
        reply_to: Some(p),
    })
    .await
    .expect("reply");
    // A post needs a thread.
    let no_thread = Command::Send {
        channel: forum.clone(),
        client_id: new_client_id(),
        body: "x".into(),
        thread: None,
        reply_to: None,
    };
    assert_eq!(e001.request(no_thread).await.expect_err("no thread").code(), Some(ErrorCode::BadRequest));
    // Authors edit their own; others may not; teachers delete any.
    e001.request(Command::Edit { channel: forum.clone(), seq: p, body: "Question (corrigée)".into() })
        .await
        .expect("edit own");
    assert_eq!(
        e002.request(Command::Edit { channel: forum.clone(), seq: p, body: "!".into() })
            .await
            .expect_err("edit other")
            .code(),
        Some(ErrorCode::Forbidden)
    );
    assert_eq!(
        e002.request(Command::Delete { channel: forum.clone(), seq: p }).await.expect_err("delete other").code(),
        Some(ErrorCode::Forbidden)
    );
    t01.request(Command::Delete { channel: forum.clone(), seq: p }).await.expect("moderator deletes");
    // Lock: pupils are refused, the teacher still posts; pin.
    assert_eq!(
        e001.request(Command::SetThread { channel: forum.clone(), thread: t, locked: Some(true), pinned: None })
            .await
            .expect_err("pupil locks")
            .code(),
        Some(ErrorCode::Forbidden)
    );
    t01.request(Command::SetThread { channel: forum.clone(), thread: t, locked: Some(true), pinned: Some(true) })
        .await
        .expect("lock");
    assert_eq!(e001.request(post(t, "encore")).await.expect_err("locked").code(), Some(ErrorCode::Locked));
    t01.request(post(t, "Fin du fil")).await.expect("teacher posts in locked thread");
    // Mute a pupil in a second thread.
    let t2 = t01.request(thread("Chapitre 4")).await.expect("thread").seq.expect("seq");
    t01.request(Command::Mute { channel: forum.clone(), user: "e002".into(), minutes: 30 }).await.expect("mute");
    assert_eq!(e002.request(post(t2, "x")).await.expect_err("muted").code(), Some(ErrorCode::Muted));
    e001.request(post(t2, "pas muet")).await.expect("others post");
    t01.request(Command::Mute { channel: forum.clone(), user: "e002".into(), minutes: 0 }).await.expect("unmute");
    e002.request(post(t2, "de retour")).await.expect("unmuted");
    assert_eq!(
        t01.request(Command::Mute { channel: forum.clone(), user: "e051".into(), minutes: 5 })
            .await
            .expect_err("not in class")
            .code(),
        Some(ErrorCode::NotFound)
    );
    // Pupils of another class, parents and other teachers see nothing of this forum.
    for u in ["e026", "pa001", "t03"] {
        let c = s.connect(u).await;
        let h = c.request(Command::History { channel: forum.clone(), after: Some(0), before: None, limit: None }).await;
        assert_eq!(h.expect_err(u).code(), Some(ErrorCode::Forbidden), "{u} reads 6A's forum");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcements_are_read_only_with_receipts_for_the_author() {
    let s = Server::start(FAST);
    let ann = ChannelId::announcements("0750001A", "6A");
    let t01 = s.connect("t01").await;
    let mut pa001 = s.connect("pa001").await;
    let e001 = s.connect("e001").await;
    let seq = t01.send_message(&ann, "Réunion parents-professeurs jeudi").await.expect("announce").seq.expect("seq");
    expect_event(&mut pa001, 5, |f| matches!(f, ServerFrame::Event { channel, .. } if *channel == ann).then_some(()))
        .await;
    for c in [&pa001, &e001] {
        assert_eq!(c.send_message(&ann, "réponse").await.expect_err("read-only").code(), Some(ErrorCode::Forbidden));
    }
    pa001.request(Command::MarkRead { channel: ann.clone(), seq }).await.expect("read");
    let r = t01.request(Command::Receipts { channel: ann.clone(), seq }).await.expect("receipts");
    let read: Vec<&str> = r.receipts.iter().filter(|r| r.read).map(|r| r.user.as_str()).collect();
    assert_eq!(read, vec!["pa001"]);
    assert_eq!(r.receipts.len(), 25 + 50, "25 pupils of 6A and their 50 parents");
    assert_eq!(
        e001.request(Command::Receipts { channel: ann.clone(), seq }).await.expect_err("pupil").code(),
        Some(ErrorCode::Forbidden)
    );
    // Receipts are the author's alone: another teacher of the class, staff and the
    // school's admin moderate the channel but do not see who read someone else's message.
    for other in ["t05", "s01", "ad01"] {
        let c = s.connect(other).await;
        let r = c.request(Command::Receipts { channel: ann.clone(), seq }).await;
        assert_eq!(r.expect_err(other).code(), Some(ErrorCode::Forbidden), "{other}");
    }
    // A parent of another class does not see it.
    let pa051 = s.connect("pa051").await;
    let h = pa051.request(Command::History { channel: ann, after: Some(0), before: None, limit: None }).await;
    assert_eq!(h.expect_err("other parent").code(), Some(ErrorCode::Forbidden));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_and_nothing_leaks() {
    let s = Server::start(FAST);
    let t01 = s.connect("t01").await;
    let e001 = s.connect("e001").await;
    let g = t01
        .request(Command::CreateGroup {
            client_id: "g1".into(),
            name: "Sortie au musée".into(),
            members: vec!["e001".into(), "e002".into(), "pa001".into()],
        })
        .await
        .expect("group")
        .channel
        .expect("channel");
    let again = t01
        .request(Command::CreateGroup {
            client_id: "g1".into(),
            name: "Sortie au musée".into(),
            members: vec!["e001".into()],
        })
        .await
        .expect("retry");
    assert_eq!(again.channel, Some(g.clone()), "same client id, same group");
    e001.send_message(&g, "On part à quelle heure ?").await.expect("member posts");
    let members = e001.request(Command::Members { channel: g.clone() }).await.expect("members");
    assert_eq!(members.members.len(), 4);
    // A pupil may not put another class's pupil in a group.
    let denied = e001
        .request(Command::CreateGroup {
            client_id: "g2".into(),
            name: "x".into(),
            members: vec!["e002".into(), "e026".into()],
        })
        .await
        .expect_err("denied");
    assert_eq!(denied.code(), Some(ErrorCode::Forbidden));
    // Group size limit.
    let many: Vec<String> = (1..=60).map(|n| format!("e{n:03}")).collect();
    let full = t01.request(Command::CreateGroup { client_id: "g3".into(), name: "x".into(), members: many }).await;
    assert_eq!(full.expect_err("too big").code(), Some(ErrorCode::GroupFull));
    // An outsider gets the same answer for this group as for one that does not exist.
    let e026 = s.connect("e026").await;
    let hist = |ch: &ChannelId| Command::History { channel: ch.clone(), after: Some(0), before: None, limit: None };
    let real = e026.request(hist(&g)).await.expect_err("outsider");
    let fake = e026.request(hist(&ChannelId::group("doesnotexist"))).await.expect_err("nonexistent");
    assert_eq!((real.code(), format!("{real}")), (fake.code(), format!("{fake}")));
    // Likewise a user who does not exist and one the rules keep apart.
    let apart = e026.request(Command::OpenDirect { user: "e001".into() }).await.expect_err("other class");
    let ghost = e026.request(Command::OpenDirect { user: "ghost".into() }).await.expect_err("nobody");
    assert_eq!(format!("{apart}"), format!("{ghost}"));
    let m = e026.request(Command::Members { channel: g.clone() }).await.expect_err("members of outsider");
    assert_eq!(m.code(), Some(ErrorCode::Forbidden));
    // Sync lists only what the user sees.
    let sync = e026.request(Command::Sync { positions: vec![], limit: None }).await.expect("sync");
    assert!(sync.channels.iter().all(|c| c.channel != g));
    // Leaving.
    e001.request(Command::Leave { channel: g.clone() }).await.expect("leave");
    assert_eq!(e001.send_message(&g, "x").await.expect_err("left").code(), Some(ErrorCode::Forbidden));
}

//! Reporting and the moderation audit trail over real sockets: a report reaches the
//! right moderators and no one else, keeps the reported content when its author deletes
//! the message, and is closed by a moderator; the audit trail lists each moderation act
//! (mute, lock, a post of another deleted, a report closed, a suspension, a directory
//! import) with who, when and the original content.

use crate::harness::{FAST, Server};
use preau_client::{http_post, http_with};
use preau_proto::{ChannelId, Command, ErrorCode, ServerFrame};
use std::time::Duration;

async fn alerts(c: &mut preau_client::Client, kind: &str) -> usize {
    let mut n = 0;
    while let Some(f) = c.next_event(Duration::from_millis(400)).await {
        if matches!(&f, ServerFrame::Alert { kind: k, .. } if k == kind) {
            n += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_reach_their_moderators_and_every_act_is_in_the_audit_trail() {
    let s = Server::start(FAST);
    let (e001, e002) = (s.connect("e001").await, s.connect("e002").await);
    let mut s01 = s.connect("s01").await; // the direction
    let mut t01 = s.connect("t01").await; // teaches 6A
    let t03 = s.connect("t03").await; // teaches 4C only
    let dm = e002.request(Command::OpenDirect { user: "e001".into() }).await.expect("open").channel.expect("dm");
    let seq = e002.send_message(&dm, "message blessant").await.expect("send").seq.expect("seq");

    // e001 reports it; the direction is told, a teacher is not.
    let r = e001.request(Command::Report { channel: dm.clone(), seq, reason: "insulte".into() }).await.expect("report");
    let id = r.report.expect("report id");
    assert_eq!(alerts(&mut s01, "report").await, 1);
    assert_eq!(alerts(&mut t01, "report").await, 0);
    // Not one's own, not a message one cannot read.
    let own = e002.request(Command::Report { channel: dm.clone(), seq, reason: "x".into() }).await;
    assert_eq!(own.expect_err("own").code(), Some(ErrorCode::BadRequest));
    let blind = t03.request(Command::Report { channel: dm.clone(), seq, reason: "x".into() }).await;
    assert_eq!(blind.expect_err("not a member").code(), Some(ErrorCode::Forbidden));
    // The author deletes it: the moderators still see what it said.
    e002.request(Command::Delete { channel: dm.clone(), seq }).await.expect("author deletes");
    let q = s01.request(Command::Reports {}).await.expect("queue");
    assert_eq!(q.reports.len(), 1);
    assert_eq!((q.reports[0].content.as_str(), q.reports[0].reporter.as_str()), ("message blessant", "e001"));
    assert!(t01.request(Command::Reports {}).await.expect("queue").reports.is_empty(), "not a teacher's to see");
    let not_his = t01.request(Command::CloseReport { report: id.clone(), action: "dismiss".into() }).await;
    assert_eq!(not_his.expect_err("not his").code(), Some(ErrorCode::NotFound));
    s01.request(Command::CloseReport { report: id.clone(), action: "delete".into() }).await.expect("close");
    assert!(s01.request(Command::Reports {}).await.expect("queue").reports.is_empty());

    // A forum post reported reaches the class's teachers, not the direction.
    let forum = ChannelId::forum("0750001A", "6A");
    let thread = t01
        .request(Command::CreateThread {
            channel: forum.clone(),
            client_id: "t".into(),
            title: "Sujet".into(),
            body: "Lancez-vous".into(),
        })
        .await
        .expect("thread")
        .seq;
    let post = Command::Send {
        channel: forum.clone(),
        client_id: "p".into(),
        body: "hors sujet".into(),
        thread,
        reply_to: None,
    };
    let pseq = e002.request(post).await.expect("post").seq.expect("seq");
    let _ = alerts(&mut t01, "report").await;
    e001.request(Command::Report { channel: forum.clone(), seq: pseq, reason: "spam".into() }).await.expect("report");
    assert_eq!(alerts(&mut t01, "report").await, 1);
    assert_eq!(alerts(&mut s01, "report").await, 0);
    assert_eq!(t01.request(Command::Reports {}).await.expect("queue").reports.len(), 1);

    // Moderation acts: delete the post, mute its author, lock the thread.
    t01.request(Command::Delete { channel: forum.clone(), seq: pseq }).await.expect("moderator deletes");
    t01.request(Command::Mute { channel: forum.clone(), user: "e002".into(), minutes: 30 }).await.expect("mute");
    t01.request(Command::SetThread {
        channel: forum.clone(),
        thread: thread.expect("thread"),
        locked: Some(true),
        pinned: None,
    })
    .await
    .expect("lock");
    let admin = s.token("ad01").await;
    let (st, _) = http_with(
        &s.addr,
        "PUT",
        "/admin/suspension",
        &admin,
        r#"{"scope":"school","suspended":true,"reason":"essai"}"#,
    )
    .await
    .expect("suspend");
    assert_eq!(st, 200);
    let (st, _) = http_with(&s.addr, "PUT", "/admin/suspension", &admin, r#"{"scope":"school","suspended":false}"#)
        .await
        .expect("lift");
    assert_eq!(st, 200);
    let doc = serde_json::to_string(&preau_directory::demo::demo_doc()).expect("json");
    assert_eq!(http_post(&s.addr, "/admin/directory", &admin, &doc).await.expect("import").0, 200);

    // The trail, for the school's admin; a pupil may not read it.
    let pupil = s.token("e001").await;
    assert_eq!(http_with(&s.addr, "GET", "/admin/audit", &pupil, "").await.expect("get").0, 403);
    let (st, bad) = http_with(&s.addr, "GET", "/admin/audit?since=hier", &admin, "").await.expect("get");
    assert!(st == 400 && bad.contains("bad_since"), "a clear error: {st} {bad}");
    let (st, body) = http_with(&s.addr, "GET", "/admin/audit", &admin, "").await.expect("get");
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let entries = v["entries"].as_array().expect("entries");
    let actions: Vec<&str> = entries.iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(
        actions,
        vec!["report_closed", "delete", "mute", "thread_state", "suspension", "suspension", "directory_import"]
    );
    let by = |a: &str| entries.iter().find(|e| e["action"] == a).expect(a);
    assert_eq!(
        (by("report_closed")["actor"].as_str(), by("report_closed")["original"].as_str()),
        (Some("s01"), Some("message blessant"))
    );
    assert_eq!(
        (by("delete")["subject"].as_str(), by("delete")["original"].as_str()),
        (Some("e002"), Some("hors sujet"))
    );
    assert_eq!(by("mute")["subject"], "e002");
    assert_eq!(by("thread_state")["detail"], "locked, unpinned");
    assert_eq!(by("directory_import")["actor"], "ad01");
    assert!(entries.iter().all(|e| e["at_ms"].as_i64().is_some_and(|t| t > 0)));
}

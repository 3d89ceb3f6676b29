//! The data lifecycle from the outside (docs/data-protection.md): erasure on request
//! through the admin API, and a purge killed with SIGKILL at several points and resumed.

use crate::harness::{FAST, Server};
use preau_client::{http_post, http_with};
use preau_directory::demo;
use preau_proto::{ChannelId, Command, EntryKind};
use std::process::Command as Proc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_erases_a_person_on_request_and_others_may_not() {
    let s = Server::start(FAST);
    let e001 = s.connect("e001").await;
    let dm = e001.request(Command::OpenDirect { user: "e002".into() }).await.expect("open").channel.expect("dm");
    e001.send_message(&dm, "Mon secret de e001").await.expect("send");
    let (pupil, admin) = (s.token("e002").await, s.token("ad01").await);
    let path = "/admin/users/e001/data";
    let (status, body) = http_with(&s.addr, "DELETE", path, &pupil, "").await.expect("delete");
    assert!(status == 403 && body.contains("not_admin"), "{status} {body}");
    let (status, body) =
        http_with(&s.addr, "DELETE", &format!("{path}?dry_run=maybe"), &admin, "").await.expect("delete");
    assert!(status == 400 && body.contains("bad_dry_run"), "{status} {body}");
    let (status, body) = http_with(&s.addr, "DELETE", &format!("{path}?posts=some"), &admin, "").await.expect("delete");
    assert!(status == 400 && body.contains("bad_posts"), "{status} {body}");
    let (status, body) = http_with(&s.addr, "DELETE", &format!("{path}?dry_run=true"), &admin, "").await.expect("dry");
    assert_eq!(status, 200, "{body}");
    let dry: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert!(dry["rows"].as_u64() > Some(0) && dry["dry_run"] == true, "{body}");
    let (status, body) = http_with(&s.addr, "DELETE", path, &admin, "").await.expect("erase");
    assert_eq!(status, 200, "{body}");
    let done: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(done["rows"], dry["rows"], "the dry run said what would change");
    let pseudonym = done["pseudonym"].as_str().expect("pseudonym").to_owned();
    // The other side stays in the directory: the conversation stays, its author renamed.
    let e002 = s.connect("e002").await;
    let h = e002
        .request(Command::History { channel: dm.clone(), after: Some(0), before: None, limit: None })
        .await
        .expect("history");
    let msgs: Vec<_> = h.entries.iter().filter(|e| e.kind == EntryKind::Message).collect();
    assert!(msgs.len() == 1 && msgs[0].author == pseudonym && msgs[0].client_id.is_none(), "{msgs:?}");
    // Recorded, without the person's id.
    let (status, trail) = http_with(&s.addr, "GET", "/admin/audit", &admin, "").await.expect("audit");
    assert_eq!(status, 200);
    assert!(trail.contains("personal_data_erased") && trail.contains(&pseudonym), "{trail}");
    assert!(!trail.contains("e001"), "the trail does not name the person: {trail}");
}

/// The rows of `author` and of `pseudonym` prefix in the data folder's database.
fn authors(db: &std::path::Path, who: &str) -> i64 {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open");
    c.query_row("SELECT COUNT(*) FROM entries WHERE author LIKE ?1", [who], |r| r.get(0)).expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_killed_at_any_point_resumes_and_ends_the_same() {
    let mut s = Server::start(FAST);
    let ann = ChannelId::forum("0750001A", "6A");
    let t01 = s.connect("t01").await;
    let thread = t01
        .request(Command::CreateThread {
            channel: ann.clone(),
            client_id: "t".into(),
            title: "Sujet".into(),
            body: "x".into(),
        })
        .await
        .expect("thread")
        .seq
        .expect("seq");
    let e001 = s.connect("e001").await;
    for i in 0..1500 {
        let send = Command::Send {
            channel: ann.clone(),
            client_id: format!("k{i}"),
            body: format!("réponse {i} de e001"),
            thread: Some(thread),
            reply_to: None,
        };
        e001.request(send).await.expect("post");
    }
    // The school's next import no longer lists e001.
    let mut doc = demo::demo_doc();
    doc.users.retain(|u| u.id != "e001");
    doc.links.retain(|l| l.child != "e001");
    let admin = s.token("ad01").await;
    let (status, body) = http_post(&s.addr, "/admin/directory", &admin, &serde_json::to_string(&doc).expect("json"))
        .await
        .expect("import");
    assert_eq!(status, 200, "{body}");
    drop((t01, e001));
    s.term();
    let data = s.data_path().join("data");
    let db = data.join("preau.db");
    assert_eq!(authors(&db, "e001"), 1500);
    let purge = || {
        let mut c = Proc::new(env!("CARGO_BIN_EXE_preau-gateway"));
        c.arg("--data-dir").arg(&data).args(["--departed-retention-days", "0", "purge"]).env("PREAU_LOG", "warn");
        c.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        c
    };
    // Killed at several points of its run (start-up, the erasure's steps, the end).
    for ms in [150u64, 300, 450, 600, 800] {
        let mut child = purge().spawn().expect("purge");
        std::thread::sleep(Duration::from_millis(ms));
        let _ = child.kill();
        let _ = child.wait();
    }
    let st = purge().status().expect("purge to the end");
    assert!(st.success());
    assert_eq!(authors(&db, "e001"), 0, "nothing authored by e001 is left");
    assert_eq!(authors(&db, "ancien-%"), 1500, "every post kept once, pseudonymised");
    let c = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open");
    let (n, max): (i64, i64) = c
        .query_row("SELECT COUNT(*), MAX(seq) FROM entries WHERE channel = ?1", [ann.as_str()], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("count");
    assert_eq!((n, max), (1501, 1501), "the forum's log is whole and gapless");
    let left: i64 =
        c.query_row("SELECT COUNT(*) FROM records WHERE kind = 'departed'", [], |r| r.get(0)).expect("count");
    assert_eq!(left, 0, "the departure is done");
    // Run again: nothing more to do.
    let out = purge().stdout(std::process::Stdio::piped()).output().expect("again");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the report is JSON");
    assert_eq!(report["purged"].as_array().map(Vec::len), Some(0), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_holds_every_message_a_person_sent_and_received() {
    let s = Server::start(FAST);
    let (e001, e002, t01) = (s.connect("e001").await, s.connect("e002").await, s.connect("t01").await);
    let dm = e001.request(Command::OpenDirect { user: "e002".into() }).await.expect("open").channel.expect("dm");
    for i in 0..700 {
        e001.send_message(&dm, &format!("envoyé {i}")).await.expect("send");
    }
    e002.send_message(&dm, "reçu de e002").await.expect("answer");
    let forum = ChannelId::forum("0750001A", "6A");
    let create = Command::CreateThread {
        channel: forum.clone(),
        client_id: "t".into(),
        title: "Sujet".into(),
        body: "x".into(),
    };
    let thread = t01.request(create).await.expect("thread").seq.expect("seq");
    let post = Command::Send {
        channel: forum.clone(),
        client_id: "p".into(),
        body: "ma réponse au forum".into(),
        thread: Some(thread),
        reply_to: None,
    };
    e001.request(post).await.expect("forum post");
    e001.request(Command::MarkRead { channel: dm.clone(), seq: 701 }).await.expect("read");
    let admin = s.token("ad01").await;
    let (status, body) =
        http_with(&s.addr, "GET", "/admin/users/e002/export", &s.token("e001").await, "").await.expect("get");
    assert_eq!(status, 403, "{body}");
    let (status, body) = http_with(&s.addr, "GET", "/admin/users/e001/export", &admin, "").await.expect("export");
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).expect("one JSON document");
    assert_eq!(doc["format"], "preau-export/1");
    assert_eq!(doc["directory_record"]["id"], "e001");
    let convs = doc["conversations"].as_array().expect("conversations");
    let c = convs.iter().find(|c| c["channel"] == dm.to_string()).expect("the conversation");
    let bodies: Vec<&str> =
        c["entries"].as_array().expect("entries").iter().filter_map(|e| e["body"].as_str()).collect();
    assert_eq!(bodies.len(), 701, "every message, sent and received, across pages");
    assert!(bodies.contains(&"envoyé 699") && bodies.contains(&"reçu de e002"));
    let posts = doc["posts"].as_array().expect("posts");
    assert!(posts.iter().any(|p| p["entry"]["body"] == "ma réponse au forum" && p["channel"] == forum.to_string()));
    assert!(posts.iter().all(|p| p["channel"] != dm.to_string()), "conversations are not repeated in posts");
    assert_eq!(doc["read_markers"][0]["seq"], 701);
    let (_, trail) = http_with(&s.addr, "GET", "/admin/audit", &admin, "").await.expect("audit");
    assert!(trail.contains("personal_data_exported") && !trail.contains("\"e001\""), "{trail}");
}

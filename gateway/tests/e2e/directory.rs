//! Directory re-import: changes apply at once, open sessions included.

use crate::harness::{FAST, Server, expect_event};
use preau_client::http_post;
use preau_directory::demo;
use preau_proto::{ChannelId, Command, ErrorCode, ServerFrame};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pupil_moved_to_another_class_loses_the_old_class_at_once() {
    let s = Server::start(FAST);
    let mut e001 = s.connect("e001").await;
    let t05 = s.connect("t05").await; // teaches 6A only
    let mut doc = demo::demo_doc();
    for u in doc.users.iter_mut().filter(|u| u.id == "e001") {
        u.classes = vec!["5B".into()];
    }
    let admin = s.token("ad01").await;
    let body = serde_json::to_string(&doc).expect("json");
    // Only an administrator may import.
    let pupil = s.token("e002").await;
    let (status, _) = http_post(&s.addr, "/admin/directory", &pupil, &body).await.expect("post");
    assert_eq!(status, 403);
    let (status, resp) = http_post(&s.addr, "/admin/directory", &admin, "{\"users\": 3}").await.expect("post");
    assert!(status == 400 && resp.contains("bad_request"), "{status} {resp}");
    let mut broken = doc.clone();
    broken.users[0].classes = vec!["nope".into()];
    let (status, resp) = http_post(&s.addr, "/admin/directory", &admin, &serde_json::to_string(&broken).expect("json"))
        .await
        .expect("post");
    assert!(status == 400 && resp.contains("nope"), "{status} {resp}");
    let (status, resp) = http_post(&s.addr, "/admin/directory", &admin, &body).await.expect("post");
    assert_eq!(status, 200, "{resp}");
    let mut removed = Vec::new();
    let mut added = Vec::new();
    while removed.len() < 2 || added.len() < 2 {
        match e001.next_event(std::time::Duration::from_secs(5)).await.expect("directory events") {
            ServerFrame::ChannelRemoved { channel } => removed.push(channel.to_string()),
            ServerFrame::ChannelAdded { info } => added.push(info.channel.to_string()),
            _ => {}
        }
    }
    removed.sort();
    added.sort();
    assert_eq!(removed, vec!["ann:0750001A:6A", "forum:0750001A:6A"]);
    assert_eq!(added, vec!["ann:0750001A:5B", "forum:0750001A:5B"]);
    // The old class's announcements no longer reach the open session.
    t05.send_message(&ChannelId::announcements("0750001A", "6A"), "6A seulement").await.expect("send");
    let h = e001
        .request(Command::History {
            channel: ChannelId::forum("0750001A", "6A"),
            after: Some(0),
            before: None,
            limit: None,
        })
        .await;
    assert_eq!(h.expect_err("old forum").code(), Some(ErrorCode::Forbidden));
    let t01 = s.connect("t01").await;
    t01.send_message(&ChannelId::announcements("0750001A", "5B"), "bienvenue en 5B").await.expect("send");
    let got = expect_event(&mut e001, 5, |f| match f {
        ServerFrame::Event { channel, entry } => Some((channel.to_string(), entry.body.clone())),
        _ => None,
    })
    .await;
    assert_eq!(got, ("ann:0750001A:5B".to_owned(), Some("bienvenue en 5B".to_owned())));
    // The new directory survives a restart.
    drop(e001);
    let mut s = s;
    s.restart();
    let e001 = s.connect("e001").await;
    let sync = e001.request(Command::Sync { positions: vec![], limit: None }).await.expect("sync");
    let mut chans: Vec<String> = sync.channels.iter().map(|c| c.channel.to_string()).collect();
    chans.sort();
    assert_eq!(chans, vec!["ann:0750001A:5B", "forum:0750001A:5B"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_users_are_disconnected() {
    let s = Server::start(FAST);
    let mut e075 = s.connect("e075").await;
    let mut doc = demo::demo_doc();
    doc.users.retain(|u| u.id != "e075");
    doc.links.retain(|l| l.child != "e075");
    let admin = s.token("ad01").await;
    let (status, _) = http_post(&s.addr, "/admin/directory", &admin, &serde_json::to_string(&doc).expect("json"))
        .await
        .expect("post");
    assert_eq!(status, 200);
    while e075.next_event(std::time::Duration::from_secs(5)).await.is_some() {}
    assert_eq!(e075.close_reason().map(|r| r.0), Some(preau_proto::close::ACCOUNT_REMOVED));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_import_command_loads_a_directory_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut doc = demo::demo_doc();
    doc.schools[0].name = "Collège importé".into();
    doc.users.retain(|u| u.id != "t07");
    let file = dir.path().join("annuaire.json");
    std::fs::write(&file, serde_json::to_string(&doc).expect("json")).expect("write");
    let data = dir.path().join("data");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_preau-gateway"))
            .args(args)
            .arg("--data-dir")
            .arg(&data)
            .env("PREAU_LOG", "warn")
            .output()
            .expect("run preau-gateway")
    };
    let out = run(&["import", "--file", file.to_str().expect("path")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(demo::SCHOOL));
    // t07 is gone, t01 is still there.
    assert!(!run(&["token", "--user", "t07"]).status.success());
    assert!(run(&["token", "--user", "t01"]).status.success());
    // A broken file is refused with the problem named, and changes nothing.
    std::fs::write(&file, "{\"users\": [{\"id\": \"x\"}]}").expect("write");
    let out = run(&["import", "--file", file.to_str().expect("path")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a directory document"));
    assert!(run(&["token", "--user", "t01"]).status.success());
}

/// `import` into a fresh folder used to load the demo school first (and write a
/// development key there), so a production folder started with the demo's 300 people in
/// it: now it holds the imported schools only, and needs no token keys.
#[test]
fn the_import_command_never_brings_the_demo_school_into_a_new_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut doc = demo::demo_doc();
    doc.schools[0].uai = "0750002B".into();
    for c in &mut doc.classes {
        c.school = "0750002B".into();
    }
    for u in &mut doc.users {
        u.school = "0750002B".into();
    }
    for g in &mut doc.groups {
        g.school = "0750002B".into();
    }
    let file = dir.path().join("annuaire.json");
    std::fs::write(&file, serde_json::to_string(&doc).expect("json")).expect("write");
    let data = dir.path().join("data");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_preau-gateway"))
        .args(["import", "--file"])
        .arg(&file)
        .arg("--data-dir")
        .arg(&data)
        .env("PREAU_LOG", "warn")
        .output()
        .expect("run preau-gateway");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let db = rusqlite::Connection::open(data.join("preau.db")).expect("open");
    let schools: Vec<String> = db
        .prepare("SELECT school FROM directory ORDER BY school")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(schools, vec!["0750002B".to_owned()], "the imported school only, no demo school");
    assert!(!data.join("dev-signing-key").exists(), "no development key in a production folder");
}

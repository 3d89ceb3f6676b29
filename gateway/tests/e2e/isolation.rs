//! School isolation: class ids are a school's own. A second school imported through the
//! admin endpoint with its own `6A` gets its own channels and live room, and nothing of
//! the first school's `6A` changes or leaks.

use crate::harness::{FAST, Server};
use preau_client::http_post;
use preau_directory::{ClassDoc, DirectoryDoc, Profile, SchoolDoc, UserDoc};
use preau_proto::{ChannelId, Command, ErrorCode, ServerFrame};
use std::time::Duration;

const A: &str = "0750001A";
const B: &str = "0930002B";

fn user(id: &str, profile: Profile, classes: &[&str]) -> UserDoc {
    UserDoc {
        id: id.into(),
        school: B.into(),
        profile,
        name: format!("Utilisateur {id}"),
        classes: classes.iter().map(|c| c.to_string()).collect(),
        groups: vec![],
    }
}

fn school_b(with_class: bool) -> DirectoryDoc {
    let mut users = vec![user("b-ad01", Profile::Admin, &[])];
    let mut classes = vec![];
    if with_class {
        classes.push(ClassDoc { id: "6A".into(), school: B.into(), name: "6e A (B)".into() });
        users.push(user("b-e001", Profile::Pupil, &["6A"]));
        users.push(user("b-t01", Profile::Teacher, &["6A"]));
    }
    DirectoryDoc {
        schools: vec![SchoolDoc {
            uai: B.into(),
            name: "Collège B".into(),
            policy: Default::default(),
            data: Default::default(),
        }],
        classes,
        users,
        ..DirectoryDoc::default()
    }
}

fn operator_token(s: &Server) -> String {
    let key = std::fs::read(s.data_path().join("data/dev-signing-key")).expect("dev key");
    preau_auth::Issuer::hs256(&key).sign(&preau_auth::Claims {
        sub: "operator".into(),
        profile: "admin".into(),
        school: "*".into(),
        exp: preau_auth::now_secs() + 600,
        iat: None,
        iss: None,
        aud: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_school_with_the_same_class_id_changes_nothing_of_the_first() {
    let s = Server::start(FAST);
    let mut a_pupil = s.connect("e001").await;
    let a_teacher = s.connect("t01").await;
    let forum_a = ChannelId::forum(A, "6A");
    let ann_a = ChannelId::announcements(A, "6A");
    // The operator creates school B with its admin; B's admin then imports B with a `6A`.
    let op = operator_token(&s);
    let body = serde_json::to_string(&school_b(false)).expect("json");
    let (status, resp) = http_post(&s.addr, "/admin/directory", &op, &body).await.expect("post");
    assert_eq!(status, 200, "{resp}");
    let b_admin = s.token("b-ad01").await;
    let body = serde_json::to_string(&school_b(true)).expect("json");
    let (status, resp) = http_post(&s.addr, "/admin/directory", &b_admin, &body).await.expect("post");
    assert_eq!(status, 200, "{resp}");
    // B's admin cannot touch A.
    let mut a_doc = preau_directory::demo::demo_doc();
    a_doc.classes.retain(|c| c.id != "6A");
    let (status, _) = http_post(&s.addr, "/admin/directory", &b_admin, &serde_json::to_string(&a_doc).expect("json"))
        .await
        .expect("post");
    assert_eq!(status, 403, "an admin imports their own school only");

    // A's pupil keeps A's 6A: no channel_removed came.
    while let Some(f) = a_pupil.next_event(Duration::from_millis(500)).await {
        assert!(!matches!(f, ServerFrame::ChannelRemoved { .. }), "A's members keep their channels: {f:?}");
    }
    let sync = a_pupil.request(Command::Sync { positions: vec![], limit: None }).await.expect("sync");
    let chans: Vec<String> = sync.channels.iter().map(|c| c.channel.to_string()).collect();
    assert!(chans.contains(&forum_a.to_string()) && chans.contains(&ann_a.to_string()), "{chans:?}");

    // B's pupil sees B's 6A only, and is refused A's like a channel that does not exist.
    let b_pupil = s.connect("b-e001").await;
    let sync = b_pupil.request(Command::Sync { positions: vec![], limit: None }).await.expect("sync");
    let mut chans: Vec<String> = sync.channels.iter().map(|c| c.channel.to_string()).collect();
    chans.sort();
    assert_eq!(chans, vec![format!("ann:{B}:6A"), format!("forum:{B}:6A")]);
    a_teacher.send_message(&ann_a, "Sortie au musée jeudi").await.expect("A's announcement");
    for ch in [&forum_a, &ann_a] {
        let h =
            b_pupil.request(Command::History { channel: ch.clone(), after: Some(0), before: None, limit: None }).await;
        assert_eq!(h.expect_err("A's channel").code(), Some(ErrorCode::Forbidden), "{ch}");
    }
    let post = b_pupil
        .request(Command::Send {
            channel: forum_a.clone(),
            client_id: "x".into(),
            body: "intrus".into(),
            thread: Some(1),
            reply_to: None,
        })
        .await;
    assert_eq!(post.expect_err("A's forum").code(), Some(ErrorCode::Forbidden));
    // Each school's announcement reaches its own class only.
    let b_teacher = s.connect("b-t01").await;
    b_teacher.send_message(&ChannelId::announcements(B, "6A"), "Réunion B").await.expect("B's announcement");
    let h = a_pupil
        .request(Command::History { channel: ann_a.clone(), after: Some(0), before: None, limit: None })
        .await
        .expect("A's history");
    let bodies: Vec<Option<String>> = h.entries.iter().map(|e| e.body.clone()).collect();
    assert_eq!(bodies, vec![Some("Sortie au musée jeudi".to_owned())], "nothing of B in A's 6A");

    // Live classes: B's pupil gets B's room, never a ticket for A's.
    let tok = s.token("b-e001").await;
    let (status, body) = http_post(&s.addr, "/rooms/6A/token", &tok, "").await.expect("post");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let key = std::fs::read(s.data_path().join("data/dev-signing-key")).expect("dev key");
    let claims =
        preau_auth::Verifier::hs256(&key).verify_room(v["token"].as_str().expect("token")).expect("room token");
    assert_eq!((claims.school.as_str(), claims.room.as_str(), claims.role.as_str()), (B, "class:6A", "participant"));
    let tok = s.token("e001").await;
    let (_, body) = http_post(&s.addr, "/rooms/6A/token", &tok, "").await.expect("post");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let claims =
        preau_auth::Verifier::hs256(&key).verify_room(v["token"].as_str().expect("token")).expect("room token");
    assert_eq!(claims.school, A, "each school's 6A is its own room");
}

//! Room tokens for live classes: the gateway checks the directory and hands a short-lived
//! token with the role; everyone else is refused.

use crate::harness::Server;
use preau_client::http_post;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_tokens_follow_the_directory() {
    let s = Server::start(&[]);
    let key = std::fs::read(s.data_path().join("data/dev-signing-key")).expect("dev key");
    let sfu_side = preau_auth::Verifier::hs256(&key);
    let rows = [
        ("t01", "6A", Some("host")),
        ("e001", "6A", Some("participant")),
        ("s01", "6A", Some("observer")),
        ("pa001", "6A", None),
        ("t03", "6A", None),
        ("e026", "6A", None),
        ("t01", "nope", None),
        ("s01", "assembly", Some("host")),
        ("e070", "assembly", Some("participant")),
        ("pa002", "assembly", None),
    ];
    let mut refusals = Vec::new();
    for (user, class, role) in rows {
        let token = s.token(user).await;
        let (status, body) = http_post(&s.addr, &format!("/rooms/{class}/token"), &token, "").await.expect("post");
        match role {
            Some(role) => {
                assert_eq!(status, 200, "{user} in {class}: {body}");
                let v: serde_json::Value = serde_json::from_str(&body).expect("json");
                let claims = sfu_side.verify_room(v["token"].as_str().expect("token")).expect("the SFU accepts it");
                assert_eq!((claims.sub.as_str(), claims.role.as_str()), (user, role));
                let room = if class == "assembly" { "assembly:0750001A".to_owned() } else { format!("class:{class}") };
                assert_eq!(claims.room, room);
                assert_eq!(v["sfu"], "ws://127.0.0.1:8090/ws", "without a registry: the configured SFU");
                assert!(claims.exp <= preau_auth::now_secs() + 300, "short-lived");
                // It is not a user token.
                let c = preau_client::Client::connect(
                    &s.addr,
                    v["token"].as_str().expect("token"),
                    preau_proto::Encoding::Json,
                )
                .await;
                assert!(
                    matches!(c, Err(preau_client::ClientError::Http { status: 401, .. })),
                    "{user}: room token accepted as a user token"
                );
            }
            None => {
                assert_eq!(status, 403, "{user} in {class}: {body}");
                refusals.push(serde_json::from_str::<serde_json::Value>(&body).expect("json")["message"].clone());
            }
        }
    }
    refusals.dedup();
    assert_eq!(refusals.len(), 1, "one answer for every refusal, unknown classes included");
    let (status, _) = http_post(&s.addr, "/rooms/6A/token", "forged", "").await.expect("post");
    assert_eq!(status, 401);
    // The classroom page that uses all this.
    let (status, page) = preau_client::http_get(&s.addr, "/classroom").await.expect("get");
    assert_eq!(status, 200);
    assert!(page.contains("/rooms/") && page.contains("window.preau"), "the classroom page");
}

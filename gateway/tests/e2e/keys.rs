//! Issue 16: the portal's keys rotate behind its JWKS URL (`--jwks-url`). Tokens signed
//! with a new key are accepted without a restart; a key removed from the set stops
//! working at the next refresh; while the portal is down the last good set stays, and a
//! restart then starts from the cached copy.

use crate::harness::Server;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey};
use preau_auth::Issuer;
use preau_client::Client;
use preau_directory::demo;
use preau_proto::Encoding;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ED: &[u8] = include_bytes!("../../../crates/auth/testdata/ed.key");
const EC: &[u8] = include_bytes!("../../../crates/auth/testdata/ec.key");

fn jwk(pem: &[u8], alg: Algorithm, kid: &str) -> Jwk {
    let key = match alg {
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
        _ => EncodingKey::from_ec_pem(pem),
    }
    .expect("key");
    let mut j = Jwk::from_encoding_key(&key, alg).expect("jwk");
    j.common.key_id = Some(kid.to_owned());
    j
}

/// The portal: serves whatever set it holds, or 503 when `None`.
async fn portal(doc: Arc<Mutex<Option<String>>>) -> String {
    let app = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let doc = doc.clone();
            async move {
                match doc.lock().expect("lock").clone() {
                    Some(d) => (axum::http::StatusCode::OK, d),
                    None => (axum::http::StatusCode::SERVICE_UNAVAILABLE, "maintenance".to_owned()),
                }
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/.well-known/jwks.json", l.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(l, app).await });
    url
}

async fn accepted(s: &Server, token: &str) -> bool {
    Client::connect(&s.addr, token, Encoding::Json).await.is_ok()
}

async fn until(s: &Server, token: &str, want: bool, secs: u64) -> bool {
    for _ in 0..secs * 4 {
        if accepted(s, token).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portals_keys_rotate_without_a_restart() {
    let root = tempfile::tempdir().expect("dir");
    // A production folder: the demo school imported as a real one would be.
    let file = root.path().join("annuaire.json");
    std::fs::write(&file, serde_json::to_string(&demo::demo_doc()).expect("json")).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_preau-gateway"))
        .args(["import", "--file"])
        .arg(&file)
        .arg("--data-dir")
        .arg(root.path().join("data"))
        .output()
        .expect("import");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let set = |keys: Vec<Jwk>| Some(serde_json::to_string(&JwkSet { keys }).expect("json"));
    let doc = Arc::new(Mutex::new(set(vec![jwk(ED, Algorithm::EdDSA, "ent-2026")])));
    let url = portal(doc.clone()).await;
    let flags = ["--jwks-url", &url, "--jwks-refresh-seconds", "2", "--jwks-min-interval-seconds", "1"];
    let mut s = Server::start_in(root.path(), &flags, "gateway.log");

    let old = Issuer::from_pem(Algorithm::EdDSA, ED, Some("ent-2026".into())).expect("old key");
    let new = Issuer::from_pem(Algorithm::ES256, EC, Some("ent-2027".into())).expect("new key");
    let (t_old, t_new) = (old.issue("e001", "pupil", demo::SCHOOL, 600), new.issue("e001", "pupil", demo::SCHOOL, 600));
    assert!(accepted(&s, &t_old).await, "the portal's current key");
    assert!(!accepted(&s, &t_new).await, "a key the portal has not published");

    // The portal publishes its next key beside the current one: tokens signed with it are
    // accepted at once (an unknown kid fetches the set again), without a restart.
    *doc.lock().expect("lock") =
        set(vec![jwk(ED, Algorithm::EdDSA, "ent-2026"), jwk(EC, Algorithm::ES256, "ent-2027")]);
    assert!(until(&s, &t_new, true, 5).await, "the new key accepted without a restart");
    assert!(accepted(&s, &t_old).await, "both keys during the overlap");

    // The old key is withdrawn: it stops working at the next scheduled refresh.
    *doc.lock().expect("lock") = set(vec![jwk(EC, Algorithm::ES256, "ent-2027")]);
    assert!(until(&s, &t_old, false, 8).await, "the removed key is refused after a refresh");

    // The portal goes down: the last good set stays.
    *doc.lock().expect("lock") = None;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(accepted(&s, &t_new).await, "the last good set stays while the portal is down");
    assert!(!accepted(&s, &t_old).await);
    // And a gateway restarted meanwhile starts on its cached copy.
    s.restart();
    assert!(accepted(&s, &t_new).await, "restarted on the cached keys");
    let log = std::fs::read_to_string(root.path().join("gateway.log")).expect("log");
    assert!(log.contains("portal keys"), "the outage is logged: {log}");
}

/// A portal that cannot be reached at the first start, with nothing cached, stops the
/// start with the URL named.
#[test]
fn an_unreachable_portal_at_first_start_names_the_url() {
    let root = tempfile::tempdir().expect("dir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_preau-gateway"))
        .args(["--listen", "127.0.0.1:0", "--jwks-url", "http://127.0.0.1:9/keys.json", "--data-dir"])
        .arg(root.path().join("data"))
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--jwks-url") && err.contains("http://127.0.0.1:9/keys.json"), "{err}");
}

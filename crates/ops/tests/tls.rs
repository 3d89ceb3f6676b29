//! TLS termination: a client trusting the test's CA reaches the server by name; a new
//! certificate written in place is served without a restart; a broken one is refused and
//! the previous one kept; files errors name the file.

use preau_ops::testing::TestCa;
use preau_ops::tls::{Listener, Reloading, TlsFiles};
use rustls_pki_types::ServerName;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn serve(files: TlsFiles) -> SocketAddr {
    let tls = Reloading::start(files).expect("certificate loads");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let listener = Listener::new(tcp, Some(tls)).expect("listener");
    let addr = listener.local_addr();
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "bonjour" }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// GETs / over TLS as `preau.test`; returns the body and the leaf the server showed.
async fn get(ca: &TestCa, addr: SocketAddr) -> Result<(String, Vec<u8>), String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(ca.client_config());
    let name = ServerName::try_from("preau.test").expect("name");
    let mut tls = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
    let leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default();
    tls.write_all(b"GET / HTTP/1.1\r\nHost: preau.test\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    Ok((String::from_utf8_lossy(&out).into_owned(), leaf))
}

#[tokio::test]
async fn serves_by_name_and_takes_a_new_certificate_without_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = TestCa::new();
    let first = ca.leaf(&["preau.test", "127.0.0.1"], dir.path(), "server");
    let addr = serve(first.files.clone()).await;
    let (body, leaf1) = get(&ca, addr).await.expect("TLS request");
    assert!(body.starts_with("HTTP/1.1 200") && body.ends_with("bonjour"), "{body}");

    // A renewed certificate (new key) written over the old files.
    std::thread::sleep(Duration::from_millis(20)); // a new modification time
    let second = ca.leaf(&["preau.test", "127.0.0.1"], dir.path(), "server");
    assert_ne!(first.spki_sha256, second.spki_sha256);
    let mut renewed = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (_, leaf) = get(&ca, addr).await.expect("TLS request");
        if leaf != leaf1 {
            renewed = true;
            break;
        }
    }
    assert!(renewed, "the new certificate is served within 10 s, without a restart");
    let (_, leaf2) = get(&ca, addr).await.expect("TLS request");

    // A broken one is not taken: the last good certificate stays.
    std::fs::write(&second.files.cert, "-----BEGIN CERTIFICATE-----\nbroken\n").expect("write");
    tokio::time::sleep(preau_ops::tls::RELOAD_EVERY + Duration::from_secs(1)).await;
    let (body, leaf) = get(&ca, addr).await.expect("still served");
    assert!(body.ends_with("bonjour"));
    assert_eq!(leaf, leaf2, "the previous certificate stays");
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_is_refused_and_the_server_goes_on() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = TestCa::new();
    let leaf = ca.leaf(&["preau.test"], dir.path(), "server");
    let addr = serve(leaf.files).await;
    let stranger = TestCa::new();
    let e = get(&stranger, addr).await.expect_err("an unknown CA is refused by the client");
    assert!(e.contains("invalid peer certificate") || e.contains("UnknownIssuer"), "{e}");
    // A client that never finishes its handshake does not hold up the others.
    let _silent = tokio::net::TcpStream::connect(addr).await.expect("connect");
    assert!(get(&ca, addr).await.expect("served").0.ends_with("bonjour"));
}

#[test]
fn file_errors_name_the_file_and_what_was_expected() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = TestCa::new();
    let leaf = ca.leaf(&["preau.test"], dir.path(), "server");
    let missing = TlsFiles { cert: dir.path().join("none.crt"), key: leaf.files.key.clone() };
    let e = missing.load().expect_err("missing");
    assert!(e.contains("none.crt") && e.contains("cannot read"), "{e}");
    let swapped = TlsFiles { cert: leaf.files.key.clone(), key: leaf.files.cert.clone() };
    let e = swapped.load().expect_err("swapped");
    assert!(e.contains("server.key") && e.contains("certificate"), "{e}");
    let other = ca.leaf(&["preau.test"], dir.path(), "other");
    let mismatched = TlsFiles { cert: leaf.files.cert.clone(), key: other.files.key };
    let e = mismatched.load().expect_err("mismatched");
    assert!(e.contains("does not fit"), "{e}");
    let e = TlsFiles::from_flags(Some(&leaf.files.cert), None, "--tls-cert", "--tls-key").expect_err("half");
    assert!(e.contains("--tls-cert needs --tls-key"), "{e}");
}

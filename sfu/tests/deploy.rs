//! deploy/ names the SFU's variables, ports, probe paths and metrics; this checks that
//! `preau-sfu` accepts and serves every one of them.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read deploy/").flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn sfu_vars(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("PREAU_SFU_") {
        let tail = &rest[i..];
        let end =
            tail.find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')).unwrap_or(tail.len());
        out.insert(tail[..end].to_owned());
        rest = &tail[end.max(1)..];
    }
    // The gateway's own setting (checked by the gateway's deploy test).
    out.remove("PREAU_SFU_URL");
    out
}

fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").expect("write");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("read");
    let status = body.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, body)
}

#[test]
fn deploy_names_only_what_the_sfu_accepts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let mut all = Vec::new();
    files(&root, &mut all);
    let text: String = all.iter().filter_map(|p| std::fs::read_to_string(p).ok()).collect::<Vec<_>>().join("\n");
    let bin = env!("CARGO_BIN_EXE_preau-sfu");
    let help = Command::new(bin).arg("--help").output().expect("help");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let vars = sfu_vars(&text);
    assert!(vars.len() >= 8, "deploy/ names few SFU variables: {vars:?}");
    for v in &vars {
        assert!(help.contains(&format!("env: {v}=")), "{v} is named in deploy/ but preau-sfu does not read it");
    }
    for shared in ["PREAU_REDIS_URL", "PREAU_NODE_ID", "PREAU_LOG_JSON"] {
        assert!(help.contains(&format!("env: {shared}=")), "{shared}");
    }
    // Ports: signaling 8090 and the one media port, UDP, in the image, compose and k8s.
    assert!(text.contains("EXPOSE 8090 8091/udp") && text.contains("EXPOSE 8080"));
    assert!(text.contains("PREAU_SFU_LISTEN: 0.0.0.0:8090") && text.contains("containerPort: 8090"));
    assert!(
        text.contains("PREAU_SFU_UDP: 0.0.0.0:8091")
            && text.contains("containerPort: 8091, hostPort: 8091, protocol: UDP")
    );
    assert!(text.contains("10001:10001/udp") && text.contains("PREAU_SFU_UDP: 0.0.0.0:10001"));

    // A running node answers the probe and scrape paths, and exports the dashboard's metrics.
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("key");
    std::fs::write(&key, b"a deploy test key of 32 bytes!!!").expect("key");
    let mut child = Command::new(bin)
        .args(["--listen", "127.0.0.1:0", "--udp", "127.0.0.1:0", "--room-key-file"])
        .arg(&key)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start preau-sfu");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("banner");
    let addr = line.split("http://").nth(1).and_then(|s| s.split_whitespace().next()).expect("address").to_owned();
    for path in ["/readyz", "/healthz", "/metrics", "/classroom"] {
        let (status, _) = get(&addr, path);
        assert_eq!(status, 200, "{path}");
    }
    assert!(text.contains("/readyz") && text.contains("/healthz") && text.contains("/metrics"));
    let (_, metrics) = get(&addr, "/metrics");
    let dash = std::fs::read_to_string(root.join("grafana/dashboards/preau.json")).expect("dashboard");
    for m in [
        "preau_sfu_rooms",
        "preau_sfu_peers",
        "preau_sfu_tracks",
        "preau_sfu_nacks_total",
        "preau_sfu_layer_switches_total",
    ] {
        assert!(dash.contains(m), "the dashboard plots {m}");
        assert!(metrics.contains(m), "preau-sfu exports {m}");
    }
    // Every metric described, named as Prometheus wants; the process and the build too.
    let page = metrics.split("\r\n\r\n").nth(1).unwrap_or(&metrics);
    preau_ops::testing::promtool_check_metrics(page).expect("promtool check metrics");
    for m in
        ["# HELP preau_sfu_rooms ", "process_open_fds ", "process_max_fds ", "preau_build_info{binary=\"preau-sfu\""]
    {
        assert!(page.contains(m), "{m} in /metrics");
    }
    let _ = child.kill();
    let _ = child.wait();
}

//! deploy/ names environment variables, subcommands, ports and probe paths of the
//! gateway; this checks the binary accepts and serves every one of them.

use crate::harness::Server;
use preau_client::http_get;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

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

fn tokens(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        let tail = &rest[i..];
        let end =
            tail.find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')).unwrap_or(tail.len());
        out.insert(tail[..end].to_owned());
        rest = &tail[end.max(1)..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_names_only_what_the_gateway_accepts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let mut all = Vec::new();
    files(&root, &mut all);
    let text: String = all.iter().filter_map(|p| std::fs::read_to_string(p).ok()).collect::<Vec<_>>().join("\n");
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_preau-gateway")).arg("--help").output().expect("help");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    // Variables.
    let vars = tokens(&text, "PREAU_");
    assert!(vars.len() >= 10, "deploy/ names few variables: {vars:?}");
    for v in &vars {
        // SFU variables are checked against preau-sfu by sfu/tests/deploy.rs; the
        // gateway's own PREAU_SFU_URL is checked here.
        if v.starts_with("PREAU_SFU_") && v != "PREAU_SFU_URL" {
            continue;
        }
        // Read at build time (preau_build_info's commit), not at run time.
        if v == "PREAU_GIT_COMMIT" {
            continue;
        }
        // A secret's variable is listed without its value (`[env: NAME]`).
        let read = help.contains(&format!("env: {v}=")) || help.contains(&format!("env: {v}]"));
        assert!(read, "{v} is named in deploy/ but preau-gateway does not read it");
    }
    // Subcommands given as command/args of the gateway image.
    for sub in ["serve", "migrate"] {
        assert!(text.contains(&format!("[\"{sub}\"]")), "deploy/ runs `{sub}`");
        assert!(help.lines().any(|l| l.trim_start().starts_with(sub)), "`{sub}` is not a subcommand");
    }
    // The port: what the gateway listens on is what the containers expose and probe.
    assert!(
        text.contains("PREAU_LISTEN: 0.0.0.0:8080")
            && text.contains("containerPort: 8080")
            && text.contains("EXPOSE 8080")
    );
    // Probe and scrape paths answer on a running gateway.
    let s = Server::start(&[]);
    for path in ["/readyz", "/healthz", "/metrics"] {
        assert!(text.contains(path), "deploy/ uses {path}");
        let (status, _) = http_get(&s.addr, path).await.expect("get");
        assert_eq!(status, 200, "{path}");
    }
    // Metrics the dashboard plots exist.
    let (_, metrics) = http_get(&s.addr, "/metrics").await.expect("metrics");
    let dash = std::fs::read_to_string(root.join("grafana/dashboards/preau.json")).expect("dashboard");
    for m in ["preau_connections", "preau_frames_in_total", "preau_deliveries_total", "preau_queue_drops_total"] {
        assert!(dash.contains(m) && metrics.contains(m), "{m}");
    }
}

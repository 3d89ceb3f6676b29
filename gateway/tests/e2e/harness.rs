//! Runs the real `preau-gateway` binary on a loopback port with its own data folder.

use preau_client::{Client, dev_token};
use preau_proto::Encoding;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Flags that keep rate limits out of the way of tests that are not about them.
pub const FAST: &[&str] = &["--sends-per-second", "5000", "--send-burst", "5000", "--frames-per-second", "5000"];

pub struct Server {
    pub addr: String,
    child: Option<Child>,
    pub data: tempfile::TempDir,
    args: Vec<String>,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        let data = tempfile::tempdir().expect("tempdir");
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let mut s = Server { addr: String::new(), child: None, data, args };
        s.spawn();
        s
    }

    pub fn data_path(&self) -> PathBuf {
        self.data.path().to_path_buf()
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.path().join("gateway.log"))
            .expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_preau-gateway"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(self.data.path().join("data"))
            .args(&self.args)
            .env("PREAU_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn preau-gateway");
        let out = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line).expect("read the listening line");
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        self.addr = addr.to_owned();
        self.child = Some(child);
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM; returns how long the process took to exit.
    pub fn term(&mut self) -> Duration {
        let c = self.child.as_mut().expect("running");
        let t = std::time::Instant::now();
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        let _ = c.wait();
        self.child = None;
        t.elapsed()
    }

    /// Starts again on the same data folder (on a new port).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub async fn token(&self, user: &str) -> String {
        dev_token(&self.addr, user).await.expect("dev token")
    }

    pub async fn connect(&self, user: &str) -> Client {
        self.connect_with(user, Encoding::MsgPack).await
    }

    pub async fn connect_with(&self, user: &str, enc: Encoding) -> Client {
        let t = self.token(user).await;
        Client::connect(&self.addr, &t, enc).await.expect("connect")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Waits for the next event matching `f`, skipping others; panics after `secs`.
pub async fn expect_event<T>(
    c: &mut Client,
    secs: u64,
    mut f: impl FnMut(&preau_proto::ServerFrame) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.next_event(left).await {
            Some(ev) => {
                if let Some(v) = f(&ev) {
                    return v;
                }
            }
            None => panic!("expected event did not come within {secs}s (closed: {:?})", c.close_reason()),
        }
    }
}

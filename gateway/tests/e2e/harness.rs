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
    /// The temporary folder, when this server owns it.
    _own: Option<tempfile::TempDir>,
    root: PathBuf,
    args: Vec<String>,
    log: String,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        let data = tempfile::tempdir().expect("tempdir");
        let root = data.path().to_path_buf();
        Server::spawned(root, Some(data), args, "gateway.log")
    }

    /// A gateway on a folder shared with others (several gateways on one host).
    pub fn start_in(root: &std::path::Path, args: &[&str], log: &str) -> Server {
        Server::spawned(root.to_path_buf(), None, args, log)
    }

    fn spawned(root: PathBuf, own: Option<tempfile::TempDir>, args: &[&str], log: &str) -> Server {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let mut s = Server { addr: String::new(), child: None, _own: own, root, args, log: log.to_owned() };
        s.spawn();
        s
    }

    pub fn data_path(&self) -> PathBuf {
        self.root.clone()
    }

    fn spawn(&mut self) {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.root.join(&self.log)).expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_preau-gateway"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(self.root.join("data"))
            .args(&self.args)
            .env("PREAU_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn preau-gateway");
        let out = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line).expect("read the listening line");
        // http:// or https:// (with --tls-cert).
        let addr = line
            .split("://")
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

    /// SIGTERM, without waiting for the exit.
    pub fn signal_term(&self) {
        let c = self.child.as_ref().expect("running");
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
    }

    /// Waits for the process to exit; how long that took.
    pub fn wait_exit(&mut self) -> Duration {
        let t = std::time::Instant::now();
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
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

/// A private redis-server on a free loopback port, which a test may stop and restart.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
}

impl Redis {
    pub fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
        let mut r = Redis { port, child: None };
        r.spawn();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test installs it)");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

//! PostgreSQL for tests, used by this crate's tests and the gateway's end-to-end tests.
//!
//! - [`TestDb`]: a database of its own on the server named by `PREAU_TEST_POSTGRES`
//!   (default: the machine's, `host=127.0.0.1 port=5432 user=postgres`), migrated, and
//!   dropped when the value is dropped. `scripts/test` starts the machine's server when
//!   it is not running.
//! - [`PgServer`]: a private server in a temporary folder on a free port (Debian's
//!   `postgresql` binaries), for tests that stop and restart it; stopped when dropped.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The server tests create their databases on.
pub fn server_url() -> String {
    std::env::var("PREAU_TEST_POSTGRES")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=postgres".to_owned())
}

/// `url` with its database replaced by `db` (key=value form only, which is all tests use).
fn with_db(url: &str, db: &str) -> String {
    let kept: Vec<&str> = url.split_whitespace().filter(|kv| !kv.starts_with("dbname=")).collect();
    format!("{} dbname={db}", kept.join(" "))
}

/// Runs `sql` on `url` from a thread of its own (usable from `Drop` and from sync code).
fn admin(url: &str, sql: &str) -> Result<(), String> {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        rt.block_on(async {
            let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            // One statement at a time: CREATE DATABASE refuses an implicit transaction.
            for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                c.batch_execute(stmt).await.map_err(|e| match e.as_db_error() {
                    Some(db) => db.message().to_owned(),
                    None => e.to_string(),
                })?;
            }
            Ok(())
        })
    })
    .join()
    .map_err(|_| "admin thread panicked".to_owned())?
}

/// A database of its own, at the current schema, dropped with this value.
pub struct TestDb {
    /// Connection string of the database.
    pub url: String,
    server: String,
    name: String,
}

impl TestDb {
    /// Creates and migrates a fresh database on [`server_url`]. Panics with what to do
    /// when no server answers (tests only).
    pub async fn create() -> TestDb {
        TestDb::create_on(&server_url()).await
    }

    /// Creates and migrates a fresh database on the server at `server`.
    pub async fn create_on(server: &str) -> TestDb {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("preau_test_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        if let Err(e) = admin(server, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE); CREATE DATABASE {name}")) {
            panic!(
                "PostgreSQL is not reachable at `{server}` ({e}): start it (scripts/test does) or set \
                 PREAU_TEST_POSTGRES to a server where tests may create databases"
            );
        }
        let url = with_db(server, &name);
        super::PgStore::migrate(&url).await.expect("migrate the test database");
        TestDb { url, server: server.to_owned(), name }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Err(e) = admin(&self.server, &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)) {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// A private PostgreSQL server in a temporary folder.
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).filter(|p| p.join("pg_ctl").exists()).collect())
        .unwrap_or_default();
    found.sort();
    found.pop().expect("PostgreSQL server binaries under /usr/lib/postgresql/*/bin (Debian package postgresql)")
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

impl PgServer {
    /// Creates the cluster and starts it.
    pub fn start() -> PgServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = bin_dir();
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        if is_root() {
            // PostgreSQL refuses to run as root: the folder goes to its own user.
            let ok = Command::new("chown").args(["-R", "postgres"]).arg(dir.path()).status().is_ok_and(|s| s.success());
            assert!(ok, "chown of the private PostgreSQL folder");
        }
        let s = PgServer { dir, bin, port };
        let data = s.data();
        s.run(&s.bin.join("initdb"), &["-D", &data, "-U", "postgres", "-A", "trust", "--no-sync"]);
        s.start_again();
        s
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, prog: &std::path::Path, args: &[&str]) {
        let mut c = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(prog);
            c
        } else {
            Command::new(prog)
        };
        let out = c.args(args).output().expect("run a PostgreSQL tool");
        assert!(
            out.status.success(),
            "{} {:?} failed: {}{}",
            prog.display(),
            args,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Connection string of its `postgres` database.
    pub fn url(&self) -> String {
        format!("host=127.0.0.1 port={} user=postgres dbname=postgres connect_timeout=2", self.port)
    }

    /// Stops it (fast shutdown: open transactions are rolled back, connections cut).
    pub fn stop(&self) {
        self.run(&self.bin.join("pg_ctl"), &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    /// Starts it again, waiting until it takes connections.
    pub fn start_again(&self) {
        let opts = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, self.dir.path().display());
        let log = self.dir.path().join("server.log").display().to_string();
        self.run(&self.bin.join("pg_ctl"), &["-D", &self.data(), "-o", &opts, "-l", &log, "-w", "-t", "30", "start"]);
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.data();
        let mut c = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join("pg_ctl"));
            c
        } else {
            Command::new(self.bin.join("pg_ctl"))
        };
        let _ = c.args(["-D", &data, "-m", "immediate", "-w", "stop"]).output();
    }
}

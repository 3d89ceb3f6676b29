//! The PostgreSQL store, for a deployment over several hosts on a database the operator
//! already runs (with its own replication, backups and failover).
//!
//! # Layout
//! - One writer task per gateway owns one connection. Writes queue on a bounded channel;
//!   the writer takes everything waiting (up to `max_batch`) and applies it in one
//!   transaction (group commit: one WAL flush for the batch), answers, then hands what it
//!   committed, in commit order, to a dispatcher thread that calls the commit hook.
//! - Reads go through a pool of connections (deadpool-postgres, statements prepared once
//!   per connection).
//! - [`migrate`](PgStore::migrate) applies the numbered [`MIGRATIONS`] under an advisory
//!   lock; [`open`](PgStore::open) refuses a database at another version.
//!
//! # Gapless sequences across hosts
//! A channel's last seq is a row of `channels`. A batch creates the rows it lacks (a
//! statement of its own, committed at once), then locks the counter rows of every channel
//! it writes with one `SELECT ... ORDER BY channel FOR UPDATE` (writers of the same channel
//! on other hosts wait for this commit, and two batches never lock rows in opposite
//! orders), allocates seqs in memory, and writes the counters back before `COMMIT`. The seq is therefore allocated inside the
//! durable write: a batch that fails leaves neither entries nor a moved counter.
//!
//! # Failures
//! A batch that fails or takes longer than the write timeout is rolled back (or its
//! connection dropped, which rolls it back on the server) and every write in it is
//! answered `Unavailable`; the writer reconnects on the next batch. A write whose commit
//! outcome is unknown (the connection died during `COMMIT`) is answered `Unavailable` too:
//! the client retries with the same client id and gets the stored entry if it committed.

use crate::queue::{Job, Op, Out, Queue};
use crate::rules;
use crate::types::*;
use crate::{BoxFut, CommitHook, Pending, Store};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use preau_proto::clock::SharedClock;
use preau_proto::{ChannelId, ChannelKind, Entry, EntryKind, Seq};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};

pub mod testing;

/// The schema version this build runs on ([`MIGRATIONS`]'s last).
pub const SCHEMA_VERSION: i32 = 1;

/// Key of the advisory lock `migrate` holds, so two gateways migrating at once take turns.
const MIGRATE_LOCK: i64 = 0x7072_6561_755f_6d67;

/// The schema, as numbered steps applied in order, each in its own transaction. A step
/// once released is never edited: a change is a new step.
pub const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "
CREATE TABLE channels (channel TEXT PRIMARY KEY, last_seq BIGINT NOT NULL);
CREATE TABLE entries (
    channel TEXT NOT NULL, seq BIGINT NOT NULL, kind TEXT NOT NULL, author TEXT NOT NULL,
    at BIGINT NOT NULL, body TEXT, title TEXT, thread BIGINT, reply_to BIGINT,
    target BIGINT, locked BOOLEAN, pinned BOOLEAN, members TEXT, joined BOOLEAN,
    edited BOOLEAN NOT NULL DEFAULT FALSE, deleted BOOLEAN NOT NULL DEFAULT FALSE, client_id TEXT,
    PRIMARY KEY (channel, seq));
CREATE UNIQUE INDEX entries_idem ON entries (channel, author, client_id) WHERE client_id IS NOT NULL;
CREATE INDEX entries_by_author ON entries (author, channel, seq);
CREATE INDEX entries_with_members ON entries (channel) WHERE members IS NOT NULL;
CREATE INDEX entries_by_time ON entries (at);
CREATE TABLE conversations (
    channel TEXT PRIMARY KEY, kind TEXT NOT NULL, title TEXT NOT NULL, creator TEXT NOT NULL,
    client_id TEXT, created_at BIGINT NOT NULL);
CREATE UNIQUE INDEX conversations_idem ON conversations (creator, client_id) WHERE client_id IS NOT NULL;
CREATE TABLE members (channel TEXT NOT NULL, user_id TEXT NOT NULL, PRIMARY KEY (channel, user_id));
CREATE INDEX members_by_user ON members (user_id, channel);
CREATE TABLE read_markers (
    user_id TEXT NOT NULL, channel TEXT NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (user_id, channel));
CREATE INDEX read_markers_by_channel ON read_markers (channel, user_id);
CREATE TABLE mutes (
    channel TEXT NOT NULL, user_id TEXT NOT NULL, until_ms BIGINT NOT NULL, PRIMARY KEY (channel, user_id));
CREATE TABLE directory (school TEXT PRIMARY KEY, doc TEXT NOT NULL, updated_at BIGINT NOT NULL);
CREATE TABLE records (
    kind TEXT NOT NULL, school TEXT NOT NULL, id TEXT NOT NULL, at BIGINT NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (kind, school, id));
CREATE INDEX records_by_time ON records (kind, school, at, id);
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at BIGINT NOT NULL);
CREATE TABLE probe (id INTEGER PRIMARY KEY, at BIGINT NOT NULL);
",
)];

/// Options of the PostgreSQL store.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// Connection string (`postgres://user@host:5432/db` or `host=... dbname=...`).
    pub url: String,
    /// Read connections.
    pub pool_size: usize,
    /// Most writes grouped in one transaction.
    pub max_batch: usize,
    /// Writes waiting for the writer (then `queue_write` refuses with `Overloaded`).
    pub queue: usize,
    /// A batch, a read or a connection attempt that takes longer is given up `Unavailable`.
    pub timeout: Duration,
    /// The wall clock that stamps entries.
    pub clock: SharedClock,
}

impl PgOptions {
    /// Defaults for the database at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        PgOptions {
            url: url.into(),
            pool_size: 8,
            max_batch: 256,
            queue: 2048,
            timeout: Duration::from_secs(5),
            clock: preau_proto::clock::system(),
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// The driver's error with its cause (tokio-postgres's own text is often just "db error").
fn pg_err(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => unavailable(format!("postgresql: {} ({})", db.message(), db.code().code())),
        None => unavailable(format!("postgresql: {e}")),
    }
}

fn config(url: &str, timeout: Duration) -> Result<tokio_postgres::Config, StoreError> {
    let mut c: tokio_postgres::Config =
        url.parse().map_err(|e| unavailable(format!("--postgres-url is not a PostgreSQL connection string: {e}")))?;
    if c.get_connect_timeout().is_none() {
        c.connect_timeout(timeout);
    }
    c.application_name("preau-gateway");
    Ok(c)
}

async fn connect(cfg: &tokio_postgres::Config) -> Result<Client, StoreError> {
    let (client, conn) = cfg.connect(NoTls).await.map_err(pg_err)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::warn!(error = %e, "postgresql connection closed");
        }
    });
    Ok(client)
}

/// The schema version the database is at (0: none).
async fn version(c: &Client) -> Result<i32, StoreError> {
    let exists: bool = c
        .query_one("SELECT to_regclass('preau_schema') IS NOT NULL", &[])
        .await
        .map_err(pg_err)?
        .try_get(0)
        .map_err(pg_err)?;
    if !exists {
        return Ok(0);
    }
    let v: Option<i32> =
        c.query_one("SELECT MAX(version) FROM preau_schema", &[]).await.map_err(pg_err)?.try_get(0).map_err(pg_err)?;
    Ok(v.unwrap_or(0))
}

/// Stored kinds are written by this code; an unknown one reads as a message.
fn kind_parse(s: &str) -> EntryKind {
    EntryKind::parse(s).unwrap_or(EntryKind::Message)
}

const COLS: &str = "seq, kind, author, at, body, title, thread, reply_to, target, locked, pinned, members, joined, edited, deleted, client_id";

fn row_entry(r: &Row) -> Result<Entry, tokio_postgres::Error> {
    let members: Option<String> = r.try_get(11)?;
    Ok(Entry {
        seq: r.try_get::<_, i64>(0)? as Seq,
        kind: kind_parse(r.try_get(1)?),
        author: r.try_get(2)?,
        at: r.try_get(3)?,
        body: r.try_get(4)?,
        title: r.try_get(5)?,
        thread: r.try_get::<_, Option<i64>>(6)?.map(|v| v as Seq),
        reply_to: r.try_get::<_, Option<i64>>(7)?.map(|v| v as Seq),
        target: r.try_get::<_, Option<i64>>(8)?.map(|v| v as Seq),
        locked: r.try_get(9)?,
        pinned: r.try_get(10)?,
        members: members.and_then(|m| serde_json::from_str(&m).ok()).unwrap_or_default(),
        joined: r.try_get(12)?,
        edited: r.try_get(13)?,
        deleted: r.try_get(14)?,
        client_id: r.try_get(15)?,
    })
}

fn row_record(r: &Row) -> Result<Record, tokio_postgres::Error> {
    Ok(Record {
        kind: r.try_get(0)?,
        school: r.try_get(1)?,
        id: r.try_get(2)?,
        at_ms: r.try_get(3)?,
        doc: r.try_get(4)?,
    })
}

/// The PostgreSQL store.
pub struct PgStore {
    q: Queue,
    pool: Pool,
    timeout: Duration,
    healthy: Arc<AtomicBool>,
}

/// Committed batches the dispatcher may lag behind the writer.
const DISPATCH_BACKLOG: usize = 1024;

impl PgStore {
    /// Creates or completes the schema (the `migrate` command); returns the version the
    /// database was at. Idempotent; refuses a database newer than this build.
    pub async fn migrate(url: &str) -> Result<i32, StoreError> {
        let c = connect(&config(url, Duration::from_secs(10))?).await?;
        c.execute("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK]).await.map_err(pg_err)?;
        let r = Self::migrate_locked(&c).await;
        let _ = c.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATE_LOCK]).await;
        r
    }

    async fn migrate_locked(c: &Client) -> Result<i32, StoreError> {
        c.batch_execute(
            "CREATE TABLE IF NOT EXISTS preau_schema (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await
        .map_err(pg_err)?;
        let was = version(c).await?;
        if was > SCHEMA_VERSION {
            return Err(unavailable(format!(
                "the database is at schema version {was}, newer than this build's {SCHEMA_VERSION}: upgrade preau-gateway"
            )));
        }
        for (v, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > was) {
            let step = format!("BEGIN; {sql}; INSERT INTO preau_schema (version) VALUES ({v}); COMMIT;");
            if let Err(e) = c.batch_execute(&step).await {
                let _ = c.batch_execute("ROLLBACK").await;
                return Err(pg_err(e));
            }
            tracing::info!(version = v, "postgresql schema migrated");
        }
        Ok(was)
    }

    /// Connects, checks the schema version and starts the writer. `hook` is called after
    /// each commit with what it committed, in order.
    pub async fn open(opts: PgOptions, hook: CommitHook) -> Result<Self, StoreError> {
        let cfg = config(&opts.url, opts.timeout)?;
        let first = connect(&cfg).await?;
        let v = version(&first).await?;
        if v != SCHEMA_VERSION {
            return Err(unavailable(format!(
                "the PostgreSQL database is at schema version {v}, this build runs on {SCHEMA_VERSION}: run `preau-gateway migrate`{}",
                if v > SCHEMA_VERSION { " with a newer preau-gateway" } else { "" }
            )));
        }
        let writer_stmts = Stmts::prepare(&first).await?;
        let mgr = Manager::from_config(cfg.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(mgr)
            .max_size(opts.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(opts.timeout))
            .create_timeout(Some(opts.timeout))
            .recycle_timeout(Some(opts.timeout))
            .build()
            .map_err(unavailable)?;
        let (q, rx) = Queue::bounded(opts.queue);
        let healthy = Arc::new(AtomicBool::new(true));
        let (events, mut dispatch) = mpsc::channel::<Vec<Committed>>(DISPATCH_BACKLOG);
        std::thread::Builder::new()
            .name("preau-pg-dispatch".into())
            .spawn(move || {
                while let Some(batch) = dispatch.blocking_recv() {
                    for ev in &batch {
                        hook(ev);
                    }
                }
            })
            .map_err(unavailable)?;
        let writer = Writer {
            cfg,
            conn: Some((first, writer_stmts)),
            events,
            healthy: healthy.clone(),
            clock: opts.clock,
            timeout: opts.timeout,
        };
        tokio::spawn(writer.run(rx, opts.max_batch.max(1)));
        Ok(PgStore { q, pool, timeout: opts.timeout, healthy })
    }

    /// Runs `f` on a pooled read connection, within the timeout.
    async fn read<R>(
        &self,
        f: impl AsyncFnOnce(&deadpool_postgres::Client) -> Result<R, tokio_postgres::Error>,
    ) -> Result<R, StoreError> {
        let work = async {
            let c = self.pool.get().await.map_err(|e| unavailable(format!("postgresql: {e}")))?;
            f(&c).await.map_err(pg_err)
        };
        tokio::time::timeout(self.timeout, work).await.map_err(|_| unavailable("postgresql read timed out"))?
    }
}

/// The writer's prepared statements (prepared once per connection).
struct Stmts {
    create_channels: Statement,
    lock_channels: Statement,
    set_channels: Statement,
    insert_entries: Statement,
    by_keys: Statement,
    targets: Statement,
    edit: Statement,
    delete: Statement,
    thread_state: Statement,
    join: Statement,
    leave: Statement,
    last_seq: Statement,
    mark_read: Statement,
    read_marker: Statement,
}

impl Stmts {
    async fn prepare(c: &Client) -> Result<Stmts, StoreError> {
        let p = async |sql: &str| c.prepare(sql).await.map_err(pg_err);
        Ok(Stmts {
            // Committed on its own, before the batch: a row exists for every channel the
            // batch locks, and creating it locks nothing the batch then waits behind.
            create_channels: p("INSERT INTO channels (channel, last_seq) SELECT c, 0 FROM unnest($1::text[]) AS c
                 ON CONFLICT (channel) DO NOTHING")
            .await?,
            // Sorted: every writer locks counter rows in one order, so never in a cycle.
            lock_channels: p("SELECT channel, last_seq FROM channels WHERE channel = ANY($1) ORDER BY channel FOR UPDATE")
                .await?,
            set_channels: p("UPDATE channels SET last_seq = x.l FROM unnest($1::text[], $2::bigint[]) AS x(c, l)
                 WHERE channels.channel = x.c")
            .await?,
            insert_entries: p(&format!(
                "INSERT INTO entries (channel, {COLS}) SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[],
                 $4::text[], $5::bigint[], $6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::bigint[],
                 $11::boolean[], $12::boolean[], $13::text[], $14::boolean[], $15::boolean[], $16::boolean[], $17::text[])"
            ))
            .await?,
            // One index probe per key, whatever the planner thinks of a channel's size (a
            // plain join turns into a scan of a busy channel's entries): LIMIT keeps the
            // lateral subquery from being flattened.
            by_keys: p(&format!(
                "SELECT e.*, k.ch FROM unnest($1::text[], $2::text[], $3::text[]) AS k(ch, a, cid),
                 LATERAL (SELECT {COLS} FROM entries WHERE channel = k.ch AND author = k.a AND client_id = k.cid
                          AND client_id IS NOT NULL LIMIT 1) AS e"
            ))
            .await?,
            targets: p(&format!("SELECT {COLS} FROM entries WHERE channel = $1 AND seq = ANY($2)")).await?,
            edit: p("UPDATE entries SET body = $3, edited = TRUE WHERE channel = $1 AND seq = $2").await?,
            delete: p("UPDATE entries SET body = NULL, title = NULL, deleted = TRUE WHERE channel = $1 AND seq = $2")
                .await?,
            thread_state: p("UPDATE entries SET locked = $3, pinned = $4 WHERE channel = $1 AND seq = $2").await?,
            join: p("INSERT INTO members (channel, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING").await?,
            leave: p("DELETE FROM members WHERE channel = $1 AND user_id = $2").await?,
            last_seq: p("SELECT last_seq FROM channels WHERE channel = $1").await?,
            mark_read: p("INSERT INTO read_markers (user_id, channel, seq) VALUES ($1, $2, $3)
                 ON CONFLICT (user_id, channel) DO UPDATE SET seq = EXCLUDED.seq
                 WHERE read_markers.seq < EXCLUDED.seq RETURNING seq")
            .await?,
            read_marker: p("SELECT seq FROM read_markers WHERE user_id = $1 AND channel = $2").await?,
        })
    }
}

struct Writer {
    cfg: tokio_postgres::Config,
    /// The write connection and its statements; `None` after a failure until reconnected.
    conn: Option<(Client, Stmts)>,
    events: mpsc::Sender<Vec<Committed>>,
    healthy: Arc<AtomicBool>,
    clock: SharedClock,
    timeout: Duration,
}

/// The outcome of one job inside a batch: its answer and what it publishes on commit.
struct Done {
    out: Result<Out, StoreError>,
    event: Option<Committed>,
}

impl Done {
    fn ok(out: Out) -> Done {
        Done { out: Ok(out), event: None }
    }
}

/// Attempts of a batch that lost a deadlock or serialisation race before it gives up.
const RACE_ATTEMPTS: usize = 5;

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Job>, max_batch: usize) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < max_batch {
                match rx.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
            self.batch(batch).await;
        }
    }

    async fn batch(&mut self, batch: Vec<Job>) {
        let (ops, replies): (Vec<Op>, Vec<_>) = batch.into_iter().map(|j| (j.op, j.reply)).unzip();
        match self.commit(&ops).await {
            Ok(done) => {
                self.healthy.store(true, Ordering::Relaxed);
                let mut events = Vec::with_capacity(done.len());
                for (d, reply) in done.into_iter().zip(replies) {
                    events.extend(d.event);
                    let _ = reply.send(d.out);
                }
                if !events.is_empty() {
                    let _ = self.events.send(events).await;
                }
            }
            // The connection survived: one job's error failed the whole transaction, so
            // apply each alone and refuse only that one. (A lost or unreachable server
            // drops the connection: then every job is refused at once, not retried one by
            // one behind a connection timeout each.)
            Err(e) if ops.len() > 1 && self.conn.is_some() => {
                tracing::warn!(error = %e, jobs = ops.len(), "postgresql batch failed; applying its writes one by one");
                for (op, reply) in ops.into_iter().zip(replies) {
                    let out = match self.commit(std::slice::from_ref(&op)).await {
                        Ok(mut d) => {
                            let d = d.pop().unwrap_or(Done { out: Err(unavailable("no answer")), event: None });
                            if let Some(ev) = d.event {
                                let _ = self.events.send(vec![ev]).await;
                            }
                            d.out
                        }
                        Err(e) => Err(e),
                    };
                    let _ = reply.send(out);
                }
            }
            Err(e) => {
                for r in replies {
                    let _ = r.send(Err(e.clone()));
                }
            }
        }
    }

    /// Applies `ops` in one transaction, retrying lost deadlock races; `Err` when nothing
    /// of it was (or may have been) committed.
    async fn commit(&mut self, ops: &[Op]) -> Result<Vec<Done>, StoreError> {
        for attempt in 1..=RACE_ATTEMPTS {
            if self.conn.as_ref().is_none_or(|(c, _)| c.is_closed()) {
                self.conn = None;
                let c = tokio::time::timeout(self.timeout, connect(&self.cfg))
                    .await
                    .map_err(|_| unavailable("postgresql connection timed out"))
                    .and_then(|r| r);
                let c = match c {
                    Ok(c) => c,
                    Err(e) => return Err(self.failed(e)),
                };
                match Stmts::prepare(&c).await {
                    Ok(s) => self.conn = Some((c, s)),
                    Err(e) => return Err(self.failed(e)),
                }
            }
            let Some((c, s)) = &self.conn else { continue };
            let clock = self.clock.clone();
            let r = tokio::time::timeout(self.timeout, apply(c, s, ops, &clock)).await;
            match r {
                Ok(Ok(done)) => return Ok(done),
                Ok(Err(e)) => {
                    let _ = c.batch_execute("ROLLBACK").await;
                    let race = e.code().is_some_and(|c| {
                        *c == tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED
                            || *c == tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
                    });
                    if race && attempt < RACE_ATTEMPTS {
                        tracing::debug!(attempt, "postgresql batch lost a lock race; retrying");
                        continue;
                    }
                    if c.is_closed() {
                        self.conn = None;
                        return Err(self.failed(unavailable(format!("postgresql connection lost: {e}"))));
                    }
                    return Err(self.failed(pg_err(e)));
                }
                Err(_) => {
                    // Dropping the connection rolls the transaction back on the server.
                    self.conn = None;
                    return Err(self.failed(unavailable("postgresql write timed out (connection reset)")));
                }
            }
        }
        Err(self.failed(unavailable("postgresql batch kept losing lock races")))
    }

    fn failed(&self, e: StoreError) -> StoreError {
        tracing::error!(error = %e, "postgresql write failed; nothing of the batch was stored");
        self.healthy.store(false, Ordering::Relaxed);
        e
    }
}

/// Channels whose counters a batch moves, sorted (the lock order).
fn written_channels(ops: &[Op]) -> Vec<String> {
    let set: BTreeSet<&str> = ops
        .iter()
        .filter_map(|o| match o {
            Op::Write(w) => Some(w.channel().as_str()),
            _ => None,
        })
        .collect();
    set.into_iter().map(str::to_owned).collect()
}

/// One transaction applying `ops` in order.
async fn apply(c: &Client, s: &Stmts, ops: &[Op], clock: &SharedClock) -> Result<Vec<Done>, tokio_postgres::Error> {
    let chans = written_channels(ops);
    let keys = post_keys(ops);
    // BEGIN, the counter locks and the stored entries of the batch's idempotency keys go
    // out together (tokio-postgres pipelines what is polled at once): one round trip.
    let (created, begun, locked, stored) = tokio::join!(
        async { if chans.is_empty() { Ok(0) } else { c.execute(&s.create_channels, &[&chans]).await } },
        c.batch_execute("BEGIN"),
        async { if chans.is_empty() { Ok(Vec::new()) } else { c.query(&s.lock_channels, &[&chans]).await } },
        async {
            if keys.0.is_empty() { Ok(Vec::new()) } else { c.query(&s.by_keys, &[&keys.0, &keys.1, &keys.2]).await }
        },
    );
    created?;
    begun?;
    let mut tx =
        Tx { c, s, clock, last: HashMap::with_capacity(chans.len()), known: HashMap::new(), pending: Vec::new() };
    for r in locked? {
        tx.last.insert(r.try_get(0)?, r.try_get(1)?);
    }
    for r in stored? {
        let e = row_entry(&r)?;
        let ch: String = r.try_get(16)?;
        tx.known.insert((ch, e.author.clone(), e.client_id.clone().unwrap_or_default()), e);
    }
    let start = tx.last.clone();
    let mut done = Vec::with_capacity(ops.len());
    for op in ops {
        done.push(tx.apply_one(op).await?);
    }
    tx.flush().await?;
    let moved: Vec<(&String, &i64)> = tx.last.iter().filter(|(ch, l)| start.get(*ch) != Some(l)).collect();
    let names: Vec<&str> = moved.iter().map(|(c, _)| c.as_str()).collect();
    let lasts: Vec<i64> = moved.iter().map(|(_, l)| **l).collect();
    // The counters and COMMIT together too; a failed update aborts the transaction, so
    // the COMMIT that follows it rolls back.
    let (set, committed) = tokio::join!(
        async { if names.is_empty() { Ok(0) } else { c.execute(&s.set_channels, &[&names, &lasts]).await } },
        c.batch_execute("COMMIT"),
    );
    set?;
    committed?;
    Ok(done)
}

/// The idempotency keys of the batch's posts, as three arrays.
fn post_keys(ops: &[Op]) -> (Vec<&str>, Vec<&str>, Vec<&str>) {
    let mut k = (Vec::new(), Vec::new(), Vec::new());
    for (ch, author, cid) in ops.iter().filter_map(|o| match o {
        Op::Write(w) => rules::idempotency_key(w),
        _ => None,
    }) {
        k.0.push(ch);
        k.1.push(author);
        k.2.push(cid);
    }
    k
}

/// A batch's transaction in progress.
struct Tx<'a> {
    c: &'a Client,
    s: &'a Stmts,
    clock: &'a SharedClock,
    /// Each written channel's last seq (its counter row is locked).
    last: HashMap<String, i64>,
    /// Entries under the batch's idempotency keys: stored before, or appended by it.
    known: HashMap<(String, String, String), Entry>,
    /// Entries appended but not yet sent: one multi-row INSERT at the next flush.
    pending: Vec<(String, Entry)>,
}

impl Tx<'_> {
    /// Sends the pending entries in one statement.
    async fn flush(&mut self) -> Result<(), tokio_postgres::Error> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let p = std::mem::take(&mut self.pending);
        let col = |f: &dyn Fn(&Entry) -> Option<i64>| p.iter().map(|(_, e)| f(e)).collect::<Vec<_>>();
        let chans: Vec<&str> = p.iter().map(|(c, _)| c.as_str()).collect();
        let seqs: Vec<i64> = p.iter().map(|(_, e)| e.seq as i64).collect();
        let kinds: Vec<&str> = p.iter().map(|(_, e)| e.kind.as_str()).collect();
        let authors: Vec<&str> = p.iter().map(|(_, e)| e.author.as_str()).collect();
        let ats: Vec<i64> = p.iter().map(|(_, e)| e.at).collect();
        let bodies: Vec<Option<&str>> = p.iter().map(|(_, e)| e.body.as_deref()).collect();
        let titles: Vec<Option<&str>> = p.iter().map(|(_, e)| e.title.as_deref()).collect();
        let threads = col(&|e| e.thread.map(|v| v as i64));
        let replies = col(&|e| e.reply_to.map(|v| v as i64));
        let targets = col(&|e| e.target.map(|v| v as i64));
        let locked: Vec<Option<bool>> = p.iter().map(|(_, e)| e.locked).collect();
        let pinned: Vec<Option<bool>> = p.iter().map(|(_, e)| e.pinned).collect();
        let members: Vec<Option<String>> = p
            .iter()
            .map(|(_, e)| if e.members.is_empty() { None } else { serde_json::to_string(&e.members).ok() })
            .collect();
        let joined: Vec<Option<bool>> = p.iter().map(|(_, e)| e.joined).collect();
        let edited: Vec<bool> = p.iter().map(|(_, e)| e.edited).collect();
        let deleted: Vec<bool> = p.iter().map(|(_, e)| e.deleted).collect();
        let cids: Vec<Option<&str>> = p.iter().map(|(_, e)| e.client_id.as_deref()).collect();
        let params: [&(dyn ToSql + Sync); 17] = [
            &chans, &seqs, &kinds, &authors, &ats, &bodies, &titles, &threads, &replies, &targets, &locked, &pinned,
            &members, &joined, &edited, &deleted, &cids,
        ];
        self.c.execute(&self.s.insert_entries, &params).await?;
        Ok(())
    }

    async fn apply_one(&mut self, op: &Op) -> Result<Done, tokio_postgres::Error> {
        let (c, s, clock) = (self.c, self.s, self.clock);
        let refuse = |e: StoreError| Done { out: Err(e), event: None };
        match op {
            Op::Write(w) => {
                let channel = w.channel().clone();
                let ch = channel.as_str();
                let key = rules::idempotency_key(w).map(|(c, a, k)| (c.to_owned(), a.to_owned(), k.to_owned()));
                if let Some(e) = key.as_ref().and_then(|k| self.known.get(k)) {
                    let a = Appended { channel: channel.clone(), entry: e.clone(), duplicate: true };
                    return Ok(Done::ok(Out::Appended(a)));
                }
                let targets = rules::targets(w);
                let found = if targets.is_empty() {
                    Vec::new()
                } else {
                    // The targets may be among the entries not yet sent.
                    self.flush().await?;
                    let ts: Vec<i64> = targets.iter().map(|t| *t as i64).collect();
                    c.query(&s.targets, &[&ch, &ts]).await?.iter().map(row_entry).collect::<Result<Vec<_>, _>>()?
                };
                let mut e = match rules::decide(w, |q| found.iter().find(|e| e.seq == q), clock.now_ms()) {
                    Ok(e) => e,
                    Err(why) => return Ok(refuse(why)),
                };
                let seq = self.last.get(ch).copied().unwrap_or(0) + 1;
                e.seq = seq as Seq;
                match w {
                    Write::Edit { target, body, .. } => {
                        c.execute(&s.edit, &[&ch, &(*target as i64), body]).await?;
                    }
                    Write::Delete { target, .. } => {
                        // The text goes; the entry stays so seqs remain gapless.
                        c.execute(&s.delete, &[&ch, &(*target as i64)]).await?;
                    }
                    Write::ThreadState { thread, .. } => {
                        c.execute(&s.thread_state, &[&ch, &(*thread as i64), &e.locked, &e.pinned]).await?;
                    }
                    Write::Membership { members, joined, .. } => {
                        let st = if *joined { &s.join } else { &s.leave };
                        for m in members {
                            c.execute(st, &[&ch, m]).await?;
                        }
                    }
                    Write::Post { .. } => {}
                }
                self.last.insert(ch.to_owned(), seq);
                if let Some(k) = key {
                    self.known.insert(k, e.clone());
                }
                self.pending.push((ch.to_owned(), e.clone()));
                let appended = Appended { channel, entry: e, duplicate: false };
                Ok(Done { out: Ok(Out::Appended(appended.clone())), event: Some(Committed::Entry(appended)) })
            }
            Op::MarkRead { user, channel, seq } => {
                let ch = channel.as_str();
                let top = match self.last.get(ch) {
                    Some(l) => *l,
                    None => c
                        .query_opt(&s.last_seq, &[&ch])
                        .await?
                        .map(|r| r.try_get::<_, i64>(0))
                        .transpose()?
                        .unwrap_or(0),
                };
                let want = (*seq as i64).min(top);
                if want > 0 && c.query_opt(&s.mark_read, &[user, &ch, &want]).await?.is_some() {
                    let seq = want as Seq;
                    return Ok(Done {
                        out: Ok(Out::Seq(seq)),
                        event: Some(Committed::Read { channel: channel.clone(), user: user.clone(), seq }),
                    });
                }
                let old =
                    c.query_opt(&s.read_marker, &[user, &ch]).await?.map(|r| r.try_get::<_, i64>(0)).transpose()?;
                Ok(Done::ok(Out::Seq(old.unwrap_or(0) as Seq)))
            }
            Op::CreateConversation(nc) => {
                if let Some(existing) = conversation(c, nc.channel.as_str()).await? {
                    return Ok(Done::ok(Out::Conversation(existing)));
                }
                if let Some(cid) = &nc.client_id {
                    let row = c
                        .query_opt(
                            "SELECT channel FROM conversations WHERE creator = $1 AND client_id = $2",
                            &[&nc.creator, cid],
                        )
                        .await?;
                    if let Some(r) = row
                        && let Some(existing) = conversation(c, r.try_get(0)?).await?
                    {
                        return Ok(Done::ok(Out::Conversation(existing)));
                    }
                }
                let kind = match nc.channel.kind() {
                    ChannelKind::Direct => "direct",
                    _ => "group",
                };
                c.execute(
                    "INSERT INTO conversations (channel, kind, title, creator, client_id, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                    &[&nc.channel.as_str(), &kind, &nc.title, &nc.creator, &nc.client_id, &clock.now_ms()],
                )
                .await?;
                for m in &nc.members {
                    c.execute(&s.join, &[&nc.channel.as_str(), m]).await?;
                }
                match conversation(c, nc.channel.as_str()).await? {
                    Some(conv) => Ok(Done::ok(Out::Conversation(conv))),
                    None => Ok(refuse(unavailable("conversation vanished while created"))),
                }
            }
            Op::SetMute { channel, user, until_ms } => {
                if *until_ms <= 0 {
                    c.execute("DELETE FROM mutes WHERE channel = $1 AND user_id = $2", &[&channel.as_str(), user])
                        .await?;
                } else {
                    c.execute(
                        "INSERT INTO mutes (channel, user_id, until_ms) VALUES ($1, $2, $3)
                     ON CONFLICT (channel, user_id) DO UPDATE SET until_ms = EXCLUDED.until_ms",
                        &[&channel.as_str(), user, until_ms],
                    )
                    .await?;
                }
                Ok(Done::ok(Out::Unit))
            }
            Op::SaveDirectory { school, doc } => {
                c.execute(
                    "INSERT INTO directory (school, doc, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (school) DO UPDATE SET doc = EXCLUDED.doc, updated_at = EXCLUDED.updated_at",
                    &[school, doc, &clock.now_ms()],
                )
                .await?;
                Ok(Done::ok(Out::Unit))
            }
            Op::SaveSetting { key, value } => {
                c.execute(
                    "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at",
                    &[key, value, &clock.now_ms()],
                )
                .await?;
                Ok(Done::ok(Out::Unit))
            }
            Op::PutRecord(r) => {
                c.execute(
                    "INSERT INTO records (kind, school, id, at, doc) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (kind, school, id) DO UPDATE SET at = EXCLUDED.at, doc = EXCLUDED.doc",
                    &[&r.kind, &r.school, &r.id, &r.at_ms, &r.doc],
                )
                .await?;
                Ok(Done::ok(Out::Unit))
            }
            Op::PurgeRecords { kind, before_ms } => {
                let n = c.execute("DELETE FROM records WHERE kind = $1 AND at < $2", &[kind, before_ms]).await?;
                Ok(Done::ok(Out::Seq(n)))
            }
            Op::Erase(e) => Ok(Done::ok(Out::Erased(erase(c, e).await?))),
            Op::Expire(x) => {
                let limit = i64::from(x.limit.max(1));
                // Every expired entry but each channel's last, then that one emptied; the
                // counter row keeps the seq either way. `starts_with`, not a range: the
                // database's collation may not order ids byte by byte.
                let n = c
                    .execute(
                        "DELETE FROM entries WHERE (channel, seq) IN (SELECT channel, seq FROM entries e
                     WHERE at < $2 AND starts_with(channel, $1)
                     AND seq < (SELECT MAX(seq) FROM entries m WHERE m.channel = e.channel) LIMIT $3)",
                        &[&x.prefix, &x.before_ms, &limit],
                    )
                    .await? as i64;
                let m = c
                    .execute(
                        "UPDATE entries SET body = NULL, title = NULL, members = NULL, client_id = NULL, author = '',
                     deleted = TRUE WHERE (channel, seq) IN (SELECT channel, seq FROM entries
                     WHERE at < $2 AND starts_with(channel, $1) AND author <> '' LIMIT $3)",
                        &[&x.prefix, &x.before_ms, &(limit - n).max(0)],
                    )
                    .await? as i64;
                Ok(Done::ok(Out::Erased(Erased { rows: (n + m) as u64, done: n + m < limit })))
            }
            Op::DeleteRecord { kind, school, id } => {
                c.execute("DELETE FROM records WHERE kind = $1 AND school = $2 AND id = $3", &[kind, school, id])
                    .await?;
                Ok(Done::ok(Out::Unit))
            }
            Op::Lease { name, holder, now_ms, until_ms } => {
                let value = serde_json::json!({ "holder": holder, "until": until_ms }).to_string();
                let taken = c
                    .query_opt(
                        "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3)
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at
                     WHERE settings.value::jsonb->>'holder' = $4 OR (settings.value::jsonb->>'until')::bigint <= $3
                     RETURNING key",
                        &[&format!("lease:{name}"), &value, now_ms, holder],
                    )
                    .await?;
                Ok(Done::ok(Out::Bool(taken.is_some())))
            }
            Op::Probe => {
                c.execute(
                    "INSERT INTO probe (id, at) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET at = EXCLUDED.at",
                    &[&clock.now_ms()],
                )
                .await?;
                Ok(Done::ok(Out::Unit))
            }
        }
    }
}

/// One bounded step of an erasure (see [`Store::erase_user`]), inside the batch. A dry run
/// applies all of it in a savepoint and rolls it back: its count is exact.
async fn erase(c: &Client, e: &Erasure) -> Result<Erased, tokio_postgres::Error> {
    if !e.dry_run {
        return erase_step(c, e).await;
    }
    c.batch_execute("SAVEPOINT dry").await?;
    let all = Erasure { limit: u32::MAX, ..e.clone() };
    let r = erase_step(c, &all).await;
    c.batch_execute("ROLLBACK TO SAVEPOINT dry").await?;
    r.map(|x| Erased { rows: x.rows, done: true })
}

async fn erase_step(c: &Client, e: &Erasure) -> Result<Erased, tokio_postgres::Error> {
    let (u, p) = (e.user.as_str(), e.pseudonym.as_str());
    // Membership entries list user ids as JSON strings.
    let (qu, qp) = (serde_json::to_string(u).unwrap_or_default(), serde_json::to_string(p).unwrap_or_default());
    let mut left = i64::from(e.limit.max(1));
    let mut rows = 0u64;
    // Changes at most `left` rows; the statement's last parameter is the bound.
    let step = async |change: &str, args: &[&(dyn ToSql + Sync)], left: &mut i64| {
        let bound = *left;
        let mut a: Vec<&(dyn ToSql + Sync)> = args.to_vec();
        a.push(&bound);
        let n = c.execute(change, &a).await? as i64;
        *left = (*left - n).max(0);
        Ok::<u64, tokio_postgres::Error>(n as u64)
    };
    for ch in &e.direct {
        let ch = ch.as_str();
        rows += step(
            "DELETE FROM entries WHERE channel = $1 AND seq IN (SELECT seq FROM entries WHERE channel = $1 LIMIT $2)",
            &[&ch],
            &mut left,
        )
        .await?;
        if left <= 0 {
            break;
        }
        for t in ["members", "read_markers", "mutes", "conversations", "channels"] {
            rows += step(&format!("DELETE FROM {t} WHERE channel = $1 AND $2::bigint > 0"), &[&ch], &mut left).await?;
        }
    }
    let (text, title, deleted) = if e.keep_shared_posts {
        ("body", "title", "deleted")
    } else {
        ("NULL", "NULL", "CASE WHEN kind IN ('message', 'thread') THEN TRUE ELSE deleted END")
    };
    rows += step(
        &format!(
            "UPDATE entries SET author = $2, client_id = NULL, body = {text}, title = {title}, deleted = {deleted}
             WHERE (channel, seq) IN (SELECT channel, seq FROM entries WHERE author = $1 LIMIT $3)"
        ),
        &[&u, &p],
        &mut left,
    )
    .await?;
    rows += step(
        "UPDATE entries SET members = replace(members, $1, $2) WHERE (channel, seq) IN
         (SELECT channel, seq FROM entries WHERE members IS NOT NULL AND strpos(members, $1) > 0 LIMIT $3)",
        &[&qu, &qp],
        &mut left,
    )
    .await?;
    rows += step(
        "UPDATE conversations SET creator = $2, client_id = NULL WHERE creator = $1 AND $3::bigint > 0",
        &[&u, &p],
        &mut left,
    )
    .await?;
    for t in ["members", "read_markers", "mutes"] {
        rows += step(&format!("DELETE FROM {t} WHERE user_id = $1 AND $2::bigint > 0"), &[&u], &mut left).await?;
    }
    Ok(Erased { rows, done: left > 0 })
}

/// A conversation and its members, through any client (the writer's or a reader's).
async fn conversation(c: &Client, channel: &str) -> Result<Option<Conversation>, tokio_postgres::Error> {
    let Some(row) = c.query_opt("SELECT title, creator FROM conversations WHERE channel = $1", &[&channel]).await?
    else {
        return Ok(None);
    };
    let Ok(id) = ChannelId::parse(channel) else {
        return Ok(None);
    };
    let members = c
        .query("SELECT user_id FROM members WHERE channel = $1 ORDER BY user_id", &[&channel])
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<Vec<String>, _>>()?;
    Ok(Some(Conversation { kind: id.kind(), channel: id, title: row.try_get(0)?, creator: row.try_get(1)?, members }))
}

impl Store for PgStore {
    fn write(&self, w: Write) -> BoxFut<'_, Result<Appended, StoreError>> {
        Box::pin(self.q.write(w))
    }

    fn queue_write(&self, w: Write) -> BoxFut<'_, Result<Pending, StoreError>> {
        Box::pin(async move { self.q.queue_write(w) })
    }

    fn mark_read(&self, user: &str, channel: &ChannelId, seq: Seq) -> BoxFut<'_, Result<Seq, StoreError>> {
        Box::pin(self.q.mark_read(user.to_owned(), channel.clone(), seq))
    }

    fn create_conversation(&self, c: NewConversation) -> BoxFut<'_, Result<Conversation, StoreError>> {
        Box::pin(self.q.create_conversation(c))
    }

    fn conversation(&self, channel: &ChannelId) -> BoxFut<'_, Result<Option<Conversation>, StoreError>> {
        let ch = channel.as_str().to_owned();
        Box::pin(self.read(async move |c| conversation(c, &ch).await))
    }

    fn conversations_of(&self, user: &str) -> BoxFut<'_, Result<Vec<Conversation>, StoreError>> {
        let user = user.to_owned();
        Box::pin(self.read(async move |c| {
            let st = c
                .prepare_cached(
                    "SELECT c.channel, c.title, c.creator, m2.user_id FROM members m
                     JOIN conversations c ON c.channel = m.channel
                     JOIN members m2 ON m2.channel = m.channel
                     WHERE m.user_id = $1 ORDER BY c.channel, m2.user_id",
                )
                .await?;
            let rows = c
                .query(&st, &[&user])
                .await?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
                .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
            Ok(conversations_from_rows(rows))
        }))
    }

    fn history(
        &self,
        channel: &ChannelId,
        after: Option<Seq>,
        before: Option<Seq>,
        limit: u32,
    ) -> BoxFut<'_, Result<(Vec<Entry>, bool), StoreError>> {
        let ch = channel.as_str().to_owned();
        let limit = limit.max(1) as i64;
        Box::pin(self.read(async move |c| {
            let (rows, desc) = if let Some(a) = after {
                let st = c
                    .prepare_cached(&format!(
                        "SELECT {COLS} FROM entries WHERE channel = $1 AND seq > $2 ORDER BY seq LIMIT $3"
                    ))
                    .await?;
                (c.query(&st, &[&ch, &(a as i64), &(limit + 1)]).await?, false)
            } else {
                let b = before.map(|b| b as i64).unwrap_or(i64::MAX);
                let st = c
                    .prepare_cached(&format!(
                        "SELECT {COLS} FROM entries WHERE channel = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
                    ))
                    .await?;
                (c.query(&st, &[&ch, &b, &(limit + 1)]).await?, true)
            };
            let mut v = rows.iter().map(row_entry).collect::<Result<Vec<_>, _>>()?;
            let more = v.len() as i64 > limit;
            v.truncate(limit as usize);
            if desc {
                v.reverse();
            }
            Ok((v, more))
        }))
    }

    fn summaries(&self, user: &str, channels: &[ChannelId]) -> BoxFut<'_, Result<Vec<ChannelState>, StoreError>> {
        let user = user.to_owned();
        let chans: Vec<String> = channels.iter().map(|c| c.as_str().to_owned()).collect();
        Box::pin(self.read(async move |c| {
            // One round trip for all of a session's channels.
            let st = c
                .prepare_cached(
                    "SELECT COALESCE(s.last_seq, 0), COALESCE(r.seq, 0),
                        (SELECT COUNT(*) FROM entries e WHERE e.channel = x.ch AND e.seq > COALESCE(r.seq, 0)
                          AND e.kind IN ('message', 'thread') AND e.author <> $2 AND NOT e.deleted)
                     FROM unnest($1::text[]) WITH ORDINALITY AS x(ch, i)
                     LEFT JOIN channels s ON s.channel = x.ch
                     LEFT JOIN read_markers r ON r.channel = x.ch AND r.user_id = $2
                     ORDER BY x.i",
                )
                .await?;
            c.query(&st, &[&chans, &user])
                .await?
                .iter()
                .map(|r| {
                    Ok(ChannelState {
                        last_seq: r.try_get::<_, i64>(0)? as Seq,
                        read_seq: r.try_get::<_, i64>(1)? as Seq,
                        unread: r.try_get::<_, i64>(2)? as u64,
                    })
                })
                .collect()
        }))
    }

    fn read_markers(&self, channel: &ChannelId, users: &[String]) -> BoxFut<'_, Result<Vec<Seq>, StoreError>> {
        let ch = channel.as_str().to_owned();
        let users = users.to_vec();
        Box::pin(self.read(async move |c| {
            let st = c
                .prepare_cached(
                    "SELECT COALESCE(r.seq, 0) FROM unnest($2::text[]) WITH ORDINALITY AS x(u, i)
                     LEFT JOIN read_markers r ON r.channel = $1 AND r.user_id = x.u ORDER BY x.i",
                )
                .await?;
            c.query(&st, &[&ch, &users]).await?.iter().map(|r| Ok(r.try_get::<_, i64>(0)? as Seq)).collect()
        }))
    }

    fn has_posted(&self, channel: &ChannelId, user: &str) -> BoxFut<'_, Result<bool, StoreError>> {
        let ch = channel.as_str().to_owned();
        let user = user.to_owned();
        Box::pin(self.read(async move |c| {
            // Messages always carry a client id: the idempotency index answers this.
            let st = c
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM entries WHERE channel = $1 AND author = $2
                     AND client_id IS NOT NULL AND kind = 'message')",
                )
                .await?;
            c.query_one(&st, &[&ch, &user]).await?.try_get(0)
        }))
    }

    fn entry(&self, channel: &ChannelId, seq: Seq) -> BoxFut<'_, Result<Option<Entry>, StoreError>> {
        let ch = channel.as_str().to_owned();
        Box::pin(self.read(async move |c| {
            let st = c.prepare_cached(&format!("SELECT {COLS} FROM entries WHERE channel = $1 AND seq = $2")).await?;
            c.query_opt(&st, &[&ch, &(seq as i64)]).await?.as_ref().map(row_entry).transpose()
        }))
    }

    fn set_mute(&self, channel: &ChannelId, user: &str, until_ms: i64) -> BoxFut<'_, Result<(), StoreError>> {
        Box::pin(self.q.set_mute(channel.clone(), user.to_owned(), until_ms))
    }

    fn muted_until(&self, channel: &ChannelId, user: &str) -> BoxFut<'_, Result<i64, StoreError>> {
        let ch = channel.as_str().to_owned();
        let user = user.to_owned();
        Box::pin(self.read(async move |c| {
            let st = c.prepare_cached("SELECT until_ms FROM mutes WHERE channel = $1 AND user_id = $2").await?;
            Ok(c.query_opt(&st, &[&ch, &user]).await?.map(|r| r.try_get(0)).transpose()?.unwrap_or(0))
        }))
    }

    fn save_directory(&self, school: &str, doc_json: String) -> BoxFut<'_, Result<(), StoreError>> {
        Box::pin(self.q.save_directory(school.to_owned(), doc_json))
    }

    fn load_directories(&self) -> BoxFut<'_, Result<Vec<String>, StoreError>> {
        Box::pin(self.read(async |c| {
            c.query("SELECT doc FROM directory ORDER BY school", &[]).await?.iter().map(|r| r.try_get(0)).collect()
        }))
    }

    fn save_setting(&self, key: &str, value_json: String) -> BoxFut<'_, Result<(), StoreError>> {
        Box::pin(self.q.save_setting(key.to_owned(), value_json))
    }

    fn load_setting(&self, key: &str) -> BoxFut<'_, Result<Option<String>, StoreError>> {
        let key = key.to_owned();
        Box::pin(self.read(async move |c| {
            c.query_opt("SELECT value FROM settings WHERE key = $1", &[&key]).await?.map(|r| r.try_get(0)).transpose()
        }))
    }

    fn put_record(&self, r: Record) -> BoxFut<'_, Result<(), StoreError>> {
        Box::pin(self.q.put_record(r))
    }

    fn records(
        &self,
        kind: &str,
        school: &str,
        since_ms: i64,
        limit: u32,
    ) -> BoxFut<'_, Result<Vec<Record>, StoreError>> {
        let (kind, school) = (kind.to_owned(), school.to_owned());
        Box::pin(self.read(async move |c| {
            let st = c
                .prepare_cached(
                    "SELECT kind, school, id, at, doc FROM records WHERE kind = $1 AND school = $2 AND at >= $3
                     ORDER BY at, id LIMIT $4",
                )
                .await?;
            c.query(&st, &[&kind, &school, &since_ms, &(limit as i64)]).await?.iter().map(row_record).collect()
        }))
    }

    fn record(&self, kind: &str, school: &str, id: &str) -> BoxFut<'_, Result<Option<Record>, StoreError>> {
        let (kind, school, id) = (kind.to_owned(), school.to_owned(), id.to_owned());
        Box::pin(self.read(async move |c| {
            c.query_opt(
                "SELECT kind, school, id, at, doc FROM records WHERE kind = $1 AND school = $2 AND id = $3",
                &[&kind, &school, &id],
            )
            .await?
            .as_ref()
            .map(row_record)
            .transpose()
        }))
    }

    fn purge_records(&self, kind: &str, before_ms: i64) -> BoxFut<'_, Result<u64, StoreError>> {
        Box::pin(self.q.purge_records(kind.to_owned(), before_ms))
    }

    fn authored(
        &self,
        author: &str,
        after: Option<(ChannelId, Seq)>,
        limit: u32,
    ) -> BoxFut<'_, Result<Vec<(ChannelId, Entry)>, StoreError>> {
        let author = author.to_owned();
        let (ch, seq) = after.map(|(c, s)| (c.as_str().to_owned(), s as i64)).unwrap_or_default();
        Box::pin(self.read(async move |c| {
            let st = c
                .prepare_cached(&format!(
                    "SELECT {COLS}, channel FROM entries WHERE author = $1 AND (channel, seq) > ($2, $3)
                     ORDER BY channel, seq LIMIT $4"
                ))
                .await?;
            let mut out = Vec::new();
            for r in c.query(&st, &[&author, &ch, &seq, &i64::from(limit.max(1))]).await? {
                let ch: String = r.try_get(16)?;
                if let Ok(id) = ChannelId::parse(&ch) {
                    out.push((id, row_entry(&r)?));
                }
            }
            Ok(out)
        }))
    }

    fn read_markers_of(&self, user: &str) -> BoxFut<'_, Result<Vec<(ChannelId, Seq)>, StoreError>> {
        let user = user.to_owned();
        Box::pin(self.read(async move |c| {
            let rows =
                c.query("SELECT channel, seq FROM read_markers WHERE user_id = $1 ORDER BY channel", &[&user]).await?;
            let mut out = Vec::new();
            for r in rows {
                let ch: String = r.try_get(0)?;
                if let Ok(id) = ChannelId::parse(&ch) {
                    out.push((id, r.try_get::<_, i64>(1)? as Seq));
                }
            }
            Ok(out)
        }))
    }

    fn delete_record(&self, kind: &str, school: &str, id: &str) -> BoxFut<'_, Result<(), StoreError>> {
        Box::pin(self.q.delete_record(kind.to_owned(), school.to_owned(), id.to_owned()))
    }

    fn expire(&self, x: Expiry) -> BoxFut<'_, Result<Erased, StoreError>> {
        Box::pin(self.q.expire(x))
    }

    fn erase_user(&self, e: Erasure) -> BoxFut<'_, Result<Erased, StoreError>> {
        Box::pin(self.q.erase(e))
    }

    fn try_lease(&self, name: &str, holder: &str, now_ms: i64, until_ms: i64) -> BoxFut<'_, Result<bool, StoreError>> {
        Box::pin(self.q.lease(name.to_owned(), holder.to_owned(), now_ms, until_ms))
    }

    fn ping(&self) -> BoxFut<'_, Result<(), StoreError>> {
        Box::pin(async move {
            if self.q.is_closed() {
                return Err(unavailable("writer is gone"));
            }
            self.read(async |c| c.query_one("SELECT 1", &[]).await.map(|_| ())).await?;
            if !self.healthy.load(Ordering::Relaxed) {
                // The server answers again; the writer reconnects at its next batch, so
                // readiness returns once a write has gone through.
                self.q.probe().await?;
            }
            Ok(())
        })
    }
}

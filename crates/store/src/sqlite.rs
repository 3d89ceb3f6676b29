//! The embedded store: SQLite in WAL mode.
//!
//! One writer thread owns the only write connection. Writes queue on a bounded channel;
//! the writer takes everything waiting (up to `max_batch`), applies each in its own
//! savepoint inside one `BEGIN IMMEDIATE` transaction, commits once (one fsync for the
//! whole batch with `synchronous=FULL`), answers, and hands what it committed, in commit
//! order, to a dispatcher thread that calls the commit hook: the writer never waits for
//! the fan-out to a channel's subscribers, so the next batch commits while the last one
//! is delivered.
//! Being the only writer, it allocates each channel's next seq from an in-memory cache
//! without races, and the cache is dropped whenever a commit fails, so seqs stay gapless.
//! Reads run on a small pool of read-only connections on tokio's blocking threads; WAL
//! lets them proceed while the writer commits.

use crate::queue::{Job, Op, Out, Queue};
use crate::rules;
use crate::types::*;
use crate::{BoxFut, CommitHook, Pending, Store};
use preau_proto::clock::SharedClock;
use preau_proto::{ChannelId, ChannelKind, Entry, EntryKind, Seq};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Options of the embedded store.
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// Database file.
    pub path: PathBuf,
    /// `synchronous=FULL` (durable across power loss) rather than `NORMAL` (durable across
    /// a process crash only).
    pub sync_full: bool,
    /// Most writes grouped in one transaction.
    pub max_batch: usize,
    /// Writes waiting for the writer before callers wait for room (or, for
    /// [`Store::queue_write`], are refused with `Overloaded`). Bounded so a stalled disk
    /// pushes back on senders instead of growing memory, and small enough that what is
    /// accepted commits within tens of milliseconds.
    pub queue: usize,
    /// Other processes write the same database (several gateways on one host): every seq
    /// is read from the table inside the write transaction instead of a cache.
    pub shared: bool,
    /// The wall clock that stamps entries.
    pub clock: SharedClock,
}

impl SqliteOptions {
    /// Defaults for a database at `path`.
    pub fn new(path: impl AsRef<Path>) -> Self {
        SqliteOptions {
            path: path.as_ref().to_path_buf(),
            sync_full: true,
            max_batch: 512,
            queue: 2048,
            shared: false,
            clock: preau_proto::clock::system(),
        }
    }
}

/// The embedded SQLite store.
pub struct SqliteStore {
    q: Queue,
    readers: Arc<ReaderPool>,
    healthy: Arc<AtomicBool>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS entries (
    channel TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, author TEXT NOT NULL,
    at INTEGER NOT NULL, body TEXT, title TEXT, thread INTEGER, reply_to INTEGER,
    target INTEGER, locked INTEGER, pinned INTEGER, members TEXT, joined INTEGER,
    edited INTEGER NOT NULL DEFAULT 0, deleted INTEGER NOT NULL DEFAULT 0, client_id TEXT,
    PRIMARY KEY (channel, seq)) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS entries_idem ON entries(channel, author, client_id)
    WHERE client_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS entries_by_author ON entries(author, channel, seq);
CREATE INDEX IF NOT EXISTS entries_with_members ON entries(channel) WHERE members IS NOT NULL;
CREATE INDEX IF NOT EXISTS entries_by_time ON entries(at);
CREATE TABLE IF NOT EXISTS conversations (
    channel TEXT PRIMARY KEY, kind TEXT NOT NULL, title TEXT NOT NULL, creator TEXT NOT NULL,
    client_id TEXT, created_at INTEGER NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS conversations_idem ON conversations(creator, client_id)
    WHERE client_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS members (
    channel TEXT NOT NULL, user TEXT NOT NULL, PRIMARY KEY (channel, user)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS members_by_user ON members(user, channel);
CREATE TABLE IF NOT EXISTS read_markers (
    user TEXT NOT NULL, channel TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (user, channel)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mutes (
    channel TEXT NOT NULL, user TEXT NOT NULL, until_ms INTEGER NOT NULL,
    PRIMARY KEY (channel, user)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS directory (
    school TEXT PRIMARY KEY, doc TEXT NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL, school TEXT NOT NULL, id TEXT NOT NULL, at INTEGER NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (kind, school, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_by_time ON records (kind, school, at);
CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY, at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at INTEGER NOT NULL);
";

const COLS: &str = "seq, kind, author, at, body, title, thread, reply_to, target, locked, pinned, members, joined, edited, deleted, client_id";

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Stored kinds are written by this code; an unknown one reads as a message.
fn kind_parse(s: &str) -> EntryKind {
    EntryKind::parse(s).unwrap_or(EntryKind::Message)
}

fn conv_kind_str(k: ChannelKind) -> &'static str {
    match k {
        ChannelKind::Direct => "direct",
        _ => "group",
    }
}

fn row_entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    let members: Option<String> = r.get(11)?;
    Ok(Entry {
        seq: r.get::<_, i64>(0)? as Seq,
        kind: kind_parse(&r.get::<_, String>(1)?),
        author: r.get(2)?,
        at: r.get(3)?,
        body: r.get(4)?,
        title: r.get(5)?,
        thread: r.get::<_, Option<i64>>(6)?.map(|v| v as Seq),
        reply_to: r.get::<_, Option<i64>>(7)?.map(|v| v as Seq),
        target: r.get::<_, Option<i64>>(8)?.map(|v| v as Seq),
        locked: r.get(9)?,
        pinned: r.get(10)?,
        members: members.and_then(|m| serde_json::from_str(&m).ok()).unwrap_or_default(),
        joined: r.get(12)?,
        edited: r.get(13)?,
        deleted: r.get(14)?,
        client_id: r.get(15)?,
    })
}

fn get_entry(c: &Connection, channel: &str, seq: Seq) -> rusqlite::Result<Option<Entry>> {
    c.query_row(
        &format!("SELECT {COLS} FROM entries WHERE channel = ?1 AND seq = ?2"),
        params![channel, seq as i64],
        row_entry,
    )
    .optional()
}

fn open(path: &Path, sync_full: bool) -> rusqlite::Result<Connection> {
    let c = Connection::open(path)?;
    c.busy_timeout(std::time::Duration::from_secs(5))?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", if sync_full { "FULL" } else { "NORMAL" })?;
    Ok(c)
}

impl SqliteStore {
    /// Opens (creating if needed) the database and starts the writer thread. `hook` is
    /// called after each commit with what it committed, in order.
    pub fn open(opts: SqliteOptions, hook: CommitHook) -> Result<Self, StoreError> {
        if let Some(dir) = opts.path.parent() {
            std::fs::create_dir_all(dir).map_err(unavailable)?;
        }
        let conn = open(&opts.path, opts.sync_full).map_err(unavailable)?;
        conn.execute_batch(SCHEMA).map_err(unavailable)?;
        // Removed rows are overwritten, not just unlinked: an erased person's messages must
        // not stay readable in free pages (docs/data-protection.md).
        conn.pragma_update(None, "secure_delete", true).map_err(unavailable)?;
        let (q, rx) = Queue::bounded(opts.queue);
        let healthy = Arc::new(AtomicBool::new(true));
        let h = healthy.clone();
        let max_batch = opts.max_batch.max(1);
        let shared = opts.shared;
        let clock = opts.clock.clone();
        // Bounded: a dispatcher that fell this far behind holds the writer back rather
        // than let committed events pile up in memory.
        let (events, dispatch) = std::sync::mpsc::sync_channel::<Vec<Committed>>(DISPATCH_BACKLOG);
        std::thread::Builder::new()
            .name("preau-store-dispatch".into())
            .spawn(move || {
                for batch in dispatch {
                    for ev in &batch {
                        hook(ev);
                    }
                }
            })
            .map_err(unavailable)?;
        std::thread::Builder::new()
            .name("preau-store-writer".into())
            .spawn(move || {
                Writer { conn, next: HashMap::new(), shared, events, healthy: h, clock, checkpoint: false }
                    .run(rx, max_batch)
            })
            .map_err(unavailable)?;
        Ok(SqliteStore { q, readers: Arc::new(ReaderPool { path: opts.path, idle: Mutex::new(Vec::new()) }), healthy })
    }

    async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
    ) -> Result<R, StoreError> {
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || pool.with(f)).await.map_err(unavailable)?
    }
}

struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReaderPool {
    fn with<R>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<R>) -> Result<R, StoreError> {
        let conn = self.idle.lock().map_err(unavailable)?.pop();
        let conn = match conn {
            Some(c) => c,
            None => {
                let c = open(&self.path, false).map_err(unavailable)?;
                c.pragma_update(None, "query_only", true).map_err(unavailable)?;
                c
            }
        };
        let r = f(&conn).map_err(unavailable);
        if r.is_ok() {
            // A connection that failed is dropped rather than reused.
            if let Ok(mut idle) = self.idle.lock() {
                idle.push(conn);
            }
        }
        r
    }
}

/// Committed batches the dispatcher may lag behind the writer.
const DISPATCH_BACKLOG: usize = 1024;

struct Writer {
    conn: Connection,
    /// Next seq of each channel seen since the last failed commit (unused when shared).
    next: HashMap<String, Seq>,
    /// Other processes write too: no cache, `BEGIN IMMEDIATE` serialises the writers.
    shared: bool,
    /// To the dispatcher, which calls the commit hook in commit order.
    events: std::sync::mpsc::SyncSender<Vec<Committed>>,
    healthy: Arc<AtomicBool>,
    /// Stamps entries (`at`) and saved documents.
    clock: SharedClock,
    /// An erasure finished in this batch: checkpoint after the commit, so the WAL keeps
    /// no copy of what it removed.
    checkpoint: bool,
}

/// A job's effect, kept until the commit succeeds.
struct Done {
    out: Result<Out, StoreError>,
    next: Option<(String, Seq)>,
    event: Option<Committed>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Job>, max_batch: usize) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < max_batch {
                match rx.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
            self.batch(batch);
        }
    }

    fn batch(&mut self, batch: Vec<Job>) {
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            self.fail(batch, e);
            return;
        }
        let mut done = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for job in batch {
            let d = self.job(job.op);
            if let Some((ch, n)) = &d.next
                && !self.shared
            {
                self.next.insert(ch.clone(), *n);
            }
            done.push(d);
            replies.push(job.reply);
        }
        if let Err(e) = self.conn.execute_batch("COMMIT") {
            let _ = self.conn.execute_batch("ROLLBACK");
            tracing::error!(error = %e, jobs = replies.len(), "store commit failed; batch refused");
            self.next.clear();
            self.healthy.store(false, Ordering::Relaxed);
            for r in replies {
                let _ = r.send(Err(unavailable(&e)));
            }
            return;
        }
        self.healthy.store(true, Ordering::Relaxed);
        if std::mem::take(&mut self.checkpoint)
            && let Err(e) = self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        {
            tracing::warn!(error = %e, "checkpoint after an erasure failed; the next one will do it");
        }
        let mut events = Vec::with_capacity(done.len());
        for (d, reply) in done.into_iter().zip(replies) {
            events.extend(d.event);
            let _ = reply.send(d.out);
        }
        if !events.is_empty() {
            let _ = self.events.send(events);
        }
    }

    fn fail(&mut self, batch: Vec<Job>, e: rusqlite::Error) {
        tracing::error!(error = %e, "store cannot begin a transaction");
        self.healthy.store(false, Ordering::Relaxed);
        self.next.clear();
        for j in batch {
            let _ = j.reply.send(Err(unavailable(&e)));
        }
    }

    /// Applies one job inside its own savepoint, so a failing job leaves the batch intact.
    fn job(&mut self, op: Op) -> Done {
        if let Err(e) = self.conn.execute_batch("SAVEPOINT job") {
            return Done { out: Err(unavailable(e)), next: None, event: None };
        }
        let r = self.apply(op);
        let ok = matches!(r, Ok(ref d) if d.out.is_ok());
        let end = if ok { "RELEASE job" } else { "ROLLBACK TO job; RELEASE job" };
        if let Err(e) = self.conn.execute_batch(end) {
            return Done { out: Err(unavailable(e)), next: None, event: None };
        }
        match r {
            Ok(d) if ok => d,
            Ok(d) => Done { out: d.out, next: None, event: None },
            Err(e) => Done { out: Err(unavailable(e)), next: None, event: None },
        }
    }

    fn next_seq(&self, channel: &str) -> rusqlite::Result<Seq> {
        if let Some(n) = self.next.get(channel) {
            return Ok(*n);
        }
        let max: i64 =
            self.conn
                .query_row("SELECT COALESCE(MAX(seq), 0) FROM entries WHERE channel = ?1", [channel], |r| r.get(0))?;
        Ok(max as Seq + 1)
    }

    /// One bounded step of an erasure (see [`Store::erase_user`]), inside the batch. A dry
    /// run applies all of it in a savepoint and rolls it back: its count is exact.
    fn erase(&mut self, e: &Erasure) -> rusqlite::Result<Erased> {
        if !e.dry_run {
            return self.erase_step(e);
        }
        self.conn.execute_batch("SAVEPOINT dry")?;
        let all = Erasure { limit: u32::MAX, ..e.clone() };
        let r = self.erase_step(&all);
        self.conn.execute_batch("ROLLBACK TO dry; RELEASE dry")?;
        r.map(|x| Erased { rows: x.rows, done: true })
    }

    fn erase_step(&mut self, e: &Erasure) -> rusqlite::Result<Erased> {
        let c = &self.conn;
        let (u, p) = (e.user.as_str(), e.pseudonym.as_str());
        // Membership entries list user ids as JSON strings.
        let (qu, qp) = (serde_json::to_string(u).unwrap_or_default(), serde_json::to_string(p).unwrap_or_default());
        let keep = e.keep_shared_posts;
        let mut left = i64::from(e.limit.max(1));
        let mut rows = 0u64;
        // Changes at most `left` rows; the statement's last parameter is the bound.
        let mut step = |change: &str, args: &[&dyn rusqlite::ToSql], left: &mut i64| -> rusqlite::Result<()> {
            let bound = *left;
            let mut a: Vec<&dyn rusqlite::ToSql> = args.to_vec();
            a.push(&bound);
            let n = c.execute(change, a.as_slice())? as i64;
            rows += n as u64;
            *left = (*left - n).max(0);
            Ok(())
        };
        for ch in &e.direct {
            let ch = ch.as_str();
            step(
                "DELETE FROM entries WHERE channel = ?1 AND seq IN (SELECT seq FROM entries WHERE channel = ?1 LIMIT ?2)",
                &[&ch],
                &mut left,
            )?;
            if left <= 0 {
                break;
            }
            for t in ["members", "read_markers", "mutes", "conversations"] {
                step(&format!("DELETE FROM {t} WHERE channel = ?1 AND ?2 > 0"), &[&ch], &mut left)?;
            }
        }
        let text = if keep { "body" } else { "NULL" };
        let title = if keep { "title" } else { "NULL" };
        let deleted = if keep { "deleted" } else { "CASE WHEN kind IN ('message', 'thread') THEN 1 ELSE deleted END" };
        step(
            &format!(
                "UPDATE entries SET author = ?2, client_id = NULL, body = {text}, title = {title}, deleted = {deleted}
                 WHERE (channel, seq) IN (SELECT channel, seq FROM entries WHERE author = ?1 LIMIT ?3)"
            ),
            &[&u, &p],
            &mut left,
        )?;
        step(
            "UPDATE entries SET members = replace(members, ?1, ?2) WHERE (channel, seq) IN
             (SELECT channel, seq FROM entries WHERE members IS NOT NULL AND instr(members, ?1) > 0 LIMIT ?3)",
            &[&qu, &qp],
            &mut left,
        )?;
        step(
            "UPDATE conversations SET creator = ?2, client_id = NULL WHERE creator = ?1 AND ?3 > 0",
            &[&u, &p],
            &mut left,
        )?;
        for (t, col) in [("members", "user"), ("read_markers", "user"), ("mutes", "user")] {
            step(&format!("DELETE FROM {t} WHERE {col} = ?1 AND ?2 > 0"), &[&u], &mut left)?;
        }
        Ok(Erased { rows, done: left > 0 })
    }

    fn apply(&mut self, op: Op) -> rusqlite::Result<Done> {
        let refuse = |e: StoreError| Done { out: Err(e), next: None, event: None };
        match op {
            Op::Write(w) => {
                let channel = w.channel().clone();
                let ch = channel.as_str().to_owned();
                let seq = self.next_seq(&ch)?;
                if let Some((_, author, client_id)) = rules::idempotency_key(&w) {
                    let dup = self
                        .conn
                        .query_row(
                            &format!(
                                "SELECT {COLS} FROM entries WHERE channel = ?1 AND author = ?2 AND client_id = ?3"
                            ),
                            params![ch, author, client_id],
                            row_entry,
                        )
                        .optional()?;
                    if let Some(entry) = dup {
                        return Ok(Done {
                            out: Ok(Out::Appended(Appended { channel, entry, duplicate: true })),
                            next: None,
                            event: None,
                        });
                    }
                }
                let mut found = Vec::new();
                for t in rules::targets(&w) {
                    if let Some(e) = get_entry(&self.conn, &ch, t)? {
                        found.push(e);
                    }
                }
                let mut e = match rules::decide(&w, |s| found.iter().find(|e| e.seq == s), self.clock.now_ms()) {
                    Ok(e) => e,
                    Err(why) => return Ok(refuse(why)),
                };
                e.seq = seq;
                // The target row changes in the same transaction as the entry appended.
                match &w {
                    Write::Edit { target, body, .. } => {
                        self.conn.execute(
                            "UPDATE entries SET body = ?3, edited = 1 WHERE channel = ?1 AND seq = ?2",
                            params![ch, *target as i64, body],
                        )?;
                    }
                    Write::Delete { target, .. } => {
                        // The text goes; the entry stays so seqs remain gapless.
                        self.conn.execute(
                            "UPDATE entries SET body = NULL, title = NULL, deleted = 1 WHERE channel = ?1 AND seq = ?2",
                            params![ch, *target as i64],
                        )?;
                    }
                    Write::ThreadState { thread, .. } => {
                        self.conn.execute(
                            "UPDATE entries SET locked = ?3, pinned = ?4 WHERE channel = ?1 AND seq = ?2",
                            params![ch, *thread as i64, e.locked, e.pinned],
                        )?;
                    }
                    Write::Membership { members, joined, .. } => {
                        for m in members {
                            if *joined {
                                self.conn.execute(
                                    "INSERT OR IGNORE INTO members (channel, user) VALUES (?1, ?2)",
                                    params![ch, m],
                                )?;
                            } else {
                                self.conn
                                    .execute("DELETE FROM members WHERE channel = ?1 AND user = ?2", params![ch, m])?;
                            }
                        }
                    }
                    Write::Post { .. } => {}
                }
                self.conn.execute(
                    &format!("INSERT INTO entries ({COLS}, channel) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17)"),
                    params![
                        e.seq as i64,
                        e.kind.as_str(),
                        e.author,
                        e.at,
                        e.body,
                        e.title,
                        e.thread.map(|v| v as i64),
                        e.reply_to.map(|v| v as i64),
                        e.target.map(|v| v as i64),
                        e.locked,
                        e.pinned,
                        if e.members.is_empty() { None } else { serde_json::to_string(&e.members).ok() },
                        e.joined,
                        e.edited,
                        e.deleted,
                        e.client_id,
                        ch,
                    ],
                )?;
                let appended = Appended { channel, entry: e, duplicate: false };
                Ok(Done {
                    out: Ok(Out::Appended(appended.clone())),
                    next: Some((ch, seq + 1)),
                    event: Some(Committed::Entry(appended)),
                })
            }
            Op::MarkRead { user, channel, seq } => {
                let last = self.next_seq(channel.as_str())? - 1;
                let seq = seq.min(last);
                let old: Option<i64> = self
                    .conn
                    .query_row(
                        "SELECT seq FROM read_markers WHERE user = ?1 AND channel = ?2",
                        params![user, channel.as_str()],
                        |r| r.get(0),
                    )
                    .optional()?;
                let old = old.unwrap_or(0) as Seq;
                if seq <= old {
                    return Ok(Done { out: Ok(Out::Seq(old)), next: None, event: None });
                }
                self.conn.execute(
                    "INSERT INTO read_markers (user, channel, seq) VALUES (?1, ?2, ?3)
                     ON CONFLICT (user, channel) DO UPDATE SET seq = excluded.seq",
                    params![user, channel.as_str(), seq as i64],
                )?;
                Ok(Done { out: Ok(Out::Seq(seq)), next: None, event: Some(Committed::Read { channel, user, seq }) })
            }
            Op::CreateConversation(c) => {
                if let Some(existing) = conversation(&self.conn, c.channel.as_str())? {
                    return Ok(Done { out: Ok(Out::Conversation(existing)), next: None, event: None });
                }
                if let Some(cid) = &c.client_id {
                    let ch: Option<String> = self
                        .conn
                        .query_row(
                            "SELECT channel FROM conversations WHERE creator = ?1 AND client_id = ?2",
                            params![c.creator, cid],
                            |r| r.get(0),
                        )
                        .optional()?;
                    if let Some(ch) = ch
                        && let Some(existing) = conversation(&self.conn, &ch)?
                    {
                        return Ok(Done { out: Ok(Out::Conversation(existing)), next: None, event: None });
                    }
                }
                self.conn.execute(
                    "INSERT INTO conversations (channel, kind, title, creator, client_id, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        c.channel.as_str(),
                        conv_kind_str(c.channel.kind()),
                        c.title,
                        c.creator,
                        c.client_id,
                        self.clock.now_ms()
                    ],
                )?;
                for m in &c.members {
                    self.conn.execute(
                        "INSERT OR IGNORE INTO members (channel, user) VALUES (?1, ?2)",
                        params![c.channel.as_str(), m],
                    )?;
                }
                let conv = conversation(&self.conn, c.channel.as_str())?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
                Ok(Done { out: Ok(Out::Conversation(conv)), next: None, event: None })
            }
            Op::SetMute { channel, user, until_ms } => {
                if until_ms <= 0 {
                    self.conn.execute(
                        "DELETE FROM mutes WHERE channel = ?1 AND user = ?2",
                        params![channel.as_str(), user],
                    )?;
                } else {
                    self.conn.execute(
                        "INSERT INTO mutes (channel, user, until_ms) VALUES (?1, ?2, ?3)
                         ON CONFLICT (channel, user) DO UPDATE SET until_ms = excluded.until_ms",
                        params![channel.as_str(), user, until_ms],
                    )?;
                }
                Ok(Done { out: Ok(Out::Unit), next: None, event: None })
            }
            Op::Probe => {
                self.conn.execute(
                    "INSERT INTO probe (id, at) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET at = excluded.at",
                    params![self.clock.now_ms()],
                )?;
                Ok(Done { out: Ok(Out::Unit), next: None, event: None })
            }
            Op::PutRecord(r) => {
                self.conn.execute(
                    "INSERT INTO records (kind, school, id, at, doc) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (kind, school, id) DO UPDATE SET at = excluded.at, doc = excluded.doc",
                    params![r.kind, r.school, r.id, r.at_ms, r.doc],
                )?;
                Ok(Done { out: Ok(Out::Unit), next: None, event: None })
            }
            Op::DeleteRecord { kind, school, id } => {
                self.conn.execute(
                    "DELETE FROM records WHERE kind = ?1 AND school = ?2 AND id = ?3",
                    params![kind, school, id],
                )?;
                // The last step of a purge (its departure record): nothing of it stays.
                self.checkpoint = true;
                Ok(Done { out: Ok(Out::Unit), next: None, event: None })
            }
            Op::Expire(x) => {
                let (lo, hi) = x.range();
                let limit = i64::from(x.limit.max(1));
                // Every expired entry but each channel's last, then that one emptied.
                let n = self.conn.execute(
                    "DELETE FROM entries WHERE (channel, seq) IN (SELECT channel, seq FROM entries e
                     WHERE at < ?3 AND channel >= ?1 AND channel < ?2
                     AND seq < (SELECT MAX(seq) FROM entries m WHERE m.channel = e.channel) LIMIT ?4)",
                    params![lo, hi, x.before_ms, limit],
                )? as i64;
                let m = self.conn.execute(
                    "UPDATE entries SET body = NULL, title = NULL, members = NULL, client_id = NULL, author = '',
                     deleted = 1 WHERE (channel, seq) IN (SELECT channel, seq FROM entries
                     WHERE at < ?3 AND channel >= ?1 AND channel < ?2 AND author <> '' LIMIT ?4)",
                    params![lo, hi, x.before_ms, (limit - n).max(0)],
                )? as i64;
                let done = n + m < limit;
                self.checkpoint |= done && n + m > 0;
                let out = Erased { rows: (n + m) as u64, done };
                Ok(Done { out: Ok(Out::Erased(out)), next: None, event: None })
            }
            Op::Erase(e) => {
                let out = self.erase(&e)?;
                self.checkpoint |= out.done && !e.dry_run;
                Ok(Done { out: Ok(Out::Erased(out)), next: None, event: None })
            }
            Op::Lease { name, holder, now_ms, until_ms } => {
                let key = format!("lease:{name}");
                let cur: Option<String> = self
                    .conn
                    .query_row("SELECT value FROM settings WHERE key = ?1", [&key], |r| r.get(0))
                    .optional()?;
                let held = cur.and_then(|v| serde_json::from_str::<serde_json::Value>(&v).ok()).is_some_and(|v| {
                    v["holder"].as_str() != Some(holder.as_str()) && v["until"].as_i64().unwrap_or(0) > now_ms
                });
                if !held {
                    let value = serde_json::json!({ "holder": holder, "until": until_ms }).to_string();
                    self.conn.execute(
                        "INSERT INTO settings (key, value, updated_at) VALUES (?1, ?2, ?3)
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                        params![key, value, now_ms],
                    )?;
                }
                Ok(Done { out: Ok(Out::Bool(!held)), next: None, event: None })
            }
            Op::PurgeRecords { kind, before_ms } => {
                let n =
                    self.conn.execute("DELETE FROM records WHERE kind = ?1 AND at < ?2", params![kind, before_ms])?;
                Ok(Done { out: Ok(Out::Seq(n as Seq)), next: None, event: None })
            }
            Op::SaveSetting { key, value } => {
                self.conn.execute(
                    "INSERT INTO settings (key, value, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    params![key, value, self.clock.now_ms()],
                )?;
                Ok(Done { out: Ok(Out::Unit), next: None, event: None })
            }
            Op::SaveDirectory { school, doc } => {
                self.conn.execute(
                    "INSERT INTO directory (school, doc, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (school) DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at",
                    params![school, doc, self.clock.now_ms()],
                )?;
                Ok(Done { out: Ok(Out::Unit), next: None, event: None })
            }
        }
    }
}

fn row_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<Record> {
    Ok(Record { kind: r.get(0)?, school: r.get(1)?, id: r.get(2)?, at_ms: r.get(3)?, doc: r.get(4)? })
}

fn conversation(c: &Connection, channel: &str) -> rusqlite::Result<Option<Conversation>> {
    let row = c
        .query_row("SELECT title, creator FROM conversations WHERE channel = ?1", [channel], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .optional()?;
    let Some((title, creator)) = row else {
        return Ok(None);
    };
    let Ok(id) = ChannelId::parse(channel) else {
        return Ok(None);
    };
    let mut st = c.prepare_cached("SELECT user FROM members WHERE channel = ?1 ORDER BY user")?;
    let members = st.query_map([channel], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(Some(Conversation { kind: id.kind(), channel: id, title, creator, members }))
}

impl Store for SqliteStore {
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
        Box::pin(self.read(move |c| conversation(c, &ch)))
    }

    fn conversations_of(&self, user: &str) -> BoxFut<'_, Result<Vec<Conversation>, StoreError>> {
        let user = user.to_owned();
        Box::pin(self.read(move |c| {
            // One query for all of them (a session's set-up runs this): each of the user's
            // conversations, a row per member, in channel then member order.
            let mut st = c.prepare_cached(
                "SELECT c.channel, c.title, c.creator, m2.user FROM members m
                 JOIN conversations c ON c.channel = m.channel
                 JOIN members m2 ON m2.channel = m.channel
                 WHERE m.user = ?1 ORDER BY c.channel, m2.user",
            )?;
            let rows = st
                .query_map([&user], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
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
        Box::pin(self.read(move |c| {
            let (mut v, desc) = if let Some(a) = after {
                let mut st = c.prepare_cached(&format!(
                    "SELECT {COLS} FROM entries WHERE channel = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
                ))?;
                (
                    st.query_map(params![ch, a as i64, limit + 1], row_entry)?.collect::<rusqlite::Result<Vec<_>>>()?,
                    false,
                )
            } else {
                let b = before.map(|b| b as i64).unwrap_or(i64::MAX);
                let mut st = c.prepare_cached(&format!(
                    "SELECT {COLS} FROM entries WHERE channel = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
                ))?;
                (st.query_map(params![ch, b, limit + 1], row_entry)?.collect::<rusqlite::Result<Vec<_>>>()?, true)
            };
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
        Box::pin(self.read(move |c| {
            let mut last = c.prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM entries WHERE channel = ?1")?;
            let mut read = c.prepare_cached("SELECT seq FROM read_markers WHERE user = ?1 AND channel = ?2")?;
            let mut unread = c.prepare_cached(
                "SELECT COUNT(*) FROM entries WHERE channel = ?1 AND seq > ?2 AND kind IN ('message', 'thread')
                 AND author <> ?3 AND deleted = 0",
            )?;
            let mut out = Vec::with_capacity(chans.len());
            for ch in &chans {
                let last_seq: i64 = last.query_row([ch], |r| r.get(0))?;
                let read_seq: i64 = read.query_row(params![user, ch], |r| r.get(0)).optional()?.unwrap_or(0);
                let n: i64 = unread.query_row(params![ch, read_seq, user], |r| r.get(0))?;
                out.push(ChannelState { last_seq: last_seq as Seq, read_seq: read_seq as Seq, unread: n as u64 });
            }
            Ok(out)
        }))
    }

    fn read_markers(&self, channel: &ChannelId, users: &[String]) -> BoxFut<'_, Result<Vec<Seq>, StoreError>> {
        let ch = channel.as_str().to_owned();
        let users = users.to_vec();
        Box::pin(self.read(move |c| {
            let mut st = c.prepare_cached("SELECT seq FROM read_markers WHERE user = ?1 AND channel = ?2")?;
            users
                .iter()
                .map(|u| Ok(st.query_row(params![u, ch], |r| r.get::<_, i64>(0)).optional()?.unwrap_or(0) as Seq))
                .collect()
        }))
    }

    fn has_posted(&self, channel: &ChannelId, user: &str) -> BoxFut<'_, Result<bool, StoreError>> {
        let ch = channel.as_str().to_owned();
        let user = user.to_owned();
        Box::pin(self.read(move |c| {
            c.query_row(
                "SELECT EXISTS (SELECT 1 FROM entries WHERE channel = ?1 AND author = ?2 AND kind = 'message')",
                params![ch, user],
                |r| r.get(0),
            )
        }))
    }

    fn entry(&self, channel: &ChannelId, seq: Seq) -> BoxFut<'_, Result<Option<Entry>, StoreError>> {
        let ch = channel.as_str().to_owned();
        Box::pin(self.read(move |c| get_entry(c, &ch, seq)))
    }

    fn set_mute(&self, channel: &ChannelId, user: &str, until_ms: i64) -> BoxFut<'_, Result<(), StoreError>> {
        Box::pin(self.q.set_mute(channel.clone(), user.to_owned(), until_ms))
    }

    fn muted_until(&self, channel: &ChannelId, user: &str) -> BoxFut<'_, Result<i64, StoreError>> {
        let ch = channel.as_str().to_owned();
        let user = user.to_owned();
        Box::pin(self.read(move |c| {
            Ok(c.query_row("SELECT until_ms FROM mutes WHERE channel = ?1 AND user = ?2", params![ch, user], |r| {
                r.get(0)
            })
            .optional()?
            .unwrap_or(0))
        }))
    }

    fn save_directory(&self, school: &str, doc_json: String) -> BoxFut<'_, Result<(), StoreError>> {
        Box::pin(self.q.save_directory(school.to_owned(), doc_json))
    }

    fn load_directories(&self) -> BoxFut<'_, Result<Vec<String>, StoreError>> {
        Box::pin(self.read(|c| {
            let mut st = c.prepare("SELECT doc FROM directory ORDER BY school")?;
            st.query_map([], |r| r.get(0))?.collect()
        }))
    }

    fn save_setting(&self, key: &str, value_json: String) -> BoxFut<'_, Result<(), StoreError>> {
        Box::pin(self.q.save_setting(key.to_owned(), value_json))
    }

    fn load_setting(&self, key: &str) -> BoxFut<'_, Result<Option<String>, StoreError>> {
        let key = key.to_owned();
        Box::pin(
            self.read(move |c| {
                c.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| r.get(0)).optional()
            }),
        )
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
        Box::pin(self.read(move |c| {
            let mut st = c.prepare(
                "SELECT kind, school, id, at, doc FROM records WHERE kind = ?1 AND school = ?2 AND at >= ?3
                 ORDER BY at, id LIMIT ?4",
            )?;
            st.query_map(params![kind, school, since_ms, limit], row_record)?.collect()
        }))
    }

    fn record(&self, kind: &str, school: &str, id: &str) -> BoxFut<'_, Result<Option<Record>, StoreError>> {
        let (kind, school, id) = (kind.to_owned(), school.to_owned(), id.to_owned());
        Box::pin(self.read(move |c| {
            c.query_row(
                "SELECT kind, school, id, at, doc FROM records WHERE kind = ?1 AND school = ?2 AND id = ?3",
                params![kind, school, id],
                row_record,
            )
            .optional()
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
        Box::pin(self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {COLS}, channel FROM entries WHERE author = ?1 AND (channel, seq) > (?2, ?3)
                 ORDER BY channel, seq LIMIT ?4"
            ))?;
            let rows = st
                .query_map(params![author, ch, seq, limit.max(1)], |r| Ok((r.get::<_, String>(16)?, row_entry(r)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows.into_iter().filter_map(|(ch, e)| ChannelId::parse(&ch).ok().map(|c| (c, e))).collect())
        }))
    }

    fn read_markers_of(&self, user: &str) -> BoxFut<'_, Result<Vec<(ChannelId, Seq)>, StoreError>> {
        let user = user.to_owned();
        Box::pin(self.read(move |c| {
            let mut st = c.prepare_cached("SELECT channel, seq FROM read_markers WHERE user = ?1 ORDER BY channel")?;
            let rows = st
                .query_map([&user], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows.into_iter().filter_map(|(ch, s)| ChannelId::parse(&ch).ok().map(|c| (c, s as Seq))).collect())
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
            // After a failed commit, only a write can tell the disk takes writes again
            // (a freed full disk): try one, so readiness comes back by itself.
            if !self.healthy.load(Ordering::Relaxed) {
                self.q.probe().await?;
            }
            self.read(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))).await.map(|_| ())
        })
    }
}

/// Copies the database at `db` to `to` while it may be serving: one read transaction
/// (`VACUUM INTO`), so the copy is the state of one moment, compacted, with nothing of
/// the write-ahead log left out. Written beside `to` and renamed: a copy cut short
/// leaves no file that looks whole. Returns the copy's size in bytes.
pub fn backup(db: &std::path::Path, to: &std::path::Path) -> Result<u64, String> {
    if to.exists() {
        return Err(format!("{}: already exists (a backup never overwrites)", to.display()));
    }
    let c = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("{}: cannot open the store: {e}", db.display()))?;
    c.busy_timeout(std::time::Duration::from_secs(30)).map_err(|e| e.to_string())?;
    let tmp = to.with_extension("partial");
    let _ = std::fs::remove_file(&tmp);
    c.execute("VACUUM INTO ?1", [tmp.to_string_lossy()]).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, to).map_err(|e| format!("{}: {e}", to.display()))?;
    std::fs::metadata(to).map(|m| m.len()).map_err(|e| e.to_string())
}

/// Checks a backup and puts it in place as the database at `db`, which must not exist
/// (restore into a new data folder; the gateway is not running there).
pub fn restore(from: &std::path::Path, db: &std::path::Path) -> Result<u64, String> {
    if db.exists() {
        return Err(format!("{}: a database is already there: restore into a new data folder", db.display()));
    }
    {
        let c = Connection::open_with_flags(from, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| format!("{}: cannot open the backup: {e}", from.display()))?;
        let ok: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(|e| format!("{}: not a Préau backup: {e}", from.display()))?;
        if ok != "ok" {
            return Err(format!("{}: the backup is damaged: {ok}", from.display()));
        }
        c.query_row("SELECT COUNT(*) FROM entries", [], |r| r.get::<_, i64>(0))
            .map_err(|e| format!("{}: not a Préau backup (no entries table): {e}", from.display()))?;
    }
    if let Some(dir) = db.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let tmp = db.with_extension("restoring");
    std::fs::copy(from, &tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, db).map_err(|e| format!("{}: {e}", db.display()))?;
    std::fs::metadata(db).map(|m| m.len()).map_err(|e| e.to_string())
}

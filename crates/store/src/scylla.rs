//! The ScyllaDB store, for a region: every gateway writes the same cluster.
//!
//! # Data model
//! - `entries`, partitioned by `(channel, bucket)` where `bucket = seq / BUCKET` and
//!   clustered by `seq`. Seqs are the channels' own clock, so a seq-range bucket plays the
//!   part of the time bucket large chat services use: partitions stay bounded (4096
//!   entries), and the partition of any seq is known without an index. Rows expire with
//!   the table's TTL (retention).
//! - `client_ids`, keyed by `(channel, author, client_id)`: the idempotency key, claimed
//!   with a lightweight transaction before the entry is written.
//! - `channel_heads`: a hint of each channel's last seq (never ahead of the truth).
//! - `conversations`, `conversation_keys`, `members`, `user_channels`, `posters`,
//!   `read_markers`, `mutes`, `directory`, `schema_version`.
//! - The data lifecycle's indexes (`lifecycle`): `authored`, `mentions`, `creators`,
//!   `user_mutes`, `written_days`, `scope_days`, kept by the write path, so a person's
//!   rows and a day's channels are found without a scan (erasure, export, retention).
//!
//! # Gapless sequences across gateways
//! A writer inserts its entry at `last + 1` with `INSERT ... IF NOT EXISTS` (Paxos); if
//! another writer took that seq it moves to the next. An entry exists for a seq before
//! anyone tries the one after, so there is never a hole, even if a gateway dies at any
//! point. Within one gateway, writes to a channel are serialised by a per-channel lock, so
//! its commit hook sees them in seq order; across gateways clients repair the order from
//! the seqs.
//!
//! # Idempotency
//! `client_ids` is claimed with a token (`IF NOT EXISTS`), the entry written, then the key
//! completed with the seq (`IF token = ?`). A retry finding a completed key gets the stored
//! entry. A retry finding a claim older than [`CLAIM_TIMEOUT_MS`] (its writer died) takes
//! it over, first looking for an entry the dead writer may have stored.
//!
//! Tested by the storage contract (`contract.rs`) when `PREAU_SCYLLA_NODES` names a live
//! cluster (`crates/store/tests/scylla_contract.rs`); see deploy/README.md.

mod lifecycle;

use crate::rules;
use crate::types::*;
use crate::{BoxFut, CommitHook, Store};
use preau_proto::clock::SharedClock;
use preau_proto::{ChannelId, ChannelKind, Entry, EntryKind, Seq};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};
use scylla::value::{CqlValue, Row};
use scylla::{DeserializeRow, SerializeRow};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Mutex;

/// Entries per partition.
pub const BUCKET: u64 = 4096;
/// A claim on an idempotency key older than this is taken over (its writer died).
pub const CLAIM_TIMEOUT_MS: i64 = 30_000;
/// Attempts to find a free seq before answering `unavailable`.
const MAX_SEQ_ATTEMPTS: u32 = 64;
/// The schema version [`ScyllaStore::migrate`] brings a keyspace to.
pub const SCHEMA_VERSION: i32 = 3;

pub use crate::types::ScyllaOptions;

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn bucket(seq: Seq) -> i64 {
    (seq / BUCKET) as i64
}

/// The CQL that creates (or completes) the schema; every statement is idempotent.
pub fn schema(ks: &str, rf: u32, retention_days: u32) -> Vec<String> {
    let ttl = u64::from(retention_days) * 86_400;
    // A day's index outlives the day's entries (it is written at the day's first one).
    let day_ttl = if ttl == 0 { 0 } else { ttl + 2 * 86_400 };
    vec![
        format!(
            "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {{'class': 'NetworkTopologyStrategy', 'replication_factor': {rf}}}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.entries (channel text, bucket bigint, seq bigint, kind text, author text, at bigint, \
             body text, title text, thread bigint, reply_to bigint, target bigint, locked boolean, pinned boolean, \
             members list<text>, joined boolean, edited boolean, deleted boolean, client_id text, \
             PRIMARY KEY ((channel, bucket), seq)) WITH CLUSTERING ORDER BY (seq ASC) AND default_time_to_live = {ttl}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.client_ids (channel text, author text, client_id text, seq bigint, token text, \
             claimed_at bigint, PRIMARY KEY ((channel, author, client_id))) WITH default_time_to_live = {ttl}"
        ),
        format!("CREATE TABLE IF NOT EXISTS {ks}.channel_heads (channel text PRIMARY KEY, last_seq bigint)"),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.conversations (channel text PRIMARY KEY, kind text, title text, creator text, \
             client_id text, created_at bigint)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.conversation_keys (creator text, client_id text, channel text, \
             PRIMARY KEY ((creator, client_id)))"
        ),
        format!("CREATE TABLE IF NOT EXISTS {ks}.members (channel text, user text, PRIMARY KEY (channel, user))"),
        format!("CREATE TABLE IF NOT EXISTS {ks}.user_channels (user text, channel text, PRIMARY KEY (user, channel))"),
        format!("CREATE TABLE IF NOT EXISTS {ks}.posters (channel text, user text, PRIMARY KEY (channel, user))"),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.read_markers (user text, channel text, seq bigint, PRIMARY KEY (user, channel))"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.mutes (channel text, user text, until_ms bigint, PRIMARY KEY (channel, user))"
        ),
        format!("CREATE TABLE IF NOT EXISTS {ks}.directory (school text PRIMARY KEY, doc text, updated_at bigint)"),
        format!("CREATE TABLE IF NOT EXISTS {ks}.settings (key text PRIMARY KEY, value text, updated_at bigint)"),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.records (kind text, school text, id text, at bigint, doc text, \
             PRIMARY KEY ((kind, school), id))"
        ),
        format!("CREATE TABLE IF NOT EXISTS {ks}.schema_version (id int PRIMARY KEY, version int)"),
        // Schema 3: the data lifecycle's indexes (see `lifecycle`).
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.authored (author text, channel text, seq bigint, \
             PRIMARY KEY (author, channel, seq)) WITH default_time_to_live = {ttl}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.mentions (user text, channel text, seq bigint, \
             PRIMARY KEY (user, channel, seq)) WITH default_time_to_live = {ttl}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.creators (creator text, channel text, PRIMARY KEY (creator, channel))"
        ),
        format!("CREATE TABLE IF NOT EXISTS {ks}.user_mutes (user text, channel text, PRIMARY KEY (user, channel))"),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.written_days (scope text, day bigint, channel text, \
             PRIMARY KEY ((scope, day), channel)) WITH default_time_to_live = {day_ttl}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.scope_days (scope text, day bigint, PRIMARY KEY (scope, day)) \
             WITH default_time_to_live = {day_ttl}"
        ),
        // A new retention applies to rows written from now on (the purge applies a
        // shorter one to older rows, `lifecycle`).
        format!("ALTER TABLE {ks}.entries WITH default_time_to_live = {ttl}"),
        format!("ALTER TABLE {ks}.client_ids WITH default_time_to_live = {ttl}"),
        format!("ALTER TABLE {ks}.authored WITH default_time_to_live = {ttl}"),
        format!("ALTER TABLE {ks}.mentions WITH default_time_to_live = {ttl}"),
    ]
}

#[derive(DeserializeRow, SerializeRow, Debug, Clone)]
struct EntryRow {
    channel: String,
    bucket: i64,
    seq: i64,
    kind: String,
    author: String,
    at: i64,
    body: Option<String>,
    title: Option<String>,
    thread: Option<i64>,
    reply_to: Option<i64>,
    target: Option<i64>,
    locked: Option<bool>,
    pinned: Option<bool>,
    members: Option<Vec<String>>,
    joined: Option<bool>,
    edited: Option<bool>,
    deleted: Option<bool>,
    client_id: Option<String>,
}

/// Stored kinds are written by this code; an unknown one reads as a message.
fn kind_parse(s: &str) -> EntryKind {
    EntryKind::parse(s).unwrap_or(EntryKind::Message)
}

impl EntryRow {
    fn from_entry(ch: &ChannelId, e: &Entry) -> Self {
        EntryRow {
            channel: ch.as_str().to_owned(),
            bucket: bucket(e.seq),
            seq: e.seq as i64,
            kind: e.kind.as_str().to_owned(),
            author: e.author.clone(),
            at: e.at,
            body: e.body.clone(),
            title: e.title.clone(),
            thread: e.thread.map(|v| v as i64),
            reply_to: e.reply_to.map(|v| v as i64),
            target: e.target.map(|v| v as i64),
            locked: e.locked,
            pinned: e.pinned,
            members: if e.members.is_empty() { None } else { Some(e.members.clone()) },
            joined: e.joined,
            edited: Some(e.edited),
            deleted: Some(e.deleted),
            client_id: e.client_id.clone(),
        }
    }

    fn into_entry(self) -> Entry {
        Entry {
            seq: self.seq as Seq,
            kind: kind_parse(&self.kind),
            author: self.author,
            at: self.at,
            body: self.body,
            title: self.title,
            thread: self.thread.map(|v| v as Seq),
            reply_to: self.reply_to.map(|v| v as Seq),
            target: self.target.map(|v| v as Seq),
            locked: self.locked,
            pinned: self.pinned,
            members: self.members.unwrap_or_default(),
            joined: self.joined,
            edited: self.edited.unwrap_or(false),
            deleted: self.deleted.unwrap_or(false),
            client_id: self.client_id,
        }
    }
}

const ENTRY_COLS: &str = "channel, bucket, seq, kind, author, at, body, title, thread, reply_to, target, locked, pinned, members, joined, edited, deleted, client_id";

/// Prepared statements, prepared once at startup.
struct Stmts {
    insert_entry_lwt: PreparedStatement,
    get_entry: PreparedStatement,
    after_in_bucket: PreparedStatement,
    before_in_bucket: PreparedStatement,
    last_in_bucket: PreparedStatement,
    set_body: PreparedStatement,
    insert_authored: PreparedStatement,
    insert_mention: PreparedStatement,
    insert_written_day: PreparedStatement,
    insert_scope_day: PreparedStatement,
    insert_creator: PreparedStatement,
    insert_user_mute: PreparedStatement,
    delete_user_mute: PreparedStatement,
    set_deleted: PreparedStatement,
    set_thread_state: PreparedStatement,
    get_head: PreparedStatement,
    set_head: PreparedStatement,
    get_client_id: PreparedStatement,
    claim_client_id: PreparedStatement,
    take_over_client_id: PreparedStatement,
    complete_client_id: PreparedStatement,
    insert_conversation_lwt: PreparedStatement,
    get_conversation: PreparedStatement,
    claim_conversation_key: PreparedStatement,
    insert_member: PreparedStatement,
    delete_member: PreparedStatement,
    insert_user_channel: PreparedStatement,
    delete_user_channel: PreparedStatement,
    members_of: PreparedStatement,
    channels_of: PreparedStatement,
    insert_poster: PreparedStatement,
    get_poster: PreparedStatement,
    get_marker: PreparedStatement,
    init_marker: PreparedStatement,
    raise_marker: PreparedStatement,
    set_mute: PreparedStatement,
    delete_mute: PreparedStatement,
    get_mute: PreparedStatement,
    save_directory: PreparedStatement,
    load_directories: PreparedStatement,
    save_setting: PreparedStatement,
    load_setting: PreparedStatement,
    put_record: PreparedStatement,
    records: PreparedStatement,
    record: PreparedStatement,
    old_records: PreparedStatement,
    delete_record: PreparedStatement,
    ping: PreparedStatement,
}

/// The ScyllaDB store.
pub struct ScyllaStore {
    session: Arc<Session>,
    /// The keyspace (statements not prepared at open name it).
    ks: String,
    st: Arc<Stmts>,
    hook: CommitHook,
    clock: SharedClock,
    /// Serialises this node's writes per channel (hook order, less Paxos contention).
    locks: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// The day and the channels this node has indexed in `written_days` that day, so a
    /// channel costs one index write a day, not one per entry.
    written: std::sync::Mutex<(i64, std::collections::HashSet<String>)>,
}

fn record_row(r: Row) -> Option<Record> {
    let mut c = r.columns.into_iter();
    match (c.next(), c.next(), c.next(), c.next(), c.next()) {
        (
            Some(Some(CqlValue::Text(kind))),
            Some(Some(CqlValue::Text(school))),
            Some(Some(CqlValue::Text(id))),
            Some(Some(CqlValue::BigInt(at_ms))),
            Some(Some(CqlValue::Text(doc))),
        ) => Some(Record { kind, school, id, at_ms, doc }),
        _ => None,
    }
}

fn applied(rows: &[Row]) -> bool {
    matches!(rows.first().and_then(|r| r.columns.first()), Some(Some(CqlValue::Boolean(true))))
}

impl ScyllaStore {
    /// Connects to the cluster.
    async fn session(opts: &ScyllaOptions) -> Result<Session, StoreError> {
        SessionBuilder::new().known_nodes(&opts.nodes).build().await.map_err(unavailable)
    }

    /// Creates or completes the schema (the `migrate` command).
    /// A keyspace at an older version gets the new tables and, from 2 to 3, the
    /// lifecycle indexes filled from the rows already there.
    pub async fn migrate(opts: &ScyllaOptions) -> Result<(), StoreError> {
        let s = ScyllaStore::session(opts).await?;
        let ks = &opts.keyspace;
        // No keyspace yet reads as no version (a fresh one has nothing to backfill).
        let was = match s.query_unpaged(format!("SELECT version FROM {ks}.schema_version WHERE id = 0"), &[]).await {
            Ok(r) => r.into_rows_result().ok().and_then(|r| r.maybe_first_row::<(i32,)>().ok().flatten()).map(|v| v.0),
            Err(_) => None,
        };
        for cql in schema(ks, opts.replication_factor, opts.retention_days) {
            s.query_unpaged(cql, &[]).await.map_err(unavailable)?;
        }
        if was.is_some_and(|v| v < 3) {
            let n = lifecycle::backfill(&s, ks).await?;
            tracing::info!(entries = n, "lifecycle indexes filled from the existing entries");
        }
        s.query_unpaged(format!("INSERT INTO {ks}.schema_version (id, version) VALUES (0, {SCHEMA_VERSION})"), &[])
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Connects, checks the schema version and prepares every statement.
    pub async fn open(opts: &ScyllaOptions, hook: CommitHook) -> Result<Self, StoreError> {
        let session = ScyllaStore::session(opts).await?;
        let ks = &opts.keyspace;
        let version: Option<(i32,)> = session
            .query_unpaged(format!("SELECT version FROM {ks}.schema_version WHERE id = 0"), &[])
            .await
            .map_err(|e| unavailable(format!("{e} (run `preau-gateway migrate` first)")))?
            .into_rows_result()
            .map_err(unavailable)?
            .maybe_first_row::<(i32,)>()
            .map_err(unavailable)?;
        if version.map(|v| v.0) != Some(SCHEMA_VERSION) {
            return Err(unavailable(format!(
                "keyspace {ks} is not at schema version {SCHEMA_VERSION}: run `preau-gateway migrate`"
            )));
        }
        let p = |cql: String| {
            let session = &session;
            async move {
                let mut ps = session.prepare(cql).await.map_err(unavailable)?;
                ps.set_consistency(Consistency::LocalQuorum);
                ps.set_serial_consistency(Some(SerialConsistency::LocalSerial));
                Ok::<_, StoreError>(ps)
            }
        };
        let marks = (1..=18).map(|_| "?").collect::<Vec<_>>().join(", ");
        let st = Stmts {
            insert_entry_lwt: p(format!("INSERT INTO {ks}.entries ({ENTRY_COLS}) VALUES ({marks}) IF NOT EXISTS")).await?,
            get_entry: p(format!("SELECT {ENTRY_COLS} FROM {ks}.entries WHERE channel = ? AND bucket = ? AND seq = ?")).await?,
            after_in_bucket: p(format!(
                "SELECT {ENTRY_COLS} FROM {ks}.entries WHERE channel = ? AND bucket = ? AND seq > ? ORDER BY seq ASC LIMIT ?"
            ))
            .await?,
            before_in_bucket: p(format!(
                "SELECT {ENTRY_COLS} FROM {ks}.entries WHERE channel = ? AND bucket = ? AND seq < ? ORDER BY seq DESC LIMIT ?"
            ))
            .await?,
            last_in_bucket: p(format!(
                "SELECT seq FROM {ks}.entries WHERE channel = ? AND bucket = ? ORDER BY seq DESC LIMIT 1"
            ))
            .await?,
            // Updated cells keep the row's TTL, so a row never outlives itself in part.
            set_body: p(format!(
                "UPDATE {ks}.entries USING TTL ? SET body = ?, edited = true WHERE channel = ? AND bucket = ? AND seq = ?"
            ))
            .await?,
            set_deleted: p(format!(
                "UPDATE {ks}.entries USING TTL ? SET body = null, title = null, deleted = true WHERE channel = ? AND bucket = ? AND seq = ?"
            ))
            .await?,
            set_thread_state: p(format!(
                "UPDATE {ks}.entries USING TTL ? SET locked = ?, pinned = ? WHERE channel = ? AND bucket = ? AND seq = ?"
            ))
            .await?,
            insert_authored: p(format!("INSERT INTO {ks}.authored (author, channel, seq) VALUES (?, ?, ?)")).await?,
            insert_mention: p(format!("INSERT INTO {ks}.mentions (user, channel, seq) VALUES (?, ?, ?)")).await?,
            insert_written_day: p(format!("INSERT INTO {ks}.written_days (scope, day, channel) VALUES (?, ?, ?)"))
                .await?,
            insert_scope_day: p(format!("INSERT INTO {ks}.scope_days (scope, day) VALUES (?, ?)")).await?,
            insert_creator: p(format!("INSERT INTO {ks}.creators (creator, channel) VALUES (?, ?)")).await?,
            insert_user_mute: p(format!("INSERT INTO {ks}.user_mutes (user, channel) VALUES (?, ?)")).await?,
            delete_user_mute: p(format!("DELETE FROM {ks}.user_mutes WHERE user = ? AND channel = ?")).await?,
            get_head: p(format!("SELECT last_seq FROM {ks}.channel_heads WHERE channel = ?")).await?,
            set_head: p(format!("UPDATE {ks}.channel_heads SET last_seq = ? WHERE channel = ?")).await?,
            get_client_id: p(format!(
                "SELECT seq, token, claimed_at FROM {ks}.client_ids WHERE channel = ? AND author = ? AND client_id = ?"
            ))
            .await?,
            claim_client_id: p(format!(
                "INSERT INTO {ks}.client_ids (channel, author, client_id, seq, token, claimed_at) VALUES (?, ?, ?, 0, ?, ?) IF NOT EXISTS"
            ))
            .await?,
            take_over_client_id: p(format!(
                "UPDATE {ks}.client_ids SET token = ?, claimed_at = ? WHERE channel = ? AND author = ? AND client_id = ? IF token = ? AND seq = 0"
            ))
            .await?,
            complete_client_id: p(format!(
                "UPDATE {ks}.client_ids SET seq = ? WHERE channel = ? AND author = ? AND client_id = ? IF token = ?"
            ))
            .await?,
            insert_conversation_lwt: p(format!(
                "INSERT INTO {ks}.conversations (channel, kind, title, creator, client_id, created_at) VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS"
            ))
            .await?,
            get_conversation: p(format!("SELECT title, creator FROM {ks}.conversations WHERE channel = ?")).await?,
            claim_conversation_key: p(format!(
                "INSERT INTO {ks}.conversation_keys (creator, client_id, channel) VALUES (?, ?, ?) IF NOT EXISTS"
            ))
            .await?,
            insert_member: p(format!("INSERT INTO {ks}.members (channel, user) VALUES (?, ?)")).await?,
            delete_member: p(format!("DELETE FROM {ks}.members WHERE channel = ? AND user = ?")).await?,
            insert_user_channel: p(format!("INSERT INTO {ks}.user_channels (user, channel) VALUES (?, ?)")).await?,
            delete_user_channel: p(format!("DELETE FROM {ks}.user_channels WHERE user = ? AND channel = ?")).await?,
            members_of: p(format!("SELECT user FROM {ks}.members WHERE channel = ?")).await?,
            channels_of: p(format!("SELECT channel FROM {ks}.user_channels WHERE user = ?")).await?,
            insert_poster: p(format!("INSERT INTO {ks}.posters (channel, user) VALUES (?, ?)")).await?,
            get_poster: p(format!("SELECT user FROM {ks}.posters WHERE channel = ? AND user = ?")).await?,
            get_marker: p(format!("SELECT seq FROM {ks}.read_markers WHERE user = ? AND channel = ?")).await?,
            init_marker: p(format!("INSERT INTO {ks}.read_markers (user, channel, seq) VALUES (?, ?, 0) IF NOT EXISTS")).await?,
            raise_marker: p(format!("UPDATE {ks}.read_markers SET seq = ? WHERE user = ? AND channel = ? IF seq < ?")).await?,
            set_mute: p(format!("UPDATE {ks}.mutes SET until_ms = ? WHERE channel = ? AND user = ?")).await?,
            delete_mute: p(format!("DELETE FROM {ks}.mutes WHERE channel = ? AND user = ?")).await?,
            get_mute: p(format!("SELECT until_ms FROM {ks}.mutes WHERE channel = ? AND user = ?")).await?,
            save_directory: p(format!("UPDATE {ks}.directory SET doc = ?, updated_at = ? WHERE school = ?")).await?,
            load_directories: p(format!("SELECT doc FROM {ks}.directory")).await?,
            save_setting: p(format!("UPDATE {ks}.settings SET value = ?, updated_at = ? WHERE key = ?")).await?,
            load_setting: p(format!("SELECT value FROM {ks}.settings WHERE key = ?")).await?,
            put_record: p(format!("INSERT INTO {ks}.records (kind, school, id, at, doc) VALUES (?, ?, ?, ?, ?)")).await?,
            records: p(format!("SELECT kind, school, id, at, doc FROM {ks}.records WHERE kind = ? AND school = ?"))
                .await?,
            record: p(format!("SELECT kind, school, id, at, doc FROM {ks}.records WHERE kind = ? AND school = ? AND id = ?"))
                .await?,
            // Retention runs rarely (hourly) over a small table: a filtered scan is enough.
            old_records: p(format!("SELECT school, id FROM {ks}.records WHERE kind = ? AND at < ? ALLOW FILTERING"))
                .await?,
            delete_record: p(format!("DELETE FROM {ks}.records WHERE kind = ? AND school = ? AND id = ?")).await?,
            ping: p("SELECT release_version FROM system.local".to_owned()).await?,
        };
        Ok(ScyllaStore {
            ks: opts.keyspace.clone(),
            session: Arc::new(session),
            st: Arc::new(st),
            hook,
            clock: opts.clock.clone(),
            locks: std::sync::Mutex::new(HashMap::new()),
            written: std::sync::Mutex::new((0, Default::default())),
        })
    }

    fn lock(&self, ch: &str) -> Arc<Mutex<()>> {
        let mut m = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(ch.to_owned()).or_default().clone()
    }

    async fn rows(
        &self,
        ps: &PreparedStatement,
        v: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Vec<Row>, StoreError> {
        let r = self.session.execute_unpaged(ps, v).await.map_err(unavailable)?;
        if !r.is_rows() {
            return Ok(Vec::new());
        }
        r.into_rows_result()
            .map_err(unavailable)?
            .rows::<Row>()
            .map_err(unavailable)?
            .collect::<Result<_, _>>()
            .map_err(unavailable)
    }

    async fn entries(
        &self,
        ps: &PreparedStatement,
        v: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Vec<Entry>, StoreError> {
        let r = self.session.execute_unpaged(ps, v).await.map_err(unavailable)?;
        let rows = r.into_rows_result().map_err(unavailable)?;
        rows.rows::<EntryRow>()
            .map_err(unavailable)?
            .map(|r| r.map(EntryRow::into_entry).map_err(unavailable))
            .collect()
    }

    async fn get_entry(&self, ch: &str, seq: Seq) -> Result<Option<Entry>, StoreError> {
        Ok(self.entries(&self.st.get_entry, (ch, bucket(seq), seq as i64)).await?.into_iter().next())
    }

    /// The channel's last seq: from the hint, then forward through the buckets.
    async fn last_seq(&self, ch: &str) -> Result<Seq, StoreError> {
        let hint = self.rows(&self.st.get_head, (ch,)).await?;
        let mut last = match hint.first().and_then(|r| r.columns.first()) {
            Some(Some(CqlValue::BigInt(v))) => *v as Seq,
            _ => 0,
        };
        loop {
            let mut moved = false;
            for b in [bucket(last), bucket(last) + 1] {
                let r = self.rows(&self.st.last_in_bucket, (ch, b)).await?;
                if let Some(Some(CqlValue::BigInt(v))) = r.first().and_then(|r| r.columns.first())
                    && *v as Seq > last
                {
                    last = *v as Seq;
                    moved = true;
                }
            }
            if !moved {
                return Ok(last);
            }
        }
    }

    /// Appends an entry at the next free seq; returns it with its seq.
    async fn append(&self, ch: &ChannelId, mut e: Entry) -> Result<Entry, StoreError> {
        let mut next = self.last_seq(ch.as_str()).await? + 1;
        for _ in 0..MAX_SEQ_ATTEMPTS {
            e.seq = next;
            let rows = self.rows(&self.st.insert_entry_lwt, EntryRow::from_entry(ch, &e)).await?;
            if applied(&rows) {
                // A hint only: racing writers may set it lower, never beyond what exists.
                let _ = self.session.execute_unpaged(&self.st.set_head, (next as i64, ch.as_str())).await;
                self.index(ch.as_str(), &e).await?;
                return Ok(e);
            }
            next += 1;
        }
        Err(unavailable("too much contention on this channel's sequence"))
    }

    /// The lifecycle's index rows of a new entry (`lifecycle`): its author, the members
    /// it names, and its channel under the day it was written.
    async fn index(&self, ch: &str, e: &Entry) -> Result<(), StoreError> {
        let seq = e.seq as i64;
        if !e.author.is_empty() {
            self.session
                .execute_unpaged(&self.st.insert_authored, (e.author.as_str(), ch, seq))
                .await
                .map_err(unavailable)?;
        }
        for m in &e.members {
            self.session.execute_unpaged(&self.st.insert_mention, (m.as_str(), ch, seq)).await.map_err(unavailable)?;
        }
        let day = e.at.div_euclid(lifecycle::DAY_MS);
        let fresh = {
            let mut w = self.written.lock().unwrap_or_else(|p| p.into_inner());
            if w.0 != day {
                *w = (day, Default::default());
            }
            w.1.insert(ch.to_owned())
        };
        if fresh {
            let sc = lifecycle::scope(ch);
            let r = async {
                self.session.execute_unpaged(&self.st.insert_scope_day, (sc, day)).await?;
                self.session.execute_unpaged(&self.st.insert_written_day, (sc, day, ch)).await
            };
            if let Err(err) = r.await {
                // Not indexed: the next entry of the day tries again.
                self.written.lock().unwrap_or_else(|p| p.into_inner()).1.remove(ch);
                return Err(unavailable(err));
            }
        }
        Ok(())
    }

    fn publish(&self, a: &Appended) {
        (self.hook)(&Committed::Entry(a.clone()));
    }

    async fn post(&self, w: Write) -> Result<Appended, StoreError> {
        let Write::Post { channel, kind, author, client_id, .. } = &w else {
            return Err(StoreError::Invalid("not a post"));
        };
        let (channel, kind, author, client_id) = (channel.clone(), *kind, author.clone(), client_id.clone());
        let ch = channel.as_str().to_owned();
        let key = (ch.as_str(), author.as_str(), client_id.as_str());
        let token = format!("{:016x}", rand::random::<u64>());
        // Claim the idempotency key, or find the entry it already names.
        let claim =
            self.rows(&self.st.claim_client_id, (key.0, key.1, key.2, token.as_str(), self.clock.now_ms())).await?;
        if !applied(&claim) {
            let cur = self.rows(&self.st.get_client_id, key).await?;
            let cols = cur.first().map(|r| r.columns.clone()).unwrap_or_default();
            let seq = match cols.first() {
                Some(Some(CqlValue::BigInt(s))) => *s,
                _ => 0,
            };
            if seq > 0 {
                let entry = self.get_entry(&ch, seq as Seq).await?.ok_or(StoreError::NotFound)?;
                return Ok(Appended { channel, entry, duplicate: true });
            }
            let (old_token, claimed_at) = match (cols.get(1), cols.get(2)) {
                (Some(Some(CqlValue::Text(t))), Some(Some(CqlValue::BigInt(at)))) => (t.clone(), *at),
                _ => (String::new(), 0),
            };
            if self.clock.now_ms() - claimed_at < CLAIM_TIMEOUT_MS {
                return Err(unavailable("a retry of this message is already in progress"));
            }
            let took = self
                .rows(
                    &self.st.take_over_client_id,
                    (token.as_str(), self.clock.now_ms(), key.0, key.1, key.2, old_token.as_str()),
                )
                .await?;
            if !applied(&took) {
                return Err(unavailable("a retry of this message is already in progress"));
            }
            // The dead writer may have stored the entry before dying: look near the end.
            let last = self.last_seq(&ch).await?;
            let (recent, _) = self.history_inner(&ch, None, Some(last + 1), 512).await?;
            if let Some(entry) =
                recent.into_iter().find(|e| e.author == author && e.client_id.as_deref() == Some(&client_id))
            {
                let _ = self
                    .rows(&self.st.complete_client_id, (entry.seq as i64, key.0, key.1, key.2, token.as_str()))
                    .await?;
                return Ok(Appended { channel, entry, duplicate: true });
            }
        }
        let e = self.decide(&ch, &w).await?;
        let entry = self.append(&channel, e).await?;
        self.rows(&self.st.complete_client_id, (entry.seq as i64, key.0, key.1, key.2, token.as_str())).await?;
        if kind == EntryKind::Message {
            self.session
                .execute_unpaged(&self.st.insert_poster, (ch.as_str(), author.as_str()))
                .await
                .map_err(unavailable)?;
        }
        Ok(Appended { channel, entry, duplicate: false })
    }

    /// Reads the entries `w` targets and applies the entry rules: the entry to append.
    async fn decide(&self, ch: &str, w: &Write) -> Result<Entry, StoreError> {
        let mut found = Vec::new();
        for t in rules::targets(w) {
            if let Some(e) = self.get_entry(ch, t).await? {
                found.push(e);
            }
        }
        rules::decide(w, |s| found.iter().find(|e| e.seq == s), self.clock.now_ms())
    }

    /// Edits, deletes, thread states and membership: the log entry is appended first (the
    /// log is the truth a resuming client replays), then the target row updated.
    async fn change(&self, w: Write) -> Result<Appended, StoreError> {
        let channel = w.channel().clone();
        let ch = channel.as_str().to_owned();
        let e = self.decide(&ch, &w).await?;
        // The target's remaining TTL, for its updated cells.
        let ttl = match &w {
            Write::Edit { target: t, .. } | Write::Delete { target: t, .. } | Write::ThreadState { thread: t, .. } => {
                self.entry_ttl(&ch, *t).await?.ok_or(StoreError::NotFound)?
            }
            _ => 0,
        };
        // The log entry first (the truth a resuming client replays), then the target row.
        let entry = self.append(&channel, e).await?;
        match &w {
            Write::Edit { target, body, .. } => {
                self.session
                    .execute_unpaged(
                        &self.st.set_body,
                        (ttl, body.as_str(), ch.as_str(), bucket(*target), *target as i64),
                    )
                    .await
                    .map_err(unavailable)?;
            }
            Write::Delete { target, .. } => {
                self.session
                    .execute_unpaged(&self.st.set_deleted, (ttl, ch.as_str(), bucket(*target), *target as i64))
                    .await
                    .map_err(unavailable)?;
            }
            Write::ThreadState { thread, .. } => {
                let (l, p) = (entry.locked.unwrap_or(false), entry.pinned.unwrap_or(false));
                self.session
                    .execute_unpaged(
                        &self.st.set_thread_state,
                        (ttl, l, p, ch.as_str(), bucket(*thread), *thread as i64),
                    )
                    .await
                    .map_err(unavailable)?;
            }
            Write::Membership { members, joined, .. } => {
                for m in members {
                    let (a, b) = if *joined {
                        (&self.st.insert_member, &self.st.insert_user_channel)
                    } else {
                        (&self.st.delete_member, &self.st.delete_user_channel)
                    };
                    self.session.execute_unpaged(a, (ch.as_str(), m.as_str())).await.map_err(unavailable)?;
                    self.session.execute_unpaged(b, (m.as_str(), ch.as_str())).await.map_err(unavailable)?;
                }
            }
            Write::Post { .. } => return Err(StoreError::Invalid("not a change")),
        }
        Ok(Appended { channel, entry, duplicate: false })
    }

    async fn history_inner(
        &self,
        ch: &str,
        after: Option<Seq>,
        before: Option<Seq>,
        limit: u32,
    ) -> Result<(Vec<Entry>, bool), StoreError> {
        let want = limit.max(1) as usize + 1;
        let mut out = Vec::new();
        if let Some(a) = after {
            let last = self.last_seq(ch).await?;
            let mut b = bucket(a + 1);
            let mut from = a;
            while out.len() < want && (b as u64) * BUCKET <= last {
                let page =
                    self.entries(&self.st.after_in_bucket, (ch, b, from as i64, (want - out.len()) as i32)).await?;
                out.extend(page);
                b += 1;
                from = (b as u64) * BUCKET - 1;
            }
            let more = out.len() > limit as usize;
            out.truncate(limit as usize);
            Ok((out, more))
        } else {
            let top = match before {
                Some(b) => b,
                None => self.last_seq(ch).await? + 1,
            };
            let mut b = bucket(top.saturating_sub(1));
            let mut below = top;
            while out.len() < want && b >= 0 && below > 1 {
                let page =
                    self.entries(&self.st.before_in_bucket, (ch, b, below as i64, (want - out.len()) as i32)).await?;
                out.extend(page);
                below = (b as u64) * BUCKET;
                b -= 1;
            }
            let more = out.len() > limit as usize;
            out.truncate(limit as usize);
            out.reverse();
            Ok((out, more))
        }
    }

    async fn conversation_inner(&self, ch: &str) -> Result<Option<Conversation>, StoreError> {
        let r = self.rows(&self.st.get_conversation, (ch,)).await?;
        let Some(row) = r.first() else { return Ok(None) };
        let text = |i: usize| match row.columns.get(i) {
            Some(Some(CqlValue::Text(t))) => t.clone(),
            _ => String::new(),
        };
        let Ok(id) = ChannelId::parse(ch) else { return Ok(None) };
        let mut members: Vec<String> = self
            .rows(&self.st.members_of, (ch,))
            .await?
            .into_iter()
            .filter_map(|r| match r.columns.into_iter().next() {
                Some(Some(CqlValue::Text(t))) => Some(t),
                _ => None,
            })
            .collect();
        members.sort();
        Ok(Some(Conversation { kind: id.kind(), channel: id, title: text(0), creator: text(1), members }))
    }

    async fn marker(&self, user: &str, ch: &str) -> Result<Seq, StoreError> {
        Ok(match self.rows(&self.st.get_marker, (user, ch)).await?.first().and_then(|r| r.columns.first()) {
            Some(Some(CqlValue::BigInt(v))) => *v as Seq,
            _ => 0,
        })
    }
}

impl Store for ScyllaStore {
    fn write(&self, w: Write) -> BoxFut<'_, Result<Appended, StoreError>> {
        Box::pin(async move {
            let lock = self.lock(w.channel().as_str());
            let _g = lock.lock().await;
            let r = if matches!(w, Write::Post { .. }) { self.post(w).await? } else { self.change(w).await? };
            if !r.duplicate {
                self.publish(&r);
            }
            Ok(r)
        })
    }

    fn mark_read(&self, user: &str, channel: &ChannelId, seq: Seq) -> BoxFut<'_, Result<Seq, StoreError>> {
        let (user, channel) = (user.to_owned(), channel.clone());
        Box::pin(async move {
            let ch = channel.as_str();
            let seq = seq.min(self.last_seq(ch).await?);
            self.rows(&self.st.init_marker, (user.as_str(), ch)).await?;
            let r = self.rows(&self.st.raise_marker, (seq as i64, user.as_str(), ch, seq as i64)).await?;
            if applied(&r) {
                (self.hook)(&Committed::Read { channel: channel.clone(), user: user.clone(), seq });
                Ok(seq)
            } else {
                self.marker(&user, ch).await
            }
        })
    }

    fn create_conversation(&self, c: NewConversation) -> BoxFut<'_, Result<Conversation, StoreError>> {
        Box::pin(async move {
            let mut channel = c.channel.as_str().to_owned();
            if let Some(cid) = &c.client_id {
                let r = self
                    .rows(&self.st.claim_conversation_key, (c.creator.as_str(), cid.as_str(), channel.as_str()))
                    .await?;
                if !applied(&r) {
                    // The key exists: its channel is the conversation created first.
                    if let Some(Some(CqlValue::Text(existing))) =
                        r.first().and_then(|r| r.columns.get(3).or(r.columns.last()))
                    {
                        channel = existing.clone();
                    }
                    if let Some(conv) = self.conversation_inner(&channel).await? {
                        return Ok(conv);
                    }
                }
            }
            let kind = if c.channel.kind() == ChannelKind::Direct { "direct" } else { "group" };
            self.rows(
                &self.st.insert_conversation_lwt,
                (
                    channel.as_str(),
                    kind,
                    c.title.as_str(),
                    c.creator.as_str(),
                    c.client_id.as_deref(),
                    self.clock.now_ms(),
                ),
            )
            .await?;
            self.session
                .execute_unpaged(&self.st.insert_creator, (c.creator.as_str(), channel.as_str()))
                .await
                .map_err(unavailable)?;
            for m in &c.members {
                self.session
                    .execute_unpaged(&self.st.insert_member, (channel.as_str(), m.as_str()))
                    .await
                    .map_err(unavailable)?;
                self.session
                    .execute_unpaged(&self.st.insert_user_channel, (m.as_str(), channel.as_str()))
                    .await
                    .map_err(unavailable)?;
            }
            self.conversation_inner(&channel).await?.ok_or(StoreError::NotFound)
        })
    }

    fn conversation(&self, channel: &ChannelId) -> BoxFut<'_, Result<Option<Conversation>, StoreError>> {
        let ch = channel.as_str().to_owned();
        Box::pin(async move { self.conversation_inner(&ch).await })
    }

    fn conversations_of(&self, user: &str) -> BoxFut<'_, Result<Vec<Conversation>, StoreError>> {
        let user = user.to_owned();
        Box::pin(async move {
            let chans: Vec<String> = self
                .rows(&self.st.channels_of, (user.as_str(),))
                .await?
                .into_iter()
                .filter_map(|r| match r.columns.into_iter().next() {
                    Some(Some(CqlValue::Text(t))) => Some(t),
                    _ => None,
                })
                .collect();
            let mut out = Vec::new();
            for ch in chans {
                if let Some(c) = self.conversation_inner(&ch).await? {
                    out.push(c);
                }
            }
            out.sort_by(|a, b| a.channel.cmp(&b.channel));
            Ok(out)
        })
    }

    fn history(
        &self,
        channel: &ChannelId,
        after: Option<Seq>,
        before: Option<Seq>,
        limit: u32,
    ) -> BoxFut<'_, Result<(Vec<Entry>, bool), StoreError>> {
        let ch = channel.as_str().to_owned();
        Box::pin(async move { self.history_inner(&ch, after, before, limit).await })
    }

    fn summaries(&self, user: &str, channels: &[ChannelId]) -> BoxFut<'_, Result<Vec<ChannelState>, StoreError>> {
        let user = user.to_owned();
        let chans: Vec<String> = channels.iter().map(|c| c.as_str().to_owned()).collect();
        Box::pin(async move {
            let mut out = Vec::with_capacity(chans.len());
            for ch in &chans {
                let last = self.last_seq(ch).await?;
                let read = self.marker(&user, ch).await?;
                let mut unread = 0;
                let mut after = read;
                while after < last {
                    let (page, more) = self.history_inner(ch, Some(after), None, 500).await?;
                    unread += page
                        .iter()
                        .filter(|e| {
                            matches!(e.kind, EntryKind::Message | EntryKind::Thread) && e.author != user && !e.deleted
                        })
                        .count() as u64;
                    after = page.last().map(|e| e.seq).unwrap_or(last);
                    if !more {
                        break;
                    }
                }
                out.push(ChannelState { last_seq: last, read_seq: read, unread });
            }
            Ok(out)
        })
    }

    fn read_markers(&self, channel: &ChannelId, users: &[String]) -> BoxFut<'_, Result<Vec<Seq>, StoreError>> {
        let ch = channel.as_str().to_owned();
        let users = users.to_vec();
        Box::pin(async move {
            let mut out = Vec::with_capacity(users.len());
            for u in &users {
                out.push(self.marker(u, &ch).await?);
            }
            Ok(out)
        })
    }

    fn has_posted(&self, channel: &ChannelId, user: &str) -> BoxFut<'_, Result<bool, StoreError>> {
        let (ch, user) = (channel.as_str().to_owned(), user.to_owned());
        Box::pin(async move { Ok(!self.rows(&self.st.get_poster, (ch.as_str(), user.as_str())).await?.is_empty()) })
    }

    fn entry(&self, channel: &ChannelId, seq: Seq) -> BoxFut<'_, Result<Option<Entry>, StoreError>> {
        let ch = channel.as_str().to_owned();
        Box::pin(async move { self.get_entry(&ch, seq).await })
    }

    fn set_mute(&self, channel: &ChannelId, user: &str, until_ms: i64) -> BoxFut<'_, Result<(), StoreError>> {
        let (ch, user) = (channel.as_str().to_owned(), user.to_owned());
        Box::pin(async move {
            if until_ms <= 0 {
                self.session
                    .execute_unpaged(&self.st.delete_mute, (ch.as_str(), user.as_str()))
                    .await
                    .map_err(unavailable)?;
                self.session
                    .execute_unpaged(&self.st.delete_user_mute, (user.as_str(), ch.as_str()))
                    .await
                    .map_err(unavailable)?;
            } else {
                self.session
                    .execute_unpaged(&self.st.insert_user_mute, (user.as_str(), ch.as_str()))
                    .await
                    .map_err(unavailable)?;
                self.session
                    .execute_unpaged(&self.st.set_mute, (until_ms, ch.as_str(), user.as_str()))
                    .await
                    .map_err(unavailable)?;
            }
            Ok(())
        })
    }

    fn muted_until(&self, channel: &ChannelId, user: &str) -> BoxFut<'_, Result<i64, StoreError>> {
        let (ch, user) = (channel.as_str().to_owned(), user.to_owned());
        Box::pin(async move {
            Ok(
                match self
                    .rows(&self.st.get_mute, (ch.as_str(), user.as_str()))
                    .await?
                    .first()
                    .and_then(|r| r.columns.first())
                {
                    Some(Some(CqlValue::BigInt(v))) => *v,
                    _ => 0,
                },
            )
        })
    }

    fn save_directory(&self, school: &str, doc_json: String) -> BoxFut<'_, Result<(), StoreError>> {
        let school = school.to_owned();
        Box::pin(async move {
            self.session
                .execute_unpaged(&self.st.save_directory, (doc_json.as_str(), self.clock.now_ms(), school.as_str()))
                .await
                .map_err(unavailable)?;
            Ok(())
        })
    }

    fn load_directories(&self) -> BoxFut<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            Ok(self
                .rows(&self.st.load_directories, ())
                .await?
                .into_iter()
                .filter_map(|r| match r.columns.into_iter().next() {
                    Some(Some(CqlValue::Text(t))) => Some(t),
                    _ => None,
                })
                .collect())
        })
    }

    fn save_setting(&self, key: &str, value_json: String) -> BoxFut<'_, Result<(), StoreError>> {
        let key = key.to_owned();
        Box::pin(async move {
            self.session
                .execute_unpaged(&self.st.save_setting, (value_json.as_str(), self.clock.now_ms(), key.as_str()))
                .await
                .map_err(unavailable)?;
            Ok(())
        })
    }

    fn load_setting(&self, key: &str) -> BoxFut<'_, Result<Option<String>, StoreError>> {
        let key = key.to_owned();
        Box::pin(async move {
            Ok(self.rows(&self.st.load_setting, (key.as_str(),)).await?.into_iter().find_map(|r| {
                match r.columns.into_iter().next() {
                    Some(Some(CqlValue::Text(t))) => Some(t),
                    _ => None,
                }
            }))
        })
    }

    fn put_record(&self, r: Record) -> BoxFut<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.session
                .execute_unpaged(
                    &self.st.put_record,
                    (r.kind.as_str(), r.school.as_str(), r.id.as_str(), r.at_ms, r.doc.as_str()),
                )
                .await
                .map_err(unavailable)?;
            Ok(())
        })
    }

    fn records(
        &self,
        kind: &str,
        school: &str,
        since_ms: i64,
        limit: u32,
    ) -> BoxFut<'_, Result<Vec<Record>, StoreError>> {
        let (kind, school) = (kind.to_owned(), school.to_owned());
        Box::pin(async move {
            let mut v: Vec<Record> = self
                .rows(&self.st.records, (kind.as_str(), school.as_str()))
                .await?
                .into_iter()
                .filter_map(record_row)
                .filter(|r| r.at_ms >= since_ms)
                .collect();
            v.sort_by(|a, b| (a.at_ms, &a.id).cmp(&(b.at_ms, &b.id)));
            v.truncate(limit as usize);
            Ok(v)
        })
    }

    fn record(&self, kind: &str, school: &str, id: &str) -> BoxFut<'_, Result<Option<Record>, StoreError>> {
        let (kind, school, id) = (kind.to_owned(), school.to_owned(), id.to_owned());
        Box::pin(async move {
            Ok(self
                .rows(&self.st.record, (kind.as_str(), school.as_str(), id.as_str()))
                .await?
                .into_iter()
                .find_map(record_row))
        })
    }

    fn purge_records(&self, kind: &str, before_ms: i64) -> BoxFut<'_, Result<u64, StoreError>> {
        let kind = kind.to_owned();
        Box::pin(async move {
            let old = self.rows(&self.st.old_records, (kind.as_str(), before_ms)).await?;
            let mut n = 0;
            for r in old {
                let mut c = r.columns.into_iter();
                if let (Some(Some(CqlValue::Text(school))), Some(Some(CqlValue::Text(id)))) = (c.next(), c.next()) {
                    self.session
                        .execute_unpaged(&self.st.delete_record, (kind.as_str(), school.as_str(), id.as_str()))
                        .await
                        .map_err(unavailable)?;
                    n += 1;
                }
            }
            Ok(n)
        })
    }

    fn authored(
        &self,
        author: &str,
        after: Option<(ChannelId, Seq)>,
        limit: u32,
    ) -> BoxFut<'_, Result<Vec<(ChannelId, Entry)>, StoreError>> {
        let author = author.to_owned();
        Box::pin(async move { self.authored_inner(&author, after, limit).await })
    }

    fn read_markers_of(&self, user: &str) -> BoxFut<'_, Result<Vec<(ChannelId, Seq)>, StoreError>> {
        let user = user.to_owned();
        Box::pin(async move {
            let ks = &self.ks;
            let r = self
                .session
                .query_unpaged(format!("SELECT channel, seq FROM {ks}.read_markers WHERE user = ?"), (user.as_str(),))
                .await
                .map_err(unavailable)?;
            let rows = r
                .into_rows_result()
                .map_err(unavailable)?
                .rows::<(String, i64)>()
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            Ok(rows.into_iter().filter_map(|(ch, s)| ChannelId::parse(&ch).ok().map(|c| (c, s as Seq))).collect())
        })
    }

    fn delete_record(&self, kind: &str, school: &str, id: &str) -> BoxFut<'_, Result<(), StoreError>> {
        let (kind, school, id) = (kind.to_owned(), school.to_owned(), id.to_owned());
        Box::pin(async move {
            self.session
                .execute_unpaged(&self.st.delete_record, (kind.as_str(), school.as_str(), id.as_str()))
                .await
                .map_err(unavailable)?;
            Ok(())
        })
    }

    fn expire(&self, x: Expiry) -> BoxFut<'_, Result<Erased, StoreError>> {
        // Rows also expire by the table's TTL (`--retention-days`, set by `migrate`); this
        // applies a school's shorter retention, and a shortened one, to older rows.
        Box::pin(async move { self.expire_step(&x).await })
    }

    fn erase_user(&self, e: Erasure) -> BoxFut<'_, Result<Erased, StoreError>> {
        Box::pin(async move { self.erase_step(&e).await })
    }

    fn try_lease(&self, name: &str, holder: &str, now_ms: i64, until_ms: i64) -> BoxFut<'_, Result<bool, StoreError>> {
        let (key, holder) = (format!("lease:{name}"), holder.to_owned());
        Box::pin(async move {
            let ks = &self.ks;
            let value = serde_json::json!({ "holder": holder, "until": until_ms }).to_string();
            // Lightweight transactions: a new lease, or the one read still in place.
            let r = self
                .session
                .query_unpaged(
                    format!("INSERT INTO {ks}.settings (key, value, updated_at) VALUES (?, ?, ?) IF NOT EXISTS"),
                    (key.as_str(), value.as_str(), now_ms),
                )
                .await
                .map_err(unavailable)?;
            let rows: Vec<Row> = if r.is_rows() {
                r.into_rows_result()
                    .map_err(unavailable)?
                    .rows::<Row>()
                    .map_err(unavailable)?
                    .collect::<Result<_, _>>()
                    .map_err(unavailable)?
            } else {
                Vec::new()
            };
            if applied(&rows) {
                return Ok(true);
            }
            let cur = match rows.first().map(|r| {
                r.columns.iter().find_map(|c| match c {
                    Some(CqlValue::Text(t)) if t.starts_with('{') => Some(t.clone()),
                    _ => None,
                })
            }) {
                Some(Some(v)) => v,
                _ => return Ok(false),
            };
            let v: serde_json::Value = serde_json::from_str(&cur).unwrap_or_default();
            if v["holder"].as_str() != Some(holder.as_str()) && v["until"].as_i64().unwrap_or(0) > now_ms {
                return Ok(false);
            }
            let r = self
                .session
                .query_unpaged(
                    format!("UPDATE {ks}.settings SET value = ?, updated_at = ? WHERE key = ? IF value = ?"),
                    (value.as_str(), now_ms, key.as_str(), cur.as_str()),
                )
                .await
                .map_err(unavailable)?;
            let rows: Vec<Row> = r
                .into_rows_result()
                .map_err(unavailable)?
                .rows::<Row>()
                .map_err(unavailable)?
                .collect::<Result<_, _>>()
                .map_err(unavailable)?;
            Ok(applied(&rows))
        })
    }

    fn ping(&self) -> BoxFut<'_, Result<(), StoreError>> {
        Box::pin(async move { self.rows(&self.st.ping, ()).await.map(|_| ()) })
    }
}

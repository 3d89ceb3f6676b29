//! Storage for Préau: each channel's log with its gapless sequence, conversations and
//! their members, read markers, forum mutes and the imported directory.
//!
//! # Layout
//! - [`Store`]: the contract every backend keeps (an `Arc<dyn Store>` in the gateway).
//! - `scylla` (cargo feature `scylla`): ScyllaDB, for a region's deployment.
//! - [`postgres`]: PostgreSQL, for several hosts on a database the operator already runs:
//!   a writer per gateway with group commit, seqs from a counter row locked in the write.
//! - [`sqlite`]: the embedded default, SQLite in WAL mode: one writer thread that groups
//!   the writes waiting for it into one transaction (group commit), a pool of readers.
//! - `queue`: the write queue SQLite's and PostgreSQL's single writers share (what is
//!   queued, the typed calls that wait for the answer).
//! - [`rules`]: the entry rules (threads, locks, replies, who edits and deletes what,
//!   idempotency keys), written once and applied by every backend.
//! - [`types`]: what goes in and comes out.
//!
//! # Ordering contract
//! A backend assigns each channel's next seq inside the durable write, answers only once
//! the write is durable, and calls the [`CommitHook`] once per committed entry, in seq
//! order per channel. The gateway publishes from that hook, so subscribers see a
//! channel's entries in order. The hook may run after the answer (SQLite calls it from a
//! dispatcher thread, so the writer never waits for the fan-out): a writer can see its
//! ack before its own event.

pub mod contract;
pub mod postgres;
mod queue;
pub mod rules;
#[cfg(feature = "scylla")]
pub mod scylla;
pub mod sqlite;
pub mod types;

pub use postgres::{PgOptions, PgStore};
pub use sqlite::{SqliteOptions, SqliteStore};
pub use types::*;

use preau_proto::{ChannelId, Entry, Seq};
use std::future::Future;
use std::pin::Pin;

/// A boxed future, so the trait stays object-safe.
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Called by the store after each commit, in order, with what was committed.
pub type CommitHook = Box<dyn Fn(&Committed) + Send + Sync>;

/// The result of a queued write, to await later ([`Store::queue_write`]).
pub type Pending = BoxFut<'static, Result<Appended, StoreError>>;

/// The storage contract.
pub trait Store: Send + Sync + 'static {
    /// Applies a write durably and returns its result. Posts with a `client_id` already
    /// stored for the same author and channel return the stored entry with `duplicate`.
    fn write(&self, w: Write) -> BoxFut<'_, Result<Appended, StoreError>>;

    /// Queues a write and returns, as soon as it is queued, the future of its result, so
    /// a connection can have several writes in flight: writes queued one after the other
    /// are applied in that order, and the writer groups them into one commit. Refused at
    /// once with [`StoreError::Overloaded`] when the backlog is full, nothing stored. A
    /// backend without a queue of its own applies the write before returning.
    fn queue_write(&self, w: Write) -> BoxFut<'_, Result<Pending, StoreError>> {
        Box::pin(async move {
            let r = self.write(w).await;
            Ok(Box::pin(async move { r }) as Pending)
        })
    }

    /// Records that `user` read `channel` up to `seq` (markers only move forward).
    /// Returns the marker now stored.
    fn mark_read(&self, user: &str, channel: &ChannelId, seq: Seq) -> BoxFut<'_, Result<Seq, StoreError>>;

    /// Creates a conversation with its members, or returns the existing one with the
    /// same channel id or the same (creator, client id).
    fn create_conversation(&self, c: NewConversation) -> BoxFut<'_, Result<Conversation, StoreError>>;

    /// A conversation and its members.
    fn conversation(&self, channel: &ChannelId) -> BoxFut<'_, Result<Option<Conversation>, StoreError>>;

    /// Conversations `user` is a member of.
    fn conversations_of(&self, user: &str) -> BoxFut<'_, Result<Vec<Conversation>, StoreError>>;

    /// Log entries after `after` (ascending) or just before `before` (ascending, the
    /// newest page), at most `limit`, and whether more exist in that direction.
    fn history(
        &self,
        channel: &ChannelId,
        after: Option<Seq>,
        before: Option<Seq>,
        limit: u32,
    ) -> BoxFut<'_, Result<(Vec<Entry>, bool), StoreError>>;

    /// Last seq, the user's read marker and unread count, for each channel.
    fn summaries(&self, user: &str, channels: &[ChannelId]) -> BoxFut<'_, Result<Vec<ChannelState>, StoreError>>;

    /// Read markers of `users` in `channel` (0 when none).
    fn read_markers(&self, channel: &ChannelId, users: &[String]) -> BoxFut<'_, Result<Vec<Seq>, StoreError>>;

    /// Whether `user` posted anything in `channel` (the "answer" rule).
    fn has_posted(&self, channel: &ChannelId, user: &str) -> BoxFut<'_, Result<bool, StoreError>>;

    /// One entry.
    fn entry(&self, channel: &ChannelId, seq: Seq) -> BoxFut<'_, Result<Option<Entry>, StoreError>>;

    /// Mutes `user` in `channel` until `until_ms` (0 lifts it).
    fn set_mute(&self, channel: &ChannelId, user: &str, until_ms: i64) -> BoxFut<'_, Result<(), StoreError>>;

    /// Until when `user` is muted in `channel` (0 when not).
    fn muted_until(&self, channel: &ChannelId, user: &str) -> BoxFut<'_, Result<i64, StoreError>>;

    /// Saves one school's directory document (JSON).
    fn save_directory(&self, school: &str, doc_json: String) -> BoxFut<'_, Result<(), StoreError>>;

    /// Every saved school directory document.
    fn load_directories(&self) -> BoxFut<'_, Result<Vec<String>, StoreError>>;

    /// Saves a node-wide setting (JSON), such as the messaging suspensions.
    fn save_setting(&self, key: &str, value_json: String) -> BoxFut<'_, Result<(), StoreError>>;

    /// A saved setting, if any.
    fn load_setting(&self, key: &str) -> BoxFut<'_, Result<Option<String>, StoreError>>;

    /// Saves a record, replacing the one with the same (kind, school, id).
    fn put_record(&self, r: Record) -> BoxFut<'_, Result<(), StoreError>>;

    /// Records of a kind and school at or after `since_ms`, oldest first, at most `limit`.
    fn records(
        &self,
        kind: &str,
        school: &str,
        since_ms: i64,
        limit: u32,
    ) -> BoxFut<'_, Result<Vec<Record>, StoreError>>;

    /// One record.
    fn record(&self, kind: &str, school: &str, id: &str) -> BoxFut<'_, Result<Option<Record>, StoreError>>;

    /// Removes one record (a no-op when there is none).
    fn delete_record(&self, kind: &str, school: &str, id: &str) -> BoxFut<'_, Result<(), StoreError>>;

    /// Removes records of a kind older than `before_ms` (retention); returns how many.
    fn purge_records(&self, kind: &str, before_ms: i64) -> BoxFut<'_, Result<u64, StoreError>>;

    /// Entries `author` wrote, by channel then seq, after `after` (keyset paging), at
    /// most `limit` (a person's export).
    fn authored(
        &self,
        author: &str,
        after: Option<(ChannelId, Seq)>,
        limit: u32,
    ) -> BoxFut<'_, Result<Vec<(ChannelId, Entry)>, StoreError>>;

    /// Every read marker of `user`, by channel.
    fn read_markers_of(&self, user: &str) -> BoxFut<'_, Result<Vec<(ChannelId, Seq)>, StoreError>>;

    /// Removes (or, dry, counts) a person's data: the direct conversations named, their
    /// authorship and idempotency keys in shared channels (pseudonymised, and their texts
    /// removed unless kept), their name in membership entries, their group memberships,
    /// read markers and mutes. At most `limit` rows per call: repeat until `done`.
    fn erase_user(&self, e: Erasure) -> BoxFut<'_, Result<Erased, StoreError>>;

    /// Removes messages past their retention (see [`Expiry`]); repeat until `done`.
    fn expire(&self, x: Expiry) -> BoxFut<'_, Result<Erased, StoreError>>;

    /// Takes or renews the lease `name` for `holder` until `until_ms`, if it is free,
    /// expired at `now_ms`, or already `holder`'s: one node at a time runs a job.
    fn try_lease(&self, name: &str, holder: &str, now_ms: i64, until_ms: i64) -> BoxFut<'_, Result<bool, StoreError>>;

    /// Whether the store answers (for readiness).
    fn ping(&self) -> BoxFut<'_, Result<(), StoreError>>;
}

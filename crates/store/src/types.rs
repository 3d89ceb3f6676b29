//! Values exchanged with a store.

use preau_proto::clock::SharedClock;
use preau_proto::{ChannelId, ChannelKind, Entry, EntryKind, Seq, UserId};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The target entry or thread does not exist (or was deleted).
    #[error("no such message or thread")]
    NotFound,
    /// Only the author (or a moderator) may do this to the entry.
    #[error("not the author")]
    NotAuthor,
    /// The thread is locked.
    #[error("thread locked")]
    Locked,
    /// The write conflicts with the entry's kind (editing a thread state, replying across threads).
    #[error("invalid target: {0}")]
    Invalid(&'static str),
    /// The store cannot take writes or reads now; nothing was stored. Retry.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The write backlog is full: nothing was stored. Retry shortly.
    #[error("write backlog full")]
    Overloaded,
}

/// A write to a channel's log.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    /// A message, forum post or thread opening.
    Post {
        /// Channel.
        channel: ChannelId,
        /// Message or Thread.
        kind: EntryKind,
        /// Author.
        author: UserId,
        /// Idempotency key.
        client_id: String,
        /// Text.
        body: String,
        /// Thread title.
        title: Option<String>,
        /// Forum thread of a post.
        thread: Option<Seq>,
        /// Post answered.
        reply_to: Option<Seq>,
        /// Refuse when the thread is locked (false for moderators).
        respect_lock: bool,
    },
    /// Replace a message's text (author only).
    Edit {
        /// Channel.
        channel: ChannelId,
        /// Editor, who must be the author.
        author: UserId,
        /// Message.
        target: Seq,
        /// New text.
        body: String,
    },
    /// Delete a message.
    Delete {
        /// Channel.
        channel: ChannelId,
        /// Who deletes.
        author: UserId,
        /// Message.
        target: Seq,
        /// A moderator may delete anyone's message.
        moderator: bool,
    },
    /// Lock/pin a thread.
    ThreadState {
        /// Channel.
        channel: ChannelId,
        /// Moderator.
        author: UserId,
        /// Thread.
        thread: Seq,
        /// New locked state.
        locked: Option<bool>,
        /// New pinned state.
        pinned: Option<bool>,
    },
    /// Members join or leave a group (the members table changes in the same transaction).
    Membership {
        /// Channel.
        channel: ChannelId,
        /// Who did it.
        author: UserId,
        /// Members concerned.
        members: Vec<UserId>,
        /// Joined (true) or left (false).
        joined: bool,
    },
}

impl Write {
    /// The channel written.
    pub fn channel(&self) -> &ChannelId {
        match self {
            Write::Post { channel, .. }
            | Write::Edit { channel, .. }
            | Write::Delete { channel, .. }
            | Write::ThreadState { channel, .. }
            | Write::Membership { channel, .. } => channel,
        }
    }
}

/// The outcome of a write.
#[derive(Clone, Debug, PartialEq)]
pub struct Appended {
    /// Channel.
    pub channel: ChannelId,
    /// The entry appended (or, for a duplicate, the one stored first).
    pub entry: Entry,
    /// The write was a retry of one already stored; nothing new was appended.
    pub duplicate: bool,
}

/// What a commit published, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Committed {
    /// A new log entry.
    Entry(Appended),
    /// A read marker moved.
    Read {
        /// Channel.
        channel: ChannelId,
        /// Reader.
        user: UserId,
        /// New marker.
        seq: Seq,
    },
}

/// A conversation to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewConversation {
    /// `dm:` or `grp:` channel id.
    pub channel: ChannelId,
    /// Display title (groups).
    pub title: String,
    /// Creator.
    pub creator: UserId,
    /// Idempotency key (groups).
    pub client_id: Option<String>,
    /// All members, creator included.
    pub members: Vec<UserId>,
}

/// A conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversation {
    /// Channel.
    pub channel: ChannelId,
    /// Kind (direct or group).
    pub kind: ChannelKind,
    /// Title (groups).
    pub title: String,
    /// Creator.
    pub creator: UserId,
    /// Members, sorted.
    pub members: Vec<UserId>,
}

/// A channel as one user sees it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ChannelState {
    /// Highest seq.
    pub last_seq: Seq,
    /// The user's read marker.
    pub read_seq: Seq,
    /// Messages after the marker not written by the user and not deleted.
    pub unread: u64,
}

/// Options of the ScyllaDB store (defined in every build, so configuration parses the
/// same with or without the `scylla` feature).
#[derive(Clone, Debug)]
pub struct ScyllaOptions {
    /// Contact points, `host:port`.
    pub nodes: Vec<String>,
    /// Keyspace.
    pub keyspace: String,
    /// Replication factor used when `migrate` creates the keyspace.
    pub replication_factor: u32,
    /// Retention of messages in days (table TTL); 0 keeps them.
    pub retention_days: u32,
    /// The wall clock that stamps entries and idempotency claims.
    pub clock: SharedClock,
}

/// A school-scoped record kept as a JSON document: moderation audit entries and reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// `audit` or `report`.
    pub kind: String,
    /// School UAI.
    pub school: String,
    /// Unique within (kind, school).
    pub id: String,
    /// When, milliseconds since the epoch (records list in this order).
    pub at_ms: i64,
    /// The record (JSON).
    pub doc: String,
}

/// Conversations from rows of (channel, title, creator, member) sorted by channel then
/// member, as the backends read a user's conversations in one query.
pub(crate) fn conversations_from_rows(rows: Vec<(String, String, String, String)>) -> Vec<Conversation> {
    let mut out: Vec<Conversation> = Vec::new();
    for (ch, title, creator, member) in rows {
        match out.last_mut() {
            Some(last) if last.channel.as_str() == ch => last.members.push(member),
            _ => {
                // Channel ids are written by this code; one that does not parse is skipped.
                if let Ok(id) = ChannelId::parse(&ch) {
                    out.push(Conversation { kind: id.kind(), channel: id, title, creator, members: vec![member] });
                }
            }
        }
    }
    out
}

/// A person's data to remove from the store: a departure past its delay, or a request
/// (the data-protection rules, docs/data-protection.md). Applying it is idempotent and
/// bounded: each call changes at most `limit` rows and says whether anything is left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Erasure {
    /// The person.
    pub user: UserId,
    /// Stands for them in what stays (shared posts kept for teaching, membership
    /// entries): stable and opaque, per school.
    pub pseudonym: String,
    /// Their posts in shared channels stay, pseudonymised (true), or lose their text
    /// (false: the school's choice, or the author objected).
    pub keep_shared_posts: bool,
    /// Direct conversations removed whole (both sides gone, or the school's choice).
    pub direct: Vec<ChannelId>,
    /// Most rows changed in one call.
    pub limit: u32,
    /// Count what would change, change nothing.
    pub dry_run: bool,
}

/// What one [`Erasure`] call changed (or, dry, would change).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Erased {
    /// Rows removed or rewritten.
    pub rows: u64,
    /// Nothing of the person is left (a dry run counts everything at once: always true).
    pub done: bool,
}

/// Messages past their retention to remove: those of the channels whose id starts with
/// `prefix` written before `before_ms`. Each channel's last entry stays as an empty
/// tombstone, so its seq goes on from where it was. At most `limit` rows per call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expiry {
    /// Channel id prefix (`forum:0750001A:`, `dm:`).
    pub prefix: String,
    /// Entries written before this, milliseconds since the epoch.
    pub before_ms: i64,
    /// Most rows changed in one call.
    pub limit: u32,
}

impl Expiry {
    /// The bounds of the channel ids with the prefix, in byte order (ids are ASCII).
    pub fn range(&self) -> (String, String) {
        (self.prefix.clone(), format!("{}\u{10ffff}", self.prefix))
    }
}

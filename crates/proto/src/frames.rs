//! Frames. Both directions are objects tagged by `type`; unknown fields are ignored so
//! either side can add optional fields without a version bump.

use crate::ErrorCode;
use crate::ids::{ChannelId, ChannelKind, Seq, UserId};
use serde::{Deserialize, Serialize};

/// A command from a client. `id` is chosen by the client and echoed in the `ack` or
/// `error` that answers it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClientFrame {
    /// Request id, echoed in the answer.
    pub id: u64,
    /// The command.
    #[serde(flatten)]
    pub cmd: Command,
}

/// The commands a client may send.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Liveness check; answered with an empty ack.
    Ping {},
    /// Post a message. In a forum, `thread` names the thread (its opening seq) and
    /// `reply_to` optionally the post answered. Retried sends with the same `client_id`
    /// are acknowledged with the first seq and stored once.
    Send {
        /// Target channel.
        channel: ChannelId,
        /// Idempotency key chosen by the client (1 to 64 characters).
        client_id: String,
        /// Text of the message.
        body: String,
        /// Forum thread, required in forums.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thread: Option<Seq>,
        /// The post this one answers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<Seq>,
    },
    /// Open a forum thread (teachers and staff).
    CreateThread {
        /// A `forum:` channel.
        channel: ChannelId,
        /// Idempotency key.
        client_id: String,
        /// Title of the thread.
        title: String,
        /// Opening post.
        body: String,
    },
    /// Replace the text of a message (its author only).
    Edit {
        /// Channel of the message.
        channel: ChannelId,
        /// Seq of the message.
        seq: Seq,
        /// New text.
        body: String,
    },
    /// Delete a message (its author, or a moderator of the channel).
    Delete {
        /// Channel of the message.
        channel: ChannelId,
        /// Seq of the message.
        seq: Seq,
    },
    /// Lock or pin a forum thread (moderators).
    SetThread {
        /// A `forum:` channel.
        channel: ChannelId,
        /// Seq of the thread's opening entry.
        thread: Seq,
        /// New locked state, if changing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        locked: Option<bool>,
        /// New pinned state, if changing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pinned: Option<bool>,
    },
    /// Keep a pupil from posting in a forum for some minutes (moderators); 0 unmutes.
    Mute {
        /// A `forum:` channel.
        channel: ChannelId,
        /// The pupil.
        user: UserId,
        /// Duration in minutes, at most a week; 0 lifts the mute.
        minutes: u32,
    },
    /// Open (or find) the direct conversation with a user.
    OpenDirect {
        /// The other user.
        user: UserId,
    },
    /// Create a group conversation; the creator must be allowed to write to every member.
    CreateGroup {
        /// Idempotency key: the same key gives the same group.
        client_id: String,
        /// Display name.
        name: String,
        /// Members other than the creator.
        members: Vec<UserId>,
    },
    /// Add members to a group (its creator only).
    AddMembers {
        /// A `grp:` channel.
        channel: ChannelId,
        /// New members.
        members: Vec<UserId>,
    },
    /// Leave a group conversation.
    Leave {
        /// A `grp:` channel.
        channel: ChannelId,
    },
    /// Summary of every channel the user sees, and what was missed since given positions.
    Sync {
        /// Last seq seen per channel. Entries after it are returned, paged.
        #[serde(default)]
        positions: Vec<Position>,
        /// Most entries returned per channel (default and cap 200).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// A page of a channel's log after a seq (or before one, for scrolling back).
    History {
        /// Channel.
        channel: ChannelId,
        /// Return entries with seq greater than this.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<Seq>,
        /// Return the entries just before this seq instead (newest page last).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<Seq>,
        /// Most entries (default and cap 200).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// Mark everything up to `seq` read in a channel.
    MarkRead {
        /// Channel.
        channel: ChannelId,
        /// Last seq read.
        seq: Seq,
    },
    /// Who has read an announcement (or message) up to `seq`: its author and moderators.
    Receipts {
        /// Channel.
        channel: ChannelId,
        /// The entry.
        seq: Seq,
    },
    /// Members of a direct or group conversation and whether they are online.
    Members {
        /// A `dm:` or `grp:` channel.
        channel: ChannelId,
    },
    /// The user is typing in a conversation (ephemeral, not stored).
    Typing {
        /// A `dm:` or `grp:` channel.
        channel: ChannelId,
    },
    /// Report a message one can read to the school's moderators (signalement).
    Report {
        /// Channel of the message.
        channel: ChannelId,
        /// The message.
        seq: Seq,
        /// Why, in the reporter's words (1 to 500 bytes).
        reason: String,
    },
    /// The moderation queue: the open reports this user moderates.
    Reports {},
    /// Names and profiles of users, to show instead of ids (authors, readers). Users the
    /// asker may not know of, and unknown ids, are left out alike.
    Profiles {
        /// User ids, at most [`MAX_PROFILES`].
        users: Vec<UserId>,
    },
    /// Close a report: `delete` removes the reported message, `dismiss` keeps it.
    CloseReport {
        /// The report's id.
        report: String,
        /// `delete` or `dismiss`.
        action: String,
    },
}

impl Command {
    /// Every command `type`, to tell an unknown command from a malformed known one.
    pub const TYPES: &'static [&'static str] = &[
        "ping",
        "send",
        "create_thread",
        "edit",
        "delete",
        "set_thread",
        "mute",
        "open_direct",
        "create_group",
        "add_members",
        "leave",
        "sync",
        "history",
        "mark_read",
        "receipts",
        "members",
        "typing",
        "report",
        "reports",
        "close_report",
        "profiles",
    ];

    /// The command's `type` on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Ping {} => "ping",
            Command::Send { .. } => "send",
            Command::CreateThread { .. } => "create_thread",
            Command::Edit { .. } => "edit",
            Command::Delete { .. } => "delete",
            Command::SetThread { .. } => "set_thread",
            Command::Mute { .. } => "mute",
            Command::OpenDirect { .. } => "open_direct",
            Command::CreateGroup { .. } => "create_group",
            Command::AddMembers { .. } => "add_members",
            Command::Leave { .. } => "leave",
            Command::Sync { .. } => "sync",
            Command::History { .. } => "history",
            Command::MarkRead { .. } => "mark_read",
            Command::Receipts { .. } => "receipts",
            Command::Members { .. } => "members",
            Command::Typing { .. } => "typing",
            Command::Report { .. } => "report",
            Command::Reports {} => "reports",
            Command::CloseReport { .. } => "close_report",
            Command::Profiles { .. } => "profiles",
        }
    }
}

/// A channel and the last seq a client has seen in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Position {
    /// Channel.
    pub channel: ChannelId,
    /// Last seq seen (0 for none).
    pub seq: Seq,
}

/// What an entry of a channel's log is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A message or forum post.
    Message,
    /// The opening post of a forum thread; its seq is the thread's id.
    Thread,
    /// An edit of the message `target`; `body` is the new text.
    Edit,
    /// The deletion of the message `target`.
    Delete,
    /// A change of a thread's locked or pinned state.
    ThreadState,
    /// Members joined or left a group (`members`).
    Membership,
    /// A live class's recording, in the class announcements: `body` is a
    /// [`RecordingInfo`] in JSON; a member asks the gateway for a download link.
    Recording,
}

impl EntryKind {
    /// The kind's name on the wire and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Message => "message",
            EntryKind::Thread => "thread",
            EntryKind::Edit => "edit",
            EntryKind::Delete => "delete",
            EntryKind::ThreadState => "thread_state",
            EntryKind::Membership => "membership",
            EntryKind::Recording => "recording",
        }
    }

    /// Parses a kind's name; `None` for an unknown one.
    pub fn parse(s: &str) -> Option<EntryKind> {
        [
            EntryKind::Message,
            EntryKind::Thread,
            EntryKind::Edit,
            EntryKind::Delete,
            EntryKind::ThreadState,
            EntryKind::Membership,
            EntryKind::Recording,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// What a `recording` entry's body says (JSON): the file, on the SFU node that made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RecordingInfo {
    /// The recording's id.
    pub id: String,
    /// Where it is downloaded from (the gateway adds a short-lived token).
    pub url: String,
    /// Length in milliseconds.
    pub duration_ms: u64,
    /// Size in bytes.
    pub size: u64,
    /// When it started, milliseconds since the Unix epoch.
    pub started_at: i64,
}

/// One entry of a channel's log. Message entries read from history carry their current
/// state (edited text, `deleted`); the `edit` and `delete` entries after them say when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Entry {
    /// Position in the channel, gapless from 1.
    pub seq: Seq,
    /// What the entry is.
    pub kind: EntryKind,
    /// Who wrote it.
    pub author: UserId,
    /// Milliseconds since the Unix epoch, server clock.
    pub at: i64,
    /// Text (messages, threads, edits). Empty once deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Title of a thread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Forum thread of a post.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<Seq>,
    /// The post this one answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<Seq>,
    /// The entry an edit, delete or thread_state refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Seq>,
    /// Thread locked state (thread and thread_state entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked: Option<bool>,
    /// Thread pinned state (thread and thread_state entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<bool>,
    /// Members added (positive) or removed, for membership entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<UserId>,
    /// For membership entries: whether `members` joined (true) or left (false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined: Option<bool>,
    /// The message was edited since it was posted.
    #[serde(default, skip_serializing_if = "is_false")]
    pub edited: bool,
    /// The message was deleted; its body is gone.
    #[serde(default, skip_serializing_if = "is_false")]
    pub deleted: bool,
    /// The sender's idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

impl Entry {
    /// An entry of `kind` by `author` at `at` (ms), every optional field empty.
    pub fn new(seq: Seq, kind: EntryKind, author: &str, at: i64) -> Entry {
        Entry {
            seq,
            kind,
            author: author.to_owned(),
            at,
            body: None,
            title: None,
            thread: None,
            reply_to: None,
            target: None,
            locked: None,
            pinned: None,
            members: Vec::new(),
            joined: None,
            edited: false,
            deleted: false,
            client_id: None,
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What `sync` says of a channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ChannelInfo {
    /// Channel.
    pub channel: ChannelId,
    /// Kind.
    pub kind: ChannelKind,
    /// Display title (class name, group name, other user's name).
    pub title: String,
    /// Highest seq in the channel.
    pub last_seq: Seq,
    /// Highest seq the user marked read.
    pub read_seq: Seq,
    /// Messages after `read_seq` not written by the user.
    pub unread: u64,
    /// Whether the user may post (read-only announcements say false).
    pub can_post: bool,
    /// Whether the user moderates the channel.
    pub moderator: bool,
    /// Entries after the position the client gave, if it gave one.
    #[serde(default)]
    pub entries: Vec<Entry>,
    /// More entries follow the returned ones: ask `history` with `after`.
    #[serde(default)]
    pub more: bool,
}

/// A member of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MemberInfo {
    /// User id.
    pub user: UserId,
    /// Display name.
    pub name: String,
    /// Profile.
    pub profile: String,
    /// Has at least one open session.
    pub online: bool,
}

/// Most users one `profiles` command may name.
pub const MAX_PROFILES: usize = 200;

/// A user as a front end shows them, for `profiles`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProfileInfo {
    /// User id.
    pub user: UserId,
    /// Display name.
    pub name: String,
    /// `pupil`, `parent`, `teacher`, `staff` or `admin`.
    pub profile: String,
}

/// A reader of an entry, for `receipts`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Receipt {
    /// User id.
    pub user: UserId,
    /// Whether they read up to the entry.
    pub read: bool,
}

/// The answer to a command. Which fields are set depends on the command: optional values
/// (`seq`, `channel`, `suspension`, `report`) are absent when the command has none; lists
/// and flags are always present, empty or false, so a client can iterate them without
/// checking (and a client that ignores them still works).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Ack {
    /// The request id.
    pub id: u64,
    /// Seq assigned (send, create_thread, edit, delete, set_thread).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<Seq>,
    /// The send was a retry of one already stored: `seq` is the first one's.
    #[serde(default)]
    pub duplicate: bool,
    /// Channel concerned (open_direct, create_group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<ChannelId>,
    /// Channels (sync).
    #[serde(default)]
    pub channels: Vec<ChannelInfo>,
    /// Entries (history).
    #[serde(default)]
    pub entries: Vec<Entry>,
    /// More entries exist beyond this page (history).
    #[serde(default)]
    pub more: bool,
    /// Members (members).
    #[serde(default)]
    pub members: Vec<MemberInfo>,
    /// Receipts (receipts).
    #[serde(default)]
    pub receipts: Vec<Receipt>,
    /// Channels named in `sync` positions that the user no longer sees (sync).
    #[serde(default)]
    pub removed: Vec<ChannelId>,
    /// A suspension of messaging in force for the user (sync).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspension: Option<SuspensionInfo>,
    /// The report made (report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
    /// Open reports (reports).
    #[serde(default)]
    pub reports: Vec<ReportInfo>,
    /// Users named (profiles).
    #[serde(default)]
    pub profiles: Vec<ProfileInfo>,
}

/// A report in a moderator's queue. The reported content is kept here even if its author
/// deletes the message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ReportInfo {
    /// Id, for `close_report`.
    pub id: String,
    /// Channel of the message.
    pub channel: ChannelId,
    /// The message.
    pub seq: Seq,
    /// Its author.
    pub author: UserId,
    /// What it said when reported.
    pub content: String,
    /// Who reported it.
    pub reporter: UserId,
    /// Why.
    pub reason: String,
    /// When, milliseconds since the epoch.
    pub at_ms: i64,
}

/// A suspension of messaging, as a front end shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SuspensionInfo {
    /// `platform` (the operator) or `school` (the school's admin).
    pub scope: String,
    /// Why, in the words of who suspended it.
    pub reason: String,
    /// Since when, milliseconds since the epoch.
    pub since_ms: i64,
    /// The school's direction (staff, admins) may still post announcements.
    pub announcements_open: bool,
}

/// Limits the server applies, sent in `hello` so clients can stay within them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Limits {
    /// Largest frame accepted, in bytes.
    pub max_frame_bytes: u32,
    /// Longest message body, in bytes of UTF-8.
    pub max_body_bytes: u32,
    /// Most members in a group conversation, creator included.
    pub max_group_members: u32,
    /// Sustained sends per second per user.
    pub sends_per_second: u32,
    /// Burst of sends allowed above the sustained rate.
    pub send_burst: u32,
}

/// Frames from the server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// First frame of every session.
    Hello {
        /// [`crate::PROTOCOL_VERSION`].
        version: u32,
        /// The authenticated user.
        user: UserId,
        /// Their profile.
        profile: String,
        /// Their school (UAI).
        school: String,
        /// Limits in force.
        limits: Limits,
        /// Messaging is suspended for this user's school or the whole platform: reading
        /// works, writing is refused with `suspended` (absent when not).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        suspension: Option<SuspensionInfo>,
    },
    /// To a school's direction (staff, admins): something needs a person's attention.
    Alert {
        /// `mass_send` (an account held by the mass-send brake).
        kind: String,
        /// Whom it is about.
        user: UserId,
        /// Their display name.
        name: String,
        /// A plain description.
        detail: String,
    },
    /// A command succeeded.
    Ack(Ack),
    /// A command failed, or a frame could not be read (`id` absent then).
    Error {
        /// Request id, when the frame was readable enough to have one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Stable code.
        code: ErrorCode,
        /// Plain explanation for people.
        message: String,
        /// For `rate_limited`: when to retry.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// A new entry in a channel the user sees.
    Event {
        /// Channel.
        channel: ChannelId,
        /// The entry.
        entry: Entry,
    },
    /// A user marked a channel read up to `seq`.
    Read {
        /// Channel.
        channel: ChannelId,
        /// Reader.
        user: UserId,
        /// Last seq read.
        seq: Seq,
    },
    /// A member is typing in a conversation.
    Typing {
        /// Channel.
        channel: ChannelId,
        /// Who.
        user: UserId,
    },
    /// A user sharing a conversation came online or went offline.
    Presence {
        /// Who.
        user: UserId,
        /// Online now.
        online: bool,
    },
    /// The user now sees a channel (new conversation, new class).
    ChannelAdded {
        /// Its summary.
        info: ChannelInfo,
    },
    /// The user no longer sees a channel (left a group, moved class).
    ChannelRemoved {
        /// Channel.
        channel: ChannelId,
    },
    /// The server is about to close this connection: reconnect after `after_ms`.
    Reconnect {
        /// Delay before reconnecting, jittered per client to spread the storm.
        after_ms: u64,
        /// Why.
        reason: String,
    },
}

/// The first frame of a session whose token was not given at the upgrade (browsers cannot
/// set headers on a WebSocket, and a token in the URL lands in proxies' logs):
/// `{"type": "auth", "token": "<JWT>"}`, within a few seconds of the upgrade.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "auth")]
pub struct AuthFrame {
    /// The user's token, as for `Authorization: Bearer`.
    pub token: String,
}

/// schemars leaves a struct's serde tag out of its schema: said here.
impl schemars::JsonSchema for AuthFrame {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "AuthFrame".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "The first frame of a session whose token was not given at the upgrade (browsers cannot set headers on a WebSocket, and a token in the URL lands in proxies' logs), within 10 s of the upgrade.",
            "type": "object",
            "properties": {
                "type": { "type": "string", "const": "auth" },
                "token": { "type": "string", "description": "The user's token, as for `Authorization: Bearer`." }
            },
            "required": ["type", "token"]
        })
    }
}

//! The commands of a session, one file per family, in the way of mini-redis's `cmd/`:
//! each command gathers the facts it needs (store reads: IO), decides with a pure
//! function of (directory snapshot, user, command, facts, `now`) that returns a plan or a
//! refusal, then applies the plan (store write, bus). The pure deciders are table-tested
//! in each file; this module only routes.
//!
//! # Layout
//! - [`error`]: [`CmdError`], the stable code and plain message a client sees.
//! - [`access`]: what a user may do in a channel ([`Access`]) and every channel they see.
//! - [`post`]: `send`, `create_thread`, `edit`, `delete`.
//! - [`forum`]: `set_thread`, `mute`.
//! - [`conversation`]: `open_direct`, `create_group`, `add_members`, `leave`, `members`,
//!   `typing`.
//! - [`read`]: `sync`, `history`, `mark_read`, `receipts`.
//! - [`room`]: room tickets for live classes.
//! - [`report`]: reporting messages, the moderators' queue.
//! - [`audit`]: the moderation audit trail.
//! - [`suspension`]: the platform's and schools' suspension switches.
//! - [`brake`]: the mass-send brakes; [`hours`]: the schools' discussion hours.

pub mod access;
pub mod audit;
pub mod brake;
pub mod conversation;
pub mod error;
pub mod forum;
pub mod hours;
pub mod post;
pub mod read;
pub mod report;
pub mod room;
pub mod suspension;

pub use access::Access;
pub use error::CmdError;

use crate::service::Gateway;
use preau_directory::{Directory, UserRec};
use preau_proto::{Ack, ChannelId, ChannelKind, Command, ErrorCode};
use preau_store::BoxFut;

/// What every decision reads: the directory snapshot the command runs against, the user,
/// and the wall clock at its start.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    /// The directory when the command arrived.
    pub dir: &'a Directory,
    /// Who runs the command.
    pub me: &'a UserRec,
    /// Milliseconds since the epoch.
    pub now_ms: i64,
}

/// What a command writes, for the gates that hold writing back (suspensions, discussion
/// hours): one list of the writing commands for both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written<'a> {
    /// A post, a thread, an edit, typing, or new members, in this channel.
    In(&'a ChannelId),
    /// A new direct conversation or group.
    NewConversation,
}

impl Written<'_> {
    /// Whether it is a write in a direct or group conversation.
    pub fn is_conversation(self) -> bool {
        match self {
            Written::In(c) => matches!(c.kind(), ChannelKind::Direct | ChannelKind::Group),
            Written::NewConversation => true,
        }
    }
}

/// What `cmd` writes, if it writes (reading, leaving and moderation do not count).
pub fn written(cmd: &Command) -> Option<Written<'_>> {
    match cmd {
        Command::Send { channel, .. }
        | Command::CreateThread { channel, .. }
        | Command::Edit { channel, .. }
        | Command::Typing { channel }
        | Command::AddMembers { channel, .. } => Some(Written::In(channel)),
        Command::OpenDirect { .. } | Command::CreateGroup { .. } => Some(Written::NewConversation),
        _ => None,
    }
}

/// Commands whose result other nodes must hear of: refused while the bus is down.
pub fn publishes(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::Send { .. }
            | Command::CreateThread { .. }
            | Command::Edit { .. }
            | Command::Delete { .. }
            | Command::SetThread { .. }
            | Command::OpenDirect { .. }
            | Command::CreateGroup { .. }
            | Command::AddMembers { .. }
            | Command::Leave { .. }
            | Command::CloseReport { .. }
    )
}

/// A command's answer: ready now, or, for a `send` whose write the store has queued, a
/// future to await (the session keeps several in flight and answers them in order).
// Returned and moved once per command: boxing the ready answer would cost an allocation
// for every command to save a few bytes of stack.
#[allow(clippy::large_enum_variant)]
pub enum Answer {
    /// The answer.
    Ready(Result<Ack, CmdError>),
    /// The answer once the queued write is durable.
    Queued(BoxFut<'static, Result<Ack, CmdError>>),
}

impl Answer {
    /// The answer, waiting for the write if it is queued.
    pub async fn resolve(self) -> Result<Ack, CmdError> {
        match self {
            Answer::Ready(r) => r,
            Answer::Queued(f) => f.await,
        }
    }
}

/// Handles one command of `user` to its end.
pub async fn handle(g: &Gateway, user: &str, id: u64, cmd: Command) -> Result<Ack, CmdError> {
    start(g, user, id, cmd).await.resolve().await
}

/// Handles one command of `user` up to its answer or, for a `send`, up to its write being
/// queued: routes it to its file.
pub async fn start(g: &Gateway, user: &str, id: u64, cmd: Command) -> Answer {
    let dir = g.dir();
    let Some(me) = dir.user(user) else {
        return Answer::Ready(Err(error::forbidden("your account is no longer in the directory")));
    };
    if publishes(&cmd) && !g.bus.healthy() {
        // Its events could not reach members on other nodes: refuse before storing.
        return Answer::Ready(Err(CmdError::new(
            ErrorCode::Unavailable,
            "messaging is briefly unavailable; retry shortly",
        )));
    }
    if let Err(e) = suspension::check(&g.suspensions(), me, &cmd) {
        return Answer::Ready(Err(e));
    }
    let cx = Ctx { dir: &dir, me, now_ms: g.clock.now_ms() };
    if let Err(e) = hours::check(cx.dir, me, &cmd, cx.now_ms) {
        return Answer::Ready(Err(e));
    }
    let ack = Ack { id, ..Ack::default() };
    if let Command::Send { channel, client_id, body, thread, reply_to } = cmd {
        return match post::queue_send(g, cx, ack, post::Send { channel, client_id, body, thread, reply_to }).await {
            Ok(f) => Answer::Queued(f),
            Err(e) => Answer::Ready(Err(e)),
        };
    }
    Answer::Ready(route(g, cx, ack, cmd).await)
}

/// Runs every command but `send` (queued by [`start`]).
async fn route(g: &Gateway, cx: Ctx<'_>, ack: Ack, cmd: Command) -> Result<Ack, CmdError> {
    match cmd {
        Command::Ping {} => Ok(ack),
        Command::Send { channel, client_id, body, thread, reply_to } => {
            post::send(g, cx, ack, post::Send { channel, client_id, body, thread, reply_to }).await
        }
        Command::CreateThread { channel, client_id, title, body } => {
            post::create_thread(g, cx, ack, channel, client_id, title, body).await
        }
        Command::Edit { channel, seq, body } => post::edit(g, cx, ack, channel, seq, body).await,
        Command::Delete { channel, seq } => post::delete(g, cx, ack, channel, seq).await,
        Command::SetThread { channel, thread, locked, pinned } => {
            forum::set_thread(g, cx, ack, channel, thread, locked, pinned).await
        }
        Command::Mute { channel, user, minutes } => forum::mute(g, cx, ack, channel, user, minutes).await,
        Command::OpenDirect { user } => conversation::open_direct(g, cx, ack, user).await,
        Command::CreateGroup { client_id, name, members } => {
            conversation::create_group(g, cx, ack, client_id, name, members).await
        }
        Command::AddMembers { channel, members } => conversation::add_members(g, cx, ack, channel, members).await,
        Command::Leave { channel } => conversation::leave(g, cx, ack, channel).await,
        Command::Members { channel } => conversation::members(g, cx, ack, channel).await,
        Command::Typing { channel } => conversation::typing(g, cx, ack, channel).await,
        Command::Sync { positions, limit } => read::sync(g, cx, ack, positions, limit).await,
        Command::History { channel, after, before, limit } => {
            read::history(g, cx, ack, channel, after, before, limit).await
        }
        Command::MarkRead { channel, seq } => read::mark_read(g, cx, ack, channel, seq).await,
        Command::Receipts { channel, seq } => read::receipts(g, cx, ack, channel, seq).await,
        Command::Report { channel, seq, reason } => report::report(g, cx, ack, channel, seq, reason).await,
        Command::Reports {} => report::reports(g, cx, ack).await,
        Command::CloseReport { report, action } => report::close_report(g, cx, ack, report, action).await,
        Command::Profiles { users } => conversation::profiles(cx, ack, users),
    }
}

#[cfg(test)]
mod tests;

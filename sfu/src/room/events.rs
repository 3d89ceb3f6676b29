//! What a room says and is told: members and their grants, settings, refusals, and the
//! events sent to peers (serialized as they are, docs/protocol.md section 9).

use preau_live::signal::ReceiveMode;
use serde::Serialize;
use std::time::Duration;

pub use preau_live::signal::{Media, PeerId, Role};

/// What a member may publish now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Grants {
    /// Microphone.
    pub audio: bool,
    /// Camera.
    pub video: bool,
    /// Screen share.
    pub screen: bool,
}

impl Grants {
    pub(crate) fn all() -> Self {
        Grants { audio: true, video: true, screen: true }
    }

    pub(crate) fn get(&self, m: Media) -> bool {
        match m {
            Media::Audio => self.audio,
            Media::Video => self.video,
            Media::Screen => self.screen,
        }
    }

    pub(crate) fn set(&mut self, m: Media, v: bool) {
        match m {
            Media::Audio => self.audio = v,
            Media::Video => self.video = v,
            Media::Screen => self.screen = v,
        }
    }
}

/// A member of the room (admitted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Member {
    /// Connection.
    pub peer: PeerId,
    /// Directory user id.
    pub user: String,
    /// Display name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// What they may publish.
    pub grants: Grants,
    /// Hand raised.
    pub hand: bool,
}

/// Settings of a room.
#[derive(Clone, Debug)]
pub struct RoomConfig {
    /// Most members, waiting room included.
    pub capacity: usize,
    /// How long the room outlives its last host.
    pub host_grace: Duration,
    /// Pupils wait for the host to admit them.
    pub waiting_room: bool,
    /// Pupils come in with microphone and camera granted (a breakout group's room).
    pub open_floor: bool,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig { capacity: 40, host_grace: Duration::from_secs(120), waiting_room: true, open_floor: false }
    }
}

/// Why an input was refused. The room is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    /// Only a host may do this.
    #[error("only the teacher may do this")]
    NotHost,
    /// The peer is not in the room (or not waiting, for admit/deny).
    #[error("not in this room")]
    NotInRoom,
    /// The peer already joined.
    #[error("already in this room")]
    AlreadyJoined,
    /// The room is full.
    #[error("the class is full")]
    Full,
    /// The room is locked: nobody new gets in.
    #[error("the class is locked")]
    Locked,
    /// The room has ended.
    #[error("the class has ended")]
    Ended,
    /// The member may not publish this kind of track now.
    #[error("you may not publish {0:?} now")]
    NotGranted(Media),
    /// Observers never publish, and hosts are not moderated.
    #[error("this member cannot be given that")]
    WrongRole,
    /// A poll's question or choices are empty, too long or too many.
    #[error("a poll needs a question (up to 300 characters) and 2 to 8 choices (up to 100 each)")]
    BadPoll,
    /// No open poll has this id, or the choice is not one of its.
    #[error("no such open poll or choice")]
    NoPoll,
    /// This member already answered this poll.
    #[error("you already answered this poll")]
    AlreadyAnswered,
    /// A breakout plan, length or message that does not fit (the text says why).
    #[error("{0}")]
    BadBreakout(&'static str),
    /// No breakout groups are out.
    #[error("no breakout groups are out")]
    NoBreakout,
}

impl RoomError {
    /// Stable code for the wire.
    pub fn code(&self) -> &'static str {
        match self {
            RoomError::NotHost => "not_host",
            RoomError::NotInRoom => "not_in_room",
            RoomError::AlreadyJoined => "already_joined",
            RoomError::Full => "room_full",
            RoomError::Locked => "room_locked",
            RoomError::Ended => "room_ended",
            RoomError::NotGranted(_) => "not_granted",
            RoomError::WrongRole => "wrong_role",
            RoomError::BadPoll => "bad_poll",
            RoomError::NoPoll => "no_poll",
            RoomError::AlreadyAnswered => "already_answered",
            RoomError::BadBreakout(_) => "bad_breakout",
            RoomError::NoBreakout => "no_breakout",
        }
    }
}

/// Why someone was turned away after joining.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefusedCode {
    /// The host did not admit them from the waiting room.
    NotAdmitted,
    /// The host removed them from the class.
    Removed,
}

impl RefusedCode {
    /// The code as sent (also the close reason).
    pub fn as_str(self) -> &'static str {
        match self {
            RefusedCode::NotAdmitted => "not_admitted",
            RefusedCode::Removed => "removed",
        }
    }
}

/// Why a room ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The host ended the class.
    Host,
    /// No host came back within the grace period.
    NoHost,
}

/// Something to tell peers. `to: None` means everyone admitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// Recipient peer, or every admitted member.
    pub to: Option<PeerId>,
    /// What.
    pub event: Event,
}

/// Room events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// You wait for the teacher to admit you.
    Waiting,
    /// Someone waits (to hosts).
    WaitingList {
        /// Waiting peers, in arrival order, with names.
        waiting: Vec<(PeerId, String)>,
    },
    /// You are in: the members and your grants.
    Admitted {
        /// Everyone admitted.
        members: Vec<Member>,
    },
    /// You were refused or removed (the connection then closes with 4003 and this code
    /// as its reason).
    Refused {
        /// Why, for a page to translate.
        code: RefusedCode,
        /// Why, in plain English.
        reason: String,
    },
    /// A member's hand went up or down (the `hands` queue follows).
    Hand {
        /// Whose.
        peer: PeerId,
        /// Now up.
        raised: bool,
    },
    /// A member joined.
    Joined {
        /// Who.
        member: Member,
    },
    /// A member left or was removed.
    Left {
        /// Who.
        peer: PeerId,
    },
    /// A member's grants changed (the SFU stops forwarding what is no longer granted).
    Grants {
        /// Who.
        peer: PeerId,
        /// Now.
        grants: Grants,
    },
    /// The raised hands, in order.
    Hands {
        /// Peers with a raised hand, first raised first.
        queue: Vec<PeerId>,
    },
    /// The class's chat: a thread of the class forum, a durable Préau channel (read and
    /// written through the gateway, under its rules; the host closes it to pupils by
    /// locking the thread).
    Chat {
        /// The thread's seq in the class forum.
        thread: u64,
    },
    /// The class is being recorded, or no longer (told to everyone, and to each
    /// newcomer while it is).
    Recording {
        /// Now recording.
        on: bool,
    },
    /// To a pupil: go to this breakout group (its room is `class:<class>~<group>`; ask
    /// the gateway for its ticket). Stay connected to the class: its word comes here.
    Breakout {
        /// `g1`, `g2`...
        group: String,
        /// "Groupe 1"...
        name: String,
    },
    /// The breakout groups out now and the time left before everyone is brought back
    /// (told to everyone, and to newcomers while groups are out).
    Breakouts {
        /// The groups.
        groups: Vec<super::GroupInfo>,
        /// Seconds until the recall, when the host set a time.
        ends_in_s: Option<u32>,
    },
    /// The host's word to every group.
    Broadcast {
        /// What they said.
        text: String,
    },
    /// Everyone is brought back: leave your group and come back to the class (its waiting
    /// room lets you straight in for 5 minutes).
    BreakoutEnded,
    /// Locked or unlocked.
    Locked {
        /// Now locked.
        locked: bool,
    },
    /// What the whole class receives at most (sent on admission when not `all`).
    ClassReceive {
        /// The mode.
        mode: ReceiveMode,
    },
    /// A poll opens (to everyone admitted, and to each pupil admitted while it is open).
    Poll {
        /// Its id (answers name it).
        poll: u32,
        /// The question.
        question: String,
        /// The choices, answered by index.
        choices: Vec<String>,
    },
    /// How a poll stands (to hosts, at each answer).
    PollResults {
        /// Which.
        poll: u32,
        /// Answers per choice.
        counts: Vec<u32>,
        /// Members who may answer (pupils admitted now).
        voters: u32,
    },
    /// A poll closed; `counts` when the host shows the results to the class.
    PollClosed {
        /// Which.
        poll: u32,
        /// Answers per choice, if shown.
        counts: Option<Vec<u32>>,
    },
    /// The class is over.
    Ended {
        /// Why.
        reason: EndReason,
    },
}

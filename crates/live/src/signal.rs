//! The signaling protocol, without IO: what a browser and the SFU say to each other over
//! the WebSocket (docs/protocol.md, "Live classes").
//!
//! Same conventions as the messaging protocol: JSON text frames, a `type` tag, an optional
//! client `id` echoed by `ack` or `error`, errors with a stable `code` and a plain message.
//!
//! Two peer connections per member, as most SFUs do: `pub` carries what the member sends
//! (the browser offers, the SFU answers) and `sub` what it receives (the SFU offers, the
//! browser answers). Neither side ever offers on the other's connection, so offers never
//! collide.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A peer's id in the room (one per connection).
pub type PeerId = u64;

/// What a member may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The teacher: moderates, publishes anything.
    Host,
    /// A pupil: publishes only what the host grants.
    Participant,
    /// Staff looking on: never publishes.
    Observer,
}

/// A kind of track.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Media {
    /// Microphone.
    Audio,
    /// Camera.
    Video,
    /// Screen share.
    Screen,
}

/// The audio level header extension (RFC 6464): who speaks.
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// Which of a member's two peer connections a message is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Pc {
    /// What the member publishes (browser offers).
    Pub,
    /// What the member receives (SFU offers).
    Sub,
}

/// A trickled ICE candidate, as the browser's `RTCIceCandidateInit`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    /// The `candidate:` line.
    pub candidate: String,
    /// Media section id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    /// Media section index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_m_line_index: Option<u16>,
}

/// What a member receives: everything (`all`, the default), every video on its lowest
/// layer (`low`, for poor connections), or no video at all (`audio`). The stricter of a
/// member's own choice and the class's (set by the host) applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReceiveMode {
    /// Every video, on the layer its tile and the bandwidth allow.
    #[default]
    All,
    /// Every video on its lowest layer.
    Low,
    /// Sound only: no video is forwarded.
    Audio,
}

/// Simulcast layer a subscriber asks for, lowest first (`q`, `h`, `f` in the browser's
/// encodings).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    /// Quarter resolution (a thumbnail).
    Low,
    /// Half resolution.
    Medium,
    /// Full resolution (the speaker, the screen).
    High,
}

/// What a client sends.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
pub struct ClientMsg {
    /// Echoed by the answer.
    #[serde(default)]
    pub id: Option<u64>,
    /// The command.
    #[serde(flatten)]
    pub cmd: ClientCmd,
}

/// Client commands.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientCmd {
    /// First message: the room token from the gateway.
    Join {
        /// Room token (JWT, audience `preau-sfu`).
        token: String,
    },
    /// An offer on the `pub` connection, naming what each track is (by track id).
    Publish {
        /// SDP offer.
        sdp: String,
        /// Track id (`MediaStreamTrack.id`) to what it is.
        #[serde(default)]
        tracks: BTreeMap<String, Media>,
    },
    /// The browser's answer to an SFU offer on the `sub` connection.
    Answer {
        /// SDP answer.
        sdp: String,
    },
    /// A trickled candidate.
    Candidate {
        /// Which connection.
        pc: Pc,
        /// The candidate.
        candidate: Candidate,
    },
    /// The `sub` connection needs new ICE credentials (the network changed); the SFU
    /// sends a new offer. The `pub` connection restarts with a new `publish` offer.
    RestartIce,
    /// The quality wanted for a source's video (the tile's size).
    Quality {
        /// Source id (`p<peer>-video`, `p<peer>-screen`).
        source: String,
        /// Highest layer wanted.
        quality: Quality,
    },
    /// What this member receives (a family on a poor connection chooses `audio`).
    Receive {
        /// The mode.
        mode: ReceiveMode,
    },
    /// Host: what the whole class receives at most (`audio`: an audio-only class, where
    /// cameras are not published either; screen shares still are).
    ClassReceive {
        /// The mode.
        mode: ReceiveMode,
    },
    /// Host: admit a waiting pupil.
    Admit {
        /// Peer.
        peer: PeerId,
    },
    /// Host: turn a waiting pupil away.
    Deny {
        /// Peer.
        peer: PeerId,
    },
    /// Raise one's hand.
    RaiseHand,
    /// Lower one's hand, or (host) someone's.
    LowerHand {
        /// Whose; one's own when absent.
        #[serde(default)]
        peer: Option<PeerId>,
    },
    /// Host: grant or withdraw microphone, camera or screen. Withdrawing audio mutes.
    Grant {
        /// Peer.
        peer: PeerId,
        /// What.
        media: Media,
        /// Granted or withdrawn.
        allow: bool,
    },
    /// Host: lower every raised hand.
    LowerAllHands,
    /// Host: open a poll.
    PollStart {
        /// The question (up to 300 characters).
        question: String,
        /// Two to eight choices (up to 100 characters each).
        choices: Vec<String>,
    },
    /// Pupil: answer the open poll, once.
    PollAnswer {
        /// The poll's id.
        poll: u32,
        /// The choice's index.
        choice: usize,
    },
    /// Host: close the open poll, showing the results to the class or not.
    PollEnd {
        /// The poll's id.
        poll: u32,
        /// Show the results to everyone.
        #[serde(default)]
        show: bool,
    },
    /// Host: mute every pupil.
    MuteAll,
    /// Host: remove a member.
    Remove {
        /// Peer.
        peer: PeerId,
    },
    /// Host: the class's chat is this forum thread of the class (its seq, from the
    /// gateway's `create_thread`); every member is told (`chat`), newcomers too.
    Chat {
        /// The thread's seq in `forum:<school>:<class>`.
        thread: u64,
    },
    /// Host: start or stop recording the class (WebM in the SFU's recordings folder,
    /// then listed in the class announcements); everyone is told (`recording`).
    Record {
        /// Start (true) or stop.
        on: bool,
    },
    /// Host: split the class into breakout groups: `count` groups drawn at random, or
    /// `groups` of peers by hand; everyone is brought back after `minutes` if given.
    BreakoutStart {
        /// Groups drawn at random (2 to 20).
        #[serde(default)]
        count: Option<u32>,
        /// Groups by hand: each a list of pupils' peer ids.
        #[serde(default)]
        groups: Option<Vec<Vec<PeerId>>>,
        /// Minutes until everyone is brought back (1 to 120).
        #[serde(default)]
        minutes: Option<u32>,
    },
    /// Host: a message to every group (`broadcast`).
    BreakoutBroadcast {
        /// The message (1 to 500 characters).
        text: String,
    },
    /// Host: bring everyone back now, or in `in_s` seconds.
    BreakoutEnd {
        /// Seconds from now; absent: now.
        #[serde(default)]
        in_s: Option<u32>,
    },
    /// Host: lock or unlock.
    Lock {
        /// Locked.
        locked: bool,
    },
    /// Host: end the class for everyone.
    End,
    /// Leave.
    Leave,
}

/// The stable codes of signaling errors (docs/protocol.md, section 9). Clients match on
/// these; the message beside them is for people.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignalCode {
    /// The room token is missing, invalid or expired (close 4001).
    Unauthorized,
    /// The first message was not `join`.
    NotJoined,
    /// `join` twice.
    AlreadyJoined,
    /// Only the host (the teacher) may do this.
    NotHost,
    /// That peer is not in the room (or not waiting).
    NotInRoom,
    /// The class is full.
    RoomFull,
    /// The class is locked: nobody new gets in.
    RoomLocked,
    /// The class has ended.
    RoomEnded,
    /// The host has not granted this (microphone, camera, screen).
    NotGranted,
    /// That member cannot be given this (observers never publish; hosts are not moderated).
    WrongRole,
    /// A poll's question or choices do not fit.
    BadPoll,
    /// No such open poll (or choice).
    NoPoll,
    /// The poll was already answered.
    AlreadyAnswered,
    /// A breakout plan, length or message that does not fit.
    BadBreakout,
    /// No breakout groups are out.
    NoBreakout,
    /// This breakout group's room is not yours (close 4003).
    NotInGroup,
    /// You receive no such source.
    UnknownSource,
    /// An `answer` came with no offer waiting for it.
    NoOffer,
    /// That peer connection is not negotiated yet.
    NoConnection,
    /// The SDP could not be read or applied.
    BadSdp,
    /// The ICE candidate could not be used.
    BadCandidate,
    /// Not a JSON text message with a string `type`.
    BadFrame,
    /// No such message type.
    UnknownCommand,
    /// A known message with missing or malformed fields.
    BadRequest,
    /// The message is over 64 KiB.
    TooLarge,
    /// The class is live on another node, or this one is restarting: ask the gateway again (close 4009).
    Elsewhere,
    /// This node is full (close 4009).
    NodeFull,
    /// A service the SFU needs (the room registry) is unreachable: retry shortly.
    Unavailable,
    /// This room cannot be recorded: recordings are for class rooms, on a node with a
    /// recordings folder it can write.
    RecordingUnavailable,
    /// A peer connection failed: restart ICE.
    ConnectionFailed,
    /// Something failed inside the SFU; the details are in its log, not here.
    Internal,
}

impl SignalCode {
    /// Every code, for documentation checks.
    pub const ALL: &[SignalCode] = &[
        SignalCode::Unauthorized,
        SignalCode::NotJoined,
        SignalCode::AlreadyJoined,
        SignalCode::NotHost,
        SignalCode::NotInRoom,
        SignalCode::RoomFull,
        SignalCode::RoomLocked,
        SignalCode::RoomEnded,
        SignalCode::NotGranted,
        SignalCode::WrongRole,
        SignalCode::BadPoll,
        SignalCode::NoPoll,
        SignalCode::AlreadyAnswered,
        SignalCode::BadBreakout,
        SignalCode::NoBreakout,
        SignalCode::NotInGroup,
        SignalCode::UnknownSource,
        SignalCode::NoOffer,
        SignalCode::NoConnection,
        SignalCode::BadSdp,
        SignalCode::BadCandidate,
        SignalCode::BadFrame,
        SignalCode::UnknownCommand,
        SignalCode::BadRequest,
        SignalCode::TooLarge,
        SignalCode::Elsewhere,
        SignalCode::NodeFull,
        SignalCode::Unavailable,
        SignalCode::RecordingUnavailable,
        SignalCode::ConnectionFailed,
        SignalCode::Internal,
    ];

    /// The code as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            SignalCode::Unauthorized => "unauthorized",
            SignalCode::NotJoined => "not_joined",
            SignalCode::AlreadyJoined => "already_joined",
            SignalCode::NotHost => "not_host",
            SignalCode::NotInRoom => "not_in_room",
            SignalCode::RoomFull => "room_full",
            SignalCode::RoomLocked => "room_locked",
            SignalCode::RoomEnded => "room_ended",
            SignalCode::NotGranted => "not_granted",
            SignalCode::WrongRole => "wrong_role",
            SignalCode::BadPoll => "bad_poll",
            SignalCode::NoPoll => "no_poll",
            SignalCode::AlreadyAnswered => "already_answered",
            SignalCode::BadBreakout => "bad_breakout",
            SignalCode::NoBreakout => "no_breakout",
            SignalCode::NotInGroup => "not_in_group",
            SignalCode::UnknownSource => "unknown_source",
            SignalCode::NoOffer => "no_offer",
            SignalCode::NoConnection => "no_connection",
            SignalCode::BadSdp => "bad_sdp",
            SignalCode::BadCandidate => "bad_candidate",
            SignalCode::BadFrame => "bad_frame",
            SignalCode::UnknownCommand => "unknown_command",
            SignalCode::BadRequest => "bad_request",
            SignalCode::TooLarge => "too_large",
            SignalCode::Elsewhere => "elsewhere",
            SignalCode::NodeFull => "node_full",
            SignalCode::Unavailable => "unavailable",
            SignalCode::RecordingUnavailable => "recording_unavailable",
            SignalCode::ConnectionFailed => "connection_failed",
            SignalCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for SignalCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a message was refused: a stable code and a plain message (never a library's
/// error text).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct SignalError {
    /// Stable code.
    pub code: SignalCode,
    /// Plain message.
    pub message: String,
}

impl SignalError {
    /// An error.
    pub fn new(code: SignalCode, message: impl Into<String>) -> Self {
        SignalError { code, message: message.into() }
    }
}

/// Largest signaling message accepted (an SDP offer with simulcast is a few KB).
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Decodes a client message; errors carry the stable codes of the messaging protocol
/// (`bad_frame`, `unknown_command`, `bad_request`, `too_large`) and the `id` when it
/// could be read, so the client can match the error to its request.
pub fn decode(text: &str) -> Result<ClientMsg, (Option<u64>, SignalError)> {
    if text.len() > MAX_MESSAGE {
        return Err((
            None,
            SignalError::new(SignalCode::TooLarge, format!("messages are limited to {MAX_MESSAGE} bytes")),
        ));
    }
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| (None, SignalError::new(SignalCode::BadFrame, format!("not a JSON message: {e}"))))?;
    let id = v.get("id").and_then(|i| i.as_u64());
    let Some(ty) = v.get("type").and_then(|t| t.as_str()).map(str::to_owned) else {
        return Err((id, SignalError::new(SignalCode::BadFrame, "a message needs a string `type`")));
    };
    const KNOWN: &[&str] = &[
        "join",
        "publish",
        "answer",
        "candidate",
        "restart_ice",
        "quality",
        "receive",
        "class_receive",
        "admit",
        "deny",
        "raise_hand",
        "lower_hand",
        "lower_all_hands",
        "poll_start",
        "poll_answer",
        "poll_end",
        "grant",
        "mute_all",
        "remove",
        "lock",
        "chat",
        "record",
        "breakout_start",
        "breakout_broadcast",
        "breakout_end",
        "end",
        "leave",
    ];
    if !KNOWN.contains(&ty.as_str()) {
        return Err((id, SignalError::new(SignalCode::UnknownCommand, format!("unknown message type `{ty}`"))));
    }
    serde_json::from_value(v)
        .map_err(|e| (id, SignalError::new(SignalCode::BadRequest, format!("malformed `{ty}`: {e}"))))
}

/// What the SFU sends besides room events (the SFU's `room::Event`, sent as they are).
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// The request `id` succeeded.
    Ack {
        /// Echo.
        id: u64,
    },
    /// A request failed, or something went wrong.
    Error {
        /// Echo, when the request had one.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Stable code.
        code: SignalCode,
        /// Plain message.
        message: String,
    },
    /// Joined (maybe into the waiting room): who you are here.
    Welcome {
        /// Your peer id in this room.
        peer: PeerId,
        /// Your role.
        role: Role,
        /// ICE servers to use (STUN/TURN), as `RTCIceServer` objects.
        ice_servers: Vec<serde_json::Value>,
    },
    /// The answer to a `publish` offer.
    Answer {
        /// SDP answer.
        sdp: String,
    },
    /// An offer on the `sub` connection (tracks came or went, or ICE restarts).
    Offer {
        /// SDP offer.
        sdp: String,
    },
    /// A trickled SFU candidate.
    Candidate {
        /// Which connection.
        pc: Pc,
        /// The candidate.
        candidate: Candidate,
    },
    /// The sources now sent to you on `sub`: track id to who and what.
    Sources {
        /// Source id to its owner and kind; a source left out is gone.
        sources: BTreeMap<String, SourceInfo>,
    },
    /// Who speaks, loudest first (from the audio level header extension).
    Speakers {
        /// Peers speaking now.
        active: Vec<PeerId>,
        /// The loudest one, if anyone speaks.
        dominant: Option<PeerId>,
    },
}

/// A source as a subscriber sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct SourceInfo {
    /// Publisher.
    pub peer: PeerId,
    /// Kind.
    pub media: Media,
    /// Whether its video reaches you now (last-N may hold it back in large rooms).
    pub forwarded: bool,
}

/// The id of a publisher's source of one kind (also the track id subscribers see).
pub fn source_id(peer: PeerId, media: Media) -> String {
    let m = match media {
        Media::Audio => "audio",
        Media::Video => "video",
        Media::Screen => "screen",
    };
    format!("p{peer}-{m}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_command_and_refuses_bad_input_with_stable_codes() {
        let ok = [
            r#"{"type":"join","token":"t"}"#,
            r#"{"id":3,"type":"publish","sdp":"v=0","tracks":{"abc":"screen"}}"#,
            r#"{"type":"answer","sdp":"v=0"}"#,
            r#"{"type":"candidate","pc":"sub","candidate":{"candidate":"candidate:1 1 udp 1 1.2.3.4 5 typ host","sdpMid":"0","sdpMLineIndex":0}}"#,
            r#"{"type":"restart_ice"}"#,
            r#"{"type":"quality","source":"p1-video","quality":"low"}"#,
            r#"{"type":"admit","peer":4}"#,
            r#"{"type":"deny","peer":4}"#,
            r#"{"type":"raise_hand"}"#,
            r#"{"type":"lower_hand"}"#,
            r#"{"type":"lower_hand","peer":2}"#,
            r#"{"type":"lower_all_hands"}"#,
            r#"{"type":"poll_start","question":"2+2 ?","choices":["3","4"]}"#,
            r#"{"type":"poll_answer","poll":1,"choice":1}"#,
            r#"{"type":"poll_end","poll":1,"show":true}"#,
            r#"{"type":"receive","mode":"audio"}"#,
            r#"{"type":"class_receive","mode":"low"}"#,
            r#"{"type":"grant","peer":2,"media":"audio","allow":false}"#,
            r#"{"type":"mute_all"}"#,
            r#"{"type":"remove","peer":2}"#,
            r#"{"type":"lock","locked":true}"#,
            r#"{"type":"end"}"#,
            r#"{"type":"leave"}"#,
        ];
        for s in ok {
            assert!(decode(s).is_ok(), "{s}: {:?}", decode(s));
        }
        let m = decode(r#"{"id":3,"type":"publish","sdp":"v=0","tracks":{"abc":"screen"}}"#).expect("publish");
        assert_eq!(m.id, Some(3));
        assert!(matches!(m.cmd, ClientCmd::Publish { ref tracks, .. } if tracks["abc"] == Media::Screen));

        let bad = [
            ("nope", None, "bad_frame"),
            (r#"{"id":1}"#, Some(1), "bad_frame"),
            (r#"{"id":1,"type":"fly"}"#, Some(1), "unknown_command"),
            (r#"{"id":2,"type":"grant","peer":"x","media":"audio","allow":true}"#, Some(2), "bad_request"),
            (r#"{"id":2,"type":"grant","peer":1,"media":"smell","allow":true}"#, Some(2), "bad_request"),
            (r#"{"type":"join"}"#, None, "bad_request"),
            (r#"{"id":3,"type":"receive","mode":"smell"}"#, Some(3), "bad_request"),
        ];
        for (s, id, code) in bad {
            let (eid, e) = decode(s).expect_err(s);
            assert_eq!((eid, e.code.as_str()), (id, code), "{s}");
            assert!(!e.message.is_empty());
        }
        // Every code is documented for client authors.
        let doc = include_str!("../../../docs/protocol.md");
        for c in SignalCode::ALL {
            assert!(doc.contains(&format!("`{c}`")), "docs/protocol.md names `{c}`");
        }
        let huge = format!(r#"{{"type":"answer","sdp":"{}"}}"#, "a".repeat(MAX_MESSAGE));
        assert_eq!(decode(&huge).expect_err("huge").1.code, SignalCode::TooLarge);
    }

    #[test]
    fn server_messages_have_the_documented_shape() {
        let v = serde_json::to_value(ServerMsg::Speakers { active: vec![3, 1], dominant: Some(3) }).expect("json");
        assert_eq!(v, serde_json::json!({"type":"speakers","active":[3,1],"dominant":3}));
        let v = serde_json::to_value(ServerMsg::Error { id: None, code: SignalCode::NotHost, message: "y".into() })
            .expect("json");
        assert_eq!(v, serde_json::json!({"type":"error","code":"not_host","message":"y"}));
        assert_eq!(source_id(7, Media::Screen), "p7-screen");
    }
}

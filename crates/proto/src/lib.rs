//! Préau wire protocol: the frames a client and the gateway exchange over a WebSocket,
//! the identifiers they carry, and the two codecs (JSON and MessagePack) that carry the
//! same frames. No IO lives here, so the server, the Rust client, the load tester and the
//! fuzzer share one definition.
//!
//! # Layout
//! - [`ids`]: user, channel and sequence identifiers, with validation of what comes off
//!   the network.
//! - [`frames`]: client commands ([`ClientFrame`]) and server frames ([`ServerFrame`]).
//! - [`codec`]: [`Encoding`], decoding of client frames with stable error codes, and
//!   [`SharedFrame`], a server frame encoded at most once per encoding and shared by every
//!   recipient.
//! - [`error`]: the stable error codes a client sees.
//! - [`schema`]: the JSON Schema of the frames, derived from these types (committed in
//!   `docs/schema/`, checked by a test).
//! - [`clock`]: the wall clock as an input ([`clock::Clock`]), so rules are tested on
//!   simulated time.
//!
//! The protocol is documented for implementers in `docs/protocol.md`.

pub mod clock;
pub mod codec;
pub mod error;
pub mod frames;
pub mod ids;
pub mod schema;

pub use codec::{
    DecodeError, Encoding, SharedFrame, decode_auth, decode_client, decode_server, encode_client, encode_server,
    peek_id,
};
pub use error::ErrorCode;
pub use frames::*;
pub use ids::{ChannelId, ChannelKind, IdError, MAX_BREAKOUT_GROUPS, Seq, UserId, valid_breakout_group, valid_id};

/// Version of the frames below; sent in `hello` and bumped on incompatible changes.
pub const PROTOCOL_VERSION: u32 = 1;
/// WebSocket subprotocol for JSON text frames.
pub const SUBPROTOCOL_JSON: &str = "preau.v1.json";
/// WebSocket subprotocol for MessagePack binary frames.
pub const SUBPROTOCOL_MSGPACK: &str = "preau.v1.msgpack";

/// WebSocket close codes of the gateway and of the live-class SFU (4000-4999 is the
/// private range). One list for both, so a code means the same everywhere.
pub mod close {
    /// Normal: the client left, or the live class ended.
    pub const NORMAL: u16 = 1000;
    /// The client did not read fast enough; its outbound queue overflowed. Resume.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// The token expired during the session (or, at the SFU, the room token is invalid or
    /// expired). Get a new token and reconnect.
    pub const TOKEN_EXPIRED: u16 = 4001;
    /// The user was removed: from the directory (messaging), or from the live class by
    /// its host, or refused at its waiting room.
    pub const ACCOUNT_REMOVED: u16 = 4003;
    /// Too many connections for this user or node.
    pub const TOO_MANY_CONNECTIONS: u16 = 4029;
    /// Too many bad frames in a row; the client is misbehaving.
    pub const PROTOCOL_ABUSE: u16 = 4002;
    /// The live class is on another SFU node, or this node is full or restarting: ask
    /// the gateway for a new room ticket.
    pub const ELSEWHERE: u16 = 4009;
    /// The node is restarting: reconnect after the delay given in the `reconnect` frame.
    pub const SERVICE_RESTART: u16 = 1012;
    /// The server failed on this session (at the SFU: the media engine, on one of the
    /// member's connections); the node goes on. Join again.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// A text frame was not valid UTF-8 (RFC 6455).
    pub const INVALID_UTF8: u16 = 1007;
    /// A frame beyond the hard cap (four times the frame limit) was sent.
    pub const TOO_BIG: u16 = 1009;
}

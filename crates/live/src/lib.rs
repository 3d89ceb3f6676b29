//! Préau's live classes on the wire, shared by the SFU, its Rust client and the load
//! tester, so the server library does not carry the client's dependencies and the load
//! tester does not link the SFU server.
//!
//! # Layout
//! - [`signal`]: the signaling messages (docs/protocol.md, section 9): commands,
//!   server messages, the stable error codes ([`signal::SignalCode`]) and the decoder of
//!   client messages. No IO.
//! - [`vp8`]: whether a VP8 payload starts a keyframe. No IO.
//! - `convert` (feature `webrtc`): candidates to and from webrtc-rs.
//! - `client` (feature `client`): the Rust live client publishing generated VP8 and Opus.

pub mod signal;
pub mod vp8;

#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "webrtc")]
mod convert;

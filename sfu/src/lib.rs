//! Préau's live classes: a teacher teaches a class live; pupils join muted, without
//! camera, through a waiting room.
//!
//! # Layout
//! - [`room`]: room control as a state machine without IO: roles, waiting room, hands,
//!   permissions to publish, mute, remove, lock, end, the host's grace period. It takes
//!   inputs with the time (`handle_*(now, ..)`) and gives back outputs
//!   ([`room::Room::poll_output`]) and its next deadline ([`room::Room::poll_timeout`]),
//!   so it is tested on simulated time.
//!
//! Signaling, media forwarding (webrtc-rs) and the `preau-sfu` binary build on it (issue 3).

pub mod room;

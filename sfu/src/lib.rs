//! Préau's live classes: a WebRTC SFU on webrtc-rs 0.17. A teacher teaches a class live;
//! pupils join muted, without camera, through a waiting room; a head teacher can address
//! an assembly of 300.
//!
//! # Layout
//! Without IO, tested on simulated time:
//! - [`room`]: room control: roles, waiting room, hands, grants, mute, remove, lock, end,
//!   the host's grace period, capacity.
//! - [`signal`]: the signaling messages (docs/protocol.md, "Live classes").
//! - [`forward`]: per-subscriber simulcast layer choice, keyframe-gated switches, and
//!   the sequence and timestamp rewriting that keeps a subscriber's stream continuous.
//! - [`speaker`]: active speakers from the audio level extension, and last-N.
//!
//! With IO (thin drivers of the above):
//! - [`media`]: webrtc-rs factories over one UDP port, published sources and their
//!   reader tasks.
//! - [`server`]: HTTP and signaling; one task per room, one per peer.
//! - [`config`], [`metrics`]: flags and metric names.
//! - [`client`]: a Rust live-class client publishing generated VP8 and Opus (tests, load).
//!
//! The `preau-sfu` binary (src/main.rs) parses the flags and serves.

pub mod client;
pub mod config;
pub mod forward;
pub mod media;
pub mod metrics;
pub mod room;
pub mod server;
pub mod signal;
pub mod speaker;

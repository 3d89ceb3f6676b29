//! Préau's live classes: a WebRTC SFU on str0m (sans-IO WebRTC). A teacher teaches a class live;
//! pupils join muted, without camera, through a waiting room; a head teacher can address
//! an assembly of 300.
//!
//! # Layout
//! Without IO, tested on simulated time:
//! - [`room`]: room control: roles, waiting room, hands, grants, mute, remove, lock, end,
//!   the host's grace period, capacity.
//! - [`forward`]: per-subscriber simulcast layer choice, keyframe-gated switches, and
//!   the sequence and timestamp rewriting that keeps a subscriber's stream continuous.
//! - [`speaker`]: active speakers from the audio level extension, and last-N.
//! - [`negotiator`]: the `sub` connection's offer/answer state.
//! - [`budget`]: a subscriber's bandwidth shared across the videos it receives, the
//!   holds that keep layer choices from flapping, and what its estimator should look for.
//! - [`record::assemble`], [`record::timeline`]: a recording's VP8 frames, its picture
//!   and voices, their times and order.
//! - [`admission`] (its pure parts), [`turn`] (TURN credentials), [`error`] (what a
//!   client sees of a failure).
//!
//! With IO (thin drivers of the above):
//! - [`net`]: the routing index over the node's one UDP socket (no IO) and batched
//!   sends.
//! - [`node`]: [`Sfu`], one node: engine, verifier, rooms, registry entry.
//! - [`room_task`]: one task per room; [`peer`]: one task per member (signaling).
//! - [`engine`]: the media engine: str0m connections owned by a few engine threads
//!   (shards), one receiving thread routing the socket's datagrams to them, packets
//!   shared between shards; [`media`]: a published source as the room sees it.
//! - [`record`]: class recordings: the tap on sources, the writing thread (WebM through
//!   libwebm), the folder, listing through the gateway, retention, downloads.
//! - [`schema`]: the signaling's JSON Schema, derived from the types.
//! - [`http`]: the routes; [`config`], [`metrics`]: flags and metric names.
//!
//! The signaling types and the Rust live client are in `preau-live`. The `preau-sfu`
//! binary (src/main.rs) parses the flags and calls [`run`].

pub mod admission;
pub mod budget;
pub mod config;
pub mod engine;
pub mod error;
pub mod forward;
pub mod http;
pub mod media;
pub mod metrics;
pub mod negotiator;
pub mod net;
pub mod node;
pub mod peer;
pub mod record;
pub mod room;
pub mod room_task;
pub mod schema;
pub mod speaker;
pub mod turn;

pub use node::Sfu;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Serves `listener` until `shutdown` resolves; then drains: readiness fails, placement
/// avoids the node, and running classes go on until they end, `drain` passes, or
/// `shutdown_again` resolves.
pub async fn run(
    listener: preau_ops::tls::Listener,
    sfu: Arc<Sfu>,
    drain: Duration,
    shutdown: impl Future<Output = ()>,
    shutdown_again: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let server = tokio::spawn(axum::serve(listener, http::router(sfu.clone())).into_future());
    shutdown.await;
    // Classes in progress finish; new ones go to other nodes.
    sfu.drain();
    tracing::info!(peers = sfu.peer_count(), "draining: waiting for running classes to end");
    let deadline = tokio::time::Instant::now() + drain;
    let wait = async {
        while sfu.peer_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        _ = wait => {}
        _ = shutdown_again => tracing::info!("second signal: stopping now"),
    }
    server.abort();
    Ok(())
}

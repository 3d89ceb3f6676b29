//! The answers of a session's pipelined sends, in command order (docs/protocol.md,
//! "Pipelining").

use crate::cmd::CmdError;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use preau_proto::Ack;
use preau_store::BoxFut;

/// Sends of one connection whose writes may be in flight at once: their acks still come
/// back in command order, and the store groups them into one commit (docs/protocol.md).
pub const MAX_SENDS_IN_FLIGHT: usize = 64;
/// Answers waiting in order (writes in flight and the refusals queued behind them) beyond
/// which the socket is not read until some are written.
pub(super) const MAX_ANSWERS_WAITING: usize = 4 * MAX_SENDS_IN_FLIGHT;

/// An answer waiting its turn: the command's id, its result, and whether it held one of
/// the in-flight writes.
pub(super) type Waiting = BoxFut<'static, (u64, Result<Ack, CmdError>, bool)>;

/// Answers of pipelined sends, in command order.
#[derive(Default)]
pub(super) struct InFlight {
    /// Made at the first send: most connections only read, and an empty `FuturesOrdered`
    /// already holds two allocations.
    answers: Option<FuturesOrdered<Waiting>>,
    /// Answers in `answers` that wait on a store write.
    pub(super) writes: usize,
}

impl InFlight {
    pub(super) fn len(&self) -> usize {
        self.answers.as_ref().map_or(0, |a| a.len())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn push(&mut self, w: Waiting) {
        self.answers.get_or_insert_with(FuturesOrdered::new).push_back(w);
    }

    /// The next answer in command order (pending for ever when there is none: poll it only
    /// when not empty).
    pub(super) async fn next(&mut self) -> Option<(u64, Result<Ack, CmdError>, bool)> {
        match &mut self.answers {
            Some(a) => a.next().await,
            None => std::future::pending().await,
        }
    }
}

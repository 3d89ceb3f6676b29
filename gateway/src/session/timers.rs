//! A session's three deadlines behind its one timer (pure: `now` is an input).

use tokio::time::Instant;

/// A session's deadlines, behind its one timer.
pub(super) struct Timers {
    /// The token's expiry.
    pub(super) expires: Instant,
    /// The next heartbeat.
    pub(super) next_ping: Instant,
    /// The end of a drain's jittered delay, once draining.
    pub(super) restart_at: Option<Instant>,
}

/// Which deadline the timer reached, the most final first.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Due {
    Restart,
    Expired,
    Ping,
}

impl Timers {
    pub(super) fn next(&self) -> Instant {
        let next = self.expires.min(self.next_ping);
        self.restart_at.map_or(next, |r| next.min(r))
    }

    pub(super) fn due(&self, now: Instant) -> Option<Due> {
        if self.restart_at.is_some_and(|r| now >= r) {
            Some(Due::Restart)
        } else if now >= self.expires {
            Some(Due::Expired)
        } else if now >= self.next_ping {
            Some(Due::Ping)
        } else {
            None
        }
    }
}

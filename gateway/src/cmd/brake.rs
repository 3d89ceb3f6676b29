//! Mass-send brakes. In March 2024 compromised accounts sent threats to many
//! conversations at once; a person writing to their classes does not look like that. A
//! user who writes to many distinct conversations or groups within a window is slowed
//! (each new one waits), then held for a while, and the school's direction is alerted.
//! Class channels (forums, announcements) never count, so teachers and staff posting to
//! their classes are not hampered. Pure: the time is an input.

use preau_proto::ChannelId;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// Thresholds (flags `--brake-*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrakeConfig {
    /// The window distinct conversations are counted in.
    pub window: Duration,
    /// Beyond this many distinct conversations in the window, each new one waits.
    pub slow_after: usize,
    /// The wait between two new conversations once slowed.
    pub slow_interval: Duration,
    /// Beyond this many, the account is held.
    pub hold_after: usize,
    /// How long a hold lasts.
    pub hold_for: Duration,
}

impl Default for BrakeConfig {
    fn default() -> Self {
        BrakeConfig {
            window: Duration::from_secs(60),
            slow_after: 10,
            slow_interval: Duration::from_secs(5),
            hold_after: 20,
            hold_for: Duration::from_secs(15 * 60),
        }
    }
}

/// What the brake says of a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Go on.
    Go,
    /// Wait this long before writing to another new conversation.
    Slow(Duration),
    /// Held this much longer; `alert` on the write that caused the hold.
    Held {
        /// Time left.
        left: Duration,
        /// Tell the school's direction (once per hold).
        alert: bool,
        /// Distinct conversations written in the window.
        distinct: usize,
    },
}

/// One user's recent conversation writes: every distinct conversation tried counts
/// towards the hold, refused ones included (retrying does not dodge it); only admitted
/// ones are free to write again.
#[derive(Clone, Debug, Default)]
pub struct Brake {
    /// (when, where, admitted).
    recent: VecDeque<(Instant, ChannelId, bool)>,
    last_new: Option<Instant>,
    held_until: Option<Instant>,
}

impl Brake {
    /// A write to conversation `to` at `now`.
    pub fn on_write(&mut self, cfg: &BrakeConfig, now: Instant, to: &ChannelId) -> Verdict {
        while self.recent.front().is_some_and(|(t, _, _)| now.saturating_duration_since(*t) > cfg.window) {
            self.recent.pop_front();
        }
        if let Some(until) = self.held_until {
            if now < until {
                return Verdict::Held { left: until - now, alert: false, distinct: self.distinct(false) };
            }
            self.held_until = None;
            self.recent.clear();
        }
        if self.recent.iter().any(|(_, c, ok)| *ok && c == to) {
            // Writing again where one already writes is a conversation, not a mass send.
            return Verdict::Go;
        }
        let tried = self.distinct(false) + usize::from(!self.recent.iter().any(|(_, c, _)| c == to));
        if tried > cfg.hold_after {
            self.held_until = Some(now + cfg.hold_for);
            return Verdict::Held { left: cfg.hold_for, alert: true, distinct: tried };
        }
        if self.distinct(true) >= cfg.slow_after
            && let Some(last) = self.last_new
        {
            let since = now.saturating_duration_since(last);
            if since < cfg.slow_interval {
                self.recent.push_back((now, to.clone(), false));
                return Verdict::Slow(cfg.slow_interval - since);
            }
        }
        self.last_new = Some(now);
        self.recent.push_back((now, to.clone(), true));
        Verdict::Go
    }

    /// Distinct conversations in the window: admitted ones only, or all tried.
    fn distinct(&self, admitted_only: bool) -> usize {
        let mut v: Vec<&ChannelId> =
            self.recent.iter().filter(|(_, _, ok)| *ok || !admitted_only).map(|(_, c, _)| c).collect();
        v.sort();
        v.dedup();
        v.len()
    }

    /// Whether the entry can be forgotten (nothing recent, no hold).
    pub fn is_idle(&self, cfg: &BrakeConfig, now: Instant) -> bool {
        self.held_until.is_none_or(|u| now >= u)
            && self.recent.back().is_none_or(|(t, _, _)| now.saturating_duration_since(*t) > cfg.window)
    }
}

/// Shards of the per-user brakes: a user's entry outlives their sessions (reconnecting
/// does not reset a hold), idle entries are dropped as the shard is used.
pub struct Brakes {
    shards: Box<[parking_lot::Mutex<std::collections::HashMap<String, Brake>>]>,
    hasher: std::collections::hash_map::RandomState,
    cfg: BrakeConfig,
}

const SHARDS: usize = 64;
/// Idle entries are pruned when a shard holds more than this many users.
const PRUNE_ABOVE: usize = 4096;

impl Brakes {
    /// Brakes with these thresholds.
    pub fn new(cfg: BrakeConfig) -> Self {
        Brakes {
            shards: (0..SHARDS).map(|_| parking_lot::Mutex::new(std::collections::HashMap::new())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            cfg,
        }
    }

    /// `user` writes to conversation `to` at `now`.
    pub fn on_write(&self, user: &str, to: &ChannelId, now: Instant) -> Verdict {
        use std::hash::BuildHasher;
        let i = (self.hasher.hash_one(user) as usize) % SHARDS;
        let mut shard = self.shards[i].lock();
        if shard.len() > PRUNE_ABOVE {
            shard.retain(|_, b| !b.is_idle(&self.cfg, now));
        }
        shard.entry(user.to_owned()).or_default().on_write(&self.cfg, now, to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dm(i: usize) -> ChannelId {
        ChannelId::direct("e001", &format!("u{i:03}"))
    }

    #[test]
    fn slows_then_holds_a_mass_sender() {
        let cfg = BrakeConfig::default();
        let t0 = Instant::now();
        let mut b = Brake::default();
        for i in 0..10 {
            assert_eq!(b.on_write(&cfg, t0, &dm(i)), Verdict::Go, "the first ten are free");
        }
        // The eleventh new conversation at once waits; again within the wait too.
        assert_eq!(b.on_write(&cfg, t0, &dm(10)), Verdict::Slow(cfg.slow_interval));
        assert_eq!(b.on_write(&cfg, t0 + Duration::from_secs(1), &dm(10)), Verdict::Slow(Duration::from_secs(4)));
        // Old conversations go on.
        assert_eq!(b.on_write(&cfg, t0 + Duration::from_secs(1), &dm(3)), Verdict::Go);
        let mut t = t0;
        for i in 10..20 {
            t += cfg.slow_interval;
            assert_eq!(b.on_write(&cfg, t, &dm(i)), Verdict::Go, "one every five seconds");
        }
        t += cfg.slow_interval;
        assert!(matches!(b.on_write(&cfg, t, &dm(20)), Verdict::Held { alert: true, distinct: 21, .. }));
        // Held everywhere, the old conversations too, and alerted once.
        assert!(matches!(b.on_write(&cfg, t, &dm(1)), Verdict::Held { alert: false, .. }));
        assert!(!b.is_idle(&cfg, t));
        let after = t + cfg.hold_for;
        assert_eq!(b.on_write(&cfg, after, &dm(1)), Verdict::Go, "the hold ends");
    }

    #[test]
    fn retrying_while_slowed_leads_to_the_hold() {
        let cfg = BrakeConfig::default();
        let t0 = Instant::now();
        let mut b = Brake::default();
        let verdicts: Vec<Verdict> =
            (0..30).map(|i| b.on_write(&cfg, t0 + Duration::from_millis(i as u64 * 100), &dm(i))).collect();
        assert!(verdicts[..10].iter().all(|v| *v == Verdict::Go));
        assert!(verdicts[10..20].iter().all(|v| matches!(v, Verdict::Slow(_))), "{verdicts:?}");
        assert!(matches!(verdicts[20], Verdict::Held { alert: true, distinct: 21, .. }));
        assert!(verdicts[21..].iter().all(|v| matches!(v, Verdict::Held { alert: false, .. })));
    }

    #[test]
    fn a_steady_writer_is_never_slowed() {
        let cfg = BrakeConfig::default();
        let t0 = Instant::now();
        let mut b = Brake::default();
        // Sixty new conversations, one every ten seconds for ten minutes: at most six a window.
        for i in 0..60 {
            let t = t0 + Duration::from_secs(10 * i as u64);
            assert_eq!(b.on_write(&cfg, t, &dm(i)), Verdict::Go, "{i}");
        }
        // Hundreds of messages to a few conversations.
        for i in 0..300 {
            assert_eq!(b.on_write(&cfg, t0 + Duration::from_secs(700), &dm(i % 5 + 100)), Verdict::Go);
        }
    }
}

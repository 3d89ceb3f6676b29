//! The wall clock, as an input.
//!
//! Everything that stamps or compares calendar time (message timestamps, mute
//! deadlines, presence expiry, token lifetimes) reads it through [`Clock`], so tests feed
//! a [`ManualClock`] and the rules stay pure. [`SystemClock`] is the only place in the
//! workspace's libraries that reads `SystemTime::now` (`clippy.toml` disallows it
//! elsewhere). Monotonic time in async code is `tokio::time::Instant`, which
//! `tokio::time::pause` controls.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;

    /// Seconds since the Unix epoch.
    fn now_secs(&self) -> u64 {
        (self.now_ms().max(0) / 1000) as u64
    }

    /// Microseconds since the Unix epoch (latency stamps).
    fn now_us(&self) -> u64 {
        self.now_ms().max(0) as u64 * 1000
    }
}

/// The system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

#[allow(clippy::disallowed_methods)] // the one home of the wall clock
fn system_since_epoch() -> std::time::Duration {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default()
}

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        system_since_epoch().as_millis() as i64
    }

    fn now_us(&self) -> u64 {
        system_since_epoch().as_micros() as u64
    }
}

/// The shared handle stores and services keep.
pub type SharedClock = Arc<dyn Clock>;

/// The system clock as a [`SharedClock`].
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// A clock that moves only when told (tests).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock showing `ms` since the epoch.
    pub fn at(ms: i64) -> Arc<Self> {
        Arc::new(ManualClock(AtomicI64::new(ms)))
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::Relaxed);
    }

    /// Sets the clock.
    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::at(1_000);
        assert_eq!(c.now_ms(), 1_000);
        assert_eq!(c.now_secs(), 1);
        c.advance(2_500);
        assert_eq!(c.now_ms(), 3_500);
        c.set(10);
        assert_eq!(c.now_ms(), 10);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now_ms() > 1_577_836_800_000);
        assert!(SystemClock.now_us() / 1000 >= SystemClock.now_ms() as u64 - 1000);
    }
}

//! Rate limiting: a token bucket with time as an input, so it is tested without sleeping.

use std::time::Duration;
use tokio::time::Instant;

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        TokenBucket {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: now,
        }
    }

    /// Takes a token, or says how long until one is available.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        // Refills add up in floating point: a token a hair short of whole is whole (a
        // wait of 0 ns would tell the client to retry at once, and fail again).
        if self.tokens + 1e-9 >= 1.0 {
            self.tokens = (self.tokens - 1.0).max(0.0);
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate).max(Duration::from_micros(1)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2, 3, t0);
        for _ in 0..3 {
            assert!(b.try_take(t0).is_ok());
        }
        let wait = b.try_take(t0).expect_err("empty");
        assert_eq!(wait, Duration::from_millis(500));
        assert!(b.try_take(t0 + Duration::from_millis(499)).is_err());
        assert!(b.try_take(t0 + Duration::from_millis(1000)).is_ok());
        // A long pause refills only up to the burst.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(b.try_take(later).is_ok());
        }
        assert!(b.try_take(later).is_err());
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the pattern of takes, a bucket never gives more than its burst plus
        /// what its rate refilled since it was full, and a refusal's wait is positive and
        /// at most one token's time.
        #[test]
        fn a_bucket_never_exceeds_its_bounds(
            rate in 1u32..100,
            burst in 1u32..50,
            steps in proptest::collection::vec((0u64..2_000, 1usize..5), 1..200),
        ) {
            let t0 = Instant::now();
            let mut b = TokenBucket::new(rate, burst, t0);
            let (mut now, mut taken) = (t0, 0u64);
            for (dt_ms, takes) in steps {
                now += Duration::from_millis(dt_ms);
                for _ in 0..takes {
                    match b.try_take(now) {
                        Ok(()) => taken += 1,
                        Err(wait) => {
                            prop_assert!(wait > Duration::ZERO);
                            prop_assert!(wait <= Duration::from_secs_f64(1.0 / f64::from(rate)) + Duration::from_micros(1));
                        }
                    }
                }
                let allowed = f64::from(burst) + now.duration_since(t0).as_secs_f64() * f64::from(rate);
                prop_assert!(taken as f64 <= allowed + 1e-9, "{taken} taken, {allowed} allowed");
            }
        }
    }
}

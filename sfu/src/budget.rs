//! A subscriber's bandwidth shared across the videos it receives, and the hysteresis that
//! keeps layer choices from flapping; without IO, tested on simulated time.
//!
//! The engine calls [`allocate`] whenever a subscriber's estimate, one of its sources'
//! layers or one of its tiles changes: videos are served in rank order (the teacher's
//! camera, then a screen share, then pupils' cameras as last-N lists them), each taking
//! the highest layer within its tile's quality that fits what is left. Each choice then
//! goes through that subscription's [`LayerHold`]: a lower layer is taken at once, a
//! higher one only once it has been proposed for [`CLIMB_AFTER`].

use crate::forward::{LayerStat, pick_layer};
use preau_live::signal::Quality;
use std::time::{Duration, Instant};

/// How long a higher layer must keep fitting before a subscriber climbs to it.
pub const CLIMB_AFTER: Duration = Duration::from_secs(2);

/// Rank of a video in a subscriber's budget: lower is served first.
pub fn rank(from_host: bool, screen: bool) -> u8 {
    match (screen, from_host) {
        (false, true) => 0,
        (true, _) => 1,
        (false, false) => 2,
    }
}

/// One video a subscriber receives.
#[derive(Clone, Copy, Debug)]
pub struct VideoWant<'a> {
    /// The source's present layers, lowest first.
    pub layers: &'a [LayerStat],
    /// The tile's quality (caps the layer).
    pub quality: Quality,
    /// Served in this order ([`rank`], then last-N order).
    pub rank: u8,
}

/// Each video's layer (`None` when its source has no active layer), from `budget` (bits
/// per second for video; `None` when no estimate is known: every tile then gets its
/// quality's layer). A video that fits nothing gets its lowest active layer: a pupil
/// keeps seeing the teacher, small, rather than nothing.
pub fn allocate(budget: Option<u64>, wants: &[VideoWant<'_>]) -> Vec<Option<usize>> {
    let mut order: Vec<usize> = (0..wants.len()).collect();
    order.sort_by_key(|&i| wants[i].rank);
    let mut out = vec![None; wants.len()];
    let mut left = budget;
    for i in order {
        let w = &wants[i];
        let pick = pick_layer(w.layers, w.quality, left);
        if let (Some(l), Some(b)) = (pick, left.as_mut()) {
            *b = b.saturating_sub(w.layers[l].bitrate);
        }
        out[i] = pick;
    }
    out
}

/// One subscription's layer over time: down at once (the link is full), up only after
/// the higher layer has been proposed for [`CLIMB_AFTER`] without a break.
#[derive(Clone, Copy, Debug, Default)]
pub struct LayerHold {
    held: Option<usize>,
    /// Since when a layer above `held` has been proposed.
    rising: Option<Instant>,
}

impl LayerHold {
    /// The layer to use now, given this moment's proposal.
    pub fn decide(&mut self, now: Instant, proposed: Option<usize>) -> Option<usize> {
        match (self.held, proposed) {
            (Some(h), Some(p)) if p > h => {
                let since = *self.rising.get_or_insert(now);
                if now.saturating_duration_since(since) >= CLIMB_AFTER {
                    self.held = Some(p);
                    self.rising = None;
                }
            }
            _ => {
                self.held = proposed;
                self.rising = None;
            }
        }
        self.held
    }

    /// The layer held.
    pub fn held(&self) -> Option<usize> {
        self.held
    }

    /// When a climb that is waiting would happen (the engine looks again then).
    pub fn climb_due(&self) -> Option<Instant> {
        self.rising.map(|t| t + CLIMB_AFTER)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // one real instant as the origin of simulated time
mod tests {
    use super::*;

    fn l(kbps: u64) -> LayerStat {
        LayerStat { active: true, bitrate: kbps * 1000 }
    }

    #[test]
    fn the_teacher_is_served_first_then_the_screen_then_pupils() {
        let cam = [l(150), l(500), l(1500)];
        let screen = [l(800)];
        let pupil = [l(100), l(300)];
        let wants = [
            VideoWant { layers: &pupil, quality: Quality::High, rank: rank(false, false) },
            VideoWant { layers: &screen, quality: Quality::High, rank: rank(false, true) },
            VideoWant { layers: &cam, quality: Quality::High, rank: rank(true, false) },
        ];
        // Plenty: everyone at the top.
        assert_eq!(allocate(Some(10_000_000), &wants), vec![Some(1), Some(0), Some(2)]);
        // 2.5 Mbit/s: the teacher's top layer (1.5), the screen (0.8), the pupil's
        // low layer in what is left (0.2 of which 90% fits 0.1... not 0.3).
        assert_eq!(allocate(Some(2_500_000), &wants), vec![Some(0), Some(0), Some(2)]);
        // 1 Mbit/s: the teacher's middle layer first; the rest get their lowest.
        assert_eq!(allocate(Some(1_000_000), &wants), vec![Some(0), Some(0), Some(1)]);
        // No estimate: each tile's own cap.
        let medium = [VideoWant { layers: &cam, quality: Quality::Medium, rank: 0 }];
        assert_eq!(allocate(None, &medium), vec![Some(1)]);
        // A source with no active layer gets none and costs nothing.
        let off = [LayerStat::default()];
        let two = [
            VideoWant { layers: &off, quality: Quality::High, rank: 0 },
            VideoWant { layers: &cam, quality: Quality::High, rank: 2 },
        ];
        assert_eq!(allocate(Some(2_000_000), &two), vec![None, Some(2)]);
    }

    #[test]
    fn a_hold_goes_down_at_once_and_up_after_two_seconds_of_room() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut h = LayerHold::default();
        assert_eq!(h.decide(at(0), Some(1)), Some(1), "the first choice is taken at once");
        assert_eq!(h.decide(at(100), Some(2)), Some(1), "up waits");
        assert_eq!(h.climb_due(), Some(at(2100)));
        assert_eq!(h.decide(at(1000), Some(2)), Some(1));
        // A dip resets the wait: no flapping on a noisy estimate.
        assert_eq!(h.decide(at(1500), Some(1)), Some(1));
        assert_eq!(h.decide(at(1600), Some(2)), Some(1));
        assert_eq!(h.decide(at(3599), Some(2)), Some(1));
        assert_eq!(h.decide(at(3600), Some(2)), Some(2), "two seconds of room: up");
        assert_eq!(h.decide(at(3700), Some(0)), Some(0), "down at once");
        assert_eq!(h.decide(at(3800), None), None, "the source went away");
        assert_eq!(h.decide(at(3900), Some(2)), Some(2), "a fresh start is taken at once");
        assert_eq!(h.held(), Some(2));
    }
}

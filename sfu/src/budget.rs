//! A subscriber's bandwidth shared across the videos it receives, and the hysteresis that
//! keeps layer choices from flapping; without IO, tested on simulated time.
//!
//! The engine calls [`allocate`] whenever a subscriber's estimate, one of its sources'
//! layers or one of its tiles changes: videos are served in rank order (the teacher's
//! camera, then a screen share, then pupils' cameras as last-N lists them), each taking
//! the highest layer within its tile's quality that fits what is left. Each choice then
//! goes through that subscription's [`LayerHold`]: a lower layer once it has been proposed
//! for [`DROP_AFTER`] (an estimator dips for a moment after each keyframe burst), a higher
//! one once it has been proposed for [`CLIMB_AFTER`].

use crate::forward::{LayerStat, pick_layer};

/// A layer above the one held must fit in this share of what is left (percent)…
const CLIMB_FIT: u64 = 85;
/// …while the one held, or one below it, stays as long as it fits at all.
const KEEP_FIT: u64 = 100;
/// The estimator looks for this much above what the tiles want (percent), so that the
/// estimate stays above the layers sent rather than hovering at their rate.
const HEADROOM: u64 = 125;
use preau_live::signal::Quality;
use std::time::{Duration, Instant};

/// How long a higher layer must keep fitting before a subscriber climbs to it.
pub const CLIMB_AFTER: Duration = Duration::from_secs(2);
/// How long a lower layer must keep being proposed before a subscriber drops to it.
pub const DROP_AFTER: Duration = Duration::from_secs(1);

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
    /// The layer it has now: kept while it fits at all, where a higher one must fit with
    /// room to spare (no flapping at the edge).
    pub held: Option<usize>,
}

/// The highest active layer within `w`'s quality that fits `left`, else its lowest active.
fn pick(w: &VideoWant<'_>, left: Option<u64>) -> Option<usize> {
    let Some(left) = left else { return pick_layer(w.layers, w.quality, None) };
    let cap = pick_layer(w.layers, w.quality, None)?;
    let lowest = w.layers.iter().position(|l| l.active)?;
    let fits = |i: usize| {
        let share = if w.held.is_some_and(|h| i <= h) { KEEP_FIT } else { CLIMB_FIT };
        w.layers[i].bitrate.saturating_mul(100) <= left.saturating_mul(share)
    };
    Some((lowest..=cap).rev().find(|&i| w.layers[i].active && fits(i)).unwrap_or(lowest))
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
        let pick = pick(w, left);
        if let (Some(l), Some(b)) = (pick, left.as_mut()) {
            *b = b.saturating_sub(w.layers[l].bitrate);
        }
        out[i] = pick;
    }
    out
}

/// What a subscriber's estimator should sustain and look for, from its videos (each with
/// the layer it has now): `desired`, the rate every tile's own quality would take with room
/// to spare; `minimum`, when some tile wants more than it has, the rate of what is sent now
/// plus the smallest step up (padding fills the gap, so the estimate can grow to it before
/// the layer moves). Bits per second, video only; `minimum` is 0 when nothing wants more.
pub fn probe_rates(videos: &[(VideoWant<'_>, Option<usize>)]) -> (u64, u64) {
    let rate = |w: &VideoWant<'_>, l: Option<usize>| l.and_then(|l| w.layers.get(l)).map_or(0, |s| s.bitrate);
    let mut desired = 0;
    let mut sent = 0;
    let mut step: Option<u64> = None;
    for (w, held) in videos {
        let wanted = pick_layer(w.layers, w.quality, None);
        desired += rate(w, wanted);
        sent += rate(w, *held);
        if let (Some(want), Some(h)) = (wanted, *held)
            && want > h
            && let Some(next) = (h + 1..=want).find(|&l| w.layers[l].active)
        {
            let up = rate(w, Some(next)).saturating_sub(rate(w, Some(h)));
            step = Some(step.map_or(up, |s| s.min(up)));
        }
    }
    (step.map_or(0, |s| sent + s), (desired * HEADROOM / 100).max(sent))
}

/// One subscription's layer over time: down once a lower layer has been proposed for
/// [`DROP_AFTER`] without a break, up once a higher one has for [`CLIMB_AFTER`]; a source
/// that lost its layers (`None`) is followed at once.
#[derive(Clone, Copy, Debug, Default)]
pub struct LayerHold {
    held: Option<usize>,
    /// Since when, and in which direction (up: true), proposals have differed from `held`.
    moving: Option<(bool, Instant)>,
}

impl LayerHold {
    /// The layer to use now, given this moment's proposal.
    pub fn decide(&mut self, now: Instant, proposed: Option<usize>) -> Option<usize> {
        match (self.held, proposed) {
            (Some(h), Some(p)) if p != h => {
                let up = p > h;
                let since = match self.moving {
                    Some((dir, t)) if dir == up => t,
                    _ => {
                        self.moving = Some((up, now));
                        now
                    }
                };
                let wait = if up { CLIMB_AFTER } else { DROP_AFTER };
                if now.saturating_duration_since(since) >= wait {
                    self.held = Some(p);
                    self.moving = None;
                }
            }
            _ => {
                self.held = proposed;
                self.moving = None;
            }
        }
        self.held
    }

    /// The layer held.
    pub fn held(&self) -> Option<usize> {
        self.held
    }

    /// When a pending move would happen (the engine looks again then).
    pub fn move_due(&self) -> Option<Instant> {
        self.moving.map(|(up, t)| t + if up { CLIMB_AFTER } else { DROP_AFTER })
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
            VideoWant { layers: &pupil, quality: Quality::High, rank: rank(false, false), held: None },
            VideoWant { layers: &screen, quality: Quality::High, rank: rank(false, true), held: None },
            VideoWant { layers: &cam, quality: Quality::High, rank: rank(true, false), held: None },
        ];
        // Plenty: everyone at the top.
        assert_eq!(allocate(Some(10_000_000), &wants), vec![Some(1), Some(0), Some(2)]);
        // 2.5 Mbit/s: the teacher's top layer (1.5), the screen (0.8), the pupil's
        // low layer in what is left (0.2 of which 90% fits 0.1... not 0.3).
        assert_eq!(allocate(Some(2_500_000), &wants), vec![Some(0), Some(0), Some(2)]);
        // 1 Mbit/s: the teacher's middle layer first; the rest get their lowest.
        assert_eq!(allocate(Some(1_000_000), &wants), vec![Some(0), Some(0), Some(1)]);
        // No estimate: each tile's own cap.
        let medium = [VideoWant { layers: &cam, quality: Quality::Medium, rank: 0, held: None }];
        assert_eq!(allocate(None, &medium), vec![Some(1)]);
        // A source with no active layer gets none and costs nothing.
        let off = [LayerStat::default()];
        let two = [
            VideoWant { layers: &off, quality: Quality::High, rank: 0, held: None },
            VideoWant { layers: &cam, quality: Quality::High, rank: 2, held: None },
        ];
        assert_eq!(allocate(Some(2_000_000), &two), vec![None, Some(2)]);
        // At the edge: the layer held stays while it fits at all; climbing to it needs
        // room to spare.
        let held = [VideoWant { layers: &cam, quality: Quality::High, rank: 0, held: Some(2) }];
        assert_eq!(allocate(Some(1_600_000), &held), vec![Some(2)]);
        assert_eq!(allocate(Some(1_600_000), &[VideoWant { held: Some(1), ..held[0] }]), vec![Some(1)]);
        assert_eq!(allocate(Some(1_400_000), &held), vec![Some(1)], "no longer fits: down");
    }

    #[test]
    fn probing_asks_for_the_next_step_and_looks_for_every_tile_at_its_quality() {
        let cam = [l(150), l(500), l(1500)];
        let pupil = [l(100), l(300)];
        let high = VideoWant { layers: &cam, quality: Quality::High, rank: 0, held: None };
        let small = VideoWant { layers: &pupil, quality: Quality::Low, rank: 2, held: None };
        // The teacher on the low layer, wanted high: sustain 150 + 350 (the step to the
        // middle layer) + the pupil's 100; look for 1500 + 100 and a quarter more.
        assert_eq!(probe_rates(&[(high, Some(0)), (small, Some(0))]), (600_000, 2_000_000));
        // Everyone where they want to be: nothing to sustain beyond the media.
        assert_eq!(probe_rates(&[(high, Some(2)), (small, Some(0))]), (0, 2_000_000));
        // A layer that stopped is stepped over.
        let gap = [l(150), LayerStat::default(), l(1500)];
        let w = VideoWant { layers: &gap, quality: Quality::High, rank: 0, held: None };
        assert_eq!(probe_rates(&[(w, Some(0))]), (1_500_000, 1_875_000));
        assert_eq!(probe_rates(&[]), (0, 0));
    }

    #[test]
    fn a_hold_moves_only_after_the_proposal_has_lasted() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut h = LayerHold::default();
        assert_eq!(h.decide(at(0), Some(1)), Some(1), "the first choice is taken at once");
        assert_eq!(h.decide(at(100), Some(2)), Some(1), "up waits");
        assert_eq!(h.move_due(), Some(at(2100)));
        assert_eq!(h.decide(at(1000), Some(2)), Some(1));
        // A dip resets the wait: no flapping on a noisy estimate.
        assert_eq!(h.decide(at(1500), Some(1)), Some(1));
        assert_eq!(h.decide(at(1600), Some(2)), Some(1));
        assert_eq!(h.decide(at(3599), Some(2)), Some(1));
        assert_eq!(h.decide(at(3600), Some(2)), Some(2), "two seconds of room: up");
        // An estimator's dip after a keyframe burst: shorter than a second, no drop.
        assert_eq!(h.decide(at(3700), Some(0)), Some(2));
        assert_eq!(h.move_due(), Some(at(4700)));
        assert_eq!(h.decide(at(4000), Some(2)), Some(2));
        // A lasting fall: down after a second.
        assert_eq!(h.decide(at(5000), Some(0)), Some(2));
        assert_eq!(h.decide(at(5999), Some(1)), Some(2), "still lower: the wait goes on");
        assert_eq!(h.decide(at(6000), Some(1)), Some(1));
        assert_eq!(h.decide(at(6100), None), None, "the source went away");
        assert_eq!(h.decide(at(6200), Some(2)), Some(2), "a fresh start is taken at once");
        assert_eq!(h.held(), Some(2));
    }
}

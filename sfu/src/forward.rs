//! Per-subscriber forwarding decisions, without IO: which simulcast layer a subscriber
//! gets, when it may switch (on a keyframe of the new layer only), and the sequence
//! numbers and timestamps it sees, continuous across switches and pauses.
//!
//! The media code ([`crate::media`]) asks [`Forward::on_packet`] for every packet of
//! every layer of a source, once per subscriber, and writes what it is told to.

use preau_live::signal::Quality;
pub use preau_live::vp8::is_keyframe as vp8_is_keyframe;
use std::time::Instant;

/// What one layer of a source carries now, as measured on arrival.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayerStat {
    /// Whether packets arrived lately (a browser stops its top layers when it lacks
    /// bandwidth or CPU).
    pub active: bool,
    /// Measured bitrate, bits per second.
    pub bitrate: u64,
}

/// Picks the layer (index into `layers`, lowest quality first) for a subscriber: the
/// highest active layer no higher than `want` whose bitrate fits in `estimate` (the
/// subscriber's bandwidth estimate from REMB), else the lowest active one.
pub fn pick_layer(layers: &[LayerStat], want: Quality, estimate: Option<u64>) -> Option<usize> {
    let cap = match want {
        Quality::Low => 0,
        Quality::Medium => 1,
        Quality::High => usize::MAX,
    };
    let active: Vec<usize> = (0..layers.len()).filter(|&i| layers[i].active).collect();
    let lowest = *active.first()?;
    let fits = |i: usize| estimate.is_none_or(|e| layers[i].bitrate.saturating_mul(10) <= e.saturating_mul(9));
    Some(active.iter().copied().filter(|&i| i <= cap && fits(i)).max().unwrap_or(lowest))
}

/// What to do with one packet for one subscriber.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not for this subscriber.
    Drop,
    /// Send it with these header values.
    Send {
        /// Rewritten sequence number.
        seq: u16,
        /// Rewritten timestamp.
        ts: u32,
        /// This packet switched the subscriber to a new layer (count it).
        switched: bool,
    },
}

/// One subscriber's view of one video source (or of an audio source, with one layer and
/// no keyframe rule).
#[derive(Clone, Debug)]
pub struct Forward {
    clock_rate: u32,
    keyframes: bool,
    current: Option<usize>,
    target: Option<usize>,
    paused: bool,
    seq_offset: u16,
    ts_offset: u32,
    last: Option<(u16, u32, Instant)>,
    /// Highest temporal layer sent (`None`: all), and a change waiting for a frame where
    /// it can take effect.
    max_temporal: Option<u8>,
    pending_temporal: Option<Option<u8>>,
}

impl Forward {
    /// A video forward: switches wait for a keyframe of the new layer.
    pub fn video(clock_rate: u32) -> Self {
        Forward {
            clock_rate,
            keyframes: true,
            current: None,
            target: None,
            paused: false,
            seq_offset: 0,
            ts_offset: 0,
            last: None,
            max_temporal: None,
            pending_temporal: None,
        }
    }

    /// An audio forward: one layer, any packet may start.
    pub fn audio(clock_rate: u32) -> Self {
        Forward { keyframes: false, target: Some(0), ..Forward::video(clock_rate) }
    }

    /// The layer being sent, if any.
    pub fn current(&self) -> Option<usize> {
        self.current
    }

    /// The layer wanted.
    pub fn target(&self) -> Option<usize> {
        self.target
    }

    /// Asks for `layer`. Returns true when a keyframe of it must be requested (PLI).
    pub fn set_target(&mut self, layer: Option<usize>) -> bool {
        let changed = self.target != layer;
        self.target = layer;
        changed && layer.is_some() && layer != self.current && self.keyframes && !self.paused
    }

    /// Stops sending (last-N, or the source is not granted): the stream stays continuous
    /// for when it resumes.
    pub fn pause(&mut self) {
        self.paused = true;
        if self.keyframes {
            self.current = None;
        }
    }

    /// Resumes after [`Forward::pause`]. True when a keyframe must be requested.
    pub fn resume(&mut self) -> bool {
        let was = self.paused;
        self.paused = false;
        was && self.keyframes && self.target.is_some()
    }

    /// Forgets the layer being sent and the one wanted (the source's layers were
    /// renumbered); the next target starts on a keyframe, continuing the stream.
    pub fn reset(&mut self) {
        if self.keyframes {
            self.current = None;
            self.target = None;
        }
    }

    /// Caps the temporal layers sent (`Some(0)`: the base layer only, a reduced frame
    /// rate; `None`: all). A lower cap starts at the next frame; a higher one at the next
    /// base-layer frame, which references nothing that was left out.
    pub fn set_max_temporal(&mut self, max: Option<u8>) {
        self.pending_temporal = (max != self.max_temporal).then_some(max);
    }

    /// The temporal layers sent now.
    pub fn max_temporal(&self) -> Option<u8> {
        self.max_temporal
    }

    /// Whether sending is paused.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Decides for one packet of `layer`.
    pub fn on_packet(&mut self, now: Instant, layer: usize, seq: u16, ts: u32, keyframe: bool) -> Verdict {
        self.on_frame_packet(now, layer, seq, ts, keyframe, None)
    }

    /// Decides for one packet of `layer` whose frame is on a temporal layer (`temporal`:
    /// whether the packet starts its frame, and the layer: [`preau_live::vp8::temporal`]).
    /// A frame above the cap is left out and the sequence numbers close over it, so the
    /// subscriber sees no loss to ask again for.
    pub fn on_frame_packet(
        &mut self,
        now: Instant,
        layer: usize,
        seq: u16,
        ts: u32,
        keyframe: bool,
        temporal: Option<(bool, u8)>,
    ) -> Verdict {
        if self.paused {
            return Verdict::Drop;
        }
        if let (Some(max), Some((start, tid))) = (self.pending_temporal, temporal)
            && start
            && (tid == 0 || max.is_some_and(|m| self.max_temporal.is_none_or(|c| m < c)))
        {
            self.max_temporal = max;
            self.pending_temporal = None;
        }
        if let (Some(max), Some((_, tid))) = (self.max_temporal, temporal)
            && tid > max
            && self.current == Some(layer)
        {
            // Left out: the packets after it take its number, unless it came late.
            let out = seq.wrapping_add(self.seq_offset);
            if self.last.is_none_or(|(ls, _, _)| out.wrapping_sub(ls) < 0x8000 && out != ls) {
                self.seq_offset = self.seq_offset.wrapping_sub(1);
            }
            return Verdict::Drop;
        }
        let mut switched = false;
        if self.current != Some(layer) {
            let starts = Some(layer) == self.target && (keyframe || !self.keyframes);
            if !starts {
                return Verdict::Drop;
            }
            // Make the new layer continue the stream the subscriber already has.
            match self.last {
                Some((ls, lt, at)) => {
                    let elapsed = now.saturating_duration_since(at).as_millis() as u64;
                    let step = ((elapsed * self.clock_rate as u64) / 1000).max(1) as u32;
                    self.seq_offset = ls.wrapping_add(1).wrapping_sub(seq);
                    self.ts_offset = lt.wrapping_add(step).wrapping_sub(ts);
                }
                None => {
                    self.seq_offset = 0;
                    self.ts_offset = 0;
                }
            }
            switched = self.current.is_some() || self.last.is_some();
            self.current = Some(layer);
        }
        let out_seq = seq.wrapping_add(self.seq_offset);
        let out_ts = ts.wrapping_add(self.ts_offset);
        let newer = match self.last {
            Some((ls, _, _)) => out_seq.wrapping_sub(ls) < 0x8000 && out_seq != ls,
            None => true,
        };
        if newer {
            self.last = Some((out_seq, out_ts, now));
        }
        Verdict::Send { seq: out_seq, ts: out_ts, switched }
    }
}

/// Extends a 16-bit sequence number next to the last one sent (str0m takes 64-bit ones):
/// a late packet keeps its place before the newest.
pub fn extend_seq(last: &mut Option<u64>, seq: u16) -> u64 {
    let e = match *last {
        // The first one sets the rollover counter to 0 (SRTP's receivers assume it).
        None => u64::from(seq),
        Some(l) => {
            let d = i64::from(seq.wrapping_sub(l as u16) as i16);
            (l as i64 + d).max(0) as u64
        }
    };
    if last.is_none_or(|l| e > l) {
        *last = Some(e);
    }
    e
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // one real instant as the origin of simulated time
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn picks_the_highest_layer_that_fits_the_estimate_and_the_tile() {
        let l = |b| LayerStat { active: true, bitrate: b };
        let layers = [l(150_000), l(500_000), l(1_500_000)];
        assert_eq!(pick_layer(&layers, Quality::High, None), Some(2));
        assert_eq!(pick_layer(&layers, Quality::High, Some(1_000_000)), Some(1));
        assert_eq!(pick_layer(&layers, Quality::Medium, Some(10_000_000)), Some(1));
        assert_eq!(pick_layer(&layers, Quality::Low, None), Some(0));
        assert_eq!(pick_layer(&layers, Quality::High, Some(50_000)), Some(0), "the lowest when nothing fits");
        let off = [l(150_000), LayerStat { active: false, bitrate: 0 }, l(1_500_000)];
        assert_eq!(pick_layer(&off, Quality::Medium, None), Some(0), "inactive layers are skipped");
        assert_eq!(pick_layer(&[], Quality::High, None), None);
    }

    #[test]
    fn switches_layers_on_a_keyframe_only_and_keeps_the_stream_continuous() {
        let t0 = Instant::now();
        let mut f = Forward::video(90_000);
        assert!(f.set_target(Some(2)), "the first layer needs a keyframe");
        assert_eq!(f.on_packet(t0, 2, 100, 9000, false), Verdict::Drop, "waits for a keyframe");
        assert_eq!(f.on_packet(t0, 2, 101, 9000, true), Verdict::Send { seq: 101, ts: 9000, switched: false });
        assert_eq!(f.on_packet(t0, 0, 5000, 1, true), Verdict::Drop, "other layers are not sent");
        assert_eq!(f.on_packet(t0, 2, 102, 12000, false), Verdict::Send { seq: 102, ts: 12000, switched: false });

        assert!(f.set_target(Some(0)), "a switch asks for a keyframe");
        let t1 = t0 + Duration::from_millis(33);
        assert_eq!(f.on_packet(t1, 0, 7000, 500, false), Verdict::Drop, "no switch before the keyframe");
        assert_eq!(f.on_packet(t1, 2, 103, 12000, false), Verdict::Send { seq: 103, ts: 12000, switched: false });
        let t2 = t0 + Duration::from_millis(66);
        match f.on_packet(t2, 0, 7001, 600, true) {
            Verdict::Send { seq, ts, switched } => {
                assert_eq!(seq, 104, "the sequence continues");
                assert_eq!(ts, 12000 + 90 * 33, "the clock advances by the time elapsed");
                assert!(switched);
            }
            v => panic!("{v:?}"),
        }
        assert_eq!(f.on_packet(t2, 2, 104, 15000, false), Verdict::Drop, "the old layer stops");
        assert!(matches!(f.on_packet(t2, 0, 7002, 600, false), Verdict::Send { seq: 105, .. }));
        // Wrapping sequence numbers.
        assert!(matches!(f.on_packet(t2, 0, 7002u16.wrapping_add(65535), 600, false), Verdict::Send { .. }));
    }

    /// Issue 18: a screen in "low" mode comes at a reduced frame rate, with no gap the
    /// subscriber would ask again for, and the full rate comes back on a base frame.
    #[test]
    fn a_temporal_cap_leaves_out_upper_frames_and_closes_the_sequence_over_them() {
        let t0 = Instant::now();
        let mut f = Forward::video(90_000);
        f.set_target(Some(0));
        let send =
            |f: &mut Forward, seq: u16, kf: bool, t: (bool, u8)| match f.on_frame_packet(t0, 0, seq, 0, kf, Some(t)) {
                Verdict::Send { seq, .. } => Some(seq),
                Verdict::Drop => None,
            };
        // L1T3: frames on layers 0, 2, 1, 2, 0 ...; two packets per frame.
        assert_eq!(send(&mut f, 10, true, (true, 0)), Some(10));
        assert_eq!(send(&mut f, 11, false, (false, 0)), Some(11));
        f.set_max_temporal(Some(0));
        assert_eq!(f.max_temporal(), None, "not before a frame starts");
        assert_eq!(send(&mut f, 12, false, (true, 2)), None, "the cap takes effect at the next frame");
        assert_eq!(send(&mut f, 13, false, (false, 2)), None);
        assert_eq!(send(&mut f, 14, false, (true, 1)), None);
        assert_eq!(send(&mut f, 15, false, (false, 1)), None);
        assert_eq!(send(&mut f, 16, false, (true, 2)), None);
        assert_eq!(send(&mut f, 17, false, (false, 2)), None);
        assert_eq!(send(&mut f, 18, false, (true, 0)), Some(12), "the base frame follows on without a gap");
        assert_eq!(send(&mut f, 19, false, (false, 0)), Some(13));
        assert_eq!(send(&mut f, 13, false, (false, 2)), None, "a late upper packet changes nothing");
        assert_eq!(send(&mut f, 20, false, (true, 0)), Some(14));
        // Back to the full rate: not on an upper frame (its references were left out),
        // on the next base frame.
        f.set_max_temporal(None);
        assert_eq!(send(&mut f, 21, false, (true, 2)), None);
        assert_eq!(send(&mut f, 22, false, (true, 1)), None);
        assert_eq!(send(&mut f, 23, false, (true, 0)), Some(15));
        assert_eq!(send(&mut f, 24, false, (true, 2)), Some(16));
        assert_eq!(f.max_temporal(), None);
        // A publisher without temporal layers is never capped.
        f.set_max_temporal(Some(0));
        assert!(matches!(f.on_packet(t0, 0, 25, 0, false), Verdict::Send { seq: 17, .. }));
    }

    #[test]
    fn a_pause_holds_the_stream_and_a_resume_asks_for_a_keyframe() {
        let t0 = Instant::now();
        let mut f = Forward::video(90_000);
        f.set_target(Some(1));
        assert!(matches!(f.on_packet(t0, 1, 10, 0, true), Verdict::Send { seq: 10, .. }));
        f.pause();
        assert_eq!(f.on_packet(t0, 1, 11, 0, true), Verdict::Drop);
        assert!(!f.set_target(Some(1)), "no keyframe while paused");
        assert!(f.resume());
        assert_eq!(f.on_packet(t0, 1, 300, 50, false), Verdict::Drop, "waits for the keyframe");
        assert!(matches!(f.on_packet(t0, 1, 301, 50, true), Verdict::Send { seq: 11, .. }));
        f.reset();
        assert!(f.set_target(Some(2)), "after a renumbering the target is chosen again, with a keyframe");
        assert_eq!(f.on_packet(t0, 2, 900, 60, false), Verdict::Drop);
        assert!(matches!(f.on_packet(t0, 2, 901, 60, true), Verdict::Send { seq: 12, .. }));

        let mut a = Forward::audio(48_000);
        assert!(matches!(a.on_packet(t0, 0, 1, 0, false), Verdict::Send { seq: 1, .. }), "audio needs no keyframe");
        a.pause();
        assert!(!a.resume(), "audio never asks for keyframes");
    }

    #[test]
    fn sequence_numbers_extend_across_wraps_and_reordering() {
        let mut last = None;
        assert_eq!(extend_seq(&mut last, 65534), 65534);
        assert_eq!(extend_seq(&mut last, 65535), 65535);
        assert_eq!(extend_seq(&mut last, 0), 65536);
        // A late packet keeps its place before the newest.
        assert_eq!(extend_seq(&mut last, 65535), 65535);
        assert_eq!(extend_seq(&mut last, 1), 65537);
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // one real instant as the origin of simulated time
mod props {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    /// What happens next to one subscriber of a three-layer source.
    #[derive(Clone, Debug)]
    enum Step {
        /// A packet of a layer (its own seq and ts run on), maybe a keyframe.
        Packet {
            layer: usize,
            keyframe: bool,
        },
        /// The subscriber's target layer changes (bandwidth, tile size).
        Target(Option<usize>),
        Pause,
        Resume,
        /// Layers were renumbered.
        Reset,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            8 => (0usize..3, proptest::bool::weighted(0.1)).prop_map(|(layer, keyframe)| Step::Packet { layer, keyframe }),
            2 => proptest::option::of(0usize..3).prop_map(Step::Target),
            1 => Just(Step::Pause),
            1 => Just(Step::Resume),
            1 => Just(Step::Reset),
        ]
    }

    proptest! {
        /// Across any layer switches, pauses and resets, what a subscriber receives is one
        /// stream: each forwarded seq is the previous plus one, timestamps never go back,
        /// and a video layer starts only on a keyframe.
        #[test]
        fn forwarded_sequence_numbers_stay_continuous(
            starts in proptest::collection::vec((any::<u16>(), any::<u32>()), 3),
            steps in proptest::collection::vec(step(), 1..400),
        ) {
            let t0 = Instant::now();
            let mut f = Forward::video(90_000);
            let mut next: Vec<(u16, u32)> = starts;
            let mut last: Option<(u16, u32)> = None;
            let mut current: Option<usize> = None;
            for (i, s) in steps.into_iter().enumerate() {
                let now = t0 + Duration::from_millis(i as u64 * 10);
                match s {
                    Step::Packet { layer, keyframe } => {
                        let (seq, ts) = next[layer];
                        next[layer] = (seq.wrapping_add(1), ts.wrapping_add(3000));
                        if let Verdict::Send { seq: out, ts: out_ts, .. } = f.on_packet(now, layer, seq, ts, keyframe) {
                            if current != Some(layer) {
                                prop_assert!(keyframe, "layer {layer} started without a keyframe");
                                current = Some(layer);
                            }
                            if let Some((ls, lt)) = last {
                                prop_assert_eq!(out, ls.wrapping_add(1), "a gap or a repeat in the forwarded seqs");
                                prop_assert!(out_ts.wrapping_sub(lt) < 0x8000_0000, "timestamp went back");
                            }
                            last = Some((out, out_ts));
                        }
                    }
                    Step::Target(t) => {
                        f.set_target(t);
                    }
                    Step::Pause => {
                        f.pause();
                        current = None;
                    }
                    Step::Resume => {
                        f.resume();
                    }
                    Step::Reset => {
                        f.reset();
                        current = None;
                    }
                }
            }
        }
    }
}

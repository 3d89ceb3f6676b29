//! Active speakers and last-N, without IO.
//!
//! Audio readers summarise the audio level header extension (RFC 6464: 0 is the loudest,
//! 127 silence, in -dBov) over short windows and report them here; [`Speakers`] tells who
//! speaks now, loudest first, and remembers who spoke last, which [`last_n`] uses to
//! choose whose video a large room forwards.

use crate::room::PeerId;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A level at or below this (in -dBov) counts as voice; fake and real microphones at a
/// normal distance sit well under it, background noise above.
pub const VOICE_DBOV: u8 = 50;

/// One window of audio levels from one publisher.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LevelReport {
    /// Share of the window's packets carrying voice, 0 to 1.
    pub voiced: f32,
    /// Mean loudness over voiced packets, as 127 - level (higher is louder).
    pub loudness: f32,
}

/// Summarises levels as they arrive; a reader keeps one per audio source.
#[derive(Clone, Debug, Default)]
pub struct LevelWindow {
    packets: u32,
    voiced: u32,
    loud_sum: u32,
}

impl LevelWindow {
    /// One packet's level (the extension's low 7 bits).
    pub fn add(&mut self, level: u8) {
        self.packets += 1;
        let level = level & 0x7f;
        if level <= VOICE_DBOV {
            self.voiced += 1;
            self.loud_sum += u32::from(127 - level);
        }
    }

    /// The window's report, and a fresh window; `None` when no packet came.
    pub fn take(&mut self) -> Option<LevelReport> {
        if self.packets == 0 {
            return None;
        }
        let r = LevelReport {
            voiced: self.voiced as f32 / self.packets as f32,
            loudness: if self.voiced > 0 { self.loud_sum as f32 / self.voiced as f32 } else { 0.0 },
        };
        *self = LevelWindow::default();
        Some(r)
    }
}

#[derive(Clone, Debug)]
struct Track {
    loudness: f32,
    last_voice: Option<Instant>,
}

/// Who speaks in a room.
#[derive(Clone, Debug)]
pub struct Speakers {
    /// How long someone stays "speaking" after their last voiced window (pauses between
    /// words must not flap the layout).
    pub hold: Duration,
    /// Share of voiced packets for a window to count as speech.
    pub min_voiced: f32,
    peers: HashMap<PeerId, Track>,
    shown: (Vec<PeerId>, Option<PeerId>),
}

impl Default for Speakers {
    fn default() -> Self {
        Speakers { hold: Duration::from_millis(1500), min_voiced: 0.3, peers: HashMap::new(), shown: (vec![], None) }
    }
}

impl Speakers {
    /// A window's report for `peer`.
    pub fn observe(&mut self, now: Instant, peer: PeerId, r: LevelReport) {
        let t = self.peers.entry(peer).or_insert(Track { loudness: 0.0, last_voice: None });
        if r.voiced >= self.min_voiced {
            t.last_voice = Some(now);
            // Smoothed so that one loud window does not take the floor.
            t.loudness = 0.6 * t.loudness + 0.4 * r.loudness;
        } else {
            t.loudness *= 0.6;
        }
    }

    /// `peer` stopped publishing audio (left, muted).
    pub fn forget(&mut self, peer: PeerId) {
        self.peers.remove(&peer);
    }

    /// Peers speaking at `now`, loudest first.
    pub fn active(&self, now: Instant) -> Vec<PeerId> {
        let mut v: Vec<(PeerId, f32)> = self
            .peers
            .iter()
            .filter(|(_, t)| t.last_voice.is_some_and(|at| now.saturating_duration_since(at) <= self.hold))
            .map(|(p, t)| (*p, t.loudness))
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        v.into_iter().map(|(p, _)| p).collect()
    }

    /// Who spoke most recently first, speaking or not (for last-N).
    pub fn recent(&self) -> Vec<PeerId> {
        let mut v: Vec<(PeerId, Instant)> =
            self.peers.iter().filter_map(|(p, t)| t.last_voice.map(|at| (*p, at))).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.into_iter().map(|(p, _)| p).collect()
    }

    /// When the speakers change by themselves (a shown speaker's hold runs out), if
    /// anyone is shown speaking: the room's driver arms a timer for it and then calls
    /// [`Speakers::poll_change`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.shown
            .0
            .iter()
            .filter_map(|p| self.peers.get(p)?.last_voice)
            .map(|at| at + self.hold + Duration::from_millis(1))
            .min()
    }

    /// The speakers and the dominant one, when they changed since the last call.
    pub fn poll_change(&mut self, now: Instant) -> Option<(Vec<PeerId>, Option<PeerId>)> {
        let active = self.active(now);
        let dominant = active.first().copied();
        // Order among several speakers changes constantly: only membership and the
        // dominant speaker are news.
        let mut a = active.clone();
        a.sort_unstable();
        let mut b = self.shown.0.clone();
        b.sort_unstable();
        if a == b && dominant == self.shown.1 {
            return None;
        }
        self.shown = (active.clone(), dominant);
        Some((active, dominant))
    }
}

/// Whose video a subscriber receives in a room: everyone when the room is small (at most
/// `n` video publishers), else the hosts' and screens, then the `n` most recent speakers,
/// then the earliest publishers until `n` are chosen. `publishers` is in publishing
/// order; hosts are always included, on top of `n`.
pub fn last_n(publishers: &[PeerId], hosts: &[PeerId], recent: &[PeerId], n: usize) -> Vec<PeerId> {
    if publishers.len() <= n {
        return publishers.to_vec();
    }
    let mut chosen: Vec<PeerId> = publishers.iter().copied().filter(|p| hosts.contains(p)).collect();
    let mut others = 0;
    for p in recent.iter().chain(publishers.iter()) {
        if others >= n {
            break;
        }
        if publishers.contains(p) && !chosen.contains(p) {
            chosen.push(*p);
            others += 1;
        }
    }
    chosen
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // one real instant as the origin of simulated time
mod tests {
    use super::*;

    fn voice(level: u8, n: usize) -> LevelReport {
        let mut w = LevelWindow::default();
        for _ in 0..n {
            w.add(level);
        }
        w.take().expect("packets")
    }

    #[test]
    fn a_window_counts_voiced_packets_and_their_loudness() {
        let mut w = LevelWindow::default();
        assert_eq!(w.take(), None);
        w.add(30);
        w.add(127);
        w.add(0x80 | 40); // the V bit is not part of the level
        let r = w.take().expect("report");
        assert!((r.voiced - 2.0 / 3.0).abs() < 1e-6);
        assert!((r.loudness - 92.0).abs() < 1e-6);
    }

    #[test]
    fn speakers_appear_hold_through_pauses_and_go() {
        let t0 = Instant::now();
        let mut s = Speakers::default();
        s.observe(t0, 1, voice(127, 10));
        assert_eq!(s.poll_change(t0), None, "silence is not news");
        s.observe(t0, 1, voice(20, 10));
        s.observe(t0, 2, voice(45, 10));
        assert_eq!(s.poll_change(t0), Some((vec![1, 2], Some(1))), "the louder first");
        assert_eq!(s.poll_change(t0), None);
        let t1 = t0 + Duration::from_millis(1000);
        s.observe(t1, 1, voice(127, 10));
        s.observe(t1, 2, voice(127, 10));
        assert_eq!(s.poll_change(t1), None, "a pause between words keeps the floor");
        // The driver's timer: when both holds run out.
        assert_eq!(s.poll_timeout(), Some(t0 + s.hold + Duration::from_millis(1)), "silence since t0");
        let t2 = t0 + Duration::from_millis(1600);
        assert_eq!(s.poll_change(t2), Some((vec![], None)));
        assert_eq!(s.poll_timeout(), None, "nobody shown speaking: no timer");
        assert_eq!(s.recent(), vec![1, 2]);
        s.observe(t2, 2, voice(30, 10));
        assert_eq!(s.recent(), vec![2, 1], "the latest speaker first");
        s.forget(2);
        assert_eq!(s.recent(), vec![1]);
    }

    #[test]
    fn last_n_keeps_the_host_and_the_latest_speakers() {
        let pubs: Vec<PeerId> = (1..=300).collect();
        assert_eq!(last_n(&[1, 2, 3], &[1], &[], 4), vec![1, 2, 3], "small rooms get everyone");
        let chosen = last_n(&pubs, &[1], &[250, 7, 1], 2);
        assert_eq!(chosen, vec![1, 250, 7], "the host, then the two latest speakers");
        let chosen = last_n(&pubs, &[1], &[250], 3);
        assert_eq!(chosen, vec![1, 250, 2, 3], "filled with the first publishers");
        assert_eq!(last_n(&pubs, &[], &[999], 1), vec![1], "speakers who do not publish video are skipped");
    }
}

//! What a recording writes and when, without IO: which picture (a screen share when
//! there is one, else the teacher's camera; the highest simulcast layer that flows),
//! which voices (the first audio track carries whoever speaks loudest, switched between
//! speakers as they take turns, so that any player, which plays the first track only,
//! plays the class as it was heard; then the teacher's own track, and each speaking
//! pupil's on a track of their own while they speak), every frame's time on one clock,
//! and the frames in time order across tracks (the muxer takes no frame older than the
//! last).
//!
//! # Call contract
//! - Inputs: [`Timeline::add_source`], [`Timeline::remove_source`],
//!   [`Timeline::packet`], each with the current time.
//! - Outputs: [`Timeline::poll_header`] once (the tracks; until then nothing else comes
//!   out), then [`Timeline::poll_frame`] until `None`; [`Timeline::poll_keyframe`] for the
//!   keyframe requests to send to a publisher. [`Timeline::finish`] lets every held frame
//!   out.

use super::assemble::{Assembler, Frame, Pkt};
use crate::room::{Media, PeerId};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

/// Voice tracks in a file: the teacher's, then pupils speaking at the same time. More
/// pupils than that speaking together are not recorded (and counted).
pub const VOICES: usize = 4;
/// Audio tracks in a file: the loudest voice, then the [`VOICES`].
pub const AUDIO_TRACKS: usize = VOICES + 1;
/// The loudest voice takes the first track when it is this much louder (dB) than the one
/// there, or when that one fell silent.
const LOUDER_DB: f32 = 6.0;
/// A voice that sent nothing for this long no longer holds the first track.
const VOICE_SILENT: Duration = Duration::from_millis(300);
/// The first track keeps a voice at least this long (no flapping between two speakers).
const MIX_HOLD: Duration = Duration::from_millis(700);
/// Opus packets a browser sends are 20 ms long: the first track never takes two closer
/// than this (at a switch the new voice's packets overlap the last one's).
const OPUS_FRAME_NS: u64 = 20_000_000;
/// How long frames wait so that later-arriving ones of other tracks sort before them.
const HOLD: Duration = Duration::from_millis(400);
/// How long a recording waits for the picture's first keyframe to learn its size.
const HEADER_WAIT: Duration = Duration::from_secs(3);
/// A layer or a source that sent nothing for this long is not chosen.
const QUIET: Duration = Duration::from_millis(1500);
/// A pupil's audio track is freed after this much silence.
const SPEAKER_GONE: Duration = Duration::from_secs(2);
/// Keyframe requests to one publisher, at most this often.
const KEY_EVERY: Duration = Duration::from_millis(500);
/// A clock more than this far from the arrival times is set again (a publisher restarted
/// its encoder, or paused).
const DRIFT: Duration = Duration::from_secs(1);

/// A track of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Track {
    /// The picture.
    Video,
    /// The loudest voice at each moment (the first audio track).
    Mix,
    /// Voice track `n` (0: the teacher).
    Audio(usize),
}

/// The file's tracks, known once the picture's size is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The picture's width and height, when there is a picture track.
    pub video: Option<(u16, u16)>,
    /// Audio tracks.
    pub audio: usize,
}

/// One frame to write.
#[derive(Debug, PartialEq)]
pub struct Out {
    /// Track.
    pub track: Track,
    /// Nanoseconds since the recording started.
    pub ns: u64,
    /// Keyframe (audio frames all are).
    pub key: bool,
    /// Data.
    pub data: Vec<u8>,
}

/// RTP time to the recording's time: anchored on arrival, then following the RTP
/// timestamps (smoother than arrivals), anchored again after a jump.
#[derive(Default)]
struct Clock {
    anchor: Option<(u32, u64)>,
}

impl Clock {
    fn at(&mut self, rtp: u32, arrival_ns: u64, rate: u64) -> u64 {
        if let Some((r0, n0)) = self.anchor {
            let ticks = i64::from(rtp.wrapping_sub(r0) as i32);
            let ns = n0 as i64 + ticks * 1_000_000_000 / rate as i64;
            if ns >= 0 && (ns as u64).abs_diff(arrival_ns) < DRIFT.as_nanos() as u64 {
                return ns as u64;
            }
        }
        self.anchor = Some((rtp, arrival_ns));
        arrival_ns
    }
}

struct Src {
    peer: PeerId,
    media: Media,
    host: bool,
    /// Last packet per layer rank, and the layer index it had.
    layers: HashMap<u8, (Instant, usize)>,
    last_key_ask: Option<Instant>,
}

struct Picture {
    key: u64,
    rank: u8,
    asm: Assembler,
    clock: Clock,
}

struct Voice {
    key: u64,
    clock: Clock,
    last: Instant,
    /// Smoothed loudness, dB above silence (127 - the RFC 6464 level).
    loud: f32,
}

/// Who holds the first audio track.
#[derive(Default)]
struct Mix {
    key: Option<u64>,
    since: Option<Instant>,
    last_ns: Option<u64>,
}

/// A frame held for ordering: (time, arrival order, track, keyframe, data).
type Held = (u64, u64, Track, bool, Vec<u8>);

/// A recording's timeline.
pub struct Timeline {
    start: Instant,
    with_video: bool,
    sources: HashMap<u64, Src>,
    picture: Option<Picture>,
    size: Option<(u16, u16)>,
    voices: [Option<Voice>; VOICES],
    mix: Mix,
    header: Option<Header>,
    header_told: bool,
    held: BinaryHeap<Reverse<Held>>,
    order: u64,
    last_ns: u64,
    keyframes: Vec<(u64, usize)>,
    /// Audio frames not recorded: more pupils speaking at once than tracks.
    pub voices_dropped: u64,
}

impl Timeline {
    /// A recording starting at `now`; `with_video`: the file has a picture track (not in
    /// an audio-only class).
    pub fn new(now: Instant, with_video: bool) -> Timeline {
        Timeline {
            start: now,
            with_video,
            sources: HashMap::new(),
            picture: None,
            size: None,
            voices: Default::default(),
            mix: Mix::default(),
            header: if with_video { None } else { Some(Header { video: None, audio: AUDIO_TRACKS }) },
            header_told: false,
            held: BinaryHeap::new(),
            order: 0,
            last_ns: 0,
            keyframes: Vec::new(),
            voices_dropped: 0,
        }
    }

    /// A source the recording hears: any microphone, a host's camera, any screen.
    pub fn add_source(&mut self, key: u64, peer: PeerId, media: Media, host: bool) {
        self.sources.insert(key, Src { peer, media, host, layers: HashMap::new(), last_key_ask: None });
    }

    /// A source that stopped.
    pub fn remove_source(&mut self, key: u64) {
        self.sources.remove(&key);
        if self.picture.as_ref().is_some_and(|p| p.key == key) {
            self.picture = None;
        }
        for v in &mut self.voices {
            if v.as_ref().is_some_and(|v| v.key == key) {
                *v = None;
            }
        }
        if self.mix.key == Some(key) {
            self.mix.key = None;
        }
    }

    fn ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.start).as_nanos() as u64
    }

    /// One packet of a source: `layer` its index among the source's layers, `rank` its
    /// simulcast rank (`q` 0, `h` 1, `f` 2), `level` an audio packet's RFC 6464 level.
    #[allow(clippy::too_many_arguments)]
    pub fn packet(
        &mut self,
        now: Instant,
        key: u64,
        layer: usize,
        rank: u8,
        seq: u16,
        ts: u32,
        marker: bool,
        arrived: Instant,
        level: Option<u8>,
        payload: &[u8],
    ) {
        let arrival = self.ns(arrived);
        let Some(src) = self.sources.get_mut(&key) else { return };
        src.layers.insert(rank, (now, layer));
        match src.media {
            Media::Audio => self.audio(now, key, ts, arrival, level, payload),
            Media::Video | Media::Screen => self.video(now, key, rank, Pkt { seq, ts, marker, payload }, arrival),
        }
        if self.header.is_none() && now.saturating_duration_since(self.start) >= HEADER_WAIT {
            // No keyframe yet: a nominal size (each keyframe carries its own).
            self.header = Some(Header { video: Some(self.size.unwrap_or((640, 360))), audio: AUDIO_TRACKS });
        }
    }

    fn audio(&mut self, now: Instant, key: u64, ts: u32, arrival: u64, level: Option<u8>, payload: &[u8]) {
        if payload.is_empty() {
            return;
        }
        let host = self.sources.get(&key).is_some_and(|s| s.host);
        let slot = match self.voices.iter().position(|v| v.as_ref().is_some_and(|v| v.key == key)) {
            Some(i) => i,
            None => {
                // The teacher's voice on the first track; pupils on the others, a track
                // freed by a pupil silent for a while.
                let free = |v: &Option<Voice>| {
                    v.as_ref().is_none_or(|v| now.saturating_duration_since(v.last) >= SPEAKER_GONE)
                };
                let found =
                    if host && free(&self.voices[0]) { Some(0) } else { (1..VOICES).find(|i| free(&self.voices[*i])) };
                let Some(i) = found else {
                    self.voices_dropped += 1;
                    return;
                };
                self.voices[i] = Some(Voice { key, clock: Clock::default(), last: now, loud: 0.0 });
                i
            }
        };
        let Some(v) = self.voices[slot].as_mut() else { return };
        v.last = now;
        if let Some(l) = level {
            // About 200 ms of memory at 50 packets a second.
            v.loud = 0.9 * v.loud + 0.1 * f32::from(127u8.saturating_sub(l));
        }
        let (loud, ns) = (v.loud, v.clock.at(ts, arrival, 48_000));
        if self.takes_mix(now, key, loud) {
            let after = self.mix.last_ns.map(|l| l + OPUS_FRAME_NS / 2);
            if after.is_none_or(|a| ns >= a) {
                self.mix.last_ns = Some(ns);
                self.hold(Track::Mix, ns, true, payload.to_vec());
            }
        }
        self.hold(Track::Audio(slot), ns, true, payload.to_vec());
    }

    /// Whether voice `key`, this loud now, is the one the first track carries.
    fn takes_mix(&mut self, now: Instant, key: u64, loud: f32) -> bool {
        if self.mix.key == Some(key) {
            return true;
        }
        let holder = self.mix.key.and_then(|k| self.voices.iter().flatten().find(|v| v.key == k));
        let take = match holder {
            Some(h) if now.saturating_duration_since(h.last) < VOICE_SILENT => {
                loud > h.loud + LOUDER_DB && self.mix.since.is_none_or(|t| now.saturating_duration_since(t) >= MIX_HOLD)
            }
            _ => true,
        };
        if take {
            self.mix.key = Some(key);
            self.mix.since = Some(now);
        }
        take
    }

    /// The picture wanted now: a screen that flows, else a host's camera that flows; its
    /// highest flowing layer.
    fn wanted(&self, now: Instant) -> Option<(u64, u8)> {
        let top = |s: &Src| {
            s.layers.iter().filter(|(_, (t, _))| now.saturating_duration_since(*t) < QUIET).map(|(r, _)| *r).max()
        };
        let best = |media: Media, hosts_only: bool| {
            self.sources
                .iter()
                .filter(|(_, s)| s.media == media && (!hosts_only || s.host))
                .filter_map(|(k, s)| top(s).map(|r| (*k, r, s.peer)))
                .min_by_key(|(_, _, peer)| *peer)
                .map(|(k, r, _)| (k, r))
        };
        best(Media::Screen, false).or_else(|| best(Media::Video, true))
    }

    fn ask_keyframe(&mut self, now: Instant, key: u64, rank: u8) {
        let Some(src) = self.sources.get_mut(&key) else { return };
        let Some(&(_, layer)) = src.layers.get(&rank) else { return };
        if src.last_key_ask.is_some_and(|t| now.saturating_duration_since(t) < KEY_EVERY) {
            return;
        }
        src.last_key_ask = Some(now);
        self.keyframes.push((key, layer));
    }

    fn video(&mut self, now: Instant, key: u64, rank: u8, p: Pkt<'_>, arrival: u64) {
        let wanted = self.wanted(now);
        let current = self.picture.as_ref().map(|c| (c.key, c.rank));
        if wanted != current && wanted == Some((key, rank)) {
            // Switch on the wanted stream's keyframe only (the file never shows a frame
            // that references one it does not hold).
            if preau_live::vp8::is_keyframe(p.payload) {
                self.picture = Some(Picture { key, rank, asm: Assembler::new(), clock: Clock::default() });
            } else {
                self.ask_keyframe(now, key, rank);
            }
        }
        let Some(pic) = self.picture.as_mut() else { return };
        if (pic.key, pic.rank) != (key, rank) {
            return;
        }
        let mut frames: Vec<Frame> = Vec::new();
        pic.asm.push(p, &mut frames);
        let want_key = pic.asm.take_want_key();
        let timed: Vec<(u64, Frame)> = frames.into_iter().map(|f| (pic.clock.at(f.ts, arrival, 90_000), f)).collect();
        for (ns, f) in timed {
            if f.key && self.size.is_none() {
                self.size = preau_live::vp8::keyframe_size(&f.data);
                if self.header.is_none() {
                    self.header = Some(Header { video: Some(self.size.unwrap_or((640, 360))), audio: AUDIO_TRACKS });
                }
            }
            self.hold(Track::Video, ns, f.key, f.data);
        }
        if want_key {
            self.ask_keyframe(now, key, rank);
        }
    }

    fn hold(&mut self, track: Track, ns: u64, key: bool, data: Vec<u8>) {
        if track == Track::Video && !self.with_video {
            return;
        }
        self.order += 1;
        self.held.push(Reverse((ns, self.order, track, key, data)));
    }

    /// The file's tracks, once.
    pub fn poll_header(&mut self) -> Option<Header> {
        if self.header_told {
            return None;
        }
        let h = self.header?;
        self.header_told = true;
        Some(h)
    }

    /// The next frame due at `now` (held long enough for others to sort before it).
    pub fn poll_frame(&mut self, now: Instant) -> Option<Out> {
        let due = self.ns(now).saturating_sub(HOLD.as_nanos() as u64);
        self.next_frame(due)
    }

    fn next_frame(&mut self, due: u64) -> Option<Out> {
        if !self.header_told {
            return None;
        }
        let Reverse((ns, ..)) = self.held.peek()?;
        if *ns > due {
            return None;
        }
        let Reverse((ns, _, track, key, data)) = self.held.pop()?;
        // Never older than what was written (the muxer refuses it).
        let ns = ns.max(self.last_ns);
        self.last_ns = ns;
        Some(Out { track, ns, key, data })
    }

    /// Ends the recording: the header if not told yet, then every held frame.
    pub fn finish(&mut self) -> (Option<Header>, Vec<Out>) {
        if self.header.is_none() {
            self.header = Some(Header { video: Some(self.size.unwrap_or((640, 360))), audio: AUDIO_TRACKS });
        }
        let h = self.poll_header();
        let mut out = Vec::new();
        while let Some(f) = self.next_frame(u64::MAX) {
            out.push(f);
        }
        (h, out)
    }

    /// A keyframe to ask of a publisher: (source key, layer index).
    pub fn poll_keyframe(&mut self) -> Option<(u64, usize)> {
        self.keyframes.pop()
    }

    /// Nanoseconds of the last frame written.
    pub fn duration_ns(&self) -> u64 {
        self.last_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A one-packet VP8 frame: key or not, with a 320x180 size when key.
    fn vp8(key: bool) -> Vec<u8> {
        if key {
            vec![0x10, 0x50, 0x2a, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xb4, 0x00]
        } else {
            vec![0x10, 0x51, 0x00]
        }
    }

    struct Sim {
        t0: Instant,
        tl: Timeline,
        seq: HashMap<(u64, u8), u16>,
    }

    impl Sim {
        fn new() -> Sim {
            let t0 = tokio::time::Instant::now().into_std();
            Sim { t0, tl: Timeline::new(t0, true), seq: HashMap::new() }
        }
        fn at(&self, ms: u64) -> Instant {
            self.t0 + MS * ms as u32
        }
        fn send(&mut self, ms: u64, key: u64, rank: u8, payload: &[u8], ts_rate: u64) {
            self.speak(ms, key, rank, payload, ts_rate, None);
        }
        fn speak(&mut self, ms: u64, key: u64, rank: u8, payload: &[u8], ts_rate: u64, level: Option<u8>) {
            let now = self.at(ms);
            let seq = self.seq.entry((key, rank)).or_insert(0);
            *seq = seq.wrapping_add(1);
            let ts = (ms * ts_rate / 1000) as u32;
            self.tl.packet(now, key, rank as usize, rank, *seq, ts, true, now, level, payload);
        }
        fn drain(&mut self, ms: u64) -> Vec<Out> {
            let now = self.at(ms);
            std::iter::from_fn(|| self.tl.poll_frame(now)).collect()
        }
    }

    #[test]
    fn the_teacher_is_recorded_from_the_first_keyframe_with_its_size_and_in_time_order() {
        let mut s = Sim::new();
        s.tl.add_source(1, 1, Media::Video, true);
        s.tl.add_source(2, 1, Media::Audio, true);
        s.tl.add_source(3, 7, Media::Audio, false);
        let mut out = Vec::new();
        for ms in (0..2000).step_by(20) {
            s.send(ms, 2, 0, &[0xfc, 0x01], 48_000);
            s.send(ms + 3, 3, 0, &[0xfc, 0x02], 48_000);
            if ms % 40 == 0 {
                s.send(ms + 1, 1, 1, &vp8(ms == 200), 90_000);
            }
            out.extend(s.drain(ms + 5));
        }
        assert_eq!(s.tl.poll_header(), Some(Header { video: Some((320, 180)), audio: AUDIO_TRACKS }));
        let (_, rest) = s.tl.finish();
        out.extend(rest);
        let video: Vec<&Out> = out.iter().filter(|o| o.track == Track::Video).collect();
        assert!(video[0].key, "the picture starts on its keyframe");
        assert_eq!(video[0].ns, 201_000_000);
        assert_eq!(video.len(), (2000 - 200) / 40);
        assert!(out.iter().any(|o| o.track == Track::Audio(0)), "the teacher on the first track");
        assert!(out.iter().any(|o| o.track == Track::Audio(1)), "the pupil on the next");
        assert!(out.windows(2).all(|w| w[0].ns <= w[1].ns), "time order across tracks");
        assert!(s.tl.poll_keyframe().is_some(), "a keyframe was asked before the first one came");
    }

    #[test]
    fn a_screen_share_takes_the_picture_at_its_keyframe_and_the_camera_takes_it_back() {
        let mut s = Sim::new();
        s.tl.add_source(1, 1, Media::Video, true);
        s.tl.add_source(5, 1, Media::Screen, true);
        let mut out = Vec::new();
        for ms in (0..6000).step_by(40) {
            if ms == 4000 {
                s.tl.remove_source(5); // the share stopped
            }
            s.send(ms, 1, 2, &vp8(ms == 0 || ms == 4800), 90_000);
            if (2000..4000).contains(&ms) {
                s.send(ms + 1, 5, 0, &vp8(ms == 2400), 90_000);
            }
            out.extend(s.drain(ms + 2));
        }
        out.extend(s.tl.finish().1);
        let video: Vec<&Out> = out.iter().filter(|o| o.track == Track::Video).collect();
        let keys: Vec<u64> = video.iter().filter(|o| o.key).map(|o| o.ns / 1_000_000).collect();
        assert_eq!(keys, vec![0, 2401, 4800], "camera, then the screen at its keyframe, then the camera at its own");
        // Between the screen's keyframe and its end, only the screen's frames (ts +1 ms).
        assert!(
            video.iter().filter(|o| (2401..4000).contains(&(o.ns / 1_000_000))).all(|o| o.ns / 1_000_000 % 40 == 1)
        );
        // The camera was not shown between the screen's end and the camera's keyframe.
        assert!(!video.iter().any(|o| (4000..4800).contains(&(o.ns / 1_000_000))));
    }

    #[test]
    fn pupils_beyond_the_tracks_are_counted_and_a_silent_one_frees_a_track() {
        let mut s = Sim::new();
        for k in 10..15 {
            s.tl.add_source(k, k, Media::Audio, false);
        }
        for ms in (0..1000).step_by(20) {
            for k in 10..15 {
                s.send(ms, k, 0, &[0xfc], 48_000);
            }
        }
        assert!(s.tl.voices_dropped > 0, "five pupils for three tracks");
        // The first three fall silent; the other two get tracks.
        for ms in (3000..3200).step_by(20) {
            s.send(ms, 13, 0, &[0xfc], 48_000);
            s.send(ms, 14, 0, &[0xfc], 48_000);
        }
        let (h, out) = s.tl.finish();
        assert_eq!(h, Some(Header { video: Some((640, 360)), audio: AUDIO_TRACKS }), "no keyframe: nominal size");
        assert!(
            out.iter().filter(|o| o.ns >= 3_000_000_000).all(|o| o.track != Track::Audio(0)),
            "the teacher's track stays theirs"
        );
        let late: std::collections::BTreeSet<Track> =
            out.iter().filter(|o| o.ns >= 3_000_000_000).map(|o| o.track).collect();
        assert_eq!(late, [Track::Mix, Track::Audio(1), Track::Audio(2)].into(), "the two, and the loudest of them");
    }

    #[test]
    fn the_first_track_carries_whoever_speaks_loudest_as_they_take_turns() {
        let mut s = Sim::new();
        s.tl.add_source(2, 1, Media::Audio, true);
        s.tl.add_source(3, 7, Media::Audio, false);
        // The teacher speaks (level 20), the pupil murmurs (level 90); then the teacher
        // falls quiet (110) and the pupil answers (25); then the pupil stops sending.
        for ms in (0..6000).step_by(20) {
            let (t, p) = if ms < 2000 { (20, 90) } else { (110, 25) };
            s.speak(ms, 2, 0, &[0xfc, 0x01], 48_000, Some(t));
            if ms < 4000 {
                s.speak(ms + 3, 3, 0, &[0xfc, 0x02], 48_000, Some(p));
            }
        }
        let (_, out) = s.tl.finish();
        let mix: Vec<&Out> = out.iter().filter(|o| o.track == Track::Mix).collect();
        let whose = |from: u64, to: u64| -> Vec<u8> {
            let mut v: Vec<u8> =
                mix.iter().filter(|o| (from..to).contains(&(o.ns / 1_000_000))).map(|o| o.data[1]).collect();
            v.dedup();
            v
        };
        assert_eq!(whose(0, 2000), vec![1], "the teacher while they speak");
        assert_eq!(whose(2500, 4000), vec![2], "the pupil when they answer");
        assert_eq!(whose(4400, 6000), vec![1], "the teacher again once the pupil is silent");
        assert!(mix.windows(2).all(|w| w[1].ns - w[0].ns >= OPUS_FRAME_NS / 2), "never two packets at once");
        let own = |k: Track| out.iter().filter(|o| o.track == k).count();
        assert_eq!(own(Track::Audio(0)), 300, "the teacher's own track has all of it");
        assert_eq!(own(Track::Audio(1)), 200, "the pupil's too");
    }

    #[test]
    fn an_audio_only_class_has_no_picture_track_and_starts_at_once() {
        let t0 = tokio::time::Instant::now().into_std();
        let mut tl = Timeline::new(t0, false);
        assert_eq!(tl.poll_header(), Some(Header { video: None, audio: AUDIO_TRACKS }));
        tl.add_source(1, 1, Media::Video, true);
        tl.packet(t0, 1, 0, 0, 1, 0, true, t0, None, &vp8(true));
        assert!(tl.finish().1.is_empty());
    }

    #[test]
    fn the_clock_follows_rtp_time_and_restarts_after_a_jump() {
        let mut c = Clock::default();
        assert_eq!(c.at(1000, 5_000_000, 48_000), 5_000_000);
        // 20 ms of RTP time, arriving 3 ms late: RTP time wins.
        assert_eq!(c.at(1960, 28_000_000, 48_000), 25_000_000);
        // A jump of the timestamps (a new encoder): anchored on arrival again.
        assert_eq!(c.at(9_000_000, 45_000_000, 48_000), 45_000_000);
    }
}

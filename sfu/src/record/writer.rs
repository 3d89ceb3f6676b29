//! A running recording: the publishers' shards hand it packets ([`Tap`]); a thread of
//! its own (file IO never runs on an engine shard or the runtime) turns them into frames
//! ([`Timeline`]) and muxes them into WebM with libwebm (the `webm` crate), as they are:
//! VP8 and Opus, no transcoding.

use super::timeline::{Header, Out, Timeline, Track};
use crate::media::{Packet, Source};
use crate::metrics as m;
use crate::room::Media;
use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use webm::mux::{AudioCodecId, AudioTrack, Segment, SegmentBuilder, SegmentMode, VideoCodecId, VideoTrack, Writer};

/// Packets waiting for the writer (about 4 s of a class's recorded media); when full, a
/// packet is dropped and counted (the picture then waits for a keyframe).
const QUEUE: usize = 4096;
/// How often the writer wakes without packets (to write held frames out).
const TICK: Duration = Duration::from_millis(100);

/// The writer's clock (tokio's, as the engine's).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

pub(crate) enum RecIn {
    Source { source: Arc<Source>, host: bool },
    Gone(u64),
    Packet(Arc<Packet>, u8),
    Stop,
}

/// What a source holds while a recording hears it.
pub(crate) struct Tap {
    tx: SyncSender<RecIn>,
}

impl Tap {
    /// One packet (called by the publisher's shard; never blocks).
    pub(crate) fn packet(&self, p: &Arc<Packet>, rank: u8) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(RecIn::Packet(p.clone(), rank)) {
            metrics::counter!(m::RECORDING_DROPPED, "reason" => "queue").increment(1);
        }
    }
}

/// What a finished recording holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Written {
    pub bytes: u64,
    pub duration_ms: u64,
    pub video: Option<(u16, u16)>,
    pub audio_tracks: usize,
}

/// A running recording's handle (the room task holds it).
pub(crate) struct Running {
    tx: SyncSender<RecIn>,
    done: oneshot::Receiver<Result<Written, String>>,
    tapped: Vec<Arc<Source>>,
}

impl Running {
    /// Starts writing `part` (renamed to `path` when finished); `with_video`: a picture
    /// track. The file is created here, so a folder that cannot be written is said at
    /// once.
    pub(crate) fn start(part: PathBuf, path: PathBuf, with_video: bool) -> Result<Running, String> {
        let file = File::create(&part).map_err(|e| format!("{}: {e}", part.display()))?;
        let (tx, rx) = sync_channel(QUEUE);
        let (done_tx, done) = oneshot::channel();
        let start = now();
        std::thread::Builder::new()
            .name("preau-recording".into())
            .spawn(move || {
                let r = write(rx, file, start, with_video).and_then(|w| {
                    std::fs::rename(&part, &path).map_err(|e| format!("{}: {e}", path.display()))?;
                    Ok(w)
                });
                if r.is_err() {
                    let _ = std::fs::remove_file(&part);
                }
                let _ = done_tx.send(r);
            })
            .map_err(|e| format!("recording thread: {e}"))?;
        Ok(Running { tx, done, tapped: Vec::new() })
    }

    /// The recording hears `source` from now on.
    pub(crate) fn tap(&mut self, source: &Arc<Source>, host: bool) {
        let _ = self.tx.send(RecIn::Source { source: source.clone(), host });
        source.set_tap(Some(Tap { tx: self.tx.clone() }));
        self.tapped.push(source.clone());
    }

    /// The recording stops hearing `source` (it stopped).
    pub(crate) fn untap(&mut self, source: &Arc<Source>) {
        source.set_tap(None);
        self.tapped.retain(|s| s.key != source.key);
        let _ = self.tx.send(RecIn::Gone(source.key));
    }

    /// Stops: every source let go, the file finished.
    pub(crate) async fn stop(mut self) -> Result<Written, String> {
        for s in std::mem::take(&mut self.tapped) {
            s.set_tap(None);
        }
        let _ = self.tx.send(RecIn::Stop);
        self.done.await.map_err(|_| "the recording thread stopped".to_owned())?
    }
}

/// The WebM file being written.
struct Mux {
    segment: Segment<BufWriter<File>>,
    video: Option<VideoTrack>,
    audio: Vec<AudioTrack>,
    failed_frames: u64,
}

/// Opus's identification header (RFC 7845 section 5.1), WebM's CodecPrivate for Opus:
/// one channel (a microphone), the usual pre-skip, 48 kHz.
fn opus_head() -> [u8; 19] {
    let mut h = [0u8; 19];
    h[..8].copy_from_slice(b"OpusHead");
    h[8] = 1; // version
    h[9] = 1; // channels
    h[10..12].copy_from_slice(&312u16.to_le_bytes());
    h[12..16].copy_from_slice(&48_000u32.to_le_bytes());
    h
}

impl Mux {
    fn new(file: File, h: Header) -> Result<Mux, String> {
        let e = |e: webm::mux::Error| format!("WebM: {e}");
        let mut b = SegmentBuilder::new(Writer::new(BufWriter::new(file)))
            .map_err(e)?
            .set_mode(SegmentMode::File)
            .map_err(e)?
            .set_writing_app("preau-sfu")
            .map_err(e)?;
        let mut video = None;
        if let Some((w, hgt)) = h.video {
            let (nb, t) = b.add_video_track(u32::from(w), u32::from(hgt), VideoCodecId::VP8, None).map_err(e)?;
            b = nb;
            video = Some(t);
        }
        let mut audio = Vec::new();
        for _ in 0..h.audio {
            let (nb, t) = b.add_audio_track(48_000, 1, AudioCodecId::Opus, None).map_err(e)?;
            b = nb.set_codec_private(t, &opus_head()).map_err(e)?;
            audio.push(t);
        }
        Ok(Mux { segment: b.build(), video, audio, failed_frames: 0 })
    }

    fn frame(&mut self, f: Out) {
        let r = match f.track {
            Track::Video => match self.video {
                Some(t) => self.segment.add_frame(t, &f.data, f.ns, f.key),
                None => return,
            },
            Track::Mix => match self.audio.first() {
                Some(t) => self.segment.add_frame(*t, &f.data, f.ns, true),
                None => return,
            },
            Track::Audio(i) => match self.audio.get(i + 1) {
                Some(t) => self.segment.add_frame(*t, &f.data, f.ns, true),
                None => return,
            },
        };
        if r.is_err() {
            self.failed_frames += 1;
        }
    }
}

fn write(rx: Receiver<RecIn>, file: File, start: Instant, with_video: bool) -> Result<Written, String> {
    let mut tl = Timeline::new(start, with_video);
    let mut sources: HashMap<u64, Arc<Source>> = HashMap::new();
    let mut file = Some(file);
    let mut mux: Option<Mux> = None;
    let mut header = None;
    loop {
        match rx.recv_timeout(TICK) {
            Ok(RecIn::Packet(p, rank)) => {
                let src = &p.source;
                tl.packet(now(), src.key, p.layer, rank, p.seq, p.ts, p.marker, p.arrived, p.level, &p.payload);
            }
            Ok(RecIn::Source { source, host }) => {
                tl.add_source(source.key, source.peer, source.media, host);
                sources.insert(source.key, source);
            }
            Ok(RecIn::Gone(key)) => {
                tl.remove_source(key);
                sources.remove(&key);
            }
            Ok(RecIn::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
        while let Some((key, layer)) = tl.poll_keyframe() {
            if let Some(s) = sources.get(&key) {
                s.ask_keyframe(layer);
            }
        }
        if let Some(h) = tl.poll_header() {
            header = Some(h);
            mux = Some(Mux::new(file.take().ok_or("the file is gone")?, h)?);
        }
        if let Some(mx) = mux.as_mut() {
            let t = now();
            while let Some(f) = tl.poll_frame(t) {
                mx.frame(f);
            }
        }
    }
    let (h, rest) = tl.finish();
    if let Some(h) = h {
        header = Some(h);
        mux = Some(Mux::new(file.take().ok_or("the file is gone")?, h)?);
    }
    let mut mx = mux.ok_or("no header")?;
    if rest.is_empty() && tl.duration_ns() == 0 && mx.failed_frames == 0 {
        // libwebm cannot finish a file without frames.
        return Err("nothing was recorded (no sound nor picture reached the recording)".into());
    }
    for f in rest {
        mx.frame(f);
    }
    if tl.voices_dropped > 0 {
        metrics::counter!(m::RECORDING_DROPPED, "reason" => "voices").increment(tl.voices_dropped);
    }
    if mx.failed_frames > 0 {
        tracing::warn!(frames = mx.failed_frames, "frames the muxer refused");
    }
    let duration_ms = tl.duration_ns() / 1_000_000;
    let writer =
        mx.segment.finalize(Some(duration_ms.max(1))).map_err(|_| "WebM: could not finish the file".to_owned())?;
    let mut out = writer.into_inner();
    use std::io::Write as _;
    out.flush().map_err(|e| format!("flush: {e}"))?;
    let file = out.into_inner().map_err(|e| format!("flush: {e}"))?;
    file.sync_all().map_err(|e| format!("sync: {e}"))?;
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let h = header.unwrap_or(Header { video: None, audio: 0 });
    Ok(Written { bytes, duration_ms, video: h.video, audio_tracks: h.audio })
}

/// Whether a source is one a recording hears: every microphone (only granted ones send),
/// a host's camera, any screen.
pub(crate) fn heard(media: Media, host: bool) -> bool {
    media != Media::Video || host
}

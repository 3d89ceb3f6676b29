//! Class recordings: the host starts one, everyone is told; the node writes the teacher's
//! voice and picture (or the screen shared), and the speaking pupils' voices, to a WebM
//! file in its recordings folder, lists it in the class announcements through the
//! gateway's server API, serves it to holders of a link the gateway signed, and deletes
//! it past its retention.
//!
//! # Layout
//! Without IO, tested on simulated time:
//! - [`assemble`]: VP8 frames from RTP packets (RFC 7741), losses waiting for a keyframe.
//! - [`timeline`]: which picture and voices, each frame's time, the order across tracks.
//!
//! With IO: `writer` (the tap on each source, the writing thread, the muxer) and here
//! the folder: names, the `.json` beside each file, listing, retention, downloads.

pub mod assemble;
pub mod timeline;
mod writer;

pub(crate) use writer::{Running, Tap, Written, heard};

use crate::config::SfuConfig;
use crate::metrics as m;
use preau_proto::clock::{Clock as _, SystemClock};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How often the folder is swept (listing what the gateway missed, deleting what is
/// past retention).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// What the `.json` beside a recording says.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Meta {
    /// `YYYYMMDD-HHMMSS-<8 hex>` (UTC).
    pub id: String,
    /// School UAI.
    pub school: String,
    /// Class id.
    pub class: String,
    /// The host who started it.
    pub author: String,
    /// Milliseconds since the Unix epoch.
    pub started_at_ms: i64,
    /// Length.
    pub duration_ms: u64,
    /// File size.
    pub bytes: u64,
    /// Picture size, if it has a picture track.
    pub video: Option<(u16, u16)>,
    /// Audio tracks (the teacher's first).
    pub audio_tracks: usize,
    /// Listed in the class announcements (the gateway said so).
    #[serde(default)]
    pub listed: bool,
}

impl Meta {
    /// The name a download is saved under: `cours-6A-2026-12-03.webm`.
    pub fn download_name(&self) -> String {
        let (y, mo, d) = civil(self.started_at_ms.div_euclid(86_400_000));
        let class: String =
            self.class.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
        format!("cours-{class}-{y:04}-{mo:02}-{d:02}.webm")
    }
}

/// The date of a day number since 1970-01-01 (proleptic Gregorian; H. Hinnant's
/// algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Whether `id` is one this node could have made (nothing else reaches the folder).
pub fn valid_id(id: &str) -> bool {
    id.len() == 24 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b'-')
}

/// The recordings folder of a node and where recordings are listed.
pub struct Store {
    enabled: bool,
    dir: PathBuf,
    base: String,
    gateway: Option<(String, String, preau_ops::client::Client)>,
    retention_ms: i64,
}

impl Store {
    /// From the flags; `base` is this node's HTTP base URL (downloads).
    pub fn new(cfg: &SfuConfig, base: String) -> anyhow::Result<Arc<Store>> {
        let gateway = match (&cfg.gateway_url, &cfg.gateway_api_key_file) {
            (Some(url), Some(file)) => {
                let key = std::fs::read_to_string(file)
                    .map_err(|e| anyhow::anyhow!("--gateway-api-key-file {}: {e}", file.display()))?
                    .trim()
                    .to_owned();
                let client =
                    preau_ops::client::Client::new(None, Duration::from_secs(10)).map_err(anyhow::Error::msg)?;
                Some((url.trim_end_matches('/').to_owned(), key, client))
            }
            (Some(_), None) => anyhow::bail!("--gateway-url needs --gateway-api-key-file (a server API key)"),
            _ => None,
        };
        Ok(Arc::new(Store {
            enabled: cfg.recording,
            dir: cfg.recordings_dir.clone(),
            base,
            gateway,
            retention_ms: (cfg.recording_retention_days as i64).saturating_mul(86_400_000),
        }))
    }

    /// Whether this node records at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn file(&self, id: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{id}.{ext}"))
    }

    /// Starts a recording of `school`'s `class` for `author`.
    pub(crate) fn begin(
        &self,
        school: &str,
        class: &str,
        author: &str,
        with_video: bool,
    ) -> Result<(Meta, Running), String> {
        if !self.enabled() {
            return Err("recording is off on this node (--recording false)".into());
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let now = SystemClock.now_ms();
        let (y, mo, d) = civil(now.div_euclid(86_400_000));
        let secs = now.rem_euclid(86_400_000) / 1000;
        let tag: u32 = rand::rng().random();
        let id = format!("{y:04}{mo:02}{d:02}-{:02}{:02}{:02}-{tag:08x}", secs / 3600, secs / 60 % 60, secs % 60);
        let running = Running::start(self.file(&id, "webm.part"), self.file(&id, "webm"), with_video)?;
        let meta = Meta {
            id,
            school: school.to_owned(),
            class: class.to_owned(),
            author: author.to_owned(),
            started_at_ms: now,
            duration_ms: 0,
            bytes: 0,
            video: None,
            audio_tracks: 0,
            listed: false,
        };
        Ok((meta, running))
    }

    /// A recording finished: its `.json` written, then listed.
    pub(crate) async fn finished(&self, mut meta: Meta, w: Written) {
        meta.duration_ms = w.duration_ms;
        meta.bytes = w.bytes;
        meta.video = w.video;
        meta.audio_tracks = w.audio_tracks;
        metrics::counter!(m::RECORDINGS, "result" => "written").increment(1);
        tracing::info!(id = %meta.id, class = %meta.class, duration_ms = meta.duration_ms, bytes = meta.bytes, "recording written");
        self.save(&meta);
        if self.gateway.is_none() {
            tracing::warn!(id = %meta.id, "no --gateway-url: the recording stays in the folder, listed nowhere");
        }
        self.list(&mut meta).await;
    }

    fn save(&self, meta: &Meta) {
        let path = self.file(&meta.id, "json");
        let tmp = self.file(&meta.id, "json.tmp");
        let r = serde_json::to_vec_pretty(meta)
            .map_err(|e| e.to_string())
            .and_then(|b| std::fs::write(&tmp, b).map_err(|e| e.to_string()))
            .and_then(|()| std::fs::rename(&tmp, &path).map_err(|e| e.to_string()));
        if let Err(e) = r {
            tracing::error!(id = %meta.id, error = %e, "could not save a recording's description");
        }
    }

    /// Lists the recording in the class announcements; retried by the sweep until the
    /// gateway says it is.
    async fn list(&self, meta: &mut Meta) {
        let Some((url, key, client)) = &self.gateway else { return };
        let body = serde_json::json!({
            "school": meta.school,
            "class": meta.class,
            "author": meta.author,
            "id": meta.id,
            "url": format!("{}/recordings/{}.webm", self.base, meta.id),
            "duration_ms": meta.duration_ms,
            "size": meta.bytes,
            "started_at": meta.started_at_ms,
        });
        let headers = [("authorization", format!("Bearer {key}")), ("content-type", "application/json".to_owned())];
        let bytes = bytes::Bytes::from(body.to_string());
        match client.post(&format!("{url}/server/v1/recordings"), &headers, bytes).await {
            Ok(a) if a.status == 200 => {
                meta.listed = true;
                self.save(meta);
                metrics::counter!(m::RECORDINGS, "result" => "listed").increment(1);
            }
            // A refusal (4xx) is logged; the sweep tries again (the class may be back).
            Ok(a) => {
                let said = String::from_utf8_lossy(&a.body);
                tracing::warn!(id = %meta.id, status = a.status, %said, "the gateway did not list the recording");
            }
            Err(e) => tracing::warn!(id = %meta.id, error = %e, "gateway unreachable: the recording is listed later"),
        }
    }

    /// Lists what is not listed yet and deletes what is past retention (and the parts
    /// of recordings a killed node never finished).
    pub async fn sweep(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        let now = SystemClock.now_ms();
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".webm.part") {
                // A part no thread writes any more: older than a whole school day.
                let old = e.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
                if valid_id(id) && old.is_some_and(|d| d > Duration::from_secs(12 * 3600)) {
                    let _ = std::fs::remove_file(&path);
                }
                continue;
            }
            let Some(id) = name.strip_suffix(".json") else { continue };
            let Some(mut meta) = valid_id(id).then(|| read_meta(&path)).flatten() else { continue };
            if now - meta.started_at_ms > self.retention_ms {
                let _ = std::fs::remove_file(self.file(id, "webm"));
                let _ = std::fs::remove_file(&path);
                metrics::counter!(m::RECORDINGS, "result" => "deleted").increment(1);
                tracing::info!(id, "recording deleted: past its retention");
            } else if !meta.listed {
                self.list(&mut meta).await;
            }
        }
    }

    /// Sweeps the folder now and every minute.
    pub fn spawn_sweeper(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(SWEEP_EVERY);
            loop {
                t.tick().await;
                me.sweep().await;
            }
        });
    }

    /// A finished recording's file and description, for a download.
    pub fn open(&self, id: &str) -> Option<(PathBuf, Meta)> {
        if !valid_id(id) {
            return None;
        }
        let meta = read_meta(&self.file(id, "json"))?;
        let path = self.file(id, "webm");
        path.is_file().then_some((path, meta))
    }
}

fn read_meta(path: &Path) -> Option<Meta> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_names() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(20_790), (2026, 12, 3));
        assert_eq!(civil(11_016), (2000, 2, 29));
        let meta = Meta {
            id: "20261203-101500-0a1b2c3d".into(),
            school: "0750001A".into(),
            class: "6A".into(),
            author: "t01".into(),
            started_at_ms: 20_790 * 86_400_000 + 3_600_000,
            duration_ms: 1,
            bytes: 1,
            video: None,
            audio_tracks: 4,
            listed: false,
        };
        assert_eq!(meta.download_name(), "cours-6A-2026-12-03.webm");
        assert!(valid_id(&meta.id));
        assert!(!valid_id("../../etc/passwd-0000000000"));
        assert!(!valid_id("20261203-101500-0A1B2C3D"), "lower-case hex only");
    }
}

//! The room task's part in recordings: a host's `record`, the file begun before anyone
//! is told, the sources the recording hears, and the file finished in the background.

use super::{RoomTask, now};
use crate::metrics as m;
use crate::room::PeerId;
use preau_live::signal::{ReceiveMode, SignalCode, SignalError};

impl RoomTask {
    /// The host starts or stops the recording: the file is begun before anyone is told,
    /// so nobody is told of a recording that is not made.
    pub(super) fn record(&mut self, peer: PeerId, on: bool) -> Result<(), SignalError> {
        self.room.check_host(peer)?;
        if on && self.recording.is_none() {
            let unavailable = |m: &str| SignalError::new(SignalCode::RecordingUnavailable, m);
            // Only a class's session is recorded: its announcements list the file.
            let class =
                self.key.split_once('/').and_then(|(school, room)| Some((school, room.strip_prefix("class:")?)));
            let Some((school, class)) = class else {
                return Err(unavailable("only a class's live session can be recorded"));
            };
            if !self.sfu.recordings.enabled() {
                return Err(unavailable("recording is off on this server"));
            }
            let author = self.room.member(peer).map(|m| m.user.clone()).unwrap_or_default();
            let with_video = self.room.class_receive() != ReceiveMode::Audio;
            let (meta, mut running) = self.sfu.recordings.begin(school, class, &author, with_video).map_err(|e| {
                tracing::error!(room = %self.key, error = %e, "cannot record");
                metrics::counter!(m::RECORDINGS, "result" => "failed").increment(1);
                unavailable("this server cannot record now")
            })?;
            for s in self.sources.clone() {
                let host = self.is_host(s.peer);
                if crate::record::heard(s.media, host) {
                    running.tap(&s, host);
                }
            }
            tracing::info!(room = %self.key, id = %meta.id, "recording started");
            self.recording = Some((meta, running));
        } else if !on {
            self.stop_recording();
        }
        self.room.handle_record(now(), peer, on).map_err(SignalError::from)
    }

    /// Finishes the recording (written, described and listed in the background).
    pub(super) fn stop_recording(&mut self) {
        let Some((meta, running)) = self.recording.take() else { return };
        let store = self.sfu.recordings.clone();
        tokio::spawn(async move {
            let id = meta.id.clone();
            match running.stop().await {
                Ok(w) => store.finished(meta, w).await,
                Err(e) => {
                    metrics::counter!(m::RECORDINGS, "result" => "failed").increment(1);
                    tracing::warn!(%id, error = %e, "recording not kept");
                }
            }
        });
    }
}

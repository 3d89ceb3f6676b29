//! The room task's part in breakout groups: the split asked by the host, the registry
//! told who is in which group before anyone moves, and the class's media paused for
//! pupils out in a group (their signaling stays: the class's word reaches them there).

use super::{PeerCmd, RoomTask};
use crate::room::{Media, PeerId, Plan};
use preau_live::signal::{SignalCode, SignalError};
use std::sync::atomic::Ordering;
use std::time::Instant;

impl RoomTask {
    /// The host's `breakout_start`: groups are a class's, not an assembly's nor a
    /// group's own.
    pub(super) fn breakout_start(
        &mut self,
        now: Instant,
        peer: PeerId,
        count: Option<u32>,
        groups: Option<Vec<Vec<PeerId>>>,
        minutes: Option<u32>,
    ) -> Result<(), SignalError> {
        let class = self.key.split_once('/').is_some_and(|(_, r)| r.starts_with("class:")) && !self.group;
        if !class {
            return Err(SignalError::new(SignalCode::BadBreakout, "breakout groups are for a class's live session"));
        }
        let plan = match (count, groups) {
            (Some(n), None) => Plan::Random(n as usize),
            (None, Some(g)) => Plan::ByHand(g),
            _ => return Err(SignalError::new(SignalCode::BadBreakout, "give `count` or `groups`")),
        };
        let seed = rand::random::<u64>();
        self.room.handle_breakout_start(now, peer, plan, minutes, seed).map_err(SignalError::from)
    }

    /// The registry holds who is in which group before a pupil hears where to go (their
    /// group's room, maybe on another node, checks it when they arrive). Only when a
    /// split or a recall moved the room's breakout version.
    pub(super) async fn sync_registry(&mut self) {
        let version = self.room.breakout_version();
        if version != self.registered {
            self.registered = version;
            self.sfu.set_breakouts(&self.key, self.room.breakout_assignments()).await;
        }
    }

    /// Pupils who went to a breakout group, or came back: what the class forwards to
    /// them and lets through from them follows. Nothing to do (and nothing computed)
    /// while nobody is or was away.
    pub(super) fn apply_away(&mut self) {
        let moved: Vec<(PeerId, bool)> = self
            .peers
            .iter()
            .filter_map(|(id, p)| {
                let away = self.room.is_away(*id);
                (p.away != away).then_some((*id, away))
            })
            .collect();
        if moved.is_empty() {
            return;
        }
        let chosen = self.video_chosen();
        for (id, away) in moved {
            let Some(p) = self.peers.get_mut(&id) else { continue };
            p.away = away;
            let mut changed = Vec::new();
            for (sid, fwd) in p.sources.iter_mut() {
                let Some(s) = self.sources.iter().find(|s| &s.id == sid) else { continue };
                let on = !away && (s.media != Media::Video || chosen.contains(&s.peer));
                if *fwd != on {
                    *fwd = on;
                    changed.push((sid.clone(), on));
                }
            }
            for s in self.sources.iter().filter(|s| s.peer == id) {
                s.allowed.store(!away && self.room.may_publish(s.peer, s.media).is_ok(), Ordering::Release);
            }
            if away {
                self.speakers.forget(id);
            }
            for (sid, on) in changed {
                self.send(id, PeerCmd::Forward(sid, on));
            }
            self.tell_sources(id);
        }
    }
}

//! Breakout groups of a class, without IO: the host splits the present pupils into
//! groups (at random, or by hand), each group a room of its own (`class:<id>~g<n>`,
//! placed by the registry like any room, maybe on another node); pupils stay connected
//! to the class for its word (the teacher's messages, the recall) while their pictures
//! and voices go to their group. The host brings everyone back at once or at a time.

use super::{Event, PeerId, Role, Room, RoomError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub use preau_proto::MAX_BREAKOUT_GROUPS as MAX_GROUPS;
/// Longest breakout, in minutes.
const MAX_MINUTES: u32 = 120;
/// Longest message to every group, in characters.
const BROADCAST_MAX: usize = 500;
/// After the recall, pupils coming back skip the waiting room this long.
const RETURN_WINDOW: Duration = Duration::from_secs(300);

/// How the host splits the class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// This many groups, pupils drawn at random.
    Random(usize),
    /// These groups of peers (pupils not named stay in the class).
    ByHand(Vec<Vec<PeerId>>),
}

/// One group as members are told of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct GroupInfo {
    /// `g1`, `g2`...: the group's room is `class:<class>~<group>`.
    pub group: String,
    /// "Groupe 1"...
    pub name: String,
    /// Its pupils, by their peer id in the class.
    pub members: Vec<PeerId>,
}

/// The groups out now.
#[derive(Debug, Clone)]
pub(crate) struct Breakouts {
    groups: Vec<GroupInfo>,
    /// Group of each pupil, by user id (a pupil who reconnects keeps their group).
    of_user: BTreeMap<String, usize>,
    ends_at: Option<Instant>,
}

/// The group room's id suffix of group `i` (0-based).
fn group_id(i: usize) -> String {
    format!("g{}", i + 1)
}

/// A permutation of `0..n` from `seed` (xorshift64; the room task gives a random seed,
/// tests a fixed one).
fn shuffle(n: usize, mut seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    seed |= 1;
    for i in (1..n).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    v
}

impl Room {
    /// The group `user` is in while groups are out.
    pub fn breakout_of(&self, user: &str) -> Option<&str> {
        let b = self.breakouts.as_ref()?;
        b.of_user.get(user).and_then(|i| b.groups.get(*i)).map(|g| g.group.as_str())
    }

    /// Moves at each split and each recall: who is in which group changed (the room task
    /// compares it rather than the assignments, at every flush).
    pub fn breakout_version(&self) -> u64 {
        self.breakout_version
    }

    /// Whether groups are out.
    pub fn breakouts_out(&self) -> bool {
        self.breakouts.is_some()
    }

    /// Whether `peer` is a member now in a group (the class forwards them nothing).
    pub fn is_away(&self, peer: PeerId) -> bool {
        self.members.get(&peer).is_some_and(|m| self.breakout_of(&m.user).is_some())
    }

    /// Every pupil out and their group (`user`, `group`), for the registry.
    pub fn breakout_assignments(&self) -> Vec<(String, String)> {
        let Some(b) = &self.breakouts else { return Vec::new() };
        b.of_user.iter().filter_map(|(u, i)| Some((u.clone(), b.groups.get(*i)?.group.clone()))).collect()
    }

    /// Whether a pupil joining now goes straight in: they are out in a group, or came
    /// back from one a moment ago.
    pub(crate) fn skips_waiting_room(&self, user: &str, now: Instant) -> bool {
        self.breakout_of(user).is_some() || self.returning.get(user).is_some_and(|t| now < *t)
    }

    /// The host splits the class: each pupil drawn gets `breakout {group, name}` and
    /// goes there; everyone gets `breakouts` (the groups and the time left). `minutes`:
    /// everyone is brought back then.
    pub fn handle_breakout_start(
        &mut self,
        now: Instant,
        by: PeerId,
        plan: Plan,
        minutes: Option<u32>,
        seed: u64,
    ) -> Result<(), RoomError> {
        self.host(by)?;
        if self.breakouts.is_some() {
            return Err(RoomError::BadBreakout("groups are out already: bring them back first"));
        }
        if minutes.is_some_and(|m| m == 0 || m > MAX_MINUTES) {
            return Err(RoomError::BadBreakout("a breakout lasts 1 to 120 minutes"));
        }
        let pupils: Vec<PeerId> =
            self.members.values().filter(|m| m.role == Role::Participant).map(|m| m.peer).collect();
        let groups: Vec<Vec<PeerId>> = match plan {
            Plan::Random(n) => {
                if !(2..=MAX_GROUPS).contains(&n) || n > pupils.len() {
                    return Err(RoomError::BadBreakout("2 to 20 groups, and no more groups than pupils"));
                }
                let mut g = vec![Vec::new(); n];
                for (k, i) in shuffle(pupils.len(), seed).into_iter().enumerate() {
                    g[k % n].push(pupils[i]);
                }
                g
            }
            Plan::ByHand(g) => {
                let mut seen = std::collections::BTreeSet::new();
                let ok = !g.is_empty()
                    && g.len() <= MAX_GROUPS
                    && g.iter().all(|members| !members.is_empty())
                    && g.iter().flatten().all(|p| pupils.contains(p) && seen.insert(*p));
                if !ok {
                    return Err(RoomError::BadBreakout(
                        "1 to 20 groups, none empty, of pupils in the class, each in one group",
                    ));
                }
                g
            }
        };
        let mut of_user = BTreeMap::new();
        let mut infos = Vec::new();
        for (i, members) in groups.into_iter().enumerate() {
            for p in &members {
                if let Some(m) = self.members.get(p) {
                    of_user.insert(m.user.clone(), i);
                }
            }
            infos.push(GroupInfo { group: group_id(i), name: format!("Groupe {}", i + 1), members });
        }
        let ends_at = minutes.map(|m| now + Duration::from_secs(u64::from(m) * 60));
        self.breakouts = Some(Breakouts { groups: infos.clone(), of_user, ends_at });
        self.breakout_version += 1;
        for g in &infos {
            for p in &g.members {
                // Their hand is down in the class while they are away.
                self.lower(*p);
                self.emit(Some(*p), Event::Breakout { group: g.group.clone(), name: g.name.clone() });
            }
        }
        self.tell_breakouts(None, now);
        Ok(())
    }

    /// The host's word to every group (pupils hear it through the class).
    pub fn handle_breakout_broadcast(&mut self, _now: Instant, by: PeerId, text: &str) -> Result<(), RoomError> {
        self.host(by)?;
        if self.breakouts.is_none() {
            return Err(RoomError::NoBreakout);
        }
        let text = text.trim();
        if text.is_empty() || text.chars().count() > BROADCAST_MAX {
            return Err(RoomError::BadBreakout("a message of 1 to 500 characters"));
        }
        self.emit(None, Event::Broadcast { text: text.to_owned() });
        Ok(())
    }

    /// The host brings everyone back: now, or in `in_s` seconds (everyone is told the
    /// time left).
    pub fn handle_breakout_end(&mut self, now: Instant, by: PeerId, in_s: Option<u32>) -> Result<(), RoomError> {
        self.host(by)?;
        let Some(b) = self.breakouts.as_mut() else { return Err(RoomError::NoBreakout) };
        match in_s {
            Some(s) if s > 0 => {
                b.ends_at = Some(now + Duration::from_secs(u64::from(s)));
                self.tell_breakouts(None, now);
            }
            _ => self.end_breakouts(now),
        }
        Ok(())
    }

    pub(super) fn breakout_deadline(&self) -> Option<Instant> {
        self.breakouts.as_ref().and_then(|b| b.ends_at)
    }

    pub(super) fn breakout_timeout(&mut self, now: Instant) {
        if self.breakout_deadline().is_some_and(|t| now >= t) {
            self.end_breakouts(now);
        }
    }

    fn end_breakouts(&mut self, now: Instant) {
        let Some(b) = self.breakouts.take() else { return };
        self.breakout_version += 1;
        for user in b.of_user.into_keys() {
            self.returning.insert(user, now + RETURN_WINDOW);
        }
        self.returning.retain(|_, t| now < *t);
        self.emit(None, Event::BreakoutEnded);
    }

    /// Tells `to` (everyone: `None`) the groups out and the time left.
    pub(super) fn tell_breakouts(&mut self, to: Option<PeerId>, now: Instant) {
        let Some(b) = &self.breakouts else { return };
        let ends_in_s = b.ends_at.map(|t| t.saturating_duration_since(now).as_secs() as u32);
        let groups = b.groups.clone();
        self.emit(to, Event::Breakouts { groups, ends_in_s });
    }

    /// A member admitted while groups are out: told of them, and sent back to their
    /// group if they have one (a pupil whose class connection dropped).
    pub(super) fn tell_newcomer_breakouts(&mut self, peer: PeerId, user: &str, now: Instant) {
        if self.breakouts.is_none() {
            return;
        }
        let present: Vec<PeerId> = self.members.keys().copied().collect();
        let found = self.breakouts.as_mut().and_then(|b| {
            let i = *b.of_user.get(user)?;
            let g = b.groups.get_mut(i)?;
            // The group lists the pupil by their new peer id.
            g.members.retain(|p| present.contains(p) && *p != peer);
            g.members.push(peer);
            Some((g.group.clone(), g.name.clone()))
        });
        if let Some((group, name)) = found {
            self.emit(Some(peer), Event::Breakout { group, name });
        }
        self.tell_breakouts(Some(peer), now);
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{T, class, drain};
    use super::super::{Output, RoomConfig};
    use super::*;

    fn sent_to(out: &[Output], peer: PeerId) -> Option<String> {
        out.iter().find_map(|o| match &o.event {
            Event::Breakout { group, .. } if o.to == Some(peer) => Some(group.clone()),
            _ => None,
        })
    }

    #[test]
    fn the_teacher_draws_groups_and_each_pupil_is_sent_to_theirs() {
        let (mut r, now) = class(7); // pupils 2..=7
        assert_eq!(r.handle_breakout_start(now, 2, Plan::Random(3), None, 1), Err(RoomError::NotHost));
        assert!(matches!(r.handle_breakout_start(now, T, Plan::Random(1), None, 1), Err(RoomError::BadBreakout(_))));
        assert!(matches!(r.handle_breakout_start(now, T, Plan::Random(7), None, 1), Err(RoomError::BadBreakout(_))));
        assert!(matches!(
            r.handle_breakout_start(now, T, Plan::Random(3), Some(121), 1),
            Err(RoomError::BadBreakout(_))
        ));
        r.handle_breakout_start(now, T, Plan::Random(3), Some(10), 42).expect("split");
        let out = drain(&mut r);
        let mut sizes = BTreeMap::new();
        for p in 2..=7 {
            let g = sent_to(&out, p).expect("each pupil is sent to a group");
            *sizes.entry(g.clone()).or_insert(0) += 1;
            assert_eq!(r.breakout_of(&format!("e{p:03}")), Some(g.as_str()));
            assert!(r.is_away(p));
        }
        assert_eq!(sizes.values().copied().collect::<Vec<_>>(), vec![2, 2, 2], "even groups");
        assert!(sent_to(&out, T).is_none() && !r.is_away(T), "the teacher stays");
        let told = out.iter().find_map(|o| match &o.event {
            Event::Breakouts { groups, ends_in_s } if o.to.is_none() => Some((groups.len(), *ends_in_s)),
            _ => None,
        });
        assert_eq!(told, Some((3, Some(600))), "everyone sees the groups and the time left");
        assert_eq!(r.breakout_assignments().len(), 6);
        assert!(matches!(r.handle_breakout_start(now, T, Plan::Random(2), None, 1), Err(RoomError::BadBreakout(_))));
        // The recall comes at the time set.
        assert_eq!(r.poll_timeout(), Some(now + Duration::from_secs(600)));
        r.handle_timeout(now + Duration::from_secs(600));
        assert!(drain(&mut r).contains(&Output { to: None, event: Event::BreakoutEnded }));
        assert!(!r.is_away(2) && r.breakout_assignments().is_empty() && r.is_ended().is_none());
    }

    #[test]
    fn groups_by_hand_must_be_pupils_of_the_class_each_once() {
        let (mut r, now) = class(7);
        for bad in [vec![vec![2], vec![2]], vec![vec![2, T]], vec![vec![2], vec![]], vec![vec![99]], vec![]] {
            assert!(matches!(
                r.handle_breakout_start(now, T, Plan::ByHand(bad), None, 0),
                Err(RoomError::BadBreakout(_))
            ));
        }
        r.handle_breakout_start(now, T, Plan::ByHand(vec![vec![2, 3], vec![4]]), None, 0).expect("by hand");
        let out = drain(&mut r);
        assert_eq!(
            (sent_to(&out, 2), sent_to(&out, 3), sent_to(&out, 4)),
            (Some("g1".into()), Some("g1".into()), Some("g2".into()))
        );
        assert!(sent_to(&out, 5).is_none() && !r.is_away(5), "a pupil not named stays in the class");
        assert_eq!(r.poll_timeout(), None, "no recall time, and the teacher is there: nothing due");
    }

    #[test]
    fn the_teachers_word_reaches_every_group_and_the_recall_can_be_timed() {
        let (mut r, now) = class(5);
        assert_eq!(r.handle_breakout_broadcast(now, T, "Plus que 5 minutes"), Err(RoomError::NoBreakout));
        assert_eq!(r.handle_breakout_end(now, T, None), Err(RoomError::NoBreakout));
        r.handle_breakout_start(now, T, Plan::Random(2), None, 7).expect("split");
        drain(&mut r);
        assert!(matches!(r.handle_breakout_broadcast(now, T, "  "), Err(RoomError::BadBreakout(_))));
        assert!(matches!(r.handle_breakout_broadcast(now, T, &"x".repeat(501)), Err(RoomError::BadBreakout(_))));
        assert_eq!(r.handle_breakout_broadcast(now, 2, "coucou"), Err(RoomError::NotHost));
        r.handle_breakout_broadcast(now, T, " Plus que 5 minutes ").expect("broadcast");
        assert_eq!(
            drain(&mut r),
            vec![Output { to: None, event: Event::Broadcast { text: "Plus que 5 minutes".into() } }]
        );
        r.handle_breakout_end(now, T, Some(30)).expect("in 30 s");
        assert!(drain(&mut r).iter().any(|o| matches!(o.event, Event::Breakouts { ends_in_s: Some(30), .. })));
        r.handle_timeout(now + Duration::from_secs(29));
        assert!(drain(&mut r).is_empty() && r.is_away(2));
        r.handle_timeout(now + Duration::from_secs(30));
        assert_eq!(drain(&mut r), vec![Output { to: None, event: Event::BreakoutEnded }]);
    }

    #[test]
    fn pupils_coming_back_skip_the_waiting_room_and_one_reconnecting_goes_back_to_their_group() {
        let (mut r, now) = class(5);
        r.handle_breakout_start(now, T, Plan::ByHand(vec![vec![2, 3], vec![4, 5]]), None, 0).expect("split");
        drain(&mut r);
        // Pupil 3's class connection dropped; it comes back as peer 13, straight in, and
        // is sent to its group again.
        r.handle_leave(now, 3).expect("left");
        r.handle_join(now, 13, "e003", "élève", Role::Participant).expect("back");
        let out = drain(&mut r);
        assert!(r.member(13).is_some(), "no waiting room for a pupil out in a group");
        assert_eq!(sent_to(&out, 13), Some("g1".into()));
        assert!(out.iter().any(|o| o.to == Some(13)
            && matches!(&o.event, Event::Breakouts { groups, .. } if groups[0].members.contains(&13))));
        // A newcomer not in any group waits as usual.
        r.handle_join(now, 20, "e020", "élève", Role::Participant).expect("new");
        assert!(r.member(20).is_none());
        r.handle_breakout_end(now, T, None).expect("recall");
        drain(&mut r);
        // Back from the groups: straight in for five minutes, then the waiting room again.
        r.handle_leave(now, 2).expect("left");
        r.handle_join(now + Duration::from_secs(10), 12, "e002", "élève", Role::Participant).expect("back");
        assert!(r.member(12).is_some());
        r.handle_leave(now, 4).expect("left");
        r.handle_join(now + Duration::from_secs(301), 14, "e004", "élève", Role::Participant).expect("late");
        assert!(r.member(14).is_none(), "too late: waits");
    }

    #[test]
    fn a_groups_room_lets_its_pupils_talk_at_once() {
        let now = tokio::time::Instant::now().into_std();
        let cfg = RoomConfig { waiting_room: false, open_floor: true, ..RoomConfig::default() };
        let mut r = Room::new(cfg, now);
        r.handle_join(now, 2, "e002", "élève", Role::Participant).expect("in");
        let m = r.member(2).expect("no waiting room");
        assert!(m.grants.audio && m.grants.video && !m.grants.screen);
    }

    #[test]
    fn shuffles_are_permutations() {
        for seed in [0, 1, 42, u64::MAX] {
            let mut s = shuffle(25, seed);
            s.sort();
            assert_eq!(s, (0..25).collect::<Vec<_>>());
        }
        assert_ne!(shuffle(25, 1), shuffle(25, 2), "seeds draw differently");
    }
}

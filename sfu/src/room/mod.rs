//! Room control, without IO. Here the [`Room`] and its rules; in `events.rs` what it
//! says and is told (members, grants, refusals, events); in `poll.rs` a class poll.
//!
//! # Call contract
//! - Getters: [`Room::member`], [`Room::members`], [`Room::hands`], [`Room::waiting`],
//!   [`Room::is_locked`], [`Room::is_ended`], [`Room::may_publish`], [`Room::poll`].
//! - Inputs: every `handle_*` takes the current time and either changes the room or
//!   returns a [`RoomError`] saying why not (and then changes nothing).
//! - Outputs: after any input, drain [`Room::poll_output`] until `None` and send each
//!   [`Output`] to whom it names; then arm a timer for [`Room::poll_timeout`] and call
//!   [`Room::handle_timeout`] when it fires.
//!
//! The rules are those French schools used in 2020: the teacher hosts; pupils wait in a
//! waiting room until admitted, then join muted and without camera; they raise hands in
//! an ordered queue; the host grants microphone, camera or screen, mutes one or all,
//! asks polls, removes, locks, ends. When the last host leaves, the room ends after a grace period
//! unless a host comes back.

mod breakout;
mod events;
mod poll;

pub use breakout::{GroupInfo, MAX_GROUPS, Plan};
pub use events::*;
pub use poll::Poll;
use preau_live::signal::ReceiveMode;
use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

/// A live class's control state.
#[derive(Debug)]
pub struct Room {
    cfg: RoomConfig,
    members: BTreeMap<PeerId, Member>,
    waiting: VecDeque<Member>,
    hands: Vec<PeerId>,
    locked: bool,
    ended: Option<EndReason>,
    hostless_since: Option<Instant>,
    class_receive: ReceiveMode,
    /// The class chat's forum thread, once the host set it.
    chat: Option<u64>,
    /// Being recorded (everyone is told, newcomers at admission).
    recording: bool,
    poll: Option<Poll>,
    polls: u32,
    /// Breakout groups out now.
    breakouts: Option<breakout::Breakouts>,
    /// Counts the splits and recalls: who is in which group changed when it moves.
    breakout_version: u64,
    /// Pupils back from a group, until when they skip the waiting room.
    returning: BTreeMap<String, Instant>,
    out: VecDeque<Output>,
}

impl Room {
    /// A new room; it waits for its host from `now` (the grace period applies).
    pub fn new(cfg: RoomConfig, now: Instant) -> Self {
        Room {
            cfg,
            members: BTreeMap::new(),
            waiting: VecDeque::new(),
            hands: Vec::new(),
            locked: false,
            ended: None,
            hostless_since: Some(now),
            class_receive: ReceiveMode::All,
            chat: None,
            recording: false,
            poll: None,
            polls: 0,
            breakouts: None,
            breakout_version: 0,
            returning: BTreeMap::new(),
            out: VecDeque::new(),
        }
    }

    // ---- getters

    /// An admitted member.
    pub fn member(&self, peer: PeerId) -> Option<&Member> {
        self.members.get(&peer)
    }

    /// Admitted members, by peer id.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// Raised hands, in order.
    pub fn hands(&self) -> &[PeerId] {
        &self.hands
    }

    /// Waiting peers, in arrival order.
    pub fn waiting(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.waiting.iter().map(|m| m.peer)
    }

    /// Locked.
    pub fn is_locked(&self) -> bool {
        self.locked
    }

    /// Ended (and why).
    pub fn is_ended(&self) -> Option<EndReason> {
        self.ended
    }

    /// Whether `peer` may publish `media` now (the SFU asks before forwarding a track).
    pub fn may_publish(&self, peer: PeerId, media: Media) -> Result<(), RoomError> {
        self.live()?;
        let m = self.members.get(&peer).ok_or(RoomError::NotInRoom)?;
        // An audio-only class carries no camera, the teacher's included; slides still go.
        let audio_only = self.class_receive == ReceiveMode::Audio && media == Media::Video;
        if m.grants.get(media) && !audio_only { Ok(()) } else { Err(RoomError::NotGranted(media)) }
    }

    /// Whether the class is being recorded.
    pub fn is_recording(&self) -> bool {
        self.recording
    }

    /// Whether `by` may act as host now (the room task asks before starting what the
    /// room does not hold, a recording).
    pub fn check_host(&self, by: PeerId) -> Result<(), RoomError> {
        self.host(by)
    }

    /// What the whole class receives at most.
    pub fn class_receive(&self) -> ReceiveMode {
        self.class_receive
    }

    // ---- outputs

    /// The next thing to tell someone.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Room::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.ended.is_some() {
            return None;
        }
        let hostless = self.hostless_since.map(|t| t + self.cfg.host_grace);
        [hostless, self.breakout_deadline()].into_iter().flatten().min()
    }

    // ---- inputs

    /// Time passed: ends the room if its host's grace period is over.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.breakout_timeout(now);
        if let Some(deadline) = self.hostless_since.map(|t| t + self.cfg.host_grace)
            && now >= deadline
            && self.ended.is_none()
        {
            self.end(EndReason::NoHost);
        }
    }

    /// A peer asks to join with the role its room token gives.
    pub fn handle_join(
        &mut self,
        now: Instant,
        peer: PeerId,
        user: &str,
        name: &str,
        role: Role,
    ) -> Result<(), RoomError> {
        self.live()?;
        if self.members.contains_key(&peer) || self.waiting.iter().any(|w| w.peer == peer) {
            return Err(RoomError::AlreadyJoined);
        }
        if self.locked && role != Role::Host {
            return Err(RoomError::Locked);
        }
        if self.members.len() + self.waiting.len() >= self.cfg.capacity && role != Role::Host {
            return Err(RoomError::Full);
        }
        let grants = match role {
            Role::Host => Grants::all(),
            // A breakout group's pupils talk and show themselves.
            Role::Participant if self.cfg.open_floor => Grants { audio: true, video: true, screen: false },
            _ => Grants::default(),
        };
        let m = Member { peer, user: user.to_owned(), name: name.to_owned(), role, grants, hand: false };
        if role == Role::Participant && self.cfg.waiting_room && !self.skips_waiting_room(user, now) {
            self.waiting.push_back(m);
            self.emit(Some(peer), Event::Waiting);
            self.tell_hosts_waiting();
        } else {
            self.admit_member(now, m);
        }
        Ok(())
    }

    /// The host admits a waiting pupil.
    pub fn handle_admit(&mut self, now: Instant, by: PeerId, peer: PeerId) -> Result<(), RoomError> {
        self.host(by)?;
        let i = self.waiting.iter().position(|w| w.peer == peer).ok_or(RoomError::NotInRoom)?;
        if let Some(m) = self.waiting.remove(i) {
            self.admit_member(now, m);
        }
        self.tell_hosts_waiting();
        Ok(())
    }

    /// The host turns a waiting peer away.
    pub fn handle_deny(&mut self, _now: Instant, by: PeerId, peer: PeerId) -> Result<(), RoomError> {
        self.host(by)?;
        let i = self.waiting.iter().position(|w| w.peer == peer).ok_or(RoomError::NotInRoom)?;
        self.waiting.remove(i);
        let (code, reason) = (RefusedCode::NotAdmitted, "the teacher did not admit you".into());
        self.emit(Some(peer), Event::Refused { code, reason });
        self.tell_hosts_waiting();
        Ok(())
    }

    /// A peer leaves (or its connection drops).
    pub fn handle_leave(&mut self, now: Instant, peer: PeerId) -> Result<(), RoomError> {
        if let Some(i) = self.waiting.iter().position(|w| w.peer == peer) {
            self.waiting.remove(i);
            self.tell_hosts_waiting();
            return Ok(());
        }
        self.members.remove(&peer).ok_or(RoomError::NotInRoom)?;
        self.after_departure(now, peer);
        Ok(())
    }

    /// A member raises their hand; it joins the end of the queue.
    pub fn handle_raise_hand(&mut self, _now: Instant, peer: PeerId) -> Result<(), RoomError> {
        self.live()?;
        let m = self.members.get_mut(&peer).ok_or(RoomError::NotInRoom)?;
        if !m.hand {
            m.hand = true;
            self.hands.push(peer);
            self.emit(None, Event::Hand { peer, raised: true });
            self.emit(None, Event::Hands { queue: self.hands.clone() });
        }
        Ok(())
    }

    /// Lowers `peer`'s hand if it is up, telling everyone.
    fn lower(&mut self, peer: PeerId) {
        if let Some(m) = self.members.get_mut(&peer)
            && m.hand
        {
            m.hand = false;
            self.hands.retain(|p| *p != peer);
            self.emit(None, Event::Hand { peer, raised: false });
            self.emit(None, Event::Hands { queue: self.hands.clone() });
        }
    }

    /// The host lowers every raised hand.
    pub fn handle_lower_all_hands(&mut self, _now: Instant, by: PeerId) -> Result<(), RoomError> {
        self.live()?;
        self.host(by)?;
        if self.hands.is_empty() {
            return Ok(());
        }
        for peer in std::mem::take(&mut self.hands) {
            if let Some(m) = self.members.get_mut(&peer) {
                m.hand = false;
            }
            self.emit(None, Event::Hand { peer, raised: false });
        }
        self.emit(None, Event::Hands { queue: Vec::new() });
        Ok(())
    }

    /// A member lowers their hand, or the host lowers someone's.
    pub fn handle_lower_hand(&mut self, _now: Instant, by: PeerId, peer: PeerId) -> Result<(), RoomError> {
        self.live()?;
        if by != peer {
            self.host(by)?;
        }
        self.members.get(&peer).ok_or(RoomError::NotInRoom)?;
        self.lower(peer);
        Ok(())
    }

    /// The host grants or withdraws a kind of publication. Withdrawing audio is muting.
    pub fn handle_grant(
        &mut self,
        _now: Instant,
        by: PeerId,
        peer: PeerId,
        media: Media,
        allow: bool,
    ) -> Result<(), RoomError> {
        self.host(by)?;
        let m = self.members.get_mut(&peer).ok_or(RoomError::NotInRoom)?;
        if m.role != Role::Participant {
            return Err(RoomError::WrongRole);
        }
        if m.grants.get(media) != allow {
            m.grants.set(media, allow);
            let grants = m.grants;
            self.emit(None, Event::Grants { peer, grants });
        }
        // The pupil asked to speak and now may: the hand has done its work.
        if media == Media::Audio && allow {
            self.lower(peer);
        }
        Ok(())
    }

    /// The host mutes every participant (hosts keep their microphones).
    pub fn handle_mute_all(&mut self, _now: Instant, by: PeerId) -> Result<(), RoomError> {
        self.host(by)?;
        let muted: Vec<(PeerId, Grants)> = self
            .members
            .values_mut()
            .filter(|m| m.role == Role::Participant && m.grants.audio)
            .map(|m| {
                m.grants.audio = false;
                (m.peer, m.grants)
            })
            .collect();
        for (peer, grants) in muted {
            self.emit(None, Event::Grants { peer, grants });
        }
        Ok(())
    }

    /// The host removes a participant or observer.
    pub fn handle_remove(&mut self, now: Instant, by: PeerId, peer: PeerId) -> Result<(), RoomError> {
        self.host(by)?;
        let m = self.members.get(&peer).ok_or(RoomError::NotInRoom)?;
        if m.role == Role::Host {
            return Err(RoomError::WrongRole);
        }
        self.members.remove(&peer);
        let (code, reason) = (RefusedCode::Removed, "the teacher removed you from the class".into());
        self.emit(Some(peer), Event::Refused { code, reason });
        self.after_departure(now, peer);
        Ok(())
    }

    /// The host locks or unlocks the room.
    pub fn handle_lock(&mut self, _now: Instant, by: PeerId, locked: bool) -> Result<(), RoomError> {
        self.host(by)?;
        if self.locked != locked {
            self.locked = locked;
            self.emit(None, Event::Locked { locked });
        }
        Ok(())
    }

    /// The host opens a poll (closing, unshown, any poll still open).
    pub fn handle_poll_start(
        &mut self,
        _now: Instant,
        by: PeerId,
        question: &str,
        choices: &[String],
    ) -> Result<(), RoomError> {
        self.live()?;
        self.host(by)?;
        let poll = Poll::new(self.polls + 1, question, choices)?;
        if let Some(old) = self.poll.take() {
            self.emit(None, Event::PollClosed { poll: old.id, counts: None });
        }
        self.polls = poll.id;
        self.emit(None, Event::Poll { poll: poll.id, question: poll.question.clone(), choices: poll.choices.clone() });
        self.poll = Some(poll);
        self.tell_hosts_poll();
        Ok(())
    }

    /// A pupil answers the open poll, once.
    pub fn handle_poll_answer(
        &mut self,
        _now: Instant,
        peer: PeerId,
        poll: u32,
        choice: usize,
    ) -> Result<(), RoomError> {
        self.live()?;
        let m = self.members.get(&peer).ok_or(RoomError::NotInRoom)?;
        if m.role != Role::Participant {
            return Err(RoomError::WrongRole);
        }
        self.poll.as_mut().filter(|p| p.id == poll).ok_or(RoomError::NoPoll)?.answer(peer, choice)?;
        self.tell_hosts_poll();
        Ok(())
    }

    /// The host closes the open poll, showing its results to the class or not.
    pub fn handle_poll_end(&mut self, _now: Instant, by: PeerId, poll: u32, show: bool) -> Result<(), RoomError> {
        self.host(by)?;
        if self.poll.as_ref().is_none_or(|p| p.id != poll) {
            return Err(RoomError::NoPoll);
        }
        if let Some(p) = self.poll.take() {
            let counts = show.then(|| p.counts());
            self.emit(None, Event::PollClosed { poll: p.id, counts });
        }
        Ok(())
    }

    /// The open poll, if any.
    pub fn poll(&self) -> Option<&Poll> {
        self.poll.as_ref()
    }

    fn tell_hosts_poll(&mut self) {
        let Some(p) = &self.poll else { return };
        let voters = self.members.values().filter(|m| m.role == Role::Participant).count() as u32;
        let event = Event::PollResults { poll: p.id, counts: p.counts(), voters };
        self.tell_hosts(event);
    }

    /// Sends `event` to every host.
    fn tell_hosts(&mut self, event: Event) {
        let hosts: Vec<PeerId> = self.members.values().filter(|m| m.role == Role::Host).map(|m| m.peer).collect();
        for h in hosts {
            self.emit(Some(h), event.clone());
        }
    }

    /// The host sets what the whole class receives at most; everyone is told.
    pub fn handle_class_receive(&mut self, _now: Instant, by: PeerId, mode: ReceiveMode) -> Result<(), RoomError> {
        self.host(by)?;
        if self.class_receive != mode {
            self.class_receive = mode;
            self.emit(None, Event::ClassReceive { mode });
        }
        Ok(())
    }

    /// The host names the class chat's thread; everyone is told (newcomers at admission).
    pub fn handle_chat(&mut self, _now: Instant, by: PeerId, thread: u64) -> Result<(), RoomError> {
        self.host(by)?;
        if self.chat != Some(thread) {
            self.chat = Some(thread);
            self.emit(None, Event::Chat { thread });
        }
        Ok(())
    }

    /// The host starts or stops the recording; everyone is told (newcomers at
    /// admission): a recorded pupil must know.
    pub fn handle_record(&mut self, _now: Instant, by: PeerId, on: bool) -> Result<(), RoomError> {
        self.host(by)?;
        if self.recording != on {
            self.recording = on;
            self.emit(None, Event::Recording { on });
        }
        Ok(())
    }

    /// The host ends the class for everyone.
    pub fn handle_end(&mut self, _now: Instant, by: PeerId) -> Result<(), RoomError> {
        self.host(by)?;
        self.end(EndReason::Host);
        Ok(())
    }

    // ---- internals

    fn live(&self) -> Result<(), RoomError> {
        if self.ended.is_some() { Err(RoomError::Ended) } else { Ok(()) }
    }

    fn host(&self, by: PeerId) -> Result<(), RoomError> {
        self.live()?;
        match self.members.get(&by) {
            Some(m) if m.role == Role::Host => Ok(()),
            Some(_) => Err(RoomError::NotHost),
            None => Err(RoomError::NotInRoom),
        }
    }

    fn emit(&mut self, to: Option<PeerId>, event: Event) {
        self.out.push_back(Output { to, event });
    }

    fn admit_member(&mut self, now: Instant, m: Member) {
        let (peer, user) = (m.peer, m.user.clone());
        if m.role == Role::Host {
            self.hostless_since = None;
        }
        self.emit(None, Event::Joined { member: m.clone() });
        self.members.insert(peer, m);
        let members = self.members.values().cloned().collect();
        self.emit(Some(peer), Event::Admitted { members });
        if self.class_receive != ReceiveMode::All {
            self.emit(Some(peer), Event::ClassReceive { mode: self.class_receive });
        }
        if self.recording {
            self.emit(Some(peer), Event::Recording { on: true });
        }
        if let Some(thread) = self.chat {
            self.emit(Some(peer), Event::Chat { thread });
        }
        if self.members.get(&peer).is_some_and(|m| m.role == Role::Host) && !self.waiting.is_empty() {
            let waiting = self.waiting.iter().map(|w| (w.peer, w.name.clone())).collect();
            self.emit(Some(peer), Event::WaitingList { waiting });
        }
        if let Some(p) = &self.poll {
            let event = Event::Poll { poll: p.id, question: p.question.clone(), choices: p.choices.clone() };
            self.emit(Some(peer), event);
            // One more voter (a pupil), or a host who wants the standing.
            self.tell_hosts_poll();
        }
        self.tell_newcomer_breakouts(peer, &user, now);
    }

    fn tell_hosts_waiting(&mut self) {
        let waiting = self.waiting.iter().map(|w| (w.peer, w.name.clone())).collect();
        self.tell_hosts(Event::WaitingList { waiting });
    }

    fn after_departure(&mut self, now: Instant, peer: PeerId) {
        if self.hands.contains(&peer) {
            self.hands.retain(|p| *p != peer);
            self.emit(None, Event::Hands { queue: self.hands.clone() });
        }
        self.emit(None, Event::Left { peer });
        if self.ended.is_none() && self.hostless_since.is_none() && !self.members.values().any(|m| m.role == Role::Host)
        {
            self.hostless_since = Some(now);
        }
    }

    fn end(&mut self, reason: EndReason) {
        if self.ended.is_some() {
            return;
        }
        self.ended = Some(reason);
        self.emit(None, Event::Ended { reason });
        for w in std::mem::take(&mut self.waiting) {
            self.emit(Some(w.peer), Event::Ended { reason });
        }
        self.poll = None;
        // The queue and the members' flags go together (found by the property test).
        self.hands.clear();
        for m in self.members.values_mut() {
            m.hand = false;
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // one real instant as the origin of simulated time
mod tests {
    use super::*;
    use std::time::Duration;

    pub(super) const T: u64 = 1; // teacher
    const S: u64 = 9; // staff observer

    fn room(capacity: usize) -> (Room, Instant) {
        let now = Instant::now();
        let cfg = RoomConfig { capacity, host_grace: Duration::from_secs(60), waiting_room: true, open_floor: false };
        (Room::new(cfg, now), now)
    }

    pub(super) fn drain(r: &mut Room) -> Vec<Output> {
        std::iter::from_fn(|| r.poll_output()).collect()
    }

    /// A room with the teacher and pupils 2..=n admitted.
    pub(super) fn class(n: u64) -> (Room, Instant) {
        let (mut r, now) = room(40);
        r.handle_join(now, T, "t01", "Mme Colin", Role::Host).expect("host");
        for p in 2..=n {
            r.handle_join(now, p, &format!("e{p:03}"), "élève", Role::Participant).expect("pupil");
            r.handle_admit(now, T, p).expect("admit");
        }
        drain(&mut r);
        (r, now)
    }

    #[test]
    fn pupils_wait_then_join_muted_without_camera() {
        let (mut r, now) = room(40);
        r.handle_join(now, T, "t01", "Mme Colin", Role::Host).expect("host");
        assert!(drain(&mut r).iter().any(|o| o.to == Some(T) && matches!(o.event, Event::Admitted { .. })));
        r.handle_join(now, 2, "e001", "Léa", Role::Participant).expect("pupil");
        let out = drain(&mut r);
        assert!(out.contains(&Output { to: Some(2), event: Event::Waiting }));
        assert!(out.contains(&Output { to: Some(T), event: Event::WaitingList { waiting: vec![(2, "Léa".into())] } }));
        assert!(r.member(2).is_none(), "not in before admission");
        assert_eq!(r.may_publish(2, Media::Audio), Err(RoomError::NotInRoom));
        r.handle_admit(now, T, 2).expect("admit");
        let out = drain(&mut r);
        assert!(out.iter().any(|o| o.to == Some(2) && matches!(o.event, Event::Admitted { .. })));
        assert!(out.iter().any(|o| o.to.is_none() && matches!(&o.event, Event::Joined { member } if member.peer == 2)));
        assert_eq!(r.member(2).map(|m| m.grants), Some(Grants::default()), "muted, camera off, no screen");
        assert_eq!(r.may_publish(T, Media::Screen), Ok(()), "the teacher publishes anything");
        // Staff observe without waiting and never publish.
        r.handle_join(now, S, "s01", "CPE", Role::Observer).expect("observer");
        assert!(r.member(S).is_some());
        assert_eq!(r.handle_grant(now, T, S, Media::Audio, true), Err(RoomError::WrongRole));
    }

    #[test]
    fn refused_actions_change_nothing() {
        let (mut r, now) = class(3);
        r.handle_join(now, S, "s01", "CPE", Role::Observer).expect("observer");
        drain(&mut r);
        let cases: Vec<(&str, Result<(), RoomError>, RoomError)> = vec![
            ("pupil admits", r.clone_try(|r| r.handle_admit(now, 2, 3)), RoomError::NotHost),
            (
                "pupil mutes a classmate",
                r.clone_try(|r| r.handle_grant(now, 2, 3, Media::Audio, false)),
                RoomError::NotHost,
            ),
            ("pupil mutes all", r.clone_try(|r| r.handle_mute_all(now, 2)), RoomError::NotHost),
            ("pupil removes", r.clone_try(|r| r.handle_remove(now, 2, 3)), RoomError::NotHost),
            ("pupil locks", r.clone_try(|r| r.handle_lock(now, 2, true)), RoomError::NotHost),
            ("pupil ends", r.clone_try(|r| r.handle_end(now, 2)), RoomError::NotHost),
            ("observer ends", r.clone_try(|r| r.handle_end(now, S)), RoomError::NotHost),
            ("pupil lowers another's hand", r.clone_try(|r| r.handle_lower_hand(now, 2, 3)), RoomError::NotHost),
            ("removing the teacher", r.clone_try(|r| r.handle_remove(now, T, T)), RoomError::WrongRole),
            (
                "granting the teacher",
                r.clone_try(|r| r.handle_grant(now, T, T, Media::Video, false)),
                RoomError::WrongRole,
            ),
            (
                "joining twice",
                r.clone_try(|r| r.handle_join(now, 2, "e002", "x", Role::Participant)),
                RoomError::AlreadyJoined,
            ),
            ("admitting someone not waiting", r.clone_try(|r| r.handle_admit(now, T, 42)), RoomError::NotInRoom),
            ("a stranger raises a hand", r.clone_try(|r| r.handle_raise_hand(now, 42)), RoomError::NotInRoom),
            ("a stranger acts as host", r.clone_try(|r| r.handle_lock(now, 42, true)), RoomError::NotInRoom),
            ("a pupil publishes without grant", r.may_publish(2, Media::Video), RoomError::NotGranted(Media::Video)),
            ("an observer publishes", r.may_publish(S, Media::Audio), RoomError::NotGranted(Media::Audio)),
        ];
        for (what, got, want) in cases {
            assert_eq!(got, Err(want), "{what}");
        }
        assert!(drain(&mut r).is_empty(), "no refused action produced output");
        assert_eq!(r.members().count(), 4);
    }

    #[test]
    fn hands_form_an_ordered_queue() {
        let (mut r, now) = class(5);
        for p in [4, 2, 5] {
            r.handle_raise_hand(now, p).expect("raise");
        }
        r.handle_raise_hand(now, 2).expect("raising twice keeps the place");
        assert_eq!(r.hands(), &[4, 2, 5]);
        r.handle_lower_hand(now, 2, 2).expect("own hand");
        r.handle_lower_hand(now, T, 4).expect("the teacher answers");
        assert_eq!(r.hands(), &[5]);
        r.handle_raise_hand(now, 3).expect("raise");
        r.handle_leave(now, 5).expect("leave");
        assert_eq!(r.hands(), &[3], "leaving takes the hand down");
        let last = drain(&mut r).into_iter().rfind(|o| matches!(o.event, Event::Hands { .. }));
        assert_eq!(last.map(|o| o.event), Some(Event::Hands { queue: vec![3] }));
    }

    /// Issue 15: a hand is an event of its own (the member list shows it live), the
    /// teacher lowers them all at once, and giving a pupil the microphone lowers theirs.
    #[test]
    fn hands_are_told_one_by_one_lowered_all_at_once_and_by_a_microphone() {
        let (mut r, now) = class(5);
        drain(&mut r);
        r.handle_raise_hand(now, 2).expect("raise");
        let out = drain(&mut r);
        assert_eq!(out[0], Output { to: None, event: Event::Hand { peer: 2, raised: true } });
        assert_eq!(out[1], Output { to: None, event: Event::Hands { queue: vec![2] } });
        r.handle_raise_hand(now, 3).expect("raise");
        r.handle_raise_hand(now, 4).expect("raise");
        drain(&mut r);
        r.handle_grant(now, T, 3, Media::Audio, true).expect("mic");
        assert_eq!(r.hands(), &[2, 4], "the pupil given the floor lowers their hand");
        let out = drain(&mut r);
        assert!(out.contains(&Output { to: None, event: Event::Hand { peer: 3, raised: false } }));
        assert_eq!(r.handle_lower_all_hands(now, 2), Err(RoomError::NotHost));
        r.handle_lower_all_hands(now, T).expect("lower all");
        assert!(r.hands().is_empty() && r.members().all(|m| !m.hand));
        let out = drain(&mut r);
        assert_eq!(
            out.iter().map(|o| o.event.clone()).collect::<Vec<_>>(),
            vec![
                Event::Hand { peer: 2, raised: false },
                Event::Hand { peer: 4, raised: false },
                Event::Hands { queue: vec![] }
            ]
        );
        r.handle_lower_all_hands(now, T).expect("nothing to lower");
        assert!(drain(&mut r).is_empty(), "no hand, no event");
    }

    /// Issue 15: a refusal at the door and a removal say which they are (both close
    /// with 4003, the code as the close reason; a locked room refuses at join with
    /// `room_locked`).
    #[test]
    fn refusals_say_whether_at_the_door_or_a_removal() {
        let (mut r, now) = room(4);
        r.handle_join(now, T, "t", "Prof", Role::Host).expect("host");
        r.handle_join(now, 2, "u2", "Élève", Role::Participant).expect("waits");
        r.handle_join(now, 3, "u3", "Élève", Role::Participant).expect("waits");
        r.handle_admit(now, T, 3).expect("admit");
        drain(&mut r);
        r.handle_deny(now, T, 2).expect("deny");
        r.handle_remove(now, T, 3).expect("remove");
        let refused: Vec<(Option<PeerId>, RefusedCode)> = drain(&mut r)
            .into_iter()
            .filter_map(|o| match o.event {
                Event::Refused { code, .. } => Some((o.to, code)),
                _ => None,
            })
            .collect();
        assert_eq!(refused, vec![(Some(2), RefusedCode::NotAdmitted), (Some(3), RefusedCode::Removed)]);
        assert_eq!(
            serde_json::to_value(Event::Refused { code: RefusedCode::Removed, reason: "x".into() }).expect("json"),
            serde_json::json!({"type": "refused", "code": "removed", "reason": "x"})
        );
        assert_eq!(RefusedCode::NotAdmitted.as_str(), "not_admitted");
    }

    /// Issue 15: a poll answered once per pupil, its standing to the teacher at each
    /// answer, its results shown to the class or not; bad polls and answers refused.
    #[test]
    fn a_poll_is_answered_once_per_pupil_and_its_results_shown_when_the_host_says() {
        let (mut r, now) = class(5);
        drain(&mut r);
        let choices: Vec<String> = ["Paris", "Lyon", "Marseille"].map(String::from).to_vec();
        assert_eq!(r.handle_poll_start(now, 2, "Capitale ?", &choices), Err(RoomError::NotHost));
        assert_eq!(r.handle_poll_start(now, T, " ", &choices), Err(RoomError::BadPoll));
        assert_eq!(r.handle_poll_start(now, T, "Q", &choices[..1]), Err(RoomError::BadPoll), "one choice");
        let long = "x".repeat(101);
        assert_eq!(r.handle_poll_start(now, T, "Q", &[long, "b".into()]), Err(RoomError::BadPoll));
        assert!(drain(&mut r).is_empty(), "refused polls tell nobody");
        r.handle_poll_start(now, T, "Capitale de la France ?", &choices).expect("poll");
        let out = drain(&mut r);
        assert!(out.contains(&Output {
            to: None,
            event: Event::Poll { poll: 1, question: "Capitale de la France ?".into(), choices: choices.clone() }
        }));
        assert!(out.contains(&Output {
            to: Some(T),
            event: Event::PollResults { poll: 1, counts: vec![0, 0, 0], voters: 4 }
        }));
        r.handle_poll_answer(now, 2, 1, 0).expect("answer");
        r.handle_poll_answer(now, 3, 1, 0).expect("answer");
        assert_eq!(r.handle_poll_answer(now, 2, 1, 1), Err(RoomError::AlreadyAnswered));
        assert_eq!(r.handle_poll_answer(now, 4, 1, 3), Err(RoomError::NoPoll), "no such choice");
        assert_eq!(r.handle_poll_answer(now, 4, 9, 0), Err(RoomError::NoPoll), "no such poll");
        assert_eq!(r.handle_poll_answer(now, T, 1, 0), Err(RoomError::WrongRole), "the teacher asks, does not answer");
        r.handle_poll_answer(now, 4, 1, 2).expect("answer");
        let last = drain(&mut r).into_iter().rfind(|o| matches!(o.event, Event::PollResults { .. }));
        assert_eq!(
            last,
            Some(Output { to: Some(T), event: Event::PollResults { poll: 1, counts: vec![2, 0, 1], voters: 4 } })
        );
        assert_eq!(r.handle_poll_end(now, 2, 1, true), Err(RoomError::NotHost));
        r.handle_poll_end(now, T, 1, true).expect("show");
        assert_eq!(
            drain(&mut r),
            vec![Output { to: None, event: Event::PollClosed { poll: 1, counts: Some(vec![2, 0, 1]) } }]
        );
        assert_eq!(r.handle_poll_answer(now, 5, 1, 0), Err(RoomError::NoPoll), "closed");
        // A second poll replaces one left open, without showing it.
        r.handle_poll_start(now, T, "A ?", &choices[..2]).expect("poll 2");
        r.handle_poll_start(now, T, "B ?", &choices[..2]).expect("poll 3");
        let out = drain(&mut r);
        assert!(out.contains(&Output { to: None, event: Event::PollClosed { poll: 2, counts: None } }));
        assert_eq!(r.poll().map(|p| p.id), Some(3));
        assert_eq!(
            serde_json::to_value(Event::PollClosed { poll: 3, counts: None }).expect("json"),
            serde_json::json!({"type": "poll_closed", "poll": 3, "counts": null})
        );
    }

    #[test]
    fn grants_mute_and_mute_all() {
        let (mut r, now) = class(4);
        r.handle_grant(now, T, 2, Media::Audio, true).expect("mic");
        r.handle_grant(now, T, 3, Media::Audio, true).expect("mic");
        r.handle_grant(now, T, 3, Media::Screen, true).expect("screen");
        assert_eq!(r.may_publish(2, Media::Audio), Ok(()));
        assert_eq!(r.may_publish(3, Media::Screen), Ok(()));
        drain(&mut r);
        r.handle_grant(now, T, 2, Media::Audio, false).expect("mute one");
        assert_eq!(r.may_publish(2, Media::Audio), Err(RoomError::NotGranted(Media::Audio)));
        let out = drain(&mut r);
        assert_eq!(out, vec![Output { to: None, event: Event::Grants { peer: 2, grants: Grants::default() } }]);
        r.handle_mute_all(now, T).expect("mute all");
        assert_eq!(r.may_publish(3, Media::Audio), Err(RoomError::NotGranted(Media::Audio)));
        assert_eq!(r.may_publish(3, Media::Screen), Ok(()), "mute all leaves the screen");
        assert_eq!(r.may_publish(T, Media::Audio), Ok(()), "the teacher keeps the microphone");
        assert_eq!(drain(&mut r).len(), 1, "only the one still unmuted is announced");
    }

    #[test]
    fn remove_lock_and_capacity() {
        let (mut r, now) = room(4);
        r.handle_join(now, T, "t01", "Mme Colin", Role::Host).expect("host");
        r.handle_join(now, 2, "e001", "a", Role::Participant).expect("waits");
        r.handle_join(now, 3, "e002", "b", Role::Participant).expect("waits");
        r.handle_join(now, 4, "e003", "c", Role::Participant).expect("waits");
        assert_eq!(
            r.handle_join(now, 5, "e004", "d", Role::Participant),
            Err(RoomError::Full),
            "the waiting room counts"
        );
        r.handle_deny(now, T, 4).expect("deny");
        r.handle_admit(now, T, 2).expect("admit");
        drain(&mut r);
        r.handle_remove(now, T, 2).expect("remove");
        let out = drain(&mut r);
        assert!(out.iter().any(|o| o.to == Some(2) && matches!(o.event, Event::Refused { .. })));
        assert!(out.contains(&Output { to: None, event: Event::Left { peer: 2 } }));
        r.handle_lock(now, T, true).expect("lock");
        assert_eq!(r.handle_join(now, 6, "e005", "e", Role::Participant), Err(RoomError::Locked));
        assert_eq!(r.handle_join(now, 7, "s01", "CPE", Role::Observer), Err(RoomError::Locked));
        r.handle_join(now, 8, "t02", "co-teacher", Role::Host).expect("hosts still get in");
        r.handle_lock(now, T, false).expect("unlock");
        r.handle_join(now, 6, "e005", "e", Role::Participant).expect("in again");
    }

    #[test]
    fn the_host_ends_the_class_for_everyone() {
        let (mut r, now) = class(3);
        r.handle_join(now, 7, "e007", "late", Role::Participant).expect("waits");
        drain(&mut r);
        r.handle_end(now, T).expect("end");
        let out = drain(&mut r);
        assert!(out.contains(&Output { to: None, event: Event::Ended { reason: EndReason::Host } }));
        assert!(
            out.contains(&Output { to: Some(7), event: Event::Ended { reason: EndReason::Host } }),
            "the waiting room learns too"
        );
        assert_eq!(r.handle_raise_hand(now, 2), Err(RoomError::Ended));
        assert_eq!(r.handle_join(now, 8, "e008", "x", Role::Participant), Err(RoomError::Ended));
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn the_chat_thread_is_set_by_the_host_and_told_to_everyone_and_newcomers() {
        let (mut r, now) = class(3);
        assert_eq!(r.handle_chat(now, 2, 7), Err(RoomError::NotHost));
        drain(&mut r);
        r.handle_chat(now, T, 7).expect("chat");
        assert_eq!(drain(&mut r), vec![Output { to: None, event: Event::Chat { thread: 7 } }]);
        r.handle_chat(now, T, 7).expect("again: nothing new");
        assert!(drain(&mut r).is_empty());
        r.handle_join(now, 9, "e009", "late", Role::Participant).expect("waits");
        r.handle_admit(now, T, 9).expect("admit");
        let out = drain(&mut r);
        assert!(out.contains(&Output { to: Some(9), event: Event::Chat { thread: 7 } }), "{out:?}");
        r.handle_end(now, T).expect("end");
        assert_eq!(r.handle_chat(now, T, 8), Err(RoomError::Ended));
    }

    #[test]
    fn everyone_knows_the_class_is_recorded_newcomers_too() {
        let (mut r, now) = class(3);
        assert_eq!(r.handle_record(now, 2, true), Err(RoomError::NotHost), "a pupil records nothing");
        assert!(!r.is_recording());
        drain(&mut r);
        r.handle_record(now, T, true).expect("record");
        assert_eq!(drain(&mut r), vec![Output { to: None, event: Event::Recording { on: true } }]);
        r.handle_record(now, T, true).expect("again: nothing new");
        assert!(drain(&mut r).is_empty());
        r.handle_join(now, 9, "e009", "late", Role::Participant).expect("waits");
        assert!(!drain(&mut r).iter().any(|o| o.event == Event::Recording { on: true }), "not told while waiting");
        r.handle_admit(now, T, 9).expect("admit");
        assert!(drain(&mut r).contains(&Output { to: Some(9), event: Event::Recording { on: true } }));
        r.handle_record(now, T, false).expect("stop");
        assert_eq!(drain(&mut r), vec![Output { to: None, event: Event::Recording { on: false } }]);
        r.handle_join(now, 10, "e010", "later", Role::Participant).expect("waits");
        r.handle_admit(now, T, 10).expect("admit");
        assert!(!drain(&mut r).iter().any(|o| matches!(o.event, Event::Recording { .. })), "nothing to tell");
    }

    #[test]
    fn an_audio_only_class_has_no_cameras_and_newcomers_are_told() {
        let (mut r, now) = class(3);
        assert_eq!(r.handle_class_receive(now, 2, ReceiveMode::Audio), Err(RoomError::NotHost));
        assert_eq!(r.class_receive(), ReceiveMode::All);
        r.handle_grant(now, T, 2, Media::Video, true).expect("grant");
        drain(&mut r);
        r.handle_class_receive(now, T, ReceiveMode::Audio).expect("audio only");
        let mode = Event::ClassReceive { mode: ReceiveMode::Audio };
        assert_eq!(drain(&mut r), vec![Output { to: None, event: mode.clone() }]);
        r.handle_class_receive(now, T, ReceiveMode::Audio).expect("again: nothing new");
        assert!(drain(&mut r).is_empty());
        // No camera, granted or not, the teacher's included; slides and voices go on.
        assert_eq!(r.may_publish(2, Media::Video), Err(RoomError::NotGranted(Media::Video)));
        assert_eq!(r.may_publish(T, Media::Video), Err(RoomError::NotGranted(Media::Video)));
        assert_eq!(r.may_publish(T, Media::Screen), Ok(()));
        assert_eq!(r.may_publish(T, Media::Audio), Ok(()));
        // A pupil admitted now learns the mode with the members.
        r.handle_join(now, 9, "e009", "late", Role::Participant).expect("waits");
        r.handle_admit(now, T, 9).expect("admit");
        let out = drain(&mut r);
        assert!(out.contains(&Output { to: Some(9), event: mode }), "{out:?}");
        r.handle_class_receive(now, T, ReceiveMode::All).expect("back to video");
        assert_eq!(r.may_publish(2, Media::Video), Ok(()), "the grant holds again");
    }

    #[test]
    fn the_room_outlives_its_host_by_the_grace_period_only() {
        let (mut r, t0) = room(40);
        // Created without a host: it waits for one for the grace period.
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(60)));
        r.handle_join(t0, T, "t01", "Mme Colin", Role::Host).expect("host");
        assert_eq!(r.poll_timeout(), None);
        r.handle_join(t0, 2, "e001", "a", Role::Participant).expect("waits");
        r.handle_admit(t0, T, 2).expect("admit");
        let t1 = t0 + Duration::from_secs(600);
        r.handle_leave(t1, T).expect("the teacher's network drops");
        assert_eq!(r.poll_timeout(), Some(t1 + Duration::from_secs(60)));
        r.handle_timeout(t1 + Duration::from_secs(59));
        assert_eq!(r.is_ended(), None);
        r.handle_join(t1 + Duration::from_secs(30), 11, "t01", "Mme Colin", Role::Host).expect("back");
        r.handle_timeout(t1 + Duration::from_secs(120));
        assert_eq!(r.is_ended(), None, "the host came back in time");
        let t2 = t1 + Duration::from_secs(300);
        r.handle_leave(t2, 11).expect("leaves for good");
        drain(&mut r);
        r.handle_timeout(t2 + Duration::from_secs(60));
        assert_eq!(r.is_ended(), Some(EndReason::NoHost));
        assert_eq!(drain(&mut r), vec![Output { to: None, event: Event::Ended { reason: EndReason::NoHost } }]);
    }

    impl Room {
        /// Runs an input on this room and checks a refusal left it unchanged.
        fn clone_try(&mut self, f: impl FnOnce(&mut Room) -> Result<(), RoomError>) -> Result<(), RoomError> {
            let before = format!("{:?}", (&self.members, &self.waiting, &self.hands, self.locked, self.ended));
            let r = f(self);
            if r.is_err() {
                let after = format!("{:?}", (&self.members, &self.waiting, &self.hands, self.locked, self.ended));
                assert_eq!(before, after, "a refused input changed the room");
            }
            r
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // one real instant as the origin of simulated time
mod props {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    /// Peer 1 holds the class's host token, 2 to 6 participant tokens, 7 and 8 observer
    /// tokens (as the gateway issues them).
    fn role_of(p: PeerId) -> Role {
        match p {
            1 => Role::Host,
            7 | 8 => Role::Observer,
            _ => Role::Participant,
        }
    }

    #[derive(Clone, Debug)]
    enum Input {
        Join(PeerId),
        Admit(PeerId, PeerId),
        Deny(PeerId, PeerId),
        Leave(PeerId),
        Raise(PeerId),
        Lower(PeerId, PeerId),
        Grant(PeerId, PeerId, Media, bool),
        MuteAll(PeerId),
        LowerAll(PeerId),
        PollStart(PeerId, usize),
        PollAnswer(PeerId, u32, usize),
        PollEnd(PeerId, u32, bool),
        Remove(PeerId, PeerId),
        Lock(PeerId, bool),
        End(PeerId),
        Wait(u64),
    }

    fn input() -> impl Strategy<Value = Input> {
        let p = || 1u64..=8;
        let media = prop_oneof![Just(Media::Audio), Just(Media::Video), Just(Media::Screen)];
        prop_oneof![
            6 => p().prop_map(Input::Join),
            4 => (p(), p()).prop_map(|(a, b)| Input::Admit(a, b)),
            1 => (p(), p()).prop_map(|(a, b)| Input::Deny(a, b)),
            2 => p().prop_map(Input::Leave),
            3 => p().prop_map(Input::Raise),
            2 => (p(), p()).prop_map(|(a, b)| Input::Lower(a, b)),
            3 => (p(), p(), media, any::<bool>()).prop_map(|(a, b, m, on)| Input::Grant(a, b, m, on)),
            1 => p().prop_map(Input::MuteAll),
            1 => p().prop_map(Input::LowerAll),
            1 => (p(), 0usize..10).prop_map(|(a, n)| Input::PollStart(a, n)),
            3 => (p(), 0u32..4, 0usize..4).prop_map(|(a, poll, c)| Input::PollAnswer(a, poll, c)),
            1 => (p(), 0u32..4, any::<bool>()).prop_map(|(a, poll, show)| Input::PollEnd(a, poll, show)),
            1 => (p(), p()).prop_map(|(a, b)| Input::Remove(a, b)),
            1 => (p(), any::<bool>()).prop_map(|(a, l)| Input::Lock(a, l)),
            1 => p().prop_map(Input::End),
            1 => (0u64..200).prop_map(Input::Wait),
        ]
    }

    type Snapshot = (Vec<Member>, Vec<PeerId>, Vec<PeerId>, bool, Option<EndReason>, Option<Poll>);

    fn snapshot(r: &Room) -> Snapshot {
        (
            r.members().cloned().collect(),
            r.waiting().collect(),
            r.hands().to_vec(),
            r.is_locked(),
            r.is_ended(),
            r.poll().cloned(),
        )
    }

    fn apply(r: &mut Room, now: Instant, i: &Input) -> Result<(), RoomError> {
        match *i {
            Input::Join(p) => r.handle_join(now, p, &format!("u{p}"), "Élève", role_of(p)),
            Input::Admit(by, p) => r.handle_admit(now, by, p),
            Input::Deny(by, p) => r.handle_deny(now, by, p),
            Input::Leave(p) => r.handle_leave(now, p),
            Input::Raise(p) => r.handle_raise_hand(now, p),
            Input::Lower(by, p) => r.handle_lower_hand(now, by, p),
            Input::Grant(by, p, m, on) => r.handle_grant(now, by, p, m, on),
            Input::MuteAll(by) => r.handle_mute_all(now, by),
            Input::LowerAll(by) => r.handle_lower_all_hands(now, by),
            Input::PollStart(by, n) => {
                let choices: Vec<String> = (0..n).map(|i| format!("choix {i}")).collect();
                r.handle_poll_start(now, by, "Question ?", &choices)
            }
            Input::PollAnswer(p, poll, c) => r.handle_poll_answer(now, p, poll, c),
            Input::PollEnd(by, poll, show) => r.handle_poll_end(now, by, poll, show),
            Input::Remove(by, p) => r.handle_remove(now, by, p),
            Input::Lock(by, l) => r.handle_lock(now, by, l),
            Input::End(by) => r.handle_end(now, by),
            Input::Wait(_) => {
                r.handle_timeout(now);
                Ok(())
            }
        }
    }

    fn check(r: &Room, capacity: usize) -> Result<(), TestCaseError> {
        let members: Vec<&Member> = r.members().collect();
        let hosts = members.iter().filter(|m| m.role == Role::Host).count();
        prop_assert!(hosts <= 1, "one host at most");
        for m in &members {
            prop_assert_eq!(m.role, role_of(m.peer), "a member keeps the role of its token");
            if m.role == Role::Host {
                prop_assert_eq!(m.grants, Grants::all());
            }
            if m.role == Role::Observer {
                prop_assert_eq!(m.grants, Grants::default(), "observers never publish");
            }
            prop_assert_eq!(m.hand, r.hands().contains(&m.peer), "hand flag and queue agree");
        }
        let mut hands = r.hands().to_vec();
        hands.sort_unstable();
        hands.dedup();
        prop_assert_eq!(hands.len(), r.hands().len(), "no duplicate in the hands queue");
        for h in r.hands() {
            prop_assert!(r.member(*h).is_some(), "only admitted members raise hands");
        }
        let waiting: Vec<PeerId> = r.waiting().collect();
        for w in &waiting {
            prop_assert_eq!(role_of(*w), Role::Participant, "only pupils wait");
            prop_assert!(r.member(*w).is_none(), "waiting or admitted, not both");
            for media in [Media::Audio, Media::Video, Media::Screen] {
                prop_assert!(r.may_publish(*w, media).is_err(), "grants only for admitted members");
            }
        }
        let non_hosts = members.len() - hosts + waiting.len();
        prop_assert!(non_hosts <= capacity, "capacity holds for everyone but the host");
        if let Some(p) = r.poll() {
            prop_assert!(r.is_ended().is_none(), "an ended class has no open poll");
            for (&voter, &choice) in &p.answers {
                prop_assert!(choice < p.choices.len(), "answers name a choice");
                prop_assert!(role_of(voter) == Role::Participant, "only pupils answer");
            }
        }
        Ok(())
    }

    proptest! {
        /// Any sequence of inputs keeps the room's invariants, and a refused input
        /// changes nothing.
        #[test]
        fn any_sequence_of_inputs_keeps_the_invariants(inputs in proptest::collection::vec(input(), 1..300)) {
            let capacity = 4;
            let cfg = RoomConfig { capacity, host_grace: Duration::from_secs(30), waiting_room: true, open_floor: false };
            let mut now = Instant::now();
            let mut r = Room::new(cfg, now);
            let mut was_ended = false;
            for i in &inputs {
                if let Input::Wait(s) = i {
                    now += Duration::from_secs(*s);
                }
                let before = snapshot(&r);
                if apply(&mut r, now, i).is_err() {
                    prop_assert_eq!(&before, &snapshot(&r), "a refused {:?} changed the room", i);
                    prop_assert!(r.poll_output().is_none(), "a refused {:?} told someone something", i);
                }
                while r.poll_output().is_some() {}
                check(&r, capacity)?;
                prop_assert!(!was_ended || r.is_ended().is_some(), "an ended class stays ended");
                was_ended = r.is_ended().is_some();
            }
        }
    }
}

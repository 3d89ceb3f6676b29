//! Each channel's events leave this node in seq order, whichever node stored them.
//!
//! Events of one channel written on several gateways reach a node through Redis in each
//! writer's order, not in seq order; and while Redis is down (or before this node notices)
//! events are not relayed at all. The [`Sequencer`] sits between the bus and the hub: an
//! event whose seq is the next one expected is delivered at once; a later one is held, and
//! if the gap is not filled within the window the missing seqs are read from the store
//! (the store is the truth: every published event is durable before it is published).
//! After an outage every channel is caught up from the store the same way.
//!
//! Pure: time is an input, and what to read from the store is an output ([`Fill`]); the
//! node ([`crate::hub::Node`]) does the reading and feeds the result back.
//!
//! Never loses: an event is dropped only when its seq was already delivered by this node
//! (a duplicate, such as the live copy of an event read from the store). An event older
//! than the first this node delivered for the channel (it arrived late, just after the
//! channel became active here) is delivered late rather than dropped.

use preau_proto::{ChannelId, Seq, SharedFrame};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long a later event waits for the ones before it before they are read from the store.
pub const WINDOW: Duration = Duration::from_millis(150);
/// Events held for one channel beyond which the gap is read from the store at once.
const MAX_HELD: usize = 4096;

/// Read from the store the entries of `channel` after `after`, then call
/// [`Sequencer::filled`] with them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fill {
    /// The channel.
    pub channel: ChannelId,
    /// Entries after this seq.
    pub after: Seq,
}

#[derive(Default)]
struct Track {
    /// The first seq delivered live for the channel on this node.
    first: Option<Seq>,
    /// The next seq to deliver.
    next: Seq,
    /// Later events waiting for the gap before them, with their arrival.
    held: BTreeMap<Seq, (Arc<SharedFrame>, Instant)>,
    /// Since when the oldest held event waits.
    held_since: Option<Instant>,
    /// A fill is under way.
    filling: bool,
}

/// The order of every channel's events on one node (one shard of them).
#[derive(Default)]
pub struct Sequencer {
    tracks: HashMap<ChannelId, Track>,
    /// How long each event delivered since the last [`Sequencer::take_waits`] was held
    /// (zero when delivered on arrival): the latency order repair adds.
    waits: Vec<Duration>,
}

impl Sequencer {
    /// An event of `channel` with `seq` arrived: the frames to deliver now, in order,
    /// are appended to `out`; the returned fill, if any, must be read from the store.
    pub fn event(
        &mut self,
        channel: &ChannelId,
        seq: Seq,
        frame: Arc<SharedFrame>,
        now: Instant,
        out: &mut Vec<Arc<SharedFrame>>,
    ) -> Option<Fill> {
        let t = self.tracks.entry(channel.clone()).or_default();
        let Some(first) = t.first else {
            t.first = Some(seq);
            t.next = seq + 1;
            out.push(frame);
            self.waits.push(Duration::ZERO);
            return None;
        };
        if seq < first {
            // Older than anything delivered here: late, not a duplicate.
            out.push(frame);
            self.waits.push(Duration::ZERO);
            return None;
        }
        if seq < t.next {
            return None; // already delivered
        }
        if seq == t.next {
            out.push(frame);
            self.waits.push(Duration::ZERO);
            t.next += 1;
            release(t, out, now, &mut self.waits);
            return None;
        }
        t.held.insert(seq, (frame, now));
        t.held_since.get_or_insert(now);
        (t.held.len() > MAX_HELD && !t.filling).then(|| start_fill(channel, t))
    }

    /// `channel` became active on this node (its first local session subscribed) when
    /// its last stored seq was `last`: events from `last + 1` on are put in order from
    /// the start. Ignored once the channel has a track (events came first).
    pub fn activate(&mut self, channel: &ChannelId, last: Seq) {
        self.tracks.entry(channel.clone()).or_insert_with(|| Track {
            first: Some(last + 1),
            next: last + 1,
            ..Track::default()
        });
    }

    /// How long each event delivered since the last call was held (zero: on arrival).
    pub fn take_waits(&mut self) -> Vec<Duration> {
        std::mem::take(&mut self.waits)
    }

    /// The fills due at `now`: channels whose oldest held event waited a whole window.
    pub fn tick(&mut self, now: Instant) -> Vec<Fill> {
        self.fills(|t| t.held_since.is_some_and(|s| now.duration_since(s) >= WINDOW))
    }

    /// After an outage of the bus: a fill for every channel this node delivers, from the
    /// last seq it delivered (what was stored meanwhile reaches the sessions in order).
    pub fn catch_up(&mut self) -> Vec<Fill> {
        self.fills(|t| t.first.is_some())
    }

    /// Starts a fill for every channel without one under way for which `due` holds.
    fn fills(&mut self, due: impl Fn(&Track) -> bool) -> Vec<Fill> {
        self.tracks.iter_mut().filter(|(_, t)| !t.filling && due(t)).map(|(c, t)| start_fill(c, t)).collect()
    }

    /// The store's entries for a fill (`frames`: (seq, frame), ascending): the frames to
    /// deliver now are appended to `out`. `more`: the store has entries after these, so
    /// the returned fill continues.
    pub fn filled(
        &mut self,
        channel: &ChannelId,
        frames: Vec<(Seq, Arc<SharedFrame>)>,
        more: bool,
        now: Instant,
        out: &mut Vec<Arc<SharedFrame>>,
    ) -> Option<Fill> {
        let t = self.tracks.get_mut(channel)?;
        t.filling = false;
        for (seq, f) in frames {
            if seq == t.next {
                let arrived = t.held.remove(&seq).map_or(now, |(_, at)| at);
                out.push(f);
                self.waits.push(now.duration_since(arrived));
                t.next += 1;
            }
        }
        release(t, out, now, &mut self.waits);
        more.then(|| start_fill(channel, t))
    }

    /// The fill could not be read (storage trouble): the next tick tries again.
    pub fn fill_failed(&mut self, channel: &ChannelId) {
        if let Some(t) = self.tracks.get_mut(channel) {
            t.filling = false;
        }
    }

    /// Keeps only the channels `keep` says this node still holds sessions for.
    pub fn retain(&mut self, keep: impl Fn(&ChannelId) -> bool) {
        self.tracks.retain(|c, _| keep(c));
    }
}

fn start_fill(channel: &ChannelId, t: &mut Track) -> Fill {
    t.filling = true;
    Fill { channel: channel.clone(), after: t.next.saturating_sub(1) }
}

/// Delivers the held events that follow on from `next`; what stays held waits behind a
/// new gap from `now`.
fn release(t: &mut Track, out: &mut Vec<Arc<SharedFrame>>, now: Instant, waits: &mut Vec<Duration>) {
    let before = t.next;
    while let Some((f, arrived)) = t.held.remove(&t.next) {
        out.push(f);
        waits.push(now.duration_since(arrived));
        t.next += 1;
    }
    let next = t.next;
    t.held.retain(|s, _| *s >= next);
    t.held_since = match (t.held.is_empty(), t.next > before) {
        (true, _) => None,
        (false, true) => Some(now),
        (false, false) => t.held_since.or(Some(now)),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use preau_proto::ServerFrame;

    fn f(seq: Seq) -> Arc<SharedFrame> {
        Arc::new(SharedFrame::new(ServerFrame::Read { channel: ChannelId::group("g"), user: "u".into(), seq }))
    }

    fn seqs(out: &[Arc<SharedFrame>]) -> Vec<Seq> {
        out.iter()
            .map(|f| match f.frame() {
                ServerFrame::Read { seq, .. } => *seq,
                _ => 0,
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_reordered_event_is_held_until_the_one_before_it_arrives() {
        let (mut s, ch, now) = (Sequencer::default(), ChannelId::group("g"), Instant::now());
        let mut out = Vec::new();
        for n in [1, 2, 4, 5, 3, 6] {
            assert_eq!(s.event(&ch, n, f(n), now, &mut out), None);
        }
        assert_eq!(seqs(&out), vec![1, 2, 3, 4, 5, 6]);
        assert!(s.tick(now + WINDOW).is_empty(), "nothing held");
        assert_eq!(s.take_waits().len(), 6, "one wait per event delivered");
        out.clear();
        s.event(&ch, 8, f(8), now, &mut out);
        s.event(&ch, 7, f(7), now + Duration::from_millis(40), &mut out);
        assert_eq!(s.take_waits(), vec![Duration::ZERO, Duration::from_millis(40)], "8 waited 40 ms for 7");
    }

    #[tokio::test(start_paused = true)]
    async fn an_activated_channel_is_in_order_from_its_first_event() {
        let (mut s, ch, now) = (Sequencer::default(), ChannelId::group("g"), Instant::now());
        s.activate(&ch, 3);
        let mut out = Vec::new();
        for n in [5, 6, 4, 7] {
            s.event(&ch, n, f(n), now, &mut out);
        }
        assert_eq!(seqs(&out), vec![4, 5, 6, 7], "held until 4, the first after activation");
        s.activate(&ch, 100);
        s.event(&ch, 8, f(8), now, &mut out);
        assert_eq!(seqs(&out), vec![4, 5, 6, 7, 8], "a second activation changes nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn a_gap_that_stays_open_is_read_from_the_store_after_the_window() {
        let (mut s, ch, now) = (Sequencer::default(), ChannelId::group("g"), Instant::now());
        let mut out = Vec::new();
        s.event(&ch, 1, f(1), now, &mut out);
        s.event(&ch, 3, f(3), now, &mut out);
        s.event(&ch, 4, f(4), now, &mut out);
        assert_eq!(seqs(&out), vec![1]);
        assert!(s.tick(now + WINDOW / 2).is_empty(), "within the window: wait");
        let fills = s.tick(now + WINDOW);
        assert_eq!(fills, vec![Fill { channel: ch.clone(), after: 1 }]);
        assert!(s.tick(now + WINDOW * 2).is_empty(), "one fill at a time");
        // The store has 2, 3 and 4 (3 and 4 were held too: delivered once).
        assert_eq!(s.filled(&ch, vec![(2, f(2)), (3, f(3)), (4, f(4))], false, now, &mut out), None);
        assert_eq!(seqs(&out), vec![1, 2, 3, 4]);
        // The live copy of 2 arrives late: a duplicate.
        s.event(&ch, 2, f(2), now, &mut out);
        s.event(&ch, 5, f(5), now, &mut out);
        assert_eq!(seqs(&out), vec![1, 2, 3, 4, 5]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_older_than_the_first_delivered_is_delivered_late_not_dropped() {
        let (mut s, ch, now) = (Sequencer::default(), ChannelId::group("g"), Instant::now());
        let mut out = Vec::new();
        s.event(&ch, 7, f(7), now, &mut out);
        s.event(&ch, 6, f(6), now, &mut out);
        s.event(&ch, 7, f(7), now, &mut out);
        assert_eq!(seqs(&out), vec![7, 6], "6 came after 7 was already out: late but there; 7 once");
    }

    #[tokio::test(start_paused = true)]
    async fn after_an_outage_every_channel_is_caught_up_from_its_last_delivered_seq() {
        let (mut s, now) = (Sequencer::default(), Instant::now());
        let (a, b) = (ChannelId::group("a"), ChannelId::group("b"));
        let mut out = Vec::new();
        for n in 1..=3 {
            s.event(&a, n, f(n), now, &mut out);
        }
        s.event(&b, 10, f(10), now, &mut out);
        let mut fills = s.catch_up();
        fills.sort_by_key(|f| f.after);
        assert_eq!(fills, vec![Fill { channel: a.clone(), after: 3 }, Fill { channel: b.clone(), after: 10 }]);
        out.clear();
        // Paged: the first page says there is more.
        let next = s.filled(&a, vec![(4, f(4)), (5, f(5))], true, now, &mut out);
        assert_eq!(next, Some(Fill { channel: a.clone(), after: 5 }));
        assert_eq!(s.filled(&a, vec![(6, f(6))], false, now, &mut out), None);
        assert_eq!(seqs(&out), vec![4, 5, 6]);
        // A failed read is tried again at the next tick once events wait.
        s.fill_failed(&b);
        s.event(&b, 12, f(12), now, &mut out);
        assert_eq!(s.tick(now + WINDOW), vec![Fill { channel: b, after: 10 }]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_gap_is_read_at_once_when_too_many_events_wait() {
        let (mut s, ch, now) = (Sequencer::default(), ChannelId::group("g"), Instant::now());
        let mut out = Vec::new();
        s.event(&ch, 1, f(1), now, &mut out);
        let mut fill = None;
        for n in 3..(3 + MAX_HELD as Seq + 1) {
            fill = fill.or(s.event(&ch, n, f(n), now, &mut out));
        }
        assert_eq!(fill, Some(Fill { channel: ch, after: 1 }));
    }
}

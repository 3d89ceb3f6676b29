//! VP8 frames from RTP packets (RFC 7741), without IO: packets of one stream come in
//! (reordered a little, some lost), whole frames go out, their payload descriptors
//! stripped. A frame missing a packet is never written (a decoder would draw garbage
//! until the next keyframe): the assembler drops it and everything after it until a
//! keyframe, and says it needs one.

use preau_live::vp8;
use std::collections::BTreeMap;

/// How far ahead of the next expected packet the assembler waits for a late one (RTX
/// repairs arrive a round trip late) before counting it lost.
const REORDER: u64 = 48;

/// One packet of the stream, as the tap hands it over.
pub struct Pkt<'a> {
    /// Sequence number.
    pub seq: u16,
    /// RTP timestamp (one per frame).
    pub ts: u32,
    /// Marker bit: the frame's last packet.
    pub marker: bool,
    /// The RTP payload (descriptor and VP8 data).
    pub payload: &'a [u8],
}

/// A whole VP8 frame.
#[derive(Debug, PartialEq)]
pub struct Frame {
    /// RTP timestamp.
    pub ts: u32,
    /// Keyframe.
    pub key: bool,
    /// The VP8 data, descriptors removed.
    pub data: Vec<u8>,
}

struct Held {
    ts: u32,
    marker: bool,
    start: bool,
    data: Vec<u8>,
}

/// Reassembles one VP8 stream.
#[derive(Default)]
pub struct Assembler {
    /// Packets not yet consumed, by extended sequence number.
    held: BTreeMap<u64, Held>,
    /// The next extended sequence number to consume.
    next: Option<u64>,
    /// Highest extended sequence number seen.
    top: u64,
    /// The frame being gathered.
    cur: Option<(u32, Vec<u8>)>,
    /// Since a loss: frames are dropped until a keyframe starts.
    broken: bool,
    /// A keyframe is needed (a loss, or the start): read and cleared by the owner.
    want_key: bool,
}

impl Assembler {
    /// A new stream: nothing is written before its first keyframe.
    pub fn new() -> Self {
        Assembler { broken: true, want_key: true, ..Default::default() }
    }

    /// Whether a keyframe is needed since this was last asked.
    pub fn take_want_key(&mut self) -> bool {
        std::mem::take(&mut self.want_key)
    }

    fn extend(&self, seq: u16) -> u64 {
        let Some(next) = self.next else { return u64::from(seq) + (1 << 16) };
        // The extended value of `seq` closest to the next expected one.
        let base = next & !0xffff;
        [base.wrapping_sub(1 << 16), base, base + (1 << 16)]
            .into_iter()
            .map(|b| b + u64::from(seq))
            .min_by_key(|c| c.abs_diff(next))
            .unwrap_or(base)
    }

    /// One packet; the frames it completes, in order.
    pub fn push(&mut self, p: Pkt<'_>, out: &mut Vec<Frame>) {
        let Some(d) = vp8::descriptor_len(p.payload) else { return };
        let ext = self.extend(p.seq);
        if self.next.is_none() {
            self.next = Some(ext);
        }
        let next = self.next.unwrap_or(ext);
        if ext < next {
            return; // late duplicate, or repaired after it was given up
        }
        self.top = self.top.max(ext);
        let start = vp8::starts_frame(p.payload);
        self.held.insert(ext, Held { ts: p.ts, marker: p.marker, start, data: p.payload[d..].to_vec() });
        self.consume(out);
        if self.top.saturating_sub(self.next.unwrap_or(self.top)) > REORDER {
            // The expected packet is not coming: skip to the next frame start held.
            self.lost();
            self.consume(out);
        }
    }

    fn lost(&mut self) {
        self.cur = None;
        self.broken = true;
        self.want_key = true;
        let resume = self.held.iter().find(|(_, h)| h.start).map(|(k, _)| *k);
        match resume {
            Some(k) => {
                self.held.retain(|s, _| *s >= k);
                self.next = Some(k);
            }
            None => {
                self.held.clear();
                self.next = Some(self.top + 1);
            }
        }
    }

    fn consume(&mut self, out: &mut Vec<Frame>) {
        while let Some(next) = self.next {
            let Some(h) = self.held.remove(&next) else { return };
            self.next = Some(next + 1);
            if h.start {
                if self.cur.is_some() {
                    // A new frame while the last one had no end: that one is broken.
                    self.broken = true;
                    self.want_key = true;
                }
                self.cur = Some((h.ts, Vec::with_capacity(h.data.len() * 4)));
            }
            let Some((ts, buf)) = self.cur.as_mut() else { continue };
            if *ts != h.ts {
                self.cur = None;
                self.broken = true;
                self.want_key = true;
                continue;
            }
            buf.extend_from_slice(&h.data);
            if h.marker {
                let Some((ts, data)) = self.cur.take() else { continue };
                let key = data.first().is_some_and(|b| b & 0x01 == 0);
                if key {
                    self.broken = false;
                }
                if !self.broken && !data.is_empty() {
                    out.push(Frame { ts, key, data });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame split into `n` packets from `seq`: descriptor `S` on the first; VP8 data
    /// whose first byte says key or not.
    fn frame(seq: u16, ts: u32, key: bool, n: u16) -> Vec<(u16, u32, bool, Vec<u8>)> {
        (0..n)
            .map(|i| {
                let desc = if i == 0 { 0x10 } else { 0x00 };
                let first = if key { 0x00 } else { 0x01 };
                let body = if i == 0 { vec![desc, first, 0xaa] } else { vec![desc, 0xbb, i as u8] };
                (seq.wrapping_add(i), ts, i == n - 1, body)
            })
            .collect()
    }

    fn feed(a: &mut Assembler, pkts: &[(u16, u32, bool, Vec<u8>)]) -> Vec<Frame> {
        let mut out = Vec::new();
        for (seq, ts, marker, payload) in pkts {
            a.push(Pkt { seq: *seq, ts: *ts, marker: *marker, payload }, &mut out);
        }
        out
    }

    #[test]
    fn whole_frames_come_out_without_descriptors_from_the_first_keyframe() {
        let mut a = Assembler::new();
        assert!(a.take_want_key(), "a new stream asks for a keyframe");
        let mut pkts = frame(100, 3000, false, 2); // an interframe first: not written
        pkts.extend(frame(102, 6000, true, 3));
        pkts.extend(frame(105, 9000, false, 1));
        let out = feed(&mut a, &pkts);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], Frame { ts: 6000, key: true, data: vec![0x00, 0xaa, 0xbb, 1, 0xbb, 2] });
        assert_eq!(out[1], Frame { ts: 9000, key: false, data: vec![0x01, 0xaa] });
    }

    #[test]
    fn reordered_packets_are_put_back_in_order_across_the_wrap() {
        let mut a = Assembler::new();
        let mut pkts = frame(65532, 1, true, 2); // 65532, 65533
        let mut second = frame(65534, 2, false, 3); // 65534, 65535, 0
        second.rotate_left(1); // 65535, 0, 65534: the first comes last
        pkts.extend(second);
        pkts.extend(frame(1, 3, false, 2));
        let out = feed(&mut a, &pkts);
        assert_eq!(out.iter().map(|f| f.ts).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(out[1].data, vec![0x01, 0xaa, 0xbb, 1, 0xbb, 2], "in sequence order");
    }

    #[test]
    fn a_lost_packet_drops_frames_until_the_next_keyframe_and_asks_for_one() {
        let mut a = Assembler::new();
        let mut pkts = frame(10, 1, true, 2);
        let mut second = frame(12, 2, false, 3);
        second.remove(1); // lost for good
        pkts.extend(second);
        let mut seq = 15;
        for ts in 3..60 {
            pkts.extend(frame(seq, ts, false, 1));
            seq += 1;
        }
        let out = feed(&mut a, &pkts);
        assert!(a.take_want_key());
        assert_eq!(out.iter().map(|f| f.ts).collect::<Vec<_>>(), vec![1], "nothing after the loss");
        let out = feed(&mut a, &frame(seq, 99, true, 2));
        assert_eq!(out.iter().map(|f| (f.ts, f.key)).collect::<Vec<_>>(), vec![(99, true)]);
        assert!(!a.take_want_key());
    }

    #[test]
    fn garbage_never_panics() {
        let mut a = Assembler::new();
        let mut out = Vec::new();
        for seq in 0..300u16 {
            let payload = [0x90u8, 0xe0, (seq % 7) as u8];
            a.push(
                Pkt { seq: seq.wrapping_mul(7919), ts: u32::from(seq / 3), marker: seq % 5 == 0, payload: &payload },
                &mut out,
            );
            a.push(Pkt { seq, ts: 0, marker: true, payload: &[] }, &mut out);
        }
    }
}

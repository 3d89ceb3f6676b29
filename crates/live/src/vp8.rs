//! The VP8 facts an SFU needs without decoding: whether a packet starts a keyframe (a
//! layer switch waits for one) and which temporal layer its frame belongs to (a reduced
//! frame rate drops the upper ones). Pure, and fuzzed: it reads network bytes.

/// Whether a VP8 RTP payload starts a keyframe (RFC 7741: the payload descriptor, then
/// the first partition's header, whose P bit is 0 on keyframes).
pub fn is_keyframe(payload: &[u8]) -> bool {
    let Some(&b0) = payload.first() else { return false };
    let start = b0 & 0x10 != 0;
    let pid = b0 & 0x07;
    if !start || pid != 0 {
        return false;
    }
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let Some(&x) = payload.get(i) else { return false };
        i += 1;
        if x & 0x80 != 0 {
            // I: picture id, 7 or 15 bits.
            let Some(&p) = payload.get(i) else { return false };
            i += if p & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1; // L: TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // T or K: TID/Y/KEYIDX
        }
    }
    payload.get(i).is_some_and(|h| h & 0x01 == 0)
}

/// Where a packet stands among temporal layers (RFC 7741's T bit): whether it starts a
/// frame, and the frame's temporal layer. `None` when the publisher sends no temporal
/// layers (or the payload is too short to tell).
pub fn temporal(payload: &[u8]) -> Option<(bool, u8)> {
    let &b0 = payload.first()?;
    let start = b0 & 0x10 != 0 && b0 & 0x07 == 0;
    if b0 & 0x80 == 0 {
        return None;
    }
    let &x = payload.get(1)?;
    if x & 0x20 == 0 {
        return None; // no TID
    }
    let mut i = 2;
    if x & 0x80 != 0 {
        let &p = payload.get(i)?;
        i += if p & 0x80 != 0 { 2 } else { 1 };
    }
    if x & 0x40 != 0 {
        i += 1; // TL0PICIDX
    }
    let &t = payload.get(i)?;
    Some((start, t >> 6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_vp8_keyframes_with_and_without_extensions() {
        // S=1, PID=0, no X; then P=0.
        assert!(is_keyframe(&[0x10, 0x00]));
        assert!(!is_keyframe(&[0x10, 0x01]), "P=1 is an interframe");
        assert!(!is_keyframe(&[0x00, 0x00]), "not the start of a partition");
        // X, I with a 15-bit picture id, L, T: 1 + 1 + 2 + 1 + 1 bytes of descriptor.
        assert!(is_keyframe(&[0x90, 0xe0, 0x80, 0x01, 0x05, 0x20, 0x9c]));
        assert!(!is_keyframe(&[0x90, 0xe0, 0x80, 0x01, 0x05, 0x20, 0x9d]));
        assert!(!is_keyframe(&[]));
        assert!(!is_keyframe(&[0x90, 0xe0]), "truncated: never a panic");
    }

    #[test]
    fn reads_the_temporal_layer_of_a_frame() {
        // X; I (15-bit picture id), L, T; TID 2 in the top bits of the last byte.
        assert_eq!(temporal(&[0x90, 0xe0, 0x80, 0x01, 0x05, 0x80, 0x9d]), Some((true, 2)));
        // Not the start of the frame (S=0): same layer.
        assert_eq!(temporal(&[0x80, 0xe0, 0x80, 0x01, 0x05, 0x40, 0x00]), Some((false, 1)));
        // 7-bit picture id, no TL0PICIDX.
        assert_eq!(temporal(&[0x90, 0xa0, 0x05, 0x00, 0x9d]), Some((true, 0)));
        assert_eq!(temporal(&[0x90, 0x80, 0x05, 0x9d]), None, "no T bit: no temporal layers");
        assert_eq!(temporal(&[0x10, 0x00]), None, "no extension at all");
        assert_eq!(temporal(&[0x90, 0xe0, 0x80]), None, "truncated: never a panic");
        assert_eq!(temporal(&[]), None);
    }
}

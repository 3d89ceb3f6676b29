//! The VP8 facts an SFU needs without decoding: whether a packet starts a keyframe (a
//! layer switch waits for one) and which temporal layer its frame belongs to (a reduced
//! frame rate drops the upper ones). Pure, and fuzzed: it reads network bytes.

/// The length of a VP8 RTP payload descriptor (RFC 7741 section 4.2): what precedes the
/// VP8 data itself. `None` when the payload is too short to hold it.
pub fn descriptor_len(payload: &[u8]) -> Option<usize> {
    let &b0 = payload.first()?;
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let &x = payload.get(i)?;
        i += 1;
        if x & 0x80 != 0 {
            // I: picture id, 7 or 15 bits.
            let &p = payload.get(i)?;
            i += if p & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1; // L: TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // T or K: TID/Y/KEYIDX
        }
    }
    (i <= payload.len()).then_some(i)
}

/// Whether a packet starts a VP8 frame: S set on partition 0.
pub fn starts_frame(payload: &[u8]) -> bool {
    payload.first().is_some_and(|b0| b0 & 0x10 != 0 && b0 & 0x07 == 0)
}

/// Whether a VP8 RTP payload starts a keyframe (RFC 7741: the payload descriptor, then
/// the first partition's header, whose P bit is 0 on keyframes).
pub fn is_keyframe(payload: &[u8]) -> bool {
    if !starts_frame(payload) {
        return false;
    }
    descriptor_len(payload).and_then(|i| payload.get(i)).is_some_and(|h| h & 0x01 == 0)
}

/// The picture size a VP8 keyframe carries (RFC 6386 section 9.1: the frame tag, the
/// start code `9d 01 2a`, then 14-bit width and height); `None` for an interframe or a
/// truncated one.
pub fn keyframe_size(frame: &[u8]) -> Option<(u16, u16)> {
    if frame.len() < 10 || frame[0] & 0x01 != 0 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff;
    let h = u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff;
    (w > 0 && h > 0).then_some((w, h))
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
    fn measures_the_descriptor_and_reads_a_keyframe_size() {
        assert_eq!(descriptor_len(&[0x10, 0x00]), Some(1));
        assert_eq!(descriptor_len(&[0x90, 0xe0, 0x80, 0x01, 0x05, 0x20, 0x9c]), Some(6));
        assert_eq!(descriptor_len(&[0x90, 0x80, 0x05]), Some(3), "7-bit picture id");
        assert_eq!(descriptor_len(&[0x90, 0xe0, 0x80]), None, "truncated");
        assert_eq!(descriptor_len(&[]), None);
        // A 640x360 keyframe: tag (P=0), start code, sizes with no scaling bits.
        let key = [0x50, 0x2a, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01, 0x00];
        assert_eq!(keyframe_size(&key), Some((640, 360)));
        let mut inter = key;
        inter[0] |= 1;
        assert_eq!(keyframe_size(&inter), None, "an interframe carries no size");
        assert_eq!(keyframe_size(&key[..8]), None, "truncated");
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

//! The one VP8 fact an SFU needs without decoding: whether a packet starts a keyframe
//! (a layer switch waits for one). Pure, and fuzzed: it reads network bytes.

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
}

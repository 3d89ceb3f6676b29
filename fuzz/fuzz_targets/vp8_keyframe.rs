//! Fuzzes the VP8 keyframe check the SFU runs on every video packet: any payload, never
//! a panic or an out-of-bounds read.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = preau_live::vp8::is_keyframe(data);
    let _ = preau_live::vp8::temporal(data);
    let _ = preau_live::vp8::descriptor_len(data);
    let _ = preau_live::vp8::keyframe_size(data);
});

//! Fuzzes the decoder of client frames in both encodings: it must never panic, and what it
//! accepts must encode and decode back to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use preau_proto::{Encoding, decode_client, encode_client};

fuzz_target!(|data: &[u8]| {
    for enc in [Encoding::Json, Encoding::MsgPack] {
        if let Ok(frame) = decode_client(enc, data) {
            let again = encode_client(enc, &frame);
            assert_eq!(decode_client(enc, &again).as_ref(), Ok(&frame));
        }
    }
});

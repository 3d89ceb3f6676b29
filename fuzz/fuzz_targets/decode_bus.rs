//! Fuzzes the bus decoder (what arrives from Redis): never a panic, and a frame it
//! accepts encodes back to bytes that decode to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use preau_bus::BusMessage;
use preau_bus::wire::{decode, encode};

fuzz_target!(|data: &[u8]| {
    for channel in ["preau:c:forum:0750001A:6A", "preau:u:e001", "preau:ctl"] {
        if let Some(msg) = decode("me", channel, data) {
            let (key, bytes) = encode("other", &msg).expect("what decodes encodes");
            match (decode("me", &key, &bytes), &msg) {
                (Some(BusMessage::Frame { frame: a, .. }), BusMessage::Frame { frame: b, .. }) => {
                    assert_eq!(a.frame(), b.frame())
                }
                (Some(BusMessage::DirectoryChanged { schools: a }), BusMessage::DirectoryChanged { schools: b }) => {
                    assert_eq!(&a, b)
                }
                (Some(BusMessage::SettingsChanged { key: a }), BusMessage::SettingsChanged { key: b }) => assert_eq!(&a, b),
                (other, _) => panic!("round trip lost the message: {other:?}"),
            }
        }
    }
});

//! Fuzzes the SFU's signaling decoder: any text a browser may send must give a message
//! or an error with a stable code, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match preau_live::signal::decode(text) {
            Ok(_) => {}
            Err((_, e)) => assert!(!e.code.as_str().is_empty() && !e.message.is_empty()),
        }
    }
});

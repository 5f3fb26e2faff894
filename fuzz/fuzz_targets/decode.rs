//! Fuzz target: `Message::decode` on arbitrary bytes; see `checks::check_decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zgossip_fuzz::checks::check_decode(data));

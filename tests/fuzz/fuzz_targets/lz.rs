//! The LZ image decoder.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = spicetap::render::lz::decode_lz(data);
});

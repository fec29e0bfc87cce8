//! The QUIC image decoder.
//!
//! Images whose header declares more than 4096 pixels (64x64) are only parsed
//! (`parse_header`, which bounds every size): decoding them would spend
//! the fuzzer's time on rows, not on new paths of the row decoder.
#![no_main]
use libfuzzer_sys::fuzz_target;
use spicetap::render::quic;

fuzz_target!(|data: &[u8]| {
    match quic::parse_header(data) {
        Ok(h) if u64::from(h.width) * u64::from(h.height) > 64 * 64 => {}
        _ => {
            let _ = quic::decode(data);
        }
    }
});

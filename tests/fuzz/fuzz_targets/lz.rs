//! The LZ image decoder.
//!
//! An image whose header declares more than 4096 pixels (64x64) is decoded
//! from its 28-byte header alone (every header check, then the end of the
//! input): a few bytes of back-references expand to a whole screen, and
//! decoding it would spend the fuzzer's time on copies, not on new paths.
#![no_main]
use libfuzzer_sys::fuzz_target;

/// Bytes of the header: magic, version, type, width, height, stride, top_down.
const HEADER_BYTES: usize = 28;

fuzz_target!(|data: &[u8]| {
    let dim = |at: usize| data.get(at..at + 4).map_or(0, |b| u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])));
    let input = if dim(12) * dim(16) > 64 * 64 { &data[..data.len().min(HEADER_BYTES)] } else { data };
    let _ = spicetap::render::lz::decode_lz(input);
});

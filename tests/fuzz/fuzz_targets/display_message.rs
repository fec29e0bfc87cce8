//! Every display message parser: the first two bytes are the type.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let ty = u16::from_le_bytes([data[0], data[1]]);
    let _ = spicetap::render::display::parse(ty, &data[2..]);
});

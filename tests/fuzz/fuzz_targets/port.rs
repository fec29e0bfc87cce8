//! Port channel messages and SpiceVMC payloads (LZ4 included).
#![no_main]
use libfuzzer_sys::fuzz_target;
use spicetap::port::{PortMessage, vmc_payload};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let ty = 100 + u16::from(data[0] % 110);
    let _ = PortMessage::parse(data[1] & 1 == 0, ty, &data[2..]);
    let _ = vmc_payload(101 + u16::from(data[1] & 1), &data[2..]);
});

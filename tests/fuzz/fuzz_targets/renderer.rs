//! The whole renderer fed a message stream: records of type u16, length
//! u16 and body, each applied to one DisplayRenderer (all image decoders,
//! caches, surfaces and streams behind it).
#![no_main]
use libfuzzer_sys::fuzz_target;
use spicetap::render::renderer::DisplayRenderer;

fuzz_target!(|data: &[u8]| {
    let mut r = DisplayRenderer::new();
    let mut rest = data;
    while rest.len() >= 4 {
        let ty = u16::from_le_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_le_bytes([rest[2], rest[3]]));
        let body = &rest[4..];
        let body = &body[..len.min(body.len())];
        // SURFACE_CREATE sizes are taken modulo a small bound so the fuzzer
        // spends its time drawing, not allocating.
        if ty == 314 && body.len() >= 12 {
            let mut b = body.to_vec();
            let w = u32::from_le_bytes([b[4], b[5], b[6], b[7]]) % 257;
            let h = u32::from_le_bytes([b[8], b[9], b[10], b[11]]) % 257;
            b[4..8].copy_from_slice(&w.to_le_bytes());
            b[8..12].copy_from_slice(&h.to_le_bytes());
            r.server_message(ty, &b);
        } else if ty & 0x8000 != 0 {
            r.client_message(ty & 0x7fff, body);
        } else {
            r.server_message(ty, body);
        }
        rest = &rest[4 + body.len()..];
    }
});

//! The whole renderer fed a message stream: records of type u16, length
//! u16 and body, each applied to one DisplayRenderer (all image decoders,
//! caches, surfaces and streams behind it).
#![no_main]
use libfuzzer_sys::fuzz_target;
use spicetap::render::renderer::DisplayRenderer;

/// `SPICE_MSG_DISPLAY_SURFACE_CREATE` (spice-protocol `enums.h`).
const SURFACE_CREATE: u16 = 314;
/// `SPICE_MSG_LIST` (spice-protocol `enums.h`).
const MSG_LIST: u16 = 8;

/// Takes a SURFACE_CREATE body's width and height (u32 LE at 4 and 8)
/// modulo a small bound, so the fuzzer spends its time drawing, not
/// filling surfaces of up to 64 Mpx (a 287-byte input that drew on a
/// large surface created inside a SPICE_MSG_LIST took over 5 s).
fn bound_surface(body: &mut [u8]) {
    if body.len() >= 12 {
        for at in [4, 8] {
            let side = u32::from_le_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]) % 257;
            body[at..at + 4].copy_from_slice(&side.to_le_bytes());
        }
    }
}

/// The same bound on the SURFACE_CREATE sub-messages of a SPICE_MSG_LIST
/// body (count u16, offsets u32[count]; each sub-message type u16, size
/// u32, body).
fn bound_list(body: &mut [u8]) {
    let Some(count) = body.get(..2).map(|b| usize::from(u16::from_le_bytes([b[0], b[1]]))) else { return };
    for k in 0..count {
        let Some(o) = body.get(2 + 4 * k..6 + 4 * k) else { return };
        let offset = u32::from_le_bytes([o[0], o[1], o[2], o[3]]) as usize;
        if body.get(offset..offset + 2) == Some(&SURFACE_CREATE.to_le_bytes()[..]) {
            if let Some(sub) = body.get_mut(offset.saturating_add(6)..) {
                bound_surface(sub);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut r = DisplayRenderer::new();
    let mut rest = data;
    while rest.len() >= 4 {
        let ty = u16::from_le_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_le_bytes([rest[2], rest[3]]));
        let body = &rest[4..];
        let body = &body[..len.min(body.len())];
        if ty == SURFACE_CREATE || ty == MSG_LIST {
            let mut b = body.to_vec();
            if ty == SURFACE_CREATE {
                bound_surface(&mut b)
            } else {
                bound_list(&mut b)
            }
            r.server_message(ty, &b);
        } else if ty & 0x8000 != 0 {
            r.client_message(ty & 0x7fff, body);
        } else {
            r.server_message(ty, body);
        }
        rest = &rest[4 + body.len()..];
    }
});

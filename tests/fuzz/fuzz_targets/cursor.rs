//! Cursor messages and shapes, and the pointer that follows them: the
//! first two bytes are the type.
#![no_main]
use libfuzzer_sys::fuzz_target;
use spicetap::render::cursor::{self, CursorMessage, Pointer};
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let ty = 100 + u16::from(data[0] % 10);
    let body = &data[2..];
    if let Ok(Some(CursorMessage::Set { cursor, .. } | CursorMessage::Init { cursor, .. })) = cursor::parse(ty, body)
        && let Some(h) = cursor.header
    {
        let _ = cursor::decode(&h, cursor.data);
    }
    let mut p = Pointer::new();
    p.cursor_message(Duration::ZERO, ty, body);
    p.main_message(Duration::ZERO, 105, body);
    p.inputs_message(112, body);
    let mut s = spicetap::render::canvas::Surface::new(64, 64, 32);
    p.draw(0, &mut s);
});

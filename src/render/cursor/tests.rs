use super::*;

fn header(cursor_type: u8, width: u16, height: u16, hot: (u16, u16)) -> CursorHeader {
    CursorHeader { unique: 0, cursor_type, width, height, hot_spot_x: hot.0, hot_spot_y: hot.1 }
}

/// A SpiceCursor on the wire: flags, header, data.
fn cursor_bytes(flags: u16, h: &CursorHeader, data: &[u8]) -> Vec<u8> {
    let mut b = flags.to_le_bytes().to_vec();
    b.extend(h.unique.to_le_bytes());
    b.push(h.cursor_type);
    for v in [h.width, h.height, h.hot_spot_x, h.hot_spot_y] {
        b.extend(v.to_le_bytes());
    }
    b.extend_from_slice(data);
    b
}

fn set(x: i16, y: i16, visible: bool, cursor: &[u8]) -> Vec<u8> {
    let mut b = x.to_le_bytes().to_vec();
    b.extend(y.to_le_bytes());
    b.push(u8::from(visible));
    b.extend_from_slice(cursor);
    b
}

fn px(s: &CursorShape, x: usize, y: usize) -> [u8; 4] {
    let o = 4 * (y * usize::from(s.width) + x);
    [s.rgba[o], s.rgba[o + 1], s.rgba[o + 2], s.rgba[o + 3]]
}

/// The INIT QEMU's qxl sent for the Linux guest's pointer, and what
/// spice-gtk made of it (tests/fixtures/README.md).
const QXL_INIT: &[u8] = include_bytes!("../../../tests/fixtures/cursor/qxl-init.bin");
const QXL_SPICE_GTK: &[u8] = include_bytes!("../../../tests/fixtures/cursor/qxl-init.spice-gtk.rgba");

#[test]
fn a_qxl_pointer_recorded_from_qemu_decodes_as_spice_gtk_shows_it() {
    let Ok(Some(CursorMessage::Init { visible, cursor, .. })) = parse(SPICE_MSG_CURSOR_INIT, QXL_INIT) else {
        panic!("not an INIT");
    };
    assert!(visible);
    let h = cursor.header.unwrap();
    assert_eq!((h.cursor_type, h.width, h.height, h.hot_spot_x, h.hot_spot_y), (0, 64, 64, 1, 1));
    let s = decode(&h, cursor.data).unwrap();
    assert_eq!(s.rgba.len(), QXL_SPICE_GTK.len());
    let differ = s.rgba.chunks(4).zip(QXL_SPICE_GTK.chunks(4)).filter(|(a, b)| a != b).count();
    assert_eq!(differ, 0, "{differ} of 4096 pixels differ from spice-gtk's");
    // Every cut of it is refused or decodes nothing.
    for cut in [0, 8, 27, 28, 1000, QXL_INIT.len() - 1] {
        match parse(SPICE_MSG_CURSOR_INIT, &QXL_INIT[..cut]) {
            Ok(Some(CursorMessage::Init { cursor, .. })) => {
                assert!(decode(&cursor.header.unwrap(), cursor.data).is_err(), "cut at {cut}");
            }
            other => assert!(other.is_err(), "cut at {cut}: {other:?}"),
        }
    }
}

#[test]
fn alpha_is_bgra_turned_rgba() {
    // 2x1: opaque red, half-transparent green (u32 LE 0xAARRGGBB).
    let data: Vec<u8> = [0xffff_0000u32, 0x8000_ff00].iter().flat_map(|v| v.to_le_bytes()).collect();
    let s = decode(&header(0, 2, 1, (1, 0)), &data).unwrap();
    assert_eq!(s.rgba, [255, 0, 0, 255, 0, 255, 0, 0x80]);
    assert_eq!((s.hot_spot_x, s.hot_spot_y), (1, 0));
    // Hot spots past the size are clamped to it, as spice-gtk does.
    let s = decode(&header(0, 2, 1, (9, 9)), &data).unwrap();
    assert_eq!((s.hot_spot_x, s.hot_spot_y), (2, 1));
}

#[test]
fn mono_and_xor_planes() {
    // 3x3: AND row-major bits, rows padded to a byte. Row 0: transparent,
    // white (invert), white; row 1: black, white, transparent; row 2 all
    // transparent.
    let and = [0b1010_0000, 0b0010_0000, 0b1110_0000];
    let xor = [0b0110_0000, 0b0100_0000, 0b0000_0000];
    let mut data = and.to_vec();
    data.extend(xor);
    let s = decode(&header(1, 3, 3, (0, 0)), &data).unwrap();
    assert_eq!(px(&s, 0, 0), [0, 0, 0, 0]);
    assert_eq!(px(&s, 1, 0), [255, 255, 255, 255]);
    assert_eq!(px(&s, 2, 0), [255, 255, 255, 255]);
    assert_eq!(px(&s, 0, 1), [0, 0, 0, 255]);
    assert_eq!(px(&s, 1, 1), [255, 255, 255, 255]);
    assert_eq!(px(&s, 2, 1), [0, 0, 0, 0]);
    assert_eq!(px(&s, 1, 2), [0, 0, 0, 0]);
}

#[test]
fn mono_drawn_only_by_inverting_gets_black_edges() {
    // 4x4, AND all ones, one XOR pixel at (1, 1): its inner neighbours
    // (not on the border) turn opaque black, the rest stays transparent.
    let mut data = vec![0xff; 4];
    data.extend([0, 0b0100_0000, 0, 0]);
    let s = decode(&header(1, 4, 4, (0, 0)), &data).unwrap();
    assert_eq!(px(&s, 1, 1), [255, 255, 255, 255]);
    assert_eq!(px(&s, 2, 2), [0, 0, 0, 255], "an inner neighbour is an edge");
    assert_eq!(px(&s, 2, 1), [0, 0, 0, 255]);
    assert_eq!(px(&s, 0, 0), [0, 0, 0, 0], "the border never is");
    assert_eq!(px(&s, 3, 3), [0, 0, 0, 0]);
}

#[test]
fn color4_palette_mask_and_inverting_pixels() {
    // 2x2, 4 bits per pixel: indexes 1 2 / 3 0; palette 1 red, 2 white,
    // 3 blue; mask bits (linear) 0 1 0 1.
    let mut data = vec![0x12, 0x30];
    let mut palette = [0u32; 16];
    palette[1] = 0x00ff_0000;
    palette[2] = 0x00ff_ffff;
    palette[3] = 0x0000_00ff;
    data.extend(palette.iter().flat_map(|v| v.to_le_bytes()));
    data.push(0b0101_0000);
    let s = decode(&header(2, 2, 2, (0, 0)), &data).unwrap();
    assert_eq!(px(&s, 0, 0), [255, 0, 0, 255]);
    // Masked white inverts the screen: spice-gtk's grey checkerboard.
    assert_eq!(px(&s, 1, 0), [0x30, 0x30, 0x30, 0xc0]);
    assert_eq!(px(&s, 0, 1), [0, 0, 255, 255]);
    // Masked black: transparent.
    assert_eq!(px(&s, 1, 1), [0, 0, 0, 0]);
}

#[test]
fn color16_is_555_widened_by_shifting() {
    // White 0x7fff unmasked, pure red 0x7c00 masked (transparent), then
    // green 0x03e0 unmasked.
    let mut data: Vec<u8> = [0x7fffu16, 0x7c00, 0x03e0].iter().flat_map(|v| v.to_le_bytes()).collect();
    data.push(0b0100_0000);
    let s = decode(&header(4, 3, 1, (0, 0)), &data).unwrap();
    assert_eq!(px(&s, 0, 0), [0xf8, 0xf8, 0xf8, 255]);
    assert_eq!(px(&s, 1, 0), [0xf8, 0, 0, 0]);
    assert_eq!(px(&s, 2, 0), [0, 0xf8, 0, 255]);
}

#[test]
fn color32_mask_and_inverting_pixels() {
    let mut data: Vec<u8> = [0x0012_3456u32, 0x00ff_ffff].iter().flat_map(|v| v.to_le_bytes()).collect();
    data.push(0b0100_0000);
    let s = decode(&header(6, 2, 1, (0, 0)), &data).unwrap();
    assert_eq!(px(&s, 0, 0), [0x12, 0x34, 0x56, 255]);
    assert_eq!(px(&s, 1, 0), [0x30, 0x30, 0x30, 0xc0]);
}

#[test]
fn color8_and_color24_are_transparent_as_in_spice_gtk() {
    for t in [3, 5, 9] {
        let s = decode(&header(t, 2, 2, (0, 0)), &[]).unwrap();
        assert!(s.rgba.iter().all(|&b| b == 0), "type {t}");
        assert_eq!(s.rgba.len(), 16);
    }
}

#[test]
fn hostile_sizes_and_lengths_are_errors() {
    assert!(matches!(decode(&header(0, 0, 4, (0, 0)), &[]), Err(CursorError::Size { .. })));
    let big = MAX_CURSOR_SIDE as u16 + 1;
    assert!(matches!(decode(&header(0, big, 1, (0, 0)), &[0; 4096]), Err(CursorError::Size { .. })));
    assert!(matches!(decode(&header(0, u16::MAX, u16::MAX, (0, 0)), &[]), Err(CursorError::Size { .. })));
    // One byte short for each type that needs data.
    for (t, w, h, needed) in
        [(0u8, 4u16, 4u16, 64usize), (1, 9, 2, 8), (2, 3, 2, 4 + 64 + 1), (4, 4, 4, 34), (6, 4, 4, 66)]
    {
        let hd = header(t, w, h, (0, 0));
        assert!(decode(&hd, &vec![0; needed]).is_ok(), "type {t} with {needed} bytes");
        match decode(&hd, &vec![0; needed - 1]) {
            Err(CursorError::Data { needed: n, have, .. }) => assert_eq!((n, have), (needed, needed - 1)),
            other => panic!("type {t}: {other:?}"),
        }
    }
}

#[test]
fn every_truncation_of_a_message_is_an_error_or_none() {
    let c = cursor_bytes(0, &header(0, 1, 1, (0, 0)), &[1, 2, 3, 4]);
    let mut init = vec![5, 0, 6, 0, 0, 0, 0, 0, 1];
    init.extend(&c);
    let messages = [
        (SPICE_MSG_CURSOR_INIT, init),
        (SPICE_MSG_CURSOR_SET, set(1, 2, true, &c)),
        (SPICE_MSG_CURSOR_MOVE, vec![1, 0, 2, 0]),
        (SPICE_MSG_CURSOR_TRAIL, vec![1, 0, 2, 0]),
        (SPICE_MSG_CURSOR_INVAL_ONE, vec![1; 8]),
    ];
    for (ty, body) in &messages {
        assert!(parse(*ty, body).unwrap().is_some());
        // The data is the message's rest: cuts inside it parse (the shape
        // then fails to decode); cuts before it are errors.
        let fixed = match *ty {
            SPICE_MSG_CURSOR_INIT => 9 + 19,
            SPICE_MSG_CURSOR_SET => 5 + 19,
            _ => body.len(),
        };
        for cut in 0..fixed {
            assert!(parse(*ty, &body[..cut]).is_err(), "type {ty} cut at {cut}");
        }
    }
    assert_eq!(parse(200, &[]), Ok(None));
    assert_eq!(parse(SPICE_MSG_CURSOR_HIDE, &[]), Ok(Some(CursorMessage::Hide)));
}

#[test]
fn cache_set_from_cache_invalidate_and_miss() {
    let mut p = Pointer::new();
    let t = Duration::from_secs(1);
    let red: Vec<u8> = 0xffff_0000u32.to_le_bytes().to_vec();
    let h = CursorHeader { unique: 7, ..header(0, 1, 1, (0, 0)) };
    assert!(p.cursor_message(t, SPICE_MSG_CURSOR_SET, &set(10, 20, true, &cursor_bytes(2, &h, &red))));
    let (x, y, s) = p.overlay(0).unwrap();
    assert_eq!((x, y, s.rgba.as_slice()), (10, 20, [255, 0, 0, 255].as_slice()));
    assert!(p.overlay(1).is_none(), "server mode: display 0 only");
    // From the cache: no data needed.
    p.cursor_message(t, SPICE_MSG_CURSOR_SET, &set(3, 4, true, &cursor_bytes(SPICE_CURSOR_FLAGS_FROM_CACHE, &h, &[])));
    assert_eq!(p.overlay(0).map(|(x, y, _)| (x, y)), Some((3, 4)));
    p.cursor_message(t, SPICE_MSG_CURSOR_INVAL_ONE, &7u64.to_le_bytes());
    p.cursor_message(t, SPICE_MSG_CURSOR_SET, &set(3, 4, true, &cursor_bytes(SPICE_CURSOR_FLAGS_FROM_CACHE, &h, &[])));
    assert!(p.overlay(0).is_none(), "a miss hides the pointer, as in spice-gtk");
    let r = p.report(t);
    assert_eq!(r.error_count, 1);
    assert!(r.errors[0].contains("not in the cache"), "{:?}", r.errors);
    assert_eq!(r.shapes.len(), 1);
    assert_eq!(r.shapes[0].uses, 2);
    assert_eq!(r.messages["SPICE_MSG_CURSOR_SET"], 3);
}

#[test]
fn hide_move_visibility_time_and_mouse_modes() {
    let mut p = Pointer::new();
    let at = |ms: u64| Duration::from_millis(ms);
    let green: Vec<u8> = 0xff00_ff00u32.to_le_bytes().to_vec();
    let c = cursor_bytes(0, &header(0, 1, 1, (0, 0)), &green);
    p.main_message(at(0), 103, &[0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0]);
    let mut init = vec![5, 0, 6, 0, 0, 0, 0, 0, 1];
    init.extend(&c);
    p.cursor_message(at(0), SPICE_MSG_CURSOR_INIT, &init);
    assert!(p.overlay(0).is_none(), "INIT's position is not the pointer's");
    p.cursor_message(at(0), SPICE_MSG_CURSOR_MOVE, &[5, 0, 6, 0]);
    assert_eq!(p.overlay(0).map(|(x, y, _)| (x, y)), Some((5, 6)));
    p.cursor_message(at(1000), SPICE_MSG_CURSOR_HIDE, &[]);
    assert!(p.overlay(0).is_none());
    p.cursor_message(at(1500), SPICE_MSG_CURSOR_MOVE, &[7, 0, 8, 0]);
    assert_eq!(p.overlay(0).map(|(x, y, _)| (x, y)), Some((7, 8)));
    // Client mode: the client's positions, on their display.
    assert!(p.main_message(at(2000), 105, &[3, 0, 2, 0]));
    assert!(p.overlay(0).is_none(), "no client position yet");
    let mut pos = 30u32.to_le_bytes().to_vec();
    pos.extend(40u32.to_le_bytes());
    pos.extend([0, 0, 1]);
    assert!(p.inputs_message(112, &pos));
    assert!(p.overlay(0).is_none());
    assert_eq!(p.overlay(1).map(|(x, y, _)| (x, y)), Some((30, 40)));
    assert!(!p.inputs_message(112, &pos[..10]), "truncated positions are ignored");
    let r = p.report(at(2500));
    assert_eq!(r.mouse_modes, [(0.0, "server"), (2.0, "client")]);
    assert!((r.visible_seconds - 2.0).abs() < 1e-9, "{}", r.visible_seconds);
}

#[test]
fn drawing_blends_and_clips_at_the_edges() {
    let mut p = Pointer::new();
    // 2x2: opaque white, transparent, half-opaque black, opaque white; hot
    // spot (1, 1).
    let data: Vec<u8> = [0xffff_ffffu32, 0, 0x8000_0000, 0xffff_ffff].iter().flat_map(|v| v.to_le_bytes()).collect();
    let c = cursor_bytes(0, &header(0, 2, 2, (1, 1)), &data);
    p.cursor_message(Duration::ZERO, SPICE_MSG_CURSOR_SET, &set(1, 1, true, &c));
    let mut s = Surface::new(3, 3, 32);
    s.data.fill(0x0064_6464);
    assert!(p.draw(0, &mut s));
    assert_eq!(s.data[0], 0x00ff_ffff);
    assert_eq!(s.data[1], 0x0064_6464, "transparent");
    // 100 * (255 - 128) / 255 = 49.8: 0x32.
    assert_eq!(s.data[3], 0x0032_3232);
    assert_eq!(s.data[4], 0x00ff_ffff);
    // Half off the surface: only what is on it is drawn.
    p.cursor_message(Duration::ZERO, SPICE_MSG_CURSOR_MOVE, &[0, 0, 0, 0]);
    let mut s = Surface::new(3, 3, 32);
    assert!(p.draw(0, &mut s));
    assert_eq!(s.data[0], 0x00ff_ffff);
    p.cursor_message(Duration::ZERO, SPICE_MSG_CURSOR_MOVE, &[0x00, 0x80, 0x00, 0x80]);
    assert!(!p.draw(0, &mut Surface::new(3, 3, 32)), "far off: nothing drawn");
}

//! Drawing messages QEMU with a Linux guest never sends (DRAW_OPAQUE, ROP3,
//! TEXT, STROKE, TRANSPARENT, ALPHA_BLEND, COMPOSITE, masks, scaling),
//! served by a scripted SPICE server to spice-gtk through spicetap: the
//! surface spice-gtk ends with must equal spicetap's rendering of the
//! recording, area by area.

mod support;

use std::process::Command;
use std::time::Duration;

use support::fake_server::FakeServer;
use support::*;

const W: i32 = 64;
const H: i32 = 48;

fn rect(t: i32, l: i32, b: i32, r: i32) -> Vec<u8> {
    [t, l, b, r].iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// DisplayBase on surface 0 with `bbox`, no clip.
fn base(bbox: (i32, i32, i32, i32)) -> Vec<u8> {
    base_on(0, bbox)
}

/// DisplayBase on `surface_id` with `bbox`, no clip.
fn base_on(surface_id: u32, bbox: (i32, i32, i32, i32)) -> Vec<u8> {
    let mut b = surface_id.to_le_bytes().to_vec();
    b.extend(rect(bbox.0, bbox.1, bbox.2, bbox.3));
    b.push(0);
    b
}

fn no_mask() -> Vec<u8> {
    vec![0; 13]
}

fn solid(color: u32) -> Vec<u8> {
    let mut b = vec![1];
    b.extend_from_slice(&color.to_le_bytes());
    b
}

/// A top-down BITMAP SpiceImage of bitmap format `fmt`, rows of `stride`
/// bytes, no palette.
fn bitmap_image(id: u64, fmt: u8, w: u32, h: u32, stride: u32, data: &[u8]) -> Vec<u8> {
    let mut b = id.to_le_bytes().to_vec();
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&w.to_le_bytes());
    b.extend_from_slice(&h.to_le_bytes());
    b.extend_from_slice(&[fmt, 4]);
    b.extend_from_slice(&w.to_le_bytes());
    b.extend_from_slice(&h.to_le_bytes());
    b.extend_from_slice(&stride.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(data);
    b
}

/// A BITMAP SpiceImage, 32-bit (fmt 8) or RGBA (fmt 9), top-down.
fn bitmap(id: u64, fmt: u8, w: u32, h: u32, pixels: &[u32]) -> Vec<u8> {
    let data: Vec<u8> = pixels.iter().flat_map(|p| p.to_le_bytes()).collect();
    bitmap_image(id, fmt, w, h, w * 4, &data)
}

/// An 8BIT_A BITMAP SpiceImage (one alpha byte per pixel), top-down.
fn alpha_bitmap(id: u64, w: u32, h: u32, alphas: &[u8]) -> Vec<u8> {
    bitmap_image(id, 10, w, h, w, alphas)
}

/// A SURFACE SpiceImage naming `surface_id` (`w` x `h`).
fn surface_image(surface_id: u32, w: u32, h: u32) -> Vec<u8> {
    let mut b = (1000 + u64::from(surface_id)).to_le_bytes().to_vec();
    b.extend_from_slice(&[104, 0]);
    b.extend_from_slice(&w.to_le_bytes());
    b.extend_from_slice(&h.to_le_bytes());
    b.extend_from_slice(&surface_id.to_le_bytes());
    b
}

/// SURFACE_CREATE of a non-primary surface.
fn surface_create(surface_id: u32, w: u32, h: u32, format: u32) -> (u16, Vec<u8>) {
    (314, [surface_id, w, h, format, 0].iter().flat_map(|v| v.to_le_bytes()).collect())
}

/// DRAW_COMPOSITE on `surface_id` over `bbox` with `flags` (operator in
/// the low byte), the source image and an optional mask (HAS_MASK is set
/// here), both origins at (0, 0).
fn composite(surface_id: u32, bbox: (i32, i32, i32, i32), flags: u32, src: Vec<u8>, mask: Option<Vec<u8>>) -> Vec<u8> {
    let mut b = base_on(surface_id, bbox);
    let flags = if mask.is_some() { flags | 1 << 19 } else { flags };
    b.extend_from_slice(&flags.to_le_bytes());
    let ptrs = b.len();
    b.extend_from_slice(&[0; 4]);
    if mask.is_some() {
        b.extend_from_slice(&[0; 4]);
    }
    b.extend_from_slice(&[0; 8]); // src_origin, mask_origin
    let at = b.len() as u32;
    b[ptrs..ptrs + 4].copy_from_slice(&at.to_le_bytes());
    b.extend(src);
    if let Some(mask) = mask {
        let at = b.len() as u32;
        b[ptrs + 4..ptrs + 8].copy_from_slice(&at.to_le_bytes());
        b.extend(mask);
    }
    b
}

/// A 1-bit mask SpiceImage (1BIT_BE, top-down).
fn mask_bitmap(id: u64, w: u32, h: u32, rows: &[u8]) -> Vec<u8> {
    bitmap_image(id, 2, w, h, w.div_ceil(8), rows)
}

/// Appends `tail_after_ptr` pieces around a pointer to `image` placed at
/// the end: `head` + ptr + `mid` + image.
fn with_image(head: Vec<u8>, mid: Vec<u8>, image: Vec<u8>) -> Vec<u8> {
    let mut b = head;
    let ptr_at = b.len();
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend(mid);
    let at = b.len() as u32;
    b[ptr_at..ptr_at + 4].copy_from_slice(&at.to_le_bytes());
    b.extend(image);
    b
}

fn pattern(w: u32, h: u32, seed: u32) -> Vec<u32> {
    (0..w * h).map(|i| (i.wrapping_mul(2654435761) ^ seed).wrapping_mul(2246822519) & 0x00ff_ffff).collect()
}

/// A 12x12 premultiplied RGBA image: [`pattern`] colours scaled by alpha
/// `(i * step + first) & 0xff` for pixel `i`.
fn premultiplied(seed: u32, step: u32, first: u32) -> Vec<u32> {
    pattern(12, 12, seed)
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let a = (i as u32 * step + first) & 0xff;
            // premultiplied: colour channels at most alpha
            let c = |v: u32| (v * a) / 255;
            a << 24 | c((p >> 16) & 0xff) << 16 | c((p >> 8) & 0xff) << 8 | c(p & 0xff)
        })
        .collect()
}

/// SURFACE_CREATE of the W x H primary in `format`, then a DRAW_FILL of
/// the background colour over it.
fn primary_with_background(format: u32) -> Vec<(u16, Vec<u8>)> {
    let create: Vec<u8> = [0u32, W as u32, H as u32, format, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut fill = base((0, 0, H, W));
    fill.extend(solid(0x0040_4040));
    fill.extend_from_slice(&PUT.to_le_bytes());
    fill.extend(no_mask());
    vec![(314, create), (302, fill)]
}

const PUT: u16 = 1 << 3;
const XOR: u16 = 1 << 6;

/// An area of the primary surface drawn by one kind of message:
/// (name, t, l, b, r).
type Area = (&'static str, i32, i32, i32, i32);

/// The areas of [`messages`].
const AREAS: &[Area] = &[
    ("copy", 2, 2, 14, 14),
    ("scaled nearest", 2, 16, 14, 28),
    ("scaled interpolate", 2, 30, 14, 42),
    ("opaque xor", 2, 44, 14, 56),
    ("rop3 0x96", 16, 2, 28, 14),
    ("transparent", 16, 16, 28, 28),
    ("alpha blend", 16, 30, 28, 42),
    ("masked fill", 16, 44, 28, 56),
    ("text", 30, 2, 42, 14),
    ("composite over", 30, 30, 42, 42),
    ("scaled rop3 bilinear", 30, 16, 42, 28),
    ("scaled transparent", 30, 44, 42, 56),
];

/// The scripted display messages on a primary surface of `format`
/// (`SPICE_SURFACE_FMT_32_xRGB` = 32, `16_555` = 16, `16_565` = 80); brush
/// colours are in the surface's own format, so on 16-bit surfaces they are
/// other colours, the same for both renderers.
fn messages(format: u32) -> Vec<(u16, Vec<u8>)> {
    let mut m = primary_with_background(format);
    let copy_tail = |rop: u16, scale: u8| {
        let mut t = Vec::new();
        t.extend_from_slice(&rop.to_le_bytes());
        t.push(scale);
        t.extend(no_mask());
        t
    };
    // copy
    let mut mid = rect(0, 0, 12, 12);
    mid.extend(copy_tail(PUT, 1));
    m.push((304, with_image(base((2, 2, 14, 14)), mid, bitmap(1, 8, 12, 12, &pattern(12, 12, 1)))));
    // scaled nearest / interpolate: 6x6 into 12x12
    for (scale, l) in [(1u8, 16), (0u8, 30)] {
        let mut mid = rect(0, 0, 6, 6);
        mid.extend(copy_tail(PUT, scale));
        m.push((
            304,
            with_image(base((2, l, 14, l + 12)), mid, bitmap(2 + u64::from(scale), 8, 6, 6, &pattern(6, 6, 2))),
        ));
    }
    // opaque: image then brush XOR
    let mut mid = rect(0, 0, 12, 12);
    mid.extend(solid(0x00ff_0000));
    mid.extend_from_slice(&XOR.to_le_bytes());
    mid.push(1);
    mid.extend(no_mask());
    m.push((303, with_image(base((2, 44, 14, 56)), mid, bitmap(4, 8, 12, 12, &pattern(12, 12, 4)))));
    // rop3 0x96 with a solid brush
    let mut mid = rect(0, 0, 12, 12);
    mid.extend(solid(0x0012_3456));
    mid.extend_from_slice(&[0x96, 1]);
    mid.extend(no_mask());
    m.push((309, with_image(base((16, 2, 28, 14)), mid, bitmap(5, 8, 12, 12, &pattern(12, 12, 5)))));
    // transparent: key colour 0x00ff00ff in a checkerboard
    let checker: Vec<u32> =
        (0..144).map(|i| if (i / 12 + i % 12) % 2 == 0 { 0x00ff_00ff } else { 0x0000_ff00 }).collect();
    let mut mid = rect(0, 0, 12, 12);
    mid.extend_from_slice(&0u32.to_le_bytes());
    mid.extend_from_slice(&0x00ff_00ffu32.to_le_bytes());
    m.push((312, with_image(base((16, 16, 28, 28)), mid, bitmap(6, 8, 12, 12, &checker))));
    // alpha blend 0x80 of an opaque image
    let mut head = base((16, 30, 28, 42));
    head.extend_from_slice(&[0, 0x80]);
    m.push((313, with_image(head, rect(0, 0, 12, 12), bitmap(7, 8, 12, 12, &pattern(12, 12, 7)))));
    // fill through a 1-bit mask (diagonal stripes)
    let mut head = base((16, 44, 28, 56));
    head.extend(solid(0x00ff_ff00));
    head.extend_from_slice(&PUT.to_le_bytes());
    head.push(0);
    head.extend([0u8; 8]);
    let rows: Vec<u8> = (0..12u32).flat_map(|y| [(0xccccu16 >> (y % 4)) as u8, 0xf0]).collect();
    m.push((302, with_image(head, Vec::new(), mask_bitmap(8, 12, 12, &rows))));
    // text: one A1 glyph 8x8, white on the background
    let mut head = base((30, 2, 42, 14));
    let mut mid = rect(30, 2, 30, 2); // empty back area
    mid.extend(solid(0x00ff_ffff));
    mid.push(0); // back brush none
    mid.extend_from_slice(&PUT.to_le_bytes());
    mid.extend_from_slice(&PUT.to_le_bytes());
    let mut string = 1u16.to_le_bytes().to_vec();
    string.push(1); // RASTER_A1
    for v in [4i32, 38, 0, -8] {
        string.extend_from_slice(&v.to_le_bytes());
    }
    string.extend_from_slice(&8u16.to_le_bytes());
    string.extend_from_slice(&8u16.to_le_bytes());
    string.extend_from_slice(&[0x18, 0x3c, 0x66, 0xc3, 0xff, 0xc3, 0xc3, 0x81]);
    head.truncate(head.len());
    m.push((311, with_image(head, mid, string)));
    // stroke: a diagonal line over the whole surface
    let mut head = base((0, 0, H, W));
    let mut mid = vec![0u8]; // line flags
    mid.extend(solid(0x0000_ffff));
    mid.extend_from_slice(&PUT.to_le_bytes());
    mid.extend_from_slice(&PUT.to_le_bytes());
    let mut path = 1u32.to_le_bytes().to_vec();
    path.push(1 | 2); // BEGIN | END
    path.extend_from_slice(&2u32.to_le_bytes());
    for v in [1i32 << 4, 45 << 4, 60 << 4, 3 << 4] {
        path.extend_from_slice(&v.to_le_bytes());
    }
    head.truncate(head.len());
    m.push((310, with_image(head, mid, path)));
    // composite OVER of a semi-transparent RGBA image
    let mut head = base((30, 30, 42, 42));
    head.extend_from_slice(&3u32.to_le_bytes()); // op OVER, no mask, no transforms
    let argb = premultiplied(9, 21, 0);
    let mut mid = Vec::new();
    mid.extend_from_slice(&[0, 0, 0, 0]); // src_origin, mask_origin (i16 x2 each)
    mid.extend_from_slice(&[0, 0, 0, 0]);
    m.push((318, with_image(head, mid, bitmap(10, 9, 12, 12, &argb))));
    // rop3 0x96 of a 5x7 image scaled (bilinear) onto 12x12, from (1, 0)
    let mut mid = rect(0, 1, 7, 6);
    mid.extend(solid(0x0012_3456));
    mid.extend_from_slice(&[0x96, 0]);
    mid.extend(no_mask());
    m.push((309, with_image(base((30, 16, 42, 28)), mid, bitmap(11, 8, 6, 7, &pattern(6, 7, 11)))));
    // transparent: a 6x6 checkerboard scaled onto 12x12
    let checker: Vec<u32> = (0..36).map(|i| if (i / 6 + i % 6) % 2 == 0 { 0x00ff_00ff } else { 0x0000_ffff }).collect();
    let mut mid = rect(0, 0, 6, 6);
    mid.extend_from_slice(&0u32.to_le_bytes());
    mid.extend_from_slice(&0x00ff_00ffu32.to_le_bytes());
    m.push((312, with_image(base((30, 44, 42, 56)), mid, bitmap(12, 8, 6, 6, &checker))));
    m.push((102, Vec::new())); // MARK
    m
}

/// A path segment: `SPICE_PATH_*` flags and 28.4 points.
type PathSeg = (u8, Vec<(i32, i32)>);

/// One stroke of [`stroke_messages`]: line flags, style (28.4), brush,
/// ROP, path segments.
type StrokeCase = (u8, Vec<i32>, StrokeBrush, u16, Vec<PathSeg>);

/// A DRAW_STROKE brush: solid colour, or a pattern image and its `pos`.
enum StrokeBrush {
    Solid(u32),
    Pattern(Vec<u8>, (i32, i32)),
}

/// A DRAW_STROKE body on the primary: `bbox`, no clip, `line_flags` with
/// `style` (28.4 lengths) when styled, and path segments of 28.4 points.
fn stroke(
    bbox: (i32, i32, i32, i32),
    line_flags: u8,
    style: &[i32],
    brush: StrokeBrush,
    rop: u16,
    segments: &[PathSeg],
) -> Vec<u8> {
    let patch = |b: &mut Vec<u8>, at: usize| {
        let here = b.len() as u32;
        b[at..at + 4].copy_from_slice(&here.to_le_bytes());
    };
    let mut b = base(bbox);
    let path_at = b.len();
    b.extend_from_slice(&0u32.to_le_bytes());
    b.push(line_flags);
    let style_at = (line_flags & STYLED != 0).then(|| {
        b.push(style.len() as u8);
        b.extend_from_slice(&0u32.to_le_bytes());
        b.len() - 4
    });
    let image = match brush {
        StrokeBrush::Solid(color) => {
            b.extend(solid(color));
            None
        }
        StrokeBrush::Pattern(image, pos) => {
            b.push(2);
            b.extend_from_slice(&0u32.to_le_bytes());
            b.extend_from_slice(&pos.0.to_le_bytes());
            b.extend_from_slice(&pos.1.to_le_bytes());
            Some((b.len() - 12, image))
        }
    };
    b.extend_from_slice(&rop.to_le_bytes());
    b.extend_from_slice(&PUT.to_le_bytes());
    if let Some(at) = style_at {
        patch(&mut b, at);
        b.extend(style.iter().flat_map(|v| v.to_le_bytes()));
    }
    if let Some((at, image)) = image {
        patch(&mut b, at);
        b.extend(image);
    }
    patch(&mut b, path_at);
    b.extend_from_slice(&(segments.len() as u32).to_le_bytes());
    for (flags, points) in segments {
        b.push(*flags);
        b.extend_from_slice(&(points.len() as u32).to_le_bytes());
        b.extend(points.iter().flat_map(|(x, y)| x.to_le_bytes().into_iter().chain(y.to_le_bytes())));
    }
    b
}

const STYLED: u8 = 1 << 3;
const START_WITH_GAP: u8 = 1 << 2;
const BEGIN_END: u8 = 1 | 2;
const CLOSE: u8 = 1 << 3;
const BEZIER: u8 = 1 << 4;

/// Whole pixels as 28.4.
fn px(points: &[(i32, i32)]) -> Vec<(i32, i32)> {
    points.iter().map(|&(x, y)| (x << 4, y << 4)).collect()
}

/// The areas of [`stroke_messages`].
const STROKE_AREAS: &[Area] = &[
    ("dashed polyline", 2, 2, 14, 14),
    ("dashed closed xor", 2, 16, 14, 28),
    ("start with gap", 2, 30, 14, 42),
    ("pattern line", 2, 44, 14, 56),
    ("dashed pattern or", 16, 2, 28, 14),
    ("dashed bezier", 16, 16, 28, 28),
    ("dashed fractional", 16, 30, 28, 42),
    ("dashed open xor", 16, 44, 28, 56),
    ("long dashes, sharp turns", 30, 2, 46, 28),
];

/// Dashed and pattern-brush strokes: polylines with mitred and bevelled
/// joins, closed paths, span-group ROPs (XOR), Bézier curves and 28.4
/// fractions, each inside its own area.
fn stroke_messages() -> Vec<(u16, Vec<u8>)> {
    let mut m = primary_with_background(32);
    let solid = StrokeBrush::Solid;
    let dash = |v: &[i32]| v.iter().map(|d| d << 4).collect::<Vec<_>>();
    let pattern_brush = |id, w, h, pos| StrokeBrush::Pattern(bitmap(id, 8, w, h, &pattern(w, h, id as u32)), pos);
    let fractional = vec![(30 * 16 + 5, 16 * 16 + 9), (41 * 16 + 3, 27 * 16 + 12), (33 * 16 + 15, 27 * 16 + 1)];
    let cases: Vec<StrokeCase> = vec![
        (STYLED, dash(&[3, 2]), solid(0x00ff_ff00), PUT, vec![(BEGIN_END, px(&[(2, 3), (13, 3), (5, 13), (13, 12)]))]),
        (
            STYLED,
            dash(&[4, 1, 1, 1]),
            solid(0x00ff_00ff),
            XOR,
            vec![(BEGIN_END | CLOSE, px(&[(17, 3), (27, 5), (19, 13)]))],
        ),
        (
            STYLED | START_WITH_GAP,
            dash(&[2, 3, 1]),
            solid(0x0000_ff80),
            PUT,
            vec![(BEGIN_END, px(&[(30, 2), (41, 6), (31, 9)])), (BEGIN_END, px(&[(33, 13), (40, 2)]))],
        ),
        (
            0,
            vec![],
            pattern_brush(30, 4, 3, (1, 2)),
            PUT,
            vec![(BEGIN_END, px(&[(44, 2), (55, 13), (44, 13), (55, 3)]))],
        ),
        (
            STYLED,
            dash(&[5, 2]),
            pattern_brush(31, 3, 5, (0, 0)),
            1 << 4, // OR
            vec![(BEGIN_END, px(&[(2, 17), (13, 17), (13, 27), (2, 20)]))],
        ),
        (
            STYLED,
            dash(&[3, 1]),
            solid(0x00ff_8000),
            PUT,
            vec![(1, px(&[(16, 27)])), (BEZIER | 2, px(&[(18, 10), (30, 36), (27, 17)]))],
        ),
        (STYLED, vec![37, 21, 9, 30], solid(0x0080_ffff), PUT, vec![(BEGIN_END, fractional)]),
        (
            STYLED,
            dash(&[6, 1]),
            solid(0x0000_ff00),
            XOR,
            vec![(BEGIN_END, px(&[(44, 16), (55, 27), (55, 16), (44, 27)]))],
        ),
        (
            STYLED,
            dash(&[9, 2, 1, 2]),
            solid(0x00ff_ffff),
            PUT,
            vec![(BEGIN_END, px(&[(2, 31), (27, 33), (3, 35), (27, 44), (26, 31), (14, 45)]))],
        ),
    ];
    for ((_, t, l, b, r), (flags, style, brush, rop, path)) in STROKE_AREAS.iter().zip(cases) {
        m.push((310, stroke((*t, *l, *b, *r), flags, &style, brush, rop, &path)));
    }
    m.push((102, Vec::new()));
    m
}

/// The areas of [`offscreen_messages`].
const OFFSCREEN_AREAS: &[Area] = &[
    ("A8 surface mask", 2, 2, 14, 14),
    ("DEST_OPAQUE on ARGB", 2, 30, 14, 42),
    ("8BIT_A bitmap mask", 16, 2, 28, 14),
    ("ARGB surface source", 16, 30, 28, 42),
];

/// Off-screen surfaces (8_A, 1_A, 32_ARGB) drawn on, then brought onto the
/// 32-bit primary as composite masks, sources or copies.
fn offscreen_messages() -> Vec<(u16, Vec<u8>)> {
    const OVER: u32 = 3;
    const OUT: u32 = 7;
    const SRC: u32 = 1;
    const DEST_OPAQUE: u32 = 1 << 24;
    let mut m = primary_with_background(32);
    let gradient: Vec<u8> = (0..144u32).map(|i| ((i % 12 + i / 12) * 11) as u8).collect();
    let argb = premultiplied(21, 37, 0);
    // Surface 1, 8_A: fills (alpha from the colour's low byte), one XOR;
    // it masks an opaque image onto the primary. (spice-gtk can only fill
    // an 8_A surface: a DRAW_COPY or DRAW_COMPOSITE onto it, or a copy from
    // it onto a 32-bit surface, aborts in spice_pixman_blit, which blits
    // only equal depths of 16 or 32 bits; a 1_A surface cannot even be
    // filled.)
    m.push(surface_create(1, 12, 12, 8));
    for (bbox, color, rop) in
        [((0, 0, 12, 12), 0x1234_56c0, PUT), ((0, 0, 12, 4), 0x80, PUT), ((6, 0, 12, 12), 0x3c, XOR)]
    {
        let mut fill = base_on(1, bbox);
        fill.extend(solid(color));
        fill.extend_from_slice(&rop.to_le_bytes());
        fill.extend(no_mask());
        m.push((302, fill));
    }
    let src = || bitmap(31, 8, 12, 12, &pattern(12, 12, 31));
    m.push((318, composite(0, (2, 2, 14, 14), OVER, src(), Some(surface_image(1, 12, 12)))));
    // Surface 3, 32_ARGB, transparent: OUT with DEST_OPAQUE, then copied.
    m.push(surface_create(3, 12, 12, 96));
    m.push((318, composite(3, (0, 0, 12, 12), OUT | DEST_OPAQUE, src(), None)));
    let mut mid = rect(0, 0, 12, 12);
    mid.extend_from_slice(&PUT.to_le_bytes());
    mid.push(1);
    mid.extend(no_mask());
    m.push((304, with_image(base((2, 30, 14, 42)), mid, surface_image(3, 12, 12))));
    // (A DRAW_COPY from the 8_A surface onto the primary would abort
    // spice-gtk: spice_pixman_blit asserts equal depths.)
    // An 8BIT_A bitmap (not a surface) as a mask.
    m.push((318, composite(0, (16, 2, 28, 14), OVER, src(), Some(alpha_bitmap(33, 12, 12, &gradient)))));
    // Surface 5, 32_ARGB: the RGBA image composited in, then OVER the
    // primary as a surface source.
    m.push(surface_create(5, 12, 12, 96));
    m.push((318, composite(5, (0, 0, 12, 12), SRC, bitmap(35, 9, 12, 12, &argb), None)));
    m.push((318, composite(0, (16, 30, 28, 42), OVER, surface_image(5, 12, 12), None)));
    m.push((102, Vec::new()));
    m
}

/// The areas of [`blend_mode_messages`]: the PDF separable blend modes
/// pixman computes with integers, unified and with component alpha.
const BLEND_AREAS: &[Area] = &[
    ("MULTIPLY", 2, 2, 14, 14),
    ("SCREEN", 2, 16, 14, 28),
    ("OVERLAY", 2, 30, 14, 42),
    ("DARKEN", 2, 44, 14, 56),
    ("LIGHTEN", 16, 2, 28, 14),
    ("HARD_LIGHT", 16, 16, 28, 28),
    ("DIFFERENCE", 16, 30, 28, 42),
    ("EXCLUSION", 16, 44, 28, 56),
    ("MULTIPLY component alpha", 30, 2, 42, 14),
    ("OVERLAY component alpha", 30, 16, 42, 28),
    ("DIFFERENCE component alpha", 30, 30, 42, 42),
    ("OVER, SOURCE_OPAQUE on a bitmap", 30, 44, 42, 56),
];

const COMPONENT_ALPHA: u32 = 1 << 18;
const SOURCE_OPAQUE: u32 = 1 << 22;

/// Each area of `areas` gets an opaque pattern, then a semi-transparent
/// RGBA image composited with the matching flags of `cases` (operator and
/// flag bits), through an RGBA mask when the case says so. On a primary of
/// `format`; image ids from `first_id`.
fn composite_cases(format: u32, areas: &[Area], cases: &[(u32, bool)], first_id: u64) -> Vec<(u16, Vec<u8>)> {
    let mut m = primary_with_background(format);
    for (i, ((_, t, l, b, r), &(flags, masked))) in areas.iter().zip(cases).enumerate() {
        let mut mid = rect(0, 0, 12, 12);
        mid.extend_from_slice(&PUT.to_le_bytes());
        mid.push(1);
        mid.extend(no_mask());
        let id = first_id + 3 * i as u64;
        let seed = first_id as u32 + i as u32;
        m.push((304, with_image(base((*t, *l, *b, *r)), mid, bitmap(id, 8, 12, 12, &pattern(12, 12, 10 + seed)))));
        let src = bitmap(id + 1, 9, 12, 12, &premultiplied(20 + seed, 29, 40));
        let mask = masked.then(|| bitmap(id + 2, 9, 12, 12, &premultiplied(30 + seed, 53, 40)));
        m.push((318, composite(0, (*t, *l, *b, *r), flags, src, mask)));
    }
    m.push((102, Vec::new()));
    m
}

/// The integer PDF blend modes, three with a component-alpha mask, and
/// OVER with SOURCE_OPAQUE, which spice-gtk applies to surfaces only.
fn blend_mode_messages() -> Vec<(u16, Vec<u8>)> {
    let ca = |op| (op | COMPONENT_ALPHA, true);
    let cases = [
        (0x30, false),
        (0x31, false),
        (0x32, false),
        (0x33, false),
        (0x34, false),
        (0x37, false),
        (0x39, false),
        (0x3a, false),
        ca(0x30),
        ca(0x32),
        ca(0x39),
        (3 | SOURCE_OPAQUE, false),
    ];
    composite_cases(32, BLEND_AREAS, &cases, 40)
}

/// The areas of [`float_op_messages`].
const FLOAT_AREAS: &[Area] = &[
    ("COLOR_DODGE", 2, 2, 14, 14),
    ("COLOR_BURN", 2, 16, 14, 28),
    ("SOFT_LIGHT", 2, 30, 14, 42),
    ("HSL_HUE", 2, 44, 14, 56),
    ("HSL_SATURATION", 16, 2, 28, 14),
    ("HSL_COLOR", 16, 16, 28, 28),
    ("HSL_LUMINOSITY", 16, 30, 28, 42),
    ("SATURATE", 16, 44, 28, 56),
    ("DISJOINT_OVER", 30, 2, 42, 14),
    ("CONJOINT_ATOP", 30, 16, 42, 28),
    ("SOFT_LIGHT component alpha", 30, 30, 42, 42),
    ("HSL_HUE through a mask", 30, 44, 42, 56),
];

/// The operators pixman composites in floating point, on a primary of
/// `format`.
fn float_op_messages(format: u32) -> Vec<(u16, Vec<u8>)> {
    let cases = [
        (0x35, false),
        (0x36, false),
        (0x38, false),
        (0x3b, false),
        (0x3c, false),
        (0x3d, false),
        (0x3e, false),
        (0x0d, false),
        (0x13, false),
        (0x29, false),
        (0x38 | COMPONENT_ALPHA, true),
        (0x3b, true),
    ];
    composite_cases(format, FLOAT_AREAS, &cases, 80)
}

#[test]
fn scripted_float_composite_operators() {
    draws_case(float_op_messages(32), FLOAT_AREAS);
}

#[test]
fn scripted_float_composite_operators_on_a_16_bit_565_surface() {
    draws_case(float_op_messages(80), FLOAT_AREAS);
}

/// A DRAW_COMPOSITE on the primary with a source transform (16.16,
/// `t00 t01 t02 t10 t11 t12`) and source origin, no mask.
fn transformed_composite(
    bbox: (i32, i32, i32, i32),
    flags: u32,
    src: Vec<u8>,
    t: [f64; 6],
    origin: (i16, i16),
) -> Vec<u8> {
    let mut b = base(bbox);
    b.extend_from_slice(&(flags | 1 << 20).to_le_bytes());
    let ptr = b.len();
    b.extend_from_slice(&[0; 4]);
    for v in t {
        b.extend_from_slice(&((v * 65536.0).round() as i32).to_le_bytes());
    }
    b.extend_from_slice(&origin.0.to_le_bytes());
    b.extend_from_slice(&origin.1.to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    let at = b.len() as u32;
    b[ptr..ptr + 4].copy_from_slice(&at.to_le_bytes());
    b.extend(src);
    b
}

/// The areas of [`transform_messages`].
const TRANSFORM_AREAS: &[Area] = &[
    ("bilinear scale, repeat none", 2, 2, 14, 14),
    ("bilinear shear, repeat normal", 2, 16, 14, 28),
    ("good filter upscale, repeat pad", 2, 30, 14, 42),
    ("nearest rotation, repeat reflect", 2, 44, 14, 56),
    ("bilinear rotation, RGBA over", 16, 2, 28, 14),
];

/// DRAW_COMPOSITE with source transforms that sample between pixels.
fn transform_messages(format: u32) -> Vec<(u16, Vec<u8>)> {
    const OVER: u32 = 3;
    const SRC: u32 = 1;
    let filter = |f: u32| f << 8;
    let repeat = |r: u32| r << 14;
    let mut m = primary_with_background(format);
    let opaque = |id, seed| bitmap(id, 8, 8, 8, &pattern(8, 8, seed));
    let rgba = |id, seed| bitmap(id, 9, 12, 12, &premultiplied(seed, 37, 20));
    let cases = [
        (OVER | filter(4), rgba(120, 1), [0.6, 0.0, 1.3, 0.0, 0.6, 0.25], (0, 0)),
        (SRC | filter(4) | repeat(1), opaque(121, 2), [0.8, 0.3, 0.0, -0.3, 0.8, 2.0], (3, 1)),
        (SRC | filter(1) | repeat(2), opaque(122, 3), [0.35, 0.0, -0.2, 0.0, 0.45, 0.1], (-2, 0)),
        (SRC | filter(3) | repeat(3), opaque(123, 4), [0.7, -0.7, 6.0, 0.7, 0.7, -2.0], (0, 0)),
        (OVER | filter(4), rgba(124, 5), [0.87, -0.5, 4.0, 0.5, 0.87, -3.0], (1, 2)),
    ];
    for ((_, t, l, b, r), (flags, src, transform, origin)) in TRANSFORM_AREAS.iter().zip(cases) {
        m.push((318, transformed_composite((*t, *l, *b, *r), flags, src, transform, origin)));
    }
    m.push((102, Vec::new()));
    m
}

#[test]
fn scripted_transformed_composites() {
    draws_case(transform_messages(32), TRANSFORM_AREAS);
}

#[test]
fn scripted_transformed_composites_on_a_16_bit_565_surface() {
    draws_case(transform_messages(80), TRANSFORM_AREAS);
}

#[test]
fn scripted_blend_modes_render_as_spice_gtk_draws_them() {
    draws_case(blend_mode_messages(), BLEND_AREAS);
}

#[test]
fn scripted_draws_render_as_spice_gtk_draws_them() {
    draws_case(messages(32), AREAS);
}

#[test]
fn scripted_draws_on_a_16_bit_565_surface() {
    draws_case(messages(80), AREAS);
}

#[test]
fn scripted_draws_on_a_16_bit_555_surface() {
    draws_case(messages(16), AREAS);
}

#[test]
fn scripted_dashed_and_pattern_strokes() {
    draws_case(stroke_messages(), STROKE_AREAS);
}

#[test]
fn scripted_draws_on_off_screen_alpha_and_argb_surfaces() {
    draws_case(offscreen_messages(), OFFSCREEN_AREAS);
}

/// The areas of [`mjpeg_stream_messages`].
const MJPEG_AREAS: &[Area] = &[("MJPEG frame recorded from QEMU", 2, 2, 12, 34), ("MJPEG 4:2:0 noise", 14, 2, 43, 39)];

/// Two MJPEG video streams (spice-gtk decodes their frames with
/// `channel-display-mjpeg.c`'s settings: fast IDCT, replicated chroma):
/// a 32x10 frame recorded from QEMU, and a 37x29 picture of random pixels
/// at 4:2:0 from cjpeg, where the IDCT and upsampling settings show most.
/// spice-gtk shows a frame at its multimedia time and drops late ones, so
/// each stream sends its frame three times, 1.5, 2.5 and 3.5 s after
/// SPICE_MSG_MAIN_INIT (whose multimedia time is 0).
fn mjpeg_stream_messages() -> Vec<(u16, Vec<u8>)> {
    const STREAM_CREATE: u16 = 122;
    const STREAM_DATA: u16 = 123;
    let fixture = |name: &str| {
        std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jpeg").join(name)).unwrap()
    };
    let mut m = primary_with_background(32);
    let streams =
        [(1u32, "qemu-linux-mjpeg-frame.jpg", (2, 2), (32, 10)), (2, "cjpeg/n37x29-2x2.jpg", (14, 2), (37, 29))];
    for (id, name, (t, l), (w, h)) in streams {
        // surface_id, id, flags (TOP_DOWN), codec (MJPEG), stamp, stream
        // and source sizes, dest, clip NONE (spice-protocol `spice.proto`).
        let mut create = [0u32, id].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
        create.extend([1u8, 1]);
        create.extend(0u64.to_le_bytes());
        create.extend([w, h, w, h].iter().flat_map(|v: &u32| v.to_le_bytes()));
        create.extend(rect(t, l, t + h as i32, l + w as i32));
        create.push(0);
        m.push((STREAM_CREATE, create));
        let frame = fixture(name);
        for mm_time in [1500u32, 2500, 3500] {
            let mut data = [id, mm_time, frame.len() as u32].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
            data.extend(&frame);
            m.push((STREAM_DATA, data));
        }
    }
    m
}

#[test]
fn scripted_mjpeg_stream_frames() {
    draws_case_settling(mjpeg_stream_messages(), MJPEG_AREAS, "2");
}

fn draws_case(messages: Vec<(u16, Vec<u8>)>, areas: &[Area]) {
    draws_case_settling(messages, areas, "1")
}

/// Serves `messages` to spice-gtk through spicetap, saves spice-gtk's
/// surface once the display was quiet for `settle` seconds, and requires
/// `spicetap render` of the recording to equal it in every pixel (and
/// spice-gtk to have drawn into each of `areas`).
fn draws_case_settling(messages: Vec<(u16, Vec<u8>)>, areas: &[Area], settle: &str) {
    let dir = Scratch::new("draws");
    let server = FakeServer::start(messages);
    let mut tap = Spicetap::start(&dir.path, &format!("127.0.0.1:{}", server.port), true, &["--no-video"]);
    let go = dir.path.join("go");
    std::fs::write(&go, "go").unwrap();
    let shot = dir.path.join("spice-gtk.ppm");
    spice_gtk_shot_with(tap.port(), &shot, &go, &["--settle", settle, "--timeout", "60"], Duration::from_secs(90));
    tap.stop();
    let session = tap.sessions().pop().unwrap();
    let png = session.join("rendered.png");
    let r =
        run_bounded(Command::new(SPICETAP).arg("render").arg(&session).arg("--png").arg(&png), Duration::from_secs(60));
    eprintln!("{}", String::from_utf8_lossy(&r.stderr));
    let (_, _, rendered) = read_png(&png);
    let (w, h, expected) = read_ppm(&shot);
    assert_eq!((w, h), (W as usize, H as usize));
    // The bottom-right corner is never drawn over.
    let corner = ((H * W - 1) * 3) as usize;
    let background = &expected[corner..corner + 3];
    let mut report = Vec::new();
    let mut total = 0;
    for y in 0..H {
        for x in 0..W {
            let i = (y * W + x) as usize * 3;
            if rendered[i..i + 3] != expected[i..i + 3] {
                total += 1;
            }
        }
    }
    for (name, t, l, b, rr) in areas {
        let mut n = 0;
        for y in *t..*b {
            for x in *l..*rr {
                let i = (y * W + x) as usize * 3;
                if rendered[i..i + 3] != expected[i..i + 3] {
                    n += 1;
                }
            }
        }
        let drawn = (*t..*b)
            .flat_map(|y| (*l..*rr).map(move |x| (y * W + x) as usize * 3))
            .filter(|&i| expected[i..i + 3] != background[..])
            .count();
        assert!(drawn > 0, "{name}: spice-gtk left the area as background; the message was not drawn");
        report.push(format!("{name}: {n} of {drawn} drawn pixels differ"));
    }
    eprintln!("{}\ntotal: {total}", report.join("\n"));
    assert!(r.status.success(), "spicetap render: {}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(total, 0, "{}", report.join("; "));
}

//! `SPICE_MSG_DISPLAY_DRAW_TEXT`, parsed and drawn as spice-gtk's software
//! canvas draws it (spice-common `sw_canvas.c` `canvas_draw_text`,
//! `canvas_base.c` `canvas_get_str_mask`, `canvas_put_glyph_bits`).
//!
//! ```text
//! DRAW_TEXT    base DisplayBase, str String* (non-null), back_area Rect,
//!              fore_brush Brush, back_brush Brush, fore_mode u16, back_mode u16
//! String       length u16, flags u8 (A1 1, A4 2, A8 4, TOP_DOWN 8), glyphs inline
//! RasterGlyph  render_pos Point, glyph_origin Point, width u16, height u16,
//!              data[((width * bpp + 7) / 8) * height]
//! ```
//!
//! The demarshaller picks the glyph depth with `flags & A1`, else `& A4`,
//! else `& A8`; with none of them the glyphs are not parsed and the canvas
//! draws only the background ("vector glyphs" are unsupported).
//!
//! What spice-gtk does, mirrored here:
//! - glyph box = `render_pos + glyph_origin` (added), `width` × `height`;
//! - glyph rows are stored bottom-up (`RASTER_TOP_DOWN` is ignored, a
//!   "todo" in spice-common);
//! - A1 rows are MSB-first (bit 7 of the first byte is the leftmost pixel);
//!   A4 rows are high nibble first, each nibble `n` giving coverage `n << 4`;
//!   A8 rows are read one row too high (`src += width * lines` before the
//!   first row): row `height - 1 - j` of the mask reads stored row `j + 1`,
//!   so the bottom-most stored row is never used and the top mask row reads
//!   past the glyph; those bytes are taken as 0 here;
//! - glyphs are merged into one mask with `MAX`;
//! - the background: if `back_area` is not empty, `fore_mode` must be
//!   exactly `OP_PUT` or nothing at all is drawn; `back_area ∩ region` is
//!   filled with the back brush as a plain copy (`back_mode` is ignored;
//!   a NONE back brush fills 0);
//! - the foreground brush is composited `OVER` through the mask (fore_mode is
//!   otherwise ignored), solid colours being opaque; a NONE fore brush draws
//!   nothing; on a `32_xRGB` surface the mask rectangle's alpha is then
//!   cleared if its first pixel's alpha is 0xff (`clear_dest_alpha`).

use thiserror::Error;

use super::canvas::{FMT_32_XRGB, Rop, Surface, ropd};
use super::display::{Brush, Clip, DisplayBase, Point, Rect};
use super::image::Pixels;
use crate::limits::{MAX_CLIP_RECTS, MAX_SURFACE_PIXELS};
use crate::wire::{Reader, WireError};

/// `SPICE_STRING_FLAGS_*` (spice-common `spice.proto` `string_flags`).
#[allow(missing_docs)]
pub mod string_flags {
    pub const RASTER_A1: u8 = 1 << 0;
    pub const RASTER_A4: u8 = 1 << 1;
    pub const RASTER_A8: u8 = 1 << 2;
    pub const RASTER_TOP_DOWN: u8 = 1 << 3;
}

/// Smallest encoded glyph: two points and two u16.
const GLYPH_HEADER: usize = 20;

/// A DRAW_TEXT body that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TextError {
    /// The body ended early.
    #[error(transparent)]
    Short(#[from] WireError),
    /// More clip rectangles than [`MAX_CLIP_RECTS`].
    #[error("{0} clip rectangles, more than {MAX_CLIP_RECTS}")]
    TooManyRects(u32),
    /// The string offset is 0 or outside the body.
    #[error("string offset {0} outside the body")]
    BadOffset(u32),
    /// A value outside its enumeration.
    #[error("invalid {what} {value}")]
    Invalid {
        /// Which field.
        what: &'static str,
        /// The value.
        value: u32,
    },
}

/// `SpiceRasterGlyph`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Glyph<'a> {
    /// Pen position.
    pub render_pos: Point,
    /// Offset of the glyph box from the pen position.
    pub glyph_origin: Point,
    /// Width in pixels.
    pub width: u16,
    /// Height in pixels.
    pub height: u16,
    /// Rows (bottom-up as spice-gtk reads them), each padded to a byte.
    pub data: &'a [u8],
}

impl Glyph<'_> {
    /// The glyph box `(left, top)` (64-bit: no overflow).
    fn origin(&self) -> (i64, i64) {
        (
            i64::from(self.render_pos.x) + i64::from(self.glyph_origin.x),
            i64::from(self.render_pos.y) + i64::from(self.glyph_origin.y),
        )
    }
}

/// A parsed `SPICE_MSG_DISPLAY_DRAW_TEXT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text<'a> {
    /// Target surface, bounding box and clip.
    pub base: DisplayBase,
    /// `SpiceString.flags`.
    pub flags: u8,
    /// Glyph depth the demarshaller chose (1, 4 or 8); `None` when no
    /// raster flag is set (no glyphs parsed).
    pub bpp: Option<u8>,
    /// The glyphs.
    pub glyphs: Vec<Glyph<'a>>,
    /// Background rectangle.
    pub back_area: Rect,
    /// Foreground brush.
    pub fore_brush: Brush,
    /// Background brush.
    pub back_brush: Brush,
    /// Foreground ROP descriptor.
    pub fore_mode: u16,
    /// Background ROP descriptor (ignored by spice-gtk).
    pub back_mode: u16,
}

fn read_rect(r: &mut Reader<'_>) -> Result<Rect, WireError> {
    Ok(Rect { top: r.i32()?, left: r.i32()?, bottom: r.i32()?, right: r.i32()? })
}

fn read_point(r: &mut Reader<'_>) -> Result<Point, WireError> {
    Ok(Point { x: r.i32()?, y: r.i32()? })
}

fn read_clip(r: &mut Reader<'_>) -> Result<Clip, TextError> {
    match r.u8()? {
        0 => Ok(Clip::None),
        1 => {
            let n = r.u32()?;
            if n > MAX_CLIP_RECTS {
                return Err(TextError::TooManyRects(n));
            }
            let mut rects = Vec::with_capacity((n as usize).min(r.remaining() / 16));
            for _ in 0..n {
                rects.push(read_rect(r)?);
            }
            Ok(Clip::Rects(rects))
        }
        v => Err(TextError::Invalid { what: "clip type", value: u32::from(v) }),
    }
}

fn read_brush(r: &mut Reader<'_>) -> Result<Brush, TextError> {
    match r.u8()? {
        0 => Ok(Brush::None),
        1 => Ok(Brush::Solid(r.u32()?)),
        2 => Ok(Brush::Pattern { image: r.u32()?, pos: read_point(r)? }),
        v => Err(TextError::Invalid { what: "brush type", value: u32::from(v) }),
    }
}

/// Parses a whole DRAW_TEXT body.
///
/// # Errors
/// [`TextError`] for a short body, a bad string offset, invalid values, or
/// glyph data running past the body.
pub fn parse_text(body: &[u8]) -> Result<Text<'_>, TextError> {
    let mut r = Reader::new(body);
    let base = DisplayBase { surface_id: r.u32()?, bbox: read_rect(&mut r)?, clip: read_clip(&mut r)? };
    let str_at = r.u32()?;
    let back_area = read_rect(&mut r)?;
    let fore_brush = read_brush(&mut r)?;
    let back_brush = read_brush(&mut r)?;
    let fore_mode = r.u16()?;
    let back_mode = r.u16()?;
    let at = usize::try_from(str_at).map_err(|_| TextError::BadOffset(str_at))?;
    if at == 0 || at >= body.len() {
        return Err(TextError::BadOffset(str_at));
    }
    let mut s = Reader::new(&body[at..]);
    let length = s.u16()?;
    let flags = s.u8()?;
    let bpp = if flags & string_flags::RASTER_A1 != 0 {
        Some(1u8)
    } else if flags & string_flags::RASTER_A4 != 0 {
        Some(4)
    } else if flags & string_flags::RASTER_A8 != 0 {
        Some(8)
    } else {
        None
    };
    let mut glyphs = Vec::new();
    if let Some(bpp) = bpp {
        glyphs.reserve(usize::from(length).min(s.remaining() / GLYPH_HEADER));
        for _ in 0..length {
            let render_pos = read_point(&mut s)?;
            let glyph_origin = read_point(&mut s)?;
            let width = s.u16()?;
            let height = s.u16()?;
            // image_size(bpp, w, h): at most 65535 * 8 + 7 bits * 65535 rows, fits u64/usize on 64-bit;
            // computed in u64 and checked against what is left.
            let size = (u64::from(width) * u64::from(bpp)).div_ceil(8) * u64::from(height);
            let size = usize::try_from(size).map_err(|_| WireError { need: usize::MAX, have: s.remaining() })?;
            let data = s.take(size)?;
            glyphs.push(Glyph { render_pos, glyph_origin, width, height, data });
        }
    }
    Ok(Text { base, flags, bpp, glyphs, back_area, fore_brush, back_brush, fore_mode, back_mode })
}

/// A string mask: one coverage byte per pixel (0..=255; A1 gives 0 or 255).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Coverage, top-down, `width` bytes per row.
    pub data: Vec<u8>,
}

impl Mask {
    /// Coverage at (x, y) (0 outside).
    pub fn at(&self, x: u32, y: u32) -> u8 {
        if x >= self.width || y >= self.height {
            return 0;
        }
        self.data.get(y as usize * self.width as usize + x as usize).copied().unwrap_or(0)
    }
}

/// `canvas_get_str_mask`: the glyphs of `text` merged into one mask, and
/// the surface position of its top-left corner (the union of the glyph
/// boxes). `None` when there is nothing to draw: no glyphs, no raster
/// depth, or a mask beyond [`MAX_SURFACE_PIXELS`] or outside `i32`
/// coordinates (where spice-gtk's allocation would fail).
pub fn render_str_mask(text: &Text<'_>) -> Option<(Mask, Point)> {
    let bpp = text.bpp?;
    let first = text.glyphs.first()?;
    let (l, t) = first.origin();
    let (mut left, mut top, mut right, mut bottom) = (l, t, l + i64::from(first.width), t + i64::from(first.height));
    for g in &text.glyphs[1..] {
        let (l, t) = g.origin();
        left = left.min(l);
        top = top.min(t);
        right = right.max(l + i64::from(g.width));
        bottom = bottom.max(t + i64::from(g.height));
    }
    let pos = Point { x: i32::try_from(left).ok()?, y: i32::try_from(top).ok()? };
    i32::try_from(right).ok()?;
    i32::try_from(bottom).ok()?;
    let (w, h) = (u32::try_from(right - left).ok()?, u32::try_from(bottom - top).ok()?);
    if u64::from(w) * u64::from(h) > MAX_SURFACE_PIXELS {
        return None;
    }
    let mut mask = Mask { width: w, height: h, data: vec![0; w as usize * h as usize] };
    for g in &text.glyphs {
        put_glyph(&mut mask, g, bpp, left, top);
    }
    Some((mask, pos))
}

/// `canvas_put_glyph_bits`: merges one glyph into the mask with `MAX`.
fn put_glyph(mask: &mut Mask, g: &Glyph<'_>, bpp: u8, left: i64, top: i64) {
    let (gl, gt) = g.origin();
    // Inside the mask by construction of the bounds.
    let (x0, y0) = ((gl - left) as usize, (gt - top) as usize);
    let (w, lines) = (usize::from(g.width), usize::from(g.height));
    let mw = mask.width as usize;
    let stride = (w * usize::from(bpp)).div_ceil(8);
    for j in 0..lines {
        // Mask row j (top-down) reads a stored row counted from the end.
        let src_row = match bpp {
            8 => lines - j, // spice-gtk's off-by-one: one row too far
            _ => lines - 1 - j,
        };
        let row = g.data.get(src_row * stride..).unwrap_or(&[]);
        let dest = match mask.data.get_mut((y0 + j) * mw + x0..) {
            Some(d) => d,
            None => return,
        };
        for (i, d) in dest.iter_mut().take(w).enumerate() {
            let v = match bpp {
                1 => {
                    if row.get(i / 8).is_some_and(|b| b & (0x80 >> (i % 8)) != 0) {
                        0xff
                    } else {
                        0
                    }
                }
                4 => {
                    let b = row.get(i / 2).copied().unwrap_or(0);
                    if i % 2 == 0 { b & 0xf0 } else { b << 4 }
                }
                _ => row.get(i).copied().unwrap_or(0),
            };
            if v > *d {
                *d = v;
            }
        }
    }
}

/// A brush with its pattern image resolved by the caller.
#[derive(Debug, Clone, Copy)]
pub enum Paint<'a> {
    /// `SPICE_BRUSH_TYPE_NONE`.
    None,
    /// A solid colour as on the wire (in the surface's pixel format).
    Solid(u32),
    /// A pattern image and its `pos`.
    Pattern(&'a Pixels, Point),
}

/// `pixman` `MUL_UN8`: `a * b / 255` rounded.
#[inline]
fn mul_un8(a: u32, b: u32) -> u32 {
    let t = a * b + 0x80;
    ((t >> 8) + t) >> 8
}

/// `OVER` of an opaque source pixel through coverage `m` (pixman
/// `over_n_8_8888`: `src IN m` then `OVER`, saturating per channel).
#[inline]
fn over(src: u32, m: u8, dest: u32) -> u32 {
    let src = src | 0xff00_0000;
    if m == 0xff {
        return src;
    }
    let m = u32::from(m);
    let ia = 255 - m;
    let mut out = 0;
    for shift in [0, 8, 16, 24] {
        let s = mul_un8((src >> shift) & 0xff, m);
        let d = mul_un8((dest >> shift) & 0xff, ia);
        out |= (s + d).min(255) << shift;
    }
    out
}

/// The solid fore colour as `canvas_get_pixman_brush` makes it: each
/// channel `(v & mask) * 0xffff / mask`, 5 bits per channel (565 read as
/// 555, "TODO: This is all wrong now") on 16-bit surfaces, then pixman
/// keeps the top 8 bits.
fn pixman_solid(surface: &Surface, color: u32) -> u32 {
    let (shift, mask) = if surface.is_16bit() { (5, 0x1f) } else { (8, 0xff) };
    let chan = |v: u32| (((v & mask) * 0xffff / mask) >> 8) & 0xff;
    let (b, g, r) = (chan(color), chan(color >> shift), chan(color >> (2 * shift)));
    0xff00_0000 | r << 16 | g << 8 | b
}

/// `canvas_draw_text`: draws `text` on `surface` within `region` (the
/// bounding box ∩ clip ∩ surface, as [`Surface::region`] gives it). `fore`
/// and `back` are `text.fore_brush` and `text.back_brush` resolved.
pub fn draw_text(surface: &mut Surface, region: &[Rect], text: &Text<'_>, fore: Paint<'_>, back: Paint<'_>) {
    let bounds = Rect { top: 0, left: 0, bottom: surface.height as i32, right: surface.width as i32 };
    let region: Vec<Rect> = region.iter().map(|r| r.intersect(&bounds)).filter(|r| !r.is_empty()).collect();
    if region.is_empty() {
        return;
    }
    if !text.back_area.is_empty() {
        if text.fore_mode != ropd::OP_PUT {
            return;
        }
        let back_region: Vec<Rect> =
            region.iter().map(|r| r.intersect(&text.back_area)).filter(|r| !r.is_empty()).collect();
        if !back_region.is_empty() {
            match back {
                Paint::None => surface.fill(&back_region, 0, Rop::PUT),
                Paint::Solid(c) => {
                    let c = surface.brush_color(c);
                    surface.fill(&back_region, c, Rop::PUT);
                }
                Paint::Pattern(p, pos) => surface.fill_pattern(&back_region, p, (pos.x, pos.y), Rop::PUT),
            }
        }
    }
    if matches!(fore, Paint::None) {
        return;
    }
    let Some((mask, pos)) = render_str_mask(text) else {
        return;
    };
    let mask_rect = Rect {
        top: pos.y,
        left: pos.x,
        bottom: pos.y.saturating_add_unsigned(mask.height),
        right: pos.x.saturating_add_unsigned(mask.width),
    };
    let solid = match fore {
        Paint::Solid(c) => Some(pixman_solid(surface, c)),
        _ => None,
    };
    let w = surface.width as usize;
    let mut painted = Vec::new();
    for r in &region {
        let r = r.intersect(&mask_rect);
        if r.is_empty() {
            continue;
        }
        painted.push(r);
        for y in r.top..r.bottom {
            let my = (i64::from(y) - i64::from(pos.y)) as u32;
            for x in r.left..r.right {
                let m = mask.at((i64::from(x) - i64::from(pos.x)) as u32, my);
                if m == 0 {
                    continue;
                }
                let src = match (solid, fore) {
                    (Some(c), _) => c,
                    (None, Paint::Pattern(p, ppos)) => {
                        if p.width == 0 || p.height == 0 {
                            continue;
                        }
                        // Source coordinates are relative to the mask origin,
                        // translated by -pattern.pos, repeated.
                        let px = (i64::from(x) - i64::from(pos.x) - i64::from(ppos.x)).rem_euclid(i64::from(p.width));
                        let py = (i64::from(y) - i64::from(pos.y) - i64::from(ppos.y)).rem_euclid(i64::from(p.height));
                        match p.data.get(py as usize * p.width as usize + px as usize) {
                            Some(v) => *v,
                            None => continue,
                        }
                    }
                    _ => continue,
                };
                if let Some(d) = surface.data.get_mut(y as usize * w + x as usize) {
                    *d = over(src, m, *d);
                }
            }
        }
    }
    surface.settle(&painted);
    if surface.format == FMT_32_XRGB {
        let r = mask_rect.intersect(&bounds);
        if r.is_empty() {
            return;
        }
        let first = surface.data.get(r.top as usize * w + r.left as usize).copied().unwrap_or(0);
        if first & 0xff00_0000 == 0xff00_0000 {
            for y in r.top..r.bottom {
                for p in &mut surface.data[y as usize * w + r.left as usize..y as usize * w + r.right as usize] {
                    *p &= 0x00ff_ffff;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rect(left: i32, top: i32, right: i32, bottom: i32) -> Rect {
        Rect { top, left, bottom, right }
    }

    fn put_rect(b: &mut Vec<u8>, r: Rect) {
        for v in [r.top, r.left, r.bottom, r.right] {
            b.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn put_solid(b: &mut Vec<u8>, c: Option<u32>) {
        match c {
            Some(c) => {
                b.push(1);
                b.extend_from_slice(&c.to_le_bytes());
            }
            None => b.push(0),
        }
    }

    /// (render_pos, glyph_origin, width, height, data)
    type G = ((i32, i32), (i32, i32), u16, u16, Vec<u8>);

    fn body(
        bbox: Rect,
        back: Rect,
        fore: Option<u32>,
        bk: Option<u32>,
        fore_mode: u16,
        flags: u8,
        gs: &[G],
    ) -> Vec<u8> {
        let mut b = 0u32.to_le_bytes().to_vec();
        put_rect(&mut b, bbox);
        b.push(0);
        let str_at_pos = b.len();
        b.extend_from_slice(&[0; 4]);
        put_rect(&mut b, back);
        put_solid(&mut b, fore);
        put_solid(&mut b, bk);
        b.extend_from_slice(&fore_mode.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        let at = b.len() as u32;
        b[str_at_pos..str_at_pos + 4].copy_from_slice(&at.to_le_bytes());
        b.extend_from_slice(&(gs.len() as u16).to_le_bytes());
        b.push(flags);
        for (rp, go, w, h, d) in gs {
            for v in [rp.0, rp.1, go.0, go.1] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.extend_from_slice(&w.to_le_bytes());
            b.extend_from_slice(&h.to_le_bytes());
            b.extend_from_slice(d);
        }
        b
    }

    fn rows(s: &Surface) -> Vec<String> {
        s.data
            .chunks(s.width as usize)
            .map(|r| {
                r.iter()
                    .map(|p| {
                        if p & 0xffffff == 0 {
                            '.'
                        } else if p & 0xff == 0xff {
                            '#'
                        } else {
                            'b'
                        }
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a1_glyphs_are_msb_first_bottom_up_and_merged() {
        // Glyph 1: 3x2 at (1,1)+(0,-1) = (1,0); stored bottom-up: bottom row 100, top row 011.
        // Glyph 2: 2x2 at (2,1)+(0,0) = (2,1): rows 10 / 01 (top-down), stored bottom-up.
        let gs: Vec<G> = vec![
            ((1, 1), (0, -1), 3, 2, vec![0b1000_0000, 0b0110_0000]),
            ((2, 1), (0, 0), 2, 2, vec![0b0100_0000, 0b1000_0000]),
        ];
        let b = body(rect(0, 0, 5, 4), Rect::default(), Some(0xff), None, ropd::OP_PUT, 1, &gs);
        let t = parse_text(&b).unwrap();
        assert_eq!(t.bpp, Some(1));
        assert_eq!(t.glyphs.len(), 2);
        let (m, pos) = render_str_mask(&t).unwrap();
        assert_eq!(pos, Point { x: 1, y: 0 });
        assert_eq!((m.width, m.height), (3, 3));
        let bits: Vec<u8> = m.data.iter().map(|v| u8::from(*v == 0xff)).collect();
        assert_eq!(bits, [0, 1, 1, 1, 1, 0, 0, 0, 1]);

        let mut s = Surface::new(5, 4, FMT_32_XRGB);
        let region = s.region(&t.base.bbox, &t.base.clip);
        draw_text(&mut s, &region, &t, Paint::Solid(0xff), Paint::None);
        assert_eq!(rows(&s), ["..##.", ".##..", "...#.", "....."]);
        // clear_dest_alpha: the mask rectangle's first pixel (1, 0) is uncovered (alpha 0): alpha stays.
        assert_eq!(s.data[2], 0xff00_00ff);
    }

    #[test]
    fn back_fill_clip_and_fore_mode() {
        let gs: Vec<G> = vec![((0, 0), (1, 1), 2, 1, vec![0b1100_0000])];
        let mk = |fore_mode| {
            let mut b = body(rect(0, 0, 4, 3), rect(0, 0, 4, 2), Some(0xff), Some(0x00ff_0000), fore_mode, 1, &gs);
            // Clip to the left 2 columns: rewrite the clip as RECTS.
            let mut c = b[..20].to_vec();
            c.push(1);
            c.extend_from_slice(&1u32.to_le_bytes());
            put_rect(&mut c, rect(0, 0, 2, 3));
            let rest = b.split_off(21);
            c.extend_from_slice(&rest);
            // The string offset moved by 20 bytes.
            let off = u32::from_le_bytes(c[41..45].try_into().unwrap()) + 20;
            c[41..45].copy_from_slice(&off.to_le_bytes());
            c
        };
        let b = mk(ropd::OP_PUT);
        let t = parse_text(&b).unwrap();
        let mut s = Surface::new(4, 3, 96);
        let region = s.region(&t.base.bbox, &t.base.clip);
        draw_text(&mut s, &region, &t, Paint::Solid(0xff), Paint::Solid(0x00ff_0000));
        assert_eq!(s.data[0], 0x00ff_0000);
        assert_eq!(s.data[1], 0x00ff_0000);
        assert_eq!(s.data[4], 0x00ff_0000);
        assert_eq!(s.data[5], 0xff00_00ff, "glyph pixel inside the clip");
        assert_eq!(s.data[6], 0, "glyph pixel outside the clip");
        assert_eq!(s.data[2], 0, "back fill outside the clip");
        assert_eq!(s.data[9], 0, "outside back_area");

        // A back area with a fore mode other than PUT: nothing drawn at all.
        let b = mk(ropd::OP_XOR);
        let t = parse_text(&b).unwrap();
        let mut s = Surface::new(4, 3, 96);
        let region = s.region(&t.base.bbox, &t.base.clip);
        draw_text(&mut s, &region, &t, Paint::Solid(0xff), Paint::Solid(0x00ff_0000));
        assert!(s.data.iter().all(|p| *p == 0));
    }

    #[test]
    fn a4_and_a8_coverage_blend() {
        // A4: 3x1: nibbles f, 8, 0 -> 0xf0, 0x80, 0.
        let gs: Vec<G> = vec![((0, 0), (0, 0), 3, 1, vec![0xf8, 0x00])];
        let b = body(rect(0, 0, 3, 1), Rect::default(), Some(0xff_ffff), None, ropd::OP_PUT, 2, &gs);
        let t = parse_text(&b).unwrap();
        let (m, _) = render_str_mask(&t).unwrap();
        assert_eq!(m.data, [0xf0, 0x80, 0]);
        let mut s = Surface::new(3, 1, 96);
        draw_text(&mut s, &[rect(0, 0, 3, 1)], &t, Paint::Solid(0xff_ffff), Paint::None);
        assert_eq!(s.data, [0xf0f0_f0f0, 0x8080_8080, 0]);
        // A8, 2x2: spice-gtk reads stored rows 2 (past the data: 0) and 1.
        let gs: Vec<G> = vec![((0, 0), (0, 0), 2, 2, vec![1, 2, 3, 4])];
        let b = body(rect(0, 0, 2, 2), Rect::default(), None, None, ropd::OP_PUT, 4, &gs);
        let t = parse_text(&b).unwrap();
        let (m, _) = render_str_mask(&t).unwrap();
        assert_eq!(m.data, [0, 0, 3, 4]);
        // No raster flag: no glyphs, no mask.
        let b = body(rect(0, 0, 2, 2), Rect::default(), None, None, ropd::OP_PUT, 8, &gs);
        let t = parse_text(&b).unwrap();
        assert!(t.glyphs.is_empty() && render_str_mask(&t).is_none());
    }

    #[test]
    fn pattern_fore_is_relative_to_the_mask() {
        let gs: Vec<G> = vec![((1, 0), (0, 0), 2, 1, vec![0b1100_0000])];
        let b = body(rect(0, 0, 3, 1), Rect::default(), None, None, ropd::OP_PUT, 1, &gs);
        let t = parse_text(&b).unwrap();
        let pat = Pixels::xrgb(2, 1, vec![0x11, 0x22]);
        let mut s = Surface::new(3, 1, 96);
        draw_text(&mut s, &[rect(0, 0, 3, 1)], &t, Paint::Pattern(&pat, Point { x: 1, y: 0 }), Paint::None);
        assert_eq!(s.data, [0, 0xff00_0022, 0xff00_0011]);
    }

    #[test]
    fn hostile_bodies_are_errors_or_nothing() {
        let gs: Vec<G> = vec![((0, 0), (0, 0), 9, 2, vec![0xff; 4])];
        let good = body(rect(0, 0, 4, 4), Rect::default(), Some(1), None, ropd::OP_PUT, 1, &gs);
        assert!(parse_text(&good).is_ok());
        for cut in 0..good.len() {
            assert!(parse_text(&good[..cut]).is_err(), "cut {cut}");
        }
        // Glyph bigger than its data.
        let big: Vec<G> = vec![((0, 0), (0, 0), 65535, 65535, vec![0xff; 4])];
        let b = body(rect(0, 0, 4, 4), Rect::default(), Some(1), None, ropd::OP_PUT, 4, &big);
        assert!(matches!(parse_text(&b), Err(TextError::Short(_))));
        // Huge length with no glyphs following.
        let mut b = body(rect(0, 0, 4, 4), Rect::default(), Some(1), None, ropd::OP_PUT, 1, &[]);
        let n = b.len();
        b[n - 3..n - 1].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(matches!(parse_text(&b), Err(TextError::Short(_))));
        // String offsets: 0, at the end, far outside.
        let str_at = 21;
        for off in [0u32, good.len() as u32, u32::MAX] {
            let mut b = good.clone();
            b[str_at..str_at + 4].copy_from_slice(&off.to_le_bytes());
            assert_eq!(parse_text(&b), Err(TextError::BadOffset(off)));
        }
        // Too many clip rects, bad brush type.
        let mut b = good.clone();
        b[20] = 1;
        b.splice(21..21, u32::MAX.to_le_bytes());
        assert_eq!(parse_text(&b), Err(TextError::TooManyRects(u32::MAX)));
        let mut b = good.clone();
        b[41] = 9;
        assert!(matches!(parse_text(&b), Err(TextError::Invalid { .. })));
        // Glyphs far apart: a mask beyond the bound is refused, and drawing does nothing.
        let far: Vec<G> = vec![((i32::MIN, 0), (0, 0), 1, 1, vec![0x80]), ((i32::MAX, 0), (0, 0), 1, 1, vec![0x80])];
        let b = body(rect(0, 0, 4, 4), Rect::default(), Some(1), None, ropd::OP_PUT, 1, &far);
        let t = parse_text(&b).unwrap();
        assert!(render_str_mask(&t).is_none());
        let far: Vec<G> = vec![
            ((0, 0), (0, 0), 1, 1, vec![0x80]),
            ((0, 20_000), (0, 0), 65535, 0, vec![]),
            ((20_000, 0), (0, 0), 0, 1, vec![]),
        ];
        let b = body(rect(0, 0, 4, 4), Rect::default(), Some(1), None, ropd::OP_PUT, 1, &far);
        let t = parse_text(&b).unwrap();
        assert!(render_str_mask(&t).is_none(), "20000 x 65535 mask exceeds the bound");
        let mut s = Surface::new(4, 4, 32);
        draw_text(&mut s, &[rect(0, 0, 4, 4)], &t, Paint::Solid(1), Paint::None);
        assert!(s.data.iter().all(|p| *p == 0));
        // Regions outside the surface are ignored.
        let t = parse_text(&good).unwrap();
        draw_text(&mut s, &[rect(-10, -10, 100, 100)], &t, Paint::Solid(0xffffff), Paint::Solid(3));
    }

    #[test]
    fn sixteen_bit_solid_is_read_as_555() {
        let s = Surface::new(1, 1, 80);
        assert_eq!(pixman_solid(&s, 0x7c00), 0xffff_0000);
        for v in 0..32 {
            assert_eq!(pixman_solid(&s, v) & 0xff, (v << 3) | (v >> 2), "v {v}");
        }
    }
}

//! Surfaces and the drawing operations spice-gtk's software canvas applies
//! to them (spice-common `canvas_base.c`, `sw_canvas.c`).
//!
//! A surface holds `0xAARRGGBB` pixels, top-down. Every operation is limited
//! to the drawing's bounding box intersected with its clip rectangles.
//! Raster operations follow the `SpiceROPDescriptor`: optionally invert the
//! source and the destination, combine (put, or, and, xor, or a constant),
//! optionally invert the result (`canvas_base.c` `ropd_descriptor_to_rop`).

use super::display::{Clip, Rect};
use super::image::{Alpha, Pixels};

/// `SPICE_ROPD_*` bits (spice-common `spice.proto` `ropd`).
#[allow(missing_docs)]
pub mod ropd {
    pub const INVERS_SRC: u16 = 1 << 0;
    pub const INVERS_BRUSH: u16 = 1 << 1;
    pub const INVERS_DEST: u16 = 1 << 2;
    pub const OP_PUT: u16 = 1 << 3;
    pub const OP_OR: u16 = 1 << 4;
    pub const OP_AND: u16 = 1 << 5;
    pub const OP_XOR: u16 = 1 << 6;
    pub const OP_BLACKNESS: u16 = 1 << 7;
    pub const OP_WHITENESS: u16 = 1 << 8;
    pub const OP_INVERS: u16 = 1 << 9;
    pub const INVERS_RES: u16 = 1 << 10;
}

/// Which input of a ROP descriptor is the "source": the image (copy) or the
/// brush (fill).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopSource {
    /// `INVERS_SRC` inverts the source image.
    Image,
    /// `INVERS_BRUSH` inverts the brush.
    Brush,
}

/// A raster operation on (source, destination) pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rop {
    invert_src: bool,
    invert_dest: bool,
    invert_res: bool,
    op: u16,
}

impl Rop {
    /// Plain copy.
    pub const PUT: Rop = Rop { invert_src: false, invert_dest: false, invert_res: false, op: ropd::OP_PUT };

    /// Interprets a ROP descriptor whose source input is `source`.
    pub fn from_descriptor(desc: u16, source: RopSource) -> Self {
        let src_bit = match source {
            RopSource::Image => ropd::INVERS_SRC,
            RopSource::Brush => ropd::INVERS_BRUSH,
        };
        Self::from_inputs(desc, src_bit, ropd::INVERS_DEST)
    }

    /// Interprets a ROP descriptor whose source is inverted by `src_bit`
    /// and whose destination by `dest_bit` (DRAW_OPAQUE paints the brush
    /// over the image: brush is the source, the image the destination;
    /// `canvas_base.c` `ropd_descriptor_to_rop`).
    pub fn from_inputs(desc: u16, src_bit: u16, dest_bit: u16) -> Self {
        let op = [
            ropd::OP_PUT,
            ropd::OP_OR,
            ropd::OP_AND,
            ropd::OP_XOR,
            ropd::OP_BLACKNESS,
            ropd::OP_WHITENESS,
            ropd::OP_INVERS,
        ]
        .into_iter()
        .find(|op| desc & op != 0)
        .unwrap_or(0);
        Self {
            invert_src: desc & src_bit != 0,
            invert_dest: desc & dest_bit != 0,
            invert_res: desc & ropd::INVERS_RES != 0,
            op,
        }
    }

    /// Whether the operation is a plain copy.
    pub fn is_put(&self) -> bool {
        *self == Self::PUT
    }

    /// Whether the operation leaves the destination untouched (no op bit).
    pub fn is_noop(&self) -> bool {
        self.op == 0
    }

    /// Whether painting a pixel twice differs from painting it once: the
    /// operation inverts the destination for some source value (X11
    /// `miSpansCarefulRop`, which `lines.c` uses to paint each span once).
    pub fn is_careful(&self) -> bool {
        [0, u32::MAX].into_iter().any(|s| self.apply(s, 0) == u32::MAX && self.apply(s, u32::MAX) == 0)
    }

    #[inline]
    fn apply(&self, src: u32, dest: u32) -> u32 {
        let s = if self.invert_src { !src } else { src };
        let d = if self.invert_dest { !dest } else { dest };
        let r = match self.op {
            ropd::OP_PUT => s,
            ropd::OP_OR => s | d,
            ropd::OP_AND => s & d,
            ropd::OP_XOR => s ^ d,
            ropd::OP_BLACKNESS => 0,
            ropd::OP_WHITENESS => 0xffff_ffff,
            ropd::OP_INVERS => !d,
            _ => dest,
        };
        if self.invert_res { !r } else { r }
    }
}

/// `SPICE_SURFACE_FMT_1_A`: 1-bit alpha only (pixman `a1`); the
/// `SPICE_SURFACE_FMT_*` values are spice-protocol `enums.h`'s.
pub const FMT_1_A: u32 = 1;
/// `SPICE_SURFACE_FMT_8_A`: 8-bit alpha only (pixman `a8`).
pub const FMT_8_A: u32 = 8;
/// `SPICE_SURFACE_FMT_16_555`.
pub const FMT_16_555: u32 = 16;
/// `SPICE_SURFACE_FMT_16_565`.
pub const FMT_16_565: u32 = 80;
/// `SPICE_SURFACE_FMT_32_xRGB`.
pub const FMT_32_XRGB: u32 = 32;
/// `SPICE_SURFACE_FMT_32_ARGB`.
pub const FMT_32_ARGB: u32 = 96;

/// A 5-bit channel widened to 8 bits as pixman does (bit replication).
#[inline]
fn widen5(v: u32) -> u32 {
    (v << 3) | (v >> 2)
}

/// A 6-bit channel widened to 8 bits as pixman does.
#[inline]
fn widen6(v: u32) -> u32 {
    (v << 2) | (v >> 4)
}

/// What a 32-bit pixel becomes on a surface of `format` and back, as pixman
/// stores and fetches it: on 16-bit surfaces each channel truncated to 5
/// (or 6 for 565 green) bits and widened again; on alpha-only surfaces
/// only the alpha byte kept (`a8`), or its top bit widened to 0 or 0xff
/// (`a1`). Bitwise raster operations commute with this, so applying it
/// after each write keeps such a surface exact.
#[inline]
fn quantize(format: u32, p: u32) -> u32 {
    let (r, g, b) = ((p >> 16) & 0xff, (p >> 8) & 0xff, p & 0xff);
    match format {
        FMT_16_555 => widen5(r >> 3) << 16 | widen5(g >> 3) << 8 | widen5(b >> 3),
        FMT_16_565 => widen5(r >> 3) << 16 | widen6(g >> 2) << 8 | widen5(b >> 3),
        FMT_8_A => p & 0xff00_0000,
        FMT_1_A => {
            if p & 0x8000_0000 != 0 {
                0xff00_0000
            } else {
                0
            }
        }
        _ => p,
    }
}

/// A drawing surface.
#[derive(Debug, Clone)]
pub struct Surface {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `SPICE_SURFACE_FMT_*`.
    pub format: u32,
    /// Pixels, top-down.
    pub data: Vec<u32>,
}

impl Surface {
    /// A black surface (`width * height` already checked by the caller).
    pub fn new(width: u32, height: u32, format: u32) -> Self {
        Self { width, height, format, data: vec![0; width as usize * height as usize] }
    }

    fn bounds(&self) -> Rect {
        Rect { top: 0, left: 0, bottom: self.height as i32, right: self.width as i32 }
    }

    /// Bits per pixel of the pixman image spice-gtk keeps for the surface
    /// (`a1`, `a8`, 16-bit, or 32-bit).
    pub fn bits_per_pixel(&self) -> u32 {
        match self.format {
            FMT_1_A => 1,
            FMT_8_A => 8,
            FMT_16_555 | FMT_16_565 => 16,
            _ => 32,
        }
    }

    /// Whether the surface stores 16-bit pixels.
    pub fn is_16bit(&self) -> bool {
        matches!(self.format, FMT_16_555 | FMT_16_565)
    }

    /// Whether the surface stores only alpha (`8_A`, `1_A`). Its pixels
    /// are kept as `0xAA000000`, which is how pixman reads an `a8` or `a1`
    /// image as a source or mask.
    pub fn is_alpha_only(&self) -> bool {
        matches!(self.format, FMT_8_A | FMT_1_A)
    }

    /// A solid brush colour (given in the surface's own pixel format) as
    /// `0x00RRGGBB`; on an alpha-only surface, as `0xAA000000` with the
    /// colour's low byte as alpha (`pixman_utils.c` `spice_pixman_fill_rect`
    /// fills an 8-bit image with `value & 0xff`).
    pub fn brush_color(&self, color: u32) -> u32 {
        match self.format {
            FMT_16_555 => widen5((color >> 10) & 0x1f) << 16 | widen5((color >> 5) & 0x1f) << 8 | widen5(color & 0x1f),
            FMT_16_565 => widen5((color >> 11) & 0x1f) << 16 | widen6((color >> 5) & 0x3f) << 8 | widen5(color & 0x1f),
            FMT_8_A | FMT_1_A => quantize(self.format, color << 24),
            _ => color,
        }
    }

    /// On a 16-bit or alpha-only surface, brings the pixels of `region` to
    /// what the surface can hold (no-op for 32-bit surfaces).
    pub fn settle(&mut self, region: &[Rect]) {
        if !self.is_16bit() && !self.is_alpha_only() {
            return;
        }
        let (w, f) = (self.width as usize, self.format);
        for r in region {
            for y in r.top..r.bottom {
                for p in &mut self.data[y as usize * w + r.left as usize..y as usize * w + r.right as usize] {
                    *p = quantize(f, *p);
                }
            }
        }
    }

    /// The rectangles a drawing with `bbox` and `clip` may touch, inside the
    /// surface.
    pub fn region(&self, bbox: &Rect, clip: &Clip) -> Vec<Rect> {
        let area = bbox.intersect(&self.bounds());
        if area.is_empty() {
            return Vec::new();
        }
        match clip {
            Clip::None => vec![area],
            Clip::Rects(rects) => rects.iter().map(|r| r.intersect(&area)).filter(|r| !r.is_empty()).collect(),
        }
    }

    /// Copies `src` into `region`: destination (x, y) takes source pixel
    /// (x + dx, y + dy); pixels whose source falls outside `src` are left
    /// alone.
    pub fn blit(&mut self, region: &[Rect], src: &Pixels, dx: i64, dy: i64, rop: Rop) {
        let w = self.width as usize;
        for r in region {
            for y in r.top..r.bottom {
                let sy = i64::from(y) + dy;
                if sy < 0 || sy >= i64::from(src.height) {
                    continue;
                }
                let sx0 = (i64::from(r.left) + dx).max(0);
                let sx1 = (i64::from(r.right) + dx).min(i64::from(src.width));
                if sx0 >= sx1 {
                    continue;
                }
                // sx0 - dx >= r.left >= 0 and < width: fits usize.
                let x0 = (sx0 - dx) as usize;
                let len = (sx1 - sx0) as usize;
                let s = &src.data[sy as usize * src.width as usize + sx0 as usize..][..len];
                let d = &mut self.data[y as usize * w + x0..][..len];
                if rop.is_put() {
                    d.copy_from_slice(s);
                } else {
                    for (dp, sp) in d.iter_mut().zip(s) {
                        *dp = rop.apply(*sp, *dp);
                    }
                }
            }
        }
        self.settle(region);
    }

    /// As [`Self::blit`] with a plain copy, except that source pixels whose
    /// RGB equals `key`'s are left out (spice-common `pixman_utils.c`
    /// colour-key blit).
    pub fn blit_colorkey(&mut self, region: &[Rect], src: &Pixels, dx: i64, dy: i64, key: u32) {
        let w = self.width as usize;
        let key = key & 0x00ff_ffff;
        for r in region {
            for y in r.top..r.bottom {
                let sy = i64::from(y) + dy;
                if sy < 0 || sy >= i64::from(src.height) {
                    continue;
                }
                for x in r.left..r.right {
                    let sx = i64::from(x) + dx;
                    if sx < 0 || sx >= i64::from(src.width) {
                        continue;
                    }
                    let s = src.data[sy as usize * src.width as usize + sx as usize];
                    if s & 0x00ff_ffff != key {
                        self.data[y as usize * w + x as usize] = s;
                    }
                }
            }
        }
        self.settle(region);
    }

    /// Fills `region` with `color` under `rop` (brush as the source).
    pub fn fill(&mut self, region: &[Rect], color: u32, rop: Rop) {
        let w = self.width as usize;
        for r in region {
            for y in r.top..r.bottom {
                let d = &mut self.data[y as usize * w + r.left as usize..y as usize * w + r.right as usize];
                if rop.is_put() {
                    d.fill(color);
                } else {
                    for dp in d.iter_mut() {
                        *dp = rop.apply(color, *dp);
                    }
                }
            }
        }
        self.settle(region);
    }

    /// Fills `region` with a pattern tiled from origin `pos` (brush source).
    pub fn fill_pattern(&mut self, region: &[Rect], pattern: &Pixels, pos: (i32, i32), rop: Rop) {
        if pattern.width == 0 || pattern.height == 0 {
            return;
        }
        let w = self.width as usize;
        for r in region {
            for y in r.top..r.bottom {
                let py = (i64::from(y) - i64::from(pos.1)).rem_euclid(i64::from(pattern.height)) as u32;
                for x in r.left..r.right {
                    let px = (i64::from(x) - i64::from(pos.0)).rem_euclid(i64::from(pattern.width)) as u32;
                    let d = &mut self.data[y as usize * w + x as usize];
                    *d = rop.apply(pattern.at(px, py), *d);
                }
            }
        }
        self.settle(region);
    }

    /// `COPY_BITS`: copies the surface onto itself, destination (x, y)
    /// taking the old pixel at (x + dx, y + dy).
    pub fn copy_bits(&mut self, region: &[Rect], dx: i64, dy: i64) {
        let snapshot = self.pixels();
        self.blit(region, &snapshot, dx, dy, Rop::PUT);
    }

    /// A copy of the pixels, for SPICE_IMAGE_TYPE_SURFACE sources.
    pub fn pixels(&self) -> Pixels {
        let alpha = match self.format {
            FMT_32_ARGB => Alpha::Premultiplied,
            FMT_8_A | FMT_1_A => Alpha::Only,
            _ => Alpha::None,
        };
        Pixels { width: self.width, height: self.height, data: std::sync::Arc::new(self.data.clone()), alpha }
    }

    /// An image (not a surface) as spice-gtk fetches it to draw on this
    /// surface when it asks for the canvas format (`canvas_base.c`
    /// `canvas_get_image` with `want_original` false, converting to
    /// `canvas_get_target_format` with pixman's `SRC` operator), with the
    /// alpha pixman then reads:
    /// - 32-bit surfaces: an RGBA image keeps its alpha (`a8r8g8b8`); any
    ///   other becomes opaque `x8r8g8b8`, so an `8BIT_A` image becomes
    ///   opaque black;
    /// - 16-bit surfaces: every pixel truncated to `x1r5g5b5` / `r5g6b5`
    ///   and read back opaque, so alpha is lost;
    /// - alpha-only surfaces: only the alpha, 0xff for an image without.
    ///
    /// DRAW_COMPOSITE reads images this way; so does bilinear scaling,
    /// which interpolates the truncated colours. For the bitwise draws,
    /// [`Self::settle`] after the write gives the same result.
    pub fn in_canvas_format(&self, image: Pixels) -> Pixels {
        let f = self.format;
        let (width, height) = (image.width, image.height);
        let (data, alpha): (Vec<u32>, Alpha) = if self.is_16bit() {
            (image.data.iter().map(|&p| quantize(f, p) | 0xff00_0000).collect(), Alpha::None)
        } else if self.is_alpha_only() {
            (image.as_pixman_reads().data.iter().map(|&p| quantize(f, p)).collect(), Alpha::Only)
        } else if image.alpha == Alpha::Premultiplied {
            return image;
        } else {
            return image.opaque();
        };
        Pixels { width, height, data: std::sync::Arc::new(data), alpha }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn px(w: u32, h: u32, v: Vec<u32>) -> Pixels {
        Pixels::xrgb(w, h, v)
    }

    #[test]
    fn blit_respects_clip_and_offsets() {
        let mut s = Surface::new(4, 3, 32);
        let src = px(2, 2, vec![1, 2, 3, 4]);
        let bbox = Rect { top: 1, left: 1, bottom: 3, right: 3 };
        let clip = Clip::Rects(vec![Rect { top: 0, left: 0, bottom: 4, right: 2 }]);
        let region = s.region(&bbox, &clip);
        s.blit(&region, &src, -1, -1, Rop::PUT);
        assert_eq!(s.data, [0, 0, 0, 0, 0, 1, 0, 0, 0, 3, 0, 0]);
    }

    #[test]
    fn rops_follow_the_descriptor() {
        let xor = Rop::from_descriptor(ropd::OP_XOR, RopSource::Image);
        assert_eq!(xor.apply(0b1100, 0b1010), 0b0110);
        let inv_put = Rop::from_descriptor(ropd::OP_PUT | ropd::INVERS_SRC, RopSource::Image);
        assert_eq!(inv_put.apply(0, 5), 0xffff_ffff);
        let brush = Rop::from_descriptor(ropd::OP_PUT | ropd::INVERS_BRUSH, RopSource::Brush);
        assert_eq!(brush.apply(0, 5), 0xffff_ffff);
        assert_eq!(Rop::from_descriptor(ropd::OP_INVERS, RopSource::Brush).apply(1, 0), 0xffff_ffff);
        assert!(Rop::from_descriptor(ropd::OP_PUT, RopSource::Image).is_put());
    }

    #[test]
    fn copy_bits_handles_overlap() {
        let mut s = Surface::new(4, 1, 32);
        s.data = vec![1, 2, 3, 4];
        let region = s.region(&Rect { top: 0, left: 1, bottom: 1, right: 4 }, &Clip::None);
        s.copy_bits(&region, -1, 0);
        assert_eq!(s.data, [1, 1, 2, 3]);
    }

    #[test]
    fn drawing_outside_the_surface_is_clipped() {
        let mut s = Surface::new(2, 2, 32);
        let region = s.region(&Rect { top: -5, left: -5, bottom: 50, right: 50 }, &Clip::None);
        s.fill(&region, 7, Rop::PUT);
        assert_eq!(s.data, [7; 4]);
        let src = px(1, 1, vec![9]);
        s.blit(&region, &src, 100, 100, Rop::PUT);
        assert_eq!(s.data, [7; 4]);
    }

    #[test]
    fn colorkey_blit_skips_the_key_colour() {
        let mut s = Surface::new(3, 1, 32);
        s.data = vec![7, 7, 7];
        let src = px(3, 1, vec![0xff00_00ff, 5, 0x0000_00ff]);
        let region = s.region(&Rect { top: 0, left: 0, bottom: 1, right: 3 }, &Clip::None);
        s.blit_colorkey(&region, &src, 0, 0, 0x0000_00ff);
        assert_eq!(s.data, [7, 5, 7], "the key matches on RGB only");
    }

    #[test]
    fn sixteen_bit_surfaces_hold_sixteen_bit_colours() {
        let mut s = Surface::new(2, 1, FMT_16_555);
        let region = s.region(&Rect { top: 0, left: 0, bottom: 1, right: 2 }, &Clip::None);
        s.blit(&region, &px(2, 1, vec![0x00ff_ffff, 0x0012_3456]), 0, 0, Rop::PUT);
        assert_eq!(s.data[0], 0x00ff_ffff);
        // 0x12 >> 3 = 2 -> 0x10, 0x34 >> 3 = 6 -> 0x31, 0x56 >> 3 = 10 -> 0x52.
        assert_eq!(s.data[1], 0x0010_3152);
        // A 555 brush colour: pure red.
        assert_eq!(s.brush_color(0x7c00), 0x00ff_0000);
        let s565 = Surface::new(1, 1, FMT_16_565);
        assert_eq!(s565.brush_color(0x07e0), 0x0000_ff00);
        // XOR commutes with the 16-bit round trip.
        let before = s.data[1];
        s.fill(&region, 0x00ff_ffff, Rop::from_descriptor(ropd::OP_XOR, RopSource::Brush));
        assert_eq!(s.data[1], quantize(FMT_16_555, before ^ 0x00ff_ffff));
    }

    #[test]
    fn images_in_a_sixteen_bit_canvas_format_lose_alpha() {
        let argb = px(2, 1, vec![0x2010_0804, 0x0012_3456]);
        let s565 = Surface::new(1, 1, FMT_16_565);
        // 0x10 >> 3 = 2 -> 0x10, 0x08 >> 2 = 2 -> 0x08, 0x04 >> 3 = 0.
        assert_eq!(*s565.in_canvas_format(argb.clone()).data, [0xff10_0800, 0xff10_3452]);
        // On 32-bit surfaces only RGBA images keep their alpha.
        let s32 = Surface::new(1, 1, FMT_32_ARGB);
        assert_eq!(*s32.in_canvas_format(argb.clone()).data, [0xff10_0804, 0xff12_3456]);
        let rgba = Pixels { alpha: Alpha::Premultiplied, ..argb.clone() };
        assert_eq!(s32.in_canvas_format(rgba.clone()), rgba);
        let a8 = Pixels { alpha: Alpha::Only, data: Arc::new(vec![0x8000_0000, 0]), ..argb };
        assert_eq!(*s32.in_canvas_format(a8.clone()).data, [0xff00_0000, 0xff00_0000], "8BIT_A reads as opaque black");
        // On alpha-only surfaces only alpha remains; 0xff without alpha.
        let s8 = Surface::new(1, 1, FMT_8_A);
        assert_eq!(*s8.in_canvas_format(rgba).data, [0x2000_0000, 0]);
        assert_eq!(*s8.in_canvas_format(px(1, 1, vec![0x0012_3456])).data, [0xff00_0000]);
        let s1 = Surface::new(1, 1, FMT_1_A);
        assert_eq!(*s1.in_canvas_format(a8).data, [0xff00_0000, 0], "a1 keeps alpha's top bit");
        assert_eq!(s8.brush_color(0x1234_56c0), 0xc000_0000);
    }
}

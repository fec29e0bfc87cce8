//! Raster primitives of spice-gtk's software canvas that go beyond plain
//! copies and fills: ternary raster operations (spice-common `rop3.c`),
//! alpha blending and scaled copies as pixman performs them for
//! `sw_canvas.c`, and 1-bpp masks (`canvas_base.c` `canvas_mask_pixman`).
//!
//! Every function takes the region to draw (rectangles already limited to
//! the drawing's box and clip, as [`Surface::region`] returns them) and
//! re-limits it to the surface, so no input can index out of bounds.
//! Sources are sampled with pixman's `PIXMAN_REPEAT_NONE` rule: a sample
//! outside the source image is transparent black (`0x00000000`).

use std::sync::Arc;

use super::canvas::{FMT_32_ARGB, FMT_32_XRGB, Rop, Surface};
use super::display::Rect;
use super::image::Pixels;
use crate::limits::MAX_SURFACE_PIXELS;

/// `SPICE_BITMAP_FMT_1BIT_LE`: the leftmost pixel is the least significant bit.
pub const BITMAP_FMT_1BIT_LE: u8 = 1;
/// `SPICE_BITMAP_FMT_1BIT_BE`: the leftmost pixel is the most significant bit.
pub const BITMAP_FMT_1BIT_BE: u8 = 2;

/// `SPICE_IMAGE_SCALE_MODE_INTERPOLATE` (pixman `PIXMAN_FILTER_GOOD`, i.e. bilinear).
pub const SCALE_MODE_INTERPOLATE: u8 = 0;
/// `SPICE_IMAGE_SCALE_MODE_NEAREST` (pixman `PIXMAN_FILTER_NEAREST`).
pub const SCALE_MODE_NEAREST: u8 = 1;

/// pixman's `BILINEAR_INTERPOLATION_BITS`.
const BILINEAR_BITS: u32 = 7;

/// The rectangle `r` limited to the surface, as `(x0, x1, y0, y1)`, or
/// `None` when nothing is left.
fn clamp(surface: &Surface, r: &Rect) -> Option<(usize, usize, usize, usize)> {
    let x0 = i64::from(r.left).max(0);
    let y0 = i64::from(r.top).max(0);
    let x1 = i64::from(r.right).min(i64::from(surface.width));
    let y1 = i64::from(r.bottom).min(i64::from(surface.height));
    if x0 >= x1 || y0 >= y1 || surface.data.len() < surface.width as usize * surface.height as usize {
        return None;
    }
    // All four lie in 0..=u32::MAX.
    Some((x0 as usize, x1 as usize, y0 as usize, y1 as usize))
}

/// The source pixel at (x, y), or transparent black outside the image
/// (`PIXMAN_REPEAT_NONE`).
#[inline]
fn fetch(src: &Pixels, x: i64, y: i64) -> u32 {
    if x < 0 || y < 0 || x >= i64::from(src.width) || y >= i64::from(src.height) {
        return 0;
    }
    src.data.get(y as usize * src.width as usize + x as usize).copied().unwrap_or(0)
}

/// The brush of a ternary raster operation.
#[derive(Debug, Clone, Copy)]
pub enum Brush3<'a> {
    /// A solid colour, used as the raw 32-bit pattern value.
    Solid(u32),
    /// A pattern tiled over the surface with its pixel (0, 0) at `pos`
    /// (`SpicePattern.pos`, surface coordinates).
    Pattern {
        /// The pattern image.
        pixels: &'a Pixels,
        /// Surface position of the pattern's pixel (0, 0).
        pos: (i32, i32),
    },
}

/// Applies ternary raster operation `code` to pattern `p`, source `s` and
/// destination `d`: each result bit is bit `(p << 2) | (s << 1) | d` of
/// `code`, for every bit position independently.
#[inline]
pub fn rop3_bits(code: u8, p: u32, s: u32, d: u32) -> u32 {
    let mut r = 0;
    for i in 0..8u8 {
        if code >> i & 1 != 0 {
            let pm = if i & 4 != 0 { p } else { !p };
            let sm = if i & 2 != 0 { s } else { !s };
            let dm = if i & 1 != 0 { d } else { !d };
            r |= pm & sm & dm;
        }
    }
    r
}

/// Whether spice-common's `rop3.c` has a handler for `code`. The 38 codes
/// it lacks (those expressible as simpler operations, such as 0x00, 0xcc,
/// 0xf0, 0x5a) hit a "not implemented" default handler that leaves the
/// destination unchanged.
pub fn rop3_is_implemented(code: u8) -> bool {
    const MISSING: [u8; 38] = [
        0x00, 0x03, 0x05, 0x0a, 0x0c, 0x0f, 0x11, 0x22, 0x30, 0x33, 0x3c, 0x3f, 0x44, 0x50, 0x55, 0x5a, 0x5f, 0x66,
        0x77, 0x88, 0x99, 0xa0, 0xa5, 0xaa, 0xaf, 0xbb, 0xc0, 0xc3, 0xcc, 0xcf, 0xdd, 0xee, 0xf0, 0xf3, 0xf5, 0xfa,
        0xfc, 0xff,
    ];
    !MISSING.contains(&code)
}

/// Ternary raster operation over `region` (spice-common `rop3.c`
/// `do_rop3_with_pattern` / `do_rop3_with_color`, driven by `canvas_base.c`
/// `canvas_draw_rop3`).
///
/// Destination (x, y) combines with source pixel (x + dx, y + dy) and with
/// the brush; all 32 bits of each pixel take part. A pixel whose source
/// falls outside `src` is left alone (spice-gtk refuses the whole drawing
/// when the source does not cover the box: callers check that first). With
/// no source the source bits are all zero. Codes without a spice-common
/// handler ([`rop3_is_implemented`]) and empty patterns draw nothing.
pub fn rop3(surface: &mut Surface, region: &[Rect], src: Option<(&Pixels, i64, i64)>, brush: Brush3<'_>, rop3: u8) {
    if !rop3_is_implemented(rop3) {
        return;
    }
    if let Brush3::Pattern { pixels, .. } = brush
        && (pixels.width == 0 || pixels.height == 0)
    {
        return;
    }
    let w = surface.width as usize;
    for r in region {
        let Some((x0, x1, y0, y1)) = clamp(surface, r) else { continue };
        for y in y0..y1 {
            for x in x0..x1 {
                let s = match src {
                    None => 0,
                    Some((img, dx, dy)) => {
                        let (sx, sy) = (x as i64 + dx, y as i64 + dy);
                        if sx < 0 || sy < 0 || sx >= i64::from(img.width) || sy >= i64::from(img.height) {
                            continue;
                        }
                        fetch(img, sx, sy)
                    }
                };
                let p = match brush {
                    Brush3::Solid(c) => c,
                    Brush3::Pattern { pixels, pos } => {
                        let px = (x as i64 - i64::from(pos.0)).rem_euclid(i64::from(pixels.width));
                        let py = (y as i64 - i64::from(pos.1)).rem_euclid(i64::from(pixels.height));
                        fetch(pixels, px, py)
                    }
                };
                let d = &mut surface.data[y * w + x];
                *d = rop3_bits(rop3, p, s, *d);
            }
        }
    }
}

/// A 1-bpp mask (`SpiceQMask` bitmap), rows top-down, bit set = draw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskBits {
    width: u32,
    height: u32,
    line: usize,
    /// Rows of `line` bytes, leftmost pixel in the least significant bit.
    bits: Vec<u8>,
}

impl MaskBits {
    /// Reads a `SpiceBitmap` mask (spice-common `canvas_base.c`
    /// `canvas_get_bitmap_mask`): `format` is [`BITMAP_FMT_1BIT_LE`] or
    /// [`BITMAP_FMT_1BIT_BE`]; rows are `stride` bytes apart, bottom-up
    /// unless `top_down`. `None` for another format, a bottom-up bitmap of
    /// height 0 (spice-gtk fails those too), too little data, or more than
    /// `MAX_SURFACE_PIXELS` pixels.
    pub fn from_bitmap(format: u8, width: u32, height: u32, stride: u32, top_down: bool, data: &[u8]) -> Option<Self> {
        if format != BITMAP_FMT_1BIT_LE && format != BITMAP_FMT_1BIT_BE {
            return None;
        }
        if !top_down && height == 0 {
            return None;
        }
        if u64::from(width) * u64::from(height) > MAX_SURFACE_PIXELS {
            return None;
        }
        let line = (width as usize).div_ceil(8);
        if line == 0 || height == 0 {
            // No pixel: nothing to copy, however many empty rows it claims.
            return Some(Self { width, height, line, bits: Vec::new() });
        }
        let stride = stride as usize;
        let need = (height as usize - 1).checked_mul(stride)?.checked_add(line)?;
        if data.len() < need {
            return None;
        }
        let mut bits = vec![0u8; line * height as usize];
        for row in 0..height as usize {
            let src = &data[row * stride..row * stride + line];
            let dest_row = if top_down { row } else { height as usize - 1 - row };
            let dest = &mut bits[dest_row * line..(dest_row + 1) * line];
            for (d, s) in dest.iter_mut().zip(src) {
                *d = if format == BITMAP_FMT_1BIT_BE { s.reverse_bits() } else { *s };
            }
        }
        Some(Self { width, height, line, bits })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Whether mask pixel (x, y) is set; `false` outside the mask.
    pub fn get(&self, x: i64, y: i64) -> bool {
        if x < 0 || y < 0 || x >= i64::from(self.width) || y >= i64::from(self.height) {
            return false;
        }
        let (x, y) = (x as usize, y as usize);
        self.bits.get(y * self.line + x / 8).is_some_and(|b| b >> (x % 8) & 1 != 0)
    }
}

/// Whether destination (x, y) survives the mask (spice-common
/// `canvas_mask_pixman`): mask pixel (x + offset.0, y + offset.1) must lie
/// inside the mask and be set, or clear when `invers`. Pixels outside the
/// mask never survive, inverted or not. For a drawing with box `bbox` and
/// `SpiceQMask.pos`, `offset = (pos.x - bbox.left, pos.y - bbox.top)`.
pub fn mask_covers(mask: &MaskBits, offset: (i64, i64), invers: bool, x: i64, y: i64) -> bool {
    let (mx, my) = (x.saturating_add(offset.0), y.saturating_add(offset.1));
    if mx < 0 || my < 0 || mx >= i64::from(mask.width) || my >= i64::from(mask.height) {
        return false;
    }
    mask.get(mx, my) != invers
}

/// `region` intersected with the mask ([`mask_covers`]), as one rectangle
/// per horizontal run of surviving pixels (spice-common `canvas_base.c`
/// `canvas_mask_pixman`). Rectangles are first limited to the mask's
/// extent, so the result never exceeds the region's area within the mask.
pub fn mask_region(region: &[Rect], mask: &MaskBits, offset: (i64, i64), invers: bool) -> Vec<Rect> {
    let mut out = Vec::new();
    // The mask's extent in destination coordinates.
    let mx0 = offset.0.saturating_neg();
    let my0 = offset.1.saturating_neg();
    let mx1 = mx0.saturating_add(i64::from(mask.width));
    let my1 = my0.saturating_add(i64::from(mask.height));
    for r in region {
        let x0 = i64::from(r.left).max(mx0);
        let x1 = i64::from(r.right).min(mx1);
        let y0 = i64::from(r.top).max(my0);
        let y1 = i64::from(r.bottom).min(my1);
        if x0 >= x1 || y0 >= y1 {
            continue;
        }
        for y in y0..y1 {
            let mut run: Option<i64> = None;
            for x in x0..=x1 {
                let on = x < x1 && mask_covers(mask, offset, invers, x, y);
                match (on, run) {
                    (true, None) => run = Some(x),
                    (false, Some(start)) => {
                        // Within the i32 rectangle the run came from.
                        out.push(Rect { top: y as i32, left: start as i32, bottom: y as i32 + 1, right: x as i32 });
                        run = None;
                    }
                    _ => {}
                }
            }
        }
    }
    out
}

/// pixman's `DIV_255` multiply: `x * a / 255`, rounded.
#[inline]
fn mul_un8(x: u32, a: u32) -> u32 {
    let t = x * a + 0x80;
    (t + (t >> 8)) >> 8
}

/// Every channel of `p` times `a` / 255 (pixman `UN8x4_MUL_UN8`).
#[inline]
fn mul_un8x4(p: u32, a: u32) -> u32 {
    (0..4).fold(0, |acc, i| acc | mul_un8(p >> (8 * i) & 0xff, a) << (8 * i))
}

/// Premultiplied OVER (pixman `combine_over_u`): `s + d * (255 - alpha(s))`
/// per channel, saturating.
#[inline]
fn over(s: u32, d: u32) -> u32 {
    let ia = 255 - (s >> 24);
    (0..4).fold(0, |acc, i| {
        let c = (s >> (8 * i) & 0xff) + mul_un8(d >> (8 * i) & 0xff, ia);
        acc | c.min(255) << (8 * i)
    })
}

/// The `pixman_transform_init_scale` + `pixman_transform_translate` pair
/// of `sw_canvas.c` `__scale_image` / `__blend_scale_image`, reduced to
/// one axis: the 16.16 source coordinate of the centre of destination
/// pixel `i` (counted from the box's edge).
#[derive(Debug, Clone, Copy)]
struct Axis {
    /// `src_size * 65536 / dest_size`, as the C stores it in a `pixman_fixed_t`.
    scale: i64,
    /// `pixman_int_to_fixed(src_origin)`.
    translate: i64,
}

impl Axis {
    fn new(src_origin: i32, src_size: i64, dest_size: i64) -> Option<Self> {
        if dest_size <= 0 {
            return None;
        }
        // The C truncates the 48.16 quotient to a 32-bit pixman_fixed_t.
        let scale = i64::from((src_size.saturating_mul(65536) / dest_size) as i32);
        let translate = i64::from(src_origin.wrapping_shl(16));
        Some(Self { scale, translate })
    }

    /// pixman_transform_point_3d on the pixel centre: 48.16 products,
    /// rounded back to 16.16.
    #[inline]
    fn map(&self, i: i64) -> i64 {
        // i128 and a clamp keep absurd boxes and offsets from overflowing;
        // pixman itself would have wrapped 32-bit values long before.
        let v = i128::from(i) * 65536 + 0x8000;
        let r = (i128::from(self.scale) * v + i128::from(self.translate) * 65536 + 0x8000) >> 16;
        r.clamp(-(1 << 62), 1 << 62) as i64
    }
}

/// `PIXMAN_FILTER_NEAREST` sample at 16.16 (`vx`, `vy`).
#[inline]
fn sample_nearest(src: &Pixels, vx: i64, vy: i64) -> u32 {
    fetch(src, (vx - 1) >> 16, (vy - 1) >> 16)
}

/// pixman's bilinear sample position at 16.16 (`vx`, `vy`): the top-left
/// tap and the 7-bit weights (`bits_image_fetch_pixel_bilinear`:
/// `pixman_fixed_to_bilinear_weight` of the position minus half a pixel).
#[inline]
pub fn bilinear_position(vx: i64, vy: i64) -> ((i64, i64), (u32, u32)) {
    let (x1, y1) = (vx - 0x8000, vy - 0x8000);
    let shift = 16 - BILINEAR_BITS;
    let mask = (1 << BILINEAR_BITS) - 1;
    ((x1 >> 16, y1 >> 16), (((x1 >> shift) & mask) as u32, ((y1 >> shift) & mask) as u32))
}

/// pixman's `bilinear_interpolation` of four `0xAARRGGBB` taps with 7-bit
/// weights `dx`, `dy`: channels interpolated independently and truncated.
#[inline]
pub fn bilinear_interpolation(tl: u32, tr: u32, bl: u32, br: u32, dx: u32, dy: u32) -> u32 {
    let one = 1 << BILINEAR_BITS;
    let w = [(one - dx) * (one - dy), dx * (one - dy), (one - dx) * dy, dx * dy];
    (0..4).fold(0, |acc, i| {
        let c = |p: u32| p >> (8 * i) & 0xff;
        let sum = c(tl) * w[0] + c(tr) * w[1] + c(bl) * w[2] + c(br) * w[3];
        acc | (sum >> (2 * BILINEAR_BITS)) << (8 * i)
    })
}

/// pixman bilinear sample (`PIXMAN_FILTER_GOOD` = `BILINEAR`) at 16.16
/// (`vx`, `vy`), transparent outside the image.
#[inline]
fn sample_bilinear(src: &Pixels, vx: i64, vy: i64) -> u32 {
    let ((x1, y1), (dx, dy)) = bilinear_position(vx, vy);
    let tap = |x, y| fetch(src, x, y);
    bilinear_interpolation(tap(x1, y1), tap(x1 + 1, y1), tap(x1, y1 + 1), tap(x1 + 1, y1 + 1), dx, dy)
}

/// The source sampler of a composite from `src_area` onto `dest_box`:
/// direct (same size), or through the scale transform.
struct Sampler<'a> {
    src: &'a Pixels,
    dest_box: Rect,
    src_area: Rect,
    scaled: Option<(Axis, Axis, bool)>,
}

impl<'a> Sampler<'a> {
    fn new(src: &'a Pixels, src_area: Rect, dest_box: Rect, scale_mode: u8) -> Option<Self> {
        if dest_box.is_empty() {
            return None;
        }
        let same = src_area.width() == dest_box.width() && src_area.height() == dest_box.height();
        let scaled = if same {
            None
        } else {
            let sw = i64::from(src_area.right) - i64::from(src_area.left);
            let sh = i64::from(src_area.bottom) - i64::from(src_area.top);
            let ax = Axis::new(src_area.left, sw, i64::from(dest_box.width()))?;
            let ay = Axis::new(src_area.top, sh, i64::from(dest_box.height()))?;
            Some((ax, ay, scale_mode == SCALE_MODE_NEAREST))
        };
        Some(Self { src, dest_box, src_area, scaled })
    }

    /// The sample for surface pixel (x, y), inside `dest_box`.
    #[inline]
    fn at(&self, x: i64, y: i64) -> u32 {
        let (i, j) = (x - i64::from(self.dest_box.left), y - i64::from(self.dest_box.top));
        match self.scaled {
            None => fetch(self.src, i + i64::from(self.src_area.left), j + i64::from(self.src_area.top)),
            Some((ax, ay, true)) => sample_nearest(self.src, ax.map(i), ay.map(j)),
            Some((ax, ay, false)) => sample_bilinear(self.src, ax.map(i), ay.map(j)),
        }
    }

    /// Whether the sample at (x, y) comes from inside the source (for
    /// forcing the alpha of sources without one).
    #[inline]
    fn inside(&self, x: i64, y: i64) -> bool {
        let (i, j) = (x - i64::from(self.dest_box.left), y - i64::from(self.dest_box.top));
        let (sx, sy) = match self.scaled {
            None => (i + i64::from(self.src_area.left), j + i64::from(self.src_area.top)),
            Some((ax, ay, _)) => ((ax.map(i) - 1) >> 16, (ay.map(j) - 1) >> 16),
        };
        sx >= 0 && sy >= 0 && sx < i64::from(self.src.width) && sy < i64::from(self.src.height)
    }
}

/// `DRAW_ALPHA_BLEND` (spice-common `canvas_base.c`
/// `canvas_draw_alpha_blend` with `sw_canvas.c` `__blend_image` /
/// `__blend_scale_image`): pixman `OVER` of `src_area` onto `dest_box`,
/// limited to `region`, through a constant mask `alpha` (no mask at 0xff,
/// nothing at all at 0). Colours are premultiplied, as pixman treats them.
///
/// The source's alpha counts only when `src_has_alpha` (an `a8r8g8b8`
/// image, or `SRC_SURFACE_HAS_ALPHA` for surfaces); otherwise its pixels
/// are opaque. The destination's alpha is read when the surface is ARGB
/// or `dest_has_alpha`; otherwise it is taken as 0xff. When sizes differ,
/// the source is scaled with `PIXMAN_FILTER_NEAREST` (spice-gtk always
/// passes `SPICE_IMAGE_SCALE_MODE_NEAREST` here). Afterwards, an xRGB
/// surface without `dest_has_alpha` gets its alpha byte cleared over the
/// whole box when its first pixel's alpha is 0xff (`clear_dest_alpha`).
#[allow(clippy::too_many_arguments)]
pub fn alpha_blend(
    surface: &mut Surface,
    region: &[Rect],
    src: &Pixels,
    src_area: Rect,
    dest_box: Rect,
    alpha: u8,
    src_has_alpha: bool,
    dest_has_alpha: bool,
) {
    if alpha == 0 {
        return;
    }
    let Some(sampler) = Sampler::new(src, src_area, dest_box, SCALE_MODE_NEAREST) else { return };
    let dest_alpha = surface.format == FMT_32_ARGB || dest_has_alpha;
    let w = surface.width as usize;
    let mut touched = false;
    for r in region {
        let Some((x0, x1, y0, y1)) = clamp(surface, &r.intersect(&dest_box)) else { continue };
        touched = true;
        for y in y0..y1 {
            for x in x0..x1 {
                let (xi, yi) = (x as i64, y as i64);
                let mut s = sampler.at(xi, yi);
                if !src_has_alpha && sampler.inside(xi, yi) {
                    s |= 0xff00_0000;
                }
                if alpha != 0xff {
                    s = mul_un8x4(s, u32::from(alpha));
                }
                let d = &mut surface.data[y * w + x];
                let dv = if dest_alpha { *d } else { *d | 0xff00_0000 };
                *d = over(s, dv);
            }
        }
    }
    if touched && surface.format == FMT_32_XRGB && !dest_has_alpha {
        clear_dest_alpha(surface, &dest_box);
    }
}

/// `sw_canvas.c` `clear_dest_alpha`: zero the alpha byte over `bx` (limited
/// to the surface) when its first pixel is opaque.
fn clear_dest_alpha(surface: &mut Surface, bx: &Rect) {
    let Some((x0, x1, y0, y1)) = clamp(surface, bx) else { return };
    let w = surface.width as usize;
    if surface.data[y0 * w + x0] & 0xff00_0000 != 0xff00_0000 {
        return;
    }
    for y in y0..y1 {
        for p in &mut surface.data[y * w + x0..y * w + x1] {
            *p &= 0x00ff_ffff;
        }
    }
}

/// Scaled `DRAW_COPY` / `DRAW_OPAQUE` source (spice-common `sw_canvas.c`
/// `__scale_image` for a plain copy, `__scale_image_rop` otherwise): pixman
/// `SRC` of `src_area` scaled onto `dest_box` with `PIXMAN_FILTER_NEAREST`
/// ([`SCALE_MODE_NEAREST`]) or `PIXMAN_FILTER_GOOD`, which pixman runs as
/// bilinear ([`SCALE_MODE_INTERPOLATE`]), then `rop` with the destination.
///
/// The transform maps the centre of destination pixel `i` (from the box's
/// edge) to `(i + 0.5) * (src_w * 65536 / dest_w) + src_left` in 16.16.
/// Samples outside the whole source image (not just `src_area`) are
/// transparent black, so bilinear edges blend towards black. All four
/// channels are interpolated as stored. An unknown `scale_mode` draws
/// nothing (`spice_return_if_fail`); so does an empty box.
pub fn scale_blit(
    surface: &mut Surface,
    region: &[Rect],
    src: &Pixels,
    src_area: Rect,
    dest_box: Rect,
    scale_mode: u8,
    rop: Rop,
) {
    if scale_mode != SCALE_MODE_NEAREST && scale_mode != SCALE_MODE_INTERPOLATE {
        return;
    }
    // Force the transform even for equal sizes: spice-gtk only calls the
    // scaled path when sizes differ, and the results agree anyway.
    let Some(mut sampler) = Sampler::new(src, src_area, dest_box, scale_mode) else { return };
    if sampler.scaled.is_none() {
        let ax = Axis::new(src_area.left, i64::from(src_area.width()), i64::from(dest_box.width()));
        let ay = Axis::new(src_area.top, i64::from(src_area.height()), i64::from(dest_box.height()));
        let (Some(ax), Some(ay)) = (ax, ay) else { return };
        sampler.scaled = Some((ax, ay, scale_mode == SCALE_MODE_NEAREST));
    }
    for r in region {
        let Some((x0, x1, y0, y1)) = clamp(surface, &r.intersect(&dest_box)) else { continue };
        for y in y0..y1 {
            // One row at a time through Surface::blit, which owns the ROP.
            let row: Vec<u32> = (x0..x1).map(|x| sampler.at(x as i64, y as i64)).collect();
            let px = Pixels { width: (x1 - x0) as u32, height: 1, data: Arc::new(row), alpha: src.alpha };
            let rect = Rect { top: y as i32, left: x0 as i32, bottom: y as i32 + 1, right: x1 as i32 };
            surface.blit(&[rect], &px, -(x0 as i64), -(y as i64), rop);
        }
    }
}

/// Scaled `DRAW_TRANSPARENT` (spice-common `sw_canvas.c`
/// `__colorkey_scale_image`): `src_area` scaled onto `dest_box` with
/// `PIXMAN_FILTER_NEAREST` through the same transform as [`scale_blit`]
/// (whatever the message's scale mode), then copied within `region`
/// except where the sample's RGB equals `key`'s. Samples outside the
/// source image are transparent black, compared with the key like any
/// other.
pub fn scale_colorkey_blit(
    surface: &mut Surface,
    region: &[Rect],
    src: &Pixels,
    src_area: Rect,
    dest_box: Rect,
    key: u32,
) {
    let ax = Axis::new(src_area.left, i64::from(src_area.width()), i64::from(dest_box.width()));
    let ay = Axis::new(src_area.top, i64::from(src_area.height()), i64::from(dest_box.height()));
    let (Some(ax), Some(ay)) = (ax, ay) else { return };
    for r in region {
        let Some((x0, x1, y0, y1)) = clamp(surface, &r.intersect(&dest_box)) else { continue };
        for y in y0..y1 {
            let j = y as i64 - i64::from(dest_box.top);
            let row: Vec<u32> =
                (x0..x1).map(|x| sample_nearest(src, ax.map(x as i64 - i64::from(dest_box.left)), ay.map(j))).collect();
            let px = Pixels { width: (x1 - x0) as u32, height: 1, data: Arc::new(row), alpha: src.alpha };
            let rect = Rect { top: y as i32, left: x0 as i32, bottom: y as i32 + 1, right: x1 as i32 };
            surface.blit_colorkey(&[rect], &px, -(x0 as i64), -(y as i64), key);
        }
    }
}

/// `src_area` of `src` scaled to `width` x `height` as spice-common
/// `canvas_base.c` `canvas_scale_surface` does for a scaled `DRAW_ROP3`:
/// the scale factor is the `double` `src / dest` ratio truncated to 16.16
/// (`pixman_double_to_fixed`), with no translation; the composite starts at
/// source offset `ROUND(src_area.left / sx)`, so sample `i` is the transform
/// of `(ROUND(left / sx) + i + 0.5)`. Nearest or bilinear
/// ([`SCALE_MODE_INTERPOLATE`]); outside the image, transparent black.
/// `None` for an empty size or an unknown scale mode (spice-gtk draws
/// nothing then), or a size over [`MAX_SURFACE_PIXELS`].
pub fn scale_surface(src: &Pixels, src_area: Rect, width: u32, height: u32, scale_mode: u8) -> Option<Pixels> {
    if width == 0
        || height == 0
        || u64::from(width) * u64::from(height) > MAX_SURFACE_PIXELS
        || (scale_mode != SCALE_MODE_NEAREST && scale_mode != SCALE_MODE_INTERPOLATE)
    {
        return None;
    }
    let axis = |origin: i32, size: u32, dest: u32| -> (Axis, i64) {
        let ratio = f64::from(size) / f64::from(dest);
        // pixman_double_to_fixed: a C cast, truncating towards zero.
        let scale = i64::from((ratio * 65536.0) as i32);
        let offset = (f64::from(origin) / ratio + 0.5).floor() as i64;
        (Axis { scale, translate: 0 }, offset)
    };
    let (ax, ox) = axis(src_area.left, src_area.width(), width);
    let (ay, oy) = axis(src_area.top, src_area.height(), height);
    let n = usize::try_from(u64::from(width) * u64::from(height)).ok()?;
    let mut data = Vec::with_capacity(n);
    for j in 0..i64::from(height) {
        let vy = ay.map(oy + j);
        for i in 0..i64::from(width) {
            let vx = ax.map(ox + i);
            data.push(if scale_mode == SCALE_MODE_NEAREST {
                sample_nearest(src, vx, vy)
            } else {
                sample_bilinear(src, vx, vy)
            });
        }
    }
    Some(Pixels { width, height, data: Arc::new(data), alpha: src.alpha })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::canvas::{RopSource, ropd};

    fn px(w: u32, h: u32, v: Vec<u32>) -> Pixels {
        Pixels::xrgb(w, h, v)
    }

    fn rect(left: i32, top: i32, right: i32, bottom: i32) -> Rect {
        Rect { top, left, bottom, right }
    }

    fn surf(w: u32, h: u32, format: u32, v: Vec<u32>) -> Surface {
        let mut s = Surface::new(w, h, format);
        s.data = v;
        s
    }

    #[test]
    fn rop3_bits_follow_the_truth_table() {
        // spice-common's own self-test: P=0xf0, S=0xcc, D=0xaa gives the code.
        for code in 0..=255u8 {
            assert_eq!(rop3_bits(code, 0xf0, 0xcc, 0xaa) & 0xff, u32::from(code));
        }
        assert_eq!(rop3_bits(0xcc, 1, 0x1234_5678, 9), 0x1234_5678, "SRCCOPY");
        assert_eq!(rop3_bits(0x66, 0, 0b1100, 0b1010), 0b0110, "SRCINVERT");
        assert_eq!(rop3_bits(0xf0, 0xdead_beef, 0, 0), 0xdead_beef, "PATCOPY");
        assert_eq!(rop3_bits(0x55, 0, 0, 0x0f0f_0f0f), 0xf0f0_f0f0, "DSTINVERT");
        // 0xb8 PSDPxax: ((D ^ P) & S) ^ P
        let (p, s, d) = (0x1234_abcd, 0xff00_ff00, 0x0f0f_f0f0);
        assert_eq!(rop3_bits(0xb8, p, s, d), ((d ^ p) & s) ^ p);
    }

    #[test]
    fn rop3_with_colour_and_source() {
        let mut s = surf(3, 2, 32, vec![0xaa; 6]);
        let src = px(2, 2, vec![0xcc, 0xcc, 0xcc, 0xcc]);
        // Source covers x in 1..3 (dx = -1), y in 0..2.
        s.data[0] = 0x11;
        rop3(&mut s, &[rect(0, 0, 3, 2)], Some((&src, -1, 0)), Brush3::Solid(0xf0), 0xe2);
        // 0xe2 on (P=f0, S=cc, D=aa) bitwise = 0xe2; pixel 0 has no source.
        assert_eq!(s.data, [0x11, 0xe2, 0xe2, 0xaa, 0xe2, 0xe2]);
    }

    #[test]
    fn rop3_pattern_tiles_from_its_origin() {
        // 0xf8 PDSao = P | (D & S); with no source it is P.
        let mut s = Surface::new(4, 1, 32);
        let pat = px(2, 1, vec![1, 2]);
        rop3(&mut s, &[rect(0, 0, 4, 1)], None, Brush3::Pattern { pixels: &pat, pos: (1, 0) }, 0xf8);
        assert_eq!(s.data, [2, 1, 2, 1]);
        let mut s = Surface::new(2, 2, 32);
        let pat = px(1, 2, vec![5, 6]);
        rop3(&mut s, &[rect(0, 0, 2, 2)], None, Brush3::Pattern { pixels: &pat, pos: (-7, -1_000_001) }, 0xf8);
        assert_eq!(s.data, [6, 6, 5, 5]);
    }

    #[test]
    fn rop3_edge_cases_draw_nothing() {
        let mut s = surf(2, 1, 32, vec![3, 4]);
        let empty = px(0, 0, vec![]);
        rop3(&mut s, &[], None, Brush3::Solid(0), 0x01);
        rop3(&mut s, &[rect(5, 5, 9, 9), rect(1, 0, 1, 1)], None, Brush3::Solid(0), 0x01);
        rop3(&mut s, &[rect(0, 0, 2, 1)], None, Brush3::Pattern { pixels: &empty, pos: (0, 0) }, 0x01);
        rop3(&mut s, &[rect(0, 0, 2, 1)], Some((&empty, 0, 0)), Brush3::Solid(0), 0x01);
        rop3(&mut s, &[rect(0, 0, 2, 1)], Some((&px(1, 1, vec![0]), i64::MAX / 2, 0)), Brush3::Solid(0), 0x01);
        rop3(&mut s, &[rect(0, 0, 2, 1)], None, Brush3::Solid(0), 0xcc);
        assert_eq!(s.data, [3, 4]);
        // Rectangles partly outside the surface are limited to it.
        rop3(&mut s, &[rect(i32::MIN, i32::MIN, i32::MAX, i32::MAX)], None, Brush3::Solid(0), 0x01);
        assert_eq!(s.data, [!3, !4], "DPSoon with P = S = 0 is NOT D");
    }

    #[test]
    fn masks_read_both_bit_orders_and_flip() {
        // 10 pixels wide, 2 rows, stride 3.
        let le =
            MaskBits::from_bitmap(BITMAP_FMT_1BIT_LE, 10, 2, 3, true, &[0b0000_0101, 0b10, 0, 0xff, 0, 0]).unwrap();
        assert!(le.get(0, 0) && !le.get(1, 0) && le.get(2, 0) && le.get(9, 0) && !le.get(8, 0));
        assert!((0..8).all(|x| le.get(x, 1)) && !le.get(8, 1) && !le.get(10, 0) && !le.get(-1, 0));
        let be = MaskBits::from_bitmap(BITMAP_FMT_1BIT_BE, 3, 2, 1, false, &[0b1000_0000, 0b0010_0000]).unwrap();
        // Bottom-up: the first data row is the bottom row.
        assert!(be.get(0, 1) && !be.get(1, 1) && be.get(2, 0) && !be.get(0, 0));
        assert_eq!(MaskBits::from_bitmap(0, 1, 1, 1, true, &[1]), None);
        assert_eq!(MaskBits::from_bitmap(1, 1, 0, 1, false, &[]), None);
        assert_eq!(MaskBits::from_bitmap(1, 9, 2, 2, true, &[0; 3]), None, "short data");
        assert_eq!(MaskBits::from_bitmap(1, u32::MAX, u32::MAX, u32::MAX, true, &[]), None);
        assert!(MaskBits::from_bitmap(1, 0, 0, 0, true, &[]).is_some());
        // Found by the renderer fuzz target: zero columns and 2^32-1 empty
        // rows took 14 s (instrumented) of copying nothing, row by row.
        let empty = MaskBits::from_bitmap(1, 0, u32::MAX, 0, true, &[]).unwrap();
        assert!(!empty.get(0, 0));
    }

    #[test]
    fn mask_region_places_pos_at_the_box_corner() {
        // 3x1 mask 0b101; box at (10, 5), pos (1, 0): mask x = dest x - 9.
        let m = MaskBits::from_bitmap(BITMAP_FMT_1BIT_LE, 3, 1, 1, true, &[0b101]).unwrap();
        let region = [rect(0, 0, 100, 100)];
        let off = (1 - 10, 0 - 5);
        assert_eq!(mask_region(&region, &m, off, false), [rect(9, 5, 10, 6), rect(11, 5, 12, 6)]);
        assert_eq!(mask_region(&region, &m, off, true), [rect(10, 5, 11, 6)], "outside stays out when inverted");
        assert!(mask_region(&[], &m, off, false).is_empty());
        assert!(mask_region(&[rect(0, 0, 9, 100)], &m, off, false).is_empty());
        assert!(mask_region(&region, &m, (i64::MAX, i64::MIN), false).is_empty());
        assert!(mask_region(&region, &m, (i64::MIN, i64::MAX), true).is_empty());
        let empty = MaskBits::from_bitmap(1, 0, 0, 0, true, &[]).unwrap();
        assert!(mask_region(&region, &empty, (0, 0), true).is_empty());
        assert!(mask_covers(&m, off, false, 11, 5) && !mask_covers(&m, off, false, 11, 6));
    }

    #[test]
    fn pixman_arithmetic() {
        assert_eq!(mul_un8(255, 255), 255);
        assert_eq!(mul_un8(128, 128), 64); // 16384 + 128 = 16512; (16512 + 64) >> 8 = 64
        assert_eq!(mul_un8(1, 127), 0);
        assert_eq!(mul_un8(1, 128), 1);
        assert_eq!(over(0x8040_2010, 0xff00_00ff), 0xff40_208f); // 0x10 + 255 * 127/255
        assert_eq!(over(0xff00_0000, 0x0000_0000), 0xff00_0000);
        assert_eq!(over(0x0000_0000, 0x1234_5678), 0x1234_5678);
        assert_eq!(over(0x00ff_ffff, 0xffff_ffff), 0xffff_ffff, "saturates");
    }

    #[test]
    fn alpha_blend_unscaled() {
        // ARGB surface, source with alpha, overall alpha 0x80.
        let mut s = surf(2, 1, FMT_32_ARGB, vec![0xff00_00ff, 0x0000_0000]);
        let src = px(3, 1, vec![0, 0xff80_4020, 0x8080_8080]);
        alpha_blend(&mut s, &[rect(0, 0, 2, 1)], &src, rect(1, 0, 3, 1), rect(0, 0, 2, 1), 0x80, true, false);
        // s1 = 0xff804020 * 128/255 = 0x80402010; over (ff0000ff): ff*127/255 = 7f.
        // s2 = 0x80808080 * 128/255 = 0x40404040; over 0 = itself.
        assert_eq!(s.data, [0xff40_208f, 0x4040_4040]);
    }

    #[test]
    fn alpha_blend_source_without_alpha_is_opaque() {
        let mut s = surf(2, 1, FMT_32_XRGB, vec![0x0000_00ff, 0x0000_00ff]);
        let src = px(2, 1, vec![0x0011_2233, 0x0011_2233]);
        alpha_blend(&mut s, &[rect(0, 0, 1, 1)], &src, rect(0, 0, 2, 1), rect(0, 0, 2, 1), 0xff, false, false);
        // Opaque copy of pixel 0; then clear_dest_alpha over the whole box.
        assert_eq!(s.data, [0x0011_2233, 0x0000_00ff]);
        // With the source alpha honoured, a 0-alpha source adds its colour (premultiplied).
        let mut s = surf(1, 1, FMT_32_XRGB, vec![0x0000_0010]);
        alpha_blend(&mut s, &[rect(0, 0, 1, 1)], &src, rect(0, 0, 1, 1), rect(0, 0, 1, 1), 0xff, true, true);
        assert_eq!(s.data, [0x0011_2243]);
    }

    #[test]
    fn alpha_blend_scales_nearest_and_skips_nothing_cases() {
        let mut s = surf(4, 1, FMT_32_ARGB, vec![0; 4]);
        let src = px(2, 1, vec![0xff00_0001, 0xff00_0002]);
        alpha_blend(&mut s, &[rect(0, 0, 4, 1)], &src, rect(0, 0, 2, 1), rect(0, 0, 4, 1), 0xff, true, true);
        // fsx = 0.5: centres 0.25, 0.75, 1.25, 1.75 -> 0, 0, 1, 1.
        assert_eq!(s.data, [0xff00_0001, 0xff00_0001, 0xff00_0002, 0xff00_0002]);
        let before = s.data.clone();
        alpha_blend(&mut s, &[rect(0, 0, 4, 1)], &src, rect(0, 0, 2, 1), rect(0, 0, 4, 1), 0, true, true);
        alpha_blend(&mut s, &[], &src, rect(0, 0, 2, 1), rect(0, 0, 4, 1), 0xff, true, true);
        alpha_blend(&mut s, &[rect(0, 0, 4, 1)], &src, rect(0, 0, 2, 1), rect(0, 0, 0, 1), 0xff, true, true);
        alpha_blend(
            &mut s,
            &[rect(0, 0, 4, 1)],
            &px(0, 0, vec![]),
            rect(0, 0, 0, 0),
            rect(0, 0, 4, 1),
            0xff,
            true,
            true,
        );
        alpha_blend(&mut s, &[rect(0, 0, 4, 1)], &src, rect(i32::MIN, 0, i32::MAX, 1), rect(0, 0, 4, 1), 9, true, true);
        alpha_blend(&mut s, &[rect(9, 9, 99, 99)], &src, rect(0, 0, 2, 1), rect(9, 9, 99, 99), 0xff, true, true);
        assert_eq!(s.data, before);
    }

    #[test]
    fn scale_blit_nearest() {
        let mut s = Surface::new(3, 2, 32);
        let src = px(2, 2, vec![1, 2, 3, 4]);
        scale_blit(&mut s, &[rect(0, 0, 3, 2)], &src, rect(0, 0, 2, 2), rect(0, 0, 3, 2), SCALE_MODE_NEAREST, Rop::PUT);
        // fsx = 2*65536/3 = 43690: centres 21845, 65535, 109225 -> 0, 0, 1.
        assert_eq!(s.data, [1, 1, 2, 3, 3, 4]);
        // Downscale 2 -> 1 from offset 1: centre 1.0 + 1 = 2.0 -> pixel 1 (x - e).
        let mut s = Surface::new(1, 1, 32);
        let src = px(4, 1, vec![1, 2, 3, 4]);
        scale_blit(&mut s, &[rect(0, 0, 1, 1)], &src, rect(1, 0, 3, 1), rect(0, 0, 1, 1), SCALE_MODE_NEAREST, Rop::PUT);
        assert_eq!(s.data, [2]);
    }

    #[test]
    fn scale_surface_starts_at_the_rounded_scaled_offset() {
        // 2 source pixels from x = 1 onto 4: sx = 0.5, offset ROUND(1 / 0.5) = 2,
        // centres (2.5, 3.5, 4.5, 5.5) * 0.5 = 1.25 .. 2.75 -> 1, 1, 2, 2.
        let src = px(4, 1, vec![10, 11, 12, 13]);
        let out = scale_surface(&src, rect(1, 0, 3, 1), 4, 1, SCALE_MODE_NEAREST).unwrap();
        assert_eq!(*out.data, [11, 11, 12, 12]);
        // Bilinear: the same samples, interpolated; rising here.
        let out = scale_surface(&src, rect(1, 0, 3, 1), 4, 1, SCALE_MODE_INTERPOLATE).unwrap();
        assert_eq!(out.data.len(), 4);
        assert!(out.data.windows(2).all(|w| w[0] <= w[1]), "{:?}", out.data);
        assert_eq!(scale_surface(&src, rect(1, 0, 3, 1), 0, 1, SCALE_MODE_NEAREST), None);
        assert_eq!(scale_surface(&src, rect(1, 0, 3, 1), 4, 1, 7), None, "unknown scale mode");
    }

    #[test]
    fn scaled_colorkey_blit_skips_the_key_after_scaling() {
        let mut s = surf(4, 1, 32, vec![7; 4]);
        let src = px(2, 1, vec![0x00ff_00ff, 5]);
        scale_colorkey_blit(&mut s, &[rect(0, 0, 4, 1)], &src, rect(0, 0, 2, 1), rect(0, 0, 4, 1), 0x00ff_00ff);
        assert_eq!(s.data, [7, 7, 5, 5]);
    }

    #[test]
    fn scale_blit_bilinear() {
        // 2x1 -> 4x1 (fsx 0.5). Centres 0.25, 0.75, 1.25, 1.75; minus 0.5:
        // -0.25 -> x1 = -1, w = 96/128; 0.25 -> x1 = 0, w = 32; 0.75 -> w = 96; 1.25 -> x1 = 1, w = 32.
        // Vertically: 0.5 - 0.5 = 0, weight 0. Single channel (blue):
        // p0: (0 * 32 + 200 * 96) * 128 >> 14 = 150; p1: (200*96 + 100*32)*128 >> 14 = 175;
        // p2: (200*32 + 100*96) >> 7 = 125; p3: (100*96 + 0) >> 7 = 75.
        let mut s = Surface::new(4, 1, 32);
        let src = px(2, 1, vec![200, 100]);
        scale_blit(
            &mut s,
            &[rect(0, 0, 4, 1)],
            &src,
            rect(0, 0, 2, 1),
            rect(0, 0, 4, 1),
            SCALE_MODE_INTERPOLATE,
            Rop::PUT,
        );
        assert_eq!(s.data, [150, 175, 125, 75]);
        // Truncation: 3 -> 2 on 255/0: centres 0.75, 2.25 (fsx = 98304).
        let mut s = Surface::new(2, 1, 32);
        let src = px(3, 1, vec![0xff, 0, 0xff]);
        scale_blit(
            &mut s,
            &[rect(0, 0, 2, 1)],
            &src,
            rect(0, 0, 3, 1),
            rect(0, 0, 2, 1),
            SCALE_MODE_INTERPOLATE,
            Rop::PUT,
        );
        // 0.25 -> w 32: 255*96/128 = 191.25 -> 191; 1.75 -> w 96: 255*96/128 -> 191.
        assert_eq!(s.data, [191, 191]);
    }

    #[test]
    fn scale_blit_rop_clip_and_edge_cases() {
        let mut s = surf(4, 1, 32, vec![0xf0; 4]);
        let src = px(1, 1, vec![0xff]);
        let xor = Rop::from_descriptor(ropd::OP_XOR, RopSource::Image);
        scale_blit(&mut s, &[rect(1, 0, 3, 1)], &src, rect(0, 0, 1, 1), rect(0, 0, 4, 1), SCALE_MODE_NEAREST, xor);
        assert_eq!(s.data, [0xf0, 0x0f, 0x0f, 0xf0]);
        let before = s.data.clone();
        let all = [rect(-10, -10, 10, 10)];
        scale_blit(&mut s, &all, &src, rect(0, 0, 1, 1), rect(0, 0, 4, 1), 2, Rop::PUT);
        scale_blit(&mut s, &[], &src, rect(0, 0, 1, 1), rect(0, 0, 4, 1), 1, Rop::PUT);
        scale_blit(&mut s, &all, &src, rect(0, 0, 1, 1), rect(0, 0, 0, 0), 1, Rop::PUT);
        scale_blit(&mut s, &all, &src, rect(0, 0, 1, 1), rect(5, 0, 9, 1), 1, Rop::PUT);
        assert_eq!(s.data, before);
        // Sources outside the image read as transparent black.
        scale_blit(&mut s, &all, &px(0, 0, vec![]), rect(0, 0, 0, 0), rect(0, 0, 4, 1), 0, Rop::PUT);
        assert_eq!(s.data, [0; 4]);
        scale_blit(&mut s, &all, &src, rect(i32::MIN, i32::MIN, i32::MAX, i32::MAX), rect(0, 0, 4, 1), 0, Rop::PUT);
        scale_blit(&mut s, &all, &src, rect(i32::MAX - 1, 0, i32::MAX, 1), rect(0, 0, 4, 1), 1, Rop::PUT);
        // A box far away from the surface origin, with the surface inside it.
        let huge = rect(i32::MIN, i32::MIN, i32::MAX, i32::MAX);
        scale_blit(&mut s, &all, &src, rect(0, 0, i32::MAX, i32::MAX), huge, 0, Rop::PUT);
        scale_blit(&mut s, &all, &src, rect(i32::MIN, i32::MIN, i32::MAX, i32::MAX), huge, 1, Rop::PUT);
        alpha_blend(&mut s, &all, &src, rect(i32::MIN, 0, i32::MAX, 1), huge, 7, false, false);
    }
}

//! `SPICE_MSG_DISPLAY_DRAW_COMPOSITE`: a Render-style composite of a source
//! image, an optional mask and the destination (spice-common `spice.proto`
//! `composite_flags` / `draw_composite`, `canvas_base.c`
//! `canvas_draw_composite`, which hands everything to
//! `pixman_image_composite32`).
//!
//! The destination box is composited as pixman does it: destination pixel
//! `(bbox.left + i, bbox.top + j)` reads the source at composite coordinates
//! `(src_origin.x + i, src_origin.y + j)` and the mask at
//! `(mask_origin.x + i, mask_origin.y + j)`, each optionally through an
//! affine 16.16 transform sampled at pixel centres, then one of the
//! Porter-Duff operators combines premultiplied pixels with pixman's 8-bit
//! integer arithmetic (`x * a / 255` rounded as `t = x * a + 128;
//! (t + (t >> 8)) >> 8`, saturating adds).
//!
//! The PDF separable blend modes pixman computes with integers (MULTIPLY,
//! SCREEN, OVERLAY, DARKEN, LIGHTEN, HARD_LIGHT, DIFFERENCE, EXCLUSION) are
//! drawn with its `PDF_SEPARABLE_BLEND_MODE` arithmetic.
//!
//! The operators pixman sends through its floating-point path (SATURATE,
//! disjoint and conjoint, COLOR_DODGE, COLOR_BURN, SOFT_LIGHT, the HSL
//! modes) are drawn with [`super::combine_float`], which needs each image's
//! pixman format ([`CompositeImage`]).
//!
//! Bilinear filtering through a transform uses pixman's 7-bit weights
//! (`bits_image_fetch_pixel_bilinear`, `bilinear_interpolation`).
//!
//! Only what can be reproduced exactly is drawn; everything else
//! (convolution filters, bilinear sampling with a floating-point operator,
//! unknown operators) is reported as [`CompositeError::Unsupported`] before any
//! pixel is touched.

use thiserror::Error;

use super::canvas::{FMT_1_A, FMT_8_A, FMT_32_ARGB, FMT_32_XRGB, Surface};
use super::combine_float::{self, ChannelBits, needs_float};
use super::display::{DisplayBase, DisplayError, Rect};
use super::image::{Alpha, Pixels};
use super::raster;
use crate::limits::MAX_CLIP_RECTS;
use crate::wire::{Reader, WireError};

/// `SPICE_COMPOSITE_*` flag bits (spice.proto `composite_flags`).
pub mod flags {
    /// Mask of the pixman operator (bits 0..8).
    pub const OP_MASK: u32 = 0xff;
    /// Shift of the source filter (3 bits).
    pub const SRC_FILTER_SHIFT: u32 = 8;
    /// Shift of the mask filter (3 bits).
    pub const MASK_FILTER_SHIFT: u32 = 11;
    /// Shift of the source repeat mode (2 bits).
    pub const SRC_REPEAT_SHIFT: u32 = 14;
    /// Shift of the mask repeat mode (2 bits).
    pub const MASK_REPEAT_SHIFT: u32 = 16;
    /// Per-channel (component) alpha mask.
    pub const COMPONENT_ALPHA: u32 = 1 << 18;
    /// A mask image follows the source.
    pub const HAS_MASK: u32 = 1 << 19;
    /// A source transform is present.
    pub const HAS_SRC_TRANSFORM: u32 = 1 << 20;
    /// A mask transform is present.
    pub const HAS_MASK_TRANSFORM: u32 = 1 << 21;
    /// Treat the source as having no alpha channel.
    pub const SOURCE_OPAQUE: u32 = 1 << 22;
    /// Treat the mask as having no alpha (ignored by spice-gtk).
    pub const MASK_OPAQUE: u32 = 1 << 23;
    /// Treat the destination as having no alpha channel.
    pub const DEST_OPAQUE: u32 = 1 << 24;
}

/// `pixman_op_t` values this module draws.
#[allow(missing_docs)]
pub mod op {
    pub const CLEAR: u8 = 0;
    pub const SRC: u8 = 1;
    pub const DST: u8 = 2;
    pub const OVER: u8 = 3;
    pub const OVER_REVERSE: u8 = 4;
    pub const IN: u8 = 5;
    pub const IN_REVERSE: u8 = 6;
    pub const OUT: u8 = 7;
    pub const OUT_REVERSE: u8 = 8;
    pub const ATOP: u8 = 9;
    pub const ATOP_REVERSE: u8 = 10;
    pub const XOR: u8 = 11;
    pub const ADD: u8 = 12;
    pub const SATURATE: u8 = 13;
    pub const MULTIPLY: u8 = 0x30;
    pub const SCREEN: u8 = 0x31;
    pub const OVERLAY: u8 = 0x32;
    pub const DARKEN: u8 = 0x33;
    pub const LIGHTEN: u8 = 0x34;
    pub const COLOR_DODGE: u8 = 0x35;
    pub const COLOR_BURN: u8 = 0x36;
    pub const HARD_LIGHT: u8 = 0x37;
    pub const SOFT_LIGHT: u8 = 0x38;
    pub const DIFFERENCE: u8 = 0x39;
    pub const EXCLUSION: u8 = 0x3a;
    pub const HSL_LUMINOSITY: u8 = 0x3e;
}

/// Whether `o` is one of the PDF separable blend modes pixman's 32-bit
/// combiners compute with integers (`pixman-combine32.c`); COLOR_DODGE,
/// COLOR_BURN, SOFT_LIGHT and the HSL modes go through its floating-point
/// path ([`super::combine_float`]).
fn is_integer_blend_mode(o: u8) -> bool {
    matches!(
        o,
        op::MULTIPLY
            | op::SCREEN
            | op::OVERLAY
            | op::DARKEN
            | op::LIGHTEN
            | op::HARD_LIGHT
            | op::DIFFERENCE
            | op::EXCLUSION
    )
}

/// A source or mask as `pixman_image_composite32` reads it: the pixels
/// (alpha as pixman reads it) and the channel sizes of the image's pixman
/// format, which the floating-point path expands by (a 5-bit channel is
/// divided by 31, not 255).
#[derive(Debug, Clone, Copy)]
pub struct CompositeImage<'a> {
    /// The pixels, `0xAARRGGBB`, narrower channels widened.
    pub pixels: &'a Pixels,
    /// The pixman format's channel sizes; a format without alpha reads
    /// opaque whatever the top byte holds.
    pub bits: ChannelBits,
}

impl<'a> From<&'a Pixels> for CompositeImage<'a> {
    /// A 32-bit image: `a8r8g8b8` when it has alpha, `x8r8g8b8` if not,
    /// `a8` for alpha only.
    fn from(pixels: &'a Pixels) -> Self {
        let bits = match pixels.alpha {
            Alpha::None => ChannelBits::X8R8G8B8,
            Alpha::Premultiplied => ChannelBits::A8R8G8B8,
            Alpha::Only => ChannelBits::A8,
        };
        Self { pixels, bits }
    }
}

/// `pixman_repeat_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// Transparent outside the image.
    None,
    /// Tiled.
    Normal,
    /// Edge pixels extended.
    Pad,
    /// Mirrored tiles.
    Reflect,
}

impl Repeat {
    fn from_bits(v: u32) -> Self {
        match v & 3 {
            0 => Self::None,
            1 => Self::Normal,
            2 => Self::Pad,
            _ => Self::Reflect,
        }
    }
}

/// Why a composite could not be parsed or drawn.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CompositeError {
    /// The body ended early.
    #[error(transparent)]
    Short(#[from] WireError),
    /// More clip rectangles than [`MAX_CLIP_RECTS`].
    #[error("{0} clip rectangles, more than {MAX_CLIP_RECTS}")]
    TooManyRects(u32),
    /// A value outside its enumeration.
    #[error("invalid {what} {value}")]
    Invalid {
        /// Which field.
        what: &'static str,
        /// The value.
        value: u32,
    },
    /// An image offset outside the body.
    #[error("{what} offset {offset} outside a {len}-byte body")]
    BadOffset {
        /// Which image.
        what: &'static str,
        /// The offset.
        offset: u32,
        /// Body length.
        len: usize,
    },
    /// The mask flag and the mask image given to the renderer disagree.
    #[error("mask image {0}")]
    MaskMismatch(&'static str),
    /// A feature this renderer does not reproduce exactly.
    #[error("unsupported composite: {0}")]
    Unsupported(&'static str),
}

/// An affine transform, 16.16 fixed point, row-major `t00 t01 t02 / t10 t11
/// t12` (the third row is implicitly `0 0 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transform(pub [i32; 6]);

impl Transform {
    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let mut t = [0i32; 6];
        for v in &mut t {
            *v = r.i32()?;
        }
        Ok(Self(t))
    }

    /// One output row of pixman's 31.16 point transform: integer parts
    /// multiplied exactly, fractional parts multiplied and rounded once.
    /// Computed in `i128` so no input can overflow; the result saturates.
    fn row(m: [i64; 3], v: [i64; 3]) -> i64 {
        let (mut hi, mut lo) = (0i128, 0i128);
        for k in 0..3 {
            hi += i128::from(m[k]) * i128::from(v[k] >> 16);
            lo += i128::from(m[k]) * i128::from(v[k] & 0xffff);
        }
        let r = hi + ((lo + 0x8000) >> 16);
        i64::try_from(r).unwrap_or(if r < 0 { i64::MIN } else { i64::MAX })
    }

    /// The 16.16 sample position of composite pixel `(x, y)` (its centre).
    fn apply(&self, x: i64, y: i64) -> (i64, i64) {
        let t = self.0.map(i64::from);
        let v = [
            x.saturating_mul(1 << 16).saturating_add(0x8000),
            y.saturating_mul(1 << 16).saturating_add(0x8000),
            1 << 16,
        ];
        (Self::row([t[0], t[1], t[2]], v), Self::row([t[3], t[4], t[5]], v))
    }
}

/// A parsed DRAW_COMPOSITE body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composite {
    /// Target, box and clip.
    pub base: DisplayBase,
    /// `SPICE_COMPOSITE_*` flags, see [`flags`].
    pub flags: u32,
    /// Offset of the source `SpiceImage` in the body.
    pub src_bitmap: u32,
    /// Offset of the mask `SpiceImage` (when `HAS_MASK`).
    pub mask_bitmap: Option<u32>,
    /// Source transform (when `HAS_SRC_TRANSFORM`).
    pub src_transform: Option<Transform>,
    /// Mask transform (when `HAS_MASK_TRANSFORM`).
    pub mask_transform: Option<Transform>,
    /// Source origin `(x, y)`.
    pub src_origin: (i16, i16),
    /// Mask origin `(x, y)`.
    pub mask_origin: (i16, i16),
}

impl Composite {
    /// The pixman operator.
    pub fn op(&self) -> u8 {
        (self.flags & flags::OP_MASK) as u8
    }

    /// Source `pixman_filter_t`.
    pub fn src_filter(&self) -> u32 {
        (self.flags >> flags::SRC_FILTER_SHIFT) & 7
    }

    /// Mask `pixman_filter_t`.
    pub fn mask_filter(&self) -> u32 {
        (self.flags >> flags::MASK_FILTER_SHIFT) & 7
    }

    /// Source repeat mode.
    pub fn src_repeat(&self) -> Repeat {
        Repeat::from_bits(self.flags >> flags::SRC_REPEAT_SHIFT)
    }

    /// Mask repeat mode.
    pub fn mask_repeat(&self) -> Repeat {
        Repeat::from_bits(self.flags >> flags::MASK_REPEAT_SHIFT)
    }

    /// Whether `flag` is set.
    pub fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }
}

impl From<DisplayError> for CompositeError {
    fn from(e: DisplayError) -> Self {
        match e {
            DisplayError::Short(w) => Self::Short(w),
            DisplayError::TooManyRects(n) => Self::TooManyRects(n),
            DisplayError::Invalid { what, value } => Self::Invalid { what, value },
        }
    }
}

fn check_offset(what: &'static str, offset: u32, len: usize) -> Result<u32, CompositeError> {
    if offset == 0 || offset as usize >= len {
        return Err(CompositeError::BadOffset { what, offset, len });
    }
    Ok(offset)
}

/// Parses a DRAW_COMPOSITE body. Image offsets are checked to lie inside
/// the body but are not decoded.
///
/// # Errors
/// [`CompositeError`] for a short body, too many clip rectangles, a bad
/// clip type or an image offset outside the body.
pub fn parse_composite(body: &[u8]) -> Result<Composite, CompositeError> {
    let mut r = Reader::new(body);
    let base = DisplayBase::read(&mut r)?;
    let fl = r.u32()?;
    let src_bitmap = check_offset("source image", r.u32()?, body.len())?;
    let mask_bitmap =
        if fl & flags::HAS_MASK != 0 { Some(check_offset("mask image", r.u32()?, body.len())?) } else { None };
    let src_transform = if fl & flags::HAS_SRC_TRANSFORM != 0 { Some(Transform::read(&mut r)?) } else { None };
    let mask_transform = if fl & flags::HAS_MASK_TRANSFORM != 0 { Some(Transform::read(&mut r)?) } else { None };
    let src_origin = (r.u16()? as i16, r.u16()? as i16);
    let mask_origin = (r.u16()? as i16, r.u16()? as i16);
    Ok(Composite { base, flags: fl, src_bitmap, mask_bitmap, src_transform, mask_transform, src_origin, mask_origin })
}

// ---------------------------------------------------------------------------
// pixman 8-bit arithmetic

/// `x * a / 255`, rounded as pixman does.
#[inline]
fn mul(x: u32, a: u32) -> u32 {
    let t = x * a + 0x80;
    (t + (t >> 8)) >> 8
}

#[inline]
fn ch(p: u32, i: u32) -> u32 {
    (p >> (i * 8)) & 0xff
}

/// Applies `f` to each of the four channels.
#[inline]
fn per_channel(f: impl Fn(u32) -> u32) -> u32 {
    (0..4).fold(0, |acc, i| acc | (f(i).min(0xff) << (i * 8)))
}

/// Every channel of `x` times `a`.
#[inline]
fn mul_un8(x: u32, a: u32) -> u32 {
    per_channel(|i| mul(ch(x, i), a))
}

/// Channel-wise product.
#[inline]
fn mul_un8x4(x: u32, a: u32) -> u32 {
    per_channel(|i| mul(ch(x, i), ch(a, i)))
}

/// Saturating channel-wise sum.
#[inline]
fn add(x: u32, y: u32) -> u32 {
    per_channel(|i| ch(x, i) + ch(y, i))
}

#[inline]
fn alpha(p: u32) -> u32 {
    p >> 24
}

/// `B(d, ad, s, as)` of a separable blend mode, scaled by `ad * as`
/// (`pixman-combine32.c` `blend_*`, in pixman's signed integer form).
fn blend(o: u8, d: i32, ad: i32, s: i32, sa: i32) -> i32 {
    match o {
        op::SCREEN => s * ad + d * sa - s * d,
        op::OVERLAY => {
            if 2 * d < ad {
                2 * s * d
            } else {
                sa * ad - 2 * (ad - d) * (sa - s)
            }
        }
        op::DARKEN => (ad * s).min(sa * d),
        op::LIGHTEN => (ad * s).max(sa * d),
        op::HARD_LIGHT => {
            if 2 * s < sa {
                2 * s * d
            } else {
                sa * ad - 2 * (ad - d) * (sa - s)
            }
        }
        op::DIFFERENCE => (s * ad - d * sa).abs(),
        _ => s * ad + d * sa - 2 * d * s, // EXCLUSION
    }
}

/// `(x + 128 + ((x + 128) >> 8)) >> 8`: `x / 255` rounded (`DIV_ONE_UN8`).
#[inline]
fn div_one_un8(x: u32) -> u32 {
    (x + 0x80 + ((x + 0x80) >> 8)) >> 8
}

/// pixman's `PDF_SEPARABLE_BLEND_MODE` combiner for one pixel: `s` (mask
/// applied), `d`, and per colour channel the source factor `sf[i]`
/// (`~alpha` of the source, or of the mask for component alpha) and the
/// blend's alpha argument `ba[i]`. Sums are held in `uint32_t` as pixman
/// holds them, so a negative blend wraps and clamps to 255 * 255.
fn separable(o: u8, s: u32, d: u32, isf: [u32; 3], ba: [u32; 3]) -> u32 {
    let (sa, da) = (alpha(s), alpha(d));
    let ida = 255 - da;
    let ra = (da * 0xff + sa * 0xff - sa * da).min(255 * 255);
    let mut out = div_one_un8(ra) << 24;
    for i in 0..3 {
        let (dc, sc) = (ch(d, i as u32), ch(s, i as u32));
        let r = (isf[i] * dc + ida * sc).wrapping_add(blend(o, dc as i32, da as i32, sc as i32, ba[i] as i32) as u32);
        out |= div_one_un8(r.min(255 * 255)) << (8 * i);
    }
    out
}

/// The unified (non component-alpha) combiners; `s` already carries the
/// mask.
fn combine_u(op: u8, s: u32, d: u32) -> u32 {
    let (sa, da) = (alpha(s), alpha(d));
    match op {
        op::MULTIPLY => add(add(mul_un8(s, 255 - da), mul_un8(d, 255 - sa)), mul_un8x4(d, s)),
        o if is_integer_blend_mode(o) => separable(o, s, d, [255 - sa; 3], [sa; 3]),
        op::CLEAR => 0,
        op::SRC => s,
        op::DST => d,
        op::OVER => add(mul_un8(d, 255 - sa), s),
        op::OVER_REVERSE => add(mul_un8(s, 255 - da), d),
        op::IN => mul_un8(s, da),
        op::IN_REVERSE => mul_un8(d, sa),
        op::OUT => mul_un8(s, 255 - da),
        op::OUT_REVERSE => mul_un8(d, 255 - sa),
        op::ATOP => add(mul_un8(s, da), mul_un8(d, 255 - sa)),
        op::ATOP_REVERSE => add(mul_un8(s, 255 - da), mul_un8(d, sa)),
        op::XOR => add(mul_un8(s, 255 - da), mul_un8(d, 255 - sa)),
        _ => add(s, d), // ADD; other operators are refused up front.
    }
}

/// pixman's `combine_mask_ca`: source times mask, mask times source alpha.
fn mask_ca(s: u32, m: u32) -> (u32, u32) {
    if m == 0 {
        return (0, 0);
    }
    let sa = alpha(s);
    if m == u32::MAX {
        return (s, sa * 0x0101_0101);
    }
    (mul_un8x4(s, m), mul_un8(m, sa))
}

/// pixman's `combine_mask_value_ca`: source times mask.
fn mask_value_ca(s: u32, m: u32) -> u32 {
    match m {
        0 => 0,
        u32::MAX => s,
        _ => mul_un8x4(s, m),
    }
}

/// pixman's `combine_mask_alpha_ca`: mask times source alpha.
fn mask_alpha_ca(s: u32, m: u32) -> u32 {
    let sa = alpha(s);
    if m == 0 || sa == 0xff {
        return m;
    }
    if m == u32::MAX {
        return sa * 0x0101_0101;
    }
    mul_un8(m, sa)
}

/// The component-alpha combiners.
fn combine_ca(op: u8, s: u32, m: u32, d: u32) -> u32 {
    match op {
        op::MULTIPLY => {
            let (s, m) = mask_ca(s, m);
            add(add(mul_un8x4(d, !m), mul_un8(s, 255 - alpha(d))), mul_un8x4(d, s))
        }
        o if is_integer_blend_mode(o) => {
            let (s, m) = mask_ca(s, m);
            let mc = [ch(m, 0), ch(m, 1), ch(m, 2)];
            separable(o, s, d, mc.map(|v| 255 - v), mc)
        }
        op::CLEAR => 0,
        op::SRC => mask_value_ca(s, m),
        op::DST => d,
        op::OVER => {
            let (s, m) = mask_ca(s, m);
            let a = !m;
            if a == 0 { s } else { add(mul_un8x4(d, a), s) }
        }
        op::OVER_REVERSE => {
            let a = alpha(!d);
            if a == 0 { d } else { add(mul_un8(mask_value_ca(s, m), a), d) }
        }
        op::IN => {
            let a = alpha(d);
            if a == 0 {
                0
            } else {
                let s = mask_value_ca(s, m);
                if a == 0xff { s } else { mul_un8(s, a) }
            }
        }
        op::IN_REVERSE => {
            let a = mask_alpha_ca(s, m);
            match a {
                u32::MAX => d,
                0 => 0,
                _ => mul_un8x4(d, a),
            }
        }
        op::OUT => {
            let a = alpha(!d);
            if a == 0 {
                0
            } else {
                let s = mask_value_ca(s, m);
                if a == 0xff { s } else { mul_un8(s, a) }
            }
        }
        op::OUT_REVERSE => {
            let a = !mask_alpha_ca(s, m);
            match a {
                u32::MAX => d,
                0 => 0,
                _ => mul_un8x4(d, a),
            }
        }
        op::ATOP | op::ATOP_REVERSE | op::XOR => {
            let (s, m) = mask_ca(s, m);
            let (ad, sa) = match op {
                op::ATOP => (!m, alpha(d)),
                op::ATOP_REVERSE => (m, alpha(!d)),
                _ => (!m, alpha(!d)),
            };
            add(mul_un8x4(d, ad), mul_un8(s, sa))
        }
        _ => add(d, mask_value_ca(s, m)), // ADD
    }
}

// ---------------------------------------------------------------------------
// sampling

/// `pixman_fixed_e`.
const FIXED_E: i64 = 1;

/// Wraps `c` into `0..size` per the repeat mode; `None` is transparent.
fn wrap(c: i64, size: i64, repeat: Repeat) -> Option<i64> {
    if size <= 0 {
        return None;
    }
    match repeat {
        Repeat::None => (0..size).contains(&c).then_some(c),
        Repeat::Normal => Some(c.rem_euclid(size)),
        Repeat::Pad => Some(c.clamp(0, size - 1)),
        Repeat::Reflect => {
            let c = c.rem_euclid(size * 2);
            Some(if c >= size { size * 2 - c - 1 } else { c })
        }
    }
}

/// How one image (source or mask) is sampled.
struct Sampler<'a> {
    img: &'a Pixels,
    transform: Option<Transform>,
    repeat: Repeat,
    /// OR-ed into every pixel inside the image: `0xff000000` for a format
    /// without alpha (pixman's `fetch_pixel_32` reads those opaque).
    force: u32,
    /// Bilinear filtering through a transform that moves samples off pixel
    /// centres (`bits_image_fetch_pixel_bilinear`).
    bilinear: bool,
}

impl Sampler<'_> {
    /// The pixel at image coordinates (`px`, `py`) after the repeat mode;
    /// `None` outside under `Repeat::None`.
    fn pixel(&self, px: i64, py: i64) -> Option<u32> {
        let w = i64::from(self.img.width);
        let h = i64::from(self.img.height);
        let (px, py) = (wrap(px, w, self.repeat)?, wrap(py, h, self.repeat)?);
        let i = usize::try_from(py * w + px).ok()?;
        self.img.data.get(i).map(|p| p | self.force)
    }

    /// The sample for composite coordinates `(x, y)`; `None` when a
    /// nearest sample falls outside the image under `Repeat::None`
    /// (transparent; the floating-point path needs to tell it apart).
    fn fetch(&self, x: i64, y: i64) -> Option<u32> {
        let Some(t) = &self.transform else {
            return self.pixel(x, y);
        };
        let (fx, fy) = t.apply(x, y);
        if !self.bilinear {
            return self.pixel((fx - FIXED_E) >> 16, (fy - FIXED_E) >> 16);
        }
        let ((x1, y1), (dx, dy)) = raster::bilinear_position(fx, fy);
        let tap = |x, y| self.pixel(x, y).unwrap_or(0);
        Some(raster::bilinear_interpolation(tap(x1, y1), tap(x1 + 1, y1), tap(x1, y1 + 1), tap(x1 + 1, y1 + 1), dx, dy))
    }
}

/// Whether pixman samples with `filter` through `t` off pixel centres
/// (bilinear through anything but an integer translation).
fn samples_between_pixels(filter: u32, t: Option<&Transform>) -> bool {
    let Some(t) = t else { return false };
    let [a, b, c, d, e, f] = t.0;
    let integer_translation = a == 1 << 16 && b == 0 && d == 0 && e == 1 << 16 && c & 0xffff == 0 && f & 0xffff == 0;
    matches!(filter, 1 | 2 | 4) && !integer_translation
}

/// Checks the filter and transform of one image can be reproduced, and
/// that pixman's 16.16 sample positions over the composite rectangle
/// `(x0, y0)..(x1, y1)` (exclusive) stay representable. `float`: the
/// operator takes pixman's floating-point path, whose bilinear filter
/// interpolates in floats (not reproduced).
fn check_sampling(
    filter: u32,
    t: Option<&Transform>,
    float: bool,
    (x0, y0, x1, y1): (i64, i64, i64, i64),
) -> Result<(), CompositeError> {
    // FAST, GOOD, BEST, NEAREST, BILINEAR; the rest are convolutions.
    if !matches!(filter, 0..=4) {
        return Err(CompositeError::Unsupported("convolution filter"));
    }
    let Some(t) = t else { return Ok(()) };
    if float && samples_between_pixels(filter, Some(t)) {
        return Err(CompositeError::Unsupported("bilinear sampling with a floating-point operator"));
    }
    // Sample positions are affine in (x, y): the extremes are at corners.
    for (x, y) in [(x0, y0), (x1 - 1, y0), (x0, y1 - 1), (x1 - 1, y1 - 1)] {
        let (fx, fy) = t.apply(x, y);
        if i32::try_from(fx).is_err() || i32::try_from(fy).is_err() {
            return Err(CompositeError::Unsupported("transformed coordinates overflow 16.16"));
        }
    }
    Ok(())
}

/// Composites `c` onto `surface` within `region` (the drawing's box
/// intersected with its clip, as [`Surface::region`] gives), as spice-gtk's
/// `canvas_draw_composite` does through `pixman_image_composite32`.
///
/// `src` and `mask` are the decoded images; their alpha byte must be what
/// pixman would read (0xff for formats without alpha; for a1/a8 masks the
/// alpha sits in the top byte and the colour bytes are 0).
///
/// # Errors
/// [`CompositeError::Unsupported`] (nothing drawn) for operators, filters,
/// transforms or destination formats not reproduced exactly;
/// [`CompositeError::MaskMismatch`] when `mask` disagrees with `HAS_MASK`.
pub fn draw_composite(
    surface: &mut Surface,
    region: &[Rect],
    c: &Composite,
    src: CompositeImage<'_>,
    mask: Option<CompositeImage<'_>>,
) -> Result<(), CompositeError> {
    let o = c.op();
    let float = needs_float(o);
    if o > op::ADD && !is_integer_blend_mode(o) && !float {
        return Err(CompositeError::Unsupported("unknown operator"));
    }
    let has_mask = c.has(flags::HAS_MASK);
    match (has_mask, mask.is_some()) {
        (true, false) => return Err(CompositeError::MaskMismatch("missing")),
        (false, true) => return Err(CompositeError::MaskMismatch("given without HAS_MASK")),
        _ => {}
    }
    // canvas_get_image_from_self computes an opaque format for
    // DEST_OPAQUE but creates the image in the surface's own format, so the
    // flag changes nothing: x8r8g8b8 and 16-bit surfaces read opaque,
    // a8r8g8b8 and alpha-only ones with their alpha.
    let dest_opaque = match surface.format {
        FMT_32_ARGB | FMT_8_A | FMT_1_A => false,
        FMT_32_XRGB => true,
        _ if surface.is_16bit() => true,
        _ => return Err(CompositeError::Unsupported("destination surface format")),
    };
    let bbox = c.base.bbox;
    let bounds = Rect { top: 0, left: 0, bottom: surface.height as i32, right: surface.width as i32 };
    let area = bbox.intersect(&bounds);
    if area.is_empty() {
        return Ok(());
    }
    // Composite coordinates of the drawable area, for the overflow checks.
    let (bl, bt) = (i64::from(bbox.left), i64::from(bbox.top));
    let (ax0, ay0, ax1, ay1) =
        (i64::from(area.left) - bl, i64::from(area.top) - bt, i64::from(area.right) - bl, i64::from(area.bottom) - bt);
    let (sx, sy) = (i64::from(c.src_origin.0), i64::from(c.src_origin.1));
    let (mx, my) = (i64::from(c.mask_origin.0), i64::from(c.mask_origin.1));
    let src_t = c.src_transform.as_ref();
    check_sampling(c.src_filter(), src_t, float, (sx + ax0, sy + ay0, sx + ax1, sy + ay1))?;
    if has_mask {
        let t = c.mask_transform.as_ref();
        check_sampling(c.mask_filter(), t, float, (mx + ax0, my + ay0, mx + ax1, my + ay1))?;
    }
    let force = |bits: ChannelBits| if bits.0[0] == 0 { 0xff00_0000 } else { 0 };
    let src_s = Sampler {
        img: src.pixels,
        transform: c.src_transform,
        repeat: c.src_repeat(),
        force: force(src.bits),
        bilinear: samples_between_pixels(c.src_filter(), src_t),
    };
    // spice-gtk fetches the mask with force_opaque = FALSE: MASK_OPAQUE is
    // ignored.
    let mask_s = mask.map(|m| Sampler {
        img: m.pixels,
        transform: c.mask_transform,
        repeat: c.mask_repeat(),
        force: force(m.bits),
        bilinear: samples_between_pixels(c.mask_filter(), c.mask_transform.as_ref()),
    });
    let mask_bits = mask.map_or(ChannelBits::A8, |m| m.bits);
    let dest_bits = ChannelBits::of_surface_format(surface.format);
    let ca = c.has(flags::COMPONENT_ALPHA);
    let w = surface.width as usize;
    let mut touched = Vec::with_capacity(region.len());
    for r in region {
        let r = r.intersect(&area);
        if r.is_empty() {
            continue;
        }
        touched.push(r);
        for y in r.top..r.bottom {
            let j = i64::from(y) - bt;
            for x in r.left..r.right {
                let i = i64::from(x) - bl;
                let Some(dp) = surface.data.get_mut(y as usize * w + x as usize) else { continue };
                let s = src_s.fetch(sx + i, sy + j);
                let m = mask_s.as_ref().map(|ms| ms.fetch(mx + i, my + j));
                let out = if float {
                    // Outside the image (repeat none) every channel is 0.
                    let wide = |p: Option<u32>, bits| p.map_or([0.0; 4], |p| combine_float::expand(p, bits));
                    let d = combine_float::expand(*dp, dest_bits);
                    let out = combine_float::combine(o, ca, wide(s, src.bits), m.map(|m| wide(m, mask_bits)), d);
                    combine_float::contract(out.unwrap_or(d))
                } else {
                    let d = if dest_opaque { *dp | 0xff00_0000 } else { *dp };
                    let s = s.unwrap_or(0);
                    match m {
                        None => combine_u(o, s, d),
                        Some(m) => {
                            let m = m.unwrap_or(0);
                            if ca {
                                combine_ca(o, s, m, d)
                            } else {
                                let ma = alpha(m);
                                let s = if ma == 0 { 0 } else { mul_un8(s, ma) };
                                combine_u(o, s, d)
                            }
                        }
                    }
                };
                *dp = if dest_opaque { out | 0xff00_0000 } else { out };
            }
        }
    }
    if surface.data.len() == w * surface.height as usize {
        surface.settle(&touched);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::display::Clip;
    use std::sync::Arc;

    fn pix(width: u32, height: u32, data: Vec<u32>) -> Pixels {
        Pixels { width, height, data: Arc::new(data), alpha: crate::render::image::Alpha::Premultiplied }
    }

    fn comp(flags: u32, bbox: Rect) -> Composite {
        Composite {
            base: DisplayBase { surface_id: 0, bbox, clip: Clip::None },
            flags,
            src_bitmap: 1,
            mask_bitmap: None,
            src_transform: None,
            mask_transform: None,
            src_origin: (0, 0),
            mask_origin: (0, 0),
        }
    }

    fn rect(left: i32, top: i32, right: i32, bottom: i32) -> Rect {
        Rect { top, left, bottom, right }
    }

    fn argb(w: u32, h: u32, fill: u32) -> Surface {
        let mut s = Surface::new(w, h, FMT_32_ARGB);
        s.data.fill(fill);
        s
    }

    #[test]
    fn src_copies_with_origin() {
        let mut s = argb(3, 1, 0xff00_0000);
        let src = pix(3, 1, vec![0x1122_3344, 0x5566_7788, 0x99aa_bbcc]);
        let mut c = comp(u32::from(op::SRC), rect(1, 0, 3, 1));
        c.src_origin = (1, 0);
        draw_composite(&mut s, &[rect(1, 0, 3, 1)], &c, (&src).into(), None).unwrap();
        assert_eq!(s.data, vec![0xff00_0000, 0x5566_7788, 0x99aa_bbcc]);
    }

    #[test]
    fn over_semi_transparent() {
        // src 50% red premultiplied 0x80800000 over opaque blue 0xff0000ff:
        // ia = 0x7f; d*0x7f: 0xff -> mul(255,127)=127 (0x7f); alpha 0x7f+0x80=0xff.
        let mut s = argb(1, 1, 0xff00_00ff);
        let src = pix(1, 1, vec![0x8080_0000]);
        let c = comp(u32::from(op::OVER), rect(0, 0, 1, 1));
        draw_composite(&mut s, &[rect(0, 0, 1, 1)], &c, (&src).into(), None).unwrap();
        assert_eq!(s.data[0], 0xff80_007f);
    }

    #[test]
    fn in_with_mask() {
        // IN: (src * mask.a) * dest.a. src 0xffffffff, mask a=0x80 -> 0x80808080;
        // dest a = 0x40: mul(0x80,0x40) = (0x2000+0x80 + 0x20)>>8 = 0x20.
        let mut s = argb(1, 1, 0x4000_0000);
        let src = pix(1, 1, vec![0xffff_ffff]);
        let m = pix(1, 1, vec![0x8000_0000]);
        let mut c = comp(u32::from(op::IN) | flags::HAS_MASK, rect(0, 0, 1, 1));
        c.mask_bitmap = Some(2);
        draw_composite(&mut s, &[rect(0, 0, 1, 1)], &c, (&src).into(), Some((&m).into())).unwrap();
        assert_eq!(s.data[0], 0x2020_2020);
        // Missing mask is an error.
        assert!(matches!(draw_composite(&mut s, &[], &c, (&src).into(), None), Err(CompositeError::MaskMismatch(_))));
    }

    #[test]
    fn component_alpha_src() {
        let mut s = argb(1, 1, 0);
        let src = pix(1, 1, vec![0xffff_ffff]);
        let m = pix(1, 1, vec![0x00ff_8000]);
        let mut c = comp(u32::from(op::SRC) | flags::HAS_MASK | flags::COMPONENT_ALPHA, rect(0, 0, 1, 1));
        c.mask_bitmap = Some(2);
        draw_composite(&mut s, &[rect(0, 0, 1, 1)], &c, (&src).into(), Some((&m).into())).unwrap();
        assert_eq!(s.data[0], 0x00ff_8000);
    }

    #[test]
    fn repeat_normal_tiles() {
        let mut s = argb(5, 1, 0);
        let src = pix(2, 1, vec![0xff00_0001, 0xff00_0002]);
        let mut c = comp(u32::from(op::SRC) | (1 << flags::SRC_REPEAT_SHIFT), rect(0, 0, 5, 1));
        c.src_origin = (-1, 0);
        draw_composite(&mut s, &[rect(0, 0, 5, 1)], &c, (&src).into(), None).unwrap();
        assert_eq!(s.data, vec![0xff00_0002, 0xff00_0001, 0xff00_0002, 0xff00_0001, 0xff00_0002]);
        // Repeat NONE: transparent outside, so SRC writes 0.
        let mut s = argb(3, 1, 0xffff_ffff);
        c.flags = u32::from(op::SRC);
        draw_composite(&mut s, &[rect(0, 0, 3, 1)], &c, (&src).into(), None).unwrap();
        assert_eq!(s.data, vec![0, 0xff00_0001, 0xff00_0002]);
        // PAD and REFLECT.
        c.flags = u32::from(op::SRC) | (2 << flags::SRC_REPEAT_SHIFT);
        c.src_origin = (-2, 0);
        let mut s = argb(5, 1, 0);
        draw_composite(&mut s, &[rect(0, 0, 5, 1)], &c, (&src).into(), None).unwrap();
        assert_eq!(s.data, vec![0xff00_0001, 0xff00_0001, 0xff00_0001, 0xff00_0002, 0xff00_0002]);
        c.flags = u32::from(op::SRC) | (3 << flags::SRC_REPEAT_SHIFT);
        draw_composite(&mut s, &[rect(0, 0, 5, 1)], &c, (&src).into(), None).unwrap();
        // x = -2..3 -> mod 4: 2,3,0,1,2 -> reflect: 1,0,0,1,1
        assert_eq!(s.data, vec![0xff00_0002, 0xff00_0001, 0xff00_0001, 0xff00_0002, 0xff00_0002]);
    }

    #[test]
    fn translation_and_scale_transform() {
        let src = pix(4, 1, vec![0xff00_0000, 0xff00_0001, 0xff00_0002, 0xff00_0003]);
        let mut c = comp(u32::from(op::SRC) | flags::HAS_SRC_TRANSFORM, rect(0, 0, 2, 1));
        // Translate by +2 pixels.
        c.src_transform = Some(Transform([1 << 16, 0, 2 << 16, 0, 1 << 16, 0]));
        let mut s = argb(2, 1, 0);
        draw_composite(&mut s, &[rect(0, 0, 2, 1)], &c, (&src).into(), None).unwrap();
        assert_eq!(s.data, vec![0xff00_0002, 0xff00_0003]);
        // Scale x by 2: centre 0.5 -> 1.0 -> (1.0 - e) floors to 0; 1.5 -> 3.0 -> 2.
        c.src_transform = Some(Transform([2 << 16, 0, 0, 0, 1 << 16, 0]));
        draw_composite(&mut s, &[rect(0, 0, 2, 1)], &c, (&src).into(), None).unwrap();
        assert_eq!(s.data, vec![0xff00_0000, 0xff00_0002]);
        // Bilinear half-way between pixels: 7-bit weights, truncated.
        c.flags |= 4 << flags::SRC_FILTER_SHIFT;
        c.src_transform = Some(Transform([1 << 16, 0, 0x8000, 0, 1 << 16, 0]));
        draw_composite(&mut s, &[rect(0, 0, 2, 1)], &c, (&src).into(), None).unwrap();
        assert_eq!(s.data, vec![0xff00_0000, 0xff00_0001]);
        // The floating-point path interpolates in floats: refused there.
        c.flags = (c.flags & !flags::OP_MASK) | u32::from(op::SOFT_LIGHT);
        assert!(matches!(
            draw_composite(&mut s, &[rect(0, 0, 2, 1)], &c, (&src).into(), None),
            Err(CompositeError::Unsupported(_))
        ));
    }

    #[test]
    fn dest_opaque_is_ignored_as_in_spice_gtk() {
        // spice-gtk reads an ARGB destination with its alpha even under
        // DEST_OPAQUE: OUT onto transparent black lets the source in, as
        // without the flag (compared with spice-gtk in tests/draws.rs).
        let src = pix(1, 1, vec![0xff11_2233]);
        for f in [flags::DEST_OPAQUE, 0] {
            let c = comp(u32::from(op::OUT) | f, rect(0, 0, 1, 1));
            let mut s = argb(1, 1, 0x0000_0000);
            draw_composite(&mut s, &[rect(0, 0, 1, 1)], &c, (&src).into(), None).unwrap();
            assert_eq!(s.data[0], 0xff11_2233);
        }
        // An opaque (x8r8g8b8) destination shuts the source out.
        let c = comp(u32::from(op::OUT), rect(0, 0, 1, 1));
        let mut s = Surface::new(1, 1, FMT_32_XRGB);
        draw_composite(&mut s, &[rect(0, 0, 1, 1)], &c, (&src).into(), None).unwrap();
        assert_eq!(s.data[0] & 0x00ff_ffff, 0);
    }

    #[test]
    fn an_alpha_only_destination_keeps_only_alpha() {
        let src = pix(1, 1, vec![0x8011_2233]);
        let c = comp(u32::from(op::OVER), rect(0, 0, 1, 1));
        let mut s = Surface::new(1, 1, FMT_8_A);
        s.data[0] = 0x4000_0000;
        draw_composite(&mut s, &[rect(0, 0, 1, 1)], &c, (&src).into(), None).unwrap();
        // 0x80 + 0x40 * (255 - 0x80) / 255 = 0x80 + 0x20.
        assert_eq!(s.data[0], 0xa000_0000);
    }

    #[test]
    fn region_clips() {
        let src = pix(1, 1, vec![0xffff_ffff]);
        let mut c = comp(u32::from(op::SRC) | (1 << flags::SRC_REPEAT_SHIFT), rect(0, 0, 3, 3));
        c.base.clip = Clip::Rects(vec![rect(1, 1, 2, 2)]);
        let mut s = argb(3, 3, 0);
        let region = s.region(&c.base.bbox, &c.base.clip);
        draw_composite(&mut s, &region, &c, (&src).into(), None).unwrap();
        let expect: Vec<u32> = (0..9).map(|i| if i == 4 { 0xffff_ffff } else { 0 }).collect();
        assert_eq!(s.data, expect);
        // A region outside the box or surface is ignored.
        draw_composite(
            &mut s,
            &[rect(-5, -5, 100, 100)],
            &comp(u32::from(op::CLEAR), rect(0, 0, 1, 1)),
            (&src).into(),
            None,
        )
        .unwrap();
        assert_eq!(s.data[0], 0);
        assert_eq!(s.data[4], 0xffff_ffff);
    }

    #[test]
    fn unsupported_ops() {
        let src = pix(1, 1, vec![0]);
        let mut s = argb(1, 1, 0);
        for o in [0x0eu8, 0x0f, 0x1c, 0x2f, 0x3f, 0xff] {
            let c = comp(u32::from(o), rect(0, 0, 1, 1));
            assert!(matches!(
                draw_composite(&mut s, &[], &c, (&src).into(), None),
                Err(CompositeError::Unsupported(_))
            ));
        }
    }

    #[test]
    fn separable_blend_modes_follow_pixman_integer_arithmetic() {
        // s = 0x80 alpha, red 0x40; d opaque, red 0x60, green 0xff.
        let (s, d) = (0x8040_0000u32, 0xff60_ff00u32);
        // Alpha: (255*255 + 128*255 - 128*255) / 255 = 255 for every mode.
        // Red, by hand from pixman-combine32.c: isa * d + ida * s + B.
        let isa = 255 - 0x80;
        let red = |b: i32| div_one_un8((isa * 0x60 + b as u32).min(255 * 255));
        let b_screen = 0x40 * 255 + 0x60 * 0x80 - 0x40 * 0x60;
        // Green: isa * 0xff + 0xff * 0x80 = 255 * 255.
        assert_eq!(combine_u(op::SCREEN, s, d), 0xff00_0000 | red(b_screen) << 16 | 0xff << 8);
        let b_darken = 0x80 * 0x60; // min(ad * s, as * d) = min(255 * 0x40, 0x80 * 0x60)
        assert_eq!((combine_u(op::DARKEN, s, d) >> 16) & 0xff, red(b_darken));
        let b_diff = (0x40 * 255 - 0x60 * 0x80i32).abs();
        assert_eq!((combine_u(op::DIFFERENCE, s, d) >> 16) & 0xff, red(b_diff));
        // OVERLAY takes 2d >= ad here: as * ad - 2 (ad - d)(as - s).
        let b_overlay = 0x80 * 255 - 2 * (255 - 0x60) * (0x80 - 0x40);
        assert_eq!((combine_u(op::OVERLAY, s, d) >> 16) & 0xff, red(b_overlay));
        // MULTIPLY: s (1 - da) + d (1 - sa) + s d, each product rounded.
        let m = combine_u(op::MULTIPLY, s, d);
        assert_eq!((m >> 16) & 0xff, mul(0x60, 255 - 0x80) + mul(0x60, 0x40));
        assert_eq!(m >> 24, 0xff);
        // Transparent source over anything: every mode leaves d.
        for o in [op::MULTIPLY, op::SCREEN, op::OVERLAY, op::DARKEN, op::LIGHTEN, op::HARD_LIGHT, op::EXCLUSION] {
            assert_eq!(combine_u(o, 0, d), d, "op {o:#x}");
            assert_eq!(combine_ca(o, 0x8040_0000, 0, d), d, "op {o:#x} with a zero mask");
        }
        // Inputs that are not premultiplied (colour over alpha) make some
        // blends negative; the uint32_t sum wraps back as in pixman.
        assert_eq!(combine_u(op::HARD_LIGHT, 0x00ff_0000, 0x00ff_0000), 0);
        for o in [op::MULTIPLY, op::SCREEN, op::OVERLAY, op::DARKEN, op::LIGHTEN, op::HARD_LIGHT, op::EXCLUSION] {
            for (s, d) in [(u32::MAX, u32::MAX), (0x00ff_ffff, 0x01ff_ffff), (0xff00_0000, 0x00ff_ffff)] {
                combine_u(o, s, d);
                combine_ca(o, s, d, s);
            }
        }
    }

    fn body(fl: u32, extra: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&7u32.to_le_bytes());
        for v in [0i32, 0, 2, 2] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.push(0);
        b.extend_from_slice(&fl.to_le_bytes());
        b.extend_from_slice(extra);
        b
    }

    #[test]
    fn parses_full_body() {
        let fl = u32::from(op::OVER) | flags::HAS_MASK | flags::HAS_SRC_TRANSFORM;
        let mut extra = Vec::new();
        extra.extend_from_slice(&60u32.to_le_bytes());
        extra.extend_from_slice(&61u32.to_le_bytes());
        for v in [1i32 << 16, 0, 3 << 16, 0, 1 << 16, -(1 << 16)] {
            extra.extend_from_slice(&v.to_le_bytes());
        }
        extra.extend_from_slice(&(-2i16).to_le_bytes());
        extra.extend_from_slice(&5i16.to_le_bytes());
        extra.extend_from_slice(&1i16.to_le_bytes());
        extra.extend_from_slice(&2i16.to_le_bytes());
        let mut b = body(fl, &extra);
        b.resize(80, 0);
        let c = parse_composite(&b).unwrap();
        assert_eq!(c.base.surface_id, 7);
        assert_eq!(c.op(), op::OVER);
        assert_eq!(c.mask_bitmap, Some(61));
        assert_eq!(c.src_transform, Some(Transform([1 << 16, 0, 3 << 16, 0, 1 << 16, -(1 << 16)])));
        assert_eq!(c.mask_transform, None);
        assert_eq!((c.src_origin, c.mask_origin), ((-2, 5), (1, 2)));
        // Every truncation fails cleanly.
        for n in 0..65 {
            assert!(parse_composite(&b[..n]).is_err());
        }
    }

    #[test]
    fn hostile_bodies() {
        // Offset past the body.
        let mut extra = 1000u32.to_le_bytes().to_vec();
        extra.extend_from_slice(&[0; 8]);
        assert!(matches!(parse_composite(&body(3, &extra)), Err(CompositeError::BadOffset { .. })));
        // Zero offset.
        let mut extra = 0u32.to_le_bytes().to_vec();
        extra.extend_from_slice(&[0; 8]);
        assert!(matches!(parse_composite(&body(3, &extra)), Err(CompositeError::BadOffset { .. })));
        // Huge clip count without data.
        let mut b = body(0, &[]);
        b[20] = 1;
        b.truncate(21);
        b.extend_from_slice(&65_000u32.to_le_bytes());
        assert!(matches!(parse_composite(&b), Err(CompositeError::Short(_))));
        b.truncate(21);
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(parse_composite(&b), Err(CompositeError::TooManyRects(_))));
        // Bad clip type.
        let mut b = body(0, &[0; 16]);
        b[20] = 9;
        assert!(matches!(parse_composite(&b), Err(CompositeError::Invalid { .. })));
        // Empty / mismatched source pixels never panic.
        let empty = pix(0, 0, vec![]);
        let liar = pix(100, 100, vec![1, 2]);
        let mut s = argb(2, 2, 0);
        let c = comp(u32::from(op::OVER) | (1 << flags::SRC_REPEAT_SHIFT), rect(-3, -3, 9, 9));
        let region = s.region(&c.base.bbox, &c.base.clip);
        draw_composite(&mut s, &region, &c, (&empty).into(), None).unwrap();
        draw_composite(&mut s, &region, &c, (&liar).into(), None).unwrap();
        let mut c = comp(u32::from(op::SRC) | flags::HAS_SRC_TRANSFORM, rect(0, 0, 2, 2));
        c.src_transform = Some(Transform([i32::MAX, i32::MIN, i32::MAX, i32::MIN, i32::MAX, i32::MIN]));
        c.src_origin = (i16::MAX, i16::MIN);
        assert!(draw_composite(&mut s, &region, &c, (&liar).into(), None).is_err());
        // Extreme box with a transform: refused or drawn, never a panic.
        c.base.bbox = rect(i32::MIN, i32::MIN, i32::MAX, i32::MAX);
        c.src_transform = Some(Transform([i32::MAX, i32::MAX, i32::MAX, i32::MAX, i32::MAX, i32::MAX]));
        let region = s.region(&c.base.bbox, &c.base.clip);
        assert!(draw_composite(&mut s, &region, &c, (&liar).into(), None).is_err());
        c.src_transform = Some(Transform([1 << 16, 0, 0, 0, 1 << 16, 0]));
        c.flags |= 1 << flags::SRC_REPEAT_SHIFT;
        assert!(draw_composite(&mut s, &region, &c, (&liar).into(), None).is_err());
    }
}

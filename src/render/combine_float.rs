//! pixman's floating-point compositing path, for the operators its 8-bit
//! combiners cannot compute: SATURATE, the disjoint and conjoint
//! Porter-Duff operators, COLOR_DODGE, COLOR_BURN, SOFT_LIGHT and the four
//! HSL modes (`pixman-general.c` `operator_needs_division` sends these
//! through the "wide" iterators, `pixman-combine-float.c` combines them).
//!
//! On that path every pixel is expanded to four `f32` in 0..=1 from its
//! image's own format (`pixman-utils.c` `pixman_expand_to_float`: an
//! n-bit channel times `1.0f / (2^n - 1)`, a missing alpha channel reads
//! 1.0), combined in single precision, and contracted back to 8 bits per
//! channel (`float_to_unorm`: clamp, times 256, truncate, minus the carry)
//! before the destination's own store truncates further (r5g6b5 keeps the
//! top bits). The arithmetic here keeps pixman's operation order so that
//! IEEE single precision gives the same bits (x86-64 compiles pixman with
//! SSE and no fused multiply-add).

use super::canvas::{FMT_1_A, FMT_8_A, FMT_16_555, FMT_16_565, FMT_32_ARGB};

/// A pixel on pixman's wide path (`argb_t`): premultiplied alpha, red,
/// green, blue, each nominally in 0..=1.
pub type Argb = [f32; 4];

/// Bits of the alpha, red, green and blue channels of an image's pixman
/// format (0: absent). Pixels are held as `0xAARRGGBB` with narrower
/// channels widened, so an n-bit channel is the top n bits of its byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelBits(pub [u8; 4]);

impl ChannelBits {
    /// `a8r8g8b8`.
    pub const A8R8G8B8: Self = Self([8, 8, 8, 8]);
    /// `x8r8g8b8`.
    pub const X8R8G8B8: Self = Self([0, 8, 8, 8]);
    /// `a8`.
    pub const A8: Self = Self([8, 0, 0, 0]);

    /// The pixman format spice-gtk gives a surface of `SPICE_SURFACE_FMT_*`
    /// `format` (spice-common `pixman_utils.c`
    /// `spice_surface_format_to_pixman`).
    pub fn of_surface_format(format: u32) -> Self {
        match format {
            FMT_1_A => Self([1, 0, 0, 0]),
            FMT_8_A => Self::A8,
            FMT_16_555 => Self([0, 5, 5, 5]),
            FMT_16_565 => Self([0, 5, 6, 5]),
            FMT_32_ARGB => Self::A8R8G8B8,
            _ => Self::X8R8G8B8,
        }
    }
}

/// Whether pixman composites `op` in floating point
/// (`pixman-general.c` `operator_needs_division`).
pub fn needs_float(op: u8) -> bool {
    matches!(op, 0x0d | 0x10..=0x1b | 0x20..=0x2b | 0x35 | 0x36 | 0x38 | 0x3b..=0x3e)
}

/// `1.0f / (2^n - 1)`, the multipliers of `pixman_expand_to_float`.
fn multiplier(bits: u8) -> f32 {
    if bits == 0 { 0.0 } else { 1.0 / ((1u32 << bits) - 1) as f32 }
}

/// `pixman_expand_to_float` of one pixel held as `0xAARRGGBB`.
pub fn expand(pixel: u32, bits: ChannelBits) -> Argb {
    let mut out = [0.0; 4];
    for (i, (&n, shift)) in bits.0.iter().zip([24u32, 16, 8, 0]).enumerate() {
        out[i] = if n == 0 {
            // A missing alpha channel is opaque; a missing colour, 0.
            if i == 0 { 1.0 } else { 0.0 }
        } else {
            let v = ((pixel >> shift) & 0xff) >> (8 - u32::from(n.min(8)));
            v as f32 * multiplier(n)
        };
    }
    out
}

/// `float_to_unorm(f, 8)`.
fn to_unorm8(f: f32) -> u32 {
    // `clamp` lets a NaN through, as pixman's two comparisons do.
    let f = f.clamp(0.0, 1.0);
    // A float-to-unsigned conversion truncates, as C's does (NaN gives 0).
    let u = (f * 256.0) as u32;
    u - (u >> 8)
}

/// `pixman_contract_from_float` of one pixel, as `0xAARRGGBB`.
pub fn contract(p: Argb) -> u32 {
    to_unorm8(p[0]) << 24 | to_unorm8(p[1]) << 16 | to_unorm8(p[2]) << 8 | to_unorm8(p[3])
}

/// `FLOAT_IS_ZERO`.
fn is_zero(f: f32) -> bool {
    -f32::MIN_POSITIVE < f && f < f32::MIN_POSITIVE
}

/// pixman's `CLAMP` (a NaN passes through, as with `f32::clamp`).
fn clamp(f: f32) -> f32 {
    f.clamp(0.0, 1.0)
}

/// `combine_factor_t`.
#[derive(Debug, Clone, Copy)]
enum Factor {
    Zero,
    One,
    InvSaOverDa,
    InvDaOverSa,
    SaOverDa,
    DaOverSa,
    OneMinusSaOverDa,
    OneMinusDaOverSa,
    OneMinusInvDaOverSa,
    OneMinusInvSaOverDa,
}

/// `get_factor`.
fn factor(f: Factor, sa: f32, da: f32) -> f32 {
    match f {
        Factor::Zero => 0.0,
        Factor::One => 1.0,
        Factor::SaOverDa => {
            if is_zero(da) {
                1.0
            } else {
                clamp(sa / da)
            }
        }
        Factor::DaOverSa => {
            if is_zero(sa) {
                1.0
            } else {
                clamp(da / sa)
            }
        }
        Factor::InvSaOverDa => {
            if is_zero(da) {
                1.0
            } else {
                clamp((1.0 - sa) / da)
            }
        }
        Factor::InvDaOverSa => {
            if is_zero(sa) {
                1.0
            } else {
                clamp((1.0 - da) / sa)
            }
        }
        Factor::OneMinusSaOverDa => {
            if is_zero(da) {
                0.0
            } else {
                clamp(1.0 - sa / da)
            }
        }
        Factor::OneMinusDaOverSa => {
            if is_zero(sa) {
                0.0
            } else {
                clamp(1.0 - da / sa)
            }
        }
        Factor::OneMinusInvDaOverSa => {
            if is_zero(sa) {
                0.0
            } else {
                clamp(1.0 - (1.0 - da) / sa)
            }
        }
        Factor::OneMinusInvSaOverDa => {
            if is_zero(da) {
                0.0
            } else {
                clamp(1.0 - (1.0 - sa) / da)
            }
        }
    }
}

/// The Porter-Duff factors of SATURATE and the disjoint and conjoint
/// operators (`MAKE_PD_COMBINERS`).
fn pd_factors(op: u8) -> Option<(Factor, Factor)> {
    use Factor::*;
    let clear_src_dst = |i: u8| match i {
        0 => Some((Zero, Zero)),
        1 => Some((One, Zero)),
        2 => Some((Zero, One)),
        _ => None,
    };
    Some(match op {
        0x0d => (InvDaOverSa, One),
        0x10..=0x12 => clear_src_dst(op - 0x10)?,
        0x13 => (One, InvSaOverDa),
        0x14 => (InvDaOverSa, One),
        0x15 => (OneMinusInvDaOverSa, Zero),
        0x16 => (Zero, OneMinusInvSaOverDa),
        0x17 => (InvDaOverSa, Zero),
        0x18 => (Zero, InvSaOverDa),
        0x19 => (OneMinusInvDaOverSa, InvSaOverDa),
        0x1a => (InvDaOverSa, OneMinusInvSaOverDa),
        0x1b => (InvDaOverSa, InvSaOverDa),
        0x20..=0x22 => clear_src_dst(op - 0x20)?,
        0x23 => (One, OneMinusSaOverDa),
        0x24 => (OneMinusDaOverSa, One),
        0x25 => (DaOverSa, Zero),
        0x26 => (Zero, SaOverDa),
        0x27 => (OneMinusDaOverSa, Zero),
        0x28 => (Zero, OneMinusSaOverDa),
        0x29 => (DaOverSa, OneMinusSaOverDa),
        0x2a => (OneMinusDaOverSa, SaOverDa),
        0x2b => (OneMinusDaOverSa, OneMinusSaOverDa),
        _ => return None,
    })
}

/// `MIN (1.0f, x)` as the C macro compares.
fn min1(x: f32) -> f32 {
    if 1.0 < x { 1.0 } else { x }
}

fn blend_color_dodge(sa: f32, s: f32, da: f32, d: f32) -> f32 {
    if is_zero(d) {
        0.0
    } else if d * sa >= sa * da - s * da || is_zero(sa - s) {
        sa * da
    } else {
        sa * sa * d / (sa - s)
    }
}

fn blend_color_burn(sa: f32, s: f32, da: f32, d: f32) -> f32 {
    if d >= da {
        sa * da
    } else if sa * (da - d) >= s * da || is_zero(s) {
        0.0
    } else {
        sa * (da - sa * (da - d) / s)
    }
}

fn blend_soft_light(sa: f32, s: f32, da: f32, d: f32) -> f32 {
    if is_zero(da) {
        d * sa
    } else if 2.0 * s <= sa {
        d * sa - d * (da - d) * (sa - 2.0 * s) / da
    } else if 4.0 * d <= da {
        d * sa + (2.0 * s - sa) * d * ((16.0 * d / da - 12.0) * d / da + 3.0)
    } else {
        d * sa + ((d * da).sqrt() - d) * (2.0 * s - sa)
    }
}

/// One channel function of `combine_inner`: (sa, s, da, d) → result.
type Channel = fn(f32, f32, f32, f32) -> f32;

/// The alpha and colour functions of a separable operator.
fn separable(op: u8) -> Option<(Channel, Channel)> {
    fn pdf_a(sa: f32, _s: f32, da: f32, _d: f32) -> f32 {
        da + sa - da * sa
    }
    fn dodge(sa: f32, s: f32, da: f32, d: f32) -> f32 {
        (1.0 - sa) * d + (1.0 - da) * s + blend_color_dodge(sa, s, da, d)
    }
    fn burn(sa: f32, s: f32, da: f32, d: f32) -> f32 {
        (1.0 - sa) * d + (1.0 - da) * s + blend_color_burn(sa, s, da, d)
    }
    fn soft(sa: f32, s: f32, da: f32, d: f32) -> f32 {
        (1.0 - sa) * d + (1.0 - da) * s + blend_soft_light(sa, s, da, d)
    }
    match op {
        0x35 => Some((pdf_a, dodge)),
        0x36 => Some((pdf_a, burn)),
        0x38 => Some((pdf_a, soft)),
        _ => None,
    }
}

/// `combine_inner`: `dest` combined with `src` through an optional `mask`,
/// unified or component alpha.
fn combine_inner(
    ca: bool,
    d: Argb,
    s: Argb,
    m: Option<Argb>,
    ca_fn: impl Fn(f32, f32, f32, f32) -> f32,
    cc_fn: impl Fn(f32, f32, f32, f32) -> f32,
) -> Argb {
    let [mut sa, mut sr, mut sg, mut sb] = s;
    let [da, dr, dg, db] = d;
    let [ma, mr, mg, mb] = match m {
        None => [sa; 4],
        Some([ma, mr, mg, mb]) if ca => {
            sr *= mr;
            sg *= mg;
            sb *= mb;
            let m = [ma * sa, mr * sa, mg * sa, mb * sa];
            sa = m[0];
            m
        }
        Some([ma, ..]) => {
            sa *= ma;
            sr *= ma;
            sg *= ma;
            sb *= ma;
            [sa; 4]
        }
    };
    [ca_fn(ma, sa, da, da), cc_fn(mr, sr, da, dr), cc_fn(mg, sg, da, dg), cc_fn(mb, sb, da, db)]
}

/// `rgb_t`.
#[derive(Debug, Clone, Copy)]
struct Rgb([f32; 3]);

impl Rgb {
    fn min(&self) -> f32 {
        let m = if self.0[0] < self.0[1] { self.0[0] } else { self.0[1] };
        if m < self.0[2] { m } else { self.0[2] }
    }

    fn max(&self) -> f32 {
        let m = if self.0[0] > self.0[1] { self.0[0] } else { self.0[1] };
        if m > self.0[2] { m } else { self.0[2] }
    }

    fn lum(&self) -> f32 {
        self.0[0] * 0.3 + self.0[1] * 0.59 + self.0[2] * 0.11
    }

    fn sat(&self) -> f32 {
        self.max() - self.min()
    }

    fn scaled(&self, f: f32) -> Rgb {
        Rgb([self.0[0] * f, self.0[1] * f, self.0[2] * f])
    }

    /// `clip_color`.
    fn clip(&mut self, a: f32) {
        let l = self.lum();
        let n = self.min();
        let x = self.max();
        if n < 0.0 {
            let t = l - n;
            for c in &mut self.0 {
                *c = if is_zero(t) { 0.0 } else { l + (((*c - l) * l) / t) };
            }
        }
        if x > a {
            let t = x - l;
            for c in &mut self.0 {
                *c = if is_zero(t) { a } else { l + ((*c - l) * (a - l) / t) };
            }
        }
    }

    /// `set_lum`.
    fn set_lum(&mut self, sa: f32, l: f32) {
        let d = l - self.lum();
        for c in &mut self.0 {
            *c += d;
        }
        self.clip(sa);
    }

    /// `set_sat`, choosing max, mid and min as pixman does on ties.
    fn set_sat(&mut self, sat: f32) {
        let [r, g, b] = self.0;
        let (max, mid, min) = if r > g {
            if r > b { if g > b { (0, 1, 2) } else { (0, 2, 1) } } else { (2, 0, 1) }
        } else if r > b {
            (1, 0, 2)
        } else if g > b {
            (1, 2, 0)
        } else {
            (2, 1, 0)
        };
        let t = self.0[max] - self.0[min];
        if is_zero(t) {
            self.0[mid] = 0.0;
            self.0[max] = 0.0;
        } else {
            self.0[mid] = ((self.0[mid] - self.0[min]) * sat) / t;
            self.0[max] = sat;
        }
        self.0[min] = 0.0;
    }
}

/// The HSL modes (`MAKE_NON_SEPARABLE_PDF_COMBINERS`), unified alpha only.
fn combine_hsl(op: u8, d: Argb, s: Argb, m: Option<Argb>) -> Argb {
    let [mut sa, r, g, b] = s;
    let mut sc = Rgb([r, g, b]);
    let da = d[0];
    let dc = Rgb([d[1], d[2], d[3]]);
    if let Some(m) = m {
        sa *= m[0];
        sc.0[0] *= m[0];
        // pixman scales green twice and blue not at all.
        sc.0[1] *= m[0];
        sc.0[1] *= m[0];
    }
    let rc = match op {
        // HSL_HUE
        0x3b => {
            let mut rc = sc.scaled(da);
            rc.set_sat(dc.sat() * sa);
            rc.set_lum(sa * da, dc.lum() * sa);
            rc
        }
        // HSL_SATURATION
        0x3c => {
            let mut rc = dc.scaled(sa);
            rc.set_sat(sc.sat() * da);
            rc.set_lum(sa * da, dc.lum() * sa);
            rc
        }
        // HSL_COLOR
        0x3d => {
            let mut rc = sc.scaled(da);
            rc.set_lum(sa * da, dc.lum() * sa);
            rc
        }
        // HSL_LUMINOSITY
        _ => {
            let mut rc = dc.scaled(sa);
            rc.set_lum(sa * da, sc.lum() * da);
            rc
        }
    };
    let mut out = [sa + da - sa * da, 0.0, 0.0, 0.0];
    for i in 0..3 {
        out[i + 1] = (1.0 - sa) * dc.0[i] + (1.0 - da) * sc.0[i] + rc.0[i];
    }
    out
}

/// Combines one destination pixel with `op` on pixman's floating-point
/// path: source `s`, optional mask `m` (component alpha when `ca`), all
/// expanded with [`expand`]. `None` for an operator this path does not
/// serve (see [`needs_float`]).
pub fn combine(op: u8, ca: bool, s: Argb, m: Option<Argb>, d: Argb) -> Option<Argb> {
    if let Some((fa, fb)) = pd_factors(op) {
        let pd = move |sa: f32, s: f32, da: f32, d: f32| min1(s * factor(fa, sa, da) + d * factor(fb, sa, da));
        return Some(combine_inner(ca, d, s, m, pd, pd));
    }
    if let Some((a, c)) = separable(op) {
        return Some(combine_inner(ca, d, s, m, a, c));
    }
    match op {
        // Component alpha is "not clear" for HSL: pixman leaves the
        // destination as it is.
        0x3b..=0x3e if ca => Some(d),
        0x3b..=0x3e => Some(combine_hsl(op, d, s, m)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_and_contract_round_trip_8_bit() {
        for v in 0..=255u32 {
            let p = v << 24 | v << 16 | v << 8 | v;
            assert_eq!(contract(expand(p, ChannelBits::A8R8G8B8)), p, "{v}");
        }
        // No alpha channel reads opaque; a 5-bit channel uses 1/31.
        let f = expand(0x00ff_0800, ChannelBits::of_surface_format(FMT_16_565));
        assert_eq!(f[0], 1.0);
        assert_eq!(f[1], 1.0);
        assert_eq!(f[2], 2.0 * (1.0 / 63.0));
        assert_eq!(contract([2.0, -1.0, 0.5, f32::NAN]), 0xff00_8000);
    }

    #[test]
    fn operators_on_the_float_path() {
        assert!(needs_float(0x0d) && needs_float(0x10) && needs_float(0x2b) && needs_float(0x3e));
        assert!(!needs_float(0x03) && !needs_float(0x30) && !needs_float(0x37) && !needs_float(0x1c));
        for op in (0..=0x3f).filter(|&o| needs_float(o)) {
            assert!(combine(op, false, [0.5; 4], None, [0.25; 4]).is_some(), "{op:#x}");
        }
        assert!(combine(0x03, false, [0.5; 4], None, [0.25; 4]).is_none());
    }

    #[test]
    fn saturate_and_disjoint_over() {
        // SATURATE: Fa = min(1, (1 - da) / sa), Fb = 1.
        let out = combine(0x0d, false, [0.5, 0.5, 0.25, 0.0], None, [0.75, 0.5, 0.5, 0.5]).unwrap();
        assert_eq!(out, [0.75 + 0.25, 0.5 * 0.5 + 0.5, 0.25 * 0.5 + 0.5, 0.5]);
        // DISJOINT_OVER: Fa = 1, Fb = min(1, (1 - sa) / da).
        let out = combine(0x13, false, [0.5, 0.5, 0.5, 0.5], None, [1.0, 0.2, 0.4, 0.6]).unwrap();
        assert_eq!(out, [1.0, 0.6, 0.7, 0.8]);
    }

    #[test]
    fn blend_modes_at_the_extremes() {
        let white = [1.0; 4];
        let black = [1.0, 0.0, 0.0, 0.0];
        // COLOR_DODGE of black leaves the destination; COLOR_BURN of white too.
        assert_eq!(combine(0x35, false, black, None, [1.0, 0.5, 0.25, 0.0]).unwrap(), [1.0, 0.5, 0.25, 0.0]);
        assert_eq!(combine(0x36, false, white, None, [1.0, 0.5, 0.25, 0.0]).unwrap(), [1.0, 0.5, 0.25, 0.0]);
        // SOFT_LIGHT on a black destination stays black.
        assert_eq!(combine(0x38, false, [1.0, 0.3, 0.6, 0.9], None, black).unwrap(), black);
        // HSL_LUMINOSITY of grey onto grey.
        let grey = [1.0, 0.5, 0.5, 0.5];
        let out = combine(0x3e, false, grey, None, grey).unwrap();
        assert!(out.iter().zip(grey).all(|(a, b)| (a - b).abs() < 1e-6), "{out:?}");
        // Component alpha HSL leaves the destination.
        assert_eq!(combine(0x3b, true, white, Some(white), grey).unwrap(), grey);
    }
}

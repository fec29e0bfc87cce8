//! From component planes to RGB pixels: chroma upsampling and YCbCr to RGB
//! as libjpeg-turbo does them.
//!
//! Upsampling (`jdsample.c` `jinit_upsampler`): with fancy upsampling a
//! component at half the horizontal rate is interpolated with a triangle
//! filter (`h2v1_fancy_upsample`, weights 3/4 and 1/4), at half both rates
//! with the 2-D triangle filter (`h2v2_fancy_upsample`, weights 9, 3, 3, 1
//! over 16 with alternating rounding biases 8 and 7), and at half the
//! vertical rate with `h1v2_fancy_upsample`; the horizontal filters need a
//! component more than 2 samples wide. Everything else replicates samples
//! (`h2v1_upsample`, `h2v2_upsample`, `int_upsample`, and `jdmerge.c`'s
//! merged upsampler, which gives the same values). Rows above the first
//! and below the last real row repeat that row (`jdmainct.c`
//! `make_funny_pointers`, `set_bottom_pointers`); the last real column ends
//! each row (`downsampled_width`).
//!
//! Colour (`jdcolor.c` `build_ycc_rgb_table`, `ycc_rgb_convert`, 16-bit
//! fixed point): R = Y + round(1.402 Cr'), B = Y + round(1.772 Cb'),
//! G = Y + ((-0.34414 Cb' - 0.71414 Cr' + 1/2) >> 16) with Cb' = Cb - 128,
//! Cr' = Cr - 128, each clamped to 0..=255.

use super::{Frame, Plane, RgbImage};

const SCALEBITS: u32 = 16;
const ONE_HALF: i32 = 1 << (SCALEBITS - 1);

/// `FIX(x)`: `x` in 16.16 fixed point, rounded.
const fn fix(x: f64) -> i32 {
    (x * (1 << SCALEBITS) as f64 + 0.5) as i32
}

/// The four tables of `build_ycc_rgb_table`, indexed by Cb or Cr.
struct YccTables {
    cr_r: [i32; 256],
    cb_b: [i32; 256],
    cr_g: [i32; 256],
    cb_g: [i32; 256],
}

impl YccTables {
    fn new() -> Self {
        let mut t = Self { cr_r: [0; 256], cb_b: [0; 256], cr_g: [0; 256], cb_g: [0; 256] };
        for i in 0..256 {
            let x = i as i32 - 128;
            t.cr_r[i] = (fix(1.40200) * x + ONE_HALF) >> SCALEBITS;
            t.cb_b[i] = (fix(1.77200) * x + ONE_HALF) >> SCALEBITS;
            t.cr_g[i] = -fix(0.71414) * x;
            t.cb_g[i] = -fix(0.34414) * x + ONE_HALF;
        }
        t
    }
}

fn clamp(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// The picture's pixels from its decoded planes.
pub(super) fn to_rgb(frame: &Frame, planes: &[Plane], fancy: bool) -> RgbImage {
    let (w, h) = (frame.width, frame.height);
    let full: Vec<Vec<u8>> = frame
        .components
        .iter()
        .zip(planes)
        .map(|(c, p)| upsample(p, frame.h_max / c.h, frame.v_max / c.v, w, h, fancy))
        .collect();
    let mut rgb = vec![0u8; w * h * 3];
    match full.as_slice() {
        [y] => {
            for (px, &l) in rgb.chunks_exact_mut(3).zip(y) {
                px.fill(l);
            }
        }
        [y, cb, cr] if frame.ycbcr => {
            let t = YccTables::new();
            for (i, px) in rgb.chunks_exact_mut(3).enumerate() {
                let (l, b, r) = (i32::from(y[i]), usize::from(cb[i]), usize::from(cr[i]));
                px[0] = clamp(l + t.cr_r[r]);
                px[1] = clamp(l + ((t.cb_g[b] + t.cr_g[r]) >> SCALEBITS));
                px[2] = clamp(l + t.cb_b[b]);
            }
        }
        [r, g, b] => {
            for (i, px) in rgb.chunks_exact_mut(3).enumerate() {
                px.copy_from_slice(&[r[i], g[i], b[i]]);
            }
        }
        // The frame header admits 1 or 3 components only.
        _ => {}
    }
    RgbImage { width: w as u32, height: h as u32, rgb }
}

/// One component brought to `w` x `h` samples; `hr` and `vr` are the
/// integral ratios of the largest sampling factors to its own.
fn upsample(p: &Plane, hr: usize, vr: usize, w: usize, h: usize, fancy: bool) -> Vec<u8> {
    let mut out = vec![0u8; w * h];
    let last_row = p.height.saturating_sub(1);
    let row = |y: usize| &p.samples[y.min(last_row) * p.stride..][..p.stride];
    let mut line = vec![0u8; p.width * hr.max(1) + 1];
    for (y, dst) in out.chunks_exact_mut(w).enumerate() {
        let iy = y / vr;
        match (hr, vr) {
            (1, 1) => dst.copy_from_slice(&row(iy)[..w]),
            (2, 1) if fancy && p.width > 2 => {
                h2v1_fancy(&row(iy)[..p.width], &mut line);
                dst.copy_from_slice(&line[..w]);
            }
            (1, 2) if fancy => {
                // The nearer row weighs 3, the other 1; biases 1 and 2.
                let (near, far, bias) =
                    if y % 2 == 0 { (row(iy), row(iy.saturating_sub(1)), 1) } else { (row(iy), row(iy + 1), 2) };
                for (x, o) in dst.iter_mut().enumerate() {
                    *o = ((u16::from(near[x]) * 3 + u16::from(far[x]) + bias) >> 2) as u8;
                }
            }
            (2, 2) if fancy && p.width > 2 => {
                let far = if y % 2 == 0 { row(iy.saturating_sub(1)) } else { row(iy + 1) };
                h2v2_fancy(&row(iy)[..p.width], &far[..p.width], &mut line);
                dst.copy_from_slice(&line[..w]);
            }
            _ => {
                let src = row(iy);
                for (x, o) in dst.iter_mut().enumerate() {
                    *o = src[x / hr];
                }
            }
        }
    }
    out
}

/// `h2v1_fancy_upsample`: each sample becomes two, 3/4 itself and 1/4 its
/// neighbour on that side, rounding biases 1 and 2; the ends are copied.
fn h2v1_fancy(input: &[u8], out: &mut [u8]) {
    let n = input.len();
    let s = |i: usize| u16::from(input[i]);
    out[0] = input[0];
    out[1] = ((s(0) * 3 + s(1) + 2) >> 2) as u8;
    for i in 1..n - 1 {
        let v = s(i) * 3;
        out[2 * i] = ((v + s(i - 1) + 1) >> 2) as u8;
        out[2 * i + 1] = ((v + s(i + 1) + 2) >> 2) as u8;
    }
    out[2 * n - 2] = ((s(n - 1) * 3 + s(n - 2) + 1) >> 2) as u8;
    out[2 * n - 1] = input[n - 1];
}

/// `h2v2_fancy_upsample` for one output row: column sums 3 x nearer row +
/// farther row, then the horizontal triangle over those sums (/16, biases
/// 8 and 7); the ends use 4 x their own sum.
fn h2v2_fancy(near: &[u8], far: &[u8], out: &mut [u8]) {
    let n = near.len();
    let sum = |i: usize| u32::from(near[i]) * 3 + u32::from(far[i]);
    out[0] = ((sum(0) * 4 + 8) >> 4) as u8;
    out[1] = ((sum(0) * 3 + sum(1) + 7) >> 4) as u8;
    for i in 1..n - 1 {
        let this = sum(i) * 3;
        out[2 * i] = ((this + sum(i - 1) + 8) >> 4) as u8;
        out[2 * i + 1] = ((this + sum(i + 1) + 7) >> 4) as u8;
    }
    out[2 * n - 2] = ((sum(n - 1) * 3 + sum(n - 2) + 8) >> 4) as u8;
    out[2 * n - 1] = ((sum(n - 1) * 4 + 7) >> 4) as u8;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ycc_tables_match_libjpeg() {
        let t = YccTables::new();
        // Cr = 255: 1.402 * 127 = 178.05; Cb = 0: 1.772 * -128 = -226.8.
        assert_eq!(t.cr_r[255], 178);
        assert_eq!(t.cb_b[0], -227);
        assert_eq!(fix(0.71414), 46802);
        assert_eq!(fix(0.34414), 22554);
    }

    #[test]
    fn fancy_filters_interpolate_between_neighbours() {
        let mut out = [0u8; 6];
        h2v1_fancy(&[0, 100, 200], &mut out);
        assert_eq!(out, [0, 25, 75, 125, 175, 200]);
        h2v2_fancy(&[0, 100, 200], &[0, 100, 200], &mut out);
        assert_eq!(out, [0, 25, 75, 125, 175, 200]);
    }
}

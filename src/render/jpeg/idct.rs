//! The two integer inverse DCTs spice-gtk gets from libjpeg-turbo, with
//! their dequantisation and output range limiting:
//!
//! - `JDCT_ISLOW` (`jidctint.c` `jpeg_idct_islow`): the Loeffler-Ligtenberg-
//!   Moschytz algorithm with 13-bit constants, 2 extra bits between the
//!   passes, rounding descales, 64-bit intermediates (`JLONG`).
//! - `JDCT_IFAST` (`jidctfst.c` `jpeg_idct_ifast`): Arai-Agui-Nakajima with
//!   8-bit constants, the AA&N scale folded into the dequantisation table
//!   (`jddctmgr.c` `start_pass`, 2 extra bits) and truncating descales.
//!
//! Both write 8 rows of 8 samples, range-limited the way libjpeg's
//! `sample_range_limit` table does (`jdmaster.c`
//! `prepare_range_limit_table`): the descaled value plus 128, clamped to
//! 0..=255 within -512..=511 and wrapping modulo 1024 outside it.

use super::Idct;

/// A component's dequantisation multipliers for one IDCT, natural order.
#[derive(Debug, Clone)]
pub(super) struct Multipliers {
    idct: Idct,
    table: [i32; 64],
}

/// AA&N scale factors `cos(k*pi/16) * sqrt(2)` (1 for k = 0) for each
/// row/column pair, scaled by 2^14 (`jddctmgr.c` `aanscales`).
const AAN_SCALES: [i32; 64] = [
    16384, 22725, 21407, 19266, 16384, 12873, 8867, 4520, 22725, 31521, 29692, 26722, 22725, 17855, 12299, 6270, 21407,
    29692, 27969, 25172, 21407, 16819, 11585, 5906, 19266, 26722, 25172, 22654, 19266, 15137, 10426, 5315, 16384,
    22725, 21407, 19266, 16384, 12873, 8867, 4520, 12873, 17855, 16819, 15137, 12873, 10114, 6967, 3552, 8867, 12299,
    11585, 10426, 8867, 6967, 4799, 2446, 4520, 6270, 5906, 5315, 4520, 3552, 2446, 1247,
];

impl Multipliers {
    /// The multiplier table `jddctmgr.c` builds from a quantisation table
    /// (`quant`, natural order): the values as 16-bit `ISLOW_MULT_TYPE`,
    /// or scaled by the AA&N factors to 2 fractional bits as 16-bit
    /// `IFAST_MULT_TYPE`.
    pub(super) fn new(quant: &[u16; 64], idct: Idct) -> Self {
        let mut table = [0i32; 64];
        for (i, t) in table.iter_mut().enumerate() {
            *t = match idct {
                Idct::IntegerSlow => i32::from(quant[i] as i16),
                Idct::IntegerFast => {
                    let v = (i64::from(quant[i]) * i64::from(AAN_SCALES[i]) + (1 << 11)) >> 12;
                    i32::from(v as i16)
                }
            };
        }
        Self { idct, table }
    }

    /// Dequantises and inverse-transforms `coefs` (natural order) into the
    /// 8x8 samples at `out[0..]`, rows `stride` bytes apart.
    pub(super) fn inverse(&self, coefs: &[i16; 64], out: &mut [u8], stride: usize) {
        match self.idct {
            Idct::IntegerSlow => islow(coefs, &self.table, out, stride),
            Idct::IntegerFast => ifast(coefs, &self.table, out, stride),
        }
    }
}

/// libjpeg's post-IDCT range limit for a descaled value.
fn range_limit(x: i64) -> u8 {
    let t = (x & 1023) as i32;
    let v = if t < 512 { t } else { t - 1024 };
    (v + 128).clamp(0, 255) as u8
}

const CONST_BITS: u32 = 13;
const PASS1_BITS: u32 = 2;
const FIX_0_298631336: i64 = 2446;
const FIX_0_390180644: i64 = 3196;
const FIX_0_541196100: i64 = 4433;
const FIX_0_765366865: i64 = 6270;
const FIX_0_899976223: i64 = 7373;
const FIX_1_175875602: i64 = 9633;
const FIX_1_501321110: i64 = 12299;
const FIX_1_847759065: i64 = 15137;
const FIX_1_961570560: i64 = 16069;
const FIX_2_053119869: i64 = 16819;
const FIX_2_562915447: i64 = 20995;
const FIX_3_072711026: i64 = 25172;

/// `DESCALE`: shift right by `n` with rounding.
fn descale(x: i64, n: u32) -> i64 {
    (x + (1 << (n - 1))) >> n
}

/// One 8-point ISLOW butterfly over `v` (already dequantised or from the
/// first pass); returns the 8 outputs before their descale.
fn islow_1d(v: [i64; 8]) -> [i64; 8] {
    // Even part.
    let (z2, z3) = (v[2], v[6]);
    let z1 = (z2 + z3) * FIX_0_541196100;
    let tmp2 = z1 + z3 * -FIX_1_847759065;
    let tmp3 = z1 + z2 * FIX_0_765366865;
    let tmp0 = (v[0] + v[4]) << CONST_BITS;
    let tmp1 = (v[0] - v[4]) << CONST_BITS;
    let (tmp10, tmp13) = (tmp0 + tmp3, tmp0 - tmp3);
    let (tmp11, tmp12) = (tmp1 + tmp2, tmp1 - tmp2);
    // Odd part.
    let (mut t0, mut t1, mut t2, mut t3) = (v[7], v[5], v[3], v[1]);
    let z1 = t0 + t3;
    let z2 = t1 + t2;
    let z3 = t0 + t2;
    let z4 = t1 + t3;
    let z5 = (z3 + z4) * FIX_1_175875602;
    t0 *= FIX_0_298631336;
    t1 *= FIX_2_053119869;
    t2 *= FIX_3_072711026;
    t3 *= FIX_1_501321110;
    let z1 = z1 * -FIX_0_899976223;
    let z2 = z2 * -FIX_2_562915447;
    let z3 = z3 * -FIX_1_961570560 + z5;
    let z4 = z4 * -FIX_0_390180644 + z5;
    t0 += z1 + z3;
    t1 += z2 + z4;
    t2 += z2 + z3;
    t3 += z1 + z4;
    [tmp10 + t3, tmp11 + t2, tmp12 + t1, tmp13 + t0, tmp13 - t0, tmp12 - t1, tmp11 - t2, tmp10 - t3]
}

fn islow(coefs: &[i16; 64], quant: &[i32; 64], out: &mut [u8], stride: usize) {
    // Pass 1: columns, into a workspace of C `int`s.
    let mut ws = [0i32; 64];
    for col in 0..8 {
        if (1..8).all(|row| coefs[row * 8 + col] == 0) {
            // AC terms all zero: the butterfly gives the DC term, scaled
            // by the pass-1 bits, in every row (libjpeg's shortcut, same
            // values).
            let dc = (i32::from(coefs[col]) * quant[col]).wrapping_shl(PASS1_BITS);
            for row in 0..8 {
                ws[row * 8 + col] = dc;
            }
            continue;
        }
        let v: [i64; 8] = std::array::from_fn(|row| i64::from(i32::from(coefs[row * 8 + col]) * quant[row * 8 + col]));
        let r = islow_1d(v);
        for (row, x) in r.into_iter().enumerate() {
            ws[row * 8 + col] = descale(x, CONST_BITS - PASS1_BITS) as i32;
        }
    }
    // Pass 2: rows, descaled by the pass-1 bits and the factor 8.
    for row in 0..8 {
        let Some(line) = out.get_mut(row * stride..row * stride + 8) else { return };
        if ws[row * 8 + 1..row * 8 + 8].iter().all(|&x| x == 0) {
            line.fill(range_limit(descale(i64::from(ws[row * 8]), PASS1_BITS + 3)));
            continue;
        }
        let v: [i64; 8] = std::array::from_fn(|c| i64::from(ws[row * 8 + c]));
        let r = islow_1d(v);
        for (o, x) in line.iter_mut().zip(r) {
            *o = range_limit(descale(x, CONST_BITS + PASS1_BITS + 3));
        }
    }
}

const IFAST_CONST_BITS: u32 = 8;
const FIX_1_082392200: i64 = 277;
const FIX_1_414213562: i64 = 362;
const FIX_1_847759065_FAST: i64 = 473;
const FIX_2_613125930: i64 = 669;

/// `MULTIPLY` of `jidctfst.c`: multiply and truncate the 8 fraction bits.
fn fmul(x: i64, c: i64) -> i64 {
    (x * c) >> IFAST_CONST_BITS
}

fn ifast_1d(v: [i64; 8]) -> [i64; 8] {
    // Even part.
    let (tmp10, tmp11) = (v[0] + v[4], v[0] - v[4]);
    let tmp13 = v[2] + v[6];
    let tmp12 = fmul(v[2] - v[6], FIX_1_414213562) - tmp13;
    let (tmp0, tmp3) = (tmp10 + tmp13, tmp10 - tmp13);
    let (tmp1, tmp2) = (tmp11 + tmp12, tmp11 - tmp12);
    // Odd part.
    let (z13, z10) = (v[5] + v[3], v[5] - v[3]);
    let (z11, z12) = (v[1] + v[7], v[1] - v[7]);
    let tmp7 = z11 + z13;
    let tmp11 = fmul(z11 - z13, FIX_1_414213562);
    let z5 = fmul(z10 + z12, FIX_1_847759065_FAST);
    let tmp10 = fmul(z12, FIX_1_082392200) - z5;
    let tmp12 = fmul(z10, -FIX_2_613125930) + z5;
    let tmp6 = tmp12 - tmp7;
    let tmp5 = tmp11 - tmp6;
    let tmp4 = tmp10 + tmp5;
    [tmp0 + tmp7, tmp1 + tmp6, tmp2 + tmp5, tmp3 - tmp4, tmp3 + tmp4, tmp2 - tmp5, tmp1 - tmp6, tmp0 - tmp7]
}

fn ifast(coefs: &[i16; 64], quant: &[i32; 64], out: &mut [u8], stride: usize) {
    let mut ws = [0i64; 64];
    for col in 0..8 {
        let v: [i64; 8] = std::array::from_fn(|row| i64::from(coefs[row * 8 + col]) * i64::from(quant[row * 8 + col]));
        for (row, x) in ifast_1d(v).into_iter().enumerate() {
            ws[row * 8 + col] = x;
        }
    }
    for row in 0..8 {
        let v: [i64; 8] = std::array::from_fn(|c| ws[row * 8 + c]);
        let r = ifast_1d(v);
        let Some(line) = out.get_mut(row * stride..row * stride + 8) else { return };
        for (o, x) in line.iter_mut().zip(r) {
            *o = range_limit(x >> (PASS1_BITS + 3));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dc_only_block_is_flat() {
        // DC 100 with quantiser 8: 800 / 8 = 100 above mid-grey.
        let mut coefs = [0i16; 64];
        coefs[0] = 100;
        let mut quant = [1u16; 64];
        quant[0] = 8;
        for idct in [Idct::IntegerSlow, Idct::IntegerFast] {
            let mut out = [0u8; 64];
            Multipliers::new(&quant, idct).inverse(&coefs, &mut out, 8);
            assert!(out.iter().all(|&s| s == 228), "{idct:?}: {out:?}");
        }
    }

    #[test]
    fn the_range_limit_clamps_then_wraps_as_libjpeg_does() {
        assert_eq!(range_limit(0), 128);
        assert_eq!(range_limit(-128), 0);
        assert_eq!(range_limit(-400), 0);
        assert_eq!(range_limit(127), 255);
        assert_eq!(range_limit(511), 255);
        // Past the table: modulo 1024.
        assert_eq!(range_limit(1024), 128);
        assert_eq!(range_limit(-1024 + 5), 133);
    }

    #[test]
    fn extreme_coefficients_do_not_overflow() {
        let coefs = [i16::MIN; 64];
        let quant = [u16::MAX; 64];
        for idct in [Idct::IntegerSlow, Idct::IntegerFast] {
            let mut out = [0u8; 64];
            Multipliers::new(&quant, idct).inverse(&coefs, &mut out, 8);
        }
    }
}

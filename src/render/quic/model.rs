//! QUIC's adaptive model: Golomb code families, context buckets, the model-update schedule and
//! the run-length (MELCODE) coder.
//!
//! All of it follows spice-common `quic.c` and `quic_family_tmpl.c` (QUIC is Red Hat's variant of
//! Roman Starosolski's SFALIC), with the compile-time settings spice uses: model evolution 3,
//! codeword length limit 26, wait-mask index from 0 to 6, 2048 symbols per wait-mask step.
//!
//! - A *family* (one for 8-bit channels, one for 5-bit channels) is the set of Golomb-Rice codes
//!   `l = 0 .. bpc-1`, each truncated so that no codeword is longer than 26 bits: the first
//!   `n_gr[l]` values get ordinary Rice codes (unary quotient, `l` remainder bits), larger values
//!   get a fixed-length escape made of `n_gr[l] >> l` zeros and a binary suffix.
//! - A *bucket* groups context values (the previous pixel's residual in the same channel) into
//!   ranges of sizes 1, 2, 4, 8 ...; each bucket keeps, per code `l`, the total length the code
//!   would have spent, and codes with the cheapest one.
//! - The model is not updated after every symbol: after each update a pseudo-random number of
//!   symbols (masked by the *wait mask*, which widens as the image goes on) is skipped.

use super::QuicError;
use super::bits::BitReader;

/// Longest codeword any code of a family may produce, in bits.
const CODEWORD_LIMIT: u32 = 26;

/// Largest wait-mask index; reached after `WAIT_MASK_MAX * SYMBOLS_PER_STEP` pixels.
const WAIT_MASK_MAX: u32 = 6;

/// Pixels coded with one wait-mask index before moving to the next.
const SYMBOLS_PER_STEP: u32 = 2048;

/// Counter-halving thresholds for model evolution 3, indexed by the wait-mask index (spice's
/// `besttrigtab[1]`; entries past index 6 are never used).
const HALVING_TRIGGER: [u32; 7] = [110, 550, 900, 800, 550, 400, 350];

/// Remainder length (in bits) of the run-length coder for each of its 32 states (spice's `J`).
const RUN_REMAINDER_BITS: [u32; 32] =
    [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 9, 10, 11, 12, 13, 14, 15];

/// The pseudo-random sequence that decides how many symbols to skip between model updates
/// (spice's `tabrand_chaos`).
const CHAOS: [u32; 256] = [
    0x02c57542, 0x35427717, 0x2f5a2153, 0x9244f155, 0x7bd26d07, 0x354c6052, 0x57329b28, 0x2993868e, 0x6cd8808c,
    0x147b46e0, 0x99db66af, 0xe32b4cac, 0x1b671264, 0x9d433486, 0x62a4c192, 0x06089a4b, 0x9e3dce44, 0xdaabee13,
    0x222425ea, 0xa46f331d, 0xcd589250, 0x8bb81d7f, 0xc8b736b9, 0x35948d33, 0xd7ac7fd0, 0x5fbe2803, 0x2cfbc105,
    0x013dbc4e, 0x7a37820f, 0x39f88e9e, 0xedd58794, 0xc5076689, 0xfcada5a4, 0x64c2f46d, 0xb3ba3243, 0x8974b4f9,
    0x5a05aebd, 0x20afcd00, 0x39e2b008, 0x88a18a45, 0x600bde29, 0xf3971ace, 0xf37b0a6b, 0x7041495b, 0x70b707ab,
    0x06beffbb, 0x4206051f, 0xe13c4ee3, 0xc1a78327, 0x91aa067c, 0x8295f72a, 0x732917a6, 0x1d871b4d, 0x4048f136,
    0xf1840e7e, 0x6a6048c1, 0x696cb71a, 0x7ff501c3, 0x0fc6310b, 0x57e0f83d, 0x8cc26e74, 0x11a525a2, 0x946934c7,
    0x7cd888f0, 0x8f9d8604, 0x4f86e73b, 0x04520316, 0xdeeea20c, 0xf1def496, 0x67687288, 0xf540c5b2, 0x22401484,
    0x3478658a, 0xc2385746, 0x01979c2c, 0x5dad73c8, 0x0321f58b, 0xf0fedbee, 0x92826ddf, 0x284bec73, 0x5b1a1975,
    0x03df1e11, 0x20963e01, 0xa17cf12b, 0x740d776e, 0xa7a6bf3c, 0x01b5cce4, 0x1118aa76, 0xfc6fac0a, 0xce927e9b,
    0x00bf2567, 0x806f216c, 0xbca69056, 0x795bd3e9, 0xc9dc4557, 0x8929b6c2, 0x789d52ec, 0x3f3fbf40, 0xb9197368,
    0xa38c15b5, 0xc3b44fa8, 0xca8333b0, 0xb7e8d590, 0xbe807feb, 0xbf5f8360, 0xd99e2f5c, 0x372928e1, 0x7c757c4c,
    0x0db5b154, 0xc01ede02, 0x1fc86e78, 0x1f3985be, 0xb4805c77, 0x00c880fa, 0x974c1b12, 0x35ab0214, 0xb2dc840d,
    0x5b00ae37, 0xd313b026, 0xb260969d, 0x7f4c8879, 0x1734c4d3, 0x49068631, 0xb9f6a021, 0x6b863e6f, 0xcee5debf,
    0x29f8c9fb, 0x53dd6880, 0x72b61223, 0x1f67a9fd, 0x0a0f6993, 0x13e59119, 0x11cca12e, 0xfe6b6766, 0x16b6effc,
    0x97918fc4, 0xc2b8a563, 0x94f2f741, 0x0bfa8c9a, 0xd1537ae8, 0xc1da349c, 0x873c60ca, 0x95005b85, 0x9b5c080e,
    0xbc8abbd9, 0xe1eab1d2, 0x6dac9070, 0x4ea9ebf1, 0xe0cf30d4, 0x1ef5bd7b, 0xd161043e, 0x5d2fa2e2, 0xff5d3cae,
    0x86ed9f87, 0x2aa1daa1, 0xbd731a34, 0x9e8f4b22, 0xb1c2c67a, 0xc21758c9, 0xa182215d, 0xccb01948, 0x8d168df7,
    0x04238cfe, 0x368c3dbc, 0x0aeadca5, 0xbad21c24, 0x0a71fee5, 0x9fc5d872, 0x54c152c6, 0xfc329483, 0x6783384a,
    0xeddb3e1c, 0x65f90e30, 0x884ad098, 0xce81675a, 0x4b372f7d, 0x68bf9a39, 0x43445f1e, 0x40f8d8cb, 0x90d5acb6,
    0x4cd07282, 0x349eeb06, 0x0c9d5332, 0x520b24ef, 0x80020447, 0x67976491, 0x2f931ca3, 0xfe9b0535, 0xfcd30220,
    0x61a9e6cc, 0xa487d8d7, 0x3f7c5dd1, 0x7d0127c5, 0x48f51d15, 0x60dea871, 0xc9a91cb7, 0x58b53bb3, 0x9d5e0b2d,
    0x624a78b4, 0x30dbee1b, 0x9bdf22e7, 0x1df5c299, 0x2d5643a7, 0xf4dd35ff, 0x03ca8fd6, 0x53b47ed8, 0x6f2c19aa,
    0xfeb0c1f4, 0x49e54438, 0x2f2577e6, 0xbf876969, 0x72440ea9, 0xfa0bafb8, 0x74f5b3a0, 0x7dd357cd, 0x89ce1358,
    0x6ef2cdda, 0x1e7767f3, 0xa6be9fdb, 0x4f5f88f8, 0xba994a3a, 0x08ca6b65, 0xe0893818, 0x9e00a16a, 0xf42bfc8f,
    0x9972eedc, 0x749c8b51, 0x32c05f5e, 0xd706805f, 0x6bfbb7cf, 0xd9210a10, 0x31a1db97, 0x923a9559, 0x37a7a1f6,
    0x059f8861, 0xca493e62, 0x65157e81, 0x8f6467dd, 0xab85ff9f, 0x9331aff2, 0x8616b9f5, 0xedbd5695, 0xee7e29b1,
    0x313ac44f, 0xb903112f, 0x432ef649, 0xdc0a36c0, 0x61cf2bba, 0x81474925, 0xa8b6c7ad, 0xee5931de, 0xb2f8158d,
    0x59fb7409, 0x2e3dfaed, 0x9af25a3f, 0xe1fed4d5,
];

/// Why a run is refused.
pub(super) const RUN_TOO_LONG: &str = "pixel run past the end of its row segment";

/// `n` ones in the low bits (`n` up to 32).
const fn low_mask(n: u32) -> u32 {
    if n >= 32 { u32::MAX } else { (1 << n) - 1 }
}

/// `ceil(log2(n))` for `n >= 1`.
const fn ceil_log2(n: u32) -> u32 {
    if n <= 1 { 0 } else { 32 - (n - 1).leading_zeros() }
}

/// Code tables for one channel depth (5 or 8 bits per channel).
#[derive(Debug)]
pub(super) struct Family {
    /// Bits per channel value.
    pub(super) bpc: u32,
    /// `2^bpc - 1`: keeps reconstructed values in range.
    pub(super) value_mask: u32,
    /// Number of context buckets.
    pub(super) buckets: usize,
    /// Per code `l`: how many values get a plain Rice codeword.
    rice_values: [u32; 8],
    /// Per code `l`: the bit length of an escape codeword.
    escape_len: [u32; 8],
    /// Per code `l`: the suffix length of an escape codeword.
    escape_suffix: [u32; 8],
    /// Per code `l`: a 32-bit look-ahead at or below this value starts with an escape prefix.
    escape_below: [u32; 8],
    /// `codeword_len[value][l]`: bits code `l` spends on `value`.
    codeword_len: [[u8; 8]; 256],
    /// Maps a coded residual back to a signed difference modulo `2^bpc` (0, -1, 1, -2, 2 ...
    /// folded as 0, max, 1, max-1, ...); entries past `2^bpc - 1` stay 0, as in spice-common.
    pub(super) unfold: [u8; 256],
    /// Bucket index of each context value.
    pub(super) bucket_of: [u8; 256],
}

impl Family {
    /// Builds the tables for `bpc` bits per channel (5 or 8).
    const fn new(bpc: u32) -> Family {
        let levels = 1u32 << bpc;
        let mut family = Family {
            bpc,
            value_mask: levels - 1,
            buckets: 0,
            rice_values: [0; 8],
            escape_len: [0; 8],
            escape_suffix: [0; 8],
            escape_below: [0; 8],
            codeword_len: [[0; 8]; 256],
            unfold: [0; 256],
            bucket_of: [0; 256],
        };
        let mut l = 0;
        while l < bpc {
            // Escape prefix length: as long as the length limit allows, but no longer than the
            // number of distinct quotients the code needs.
            let mut prefix = CODEWORD_LIMIT - bpc;
            if prefix > low_mask(bpc - l) {
                prefix = low_mask(bpc - l);
            }
            let rice = prefix << l;
            let suffix = ceil_log2(levels - rice);
            family.rice_values[l as usize] = rice;
            family.escape_suffix[l as usize] = suffix;
            family.escape_len[l as usize] = prefix + suffix;
            family.escape_below[l as usize] = low_mask(32 - prefix);
            let mut value = 0;
            while value < 256 {
                let len = if value < rice { (value >> l) + l + 1 } else { prefix + suffix };
                family.codeword_len[value as usize][l as usize] = len as u8;
                value += 1;
            }
            l += 1;
        }
        let mut v = 0;
        while v < levels {
            family.unfold[v as usize] = (if v & 1 == 1 { levels - 1 - (v >> 1) } else { v >> 1 }) as u8;
            v += 1;
        }
        // Buckets cover 1, 2, 4, ... context values; a bucket whose successor would run past the
        // last value absorbs the rest.
        let mut start = 0;
        let mut size = 1;
        let mut index = 0;
        loop {
            let mut end = start + size - 1;
            if end + size >= levels {
                end = levels - 1;
            }
            let mut v = start;
            while v <= end {
                family.bucket_of[v as usize] = index;
                v += 1;
            }
            index += 1;
            if end == levels - 1 {
                break;
            }
            start = end + 1;
            size *= 2;
        }
        family.buckets = index as usize;
        // Context values past `2^bpc - 1` (only a corrupt 5-bit stream makes them) use their low
        // `bpc` bits, as spice-common's bucket lookup masks them.
        let mut v = levels;
        while v < 256 {
            family.bucket_of[v as usize] = family.bucket_of[(v & (levels - 1)) as usize];
            v += 1;
        }
        family
    }

    /// Decodes one codeword of code `l` from the 32-bit look-ahead `bits`.
    ///
    /// Returns the value (reduced to 8 bits, as spice-common stores it; only a corrupt stream can
    /// produce an escape value past 255) and the codeword length in bits (1 to 26).
    #[inline(always)]
    pub(super) fn decode(&self, l: u32, bits: u32) -> (u8, u32) {
        let l_ix = l as usize;
        if bits > self.escape_below[l_ix] {
            let quotient = bits.leading_zeros();
            let len = quotient + 1 + l;
            let remainder = (bits >> (32 - len)) & low_mask(l);
            (((quotient << l) | remainder) as u8, len)
        } else {
            let len = self.escape_len[l_ix];
            let suffix = (bits >> (32 - len)) & low_mask(self.escape_suffix[l_ix]);
            (self.rice_values[l_ix].wrapping_add(suffix) as u8, len)
        }
    }
}

/// Tables for 8-bit channels (GRAY, RGB24, RGB32, RGBA).
pub(super) static FAMILY_8: Family = Family::new(8);

/// Tables for 5-bit channels (RGB16).
pub(super) static FAMILY_5: Family = Family::new(5);

/// The statistics of one context bucket.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bucket {
    /// Per code `l`: bits that code would have spent on the symbols seen (halved now and then).
    spent: [u32; 8],
    /// The code currently used for symbols in this bucket.
    pub(super) best: u32,
}

impl Bucket {
    /// A fresh bucket of `family`: no statistics, the longest code.
    pub(super) fn new(family: &Family) -> Bucket {
        Bucket { spent: [0; 8], best: family.bpc - 1 }
    }

    /// Accounts `value` to every code, picks the cheapest (the highest `l` on ties) and halves
    /// the counters once the cheapest total exceeds `trigger`.
    #[inline]
    pub(super) fn update(&mut self, family: &Family, value: u8, trigger: u32) {
        let lens = &family.codeword_len[usize::from(value)];
        let top = family.bpc as usize - 1;
        self.spent[top] += u32::from(lens[top]);
        let mut best = top;
        let mut best_spent = self.spent[top];
        for l in (0..top).rev() {
            self.spent[l] += u32::from(lens[l]);
            if self.spent[l] < best_spent {
                best = l;
                best_spent = self.spent[l];
            }
        }
        self.best = best as u32;
        if best_spent > trigger {
            for spent in &mut self.spent[..=top] {
                *spent >>= 1;
            }
        }
    }
}

/// The adaptation state shared by the channels coded together (R, G and B share one; GRAY and
/// the alpha plane have their own): update schedule, wait mask and run-length coder.
#[derive(Debug, Clone)]
pub(super) struct Schedule {
    /// Symbols still to skip before the next model update.
    pub(super) wait: u32,
    /// Position in [`CHAOS`].
    seed: u32,
    /// Current wait-mask index (0 to [`WAIT_MASK_MAX`]).
    pub(super) mask_index: u32,
    /// Pixels left before the wait-mask index grows.
    pub(super) step_left: u32,
    /// Counter-halving threshold for the current wait-mask index.
    pub(super) trigger: u32,
    /// Run-length coder state (index into [`RUN_REMAINDER_BITS`]).
    run_state: usize,
}

impl Schedule {
    /// The state at the start of an image.
    pub(super) fn new() -> Schedule {
        Schedule {
            wait: 0,
            seed: 0xff,
            mask_index: 0,
            step_left: SYMBOLS_PER_STEP,
            trigger: HALVING_TRIGGER[0],
            run_state: 0,
        }
    }

    /// The wait mask: a random skip count is masked with it.
    pub(super) fn wait_mask(&self) -> u32 {
        low_mask(self.mask_index)
    }

    /// The next pseudo-random skip count.
    pub(super) fn next_wait(&mut self) -> u32 {
        self.seed = self.seed.wrapping_add(1);
        CHAOS[(self.seed & 0xff) as usize] & self.wait_mask()
    }

    /// Splits a row of `width` pixels into segments coded with one wait mask each, advancing the
    /// wait-mask index as spice-common does; returns `(start, end)` pixel ranges through `each`.
    ///
    /// # Errors
    /// Whatever `each` returns.
    pub(super) fn for_each_segment(
        &mut self,
        width: u32,
        mut each: impl FnMut(&mut Schedule, usize, usize) -> Result<(), QuicError>,
    ) -> Result<(), QuicError> {
        let mut pos = 0u32;
        let mut left = width;
        while self.mask_index < WAIT_MASK_MAX && self.step_left <= left {
            if self.step_left > 0 {
                each(self, pos as usize, (pos + self.step_left) as usize)?;
                pos += self.step_left;
                left -= self.step_left;
            }
            self.mask_index += 1;
            self.trigger = HALVING_TRIGGER[self.mask_index as usize];
            self.step_left = SYMBOLS_PER_STEP;
        }
        if left > 0 {
            each(self, pos as usize, (pos + left) as usize)?;
            if self.mask_index < WAIT_MASK_MAX {
                self.step_left -= left;
            }
        }
        Ok(())
    }

    /// Current run coder parameter: a run of `2^k` pixels is one "hit" bit.
    fn run_bits(&self) -> u32 {
        RUN_REMAINDER_BITS[self.run_state]
    }

    /// Decodes a run length (MELCODE: a "1" per full run of `2^k` pixels, k growing with each
    /// hit, then "0" and a `k`-bit remainder), at most `limit` pixels.
    ///
    /// # Errors
    /// [`QuicError::Truncated`] if the stream ends; [`QuicError::Corrupt`] (with `row` 0, the
    /// caller fills it in) if the run would pass `limit`, the end of the row segment being coded.
    pub(super) fn decode_run(&mut self, reader: &mut BitReader<'_>, limit: usize) -> Result<usize, QuicError> {
        let mut run = 0usize;
        loop {
            let ones = (!reader.peek()).leading_zeros().min(8);
            for _ in 0..ones {
                run += 1 << self.run_bits();
                if self.run_state < RUN_REMAINDER_BITS.len() - 1 {
                    self.run_state += 1;
                }
            }
            if run > limit {
                return Err(QuicError::Corrupt { row: 0, reason: RUN_TOO_LONG });
            }
            if ones < 8 {
                reader.consume(ones + 1)?;
                break;
            }
            reader.consume(8)?;
        }
        let k = self.run_bits();
        if k > 0 {
            run += (reader.peek() >> (32 - k)) as usize;
            reader.consume(k)?;
        }
        if self.run_state > 0 {
            self.run_state -= 1;
        }
        if run > limit {
            return Err(QuicError::Corrupt { row: 0, reason: RUN_TOO_LONG });
        }
        Ok(run)
    }
}

//! Huffman decoding of sequential JPEG scans as libjpeg-turbo's `jdhuff.c`
//! does it: derived tables (`jpeg_make_d_derived_tbl`), the bit reader
//! with byte stuffing and markers (`jpeg_fill_bit_buffer`), and one 8x8
//! block's DC difference and AC run/size codes (`decode_mcu_slow`).
//!
//! Corrupt data is decoded as libjpeg decodes it rather than refused: a
//! code longer than 16 bits gives symbol 0, data past a marker or the end
//! of input reads as zero bits, and an AC run past the 63rd coefficient
//! lands on the last one.

use super::{JpegError, ZIGZAG};

/// Bits resolved by one table lookup (libjpeg's `HUFF_LOOKAHEAD`).
const LOOKAHEAD: u32 = 9;

/// A Huffman table ready for decoding.
#[derive(Debug, Clone)]
pub(super) struct HuffmanTable {
    /// Largest code of each length 1..=16 (index 17: a sentinel), -1 when
    /// there is none.
    maxcode: [i32; 18],
    /// `huffval` index minus code, per length.
    valoffset: [i32; 18],
    huffval: Vec<u8>,
    /// For each 9-bit prefix: code length (0: longer than 9) and symbol.
    lookup: Vec<(u8, u8)>,
}

impl HuffmanTable {
    /// Builds a table from a DHT's 16 counts and its symbols (T.81 C.2).
    ///
    /// # Errors
    /// [`JpegError::BadHuffmanTable`] when the counts do not form a prefix
    /// code, or a DC table has a symbol over 15 (`jdhuff.c`).
    pub(super) fn new(counts: &[u8; 16], symbols: &[u8], dc: bool) -> Result<Self, JpegError> {
        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
        if total > 256 || total != symbols.len() || (dc && symbols.iter().any(|&s| s > 15)) {
            return Err(JpegError::BadHuffmanTable);
        }
        // Codes in order of length (T.81 C.1, C.2).
        let mut codes = Vec::with_capacity(total);
        let mut code = 0u32;
        for (l, &n) in counts.iter().enumerate() {
            let len = l as u32 + 1;
            for _ in 0..n {
                codes.push((code, len));
                code += 1;
            }
            // The next code must still fit: no code may be all ones.
            if code >= 1 << len {
                return Err(JpegError::BadHuffmanTable);
            }
            code <<= 1;
        }
        let mut maxcode = [-1i32; 18];
        let mut valoffset = [0i32; 18];
        let mut p = 0usize;
        for (l, &n) in counts.iter().enumerate() {
            if n != 0 {
                valoffset[l + 1] = p as i32 - codes[p].0 as i32;
                p += usize::from(n);
                maxcode[l + 1] = codes[p - 1].0 as i32;
            }
        }
        maxcode[17] = 0xf_ffff;
        let mut lookup = vec![(0u8, 0u8); 1 << LOOKAHEAD];
        for (i, &(code, len)) in codes.iter().enumerate() {
            if len <= LOOKAHEAD {
                let shift = LOOKAHEAD - len;
                let first = (code << shift) as usize;
                for entry in &mut lookup[first..first + (1 << shift)] {
                    *entry = (len as u8, symbols[i]);
                }
            }
        }
        Ok(Self { maxcode, valoffset, huffval: symbols.to_vec(), lookup })
    }

    /// The standard tables of T.81 K.3 that libjpeg-turbo supplies when a
    /// scan uses a table the stream never defined (`jstdhuff.c`, for
    /// Motion-JPEG): luminance for table 0, chrominance otherwise.
    pub(super) fn standard(chroma: bool, dc: bool) -> Self {
        let (counts, symbols): (&[u8; 16], &[u8]) = match (dc, chroma) {
            (true, false) => (&STD_DC_LUMA_BITS, &STD_DC_VALS),
            (true, true) => (&STD_DC_CHROMA_BITS, &STD_DC_VALS),
            (false, false) => (&STD_AC_LUMA_BITS, &STD_AC_LUMA_VALS),
            (false, true) => (&STD_AC_CHROMA_BITS, &STD_AC_CHROMA_VALS),
        };
        // The standard tables are valid prefix codes.
        Self::new(counts, symbols, dc).unwrap_or_else(|_| Self::empty())
    }

    fn empty() -> Self {
        Self { maxcode: [-1; 18], valoffset: [0; 18], huffval: Vec::new(), lookup: vec![(0, 0); 1 << LOOKAHEAD] }
    }

    /// Decodes one symbol; a code no table entry matches gives 0 after 17
    /// bits (`jpeg_huff_decode`'s `JWRN_HUFF_BAD_CODE`).
    fn decode(&self, bits: &mut BitReader) -> u8 {
        bits.fill();
        let peek = bits.peek(LOOKAHEAD) as usize;
        let (len, sym) = self.lookup[peek];
        if len != 0 {
            bits.consume(u32::from(len));
            return sym;
        }
        let mut l = LOOKAHEAD + 1;
        let mut code = bits.peek(l) as i32;
        while l <= 16 && code > self.maxcode[l as usize] {
            l += 1;
            code = bits.peek(l) as i32;
        }
        if l > 16 {
            bits.consume(17);
            return 0;
        }
        bits.consume(l);
        let index = code + self.valoffset[l as usize];
        usize::try_from(index).ok().and_then(|i| self.huffval.get(i)).copied().unwrap_or(0)
    }
}

/// T.81 F.2.2.1 `EXTEND`: a `s`-bit magnitude category value to its
/// signed coefficient (`HUFF_EXTEND`).
fn extend(v: u32, s: u32) -> i32 {
    if s == 0 {
        0
    } else if v < 1 << (s - 1) {
        v as i32 - (1 << s) + 1
    } else {
        v as i32
    }
}

/// Decodes one block's coefficients into `block` (natural order, zeroed by
/// the caller), updating the component's DC predictor `pred`. Values are
/// truncated to 16 bits as libjpeg's `JCOEF` stores them.
pub(super) fn decode_block(
    bits: &mut BitReader,
    dc: &HuffmanTable,
    ac: &HuffmanTable,
    pred: &mut i32,
    block: &mut [i16; 64],
) {
    let s = u32::from(dc.decode(bits));
    let diff = extend(bits.take(s), s);
    *pred = pred.wrapping_add(diff);
    block[0] = *pred as i16;
    let mut k = 1usize;
    while k < 64 {
        let rs = ac.decode(bits);
        let (r, s) = (usize::from(rs >> 4), u32::from(rs & 15));
        if s != 0 {
            k += r;
            let v = extend(bits.take(s), s);
            // libjpeg's natural-order table has 16 extra entries of 63 for
            // runs that overshoot.
            block[if k < 64 { ZIGZAG[k] } else { 63 }] = v as i16;
        } else if r == 15 {
            k += 15;
        } else {
            break;
        }
        k += 1;
    }
}

/// Bits of entropy-coded data, MSB first, with 0xFF00 unstuffed. A marker
/// (0xFF then anything but 0x00) ends the data: from there on it reads
/// zero bits until [`BitReader::restart`] moves past an RSTm.
pub(super) struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
    acc: u64,
    count: u32,
    /// At a marker (or the end): `pos` points at its 0xFF.
    stopped: bool,
}

impl<'a> BitReader<'a> {
    /// Starts at byte `pos` of `data`.
    pub(super) fn new(data: &'a [u8], pos: usize) -> Self {
        Self { data, pos, acc: 0, count: 0, stopped: false }
    }

    /// Tops the accumulator up to at least 57 bits.
    fn fill(&mut self) {
        while self.count <= 56 {
            let byte = if self.stopped { 0 } else { self.next_byte() };
            self.acc |= u64::from(byte) << (56 - self.count);
            self.count += 8;
        }
    }

    fn next_byte(&mut self) -> u8 {
        let Some(&b) = self.data.get(self.pos) else {
            self.stopped = true;
            return 0;
        };
        if b != 0xff {
            self.pos += 1;
            return b;
        }
        // 0xFF: fill bytes, then 0x00 (a stuffed 0xFF) or a marker.
        let mut i = self.pos + 1;
        while self.data.get(i) == Some(&0xff) {
            i += 1;
        }
        match self.data.get(i) {
            Some(0) => {
                self.pos = i + 1;
                0xff
            }
            _ => {
                self.pos = i - 1;
                self.stopped = true;
                0
            }
        }
    }

    /// The next `n` (1..=17) bits without consuming them.
    fn peek(&mut self, n: u32) -> u32 {
        (self.acc >> (64 - n)) as u32
    }

    fn consume(&mut self, n: u32) {
        self.acc <<= n;
        self.count = self.count.saturating_sub(n);
    }

    /// Reads `n` (0..=16) bits.
    fn take(&mut self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        self.fill();
        let v = self.peek(n);
        self.consume(n);
        v
    }

    /// At a restart interval's end: drops the buffered bits and moves past
    /// the next marker if it is an RSTm (`jdhuff.c` `process_restart`,
    /// `jdmarker.c` `read_restart_marker`).
    pub(super) fn restart(&mut self) {
        self.acc = 0;
        self.count = 0;
        if !self.stopped {
            // Skip whatever is left before the marker.
            while self.pos < self.data.len() {
                if self.data[self.pos] == 0xff && self.data.get(self.pos + 1).is_some_and(|&b| b != 0 && b != 0xff) {
                    break;
                }
                self.pos += 1;
            }
        }
        while self.data.get(self.pos) == Some(&0xff) && self.data.get(self.pos + 1) == Some(&0xff) {
            self.pos += 1;
        }
        if self.data.get(self.pos) == Some(&0xff)
            && self.data.get(self.pos + 1).is_some_and(|b| (0xd0..=0xd7).contains(b))
        {
            self.pos += 2;
            self.stopped = false;
        }
    }
}

/// T.81 K.3 table K.3: luminance DC code lengths.
pub(crate) const STD_DC_LUMA_BITS: [u8; 16] = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
/// T.81 K.3 table K.4: chrominance DC code lengths.
pub(crate) const STD_DC_CHROMA_BITS: [u8; 16] = [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0];
/// DC symbols of both standard DC tables: categories 0 to 11.
pub(crate) const STD_DC_VALS: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
/// T.81 K.3 table K.5: luminance AC code lengths.
pub(crate) const STD_AC_LUMA_BITS: [u8; 16] = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d];
/// T.81 K.3 table K.6: chrominance AC code lengths.
pub(crate) const STD_AC_CHROMA_BITS: [u8; 16] = [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77];
/// T.81 K.3 table K.5: luminance AC symbols (run << 4 | size).
pub(crate) const STD_AC_LUMA_VALS: [u8; 162] = [
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07, 0x22, 0x71, 0x14,
    0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0, 0x24, 0x33, 0x62, 0x72, 0x82, 0x09,
    0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a,
    0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65,
    0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88,
    0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9,
    0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca,
    0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea,
    0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa,
];
/// T.81 K.3 table K.6: chrominance AC symbols (run << 4 | size).
pub(crate) const STD_AC_CHROMA_VALS: [u8; 162] = [
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71, 0x13, 0x22, 0x32,
    0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0, 0x15, 0x62, 0x72, 0xd1, 0x0a, 0x16,
    0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39,
    0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64,
    0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x82, 0x83, 0x84, 0x85, 0x86,
    0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
    0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8,
    0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9,
    0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_tables_decode_their_first_codes() {
        // Luminance DC: category 0 is "00".
        let dc = HuffmanTable::standard(false, true);
        let data = [0b0000_0000, 0x00];
        let mut bits = BitReader::new(&data, 0);
        assert_eq!(dc.decode(&mut bits), 0);
        // Luminance AC: EOB is "1010".
        let ac = HuffmanTable::standard(false, false);
        let data = [0b1010_0000];
        let mut bits = BitReader::new(&data, 0);
        assert_eq!(ac.decode(&mut bits), 0x00);
    }

    #[test]
    fn tables_that_are_not_prefix_codes_are_refused() {
        // Three codes of length 1.
        let mut counts = [0u8; 16];
        counts[0] = 3;
        assert_eq!(HuffmanTable::new(&counts, &[0, 1, 2], false).err(), Some(JpegError::BadHuffmanTable));
        // A DC symbol over 15.
        counts[0] = 1;
        assert_eq!(HuffmanTable::new(&counts, &[16], true).err(), Some(JpegError::BadHuffmanTable));
        // Counts and symbols disagree.
        assert_eq!(HuffmanTable::new(&counts, &[1, 2], false).err(), Some(JpegError::BadHuffmanTable));
    }

    #[test]
    fn stuffed_bytes_markers_and_the_end_read_as_libjpeg_reads_them() {
        // 0xFF00 is one 0xFF byte; a marker and the end read as zeros.
        let data = [0xff, 0x00, 0xab, 0xff, 0xd9, 0x12];
        let mut bits = BitReader::new(&data, 0);
        assert_eq!(bits.take(8), 0xff);
        assert_eq!(bits.take(8), 0xab);
        assert_eq!(bits.take(16), 0);
        let mut bits = BitReader::new(&data[..1], 0);
        assert_eq!(bits.take(16), 0);
    }

    #[test]
    fn restart_moves_past_the_rst_marker() {
        let data = [0x80, 0xff, 0xd0, 0xc0];
        let mut bits = BitReader::new(&data, 0);
        assert_eq!(bits.take(1), 1);
        bits.restart();
        assert_eq!(bits.take(8), 0xc0);
    }

    #[test]
    fn a_code_longer_than_16_bits_gives_0() {
        // A table with one 2-bit code "00": all-ones input matches nothing.
        let mut counts = [0u8; 16];
        counts[1] = 1;
        let t = HuffmanTable::new(&counts, &[5], false).unwrap();
        let data = [0xff, 0x00, 0xff, 0x00, 0xff, 0x00];
        let mut bits = BitReader::new(&data, 0);
        assert_eq!(t.decode(&mut bits), 0);
    }
}

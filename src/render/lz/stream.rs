//! Pieces shared by the LZ and GLZ decoders: a bounds-checked input reader, the unit kinds a stream can
//! code, and an output cursor whose every write is checked.

use super::LzError;

/// Big-endian, bounds-checked reader over the compressed bytes.
pub(crate) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    /// Bytes consumed so far.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not consumed yet.
    pub(crate) fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    #[inline]
    pub(crate) fn u8(&mut self) -> Result<u8, LzError> {
        let byte = *self.data.get(self.pos).ok_or(LzError::Truncated { offset: self.pos })?;
        self.pos += 1;
        Ok(byte)
    }

    /// The next `len` bytes.
    #[inline]
    pub(crate) fn take(&mut self, len: usize) -> Result<&'a [u8], LzError> {
        let bytes = self
            .pos
            .checked_add(len)
            .and_then(|end| self.data.get(self.pos..end))
            .ok_or(LzError::Truncated { offset: self.data.len() })?;
        self.pos += len;
        Ok(bytes)
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], LzError> {
        let bytes = self
            .data
            .get(self.pos..)
            .and_then(|rest| rest.first_chunk::<N>())
            .ok_or(LzError::Truncated { offset: self.data.len() })?;
        self.pos += N;
        Ok(*bytes)
    }

    pub(crate) fn be_u32(&mut self) -> Result<u32, LzError> {
        self.array().map(u32::from_be_bytes)
    }

    pub(crate) fn be_u64(&mut self) -> Result<u64, LzError> {
        self.array().map(u64::from_be_bytes)
    }

    /// A match length: the 3-bit field from the control byte, extended by following bytes while they
    /// are 255 when the field is 7. Saturates instead of wrapping (the caller rejects it as an overrun).
    #[inline]
    pub(crate) fn match_len(&mut self, field: u32) -> Result<usize, LzError> {
        let mut len = field as usize;
        if field == 7 {
            loop {
                let more = self.u8()?;
                len = len.saturating_add(usize::from(more));
                if more != 255 {
                    break;
                }
            }
        }
        Ok(len)
    }
}

/// What one unit of a stream is: how a literal is read, how long the shortest match is, and how a unit
/// is stored into the output buffer.
pub(crate) trait Unit {
    /// Element type of the output buffer.
    type Px: Copy + Default;
    /// Added to the coded match length (the encoders never code matches shorter than this plus one).
    const LEN_BIAS: usize;
    /// Whether [`Unit::put`] replaces the whole element (allows bulk copies).
    const WHOLE: bool;
    /// Bytes a literal unit takes in the stream.
    const LITERAL_BYTES: usize;
    /// Converts the bytes of one literal unit (exactly [`Unit::LITERAL_BYTES`] of them).
    fn literal(bytes: &[u8]) -> Self::Px;
    /// Stores a unit (from a literal or a match source) into an output element.
    fn put(dst: &mut Self::Px, src: Self::Px);
}

/// One byte per unit: palette bytes (still packed), A8 alpha, and a stand-alone XXXA alpha stream.
pub(crate) struct ByteUnit;

impl Unit for ByteUnit {
    type Px = u8;
    const LEN_BIAS: usize = 2;
    const WHOLE: bool = true;
    const LITERAL_BYTES: usize = 1;
    #[inline]
    fn literal(bytes: &[u8]) -> u8 {
        bytes[0]
    }
    #[inline]
    fn put(dst: &mut u8, src: u8) {
        *dst = src;
    }
}

/// x1r5g5b5 pixels coded as two bytes (high first), widened to `0x00RRGGBB` as spice-common's
/// RGB16-to-RGB32 decoders do (each 5-bit channel `c` becomes `c << 3 | c >> 2`).
pub(crate) struct Rgb16Unit;

impl Unit for Rgb16Unit {
    type Px = u32;
    const LEN_BIAS: usize = 1;
    const WHOLE: bool = true;
    const LITERAL_BYTES: usize = 2;
    #[inline]
    fn literal(bytes: &[u8]) -> u32 {
        let word = u32::from(u16::from_be_bytes([bytes[0], bytes[1]]));
        let widen = |c: u32| (c << 3) | (c >> 2);
        let (r, g, b) = ((word >> 10) & 0x1f, (word >> 5) & 0x1f, word & 0x1f);
        (widen(r) << 16) | (widen(g) << 8) | widen(b)
    }
    #[inline]
    fn put(dst: &mut u32, src: u32) {
        *dst = src;
    }
}

/// RGB24 and RGB32 pixels, both coded as blue, green, red bytes; the top byte is left 0.
pub(crate) struct RgbUnit;

impl Unit for RgbUnit {
    type Px = u32;
    const LEN_BIAS: usize = 0;
    const WHOLE: bool = true;
    const LITERAL_BYTES: usize = 3;
    #[inline]
    fn literal(bytes: &[u8]) -> u32 {
        u32::from_be_bytes([0, bytes[2], bytes[1], bytes[0]])
    }
    #[inline]
    fn put(dst: &mut u32, src: u32) {
        *dst = src;
    }
}

/// The alpha pass over already decoded ARGB words: literals and matches touch only the top byte.
pub(crate) struct AlphaUnit;

impl Unit for AlphaUnit {
    type Px = u32;
    const LEN_BIAS: usize = 2;
    const WHOLE: bool = false;
    const LITERAL_BYTES: usize = 1;
    #[inline]
    fn literal(bytes: &[u8]) -> u32 {
        u32::from(bytes[0]) << 24
    }
    #[inline]
    fn put(dst: &mut u32, src: u32) {
        *dst = (*dst & 0x00ff_ffff) | (src & 0xff00_0000);
    }
}

/// Output cursor over a buffer of units; every operation is bounds-checked.
pub(crate) struct Output<'a, U: Unit> {
    buf: &'a mut [U::Px],
    pos: usize,
}

impl<'a, U: Unit> Output<'a, U> {
    pub(crate) fn new(buf: &'a mut [U::Px]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn is_full(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn reserve(&self, len: usize) -> Result<std::ops::Range<usize>, LzError> {
        match self.pos.checked_add(len) {
            Some(end) if end <= self.buf.len() => Ok(self.pos..end),
            _ => Err(LzError::Overrun { position: self.pos as u64, len: len as u64, size: self.buf.len() as u64 }),
        }
    }

    /// Decodes `count` literal units.
    #[inline]
    pub(crate) fn literals(&mut self, input: &mut Reader<'_>, count: usize) -> Result<(), LzError> {
        let range = self.reserve(count)?;
        let bytes = input.take(count * U::LITERAL_BYTES)?;
        for (dst, unit) in self.buf[range].iter_mut().zip(bytes.chunks_exact(U::LITERAL_BYTES)) {
            U::put(dst, U::literal(unit));
        }
        self.pos += count;
        Ok(())
    }

    /// Copies `len` units starting `distance` units back (forwards, so overlapping copies repeat a
    /// pattern and a distance of 1 is a run).
    #[inline]
    pub(crate) fn copy_back(&mut self, distance: usize, len: usize) -> Result<(), LzError> {
        if distance == 0 || distance > self.pos {
            return Err(LzError::BadReference { distance: distance as u64, position: self.pos as u64 });
        }
        let range = self.reserve(len)?;
        let src = self.pos - distance;
        if U::WHOLE && distance >= len {
            self.buf.copy_within(src..src + len, range.start);
        } else if distance == 1 {
            let value = self.buf[src];
            for dst in &mut self.buf[range] {
                U::put(dst, value);
            }
        } else {
            for i in range {
                let value = self.buf[i - distance];
                U::put(&mut self.buf[i], value);
            }
        }
        self.pos += len;
        Ok(())
    }

    /// Copies `src` (units of another image) to the output.
    pub(crate) fn copy_from(&mut self, src: &[U::Px]) -> Result<(), LzError> {
        let range = self.reserve(src.len())?;
        if U::WHOLE {
            self.buf[range].copy_from_slice(src);
        } else {
            for (dst, &value) in self.buf[range].iter_mut().zip(src) {
                U::put(dst, value);
            }
        }
        self.pos += src.len();
        Ok(())
    }

    /// Checks that `len` more units fit (for errors reported before looking up a match source).
    pub(crate) fn check_room(&self, len: usize) -> Result<(), LzError> {
        self.reserve(len).map(|_| ())
    }
}

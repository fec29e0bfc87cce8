//! A little-endian cursor over a byte slice, shared by every sans-IO parser.
//!
//! SPICE puts every integer on the wire in little-endian order
//! (spice-protocol `spice/protocol.h`, packed structs). The cursor never
//! panics: reading past the end is a [`WireError`].

use thiserror::Error;

/// A read past the end of the input.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("short input: need {need} bytes, have {have}")]
pub struct WireError {
    /// Bytes the read needed.
    pub need: usize,
    /// Bytes that were left.
    pub have: usize,
}

/// A cursor over `&[u8]` reading little-endian integers.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Takes the next `len` bytes.
    ///
    /// # Errors
    /// [`WireError`] when fewer than `len` bytes remain.
    pub fn take(&mut self, len: usize) -> Result<&'a [u8], WireError> {
        let have = self.remaining();
        if len > have {
            return Err(WireError { need: len, have });
        }
        let out = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(out)
    }

    /// Reads one byte.
    ///
    /// # Errors
    /// [`WireError`] at the end of input.
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    /// Reads a little-endian `u16`.
    ///
    /// # Errors
    /// [`WireError`] when fewer than 2 bytes remain.
    pub fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    /// Reads a little-endian `u32`.
    ///
    /// # Errors
    /// [`WireError`] when fewer than 4 bytes remain.
    pub fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Reads a little-endian `i32`.
    ///
    /// # Errors
    /// [`WireError`] when fewer than 4 bytes remain.
    pub fn i32(&mut self) -> Result<i32, WireError> {
        self.u32().map(|v| v as i32)
    }

    /// Reads a little-endian `u64`.
    ///
    /// # Errors
    /// [`WireError`] when fewer than 8 bytes remain.
    pub fn u64(&mut self) -> Result<u64, WireError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_in_order() {
        let mut r = Reader::new(&[1, 0x34, 0x12, 0x78, 0x56, 0x34, 0x12, 9, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(r.u8(), Ok(1));
        assert_eq!(r.u16(), Ok(0x1234));
        assert_eq!(r.u32(), Ok(0x1234_5678));
        assert_eq!(r.u64(), Ok(9));
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn short_read_is_an_error_and_consumes_nothing() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u32(), Err(WireError { need: 4, have: 3 }));
        assert_eq!(r.position(), 0);
        assert_eq!(r.take(3).map(<[u8]>::len), Ok(3));
    }
}

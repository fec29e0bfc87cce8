//! The QUIC bit reader: an MSB-first bit stream packed into little-endian 32-bit words.
//!
//! The encoder (spice-common `quic.c`, `encode`/`flush`) fills each 32-bit word from its most
//! significant bit down and stores the word little-endian. The decoder looks at the next 32 bits
//! of the stream at a time ([`BitReader::peek`]) and then says how many of them it used
//! ([`BitReader::consume`]).
//!
//! spice-common keeps the 32-bit look-ahead full at all times: it loads the following word as soon
//! as a consumed bit leaves fewer than 32 bits buffered, and fails if there is none. This reader
//! loads words at exactly the same moments, so a stream is accepted or rejected as truncated in the
//! same place as in spice-gtk. A well-formed stream always ends with one whole zero word of padding
//! (the encoder's flush) that makes the last look-ahead possible.

use super::QuicError;

/// Reads bits, most significant first, from little-endian 32-bit words.
#[derive(Debug, Clone)]
pub(super) struct BitReader<'a> {
    /// The input; only whole words are used (a trailing partial word is ignored, like spice-gtk's
    /// `len >> 2`).
    data: &'a [u8],
    /// Index of the next word to load.
    next_word: usize,
    /// Number of whole words in `data`.
    total_words: usize,
    /// Buffered bits, left-aligned: the next bit of the stream is bit 63.
    window: u64,
    /// How many bits of `window` are valid; at least 32 between calls.
    buffered: u32,
}

impl<'a> BitReader<'a> {
    /// Starts reading at word `first_word` (a word is 4 bytes) and fills the 32-bit look-ahead.
    ///
    /// # Errors
    /// [`QuicError::Truncated`] if `data` has no word at `first_word`.
    pub(super) fn new(data: &'a [u8], first_word: usize) -> Result<Self, QuicError> {
        let mut reader = BitReader { data, next_word: first_word, total_words: data.len() / 4, window: 0, buffered: 0 };
        reader.load_word()?;
        Ok(reader)
    }

    /// The next 32 bits of the stream, the first of them in bit 31.
    #[inline(always)]
    pub(super) fn peek(&self) -> u32 {
        (self.window >> 32) as u32
    }

    /// Drops the first `n` bits (1 to 32) of the look-ahead and refills it.
    ///
    /// # Errors
    /// [`QuicError::Truncated`] if the stream has no word left for the refill.
    #[inline(always)]
    pub(super) fn consume(&mut self, n: u32) -> Result<(), QuicError> {
        debug_assert!((1..=32).contains(&n) && n <= self.buffered);
        self.window <<= n;
        self.buffered -= n;
        if self.buffered < 32 { self.load_word() } else { Ok(()) }
    }

    /// Appends the next input word below the buffered bits.
    #[inline(always)]
    fn load_word(&mut self) -> Result<(), QuicError> {
        let start = self.next_word * 4;
        let bytes = self.data.get(start..start + 4).ok_or(QuicError::Truncated { words: self.total_words })?;
        let word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        self.window |= u64::from(word) << (32 - self.buffered);
        self.buffered += 32;
        self.next_word += 1;
        Ok(())
    }
}

//! QUIC, SPICE's lossless image codec: a decoder producing the pixels spice-gtk draws.
//!
//! QUIC is Red Hat's variant of SFALIC (Roman Starosolski's "simple fast and adaptive lossless
//! image compression"). The reference is spice-common: `common/quic.c`, `common/quic_tmpl.c` and
//! `common/quic_family_tmpl.c`; spice-gtk decodes through spice-common's canvas
//! (`common/canvas_base.c`, `canvas_get_quic`). This is an independent implementation of that
//! format, checked pixel for pixel against spice-gtk's rendering of real QEMU sessions.
//!
//! # Wire layout
//!
//! A `SpiceImage` of type QUIC carries `data_size: u32` and then this stream. Everything is a
//! sequence of little-endian 32-bit words; the bit stream after the header is read from each
//! word's most significant bit down.
//!
//! ```text
//! word 0   magic    0x43495551 ("QUIC" as bytes)
//! word 1   version  0 (major 0 << 16 | minor 0)
//! word 2   type     1 GRAY, 2 RGB16, 3 RGB24, 4 RGB32, 5 RGBA
//! word 3   width    pixels
//! word 4   height   pixels
//! word 5.. bit stream, rows top to bottom; per row:
//!            GRAY        the gray plane
//!            RGB16/24/32 R, G, B interleaved pixel by pixel (5 bits per channel for RGB16)
//!            RGBA        R, G, B interleaved as above, then the alpha plane of the same row
//!          then zero bits up to a word boundary and one whole zero word
//! ```
//!
//! Each channel value is coded as a prediction residual with an adaptive Golomb code (see
//! `decode.rs`); flat areas are run-length coded. R, G and B share one adaptation schedule;
//! GRAY and alpha each have their own.
//!
//! # Output
//!
//! [`decode()`] returns `0xAARRGGBB` pixels as spice-gtk's canvas holds them (pixman a8r8g8b8 /
//! x8r8g8b8 in native byte order):
//!
//! - RGB24 and RGB32 decode to `0x00RRGGBB`: spice-common writes a 0 pad byte into its 32-bit
//!   destination (`PIXMAN_LE_x8r8g8b8`, whose top byte pixman ignores). The canvas ORs
//!   `0xff000000` in later only if the image descriptor has `SPICE_IMAGE_FLAGS_HIGH_BITS_SET`;
//!   that is the renderer's business, not the codec's.
//! - RGB16 decodes to `0x00RRGGBB` with each 5-bit channel `v` widened to `v << 3 | v >> 2`, the
//!   expansion spice-common uses when spice-gtk asks for a 32-bit result, as it does on a 32-bit
//!   canvas. (An image to be cached is decoded as x1r5g5b5 instead, and pixman widens it later
//!   with the same bit replication.)
//! - RGBA decodes to `0xAARRGGBB` with the coded alpha (`PIXMAN_LE_a8r8g8b8`, not premultiplied
//!   by the codec).
//! - GRAY decodes to `0x00GGGGGG`. spice-gtk refuses GRAY QUIC images (`canvas_get_quic` returns
//!   no image), so a renderer mirroring spice-gtk should not draw them; the pixels are offered for
//!   inspection only.
//!
//! Like spice-gtk, the decoder ignores bytes past the last whole 32-bit word and any words after
//! the image, and decodes a corrupt but complete stream into whatever pixels it encodes (QUIC has
//! no checksum): only a stream that ends early, or a run longer than the rest of its row segment,
//! is an error, exactly where spice-common's decoder fails.

mod bits;
mod decode;
mod model;
#[cfg(test)]
mod tests;

use bits::BitReader;
use decode::PlaneGroup;
use model::{FAMILY_5, FAMILY_8};
use thiserror::Error;

/// `"QUIC"` read as a little-endian word.
pub const QUIC_MAGIC: u32 = 0x4349_5551;

/// The only stream version there is (major 0, minor 0).
pub const QUIC_VERSION: u32 = 0;

/// Largest width or height accepted, in pixels.
pub const MAX_DIMENSION: u32 = 16384;

/// Largest `width * height` accepted, in pixels (64 Mi).
pub const MAX_PIXELS: u64 = 64 * 1024 * 1024;

/// Words in the stream header.
const HEADER_WORDS: usize = 5;

/// The image type in a QUIC header (spice-common `QuicImageType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuicType {
    /// One 8-bit gray channel (1).
    Gray,
    /// 5 bits each of R, G and B (2).
    Rgb16,
    /// 8 bits each of R, G and B, from a packed 24-bit bitmap (3).
    Rgb24,
    /// 8 bits each of R, G and B, from a 32-bit bitmap whose fourth byte is not coded (4).
    Rgb32,
    /// 8 bits each of R, G, B and alpha (5).
    Rgba,
}

impl QuicType {
    /// The type for a header's type word, if it names one.
    pub fn from_wire(value: u32) -> Option<QuicType> {
        match value {
            1 => Some(QuicType::Gray),
            2 => Some(QuicType::Rgb16),
            3 => Some(QuicType::Rgb24),
            4 => Some(QuicType::Rgb32),
            5 => Some(QuicType::Rgba),
            _ => None,
        }
    }

    /// The header's type word for this type.
    pub fn to_wire(self) -> u32 {
        match self {
            QuicType::Gray => 1,
            QuicType::Rgb16 => 2,
            QuicType::Rgb24 => 3,
            QuicType::Rgb32 => 4,
            QuicType::Rgba => 5,
        }
    }

    /// Whether the decoded pixels carry a real alpha channel (only [`QuicType::Rgba`]).
    pub fn has_alpha(self) -> bool {
        self == QuicType::Rgba
    }

    /// Number of coded channels (1, 3 or 4).
    pub fn channels(self) -> u32 {
        match self {
            QuicType::Gray => 1,
            QuicType::Rgb16 | QuicType::Rgb24 | QuicType::Rgb32 => 3,
            QuicType::Rgba => 4,
        }
    }
}

/// A decoded QUIC image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuicImage {
    /// The type the stream was coded as.
    pub kind: QuicType,
    /// Width in pixels (1 to [`MAX_DIMENSION`]).
    pub width: u32,
    /// Height in pixels (1 to [`MAX_DIMENSION`]).
    pub height: u32,
    /// `width * height` pixels, rows top-down, each `0xAARRGGBB`; the top byte is the alpha for
    /// RGBA and 0 for every other type (see the module docs for why).
    pub pixels: Vec<u32>,
}

/// Why a QUIC stream could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum QuicError {
    /// The first word is not `"QUIC"`.
    #[error("not a QUIC image (magic {0:#010x})")]
    BadMagic(u32),
    /// The version word is not 0.
    #[error("unsupported QUIC version {0:#x}")]
    UnsupportedVersion(u32),
    /// The type word names no QUIC image type.
    #[error("unknown QUIC image type {0}")]
    BadType(u32),
    /// Width or height is 0.
    #[error("empty QUIC image ({width}x{height})")]
    Empty {
        /// Width from the header, in pixels.
        width: u32,
        /// Height from the header, in pixels.
        height: u32,
    },
    /// Width or height exceeds [`MAX_DIMENSION`], or their product [`MAX_PIXELS`].
    #[error("QUIC image too large ({width}x{height})")]
    TooLarge {
        /// Width from the header, in pixels.
        width: u32,
        /// Height from the header, in pixels.
        height: u32,
    },
    /// The stream ended before the image was complete.
    #[error("QUIC stream truncated: {words} words are not enough")]
    Truncated {
        /// Whole 32-bit words in the input, header included.
        words: usize,
    },
    /// The stream codes something impossible.
    #[error("corrupt QUIC stream in row {row}: {reason}")]
    Corrupt {
        /// Row (from 0, top) being decoded.
        row: u32,
        /// What was wrong.
        reason: &'static str,
    },
}

/// The parsed stream header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuicHeader {
    /// Image type.
    pub kind: QuicType,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// Reads and checks the 20-byte header of a QUIC stream (without decoding anything else).
///
/// # Errors
/// [`QuicError::Truncated`] for less than 5 words, [`QuicError::BadMagic`],
/// [`QuicError::UnsupportedVersion`], [`QuicError::BadType`], [`QuicError::Empty`] for a zero
/// dimension, [`QuicError::TooLarge`] past [`MAX_DIMENSION`] or [`MAX_PIXELS`].
pub fn parse_header(data: &[u8]) -> Result<QuicHeader, QuicError> {
    let word = |i: usize| -> Result<u32, QuicError> {
        data.get(i * 4..i * 4 + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or(QuicError::Truncated { words: data.len() / 4 })
    };
    let magic = word(0)?;
    if magic != QUIC_MAGIC {
        return Err(QuicError::BadMagic(magic));
    }
    let version = word(1)?;
    if version != QUIC_VERSION {
        return Err(QuicError::UnsupportedVersion(version));
    }
    let type_word = word(2)?;
    let kind = QuicType::from_wire(type_word).ok_or(QuicError::BadType(type_word))?;
    let (width, height) = (word(3)?, word(4)?);
    if width == 0 || height == 0 {
        return Err(QuicError::Empty { width, height });
    }
    if width > MAX_DIMENSION || height > MAX_DIMENSION || u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(QuicError::TooLarge { width, height });
    }
    Ok(QuicHeader { kind, width, height })
}

/// Decodes a QUIC stream (the bytes after a QUIC `SpiceImage`'s `data_size`).
///
/// Memory use is bounded by the image size: the pixel buffer grows with the rows actually decoded
/// and never past `width * height` pixels.
///
/// # Errors
/// Any [`parse_header`] error; [`QuicError::Truncated`] if the stream ends before the last row;
/// [`QuicError::Corrupt`] if a run passes the end of its row segment.
pub fn decode(data: &[u8]) -> Result<QuicImage, QuicError> {
    let header = parse_header(data)?;
    let mut reader = BitReader::new(data, HEADER_WORDS)?;
    let width = header.width as usize;
    let total = width * header.height as usize;
    let mut pixels = Vec::new();
    let grow = |pixels: &mut Vec<u32>| {
        if pixels.capacity() - pixels.len() < width {
            let more = pixels.len().max(width * 16).min(total - pixels.len());
            pixels.reserve_exact(more);
        }
    };
    match header.kind {
        QuicType::Gray => {
            let mut gray = PlaneGroup::<1>::new(&FAMILY_8, width);
            for _ in 0..header.height {
                gray.decode_row(&mut reader)?;
                grow(&mut pixels);
                pixels.extend(gray.row(0).iter().map(|&v| u32::from_be_bytes([0, v, v, v])));
            }
        }
        QuicType::Rgb16 => {
            let widen = |v: u8| (v << 3) | (v >> 2);
            let mut rgb = PlaneGroup::<3>::new(&FAMILY_5, width);
            for _ in 0..header.height {
                rgb.decode_row(&mut reader)?;
                grow(&mut pixels);
                let rows = (rgb.row(0), rgb.row(1), rgb.row(2));
                pixels.extend(
                    (0..width).map(|i| u32::from_be_bytes([0, widen(rows.0[i]), widen(rows.1[i]), widen(rows.2[i])])),
                );
            }
        }
        QuicType::Rgb24 | QuicType::Rgb32 => {
            let mut rgb = PlaneGroup::<3>::new(&FAMILY_8, width);
            for _ in 0..header.height {
                rgb.decode_row(&mut reader)?;
                grow(&mut pixels);
                let rows = (rgb.row(0), rgb.row(1), rgb.row(2));
                pixels.extend((0..width).map(|i| u32::from_be_bytes([0, rows.0[i], rows.1[i], rows.2[i]])));
            }
        }
        QuicType::Rgba => {
            let mut rgb = PlaneGroup::<3>::new(&FAMILY_8, width);
            let mut alpha = PlaneGroup::<1>::new(&FAMILY_8, width);
            for _ in 0..header.height {
                rgb.decode_row(&mut reader)?;
                alpha.decode_row(&mut reader)?;
                grow(&mut pixels);
                let rows = (rgb.row(0), rgb.row(1), rgb.row(2), alpha.row(0));
                pixels.extend((0..width).map(|i| u32::from_be_bytes([rows.3[i], rows.0[i], rows.1[i], rows.2[i]])));
            }
        }
    }
    Ok(QuicImage { kind: header.kind, width: header.width, height: header.height, pixels })
}

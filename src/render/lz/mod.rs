//! Decoders for SPICE's LZ and GLZ image codecs, producing what spice-gtk's software canvas holds.
//!
//! These decoders exist so a shadow renderer can rebuild a recorded display exactly as spice-gtk does.
//! They are written from the format as read in these sources (no code or comments were copied):
//!
//! * spice-common `common/lz_common.h` (image types, magic `0x20205a4c`, version 1.1),
//!   `common/lz.c` (`lz_decode_begin`, `lz_decode`, `lz_set_sizes`) and `common/lz_decompress_tmpl.c`
//!   (the LZ77 stream): the LZ format, used by `SPICE_IMAGE_TYPE_LZ_RGB` (101), `LZ_PLT` (100) and the
//!   alpha stream of `JPEG_ALPHA`;
//! * spice-common `common/canvas_base.c` (`canvas_get_lz`) and `common/canvas_utils.c`
//!   (`alloc_lz_image_surface`): how the decoded pixels land in a pixman surface (bottom-up streams via a
//!   negative stride, palette rows padded to the encoded stride);
//! * spice-gtk `src/decode-glz.c` and `src/decode-glz-tmpl.c`: the GLZ decoder and its image window,
//!   used by `SPICE_IMAGE_TYPE_GLZ_RGB` (102) (and, after zlib inflation, `ZLIB_GLZ_RGB` (107));
//! * spice server `server/glz-encoder.c` and `server/glz-encoder-dict.c`: the GLZ header and how the
//!   server chooses `win_head_dist` (the window the server may still reference).
//!
//! # The LZ stream
//!
//! After the header (see [`decode_lz`] and [`glz`]) the stream is a sequence of operations on a
//! buffer of *units* (one palette byte, one alpha byte, or one pixel, depending on the image type).
//! A control byte below 32 starts a run of `ctrl + 1` literal units; otherwise its top 3 bits give a
//! match length (7 meaning "add following bytes while they are 255") and the rest starts a distance.
//! Matches copy units forwards from earlier in the same buffer (overlap allowed, so a distance of 1 is a
//! run); GLZ matches may instead copy from an earlier image of the session-wide window. Decoding stops
//! exactly when the buffer is full.
//!
//! # Output
//!
//! [`LzImage::pixels`] always holds rows **top-down**, `width` units per row, whatever the stream's
//! `top_down` flag (a bottom-up stream, `top_down == false`, stores its last visible row first; spice-gtk
//! handles that with a negative pixman stride, we reverse the rows). The flag is kept in
//! [`LzImage::top_down`] for information.
//!
//! # Safety of decoding
//!
//! Sizes are validated before any allocation (width and height 1..=[`MAX_DIMENSION`], at most
//! [`MAX_PIXELS`] pixels, checked arithmetic), every read of the input and every copy is bounds-checked,
//! each loop iteration consumes input or fills output, so hostile data yields an error, never a panic, a
//! hang, or an allocation beyond the declared image (for GLZ, plus the copy kept in the bounded window).
//! The magic is the four bytes `"  ZL"` on the wire (spice-common's comment calls it "LZ  ", the
//! constant's bytes read little-endian).

pub mod glz;
mod lz_image;
mod stream;
#[cfg(test)]
mod tests;

pub use glz::{GlzDictionary, GlzError, GlzHeader};
pub use lz_image::decode_lz;

/// Largest accepted width or height, in pixels.
pub const MAX_DIMENSION: u32 = 16384;
/// Largest accepted `width * height` (64 Mi pixels).
pub const MAX_PIXELS: u64 = 64 * 1024 * 1024;

/// `"  ZL"`: the magic both LZ and GLZ images start with, as a big-endian u32 (`LZ_MAGIC` in spice-common).
pub const LZ_MAGIC: u32 = 0x2020_5a4c;
/// Version 1.1 (major in the high 16 bits), the only one spice-common and spice-gtk accept.
pub const LZ_VERSION: u32 = 0x0001_0001;

/// The image types of the LZ family (`LzImageType` in spice-common `lz_common.h`; the numbers are the
/// wire codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LzType {
    /// 1 bit per pixel palette indices, least significant bit first.
    Plt1Le = 1,
    /// 1 bit per pixel palette indices, most significant bit first.
    Plt1Be = 2,
    /// 4 bits per pixel palette indices, low nibble first.
    Plt4Le = 3,
    /// 4 bits per pixel palette indices, high nibble first.
    Plt4Be = 4,
    /// 8 bits per pixel palette indices.
    Plt8 = 5,
    /// 15-bit RGB (x1r5g5b5), sent as big-endian 16-bit units.
    Rgb16 = 6,
    /// 24-bit RGB (blue, green, red bytes).
    Rgb24 = 7,
    /// 32-bit xRGB; the stream carries only blue, green and red.
    Rgb32 = 8,
    /// 32-bit ARGB: an RGB32 pass followed by an alpha pass in the same stream.
    Rgba = 9,
    /// Only the alpha channel of a 32-bit image (the alpha of `JPEG_ALPHA` images).
    Xxxa = 10,
    /// 8-bit alpha.
    A8 = 11,
}

impl LzType {
    /// The type for a wire code, if it is one of the eleven defined ones.
    pub fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            1 => Self::Plt1Le,
            2 => Self::Plt1Be,
            3 => Self::Plt4Le,
            4 => Self::Plt4Be,
            5 => Self::Plt8,
            6 => Self::Rgb16,
            7 => Self::Rgb24,
            8 => Self::Rgb32,
            9 => Self::Rgba,
            10 => Self::Xxxa,
            11 => Self::A8,
            _ => return None,
        })
    }

    /// The wire code.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// Whether pixels are palette indices.
    pub fn is_palette(self) -> bool {
        self.palette_pixels_per_byte().is_some()
    }

    /// For palette types, how many pixels one stream byte carries.
    pub(crate) fn palette_pixels_per_byte(self) -> Option<u32> {
        match self {
            Self::Plt1Le | Self::Plt1Be => Some(8),
            Self::Plt4Le | Self::Plt4Be => Some(2),
            Self::Plt8 => Some(1),
            _ => None,
        }
    }

    /// Bytes per pixel of the *source* bitmap for non-palette types (what the header stride must match).
    pub(crate) fn rgb_bytes_per_pixel(self) -> u32 {
        match self {
            Self::Rgb16 => 2,
            Self::Rgb24 => 3,
            Self::Rgb32 | Self::Rgba | Self::Xxxa => 4,
            _ => 1,
        }
    }
}

/// The decoded units of an [`LzImage`], `width * height` of them, rows top-down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LzPixels {
    /// RGB16, RGB24, RGB32 and RGBA images: `0xAARRGGBB` words, i.e. pixman `a8r8g8b8`/`x8r8g8b8` as
    /// spice-gtk's canvas stores them. Only [`LzType::Rgba`] carries a meaningful alpha
    /// ([`LzImage::has_alpha`]); for the others the top byte is whatever the canvas memory holds
    /// (0 from LZ, which writes 0 there; a GLZ copy from an RGBA image may carry that image's alpha) and
    /// must be treated as opaque. RGB16 is widened as spice-common does (`c5 << 3 | c5 >> 2`), which is
    /// what the canvas holds on 32-bit surfaces; narrowing back to x1r5g5b5 is lossless.
    Argb(Vec<u32>),
    /// Palette images: one palette index per pixel, unpacked from 1/4/8 bits in spice-common's bit and
    /// nibble order, padding pixels of each encoded row dropped. Apply the `SpiceImage`'s palette with
    /// [`LzImage::to_argb`].
    PaletteIndices(Vec<u8>),
    /// XXXA and A8 images: one alpha value per pixel.
    Alpha(Vec<u8>),
}

/// A decoded LZ or GLZ image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LzImage {
    /// The image type from the header.
    pub lz_type: LzType,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The stream's `top_down` flag. Informational: [`LzImage::pixels`] is top-down either way.
    pub top_down: bool,
    /// The pixels.
    pub pixels: LzPixels,
}

impl LzImage {
    /// Whether the top byte of [`LzPixels::Argb`] words is a real alpha channel (RGBA images only).
    pub fn has_alpha(&self) -> bool {
        self.lz_type == LzType::Rgba
    }

    /// The image as `0xAARRGGBB` words as spice-gtk's canvas would hold it. `palette` (the `SpiceImage`'s
    /// palette entries, `0x00RRGGBB`) is used for palette images only and is looked up as spice-common's
    /// palette-to-RGB32 decoders do: 1-bit images use entries 0 and 1, 4-bit images take the index modulo
    /// the number of entries, 8-bit images index directly; the top byte is cleared (`x8r8g8b8`). Where
    /// spice-common would read outside the palette (a short palette for 1 or 8 bits, an empty one for 4
    /// bits) this yields 0. Alpha-only images give `alpha << 24`.
    pub fn to_argb(&self, palette: &[u32]) -> Vec<u32> {
        match &self.pixels {
            LzPixels::Argb(px) => px.clone(),
            LzPixels::Alpha(a) => a.iter().map(|&a| u32::from(a) << 24).collect(),
            LzPixels::PaletteIndices(idx) => {
                let modulo = self.lz_type == LzType::Plt4Le || self.lz_type == LzType::Plt4Be;
                idx.iter()
                    .map(|&i| {
                        let i = usize::from(i);
                        let i = if modulo && !palette.is_empty() { i % palette.len() } else { i };
                        palette.get(i).map_or(0, |&c| c & 0x00ff_ffff)
                    })
                    .collect()
            }
        }
    }
}

/// Why an LZ image (or the LZ-family part of a GLZ image) could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LzError {
    /// The first word is not [`LZ_MAGIC`].
    #[error("bad LZ magic {found:#010x} (expected {LZ_MAGIC:#010x})")]
    BadMagic {
        /// The word found.
        found: u32,
    },
    /// The version is not [`LZ_VERSION`].
    #[error("unsupported LZ version {found:#010x} (expected {LZ_VERSION:#010x})")]
    BadVersion {
        /// The version found.
        found: u32,
    },
    /// The image type code is not one of the defined [`LzType`]s.
    #[error("invalid LZ image type {found}")]
    BadType {
        /// The code found.
        found: u32,
    },
    /// Width or height is zero.
    #[error("empty LZ image {width}x{height}")]
    EmptyImage {
        /// Width from the header.
        width: u32,
        /// Height from the header.
        height: u32,
    },
    /// Width or height above [`MAX_DIMENSION`] or more than [`MAX_PIXELS`] pixels.
    #[error("LZ image {width}x{height} too large")]
    TooLarge {
        /// Width from the header.
        width: u32,
        /// Height from the header.
        height: u32,
    },
    /// The stride does not fit the width (RGB types: must be `width * bytes per pixel`; palette types:
    /// the packed row length rounded up to a whole byte).
    #[error("bad LZ stride {stride} for {width} pixels of type {lz_type:?}")]
    BadStride {
        /// Stride from the header.
        stride: u32,
        /// Width from the header.
        width: u32,
        /// Image type.
        lz_type: LzType,
    },
    /// The input ended before the image was complete.
    #[error("LZ data truncated at byte {offset}")]
    Truncated {
        /// Input offset at which another byte was needed.
        offset: usize,
    },
    /// A back-reference points before the start of the image.
    #[error("LZ back-reference distance {distance} at unit {position} points before the image start")]
    BadReference {
        /// The decoded distance, in units.
        distance: u64,
        /// Units already decoded.
        position: u64,
    },
    /// A literal run or a match would write past the end of the image.
    #[error("LZ run of {len} units at unit {position} overruns the image of {size} units")]
    Overrun {
        /// Units already decoded.
        position: u64,
        /// Length of the run.
        len: u64,
        /// Units in the image.
        size: u64,
    },
    /// Bytes remain after the image is complete (spice-common asserts the stream ends there).
    #[error("{extra} trailing bytes after the LZ image")]
    TrailingData {
        /// How many bytes remain.
        extra: usize,
    },
}

/// Validates dimensions as both decoders do and returns `width * height`.
pub(crate) fn checked_pixels(width: u32, height: u32) -> Result<usize, LzError> {
    if width == 0 || height == 0 {
        return Err(LzError::EmptyImage { width, height });
    }
    let pixels = u64::from(width) * u64::from(height);
    if width > MAX_DIMENSION || height > MAX_DIMENSION || pixels > MAX_PIXELS {
        return Err(LzError::TooLarge { width, height });
    }
    usize::try_from(pixels).map_err(|_| LzError::TooLarge { width, height })
}

/// Reverses the order of rows of `row_len` items in place (bottom-up stream to top-down output).
pub(crate) fn flip_rows<T>(buf: &mut [T], row_len: usize) {
    if row_len == 0 {
        return;
    }
    let rows = buf.len() / row_len;
    for top in 0..rows / 2 {
        let bottom = rows - 1 - top;
        let (head, tail) = buf.split_at_mut(bottom * row_len);
        head[top * row_len..(top + 1) * row_len].swap_with_slice(&mut tail[..row_len]);
    }
}

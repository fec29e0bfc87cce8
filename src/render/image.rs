//! `SpiceImage`: the descriptor, the per-type payload, and decoding to
//! pixels with the session's image and palette caches.
//!
//! ```text
//! SpiceImageDescriptor  id u64, type u8, flags u8, width u32, height u32
//! BITMAP                format u8, flags u8, x u32, y u32, stride u32,
//!                       palette (flags & PAL_FROM_CACHE ? id u64 : Palette* u32),
//!                       data[stride * y]
//! QUIC/LZ_RGB/GLZ_RGB/JPEG/LZ4  data_size u32, data
//! LZ_PLT                flags u8, data_size u32, palette (id u64 | Palette* u32), data
//! ZLIB_GLZ_RGB          glz_data_size u32, data_size u32, data (zlib of a GLZ image)
//! JPEG_ALPHA            flags u8, jpeg_size u32, data_size u32, data
//! SURFACE               surface_id u32
//! Palette               unique u64, num_ents u16, ents u32[num_ents]
//! ```
//!
//! (spice-common `spice.proto` `Image`, `BitmapData`; decoding as
//! spice-common `canvas_base.c` `canvas_get_image_internal`,
//! `canvas_get_bits`: caching on `CACHE_ME`, `0xff000000` ORed in on
//! `HIGH_BITS_SET`.)

use std::collections::HashMap;
use std::sync::Arc;

use thiserror::Error;

use crate::limits::{MAX_SURFACE_PIXELS, MAX_SURFACE_SIDE};
use crate::wire::{Reader, WireError};

/// `SPICE_IMAGE_TYPE_*`.
#[allow(missing_docs)]
pub mod image_type {
    pub const BITMAP: u8 = 0;
    pub const QUIC: u8 = 1;
    pub const LZ_PLT: u8 = 100;
    pub const LZ_RGB: u8 = 101;
    pub const GLZ_RGB: u8 = 102;
    pub const FROM_CACHE: u8 = 103;
    pub const SURFACE: u8 = 104;
    pub const JPEG: u8 = 105;
    pub const FROM_CACHE_LOSSLESS: u8 = 106;
    pub const ZLIB_GLZ_RGB: u8 = 107;
    pub const JPEG_ALPHA: u8 = 108;
    pub const LZ4: u8 = 109;
}

/// `SPICE_IMAGE_FLAGS_CACHE_ME`.
pub const CACHE_ME: u8 = 1;
/// `SPICE_IMAGE_FLAGS_HIGH_BITS_SET`.
pub const HIGH_BITS_SET: u8 = 2;
/// `SPICE_IMAGE_FLAGS_CACHE_REPLACE_ME`.
pub const CACHE_REPLACE_ME: u8 = 4;

const PAL_CACHE_ME: u8 = 1;
const PAL_FROM_CACHE: u8 = 2;
const TOP_DOWN: u8 = 4;

/// Most images kept in the image cache, in pixels (1 GiB of 32-bit pixels).
const MAX_CACHED_PIXELS: u64 = 256 * 1024 * 1024;

/// Why an image could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The message or image ended early.
    #[error(transparent)]
    Short(#[from] WireError),
    /// A pointer outside the message body.
    #[error("image offset {0} outside the message")]
    BadOffset(u32),
    /// Zero or too large dimensions.
    #[error("image size {width}x{height} out of bounds")]
    BadSize {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    },
    /// A type or format not (yet) decoded.
    #[error("unsupported image: {0}")]
    Unsupported(String),
    /// FROM_CACHE of an id not in the cache (or only lossy for LOSSLESS).
    #[error("image {0:#x} not in the cache")]
    MissingCache(u64),
    /// PAL_FROM_CACHE of an unknown palette.
    #[error("palette {0:#x} not in the cache")]
    MissingPalette(u64),
    /// SURFACE of an unknown surface.
    #[error("surface {0} does not exist")]
    MissingSurface(u32),
    /// The codec refused the data.
    #[error("{codec}: {error}")]
    Codec {
        /// Which codec.
        codec: &'static str,
        /// Its error.
        error: String,
    },
    /// The image cache holds more than its bound.
    #[error("image cache over {MAX_CACHED_PIXELS} pixels")]
    CacheFull,
}

/// Which byte of decoded pixels pixman reads as alpha: what the image's
/// own format gives it (spice-common `pixman_utils.c`
/// `spice_bitmap_format_to_pixman`, `canvas_base.c` `canvas_get_quic`,
/// `canvas_get_lz`: RGBA sources stay `a8r8g8b8`, `8BIT_A` and alpha-only
/// LZ stay `a8`, everything else is `x8r8g8b8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Alpha {
    /// No alpha channel (`x8r8g8b8`): read as opaque whatever the top byte
    /// holds (0 as decoded, 0xff under `HIGH_BITS_SET`).
    #[default]
    None,
    /// Premultiplied alpha in the top byte (`a8r8g8b8`): RGBA bitmaps,
    /// QUIC/LZ/GLZ/LZ4 RGBA, `JPEG_ALPHA`, 32_ARGB surfaces.
    Premultiplied,
    /// Only alpha, in the top byte, colour bytes 0 (`a8`/`a1`): `8BIT_A`
    /// bitmaps, LZ `A8`, 8_A and 1_A surfaces.
    Only,
}

/// Decoded pixels: `width * height` u32 `0xAARRGGBB`, top-down rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pixels {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The pixels.
    pub data: Arc<Vec<u32>>,
    /// What the top byte of each pixel means.
    pub alpha: Alpha,
}

impl Pixels {
    /// Pixels without alpha (`x8r8g8b8`).
    pub fn xrgb(width: u32, height: u32, data: Vec<u32>) -> Self {
        Self { width, height, data: Arc::new(data), alpha: Alpha::None }
    }

    /// The pixels with the alpha pixman reads: 0xff for an image without
    /// alpha, the top byte otherwise.
    pub fn as_pixman_reads(self) -> Pixels {
        match self.alpha {
            Alpha::None => self.opaque(),
            _ => self,
        }
    }

    /// The pixels with alpha 0xff, as pixman reads an image whose format
    /// has no alpha (colour bytes kept).
    pub fn opaque(self) -> Pixels {
        let data = self.data.iter().map(|px| px | 0xff00_0000).collect();
        Pixels { width: self.width, height: self.height, data: Arc::new(data), alpha: Alpha::None }
    }

    /// The pixel at (x, y); callers stay in bounds.
    #[inline]
    pub fn at(&self, x: u32, y: u32) -> u32 {
        self.data[y as usize * self.width as usize + x as usize]
    }
}

/// Checks image dimensions against the renderer's bounds; returns the pixel count.
///
/// # Errors
/// [`ImageError::BadSize`].
pub fn checked_pixels(width: u32, height: u32) -> Result<usize, ImageError> {
    let n = u64::from(width) * u64::from(height);
    if width == 0 || height == 0 || width > MAX_SURFACE_SIDE || height > MAX_SURFACE_SIDE || n > MAX_SURFACE_PIXELS {
        return Err(ImageError::BadSize { width, height });
    }
    usize::try_from(n).map_err(|_| ImageError::BadSize { width, height })
}

/// The session's image cache (by descriptor id, with lossy marks) and
/// palette cache (spice-gtk shares both among a session's display channels).
#[derive(Debug, Default)]
pub struct ImageCaches {
    images: HashMap<u64, (Pixels, bool)>,
    palettes: HashMap<u64, Arc<Vec<u32>>>,
    pixels: u64,
}

impl ImageCaches {
    fn put(&mut self, id: u64, p: Pixels, lossy: bool) -> Result<(), ImageError> {
        let n = u64::from(p.width) * u64::from(p.height);
        if let Some((old, _)) = self.images.remove(&id) {
            self.pixels -= u64::from(old.width) * u64::from(old.height);
        }
        if self.pixels + n > MAX_CACHED_PIXELS {
            return Err(ImageError::CacheFull);
        }
        self.pixels += n;
        self.images.insert(id, (p, lossy));
        Ok(())
    }

    /// Drops one image (`SPICE_MSG_DISPLAY_INVAL_LIST`).
    pub fn remove(&mut self, id: u64) {
        if let Some((old, _)) = self.images.remove(&id) {
            self.pixels -= u64::from(old.width) * u64::from(old.height);
        }
    }

    /// Drops every image (`SPICE_MSG_DISPLAY_INVAL_ALL_PIXMAPS`).
    pub fn clear_images(&mut self) {
        self.images.clear();
        self.pixels = 0;
    }

    /// Drops one palette.
    pub fn remove_palette(&mut self, id: u64) {
        self.palettes.remove(&id);
    }

    /// Drops every palette.
    pub fn clear_palettes(&mut self) {
        self.palettes.clear();
    }

    /// Number of cached images.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// Whether no image is cached.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }
}

/// What decoding needs besides the message body.
pub trait ImageSources {
    /// The image and palette caches.
    fn caches(&mut self) -> &mut ImageCaches;
    /// The pixels of a surface (for SPICE_IMAGE_TYPE_SURFACE).
    fn surface(&self, id: u32) -> Option<Pixels>;
    /// Decodes a GLZ image (inserting it into the session's dictionary).
    ///
    /// # Errors
    /// [`ImageError`] from the GLZ decoder.
    fn glz(&mut self, data: &[u8]) -> Result<Pixels, ImageError>;
}

/// The spice-protocol name of an image type (`QUIC`, `LZ_RGB`, ...).
pub fn type_name(ty: u8) -> std::borrow::Cow<'static, str> {
    let name = match ty {
        image_type::BITMAP => "BITMAP",
        image_type::QUIC => "QUIC",
        image_type::LZ_PLT => "LZ_PLT",
        image_type::LZ_RGB => "LZ_RGB",
        image_type::GLZ_RGB => "GLZ_RGB",
        image_type::FROM_CACHE => "FROM_CACHE",
        image_type::SURFACE => "SURFACE",
        image_type::JPEG => "JPEG",
        image_type::FROM_CACHE_LOSSLESS => "FROM_CACHE_LOSSLESS",
        image_type::ZLIB_GLZ_RGB => "ZLIB_GLZ_RGB",
        image_type::JPEG_ALPHA => "JPEG_ALPHA",
        image_type::LZ4 => "LZ4",
        other => return std::borrow::Cow::Owned(format!("IMAGE_TYPE_{other}")),
    };
    std::borrow::Cow::Borrowed(name)
}

/// The descriptor type of the `SpiceImage` at `offset`, if readable.
pub fn descriptor_type(body: &[u8], offset: u32) -> Option<u8> {
    let at = usize::try_from(offset).ok()?.checked_add(8)?;
    body.get(at).copied().filter(|_| offset != 0)
}

/// The surface id of the `SpiceImage` at `offset` when it is a
/// `SPICE_IMAGE_TYPE_SURFACE` (`SpiceSurface.surface_id`, a `u32` right
/// after the 18-byte descriptor), else `None`.
pub fn surface_source(body: &[u8], offset: u32) -> Option<u32> {
    if descriptor_type(body, offset)? != image_type::SURFACE {
        return None;
    }
    let at = usize::try_from(offset).ok()?.checked_add(18)?;
    let b = body.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Decodes the `SpiceImage` at `offset` of a message `body`.
///
/// # Errors
/// [`ImageError`] for malformed, unsupported or uncached images.
pub fn decode(body: &[u8], offset: u32, src: &mut dyn ImageSources) -> Result<Pixels, ImageError> {
    let at = usize::try_from(offset).map_err(|_| ImageError::BadOffset(offset))?;
    if offset == 0 || at >= body.len() {
        return Err(ImageError::BadOffset(offset));
    }
    let mut r = Reader::new(&body[at..]);
    let id = r.u64()?;
    let ty = r.u8()?;
    let flags = r.u8()?;
    let width = r.u32()?;
    let height = r.u32()?;
    let (mut pixels, lossy) = match ty {
        image_type::FROM_CACHE => {
            let (p, _) = src.caches().images.get(&id).cloned().ok_or(ImageError::MissingCache(id))?;
            return Ok(p);
        }
        image_type::FROM_CACHE_LOSSLESS => {
            return match src.caches().images.get(&id) {
                Some((p, false)) => Ok(p.clone()),
                _ => Err(ImageError::MissingCache(id)),
            };
        }
        image_type::SURFACE => {
            let sid = r.u32()?;
            return src.surface(sid).ok_or(ImageError::MissingSurface(sid));
        }
        image_type::BITMAP => (bitmap(body, &mut r, width, height, src)?, false),
        image_type::QUIC => {
            let data = binary(&mut r)?;
            let q = super::quic::decode(data).map_err(|e| ImageError::Codec { codec: "QUIC", error: e.to_string() })?;
            {
                let alpha = if q.kind == super::quic::QuicType::Rgba { Alpha::Premultiplied } else { Alpha::None };
                (Pixels { width: q.width, height: q.height, data: Arc::new(q.pixels), alpha }, false)
            }
        }
        image_type::GLZ_RGB => (src.glz(binary(&mut r)?)?, false),
        image_type::ZLIB_GLZ_RGB => {
            let glz_size = r.u32()?;
            let data = binary(&mut r)?;
            let glz = inflate(data, glz_size)?;
            (src.glz(&glz)?, false)
        }
        image_type::LZ_RGB => (lz_pixels(super::lz::decode_lz(binary(&mut r)?), None)?, false),
        image_type::LZ_PLT => {
            let flags = r.u8()?;
            let size = r.u32()?;
            let palette = palette_ref(body, &mut r, flags, src)?;
            let data = r.take(usize::try_from(size).map_err(|_| ImageError::BadOffset(size))?)?;
            (lz_pixels(super::lz::decode_lz(data), palette.as_deref().map(Vec::as_slice))?, false)
        }
        image_type::LZ4 => (lz4(binary(&mut r)?, width, height)?, false),
        image_type::JPEG => (jpeg(binary(&mut r)?, width, height)?, true),
        image_type::JPEG_ALPHA => {
            let _flags = r.u8()?;
            let jpeg_size = r.u32()?;
            let data = binary(&mut r)?;
            let split =
                usize::try_from(jpeg_size).ok().filter(|&n| n <= data.len()).ok_or(ImageError::BadOffset(jpeg_size))?;
            let mut p = jpeg(&data[..split], width, height)?;
            let alpha = super::lz::decode_lz(&data[split..])
                .map_err(|e| ImageError::Codec { codec: "LZ alpha", error: e.to_string() })?;
            let super::lz::LzPixels::Alpha(a) = alpha.pixels else {
                return Err(ImageError::Codec { codec: "JPEG_ALPHA", error: "alpha stream is not XXXA".into() });
            };
            if a.len() != p.data.len() {
                return Err(ImageError::Codec { codec: "JPEG_ALPHA", error: "alpha size differs".into() });
            }
            for (px, al) in Arc::make_mut(&mut p.data).iter_mut().zip(a) {
                *px = (*px & 0x00ff_ffff) | u32::from(al) << 24;
            }
            p.alpha = Alpha::Premultiplied;
            (p, true)
        }
        other => return Err(ImageError::Unsupported(format!("image type {other}"))),
    };
    if pixels.width != width || pixels.height != height {
        return Err(ImageError::Codec {
            codec: "image",
            error: format!("descriptor says {width}x{height}, data {}x{}", pixels.width, pixels.height),
        });
    }
    if flags & HIGH_BITS_SET != 0 {
        let data = Arc::make_mut(&mut pixels.data);
        for p in data.iter_mut() {
            *p |= 0xff00_0000;
        }
    }
    if flags & (CACHE_ME | CACHE_REPLACE_ME) != 0 {
        src.caches().put(id, pixels.clone(), lossy)?;
    }
    Ok(pixels)
}

/// LZ output as canvas pixels: RGB types as decoded, palette indices through
/// `palette`, alpha-only types in the top byte.
fn lz_pixels(
    decoded: Result<super::lz::LzImage, super::lz::LzError>,
    palette: Option<&[u32]>,
) -> Result<Pixels, ImageError> {
    let img = decoded.map_err(|e| ImageError::Codec { codec: "LZ", error: e.to_string() })?;
    let data = match &img.pixels {
        super::lz::LzPixels::Argb(v) => v.clone(),
        super::lz::LzPixels::PaletteIndices(_) => {
            let p = palette.ok_or_else(|| ImageError::Unsupported("LZ_PLT without palette".into()))?;
            img.to_argb(p)
        }
        super::lz::LzPixels::Alpha(a) => a.iter().map(|&v| u32::from(v) << 24).collect(),
    };
    let alpha = match (&img.pixels, img.lz_type) {
        (super::lz::LzPixels::Alpha(_), _) => Alpha::Only,
        (_, super::lz::LzType::Rgba) => Alpha::Premultiplied,
        _ => Alpha::None,
    };
    Ok(Pixels { width: img.width, height: img.height, data: Arc::new(data), alpha })
}

/// Decodes a JPEG to `0x00RRGGBB` pixels as spice-gtk does
/// (`decode-jpeg.c`: libjpeg's defaults, [`super::jpeg`]); the picture
/// must have the descriptor's size.
fn jpeg(data: &[u8], width: u32, height: u32) -> Result<Pixels, ImageError> {
    let bad = |e: String| ImageError::Codec { codec: "JPEG", error: e };
    checked_pixels(width, height)?;
    let img = super::jpeg::decode(data, &super::jpeg::DecodeOptions::spice_gtk_image(width, height))
        .map_err(|e| bad(e.to_string()))?;
    if (img.width, img.height) != (width, height) {
        return Err(bad(format!("{}x{} image for a {width}x{height} descriptor", img.width, img.height)));
    }
    let px = img.rgb.chunks_exact(3).map(|c| u32::from(c[0]) << 16 | u32::from(c[1]) << 8 | u32::from(c[2])).collect();
    Ok(Pixels::xrgb(width, height, px))
}

/// Most bytes a zlib stream may inflate to (a GLZ image of the largest
/// surface, with headroom).
const MAX_INFLATED: u32 = 320 * 1024 * 1024;

/// Inflates a `ZLIB_GLZ_RGB` payload to exactly `size` bytes.
fn inflate(data: &[u8], size: u32) -> Result<Vec<u8>, ImageError> {
    use std::io::Read;
    if size > MAX_INFLATED {
        return Err(ImageError::Codec { codec: "zlib", error: format!("{size} bytes announced") });
    }
    let mut out = Vec::with_capacity(size as usize);
    let mut z = flate2::read::ZlibDecoder::new(data).take(u64::from(size) + 1);
    z.read_to_end(&mut out).map_err(|e| ImageError::Codec { codec: "zlib", error: e.to_string() })?;
    if out.len() != size as usize {
        return Err(ImageError::Codec { codec: "zlib", error: format!("inflated to {} bytes, not {size}", out.len()) });
    }
    Ok(out)
}

/// `SPICE_IMAGE_TYPE_LZ4`: top_down u8, format u8 (`SPICE_BITMAP_FMT_16BIT`,
/// `24BIT`, `32BIT`, `RGBA`), then blocks of (u32 big-endian length, LZ4
/// block) decoded as one stream: a block may refer back into the output of
/// earlier blocks (spice-common `canvas_base.c` `canvas_get_lz4`).
fn lz4(data: &[u8], width: u32, height: u32) -> Result<Pixels, ImageError> {
    let bad = |e: String| ImageError::Codec { codec: "LZ4", error: e };
    let n = checked_pixels(width, height)?;
    let mut r = Reader::new(data);
    let top_down = r.u8()? != 0;
    let format = r.u8()?;
    let bpp = match format {
        6 => 2,
        7 => 3,
        8 | 9 => 4,
        f => return Err(ImageError::Unsupported(format!("LZ4 bitmap format {f}"))),
    };
    let stride = width as usize * bpp;
    let mut out = vec![0u8; n * bpp];
    let mut filled = 0;
    while r.remaining() > 0 && filled < out.len() {
        let len = u32::from_be_bytes(r.take(4)?.try_into().map_err(|_| bad("short block length".into()))?);
        let block = r.take(usize::try_from(len).map_err(|_| bad("block length".into()))?)?;
        let (prev, rest) = out.split_at_mut(filled);
        let dict = &prev[prev.len().saturating_sub(64 * 1024)..];
        let got = lz4_flex::block::decompress_into_with_dict(block, rest, dict).map_err(|e| bad(e.to_string()))?;
        if got == 0 {
            return Err(bad("empty block".into()));
        }
        filled += got;
    }
    if filled != out.len() {
        return Err(bad(format!("{filled} of {} bytes", out.len())));
    }
    let mut px = Vec::with_capacity(n);
    for row in 0..height as usize {
        let src_row = if top_down { row } else { height as usize - 1 - row };
        let line = &out[src_row * stride..][..stride];
        for c in line.chunks_exact(bpp) {
            px.push(match bpp {
                2 => {
                    let v = u16::from_le_bytes([c[0], c[1]]);
                    let widen = |v: u16| u32::from((v << 3) | (v >> 2));
                    widen((v >> 10) & 0x1f) << 16 | widen((v >> 5) & 0x1f) << 8 | widen(v & 0x1f)
                }
                3 => u32::from(c[2]) << 16 | u32::from(c[1]) << 8 | u32::from(c[0]),
                _ => u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
            });
        }
    }
    let alpha = if format == 9 { Alpha::Premultiplied } else { Alpha::None };
    Ok(Pixels { width, height, data: Arc::new(px), alpha })
}

/// A palette given by id (`PAL_FROM_CACHE`) or by pointer (possibly 0),
/// cached when `PAL_CACHE_ME` is set.
fn palette_ref(
    body: &[u8],
    r: &mut Reader<'_>,
    flags: u8,
    src: &mut dyn ImageSources,
) -> Result<Option<Arc<Vec<u32>>>, ImageError> {
    if flags & PAL_FROM_CACHE != 0 {
        let id = r.u64()?;
        return Ok(Some(src.caches().palettes.get(&id).cloned().ok_or(ImageError::MissingPalette(id))?));
    }
    let ptr = r.u32()?;
    if ptr == 0 {
        return Ok(None);
    }
    let (unique, ents) = palette_at(body, ptr)?;
    let ents = Arc::new(ents);
    if flags & PAL_CACHE_ME != 0 {
        src.caches().palettes.insert(unique, ents.clone());
    }
    Ok(Some(ents))
}

/// `data_size u32` + data.
fn binary<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], ImageError> {
    let size = r.u32()?;
    Ok(r.take(usize::try_from(size).map_err(|_| ImageError::BadOffset(size))?)?)
}

/// Reads a `Palette` at `offset` of the body.
fn palette_at(body: &[u8], offset: u32) -> Result<(u64, Vec<u32>), ImageError> {
    let at = usize::try_from(offset).map_err(|_| ImageError::BadOffset(offset))?;
    let rest = body.get(at..).ok_or(ImageError::BadOffset(offset))?;
    let mut r = Reader::new(rest);
    let unique = r.u64()?;
    let n = r.u16()?;
    let ents = (0..n).map(|_| r.u32()).collect::<Result<Vec<_>, _>>()?;
    Ok((unique, ents))
}

/// `SPICE_BITMAP_FMT_*`: 1BIT_LE 1, 1BIT_BE 2, 4BIT_LE 3, 4BIT_BE 4, 8BIT 5,
/// 16BIT 6 (x1r5g5b5), 24BIT 7 (B, G, R bytes), 32BIT 8 (xRGB LE), RGBA 9,
/// 8BIT_A 10.
fn bitmap(
    body: &[u8],
    r: &mut Reader<'_>,
    width: u32,
    height: u32,
    src: &mut dyn ImageSources,
) -> Result<Pixels, ImageError> {
    let format = r.u8()?;
    let flags = r.u8()?;
    let x = r.u32()?;
    let y = r.u32()?;
    let stride = r.u32()?;
    let palette = palette_ref(body, r, flags, src)?;
    let n = checked_pixels(x, y)?;
    if (x, y) != (width, height) {
        return Err(ImageError::BadSize { width: x, height: y });
    }
    let bits_per_pixel: u64 = match format {
        1 | 2 => 1,
        3 | 4 => 4,
        5 | 10 => 8,
        6 => 16,
        7 => 24,
        8 | 9 => 32,
        f => return Err(ImageError::Unsupported(format!("bitmap format {f}"))),
    };
    let min_stride = (u64::from(x) * bits_per_pixel).div_ceil(8);
    if u64::from(stride) < min_stride {
        return Err(ImageError::BadSize { width: x, height: y });
    }
    let len = u64::from(stride) * u64::from(y);
    let data = r.take(usize::try_from(len).map_err(|_| ImageError::BadSize { width: x, height: y })?)?;
    let pal = |i: usize| -> Result<u32, ImageError> {
        let p = palette.as_ref().ok_or_else(|| ImageError::Unsupported("palette bitmap without palette".into()))?;
        Ok(p.get(i).copied().unwrap_or(0))
    };
    let mut out = Vec::with_capacity(n);
    let top_down = flags & TOP_DOWN != 0;
    for row in 0..y as usize {
        let src_row = if top_down { row } else { y as usize - 1 - row };
        let line = &data[src_row * stride as usize..src_row * stride as usize + min_stride as usize];
        for col in 0..x as usize {
            let px = match format {
                8 => u32::from_le_bytes([line[4 * col], line[4 * col + 1], line[4 * col + 2], line[4 * col + 3]]),
                9 => u32::from_le_bytes([line[4 * col], line[4 * col + 1], line[4 * col + 2], line[4 * col + 3]]),
                7 => {
                    let (b, g, r) = (line[3 * col], line[3 * col + 1], line[3 * col + 2]);
                    u32::from(r) << 16 | u32::from(g) << 8 | u32::from(b)
                }
                6 => {
                    let v = u16::from_le_bytes([line[2 * col], line[2 * col + 1]]);
                    let widen = |c: u16| -> u32 { u32::from((c << 3) | (c >> 2)) };
                    widen((v >> 10) & 0x1f) << 16 | widen((v >> 5) & 0x1f) << 8 | widen(v & 0x1f)
                }
                5 => pal(usize::from(line[col]))?,
                10 => u32::from(line[col]) << 24,
                3 => pal(usize::from(if col % 2 == 0 { line[col / 2] & 0x0f } else { line[col / 2] >> 4 }))?,
                4 => pal(usize::from(if col % 2 == 0 { line[col / 2] >> 4 } else { line[col / 2] & 0x0f }))?,
                1 => pal(usize::from((line[col / 8] >> (col % 8)) & 1))?,
                _ => pal(usize::from((line[col / 8] >> (7 - col % 8)) & 1))?,
            };
            out.push(px);
        }
    }
    let alpha = match format {
        9 => Alpha::Premultiplied,
        10 => Alpha::Only,
        _ => Alpha::None,
    };
    Ok(Pixels { width: x, height: y, data: Arc::new(out), alpha })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoSources(ImageCaches);

    impl ImageSources for NoSources {
        fn caches(&mut self) -> &mut ImageCaches {
            &mut self.0
        }
        fn surface(&self, _id: u32) -> Option<Pixels> {
            None
        }
        fn glz(&mut self, _data: &[u8]) -> Result<Pixels, ImageError> {
            Err(ImageError::Unsupported("GLZ".into()))
        }
    }

    /// A message body with one bitmap image at offset 4.
    #[allow(clippy::too_many_arguments)]
    fn bitmap_body(id: u64, flags: u8, w: u32, h: u32, fmt: u8, bmp_flags: u8, data: &[u8], stride: u32) -> Vec<u8> {
        let mut b = vec![0u8; 4];
        b.extend_from_slice(&id.to_le_bytes());
        b.push(image_type::BITMAP);
        b.push(flags);
        b.extend_from_slice(&w.to_le_bytes());
        b.extend_from_slice(&h.to_le_bytes());
        b.push(fmt);
        b.push(bmp_flags);
        b.extend_from_slice(&w.to_le_bytes());
        b.extend_from_slice(&h.to_le_bytes());
        b.extend_from_slice(&stride.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn bitmaps_decode_top_down_and_bottom_up_and_cache() {
        let data: Vec<u8> =
            [0x00112233u32, 0x00445566, 0x00778899, 0x00aabbcc].iter().flat_map(|p| p.to_le_bytes()).collect();
        let mut s = NoSources(ImageCaches::default());
        let body = bitmap_body(7, CACHE_ME, 2, 2, 8, TOP_DOWN, &data, 8);
        let p = decode(&body, 4, &mut s).unwrap();
        assert_eq!(*p.data, [0x00112233, 0x00445566, 0x00778899, 0x00aabbcc]);
        let body = bitmap_body(8, HIGH_BITS_SET, 2, 2, 8, 0, &data, 8);
        let p = decode(&body, 4, &mut s).unwrap();
        assert_eq!(*p.data, [0xff778899, 0xffaabbcc, 0xff112233, 0xff445566]);
        // FROM_CACHE finds the first one.
        let mut from_cache = vec![0u8; 4];
        from_cache.extend_from_slice(&7u64.to_le_bytes());
        from_cache.extend_from_slice(&[image_type::FROM_CACHE, 0, 2, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(decode(&from_cache, 4, &mut s).unwrap().data[0], 0x00112233);
        s.0.remove(7);
        assert_eq!(decode(&from_cache, 4, &mut s), Err(ImageError::MissingCache(7)));
    }

    #[test]
    fn hostile_images_are_errors() {
        let mut s = NoSources(ImageCaches::default());
        let data = [0u8; 16];
        assert!(matches!(decode(&bitmap_body(1, 0, 2, 2, 8, 0, &data, 4), 4, &mut s), Err(ImageError::BadSize { .. })));
        assert!(decode(&bitmap_body(1, 0, 2, 2, 8, 0, &data[..15], 8), 4, &mut s).is_err());
        assert!(matches!(decode(&bitmap_body(1, 0, 0, 2, 8, 0, &[], 8), 4, &mut s), Err(ImageError::BadSize { .. })));
        let huge = bitmap_body(1, 0, 100_000, 100_000, 8, 0, &[], 400_000);
        assert!(matches!(decode(&huge, 4, &mut s), Err(ImageError::BadSize { .. })));
        assert!(matches!(decode(&[0; 8], 0, &mut s), Err(ImageError::BadOffset(0))));
        assert!(matches!(decode(&[0; 8], 100, &mut s), Err(ImageError::BadOffset(100))));
        let body = bitmap_body(1, 0, 2, 2, 5, 0, &[0, 1, 2, 3], 2);
        assert!(matches!(decode(&body, 4, &mut s), Err(ImageError::Unsupported(_))));
    }

    const JPEG: &[u8] = include_bytes!("../../tests/fixtures/jpeg/qemu-linux-image.jpg");
    const JPEG_LIBJPEG_RGB: &[u8] = include_bytes!("../../tests/fixtures/jpeg/qemu-linux-image.islow.rgb");

    #[test]
    fn recorded_jpeg_decodes_as_libjpeg_turbo_does() {
        let p = jpeg(JPEG, 400, 32).unwrap();
        let rgb: Vec<u8> = p.data.iter().flat_map(|px| [(px >> 16) as u8, (px >> 8) as u8, *px as u8]).collect();
        assert!(rgb == JPEG_LIBJPEG_RGB, "pixels differ from djpeg's");
        assert!(matches!(jpeg(JPEG, 401, 32), Err(ImageError::Codec { .. })), "size must match the descriptor");
    }

    #[test]
    fn truncated_and_mutated_jpegs_never_panic() {
        for cut in (0..JPEG.len()).step_by(97) {
            let _ = jpeg(&JPEG[..cut], 400, 32);
        }
        let mut x: u32 = 0x9e37_79b9;
        for _ in 0..300 {
            let mut m = JPEG.to_vec();
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let i = x as usize % m.len();
                m[i] ^= (x >> 8) as u8;
            }
            let _ = jpeg(&m, 400, 32);
        }
        assert!(jpeg(&[], 400, 32).is_err());
    }
}

//! The stand-alone LZ codec (spice-common `lz.c` / `lz_decompress_tmpl.c`).

use super::stream::{AlphaUnit, ByteUnit, Output, Reader, Rgb16Unit, RgbUnit, Unit};
use super::{LZ_MAGIC, LZ_VERSION, LzError, LzImage, LzPixels, LzType, checked_pixels, flip_rows};

/// Distances of 8191 and more are coded with two extra bytes on top of this base.
const FAR_DISTANCE_BASE: usize = 8191;
/// The 5 high distance bits plus the following byte that announce a far distance.
const FAR_DISTANCE_MARK: u32 = (31 << 8) | 255;

/// Decodes one LZ image (`SPICE_IMAGE_TYPE_LZ_RGB`/`LZ_PLT` payload, or the alpha stream of `JPEG_ALPHA`).
///
/// The header is seven big-endian u32s: magic [`LZ_MAGIC`], version
/// [`LZ_VERSION`], type, width, height, stride (bytes per source row) and `top_down`
/// (non-zero means rows are stored top first). RGB types need `stride == width * bytes per pixel`, as
/// spice-common checks; palette types need exactly the packed row length rounded up to a whole byte
/// (spice-common also lets shorter strides through, which spice-gtk's canvas cannot draw, so they are
/// refused here). After the image the input must be exhausted, as spice-common asserts.
///
/// Output by type (see [`LzPixels`]): RGB16/RGB24/RGB32/RGBA give ARGB words, palette types give the
/// unpacked indices, XXXA and A8 give alpha bytes. Rows are top-down.
pub fn decode_lz(data: &[u8]) -> Result<LzImage, LzError> {
    let mut input = Reader::new(data);
    let magic = input.be_u32()?;
    if magic != LZ_MAGIC {
        return Err(LzError::BadMagic { found: magic });
    }
    let version = input.be_u32()?;
    if version != LZ_VERSION {
        return Err(LzError::BadVersion { found: version });
    }
    let code = input.be_u32()?;
    let lz_type = LzType::from_code(code).ok_or(LzError::BadType { found: code })?;
    let width = input.be_u32()?;
    let height = input.be_u32()?;
    let stride = input.be_u32()?;
    let top_down = input.be_u32()? != 0;
    let pixels = checked_pixels(width, height)?;
    let bad_stride = LzError::BadStride { stride, width, lz_type };

    let row_len = width as usize;
    let mut pixels = match lz_type.palette_pixels_per_byte() {
        Some(per_byte) => {
            if stride != width.div_ceil(per_byte) {
                return Err(bad_stride);
            }
            let mut packed = vec![0u8; stride as usize * height as usize];
            run::<ByteUnit>(&mut input, &mut packed)?;
            LzPixels::PaletteIndices(unpack_palette(lz_type, &packed, stride as usize, row_len))
        }
        None => {
            if u64::from(stride) != u64::from(width) * u64::from(lz_type.rgb_bytes_per_pixel()) {
                return Err(bad_stride);
            }
            match lz_type {
                LzType::Rgb16 => LzPixels::Argb(decode_units::<Rgb16Unit>(&mut input, pixels)?),
                LzType::Rgb24 | LzType::Rgb32 => LzPixels::Argb(decode_units::<RgbUnit>(&mut input, pixels)?),
                LzType::Rgba => {
                    let mut argb = decode_units::<RgbUnit>(&mut input, pixels)?;
                    run::<AlphaUnit>(&mut input, &mut argb)?;
                    LzPixels::Argb(argb)
                }
                _ => LzPixels::Alpha(decode_units::<ByteUnit>(&mut input, pixels)?),
            }
        }
    };
    if input.remaining() != 0 {
        return Err(LzError::TrailingData { extra: input.remaining() });
    }
    if !top_down {
        match &mut pixels {
            LzPixels::Argb(px) => flip_rows(px, row_len),
            LzPixels::PaletteIndices(px) | LzPixels::Alpha(px) => flip_rows(px, row_len),
        }
    }
    Ok(LzImage { lz_type, width, height, top_down, pixels })
}

fn decode_units<U: Unit>(input: &mut Reader<'_>, count: usize) -> Result<Vec<U::Px>, LzError> {
    let mut buf = vec![U::Px::default(); count];
    run::<U>(input, &mut buf)?;
    Ok(buf)
}

/// Runs one LZ pass until `buf` is full.
fn run<U: Unit>(input: &mut Reader<'_>, buf: &mut [U::Px]) -> Result<(), LzError> {
    let mut out = Output::<U>::new(buf);
    loop {
        let ctrl = u32::from(input.u8()?);
        if ctrl < 32 {
            out.literals(input, ctrl as usize + 1)?;
        } else {
            let len = input.match_len(ctrl >> 5)?;
            let high = (ctrl & 31) << 8;
            let low = u32::from(input.u8()?);
            let mut distance = (high | low) as usize;
            if high | low == FAR_DISTANCE_MARK {
                let hi = input.u8()?;
                let lo = input.u8()?;
                distance = usize::from(u16::from_be_bytes([hi, lo])) + FAR_DISTANCE_BASE;
            }
            // The coded length is one less than the 3-bit field implies for the minimal match of each
            // unit kind; spice-common subtracts 1 and adds 3/2/1, which is `LEN_BIAS` on the raw field.
            out.copy_back(distance + 1, len.saturating_add(U::LEN_BIAS))?;
        }
        if out.is_full() {
            return Ok(());
        }
    }
}

/// Unpacks palette bytes (rows of `stride` bytes) to one index per pixel, `width` per row.
fn unpack_palette(lz_type: LzType, packed: &[u8], stride: usize, width: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(width * (packed.len() / stride.max(1)));
    for row in packed.chunks_exact(stride) {
        match lz_type {
            LzType::Plt8 => out.extend_from_slice(&row[..width]),
            LzType::Plt4Le | LzType::Plt4Be => {
                let first_high = lz_type == LzType::Plt4Be;
                out.extend((0..width).map(|x| {
                    let byte = row[x / 2];
                    if (x % 2 == 0) == first_high { byte >> 4 } else { byte & 0x0f }
                }));
            }
            _ => {
                let msb_first = lz_type == LzType::Plt1Be;
                out.extend((0..width).map(|x| {
                    let bit = if msb_first { 7 - x % 8 } else { x % 8 };
                    (row[x / 8] >> bit) & 1
                }));
            }
        }
    }
    out
}

//! JPEGs outside what [`super::decode`] reproduces bit for bit
//! (progressive, arithmetic coding, 12-bit, several scans, CMYK), decoded
//! by zune-jpeg. Its IDCT and upsampling round differently from
//! libjpeg-turbo's, so these pictures are close to spice-gtk's, not equal.
//! SPICE servers send none of them (spice-server's encoders write baseline
//! 4:2:0 YCbCr).

use std::borrow::Cow;

use super::huffman::{
    STD_AC_CHROMA_BITS, STD_AC_CHROMA_VALS, STD_AC_LUMA_BITS, STD_AC_LUMA_VALS, STD_DC_CHROMA_BITS, STD_DC_LUMA_BITS,
    STD_DC_VALS,
};
use super::{DecodeOptions, JpegError, RgbImage};

/// Decodes `data` with zune-jpeg, within `options`' size bounds.
///
/// # Errors
/// [`JpegError::General`] with zune-jpeg's message.
pub(super) fn decode(data: &[u8], options: &DecodeOptions) -> Result<RgbImage, JpegError> {
    let bad = |e: String| JpegError::General(e);
    let zune_options = zune_core::options::DecoderOptions::default()
        .jpeg_set_out_colorspace(zune_core::colorspace::ColorSpace::RGB)
        .set_max_width(options.max_width as usize)
        .set_max_height(options.max_height as usize);
    if let Some(why) = unhandled_sampling(data) {
        return Err(bad(why));
    }
    let frame = with_tables(data);
    let mut dec = zune_jpeg::JpegDecoder::new_with_options(frame.as_ref(), zune_options);
    let rgb = dec.decode().map_err(|e| bad(format!("{e:?}")))?;
    let info = dec.info().ok_or_else(|| bad("no header".into()))?;
    let (width, height) = (u32::from(info.width), u32::from(info.height));
    if rgb.len() != width as usize * height as usize * 3 {
        return Err(bad(format!("{} bytes for {width}x{height}", rgb.len())));
    }
    Ok(RgbImage { width, height, rgb })
}

/// The standard Huffman tables of ITU-T T.81 Annex K.3 (luminance and
/// chrominance, DC and AC) as one DHT segment, for Motion-JPEG frames that
/// leave their tables out (zune-jpeg does not supply them itself).
fn standard_dht() -> Vec<u8> {
    let tables: [(u8, &[u8; 16], &[u8]); 4] = [
        (0x00, &STD_DC_LUMA_BITS, &STD_DC_VALS),
        (0x01, &STD_DC_CHROMA_BITS, &STD_DC_VALS),
        (0x10, &STD_AC_LUMA_BITS, &STD_AC_LUMA_VALS),
        (0x11, &STD_AC_CHROMA_BITS, &STD_AC_CHROMA_VALS),
    ];
    let mut body = Vec::new();
    for (class_id, bits, vals) in tables {
        body.push(class_id);
        body.extend_from_slice(bits);
        body.extend_from_slice(vals);
    }
    let mut seg = vec![0xff, 0xc4];
    // 2 + 4 * 17 + 12 + 12 + 162 + 162 = 418 bytes: fits in u16.
    seg.extend_from_slice(&((body.len() + 2) as u16).to_be_bytes());
    seg.extend_from_slice(&body);
    seg
}

/// Why zune-jpeg must not be given this stream's sampling factors, if it
/// must not: zune-jpeg 0.4 panics (an assertion in `worker.rs`
/// `upsample`) on layouts where a component is sampled more finely than the
/// first, or the later components differ (found by the `jpeg` fuzz target:
/// Y 2x2, Cb 1x1, Cr 4x1). Accepted: the first component has the largest
/// factors and every other component has the same factors, which divide the
/// first's (4:4:4, 4:2:2, 4:2:0, 4:4:0, 4:1:1, grayscale, and CMYK alike).
/// Streams without a readable frame header are left to zune-jpeg's errors.
fn unhandled_sampling(data: &[u8]) -> Option<String> {
    let mut i = 2;
    while i + 4 <= data.len() {
        // Like libjpeg's `next_marker` (and zune-jpeg), bytes between
        // segments that are not a marker are skipped, as are fill bytes.
        if data[i] != 0xff || matches!(data[i + 1], 0x00 | 0xff) {
            i += 1;
            continue;
        }
        let marker = data[i + 1];
        // Markers without a length: TEM, RST0..7, SOI.
        if matches!(marker, 0x01 | 0xd0..=0xd8) {
            i += 2;
            continue;
        }
        let len = usize::from(u16::from_be_bytes([data[i + 2], data[i + 3]]));
        // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
        if (0xc0..=0xcf).contains(&marker) && !matches!(marker, 0xc4 | 0xc8 | 0xcc) {
            let body = data.get(i + 4..i + 2 + len)?;
            let count = usize::from(*body.get(5)?);
            let factors: Vec<(u8, u8)> =
                body.get(6..6 + 3 * count)?.chunks_exact(3).map(|c| (c[1] >> 4, c[1] & 15)).collect();
            let (&(h0, v0), rest) = factors.split_first()?;
            let ok = rest.iter().all(|&(h, v)| {
                (h, v) == rest[0] && h != 0 && v != 0 && h <= h0 && v <= v0 && h0 % h == 0 && v0 % v == 0
            });
            return (!ok).then(|| format!("sampling factors {factors:?} not handled"));
        }
        if marker == 0xda {
            return None;
        }
        i += 2 + len;
    }
    None
}

/// Whether a JPEG stream has a DHT segment before its first SOS.
fn has_dht(frame: &[u8]) -> bool {
    let mut i = 2;
    while i + 4 <= frame.len() && frame[i] == 0xff {
        let marker = frame[i + 1];
        if marker == 0xc4 {
            return true;
        }
        if marker == 0xda {
            return false;
        }
        let len = usize::from(u16::from_be_bytes([frame[i + 2], frame[i + 3]]));
        i += 2 + len;
    }
    false
}

/// A frame with Huffman tables: as is when it has them, else with the
/// standard tables inserted after SOI.
fn with_tables(frame: &[u8]) -> Cow<'_, [u8]> {
    if frame.len() < 2 || frame[..2] != [0xff, 0xd8] || has_dht(frame) {
        return Cow::Borrowed(frame);
    }
    let dht = standard_dht();
    let mut out = Vec::with_capacity(frame.len() + dht.len());
    out.extend_from_slice(&frame[..2]);
    out.extend_from_slice(&dht);
    out.extend_from_slice(&frame[2..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_tables_have_the_right_counts() {
        let dht = standard_dht();
        assert_eq!(dht.len(), 2 + 418);
        let mut i = 4;
        for _ in 0..4 {
            let bits = &dht[i + 1..i + 17];
            let n: usize = bits.iter().map(|&b| usize::from(b)).sum();
            i += 17 + n;
        }
        assert_eq!(i, dht.len());
    }

    #[test]
    fn sampling_layouts_zune_jpeg_panics_on_are_refused() {
        // The fuzz target's crash: Y 2x2, Cb 1x1, Cr 4x1 (zune-jpeg 0.4.21
        // `worker.rs` assertion).
        let crash =
            std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jpeg/fuzz-sampling-4x1.jpg")).unwrap();
        assert!(unhandled_sampling(&crash).is_some());
        let err = decode(&crash, &DecodeOptions::spice_gtk_image(256, 256)).unwrap_err();
        assert!(err.to_string().contains("sampling factors"), "{err}");
        let sof = |comps: &[(u8, u8)]| {
            let mut f = vec![0xff, 0xd8, 0xff, 0xc2, 0, (8 + 3 * comps.len()) as u8, 8, 0, 8, 0, 8, comps.len() as u8];
            for (k, &(h, v)) in comps.iter().enumerate() {
                f.extend_from_slice(&[k as u8 + 1, (h << 4) | v, 0]);
            }
            f
        };
        for ok in [&[(1, 1)][..], &[(2, 2), (1, 1), (1, 1)], &[(2, 1), (1, 1), (1, 1)], &[(4, 1), (1, 1), (1, 1)]] {
            assert_eq!(unhandled_sampling(&sof(ok)), None, "{ok:?}");
        }
        for bad in [
            &[(2, 2), (1, 1), (1, 2)][..],
            &[(1, 1), (2, 2), (2, 2)],
            &[(3, 2), (2, 2), (2, 2)],
            &[(2, 2), (0, 1), (0, 1)],
        ] {
            assert!(unhandled_sampling(&sof(bad)).is_some(), "{bad:?}");
        }
        // Truncated frame headers are left to zune-jpeg.
        assert_eq!(unhandled_sampling(&sof(&[(2, 2), (1, 1), (1, 1)])[..10]), None);
        // Garbage and fill bytes before the frame header are skipped, as
        // zune-jpeg skips them (the fuzz target's second find).
        let mut hidden = vec![0xff, 0xd8, 0x12, 0x34, 0xff, 0xff];
        hidden.extend_from_slice(&sof(&[(2, 2), (1, 1), (4, 1)])[2..]);
        assert!(unhandled_sampling(&hidden).is_some());
        let crash2 =
            std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jpeg/fuzz-sampling-after-garbage.jpg"))
                .unwrap();
        assert!(decode(&crash2, &DecodeOptions::spice_gtk_image(256, 256)).is_err());
    }

    #[test]
    fn tables_are_added_only_when_missing() {
        let frame = [0xff, 0xd8, 0xff, 0xda, 0, 2];
        assert_eq!(with_tables(&frame).len(), frame.len() + 420);
        let mut with = vec![0xff, 0xd8];
        with.extend(standard_dht());
        assert_eq!(with_tables(&with).len(), with.len());
        assert_eq!(with_tables(&[1, 2, 3]).as_ref(), &[1, 2, 3]);
    }
}

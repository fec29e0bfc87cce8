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
    let frame = with_tables(data);
    if let Some(why) = unhandled_sampling(&frame) {
        return Err(bad(why));
    }
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

/// Why zune-jpeg must not be given this frame, if it must not.
///
/// zune-jpeg 0.4.21 panics (assertions in its upsampler, `worker.rs`
/// `upsample`) on sampling layouts where a component is sampled more finely
/// than the first or the later components differ (found by the `jpeg`
/// fuzz target: Y 2x2, Cb 1x1, Cr 4x1). Accepted: the first component has
/// the largest factors and every other component has the same factors,
/// which divide the first's (4:4:4, 4:2:2, 4:2:0, 4:4:0, 4:1:1, grayscale,
/// and CMYK alike).
///
/// The frame header checked is the one zune-jpeg would use, found by
/// walking the markers as its `decode_headers_internal` does: byte by byte,
/// a marker is 0xFF then a code (runs of 0xFF and 0x00 after a 0xFF are
/// fill); SOF0, SOF1 and SOF2 are frame headers, SOS, EOI, DAC and DNL end
/// the headers, and every other segment, known or not (SOF3, SOF5..15 and
/// RSTn included), is skipped by its length. Any frame zune-jpeg would
/// refuse anyway (no SOI, no frame header before SOS, a length below 2, the
/// data ending) is refused here too: only a readable frame header with an
/// accepted layout lets zune-jpeg decode.
fn unhandled_sampling(frame: &[u8]) -> Option<String> {
    let refused = |why: &str| Some(why.to_string());
    if frame.get(..2) != Some(&[0xff, 0xd8][..]) {
        return refused("no SOI");
    }
    let mut i = 2;
    let mut last = 0u8;
    loop {
        let Some(&byte) = frame.get(i) else { return refused("no frame header") };
        i += 1;
        let mut code = byte;
        if matches!(code, 0xff | 0x00) && last == 0xff {
            while matches!(code, 0xff | 0x00) {
                last = code;
                let Some(&next) = frame.get(i) else { return refused("no frame header") };
                code = next;
                i += 1;
            }
        }
        if last == 0xff {
            match code {
                0xc0..=0xc2 => return sampling_of_frame_header(frame.get(i..).unwrap_or_default()),
                0xda | 0xd9 | 0xcc | 0xdc => return refused("no frame header before the scan"),
                _ => {
                    let Some(len) = frame.get(i..i + 2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))) else {
                        return refused("no frame header");
                    };
                    if len < 2 {
                        return refused("a segment length below 2");
                    }
                    i += len;
                }
            }
        }
        last = code;
    }
}

/// The verdict of [`unhandled_sampling`] on a SOF0..2 segment (`body`
/// starts at its length field: length, precision, height, width, component
/// count, then id, factors (high nibble horizontal), table per component).
fn sampling_of_frame_header(body: &[u8]) -> Option<String> {
    let components = body.get(7).and_then(|&count| body.get(8..8 + 3 * usize::from(count)));
    let Some(components) = components else { return Some("a frame header cut short".into()) };
    let factors: Vec<(u8, u8)> = components.chunks_exact(3).map(|c| (c[1] >> 4, c[1] & 15)).collect();
    let Some((&(h0, v0), rest)) = factors.split_first() else { return Some("no components".into()) };
    let ok = h0 != 0
        && v0 != 0
        && rest
            .iter()
            .all(|&(h, v)| (h, v) == rest[0] && h != 0 && v != 0 && h <= h0 && v <= v0 && h0 % h == 0 && v0 % v == 0);
    (!ok).then(|| format!("sampling factors {factors:?} not handled"))
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
        // Truncated frame headers, and frames without one, are refused
        // (zune-jpeg would refuse them too).
        assert!(unhandled_sampling(&sof(&[(2, 2), (1, 1), (1, 1)])[..10]).is_some());
        assert!(unhandled_sampling(&[0xff, 0xd8, 0xff, 0xda, 0, 2]).is_some());
        assert!(unhandled_sampling(&[0xff, 0xd9]).is_some());
        // Garbage and fill bytes before the frame header are skipped, as
        // zune-jpeg skips them (the fuzz target's second find).
        let mut hidden = vec![0xff, 0xd8, 0x12, 0x34, 0xff, 0xff];
        hidden.extend_from_slice(&sof(&[(2, 2), (1, 1), (4, 1)])[2..]);
        assert!(unhandled_sampling(&hidden).is_some());
        let crash2 =
            std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jpeg/fuzz-sampling-after-garbage.jpg"))
                .unwrap();
        assert!(decode(&crash2, &DecodeOptions::spice_gtk_image(256, 256)).is_err());
        // The third find: an SOF13 segment (which zune-jpeg skips as
        // unknown) with acceptable factors, then DHTs, then an SOF0 with
        // Y 2x2, Cb 1x4, Cr 4x1.
        let crash3 =
            std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jpeg/fuzz-sampling-after-sof13.jpg"))
                .unwrap();
        let why = unhandled_sampling(&crash3);
        assert!(why.as_deref().is_some_and(|w| w.contains("(1, 4)")), "{why:?}");
        assert!(decode(&crash3, &DecodeOptions::spice_gtk_mjpeg(256, 256)).is_err());
        // Segments zune-jpeg skips by their length, SOF3 and RST0 among
        // them, hide nothing: the frame header after them is checked.
        let mut skipped = vec![0xff, 0xd8, 0xff, 0xc3, 0, 4, 0xff, 0xc0, 0xff, 0xd0, 0, 2];
        skipped.extend_from_slice(&sof(&[(2, 2), (1, 1), (4, 1)])[2..]);
        assert!(unhandled_sampling(&skipped).is_some());
        skipped.truncate(12);
        skipped.extend_from_slice(&sof(&[(2, 2), (1, 1), (1, 1)])[2..]);
        assert_eq!(unhandled_sampling(&skipped), None);
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

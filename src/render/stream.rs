//! Video streams of the display channel: frames decoded and drawn at their
//! destination within their clip (spice-gtk `channel-display.c`,
//! `channel-display-mjpeg.c`, `channel-display-gst.c`).
//!
//! MJPEG frames are JPEG images (zune-jpeg); H.264 frames go through
//! OpenH264's decoder (one per stream, since H.264 frames depend on earlier
//! ones); other codecs are recorded as undecoded. spice-gtk draws stream frames on a timer against the
//! multimedia time and may drop late ones, so a rendering of a stream
//! matches spice-gtk's closely but not pixel for pixel.

use super::display::{Clip, Rect};
use super::image::{ImageError, Pixels, checked_pixels};

/// `SPICE_VIDEO_CODEC_TYPE_MJPEG`.
pub const CODEC_MJPEG: u8 = 1;
/// `SPICE_VIDEO_CODEC_TYPE_H264`.
pub const CODEC_H264: u8 = 3;

/// Whether spicetap decodes streams of this codec.
pub fn decodable(codec: u8) -> bool {
    matches!(codec, CODEC_MJPEG | CODEC_H264)
}
/// `SPICE_STREAM_FLAGS_TOP_DOWN`.
const TOP_DOWN: u8 = 1;

/// The spice-protocol name of a video codec.
pub fn codec_name(codec: u8) -> String {
    match codec {
        1 => "MJPEG".into(),
        2 => "VP8".into(),
        3 => "H264".into(),
        4 => "VP9".into(),
        5 => "H265".into(),
        n => format!("codec {n}"),
    }
}

/// The standard Huffman tables of ITU-T T.81 Annex K.3 (luminance and
/// chrominance, DC and AC) as one DHT segment. Motion-JPEG frames usually
/// omit their tables and rely on these (as libjpeg-turbo does for MJPEG).
fn standard_dht() -> Vec<u8> {
    const DC_LUMA_BITS: [u8; 16] = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
    const DC_CHROMA_BITS: [u8; 16] = [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0];
    const AC_LUMA_BITS: [u8; 16] = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d];
    const AC_CHROMA_BITS: [u8; 16] = [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77];
    const AC_LUMA_VALS: [u8; 162] = [
        0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07, 0x22, 0x71,
        0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0, 0x24, 0x33, 0x62, 0x72,
        0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x34, 0x35, 0x36, 0x37,
        0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59,
        0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83,
        0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3,
        0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3,
        0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2,
        0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa,
    ];
    const AC_CHROMA_VALS: [u8; 162] = [
        0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71, 0x13, 0x22,
        0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0, 0x15, 0x62, 0x72, 0xd1,
        0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x35, 0x36,
        0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58,
        0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a,
        0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a,
        0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba,
        0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda,
        0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa,
    ];
    let dc_vals: Vec<u8> = (0..12).collect();
    let tables: [(u8, &[u8; 16], &[u8]); 4] = [
        (0x00, &DC_LUMA_BITS, &dc_vals),
        (0x01, &DC_CHROMA_BITS, &dc_vals),
        (0x10, &AC_LUMA_BITS, &AC_LUMA_VALS),
        (0x11, &AC_CHROMA_BITS, &AC_CHROMA_VALS),
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
fn with_tables(frame: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if frame.len() < 2 || frame[..2] != [0xff, 0xd8] || has_dht(frame) {
        return std::borrow::Cow::Borrowed(frame);
    }
    let dht = standard_dht();
    let mut out = Vec::with_capacity(frame.len() + dht.len());
    out.extend_from_slice(&frame[..2]);
    out.extend_from_slice(&dht);
    out.extend_from_slice(&frame[2..]);
    std::borrow::Cow::Owned(out)
}

/// A live stream.
pub struct Stream {
    /// Surface drawn on.
    pub surface_id: u32,
    /// Codec.
    pub codec: u8,
    /// Frames are top-down.
    pub top_down: bool,
    /// Encoded frame size.
    pub src_width: u32,
    /// Encoded frame size.
    pub src_height: u32,
    /// Destination rectangle.
    pub dest: Rect,
    /// Clip.
    pub clip: Clip,
    h264: Option<openh264::decoder::Decoder>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("codec", &self.codec).field("dest", &self.dest).finish_non_exhaustive()
    }
}

impl Stream {
    /// A stream as `STREAM_CREATE` describes it.
    pub fn new(surface_id: u32, flags: u8, codec: u8, src: (u32, u32), dest: Rect, clip: Clip) -> Self {
        Self {
            surface_id,
            codec,
            top_down: flags & TOP_DOWN != 0,
            src_width: src.0,
            src_height: src.1,
            dest,
            clip,
            h264: None,
        }
    }

    /// Decodes one frame to pixels of the destination's size (scaled with
    /// nearest-neighbour sampling when the sizes differ), top-down. `None`
    /// when the decoder has no picture yet (H.264 may buffer).
    ///
    /// # Errors
    /// [`ImageError`] for an undecodable frame or unsupported codec.
    pub fn decode(&mut self, data: &[u8], size: (u32, u32), dest: &Rect) -> Result<Option<Pixels>, ImageError> {
        let (w, h) = size;
        checked_pixels(w, h)?;
        let (rgb, fw, fh) = match self.codec {
            CODEC_MJPEG => {
                let bad = |e: String| ImageError::Codec { codec: "MJPEG", error: e };
                let options = zune_core::options::DecoderOptions::default()
                    .jpeg_set_out_colorspace(zune_core::colorspace::ColorSpace::RGB)
                    .set_max_width(w as usize)
                    .set_max_height(h as usize);
                let frame = with_tables(data);
                let mut dec = zune_jpeg::JpegDecoder::new_with_options(frame.as_ref(), options);
                let rgb = dec.decode().map_err(|e| bad(format!("{e:?}")))?;
                let info = dec.info().ok_or_else(|| bad("no header".into()))?;
                (rgb, u32::from(info.width), u32::from(info.height))
            }
            CODEC_H264 => {
                use openh264::formats::YUVSource;
                let bad = |e: String| ImageError::Codec { codec: "H264", error: e };
                if self.h264.is_none() {
                    self.h264 = Some(openh264::decoder::Decoder::new().map_err(|e| bad(e.to_string()))?);
                }
                let Some(dec) = self.h264.as_mut() else { return Ok(None) };
                let Some(yuv) = dec.decode(data).map_err(|e| bad(e.to_string()))? else { return Ok(None) };
                let (fw, fh) = yuv.dimensions();
                let (fw, fh) = (u32::try_from(fw).unwrap_or(0), u32::try_from(fh).unwrap_or(0));
                checked_pixels(fw, fh)?;
                let mut rgb = vec![0u8; fw as usize * fh as usize * 3];
                yuv.write_rgb8(&mut rgb);
                (rgb, fw, fh)
            }
            other => return Err(ImageError::Unsupported(format!("{} stream", codec_name(other)))),
        };
        if rgb.len() != fw as usize * fh as usize * 3 || fw == 0 || fh == 0 {
            return Err(ImageError::Codec { codec: "stream", error: "short frame".into() });
        }
        let (dw, dh) = (dest.width(), dest.height());
        checked_pixels(dw, dh)?;
        let mut out = Vec::with_capacity(dw as usize * dh as usize);
        for y in 0..dh {
            let sy = (u64::from(y) * u64::from(fh) / u64::from(dh)) as u32;
            let sy = if self.top_down { sy } else { fh - 1 - sy };
            for x in 0..dw {
                let sx = (u64::from(x) * u64::from(fw) / u64::from(dw)) as usize;
                let i = (sy as usize * fw as usize + sx) * 3;
                out.push(u32::from(rgb[i]) << 16 | u32::from(rgb[i + 1]) << 8 | u32::from(rgb[i + 2]));
            }
        }
        Ok(Some(Pixels::xrgb(dw, dh, out)))
    }
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
    fn tables_are_added_only_when_missing() {
        let frame = [0xff, 0xd8, 0xff, 0xda, 0, 2];
        assert_eq!(with_tables(&frame).len(), frame.len() + 420);
        let mut with = vec![0xff, 0xd8];
        with.extend(standard_dht());
        assert_eq!(with_tables(&with).len(), with.len());
        assert_eq!(with_tables(&[1, 2, 3]).as_ref(), &[1, 2, 3]);
    }

    const FRAME: &[u8] = include_bytes!("../../tests/fixtures/jpeg/qemu-linux-mjpeg-frame.jpg");
    const FRAME_NO_DHT: &[u8] = include_bytes!("../../tests/fixtures/jpeg/qemu-linux-mjpeg-frame-no-dht.jpg");

    fn stream(w: u32, h: u32, flags: u8) -> (Stream, Rect) {
        let dest = Rect { top: 0, left: 0, bottom: h as i32, right: w as i32 };
        (Stream::new(0, flags, CODEC_MJPEG, (w, h), dest, Clip::None), dest)
    }

    #[test]
    fn recorded_mjpeg_frames_decode_with_and_without_tables() {
        let (mut s, dest) = stream(32, 10, TOP_DOWN);
        let p = s.decode(FRAME, (32, 10), &dest).unwrap().unwrap();
        assert_eq!((p.width, p.height), (32, 10));
        let (mut s, dest) = stream(1024, 48, TOP_DOWN);
        let p = s.decode(FRAME_NO_DHT, (1024, 48), &dest).unwrap().unwrap();
        assert_eq!(p.data.len(), 1024 * 48);
        // Bottom-up frames are flipped; a larger destination scales.
        let (mut s, _) = stream(1024, 48, 0);
        let flipped = s.decode(FRAME_NO_DHT, (1024, 48), &dest).unwrap().unwrap();
        assert_eq!(flipped.data[0], p.data[47 * 1024]);
        let big = Rect { top: 0, left: 0, bottom: 96, right: 2048 };
        assert_eq!(s.decode(FRAME_NO_DHT, (1024, 48), &big).unwrap().unwrap().data.len(), 2048 * 96);
    }

    #[test]
    fn hostile_frames_are_errors_not_panics() {
        let (mut s, dest) = stream(1024, 48, TOP_DOWN);
        for cut in (0..FRAME_NO_DHT.len()).step_by(499) {
            let _ = s.decode(&FRAME_NO_DHT[..cut], (1024, 48), &dest);
        }
        assert!(s.decode(&[0xff, 0xd8], (1024, 48), &dest).is_err());
        let huge = Rect { top: 0, left: 0, bottom: 100_000, right: 100_000 };
        assert!(matches!(s.decode(FRAME_NO_DHT, (1024, 48), &huge), Err(ImageError::BadSize { .. })));
        let mut vp8 = Stream::new(0, 0, 2, (4, 4), dest, Clip::None);
        assert!(matches!(vp8.decode(FRAME, (4, 4), &dest), Err(ImageError::Unsupported(_))));
    }

    /// H.264 frames from OpenH264's own encoder decode through the stream's
    /// decoder (QEMU's spice-server sends H.264 only when GStreamer encoders
    /// are installed and the client advertises the codec).
    #[test]
    fn h264_stream_frames_decode() {
        use openh264::encoder::Encoder;
        use openh264::formats::{RgbSliceU8, YUVBuffer};
        let (w, h) = (64usize, 48usize);
        let mut enc = Encoder::new().unwrap();
        let dest = Rect { top: 0, left: 0, bottom: h as i32, right: w as i32 };
        let mut s = Stream::new(0, TOP_DOWN, CODEC_H264, (w as u32, h as u32), dest, Clip::None);
        let mut decoded = None;
        for n in 0..3u8 {
            let rgb: Vec<u8> = (0..w * h).flat_map(|i| [(i % w * 4) as u8, (i / w * 5) as u8, n * 60]).collect();
            let yuv = YUVBuffer::from_rgb_source(RgbSliceU8::new(&rgb, (w, h)));
            let bitstream = enc.encode(&yuv).unwrap().to_vec();
            if let Some(p) = s.decode(&bitstream, (w as u32, h as u32), &dest).unwrap() {
                decoded = Some((p, rgb));
            }
        }
        let (p, rgb) = decoded.expect("a decoded frame");
        assert_eq!((p.width, p.height), (w as u32, h as u32));
        let err: u64 = p
            .data
            .iter()
            .zip(rgb.chunks(3))
            .map(|(px, c)| u64::from(((px >> 16) as u8).abs_diff(c[0])) + u64::from(((px >> 8) as u8).abs_diff(c[1])))
            .sum();
        assert!(err / (w * h) as u64 <= 8, "mean error {}", err / (w * h) as u64);
        // Garbage NAL units: an error or no picture, never a panic.
        let _ = s.decode(&[0, 0, 0, 1, 0x65, 1, 2, 3], (64, 48), &dest);
    }
}

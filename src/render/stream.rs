//! Video streams of the display channel: frames decoded and drawn at their
//! destination within their clip (spice-gtk `channel-display.c`,
//! `channel-display-mjpeg.c`, `channel-display-gst.c`).
//!
//! MJPEG frames are JPEG images decoded as spice-gtk's MJPEG decoder does
//! (libjpeg's fast integer IDCT, replicated chroma: [`super::jpeg`]);
//! H.264 frames go through
//! OpenH264's decoder (one per stream, since H.264 frames depend on earlier
//! ones); other codecs are recorded as undecoded. spice-gtk draws stream frames on a timer against the
//! multimedia time and may drop late ones, so a rendering of a stream
//! matches spice-gtk's closely but not pixel for pixel.

use super::display::{Clip, Rect};
use super::image::{ImageError, Pixels, checked_pixels};
use super::jpeg::{self, DecodeOptions};

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
                let img = jpeg::decode(data, &DecodeOptions::spice_gtk_mjpeg(w, h))
                    .map_err(|e| ImageError::Codec { codec: "MJPEG", error: e.to_string() })?;
                (img.rgb, img.width, img.height)
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

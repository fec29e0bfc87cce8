//! xRGB frames to the encoder's YUV 4:2:0 pictures: padding to even sizes
//! (at least [`MIN_SIZE`]), scaling down what exceeds the encoder's limit.

use openh264::formats::YUVSlices;
use yuv::{BufferStoreMut, YuvConversionMode, YuvPlanarImageMut, YuvRange, YuvStandardMatrix};

use super::{Frame, VideoError};

/// The smallest picture side OpenH264 encodes.
pub(super) const MIN_SIZE: u32 = 16;

/// OpenH264's largest picture: 3840x2160, either way round.
const MAX_LONG_SIDE: u32 = 3840;
const MAX_SHORT_SIDE: u32 = 2160;

/// The matrix and range of the conversion (also signalled in the stream).
pub(super) const MATRIX: YuvStandardMatrix = YuvStandardMatrix::Bt709;
pub(super) const RANGE: YuvRange = YuvRange::Limited;

/// How a frame size maps to the encoded size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Geometry {
    /// The frame's size.
    pub(super) width: u32,
    /// The frame's size.
    pub(super) height: u32,
    /// The size the frame is converted at: the frame's own, or smaller if
    /// it must be scaled down.
    pub(super) scaled_width: u32,
    /// See `scaled_width`.
    pub(super) scaled_height: u32,
    /// The encoded size: `scaled_*` padded to even and at least [`MIN_SIZE`].
    pub(super) coded_width: u32,
    /// See `coded_width`.
    pub(super) coded_height: u32,
}

impl Geometry {
    pub(super) fn new(width: u32, height: u32) -> Geometry {
        let (long, short) = (width.max(height), width.min(height));
        let (scaled_width, scaled_height) = if long > MAX_LONG_SIDE || short > MAX_SHORT_SIDE {
            // Scale by the largest factor that fits both sides, rounding down
            // to even sizes so that no padding pushes them over the limit.
            let factor = (f64::from(MAX_LONG_SIDE) / f64::from(long)).min(f64::from(MAX_SHORT_SIDE) / f64::from(short));
            let side = |n: u32| ((f64::from(n) * factor) as u32 & !1).max(2);
            (side(width), side(height))
        } else {
            (width, height)
        };
        let coded = |n: u32| (n + (n & 1)).max(MIN_SIZE);
        Geometry {
            width,
            height,
            scaled_width,
            scaled_height,
            coded_width: coded(scaled_width),
            coded_height: coded(scaled_height),
        }
    }

    pub(super) fn is_scaled(&self) -> bool {
        (self.scaled_width, self.scaled_height) != (self.width, self.height)
    }
}

/// A YUV 4:2:0 picture of the coded size, reused frame after frame.
pub(super) struct Picture {
    geometry: Geometry,
    y: Vec<u8>,
    u: Vec<u8>,
    v: Vec<u8>,
    /// The scaled frame, when scaling is needed.
    scaled: Vec<u32>,
}

impl Picture {
    pub(super) fn new(geometry: Geometry) -> Picture {
        let (w, h) = (geometry.coded_width as usize, geometry.coded_height as usize);
        Picture { geometry, y: vec![0; w * h], u: vec![128; w * h / 4], v: vec![128; w * h / 4], scaled: Vec::new() }
    }

    pub(super) fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The planes, as the encoder takes them.
    pub(super) fn slices(&self) -> YUVSlices<'_> {
        let (w, h) = (self.geometry.coded_width as usize, self.geometry.coded_height as usize);
        YUVSlices::new((&self.y, &self.u, &self.v), (w, h), (w, w / 2, w / 2))
    }

    /// Converts `frame` (of this picture's geometry) into the planes.
    pub(super) fn fill(&mut self, frame: &Frame) -> Result<(), VideoError> {
        let g = self.geometry;
        debug_assert_eq!((frame.width(), frame.height()), (g.width, g.height));
        if g.is_scaled() {
            let mut scaled = std::mem::take(&mut self.scaled);
            scale_bilinear(frame, g.scaled_width, g.scaled_height, &mut scaled);
            let result = self.convert(&scaled, g.scaled_width as usize);
            self.scaled = scaled;
            result
        } else {
            self.convert(frame.pixels(), frame.stride())
        }
    }

    /// Converts `scaled_width x scaled_height` pixels, `stride` apart, then
    /// pads by repeating the last column and row.
    fn convert(&mut self, pixels: &[u32], stride: usize) -> Result<(), VideoError> {
        let g = self.geometry;
        let (w, h) = (g.scaled_width as usize, g.scaled_height as usize);
        let cw = g.coded_width as usize;
        let (chroma_w, chroma_h) = (w.div_ceil(2), h.div_ceil(2));
        // The converter wants whole rows (`stride * h` pixels) and planes of
        // exactly `h` rows.
        let compact;
        let (pixels, stride) = if pixels.len() >= stride * h {
            (&pixels[..stride * h], stride)
        } else {
            compact = pixels.chunks(stride).take(h).flat_map(|row| &row[..w]).copied().collect::<Vec<u32>>();
            (compact.as_slice(), w)
        };
        let bgra = bgra_bytes(pixels);
        let mut image = YuvPlanarImageMut {
            y_plane: BufferStoreMut::Borrowed(&mut self.y[..cw * h]),
            y_stride: cw as u32,
            u_plane: BufferStoreMut::Borrowed(&mut self.u[..cw / 2 * chroma_h]),
            u_stride: (cw / 2) as u32,
            v_plane: BufferStoreMut::Borrowed(&mut self.v[..cw / 2 * chroma_h]),
            v_stride: (cw / 2) as u32,
            width: w as u32,
            height: h as u32,
        };
        yuv::bgra_to_yuv420(&mut image, &bgra, (stride * 4) as u32, RANGE, MATRIX, YuvConversionMode::Balanced)
            .map_err(|error| VideoError::Convert(error.to_string()))?;
        pad(&mut self.y, cw, w, h);
        pad(&mut self.u, cw / 2, chroma_w, chroma_h);
        pad(&mut self.v, cw / 2, chroma_w, chroma_h);
        Ok(())
    }
}

/// The pixels as B, G, R, A bytes (their memory order on little-endian
/// machines; swapped into a copy elsewhere).
fn bgra_bytes(pixels: &[u32]) -> std::borrow::Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        std::borrow::Cow::Borrowed(bytemuck::cast_slice(pixels))
    } else {
        std::borrow::Cow::Owned(pixels.iter().flat_map(|p| p.to_le_bytes()).collect())
    }
}

/// Fills a plane of `stride` columns beyond its `w x h` content: each row's
/// tail repeats its last sample, the rows below repeat the last row.
fn pad(plane: &mut [u8], stride: usize, w: usize, h: usize) {
    if w < stride {
        for row in plane.chunks_exact_mut(stride).take(h) {
            let last = row[w - 1];
            row[w..].fill(last);
        }
    }
    let rows = plane.len() / stride;
    if h < rows {
        let (content, below) = plane.split_at_mut(h * stride);
        let last = &content[(h - 1) * stride..];
        for row in below.chunks_exact_mut(stride) {
            row.copy_from_slice(last);
        }
    }
}

/// Scales `frame` to `dw x dh` (bilinear, 8-bit weights) into `out`.
fn scale_bilinear(frame: &Frame, dw: u32, dh: u32, out: &mut Vec<u32>) {
    let (sw, sh, stride) = (frame.width() as usize, frame.height() as usize, frame.stride());
    let (dw, dh) = (dw as usize, dh as usize);
    let src = frame.pixels();
    // Source position of each destination column and row: index and weight
    // of the next sample (0..=256), pixel centres aligned.
    let taps = |dst: usize, src_len: usize| -> Vec<(usize, usize, u32)> {
        (0..dst)
            .map(|i| {
                let pos = ((i as f64 + 0.5) * src_len as f64 / dst as f64 - 0.5).max(0.0);
                let i0 = (pos as usize).min(src_len - 1);
                let i1 = (i0 + 1).min(src_len - 1);
                (i0, i1, (((pos - i0 as f64) * 256.0) as u32).min(256))
            })
            .collect()
    };
    let xs = taps(dw, sw);
    let ys = taps(dh, sh);
    out.clear();
    out.reserve(dw * dh);
    for &(y0, y1, fy) in &ys {
        let row0 = &src[y0 * stride..y0 * stride + sw];
        let row1 = &src[y1 * stride..y1 * stride + sw];
        out.extend(xs.iter().map(|&(x0, x1, fx)| {
            let top = lerp(row0[x0], row0[x1], fx);
            let bottom = lerp(row1[x0], row1[x1], fx);
            lerp(top, bottom, fy)
        }));
    }
}

/// `a + (b - a) * f / 256` for each 8-bit channel of xRGB (alpha dropped).
fn lerp(a: u32, b: u32, f: u32) -> u32 {
    let g = 256 - f;
    let rb = (((a & 0x00ff_00ff) * g + (b & 0x00ff_00ff) * f) >> 8) & 0x00ff_00ff;
    let gg = (((a & 0x0000_ff00) * g + (b & 0x0000_ff00) * f) >> 8) & 0x0000_ff00;
    0xff00_0000 | rb | gg
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn geometry_pads_odd_and_tiny_sizes() {
        let g = Geometry::new(641, 481);
        assert_eq!((g.scaled_width, g.scaled_height, g.coded_width, g.coded_height), (641, 481, 642, 482));
        let g = Geometry::new(1, 3);
        assert_eq!((g.coded_width, g.coded_height), (16, 16));
        let g = Geometry::new(3840, 2160);
        assert!(!g.is_scaled());
        let g = Geometry::new(2160, 3840);
        assert!(!g.is_scaled());
    }

    #[test]
    fn geometry_scales_what_exceeds_the_encoder() {
        let g = Geometry::new(4096, 2160);
        assert_eq!((g.coded_width, g.coded_height), (3840, 2024));
        let g = Geometry::new(2160, 4096);
        assert_eq!((g.coded_width, g.coded_height), (2024, 3840));
        let g = Geometry::new(3000, 3000);
        assert_eq!((g.coded_width, g.coded_height), (2160, 2160));
    }

    #[test]
    fn padding_repeats_the_last_column_and_row() {
        // 3x3 picture: a white column at x = 2 and a red row at y = 2.
        let mut pixels = vec![0xff00_0000u32; 9];
        for y in 0..3 {
            pixels[y * 3 + 2] = 0xffff_ffff;
        }
        for x in 0..3 {
            pixels[6 + x] = 0xffff_0000;
        }
        let frame = Frame::new(Duration::ZERO, 3, 3, Arc::new(pixels)).unwrap();
        let mut picture = Picture::new(Geometry::new(3, 3));
        picture.fill(&frame).unwrap();
        let w = 16;
        // Limited range: black 16, white 235.
        assert_eq!(picture.y[0], 16);
        assert_eq!(picture.y[2], 235);
        assert!(picture.y[3..w].iter().all(|&y| y == 235), "{:?}", &picture.y[..w]);
        let red_y = picture.y[2 * w];
        assert!(picture.y[3 * w..].chunks(w).all(|row| row[0] == red_y), "rows below repeat the last");
    }

    #[test]
    fn conversion_respects_the_stride() {
        // 2x2 pixels in rows of 5: the padding pixels are never read.
        let mut pixels = vec![0xff00_ff00u32; 10];
        pixels[0] = 0xffff_ffff;
        let frame = Frame::with_stride(Duration::ZERO, 2, 2, 5, Arc::new(pixels)).unwrap();
        let mut picture = Picture::new(Geometry::new(2, 2));
        picture.fill(&frame).unwrap();
        assert_eq!(picture.y[0], 235);
        assert_eq!(picture.y[1], picture.y[16]);
        assert_ne!(picture.y[1], 235);
    }

    #[test]
    fn a_short_last_row_is_converted_too() {
        // Rows 4 apart, the last one only as long as the width.
        let pixels = vec![0xffff_ffff, 0xffff_ffff, 0, 0, 0xff00_0000, 0xff00_0000];
        let frame = Frame::with_stride(Duration::ZERO, 2, 2, 4, Arc::new(pixels)).unwrap();
        let mut picture = Picture::new(Geometry::new(2, 2));
        picture.fill(&frame).unwrap();
        assert_eq!(&picture.y[..2], [235, 235]);
        assert_eq!(&picture.y[16..18], [16, 16]);
    }

    #[test]
    fn scaling_keeps_flat_areas_and_edges_in_place() {
        // Left half black, right half white, scaled from 40 to 20 columns.
        let pixels: Vec<u32> = (0..40 * 4).map(|i| if i % 40 < 20 { 0xff00_0000 } else { 0xffff_ffff }).collect();
        let frame = Frame::new(Duration::ZERO, 40, 4, Arc::new(pixels)).unwrap();
        let mut out = Vec::new();
        scale_bilinear(&frame, 20, 2, &mut out);
        assert_eq!(out.len(), 40);
        assert_eq!(out[0], 0xff00_0000);
        assert_eq!(out[8], 0xff00_0000);
        assert_eq!(out[11], 0xffff_ffff);
        assert_eq!(out[19], 0xffff_ffff);
        assert_eq!(lerp(0xff00_0000, 0xffff_ffff, 128), 0xff7f_7f7f);
    }
}

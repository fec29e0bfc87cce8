//! JPEG decoding as spice-gtk gets it from libjpeg-turbo, bit for bit.
//!
//! spice-gtk decodes `SPICE_IMAGE_TYPE_JPEG` and `JPEG_ALPHA` with
//! libjpeg at its defaults (spice-gtk `src/decode-jpeg.c`: the accurate
//! integer IDCT `JDCT_ISLOW` and fancy, triangle-filter chroma
//! upsampling), and MJPEG stream frames with the fast integer IDCT and
//! replicated chroma (`src/channel-display-mjpeg.c`: `JDCT_IFAST`,
//! `do_fancy_upsampling = FALSE`). This module reproduces those two
//! pipelines for what SPICE servers send (baseline and extended sequential
//! Huffman JPEG, 8-bit samples, one scan, 1 or 3 components, any integral
//! sampling factors, restart intervals), following the libjpeg-turbo
//! sources stage by stage: `jdhuff.c` (entropy decoding), `jidctint.c` and
//! `jidctfst.c` with `jddctmgr.c` (IDCT), `jdsample.c` and `jdmerge.c`
//! (upsampling), `jdcolor.c` (YCbCr to RGB) and `jdmainct.c` (edge rows).
//! Anything else (progressive, arithmetic coding, 12-bit, several scans,
//! CMYK) goes to a general decoder (zune-jpeg, `general.rs`), close to
//! libjpeg but not equal.
//!
//! ```text
//! SOI FFD8 | (APPn FFEn | COM FFFE | DQT FFDB | DHT FFC4 | DRI FFDD) len u16 BE, body
//!          | SOF0/SOF1 FFC0/FFC1 len, P u8 (8), Y u16, X u16, Nf u8, Nf x (C u8, HV u8, Tq u8)
//!          | SOS FFDA len, Ns u8, Ns x (C u8, TdTa u8), Ss u8, Se u8, AhAl u8, entropy data
//!          | (RSTm FFD0-FFD7 between restart intervals) | EOI FFD9
//! ```
//! (ITU-T T.81 B.2; all marker segment integers big-endian.)
//!
//! Peer data never panics the decoder: sizes are bounded by the caller's
//! limits before any allocation, and corrupt entropy data is decoded the
//! way libjpeg does (bad codes give 0, missing data reads as zero bits).

mod color;
mod general;
mod huffman;
mod idct;
#[cfg(test)]
mod tests;

use thiserror::Error;

use huffman::{BitReader, HuffmanTable};

/// Which inverse DCT to run (libjpeg's `J_DCT_METHOD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idct {
    /// `JDCT_ISLOW`: accurate integer (`jidctint.c`), libjpeg's default.
    IntegerSlow,
    /// `JDCT_IFAST`: fast integer AA&N (`jidctfst.c`).
    IntegerFast,
}

/// How to decode: libjpeg's `dct_method` and `do_fancy_upsampling`, plus
/// the largest picture the caller accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    /// The inverse DCT.
    pub idct: Idct,
    /// Triangle-filter chroma upsampling (`h2v1_fancy_upsample`,
    /// `h2v2_fancy_upsample`, `h1v2_fancy_upsample`); otherwise chroma
    /// samples are replicated (`jdmerge.c`, `int_upsample`).
    pub fancy_upsampling: bool,
    /// Widest picture accepted, in pixels.
    pub max_width: u32,
    /// Tallest picture accepted, in pixels.
    pub max_height: u32,
}

impl DecodeOptions {
    /// What spice-gtk uses for JPEG images (`decode-jpeg.c`: libjpeg's
    /// defaults), bounded to `max_width` x `max_height`.
    pub fn spice_gtk_image(max_width: u32, max_height: u32) -> Self {
        Self { idct: Idct::IntegerSlow, fancy_upsampling: true, max_width, max_height }
    }

    /// What spice-gtk uses for MJPEG stream frames
    /// (`channel-display-mjpeg.c`: `JDCT_IFAST`, no fancy upsampling),
    /// bounded to `max_width` x `max_height`.
    pub fn spice_gtk_mjpeg(max_width: u32, max_height: u32) -> Self {
        Self { idct: Idct::IntegerFast, fancy_upsampling: false, max_width, max_height }
    }
}

/// A decoded picture: `width * height` RGB triplets, top-down rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 3` bytes, R G B per pixel.
    pub rgb: Vec<u8>,
}

/// Why a JPEG stream could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum JpegError {
    /// The stream ended inside a marker segment (or before a frame).
    #[error("JPEG data ends early")]
    Truncated,
    /// A marker or segment that breaks T.81 (bad length, unknown
    /// component, table index out of range, no SOI).
    #[error("malformed JPEG: {0}")]
    Malformed(&'static str),
    /// A Huffman table that cannot be a prefix code (`jdhuff.c`
    /// `JERR_BAD_HUFF_TABLE`).
    #[error("bad Huffman table")]
    BadHuffmanTable,
    /// A picture of zero size or larger than the caller's bound.
    #[error("JPEG picture {width}x{height} out of bounds")]
    BadSize {
        /// Width from the frame header.
        width: u32,
        /// Height from the frame header.
        height: u32,
    },
    /// A valid JPEG this decoder does not reproduce (progressive,
    /// arithmetic, 12-bit, several scans, CMYK, fractional sampling).
    #[error("unsupported JPEG: {0}")]
    Unsupported(&'static str),
    /// What the general decoder said of a JPEG this decoder does not
    /// reproduce.
    #[error("JPEG (general decoder): {0}")]
    General(String),
}

/// Decodes a whole JPEG stream to RGB as libjpeg-turbo would with
/// `options`; JPEG kinds outside what this module reproduces are decoded
/// by the general decoder instead.
///
/// # Errors
/// [`JpegError`] for streams that are malformed or too large for
/// `options`' bounds, or that neither decoder reads.
pub fn decode(data: &[u8], options: &DecodeOptions) -> Result<RgbImage, JpegError> {
    match decode_exact(data, options) {
        Err(JpegError::Unsupported(_)) => general::decode(data, options),
        other => other,
    }
}

/// [`decode`] without the general decoder: [`JpegError::Unsupported`] for
/// what libjpeg-turbo's output is not reproduced for.
///
/// # Errors
/// [`JpegError`] for streams that are malformed, too large for `options`'
/// bounds, or outside what this decoder reproduces.
pub fn decode_exact(data: &[u8], options: &DecodeOptions) -> Result<RgbImage, JpegError> {
    let mut p = Parser { data, pos: 0, qt: [None; 4], dc: Default::default(), ac: Default::default(), restart: 0 };
    let (frame, scan_start) = p.headers(options)?;
    let planes = p.scan(&frame, scan_start, options.idct)?;
    Ok(color::to_rgb(&frame, &planes, options.fancy_upsampling))
}

/// One component of the frame header.
#[derive(Debug, Clone, Copy)]
struct Component {
    id: u8,
    h: usize,
    v: usize,
    tq: usize,
    /// Huffman table indices from the scan header.
    td: usize,
    ta: usize,
}

/// The frame (SOF) with what the scan needs derived from it.
#[derive(Debug, Clone)]
struct Frame {
    width: usize,
    height: usize,
    components: Vec<Component>,
    h_max: usize,
    v_max: usize,
    /// Colour transform: YCbCr to RGB (libjpeg's default for 3
    /// components) or none (Adobe transform 0, or component ids 'R' 'G' 'B').
    ycbcr: bool,
    /// Quantisation tables in natural (row-major) order, per component.
    quant: Vec<[u16; 64]>,
}

impl Frame {
    fn mcus_x(&self) -> usize {
        self.width.div_ceil(8 * self.h_max)
    }
    fn mcus_y(&self) -> usize {
        self.height.div_ceil(8 * self.v_max)
    }
}

/// One component's samples after the IDCT: whole blocks, padded to whole
/// MCUs; `width` and `height` are libjpeg's `downsampled_width` and
/// `downsampled_height` (the samples that belong to the picture).
#[derive(Debug, Clone)]
struct Plane {
    stride: usize,
    width: usize,
    height: usize,
    samples: Vec<u8>,
}

struct Parser<'a> {
    data: &'a [u8],
    pos: usize,
    qt: [Option<[u16; 64]>; 4],
    dc: [Option<HuffmanTable>; 4],
    ac: [Option<HuffmanTable>; 4],
    restart: usize,
}

/// Zigzag order: `ZIGZAG[k]` is the natural index of the k-th coefficient
/// (T.81 figure A.6; libjpeg `jpeg_natural_order`).
const ZIGZAG: [usize; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21,
    28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54,
    47, 55, 62, 63,
];

impl Parser<'_> {
    fn byte(&mut self) -> Result<u8, JpegError> {
        let b = *self.data.get(self.pos).ok_or(JpegError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, JpegError> {
        Ok(u16::from(self.byte()?) << 8 | u16::from(self.byte()?))
    }

    /// The body of a marker segment (after its length field).
    fn segment(&mut self) -> Result<&[u8], JpegError> {
        let len = usize::from(self.u16()?);
        let body_len = len.checked_sub(2).ok_or(JpegError::Malformed("segment length under 2"))?;
        let end = self.pos.checked_add(body_len).filter(|&e| e <= self.data.len()).ok_or(JpegError::Truncated)?;
        let body = &self.data[self.pos..end];
        self.pos = end;
        Ok(body)
    }

    /// The next marker code, skipping fill bytes (0xFF runs) as libjpeg's
    /// `next_marker` does, and any garbage before them.
    fn marker(&mut self) -> Result<u8, JpegError> {
        loop {
            if self.byte()? != 0xff {
                continue;
            }
            let mut m = self.byte()?;
            while m == 0xff {
                m = self.byte()?;
            }
            if m != 0 {
                return Ok(m);
            }
        }
    }

    /// Reads SOI through SOS; returns the frame (with the scan's table
    /// choices) and the offset of the entropy-coded data.
    fn headers(&mut self, options: &DecodeOptions) -> Result<(Frame, usize), JpegError> {
        if self.data.get(..2) != Some(&[0xff, 0xd8]) {
            return Err(JpegError::Malformed("no SOI"));
        }
        self.pos = 2;
        let mut frame: Option<Frame> = None;
        let mut adobe_transform: Option<u8> = None;
        let mut jfif = false;
        loop {
            match self.marker()? {
                0xc0 | 0xc1 => {
                    if frame.is_some() {
                        return Err(JpegError::Malformed("two frame headers"));
                    }
                    frame = Some(self.frame(options)?);
                }
                0xc2 => return Err(JpegError::Unsupported("progressive")),
                0xc3 | 0xc5..=0xc7 | 0xc9..=0xcb | 0xcd..=0xcf => {
                    return Err(JpegError::Unsupported("lossless, hierarchical or arithmetic coding"));
                }
                0xc4 => self.dht()?,
                0xdb => self.dqt()?,
                0xdd => {
                    let body = self.segment()?;
                    let [a, b] = body else { return Err(JpegError::Malformed("DRI length")) };
                    self.restart = usize::from(*a) << 8 | usize::from(*b);
                }
                0xe0 => {
                    jfif |= self.segment()?.starts_with(b"JFIF\0");
                }
                0xee => {
                    let body = self.segment()?;
                    if body.len() >= 12 && body.starts_with(b"Adobe") {
                        adobe_transform = Some(body[11]);
                    }
                }
                0xda => {
                    let mut f = frame.ok_or(JpegError::Malformed("SOS before SOF"))?;
                    self.sos(&mut f)?;
                    f.ycbcr = f.components.len() == 3 && color_is_ycbcr(&f, jfif, adobe_transform);
                    return Ok((f, self.pos));
                }
                0xd9 => return Err(JpegError::Truncated),
                0xd0..=0xd7 | 0x01 => {}
                0xd8 => return Err(JpegError::Malformed("SOI inside the stream")),
                _ => {
                    self.segment()?;
                }
            }
        }
    }

    fn frame(&mut self, options: &DecodeOptions) -> Result<Frame, JpegError> {
        let body = self.segment()?;
        let [p, y0, y1, x0, x1, nf, rest @ ..] = body else { return Err(JpegError::Malformed("SOF length")) };
        if *p != 8 {
            return Err(JpegError::Unsupported("samples other than 8 bits"));
        }
        let (height, width) = (u32::from(*y0) << 8 | u32::from(*y1), u32::from(*x0) << 8 | u32::from(*x1));
        if width == 0 || height == 0 || width > options.max_width || height > options.max_height {
            return Err(JpegError::BadSize { width, height });
        }
        let nf = usize::from(*nf);
        if rest.len() != nf * 3 {
            return Err(JpegError::Malformed("SOF length"));
        }
        if nf != 1 && nf != 3 {
            return Err(JpegError::Unsupported("component count other than 1 or 3"));
        }
        let mut components = Vec::with_capacity(nf);
        for c in rest.chunks_exact(3) {
            let (h, v, tq) = (usize::from(c[1] >> 4), usize::from(c[1] & 15), usize::from(c[2]));
            if !(1..=4).contains(&h) || !(1..=4).contains(&v) || tq > 3 {
                return Err(JpegError::Malformed("sampling factor or table index"));
            }
            components.push(Component { id: c[0], h, v, tq, td: 0, ta: 0 });
        }
        if nf == 1 {
            // A single-component frame has one block per MCU, whatever its
            // factors say (T.81 A.2.2; libjpeg `jdinput.c`).
            components[0].h = 1;
            components[0].v = 1;
        }
        let h_max = components.iter().map(|c| c.h).max().unwrap_or(1);
        let v_max = components.iter().map(|c| c.v).max().unwrap_or(1);
        if components.iter().any(|c| h_max % c.h != 0 || v_max % c.v != 0) {
            return Err(JpegError::Unsupported("fractional sampling"));
        }
        Ok(Frame {
            width: width as usize,
            height: height as usize,
            components,
            h_max,
            v_max,
            ycbcr: false,
            quant: Vec::new(),
        })
    }

    fn dqt(&mut self) -> Result<(), JpegError> {
        let body = self.segment()?.to_vec();
        let mut r = &body[..];
        while let [pq_tq, rest @ ..] = r {
            let (pq, tq) = (pq_tq >> 4, usize::from(pq_tq & 15));
            let n = if pq == 0 { 64 } else { 128 };
            if tq > 3 || pq > 1 || rest.len() < n {
                return Err(JpegError::Malformed("DQT"));
            }
            let mut table = [0u16; 64];
            for (k, &natural) in ZIGZAG.iter().enumerate() {
                table[natural] =
                    if pq == 0 { u16::from(rest[k]) } else { u16::from(rest[2 * k]) << 8 | u16::from(rest[2 * k + 1]) };
            }
            self.qt[tq] = Some(table);
            r = &rest[n..];
        }
        Ok(())
    }

    fn dht(&mut self) -> Result<(), JpegError> {
        let body = self.segment()?.to_vec();
        let mut r = &body[..];
        while let [tc_th, rest @ ..] = r {
            let (tc, th) = (tc_th >> 4, usize::from(tc_th & 15));
            if tc > 1 || th > 3 || rest.len() < 16 {
                return Err(JpegError::Malformed("DHT"));
            }
            let mut counts = [0u8; 16];
            counts.copy_from_slice(&rest[..16]);
            let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
            if total > 256 || rest.len() < 16 + total {
                return Err(JpegError::BadHuffmanTable);
            }
            let table = HuffmanTable::new(&counts, &rest[16..16 + total], tc == 0)?;
            if tc == 0 {
                self.dc[th] = Some(table);
            } else {
                self.ac[th] = Some(table);
            }
            r = &rest[16 + total..];
        }
        Ok(())
    }

    fn sos(&mut self, frame: &mut Frame) -> Result<(), JpegError> {
        let body = self.segment()?;
        let [ns, rest @ ..] = body else { return Err(JpegError::Malformed("SOS length")) };
        let ns = usize::from(*ns);
        if rest.len() != ns * 2 + 3 {
            return Err(JpegError::Malformed("SOS length"));
        }
        if ns != frame.components.len() {
            return Err(JpegError::Unsupported("several scans"));
        }
        for (i, sel) in rest[..ns * 2].chunks_exact(2).enumerate() {
            // Scan components must follow the frame's order (T.81 B.2.3).
            let c = &mut frame.components[i];
            if c.id != sel[0] {
                return Err(JpegError::Malformed("scan component order"));
            }
            let (td, ta) = (usize::from(sel[1] >> 4), usize::from(sel[1] & 15));
            if td > 3 || ta > 3 {
                return Err(JpegError::Malformed("Huffman table index"));
            }
            c.td = td;
            c.ta = ta;
        }
        if rest[ns * 2..] != [0, 63, 0] {
            return Err(JpegError::Unsupported("spectral selection in a sequential scan"));
        }
        let mut quant = Vec::with_capacity(ns);
        for c in &frame.components {
            quant.push(self.qt[c.tq].ok_or(JpegError::Malformed("quantisation table not defined"))?);
        }
        frame.quant = quant;
        // Motion-JPEG frames may leave the tables out: libjpeg-turbo then
        // uses T.81 K.3's (`jstdhuff.c`).
        for c in &frame.components {
            if self.dc[c.td].is_none() {
                self.dc[c.td] = Some(HuffmanTable::standard(c.td != 0, true));
            }
            if self.ac[c.ta].is_none() {
                self.ac[c.ta] = Some(HuffmanTable::standard(c.ta != 0, false));
            }
        }
        Ok(())
    }

    /// Decodes the entropy-coded data of the single scan into one sample
    /// plane per component.
    fn scan(&mut self, frame: &Frame, start: usize, idct: Idct) -> Result<Vec<Plane>, JpegError> {
        let (mx, my) = (frame.mcus_x(), frame.mcus_y());
        let mut planes = Vec::with_capacity(frame.components.len());
        for c in &frame.components {
            let stride = mx * c.h * 8;
            let rows = my * c.v * 8;
            planes.push(Plane {
                stride,
                width: (frame.width * c.h).div_ceil(frame.h_max),
                height: (frame.height * c.v).div_ceil(frame.v_max),
                samples: vec![0; stride * rows],
            });
        }
        let tables: Vec<(&HuffmanTable, &HuffmanTable)> = frame
            .components
            .iter()
            .map(|c| {
                Ok((
                    self.dc[c.td].as_ref().ok_or(JpegError::BadHuffmanTable)?,
                    self.ac[c.ta].as_ref().ok_or(JpegError::BadHuffmanTable)?,
                ))
            })
            .collect::<Result<_, JpegError>>()?;
        let multipliers: Vec<idct::Multipliers> = frame.quant.iter().map(|q| idct::Multipliers::new(q, idct)).collect();
        let mut bits = BitReader::new(self.data, start);
        let mut pred = vec![0i32; frame.components.len()];
        let mut block = [0i16; 64];
        let mut mcus_left = self.restart;
        for mcu_y in 0..my {
            for mcu_x in 0..mx {
                if self.restart != 0 {
                    if mcus_left == 0 {
                        bits.restart();
                        pred.iter_mut().for_each(|p| *p = 0);
                        mcus_left = self.restart;
                    }
                    mcus_left -= 1;
                }
                for (ci, c) in frame.components.iter().enumerate() {
                    let (dc, ac) = tables[ci];
                    for by in 0..c.v {
                        for bx in 0..c.h {
                            block.fill(0);
                            huffman::decode_block(&mut bits, dc, ac, &mut pred[ci], &mut block);
                            let plane = &mut planes[ci];
                            let x = (mcu_x * c.h + bx) * 8;
                            let y = (mcu_y * c.v + by) * 8;
                            let at = y * plane.stride + x;
                            multipliers[ci].inverse(&block, &mut plane.samples[at..], plane.stride);
                        }
                    }
                }
            }
        }
        Ok(planes)
    }
}

/// libjpeg's choice of colour space for a 3-component frame
/// (`jdapimin.c` `default_decompress_parms`): JFIF means YCbCr; else an
/// Adobe marker's transform flag decides; else component ids 'R' 'G' 'B'
/// mean RGB; anything else is taken as YCbCr.
fn color_is_ycbcr(frame: &Frame, jfif: bool, adobe_transform: Option<u8>) -> bool {
    if jfif {
        return true;
    }
    if let Some(t) = adobe_transform {
        return t != 0;
    }
    let ids: Vec<u8> = frame.components.iter().map(|c| c.id).collect();
    ids != b"RGB"
}

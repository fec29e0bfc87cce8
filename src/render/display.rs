//! Display-channel messages, parsed from a message body (sans-IO).
//!
//! Layouts follow spice-common `spice.proto` (channel `DisplayChannel`,
//! protocol 2), all little-endian. Pointers (`Image *`) are u32 offsets
//! from the start of the message body, 0 for none; the clip rectangles of a
//! `Clip` are inline.
//!
//! ```text
//! Rect            top i32, left i32, bottom i32, right i32
//! Clip            type u8 (0 NONE, 1 RECTS); RECTS: num_rects u32, Rect[num_rects]
//! DisplayBase     surface_id u32, box Rect, clip Clip
//! QMask           flags u8 (1 INVERS), pos Point (x i32, y i32), bitmap Image*
//! Brush           type u8 (0 NONE, 1 SOLID: color u32, 2 PATTERN: pat Image*, pos Point)
//! DRAW_COPY/BLEND base, src_bitmap Image*, src_area Rect, rop_descriptor u16, scale_mode u8, mask QMask
//! DRAW_OPAQUE     base, src_bitmap Image*, src_area Rect, brush Brush, rop_descriptor u16, scale_mode u8, mask
//! DRAW_FILL       base, brush Brush, rop_descriptor u16, mask QMask
//! DRAW_BLACKNESS/WHITENESS/INVERS  base, mask QMask
//! DRAW_TRANSPARENT base, src_bitmap Image*, src_area Rect, src_color u32, true_color u32
//! DRAW_ROP3       base, src_bitmap Image*, src_area Rect, brush Brush, rop3 u8, scale_mode u8, mask
//! DRAW_ALPHA_BLEND base, alpha_flags u8, alpha u8, src_bitmap Image*, src_area Rect
//! COPY_BITS       base, src_pos Point
//! SURFACE_CREATE  surface_id u32, width u32, height u32, format u32, flags u32 (1 PRIMARY)
//! SURFACE_DESTROY surface_id u32
//! INVAL_LIST      count u16, (type u8, id u64)[count]
//! INVAL_PALETTE   id u64
//! ```

use thiserror::Error;

use crate::limits::MAX_CLIP_RECTS;
use crate::wire::{Reader, WireError};

/// `SPICE_MSG_DISPLAY_*` message types (spice-protocol `enums.h`).
#[allow(missing_docs)]
pub mod msg {
    pub const MODE: u16 = 101;
    pub const MARK: u16 = 102;
    pub const RESET: u16 = 103;
    pub const COPY_BITS: u16 = 104;
    pub const INVAL_LIST: u16 = 105;
    pub const INVAL_ALL_PIXMAPS: u16 = 106;
    pub const INVAL_PALETTE: u16 = 107;
    pub const INVAL_ALL_PALETTES: u16 = 108;
    pub const STREAM_CREATE: u16 = 122;
    pub const STREAM_DATA: u16 = 123;
    pub const STREAM_CLIP: u16 = 124;
    pub const STREAM_DESTROY: u16 = 125;
    pub const STREAM_DESTROY_ALL: u16 = 126;
    pub const DRAW_FILL: u16 = 302;
    pub const DRAW_OPAQUE: u16 = 303;
    pub const DRAW_COPY: u16 = 304;
    pub const DRAW_BLEND: u16 = 305;
    pub const DRAW_BLACKNESS: u16 = 306;
    pub const DRAW_WHITENESS: u16 = 307;
    pub const DRAW_INVERS: u16 = 308;
    pub const DRAW_ROP3: u16 = 309;
    pub const DRAW_STROKE: u16 = 310;
    pub const DRAW_TEXT: u16 = 311;
    pub const DRAW_TRANSPARENT: u16 = 312;
    pub const DRAW_ALPHA_BLEND: u16 = 313;
    pub const SURFACE_CREATE: u16 = 314;
    pub const SURFACE_DESTROY: u16 = 315;
    pub const STREAM_DATA_SIZED: u16 = 316;
    pub const MONITORS_CONFIG: u16 = 317;
    pub const DRAW_COMPOSITE: u16 = 318;
    pub const STREAM_ACTIVATE_REPORT: u16 = 319;
    pub const GL_SCANOUT_UNIX: u16 = 320;
    pub const GL_DRAW: u16 = 321;
}

/// A display message that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DisplayError {
    /// The body ended early.
    #[error(transparent)]
    Short(#[from] WireError),
    /// More clip rectangles than [`MAX_CLIP_RECTS`].
    #[error("{0} clip rectangles, more than {MAX_CLIP_RECTS}")]
    TooManyRects(u32),
    /// A value outside its enumeration.
    #[error("invalid {what} {value}")]
    Invalid {
        /// Which field.
        what: &'static str,
        /// The value.
        value: u32,
    },
}

/// `SpiceRect`: exclusive right and bottom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rect {
    /// Top edge.
    pub top: i32,
    /// Left edge.
    pub left: i32,
    /// Bottom edge (exclusive).
    pub bottom: i32,
    /// Right edge (exclusive).
    pub right: i32,
}

impl Rect {
    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Self { top: r.i32()?, left: r.i32()?, bottom: r.i32()?, right: r.i32()? })
    }

    /// Width in pixels (0 when empty or inverted).
    pub fn width(&self) -> u32 {
        u32::try_from(i64::from(self.right) - i64::from(self.left)).unwrap_or(0)
    }

    /// Height in pixels (0 when empty or inverted).
    pub fn height(&self) -> u32 {
        u32::try_from(i64::from(self.bottom) - i64::from(self.top)).unwrap_or(0)
    }

    /// Whether the rectangle holds no pixel.
    pub fn is_empty(&self) -> bool {
        self.width() == 0 || self.height() == 0
    }

    /// The intersection (possibly empty).
    pub fn intersect(&self, o: &Rect) -> Rect {
        Rect {
            top: self.top.max(o.top),
            left: self.left.max(o.left),
            bottom: self.bottom.min(o.bottom),
            right: self.right.min(o.right),
        }
    }
}

/// `SpicePoint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Point {
    /// X.
    pub x: i32,
    /// Y.
    pub y: i32,
}

impl Point {
    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Self { x: r.i32()?, y: r.i32()? })
    }
}

/// `SpiceClip`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Clip {
    /// No clipping beyond the box.
    #[default]
    None,
    /// Drawing is limited to the union of these rectangles.
    Rects(Vec<Rect>),
}

impl Clip {
    fn read(r: &mut Reader<'_>) -> Result<Self, DisplayError> {
        match r.u8()? {
            0 => Ok(Self::None),
            1 => {
                let n = r.u32()?;
                if n > MAX_CLIP_RECTS {
                    return Err(DisplayError::TooManyRects(n));
                }
                let rects = (0..n).map(|_| Rect::read(r)).collect::<Result<_, _>>()?;
                Ok(Self::Rects(rects))
            }
            v => Err(DisplayError::Invalid { what: "clip type", value: u32::from(v) }),
        }
    }
}

/// `SpiceMsgDisplayBase`: target surface, bounding box, clip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayBase {
    /// Surface drawn on.
    pub surface_id: u32,
    /// Bounding box of the drawing.
    pub bbox: Rect,
    /// Clip within the box.
    pub clip: Clip,
}

impl DisplayBase {
    /// Reads a `SpiceMsgDisplayBase` (also the head of DRAW_COMPOSITE).
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DisplayError> {
        Ok(Self { surface_id: r.u32()?, bbox: Rect::read(r)?, clip: Clip::read(r)? })
    }
}

/// `SpiceQMask`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QMask {
    /// `SPICE_MASK_FLAGS_INVERS`.
    pub invers: bool,
    /// Offset of the mask in its image.
    pub pos: Point,
    /// Offset of the mask image in the body (0 = no mask).
    pub bitmap: u32,
}

impl QMask {
    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Self { invers: r.u8()? & 1 != 0, pos: Point::read(r)?, bitmap: r.u32()? })
    }
}

/// `SpiceBrush`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Brush {
    /// No brush.
    None,
    /// A solid colour (in the surface's pixel format).
    Solid(u32),
    /// A tiled image at an offset.
    Pattern {
        /// Offset of the pattern image in the body.
        image: u32,
        /// Pattern origin.
        pos: Point,
    },
}

impl Brush {
    fn read(r: &mut Reader<'_>) -> Result<Self, DisplayError> {
        match r.u8()? {
            0 => Ok(Self::None),
            1 => Ok(Self::Solid(r.u32()?)),
            2 => Ok(Self::Pattern { image: r.u32()?, pos: Point::read(r)? }),
            v => Err(DisplayError::Invalid { what: "brush type", value: u32::from(v) }),
        }
    }
}

/// The source part of DRAW_COPY, DRAW_BLEND and DRAW_OPAQUE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copy {
    /// Offset of the source `SpiceImage` in the body.
    pub src_bitmap: u32,
    /// Source rectangle within the image.
    pub src_area: Rect,
    /// Brush (DRAW_OPAQUE only).
    pub brush: Brush,
    /// `SpiceROPDescriptor` flags.
    pub rop_descriptor: u16,
    /// 0 interpolate, 1 nearest.
    pub scale_mode: u8,
    /// Mask.
    pub mask: QMask,
}

/// A parsed display-channel server message (the ones the renderer draws or
/// tracks; others are [`DisplayMessage::Other`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisplayMessage {
    /// `SPICE_MSG_DISPLAY_SURFACE_CREATE`.
    SurfaceCreate {
        /// Surface id (0 is the primary in practice).
        surface_id: u32,
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// `SPICE_SURFACE_FMT_*`.
        format: u32,
        /// `SPICE_SURFACE_FLAGS_*` (1 = primary).
        flags: u32,
    },
    /// `SPICE_MSG_DISPLAY_SURFACE_DESTROY`.
    SurfaceDestroy {
        /// Surface id.
        surface_id: u32,
    },
    /// DRAW_COPY (blend = false) or DRAW_BLEND (blend = true), or DRAW_OPAQUE.
    Copy {
        /// Which message.
        msg_type: u16,
        /// Target and clip.
        base: DisplayBase,
        /// Source and operation.
        copy: Copy,
    },
    /// `SPICE_MSG_DISPLAY_DRAW_TRANSPARENT`: copy, except source pixels of
    /// `true_color`.
    Transparent {
        /// Target and clip.
        base: DisplayBase,
        /// Offset of the source image in the body.
        src_bitmap: u32,
        /// Source rectangle.
        src_area: Rect,
        /// The transparent colour in 32-bit xRGB.
        true_color: u32,
    },
    /// `SPICE_MSG_DISPLAY_DRAW_ROP3`: a ternary raster operation of
    /// pattern (brush), source image and destination.
    Rop3 {
        /// Target and clip.
        base: DisplayBase,
        /// Offset of the source image in the body.
        src_bitmap: u32,
        /// Source rectangle.
        src_area: Rect,
        /// Brush (the pattern input).
        brush: Brush,
        /// The Windows ROP3 code.
        rop3: u8,
        /// 0 interpolate, 1 nearest.
        scale_mode: u8,
        /// Mask.
        mask: QMask,
    },
    /// `SPICE_MSG_DISPLAY_DRAW_ALPHA_BLEND`.
    AlphaBlend {
        /// Target and clip.
        base: DisplayBase,
        /// `SPICE_ALPHA_FLAGS_DEST_HAS_ALPHA` (1), `SRC_SURFACE_HAS_ALPHA` (2).
        alpha_flags: u8,
        /// Constant alpha applied to the source.
        alpha: u8,
        /// Offset of the source image in the body.
        src_bitmap: u32,
        /// Source rectangle.
        src_area: Rect,
    },
    /// `SPICE_MSG_DISPLAY_DRAW_FILL`.
    Fill {
        /// Target and clip.
        base: DisplayBase,
        /// Brush.
        brush: Brush,
        /// `SpiceROPDescriptor` flags.
        rop_descriptor: u16,
        /// Mask.
        mask: QMask,
    },
    /// DRAW_BLACKNESS, DRAW_WHITENESS, DRAW_INVERS.
    Solid {
        /// Which message.
        msg_type: u16,
        /// Target and clip.
        base: DisplayBase,
        /// Mask.
        mask: QMask,
    },
    /// `SPICE_MSG_DISPLAY_COPY_BITS`: copy within the surface from `src_pos`
    /// to the box.
    CopyBits {
        /// Target and clip.
        base: DisplayBase,
        /// Top-left of the source.
        src_pos: Point,
    },
    /// `SPICE_MSG_DISPLAY_INVAL_LIST`: image cache ids to drop.
    InvalList(Vec<u64>),
    /// `SPICE_MSG_DISPLAY_INVAL_ALL_PIXMAPS`.
    InvalAllPixmaps,
    /// `SPICE_MSG_DISPLAY_INVAL_PALETTE`.
    InvalPalette(u64),
    /// `SPICE_MSG_DISPLAY_INVAL_ALL_PALETTES`.
    InvalAllPalettes,
    /// `SPICE_MSG_DISPLAY_STREAM_CREATE`.
    StreamCreate {
        /// Surface drawn on.
        surface_id: u32,
        /// Stream id.
        id: u32,
        /// `SPICE_STREAM_FLAGS_TOP_DOWN` (1) or bottom-up frames.
        flags: u8,
        /// `SPICE_VIDEO_CODEC_TYPE_*`: MJPEG 1, VP8 2, H264 3, VP9 4, H265 5.
        codec: u8,
        /// Frame size as encoded.
        src_width: u32,
        /// Frame size as encoded.
        src_height: u32,
        /// Where frames are drawn.
        dest: Rect,
        /// Clip of the stream.
        clip: Clip,
    },
    /// `SPICE_MSG_DISPLAY_STREAM_DATA` / `_SIZED` (then with its own size
    /// and destination).
    StreamData {
        /// Stream id.
        id: u32,
        /// Multimedia time of the frame, ms.
        mm_time: u32,
        /// Frame size and destination for `STREAM_DATA_SIZED`.
        sized: Option<(u32, u32, Rect)>,
        /// Offset of the frame data in the body.
        data_at: usize,
        /// Its length.
        data_len: usize,
    },
    /// `SPICE_MSG_DISPLAY_STREAM_CLIP`.
    StreamClip {
        /// Stream id.
        id: u32,
        /// New clip.
        clip: Clip,
    },
    /// `SPICE_MSG_DISPLAY_STREAM_DESTROY`.
    StreamDestroy {
        /// Stream id.
        id: u32,
    },
    /// `SPICE_MSG_DISPLAY_STREAM_DESTROY_ALL`.
    StreamDestroyAll,
    /// `SPICE_MSG_DISPLAY_MARK`: the surface is complete (a frame boundary).
    Mark,
    /// `SPICE_MSG_DISPLAY_RESET`.
    Reset,
    /// Any other type, not drawn (yet).
    Other(u16),
}

/// Parses a server display message body of type `msg_type`.
///
/// # Errors
/// [`DisplayError`] for a short body or invalid values.
pub fn parse(msg_type: u16, body: &[u8]) -> Result<DisplayMessage, DisplayError> {
    let mut r = Reader::new(body);
    let m = match msg_type {
        msg::SURFACE_CREATE => DisplayMessage::SurfaceCreate {
            surface_id: r.u32()?,
            width: r.u32()?,
            height: r.u32()?,
            format: r.u32()?,
            flags: r.u32()?,
        },
        msg::SURFACE_DESTROY => DisplayMessage::SurfaceDestroy { surface_id: r.u32()? },
        msg::DRAW_COPY | msg::DRAW_BLEND | msg::DRAW_OPAQUE => {
            let base = DisplayBase::read(&mut r)?;
            let src_bitmap = r.u32()?;
            let src_area = Rect::read(&mut r)?;
            let brush = if msg_type == msg::DRAW_OPAQUE { Brush::read(&mut r)? } else { Brush::None };
            let rop_descriptor = r.u16()?;
            let scale_mode = r.u8()?;
            let mask = QMask::read(&mut r)?;
            DisplayMessage::Copy {
                msg_type,
                base,
                copy: Copy { src_bitmap, src_area, brush, rop_descriptor, scale_mode, mask },
            }
        }
        msg::DRAW_ROP3 => {
            let base = DisplayBase::read(&mut r)?;
            let src_bitmap = r.u32()?;
            let src_area = Rect::read(&mut r)?;
            let brush = Brush::read(&mut r)?;
            let rop3 = r.u8()?;
            let scale_mode = r.u8()?;
            let mask = QMask::read(&mut r)?;
            DisplayMessage::Rop3 { base, src_bitmap, src_area, brush, rop3, scale_mode, mask }
        }
        msg::DRAW_ALPHA_BLEND => {
            let base = DisplayBase::read(&mut r)?;
            let alpha_flags = r.u8()?;
            let alpha = r.u8()?;
            let src_bitmap = r.u32()?;
            let src_area = Rect::read(&mut r)?;
            DisplayMessage::AlphaBlend { base, alpha_flags, alpha, src_bitmap, src_area }
        }
        msg::DRAW_TRANSPARENT => {
            let base = DisplayBase::read(&mut r)?;
            let src_bitmap = r.u32()?;
            let src_area = Rect::read(&mut r)?;
            let _src_color = r.u32()?;
            let true_color = r.u32()?;
            DisplayMessage::Transparent { base, src_bitmap, src_area, true_color }
        }
        msg::DRAW_FILL => {
            let base = DisplayBase::read(&mut r)?;
            let brush = Brush::read(&mut r)?;
            let rop_descriptor = r.u16()?;
            let mask = QMask::read(&mut r)?;
            DisplayMessage::Fill { base, brush, rop_descriptor, mask }
        }
        msg::DRAW_BLACKNESS | msg::DRAW_WHITENESS | msg::DRAW_INVERS => {
            let base = DisplayBase::read(&mut r)?;
            DisplayMessage::Solid { msg_type, base, mask: QMask::read(&mut r)? }
        }
        msg::COPY_BITS => {
            let base = DisplayBase::read(&mut r)?;
            DisplayMessage::CopyBits { base, src_pos: Point::read(&mut r)? }
        }
        msg::INVAL_LIST => {
            let count = r.u16()?;
            let mut ids = Vec::with_capacity(usize::from(count).min(r.remaining() / 9));
            for _ in 0..count {
                let _resource_type = r.u8()?;
                ids.push(r.u64()?);
            }
            DisplayMessage::InvalList(ids)
        }
        msg::INVAL_ALL_PIXMAPS => DisplayMessage::InvalAllPixmaps,
        msg::INVAL_PALETTE => DisplayMessage::InvalPalette(r.u64()?),
        msg::INVAL_ALL_PALETTES => DisplayMessage::InvalAllPalettes,
        msg::STREAM_CREATE => {
            let surface_id = r.u32()?;
            let id = r.u32()?;
            let flags = r.u8()?;
            let codec = r.u8()?;
            let _stamp = r.u64()?;
            let _stream_width = r.u32()?;
            let _stream_height = r.u32()?;
            let src_width = r.u32()?;
            let src_height = r.u32()?;
            let dest = Rect::read(&mut r)?;
            let clip = Clip::read(&mut r)?;
            DisplayMessage::StreamCreate { surface_id, id, flags, codec, src_width, src_height, dest, clip }
        }
        msg::STREAM_DATA | msg::STREAM_DATA_SIZED => {
            let id = r.u32()?;
            let mm_time = r.u32()?;
            let sized =
                if msg_type == msg::STREAM_DATA_SIZED { Some((r.u32()?, r.u32()?, Rect::read(&mut r)?)) } else { None };
            let size = r.u32()?;
            let data_at = r.position();
            let data_len =
                usize::try_from(size).map_err(|_| DisplayError::Invalid { what: "data size", value: size })?;
            r.take(data_len)?;
            DisplayMessage::StreamData { id, mm_time, sized, data_at, data_len }
        }
        msg::STREAM_CLIP => {
            let id = r.u32()?;
            DisplayMessage::StreamClip { id, clip: Clip::read(&mut r)? }
        }
        msg::STREAM_DESTROY => DisplayMessage::StreamDestroy { id: r.u32()? },
        msg::STREAM_DESTROY_ALL => DisplayMessage::StreamDestroyAll,
        msg::MARK => DisplayMessage::Mark,
        msg::RESET => DisplayMessage::Reset,
        other => DisplayMessage::Other(other),
    };
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU_DISPLAY_S2C: &[u8] = include_bytes!("../../tests/fixtures/qemu-bios-display-s2c.bin");

    /// (type, body) of each mini-header message of a recorded stream.
    pub(crate) fn messages(stream: &[u8]) -> Vec<(u16, &[u8])> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos + 6 <= stream.len() {
            let ty = u16::from_le_bytes([stream[pos], stream[pos + 1]]);
            let size = u32::from_le_bytes(stream[pos + 2..pos + 6].try_into().unwrap()) as usize;
            out.push((ty, &stream[pos + 6..pos + 6 + size]));
            pos += 6 + size;
        }
        out
    }

    #[test]
    fn recorded_qemu_messages_parse() {
        let msgs = messages(QEMU_DISPLAY_S2C);
        let parsed: Vec<_> = msgs.iter().map(|(t, b)| parse(*t, b).unwrap()).collect();
        assert!(matches!(
            parsed[2],
            DisplayMessage::SurfaceCreate { surface_id: 0, width: 720, height: 400, format: 32, flags: 1 }
        ));
        let DisplayMessage::Copy { msg_type: msg::DRAW_COPY, base, copy } = &parsed[3] else {
            panic!("{:?}", parsed[3])
        };
        assert_eq!(base.surface_id, 0);
        assert_eq!((base.bbox.width(), base.bbox.height()), (720, 400));
        assert!(copy.src_bitmap > 0 && (copy.src_bitmap as usize) < msgs[3].1.len());
        assert_eq!(parsed[5], DisplayMessage::Mark);
    }

    #[test]
    fn truncated_and_hostile_bodies_are_errors() {
        let msgs = messages(QEMU_DISPLAY_S2C);
        let body = msgs[3].1;
        // DrawCopy without clip rects: 21 + 4 + 16 + 2 + 1 + 13 = 57 bytes.
        for cut in 0..57 {
            assert!(parse(msg::DRAW_COPY, &body[..cut]).is_err(), "cut {cut}");
        }
        let mut many = vec![0u8; 4 + 16];
        many.push(1);
        many.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse(msg::DRAW_FILL, &many), Err(DisplayError::TooManyRects(u32::MAX)));
        let mut bad_clip = vec![0u8; 20];
        bad_clip.push(7);
        assert!(matches!(parse(msg::DRAW_FILL, &bad_clip), Err(DisplayError::Invalid { .. })));
    }
}

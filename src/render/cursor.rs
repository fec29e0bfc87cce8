//! The mouse pointer: the cursor channel decoded the way spice-gtk decodes
//! it (`channel-cursor.c`), its position followed across the cursor,
//! inputs and main channels, and drawn over a copy of a display's picture.
//!
//! Wire layout (spice-common `spice.proto`, spice-protocol `enums.h`; all
//! little-endian, no padding):
//!
//! ```text
//! SPICE_MSG_CURSOR_INIT 101   position x i16, y i16 · trail_length u16 · trail_frequency u16 · visible u8 · SpiceCursor
//! SPICE_MSG_CURSOR_RESET 102  (empty)
//! SPICE_MSG_CURSOR_SET 103    position x i16, y i16 · visible u8 · SpiceCursor
//! SPICE_MSG_CURSOR_MOVE 104   position x i16, y i16
//! SPICE_MSG_CURSOR_HIDE 105   (empty)
//! SPICE_MSG_CURSOR_TRAIL 106  length u16 · frequency u16
//! SPICE_MSG_CURSOR_INVAL_ONE 107  id u64
//! SPICE_MSG_CURSOR_INVAL_ALL 108  (empty)
//! SpiceCursor        flags u16 (NONE 1, CACHE_ME 2, FROM_CACHE 4)
//!                    · SpiceCursorHeader unless NONE: unique u64, type u8, width u16, height u16,
//!                      hot_spot_x u16, hot_spot_y u16 (17 bytes)
//!                    · data: the rest of the message
//! ```
//!
//! A shape decodes to RGBA bytes with straight alpha, `width * 4` per row,
//! exactly as spice-gtk's `SpiceCursorShape` (`set_cursor()`), quirks
//! included: AND masks indexed linearly (no per-row padding), MONO through
//! `spice_mono_edge_highlight()` (spice-gtk `spice-util.c`), inverting
//! pixels of COLOR4/16/32 as a grey checkerboard, COLOR8 and COLOR24 (which
//! spice-gtk does not implement) fully transparent. Unlike spice-gtk, every
//! size is checked before anything is read or allocated.
//!
//! The position is the hot spot's, in display coordinates. In server mouse
//! mode (`SPICE_MOUSE_MODE_SERVER` 1) the server's SET and MOVE give it, on
//! display 0 (not INIT's, which QEMU leaves at (0, 0) and spice-gtk
//! ignores; spice-gtk also ignores SET's and keeps the last MOVE's, which
//! QEMU's qxl sets to the guest's pointer position too); in client mode (2, with a guest agent) the server does
//! not echo it, and the client's `SPICE_MSGC_INPUTS_MOUSE_POSITION` (x u32,
//! y u32, buttons u16, display_id u8) gives it. `SPICE_MSG_MAIN_INIT`
//! (current mode u32 at offset 12) and `SPICE_MSG_MAIN_MOUSE_MODE`
//! (supported u16, current u16) say which mode applies.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use thiserror::Error;

use super::canvas::Surface;
use crate::limits::{MAX_CURSOR_CACHE_BYTES, MAX_CURSOR_SIDE};

/// `SPICE_MSG_CURSOR_*` (spice-protocol `enums.h`).
pub const SPICE_MSG_CURSOR_INIT: u16 = 101;
/// `SPICE_MSG_CURSOR_RESET`.
pub const SPICE_MSG_CURSOR_RESET: u16 = 102;
/// `SPICE_MSG_CURSOR_SET`.
pub const SPICE_MSG_CURSOR_SET: u16 = 103;
/// `SPICE_MSG_CURSOR_MOVE`.
pub const SPICE_MSG_CURSOR_MOVE: u16 = 104;
/// `SPICE_MSG_CURSOR_HIDE`.
pub const SPICE_MSG_CURSOR_HIDE: u16 = 105;
/// `SPICE_MSG_CURSOR_TRAIL`.
pub const SPICE_MSG_CURSOR_TRAIL: u16 = 106;
/// `SPICE_MSG_CURSOR_INVAL_ONE`.
pub const SPICE_MSG_CURSOR_INVAL_ONE: u16 = 107;
/// `SPICE_MSG_CURSOR_INVAL_ALL`.
pub const SPICE_MSG_CURSOR_INVAL_ALL: u16 = 108;

/// `SPICE_CURSOR_FLAGS_NONE`: no cursor (hidden), no header.
pub const SPICE_CURSOR_FLAGS_NONE: u16 = 1;
/// `SPICE_CURSOR_FLAGS_CACHE_ME`: keep the shape under its `unique` id.
pub const SPICE_CURSOR_FLAGS_CACHE_ME: u16 = 2;
/// `SPICE_CURSOR_FLAGS_FROM_CACHE`: the shape is the cached one of `unique`.
pub const SPICE_CURSOR_FLAGS_FROM_CACHE: u16 = 4;

/// `SPICE_MSG_MAIN_INIT` and `SPICE_MSG_MAIN_MOUSE_MODE`.
const MAIN_INIT: u16 = 103;
const MAIN_MOUSE_MODE: u16 = 105;
/// `SPICE_MSGC_INPUTS_MOUSE_POSITION`.
const INPUTS_MOUSE_POSITION: u16 = 112;
/// `SPICE_MOUSE_MODE_SERVER` and `SPICE_MOUSE_MODE_CLIENT`.
pub const SPICE_MOUSE_MODE_SERVER: u16 = 1;
/// `SPICE_MOUSE_MODE_CLIENT`.
pub const SPICE_MOUSE_MODE_CLIENT: u16 = 2;

/// Distinct shapes listed in the report; later ones are only counted.
const MAX_REPORTED_SHAPES: usize = 64;
/// Mouse mode changes listed in the report.
const MAX_REPORTED_MODE_CHANGES: usize = 64;

/// `SPICE_CURSOR_TYPE_*` names, by value.
const TYPE_NAMES: [&str; 7] = ["ALPHA", "MONO", "COLOR4", "COLOR8", "COLOR16", "COLOR24", "COLOR32"];

/// The name of a `SPICE_CURSOR_TYPE_*` value.
pub fn type_name(cursor_type: u8) -> String {
    TYPE_NAMES.get(usize::from(cursor_type)).map_or_else(|| format!("type {cursor_type}"), |n| (*n).to_string())
}

/// A cursor message that cannot be followed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CursorError {
    /// Shorter than its fixed fields.
    #[error("cursor message {msg_type} of {len} bytes is truncated")]
    Truncated {
        /// Message type.
        msg_type: u16,
        /// Body length.
        len: usize,
    },
    /// Width or height 0 or over [`MAX_CURSOR_SIDE`].
    #[error("cursor of {width}x{height} pixels (1..={MAX_CURSOR_SIDE} per side)")]
    Size {
        /// Width.
        width: u16,
        /// Height.
        height: u16,
    },
    /// Less data than the type and size need.
    #[error("{cursor_type} cursor of {width}x{height} needs {needed} data bytes, has {have}")]
    Data {
        /// Type name.
        cursor_type: String,
        /// Width.
        width: u16,
        /// Height.
        height: u16,
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        have: usize,
    },
    /// `FROM_CACHE` for an id never cached (or invalidated).
    #[error("cursor {0:#x} is not in the cache")]
    CacheMiss(u64),
    /// Caching this shape would pass [`MAX_CURSOR_CACHE_BYTES`].
    #[error("cursor cache full ({MAX_CURSOR_CACHE_BYTES} bytes): {0:#x} not cached")]
    CacheFull(u64),
}

/// `SpiceCursorHeader`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorHeader {
    /// Cache id (0: never cached by spice-server).
    pub unique: u64,
    /// `SPICE_CURSOR_TYPE_*`.
    pub cursor_type: u8,
    /// Width in pixels.
    pub width: u16,
    /// Height in pixels.
    pub height: u16,
    /// Hot spot column.
    pub hot_spot_x: u16,
    /// Hot spot row.
    pub hot_spot_y: u16,
}

/// A `SpiceCursor` as sent: flags, header unless `NONE`, and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor<'a> {
    /// `SPICE_CURSOR_FLAGS_*`.
    pub flags: u16,
    /// Absent with `SPICE_CURSOR_FLAGS_NONE`.
    pub header: Option<CursorHeader>,
    /// The shape's bytes (empty with `FROM_CACHE`).
    pub data: &'a [u8],
}

/// A server message of the cursor channel.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CursorMessage<'a> {
    /// `SPICE_MSG_CURSOR_INIT`.
    Init {
        /// Hot spot position.
        position: (i16, i16),
        /// Trail length (spice-gtk ignores trails).
        trail_length: u16,
        /// Trail frequency.
        trail_frequency: u16,
        /// Whether the pointer shows.
        visible: bool,
        /// The shape.
        cursor: Cursor<'a>,
    },
    /// `SPICE_MSG_CURSOR_RESET`.
    Reset,
    /// `SPICE_MSG_CURSOR_SET`.
    Set {
        /// Hot spot position.
        position: (i16, i16),
        /// Whether the pointer shows.
        visible: bool,
        /// The shape.
        cursor: Cursor<'a>,
    },
    /// `SPICE_MSG_CURSOR_MOVE`.
    Move {
        /// Hot spot position.
        position: (i16, i16),
    },
    /// `SPICE_MSG_CURSOR_HIDE`.
    Hide,
    /// `SPICE_MSG_CURSOR_TRAIL`.
    Trail {
        /// Trail length.
        length: u16,
        /// Trail frequency.
        frequency: u16,
    },
    /// `SPICE_MSG_CURSOR_INVAL_ONE`.
    InvalOne {
        /// Cache id.
        id: u64,
    },
    /// `SPICE_MSG_CURSOR_INVAL_ALL`.
    InvalAll,
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    b.get(o..o.checked_add(2)?).map(|s| u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    b.get(o..o.checked_add(4)?).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    let s = b.get(o..o.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

fn point_at(b: &[u8], o: usize) -> Option<(i16, i16)> {
    Some((u16_at(b, o)? as i16, u16_at(b, o + 2)? as i16))
}

fn cursor_at(b: &[u8], o: usize) -> Option<Cursor<'_>> {
    let flags = u16_at(b, o)?;
    if flags & SPICE_CURSOR_FLAGS_NONE != 0 {
        return Some(Cursor { flags, header: None, data: &[] });
    }
    let h = o + 2;
    let header = CursorHeader {
        unique: u64_at(b, h)?,
        cursor_type: *b.get(h + 8)?,
        width: u16_at(b, h + 9)?,
        height: u16_at(b, h + 11)?,
        hot_spot_x: u16_at(b, h + 13)?,
        hot_spot_y: u16_at(b, h + 15)?,
    };
    Some(Cursor { flags, header: Some(header), data: b.get(h + 17..)? })
}

/// Parses server message `msg_type` of the cursor channel; `None` for a
/// type that is not a cursor message.
///
/// # Errors
/// [`CursorError::Truncated`] when the body is shorter than its fields.
pub fn parse(msg_type: u16, body: &[u8]) -> Result<Option<CursorMessage<'_>>, CursorError> {
    let short = || CursorError::Truncated { msg_type, len: body.len() };
    let m = match msg_type {
        SPICE_MSG_CURSOR_INIT => CursorMessage::Init {
            position: point_at(body, 0).ok_or_else(short)?,
            trail_length: u16_at(body, 4).ok_or_else(short)?,
            trail_frequency: u16_at(body, 6).ok_or_else(short)?,
            visible: *body.get(8).ok_or_else(short)? != 0,
            cursor: cursor_at(body, 9).ok_or_else(short)?,
        },
        SPICE_MSG_CURSOR_RESET => CursorMessage::Reset,
        SPICE_MSG_CURSOR_SET => CursorMessage::Set {
            position: point_at(body, 0).ok_or_else(short)?,
            visible: *body.get(4).ok_or_else(short)? != 0,
            cursor: cursor_at(body, 5).ok_or_else(short)?,
        },
        SPICE_MSG_CURSOR_MOVE => CursorMessage::Move { position: point_at(body, 0).ok_or_else(short)? },
        SPICE_MSG_CURSOR_HIDE => CursorMessage::Hide,
        SPICE_MSG_CURSOR_TRAIL => CursorMessage::Trail {
            length: u16_at(body, 0).ok_or_else(short)?,
            frequency: u16_at(body, 2).ok_or_else(short)?,
        },
        SPICE_MSG_CURSOR_INVAL_ONE => CursorMessage::InvalOne { id: u64_at(body, 0).ok_or_else(short)? },
        SPICE_MSG_CURSOR_INVAL_ALL => CursorMessage::InvalAll,
        _ => return Ok(None),
    };
    Ok(Some(m))
}

/// A decoded pointer shape, as spice-gtk's `SpiceCursorShape`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorShape {
    /// `SPICE_CURSOR_TYPE_*` it was sent as.
    pub cursor_type: u8,
    /// Width in pixels.
    pub width: u16,
    /// Height in pixels.
    pub height: u16,
    /// Hot spot column (clamped to the width, as spice-gtk does).
    pub hot_spot_x: u16,
    /// Hot spot row (clamped to the height).
    pub hot_spot_y: u16,
    /// Pixels as R, G, B, A bytes (straight alpha), `width * 4` per row.
    pub rgba: Vec<u8>,
}

/// spice-gtk's stand-in for pixels that invert the screen: a checkerboard
/// of translucent greys, as `0xAARRGGBB`.
fn invert_stand_in(x: usize, y: usize) -> u32 {
    if (x ^ y) & 1 != 0 { 0xC030_3030 } else { 0x3050_5050 }
}

/// Bit `i` of the AND mask at `mask`, most significant bit first, indexed
/// linearly over the whole cursor (spice-gtk `get_pix_mask`).
fn mask_bit(mask: &[u8], i: usize) -> bool {
    mask.get(i >> 3).is_some_and(|b| b & (0x80 >> (i & 7)) != 0)
}

/// Decodes the shape of `header` from `data`.
///
/// # Errors
/// [`CursorError::Size`] for a side of 0 or over [`MAX_CURSOR_SIDE`],
/// [`CursorError::Data`] when `data` is shorter than the type needs.
pub fn decode(header: &CursorHeader, data: &[u8]) -> Result<CursorShape, CursorError> {
    let (w, h) = (usize::from(header.width), usize::from(header.height));
    if w == 0 || h == 0 || w > MAX_CURSOR_SIDE as usize || h > MAX_CURSOR_SIDE as usize {
        return Err(CursorError::Size { width: header.width, height: header.height });
    }
    // w, h <= MAX_CURSOR_SIDE: none of these sizes overflows.
    let n = w * h;
    let mask_len = n.div_ceil(8);
    let needed = match header.cursor_type {
        0 => 4 * n,
        1 => 2 * w.div_ceil(8) * h,
        2 => w.div_ceil(2) * h + 64 + mask_len,
        4 => 2 * n + mask_len,
        6 => 4 * n + mask_len,
        // COLOR8, COLOR24, unknown: spice-gtk shows nothing; no data needed.
        _ => 0,
    };
    if data.len() < needed {
        return Err(CursorError::Data {
            cursor_type: type_name(header.cursor_type),
            width: header.width,
            height: header.height,
            needed,
            have: data.len(),
        });
    }
    let mut argb = vec![0u32; n];
    match header.cursor_type {
        0 => {
            for (px, b) in argb.iter_mut().zip(data.chunks_exact(4)) {
                *px = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        1 => return Ok(shape(header, mono(data, w, h))),
        2 => {
            let pix = w.div_ceil(2) * h;
            let palette = &data[pix..pix + 64];
            let mask = &data[pix + 64..];
            for (i, px) in argb.iter_mut().enumerate() {
                let b = data[i >> 1];
                let idx = usize::from(if i & 1 != 0 { b & 0x0f } else { b >> 4 });
                let p = u32::from_le_bytes([
                    palette[4 * idx],
                    palette[4 * idx + 1],
                    palette[4 * idx + 2],
                    palette[4 * idx + 3],
                ]);
                let m = mask_bit(mask, i);
                *px = if m && p == 0x00ff_ffff {
                    invert_stand_in(i % w, i / w)
                } else {
                    p | if m { 0 } else { 0xff00_0000 }
                };
            }
        }
        4 => {
            let mask = &data[2 * n..];
            for (i, px) in argb.iter_mut().enumerate() {
                let p = u32::from(u16::from_le_bytes([data[2 * i], data[2 * i + 1]]));
                let m = mask_bit(mask, i);
                *px = if m && p == 0x7fff {
                    invert_stand_in(i % w, i / w)
                } else {
                    ((p & 0x1f) << 3) | ((p & 0x3e0) << 6) | ((p & 0x7c00) << 9) | if m { 0 } else { 0xff00_0000 }
                };
            }
        }
        6 => {
            let mask = &data[4 * n..];
            for (i, px) in argb.iter_mut().enumerate() {
                let p = u32::from_le_bytes([data[4 * i], data[4 * i + 1], data[4 * i + 2], data[4 * i + 3]]);
                let m = mask_bit(mask, i);
                *px = if m && p == 0x00ff_ffff {
                    invert_stand_in(i % w, i / w)
                } else {
                    p | if m { 0 } else { 0xff00_0000 }
                };
            }
        }
        _ => {}
    }
    let mut rgba = Vec::with_capacity(4 * n);
    for p in argb {
        let [b, g, r, a] = p.to_le_bytes();
        rgba.extend_from_slice(&[r, g, b, a]);
    }
    Ok(shape(header, rgba))
}

fn shape(header: &CursorHeader, rgba: Vec<u8>) -> CursorShape {
    CursorShape {
        cursor_type: header.cursor_type,
        width: header.width,
        height: header.height,
        hot_spot_x: header.hot_spot_x.min(header.width),
        hot_spot_y: header.hot_spot_y.min(header.height),
        rgba,
    }
}

/// MONO: AND plane then XOR plane, rows padded to whole bytes, most
/// significant bit first; converted as spice-gtk's
/// `spice_mono_edge_highlight()`: AND 1 XOR 0 transparent, XOR 1 white,
/// AND 0 XOR 0 black, and when the whole AND plane is ones (a cursor drawn
/// only by inverting), black outlines around the XOR pixels.
fn mono(data: &[u8], w: usize, h: usize) -> Vec<u8> {
    let bpl = w.div_ceil(8);
    let (and, xor) = data.split_at(bpl * h);
    let bit = |plane: &[u8], x: usize, y: usize| plane[y * bpl + x / 8] & (0x80 >> (x % 8)) != 0;
    let and_ones = and[..bpl * h].iter().all(|&b| b == 0xff);
    let is_edge = |x: usize, y: usize| {
        if x == 0 || y == 0 || x == w - 1 || y == h - 1 || bit(xor, x, y) {
            return false;
        }
        (y - 1..=y + 1).any(|yy| (x - 1..=x + 1).any(|xx| bit(xor, xx, yy)))
    };
    let mut out = Vec::with_capacity(4 * w * h);
    for y in 0..h {
        for x in 0..w {
            let px: [u8; 4] = if and_ones && is_edge(x, y) {
                [0, 0, 0, 255]
            } else {
                match (bit(and, x, y), bit(xor, x, y)) {
                    (true, false) => [0, 0, 0, 0],
                    (_, true) => [255, 255, 255, 255],
                    (false, false) => [0, 0, 0, 255],
                }
            };
            out.extend_from_slice(&px);
        }
    }
    out
}

/// A shape in the report: what it was and how often it was set.
#[derive(Debug, Clone, Serialize)]
pub struct ShapeReport {
    /// `ALPHA`, `MONO`, ...
    #[serde(rename = "type")]
    pub cursor_type: String,
    /// Width and height in pixels.
    pub size: (u16, u16),
    /// Hot spot (x, y).
    pub hot_spot: (u16, u16),
    /// How many SETs (or INITs) showed it, from the cache or not.
    pub uses: u64,
}

/// What `session.json` says about the pointer (on the cursor channel).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CursorReport {
    /// Distinct shapes, in the order first seen (at most 64 listed).
    pub shapes: Vec<ShapeReport>,
    /// Uses of shapes past the first 64 distinct ones (not listed).
    pub shapes_not_listed: u64,
    /// Cursor messages by name.
    pub messages: BTreeMap<String, u64>,
    /// Mouse mode changes: (seconds since the first cursor or main
    /// message, `server` or `client`), at most 64.
    pub mouse_modes: Vec<(f64, &'static str)>,
    /// Seconds the pointer was visible with a known position.
    pub visible_seconds: f64,
    /// Messages that could not be followed, with why (at most 16 listed).
    pub errors: Vec<String>,
    /// Errors in all.
    pub error_count: u64,
}

/// Where the pointer is and what it looks like, followed from the cursor,
/// inputs and main channels of one session.
#[derive(Debug, Default)]
pub struct Pointer {
    cache: HashMap<u64, Arc<CursorShape>>,
    cache_bytes: usize,
    shape: Option<Arc<CursorShape>>,
    /// Hot spot position per mode: the server's (display 0), the client's
    /// (x, y, display id).
    server_position: Option<(i32, i32)>,
    client_position: Option<(i32, i32, u8)>,
    visible: bool,
    mouse_mode: Option<u16>,
    /// Fingerprint of each distinct shape -> index in `report.shapes`.
    seen: HashMap<u64, usize>,
    first_at: Option<Duration>,
    visible_since: Option<Duration>,
    report: CursorReport,
}

/// Errors listed in the report; later ones are only counted.
const MAX_REPORTED_ERRORS: usize = 16;

impl Pointer {
    /// A pointer nothing is known about.
    pub fn new() -> Self {
        Self::default()
    }

    /// Where and what the pointer is on display `display_id`: the top-left
    /// corner of the shape (position minus hot spot) and the shape, when it
    /// is visible there.
    pub fn overlay(&self, display_id: u8) -> Option<(i32, i32, &CursorShape)> {
        let shape = self.shape.as_deref()?;
        if !self.visible {
            return None;
        }
        let (x, y) = match self.mouse_mode.unwrap_or(SPICE_MOUSE_MODE_SERVER) {
            SPICE_MOUSE_MODE_CLIENT => {
                let (x, y, d) = self.client_position?;
                if d != display_id {
                    return None;
                }
                (x, y)
            }
            _ if display_id == 0 => self.server_position?,
            _ => return None,
        };
        Some((x - i32::from(shape.hot_spot_x), y - i32::from(shape.hot_spot_y), shape))
    }

    /// Draws the pointer over `surface` (display `display_id`'s picture),
    /// blending its straight alpha over the pixels; returns whether it drew.
    pub fn draw(&self, display_id: u8, surface: &mut Surface) -> bool {
        let Some((left, top, shape)) = self.overlay(display_id) else { return false };
        if surface.bits_per_pixel() != 32 {
            return false;
        }
        let (sw, sh) = (i64::from(surface.width), i64::from(surface.height));
        let mut drew = false;
        for cy in 0..i64::from(shape.height) {
            let y = i64::from(top) + cy;
            if y < 0 || y >= sh {
                continue;
            }
            for cx in 0..i64::from(shape.width) {
                let x = i64::from(left) + cx;
                if x < 0 || x >= sw {
                    continue;
                }
                // Both in range: the indexes fit.
                let o = 4 * (cy as usize * usize::from(shape.width) + cx as usize);
                let [r, g, b, a] = [shape.rgba[o], shape.rgba[o + 1], shape.rgba[o + 2], shape.rgba[o + 3]];
                if a == 0 {
                    continue;
                }
                let i = y as usize * surface.width as usize + x as usize;
                let d = surface.data[i];
                let blend = |s: u8, d: u32| -> u32 {
                    (u32::from(s) * u32::from(a) + (d & 0xff) * u32::from(255 - a) + 127) / 255
                };
                let (dr, dg, db) = (d >> 16, d >> 8, d);
                surface.data[i] = (d & 0xff00_0000) | (blend(r, dr) << 16) | (blend(g, dg) << 8) | blend(b, db);
                drew = true;
            }
        }
        drew
    }

    /// Whether a message of `channel_type` sent in `dir` of `msg_type` is
    /// one the pointer follows (it may change the overlay).
    pub fn follows(channel_type: crate::protocol::ChannelType, dir: crate::protocol::Direction, msg_type: u16) -> bool {
        use crate::protocol::{ChannelType, Direction};
        match (channel_type, dir) {
            (ChannelType::CURSOR, Direction::ServerToClient) => true,
            (ChannelType::MAIN, Direction::ServerToClient) => matches!(msg_type, MAIN_INIT | MAIN_MOUSE_MODE),
            (ChannelType::INPUTS, Direction::ClientToServer) => msg_type == INPUTS_MOUSE_POSITION,
            _ => false,
        }
    }

    /// Follows a server message of the cursor channel at `at` (any
    /// monotonic clock); returns whether the overlay may have changed.
    pub fn cursor_message(&mut self, at: Duration, msg_type: u16, body: &[u8]) -> bool {
        self.first_at.get_or_insert(at);
        let m = match parse(msg_type, body) {
            Ok(Some(m)) => m,
            Ok(None) => return false,
            Err(e) => {
                self.error(&e);
                return false;
            }
        };
        let name = match &m {
            CursorMessage::Init { .. } => "SPICE_MSG_CURSOR_INIT",
            CursorMessage::Reset => "SPICE_MSG_CURSOR_RESET",
            CursorMessage::Set { .. } => "SPICE_MSG_CURSOR_SET",
            CursorMessage::Move { .. } => "SPICE_MSG_CURSOR_MOVE",
            CursorMessage::Hide => "SPICE_MSG_CURSOR_HIDE",
            CursorMessage::Trail { .. } => "SPICE_MSG_CURSOR_TRAIL",
            CursorMessage::InvalOne { .. } => "SPICE_MSG_CURSOR_INVAL_ONE",
            CursorMessage::InvalAll => "SPICE_MSG_CURSOR_INVAL_ALL",
        };
        *self.report.messages.entry(name.to_string()).or_insert(0) += 1;
        match m {
            CursorMessage::Init { visible, cursor, .. } => {
                self.clear_cache();
                // INIT's position is not the pointer's: QEMU sends (0, 0)
                // there while the guest's pointer is elsewhere, and
                // spice-gtk ignores it. The next SET or MOVE gives it.
                self.server_position = None;
                self.set_shape(&cursor);
                self.set_visible(at, visible && self.shape.is_some());
            }
            CursorMessage::Set { position, visible, cursor } => {
                self.server_position = Some((i32::from(position.0), i32::from(position.1)));
                self.set_shape(&cursor);
                self.set_visible(at, visible && self.shape.is_some());
            }
            CursorMessage::Move { position } => {
                self.server_position = Some((i32::from(position.0), i32::from(position.1)));
                // spice-server shows the pointer with a move.
                self.set_visible(at, self.shape.is_some());
            }
            CursorMessage::Hide => self.set_visible(at, false),
            CursorMessage::Reset => {
                self.clear_cache();
                self.shape = None;
                self.set_visible(at, false);
            }
            CursorMessage::Trail { .. } => return false,
            CursorMessage::InvalOne { id } => {
                if let Some(s) = self.cache.remove(&id) {
                    self.cache_bytes -= s.rgba.len();
                }
                return false;
            }
            CursorMessage::InvalAll => {
                self.clear_cache();
                return false;
            }
        }
        true
    }

    /// Follows a server message of the main channel (mouse mode).
    pub fn main_message(&mut self, at: Duration, msg_type: u16, body: &[u8]) -> bool {
        let mode = match msg_type {
            MAIN_INIT => u32_at(body, 12).and_then(|m| u16::try_from(m).ok()),
            MAIN_MOUSE_MODE => u16_at(body, 2),
            _ => None,
        };
        let Some(mode) = mode else { return false };
        self.first_at.get_or_insert(at);
        if self.mouse_mode == Some(mode) {
            return false;
        }
        self.mouse_mode = Some(mode);
        if self.report.mouse_modes.len() < MAX_REPORTED_MODE_CHANGES {
            let t = at.saturating_sub(self.first_at.unwrap_or(at)).as_secs_f64();
            let name = if mode == SPICE_MOUSE_MODE_CLIENT { "client" } else { "server" };
            self.report.mouse_modes.push((t, name));
        }
        true
    }

    /// Follows a client message of the inputs channel (the pointer
    /// position in client mouse mode).
    pub fn inputs_message(&mut self, msg_type: u16, body: &[u8]) -> bool {
        if msg_type != INPUTS_MOUSE_POSITION {
            return false;
        }
        let (Some(x), Some(y), Some(&d)) = (u32_at(body, 0), u32_at(body, 4), body.get(10)) else { return false };
        // Positions past i32 are not on any display.
        let (Ok(x), Ok(y)) = (i32::try_from(x), i32::try_from(y)) else { return false };
        self.client_position = Some((x, y, d));
        self.mouse_mode == Some(SPICE_MOUSE_MODE_CLIENT)
    }

    /// The report, closing the visible time at `at`.
    pub fn report(&mut self, at: Duration) -> CursorReport {
        if let Some(since) = self.visible_since.take() {
            self.report.visible_seconds += at.saturating_sub(since).as_secs_f64();
            self.visible_since = Some(at);
        }
        self.report.clone()
    }

    fn set_visible(&mut self, at: Duration, visible: bool) {
        self.visible = visible;
        match (visible, self.visible_since) {
            (true, None) => self.visible_since = Some(at),
            (false, Some(since)) => {
                self.report.visible_seconds += at.saturating_sub(since).as_secs_f64();
                self.visible_since = None;
            }
            _ => {}
        }
    }

    fn clear_cache(&mut self) {
        self.cache.clear();
        self.cache_bytes = 0;
    }

    fn error(&mut self, e: &CursorError) {
        self.report.error_count += 1;
        if self.report.errors.len() < MAX_REPORTED_ERRORS {
            self.report.errors.push(e.to_string());
        }
        tracing::debug!(error = %e, "cursor message not followed");
    }

    /// Takes the shape of a SET or INIT (spice-gtk `set_cursor()`): none
    /// with `NONE`, the cached one with `FROM_CACHE` (none on a miss), else
    /// decoded and cached with `CACHE_ME`.
    fn set_shape(&mut self, cursor: &Cursor<'_>) {
        let Some(header) = cursor.header else {
            self.shape = None;
            return;
        };
        let shape = if cursor.flags & SPICE_CURSOR_FLAGS_FROM_CACHE != 0 {
            match self.cache.get(&header.unique) {
                Some(s) => s.clone(),
                None => {
                    self.error(&CursorError::CacheMiss(header.unique));
                    self.shape = None;
                    return;
                }
            }
        } else {
            match decode(&header, cursor.data) {
                Ok(s) => {
                    let s = Arc::new(s);
                    if cursor.flags & SPICE_CURSOR_FLAGS_CACHE_ME != 0 {
                        self.cache_shape(header.unique, &s);
                    }
                    s
                }
                Err(e) => {
                    self.error(&e);
                    self.shape = None;
                    return;
                }
            }
        };
        self.count_shape(&shape);
        self.shape = Some(shape);
    }

    fn cache_shape(&mut self, id: u64, shape: &Arc<CursorShape>) {
        if let Some(old) = self.cache.remove(&id) {
            self.cache_bytes -= old.rgba.len();
        }
        if self.cache_bytes + shape.rgba.len() > MAX_CURSOR_CACHE_BYTES {
            self.error(&CursorError::CacheFull(id));
            return;
        }
        self.cache_bytes += shape.rgba.len();
        self.cache.insert(id, shape.clone());
    }

    fn count_shape(&mut self, s: &CursorShape) {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (s.cursor_type, s.width, s.height, s.hot_spot_x, s.hot_spot_y, &s.rgba).hash(&mut h);
        let key = h.finish();
        if let Some(&i) = self.seen.get(&key) {
            self.report.shapes[i].uses += 1;
        } else if self.report.shapes.len() < MAX_REPORTED_SHAPES {
            self.seen.insert(key, self.report.shapes.len());
            self.report.shapes.push(ShapeReport {
                cursor_type: type_name(s.cursor_type),
                size: (s.width, s.height),
                hot_spot: (s.hot_spot_x, s.hot_spot_y),
                uses: 1,
            });
        } else {
            self.report.shapes_not_listed += 1;
        }
    }
}

/// `surface`, or a copy of it in `scratch` with the pointer drawn over it
/// when `pointer` shows on display `display_id`.
pub fn with_pointer<'a>(
    surface: &'a Surface,
    pointer: Option<&Pointer>,
    display_id: u8,
    scratch: &'a mut Option<Surface>,
) -> &'a Surface {
    let Some(pointer) = pointer.filter(|p| p.overlay(display_id).is_some()) else { return surface };
    let reuse = scratch
        .as_ref()
        .is_some_and(|s| s.width == surface.width && s.height == surface.height && s.format == surface.format);
    if !reuse {
        *scratch = Some(surface.clone());
    }
    let Some(copy) = scratch.as_mut() else { return surface };
    if reuse {
        copy.data.copy_from_slice(&surface.data);
    }
    pointer.draw(display_id, copy);
    copy
}

#[cfg(test)]
mod tests;

//! `SPICE_MSG_DISPLAY_DRAW_STROKE`: parsing, and drawing thin lines, solid or
//! dashed, with a colour or a tiled pattern, the way spice-gtk's software
//! canvas does (spice-common `canvas_base.c` `canvas_draw_stroke`, `lines.c`
//! `miZeroLine`; dashes in [`super::dash`]).
//!
//! Wire layout (`spice.proto` `draw_stroke`, little-endian):
//! `DisplayBase` (surface id, box, clip), then `path` (u32 offset from the
//! body start, non-null), `LineAttr` (flags u8; when `STYLED`: style_nseg u8
//! and a u32 offset to `style_nseg` 28.4 values), `Brush`, fore_mode u16,
//! back_mode u16. At the path offset: num_segments u32, then the segments
//! back to back (`@ptr_array` is only a pointer array in memory): flags u8,
//! count u32, `count` points of two 28.4 `i32`.
//!
//! spice-gtk always strokes with line width 0 (X11 zero-width lines) and the
//! `CapNotLast` cap: each polyline leg is drawn without its end pixel.
//! Points are rounded from 28.4 to integers first (`fix_to_int`: up only
//! when the fraction is above one half).

use thiserror::Error;

use super::canvas::{Rop, RopSource, Surface};
use super::dash::{DashList, DashedLine};
use super::display::{Brush, Clip, Point, Rect};
use super::image::Pixels;
use crate::limits::MAX_CLIP_RECTS;
use crate::wire::{Reader, WireError};

/// `SPICE_PATH_*` segment flags (spice-protocol `enums.h`).
#[allow(missing_docs)]
pub mod path_flags {
    pub const BEGIN: u8 = 1 << 0;
    pub const END: u8 = 1 << 1;
    pub const CLOSE: u8 = 1 << 3;
    pub const BEZIER: u8 = 1 << 4;
}

/// `SPICE_LINE_FLAGS_*` (spice-protocol `enums.h`).
#[allow(missing_docs)]
pub mod line_flags {
    pub const START_WITH_GAP: u8 = 1 << 2;
    pub const STYLED: u8 = 1 << 3;
}

/// Most points accepted in one path (all segments together).
pub const MAX_PATH_POINTS: usize = 65536;

/// Most points a path may grow to once its Bézier curves are flattened.
pub const MAX_FLAT_POINTS: usize = 1 << 20;

/// Deepest Bézier subdivision (spice-common has no bound; a degenerate curve
/// would recurse forever there).
const MAX_BEZIER_DEPTH: u32 = 24;

/// A stroke that could not be parsed or drawn.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum StrokeError {
    /// The body ended early.
    #[error(transparent)]
    Short(#[from] WireError),
    /// A count above its bound.
    #[error("{what}: {value} is more than allowed")]
    TooMany {
        /// Which count.
        what: &'static str,
        /// The value.
        value: u64,
    },
    /// A value outside its enumeration, or a bad offset.
    #[error("invalid {what} {value}")]
    Invalid {
        /// Which field.
        what: &'static str,
        /// The value.
        value: u32,
    },
    /// A well-formed stroke this renderer does not draw (yet).
    #[error("unsupported stroke: {0}")]
    Unsupported(&'static str),
}

/// A 28.4 fixed-point point (`SpicePointFix`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PointFix {
    /// X in 1/16 pixel.
    pub x: i32,
    /// Y in 1/16 pixel.
    pub y: i32,
}

/// One `SpicePathSeg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathSeg {
    /// `SPICE_PATH_*` bits.
    pub flags: u8,
    /// Points.
    pub points: Vec<PointFix>,
}

/// A parsed DRAW_STROKE body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stroke {
    /// Surface drawn on.
    pub surface_id: u32,
    /// Bounding box.
    pub bbox: Rect,
    /// Clip within the box.
    pub clip: Clip,
    /// Path segments.
    pub segments: Vec<PathSeg>,
    /// `SPICE_LINE_FLAGS_*`.
    pub line_flags: u8,
    /// Dash pattern in 28.4 (only with `STYLED`).
    pub style: Vec<i32>,
    /// Brush.
    pub brush: Brush,
    /// Foreground ROP descriptor.
    pub fore_mode: u16,
    /// Background ROP descriptor (unused by spice-gtk).
    pub back_mode: u16,
}

fn read_rect(r: &mut Reader<'_>) -> Result<Rect, WireError> {
    Ok(Rect { top: r.i32()?, left: r.i32()?, bottom: r.i32()?, right: r.i32()? })
}

fn read_clip(r: &mut Reader<'_>) -> Result<Clip, StrokeError> {
    match r.u8()? {
        0 => Ok(Clip::None),
        1 => {
            let n = r.u32()?;
            if n > MAX_CLIP_RECTS {
                return Err(StrokeError::TooMany { what: "clip rectangles", value: u64::from(n) });
            }
            let rects = (0..n).map(|_| read_rect(r)).collect::<Result<_, _>>()?;
            Ok(Clip::Rects(rects))
        }
        v => Err(StrokeError::Invalid { what: "clip type", value: u32::from(v) }),
    }
}

fn read_brush(r: &mut Reader<'_>) -> Result<Brush, StrokeError> {
    match r.u8()? {
        0 => Ok(Brush::None),
        1 => Ok(Brush::Solid(r.u32()?)),
        2 => Ok(Brush::Pattern { image: r.u32()?, pos: Point { x: r.i32()?, y: r.i32()? } }),
        v => Err(StrokeError::Invalid { what: "brush type", value: u32::from(v) }),
    }
}

/// A reader positioned at `offset` in `body`.
fn at<'a>(body: &'a [u8], offset: u32, what: &'static str) -> Result<Reader<'a>, StrokeError> {
    let off = offset as usize;
    if offset == 0 || off >= body.len() {
        return Err(StrokeError::Invalid { what, value: offset });
    }
    let mut r = Reader::new(body);
    r.take(off)?;
    Ok(r)
}

fn read_path(body: &[u8], offset: u32) -> Result<Vec<PathSeg>, StrokeError> {
    let mut r = at(body, offset, "path offset")?;
    let n = r.u32()?;
    // Each segment takes at least 5 bytes.
    if n as usize > MAX_PATH_POINTS || n as usize > r.remaining() / 5 {
        return Err(StrokeError::TooMany { what: "path segments", value: u64::from(n) });
    }
    let mut total = 0usize;
    let mut segments = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let flags = r.u8()?;
        let count = r.u32()?;
        total = total.saturating_add(count as usize);
        if total > MAX_PATH_POINTS {
            return Err(StrokeError::TooMany { what: "path points", value: total as u64 });
        }
        if count as usize > r.remaining() / 8 {
            return Err(WireError { need: count as usize * 8, have: r.remaining() }.into());
        }
        let points = (0..count).map(|_| Ok(PointFix { x: r.i32()?, y: r.i32()? })).collect::<Result<_, WireError>>()?;
        segments.push(PathSeg { flags, points });
    }
    Ok(segments)
}

/// Parses a DRAW_STROKE body.
///
/// # Errors
/// [`StrokeError`] for a short body, a bad offset or an excessive count.
pub fn parse_stroke(body: &[u8]) -> Result<Stroke, StrokeError> {
    let mut r = Reader::new(body);
    let surface_id = r.u32()?;
    let bbox = read_rect(&mut r)?;
    let clip = read_clip(&mut r)?;
    let path_at = r.u32()?;
    let line_flags = r.u8()?;
    let mut style = Vec::new();
    if line_flags & line_flags::STYLED != 0 {
        let nseg = r.u8()?;
        let style_at = r.u32()?;
        let mut s = at(body, style_at, "style offset")?;
        style = (0..nseg).map(|_| s.i32()).collect::<Result<_, _>>()?;
    }
    let brush = read_brush(&mut r)?;
    let fore_mode = r.u16()?;
    let back_mode = r.u16()?;
    let segments = read_path(body, path_at)?;
    Ok(Stroke { surface_id, bbox, clip, segments, line_flags, style, brush, fore_mode, back_mode })
}

/// 28.4 to integer as spice-common's `fix_to_int` (round half down).
pub fn fix_to_int(v: i32) -> i32 {
    (v >> 4) + i32::from(v & 0x0f > 8)
}

fn dot(x1: i64, y1: i64, x2: i64, y2: i64) -> i64 {
    x1.wrapping_mul(x2).wrapping_add(y1.wrapping_mul(y2)) >> 4
}

fn mid(a: i32, b: i32) -> i32 {
    // C computes (a + b) / 2 in int, truncating toward zero.
    ((i64::from(a) + i64::from(b)) / 2) as i32
}

fn midp(a: PointFix, b: PointFix) -> PointFix {
    PointFix { x: mid(a.x, b.x), y: mid(a.y, b.y) }
}

/// Flattens a cubic curve as `subdivide_bezier` does, appending integer points.
fn subdivide(out: &mut Vec<(i32, i32)>, p: [PointFix; 4], depth: u32) {
    let d = |a: PointFix, b: PointFix| (i64::from(b.x) - i64::from(a.x), i64::from(b.y) - i64::from(a.y));
    let (ax, ay) = d(p[0], p[1]);
    let (bx, by) = d(p[0], p[3]);
    let (cx, cy) = d(p[3], p[2]);
    let (ox, oy) = d(p[3], p[0]);
    let a2 = dot(ax, ay, ax, ay);
    let b2 = dot(bx, by, bx, by);
    let c2 = dot(cx, cy, cx, cy);
    let ab = dot(ax, ay, bx, by);
    let cb = dot(cx, cy, ox, oy);
    let h1 = a2.wrapping_mul(b2).wrapping_sub(ab.wrapping_mul(ab)) >> 3;
    let h2 = c2.wrapping_mul(b2).wrapping_sub(cb.wrapping_mul(cb)) >> 3;
    if out.len() >= MAX_FLAT_POINTS {
        return;
    }
    if (h1 < b2 && h2 < b2) || depth >= MAX_BEZIER_DEPTH {
        out.push((fix_to_int(p[3].x), fix_to_int(p[3].y)));
        return;
    }
    let p01 = midp(p[0], p[1]);
    let p12 = midp(p[1], p[2]);
    let p23 = midp(p[2], p[3]);
    let p012 = midp(p01, p12);
    let p123 = midp(p12, p23);
    let p0123 = midp(p012, p123);
    subdivide(out, [p[0], p01, p012, p0123], depth + 1);
    subdivide(out, [p0123, p123, p23, p[3]], depth + 1);
}

/// The integer polylines `canvas_draw_stroke` hands to the line code, in
/// order. Returns `false` as well when spice-common would stop early (a
/// Bézier segment whose point count is not a multiple of 3).
pub fn polylines(stroke: &Stroke) -> (Vec<Vec<(i32, i32)>>, bool) {
    let mut out = Vec::new();
    let mut cur: Vec<(i32, i32)> = Vec::new();
    let flush = |cur: &mut Vec<(i32, i32)>, out: &mut Vec<Vec<(i32, i32)>>| {
        if !cur.is_empty() {
            out.push(std::mem::take(cur));
        }
    };
    for seg in &stroke.segments {
        let mut pts = seg.points.as_slice();
        if seg.flags & path_flags::BEGIN != 0 {
            flush(&mut cur, &mut out);
            if let Some((first, rest)) = pts.split_first() {
                cur.push((fix_to_int(first.x), fix_to_int(first.y)));
                pts = rest;
            }
        }
        if seg.flags & path_flags::BEZIER != 0 {
            if pts.len() % 3 != 0 {
                flush(&mut cur, &mut out);
                return (out, false);
            }
            for c in pts.chunks_exact(3) {
                // spice-common reads the previous point (undefined without one).
                let Some(&(x, y)) = cur.last() else { continue };
                let p0 = PointFix { x: x.wrapping_mul(16), y: y.wrapping_mul(16) };
                subdivide(&mut cur, [p0, c[0], c[1], c[2]], 0);
            }
        } else {
            cur.extend(pts.iter().map(|p| (fix_to_int(p.x), fix_to_int(p.y))));
        }
        if seg.flags & path_flags::END != 0 {
            if seg.flags & path_flags::CLOSE != 0
                && let Some(&first) = cur.first()
            {
                cur.push(first);
            }
            flush(&mut cur, &mut out);
        }
    }
    flush(&mut cur, &mut out);
    (out, true)
}

/// X11 `miZeroLine` bias: octants 2..5 prefer the axial step on a tie.
const ZERO_LINE_BIAS: u32 = (1 << 3) | (1 << 7) | (1 << 6) | (1 << 4);
const XDECREASING: u32 = 4;
const YDECREASING: u32 = 2;
const YMAJOR: u32 = 1;

/// Calls `put(x, y)` for each pixel of the zero-width leg (x1, y1)→(x2, y2)
/// without its end pixel (`CapNotLast`) whose position lies within `area`
/// (inclusive bounds `x0..=x1`, `y0..=y1`), in drawing order.
fn zero_leg(a: (i32, i32), b: (i32, i32), area: (i64, i64, i64, i64), mut put: impl FnMut(i64, i64)) {
    let (x1, y1, x2, y2) = (i64::from(a.0), i64::from(a.1), i64::from(b.0), i64::from(b.1));
    let mut octant = 0;
    let (mut adx, mut sx) = (x2 - x1, 1);
    if adx < 0 {
        adx = -adx;
        sx = -1;
        octant |= XDECREASING;
    }
    let (mut ady, mut sy) = (y2 - y1, 1);
    if ady < 0 {
        ady = -ady;
        sy = -1;
        octant |= YDECREASING;
    }
    // Map to (major, minor) so one loop serves both cases.
    let (major, minor, smaj, smin, maj0, min0, maj_range) = if adx > ady {
        (adx, ady, sx, sy, x1, y1, (area.0, area.2))
    } else {
        octant |= YMAJOR;
        (ady, adx, sy, sx, y1, x1, (area.1, area.3))
    };
    if major == 0 {
        return;
    }
    let bias = i64::from((ZERO_LINE_BIAS >> octant) & 1);
    // Pixel k (0 <= k < major) lies at maj0 + k*smaj; its minor step count is
    // the number of times the Bresenham error crossed zero before it.
    let (lo, hi) =
        if smaj > 0 { (maj_range.0 - maj0, maj_range.1 - maj0) } else { (maj0 - maj_range.1, maj0 - maj_range.0) };
    let k0 = lo.max(0);
    let k1 = hi.min(major - 1);
    let mut k = k0;
    while k <= k1 {
        let raw = 2 * k * minor - major - bias;
        let steps = raw.div_euclid(2 * major) + 1;
        let pmaj = maj0 + k * smaj;
        let pmin = min0 + steps * smin;
        if octant & YMAJOR == 0 {
            put(pmaj, pmin)
        } else {
            put(pmin, pmaj)
        }
        k += 1;
    }
}

/// What a stroke paints with (spice-common `canvas_base.c` `StrokeGC`):
/// `solid` and `color`, or `tile` and its offset.
#[derive(Debug, Clone, Copy)]
pub enum StrokeBrush<'a> {
    /// A colour already converted by [`Surface::brush_color`] (spice-gtk
    /// strokes `SPICE_BRUSH_TYPE_NONE` with colour 0).
    Solid(u32),
    /// A pattern in the canvas format and its `pos`, tiled from there.
    Tile(&'a Pixels, (i32, i32)),
}

fn paint(surface: &mut Surface, rects: &[Rect], brush: StrokeBrush<'_>, rop: Rop) {
    if rects.is_empty() {
        return;
    }
    match brush {
        StrokeBrush::Solid(color) => surface.fill(rects, color, rop),
        StrokeBrush::Tile(pattern, pos) => surface.fill_pattern(rects, pattern, pos, rop),
    }
}

/// Draws `stroke` on `surface` within `region` (from [`Surface::region`]
/// for the stroke's box and clip) with `brush`. Solid lines are X11 zero-width
/// lines painted leg by leg (a pixel two legs share is painted twice);
/// styled lines are dashed as [`super::dash`] describes, each polyline
/// painted once per pixel. Every touched pixel is settled for 16-bit
/// surfaces here.
///
/// # Errors
/// [`StrokeError::Unsupported`] for a dash list spice-gtk cannot draw
/// (empty, or all zeros), before anything is drawn. `Invalid` when
/// spice-common would stop part-way (a malformed Bézier segment) and
/// `TooMany` when a dashed polyline exceeds
/// [`super::dash::MAX_DASH_WORK`]: what came before is drawn.
pub fn draw_stroke(
    surface: &mut Surface,
    region: &[Rect],
    stroke: &Stroke,
    brush: StrokeBrush<'_>,
) -> Result<(), StrokeError> {
    let dashes = if stroke.line_flags & line_flags::STYLED != 0 {
        Some(DashList::from_style(&stroke.style, stroke.line_flags & line_flags::START_WITH_GAP != 0)?)
    } else {
        None
    };
    let bounds = Rect {
        top: 0,
        left: 0,
        bottom: i32::try_from(surface.height).unwrap_or(i32::MAX),
        right: i32::try_from(surface.width).unwrap_or(i32::MAX),
    };
    let region: Vec<Rect> = region.iter().map(|r| r.intersect(&bounds)).filter(|r| !r.is_empty()).collect();
    let (lines, complete) = polylines(stroke);
    if !region.is_empty() {
        let area = (
            region.iter().map(|r| i64::from(r.left)).min().unwrap_or(0),
            region.iter().map(|r| i64::from(r.top)).min().unwrap_or(0),
            region.iter().map(|r| i64::from(r.right) - 1).max().unwrap_or(-1),
            region.iter().map(|r| i64::from(r.bottom) - 1).max().unwrap_or(-1),
        );
        let rop = Rop::from_descriptor(stroke.fore_mode, RopSource::Brush);
        for line in &lines {
            let mut rects = Vec::new();
            match &dashes {
                None => {
                    for leg in line.windows(2) {
                        rects.clear();
                        zero_leg(leg[0], leg[1], area, |x, y| {
                            // Within the area, so it fits i32.
                            let (x, y) = (x as i32, y as i32);
                            let pixel = Rect { top: y, left: x, bottom: y + 1, right: x + 1 };
                            rects.extend(region.iter().map(|r| r.intersect(&pixel)).filter(|r| !r.is_empty()));
                        });
                        paint(surface, &rects, brush, rop);
                    }
                }
                Some(dashes) => {
                    let mut dashed = DashedLine::new(dashes, rop.is_careful(), area);
                    let drawn = dashed.draw(line);
                    for (y, x0, x1) in dashed.spans() {
                        // Within the area, so they fit i32.
                        let span = Rect { top: y as i32, left: x0 as i32, bottom: y as i32 + 1, right: x1 as i32 + 1 };
                        rects.extend(region.iter().map(|r| r.intersect(&span)).filter(|r| !r.is_empty()));
                    }
                    paint(surface, &rects, brush, rop);
                    drawn?;
                }
            }
        }
    }
    if complete { Ok(()) } else { Err(StrokeError::Invalid { what: "bezier point count", value: 0 }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DRAW_STROKE body: box 0..16, no clip, one polyline per `(flags, points)` (in pixels).
    fn body(segs: &[(u8, &[(i32, i32)])], styled: Option<&[i32]>, brush: u8) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(0u32.to_le_bytes());
        for v in [0i32, 0, 16, 16] {
            b.extend(v.to_le_bytes());
        }
        b.push(0);
        let path_at_pos = b.len();
        b.extend(0u32.to_le_bytes());
        let mut style_at_pos = None;
        match styled {
            Some(s) => {
                b.push(line_flags::STYLED);
                b.push(s.len() as u8);
                style_at_pos = Some(b.len());
                b.extend(0u32.to_le_bytes());
            }
            None => b.push(0),
        }
        b.push(brush);
        match brush {
            1 => b.extend(0x00ff_0000u32.to_le_bytes()),
            2 => b.extend([0u8; 12]),
            _ => {}
        }
        b.extend(8u16.to_le_bytes());
        b.extend(8u16.to_le_bytes());
        if let (Some(pos), Some(s)) = (style_at_pos, styled) {
            let at = b.len() as u32;
            b[pos..pos + 4].copy_from_slice(&at.to_le_bytes());
            for v in s {
                b.extend((v * 16).to_le_bytes());
            }
        }
        let at = b.len() as u32;
        b[path_at_pos..path_at_pos + 4].copy_from_slice(&at.to_le_bytes());
        b.extend((segs.len() as u32).to_le_bytes());
        for (flags, pts) in segs {
            b.push(*flags);
            b.extend((pts.len() as u32).to_le_bytes());
            for (x, y) in *pts {
                b.extend((x * 16).to_le_bytes());
                b.extend((y * 16).to_le_bytes());
            }
        }
        b
    }

    const BE: u8 = path_flags::BEGIN | path_flags::END;

    fn drawn(segs: &[(u8, &[(i32, i32)])], region: &[Rect]) -> Vec<(u32, u32)> {
        let s = parse_stroke(&body(segs, None, 1)).unwrap();
        let mut surf = Surface::new(16, 16, 32);
        draw_stroke(&mut surf, region, &s, StrokeBrush::Solid(0xff_0000)).unwrap();
        let mut v = Vec::new();
        for y in 0..16u32 {
            for x in 0..16u32 {
                if surf.data[(y * 16 + x) as usize] != 0 {
                    v.push((x, y));
                }
            }
        }
        v.sort();
        v
    }

    fn full() -> Vec<Rect> {
        vec![Rect { top: 0, left: 0, bottom: 16, right: 16 }]
    }

    fn sorted(mut v: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
        v.sort();
        v
    }

    #[test]
    fn horizontal_cap_not_last() {
        assert_eq!(drawn(&[(BE, &[(0, 0), (4, 0)])], &full()), vec![(0, 0), (1, 0), (2, 0), (3, 0)]);
    }

    #[test]
    fn vertical() {
        assert_eq!(drawn(&[(BE, &[(2, 1), (2, 4)])], &full()), vec![(2, 1), (2, 2), (2, 3)]);
    }

    #[test]
    fn diagonal() {
        assert_eq!(drawn(&[(BE, &[(0, 0), (3, 3)])], &full()), vec![(0, 0), (1, 1), (2, 2)]);
    }

    #[test]
    fn shallow_and_bias() {
        // Octant 8: no bias, the tie at pixel 2 steps y.
        assert_eq!(drawn(&[(BE, &[(0, 0), (4, 1)])], &full()), sorted(vec![(0, 0), (1, 0), (2, 1), (3, 1)]));
        // Reversed (octant 4, biased): the tie keeps the axial step.
        assert_eq!(drawn(&[(BE, &[(4, 1), (0, 0)])], &full()), sorted(vec![(4, 1), (3, 1), (2, 1), (1, 0)]));
    }

    #[test]
    fn closed_triangle() {
        let got = drawn(&[(BE | path_flags::CLOSE, &[(0, 0), (4, 0), (0, 4)])], &full());
        let want = vec![(0, 0), (1, 0), (2, 0), (3, 0), (4, 0), (3, 1), (2, 2), (1, 3), (0, 4), (0, 3), (0, 2), (0, 1)];
        assert_eq!(got, sorted(want));
    }

    #[test]
    fn clipped_to_region() {
        let region = [Rect { top: 0, left: 1, bottom: 16, right: 3 }];
        assert_eq!(drawn(&[(BE, &[(0, 0), (4, 0)])], &region), vec![(1, 0), (2, 0)]);
        // A far-away line only costs the region's width.
        assert_eq!(drawn(&[(BE, &[(-1_000_000, 5), (1_000_000, 5)])], &region), vec![(1, 5), (2, 5)]);
    }

    #[test]
    fn fix_rounding() {
        assert_eq!(fix_to_int(8), 0);
        assert_eq!(fix_to_int(9), 1);
        assert_eq!(fix_to_int(-8), -1);
        assert_eq!(fix_to_int(-7), 0);
    }

    #[test]
    fn bezier_straight_and_degenerate() {
        let s = parse_stroke(&body(&[(BE | path_flags::BEZIER, &[(0, 0), (1, 0), (2, 0), (3, 0)])], None, 1)).unwrap();
        let (lines, ok) = polylines(&s);
        assert!(ok);
        assert_eq!(lines, vec![vec![(0, 0), (3, 0)]]);
        // All points equal: spice-common would recurse forever; bounded here.
        let s = parse_stroke(&body(&[(BE | path_flags::BEZIER, &[(5, 5), (5, 5), (5, 5), (5, 5)])], None, 1)).unwrap();
        let (lines, _) = polylines(&s);
        assert!(lines[0].len() <= MAX_FLAT_POINTS);
    }

    #[test]
    fn dashed_and_tiled() {
        let s = parse_stroke(&body(&[(BE, &[(0, 0), (8, 0)])], Some(&[2, 1]), 1)).unwrap();
        assert_eq!(s.style, vec![32, 16]);
        let mut surf = Surface::new(16, 16, 32);
        draw_stroke(&mut surf, &full(), &s, StrokeBrush::Solid(7)).unwrap();
        assert_eq!(&surf.data[..9], &[7, 7, 0, 7, 7, 0, 7, 7, 0]);
        // A 2x1 tile from x = 1: pixel x takes tile column (x - 1) mod 2.
        let tile = Pixels::xrgb(2, 1, vec![0xa, 0xb]);
        let s = parse_stroke(&body(&[(BE, &[(0, 1), (4, 1)])], None, 2)).unwrap();
        draw_stroke(&mut surf, &full(), &s, StrokeBrush::Tile(&tile, (1, 0))).unwrap();
        assert_eq!(&surf.data[16..21], &[0xb, 0xa, 0xb, 0xa, 0]);
        // All-zero dashes hang spice-gtk: refused before drawing.
        let s = parse_stroke(&body(&[(BE, &[(0, 2), (8, 2)])], Some(&[0, 0]), 1)).unwrap();
        assert!(matches!(draw_stroke(&mut surf, &full(), &s, StrokeBrush::Solid(7)), Err(StrokeError::Unsupported(_))));
        assert!(surf.data[32..48].iter().all(|&p| p == 0));
    }

    #[test]
    fn hostile_bodies() {
        let good = body(&[(BE, &[(0, 0), (4, 0)])], Some(&[2, 1]), 1);
        for n in 0..good.len() {
            let _ = parse_stroke(&good[..n]);
            assert!(parse_stroke(&good[..n]).is_err() || n == good.len());
        }
        // Bad path offset.
        let mut b = body(&[(BE, &[(0, 0)])], None, 1);
        b[21..25].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_stroke(&b).is_err());
        b[21..25].copy_from_slice(&0u32.to_le_bytes());
        assert!(parse_stroke(&b).is_err());
        // Huge segment and point counts.
        let mut b = body(&[(BE, &[(0, 0)])], None, 1);
        let path_at = u32::from_le_bytes([b[21], b[22], b[23], b[24]]) as usize;
        b[path_at..path_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_stroke(&b).is_err());
        let mut b = body(&[(BE, &[(0, 0)])], None, 1);
        b[path_at + 5..path_at + 9].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_stroke(&b).is_err());
        // Extreme coordinates draw nothing and do not panic.
        let mut b = body(&[(BE | path_flags::CLOSE, &[(0, 0), (0, 0), (0, 0)])], None, 1);
        for i in 0..6 {
            let o = path_at + 9 + i * 4;
            let v = if i % 2 == 0 { i32::MIN } else { i32::MAX };
            b[o..o + 4].copy_from_slice(&v.to_le_bytes());
        }
        let s = parse_stroke(&b).unwrap();
        let mut surf = Surface::new(16, 16, 32);
        let _ = draw_stroke(&mut surf, &full(), &s, StrokeBrush::Solid(1));
        // Bezier with a bad count stops like spice-common.
        let s = parse_stroke(&body(&[(BE | path_flags::BEZIER, &[(0, 0), (1, 1), (2, 2)])], None, 1)).unwrap();
        assert!(draw_stroke(&mut surf, &full(), &s, StrokeBrush::Solid(1)).is_err());
    }
}

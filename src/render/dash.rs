//! Dashed (styled) DRAW_STROKE lines, rasterized as spice-gtk does.
//!
//! spice-common `lines.c` has no zero-width dash code of its own:
//! `miZeroDashLine` sets the line width to 1 and calls X11's wide-line
//! `miWideDash`. So a dashed SPICE line is a chain of 1-pixel-wide polygons,
//! one per "on" dash, filled with X's polygon rules (`miPolyBuildPoly`,
//! `miPolyBuildEdge`, `miFillPolyHelper`), and joined with mitred joins
//! (`miLineJoin`) where an "on" dash runs through a vertex. `canvas_draw_stroke`
//! always asks for `LineOnOffDash` (gaps are not drawn), `CapNotLast` (which
//! the wide-line code treats as a butt cap) and `JoinMiter`.
//!
//! The arithmetic follows X's: doubles for the polygon vertices and slopes,
//! integer Bresenham-style edge stepping, `hypot` from the C library. Where X
//! uses C `int`, this uses `i64`, so coordinates far outside any surface
//! do not overflow; for coordinates a surface can hold the results agree.
//!
//! Output: the spans (`y`, first `x`, last `x`, inclusive) of one polyline,
//! limited to a bounding area. X paints the spans of one polyline once each
//! where painting twice would differ (`miSpansCarefulRop`: span groups,
//! `miFillUniqueSpanGroup`) and otherwise paints them as they come, which
//! gives the same pixels; [`DashedLine::spans`] therefore returns the union,
//! sorted and merged, to be painted once.

use super::stroke::StrokeError;

/// Most units of work (dash steps plus polygon rows) one dashed polyline
/// may cost; a polyline past it is an error, not a stall. spice-gtk has no
/// bound (a line of 2^27 pixels with one-pixel dashes takes it minutes).
pub const MAX_DASH_WORK: u64 = 1 << 24;

/// The miter limit constant of X11 (`lines.c` `SQSECANT`, 1/sin²(11/2°)).
const SQSECANT: f64 = 108.856472512142;

/// A dash list as `canvas_draw_stroke` builds it for X (`gc.base.dash`,
/// `dashOffset`): each length already rounded from 28.4 and truncated to
/// an unsigned byte, as spice-common stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DashList {
    /// Dash lengths in pixels: even indices drawn, odd ones gaps.
    pub dashes: Vec<u8>,
    /// Distance into the pattern at which each polyline starts.
    pub offset: u8,
}

impl DashList {
    /// The dash list `canvas_draw_stroke` makes of `SpiceLineAttr.style`
    /// (rounded with `fix_to_int`, kept as `unsigned char`). With
    /// `SPICE_LINE_FLAGS_START_WITH_GAP` the first length moves to the end
    /// and the offset becomes the new first length.
    ///
    /// # Errors
    /// [`StrokeError::Unsupported`] for an empty list (spice-gtk reads past
    /// its allocation) or one whose lengths are all zero (spice-gtk loops
    /// forever).
    pub fn from_style(style: &[i32], start_with_gap: bool) -> Result<Self, StrokeError> {
        // `unsigned char` stores: truncation is what spice-common does.
        let mut dashes: Vec<u8> = style.iter().map(|&v| super::stroke::fix_to_int(v) as u8).collect();
        if dashes.is_empty() {
            return Err(StrokeError::Unsupported("styled line with no dash lengths (undefined in spice-gtk)"));
        }
        if dashes.iter().all(|&d| d == 0) {
            return Err(StrokeError::Unsupported("styled line whose dashes are all 0 (spice-gtk never returns)"));
        }
        let mut offset = 0;
        if start_with_gap {
            dashes.rotate_left(1);
            offset = dashes[0];
        }
        Ok(Self { dashes, offset })
    }

    fn len(&self, index: usize) -> i64 {
        i64::from(self.dashes[index])
    }

    fn next(&self, index: usize) -> usize {
        if index + 1 == self.dashes.len() { 0 } else { index + 1 }
    }

    /// `miStepDash`: moves (`index`, `offset`) `dist` pixels on.
    fn step(&self, mut dist: i64, index: &mut usize, offset: &mut i64) {
        if dist < self.len(*index) - *offset {
            *offset += dist;
            return;
        }
        dist -= self.len(*index) - *offset;
        let mut i = self.next(*index);
        let total: i64 = self.dashes.iter().map(|&d| i64::from(d)).sum();
        if total > 0 && total <= dist {
            dist %= total;
        }
        // Terminates: `from_style` refused a list of zeros.
        while dist >= self.len(i) {
            dist -= self.len(i);
            i = self.next(i);
        }
        *index = i;
        *offset = dist;
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Vertex {
    x: f64,
    y: f64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slope {
    dx: i64,
    dy: i64,
    /// `x0 * dy - y0 * dx`.
    k: f64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Edge {
    height: i64,
    x: i64,
    stepx: i64,
    signdx: i64,
    e: i64,
    dy: i64,
    dx: i64,
}

impl Edge {
    /// `MIPOLYSTEPLEFT` / `MIPOLYSTEPRIGHT`.
    fn step(&mut self) {
        self.x += self.stepx;
        self.e += self.dx;
        if self.e > 0 {
            self.x += self.signdx;
            self.e -= self.dy;
        }
    }

    /// `n` steps at once. The error term starts in `(-dy, 0]` and
    /// `0 <= dx < dy`, so each step carries at most once.
    fn advance(&mut self, n: i64) {
        if self.dy <= 0 {
            return;
        }
        let e = i128::from(self.e) + i128::from(n) * i128::from(self.dx);
        let mut x = i128::from(self.x) + i128::from(n) * i128::from(self.stepx);
        let mut e2 = e;
        if e > 0 {
            let carries = (e + i128::from(self.dy) - 1) / i128::from(self.dy);
            x += carries * i128::from(self.signdx);
            e2 = e - carries * i128::from(self.dy);
        }
        self.x = x.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
        self.e = e2 as i64;
    }
}

/// `LineFaceRec`: one end of a segment, for joins.
#[derive(Debug, Clone, Copy, Default)]
struct Face {
    xa: f64,
    ya: f64,
    dx: i64,
    dy: i64,
    x: i64,
    y: i64,
    k: f64,
}

impl Face {
    fn reversed(self) -> Self {
        Self { xa: -self.xa, ya: -self.ya, dx: -self.dx, dy: -self.dy, ..self }
    }
}

const V_TOP: usize = 0;
const V_RIGHT: usize = 1;
const V_BOTTOM: usize = 2;
const V_LEFT: usize = 3;

/// X's `ICEIL`: the ceiling of `x`, computed through a truncating cast.
fn iceil(x: f64) -> i64 {
    let t = x as i64;
    if x == t as f64 || x < 0.0 { t } else { t + 1 }
}

/// `StepAround`.
fn step_around(v: usize, incr: isize, max: usize) -> usize {
    let n = v as isize + incr;
    if n < 0 {
        max - 1
    } else if n as usize == max {
        0
    } else {
        n as usize
    }
}

/// `miPolyBuildEdge`: returns the edge's first row.
fn build_edge(y0: f64, k: f64, dx: i64, dy: i64, xi: i64, yi: i64, left: bool) -> (i64, Edge) {
    let (mut dx, mut dy, mut k) = (dx, dy, k);
    if dy < 0 {
        dy = -dy;
        dx = -dx;
        k = -k;
    }
    let y = iceil(y0);
    let xady = iceil(k).saturating_add(y.saturating_mul(dx));
    // Rust's integer division truncates toward zero, as C's.
    let x = if xady <= 0 { -(-xady / dy) - 1 } else { (xady - 1) / dy };
    let mut e = xady - x * dy;
    let mut edge = Edge::default();
    if dx >= 0 {
        edge.signdx = 1;
        edge.stepx = dx / dy;
        edge.dx = dx % dy;
    } else {
        edge.signdx = -1;
        edge.stepx = -(-dx / dy);
        edge.dx = -dx % dy;
        e = dy - e + 1;
    }
    edge.dy = dy;
    edge.x = x + i64::from(left) + xi;
    edge.e = e - dy;
    (y + yi, edge)
}

/// A convex polygon's edges as `miPolyBuildPoly` gives them.
struct Poly {
    top: i64,
    left: Vec<Edge>,
    right: Vec<Edge>,
}

/// `miPolyBuildPoly` for `vertices` (relative to `xi`, `yi`) and the slope
/// of the edge leaving each vertex.
fn build_poly(vertices: &[Vertex], slopes: &[Slope], xi: i64, yi: i64) -> Poly {
    let count = vertices.len();
    let (mut miny, mut maxy) = (vertices[0].y, vertices[0].y);
    let (mut top, mut bottom) = (0, 0);
    for (i, v) in vertices.iter().enumerate().skip(1) {
        if v.y < miny {
            top = i;
            miny = v.y;
        }
        if v.y >= maxy {
            bottom = i;
            maxy = v.y;
        }
    }
    let mut clockwise: isize = 1;
    let mut slopeoff: isize = 0;
    let j = step_around(top, -1, count);
    if slopes[j].dy * slopes[top].dx > slopes[top].dy * slopes[j].dx {
        clockwise = -1;
        slopeoff = -1;
    }
    let bottomy = iceil(maxy) + yi;

    let mut topy = 0;
    let mut lasty = 0;
    let mut right: Vec<Edge> = Vec::with_capacity(count);
    let (mut s, mut i) = (step_around(top, slopeoff, count), top);
    while i != bottom {
        if slopes[s].dy != 0 {
            let (y, edge) = build_edge(vertices[i].y, slopes[s].k, slopes[s].dx, slopes[s].dy, xi, yi, false);
            match right.last_mut() {
                Some(prev) => prev.height = y - lasty,
                None => topy = y,
            }
            right.push(edge);
            lasty = y;
        }
        i = step_around(i, clockwise, count);
        s = step_around(s, clockwise, count);
    }
    if let Some(last) = right.last_mut() {
        last.height = bottomy - lasty;
    }

    let slopeoff = if slopeoff == 0 { -1 } else { 0 };
    let mut left: Vec<Edge> = Vec::with_capacity(count);
    let (mut s, mut i) = (step_around(top, slopeoff, count), top);
    while i != bottom {
        if slopes[s].dy != 0 {
            let (y, edge) = build_edge(vertices[i].y, slopes[s].k, slopes[s].dx, slopes[s].dy, xi, yi, true);
            if let Some(prev) = left.last_mut() {
                prev.height = y - lasty;
            }
            left.push(edge);
            lasty = y;
        }
        i = step_around(i, -clockwise, count);
        s = step_around(s, -clockwise, count);
    }
    if let Some(last) = left.last_mut() {
        last.height = bottomy - lasty;
    }
    Poly { top: topy, left, right }
}

/// One dashed polyline being rasterized: the dash list, whether X would
/// use span groups (which changes how joins are drawn), and the spans
/// gathered within the area.
pub struct DashedLine<'a> {
    dashes: &'a DashList,
    span_groups: bool,
    /// Inclusive bounds of the spans kept: x0, y0, x1, y1.
    area: (i64, i64, i64, i64),
    spans: Vec<(i64, i64, i64)>,
    work: u64,
}

impl<'a> DashedLine<'a> {
    /// A rasterizer keeping spans within `area` (inclusive x0, y0, x1, y1).
    /// `careful_rop` is X's `miSpansCarefulRop` for the stroke's ROP.
    pub fn new(dashes: &'a DashList, careful_rop: bool, area: (i64, i64, i64, i64)) -> Self {
        Self { dashes, span_groups: careful_rop, area, spans: Vec::new(), work: 0 }
    }

    fn spend(&mut self, units: u64) -> Result<(), StrokeError> {
        self.work = self.work.saturating_add(units);
        if self.work > MAX_DASH_WORK {
            return Err(StrokeError::TooMany { what: "dashed line work", value: self.work });
        }
        Ok(())
    }

    /// `miFillPolyHelper` into the span list, skipping rows above the area
    /// and stopping below it.
    fn fill_poly(&mut self, poly: &Poly) -> Result<(), StrokeError> {
        let (ax0, ay0, ax1, ay1) = self.area;
        let mut y = poly.top;
        let (mut left_iter, mut right_iter) = (poly.left.iter(), poly.right.iter());
        let (mut left, mut right) = (Edge::default(), Edge::default());
        let (mut left_height, mut right_height) = (0i64, 0i64);
        // MIPOLYRELOADLEFT / MIPOLYRELOADRIGHT: the next edge once the
        // current one is used up.
        let reload = |iter: &mut std::slice::Iter<'_, Edge>, edge: &mut Edge, height: &mut i64| {
            if *height == 0
                && let Some(e) = iter.next()
            {
                *edge = *e;
                *height = e.height;
            }
        };
        while (left_iter.len() > 0 || left_height != 0) && (right_iter.len() > 0 || right_height != 0) {
            reload(&mut left_iter, &mut left, &mut left_height);
            reload(&mut right_iter, &mut right, &mut right_height);
            let mut height = left_height.min(right_height);
            left_height -= height;
            right_height -= height;
            if height <= 0 {
                continue;
            }
            let skip = (ay0 - y).clamp(0, height);
            if skip > 0 {
                left.advance(skip);
                right.advance(skip);
                y += skip;
                height -= skip;
            }
            let rows = (ay1 + 1 - y).clamp(0, height);
            self.spend(rows as u64 + 1)?;
            for _ in 0..rows {
                if right.x >= left.x {
                    let (x0, x1) = (left.x.max(ax0), right.x.min(ax1));
                    if x0 <= x1 {
                        self.spans.push((y, x0, x1));
                    }
                }
                y += 1;
                left.step();
                right.step();
            }
            if rows < height {
                // The rest of the polygon lies below the area.
                return Ok(());
            }
        }
        Ok(())
    }

    fn fill(&mut self, vertices: &[Vertex], slopes: &[Slope], xi: i64, yi: i64) -> Result<(), StrokeError> {
        let poly = build_poly(vertices, slopes, xi, yi);
        self.fill_poly(&poly)
    }

    /// `miWideDashSegment` for line width 1, `LineOnOffDash`, no projecting
    /// or round caps: fills the "on" dashes of (x1, y1)→(x2, y2) and
    /// returns its two faces.
    fn segment(
        &mut self,
        index: &mut usize,
        offset: &mut i64,
        (x1, y1): (i64, i64),
        (x2, y2): (i64, i64),
    ) -> Result<(Face, Face), StrokeError> {
        let dashes = self.dashes;
        let (dx, dy) = (x2 - x1, y2 - y1);
        let mut dash_index = *index;
        let mut dash_remain = dashes.len(dash_index) - *offset;
        let l = 0.5;
        let (big_l, rdx, rdy) = if dx == 0 {
            if dy < 0 { (-dy as f64, 0.0, -l) } else { (dy as f64, 0.0, l) }
        } else if dy == 0 {
            if dx < 0 { (-dx as f64, -l, 0.0) } else { (dx as f64, l, 0.0) }
        } else {
            let big_l = (dx as f64).hypot(dy as f64);
            let r = l / big_l;
            (big_l, r * dx as f64, r * dy as f64)
        };
        let k = l * big_l;
        let mut l_remain = big_l;
        let mut slopes = [
            Slope { dx, dy, k },
            Slope { dx: -dy, dy: dx, k: 0.0 },
            Slope { dx: -dx, dy: -dy, k },
            Slope { dx: dy, dy: -dx, k: 0.0 },
        ];
        let mut v = [Vertex::default(); 4];
        v[V_RIGHT] = Vertex { x: rdy, y: -rdx };
        v[V_TOP] = v[V_RIGHT];
        v[V_BOTTOM] = Vertex { x: -rdy, y: rdx };
        v[V_LEFT] = v[V_BOTTOM];

        while l_remain > dash_remain as f64 {
            self.spend(1)?;
            let dash_dx = dash_remain.saturating_mul(dx) as f64 / big_l;
            let dash_dy = dash_remain.saturating_mul(dy) as f64 / big_l;
            v[V_RIGHT].x += dash_dx;
            v[V_RIGHT].y += dash_dy;
            v[V_BOTTOM].x += dash_dx;
            v[V_BOTTOM].y += dash_dy;
            slopes[V_RIGHT].k = v[V_RIGHT].x * dx as f64 + v[V_RIGHT].y * dy as f64;
            if dash_index & 1 == 0 {
                self.fill(&v, &slopes, x1, y1)?;
            }
            l_remain -= dash_remain as f64;
            dash_index = dashes.next(dash_index);
            dash_remain = dashes.len(dash_index);
            v[V_TOP] = v[V_RIGHT];
            v[V_LEFT] = v[V_BOTTOM];
            slopes[V_LEFT].k = -slopes[V_RIGHT].k;
        }
        if dash_index & 1 == 0 {
            v[V_TOP].x -= dx as f64;
            v[V_TOP].y -= dy as f64;
            v[V_LEFT].x -= dx as f64;
            v[V_LEFT].y -= dy as f64;
            v[V_RIGHT] = Vertex { x: rdy, y: -rdx };
            v[V_BOTTOM] = Vertex { x: -rdy, y: rdx };
            slopes[V_RIGHT].k = 0.0;
            slopes[V_LEFT].k += dx.saturating_mul(dx).saturating_add(dy.saturating_mul(dy)) as f64;
            self.fill(&v, &slopes, x2, y2)?;
        }
        // C truncates the double toward zero into an int.
        dash_remain = (dash_remain as f64 - l_remain) as i64;
        if dash_remain == 0 {
            dash_index = dashes.next(dash_index);
            dash_remain = dashes.len(dash_index);
        }
        *index = dash_index;
        *offset = dashes.len(dash_index) - dash_remain;
        let left = Face { x: x1, y: y1, dx, dy, xa: rdy, ya: -rdx, k };
        let right = Face { x: x2, y: y2, dx: -dx, dy: -dy, xa: -rdy, ya: rdx, k };
        Ok((left, right))
    }

    /// `miLineJoin` with `JoinMiter` (falling back to a bevel past the
    /// miter limit) at line width 1.
    fn join(&mut self, left: Face, right: Face) -> Result<(), StrokeError> {
        let denom = (-left.dx) as f64 * right.dy as f64 + right.dx as f64 * left.dy as f64;
        if !self.span_groups {
            // One of the lines draws the joining pixel.
            if left.dx > 0 || (left.dx == 0 && left.dy > 0) {
                return Ok(());
            }
            if right.dx > 0 || (right.dx == 0 && right.dy > 0) {
                return Ok(());
            }
        }
        if denom == 0.0 {
            return Ok(());
        }
        let (left, right, swap) =
            if denom > 0.0 { (left.reversed(), right, false) } else { (left, right.reversed(), true) };
        let mut v =
            vec![Vertex { x: right.xa, y: right.ya }, Vertex { x: 0.0, y: 0.0 }, Vertex { x: left.xa, y: left.ya }];
        let mut slopes =
            vec![Slope { dx: -right.dy, dy: right.dx, k: 0.0 }, Slope { dx: left.dy, dy: -left.dx, k: 0.0 }];
        let my = (left.dy as f64 * (right.xa * right.dy as f64 - right.ya * right.dx as f64)
            - right.dy as f64 * (left.xa * left.dy as f64 - left.ya * left.dx as f64))
            / denom;
        let mx = if left.dy != 0 {
            left.xa + (my - left.ya) * left.dx as f64 / left.dy as f64
        } else {
            right.xa + (my - right.ya) * right.dx as f64 / right.dy as f64
        };
        let sign = |s: Slope| if swap { Slope { dx: -s.dx, dy: -s.dy, k: -s.k } } else { s };
        // Written as X compares, so that a NaN keeps the miter as there.
        let past_limit = (mx * mx + my * my) * 4.0 > SQSECANT;
        if !past_limit {
            slopes.push(sign(Slope { dx: left.dx, dy: left.dy, k: left.k }));
            v.push(Vertex { x: mx, y: my });
            slopes.push(sign(Slope { dx: right.dx, dy: right.dy, k: right.k }));
        } else {
            // Bevel.
            let (dx, dy) = (right.xa - left.xa, right.ya - left.ya);
            let scale = dx.abs().max(dy.abs());
            if scale == 0.0 {
                return Ok(());
            }
            let sdx = ((dx * 65536.0) / scale) as i64;
            let sdy = ((dy * 65536.0) / scale) as i64;
            let k = ((left.xa + right.xa) * sdy as f64 - (left.ya + right.ya) * sdx as f64) / 2.0;
            slopes.push(Slope { dx: sdx, dy: sdy, k });
        }
        self.fill(&v, &slopes, left.x, left.y)
    }

    /// `miWideDash` over `points` (one polyline, integer pixels): gathers
    /// the spans of its "on" dashes and joins.
    ///
    /// # Errors
    /// [`StrokeError::TooMany`] past [`MAX_DASH_WORK`].
    pub fn draw(&mut self, points: &[(i32, i32)]) -> Result<(), StrokeError> {
        let Some(&first_point) = points.first() else {
            return Ok(());
        };
        let p = |q: (i32, i32)| (i64::from(q.0), i64::from(q.1));
        let self_join = points.last() == Some(&first_point);
        let (mut index, mut offset) = (0usize, 0i64);
        self.dashes.step(i64::from(self.dashes.offset), &mut index, &mut offset);
        let mut first = true;
        let mut something_drawn = false;
        let (mut first_face, mut prev_right, mut right_face) = (Face::default(), Face::default(), Face::default());
        let (mut first_is_fg, mut prev_is_fg, mut end_is_fg) = (false, false, false);
        let mut b = p(first_point);
        for (n, &q) in points.iter().enumerate().skip(1) {
            let a = b;
            b = p(q);
            if a != b {
                something_drawn = true;
                let prev_index = index;
                let (left_face, right) = self.segment(&mut index, &mut offset, a, b)?;
                right_face = right;
                let start_is_fg = prev_index & 1 == 0;
                end_is_fg = ((index & 1) != 0) ^ (offset != 0);
                if start_is_fg {
                    if first || !prev_is_fg {
                        if first && self_join {
                            first_face = left_face;
                            first_is_fg = true;
                        }
                    } else {
                        self.join(left_face, prev_right)?;
                    }
                }
                prev_right = right_face;
                prev_is_fg = end_is_fg;
                first = false;
            }
            if n == points.len() - 1 && something_drawn && end_is_fg && self_join && first_is_fg {
                self.join(first_face, right_face)?;
            }
        }
        Ok(())
    }

    /// The spans gathered, as `(y, x0, x1)` with `x0 <= x1` inclusive,
    /// sorted and merged so that each pixel appears once.
    pub fn spans(mut self) -> Vec<(i64, i64, i64)> {
        self.spans.sort_unstable();
        let mut out: Vec<(i64, i64, i64)> = Vec::with_capacity(self.spans.len());
        for (y, x0, x1) in self.spans {
            match out.last_mut() {
                Some(last) if last.0 == y && x0 <= last.2 + 1 => last.2 = last.2.max(x1),
                _ => out.push((y, x0, x1)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AREA: (i64, i64, i64, i64) = (0, 0, 63, 63);

    fn pixels(dashes: &DashList, careful: bool, points: &[(i32, i32)]) -> Vec<(i64, i64)> {
        let mut line = DashedLine::new(dashes, careful, AREA);
        line.draw(points).unwrap();
        line.spans().into_iter().flat_map(|(y, x0, x1)| (x0..=x1).map(move |x| (x, y))).collect()
    }

    fn list(d: &[u8]) -> DashList {
        DashList { dashes: d.to_vec(), offset: 0 }
    }

    #[test]
    fn horizontal_dashes() {
        // On 3, off 2 from x=0: pixels 0..3 and 5..8 of a 10-pixel line.
        let got = pixels(&list(&[3, 2]), false, &[(0, 4), (10, 4)]);
        let want: Vec<_> = [0, 1, 2, 5, 6, 7].into_iter().map(|x| (x, 4)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn vertical_dashes() {
        let got = pixels(&list(&[2, 2]), false, &[(3, 0), (3, 8)]);
        let want: Vec<_> = [0, 1, 4, 5].into_iter().map(|y| (3, y)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn dash_phase_continues_across_vertices() {
        // 4 on, 4 off over an L: the corner at 6 px is inside the second "off".
        let got = pixels(&list(&[4, 4]), false, &[(0, 0), (6, 0), (6, 6)]);
        let mut want: Vec<_> = [0, 1, 2, 3].into_iter().map(|x| (x, 0)).collect();
        want.extend([(6, 2), (6, 3), (6, 4), (6, 5)]);
        want.sort_by_key(|&(x, y)| (y, x));
        assert_eq!(got, want);
    }

    #[test]
    fn start_with_gap_and_offsets() {
        let d = DashList::from_style(&[2 * 16, 3 * 16], true).unwrap();
        assert_eq!(d, DashList { dashes: vec![3, 2], offset: 3 });
        // Starts in the gap of 2, then 3 on.
        let got = pixels(&d, false, &[(0, 0), (10, 0)]);
        let want: Vec<_> = [2, 3, 4, 7, 8, 9].into_iter().map(|x| (x, 0)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn style_lengths_are_bytes() {
        // 256 px truncates to 0 as spice-common's unsigned char does.
        let d = DashList::from_style(&[256 * 16, 16], false).unwrap();
        assert_eq!(d.dashes, vec![0, 1]);
        assert!(DashList::from_style(&[256 * 16], false).is_err());
        assert!(DashList::from_style(&[], false).is_err());
    }

    #[test]
    fn step_dash_wraps() {
        let d = list(&[3, 2]);
        let (mut i, mut o) = (0, 0);
        d.step(12, &mut i, &mut o);
        assert_eq!((i, o), (0, 2));
        d.step(2, &mut i, &mut o);
        assert_eq!((i, o), (1, 1));
    }

    #[test]
    fn huge_lines_are_bounded() {
        let d = list(&[1, 1]);
        let mut line = DashedLine::new(&d, false, AREA);
        let r = line.draw(&[(-100_000_000, 5), (100_000_000, 5)]);
        assert!(matches!(r, Err(StrokeError::TooMany { .. })));
        // A long solid dash far outside costs only the rows inside.
        let d = list(&[255, 1]);
        let mut line = DashedLine::new(&d, false, AREA);
        line.draw(&[(5, -200), (5, 200)]).unwrap();
        assert!(line.work < 100);
        let got = line.spans();
        assert!(got.iter().all(|&(y, x0, x1)| (0..=63).contains(&y) && x0 == 5 && x1 == 5));
    }

    #[test]
    fn edge_advance_matches_stepping() {
        for (dx, dy, e0) in [(3, 7, -6), (0, 5, 0), (6, 7, -1), (1, 2, 0)] {
            let base = Edge { height: 0, x: 10, stepx: 2, signdx: -1, e: e0, dy, dx };
            for n in 0..30 {
                let mut a = base;
                let mut b = base;
                for _ in 0..n {
                    a.step();
                }
                b.advance(n);
                assert_eq!((a.x, a.e), (b.x, b.e), "dx {dx} dy {dy} n {n}");
            }
        }
    }
}

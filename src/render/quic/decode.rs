//! Row decoding: prediction, Golomb decoding per channel, model updates and pixel runs.
//!
//! Follows spice-common `quic_tmpl.c` (the `uncompress_row0`/`uncompress_row` families) and the
//! per-type drivers in `quic.c` (`quic_decode`, `uncompress_rgba`, `uncompress_gray`).
//!
//! Each channel value is predicted from its neighbours in the same channel and only the residual
//! is coded:
//!
//! ```text
//!            previous row:   .  b  .
//!            this row:       a  x      predicted x = (a + b) / 2   (rows after the first)
//!                                      predicted x = a             (first row)
//!                                      predicted x = b             (first pixel of a later row)
//!                                      predicted x = 0             (first pixel of the image)
//! ```
//!
//! The residual `x - predicted` (mod `2^bpc`) is folded to an unsigned value and Golomb coded with
//! the code chosen by the bucket of the *previous* pixel's folded residual in that channel. After
//! the first row, a pixel whose two left neighbours are equal, and whose upper neighbour equals the
//! upper-left one, starts a run: its length is run-length coded and the run's pixels copy the left
//! neighbour.
//!
//! The model's wait mask (how many symbols pass between model updates) widens every 2048 pixels
//! of a group's stream until the sixth step, and that boundary can fall inside a row: a row is
//! then decoded as several *segments*, each with one wait mask. A run never crosses a segment
//! boundary.

use super::QuicError;
use super::bits::BitReader;
use super::model::{Bucket, Family, Schedule};

/// `N` channels coded together under one [`Schedule`]: R, G and B (`N = 3`, in that order in the
/// stream), or a single plane (GRAY, or the alpha of RGBA; `N = 1`).
#[derive(Debug)]
pub(super) struct PlaneGroup<const N: usize> {
    /// The update schedule and run coder shared by these channels.
    schedule: Schedule,
    /// The channels' models and rows.
    planes: Planes<N>,
}

/// Per-channel state of a [`PlaneGroup`].
#[derive(Debug)]
struct Planes<const N: usize> {
    /// Code tables for the channel depth.
    family: &'static Family,
    /// Context buckets of each channel.
    buckets: [Vec<Bucket>; N],
    /// Folded residuals of each channel, shifted by one: `residuals[c][i + 1]` belongs to pixel
    /// `i` and `residuals[c][0]` is the context of pixel 0. Pixels filled by a run leave their
    /// entries untouched, so later contexts may see a value from an earlier row: the bit stream
    /// depends on that.
    residuals: [Vec<u8>; N],
    /// The row being decoded, per channel (values of `bpc` bits).
    cur: [Vec<u8>; N],
    /// The previous row, per channel.
    prev: [Vec<u8>; N],
    /// Rows decoded so far.
    rows: u32,
}

impl<const N: usize> PlaneGroup<N> {
    /// A fresh group for rows of `width` pixels (at least 1) with `family`'s channel depth.
    pub(super) fn new(family: &'static Family, width: usize) -> Self {
        let planes = Planes {
            family,
            buckets: std::array::from_fn(|_| vec![Bucket::new(family); family.buckets]),
            residuals: std::array::from_fn(|_| vec![0; width + 1]),
            cur: std::array::from_fn(|_| vec![0; width]),
            prev: std::array::from_fn(|_| vec![0; width]),
            rows: 0,
        };
        PlaneGroup { schedule: Schedule::new(), planes }
    }

    /// Decodes the next row; read it with [`PlaneGroup::row`].
    ///
    /// # Errors
    /// [`QuicError::Truncated`] if the stream ends first, [`QuicError::Corrupt`] for a run that
    /// passes the end of its row segment.
    pub(super) fn decode_row(&mut self, reader: &mut BitReader<'_>) -> Result<(), QuicError> {
        let planes = &mut self.planes;
        std::mem::swap(&mut planes.cur, &mut planes.prev);
        let first = planes.rows == 0;
        for residuals in &mut planes.residuals {
            residuals[0] = if first { 0 } else { residuals[1] };
        }
        let width = planes.cur[0].len() as u32;
        let row = planes.rows;
        self.schedule
            .for_each_segment(width, |schedule, start, end| planes.segment(schedule, reader, start, end, first))
            .map_err(|e| match e {
                QuicError::Corrupt { reason, .. } => QuicError::Corrupt { row, reason },
                other => other,
            })?;
        planes.rows += 1;
        Ok(())
    }

    /// Channel `c` of the last decoded row, one value of `bpc` bits per pixel.
    pub(super) fn row(&self, c: usize) -> &[u8] {
        &self.planes.cur[c]
    }
}

impl<const N: usize> Planes<N> {
    /// Decodes pixels `i .. end` of the current row, all coded with the schedule's current wait
    /// mask.
    fn segment(
        &mut self,
        schedule: &mut Schedule,
        reader: &mut BitReader<'_>,
        mut i: usize,
        end: usize,
        first: bool,
    ) -> Result<(), QuicError> {
        // `stop` is the next pixel after which the model is updated.
        let mut stop = if i == 0 {
            self.pixel(reader, 0, first)?;
            if schedule.wait > 0 {
                schedule.wait -= 1;
            } else {
                schedule.wait = schedule.next_wait();
                self.update(0, schedule.trigger);
            }
            i = 1;
            1 + schedule.wait as usize
        } else {
            i + schedule.wait as usize
        };
        // Where the last run of this segment started: no new run may start right there again.
        let mut last_run = None;
        while i < end {
            if !first && i > 2 && last_run != Some(i) && self.run_starts(i) {
                schedule.wait = (stop - i) as u32;
                last_run = Some(i);
                let len = schedule.decode_run(reader, end - i)?;
                for cur in &mut self.cur {
                    let value = cur[i - 1];
                    cur[i..i + len].fill(value);
                }
                i += len;
                if i == end {
                    // The skip count stays as it was when the run began.
                    return Ok(());
                }
                stop = i + schedule.wait as usize;
                continue;
            }
            self.pixel(reader, i, first)?;
            if i == stop {
                self.update(i, schedule.trigger);
                stop = i + 1 + schedule.next_wait() as usize;
            }
            i += 1;
        }
        schedule.wait = (stop - end) as u32;
        Ok(())
    }

    /// Whether pixel `i` (at least 3, not in the first row) starts a run: the two pixels left of
    /// it are equal and so are the pixel above and the one above-left, in every channel.
    #[inline(always)]
    fn run_starts(&self, i: usize) -> bool {
        self.prev.iter().all(|prev| prev[i - 1] == prev[i]) && self.cur.iter().all(|cur| cur[i - 1] == cur[i - 2])
    }

    /// Decodes pixel `i` of the current row, channel by channel.
    #[inline(always)]
    fn pixel(&mut self, reader: &mut BitReader<'_>, i: usize, first: bool) -> Result<(), QuicError> {
        let family = self.family;
        for c in 0..N {
            let context = self.residuals[c][i];
            let code = self.buckets[c][usize::from(family.bucket_of[usize::from(context)])].best;
            let (folded, len) = family.decode(code, reader.peek());
            reader.consume(len)?;
            self.residuals[c][i + 1] = folded;
            let cur = &self.cur[c];
            let predicted = match (first, i) {
                (true, 0) => 0,
                (true, _) => u32::from(cur[i - 1]),
                (false, 0) => u32::from(self.prev[c][0]),
                (false, _) => (u32::from(cur[i - 1]) + u32::from(self.prev[c][i])) >> 1,
            };
            self.cur[c][i] = ((u32::from(family.unfold[usize::from(folded)]) + predicted) & family.value_mask) as u8;
        }
        Ok(())
    }

    /// Updates each channel's bucket for pixel `i` (the bucket of its context) with the pixel's
    /// folded residual.
    #[inline]
    fn update(&mut self, i: usize, trigger: u32) {
        let family = self.family;
        for c in 0..N {
            let context = self.residuals[c][i];
            let value = self.residuals[c][i + 1];
            self.buckets[c][usize::from(family.bucket_of[usize::from(context)])].update(family, value, trigger);
        }
    }
}

//! The encoder thread: takes frames from the slot, asks the [`Timeline`] what
//! to encode, encodes, and writes the one file of the recorder.
//!
//! Each surface size has its own encoder ([`Encoding`]); a size change
//! starts a new one with an IDR picture whose parameter sets travel in the
//! sample (`avc3`), in the same file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::convert::{Geometry, Picture};
use super::fmp4::Mp4Writer;
use super::h264::{H264, Sample};
use super::slot::{Request, Shared};
use super::timeline::{Action, Grid, Timeline};
use super::{Frame, VideoConfig, VideoError, VideoFile, VideoReport, VideoSize};

/// The media timescale for a grid of `fps`, and the media units per tick:
/// 90 kHz when a tick is a whole number of its units, else `fps * 1000`.
pub(super) fn timescale(fps: u32) -> (u32, u64) {
    let fps = fps.max(1);
    if 90_000 % fps == 0 { (90_000, u64::from(90_000 / fps)) } else { (fps.saturating_mul(1000), 1000) }
}

pub(super) struct Worker {
    config: VideoConfig,
    origin: Instant,
    shared: Arc<Shared>,
    grid: Grid,
    units_per_tick: u64,
    timeline: Timeline,
    path: PathBuf,
    /// The encoder of the current surface size.
    encoding: Option<Encoding>,
    /// Created with the first sample (it needs the parameter sets).
    writer: Option<Mp4Writer>,
    /// The last sample, waiting for the next one to know its duration.
    held: Option<(Sample, u64)>,
    /// Tick of the first sample.
    first: Option<u64>,
    sizes: Vec<VideoSize>,
}

/// The picture and encoder of one surface size.
struct Encoding {
    picture: Picture,
    h264: H264,
}

impl Worker {
    pub(super) fn new(path: PathBuf, config: VideoConfig, origin: Instant, shared: Arc<Shared>) -> Worker {
        let grid = Grid::new(config.max_fps);
        let timeline = Timeline::new(grid, config.keyframe_interval);
        let (_, units_per_tick) = timescale(config.max_fps);
        Worker {
            config,
            origin,
            shared,
            grid,
            units_per_tick,
            timeline,
            path,
            encoding: None,
            writer: None,
            held: None,
            first: None,
            sizes: Vec::new(),
        }
    }

    pub(super) fn run(mut self) -> Result<VideoReport, VideoError> {
        // Closes the slot however this ends, a panic included: `push` must
        // not wait for a thread that is gone.
        struct CloseOnExit(Arc<Shared>);
        impl Drop for CloseOnExit {
            fn drop(&mut self) {
                self.0.close(std::thread::panicking());
            }
        }
        let guard = CloseOnExit(Arc::clone(&self.shared));
        let result = self.main_loop();
        if let Err(error) = &result {
            tracing::error!(%error, path = %self.path.display(), "video recording failed");
            self.shared.close(true);
            // Finish the file if it still can be.
            let end = self.held.as_ref().map(|(_, tick)| tick + 1);
            if let Some(end) = end
                && let Err(error) = self.close(end)
            {
                tracing::warn!(%error, "cannot finish the video file after the failure");
            }
        }
        drop(guard);
        let end = result?;
        let duration = match (self.first, end) {
            (Some(first), Some(end)) => self.grid.time(end).saturating_sub(self.grid.time(first)),
            _ => Duration::ZERO,
        };
        Ok(VideoReport { file: self.shared.file(), stats: self.shared.stats(), duration })
    }

    /// Returns the end tick of the recording (`None` without frames).
    fn main_loop(&mut self) -> Result<Option<u64>, VideoError> {
        let mut actions = Vec::new();
        loop {
            let timeout = match self.config.realtime {
                true => self.timeline.next_deadline().map(|due| due.saturating_sub(self.origin.elapsed())),
                false => None,
            };
            match self.shared.wait(timeout) {
                Some(Request::Frame(frame)) => self.timeline.offer(frame, &mut actions),
                Some(Request::Finish(end)) => {
                    let end = self.timeline.finish(end, &mut actions);
                    self.shared.count_dropped(self.timeline.take_dropped());
                    self.perform(&mut actions)?;
                    if let Some(end) = end {
                        self.close(end)?;
                    }
                    return Ok(end);
                }
                None => self.timeline.advance(self.origin.elapsed(), &mut actions),
            }
            self.shared.count_dropped(self.timeline.take_dropped());
            self.perform(&mut actions)?;
        }
    }

    fn perform(&mut self, actions: &mut Vec<Action>) -> Result<(), VideoError> {
        for action in actions.drain(..) {
            let (tick, idr) = match action {
                Action::Content { frame, tick, idr, new_size } => {
                    if new_size || self.encoding.is_none() {
                        self.new_size(&frame, tick)?;
                    }
                    if let Some(encoding) = &mut self.encoding {
                        encoding.picture.fill(&frame)?;
                    }
                    // Released before encoding: the renderer may want it back.
                    drop(frame);
                    self.shared.count_encoded();
                    (tick, idr)
                }
                Action::Repeat { tick } => {
                    self.shared.count_extra();
                    (tick, true)
                }
                Action::Refine { tick } => {
                    self.shared.count_extra();
                    (tick, false)
                }
            };
            self.encode(idr, tick)?;
        }
        Ok(())
    }

    /// A new encoder for `frame`'s size, from `tick` on.
    fn new_size(&mut self, frame: &Frame, tick: u64) -> Result<(), VideoError> {
        let geometry = Geometry::new(frame.width(), frame.height());
        if geometry.is_scaled() {
            tracing::warn!(
                width = geometry.width,
                height = geometry.height,
                scaled_width = geometry.scaled_width,
                scaled_height = geometry.scaled_height,
                "frame larger than the H.264 encoder's limit; scaling it down"
            );
        }
        tracing::debug!(width = geometry.width, height = geometry.height, tick, "video size");
        self.encoding = Some(Encoding { picture: Picture::new(geometry), h264: H264::new(&self.config)? });
        self.sizes.push(VideoSize {
            at: self.grid.time(tick),
            width: geometry.width,
            height: geometry.height,
            coded_width: geometry.coded_width,
            coded_height: geometry.coded_height,
        });
        Ok(())
    }

    /// Encodes the picture shown from `tick`; the previous sample, now that
    /// its duration is known, joins the fragment, which is written first if
    /// this one is a keyframe.
    fn encode(&mut self, idr: bool, tick: u64) -> Result<(), VideoError> {
        let Some(encoding) = &mut self.encoding else { return Ok(()) };
        let Some(sample) = encoding.h264.encode(&encoding.picture, idr, self.grid.time(tick))? else {
            tracing::debug!(tick, "the encoder skipped a picture");
            return Ok(());
        };
        let mut writer = match self.writer.take() {
            Some(writer) => writer,
            None => {
                let (sps, pps) = encoding
                    .h264
                    .parameter_sets()
                    .ok_or_else(|| VideoError::Encoder("no parameter sets with the first picture".into()))?;
                let (timescale, _) = timescale(self.config.max_fps);
                let writer =
                    Mp4Writer::create(&self.path, encoding.picture.geometry(), sps, pps, timescale, self.config.sync)?;
                tracing::info!(path = %self.path.display(), "video file started");
                self.first = Some(tick);
                self.shared.count_bytes(writer.size());
                writer
            }
        };
        if let Some((previous, at)) = self.held.take() {
            writer.push(previous, (tick - at) * self.units_per_tick);
        }
        let flushed = if sample.keyframe { writer.flush() } else { Ok(0) };
        self.held = Some((sample, tick));
        self.writer = Some(writer);
        let written = flushed?;
        self.shared.count_bytes(written);
        if written > 0 || self.shared.file().is_none() {
            self.publish();
        }
        Ok(())
    }

    /// Ends the file at `end`: its last sample, the index, the durations.
    fn close(&mut self, end: u64) -> Result<(), VideoError> {
        let Some(mut writer) = self.writer.take() else { return Ok(()) };
        let end = match self.held.take() {
            Some((last, at)) => {
                let end = end.max(at + 1);
                writer.push(last, (end - at) * self.units_per_tick);
                end
            }
            None => end,
        };
        let (samples, keyframes, size) = (writer.samples(), writer.keyframes(), writer.size());
        let written = writer.finish()?;
        self.shared.count_bytes(written);
        let mut file = self.describe(samples, keyframes, Some(end));
        file.bytes = size + written;
        tracing::info!(
            path = %file.path.display(),
            samples = file.samples,
            sizes = file.sizes.len(),
            seconds = file.end.unwrap_or_default().saturating_sub(file.start).as_secs_f64(),
            "video file finished"
        );
        self.shared.set_file(file);
        Ok(())
    }

    /// Publishes the file as it is now (still being written).
    fn publish(&self) {
        if let Some(writer) = &self.writer {
            let mut file = self.describe(writer.samples(), writer.keyframes(), None);
            file.bytes = writer.size();
            self.shared.set_file(file);
        }
    }

    fn describe(&self, samples: u64, keyframes: u64, end: Option<u64>) -> VideoFile {
        VideoFile {
            path: self.path.clone(),
            sizes: self.sizes.clone(),
            start: self.grid.time(self.first.unwrap_or(0)),
            end: end.map(|end| self.grid.time(end)),
            samples,
            keyframes,
            bytes: 0,
        }
    }
}

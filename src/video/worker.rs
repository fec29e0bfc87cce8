//! The encoder thread: takes frames from the slot, asks the [`Timeline`] what
//! to encode, encodes, and writes one file per picture size.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::convert::{Geometry, Picture};
use super::fmp4::{Mp4Writer, TIMESCALE};
use super::h264::{H264, Sample};
use super::slot::{Request, Shared};
use super::timeline::{Action, MIN_STEP, Timeline};
use super::{Frame, VideoConfig, VideoError, VideoFile, VideoReport};

/// Gives up looking for a free file name after this many taken ones.
const MAX_FILE_INDEX: usize = 100_000;

/// `dir/{stem}.mp4` for index 0, else `dir/{stem}.{index}.mp4`.
pub(super) fn file_path(dir: &Path, stem: &str, index: usize) -> PathBuf {
    if index == 0 { dir.join(format!("{stem}.mp4")) } else { dir.join(format!("{stem}.{index}.mp4")) }
}

/// A duration in media ticks.
fn ticks(d: Duration) -> u64 {
    u64::try_from(d.as_nanos() * u128::from(TIMESCALE) / 1_000_000_000).unwrap_or(u64::MAX)
}

pub(super) struct Worker {
    config: VideoConfig,
    origin: Instant,
    shared: Arc<Shared>,
    timeline: Timeline,
    files: Files,
    segment: Option<Segment>,
    first: Option<Duration>,
}

/// Names, creates and registers the files.
struct Files {
    dir: PathBuf,
    stem: String,
    sync: bool,
    shared: Arc<Shared>,
    /// The next file name index to try.
    next_index: usize,
    /// Files created so far.
    created: usize,
}

/// The file of one picture size, with its encoder.
struct Segment {
    /// Position of its file in the shared list.
    slot: usize,
    start: Duration,
    picture: Picture,
    h264: H264,
    /// Created with the first sample (it needs the parameter sets).
    writer: Option<Mp4Writer>,
    /// The last sample, waiting for the next one to know its duration.
    pending: Option<(Sample, Duration)>,
}

impl Worker {
    pub(super) fn new(dir: PathBuf, stem: String, config: VideoConfig, origin: Instant, shared: Arc<Shared>) -> Worker {
        let timeline = Timeline::new(config.min_interval(), config.keyframe_interval);
        let files = Files { dir, stem, sync: config.sync, shared: Arc::clone(&shared), next_index: 0, created: 0 };
        Worker { config, origin, shared, timeline, files, segment: None, first: None }
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
            tracing::error!(%error, stem = %self.files.stem, "video recording failed");
            self.shared.close(true);
            // Finish the file if it still can be.
            if let Some(segment) = self.segment.take() {
                let end = segment.pending.as_ref().map_or(segment.start, |(_, at)| *at + MIN_STEP);
                if let Err(error) = segment.close(end, &self.shared) {
                    tracing::warn!(%error, "cannot finish the video file after the failure");
                }
            }
        }
        drop(guard);
        let end = result?;
        let duration = match (self.first, end) {
            (Some(first), Some(end)) => end.saturating_sub(first),
            _ => Duration::ZERO,
        };
        Ok(VideoReport { files: self.shared.files(), stats: self.shared.stats(), duration })
    }

    /// Returns the end of the recording (`None` without frames).
    fn main_loop(&mut self) -> Result<Option<Duration>, VideoError> {
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
                    if let (Some(segment), Some(end)) = (self.segment.take(), end) {
                        segment.close(end, &self.shared)?;
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
            let (t, idr) = match action {
                Action::Content { frame, t, idr, new_file } => {
                    let segment = match self.segment.take() {
                        Some(segment) if !new_file => segment,
                        previous => {
                            if let Some(previous) = previous {
                                previous.close(t, &self.shared)?;
                            }
                            self.first.get_or_insert(t);
                            Segment::new(&frame, t, self.files.created, &self.config)?
                        }
                    };
                    let segment = self.segment.insert(segment);
                    segment.picture.fill(&frame)?;
                    // Released before encoding: the renderer may want it back.
                    drop(frame);
                    self.shared.count_encoded();
                    (t, idr)
                }
                Action::Repeat { t } => {
                    self.shared.count_extra();
                    (t, true)
                }
                Action::Refine { t } => {
                    self.shared.count_extra();
                    (t, false)
                }
            };
            if let Some(segment) = &mut self.segment {
                segment.encode(idr, t, &mut self.files)?;
            }
        }
        Ok(())
    }
}

impl Files {
    /// Creates the next free file for `segment` and registers it.
    fn create(&mut self, segment: &Segment, sps: &[u8], pps: &[u8]) -> Result<Mp4Writer, VideoError> {
        let geometry = segment.picture.geometry();
        loop {
            let path = file_path(&self.dir, &self.stem, self.next_index);
            self.next_index += 1;
            match Mp4Writer::create(&path, geometry, sps, pps, self.sync) {
                Ok(writer) => {
                    tracing::info!(
                        path = %path.display(),
                        width = geometry.coded_width,
                        height = geometry.coded_height,
                        "video file started"
                    );
                    self.created += 1;
                    self.shared.count_bytes(writer.size());
                    // Listed at once: it is a valid (empty) video already.
                    self.shared.set_file(segment.slot, segment.describe(&writer, None));
                    return Ok(writer);
                }
                Err(VideoError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::AlreadyExists && self.next_index < MAX_FILE_INDEX =>
                {
                    tracing::warn!(path = %path.display(), "video file exists; trying the next name");
                }
                Err(error) => return Err(error),
            }
        }
    }
}

impl Segment {
    /// A segment for `frame`'s size starting at `t`, its file to be listed at
    /// `slot`.
    fn new(frame: &Frame, t: Duration, slot: usize, config: &VideoConfig) -> Result<Segment, VideoError> {
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
        let h264 = H264::new(config)?;
        Ok(Segment { slot, start: t, picture: Picture::new(geometry), h264, writer: None, pending: None })
    }

    /// Encodes the picture shown at `t`; the previous sample, now that its
    /// duration is known, joins the fragment, which is written first if this
    /// one is a keyframe.
    fn encode(&mut self, idr: bool, t: Duration, files: &mut Files) -> Result<(), VideoError> {
        let Some(sample) = self.h264.encode(&self.picture, idr, t)? else {
            tracing::debug!(?t, "the encoder skipped a picture");
            return Ok(());
        };
        let mut writer = match self.writer.take() {
            Some(writer) => writer,
            None => {
                let (sps, pps) = self
                    .h264
                    .parameter_sets()
                    .ok_or_else(|| VideoError::Encoder("no parameter sets with the first picture".into()))?;
                let (sps, pps) = (sps.to_vec(), pps.to_vec());
                files.create(self, &sps, &pps)?
            }
        };
        if let Some((previous, at)) = self.pending.take() {
            writer.push(previous, self.ticks(t) - self.ticks(at));
        }
        let flushed = if sample.keyframe { writer.flush() } else { Ok(0) };
        self.writer = Some(writer);
        let written = flushed?;
        if let Some(writer) = self.writer.as_ref().filter(|_| written > 0) {
            files.shared.count_bytes(written);
            files.shared.set_file(self.slot, self.describe(writer, None));
        }
        self.pending = Some((sample, t));
        Ok(())
    }

    /// Ends the file at `end`: its last sample, the index, the durations.
    fn close(mut self, end: Duration, shared: &Shared) -> Result<(), VideoError> {
        let Some(mut writer) = self.writer.take() else { return Ok(()) };
        let end = match self.pending.take() {
            Some((last, at)) => {
                let end = end.max(at + MIN_STEP);
                writer.push(last, self.ticks(end) - self.ticks(at));
                end
            }
            None => end,
        };
        let mut file = self.describe(&writer, Some(end));
        let written = writer.finish()?;
        shared.count_bytes(written);
        file.bytes += written;
        tracing::info!(
            path = %file.path.display(),
            samples = file.samples,
            seconds = end.saturating_sub(self.start).as_secs_f64(),
            "video file finished"
        );
        shared.set_file(self.slot, file);
        Ok(())
    }

    /// Recorder time `t` in media ticks since the start of the file.
    fn ticks(&self, t: Duration) -> u64 {
        ticks(t.saturating_sub(self.start))
    }

    fn describe(&self, writer: &Mp4Writer, end: Option<Duration>) -> VideoFile {
        let geometry = self.picture.geometry();
        VideoFile {
            path: writer.path().to_owned(),
            width: geometry.width,
            height: geometry.height,
            coded_width: geometry.coded_width,
            coded_height: geometry.coded_height,
            start: self.start,
            end,
            samples: writer.samples(),
            keyframes: writer.keyframes(),
            bytes: writer.size(),
        }
    }
}

//! The video recorder: turns the frames of a display's primary surface into
//! crash-safe H.264 MP4 files.
//!
//! The renderer feeds a [`VideoRecorder`] with [`Frame`]s (0xAARRGGBB pixels,
//! alpha ignored, rows top-down) whenever the surface changed. The recorder
//! never slows the caller: [`VideoRecorder::offer`] puts the frame in a
//! one-frame "latest frame" slot and returns; an encoder thread takes the
//! newest frame from there, so frames it cannot keep up with are replaced
//! (and counted as dropped), never queued.
//!
//! # Output
//!
//! `start(dir, "display-0", ..)` writes `dir/display-0.mp4`: one file for the
//! whole recording, whatever the surface sizes. Each size has its own
//! encoder; a size change starts with an IDR picture that carries its own
//! parameter sets (an `avc3` sample entry: parameter sets travel in the
//! samples), and every picture is encoded at its own size, never scaled to
//! another's (square pixels). The track's display size in the header is the
//! first picture's; players show each picture at its own size (FFmpeg's
//! decoder re-initialises on the new sequence parameter set, Chromium
//! announces a `resize`). [`VideoFile::sizes`] lists the sizes with the time
//! each started. The file is created when its first frame is encoded: a
//! recorder that never gets a frame writes nothing.
//!
//! Why not one file per size, or one frame size for all: a user gets one
//! file to play from start to end; a fixed frame size would have to be
//! known before the first frame (a live recording does not know what comes)
//! and would letterbox or scale every other size.
//!
//! The file is *fragmented* MP4 (ISO BMFF): `ftyp`, a `moov` with `mvex`,
//! then one `moof`+`mdat` fragment per group of pictures, each starting with
//! an IDR picture. A fragment is written as soon as the next keyframe is
//! encoded, so after a crash (even `SIGKILL`) the file plays up to the start
//! of the current group of pictures, which is at most
//! [`VideoConfig::keyframe_interval`] before the crash. A fragment is first
//! written as one `free` box, then (after `fdatasync`, unless
//! [`VideoConfig::sync`] is off) turned into `moof`+`mdat` by rewriting its
//! first 8 bytes: a crash (or a full disk) part-way through leaves a trailing
//! `free` box that readers skip, where a torn `moof` would make FFmpeg
//! refuse the whole file. [`VideoRecorder::finish`] writes the last
//! fragment, an `mfra` index, and patches the durations into the `moov` (in
//! place: the boxes keep their size). After a crash the `moov` durations are
//! 0 and players take the duration from the fragments.
//!
//! # Timing
//!
//! Frames carry the time they were taken ([`Frame::at`]) on the recorder's
//! clock ([`VideoRecorder::elapsed`]). Samples sit on a grid of ticks of
//! `1 / max_fps` s: a frame taken at `t` is shown from the first tick at or
//! after `t` (the surface as it was at that tick) until the next sample; a
//! newer frame for the same tick replaces it (counted as dropped). So every
//! sample starts on a tick and lasts whole ticks: the frame rate is variable
//! (a static screen costs nothing) but common tools see the real rate
//! (`ffprobe` reports `r_frame_rate` = `max_fps`, and `ffmpeg`'s default
//! constant-rate conversion only repeats frames). The last sample lasts
//! until [`VideoRecorder::finish`] (one sample is always held back until
//! its duration is known). The media timescale is 90 kHz when a tick is a
//! whole number of its units (`max_fps` divides 90 000), else
//! `max_fps * 1000` Hz.
//!
//! - **Keyframes.** A frame is encoded as an IDR picture when the next tick
//!   would be later than `keyframe_interval` (rounded down to whole ticks)
//!   after the last IDR. When no frame comes (static screen), the last
//!   picture is encoded again as an IDR ("repeat") exactly
//!   `keyframe_interval` after the last one. So keyframes are never more
//!   than `keyframe_interval` apart (players can seek), each completed
//!   fragment is written (crash safety) and the file's duration follows the
//!   wall clock. The cost is one IDR picture per interval while nothing
//!   changes (about 100 to 200 KB for a busy 1080p desktop at the default
//!   quality, much less for plain ones); raise the interval to trade seek
//!   granularity and crash loss for size. A recorder whose display is gone
//!   should be finished.
//! - **Refinement.** When no new frame follows within
//!   `max(1 / max_fps, 250 ms)` (rounded up to ticks), the same picture is
//!   encoded once more as a P picture, which sharpens it by 2–3 dB PSNR for
//!   a few kilobytes. So the picture a static screen (and the end of the
//!   video) settles on is a refined one; [`VideoRecorder::finish`] adds that
//!   pass if it is still due, moving the end one tick later if the last
//!   picture has no tick of its own left for it.
//!
//! # Pictures
//!
//! Pixels are converted to BT.709 limited-range YUV 4:2:0 (signalled in the
//! H.264 VUI and in a `colr` box). H.264 4:2:0 needs even sizes: an odd width
//! or height is **padded** by one column on the right or one row at the
//! bottom that repeats the last one (never cropped, never sheared); sizes
//! under 16 are padded the same way up to 16. Each picture's displayed size is its
//! padded size. Frames larger than the encoder's limit (3840x2160, or
//! 2160x3840 portrait) are scaled down (bilinear) to fit, keeping the aspect
//! ratio.
//!
//! Encoding uses OpenH264 (constrained baseline, BT.709 VUI) at a constant
//! quantizer ([`VideoConfig::qp`], 22 by default: text stays crisp; 40 to
//! 47 dB PSNR against the source pixels on desktops). Per-pixel colour noise
//! cannot survive 4:2:0 chroma subsampling (any H.264 encoder here): the
//! random-colour block of the test guest's screen comes out at about 13 dB.
//!
//! Note that the `ffmpeg` command line scales every output picture to the
//! size of its first one when it transcodes a file whose size changes; pass
//! a seek (`-ss`) to start where the size of interest begins.
//!
//! # Threads and memory
//!
//! One encoder thread per recorder. It holds at most the frame in the slot,
//! one rate-limited candidate, the picture being encoded (as YUV) and one
//! group of pictures of compressed data. `offer` takes a mutex only to swap
//! the slot's content.

mod convert;
mod fmp4;
mod h264;
mod slot;
#[cfg(test)]
mod tests;
mod timeline;
mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use slot::Shared;

/// The largest accepted [`VideoConfig::keyframe_interval`].
pub const MAX_KEYFRAME_INTERVAL: Duration = Duration::from_secs(3600);

/// The largest accepted [`VideoConfig::max_fps`].
pub const MAX_FPS: u32 = 240;

/// Settings of a [`VideoRecorder`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VideoConfig {
    /// The frame grid: ticks per second, so at most this many frames a
    /// second are encoded (default 30, at most [`MAX_FPS`]).
    pub max_fps: u32,
    /// The longest time between two IDR pictures (default 2 s, at least
    /// `1 / max_fps`, at most [`MAX_KEYFRAME_INTERVAL`]). It bounds seeking
    /// granularity and what a crash can lose.
    pub keyframe_interval: Duration,
    /// H.264 quantizer, 0 (best) to 51 (default 22). Every picture is
    /// encoded at this quantizer: the size follows the content.
    pub qp: u8,
    /// Encoder threads inside OpenH264 (default 1: at most one core per
    /// recording; 0 lets OpenH264 choose).
    pub threads: u16,
    /// Use OpenH264's screen-content mode: 25 to 35% smaller output on
    /// desktop content, but about three times slower (default off).
    pub screen_content: bool,
    /// `fdatasync` each file after each fragment, so that a power loss also
    /// keeps it (default on). A process crash never needs it.
    pub sync: bool,
    /// Frames are timed by the wall clock (default on): the encoder thread
    /// itself encodes rate-limited frames, refinements and keyframe repeats
    /// when they are due. When off, time only advances with the frames' own
    /// timestamps and [`VideoRecorder::finish_at`]: use that to encode frames
    /// whose timestamps are not "now" (tests, offline rendering), with
    /// [`VideoRecorder::push`].
    pub realtime: bool,
}

impl Default for VideoConfig {
    fn default() -> Self {
        VideoConfig {
            max_fps: 30,
            keyframe_interval: Duration::from_secs(2),
            qp: 22,
            threads: 1,
            screen_content: false,
            sync: true,
            realtime: true,
        }
    }
}

impl VideoConfig {
    /// The grid's tick, the shortest time between two frames: `1 / max_fps`.
    pub fn min_interval(&self) -> Duration {
        Duration::from_secs(1) / self.max_fps.max(1)
    }

    pub(crate) fn validate(&self) -> Result<(), VideoError> {
        if self.max_fps == 0 || self.max_fps > MAX_FPS {
            return Err(VideoError::Config(format!("max_fps must be 1 to {MAX_FPS}, not {}", self.max_fps)));
        }
        if self.keyframe_interval < self.min_interval() || self.keyframe_interval > MAX_KEYFRAME_INTERVAL {
            return Err(VideoError::Config(format!(
                "keyframe_interval must be 1/max_fps to {} s, not {:?}",
                MAX_KEYFRAME_INTERVAL.as_secs(),
                self.keyframe_interval
            )));
        }
        if self.qp > 51 {
            return Err(VideoError::Config(format!("qp must be 0 to 51, not {}", self.qp)));
        }
        Ok(())
    }
}

/// One picture of the primary surface.
///
/// Pixels are `u32` 0xAARRGGBB (SPICE's 32-bit xRGB; alpha is ignored), rows
/// top-down, `stride` pixels apart. The pixels are shared, not copied: a
/// renderer that keeps its surface in an `Arc<Vec<u32>>` can hand out clones
/// and modify it with [`Arc::make_mut`], which copies only while the recorder
/// still holds the previous frame.
#[derive(Clone)]
pub struct Frame {
    at: Duration,
    width: u32,
    height: u32,
    stride: usize,
    pixels: Arc<Vec<u32>>,
}

impl Frame {
    /// A frame whose rows are `width` pixels apart.
    ///
    /// `at` is the time the surface showed this picture, on the recorder's
    /// clock ([`VideoRecorder::elapsed`]).
    pub fn new(at: Duration, width: u32, height: u32, pixels: impl Into<Arc<Vec<u32>>>) -> Result<Frame, VideoError> {
        Frame::with_stride(at, width, height, width as usize, pixels)
    }

    /// A frame whose rows are `stride` pixels apart (`stride >= width`).
    pub fn with_stride(
        at: Duration,
        width: u32,
        height: u32,
        stride: usize,
        pixels: impl Into<Arc<Vec<u32>>>,
    ) -> Result<Frame, VideoError> {
        let pixels = pixels.into();
        let needed = if width == 0 || height == 0 || stride < width as usize {
            None
        } else {
            stride.checked_mul(height as usize - 1).and_then(|n| n.checked_add(width as usize))
        };
        match needed {
            Some(needed) if pixels.len() >= needed => Ok(Frame { at, width, height, stride, pixels }),
            _ => Err(VideoError::FrameSize { width, height, stride, len: pixels.len() }),
        }
    }

    /// Presentation time on the recorder's clock.
    pub fn at(&self) -> Duration {
        self.at
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Distance between rows, in pixels.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// The pixels, 0xAARRGGBB.
    pub fn pixels(&self) -> &[u32] {
        &self.pixels
    }
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("at", &self.at)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("stride", &self.stride)
            .finish_non_exhaustive()
    }
}

/// Counters of a running recorder (all monotonic).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VideoStats {
    /// Frames passed to [`VideoRecorder::offer`] or [`VideoRecorder::push`].
    pub frames_offered: u64,
    /// Frames encoded into the video.
    pub frames_encoded: u64,
    /// Frames dropped: replaced in the slot before the encoder took them,
    /// replaced while held back by the rate limit, or offered after a failure.
    /// Once finished, `frames_offered == frames_encoded + frames_dropped`.
    pub frames_dropped: u64,
    /// Extra samples that re-encode the current picture: keyframe repeats on
    /// a static screen and refinement passes.
    pub extra_samples: u64,
    /// Bytes written to the file.
    pub bytes_written: u64,
    /// The encoder thread stopped on an error ([`VideoRecorder::finish`]
    /// returns it); later frames are dropped.
    pub failed: bool,
}

/// The surface size from one moment of the recording on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VideoSize {
    /// Recorder time of the first frame of this size (on the `1 / fps` grid).
    pub at: Duration,
    /// The surface size.
    pub width: u32,
    /// The surface size.
    pub height: u32,
    /// The encoded (and displayed) size: even, at least 16, at most the
    /// encoder's limit.
    pub coded_width: u32,
    /// The encoded (and displayed) size.
    pub coded_height: u32,
}

/// The MP4 file written by a recorder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VideoFile {
    /// Where it is.
    pub path: PathBuf,
    /// The surface sizes, in order: one entry per resolution change (the
    /// first one at [`start`](Self::start)).
    pub sizes: Vec<VideoSize>,
    /// Recorder time of its first frame (its time 0).
    pub start: Duration,
    /// Recorder time its last frame ends; `None` while it is being written
    /// (or if the recorder failed before finishing it).
    pub end: Option<Duration>,
    /// Samples (pictures) in it, counting repeats and refinements.
    pub samples: u64,
    /// IDR pictures in it.
    pub keyframes: u64,
    /// Its size in bytes.
    pub bytes: u64,
}

/// What a finished recorder did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VideoReport {
    /// The file, if any frame was encoded.
    pub file: Option<VideoFile>,
    /// The final counters.
    pub stats: VideoStats,
    /// From the first frame to the end of the last one (zero without frames).
    pub duration: Duration,
}

/// Errors of the video recorder.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VideoError {
    /// A [`VideoConfig`] value is out of range.
    #[error("invalid video configuration: {0}")]
    Config(String),
    /// The file stem is empty or not a plain file name.
    #[error("invalid video file stem {0:?}: it must be a plain file name")]
    Stem(String),
    /// The pixel buffer does not match the frame's size.
    #[error("a {width}x{height} frame with stride {stride} does not fit in {len} pixels (or is empty)")]
    FrameSize {
        /// Frame width.
        width: u32,
        /// Frame height.
        height: u32,
        /// Row distance in pixels.
        stride: usize,
        /// Pixels given.
        len: usize,
    },
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// OpenH264 refused to encode.
    #[error("H.264 encoder: {0}")]
    Encoder(String),
    /// The RGB to YUV conversion failed.
    #[error("RGB to YUV conversion: {0}")]
    Convert(String),
    /// Building an MP4 box failed.
    #[error("MP4 muxer: {0}")]
    Mux(String),
    /// The encoder thread could not be started.
    #[error("cannot start the video encoder thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The encoder thread panicked.
    #[error("the video encoder thread panicked")]
    Panicked,
}

/// Records one display: owns the encoder thread. See the [module docs](self).
///
/// Dropping it without [`finish`](Self::finish) finishes it at the current
/// time (errors are logged).
#[derive(Debug)]
pub struct VideoRecorder {
    shared: Arc<Shared>,
    worker: Option<JoinHandle<Result<VideoReport, VideoError>>>,
    origin: Instant,
    realtime: bool,
}

impl VideoRecorder {
    /// Checks a configuration without starting anything.
    ///
    /// # Errors
    /// [`VideoError::Config`] for values out of range.
    pub fn check_config(config: &VideoConfig) -> Result<(), VideoError> {
        config.validate()
    }

    /// Starts a recorder writing `dir/{stem}.mp4`.
    ///
    /// Its clock starts now. Fails if the configuration is invalid, `stem`
    /// is not a plain file name, `dir` is not a directory or
    /// `dir/{stem}.mp4` already exists (files are never overwritten).
    pub fn start(dir: &Path, stem: &str, config: VideoConfig) -> Result<VideoRecorder, VideoError> {
        VideoRecorder::start_at(dir, stem, config, Instant::now())
    }

    /// Like [`start`](Self::start), with the clock's origin given: frames'
    /// [`Frame::at`] and [`VideoFile::start`] are measured from `origin`
    /// (for example the session's start), which must not be in the future.
    pub fn start_at(dir: &Path, stem: &str, config: VideoConfig, origin: Instant) -> Result<VideoRecorder, VideoError> {
        config.validate()?;
        let plain = Path::new(stem).file_name().is_some_and(|name| name == stem);
        if stem.is_empty() || !plain || stem.contains(['/', '\\']) {
            return Err(VideoError::Stem(stem.to_owned()));
        }
        let meta = std::fs::metadata(dir).map_err(|source| VideoError::Io { path: dir.to_owned(), source })?;
        if !meta.is_dir() {
            let source = std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory");
            return Err(VideoError::Io { path: dir.to_owned(), source });
        }
        let path = dir.join(format!("{stem}.mp4"));
        if path.symlink_metadata().is_ok() {
            let source = std::io::Error::new(std::io::ErrorKind::AlreadyExists, "already exists");
            return Err(VideoError::Io { path, source });
        }

        let shared = Arc::new(Shared::default());
        let realtime = config.realtime;
        let job = worker::Worker::new(path, config, origin, Arc::clone(&shared));
        let worker = std::thread::Builder::new()
            .name(format!("video-{stem}"))
            .spawn(move || job.run())
            .map_err(VideoError::Spawn)?;
        tracing::debug!(dir = %dir.display(), stem, "video recorder started");
        Ok(VideoRecorder { shared, worker: Some(worker), origin, realtime })
    }

    /// Time since the recorder's origin: the `at` to give a frame of the
    /// current surface.
    pub fn elapsed(&self) -> Duration {
        self.origin.elapsed()
    }

    /// Hands a frame to the encoder thread without waiting. If the previous
    /// frame is still waiting in the slot it is replaced and counted as
    /// dropped.
    pub fn offer(&self, frame: Frame) {
        self.shared.offer(frame);
    }

    /// Hands a frame to the encoder thread, first waiting until it has taken
    /// the previous one: nothing is dropped for lack of time (the rate limit
    /// still applies). For offline use; a renderer uses [`offer`](Self::offer).
    /// Returns at once (dropping the frame) if the encoder thread failed.
    pub fn push(&self, frame: Frame) {
        self.shared.push(frame);
    }

    /// The current counters.
    pub fn stats(&self) -> VideoStats {
        self.shared.stats()
    }

    /// The file as written so far (`None` before the first picture).
    pub fn file(&self) -> Option<VideoFile> {
        self.shared.file()
    }

    /// Stops recording: encodes what is pending, ends the last frame now
    /// (realtime clock) or one frame interval after the last picture (when
    /// [`VideoConfig::realtime`] is off), finalizes the file, joins the
    /// thread.
    pub fn finish(mut self) -> Result<VideoReport, VideoError> {
        let end = self.realtime.then(|| self.elapsed());
        self.stop(end)
    }

    /// Like [`finish`](Self::finish), with the end of the last frame given on
    /// the recorder's clock (it is moved later if frames are newer).
    pub fn finish_at(mut self, end: Duration) -> Result<VideoReport, VideoError> {
        self.stop(Some(end))
    }

    fn stop(&mut self, end: Option<Duration>) -> Result<VideoReport, VideoError> {
        let Some(worker) = self.worker.take() else {
            return Err(VideoError::Panicked);
        };
        self.shared.request_finish(end);
        worker.join().unwrap_or(Err(VideoError::Panicked))
    }
}

impl Drop for VideoRecorder {
    fn drop(&mut self) {
        if self.worker.is_some() {
            let end = self.realtime.then(|| self.elapsed());
            if let Err(error) = self.stop(end) {
                tracing::error!(%error, "video recorder dropped without finish; finishing failed");
            }
        }
    }
}

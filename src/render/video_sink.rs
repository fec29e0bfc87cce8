//! Frames of the live renderer to H.264 MP4 files: one
//! [`VideoRecorder`] per display channel, started at the channel's first
//! complete frame, named `display-<channel id>.mp4` in the session folder,
//! one file for the whole session of that display, resolution changes
//! included.
//!
//! `offer` never waits: the recorder keeps the newest frame and drops what
//! it cannot encode in time (counted), so video never slows the renderer.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use serde_json::json;

use super::canvas::Surface;
use super::live::FrameSink;
use crate::video::{Frame, VideoConfig, VideoRecorder, VideoReport};

/// The session's video recorders.
pub struct VideoSink {
    dir: PathBuf,
    config: VideoConfig,
    origin: Instant,
    recorders: HashMap<u8, VideoRecorder>,
    failed: HashMap<u8, String>,
}

impl VideoSink {
    /// Records into `dir` with `config`; recorder clocks start at `origin`
    /// (the session's start).
    pub fn new(dir: PathBuf, config: VideoConfig, origin: Instant) -> Self {
        Self { dir, config, origin, recorders: HashMap::new(), failed: HashMap::new() }
    }
}

impl FrameSink for VideoSink {
    fn frame(&mut self, channel_id: u8, _at: SystemTime, surface: &Surface) {
        if self.failed.contains_key(&channel_id) {
            return;
        }
        if !self.recorders.contains_key(&channel_id) {
            let stem = format!("display-{channel_id}");
            match VideoRecorder::start_at(&self.dir, &stem, self.config.clone(), self.origin) {
                Ok(r) => {
                    self.recorders.insert(channel_id, r);
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot start video recording; rendering goes on");
                    self.failed.insert(channel_id, e.to_string());
                    return;
                }
            }
        }
        let Some(rec) = self.recorders.get(&channel_id) else { return };
        match Frame::new(rec.elapsed(), surface.width, surface.height, surface.data.clone()) {
            Ok(frame) => rec.offer(frame),
            Err(e) => tracing::warn!(error = %e, "frame refused by the video recorder"),
        }
    }

    fn close(&mut self, channel_id: u8) -> Option<serde_json::Value> {
        if let Some(e) = self.failed.remove(&channel_id) {
            return Some(json!({ "error": e }));
        }
        let rec = self.recorders.remove(&channel_id)?;
        Some(match rec.finish() {
            Ok(report) => video_report_json(&report, &self.dir),
            Err(e) => json!({ "error": e.to_string() }),
        })
    }
}

/// A recorder's report as `session.json` holds it (times in seconds from
/// the session's start).
pub fn video_report_json(r: &VideoReport, dir: &std::path::Path) -> serde_json::Value {
    let file = r.file.as_ref().map(|f| {
        let sizes: Vec<_> = f
            .sizes
            .iter()
            .map(|s| {
                json!({
                    "at_s": s.at.as_secs_f64(),
                    "width": s.width,
                    "height": s.height,
                    "coded_width": s.coded_width,
                    "coded_height": s.coded_height,
                })
            })
            .collect();
        json!({
            "file": f.path.strip_prefix(dir).unwrap_or(&f.path).display().to_string(),
            "start_s": f.start.as_secs_f64(),
            "end_s": f.end.map(|e| e.as_secs_f64()),
            "resolutions": sizes,
            "samples": f.samples,
            "keyframes": f.keyframes,
            "bytes": f.bytes,
        })
    });
    json!({
        "file": file,
        "duration_s": r.duration.as_secs_f64(),
        "frames_offered": r.stats.frames_offered,
        "frames_encoded": r.stats.frames_encoded,
        "frames_dropped": r.stats.frames_dropped,
        "extra_samples": r.stats.extra_samples,
        "bytes_written": r.stats.bytes_written,
    })
}

//! Rendering a recorded session from its pcaps (`spicetap render`): the
//! same renderer, fed from [`crate::capture::replay`].

use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

use super::canvas::Surface;
use super::renderer::{DisplayRenderer, RenderStats};
use crate::capture::replay::{self, ReplayError};
use crate::protocol::{ChannelType, Direction};
use crate::wire::Reader;

/// Why a recording could not be rendered.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum OfflineError {
    /// No display pcap was found.
    #[error("no display pcap for display {display} in {dir}")]
    NoPcap {
        /// The folder searched.
        dir: PathBuf,
        /// The display channel id.
        display: u8,
    },
    /// The pcap could not be replayed.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// The recording never created a primary surface.
    #[error("the recording has no primary surface")]
    NoSurface,
    /// The PNG could not be written.
    #[error("writing PNG: {0}")]
    Png(String),
    /// The MP4 could not be written.
    #[error("writing MP4: {0}")]
    Video(String),
}

/// Finds the pcap of display channel `display` in a session folder (or
/// takes `path` itself when it is a file).
///
/// # Errors
/// [`OfflineError::NoPcap`].
pub fn display_pcap(path: &Path, display: u8) -> Result<PathBuf, OfflineError> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    for name in [format!("display-{display}.pcap"), format!("display{display}.pcap"), "display.pcap".to_string()] {
        let p = path.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(OfflineError::NoPcap { dir: path.to_path_buf(), display })
}

/// Where to stop rendering a recording.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Until {
    /// The end of the recording.
    #[default]
    End,
    /// This long after the first message.
    Time(Duration),
    /// Right after the n-th `SPICE_MSG_DISPLAY_MARK` (1 = the first frame,
    /// which is what spicy-screenshot saves).
    Mark(u64),
}

/// Renders a display pcap up to `until`; returns the primary surface and
/// the renderer's statistics.
///
/// # Errors
/// [`OfflineError`] when the pcap cannot be replayed or no primary surface
/// was created.
pub fn render_pcap(
    pcap: &Path,
    channel_type: Option<ChannelType>,
    until: Until,
) -> Result<(Surface, RenderStats), OfflineError> {
    render_pcap_frames(pcap, channel_type, until, None).map(|(s, st, _)| (s, st))
}

/// Called with the capture time (since the first message) and the primary
/// surface after a change.
pub type OnChange<'a> = dyn FnMut(Duration, &Surface) + 'a;

/// As [`render_pcap`], calling `on_change` with the capture time (since the
/// first message) and the primary surface after every message that changed
/// it; returns the time of the last message too.
///
/// # Errors
/// As [`render_pcap`].
pub fn render_pcap_frames(
    pcap: &Path,
    channel_type: Option<ChannelType>,
    until: Until,
    mut on_change: Option<&mut OnChange<'_>>,
) -> Result<(Surface, RenderStats, Duration), OfflineError> {
    let replay = replay::read(pcap, channel_type)?;
    let mut last = Duration::ZERO;
    let mut renderer = DisplayRenderer::new();
    let start = replay.messages.first().map(|m| m.at);
    for m in &replay.messages {
        if let (Until::Time(limit), Some(start)) = (until, start)
            && m.at.saturating_sub(start) > limit
        {
            break;
        }
        if m.dir != Direction::ServerToClient {
            renderer.client_message(m.header.msg_type, &m.body);
            continue;
        }
        if m.header.sub_list != 0 {
            apply_sub_list(&mut renderer, &m.body, m.header.sub_list);
        }
        let ev = renderer.server_message(m.header.msg_type, &m.body);
        last = start.map_or(Duration::ZERO, |s| m.at.saturating_sub(s));
        if ev != super::renderer::RenderEvent::None
            && let (Some(f), Some(surface)) = (on_change.as_deref_mut(), renderer.primary())
        {
            f(last, surface);
        }
        if let Until::Mark(n) = until
            && renderer.stats.marks >= n
        {
            break;
        }
    }
    let surface = renderer.primary().cloned().ok_or(OfflineError::NoSurface)?;
    Ok((surface, renderer.stats, last))
}

/// Renders a display pcap into an MP4 at `mp4` (and the primary surface at
/// the end), frames timed by the capture timestamps.
///
/// # Errors
/// [`OfflineError`] from rendering, or [`OfflineError::Video`].
pub fn render_pcap_mp4(
    pcap: &Path,
    channel_type: Option<ChannelType>,
    until: Until,
    mp4: &Path,
    config: crate::video::VideoConfig,
) -> Result<(Surface, RenderStats, crate::video::VideoReport), OfflineError> {
    let video_err = |e: crate::video::VideoError| OfflineError::Video(e.to_string());
    let dir = mp4.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let stem = mp4.file_stem().and_then(|s| s.to_str()).ok_or_else(|| OfflineError::Video("bad MP4 name".into()))?;
    let config = crate::video::VideoConfig { realtime: false, ..config };
    let interval = config.min_interval();
    let rec = crate::video::VideoRecorder::start(dir, stem, config).map_err(video_err)?;
    let mut last_frame: Option<Duration> = None;
    let mut pending: Option<(Duration, Surface)> = None;
    let push = |at: Duration, s: &Surface| {
        if let Ok(f) = crate::video::Frame::new(at, s.width, s.height, s.data.clone()) {
            rec.push(f);
        }
    };
    let mut on_change = |at: Duration, s: &Surface| {
        if last_frame.is_none_or(|t| at.saturating_sub(t) >= interval) {
            push(at, s);
            last_frame = Some(at);
            pending = None;
        } else {
            pending = Some((at, s.clone()));
        }
    };
    let (surface, stats, end) = render_pcap_frames(pcap, channel_type, until, Some(&mut on_change))?;
    if let Some((at, s)) = pending.take() {
        push(at.max(last_frame.unwrap_or_default() + interval), &s);
    }
    let end = end.max(last_frame.unwrap_or_default() + interval);
    let report = rec.finish_at(end).map_err(video_err)?;
    Ok((surface, stats, report))
}

/// Applies the sub-messages a full header's `sub_list` points at
/// (`SpiceSubMessageList`: size u16, `offsets u32[size]`; each
/// `SpiceSubMessage`: type u16, size u32, body), before the message itself
/// (spice-gtk `spice-channel.c`).
pub fn apply_sub_list(renderer: &mut DisplayRenderer, body: &[u8], offset: u32) {
    let Some(list) = usize::try_from(offset).ok().and_then(|o| body.get(o..)) else { return };
    let mut r = Reader::new(list);
    let Ok(n) = r.u16() else { return };
    for _ in 0..n {
        let Ok(at) = r.u32() else { return };
        let sub = usize::try_from(at).ok().and_then(|o| body.get(o..)).and_then(|rest| {
            let mut s = Reader::new(rest);
            let ty = s.u16().ok()?;
            let size = s.u32().ok()?;
            Some((ty, s.take(usize::try_from(size).ok()?).ok()?))
        });
        if let Some((ty, data)) = sub {
            renderer.server_message(ty, data);
        }
    }
}

/// Writes the surface's RGB as an 8-bit PNG.
///
/// # Errors
/// [`OfflineError::Png`].
pub fn write_png(surface: &Surface, path: &Path) -> Result<(), OfflineError> {
    let file = std::fs::File::create(path).map_err(|e| OfflineError::Png(e.to_string()))?;
    let mut enc = png::Encoder::new(BufWriter::new(file), surface.width, surface.height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(|e| OfflineError::Png(e.to_string()))?;
    let rgb: Vec<u8> = surface.data.iter().flat_map(|p| [(p >> 16) as u8, (p >> 8) as u8, *p as u8]).collect();
    w.write_image_data(&rgb).map_err(|e| OfflineError::Png(e.to_string()))?;
    w.finish().map_err(|e| OfflineError::Png(e.to_string()))
}

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
    let replay = replay::read(pcap, channel_type)?;
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
        renderer.server_message(m.header.msg_type, &m.body);
        if let Until::Mark(n) = until
            && renderer.stats.marks >= n
        {
            break;
        }
    }
    let surface = renderer.primary().cloned().ok_or(OfflineError::NoSurface)?;
    Ok((surface, renderer.stats))
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

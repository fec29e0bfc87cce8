//! `spicetap inspect`: a SPICE-aware reading of a recording: one
//! time-ordered timeline across every channel pcap of a session folder, a
//! line per message with the fields that matter, and a one-screen summary.
//!
//! Fields shown (spice-protocol `enums.h`, spice-common `spice.proto`):
//! surface create/destroy (id, size, format), draws (target surface,
//! bounding box, clip, source image type and size from its
//! `SpiceImageDescriptor`), stream create/destroy (codec, sizes), MARK,
//! mouse modes, agent messages by `VDAgentMessage` type. Key presses
//! (`SPICE_MSGC_INPUTS_KEY_*`) are shown only when asked: they can be
//! passwords.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use thiserror::Error;

use crate::capture::replay::{self, Replay, ReplayError};
use crate::protocol::{ChannelType, Direction, message_name};
use crate::render::display::{self, Clip, DisplayMessage, Rect};

/// Why a recording cannot be inspected.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum InspectError {
    /// The folder cannot be listed.
    #[error("{path}: {source}")]
    Io {
        /// The folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A pcap cannot be replayed.
    #[error("{path}: {source}")]
    Replay {
        /// The pcap.
        path: PathBuf,
        /// Why.
        #[source]
        source: ReplayError,
    },
    /// No channel pcap in the folder.
    #[error("{0}: no channel pcaps (not a spicetap session folder?)")]
    Empty(PathBuf),
}

/// What to show.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Channels to show, as type names (`display`) or `type-id`
    /// (`display-0`); empty: all.
    pub channels: Vec<String>,
    /// Message names to show, matched as case-insensitive substrings
    /// (`DRAW_COPY`, `mark`); empty: all.
    pub messages: Vec<String>,
    /// Show key presses.
    pub keys: bool,
}

/// One line of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    /// Seconds since the session's first message.
    pub t: f64,
    /// `<type>-<id>`, as the pcap is named.
    pub channel: String,
    /// `c2s` or `s2c`.
    pub dir: &'static str,
    /// The message name (`SPICE_MSG_DISPLAY_DRAW_COPY`).
    pub name: String,
    /// Body bytes.
    pub size: usize,
    /// The fields that matter, as text (empty when none).
    pub fields: String,
}

/// A channel pcap of a session, replayed.
struct Channel {
    name: String,
    replay: Replay,
}

fn channel_pcaps(dir: &Path) -> Result<Vec<PathBuf>, InspectError> {
    let pcaps = replay::session_pcaps(dir).map_err(|source| InspectError::Io { path: dir.to_path_buf(), source })?;
    if pcaps.is_empty() {
        return Err(InspectError::Empty(dir.to_path_buf()));
    }
    Ok(pcaps)
}

fn load(dir: &Path) -> Result<Vec<Channel>, InspectError> {
    channel_pcaps(dir)?
        .into_iter()
        .map(|p| {
            let replay = replay::read(&p, None).map_err(|source| InspectError::Replay { path: p.clone(), source })?;
            let name = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            Ok(Channel { name, replay })
        })
        .collect()
}

/// The timeline of session folder `dir` under `filter`, in time order.
///
/// # Errors
/// [`InspectError`] for an unreadable folder or pcap.
pub fn timeline(dir: &Path, filter: &Filter) -> Result<Vec<Line>, InspectError> {
    let channels = load(dir)?;
    let start = channels.iter().filter_map(|c| c.replay.messages.first().map(|m| m.at)).min().unwrap_or_default();
    let mut lines = Vec::new();
    for c in &channels {
        let ct = c.replay.channel_type;
        let wanted = filter.channels.is_empty()
            || filter.channels.iter().any(|f| *f == c.name || *f == ct.name() || c.name.starts_with(&format!("{f}.")));
        if !wanted {
            continue;
        }
        for m in &c.replay.messages {
            let name = message_name(ct, m.dir, m.header.msg_type).into_owned();
            if !filter.messages.is_empty()
                && !filter.messages.iter().any(|f| name.to_ascii_lowercase().contains(&f.to_ascii_lowercase()))
            {
                continue;
            }
            lines.push(Line {
                t: m.at.saturating_sub(start).as_secs_f64(),
                channel: c.name.clone(),
                dir: if m.dir == Direction::ClientToServer { "c2s" } else { "s2c" },
                fields: fields(ct, m.dir, m.header.msg_type, &m.body, filter.keys),
                name,
                size: m.body.len(),
            });
        }
    }
    lines.sort_by(|a, b| a.t.total_cmp(&b.t));
    Ok(lines)
}

/// One line as text: time, channel, direction, name, fields.
pub fn format_line(l: &Line) -> String {
    let arrow = if l.dir == "c2s" { "->" } else { "<-" };
    let mut s = format!("{:>10.6}  {:<12} {arrow} {}", l.t, l.channel, l.name);
    if !l.fields.is_empty() {
        s.push_str("  ");
        s.push_str(&l.fields);
    }
    s
}

fn rect(r: &Rect) -> String {
    format!("({},{})-({},{}) {}x{}", r.left, r.top, r.right, r.bottom, r.width(), r.height())
}

fn clip(c: &Clip) -> String {
    match c {
        Clip::None => "clip none".into(),
        Clip::Rects(r) => format!("clip {} rects", r.len()),
    }
}

/// Type and size of the `SpiceImageDescriptor` at `offset` of `body` (id
/// u64, type u8, flags u8, width u32, height u32).
fn image(body: &[u8], offset: u32) -> String {
    let Some(d) = usize::try_from(offset).ok().and_then(|o| body.get(o..o.checked_add(18)?)) else {
        return "image ?".into();
    };
    let w = u32::from_le_bytes([d[10], d[11], d[12], d[13]]);
    let h = u32::from_le_bytes([d[14], d[15], d[16], d[17]]);
    format!("image {} {w}x{h}", crate::render::image::type_name(d[8]))
}

/// `SPICE_MSG_MAIN_MOUSE_MODE`, `SPICE_MSGC_MAIN_MOUSE_MODE_REQUEST`,
/// `SPICE_MSG(C)_MAIN_AGENT_DATA` (spice-protocol `enums.h`).
const MAIN_MOUSE_MODE: u16 = 105;
const MAINC_MOUSE_MODE_REQUEST: u16 = 105;
const MAIN_AGENT_DATA: u16 = 110;
const MAINC_AGENT_DATA: u16 = 107;
/// `SPICE_MSGC_INPUTS_KEY_DOWN`, `KEY_UP`, `KEY_MODIFIERS`, `KEY_SCANCODE`.
const INPUTS_KEYS: [u16; 4] = [101, 102, 103, 104];

fn mouse_mode(m: u16) -> &'static str {
    match m {
        1 => "server",
        2 => "client",
        _ => "?",
    }
}

/// `VDAgentMessage` types (spice-protocol `vd_agent.h`).
fn agent_type(t: u32) -> String {
    const NAMES: [&str; 17] = [
        "",
        "MOUSE_STATE",
        "MONITORS_CONFIG",
        "REPLY",
        "CLIPBOARD",
        "DISPLAY_CONFIG",
        "ANNOUNCE_CAPABILITIES",
        "CLIPBOARD_GRAB",
        "CLIPBOARD_REQUEST",
        "CLIPBOARD_RELEASE",
        "FILE_XFER_START",
        "FILE_XFER_STATUS",
        "FILE_XFER_DATA",
        "CLIENT_DISCONNECTED",
        "MAX_CLIPBOARD",
        "AUDIO_VOLUME_SYNC",
        "GRAPHICS_DEVICE_INFO",
    ];
    NAMES.get(t as usize).filter(|n| !n.is_empty()).map_or_else(|| format!("type {t}"), |n| format!("VD_AGENT_{n}"))
}

fn fields(ct: ChannelType, dir: Direction, ty: u16, body: &[u8], keys: bool) -> String {
    let u16_at = |o: usize| body.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| body.get(o..o + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    match (ct, dir) {
        (ChannelType::DISPLAY, Direction::ServerToClient) => display_fields(ty, body),
        (ChannelType::INPUTS, Direction::ClientToServer) if INPUTS_KEYS.contains(&ty) => {
            if keys {
                let mut s = String::from("bytes");
                for b in body {
                    let _ = write!(s, " {b:02x}");
                }
                s
            } else {
                "(hidden; --keys shows key presses)".into()
            }
        }
        (ChannelType::MAIN, Direction::ServerToClient) if ty == MAIN_MOUSE_MODE => match (u16_at(0), u16_at(2)) {
            (Some(sup), Some(cur)) => format!("supported {sup:#x} current {}", mouse_mode(cur)),
            _ => String::new(),
        },
        (ChannelType::MAIN, Direction::ClientToServer) if ty == MAINC_MOUSE_MODE_REQUEST => {
            u16_at(0).map(|m| format!("request {}", mouse_mode(m))).unwrap_or_default()
        }
        (ChannelType::MAIN, Direction::ServerToClient) if ty == MAIN_AGENT_DATA => {
            u32_at(4).map(agent_type).unwrap_or_default()
        }
        (ChannelType::MAIN, Direction::ClientToServer) if ty == MAINC_AGENT_DATA => {
            u32_at(4).map(agent_type).unwrap_or_default()
        }
        _ => String::new(),
    }
}

fn display_fields(ty: u16, body: &[u8]) -> String {
    let Ok(m) = display::parse(ty, body) else { return "(unparsed)".into() };
    match m {
        DisplayMessage::SurfaceCreate { surface_id, width, height, format, flags } => {
            format!("surface {surface_id} {width}x{height} format {format} flags {flags:#x}")
        }
        DisplayMessage::SurfaceDestroy { surface_id } => format!("surface {surface_id}"),
        DisplayMessage::Copy { base, copy, .. } => format!(
            "surface {} box {} {} {}",
            base.surface_id,
            rect(&base.bbox),
            clip(&base.clip),
            image(body, copy.src_bitmap)
        ),
        DisplayMessage::Transparent { base, src_bitmap, .. }
        | DisplayMessage::Rop3 { base, src_bitmap, .. }
        | DisplayMessage::AlphaBlend { base, src_bitmap, .. } => {
            format!(
                "surface {} box {} {} {}",
                base.surface_id,
                rect(&base.bbox),
                clip(&base.clip),
                image(body, src_bitmap)
            )
        }
        DisplayMessage::Fill { base, .. }
        | DisplayMessage::Solid { base, .. }
        | DisplayMessage::CopyBits { base, .. } => {
            format!("surface {} box {} {}", base.surface_id, rect(&base.bbox), clip(&base.clip))
        }
        DisplayMessage::StreamCreate { id, codec, src_width, src_height, dest, .. } => {
            format!("stream {id} codec {codec} source {src_width}x{src_height} dest {}", rect(&dest))
        }
        DisplayMessage::StreamDestroy { id } => format!("stream {id}"),
        _ => String::new(),
    }
}

/// One channel in the summary.
#[derive(Debug, Serialize)]
pub struct ChannelSummary {
    /// `<type>-<id>`.
    pub channel: String,
    /// Seconds from its first to its last packet.
    pub seconds: f64,
    /// Messages and body bytes client to server.
    pub messages_c2s: u64,
    /// Body bytes client to server.
    pub bytes_c2s: u64,
    /// Messages server to client.
    pub messages_s2c: u64,
    /// Body bytes server to client.
    pub bytes_s2c: u64,
    /// Messages per second, both ways.
    pub messages_per_second: f64,
}

/// The session in a screen: channels, durations, bytes, message rates,
/// and from `session.json` what the renderer could not draw and any
/// capture loss.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Channels in pcap name order.
    pub channels: Vec<ChannelSummary>,
    /// Draws the renderer could not follow, by name (all displays).
    pub unsupported_draws: BTreeMap<String, u64>,
    /// Channels whose capture lost data, with the reason.
    pub capture_losses: BTreeMap<String, String>,
}

/// Summarises session folder `dir`.
///
/// # Errors
/// [`InspectError`] for an unreadable folder or pcap.
pub fn summary(dir: &Path) -> Result<Summary, InspectError> {
    let channels = load(dir)?;
    let mut out = Summary { channels: Vec::new(), unsupported_draws: BTreeMap::new(), capture_losses: BTreeMap::new() };
    for c in &channels {
        let first = c.replay.messages.first().map_or(c.replay.end, |m| m.at);
        let seconds = c.replay.end.saturating_sub(first).max(Duration::from_millis(1)).as_secs_f64();
        let mut s = ChannelSummary {
            channel: c.name.clone(),
            seconds,
            messages_c2s: 0,
            bytes_c2s: 0,
            messages_s2c: 0,
            bytes_s2c: 0,
            messages_per_second: 0.0,
        };
        for m in &c.replay.messages {
            if m.dir == Direction::ClientToServer {
                s.messages_c2s += 1;
                s.bytes_c2s += m.body.len() as u64;
            } else {
                s.messages_s2c += 1;
                s.bytes_s2c += m.body.len() as u64;
            }
        }
        s.messages_per_second = (s.messages_c2s + s.messages_s2c) as f64 / seconds;
        out.channels.push(s);
    }
    if let Ok(json) = std::fs::read(dir.join("session.json"))
        && let Ok(json) = serde_json::from_slice::<serde_json::Value>(&json)
    {
        for c in json["channels"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let name = format!("{}-{}", c["type"].as_str().unwrap_or("?"), c["channel_id"]);
            if let Some(u) = c["render"]["stats"]["unsupported"].as_object() {
                for (k, v) in u {
                    *out.unsupported_draws.entry(k.clone()).or_insert(0) += v.as_u64().unwrap_or(0);
                }
            }
            if let Some(loss) = c["capture_loss"].as_str() {
                out.capture_losses.insert(name, loss.to_string());
            }
        }
    }
    Ok(out)
}

/// The summary as text.
pub fn format_summary(s: &Summary) -> String {
    let mut out = String::from("channel        seconds   msgs c2s   bytes c2s   msgs s2c    bytes s2c   msgs/s\n");
    for c in &s.channels {
        let _ = writeln!(
            out,
            "{:<12} {:>9.3} {:>10} {:>11} {:>10} {:>12} {:>8.1}",
            c.channel, c.seconds, c.messages_c2s, c.bytes_c2s, c.messages_s2c, c.bytes_s2c, c.messages_per_second
        );
    }
    if s.unsupported_draws.is_empty() {
        out.push_str("renderer: every draw followed\n");
    } else {
        let list: Vec<String> = s.unsupported_draws.iter().map(|(k, v)| format!("{k} x{v}")).collect();
        let _ = writeln!(out, "renderer could not draw: {}", list.join(", "));
    }
    if s.capture_losses.is_empty() {
        out.push_str("capture: complete\n");
    } else {
        for (c, why) in &s.capture_losses {
            let _ = writeln!(out, "capture loss on {c}: {why}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_folders_and_files_are_errors() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(timeline(tmp.path(), &Filter::default()), Err(InspectError::Empty(_))));
        std::fs::write(tmp.path().join("display-0.pcap"), b"not a pcap at all").unwrap();
        assert!(matches!(summary(tmp.path()), Err(InspectError::Replay { .. })));
        assert!(matches!(timeline(&tmp.path().join("missing"), &Filter::default()), Err(InspectError::Io { .. })));
    }

    #[test]
    fn fields_of_surfaces_draws_and_keys() {
        let mut create = Vec::new();
        for v in [0u32, 1024, 768, 32, 1] {
            create.extend_from_slice(&v.to_le_bytes());
        }
        let f = fields(ChannelType::DISPLAY, Direction::ServerToClient, 314, &create, false);
        assert_eq!(f, "surface 0 1024x768 format 32 flags 0x1");
        assert_eq!(fields(ChannelType::DISPLAY, Direction::ServerToClient, 314, &create[..7], false), "(unparsed)");
        let key = [0x1f, 0x9f];
        assert!(fields(ChannelType::INPUTS, Direction::ClientToServer, 104, &key, false).contains("hidden"));
        assert_eq!(fields(ChannelType::INPUTS, Direction::ClientToServer, 104, &key, true), "bytes 1f 9f");
        let mode = [3, 0, 2, 0];
        assert_eq!(
            fields(ChannelType::MAIN, Direction::ServerToClient, 105, &mode, false),
            "supported 0x3 current client"
        );
        // An image descriptor past the body is not read.
        assert_eq!(image(&[0; 10], 4), "image ?");
        assert_eq!(image(&[0; 10], u32::MAX), "image ?");
    }
}

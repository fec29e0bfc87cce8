//! `spicetap inspect`: a SPICE-aware reading of a recording: one
//! time-ordered timeline across every channel pcap of a session folder, a
//! line per message with the fields that matter, and a one-screen summary.
//!
//! Fields shown (spice-protocol `enums.h`, spice-common `spice.proto`):
//! surface create/destroy (id, size, format), draws (target surface,
//! bounding box, clip, source image type and size from its
//! `SpiceImageDescriptor`), stream create/destroy (codec, sizes), MARK,
//! mouse modes, agent messages by `VDAgentMessage` type, cursor positions
//! and shapes (type, size, hot spot, cache use), port names and
//! events, and what port channels carry: usbredir packets (usbredir
//! `usbredirproto.h`) on usbredir channels, mux client opens and closes
//! and HTTP request lines and response codes on webdav channels (spice-gtk
//! `channel-webdav.c`). Key presses (`SPICE_MSGC_INPUTS_KEY_*`) are shown
//! only when asked: they can be passwords.
//!
//! Both the timeline and the summary stream the pcaps
//! ([`replay::Messages`]): memory does not grow with the recording.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use thiserror::Error;

use crate::capture::replay::{self, Messages, ReplayError, ReplayMessage};
use crate::http1::{Http1Connection, HttpEvent};
use crate::port;
use crate::protocol::{ChannelType, Direction, message_name};
use crate::render::display::{self, Clip, DisplayMessage, Rect};
use crate::usbredir::{self, Packet, Side, TypeHeader, UsbredirDecoder};
use crate::webdav_mux::{MuxDecoder, MuxEvent};

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

/// A channel pcap of a session, streamed: its next message and the
/// decoder of what a port channel carries.
struct Channel {
    name: String,
    path: PathBuf,
    messages: Messages,
    head: Option<ReplayMessage>,
    port: PortDecoder,
}

/// Decodes the `SPICEVMC_DATA` payloads of usbredir and webdav channels.
enum PortDecoder {
    None,
    /// usbredir packets; `None` once the stream cannot be followed.
    Usbredir(Option<UsbredirDecoder>),
    /// The webdav mux, and an HTTP/1.1 reader per open client.
    Webdav(MuxDecoder, HashMap<i64, Http1Connection>),
}

/// Events shown per message at most; the rest are counted.
const MAX_EVENTS_PER_LINE: usize = 8;

impl PortDecoder {
    fn new(ct: ChannelType) -> Self {
        match ct {
            // Packet data is not shown: keep none of it.
            ChannelType::USBREDIR => Self::Usbredir(Some(UsbredirDecoder::new(0))),
            ChannelType::WEBDAV => Self::Webdav(MuxDecoder::new(), HashMap::new()),
            _ => Self::None,
        }
    }

    /// The events of one message's payload, as text.
    fn events(&mut self, dir: Direction, msg_type: u16, body: &[u8]) -> Vec<String> {
        if matches!(self, Self::None) {
            return Vec::new();
        }
        let payload = match port::vmc_payload(msg_type, body) {
            Ok(Some(p)) => p,
            Ok(None) => return Vec::new(),
            Err(e) => return vec![format!("({e})")],
        };
        let from_server = dir == Direction::ServerToClient;
        let mut out = Vec::new();
        match self {
            Self::None => {}
            Self::Usbredir(slot) => {
                let Some(dec) = slot else { return out };
                let side = if from_server { Side::Guest } else { Side::Host };
                let mut packets = Vec::new();
                let r = dec.feed(side, &payload, &mut packets);
                out.extend(packets.iter().map(usbredir_packet));
                if let Err(e) = r {
                    out.push(format!("usbredir stream lost: {e}"));
                    *slot = None;
                }
            }
            Self::Webdav(mux, conns) => {
                let mut events = Vec::new();
                // The guest (the server side) sends the HTTP requests.
                mux.feed(from_server, &payload, &mut events);
                for ev in events {
                    match ev {
                        MuxEvent::Open { id, .. } => {
                            conns.insert(id, Http1Connection::new());
                            out.push(format!("client {id} open"));
                        }
                        MuxEvent::Close { id, .. } => {
                            conns.remove(&id);
                            out.push(format!("client {id} close"));
                        }
                        MuxEvent::Data { id, from_guest, bytes } => {
                            let Some(conn) = conns.get_mut(&id) else { continue };
                            let mut http = Vec::new();
                            if let Err(e) = conn.feed(from_guest, &bytes, &mut http) {
                                out.push(format!("client {id} HTTP lost: {e}"));
                                conns.remove(&id);
                            }
                            out.extend(http.into_iter().map(|h| match h {
                                HttpEvent::Request { method, target } => format!("client {id} {method} {target}"),
                                HttpEvent::Response { status } => format!("client {id} {status}"),
                            }));
                        }
                    }
                }
            }
        }
        out
    }
}

/// A usbredir packet as text: type, id and what its header says.
fn usbredir_packet(p: &Packet) -> String {
    let name = usbredir::type_name(p.packet_type).map_or_else(|| format!("type {}", p.packet_type), str::to_string);
    let detail = match &p.header {
        TypeHeader::Hello { version, .. } => format!(" \"{version}\""),
        TypeHeader::DeviceConnect { vendor_id, product_id, class, .. } => {
            format!(" {vendor_id:04x}:{product_id:04x} class {class:#04x}")
        }
        _ => String::new(),
    };
    format!("{name} id {}{detail} ({} bytes)", p.id, p.data_len)
}

fn channel_pcaps(dir: &Path) -> Result<Vec<PathBuf>, InspectError> {
    let pcaps = replay::session_pcaps(dir).map_err(|source| InspectError::Io { path: dir.to_path_buf(), source })?;
    if pcaps.is_empty() {
        return Err(InspectError::Empty(dir.to_path_buf()));
    }
    Ok(pcaps)
}

/// Opens every channel pcap of `dir` (with bodies or headers only).
fn open(dir: &Path, bodies: bool) -> Result<Vec<(PathBuf, Messages)>, InspectError> {
    channel_pcaps(dir)?
        .into_iter()
        .map(|p| {
            let m =
                Messages::open(&p, None, bodies).map_err(|source| InspectError::Replay { path: p.clone(), source })?;
            Ok((p, m))
        })
        .collect()
}

/// The timeline of session folder `dir` under `filter`, in time order, as
/// a vector. Holds every line: [`for_each_line`] streams.
///
/// # Errors
/// As [`for_each_line`].
pub fn timeline(dir: &Path, filter: &Filter) -> Result<Vec<Line>, InspectError> {
    let mut lines = Vec::new();
    for_each_line(dir, filter, |l| {
        lines.push(l);
        true
    })?;
    Ok(lines)
}

/// Calls `each` with every line of the timeline of session folder `dir`
/// under `filter`, in time order, until it returns false. Streams: the
/// channels' pcaps are merged by time one message ahead each, so memory
/// does not grow with the recording's length.
///
/// # Errors
/// [`InspectError`] for an unreadable folder or pcap (the lines before
/// the error have been given).
pub fn for_each_line(dir: &Path, filter: &Filter, mut each: impl FnMut(Line) -> bool) -> Result<(), InspectError> {
    let mut channels = Vec::new();
    for (path, mut messages) in open(dir, true)? {
        let name = stem(&path);
        let ct = messages.channel_type;
        let wanted = filter.channels.is_empty()
            || filter.channels.iter().any(|f| *f == name || *f == ct.name() || name.starts_with(&format!("{f}.")));
        if !wanted {
            continue;
        }
        let head = next_message(&path, &mut messages)?;
        channels.push(Channel { name, path, messages, head, port: PortDecoder::new(ct) });
    }
    let start = channels.iter().filter_map(|c| c.head.as_ref().map(|m| m.at)).min().unwrap_or_default();
    // The channel whose next message is earliest (ties: pcap name order).
    while let Some(i) = (0..channels.len())
        .filter(|&i| channels[i].head.is_some())
        .min_by_key(|&i| (channels[i].head.as_ref().map(|m| m.at), i))
    {
        let c = &mut channels[i];
        let next = next_message(&c.path, &mut c.messages)?;
        let Some(m) = std::mem::replace(&mut c.head, next) else { continue };
        let ct = c.messages.channel_type;
        let name = message_name(ct, m.dir, m.header.msg_type).into_owned();
        // Port decoders see every message, shown or not.
        let events = c.port.events(m.dir, m.header.msg_type, &m.body);
        if !filter.messages.is_empty()
            && !filter.messages.iter().any(|f| name.to_ascii_lowercase().contains(&f.to_ascii_lowercase()))
        {
            continue;
        }
        let mut fields = fields(ct, m.dir, m.header.msg_type, &m.body, filter.keys);
        if !events.is_empty() {
            let mut shown = events[..events.len().min(MAX_EVENTS_PER_LINE)].join("; ");
            if events.len() > MAX_EVENTS_PER_LINE {
                let _ = write!(shown, "; +{} more", events.len() - MAX_EVENTS_PER_LINE);
            }
            fields = if fields.is_empty() { shown } else { format!("{fields}; {shown}") };
        }
        let line = Line {
            t: m.at.saturating_sub(start).as_secs_f64(),
            channel: c.name.clone(),
            dir: if m.dir == Direction::ClientToServer { "c2s" } else { "s2c" },
            fields,
            name,
            size: m.body.len(),
        };
        if !each(line) {
            break;
        }
    }
    Ok(())
}

fn next_message(path: &Path, m: &mut Messages) -> Result<Option<ReplayMessage>, InspectError> {
    m.next().transpose().map_err(|source| InspectError::Replay { path: path.to_path_buf(), source })
}

/// `display-0` of `.../display-0.pcap`.
fn stem(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
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
        (ChannelType::CURSOR, Direction::ServerToClient) => cursor_fields(ty, body),
        (ChannelType::PORT | ChannelType::WEBDAV, _) => {
            match port::PortMessage::parse(dir == Direction::ServerToClient, ty, body) {
                Ok(Some(port::PortMessage::Init { name, opened })) => {
                    format!("port \"{name}\" {}", if opened { "opened" } else { "closed" })
                }
                Ok(Some(port::PortMessage::Event(e))) => format!("event {}", port::port_event_name(e)),
                Ok(_) => String::new(),
                Err(e) => format!("({e})"),
            }
        }
        _ => String::new(),
    }
}

/// Position, shape (type, size, hot spot, cache flags) of cursor messages.
fn cursor_fields(ty: u16, body: &[u8]) -> String {
    use crate::render::cursor::{self as c, CursorMessage, SPICE_CURSOR_FLAGS_CACHE_ME, SPICE_CURSOR_FLAGS_FROM_CACHE};
    let shape = |cursor: &c::Cursor<'_>| match cursor.header {
        None => "no cursor".to_string(),
        Some(h) => {
            let mut s = format!(
                "{} {}x{} hot spot ({},{})",
                c::type_name(h.cursor_type),
                h.width,
                h.height,
                h.hot_spot_x,
                h.hot_spot_y
            );
            if cursor.flags & SPICE_CURSOR_FLAGS_CACHE_ME != 0 {
                let _ = write!(s, " cache as {:#x}", h.unique);
            }
            if cursor.flags & SPICE_CURSOR_FLAGS_FROM_CACHE != 0 {
                let _ = write!(s, " from cache {:#x}", h.unique);
            }
            s
        }
    };
    let shown = |v: bool| if v { "visible" } else { "hidden" };
    match c::parse(ty, body) {
        Ok(Some(CursorMessage::Init { position, visible, cursor, .. }))
        | Ok(Some(CursorMessage::Set { position, visible, cursor })) => {
            format!("at ({},{}) {} {}", position.0, position.1, shown(visible), shape(&cursor))
        }
        Ok(Some(CursorMessage::Move { position })) => format!("at ({},{})", position.0, position.1),
        Ok(Some(CursorMessage::Trail { length, frequency })) => format!("length {length} frequency {frequency}"),
        Ok(Some(CursorMessage::InvalOne { id })) => format!("id {id:#x}"),
        Ok(_) => String::new(),
        Err(e) => format!("({e})"),
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
    let mut out = Summary { channels: Vec::new(), unsupported_draws: BTreeMap::new(), capture_losses: BTreeMap::new() };
    for (path, mut messages) in open(dir, false)? {
        let name = stem(&path);
        let mut s = ChannelSummary {
            channel: name.clone(),
            seconds: 0.0,
            messages_c2s: 0,
            bytes_c2s: 0,
            messages_s2c: 0,
            bytes_s2c: 0,
            messages_per_second: 0.0,
        };
        let mut first = None;
        while let Some(m) = next_message(&path, &mut messages)? {
            first.get_or_insert(m.at);
            if m.dir == Direction::ClientToServer {
                s.messages_c2s += 1;
                s.bytes_c2s += u64::from(m.header.size);
            } else {
                s.messages_s2c += 1;
                s.bytes_s2c += u64::from(m.header.size);
            }
        }
        let first = first.unwrap_or(messages.end);
        s.seconds = messages.end.saturating_sub(first).max(Duration::from_millis(1)).as_secs_f64();
        s.messages_per_second = (s.messages_c2s + s.messages_s2c) as f64 / s.seconds;
        if messages.truncated {
            out.capture_losses.insert(name, "the pcap ends inside a packet".into());
        }
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
    fn usbredir_and_webdav_payloads_become_events() {
        const DATA: u16 = port::SPICEVMC_DATA;
        let mut usb = PortDecoder::new(ChannelType::USBREDIR);
        let mut version = [0u8; 64];
        version[..4].copy_from_slice(b"qemu");
        let hello = usbredir::encode_packet(0, 0, false, &version, &1u32.to_le_bytes());
        // Cut in two messages: the packet shows when it is whole.
        assert!(usb.events(Direction::ServerToClient, DATA, &hello[..20]).is_empty());
        assert_eq!(
            usb.events(Direction::ServerToClient, DATA, &hello[20..]),
            ["usb_redir_hello id 0 \"qemu\" (4 bytes)"]
        );
        // A type header longer than any: the stream is given up, once.
        let bad = usbredir::encode_packet(0, 1, false, &[0; 3], &[]);
        let ev = usb.events(Direction::ClientToServer, DATA, &bad);
        assert!(ev.last().is_some_and(|e| e.starts_with("usbredir stream lost")), "{ev:?}");
        assert!(usb.events(Direction::ClientToServer, DATA, &hello).is_empty());

        let mut dav = PortDecoder::new(ChannelType::WEBDAV);
        let req = crate::webdav_mux::encode_frame(3, b"PROPFIND /a HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(dav.events(Direction::ServerToClient, DATA, &req), ["client 3 open", "client 3 PROPFIND /a"]);
        let resp = crate::webdav_mux::encode_frame(3, b"HTTP/1.1 207 Multi-Status\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(dav.events(Direction::ClientToServer, DATA, &resp), ["client 3 207"]);
        assert_eq!(
            dav.events(Direction::ServerToClient, DATA, &crate::webdav_mux::encode_frame(3, b"")),
            ["client 3 close"]
        );
        let mut init = 25u32.to_le_bytes().to_vec();
        init.extend(9u32.to_le_bytes());
        init.push(1);
        init.extend(b"org.spice-space.webdav.0\0");
        assert_eq!(
            fields(ChannelType::WEBDAV, Direction::ServerToClient, 201, &init, false),
            "port \"org.spice-space.webdav.0\" opened"
        );
        assert_eq!(fields(ChannelType::PORT, Direction::ClientToServer, 201, &[1], false), "event closed");
        let mut set = vec![10, 0, 20, 0, 1, 2, 0];
        set.extend(0x77u64.to_le_bytes());
        set.extend([0, 64, 0, 64, 0, 3, 0, 4, 0]);
        assert_eq!(
            fields(ChannelType::CURSOR, Direction::ServerToClient, 103, &set, false),
            "at (10,20) visible ALPHA 64x64 hot spot (3,4) cache as 0x77"
        );
        assert_eq!(fields(ChannelType::CURSOR, Direction::ServerToClient, 104, &[5, 0, 6, 0], false), "at (5,6)");
        assert!(fields(ChannelType::CURSOR, Direction::ServerToClient, 104, &[5], false).contains("truncated"));
        // Other messages and channels: nothing.
        assert!(dav.events(Direction::ServerToClient, 201, &[0; 20]).is_empty());
        assert!(PortDecoder::new(ChannelType::DISPLAY).events(Direction::ServerToClient, DATA, &req).is_empty());
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

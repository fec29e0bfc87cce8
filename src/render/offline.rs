//! Rendering a recorded session from its pcaps (`spicetap render`): the
//! same renderer, fed from [`crate::capture::replay`].

use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

use super::canvas::Surface;
use super::cursor::{Pointer, with_pointer};
use super::renderer::{DisplayRenderer, RenderStats};
use crate::capture::replay::{self, ReplayError, ReplayMessage};
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
    cursor: bool,
) -> Result<(Surface, RenderStats), OfflineError> {
    render_pcap_frames(pcap, channel_type, until, cursor, None).map(|(s, st, _)| (s, st))
}

/// Where a replay is when it calls its [`OnChange`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Before the display message of that time is applied (the surface as
    /// it was until then).
    Before,
    /// The message changed the primary surface's pixels.
    Drawn,
    /// The message was a `SPICE_MSG_DISPLAY_MARK` (a complete frame).
    Mark,
}

/// Called with the capture time (since the first message), the step and
/// the primary surface (once one exists).
pub type OnChange<'a> = dyn FnMut(Duration, Step, &Surface) + 'a;

/// As [`render_pcap`], calling `on_change` with the capture time (since the
/// first message) and the primary surface before every server message
/// ([`Step::Before`]) and after every one that changed it or marked a
/// frame; returns where the recording ends too: the last message rendered, or
/// with [`Until::End`] the pcap's last packet (the channel's close), so a
/// video of it lasts as long as the channel was recorded.
///
/// With `cursor`, the session's cursor, main and inputs pcaps (next to
/// `pcap`) are replayed alongside and the pointer is drawn over every
/// surface handed out and returned ([`super::cursor`]); a pointer change
/// alone is a [`Step::Drawn`].
///
/// # Errors
/// As [`render_pcap`].
pub fn render_pcap_frames(
    pcap: &Path,
    channel_type: Option<ChannelType>,
    until: Until,
    cursor: bool,
    mut on_change: Option<&mut OnChange<'_>>,
) -> Result<(Surface, RenderStats, Duration), OfflineError> {
    let mut main = replay::Messages::open(pcap, channel_type, true)?;
    // The session's other display channels share the image cache and the
    // GLZ dictionary: replay them alongside, in capture-time order, each
    // streamed (one message ahead per channel).
    let shared = super::renderer::Shared::default();
    let mut others: Vec<(replay::Messages, DisplayRenderer)> = Vec::new();
    for other in sibling_display_pcaps(pcap) {
        match replay::Messages::open(&other, None, true) {
            Ok(r) if r.channel_id != main.channel_id => {
                others.push((r, DisplayRenderer::with_shared(shared.clone())));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(pcap = %other.display(), error = %e, "other display not replayed"),
        }
    }
    let mut pointers: Vec<replay::Messages> = Vec::new();
    if cursor {
        for p in sibling_pcaps(pcap, &["cursor-", "main-", "inputs-"]) {
            match replay::Messages::open(&p, None, true) {
                Ok(r) => pointers.push(r),
                Err(e) => tracing::warn!(pcap = %p.display(), error = %e, "pointer channel not replayed"),
            }
        }
    }
    // The next message of each source: 0 is `main`, i + 1 is `others[i]`,
    // then `pointers`.
    let n_others = others.len();
    let mut heads: Vec<Option<ReplayMessage>> = Vec::with_capacity(n_others + pointers.len() + 1);
    heads.push(main.next().transpose()?);
    let rest = others.iter_mut().map(|(r, _)| r).chain(pointers.iter_mut());
    for r in rest {
        heads.push(r.next().transpose().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "a channel replayed alongside stops");
            None
        }));
    }
    let mut pointer = cursor.then(Pointer::new);
    let mut scratch: Option<Surface> = None;
    let display_id = main.channel_id;
    let mut last = Duration::ZERO;
    let mut renderer = DisplayRenderer::with_shared(shared.clone());
    let start = heads[0].as_ref().map(|m| m.at);
    // Until the display's own messages end (the other displays only matter
    // before), and the pointer's, which may move over the last picture.
    loop {
        if heads[0].is_none() {
            heads[1..=n_others].iter_mut().for_each(|h| *h = None);
        }
        // The earliest head; ties go to the lower source, as the sort did.
        let Some(src) =
            (0..heads.len()).filter(|&i| heads[i].is_some()).min_by_key(|&i| (heads[i].as_ref().map(|m| m.at), i))
        else {
            break;
        };
        if src > n_others {
            let source = &mut pointers[src - 1 - n_others];
            let next = source.next().transpose().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "pointer channel stops");
                None
            });
            let Some(m) = std::mem::replace(&mut heads[src], next) else { continue };
            let Some(p) = pointer.as_mut() else { continue };
            let (ct, ty) = (source.channel_type, m.header.msg_type);
            let now = start.filter(|&s| m.at >= s).map(|s| m.at.saturating_sub(s));
            if let Some(now) = now {
                if let Until::Time(limit) = until
                    && now > limit
                {
                    break;
                }
                // The picture as it was until this message, for snapshots.
                if let (true, Some(f), Some(surface)) =
                    (Pointer::follows(ct, m.dir, ty), on_change.as_deref_mut(), renderer.primary())
                {
                    f(now, Step::Before, with_pointer(surface, Some(&*p), display_id, &mut scratch));
                }
            }
            let changed = match (ct, m.dir) {
                (ChannelType::CURSOR, Direction::ServerToClient) => p.cursor_message(m.at, ty, &m.body),
                (ChannelType::MAIN, Direction::ServerToClient) => p.main_message(m.at, ty, &m.body),
                (ChannelType::INPUTS, Direction::ClientToServer) => p.inputs_message(ty, &m.body),
                _ => false,
            };
            if let (true, Some(now), Some(f), Some(surface)) =
                (changed, now, on_change.as_deref_mut(), renderer.primary())
            {
                last = last.max(now);
                f(now, Step::Drawn, with_pointer(surface, pointer.as_ref(), display_id, &mut scratch));
            }
            continue;
        }
        if src > 0 {
            let (source, r) = &mut others[src - 1];
            let next = source.next().transpose().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "other display stops");
                None
            });
            let Some(m) = std::mem::replace(&mut heads[src], next) else { continue };
            if m.dir == Direction::ServerToClient {
                if m.header.sub_list != 0 {
                    apply_sub_list(r, &m.body, m.header.sub_list);
                }
                r.server_message(m.header.msg_type, &m.body);
            } else {
                r.client_message(m.header.msg_type, &m.body);
            }
            continue;
        }
        let next = main.next().transpose()?;
        let Some(m) = std::mem::replace(&mut heads[0], next) else { continue };
        if let (Until::Time(limit), Some(start)) = (until, start)
            && m.at.saturating_sub(start) > limit
        {
            break;
        }
        if m.dir != Direction::ServerToClient {
            renderer.client_message(m.header.msg_type, &m.body);
            continue;
        }
        let now = start.map_or(Duration::ZERO, |s| m.at.saturating_sub(s));
        if let (Some(f), Some(surface)) = (on_change.as_deref_mut(), renderer.primary()) {
            f(now, Step::Before, with_pointer(surface, pointer.as_ref(), display_id, &mut scratch));
        }
        if m.header.sub_list != 0 {
            apply_sub_list(&mut renderer, &m.body, m.header.sub_list);
        }
        let ev = renderer.server_message(m.header.msg_type, &m.body);
        last = now;
        let step = match ev {
            super::renderer::RenderEvent::None => None,
            super::renderer::RenderEvent::Drawn => Some(Step::Drawn),
            super::renderer::RenderEvent::Mark => Some(Step::Mark),
        };
        if let (Some(step), Some(f), Some(surface)) = (step, on_change.as_deref_mut(), renderer.primary()) {
            f(last, step, with_pointer(surface, pointer.as_ref(), display_id, &mut scratch));
        }
        if let Until::Mark(n) = until
            && renderer.stats.marks >= n
        {
            break;
        }
    }
    if let (Until::End, Some(start)) = (until, start) {
        // The recording lasts until the channel's last packet (its close).
        last = last.max(main.end.saturating_sub(start));
    }
    let surface = renderer.primary().ok_or(OfflineError::NoSurface)?;
    let surface = with_pointer(surface, pointer.as_ref(), display_id, &mut scratch).clone();
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
    cursor: bool,
    mp4: &Path,
    config: crate::video::VideoConfig,
) -> Result<(Surface, RenderStats, crate::video::VideoReport), OfflineError> {
    let video_err = |e: crate::video::VideoError| OfflineError::Video(e.to_string());
    let dir = mp4.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let stem = mp4.file_stem().and_then(|s| s.to_str()).ok_or_else(|| OfflineError::Video("bad MP4 name".into()))?;
    let config = crate::video::VideoConfig { realtime: false, ..config };
    let fps = u128::from(config.max_fps.max(1));
    // The video's grid (`video::timeline`): the surface as it was at each
    // tick of 1 / fps s. A change is pushed once a later change belongs to a
    // later tick, so only the last change before each tick is encoded.
    let tick = |at: Duration| (at.as_nanos() * fps).div_ceil(1_000_000_000);
    let rec = crate::video::VideoRecorder::start(dir, stem, config).map_err(video_err)?;
    let mut pending: Option<(Duration, Surface)> = None;
    let push = |at: Duration, s: &Surface| {
        if let Ok(f) = crate::video::Frame::new(at, s.width, s.height, s.data.clone()) {
            rec.push(f);
        }
    };
    let mut on_change = |at: Duration, step: Step, s: &Surface| {
        if step == Step::Before {
            return;
        }
        if let Some((last, surface)) = pending.take()
            && tick(at) > tick(last)
        {
            push(last, &surface);
        }
        pending = Some((at, s.clone()));
    };
    let (surface, stats, end) = render_pcap_frames(pcap, channel_type, until, cursor, Some(&mut on_change))?;
    let mut end = end;
    if let Some((at, s)) = pending.take() {
        push(at, &s);
        end = end.max(at);
    }
    let report = rec.finish_at(end).map_err(video_err)?;
    Ok((surface, stats, report))
}

/// A picture [`render_pcap_snapshots`] takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Snapshot {
    /// Right after the n-th `SPICE_MSG_DISPLAY_MARK`, at capture time `at`.
    Mark {
        /// 1 for the first.
        n: u64,
        /// Since the first message.
        at: Duration,
    },
    /// The surface as it was at this time since the first message (the
    /// last picture of the recording for times past its end).
    Time(Duration),
}

/// Replays a display pcap once, handing `take` the primary surface at
/// every MARK (`every_mark`) and at each of `times` (in any order), in
/// time order.
///
/// # Errors
/// [`OfflineError`] from the replay, or the first error of `take`.
pub fn render_pcap_snapshots(
    pcap: &Path,
    channel_type: Option<ChannelType>,
    cursor: bool,
    every_mark: bool,
    times: &[Duration],
    mut take: impl FnMut(Snapshot, &Surface) -> Result<(), OfflineError>,
) -> Result<RenderStats, OfflineError> {
    let mut pending: Vec<Duration> = times.to_vec();
    pending.sort();
    pending.reverse(); // the next one last
    let mut marks = 0u64;
    let mut failed: Option<OfflineError> = None;
    let mut on_change = |at: Duration, step: Step, s: &Surface| {
        if failed.is_some() {
            return;
        }
        let r = match step {
            Step::Before => {
                let mut r = Ok(());
                while r.is_ok() && pending.last().is_some_and(|&t| t < at) {
                    let t = pending.pop().unwrap_or_default();
                    r = take(Snapshot::Time(t), s);
                }
                r
            }
            Step::Mark => {
                marks += 1;
                if every_mark { take(Snapshot::Mark { n: marks, at }, s) } else { Ok(()) }
            }
            Step::Drawn => Ok(()),
        };
        if let Err(e) = r {
            failed = Some(e);
        }
    };
    let (surface, stats, _) = render_pcap_frames(pcap, channel_type, Until::End, cursor, Some(&mut on_change))?;
    if let Some(e) = failed {
        return Err(e);
    }
    while let Some(t) = pending.pop() {
        take(Snapshot::Time(t), &surface)?;
    }
    Ok(stats)
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

/// The other display channels' pcaps of the same session folder
/// (`display-<id>.pcap`, first connection of each).
fn sibling_display_pcaps(pcap: &Path) -> Vec<PathBuf> {
    sibling_pcaps(pcap, &["display-"])
}

/// The pcaps next to `pcap` (not itself) named `<prefix><id>.pcap`, sorted.
fn sibling_pcaps(pcap: &Path, prefixes: &[&str]) -> Vec<PathBuf> {
    let Some(dir) = pcap.parent() else { return Vec::new() };
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p != pcap)
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                prefixes.iter().any(|prefix| {
                    n.strip_prefix(prefix)
                        .and_then(|r| r.strip_suffix(".pcap"))
                        .is_some_and(|id| id.parse::<u8>().is_ok())
                })
            })
        })
        .collect();
    out.sort();
    out
}

/// Writes the surface's RGB as an 8-bit PNG.
///
/// # Errors
/// [`OfflineError::Png`].
pub fn write_png(surface: &Surface, path: &Path) -> Result<(), OfflineError> {
    let file = std::fs::File::create(path).map_err(|e| OfflineError::Png(e.to_string()))?;
    encode_png(surface, BufWriter::new(file))
}

/// Encodes the surface's RGB as an 8-bit PNG into `out`.
///
/// # Errors
/// [`OfflineError::Png`].
pub fn encode_png(surface: &Surface, out: impl std::io::Write) -> Result<(), OfflineError> {
    let mut enc = png::Encoder::new(out, surface.width, surface.height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(|e| OfflineError::Png(e.to_string()))?;
    let rgb: Vec<u8> = surface.data.iter().flat_map(|p| [(p >> 16) as u8, (p >> 8) as u8, *p as u8]).collect();
    w.write_image_data(&rgb).map_err(|e| OfflineError::Png(e.to_string()))?;
    w.finish().map_err(|e| OfflineError::Png(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::mini;
    use crate::link::{HeaderKind, LinkHeader, LinkReply};
    use crate::tcp_pcap::{Endpoints, TcpConversation, TcpPcap};
    use std::time::SystemTime;

    /// DRAW_COPY of a 1x1 image (`image`: descriptor and payload) at (0,0).
    fn draw_copy(image: &[u8]) -> Vec<u8> {
        let mut b = 0u32.to_le_bytes().to_vec();
        for v in [0i32, 0, 1, 1] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.push(0);
        b.extend_from_slice(&57u32.to_le_bytes()); // image right after the fixed part
        for v in [0i32, 0, 1, 1] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&8u16.to_le_bytes()); // OP_PUT
        b.push(1);
        b.extend_from_slice(&[0; 13]);
        assert_eq!(b.len(), 57);
        b.extend_from_slice(image);
        b
    }

    /// Writes `display-<id>.pcap` with a full link stage and `messages`
    /// (server to client) at `t0 + offset ms`.
    fn write_display(dir: &Path, id: u8, session: u32, messages: &[(u64, Vec<u8>)]) {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let f = std::fs::File::create(dir.join(format!("display-{id}.pcap"))).unwrap();
        let mut out = TcpPcap::new(f).unwrap();
        let mut c = TcpConversation::open(&mut out, Endpoints::new(49152 + u16::from(id), 5930), t0).unwrap();
        let mut link = crate::link::tests::link_mess_bytes(session, 2, &[0b1011], &[]);
        link[16 + 5] = id;
        c.link_segment(&mut out, Direction::ClientToServer, t0, &link).unwrap();
        let mut reply = LinkHeader::encode(LinkReply::FIXED_SIZE + 4).to_vec();
        reply.extend_from_slice(&0u32.to_le_bytes());
        reply.extend_from_slice(&[0; 162]);
        for v in [1u32, 0, LinkReply::FIXED_SIZE, 0b1011] {
            reply.extend_from_slice(&v.to_le_bytes());
        }
        c.link_segment(&mut out, Direction::ServerToClient, t0, &reply).unwrap();
        c.link_segment(&mut out, Direction::ClientToServer, t0, &1u32.to_le_bytes()).unwrap();
        c.link_segment(&mut out, Direction::ClientToServer, t0, &[0; 128]).unwrap();
        c.link_segment(&mut out, Direction::ServerToClient, t0, &0u32.to_le_bytes()).unwrap();
        c.start_messages(Some(HeaderKind::Mini));
        for (ms, m) in messages {
            c.data(&mut out, Direction::ServerToClient, t0 + Duration::from_millis(*ms), m).unwrap();
        }
        c.close(&mut out, Direction::ClientToServer, t0 + Duration::from_secs(1)).unwrap();
    }

    /// An image cached by display 1 and drawn FROM_CACHE by display 0: the
    /// session's display channels share the cache, offline as live.
    #[test]
    fn displays_of_a_session_share_the_image_cache() {
        let dir = tempfile::tempdir().unwrap();
        let create: Vec<u8> = [0u32, 1, 1, 32, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
        // BITMAP 32BIT top-down 1x1, CACHE_ME, id 77, pixel 0x00abcdef.
        let mut bitmap = 77u64.to_le_bytes().to_vec();
        bitmap.extend_from_slice(&[0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 8, 4, 1, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]);
        bitmap.extend_from_slice(&0x00ab_cdefu32.to_le_bytes());
        let mut from_cache = 77u64.to_le_bytes().to_vec();
        from_cache.extend_from_slice(&[103, 0, 1, 0, 0, 0, 1, 0, 0, 0]);
        write_display(dir.path(), 1, 9, &[(0, mini(314, &create)), (10, mini(304, &draw_copy(&bitmap)))]);
        write_display(dir.path(), 0, 9, &[(0, mini(314, &create)), (20, mini(304, &draw_copy(&from_cache)))]);
        let (surface, stats) = render_pcap(&dir.path().join("display-0.pcap"), None, Until::End, false).unwrap();
        assert_eq!(stats.errors, 0, "{:?}", stats.error_samples);
        assert_eq!(surface.data, [0x00ab_cdef]);
    }
}

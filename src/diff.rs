//! `spicetap diff A B`: compares two recordings channel by channel, the
//! way a SPICE engineer would: which channels each side opened, header
//! kind and caps by name (from `session.json`), and each channel's
//! message sequence per direction by message name, aligned as a diff
//! (Myers' longest-common-subsequence alignment, from the `similar`
//! crate), not index by index.
//!
//! Comparing names, not bytes, masks every field that always differs
//! between runs (serials, multimedia times, session and connection ids,
//! image and cache ids, keys and tickets). Messages whose number depends
//! on timing alone are masked by default ([`DEFAULT_MASKS`]): they are left
//! out of the sequences and of the counts.
//!
//! Memory stays bounded whatever the recordings' length: pcaps are
//! streamed headers only ([`replay::Messages`]), once per direction, and
//! the alignment runs on windows of [`WINDOW`] messages per side: the
//! common prefix is skipped message by message, then Myers aligns the two
//! windows and the alignment up to its last common run is kept; the rest
//! is aligned again with the next messages. Within a window the alignment
//! is minimal; a divergence longer than a window is aligned window by
//! window. With `--render`, each display both sides opened is also
//! rendered to its final picture and compared pixel by pixel.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use similar::{Algorithm, DiffOp, capture_diff_slices};
use thiserror::Error;

use crate::capture::replay::{self, Messages, ReplayError};
use crate::protocol::{ChannelType, Direction, message_name};
use crate::render::canvas::Surface;
use crate::render::offline::{self, OfflineError, Until};

/// Message names left out by default: how many PINGs a session sees and
/// where ACKs fall depend on timing alone.
pub const DEFAULT_MASKS: &[&str] = &[
    "SPICE_MSG_PING",
    "SPICE_MSGC_PONG",
    "SPICE_MSG_SET_ACK",
    "SPICE_MSGC_ACK_SYNC",
    "SPICE_MSGC_ACK",
    "SPICE_MSG_MAIN_MULTI_MEDIA_TIME",
    "SPICE_MSG_DISPLAY_STREAM_DATA",
    "SPICE_MSG_DISPLAY_STREAM_DATA_SIZED",
];

/// Messages shown around a first divergence, each side.
const CONTEXT: usize = 3;

/// Why two recordings cannot be compared.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DiffError {
    /// A folder or file cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
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
    /// Neither a session folder nor a pcap.
    #[error("{0}: not a spicetap recording (no channel pcaps)")]
    NotARecording(PathBuf),
}

/// Messages per side one alignment step looks at.
pub const WINDOW: usize = 4096;

/// One message of a channel's sequence.
#[derive(Debug, Clone, Copy)]
struct Msg {
    ty: u16,
    /// Seconds since the channel's first packet.
    t: f64,
    size: u32,
}

/// A channel of one side, as found by a first look at its pcap.
#[derive(Debug)]
struct Side {
    path: PathBuf,
    channel_type: ChannelType,
    header_kind: String,
    caps: BTreeMap<String, Vec<String>>,
}

/// One recording: channels by name (`display-0`), in opening order.
#[derive(Debug, Default)]
struct Recording {
    order: Vec<String>,
    channels: BTreeMap<String, Side>,
}

/// Where the messages of one direction of a channel come from.
trait Source {
    /// The next message not masked.
    fn next_msg(&mut self) -> Result<Option<Msg>, DiffError>;
}

/// One direction of a channel pcap, headers only, masked messages left
/// out, counting messages and bytes by type on the way.
struct PcapSource<'a> {
    path: PathBuf,
    messages: Messages,
    dir: Direction,
    masks: &'a [String],
    masked: BTreeMap<u16, bool>,
    counts: BTreeMap<u16, (u64, u64)>,
}

impl<'a> PcapSource<'a> {
    fn open(side: &Side, dir: Direction, masks: &'a [String]) -> Result<Self, DiffError> {
        let ct = Some(side.channel_type);
        let messages = Messages::open(&side.path, ct, false)
            .map_err(|source| DiffError::Replay { path: side.path.clone(), source })?;
        Ok(Self { path: side.path.clone(), messages, dir, masks, masked: BTreeMap::new(), counts: BTreeMap::new() })
    }
}

impl Source for PcapSource<'_> {
    fn next_msg(&mut self) -> Result<Option<Msg>, DiffError> {
        loop {
            let Some(m) = self
                .messages
                .next()
                .transpose()
                .map_err(|source| DiffError::Replay { path: self.path.clone(), source })?
            else {
                return Ok(None);
            };
            if m.dir != self.dir {
                continue;
            }
            let ty = m.header.msg_type;
            let (ct, dir, masks) = (self.messages.channel_type, self.dir, self.masks);
            let masked =
                *self.masked.entry(ty).or_insert_with(|| masks.iter().any(|n| *n == message_name(ct, dir, ty)));
            if masked {
                continue;
            }
            let c = self.counts.entry(ty).or_default();
            c.0 += 1;
            c.1 += u64::from(m.header.size);
            let t = m.at.saturating_sub(self.messages.start).as_secs_f64();
            return Ok(Some(Msg { ty, t, size: m.header.size }));
        }
    }
}

/// The comparison, for people and machines.
#[derive(Debug, Default, Serialize)]
pub struct DiffReport {
    /// Whether the two are equal under the masks.
    pub equal: bool,
    /// Message names masked.
    pub masks: Vec<String>,
    /// Channels only A opened.
    pub only_in_a: Vec<String>,
    /// Channels only B opened.
    pub only_in_b: Vec<String>,
    /// Channels both opened, in A's order.
    pub channels: Vec<ChannelDiff>,
}

/// One channel both sides opened.
#[derive(Debug, Default, Serialize)]
pub struct ChannelDiff {
    /// `display-0`.
    pub channel: String,
    /// Whether it is equal under the masks.
    pub equal: bool,
    /// Header kinds, when they differ: (A, B).
    pub header_kind: Option<(String, String)>,
    /// Caps set on one side only: `client common: +SPICE_COMMON_CAP_X` (B
    /// has it, A not) or `-...` (A has it, B not).
    pub caps: Vec<String>,
    /// Per direction (`c2s`, `s2c`) that differs: the first divergence.
    pub divergences: Vec<Divergence>,
    /// Per message type that differs: (count A, bytes A, count B, bytes B).
    pub counts: BTreeMap<String, (u64, u64, u64, u64)>,
    /// With `--render`, for displays: the final pictures compared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub picture: Option<PictureDiff>,
}

/// The final pictures of one display, side by side.
#[derive(Debug, Default, Serialize)]
pub struct PictureDiff {
    /// Same size and every pixel's colour equal.
    pub equal: bool,
    /// Width and height of A's primary surface, in pixels.
    pub size_a: (u32, u32),
    /// B's.
    pub size_b: (u32, u32),
    /// Pixels whose colour differs (0 when the sizes differ: not compared).
    pub differing_pixels: u64,
    /// The box holding them: left, top, right, bottom (exclusive).
    pub differing_box: Option<(u32, u32, u32, u32)>,
    /// Why A could not be rendered.
    pub error_a: Option<String>,
    /// Why B could not be rendered.
    pub error_b: Option<String>,
}

/// Where a direction's sequences part.
#[derive(Debug, Default, Serialize)]
pub struct Divergence {
    /// `c2s` or `s2c`.
    pub dir: &'static str,
    /// Messages inserted, deleted or replaced in the whole alignment.
    pub changed: usize,
    /// Index in A of the first difference.
    pub at_a: usize,
    /// Index in B.
    pub at_b: usize,
    /// A's messages around it: "time name".
    pub around_a: Vec<String>,
    /// B's.
    pub around_b: Vec<String>,
}

/// What to compare.
#[derive(Debug, Clone, Default)]
pub struct DiffOptions {
    /// Channel type of pcaps without a link stage.
    pub channel_type: Option<ChannelType>,
    /// Message names left out.
    pub masks: Vec<String>,
    /// Also render each display both sides opened and compare the final
    /// pictures.
    pub render: bool,
}

/// Compares recording `a` with `b` (session folders, or pcaps with
/// `channel_type` for link-less ones).
///
/// # Errors
/// [`DiffError`] when either side cannot be read.
pub fn diff(a: &Path, b: &Path, options: &DiffOptions) -> Result<DiffReport, DiffError> {
    let masks = options.masks.as_slice();
    let ra = load(a, options.channel_type)?;
    let rb = load(b, options.channel_type)?;
    let mut report = DiffReport { masks: masks.to_vec(), ..DiffReport::default() };
    report.only_in_a = ra.order.iter().filter(|c| !rb.channels.contains_key(*c)).cloned().collect();
    report.only_in_b = rb.order.iter().filter(|c| !ra.channels.contains_key(*c)).cloned().collect();
    for name in ra.order.iter().filter(|c| rb.channels.contains_key(*c)) {
        let (sa, sb) = (&ra.channels[name], &rb.channels[name]);
        let mut c = ChannelDiff { channel: name.clone(), ..ChannelDiff::default() };
        if sa.header_kind != sb.header_kind {
            c.header_kind = Some((sa.header_kind.clone(), sb.header_kind.clone()));
        }
        let kinds: BTreeSet<&String> = sa.caps.keys().chain(sb.caps.keys()).collect();
        for k in kinds {
            let empty = Vec::new();
            let (ca, cb) = (sa.caps.get(k).unwrap_or(&empty), sb.caps.get(k).unwrap_or(&empty));
            c.caps.extend(cb.iter().filter(|x| !ca.contains(x)).map(|x| format!("{k}: +{x}")));
            c.caps.extend(ca.iter().filter(|x| !cb.contains(x)).map(|x| format!("{k}: -{x}")));
        }
        for dir in [Direction::ClientToServer, Direction::ServerToClient] {
            let mut pa = PcapSource::open(sa, dir, masks)?;
            let mut pb = PcapSource::open(sb, dir, masks)?;
            let ct = sa.channel_type;
            let name_of = |ty: u16| message_name(ct, dir, ty).into_owned();
            let label = if dir == Direction::ClientToServer { "c2s" } else { "s2c" };
            if let Some(div) = align(label, &mut pa, &mut pb, &name_of)? {
                c.divergences.push(div);
            }
            for (ty, counts) in counts(&pa.counts, &pb.counts) {
                c.counts.insert(name_of(ty), counts);
            }
        }
        if options.render && sa.channel_type == ChannelType::DISPLAY {
            c.picture = Some(picture_diff(&sa.path, &sb.path, options.channel_type));
        }
        c.equal = c.header_kind.is_none()
            && c.caps.is_empty()
            && c.divergences.is_empty()
            && c.counts.is_empty()
            && c.picture.as_ref().is_none_or(|p| p.equal);
        report.channels.push(c);
    }
    report.equal =
        report.only_in_a.is_empty() && report.only_in_b.is_empty() && report.channels.iter().all(|c| c.equal);
    Ok(report)
}

/// Aligns two sources window by window (see the module doc); returns the
/// first divergence, with the number of messages the whole alignment
/// changed, or `None` when the sequences are equal.
fn align(
    dir: &'static str,
    a: &mut dyn Source,
    b: &mut dyn Source,
    name_of: &dyn Fn(u16) -> String,
) -> Result<Option<Divergence>, DiffError> {
    struct Side<'s> {
        src: &'s mut dyn Source,
        window: VecDeque<Msg>,
        /// Index of `window[0]` in the whole sequence.
        base: usize,
        /// The last messages taken out of the window, for context.
        history: VecDeque<Msg>,
        done: bool,
    }
    impl Side<'_> {
        fn fill(&mut self) -> Result<(), DiffError> {
            while !self.done && self.window.len() < WINDOW {
                match self.src.next_msg()? {
                    Some(m) => self.window.push_back(m),
                    None => self.done = true,
                }
            }
            Ok(())
        }
        fn take(&mut self, n: usize) {
            for m in self.window.drain(..n) {
                if self.history.len() == CONTEXT {
                    self.history.pop_front();
                }
                self.history.push_back(m);
            }
            self.base += n;
        }
        /// "time name (size)" of the messages around window index `i`.
        fn around(&self, i: usize, name_of: &dyn Fn(u16) -> String) -> Vec<String> {
            let before = self.history.iter().chain(self.window.iter().take(i));
            let skip = (self.history.len() + i).saturating_sub(CONTEXT);
            before
                .skip(skip)
                .chain(self.window.iter().skip(i).take(CONTEXT + 1))
                .map(|m| format!("{:.6} {} ({} bytes)", m.t, name_of(m.ty), m.size))
                .collect()
        }
    }
    let mut sa = Side { src: a, window: VecDeque::new(), base: 0, history: VecDeque::new(), done: false };
    let mut sb = Side { src: b, window: VecDeque::new(), base: 0, history: VecDeque::new(), done: false };
    let mut first: Option<Divergence> = None;
    let mut changed = 0;
    loop {
        sa.fill()?;
        sb.fill()?;
        if sa.window.is_empty() && sb.window.is_empty() {
            break;
        }
        // The common prefix, message by message.
        let same = sa.window.iter().zip(&sb.window).take_while(|(x, y)| x.ty == y.ty).count();
        if same > 0 {
            sa.take(same);
            sb.take(same);
            continue;
        }
        let ta: Vec<u16> = sa.window.iter().map(|m| m.ty).collect();
        let tb: Vec<u16> = sb.window.iter().map(|m| m.ty).collect();
        let ops = capture_diff_slices(Algorithm::Myers, &ta, &tb);
        // Keep the alignment up to the end of its last common run; what
        // follows may align differently with the messages still to come.
        let last_equal = ops.iter().rev().find_map(|op| match *op {
            DiffOp::Equal { old_index, new_index, len } => Some((old_index + len, new_index + len)),
            _ => None,
        });
        let (cut_a, cut_b) = match last_equal {
            Some(cut) if !(sa.done && sb.done) => cut,
            // Nothing in common, or the windows hold the rest: keep all.
            _ => (ta.len(), tb.len()),
        };
        for op in &ops {
            let (oi, ni, n) = match *op {
                DiffOp::Equal { .. } => continue,
                DiffOp::Delete { old_index, old_len, new_index } => (old_index, new_index, old_len),
                DiffOp::Insert { old_index, new_index, new_len } => (old_index, new_index, new_len),
                DiffOp::Replace { old_index, old_len, new_index, new_len } => {
                    (old_index, new_index, old_len.max(new_len))
                }
            };
            if oi >= cut_a && ni >= cut_b {
                break;
            }
            changed += n;
            if first.is_none() {
                first = Some(Divergence {
                    dir,
                    changed: 0,
                    at_a: sa.base + oi,
                    at_b: sb.base + ni,
                    around_a: sa.around(oi, name_of),
                    around_b: sb.around(ni, name_of),
                });
            }
        }
        sa.take(cut_a);
        sb.take(cut_b);
    }
    Ok(first.map(|d| Divergence { changed, ..d }))
}

/// Per message type whose count differs: (count A, bytes A, count B,
/// bytes B).
fn counts(a: &BTreeMap<u16, (u64, u64)>, b: &BTreeMap<u16, (u64, u64)>) -> BTreeMap<u16, (u64, u64, u64, u64)> {
    let mut all: BTreeMap<u16, (u64, u64, u64, u64)> = BTreeMap::new();
    for (&ty, &(n, bytes)) in a {
        let e = all.entry(ty).or_default();
        (e.0, e.1) = (n, bytes);
    }
    for (&ty, &(n, bytes)) in b {
        let e = all.entry(ty).or_default();
        (e.2, e.3) = (n, bytes);
    }
    all.retain(|_, c| c.0 != c.2);
    all
}

impl PictureDiff {
    /// One line: what differs in the final pictures.
    pub fn describe(&self) -> String {
        if self.error_a.is_some() || self.error_b.is_some() {
            let e = |x: &Option<String>| x.clone().unwrap_or_else(|| "rendered".into());
            return format!("final picture not compared: A {}, B {}", e(&self.error_a), e(&self.error_b));
        }
        if self.size_a != self.size_b {
            let (a, b) = (self.size_a, self.size_b);
            return format!("final picture sizes differ: A {}x{}, B {}x{}", a.0, a.1, b.0, b.1);
        }
        match self.differing_box {
            Some((l, t, r, b)) => {
                format!("final picture: {} pixels differ in ({l},{t})-({r},{b})", self.differing_pixels)
            }
            None => "final pictures equal".into(),
        }
    }
}

/// The final pictures of two display pcaps, compared.
fn picture_diff(a: &Path, b: &Path, channel_type: Option<ChannelType>) -> PictureDiff {
    let render = |p: &Path| offline::render_pcap(p, channel_type, Until::End, false).map(|(s, _)| s);
    let (sa, sb) = match (render(a), render(b)) {
        (Ok(sa), Ok(sb)) => (sa, sb),
        (ra, rb) => {
            let why = |r: Result<Surface, OfflineError>| r.err().map(|e| e.to_string());
            return PictureDiff { equal: false, error_a: why(ra), error_b: why(rb), ..PictureDiff::default() };
        }
    };
    let mut d = PictureDiff { size_a: (sa.width, sa.height), size_b: (sb.width, sb.height), ..PictureDiff::default() };
    if d.size_a != d.size_b {
        return d;
    }
    let mut bbox: Option<(u32, u32, u32, u32)> = None;
    let width = sa.width.max(1) as usize;
    for (i, (pa, pb)) in sa.data.iter().zip(&sb.data).enumerate() {
        // The colour bytes only: the unused byte of xRGB may differ.
        if (pa ^ pb) & 0x00ff_ffff == 0 {
            continue;
        }
        d.differing_pixels += 1;
        // i < width * height, both u32: the quotient and remainder fit.
        let (x, y) = ((i % width) as u32, (i / width) as u32);
        bbox = Some(bbox.map_or((x, y, x + 1, y + 1), |(l, t, r, b)| (l.min(x), t.min(y), r.max(x + 1), b.max(y + 1))));
    }
    d.differing_box = bbox;
    d.equal = d.differing_pixels == 0;
    d
}

fn load(path: &Path, channel_type: Option<ChannelType>) -> Result<Recording, DiffError> {
    let io = |source| DiffError::Io { path: path.to_path_buf(), source };
    let pcaps: Vec<PathBuf> = if path.is_dir() {
        replay::session_pcaps(path).map_err(io)?
    } else {
        std::fs::metadata(path).map_err(io)?;
        vec![path.to_path_buf()]
    };
    if pcaps.is_empty() {
        return Err(DiffError::NotARecording(path.to_path_buf()));
    }
    let mut rec = Recording::default();
    let mut opened: Vec<(std::time::Duration, String)> = Vec::new();
    for p in &pcaps {
        // A first look: the link stage and when the channel opened.
        let m =
            Messages::open(p, channel_type, false).map_err(|source| DiffError::Replay { path: p.clone(), source })?;
        let name = format!("{}-{}", m.channel_type.name(), m.channel_id);
        let side = Side {
            path: p.clone(),
            channel_type: m.channel_type,
            header_kind: format!("{:?}", m.header_kind).to_lowercase(),
            caps: BTreeMap::new(),
        };
        // A reconnect of the same channel is compared as its own channel.
        let mut key = name.clone();
        let mut k = 1;
        while rec.channels.contains_key(&key) {
            key = format!("{name}.{k}");
            k += 1;
        }
        opened.push((m.start, key.clone()));
        rec.channels.insert(key, side);
    }
    opened.sort();
    rec.order = opened.into_iter().map(|(_, k)| k).collect();
    // Caps by name from session.json, when the recording has one.
    if path.is_dir()
        && let Ok(bytes) = std::fs::read(path.join("session.json"))
        && let Ok(json) = serde_json::from_slice::<serde_json::Value>(&bytes)
    {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for c in json["channels"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let base = format!("{}-{}", c["type"].as_str().unwrap_or("?"), c["channel_id"]);
            let n = seen.entry(base.clone()).or_insert(0);
            let key = if *n == 0 { base.clone() } else { format!("{base}.{n}") };
            *n += 1;
            let Some(side) = rec.channels.get_mut(&key) else { continue };
            for (who, field) in [("client", "client_caps"), ("server", "server_caps")] {
                for part in ["common", "channel"] {
                    let names: Vec<String> = c[field][part]
                        .as_array()
                        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                        .unwrap_or_default();
                    side.caps.insert(format!("{who} {part} caps"), names);
                }
            }
        }
    }
    Ok(rec)
}

/// The short human summary, then details.
pub fn format_report(r: &DiffReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    if r.equal {
        let _ = writeln!(s, "equal ({} channels; masked: {})", r.channels.len(), r.masks.join(", "));
        return s;
    }
    let _ = writeln!(s, "different");
    if !r.only_in_a.is_empty() {
        let _ = writeln!(s, "  channels only in A: {}", r.only_in_a.join(", "));
    }
    if !r.only_in_b.is_empty() {
        let _ = writeln!(s, "  channels only in B: {}", r.only_in_b.join(", "));
    }
    for c in r.channels.iter().filter(|c| !c.equal) {
        let mut what = Vec::new();
        if c.header_kind.is_some() {
            what.push("header kind".to_string());
        }
        if !c.caps.is_empty() {
            what.push(format!("{} caps", c.caps.len()));
        }
        for d in &c.divergences {
            what.push(format!("{} sequence ({} messages)", d.dir, d.changed));
        }
        if let Some(p) = c.picture.as_ref().filter(|p| !p.equal) {
            what.push(p.describe());
        }
        let _ = writeln!(s, "  {}: {}", c.channel, what.join(", "));
    }
    let _ = writeln!(s, "\ndetails:");
    for c in r.channels.iter().filter(|c| !c.equal) {
        let _ = writeln!(s, "{}:", c.channel);
        if let Some((a, b)) = &c.header_kind {
            let _ = writeln!(s, "  header kind: A {a}, B {b}");
        }
        for cap in &c.caps {
            let _ = writeln!(s, "  {cap}");
        }
        for d in &c.divergences {
            let _ = writeln!(s, "  {} first divergence at A #{} / B #{}:", d.dir, d.at_a, d.at_b);
            for l in &d.around_a {
                let _ = writeln!(s, "    A {l}");
            }
            for l in &d.around_b {
                let _ = writeln!(s, "    B {l}");
            }
        }
        for (name, (ca, ba, cb, bb)) in &c.counts {
            let _ = writeln!(s, "  {name}: A {ca} ({ba} bytes), B {cb} ({bb} bytes)");
        }
    }
    s
}

/// Writes `r` as JUnit XML: one test suite, one test case per channel
/// (a failure for each that differs) and one for the channels opened.
///
/// # Errors
/// The file cannot be written.
pub fn write_junit(r: &DiffReport, path: &Path) -> std::io::Result<()> {
    use quick_xml::Writer;
    use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, Event};
    let mut cases: Vec<(String, Vec<String>)> = Vec::new();
    let mut opened = Vec::new();
    if !r.only_in_a.is_empty() {
        opened.push(format!("channels only in A: {}", r.only_in_a.join(", ")));
    }
    if !r.only_in_b.is_empty() {
        opened.push(format!("channels only in B: {}", r.only_in_b.join(", ")));
    }
    cases.push(("channels opened".into(), opened));
    for c in &r.channels {
        let mut problems: Vec<String> = c.caps.clone();
        if let Some((a, b)) = &c.header_kind {
            problems.push(format!("header kind: A {a}, B {b}"));
        }
        for d in &c.divergences {
            problems.push(format!("{}: {} messages differ, first at A #{} / B #{}", d.dir, d.changed, d.at_a, d.at_b));
        }
        for (name, (ca, _, cb, _)) in &c.counts {
            problems.push(format!("{name}: A {ca}, B {cb}"));
        }
        if let Some(p) = c.picture.as_ref().filter(|p| !p.equal) {
            problems.push(p.describe());
        }
        cases.push((c.channel.clone(), problems));
    }
    let failures = cases.iter().filter(|c| !c.1.is_empty()).count();
    let mut w = Writer::new_with_indent(std::io::BufWriter::new(std::fs::File::create(path)?), b' ', 2);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    let mut suite = BytesStart::new("testsuite");
    suite.push_attribute(("name", "spicetap diff"));
    suite.push_attribute(("tests", cases.len().to_string().as_str()));
    suite.push_attribute(("failures", failures.to_string().as_str()));
    w.write_event(Event::Start(suite))?;
    for (name, problems) in &cases {
        crate::verdict::test_case(&mut w, "spicetap.diff", name, problems)?;
    }
    w.write_event(Event::End(BytesEnd::new("testsuite")))?;
    w.into_inner().flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sequence in memory.
    struct VecSource<'a>(std::iter::Copied<std::slice::Iter<'a, u16>>);

    impl Source for VecSource<'_> {
        fn next_msg(&mut self) -> Result<Option<Msg>, DiffError> {
            Ok(self.0.next().map(|ty| Msg { ty, t: 0.0, size: 1 }))
        }
    }

    fn run(a: &[u16], b: &[u16]) -> Option<Divergence> {
        let name = |ty: u16| format!("T{ty}");
        align("s2c", &mut VecSource(a.iter().copied()), &mut VecSource(b.iter().copied()), &name).unwrap()
    }

    #[test]
    fn alignment_finds_the_first_real_divergence() {
        // INIT CREATE COPY COPY MARK against one FILL more.
        let a = [1, 2, 3, 3, 4];
        let b = [1, 2, 3, 5, 3, 4];
        let d = run(&a, &b).unwrap();
        assert_eq!((d.at_a, d.at_b, d.changed), (3, 3, 1));
        assert!(d.around_b.iter().any(|l| l.contains("T5")), "{:?}", d.around_b);
        assert!(run(&a, &a).is_none());
        assert!(run(&[], &[]).is_none());
        let d = run(&[], &[7, 7]).unwrap();
        assert_eq!((d.at_a, d.at_b, d.changed), (0, 0, 2));
        let ca = BTreeMap::from([(3, (2, 2)), (1, (1, 1))]);
        let cb = BTreeMap::from([(3, (2, 2)), (1, (1, 1)), (5, (1, 9))]);
        assert_eq!(counts(&ca, &cb).into_iter().collect::<Vec<_>>(), [(5, (0, 0, 1, 9))]);
    }

    /// Sequences many windows long: the common prefix streams through,
    /// and differences past the first window are found where they are.
    #[test]
    fn long_sequences_align_window_by_window() {
        let n = WINDOW * 5 + 17;
        let a: Vec<u16> = (0..n).map(|i| (i % 7) as u16).collect();
        assert!(run(&a, &a).is_none());
        // One message dropped deep in B, one extra near its end.
        let mut b = a.clone();
        b.remove(WINDOW * 3 + 5);
        b.insert(n - 10, 99);
        let d = run(&a, &b).unwrap();
        assert_eq!((d.at_a, d.at_b), (WINDOW * 3 + 5, WINDOW * 3 + 5));
        assert_eq!(d.changed, 2);
        assert_eq!(d.around_a.len(), 2 * CONTEXT + 1);
        // Nothing in common at all: every message counted once per side.
        let m = WINDOW + 17;
        let c: Vec<u16> = (0..m).map(|_| 100).collect();
        let d = run(&a[..m], &c).unwrap();
        assert_eq!((d.at_a, d.at_b), (0, 0));
        assert!(d.changed >= m, "{}", d.changed);
    }

    #[test]
    fn foreign_input_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let o = DiffOptions::default();
        assert!(matches!(diff(tmp.path(), tmp.path(), &o), Err(DiffError::NotARecording(_))));
        let junk = tmp.path().join("x.pcap");
        std::fs::write(&junk, b"junk").unwrap();
        assert!(matches!(diff(&junk, &junk, &o), Err(DiffError::Replay { .. })));
        assert!(matches!(diff(&tmp.path().join("none"), &junk, &o), Err(DiffError::Io { .. })));
    }
}

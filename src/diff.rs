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

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use similar::{Algorithm, DiffOp, capture_diff_slices};
use thiserror::Error;

use crate::capture::replay::{self, ReplayError};
use crate::protocol::{ChannelType, Direction, message_name};

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

/// One message of a channel's sequence.
#[derive(Debug, Clone)]
struct Msg {
    name: String,
    /// Seconds since the channel's first message.
    t: f64,
    size: usize,
}

/// A channel of one side.
#[derive(Debug, Default)]
struct Side {
    /// Per direction (0 = client to server), messages not masked.
    seq: [Vec<Msg>; 2],
    header_kind: Option<String>,
    caps: BTreeMap<String, Vec<String>>,
}

/// One recording: channels by name (`display-0`), in opening order.
#[derive(Debug, Default)]
struct Recording {
    order: Vec<String>,
    channels: BTreeMap<String, Side>,
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

/// Compares recording `a` with `b` (session folders, or pcaps with
/// `channel_type` for link-less ones); `masks` are the message names left
/// out.
///
/// # Errors
/// [`DiffError`] when either side cannot be read.
pub fn diff(a: &Path, b: &Path, channel_type: Option<ChannelType>, masks: &[String]) -> Result<DiffReport, DiffError> {
    let ra = load(a, channel_type, masks)?;
    let rb = load(b, channel_type, masks)?;
    let mut report = DiffReport { masks: masks.to_vec(), ..DiffReport::default() };
    report.only_in_a = ra.order.iter().filter(|c| !rb.channels.contains_key(*c)).cloned().collect();
    report.only_in_b = rb.order.iter().filter(|c| !ra.channels.contains_key(*c)).cloned().collect();
    for name in ra.order.iter().filter(|c| rb.channels.contains_key(*c)) {
        let (sa, sb) = (&ra.channels[name], &rb.channels[name]);
        let mut c = ChannelDiff { channel: name.clone(), ..ChannelDiff::default() };
        if sa.header_kind != sb.header_kind {
            c.header_kind =
                Some((sa.header_kind.clone().unwrap_or_default(), sb.header_kind.clone().unwrap_or_default()));
        }
        let kinds: BTreeSet<&String> = sa.caps.keys().chain(sb.caps.keys()).collect();
        for k in kinds {
            let empty = Vec::new();
            let (ca, cb) = (sa.caps.get(k).unwrap_or(&empty), sb.caps.get(k).unwrap_or(&empty));
            c.caps.extend(cb.iter().filter(|x| !ca.contains(x)).map(|x| format!("{k}: +{x}")));
            c.caps.extend(ca.iter().filter(|x| !cb.contains(x)).map(|x| format!("{k}: -{x}")));
        }
        for (d, dir) in ["c2s", "s2c"].into_iter().enumerate() {
            if let Some(div) = divergence(dir, &sa.seq[d], &sb.seq[d]) {
                c.divergences.push(div);
            }
            for (name, counts) in counts(&sa.seq[d], &sb.seq[d]) {
                c.counts.insert(name, counts);
            }
        }
        c.equal = c.header_kind.is_none() && c.caps.is_empty() && c.divergences.is_empty() && c.counts.is_empty();
        report.channels.push(c);
    }
    report.equal =
        report.only_in_a.is_empty() && report.only_in_b.is_empty() && report.channels.iter().all(|c| c.equal);
    Ok(report)
}

fn divergence(dir: &'static str, a: &[Msg], b: &[Msg]) -> Option<Divergence> {
    let na: Vec<&str> = a.iter().map(|m| m.name.as_str()).collect();
    let nb: Vec<&str> = b.iter().map(|m| m.name.as_str()).collect();
    let ops = capture_diff_slices(Algorithm::Myers, &na, &nb);
    let mut first = None;
    let mut changed = 0;
    for op in &ops {
        match *op {
            DiffOp::Equal { .. } => {}
            DiffOp::Delete { old_index, old_len, new_index } => {
                changed += old_len;
                first.get_or_insert((old_index, new_index));
            }
            DiffOp::Insert { old_index, new_index, new_len } => {
                changed += new_len;
                first.get_or_insert((old_index, new_index));
            }
            DiffOp::Replace { old_index, old_len, new_index, new_len } => {
                changed += old_len.max(new_len);
                first.get_or_insert((old_index, new_index));
            }
        }
    }
    let (at_a, at_b) = first?;
    let around = |s: &[Msg], i: usize| -> Vec<String> {
        s[i.saturating_sub(CONTEXT)..(i + CONTEXT + 1).min(s.len())]
            .iter()
            .map(|m| format!("{:.6} {} ({} bytes)", m.t, m.name, m.size))
            .collect()
    };
    Some(Divergence { dir, changed, at_a, at_b, around_a: around(a, at_a), around_b: around(b, at_b) })
}

fn counts(a: &[Msg], b: &[Msg]) -> BTreeMap<String, (u64, u64, u64, u64)> {
    let mut all: BTreeMap<String, (u64, u64, u64, u64)> = BTreeMap::new();
    for m in a {
        let e = all.entry(m.name.clone()).or_default();
        e.0 += 1;
        e.1 += m.size as u64;
    }
    for m in b {
        let e = all.entry(m.name.clone()).or_default();
        e.2 += 1;
        e.3 += m.size as u64;
    }
    all.retain(|_, c| c.0 != c.2);
    all
}

fn load(path: &Path, channel_type: Option<ChannelType>, masks: &[String]) -> Result<Recording, DiffError> {
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
        let r = replay::read(p, channel_type).map_err(|source| DiffError::Replay { path: p.clone(), source })?;
        let name = format!("{}-{}", r.channel_type.name(), r.channel_id);
        let start = r.messages.first().map_or(r.end, |m| m.at);
        let mut side = Side { header_kind: Some(format!("{:?}", r.header_kind).to_lowercase()), ..Side::default() };
        for m in &r.messages {
            let n = message_name(r.channel_type, m.dir, m.header.msg_type).into_owned();
            if masks.contains(&n) {
                continue;
            }
            let d = usize::from(m.dir != Direction::ClientToServer);
            side.seq[d].push(Msg { name: n, t: m.at.saturating_sub(start).as_secs_f64(), size: m.body.len() });
        }
        // A reconnect of the same channel is compared as its own channel.
        let mut key = name.clone();
        let mut k = 1;
        while rec.channels.contains_key(&key) {
            key = format!("{name}.{k}");
            k += 1;
        }
        opened.push((start, key.clone()));
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

    fn msgs(names: &[&str]) -> Vec<Msg> {
        names.iter().enumerate().map(|(i, n)| Msg { name: n.to_string(), t: i as f64, size: 1 }).collect()
    }

    #[test]
    fn alignment_finds_the_first_real_divergence() {
        let a = msgs(&["INIT", "CREATE", "COPY", "COPY", "MARK"]);
        let b = msgs(&["INIT", "CREATE", "COPY", "FILL", "COPY", "MARK"]);
        let d = divergence("s2c", &a, &b).unwrap();
        assert_eq!((d.at_a, d.at_b, d.changed), (3, 3, 1));
        assert!(d.around_b.iter().any(|l| l.contains("FILL")));
        assert!(divergence("s2c", &a, &a).is_none());
        assert_eq!(counts(&a, &b).keys().collect::<Vec<_>>(), ["FILL"]);
    }

    #[test]
    fn foreign_input_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(diff(tmp.path(), tmp.path(), None, &[]), Err(DiffError::NotARecording(_))));
        let junk = tmp.path().join("x.pcap");
        std::fs::write(&junk, b"junk").unwrap();
        assert!(matches!(diff(&junk, &junk, None, &[]), Err(DiffError::Replay { .. })));
        assert!(matches!(diff(&tmp.path().join("none"), &junk, None, &[]), Err(DiffError::Io { .. })));
    }
}

//! Reading a channel pcap back: the SPICE messages of both directions, in
//! capture order, with their timestamps.
//!
//! Works on spicetap's own pcaps (whole TCP conversation with the link
//! stage) and on pcaps without a link stage, such as ryll's `--capture`
//! files (fake TCP between 10.0.0.1 and 10.0.0.2, one file per channel),
//! given the channel type. The client side is the side that sent the first
//! payload (spicetap: the link message) or, without a link stage, the side
//! whose port is not the lower, server port.

use std::path::Path;
use std::time::Duration;

use pcap_file::pcap::PcapReader;
use thiserror::Error;

use crate::framing::{MessageAssembler, MessageHeader};
use crate::link::{HeaderKind, LinkHeader, LinkMess, LinkReply, auth_selection};
use crate::protocol::{ChannelType, Direction, SPICE_AUTH_SASL, SPICE_TICKET_BYTES};

/// A pcap that cannot be replayed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The file could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Not a pcap pcap-file understands.
    #[error("pcap: {0}")]
    Pcap(#[from] pcap_file::PcapError),
    /// The link stage is missing or malformed.
    #[error("link stage: {0}")]
    Link(String),
    /// The SPICE stream could not be framed.
    #[error("framing: {0}")]
    Framing(#[from] crate::framing::FramingError),
}

/// One SPICE message from a pcap.
#[derive(Debug, Clone)]
pub struct ReplayMessage {
    /// Capture time of its last byte, since the Unix epoch.
    pub at: Duration,
    /// Which way it went.
    pub dir: Direction,
    /// Its header.
    pub header: MessageHeader,
    /// Its body.
    pub body: Vec<u8>,
}

/// A replayed channel: what its link stage said, then its messages.
#[derive(Debug)]
pub struct Replay {
    /// Channel type (from the link message, or as given).
    pub channel_type: ChannelType,
    /// Channel id (from the link message; 0 without one).
    pub channel_id: u8,
    /// Header kind used.
    pub header_kind: HeaderKind,
    /// Messages in capture order.
    pub messages: Vec<ReplayMessage>,
    /// Capture time of the file's last packet (the FIN when the channel
    /// closed while recorded), since the Unix epoch.
    pub end: Duration,
}

/// The channel pcaps of a session folder, sorted by name: every `*.pcap`
/// but the decoders' `*.usbmon.pcap` and `*.http.pcap`.
///
/// # Errors
/// The folder cannot be listed.
pub fn session_pcaps(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut pcaps: Vec<std::path::PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            n.ends_with(".pcap") && !n.ends_with(".usbmon.pcap") && !n.ends_with(".http.pcap")
        })
        .collect();
    pcaps.sort();
    Ok(pcaps)
}

/// Reads `path`. `channel_type` is required for pcaps without a link stage
/// (then the mini header is assumed).
///
/// # Errors
/// [`ReplayError`] for unreadable files and broken streams.
pub fn read(path: &Path, channel_type: Option<ChannelType>) -> Result<Replay, ReplayError> {
    let file = std::fs::File::open(path)?;
    let mut reader = PcapReader::new(std::io::BufReader::new(file))?;
    // (timestamp, from-client?, payload) of every TCP segment with data.
    let mut segments: Vec<(Duration, u16, Vec<u8>)> = Vec::new();
    let mut ports: Vec<u16> = Vec::new();
    let mut end = Duration::ZERO;
    while let Some(packet) = reader.next_packet() {
        let packet = packet?;
        end = end.max(packet.timestamp);
        let Ok(sliced) = etherparse::SlicedPacket::from_ethernet(&packet.data) else { continue };
        let Some(etherparse::TransportSlice::Tcp(tcp)) = sliced.transport else { continue };
        if !ports.contains(&tcp.source_port()) {
            ports.push(tcp.source_port());
        }
        if !tcp.payload().is_empty() {
            segments.push((packet.timestamp, tcp.source_port(), tcp.payload().to_vec()));
        }
    }
    let Some(first) = segments.first() else {
        return Err(ReplayError::Link("no payload".into()));
    };
    let starts_with_link = first.2.starts_with(b"REDQ");
    let client_port = if starts_with_link {
        first.1
    } else {
        // No link stage: the server is the lower port (5900-ish, or 5930 for spicetap).
        ports.iter().copied().max().unwrap_or(first.1)
    };
    let mut streams: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut order = Vec::with_capacity(segments.len());
    for (at, port, data) in segments {
        let dir = if port == client_port { Direction::ClientToServer } else { Direction::ServerToClient };
        let start = streams[dir.index()].len();
        streams[dir.index()].extend_from_slice(&data);
        order.push((at, dir, start, streams[dir.index()].len()));
    }

    let (channel_type, channel_id, header_kind, skip) = if starts_with_link {
        link_stage(&streams)?
    } else {
        let ct = channel_type.ok_or_else(|| ReplayError::Link("no link stage: give the channel type".into()))?;
        (ct, 0, HeaderKind::Mini, [0, 0])
    };

    // Frame both directions, attributing each message to the segment that
    // completed it, then order by segment.
    let mut messages = Vec::new();
    let mut assemblers = [MessageAssembler::new(header_kind), MessageAssembler::new(header_kind)];
    for (at, dir, start, end) in order {
        let i = dir.index();
        let from = start.max(skip[i]);
        if from >= end {
            continue;
        }
        let done = assemblers[i].feed(&streams[i][from..end])?;
        messages.extend(done.into_iter().map(|(header, body)| ReplayMessage { at, dir, header, body }));
    }
    Ok(Replay { channel_type, channel_id, header_kind, messages, end })
}

/// Parses the link stage at the start of both streams; returns the channel
/// type, header kind and the stream offsets where messages begin.
fn link_stage(streams: &[Vec<u8>; 2]) -> Result<(ChannelType, u8, HeaderKind, [usize; 2]), ReplayError> {
    let bad = |what: &str| ReplayError::Link(what.to_string());
    let c = &streams[0];
    let s = &streams[1];
    let ch = LinkHeader::parse(c.get(..16).ok_or_else(|| bad("short link message"))?, LinkMess::FIXED_SIZE)
        .map_err(|e| bad(&e.to_string()))?;
    let c_end = 16 + ch.size as usize;
    let mess =
        LinkMess::parse(c.get(16..c_end).ok_or_else(|| bad("short link message"))?).map_err(|e| bad(&e.to_string()))?;
    let sh =
        LinkHeader::parse(s.get(..16).ok_or_else(|| bad("short link reply"))?, 4).map_err(|e| bad(&e.to_string()))?;
    let s_end = 16 + sh.size as usize;
    let reply =
        LinkReply::parse(s.get(16..s_end).ok_or_else(|| bad("short link reply"))?).map_err(|e| bad(&e.to_string()))?;
    let mut c_skip = c_end;
    if auth_selection(&mess.caps, &reply.caps) {
        let mech = c.get(c_skip..c_skip + 4).ok_or_else(|| bad("no auth mechanism"))?;
        if u32::from_le_bytes([mech[0], mech[1], mech[2], mech[3]]) == SPICE_AUTH_SASL {
            return Err(bad("SASL authentication: the stream cannot be framed"));
        }
        c_skip += 4;
    }
    c_skip += SPICE_TICKET_BYTES;
    Ok((mess.channel_type, mess.channel_id, HeaderKind::negotiate(&mess.caps, &reply.caps), [c_skip, s_end + 4]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::mini;
    use crate::tcp_pcap::{Endpoints, TcpConversation, TcpPcap};
    use std::time::SystemTime;

    /// A pcap of a stream without link stage, as ryll's `--capture` writes them.
    #[test]
    fn pcaps_without_link_stage_replay_given_the_channel_type() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("display.pcap");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut out = TcpPcap::new(std::fs::File::create(&path).unwrap()).unwrap();
        let mut c = TcpConversation::open(&mut out, Endpoints::new(49152, 5930), t0).unwrap();
        c.start_messages(Some(HeaderKind::Mini));
        let mut s2c = mini(314, &[0; 20]);
        s2c.extend(mini(102, &[]));
        c.data(&mut out, Direction::ServerToClient, t0, &s2c[..7]).unwrap();
        c.data(&mut out, Direction::ClientToServer, t0, &mini(101, &[1, 2, 3])).unwrap();
        c.data(&mut out, Direction::ServerToClient, t0 + Duration::from_millis(5), &s2c[7..]).unwrap();
        c.close(&mut out, Direction::ClientToServer, t0).unwrap();

        assert!(matches!(read(&path, None), Err(ReplayError::Link(_))), "the channel type is needed");
        let r = read(&path, Some(ChannelType::DISPLAY)).unwrap();
        assert_eq!(r.channel_type, ChannelType::DISPLAY);
        let got: Vec<_> = r.messages.iter().map(|m| (m.dir, m.header.msg_type, m.body.len())).collect();
        assert_eq!(
            got,
            [
                (Direction::ClientToServer, 101, 3),
                (Direction::ServerToClient, 314, 20),
                (Direction::ServerToClient, 102, 0)
            ]
        );
    }

    #[test]
    fn garbage_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.pcap");
        std::fs::write(&path, b"not a pcap at all").unwrap();
        assert!(read(&path, Some(ChannelType::DISPLAY)).is_err());
        assert!(read(&dir.path().join("missing.pcap"), None).is_err());
    }
}

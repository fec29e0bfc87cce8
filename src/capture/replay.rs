//! Reading a channel pcap back: the SPICE messages of both directions, in
//! capture order, with their timestamps, streamed packet by packet
//! ([`Messages`]): memory stays bounded by the largest message (at most
//! `limits::MAX_MESSAGE_SIZE`) and the link stage, whatever the length of
//! the recording.
//!
//! Works on spicetap's own pcaps (whole TCP conversation with the link
//! stage) and on pcaps without a link stage, such as ryll's `--capture`
//! files (fake TCP between 10.0.0.1 and 10.0.0.2, one file per channel),
//! given the channel type. The client side is the side that sent the first
//! payload (spicetap: the link message) or, without a link stage, the
//! higher port of the first segment (the server listens on the lower one).

use std::collections::VecDeque;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use pcap_file::PcapError;
use pcap_file::pcap::{PcapPacket, PcapParser};
use thiserror::Error;

use crate::framing::{Frame, Framer, MessageHeader};
use crate::link::{HeaderKind, LinkHeader, LinkMess, LinkReply, auth_selection};
use crate::protocol::{ChannelType, Direction, SPICE_AUTH_SASL, SPICE_TICKET_BYTES};

/// Payload bytes read while looking for the end of the link stage before
/// the file is declared not a SPICE channel: a link message, its reply and
/// the ticket are a few hundred bytes.
const MAX_LINK_STAGE_BYTES: usize = 1 << 20;

/// Largest pcap record (16-byte record header and packet data) read: a
/// larger one ends the stream as cut short, as pcap-file's own
/// `PcapReader` (whose buffer has this size) does.
const MAX_RECORD_BYTES: usize = 8_000_000;

/// First size of [`PcapRecords`]' buffer; it doubles, up to
/// [`MAX_RECORD_BYTES`], only for a record that does not fit.
const READ_CHUNK_BYTES: usize = 64 * 1024;

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
    /// Its body (empty when the reader was opened without bodies; the size
    /// is in the header).
    pub body: Vec<u8>,
}

/// A replayed channel, whole in memory: what its link stage said, then its
/// messages. For short recordings and tests; [`Messages`] streams.
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

/// Reads all of `path` into memory. `channel_type` is required for pcaps
/// without a link stage (then the mini header is assumed).
///
/// # Errors
/// [`ReplayError`] for unreadable files and broken streams.
pub fn read(path: &Path, channel_type: Option<ChannelType>) -> Result<Replay, ReplayError> {
    let mut m = Messages::open(path, channel_type, true)?;
    let messages = m.by_ref().collect::<Result<Vec<_>, _>>()?;
    Ok(Replay {
        channel_type: m.channel_type,
        channel_id: m.channel_id,
        header_kind: m.header_kind,
        messages,
        end: m.end,
    })
}

/// Frames one direction, keeping bodies or only headers.
#[derive(Debug)]
struct Assembler {
    framer: Framer,
    bodies: bool,
    current: Option<(MessageHeader, Vec<u8>)>,
}

impl Assembler {
    fn new(kind: HeaderKind, bodies: bool) -> Self {
        Self { framer: Framer::new(kind), bodies, current: None }
    }

    fn feed(
        &mut self,
        chunk: &[u8],
        at: Duration,
        dir: Direction,
        out: &mut VecDeque<ReplayMessage>,
    ) -> Result<(), ReplayError> {
        let (current, bodies) = (&mut self.current, self.bodies);
        self.framer.feed(chunk, |f| match f {
            // Grows with the body actually received, not the size announced.
            Frame::Header(h) => {
                let cap = if bodies { h.size.min(1 << 20) as usize } else { 0 };
                *current = Some((h, Vec::with_capacity(cap)));
            }
            Frame::Body(b) => {
                if let Some((_, body)) = current
                    && bodies
                {
                    body.extend_from_slice(b);
                }
            }
            Frame::End { .. } => {
                if let Some((header, body)) = current.take() {
                    out.push_back(ReplayMessage { at, dir, header, body });
                }
            }
        })?;
        Ok(())
    }
}

/// The packet records of a pcap file, parsed by pcap-file's `PcapParser`
/// from a buffer that grows with the largest record, up to
/// [`MAX_RECORD_BYTES`]. (pcap-file's `PcapReader` zeroes an 8 MB buffer
/// per file, which dominated opening the small pcaps of a session.)
struct PcapRecords {
    file: std::fs::File,
    parser: PcapParser,
    /// `buf[pos..len]` are read, unparsed bytes.
    buf: Vec<u8>,
    pos: usize,
    len: usize,
}

impl PcapRecords {
    /// Opens `path` and parses the 24-byte global header.
    fn open(path: &Path) -> Result<Self, ReplayError> {
        let mut file = std::fs::File::open(path)?;
        let mut header = [0u8; 24];
        let mut got = 0;
        while got < header.len() {
            match file.read(&mut header[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        let (_, parser) = PcapParser::new(&header[..got])?;
        Ok(Self { file, parser, buf: vec![0; READ_CHUNK_BYTES], pos: 0, len: 0 })
    }

    /// The next packet; `None` at the end of the file.
    ///
    /// # Errors
    /// pcap-file's errors for a malformed record; `PcapError::IoError` of
    /// kind `UnexpectedEof` when the file ends inside a record or a record
    /// exceeds [`MAX_RECORD_BYTES`].
    fn next_packet(&mut self) -> Option<Result<PcapPacket<'_>, PcapError>> {
        // First find the record's length, reading more as needed; then
        // parse it again to hand out a packet borrowing the buffer.
        let record_len = loop {
            match self.parser.next_packet(&self.buf[self.pos..self.len]) {
                Ok((rest, _)) => break self.len - self.pos - rest.len(),
                Err(PcapError::IncompleteBuffer) => match self.fill() {
                    Ok(0) if self.pos == self.len => return None,
                    Ok(0) => return Some(Err(PcapError::IoError(std::io::ErrorKind::UnexpectedEof.into()))),
                    Ok(_) => {}
                    Err(e) => return Some(Err(PcapError::IoError(e))),
                },
                Err(e) => return Some(Err(e)),
            }
        };
        let start = self.pos;
        self.pos += record_len;
        Some(self.parser.next_packet(&self.buf[start..start + record_len]).map(|(_, packet)| packet))
    }

    /// Moves the unparsed bytes to the front, grows the buffer if they fill
    /// it, and reads: the number of bytes read (0 at the end of the file,
    /// or when a record would exceed [`MAX_RECORD_BYTES`]).
    fn fill(&mut self) -> std::io::Result<usize> {
        self.buf.copy_within(self.pos..self.len, 0);
        self.len -= self.pos;
        self.pos = 0;
        if self.len == self.buf.len() {
            if self.buf.len() >= MAX_RECORD_BYTES {
                return Ok(0);
            }
            let grown = self.buf.len().saturating_mul(2).min(MAX_RECORD_BYTES);
            self.buf.resize(grown, 0);
        }
        loop {
            match self.file.read(&mut self.buf[self.len..]) {
                Ok(n) => {
                    self.len += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// A channel pcap read as a stream of messages, in capture order (each
/// message timed by the segment that completed it).
///
/// Holds one pcap packet, the message in progress per direction and the
/// messages of the current segment: bounded whatever the file's length. A
/// last packet cut short (a capture stopped by a full disk) ends the
/// stream and sets [`Messages::truncated`].
pub struct Messages {
    reader: PcapRecords,
    /// Channel type (from the link message, or as given).
    pub channel_type: ChannelType,
    /// Channel id (from the link message; 0 without one).
    pub channel_id: u8,
    /// Header kind used.
    pub header_kind: HeaderKind,
    /// Capture time of the first packet, since the Unix epoch.
    pub start: Duration,
    /// Capture time of the latest packet read so far (after the stream
    /// ended: the file's last packet), since the Unix epoch.
    pub end: Duration,
    /// Whether the file ended inside a packet.
    pub truncated: bool,
    client_port: u16,
    /// Stream bytes still to skip per direction (the link stage).
    skip: [usize; 2],
    assemblers: [Assembler; 2],
    ready: VecDeque<ReplayMessage>,
    done: bool,
}

impl std::fmt::Debug for Messages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messages")
            .field("channel_type", &self.channel_type)
            .field("channel_id", &self.channel_id)
            .field("header_kind", &self.header_kind)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

/// A TCP segment with payload: capture time, source and destination port,
/// payload.
type Segment = (Duration, u16, u16, Vec<u8>);

/// Why reading the next packet stopped.
enum Next {
    Segment(Segment),
    /// A packet without TCP payload.
    Skip,
    End,
}

impl Messages {
    /// Opens `path` and reads its link stage. `channel_type` is required
    /// for pcaps without a link stage (then the mini header is assumed).
    /// With `bodies` false, messages come with empty bodies (headers only),
    /// which is all counting and diffing need.
    ///
    /// # Errors
    /// [`ReplayError`] for unreadable files, files without SPICE payload
    /// and broken link stages.
    pub fn open(path: &Path, channel_type: Option<ChannelType>, bodies: bool) -> Result<Self, ReplayError> {
        let reader = PcapRecords::open(path)?;
        let mut me = Self {
            reader,
            channel_type: channel_type.unwrap_or(ChannelType::MAIN),
            channel_id: 0,
            header_kind: HeaderKind::Mini,
            start: Duration::ZERO,
            end: Duration::ZERO,
            truncated: false,
            client_port: 0,
            skip: [0, 0],
            assemblers: [Assembler::new(HeaderKind::Mini, bodies), Assembler::new(HeaderKind::Mini, bodies)],
            ready: VecDeque::new(),
            done: false,
        };
        let mut first_packet = true;
        let mut linked = false;
        let mut pre: Vec<Segment> = Vec::new();
        let mut streams: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
        loop {
            let next = me.next_segment()?;
            if first_packet && !matches!(next, Next::End) {
                me.start = me.end;
                first_packet = false;
            }
            let seg = match next {
                Next::Segment(s) => s,
                Next::Skip => continue,
                Next::End if pre.is_empty() => return Err(ReplayError::Link("no payload".into())),
                // Refused, or closed before the ticket: a channel without messages.
                Next::End if linked => break,
                Next::End => match link_stage(&streams, true)? {
                    // Closed after the link reply, before the auth mechanism.
                    Some((ct, id, kind, skip)) => {
                        (me.channel_type, me.channel_id, me.header_kind, me.skip) = (ct, id, kind, skip);
                        break;
                    }
                    None => return Err(ReplayError::Link("the file ends inside the link message or reply".into())),
                },
            };
            if pre.is_empty() {
                if seg.3.starts_with(b"REDQ") {
                    me.client_port = seg.1;
                } else {
                    // No link stage: the server is the lower port.
                    me.client_port = seg.1.max(seg.2);
                    let ct =
                        channel_type.ok_or_else(|| ReplayError::Link("no link stage: give the channel type".into()))?;
                    me.channel_type = ct;
                    pre.push(seg);
                    break;
                }
            }
            let i = me.dir(seg.1).index();
            streams[i].extend_from_slice(&seg.3);
            pre.push(seg);
            if streams[0].len() + streams[1].len() > MAX_LINK_STAGE_BYTES {
                return Err(ReplayError::Link("no complete link stage in the first MiB".into()));
            }
            if let Some((ct, id, kind, skip)) = link_stage(&streams, false)? {
                (me.channel_type, me.channel_id, me.header_kind, me.skip) = (ct, id, kind, skip);
                linked = true;
                if streams[0].len() >= skip[0] && streams[1].len() >= skip[1] {
                    break;
                }
            }
        }
        me.assemblers = [Assembler::new(me.header_kind, bodies), Assembler::new(me.header_kind, bodies)];
        for seg in pre {
            me.feed(seg)?;
        }
        Ok(me)
    }

    fn dir(&self, source_port: u16) -> Direction {
        if source_port == self.client_port { Direction::ClientToServer } else { Direction::ServerToClient }
    }

    /// Reads the next packet.
    fn next_segment(&mut self) -> Result<Next, ReplayError> {
        let packet = match self.reader.next_packet() {
            None => return Ok(Next::End),
            Some(Ok(p)) => p,
            Some(Err(PcapError::IoError(e))) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                self.truncated = true;
                return Ok(Next::End);
            }
            Some(Err(e)) => return Err(e.into()),
        };
        self.end = self.end.max(packet.timestamp);
        let Ok(sliced) = etherparse::SlicedPacket::from_ethernet(&packet.data) else { return Ok(Next::Skip) };
        let Some(etherparse::TransportSlice::Tcp(tcp)) = sliced.transport else { return Ok(Next::Skip) };
        if tcp.payload().is_empty() {
            return Ok(Next::Skip);
        }
        Ok(Next::Segment((packet.timestamp, tcp.source_port(), tcp.destination_port(), tcp.payload().to_vec())))
    }

    /// Frames a segment's payload past the link stage.
    fn feed(&mut self, (at, source, _, data): Segment) -> Result<(), ReplayError> {
        let dir = self.dir(source);
        let i = dir.index();
        let skip = self.skip[i].min(data.len());
        self.skip[i] -= skip;
        if skip < data.len() {
            self.assemblers[i].feed(&data[skip..], at, dir, &mut self.ready)?;
        }
        Ok(())
    }
}

impl Iterator for Messages {
    type Item = Result<ReplayMessage, ReplayError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(m) = self.ready.pop_front() {
                return Some(Ok(m));
            }
            if self.done {
                return None;
            }
            let r = match self.next_segment() {
                Ok(Next::Segment(seg)) => self.feed(seg),
                Ok(Next::Skip) => Ok(()),
                Ok(Next::End) => {
                    self.done = true;
                    Ok(())
                }
                Err(e) => Err(e),
            };
            if let Err(e) = r {
                self.done = true;
                return Some(Err(e));
            }
        }
    }
}

/// Parses the link stage at the start of both streams; returns the channel
/// type, id, header kind and how many bytes of each stream the link stage
/// takes (ticket and link result included, which may not have arrived
/// yet), or `None` while the link message or reply is incomplete (or,
/// unless `ended`, the auth mechanism a selection of mechanisms calls for:
/// a stream that ended before it never authenticated, SASL or not).
#[allow(clippy::type_complexity)]
fn link_stage(
    streams: &[Vec<u8>; 2],
    ended: bool,
) -> Result<Option<(ChannelType, u8, HeaderKind, [usize; 2])>, ReplayError> {
    let bad = |e: &dyn std::fmt::Display| ReplayError::Link(e.to_string());
    let c = &streams[0];
    let s = &streams[1];
    let (Some(ch), Some(sh)) = (c.get(..16), s.get(..16)) else { return Ok(None) };
    let ch = LinkHeader::parse(ch, LinkMess::FIXED_SIZE).map_err(|e| bad(&e))?;
    let sh = LinkHeader::parse(sh, 4).map_err(|e| bad(&e))?;
    let c_end = 16 + ch.size as usize;
    let s_end = 16 + sh.size as usize;
    let (Some(mess), Some(reply)) = (c.get(16..c_end), s.get(16..s_end)) else { return Ok(None) };
    let mess = LinkMess::parse(mess).map_err(|e| bad(&e))?;
    let reply = LinkReply::parse(reply).map_err(|e| bad(&e))?;
    let mut c_skip = c_end;
    if auth_selection(&mess.caps, &reply.caps) {
        match c.get(c_skip..c_skip + 4) {
            Some(mech) if u32::from_le_bytes([mech[0], mech[1], mech[2], mech[3]]) == SPICE_AUTH_SASL => {
                return Err(bad(&"SASL authentication: the stream cannot be framed"));
            }
            Some(_) => {}
            None if !ended => return Ok(None),
            None => {}
        }
        c_skip += 4;
    }
    c_skip += SPICE_TICKET_BYTES;
    // The server's 4-byte link result.
    let s_skip = s_end + 4;
    Ok(Some((mess.channel_type, mess.channel_id, HeaderKind::negotiate(&mess.caps, &reply.caps), [c_skip, s_skip])))
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::mini;
    use crate::tcp_pcap::{Endpoints, TcpConversation, TcpPcap};
    use std::time::SystemTime;

    /// A little-endian microsecond pcap: global header, then one record per
    /// `(incl_len, data length)`.
    fn raw_pcap(records: &[(u32, usize)]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(0xa1b2_c3d4u32.to_le_bytes());
        out.extend(2u16.to_le_bytes());
        out.extend(4u16.to_le_bytes());
        out.extend([0; 8]);
        out.extend(u32::MAX.to_le_bytes()); // snaplen
        out.extend(1u32.to_le_bytes()); // LINKTYPE_ETHERNET
        for (i, &(incl_len, data)) in records.iter().enumerate() {
            out.extend((i as u32).to_le_bytes());
            out.extend(0u32.to_le_bytes());
            out.extend(incl_len.to_le_bytes());
            out.extend(incl_len.to_le_bytes());
            out.extend(std::iter::repeat_n(i as u8, data));
        }
        out
    }

    fn records_of(bytes: &[u8]) -> (Vec<(u64, usize)>, Option<PcapError>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.pcap");
        std::fs::write(&path, bytes).unwrap();
        let mut r = match PcapRecords::open(&path) {
            Ok(r) => r,
            Err(ReplayError::Pcap(e)) => return (Vec::new(), Some(e)),
            Err(e) => panic!("{e}"),
        };
        let mut got = Vec::new();
        while let Some(p) = r.next_packet() {
            match p {
                Ok(p) => got.push((p.timestamp.as_secs(), p.data.len())),
                Err(e) => return (got, Some(e)),
            }
        }
        (got, None)
    }

    #[test]
    fn pcap_records_grow_the_buffer_for_large_records_and_stop_at_cuts() {
        // Records around and beyond the first buffer size.
        let sizes = [10, READ_CHUNK_BYTES - 16, READ_CHUNK_BYTES + 1, 3 * READ_CHUNK_BYTES, 0, 7];
        let spec: Vec<(u32, usize)> = sizes.iter().map(|&n| (n as u32, n)).collect();
        let whole = raw_pcap(&spec);
        let (got, err) = records_of(&whole);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(got, sizes.iter().enumerate().map(|(i, &n)| (i as u64, n)).collect::<Vec<_>>());

        // Cut inside the last record's data, and inside a record header.
        for cut in [whole.len() - 3, whole.len() - 7 - 5] {
            let (got, err) = records_of(&whole[..cut]);
            assert_eq!(got.len(), sizes.len() - 1);
            assert!(matches!(err, Some(PcapError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof));
        }
        // Only the global header; a short global header.
        let (got, err) = records_of(&whole[..24]);
        assert!(got.is_empty() && err.is_none(), "{err:?}");
        assert!(records_of(&whole[..10]).1.is_some());
        assert!(records_of(&[]).1.is_some());
    }

    #[test]
    fn a_pcap_record_larger_than_the_bound_reads_as_cut_short() {
        // The header claims MAX_RECORD_BYTES of data; the file holds them.
        let whole = raw_pcap(&[(4, 4), (MAX_RECORD_BYTES as u32, MAX_RECORD_BYTES)]);
        let (got, err) = records_of(&whole);
        assert_eq!(got, [(0, 4)]);
        assert!(matches!(err, Some(PcapError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof));
    }

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

    /// A whole spicetap-style conversation: link stage cut across segments,
    /// messages read as headers only, and a last packet cut short.
    #[test]
    fn link_stage_across_segments_headers_only_and_a_cut_last_packet() {
        use crate::link::tests::link_mess_bytes;
        use crate::link::{LinkHeader, LinkReply};
        use crate::protocol::LinkErr;
        // Both sides set SPICE_COMMON_CAP_MINI_HEADER (bit 3).
        let mess = link_mess_bytes(7, ChannelType::DISPLAY.0, &[1 << 3], &[]);
        let mut reply = LinkHeader::encode(LinkReply::FIXED_SIZE + 4).to_vec();
        reply.extend_from_slice(&LinkErr::OK.0.to_le_bytes());
        reply.extend_from_slice(&[0; 162]);
        for w in [1, 0, LinkReply::FIXED_SIZE, 1 << 3] {
            reply.extend_from_slice(&w.to_le_bytes());
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("display-0.pcap");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut out = TcpPcap::new(std::fs::File::create(&path).unwrap()).unwrap();
        let mut c = TcpConversation::open(&mut out, Endpoints::new(49152, 5930), t0).unwrap();
        c.data(&mut out, Direction::ClientToServer, t0, &mess[..10]).unwrap();
        c.data(&mut out, Direction::ClientToServer, t0, &mess[10..]).unwrap();
        c.data(&mut out, Direction::ServerToClient, t0, &reply).unwrap();
        c.data(&mut out, Direction::ClientToServer, t0, &[0; SPICE_TICKET_BYTES]).unwrap();
        let mut s2c = 0u32.to_le_bytes().to_vec(); // link result
        s2c.extend(mini(314, &[7; 20]));
        s2c.extend(mini(102, &[]));
        c.data(&mut out, Direction::ServerToClient, t0 + Duration::from_millis(3), &s2c).unwrap();
        drop(out);
        let r = read(&path, None).unwrap();
        assert_eq!((r.channel_type, r.header_kind), (ChannelType::DISPLAY, HeaderKind::Mini));
        assert_eq!(r.messages.len(), 2);
        assert_eq!(r.messages[0].body, [7; 20]);

        let mut m = Messages::open(&path, None, false).unwrap();
        let got: Vec<_> = m.by_ref().map(|m| m.map(|m| (m.header.msg_type, m.header.size, m.body.len()))).collect();
        assert_eq!(got.into_iter().collect::<Result<Vec<_>, _>>().unwrap(), [(314, 20, 0), (102, 0, 0)]);
        assert_eq!(m.start, Duration::from_secs(1_700_000_000));
        assert!(!m.truncated);

        // Cut inside the last packet: the stream ends before it, truncated.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        let mut m = Messages::open(&path, None, false).unwrap();
        assert_eq!(m.by_ref().count(), 0);
        assert!(m.truncated);
    }

    /// spicy-screenshot may quit while a channel is between the link reply
    /// and its auth mechanism: a recorded channel with no messages.
    #[test]
    fn a_channel_closed_before_its_auth_mechanism_has_no_messages() {
        use crate::link::tests::link_mess_bytes;
        use crate::link::{LinkHeader, LinkReply};
        use crate::protocol::LinkErr;
        // AUTH_SELECTION (bit 0) and MINI_HEADER (bit 3) on both sides.
        let mess = link_mess_bytes(7, ChannelType::USBREDIR.0, &[1 | 1 << 3], &[]);
        let mut reply = LinkHeader::encode(LinkReply::FIXED_SIZE + 4).to_vec();
        reply.extend_from_slice(&LinkErr::OK.0.to_le_bytes());
        reply.extend_from_slice(&[0; 162]);
        for w in [1, 0, LinkReply::FIXED_SIZE, 1 | 1 << 3] {
            reply.extend_from_slice(&w.to_le_bytes());
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usbredir-1.pcap");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut out = TcpPcap::new(std::fs::File::create(&path).unwrap()).unwrap();
        let mut c = TcpConversation::open(&mut out, Endpoints::new(49152, 5930), t0).unwrap();
        c.data(&mut out, Direction::ClientToServer, t0, &mess).unwrap();
        c.data(&mut out, Direction::ServerToClient, t0, &reply).unwrap();
        c.close(&mut out, Direction::ClientToServer, t0).unwrap();
        drop(out);
        let r = read(&path, None).unwrap();
        assert_eq!(r.channel_type, ChannelType::USBREDIR);
        assert!(r.messages.is_empty());
        let mut m = Messages::open(&path, None, true).unwrap();
        assert_eq!(m.by_ref().count(), 0);
        assert!(!m.truncated);
        // Cut inside the reply, it is still an error.
        let bytes = std::fs::read(&path).unwrap();
        let cut = bytes.windows(4).position(|w| w == b"REDQ").unwrap();
        let second = cut + 4 + bytes[cut + 4..].windows(4).position(|w| w == b"REDQ").unwrap();
        std::fs::write(&path, &bytes[..second + 20]).unwrap();
        assert!(Messages::open(&path, None, true).is_err());
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

//! Byte streams as synthetic TCP conversations in a pcap file, so that
//! Wireshark's dissectors read what a proxy saw as two byte streams.
//!
//! ```text
//! client:<port>  ->  server:<port>   SYN (MSS, window scale 14)
//! server         ->  client          SYN, ACK
//! client         ->  server          ACK
//!   data segments (at most PCAP_MAX_SEGMENT bytes, so every frame fits
//!   IPv4), sequence numbers continuous, each acknowledging all the peer
//!   has sent so far; a pure ACK after 256 MiB of one-way data
//! FIN, ACK from the side that closed first; FIN, ACK back; last ACK
//! ```
//!
//! Ethernet link type, microsecond wall-clock timestamps, snaplen
//! [`PCAP_SNAPLEN`]. One [`TcpPcap`] file may hold many conversations
//! (the HTTP connections of a webdav channel), each a [`TcpConversation`]
//! with its own [`Endpoints`]. Payload bytes are exactly the bytes given,
//! in order.
//!
//! A conversation in *message* mode ([`TcpConversation::start_messages`]
//! with a header kind) cuts one segment per SPICE message (`framing`), as
//! the capture of a SPICE channel does: Wireshark's SPICE dissector then
//! sees one message per segment.

use std::io::{self, Write};
use std::time::{Duration, SystemTime};

use etherparse::{PacketBuilder, TcpOptionElement};
use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use thiserror::Error;

use crate::framing::{Frame, Framer};
use crate::limits::{PCAP_MAX_SEGMENT, PCAP_SNAPLEN};
use crate::link::HeaderKind;
use crate::protocol::Direction;

/// Synthetic address of the client side.
pub const CLIENT_IP: [u8; 4] = [10, 0, 0, 1];
/// Synthetic address of the server side.
pub const SERVER_IP: [u8; 4] = [10, 0, 0, 2];

const CLIENT_ISN: u32 = 0x1000_0000;
const SERVER_ISN: u32 = 0x2000_0000;
/// Window scale shift announced in both SYNs: a 1 GiB window, so long
/// one-way bursts never look like a full window.
const WINDOW_SCALE: u8 = 14;
const WINDOW: u16 = 0xffff;
/// Unacknowledged bytes after which the receiver sends a pure ACK.
const ACK_EVERY: u32 = 256 * 1024 * 1024;

/// A failure writing the pcap.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PcapError {
    /// The file could not be written.
    #[error("pcap write failed: {0}")]
    Io(#[from] io::Error),
    /// pcap-file refused the header or a packet.
    #[error("pcap write failed: {0}")]
    Pcap(#[from] pcap_file::PcapError),
    /// etherparse could not build a frame.
    #[error("building a TCP frame failed: {0}")]
    Build(String),
}

/// The two ends of a conversation: IPv4 addresses and TCP ports. MAC
/// addresses are derived (`02:00:` + the IPv4 address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    /// The client's address (sends the SYN).
    pub client_ip: [u8; 4],
    /// The client's port.
    pub client_port: u16,
    /// The server's address.
    pub server_ip: [u8; 4],
    /// The server's port.
    pub server_port: u16,
}

impl Endpoints {
    /// [`CLIENT_IP`]`:client_port` to [`SERVER_IP`]`:server_port`.
    pub fn new(client_port: u16, server_port: u16) -> Self {
        Self { client_ip: CLIENT_IP, client_port, server_ip: SERVER_IP, server_port }
    }
}

fn mac(ip: [u8; 4]) -> [u8; 6] {
    [0x02, 0, ip[0], ip[1], ip[2], ip[3]]
}

/// A pcap file of Ethernet frames, shared by the conversations in it.
pub struct TcpPcap<W: Write> {
    pcap: PcapWriter<W>,
    frame: Vec<u8>,
}

impl<W: Write> TcpPcap<W> {
    /// Writes the pcap header (Ethernet, snaplen [`PCAP_SNAPLEN`]).
    ///
    /// # Errors
    /// [`PcapError`] when `out` fails.
    pub fn new(out: W) -> Result<Self, PcapError> {
        let header = PcapHeader { snaplen: PCAP_SNAPLEN, datalink: DataLink::ETHERNET, ..PcapHeader::default() };
        Ok(Self { pcap: PcapWriter::with_header(out, header)?, frame: Vec::new() })
    }

    /// The output, for a final flush.
    pub fn into_writer(self) -> W {
        self.pcap.into_writer()
    }
}

/// One direction's state: next sequence number and the message being cut.
#[derive(Debug)]
struct Side {
    next_seq: u32,
    /// Highest ack number this side has sent.
    acked: u32,
    framer: Option<Framer>,
    pending: Vec<u8>,
    pending_time: SystemTime,
    closed: bool,
}

impl Side {
    fn new(isn: u32) -> Self {
        Self {
            next_seq: isn.wrapping_add(1),
            acked: 0,
            framer: None,
            pending: Vec::new(),
            pending_time: SystemTime::UNIX_EPOCH,
            closed: false,
        }
    }
}

/// One byte-stream pair as a TCP conversation; every call names the
/// [`TcpPcap`] it writes to.
#[derive(Debug)]
pub struct TcpConversation {
    ends: Endpoints,
    /// Index 0 = client side, 1 = server side (see [`Direction::index`]).
    sides: [Side; 2],
}

impl TcpConversation {
    /// Writes the three-way handshake of `ends` at `at`.
    ///
    /// # Errors
    /// [`PcapError`] when the output fails.
    pub fn open<W: Write>(out: &mut TcpPcap<W>, ends: Endpoints, at: SystemTime) -> Result<Self, PcapError> {
        let mut c = Self { ends, sides: [Side::new(CLIENT_ISN), Side::new(SERVER_ISN)] };
        let wscale = [
            TcpOptionElement::MaximumSegmentSize(PCAP_MAX_SEGMENT as u16),
            TcpOptionElement::WindowScale(WINDOW_SCALE),
        ];
        c.packet(
            out,
            Direction::ClientToServer,
            at,
            CLIENT_ISN,
            None,
            Flags { syn: true, ..Flags::default() },
            &wscale,
            &[],
        )?;
        let syn_ack = Flags { syn: true, ..Flags::default() };
        c.packet(
            out,
            Direction::ServerToClient,
            at,
            SERVER_ISN,
            Some(CLIENT_ISN.wrapping_add(1)),
            syn_ack,
            &wscale,
            &[],
        )?;
        c.pure_ack(out, Direction::ClientToServer, at)?;
        Ok(c)
    }

    /// Writes one link-stage piece as one segment.
    ///
    /// # Errors
    /// [`PcapError`] when the output fails.
    pub fn link_segment<W: Write>(
        &mut self,
        out: &mut TcpPcap<W>,
        dir: Direction,
        at: SystemTime,
        bytes: &[u8],
    ) -> Result<(), PcapError> {
        for seg in bytes.chunks(PCAP_MAX_SEGMENT) {
            self.data_segment(out, dir, at, seg)?;
        }
        Ok(())
    }

    /// Ends the link stage: from now on, [`Self::data`] cuts the stream at
    /// message boundaries with headers of `kind`, or per chunk when `None`
    /// (SASL, or a stream that could not be framed).
    pub fn start_messages(&mut self, kind: Option<HeaderKind>) {
        for side in &mut self.sides {
            side.framer = kind.map(Framer::new);
        }
    }

    /// Records bytes forwarded in `dir` after the link stage, read at `at`.
    /// Complete messages become segments at once; a partial one waits for
    /// its end (or for [`PCAP_MAX_SEGMENT`] bytes).
    ///
    /// # Errors
    /// [`PcapError`] when the output fails.
    pub fn data<W: Write>(
        &mut self,
        out: &mut TcpPcap<W>,
        dir: Direction,
        at: SystemTime,
        bytes: &[u8],
    ) -> Result<(), PcapError> {
        let i = dir.index();
        let Some(mut framer) = self.sides[i].framer.take() else {
            return self.link_segment(out, dir, at, bytes);
        };
        let mut ends = Vec::new();
        let framed = framer.feed(bytes, |f| {
            if let Frame::End { at } = f {
                ends.push(at)
            }
        });
        let mut cursor = 0;
        for end in ends {
            self.append(out, dir, at, &bytes[cursor..end])?;
            self.flush_pending(out, dir)?;
            cursor = end;
        }
        match framed {
            Ok(()) => {
                self.sides[i].framer = Some(framer);
                self.append(out, dir, at, &bytes[cursor..])
            }
            Err(_) => {
                // The stream can no longer be followed: keep the rest as is.
                self.append(out, dir, at, &bytes[cursor..])?;
                self.flush_pending(out, dir)
            }
        }
    }

    /// Flushes partial messages and closes the conversation: `first` sends
    /// FIN first, the other side answers with FIN, and a last ACK follows.
    ///
    /// # Errors
    /// [`PcapError`] when the output fails.
    pub fn close<W: Write>(mut self, out: &mut TcpPcap<W>, first: Direction, at: SystemTime) -> Result<(), PcapError> {
        self.flush_pending(out, Direction::ClientToServer)?;
        self.flush_pending(out, Direction::ServerToClient)?;
        let second = match first {
            Direction::ClientToServer => Direction::ServerToClient,
            Direction::ServerToClient => Direction::ClientToServer,
        };
        for dir in [first, second] {
            let seq = self.sides[dir.index()].next_seq;
            let ack = self.ack_for(dir);
            self.packet(out, dir, at, seq, Some(ack), Flags { fin: true, ..Flags::default() }, &[], &[])?;
            self.sides[dir.index()].next_seq = seq.wrapping_add(1);
            self.sides[dir.index()].closed = true;
        }
        self.pure_ack(out, first, at)
    }

    fn append<W: Write>(
        &mut self,
        out: &mut TcpPcap<W>,
        dir: Direction,
        at: SystemTime,
        mut bytes: &[u8],
    ) -> Result<(), PcapError> {
        while !bytes.is_empty() {
            let side = &mut self.sides[dir.index()];
            if side.pending.is_empty() {
                side.pending_time = at;
            }
            let room = PCAP_MAX_SEGMENT - side.pending.len();
            let take = room.min(bytes.len());
            side.pending.extend_from_slice(&bytes[..take]);
            side.pending_time = at;
            bytes = &bytes[take..];
            if side.pending.len() == PCAP_MAX_SEGMENT {
                self.flush_pending(out, dir)?;
            }
        }
        Ok(())
    }

    fn flush_pending<W: Write>(&mut self, out: &mut TcpPcap<W>, dir: Direction) -> Result<(), PcapError> {
        let side = &mut self.sides[dir.index()];
        if side.pending.is_empty() {
            return Ok(());
        }
        let payload = std::mem::take(&mut side.pending);
        let at = side.pending_time;
        let r = self.data_segment(out, dir, at, &payload);
        let side = &mut self.sides[dir.index()];
        side.pending = payload;
        side.pending.clear();
        r
    }

    fn data_segment<W: Write>(
        &mut self,
        out: &mut TcpPcap<W>,
        dir: Direction,
        at: SystemTime,
        payload: &[u8],
    ) -> Result<(), PcapError> {
        let i = dir.index();
        let seq = self.sides[i].next_seq;
        let ack = self.ack_for(dir);
        self.packet(out, dir, at, seq, Some(ack), Flags { psh: true, ..Flags::default() }, &[], payload)?;
        // Sequence numbers are modulo 2^32 by definition (RFC 9293).
        self.sides[i].next_seq = seq.wrapping_add(payload.len() as u32);
        // A receiver that never speaks still acknowledges now and then.
        let other = 1 - i;
        let unacked = self.sides[i].next_seq.wrapping_sub(self.sides[other].acked);
        if unacked > ACK_EVERY && !self.sides[other].closed {
            let peer = if other == 0 { Direction::ClientToServer } else { Direction::ServerToClient };
            self.pure_ack(out, peer, at)?;
        }
        Ok(())
    }

    fn ack_for(&self, dir: Direction) -> u32 {
        self.sides[1 - dir.index()].next_seq
    }

    fn pure_ack<W: Write>(&mut self, out: &mut TcpPcap<W>, dir: Direction, at: SystemTime) -> Result<(), PcapError> {
        let seq = self.sides[dir.index()].next_seq;
        let ack = self.ack_for(dir);
        self.packet(out, dir, at, seq, Some(ack), Flags::default(), &[], &[])
    }

    #[allow(clippy::too_many_arguments)]
    fn packet<W: Write>(
        &mut self,
        out: &mut TcpPcap<W>,
        dir: Direction,
        at: SystemTime,
        seq: u32,
        ack: Option<u32>,
        flags: Flags,
        options: &[TcpOptionElement],
        payload: &[u8],
    ) -> Result<(), PcapError> {
        let e = self.ends;
        let (src_ip, dst_ip, sport, dport) = match dir {
            Direction::ClientToServer => (e.client_ip, e.server_ip, e.client_port, e.server_port),
            Direction::ServerToClient => (e.server_ip, e.client_ip, e.server_port, e.client_port),
        };
        let mut b =
            PacketBuilder::ethernet2(mac(src_ip), mac(dst_ip)).ipv4(src_ip, dst_ip, 64).tcp(sport, dport, seq, WINDOW);
        if flags.syn {
            b = b.syn();
        }
        if flags.fin {
            b = b.fin();
        }
        if flags.psh {
            b = b.psh();
        }
        if let Some(a) = ack {
            b = b.ack(a);
            self.sides[dir.index()].acked = a;
        }
        if !options.is_empty() {
            b = b.options(options).map_err(|e| PcapError::Build(e.to_string()))?;
        }
        out.frame.clear();
        b.write(&mut out.frame, payload).map_err(|e| PcapError::Build(e.to_string()))?;
        let ts = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO);
        // Frames are at most 14 + 65535 bytes, well under u32::MAX.
        let len = out.frame.len() as u32;
        out.pcap.write_packet(&PcapPacket::new(ts, len, &out.frame))?;
        Ok(())
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Flags {
    syn: bool,
    fin: bool,
    psh: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcap::PcapReader;

    const SERVER_PORT: u16 = 5930;

    fn read_tcp(bytes: &[u8]) -> Vec<(u16, u32, Vec<u8>)> {
        let mut r = PcapReader::new(bytes).unwrap();
        assert_eq!(r.header().datalink, DataLink::ETHERNET);
        assert!(r.header().snaplen >= 262_144);
        let mut out = Vec::new();
        while let Some(p) = r.next_packet() {
            let p = p.unwrap();
            let s = etherparse::SlicedPacket::from_ethernet(&p.data).unwrap();
            let Some(etherparse::TransportSlice::Tcp(t)) = s.transport else { panic!("not tcp") };
            out.push((t.source_port(), t.sequence_number(), t.payload().to_vec()));
        }
        out
    }

    #[test]
    fn one_segment_per_message_and_long_messages_are_split() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut out = TcpPcap::new(Vec::new()).unwrap();
        let mut c = TcpConversation::open(&mut out, Endpoints::new(49152, SERVER_PORT), t0).unwrap();
        c.link_segment(&mut out, Direction::ClientToServer, t0, b"REDQlink").unwrap();
        c.link_segment(&mut out, Direction::ServerToClient, t0, b"REDQreply").unwrap();
        c.start_messages(Some(HeaderKind::Mini));
        // two messages in one chunk, then one of 70000 bytes cut in three chunks
        let mut stream = Vec::new();
        for (ty, len) in [(102u16, 0u32), (304, 10), (304, 70_000)] {
            stream.extend_from_slice(&ty.to_le_bytes());
            stream.extend_from_slice(&len.to_le_bytes());
            stream.extend(std::iter::repeat_n(7u8, len as usize));
        }
        c.data(&mut out, Direction::ServerToClient, t0, &stream[..30]).unwrap();
        c.data(&mut out, Direction::ServerToClient, t0, &stream[30..40_000]).unwrap();
        c.data(&mut out, Direction::ServerToClient, t0, &stream[40_000..]).unwrap();
        c.close(&mut out, Direction::ClientToServer, t0).unwrap();
        let pkts = read_tcp(&out.into_writer());
        let payloads: Vec<usize> = pkts.iter().map(|p| p.2.len()).filter(|&l| l > 0).collect();
        assert_eq!(payloads, [8, 9, 6, 16, PCAP_MAX_SEGMENT, 70_006 - PCAP_MAX_SEGMENT]);
        // continuous sequence numbers on the server side
        let server: Vec<_> = pkts.iter().filter(|p| p.0 == SERVER_PORT).collect();
        let mut expect = server[0].1.wrapping_add(1);
        for p in &server[1..] {
            assert_eq!(p.1, expect);
            expect = expect.wrapping_add(p.2.len() as u32);
        }
        let all: Vec<u8> = server.iter().flat_map(|p| p.2.clone()).collect();
        assert_eq!(&all[9..], &stream[..]);
    }

    #[test]
    fn raw_mode_writes_chunks_as_they_come() {
        let t0 = SystemTime::UNIX_EPOCH;
        let mut out = TcpPcap::new(Vec::new()).unwrap();
        let mut c = TcpConversation::open(&mut out, Endpoints::new(49153, SERVER_PORT), t0).unwrap();
        c.start_messages(None);
        c.data(&mut out, Direction::ClientToServer, t0, &[1, 2, 3]).unwrap();
        c.data(&mut out, Direction::ClientToServer, t0, &[4]).unwrap();
        c.close(&mut out, Direction::ServerToClient, t0).unwrap();
        let pkts = read_tcp(&out.into_writer());
        let payloads: Vec<_> = pkts.iter().map(|p| p.2.clone()).filter(|p| !p.is_empty()).collect();
        assert_eq!(payloads, [vec![1, 2, 3], vec![4]]);
    }
}

//! One channel connection as a synthetic TCP conversation in a pcap file.
//!
//! The proxy sees a SPICE channel as two byte streams, not as packets. To
//! let Wireshark's SPICE dissector (`epan/dissectors/packet-spice.c`) read a
//! recording, each channel is written as its own TCP conversation:
//!
//! ```text
//! 10.0.0.1:<49152+n>  ->  10.0.0.2:SERVER_PORT   SYN (window scale 14)
//! 10.0.0.2            ->  10.0.0.1               SYN, ACK
//! 10.0.0.1            ->  10.0.0.2               ACK
//!   link stage, one segment per piece: SpiceLinkHeader+SpiceLinkMess,
//!   SpiceLinkHeader+SpiceLinkReply, auth mechanism, ticket, link result
//!   then one segment per SPICE message per direction (a message longer
//!   than 65495 bytes continues in further segments, sequence numbers
//!   continuous), each acknowledging all the peer has sent so far
//! FIN, ACK from the side that closed first; FIN, ACK back; last ACK
//! ```
//!
//! Ethernet link type, microsecond wall-clock timestamps, snaplen 262144.
//! The server port is outside every port Wireshark assigns to a dissector
//! (5900-5901 belong to VNC), so its SPICE heuristic claims the stream on
//! the `REDQ` of the link message. Payload bytes are exactly the bytes the
//! proxy forwarded, in order.

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
/// Synthetic server port: no Wireshark dissector registers it, so the SPICE
/// heuristic decides.
pub const SERVER_PORT: u16 = 5930;
/// First synthetic client port; the n-th channel of a session uses `+ n`.
pub const CLIENT_PORT_BASE: u16 = 49152;

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
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

/// Writes one channel connection as a TCP conversation.
pub struct TcpConversation<W: Write> {
    pcap: PcapWriter<W>,
    client_port: u16,
    /// Index 0 = client side, 1 = server side (see [`Direction::index`]).
    sides: [Side; 2],
    frame: Vec<u8>,
}

impl<W: Write> TcpConversation<W> {
    /// Writes the pcap header and the three-way handshake at `at`.
    ///
    /// # Errors
    /// [`PcapError`] when `out` fails.
    pub fn open(out: W, client_port: u16, at: SystemTime) -> Result<Self, PcapError> {
        let header = PcapHeader { snaplen: PCAP_SNAPLEN, datalink: DataLink::ETHERNET, ..PcapHeader::default() };
        let pcap = PcapWriter::with_header(out, header)?;
        let mut c =
            Self { pcap, client_port, sides: [Side::new(CLIENT_ISN), Side::new(SERVER_ISN)], frame: Vec::new() };
        let wscale = [
            TcpOptionElement::MaximumSegmentSize(PCAP_MAX_SEGMENT as u16),
            TcpOptionElement::WindowScale(WINDOW_SCALE),
        ];
        c.packet(
            Direction::ClientToServer,
            at,
            CLIENT_ISN,
            None,
            Flags { syn: true, ..Flags::default() },
            &wscale,
            &[],
        )?;
        let syn_ack = Flags { syn: true, ..Flags::default() };
        c.packet(Direction::ServerToClient, at, SERVER_ISN, Some(CLIENT_ISN.wrapping_add(1)), syn_ack, &wscale, &[])?;
        c.pure_ack(Direction::ClientToServer, at)?;
        Ok(c)
    }

    /// Writes one link-stage piece as one segment.
    ///
    /// # Errors
    /// [`PcapError`] when the output fails.
    pub fn link_segment(&mut self, dir: Direction, at: SystemTime, bytes: &[u8]) -> Result<(), PcapError> {
        for seg in bytes.chunks(PCAP_MAX_SEGMENT) {
            self.data_segment(dir, at, seg)?;
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
    pub fn data(&mut self, dir: Direction, at: SystemTime, bytes: &[u8]) -> Result<(), PcapError> {
        let i = dir.index();
        let Some(mut framer) = self.sides[i].framer.take() else {
            return self.link_segment(dir, at, bytes);
        };
        let mut ends = Vec::new();
        let framed = framer.feed(bytes, |f| {
            if let Frame::End { at } = f {
                ends.push(at)
            }
        });
        let mut cursor = 0;
        for end in ends {
            self.append(dir, at, &bytes[cursor..end])?;
            self.flush_pending(dir)?;
            cursor = end;
        }
        match framed {
            Ok(()) => {
                self.sides[i].framer = Some(framer);
                self.append(dir, at, &bytes[cursor..])
            }
            Err(_) => {
                // The stream can no longer be followed: keep the rest as is.
                self.append(dir, at, &bytes[cursor..])?;
                self.flush_pending(dir)
            }
        }
    }

    /// Flushes partial messages and closes the conversation: `first` sends
    /// FIN first, the other side answers with FIN, and a last ACK follows.
    ///
    /// # Errors
    /// [`PcapError`] when the output fails.
    pub fn close(mut self, first: Direction, at: SystemTime) -> Result<W, PcapError> {
        self.flush_pending(Direction::ClientToServer)?;
        self.flush_pending(Direction::ServerToClient)?;
        let second = match first {
            Direction::ClientToServer => Direction::ServerToClient,
            Direction::ServerToClient => Direction::ClientToServer,
        };
        for dir in [first, second] {
            let seq = self.sides[dir.index()].next_seq;
            let ack = self.ack_for(dir);
            self.packet(dir, at, seq, Some(ack), Flags { fin: true, ..Flags::default() }, &[], &[])?;
            self.sides[dir.index()].next_seq = seq.wrapping_add(1);
            self.sides[dir.index()].closed = true;
        }
        self.pure_ack(first, at)?;
        Ok(self.pcap.into_writer())
    }

    fn append(&mut self, dir: Direction, at: SystemTime, mut bytes: &[u8]) -> Result<(), PcapError> {
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
                self.flush_pending(dir)?;
            }
        }
        Ok(())
    }

    fn flush_pending(&mut self, dir: Direction) -> Result<(), PcapError> {
        let side = &mut self.sides[dir.index()];
        if side.pending.is_empty() {
            return Ok(());
        }
        let payload = std::mem::take(&mut side.pending);
        let at = side.pending_time;
        let r = self.data_segment(dir, at, &payload);
        let side = &mut self.sides[dir.index()];
        side.pending = payload;
        side.pending.clear();
        r
    }

    fn data_segment(&mut self, dir: Direction, at: SystemTime, payload: &[u8]) -> Result<(), PcapError> {
        let i = dir.index();
        let seq = self.sides[i].next_seq;
        let ack = self.ack_for(dir);
        self.packet(dir, at, seq, Some(ack), Flags { psh: true, ..Flags::default() }, &[], payload)?;
        // Sequence numbers are modulo 2^32 by definition (RFC 9293).
        self.sides[i].next_seq = seq.wrapping_add(payload.len() as u32);
        // A receiver that never speaks still acknowledges now and then.
        let other = 1 - i;
        let unacked = self.sides[i].next_seq.wrapping_sub(self.sides[other].acked);
        if unacked > ACK_EVERY && !self.sides[other].closed {
            let peer = if other == 0 { Direction::ClientToServer } else { Direction::ServerToClient };
            self.pure_ack(peer, at)?;
        }
        Ok(())
    }

    fn ack_for(&self, dir: Direction) -> u32 {
        self.sides[1 - dir.index()].next_seq
    }

    fn pure_ack(&mut self, dir: Direction, at: SystemTime) -> Result<(), PcapError> {
        let seq = self.sides[dir.index()].next_seq;
        let ack = self.ack_for(dir);
        self.packet(dir, at, seq, Some(ack), Flags::default(), &[], &[])
    }

    #[allow(clippy::too_many_arguments)]
    fn packet(
        &mut self,
        dir: Direction,
        at: SystemTime,
        seq: u32,
        ack: Option<u32>,
        flags: Flags,
        options: &[TcpOptionElement],
        payload: &[u8],
    ) -> Result<(), PcapError> {
        let (src_mac, dst_mac, src_ip, dst_ip, sport, dport) = match dir {
            Direction::ClientToServer => (CLIENT_MAC, SERVER_MAC, CLIENT_IP, SERVER_IP, self.client_port, SERVER_PORT),
            Direction::ServerToClient => (SERVER_MAC, CLIENT_MAC, SERVER_IP, CLIENT_IP, SERVER_PORT, self.client_port),
        };
        let mut b = PacketBuilder::ethernet2(src_mac, dst_mac).ipv4(src_ip, dst_ip, 64).tcp(sport, dport, seq, WINDOW);
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
        self.frame.clear();
        b.write(&mut self.frame, payload).map_err(|e| PcapError::Build(e.to_string()))?;
        let ts = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO);
        // Frames are at most 14 + 65535 bytes, well under u32::MAX.
        let len = self.frame.len() as u32;
        self.pcap.write_packet(&PcapPacket::new(ts, len, &self.frame))?;
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
        let mut c = TcpConversation::open(Vec::new(), 49152, t0).unwrap();
        c.link_segment(Direction::ClientToServer, t0, b"REDQlink").unwrap();
        c.link_segment(Direction::ServerToClient, t0, b"REDQreply").unwrap();
        c.start_messages(Some(HeaderKind::Mini));
        // two messages in one chunk, then one of 70000 bytes cut in three chunks
        let mut stream = Vec::new();
        for (ty, len) in [(102u16, 0u32), (304, 10), (304, 70_000)] {
            stream.extend_from_slice(&ty.to_le_bytes());
            stream.extend_from_slice(&len.to_le_bytes());
            stream.extend(std::iter::repeat_n(7u8, len as usize));
        }
        c.data(Direction::ServerToClient, t0, &stream[..30]).unwrap();
        c.data(Direction::ServerToClient, t0, &stream[30..40_000]).unwrap();
        c.data(Direction::ServerToClient, t0, &stream[40_000..]).unwrap();
        let out = c.close(Direction::ClientToServer, t0).unwrap();
        let pkts = read_tcp(&out);
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
        let mut c = TcpConversation::open(Vec::new(), 49153, t0).unwrap();
        c.start_messages(None);
        c.data(Direction::ClientToServer, t0, &[1, 2, 3]).unwrap();
        c.data(Direction::ClientToServer, t0, &[4]).unwrap();
        let pkts = read_tcp(&c.close(Direction::ServerToClient, t0).unwrap());
        let payloads: Vec<_> = pkts.iter().map(|p| p.2.clone()).filter(|p| !p.is_empty()).collect();
        assert_eq!(payloads, [vec![1, 2, 3], vec![4]]);
    }
}

//! The usbredir protocol carried by SPICE usbredir channels, parsed from
//! the byte stream of each direction, sans-IO.
//!
//! A usbredir channel (SPICE channel type 9) carries usbredir packets in
//! `SPICE_MSG(C)_SPICEVMC_DATA` messages; a packet may span several SPICE
//! messages and one message may hold several packets, so each direction is
//! parsed as a stream. The SPICE server (QEMU's `usb-redir` device) is the
//! *usb-guest*; the SPICE client (spice-gtk's usbredirhost), or spicetap
//! itself when it injects a device, is the *usb-host*: the side that owns
//! the device.
//!
//! ```text
//! usb_redir_header   type u32, length u32 (type header + data), id u32
//!                    (u64 once both hellos carry usb_redir_cap_64bits_ids;
//!                    the hellos themselves always use 32-bit ids)
//! type header        fixed per type; some sizes depend on the caps both
//!                    hellos carry (device_connect, ep_info, bulk_packet)
//! data               length - type header size bytes
//! ```
//! All integers little-endian (usbredir `usbredirparser/usbredirproto.h`,
//! `docs/usb-redirection-protocol.md`; the checks follow
//! `usbredirparser.c` `usbredirparser_verify_type_header`).
//!
//! Data is kept up to a caller-given bound per packet and counted beyond
//! it, so a packet's size never decides an allocation.

use std::fmt;

use thiserror::Error;

use crate::limits::{USBREDIR_MAX_CONTROL_DATA, USBREDIR_MAX_DATA};

/// usbredir packet types (`usbredirproto.h`).
#[allow(missing_docs)]
pub mod packet_type {
    pub const HELLO: u32 = 0;
    pub const DEVICE_CONNECT: u32 = 1;
    pub const DEVICE_DISCONNECT: u32 = 2;
    pub const RESET: u32 = 3;
    pub const INTERFACE_INFO: u32 = 4;
    pub const EP_INFO: u32 = 5;
    pub const SET_CONFIGURATION: u32 = 6;
    pub const GET_CONFIGURATION: u32 = 7;
    pub const CONFIGURATION_STATUS: u32 = 8;
    pub const SET_ALT_SETTING: u32 = 9;
    pub const GET_ALT_SETTING: u32 = 10;
    pub const ALT_SETTING_STATUS: u32 = 11;
    pub const START_ISO_STREAM: u32 = 12;
    pub const STOP_ISO_STREAM: u32 = 13;
    pub const ISO_STREAM_STATUS: u32 = 14;
    pub const START_INTERRUPT_RECEIVING: u32 = 15;
    pub const STOP_INTERRUPT_RECEIVING: u32 = 16;
    pub const INTERRUPT_RECEIVING_STATUS: u32 = 17;
    pub const ALLOC_BULK_STREAMS: u32 = 18;
    pub const FREE_BULK_STREAMS: u32 = 19;
    pub const BULK_STREAMS_STATUS: u32 = 20;
    pub const CANCEL_DATA_PACKET: u32 = 21;
    pub const FILTER_REJECT: u32 = 22;
    pub const FILTER_FILTER: u32 = 23;
    pub const DEVICE_DISCONNECT_ACK: u32 = 24;
    pub const START_BULK_RECEIVING: u32 = 25;
    pub const STOP_BULK_RECEIVING: u32 = 26;
    pub const BULK_RECEIVING_STATUS: u32 = 27;
    pub const CONTROL_PACKET: u32 = 100;
    pub const BULK_PACKET: u32 = 101;
    pub const ISO_PACKET: u32 = 102;
    pub const INTERRUPT_PACKET: u32 = 103;
    pub const BUFFERED_BULK_PACKET: u32 = 104;
}

/// usbredir capability bits of the hello (`usbredirproto.h`).
#[allow(missing_docs)]
pub mod cap {
    pub const BULK_STREAMS: u32 = 0;
    pub const CONNECT_DEVICE_VERSION: u32 = 1;
    pub const FILTER: u32 = 2;
    pub const DEVICE_DISCONNECT_ACK: u32 = 3;
    pub const EP_INFO_MAX_PACKET_SIZE: u32 = 4;
    pub const BITS64_IDS: u32 = 5;
    pub const BITS32_BULK_LENGTH: u32 = 6;
    pub const BULK_RECEIVING: u32 = 7;
}

/// usbredir transfer status codes (`usbredirproto.h`).
#[allow(missing_docs)]
pub mod status {
    pub const SUCCESS: u8 = 0;
    pub const CANCELLED: u8 = 1;
    pub const INVAL: u8 = 2;
    pub const IOERROR: u8 = 3;
    pub const STALL: u8 = 4;
    pub const TIMEOUT: u8 = 5;
    pub const BABBLE: u8 = 6;
}

const TYPE_NAMES: [&str; 28] = [
    "usb_redir_hello",
    "usb_redir_device_connect",
    "usb_redir_device_disconnect",
    "usb_redir_reset",
    "usb_redir_interface_info",
    "usb_redir_ep_info",
    "usb_redir_set_configuration",
    "usb_redir_get_configuration",
    "usb_redir_configuration_status",
    "usb_redir_set_alt_setting",
    "usb_redir_get_alt_setting",
    "usb_redir_alt_setting_status",
    "usb_redir_start_iso_stream",
    "usb_redir_stop_iso_stream",
    "usb_redir_iso_stream_status",
    "usb_redir_start_interrupt_receiving",
    "usb_redir_stop_interrupt_receiving",
    "usb_redir_interrupt_receiving_status",
    "usb_redir_alloc_bulk_streams",
    "usb_redir_free_bulk_streams",
    "usb_redir_bulk_streams_status",
    "usb_redir_cancel_data_packet",
    "usb_redir_filter_reject",
    "usb_redir_filter_filter",
    "usb_redir_device_disconnect_ack",
    "usb_redir_start_bulk_receiving",
    "usb_redir_stop_bulk_receiving",
    "usb_redir_bulk_receiving_status",
];
const DATA_TYPE_NAMES: [&str; 5] = [
    "usb_redir_control_packet",
    "usb_redir_bulk_packet",
    "usb_redir_iso_packet",
    "usb_redir_interrupt_packet",
    "usb_redir_buffered_bulk_packet",
];
const CAP_NAMES: [&str; 8] = [
    "bulk_streams",
    "connect_device_version",
    "filter",
    "device_disconnect_ack",
    "ep_info_max_packet_size",
    "64bits_ids",
    "32bits_bulk_length",
    "bulk_receiving",
];

/// usbredirproto.h's name of a packet type, `None` for an unknown type.
pub fn type_name(packet_type: u32) -> Option<&'static str> {
    match packet_type {
        0..=27 => TYPE_NAMES.get(packet_type as usize).copied(),
        100..=104 => DATA_TYPE_NAMES.get((packet_type - 100) as usize).copied(),
        _ => None,
    }
}

/// The names of the capability bits set in a hello's caps words (unknown
/// bits as `cap_N`).
pub fn cap_names(caps: &[u32]) -> Vec<String> {
    let mut out = Vec::new();
    for (w, word) in caps.iter().enumerate() {
        for bit in 0..32 {
            if word & (1 << bit) != 0 {
                let n = w * 32 + bit;
                out.push(CAP_NAMES.get(n).map_or_else(|| format!("cap_{n}"), |s| (*s).to_string()));
            }
        }
    }
    out
}

/// The side of a usbredir connection that sent a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The usb-guest: the VM's side (QEMU's `usb-redir`), the SPICE server.
    Guest,
    /// The usb-host: the side owning the device (the SPICE client, or
    /// spicetap injecting one).
    Host,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Guest => "usb-guest",
            Self::Host => "usb-host",
        })
    }
}

/// One interface of `usb_redir_interface_info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceInfo {
    /// bInterfaceNumber.
    pub interface: u8,
    /// bInterfaceClass.
    pub class: u8,
    /// bInterfaceSubClass.
    pub subclass: u8,
    /// bInterfaceProtocol.
    pub protocol: u8,
}

/// One endpoint of `usb_redir_ep_info` (entries of type invalid, 255, are
/// left out). Index i of the packet's arrays is endpoint address
/// `((i & 0x10) << 3) | (i & 0x0f)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpInfo {
    /// Endpoint address (bit 7: IN).
    pub address: u8,
    /// Transfer type: control 0, iso 1, bulk 2, interrupt 3.
    pub transfer_type: u8,
    /// bInterval.
    pub interval: u8,
    /// The interface it belongs to.
    pub interface: u8,
    /// wMaxPacketSize, when both sides have `ep_info_max_packet_size`.
    pub max_packet_size: Option<u16>,
}

/// A packet's type-specific header, parsed (`usbredirproto.h` structs).
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TypeHeader {
    /// `version` is the NUL-terminated string of the 64-byte field; the
    /// caps words are the packet's data.
    Hello {
        version: String,
        caps: Vec<u32>,
    },
    /// `device_version_bcd` only with `connect_device_version`.
    DeviceConnect {
        speed: u8,
        class: u8,
        subclass: u8,
        protocol: u8,
        vendor_id: u16,
        product_id: u16,
        device_version_bcd: Option<u16>,
    },
    DeviceDisconnect,
    Reset,
    InterfaceInfo {
        interfaces: Vec<InterfaceInfo>,
    },
    EpInfo {
        endpoints: Vec<EpInfo>,
    },
    SetConfiguration {
        configuration: u8,
    },
    GetConfiguration,
    ConfigurationStatus {
        status: u8,
        configuration: u8,
    },
    SetAltSetting {
        interface: u8,
        alt: u8,
    },
    GetAltSetting {
        interface: u8,
    },
    AltSettingStatus {
        status: u8,
        interface: u8,
        alt: u8,
    },
    StartIsoStream {
        endpoint: u8,
        pkts_per_urb: u8,
        no_urbs: u8,
    },
    StopIsoStream {
        endpoint: u8,
    },
    IsoStreamStatus {
        status: u8,
        endpoint: u8,
    },
    StartInterruptReceiving {
        endpoint: u8,
    },
    StopInterruptReceiving {
        endpoint: u8,
    },
    InterruptReceivingStatus {
        status: u8,
        endpoint: u8,
    },
    AllocBulkStreams {
        endpoints: u32,
        no_streams: u32,
    },
    FreeBulkStreams {
        endpoints: u32,
    },
    BulkStreamsStatus {
        endpoints: u32,
        no_streams: u32,
        status: u8,
    },
    CancelDataPacket,
    /// The rules travel as the data (a string).
    FilterReject,
    FilterFilter,
    DeviceDisconnectAck,
    StartBulkReceiving {
        stream_id: u32,
        bytes_per_transfer: u32,
        endpoint: u8,
        no_transfers: u8,
    },
    StopBulkReceiving {
        stream_id: u32,
        endpoint: u8,
    },
    BulkReceivingStatus {
        stream_id: u32,
        endpoint: u8,
        status: u8,
    },
    /// `usb_redir_control_packet_header`: the setup packet's fields
    /// (`requesttype` is bmRequestType) and the transfer's status.
    ControlPacket {
        endpoint: u8,
        request: u8,
        requesttype: u8,
        status: u8,
        value: u16,
        index: u16,
        length: u16,
    },
    /// `length` includes `length_high` when both sides have
    /// `32bits_bulk_length`.
    BulkPacket {
        endpoint: u8,
        status: u8,
        length: u32,
        stream_id: u32,
    },
    IsoPacket {
        endpoint: u8,
        status: u8,
        length: u16,
    },
    InterruptPacket {
        endpoint: u8,
        status: u8,
        length: u16,
    },
    BufferedBulkPacket {
        stream_id: u32,
        length: u32,
        endpoint: u8,
        status: u8,
    },
}

/// One usbredir packet as it crossed the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Who sent it.
    pub side: Side,
    /// `usb_redir_*` type number.
    pub packet_type: u32,
    /// The packet id (echoed by the answer to a request).
    pub id: u64,
    /// The type header.
    pub header: TypeHeader,
    /// The data, up to the decoder's keep bound.
    pub data: Vec<u8>,
    /// The data's full length in bytes (`data.len()` or more).
    pub data_len: u32,
}

/// Why a usbredir stream cannot be followed any further.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum UsbredirError {
    /// A type usbredirproto.h does not define.
    #[error("unknown usbredir packet type {0}")]
    UnknownType(u32),
    /// The first packet of a side was not its hello.
    #[error("{side} sent {packet_type} before its hello")]
    BeforeHello {
        /// Sender.
        side: Side,
        /// The packet's type.
        packet_type: u32,
    },
    /// A packet only the other side may send.
    #[error("{} from the {side}", type_name(*packet_type).unwrap_or("?"))]
    WrongSender {
        /// Sender.
        side: Side,
        /// The packet's type.
        packet_type: u32,
    },
    /// `length` smaller than the type header.
    #[error("{} of {length} bytes, type header needs {need}", type_name(*packet_type).unwrap_or("?"))]
    ShortPacket {
        /// The packet's type.
        packet_type: u32,
        /// Its length field.
        length: u32,
        /// The type header's size.
        need: u32,
    },
    /// More data than the protocol allows for the type.
    #[error("{} with {data_len} bytes of data (at most {max})", type_name(*packet_type).unwrap_or("?"))]
    TooLarge {
        /// The packet's type.
        packet_type: u32,
        /// Its data length.
        data_len: u32,
        /// The bound.
        max: u32,
    },
    /// A data packet whose data disagrees with its header: data in the
    /// direction that carries none, or a length that differs from the
    /// header's.
    #[error("{} on endpoint {endpoint:#04x} from the {side}: {data_len} bytes of data, {expected} expected", type_name(*packet_type).unwrap_or("?"))]
    DataMismatch {
        /// Sender.
        side: Side,
        /// The packet's type.
        packet_type: u32,
        /// Its endpoint.
        endpoint: u8,
        /// Data bytes it carries.
        data_len: u32,
        /// What its header says it should carry.
        expected: u32,
    },
}

/// Both directions of one usbredir channel: feed each direction's bytes in
/// order, get whole packets back.
#[derive(Debug)]
pub struct UsbredirDecoder {
    keep: usize,
    guest: StreamState,
    host: StreamState,
    guest_caps: Option<Vec<u32>>,
    host_caps: Option<Vec<u32>>,
    failed: Option<UsbredirError>,
}

/// Where one direction's parser is.
#[derive(Debug, Default)]
struct StreamState {
    /// Header and type header bytes gathered so far.
    head: Vec<u8>,
    /// The packet whose data is being read, and the data bytes still due.
    body: Option<(Packet, u32)>,
    /// Bytes of the current header (12 or 16) once its size is decided.
    header_len: Option<usize>,
}

impl UsbredirDecoder {
    /// A decoder that keeps at most `keep` data bytes of each packet.
    pub fn new(keep: usize) -> Self {
        Self {
            keep,
            guest: StreamState::default(),
            host: StreamState::default(),
            guest_caps: None,
            host_caps: None,
            failed: None,
        }
    }

    /// The hello caps of a side, once seen.
    pub fn caps(&self, side: Side) -> Option<&[u32]> {
        match side {
            Side::Guest => self.guest_caps.as_deref(),
            Side::Host => self.host_caps.as_deref(),
        }
    }

    /// Whether both hellos carry capability `bit`.
    pub fn both_have(&self, bit: u32) -> bool {
        let has = |c: &Option<Vec<u32>>| {
            c.as_ref().and_then(|w| w.get((bit / 32) as usize)).is_some_and(|w| w & (1 << (bit % 32)) != 0)
        };
        has(&self.guest_caps) && has(&self.host_caps)
    }

    /// Parses `bytes` sent by `side`, appending each packet completed to
    /// `out`.
    ///
    /// # Errors
    /// The first [`UsbredirError`]; the stream (both directions) cannot be
    /// followed after it, and later calls return it again.
    pub fn feed(&mut self, side: Side, mut bytes: &[u8], out: &mut Vec<Packet>) -> Result<(), UsbredirError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        while !bytes.is_empty() {
            match self.step(side, &mut bytes) {
                Ok(Some(p)) => {
                    if let TypeHeader::Hello { caps, .. } = &p.header {
                        match side {
                            Side::Guest => self.guest_caps = Some(caps.clone()),
                            Side::Host => self.host_caps = Some(caps.clone()),
                        }
                    }
                    out.push(p);
                }
                Ok(None) => {}
                Err(e) => {
                    self.failed = Some(e.clone());
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Consumes what it can of `bytes` toward the next packet.
    fn step(&mut self, side: Side, bytes: &mut &[u8]) -> Result<Option<Packet>, UsbredirError> {
        let hello_seen = self.caps(side).is_some();
        let ids64 = self.both_have(cap::BITS64_IDS);
        let keep = self.keep;
        let st = match side {
            Side::Guest => &mut self.guest,
            Side::Host => &mut self.host,
        };
        if let Some((packet, due)) = &mut st.body {
            // Data packets are kept up to `keep`; the few bytes of control
            // types (hello caps, filter rules: bounded when the header was
            // read) are kept whole.
            let keep = if packet.packet_type >= packet_type::CONTROL_PACKET { keep } else { usize::MAX };
            let n = (*due as usize).min(bytes.len());
            let room = keep.saturating_sub(packet.data.len()).min(n);
            packet.data.extend_from_slice(&bytes[..room]);
            *bytes = &bytes[n..];
            *due -= n as u32;
            if *due == 0 {
                return Ok(st.body.take().map(|(p, _)| finish(p)));
            }
            return Ok(None);
        }
        // The header: 12 bytes with 32-bit ids, 16 with 64-bit ones; the
        // size is fixed when the packet starts.
        let header_len = *st.header_len.get_or_insert(if hello_seen && ids64 { 16 } else { 12 });
        if st.head.len() < header_len {
            let n = (header_len - st.head.len()).min(bytes.len());
            st.head.extend_from_slice(&bytes[..n]);
            *bytes = &bytes[n..];
            if st.head.len() < header_len {
                return Ok(None);
            }
        }
        let packet_type = le32(&st.head[0..4]);
        let length = le32(&st.head[4..8]);
        let id = if header_len == 16 { le64(&st.head[8..16]) } else { u64::from(le32(&st.head[8..12])) };
        if !hello_seen && packet_type != packet_type::HELLO {
            return Err(UsbredirError::BeforeHello { side, packet_type });
        }
        let type_len = self.type_header_len(packet_type)?;
        check_sender(side, packet_type)?;
        if length < type_len {
            return Err(UsbredirError::ShortPacket { packet_type, length, need: type_len });
        }
        let st = match side {
            Side::Guest => &mut self.guest,
            Side::Host => &mut self.host,
        };
        let want = header_len + type_len as usize;
        if st.head.len() < want {
            let n = (want - st.head.len()).min(bytes.len());
            st.head.extend_from_slice(&bytes[..n]);
            *bytes = &bytes[n..];
            if st.head.len() < want {
                return Ok(None);
            }
        }
        let data_len = length - type_len;
        let th = st.head[header_len..want].to_vec();
        st.head.clear();
        st.header_len = None;
        let header = self.parse_type_header(side, packet_type, &th, data_len)?;
        let mut packet = Packet { side, packet_type, id, header, data: Vec::new(), data_len };
        if data_len == 0 {
            return Ok(Some(finish(packet)));
        }
        // Keep-bound the buffer, never the length.
        packet.data.reserve(self.keep.min(data_len as usize).min(64 * 1024));
        let st = match side {
            Side::Guest => &mut self.guest,
            Side::Host => &mut self.host,
        };
        st.body = Some((packet, data_len));
        Ok(None)
    }

    /// The size of a type header under the caps both hellos carry
    /// (`usbredirparser.c` `usbredirparser_get_type_header_len`).
    fn type_header_len(&self, packet_type: u32) -> Result<u32, UsbredirError> {
        use packet_type::*;
        Ok(match packet_type {
            HELLO => 64,
            DEVICE_CONNECT => {
                if self.both_have(cap::CONNECT_DEVICE_VERSION) {
                    10
                } else {
                    8
                }
            }
            DEVICE_DISCONNECT
            | RESET
            | GET_CONFIGURATION
            | CANCEL_DATA_PACKET
            | FILTER_REJECT
            | FILTER_FILTER
            | DEVICE_DISCONNECT_ACK => 0,
            INTERFACE_INFO => 132,
            EP_INFO => {
                let mut n = 96;
                if self.both_have(cap::EP_INFO_MAX_PACKET_SIZE) {
                    n += 64;
                }
                if self.both_have(cap::BULK_STREAMS) {
                    n += 128;
                }
                n
            }
            SET_CONFIGURATION
            | GET_ALT_SETTING
            | STOP_ISO_STREAM
            | START_INTERRUPT_RECEIVING
            | STOP_INTERRUPT_RECEIVING => 1,
            CONFIGURATION_STATUS | SET_ALT_SETTING | ISO_STREAM_STATUS | INTERRUPT_RECEIVING_STATUS => 2,
            ALT_SETTING_STATUS | START_ISO_STREAM => 3,
            ALLOC_BULK_STREAMS => 8,
            FREE_BULK_STREAMS => 4,
            BULK_STREAMS_STATUS => 9,
            START_BULK_RECEIVING => 10,
            STOP_BULK_RECEIVING => 5,
            BULK_RECEIVING_STATUS => 6,
            CONTROL_PACKET => 10,
            BULK_PACKET => {
                if self.both_have(cap::BITS32_BULK_LENGTH) {
                    10
                } else {
                    8
                }
            }
            ISO_PACKET | INTERRUPT_PACKET => 4,
            BUFFERED_BULK_PACKET => 10,
            other => return Err(UsbredirError::UnknownType(other)),
        })
    }

    fn parse_type_header(
        &self,
        side: Side,
        packet_type: u32,
        h: &[u8],
        data_len: u32,
    ) -> Result<TypeHeader, UsbredirError> {
        use packet_type::*;
        let b = |i: usize| h.get(i).copied().unwrap_or(0);
        let w = |i: usize| u16::from_le_bytes([b(i), b(i + 1)]);
        let d = |i: usize| u32::from_le_bytes([b(i), b(i + 1), b(i + 2), b(i + 3)]);
        let control_data = |max: u32| {
            if data_len > max { Err(UsbredirError::TooLarge { packet_type, data_len, max }) } else { Ok(()) }
        };
        // Data packets: data only where it flows (OUT from the guest, IN
        // from the host), and then exactly the header's length.
        let data_rule = |endpoint: u8, length: u32| {
            let expect = (endpoint & 0x80 != 0) == (side == Side::Host);
            let expected = if expect { length } else { 0 };
            if data_len > USBREDIR_MAX_DATA {
                return Err(UsbredirError::TooLarge { packet_type, data_len, max: USBREDIR_MAX_DATA });
            }
            if data_len != expected {
                return Err(UsbredirError::DataMismatch { side, packet_type, endpoint, data_len, expected });
            }
            Ok(())
        };
        let header = match packet_type {
            HELLO => {
                control_data(USBREDIR_MAX_CONTROL_DATA)?;
                let end = h.iter().position(|&c| c == 0).unwrap_or(h.len());
                // The caps words arrive as data; filled in by `finish`.
                TypeHeader::Hello { version: String::from_utf8_lossy(&h[..end]).into_owned(), caps: Vec::new() }
            }
            DEVICE_CONNECT => TypeHeader::DeviceConnect {
                speed: b(0),
                class: b(1),
                subclass: b(2),
                protocol: b(3),
                vendor_id: w(4),
                product_id: w(6),
                device_version_bcd: (h.len() >= 10).then(|| w(8)),
            },
            DEVICE_DISCONNECT => TypeHeader::DeviceDisconnect,
            RESET => TypeHeader::Reset,
            INTERFACE_INFO => {
                let count = d(0).min(32) as usize;
                let interfaces = (0..count)
                    .map(|i| InterfaceInfo {
                        interface: b(4 + i),
                        class: b(36 + i),
                        subclass: b(68 + i),
                        protocol: b(100 + i),
                    })
                    .collect();
                TypeHeader::InterfaceInfo { interfaces }
            }
            EP_INFO => {
                let with_size = h.len() >= 160;
                let endpoints = (0..32)
                    .filter(|&i| b(i) != 255)
                    .map(|i| EpInfo {
                        address: (((i & 0x10) << 3) | (i & 0x0f)) as u8,
                        transfer_type: b(i),
                        interval: b(32 + i),
                        interface: b(64 + i),
                        max_packet_size: with_size.then(|| w(96 + 2 * i)),
                    })
                    .collect();
                TypeHeader::EpInfo { endpoints }
            }
            SET_CONFIGURATION => TypeHeader::SetConfiguration { configuration: b(0) },
            GET_CONFIGURATION => TypeHeader::GetConfiguration,
            CONFIGURATION_STATUS => TypeHeader::ConfigurationStatus { status: b(0), configuration: b(1) },
            SET_ALT_SETTING => TypeHeader::SetAltSetting { interface: b(0), alt: b(1) },
            GET_ALT_SETTING => TypeHeader::GetAltSetting { interface: b(0) },
            ALT_SETTING_STATUS => TypeHeader::AltSettingStatus { status: b(0), interface: b(1), alt: b(2) },
            START_ISO_STREAM => TypeHeader::StartIsoStream { endpoint: b(0), pkts_per_urb: b(1), no_urbs: b(2) },
            STOP_ISO_STREAM => TypeHeader::StopIsoStream { endpoint: b(0) },
            ISO_STREAM_STATUS => TypeHeader::IsoStreamStatus { status: b(0), endpoint: b(1) },
            START_INTERRUPT_RECEIVING => TypeHeader::StartInterruptReceiving { endpoint: b(0) },
            STOP_INTERRUPT_RECEIVING => TypeHeader::StopInterruptReceiving { endpoint: b(0) },
            INTERRUPT_RECEIVING_STATUS => TypeHeader::InterruptReceivingStatus { status: b(0), endpoint: b(1) },
            ALLOC_BULK_STREAMS => TypeHeader::AllocBulkStreams { endpoints: d(0), no_streams: d(4) },
            FREE_BULK_STREAMS => TypeHeader::FreeBulkStreams { endpoints: d(0) },
            BULK_STREAMS_STATUS => TypeHeader::BulkStreamsStatus { endpoints: d(0), no_streams: d(4), status: b(8) },
            CANCEL_DATA_PACKET => TypeHeader::CancelDataPacket,
            FILTER_REJECT => TypeHeader::FilterReject,
            FILTER_FILTER => {
                control_data(USBREDIR_MAX_CONTROL_DATA)?;
                TypeHeader::FilterFilter
            }
            DEVICE_DISCONNECT_ACK => TypeHeader::DeviceDisconnectAck,
            START_BULK_RECEIVING => TypeHeader::StartBulkReceiving {
                stream_id: d(0),
                bytes_per_transfer: d(4),
                endpoint: b(8),
                no_transfers: b(9),
            },
            STOP_BULK_RECEIVING => TypeHeader::StopBulkReceiving { stream_id: d(0), endpoint: b(4) },
            BULK_RECEIVING_STATUS => TypeHeader::BulkReceivingStatus { stream_id: d(0), endpoint: b(4), status: b(5) },
            CONTROL_PACKET => {
                let (endpoint, length) = (b(0), w(8));
                data_rule(endpoint, u32::from(length))?;
                TypeHeader::ControlPacket {
                    endpoint,
                    request: b(1),
                    requesttype: b(2),
                    status: b(3),
                    value: w(4),
                    index: w(6),
                    length,
                }
            }
            BULK_PACKET => {
                let high = if h.len() >= 10 { u32::from(w(8)) } else { 0 };
                let (endpoint, length) = (b(0), high << 16 | u32::from(w(2)));
                if length > USBREDIR_MAX_DATA {
                    return Err(UsbredirError::TooLarge { packet_type, data_len: length, max: USBREDIR_MAX_DATA });
                }
                data_rule(endpoint, length)?;
                TypeHeader::BulkPacket { endpoint, status: b(1), length, stream_id: d(4) }
            }
            ISO_PACKET | INTERRUPT_PACKET => {
                let (endpoint, status, length) = (b(0), b(1), w(2));
                data_rule(endpoint, u32::from(length))?;
                if packet_type == ISO_PACKET {
                    TypeHeader::IsoPacket { endpoint, status, length }
                } else {
                    TypeHeader::InterruptPacket { endpoint, status, length }
                }
            }
            BUFFERED_BULK_PACKET => {
                let (endpoint, length) = (b(8), d(4));
                data_rule(endpoint, length)?;
                TypeHeader::BufferedBulkPacket { stream_id: d(0), length, endpoint, status: b(9) }
            }
            other => return Err(UsbredirError::UnknownType(other)),
        };
        // Packets without data of their own carry none.
        if data_len != 0 && !matches!(packet_type, HELLO | FILTER_FILTER | FILTER_REJECT) && packet_type < 100 {
            return Err(UsbredirError::DataMismatch { side, packet_type, endpoint: 0, data_len, expected: 0 });
        }
        Ok(header)
    }
}

/// One usbredir packet in wire form: `usb_redir_header` (with a 64-bit id
/// when `ids64`, else 32-bit), the type header, the data. Callers bound the
/// data to [`USBREDIR_MAX_DATA`]; a longer length would saturate.
pub fn encode_packet(packet_type: u32, id: u64, ids64: bool, type_header: &[u8], data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + type_header.len() + data.len());
    v.extend_from_slice(&packet_type.to_le_bytes());
    let length = u32::try_from(type_header.len() + data.len()).unwrap_or(u32::MAX);
    v.extend_from_slice(&length.to_le_bytes());
    if ids64 {
        v.extend_from_slice(&id.to_le_bytes());
    } else {
        v.extend_from_slice(&(id as u32).to_le_bytes());
    }
    v.extend_from_slice(type_header);
    v.extend_from_slice(data);
    v
}

/// Fills in what a packet's data says of its header (the hello's caps).
fn finish(mut p: Packet) -> Packet {
    if let TypeHeader::Hello { caps, .. } = &mut p.header {
        *caps = p.data.chunks_exact(4).map(le32).collect();
    }
    p
}

/// Which side may send a packet type (`usbredirparser.c`: commands for the
/// host come from the guest, device information and status from the host).
fn check_sender(side: Side, packet_type: u32) -> Result<(), UsbredirError> {
    use packet_type::*;
    let host_only = matches!(
        packet_type,
        DEVICE_CONNECT
            | DEVICE_DISCONNECT
            | INTERFACE_INFO
            | EP_INFO
            | CONFIGURATION_STATUS
            | ALT_SETTING_STATUS
            | ISO_STREAM_STATUS
            | INTERRUPT_RECEIVING_STATUS
            | BULK_STREAMS_STATUS
            | BULK_RECEIVING_STATUS
            | BUFFERED_BULK_PACKET
    );
    let guest_only = matches!(
        packet_type,
        RESET
            | SET_CONFIGURATION
            | GET_CONFIGURATION
            | SET_ALT_SETTING
            | GET_ALT_SETTING
            | START_ISO_STREAM
            | STOP_ISO_STREAM
            | START_INTERRUPT_RECEIVING
            | STOP_INTERRUPT_RECEIVING
            | ALLOC_BULK_STREAMS
            | FREE_BULK_STREAMS
            | CANCEL_DATA_PACKET
            | DEVICE_DISCONNECT_ACK
            | START_BULK_RECEIVING
            | STOP_BULK_RECEIVING
    );
    if (host_only && side == Side::Guest) || (guest_only && side == Side::Host) {
        return Err(UsbredirError::WrongSender { side, packet_type });
    }
    Ok(())
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

#[cfg(test)]
mod tests;

//! The SPICE link stage: `SpiceLinkHeader`, `SpiceLinkMess`, `SpiceLinkReply`.
//!
//! Every channel connection starts with this exchange (spice-protocol
//! `spice/protocol.h`; spice-gtk `spice-channel.c`; spice-server
//! `reds.c`), all integers little-endian:
//!
//! ```text
//! client -> server  SpiceLinkHeader   magic "REDQ" u32, major u32 = 2, minor u32, size u32
//!                   SpiceLinkMess     connection_id u32, channel_type u8, channel_id u8,
//!                                     num_common_caps u32, num_channel_caps u32,
//!                                     caps_offset u32 (from the start of SpiceLinkMess),
//!                                     caps words u32[num_common_caps + num_channel_caps]
//! server -> client  SpiceLinkHeader
//!                   SpiceLinkReply    error u32, pub_key [162] (RSA-1024 SubjectPublicKeyInfo),
//!                                     num_common_caps u32, num_channel_caps u32,
//!                                     caps_offset u32, caps words
//! client -> server  [SpiceLinkAuthMechanism u32, when both sides set
//!                    SPICE_COMMON_CAP_PROTOCOL_AUTH_SELECTION]
//!                   SpiceLinkEncryptedTicket [128]
//! server -> client  link result u32 (a SpiceLinkErr)
//! ```
//!
//! These are sans-IO parsers: they take the bytes, the proxy does the reads.

use thiserror::Error;

use crate::limits::{MAX_CAPS_WORDS, MAX_LINK_SIZE};
use crate::protocol::{
    ChannelType, LinkErr, SPICE_COMMON_CAP_MINI_HEADER, SPICE_COMMON_CAP_PROTOCOL_AUTH_SELECTION, SPICE_MAGIC,
    SPICE_TICKET_PUBKEY_BYTES, SPICE_VERSION_MAJOR, SPICE_VERSION_MINOR, has_cap,
};
use crate::wire::{Reader, WireError};

/// Why a link-stage message was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The first four bytes were not `REDQ`: the peer does not speak SPICE.
    #[error("not SPICE: magic {found:02x?} is not \"REDQ\"")]
    BadMagic {
        /// The four bytes received.
        found: [u8; 4],
    },
    /// A major version other than 2.
    #[error("unsupported SPICE major version {major} (want {SPICE_VERSION_MAJOR})")]
    VersionMismatch {
        /// The major version received.
        major: u32,
    },
    /// `SpiceLinkHeader.size` over [`MAX_LINK_SIZE`] or under the fixed part.
    #[error("link message size {declared} outside {min}..={max}")]
    BadSize {
        /// Size declared in the header.
        declared: u32,
        /// Smallest size that holds the fixed part.
        min: u32,
        /// Largest size accepted.
        max: u32,
    },
    /// A caps vector with more than [`MAX_CAPS_WORDS`] words.
    #[error("{count} caps words, more than {max}")]
    TooManyCaps {
        /// Number of words declared.
        count: u32,
        /// Largest number accepted.
        max: u32,
    },
    /// The caps words do not fit in the message.
    #[error("caps at offset {offset} with {words} words overrun a {size}-byte message")]
    CapsOutOfBounds {
        /// `caps_offset` received.
        offset: u32,
        /// Total number of caps words.
        words: u32,
        /// Size of the message.
        size: usize,
    },
    /// Fewer bytes than the structure needs.
    #[error(transparent)]
    Short(#[from] WireError),
}

/// `SpiceLinkHeader`, 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkHeader {
    /// `major_version` (always 2 once parsed).
    pub major_version: u32,
    /// `minor_version`.
    pub minor_version: u32,
    /// Bytes of `SpiceLinkMess`/`SpiceLinkReply` that follow.
    pub size: u32,
}

impl LinkHeader {
    /// Encoded size in bytes.
    pub const SIZE: usize = 16;

    /// Parses and checks a header: magic, major version, and
    /// `min_body <= size <= MAX_LINK_SIZE`.
    ///
    /// # Errors
    /// [`LinkError::BadMagic`], [`LinkError::VersionMismatch`],
    /// [`LinkError::BadSize`], or [`LinkError::Short`] under 16 bytes.
    pub fn parse(bytes: &[u8], min_body: u32) -> Result<Self, LinkError> {
        let mut r = Reader::new(bytes);
        let magic = r.take(4)?;
        if magic != SPICE_MAGIC.to_le_bytes() {
            let mut found = [0u8; 4];
            found.copy_from_slice(magic);
            return Err(LinkError::BadMagic { found });
        }
        let major_version = r.u32()?;
        let minor_version = r.u32()?;
        let size = r.u32()?;
        if major_version != SPICE_VERSION_MAJOR {
            return Err(LinkError::VersionMismatch { major: major_version });
        }
        if !(min_body..=MAX_LINK_SIZE).contains(&size) {
            return Err(LinkError::BadSize { declared: size, min: min_body, max: MAX_LINK_SIZE });
        }
        Ok(Self { major_version, minor_version, size })
    }

    /// Encodes a version-2.2 header announcing `size` bytes.
    pub fn encode(size: u32) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        out[0..4].copy_from_slice(&SPICE_MAGIC.to_le_bytes());
        out[4..8].copy_from_slice(&SPICE_VERSION_MAJOR.to_le_bytes());
        out[8..12].copy_from_slice(&SPICE_VERSION_MINOR.to_le_bytes());
        out[12..16].copy_from_slice(&size.to_le_bytes());
        out
    }
}

/// Common and channel capability words of one side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caps {
    /// `SPICE_COMMON_CAP_*` bits.
    pub common: Vec<u32>,
    /// Channel-type specific bits (`SPICE_DISPLAY_CAP_*`, ...).
    pub channel: Vec<u32>,
}

/// Reads `num_common_caps`, `num_channel_caps`, `caps_offset` from `r` and
/// the words they point at in `msg` (offsets count from the start of `msg`).
fn parse_caps(r: &mut Reader<'_>, msg: &[u8]) -> Result<Caps, LinkError> {
    let num_common = r.u32()?;
    let num_channel = r.u32()?;
    let offset = r.u32()?;
    for count in [num_common, num_channel] {
        if count > MAX_CAPS_WORDS {
            return Err(LinkError::TooManyCaps { count, max: MAX_CAPS_WORDS });
        }
    }
    let words = num_common + num_channel; // both <= 16: no overflow
    let out_of_bounds = LinkError::CapsOutOfBounds { offset, words, size: msg.len() };
    let start = usize::try_from(offset).map_err(|_| out_of_bounds.clone())?;
    let caps_bytes = msg.get(start..).and_then(|rest| rest.get(..words as usize * 4)).ok_or(out_of_bounds)?;
    let mut c = Reader::new(caps_bytes);
    let mut read = |n: u32| (0..n).map(|_| c.u32()).collect::<Result<Vec<_>, _>>();
    let common = read(num_common)?;
    let channel = read(num_channel)?;
    Ok(Caps { common, channel })
}

/// `SpiceLinkMess`, sent by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkMess {
    /// 0 for a new session's main channel, else the session id from
    /// `SPICE_MSG_MAIN_INIT`.
    pub connection_id: u32,
    /// Channel type.
    pub channel_type: ChannelType,
    /// Channel id (display 0, 1, ... for multi-head).
    pub channel_id: u8,
    /// Client caps.
    pub caps: Caps,
}

impl LinkMess {
    /// Fixed part of `SpiceLinkMess`, in bytes.
    pub const FIXED_SIZE: u32 = 18;

    /// Parses a `SpiceLinkMess` body (the `size` bytes after the header).
    ///
    /// # Errors
    /// [`LinkError::Short`], [`LinkError::TooManyCaps`],
    /// [`LinkError::CapsOutOfBounds`].
    pub fn parse(body: &[u8]) -> Result<Self, LinkError> {
        let mut r = Reader::new(body);
        let connection_id = r.u32()?;
        let channel_type = ChannelType(r.u8()?);
        let channel_id = r.u8()?;
        let caps = parse_caps(&mut r, body)?;
        Ok(Self { connection_id, channel_type, channel_id, caps })
    }
}

/// `SpiceLinkReply`, sent by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkReply {
    /// `SPICE_LINK_ERR_OK` or the reason the server refuses the channel.
    pub error: LinkErr,
    /// Server caps (empty in an error reply).
    pub caps: Caps,
}

impl LinkReply {
    /// Fixed part of `SpiceLinkReply`, in bytes: error, key, three counts.
    pub const FIXED_SIZE: u32 = 4 + SPICE_TICKET_PUBKEY_BYTES as u32 + 12;

    /// Parses a `SpiceLinkReply` body.
    ///
    /// An error reply may be shorter than the fixed part (spice-server sends
    /// the whole structure, but only `error` matters): a body of at least 4
    /// bytes whose error is not OK parses with empty caps.
    ///
    /// # Errors
    /// [`LinkError::Short`], [`LinkError::TooManyCaps`],
    /// [`LinkError::CapsOutOfBounds`].
    pub fn parse(body: &[u8]) -> Result<Self, LinkError> {
        let mut r = Reader::new(body);
        let error = LinkErr(r.u32()?);
        if error != LinkErr::OK && body.len() < Self::FIXED_SIZE as usize {
            return Ok(Self { error, caps: Caps::default() });
        }
        r.take(SPICE_TICKET_PUBKEY_BYTES)?;
        let caps = if error == LinkErr::OK { parse_caps(&mut r, body)? } else { Caps::default() };
        Ok(Self { error, caps })
    }

    /// Encodes `SpiceLinkHeader` + an error `SpiceLinkReply` (zeroed key, no
    /// caps), as spice-server does when it refuses a link (`reds.c`
    /// `reds_send_link_error`).
    pub fn encode_error(error: LinkErr) -> Vec<u8> {
        let mut out = Vec::with_capacity(LinkHeader::SIZE + Self::FIXED_SIZE as usize);
        out.extend_from_slice(&LinkHeader::encode(Self::FIXED_SIZE));
        out.extend_from_slice(&error.0.to_le_bytes());
        out.extend_from_slice(&[0u8; SPICE_TICKET_PUBKEY_BYTES]);
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&Self::FIXED_SIZE.to_le_bytes());
        out
    }
}

/// Message header layout negotiated for a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeaderKind {
    /// `SpiceMiniDataHeader`: type u16, size u32 (6 bytes).
    Mini,
    /// `SpiceDataHeader`: serial u64, type u16, size u32, sub_list u32 (18 bytes).
    Full,
}

impl HeaderKind {
    /// The header kind both sides agreed on: mini when both set
    /// `SPICE_COMMON_CAP_MINI_HEADER`, else full (spice-gtk
    /// `spice-channel.c`, spice-server `red-channel-client.c`).
    pub fn negotiate(client: &Caps, server: &Caps) -> Self {
        if has_cap(&client.common, SPICE_COMMON_CAP_MINI_HEADER)
            && has_cap(&server.common, SPICE_COMMON_CAP_MINI_HEADER)
        {
            Self::Mini
        } else {
            Self::Full
        }
    }

    /// Header size in bytes.
    pub fn size(self) -> usize {
        match self {
            Self::Mini => 6,
            Self::Full => 18,
        }
    }
}

/// Clears `mask` in the first channel caps word of a whole link message
/// (`SpiceLinkHeader` included) whose parsed form is `mess`, in place, and
/// returns the names of the bits that were set. The caps offset was
/// bounds-checked when `mess` was parsed.
pub fn clear_channel_caps(bytes: &mut [u8], mess: &LinkMess, mask: u32) -> Vec<String> {
    let Some(&word) = mess.caps.channel.first() else { return Vec::new() };
    let removed = word & mask;
    if removed == 0 || bytes.len() < LinkHeader::SIZE + 18 {
        return Vec::new();
    }
    let body = &bytes[LinkHeader::SIZE..];
    let caps_offset = u32::from_le_bytes([body[14], body[15], body[16], body[17]]) as usize;
    let at = LinkHeader::SIZE + caps_offset + 4 * mess.caps.common.len();
    match bytes.get_mut(at..at + 4) {
        Some(slot) => slot.copy_from_slice(&(word & !mask).to_le_bytes()),
        None => return Vec::new(),
    }
    crate::protocol::channel_cap_names_of(mess.channel_type, &[removed])
}

/// Whether the client sends a `SpiceLinkAuthMechanism` before its ticket:
/// both sides set `SPICE_COMMON_CAP_PROTOCOL_AUTH_SELECTION`.
pub fn auth_selection(client: &Caps, server: &Caps) -> bool {
    has_cap(&client.common, SPICE_COMMON_CAP_PROTOCOL_AUTH_SELECTION)
        && has_cap(&server.common, SPICE_COMMON_CAP_PROTOCOL_AUTH_SELECTION)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A client link message (header + body) as spice-gtk sends it.
    pub(crate) fn link_mess_bytes(connection_id: u32, channel_type: u8, common: &[u32], channel: &[u32]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&connection_id.to_le_bytes());
        body.push(channel_type);
        body.push(0);
        body.extend_from_slice(&(common.len() as u32).to_le_bytes());
        body.extend_from_slice(&(channel.len() as u32).to_le_bytes());
        body.extend_from_slice(&18u32.to_le_bytes());
        for w in common.iter().chain(channel) {
            body.extend_from_slice(&w.to_le_bytes());
        }
        let mut out = LinkHeader::encode(body.len() as u32).to_vec();
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn link_mess_round_trip() {
        let bytes = link_mess_bytes(0x1234, 2, &[0b1011], &[0x7ff]);
        let h = LinkHeader::parse(&bytes[..16], LinkMess::FIXED_SIZE).unwrap();
        assert_eq!(h.size as usize, bytes.len() - 16);
        let m = LinkMess::parse(&bytes[16..]).unwrap();
        assert_eq!(m.connection_id, 0x1234);
        assert_eq!(m.channel_type, ChannelType::DISPLAY);
        assert_eq!(m.caps.common, [0b1011]);
        assert_eq!(m.caps.channel, [0x7ff]);
    }

    #[test]
    fn http_request_is_bad_magic() {
        let e = LinkHeader::parse(b"GET / HTTP/1.1\r\n", 18).unwrap_err();
        assert!(matches!(e, LinkError::BadMagic { found } if &found == b"GET "));
    }

    #[test]
    fn oversized_and_undersized_links_are_refused() {
        let mut h = LinkHeader::encode(MAX_LINK_SIZE + 1);
        assert!(matches!(LinkHeader::parse(&h, 18), Err(LinkError::BadSize { .. })));
        h = LinkHeader::encode(3);
        assert!(matches!(LinkHeader::parse(&h, 18), Err(LinkError::BadSize { .. })));
        assert!(LinkHeader::parse(&LinkHeader::encode(MAX_LINK_SIZE), 18).is_ok());
    }

    #[test]
    fn wrong_major_version_is_refused() {
        let mut h = LinkHeader::encode(18);
        h[4] = 1;
        assert_eq!(LinkHeader::parse(&h, 18), Err(LinkError::VersionMismatch { major: 1 }));
    }

    #[test]
    fn caps_counts_and_offsets_are_bounds_checked() {
        let mut bytes = link_mess_bytes(0, 1, &[1], &[]);
        // num_common_caps = 17
        bytes[16 + 6..16 + 10].copy_from_slice(&17u32.to_le_bytes());
        assert!(matches!(LinkMess::parse(&bytes[16..]), Err(LinkError::TooManyCaps { count: 17, .. })));
        let mut bytes = link_mess_bytes(0, 1, &[1], &[]);
        // caps_offset pointing past the end
        bytes[16 + 14..16 + 18].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(LinkMess::parse(&bytes[16..]), Err(LinkError::CapsOutOfBounds { .. })));
        let bytes = link_mess_bytes(0, 1, &[1, 2], &[]);
        assert!(matches!(LinkMess::parse(&bytes[16..bytes.len() - 1]), Err(LinkError::CapsOutOfBounds { .. })));
    }

    #[test]
    fn every_truncation_of_a_link_mess_is_an_error() {
        let bytes = link_mess_bytes(7, 3, &[0b1011], &[1]);
        for cut in 0..bytes.len() - 16 {
            assert!(LinkMess::parse(&bytes[16..16 + cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn error_reply_round_trip() {
        let bytes = LinkReply::encode_error(LinkErr::ERROR);
        let h = LinkHeader::parse(&bytes[..16], 4).unwrap();
        assert_eq!(h.size, LinkReply::FIXED_SIZE);
        let r = LinkReply::parse(&bytes[16..]).unwrap();
        assert_eq!(r.error, LinkErr::ERROR);
        assert_eq!(r.caps, Caps::default());
    }

    #[test]
    fn header_kind_needs_both_sides() {
        let mini = Caps { common: vec![1 << 3], channel: vec![] };
        let none = Caps::default();
        assert_eq!(HeaderKind::negotiate(&mini, &mini), HeaderKind::Mini);
        assert_eq!(HeaderKind::negotiate(&mini, &none), HeaderKind::Full);
        assert_eq!(HeaderKind::negotiate(&none, &mini), HeaderKind::Full);
    }

    const QEMU_LINK_MESS: &[u8] = include_bytes!("../tests/fixtures/qemu-bios-display-link-mess.bin");
    const QEMU_LINK_REPLY: &[u8] = include_bytes!("../tests/fixtures/qemu-bios-display-link-reply.bin");

    #[test]
    fn recorded_spice_gtk_link_mess_parses() {
        let h = LinkHeader::parse(&QEMU_LINK_MESS[..16], LinkMess::FIXED_SIZE).unwrap();
        assert_eq!(h.size as usize, QEMU_LINK_MESS.len() - 16);
        let m = LinkMess::parse(&QEMU_LINK_MESS[16..]).unwrap();
        assert_eq!(m.channel_type, ChannelType::DISPLAY);
        assert_ne!(m.connection_id, 0, "a display channel carries the session id");
        assert!(has_cap(&m.caps.common, SPICE_COMMON_CAP_MINI_HEADER));
    }

    #[test]
    fn recorded_qemu_link_reply_parses() {
        let h = LinkHeader::parse(&QEMU_LINK_REPLY[..16], 4).unwrap();
        assert_eq!(h.size as usize, QEMU_LINK_REPLY.len() - 16);
        let r = LinkReply::parse(&QEMU_LINK_REPLY[16..]).unwrap();
        assert_eq!(r.error, LinkErr::OK);
        assert!(auth_selection(&LinkMess::parse(&QEMU_LINK_MESS[16..]).unwrap().caps, &r.caps));
        for cut in 4..QEMU_LINK_REPLY.len() - 16 {
            assert!(LinkReply::parse(&QEMU_LINK_REPLY[16..16 + cut]).is_err(), "cut at {cut}");
        }
    }
}

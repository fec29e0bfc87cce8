//! SPICE protocol constants and their standard names.
//!
//! Numbers and names follow spice-protocol `spice/enums.h` (channel types,
//! message types, link errors) and `spice/protocol.h` (link-stage layout,
//! capability bits). Names are the spice-protocol identifiers, so
//! `session.json` reads like the header files and like Wireshark.

use std::borrow::Cow;
use std::fmt;

/// `SPICE_MAGIC`: the bytes `REDQ` read as a little-endian `u32`.
pub const SPICE_MAGIC: u32 = 0x5144_4552;
/// `SPICE_VERSION_MAJOR`.
pub const SPICE_VERSION_MAJOR: u32 = 2;
/// `SPICE_VERSION_MINOR`.
pub const SPICE_VERSION_MINOR: u32 = 2;
/// `SPICE_TICKET_PUBKEY_BYTES`: DER SubjectPublicKeyInfo of an RSA-1024 key.
pub const SPICE_TICKET_PUBKEY_BYTES: usize = 162;
/// Size of `SpiceLinkEncryptedTicket`: one RSA-1024 block.
pub const SPICE_TICKET_BYTES: usize = 128;

/// `SPICE_COMMON_CAP_PROTOCOL_AUTH_SELECTION`.
pub const SPICE_COMMON_CAP_PROTOCOL_AUTH_SELECTION: u32 = 0;
/// `SPICE_COMMON_CAP_AUTH_SPICE`.
pub const SPICE_COMMON_CAP_AUTH_SPICE: u32 = 1;
/// `SPICE_COMMON_CAP_AUTH_SASL`.
pub const SPICE_COMMON_CAP_AUTH_SASL: u32 = 2;
/// `SPICE_COMMON_CAP_MINI_HEADER`.
pub const SPICE_COMMON_CAP_MINI_HEADER: u32 = 3;

/// `SPICE_AUTH_SPICE` value of `SpiceLinkAuthMechanism` (ticket in RSA-OAEP).
pub const SPICE_AUTH_SPICE: u32 = 1;
/// `SPICE_AUTH_SASL` value of `SpiceLinkAuthMechanism`.
pub const SPICE_AUTH_SASL: u32 = 2;

/// `SPICE_MSG_LIST`: a body made of sub-messages (spice-protocol `enums.h`).
pub const SPICE_MSG_LIST: u16 = 8;
/// `SPICE_MSG_MAIN_INIT`: first main-channel message; carries the session id.
pub const SPICE_MSG_MAIN_INIT: u16 = 103;

/// A SPICE channel type (`SPICE_CHANNEL_*`, spice-protocol `enums.h`).
///
/// Unknown numbers are kept, forwarded and named by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelType(pub u8);

impl ChannelType {
    /// `SPICE_CHANNEL_MAIN`.
    pub const MAIN: Self = Self(1);
    /// `SPICE_CHANNEL_DISPLAY`.
    pub const DISPLAY: Self = Self(2);
    /// `SPICE_CHANNEL_INPUTS`.
    pub const INPUTS: Self = Self(3);
    /// `SPICE_CHANNEL_CURSOR`.
    pub const CURSOR: Self = Self(4);
    /// `SPICE_CHANNEL_PLAYBACK`.
    pub const PLAYBACK: Self = Self(5);
    /// `SPICE_CHANNEL_RECORD`.
    pub const RECORD: Self = Self(6);
    /// `SPICE_CHANNEL_TUNNEL` (obsolete).
    pub const TUNNEL: Self = Self(7);
    /// `SPICE_CHANNEL_SMARTCARD`.
    pub const SMARTCARD: Self = Self(8);
    /// `SPICE_CHANNEL_USBREDIR`.
    pub const USBREDIR: Self = Self(9);
    /// `SPICE_CHANNEL_PORT`.
    pub const PORT: Self = Self(10);
    /// `SPICE_CHANNEL_WEBDAV`.
    pub const WEBDAV: Self = Self(11);

    /// Lower-case name used in file names and `session.json` (`main`,
    /// `display`, ...; `channel<N>` for unknown types).
    pub fn name(self) -> Cow<'static, str> {
        let known = match self.0 {
            1 => "main",
            2 => "display",
            3 => "inputs",
            4 => "cursor",
            5 => "playback",
            6 => "record",
            7 => "tunnel",
            8 => "smartcard",
            9 => "usbredir",
            10 => "port",
            11 => "webdav",
            n => return Cow::Owned(format!("channel{n}")),
        };
        Cow::Borrowed(known)
    }

    /// Whether this channel carries a `SpiceVMC` stream (usbredir, port,
    /// webdav), which spice-server sends without an ACK window.
    pub fn is_spicevmc(self) -> bool {
        matches!(self, Self::USBREDIR | Self::PORT | Self::WEBDAV | Self::SMARTCARD)
    }
}

impl fmt::Display for ChannelType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Which way a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to server (`SPICE_MSGC_*`).
    ClientToServer,
    /// Server to client (`SPICE_MSG_*`).
    ServerToClient,
}

impl Direction {
    /// Index 0 for client-to-server, 1 for server-to-client.
    pub fn index(self) -> usize {
        match self {
            Self::ClientToServer => 0,
            Self::ServerToClient => 1,
        }
    }

    /// Short label for logs: `c2s` or `s2c`.
    pub fn label(self) -> &'static str {
        match self {
            Self::ClientToServer => "c2s",
            Self::ServerToClient => "s2c",
        }
    }
}

/// `SpiceLinkErr` (spice-protocol `enums.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkErr(pub u32);

impl LinkErr {
    /// `SPICE_LINK_ERR_OK`.
    pub const OK: Self = Self(0);
    /// `SPICE_LINK_ERR_ERROR`.
    pub const ERROR: Self = Self(1);
    /// `SPICE_LINK_ERR_INVALID_MAGIC`.
    pub const INVALID_MAGIC: Self = Self(2);
    /// `SPICE_LINK_ERR_INVALID_DATA`.
    pub const INVALID_DATA: Self = Self(3);
    /// `SPICE_LINK_ERR_VERSION_MISMATCH`.
    pub const VERSION_MISMATCH: Self = Self(4);
    /// `SPICE_LINK_ERR_NEED_SECURED`.
    pub const NEED_SECURED: Self = Self(5);
    /// `SPICE_LINK_ERR_NEED_UNSECURED`.
    pub const NEED_UNSECURED: Self = Self(6);
    /// `SPICE_LINK_ERR_PERMISSION_DENIED`.
    pub const PERMISSION_DENIED: Self = Self(7);
    /// `SPICE_LINK_ERR_BAD_CONNECTION_ID`.
    pub const BAD_CONNECTION_ID: Self = Self(8);
    /// `SPICE_LINK_ERR_CHANNEL_NOT_AVAILABLE`.
    pub const CHANNEL_NOT_AVAILABLE: Self = Self(9);

    /// The spice-protocol name, or `SPICE_LINK_ERR_<n>` for unknown values.
    pub fn name(self) -> Cow<'static, str> {
        const NAMES: [&str; 10] = [
            "SPICE_LINK_ERR_OK",
            "SPICE_LINK_ERR_ERROR",
            "SPICE_LINK_ERR_INVALID_MAGIC",
            "SPICE_LINK_ERR_INVALID_DATA",
            "SPICE_LINK_ERR_VERSION_MISMATCH",
            "SPICE_LINK_ERR_NEED_SECURED",
            "SPICE_LINK_ERR_NEED_UNSECURED",
            "SPICE_LINK_ERR_PERMISSION_DENIED",
            "SPICE_LINK_ERR_BAD_CONNECTION_ID",
            "SPICE_LINK_ERR_CHANNEL_NOT_AVAILABLE",
        ];
        match NAMES.get(self.0 as usize) {
            Some(n) => Cow::Borrowed(n),
            None => Cow::Owned(format!("SPICE_LINK_ERR_{}", self.0)),
        }
    }
}

impl fmt::Display for LinkErr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Names of the common capability bits (`SPICE_COMMON_CAP_*`).
const COMMON_CAPS: &[&str] = &[
    "SPICE_COMMON_CAP_PROTOCOL_AUTH_SELECTION",
    "SPICE_COMMON_CAP_AUTH_SPICE",
    "SPICE_COMMON_CAP_AUTH_SASL",
    "SPICE_COMMON_CAP_MINI_HEADER",
];

/// Names of a channel type's capability bits (spice-protocol `protocol.h`).
fn channel_cap_names(channel: ChannelType) -> &'static [&'static str] {
    match channel {
        ChannelType::MAIN => &[
            "SPICE_MAIN_CAP_SEMI_SEAMLESS_MIGRATE",
            "SPICE_MAIN_CAP_NAME_AND_UUID",
            "SPICE_MAIN_CAP_AGENT_CONNECTED_TOKENS",
            "SPICE_MAIN_CAP_SEAMLESS_MIGRATE",
        ],
        ChannelType::DISPLAY => &[
            "SPICE_DISPLAY_CAP_SIZED_STREAM",
            "SPICE_DISPLAY_CAP_MONITORS_CONFIG",
            "SPICE_DISPLAY_CAP_COMPOSITE",
            "SPICE_DISPLAY_CAP_A8_SURFACE",
            "SPICE_DISPLAY_CAP_STREAM_REPORT",
            "SPICE_DISPLAY_CAP_LZ4_COMPRESSION",
            "SPICE_DISPLAY_CAP_PREF_COMPRESSION",
            "SPICE_DISPLAY_CAP_GL_SCANOUT",
            "SPICE_DISPLAY_CAP_MULTI_CODEC",
            "SPICE_DISPLAY_CAP_CODEC_MJPEG",
            "SPICE_DISPLAY_CAP_CODEC_VP8",
            "SPICE_DISPLAY_CAP_CODEC_H264",
            "SPICE_DISPLAY_CAP_PREF_VIDEO_CODEC_TYPE",
            "SPICE_DISPLAY_CAP_CODEC_VP9",
            "SPICE_DISPLAY_CAP_CODEC_H265",
        ],
        ChannelType::INPUTS => &["SPICE_INPUTS_CAP_KEY_SCANCODE"],
        ChannelType::PLAYBACK => &[
            "SPICE_PLAYBACK_CAP_CELT_0_5_1",
            "SPICE_PLAYBACK_CAP_VOLUME",
            "SPICE_PLAYBACK_CAP_LATENCY",
            "SPICE_PLAYBACK_CAP_OPUS",
        ],
        ChannelType::RECORD => &["SPICE_RECORD_CAP_CELT_0_5_1", "SPICE_RECORD_CAP_VOLUME", "SPICE_RECORD_CAP_OPUS"],
        ChannelType::USBREDIR | ChannelType::PORT | ChannelType::WEBDAV | ChannelType::SMARTCARD => {
            &["SPICE_SPICEVMC_CAP_DATA_COMPRESS_LZ4"]
        }
        _ => &[],
    }
}

fn cap_names(words: &[u32], names: &[&'static str], unknown_prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (w, word) in words.iter().enumerate() {
        for bit in 0..32 {
            if word & (1 << bit) != 0 {
                let index = w * 32 + bit;
                match names.get(index) {
                    Some(n) => out.push((*n).to_string()),
                    None => out.push(format!("{unknown_prefix}{index}")),
                }
            }
        }
    }
    out
}

/// Names of the bits set in a common caps vector; unknown bits become
/// `SPICE_COMMON_CAP_<bit>`.
pub fn common_cap_names(words: &[u32]) -> Vec<String> {
    cap_names(words, COMMON_CAPS, "SPICE_COMMON_CAP_")
}

/// Names of the bits set in a channel caps vector of `channel`; unknown bits
/// become `CAP_<bit>`.
pub fn channel_cap_names_of(channel: ChannelType, words: &[u32]) -> Vec<String> {
    cap_names(words, channel_cap_names(channel), "CAP_")
}

/// Whether bit `cap` is set in a caps vector.
pub fn has_cap(words: &[u32], cap: u32) -> bool {
    words.get((cap / 32) as usize).is_some_and(|w| w & (1 << (cap % 32)) != 0)
}

const MSG_BASE: &[&str] = &[
    "SPICE_MSG_MIGRATE",
    "SPICE_MSG_MIGRATE_DATA",
    "SPICE_MSG_SET_ACK",
    "SPICE_MSG_PING",
    "SPICE_MSG_WAIT_FOR_CHANNELS",
    "SPICE_MSG_DISCONNECTING",
    "SPICE_MSG_NOTIFY",
    "SPICE_MSG_LIST",
];
const MSGC_BASE: &[&str] = &[
    "SPICE_MSGC_ACK_SYNC",
    "SPICE_MSGC_ACK",
    "SPICE_MSGC_PONG",
    "SPICE_MSGC_MIGRATE_FLUSH_MARK",
    "SPICE_MSGC_MIGRATE_DATA",
    "SPICE_MSGC_DISCONNECTING",
];
const MSG_MAIN: &[&str] = &[
    "SPICE_MSG_MAIN_MIGRATE_BEGIN",
    "SPICE_MSG_MAIN_MIGRATE_CANCEL",
    "SPICE_MSG_MAIN_INIT",
    "SPICE_MSG_MAIN_CHANNELS_LIST",
    "SPICE_MSG_MAIN_MOUSE_MODE",
    "SPICE_MSG_MAIN_MULTI_MEDIA_TIME",
    "SPICE_MSG_MAIN_AGENT_CONNECTED",
    "SPICE_MSG_MAIN_AGENT_DISCONNECTED",
    "SPICE_MSG_MAIN_AGENT_DATA",
    "SPICE_MSG_MAIN_AGENT_TOKEN",
    "SPICE_MSG_MAIN_MIGRATE_SWITCH_HOST",
    "SPICE_MSG_MAIN_MIGRATE_END",
    "SPICE_MSG_MAIN_NAME",
    "SPICE_MSG_MAIN_UUID",
    "SPICE_MSG_MAIN_AGENT_CONNECTED_TOKENS",
    "SPICE_MSG_MAIN_MIGRATE_BEGIN_SEAMLESS",
    "SPICE_MSG_MAIN_MIGRATE_DST_SEAMLESS_ACK",
    "SPICE_MSG_MAIN_MIGRATE_DST_SEAMLESS_NACK",
];
const MSGC_MAIN: &[&str] = &[
    "SPICE_MSGC_MAIN_CLIENT_INFO",
    "SPICE_MSGC_MAIN_MIGRATE_CONNECTED",
    "SPICE_MSGC_MAIN_MIGRATE_CONNECT_ERROR",
    "SPICE_MSGC_MAIN_ATTACH_CHANNELS",
    "SPICE_MSGC_MAIN_MOUSE_MODE_REQUEST",
    "SPICE_MSGC_MAIN_AGENT_START",
    "SPICE_MSGC_MAIN_AGENT_DATA",
    "SPICE_MSGC_MAIN_AGENT_TOKEN",
    "SPICE_MSGC_MAIN_MIGRATE_END",
    "SPICE_MSGC_MAIN_MIGRATE_DST_DO_SEAMLESS",
    "SPICE_MSGC_MAIN_MIGRATE_CONNECTED_SEAMLESS",
    "SPICE_MSGC_MAIN_QUALITY_INDICATOR",
];
const MSG_DISPLAY_101: &[&str] = &[
    "SPICE_MSG_DISPLAY_MODE",
    "SPICE_MSG_DISPLAY_MARK",
    "SPICE_MSG_DISPLAY_RESET",
    "SPICE_MSG_DISPLAY_COPY_BITS",
    "SPICE_MSG_DISPLAY_INVAL_LIST",
    "SPICE_MSG_DISPLAY_INVAL_ALL_PIXMAPS",
    "SPICE_MSG_DISPLAY_INVAL_PALETTE",
    "SPICE_MSG_DISPLAY_INVAL_ALL_PALETTES",
];
const MSG_DISPLAY_122: &[&str] = &[
    "SPICE_MSG_DISPLAY_STREAM_CREATE",
    "SPICE_MSG_DISPLAY_STREAM_DATA",
    "SPICE_MSG_DISPLAY_STREAM_CLIP",
    "SPICE_MSG_DISPLAY_STREAM_DESTROY",
    "SPICE_MSG_DISPLAY_STREAM_DESTROY_ALL",
];
const MSG_DISPLAY_302: &[&str] = &[
    "SPICE_MSG_DISPLAY_DRAW_FILL",
    "SPICE_MSG_DISPLAY_DRAW_OPAQUE",
    "SPICE_MSG_DISPLAY_DRAW_COPY",
    "SPICE_MSG_DISPLAY_DRAW_BLEND",
    "SPICE_MSG_DISPLAY_DRAW_BLACKNESS",
    "SPICE_MSG_DISPLAY_DRAW_WHITENESS",
    "SPICE_MSG_DISPLAY_DRAW_INVERS",
    "SPICE_MSG_DISPLAY_DRAW_ROP3",
    "SPICE_MSG_DISPLAY_DRAW_STROKE",
    "SPICE_MSG_DISPLAY_DRAW_TEXT",
    "SPICE_MSG_DISPLAY_DRAW_TRANSPARENT",
    "SPICE_MSG_DISPLAY_DRAW_ALPHA_BLEND",
    "SPICE_MSG_DISPLAY_SURFACE_CREATE",
    "SPICE_MSG_DISPLAY_SURFACE_DESTROY",
    "SPICE_MSG_DISPLAY_STREAM_DATA_SIZED",
    "SPICE_MSG_DISPLAY_MONITORS_CONFIG",
    "SPICE_MSG_DISPLAY_DRAW_COMPOSITE",
    "SPICE_MSG_DISPLAY_STREAM_ACTIVATE_REPORT",
    "SPICE_MSG_DISPLAY_GL_SCANOUT_UNIX",
    "SPICE_MSG_DISPLAY_GL_DRAW",
    "SPICE_MSG_DISPLAY_QUALITY_INDICATOR",
];
const MSGC_DISPLAY: &[&str] = &[
    "SPICE_MSGC_DISPLAY_INIT",
    "SPICE_MSGC_DISPLAY_STREAM_REPORT",
    "SPICE_MSGC_DISPLAY_PREFERRED_COMPRESSION",
    "SPICE_MSGC_DISPLAY_GL_DRAW_DONE",
    "SPICE_MSGC_DISPLAY_PREFERRED_VIDEO_CODEC_TYPE",
];
const MSG_INPUTS_101: &[&str] = &["SPICE_MSG_INPUTS_INIT", "SPICE_MSG_INPUTS_KEY_MODIFIERS"];
const MSG_INPUTS_111: &[&str] = &["SPICE_MSG_INPUTS_MOUSE_MOTION_ACK"];
const MSGC_INPUTS_101: &[&str] = &[
    "SPICE_MSGC_INPUTS_KEY_DOWN",
    "SPICE_MSGC_INPUTS_KEY_UP",
    "SPICE_MSGC_INPUTS_KEY_MODIFIERS",
    "SPICE_MSGC_INPUTS_KEY_SCANCODE",
];
const MSGC_INPUTS_111: &[&str] = &[
    "SPICE_MSGC_INPUTS_MOUSE_MOTION",
    "SPICE_MSGC_INPUTS_MOUSE_POSITION",
    "SPICE_MSGC_INPUTS_MOUSE_PRESS",
    "SPICE_MSGC_INPUTS_MOUSE_RELEASE",
];
const MSG_CURSOR: &[&str] = &[
    "SPICE_MSG_CURSOR_INIT",
    "SPICE_MSG_CURSOR_RESET",
    "SPICE_MSG_CURSOR_SET",
    "SPICE_MSG_CURSOR_MOVE",
    "SPICE_MSG_CURSOR_HIDE",
    "SPICE_MSG_CURSOR_TRAIL",
    "SPICE_MSG_CURSOR_INVAL_ONE",
    "SPICE_MSG_CURSOR_INVAL_ALL",
];
const MSG_PLAYBACK: &[&str] = &[
    "SPICE_MSG_PLAYBACK_DATA",
    "SPICE_MSG_PLAYBACK_MODE",
    "SPICE_MSG_PLAYBACK_START",
    "SPICE_MSG_PLAYBACK_STOP",
    "SPICE_MSG_PLAYBACK_VOLUME",
    "SPICE_MSG_PLAYBACK_MUTE",
    "SPICE_MSG_PLAYBACK_LATENCY",
];
const MSG_RECORD: &[&str] =
    &["SPICE_MSG_RECORD_START", "SPICE_MSG_RECORD_STOP", "SPICE_MSG_RECORD_VOLUME", "SPICE_MSG_RECORD_MUTE"];
const MSGC_RECORD: &[&str] = &["SPICE_MSGC_RECORD_DATA", "SPICE_MSGC_RECORD_MODE", "SPICE_MSGC_RECORD_START_MARK"];
const MSG_SPICEVMC: &[&str] = &["SPICE_MSG_SPICEVMC_DATA", "SPICE_MSG_SPICEVMC_COMPRESSED_DATA"];
const MSGC_SPICEVMC: &[&str] = &["SPICE_MSGC_SPICEVMC_DATA", "SPICE_MSGC_SPICEVMC_COMPRESSED_DATA"];
const MSG_PORT: &[&str] = &["SPICE_MSG_PORT_INIT", "SPICE_MSG_PORT_EVENT"];
const MSGC_PORT: &[&str] = &["SPICE_MSGC_PORT_EVENT"];

fn lookup(table: &'static [&'static str], first: u16, ty: u16) -> Option<&'static str> {
    ty.checked_sub(first).and_then(|i| table.get(usize::from(i))).copied()
}

/// The spice-protocol name of message `ty` on `channel` going `dir`
/// (`SPICE_MSG_DISPLAY_DRAW_COPY`, `SPICE_MSGC_INPUTS_KEY_DOWN`, ...).
///
/// Types 1..=100 are the common messages of every channel. Unknown types are
/// named `SPICE_MSG_<channel>_<n>` / `SPICE_MSGC_<channel>_<n>`.
pub fn message_name(channel: ChannelType, dir: Direction, ty: u16) -> Cow<'static, str> {
    use Direction::{ClientToServer as C, ServerToClient as S};
    let found = match (dir, channel) {
        (S, _) if ty <= 100 => lookup(MSG_BASE, 1, ty),
        (C, _) if ty <= 100 => lookup(MSGC_BASE, 1, ty),
        (S, ChannelType::MAIN) => lookup(MSG_MAIN, 101, ty),
        (C, ChannelType::MAIN) => lookup(MSGC_MAIN, 101, ty),
        (S, ChannelType::DISPLAY) => lookup(MSG_DISPLAY_101, 101, ty)
            .or_else(|| lookup(MSG_DISPLAY_122, 122, ty))
            .or_else(|| lookup(MSG_DISPLAY_302, 302, ty)),
        (C, ChannelType::DISPLAY) => lookup(MSGC_DISPLAY, 101, ty),
        (S, ChannelType::INPUTS) => lookup(MSG_INPUTS_101, 101, ty).or_else(|| lookup(MSG_INPUTS_111, 111, ty)),
        (C, ChannelType::INPUTS) => lookup(MSGC_INPUTS_101, 101, ty).or_else(|| lookup(MSGC_INPUTS_111, 111, ty)),
        (S, ChannelType::CURSOR) => lookup(MSG_CURSOR, 101, ty),
        (S, ChannelType::PLAYBACK) => lookup(MSG_PLAYBACK, 101, ty),
        (S, ChannelType::RECORD) => lookup(MSG_RECORD, 101, ty),
        (C, ChannelType::RECORD) => lookup(MSGC_RECORD, 101, ty),
        (S, ChannelType::SMARTCARD) => (ty == 101).then_some("SPICE_MSG_SMARTCARD_DATA"),
        (C, ChannelType::SMARTCARD) => (ty == 101).then_some("SPICE_MSGC_SMARTCARD_DATA"),
        (S, ChannelType::USBREDIR | ChannelType::PORT | ChannelType::WEBDAV) => {
            lookup(MSG_SPICEVMC, 101, ty).or_else(|| lookup(MSG_PORT, 201, ty))
        }
        (C, ChannelType::USBREDIR | ChannelType::PORT | ChannelType::WEBDAV) => {
            lookup(MSGC_SPICEVMC, 101, ty).or_else(|| lookup(MSGC_PORT, 201, ty))
        }
        _ => None,
    };
    match found {
        Some(n) => Cow::Borrowed(n),
        None => {
            let prefix = match dir {
                S => "SPICE_MSG",
                C => "SPICE_MSGC",
            };
            Cow::Owned(format!("{prefix}_{}_{ty}", channel.name().to_uppercase()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::{ClientToServer as C, ServerToClient as S};

    #[test]
    fn magic_is_redq() {
        assert_eq!(&SPICE_MAGIC.to_le_bytes(), b"REDQ");
    }

    #[test]
    fn names_follow_enums_h_numbering() {
        let d = ChannelType::DISPLAY;
        assert_eq!(message_name(d, S, 102), "SPICE_MSG_DISPLAY_MARK");
        assert_eq!(message_name(d, S, 304), "SPICE_MSG_DISPLAY_DRAW_COPY");
        assert_eq!(message_name(d, S, 314), "SPICE_MSG_DISPLAY_SURFACE_CREATE");
        assert_eq!(message_name(d, S, 322), "SPICE_MSG_DISPLAY_QUALITY_INDICATOR");
        assert_eq!(message_name(d, S, 126), "SPICE_MSG_DISPLAY_STREAM_DESTROY_ALL");
        assert_eq!(message_name(d, C, 101), "SPICE_MSGC_DISPLAY_INIT");
        assert_eq!(message_name(ChannelType::MAIN, S, 103), "SPICE_MSG_MAIN_INIT");
        assert_eq!(message_name(ChannelType::INPUTS, C, 101), "SPICE_MSGC_INPUTS_KEY_DOWN");
        assert_eq!(message_name(ChannelType::INPUTS, C, 114), "SPICE_MSGC_INPUTS_MOUSE_RELEASE");
        assert_eq!(message_name(ChannelType::CURSOR, S, 3), "SPICE_MSG_SET_ACK");
        assert_eq!(message_name(ChannelType::CURSOR, C, 2), "SPICE_MSGC_ACK");
        assert_eq!(message_name(ChannelType::WEBDAV, S, 201), "SPICE_MSG_PORT_INIT");
        assert_eq!(message_name(ChannelType::USBREDIR, C, 101), "SPICE_MSGC_SPICEVMC_DATA");
    }

    #[test]
    fn unknown_types_are_named_by_number() {
        assert_eq!(message_name(ChannelType::DISPLAY, S, 200), "SPICE_MSG_DISPLAY_200");
        assert_eq!(message_name(ChannelType(42), C, 101), "SPICE_MSGC_CHANNEL42_101");
        assert_eq!(message_name(ChannelType::MAIN, S, 0), "SPICE_MSG_MAIN_0");
        assert_eq!(ChannelType(200).name(), "channel200");
        assert_eq!(LinkErr(77).name(), "SPICE_LINK_ERR_77");
    }

    #[test]
    fn caps_decode_to_names() {
        assert_eq!(
            common_cap_names(&[0b1011]),
            ["SPICE_COMMON_CAP_PROTOCOL_AUTH_SELECTION", "SPICE_COMMON_CAP_AUTH_SPICE", "SPICE_COMMON_CAP_MINI_HEADER"]
        );
        assert_eq!(channel_cap_names_of(ChannelType::INPUTS, &[0b11]), ["SPICE_INPUTS_CAP_KEY_SCANCODE", "CAP_1"]);
        assert!(has_cap(&[0, 1], 32));
        assert!(!has_cap(&[], 3));
    }
}

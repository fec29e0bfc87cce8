//! `session.json`: what a session was, channel by channel.
//!
//! Written by the capture writer when the session starts, rewritten each
//! time a channel opens or closes, and a last time when the session ends.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::link::{Caps, HeaderKind};
use crate::protocol::{ChannelType, Direction, channel_cap_names_of, common_cap_names, message_name};
use crate::tls::TlsInfo;

/// The whole `session.json` document.
#[derive(Debug, Clone, Serialize)]
pub struct SessionReport {
    /// Session id from `SPICE_MSG_MAIN_INIT` (0 when the session never got one).
    pub session_id: u32,
    /// When the session's first channel connected (RFC 3339, UTC).
    pub start: String,
    /// When its last channel closed; `null` while it runs.
    pub end: Option<String>,
    /// Address of the client's first channel connection.
    pub client_address: String,
    /// Address of the SPICE server the proxy forwards to.
    pub upstream_address: String,
    /// Whether upstream certificates go unchecked (`--upstream-insecure`,
    /// for tests only).
    pub upstream_insecure: bool,
    /// Channel connections, in the order they were opened.
    pub channels: Vec<ChannelReport>,
}

impl SessionReport {
    /// Writes the report to `path` atomically (temporary file, then rename).
    ///
    /// # Errors
    /// The I/O error of the write or rename.
    pub fn write_to(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        let mut text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        text.push('\n');
        let written = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path));
        if written.is_err() {
            // A partial temporary file (a full disk) is not left behind.
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }
}

/// One channel connection.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelReport {
    /// Channel type name (`main`, `display`, ...).
    #[serde(rename = "type")]
    pub type_name: String,
    /// Channel type number (`SPICE_CHANNEL_*`).
    pub type_number: u8,
    /// Channel id.
    pub channel_id: u8,
    /// `connection_id` of the client's `SpiceLinkMess`.
    pub connection_id: u32,
    /// Client address of this connection.
    pub client_address: String,
    /// File name of its pcap, relative to the session folder.
    pub pcap: Option<String>,
    /// When the connection was accepted (RFC 3339, UTC).
    pub opened: String,
    /// When it closed; `null` while open.
    pub closed: Option<String>,
    /// Negotiated message header kind; `null` when the link stage did not
    /// complete.
    pub header_kind: Option<HeaderKind>,
    /// Auth mechanism the client selected (`SPICE_AUTH_SPICE`,
    /// `SPICE_AUTH_SASL`), `null` without auth selection.
    pub auth_mechanism: Option<String>,
    /// Link error the server answered, if not OK (`SPICE_LINK_ERR_*`), in
    /// the link reply or the link result.
    pub link_error: Option<String>,
    /// TLS parameters of the client leg; `null` for plain TCP.
    pub client_tls: Option<TlsInfo>,
    /// Upstream address this channel was connected to.
    pub upstream_address: Option<String>,
    /// TLS parameters of the upstream leg; `null` for plain TCP.
    pub upstream_tls: Option<TlsInfo>,
    /// Whether the server refused the plain leg with NEED_SECURED and
    /// spicetap reconnected over TLS (`--upstream-tls-channels auto`).
    pub upstream_upgraded_to_tls: bool,
    /// A link refusal spicetap sent itself without contacting the server.
    pub answered_by_proxy: Option<String>,
    /// `passthrough` (the ticket crosses unchanged) or `tokens`.
    pub auth_mode: String,
    /// Token mode: the target (VM) the token led to.
    pub target: Option<String>,
    /// Token mode: why authentication was denied.
    pub denied: Option<String>,
    /// Token mode: caps removed from the link message sent to the VM.
    pub caps_removed_upstream: Vec<String>,
    /// Token mode: the VM's own caps (`server_caps` are those advertised to
    /// the client).
    pub vm_caps: Option<CapsReport>,
    /// Token mode: where the advertised caps differ from the VM's.
    pub caps_differences: Vec<String>,
    /// Token mode: `SPICE_MSG_MAIN_MIGRATE_*` messages not passed to the
    /// client.
    pub migrate_messages_withheld: Option<u64>,
    /// `--usb-disk`: channels taken out of the `SPICE_MSG_MAIN_CHANNELS_LIST`
    /// the client received (spicetap links them itself), e.g. `usbredir 1`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub channels_withheld: Vec<String>,
    /// Caps the client sent.
    pub client_caps: CapsReport,
    /// Caps the server answered.
    pub server_caps: CapsReport,
    /// Traffic from client to server.
    pub client_to_server: DirectionReport,
    /// Traffic from server to client.
    pub server_to_client: DirectionReport,
    /// How the connection ended.
    pub end: Option<EndReport>,
    /// Why the capture of this channel is incomplete, if it is.
    pub capture_loss: Option<String>,
    /// Display channels: what the renderer did (and the video it wrote).
    pub render: Option<serde_json::Value>,
    /// usbredir channels: what the usbredir decoder saw (devices,
    /// transfers, mass storage) and its usbmon pcap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usbredir: Option<serde_json::Value>,
    /// Port and webdav channels: what the port decoder saw (port name,
    /// open/close events, folder sharing's HTTP requests and responses).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<serde_json::Value>,
    /// Cursor channels: the pointer shapes seen (type, size, hot spot,
    /// uses), cursor messages by name, mouse mode changes, visible time,
    /// errors (`render::cursor::CursorReport`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<serde_json::Value>,
}

impl ChannelReport {
    /// A report for a channel that has just linked: no traffic yet.
    pub fn new(
        channel_type: ChannelType,
        channel_id: u8,
        connection_id: u32,
        client: String,
        opened: OffsetDateTime,
    ) -> Self {
        Self {
            type_name: channel_type.name().into_owned(),
            type_number: channel_type.0,
            channel_id,
            connection_id,
            client_address: client,
            pcap: None,
            opened: rfc3339(opened),
            closed: None,
            header_kind: None,
            client_tls: None,
            upstream_address: None,
            upstream_tls: None,
            upstream_upgraded_to_tls: false,
            answered_by_proxy: None,
            auth_mode: "passthrough".into(),
            target: None,
            denied: None,
            caps_removed_upstream: Vec::new(),
            vm_caps: None,
            caps_differences: Vec::new(),
            migrate_messages_withheld: None,
            channels_withheld: Vec::new(),
            auth_mechanism: None,
            link_error: None,
            client_caps: CapsReport::default(),
            server_caps: CapsReport::default(),
            client_to_server: DirectionReport::default(),
            server_to_client: DirectionReport::default(),
            end: None,
            capture_loss: None,
            render: None,
            usbredir: None,
            port: None,
            cursor: None,
        }
    }
}

/// Caps of one side, decoded to spice-protocol names.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CapsReport {
    /// Raw common caps words.
    pub common_words: Vec<u32>,
    /// Raw channel caps words.
    pub channel_words: Vec<u32>,
    /// Names of the common caps set.
    pub common: Vec<String>,
    /// Names of the channel caps set.
    pub channel: Vec<String>,
}

impl CapsReport {
    /// Decodes `caps` of a `channel_type` channel.
    pub fn new(channel_type: ChannelType, caps: &Caps) -> Self {
        Self {
            common_words: caps.common.clone(),
            channel_words: caps.channel.clone(),
            common: common_cap_names(&caps.common),
            channel: channel_cap_names_of(channel_type, &caps.channel),
        }
    }
}

/// Traffic in one direction.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DirectionReport {
    /// Bytes forwarded, link stage included.
    pub bytes: u64,
    /// Messages after the link stage.
    pub messages: u64,
    /// Message count by spice-protocol name.
    pub histogram: BTreeMap<String, u64>,
}

impl DirectionReport {
    /// Builds a report from raw counts keyed by message type.
    pub fn from_counts(
        channel_type: ChannelType,
        dir: Direction,
        bytes: u64,
        counts: &std::collections::HashMap<u16, u64>,
    ) -> Self {
        let histogram = counts.iter().map(|(ty, n)| (message_name(channel_type, dir, *ty).into_owned(), *n)).collect();
        Self { bytes, messages: counts.values().sum(), histogram }
    }
}

/// How a channel connection ended.
#[derive(Debug, Clone, Serialize)]
pub struct EndReport {
    /// `client_closed`, `server_closed`, `link_failed`, `error`,
    /// `message_too_large` or `proxy_shutdown`.
    pub reason: String,
    /// Details for errors.
    pub error: Option<String>,
}

/// Formats a time as RFC 3339 in UTC.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.unix_timestamp().to_string())
}

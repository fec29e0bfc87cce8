//! What every channel spicetap links itself has in common: the link stage
//! as a SPICE client, message headers, the housekeeping a client owes the
//! server (PING, SET_ACK), SpiceVMC data out, and the record of every byte
//! in the session tap.
//!
//! ```text
//! SpiceLinkHeader + SpiceLinkMess (connection_id = session id) ──>
//!                                      <── SpiceLinkReply (RSA key, caps)
//! auth mechanism (SPICE ticket), encrypted ticket ──>
//!                                      <── link result
//! SPICE_MSGC_SPICEVMC_DATA ──>         <── SPICE_MSG_SPICEVMC_DATA / COMPRESSED_DATA
//! SPICE_MSGC_PONG, ACK_SYNC, ACK ──>   <── SPICE_MSG_PING, SET_ACK
//! ```
//! (spice-protocol `protocol.h`, `enums.h`; spice `server/reds.cpp` needs
//! a fresh ticket per link, encrypted to that link's one-time key.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use bytes::Bytes;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::auth::ticket::encrypt_ticket;
use crate::limits::MAX_LINK_SIZE;
use crate::link::{Caps, HeaderKind, LinkHeader, LinkReply, auth_selection};
use crate::protocol::{
    ChannelType, Direction, LinkErr, SPICE_AUTH_SPICE, SPICE_COMMON_CAP_AUTH_SPICE, SPICE_COMMON_CAP_MINI_HEADER,
    SPICE_COMMON_CAP_PROTOCOL_AUTH_SELECTION, SPICE_TICKET_PUBKEY_BYTES,
};
use crate::tap::ChannelTap;

/// `SPICE_MSG_SET_ACK`, `SPICE_MSG_PING` (common server messages).
const MSG_SET_ACK: u16 = 3;
const MSG_PING: u16 = 4;
/// `SPICE_MSGC_ACK_SYNC`, `SPICE_MSGC_ACK`, `SPICE_MSGC_PONG`.
const MSGC_ACK_SYNC: u16 = 1;
const MSGC_ACK: u16 = 2;
const MSGC_PONG: u16 = 3;
/// `SPICE_MSGC_SPICEVMC_DATA`.
pub const MSGC_SPICEVMC_DATA: u16 = 101;
/// Largest SpiceVMC message spicetap sends (the carried protocols span
/// messages, so any split is fine).
pub const MAX_VMC_MESSAGE: usize = 64 * 1024;

/// Why an injected channel ended early.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum InjectError {
    /// Reading or writing the server failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The server refused the link.
    #[error("server refused the channel: {0}")]
    Refused(LinkErr),
    /// The server's link reply could not be read.
    #[error("bad link reply: {0}")]
    BadReply(String),
    /// The image is attached read-write by another session.
    #[error("{0} is attached read-write by another session")]
    ImageBusy(String),
    /// The image could not be opened.
    #[error("image: {0}")]
    Image(String),
    /// The shared folder cannot be served.
    #[error("shared folder: {0}")]
    Share(String),
    /// The carried protocol broke its rules, or a SPICE header was absurd.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The link stage took longer than `LINK_TIMEOUT`.
    #[error("link stage timed out")]
    Timeout,
}

/// Byte counts of an injected channel, link stage included; shared by its
/// tasks.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Bytes spicetap sent to the server.
    pub to_server: AtomicU64,
    /// Bytes the server sent.
    pub from_server: AtomicU64,
}

impl Traffic {
    fn add(&self, dir: Direction, n: usize) {
        let c = if dir == Direction::ClientToServer { &self.to_server } else { &self.from_server };
        c.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Counts every byte of an injected channel and hands it to the channel's
/// tap (when the session records), as the relay does for a client's.
#[derive(Debug, Clone)]
pub struct Recorder {
    tap: Option<Arc<Mutex<ChannelTap>>>,
    traffic: Arc<Traffic>,
}

impl Recorder {
    /// A recorder into `tap`, counting into `traffic`.
    pub fn new(tap: Option<Arc<Mutex<ChannelTap>>>, traffic: Arc<Traffic>) -> Self {
        Self { tap, traffic }
    }

    /// A link-stage piece.
    pub fn link(&self, dir: Direction, bytes: &[u8]) {
        self.traffic.add(dir, bytes.len());
        if let Some(t) = &self.tap {
            t.lock().unwrap_or_else(PoisonError::into_inner).link(
                dir,
                SystemTime::now(),
                Bytes::copy_from_slice(bytes),
            );
        }
    }

    /// The link stage is over; messages follow with headers of `kind`.
    pub fn start_messages(&self, kind: HeaderKind) {
        if let Some(t) = &self.tap {
            t.lock().unwrap_or_else(PoisonError::into_inner).start_messages(Some(kind));
        }
    }

    /// Bytes after the link stage.
    pub fn data(&self, dir: Direction, bytes: &[u8]) {
        self.traffic.add(dir, bytes.len());
        if let Some(t) = &self.tap {
            t.lock().unwrap_or_else(PoisonError::into_inner).data(
                dir,
                SystemTime::now(),
                Bytes::copy_from_slice(bytes),
            );
        }
    }
}

/// The link stage as a client of channel (`channel_type`, `channel_id`) in
/// session `session_id`, with channel caps `channel_caps` and the server's
/// `password` (none: an empty one, as spice-gtk sends without a password);
/// returns the negotiated header kind. Call within `LINK_TIMEOUT`.
///
/// # Errors
/// [`InjectError`] for an I/O error, an unreadable reply or a refusal.
pub async fn link<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    session_id: u32,
    channel_type: ChannelType,
    channel_id: u8,
    channel_caps: &[u32],
    password: Option<&[u8]>,
    record: &Recorder,
) -> Result<HeaderKind, InjectError> {
    let common = 1u32 << SPICE_COMMON_CAP_PROTOCOL_AUTH_SELECTION
        | 1 << SPICE_COMMON_CAP_AUTH_SPICE
        | 1 << SPICE_COMMON_CAP_MINI_HEADER;
    let ours = Caps { common: vec![common], channel: channel_caps.to_vec() };
    // SpiceLinkMess: connection id, type, id, caps counts, caps offset (18),
    // then the caps words.
    let mut mess = session_id.to_le_bytes().to_vec();
    mess.push(channel_type.0);
    mess.push(channel_id);
    for v in [1u32, channel_caps.len() as u32, 18] {
        mess.extend_from_slice(&v.to_le_bytes());
    }
    mess.extend_from_slice(&common.to_le_bytes());
    for w in channel_caps {
        mess.extend_from_slice(&w.to_le_bytes());
    }
    let mut out = b"REDQ".to_vec();
    for v in [2u32, 2, mess.len() as u32] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&mess);
    stream.write_all(&out).await?;
    record.link(Direction::ClientToServer, &out);

    let mut head = [0u8; LinkHeader::SIZE];
    stream.read_exact(&mut head).await?;
    let h = LinkHeader::parse(&head, 4).map_err(|e| InjectError::BadReply(e.to_string()))?;
    if h.size > MAX_LINK_SIZE {
        return Err(InjectError::BadReply(format!("reply of {} bytes", h.size)));
    }
    let mut body = vec![0u8; h.size as usize];
    stream.read_exact(&mut body).await?;
    record.link(Direction::ServerToClient, &[&head[..], &body[..]].concat());
    let reply = LinkReply::parse(&body).map_err(|e| InjectError::BadReply(e.to_string()))?;
    if reply.error != LinkErr::OK {
        return Err(InjectError::Refused(reply.error));
    }
    let key = body.get(4..4 + SPICE_TICKET_PUBKEY_BYTES).ok_or_else(|| InjectError::BadReply("short".into()))?;
    let ticket = encrypt_ticket(key, password.unwrap_or(b"")).map_err(|e| InjectError::BadReply(e.to_string()))?;
    let mut auth = Vec::new();
    if auth_selection(&ours, &reply.caps) {
        auth.extend_from_slice(&SPICE_AUTH_SPICE.to_le_bytes());
    }
    auth.extend_from_slice(&ticket);
    stream.write_all(&auth).await?;
    record.link(Direction::ClientToServer, &auth);
    let mut result = [0u8; 4];
    stream.read_exact(&mut result).await?;
    record.link(Direction::ServerToClient, &result);
    let result = LinkErr(u32::from_le_bytes(result));
    if result != LinkErr::OK {
        return Err(InjectError::Refused(result));
    }
    let kind = HeaderKind::negotiate(&ours, &reply.caps);
    record.start_messages(kind);
    Ok(kind)
}

/// One SPICE message from spicetap (the client side), with the header
/// `kind`; `serial` counts full headers' serials.
pub fn message(kind: HeaderKind, serial: &mut u64, msg_type: u16, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(18 + body.len());
    if kind == HeaderKind::Full {
        *serial += 1;
        m.extend_from_slice(&serial.to_le_bytes());
    }
    m.extend_from_slice(&msg_type.to_le_bytes());
    m.extend_from_slice(&(body.len() as u32).to_le_bytes());
    if kind == HeaderKind::Full {
        m.extend_from_slice(&0u32.to_le_bytes());
    }
    m.extend_from_slice(body);
    m
}

/// Sends `data` as SpiceVMC data messages of at most [`MAX_VMC_MESSAGE`]
/// bytes.
///
/// # Errors
/// The stream's write error.
pub async fn send_vmc<S: AsyncWrite + Unpin>(
    stream: &mut S,
    kind: HeaderKind,
    serial: &mut u64,
    data: &[u8],
    record: &Recorder,
) -> Result<(), InjectError> {
    for piece in data.chunks(MAX_VMC_MESSAGE) {
        let m = message(kind, serial, MSGC_SPICEVMC_DATA, piece);
        stream.write_all(&m).await?;
        record.data(Direction::ClientToServer, &m);
    }
    Ok(())
}

/// The client's housekeeping on a channel: PONG for PING, ACK_SYNC for
/// SET_ACK and an ACK every window of messages (spice-gtk
/// `spice-channel.c`; SpiceVMC channels get no SET_ACK from spice-server,
/// but a client answers one if it comes).
#[derive(Debug, Default)]
pub struct Housekeeping {
    /// (window, messages since the last ACK).
    ack: Option<(u32, u32)>,
}

impl Housekeeping {
    /// Notes one server message; returns the replies it calls for (message
    /// type and body) and whether it was housekeeping (nothing else to do
    /// with it).
    pub fn on_message(&mut self, msg_type: u16, body: &[u8]) -> (Vec<(u16, Vec<u8>)>, bool) {
        let mut replies = Vec::new();
        if let Some((window, count)) = &mut self.ack {
            *count += 1;
            if *count >= *window {
                *count = 0;
                replies.push((MSGC_ACK, Vec::new()));
            }
        }
        let handled = match msg_type {
            MSG_PING => {
                replies.push((MSGC_PONG, body.to_vec()));
                true
            }
            MSG_SET_ACK if body.len() >= 8 => {
                let window = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
                self.ack = (window > 0).then_some((window, 0));
                replies.push((MSGC_ACK_SYNC, body[..4].to_vec()));
                true
            }
            _ => false,
        };
        (replies, handled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_the_negotiated_header() {
        let mut serial = 0;
        assert_eq!(message(HeaderKind::Mini, &mut serial, 101, &[7]), [101, 0, 1, 0, 0, 0, 7]);
        let full = message(HeaderKind::Full, &mut serial, 101, &[7]);
        assert_eq!(full.len(), 18 + 1);
        assert_eq!(&full[..8], &1u64.to_le_bytes());
    }

    #[test]
    fn ping_and_set_ack_are_answered_and_acks_counted() {
        let mut h = Housekeeping::default();
        assert_eq!(h.on_message(MSG_PING, b"abc"), (vec![(MSGC_PONG, b"abc".to_vec())], true));
        let mut set_ack = 7u32.to_le_bytes().to_vec();
        set_ack.extend(2u32.to_le_bytes());
        assert_eq!(h.on_message(MSG_SET_ACK, &set_ack), (vec![(MSGC_ACK_SYNC, 7u32.to_le_bytes().to_vec())], true));
        assert_eq!(h.on_message(101, b""), (vec![], false));
        assert_eq!(h.on_message(101, b""), (vec![(MSGC_ACK, vec![])], false));
        // A short SET_ACK is not housekeeping.
        assert!(!h.on_message(MSG_SET_ACK, &[1]).1);
    }
}

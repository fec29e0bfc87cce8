//! The usbredir channel spicetap opens itself in a client's session to
//! attach the virtual disk (`--usb-disk`): it links the channel to the
//! server as a SPICE client would, then plays the usb-host over it.
//!
//! ```text
//! SpiceLinkHeader + SpiceLinkMess (connection_id = session id, type 9) ──>
//!                                      <── SpiceLinkReply (RSA key, caps)
//! auth mechanism (SPICE ticket), encrypted ticket ──>
//!                                      <── link result
//! SPICE_MSGC_SPICEVMC_DATA (usbredir from UsbHost) ──>
//!                                      <── SPICE_MSG_SPICEVMC_DATA / COMPRESSED_DATA (usbredir to UsbHost)
//!                                      <── SPICE_MSG_PING, SET_ACK (answered)
//! ```
//! (spice-protocol `protocol.h`, `enums.h`; spice `server/reds.cpp` needs
//! a fresh ticket per link, encrypted to that link's one-time key.)
//!
//! Every byte it exchanges goes to the session tap like a client's
//! channel, so the channel's pcap, usbmon pcap and `session.json` show what
//! the guest did with the disk.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use bytes::Bytes;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::usb_host::UsbHost;
use crate::auth::ticket::encrypt_ticket;
use crate::framing::MessageAssembler;
use crate::limits::{LINK_TIMEOUT, MAX_LINK_SIZE};
use crate::link::{Caps, HeaderKind, LinkHeader, LinkReply, auth_selection};
use crate::port::vmc_payload;
use crate::protocol::{
    ChannelType, Direction, LinkErr, SPICE_AUTH_SPICE, SPICE_COMMON_CAP_AUTH_SPICE, SPICE_COMMON_CAP_MINI_HEADER,
    SPICE_COMMON_CAP_PROTOCOL_AUTH_SELECTION, SPICE_TICKET_PUBKEY_BYTES,
};
use crate::tap::ChannelTap;
use crate::usb_disk::{BulkOnlyDisk, FileStorage};

/// `SPICE_MSG_SET_ACK`, `SPICE_MSG_PING` (common server messages).
const MSG_SET_ACK: u16 = 3;
const MSG_PING: u16 = 4;
/// `SPICE_MSGC_ACK_SYNC`, `SPICE_MSGC_ACK`, `SPICE_MSGC_PONG`.
const MSGC_ACK_SYNC: u16 = 1;
const MSGC_ACK: u16 = 2;
const MSGC_PONG: u16 = 3;
/// `SPICE_MSGC_SPICEVMC_DATA`.
const MSGC_SPICEVMC_DATA: u16 = 101;
/// Largest SpiceVMC message spicetap sends (usbredir packets span
/// messages, so any split is fine).
const MAX_VMC_MESSAGE: usize = 64 * 1024;

/// The disk to attach.
#[derive(Debug, Clone)]
pub struct UsbDiskConfig {
    /// The raw image.
    pub path: PathBuf,
    /// Attach it read-only (`--usb-disk-ro`).
    pub read_only: bool,
    /// The server's SPICE password (`--upstream-password-file`), if it
    /// has one.
    pub password: Option<Vec<u8>>,
}

impl UsbDiskConfig {
    /// Checks the image can be used: it exists, opens (read-only or
    /// read-write as asked) and holds a whole number of 512-byte blocks.
    ///
    /// # Errors
    /// A message saying what is wrong with the image.
    pub fn check(&self) -> Result<u64, String> {
        FileStorage::open(&self.path, self.read_only)
            .map(|f| crate::usb_disk::Storage::size(&f))
            .map_err(|e| format!("--usb-disk {}: {e}", self.path.display()))
    }
}

/// Why the injected channel ended early.
#[derive(Debug, Error)]
pub enum InjectError {
    /// Reading or writing the server failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The server refused the link.
    #[error("server refused the usbredir channel: {0}")]
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
    /// The guest's usbredir stream broke the protocol, or a SPICE header
    /// was absurd.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The link stage took longer than `LINK_TIMEOUT`.
    #[error("link stage timed out")]
    Timeout,
}

/// Byte counts of the injected channel.
#[derive(Debug, Default, Clone, Copy)]
pub struct Traffic {
    /// Bytes spicetap sent to the server (link stage included).
    pub to_server: u64,
    /// Bytes the server sent (link stage included).
    pub from_server: u64,
}

/// Read-write images attached now (one session at a time each).
static IN_USE: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// Holds a read-write image for one session.
struct ImageLock(PathBuf);

impl ImageLock {
    fn take(path: &Path) -> Option<Self> {
        let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let inserted =
            IN_USE.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert_with(HashSet::new).insert(key.clone());
        // Built only when taken: a lock dropped here would free the image
        // (and take the set's mutex again).
        if inserted { Some(Self(key)) } else { None }
    }
}

impl Drop for ImageLock {
    fn drop(&mut self) {
        if let Some(set) = IN_USE.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
            set.remove(&self.0);
        }
    }
}

/// Links usbredir channel `channel_id` of session `session_id` over
/// `stream` and serves the disk until `stop` turns true or the server
/// closes. Every byte goes to `tap` (already pending for this channel;
/// `attach` is the caller's). `traffic` is kept current.
///
/// # Errors
/// [`InjectError`] for a refused link, an unusable image, or a broken
/// stream.
pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    session_id: u32,
    channel_id: u8,
    disk: &UsbDiskConfig,
    tap: Option<&Mutex<ChannelTap>>,
    traffic: &mut Traffic,
    mut stop: watch::Receiver<bool>,
) -> Result<(), InjectError> {
    let _lock = if disk.read_only {
        None
    } else {
        Some(ImageLock::take(&disk.path).ok_or_else(|| InjectError::ImageBusy(disk.path.display().to_string()))?)
    };
    let storage = FileStorage::open(&disk.path, disk.read_only).map_err(|e| InjectError::Image(e.to_string()))?;
    let serial = format!("{session_id:08X}{channel_id:02X}");
    let mut host = UsbHost::new(BulkOnlyDisk::new(storage, disk.read_only, &serial), &serial);

    let record = |dir: Direction, bytes: &[u8], link: bool| {
        if let Some(t) = tap {
            let mut t = t.lock().unwrap_or_else(PoisonError::into_inner);
            let b = Bytes::copy_from_slice(bytes);
            if link {
                t.link(dir, SystemTime::now(), b);
            } else {
                t.data(dir, SystemTime::now(), b);
            }
        }
    };
    let kind = tokio::time::timeout(
        LINK_TIMEOUT,
        link(&mut stream, session_id, channel_id, disk.password.as_deref(), &record, traffic),
    )
    .await
    .map_err(|_| InjectError::Timeout)??;
    if let Some(t) = tap {
        t.lock().unwrap_or_else(PoisonError::into_inner).start_messages(Some(kind));
    }
    tracing::info!(channel_id, read_only = disk.read_only, "virtual USB disk channel linked");

    let mut assembler = MessageAssembler::new(kind);
    let mut serial_no = 0u64;
    let mut ack: Option<(u32, u32)> = None; // (window, messages since the last ACK)
    let mut buf = vec![0u8; 256 * 1024];
    // The hello goes out at once.
    send_vmc(&mut stream, kind, &mut serial_no, &host.take_output(), &record, traffic).await?;
    loop {
        let n = tokio::select! {
            r = stream.read(&mut buf) => r?,
            _ = stop.wait_for(|&s| s) => break,
        };
        if n == 0 {
            break;
        }
        traffic.from_server += n as u64;
        record(Direction::ServerToClient, &buf[..n], false);
        let messages = assembler.feed(&buf[..n]).map_err(|e| InjectError::Protocol(e.to_string()))?;
        let mut replies: Vec<(u16, Vec<u8>)> = Vec::new();
        for (header, body) in messages {
            if let Some((window, count)) = &mut ack {
                *count += 1;
                if *count >= *window {
                    *count = 0;
                    replies.push((MSGC_ACK, Vec::new()));
                }
            }
            match header.msg_type {
                MSG_PING => replies.push((MSGC_PONG, body)),
                MSG_SET_ACK if body.len() >= 8 => {
                    let generation = body[..4].to_vec();
                    let window = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
                    ack = (window > 0).then_some((window, 0));
                    replies.push((MSGC_ACK_SYNC, generation));
                }
                t => {
                    if let Some(payload) = vmc_payload(t, &body).map_err(|e| InjectError::Protocol(e.to_string()))? {
                        tokio::task::block_in_place(|| host.feed(&payload))
                            .map_err(|e| InjectError::Protocol(e.to_string()))?;
                    }
                }
            }
        }
        for (ty, body) in replies {
            let m = message(kind, &mut serial_no, ty, &body);
            stream.write_all(&m).await?;
            traffic.to_server += m.len() as u64;
            record(Direction::ClientToServer, &m, false);
        }
        send_vmc(&mut stream, kind, &mut serial_no, &host.take_output(), &record, traffic).await?;
    }
    if let Err(e) = tokio::task::block_in_place(|| host.disk().flush()) {
        tracing::error!(error = %e, "flushing the virtual disk failed");
    }
    let _ = stream.shutdown().await;
    Ok(())
}

/// The link stage as a client; returns the header kind.
async fn link<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    session_id: u32,
    channel_id: u8,
    password: Option<&[u8]>,
    record: &impl Fn(Direction, &[u8], bool),
    traffic: &mut Traffic,
) -> Result<HeaderKind, InjectError> {
    let common = 1u32 << SPICE_COMMON_CAP_PROTOCOL_AUTH_SELECTION
        | 1 << SPICE_COMMON_CAP_AUTH_SPICE
        | 1 << SPICE_COMMON_CAP_MINI_HEADER;
    let ours = Caps { common: vec![common], channel: Vec::new() };
    // SpiceLinkHeader, then SpiceLinkMess with the caps after its 18 bytes.
    let mut mess = session_id.to_le_bytes().to_vec();
    mess.push(ChannelType::USBREDIR.0);
    mess.push(channel_id);
    for v in [1u32, 0, 18] {
        mess.extend_from_slice(&v.to_le_bytes());
    }
    mess.extend_from_slice(&common.to_le_bytes());
    let mut out = b"REDQ".to_vec();
    for v in [2u32, 2, mess.len() as u32] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&mess);
    stream.write_all(&out).await?;
    traffic.to_server += out.len() as u64;
    record(Direction::ClientToServer, &out, true);

    let mut head = [0u8; LinkHeader::SIZE];
    stream.read_exact(&mut head).await?;
    let h = LinkHeader::parse(&head, 4).map_err(|e| InjectError::BadReply(e.to_string()))?;
    if h.size > MAX_LINK_SIZE {
        return Err(InjectError::BadReply(format!("reply of {} bytes", h.size)));
    }
    let mut body = vec![0u8; h.size as usize];
    stream.read_exact(&mut body).await?;
    traffic.from_server += (head.len() + body.len()) as u64;
    record(Direction::ServerToClient, &[&head[..], &body[..]].concat(), true);
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
    traffic.to_server += auth.len() as u64;
    record(Direction::ClientToServer, &auth, true);
    let mut result = [0u8; 4];
    stream.read_exact(&mut result).await?;
    traffic.from_server += 4;
    record(Direction::ServerToClient, &result, true);
    let result = LinkErr(u32::from_le_bytes(result));
    if result != LinkErr::OK {
        return Err(InjectError::Refused(result));
    }
    Ok(HeaderKind::negotiate(&ours, &reply.caps))
}

/// One SPICE message from spicetap (the client side).
fn message(kind: HeaderKind, serial: &mut u64, msg_type: u16, body: &[u8]) -> Vec<u8> {
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

/// Sends usbredir bytes as SpiceVMC data messages of at most 64 KiB.
async fn send_vmc<S: AsyncWrite + Unpin>(
    stream: &mut S,
    kind: HeaderKind,
    serial: &mut u64,
    data: &[u8],
    record: &impl Fn(Direction, &[u8], bool),
    traffic: &mut Traffic,
) -> Result<(), InjectError> {
    for piece in data.chunks(MAX_VMC_MESSAGE) {
        let m = message(kind, serial, MSGC_SPICEVMC_DATA, piece);
        stream.write_all(&m).await?;
        traffic.to_server += m.len() as u64;
        record(Direction::ClientToServer, &m, false);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_write_image_serves_one_session_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        std::fs::write(&path, vec![0u8; 1024]).unwrap();
        let first = ImageLock::take(&path).expect("free");
        assert!(ImageLock::take(&path).is_none(), "a second read-write attach is refused");
        drop(first);
        assert!(ImageLock::take(&path).is_some(), "free again once the first session ends");
    }

    #[test]
    fn images_that_are_not_whole_blocks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("odd.img");
        std::fs::write(&path, vec![0u8; 1000]).unwrap();
        let config = UsbDiskConfig { path: path.clone(), read_only: true, password: None };
        assert!(config.check().unwrap_err().contains("not a non-zero multiple of 512"));
        std::fs::write(&path, vec![0u8; 2048]).unwrap();
        assert_eq!(config.check(), Ok(2048));
        let missing = UsbDiskConfig { path: dir.path().join("none.img"), read_only: false, password: None };
        assert!(missing.check().is_err());
    }

    #[test]
    fn messages_have_the_negotiated_header() {
        let mut serial = 0;
        assert_eq!(message(HeaderKind::Mini, &mut serial, 101, &[7]), [101, 0, 1, 0, 0, 0, 7]);
        let full = message(HeaderKind::Full, &mut serial, 101, &[7]);
        assert_eq!(full.len(), 18 + 1);
        assert_eq!(&full[..8], &1u64.to_le_bytes());
    }
}

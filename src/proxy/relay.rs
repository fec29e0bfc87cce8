//! One direction of a channel: read a chunk, show it to the observer, write
//! it on. No message-sized buffering, no reordering, no changes.
//!
//! ```text
//! from.read_buf ──chunk (Bytes)──> Observer::observe ──> to.write_all
//!                                    │ framer (headers only), counters,
//!                                    │ MAIN_INIT session id,
//!                                    └ capture queue (try-send, never waits)
//! ```
//!
//! The read buffer is [`RELAY_BUFFER_SIZE`] bytes; when no observer keeps a
//! chunk, the same allocation is reused for the next read. A slow reader on
//! the far side blocks `write_all`, so this direction stops reading: TCP
//! back-pressure passes through the proxy as it would without it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::watch;

use super::io::BoxedStream;
use crate::framing::{Frame, Framer, FramingError};
use crate::limits::{RELAY_BUFFER_SIZE, SHUTDOWN_WRITE_GRACE};
use crate::link::HeaderKind;
use crate::protocol::{ChannelType, Direction, SPICE_MSG_MAIN_INIT, message_name};
use crate::tap::ChannelTap;

/// Called once with the session id found in `SPICE_MSG_MAIN_INIT`.
pub type SessionIdHook = Box<dyn FnMut(u32) + Send>;

/// What one direction sees of the stream, inline on the forwarding path.
pub struct Observer {
    channel_type: ChannelType,
    dir: Direction,
    framer: Option<Framer>,
    /// Bytes forwarded after the link stage.
    pub bytes: u64,
    /// Messages by type.
    pub counts: HashMap<u16, u64>,
    capture: Option<Arc<Mutex<ChannelTap>>>,
    main_init: Option<MainInitSniffer>,
    debug: bool,
    /// Bytes so far, for `--http` (one relaxed add per chunk).
    live: Option<Arc<std::sync::atomic::AtomicU64>>,
}

impl Observer {
    /// An observer of `dir` on a `channel_type` channel. `framing` is `None`
    /// for a stream that cannot be framed (SASL). `capture` receives the
    /// chunks when recording. `on_session_id` is for the server-to-client
    /// direction of a main channel. `debug` logs every message header.
    pub fn new(
        channel_type: ChannelType,
        dir: Direction,
        framing: Option<Framer>,
        capture: Option<Arc<Mutex<ChannelTap>>>,
        on_session_id: Option<SessionIdHook>,
        debug: bool,
    ) -> Self {
        let main_init = on_session_id.map(|hook| MainInitSniffer { hook: Some(hook), body: None });
        Self {
            channel_type,
            dir,
            framer: framing,
            bytes: 0,
            counts: HashMap::new(),
            capture,
            main_init,
            debug,
            live: None,
        }
    }

    /// Also counts the bytes forwarded in `live`, readable while the
    /// channel runs.
    pub fn with_live(mut self, live: Arc<std::sync::atomic::AtomicU64>) -> Self {
        self.live = Some(live);
        self
    }

    /// Looks at one chunk before it is forwarded.
    ///
    /// # Errors
    /// [`FramingError`] when a header declares an absurd size: the channel
    /// must be closed.
    pub fn observe(&mut self, chunk: &Bytes, at: SystemTime) -> Result<(), FramingError> {
        self.bytes += chunk.len() as u64;
        if let Some(live) = &self.live {
            live.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(capture) = &self.capture {
            capture.lock().unwrap_or_else(PoisonError::into_inner).data(self.dir, at, chunk.clone());
        }
        let Some(framer) = &mut self.framer else { return Ok(()) };
        let (counts, sniffer, debug) = (&mut self.counts, &mut self.main_init, self.debug);
        let (ct, dir) = (self.channel_type, self.dir);
        framer.feed(chunk, |frame| match frame {
            Frame::Header(h) => {
                *counts.entry(h.msg_type).or_insert(0) += 1;
                if debug {
                    tracing::debug!(
                        target: "spicetap::messages",
                        channel = %ct, dir = dir.label(), msg = %message_name(ct, dir, h.msg_type),
                        size = h.size, serial = h.serial, "message"
                    );
                }
                if let Some(s) = sniffer {
                    s.header(h.msg_type);
                }
            }
            Frame::Body(b) => {
                if let Some(s) = sniffer {
                    s.body(b);
                }
            }
            Frame::End { .. } => {
                if let Some(s) = sniffer {
                    s.end();
                }
            }
        })
    }
}

/// Picks the session id out of the first `SPICE_MSG_MAIN_INIT`
/// (`SpiceMsgMainInit.session_id`, the first u32 of the body).
struct MainInitSniffer {
    hook: Option<SessionIdHook>,
    body: Option<Vec<u8>>,
}

impl MainInitSniffer {
    fn header(&mut self, msg_type: u16) {
        if self.hook.is_some() && msg_type == SPICE_MSG_MAIN_INIT {
            self.body = Some(Vec::with_capacity(4));
        }
    }

    fn body(&mut self, b: &[u8]) {
        if let Some(body) = &mut self.body {
            let take = (4 - body.len()).min(b.len());
            body.extend_from_slice(&b[..take]);
            if body.len() == 4 {
                let id = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
                self.body = None;
                if let Some(mut hook) = self.hook.take() {
                    hook(id);
                }
            }
        }
    }

    fn end(&mut self) {
        // A MAIN_INIT shorter than 4 bytes carries no id.
        self.body = None;
    }
}

/// A rewrite of one message body into another (see [`MessageFilter`]).
pub type Rewrite = Box<dyn FnMut(&[u8]) -> Vec<u8> + Send>;

/// Most bytes of a message body held for a rewrite; a longer message of
/// that type passes unchanged.
const MAX_REWRITE: u32 = 64 * 1024;

/// Removes whole messages of chosen types from a stream (token mode drops
/// `SPICE_MSG_MAIN_MIGRATE_*` so a client never learns a VM's address), and
/// rewrites whole messages of one type (`--usb-disk` withholds the usbredir
/// channel spicetap links itself from `SPICE_MSG_MAIN_CHANNELS_LIST`).
///
/// A header cut across chunks is held back (at most 18 bytes) until it is
/// whole and its type known; a message to rewrite is held until whole (at
/// most 64 KiB); everything else passes at once.
pub struct MessageFilter {
    kind: HeaderKind,
    drop: fn(u16) -> bool,
    rewrite: Option<(u16, Rewrite)>,
    header: Vec<u8>,
    body_left: u32,
    dropping: bool,
    /// The header and body gathered of a message to rewrite.
    held: Option<(Vec<u8>, Vec<u8>)>,
    /// Messages removed so far.
    pub dropped: u64,
    /// Messages rewritten so far.
    pub rewritten: u64,
}

impl MessageFilter {
    /// A filter for headers of `kind` removing messages whose type `drop`
    /// selects.
    pub fn new(kind: HeaderKind, drop: fn(u16) -> bool) -> Self {
        Self {
            kind,
            drop,
            rewrite: None,
            header: Vec::with_capacity(18),
            body_left: 0,
            dropping: false,
            held: None,
            dropped: 0,
            rewritten: 0,
        }
    }

    /// Also passes every message of type `msg_type` (without a sub-message
    /// list, at most 64 KiB) through `rewrite`.
    pub fn with_rewrite(mut self, msg_type: u16, rewrite: Rewrite) -> Self {
        self.rewrite = Some((msg_type, rewrite));
        self
    }

    /// Appends to `out` the bytes of `chunk` that go on.
    ///
    /// # Errors
    /// [`FramingError::TooLarge`] for a header over the size bound.
    pub fn apply(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), FramingError> {
        let hsize = self.kind.size();
        let (ty_at, size_at) = match self.kind {
            HeaderKind::Mini => (0, 2),
            HeaderKind::Full => (8, 10),
        };
        let mut pos = 0;
        while pos < chunk.len() {
            if self.body_left > 0 {
                let take = usize::try_from(self.body_left).map_or(chunk.len() - pos, |l| l.min(chunk.len() - pos));
                let piece = &chunk[pos..pos + take];
                if let Some((_, body)) = &mut self.held {
                    body.extend_from_slice(piece);
                } else if !self.dropping {
                    out.extend_from_slice(piece);
                }
                pos += take;
                // take <= body_left
                self.body_left -= take as u32;
                if self.body_left == 0 {
                    self.release(out, size_at);
                }
                continue;
            }
            let take = (hsize - self.header.len()).min(chunk.len() - pos);
            self.header.extend_from_slice(&chunk[pos..pos + take]);
            pos += take;
            if self.header.len() < hsize {
                break;
            }
            let msg_type = u16::from_le_bytes([self.header[ty_at], self.header[ty_at + 1]]);
            let h = &self.header[size_at..size_at + 4];
            let size = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
            if size > crate::limits::MAX_MESSAGE_SIZE {
                return Err(FramingError::TooLarge { msg_type, declared: size, max: crate::limits::MAX_MESSAGE_SIZE });
            }
            self.dropping = (self.drop)(msg_type);
            let sub_list = self.kind == HeaderKind::Full && self.header[14..18] != [0, 0, 0, 0];
            let rewrite =
                self.rewrite.as_ref().is_some_and(|(t, _)| *t == msg_type) && size <= MAX_REWRITE && !sub_list;
            if self.dropping {
                self.dropped += 1;
                tracing::info!(msg_type, "message withheld from the client");
            } else if rewrite {
                self.held = Some((self.header.clone(), Vec::with_capacity(size as usize)));
            } else {
                out.extend_from_slice(&self.header);
            }
            self.header.clear();
            self.body_left = size;
            if size == 0 && self.held.is_some() {
                self.release(out, size_at);
            }
        }
        Ok(())
    }

    /// Rewrites a held message and sends it on with its new size.
    fn release(&mut self, out: &mut Vec<u8>, size_at: usize) {
        let Some((mut header, body)) = self.held.take() else { return };
        let Some((_, rewrite)) = self.rewrite.as_mut() else { return };
        let body = rewrite(&body);
        self.rewritten += 1;
        header[size_at..size_at + 4].copy_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&body);
    }
}

/// How one direction ended.
#[derive(Debug)]
pub enum RelayEnd {
    /// The reading side closed its stream; the write side was shut down.
    Eof,
    /// The reading side reset the connection (a client that quits with
    /// unread data, as `spicy-screenshot` does, resets it).
    Reset,
    /// The proxy is stopping.
    Shutdown,
    /// Reading or writing failed.
    Failed(String),
    /// A header declared an absurd size (the chunk holding it was
    /// forwarded, as it was captured).
    TooLarge(FramingError),
}

/// Relays `from` to `to` until end of stream, error or shutdown.
pub async fn relay(
    mut from: ReadHalf<BoxedStream>,
    mut to: WriteHalf<BoxedStream>,
    observer: &mut Observer,
    mut filter: Option<&mut MessageFilter>,
    mut shutdown: watch::Receiver<bool>,
) -> RelayEnd {
    let mut buf = BytesMut::with_capacity(RELAY_BUFFER_SIZE);
    loop {
        buf.reserve(RELAY_BUFFER_SIZE);
        let read = tokio::select! {
            biased;
            () = stopping(&mut shutdown) => return RelayEnd::Shutdown,
            r = from.read_buf(&mut buf) => r,
        };
        match read {
            Ok(0) => {
                let _ = to.shutdown().await;
                return RelayEnd::Eof;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return RelayEnd::Reset,
            Err(e) => return RelayEnd::Failed(format!("read ({}): {e}", observer.dir.label())),
        }
        let mut chunk = buf.split().freeze();
        if let Some(f) = filter.as_deref_mut() {
            let mut kept = Vec::with_capacity(chunk.len());
            if let Err(e) = f.apply(&chunk, &mut kept) {
                return RelayEnd::TooLarge(e);
            }
            if kept.is_empty() {
                continue;
            }
            chunk = Bytes::from(kept);
        }
        // A chunk with an absurd header is still forwarded whole (it is
        // already in the capture: the recording matches the wire), then the
        // channel is closed.
        let observed = observer.observe(&chunk, SystemTime::now());
        let write = to.write_all(&chunk);
        tokio::pin!(write);
        let wrote = tokio::select! {
            r = &mut write => r,
            () = stopping(&mut shutdown) => {
                // Stopping: let the chunk already read reach its peer, briefly.
                let _ = tokio::time::timeout(SHUTDOWN_WRITE_GRACE, &mut write).await;
                return RelayEnd::Shutdown;
            }
        };
        if let Err(e) = wrote {
            return RelayEnd::Failed(format!("write ({}): {e}", observer.dir.label()));
        }
        if let Err(e) = observed {
            return RelayEnd::TooLarge(e);
        }
    }
}

/// Completes when the proxy stops (or its stop signal is gone).
async fn stopping(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|&stop| stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::mini;

    #[test]
    fn drop_filter_removes_whole_messages_at_any_cut() {
        let mut stream = mini(103, &[1, 2, 3, 4]);
        stream.extend(mini(101, &[9; 20])); // MIGRATE_BEGIN: dropped
        stream.extend(mini(4, &[5; 3]));
        let mut expected = mini(103, &[1, 2, 3, 4]);
        expected.extend(mini(4, &[5; 3]));
        for a in 0..=stream.len() {
            for b in a..=stream.len() {
                let mut f = MessageFilter::new(HeaderKind::Mini, |t| t == 101);
                let mut out = Vec::new();
                for (x, y) in [(0, a), (a, b), (b, stream.len())] {
                    f.apply(&stream[x..y], &mut out).unwrap();
                }
                assert_eq!(out, expected, "cuts {a} {b}");
                assert_eq!(f.dropped, 1);
            }
        }
    }

    #[test]
    fn rewrite_replaces_a_whole_message_and_its_size_at_any_cut() {
        // CHANNELS_LIST (104) with two entries; the rewrite keeps the first.
        let mut stream = mini(103, &[1, 2, 3, 4]);
        stream.extend(mini(104, &[2, 0, 0, 0, 9, 0, 9, 1]));
        stream.extend(mini(4, &[5; 3]));
        let mut expected = mini(103, &[1, 2, 3, 4]);
        expected.extend(mini(104, &[1, 0, 0, 0, 9, 0]));
        expected.extend(mini(4, &[5; 3]));
        for a in 0..=stream.len() {
            for b in a..=stream.len() {
                let rewrite: Rewrite = Box::new(|body: &[u8]| {
                    let mut out = 1u32.to_le_bytes().to_vec();
                    out.extend_from_slice(&body[4..6]);
                    out
                });
                let mut f = MessageFilter::new(HeaderKind::Mini, |_| false).with_rewrite(104, rewrite);
                let mut out = Vec::new();
                for (x, y) in [(0, a), (a, b), (b, stream.len())] {
                    f.apply(&stream[x..y], &mut out).unwrap();
                }
                assert_eq!(out, expected, "cuts {a} {b}");
                assert_eq!(f.rewritten, 1);
            }
        }
    }

    #[test]
    fn full_headers_with_sub_lists_are_not_rewritten() {
        // Full header: serial u64, type u16, size u32, sub_list u32.
        let mut m = 1u64.to_le_bytes().to_vec();
        m.extend(104u16.to_le_bytes());
        m.extend(6u32.to_le_bytes());
        m.extend(2u32.to_le_bytes());
        m.extend([1, 0, 0, 0, 9, 0]);
        let rewrite: Rewrite = Box::new(|_: &[u8]| Vec::new());
        let mut f = MessageFilter::new(HeaderKind::Full, |_| false).with_rewrite(104, rewrite);
        let mut out = Vec::new();
        f.apply(&m, &mut out).unwrap();
        assert_eq!(out, m);
    }
}

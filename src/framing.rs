//! Message framing after the link stage: mini and full data headers.
//!
//! ```text
//! SpiceMiniDataHeader  type u16, size u32                               (6 bytes)
//! SpiceDataHeader      serial u64, type u16, size u32, sub_list u32     (18 bytes)
//! followed by `size` body bytes
//! ```
//!
//! (spice-protocol `spice/protocol.h`; which header a channel uses is
//! negotiated in the link stage, see [`HeaderKind::negotiate`]).
//!
//! [`Framer`] is a sans-IO state machine that follows a byte stream chunk by
//! chunk, however the stream was cut, and reports where each message starts
//! and ends. It never copies or buffers a body: its memory is one header.
//! The relay runs it inline on every forwarded chunk; the capture writer runs
//! another over the same bytes to cut one pcap packet per message.

use thiserror::Error;

use crate::limits::MAX_MESSAGE_SIZE;
use crate::link::HeaderKind;
use crate::wire::Reader;

/// A message header as read from the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageHeader {
    /// `serial` (full header only; 0 with the mini header).
    pub serial: u64,
    /// Message type (`SPICE_MSG_*` / `SPICE_MSGC_*`).
    pub msg_type: u16,
    /// Body size in bytes.
    pub size: u32,
    /// `sub_list` offset into the body (full header only; 0 = none).
    pub sub_list: u32,
}

impl MessageHeader {
    /// Decodes a complete header of `kind` (`bytes.len() == kind.size()`).
    fn decode(kind: HeaderKind, bytes: &[u8]) -> Option<Self> {
        let mut r = Reader::new(bytes);
        let h = match kind {
            HeaderKind::Mini => Self { serial: 0, msg_type: r.u16().ok()?, size: r.u32().ok()?, sub_list: 0 },
            HeaderKind::Full => {
                Self { serial: r.u64().ok()?, msg_type: r.u16().ok()?, size: r.u32().ok()?, sub_list: r.u32().ok()? }
            }
        };
        Some(h)
    }
}

/// A message whose header the framer refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FramingError {
    /// A body size over [`MAX_MESSAGE_SIZE`].
    #[error("message type {msg_type} declares {declared} bytes, over the {max}-byte bound")]
    TooLarge {
        /// Type of the refused message.
        msg_type: u16,
        /// Size it declared.
        declared: u32,
        /// The bound.
        max: u32,
    },
}

/// What the framer found in a chunk, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole header has been read; its body follows.
    Header(MessageHeader),
    /// Part (or all) of the current message's body.
    Body(&'a [u8]),
    /// The current message ends at byte offset `at` of the chunk (exclusive).
    End {
        /// Offset just past the message's last byte, within this chunk.
        at: usize,
    },
}

/// Follows the message boundaries of one direction of a channel.
#[derive(Debug, Clone)]
pub struct Framer {
    kind: HeaderKind,
    header: [u8; 18],
    header_have: usize,
    /// Body bytes still to come of the current message; `None` while reading
    /// a header.
    body_left: Option<u32>,
    failed: Option<FramingError>,
}

impl Framer {
    /// A framer at a message boundary, for headers of `kind`.
    pub fn new(kind: HeaderKind) -> Self {
        Self { kind, header: [0; 18], header_have: 0, body_left: None, failed: None }
    }

    /// Whether the framer sits exactly between two messages.
    pub fn at_boundary(&self) -> bool {
        self.header_have == 0 && self.body_left.is_none()
    }

    /// Feeds the next chunk of the stream and calls `on` for each
    /// [`Frame`] in it, in order.
    ///
    /// # Errors
    /// [`FramingError::TooLarge`] for a header over the size bound. The
    /// framer then stays failed: the stream cannot be followed any further.
    pub fn feed<'a>(&mut self, chunk: &'a [u8], mut on: impl FnMut(Frame<'a>)) -> Result<(), FramingError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let hsize = self.kind.size();
        let mut pos = 0;
        while pos < chunk.len() {
            match self.body_left {
                None => {
                    let take = (hsize - self.header_have).min(chunk.len() - pos);
                    self.header[self.header_have..self.header_have + take].copy_from_slice(&chunk[pos..pos + take]);
                    self.header_have += take;
                    pos += take;
                    if self.header_have < hsize {
                        continue;
                    }
                    self.header_have = 0;
                    let Some(h) = MessageHeader::decode(self.kind, &self.header[..hsize]) else {
                        continue; // unreachable: the header is whole
                    };
                    if h.size > MAX_MESSAGE_SIZE {
                        let e =
                            FramingError::TooLarge { msg_type: h.msg_type, declared: h.size, max: MAX_MESSAGE_SIZE };
                        self.failed = Some(e.clone());
                        return Err(e);
                    }
                    on(Frame::Header(h));
                    if h.size == 0 {
                        on(Frame::End { at: pos });
                    } else {
                        self.body_left = Some(h.size);
                    }
                }
                Some(left) => {
                    let avail = chunk.len() - pos;
                    // `left` fits in usize on every platform spicetap builds for.
                    let take = usize::try_from(left).map_or(avail, |l| l.min(avail));
                    on(Frame::Body(&chunk[pos..pos + take]));
                    pos += take;
                    // take <= left, so this cannot underflow.
                    let rest = left - take as u32;
                    if rest == 0 {
                        self.body_left = None;
                        on(Frame::End { at: pos });
                    } else {
                        self.body_left = Some(rest);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Whole messages out of a stream cut anywhere: a [`Framer`] plus the body
/// of the message in progress (at most [`MAX_MESSAGE_SIZE`] bytes). For
/// consumers that need bodies (the renderer, replay), not the relay.
#[derive(Debug, Clone)]
pub struct MessageAssembler {
    framer: Framer,
    current: Option<(MessageHeader, Vec<u8>)>,
}

impl MessageAssembler {
    /// An assembler for headers of `kind`.
    pub fn new(kind: HeaderKind) -> Self {
        Self { framer: Framer::new(kind), current: None }
    }

    /// Feeds a chunk; returns the messages it completed, in order.
    ///
    /// # Errors
    /// [`FramingError`] as [`Framer::feed`].
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<(MessageHeader, Vec<u8>)>, FramingError> {
        let mut done = Vec::new();
        let current = &mut self.current;
        self.framer.feed(chunk, |f| match f {
            // Grows with the body actually received, not the size announced.
            Frame::Header(h) => *current = Some((h, Vec::with_capacity(h.size.min(1 << 20) as usize))),
            Frame::Body(b) => {
                if let Some((_, body)) = current {
                    body.extend_from_slice(b);
                }
            }
            Frame::End { .. } => {
                if let Some(m) = current.take() {
                    done.push(m);
                }
            }
        })?;
        Ok(done)
    }
}

/// A message with a mini header (type u16, size u32, little-endian), for
/// tests that build streams by hand.
#[cfg(test)]
pub(crate) fn mini(ty: u16, body: &[u8]) -> Vec<u8> {
    let mut v = ty.to_le_bytes().to_vec();
    v.extend_from_slice(&(body.len() as u32).to_le_bytes());
    v.extend_from_slice(body);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(serial: u64, ty: u16, body: &[u8]) -> Vec<u8> {
        let mut v = serial.to_le_bytes().to_vec();
        v.extend_from_slice(&ty.to_le_bytes());
        v.extend_from_slice(&(body.len() as u32).to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(body);
        v
    }

    /// Runs the stream through a framer cut into the given chunk sizes and
    /// returns (type, body, absolute end offset) for each message.
    fn frame_all(kind: HeaderKind, stream: &[u8], cuts: &[usize]) -> Vec<(u16, Vec<u8>, usize)> {
        let mut f = Framer::new(kind);
        let mut out: Vec<(u16, Vec<u8>, usize)> = Vec::new();
        let mut base = 0;
        let mut bounds = cuts.to_vec();
        bounds.push(stream.len());
        for end in bounds {
            let chunk = &stream[base..end];
            f.feed(chunk, |fr| match fr {
                Frame::Header(h) => out.push((h.msg_type, Vec::new(), 0)),
                Frame::Body(b) => out.last_mut().unwrap().1.extend_from_slice(b),
                Frame::End { at } => out.last_mut().unwrap().2 = base + at,
            })
            .unwrap();
            base = end;
        }
        out
    }

    #[test]
    fn mini_messages_split_at_every_byte_frame_the_same() {
        let mut stream = mini(102, &[]);
        stream.extend(mini(304, &[1, 2, 3, 4, 5]));
        stream.extend(mini(3, &[9; 8]));
        let whole = frame_all(HeaderKind::Mini, &stream, &[]);
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0], (102, vec![], 6));
        assert_eq!(whole[1], (304, vec![1, 2, 3, 4, 5], 17));
        assert_eq!(whole[2].2, stream.len());
        for a in 0..=stream.len() {
            for b in a..=stream.len() {
                assert_eq!(frame_all(HeaderKind::Mini, &stream, &[a, b]), whole, "cuts {a} {b}");
            }
        }
    }

    #[test]
    fn full_headers_carry_serial_and_sub_list() {
        let stream = full(7, 103, &[1, 0, 0, 0]);
        let mut f = Framer::new(HeaderKind::Full);
        let mut headers = Vec::new();
        f.feed(&stream, |fr| {
            if let Frame::Header(h) = fr {
                headers.push(h)
            }
        })
        .unwrap();
        assert_eq!(headers, [MessageHeader { serial: 7, msg_type: 103, size: 4, sub_list: 0 }]);
        assert!(f.at_boundary());
    }

    #[test]
    fn absurd_size_fails_and_stays_failed() {
        let mut stream = 304u16.to_le_bytes().to_vec();
        stream.extend_from_slice(&(MAX_MESSAGE_SIZE + 1).to_le_bytes());
        let mut f = Framer::new(HeaderKind::Mini);
        let e = f.feed(&stream, |_| {}).unwrap_err();
        assert!(matches!(e, FramingError::TooLarge { msg_type: 304, .. }));
        assert!(f.feed(&[0], |_| {}).is_err());
    }

    #[test]
    fn largest_allowed_body_is_followed_without_buffering() {
        let mut stream = 304u16.to_le_bytes().to_vec();
        stream.extend_from_slice(&MAX_MESSAGE_SIZE.to_le_bytes());
        let mut f = Framer::new(HeaderKind::Mini);
        f.feed(&stream, |_| {}).unwrap();
        let chunk = vec![0u8; 1 << 20];
        let mut ends = 0;
        for _ in 0..MAX_MESSAGE_SIZE / (1 << 20) {
            f.feed(&chunk, |fr| ends += matches!(fr, Frame::End { .. }) as usize).unwrap();
        }
        assert_eq!(ends, 1);
        assert!(f.at_boundary());
    }

    const QEMU_DISPLAY_S2C: &[u8] = include_bytes!("../tests/fixtures/qemu-bios-display-s2c.bin");

    #[test]
    fn recorded_qemu_display_stream_frames_at_any_cut() {
        let whole = frame_all(HeaderKind::Mini, QEMU_DISPLAY_S2C, &[]);
        let types: Vec<u16> = whole.iter().map(|m| m.0).collect();
        // SET_ACK, INVAL_ALL_PALETTES, SURFACE_CREATE, DRAW_COPY, MONITORS_CONFIG, MARK
        assert_eq!(types, [3, 108, 314, 304, 317, 102]);
        assert_eq!(whole.last().unwrap().2, QEMU_DISPLAY_S2C.len());
        for a in (0..QEMU_DISPLAY_S2C.len()).step_by(7) {
            assert_eq!(
                frame_all(HeaderKind::Mini, QEMU_DISPLAY_S2C, &[a, a + (a % 13).min(QEMU_DISPLAY_S2C.len() - a)]),
                whole
            );
        }
    }

    #[test]
    fn assembler_returns_whole_messages_at_any_cut() {
        let whole = frame_all(HeaderKind::Mini, QEMU_DISPLAY_S2C, &[]);
        for cut in (1..QEMU_DISPLAY_S2C.len()).step_by(13) {
            let mut a = MessageAssembler::new(HeaderKind::Mini);
            let mut got = a.feed(&QEMU_DISPLAY_S2C[..cut]).unwrap();
            got.extend(a.feed(&QEMU_DISPLAY_S2C[cut..]).unwrap());
            let got: Vec<_> = got.iter().map(|(h, b)| (h.msg_type, b.clone())).collect();
            let want: Vec<_> = whole.iter().map(|(t, b, _)| (*t, b.clone())).collect();
            assert_eq!(got, want, "cut {cut}");
        }
    }
}

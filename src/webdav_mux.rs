//! The multiplexing of SPICE folder sharing, sans-IO: the webdav port
//! channel (`org.spice-space.webdav.0`) carries many HTTP connections of
//! the guest's spice-webdavd (the HTTP client) to the SPICE client's phodav
//! server, each a "client" of the mux.
//!
//! ```text
//! frame  client id i64 LE, size u16 LE, size bytes
//!        size 0: that client's connection closes (either way)
//! ```
//! (spice-gtk `src/channel-webdav.c`, phodav `bin/spice-webdavd.c`.) The
//! guest picks the ids; a frame for an id that is not open opens a
//! connection; an id may be used again after its close. Frames do not line
//! up with SPICE messages, so each direction is parsed as a byte stream;
//! a frame holds at most 65535 bytes, so nothing here allocates more.

use std::collections::{HashMap, HashSet};

/// Bytes of a frame header.
pub const HEADER_LEN: usize = 10;

/// What a direction of the mux says, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MuxEvent {
    /// A new connection of client `id` (its `generation`-th use of that id,
    /// from 0), opened by a data frame in direction `from_guest`.
    Open {
        /// Client id.
        id: i64,
        /// How many connections used this id before.
        generation: u32,
    },
    /// Bytes of client `id`'s connection.
    Data {
        /// Client id.
        id: i64,
        /// Which side sent them: `true` for the guest (HTTP requests).
        from_guest: bool,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Client `id`'s connection closed (a frame of size 0).
    Close {
        /// Client id.
        id: i64,
        /// Which side closed it.
        from_guest: bool,
    },
}

/// One direction's frame parser.
#[derive(Debug, Default)]
struct Stream {
    header: Vec<u8>,
    /// The frame being read: id and bytes still due.
    body: Option<(i64, usize)>,
    data: Vec<u8>,
}

/// Both directions of a webdav channel's mux.
#[derive(Debug, Default)]
pub struct MuxDecoder {
    guest: Stream,
    client: Stream,
    /// Open connections by id.
    open: HashSet<i64>,
    /// Connections each id has had.
    generations: HashMap<i64, u32>,
}

impl MuxDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.open.len()
    }

    /// Parses bytes of the mux sent by the guest (`from_guest`) or by the
    /// SPICE client, appending what they say to `out`. Never fails: every
    /// byte sequence is a sequence of frames.
    pub fn feed(&mut self, from_guest: bool, mut bytes: &[u8], out: &mut Vec<MuxEvent>) {
        while !bytes.is_empty() {
            let st = if from_guest { &mut self.guest } else { &mut self.client };
            if let Some((id, due)) = st.body {
                let n = due.min(bytes.len());
                st.data.extend_from_slice(&bytes[..n]);
                bytes = &bytes[n..];
                if n == due {
                    st.body = None;
                    let data = std::mem::take(&mut st.data);
                    self.data(id, from_guest, data, out);
                } else {
                    st.body = Some((id, due - n));
                }
                continue;
            }
            let n = (HEADER_LEN - st.header.len()).min(bytes.len());
            st.header.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if st.header.len() < HEADER_LEN {
                return;
            }
            let h = std::mem::take(&mut st.header);
            let id = i64::from_le_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]);
            let size = usize::from(u16::from_le_bytes([h[8], h[9]]));
            if size == 0 {
                if self.open.remove(&id) {
                    out.push(MuxEvent::Close { id, from_guest });
                }
                continue;
            }
            st.data = Vec::with_capacity(size);
            st.body = Some((id, size));
        }
    }

    fn data(&mut self, id: i64, from_guest: bool, bytes: Vec<u8>, out: &mut Vec<MuxEvent>) {
        if self.open.insert(id) {
            let g = self.generations.entry(id).or_insert(0);
            out.push(MuxEvent::Open { id, generation: *g });
            *g += 1;
        }
        out.push(MuxEvent::Data { id, from_guest, bytes });
    }
}

/// One mux frame in wire form.
pub fn encode_frame(id: i64, data: &[u8]) -> Vec<u8> {
    let size = u16::try_from(data.len()).unwrap_or(u16::MAX);
    let mut v = Vec::with_capacity(HEADER_LEN + usize::from(size));
    v.extend_from_slice(&id.to_le_bytes());
    v.extend_from_slice(&size.to_le_bytes());
    v.extend_from_slice(&data[..usize::from(size)]);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> (Vec<u8>, Vec<u8>) {
        let mut guest = encode_frame(7, b"PROPFIND / HTTP/1.1\r\nDepth: 1\r\n\r\n");
        guest.extend(encode_frame(9, b"GET /a.txt HTTP/1.1\r\n\r\n"));
        guest.extend(encode_frame(7, &[]));
        // Id 7 again: a new connection.
        guest.extend(encode_frame(7, b"PUT /b HTTP/1.1\r\nContent-Length: 0\r\n\r\n"));
        let mut client = encode_frame(7, b"HTTP/1.1 207 Multi-Status\r\n\r\n");
        client.extend(encode_frame(9, b"HTTP/1.1 200 OK\r\n\r\n"));
        client.extend(encode_frame(9, &[]));
        (guest, client)
    }

    fn decode(guest: &[u8], client: &[u8], chunk: usize) -> Vec<MuxEvent> {
        let mut d = MuxDecoder::new();
        let mut out = Vec::new();
        // The guest's first two frames, the client's answers, the rest.
        let cut = HEADER_LEN * 2 + 33 + 23;
        for c in guest[..cut].chunks(chunk) {
            d.feed(true, c, &mut out);
        }
        for c in client.chunks(chunk) {
            d.feed(false, c, &mut out);
        }
        for c in guest[cut..].chunks(chunk) {
            d.feed(true, c, &mut out);
        }
        out
    }

    #[test]
    fn connections_open_carry_data_close_and_reuse_ids() {
        let (g, c) = session();
        let out = decode(&g, &c, usize::MAX);
        let kinds: Vec<String> = out
            .iter()
            .map(|e| match e {
                MuxEvent::Open { id, generation } => format!("open {id}.{generation}"),
                MuxEvent::Data { id, from_guest, bytes } => format!("data {id} {from_guest} {}", bytes.len()),
                MuxEvent::Close { id, from_guest } => format!("close {id} {from_guest}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "open 7.0",
                "data 7 true 33",
                "open 9.0",
                "data 9 true 23",
                "data 7 false 29",
                "data 9 false 19",
                "close 9 false",
                "close 7 true",
                "open 7.1",
                "data 7 true 38",
            ]
        );
    }

    #[test]
    fn any_cut_gives_the_same_events() {
        let (g, c) = session();
        let whole = decode(&g, &c, usize::MAX);
        for chunk in [1, 2, 3, 9, 10, 11, 64] {
            assert_eq!(decode(&g, &c, chunk), whole, "chunks of {chunk}");
        }
    }

    #[test]
    fn random_bytes_never_panic_and_stay_bounded() {
        let mut x: u32 = 0x1357_9bdf;
        let mut d = MuxDecoder::new();
        let mut out = Vec::new();
        for _ in 0..2000 {
            let bytes: Vec<u8> = (0..(x % 300) as usize)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            d.feed(x.is_multiple_of(2), &bytes, &mut out);
            out.clear();
        }
        assert!(d.guest.data.capacity() <= 65535 && d.client.data.capacity() <= 65535);
        // A close of an id never opened says nothing.
        let mut d = MuxDecoder::new();
        d.feed(true, &encode_frame(42, &[]), &mut out);
        assert!(out.is_empty());
    }
}

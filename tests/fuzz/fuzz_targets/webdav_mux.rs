//! The webdav mux, both directions, and HTTP/1.1 on each of its clients.
#![no_main]
use libfuzzer_sys::fuzz_target;
use spicetap::http1::Http1Connection;
use spicetap::webdav_mux::{MuxDecoder, MuxEvent};
use std::collections::HashMap;

fuzz_target!(|data: &[u8]| {
    let mut mux = MuxDecoder::new();
    let mut conns: HashMap<i64, Http1Connection> = HashMap::new();
    let mut events = Vec::new();
    let mut http = Vec::new();
    for (i, chunk) in data.chunks(97).enumerate() {
        mux.feed(i % 2 == 0, chunk, &mut events);
        for ev in events.drain(..) {
            match ev {
                MuxEvent::Open { id, .. } => {
                    if conns.len() < 64 {
                        conns.insert(id, Http1Connection::new());
                    }
                }
                MuxEvent::Data { id, from_guest, bytes } => {
                    if let Some(c) = conns.get_mut(&id)
                        && c.feed(from_guest, &bytes, &mut http).is_err()
                    {
                        conns.remove(&id);
                    }
                    http.clear();
                }
                MuxEvent::Close { id, .. } => {
                    conns.remove(&id);
                }
            }
        }
    }
});

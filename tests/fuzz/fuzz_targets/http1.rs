//! HTTP/1.1 request and response streams, cut at the first byte's size.
#![no_main]
use libfuzzer_sys::fuzz_target;
use spicetap::http1::Http1Connection;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let mut c = Http1Connection::new();
    let mut out = Vec::new();
    for (i, chunk) in rest.chunks(usize::from(first).max(1)).enumerate() {
        if c.feed(i % 3 != 2, chunk, &mut out).is_err() {
            break;
        }
        out.clear();
    }
});

//! The usbredir stream parser, both directions interleaved: each record is
//! a side byte, a length byte and that many bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use spicetap::usbredir::{Side, UsbredirDecoder};

fuzz_target!(|data: &[u8]| {
    let mut d = UsbredirDecoder::new(4096);
    let mut out = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 {
        let side = if rest[0] & 1 == 0 { Side::Guest } else { Side::Host };
        let n = usize::from(rest[1]).min(rest.len() - 2);
        if d.feed(side, &rest[2..2 + n], &mut out).is_err() {
            break;
        }
        out.clear();
        rest = &rest[2 + n..];
    }
});

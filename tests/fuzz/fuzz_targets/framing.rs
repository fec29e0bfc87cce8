//! Message framing, mini and full headers, cut anywhere: the first byte
//! picks the header kind and the chunk size.
#![no_main]
use libfuzzer_sys::fuzz_target;
use spicetap::framing::{Framer, MessageAssembler};
use spicetap::link::HeaderKind;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let kind = if first & 1 == 0 { HeaderKind::Mini } else { HeaderKind::Full };
    let chunk = usize::from(first >> 1).max(1);
    let mut framer = Framer::new(kind);
    let mut assembler = MessageAssembler::new(kind);
    for c in rest.chunks(chunk) {
        if framer.feed(c, |_| {}).is_err() {
            break;
        }
        if assembler.feed(c).is_err() {
            break;
        }
    }
});

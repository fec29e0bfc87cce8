//! The GLZ decoder with a dictionary: the input is split in two images at
//! its first byte, decoded in order into one dictionary (the second may
//! refer to the first).
#![no_main]
use libfuzzer_sys::fuzz_target;
use spicetap::render::lz::GlzDictionary;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else { return };
    let cut = (usize::from(cut) * rest.len()) / 256;
    let (a, b) = rest.split_at(cut);
    let mut dict = GlzDictionary::new(1 << 16);
    let _ = dict.decode(a);
    let _ = dict.decode(b);
});

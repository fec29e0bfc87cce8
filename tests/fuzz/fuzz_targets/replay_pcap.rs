//! The pcap reader of `spicetap render`, `inspect` and `diff`: the input is
//! a whole file, read back as SPICE messages (bodies and headers only).
#![no_main]
use libfuzzer_sys::fuzz_target;
use spicetap::capture::replay::Messages;
use spicetap::protocol::ChannelType;

fuzz_target!(|data: &[u8]| {
    let Ok(mut file) = tempfile::NamedTempFile::new() else { return };
    if std::io::Write::write_all(&mut file, data).is_err() {
        return;
    }
    for (ct, bodies) in [(None, true), (Some(ChannelType::DISPLAY), false)] {
        if let Ok(m) = Messages::open(file.path(), ct, bodies) {
            for r in m.take(10_000) {
                if r.is_err() {
                    break;
                }
            }
        }
    }
});

//! The pcap reader of `spicetap render`, `inspect` and `diff`: the input is
//! a whole file, read back as SPICE messages (bodies and headers only).
//! The first byte picks how: whole messages with the channel type from the
//! link stage, or headers only of a display channel without one.
#![no_main]
use libfuzzer_sys::fuzz_target;
use spicetap::capture::replay::Messages;
use spicetap::protocol::ChannelType;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, file_bytes)) = data.split_first() else { return };
    // On tmpfs where there is one: the file is written once per input.
    let shm = std::path::Path::new("/dev/shm");
    let file = if shm.is_dir() { tempfile::NamedTempFile::new_in(shm) } else { tempfile::NamedTempFile::new() };
    let Ok(mut file) = file else { return };
    if std::io::Write::write_all(&mut file, file_bytes).is_err() {
        return;
    }
    let (ct, bodies) = if mode & 1 == 0 { (None, true) } else { (Some(ChannelType::DISPLAY), false) };
    if let Ok(m) = Messages::open(file.path(), ct, bodies) {
        for r in m.take(10_000) {
            if r.is_err() {
                break;
            }
        }
    }
});

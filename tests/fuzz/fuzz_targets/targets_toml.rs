//! The token mode's targets file.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = spicetap::auth::targets::Targets::parse(text, std::path::Path::new("targets.toml"));
    }
});

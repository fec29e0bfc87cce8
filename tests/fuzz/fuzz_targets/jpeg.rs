//! The JPEG decoder, as spice-gtk's images and MJPEG frames use it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use spicetap::render::jpeg::{DecodeOptions, decode};

fuzz_target!(|data: &[u8]| {
    let _ = decode(data, &DecodeOptions::spice_gtk_image(1024, 1024));
    let _ = decode(data, &DecodeOptions::spice_gtk_mjpeg(1024, 1024));
});

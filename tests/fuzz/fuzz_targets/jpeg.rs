//! The JPEG decoder, as spice-gtk's images and MJPEG frames use it.
//!
//! Pictures are bounded to 256x256 here (the proxy's renderer passes the
//! surface size): the size check is the same code for any bound, and the
//! fuzzer spends its time in the entropy decoder and the IDCTs, not in
//! filling large pictures.
#![no_main]
use libfuzzer_sys::fuzz_target;
use spicetap::render::jpeg::{DecodeOptions, decode};

fuzz_target!(|data: &[u8]| {
    let _ = decode(data, &DecodeOptions::spice_gtk_image(256, 256));
    let _ = decode(data, &DecodeOptions::spice_gtk_mjpeg(256, 256));
});

//! The shadow renderer's codecs (in progress): SPICE's own image formats,
//! decoded exactly as spice-gtk decodes them.
//!
//! Codec modules take bytes and return pixels or typed errors; they import
//! nothing from the proxy. The canvas, image cache and display-channel
//! model that will drive them come with the renderer itself.
//!
//! - [`quic`]: QUIC (spice-common `quic.c`), GRAY / RGB16 / RGB24 / RGB32 / RGBA.
//! - [`lz`]: LZ and GLZ (spice-common `lz.c`, spice-gtk `decode-glz.c`) with the
//!   session-wide GLZ dictionary.

pub mod canvas;
pub mod combine_float;
pub mod composite;
pub mod cursor;
pub mod dash;
pub mod display;
pub mod image;
pub mod jpeg;
pub mod live;
pub mod lz;
pub mod offline;
pub mod quic;
pub mod raster;
pub mod renderer;
pub mod stream;
pub mod stroke;
pub mod text;
pub mod video_sink;

/// Helpers shared by the codec tests.
#[cfg(test)]
pub(crate) mod test_util {
    use sha2::{Digest, Sha256};

    /// SHA-256 of `data` as lowercase hex (fixture checks).
    pub(crate) fn sha256_hex(data: &[u8]) -> String {
        Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
    }
}

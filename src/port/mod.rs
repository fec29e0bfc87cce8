//! Decoders of what SPICE port channels carry: session tap consumers that
//! turn the SpiceVMC data of a channel back into the protocol inside it and
//! record it in a form Wireshark reads.
//!
//! - [`usbredir`]: usbredir channels (type 9) as Linux usbmon pcaps, with
//!   the devices, transfers and mass-storage commands in `session.json`.
//!
//! SpiceVMC data (spice-common `spice.proto`, spice `server/spicevmc.cpp`):
//! `SPICE_MSG_SPICEVMC_DATA` / `SPICE_MSGC_SPICEVMC_DATA` (101) carry raw
//! bytes; `*_COMPRESSED_DATA` (102) carry type u8 (1: LZ4), uncompressed
//! size u32, then one raw LZ4 block.

pub mod usbredir;

use thiserror::Error;

/// `SPICE_MSG_SPICEVMC_DATA` and `SPICE_MSGC_SPICEVMC_DATA`.
pub const SPICEVMC_DATA: u16 = 101;
/// `SPICE_MSG_SPICEVMC_COMPRESSED_DATA` and `SPICE_MSGC_SPICEVMC_COMPRESSED_DATA`.
pub const SPICEVMC_COMPRESSED_DATA: u16 = 102;
/// `SPICE_DATA_COMPRESSION_TYPE_LZ4`.
const COMPRESSION_LZ4: u8 = 1;

/// Largest uncompressed size accepted for one compressed SpiceVMC message
/// (spice-server compresses chunks of at most 64 KiB + 32 bytes).
pub const MAX_UNCOMPRESSED: u32 = 1024 * 1024;

/// Why a SpiceVMC message's payload cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum VmcError {
    /// Shorter than its 5-byte compression header.
    #[error("compressed SpiceVMC data of {0} bytes")]
    Short(usize),
    /// A compression type other than LZ4.
    #[error("SpiceVMC compression type {0}")]
    UnknownCompression(u8),
    /// An uncompressed size over [`MAX_UNCOMPRESSED`].
    #[error("SpiceVMC data announced as {0} bytes uncompressed")]
    TooLarge(u32),
    /// The LZ4 block does not inflate to the announced size.
    #[error("LZ4: {0}")]
    Lz4(String),
}

/// The carried bytes of a SpiceVMC message of type `msg_type` (either
/// direction), or `None` for other messages.
///
/// # Errors
/// [`VmcError`] for a compressed message that cannot be inflated.
pub fn vmc_payload(msg_type: u16, body: &[u8]) -> Result<Option<Vec<u8>>, VmcError> {
    match msg_type {
        SPICEVMC_DATA => Ok(Some(body.to_vec())),
        SPICEVMC_COMPRESSED_DATA => {
            let [kind, a, b, c, d, block @ ..] = body else { return Err(VmcError::Short(body.len())) };
            if *kind != COMPRESSION_LZ4 {
                return Err(VmcError::UnknownCompression(*kind));
            }
            let size = u32::from_le_bytes([*a, *b, *c, *d]);
            if size > MAX_UNCOMPRESSED {
                return Err(VmcError::TooLarge(size));
            }
            let out = lz4_flex::block::decompress(block, size as usize).map_err(|e| VmcError::Lz4(e.to_string()))?;
            if out.len() != size as usize {
                return Err(VmcError::Lz4(format!("{} bytes, not {size}", out.len())));
            }
            Ok(Some(out))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_lz4_payloads_are_read() {
        assert_eq!(vmc_payload(SPICEVMC_DATA, b"abc"), Ok(Some(b"abc".to_vec())));
        assert_eq!(vmc_payload(1, b"abc"), Ok(None));
        let raw = vec![42u8; 5000];
        let mut body = vec![COMPRESSION_LZ4];
        body.extend((raw.len() as u32).to_le_bytes());
        body.extend(lz4_flex::block::compress(&raw));
        assert_eq!(vmc_payload(SPICEVMC_COMPRESSED_DATA, &body), Ok(Some(raw)));
    }

    #[test]
    fn hostile_compressed_payloads_are_errors() {
        assert_eq!(vmc_payload(SPICEVMC_COMPRESSED_DATA, &[1, 0]), Err(VmcError::Short(2)));
        assert_eq!(vmc_payload(SPICEVMC_COMPRESSED_DATA, &[2, 0, 0, 0, 0]), Err(VmcError::UnknownCompression(2)));
        let huge = [1, 0, 0, 0, 0x40];
        assert_eq!(vmc_payload(SPICEVMC_COMPRESSED_DATA, &huge), Err(VmcError::TooLarge(0x4000_0000)));
        // Announced larger than the block inflates to.
        let mut body = vec![1u8];
        body.extend(100u32.to_le_bytes());
        body.extend(lz4_flex::block::compress(&[1u8; 10]));
        assert!(matches!(vmc_payload(SPICEVMC_COMPRESSED_DATA, &body), Err(VmcError::Lz4(_))));
    }
}

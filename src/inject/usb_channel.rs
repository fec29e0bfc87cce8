//! The usbredir channel spicetap opens itself in a client's session to
//! attach the virtual disk (`--usb-disk`): it links the channel to the
//! server as a SPICE client would (`inject::spicevmc`), then plays the
//! usb-host over it: usbredir from the guest (SpiceVMC data, LZ4 inflated)
//! goes to [`UsbHost`], its output goes back as SpiceVMC data.
//!
//! Every byte it exchanges goes to the session tap like a client's
//! channel, so the channel's pcap, usbmon pcap and `session.json` show what
//! the guest did with the disk.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::spicevmc::{Housekeeping, InjectError, Recorder, link, message, send_vmc};
use super::usb_host::UsbHost;
use crate::framing::MessageAssembler;
use crate::limits::LINK_TIMEOUT;
use crate::port::vmc_payload;
use crate::protocol::{ChannelType, Direction};
use crate::usb_disk::{BulkOnlyDisk, FileStorage};

/// The disk to attach.
#[derive(Debug, Clone)]
pub struct UsbDiskConfig {
    /// The raw image.
    pub path: PathBuf,
    /// Attach it read-only (`--usb-disk-ro`).
    pub read_only: bool,
    /// The server's SPICE password (`--upstream-password-file`), if it
    /// has one.
    pub password: Option<Vec<u8>>,
}

impl UsbDiskConfig {
    /// Checks the image can be used: it exists, opens (read-only or
    /// read-write as asked) and holds a whole number of 512-byte blocks.
    ///
    /// # Errors
    /// A message saying what is wrong with the image.
    pub fn check(&self) -> Result<u64, String> {
        FileStorage::open(&self.path, self.read_only)
            .map(|f| crate::usb_disk::Storage::size(&f))
            .map_err(|e| format!("--usb-disk {}: {e}", self.path.display()))
    }
}

/// Read-write images attached now (one session at a time each).
static IN_USE: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// Holds a read-write image for one session.
struct ImageLock(PathBuf);

impl ImageLock {
    fn take(path: &Path) -> Option<Self> {
        let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let inserted =
            IN_USE.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert_with(HashSet::new).insert(key.clone());
        // Built only when taken: a lock dropped here would free the image
        // (and take the set's mutex again).
        if inserted { Some(Self(key)) } else { None }
    }
}

impl Drop for ImageLock {
    fn drop(&mut self) {
        if let Some(set) = IN_USE.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
            set.remove(&self.0);
        }
    }
}

/// Links usbredir channel `channel_id` of session `session_id` over
/// `stream` and serves the disk until `stop` turns true or the server
/// closes. Every byte goes to `record`.
///
/// # Errors
/// [`InjectError`] for a refused link, an unusable image, or a broken
/// stream.
pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    session_id: u32,
    channel_id: u8,
    disk: &UsbDiskConfig,
    record: &Recorder,
    mut stop: watch::Receiver<bool>,
) -> Result<(), InjectError> {
    let _lock = if disk.read_only {
        None
    } else {
        Some(ImageLock::take(&disk.path).ok_or_else(|| InjectError::ImageBusy(disk.path.display().to_string()))?)
    };
    let storage = FileStorage::open(&disk.path, disk.read_only).map_err(|e| InjectError::Image(e.to_string()))?;
    let serial = format!("{session_id:08X}{channel_id:02X}");
    let mut host = UsbHost::new(BulkOnlyDisk::new(storage, disk.read_only, &serial), &serial);

    let linking =
        link(&mut stream, session_id, ChannelType::USBREDIR, channel_id, &[], disk.password.as_deref(), record);
    let kind = tokio::time::timeout(LINK_TIMEOUT, linking).await.map_err(|_| InjectError::Timeout)??;
    tracing::info!(channel_id, read_only = disk.read_only, "virtual USB disk channel linked");

    let mut assembler = MessageAssembler::new(kind);
    let mut serial_no = 0u64;
    let mut housekeeping = Housekeeping::default();
    let mut buf = vec![0u8; 256 * 1024];
    // The hello goes out at once.
    send_vmc(&mut stream, kind, &mut serial_no, &host.take_output(), record).await?;
    loop {
        let n = tokio::select! {
            r = stream.read(&mut buf) => r?,
            _ = stop.wait_for(|&s| s) => break,
        };
        if n == 0 {
            break;
        }
        record.data(Direction::ServerToClient, &buf[..n]);
        let messages = assembler.feed(&buf[..n]).map_err(|e| InjectError::Protocol(e.to_string()))?;
        let mut replies: Vec<(u16, Vec<u8>)> = Vec::new();
        for (header, body) in messages {
            let (r, handled) = housekeeping.on_message(header.msg_type, &body);
            replies.extend(r);
            if handled {
                continue;
            }
            if let Some(payload) =
                vmc_payload(header.msg_type, &body).map_err(|e| InjectError::Protocol(e.to_string()))?
            {
                tokio::task::block_in_place(|| host.feed(&payload))
                    .map_err(|e| InjectError::Protocol(e.to_string()))?;
            }
        }
        for (ty, body) in replies {
            let m = message(kind, &mut serial_no, ty, &body);
            stream.write_all(&m).await?;
            record.data(Direction::ClientToServer, &m);
        }
        send_vmc(&mut stream, kind, &mut serial_no, &host.take_output(), record).await?;
    }
    if let Err(e) = tokio::task::block_in_place(|| host.disk().flush()) {
        tracing::error!(error = %e, "flushing the virtual disk failed");
    }
    let _ = stream.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_write_image_serves_one_session_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        std::fs::write(&path, vec![0u8; 1024]).unwrap();
        let first = ImageLock::take(&path).expect("free");
        assert!(ImageLock::take(&path).is_none(), "a second read-write attach is refused");
        drop(first);
        assert!(ImageLock::take(&path).is_some(), "free again once the first session ends");
    }

    #[test]
    fn images_that_are_not_whole_blocks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("odd.img");
        std::fs::write(&path, vec![0u8; 1000]).unwrap();
        let config = UsbDiskConfig { path: path.clone(), read_only: true, password: None };
        assert!(config.check().unwrap_err().contains("not a non-zero multiple of 512"));
        std::fs::write(&path, vec![0u8; 2048]).unwrap();
        assert_eq!(config.check(), Ok(2048));
        let missing = UsbDiskConfig { path: dir.path().join("none.img"), read_only: false, password: None };
        assert!(missing.check().is_err());
    }
}

//! The virtual USB disk spicetap attaches to a guest: a Bulk-Only
//! Transport mass-storage device (class 8, subclass 6 SCSI transparent,
//! protocol 0x50) answering the SCSI commands Linux, Windows and macOS send
//! to a disk, over a raw image, sans-IO.
//!
//! The usbredir side (which plays the usb-host) hands it the bulk OUT
//! transfers the guest sends ([`BulkOnlyDisk::bulk_out`]) and asks it for
//! the bulk IN transfers the guest requests ([`BulkOnlyDisk::bulk_in`]):
//!
//! ```text
//! guest ──CBW (31 bytes)──> command ──data OUT──> (writes)   ──┐
//!       <──data IN (reads, INQUIRY, ...)──                      ├─> CSW (13 bytes, bulk IN)
//!                                                             ──┘
//! ```
//! (USB Mass Storage Class Bulk-Only Transport 1.0; SCSI SPC-4 and SBC-3.
//! Sense data in fixed format; multi-byte CDB and data fields big-endian.)
//!
//! Data moves through the image in place: a READ is read from the image as
//! the guest asks for each bulk IN piece, a WRITE written as each OUT piece
//! arrives, so no transfer is ever held whole in memory; a CBW whose
//! transfer length exceeds [`MAX_TRANSFER`] is refused.

use std::io;

use crate::msc::{CBW_LEN, Cbw, Csw};

/// Logical block size in bytes.
pub const BLOCK: u64 = 512;

/// Largest data phase one CBW may announce (bytes). Linux's usb-storage
/// asks at most 240 blocks per command by default; 16 MiB leaves room for
/// any host while bounding what a hostile guest can queue.
pub const MAX_TRANSFER: u32 = 16 * 1024 * 1024;

/// A disk image: a byte array with reads, writes and flush.
pub trait Storage {
    /// Size in bytes (a multiple of [`BLOCK`]).
    fn size(&self) -> u64;
    /// Fills `buf` from byte `offset`.
    ///
    /// # Errors
    /// The storage's I/O error.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes `buf` at byte `offset`.
    ///
    /// # Errors
    /// The storage's I/O error.
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Makes earlier writes durable.
    ///
    /// # Errors
    /// The storage's I/O error.
    fn flush(&mut self) -> io::Result<()>;
}

impl Storage for Vec<u8> {
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let src = self.get(start..start + buf.len()).ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let dst = self.get_mut(start..start + buf.len()).ok_or(io::ErrorKind::UnexpectedEof)?;
        dst.copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A raw image file as [`Storage`]: positioned reads and writes, `fsync`
/// on flush. Opened read-only for a read-only disk, so the file is never
/// opened for writing then.
#[derive(Debug)]
pub struct FileStorage {
    file: std::fs::File,
    size: u64,
}

impl FileStorage {
    /// Opens `path`; its size must be a non-zero multiple of [`BLOCK`].
    ///
    /// # Errors
    /// The open error, or `InvalidData` for a size that is not whole
    /// blocks.
    pub fn open(path: &std::path::Path, read_only: bool) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new().read(true).write(!read_only).open(path)?;
        let size = file.metadata()?.len();
        if size == 0 || size % BLOCK != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is {size} bytes, not a non-zero multiple of {BLOCK}", path.display()),
            ));
        }
        Ok(Self { file, size })
    }
}

impl Storage for FileStorage {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, offset)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&self.file, buf, offset)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// Sense keys (SPC-4 4.5.6).
#[allow(missing_docs)]
pub mod sense_key {
    pub const NO_SENSE: u8 = 0x0;
    pub const NOT_READY: u8 = 0x2;
    pub const MEDIUM_ERROR: u8 = 0x3;
    pub const ILLEGAL_REQUEST: u8 = 0x5;
    pub const UNIT_ATTENTION: u8 = 0x6;
    pub const DATA_PROTECT: u8 = 0x7;
}

/// Sense data: key, additional sense code and qualifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sense {
    /// Sense key.
    pub key: u8,
    /// ASC.
    pub asc: u8,
    /// ASCQ.
    pub ascq: u8,
}

impl Sense {
    const INVALID_OPCODE: Self = Self { key: sense_key::ILLEGAL_REQUEST, asc: 0x20, ascq: 0 };
    const LBA_OUT_OF_RANGE: Self = Self { key: sense_key::ILLEGAL_REQUEST, asc: 0x21, ascq: 0 };
    const INVALID_FIELD_IN_CDB: Self = Self { key: sense_key::ILLEGAL_REQUEST, asc: 0x24, ascq: 0 };
    const WRITE_PROTECTED: Self = Self { key: sense_key::DATA_PROTECT, asc: 0x27, ascq: 0 };
    const READ_ERROR: Self = Self { key: sense_key::MEDIUM_ERROR, asc: 0x11, ascq: 0 };
    const WRITE_ERROR: Self = Self { key: sense_key::MEDIUM_ERROR, asc: 0x0c, ascq: 0 };

    /// Fixed-format sense data (SPC-4 4.5.3), 18 bytes.
    pub fn fixed(&self) -> [u8; 18] {
        let mut b = [0u8; 18];
        b[0] = 0x70;
        b[2] = self.key;
        b[7] = 10;
        b[12] = self.asc;
        b[13] = self.ascq;
        b
    }
}

/// What the device answers a bulk OUT with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutResult {
    /// Taken.
    Ok,
    /// The endpoint stalls (an invalid CBW, or OUT data when none is due;
    /// BOT 6.6.1): the host must reset recovery.
    Stall,
}

/// What the device answers a bulk IN request with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InResult {
    /// These bytes (at most the length asked).
    Data(Vec<u8>),
    /// The endpoint stalls (the data phase ended short, or nothing is due).
    Stall,
}

/// Where the Bulk-Only state machine is.
#[derive(Debug)]
enum Phase {
    /// Waiting for a CBW.
    Command,
    /// Sending `data` (generated) then `csw`.
    DataIn { data: Vec<u8>, sent: usize, csw: Csw, stall_after: bool },
    /// Reading `remaining` bytes from the image at `offset`, then `csw`.
    ReadIn { offset: u64, remaining: u64, csw: Csw, stall_after: bool },
    /// Taking `remaining` bytes of OUT data (written at `offset` unless
    /// `discard`), then `csw`.
    DataOut { offset: u64, remaining: u64, discard: bool, csw: Csw },
    /// The CSW is due.
    Status(Csw),
}

/// A Bulk-Only Transport disk over `S`.
#[derive(Debug)]
pub struct BulkOnlyDisk<S: Storage> {
    storage: S,
    read_only: bool,
    sense: Sense,
    phase: Phase,
    /// Vendor/product strings for INQUIRY and the serial number (VPD 0x80).
    serial: String,
}

impl<S: Storage> BulkOnlyDisk<S> {
    /// A disk over `storage` (its size a multiple of 512), read-only when
    /// asked, reporting `serial`.
    pub fn new(storage: S, read_only: bool, serial: &str) -> Self {
        Self { storage, read_only, sense: Sense::default(), phase: Phase::Command, serial: serial.to_string() }
    }

    /// The storage.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// Blocks on the disk.
    pub fn blocks(&self) -> u64 {
        self.storage.size() / BLOCK
    }

    /// Bulk-Only Mass Storage Reset (class request 0xFF): back to waiting
    /// for a CBW.
    pub fn reset(&mut self) {
        self.phase = Phase::Command;
    }

    /// Get Max LUN (class request 0xFE): one logical unit, 0.
    pub fn max_lun(&self) -> u8 {
        0
    }

    /// Flushes writes to the image (session end).
    ///
    /// # Errors
    /// The storage's I/O error.
    pub fn flush(&mut self) -> io::Result<()> {
        self.storage.flush()
    }

    /// A bulk OUT transfer from the guest: a CBW, or data of a WRITE.
    pub fn bulk_out(&mut self, data: &[u8]) -> OutResult {
        match std::mem::replace(&mut self.phase, Phase::Command) {
            Phase::Command => {
                if data.len() != CBW_LEN {
                    return OutResult::Stall;
                }
                match Cbw::parse(data) {
                    Ok(cbw) => {
                        self.command(&cbw);
                        OutResult::Ok
                    }
                    Err(_) => OutResult::Stall,
                }
            }
            Phase::DataOut { offset, remaining, discard, mut csw } => {
                let n = (data.len() as u64).min(remaining);
                if !discard
                    && n > 0
                    && let Err(e) = self.storage.write_at(offset, &data[..n as usize])
                {
                    tracing::warn!(error = %e, "virtual disk write failed");
                    self.sense = Sense::WRITE_ERROR;
                    csw.status = 1;
                }
                let remaining = remaining - n;
                if remaining == 0 {
                    self.phase = Phase::Status(csw);
                } else {
                    // Residue shrinks as data arrives.
                    csw.residue = u32::try_from(remaining).unwrap_or(u32::MAX);
                    self.phase = Phase::DataOut { offset: offset + n, remaining, discard, csw };
                }
                OutResult::Ok
            }
            other => {
                // OUT data when the device expects none: stall (BOT 6.7.3).
                self.phase = other;
                OutResult::Stall
            }
        }
    }

    /// A bulk IN request of up to `max_len` bytes from the guest.
    pub fn bulk_in(&mut self, max_len: usize) -> InResult {
        match std::mem::replace(&mut self.phase, Phase::Command) {
            Phase::DataIn { data, sent, csw, stall_after } => {
                let n = (data.len() - sent).min(max_len);
                let out = data[sent..sent + n].to_vec();
                if sent + n >= data.len() {
                    self.phase = Phase::Status(csw);
                    if out.is_empty() && stall_after {
                        return InResult::Stall;
                    }
                } else {
                    self.phase = Phase::DataIn { data, sent: sent + n, csw, stall_after };
                }
                InResult::Data(out)
            }
            Phase::ReadIn { offset, remaining, mut csw, stall_after } => {
                let n = remaining.min(max_len as u64);
                let mut buf = vec![0u8; n as usize];
                if let Err(e) = self.storage.read_at(offset, &mut buf) {
                    tracing::warn!(error = %e, "virtual disk read failed");
                    self.sense = Sense::READ_ERROR;
                    csw.status = 1;
                    self.phase = Phase::Status(csw);
                    return InResult::Stall;
                }
                let remaining = remaining - n;
                if remaining == 0 {
                    self.phase = Phase::Status(csw);
                } else {
                    self.phase = Phase::ReadIn { offset: offset + n, remaining, csw, stall_after };
                }
                InResult::Data(buf)
            }
            Phase::Status(csw) => {
                if max_len < crate::msc::CSW_LEN {
                    self.phase = Phase::Status(csw);
                    return InResult::Stall;
                }
                InResult::Data(csw.encode().to_vec())
            }
            other @ (Phase::Command | Phase::DataOut { .. }) => {
                self.phase = other;
                InResult::Stall
            }
        }
    }

    /// Starts the phases of a command.
    fn command(&mut self, cbw: &Cbw) {
        let good = Csw { tag: cbw.tag, residue: 0, status: 0 };
        let failed = Csw { tag: cbw.tag, residue: cbw.data_transfer_length, status: 1 };
        let host_len = cbw.data_transfer_length;
        if host_len > MAX_TRANSFER || cbw.lun != 0 {
            self.sense = Sense::INVALID_FIELD_IN_CDB;
            self.fail_phase(cbw, failed);
            return;
        }
        let result = self.execute(cbw);
        match result {
            Reply::Data(mut data) => {
                if !cbw.data_in && host_len > 0 {
                    // Device would send, host sends: phase error (case 10).
                    self.phase = Phase::DataOut {
                        offset: 0,
                        remaining: u64::from(host_len),
                        discard: true,
                        csw: Csw { tag: cbw.tag, residue: 0, status: 2 },
                    };
                    return;
                }
                if host_len == 0 && !data.is_empty() {
                    // The device has data, the host expects none (case 2).
                    self.phase = Phase::Status(Csw { tag: cbw.tag, residue: 0, status: 2 });
                    return;
                }
                // Hi >= Di: short data, residue (cases 4 to 6).
                data.truncate(host_len as usize);
                let residue = host_len - data.len() as u32;
                self.sense = Sense::default();
                self.start_in(data, Csw { residue, ..good }, residue > 0);
            }
            Reply::Read { offset, bytes } => {
                if !cbw.data_in || u64::from(host_len) < bytes {
                    // The host expects less than the device has (case 7) or
                    // the wrong direction: phase error.
                    self.fail_phase(cbw, Csw { tag: cbw.tag, residue: host_len, status: 2 });
                    return;
                }
                self.sense = Sense::default();
                let residue = host_len - bytes as u32;
                if bytes == 0 {
                    self.start_in(Vec::new(), Csw { residue, ..good }, residue > 0);
                } else {
                    self.phase = Phase::ReadIn {
                        offset,
                        remaining: bytes,
                        csw: Csw { residue, ..good },
                        stall_after: residue > 0,
                    };
                }
            }
            Reply::Write { offset, bytes } => {
                if cbw.data_in || u64::from(host_len) != bytes {
                    self.fail_phase(cbw, Csw { tag: cbw.tag, residue: host_len, status: 2 });
                    return;
                }
                self.sense = Sense::default();
                if bytes == 0 {
                    self.phase = Phase::Status(good);
                } else {
                    self.phase = Phase::DataOut { offset, remaining: bytes, discard: false, csw: good };
                }
            }
            Reply::Fail(sense) => {
                self.sense = sense;
                self.fail_phase(cbw, failed);
            }
        }
    }

    /// A failed command: the host's data phase is consumed (OUT data
    /// discarded, IN answered with a stall), then a CSW with `csw`.
    fn fail_phase(&mut self, cbw: &Cbw, csw: Csw) {
        self.phase = if cbw.data_transfer_length == 0 {
            Phase::Status(csw)
        } else if cbw.data_in {
            Phase::DataIn { data: Vec::new(), sent: 0, csw, stall_after: true }
        } else {
            Phase::DataOut { offset: 0, remaining: u64::from(cbw.data_transfer_length), discard: true, csw }
        };
    }

    fn start_in(&mut self, data: Vec<u8>, csw: Csw, stall_after: bool) {
        self.phase = if data.is_empty() && !stall_after {
            Phase::Status(csw)
        } else {
            Phase::DataIn { data, sent: 0, csw, stall_after }
        };
    }

    /// The SCSI command itself.
    fn execute(&mut self, cbw: &Cbw) -> Reply {
        let c = &cbw.cdb;
        let byte = |i: usize| c.get(i).copied().unwrap_or(0);
        let be16 = |i: usize| u64::from(u16::from_be_bytes([byte(i), byte(i + 1)]));
        let be32 = |i: usize| u64::from(u32::from_be_bytes([byte(i), byte(i + 1), byte(i + 2), byte(i + 3)]));
        let be64 = |i: usize| (be32(i) << 32) | be32(i + 4);
        let blocks = self.blocks();
        match cbw.opcode() {
            // TEST UNIT READY, PREVENT ALLOW MEDIUM REMOVAL, START STOP UNIT.
            0x00 | 0x1e | 0x1b => Reply::Data(Vec::new()),
            // REQUEST SENSE: the current sense, then cleared.
            0x03 => {
                let s = std::mem::take(&mut self.sense).fixed().to_vec();
                Reply::Data(truncate_to(s, byte(4) as usize))
            }
            0x12 => self.inquiry(byte(1) & 1 != 0, byte(2), be16(3) as usize),
            // MODE SENSE(6) / (10): header (and the caching page when asked).
            0x1a | 0x5a => {
                let page = byte(2) & 0x3f;
                if page != 0x3f && page != 0x08 && page != 0x00 {
                    return Reply::Fail(Sense::INVALID_FIELD_IN_CDB);
                }
                let wp = if self.read_only { 0x80 } else { 0 };
                // Caching mode page (SBC-3 6.4.5): write cache disabled.
                let caching: Vec<u8> = if page == 0x00 {
                    Vec::new()
                } else {
                    vec![0x08, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
                };
                if cbw.opcode() == 0x1a {
                    let mut d = vec![(3 + caching.len()) as u8, 0, wp, 0];
                    d.extend(&caching);
                    Reply::Data(truncate_to(d, byte(4) as usize))
                } else {
                    let len = (6 + caching.len()) as u16;
                    let mut d = vec![(len >> 8) as u8, len as u8, 0, wp, 0, 0, 0, 0];
                    d.extend(&caching);
                    Reply::Data(truncate_to(d, be16(7) as usize))
                }
            }
            // READ CAPACITY(10): last LBA (saturated) and block size.
            0x25 => {
                let last = u32::try_from(blocks.saturating_sub(1)).unwrap_or(u32::MAX);
                let mut d = last.to_be_bytes().to_vec();
                d.extend((BLOCK as u32).to_be_bytes());
                Reply::Data(d)
            }
            // SERVICE ACTION IN(16) / READ CAPACITY(16).
            0x9e if byte(1) & 0x1f == 0x10 => {
                let mut d = blocks.saturating_sub(1).to_be_bytes().to_vec();
                d.extend((BLOCK as u32).to_be_bytes());
                d.resize(32, 0);
                Reply::Data(truncate_to(d, be32(10) as usize))
            }
            0x08 => self.read(
                u64::from(u32::from_be_bytes([0, byte(1) & 0x1f, byte(2), byte(3)])),
                if byte(4) == 0 { 256 } else { u64::from(byte(4)) },
            ),
            0x28 => self.read(be32(2), be16(7)),
            0xa8 => self.read(be32(2), be32(6)),
            0x88 => self.read(be64(2), be32(10)),
            0x0a => self.write(
                u64::from(u32::from_be_bytes([0, byte(1) & 0x1f, byte(2), byte(3)])),
                if byte(4) == 0 { 256 } else { u64::from(byte(4)) },
            ),
            0x2a => self.write(be32(2), be16(7)),
            0xaa => self.write(be32(2), be32(6)),
            0x8a => self.write(be64(2), be32(10)),
            // VERIFY(10): the range must exist; the medium is always good.
            0x2f => match checked_range(be32(2), be16(7), blocks) {
                Some(_) => Reply::Data(Vec::new()),
                None => Reply::Fail(Sense::LBA_OUT_OF_RANGE),
            },
            // SYNCHRONIZE CACHE(10).
            0x35 => match self.storage.flush() {
                Ok(()) => Reply::Data(Vec::new()),
                Err(_) => Reply::Fail(Sense::WRITE_ERROR),
            },
            // REPORT LUNS: LUN 0 only.
            0xa0 => {
                let mut d = vec![0, 0, 0, 8, 0, 0, 0, 0];
                d.extend([0u8; 8]);
                Reply::Data(truncate_to(d, be32(6) as usize))
            }
            _ => Reply::Fail(Sense::INVALID_OPCODE),
        }
    }

    fn read(&self, lba: u64, count: u64) -> Reply {
        match checked_range(lba, count, self.blocks()) {
            Some((offset, bytes)) => Reply::Read { offset, bytes },
            None => Reply::Fail(Sense::LBA_OUT_OF_RANGE),
        }
    }

    fn write(&self, lba: u64, count: u64) -> Reply {
        if self.read_only {
            return Reply::Fail(Sense::WRITE_PROTECTED);
        }
        match checked_range(lba, count, self.blocks()) {
            Some((offset, bytes)) => Reply::Write { offset, bytes },
            None => Reply::Fail(Sense::LBA_OUT_OF_RANGE),
        }
    }

    /// INQUIRY: standard data (SPC-4 6.4.2), or a VPD page (supported
    /// pages, unit serial number, device identification).
    fn inquiry(&self, evpd: bool, page: u8, alloc: usize) -> Reply {
        if !evpd {
            if page != 0 {
                return Reply::Fail(Sense::INVALID_FIELD_IN_CDB);
            }
            let mut d = vec![0x00, 0x00, 0x05, 0x02, 31, 0, 0, 0];
            d.extend(pad(b"spicetap", 8));
            d.extend(pad(b"virtual disk", 16));
            d.extend(pad(b"0.1", 4));
            return Reply::Data(truncate_to(d, alloc));
        }
        let body: Vec<u8> = match page {
            0x00 => vec![0x00, 0x80, 0x83],
            0x80 => self.serial.as_bytes().to_vec(),
            0x83 => {
                // One T10 vendor ID designator: ASCII, "spicetap" + serial.
                let mut id = pad(b"spicetap", 8);
                id.extend(self.serial.as_bytes());
                let mut d = vec![0x02, 0x01, 0x00, id.len() as u8];
                d.extend(id);
                d
            }
            _ => return Reply::Fail(Sense::INVALID_FIELD_IN_CDB),
        };
        let mut d = vec![0x00, page, 0, body.len().min(255) as u8];
        d.extend(body.iter().take(255));
        Reply::Data(truncate_to(d, alloc))
    }
}

/// What a command does in its data phase.
enum Reply {
    /// Generated data (possibly none).
    Data(Vec<u8>),
    /// Image bytes to send.
    Read { offset: u64, bytes: u64 },
    /// Image bytes to receive.
    Write { offset: u64, bytes: u64 },
    /// CHECK CONDITION with this sense.
    Fail(Sense),
}

/// Byte offset and length of `count` blocks from `lba`, when they lie on a
/// disk of `blocks` blocks.
fn checked_range(lba: u64, count: u64, blocks: u64) -> Option<(u64, u64)> {
    let end = lba.checked_add(count)?;
    (end <= blocks).then(|| (lba * BLOCK, count * BLOCK))
}

fn truncate_to(mut d: Vec<u8>, alloc: usize) -> Vec<u8> {
    d.truncate(alloc);
    d
}

fn pad(s: &[u8], n: usize) -> Vec<u8> {
    let mut v = s[..s.len().min(n)].to_vec();
    v.resize(n, b' ');
    v
}

#[cfg(test)]
mod tests;

//! USB mass storage, Bulk-Only Transport (BOT): the Command Block Wrapper
//! and Command Status Wrapper, and the names of the SCSI commands they
//! carry, sans-IO.
//!
//! ```text
//! CBW (31 bytes, bulk OUT)  dCBWSignature u32 = 0x43425355 ("USBC"), dCBWTag u32,
//!                           dCBWDataTransferLength u32, bmCBWFlags u8 (bit 7: data IN),
//!                           bCBWLUN u8 (low 4 bits), bCBWCBLength u8 (1..=16), CBWCB [u8; 16]
//! CSW (13 bytes, bulk IN)   dCSWSignature u32 = 0x53425355 ("USBS"), dCSWTag u32,
//!                           dCSWDataResidue u32, bCSWStatus u8 (0 passed, 1 failed, 2 phase error)
//! ```
//! Little-endian (USB Mass Storage Class Bulk-Only Transport 1.0, 5.1 and
//! 5.2); the CDB inside is SCSI's own, big-endian (SBC-3, MMC-6).

/// `dCBWSignature`.
pub const CBW_SIGNATURE: u32 = 0x4342_5355;
/// `dCSWSignature`.
pub const CSW_SIGNATURE: u32 = 0x5342_5355;
/// A CBW's size in bytes.
pub const CBW_LEN: usize = 31;
/// A CSW's size in bytes.
pub const CSW_LEN: usize = 13;

/// A Command Block Wrapper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cbw {
    /// dCBWTag, echoed by the CSW.
    pub tag: u32,
    /// Bytes the host expects to move.
    pub data_transfer_length: u32,
    /// Data phase direction: device to host.
    pub data_in: bool,
    /// Logical unit.
    pub lun: u8,
    /// The command block (`bCBWCBLength` bytes).
    pub cdb: Vec<u8>,
}

/// Why 31 bytes are not a valid CBW (BOT 6.2.1: the device then stalls).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CbwError {
    /// Not 31 bytes.
    #[error("CBW of {0} bytes, not 31")]
    Length(usize),
    /// Wrong dCBWSignature.
    #[error("CBW signature {0:#010x}")]
    Signature(u32),
    /// bCBWCBLength outside 1..=16.
    #[error("CBW command block length {0}")]
    CdbLength(u8),
}

impl Cbw {
    /// Parses a CBW.
    ///
    /// # Errors
    /// [`CbwError`] for a wrong size, signature or command block length.
    pub fn parse(b: &[u8]) -> Result<Self, CbwError> {
        if b.len() != CBW_LEN {
            return Err(CbwError::Length(b.len()));
        }
        let le = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        if le(0) != CBW_SIGNATURE {
            return Err(CbwError::Signature(le(0)));
        }
        let cb_len = b[14] & 0x1f;
        if !(1..=16).contains(&cb_len) {
            return Err(CbwError::CdbLength(cb_len));
        }
        Ok(Self {
            tag: le(4),
            data_transfer_length: le(8),
            data_in: b[12] & 0x80 != 0,
            lun: b[13] & 0x0f,
            cdb: b[15..15 + usize::from(cb_len)].to_vec(),
        })
    }

    /// The 31 bytes of this CBW (`cdb` cut to 16 bytes).
    pub fn encode(&self) -> [u8; CBW_LEN] {
        let mut b = [0u8; CBW_LEN];
        b[0..4].copy_from_slice(&CBW_SIGNATURE.to_le_bytes());
        b[4..8].copy_from_slice(&self.tag.to_le_bytes());
        b[8..12].copy_from_slice(&self.data_transfer_length.to_le_bytes());
        b[12] = if self.data_in { 0x80 } else { 0 };
        b[13] = self.lun & 0x0f;
        let n = self.cdb.len().min(16);
        b[14] = n as u8;
        b[15..15 + n].copy_from_slice(&self.cdb[..n]);
        b
    }

    /// A CBW for LUN 0 carrying `cdb` (tests and tools).
    pub fn new(tag: u32, data_transfer_length: u32, data_in: bool, cdb: &[u8]) -> Self {
        Self { tag, data_transfer_length, data_in, lun: 0, cdb: cdb.to_vec() }
    }

    /// The SCSI operation code.
    pub fn opcode(&self) -> u8 {
        self.cdb.first().copied().unwrap_or(0)
    }

    /// Logical blocks a READ or WRITE command moves (its TRANSFER LENGTH),
    /// `None` for other commands.
    pub fn transfer_blocks(&self) -> Option<u32> {
        let c = &self.cdb;
        let be16 = |i: usize| c.get(i..i + 2).map(|v| u32::from(u16::from_be_bytes([v[0], v[1]])));
        let be32 = |i: usize| c.get(i..i + 4).map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
        match self.opcode() {
            // READ(6)/WRITE(6): 0 means 256 blocks (SBC-3 5.15).
            0x08 | 0x0a => c.get(4).map(|&n| if n == 0 { 256 } else { u32::from(n) }),
            0x28 | 0x2a | 0x2f => be16(7),
            0xa8 | 0xaa => be32(6),
            0x88 | 0x8a => be32(10),
            _ => None,
        }
    }

    /// Whether the command reads or writes the medium: `Some(true)` for
    /// READ, `Some(false)` for WRITE.
    pub fn is_read(&self) -> Option<bool> {
        match self.opcode() {
            0x08 | 0x28 | 0xa8 | 0x88 => Some(true),
            0x0a | 0x2a | 0xaa | 0x8a => Some(false),
            _ => None,
        }
    }
}

/// A Command Status Wrapper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Csw {
    /// dCSWTag (the CBW's).
    pub tag: u32,
    /// Bytes of the data phase not moved.
    pub residue: u32,
    /// 0 passed, 1 failed, 2 phase error.
    pub status: u8,
}

impl Csw {
    /// Parses a CSW; `None` when the bytes are not one.
    pub fn parse(b: &[u8]) -> Option<Self> {
        if b.len() != CSW_LEN {
            return None;
        }
        let le = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        (le(0) == CSW_SIGNATURE).then(|| Self { tag: le(4), residue: le(8), status: b[12] })
    }

    /// The 13 bytes of this CSW.
    pub fn encode(&self) -> [u8; CSW_LEN] {
        let mut b = [0u8; CSW_LEN];
        b[0..4].copy_from_slice(&CSW_SIGNATURE.to_le_bytes());
        b[4..8].copy_from_slice(&self.tag.to_le_bytes());
        b[8..12].copy_from_slice(&self.residue.to_le_bytes());
        b[12] = self.status;
        b
    }
}

/// The name of a SCSI operation code (SPC-4, SBC-3, MMC-6), as Wireshark
/// spells it.
pub fn scsi_command_name(opcode: u8) -> String {
    let name = match opcode {
        0x00 => "TEST UNIT READY",
        0x03 => "REQUEST SENSE",
        0x08 => "READ(6)",
        0x0a => "WRITE(6)",
        0x12 => "INQUIRY",
        0x1a => "MODE SENSE(6)",
        0x1b => "START STOP UNIT",
        0x1e => "PREVENT ALLOW MEDIUM REMOVAL",
        0x23 => "READ FORMAT CAPACITIES",
        0x25 => "READ CAPACITY(10)",
        0x28 => "READ(10)",
        0x2a => "WRITE(10)",
        0x2f => "VERIFY(10)",
        0x35 => "SYNCHRONIZE CACHE(10)",
        0x43 => "READ TOC/PMA/ATIP",
        0x46 => "GET CONFIGURATION",
        0x4a => "GET EVENT STATUS NOTIFICATION",
        0x51 => "READ DISC INFORMATION",
        0x5a => "MODE SENSE(10)",
        0x88 => "READ(16)",
        0x8a => "WRITE(16)",
        0x9e => "SERVICE ACTION IN(16)",
        0xa0 => "REPORT LUNS",
        0xa8 => "READ(12)",
        0xaa => "WRITE(12)",
        0xad => "READ DVD STRUCTURE",
        0xbd => "MECHANISM STATUS",
        other => return format!("opcode {other:#04x}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cbw(cdb: &[u8], len: u32, data_in: bool) -> Vec<u8> {
        Cbw::new(7, len, data_in, cdb).encode().to_vec()
    }

    #[test]
    fn a_read_10_cbw_parses_with_its_blocks() {
        let c = Cbw::parse(&cbw(&[0x28, 0, 0, 0, 0, 16, 0, 0, 2, 0], 4096, true)).unwrap();
        assert_eq!((c.tag, c.data_transfer_length, c.data_in, c.lun), (7, 4096, true, 0));
        assert_eq!((c.opcode(), c.transfer_blocks(), c.is_read()), (0x28, Some(2), Some(true)));
        assert_eq!(scsi_command_name(c.opcode()), "READ(10)");
        let w6 = Cbw::parse(&cbw(&[0x0a, 0, 0, 0, 0, 0], 512 * 256, false)).unwrap();
        assert_eq!((w6.transfer_blocks(), w6.is_read()), (Some(256), Some(false)));
    }

    #[test]
    fn bad_cbws_are_refused() {
        assert_eq!(Cbw::parse(&[0; 30]), Err(CbwError::Length(30)));
        let mut b = cbw(&[0], 0, false);
        b[0] = 0;
        assert!(matches!(Cbw::parse(&b), Err(CbwError::Signature(_))));
        let mut b = cbw(&[0], 0, false);
        b[14] = 17;
        assert_eq!(Cbw::parse(&b), Err(CbwError::CdbLength(17)));
        let mut b = cbw(&[0], 0, false);
        b[14] = 0;
        assert_eq!(Cbw::parse(&b), Err(CbwError::CdbLength(0)));
    }

    #[test]
    fn csw_round_trips() {
        let c = Csw { tag: 9, residue: 512, status: 1 };
        assert_eq!(Csw::parse(&c.encode()), Some(c));
        assert_eq!(Csw::parse(&[0; 13]), None);
        assert_eq!(Csw::parse(&[0; 12]), None);
    }
}

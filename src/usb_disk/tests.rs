//! The virtual disk driven as Linux's usb-storage drives it: CBW, data
//! phase, CSW; every SCSI command it answers, and hostile transfers.

use super::*;
use crate::msc::CSW_LEN;

const BLOCKS: u64 = 128;

fn disk(read_only: bool) -> BulkOnlyDisk<Vec<u8>> {
    let image: Vec<u8> = (0..BLOCKS * BLOCK).map(|i| (i * 7 % 251) as u8).collect();
    BulkOnlyDisk::new(image, read_only, "0001")
}

fn cbw(tag: u32, len: u32, data_in: bool, cdb: &[u8]) -> Vec<u8> {
    crate::msc::Cbw::new(tag, len, data_in, cdb).encode().to_vec()
}

/// Runs one command with an IN data phase; returns the data and the CSW.
fn run_in(d: &mut BulkOnlyDisk<Vec<u8>>, len: u32, cdb: &[u8]) -> (Vec<u8>, Csw) {
    assert_eq!(d.bulk_out(&cbw(9, len, true, cdb)), OutResult::Ok);
    let mut data = Vec::new();
    if len > 0 {
        match d.bulk_in(len as usize) {
            InResult::Data(v) => data = v,
            InResult::Stall => {}
        }
    }
    (data, csw(d))
}

/// Runs one command with an OUT data phase (or none).
fn run_out(d: &mut BulkOnlyDisk<Vec<u8>>, cdb: &[u8], data: &[u8]) -> Csw {
    assert_eq!(d.bulk_out(&cbw(9, data.len() as u32, false, cdb)), OutResult::Ok);
    if !data.is_empty() {
        assert_eq!(d.bulk_out(data), OutResult::Ok);
    }
    csw(d)
}

fn csw(d: &mut BulkOnlyDisk<Vec<u8>>) -> Csw {
    match d.bulk_in(CSW_LEN) {
        InResult::Data(v) => Csw::parse(&v).expect("a CSW"),
        InResult::Stall => panic!("no CSW"),
    }
}

fn sense(d: &mut BulkOnlyDisk<Vec<u8>>) -> (u8, u8) {
    let (s, c) = run_in(d, 18, &[0x03, 0, 0, 0, 18, 0]);
    assert_eq!(c.status, 0);
    (s[2], s[12])
}

#[test]
fn inquiry_standard_data_and_vpd_pages() {
    let mut d = disk(false);
    let (s, c) = run_in(&mut d, 36, &[0x12, 0, 0, 0, 36, 0]);
    assert_eq!((c.status, c.residue, c.tag), (0, 0, 9));
    assert_eq!((s[0], s.len()), (0x00, 36), "direct-access device");
    assert_eq!(&s[8..16], b"spicetap");
    // Supported pages, then the serial number.
    let (s, _) = run_in(&mut d, 64, &[0x12, 1, 0x00, 0, 64, 0]);
    assert_eq!(s, [0, 0, 0, 3, 0x00, 0x80, 0x83]);
    let (s, c) = run_in(&mut d, 64, &[0x12, 1, 0x80, 0, 64, 0]);
    assert_eq!((&s[4..], c.residue), (&b"0001"[..], 56));
    // A page it does not have: CHECK CONDITION, ILLEGAL REQUEST, INVALID FIELD IN CDB.
    let (_, c) = run_in(&mut d, 64, &[0x12, 1, 0xb0, 0, 64, 0]);
    assert_eq!(c.status, 1);
    assert_eq!(sense(&mut d), (sense_key::ILLEGAL_REQUEST, 0x24));
}

#[test]
fn capacity_10_and_16() {
    let mut d = disk(false);
    let (s, c) = run_in(&mut d, 8, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(c.status, 0);
    assert_eq!(s, [0, 0, 0, 127, 0, 0, 2, 0]);
    let mut cdb = [0u8; 16];
    cdb[0] = 0x9e;
    cdb[1] = 0x10;
    cdb[13] = 32;
    let (s, _) = run_in(&mut d, 32, &cdb);
    assert_eq!(&s[..12], &[0, 0, 0, 0, 0, 0, 0, 127, 0, 0, 2, 0]);
}

#[test]
fn reads_come_from_the_image_in_pieces() {
    let mut d = disk(false);
    // READ(10) of 4 blocks from LBA 2, fetched in 3 bulk IN pieces.
    assert_eq!(d.bulk_out(&cbw(1, 2048, true, &[0x28, 0, 0, 0, 0, 2, 0, 0, 4, 0])), OutResult::Ok);
    let mut got = Vec::new();
    for n in [1000, 1000, 1000] {
        let InResult::Data(v) = d.bulk_in(n) else { panic!() };
        got.extend(v);
    }
    assert_eq!(got, d.storage()[1024..3072]);
    assert_eq!(csw(&mut d), Csw { tag: 1, residue: 0, status: 0 });
    // READ(12), READ(16) and READ(6) agree.
    let (a, _) = run_in(&mut d, 512, &[0xa8, 0, 0, 0, 0, 5, 0, 0, 0, 1, 0, 0]);
    let (b, _) = run_in(&mut d, 512, &[0x88, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 1, 0, 0]);
    let (c, _) = run_in(&mut d, 512, &[0x08, 0, 0, 5, 1, 0]);
    assert!(a == b && b == c && a == d.storage()[2560..3072]);
}

#[test]
fn writes_land_in_the_image_and_read_only_refuses_them() {
    let mut d = disk(false);
    let data = vec![0xabu8; 1024];
    let c = run_out(&mut d, &[0x2a, 0, 0, 0, 0, 10, 0, 0, 2, 0], &data);
    assert_eq!(c.status, 0);
    assert_eq!(d.storage()[5120..6144], data[..]);
    assert_eq!(run_out(&mut d, &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]).status, 0, "SYNCHRONIZE CACHE");

    let mut ro = disk(true);
    let before = ro.storage().clone();
    let c = run_out(&mut ro, &[0x2a, 0, 0, 0, 0, 10, 0, 0, 2, 0], &data);
    assert_eq!((c.status, c.residue), (1, 1024));
    assert_eq!(ro.storage(), &before, "the image is unchanged");
    assert_eq!(sense(&mut ro), (sense_key::DATA_PROTECT, 0x27));
    // MODE SENSE shows the write-protect bit.
    let (s, _) = run_in(&mut ro, 4, &[0x1a, 0, 0x00, 0, 4, 0]);
    assert_eq!(s[2] & 0x80, 0x80);
    let (s, _) = run_in(&mut d, 4, &[0x1a, 0, 0x00, 0, 4, 0]);
    assert_eq!(s[2] & 0x80, 0);
    let (s, c) = run_in(&mut ro, 255, &[0x5a, 0, 0x3f, 0, 0, 0, 0, 0, 255, 0]);
    assert_eq!((c.status, s[3] & 0x80, s.len()), (0, 0x80, 28));
}

#[test]
fn reads_and_writes_past_the_end_are_lba_out_of_range() {
    let mut d = disk(false);
    let (_, c) = run_in(&mut d, 1024, &[0x28, 0, 0, 0, 0, 127, 0, 0, 2, 0]);
    assert_eq!(c.status, 1);
    assert_eq!(sense(&mut d), (sense_key::ILLEGAL_REQUEST, 0x21));
    let c = run_out(&mut d, &[0x8a, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 0, 0], &[0; 512]);
    assert_eq!(c.status, 1, "an LBA that overflows");
    let (_, c) = run_in(&mut d, 0, &[0x2f, 0, 0, 0, 0, 200, 0, 0, 1, 0]);
    assert_eq!(c.status, 1, "VERIFY past the end");
}

#[test]
fn the_small_commands_succeed() {
    let mut d = disk(false);
    for cdb in [
        &[0x00u8, 0, 0, 0, 0, 0][..],
        &[0x1e, 0, 0, 0, 1, 0],
        &[0x1b, 0, 0, 0, 1, 0],
        &[0x2f, 0, 0, 0, 0, 0, 0, 0, 8, 0],
    ] {
        assert_eq!(run_out(&mut d, cdb, &[]).status, 0, "{cdb:02x?}");
    }
    let (s, c) = run_in(&mut d, 16, &[0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0]);
    assert_eq!((c.status, &s[..4]), (0, &[0, 0, 0, 8][..]), "REPORT LUNS: one LUN");
    assert_eq!(d.max_lun(), 0);
}

#[test]
fn unknown_commands_get_invalid_command_operation_code() {
    let mut d = disk(false);
    let (_, c) = run_in(&mut d, 8, &[0xd7, 0, 0, 0, 0, 0]);
    assert_eq!((c.status, c.residue), (1, 8));
    assert_eq!(sense(&mut d), (sense_key::ILLEGAL_REQUEST, 0x20));
    // The sense is cleared once read.
    assert_eq!(sense(&mut d), (0, 0));
}

#[test]
fn hostile_transfers_stall_or_fail_without_allocating() {
    let mut d = disk(false);
    // A CBW of the wrong size, a wrong signature, a zero CB length.
    assert_eq!(d.bulk_out(&[0u8; 30]), OutResult::Stall);
    let mut bad = cbw(1, 0, false, &[0]);
    bad[0] = 0;
    assert_eq!(d.bulk_out(&bad), OutResult::Stall);
    let mut bad = cbw(1, 0, false, &[0]);
    bad[14] = 0;
    assert_eq!(d.bulk_out(&bad), OutResult::Stall);
    // IN with no command: stall.
    assert_eq!(d.bulk_in(512), InResult::Stall);
    // A data phase over the bound: refused; the IN side stalls, then the CSW.
    assert_eq!(d.bulk_out(&cbw(2, u32::MAX, true, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0])), OutResult::Ok);
    assert_eq!(d.bulk_in(1 << 30), InResult::Stall);
    assert_eq!(csw(&mut d).status, 1);
    // The host expects less than the command moves: phase error.
    let (_, c) = run_in(&mut d, 100, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
    assert_eq!(c.status, 2);
    // OUT data while the CSW is due: stall, and the CSW still comes.
    assert_eq!(d.bulk_out(&cbw(3, 0, false, &[0x00, 0, 0, 0, 0, 0])), OutResult::Ok);
    assert_eq!(d.bulk_out(&[1, 2, 3]), OutResult::Stall);
    assert_eq!(csw(&mut d).tag, 3);
    // Bulk-Only Mass Storage Reset returns to the command phase.
    assert_eq!(d.bulk_out(&cbw(4, 512, true, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0])), OutResult::Ok);
    d.reset();
    assert_eq!(d.bulk_in(512), InResult::Stall);
}

#[test]
fn random_traffic_never_panics() {
    let mut x: u32 = 0x9e37_79b9;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let mut d = disk(false);
    for _ in 0..20_000 {
        match next() % 4 {
            0 => {
                let mut cdb = [0u8; 16];
                for b in &mut cdb {
                    *b = next() as u8;
                }
                let len = next() % 70_000;
                let _ = d.bulk_out(&cbw(next(), len, next() % 2 == 0, &cdb[..(next() % 16 + 1) as usize]));
            }
            1 => {
                let n = (next() % 4096) as usize;
                let _ = d.bulk_out(&vec![next() as u8; n]);
            }
            2 => {
                let _ = d.bulk_in((next() % 70_000) as usize);
            }
            _ => d.reset(),
        }
    }
}

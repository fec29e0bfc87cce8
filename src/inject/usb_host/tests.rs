//! The usb-host driven by a scripted usb-guest that speaks as QEMU's
//! usb-redir does; the guest side parses spicetap's answers with the same
//! usbredir parser.

use super::*;
use crate::msc::Csw;

const GUEST_CAPS: u32 = 1 << cap::CONNECT_DEVICE_VERSION
    | 1 << cap::FILTER
    | 1 << cap::DEVICE_DISCONNECT_ACK
    | 1 << cap::EP_INFO_MAX_PACKET_SIZE
    | 1 << cap::BITS64_IDS
    | 1 << cap::BITS32_BULK_LENGTH
    | 1 << cap::BULK_RECEIVING;

/// The guest's end: sends packets, parses the host's.
struct Guest {
    host: UsbHost<Vec<u8>>,
    view: UsbredirDecoder,
}

impl Guest {
    fn new(read_only: bool) -> Self {
        let image: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 253) as u8).collect();
        let host = UsbHost::new(BulkOnlyDisk::new(image, read_only, "42"), "42");
        let mut g = Self { host, view: UsbredirDecoder::new(1 << 20) };
        let mut version = [0u8; 64];
        version[..4].copy_from_slice(b"qemu");
        g.send(packet_type::HELLO, 0, &version, &GUEST_CAPS.to_le_bytes());
        g
    }

    fn send(&mut self, ty: u32, id: u64, th: &[u8], data: &[u8]) -> Vec<Packet> {
        let ids64 = ty != packet_type::HELLO;
        let bytes = encode_packet(ty, id, ids64, th, data);
        let mut mine = Vec::new();
        self.view.feed(Side::Guest, &bytes, &mut mine).unwrap();
        self.host.feed(&bytes).unwrap();
        let mut out = Vec::new();
        self.view.feed(Side::Host, &self.host.take_output(), &mut out).unwrap();
        out
    }

    fn control_in(&mut self, id: u64, requesttype: u8, request: u8, value: u16, index: u16, length: u16) -> Packet {
        let mut th = vec![0x80, request, requesttype, 0];
        th.extend(value.to_le_bytes());
        th.extend(index.to_le_bytes());
        th.extend(length.to_le_bytes());
        let mut r = self.send(packet_type::CONTROL_PACKET, id, &th, &[]);
        assert_eq!(r.len(), 1);
        r.remove(0)
    }

    fn bulk(&mut self, id: u64, endpoint: u8, length: u32, data: &[u8]) -> Packet {
        let mut th = vec![endpoint, 0];
        th.extend((length as u16).to_le_bytes());
        th.extend(0u32.to_le_bytes());
        th.extend(((length >> 16) as u16).to_le_bytes());
        let mut r = self.send(packet_type::BULK_PACKET, id, &th, data);
        assert_eq!(r.len(), 1, "{r:?}");
        r.remove(0)
    }
}

fn cbw(tag: u32, len: u32, data_in: bool, cdb: &[u8]) -> Vec<u8> {
    crate::msc::Cbw::new(tag, len, data_in, cdb).encode().to_vec()
}

#[test]
fn the_device_is_announced_after_the_guests_hello() {
    let image = vec![0u8; 4096];
    let mut host = UsbHost::new(BulkOnlyDisk::new(image, false, "1"), "1");
    let mut view = UsbredirDecoder::new(1024);
    let mut seen = Vec::new();
    view.feed(Side::Host, &host.take_output(), &mut seen).unwrap();
    assert_eq!(seen.len(), 1, "only the hello before the guest's");
    let TypeHeader::Hello { caps, .. } = &seen[0].header else { panic!() };
    let names = crate::usbredir::cap_names(caps);
    for needed in ["ep_info_max_packet_size", "32bits_bulk_length", "64bits_ids"] {
        assert!(names.iter().any(|n| n == needed), "QEMU on xHCI needs {needed}");
    }
    let g = Guest::new(false);
    assert!(g.host.connected());
}

#[test]
fn descriptors_describe_a_bulk_only_disk() {
    let mut g = Guest::new(false);
    let d = g.control_in(1, 0x80, 6, 0x0100, 0, 18);
    assert_eq!(d.data.len(), 18);
    assert_eq!(u16::from_le_bytes([d.data[8], d.data[9]]), VENDOR_ID);
    let c = g.control_in(2, 0x80, 6, 0x0200, 0, 255);
    assert_eq!(c.data.len(), 32);
    assert_eq!(&c.data[9..18], &[9, 4, 0, 0, 2, 8, 6, 0x50, 0], "one Bulk-Only SCSI interface");
    let short = g.control_in(3, 0x80, 6, 0x0200, 0, 9);
    assert_eq!(short.data.len(), 9, "a descriptor cut at the asked length");
    let s = g.control_in(4, 0x80, 6, 0x0302, 0x0409, 255);
    let text: String = char::decode_utf16(s.data[2..].chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])))
        .map(|c| c.unwrap())
        .collect();
    assert_eq!(text, "spicetap virtual disk");
    let lun = g.control_in(5, 0xa1, 0xfe, 0, 0, 1);
    assert_eq!(lun.data, [0], "Get Max LUN");
    let TypeHeader::ControlPacket { status, .. } = g.control_in(6, 0x80, 6, 0x0700, 0, 10).header else { panic!() };
    assert_eq!(status, crate::usbredir::status::STALL, "an unknown descriptor stalls");
}

#[test]
fn set_configuration_reannounces_the_endpoints_then_answers() {
    let mut g = Guest::new(false);
    let r = g.send(packet_type::SET_CONFIGURATION, 7, &[1], &[]);
    let types: Vec<u32> = r.iter().map(|p| p.packet_type).collect();
    assert_eq!(types, [packet_type::INTERFACE_INFO, packet_type::EP_INFO, packet_type::CONFIGURATION_STATUS]);
    assert_eq!(r[2].header, TypeHeader::ConfigurationStatus { status: 0, configuration: 1 });
    assert_eq!(r[2].id, 7);
    let TypeHeader::EpInfo { endpoints } = &r[1].header else { panic!() };
    let bulk: Vec<_> =
        endpoints.iter().filter(|e| e.transfer_type == 2).map(|e| (e.address, e.max_packet_size)).collect();
    assert_eq!(bulk, [(EP_OUT, Some(512)), (EP_IN, Some(512))]);
}

#[test]
fn a_scsi_read_crosses_as_usb_storage_moves_it() {
    let mut g = Guest::new(false);
    g.send(packet_type::SET_CONFIGURATION, 1, &[1], &[]);
    // READ(10) of 2 blocks from LBA 3.
    let out = g.bulk(10, EP_OUT, 31, &cbw(5, 1024, true, &[0x28, 0, 0, 0, 0, 3, 0, 0, 2, 0]));
    assert_eq!(out.header, TypeHeader::BulkPacket { endpoint: EP_OUT, status: 0, length: 31, stream_id: 0 });
    let data = g.bulk(11, EP_IN, 1024, &[]);
    assert_eq!(data.data.len(), 1024);
    let expected: Vec<u8> = (1536..2560u32).map(|i| (i % 253) as u8).collect();
    assert_eq!(data.data, expected);
    let csw = g.bulk(12, EP_IN, 13, &[]);
    assert_eq!(Csw::parse(&csw.data), Some(Csw { tag: 5, residue: 0, status: 0 }));
}

#[test]
fn a_write_lands_in_the_image_and_a_bad_cbw_stalls() {
    let mut g = Guest::new(false);
    g.bulk(1, EP_OUT, 31, &cbw(6, 512, false, &[0x2a, 0, 0, 0, 0, 1, 0, 0, 1, 0]));
    g.bulk(2, EP_OUT, 512, &[0x5a; 512]);
    let csw = g.bulk(3, EP_IN, 13, &[]);
    assert_eq!(Csw::parse(&csw.data).map(|c| c.status), Some(0));
    assert_eq!(g.host.disk().storage()[512..1024], [0x5a; 512]);
    let stalled = g.bulk(4, EP_OUT, 31, &[0u8; 31]);
    assert!(matches!(stalled.header, TypeHeader::BulkPacket { status: 4, .. }), "{stalled:?}");
}

#[test]
fn a_broken_guest_stream_is_an_error() {
    let mut g = Guest::new(false);
    // A device_connect from the guest.
    let bytes = encode_packet(packet_type::DEVICE_CONNECT, 0, true, &[0; 10], &[]);
    assert!(g.host.feed(&bytes).is_err());
}

//! The usbredir stream parser on packets built as usbredirparser writes
//! them, cut at every byte, and on hostile streams.

use super::*;

/// A usbredir packet: header (32- or 64-bit id), type header, data.
fn packet(ty: u32, id: u64, ids64: bool, type_header: &[u8], data: &[u8]) -> Vec<u8> {
    let mut v = ty.to_le_bytes().to_vec();
    v.extend(((type_header.len() + data.len()) as u32).to_le_bytes());
    if ids64 {
        v.extend(id.to_le_bytes());
    } else {
        v.extend((id as u32).to_le_bytes());
    }
    v.extend_from_slice(type_header);
    v.extend_from_slice(data);
    v
}

fn hello(version: &str, caps: u32) -> Vec<u8> {
    let mut th = [0u8; 64];
    th[..version.len()].copy_from_slice(version.as_bytes());
    packet(packet_type::HELLO, 0, false, &th, &caps.to_le_bytes())
}

const ALL_CAPS: u32 = 1 << cap::CONNECT_DEVICE_VERSION
    | 1 << cap::FILTER
    | 1 << cap::DEVICE_DISCONNECT_ACK
    | 1 << cap::EP_INFO_MAX_PACKET_SIZE
    | 1 << cap::BITS64_IDS
    | 1 << cap::BITS32_BULK_LENGTH;

fn bulk(endpoint: u8, status: u8, length: u32) -> Vec<u8> {
    let mut th = vec![endpoint, status];
    th.extend((length as u16).to_le_bytes());
    th.extend(0u32.to_le_bytes());
    th.extend(((length >> 16) as u16).to_le_bytes());
    th
}

/// What QEMU (the guest) sends: its hello, a GET_DESCRIPTOR, a CBW on
/// bulk OUT, a bulk IN request.
fn guest_stream() -> Vec<u8> {
    let mut v = hello("qemu usb-redir guest 7.2.0", ALL_CAPS);
    // GET_DESCRIPTOR(DEVICE), 18 bytes: ep 0x80, request 6, type 0x80.
    let mut setup = vec![0x80, 6, 0x80, 0];
    setup.extend(0x0100u16.to_le_bytes());
    setup.extend(0u16.to_le_bytes());
    setup.extend(18u16.to_le_bytes());
    v.extend(packet(packet_type::CONTROL_PACKET, 1, true, &setup, &[]));
    v.extend(packet(packet_type::BULK_PACKET, 2, true, &bulk(0x02, 0, 31), &[0x55; 31]));
    v.extend(packet(packet_type::BULK_PACKET, 3, true, &bulk(0x81, 0, 512), &[]));
    v
}

/// What the device side sends: hello, interface and endpoint info, device
/// connect, the descriptor, the OUT status and 512 bytes IN.
fn host_stream() -> Vec<u8> {
    let mut v = hello("spice-gtk 0.42", ALL_CAPS);
    let mut ii = vec![0u8; 132];
    ii[0] = 1; // one interface
    ii[36] = 8; // mass storage
    ii[68] = 6;
    ii[100] = 0x50;
    v.extend(packet(packet_type::INTERFACE_INFO, 0, true, &ii, &[]));
    let mut ep = vec![255u8; 160];
    for (i, t) in [(0usize, 0u8), (0x10, 0), (0x11, 2), (0x02, 2)] {
        ep[i] = t;
        ep[32 + i] = 0;
        ep[64 + i] = 0;
        ep[96 + 2 * i..98 + 2 * i].copy_from_slice(&512u16.to_le_bytes());
    }
    v.extend(packet(packet_type::EP_INFO, 0, true, &ep, &[]));
    let mut dc = vec![2u8, 0, 0, 0];
    dc.extend(0x2b23u16.to_le_bytes());
    dc.extend(0xcdcdu16.to_le_bytes());
    dc.extend(0x0100u16.to_le_bytes());
    v.extend(packet(packet_type::DEVICE_CONNECT, 0, true, &dc, &[]));
    let mut setup = vec![0x80, 6, 0x80, 0];
    setup.extend(0x0100u16.to_le_bytes());
    setup.extend(0u16.to_le_bytes());
    setup.extend(18u16.to_le_bytes());
    v.extend(packet(packet_type::CONTROL_PACKET, 1, true, &setup, &[0x12; 18]));
    v.extend(packet(packet_type::BULK_PACKET, 2, true, &bulk(0x02, 0, 31), &[]));
    v.extend(packet(packet_type::BULK_PACKET, 3, true, &bulk(0x81, 0, 512), &[0xaa; 512]));
    v
}

/// Feeds both hellos first (as the session does), then the rest of each
/// stream in pieces of `chunk` bytes.
fn decode(chunk: usize) -> Vec<Packet> {
    let mut d = UsbredirDecoder::new(1 << 20);
    let mut out = Vec::new();
    let (g, h) = (guest_stream(), host_stream());
    let hello_len = 12 + 64 + 4;
    d.feed(Side::Guest, &g[..hello_len], &mut out).unwrap();
    d.feed(Side::Host, &h[..hello_len], &mut out).unwrap();
    for c in h[hello_len..].chunks(chunk) {
        d.feed(Side::Host, c, &mut out).unwrap();
    }
    for c in g[hello_len..].chunks(chunk) {
        d.feed(Side::Guest, c, &mut out).unwrap();
    }
    out
}

#[test]
fn a_session_parses_into_its_packets() {
    let p = decode(usize::MAX);
    let names: Vec<_> = p.iter().map(|p| type_name(p.packet_type).unwrap()).collect();
    assert_eq!(
        names,
        [
            "usb_redir_hello",
            "usb_redir_hello",
            "usb_redir_interface_info",
            "usb_redir_ep_info",
            "usb_redir_device_connect",
            "usb_redir_control_packet",
            "usb_redir_bulk_packet",
            "usb_redir_bulk_packet",
            "usb_redir_control_packet",
            "usb_redir_bulk_packet",
            "usb_redir_bulk_packet",
        ]
    );
    assert_eq!(p[0].header, TypeHeader::Hello { version: "qemu usb-redir guest 7.2.0".into(), caps: vec![ALL_CAPS] });
    assert_eq!(
        p[2].header,
        TypeHeader::InterfaceInfo {
            interfaces: vec![InterfaceInfo { interface: 0, class: 8, subclass: 6, protocol: 0x50 }]
        }
    );
    let TypeHeader::EpInfo { endpoints } = &p[3].header else { panic!("{:?}", p[3]) };
    let addresses: Vec<u8> = endpoints.iter().map(|e| e.address).collect();
    assert_eq!(addresses, [0x00, 0x02, 0x80, 0x81]);
    assert!(endpoints.iter().all(|e| e.max_packet_size == Some(512)));
    assert_eq!(
        p[4].header,
        TypeHeader::DeviceConnect {
            speed: 2,
            class: 0,
            subclass: 0,
            protocol: 0,
            vendor_id: 0x2b23,
            product_id: 0xcdcd,
            device_version_bcd: Some(0x0100)
        }
    );
    // The descriptor comes back with the request's id, 64-bit now.
    assert_eq!((p[5].side, p[5].id, p[5].data_len), (Side::Host, 1, 18));
    assert_eq!((p[8].side, p[8].id, p[8].data.len()), (Side::Guest, 1, 0));
    assert_eq!(p[7].header, TypeHeader::BulkPacket { endpoint: 0x81, status: 0, length: 512, stream_id: 0 });
    assert_eq!(p[7].data, vec![0xaa; 512]);
    assert_eq!(p[9].data, vec![0x55; 31]);
}

#[test]
fn any_cut_of_the_stream_gives_the_same_packets() {
    let whole = decode(usize::MAX);
    for chunk in [1, 2, 3, 7, 13, 64, 100] {
        assert_eq!(decode(chunk), whole, "chunks of {chunk}");
    }
}

#[test]
fn ids_stay_32_bits_unless_both_hellos_have_the_cap() {
    let mut d = UsbredirDecoder::new(64);
    let mut out = Vec::new();
    let old_guest = ALL_CAPS & !(1 << cap::BITS64_IDS | 1 << cap::BITS32_BULK_LENGTH);
    d.feed(Side::Guest, &hello("guest", old_guest), &mut out).unwrap();
    d.feed(Side::Host, &hello("host", ALL_CAPS), &mut out).unwrap();
    d.feed(Side::Guest, &packet(packet_type::RESET, 0x1234_5678, false, &[], &[]), &mut out).unwrap();
    assert_eq!((out[2].packet_type, out[2].id), (packet_type::RESET, 0x1234_5678));
    // Without 32bits_bulk_length on both sides the bulk header is 8 bytes.
    let th = &bulk(0x02, 0, 4)[..8];
    d.feed(Side::Guest, &packet(packet_type::BULK_PACKET, 9, false, th, &[1, 2, 3, 4]), &mut out).unwrap();
    assert_eq!(out[3].data, [1, 2, 3, 4]);
}

#[test]
fn data_beyond_the_keep_bound_is_counted_not_kept() {
    let mut d = UsbredirDecoder::new(4096);
    let mut out = Vec::new();
    d.feed(Side::Guest, &hello("g", ALL_CAPS), &mut out).unwrap();
    d.feed(Side::Host, &hello("h", ALL_CAPS), &mut out).unwrap();
    let big = vec![7u8; 1 << 20];
    d.feed(Side::Host, &packet(packet_type::BULK_PACKET, 5, true, &bulk(0x81, 0, 1 << 20), &big), &mut out).unwrap();
    assert_eq!((out[2].data.len(), out[2].data_len), (4096, 1 << 20));
}

#[test]
fn hostile_streams_are_typed_errors_and_stop_the_decoder() {
    let started = || {
        let mut d = UsbredirDecoder::new(64);
        let mut out = Vec::new();
        d.feed(Side::Guest, &hello("g", ALL_CAPS), &mut out).unwrap();
        d.feed(Side::Host, &hello("h", ALL_CAPS), &mut out).unwrap();
        d
    };
    let mut out = Vec::new();
    // Anything before the hello.
    let mut d = UsbredirDecoder::new(64);
    let reset = packet(packet_type::RESET, 0, false, &[], &[]);
    assert_eq!(
        d.feed(Side::Guest, &reset, &mut out),
        Err(UsbredirError::BeforeHello { side: Side::Guest, packet_type: packet_type::RESET })
    );
    // Errors are sticky.
    assert!(d.feed(Side::Host, &hello("h", 0), &mut out).is_err());
    // An unknown type.
    let mut d = started();
    assert_eq!(d.feed(Side::Guest, &packet(99, 0, true, &[], &[]), &mut out), Err(UsbredirError::UnknownType(99)));
    // A device_connect from the guest.
    let mut d = started();
    let e = d.feed(Side::Guest, &packet(packet_type::DEVICE_CONNECT, 0, true, &[0; 10], &[]), &mut out);
    assert_eq!(e, Err(UsbredirError::WrongSender { side: Side::Guest, packet_type: packet_type::DEVICE_CONNECT }));
    // A length shorter than the type header.
    let mut d = started();
    let e = d.feed(Side::Guest, &packet(packet_type::CONTROL_PACKET, 0, true, &[0; 4], &[]), &mut out);
    assert_eq!(e, Err(UsbredirError::ShortPacket { packet_type: packet_type::CONTROL_PACKET, length: 4, need: 10 }));
    // A bulk transfer over usbredirparser's bound.
    let mut d = started();
    let e = d.feed(Side::Guest, &packet(packet_type::BULK_PACKET, 0, true, &bulk(0x81, 0, 0x0900_0000), &[]), &mut out);
    assert!(matches!(e, Err(UsbredirError::TooLarge { .. })), "{e:?}");
    // Data on an IN request from the guest.
    let mut d = started();
    let e = d.feed(Side::Guest, &packet(packet_type::BULK_PACKET, 0, true, &bulk(0x81, 0, 4), &[1, 2, 3, 4]), &mut out);
    assert!(matches!(e, Err(UsbredirError::DataMismatch { expected: 0, .. })), "{e:?}");
    // OUT data that disagrees with the header's length.
    let mut d = started();
    let e = d.feed(Side::Guest, &packet(packet_type::BULK_PACKET, 0, true, &bulk(0x02, 0, 8), &[1, 2, 3, 4]), &mut out);
    assert!(matches!(e, Err(UsbredirError::DataMismatch { expected: 8, data_len: 4, .. })), "{e:?}");
    // Data on a packet that has none.
    let mut d = started();
    let e = d.feed(Side::Host, &packet(packet_type::DEVICE_DISCONNECT, 0, true, &[], &[1]), &mut out);
    assert!(matches!(e, Err(UsbredirError::DataMismatch { .. })), "{e:?}");
    // A hello with absurd caps data.
    let mut d = UsbredirDecoder::new(64);
    let mut big_hello = packet(packet_type::HELLO, 0, false, &[0; 64], &[]);
    big_hello[4..8].copy_from_slice(&(64u32 + 0x1000_0000).to_le_bytes());
    assert!(matches!(d.feed(Side::Guest, &big_hello, &mut out), Err(UsbredirError::TooLarge { .. })));
}

#[test]
fn random_streams_never_panic() {
    let mut x: u32 = 0x2545_f491;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let (g, h) = (guest_stream(), host_stream());
    for _ in 0..500 {
        let (mut g, mut h) = (g.clone(), h.clone());
        for _ in 0..3 {
            let i = next() as usize % g.len();
            g[i] ^= next() as u8;
            let i = next() as usize % h.len();
            h[i] ^= next() as u8;
        }
        let mut d = UsbredirDecoder::new(256);
        let mut out = Vec::new();
        let cut = next() as usize % 200;
        let _ = d.feed(Side::Guest, &g[..cut.min(g.len())], &mut out);
        let _ = d.feed(Side::Host, &h, &mut out);
        let _ = d.feed(Side::Guest, &g[cut.min(g.len())..], &mut out);
    }
}

#[test]
fn names_follow_usbredirproto_h() {
    assert_eq!(type_name(packet_type::BULK_PACKET), Some("usb_redir_bulk_packet"));
    assert_eq!(type_name(packet_type::BULK_RECEIVING_STATUS), Some("usb_redir_bulk_receiving_status"));
    assert_eq!(type_name(28), None);
    assert_eq!(type_name(105), None);
    assert_eq!(cap_names(&[1 << 5 | 1 << 6, 1]), ["64bits_ids", "32bits_bulk_length", "cap_32"]);
}

//! Hostile and broken peers: each is logged and closed, nothing crashes,
//! and other sessions keep working.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use support::*;

/// Reads until the proxy closes the connection (EOF or reset), bounded.
fn assert_closed(mut s: TcpStream, what: &str) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("{what}: connection not closed by the proxy: {e}"),
        }
    }
}

fn link_header(size: u32) -> Vec<u8> {
    let mut v = b"REDQ".to_vec();
    v.extend_from_slice(&2u32.to_le_bytes());
    v.extend_from_slice(&2u32.to_le_bytes());
    v.extend_from_slice(&size.to_le_bytes());
    v
}

#[test]
fn bad_clients_are_closed_and_others_keep_working() {
    let dir = Scratch::new("bad-input");
    let qemu = Qemu::bios(&dir.path, "");
    let mut tap = Spicetap::start(&dir.path, &format!("127.0.0.1:{}", qemu.port), true, &[]);
    // The settled SeaBIOS screen (a blank 640x480 one shows before it).
    same_screen(|out| spicy_screenshot(qemu.port, out), |out| spicy_screenshot(tap.port(), out), &dir.path);
    let shot = dir.path.join("via.ppm");

    // A session that stays open across all the bad input.
    let mut survivor = link_raw(tap.addr, 1, 0);

    // An HTTP request.
    let mut s = TcpStream::connect(tap.addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: spicetap\r\n\r\n").unwrap();
    assert!(assert_closed(s, "http").is_empty());

    // Random bytes.
    let mut s = TcpStream::connect(tap.addr).unwrap();
    let mut x: u32 = 0x1234_5678;
    let noise: Vec<u8> = (0..256)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    s.write_all(&noise).unwrap();
    assert!(assert_closed(s, "random").is_empty());

    // A truncated link message: the header promises 40 bytes, 10 come.
    let mut s = TcpStream::connect(tap.addr).unwrap();
    let mut msg = link_header(40);
    msg.extend_from_slice(&[0u8; 10]);
    s.write_all(&msg).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert!(assert_closed(s, "truncated").is_empty());

    // A link size over the 4 KiB bound.
    let mut s = TcpStream::connect(tap.addr).unwrap();
    s.write_all(&link_header(1 << 20)).unwrap();
    assert!(assert_closed(s, "oversized").is_empty());

    // Caps counts beyond the bound.
    let mut s = TcpStream::connect(tap.addr).unwrap();
    let mut msg = link_header(18);
    msg.extend_from_slice(&[0, 0, 0, 0, 1, 0]);
    msg.extend_from_slice(&1000u32.to_le_bytes());
    msg.extend_from_slice(&0u32.to_le_bytes());
    msg.extend_from_slice(&18u32.to_le_bytes());
    s.write_all(&msg).unwrap();
    assert!(assert_closed(s, "caps").is_empty());

    // A linked channel that then declares an absurd message size.
    let mut s = link_raw(tap.addr, 1, 0);
    let mut header = 101u16.to_le_bytes().to_vec();
    header.extend_from_slice(&0xffff_fff0u32.to_le_bytes());
    s.write_all(&header).unwrap();
    assert_closed(s, "absurd size");

    // The proxy still serves: the open session is alive, a new one works.
    survivor.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 64];
    assert!(survivor.read(&mut buf).unwrap() > 0, "the open session still gets server messages");
    // The same picture again (SeaBIOS's text cursor blinks: a few tries).
    let after = dir.path.join("after.ppm");
    let same = (0..5).any(|_| {
        spicy_screenshot(tap.port(), &after);
        let same = read_ppm(&shot) == read_ppm(&after);
        if !same {
            std::thread::sleep(Duration::from_millis(400));
        }
        same
    });
    assert!(same, "a new session through the proxy shows another picture");
    drop(survivor);

    tap.stop();
    let log = tap.log_text();
    for needle in [
        "not SPICE: magic [47, 45, 54, 20]",
        "link message incomplete",
        "outside 18..=4096",
        "caps words, more than 16",
        "absurd message size",
    ] {
        assert!(log.contains(needle), "log lacks {needle:?}:\n{log}");
    }
    assert!(log.contains("client=127.0.0.1:"), "bad clients are logged with their address");

    let too_large: Vec<_> = tap
        .sessions()
        .iter()
        .flat_map(|d| channels(&session_json(d)))
        .filter(|c| c["end"]["reason"] == "message_too_large")
        .collect();
    assert_eq!(too_large.len(), 1, "the absurd header is recorded in session.json");
    assert!(too_large[0]["end"]["error"].as_str().unwrap().contains("4294967280"));
}

#[test]
fn unreachable_upstream_gets_a_spice_link_error() {
    let dir = Scratch::new("unreachable");
    let dead = free_port();
    let mut tap = Spicetap::start(&dir.path, &format!("127.0.0.1:{dead}"), false, &[]);
    let mut s = TcpStream::connect(tap.addr).unwrap();
    let mut body = vec![0, 0, 0, 0, 1, 0];
    body.extend_from_slice(&1u32.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    body.extend_from_slice(&18u32.to_le_bytes());
    body.extend_from_slice(&0b1011u32.to_le_bytes());
    let mut msg = link_header(body.len() as u32);
    msg.extend_from_slice(&body);
    s.write_all(&msg).unwrap();
    let reply = assert_closed(s, "unreachable");
    assert_eq!(&reply[..4], b"REDQ");
    let error = u32::from_le_bytes(reply[16..20].try_into().unwrap());
    assert_eq!(error, 1, "SPICE_LINK_ERR_ERROR");
    tap.stop();
    let log = tap.log_text();
    assert!(log.contains(&format!("cannot connect upstream 127.0.0.1:{dead}")), "{log}");
}

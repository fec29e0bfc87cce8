//! usbredir channels observed through spicetap: spicy redirects spice-gtk's
//! emulated USB CD-ROM (a 4 MiB file of random bytes) to the Linux guest
//! through spicetap; the guest reads the whole of `/dev/sr0`; the usbmon
//! pcap spicetap writes must be dissected by tshark as USB mass storage
//! and SCSI, and `session.json` must name the device and the bytes read.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

/// `n` bytes of deterministic noise.
#[test]
fn spicy_shared_cd_is_decoded_into_a_usbmon_pcap() {
    const SIZE: usize = 4 * 1024 * 1024;
    let dir = Scratch::new("usbredir-observe");
    let iso = dir.path.join("cd.iso");
    std::fs::write(&iso, noise(SIZE, 0x1234_5678)).unwrap();
    let qemu = Qemu::linux(&dir.path, "", "spicetap.md5=sr0");
    let mut tap = Spicetap::start(&dir.path, &format!("127.0.0.1:{}", qemu.port), true, &[]);
    let x = Xvfb::start();
    let mut spicy = Guard::spawn(
        "spicy",
        Command::new("spicy")
            .args(["-h", "127.0.0.1", "-p", &tap.port().to_string()])
            .arg(format!("--spice-share-cd={}", iso.display()))
            .arg("--spice-usbredir-redirect-on-connect=-1,-1,-1,-1,1")
            .env("DISPLAY", &x.display)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    qemu.wait_serial("SPICETAP-MD5:/dev/sr0:", Duration::from_secs(120));
    let log = qemu.serial_log();
    let line = log.lines().find(|l| l.starts_with("SPICETAP-MD5:/dev/sr0:")).unwrap().trim().to_string();
    let fields: Vec<&str> = line.split(':').collect();
    assert_eq!(fields.get(2).copied(), Some(md5_of(&iso).as_str()), "{line}");
    assert_eq!(fields.get(3).copied(), Some(SIZE.to_string().as_str()), "{line}");
    std::thread::sleep(Duration::from_secs(1));
    spicy.terminate(Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));
    tap.stop();

    let session = tap
        .sessions()
        .into_iter()
        .find(|s| {
            channels(&session_json(s))
                .iter()
                .any(|c| c["type"] == "usbredir" && c["usbredir"]["devices"][0].is_object())
        })
        .expect("a session with a redirected device");
    let s = session_json(&session);
    let ch = channels(&s).into_iter().find(|c| c["usbredir"]["devices"][0].is_object()).unwrap();
    // The SPICE pcap of the channel is complete and dissects as SPICE.
    check_pcap(&session, &ch);
    let u = &ch["usbredir"];
    eprintln!("session.json usbredir: {}", serde_json::to_string_pretty(u).unwrap());
    assert!(u["stopped"].is_null(), "{u}");
    assert_eq!(u["devices"][0]["vendor_product"], "2b23:cdcd", "spice-gtk's emulated CD");
    assert_eq!(u["devices"][0]["interfaces"][0], serde_json::json!([0, 8, 6, 0x50]));
    assert!(u["guest_hello"]["caps"].as_array().unwrap().iter().any(|c| c == "64bits_ids"), "{u}");
    // spicetap inspect reads the usbredir packets out of the channel.
    let text = inspect(&session, &["--channel", "usbredir"]);
    for want in ["usb_redir_hello id 0", "usb_redir_device_connect id 0 2b23:cdcd", "usb_redir_bulk_packet id"] {
        assert!(text.contains(want), "{want} not in:\n{}", text.lines().take(40).collect::<Vec<_>>().join("\n"));
    }
    let ms = &u["mass_storage"];
    assert!(ms["commands"]["READ(10)"].as_u64().unwrap_or(0) > 0, "{ms}");
    assert!(ms["bytes_read"].as_u64().unwrap() >= SIZE as u64, "{ms}");

    // The usbmon pcap: descriptors, mass storage and SCSI. Wireshark 4.0
    // objects to nothing in the USB and Bulk-Only framing; what it flags
    // is SCSI data the device sent: answers the guest cut short by its
    // allocation length (the 4-byte head of a VPD page list, a 2-byte
    // GET EVENT STATUS NOTIFICATION head) and spice-gtk's emulated CD's
    // MODE SENSE(10) page 0x2a, whose page length claims 2 bytes more than
    // it sends. Such a mark is allowed only on a device-to-host data phase
    // no longer than its CBW asked.
    let usbmon = session.join(u["usbmon_pcap"].as_str().unwrap());
    let rows = tshark(
        &usbmon,
        &[
            "-T",
            "fields",
            "-e",
            "frame.number",
            "-e",
            "usbms.dCBWDataTransferLength",
            "-e",
            "usb.urb_len",
            "-e",
            "_ws.malformed",
            "-e",
            "_ws.expert.severity",
        ],
    );
    let mut asked: Option<u64> = None;
    let mut truncated = 0;
    for row in rows.lines() {
        let f: Vec<&str> = row.split('\t').collect();
        // frame, dCBWDataTransferLength, urb_len, malformed, severity
        if let Some(n) = f.get(1).and_then(|v| v.parse::<u64>().ok()) {
            asked = Some(n);
            continue;
        }
        let bad = f.get(3).is_some_and(|v| !v.is_empty());
        if bad {
            let len = f.get(2).and_then(|v| v.parse::<u64>().ok());
            assert!(
                len.is_some() && asked.is_some() && len <= asked,
                "malformed usbmon record outside a mass-storage data phase: {row}"
            );
            truncated += 1;
        }
    }
    eprintln!("SCSI data phases Wireshark flags (device data, see above): {truncated}");
    let fields = tshark(&usbmon, &["-T", "fields", "-e", "_ws.col.Protocol", "-e", "_ws.col.Info"]);
    for want in ["GET DESCRIPTOR Response DEVICE", "GET DESCRIPTOR Response CONFIGURATION", "SCSI: Read(10)"] {
        assert!(fields.contains(want), "no {want:?} in the usbmon pcap:\n{}", &fields[..fields.len().min(4000)]);
    }
    assert!(fields.lines().any(|l| l.starts_with("USBMS")), "no USB mass-storage (CBW/CSW) records");
}

//! spicy-screenshot through spicetap against QEMU's static SeaBIOS screen:
//! the picture is the same as without the proxy, and every pcap is SPICE to
//! Wireshark, byte for byte what `session.json` counted.

mod support;

use std::time::Duration;

use support::*;

#[test]
fn screenshot_through_spicetap_equals_direct_and_pcaps_dissect() {
    let dir = Scratch::new("screenshot");
    let qemu = Qemu::bios(&dir.path, "");
    let mut tap = Spicetap::start(&dir.path, &format!("127.0.0.1:{}", qemu.port), true, &[]);
    // SeaBIOS needs a moment to print its final screen.
    std::thread::sleep(Duration::from_secs(3));

    let direct = dir.path.join("direct.ppm");
    let via = dir.path.join("via.ppm");
    spicy_screenshot(qemu.port, &direct);
    spicy_screenshot(tap.port(), &via);
    let (w, h, a) = read_ppm(&direct);
    let (w2, h2, b) = read_ppm(&via);
    assert_eq!((w, h), (w2, h2));
    assert!(a == b, "screenshot through spicetap differs from the direct one");
    assert!(a.iter().any(|&p| p != 0), "the BIOS screen is not blank");

    tap.stop();
    let sessions = tap.sessions();
    assert_eq!(sessions.len(), 1, "one session folder: {sessions:?}");
    let s = session_json(&sessions[0]);
    assert!(s["end"].is_string(), "session end recorded");
    assert_ne!(s["session_id"].as_u64(), Some(0));
    let chans = channels(&s);
    let types: Vec<&str> = chans.iter().map(|c| c["type"].as_str().unwrap()).collect();
    assert!(types.contains(&"main") && types.contains(&"display"), "{types:?}");
    for c in &chans {
        assert_eq!(c["header_kind"], "mini");
        let summary = check_pcap(&sessions[0], c);
        assert!(summary.contains("Client link message"), "{summary}");
        assert!(summary.contains("Server link message"), "{summary}");
        if c["type"] == "display" {
            for name in ["SURFACE_CREATE", "DRAW_COPY", "MARK"] {
                assert!(summary.contains(name), "display pcap lacks {name}:\n{summary}");
            }
            let hist = &c["server_to_client"]["histogram"];
            assert!(hist["SPICE_MSG_DISPLAY_DRAW_COPY"].as_u64().unwrap() >= 1);
            assert_eq!(hist["SPICE_MSG_DISPLAY_SURFACE_CREATE"].as_u64(), Some(1));
        }
        if c["type"] == "main" {
            assert!(summary.contains("INIT"), "{summary}");
        }
    }
}

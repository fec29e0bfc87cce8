//! spicy-screenshot through spicetap against QEMU's static SeaBIOS screen:
//! the picture is the same as without the proxy, and every pcap is SPICE to
//! Wireshark, byte for byte what `session.json` counted.

mod support;

use support::*;

#[test]
fn screenshot_through_spicetap_equals_direct_and_pcaps_dissect() {
    let dir = Scratch::new("screenshot");
    let qemu = Qemu::bios(&dir.path, "");
    let mut tap = Spicetap::start(&dir.path, &format!("127.0.0.1:{}", qemu.port), true, &[]);
    // SeaBIOS prints its final screen a few seconds after boot.
    same_screen(|out| spicy_screenshot(qemu.port, out), |out| spicy_screenshot(tap.port(), out), &dir.path);

    tap.stop();
    // The last session is the last screenshot through spicetap.
    let sessions = tap.sessions();
    let sessions = [sessions.last().expect("a session folder").clone()];
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

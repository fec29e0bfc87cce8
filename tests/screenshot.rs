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

/// `--stream-codecs h264` removes the other codecs' caps (spice-gtk without
/// GStreamer decoders advertises MJPEG only) from the display link message
/// sent to the server, and only there, and says so.
#[test]
fn stream_codecs_removes_other_codec_caps_upstream() {
    let dir = Scratch::new("stream-codecs");
    let qemu = Qemu::bios(&dir.path, "");
    let mut tap = Spicetap::start(&dir.path, &format!("127.0.0.1:{}", qemu.port), true, &["--stream-codecs", "h264"]);
    spicy_screenshot(tap.port(), &dir.path.join("shot.ppm"));
    tap.stop();
    let s = session_json(&tap.sessions()[0]);
    let display = channels(&s).into_iter().find(|c| c["type"] == "display").unwrap();
    let client: Vec<&str> =
        display["client_caps"]["channel"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    let removed: Vec<&str> =
        display["caps_removed_upstream"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    assert!(!removed.contains(&"SPICE_DISPLAY_CAP_CODEC_H264"));
    for codec in ["MJPEG", "VP8", "VP9", "H265"] {
        let name = format!("SPICE_DISPLAY_CAP_CODEC_{codec}");
        assert_eq!(client.contains(&name.as_str()), removed.contains(&name.as_str()), "{name}: {display}");
    }
    assert!(removed.contains(&"SPICE_DISPLAY_CAP_CODEC_MJPEG"), "{client:?}");
    let main = channels(&s).into_iter().find(|c| c["type"] == "main").unwrap();
    assert!(main["caps_removed_upstream"].as_array().unwrap().is_empty());
}

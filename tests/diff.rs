//! `spicetap diff` on real recordings: two `spicy-screenshot` sessions of
//! the Linux guest's still console (cursor hidden, no blinking) are equal
//! under the default masks (exit 0); a remote-viewer session of the same
//! VM differs (exit 1) and the summary names the channels only it opened
//! (inputs, cursor) and where the main channel's sequence parts; foreign
//! input exits 2.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::*;

fn diff(a: &Path, b: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(SPICETAP).arg("diff").arg(a).arg(b).args(extra).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn screenshot_sessions_are_equal_and_a_viewer_session_differs() {
    let dir = Scratch::new("diff");
    let qemu = Qemu::linux(&dir.path, "", "spicetap.mode=text");
    let mut tap = Spicetap::start(&dir.path, &format!("127.0.0.1:{}", qemu.port), true, &["--no-video"]);
    // spicy-screenshot quits as soon as it has its picture, sometimes while
    // a usbredir channel is still linking: that channel then ends in its
    // link stage, or links after the session ended and starts a session
    // of the same id. Such a run is a true recording of another sequence;
    // the comparison takes two runs where every channel linked in one
    // session folder.
    for i in 0..4 {
        spicy_screenshot(tap.port(), &dir.path.join(format!("shot{i}.ppm")));
        std::thread::sleep(Duration::from_secs(1));
    }
    let x = Xvfb::start();
    let mut viewer = remote_viewer(&x, &format!("spice://127.0.0.1:{}", tap.port()), &[]);
    std::thread::sleep(Duration::from_secs(4));
    viewer.terminate(Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));
    tap.stop();
    // Folders by session id, in start order (`<start>-<id>`).
    let mut by_id: Vec<(String, Vec<std::path::PathBuf>)> = Vec::new();
    for folder in tap.sessions() {
        let id = folder.to_string_lossy().rsplit('-').next().unwrap().to_string();
        match by_id.iter_mut().find(|(i, _)| *i == id) {
            Some((_, v)) => v.push(folder),
            None => by_id.push((id, vec![folder])),
        }
    }
    assert!(by_id.len() >= 5, "4 screenshot sessions and a viewer session: {by_id:?}");
    let clean = |folders: &Vec<std::path::PathBuf>| {
        folders.len() == 1 && channels(&session_json(&folders[0])).iter().all(|c| c["end"]["reason"] != "link_failed")
    };
    let viewer_session = by_id.last().unwrap().1[0].clone();
    let shots: Vec<_> = by_id[..by_id.len() - 1].iter().filter(|(_, f)| clean(f)).map(|(_, f)| f[0].clone()).collect();
    eprintln!("{} of {} screenshot sessions linked every channel", shots.len(), by_id.len() - 1);
    assert!(shots.len() >= 2, "{by_id:?}");
    let sessions = [shots[0].clone(), shots[1].clone(), viewer_session];

    // spice-gtk's usbredir channel sends its usbredir hello (one 80-byte
    // SPICE_MSGC_SPICEVMC_DATA) when it is up, which may be after
    // spicy-screenshot has its picture and quits: one run has it, another
    // not (seen with the machine loaded). The screens are what is compared.
    let still = ["--mask", "SPICE_MSGC_SPICEVMC_DATA"];
    let (code, out, err) = diff(&sessions[0], &sessions[1], &still);
    eprintln!("{out}{err}");
    assert_eq!(code, Some(0), "two screenshots of a still screen are equal:\n{out}{err}");
    assert!(out.starts_with("equal"), "{out}");
    // And their final pictures are the same, pixel for pixel.
    let (code, json, err) = diff(&sessions[0], &sessions[1], &[still[0], still[1], "--render", "--json"]);
    assert_eq!(code, Some(0), "{json}{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let display = v["channels"].as_array().unwrap().iter().find(|c| c["channel"] == "display-0").unwrap();
    assert_eq!(display["picture"]["equal"], true, "{display}");
    assert_eq!(display["picture"]["differing_pixels"], 0, "{display}");

    let junit = dir.path.join("diff.xml");
    let (code, out, err) = diff(&sessions[0], &sessions[2], &["--junit", junit.to_str().unwrap()]);
    eprintln!("{out}{err}");
    assert_eq!(code, Some(1), "{out}{err}");
    let only_b = out.lines().find(|l| l.contains("channels only in B:")).expect("channels only in B");
    for ch in ["inputs-0", "cursor-0"] {
        assert!(only_b.contains(ch), "{only_b}");
    }
    // Both clients are spice-gtk 0.42: the channels both opened were linked
    // with the same caps, so no caps line is expected; the main channel's
    // sequence differs (remote-viewer gets a SPICE_MSG_NOTIFY).
    assert!(!out.contains("caps: "), "{out}");
    assert!(out.contains("main-0: s2c sequence"), "{out}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    let mut r = quick_xml::Reader::from_str(&xml);
    let mut failures = 0;
    loop {
        match r.read_event().expect("well-formed JUnit") {
            quick_xml::events::Event::Start(e) if e.name().as_ref() == b"failure" => failures += 1,
            quick_xml::events::Event::Eof => break,
            _ => {}
        }
    }
    assert!(failures >= 1, "{xml}");
    let (_, json, _) = diff(&sessions[0], &sessions[2], &["--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["equal"], false);

    // Foreign input: exit 2 with a message.
    let junk = dir.path.join("junk.pcap");
    std::fs::write(&junk, b"this is not a pcap").unwrap();
    let (code, _, err) = diff(&junk, &sessions[0], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("junk.pcap"), "{err}");
    let (code, _, err) = diff(&dir.path.join("missing"), &sessions[0], &[]);
    assert_eq!(code, Some(2), "{err}");
}

/// A committed ryll capture (link-less, tests/fixtures/ryll) of SeaBIOS's
/// screen against spicetap's recording of a spicy-screenshot session of
/// the same screen: the first frame is the same sequence (SURFACE_CREATE,
/// the 6903-byte LZ DRAW_COPY, MONITORS_CONFIG, MARK); ryll also sends
/// its PREFERRED_COMPRESSION and PREFERRED_VIDEO_CODEC_TYPE, and its 3 s
/// capture holds 11 more DRAW_COPY (the blinking text cursor) that
/// spicy-screenshot, gone after the first MARK, never received.
#[test]
fn a_ryll_capture_against_a_spicetap_recording() {
    let dir = Scratch::new("diff-ryll");
    let qemu = Qemu::bios(&dir.path, "image-compression=auto_glz");
    // Wait for SeaBIOS's final 720x400 screen (ryll captured that one), not
    // its boot pictures.
    wait_until("SeaBIOS's 720x400 screen", Duration::from_secs(60), || {
        let shot = dir.path.join("direct.ppm");
        spicy_screenshot(qemu.port, &shot);
        let (w, h, _) = read_ppm(&shot);
        (w, h) == (720, 400)
    });
    std::thread::sleep(Duration::from_secs(2));
    let mut tap = Spicetap::start(&dir.path, &format!("127.0.0.1:{}", qemu.port), true, &["--no-video"]);
    spicy_screenshot(tap.port(), &dir.path.join("shot.ppm"));
    std::thread::sleep(Duration::from_secs(1));
    tap.stop();
    let session = &tap.sessions()[0];
    let ryll = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ryll/display.pcap");
    let (code, out, err) = diff(&ryll, &session.join("display-0.pcap"), &["--channel-type", "display", "--json"]);
    assert_eq!(code, Some(1), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ch = &v["channels"][0];
    assert_eq!(ch["channel"], "display-0");
    let counts = &ch["counts"];
    assert_eq!(counts["SPICE_MSGC_DISPLAY_PREFERRED_COMPRESSION"][0], 1, "{counts}");
    assert_eq!(counts["SPICE_MSGC_DISPLAY_PREFERRED_COMPRESSION"][2], 0, "{counts}");
    assert_eq!(counts["SPICE_MSG_DISPLAY_DRAW_COPY"][0], 12, "{counts}");
    // (Under load, a cursor blink may reach spicy-screenshot before it exits.)
    let copies_b = counts["SPICE_MSG_DISPLAY_DRAW_COPY"][2].as_u64().unwrap();
    assert!((1..12).contains(&copies_b), "{counts}");
    // The first frame matches: the sequences part only after the MARK.
    let s2c = ch["divergences"].as_array().unwrap().iter().find(|d| d["dir"] == "s2c").unwrap();
    assert!(s2c["changed"].as_u64().unwrap() >= 12 - copies_b, "{s2c}");
    assert!(s2c["around_a"].to_string().contains("SPICE_MSG_DISPLAY_MARK"), "{s2c}");
    assert_eq!(counts.get("SPICE_MSG_DISPLAY_SURFACE_CREATE"), None, "{counts}");

    // --render: both final pictures are SeaBIOS's 720x400 screen; at most
    // the blinking text cursor's cell differs.
    let (code, out, err) =
        diff(&ryll, &session.join("display-0.pcap"), &["--channel-type", "display", "--json", "--render"]);
    assert_eq!(code, Some(1), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let p = &v["channels"][0]["picture"];
    assert_eq!(p["size_a"], serde_json::json!([720, 400]), "{p}");
    assert_eq!(p["size_b"], serde_json::json!([720, 400]), "{p}");
    assert!(p["error_a"].is_null() && p["error_b"].is_null(), "{p}");
    let differing = p["differing_pixels"].as_u64().unwrap();
    assert!(differing <= 9 * 16, "more than a text cell differs: {p}");
}

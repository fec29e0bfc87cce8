//! remote-viewer (and spicy, for webdav) under Xvfb, through spicetap, in
//! front of the Linux test guest: keys typed into the viewer reach the
//! guest, and every channel the clients open is recorded and dissects.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

fn xdotool(display: &str, args: &[&str]) -> String {
    let out = run_bounded(Command::new("xdotool").env("DISPLAY", display).args(args), Duration::from_secs(60));
    assert!(out.status.success(), "xdotool {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn remote_viewer_session_is_interactive_and_fully_recorded() {
    let dir = Scratch::new("remote-viewer");
    let qemu = Qemu::linux(&dir.path, "", "");
    let mut tap =
        Spicetap::start(&dir.path, &format!("127.0.0.1:{}", qemu.port), true, &["--debug-channels", "inputs"]);
    let x = Xvfb::start();

    // remote-viewer: types a line into the guest.
    let mut viewer = remote_viewer(&x, &format!("spice://127.0.0.1:{}", tap.port()), &[]);
    let window = xdotool(&x.display, &["search", "--sync", "--onlyvisible", "--class", "remote-viewer"]);
    let window = window.lines().next().expect("a remote-viewer window").to_string();
    // Let every channel link before typing.
    std::thread::sleep(Duration::from_secs(3));
    xdotool(&x.display, &["windowfocus", "--sync", &window]);
    xdotool(&x.display, &["type", "--delay", "30", "spicetap hello"]);
    xdotool(&x.display, &["key", "Return"]);
    qemu.wait_serial("SPICETAP-KEYS:spicetap hello", Duration::from_secs(30));
    assert!(viewer.is_running(), "remote-viewer still running");
    viewer.terminate(Duration::from_secs(10));

    // spicy with a shared folder opens the webdav port channel too.
    let shared = dir.path.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let mut spicy = Guard::spawn(
        "spicy",
        Command::new("spicy")
            .args(["-h", "127.0.0.1", "-p", &tap.port().to_string()])
            .arg(format!("--spice-shared-dir={}", shared.display()))
            .env("DISPLAY", &x.display)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_until("spicy's webdav channel", Duration::from_secs(60), || {
        tap.log_text().lines().any(|l| l.contains("channel=webdav") && l.contains("channel linked"))
    });
    std::thread::sleep(Duration::from_secs(2));
    spicy.terminate(Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));
    tap.stop();

    let sessions = tap.sessions();
    assert!(sessions.len() >= 2, "a session for remote-viewer and one for spicy: {sessions:?}");
    let viewer_session = session_json(&sessions[0]);
    let chans = channels(&viewer_session);
    let mut types: Vec<&str> = chans.iter().map(|c| c["type"].as_str().unwrap()).collect();
    types.sort();
    for t in ["cursor", "display", "inputs", "main", "usbredir"] {
        assert!(types.contains(&t), "remote-viewer's session lacks {t}: {types:?}");
    }
    for c in &chans {
        let summary = check_pcap(&sessions[0], c);
        if c["type"] == "inputs" {
            // spice-gtk sends a tap as one SPICE_MSGC_INPUTS_KEY_SCANCODE (press and
            // release scancodes) when the server has SPICE_INPUTS_CAP_KEY_SCANCODE,
            // else KEY_DOWN + KEY_UP (spice-gtk channel-inputs.c).
            let hist = &c["client_to_server"]["histogram"];
            let keys = hist["SPICE_MSGC_INPUTS_KEY_SCANCODE"].as_u64().unwrap_or(0)
                + hist["SPICE_MSGC_INPUTS_KEY_DOWN"].as_u64().unwrap_or(0);
            assert!(keys >= 15, "key messages in session.json: {hist}");
            assert!(summary.contains("Client KEY_"), "inputs pcap shows key messages:\n{summary}");
            // Wireshark 4.0 skips no body bytes of KEY_SCANCODE and loses sync in
            // reassembly; each segment holds whole messages, so without
            // reassembly every key message shows.
            let file = sessions[0].join(c["pcap"].as_str().unwrap());
            let flat = tshark(&file, &["-o", "tcp.desegment_tcp_streams:FALSE"]);
            let shown =
                flat.lines().filter(|l| l.contains("Client KEY_SCANCODE") || l.contains("Client KEY_DOWN")).count();
            assert_eq!(shown as u64, keys, "every key message dissects:\n{flat}");
        }
    }
    let spicy_session = session_json(&sessions[sessions.len() - 1]);
    let webdav: Vec<_> = channels(&spicy_session).into_iter().filter(|c| c["type"] == "webdav").collect();
    assert_eq!(webdav.len(), 1, "spicy's session has a webdav channel");
    assert_eq!(webdav[0]["pcap"], "webdav-0.pcap");
    check_pcap(&sessions[sessions.len() - 1], &webdav[0]);

    let log = tap.log_text();
    assert!(log.contains("msg=SPICE_MSGC_INPUTS_KEY_"), "--debug-channels inputs logs key messages");

    // spicetap inspect: the recorded Linux-guest session as one timeline.
    let inspect = |extra: &[&str]| inspect(&sessions[0], extra);
    let text = inspect(&[]);
    let times: Vec<f64> = text.lines().map(|l| l.split_whitespace().next().unwrap().parse().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "time order");
    let create = text.lines().find(|l| l.contains("SPICE_MSG_DISPLAY_SURFACE_CREATE")).expect("a SURFACE_CREATE");
    assert!(create.contains("surface 0 ") && create.contains('x'), "{create}");
    let copies: Vec<&str> = text.lines().filter(|l| l.contains("SPICE_MSG_DISPLAY_DRAW_COPY")).collect();
    assert!(!copies.is_empty() && copies.iter().all(|l| l.contains(" box (") && l.contains(" image ")), "{copies:?}");
    assert!(text.lines().any(|l| l.ends_with("SPICE_MSG_DISPLAY_MARK")), "a MARK line");
    let keys: Vec<&str> = text.lines().filter(|l| l.contains("SPICE_MSGC_INPUTS_KEY_")).collect();
    assert!(!keys.is_empty() && keys.iter().all(|l| l.contains("(hidden")), "keys hidden by default: {keys:?}");
    let with_keys = inspect(&["--keys", "--channel", "inputs", "--message", "KEY_"]);
    let sent: Vec<&str> = with_keys.lines().filter(|l| l.contains(" -> ")).collect();
    assert!(sent.len() >= 15 && sent.iter().all(|l| l.contains(" bytes ")), "{with_keys}");
    let json = inspect(&["--json", "--message", "mark"]);
    for l in json.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["name"], "SPICE_MSG_DISPLAY_MARK");
    }
    let summary = inspect(&["--summary"]);
    assert!(summary.contains("display-0") && summary.contains("capture: complete"), "{summary}");
}

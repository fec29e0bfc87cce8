//! spicetap as a CI harness: `--exit-after-sessions 1` in front of QEMU
//! with one `spicy-screenshot` through it exits by itself with status 0,
//! and the `--result` JSON and `--result-junit` XML (read with a real XML
//! parser) agree with `session.json`; with `--strict` and a recording made
//! incomplete on purpose (a capture queue of 0 bytes: every chunk is
//! refused, a capture loss) the exit status is not 0. `spicetap render
//! --png-every-mark DIR --at T1,T2` then writes the step-by-step PNGs of
//! the recorded session.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use quick_xml::events::Event;
use support::*;

/// Waits (bounded) for spicetap to exit by itself; returns its status.
fn exit_status(tap: &mut Spicetap, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Ok(Some(st)) = tap.guard.child.try_wait() {
            return st.code();
        }
        assert!(start.elapsed() < limit, "spicetap did not exit by itself: {}", tap.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// (test cases, failures) per JUnit test case name.
fn junit_cases(xml: &str) -> Vec<(String, bool)> {
    let mut r = quick_xml::Reader::from_str(xml);
    let mut out: Vec<(String, bool)> = Vec::new();
    loop {
        match r.read_event().expect("well-formed JUnit XML") {
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == b"testcase" => {
                let name = e.try_get_attribute("name").unwrap().unwrap().unescape_value().unwrap().into_owned();
                out.push((name, false));
            }
            Event::Start(e) if e.name().as_ref() == b"failure" => out.last_mut().unwrap().1 = true,
            Event::Eof => break,
            _ => {}
        }
    }
    out
}

fn run(dir: &Path, qemu: &Qemu, extra: &[&str]) -> (Option<i32>, serde_json::Value, String, Spicetap) {
    let result = dir.join("r.json");
    let junit = dir.join("r.xml");
    let (r, j) = (result.display().to_string(), junit.display().to_string());
    let mut args = vec!["--exit-after-sessions", "1", "--result", &r, "--result-junit", &j, "--no-video"];
    args.extend_from_slice(extra);
    let mut tap = Spicetap::start(dir, &format!("127.0.0.1:{}", qemu.port), true, &args);
    spicy_screenshot_password(tap.port(), None, &dir.join("shot.ppm"));
    let status = exit_status(&mut tap, Duration::from_secs(30));
    let json = serde_json::from_slice(&std::fs::read(&result).expect("r.json written")).expect("r.json is JSON");
    let xml = std::fs::read_to_string(&junit).expect("r.xml written");
    (status, json, xml, tap)
}

#[test]
fn exit_after_one_session_writes_a_verdict_that_agrees_with_session_json() {
    let dir = Scratch::new("ci-mode");
    let qemu = Qemu::bios(&dir.path, "");
    let (status, verdict, xml, tap) = run(&dir.path, &qemu, &[]);
    assert_eq!(status, Some(0), "{}", tap.log_text());
    assert_eq!(verdict["complete"], true, "{verdict:#}");
    let sessions = tap.sessions();
    assert_eq!(sessions.len(), 1);
    let s = session_json(&sessions[0]);
    let v = &verdict["sessions"][0];
    assert_eq!(v["session_id"], s["session_id"]);
    assert_eq!(v["end"], s["end"]);
    let names: Vec<String> =
        channels(&s).iter().map(|c| format!("{}-{}", c["type"].as_str().unwrap(), c["channel_id"])).collect();
    let vnames: Vec<String> =
        v["channels"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().into()).collect();
    assert_eq!(vnames, names);
    for (c, vc) in channels(&s).iter().zip(v["channels"].as_array().unwrap()) {
        assert_eq!(vc["bytes_server_to_client"], c["server_to_client"]["bytes"]);
        assert_eq!(vc["bytes_client_to_server"], c["client_to_server"]["bytes"]);
    }
    let cases = junit_cases(&xml);
    let mut want: Vec<(String, bool)> = vec![("session".into(), false)];
    want.extend(names.into_iter().map(|n| (n, false)));
    assert_eq!(cases, want, "{xml}");

    // The step-by-step pictures: one per MARK, one per time.
    let pngs = dir.path.join("pngs");
    let out = std::process::Command::new(SPICETAP)
        .arg("render")
        .arg(&sessions[0])
        .arg("--png-every-mark")
        .arg(&pngs)
        .args(["--at", "0,3600", "--png-dir"])
        .arg(&pngs)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut files: Vec<String> =
        std::fs::read_dir(&pngs).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    let marks = files.iter().filter(|f| f.starts_with("mark-0001-")).count();
    assert_eq!(marks, 1, "{files:?}");
    assert!(
        files.contains(&"at-0.000s.png".to_string()) && files.contains(&"at-3600.000s.png".to_string()),
        "{files:?}"
    );
    let mark = files.iter().find(|f| f.starts_with("mark-0001-")).unwrap();
    let (w, h, _) = read_png(&pngs.join(mark));
    assert!(w >= 640 && h >= 400, "{w}x{h}");
    // (SeaBIOS may switch from 640x480 to 720x400 text mode during the
    // session: the last picture need not have the first one's size.)
    assert!(read_png(&pngs.join("at-3600.000s.png")).0 >= 640);
}

#[test]
fn strict_fails_an_incomplete_recording() {
    let dir = Scratch::new("ci-mode-strict");
    let qemu = Qemu::bios(&dir.path, "");
    let (status, verdict, xml, tap) = run(&dir.path, &qemu, &["--strict", "--capture-queue-mib", "0"]);
    assert_ne!(status, Some(0), "{}", tap.log_text());
    assert_eq!(verdict["complete"], false, "{verdict:#}");
    let problems = verdict["sessions"][0]["channels"][0]["problems"].to_string();
    assert!(problems.contains("capture loss"), "{verdict:#}");
    assert!(junit_cases(&xml).iter().any(|c| c.1), "a failure in the JUnit file: {xml}");
}

//! SPICE folder sharing with no spicetap in between: `spicy
//! --spice-shared-dir` connects straight to QEMU, and the Linux guest's
//! webdav probe (`webdav <tag>` typed on its keyboard through QEMU's
//! monitor, see `scripts/guest/init`) plays spice-webdavd on the
//! `org.spice-space.webdav.0` port: PROPFIND /, GET /hello.txt and
//! PUT /new-<tag>.txt, each on its own client of spice-gtk's mux, answered
//! by spice-gtk's phodav server. The answers must be a 207 listing
//! hello.txt, a 200 with the file's exact bytes and a 201 whose body lands
//! in the shared folder; a second probe in the same boot (the port closed
//! and opened again, the same mux ids used again) must work the same. This
//! pins down the reference behaviour that the tests through spicetap
//! compare against.
//!
//! Through spicetap: the same probe with spicy behind a recording
//! spicetap (the traffic is decoded into `webdav-0.http.pcap`, which
//! tshark must dissect as HTTP, and counted in `session.json`), and with
//! remote-viewer (no folder sharing of its own) behind `spicetap proxy
//! --share-dir DIR` (spicetap links the webdav channel itself and serves
//! DIR with dav-server), read-write and read-only.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::*;

/// Ends without a newline, so the probe's last-line marker is exercised.
const HELLO: &str = "hello from the spicetap shared folder\nsecond line, no newline at the end";

/// Checks one probe's three answers against the shared folder.
fn check_answers(answers: &[WebdavAnswer], shared: &Path, tag: &str) {
    for a in answers {
        eprintln!(
            "webdav probe {tag}: client {}: {:?}, {} lines, closed {}",
            a.id,
            a.lines.first(),
            a.lines.len(),
            a.closed
        );
    }
    assert_eq!(answers.len(), 3, "one answer per request: {answers:#?}");
    for a in answers {
        assert!(a.closed, "client {} was not closed by phodav: {a:#?}", a.id);
    }
    let (propfind, get, put) = (&answers[0], &answers[1], &answers[2]);
    assert_eq!(propfind.status(), Some(207), "PROPFIND: {propfind:#?}");
    assert!(propfind.body().contains("hello.txt"), "PROPFIND body names no hello.txt: {propfind:#?}");
    assert_eq!(get.status(), Some(200), "GET: {get:#?}");
    assert_eq!(get.body(), HELLO, "GET body: {get:#?}");
    assert!(get.no_eol, "{get:#?}");
    assert_eq!(put.status(), Some(201), "PUT: {put:#?}");
    let file = shared.join(format!("new-{tag}.txt"));
    let want = format!("spicetap put {tag}\n");
    wait_until(&format!("{} with the PUT body", file.display()), Duration::from_secs(5), || {
        std::fs::read_to_string(&file).is_ok_and(|t| t == want)
    });
}

#[test]
fn spicy_shared_dir_answers_the_guest_probe_directly() {
    let dir = Scratch::new("webdav-direct");
    let shared = dir.path.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("hello.txt"), HELLO).unwrap();
    let qemu = Qemu::linux(&dir.path, "", "");
    let start = Instant::now();
    let x = Xvfb::start();
    let mut spicy = spicy(&x, qemu.port, &[format!("--spice-shared-dir={}", shared.display())], &dir.path);
    // Let spicy link its channels; the probe's first write would wait for
    // the webdav channel anyway (bounded by the probe).
    std::thread::sleep(Duration::from_secs(2));
    assert!(spicy.is_running(), "spicy exited: {}", std::fs::read_to_string(dir.path.join("spicy.err")).unwrap());

    for tag in ["first", "again"] {
        let t = Instant::now();
        let answers = webdav_probe(&qemu, tag, Duration::from_secs(40));
        assert_eq!(webdav_errors(&qemu.serial_log(), tag), Vec::<String>::new(), "probe {tag} errors");
        check_answers(&answers, &shared, tag);
        eprintln!("webdav probe {tag}: {:?}", t.elapsed());
    }

    assert!(spicy.is_running(), "spicy exited during the probes");
    spicy.terminate(Duration::from_secs(10));
    eprintln!("after the guest was up: {:?}", start.elapsed());
}

/// Every file under `dir` with its bytes (symlinks as their target).
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                todo.push(e.path());
            } else if t.is_symlink() {
                out.insert(e.path(), std::fs::read_link(e.path()).unwrap().into_os_string().into_encoded_bytes());
            } else {
                out.insert(e.path(), std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

/// The recorded session with a webdav channel, its folder and that channel.
fn webdav_session(tap: &Spicetap) -> (PathBuf, serde_json::Value, serde_json::Value) {
    for s in tap.sessions() {
        let json = session_json(&s);
        if let Some(ch) = channels(&json).into_iter().find(|c| c["type"] == "webdav") {
            return (s, json, ch);
        }
    }
    panic!("no session with a webdav channel in {:?}", tap.sessions());
}

/// tshark's view of an HTTP pcap: (method, target) of requests and status
/// codes of responses, in order; asserts nothing is malformed.
fn http_in_pcap(file: &Path) -> (Vec<(String, String)>, Vec<u16>) {
    let bad = tshark(file, &["-Y", "_ws.malformed || _ws.expert.severity >= error"]);
    assert!(bad.trim().is_empty(), "{}: problem packets:\n{bad}", file.display());
    let fields = tshark(
        file,
        &[
            "-Y",
            "http",
            "-T",
            "fields",
            "-e",
            "http.request.method",
            "-e",
            "http.request.uri",
            "-e",
            "http.response.code",
        ],
    );
    let (mut requests, mut responses) = (Vec::new(), Vec::new());
    for line in fields.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            [m, u, ..] if !m.is_empty() => requests.push((m.to_string(), u.to_string())),
            [_, _, code, ..] if !code.is_empty() => responses.push(code.parse().unwrap()),
            _ => {}
        }
    }
    (requests, responses)
}

fn shared_dir(dir: &Scratch) -> PathBuf {
    let shared = dir.path.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("hello.txt"), HELLO).unwrap();
    shared
}

#[test]
fn spicy_shared_dir_through_spicetap_is_recorded_as_http() {
    let dir = Scratch::new("webdav-observe");
    let shared = shared_dir(&dir);
    let qemu = Qemu::linux(&dir.path, "", "");
    let mut tap = Spicetap::start(&dir.path, &format!("127.0.0.1:{}", qemu.port), true, &[]);
    let x = Xvfb::start();
    let mut spicy = spicy(&x, tap.port(), &[format!("--spice-shared-dir={}", shared.display())], &dir.path);
    std::thread::sleep(Duration::from_secs(2));
    let answers = webdav_probe(&qemu, "observe", Duration::from_secs(40));
    assert_eq!(webdav_errors(&qemu.serial_log(), "observe"), Vec::<String>::new());
    check_answers(&answers, &shared, "observe");
    assert!(spicy.is_running(), "spicy exited during the probe");
    spicy.terminate(Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));
    tap.stop();

    let (session, _, ch) = webdav_session(&tap);
    // The channel's SPICE pcap is complete and dissects as SPICE.
    check_pcap(&session, &ch);
    let port = &ch["port"];
    eprintln!("session.json port: {}", serde_json::to_string_pretty(port).unwrap());
    assert_eq!(port["name"], "org.spice-space.webdav.0");
    assert!(port["stopped"].is_null(), "{port}");
    let w = &port["webdav"];
    assert_eq!(w["requests"], serde_json::json!({"GET": 1, "PROPFIND": 1, "PUT": 1}), "{w}");
    assert_eq!(w["responses"], serde_json::json!({"200": 1, "201": 1, "207": 1}), "{w}");
    assert_eq!(w["clients"], 3, "{w}");
    assert_eq!(w["paths"], serde_json::json!(["/", "/hello.txt", "/new-observe.txt"]), "{w}");
    assert!(w["bytes_to_guest"].as_u64().unwrap() > HELLO.len() as u64, "{w}");

    // The named port's channel: its name, no HTTP pcap.
    let json = session_json(&session);
    let named = channels(&json).into_iter().find(|c| c["type"] == "port").expect("spicy opened the named port");
    assert_eq!(named["port"]["name"], "org.spicetap.test.0", "{named}");
    assert!(named["port"]["webdav"].is_null(), "{named}");
    check_pcap(&session, &named);
    let pcap = session.join(w["http_pcap"].as_str().unwrap());
    let (requests, responses) = http_in_pcap(&pcap);
    let methods: Vec<&str> = requests.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(methods, ["PROPFIND", "GET", "PUT"], "{requests:?}");
    let mut sorted = responses.clone();
    sorted.sort();
    assert_eq!(sorted, [200, 201, 207], "{responses:?}");
    let xml = tshark(&pcap, &["-Y", "xml", "-T", "fields", "-e", "xml.tag"]);
    assert!(xml.contains("multistatus"), "the PROPFIND answer's XML is dissected: {xml}");

    // spicetap inspect reads the mux and HTTP out of the webdav channel.
    let text = inspect(&session, &["--channel", "webdav"]);
    assert!(text.contains("SPICE_MSG_PORT_INIT  port \"org.spice-space.webdav.0\""), "{text}");
    for r in ["PROPFIND /", "GET /hello.txt", "PUT /new-observe.txt"] {
        assert!(text.contains(&format!(" {r}")), "{r} not shown:\n{text}");
    }
    for status in ["207", "200", "201"] {
        assert!(text.lines().any(|l| l.contains("SPICEVMC_DATA") && l.contains(&format!(" {status}"))), "{text}");
    }
}

/// remote-viewer through `spicetap --share-dir` (and `extra` options),
/// probed once; returns the answers, the capture's session and channel.
/// `also` runs after the probe, with the guest still connected.
fn share_dir_session(
    dir: &Scratch,
    shared: &Path,
    extra: &[&str],
    tag: &str,
    also: impl FnOnce(&Qemu),
) -> (Vec<WebdavAnswer>, PathBuf, serde_json::Value) {
    let qemu = Qemu::linux(&dir.path, "", "");
    let upstream = format!("127.0.0.1:{}", qemu.port);
    let share = shared.display().to_string();
    let mut args = vec!["--share-dir", &share];
    args.extend_from_slice(extra);
    let mut tap = Spicetap::start(&dir.path, &upstream, true, &args);
    let x = Xvfb::start();
    let mut viewer = remote_viewer(&x, &format!("spice://127.0.0.1:{}", tap.port()), &[]);
    std::thread::sleep(Duration::from_secs(2));
    let answers = webdav_probe(&qemu, tag, Duration::from_secs(40));
    assert_eq!(webdav_errors(&qemu.serial_log(), tag), Vec::<String>::new());
    also(&qemu);
    assert!(viewer.is_running(), "remote-viewer keeps working");
    viewer.terminate(Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));
    tap.stop();
    let (session, json, ch) = webdav_session(&tap);
    // remote-viewer's own channels were there and ended normally.
    let types: Vec<String> = channels(&json).iter().map(|c| c["type"].as_str().unwrap().to_string()).collect();
    assert!(types.iter().any(|t| t == "display"), "{types:?}");
    let main = channels(&json).into_iter().find(|c| c["type"] == "main").unwrap();
    assert_eq!(main["channels_withheld"], serde_json::json!(["webdav 0"]), "{main}");
    assert_eq!(ch["client_address"], "spicetap --share-dir", "{ch}");
    check_pcap(&session, &ch);
    (answers, session, ch)
}

#[test]
fn share_dir_serves_the_guest_behind_remote_viewer() {
    let dir = Scratch::new("webdav-share");
    let shared = shared_dir(&dir);
    // Something outside the share, and symlinks inside pointing at it.
    let outside = dir.path.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "SECRET outside the share").unwrap();
    std::os::unix::fs::symlink(&outside, shared.join("out")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), shared.join("secret-link")).unwrap();
    let outside_before = tree(&outside);
    let around_before: Vec<_> = std::fs::read_dir(&dir.path).unwrap().map(|e| e.unwrap().file_name()).collect();
    let traversal = |qemu: &Qemu| {
        for (i, (method, target)) in [
            ("GET", "/../outside/secret.txt"),
            ("GET", "/%2e%2e/outside/secret.txt"),
            ("GET", "/..%2foutside%2fsecret.txt"),
            ("GET", "http://localhost/../outside/secret.txt"),
            ("GET", "/out/secret.txt"),
            ("GET", "/secret-link"),
            ("PROPFIND", "/out/"),
            ("PUT", "/out/escaped.txt"),
            ("PUT", "/%2e%2e/escaped.txt"),
            ("MKCOL", "/out/made"),
        ]
        .into_iter()
        .enumerate()
        {
            let a = webdav_request(qemu, &format!("trav{i}"), method, target, Duration::from_secs(40));
            eprintln!("{method} {target}: {:?}", a.lines.first());
            let status = a.status().unwrap_or(0);
            assert!(status >= 400, "{method} {target} is refused: {a:#?}");
            assert!(!a.body().contains("SECRET"), "{method} {target} read outside: {a:#?}");
        }
    };
    let (answers, session, ch) = share_dir_session(&dir, &shared, &[], "share", traversal);
    check_answers(&answers, &shared, "share");
    assert_eq!(tree(&outside), outside_before, "nothing outside the share changed");
    let around: Vec<_> = std::fs::read_dir(&dir.path).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(around.iter().filter(|n| n.to_string_lossy().contains("escaped")).count(), 0, "{around:?}");
    assert!(around.len() >= around_before.len());
    let w = &ch["port"]["webdav"];
    eprintln!("session.json webdav: {}", serde_json::to_string_pretty(w).unwrap());
    assert_eq!(w["requests"], serde_json::json!({"GET": 7, "MKCOL": 1, "PROPFIND": 2, "PUT": 3}), "{w}");
    assert_eq!((w["responses"]["200"].clone(), w["responses"]["201"].clone()), (1.into(), 1.into()), "{w}");
    let (requests, _) = http_in_pcap(&session.join(w["http_pcap"].as_str().unwrap()));
    assert_eq!(requests.len(), 13, "the probe's 3 and the 10 refused: {requests:?}");
}

#[test]
fn share_dir_ro_refuses_changes() {
    let dir = Scratch::new("webdav-share-ro");
    let shared = shared_dir(&dir);
    let before = tree(&shared);
    let (answers, _, ch) = share_dir_session(&dir, &shared, &["--share-dir-ro"], "ro", |_| ());
    assert_eq!(answers.len(), 3, "{answers:#?}");
    assert_eq!(answers[0].status(), Some(207), "{:#?}", answers[0]);
    assert_eq!(answers[1].status(), Some(200), "{:#?}", answers[1]);
    assert_eq!(answers[1].body(), HELLO);
    let put = answers[2].status();
    assert!(put == Some(403) || put == Some(405), "PUT on a read-only share: {:#?}", answers[2]);
    assert_eq!(tree(&shared), before, "the read-only share is unchanged");
    assert_eq!(ch["port"]["webdav"]["responses"][put.unwrap().to_string()], 1, "{ch}");
}

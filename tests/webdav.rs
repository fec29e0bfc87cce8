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

mod support;

use std::fs::File;
use std::path::Path;
use std::process::Command;
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
    let mut spicy = Guard::spawn(
        "spicy",
        Command::new("spicy")
            .args(["-h", "127.0.0.1", "-p", &qemu.port.to_string()])
            .arg(format!("--spice-shared-dir={}", shared.display()))
            .env("DISPLAY", &x.display)
            .stdout(File::create(dir.path.join("spicy.out")).unwrap())
            .stderr(File::create(dir.path.join("spicy.err")).unwrap()),
    );
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

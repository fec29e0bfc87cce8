//! `spicetap proxy --http`: Prometheus metrics and the JSON API over a
//! remote-viewer session of the Linux guest, read by a real Prometheus
//! text parser (Python's `prometheus_client`, Debian's
//! python3-prometheus-client), with the recording's files served with
//! ranges, and the bearer token and path confinement enforced; and the
//! page, in Debian's Chromium driven by chromedriver.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::webdriver::Browser;
use support::*;

/// The samples of a Prometheus text exposition, parsed by
/// `prometheus_client`'s OpenMetrics parser: `name{labels}` -> value.
fn parse_metrics(text: &[u8]) -> BTreeMap<String, f64> {
    let script = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join('%s="%s"' % kv for kv in sorted(s.labels.items()))
        print("%s{%s} %r" % (s.name, labels, s.value))
"#;
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "prometheus_client refused the exposition: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        .collect()
}

/// The Linux guest's still text screen, spicetap recording it with
/// `--http` on a free port, remote-viewer connected through it: (guest,
/// spicetap, X server, viewer, HTTP port).
fn viewer_session(dir: &Path) -> (Qemu, Spicetap, Xvfb, Guard, u16) {
    let qemu = Qemu::linux(dir, "", "spicetap.mode=text");
    let http = free_port();
    let addr = format!("127.0.0.1:{http}");
    let tap = Spicetap::start(dir, &format!("127.0.0.1:{}", qemu.port), true, &["--http", &addr]);
    let x = Xvfb::start();
    let viewer = remote_viewer(&x, &format!("spice://127.0.0.1:{}", tap.port()), &[]);
    (qemu, tap, x, viewer, http)
}

#[test]
fn metrics_and_api_of_a_remote_viewer_session() {
    let dir = Scratch::new("http");
    let (qemu, mut tap, _x, mut viewer, http) = viewer_session(&dir.path);
    std::thread::sleep(Duration::from_secs(4));

    // Live: the session is listed with its channels open.
    let r = get(http, "/api/sessions");
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/json");
    let list: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let live = &list["sessions"][0];
    assert_eq!(live["live"], true, "{list}");
    assert!(live["open_channels"].as_u64().unwrap() >= 4, "{live}");
    let display = live["channels"].as_array().unwrap().iter().find(|c| c["type"] == "display").cloned();
    let display = display.unwrap_or_else(|| panic!("a live display channel: {live}"));
    assert!(display["bytes_s2c"].as_u64().unwrap() > 1000, "bytes so far: {display}");
    let id = live["id"].as_str().unwrap().to_string();
    let m = parse_metrics(&get(http, "/metrics").body);
    assert_eq!(m["spicetap_sessions_open{}"], 1.0, "{m:?}");
    assert!(m["spicetap_channel_connections_open{channel=\"display\"}"] >= 1.0, "{m:?}");
    // What the renderer shows now.
    let r = get(http, &format!("/api/sessions/{id}/displays/0/screenshot.png"));
    assert_eq!((r.status, r.headers["content-type"].as_str()), (200, "image/png"));
    let live_png = dir.path.join("live.png");
    std::fs::write(&live_png, &r.body).unwrap();
    assert_eq!(get(http, &format!("/api/sessions/{id}/displays/7/screenshot.png")).status, 404);

    viewer.terminate(Duration::from_secs(10));
    wait_until("the session to end", Duration::from_secs(20), || {
        parse_metrics(&get(http, "/metrics").body).get("spicetap_sessions_open{}") == Some(&0.0)
    });
    std::thread::sleep(Duration::from_secs(1));

    // After: the byte counters equal session.json's, channel type by type.
    let session = tap.sessions().pop().unwrap();
    let json = session_json(&session);
    let m = parse_metrics(&get(http, "/metrics").body);
    eprintln!("{m:#?}");
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for c in channels(&json) {
        let t = c["type"].as_str().unwrap();
        for (d, field) in [("c2s", "client_to_server"), ("s2c", "server_to_client")] {
            *expected.entry(format!("channel=\"{t}\",direction=\"{d}\"")).or_default() +=
                c[field]["bytes"].as_u64().unwrap();
        }
    }
    for (labels, bytes) in &expected {
        let got = m.get(&format!("spicetap_forwarded_bytes_total{{{labels}}}")).copied();
        assert_eq!(got, Some(*bytes as f64), "{labels}");
    }
    assert_eq!(m["spicetap_sessions_total{}"], 1.0);
    assert!(m["spicetap_link_stage_duration_seconds_count{}"] >= 4.0, "{m:?}");

    // Recorded: listed, one session's view, files with ranges.
    let list: serde_json::Value = serde_json::from_slice(&get(http, "/api/sessions").body).unwrap();
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(list["sessions"][0]["live"], false);
    let one: serde_json::Value = serde_json::from_slice(&get(http, &format!("/api/sessions/{id}")).body).unwrap();
    assert_eq!(one["session"], json, "the session's view holds its session.json");
    let mp4 = std::fs::read(session.join("display-0.mp4")).unwrap();
    let r = get(http, &format!("/api/sessions/{id}/files/display-0.mp4"));
    assert_eq!((r.status, r.headers["content-type"].as_str()), (200, "video/mp4"));
    assert_eq!(r.body, mp4);
    let r = request(http, "GET", &format!("/api/sessions/{id}/files/display-0.mp4"), &[("Range", "bytes=100-299")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.headers["content-range"], format!("bytes 100-299/{}", mp4.len()));
    assert_eq!(r.body, mp4[100..300]);
    let r = request(http, "GET", &format!("/api/sessions/{id}/files/display-0.mp4"), &[("Range", "bytes=-10")]);
    assert_eq!(r.body, mp4[mp4.len() - 10..]);
    let r = request(http, "GET", &format!("/api/sessions/{id}/files/display-0.mp4"), &[("Range", "bytes=999999999-")]);
    assert_eq!(r.status, 416);
    let r = get(http, &format!("/api/sessions/{id}/files/display-0.pcap"));
    assert_eq!(r.headers["content-type"], "application/vnd.tcpdump.pcap");
    assert_eq!(r.body, std::fs::read(session.join("display-0.pcap")).unwrap());

    // The live screenshot and the recording's final picture equal
    // spicy-screenshot's of the same still screen, in every pixel.
    let shot = dir.path.join("direct.ppm");
    spicy_screenshot(qemu.port, &shot);
    let (w, h, expected) = read_ppm(&shot);
    let r = get(http, &format!("/api/sessions/{id}/displays/0/screenshot.png"));
    assert_eq!((r.status, r.headers["content-type"].as_str()), (200, "image/png"));
    let png = dir.path.join("api.png");
    std::fs::write(&png, &r.body).unwrap();
    let r = get(http, &format!("/api/sessions/{id}/displays/0/screenshot.png?at=0.5"));
    assert_eq!((r.status, r.headers["content-type"].as_str()), (200, "image/png"), "a moment of the recording");
    assert_eq!(get(http, &format!("/api/sessions/{id}/displays/0/screenshot.png?at=-1")).status, 400);
    for (what, file) in [("live", &live_png), ("recorded", &png)] {
        let (pw, ph, rgb) = read_png(file);
        assert_eq!((pw as usize, ph as usize), (w, h), "{what}");
        let differ = rgb.chunks(3).zip(expected.chunks(3)).filter(|(a, b)| a != b).count();
        assert_eq!(differ, 0, "{what} screenshot: {differ} pixels differ from spicy-screenshot's");
    }

    // Confinement: nothing outside the session folder, in any spelling.
    for path in [
        format!("/api/sessions/{id}/files/../../../../etc/passwd"),
        format!("/api/sessions/{id}/files/..%2f..%2f..%2fetc%2fpasswd"),
        format!("/api/sessions/{id}/files/%2e%2e%2fsession.json"),
        "/api/sessions/../../etc/files/passwd".to_string(),
        "/api/sessions/%2e%2e/files/passwd".to_string(),
        format!("/api/sessions/{id}/files/"),
        "/etc/passwd".to_string(),
    ] {
        let r = get(http, &path);
        assert_eq!(r.status, 404, "{path}");
        assert!(!String::from_utf8_lossy(&r.body).contains("root:"), "{path}");
    }
    assert_eq!(request(http, "DELETE", &format!("/api/sessions/{id}"), &[]).status, 405);
    tap.stop();
}

#[test]
fn the_bearer_token_is_required() {
    let dir = Scratch::new("http-token");
    let token_file = dir.path.join("token");
    std::fs::write(&token_file, "s3cret-token-for-tests\n").unwrap();
    let http = free_port();
    let addr = format!("127.0.0.1:{http}");
    let mut tap = Spicetap::start(
        &dir.path,
        "127.0.0.1:9",
        true,
        &["--http", &addr, "--http-token", token_file.to_str().unwrap()],
    );
    wait_until("the HTTP surface", Duration::from_secs(10), || TcpStream::connect(("127.0.0.1", http)).is_ok());
    for headers in [vec![], vec![("Authorization", "Bearer wrong")], vec![("Authorization", "s3cret-token-for-tests")]]
    {
        for path in ["/metrics", "/api/sessions", "/api/sessions/x/files/session.json", "/nothing"] {
            let r = request(http, "GET", path, &headers);
            assert_eq!(r.status, 401, "{path} {headers:?}");
            assert!(!String::from_utf8_lossy(&r.body).contains("spicetap_"), "nothing else");
        }
    }
    let ok = [("Authorization", "Bearer s3cret-token-for-tests")];
    let r = request(http, "GET", "/metrics", &ok);
    assert_eq!(r.status, 200);
    assert!(!String::from_utf8_lossy(&r.body).contains("s3cret"), "the token is never echoed");
    parse_metrics(&r.body);
    assert_eq!(request(http, "GET", "/api/sessions", &ok).status, 200);
    tap.stop();
}

/// Where page screenshots go (kept after the run).
fn artifact(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts").join(name)
}

/// The page in Chromium (headless, chromedriver): the live session is
/// listed with a thumbnail that loads; once recorded, its page plays the
/// display's video (duration as recorded, time advancing, seeking to the
/// middle); readable at 1280x800 and in a narrow window.
#[test]
fn the_page_lists_the_session_and_plays_its_video_in_chromium() {
    let dir = Scratch::new("http-page");
    let (_qemu, mut tap, _x, mut viewer, http) = viewer_session(&dir.path);
    let browser = Browser::start(1280, 800);
    browser.goto(&format!("http://127.0.0.1:{http}/"));
    let limit = Duration::from_secs(30);
    browser.wait_for("the live session listed", "return !!document.querySelector('tr[data-live=\"true\"]')", limit);
    browser.wait_for(
        "its thumbnail",
        "const i = document.querySelector('img[data-thumb]'); return !!i && i.complete && i.naturalWidth > 0",
        limit,
    );
    browser.screenshot(&artifact("sessions-live.png"));
    let id = browser.run("return document.querySelector('tr[data-live=\"true\"]').dataset.id", serde_json::json!([]));
    let id = id.as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_secs(3));
    viewer.terminate(Duration::from_secs(10));
    browser.wait_for("the session recorded", "return !!document.querySelector('tr[data-live=\"false\"]')", limit);

    browser.goto(&format!("http://127.0.0.1:{http}/#/session/{id}"));
    browser.wait_for("the session page", "return !!document.querySelector('video')", limit);
    let played = browser.run_async(
        r#"
const done = arguments[arguments.length - 1];
const v = document.querySelector('video');
const go = () => {
  const duration = v.duration, t0 = v.currentTime;
  v.play().then(() => setTimeout(() => {
    const t1 = v.currentTime;
    v.pause();
    v.addEventListener('seeked', () => done({ duration, t0, t1, mid: v.currentTime }), { once: true });
    v.currentTime = duration / 2;
  }, 1500)).catch((e) => done({ error: String(e) }));
};
if (v.readyState >= 1) go(); else v.addEventListener('loadedmetadata', go, { once: true });
v.addEventListener('error', () => done({ error: 'media error ' + (v.error && v.error.code) }));
"#,
        serde_json::json!([]),
    );
    eprintln!("video: {played}");
    assert!(played["error"].is_null(), "{played}");
    let session = tap.sessions().pop().unwrap();
    let json = session_json(&session);
    let display = channels(&json).into_iter().find(|c| c["type"] == "display").unwrap();
    let recorded = display["render"]["video"]["duration_s"].as_f64().unwrap();
    let duration = played["duration"].as_f64().unwrap();
    assert!((duration - recorded).abs() < 0.1, "the video lasts {duration} s, recorded {recorded} s");
    assert!(played["t1"].as_f64().unwrap() > played["t0"].as_f64().unwrap(), "time advances: {played}");
    assert!((played["mid"].as_f64().unwrap() - duration / 2.0).abs() < 0.5, "seeking to the middle: {played}");
    browser.wait_for(
        "the screenshot",
        "const i = document.querySelector('img[data-shot]'); return !!i && i.complete && i.naturalWidth > 0",
        limit,
    );
    let links = browser.run(
        "return [...document.querySelectorAll('a[href]')].filter(a => a.tabIndex >= 0).length",
        serde_json::json!([]),
    );
    assert!(links.as_u64().unwrap() >= 4, "keyboard-reachable links: {links}");
    browser.screenshot(&artifact("session-page.png"));
    // A narrow window: nothing wider than it but the tables' own scroll.
    browser.resize(480, 800);
    let overflow =
        browser.run("return document.documentElement.scrollWidth - window.innerWidth", serde_json::json!([]));
    assert!(overflow.as_i64().unwrap() <= 1, "the page is wider than a narrow window by {overflow} px");
    browser.screenshot(&artifact("session-page-narrow.png"));
    drop(browser);
    tap.stop();
}

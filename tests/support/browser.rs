//! Plays a video in Debian's Chromium, headless, from a page served on
//! loopback, and reports what the `<video>` element saw.
//!
//! The test serves the page and the file itself (HTTP/1.1 with range
//! requests, as a browser seeks in an MP4), and the page reports back with
//! a `GET /report?...`: nothing but a browser and loopback sockets.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::Guard;

/// What the `<video>` element reported.
#[derive(Debug, Clone)]
pub struct Played {
    /// Why it reported: `ended`, `passed` (current time went past the
    /// asked-for time), `error=N` or `timeout`.
    pub why: String,
    /// `video.duration`, seconds.
    pub duration: f64,
    /// `video.currentTime` when it reported, seconds.
    pub current_time: f64,
    /// Every `videoWidth x videoHeight` it announced (`resize` events), in order.
    pub sizes: Vec<(u32, u32)>,
}

const PAGE: &str = r#"<!doctype html><html><body><video id="v" src="/video.mp4" muted autoplay playsinline></video>
<script>
const v = document.getElementById('v');
const until = UNTIL;
const sizes = [];
let sent = false;
function report(why) {
  if (sent) return;
  sent = true;
  const q = 'why=' + why + '&duration=' + v.duration + '&t=' + v.currentTime + '&sizes=' + sizes.join(',');
  fetch('/report?' + q);
}
v.addEventListener('loadedmetadata', () => { v.playbackRate = RATE; });
v.addEventListener('resize', () => sizes.push(v.videoWidth + 'x' + v.videoHeight));
v.addEventListener('timeupdate', () => { if (v.currentTime > until) report('passed'); });
v.addEventListener('ended', () => report('ended'));
v.addEventListener('error', () => report('error=' + (v.error && v.error.code)));
setTimeout(() => report('timeout'), TIMEOUT_MS);
</script></body></html>"#;

/// Plays `mp4` at `rate` times normal speed until its current time passes
/// `until` seconds (or it ends, fails, or `limit` passes).
pub fn chromium_play(mp4: &Path, until: f64, rate: f64, limit: Duration) -> Played {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let page = PAGE
        .replace("UNTIL", &until.to_string())
        .replace("RATE", &rate.to_string())
        .replace("TIMEOUT_MS", &(limit.as_millis().saturating_sub(5000)).to_string());
    let (tx, rx) = mpsc::channel::<String>();
    let file = mp4.to_path_buf();
    listener.set_nonblocking(true).unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = std::sync::Arc::clone(&done);
    let server = std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < limit && !stop.load(std::sync::atomic::Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => {
                    let (page, file, tx) = (page.clone(), file.clone(), tx.clone());
                    std::thread::spawn(move || serve(stream, &page, &file, &tx));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
    });
    let profile = tempfile::tempdir().unwrap();
    let mut chromium = Guard::spawn(
        "chromium",
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--autoplay-policy=no-user-gesture-required",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("http://127.0.0.1:{port}/index.html"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let report = rx.recv_timeout(limit);
    // SIGTERM lets Chromium end its helper processes; SIGKILL (on drop) if not.
    let _ = Command::new("kill").arg("-TERM").arg(chromium.pid().to_string()).status();
    let start = Instant::now();
    while chromium.is_running() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(chromium);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = server.join();
    let query = report.unwrap_or_else(|_| panic!("Chromium reported nothing within {limit:?}"));
    let field = |name: &str| {
        query.split('&').find_map(|kv| kv.strip_prefix(&format!("{name}="))).unwrap_or_default().to_string()
    };
    let sizes = field("sizes")
        .split(',')
        .filter_map(|s| s.split_once('x'))
        .filter_map(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
        .collect();
    Played {
        why: field("why"),
        duration: field("duration").parse().unwrap_or(f64::NAN),
        current_time: field("t").parse().unwrap_or(f64::NAN),
        sizes,
    }
}

/// Answers one connection's requests (keep-alive) for the page, the video
/// (with `Range`) and the report.
fn serve(stream: TcpStream, page: &str, file: &PathBuf, report: &mpsc::Sender<String>) {
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut range = None;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("range")
            {
                range = value.trim().strip_prefix("bytes=").map(str::to_string);
            }
        }
        let ok = if target == "/index.html" {
            respond(&mut out, "200 OK", "text/html", page.as_bytes(), None)
        } else if target == "/video.mp4" {
            let mut data = Vec::new();
            std::fs::File::open(file).and_then(|mut f| f.read_to_end(&mut data)).unwrap();
            match range.as_deref().and_then(|r| r.split_once('-')) {
                Some((from, to)) => {
                    let len = data.len();
                    let from: usize = from.parse().unwrap_or(0).min(len.saturating_sub(1));
                    let to: usize = to.parse().unwrap_or(len - 1).min(len - 1);
                    let content_range = format!("bytes {from}-{to}/{len}");
                    respond(&mut out, "206 Partial Content", "video/mp4", &data[from..=to], Some(&content_range))
                }
                None => respond(&mut out, "200 OK", "video/mp4", &data, None),
            }
        } else if let Some(query) = target.strip_prefix("/report?") {
            let _ = report.send(query.to_string());
            respond(&mut out, "204 No Content", "text/plain", b"", None)
        } else {
            respond(&mut out, "404 Not Found", "text/plain", b"", None)
        };
        if ok.is_err() {
            return;
        }
    }
}

fn respond(
    out: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
    content_range: Option<&str>,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\n",
        body.len()
    );
    if let Some(range) = content_range {
        head.push_str(&format!("Content-Range: {range}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.write_all(body)
}

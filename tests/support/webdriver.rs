//! A minimal W3C WebDriver client (HTTP/1.1 and JSON over loopback) for
//! Debian's `chromedriver` driving Debian's Chromium, headless, with a
//! fresh profile. Enough for page tests: navigate, run scripts (sync and
//! async), resize, take screenshots.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{Guard, free_port, wait_until};

/// A browser session; the driver and the browser end on drop.
pub struct Browser {
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
    _driver: Guard,
}

fn call(port: u16, method: &str, path: &str, body: Option<&serde_json::Value>) -> serde_json::Value {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    // chromedriver keeps the connection open: read the head, then the body
    // by its Content-Length (or its chunks).
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    let split = loop {
        if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "WebDriver closed before its response head");
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let mut payload = raw[split + 4..].to_vec();
    let length =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok());
    if let Some(len) = length {
        while payload.len() < len {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "WebDriver closed inside its response body");
            payload.extend_from_slice(&buf[..n]);
        }
        payload.truncate(len);
    } else if head.contains("transfer-encoding: chunked") {
        while !payload.ends_with(b"0\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "WebDriver closed inside its chunked body");
            payload.extend_from_slice(&buf[..n]);
        }
        let mut out = Vec::new();
        let mut b = payload.as_slice();
        loop {
            let nl = b.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = usize::from_str_radix(String::from_utf8_lossy(&b[..nl]).trim(), 16).unwrap();
            b = &b[nl + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(&b[..size]);
            b = &b[size + 2..];
        }
        payload = out;
    }
    let v: serde_json::Value = serde_json::from_slice(&payload).unwrap_or_default();
    assert!(v["value"]["error"].is_null(), "WebDriver {method} {path}: {v}");
    v["value"].clone()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium of `width` x `height`.
    pub fn start(width: u32, height: u32) -> Self {
        let port = free_port();
        let driver = Guard::spawn(
            "chromedriver",
            Command::new("chromedriver").arg(format!("--port={port}")).stdout(Stdio::null()).stderr(Stdio::null()),
        );
        wait_until("chromedriver", Duration::from_secs(20), || TcpStream::connect(("127.0.0.1", port)).is_ok());
        let profile = tempfile::tempdir().unwrap();
        let caps = serde_json::json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": [
                        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run",
                        "--autoplay-policy=no-user-gesture-required",
                        format!("--user-data-dir={}", profile.path().display()),
                        format!("--window-size={width},{height}"),
                    ]
                }
            }}
        });
        let v = call(port, "POST", "/session", Some(&caps));
        let session = v["sessionId"].as_str().expect("a WebDriver session").to_string();
        Self { port, session, _profile: profile, _driver: driver }
    }

    fn path(&self, tail: &str) -> String {
        format!("/session/{}{tail}", self.session)
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        call(self.port, "POST", &self.path("/url"), Some(&serde_json::json!({ "url": url })));
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns
    /// its value.
    pub fn run(&self, script: &str, args: serde_json::Value) -> serde_json::Value {
        call(
            self.port,
            "POST",
            &self.path("/execute/sync"),
            Some(&serde_json::json!({ "script": script, "args": args })),
        )
    }

    /// Runs `script` asynchronously: it calls the last argument with its
    /// result (WebDriver's script timeout: 60 s).
    pub fn run_async(&self, script: &str, args: serde_json::Value) -> serde_json::Value {
        call(self.port, "POST", &self.path("/timeouts"), Some(&serde_json::json!({ "script": 60_000 })));
        call(
            self.port,
            "POST",
            &self.path("/execute/async"),
            Some(&serde_json::json!({ "script": script, "args": args })),
        )
    }

    /// Waits until `script` returns true.
    pub fn wait_for(&self, what: &str, script: &str, limit: Duration) {
        wait_until(what, limit, || self.run(script, serde_json::json!([])) == serde_json::json!(true));
    }

    /// Resizes the window.
    pub fn resize(&self, width: u32, height: u32) {
        call(
            self.port,
            "POST",
            &self.path("/window/rect"),
            Some(&serde_json::json!({ "width": width, "height": height })),
        );
    }

    /// Saves a PNG of the viewport at `path`.
    pub fn screenshot(&self, path: &Path) {
        let b64 = call(self.port, "GET", &self.path("/screenshot"), None);
        let png = base64_decode(b64.as_str().unwrap());
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| call(self.port, "DELETE", &self.path(""), None));
    }
}

/// Standard base64 (RFC 4648) to bytes.
fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => 0,
        }
    };
    let clean: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    for chunk in clean.chunks(4) {
        let pad = chunk.iter().filter(|&&c| c == b'=').count();
        let n = chunk.iter().fold(0u32, |acc, &c| (acc << 6) | value(c)) << (6 * (4 - chunk.len()));
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad.min(2)]);
    }
    out
}

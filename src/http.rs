//! The HTTP surface (`spicetap proxy --http ADDR`): Prometheus metrics and
//! a read-only JSON API over the live sessions and the recordings under
//! `--capture`, on its own task, never on the forwarding path.
//!
//! ```text
//! GET /                                                the page (src/http/ui: HTML, CSS, JS)
//! GET /metrics                                         Prometheus text (crate::metrics)
//! GET /api/sessions?page=N&per_page=M                  live sessions (channels, bytes so far), then
//!                                                      recorded ones (from session.json), newest first
//! GET /api/sessions/{id}                               one: live state, or its session.json
//! GET /api/sessions/{id}/files/{name}                  a pcap, session.json or video; Range requests
//! GET /api/sessions/{id}/displays/{n}/screenshot.png   a recording's final picture (?at=SECONDS)
//! ```
//!
//! `{id}` is the session's folder name (`20261206T034040.639Z-4242`).
//! Read-only: only GET and HEAD. With `--http-token FILE` every request
//! but the page's own files (which hold no data) needs `Authorization:
//! Bearer <token>` (compared in constant time); a request without it gets
//! 401 and nothing else. Paths are confined to
//! the capture folder: `{id}` and `{name}` are single path components that
//! exist there (no `..`, no separators, no hidden files), checked again
//! after resolving symbolic links. Bounds: at most [`MAX_CONNECTIONS`]
//! connections (more are closed on accept), [`HEADER_TIMEOUT`] to send a
//! request head, files streamed in [`CHUNK`]-byte pieces.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::metrics::Metrics;
use crate::session::Sessions;

/// Most HTTP connections open at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send a request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of a file read per body frame.
pub const CHUNK: usize = 64 * 1024;
/// How long a live screenshot may wait for the render thread.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(5);
/// Sessions per page of `/api/sessions` at most.
const MAX_PER_PAGE: usize = 500;

type Body = BoxBody<Bytes, std::io::Error>;

/// What the HTTP surface serves from.
#[derive(Debug)]
pub struct HttpState {
    /// The proxy's live sessions.
    pub sessions: Arc<Sessions>,
    /// The proxy's metrics.
    pub metrics: Arc<Metrics>,
    /// The bearer token every request needs, if any.
    pub token: Option<Vec<u8>>,
}

/// Returns once `stop` is true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Serves `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, state: Arc<HttpState>, stop: watch::Receiver<bool>) {
    let all_stopped = stopped(stop.clone());
    tokio::pin!(all_stopped);
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut all_stopped => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(client = %peer, max = MAX_CONNECTIONS, "too many HTTP connections; closed");
            continue;
        };
        let state = state.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req, peer).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(client = %peer, error = %e, "HTTP connection ended");
                    }
                }
                _ = stopped(stop) => {}
            }
            drop(permit);
        });
    }
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).map_err(|never| match never {}).boxed());
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    r
}

fn status(code: StatusCode) -> Response<Body> {
    full(code, "text/plain; charset=utf-8", format!("{code}\n"))
}

fn json(value: &serde_json::Value) -> Response<Body> {
    full(StatusCode::OK, "application/json", serde_json::to_vec_pretty(value).unwrap_or_default())
}

/// Whether the request carries the configured bearer token.
fn authorised(state: &HttpState, req: &Request<Incoming>) -> bool {
    let Some(token) = &state.token else { return true };
    let Some(given) = req.headers().get(header::AUTHORIZATION).and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
    else {
        return false;
    };
    given.ct_eq(token).into()
}

/// The page's files (`src/http/ui`), served as they are: plain HTML, CSS
/// and JS, no build step, no external resource.
const UI: [(&str, &str, &str); 3] = [
    ("/", "text/html; charset=utf-8", include_str!("http/ui/index.html")),
    ("/ui/app.css", "text/css; charset=utf-8", include_str!("http/ui/app.css")),
    ("/ui/app.js", "text/javascript; charset=utf-8", include_str!("http/ui/app.js")),
];

async fn handle(state: &HttpState, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    // The page itself holds no data (it asks the API, with the token): a
    // browser must be able to load it to be asked for the token.
    if let Some((_, content_type, text)) = UI.iter().find(|(p, _, _)| *p == req.uri().path())
        && (req.method() == Method::GET || req.method() == Method::HEAD)
    {
        let mut r = full(StatusCode::OK, content_type, *text);
        r.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'self'; img-src 'self' blob:; media-src 'self' blob:"),
        );
        return r;
    }
    if !authorised(state, &req) {
        let mut r = status(StatusCode::UNAUTHORIZED);
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = status(StatusCode::METHOD_NOT_ALLOWED);
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let head = req.method() == Method::HEAD;
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    tracing::debug!(client = %peer, %path, "HTTP request");
    let parts: Vec<&str> = path.split('/').skip(1).collect();
    let mut r = match parts.as_slice() {
        ["metrics"] => {
            state.metrics.set_capture_queue_bytes(state.sessions.capture_queue_bytes());
            full(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", state.metrics.encode())
        }
        ["api", "sessions"] => json(&list_sessions(state, &query)),
        ["api", "sessions", id] => match session(state, id) {
            Some(v) => json(&v),
            None => status(StatusCode::NOT_FOUND),
        },
        ["api", "sessions", id, "files", name] => match session_file(state, id, name) {
            Some(file) => send_file(&file, req.headers().get(header::RANGE)).await,
            None => status(StatusCode::NOT_FOUND),
        },
        ["api", "sessions", id, "displays", n, "screenshot.png"] => screenshot(state, id, n, &query).await,
        _ => status(StatusCode::NOT_FOUND),
    };
    if head {
        let (parts, _) = r.into_parts();
        r = Response::from_parts(parts, Full::new(Bytes::new()).map_err(|never| match never {}).boxed());
    }
    r
}

/// A query parameter's value.
fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// Whether `name` is one plain path component: no separator, no `..`, not
/// hidden, printable.
fn plain_component(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name.chars().all(|c| !c.is_control() && c != '/' && c != '\\' && c != '%')
}

/// The folder of recorded session `id`, confined to the capture folder.
fn session_dir(state: &HttpState, id: &str) -> Option<PathBuf> {
    let root = state.sessions.capture_dir()?.canonicalize().ok()?;
    if !plain_component(id) {
        return None;
    }
    let dir = root.join(id).canonicalize().ok()?;
    (dir.parent() == Some(root.as_path()) && dir.is_dir()).then_some(dir)
}

/// File `name` of session `id`, confined to its folder.
fn session_file(state: &HttpState, id: &str, name: &str) -> Option<PathBuf> {
    let dir = session_dir(state, id)?;
    if !plain_component(name) {
        return None;
    }
    let file = dir.join(name).canonicalize().ok()?;
    (file.parent() == Some(dir.as_path()) && file.is_file()).then_some(file)
}

/// The recorded sessions' folders under the capture folder, newest first
/// (folder names start with the UTC start time).
fn recorded(state: &HttpState) -> Vec<String> {
    let Some(root) = state.sessions.capture_dir() else { return Vec::new() };
    let Ok(entries) = std::fs::read_dir(root) else { return Vec::new() };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("session.json").is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| plain_component(n))
        .collect();
    names.sort_by(|a, b| b.cmp(a));
    names
}

/// A recording's `session.json`, as JSON.
fn session_json(dir: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(dir.join("session.json")).ok()?).ok()
}

/// What the list shows of a recording (`json`: its `session.json`): its
/// summary, channels with bytes and message counts, and files.
fn summary(id: &str, dir: &Path, json: &serde_json::Value, live: bool) -> serde_json::Value {
    let channels: Vec<serde_json::Value> = json["channels"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let count =
                |d: &str| c[d]["messages"].as_object().map_or(0, |m| m.values().filter_map(|v| v.as_u64()).sum());
            serde_json::json!({
                "type": c["type"],
                "channel_id": c["channel_id"],
                "pcap": c["pcap"],
                "bytes_c2s": c["client_to_server"]["bytes"],
                "bytes_s2c": c["server_to_client"]["bytes"],
                "messages_c2s": count("client_to_server"),
                "messages_s2c": count("server_to_client"),
                "closed": c["closed"],
            })
        })
        .collect();
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str().map(str::to_string)).filter(|n| plain_component(n)).collect()
        })
        .unwrap_or_default();
    files.sort();
    serde_json::json!({
        "id": id,
        "live": live,
        "session_id": json["session_id"],
        "start": json["start"],
        "end": json["end"],
        "client_address": json["client_address"],
        "channels": channels,
        "files": files,
    })
}

fn list_sessions(state: &HttpState, query: &str) -> serde_json::Value {
    let page: usize = param(query, "page").and_then(|p| p.parse().ok()).unwrap_or(0);
    let per_page: usize = param(query, "per_page").and_then(|p| p.parse().ok()).unwrap_or(50).clamp(1, MAX_PER_PAGE);
    let live = state.sessions.live();
    let live_folders: Vec<String> = live.iter().filter_map(|s| s.folder.clone()).collect();
    let mut all: Vec<serde_json::Value> = live
        .iter()
        .map(|s| {
            let mut v = match s.folder.as_deref().and_then(|f| Some((f, session_dir(state, f)?))) {
                Some((f, dir)) => summary(f, &dir, &session_json(&dir).unwrap_or_default(), true),
                None => serde_json::json!({ "id": null, "live": true }),
            };
            v["session_id"] = s.session_id.into();
            v["start"] = s.start.clone().into();
            v["client_address"] = s.client_address.clone().into();
            v["open_channels"] = s.open_channels.into();
            v["channels"] = serde_json::to_value(&s.channels).unwrap_or_default();
            v
        })
        .collect();
    for name in recorded(state).into_iter().filter(|n| !live_folders.contains(n)) {
        if let Some(dir) = session_dir(state, &name) {
            all.push(summary(&name, &dir, &session_json(&dir).unwrap_or_default(), false));
        }
    }
    let total = all.len();
    let sessions: Vec<serde_json::Value> = all.into_iter().skip(page.saturating_mul(per_page)).take(per_page).collect();
    serde_json::json!({ "page": page, "per_page": per_page, "total": total, "sessions": sessions })
}

fn session(state: &HttpState, id: &str) -> Option<serde_json::Value> {
    let dir = session_dir(state, id)?;
    let live = state.sessions.live().into_iter().find(|s| s.folder.as_deref() == Some(id));
    let json = session_json(&dir).unwrap_or_default();
    let mut v = summary(id, &dir, &json, live.is_some());
    if let Some(s) = live {
        v["open_channels"] = s.open_channels.into();
        v["channels"] = serde_json::to_value(&s.channels).unwrap_or_default();
    }
    v["session"] = json;
    Some(v)
}

/// The content type of a session file, by its name.
fn content_type(name: &Path) -> &'static str {
    match name.extension().and_then(|e| e.to_str()) {
        Some("pcap") => "application/vnd.tcpdump.pcap",
        Some("json") => "application/json",
        Some("mp4") => "video/mp4",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}

/// A single byte range of a file of `len` bytes (RFC 9110 14.1.2):
/// `bytes=a-b`, `bytes=a-`, `bytes=-n`; `Err` when unsatisfiable, `None`
/// for a header this server ignores (several ranges, other units).
fn parse_range(value: &str, len: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.is_empty(), b.is_empty()) {
        (true, true) => return None,
        (true, false) => {
            let n: u64 = b.parse().ok()?;
            if n == 0 || len == 0 {
                return Some(Err(()));
            }
            (len.saturating_sub(n), len - 1)
        }
        (false, _) => {
            let start: u64 = a.parse().ok()?;
            let end: u64 = if b.is_empty() { len.saturating_sub(1) } else { b.parse().ok()? };
            if start >= len || end < start {
                return Some(Err(()));
            }
            (start, end.min(len - 1))
        }
    };
    Some(Ok(range))
}

/// Streams `file` (or the requested range of it).
async fn send_file(file: &Path, range: Option<&HeaderValue>) -> Response<Body> {
    let Ok(mut f) = tokio::fs::File::open(file).await else { return status(StatusCode::NOT_FOUND) };
    let Ok(len) = f.metadata().await.map(|m| m.len()) else { return status(StatusCode::NOT_FOUND) };
    let requested = range.and_then(|v| v.to_str().ok()).and_then(|v| parse_range(v, len));
    let (code, start, end) = match requested {
        None => (StatusCode::OK, 0, len.saturating_sub(1)),
        Some(Ok((a, b))) => (StatusCode::PARTIAL_CONTENT, a, b),
        Some(Err(())) => {
            let mut r = status(StatusCode::RANGE_NOT_SATISFIABLE);
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    let count = if len == 0 { 0 } else { end - start + 1 };
    if f.seek(std::io::SeekFrom::Start(start)).await.is_err() {
        return status(StatusCode::INTERNAL_SERVER_ERROR);
    }
    let stream = futures_util::stream::unfold((f, count), |(mut f, left)| async move {
        if left == 0 {
            return None;
        }
        let want = usize::try_from(left).map_or(CHUNK, |l| l.min(CHUNK));
        let mut buf = vec![0u8; want];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Frame::data(Bytes::from(buf))), (f, left - n as u64)))
            }
            Err(e) => Some((Err(e), (f, 0))),
        }
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    *r.status_mut() = code;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(file)));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if code == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}"))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    r
}

/// Display `n` as PNG: for a live session what its renderer shows now
/// (pointer included); for a recording its final picture, or at `?at=`
/// seconds since its first message.
async fn screenshot(state: &HttpState, id: &str, n: &str, query: &str) -> Response<Body> {
    let (Some(dir), Ok(display)) = (session_dir(state, id), n.parse::<u8>()) else {
        return status(StatusCode::NOT_FOUND);
    };
    let until = match param(query, "at").map(str::parse::<f64>) {
        None => crate::render::offline::Until::End,
        Some(Ok(t)) if t.is_finite() && t >= 0.0 => crate::render::offline::Until::Time(Duration::from_secs_f64(t)),
        Some(_) => return status(StatusCode::BAD_REQUEST),
    };
    // A live session: what its renderer shows now.
    if until == crate::render::offline::Until::End
        && let Some(render) = state.sessions.live_render(id)
    {
        return match tokio::time::timeout(SNAPSHOT_TIMEOUT, render.snapshot(display)).await {
            Ok(Ok(Some(surface))) => match tokio::task::spawn_blocking(move || {
                let mut out = Vec::new();
                crate::render::offline::encode_png(&surface, &mut out).map(|()| out)
            })
            .await
            {
                Ok(Ok(png)) => full(StatusCode::OK, "image/png", png),
                _ => status(StatusCode::INTERNAL_SERVER_ERROR),
            },
            Ok(_) => status(StatusCode::NOT_FOUND),
            Err(_) => status(StatusCode::SERVICE_UNAVAILABLE),
        };
    }
    let pcap = dir.join(format!("display-{display}.pcap"));
    if !pcap.is_file() {
        return status(StatusCode::NOT_FOUND);
    }
    let png = tokio::task::spawn_blocking(move || {
        let (surface, _) = crate::render::offline::render_pcap(&pcap, None, until, true)?;
        let mut out = Vec::new();
        crate::render::offline::encode_png(&surface, &mut out)?;
        Ok::<_, crate::render::offline::OfflineError>(out)
    })
    .await;
    match png {
        Ok(Ok(png)) => full(StatusCode::OK, "image/png", png),
        Ok(Err(e)) => full(StatusCode::UNPROCESSABLE_ENTITY, "text/plain; charset=utf-8", format!("{e}\n")),
        Err(_) => status(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some(Ok((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=-1000", 100), Some(Ok((0, 99))));
        assert_eq!(parse_range("bytes=50-5000", 100), Some(Ok((50, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=9-3", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=-0", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
        assert_eq!(parse_range("bytes=x-1", 100), None);
        assert_eq!(parse_range("bytes=18446744073709551615-", 100), Some(Err(())));
    }

    #[test]
    fn only_plain_components() {
        for ok in ["20261206T034040.639Z-4242", "display-0.pcap", "session.json"] {
            assert!(plain_component(ok), "{ok}");
        }
        for bad in ["", "..", ".hidden", "a/b", "a\\b", "%2e%2e", "a\0b", "x\n"] {
            assert!(!plain_component(bad), "{bad:?}");
        }
    }
}

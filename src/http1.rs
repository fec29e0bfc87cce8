//! HTTP/1.1 message boundaries in the two byte streams of one connection,
//! sans-IO: enough to count requests (method, target) and responses
//! (status code) of a connection seen from the outside, as webdav folder
//! sharing carries them.
//!
//! Heads are parsed by `httparse`; bodies are skipped by the rules of
//! RFC 9112 §6.3: `Transfer-Encoding: chunked` (chunk sizes through
//! `httparse::parse_chunk_size`, then trailers), else `Content-Length`,
//! else nothing for a request and "until the connection closes" for a
//! response; responses to HEAD and 1xx, 204 and 304 responses have no body,
//! and a 1xx response is followed by the final one. Nothing here holds
//! more than [`MAX_HEAD`] bytes of a head or [`MAX_LINE`] bytes of a chunk
//! line.

use std::collections::VecDeque;

use thiserror::Error;

/// Longest request or response head followed (start line and headers).
pub const MAX_HEAD: usize = 64 * 1024;
/// Longest chunk-size or trailer line followed.
pub const MAX_LINE: usize = 4096;
/// Most headers in one head.
const MAX_HEADERS: usize = 128;

/// What a connection said, in order per direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpEvent {
    /// A request head.
    Request {
        /// The method (`PROPFIND`, `GET`, ...).
        method: String,
        /// The request target as sent (`/dir/file%20name`).
        target: String,
    },
    /// A response head.
    Response {
        /// The status code.
        status: u16,
    },
}

/// Why a direction can no longer be followed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Http1Error {
    /// A head over [`MAX_HEAD`] bytes.
    #[error("HTTP head longer than {MAX_HEAD} bytes")]
    HeadTooLong,
    /// A chunk-size or trailer line over [`MAX_LINE`] bytes.
    #[error("HTTP chunk line longer than {MAX_LINE} bytes")]
    LineTooLong,
    /// httparse refused a head.
    #[error("HTTP head: {0}")]
    Head(String),
    /// A `Content-Length` that is not a number, or two that differ.
    #[error("bad Content-Length")]
    ContentLength,
    /// A chunk-size line that is not one.
    #[error("bad chunk size line")]
    ChunkSize,
    /// The chunk data is not followed by CRLF.
    #[error("chunk data not followed by CRLF")]
    ChunkEnd,
    /// Bytes after a response whose body lasts until the connection closes
    /// cannot be told apart; a response arrived with no request.
    #[error("response without a request")]
    UnexpectedResponse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

#[derive(Debug)]
enum State {
    Head,
    Length(u64),
    ChunkLine,
    ChunkData(u64),
    ChunkCrlf(u8),
    Trailer,
    UntilClose,
}

#[derive(Debug)]
struct Stream {
    state: State,
    buf: Vec<u8>,
}

impl Stream {
    fn new() -> Self {
        Self { state: State::Head, buf: Vec::new() }
    }
}

/// Both directions of one HTTP/1.1 connection.
#[derive(Debug)]
pub struct Http1Connection {
    requests: Stream,
    responses: Stream,
    /// Methods of requests whose final response has not been seen.
    pending: VecDeque<String>,
}

impl Default for Http1Connection {
    fn default() -> Self {
        Self::new()
    }
}

impl Http1Connection {
    /// A connection before its first byte.
    pub fn new() -> Self {
        Self { requests: Stream::new(), responses: Stream::new(), pending: VecDeque::new() }
    }

    /// Follows bytes the client (`from_client`) or the server sent,
    /// appending the heads they complete to `out`.
    ///
    /// # Errors
    /// [`Http1Error`] when the direction cannot be followed further; the
    /// caller stops feeding it.
    pub fn feed(&mut self, from_client: bool, mut bytes: &[u8], out: &mut Vec<HttpEvent>) -> Result<(), Http1Error> {
        while !bytes.is_empty() {
            let st = if from_client { &mut self.requests } else { &mut self.responses };
            match &mut st.state {
                State::Head => {
                    let used = take_head(st, bytes)?;
                    bytes = &bytes[used..];
                    if st.buf.ends_with(b"\r\n\r\n") || st.buf.ends_with(b"\n\n") {
                        let head = std::mem::take(&mut st.buf);
                        self.head(from_client, &head, out)?;
                    }
                }
                State::Length(n) => {
                    let take = usize::try_from(*n).unwrap_or(usize::MAX).min(bytes.len());
                    *n -= take as u64;
                    bytes = &bytes[take..];
                    if *n == 0 {
                        st.state = State::Head;
                    }
                }
                State::ChunkLine => {
                    let (used, line) = take_line(st, bytes)?;
                    bytes = &bytes[used..];
                    if line {
                        let size = match httparse::parse_chunk_size(&st.buf) {
                            Ok(httparse::Status::Complete((_, size))) => size,
                            _ => return Err(Http1Error::ChunkSize),
                        };
                        st.buf.clear();
                        st.state = if size == 0 { State::Trailer } else { State::ChunkData(size) };
                    }
                }
                State::ChunkData(n) => {
                    let take = usize::try_from(*n).unwrap_or(usize::MAX).min(bytes.len());
                    *n -= take as u64;
                    bytes = &bytes[take..];
                    if *n == 0 {
                        st.state = State::ChunkCrlf(0);
                    }
                }
                State::ChunkCrlf(seen) => {
                    let want = b"\r\n"[usize::from(*seen)];
                    if bytes[0] != want {
                        return Err(Http1Error::ChunkEnd);
                    }
                    bytes = &bytes[1..];
                    *seen += 1;
                    if *seen == 2 {
                        st.state = State::ChunkLine;
                    }
                }
                State::Trailer => {
                    let (used, line) = take_line(st, bytes)?;
                    bytes = &bytes[used..];
                    if line {
                        let empty = st.buf == b"\r\n" || st.buf == b"\n";
                        st.buf.clear();
                        if empty {
                            st.state = State::Head;
                        }
                    }
                }
                State::UntilClose => return Ok(()),
            }
        }
        Ok(())
    }

    /// Requests still waiting for their final response.
    pub fn unanswered(&self) -> usize {
        self.pending.len()
    }

    fn head(&mut self, from_client: bool, head: &[u8], out: &mut Vec<HttpEvent>) -> Result<(), Http1Error> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        if from_client {
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(head) {
                Ok(httparse::Status::Complete(_)) => {}
                Ok(httparse::Status::Partial) => return Err(Http1Error::Head("incomplete".into())),
                Err(e) => return Err(Http1Error::Head(e.to_string())),
            }
            let method = req.method.unwrap_or_default().to_string();
            let body = match body_of(req.headers)? {
                Body::UntilClose => Body::None,
                b => b,
            };
            out.push(HttpEvent::Request { method: method.clone(), target: req.path.unwrap_or_default().to_string() });
            self.pending.push_back(method);
            self.requests.state = state_for(body);
        } else {
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(head) {
                Ok(httparse::Status::Complete(_)) => {}
                Ok(httparse::Status::Partial) => return Err(Http1Error::Head("incomplete".into())),
                Err(e) => return Err(Http1Error::Head(e.to_string())),
            }
            let status = resp.code.unwrap_or_default();
            out.push(HttpEvent::Response { status });
            let body = if (100..200).contains(&status) {
                Body::None
            } else {
                let Some(method) = self.pending.pop_front() else { return Err(Http1Error::UnexpectedResponse) };
                if method == "HEAD" || status == 204 || status == 304 { Body::None } else { body_of(resp.headers)? }
            };
            self.responses.state = state_for(body);
        }
        Ok(())
    }
}

fn state_for(body: Body) -> State {
    match body {
        Body::None | Body::Length(0) => State::Head,
        Body::Length(n) => State::Length(n),
        Body::Chunked => State::ChunkLine,
        Body::UntilClose => State::UntilClose,
    }
}

/// Appends head bytes up to and including the blank line that ends it;
/// returns how many bytes of `bytes` it took.
fn take_head(st: &mut Stream, bytes: &[u8]) -> Result<usize, Http1Error> {
    for (i, &b) in bytes.iter().enumerate() {
        // Empty lines before a request line are ignored (RFC 9112 §2.2).
        if st.buf.is_empty() && (b == b'\r' || b == b'\n') {
            continue;
        }
        if st.buf.len() >= MAX_HEAD {
            return Err(Http1Error::HeadTooLong);
        }
        st.buf.push(b);
        if b == b'\n' && (st.buf.ends_with(b"\r\n\r\n") || st.buf.ends_with(b"\n\n")) {
            return Ok(i + 1);
        }
    }
    Ok(bytes.len())
}

/// Appends one line (with its LF); returns the bytes taken and whether the
/// line is complete.
fn take_line(st: &mut Stream, bytes: &[u8]) -> Result<(usize, bool), Http1Error> {
    let (n, done) = match bytes.iter().position(|&b| b == b'\n') {
        Some(i) => (i + 1, true),
        None => (bytes.len(), false),
    };
    if st.buf.len() + n > MAX_LINE {
        return Err(Http1Error::LineTooLong);
    }
    st.buf.extend_from_slice(&bytes[..n]);
    Ok((n, done))
}

fn body_of(headers: &[httparse::Header<'_>]) -> Result<Body, Http1Error> {
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let v = String::from_utf8_lossy(h.value);
            chunked = v.split(',').next_back().is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).map_err(|_| Http1Error::ContentLength)?;
            let n: u64 = v.trim().parse().map_err(|_| Http1Error::ContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(Http1Error::ContentLength);
            }
            length = Some(n);
        }
    }
    Ok(match (chunked, length) {
        (true, _) => Body::Chunked,
        (false, Some(n)) => Body::Length(n),
        (false, None) => Body::UntilClose,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, target: &str) -> HttpEvent {
        HttpEvent::Request { method: method.into(), target: target.into() }
    }

    fn resp(status: u16) -> HttpEvent {
        HttpEvent::Response { status }
    }

    /// Feeds `client` and `server` one byte at a time and at once; both
    /// must give the same events.
    fn follow(client: &[u8], server: &[u8]) -> Vec<HttpEvent> {
        let mut whole = Vec::new();
        let mut c = Http1Connection::new();
        c.feed(true, client, &mut whole).unwrap();
        c.feed(false, server, &mut whole).unwrap();
        let mut bytewise = Vec::new();
        let mut c = Http1Connection::new();
        for b in client {
            c.feed(true, std::slice::from_ref(b), &mut bytewise).unwrap();
        }
        for b in server {
            c.feed(false, std::slice::from_ref(b), &mut bytewise).unwrap();
        }
        assert_eq!(whole, bytewise);
        whole
    }

    #[test]
    fn pipelined_requests_with_bodies_and_their_responses() {
        let client = b"PROPFIND / HTTP/1.1\r\nDepth: 1\r\nContent-Length: 5\r\n\r\n<a/>\nGET /f HTTP/1.1\r\n\r\n\
PUT /n HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\nHEAD /f HTTP/1.1\r\n\r\n";
        let server = b"HTTP/1.1 207 Multi-Status\r\nContent-Length: 3\r\n\r\n<x>\
HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nbody\r\n0\r\n\r\n\
HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n\
HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n";
        assert_eq!(
            follow(client, server),
            [
                req("PROPFIND", "/"),
                req("GET", "/f"),
                req("PUT", "/n"),
                req("HEAD", "/f"),
                resp(207),
                resp(200),
                resp(100),
                resp(201),
                resp(200)
            ]
        );
    }

    #[test]
    fn a_response_without_length_lasts_until_the_close() {
        let ev = follow(b"GET / HTTP/1.0\r\n\r\n", b"HTTP/1.0 200 OK\r\n\r\nHTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(ev, [req("GET", "/"), resp(200)]);
    }

    #[test]
    fn hostile_streams_are_errors() {
        let mut out = Vec::new();
        let mut c = Http1Connection::new();
        assert_eq!(c.feed(true, &vec![b'A'; MAX_HEAD + 1], &mut out), Err(Http1Error::HeadTooLong));
        let mut c = Http1Connection::new();
        assert!(matches!(c.feed(true, b"\x01\x02 / HTTP/1.1\r\n\r\n", &mut out), Err(Http1Error::Head(_))));
        let mut c = Http1Connection::new();
        let bad_len = b"PUT / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(c.feed(true, bad_len, &mut out), Err(Http1Error::ContentLength));
        let mut c = Http1Connection::new();
        assert_eq!(c.feed(false, b"HTTP/1.1 200 OK\r\n\r\n", &mut out), Err(Http1Error::UnexpectedResponse));
        let mut c = Http1Connection::new();
        let chunked = b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(c.feed(true, chunked, &mut out), Err(Http1Error::ChunkSize));
        let mut c = Http1Connection::new();
        let long_line =
            [b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".as_slice(), &[b'1'; MAX_LINE + 1]].concat();
        assert_eq!(c.feed(true, &long_line, &mut out), Err(Http1Error::LineTooLong));
        let mut c = Http1Connection::new();
        let no_crlf = b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab";
        assert_eq!(c.feed(true, no_crlf, &mut out), Err(Http1Error::ChunkEnd));
        // A huge Content-Length is skipped lazily, never allocated.
        let mut c = Http1Connection::new();
        c.feed(true, b"PUT / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\nxyz", &mut out).unwrap();
        assert_eq!(c.unanswered(), 1);
    }
}

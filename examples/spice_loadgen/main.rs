//! `spice_loadgen` — a SPICE-shaped bulk load generator for benchmarking relays.
//!
//! It plays both ends of one SPICE display-channel connection on loopback so
//! that a relay (socat, haproxy, `spicetap proxy`, ...) can be placed between
//! them. It does not use the spicetap library; besides `std` it needs only
//! `rustls` (ring provider, blocking `StreamOwned` over std `TcpStream`), for
//! the optional TLS on either end. Plain TCP is the default.
//!
//! ```text
//!  spice_loadgen client ──TCP or TLS──▶ relay under test ──TCP or TLS──▶ spice_loadgen server
//! ```
//!
//! # Wire layout (little-endian, as in spice-protocol `spice/protocol.h`)
//!
//! 1. client → server: `SpiceLinkHeader` (magic `REDQ` = 0x51444552, major 2,
//!    minor 2, size 22) + `SpiceLinkMess` (connection_id 0, channel_type 2 =
//!    display, channel_id 0, num_common_caps 1, num_channel_caps 0,
//!    caps_offset 18) + one common caps word
//!    `AUTH_SELECTION | AUTH_SPICE | MINI_HEADER` = 0b1011.
//! 2. server → client: `SpiceLinkHeader` (size 182) + `SpiceLinkReply`
//!    (error 0, 162-byte zero pub_key, num_common_caps 1, num_channel_caps 0,
//!    caps_offset 178) + the same common caps word.
//! 3. client → server: auth mechanism u32 = 1 (`SPICE_COMMON_CAP_AUTH_SPICE`),
//!    then a 128-byte ticket.
//! 4. server → client: link result u32 = 0 (`SPICE_LINK_ERR_OK`).
//! 5. server → client: mini-header messages (`type` u16 = 304
//!    `SPICE_MSG_DISPLAY_DRAW_COPY`, `size` u32, then `size` body bytes), each
//!    `--msg-size` bytes in total (header included, default 65536). The
//!    message count is `ceil(--bytes / --msg-size)`, so the stream length is
//!    `--bytes` rounded up to whole messages. The server writes them with
//!    ~1 MiB `write`s of a buffer built once, as fast as the peer reads
//!    unless `--rate R` (see below).
//! 6. The client reads with a 1 MiB buffer, checks every mini header, and once
//!    it has the whole stream it samples CPU, prints a JSON line and closes;
//!    the server waits for that close before accepting the next connection
//!    (so the relay is still alive, connection open, when CPU is sampled).
//!
//! # Roles
//!
//! ```text
//! spice_loadgen server [--listen 127.0.0.1:0] [--ready-file F] [--connections K]
//!                      [--bytes N] [--msg-size M] [--rate R]
//!                      [--tls-cert FILE --tls-key FILE]
//! spice_loadgen client --connect ADDR [--bytes N] [--msg-size M]
//!                      [--relay-pid PID]... [--server-pid PID] [--clk-tck HZ]
//!                      [--settle SECS] [--tls-ca FILE]
//! spice_loadgen sessions --listen 127.0.0.1:P [--connect RELAY] [--sessions N]
//!                        [--seconds S] [--ramp S] [--display-rate HZ]
//!                        [--display-size B] [--inputs-rate HZ]
//!                        [--relay-pid PID]... [--after-close S]
//! spice_loadgen free-port
//! ```
//!
//! * `server` serves connections one at a time, forever unless
//!   `--connections K` (K > 0). The bound `host:port` is printed on stdout and,
//!   with `--ready-file`, written (atomically, via rename) to that file.
//!   `--rate R` paces the message stream to an average of R bytes per second
//!   (0, the default, means unpaced): before each ~1 MiB write the server
//!   sleeps until `start + bytes_sent / R`, `start` being the end of the link
//!   stage. A server that falls behind (the relay reads slower than R) writes
//!   back to back until it is on schedule again, so the average is R whenever
//!   the relay can sustain it. The first write goes out at once and the last
//!   one at `(stream - chunk) / R`, so a client timing the whole stream sees R
//!   plus one chunk's worth (0.1% for 1 GiB).
//! * `client` prints one JSON object: `bytes` (message stream bytes, link
//!   stage excluded), `seconds` (from link completion to the last byte),
//!   `gbps` (1e9 bytes/s), and CPU seconds (`utime + stime` from
//!   `/proc/PID/stat`, divided by `--clk-tck`, default 100) between just
//!   before connecting and just after the last byte (plus `--settle` seconds,
//!   default 0, connection still open: lets a relay finish work it queued,
//!   such as writing a capture), for: the process trees
//!   rooted at the `--relay-pid`s (`relay_cpu_s`), the `--server-pid` tree
//!   (`server_cpu_s`) and the client itself (`client_cpu_s`); `null` when not
//!   requested.
//! * `sessions` plays both ends of N whole sessions (main, display, inputs,
//!   cursor) at once, paced and timestamped, and reports one-way latency
//!   percentiles and the relay's CPU, memory, threads and descriptors: see
//!   `sessions.rs`.
//! * `free-port` prints a currently free loopback TCP port.
//!
//! # TLS
//!
//! * `server --tls-cert FILE --tls-key FILE` (PEM: certificate chain, leaf
//!   first; PKCS#8, PKCS#1 or SEC1 key) makes every connection TLS (rustls
//!   defaults: TLS 1.3 or 1.2, the client's suite order). After each
//!   handshake the server prints `tls VERSION SUITE` (e.g.
//!   `tls TLSv1_3 TLS13_AES_256_GCM_SHA384`) on stdout.
//! * `client --tls-ca FILE` connects with TLS, trusting only the CA
//!   certificate(s) in FILE and checking the certificate against the host of
//!   `--connect` (an IP address such as 127.0.0.1 must be an IP SAN). Its JSON
//!   gains `"tls":"VERSION SUITE"` (`null` without TLS). It ends the stream
//!   with a TLS close_notify before closing.
//!
//! The link stage and the message stream are the same with and without TLS.
//! Both ends read the TLS socket through a 256 KiB buffer (rustls on its own
//! reads 4 KiB at a time), so the loadgen's share of the CPU stays small.
//!
//! Sizes and rates accept a binary suffix: `K`, `M`, `G` (e.g. `--bytes 2G`,
//! `--rate 200M` = 200 × 2^20 bytes/s).

use std::collections::BTreeSet;
use std::io::{self, BufReader, IoSlice, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, CommonState, RootCertStore, ServerConfig, ServerConnection, StreamOwned};

const SPICE_MAGIC: u32 = 0x5144_4552; // "REDQ"
const SPICE_VERSION_MAJOR: u32 = 2;
const SPICE_VERSION_MINOR: u32 = 2;
const SPICE_CHANNEL_DISPLAY: u8 = 2;
/// AUTH_SELECTION (bit 0) | AUTH_SPICE (bit 1) | MINI_HEADER (bit 3).
const COMMON_CAPS: u32 = (1 << 0) | (1 << 1) | (1 << 3);
const LINK_HEADER_SIZE: usize = 16;
/// `SpiceLinkMess` without caps: 4 + 1 + 1 + 4 + 4 + 4.
const LINK_MESS_SIZE: u32 = 18;
const PUB_KEY_SIZE: usize = 162;
/// `SpiceLinkReply` without caps: 4 + 162 + 4 + 4 + 4.
const LINK_REPLY_SIZE: u32 = 178;
const AUTH_MECHANISM_SPICE: u32 = 1;
const TICKET_SIZE: usize = 128;
const SPICE_MSG_DISPLAY_DRAW_COPY: u16 = 304;
const MINI_HEADER_SIZE: usize = 6;

const WRITE_CHUNK: usize = 1 << 20;
const READ_BUF: usize = 1 << 20;
const DEFAULT_BYTES: u64 = 2 << 30;
const DEFAULT_MSG_SIZE: usize = 65536;
/// Read buffer under rustls (which asks the socket for 4 KiB at a time).
const TLS_READ_BUF: usize = 256 << 10;
/// Most TLS bytes rustls buffers for sending (its default is 64 KiB): lets
/// the server hand ~1 MiB of records to the kernel per write, as in plain TCP.
const TLS_SEND_BUFFER: usize = 2 << 20;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

mod sessions;

struct Opts {
    listen: String,
    ready_file: Option<String>,
    connections: u64,
    connect: Option<String>,
    bytes: u64,
    msg_size: usize,
    relay_pids: Vec<u32>,
    server_pid: Option<u32>,
    clk_tck: f64,
    settle: f64,
    /// Server pacing, bytes per second; 0 = unpaced.
    rate: u64,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    tls_ca: Option<String>,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.split_first() {
        Some((role, rest)) if role == "server" => parse_opts(rest).and_then(|o| server(&o)),
        Some((role, rest)) if role == "client" => parse_opts(rest).and_then(|o| client(&o)),
        Some((role, rest)) if role == "sessions" => sessions::parse(rest).and_then(sessions::run),
        Some((role, _)) if role == "free-port" => free_port(),
        _ => Err("usage: spice_loadgen server|client|sessions|free-port [options] (see the //! headers)".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spice_loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_size(s: &str) -> Result<u64> {
    let (num, mult) = match s.as_bytes().last() {
        Some(b'K' | b'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 1 << 20),
        Some(b'G' | b'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    n.checked_mul(mult).ok_or_else(|| format!("size {s:?} overflows").into())
}

fn parse_opts(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        listen: "127.0.0.1:0".into(),
        ready_file: None,
        connections: 0,
        connect: None,
        bytes: DEFAULT_BYTES,
        msg_size: DEFAULT_MSG_SIZE,
        relay_pids: Vec::new(),
        server_pid: None,
        clk_tck: 100.0,
        settle: 0.0,
        rate: 0,
        tls_cert: None,
        tls_key: None,
        tls_ca: None,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => o.listen = value()?.clone(),
            "--ready-file" => o.ready_file = Some(value()?.clone()),
            "--connections" => o.connections = value()?.parse()?,
            "--connect" => o.connect = Some(value()?.clone()),
            "--bytes" => o.bytes = parse_size(value()?)?,
            "--msg-size" => o.msg_size = usize::try_from(parse_size(value()?)?)?,
            "--relay-pid" => o.relay_pids.push(value()?.parse()?),
            "--server-pid" => o.server_pid = Some(value()?.parse()?),
            "--clk-tck" => o.clk_tck = value()?.parse()?,
            "--settle" => o.settle = value()?.parse()?,
            "--rate" => o.rate = parse_size(value()?)?,
            "--tls-cert" => o.tls_cert = Some(value()?.clone()),
            "--tls-key" => o.tls_key = Some(value()?.clone()),
            "--tls-ca" => o.tls_ca = Some(value()?.clone()),
            other => return Err(format!("unknown option {other:?}").into()),
        }
    }
    let max_msg = MINI_HEADER_SIZE as u64 + u64::from(u32::MAX);
    if o.msg_size < MINI_HEADER_SIZE || o.msg_size as u64 > max_msg {
        return Err(format!("--msg-size must be in {MINI_HEADER_SIZE}..={max_msg}").into());
    }
    if !(o.settle.is_finite() && o.settle >= 0.0) {
        return Err("--settle must be a number of seconds >= 0".into());
    }
    if o.bytes == 0 {
        return Err("--bytes must be > 0".into());
    }
    if o.tls_cert.is_some() != o.tls_key.is_some() {
        return Err("--tls-cert and --tls-key go together".into());
    }
    Ok(o)
}

/// Number of messages and total stream length for `bytes` / `msg_size`.
fn plan(o: &Opts) -> (u64, u64) {
    let msgs = o.bytes.div_ceil(o.msg_size as u64);
    (msgs, msgs * o.msg_size as u64)
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn link_header(size: u32) -> Vec<u8> {
    [SPICE_MAGIC, SPICE_VERSION_MAJOR, SPICE_VERSION_MINOR, size].iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Reads a `SpiceLinkHeader` and the body it announces.
fn read_link(s: &mut impl Read, what: &str) -> Result<Vec<u8>> {
    let mut hdr = [0u8; LINK_HEADER_SIZE];
    s.read_exact(&mut hdr)?;
    let (magic, major, size) = (le32(&hdr, 0), le32(&hdr, 4), le32(&hdr, 12));
    if magic != SPICE_MAGIC || major != SPICE_VERSION_MAJOR {
        return Err(format!("{what}: bad link header (magic {magic:#x}, major {major})").into());
    }
    if size > 4096 {
        return Err(format!("{what}: link body size {size} too large").into());
    }
    let mut body = vec![0u8; size as usize];
    s.read_exact(&mut body)?;
    Ok(body)
}

// ---------------------------------------------------------------- server --

fn server(o: &Opts) -> Result<()> {
    let listener = TcpListener::bind(&o.listen)?;
    let addr = listener.local_addr()?.to_string();
    println!("{addr}");
    io::stdout().flush()?;
    if let Some(path) = &o.ready_file {
        let tmp = format!("{path}.tmp");
        std::fs::write(&tmp, &addr)?;
        std::fs::rename(&tmp, path)?;
    }
    let tls = match (&o.tls_cert, &o.tls_key) {
        (Some(cert), Some(key)) => Some(server_tls_config(cert, key)?),
        _ => None,
    };
    let stream = build_stream_buffer(o.msg_size);
    let mut served = 0u64;
    for conn in listener.incoming() {
        let result = conn.map_err(Into::into).and_then(|tcp| match &tls {
            None => serve(tcp, o, &stream, |_| {}),
            Some(config) => {
                let mut conn = ServerConnection::new(config.clone())?;
                conn.set_buffer_limit(Some(TLS_SEND_BUFFER));
                let mut s = StreamOwned::new(conn, Sock::new(tcp));
                let result = serve(&mut s, o, &stream, |s| {
                    println!("tls {}", tls_description(&s.conn));
                });
                // Answer the client's close_notify (harmless if the peer is gone).
                s.conn.send_close_notify();
                let _ = s.flush();
                result
            }
        });
        if let Err(e) = result {
            eprintln!("spice_loadgen server: connection failed: {e}");
        }
        served += 1;
        if o.connections != 0 && served >= o.connections {
            break;
        }
    }
    Ok(())
}

/// As many whole messages as fit in `WRITE_CHUNK` (at least one).
fn build_stream_buffer(msg_size: usize) -> Vec<u8> {
    let count = (WRITE_CHUNK / msg_size).max(1);
    let body_size = u32::try_from(msg_size - MINI_HEADER_SIZE).unwrap();
    let mut msg = Vec::with_capacity(msg_size);
    msg.extend_from_slice(&SPICE_MSG_DISPLAY_DRAW_COPY.to_le_bytes());
    msg.extend_from_slice(&body_size.to_le_bytes());
    msg.extend((0..body_size).map(|i| i as u8));
    msg.repeat(count)
}

/// Serves one connection; `linked` runs once the link stage is over (with
/// TLS, the handshake is then complete).
fn serve<S: Read + Write>(mut s: S, o: &Opts, buf: &[u8], linked: impl FnOnce(&S)) -> Result<()> {
    // Link stage.
    let mess = read_link(&mut s, "client link")?;
    if mess.len() < LINK_MESS_SIZE as usize || mess[4] != SPICE_CHANNEL_DISPLAY {
        return Err("client link: unexpected SpiceLinkMess".into());
    }
    let mut reply = link_header(LINK_REPLY_SIZE + 4);
    reply.extend_from_slice(&0u32.to_le_bytes()); // error = SPICE_LINK_ERR_OK
    reply.extend_from_slice(&[0u8; PUB_KEY_SIZE]);
    for v in [1u32, 0, LINK_REPLY_SIZE, COMMON_CAPS] {
        reply.extend_from_slice(&v.to_le_bytes());
    }
    s.write_all(&reply)?;
    let mut auth = [0u8; 4 + TICKET_SIZE];
    s.read_exact(&mut auth)?;
    if le32(&auth, 0) != AUTH_MECHANISM_SPICE {
        return Err(format!("client chose auth mechanism {}", le32(&auth, 0)).into());
    }
    s.write_all(&0u32.to_le_bytes())?; // link result = SPICE_LINK_ERR_OK
    s.flush()?;
    linked(&s);

    // Message stream, whole messages per write, paced with --rate.
    let per_buf = (buf.len() / o.msg_size) as u64;
    let (mut left, _) = plan(o);
    let start = Instant::now();
    let mut sent = 0u64;
    while left > 0 {
        if o.rate > 0 {
            let due = start + Duration::from_secs_f64(sent as f64 / o.rate as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let n = left.min(per_buf);
        let len = n as usize * o.msg_size;
        s.write_all(&buf[..len])?;
        sent += len as u64;
        left -= n;
    }

    s.flush()?;

    // Keep the connection (and so the relay's) open until the client is done.
    // A TLS peer that closes without close_notify ends the wait as well.
    let mut sink = [0u8; 4096];
    loop {
        match s.read(&mut sink) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

// ---------------------------------------------------------------- client --

fn client(o: &Opts) -> Result<()> {
    let addr = o.connect.as_deref().ok_or("client needs --connect ADDR")?;
    let tls = match &o.tls_ca {
        Some(ca) => Some((client_tls_config(ca)?, server_name_of(addr)?)),
        None => None,
    };
    let self_pid = std::process::id();
    let server_pids: Vec<u32> = o.server_pid.into_iter().collect();
    let sample = || [cpu_ticks(&o.relay_pids), cpu_ticks(&server_pids), cpu_ticks(&[self_pid])];
    let cpu0 = sample();

    let tcp = TcpStream::connect(addr)?;
    let (got, seconds, cpu1, tls_info) = match tls {
        None => {
            let mut s = tcp;
            let (got, seconds) = transfer(&mut s, o)?;
            std::thread::sleep(Duration::from_secs_f64(o.settle));
            let cpu1 = sample();
            let _ = s.shutdown(Shutdown::Both);
            (got, seconds, cpu1, None)
        }
        Some((config, name)) => {
            let mut s = StreamOwned::new(ClientConnection::new(config, name)?, Sock::new(tcp));
            let (got, seconds) = transfer(&mut s, o)?;
            std::thread::sleep(Duration::from_secs_f64(o.settle));
            let cpu1 = sample();
            let info = tls_description(&s.conn);
            s.conn.send_close_notify();
            let _ = s.flush();
            let _ = s.sock.get_ref().shutdown(Shutdown::Both);
            (got, seconds, cpu1, Some(info))
        }
    };

    let cpu = |i: usize, wanted: bool| match (wanted, cpu0[i], cpu1[i]) {
        (true, Some(a), Some(b)) => format!("{:.3}", b.saturating_sub(a) as f64 / o.clk_tck),
        _ => "null".into(),
    };
    println!(
        "{{\"bytes\":{got},\"msg_size\":{},\"seconds\":{seconds:.4},\"gbps\":{:.4},\
         \"relay_cpu_s\":{},\"server_cpu_s\":{},\"client_cpu_s\":{},\"tls\":{}}}",
        o.msg_size,
        got as f64 / seconds / 1e9,
        cpu(0, !o.relay_pids.is_empty()),
        cpu(1, o.server_pid.is_some()),
        cpu(2, true),
        tls_info.map_or("null".into(), |t| format!("\"{t}\"")),
    );
    Ok(())
}

/// Link stage, then the whole message stream (checked); returns the stream
/// bytes and the seconds from link completion to the last byte.
fn transfer<S: Read + Write>(s: &mut S, o: &Opts) -> Result<(u64, f64)> {
    let (_, total) = plan(o);
    let mut hello = link_header(LINK_MESS_SIZE + 4);
    hello.extend_from_slice(&0u32.to_le_bytes()); // connection_id
    hello.extend_from_slice(&[SPICE_CHANNEL_DISPLAY, 0]); // channel_type, channel_id
    for v in [1u32, 0, LINK_MESS_SIZE, COMMON_CAPS] {
        hello.extend_from_slice(&v.to_le_bytes());
    }
    s.write_all(&hello)?;
    s.flush()?;
    let reply = read_link(s, "server link")?;
    if reply.len() < LINK_REPLY_SIZE as usize || le32(&reply, 0) != 0 {
        return Err("server link: bad or failed SpiceLinkReply".into());
    }
    let mut auth = AUTH_MECHANISM_SPICE.to_le_bytes().to_vec();
    auth.extend_from_slice(&[0xA5; TICKET_SIZE]);
    s.write_all(&auth)?;
    s.flush()?;
    let mut result = [0u8; 4];
    s.read_exact(&mut result)?;
    if u32::from_le_bytes(result) != 0 {
        return Err(format!("link result {}", u32::from_le_bytes(result)).into());
    }

    let start = Instant::now();
    let mut checker = MiniHeaderChecker::new(o.msg_size);
    let mut buf = vec![0u8; READ_BUF];
    let mut got = 0u64;
    while got < total {
        let want = (total - got).min(buf.len() as u64) as usize;
        let n = s.read(&mut buf[..want])?;
        if n == 0 {
            return Err(format!("EOF after {got} of {total} stream bytes").into());
        }
        checker.feed(&buf[..n])?;
        got += n as u64;
    }
    Ok((got, start.elapsed().as_secs_f64()))
}

/// Verifies the mini-header framing across arbitrary read boundaries.
struct MiniHeaderChecker {
    msg_size: usize,
    pos: usize,
    hdr: [u8; MINI_HEADER_SIZE],
}

impl MiniHeaderChecker {
    fn new(msg_size: usize) -> Self {
        Self { msg_size, pos: 0, hdr: [0; MINI_HEADER_SIZE] }
    }

    fn feed(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let n = if self.pos < MINI_HEADER_SIZE {
                let n = (MINI_HEADER_SIZE - self.pos).min(data.len());
                self.hdr[self.pos..self.pos + n].copy_from_slice(&data[..n]);
                if self.pos + n == MINI_HEADER_SIZE {
                    let ty = u16::from_le_bytes([self.hdr[0], self.hdr[1]]);
                    let size = le32(&self.hdr, 2) as usize;
                    if ty != SPICE_MSG_DISPLAY_DRAW_COPY || size != self.msg_size - MINI_HEADER_SIZE {
                        return Err(format!("bad mini header: type {ty}, size {size}").into());
                    }
                }
                n
            } else {
                (self.msg_size - self.pos).min(data.len())
            };
            self.pos += n;
            if self.pos == self.msg_size {
                self.pos = 0;
            }
            data = &data[n..];
        }
        Ok(())
    }
}

// ------------------------------------------------------------------- tls --

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_tls_config(cert: &str, key: &str) -> Result<Arc<ServerConfig>> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{cert}: {e}"))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| format!("{cert}: {e}"))?;
    if chain.is_empty() {
        return Err(format!("{cert}: no certificate").into());
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{key}: {e}"))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(Arc::new(config))
}

fn client_tls_config(ca: &str) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{ca}: {e}"))? {
        roots.add(cert.map_err(|e| format!("{ca}: {e}"))?)?;
    }
    if roots.is_empty() {
        return Err(format!("{ca}: no certificate").into());
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The host part of `host:port` / `[v6]:port` as a TLS server name.
fn server_name_of(addr: &str) -> Result<ServerName<'static>> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    Ok(ServerName::try_from(host.to_string()).map_err(|e| format!("TLS server name {host:?}: {e}"))?)
}

/// `VERSION SUITE`, e.g. `TLSv1_3 TLS13_AES_256_GCM_SHA384`.
fn tls_description(c: &CommonState) -> String {
    let version = c.protocol_version().map_or("?".into(), |v| format!("{v:?}"));
    let suite = c.negotiated_cipher_suite().map_or("?".into(), |s| format!("{:?}", s.suite()));
    format!("{version} {suite}")
}

/// A TCP stream read through a large buffer; writes (vectored too, as
/// rustls sends records) go straight to the socket.
struct Sock(BufReader<TcpStream>);

impl Sock {
    fn new(tcp: TcpStream) -> Self {
        Self(BufReader::with_capacity(TLS_READ_BUF, tcp))
    }

    fn get_ref(&self) -> &TcpStream {
        self.0.get_ref()
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.get_mut().write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.get_mut().write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.get_mut().flush()
    }
}

// ------------------------------------------------------------------- cpu --

/// Fields of `/proc/PID/stat` after the `(comm)`: state is index 0.
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    // state is not numeric; keep positions stable by mapping it to 0.
    Some(rest.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect())
}

/// `utime + stime + cutime + cstime` (ticks) over the process trees rooted at
/// `roots` (children found by scanning `/proc/*/stat` for their ppid).
/// `None` if a root has gone away.
fn cpu_ticks(roots: &[u32]) -> Option<u64> {
    if roots.is_empty() {
        return Some(0);
    }
    let mut tree: BTreeSet<u32> = roots.iter().copied().collect();
    let procs: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, *stat_fields(pid)?.get(1)? as u32)))
        .collect();
    loop {
        let new: Vec<u32> =
            procs.iter().filter(|(p, pp)| tree.contains(pp) && !tree.contains(p)).map(|(p, _)| *p).collect();
        if new.is_empty() {
            break;
        }
        tree.extend(new);
    }
    let mut sum = 0;
    for pid in tree {
        match stat_fields(pid) {
            // utime, stime, cutime, cstime are stat fields 14..=17.
            Some(f) if f.len() > 14 => sum += f[11] + f[12] + f[13] + f[14],
            _ if roots.contains(&pid) => return None,
            _ => {} // a descendant that just exited
        }
    }
    Some(sum)
}

// ------------------------------------------------------------- free-port --

fn free_port() -> Result<()> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    println!("{}", l.local_addr()?.port());
    Ok(())
}

//! `spice_loadgen sessions`: many concurrent SPICE-shaped sessions, both
//! ends in this process, timed message by message.
//!
//! ```text
//!  clients ──▶ relay under test (--connect) ──▶ server (--listen)
//!  N sessions × (main, display, inputs, cursor)
//! ```
//!
//! # Sessions
//!
//! Every channel goes through the link stage of the `server`/`client` roles
//! (zero public key, ticket not checked). The main channel's server sends
//! `SPICE_MSG_MAIN_INIT` (session id: a per-run base plus the session
//! number) and `SPICE_MSG_MAIN_CHANNELS_LIST` (display 0, inputs 0, cursor
//! 0); the client then links those three with that session id as
//! `connection_id`, as spice-gtk does.
//!
//! * display, server to client: once, `SPICE_MSG_DISPLAY_SURFACE_CREATE`
//!   (surface 0, 640x480, 32-bit xRGB, primary; not with `--no-surface`);
//!   then `--display-rate`
//!   times a second a `SPICE_MSG_DISPLAY_DRAW_FILL` (a 32x32 solid box that
//!   moves and changes colour, so a renderer and a video encoder have real
//!   work) followed by a `SPICE_MSG_PING` (`id` u32, `timestamp` u64 = the
//!   send time in nanoseconds since this process started, then padding) so
//!   the two messages total `--display-size` bytes with their mini headers.
//!   The client takes each PING's one-way latency from its timestamp.
//! * inputs, client to server: `--inputs-rate` times a second a
//!   `SPICE_MSGC_INPUTS_KEY_DOWN` or `KEY_UP` (scancode u32, alternating);
//!   the server takes each one's latency from the send time the client
//!   queued for that session (TCP keeps them in order).
//! * cursor: linked and idle. Every channel drains what it receives.
//! * `--no-surface`: not even the SURFACE_CREATE (with `--display-rate 0`,
//!   sessions that carry nothing after their link stage and MAIN_INIT).
//!
//! Session starts are spread over `--ramp` seconds and each display and
//! inputs schedule starts at a random phase, so the sessions do not tick
//! together. Latency is sampled from the moment every session is linked,
//! for `--seconds`.
//!
//! # Output
//!
//! One JSON object on stdout: sessions asked and linked, seconds measured,
//! messages and bytes each way, latency percentiles in microseconds
//! (`s2c_us`, `c2s_us`: p50, p99, p99.9, max, count), and for each
//! `--relay-pid` tree root: CPU seconds over the measured interval, peak
//! and end RSS (KiB), peak threads and file descriptors while the sessions
//! were open, and threads and descriptors `--after-close` seconds after
//! every session closed.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::{Result, cpu_ticks};

const MAIN: u8 = 1;
const DISPLAY: u8 = 2;
const INPUTS: u8 = 3;
const CURSOR: u8 = 4;
/// spice-protocol `enums.h`.
const SPICE_MSG_PING: u16 = 4;
const SPICE_MSG_MAIN_INIT: u16 = 103;
const SPICE_MSG_MAIN_CHANNELS_LIST: u16 = 104;
const SPICE_MSG_DISPLAY_DRAW_FILL: u16 = 302;
const SPICE_MSG_DISPLAY_SURFACE_CREATE: u16 = 314;
const SPICE_MSGC_INPUTS_KEY_DOWN: u16 = 101;
const SPICE_MSGC_INPUTS_KEY_UP: u16 = 102;
/// `SPICE_ROPD_OP_PUT` (spice-protocol `enums.h`).
const ROPD_OP_PUT: u16 = 1 << 3;
const WIDTH: u32 = 640;
const HEIGHT: u32 = 480;
/// DRAW_FILL body: DisplayBase (4 + 16 + 1), Brush (1 + 4), rop u16, QMask (13).
const FILL_BODY: usize = 41;
/// PING body without padding: id u32, timestamp u64.
const PING_BODY: usize = 12;

/// Options of the `sessions` role.
pub struct SessionOpts {
    listen: String,
    connect: Option<String>,
    sessions: usize,
    seconds: f64,
    ramp: f64,
    display_rate: f64,
    display_size: usize,
    inputs_rate: f64,
    relay_pids: Vec<u32>,
    clk_tck: f64,
    after_close: f64,
    link_timeout: f64,
    /// No SURFACE_CREATE either: display channels carry nothing at all.
    no_surface: bool,
}

pub fn parse(args: &[String]) -> Result<SessionOpts> {
    let mut o = SessionOpts {
        listen: "127.0.0.1:0".into(),
        connect: None,
        sessions: 10,
        seconds: 10.0,
        ramp: 1.0,
        display_rate: 100.0,
        display_size: 2048,
        inputs_rate: 10.0,
        relay_pids: Vec::new(),
        clk_tck: 100.0,
        after_close: 2.0,
        link_timeout: 60.0,
        no_surface: false,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => o.listen = value()?.clone(),
            "--connect" => o.connect = Some(value()?.clone()),
            "--sessions" => o.sessions = value()?.parse()?,
            "--seconds" => o.seconds = value()?.parse()?,
            "--ramp" => o.ramp = value()?.parse()?,
            "--display-rate" => o.display_rate = value()?.parse()?,
            "--display-size" => o.display_size = usize::try_from(super::parse_size(value()?)?)?,
            "--inputs-rate" => o.inputs_rate = value()?.parse()?,
            "--relay-pid" => o.relay_pids.push(value()?.parse()?),
            "--clk-tck" => o.clk_tck = value()?.parse()?,
            "--after-close" => o.after_close = value()?.parse()?,
            "--link-timeout" => o.link_timeout = value()?.parse()?,
            "--no-surface" => o.no_surface = true,
            other => return Err(format!("unknown option {other:?}").into()),
        }
    }
    let min = 6 + FILL_BODY + 6 + PING_BODY;
    if o.display_size < min || o.display_size > 16 << 20 {
        return Err(format!("--display-size must be in {min}..=16M").into());
    }
    for (name, v) in [("--seconds", o.seconds), ("--ramp", o.ramp), ("--after-close", o.after_close)] {
        if !(v.is_finite() && v >= 0.0) {
            return Err(format!("{name} must be a number of seconds >= 0").into());
        }
    }
    for (name, v) in [("--display-rate", o.display_rate), ("--inputs-rate", o.inputs_rate)] {
        if !(v.is_finite() && (0.0..=100_000.0).contains(&v)) {
            return Err(format!("{name} must be in 0..=100000 per second").into());
        }
    }
    Ok(o)
}

/// Nanoseconds since this process first asked.
fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// What both ends share.
struct Shared {
    opts: SessionOpts,
    /// Session ids start here (a per-run base, so runs do not reuse ids).
    id_base: u32,
    /// Per session id: send times of inputs messages not yet received.
    inputs_sent: Mutex<HashMap<u32, VecDeque<u64>>>,
    /// Latency samples are taken from then on (ns since start; MAX = not yet).
    measuring_from: AtomicU64,
    /// Latency samples are no longer taken (ns since start; MAX = not yet).
    measuring_until: AtomicU64,
    s2c: Mutex<Vec<u32>>,
    c2s: Mutex<Vec<u32>>,
    s2c_msgs: AtomicU64,
    c2s_msgs: AtomicU64,
    s2c_bytes: AtomicU64,
    c2s_bytes: AtomicU64,
    linked: AtomicUsize,
    stop: AtomicBool,
}

impl Shared {
    fn sample(&self, to: &Mutex<Vec<u32>>, sent_ns: u64, now: u64) {
        let from = self.measuring_from.load(Ordering::Relaxed);
        if sent_ns >= from && sent_ns < self.measuring_until.load(Ordering::Relaxed) {
            let us = now.saturating_sub(sent_ns) / 1000;
            to.lock().unwrap().push(u32::try_from(us).unwrap_or(u32::MAX));
        }
    }
}

fn mini(ty: u16, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(6 + body.len());
    v.extend_from_slice(&ty.to_le_bytes());
    v.extend_from_slice(&(body.len() as u32).to_le_bytes());
    v.extend_from_slice(body);
    v
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Runs the role; prints the JSON report.
pub fn run(o: SessionOpts) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(run_async(o))
}

async fn run_async(o: SessionOpts) -> Result<()> {
    now_ns();
    let listener = TcpListener::bind(&o.listen).await?;
    let server_addr = listener.local_addr()?.to_string();
    let connect = o.connect.clone().unwrap_or_else(|| server_addr.clone());
    let id_base = (std::process::id() % 1000) * 1_000_000 + 1;
    let shared = Arc::new(Shared {
        opts: o,
        id_base,
        inputs_sent: Mutex::new(HashMap::new()),
        measuring_from: AtomicU64::new(u64::MAX),
        measuring_until: AtomicU64::new(u64::MAX),
        s2c: Mutex::new(Vec::new()),
        c2s: Mutex::new(Vec::new()),
        s2c_msgs: AtomicU64::new(0),
        c2s_msgs: AtomicU64::new(0),
        s2c_bytes: AtomicU64::new(0),
        c2s_bytes: AtomicU64::new(0),
        linked: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
    });
    let next_id = Arc::new(AtomicU64::new(0));
    {
        let shared = shared.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let (shared, next_id) = (shared.clone(), next_id.clone());
                tokio::spawn(async move {
                    let _ = serve(s, shared, next_id).await;
                });
            }
        });
    }

    let o = &shared.opts;
    let started = Instant::now();
    let mut sessions = Vec::with_capacity(o.sessions);
    for i in 0..o.sessions {
        if o.sessions > 1 && o.ramp > 0.0 {
            let at = Duration::from_secs_f64(o.ramp * i as f64 / (o.sessions - 1) as f64);
            tokio::time::sleep_until(tokio::time::Instant::from_std(started + at)).await;
        }
        let (shared, connect) = (shared.clone(), connect.clone());
        sessions.push(tokio::spawn(async move { client_session(&connect, shared).await }));
    }
    let deadline = Instant::now() + Duration::from_secs_f64(o.link_timeout);
    while shared.linked.load(Ordering::Relaxed) < o.sessions && Instant::now() < deadline {
        if sessions.iter().all(tokio::task::JoinHandle::is_finished) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let linked = shared.linked.load(Ordering::Relaxed);

    // The measured interval.
    let pids = o.relay_pids.clone();
    let cpu_before = cpu_ticks(&pids);
    let from = now_ns();
    shared.measuring_from.store(from, Ordering::Relaxed);
    let (bytes0, msgs0) = (total(&shared.s2c_bytes, &shared.c2s_bytes), total(&shared.s2c_msgs, &shared.c2s_msgs));
    let mut peak = ProcStats::default();
    let end = Instant::now() + Duration::from_secs_f64(o.seconds);
    while Instant::now() < end {
        for &pid in &pids {
            peak = peak.max(ProcStats::of(pid));
        }
        tokio::time::sleep(Duration::from_millis(250).min(end.saturating_duration_since(Instant::now()))).await;
    }
    let until = now_ns();
    shared.measuring_until.store(until, Ordering::Relaxed);
    let cpu_after = cpu_ticks(&pids);
    let bytes = total(&shared.s2c_bytes, &shared.c2s_bytes) - bytes0;
    let msgs = total(&shared.s2c_msgs, &shared.c2s_msgs) - msgs0;
    let end_stats: Vec<ProcStats> = pids.iter().map(|&p| ProcStats::of(p)).collect();
    // Messages sent just before the end still arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;

    shared.stop.store(true, Ordering::Relaxed);
    for s in sessions {
        let _ = tokio::time::timeout(Duration::from_secs(30), s).await;
    }
    tokio::time::sleep(Duration::from_secs_f64(o.after_close)).await;
    let after: Vec<ProcStats> = pids.iter().map(|&p| ProcStats::of(p)).collect();

    let seconds = (until - from) as f64 / 1e9;
    let cpu = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) if !pids.is_empty() => format!("{:.3}", (b - a) as f64 / o.clk_tck),
        _ => "null".into(),
    };
    let s2c = percentiles(&mut shared.s2c.lock().unwrap());
    let c2s = percentiles(&mut shared.c2s.lock().unwrap());
    let end_rss = end_stats.iter().map(|s| s.rss_kib).sum::<u64>();
    let after_threads = after.iter().map(|s| s.threads).sum::<u64>();
    let after_fds = after.iter().map(|s| s.fds).sum::<u64>();
    println!(
        "{{\"sessions\":{},\"linked\":{linked},\"seconds\":{seconds:.3},\"messages\":{msgs},\"bytes\":{bytes},\
         \"s2c_us\":{s2c},\"c2s_us\":{c2s},\"relay_cpu_s\":{cpu},\"relay_rss_peak_kib\":{},\"relay_rss_end_kib\":{end_rss},\
         \"relay_threads_peak\":{},\"relay_fds_peak\":{},\"relay_threads_after\":{after_threads},\"relay_fds_after\":{after_fds}}}",
        o.sessions, peak.rss_kib, peak.threads, peak.fds
    );
    Ok(())
}

fn total(a: &AtomicU64, b: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed) + b.load(Ordering::Relaxed)
}

/// `{"p50":..,"p99":..,"p99_9":..,"max":..,"count":..}` of microsecond samples.
fn percentiles(v: &mut [u32]) -> String {
    if v.is_empty() {
        return "null".into();
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    format!(
        "{{\"p50\":{},\"p99\":{},\"p99_9\":{},\"max\":{},\"count\":{}}}",
        at(0.5),
        at(0.99),
        at(0.999),
        v[v.len() - 1],
        v.len()
    )
}

/// RSS, threads and open descriptors of one process.
#[derive(Default, Clone, Copy)]
struct ProcStats {
    rss_kib: u64,
    threads: u64,
    fds: u64,
}

impl ProcStats {
    fn of(pid: u32) -> Self {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count() as u64).unwrap_or(0);
        Self { rss_kib: field("VmRSS:"), threads: field("Threads:"), fds }
    }

    fn max(self, o: Self) -> Self {
        Self { rss_kib: self.rss_kib.max(o.rss_kib), threads: self.threads.max(o.threads), fds: self.fds.max(o.fds) }
    }
}

// ---------------------------------------------------------------- server --

/// Serves one channel connection.
async fn serve(s: TcpStream, shared: Arc<Shared>, next_id: Arc<AtomicU64>) -> Result<()> {
    s.set_nodelay(true)?;
    let (r, mut w) = s.into_split();
    let mut r = BufReader::with_capacity(64 << 10, r);
    let mut header = [0u8; 16];
    r.read_exact(&mut header).await?;
    let size = le32(&header, 12) as usize;
    if &header[..4] != b"REDQ" || !(18..=4096).contains(&size) {
        return Err("not a SPICE link message".into());
    }
    let mut mess = vec![0u8; size];
    r.read_exact(&mut mess).await?;
    let (connection_id, channel_type) = (le32(&mess, 0), mess[4]);
    let mut reply = super::link_header(super::LINK_REPLY_SIZE + 4);
    reply.extend_from_slice(&0u32.to_le_bytes());
    reply.extend_from_slice(&[0u8; super::PUB_KEY_SIZE]);
    for v in [1u32, 0, super::LINK_REPLY_SIZE, super::COMMON_CAPS] {
        reply.extend_from_slice(&v.to_le_bytes());
    }
    w.write_all(&reply).await?;
    let mut ticket = [0u8; 4 + super::TICKET_SIZE];
    r.read_exact(&mut ticket).await?;
    w.write_all(&0u32.to_le_bytes()).await?;

    match channel_type {
        MAIN => {
            let id = shared.id_base + next_id.fetch_add(1, Ordering::Relaxed) as u32;
            let init: Vec<u8> = [id, 1, 3, 1, 0, 0, 0, 0].iter().flat_map(|v| v.to_le_bytes()).collect();
            let mut out = mini(SPICE_MSG_MAIN_INIT, &init);
            let list: Vec<u8> = 3u32.to_le_bytes().into_iter().chain([DISPLAY, 0, INPUTS, 0, CURSOR, 0]).collect();
            out.extend(mini(SPICE_MSG_MAIN_CHANNELS_LIST, &list));
            w.write_all(&out).await?;
            drain(r).await
        }
        DISPLAY => {
            let drained = tokio::spawn(drain(r));
            let sent = display_stream(&mut w, &shared).await;
            drained.abort();
            sent
        }
        INPUTS => inputs_receiver(r, connection_id, &shared).await,
        _ => drain(r).await,
    }
}

/// Reads and discards until the peer closes.
async fn drain(mut r: impl AsyncReadExt + Unpin) -> Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    while r.read(&mut buf).await? > 0 {}
    Ok(())
}

/// A tick's DRAW_FILL: a 32x32 box at a place and colour given by `n`.
fn fill(n: u64) -> Vec<u8> {
    let (x, y) = ((n * 37 % u64::from(WIDTH - 32)) as i32, (n * 23 % u64::from(HEIGHT - 32)) as i32);
    let mut b = Vec::with_capacity(FILL_BODY);
    b.extend_from_slice(&0u32.to_le_bytes());
    for v in [y, x, y + 32, x + 32] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.push(0); // clip NONE
    b.push(1); // brush SOLID
    b.extend_from_slice(&((n as u32).wrapping_mul(0x9e37_79b9) | 0xff00_0000).to_le_bytes());
    b.extend_from_slice(&ROPD_OP_PUT.to_le_bytes());
    b.extend_from_slice(&[0; 13]); // QMask: flags, pos, no bitmap
    mini(SPICE_MSG_DISPLAY_DRAW_FILL, &b)
}

/// A pause of `1 / rate` seconds with a random first phase; `None` at rate 0.
fn schedule(rate: f64) -> Option<tokio::time::Interval> {
    (rate > 0.0).then(|| {
        let period = Duration::from_secs_f64(1.0 / rate);
        let phase = Duration::from_nanos(u64::from(rand_u32()) % period.as_nanos().max(1) as u64);
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        i
    })
}

fn rand_u32() -> u32 {
    static STATE: AtomicU64 = AtomicU64::new(0x2545_f491_4f6c_dd1d);
    let mut x = STATE.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    (x >> 32) as u32
}

async fn display_stream(w: &mut (impl AsyncWriteExt + Unpin), shared: &Shared) -> Result<()> {
    let o = &shared.opts;
    if !o.no_surface {
        let create: Vec<u8> = [0u32, WIDTH, HEIGHT, 32, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
        w.write_all(&mini(SPICE_MSG_DISPLAY_SURFACE_CREATE, &create)).await?;
    }
    let Some(mut ticks) = schedule(o.display_rate) else {
        while !shared.stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        return Ok(());
    };
    let padding = vec![0x5a; o.display_size - (6 + FILL_BODY + 6 + PING_BODY)];
    let mut n = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        let mut out = fill(n);
        let mut ping = Vec::with_capacity(PING_BODY + padding.len());
        ping.extend_from_slice(&(n as u32).to_le_bytes());
        ping.extend_from_slice(&now_ns().to_le_bytes());
        ping.extend_from_slice(&padding);
        out.extend(mini(SPICE_MSG_PING, &ping));
        w.write_all(&out).await?;
        n += 1;
    }
    Ok(())
}

async fn inputs_receiver(mut r: impl AsyncReadExt + Unpin, session: u32, shared: &Shared) -> Result<()> {
    let mut header = [0u8; 6];
    let mut body = Vec::new();
    loop {
        if r.read_exact(&mut header).await.is_err() {
            return Ok(());
        }
        let size = le32(&header, 2) as usize;
        if size > 1 << 20 {
            return Err("inputs message too large".into());
        }
        body.resize(size, 0);
        r.read_exact(&mut body).await?;
        let now = now_ns();
        let sent = shared.inputs_sent.lock().unwrap().get_mut(&session).and_then(VecDeque::pop_front);
        if let Some(sent) = sent {
            shared.sample(&shared.c2s, sent, now);
        }
        shared.c2s_msgs.fetch_add(1, Ordering::Relaxed);
        shared.c2s_bytes.fetch_add(6 + size as u64, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------- client --

/// Links a channel; returns the stream after the link result.
async fn link(addr: &str, channel_type: u8, connection_id: u32) -> Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut msg = super::link_header(super::LINK_MESS_SIZE + 4);
    msg.extend_from_slice(&connection_id.to_le_bytes());
    msg.extend_from_slice(&[channel_type, 0]);
    for v in [1u32, 0, super::LINK_MESS_SIZE, super::COMMON_CAPS] {
        msg.extend_from_slice(&v.to_le_bytes());
    }
    s.write_all(&msg).await?;
    let mut header = [0u8; 16];
    s.read_exact(&mut header).await?;
    let size = le32(&header, 12) as usize;
    if &header[..4] != b"REDQ" || size > 4096 {
        return Err("bad link reply".into());
    }
    let mut reply = vec![0u8; size];
    s.read_exact(&mut reply).await?;
    if le32(&reply, 0) != 0 {
        return Err(format!("link refused: error {}", le32(&reply, 0)).into());
    }
    let mut auth = super::AUTH_MECHANISM_SPICE.to_le_bytes().to_vec();
    auth.extend_from_slice(&[0u8; super::TICKET_SIZE]);
    s.write_all(&auth).await?;
    let mut result = [0u8; 4];
    s.read_exact(&mut result).await?;
    if result != [0; 4] {
        return Err(format!("link result {}", u32::from_le_bytes(result)).into());
    }
    Ok(s)
}

async fn client_session(addr: &str, shared: Arc<Shared>) -> Result<()> {
    let mut main = link(addr, MAIN, 0).await?;
    let mut header = [0u8; 6];
    main.read_exact(&mut header).await?;
    let mut init = vec![0u8; le32(&header, 2) as usize];
    main.read_exact(&mut init).await?;
    if u16::from_le_bytes([header[0], header[1]]) != SPICE_MSG_MAIN_INIT || init.len() < 4 {
        return Err("no SPICE_MSG_MAIN_INIT".into());
    }
    let id = le32(&init, 0);
    main.read_exact(&mut header).await?;
    let mut list = vec![0u8; le32(&header, 2) as usize];
    main.read_exact(&mut list).await?;
    shared.inputs_sent.lock().unwrap().insert(id, VecDeque::new());
    let display = link(addr, DISPLAY, id).await?;
    let inputs = link(addr, INPUTS, id).await?;
    let cursor = link(addr, CURSOR, id).await?;
    shared.linked.fetch_add(1, Ordering::Relaxed);

    let receiver = tokio::spawn(display_receiver(display, shared.clone()));
    let sender = tokio::spawn(inputs_sender(inputs, id, shared.clone()));
    let (main_r, _main_w) = main.into_split();
    let (cursor_r, _cursor_w) = cursor.into_split();
    let idle = tokio::spawn(async move { tokio::join!(drain(main_r), drain(cursor_r)) });
    while !shared.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sender.abort();
    receiver.abort();
    idle.abort();
    shared.inputs_sent.lock().unwrap().remove(&id);
    Ok(())
}

async fn display_receiver(s: TcpStream, shared: Arc<Shared>) -> Result<()> {
    let mut r = BufReader::with_capacity(256 << 10, s);
    let mut header = [0u8; 6];
    let mut body = Vec::new();
    loop {
        r.read_exact(&mut header).await?;
        let ty = u16::from_le_bytes([header[0], header[1]]);
        let size = le32(&header, 2) as usize;
        if size > 16 << 20 {
            return Err("display message too large".into());
        }
        body.resize(size, 0);
        r.read_exact(&mut body).await?;
        let now = now_ns();
        if ty == SPICE_MSG_PING && size >= PING_BODY {
            let sent = u64::from_le_bytes(body[4..12].try_into().unwrap());
            shared.sample(&shared.s2c, sent, now);
        }
        shared.s2c_msgs.fetch_add(1, Ordering::Relaxed);
        shared.s2c_bytes.fetch_add(6 + size as u64, Ordering::Relaxed);
    }
}

async fn inputs_sender(mut s: TcpStream, session: u32, shared: Arc<Shared>) -> Result<()> {
    let Some(mut ticks) = schedule(shared.opts.inputs_rate) else {
        return drain(s).await;
    };
    let mut down = true;
    loop {
        ticks.tick().await;
        let ty = if down { SPICE_MSGC_INPUTS_KEY_DOWN } else { SPICE_MSGC_INPUTS_KEY_UP };
        // Scancode 0x1e ('a'), its release with bit 7 set.
        let code: u32 = if down { 0x1e } else { 0x9e };
        down = !down;
        let msg = mini(ty, &code.to_le_bytes());
        if let Some(q) = shared.inputs_sent.lock().unwrap().get_mut(&session) {
            q.push_back(now_ns());
        }
        s.write_all(&msg).await?;
    }
}

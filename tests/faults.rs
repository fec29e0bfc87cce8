//! Faults around the proxy, each also checked for forwarding going on
//! unchanged: a capture disk that fills up or stops returning from writes,
//! servers that reset or stop reading, clients that vanish or trickle, a
//! connection flood, and peers that replay a recorded session with random
//! mutations.
//!
//! The scripted server (`support::fake_server`) plays the server where a
//! fault must happen at a precise byte; QEMU plays it where a real display
//! matters. Mounting a tmpfs or freezing a filesystem needs root: the CI
//! machine runs the suite as root; elsewhere those two tests say they are
//! skipped.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use support::fake_server::{FakeServer, RAW, RESET, SLEEP, STALL, accept_link, wire_bytes};
use support::*;

/// `SPICE_MSG_PING` (spice-protocol `enums.h`): id u32, timestamp u64,
/// then any data.
const PING: u16 = 4;
/// `SPICE_MSGC_PONG`: the same layout, client to server.
const PONG: u16 = 3;

/// Link-stage bytes `session.json` counts with a channel of the scripted
/// servers: link reply (16 + 182) and link result (4) from the server, link
/// message (16 + 22), auth mechanism (4) and ticket (128) from the client.
const LINK_S2C: u64 = 202;
const LINK_C2S: u64 = 170;

fn ping(id: u32, data_len: usize) -> (u16, Vec<u8>) {
    let mut body = id.to_le_bytes().to_vec();
    body.extend_from_slice(&0u64.to_le_bytes());
    body.extend_from_slice(&noise(data_len, id + 1));
    (PING, body)
}

fn sleep_ms(ms: u32) -> (u16, Vec<u8>) {
    (SLEEP, ms.to_le_bytes().to_vec())
}

/// Links a main channel to the scripted server through `addr` and reads
/// its `SPICE_MSG_MAIN_INIT` (session 4242) and one-display
/// `SPICE_MSG_MAIN_CHANNELS_LIST`; the session lives while it is open.
fn open_session(addr: SocketAddr) -> TcpStream {
    let mut main = link_raw(addr, 1, 0);
    let mut init_and_list = [0u8; 6 + 32 + 6 + 6];
    main.read_exact(&mut init_and_list).unwrap();
    assert_eq!(u32::from_le_bytes(init_and_list[6..10].try_into().unwrap()), 4242);
    main
}

/// Reads until the connection ends; returns the bytes and whether it ended
/// by a reset rather than an orderly close.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, false),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (got, true),
            Err(e) => panic!("connection not closed within {limit:?}: {e} (after {} bytes)", got.len()),
        }
    }
}

/// A mini-header client message.
fn client_message(ty: u16, body: &[u8]) -> Vec<u8> {
    let mut v = ty.to_le_bytes().to_vec();
    v.extend_from_slice(&(body.len() as u32).to_le_bytes());
    v.extend_from_slice(body);
    v
}

/// Resets `s` (`SO_LINGER` 0, then close).
fn reset(s: TcpStream) {
    socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
    drop(s);
}

/// The one session folder of a stopped spicetap and its display channel.
fn display_channel(tap: &Spicetap) -> (PathBuf, serde_json::Value) {
    let sessions = tap.sessions();
    assert_eq!(sessions.len(), 1, "one session recorded");
    let session = sessions[0].clone();
    let display = channels(&session_json(&session))
        .into_iter()
        .find(|c| c["type"] == "display")
        .expect("the display channel is in session.json");
    (session, display)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn server_reset_mid_message_is_forwarded_to_the_byte_and_recorded() {
    let dir = Scratch::new("fault-server-reset");
    let mut script: Vec<_> = (0..16).map(|i| ping(i, 60_000)).collect();
    // Pauses let the proxy read everything before the reset: a reset
    // discards what its receiver has not read yet, proxy or not.
    let cut = wire_bytes(&[ping(99, 60_000)]);
    script.push(sleep_ms(300));
    script.push((RAW, cut[..30_000].to_vec()));
    script.push(sleep_ms(300));
    script.push((RESET, Vec::new()));
    let expected = wire_bytes(&script);
    let server = FakeServer::start(script);
    let mut tap = Spicetap::start(&dir.path, &format!("127.0.0.1:{}", server.port), true, &["--no-video"]);

    let main = open_session(tap.addr);
    let mut display = link_raw(tap.addr, 2, 4242);
    let (got, was_reset) = read_until_closed(&mut display, Duration::from_secs(20));
    assert_eq!(got.len(), expected.len(), "every byte up to the server's reset reaches the client");
    assert!(got == expected, "the bytes are the server's");
    eprintln!("server reset after {} bytes; the client saw a {}", got.len(), if was_reset { "reset" } else { "close" });
    drop(main);
    tap.stop();

    let (session, display) = display_channel(&tap);
    assert_eq!(display["end"]["reason"], "server_closed", "{display}");
    assert!(display["end"]["error"].as_str().unwrap_or("").contains("reset"), "{display}");
    assert_eq!(display["server_to_client"]["bytes"].as_u64(), Some(expected.len() as u64 + LINK_S2C));
    assert!(display["capture_loss"].is_null(), "{display}");
    check_pcap(&session, &display);
}

#[test]
fn a_server_that_stops_reading_backs_up_its_client_not_the_proxy() {
    let dir = Scratch::new("fault-server-stall");
    let mut script: Vec<_> = (0..4).map(|i| ping(i, 1000)).collect();
    script.push((STALL, 8000u32.to_le_bytes().to_vec()));
    let first = wire_bytes(&script);
    let server = FakeServer::start(script);
    let mut tap = Spicetap::start(&dir.path, &format!("127.0.0.1:{}", server.port), true, &["--no-video"]);
    let rss_before = rss_kib(tap.guard.pid());

    let main = open_session(tap.addr);
    let mut display = link_raw(tap.addr, 2, 4242);
    let mut head = vec![0u8; first.len()];
    display.read_exact(&mut head).unwrap();
    assert!(head == first);

    // The client sends until its writes stop being taken.
    let mut writer = display.try_clone().unwrap();
    writer.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let pong = client_message(PONG, &noise(65_536, 7));
    let mut sent = 0usize;
    loop {
        match writer.write(&pong) {
            Ok(n) => sent += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("client write failed: {e}"),
        }
        assert!(sent < 512 << 20, "the proxy took 512 MiB for a server that reads nothing");
    }
    let rss_stalled = rss_kib(tap.guard.pid());
    eprintln!(
        "stalled server: the client got {sent} bytes in before blocking; proxy RSS {rss_before} -> {rss_stalled} KiB"
    );
    // Socket buffers on both legs and one relay buffer, nothing more.
    assert!(sent < 64 << 20, "{sent} bytes taken for a stalled server");
    assert!(rss_stalled < rss_before + 32 * 1024, "proxy RSS grew from {rss_before} to {rss_stalled} KiB");

    // Another session through the same proxy works meanwhile.
    let other_main = open_session(tap.addr);
    let mut other = link_raw(tap.addr, 2, 4242);
    let mut other_head = vec![0u8; first.len()];
    other.read_exact(&mut other_head).unwrap();
    assert!(other_head == first, "a second session is served while the first server stalls");
    drop((other, other_main));

    // When the server gives up (a reset), the stalled channel ends.
    let (_, _) = read_until_closed(&mut display, Duration::from_secs(20));
    drop(main);
    tap.stop();
    let log = tap.log_text();
    assert!(!log.contains("panicked"), "{log}");
    let sessions = tap.sessions();
    let stalled = sessions
        .iter()
        .flat_map(|s| channels(&session_json(s)))
        .filter(|c| c["type"] == "display")
        .find(|c| c["end"]["error"].as_str().is_some_and(|e| e.contains("reset") || e.contains("Broken pipe")))
        .expect("the stalled display channel ended when its server reset");
    let forwarded = stalled["client_to_server"]["bytes"].as_u64().unwrap() - LINK_C2S;
    assert!(forwarded <= sent as u64, "forwarded {forwarded} of {sent}");
}

#[test]
fn clients_that_vanish_or_trickle_are_closed_and_others_keep_working() {
    let dir = Scratch::new("fault-client");
    let mut script: Vec<_> = (0..4).map(|i| ping(i, 1000)).collect();
    let first = wire_bytes(&script);
    script.push(sleep_ms(600_000));
    let server = FakeServer::start(script);
    let mut tap = Spicetap::start(&dir.path, &format!("127.0.0.1:{}", server.port), true, &["--no-video"]);
    let main = open_session(tap.addr);

    // A client trickling its link message, a byte every 300 ms.
    let addr = tap.addr;
    let trickle = std::thread::spawn(move || {
        let mut link = b"REDQ".to_vec();
        for v in [2u32, 2, 22, 0] {
            link.extend_from_slice(&v.to_le_bytes());
        }
        link.extend_from_slice(&[2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 18, 0, 0, 0, 11, 0, 0, 0]);
        let mut s = TcpStream::connect(addr).unwrap();
        let start = Instant::now();
        for b in &link {
            if s.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
            let mut probe = [0u8; 1];
            s.set_nonblocking(true).unwrap();
            let closed = match s.read(&mut probe) {
                Ok(0) => true,
                Err(e) => e.kind() == ErrorKind::ConnectionReset,
                Ok(_) => false,
            };
            s.set_nonblocking(false).unwrap();
            if closed {
                return start.elapsed();
            }
        }
        let (_, _) = read_until_closed(&mut s, Duration::from_secs(30));
        start.elapsed()
    });

    // Clients that vanish mid-link: half a link header, closed or reset.
    let mut s = TcpStream::connect(tap.addr).unwrap();
    s.write_all(b"REDQ\x02\x00").unwrap();
    drop(s);
    let mut s = TcpStream::connect(tap.addr).unwrap();
    s.write_all(b"REDQ\x02\x00\x00\x00\x02\x00\x00\x00\x16\x00\x00\x00\x00\x00").unwrap();
    reset(s);

    // A client that vanishes mid-message (a reset) after the link stage.
    let mut display = link_raw(tap.addr, 2, 4242);
    let mut head = vec![0u8; first.len()];
    display.read_exact(&mut head).unwrap();
    assert!(head == first);
    let whole = client_message(PONG, &noise(40_000, 3));
    let c2s = [whole.clone(), whole[..20_000].to_vec()].concat();
    display.write_all(&c2s).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    reset(display);

    // A well-behaved second channel of the session works throughout.
    let mut again = link_raw(tap.addr, 2, 4242);
    let mut head = vec![0u8; first.len()];
    again.read_exact(&mut head).unwrap();
    assert!(head == first, "a new channel is served while the others misbehave");

    let took = trickle.join().unwrap();
    eprintln!("the trickling client was closed after {took:.1?}");
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(14),
        "closed after {took:?}, not at the 10 s link timeout"
    );
    // Still served after the trickle.
    let mut third = link_raw(tap.addr, 2, 4242);
    let mut head = vec![0u8; first.len()];
    third.read_exact(&mut head).unwrap();
    drop((again, third, main));
    tap.stop();

    let log = tap.log_text();
    assert!(log.contains("client sent no complete link message within 10s"), "{log}");
    let vanished = tap
        .sessions()
        .iter()
        .flat_map(|s| channels(&session_json(s)))
        .find(|c| {
            c["type"] == "display" && c["client_to_server"]["bytes"].as_u64() == Some(c2s.len() as u64 + LINK_C2S)
        })
        .expect("the channel whose client vanished is recorded with every byte it sent");
    assert_eq!(vanished["end"]["reason"], "client_closed", "{vanished}");
    let session = tap.sessions().pop().unwrap();
    check_pcap(&session, &vanished);
}

#[test]
fn a_connection_flood_past_max_connections_is_refused_and_sessions_go_on() {
    let dir = Scratch::new("fault-flood");
    let mut script: Vec<_> = (0..4).map(|i| ping(i, 1000)).collect();
    script.push(sleep_ms(2000));
    script.extend((4..8).map(|i| ping(i, 1000)));
    let all = wire_bytes(&script);
    let first = wire_bytes(&script[..4]);
    script.push(sleep_ms(600_000));
    let server = FakeServer::start(script);
    let mut tap = Spicetap::start(
        &dir.path,
        &format!("127.0.0.1:{}", server.port),
        true,
        &["--no-video", "--max-connections", "6"],
    );
    let main = open_session(tap.addr);
    let mut display = link_raw(tap.addr, 2, 4242);
    let mut head = vec![0u8; first.len()];
    display.read_exact(&mut head).unwrap();

    // 40 connections that send nothing: 4 take the free places, the rest
    // are closed at once without a byte.
    let flood: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(tap.addr).unwrap()).collect();
    let mut refused = 0;
    for mut s in flood.iter().map(|s| s.try_clone().unwrap()) {
        s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut b = [0u8; 1];
        match s.read(&mut b) {
            Ok(0) => refused += 1,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => refused += 1,
            Ok(_) => panic!("a flood connection got bytes"),
            Err(_) => {}
        }
    }
    assert_eq!(refused, 36, "past --max-connections 6 every connection is closed at once");

    // The open session still gets its stream, to the byte.
    let mut rest = vec![0u8; all.len() - first.len()];
    display.read_exact(&mut rest).unwrap();
    assert!([head, rest].concat() == all, "the open session's stream is unchanged");

    // Once the flood is gone, new sessions are served again.
    drop(flood);
    std::thread::sleep(Duration::from_millis(300));
    let mut again = link_raw(tap.addr, 2, 4242);
    let mut head = vec![0u8; first.len()];
    again.read_exact(&mut head).unwrap();
    assert!(head == first);
    drop((again, display, main));
    tap.stop();
    assert!(tap.log_text().matches("too many connections; closed").count() >= 36);
}

/// A mount made by a test (tmpfs, or an ext4 image on a loop device), frozen
/// or not; thawed and unmounted on drop.
struct Mount {
    path: PathBuf,
    frozen: bool,
}

impl Mount {
    fn root() -> bool {
        Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
    }

    fn run(what: &str, cmd: &mut Command) {
        let out = run_bounded(cmd, Duration::from_secs(60));
        assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A tmpfs of `size` (mount's syntax, e.g. `48k`) at `path`.
    fn tmpfs(path: &Path, size: &str) -> Self {
        std::fs::create_dir_all(path).unwrap();
        Self::run(
            "mount tmpfs",
            Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(path),
        );
        Self { path: path.to_path_buf(), frozen: false }
    }

    /// A fresh ext4 filesystem of `mib` MiB in `image`, mounted at `path`.
    fn ext4(image: &Path, mib: u32, path: &Path) -> Self {
        std::fs::create_dir_all(path).unwrap();
        Self::run("truncate", Command::new("truncate").arg("-s").arg(format!("{mib}M")).arg(image));
        Self::run("mkfs.ext4", Command::new("mkfs.ext4").arg("-q").arg(image));
        Self::run("mount ext4", Command::new("mount").args(["-o", "loop"]).arg(image).arg(path));
        Self { path: path.to_path_buf(), frozen: false }
    }

    /// Every write to the filesystem blocks until [`Self::thaw`].
    fn freeze(&mut self) {
        Self::run("fsfreeze -f", Command::new("fsfreeze").arg("-f").arg(&self.path));
        self.frozen = true;
    }

    fn thaw(&mut self) {
        if self.frozen {
            Self::run("fsfreeze -u", Command::new("fsfreeze").arg("-u").arg(&self.path));
            self.frozen = false;
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.frozen {
            let _ = Command::new("fsfreeze").arg("-u").arg(&self.path).status();
        }
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[test]
fn a_full_capture_disk_stops_the_capture_not_the_session() {
    if !Mount::root() {
        eprintln!("SKIPPED: mounting a small tmpfs needs root");
        return;
    }
    let dir = Scratch::new("fault-disk-full");
    let qemu = Qemu::bios(&dir.path, "");
    // Room for session.json and the pcap headers, not for the display.
    let _disk = Mount::tmpfs(&dir.path.join("capture"), "40k");
    let mut tap = Spicetap::start(&dir.path, &format!("127.0.0.1:{}", qemu.port), true, &[]);
    same_screen(|out| spicy_screenshot(qemu.port, out), |out| spicy_screenshot(tap.port(), out), &dir.path);
    // And again, on a disk that is now full from the start of the session.
    same_screen(|out| spicy_screenshot(qemu.port, out), |out| spicy_screenshot(tap.port(), out), &dir.path);
    tap.stop();

    let log = tap.log_text();
    assert!(log.contains("No space left on device"), "the full disk is logged:\n{log}");
    assert!(
        ["capture of this channel stopped", "cannot write pcap", "finishing pcap failed"]
            .iter()
            .any(|l| log.contains(l)),
        "the log says the capture stopped:\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    let mut pcaps = 0;
    for session in tap.sessions() {
        // session.json is replaced whole or not at all (a session that
        // starts on a full disk has none).
        if session.join("session.json").exists() {
            let report = session_json(&session);
            assert!(report["session_id"].is_u64(), "{report}");
        }
        for entry in std::fs::read_dir(&session).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "pcap") {
                let n = pcap_packets_to_last_complete(&path);
                eprintln!("{}: {n} packets", path.display());
                pcaps += 1;
            }
        }
    }
    assert!(pcaps > 0, "some pcap was started before the disk filled");
}

/// A scripted display channel of 64 KiB pings, `mib` MiB in all, paced by
/// a pause of `pause_ms` after each MiB.
fn bulk_script(mib: usize, pause_ms: u32) -> Vec<(u16, Vec<u8>)> {
    let mut script = Vec::new();
    for m in 0..mib as u32 {
        script.extend((0..16).map(|i| ping((m * 16 + i) % 64, 65_536 - 18)));
        script.push(sleep_ms(pause_ms));
    }
    script.push(sleep_ms(600_000));
    script
}

/// Receives a whole bulk stream of `bytes` through `addr`; returns the
/// seconds it took from the link.
fn receive_bulk(addr: SocketAddr, bytes: usize) -> f64 {
    let main = open_session(addr);
    let mut display = link_raw(addr, 2, 4242);
    let start = Instant::now();
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0;
    display.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    while got < bytes {
        let n = display.read(&mut buf).unwrap();
        assert!(n > 0, "stream ended after {got} of {bytes} bytes");
        got += n;
    }
    let secs = start.elapsed().as_secs_f64();
    drop((display, main));
    secs
}

#[test]
fn a_stalled_capture_writer_costs_forwarding_nothing() {
    if !Mount::root() {
        eprintln!("SKIPPED: freezing a filesystem needs root");
        return;
    }
    let dir = Scratch::new("fault-stalled-writer");
    // Paced (a 4 ms pause per MiB) so that the two shared cores are not
    // the limit: what is measured is whether the stalled capture holds
    // forwarding back, not how much CPU the consumers take (scripts/bench).
    const MIB: usize = 96;
    let script = bulk_script(MIB, 4);
    let bytes = wire_bytes(&script).len();
    let server = FakeServer::start(script);
    let upstream = format!("127.0.0.1:{}", server.port);
    let http_port = free_port();
    let http = format!("127.0.0.1:{http_port}");
    let mut plain = Spicetap::start(&dir.path, &upstream, false, &[]);
    let mut disk = Mount::ext4(&dir.path.join("capture.img"), 64, &dir.path.join("capture"));
    let mut tap = Spicetap::start(&dir.path, &upstream, true, &["--capture-queue-mib", "8", "--http", &http]);
    disk.freeze();

    // Watch the capture queue while the sessions run.
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (done, peak) = (done.clone(), peak.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let reply = get(http_port, "/metrics");
                let queued = String::from_utf8_lossy(&reply.body)
                    .lines()
                    .find_map(|l| l.strip_prefix("spicetap_capture_queue_bytes "))
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .unwrap_or(0.0);
                peak.fetch_max(queued as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let (mut direct_best, mut stalled_best) = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        direct_best = direct_best.min(receive_bulk(plain.addr, bytes));
        stalled_best = stalled_best.min(receive_bulk(tap.addr, bytes));
    }
    done.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let rate = |s: f64| bytes as f64 / s / 1e6;
    eprintln!(
        "{MIB} MiB: without capture {:.0} MB/s, capture on a frozen disk {:.0} MB/s; capture queue peak {} bytes",
        rate(direct_best),
        rate(stalled_best),
        peak.load(Ordering::Relaxed)
    );
    // Within the noise of two runs on two shared cores.
    assert!(stalled_best < direct_best * 1.15, "{stalled_best:.3} s against {direct_best:.3} s");
    // 8 MiB of queue per session (the main channel's share is tiny).
    assert!(peak.load(Ordering::Relaxed) <= 3 * (8 << 20) + (1 << 20), "queue peak {}", peak.load(Ordering::Relaxed));
    let rss = rss_kib(tap.guard.pid());
    eprintln!("spicetap RSS with three stalled captures: {rss} KiB");

    // Thawed, the writers finish: every session says its capture stopped.
    disk.thaw();
    plain.stop();
    tap.stop();
    let log = tap.log_text();
    assert!(log.contains("capture writer fell behind"), "{log}");
    // Three display channels (sessions of one id may merge when one
    // starts before the proxy saw the last one end).
    let displays: Vec<_> = tap
        .sessions()
        .iter()
        .filter(|s| !s.ends_with("lost+found"))
        .flat_map(|s| channels(&session_json(s)).into_iter().map(move |c| (s.clone(), c)))
        .filter(|(_, c)| c["type"] == "display")
        .collect();
    assert_eq!(displays.len(), 3);
    for (session, display) in &displays {
        assert!(
            display["capture_loss"].as_str().is_some_and(|l| l.contains("fell behind")),
            "the loss is recorded: {display}"
        );
        assert_eq!(display["server_to_client"]["bytes"].as_u64(), Some(bytes as u64 + LINK_S2C));
        pcap_packets_to_last_complete(&session.join(display["pcap"].as_str().unwrap()));
    }
}

/// The display stream QEMU sent spicy-screenshot (`tests/fixtures`), split
/// into its messages.
fn recorded_messages(file: &str) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(file)).unwrap();
    let mut out = Vec::new();
    let mut at = 0;
    while at + 6 <= bytes.len() {
        let size = u32::from_le_bytes(bytes[at + 2..at + 6].try_into().unwrap()) as usize;
        let end = (at + 6 + size).min(bytes.len());
        out.push(bytes[at..end].to_vec());
        at = end;
    }
    out
}

/// xorshift32.
struct Rng(u32);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        self.next() as usize % n.max(1)
    }
}

/// The recorded `messages` with random mutations: sizes (small changes,
/// huge values), types, body bytes, dropped, repeated and cut messages.
fn mutate(messages: &[Vec<u8>], rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        let mut m = m.clone();
        match rng.below(12) {
            0 if m.len() >= 6 => {
                let size = u32::from_le_bytes(m[2..6].try_into().unwrap());
                let new = match rng.below(4) {
                    0 => rng.next(),
                    1 => size.wrapping_add(rng.next() % 64),
                    2 => size.wrapping_sub(rng.next() % 64),
                    _ => 0,
                };
                m[2..6].copy_from_slice(&new.to_le_bytes());
            }
            1 if m.len() >= 2 => {
                let ty = rng.next() as u16 % 400;
                m[..2].copy_from_slice(&ty.to_le_bytes());
            }
            2..=4 if m.len() > 6 => {
                for _ in 0..1 + rng.below(8) {
                    let at = 6 + rng.below(m.len() - 6);
                    m[at] ^= 1 << rng.below(8);
                }
            }
            5 => continue,
            6 => out.extend_from_slice(&m),
            7 => m.truncate(rng.below(m.len())),
            _ => {}
        }
        out.extend_from_slice(&m);
    }
    out
}

/// What the mutating server saw of one display connection.
struct ServerSide {
    sent: Vec<u8>,
    received: Vec<u8>,
    /// How reading ended when not by an orderly close.
    read_error: Option<ErrorKind>,
}

/// A server that links every channel (with a fixed RSA key: the ticket is
/// not checked), gives each main channel its own session id in
/// `SPICE_MSG_MAIN_INIT`, and on each display channel (whose connection
/// id is that session id) sends a mutation of the recorded display stream
/// while reading what the client sends, then reports both.
fn mutating_server(listener: std::net::TcpListener, report: mpsc::Sender<(u32, ServerSide)>) {
    let key = spicetap::auth::ticket::LinkKey::generate().unwrap();
    let public = key.public_der().to_vec();
    let messages = recorded_messages("qemu-bios-display-s2c.bin");
    let next_session = Arc::new(AtomicU64::new(1));
    for stream in listener.incoming() {
        let Ok(mut s) = stream else { continue };
        let (public, messages, report, next_session) =
            (public.clone(), messages.clone(), report.clone(), next_session.clone());
        std::thread::spawn(move || {
            let _ = (|| -> std::io::Result<()> {
                let (connection_id, channel_type) = accept_link(&mut s, &public)?;
                if channel_type == 1 {
                    let id = next_session.fetch_add(1, Ordering::Relaxed) as u32;
                    let init: Vec<u8> = [id, 1, 3, 1, 0, 0, 0, 0].iter().flat_map(|v| v.to_le_bytes()).collect();
                    s.write_all(&client_message(103, &init))?;
                    s.write_all(&client_message(104, &[1, 0, 0, 0, 2, 0]))?;
                    let mut sink = [0u8; 4096];
                    while s.read(&mut sink)? > 0 {}
                    return Ok(());
                }
                let sent = mutate(&messages, &mut Rng(connection_id.wrapping_mul(2_654_435_761) | 1));
                let mut reader = s.try_clone()?;
                let received = std::thread::spawn(move || {
                    let mut got = Vec::new();
                    let error = reader.read_to_end(&mut got).err().map(|e| e.kind());
                    (got, error)
                });
                let _ = s.write_all(&sent);
                let _ = s.shutdown(std::net::Shutdown::Write);
                let (received, read_error) = received.join().unwrap_or_default();
                let _ = report.send((connection_id, ServerSide { sent, received, read_error }));
                Ok(())
            })();
        });
    }
}

/// One session against the mutating server through `addr`: returns the
/// session id, what the client sent and what it received.
fn mutated_session(addr: SocketAddr, client_messages: &[Vec<u8>]) -> (u32, Vec<u8>, Vec<u8>, bool) {
    let mut main = link_raw(addr, 1, 0);
    let mut init_and_list = [0u8; 6 + 32 + 6 + 6];
    main.read_exact(&mut init_and_list).unwrap();
    let id = u32::from_le_bytes(init_and_list[6..10].try_into().unwrap());
    let mut display = link_raw(addr, 2, id);
    let sent = mutate(client_messages, &mut Rng(id.wrapping_mul(40_503) | 1));
    let _ = display.write_all(&sent);
    let _ = display.shutdown(std::net::Shutdown::Write);
    let (received, was_reset) = read_until_closed(&mut display, Duration::from_secs(30));
    drop(main);
    (id, sent, received, was_reset)
}

#[test]
fn mutating_peers_never_crash_the_proxy_nor_change_a_byte() {
    let dir = Scratch::new("fault-mutating");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = listener.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || mutating_server(listener, tx));
    let mut tap = Spicetap::start(&dir.path, &upstream, true, &["--no-video"]);
    let client_messages = recorded_messages("qemu-bios-display-c2s.bin");

    const SESSIONS: usize = 2000;
    const THREADS: usize = 8;
    let addr = tap.addr;
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let client_messages = client_messages.clone();
            std::thread::spawn(move || {
                (0..SESSIONS / THREADS).map(|_| mutated_session(addr, &client_messages)).collect::<Vec<_>>()
            })
        })
        .collect();
    let started = Instant::now();
    let clients: Vec<_> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    eprintln!("{SESSIONS} mutated sessions in {:.1?}", started.elapsed());
    assert!(tap.guard.is_running(), "spicetap still runs");

    let mut servers = std::collections::HashMap::new();
    while servers.len() < clients.len() {
        let (id, side) = rx.recv_timeout(Duration::from_secs(30)).expect("every display connection reported");
        servers.insert(id, side);
    }
    tap.stop();
    let log = tap.log_text();
    assert!(!log.contains("panicked"), "{log}");

    // The display channel of each session, by session id (folder
    // `<start>-<id>`).
    let sessions = tap.sessions();
    assert_eq!(sessions.len(), SESSIONS, "every session recorded");
    let mut displays = std::collections::HashMap::new();
    for session in &sessions {
        let id: u32 = session.to_string_lossy().rsplit('-').next().unwrap().parse().unwrap();
        let display = channels(&session_json(session)).into_iter().find(|c| c["type"] == "display");
        displays.insert(id, display.unwrap_or_else(|| panic!("{}: no display channel", session.display())));
    }
    let mut ends: std::collections::BTreeMap<String, usize> = Default::default();
    let mut stopped = 0;
    for (id, sent, received, was_reset) in &clients {
        let server = &servers[id];
        let display = &displays[id];
        let end = format!("{} {}", display["end"]["reason"], display["end"]["error"]);
        // The proxy closes a channel on a header over its size bound, in
        // either direction (the second one after an orderly close of the
        // first).
        let absurd = display["end"]["error"].as_str().is_some_and(|e| e.contains("-byte bound"));
        // Each side got a prefix of what the other sent, never a changed
        // byte. Unless the proxy closed the channel on an absurd size (a
        // reset, which also discards what the peer had not read yet), it
        // is all of it, and exactly what session.json counts.
        assert!(server.sent.starts_with(received), "session {id}: the client got bytes the server did not send");
        assert!(sent.starts_with(&server.received), "session {id}: the server got bytes the client did not send");
        let s2c = display["server_to_client"]["bytes"].as_u64().unwrap() - LINK_S2C;
        let c2s = display["client_to_server"]["bytes"].as_u64().unwrap() - LINK_C2S;
        if absurd {
            assert!(received.len() as u64 <= s2c && server.received.len() as u64 <= c2s, "session {id}: {end}");
        } else {
            assert!(
                received == &server.sent,
                "session {id}: server-to-client bytes cut: {end}; the server sent {}, the proxy forwarded {s2c}, \
                 the client got {} (reset: {was_reset}); the client sent {}",
                server.sent.len(),
                received.len(),
                sent.len()
            );
            assert!(
                &server.received == sent,
                "session {id}: client-to-server bytes cut: {end}; the client sent {}, the proxy forwarded {c2s}, \
                 the server got {} (read error {:?})",
                sent.len(),
                server.received.len(),
                server.read_error
            );
            assert_eq!((s2c, c2s), (received.len() as u64, sent.len() as u64), "session {id}: session.json counts");
        }
        let reason = display["end"]["reason"].as_str().unwrap_or("?").to_string();
        *ends.entry(if absurd { format!("{reason}, absurd size") } else { reason }).or_default() += 1;
        if display["render"]["stopped"].is_string() {
            stopped += 1;
        }
    }
    eprintln!("{SESSIONS} sessions: {stopped} renderers stopped on their own; display channel ends: {ends:?}");
    assert!(stopped > 0, "some mutation broke a renderer, which said so");
}

//! `login_bench`: token logins through `spicetap proxy --auth tokens`,
//! timed from the client's side (benchmark only; `scripts/bench-logins`).
//!
//! ```text
//! login_bench client ──main-channel link, token as ticket──▶ spicetap ──link, VM password──▶ login_bench vm
//! ```
//!
//! - `login_bench vm --listen ADDR --ready-file F`: a stand-in VM. For
//!   every connection it reads a `SpiceLinkHeader` and `SpiceLinkMess`,
//!   answers a `SpiceLinkReply` with its one RSA-1024 public key and the
//!   caps `AUTH_SELECTION | AUTH_SPICE | MINI_HEADER`, reads the auth
//!   mechanism and the 128-byte ticket, answers `SPICE_LINK_ERR_OK`, and
//!   closes (the ticket is not checked: spicetap's lookup is what is timed).
//! - `login_bench client --connect ADDR --token T --seconds S --concurrency C
//!   [--pause-ms P]`: C threads log in one after the other (P ms apart) for
//!   S seconds: connect, main
//!   link message, spicetap's link reply (its fresh RSA key), the token
//!   under OAEP-SHA-1, the link result. Prints one JSON line: logins,
//!   failures, logins per second, and the link-stage time (connect to link
//!   result) p50, p99 and max in milliseconds.
//!
//! Byte layouts: spice-protocol `spice/protocol.h` (little-endian).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rsa::pkcs8::{DecodePublicKey, EncodePublicKey};

const MAGIC: u32 = 0x5144_4552; // "REDQ"
/// AUTH_SELECTION | AUTH_SPICE | MINI_HEADER (spice-protocol `protocol.h`).
const COMMON_CAPS: u32 = 0b1011;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn header(size: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(16);
    for w in [MAGIC, 2, 2, size] {
        h.extend_from_slice(&w.to_le_bytes());
    }
    h
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("vm") => vm(&args),
        Some("client") => client(&args),
        _ => {
            eprintln!(
                "usage: login_bench vm --listen ADDR [--ready-file F] | client --connect ADDR --token T [--seconds S] [--concurrency C] [--pause-ms P]"
            );
            std::process::exit(2);
        }
    }
}

fn vm(args: &[String]) {
    let listen = arg(args, "--listen").unwrap_or_else(|| "127.0.0.1:0".into());
    let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 1024).expect("RSA key");
    let der = key.to_public_key().to_public_key_der().expect("public key DER").as_bytes().to_vec();
    assert_eq!(der.len(), 162, "SPICE_TICKET_PUBKEY_BYTES");
    let mut reply = header(4 + 162 + 12 + 4);
    reply.extend_from_slice(&0u32.to_le_bytes()); // SPICE_LINK_ERR_OK
    reply.extend_from_slice(&der);
    for w in [1u32, 0, 4 + 162 + 12, COMMON_CAPS] {
        reply.extend_from_slice(&w.to_le_bytes());
    }
    let reply = Arc::new(reply);
    let listener = TcpListener::bind(&listen).expect("bind");
    let addr = listener.local_addr().expect("local address");
    if let Some(f) = arg(args, "--ready-file") {
        std::fs::write(format!("{f}.tmp"), addr.to_string()).expect("ready file");
        std::fs::rename(format!("{f}.tmp"), f).expect("ready file");
    }
    println!("{addr}");
    for s in listener.incoming().flatten() {
        let reply = reply.clone();
        std::thread::spawn(move || {
            let _ = serve_link(s, &reply);
        });
    }
}

fn serve_link(mut s: TcpStream, reply: &[u8]) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let mut h = [0u8; 16];
    s.read_exact(&mut h)?;
    let size = u32::from_le_bytes([h[12], h[13], h[14], h[15]]).min(4096) as usize;
    let mut mess = vec![0u8; size];
    s.read_exact(&mut mess)?;
    s.write_all(reply)?;
    let mut ticket = [0u8; 4 + 128];
    s.read_exact(&mut ticket)?;
    s.write_all(&0u32.to_le_bytes())?;
    // Hold the channel a moment, as a VM would, then close.
    std::thread::sleep(Duration::from_millis(50));
    Ok(())
}

/// One login; the link-stage time, or why it failed.
fn login(addr: &str, token: &[u8]) -> Result<Duration, String> {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    // SpiceLinkMess: connection_id 0, main channel 0, one common caps word.
    let mut mess = header(18 + 4);
    mess.extend_from_slice(&0u32.to_le_bytes());
    mess.extend_from_slice(&[1, 0]); // channel_type main, channel_id 0
    for w in [1u32, 0, 18, COMMON_CAPS] {
        mess.extend_from_slice(&w.to_le_bytes());
    }
    s.write_all(&mess).map_err(|e| e.to_string())?;
    let mut h = [0u8; 16];
    s.read_exact(&mut h).map_err(|e| format!("link reply header: {e}"))?;
    let size = u32::from_le_bytes([h[12], h[13], h[14], h[15]]) as usize;
    if size < 4 + 162 {
        return Err(format!("link reply of {size} bytes"));
    }
    let mut reply = vec![0u8; size];
    s.read_exact(&mut reply).map_err(|e| e.to_string())?;
    let key = rsa::RsaPublicKey::from_public_key_der(&reply[4..4 + 162]).map_err(|e| e.to_string())?;
    let plain = [token, b"\0"].concat();
    let ticket =
        key.encrypt(&mut rand::thread_rng(), rsa::Oaep::new::<sha1::Sha1>(), &plain[..]).map_err(|e| e.to_string())?;
    let mut out = 1u32.to_le_bytes().to_vec();
    out.extend_from_slice(&ticket);
    s.write_all(&out).map_err(|e| e.to_string())?;
    let mut result = [0u8; 4];
    s.read_exact(&mut result).map_err(|e| format!("link result: {e}"))?;
    let took = start.elapsed();
    match u32::from_le_bytes(result) {
        0 => Ok(took),
        e => Err(format!("link error {e}")),
    }
}

fn client(args: &[String]) {
    let addr = arg(args, "--connect").expect("--connect ADDR");
    let token = arg(args, "--token").expect("--token T");
    let seconds: f64 = arg(args, "--seconds").and_then(|s| s.parse().ok()).unwrap_or(10.0);
    let concurrency: usize = arg(args, "--concurrency").and_then(|s| s.parse().ok()).unwrap_or(1);
    let pause = Duration::from_millis(arg(args, "--pause-ms").and_then(|s| s.parse().ok()).unwrap_or(0));
    let times = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let threads: Vec<_> = (0..concurrency)
        .map(|_| {
            let (addr, token, times, failures) = (addr.clone(), token.clone(), times.clone(), failures.clone());
            std::thread::spawn(move || {
                while Instant::now() < end {
                    match login(&addr, token.as_bytes()) {
                        Ok(t) => times.lock().unwrap().push(t),
                        Err(e) => failures.lock().unwrap().push(e),
                    }
                    std::thread::sleep(pause);
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut times = times.lock().unwrap().clone();
    times.sort();
    let failures = failures.lock().unwrap().clone();
    let pct = |p: f64| {
        if times.is_empty() {
            return 0.0;
        }
        let i = ((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1;
        times[i].as_secs_f64() * 1000.0
    };
    println!(
        "{{\"logins\":{},\"failures\":{},\"first_failure\":{:?},\"seconds\":{:.2},\"logins_per_second\":{:.1},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"max_ms\":{:.2}}}",
        times.len(),
        failures.len(),
        failures.first().cloned().unwrap_or_default(),
        elapsed,
        times.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        times.last().map_or(0.0, |t| t.as_secs_f64() * 1000.0)
    );
}

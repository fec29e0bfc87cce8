//! The injected webdav channel against a scripted server playing QEMU and
//! the guest's spice-webdavd: answers, the cap on clients, a guest that
//! stops reading, endless bodies, and the channel's end mid-PUT.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use tokio::io::DuplexStream;

use super::*;
use crate::auth::ticket::LinkKey;
use crate::framing::mini;
use crate::inject::share::TEMP_PREFIX;
use crate::inject::spicevmc::Traffic;

/// The guest side: the server end of the channel after the link stage.
struct Guest {
    stream: DuplexStream,
    assembler: MessageAssembler,
    mux: MuxDecoder,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), InjectError>>,
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

/// Starts `run` on a share of `files` (name, bytes) over an in-memory
/// stream of `pipe` bytes and answers its link stage.
async fn start(files: &[(&str, Vec<u8>)], read_only: bool, pipe: usize) -> Guest {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("share");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let (ours, mut server) = tokio::io::duplex(pipe);
    let (stop, stop_rx) = watch::channel(false);
    let share = ShareConfig { dir: dir.clone(), read_only, password: None };
    let task = tokio::spawn(async move {
        let record = Recorder::new(None, Arc::new(Traffic::default()));
        run(ours, 7, 0, &share, &record, stop_rx).await
    });
    // Link stage: SpiceLinkHeader + SpiceLinkMess in; a reply with a real
    // key; mechanism + ticket in; result OK.
    let mut head = [0u8; 16];
    server.read_exact(&mut head).await.unwrap();
    let size = u32::from_le_bytes(head[12..16].try_into().unwrap()) as usize;
    let mut mess = vec![0u8; size];
    server.read_exact(&mut mess).await.unwrap();
    assert_eq!(mess[4], ChannelType::WEBDAV.0);
    let key = LinkKey::generate().unwrap();
    let mut reply = 0u32.to_le_bytes().to_vec();
    reply.extend_from_slice(key.public_der());
    for v in [1u32, 0, 178, 0b1011] {
        reply.extend_from_slice(&v.to_le_bytes());
    }
    let mut out = b"REDQ".to_vec();
    for v in [2u32, 2, reply.len() as u32] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&reply);
    server.write_all(&out).await.unwrap();
    let mut auth = [0u8; 4 + 128];
    server.read_exact(&mut auth).await.unwrap();
    server.write_all(&0u32.to_le_bytes()).await.unwrap();
    Guest {
        stream: server,
        assembler: MessageAssembler::new(HeaderKind::Mini),
        mux: MuxDecoder::new(),
        stop,
        task,
        _tmp: tmp,
        dir,
    }
}

impl Guest {
    async fn send(&mut self, id: i64, data: &[u8]) {
        for piece in data.chunks(u16::MAX as usize) {
            let frame = encode_frame(id, piece);
            // The test's decoder sees both directions, as the port decoder does.
            self.mux.feed(true, &frame, &mut Vec::new());
            let m = mini(101, &frame);
            self.stream.write_all(&m).await.unwrap();
        }
    }

    /// Reads what the share sends until `until` holds for the mux events
    /// so far, or `limit` passes; returns the events.
    async fn read_until(&mut self, limit: Duration, until: impl Fn(&[MuxEvent]) -> bool) -> Vec<MuxEvent> {
        let mut events = Vec::new();
        let deadline = Instant::now() + limit;
        let mut buf = vec![0u8; 256 * 1024];
        while !until(&events) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(Ok(n)) = tokio::time::timeout(left, self.stream.read(&mut buf)).await else { break };
            if n == 0 {
                break;
            }
            for (h, body) in self.assembler.feed(&buf[..n]).unwrap() {
                assert_eq!(h.msg_type, MSGC_SPICEVMC_DATA);
                self.mux.feed(false, &body, &mut events);
            }
        }
        events
    }
}

fn closed(events: &[MuxEvent], id: i64) -> bool {
    events.iter().any(|e| matches!(e, MuxEvent::Close { id: i, .. } if *i == id))
}

fn answer(events: &[MuxEvent], id: i64) -> Vec<u8> {
    events
        .iter()
        .filter_map(|e| match e {
            MuxEvent::Data { id: i, bytes, .. } if *i == id => Some(bytes.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_on_many_clients_are_answered_and_closed_in_order() {
    let mut g = start(&[("hello.txt", b"hello".to_vec())], false, 1 << 20).await;
    let ids = [1i64, -2, 1 << 40];
    for id in ids {
        g.send(id, b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    }
    let events = g.read_until(Duration::from_secs(10), |ev| ids.iter().all(|&id| closed(ev, id))).await;
    for id in ids {
        let a = String::from_utf8(answer(&events, id)).unwrap();
        assert!(a.starts_with("HTTP/1.1 200") && a.ends_with("hello"), "{id}: {a}");
        assert!(closed(&events, id), "{id}");
    }
    // The ids are free again: the same id serves a new connection.
    g.send(1, b"PUT /new.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc").await;
    let events = g.read_until(Duration::from_secs(10), |ev| closed(ev, 1)).await;
    assert!(String::from_utf8_lossy(&answer(&events, 1)).starts_with("HTTP/1.1 201"));
    assert_eq!(std::fs::read(g.dir.join("new.txt")).unwrap(), b"abc");
    g.stop.send(true).unwrap();
    g.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_past_the_cap_are_closed_at_once() {
    let mut g = start(&[], false, 1 << 20).await;
    let n = MAX_SHARE_CLIENTS as i64 + 20;
    // Every client sends half a request head and waits.
    for id in 0..n {
        g.send(id, b"GET / HTTP/1.1\r\n").await;
    }
    let events =
        g.read_until(Duration::from_secs(5), |ev| (MAX_SHARE_CLIENTS as i64..n).all(|id| closed(ev, id))).await;
    for id in 0..n {
        assert_eq!(closed(&events, id), id >= MAX_SHARE_CLIENTS as i64, "client {id}");
    }
    g.stop.send(true).unwrap();
    g.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_stops_reading_stops_the_share_without_memory_growth() {
    const BIG: usize = 32 * 1024 * 1024;
    let big: Vec<u8> = (0..BIG).map(|i| (i * 7 + i / 4096) as u8).collect();
    let mut g = start(&[("big.bin", big)], true, 64 * 1024).await;
    let before = rss_bytes();
    // 32 clients GET 32 MiB each (1 GiB of answers) and nobody reads.
    for id in 0..32 {
        g.send(id, b"GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let grown = rss_bytes().saturating_sub(before);
    assert!(grown < 48 * 1024 * 1024, "memory grew by {grown} bytes while the guest did not read");
    // The guest reads again: the answers go on, the clients in turn.
    let mut got: HashMap<i64, usize> = HashMap::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0;
    while total < 8 * 1024 * 1024 {
        let n = tokio::time::timeout(Duration::from_secs(10), g.stream.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0);
        total += n;
        for (_, body) in g.assembler.feed(&buf[..n]).unwrap() {
            let mut events = Vec::new();
            g.mux.feed(false, &body, &mut events);
            for e in events {
                if let MuxEvent::Data { id, bytes, .. } = e {
                    *got.entry(id).or_default() += bytes.len();
                }
            }
        }
    }
    assert!(got.len() >= 8, "answers of many clients interleave: {got:?}");
    g.stop.send(true).unwrap();
    g.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_body_is_bounded_and_the_channels_end_leaves_no_file() {
    let mut g = start(&[], false, 1 << 20).await;
    g.send(9, b"PUT /endless.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000000\r\n\r\n").await;
    let before = rss_bytes();
    let chunk = vec![0x5au8; 60_000];
    for _ in 0..400 {
        g.send(9, &chunk).await; // 24 MB of body
    }
    let grown = rss_bytes().saturating_sub(before);
    assert!(grown < 32 * 1024 * 1024, "memory grew by {grown} bytes for a streamed body");
    // The body went to a temporary file, not to the target.
    let names = || -> Vec<String> {
        std::fs::read_dir(&g.dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
    };
    assert!(!names().contains(&"endless.bin".to_string()), "{:?}", names());
    g.stop.send(true).unwrap();
    g.task.await.unwrap().unwrap();
    // Dropping the channel dropped the connection: nothing is left.
    let mut left = names();
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = names();
    }
    assert!(left.iter().all(|n| !n.starts_with(TEMP_PREFIX) && n != "endless.bin"), "{left:?}");
}

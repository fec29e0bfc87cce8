//! Throughput of the capture writer alone: 2 GiB of 64 KiB SPICE messages,
//! cut into 200 000-byte chunks as socket reads would cut them, written as a
//! synthetic TCP conversation by [`TcpConversation`] to a file (default
//! `/dev/null`).
//!
//! ```text
//! cargo run --release --example pcap_writer_speed -- [FILE]
//! ```
//!
//! Prints `{"bytes": N, "seconds": S, "gbps": G}` (GB = 1e9 bytes).

use std::time::{Instant, SystemTime};

use spicetap::capture::SERVER_PORT;
use spicetap::link::HeaderKind;
use spicetap::protocol::Direction;
use spicetap::tcp_pcap::{Endpoints, TcpConversation, TcpPcap};

const TOTAL: usize = 2 << 30;
const MESSAGE: usize = 65536;
const CHUNK: usize = 200_000;

fn main() -> anyhow::Result<()> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "/dev/null".into());
    let out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
    let mut out = TcpPcap::new(out)?;
    let mut conv = TcpConversation::open(&mut out, Endpoints::new(49152, SERVER_PORT), SystemTime::now())?;
    conv.start_messages(Some(HeaderKind::Mini));

    // 32 whole messages; the stream wraps around at a message boundary.
    let mut msg = 304u16.to_le_bytes().to_vec(); // SPICE_MSG_DISPLAY_DRAW_COPY
    msg.extend_from_slice(&((MESSAGE - 6) as u32).to_le_bytes());
    msg.resize(MESSAGE, 7);
    let stream: Vec<u8> = msg.iter().cycle().take(MESSAGE * 32).copied().collect();

    let start = Instant::now();
    let (mut done, mut off) = (0, 0);
    while done < TOTAL {
        let end = (off + CHUNK).min(stream.len());
        conv.data(&mut out, Direction::ServerToClient, SystemTime::now(), &stream[off..end])?;
        done += end - off;
        off = if end == stream.len() { 0 } else { end };
    }
    conv.close(&mut out, Direction::ClientToServer, SystemTime::now())?;
    let mut out = out.into_writer();
    std::io::Write::flush(&mut out)?;
    let secs = start.elapsed().as_secs_f64();
    println!("{{\"bytes\": {done}, \"seconds\": {secs:.3}, \"gbps\": {:.3}}}", done as f64 / secs / 1e9);
    Ok(())
}

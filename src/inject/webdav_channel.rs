//! The webdav channel spicetap opens itself in a client's session to share
//! a folder with the guest (`--share-dir`): it links the channel (type 11,
//! id 0) as a SPICE client would (`inject::spicevmc`) and plays the SPICE
//! client's part of folder sharing: every mux client of the guest's
//! spice-webdavd is one HTTP/1 connection, served by hyper with the
//! share's dav-server handler over an in-memory duplex stream.
//!
//! ```text
//! server ──SpiceVMC data──> reader loop ──MuxDecoder──> per client: inbound queue ──> duplex ──> hyper + DavHandler
//! server <──SpiceVMC data── writer task <──out queue── per client: duplex reader (frames ≤ 65526 bytes)
//! ```
//!
//! Bounds: at most [`MAX_SHARE_CLIENTS`] clients at once (a guest's
//! further clients are closed at once), an inbound queue of
//! [`CLIENT_QUEUE`] frames and a duplex of [`DUPLEX_BYTES`] per client,
//! one shared outgoing queue of [`OUT_QUEUE`] messages, HTTP heads of at
//! most [`MAX_HEAD`] bytes (hyper), XML bodies of at most 64 KiB
//! (dav-server), PUT bodies streamed to disk. A guest that stops reading
//! fills the outgoing queue, then each client's duplex: hyper stops
//! producing, nothing grows. The shared outgoing queue serves clients in
//! turn, so one long GET does not hold back the others' answers. A client
//! whose connection takes no request bytes for [`CLIENT_STALL`] is closed.
//! When the channel ends every connection is dropped (an unfinished PUT
//! leaves no file: `inject::share`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use dav_server::DavHandler;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::share::ShareConfig;
use super::spicevmc::{Housekeeping, InjectError, MAX_VMC_MESSAGE, MSGC_SPICEVMC_DATA, Recorder, link, message};
use crate::framing::MessageAssembler;
use crate::limits::{LINK_TIMEOUT, SHUTDOWN_WRITE_GRACE};
use crate::link::HeaderKind;
use crate::port::vmc_payload;
use crate::protocol::{ChannelType, Direction};
use crate::webdav_mux::{HEADER_LEN, MuxDecoder, MuxEvent, encode_frame};

/// Most mux clients served at once.
pub const MAX_SHARE_CLIENTS: usize = 64;
/// Request frames waiting for one client's connection.
pub const CLIENT_QUEUE: usize = 16;
/// Messages waiting for the server, all clients together.
pub const OUT_QUEUE: usize = 32;
/// Bytes of each direction of a client's in-memory stream.
pub const DUPLEX_BYTES: usize = 64 * 1024;
/// Longest HTTP head hyper reads.
pub const MAX_HEAD: usize = 64 * 1024;
/// How long a client's connection may refuse request bytes before it is
/// closed.
pub const CLIENT_STALL: Duration = Duration::from_secs(30);
/// Largest frame payload spicetap sends: a frame and its header fit one
/// SpiceVMC message.
const MAX_FRAME_DATA: usize = MAX_VMC_MESSAGE - HEADER_LEN;

/// What the writer task sends.
#[derive(Debug)]
enum Out {
    /// Response bytes of client `id`'s connection number `generation`
    /// (dropped if that connection is gone).
    Frame { id: i64, generation: u64, bytes: Bytes },
    /// Client `id`'s connection closes: after the frames queued before
    /// it, connection `generation` (when spicetap closed it) stops being
    /// current.
    Close { id: i64, generation: Option<u64> },
    /// A housekeeping reply.
    Message { msg_type: u16, body: Vec<u8> },
}

/// What woke the reader loop.
enum Woke {
    Server(std::io::Result<usize>),
    Done((i64, u64)),
    Stop,
}

/// One served mux client.
struct Client {
    generation: u64,
    inbound: mpsc::Sender<Bytes>,
    tasks: Vec<tokio::task::AbortHandle>,
}

/// Links webdav channel `channel_id` of session `session_id` over
/// `stream` and serves the share until `stop` turns true or the server
/// closes. Every byte goes to `record`.
///
/// # Errors
/// [`InjectError`] for a refused link, an unusable folder, or a broken
/// stream.
pub async fn run<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    mut stream: S,
    session_id: u32,
    channel_id: u8,
    share: &ShareConfig,
    record: &Recorder,
    mut stop: watch::Receiver<bool>,
) -> Result<(), InjectError> {
    let handler = share.handler().map_err(|e| InjectError::Share(e.to_string()))?;
    let linking =
        link(&mut stream, session_id, ChannelType::WEBDAV, channel_id, &[], share.password.as_deref(), record);
    let kind = tokio::time::timeout(LINK_TIMEOUT, linking).await.map_err(|_| InjectError::Timeout)??;
    tracing::info!(channel_id, dir = %share.dir.display(), read_only = share.read_only, "shared folder channel linked");

    let (mut rd, wr) = tokio::io::split(stream);
    let live: Arc<Mutex<HashMap<i64, u64>>> = Arc::default();
    let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE);
    let writer = tokio::spawn(write_server(wr, kind, out_rx, live.clone(), record.clone()));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(i64, u64)>();
    let mut tasks = JoinSet::new();
    let mut clients: HashMap<i64, Client> = HashMap::new();
    let mut mux = MuxDecoder::new();
    let mut assembler = MessageAssembler::new(kind);
    let mut housekeeping = Housekeeping::default();
    let mut next_generation = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    let result = loop {
        let woke = tokio::select! {
            r = rd.read(&mut buf) => Woke::Server(r),
            Some(done) = done_rx.recv() => Woke::Done(done),
            _ = stop.wait_for(|&s| s) => Woke::Stop,
        };
        let n = match woke {
            Woke::Server(Ok(n)) => n,
            Woke::Server(Err(e)) => break Err(e.into()),
            Woke::Stop => break Ok(()),
            Woke::Done((id, generation)) => {
                // The share closed this connection (after its response).
                if clients.get(&id).is_some_and(|c| c.generation == generation) {
                    close_client(&mut clients, &mut mux, id);
                    if out_tx.send(Out::Close { id, generation: Some(generation) }).await.is_err() {
                        break Ok(());
                    }
                }
                continue;
            }
        };
        if n == 0 {
            break Ok(());
        }
        record.data(Direction::ServerToClient, &buf[..n]);
        let messages = match assembler.feed(&buf[..n]) {
            Ok(m) => m,
            Err(e) => break Err(InjectError::Protocol(e.to_string())),
        };
        let mut events = Vec::new();
        for (header, body) in messages {
            let (replies, handled) = housekeeping.on_message(header.msg_type, &body);
            for (msg_type, body) in replies {
                let _ = out_tx.send(Out::Message { msg_type, body }).await;
            }
            if handled {
                continue;
            }
            match vmc_payload(header.msg_type, &body) {
                Ok(Some(payload)) => mux.feed(true, &payload, &mut events),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "shared folder: unreadable SpiceVMC data");
                }
            }
        }
        for ev in events {
            match ev {
                MuxEvent::Open { id, .. } => {
                    if clients.len() >= MAX_SHARE_CLIENTS {
                        tracing::warn!(
                            id,
                            "shared folder: more than {MAX_SHARE_CLIENTS} connections; closing this one"
                        );
                        mux.feed(false, &encode_frame(id, &[]), &mut Vec::new());
                        let _ = out_tx.send(Out::Close { id, generation: None }).await;
                        continue;
                    }
                    next_generation += 1;
                    let c =
                        spawn_client(&mut tasks, id, next_generation, handler.clone(), out_tx.clone(), done_tx.clone());
                    live.lock().unwrap_or_else(PoisonError::into_inner).insert(id, next_generation);
                    clients.insert(id, c);
                }
                MuxEvent::Data { id, bytes, .. } => {
                    let Some(c) = clients.get(&id) else { continue };
                    let generation = c.generation;
                    let sent = c.inbound.send_timeout(Bytes::from(bytes), CLIENT_STALL).await;
                    if sent.is_err() {
                        tracing::warn!(id, "shared folder: a connection takes no request bytes; closing it");
                        close_client(&mut clients, &mut mux, id);
                        let _ = out_tx.send(Out::Close { id, generation: Some(generation) }).await;
                    }
                }
                MuxEvent::Close { id, .. } => {
                    // The guest closed it: drop the connection at once.
                    if let Some(c) = clients.remove(&id) {
                        abort(&c);
                        live.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
                    }
                }
            }
        }
    };
    tasks.shutdown().await;
    drop(out_tx);
    // A server that no longer reads must not hold the channel open: the
    // writer gets a grace period to send what is queued, then it is
    // dropped.
    let mut writer = writer;
    if tokio::time::timeout(SHUTDOWN_WRITE_GRACE, &mut writer).await.is_err() {
        writer.abort();
    }
    result
}

fn abort(c: &Client) {
    for t in &c.tasks {
        t.abort();
    }
}

/// Drops client `id` on spicetap's side: its tasks end and the mux decoder
/// learns the id is free again. Its answer frames already queued still go
/// out, before the close frame the caller queues.
fn close_client(clients: &mut HashMap<i64, Client>, mux: &mut MuxDecoder, id: i64) {
    if let Some(c) = clients.remove(&id) {
        abort(&c);
    }
    mux.feed(false, &encode_frame(id, &[]), &mut Vec::new());
}

/// Starts one client's HTTP connection: hyper on one end of a duplex, a
/// task feeding it the guest's bytes, a task framing its answers.
fn spawn_client(
    tasks: &mut JoinSet<()>,
    id: i64,
    generation: u64,
    handler: DavHandler,
    out: mpsc::Sender<Out>,
    done: mpsc::UnboundedSender<(i64, u64)>,
) -> Client {
    let (ours, theirs) = tokio::io::duplex(DUPLEX_BYTES);
    let (inbound, mut inbound_rx) = mpsc::channel::<Bytes>(CLIENT_QUEUE);
    let http = tasks.spawn(async move {
        let service = service_fn(move |req| {
            let handler = handler.clone();
            async move { Ok::<_, Infallible>(handler.handle(req).await) }
        });
        let conn = http1::Builder::new().max_buf_size(MAX_HEAD).serve_connection(TokioIo::new(theirs), service);
        if let Err(e) = conn.await {
            tracing::debug!(id, error = %e, "shared folder: HTTP connection ended with an error");
        }
    });
    let (mut our_rd, mut our_wr) = tokio::io::split(ours);
    let feed = tasks.spawn(async move {
        while let Some(b) = inbound_rx.recv().await {
            if our_wr.write_all(&b).await.is_err() {
                return;
            }
        }
        let _ = our_wr.shutdown().await;
    });
    let answer = tasks.spawn(async move {
        let mut buf = vec![0u8; MAX_FRAME_DATA];
        loop {
            match our_rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let bytes = Bytes::copy_from_slice(&buf[..n]);
                    if out.send(Out::Frame { id, generation, bytes }).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = done.send((id, generation));
    });
    Client { generation, inbound, tasks: vec![http, feed, answer] }
}

/// Sends the queued frames and replies to the server, several frames to a
/// message when they are waiting, until every sender is gone.
async fn write_server<W: AsyncWrite + Unpin>(
    mut wr: W,
    kind: HeaderKind,
    mut rx: mpsc::Receiver<Out>,
    live: Arc<Mutex<HashMap<i64, u64>>>,
    record: Recorder,
) {
    let mut serial = 0u64;
    let mut data = Vec::with_capacity(MAX_VMC_MESSAGE);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(out) = next.take() {
            let frame = match out {
                Out::Frame { id, generation, bytes } => {
                    let current = live.lock().unwrap_or_else(PoisonError::into_inner).get(&id) == Some(&generation);
                    if !current { None } else { Some(encode_frame(id, &bytes)) }
                }
                Out::Close { id, generation } => {
                    let mut live = live.lock().unwrap_or_else(PoisonError::into_inner);
                    if generation.is_some() && live.get(&id) == generation.as_ref() {
                        live.remove(&id);
                    }
                    Some(encode_frame(id, &[]))
                }
                Out::Message { msg_type, body } => {
                    if flush(&mut wr, kind, &mut serial, &mut data, &record).await.is_err() {
                        return;
                    }
                    let m = message(kind, &mut serial, msg_type, &body);
                    if wr.write_all(&m).await.is_err() {
                        return;
                    }
                    record.data(Direction::ClientToServer, &m);
                    None
                }
            };
            if let Some(f) = frame {
                if data.len() + f.len() > MAX_VMC_MESSAGE
                    && flush(&mut wr, kind, &mut serial, &mut data, &record).await.is_err()
                {
                    return;
                }
                data.extend_from_slice(&f);
            }
            next = rx.try_recv().ok();
        }
        if flush(&mut wr, kind, &mut serial, &mut data, &record).await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}

async fn flush<W: AsyncWrite + Unpin>(
    wr: &mut W,
    kind: HeaderKind,
    serial: &mut u64,
    data: &mut Vec<u8>,
    record: &Recorder,
) -> std::io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    let m = message(kind, serial, MSGC_SPICEVMC_DATA, data);
    data.clear();
    wr.write_all(&m).await?;
    record.data(Direction::ClientToServer, &m);
    Ok(())
}

#[cfg(test)]
mod tests;

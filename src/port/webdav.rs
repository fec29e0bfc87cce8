//! The port channel decoder: a session tap consumer of port channels
//! (SPICE channel type 10) and the webdav channel (type 11).
//!
//! For each it follows `SPICE_MSG_PORT_INIT` (the port's name and whether
//! the guest has it open) and the `PORT_EVENT`s of both sides, with times.
//! On a webdav channel it also parses folder sharing's mux from the
//! SpiceVMC data of both directions (`webdav_mux`) and writes every mux
//! client as its own synthetic TCP conversation in
//! `webdav-<channel id>.http.pcap` (the guest, spice-webdavd, is the HTTP
//! client on a port of its own; the share, the SPICE client's phodav or
//! spicetap's own, is the server on port 80), so Wireshark dissects the
//! WebDAV requests and responses as HTTP. Requests by method, responses by
//! status code and the request paths go to the channel's `port` section in
//! `session.json` (paths hashed with `--redact-paths`).
//!
//! ```text
//! ChannelTap ──TapEvent──> DecoderSink ──(own byte budget)──> port thread (per session)
//!                                                              MessageAssembler per direction
//!                                                              PortMessage (init, events)
//!                                                              SpiceVMC payload (LZ4 inflated)
//!                                                              MuxDecoder -> TcpConversation per client
//!                                                              Http1Connection -> counts
//! ```
//!
//! A channel whose stream cannot be followed (framing, LZ4, more than
//! [`MAX_OPEN_CLIENTS`] open mux clients) stops being decoded, recorded in
//! its report; a mux client whose HTTP cannot be followed is still written
//! to the pcap, only no longer counted. Forwarding never notices.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::{Decoder, DecoderSink, DecoderThreads, PortMessage, decoder_sink, port_event_name, vmc_payload};
use crate::flushing::FlushingFile;
use crate::framing::MessageAssembler;
use crate::http1::{Http1Connection, HttpEvent};
use crate::protocol::{ChannelType, Direction};
use crate::report::rfc3339;
use crate::tap::{ChannelKey, Reports, TapEvent};
use crate::tcp_pcap::{Endpoints, TcpConversation, TcpPcap};
use crate::webdav_mux::{MuxDecoder, MuxEvent};

/// Most mux clients open at once on one channel before its decoding stops
/// (spice-webdavd opens one per HTTP connection of the guest's davfs).
pub const MAX_OPEN_CLIENTS: usize = 1024;
/// Distinct request paths kept per channel; later ones are only counted.
pub const MAX_PATHS: usize = 1000;
/// Port events kept per channel.
pub const MAX_EVENTS: usize = 1000;
/// The share's port in the HTTP pcap.
pub const HTTP_PORT: u16 = 80;
/// First guest port of the HTTP pcap; each new mux connection takes the next.
const GUEST_PORT_BASE: u16 = 49152;

/// A session's port decoder writing into `dir`; reports go to `reports`,
/// at most `budget` bytes wait in its queue; `redact_paths` replaces
/// request paths by their hash in reports. Its thread starts with the
/// session's first port or webdav channel; its handle goes to `threads`.
pub fn sink(
    session_id: u32,
    dir: PathBuf,
    reports: Arc<dyn Reports>,
    budget: usize,
    redact_paths: bool,
    threads: DecoderThreads,
) -> DecoderSink {
    let decoder =
        PortDecoder { dir, reports: reports.clone(), redact_paths, channels: HashMap::new(), names: HashSet::new() };
    decoder_sink("port", &[ChannelType::PORT, ChannelType::WEBDAV], session_id, reports, budget, threads, decoder)
}

/// What `session.json` says of a port or webdav channel.
#[derive(Debug, Default, Serialize)]
pub struct PortReport {
    /// The port's name from `SPICE_MSG_PORT_INIT`.
    pub name: Option<String>,
    /// Whether the guest had the port open at `PORT_INIT`.
    pub opened_at_init: Option<bool>,
    /// `PORT_EVENT`s of both sides, in order (at most [`MAX_EVENTS`]).
    pub events: Vec<PortEventReport>,
    /// Folder sharing, on a webdav channel.
    pub webdav: Option<WebdavReport>,
    /// Why decoding stopped early, if it did.
    pub stopped: Option<String>,
}

/// One `PORT_EVENT`.
#[derive(Debug, Serialize)]
pub struct PortEventReport {
    /// When it went by.
    pub at: String,
    /// `server` (the guest's side of the port) or `client`.
    pub from: &'static str,
    /// `opened`, `closed`, `break` or `unknown`.
    pub event: &'static str,
}

/// Folder sharing on a webdav channel.
#[derive(Debug, Default, Serialize)]
pub struct WebdavReport {
    /// The HTTP pcap's file name.
    pub http_pcap: Option<String>,
    /// Mux clients (HTTP connections) opened.
    pub clients: u64,
    /// Requests by method.
    pub requests: BTreeMap<String, u64>,
    /// Responses by status code.
    pub responses: BTreeMap<String, u64>,
    /// Mux payload bytes the guest sent (requests).
    pub bytes_from_guest: u64,
    /// Mux payload bytes the share sent (responses).
    pub bytes_to_guest: u64,
    /// Distinct request paths in order of first use (at most
    /// [`MAX_PATHS`]); `sha256:<16 hex digits>` of each with `--redact-paths`.
    pub paths: Vec<String>,
    /// Whether paths are hashed.
    pub paths_redacted: bool,
    /// Requests whose path was not listed (new paths after the first
    /// [`MAX_PATHS`] distinct ones).
    pub paths_not_listed: u64,
    /// Connections whose HTTP could not be followed (still in the pcap).
    pub http_unfollowed: u64,
    /// The first reason a connection's HTTP could not be followed.
    pub http_error: Option<String>,
}

struct MuxClient {
    conv: TcpConversation,
    http: Option<Http1Connection>,
}

struct Webdav {
    mux: MuxDecoder,
    pcap: Option<TcpPcap<FlushingFile>>,
    clients: HashMap<i64, MuxClient>,
    next_port: u16,
    path_set: HashSet<String>,
}

struct ChannelState {
    channel_id: u8,
    assemblers: Option<[MessageAssembler; 2]>,
    report: PortReport,
    webdav: Option<Webdav>,
}

struct PortDecoder {
    dir: PathBuf,
    reports: Arc<dyn Reports>,
    redact_paths: bool,
    channels: HashMap<ChannelKey, ChannelState>,
    names: HashSet<String>,
}

impl Decoder for PortDecoder {
    fn event(&mut self, ev: TapEvent) {
        match ev {
            TapEvent::Open { key, channel_type, channel_id, .. } => self.open(key, channel_type, channel_id),
            TapEvent::StartMessages { key, kind } => {
                if let (Some(ch), Some(kind)) = (self.channels.get_mut(&key), kind) {
                    ch.assemblers = Some([MessageAssembler::new(kind), MessageAssembler::new(kind)]);
                }
            }
            TapEvent::Data { key, dir, at, bytes } => {
                let redact = self.redact_paths;
                if let Some(ch) = self.channels.get_mut(&key)
                    && ch.report.stopped.is_none()
                    && let Err(e) = ch.feed(dir, at, &bytes, redact)
                {
                    tracing::warn!(key, error = %e, "port decoding stopped for this channel; forwarding continues");
                    ch.report.stopped = Some(e);
                }
            }
            TapEvent::Close { key, first, at } => self.close(key, first, at),
            TapEvent::Link { .. } => {}
        }
    }

    fn stop(&mut self, key: ChannelKey, reason: String) {
        if let Some(ch) = self.channels.get_mut(&key) {
            ch.report.stopped.get_or_insert(reason);
        }
    }

    fn finish(&mut self) {
        let keys: Vec<_> = self.channels.keys().copied().collect();
        for key in keys {
            self.close(key, Direction::ClientToServer, SystemTime::now());
        }
    }
}

impl PortDecoder {
    fn open(&mut self, key: ChannelKey, channel_type: ChannelType, channel_id: u8) {
        let mut report = PortReport::default();
        let webdav = (channel_type == ChannelType::WEBDAV).then(|| {
            let mut name = format!("webdav-{channel_id}.http.pcap");
            let mut n = 1;
            while !self.names.insert(name.clone()) {
                name = format!("webdav-{channel_id}.{n}.http.pcap");
                n += 1;
            }
            let mut w = WebdavReport { paths_redacted: self.redact_paths, ..WebdavReport::default() };
            let pcap = FlushingFile::create(&self.dir.join(&name))
                .map_err(|e| e.to_string())
                .and_then(|f| TcpPcap::new(f).map_err(|e| e.to_string()));
            let pcap = match pcap {
                Ok(p) => {
                    w.http_pcap = Some(name);
                    Some(p)
                }
                Err(e) => {
                    tracing::error!(file = name, error = %e, "cannot write the webdav HTTP pcap");
                    report.stopped = Some(format!("HTTP pcap: {e}"));
                    None
                }
            };
            report.webdav = Some(w);
            Webdav {
                mux: MuxDecoder::new(),
                pcap,
                clients: HashMap::new(),
                next_port: GUEST_PORT_BASE,
                path_set: HashSet::new(),
            }
        });
        self.channels.insert(key, ChannelState { channel_id, assemblers: None, report, webdav });
    }

    fn close(&mut self, key: ChannelKey, first: Direction, at: SystemTime) {
        let Some(mut ch) = self.channels.remove(&key) else { return };
        if let Some(w) = &mut ch.webdav {
            // The channel's end ends every HTTP connection in it.
            let ids: Vec<i64> = w.clients.keys().copied().collect();
            for id in ids {
                if let Err(e) = w.close_client(id, first, at) {
                    ch.report.stopped.get_or_insert(e);
                }
            }
            if let Some(p) = w.pcap.take()
                && let Err(e) = p.into_writer().flush()
            {
                tracing::error!(channel_id = ch.channel_id, error = %e, "finishing the webdav HTTP pcap failed");
            }
        }
        match serde_json::to_value(&ch.report) {
            Ok(v) => self.reports.consumer_report(key, "port", v),
            Err(e) => tracing::error!(error = %e, "port report not serialisable"),
        }
    }
}

impl ChannelState {
    /// Assembles SPICE messages from a chunk; follows port messages and,
    /// on a webdav channel, the mux in the SpiceVMC data.
    fn feed(&mut self, dir: Direction, at: SystemTime, bytes: &[u8], redact: bool) -> Result<(), String> {
        let Some(assemblers) = &mut self.assemblers else { return Ok(()) };
        let messages = assemblers[dir.index()].feed(bytes).map_err(|e| e.to_string())?;
        let from_server = dir == Direction::ServerToClient;
        for (header, body) in messages {
            match PortMessage::parse(from_server, header.msg_type, &body) {
                Ok(Some(PortMessage::Init { name, opened })) => {
                    self.report.name = Some(name);
                    self.report.opened_at_init = Some(opened);
                    continue;
                }
                Ok(Some(PortMessage::Event(e))) => {
                    if self.report.events.len() < MAX_EVENTS {
                        self.report.events.push(PortEventReport {
                            at: rfc3339(OffsetDateTime::from(at)),
                            from: if from_server { "server" } else { "client" },
                            event: port_event_name(e),
                        });
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
            let Some(w) = &mut self.webdav else { continue };
            let Some(payload) = vmc_payload(header.msg_type, &body).map_err(|e| e.to_string())? else { continue };
            // The SPICE server's side of the port is the guest.
            let report = self.report.webdav.get_or_insert_with(WebdavReport::default);
            w.feed(from_server, at, &payload, report, redact)?;
        }
        Ok(())
    }
}

impl Webdav {
    fn feed(
        &mut self,
        from_guest: bool,
        at: SystemTime,
        payload: &[u8],
        report: &mut WebdavReport,
        redact: bool,
    ) -> Result<(), String> {
        let mut events = Vec::new();
        self.mux.feed(from_guest, payload, &mut events);
        for ev in events {
            match ev {
                MuxEvent::Open { id, .. } => {
                    if self.clients.len() >= MAX_OPEN_CLIENTS {
                        return Err(format!("more than {MAX_OPEN_CLIENTS} webdav mux clients open at once"));
                    }
                    report.clients += 1;
                    let port = self.next_port;
                    self.next_port = self.next_port.checked_add(1).unwrap_or(GUEST_PORT_BASE);
                    let conv = match &mut self.pcap {
                        Some(p) => TcpConversation::open(p, Endpoints::new(port, HTTP_PORT), at),
                        None => continue,
                    };
                    let conv = conv.map_err(|e| e.to_string())?;
                    self.clients.insert(id, MuxClient { conv, http: Some(Http1Connection::new()) });
                }
                MuxEvent::Data { id, from_guest, bytes } => {
                    if from_guest {
                        report.bytes_from_guest += bytes.len() as u64;
                    } else {
                        report.bytes_to_guest += bytes.len() as u64;
                    }
                    let Some(c) = self.clients.get_mut(&id) else { continue };
                    if let Some(p) = &mut self.pcap {
                        let dir = if from_guest { Direction::ClientToServer } else { Direction::ServerToClient };
                        c.conv.data(p, dir, at, &bytes).map_err(|e| e.to_string())?;
                    }
                    if let Some(http) = &mut c.http {
                        let mut heads = Vec::new();
                        let r = http.feed(from_guest, &bytes, &mut heads);
                        for h in heads {
                            count(report, &mut self.path_set, h, redact);
                        }
                        if let Err(e) = r {
                            report.http_unfollowed += 1;
                            report.http_error.get_or_insert_with(|| e.to_string());
                            c.http = None;
                        }
                    }
                }
                MuxEvent::Close { id, from_guest } => {
                    let first = if from_guest { Direction::ClientToServer } else { Direction::ServerToClient };
                    self.close_client(id, first, at)?;
                }
            }
        }
        Ok(())
    }

    fn close_client(&mut self, id: i64, first: Direction, at: SystemTime) -> Result<(), String> {
        let Some(c) = self.clients.remove(&id) else { return Ok(()) };
        match &mut self.pcap {
            Some(p) => c.conv.close(p, first, at).map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }
}

fn count(report: &mut WebdavReport, seen: &mut HashSet<String>, ev: HttpEvent, redact: bool) {
    match ev {
        HttpEvent::Request { method, target } => {
            *report.requests.entry(method).or_insert(0) += 1;
            let path = if redact { redacted(&target) } else { target };
            if seen.contains(&path) {
                return;
            }
            if seen.len() < MAX_PATHS {
                seen.insert(path.clone());
                report.paths.push(path);
            } else {
                report.paths_not_listed += 1;
            }
        }
        HttpEvent::Response { status } => *report.responses.entry(status.to_string()).or_insert(0) += 1,
    }
}

/// `sha256:` and the first 16 hex digits of the SHA-256 of `path`.
pub fn redacted(path: &str) -> String {
    let d = Sha256::digest(path.as_bytes());
    let hex: String = d.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests;

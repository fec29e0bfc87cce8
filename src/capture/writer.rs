//! The capture writer: one thread per session, turning [`CaptureEvent`]s
//! into pcap files and `session.json`.
//!
//! It owns every file of the session folder. A write error stops the capture
//! of the channel it hit (recorded as that channel's `capture_loss`); the
//! thread keeps draining its queue so the memory budget is released and the
//! proxy never notices.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use super::{CLIENT_PORT_BASE, CaptureEvent, CaptureSink, SERVER_PORT};
use crate::flushing::{FLUSH_INTERVAL, FlushHandle, FlushingFile};
use crate::report::{SessionReport, rfc3339};
use crate::tap::{ChannelKey, TapEvent};
use crate::tcp_pcap::{Endpoints, PcapError, TcpConversation, TcpPcap};

/// Starts the writer thread of a session whose folder is `dir` (created by
/// the thread) and whose report starts as `report`; at most `budget` bytes
/// of traffic wait in its queue.
///
/// # Errors
/// The error of spawning the thread.
pub fn spawn(dir: PathBuf, report: SessionReport, budget: usize) -> io::Result<(CaptureSink, JoinHandle<()>)> {
    let (tx, rx) = unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let sink = CaptureSink { tx, queued: queued.clone(), budget };
    let name = format!("capture-{}", report.session_id);
    let handle = std::thread::Builder::new().name(name).spawn(move || {
        let mut w = SessionWriter::new(dir, report);
        w.run(rx, &queued);
    })?;
    Ok((sink, handle))
}

/// A channel's pcap file and the one conversation in it.
struct ChannelPcap {
    out: TcpPcap<FlushingFile>,
    conv: TcpConversation,
    /// Flushes `out`'s file when the writer goes idle.
    flusher: FlushHandle,
}

struct OpenChannel {
    conv: Option<ChannelPcap>,
    report_index: usize,
    loss: Option<String>,
}

struct SessionWriter {
    dir: PathBuf,
    /// `None` once the folder could not be created: events are drained.
    ready: bool,
    report: SessionReport,
    channels: HashMap<ChannelKey, OpenChannel>,
    names: HashSet<String>,
    next_port: u16,
    /// Report index of every channel ever opened (reports may follow a close).
    indexes: HashMap<ChannelKey, usize>,
    /// Consumers still to report done once the session ended (`None`
    /// before the end).
    awaiting: Option<usize>,
    /// Consumers done before the end was announced.
    early_done: usize,
    /// The last `session.json` write failed (logged once until one works).
    report_failing: bool,
}

impl SessionWriter {
    fn new(dir: PathBuf, report: SessionReport) -> Self {
        let ready = match std::fs::create_dir_all(&dir) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "cannot create capture folder; this session is not recorded");
                false
            }
        };
        let mut w = Self {
            dir,
            ready,
            report,
            channels: HashMap::new(),
            names: HashSet::new(),
            next_port: CLIENT_PORT_BASE,
            indexes: HashMap::new(),
            awaiting: None,
            early_done: 0,
            report_failing: false,
        };
        w.write_report();
        w
    }

    fn run(&mut self, mut rx: UnboundedReceiver<CaptureEvent>, queued: &AtomicUsize) {
        // Whether something was written since the last flush of the open
        // pcaps: then the thread polls (a try per CONSUMER_BATCH_PAUSE)
        // instead of blocking, and flushes once FLUSH_INTERVAL has passed,
        // so a channel that goes quiet has its last bytes on disk within
        // about a second (kill -9 loses no more), at one flush a second.
        let mut unflushed = false;
        let mut last_flush = Instant::now();
        'outer: loop {
            let mut next = if unflushed {
                match rx.try_recv() {
                    Ok(ev) => Some(ev),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => break,
                }
            } else {
                match rx.blocking_recv() {
                    Some(ev) => Some(ev),
                    None => break,
                }
            };
            while let Some(ev) = next {
                let cost = ev.cost();
                self.handle(ev);
                unflushed = true;
                queued.fetch_sub(cost, Ordering::Relaxed);
                if self.awaiting == Some(0) {
                    break 'outer;
                }
                next = rx.try_recv().ok();
            }
            if unflushed && last_flush.elapsed() >= FLUSH_INTERVAL {
                self.flush_open();
                unflushed = false;
                last_flush = Instant::now();
            }
            std::thread::sleep(crate::tap::CONSUMER_BATCH_PAUSE);
        }
        // Channels still open (the proxy stopped mid-way) are finished here.
        let keys: Vec<_> = self.channels.keys().copied().collect();
        for key in keys {
            self.finish(key, crate::protocol::Direction::ClientToServer, std::time::SystemTime::now());
        }
        self.write_report();
        tracing::info!(dir = %self.dir.display(), "capture finished");
    }

    fn handle(&mut self, ev: CaptureEvent) {
        match ev {
            CaptureEvent::ChannelOpened { key, report } => {
                self.report.channels.push(*report);
                self.indexes.insert(key, self.report.channels.len() - 1);
                self.write_report();
            }
            CaptureEvent::Tap(TapEvent::Open { key, channel_type, channel_id, at }) => {
                let Some(&report_index) = self.indexes.get(&key) else { return };
                let file = self.unique_name(&format!("{}-{}", channel_type.name(), channel_id));
                let port = self.next_port;
                self.next_port = self.next_port.checked_add(1).unwrap_or(CLIENT_PORT_BASE);
                let mut loss = None;
                let conv = if self.ready {
                    match open_pcap(&self.dir.join(&file), port, at) {
                        Ok(c) => Some(c),
                        Err(e) => {
                            tracing::error!(file, error = %e, "cannot write pcap; forwarding continues");
                            loss = Some(e.to_string());
                            None
                        }
                    }
                } else {
                    None
                };
                let report = &mut self.report.channels[report_index];
                report.pcap = Some(file);
                report.capture_loss.clone_from(&loss);
                self.channels.insert(key, OpenChannel { conv, report_index, loss });
                self.write_report();
            }
            CaptureEvent::Tap(TapEvent::Link { key, dir, at, bytes }) => {
                self.with_conv(key, |c| c.conv.link_segment(&mut c.out, dir, at, &bytes));
            }
            CaptureEvent::Tap(TapEvent::StartMessages { key, kind }) => {
                self.with_conv(key, |c| {
                    c.conv.start_messages(kind);
                    Ok(())
                });
            }
            CaptureEvent::Tap(TapEvent::Data { key, dir, at, bytes }) => {
                self.with_conv(key, |c| c.conv.data(&mut c.out, dir, at, &bytes));
            }
            CaptureEvent::Tap(TapEvent::Close { key, first, at }) => {
                self.finish(key, first, at);
                self.write_report();
            }
            CaptureEvent::ChannelClosed { key, report } => {
                if let Some(&i) = self.indexes.get(&key) {
                    let old = &mut self.report.channels[i];
                    let mut report = *report;
                    report.pcap = old.pcap.take();
                    report.render = old.render.take();
                    report.usbredir = old.usbredir.take();
                    report.port = old.port.take();
                    report.cursor = old.cursor.take();
                    if report.capture_loss.is_none() {
                        report.capture_loss = old.capture_loss.take();
                    }
                    self.report.channels[i] = report;
                    self.write_report();
                }
            }
            CaptureEvent::ConsumerReport { key, consumer, report } => {
                if let Some(&i) = self.indexes.get(&key) {
                    match consumer {
                        "render" => self.report.channels[i].render = Some(report),
                        "usbredir" => self.report.channels[i].usbredir = Some(report),
                        "port" => self.report.channels[i].port = Some(report),
                        "cursor" => self.report.channels[i].cursor = Some(report),
                        other => {
                            tracing::debug!(consumer = other, "report from a consumer session.json has no place for")
                        }
                    }
                    self.write_report();
                }
            }
            CaptureEvent::ConsumerDone { .. } => {
                if let Some(n) = &mut self.awaiting {
                    *n = n.saturating_sub(1);
                } else {
                    // Done before the end was announced: counted then.
                    self.early_done += 1;
                }
            }
            CaptureEvent::End { at, consumers } => {
                self.report.end = Some(rfc3339(at));
                self.awaiting = Some(consumers.saturating_sub(self.early_done));
            }
        }
    }

    fn with_conv(&mut self, key: ChannelKey, f: impl FnOnce(&mut ChannelPcap) -> Result<(), PcapError>) {
        let Some(ch) = self.channels.get_mut(&key) else { return };
        let Some(conv) = ch.conv.as_mut() else { return };
        if let Err(e) = f(conv) {
            stop_capture(key, ch, &mut self.report, &e);
        }
    }

    /// Flushes every open pcap; a failure stops that channel's capture.
    fn flush_open(&mut self) {
        for (key, ch) in &mut self.channels {
            let Some(conv) = &ch.conv else { continue };
            if let Err(e) = conv.flusher.flush() {
                stop_capture(*key, ch, &mut self.report, &e);
            }
        }
    }

    fn finish(&mut self, key: ChannelKey, first: crate::protocol::Direction, at: std::time::SystemTime) {
        let Some(ch) = self.channels.remove(&key) else { return };
        if let Some(ChannelPcap { mut out, conv, .. }) = ch.conv {
            let done = conv
                .close(&mut out, first, at)
                .map_err(|e| e.to_string())
                .and_then(|()| out.into_writer().flush().map_err(|e| e.to_string()));
            if let Err(e) = done {
                tracing::error!(key, error = %e, "finishing pcap failed");
                self.report.channels[ch.report_index].capture_loss = Some(e);
            }
        }
    }

    fn unique_name(&mut self, stem: &str) -> String {
        let mut name = format!("{stem}.pcap");
        let mut n = 1;
        while !self.names.insert(name.clone()) {
            name = format!("{stem}.{n}.pcap");
            n += 1;
        }
        name
    }

    /// Replaces `session.json` (whole, by rename). A failure is logged once
    /// until a later write works again; the last good file stays.
    fn write_report(&mut self) {
        if !self.ready {
            return;
        }
        match self.report.write_to(&self.dir.join("session.json")) {
            Ok(()) if self.report_failing => {
                self.report_failing = false;
                tracing::info!(dir = %self.dir.display(), "session.json written again");
            }
            Ok(()) => {}
            Err(e) if !self.report_failing => {
                self.report_failing = true;
                tracing::error!(dir = %self.dir.display(), error = %e, "cannot write session.json; the last one written stays");
            }
            Err(e) => tracing::debug!(dir = %self.dir.display(), error = %e, "cannot write session.json"),
        }
    }
}

/// A write to `ch`'s pcap failed: its capture stops (recorded as the
/// channel's `capture_loss`); forwarding is not concerned.
fn stop_capture(key: ChannelKey, ch: &mut OpenChannel, report: &mut SessionReport, e: &dyn std::fmt::Display) {
    tracing::error!(key, error = %e, "pcap write failed; capture of this channel stopped, forwarding continues");
    ch.conv = None;
    ch.loss = Some(e.to_string());
    report.channels[ch.report_index].capture_loss = Some(e.to_string());
}

fn open_pcap(path: &Path, port: u16, at: std::time::SystemTime) -> Result<ChannelPcap, PcapError> {
    let file = FlushingFile::create(path)?;
    let flusher = file.flush_handle();
    let mut out = TcpPcap::new(file)?;
    let conv = TcpConversation::open(&mut out, Endpoints::new(port, SERVER_PORT), at)?;
    Ok(ChannelPcap { out, conv, flusher })
}

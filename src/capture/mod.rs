//! Recording: per-channel pcaps and `session.json`, off the forwarding path.
//!
//! The relay hands each forwarded chunk (a reference-counted [`Bytes`], not
//! a copy) to a [`ChannelCapture`], which queues it for its session's
//! writer thread with a non-blocking send. The queue is bounded in bytes
//! ([`crate::limits::CAPTURE_QUEUE_BYTES`] by default): a send that would pass the bound is refused,
//! that channel's capture stops, and the loss is recorded, so forwarding
//! never waits for the disk.
//!
//! ```text
//! relay task (c2s) ─┐  CaptureEvent       ┌─ writer thread (one per session)
//! relay task (s2c) ─┼── unbounded mpsc ───┤   TcpConversation per channel -> <channel>-<id>.pcap
//! channel task ─────┘  + byte budget      └─  SessionReport               -> session.json
//! ```

pub mod pcap;
pub mod replay;
pub mod report;
pub mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use time::OffsetDateTime;
use tokio::sync::mpsc::UnboundedSender;

use crate::link::HeaderKind;
use crate::protocol::{ChannelType, Direction};
use report::ChannelReport;

/// Bytes charged against the budget for an event beyond its payload.
const EVENT_OVERHEAD: usize = 128;

/// Most bytes a channel holds before its session is known (main channel,
/// before `SPICE_MSG_MAIN_INIT`).
const PENDING_LIMIT: usize = 1024 * 1024;

/// Identifies a channel connection within the proxy.
pub type ChannelKey = u64;

/// What the writer thread is asked to do, in order.
#[derive(Debug)]
pub enum CaptureEvent {
    /// A channel connection joins the session: open its pcap.
    Open {
        /// The connection.
        key: ChannelKey,
        /// Its channel type.
        channel_type: ChannelType,
        /// Its channel id.
        channel_id: u8,
        /// Its report so far.
        report: Box<ChannelReport>,
        /// When it was accepted.
        at: SystemTime,
    },
    /// A link-stage piece.
    Link {
        /// The connection.
        key: ChannelKey,
        /// Which way it went.
        dir: Direction,
        /// When it was read.
        at: SystemTime,
        /// The bytes, exactly as forwarded.
        bytes: Bytes,
    },
    /// The link stage is over; messages follow with this header (or raw).
    StartMessages {
        /// The connection.
        key: ChannelKey,
        /// Negotiated header; `None` when the stream is not framed (SASL).
        kind: Option<HeaderKind>,
    },
    /// Bytes forwarded after the link stage.
    Data {
        /// The connection.
        key: ChannelKey,
        /// Which way they went.
        dir: Direction,
        /// When they were read.
        at: SystemTime,
        /// The bytes, exactly as forwarded.
        bytes: Bytes,
    },
    /// The connection closed: finish its pcap, store its final report.
    Close {
        /// The connection.
        key: ChannelKey,
        /// The side that closed first (sends the first FIN).
        first: Direction,
        /// When.
        at: SystemTime,
        /// Final report.
        report: Box<ChannelReport>,
    },
    /// The renderer's report on a display channel (may come after its close).
    Render {
        /// The connection.
        key: ChannelKey,
        /// What the renderer did.
        report: Box<crate::render::live::RenderReport>,
    },
    /// The session's last channel closed: write `session.json` and stop.
    End {
        /// When.
        at: OffsetDateTime,
    },
}

impl CaptureEvent {
    fn cost(&self) -> usize {
        EVENT_OVERHEAD
            + match self {
                Self::Link { bytes, .. } | Self::Data { bytes, .. } => bytes.len(),
                _ => 0,
            }
    }
}

/// The sending side of a session's capture queue.
#[derive(Debug, Clone)]
pub struct CaptureSink {
    tx: UnboundedSender<CaptureEvent>,
    queued: Arc<AtomicUsize>,
    /// Most bytes queued at once (default [`crate::limits::CAPTURE_QUEUE_BYTES`]).
    budget: usize,
}

impl CaptureSink {
    /// Queues a control event (open, close, end): always accepted while the
    /// writer runs; these are few and small.
    pub fn send_control(&self, ev: CaptureEvent) {
        self.queued.fetch_add(ev.cost(), Ordering::Relaxed);
        if self.tx.send(ev).is_err() {
            tracing::debug!("capture writer already stopped");
        }
    }

    /// Queues a data event if the byte budget allows.
    ///
    /// # Errors
    /// A text saying why the event was refused (budget exceeded, writer gone).
    fn try_send_data(&self, ev: CaptureEvent) -> Result<(), String> {
        let cost = ev.cost();
        let before = self.queued.fetch_add(cost, Ordering::Relaxed);
        if before + cost > self.budget {
            self.queued.fetch_sub(cost, Ordering::Relaxed);
            return Err(format!("capture writer fell behind by more than {} bytes", self.budget));
        }
        self.tx.send(ev).map_err(|_| "capture writer stopped".to_string())
    }
}

/// Where a channel's capture stands.
#[derive(Debug)]
enum State {
    /// The session is not known yet: events wait here.
    Pending { events: Vec<CaptureEvent>, bytes: usize },
    /// Events go to the session's writer; once `stopped`, only the close
    /// event does (so the writer can still finish the file).
    Attached { sink: CaptureSink, stopped: bool },
    /// Stopped before the session was known; nothing more is queued until
    /// [`ChannelCapture::attach`].
    StoppedPending,
}

/// One channel's capture handle, shared by its two relay directions.
#[derive(Debug)]
pub struct ChannelCapture {
    key: ChannelKey,
    state: State,
    loss: Option<String>,
    /// The session's renderer, for display channels.
    render: Option<crate::render::live::RenderSink>,
}

impl ChannelCapture {
    /// A handle whose session is not known yet.
    pub fn pending(key: ChannelKey) -> Self {
        Self { key, state: State::Pending { events: Vec::new(), bytes: 0 }, loss: None, render: None }
    }

    /// The connection this handle records.
    pub fn key(&self) -> ChannelKey {
        self.key
    }

    /// Why the capture is incomplete, if it is.
    pub fn loss(&self) -> Option<&str> {
        self.loss.as_deref()
    }

    /// Joins the session's writer: sends `open`, then whatever waited.
    pub fn attach(&mut self, sink: CaptureSink, open: CaptureEvent) {
        let stopped = self.loss.is_some();
        let waiting = std::mem::replace(&mut self.state, State::Attached { sink: sink.clone(), stopped });
        sink.send_control(open);
        if let State::Pending { events, .. } = waiting {
            for ev in events {
                self.push(ev);
            }
        }
    }

    /// Feeds this (display) channel to the session's renderer from now on.
    pub fn attach_render(&mut self, render: crate::render::live::RenderSink, channel_id: u8) {
        render.open(self.key, channel_id);
        self.render = Some(render);
    }

    /// Records a link-stage piece.
    pub fn link(&mut self, dir: Direction, at: SystemTime, bytes: Bytes) {
        let key = self.key;
        self.push(CaptureEvent::Link { key, dir, at, bytes });
    }

    /// Records the end of the link stage.
    pub fn start_messages(&mut self, kind: Option<HeaderKind>) {
        let key = self.key;
        if let Some(r) = &self.render {
            r.link(key, kind);
        }
        self.push(CaptureEvent::StartMessages { key, kind });
    }

    /// Records forwarded bytes.
    pub fn data(&mut self, dir: Direction, at: SystemTime, bytes: Bytes) {
        let key = self.key;
        if let Some(r) = &self.render {
            r.data(key, dir, at, bytes.clone());
        }
        self.push(CaptureEvent::Data { key, dir, at, bytes });
    }

    /// Queues the close event with the channel's final report (adding this
    /// handle's capture loss to it).
    pub fn close(&mut self, first: Direction, at: SystemTime, mut report: ChannelReport) {
        if report.capture_loss.is_none() {
            report.capture_loss.clone_from(&self.loss);
        }
        let key = self.key;
        let ev = CaptureEvent::Close { key, first, at, report: Box::new(report) };
        if let Some(r) = &self.render {
            r.close(key);
        }
        match &mut self.state {
            State::Attached { sink, .. } => sink.send_control(ev),
            State::Pending { events, .. } => events.push(ev),
            State::StoppedPending => {}
        }
    }

    fn push(&mut self, ev: CaptureEvent) {
        let failure = match &mut self.state {
            State::StoppedPending | State::Attached { stopped: true, .. } => return,
            State::Attached { sink, stopped: false } => match ev {
                CaptureEvent::StartMessages { .. } | CaptureEvent::Close { .. } => {
                    sink.send_control(ev);
                    None
                }
                ev => sink.try_send_data(ev).err(),
            },
            State::Pending { events, bytes } => {
                *bytes += ev.cost();
                if *bytes > PENDING_LIMIT {
                    Some(format!("more than {PENDING_LIMIT} bytes before the session id was known"))
                } else {
                    events.push(ev);
                    None
                }
            }
        };
        if let Some(reason) = failure {
            tracing::warn!(key = self.key, %reason, "capture of this channel stopped; forwarding continues");
            self.loss = Some(reason);
            match &mut self.state {
                State::Attached { stopped, .. } => *stopped = true,
                state => *state = State::StoppedPending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc::unbounded_channel;

    fn report() -> ChannelReport {
        ChannelReport::new(ChannelType::MAIN, 0, 0, "127.0.0.1:1".into(), OffsetDateTime::UNIX_EPOCH)
    }

    fn open(key: ChannelKey) -> CaptureEvent {
        CaptureEvent::Open {
            key,
            channel_type: ChannelType::MAIN,
            channel_id: 0,
            report: Box::new(report()),
            at: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_writer_behind_its_budget_stops_the_capture_not_the_close() {
        let (tx, mut rx) = unbounded_channel();
        let sink = CaptureSink { tx, queued: Arc::new(AtomicUsize::new(0)), budget: 1000 };
        let mut c = ChannelCapture::pending(7);
        c.link(Direction::ClientToServer, SystemTime::UNIX_EPOCH, Bytes::from_static(b"REDQ"));
        c.attach(sink, open(7));
        c.start_messages(Some(HeaderKind::Mini));
        c.data(Direction::ServerToClient, SystemTime::UNIX_EPOCH, Bytes::from(vec![0u8; 600]));
        assert!(c.loss().is_some(), "600 + 4 bytes with overheads exceed 1000");
        c.data(Direction::ServerToClient, SystemTime::UNIX_EPOCH, Bytes::from(vec![0u8; 1]));
        c.close(Direction::ClientToServer, SystemTime::UNIX_EPOCH, report());
        let mut kinds = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            kinds.push(match ev {
                CaptureEvent::Open { .. } => "open",
                CaptureEvent::Link { .. } => "link",
                CaptureEvent::StartMessages { .. } => "start",
                CaptureEvent::Data { .. } => "data",
                CaptureEvent::Close { report, .. } => {
                    assert!(report.capture_loss.as_deref().unwrap().contains("fell behind"));
                    "close"
                }
                CaptureEvent::End { .. } => "end",
                CaptureEvent::Render { .. } => "render",
            });
        }
        assert_eq!(kinds, ["open", "link", "start", "close"]);
    }

    #[test]
    fn pending_events_are_bounded_before_the_session_is_known() {
        let mut c = ChannelCapture::pending(1);
        for _ in 0..20 {
            c.data(Direction::ServerToClient, SystemTime::UNIX_EPOCH, Bytes::from(vec![0u8; 64 * 1024]));
        }
        assert!(c.loss().unwrap().contains("before the session id was known"));
    }

    #[test]
    fn a_pcap_that_cannot_be_created_is_recorded_as_capture_loss() {
        let dir = tempfile::tempdir().unwrap();
        let session_dir = dir.path().join("s");
        std::fs::create_dir_all(session_dir.join("main-0.pcap")).unwrap();
        let report0 = report::SessionReport {
            session_id: 1,
            start: String::new(),
            end: None,
            client_address: String::new(),
            upstream_address: String::new(),
            upstream_insecure: false,
            channels: Vec::new(),
        };
        let (sink, handle) = writer::spawn(session_dir.clone(), report0, 1 << 20).unwrap();
        sink.send_control(open(1));
        sink.send_control(CaptureEvent::Close {
            key: 1,
            first: Direction::ClientToServer,
            at: SystemTime::UNIX_EPOCH,
            report: Box::new(report()),
        });
        sink.send_control(CaptureEvent::End { at: OffsetDateTime::UNIX_EPOCH });
        handle.join().unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(session_dir.join("session.json")).unwrap()).unwrap();
        assert!(json["channels"][0]["capture_loss"].as_str().unwrap().contains("pcap write failed"));
        assert!(json["end"].is_string());
    }
}

//! Recording: per-channel pcaps and `session.json`, off the forwarding path.
//!
//! The capture is one of the session tap's consumers ([`crate::tap`]) and
//! the owner of `session.json`, the end of the tap's report path. Each
//! forwarded chunk (a reference-counted [`bytes::Bytes`], not a copy) reaches its
//! [`CaptureSink`] with a non-blocking send into the session's writer
//! queue. The queue is bounded in bytes ([`crate::limits::CAPTURE_QUEUE_BYTES`]
//! by default): a send that would pass the bound is refused, that
//! channel's capture stops, and the loss is recorded, so forwarding never
//! waits for the disk.
//!
//! ```text
//! ChannelTap (per channel) ──TapEvent──┐  CaptureEvent     ┌─ writer thread (one per session)
//! channel task ── channel reports ─────┼── unbounded mpsc ─┤   TcpConversation per channel -> <channel>-<id>.pcap
//! other consumers ── their reports ────┘  + byte budget    └─  SessionReport               -> session.json
//! ```

pub mod replay;
pub mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use time::OffsetDateTime;
use tokio::sync::mpsc::UnboundedSender;

use crate::protocol::ChannelType;
use crate::report::ChannelReport;
use crate::tap::{ChannelKey, Consumer, EVENT_OVERHEAD, Reports, TapEvent};

/// Synthetic server port of the SPICE pcaps: no Wireshark dissector
/// registers it (5900-5901 belong to VNC), so the SPICE heuristic claims
/// each stream on the `REDQ` of its link message
/// (`epan/dissectors/packet-spice.c`).
pub const SERVER_PORT: u16 = 5930;
/// First synthetic client port; the n-th channel of a session uses `+ n`.
pub const CLIENT_PORT_BASE: u16 = 49152;

/// What the writer thread is asked to do, in order.
#[derive(Debug)]
pub enum CaptureEvent {
    /// A channel's bytes (and its open and close) from the tap.
    Tap(TapEvent),
    /// A channel joined the session: its report so far.
    ChannelOpened {
        /// The connection.
        key: ChannelKey,
        /// Its report.
        report: Box<ChannelReport>,
    },
    /// A channel's final report.
    ChannelClosed {
        /// The connection.
        key: ChannelKey,
        /// Its report.
        report: Box<ChannelReport>,
    },
    /// Another consumer's report on a channel (may come after its close).
    ConsumerReport {
        /// The connection.
        key: ChannelKey,
        /// Which consumer (`render`).
        consumer: &'static str,
        /// What it reports.
        report: serde_json::Value,
    },
    /// A consumer sent its last report.
    ConsumerDone {
        /// Which consumer.
        consumer: &'static str,
    },
    /// The session's last channel closed: write `session.json` and stop
    /// once `consumers` consumers are done.
    End {
        /// When.
        at: OffsetDateTime,
        /// Consumers still to report done.
        consumers: usize,
    },
}

impl CaptureEvent {
    fn cost(&self) -> usize {
        match self {
            Self::Tap(ev) => ev.cost(),
            _ => EVENT_OVERHEAD,
        }
    }
}

/// The sending side of a session's capture queue: the capture's tap
/// consumer and the session's report path.
#[derive(Debug, Clone)]
pub struct CaptureSink {
    tx: UnboundedSender<CaptureEvent>,
    queued: Arc<AtomicUsize>,
    /// Most bytes queued at once (default [`crate::limits::CAPTURE_QUEUE_BYTES`]).
    budget: usize,
}

impl CaptureSink {
    /// Queues a control event (open, close, reports, end): always accepted
    /// while the writer runs; these are few and small.
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

impl Consumer for CaptureSink {
    fn name(&self) -> &'static str {
        "capture"
    }

    fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    fn wants(&self, _channel_type: ChannelType) -> bool {
        true
    }

    fn offer(&self, event: TapEvent) -> Result<(), String> {
        if event.is_control() {
            self.send_control(CaptureEvent::Tap(event));
            Ok(())
        } else {
            self.try_send_data(CaptureEvent::Tap(event))
        }
    }

    fn end(&self, _at: OffsetDateTime) {
        self.send_control(CaptureEvent::ConsumerDone { consumer: "capture" });
    }
}

impl Reports for CaptureSink {
    fn channel_opened(&self, key: ChannelKey, report: Box<ChannelReport>) {
        self.send_control(CaptureEvent::ChannelOpened { key, report });
    }

    fn channel_closed(&self, key: ChannelKey, report: Box<ChannelReport>) {
        self.send_control(CaptureEvent::ChannelClosed { key, report });
    }

    fn consumer_report(&self, key: ChannelKey, consumer: &'static str, report: serde_json::Value) {
        self.send_control(CaptureEvent::ConsumerReport { key, consumer, report });
    }

    fn consumer_done(&self, consumer: &'static str) {
        self.send_control(CaptureEvent::ConsumerDone { consumer });
    }

    fn session_ended(&self, at: OffsetDateTime, consumers: usize) {
        self.send_control(CaptureEvent::End { at, consumers });
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::protocol::Direction;

    fn report() -> ChannelReport {
        ChannelReport::new(ChannelType::MAIN, 0, 0, "127.0.0.1:1".into(), OffsetDateTime::UNIX_EPOCH)
    }

    #[test]
    fn a_pcap_that_cannot_be_created_is_recorded_as_capture_loss() {
        let dir = tempfile::tempdir().unwrap();
        let session_dir = dir.path().join("s");
        std::fs::create_dir_all(session_dir.join("main-0.pcap")).unwrap();
        let report0 = crate::report::SessionReport {
            session_id: 1,
            start: String::new(),
            end: None,
            client_address: String::new(),
            upstream_address: String::new(),
            upstream_insecure: false,
            channels: Vec::new(),
        };
        let (sink, handle) = writer::spawn(session_dir.clone(), report0, 1 << 20).unwrap();
        sink.channel_opened(1, Box::new(report()));
        let open =
            TapEvent::Open { key: 1, channel_type: ChannelType::MAIN, channel_id: 0, at: SystemTime::UNIX_EPOCH };
        sink.offer(open).unwrap();
        sink.offer(TapEvent::Close { key: 1, first: Direction::ClientToServer, at: SystemTime::UNIX_EPOCH }).unwrap();
        sink.channel_closed(1, Box::new(report()));
        sink.session_ended(OffsetDateTime::UNIX_EPOCH, 1);
        Consumer::end(&sink, OffsetDateTime::UNIX_EPOCH);
        handle.join().unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(session_dir.join("session.json")).unwrap()).unwrap();
        assert!(json["channels"][0]["capture_loss"].as_str().unwrap().contains("pcap write failed"));
        assert!(json["end"].is_string());
    }
}

//! The audit log (`--audit-log FILE`): one JSON object per line, appended by
//! a thread of its own so that a slow disk never stalls a connection.
//!
//! ```text
//! {"time":"2026-11-21T10:15:02.123Z","event":"accepted","client":"192.0.2.7:50122","channel":"main"}
//! {"time":...,"event":"authenticated","client":...,"target":"vm1","channel":"main"}
//! {"time":...,"event":"denied","client":...,"channel":"main","reason":"unknown token"}
//! {"time":...,"event":"session_started","client":...,"target":"vm1","session_id":12345}
//! {"time":...,"event":"channel_ended","client":...,"target":"vm1","channel":"display","c2s_bytes":..,"s2c_bytes":..}
//! {"time":...,"event":"session_ended",...}
//! ```
//!
//! Tokens and passwords are never written: events carry the target's name.

use std::io::Write;
use std::path::Path;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

use serde::Serialize;
use time::OffsetDateTime;

use crate::report::rfc3339;

/// Events waiting for the writer thread at most; more are dropped (and
/// counted in the log).
const QUEUE: usize = 4096;

/// One audit event.
#[derive(Debug, Clone, Serialize, Default)]
pub struct AuditEvent {
    /// RFC 3339 UTC time (filled in by [`AuditLog::record`]).
    pub time: String,
    /// `accepted`, `authenticated`, `denied`, `session_started`,
    /// `channel_ended`, `session_ended`.
    pub event: &'static str,
    /// Client address.
    pub client: String,
    /// Channel type name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Target (VM) name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Why access was denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// SPICE session id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<u32>,
    /// Token id in the fleet database (`--db`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_id: Option<i64>,
    /// Bytes from client to server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub c2s_bytes: Option<u64>,
    /// Bytes from server to client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s2c_bytes: Option<u64>,
}

/// Another place audit events go besides the file (the fleet database of
/// `--db`). `record` must not block: it queues.
pub trait AuditSink: Send + Sync {
    /// Queues one event (its `time` is set).
    fn record(&self, ev: &AuditEvent);
}

/// The sending side of the audit log: a JSON-lines file, a sink, or both.
#[derive(Clone, Default)]
pub struct AuditLog {
    tx: Option<SyncSender<AuditEvent>>,
    sink: Option<std::sync::Arc<dyn AuditSink>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("file", &self.tx.is_some()).field("sink", &self.sink.is_some()).finish()
    }
}

impl AuditLog {
    /// Also sends every event to `sink`.
    pub fn with_sink(mut self, sink: std::sync::Arc<dyn AuditSink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Opens `path` for appending and starts the writer thread.
    ///
    /// # Errors
    /// The I/O error of opening the file or spawning the thread.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
        let (tx, rx) = sync_channel::<AuditEvent>(QUEUE);
        std::thread::Builder::new().name("audit-log".into()).spawn(move || {
            while let Ok(ev) = rx.recv() {
                let line = serde_json::to_string(&ev).unwrap_or_default();
                if let Err(e) = writeln!(file, "{line}").and_then(|()| file.flush()) {
                    tracing::error!(error = %e, "audit log write failed");
                }
            }
        })?;
        Ok(Self { tx: Some(tx), sink: None })
    }

    /// Queues an event, stamped with the current time.
    pub fn record(&self, mut ev: AuditEvent) {
        ev.time = rfc3339(OffsetDateTime::now_utc());
        if let Some(sink) = &self.sink {
            sink.record(&ev);
        }
        let Some(tx) = &self.tx else { return };
        match tx.try_send(ev) {
            Ok(()) => {}
            Err(TrySendError::Full(ev)) => tracing::error!(event = ev.event, "audit log queue full; event dropped"),
            Err(TrySendError::Disconnected(_)) => tracing::error!("audit log writer stopped"),
        }
    }
}

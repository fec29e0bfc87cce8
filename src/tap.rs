//! The session tap: each channel's forwarded bytes, in order and with their
//! times, handed to the session's independent consumers.
//!
//! ```text
//! relay c2s ─┐                 ┌─> capture (pcap writer, session.json)   own queue, own budget
//! relay s2c ─┼─ ChannelTap ────┼─> render (display channels)            own queue, own budget
//! channel  ──┘  (per channel,  └─> ... (port-channel decoders)           own queue, own budget
//!  task         both directions)
//!                     consumers ──Reports──> the session's report owner ──> session.json
//! ```
//!
//! A [`Consumer`] takes [`TapEvent`]s without blocking: each consumer has
//! its own bounded queue, and when it cannot keep up it stops (for the
//! channel or for the session, as it chooses) and records why, never
//! slowing the relays or the other consumers. Consumers import this module,
//! never each other; what they learn goes to `session.json` through one
//! path, [`Reports`].
//!
//! A main channel's session is known only once `SPICE_MSG_MAIN_INIT` has
//! gone by; until then its events wait in the [`ChannelTap`], bounded.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use time::OffsetDateTime;

use crate::link::HeaderKind;
use crate::protocol::{ChannelType, Direction};
use crate::report::ChannelReport;

/// Identifies a channel connection within the proxy.
pub type ChannelKey = u64;

/// How long a consumer thread that emptied its queue pauses before it
/// waits for the next event. While it runs or pauses, a relay handing it an
/// event finds no receiver parked and pays no wake-up (a futex call on the
/// forwarding path, then a context switch competing with the relays for the
/// cores); events wait at most this long, in memory already counted against
/// the consumer's budget. With 10 sessions of 100 display messages a second,
/// the capture's added p99 forwarding latency fell from ~130 µs to within
/// the noise of forwarding without capture, and the proxy's CPU by a fifth
/// (scripts/bench-load, README).
pub const CONSUMER_BATCH_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

/// Bytes charged for an event beyond its payload (queue budgets).
pub const EVENT_OVERHEAD: usize = 128;

/// Most bytes a channel holds before its session is known (main channel,
/// before `SPICE_MSG_MAIN_INIT`).
const PENDING_LIMIT: usize = 1024 * 1024;

/// What a consumer receives of a channel, in order.
#[derive(Debug, Clone)]
pub enum TapEvent {
    /// The channel joins the session.
    Open {
        /// The connection.
        key: ChannelKey,
        /// Its channel type.
        channel_type: ChannelType,
        /// Its channel id.
        channel_id: u8,
        /// When the connection was accepted.
        at: SystemTime,
    },
    /// A link-stage piece, exactly as forwarded.
    Link {
        /// The connection.
        key: ChannelKey,
        /// Which way it went.
        dir: Direction,
        /// When it was read.
        at: SystemTime,
        /// The bytes.
        bytes: Bytes,
    },
    /// The link stage is over; messages follow with this header (`None`:
    /// the stream is not framed, as after SASL).
    StartMessages {
        /// The connection.
        key: ChannelKey,
        /// Negotiated header.
        kind: Option<HeaderKind>,
    },
    /// Bytes forwarded after the link stage, exactly as forwarded (a chunk
    /// may hold part of a message or several).
    Data {
        /// The connection.
        key: ChannelKey,
        /// Which way they went.
        dir: Direction,
        /// When they were read.
        at: SystemTime,
        /// The bytes.
        bytes: Bytes,
    },
    /// The connection closed.
    Close {
        /// The connection.
        key: ChannelKey,
        /// The side that closed first.
        first: Direction,
        /// When.
        at: SystemTime,
    },
}

impl TapEvent {
    /// Bytes this event weighs against a queue budget.
    pub fn cost(&self) -> usize {
        EVENT_OVERHEAD
            + match self {
                Self::Link { bytes, .. } | Self::Data { bytes, .. } => bytes.len(),
                _ => 0,
            }
    }

    /// Open, start of messages and close: few and small, always delivered
    /// so a consumer can open and finish what it writes.
    pub fn is_control(&self) -> bool {
        matches!(self, Self::Open { .. } | Self::StartMessages { .. } | Self::Close { .. })
    }
}

/// One of a session's consumers, seen from the relays.
pub trait Consumer: Send + Sync + fmt::Debug {
    /// Its name in logs and `session.json` (`capture`, `render`, ...).
    fn name(&self) -> &'static str;
    /// Whether it follows channels of this type.
    fn wants(&self, channel_type: ChannelType) -> bool;

    /// Bytes waiting in this consumer's queue (0 when it does not say).
    fn queued_bytes(&self) -> usize {
        0
    }
    /// Takes an event without blocking. Control events are always taken.
    ///
    /// # Errors
    /// Why a data event was refused: the consumer follows this channel no
    /// further (it still gets its close).
    fn offer(&self, event: TapEvent) -> Result<(), String>;
    /// The session ended: the consumer finishes, sends its last reports
    /// and then [`Reports::consumer_done`].
    fn end(&self, at: OffsetDateTime);
}

/// The one path from the session's parts to `session.json`.
pub trait Reports: Send + Sync + fmt::Debug {
    /// A channel joined the session, with its report so far.
    fn channel_opened(&self, key: ChannelKey, report: Box<ChannelReport>);
    /// A channel closed, with its final report.
    fn channel_closed(&self, key: ChannelKey, report: Box<ChannelReport>);
    /// What consumer `consumer` has to say about channel `key` (replaces
    /// its earlier report for the channel).
    fn consumer_report(&self, key: ChannelKey, consumer: &'static str, report: serde_json::Value);
    /// Consumer `consumer` has sent its last report.
    fn consumer_done(&self, consumer: &'static str);
    /// The session's last channel closed at `at`; `consumers` reports of
    /// [`Reports::consumer_done`] are still to come.
    fn session_ended(&self, at: OffsetDateTime, consumers: usize);
}

/// A session's consumers and its report path.
#[derive(Debug, Clone)]
pub struct SessionTap {
    reports: Arc<dyn Reports>,
    consumers: Vec<Arc<dyn Consumer>>,
}

impl SessionTap {
    /// Bytes waiting in the queues of the consumers named `name`.
    pub fn queued_bytes(&self, name: &str) -> usize {
        self.consumers.iter().filter(|c| c.name() == name).map(|c| c.queued_bytes()).sum()
    }

    /// A tap handing events to `consumers` and reports to `reports`.
    pub fn new(reports: Arc<dyn Reports>, consumers: Vec<Arc<dyn Consumer>>) -> Self {
        Self { reports, consumers }
    }

    /// Where reports go.
    pub fn reports(&self) -> &Arc<dyn Reports> {
        &self.reports
    }

    /// Tells the report owner and every consumer that the session ended.
    pub fn end(&self, at: OffsetDateTime) {
        self.reports.session_ended(at, self.consumers.len());
        for c in &self.consumers {
            c.end(at);
        }
    }
}

/// Where a channel's tap stands.
#[derive(Debug)]
enum State {
    /// The session is not known yet: events wait here.
    Pending { events: Vec<TapEvent>, bytes: usize },
    /// Events go to the consumers that want the channel; `true` marks one
    /// that stopped following it.
    Attached { consumers: Vec<(Arc<dyn Consumer>, bool)> },
}

/// One channel's tap, shared by its two relay directions and its task.
#[derive(Debug)]
pub struct ChannelTap {
    key: ChannelKey,
    channel_type: ChannelType,
    state: State,
    /// Why events were lost before the session was known (every consumer).
    pending_loss: Option<String>,
    /// Why a consumer stopped following this channel.
    losses: HashMap<&'static str, String>,
}

impl ChannelTap {
    /// A tap whose session is not known yet.
    pub fn pending(key: ChannelKey, channel_type: ChannelType) -> Self {
        Self {
            key,
            channel_type,
            state: State::Pending { events: Vec::new(), bytes: 0 },
            pending_loss: None,
            losses: HashMap::new(),
        }
    }

    /// The connection this tap follows.
    pub fn key(&self) -> ChannelKey {
        self.key
    }

    /// Why consumer `name` did not get all of this channel, if it did not.
    pub fn loss_of(&self, name: &str) -> Option<&str> {
        self.losses.get(name).or(self.pending_loss.as_ref()).map(String::as_str)
    }

    /// Joins the session: `Open` to every consumer that wants the channel,
    /// then whatever waited.
    pub fn attach(&mut self, tap: &SessionTap, channel_id: u8, accepted: SystemTime) {
        let stopped = self.pending_loss.is_some();
        let consumers: Vec<_> =
            tap.consumers.iter().filter(|c| c.wants(self.channel_type)).map(|c| (c.clone(), stopped)).collect();
        let waiting = std::mem::replace(&mut self.state, State::Attached { consumers });
        let open = TapEvent::Open { key: self.key, channel_type: self.channel_type, channel_id, at: accepted };
        self.push(open);
        if let State::Pending { events, .. } = waiting {
            for ev in events {
                self.push(ev);
            }
        }
    }

    /// A link-stage piece.
    pub fn link(&mut self, dir: Direction, at: SystemTime, bytes: Bytes) {
        let key = self.key;
        self.push(TapEvent::Link { key, dir, at, bytes });
    }

    /// The end of the link stage.
    pub fn start_messages(&mut self, kind: Option<HeaderKind>) {
        let key = self.key;
        self.push(TapEvent::StartMessages { key, kind });
    }

    /// Forwarded bytes.
    pub fn data(&mut self, dir: Direction, at: SystemTime, bytes: Bytes) {
        let key = self.key;
        self.push(TapEvent::Data { key, dir, at, bytes });
    }

    /// The connection closed.
    pub fn close(&mut self, first: Direction, at: SystemTime) {
        let key = self.key;
        self.push(TapEvent::Close { key, first, at });
    }

    fn push(&mut self, ev: TapEvent) {
        match &mut self.state {
            State::Pending { events, bytes } => {
                if self.pending_loss.is_some() && !ev.is_control() {
                    return;
                }
                *bytes += ev.cost();
                if *bytes > PENDING_LIMIT && !ev.is_control() {
                    let reason = format!("more than {PENDING_LIMIT} bytes before the session id was known");
                    tracing::warn!(key = self.key, %reason, "recording of this channel stopped; forwarding continues");
                    self.pending_loss = Some(reason);
                    events.retain(TapEvent::is_control);
                    return;
                }
                events.push(ev);
            }
            State::Attached { consumers } => {
                for (c, stopped) in consumers.iter_mut() {
                    if *stopped && !ev.is_control() {
                        continue;
                    }
                    if let Err(reason) = c.offer(ev.clone()) {
                        tracing::warn!(
                            key = self.key, consumer = c.name(), %reason,
                            "consumer stopped following this channel; forwarding continues"
                        );
                        *stopped = true;
                        self.losses.insert(c.name(), reason);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A consumer that takes at most `budget` data bytes, then refuses.
    #[derive(Debug)]
    struct Probe {
        wants: ChannelType,
        budget: usize,
        taken: Mutex<(usize, Vec<&'static str>)>,
    }

    impl Consumer for Probe {
        fn name(&self) -> &'static str {
            "probe"
        }
        fn wants(&self, channel_type: ChannelType) -> bool {
            channel_type == self.wants
        }
        fn offer(&self, event: TapEvent) -> Result<(), String> {
            let mut t = self.taken.lock().unwrap();
            if !event.is_control() {
                if t.0 + event.cost() > self.budget {
                    return Err("behind".into());
                }
                t.0 += event.cost();
            }
            t.1.push(match event {
                TapEvent::Open { .. } => "open",
                TapEvent::Link { .. } => "link",
                TapEvent::StartMessages { .. } => "start",
                TapEvent::Data { .. } => "data",
                TapEvent::Close { .. } => "close",
            });
            Ok(())
        }
        fn end(&self, _at: OffsetDateTime) {}
    }

    #[derive(Debug, Default)]
    struct NoReports;

    impl Reports for NoReports {
        fn channel_opened(&self, _: ChannelKey, _: Box<ChannelReport>) {}
        fn channel_closed(&self, _: ChannelKey, _: Box<ChannelReport>) {}
        fn consumer_report(&self, _: ChannelKey, _: &'static str, _: serde_json::Value) {}
        fn consumer_done(&self, _: &'static str) {}
        fn session_ended(&self, _: OffsetDateTime, _: usize) {}
    }

    fn probe(wants: ChannelType, budget: usize) -> Arc<Probe> {
        Arc::new(Probe { wants, budget, taken: Mutex::new((0, Vec::new())) })
    }

    #[test]
    fn a_consumer_behind_its_budget_stops_alone_and_still_gets_the_close() {
        let (slow, other) = (probe(ChannelType::MAIN, 1000), probe(ChannelType::MAIN, usize::MAX));
        let tap = SessionTap::new(Arc::new(NoReports), vec![slow.clone(), other.clone()]);
        let mut c = ChannelTap::pending(7, ChannelType::MAIN);
        c.link(Direction::ClientToServer, SystemTime::UNIX_EPOCH, Bytes::from_static(b"REDQ"));
        c.attach(&tap, 0, SystemTime::UNIX_EPOCH);
        c.start_messages(Some(HeaderKind::Mini));
        c.data(Direction::ServerToClient, SystemTime::UNIX_EPOCH, Bytes::from(vec![0u8; 900]));
        assert!(c.loss_of("probe").is_some(), "900 bytes with overheads exceed 1000 after the link piece");
        c.data(Direction::ServerToClient, SystemTime::UNIX_EPOCH, Bytes::from(vec![0u8; 1]));
        c.close(Direction::ClientToServer, SystemTime::UNIX_EPOCH);
        assert_eq!(slow.taken.lock().unwrap().1, ["open", "link", "start", "close"]);
        assert_eq!(other.taken.lock().unwrap().1, ["open", "link", "start", "data", "data", "close"]);
    }

    #[test]
    fn consumers_get_only_the_channel_types_they_want() {
        let (display, main) = (probe(ChannelType::DISPLAY, usize::MAX), probe(ChannelType::MAIN, usize::MAX));
        let tap = SessionTap::new(Arc::new(NoReports), vec![display.clone(), main.clone()]);
        let mut c = ChannelTap::pending(1, ChannelType::DISPLAY);
        c.attach(&tap, 0, SystemTime::UNIX_EPOCH);
        c.data(Direction::ServerToClient, SystemTime::UNIX_EPOCH, Bytes::from_static(b"x"));
        assert_eq!(display.taken.lock().unwrap().1, ["open", "data"]);
        assert!(main.taken.lock().unwrap().1.is_empty());
    }

    #[test]
    fn pending_events_are_bounded_before_the_session_is_known() {
        let all = probe(ChannelType::MAIN, usize::MAX);
        let tap = SessionTap::new(Arc::new(NoReports), vec![all.clone()]);
        let mut c = ChannelTap::pending(1, ChannelType::MAIN);
        c.start_messages(Some(HeaderKind::Mini));
        for _ in 0..20 {
            c.data(Direction::ServerToClient, SystemTime::UNIX_EPOCH, Bytes::from(vec![0u8; 64 * 1024]));
        }
        assert!(c.loss_of("capture").unwrap().contains("before the session id was known"));
        c.attach(&tap, 0, SystemTime::UNIX_EPOCH);
        c.data(Direction::ServerToClient, SystemTime::UNIX_EPOCH, Bytes::from_static(b"x"));
        c.close(Direction::ServerToClient, SystemTime::UNIX_EPOCH);
        assert_eq!(all.taken.lock().unwrap().1, ["open", "start", "close"]);
    }
}

//! Decoders of what SPICE port channels carry: session tap consumers that
//! turn the SpiceVMC data of a channel back into the protocol inside it and
//! record it in a form Wireshark reads.
//!
//! - [`usbredir`]: usbredir channels (type 9) as Linux usbmon pcaps, with
//!   the devices, transfers and mass-storage commands in `session.json`.
//! - [`webdav`]: port channels (type 10: name and open/close events) and
//!   the webdav channel (type 11: folder sharing's mux, each connection an
//!   HTTP conversation in a pcap).
//!
//! Each decoder is a [`DecoderSink`] (the tap side: never blocks, own byte
//! budget) feeding a thread of its own per session that runs a
//! [`Decoder`]; the thread starts with the session's first channel of the
//! decoder's types.
//!
//! SpiceVMC data (spice-common `spice.proto`, spice `server/spicevmc.cpp`):
//! `SPICE_MSG_SPICEVMC_DATA` / `SPICE_MSGC_SPICEVMC_DATA` (101) carry raw
//! bytes; `*_COMPRESSED_DATA` (102) carry type u8 (1: LZ4), uncompressed
//! size u32, then one raw LZ4 block.

pub mod usbredir;
pub mod webdav;

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;

use thiserror::Error;
use time::OffsetDateTime;

use crate::protocol::ChannelType;
use crate::tap::{ChannelKey, Consumer, EVENT_OVERHEAD, Reports, TapEvent};

/// `SPICE_MSG_SPICEVMC_DATA` and `SPICE_MSGC_SPICEVMC_DATA`.
pub const SPICEVMC_DATA: u16 = 101;
/// `SPICE_MSG_SPICEVMC_COMPRESSED_DATA` and `SPICE_MSGC_SPICEVMC_COMPRESSED_DATA`.
pub const SPICEVMC_COMPRESSED_DATA: u16 = 102;
/// `SPICE_DATA_COMPRESSION_TYPE_LZ4`.
const COMPRESSION_LZ4: u8 = 1;

/// Largest uncompressed size accepted for one compressed SpiceVMC message
/// (spice-server compresses chunks of at most 64 KiB + 32 bytes).
pub const MAX_UNCOMPRESSED: u32 = 1024 * 1024;

/// Why a SpiceVMC message's payload cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum VmcError {
    /// Shorter than its 5-byte compression header.
    #[error("compressed SpiceVMC data of {0} bytes")]
    Short(usize),
    /// A compression type other than LZ4.
    #[error("SpiceVMC compression type {0}")]
    UnknownCompression(u8),
    /// An uncompressed size over [`MAX_UNCOMPRESSED`].
    #[error("SpiceVMC data announced as {0} bytes uncompressed")]
    TooLarge(u32),
    /// The LZ4 block does not inflate to the announced size.
    #[error("LZ4: {0}")]
    Lz4(String),
}

/// The carried bytes of a SpiceVMC message of type `msg_type` (either
/// direction), or `None` for other messages.
///
/// # Errors
/// [`VmcError`] for a compressed message that cannot be inflated.
pub fn vmc_payload(msg_type: u16, body: &[u8]) -> Result<Option<Vec<u8>>, VmcError> {
    match msg_type {
        SPICEVMC_DATA => Ok(Some(body.to_vec())),
        SPICEVMC_COMPRESSED_DATA => {
            let [kind, a, b, c, d, block @ ..] = body else { return Err(VmcError::Short(body.len())) };
            if *kind != COMPRESSION_LZ4 {
                return Err(VmcError::UnknownCompression(*kind));
            }
            let size = u32::from_le_bytes([*a, *b, *c, *d]);
            if size > MAX_UNCOMPRESSED {
                return Err(VmcError::TooLarge(size));
            }
            let out = lz4_flex::block::decompress(block, size as usize).map_err(|e| VmcError::Lz4(e.to_string()))?;
            if out.len() != size as usize {
                return Err(VmcError::Lz4(format!("{} bytes, not {size}", out.len())));
            }
            Ok(Some(out))
        }
        _ => Ok(None),
    }
}

/// `SPICE_MSG_PORT_INIT` (server, spice-protocol `enums.h`).
pub const PORT_INIT: u16 = 201;
/// `SPICE_MSG_PORT_EVENT` (server).
pub const PORT_EVENT: u16 = 202;
/// `SPICE_MSGC_PORT_EVENT` (client).
pub const PORTC_EVENT: u16 = 201;

/// Longest port name accepted in `SPICE_MSG_PORT_INIT` (QEMU's names are
/// short reverse-DNS strings).
pub const MAX_PORT_NAME: usize = 1024;

/// A port channel message (spice-common `spice.proto`, `PortChannel`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortMessage {
    /// `SPICE_MSG_PORT_INIT`: u32 name size (with its NUL), u32 offset of
    /// the name from the body's start (the name is a pointer field in
    /// `spice.proto`, marshalled after the fixed part: offset 9), u8
    /// opened (whether the guest has the port open), then the name.
    Init {
        /// The port's name, without the NUL.
        name: String,
        /// Whether the guest side is open.
        opened: bool,
    },
    /// `SPICE_MSG_PORT_EVENT` or `SPICE_MSGC_PORT_EVENT`: u8 event
    /// (`SPICE_PORT_EVENT_OPENED` 0, `CLOSED` 1, `BREAK` 2, spice-protocol
    /// `enums.h`).
    Event(u8),
}

/// Why a port message cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PortError {
    /// Shorter than its fields say.
    #[error("port message of {0} bytes is truncated")]
    Truncated(usize),
    /// A name size of 0 or over [`MAX_PORT_NAME`].
    #[error("port name of {0} bytes")]
    NameSize(u32),
}

impl PortMessage {
    /// Parses message `msg_type` of a port or webdav channel sent by the
    /// server (`from_server`) or the client; `None` for other messages.
    ///
    /// # Errors
    /// [`PortError`] for a truncated message or an oversized name.
    pub fn parse(from_server: bool, msg_type: u16, body: &[u8]) -> Result<Option<Self>, PortError> {
        match (from_server, msg_type) {
            (true, PORT_INIT) => {
                let short = || PortError::Truncated(body.len());
                let [s0, s1, s2, s3, o0, o1, o2, o3, opened, ..] = *body else { return Err(short()) };
                let size = u32::from_le_bytes([s0, s1, s2, s3]);
                if size == 0 || size as usize > MAX_PORT_NAME {
                    return Err(PortError::NameSize(size));
                }
                let offset = u32::from_le_bytes([o0, o1, o2, o3]) as usize;
                let name = offset.checked_add(size as usize).and_then(|end| body.get(offset..end)).ok_or_else(short)?;
                let name = name.strip_suffix(&[0]).unwrap_or(name);
                Ok(Some(Self::Init { name: String::from_utf8_lossy(name).into_owned(), opened: opened != 0 }))
            }
            (true, PORT_EVENT) | (false, PORTC_EVENT) => match body.first() {
                Some(&e) => Ok(Some(Self::Event(e))),
                None => Err(PortError::Truncated(0)),
            },
            _ => Ok(None),
        }
    }
}

/// The name of a `SPICE_PORT_EVENT_*` value.
pub fn port_event_name(event: u8) -> &'static str {
    match event {
        0 => "opened",
        1 => "closed",
        2 => "break",
        _ => "unknown",
    }
}

/// Input of a decoder thread.
#[derive(Debug)]
enum Input {
    Tap(TapEvent),
    /// The queue refused this channel's data: stop decoding it.
    Stop {
        key: ChannelKey,
        reason: String,
    },
    End,
}

impl Input {
    fn cost(&self) -> usize {
        if let Self::Tap(t) = self { t.cost() } else { EVENT_OVERHEAD }
    }
}

/// What a port decoder thread does with the events of its channels.
pub trait Decoder: Send + 'static {
    /// One event of a channel the sink wants, in order.
    fn event(&mut self, event: TapEvent);
    /// The queue refused data of channel `key`: decode it no further and
    /// record `reason`.
    fn stop(&mut self, key: ChannelKey, reason: String);
    /// The session ended: finish every channel still open and send the
    /// last reports.
    fn finish(&mut self);
}

/// The tap side of a port decoder: a [`Consumer`] with its own queue,
/// bounded in bytes, in front of the decoder's thread.
///
/// The thread starts with the first event of a channel the sink wants (the
/// channel's `Open`), so a session that never opens such a channel costs no
/// thread; at the session's end a sink that never started reports itself
/// done at once.
#[derive(Clone)]
pub struct DecoderSink {
    name: &'static str,
    types: &'static [ChannelType],
    /// Taken by the first event; `None` once taken.
    start: Arc<Mutex<Option<Start>>>,
    /// Set once: the running thread's queue, or `None` when it could not
    /// start or the session ended before it did.
    tx: Arc<OnceLock<Option<Sender<Input>>>>,
    reports: Arc<dyn Reports>,
    queued: Arc<AtomicUsize>,
    budget: usize,
}

/// Where the handles of started decoder threads go, for the session's owner
/// to join at shutdown.
pub type DecoderThreads = Arc<Mutex<Vec<JoinHandle<()>>>>;

/// Starts a decoder's thread and gives the sender of its queue.
type Start = Box<dyn FnOnce() -> std::io::Result<Sender<Input>> + Send>;

impl fmt::Debug for DecoderSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecoderSink").field("name", &self.name).field("started", &self.started()).finish()
    }
}

impl DecoderSink {
    /// The running thread's queue, starting the thread on the first call.
    fn sender(&self) -> Result<&Sender<Input>, String> {
        let tx = self.tx.get_or_init(|| {
            let start = self.start.lock().unwrap_or_else(PoisonError::into_inner).take()?;
            start()
                .inspect_err(|e| tracing::error!(decoder = self.name, error = %e, "cannot start the decoder thread"))
                .ok()
        });
        tx.as_ref().ok_or_else(|| format!("{} decoder stopped", self.name))
    }

    /// Whether the decoder's thread was started.
    pub fn started(&self) -> bool {
        matches!(self.tx.get(), Some(Some(_)))
    }
}

impl Consumer for DecoderSink {
    fn name(&self) -> &'static str {
        self.name
    }

    fn wants(&self, channel_type: ChannelType) -> bool {
        self.types.contains(&channel_type)
    }

    fn offer(&self, event: TapEvent) -> Result<(), String> {
        if matches!(event, TapEvent::Link { .. }) {
            return Ok(());
        }
        let tx = self.sender()?;
        let cost = event.cost();
        if event.is_control() {
            self.queued.fetch_add(cost, Ordering::Relaxed);
            let _ = tx.send(Input::Tap(event));
            return Ok(());
        }
        if self.queued.fetch_add(cost, Ordering::Relaxed) + cost > self.budget {
            self.queued.fetch_sub(cost, Ordering::Relaxed);
            let reason = format!("{} decoder fell behind by more than {} bytes", self.name, self.budget);
            if let TapEvent::Data { key, .. } = &event {
                self.queued.fetch_add(EVENT_OVERHEAD, Ordering::Relaxed);
                let _ = tx.send(Input::Stop { key: *key, reason: reason.clone() });
            }
            return Err(reason);
        }
        tx.send(Input::Tap(event)).map_err(|_| format!("{} decoder stopped", self.name))
    }

    fn end(&self, _at: OffsetDateTime) {
        // A sink that never started stays so: nothing to finish.
        match self.tx.get_or_init(|| None) {
            Some(tx) => {
                self.queued.fetch_add(EVENT_OVERHEAD, Ordering::Relaxed);
                let _ = tx.send(Input::End);
            }
            None => self.reports.consumer_done(self.name),
        }
    }
}

/// A sink for decoder `name` of session `session_id`, following channels of
/// `types`; at most `budget` bytes wait in its queue. Its thread starts
/// with the first channel of those types, its handle goes to `threads`; at
/// the session's end the thread calls [`Decoder::finish`], then
/// [`Reports::consumer_done`].
pub fn decoder_sink<D: Decoder>(
    name: &'static str,
    types: &'static [ChannelType],
    session_id: u32,
    reports: Arc<dyn Reports>,
    budget: usize,
    threads: DecoderThreads,
    mut decoder: D,
) -> DecoderSink {
    let queued = Arc::new(AtomicUsize::new(0));
    let start: Start = {
        let (queued, reports) = (queued.clone(), reports.clone());
        Box::new(move || {
            let (tx, rx) = channel();
            let handle = std::thread::Builder::new()
                .name(format!("{name}-{session_id}"))
                .spawn(move || run_decoder(name, &rx, &queued, &reports, &mut decoder))?;
            threads.lock().unwrap_or_else(PoisonError::into_inner).push(handle);
            Ok(tx)
        })
    };
    let start = Arc::new(Mutex::new(Some(start)));
    DecoderSink { name, types, start, tx: Arc::default(), reports, queued, budget }
}

fn run_decoder<D: Decoder>(
    name: &'static str,
    rx: &Receiver<Input>,
    queued: &AtomicUsize,
    reports: &Arc<dyn Reports>,
    decoder: &mut D,
) {
    loop {
        let ev = match rx.try_recv() {
            Ok(ev) => ev,
            Err(TryRecvError::Empty) => {
                // Batch the relays' events (see CONSUMER_BATCH_PAUSE).
                std::thread::sleep(crate::tap::CONSUMER_BATCH_PAUSE);
                match rx.recv() {
                    Ok(ev) => ev,
                    Err(_) => break,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        let cost = ev.cost();
        match ev {
            Input::Tap(t) => decoder.event(t),
            Input::Stop { key, reason } => decoder.stop(key, reason),
            Input::End => {
                decoder.finish();
                queued.fetch_sub(cost, Ordering::Relaxed);
                break;
            }
        }
        queued.fetch_sub(cost, Ordering::Relaxed);
    }
    reports.consumer_done(name);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_lz4_payloads_are_read() {
        assert_eq!(vmc_payload(SPICEVMC_DATA, b"abc"), Ok(Some(b"abc".to_vec())));
        assert_eq!(vmc_payload(1, b"abc"), Ok(None));
        let raw = vec![42u8; 5000];
        let mut body = vec![COMPRESSION_LZ4];
        body.extend((raw.len() as u32).to_le_bytes());
        body.extend(lz4_flex::block::compress(&raw));
        assert_eq!(vmc_payload(SPICEVMC_COMPRESSED_DATA, &body), Ok(Some(raw)));
    }

    #[test]
    fn port_messages_are_parsed_and_bounded() {
        // As QEMU's spice-server sent it (recorded from a real session).
        let mut init = 25u32.to_le_bytes().to_vec();
        init.extend_from_slice(&9u32.to_le_bytes());
        init.push(1);
        init.extend_from_slice(b"org.spice-space.webdav.0\0");
        let want = PortMessage::Init { name: "org.spice-space.webdav.0".into(), opened: true };
        assert_eq!(PortMessage::parse(true, PORT_INIT, &init), Ok(Some(want)));
        assert_eq!(PortMessage::parse(true, PORT_EVENT, &[1]), Ok(Some(PortMessage::Event(1))));
        assert_eq!(PortMessage::parse(false, PORTC_EVENT, &[0]), Ok(Some(PortMessage::Event(0))));
        assert_eq!(PortMessage::parse(false, SPICEVMC_DATA, b"x"), Ok(None));
        // Hostile: truncated at every length, oversized and empty names.
        for n in 0..init.len() {
            assert!(PortMessage::parse(true, PORT_INIT, &init[..n]).is_err(), "{n}");
        }
        assert_eq!(PortMessage::parse(true, PORT_EVENT, &[]), Err(PortError::Truncated(0)));
        let mut huge = u32::MAX.to_le_bytes().to_vec();
        huge.extend([9, 0, 0, 0, 0]);
        assert_eq!(PortMessage::parse(true, PORT_INIT, &huge), Err(PortError::NameSize(u32::MAX)));
        assert_eq!(PortMessage::parse(true, PORT_INIT, &[0, 0, 0, 0, 9, 0, 0, 0, 1]), Err(PortError::NameSize(0)));
        // An offset past the end, or one that wraps.
        let mut far = init.clone();
        far[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(PortMessage::parse(true, PORT_INIT, &far), Err(PortError::Truncated(init.len())));
        assert_eq!(port_event_name(2), "break");
    }

    /// Counts `consumer_done` calls.
    #[derive(Debug, Default)]
    struct DoneCount(AtomicUsize);

    impl Reports for DoneCount {
        fn channel_opened(&self, _: ChannelKey, _: Box<crate::report::ChannelReport>) {}
        fn channel_closed(&self, _: ChannelKey, _: Box<crate::report::ChannelReport>) {}
        fn consumer_report(&self, _: ChannelKey, _: &'static str, _: serde_json::Value) {}
        fn consumer_done(&self, _: &'static str) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn session_ended(&self, _: OffsetDateTime, _: usize) {}
    }

    /// Counts the events it decodes.
    struct Counting(Arc<AtomicUsize>);

    impl Decoder for Counting {
        fn event(&mut self, _: TapEvent) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn stop(&mut self, _: ChannelKey, _: String) {}
        fn finish(&mut self) {}
    }

    fn counting_sink() -> (DecoderSink, Arc<DoneCount>, Arc<AtomicUsize>, DecoderThreads) {
        let (reports, events, threads) = (Arc::new(DoneCount::default()), Arc::default(), Arc::default());
        let decoder = Counting(Arc::clone(&events));
        let sink =
            decoder_sink("port", &[ChannelType::PORT], 1, reports.clone(), 1 << 20, Arc::clone(&threads), decoder);
        (sink, reports, events, threads)
    }

    #[test]
    fn a_decoder_thread_starts_only_with_a_channel_of_its_types() {
        // A session without such a channel: no thread, done at its end.
        let (sink, reports, _, threads) = counting_sink();
        sink.end(OffsetDateTime::UNIX_EPOCH);
        assert!(!sink.started());
        assert!(threads.lock().unwrap().is_empty());
        assert_eq!(reports.0.load(Ordering::SeqCst), 1);

        // One with: the Open starts it, and it decodes to the end.
        let (sink, reports, events, threads) = counting_sink();
        let at = std::time::SystemTime::UNIX_EPOCH;
        let open = TapEvent::Open { key: 3, channel_type: ChannelType::PORT, channel_id: 0, at };
        assert_eq!(sink.offer(open), Ok(()));
        assert!(sink.started());
        let data = TapEvent::Data {
            key: 3,
            dir: crate::protocol::Direction::ServerToClient,
            at,
            bytes: bytes::Bytes::from_static(b"x"),
        };
        assert_eq!(sink.offer(data), Ok(()));
        sink.end(OffsetDateTime::UNIX_EPOCH);
        let handles = std::mem::take(&mut *threads.lock().unwrap());
        assert_eq!(handles.len(), 1);
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!((events.load(Ordering::SeqCst), reports.0.load(Ordering::SeqCst)), (2, 1));
        assert_eq!(sink.queued.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn hostile_compressed_payloads_are_errors() {
        assert_eq!(vmc_payload(SPICEVMC_COMPRESSED_DATA, &[1, 0]), Err(VmcError::Short(2)));
        assert_eq!(vmc_payload(SPICEVMC_COMPRESSED_DATA, &[2, 0, 0, 0, 0]), Err(VmcError::UnknownCompression(2)));
        let huge = [1, 0, 0, 0, 0x40];
        assert_eq!(vmc_payload(SPICEVMC_COMPRESSED_DATA, &huge), Err(VmcError::TooLarge(0x4000_0000)));
        // Announced larger than the block inflates to.
        let mut body = vec![1u8];
        body.extend(100u32.to_le_bytes());
        body.extend(lz4_flex::block::compress(&[1u8; 10]));
        assert!(matches!(vmc_payload(SPICEVMC_COMPRESSED_DATA, &body), Err(VmcError::Lz4(_))));
    }
}

//! The renderer on a live session: one thread per session, fed the display
//! channels' bytes (both directions) by the relays through a queue bounded
//! in bytes, never slowing them.
//!
//! ```text
//! relay (display c2s/s2c) ──ChannelTap──> RenderSink ──> render thread (per session)
//!                                          (a tap         message assembly per channel
//!                                           consumer:     DisplayRenderer per display channel,
//!                                           try-send,     shared caches and GLZ dictionary
//!                                           byte budget)  ──> FrameSink (video) on MARK
//!                                                         ──> tap::Reports (session.json)
//! ```
//!
//! The pointer: the same thread follows the session's cursor channel, the
//! main channel's mouse mode and the inputs channel's client positions
//! ([`Pointer`]), records what it saw on the cursor channel in
//! `session.json`, and (unless turned off) draws the pointer over a copy of
//! each frame handed to the video; the shadow surfaces stay pointer-free.
//! A pointer that only moved still makes a frame.
//!
//! The renderer must see every message in order (a skipped one would
//! desynchronise caches and the GLZ dictionary), so when the queue passes
//! its budget the renderer stops for the whole session: recorded in
//! `session.json` and the log; forwarding and pcaps go on.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::SystemTime;

use bytes::Bytes;
use serde::Serialize;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError, channel};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

use super::canvas::Surface;
use super::cursor::{Pointer, with_pointer};
use super::renderer::{DisplayRenderer, RenderEvent, RenderStats, Shared};
use crate::framing::MessageAssembler;
use crate::link::HeaderKind;
use crate::protocol::{ChannelType, Direction};
use crate::tap::{ChannelKey, Consumer, EVENT_OVERHEAD, Reports, TapEvent};

/// Receives the frames of each display's primary surface (the video
/// recorder implements it).
pub trait FrameSink: Send {
    /// The primary surface of display `channel_id` is complete at `at`.
    fn frame(&mut self, channel_id: u8, at: SystemTime, surface: &Surface);
    /// Display `channel_id` closed; returns what to record about it.
    fn close(&mut self, channel_id: u8) -> Option<serde_json::Value>;
}

/// What the renderer reports for a display channel in `session.json`.
#[derive(Debug, Clone, Serialize)]
pub struct RenderReport {
    /// What was rendered.
    #[serde(flatten)]
    pub stats: RenderStats,
    /// Why the renderer stopped early, if it did.
    pub stopped: Option<String>,
    /// The video recorder's report, if any.
    pub video: Option<serde_json::Value>,
}

/// Input of the render thread.
#[derive(Debug)]
enum Input {
    Open {
        key: ChannelKey,
        channel_type: ChannelType,
        channel_id: u8,
    },
    Link {
        key: ChannelKey,
        kind: Option<HeaderKind>,
    },
    Data {
        key: ChannelKey,
        dir: Direction,
        at: SystemTime,
        bytes: Bytes,
    },
    Close {
        key: ChannelKey,
    },
    Stop {
        reason: String,
    },
    /// The primary surface of display `display` now (pointer drawn over
    /// it when the video shows it), or `None` without one.
    Snapshot {
        display: u8,
        reply: tokio::sync::oneshot::Sender<Option<Surface>>,
    },
    End,
}

impl Input {
    fn cost(&self) -> usize {
        EVENT_OVERHEAD + if let Self::Data { bytes, .. } = self { bytes.len() } else { 0 }
    }
}

/// The sending side of a session's render queue.
#[derive(Debug, Clone)]
pub struct RenderSink {
    tx: Sender<Input>,
    queued: Arc<AtomicUsize>,
    stopped: Arc<AtomicBool>,
    budget: usize,
}

impl RenderSink {
    fn control(&self, ev: Input) {
        self.queued.fetch_add(ev.cost(), Ordering::Relaxed);
        let _ = self.tx.send(ev);
    }

    /// A channel joins the session.
    fn open(&self, key: ChannelKey, channel_type: ChannelType, channel_id: u8) {
        self.control(Input::Open { key, channel_type, channel_id });
    }

    /// The channel's link stage ended with this header kind.
    fn link(&self, key: ChannelKey, kind: Option<HeaderKind>) {
        self.control(Input::Link { key, kind });
    }

    /// Forwarded bytes of a channel. Past the budget the renderer
    /// stops for the session (never the relay).
    fn data(&self, key: ChannelKey, dir: Direction, at: SystemTime, bytes: Bytes) {
        if self.stopped.load(Ordering::Relaxed) {
            return;
        }
        let ev = Input::Data { key, dir, at, bytes };
        let cost = ev.cost();
        if self.queued.fetch_add(cost, Ordering::Relaxed) + cost > self.budget {
            self.queued.fetch_sub(cost, Ordering::Relaxed);
            if !self.stopped.swap(true, Ordering::Relaxed) {
                let reason = format!("renderer fell behind by more than {} bytes", self.budget);
                tracing::warn!(%reason, "renderer stopped for this session; forwarding and capture continue");
                self.control(Input::Stop { reason });
            }
            return;
        }
        let _ = self.tx.send(ev);
    }

    /// A channel closed.
    fn close(&self, key: ChannelKey) {
        self.control(Input::Close { key });
    }

    /// Asks for display `display`'s picture now: its primary surface, with
    /// the pointer drawn over it when the video shows it. The answer comes
    /// once the render thread has handled what is queued before; `None`
    /// without such a display (or once the thread is gone).
    pub fn snapshot(&self, display: u8) -> tokio::sync::oneshot::Receiver<Option<Surface>> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.control(Input::Snapshot { display, reply });
        rx
    }
}

impl Consumer for RenderSink {
    fn name(&self) -> &'static str {
        "render"
    }

    /// Displays, and what the pointer follows: cursor, main (mouse mode)
    /// and inputs (client positions).
    fn wants(&self, channel_type: ChannelType) -> bool {
        matches!(channel_type, ChannelType::DISPLAY | ChannelType::CURSOR | ChannelType::MAIN | ChannelType::INPUTS)
    }

    /// Never refuses: past its budget the renderer stops for the whole
    /// session (a skipped message would desynchronise the shared caches),
    /// which it records itself.
    fn offer(&self, event: TapEvent) -> Result<(), String> {
        match event {
            TapEvent::Open { key, channel_type, channel_id, .. } => self.open(key, channel_type, channel_id),
            TapEvent::StartMessages { key, kind } => self.link(key, kind),
            TapEvent::Data { key, dir, at, bytes } => self.data(key, dir, at, bytes),
            TapEvent::Close { key, .. } => self.close(key),
            TapEvent::Link { .. } => {}
        }
        Ok(())
    }

    /// The thread closes every display, reports, then says it is done.
    fn end(&self, _at: OffsetDateTime) {
        self.control(Input::End);
    }
}

/// Starts a session's render thread. Reports go to `reports`, frames to
/// `frames` (with the pointer drawn over them when `cursor`); at most
/// `budget` bytes wait in the queue.
///
/// # Errors
/// The error of spawning the thread.
pub fn spawn(
    session_id: u32,
    reports: Arc<dyn Reports>,
    frames: Option<Box<dyn FrameSink>>,
    budget: usize,
    cursor: bool,
    metrics: Option<Arc<crate::metrics::Metrics>>,
) -> std::io::Result<(RenderSink, JoinHandle<()>)> {
    let (tx, rx) = channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let sink = RenderSink { tx, queued: queued.clone(), stopped: Arc::new(AtomicBool::new(false)), budget };
    let handle = std::thread::Builder::new().name(format!("render-{session_id}")).spawn(move || {
        let mut t = RenderThread {
            reports,
            frames,
            shared: Shared::default(),
            channels: HashMap::new(),
            others: HashMap::new(),
            pointer: Pointer::new(),
            cursor,
            scratch: None,
            started: Instant::now(),
            stopped: None,
            metrics,
        };
        t.run(rx, &queued);
    })?;
    Ok((sink, handle))
}

struct Channel {
    channel_id: u8,
    assemblers: Option<[MessageAssembler; 2]>,
    renderer: DisplayRenderer,
    /// The primary surface changed since the last frame handed on.
    dirty: bool,
    /// When the last frame was handed on.
    last_frame: Option<Instant>,
}

/// Shortest time between two frames handed to the [`FrameSink`]: the
/// recorder keeps the newest anyway, this only saves copying a surface per
/// draw.
const FRAME_INTERVAL: Duration = Duration::from_millis(1000 / 60);

/// A channel the pointer follows (cursor, main, inputs).
struct PointerChannel {
    channel_type: ChannelType,
    assemblers: Option<[MessageAssembler; 2]>,
}

struct RenderThread {
    reports: Arc<dyn Reports>,
    frames: Option<Box<dyn FrameSink>>,
    shared: Shared,
    /// Display channels.
    channels: HashMap<ChannelKey, Channel>,
    /// Cursor, main and inputs channels.
    others: HashMap<ChannelKey, PointerChannel>,
    pointer: Pointer,
    /// Draw the pointer over the frames handed on.
    cursor: bool,
    /// The frame with the pointer drawn over it.
    scratch: Option<Surface>,
    /// The pointer's clock (monotonic).
    started: Instant,
    stopped: Option<String>,
    /// Renderer stops and video frames are counted here.
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl RenderThread {
    fn run(&mut self, rx: Receiver<Input>, queued: &AtomicUsize) {
        loop {
            // An emptied queue: pause (batching the relays' events), then
            // wait, bounded only while a frame is still to be handed on.
            let ev = match rx.try_recv() {
                Ok(ev) => Ok(ev),
                Err(TryRecvError::Empty) => {
                    std::thread::sleep(crate::tap::CONSUMER_BATCH_PAUSE);
                    if self.channels.values().any(|c| c.dirty) {
                        rx.recv_timeout(FRAME_INTERVAL)
                    } else {
                        rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
                    }
                }
                Err(TryRecvError::Disconnected) => return,
            };
            let ev = match ev {
                Ok(ev) => ev,
                Err(RecvTimeoutError::Timeout) => {
                    self.flush_frames();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let cost = ev.cost();
            let end = matches!(ev, Input::End);
            if !end {
                self.handle(ev);
                self.flush_frames();
            }
            queued.fetch_sub(cost, Ordering::Relaxed);
            if end {
                let keys: Vec<_> = self.channels.keys().chain(self.others.keys()).copied().collect();
                for key in keys {
                    self.close(key);
                }
                self.reports.consumer_done("render");
                return;
            }
        }
    }

    fn handle(&mut self, ev: Input) {
        match ev {
            Input::Open { key, channel_type: ChannelType::DISPLAY, channel_id } => {
                let renderer = DisplayRenderer::with_shared(self.shared.clone());
                let ch = Channel { channel_id, assemblers: None, renderer, dirty: false, last_frame: None };
                self.channels.insert(key, ch);
            }
            Input::Open { key, channel_type, .. } => {
                tracing::debug!(?key, channel = %channel_type.name(), "render thread follows the pointer on it");
                self.others.insert(key, PointerChannel { channel_type, assemblers: None });
            }
            Input::Link { key, kind } => {
                let Some(kind) = kind else { return };
                let pair = [MessageAssembler::new(kind), MessageAssembler::new(kind)];
                if let Some(ch) = self.channels.get_mut(&key) {
                    ch.assemblers = Some(pair);
                } else if let Some(ch) = self.others.get_mut(&key) {
                    ch.assemblers = Some(pair);
                }
            }
            Input::Data { key, dir, at, bytes } => {
                if self.stopped.is_some() {
                    return;
                }
                let r = if let Some(ch) = self.channels.get_mut(&key) {
                    feed(ch, dir, at, &bytes)
                } else if let Some(ch) = self.others.get_mut(&key) {
                    let now = self.started.elapsed();
                    match feed_pointer(ch, &mut self.pointer, now, dir, &bytes) {
                        // The pointer changed: every display gets a frame.
                        Ok(true) => {
                            self.channels.values_mut().for_each(|c| c.dirty = true);
                            Ok(())
                        }
                        Ok(false) => Ok(()),
                        Err(e) => Err(e),
                    }
                } else {
                    Ok(())
                };
                if let Err(e) = r {
                    tracing::warn!(error = %e, "renderer stopped for this session");
                    self.stop(e);
                }
            }
            Input::Close { key } => self.close(key),
            Input::Stop { reason } => self.stop(reason),
            Input::Snapshot { display, reply } => {
                let surface =
                    self.channels.values().find(|c| c.channel_id == display).and_then(|c| c.renderer.primary()).map(
                        |s| {
                            let pointer = if self.cursor { Some(&self.pointer) } else { None };
                            let mut scratch = None;
                            with_pointer(s, pointer, display, &mut scratch).clone()
                        },
                    );
                let _ = reply.send(surface);
            }
            Input::End => {}
        }
    }

    /// Hands on the primary surface of every display that changed, at most
    /// once per [`FRAME_INTERVAL`]; the last change always goes out (the
    /// receive timeout brings the thread back here).
    fn flush_frames(&mut self) {
        let Some(frames) = self.frames.as_deref_mut() else { return };
        let now = Instant::now();
        for ch in self.channels.values_mut() {
            if !ch.dirty || ch.last_frame.is_some_and(|t| now.duration_since(t) < FRAME_INTERVAL) {
                continue;
            }
            if let Some(surface) = ch.renderer.primary() {
                let pointer = if self.cursor { Some(&self.pointer) } else { None };
                let shown = with_pointer(surface, pointer, ch.channel_id, &mut self.scratch);
                frames.frame(ch.channel_id, SystemTime::now(), shown);
            }
            ch.dirty = false;
            ch.last_frame = Some(now);
        }
    }

    fn close(&mut self, key: ChannelKey) {
        if let Some(ch) = self.others.remove(&key) {
            if ch.channel_type == ChannelType::CURSOR {
                let report = self.pointer.report(self.started.elapsed());
                match serde_json::to_value(&report) {
                    Ok(v) => self.reports.consumer_report(key, "cursor", v),
                    Err(e) => tracing::error!(error = %e, "cursor report not serialisable"),
                }
            }
            return;
        }
        self.flush_frames_of(key);
        let Some(ch) = self.channels.remove(&key) else { return };
        let video = self.frames.as_mut().and_then(|f| f.close(ch.channel_id));
        if let (Some(m), Some(v)) = (&self.metrics, &video) {
            let n = |k: &str| v[k].as_u64().unwrap_or(0);
            m.video_finished(n("frames_encoded"), n("frames_dropped"));
        }
        let report = RenderReport { stats: ch.renderer.stats, stopped: self.stopped.clone(), video };
        match serde_json::to_value(&report) {
            Ok(v) => self.reports.consumer_report(key, "render", v),
            Err(e) => tracing::error!(error = %e, "render report not serialisable"),
        }
    }
}

impl RenderThread {
    /// The renderer stops for the session (counted once).
    fn stop(&mut self, reason: String) {
        if self.stopped.is_none()
            && let Some(m) = &self.metrics
        {
            m.renderer_stopped();
        }
        self.stopped = Some(reason);
    }

    /// Hands on a closing display's last change, whatever the interval.
    fn flush_frames_of(&mut self, key: ChannelKey) {
        let (Some(frames), Some(ch)) = (self.frames.as_deref_mut(), self.channels.get_mut(&key)) else { return };
        if ch.dirty
            && let Some(surface) = ch.renderer.primary()
        {
            let pointer = if self.cursor { Some(&self.pointer) } else { None };
            let shown = with_pointer(surface, pointer, ch.channel_id, &mut self.scratch);
            frames.frame(ch.channel_id, SystemTime::now(), shown);
            ch.dirty = false;
        }
    }
}

/// Assembles whole messages of a cursor, main or inputs channel and hands
/// the ones the pointer follows to it; returns whether it changed.
fn feed_pointer(
    ch: &mut PointerChannel,
    pointer: &mut Pointer,
    now: std::time::Duration,
    dir: Direction,
    bytes: &[u8],
) -> Result<bool, String> {
    let Some(assemblers) = &mut ch.assemblers else { return Ok(false) };
    let done = assemblers[dir.index()].feed(bytes).map_err(|e| e.to_string())?;
    let mut changed = false;
    for (header, body) in done {
        changed |= match (ch.channel_type, dir) {
            (ChannelType::CURSOR, Direction::ServerToClient) => pointer.cursor_message(now, header.msg_type, &body),
            (ChannelType::MAIN, Direction::ServerToClient) => pointer.main_message(now, header.msg_type, &body),
            (ChannelType::INPUTS, Direction::ClientToServer) => pointer.inputs_message(header.msg_type, &body),
            _ => false,
        };
    }
    Ok(changed)
}

/// Assembles whole messages from a chunk and applies them.
fn feed(ch: &mut Channel, dir: Direction, _at: SystemTime, bytes: &[u8]) -> Result<(), String> {
    let Some(assemblers) = &mut ch.assemblers else { return Ok(()) };
    let done = assemblers[dir.index()].feed(bytes).map_err(|e| e.to_string())?;
    for (header, body) in done {
        if dir == Direction::ClientToServer {
            ch.renderer.client_message(header.msg_type, &body);
            continue;
        }
        if header.sub_list != 0 {
            super::offline::apply_sub_list(&mut ch.renderer, &body, header.sub_list);
        }
        // Every draw on the primary surface (and MARK, which spice-server
        // sends once the first picture is whole) is a change; frames are
        // handed on at most every FRAME_INTERVAL, the last one always.
        let ev = ch.renderer.server_message(header.msg_type, &body);
        if ev != RenderEvent::None {
            ch.dirty = true;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::report::ChannelReport;

    /// Frames handed on: (display, pixel at (5, 5)); reports by consumer.
    #[derive(Debug, Default)]
    struct Seen {
        frames: Mutex<Vec<(u8, u32)>>,
        reports: Mutex<Vec<(&'static str, serde_json::Value)>>,
        done: AtomicBool,
    }

    struct Sink(Arc<Seen>);

    impl FrameSink for Sink {
        fn frame(&mut self, channel_id: u8, _at: SystemTime, surface: &Surface) {
            let px = surface.data[5 * surface.width as usize + 5];
            self.0.frames.lock().unwrap().push((channel_id, px));
        }
        fn close(&mut self, _channel_id: u8) -> Option<serde_json::Value> {
            None
        }
    }

    impl Reports for Seen {
        fn channel_opened(&self, _key: ChannelKey, _report: Box<ChannelReport>) {}
        fn channel_closed(&self, _key: ChannelKey, _report: Box<ChannelReport>) {}
        fn consumer_report(&self, _key: ChannelKey, consumer: &'static str, report: serde_json::Value) {
            self.reports.lock().unwrap().push((consumer, report));
        }
        fn consumer_done(&self, _consumer: &'static str) {
            self.done.store(true, Ordering::SeqCst);
        }
        fn session_ended(&self, _at: OffsetDateTime, _consumers: usize) {}
    }

    fn mini(ty: u16, body: &[u8]) -> Vec<u8> {
        let mut v = ty.to_le_bytes().to_vec();
        v.extend((body.len() as u32).to_le_bytes());
        v.extend_from_slice(body);
        v
    }

    /// A 16x16 primary surface, then a 2x2 opaque white pointer at (4, 4)
    /// (hot spot (0, 0)): the frames carry it only with `cursor`.
    fn run(cursor: bool) -> Arc<Seen> {
        let seen = Arc::new(Seen::default());
        let reports: Arc<dyn Reports> = seen.clone();
        let (sink, handle) = spawn(1, reports, Some(Box::new(Sink(seen.clone()))), 1 << 20, cursor, None).unwrap();
        let now = SystemTime::now();
        let send = |key: ChannelKey, dir: Direction, bytes: Vec<u8>| {
            sink.offer(TapEvent::Data { key, dir, at: now, bytes: Bytes::from(bytes) }).unwrap();
        };
        for (key, channel_type) in [(1, ChannelType::DISPLAY), (2, ChannelType::CURSOR)] {
            sink.offer(TapEvent::Open { key, channel_type, channel_id: 0, at: now }).unwrap();
            sink.offer(TapEvent::StartMessages { key, kind: Some(HeaderKind::Mini) }).unwrap();
        }
        let create: Vec<u8> = [0u32, 16, 16, 32, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
        send(1, Direction::ServerToClient, [mini(314, &create), mini(102, &[])].concat());
        std::thread::sleep(FRAME_INTERVAL * 3);
        let mut set = vec![4, 0, 4, 0, 1, 0, 0];
        set.extend(0u64.to_le_bytes());
        set.extend([0, 2, 0, 2, 0, 0, 0, 0, 0]);
        set.extend([0xffu8; 16]);
        send(2, Direction::ServerToClient, [mini(103, &set), mini(104, &[5, 0, 5, 0])].concat());
        std::thread::sleep(FRAME_INTERVAL * 3);
        sink.offer(TapEvent::Close { key: 2, first: Direction::ClientToServer, at: now }).unwrap();
        sink.end(OffsetDateTime::now_utc());
        handle.join().unwrap();
        assert!(seen.done.load(Ordering::SeqCst));
        seen
    }

    #[test]
    fn the_pointer_is_drawn_over_the_frames_unless_turned_off() {
        let seen = run(true);
        let frames = seen.frames.lock().unwrap().clone();
        assert_eq!(frames.first(), Some(&(0, 0)), "the surface alone: {frames:?}");
        assert_eq!(frames.last(), Some(&(0, 0x00ff_ffff)), "then with the pointer over (5, 5): {frames:?}");
        let reports = seen.reports.lock().unwrap();
        let (_, cursor) = reports.iter().find(|(c, _)| *c == "cursor").expect("a cursor report");
        assert_eq!(cursor["messages"]["SPICE_MSG_CURSOR_MOVE"], 1, "{cursor}");
        assert_eq!(cursor["shapes"][0]["size"], serde_json::json!([2, 2]), "{cursor}");

        let seen = run(false);
        let frames = seen.frames.lock().unwrap().clone();
        assert!(frames.iter().all(|&(_, px)| px == 0), "--no-video-cursor: {frames:?}");
        assert!(seen.reports.lock().unwrap().iter().any(|(c, _)| *c == "cursor"), "still reported");
    }
}

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
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

use super::canvas::Surface;
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
    Open { key: ChannelKey, channel_id: u8 },
    Link { key: ChannelKey, kind: Option<HeaderKind> },
    Data { key: ChannelKey, dir: Direction, at: SystemTime, bytes: Bytes },
    Close { key: ChannelKey },
    Stop { reason: String },
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

    /// A display channel joins the session.
    fn open(&self, key: ChannelKey, channel_id: u8) {
        self.control(Input::Open { key, channel_id });
    }

    /// The channel's link stage ended with this header kind.
    fn link(&self, key: ChannelKey, kind: Option<HeaderKind>) {
        self.control(Input::Link { key, kind });
    }

    /// Forwarded bytes of a display channel. Past the budget the renderer
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

    /// A display channel closed.
    fn close(&self, key: ChannelKey) {
        self.control(Input::Close { key });
    }
}

impl Consumer for RenderSink {
    fn name(&self) -> &'static str {
        "render"
    }

    fn wants(&self, channel_type: ChannelType) -> bool {
        channel_type == ChannelType::DISPLAY
    }

    /// Never refuses: past its budget the renderer stops for the whole
    /// session (a skipped message would desynchronise the shared caches),
    /// which it records itself.
    fn offer(&self, event: TapEvent) -> Result<(), String> {
        match event {
            TapEvent::Open { key, channel_id, .. } => self.open(key, channel_id),
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
/// `frames`; at most `budget` bytes wait in the queue.
///
/// # Errors
/// The error of spawning the thread.
pub fn spawn(
    session_id: u32,
    reports: Arc<dyn Reports>,
    frames: Option<Box<dyn FrameSink>>,
    budget: usize,
) -> std::io::Result<(RenderSink, JoinHandle<()>)> {
    let (tx, rx) = channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let sink = RenderSink { tx, queued: queued.clone(), stopped: Arc::new(AtomicBool::new(false)), budget };
    let handle = std::thread::Builder::new().name(format!("render-{session_id}")).spawn(move || {
        let mut t =
            RenderThread { reports, frames, shared: Shared::default(), channels: HashMap::new(), stopped: None };
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

struct RenderThread {
    reports: Arc<dyn Reports>,
    frames: Option<Box<dyn FrameSink>>,
    shared: Shared,
    channels: HashMap<ChannelKey, Channel>,
    stopped: Option<String>,
}

impl RenderThread {
    fn run(&mut self, rx: Receiver<Input>, queued: &AtomicUsize) {
        loop {
            let ev = match rx.recv_timeout(FRAME_INTERVAL) {
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
                let keys: Vec<_> = self.channels.keys().copied().collect();
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
            Input::Open { key, channel_id } => {
                let renderer = DisplayRenderer::with_shared(self.shared.clone());
                let ch = Channel { channel_id, assemblers: None, renderer, dirty: false, last_frame: None };
                self.channels.insert(key, ch);
            }
            Input::Link { key, kind } => {
                if let (Some(ch), Some(kind)) = (self.channels.get_mut(&key), kind) {
                    ch.assemblers = Some([MessageAssembler::new(kind), MessageAssembler::new(kind)]);
                }
            }
            Input::Data { key, dir, at, bytes } => {
                if self.stopped.is_some() {
                    return;
                }
                if let Some(ch) = self.channels.get_mut(&key)
                    && let Err(e) = feed(ch, dir, at, &bytes)
                {
                    tracing::warn!(error = %e, "renderer stopped for this session");
                    self.stopped = Some(e);
                }
            }
            Input::Close { key } => self.close(key),
            Input::Stop { reason } => {
                self.stopped = Some(reason);
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
                frames.frame(ch.channel_id, SystemTime::now(), surface);
            }
            ch.dirty = false;
            ch.last_frame = Some(now);
        }
    }

    fn close(&mut self, key: ChannelKey) {
        self.flush_frames_of(key);
        let Some(ch) = self.channels.remove(&key) else { return };
        let video = self.frames.as_mut().and_then(|f| f.close(ch.channel_id));
        let report = RenderReport { stats: ch.renderer.stats, stopped: self.stopped.clone(), video };
        match serde_json::to_value(&report) {
            Ok(v) => self.reports.consumer_report(key, "render", v),
            Err(e) => tracing::error!(error = %e, "render report not serialisable"),
        }
    }
}

impl RenderThread {
    /// Hands on a closing display's last change, whatever the interval.
    fn flush_frames_of(&mut self, key: ChannelKey) {
        let (Some(frames), Some(ch)) = (self.frames.as_deref_mut(), self.channels.get_mut(&key)) else { return };
        if ch.dirty
            && let Some(surface) = ch.renderer.primary()
        {
            frames.frame(ch.channel_id, SystemTime::now(), surface);
            ch.dirty = false;
        }
    }
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

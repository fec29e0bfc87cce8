//! Sessions: channel connections grouped by SPICE session id.
//!
//! A client opens its main channel with `connection_id` 0; the server
//! assigns the session id in `SPICE_MSG_MAIN_INIT`, and every further
//! channel of that client carries it as the `connection_id` of its
//! `SpiceLinkMess` (spice-gtk `spice-channel.c`, spice-server `reds.c`).
//! The registry maps ids to live [`Session`]s; a session ends when its last
//! channel closes. With capture on, each session owns a folder
//! `DIR/<UTC start>-<session id>/` and a writer thread.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use time::OffsetDateTime;
use time::macros::format_description;

use crate::capture::writer;
use crate::limits::{PORT_QUEUE_BYTES, RENDER_QUEUE_BYTES, USBREDIR_QUEUE_BYTES};
use crate::report::{SessionReport, rfc3339};
use crate::tap::{ChannelKey, Consumer, Reports, SessionTap};

/// One SPICE session as seen by the proxy.
#[derive(Debug)]
pub struct Session {
    /// Session id (0 for a connection that never learned one).
    pub id: u32,
    /// When its first channel was accepted.
    pub started: OffsetDateTime,
    /// The session's tap and its consumers (capture, renderer), when
    /// capture is on and the writer started.
    pub tap: Option<SessionTap>,
    /// Its capture folder, when recorded.
    pub folder: Option<PathBuf>,
    /// Its render thread, when rendered.
    pub render: Option<crate::render::live::RenderSink>,
    /// Its channels open now, with their byte counters.
    pub channels: Mutex<Vec<Arc<LiveChannel>>>,
    /// The client's address (of the first channel).
    pub client: String,
}

/// A channel of a live session, with the bytes it forwarded so far.
#[derive(Debug)]
pub struct LiveChannel {
    /// Its connection.
    pub key: ChannelKey,
    /// Channel type.
    pub channel_type: crate::protocol::ChannelType,
    /// Channel id.
    pub channel_id: u8,
    /// Bytes forwarded client to server and server to client after the
    /// link stage.
    pub bytes: [Arc<AtomicU64>; 2],
}

/// A live channel as `--http`'s API lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LiveChannelView {
    /// `display`, ...
    #[serde(rename = "type")]
    pub channel_type: String,
    /// Channel id.
    pub channel_id: u8,
    /// Bytes so far, client to server.
    pub bytes_c2s: u64,
    /// Bytes so far, server to client.
    pub bytes_s2c: u64,
}

/// A live session as `--http`'s API lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LiveSession {
    /// Session id.
    pub session_id: u32,
    /// When its first channel was accepted (RFC 3339, UTC).
    pub start: String,
    /// The client's address.
    pub client_address: String,
    /// Channels open now.
    pub open_channels: usize,
    /// The capture folder's name (the session's id in the API), if recorded.
    pub folder: Option<String>,
    /// Its open channels with their bytes so far.
    pub channels: Vec<LiveChannelView>,
}

#[derive(Debug, Default)]
struct Entry {
    session: Option<Arc<Session>>,
    open_channels: usize,
}

/// The live sessions of one proxy.
#[derive(Debug)]
pub struct Sessions {
    capture_dir: Option<PathBuf>,
    capture_budget: usize,
    upstream: String,
    upstream_insecure: bool,
    video: Option<crate::video::VideoConfig>,
    redact_paths: bool,
    video_cursor: bool,
    metrics: Arc<crate::metrics::Metrics>,
    live: Mutex<HashMap<u32, Entry>>,
    /// Sessions with an id that have ended (`--exit-after-sessions`).
    ended: tokio::sync::watch::Sender<usize>,
    /// Every session folder created, in order (when `list_folders`).
    folders: Mutex<Vec<PathBuf>>,
    list_folders: bool,
    writers: Arc<Mutex<Vec<JoinHandle<()>>>>,
    next_key: AtomicU64,
}

impl Sessions {
    /// A registry that records into `capture_dir` when given, with at most
    /// `capture_budget` bytes queued per session. `upstream` and
    /// `upstream_insecure` go into every `session.json`.
    pub fn new(capture_dir: Option<PathBuf>, capture_budget: usize, upstream: String, upstream_insecure: bool) -> Self {
        Self {
            capture_dir,
            capture_budget,
            upstream,
            upstream_insecure,
            video: None,
            redact_paths: false,
            video_cursor: true,
            metrics: Arc::new(crate::metrics::Metrics::new()),
            live: Mutex::new(HashMap::new()),
            ended: tokio::sync::watch::Sender::new(0),
            folders: Mutex::new(Vec::new()),
            list_folders: true,
            writers: Arc::new(Mutex::new(Vec::new())),
            next_key: AtomicU64::new(1),
        }
    }

    /// Records each display's primary surface as video with `config`
    /// (capture only).
    pub fn with_video(mut self, config: Option<crate::video::VideoConfig>) -> Self {
        self.video = config;
        self
    }

    /// Draws the mouse pointer over the video's frames (the default).
    pub fn with_video_cursor(mut self, cursor: bool) -> Self {
        self.video_cursor = cursor;
        self
    }

    /// Counts sessions, renderer stops and video frames in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Whether [`Sessions::folders`] lists the session folders (the
    /// default); off, nothing is kept per ended session.
    pub fn with_folder_list(mut self, list: bool) -> Self {
        self.list_folders = list;
        self
    }

    /// Replaces webdav request paths in `session.json` by their hash.
    pub fn with_redact_paths(mut self, redact: bool) -> Self {
        self.redact_paths = redact;
        self
    }

    /// The number of ended sessions that had a session id (a connection
    /// that never learned one does not count), kept current.
    pub fn ended_sessions(&self) -> tokio::sync::watch::Receiver<usize> {
        self.ended.subscribe()
    }

    /// Every session folder created so far, in order (empty when turned
    /// off by [`Sessions::with_folder_list`]).
    pub fn folders(&self) -> Vec<PathBuf> {
        self.folders.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Whether capture is on.
    pub fn capturing(&self) -> bool {
        self.capture_dir.is_some()
    }

    /// The live sessions with an id, newest first.
    pub fn live(&self) -> Vec<LiveSession> {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<(OffsetDateTime, LiveSession)> = live
            .values()
            .filter_map(|e| {
                let s = e.session.as_ref()?;
                Some((
                    s.started,
                    LiveSession {
                        session_id: s.id,
                        start: rfc3339(s.started),
                        client_address: s.client.clone(),
                        open_channels: e.open_channels,
                        folder: s.folder.as_ref().and_then(|f| f.file_name()).map(|n| n.to_string_lossy().into_owned()),
                        channels: s
                            .channels
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .iter()
                            .map(|c| LiveChannelView {
                                channel_type: c.channel_type.name().into_owned(),
                                channel_id: c.channel_id,
                                bytes_c2s: c.bytes[0].load(Ordering::Relaxed),
                                bytes_s2c: c.bytes[1].load(Ordering::Relaxed),
                            })
                            .collect(),
                    },
                ))
            })
            .collect();
        out.sort_by_key(|s| std::cmp::Reverse(s.0));
        out.into_iter().map(|(_, s)| s).collect()
    }

    /// The render thread of the live session recorded in folder `folder`
    /// (its name).
    pub fn live_render(&self, folder: &str) -> Option<crate::render::live::RenderSink> {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.values().filter_map(|e| e.session.as_ref()).find_map(|s| {
            let name = s.folder.as_ref()?.file_name()?;
            (name == folder).then(|| s.render.clone()).flatten()
        })
    }

    /// Bytes waiting in the live sessions' capture queues.
    pub fn capture_queue_bytes(&self) -> u64 {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.values().filter_map(|e| e.session.as_ref()?.tap.as_ref()).map(|t| t.queued_bytes("capture") as u64).sum()
    }

    /// The capture folder, if recording.
    pub fn capture_dir(&self) -> Option<&std::path::Path> {
        self.capture_dir.as_deref()
    }

    /// A fresh key for a channel connection.
    pub fn next_key(&self) -> ChannelKey {
        self.next_key.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds a channel to session `id`, creating the session when it is not
    /// live (then the flag is `true`). Id 0 always makes a session of its
    /// own (a connection that never learned its session id).
    pub fn join(&self, id: u32, client: &str, started: OffsetDateTime) -> (Arc<Session>, bool) {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        if id != 0
            && let Some(entry) = live.get_mut(&id)
            && let Some(s) = &entry.session
        {
            entry.open_channels += 1;
            return (s.clone(), false);
        }
        let session = Arc::new(self.start(id, client, started));
        self.metrics.session_started();
        if id != 0 {
            live.insert(id, Entry { session: Some(session.clone()), open_channels: 1 });
        }
        (session, true)
    }

    /// Removes a channel from `session`; the last one out ends it (and gets
    /// `true`).
    pub fn leave(&self, session: &Arc<Session>) -> bool {
        let ended = if session.id == 0 {
            true
        } else {
            let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
            match live.get_mut(&session.id) {
                Some(entry) if entry.session.as_ref().is_some_and(|s| Arc::ptr_eq(s, session)) => {
                    entry.open_channels = entry.open_channels.saturating_sub(1);
                    let last = entry.open_channels == 0;
                    if last {
                        live.remove(&session.id);
                    }
                    last
                }
                _ => false,
            }
        };
        if ended {
            tracing::info!(session_id = session.id, "session ended");
            self.metrics.session_ended();
            if session.id != 0 {
                self.ended.send_modify(|n| *n += 1);
            }
            // session.json is written once every consumer reported done.
            if let Some(tap) = &session.tap {
                tap.end(OffsetDateTime::now_utc());
            }
        }
        ended
    }

    fn start(&self, id: u32, client: &str, started: OffsetDateTime) -> Session {
        tracing::info!(session_id = id, client, "session started");
        let mut session_dir = None;
        let capture = self.capture_dir.as_ref().and_then(|root| {
            let stamp = started
                .format(format_description!("[year][month][day]T[hour][minute][second].[subsecond digits:3]Z"))
                .unwrap_or_else(|_| started.unix_timestamp().to_string());
            let dir = root.join(format!("{stamp}-{id}"));
            session_dir = Some(dir.clone());
            if self.list_folders {
                self.folders.lock().unwrap_or_else(PoisonError::into_inner).push(dir.clone());
            }
            let report = SessionReport {
                session_id: id,
                start: rfc3339(started),
                end: None,
                client_address: client.to_string(),
                upstream_address: self.upstream.clone(),
                upstream_insecure: self.upstream_insecure,
                channels: Vec::new(),
            };
            match writer::spawn(dir.clone(), report, self.capture_budget) {
                Ok((sink, handle)) => {
                    tracing::info!(session_id = id, dir = %dir.display(), "recording session");
                    let mut writers = self.writers.lock().unwrap_or_else(PoisonError::into_inner);
                    writers.retain(|h| !h.is_finished());
                    writers.push(handle);
                    Some(sink)
                }
                Err(e) => {
                    tracing::error!(session_id = id, error = %e, "cannot start capture writer; session not recorded");
                    None
                }
            }
        });
        let mut render = None;
        let tap = capture.map(|sink| {
            let reports: Arc<dyn Reports> = Arc::new(sink.clone());
            let mut consumers: Vec<Arc<dyn Consumer>> = vec![Arc::new(sink)];
            let frames = match (&self.video, &session_dir) {
                (Some(config), Some(dir)) => Some(Box::new(crate::render::video_sink::VideoSink::new(
                    dir.clone(),
                    config.clone(),
                    std::time::Instant::now(),
                )) as Box<dyn crate::render::live::FrameSink>),
                _ => None,
            };
            match crate::render::live::spawn(
                id,
                reports.clone(),
                frames,
                RENDER_QUEUE_BYTES,
                self.video_cursor,
                Some(self.metrics.clone()),
            ) {
                Ok((sink, handle)) => {
                    self.writers.lock().unwrap_or_else(PoisonError::into_inner).push(handle);
                    render = Some(sink.clone());
                    consumers.push(Arc::new(sink));
                }
                Err(e) => {
                    tracing::error!(session_id = id, error = %e, "cannot start the renderer; session not rendered");
                }
            }
            if let Some(dir) = &session_dir {
                // Their threads start with the session's first usbredir or
                // port channel.
                let threads = self.writers.clone();
                let usbredir = crate::port::usbredir::sink(
                    id,
                    dir.clone(),
                    reports.clone(),
                    USBREDIR_QUEUE_BYTES,
                    threads.clone(),
                );
                consumers.push(Arc::new(usbredir));
                let port = crate::port::webdav::sink(
                    id,
                    dir.clone(),
                    reports.clone(),
                    PORT_QUEUE_BYTES,
                    self.redact_paths,
                    threads,
                );
                consumers.push(Arc::new(port));
            }
            SessionTap::new(reports, consumers)
        });
        Session {
            id,
            started,
            tap,
            folder: session_dir,
            client: client.to_string(),
            render,
            channels: Mutex::new(Vec::new()),
        }
    }

    /// Waits for every capture writer to finish its files. Call after all
    /// channel tasks ended.
    pub fn join_writers(&self) {
        let handles = std::mem::take(&mut *self.writers.lock().unwrap_or_else(PoisonError::into_inner));
        for h in handles {
            if h.join().is_err() {
                tracing::error!("a capture writer panicked");
            }
        }
    }
}

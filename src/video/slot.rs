//! The "latest frame" slot between the caller and the encoder thread, and the
//! counters both sides update.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{Frame, VideoFile, VideoStats};

/// What the encoder thread is asked to do next.
pub(super) enum Request {
    /// Encode this frame.
    Frame(Frame),
    /// Finish the recording, its last frame ending at this time (`None`: one
    /// frame interval after the last picture).
    Finish(Option<Duration>),
}

#[derive(Default)]
struct SlotState {
    pending: Option<Frame>,
    finish: Option<Option<Duration>>,
    /// The encoder thread has exited (finished or failed): nobody takes frames.
    closed: bool,
}

/// State shared by a [`VideoRecorder`](super::VideoRecorder) and its thread.
#[derive(Default)]
pub(super) struct Shared {
    state: Mutex<SlotState>,
    /// Wakes the encoder thread: a frame or a finish request arrived.
    work: Condvar,
    /// Wakes `push`: the slot was emptied.
    space: Condvar,
    offered: AtomicU64,
    encoded: AtomicU64,
    dropped: AtomicU64,
    extra: AtomicU64,
    bytes: AtomicU64,
    failed: AtomicBool,
    file: Mutex<Option<VideoFile>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        // A panic while holding this lock leaves the state consistent (it is
        // only ever swapped), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn offer(&self, frame: Frame) {
        self.offered.fetch_add(1, Ordering::Relaxed);
        let replaced = {
            let mut state = self.lock();
            if state.closed || state.finish.is_some() {
                Some(frame)
            } else {
                let replaced = state.pending.replace(frame);
                self.work.notify_one();
                replaced
            }
        };
        // Dropped outside the lock: freeing a large frame takes a while.
        if replaced.is_some() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn push(&self, frame: Frame) {
        self.offered.fetch_add(1, Ordering::Relaxed);
        let mut state = self.lock();
        while state.pending.is_some() && !state.closed {
            state = self.space.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        if state.closed || state.finish.is_some() {
            drop(state);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        state.pending = Some(frame);
        self.work.notify_one();
    }

    pub(super) fn request_finish(&self, end: Option<Duration>) {
        let mut state = self.lock();
        state.finish.get_or_insert(end);
        self.work.notify_one();
    }

    /// Waits for a request, at most until `timeout` has passed (`None`:
    /// without limit). A pending frame comes before a finish request, so
    /// the newest frame is never lost. `None` on timeout.
    pub(super) fn wait(&self, timeout: Option<Duration>) -> Option<Request> {
        let deadline = timeout.map(|timeout| Instant::now() + timeout);
        let mut state = self.lock();
        loop {
            if let Some(frame) = state.pending.take() {
                self.space.notify_all();
                return Some(Request::Frame(frame));
            }
            if let Some(end) = state.finish {
                return Some(Request::Finish(end));
            }
            match deadline {
                None => state = self.work.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    state = self.work.wait_timeout(state, left).unwrap_or_else(|poisoned| poisoned.into_inner()).0;
                }
            }
        }
    }

    /// The encoder thread is gone: frames still in the slot, and any later
    /// ones, are dropped.
    pub(super) fn close(&self, failed: bool) {
        if failed {
            self.failed.store(true, Ordering::Relaxed);
        }
        let leftover = {
            let mut state = self.lock();
            state.closed = true;
            self.space.notify_all();
            state.pending.take()
        };
        if leftover.is_some() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn count_encoded(&self) {
        self.encoded.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn count_extra(&self) {
        self.extra.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// Describes the file as it now is.
    pub(super) fn set_file(&self, file: VideoFile) {
        *self.file.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(file);
    }

    pub(super) fn file(&self) -> Option<VideoFile> {
        self.file.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    pub(super) fn stats(&self) -> VideoStats {
        VideoStats {
            frames_offered: self.offered.load(Ordering::Relaxed),
            frames_encoded: self.encoded.load(Ordering::Relaxed),
            frames_dropped: self.dropped.load(Ordering::Relaxed),
            extra_samples: self.extra.load(Ordering::Relaxed),
            bytes_written: self.bytes.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

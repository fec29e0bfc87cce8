//! A buffered file flushed to disk at least once a second, so a crash or a
//! `kill -9` loses at most that much of a recording (pcaps of every kind).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often a recording file is flushed at the latest.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// A `BufWriter<File>` (256 KiB) that flushes on a write once
/// [`FLUSH_INTERVAL`] has passed since the last flush.
#[derive(Debug)]
pub struct FlushingFile {
    inner: Arc<Mutex<BufWriter<File>>>,
    last_flush: Instant,
}

/// A second handle on a [`FlushingFile`]'s buffer, so the thread that
/// owns the writer wrapping it (a pcap writer) can flush it when it goes
/// idle: a channel that goes quiet would otherwise keep its last bytes
/// in memory until its next write.
#[derive(Debug, Clone)]
pub struct FlushHandle(Arc<Mutex<BufWriter<File>>>);

impl FlushHandle {
    /// Writes the buffered bytes to the file.
    ///
    /// # Errors
    /// The error of the write (a full disk).
    pub fn flush(&self) -> io::Result<()> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).flush()
    }
}

impl FlushingFile {
    /// Creates (or truncates) the file at `path`.
    ///
    /// # Errors
    /// The error of creating the file.
    pub fn create(path: &Path) -> io::Result<Self> {
        let file = File::create(path)?;
        let inner = Arc::new(Mutex::new(BufWriter::with_capacity(256 * 1024, file)));
        Ok(Self { inner, last_flush: Instant::now() })
    }

    /// A handle that flushes this file's buffer from elsewhere.
    pub fn flush_handle(&self) -> FlushHandle {
        FlushHandle(self.inner.clone())
    }
}

impl Write for FlushingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let n = inner.write(buf)?;
        if self.last_flush.elapsed() >= FLUSH_INTERVAL {
            inner.flush()?;
            self.last_flush = Instant::now();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.last_flush = Instant::now();
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).flush()
    }
}

//! A buffered file flushed to disk at least once a second, so a crash or a
//! `kill -9` loses at most that much of a recording (pcaps of every kind).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// How often a recording file is flushed at the latest.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// A `BufWriter<File>` (256 KiB) that flushes on a write once
/// [`FLUSH_INTERVAL`] has passed since the last flush.
#[derive(Debug)]
pub struct FlushingFile {
    inner: BufWriter<File>,
    last_flush: Instant,
}

impl FlushingFile {
    /// Creates (or truncates) the file at `path`.
    ///
    /// # Errors
    /// The error of creating the file.
    pub fn create(path: &Path) -> io::Result<Self> {
        let file = File::create(path)?;
        Ok(Self { inner: BufWriter::with_capacity(256 * 1024, file), last_flush: Instant::now() })
    }
}

impl Write for FlushingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if self.last_flush.elapsed() >= FLUSH_INTERVAL {
            self.inner.flush()?;
            self.last_flush = Instant::now();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.last_flush = Instant::now();
        self.inner.flush()
    }
}

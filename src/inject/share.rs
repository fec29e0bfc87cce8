//! The folder spicetap shares with guests (`--share-dir`): dav-server's
//! WebDAV handler over its local filesystem backend, behind
//! [`ConfinedFs`], which holds every operation inside the shared folder.
//!
//! The WebDAV protocol is the library's; spicetap's part is the policy:
//!
//! - Nothing outside the folder: dav-server already refuses `..` above
//!   the root (also percent-encoded) and `%2f` inside a segment; on top of
//!   that every path is resolved on disk and must stay under the folder's
//!   canonical path, so a symlink inside that points outside is refused
//!   (403) and left out of listings.
//! - Read-only shares (`--share-dir-ro`) allow only GET, HEAD, OPTIONS and
//!   PROPFIND (`DavMethodSet::WEBDAV_RO`), and the filesystem refuses
//!   every change as well.
//! - A PUT writes a temporary file (`.spicetap-put-<random>`, never
//!   listed) that is renamed over the target only once the whole body
//!   arrived; a connection or session dropped mid-way leaves nothing
//!   behind. Partial PUTs (`Content-Range`, `X-Update-Range`) are refused.

use std::io::SeekFrom;
use std::path::{Component, Path, PathBuf};

use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavFileSystem, DavMetaData, FsError, FsFuture, FsResult, FsStream, OpenOptions, ReadDirMeta,
};
use dav_server::localfs::LocalFs;
use dav_server::memls::MemLs;
use dav_server::{DavHandler, DavMethodSet};
use futures_util::{FutureExt, StreamExt};

/// Name prefix of PUT's temporary files.
pub const TEMP_PREFIX: &str = ".spicetap-put-";

/// The folder to share.
#[derive(Debug, Clone)]
pub struct ShareConfig {
    /// The folder.
    pub dir: PathBuf,
    /// Allow only reads (`--share-dir-ro`).
    pub read_only: bool,
    /// The server's SPICE password (`--upstream-password-file`), if it has
    /// one.
    pub password: Option<Vec<u8>>,
}

impl ShareConfig {
    /// Checks the folder exists and is a directory.
    ///
    /// # Errors
    /// A message saying what is wrong with it.
    pub fn check(&self) -> Result<(), String> {
        match std::fs::metadata(&self.dir) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(format!("--share-dir {}: not a directory", self.dir.display())),
            Err(e) => Err(format!("--share-dir {}: {e}", self.dir.display())),
        }
    }

    /// The WebDAV handler serving the folder.
    ///
    /// # Errors
    /// The folder cannot be resolved.
    pub fn handler(&self) -> std::io::Result<DavHandler> {
        let fs = ConfinedFs::new(&self.dir, self.read_only)?;
        let methods = if self.read_only { DavMethodSet::WEBDAV_RO } else { DavMethodSet::WEBDAV_RW };
        Ok(DavHandler::builder()
            .filesystem(Box::new(fs))
            .locksystem(MemLs::new())
            .methods(methods)
            .hide_symlinks(true)
            .build_handler())
    }
}

/// dav-server's `LocalFs` held inside one folder.
#[derive(Clone)]
pub struct ConfinedFs {
    root: PathBuf,
    inner: Box<LocalFs>,
    read_only: bool,
}

impl ConfinedFs {
    /// Serves `dir` (resolved to its canonical path).
    ///
    /// # Errors
    /// `dir` cannot be resolved.
    pub fn new(dir: &Path, read_only: bool) -> std::io::Result<Self> {
        let root = dir.canonicalize()?;
        let inner = LocalFs::new(&root, false, false, false);
        Ok(Self { root, inner, read_only })
    }

    /// The path on disk of `path`, if it stays inside the folder: only
    /// plain segments, no temporary file, and the deepest part that exists
    /// resolves (symlinks followed) under the folder.
    fn resolve(&self, path: &DavPath) -> FsResult<PathBuf> {
        let rel = path.as_rel_ospath();
        let mut full = self.root.clone();
        for c in rel.components() {
            match c {
                Component::Normal(s) => {
                    if s.to_string_lossy().starts_with(TEMP_PREFIX) {
                        return Err(FsError::NotFound);
                    }
                    full.push(s);
                }
                Component::CurDir => {}
                _ => return Err(FsError::Forbidden),
            }
        }
        let mut existing = full.as_path();
        loop {
            if existing.symlink_metadata().is_ok() {
                break;
            }
            existing = existing.parent().ok_or(FsError::Forbidden)?;
        }
        let real = existing.canonicalize().map_err(|_| FsError::Forbidden)?;
        if !real.starts_with(&self.root) {
            tracing::warn!(path = %full.display(), "share: refused a path that leads outside the shared folder");
            return Err(FsError::Forbidden);
        }
        Ok(full)
    }

    fn writable(&self) -> FsResult<()> {
        if self.read_only { Err(FsError::Forbidden) } else { Ok(()) }
    }

    fn temp_path(path: &DavPath) -> FsResult<DavPath> {
        let parent = path.parent().as_url_string();
        let name = format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>());
        DavPath::new(&format!("{}/{name}", parent.trim_end_matches('/'))).map_err(|_| FsError::GeneralFailure)
    }
}

impl DavFileSystem for ConfinedFs {
    fn open<'a>(&'a self, path: &'a DavPath, options: OpenOptions) -> FsFuture<'a, Box<dyn DavFile>> {
        async move {
            let full = self.resolve(path)?;
            let writes = options.write || options.append || options.create || options.create_new || options.truncate;
            if !writes {
                return self.inner.open(path, options).await;
            }
            self.writable()?;
            if options.append || !options.truncate {
                // Partial updates would change the file in place.
                return Err(FsError::Forbidden);
            }
            let exists = full.symlink_metadata().is_ok();
            if exists && options.create_new {
                return Err(FsError::Exists);
            }
            if !exists && !options.create && !options.create_new {
                return Err(FsError::NotFound);
            }
            if full.is_dir() {
                return Err(FsError::Forbidden);
            }
            let temp = Self::temp_path(path)?;
            let temp_full = self.root.join(temp.as_rel_ospath());
            let mut oo = options;
            oo.read = false;
            oo.write = true;
            oo.truncate = false;
            oo.create = false;
            oo.create_new = true;
            let file = self.inner.open(&temp, oo).await?;
            Ok(Box::new(RenameOnFlush { file, temp: temp_full, target: full, done: false }) as Box<dyn DavFile>)
        }
        .boxed()
    }

    fn read_dir<'a>(&'a self, path: &'a DavPath, meta: ReadDirMeta) -> FsFuture<'a, FsStream<Box<dyn DavDirEntry>>> {
        async move {
            let dir = self.resolve(path)?;
            let root = self.root.clone();
            let entries = self.inner.read_dir(path, meta).await?;
            let kept = entries.filter(move |e| {
                let keep = match e {
                    Ok(e) => {
                        let name = String::from_utf8_lossy(&e.name()).into_owned();
                        !name.starts_with(TEMP_PREFIX)
                            && dir.join(&name).canonicalize().is_ok_and(|real| real.starts_with(&root))
                    }
                    Err(_) => true,
                };
                std::future::ready(keep)
            });
            Ok(Box::pin(kept) as FsStream<Box<dyn DavDirEntry>>)
        }
        .boxed()
    }

    fn metadata<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, Box<dyn DavMetaData>> {
        async move {
            self.resolve(path)?;
            self.inner.metadata(path).await
        }
        .boxed()
    }

    fn symlink_metadata<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, Box<dyn DavMetaData>> {
        async move {
            self.resolve(path)?;
            self.inner.symlink_metadata(path).await
        }
        .boxed()
    }

    fn create_dir<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            self.writable()?;
            self.resolve(path)?;
            self.inner.create_dir(path).await
        }
        .boxed()
    }

    fn remove_dir<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            self.writable()?;
            self.resolve(path)?;
            self.inner.remove_dir(path).await
        }
        .boxed()
    }

    fn remove_file<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            self.writable()?;
            self.resolve(path)?;
            self.inner.remove_file(path).await
        }
        .boxed()
    }

    fn rename<'a>(&'a self, from: &'a DavPath, to: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            self.writable()?;
            self.resolve(from)?;
            self.resolve(to)?;
            self.inner.rename(from, to).await
        }
        .boxed()
    }

    fn copy<'a>(&'a self, from: &'a DavPath, to: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            self.writable()?;
            self.resolve(from)?;
            self.resolve(to)?;
            self.inner.copy(from, to).await
        }
        .boxed()
    }

    fn get_quota(&self) -> FsFuture<'_, (u64, Option<u64>)> {
        self.inner.get_quota()
    }
}

/// A PUT's file: written under a temporary name, renamed over the target
/// by `flush` (which dav-server calls once the whole body is written),
/// removed if dropped before.
#[derive(Debug)]
struct RenameOnFlush {
    file: Box<dyn DavFile>,
    temp: PathBuf,
    target: PathBuf,
    done: bool,
}

impl DavFile for RenameOnFlush {
    fn metadata(&mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        self.file.metadata()
    }

    fn write_buf(&mut self, buf: Box<dyn bytes::Buf + Send>) -> FsFuture<'_, ()> {
        self.file.write_buf(buf)
    }

    fn write_bytes(&mut self, buf: bytes::Bytes) -> FsFuture<'_, ()> {
        self.file.write_bytes(buf)
    }

    fn read_bytes(&mut self, count: usize) -> FsFuture<'_, bytes::Bytes> {
        self.file.read_bytes(count)
    }

    fn seek(&mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        self.file.seek(pos)
    }

    fn flush(&mut self) -> FsFuture<'_, ()> {
        async move {
            self.file.flush().await?;
            if !self.done {
                std::fs::rename(&self.temp, &self.target).map_err(|_| FsError::GeneralFailure)?;
                self.done = true;
            }
            Ok(())
        }
        .boxed()
    }
}

impl Drop for RenameOnFlush {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests;

//! The proxy: listeners, one task per channel connection, shutdown.
//!
//! ```text
//! TcpListener ──accept──> channel::serve (task per connection)
//!                            link_stage ─> relay c2s / relay s2c ─> Sessions
//! stop future ──> watch(true) ──> every relay returns ──> capture writers finish
//! ```

pub mod channel;
pub mod io;
pub mod link_stage;
pub mod relay;
pub mod token_link;
pub mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::limits::LINK_TIMEOUT;
use crate::protocol::ChannelType;
use crate::session::Sessions;
use crate::tls::TlsInfo;
use channel::{RequireTls, Shared};
use upstream::Upstream;

/// What the proxy is told to do.
pub struct ProxyConfig {
    /// Addresses to accept plain-TCP SPICE clients on (port 0 picks a free
    /// port).
    pub listen: Vec<SocketAddr>,
    /// Addresses to accept TLS SPICE clients on.
    pub tls_listen: Vec<SocketAddr>,
    /// The client-facing TLS configuration (needed with `tls_listen`).
    pub tls_server: Option<Arc<rustls::ServerConfig>>,
    /// How to reach the SPICE server.
    pub upstream: Arc<Upstream>,
    /// Whether upstream certificates go unchecked (recorded in `session.json`).
    pub upstream_insecure: bool,
    /// Channel types refused on the plain listener with NEED_SECURED.
    pub require_client_tls: RequireTls,
    /// Token mode (`--auth tokens`): spicetap answers the link stage and
    /// routes by token; `None` for passthrough.
    pub tokens: Option<Arc<token_link::TokenAuth>>,
    /// Display caps removed from clients' link messages before they go
    /// upstream (`--stream-codecs`), so the server only streams codecs the
    /// renderer decodes; 0 leaves link messages unchanged.
    pub display_caps_removed: u32,
    /// With capture: record each display as H.264 MP4 with these settings.
    pub video: Option<crate::video::VideoConfig>,
    /// Folder that receives one sub-folder per session, when recording.
    pub capture_dir: Option<PathBuf>,
    /// File that receives `host:port` of the first listener once it accepts.
    pub ready_file: Option<PathBuf>,
    /// Channel types whose messages are logged one by one (target
    /// `spicetap::messages`, level debug).
    pub debug_channels: Vec<ChannelType>,
    /// Most channel connections open at once; more are closed on accept.
    pub max_connections: usize,
    /// Most bytes of traffic queued for one session's capture writer (see
    /// [`crate::limits::CAPTURE_QUEUE_BYTES`]).
    pub capture_queue_bytes: usize,
    /// Hash webdav request paths in `session.json` (`--redact-paths`).
    pub redact_paths: bool,
    /// Keep the list of every session folder created, for a verdict when
    /// the proxy stops (`--result`, `--result-junit`, `--strict`); off, a
    /// long-running proxy keeps nothing per ended session.
    pub list_folders: bool,
    /// Draw the mouse pointer into the video (off: `--no-video-cursor`).
    pub video_cursor: bool,
    /// Attach this disk to every session's guest (`--usb-disk`).
    pub usb_disk: Option<Arc<crate::inject::usb_channel::UsbDiskConfig>>,
    /// Share this folder with every session's guest (`--share-dir`).
    pub share_dir: Option<Arc<crate::inject::share::ShareConfig>>,
}

/// A failure to start the proxy.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        error: std::io::Error,
    },
    /// The capture folder could not be created.
    #[error("cannot create capture folder {dir}: {error}")]
    CaptureDir {
        /// The folder.
        dir: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The ready file could not be written.
    #[error("cannot write ready file {file}: {error}")]
    ReadyFile {
        /// The file.
        file: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// No listen address was given.
    #[error("no listen address")]
    NoListener,
    /// A TLS listener without a TLS configuration.
    #[error("--tls-listen needs a certificate")]
    NoTlsConfig,
}

/// A bound, not yet running proxy.
pub struct Proxy {
    /// Each listener with whether it is a TLS listener.
    listeners: Vec<(TcpListener, bool)>,
    config: ProxyConfig,
    sessions: Arc<Sessions>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Proxy {
    /// Binds every listen address and prepares the capture folder.
    ///
    /// # Errors
    /// [`ProxyError`] when an address cannot be bound or the capture folder
    /// cannot be created.
    pub async fn bind(config: ProxyConfig) -> Result<Self, ProxyError> {
        if config.listen.is_empty() && config.tls_listen.is_empty() {
            return Err(ProxyError::NoListener);
        }
        if !config.tls_listen.is_empty() && config.tls_server.is_none() {
            return Err(ProxyError::NoTlsConfig);
        }
        if let Some(dir) = &config.capture_dir {
            tokio::fs::create_dir_all(dir).await.map_err(|error| ProxyError::CaptureDir { dir: dir.clone(), error })?;
        }
        let mut listeners = Vec::new();
        let all = config.listen.iter().map(|a| (a, false)).chain(config.tls_listen.iter().map(|a| (a, true)));
        for (addr, tls) in all {
            let l = TcpListener::bind(addr).await.map_err(|error| ProxyError::Bind { addr: *addr, error })?;
            listeners.push((l, tls));
        }
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let sessions = Arc::new(
            Sessions::new(
                config.capture_dir.clone(),
                config.capture_queue_bytes,
                config.upstream.describe(),
                config.upstream_insecure,
            )
            .with_video(config.video.clone())
            .with_video_cursor(config.video_cursor)
            .with_redact_paths(config.redact_paths)
            .with_folder_list(config.list_folders)
            .with_metrics(metrics.clone()),
        );
        Ok(Self { listeners, config, sessions, metrics })
    }

    /// The proxy's metrics (`--http`'s `/metrics`).
    pub fn metrics(&self) -> Arc<crate::metrics::Metrics> {
        self.metrics.clone()
    }

    /// The session registry (ended sessions, session folders).
    pub fn sessions(&self) -> Arc<Sessions> {
        self.sessions.clone()
    }

    /// The bound plain-TCP addresses, in the order given.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().filter(|(_, tls)| !tls).filter_map(|(l, _)| l.local_addr().ok()).collect()
    }

    /// The bound TLS addresses, in the order given.
    pub fn local_tls_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().filter(|(_, tls)| *tls).filter_map(|(l, _)| l.local_addr().ok()).collect()
    }

    /// Accepts and serves clients until `stop` completes, then closes the
    /// listeners, ends every connection, and waits until every capture file
    /// is finished.
    ///
    /// # Errors
    /// [`ProxyError::ReadyFile`] when the ready file cannot be written.
    pub async fn run(self, stop: impl Future<Output = ()>) -> Result<(), ProxyError> {
        let upstream = self.config.upstream.describe();
        for addr in self.local_addrs() {
            tracing::info!(%addr, %upstream, "listening");
        }
        for addr in self.local_tls_addrs() {
            tracing::info!(%addr, %upstream, "listening (TLS)");
        }
        if let Some(file) = &self.config.ready_file {
            // First line: the first plain listener (or TLS if none); a
            // second line `tls host:port` when there is a TLS listener.
            let plain = self.local_addrs();
            let tls = self.local_tls_addrs();
            let mut text = String::new();
            if let Some(a) = plain.first().or(tls.first()) {
                text.push_str(&format!("{a}\n"));
            }
            if let Some(a) = tls.first() {
                text.push_str(&format!("tls {a}\n"));
            }
            let tmp = file.with_extension("tmp");
            let written = async {
                tokio::fs::write(&tmp, text).await?;
                tokio::fs::rename(&tmp, file).await
            };
            written.await.map_err(|error| ProxyError::ReadyFile { file: file.clone(), error })?;
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            sessions: self.sessions.clone(),
            upstream: self.config.upstream.clone(),
            require_client_tls: self.config.require_client_tls.clone(),
            tokens: self.config.tokens.clone(),
            display_caps_removed: self.config.display_caps_removed,
            debug_channels: self.config.debug_channels.clone(),
            shutdown: stop_rx,
            usb_disk: self.config.usb_disk.clone(),
            share_dir: self.config.share_dir.clone(),
            metrics: self.metrics.clone(),
        });
        let limit = Arc::new(Semaphore::new(self.config.max_connections));
        let mut tasks = JoinSet::new();
        let mut accepts = JoinSet::new();
        let (conn_tx, mut conn_rx) = tokio::sync::mpsc::channel(64);
        for (l, tls) in self.listeners {
            let tx = conn_tx.clone();
            accepts.spawn(accept_loop(l, tls, tx));
        }
        let acceptor = self.config.tls_server.clone().map(tokio_rustls::TlsAcceptor::from);
        drop(conn_tx);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                Some((stream, peer, tls)) = conn_rx.recv() => {
                    let Ok(permit) = limit.clone().try_acquire_owned() else {
                        tracing::warn!(client = %peer, max = self.config.max_connections, "too many connections; closed");
                        continue;
                    };
                    let shared = shared.clone();
                    let acceptor = if tls { acceptor.clone() } else { None };
                    tasks.spawn(async move {
                        let tls = acceptor.is_some();
                        match client_leg(stream, peer, acceptor).await {
                            Ok((s, info)) => {
                                if tls {
                                    shared.metrics.tls_handshake("client", true);
                                }
                                channel::serve(s, info, peer, shared).await
                            }
                            Err(e) => {
                                if tls {
                                    shared.metrics.tls_handshake("client", false);
                                }
                                tracing::warn!(client = %peer, error = %e, "connection closed before the link stage")
                            }
                        }
                        drop(permit);
                    });
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        tracing::info!(open = tasks.len(), "stopping: listeners closed, ending connections");
        accepts.shutdown().await;
        let _ = stop_tx.send(true);
        while tasks.join_next().await.is_some() {}
        let sessions = self.sessions.clone();
        let _ = tokio::task::spawn_blocking(move || sessions.join_writers()).await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Sets up the client leg: TCP options, then the TLS handshake on a TLS
/// listener (bounded by the link timeout).
async fn client_leg(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
) -> std::io::Result<(io::BoxedStream, Option<TlsInfo>)> {
    let Some(acceptor) = acceptor else {
        return Ok((io::accept_tcp(stream, peer)?, None));
    };
    stream.set_nodelay(true)?;
    let tls = tokio::time::timeout(LINK_TIMEOUT, acceptor.accept(stream))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))?
        .map_err(|e| std::io::Error::new(e.kind(), format!("TLS handshake: {e}")))?;
    let info = TlsInfo::of(tls.get_ref().1);
    tracing::debug!(client = %peer, version = %info.version, cipher = %info.cipher_suite, "TLS client");
    Ok((Box::new(tls), Some(info)))
}

type Accepted = (tokio::net::TcpStream, SocketAddr, bool);

async fn accept_loop(listener: TcpListener, tls: bool, tx: tokio::sync::mpsc::Sender<Accepted>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tracing::debug!(client = %peer, tls, "accepted");
                if tx.send((stream, peer, tls)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

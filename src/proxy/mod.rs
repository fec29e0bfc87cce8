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

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::protocol::ChannelType;
use crate::session::Sessions;
use channel::Shared;
use io::{Connector, TcpConnector};

/// What the proxy is told to do.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Addresses to accept SPICE clients on (port 0 picks a free port).
    pub listen: Vec<SocketAddr>,
    /// `HOST:PORT` of the SPICE server.
    pub upstream: String,
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
}

/// A bound, not yet running proxy.
pub struct Proxy {
    listeners: Vec<TcpListener>,
    config: ProxyConfig,
    sessions: Arc<Sessions>,
    connector: Arc<dyn Connector>,
}

impl Proxy {
    /// Binds every listen address and prepares the capture folder.
    ///
    /// # Errors
    /// [`ProxyError`] when an address cannot be bound or the capture folder
    /// cannot be created.
    pub async fn bind(config: ProxyConfig) -> Result<Self, ProxyError> {
        if config.listen.is_empty() {
            return Err(ProxyError::NoListener);
        }
        if let Some(dir) = &config.capture_dir {
            tokio::fs::create_dir_all(dir).await.map_err(|error| ProxyError::CaptureDir { dir: dir.clone(), error })?;
        }
        let mut listeners = Vec::new();
        for addr in &config.listen {
            let l = TcpListener::bind(addr).await.map_err(|error| ProxyError::Bind { addr: *addr, error })?;
            listeners.push(l);
        }
        let connector: Arc<dyn Connector> = Arc::new(TcpConnector { address: config.upstream.clone() });
        let sessions =
            Arc::new(Sessions::new(config.capture_dir.clone(), config.capture_queue_bytes, connector.describe()));
        Ok(Self { listeners, config, sessions, connector })
    }

    /// The bound addresses, in the order given.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().filter_map(|l| l.local_addr().ok()).collect()
    }

    /// Accepts and serves clients until `stop` completes, then closes the
    /// listeners, ends every connection, and waits until every capture file
    /// is finished.
    ///
    /// # Errors
    /// [`ProxyError::ReadyFile`] when the ready file cannot be written.
    pub async fn run(self, stop: impl Future<Output = ()>) -> Result<(), ProxyError> {
        for addr in self.local_addrs() {
            tracing::info!(%addr, upstream = %self.config.upstream, "listening");
        }
        if let (Some(file), Some(addr)) = (&self.config.ready_file, self.local_addrs().first()) {
            let tmp = file.with_extension("tmp");
            let written = async {
                tokio::fs::write(&tmp, format!("{addr}\n")).await?;
                tokio::fs::rename(&tmp, file).await
            };
            written.await.map_err(|error| ProxyError::ReadyFile { file: file.clone(), error })?;
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            sessions: self.sessions.clone(),
            connector: self.connector.clone(),
            debug_channels: self.config.debug_channels.clone(),
            shutdown: stop_rx,
        });
        let limit = Arc::new(Semaphore::new(self.config.max_connections));
        let mut tasks = JoinSet::new();
        let mut accepts = JoinSet::new();
        let (conn_tx, mut conn_rx) = tokio::sync::mpsc::channel(64);
        for l in self.listeners {
            let tx = conn_tx.clone();
            accepts.spawn(accept_loop(l, tx));
        }
        drop(conn_tx);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                Some((stream, peer)) = conn_rx.recv() => {
                    let Ok(permit) = limit.clone().try_acquire_owned() else {
                        tracing::warn!(client = %peer, max = self.config.max_connections, "too many connections; closed");
                        continue;
                    };
                    let shared = shared.clone();
                    tasks.spawn(async move {
                        match io::accept_tcp(stream, peer) {
                            Ok(s) => channel::serve(s, peer, shared).await,
                            Err(e) => tracing::warn!(client = %peer, error = %e, "cannot set up accepted socket"),
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

async fn accept_loop(listener: TcpListener, tx: tokio::sync::mpsc::Sender<(tokio::net::TcpStream, SocketAddr)>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tracing::debug!(client = %peer, "accepted");
                if tx.send((stream, peer)).await.is_err() {
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

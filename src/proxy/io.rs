//! The byte streams the proxy relays between.
//!
//! Everything above the socket (link stage, relay, framing, capture) works
//! on a [`BoxedStream`], so a TLS stream can stand in for a TCP stream on
//! either leg without touching that code.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::limits::UPSTREAM_CONNECT_TIMEOUT;

/// A bidirectional byte stream: TCP today, TLS over TCP later.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// An owned, type-erased [`Stream`].
pub type BoxedStream = Box<dyn Stream>;

/// Opens the upstream leg of a channel connection.
pub trait Connector: Send + Sync + 'static {
    /// Connects to the SPICE server.
    fn connect(&self) -> Pin<Box<dyn Future<Output = io::Result<BoxedStream>> + Send + '_>>;
    /// The address connected to, for logs and `session.json`.
    fn describe(&self) -> String;
}

/// Plain TCP to a `HOST:PORT`, with [`UPSTREAM_CONNECT_TIMEOUT`].
#[derive(Debug, Clone)]
pub struct TcpConnector {
    /// `HOST:PORT` as given by the user.
    pub address: String,
}

impl Connector for TcpConnector {
    fn connect(&self) -> Pin<Box<dyn Future<Output = io::Result<BoxedStream>> + Send + '_>> {
        Box::pin(async move {
            let stream = tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(&self.address))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as BoxedStream)
        })
    }

    fn describe(&self) -> String {
        self.address.clone()
    }
}

/// Prepares an accepted client socket: no Nagle delay, as a SPICE client or
/// server sets it (spice-gtk and spice-server both set `TCP_NODELAY`).
///
/// # Errors
/// The error of `setsockopt`.
pub fn accept_tcp(stream: TcpStream, _peer: SocketAddr) -> io::Result<BoxedStream> {
    stream.set_nodelay(true)?;
    Ok(Box::new(stream))
}

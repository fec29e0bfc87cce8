//! The byte streams the proxy relays between.
//!
//! Everything above the socket (link stage, relay, framing, capture) works
//! on a [`BoxedStream`], so a TLS stream can stand in for a TCP stream on
//! either leg without touching that code.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A bidirectional byte stream: TCP, or TLS over TCP.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// An owned, type-erased [`Stream`].
pub type BoxedStream = Box<dyn Stream>;

/// Prepares an accepted client socket: no Nagle delay, as a SPICE client or
/// server sets it (spice-gtk and spice-server both set `TCP_NODELAY`).
///
/// # Errors
/// The error of `setsockopt`.
pub fn accept_tcp(stream: TcpStream, _peer: SocketAddr) -> io::Result<BoxedStream> {
    stream.set_nodelay(true)?;
    Ok(Box::new(stream))
}

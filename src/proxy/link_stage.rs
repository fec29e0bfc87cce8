//! Drives the link stage between a client and the upstream server,
//! forwarding every byte unchanged (see [`crate::link`] for the layout).
//!
//! The proxy reads exactly the bytes each step announces, so when the link
//! result has been forwarded both streams sit at the first message header.

use std::io;
use std::time::SystemTime;

use bytes::Bytes;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::io::{BoxedStream, Connector};
use crate::limits::{LINK_TIMEOUT, MAX_LINK_SIZE};
use crate::link::{HeaderKind, LinkError, LinkHeader, LinkMess, LinkReply, auth_selection};
use crate::protocol::{Direction, LinkErr, SPICE_AUTH_SASL, SPICE_TICKET_BYTES};

/// Why a connection never became a SPICE channel.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LinkStageError {
    /// The client's link message was not valid SPICE.
    #[error("client link message refused: {0}")]
    Client(#[from] LinkError),
    /// The client closed or failed before its link message was whole.
    #[error("client link message incomplete: {0}")]
    ClientIo(io::Error),
    /// The client took longer than the link timeout.
    #[error("client sent no complete link message within {0:?}")]
    Timeout(std::time::Duration),
    /// The upstream could not be reached; the client got
    /// `SPICE_LINK_ERR_ERROR`.
    #[error("upstream {address} unreachable: {error}")]
    Upstream {
        /// Upstream address.
        address: String,
        /// What failed.
        error: io::Error,
    },
}

/// One piece of the link stage, as forwarded.
#[derive(Debug, Clone)]
pub struct LinkPiece {
    /// Which way it went.
    pub dir: Direction,
    /// When it was read.
    pub at: SystemTime,
    /// The bytes.
    pub bytes: Bytes,
}

/// What the link stage established.
#[derive(Debug)]
pub struct LinkStage {
    /// The client's `SpiceLinkMess`.
    pub mess: LinkMess,
    /// The server's `SpiceLinkReply`, if one came.
    pub reply: Option<LinkReply>,
    /// The auth mechanism the client selected, if it selected one.
    pub auth_mechanism: Option<u32>,
    /// Every piece forwarded, in order.
    pub pieces: Vec<LinkPiece>,
}

impl LinkStage {
    /// Bytes forwarded in `dir` during the link stage.
    pub fn bytes(&self, dir: Direction) -> u64 {
        self.pieces.iter().filter(|p| p.dir == dir).map(|p| p.bytes.len() as u64).sum()
    }
}

/// How the link stage ended once the client's link message was valid.
pub enum LinkEnd {
    /// Linked: messages follow, framed with this header kind (`None` when
    /// the stream cannot be framed, after SASL authentication).
    Linked {
        /// The upstream leg.
        upstream: BoxedStream,
        /// Header kind of the messages that follow.
        framing: Option<HeaderKind>,
    },
    /// The server refused the link (in its reply or link result); the
    /// refusal was forwarded to the client.
    Refused(LinkErr),
    /// A peer failed or broke the protocol during the link stage.
    Failed(String),
}

/// Runs the link stage on a fresh client connection.
///
/// # Errors
/// [`LinkStageError`] when the client does not send a valid link message in
/// time, or when the upstream is unreachable (after answering the client
/// with `SPICE_LINK_ERR_ERROR`). Failures after that are a
/// [`LinkEnd::Failed`], so the partial link stage can still be recorded.
pub async fn run(client: &mut BoxedStream, connector: &dyn Connector) -> Result<(LinkStage, LinkEnd), LinkStageError> {
    let first = tokio::time::timeout(LINK_TIMEOUT, read_link(client, LinkMess::FIXED_SIZE))
        .await
        .map_err(|_| LinkStageError::Timeout(LINK_TIMEOUT))?;
    let (bytes, body_at) = match first {
        Ok(b) => b,
        Err(ReadLinkError::Link(e)) => return Err(e.into()),
        Err(ReadLinkError::Io(e)) => return Err(LinkStageError::ClientIo(e)),
    };
    let mess = LinkMess::parse(&bytes[body_at..])?;
    let mut stage = LinkStage {
        mess,
        reply: None,
        auth_mechanism: None,
        pieces: vec![LinkPiece { dir: Direction::ClientToServer, at: SystemTime::now(), bytes: bytes.clone() }],
    };

    let mut upstream = match connector.connect().await {
        Ok(s) => s,
        Err(error) => {
            let reply = LinkReply::encode_error(LinkErr::ERROR);
            // Best effort: the client may already be gone.
            let _ = client.write_all(&reply).await;
            let _ = client.shutdown().await;
            return Err(LinkStageError::Upstream { address: connector.describe(), error });
        }
    };
    let end = match tokio::time::timeout(LINK_TIMEOUT * 6, finish(client, &mut upstream, &mut stage, bytes)).await {
        Ok(Ok(Some(framing))) => LinkEnd::Linked { upstream, framing },
        Ok(Ok(None)) => {
            let err = stage.reply.as_ref().map_or(LinkErr::ERROR, |r| r.error);
            let err = if err == LinkErr::OK { last_result(&stage).unwrap_or(LinkErr::ERROR) } else { err };
            LinkEnd::Refused(err)
        }
        Ok(Err(e)) => LinkEnd::Failed(e),
        Err(_) => LinkEnd::Failed(format!("link stage not finished within {:?}", LINK_TIMEOUT * 6)),
    };
    Ok((stage, end))
}

fn last_result(stage: &LinkStage) -> Option<LinkErr> {
    let p = stage.pieces.last().filter(|p| p.dir == Direction::ServerToClient && p.bytes.len() == 4)?;
    Some(LinkErr(u32::from_le_bytes([p.bytes[0], p.bytes[1], p.bytes[2], p.bytes[3]])))
}

/// The rest of the link stage after the client's link message was read.
/// `Ok(Some(kind))` when linked, `Ok(None)` when the server refused.
async fn finish(
    client: &mut BoxedStream,
    upstream: &mut BoxedStream,
    stage: &mut LinkStage,
    link_mess: Bytes,
) -> Result<Option<Option<HeaderKind>>, String> {
    upstream.write_all(&link_mess).await.map_err(|e| format!("writing link message upstream: {e}"))?;

    // SpiceLinkReply. An error reply may be as short as its error code.
    let (reply_bytes, body_at) = read_link(upstream, 4).await.map_err(|e| format!("server link reply: {e}"))?;
    let reply = LinkReply::parse(&reply_bytes[body_at..]).map_err(|e| format!("server link reply: {e}"))?;
    forward(client, Direction::ServerToClient, reply_bytes, stage).await?;
    let refused = reply.error != LinkErr::OK;
    let selection = auth_selection(&stage.mess.caps, &reply.caps);
    let kind = HeaderKind::negotiate(&stage.mess.caps, &reply.caps);
    stage.reply = Some(reply);
    if refused {
        return Ok(None);
    }

    if selection {
        let mech = read_exact(client, 4).await.map_err(|e| format!("client auth mechanism: {e}"))?;
        let m = u32::from_le_bytes([mech[0], mech[1], mech[2], mech[3]]);
        stage.auth_mechanism = Some(m);
        forward(upstream, Direction::ClientToServer, mech, stage).await?;
        if m == SPICE_AUTH_SASL {
            // The SASL exchange has its own framing; relay it unframed.
            return Ok(Some(None));
        }
    }
    let ticket = read_exact(client, SPICE_TICKET_BYTES).await.map_err(|e| format!("client ticket: {e}"))?;
    forward(upstream, Direction::ClientToServer, ticket, stage).await?;
    let result = read_exact(upstream, 4).await.map_err(|e| format!("server link result: {e}"))?;
    let code = LinkErr(u32::from_le_bytes([result[0], result[1], result[2], result[3]]));
    forward(client, Direction::ServerToClient, result, stage).await?;
    if code != LinkErr::OK {
        return Ok(None);
    }
    Ok(Some(Some(kind)))
}

async fn forward(to: &mut BoxedStream, dir: Direction, bytes: Bytes, stage: &mut LinkStage) -> Result<(), String> {
    stage.pieces.push(LinkPiece { dir, at: SystemTime::now(), bytes: bytes.clone() });
    to.write_all(&bytes).await.map_err(|e| format!("forwarding link stage ({}): {e}", dir.label()))
}

async fn read_exact(from: &mut BoxedStream, len: usize) -> io::Result<Bytes> {
    let mut buf = vec![0u8; len];
    from.read_exact(&mut buf).await?;
    Ok(Bytes::from(buf))
}

#[derive(Debug, Error)]
enum ReadLinkError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads a `SpiceLinkHeader` and the body it announces; returns the whole
/// message and the offset of its body. The size is checked against
/// [`MAX_LINK_SIZE`] before anything is allocated.
async fn read_link(from: &mut BoxedStream, min_body: u32) -> Result<(Bytes, usize), ReadLinkError> {
    let mut header = [0u8; LinkHeader::SIZE];
    from.read_exact(&mut header).await?;
    let h = LinkHeader::parse(&header, min_body)?;
    debug_assert!(h.size <= MAX_LINK_SIZE);
    let mut buf = Vec::with_capacity(LinkHeader::SIZE + h.size as usize);
    buf.extend_from_slice(&header);
    buf.resize(LinkHeader::SIZE + h.size as usize, 0);
    from.read_exact(&mut buf[LinkHeader::SIZE..]).await?;
    Ok((Bytes::from(buf), LinkHeader::SIZE))
}

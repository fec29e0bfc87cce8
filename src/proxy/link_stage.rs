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

use super::io::BoxedStream;
use super::upstream::{Connected, Leg, Upstream};
use crate::limits::{LINK_TIMEOUT, MAX_LINK_SIZE};
use crate::link::{HeaderKind, LinkError, LinkHeader, LinkMess, LinkReply, auth_selection};
use crate::protocol::{ChannelType, Direction, LinkErr, SPICE_AUTH_SASL, SPICE_TICKET_BYTES};
use crate::tls::TlsInfo;

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
    /// The upstream could not be reached, or its TLS certificate was
    /// refused; the client got `SPICE_LINK_ERR_ERROR`.
    #[error("cannot connect upstream {address}: {error}")]
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
    /// The upstream address connected to, if any.
    pub upstream_address: Option<String>,
    /// TLS parameters of the upstream leg, when it is TLS.
    pub upstream_tls: Option<TlsInfo>,
    /// Whether a plain upstream leg refused with NEED_SECURED was replaced
    /// by a TLS leg.
    pub upgraded_to_tls: bool,
    /// A refusal spicetap answered itself (the upstream was not contacted).
    pub answered_by_proxy: Option<LinkErr>,
    /// Caps removed from the link message sent upstream.
    pub caps_removed_upstream: Vec<String>,
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

/// What the link stage needs to know beyond the two streams.
pub struct LinkPolicy<'a> {
    /// How to reach the server.
    pub upstream: &'a Upstream,
    /// Whether the client leg is TLS.
    pub client_tls: bool,
    /// Channel types that must come over TLS (`--require-client-tls`):
    /// on a plain client leg they are refused with
    /// `SPICE_LINK_ERR_NEED_SECURED`, as spice-server does for `tls-channel=`.
    pub require_client_tls: &'a (dyn Fn(ChannelType) -> bool + Sync),
    /// Display channel caps removed from the client's link message before it
    /// goes upstream (`--stream-codecs`); 0 forwards it unchanged.
    pub display_caps_removed: u32,
}

/// Runs the link stage on a fresh client connection.
///
/// # Errors
/// [`LinkStageError`] when the client does not send a valid link message in
/// time, or when the upstream is unreachable (after answering the client
/// with `SPICE_LINK_ERR_ERROR`). Failures after that are a
/// [`LinkEnd::Failed`], so the partial link stage can still be recorded.
pub async fn run(client: &mut BoxedStream, policy: &LinkPolicy<'_>) -> Result<(LinkStage, LinkEnd), LinkStageError> {
    let (bytes, mess) = read_client_link(client).await?;
    let ct = mess.channel_type;
    let mut stage = LinkStage::new(mess, bytes.clone());
    if let Some(end) = refuse_plain_if_required(client, policy, ct, &mut stage).await {
        return Ok((stage, end));
    }
    // --stream-codecs: the one change spicetap makes to a passthrough link.
    let upstream_mess = if ct == ChannelType::DISPLAY && policy.display_caps_removed != 0 {
        let mut b = bytes.to_vec();
        stage.caps_removed_upstream = crate::link::clear_channel_caps(&mut b, &stage.mess, policy.display_caps_removed);
        Bytes::from(b)
    } else {
        bytes.clone()
    };
    let refusal = LinkReply::encode_error(LinkErr::ERROR);
    let (mut upstream_stream, reply) =
        match open_upstream(client, policy.upstream, ct, &upstream_mess, &mut stage, &refusal).await? {
            Ok(x) => x,
            Err(e) => return Ok((stage, LinkEnd::Failed(e))),
        };
    let end =
        match tokio::time::timeout(LINK_TIMEOUT * 6, finish(client, &mut upstream_stream, &mut stage, reply)).await {
            Ok(Ok(Some(framing))) => LinkEnd::Linked { upstream: upstream_stream, framing },
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

impl LinkStage {
    /// A link stage that has read the client's link message `bytes`.
    pub(super) fn new(mess: LinkMess, bytes: Bytes) -> Self {
        Self {
            mess,
            reply: None,
            auth_mechanism: None,
            pieces: vec![LinkPiece { dir: Direction::ClientToServer, at: SystemTime::now(), bytes }],
            upstream_address: None,
            upstream_tls: None,
            upgraded_to_tls: false,
            answered_by_proxy: None,
            caps_removed_upstream: Vec::new(),
        }
    }
}

/// Reads and checks the client's `SpiceLinkHeader` + `SpiceLinkMess` within
/// the link timeout; returns the raw bytes and the parsed message.
pub(super) async fn read_client_link(client: &mut BoxedStream) -> Result<(Bytes, LinkMess), LinkStageError> {
    let first = tokio::time::timeout(LINK_TIMEOUT, read_link(client, LinkMess::FIXED_SIZE))
        .await
        .map_err(|_| LinkStageError::Timeout(LINK_TIMEOUT))?;
    let (bytes, body_at) = match first {
        Ok(b) => b,
        Err(ReadLinkError::Link(e)) => return Err(e.into()),
        Err(ReadLinkError::Io(e)) => return Err(LinkStageError::ClientIo(e)),
    };
    let mess = LinkMess::parse(&bytes[body_at..])?;
    Ok((bytes, mess))
}

/// On a plain client leg, answers `SPICE_LINK_ERR_NEED_SECURED` for a
/// channel that must be TLS; returns how the link stage ended then.
pub(super) async fn refuse_plain_if_required(
    client: &mut BoxedStream,
    policy: &LinkPolicy<'_>,
    ct: ChannelType,
    stage: &mut LinkStage,
) -> Option<LinkEnd> {
    if policy.client_tls || !(policy.require_client_tls)(ct) {
        return None;
    }
    let refusal = Bytes::from(LinkReply::encode_error(LinkErr::NEED_SECURED));
    stage.answered_by_proxy = Some(LinkErr::NEED_SECURED);
    let sent = forward(client, Direction::ServerToClient, refusal, stage).await;
    let _ = client.shutdown().await;
    Some(sent.map_or_else(LinkEnd::Failed, |()| LinkEnd::Refused(LinkErr::NEED_SECURED)))
}

/// Connects the upstream leg for a `ct` channel, sends `link_mess` and reads
/// the server's whole link reply. Under `auto`, a plain leg answered
/// NEED_SECURED is replaced by a TLS leg before the client sees anything.
/// When no leg can be connected, `refusal` is sent to the client (a link
/// reply, or a link result once the client has its reply) and the error
/// returned; a failed exchange is the inner `Err`.
pub(super) async fn open_upstream(
    client: &mut BoxedStream,
    upstream: &Upstream,
    ct: ChannelType,
    link_mess: &Bytes,
    stage: &mut LinkStage,
    refusal: &[u8],
) -> Result<Result<(BoxedStream, Bytes), String>, LinkStageError> {
    let leg = upstream.first_leg(ct);
    let mut conn = connect_or_refuse(client, upstream, leg, refusal).await?;
    stage.upstream_address = Some(conn.address.clone());
    stage.upstream_tls = conn.tls.clone();
    let reply = match exchange_link(&mut conn.stream, link_mess).await {
        Ok(r) => r,
        Err(e) => return Ok(Err(e)),
    };
    let need_secured = LinkReply::parse(&reply[LinkHeader::SIZE..]).is_ok_and(|r| r.error == LinkErr::NEED_SECURED);
    if !(leg == Leg::Plain && upstream.upgrades() && need_secured) {
        return Ok(Ok((conn.stream, reply)));
    }
    // The server wants this channel secured: reconnect over TLS before the
    // client sees anything.
    tracing::info!(address = %conn.address, "server answered NEED_SECURED; reconnecting over TLS");
    let mut conn = connect_or_refuse(client, upstream, Leg::Tls, refusal).await?;
    stage.upstream_address = Some(conn.address.clone());
    stage.upstream_tls = conn.tls.clone();
    stage.upgraded_to_tls = true;
    Ok(exchange_link(&mut conn.stream, link_mess).await.map(|reply| (conn.stream, reply)))
}

/// Connects `leg`; on failure sends `refusal` to the client and closes it.
async fn connect_or_refuse(
    client: &mut BoxedStream,
    upstream: &Upstream,
    leg: Leg,
    refusal: &[u8],
) -> Result<Connected, LinkStageError> {
    match upstream.connect(leg).await {
        Ok(c) => Ok(c),
        Err(error) => {
            // Best effort: the client may already be gone.
            let _ = client.write_all(refusal).await;
            let _ = client.shutdown().await;
            let address = match leg {
                Leg::Tls => format!("TLS {}", upstream.address(leg).unwrap_or_default()),
                Leg::Plain => upstream.address(leg).unwrap_or_default().to_string(),
            };
            Err(LinkStageError::Upstream { address, error })
        }
    }
}

/// Sends the client's link message upstream and reads the whole reply
/// (header and body).
async fn exchange_link(upstream: &mut BoxedStream, link_mess: &Bytes) -> Result<Bytes, String> {
    upstream.write_all(link_mess).await.map_err(|e| format!("writing link message upstream: {e}"))?;
    let (reply, _) = read_link(upstream, 4).await.map_err(|e| format!("server link reply: {e}"))?;
    Ok(reply)
}

fn last_result(stage: &LinkStage) -> Option<LinkErr> {
    let p = stage.pieces.last().filter(|p| p.dir == Direction::ServerToClient && p.bytes.len() == 4)?;
    Some(LinkErr(u32::from_le_bytes([p.bytes[0], p.bytes[1], p.bytes[2], p.bytes[3]])))
}

/// The rest of the link stage once the server's link reply was read.
/// `Ok(Some(kind))` when linked, `Ok(None)` when the server refused.
async fn finish(
    client: &mut BoxedStream,
    upstream: &mut BoxedStream,
    stage: &mut LinkStage,
    reply_bytes: Bytes,
) -> Result<Option<Option<HeaderKind>>, String> {
    // SpiceLinkReply. An error reply may be as short as its error code.
    let reply = LinkReply::parse(&reply_bytes[LinkHeader::SIZE..]).map_err(|e| format!("server link reply: {e}"))?;
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

pub(super) async fn forward(
    to: &mut BoxedStream,
    dir: Direction,
    bytes: Bytes,
    stage: &mut LinkStage,
) -> Result<(), String> {
    stage.pieces.push(LinkPiece { dir, at: SystemTime::now(), bytes: bytes.clone() });
    to.write_all(&bytes).await.map_err(|e| format!("forwarding link stage ({}): {e}", dir.label()))
}

pub(super) async fn read_exact(from: &mut BoxedStream, len: usize) -> io::Result<Bytes> {
    let mut buf = vec![0u8; len];
    from.read_exact(&mut buf).await?;
    Ok(Bytes::from(buf))
}

#[derive(Debug, Error)]
pub(super) enum ReadLinkError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads a `SpiceLinkHeader` and the body it announces; returns the whole
/// message and the offset of its body. The size is checked against
/// [`MAX_LINK_SIZE`] before anything is allocated.
pub(super) async fn read_link(from: &mut BoxedStream, min_body: u32) -> Result<(Bytes, usize), ReadLinkError> {
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

//! The link stage in token mode: spicetap is the server to the client and a
//! client to the VM.
//!
//! ```text
//! client                    spicetap                                   VM (from the targets file)
//! SpiceLinkMess ─────────>  reply: own fresh RSA-1024 key,
//!                <────────  caps from the advertised-caps table
//! auth mechanism, ticket ─> decrypt ticket = token, look it up
//!                           (unknown/expired: link result PERMISSION_DENIED,
//!                            nothing sent upstream)
//!                           SpiceLinkMess (migration caps removed) ─────────>
//!                           <──────────────────────────── SpiceLinkReply (VM key)
//!                           auth mechanism, VM password under VM key ──────>
//!                <────────  <──────────────────────────────── link result
//! ```
//!
//! The pcap records the client-facing conversation (the client's ticket is
//! encrypted to spicetap's one-time key). Both sides must agree on the
//! message header kind, since bytes are forwarded unchanged afterwards.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt;

use super::io::BoxedStream;
use super::link_stage::{
    LinkEnd, LinkPolicy, LinkStage, LinkStageError, forward, open_upstream, read_client_link, read_exact,
    refuse_plain_if_required,
};
use crate::auth::audit::{AuditEvent, AuditLog};
use crate::auth::ratelimit::FailureLimiter;
use crate::auth::targets::{Lookup, SERVER_COMMON_CAPS, Targets, default_caps};
use crate::auth::ticket::{KeyPool, encrypt_ticket};
use crate::fleet::{Fleet, FleetLookup, Revocation};
use crate::limits::LINK_TIMEOUT;
use crate::link::{Caps, HeaderKind, LinkHeader, LinkReply, auth_selection, clear_channel_caps};
use crate::protocol::{
    ChannelType, Direction, LinkErr, SPICE_AUTH_SPICE, SPICE_TICKET_BYTES, channel_cap_names_of, common_cap_names,
};
use crate::proxy::upstream::Upstream;

/// `SPICE_MAIN_CAP_SEMI_SEAMLESS_MIGRATE` and `SPICE_MAIN_CAP_SEAMLESS_MIGRATE`
/// (spice-protocol `protocol.h`): removed from main-channel link messages in
/// token mode, so the VM never tells the client where to migrate.
const MIGRATION_CAPS: u32 = (1 << 0) | (1 << 3);

/// Where token mode finds targets.
#[derive(Debug, Clone)]
pub enum TargetSource {
    /// A targets file (one node).
    File(Arc<Targets>),
    /// The fleet database (`--db`): tokens by keyed hash, revocations pushed.
    Fleet(Arc<Fleet>),
}

impl TargetSource {
    /// The caps spicetap advertises to clients for channel type `ct`.
    pub fn advertised_caps(&self, ct: ChannelType) -> Caps {
        match self {
            Self::File(t) => t.advertised_caps(ct),
            Self::Fleet(_) => Caps { common: vec![SERVER_COMMON_CAPS], channel: default_caps(ct) },
        }
    }
}

/// The VM a valid token reached, for the rest of the connection (the
/// channels spicetap links itself use its upstream and password).
#[derive(Clone)]
pub struct Reached {
    /// How to reach the VM.
    pub upstream: Arc<Upstream>,
    /// The VM's SPICE password.
    pub password: Arc<[u8]>,
    /// The token's id in the fleet database.
    pub token_id: Option<i64>,
    /// Turns `true` when the token is revoked (fleet database only).
    pub revocation: Option<Revocation>,
}

impl std::fmt::Debug for Reached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reached").field("token_id", &self.token_id).finish_non_exhaustive()
    }
}

/// Token mode's shared state.
pub struct TokenAuth {
    /// The targets file or the fleet database.
    pub targets: TargetSource,
    /// Fresh RSA keys.
    pub keys: Arc<KeyPool>,
    /// Failed authentications per address.
    pub limiter: FailureLimiter,
    /// The audit log, if any.
    pub audit: Option<AuditLog>,
}

/// What token mode adds to a channel's record.
#[derive(Debug, Default, Clone)]
pub struct TokenOutcome {
    /// Name of the target reached.
    pub target: Option<String>,
    /// Why authentication failed.
    pub denied: Option<String>,
    /// Caps names removed from the link message sent to the VM.
    pub removed_caps: Vec<String>,
    /// The VM's caps, as its link reply gave them.
    pub vm_caps: Option<Caps>,
    /// The VM reached, when the token was valid.
    pub reached: Option<Reached>,
    /// How the advertised caps differ from the VM's.
    pub caps_differences: Vec<String>,
}

impl TokenAuth {
    fn audit(&self, ev: AuditEvent) {
        if let Some(a) = &self.audit {
            a.record(ev);
        }
    }
}

/// Runs the token-mode link stage.
///
/// # Errors
/// As [`super::link_stage::run`]: an invalid client link message, or an
/// unreachable VM (the client then gets the link result
/// `SPICE_LINK_ERR_ERROR`).
pub async fn run(
    client: &mut BoxedStream,
    policy: &LinkPolicy<'_>,
    auth: &TokenAuth,
    peer: SocketAddr,
) -> Result<(LinkStage, LinkEnd, TokenOutcome), LinkStageError> {
    let (bytes, mess) = read_client_link(client).await?;
    let ct = mess.channel_type;
    let mut stage = LinkStage::new(mess, bytes.clone());
    let mut outcome = TokenOutcome::default();
    let event = |event: &'static str| AuditEvent {
        event,
        client: peer.to_string(),
        channel: Some(ct.name().into_owned()),
        ..AuditEvent::default()
    };
    auth.audit(event("accepted"));
    if let Some(end) = refuse_plain_if_required(client, policy, ct, &mut stage).await {
        return Ok((stage, end, outcome));
    }

    if !auth.limiter.allowed(peer.ip(), Instant::now()) {
        let reason = "too many failed authentications from this address";
        tracing::warn!(client = %peer, "{reason}; refused");
        auth.audit(AuditEvent { reason: Some(reason.into()), ..event("denied") });
        outcome.denied = Some(reason.into());
        let refusal = Bytes::from(LinkReply::encode_error(LinkErr::PERMISSION_DENIED));
        stage.answered_by_proxy = Some(LinkErr::PERMISSION_DENIED);
        let sent = forward(client, Direction::ServerToClient, refusal, &mut stage).await;
        let _ = client.shutdown().await;
        return Ok((
            stage,
            sent.map_or_else(LinkEnd::Failed, |()| LinkEnd::Refused(LinkErr::PERMISSION_DENIED)),
            outcome,
        ));
    }

    let result = tokio::time::timeout(
        LINK_TIMEOUT * 6,
        authenticate_and_link(client, policy, auth, peer, &bytes, &mut stage, &mut outcome),
    )
    .await;
    let end = match result {
        Ok(Ok(end)) => end,
        Ok(Err(e)) => return Err(e),
        Err(_) => LinkEnd::Failed(format!("link stage not finished within {:?}", LINK_TIMEOUT * 6)),
    };
    if let Some(target) = &outcome.target
        && matches!(end, LinkEnd::Linked { .. })
    {
        let token_id = outcome.reached.as_ref().and_then(|r| r.token_id);
        auth.audit(AuditEvent { target: Some(target.clone()), token_id, ..event("authenticated") });
    }
    Ok((stage, end, outcome))
}

#[allow(clippy::too_many_arguments)]
async fn authenticate_and_link(
    client: &mut BoxedStream,
    policy: &LinkPolicy<'_>,
    auth: &TokenAuth,
    peer: SocketAddr,
    link_mess: &Bytes,
    stage: &mut LinkStage,
    outcome: &mut TokenOutcome,
) -> Result<LinkEnd, LinkStageError> {
    let ct = stage.mess.channel_type;
    let key = match auth.keys.take().await {
        Ok(k) => k,
        Err(e) => return Ok(LinkEnd::Failed(e.to_string())),
    };
    let advertised = auth.targets.advertised_caps(ct);
    let reply = encode_reply(key.public_der(), &advertised);
    stage.reply = LinkReply::parse(&reply[LinkHeader::SIZE..]).ok();
    if let Err(e) = forward(client, Direction::ServerToClient, Bytes::from(reply), stage).await {
        return Ok(LinkEnd::Failed(e));
    }
    let client_kind = HeaderKind::negotiate(&stage.mess.caps, &advertised);

    if auth_selection(&stage.mess.caps, &advertised) {
        let mech = match read_exact(client, 4).await {
            Ok(m) => m,
            Err(e) => return Ok(LinkEnd::Failed(format!("client auth mechanism: {e}"))),
        };
        let m = u32::from_le_bytes([mech[0], mech[1], mech[2], mech[3]]);
        stage.auth_mechanism = Some(m);
        stage.pieces.push(super::link_stage::LinkPiece {
            dir: Direction::ClientToServer,
            at: std::time::SystemTime::now(),
            bytes: mech,
        });
        if m != SPICE_AUTH_SPICE {
            return deny(client, auth, peer, stage, outcome, "auth mechanism other than SPICE ticket").await;
        }
    }
    let ticket = match read_exact(client, SPICE_TICKET_BYTES).await {
        Ok(t) => t,
        Err(e) => return Ok(LinkEnd::Failed(format!("client ticket: {e}"))),
    };
    stage.pieces.push(super::link_stage::LinkPiece {
        dir: Direction::ClientToServer,
        at: std::time::SystemTime::now(),
        bytes: ticket.clone(),
    });
    let token = match key.decrypt(&ticket) {
        Ok(t) => t,
        Err(_) => return deny(client, auth, peer, stage, outcome, "ticket does not decrypt").await,
    };
    let (name, reached) = match &auth.targets {
        TargetSource::File(targets) => match targets.lookup(&token.0, OffsetDateTime::now_utc()) {
            Lookup::Found(t) => (
                t.name.clone(),
                Reached {
                    upstream: t.upstream.clone(),
                    password: t.password().into(),
                    token_id: None,
                    revocation: None,
                },
            ),
            Lookup::Unknown => return deny(client, auth, peer, stage, outcome, "unknown token").await,
            Lookup::Expired(t) => {
                outcome.target = Some(t.name.clone());
                return deny(client, auth, peer, stage, outcome, "expired token").await;
            }
        },
        TargetSource::Fleet(fleet) => match fleet.lookup(&token.0).await {
            FleetLookup::Found(t) => (
                t.name,
                Reached {
                    upstream: t.upstream,
                    password: t.password.into(),
                    token_id: Some(t.token_id),
                    revocation: Some(t.revocation),
                },
            ),
            FleetLookup::Unknown => return deny(client, auth, peer, stage, outcome, "unknown token").await,
            FleetLookup::Expired(name) => {
                outcome.target = Some(name);
                return deny(client, auth, peer, stage, outcome, "expired token").await;
            }
            FleetLookup::Revoked(name) => {
                outcome.target = Some(name);
                return deny(client, auth, peer, stage, outcome, "revoked token").await;
            }
            FleetLookup::Unavailable(why) => {
                // Fail closed, and do not count it against the client.
                tracing::error!(client = %peer, error = %why, "fleet database unavailable; login refused");
                let reason = "fleet database unavailable";
                auth.audit(AuditEvent {
                    event: "denied",
                    client: peer.to_string(),
                    channel: Some(stage.mess.channel_type.name().into_owned()),
                    reason: Some(reason.into()),
                    ..AuditEvent::default()
                });
                outcome.denied = Some(reason.into());
                return result_to_client(client, stage, LinkErr::PERMISSION_DENIED, None).await;
            }
            FleetLookup::Unusable(why) => {
                tracing::error!(client = %peer, error = %why, "target unusable on this node");
                return result_to_client(client, stage, LinkErr::ERROR, Some(why)).await;
            }
        },
    };
    drop(token);
    auth.limiter.succeeded(peer.ip());
    outcome.target = Some(name.clone());
    tracing::info!(target = %name, token_id = reached.token_id, "token accepted");
    let target = reached.clone();
    outcome.reached = Some(reached);

    // The link message to the VM: the client's, without migration caps
    // (main) or the video codecs `--stream-codecs` leaves out (display).
    let removed = match ct {
        ChannelType::MAIN => MIGRATION_CAPS,
        ChannelType::DISPLAY => policy.display_caps_removed,
        _ => 0,
    };
    let mut upstream_mess = link_mess.to_vec();
    if removed != 0 {
        outcome.removed_caps = clear_channel_caps(&mut upstream_mess, &stage.mess, removed);
    }
    let upstream_caps = {
        let mut c = stage.mess.caps.clone();
        if let Some(w) = c.channel.first_mut() {
            *w &= !removed;
        }
        c
    };
    let refusal = LinkErr::ERROR.0.to_le_bytes();
    let (mut vm, vm_reply_bytes) =
        match open_upstream(client, &target.upstream, ct, &Bytes::from(upstream_mess), stage, &refusal).await? {
            Ok(x) => x,
            Err(e) => {
                let _ = client.write_all(&refusal).await;
                return Ok(LinkEnd::Failed(e));
            }
        };
    let vm_reply = match LinkReply::parse(&vm_reply_bytes[LinkHeader::SIZE..]) {
        Ok(r) => r,
        Err(e) => return result_to_client(client, stage, LinkErr::ERROR, Some(format!("VM link reply: {e}"))).await,
    };
    if vm_reply.error != LinkErr::OK {
        tracing::warn!(target = %name, link_error = %vm_reply.error, "VM refused the link");
        return result_to_client(client, stage, vm_reply.error, None).await;
    }
    outcome.caps_differences = caps_differences(ct, &advertised, &vm_reply.caps);
    if !outcome.caps_differences.is_empty() {
        tracing::info!(differences = ?outcome.caps_differences, "VM caps differ from the advertised ones");
    }
    outcome.vm_caps = Some(vm_reply.caps.clone());
    let vm_kind = HeaderKind::negotiate(&upstream_caps, &vm_reply.caps);
    if vm_kind != client_kind {
        let why = format!("header kind differs: client {client_kind:?}, VM {vm_kind:?}");
        return result_to_client(client, stage, LinkErr::ERROR, Some(why)).await;
    }

    // Authenticate to the VM with its own password, as spice-gtk would.
    let pub_key = &vm_reply_bytes[LinkHeader::SIZE + 4..LinkHeader::SIZE + 4 + 162];
    let vm_ticket = match encrypt_ticket(pub_key, &target.password) {
        Ok(t) => t,
        Err(e) => return result_to_client(client, stage, LinkErr::ERROR, Some(format!("VM ticket: {e}"))).await,
    };
    let mut out = Vec::with_capacity(4 + vm_ticket.len());
    if auth_selection(&upstream_caps, &vm_reply.caps) {
        out.extend_from_slice(&SPICE_AUTH_SPICE.to_le_bytes());
    }
    out.extend_from_slice(&vm_ticket);
    if let Err(e) = vm.write_all(&out).await {
        return result_to_client(client, stage, LinkErr::ERROR, Some(format!("sending VM ticket: {e}"))).await;
    }
    let vm_result = match read_exact(&mut vm, 4).await {
        Ok(r) => LinkErr(u32::from_le_bytes([r[0], r[1], r[2], r[3]])),
        Err(e) => return result_to_client(client, stage, LinkErr::ERROR, Some(format!("VM link result: {e}"))).await,
    };
    if vm_result != LinkErr::OK {
        tracing::warn!(target = %name, link_error = %vm_result, "VM refused the target's password");
        return result_to_client(client, stage, vm_result, None).await;
    }
    let ok = Bytes::copy_from_slice(&LinkErr::OK.0.to_le_bytes());
    if let Err(e) = forward(client, Direction::ServerToClient, ok, stage).await {
        return Ok(LinkEnd::Failed(e));
    }
    Ok(LinkEnd::Linked { upstream: vm, framing: Some(client_kind) })
}

/// Refuses the client with the link result PERMISSION_DENIED.
async fn deny(
    client: &mut BoxedStream,
    auth: &TokenAuth,
    peer: SocketAddr,
    stage: &mut LinkStage,
    outcome: &mut TokenOutcome,
    reason: &str,
) -> Result<LinkEnd, LinkStageError> {
    auth.limiter.failed(peer.ip(), Instant::now());
    tracing::warn!(client = %peer, reason, "authentication denied");
    auth.audit(AuditEvent {
        event: "denied",
        client: peer.to_string(),
        channel: Some(stage.mess.channel_type.name().into_owned()),
        target: outcome.target.clone(),
        reason: Some(reason.into()),
        ..AuditEvent::default()
    });
    outcome.denied = Some(reason.into());
    result_to_client(client, stage, LinkErr::PERMISSION_DENIED, None).await
}

/// Sends a failing link result to the client.
async fn result_to_client(
    client: &mut BoxedStream,
    stage: &mut LinkStage,
    err: LinkErr,
    why: Option<String>,
) -> Result<LinkEnd, LinkStageError> {
    let bytes = Bytes::copy_from_slice(&err.0.to_le_bytes());
    let _ = forward(client, Direction::ServerToClient, bytes, stage).await;
    let _ = client.shutdown().await;
    Ok(match why {
        Some(w) => {
            tracing::warn!(error = %w, "link to the VM failed");
            LinkEnd::Failed(w)
        }
        None => LinkEnd::Refused(err),
    })
}

/// `SpiceLinkHeader` + a successful `SpiceLinkReply` carrying `pub_key` and
/// `caps`.
fn encode_reply(pub_key: &[u8; 162], caps: &Caps) -> Vec<u8> {
    let words = caps.common.len() + caps.channel.len();
    let size = LinkReply::FIXED_SIZE as usize + 4 * words;
    let mut out = Vec::with_capacity(LinkHeader::SIZE + size);
    // size <= 178 + 4 * 32: fits in u32.
    out.extend_from_slice(&LinkHeader::encode(size as u32));
    out.extend_from_slice(&LinkErr::OK.0.to_le_bytes());
    out.extend_from_slice(pub_key);
    out.extend_from_slice(&(caps.common.len() as u32).to_le_bytes());
    out.extend_from_slice(&(caps.channel.len() as u32).to_le_bytes());
    out.extend_from_slice(&LinkReply::FIXED_SIZE.to_le_bytes());
    for w in caps.common.iter().chain(&caps.channel) {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out
}

/// Names of caps set on one side only: `advertised only: X`, `VM only: Y`.
fn caps_differences(ct: ChannelType, advertised: &Caps, vm: &Caps) -> Vec<String> {
    let mut out = Vec::new();
    let sides = [
        (common_cap_names(&advertised.common), common_cap_names(&vm.common)),
        (channel_cap_names_of(ct, &advertised.channel), channel_cap_names_of(ct, &vm.channel)),
    ];
    for (ours, theirs) in sides {
        out.extend(ours.iter().filter(|n| !theirs.contains(n)).map(|n| format!("advertised only: {n}")));
        out.extend(theirs.iter().filter(|n| !ours.contains(n)).map(|n| format!("VM only: {n}")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::LinkMess;

    #[test]
    fn reply_encodes_key_and_caps() {
        let caps = Caps { common: vec![0b1011], channel: vec![1] };
        let bytes = encode_reply(&[7; 162], &caps);
        let h = LinkHeader::parse(&bytes[..16], 4).unwrap();
        assert_eq!(h.size as usize, bytes.len() - 16);
        let r = LinkReply::parse(&bytes[16..]).unwrap();
        assert_eq!(r.error, LinkErr::OK);
        assert_eq!(r.caps, caps);
        assert_eq!(&bytes[20..182], &[7; 162]);
    }

    #[test]
    fn migration_caps_are_stripped_from_a_main_link_message() {
        let mut bytes = crate::link::tests::link_mess_bytes(0, 1, &[0b1011], &[0b1111]);
        let mess = LinkMess::parse(&bytes[16..]).unwrap();
        let removed = clear_channel_caps(&mut bytes, &mess, MIGRATION_CAPS);
        assert_eq!(removed, ["SPICE_MAIN_CAP_SEMI_SEAMLESS_MIGRATE", "SPICE_MAIN_CAP_SEAMLESS_MIGRATE"]);
        assert_eq!(LinkMess::parse(&bytes[16..]).unwrap().caps.channel, [0b0110]);
    }

    #[test]
    fn caps_differences_name_both_sides() {
        let a = Caps { common: vec![0b1011], channel: vec![0b11] };
        let b = Caps { common: vec![0b1011], channel: vec![0b101] };
        let d = caps_differences(ChannelType::MAIN, &a, &b);
        assert_eq!(
            d,
            ["advertised only: SPICE_MAIN_CAP_NAME_AND_UUID", "VM only: SPICE_MAIN_CAP_AGENT_CONNECTED_TOKENS"]
        );
    }
}

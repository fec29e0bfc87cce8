//! One channel connection, from accept to close.
//!
//! ```text
//! accept ─> link stage ─> join session ─> relay c2s ┐ (two futures on this task)
//!                                         relay s2c ┘ ─> final report ─> leave session
//! ```
//!
//! The task owns both streams. Its report (caps, header kind, counters, how
//! it ended) goes to the session's capture writer, which writes it into
//! `session.json`.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use time::OffsetDateTime;
use tokio::sync::watch;
use tracing::Instrument;

use super::io::BoxedStream;
use super::link_stage::{self, LinkEnd, LinkPolicy, LinkStage};
use super::relay::{MessageFilter, Observer, RelayEnd, SessionIdHook, relay};
use super::token_link::{self, TargetSource, TokenAuth, TokenOutcome};
use super::upstream::Upstream;
use crate::auth::audit::{AuditEvent, AuditLog};
use crate::fleet::Fleet;
use crate::fleet::store::IndexRow;
use crate::framing::Framer;
use crate::inject::share::ShareConfig;
use crate::inject::usb_channel::UsbDiskConfig;
use crate::link::HeaderKind;
use crate::protocol::{ChannelType, Direction, SPICE_AUTH_SASL, SPICE_AUTH_SPICE};
use crate::report::{CapsReport, ChannelReport, DirectionReport, EndReport, rfc3339};
use crate::session::{LiveChannel, Session, Sessions};
use crate::tap::ChannelTap;
use crate::tls::TlsInfo;

/// What every channel task of a proxy shares.
pub struct Shared {
    /// The session registry.
    pub sessions: Arc<Sessions>,
    /// How to reach the server.
    pub upstream: Arc<Upstream>,
    /// Channel types refused on a plain client leg (`--require-client-tls`).
    pub require_client_tls: RequireTls,
    /// Channel types whose messages are logged one by one.
    pub debug_channels: Vec<ChannelType>,
    /// Becomes `true` when the proxy stops.
    pub shutdown: watch::Receiver<bool>,
    /// Token mode (`--auth tokens`); passthrough when `None`.
    pub tokens: Option<Arc<TokenAuth>>,
    /// Display caps removed from clients' link messages (`--stream-codecs`).
    pub display_caps_removed: u32,
    /// The disk attached to every session's guest (`--usb-disk`).
    pub usb_disk: Option<Arc<crate::inject::usb_channel::UsbDiskConfig>>,
    /// The folder shared with every session's guest (`--share-dir`).
    pub share_dir: Option<Arc<ShareConfig>>,
    /// The proxy's metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Which channels must reach spicetap over TLS (`--require-client-tls`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RequireTls {
    /// None: plain clients are served on every channel.
    #[default]
    None,
    /// Every channel.
    All,
    /// These channel types.
    List(Vec<ChannelType>),
}

impl RequireTls {
    /// Whether channel type `ct` must be TLS.
    pub fn requires(&self, ct: ChannelType) -> bool {
        match self {
            Self::None => false,
            Self::All => true,
            Self::List(l) => l.contains(&ct),
        }
    }
}

/// The session a channel belongs to, once known.
type SessionSlot = Arc<Mutex<Option<Arc<Session>>>>;

/// Serves one accepted client connection until it closes. `client_tls`
/// describes the client leg's TLS session, if it is TLS.
pub async fn serve(mut client: BoxedStream, client_tls: Option<TlsInfo>, peer: SocketAddr, shared: Arc<Shared>) {
    let accepted = SystemTime::now();
    let opened = OffsetDateTime::now_utc();
    let require = |ct| shared.require_client_tls.requires(ct);
    let policy = LinkPolicy {
        upstream: &shared.upstream,
        client_tls: client_tls.is_some(),
        require_client_tls: &require,
        display_caps_removed: shared.display_caps_removed,
    };
    let linked = match &shared.tokens {
        None => link_stage::run(&mut client, &policy).await.map(|(s, e)| (s, e, None)),
        Some(auth) => token_link::run(&mut client, &policy, auth, peer).await.map(|(s, e, o)| (s, e, Some(o))),
    };
    let (stage, end, token) = match linked {
        Ok(x) => x,
        Err(e) => {
            // The TLS leg to the server failed (not merely refused).
            if let link_stage::LinkStageError::Upstream { address, error } = &e
                && address.starts_with("TLS ")
                && error.kind() != std::io::ErrorKind::ConnectionRefused
            {
                shared.metrics.tls_handshake("upstream", false);
            }
            tracing::warn!(client = %peer, error = %e, "connection closed during link stage");
            return;
        }
    };
    let span = tracing::info_span!(
        "channel",
        client = %peer,
        channel = %stage.mess.channel_type,
        id = stage.mess.channel_id,
    );
    let linked = Linked { stage, end, token, client_tls, accepted, opened };
    serve_linked(client, peer, shared, linked).instrument(span).await;
}

/// What the link stage produced for a connection.
struct Linked {
    stage: LinkStage,
    end: LinkEnd,
    token: Option<TokenOutcome>,
    client_tls: Option<TlsInfo>,
    accepted: SystemTime,
    opened: OffsetDateTime,
}

async fn serve_linked(client: BoxedStream, peer: SocketAddr, shared: Arc<Shared>, linked: Linked) {
    let Linked { stage, end, token, client_tls, accepted, opened } = linked;
    let ct = stage.mess.channel_type;
    let key = shared.sessions.next_key();
    let mut report = ChannelReport::new(ct, stage.mess.channel_id, stage.mess.connection_id, peer.to_string(), opened);
    report.client_caps = CapsReport::new(ct, &stage.mess.caps);
    report.client_tls = client_tls;
    report.upstream_address.clone_from(&stage.upstream_address);
    report.upstream_tls.clone_from(&stage.upstream_tls);
    report.upstream_upgraded_to_tls = stage.upgraded_to_tls;
    report.answered_by_proxy = stage.answered_by_proxy.map(|e| e.name().into_owned());
    report.caps_removed_upstream.clone_from(&stage.caps_removed_upstream);
    if let Some(t) = &token {
        report.auth_mode = "tokens".into();
        report.target.clone_from(&t.target);
        report.denied.clone_from(&t.denied);
        report.caps_removed_upstream.clone_from(&t.removed_caps);
        report.caps_differences.clone_from(&t.caps_differences);
        report.vm_caps = t.vm_caps.as_ref().map(|c| CapsReport::new(ct, c));
        if t.denied.is_some() {
            shared.metrics.token_login(false);
        } else if t.target.is_some() {
            shared.metrics.token_login(true);
        }
    }
    if stage.upstream_tls.is_some() {
        shared.metrics.tls_handshake("upstream", true);
    }
    if let Some(reply) = &stage.reply {
        report.server_caps = CapsReport::new(ct, &reply.caps);
    }
    report.auth_mechanism = stage.auth_mechanism.map(|m| match m {
        SPICE_AUTH_SPICE => "SPICE_AUTH_SPICE".to_string(),
        SPICE_AUTH_SASL => "SPICE_AUTH_SASL".to_string(),
        other => format!("SPICE_AUTH_{other}"),
    });

    let capture = shared.sessions.capturing().then(|| {
        let mut c = ChannelTap::pending(key, ct);
        for p in &stage.pieces {
            c.link(p.dir, p.at, p.bytes.clone());
        }
        Arc::new(Mutex::new(c))
    });
    let slot: SessionSlot = Arc::new(Mutex::new(None));
    let live = Arc::new(LiveChannel {
        key,
        channel_type: ct,
        channel_id: stage.mess.channel_id,
        bytes: [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))],
    });
    let binder = Binder {
        live: live.clone(),
        sessions: shared.sessions.clone(),
        capture: capture.clone(),
        slot: slot.clone(),
        report: report.clone(),
        key,
        channel_id: stage.mess.channel_id,
        client: peer.to_string(),
        opened,
        accepted,
        audit: shared.tokens.as_ref().and_then(|t| t.audit.clone()),
        index: index_row(&shared, token.as_ref(), &stage, peer, opened),
    };
    // Channels other than a new main channel know their session now.
    let main_pending = ct == ChannelType::MAIN && stage.mess.connection_id == 0;
    if !main_pending {
        binder.bind(stage.mess.connection_id);
    }

    let link_bytes = [stage.bytes(Direction::ClientToServer), stage.bytes(Direction::ServerToClient)];
    let linked = matches!(end, LinkEnd::Linked { .. });
    let channel_name = ct.name();
    if linked {
        shared.metrics.channel_linked(&channel_name, accepted.elapsed().unwrap_or_default());
    }
    let (first, reason, error) = match end {
        LinkEnd::Refused(err) if stage.answered_by_proxy.is_some() => {
            tracing::info!(link_error = %err, "plain client on a channel that requires TLS; answered NEED_SECURED");
            report.link_error = Some(err.name().into_owned());
            shared.metrics.link_error(&err.name());
            (Direction::ServerToClient, "link_failed", Some(format!("spicetap answered {err} (--require-client-tls)")))
        }
        LinkEnd::Refused(err) => {
            tracing::warn!(link_error = %err, "server refused the link; refusal forwarded to the client");
            report.link_error = Some(err.name().into_owned());
            shared.metrics.link_error(&err.name());
            (Direction::ServerToClient, "link_failed", Some(format!("server answered {err}")))
        }
        LinkEnd::Failed(text) => {
            tracing::warn!(error = %text, "link stage failed");
            (Direction::ClientToServer, "link_failed", Some(text))
        }
        LinkEnd::Linked { upstream, framing } => {
            report.header_kind = framing;
            tracing::info!(
                header = ?framing.map(HeaderKind::size),
                connection_id = stage.mess.connection_id,
                "channel linked"
            );
            if let Some(c) = &capture {
                c.lock().unwrap_or_else(PoisonError::into_inner).start_messages(framing);
            }
            let hook: Option<SessionIdHook> = main_pending.then(|| {
                let binder = binder.clone();
                Box::new(move |id: u32| binder.bind(id)) as SessionIdHook
            });
            let debug = shared.debug_channels.contains(&ct);
            let mut c2s =
                Observer::new(ct, Direction::ClientToServer, framing.map(Framer::new), capture.clone(), None, debug)
                    .with_live(live.bytes[0].clone());
            let mut s2c =
                Observer::new(ct, Direction::ServerToClient, framing.map(Framer::new), capture.clone(), hook, debug)
                    .with_live(live.bytes[1].clone());
            // Token mode: the client must never learn a VM's address.
            let mut filter = (token.is_some() && ct == ChannelType::MAIN)
                .then(|| framing.map(|k| MessageFilter::new(k, is_main_migrate)))
                .flatten();
            // --usb-disk, --share-dir: the channels spicetap links itself
            // are withheld from the client's channel list.
            let (stop_tx, stop_rx) = watch::channel(false);
            let withheld = Arc::new(Mutex::new(Vec::new()));
            // Where the injected channels go: the upstream, or in token
            // mode the client's target with its password.
            let wanted = shared.usb_disk.is_some() || shared.share_dir.is_some();
            let inject_to = match (wanted, &token) {
                (false, _) => None,
                (true, None) => Some((shared.upstream.clone(), None)),
                (true, Some(t)) => t.reached.as_ref().map(|r| (r.upstream.clone(), Some(r.password.to_vec()))),
            };
            let injector = match (inject_to, framing) {
                (Some((upstream, password)), Some(kind)) if ct == ChannelType::MAIN => {
                    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                    let drop = if token.is_some() { is_main_migrate } else { |_| false };
                    let choice = Withhold { usbredir: shared.usb_disk.is_some(), webdav: shared.share_dir.is_some() };
                    filter =
                        Some(MessageFilter::new(kind, drop).with_rewrite(
                            SPICE_MSG_MAIN_CHANNELS_LIST,
                            withhold_channels(choice, tx, withheld.clone()),
                        ));
                    let disk = shared.usb_disk.as_ref().map(|d| match &password {
                        Some(p) => Arc::new(UsbDiskConfig { password: Some(p.clone()), ..(**d).clone() }),
                        None => d.clone(),
                    });
                    let share = shared.share_dir.as_ref().map(|s| match &password {
                        Some(p) => Arc::new(ShareConfig { password: Some(p.clone()), ..(**s).clone() }),
                        None => s.clone(),
                    });
                    let task = InjectTask {
                        channels: rx,
                        stop: stop_rx,
                        shared: shared.clone(),
                        slot: slot.clone(),
                        upstream,
                        disk,
                        share,
                    };
                    Some(tokio::spawn(inject_channels(task)))
                }
                _ => None,
            };
            // A revoked token (fleet database) stops the relay like a
            // proxy shutdown does.
            let revocation = token.as_ref().and_then(|t| t.reached.as_ref()?.revocation.clone());
            let stop = match &revocation {
                None => shared.shutdown.clone(),
                Some(r) => stop_on_either(shared.shutdown.clone(), r.revoked.clone()),
            };
            let (first, mut reason, error) =
                relay_both(client, upstream, &mut c2s, &mut s2c, filter.as_mut(), &stop).await;
            if reason == "proxy_shutdown" && revocation.is_some_and(|r| *r.revoked.borrow()) {
                tracing::info!("token revoked; channel closed");
                reason = "revoked";
            }
            let _ = stop_tx.send(true);
            if token.is_some() {
                report.migrate_messages_withheld = filter.map(|f| f.dropped);
            } else {
                drop(filter);
            }
            report.channels_withheld = withheld.lock().unwrap_or_else(PoisonError::into_inner).clone();
            if let Some(task) = injector {
                // The injected channel ends with its main channel.
                let _ = task.await;
            }
            report.client_to_server =
                DirectionReport::from_counts(ct, Direction::ClientToServer, c2s.bytes, &c2s.counts);
            report.server_to_client =
                DirectionReport::from_counts(ct, Direction::ServerToClient, s2c.bytes, &s2c.counts);
            (first, reason, error)
        }
    };
    report.client_to_server.bytes += link_bytes[0];
    report.server_to_client.bytes += link_bytes[1];
    report.closed = Some(rfc3339(OffsetDateTime::now_utc()));
    report.end = Some(EndReport { reason: reason.to_string(), error: error.clone() });
    tracing::info!(
        reason,
        error = error.as_deref().unwrap_or(""),
        c2s_bytes = report.client_to_server.bytes,
        s2c_bytes = report.server_to_client.bytes,
        "channel closed"
    );

    // A main channel that never saw MAIN_INIT forms a session of its own.
    let bound = slot.lock().unwrap_or_else(PoisonError::into_inner).is_some();
    if !bound {
        binder.bind(0);
    }
    let (target, c2s_bytes, s2c_bytes) =
        (report.target.clone(), report.client_to_server.bytes, report.server_to_client.bytes);
    let session = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
    if let Some((fleet, row)) = &binder.index {
        fleet.index(IndexRow {
            session_id: session.as_ref().map(|s| s.id),
            folder: session.as_ref().and_then(|s| s.folder.as_ref()).map(|f| f.display().to_string()),
            closed: Some(OffsetDateTime::now_utc()),
            c2s_bytes: Some(c2s_bytes),
            s2c_bytes: Some(s2c_bytes),
            end_reason: Some(reason.to_string()),
            ..row.clone()
        });
    }
    let mut capture_lost = report.capture_loss.is_some();
    if let Some(c) = &capture {
        let mut c = c.lock().unwrap_or_else(PoisonError::into_inner);
        c.close(first, SystemTime::now());
        if report.capture_loss.is_none() {
            report.capture_loss = c.loss_of("capture").map(str::to_string);
        }
        capture_lost = report.capture_loss.is_some();
        if let Some(tap) = session.as_ref().and_then(|s| s.tap.as_ref()) {
            tap.reports().channel_closed(key, Box::new(report));
        }
    }
    if linked {
        shared.metrics.channel_closed(&channel_name, c2s_bytes, s2c_bytes, capture_lost);
    }
    if let Some(s) = session {
        s.channels.lock().unwrap_or_else(PoisonError::into_inner).retain(|c| c.key != key);
        let ended = shared.sessions.leave(&s);
        if let Some(audit) = shared.tokens.as_ref().and_then(|t| t.audit.as_ref()) {
            let base = AuditEvent {
                client: peer.to_string(),
                target: target.clone(),
                session_id: Some(s.id),
                ..AuditEvent::default()
            };
            audit.record(AuditEvent {
                event: "channel_ended",
                reason: Some(reason.to_string()),
                channel: Some(ct.name().into_owned()),
                c2s_bytes: Some(c2s_bytes),
                s2c_bytes: Some(s2c_bytes),
                ..base.clone()
            });
            if ended {
                audit.record(AuditEvent { event: "session_ended", ..base });
            }
        }
    }
}

/// `SPICE_MSG_MAIN_CHANNELS_LIST` (spice-protocol `enums.h`).
pub const SPICE_MSG_MAIN_CHANNELS_LIST: u16 = 104;

/// Which channels the list rewrite takes out for spicetap to link.
#[derive(Debug, Clone, Copy)]
pub struct Withhold {
    /// The highest-numbered usbredir channel (`--usb-disk`).
    pub usbredir: bool,
    /// The webdav channel, (11, 0) (`--share-dir`).
    pub webdav: bool,
}

/// The rewrite of `SPICE_MSG_MAIN_CHANNELS_LIST` (u32 count, then count x
/// {u8 type, u8 id}) for the injected channels: the channels `choice` asks
/// for are taken out of the list that first announces them (and of later
/// lists), sent to the injection task, and the change recorded in
/// `withheld`. A server without such a channel in its first list is
/// recorded too (`none: ...`); the session goes on. A list shorter than
/// its count is passed on unchanged.
pub fn withhold_channels(
    choice: Withhold,
    tx: tokio::sync::mpsc::UnboundedSender<(ChannelType, u8)>,
    withheld: Arc<Mutex<Vec<String>>>,
) -> super::relay::Rewrite {
    // Per wanted channel: its type, what it is for, and the id chosen.
    let mut wanted: Vec<(ChannelType, &'static str, Option<u8>)> = Vec::new();
    if choice.usbredir {
        wanted.push((ChannelType::USBREDIR, "--usb-disk", None));
    }
    if choice.webdav {
        wanted.push((ChannelType::WEBDAV, "--share-dir", None));
    }
    let mut first = true;
    Box::new(move |body: &[u8]| {
        let Some((count, entries)) = body.split_first_chunk::<4>() else { return body.to_vec() };
        let n = u32::from_le_bytes(*count) as usize;
        let Some(entries) = entries.get(..n.saturating_mul(2)) else { return body.to_vec() };
        let pairs: Vec<(u8, u8)> = entries.chunks_exact(2).map(|p| (p[0], p[1])).collect();
        let note = |text: String| withheld.lock().unwrap_or_else(PoisonError::into_inner).push(text);
        for (ct, option, chosen) in wanted.iter_mut().filter(|w| w.2.is_none()) {
            // usbredir: the highest-numbered one (the client takes the
            // lowest first); webdav: the one spice-gtk uses, id 0.
            let mut ids = pairs.iter().filter(|p| p.0 == ct.0).map(|p| p.1);
            *chosen = if *ct == ChannelType::USBREDIR { ids.max() } else { ids.find(|&id| id == 0) };
            match chosen {
                Some(id) => {
                    let _ = tx.send((*ct, *id));
                }
                None if first => {
                    tracing::warn!(option, channel = %ct.name(), "the server has no such channel; the session goes on without it");
                    note(format!("none: no {} channel", ct.name()));
                }
                None => {}
            }
        }
        first = false;
        let taken = |p: &(u8, u8)| wanted.iter().any(|w| w.2.map(|id| (w.0.0, id)) == Some(*p));
        if !pairs.iter().any(taken) {
            return body.to_vec();
        }
        let mut kept = Vec::new();
        for p in &pairs {
            if taken(p) {
                note(format!("{} {}", ChannelType(p.0).name(), p.1));
            } else {
                kept.push(*p);
            }
        }
        let mut out = (kept.len() as u32).to_le_bytes().to_vec();
        for (t, i) in kept {
            out.extend_from_slice(&[t, i]);
        }
        out.extend_from_slice(&body[4 + n * 2..]);
        out
    })
}

/// The channels spicetap links in one session: waits for the channel ids
/// the list rewrite picks, and runs each until the main channel ends.
struct InjectTask {
    channels: tokio::sync::mpsc::UnboundedReceiver<(ChannelType, u8)>,
    stop: watch::Receiver<bool>,
    shared: Arc<Shared>,
    slot: SessionSlot,
    upstream: Arc<super::upstream::Upstream>,
    disk: Option<Arc<UsbDiskConfig>>,
    share: Option<Arc<ShareConfig>>,
}

async fn inject_channels(mut task: InjectTask) {
    let mut running = tokio::task::JoinSet::new();
    let mut stop = task.stop.clone();
    loop {
        let next = tokio::select! {
            next = task.channels.recv() => next,
            _ = stop.wait_for(|&s| s) => None,
        };
        let Some((ct, id)) = next else { break };
        running.spawn(inject_channel(
            ct,
            id,
            task.stop.clone(),
            task.shared.clone(),
            task.slot.clone(),
            task.upstream.clone(),
            task.disk.clone(),
            task.share.clone(),
        ));
    }
    while running.join_next().await.is_some() {}
}

/// One injected channel: joins the session (so it does not end before the
/// channel), reports like a client's channel, links upstream and serves.
#[allow(clippy::too_many_arguments)]
async fn inject_channel(
    ct: ChannelType,
    channel_id: u8,
    stop: watch::Receiver<bool>,
    shared: Arc<Shared>,
    slot: SessionSlot,
    upstream: Arc<super::upstream::Upstream>,
    disk: Option<Arc<UsbDiskConfig>>,
    share: Option<Arc<ShareConfig>>,
) {
    use crate::inject::spicevmc::{InjectError, Recorder, Traffic};
    let who = if ct == ChannelType::WEBDAV { "spicetap --share-dir" } else { "spicetap --usb-disk" };
    let Some(main_session) = slot.lock().unwrap_or_else(PoisonError::into_inner).clone() else {
        tracing::warn!("{who}: channel list before the session id; nothing injected in this session");
        return;
    };
    let opened = OffsetDateTime::now_utc();
    let accepted = SystemTime::now();
    let (session, _) = shared.sessions.join(main_session.id, who, opened);
    let key = shared.sessions.next_key();
    let mut report = ChannelReport::new(ct, channel_id, session.id, who.into(), opened);
    let tap = session.tap.as_ref().map(|t| {
        let c = Arc::new(Mutex::new(ChannelTap::pending(key, ct)));
        t.reports().channel_opened(key, Box::new(report.clone()));
        c.lock().unwrap_or_else(PoisonError::into_inner).attach(t, channel_id, accepted);
        c
    });
    let traffic = Arc::new(Traffic::default());
    let record = Recorder::new(tap.clone(), traffic.clone());
    let leg = upstream.first_leg(ct);
    let result = match upstream.connect(leg).await {
        Ok(up) => {
            report.upstream_address = Some(up.address.clone());
            report.upstream_tls.clone_from(&up.tls);
            match (ct, &disk, &share) {
                (ChannelType::USBREDIR, Some(d), _) => {
                    crate::inject::usb_channel::run(up.stream, session.id, channel_id, d, &record, stop).await
                }
                (ChannelType::WEBDAV, _, Some(s)) => {
                    crate::inject::webdav_channel::run(up.stream, session.id, channel_id, s, &record, stop).await
                }
                _ => Ok(()),
            }
        }
        Err(e) => Err(InjectError::Io(e)),
    };
    let (reason, error) = match &result {
        Ok(()) => ("client_closed", None),
        Err(e) => {
            tracing::error!(channel_id, error = %e, "{who}: the channel could not be served");
            ("error", Some(e.to_string()))
        }
    };
    report.client_to_server.bytes = traffic.to_server.load(std::sync::atomic::Ordering::Relaxed);
    report.server_to_client.bytes = traffic.from_server.load(std::sync::atomic::Ordering::Relaxed);
    report.closed = Some(rfc3339(OffsetDateTime::now_utc()));
    report.end = Some(EndReport { reason: reason.to_string(), error });
    if let (Some(c), Some(t)) = (&tap, &session.tap) {
        let mut c = c.lock().unwrap_or_else(PoisonError::into_inner);
        c.close(Direction::ClientToServer, SystemTime::now());
        report.capture_loss = c.loss_of("capture").map(str::to_string);
        t.reports().channel_closed(key, Box::new(report));
    }
    shared.sessions.leave(&session);
}

/// A stop signal that turns `true` when either `a` or `b` does; the task
/// behind it ends then, or when every receiver is gone.
fn stop_on_either(mut a: watch::Receiver<bool>, mut b: watch::Receiver<bool>) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(*a.borrow() || *b.borrow());
    tokio::spawn(async move {
        tokio::select! {
            _ = a.wait_for(|v| *v) => {}
            _ = b.wait_for(|v| *v) => {}
            () = tx.closed() => return,
        }
        let _ = tx.send(true);
    });
    rx
}

/// `SPICE_MSG_MAIN_MIGRATE_*` (spice-protocol `enums.h`): BEGIN 101,
/// CANCEL 102, SWITCH_HOST 111, END 112, BEGIN_SEAMLESS 116,
/// DST_SEAMLESS_ACK 117, DST_SEAMLESS_NACK 118.
fn is_main_migrate(msg_type: u16) -> bool {
    matches!(msg_type, 101 | 102 | 111 | 112 | 116..=118)
}

/// Relays both directions; returns the side that closed first and why the
/// connection ended.
async fn relay_both(
    client: BoxedStream,
    upstream: BoxedStream,
    c2s: &mut Observer,
    s2c: &mut Observer,
    s2c_filter: Option<&mut MessageFilter>,
    shutdown: &watch::Receiver<bool>,
) -> (Direction, &'static str, Option<String>) {
    let (cr, cw) = tokio::io::split(client);
    let (sr, sw) = tokio::io::split(upstream);
    let up = relay(cr, sw, c2s, None, shutdown.clone());
    let down = relay(sr, cw, s2c, s2c_filter, shutdown.clone());
    tokio::pin!(up, down);
    // After an orderly close of one direction the other runs to its end;
    // how that end went is recorded too when it failed.
    let (first, end, second) = tokio::select! {
        e = &mut up => {
            let second = if matches!(e, RelayEnd::Eof) { Some((&mut down).await) } else { None };
            (Direction::ClientToServer, e, second)
        }
        e = &mut down => {
            let second = if matches!(e, RelayEnd::Eof) { Some((&mut up).await) } else { None };
            (Direction::ServerToClient, e, second)
        }
    };
    let (reason, error) = match end {
        RelayEnd::Eof if first == Direction::ClientToServer => ("client_closed", None),
        RelayEnd::Eof => ("server_closed", None),
        RelayEnd::Reset if first == Direction::ClientToServer => ("client_closed", Some("connection reset".into())),
        RelayEnd::Reset => ("server_closed", Some("connection reset".into())),
        RelayEnd::Shutdown => ("proxy_shutdown", None),
        RelayEnd::Failed(e) => ("error", Some(e)),
        RelayEnd::TooLarge(e) => {
            tracing::warn!(error = %e, "absurd message size; channel closed");
            ("message_too_large", Some(e.to_string()))
        }
    };
    let error = match second {
        Some(RelayEnd::Failed(e)) => {
            tracing::warn!(error = %e, "the other direction failed after an orderly close");
            Some(e)
        }
        Some(RelayEnd::TooLarge(e)) => Some(e.to_string()),
        _ => error,
    };
    (first, reason, error)
}

/// Puts a channel into its session once the session id is known.
#[derive(Clone)]
struct Binder {
    /// The channel's byte counters, listed in its session.
    live: Arc<LiveChannel>,
    sessions: Arc<Sessions>,
    capture: Option<Arc<Mutex<ChannelTap>>>,
    slot: SessionSlot,
    report: ChannelReport,
    key: u64,
    channel_id: u8,
    client: String,
    opened: OffsetDateTime,
    accepted: SystemTime,
    audit: Option<AuditLog>,
    /// The fleet database's session index, and this channel's row.
    index: Option<(Arc<Fleet>, IndexRow)>,
}

/// The session index row of a channel whose token the fleet database
/// accepted (`--db`); `None` otherwise.
fn index_row(
    shared: &Shared,
    token: Option<&TokenOutcome>,
    stage: &LinkStage,
    peer: SocketAddr,
    opened: OffsetDateTime,
) -> Option<(Arc<Fleet>, IndexRow)> {
    let TargetSource::Fleet(fleet) = &shared.tokens.as_ref()?.targets else { return None };
    let reached = token?.reached.as_ref()?;
    let row = IndexRow {
        channel_key: rand::random(),
        node: fleet.node().to_string(),
        session_id: None,
        target: token?.target.clone(),
        token_id: reached.token_id,
        client: peer.to_string(),
        channel: stage.mess.channel_type.name().into_owned(),
        channel_id: stage.mess.channel_id,
        folder: None,
        opened,
        closed: None,
        c2s_bytes: None,
        s2c_bytes: None,
        end_reason: None,
    };
    Some((fleet.clone(), row))
}

impl Binder {
    fn bind(&self, id: u32) {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_some() {
            return;
        }
        let (session, new) = self.sessions.join(id, &self.client, self.opened);
        if new && let Some(audit) = &self.audit {
            audit.record(AuditEvent {
                event: "session_started",
                client: self.client.clone(),
                target: self.report.target.clone(),
                session_id: Some(id),
                ..AuditEvent::default()
            });
        }
        if let (Some(c), Some(tap)) = (&self.capture, &session.tap) {
            tap.reports().channel_opened(self.key, Box::new(self.report.clone()));
            c.lock().unwrap_or_else(PoisonError::into_inner).attach(tap, self.channel_id, self.accepted);
        }
        if let Some((fleet, row)) = &self.index {
            let folder = session.folder.as_ref().map(|f| f.display().to_string());
            fleet.index(IndexRow { session_id: Some(id), folder, ..row.clone() });
        }
        tracing::debug!(session_id = id, "channel joined session");
        session.channels.lock().unwrap_or_else(PoisonError::into_inner).push(self.live.clone());
        *slot = Some(session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USB: Withhold = Withhold { usbredir: true, webdav: false };

    #[test]
    fn the_highest_usbredir_channel_is_withheld_from_every_list() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let withheld = Arc::new(Mutex::new(Vec::new()));
        let mut rewrite = withhold_channels(USB, tx, withheld.clone());
        // main 0, display 0, usbredir 0 and 1, webdav 0.
        let list = [5, 0, 0, 0, 1, 0, 2, 0, 9, 0, 9, 1, 11, 0];
        assert_eq!(rewrite(&list), [4, 0, 0, 0, 1, 0, 2, 0, 9, 0, 11, 0]);
        assert_eq!(rx.try_recv(), Ok((ChannelType::USBREDIR, 1)));
        // A later single-entry announcement of the same channel is withheld too.
        assert_eq!(rewrite(&[1, 0, 0, 0, 9, 1]), [0, 0, 0, 0]);
        assert_eq!(rewrite(&[1, 0, 0, 0, 3, 0]), [1, 0, 0, 0, 3, 0]);
        assert_eq!(*withheld.lock().unwrap(), ["usbredir 1", "usbredir 1"]);
        // A truncated list passes unchanged.
        assert_eq!(rewrite(&[9, 0, 0, 0, 9, 1]), [9, 0, 0, 0, 9, 1]);
    }

    #[test]
    fn a_server_without_usbredir_is_recorded() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let withheld = Arc::new(Mutex::new(Vec::new()));
        let mut rewrite = withhold_channels(USB, tx, withheld.clone());
        assert_eq!(rewrite(&[1, 0, 0, 0, 1, 0]), [1, 0, 0, 0, 1, 0]);
        assert!(rx.try_recv().is_err());
        assert_eq!(*withheld.lock().unwrap(), ["none: no usbredir channel"]);
    }

    #[test]
    fn the_webdav_channel_is_withheld_alone_or_with_usbredir() {
        let list = [5, 0, 0, 0, 1, 0, 2, 0, 9, 0, 9, 1, 11, 0];
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let withheld = Arc::new(Mutex::new(Vec::new()));
        let mut rewrite = withhold_channels(Withhold { usbredir: false, webdav: true }, tx, withheld.clone());
        assert_eq!(rewrite(&list), [4, 0, 0, 0, 1, 0, 2, 0, 9, 0, 9, 1]);
        assert_eq!(rx.try_recv(), Ok((ChannelType::WEBDAV, 0)));
        assert_eq!(*withheld.lock().unwrap(), ["webdav 0"]);

        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let withheld = Arc::new(Mutex::new(Vec::new()));
        let mut rewrite = withhold_channels(Withhold { usbredir: true, webdav: true }, tx, withheld.clone());
        assert_eq!(rewrite(&list), [3, 0, 0, 0, 1, 0, 2, 0, 9, 0]);
        assert_eq!(rx.try_recv(), Ok((ChannelType::USBREDIR, 1)));
        assert_eq!(rx.try_recv(), Ok((ChannelType::WEBDAV, 0)));
        assert_eq!(*withheld.lock().unwrap(), ["usbredir 1", "webdav 0"]);

        // No webdav port on the server: recorded once; a later
        // announcement is still taken.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let withheld = Arc::new(Mutex::new(Vec::new()));
        let mut rewrite = withhold_channels(Withhold { usbredir: false, webdav: true }, tx, withheld.clone());
        assert_eq!(rewrite(&[1, 0, 0, 0, 1, 0]), [1, 0, 0, 0, 1, 0]);
        assert_eq!(rewrite(&[1, 0, 0, 0, 1, 1]), [1, 0, 0, 0, 1, 1]);
        assert_eq!(rewrite(&[1, 0, 0, 0, 11, 0]), [0, 0, 0, 0]);
        assert_eq!(rx.try_recv(), Ok((ChannelType::WEBDAV, 0)));
        assert_eq!(*withheld.lock().unwrap(), ["none: no webdav channel", "webdav 0"]);
    }
}

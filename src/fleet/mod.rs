//! A fleet of spicetap nodes sharing one PostgreSQL database (`--db URL`):
//! targets, tokens, the audit log and the session index.
//!
//! ```text
//!            load balancer (TCP)
//!          /         |          \
//!     node a      node b      node c      each: token logins, recording
//!          \         |          /
//!        PostgreSQL: targets, tokens (HMAC), audit, session_channels
//!                    NOTIFY spicetap_revoke ──> every node (LISTEN)
//! ```
//!
//! - [`secrets`]: tokens stored as HMAC-SHA-256, VM passwords sealed with
//!   AES-256-GCM; both keys are files on the nodes, never in the database.
//! - [`migrate`]: the schema, versioned in `src/fleet/migrations/`.
//! - [`store`]: the rows and statements (admin commands and nodes).
//! - [`Fleet`]: a node's connections. One task keeps the lookup
//!   connection up (reconnecting with back-off) and listens for
//!   revocations; one task writes audit events and index rows from a
//!   bounded queue on a connection of its own, in batched transactions, so
//!   a slow or absent database never blocks a channel. Token lookups fail
//!   closed while the database is away.

pub mod migrate;
pub mod secrets;
pub mod store;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use thiserror::Error;
use time::OffsetDateTime;
use tokio::sync::{Notify, watch};
use tokio_postgres::{AsyncMessage, Client, NoTls};

use crate::auth::audit::{AuditEvent, AuditSink};
use crate::auth::targets::parse_tls_channels;
use crate::proxy::upstream::Upstream;
use crate::tls::subject::HostSubject;
use crate::tls::{UpstreamVerify, client_config_pem};
use secrets::Keys;
use store::{IndexRow, REVOKE_CHANNEL};

/// Audit events and index rows waiting for the database at most; more are
/// counted as lost (the error log gives the count at every power of two).
pub const MAX_QUEUED_WRITES: usize = 10_000;
/// How long a token lookup may wait for the database before the login is
/// refused.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Why a fleet database operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FleetError {
    /// The database refused a statement or the connection failed.
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// No target of that name.
    #[error("no target named {0:?}")]
    NoTarget(String),
    /// A key file or a sealed password.
    #[error(transparent)]
    Secrets(#[from] secrets::SecretsError),
}

/// Connects once (admin commands): the connection is driven by a task of
/// its own until the client is dropped.
///
/// # Errors
/// [`FleetError::Db`] when the database is unreachable or refuses.
pub async fn connect(url: &str) -> Result<Client, FleetError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "database connection ended");
        }
    });
    Ok(client)
}

/// What a token leads to, according to the fleet database.
pub enum FleetLookup {
    /// A valid token.
    Found(FleetTarget),
    /// No token with this hash.
    Unknown,
    /// The token of `target` has expired.
    Expired(String),
    /// The token of `target` was revoked, or its target removed.
    Revoked(String),
    /// The database is unreachable or slow: logins fail closed.
    Unavailable(String),
    /// The target's password does not open with this node's key.
    Unusable(String),
}

/// A target reached by a valid token.
pub struct FleetTarget {
    /// Target name.
    pub name: String,
    /// Token id.
    pub token_id: i64,
    /// The VM's SPICE password.
    pub password: Vec<u8>,
    /// How to reach the VM.
    pub upstream: Arc<Upstream>,
    /// Becomes `true` when the token is revoked; the channel's relay stops.
    pub revocation: Revocation,
}

/// A channel's registration for revocation: its receiver turns `true` when
/// the token is revoked or its target removed. Dropping the last clone
/// unregisters it.
#[derive(Clone)]
pub struct Revocation {
    /// Turns `true` on revocation.
    pub revoked: watch::Receiver<bool>,
    _registration: Arc<Registration>,
}

impl std::fmt::Debug for Revocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocation").field("revoked", &*self.revoked.borrow()).finish()
    }
}

struct Registration {
    fleet: std::sync::Weak<Fleet>,
    key: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(f) = self.fleet.upgrade() {
            f.registry.lock().unwrap_or_else(PoisonError::into_inner).entries.remove(&self.key);
        }
    }
}

#[derive(Default)]
struct Registry {
    next: u64,
    entries: HashMap<u64, Entry>,
}

struct Entry {
    token_id: i64,
    target: String,
    tx: watch::Sender<bool>,
}

/// A write waiting for the database.
enum Write {
    Audit(AuditEvent),
    Index(IndexRow),
    TokenUsed(i64, OffsetDateTime),
}

/// A node's share of the fleet database.
pub struct Fleet {
    node: String,
    keys: Keys,
    client: watch::Sender<Option<Arc<Client>>>,
    writes: Mutex<VecDeque<Write>>,
    wake: Notify,
    lost: AtomicU64,
    registry: Mutex<Registry>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").field("node", &self.node).finish_non_exhaustive()
    }
}

impl Fleet {
    /// Starts a node's connection to the database at `url` (a
    /// `postgres://` URL or key=value string) and its writer; returns at
    /// once: logins fail closed until the first connection is up.
    pub fn start(url: String, node: String, keys: Keys) -> Arc<Self> {
        let fleet = Arc::new(Self {
            node,
            keys,
            client: watch::Sender::new(None),
            writes: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            lost: AtomicU64::new(0),
            registry: Mutex::new(Registry::default()),
        });
        tokio::spawn(supervise(fleet.clone(), url.clone()));
        tokio::spawn(write_queue(fleet.clone(), url));
        fleet
    }

    /// This node's name (in audit events and index rows).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Waits until the database is connected, at most `limit`.
    pub async fn connected(&self, limit: Duration) -> bool {
        let mut rx = self.client.subscribe();
        tokio::time::timeout(limit, rx.wait_for(Option::is_some)).await.is_ok_and(|r| r.is_ok())
    }

    /// Looks `token` up by its keyed hash; a valid token's channel is
    /// registered for revocation and the token marked used.
    pub async fn lookup(self: &Arc<Self>, token: &[u8]) -> FleetLookup {
        let Some(client) = self.client.borrow().clone() else {
            return FleetLookup::Unavailable("not connected to the fleet database".into());
        };
        let hash = self.keys.token_hash(token);
        let row = match tokio::time::timeout(LOOKUP_TIMEOUT, store::lookup_token(&client, &hash)).await {
            Err(_) => {
                return FleetLookup::Unavailable(format!("fleet database did not answer within {LOOKUP_TIMEOUT:?}"));
            }
            Ok(Err(e)) => return FleetLookup::Unavailable(e.to_string()),
            Ok(Ok(None)) => return FleetLookup::Unknown,
            Ok(Ok(Some(row))) => row,
        };
        let Some(vm) = row.vm else { return FleetLookup::Revoked(row.target) };
        if row.revoked.is_some() {
            return FleetLookup::Revoked(row.target);
        }
        let now = OffsetDateTime::now_utc();
        if row.expires <= now {
            return FleetLookup::Expired(row.target);
        }
        let password = match self.keys.open(&row.target, &vm.password_sealed) {
            Ok(p) => p,
            Err(e) => return FleetLookup::Unusable(format!("target {}: {e}", row.target)),
        };
        let upstream = match upstream_of(&vm) {
            Ok(u) => Arc::new(u),
            Err(e) => return FleetLookup::Unusable(format!("target {}: {e}", row.target)),
        };
        let revocation = self.register(row.id, &row.target);
        self.queue(Write::TokenUsed(row.id, now));
        FleetLookup::Found(FleetTarget { name: row.target, token_id: row.id, password, upstream, revocation })
    }

    /// Queues a session index row (inserted, or updated by `channel_key`).
    pub fn index(&self, row: IndexRow) {
        self.queue(Write::Index(row));
    }

    fn register(self: &Arc<Self>, token_id: i64, target: &str) -> Revocation {
        let (tx, rx) = watch::channel(false);
        let mut reg = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        reg.next += 1;
        let key = reg.next;
        reg.entries.insert(key, Entry { token_id, target: target.into(), tx });
        Revocation { revoked: rx, _registration: Arc::new(Registration { fleet: Arc::downgrade(self), key }) }
    }

    /// A `NOTIFY spicetap_revoke` payload: `token:<id>` or `target:<name>`.
    fn revoke(&self, payload: &str) {
        let reg = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        let hit = |e: &Entry| match payload.split_once(':') {
            Some(("token", id)) => id.parse() == Ok(e.token_id),
            Some(("target", name)) => e.target == name,
            _ => false,
        };
        let mut closed = 0;
        for e in reg.entries.values().filter(|e| hit(e)) {
            closed += usize::from(!e.tx.send_replace(true));
        }
        tracing::info!(revoked = payload, channels = closed, "revocation received");
    }

    fn queue(&self, w: Write) {
        let mut q = self.writes.lock().unwrap_or_else(PoisonError::into_inner);
        if q.len() >= MAX_QUEUED_WRITES {
            let lost = self.lost.fetch_add(1, Ordering::Relaxed) + 1;
            if lost.is_power_of_two() {
                tracing::error!(lost, "fleet database write queue full; audit events and index rows lost");
            }
            return;
        }
        q.push_back(w);
        drop(q);
        self.wake.notify_one();
    }

    /// After a reconnection: tokens revoked while the node was away close
    /// their channels now (their notifications were missed).
    async fn recheck(&self, client: &Client) {
        let ids: Vec<i64> = {
            let reg = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
            reg.entries.values().map(|e| e.token_id).collect()
        };
        if ids.is_empty() {
            return;
        }
        match store::revoked_among(client, &ids).await {
            Ok(revoked) => {
                for id in revoked {
                    self.revoke(&format!("token:{id}"));
                }
            }
            Err(e) => tracing::warn!(error = %e, "rechecking live tokens after reconnecting failed"),
        }
    }
}

impl AuditSink for Fleet {
    fn record(&self, ev: &AuditEvent) {
        self.queue(Write::Audit(ev.clone()));
    }
}

/// Builds the upstream of a target row.
fn upstream_of(vm: &store::VmRow) -> Result<Upstream, String> {
    let channels = parse_tls_channels(&vm.upstream_tls_channels)?;
    let tls = match &vm.upstream_tls {
        None => None,
        Some(address) => {
            let verify = match &vm.host_subject {
                Some(s) => UpstreamVerify::Subject(HostSubject::parse(s).map_err(|e| e.to_string())?),
                None => UpstreamVerify::Hostname,
            };
            Some((address.clone(), client_config_pem(vm.ca_pem.as_deref(), verify).map_err(|e| e.to_string())?))
        }
    };
    Upstream::new(vm.upstream.clone(), tls, channels).map_err(|e| e.to_string())
}

/// Keeps the node connected: connects, listens for revocations, and on a
/// lost connection tries again with back-off (250 ms doubling to 2 s).
async fn supervise(fleet: Arc<Fleet>, url: String) {
    let mut backoff = Duration::from_millis(250);
    let mut was_up = true;
    loop {
        let attempt = tokio::time::timeout(Duration::from_secs(5), tokio_postgres::connect(&url, NoTls)).await;
        let (client, mut connection) = match attempt {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                if was_up {
                    tracing::error!(error = %e, "fleet database unreachable; token logins refused until it is back");
                }
                was_up = false;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            Err(_) => {
                was_up = false;
                continue;
            }
        };
        backoff = Duration::from_millis(250);
        let notified = fleet.clone();
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(m) = messages.next().await {
                match m {
                    Ok(AsyncMessage::Notification(n)) if n.channel() == REVOKE_CHANNEL => notified.revoke(n.payload()),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "fleet database connection failed");
                        break;
                    }
                }
            }
        });
        let client = Arc::new(client);
        if let Err(e) = client.batch_execute(&format!("LISTEN {REVOKE_CHANNEL}")).await {
            tracing::warn!(error = %e, "LISTEN failed; reconnecting");
            driver.abort();
            continue;
        }
        tracing::info!(node = %fleet.node, "fleet database connected");
        was_up = true;
        fleet.client.send_replace(Some(client.clone()));
        fleet.recheck(&client).await;
        let _ = driver.await;
        fleet.client.send_replace(None);
        tracing::error!("fleet database connection lost; token logins refused until it is back");
    }
}

/// Most queued writes committed in one transaction.
const WRITE_BATCH: usize = 256;

/// Writes queued audit events, index rows and token-use marks in order, on
/// a connection of its own (so lookups never wait behind a commit), up to
/// [`WRITE_BATCH`] per transaction. A failed connection keeps the batch for
/// the next one; a batch the database refuses is retried one write at a
/// time, and a write refused alone is dropped (counted as lost).
async fn write_queue(fleet: Arc<Fleet>, url: String) {
    let mut client: Option<Client> = None;
    let mut backoff = Duration::from_millis(250);
    loop {
        let empty = fleet.writes.lock().unwrap_or_else(PoisonError::into_inner).is_empty();
        if empty {
            let _ = tokio::time::timeout(Duration::from_secs(1), fleet.wake.notified()).await;
            continue;
        }
        let c = match &mut client {
            Some(c) if !c.is_closed() => c,
            _ => match tokio::time::timeout(Duration::from_secs(5), connect(&url)).await {
                Ok(Ok(c)) => {
                    backoff = Duration::from_millis(250);
                    client.insert(c)
                }
                _ => {
                    client = None;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            },
        };
        let batch: Vec<Write> = {
            let mut q = fleet.writes.lock().unwrap_or_else(PoisonError::into_inner);
            let n = q.len().min(WRITE_BATCH);
            q.drain(..n).collect()
        };
        match write_batch(c, &fleet.node, &batch).await {
            Ok(()) => {}
            Err(FleetError::Db(e)) if e.as_db_error().is_none() => {
                // The connection failed: the batch goes back to the front.
                let mut q = fleet.writes.lock().unwrap_or_else(PoisonError::into_inner);
                for w in batch.into_iter().rev() {
                    q.push_front(w);
                }
                client = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "fleet database refused a batch of writes; retrying them one by one");
                for w in batch {
                    if let Err(e) = write_batch(c, &fleet.node, std::slice::from_ref(&w)).await {
                        fleet.lost.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %e, "fleet database refused a write; dropped");
                    }
                }
            }
        }
    }
}

async fn write_batch(client: &mut Client, node: &str, batch: &[Write]) -> Result<(), FleetError> {
    let tx = client.transaction().await?;
    for w in batch {
        match w {
            Write::Audit(ev) => store::insert_audit(&tx, node, ev).await?,
            Write::Index(row) => store::upsert_index(&tx, row).await?,
            Write::TokenUsed(id, at) => store::token_used(&tx, *id, *at).await?,
        }
    }
    tx.commit().await?;
    Ok(())
}

//! The fleet database's rows and the statements on them, shared by the
//! admin commands and the nodes. Schema: `migrations/0001_initial.sql`.

use time::OffsetDateTime;
use tokio_postgres::{Client, GenericClient};

use super::FleetError;
use super::secrets::Keys;
use crate::auth::audit::AuditEvent;

/// The `NOTIFY` channel revocations are pushed on. Payloads:
/// `token:<id>` or `target:<name>`.
pub const REVOKE_CHANNEL: &str = "spicetap_revoke";

/// A target as `target add` takes it (the password in the clear, sealed
/// before it is stored).
#[derive(Clone)]
pub struct NewTarget {
    /// Unique name.
    pub name: String,
    /// Plain SPICE address, `host:port`.
    pub upstream: Option<String>,
    /// TLS SPICE address, `host:port`.
    pub upstream_tls: Option<String>,
    /// PEM text of the CA the VM's certificate chains to.
    pub ca_pem: Option<String>,
    /// spice-gtk host subject to check instead of the host name.
    pub host_subject: Option<String>,
    /// `auto`, `all`, `none` or a channel list.
    pub upstream_tls_channels: String,
    /// The VM's SPICE password.
    pub password: Vec<u8>,
}

impl std::fmt::Debug for NewTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewTarget").field("name", &self.name).finish_non_exhaustive()
    }
}

/// A target row as `target list` shows it (no password).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TargetRow {
    /// Name.
    pub name: String,
    /// Plain address.
    pub upstream: Option<String>,
    /// TLS address.
    pub upstream_tls: Option<String>,
    /// Whether a CA is stored.
    pub has_ca: bool,
    /// Host subject.
    pub host_subject: Option<String>,
    /// TLS channel policy.
    pub upstream_tls_channels: String,
    /// Tokens not revoked and not expired.
    pub live_tokens: i64,
}

/// What a node needs of a token's row and its target to log a client in.
pub struct TokenRow {
    /// Token id.
    pub id: i64,
    /// Target name.
    pub target: String,
    /// Expiry.
    pub expires: OffsetDateTime,
    /// Revocation time.
    pub revoked: Option<OffsetDateTime>,
    /// The target, if it still exists.
    pub vm: Option<VmRow>,
}

/// A target's connection details, with its sealed password.
pub struct VmRow {
    /// Plain address.
    pub upstream: Option<String>,
    /// TLS address.
    pub upstream_tls: Option<String>,
    /// CA PEM text.
    pub ca_pem: Option<String>,
    /// Host subject.
    pub host_subject: Option<String>,
    /// TLS channel policy.
    pub upstream_tls_channels: String,
    /// `nonce || ciphertext || tag` (see [`super::secrets`]).
    pub password_sealed: Vec<u8>,
}

/// One channel connection in the session index (`session_channels`).
#[derive(Debug, Clone)]
pub struct IndexRow {
    /// Random key the node chose for the connection.
    pub channel_key: i64,
    /// Node name.
    pub node: String,
    /// SPICE session id, once known.
    pub session_id: Option<u32>,
    /// Target name.
    pub target: Option<String>,
    /// Token id.
    pub token_id: Option<i64>,
    /// Client address.
    pub client: String,
    /// Channel type name.
    pub channel: String,
    /// Channel id.
    pub channel_id: u8,
    /// Recording folder on the node.
    pub folder: Option<String>,
    /// When the connection was accepted.
    pub opened: OffsetDateTime,
    /// When it closed.
    pub closed: Option<OffsetDateTime>,
    /// Bytes client to server.
    pub c2s_bytes: Option<u64>,
    /// Bytes server to client.
    pub s2c_bytes: Option<u64>,
    /// How it ended (`client_closed`, `revoked`, ...).
    pub end_reason: Option<String>,
}

/// A session of the index, as `spicetap sessions` lists it: one per node
/// holding part of it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionRow {
    /// Target name.
    pub target: Option<String>,
    /// SPICE session id.
    pub session_id: Option<i64>,
    /// Node name.
    pub node: String,
    /// Client address.
    pub client: Option<String>,
    /// Recording folder on that node.
    pub folder: Option<String>,
    /// First channel accepted (RFC 3339).
    pub started: String,
    /// Last channel closed, when all have (RFC 3339).
    pub ended: Option<String>,
    /// Channel connections.
    pub channels: i64,
    /// Bytes client to server.
    pub c2s_bytes: Option<i64>,
    /// Bytes server to client.
    pub s2c_bytes: Option<i64>,
}

/// Stores a target with its password sealed under `keys`; replaces one of
/// the same name.
///
/// # Errors
/// [`FleetError::Db`].
pub async fn add_target(client: &Client, keys: &Keys, t: &NewTarget) -> Result<(), FleetError> {
    let sealed = keys.seal(&t.name, &t.password);
    client
        .execute(
            "INSERT INTO targets (name, upstream, upstream_tls, ca_pem, host_subject, upstream_tls_channels, password_sealed)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (name) DO UPDATE SET upstream = $2, upstream_tls = $3, ca_pem = $4, host_subject = $5,
                 upstream_tls_channels = $6, password_sealed = $7",
            &[&t.name, &t.upstream, &t.upstream_tls, &t.ca_pem, &t.host_subject, &t.upstream_tls_channels, &sealed],
        )
        .await?;
    Ok(())
}

/// Every target, by name.
///
/// # Errors
/// [`FleetError::Db`].
pub async fn list_targets(client: &Client) -> Result<Vec<TargetRow>, FleetError> {
    let rows = client
        .query(
            "SELECT g.name, g.upstream, g.upstream_tls, g.ca_pem IS NOT NULL, g.host_subject, g.upstream_tls_channels,
                    (SELECT count(*) FROM tokens t WHERE t.target = g.name AND t.revoked IS NULL AND t.expires > now())
             FROM targets g ORDER BY g.name",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| TargetRow {
            name: r.get(0),
            upstream: r.get(1),
            upstream_tls: r.get(2),
            has_ca: r.get(3),
            host_subject: r.get(4),
            upstream_tls_channels: r.get(5),
            live_tokens: r.get(6),
        })
        .collect())
}

/// Removes a target: revokes its tokens and notifies every node, which
/// closes their channels. Returns whether it existed.
///
/// # Errors
/// [`FleetError::Db`].
pub async fn remove_target(client: &mut Client, name: &str, by: &str) -> Result<bool, FleetError> {
    let tx = client.transaction().await?;
    tx.execute("UPDATE tokens SET revoked = now() WHERE target = $1 AND revoked IS NULL", &[&name]).await?;
    let n = tx.execute("DELETE FROM targets WHERE name = $1", &[&name]).await?;
    tx.execute("SELECT pg_notify($1, $2)", &[&REVOKE_CHANNEL, &format!("target:{name}")]).await?;
    insert_audit(&tx, by, &AuditEvent { event: "target_removed", target: Some(name.into()), ..admin_event(by) })
        .await?;
    tx.commit().await?;
    Ok(n > 0)
}

fn admin_event(by: &str) -> AuditEvent {
    AuditEvent { client: format!("admin:{by}"), ..AuditEvent::default() }
}

/// Stores a new token's hash for `target`, valid until `expires`; returns
/// its id. The token itself is never stored.
///
/// # Errors
/// [`FleetError::NoTarget`] or [`FleetError::Db`].
pub async fn issue_token(
    client: &mut Client,
    keys: &Keys,
    token: &str,
    target: &str,
    expires: OffsetDateTime,
    by: &str,
) -> Result<i64, FleetError> {
    let tx = client.transaction().await?;
    if tx.query_opt("SELECT 1 FROM targets WHERE name = $1", &[&target]).await?.is_none() {
        return Err(FleetError::NoTarget(target.into()));
    }
    let hash = keys.token_hash(token.as_bytes()).to_vec();
    let id: i64 = tx
        .query_one(
            "INSERT INTO tokens (token_hash, target, issued_by, expires) VALUES ($1, $2, $3, $4) RETURNING id",
            &[&hash, &target, &by, &expires],
        )
        .await?
        .get(0);
    let ev = AuditEvent { event: "token_issued", target: Some(target.into()), token_id: Some(id), ..admin_event(by) };
    insert_audit(&tx, by, &ev).await?;
    tx.commit().await?;
    Ok(id)
}

/// Which tokens to revoke.
#[derive(Debug, Clone)]
pub enum Revoke<'a> {
    /// The token (its hash is looked up).
    Token(&'a str),
    /// Every token of a target.
    Target(&'a str),
}

/// Revokes tokens and notifies every node, which closes their live
/// channels. Returns the ids revoked (empty: nothing to revoke).
///
/// # Errors
/// [`FleetError::Db`].
pub async fn revoke(client: &mut Client, keys: &Keys, what: Revoke<'_>, by: &str) -> Result<Vec<i64>, FleetError> {
    let tx = client.transaction().await?;
    let rows = match what {
        Revoke::Token(token) => {
            let hash = keys.token_hash(token.as_bytes()).to_vec();
            tx.query(
                "UPDATE tokens SET revoked = now() WHERE token_hash = $1 AND revoked IS NULL RETURNING id, target",
                &[&hash],
            )
            .await?
        }
        Revoke::Target(name) => {
            tx.query(
                "UPDATE tokens SET revoked = now() WHERE target = $1 AND revoked IS NULL RETURNING id, target",
                &[&name],
            )
            .await?
        }
    };
    let mut ids = Vec::new();
    for r in &rows {
        let (id, target): (i64, String) = (r.get(0), r.get(1));
        tx.execute("SELECT pg_notify($1, $2)", &[&REVOKE_CHANNEL, &format!("token:{id}")]).await?;
        let ev = AuditEvent { event: "token_revoked", target: Some(target), token_id: Some(id), ..admin_event(by) };
        insert_audit(&tx, by, &ev).await?;
        ids.push(id);
    }
    tx.commit().await?;
    Ok(ids)
}

/// The token whose hash is `hash`, with its target.
///
/// # Errors
/// [`FleetError::Db`].
pub async fn lookup_token(client: &Client, hash: &[u8; 32]) -> Result<Option<TokenRow>, FleetError> {
    let row = client
        .query_opt(
            "SELECT t.id, t.target, t.expires, t.revoked, g.name IS NOT NULL, g.upstream, g.upstream_tls, g.ca_pem,
                    g.host_subject, g.upstream_tls_channels, g.password_sealed
             FROM tokens t LEFT JOIN targets g ON g.name = t.target WHERE t.token_hash = $1",
            &[&hash.as_slice()],
        )
        .await?;
    Ok(row.map(|r| TokenRow {
        id: r.get(0),
        target: r.get(1),
        expires: r.get(2),
        revoked: r.get(3),
        vm: r.get::<_, bool>(4).then(|| VmRow {
            upstream: r.get(5),
            upstream_tls: r.get(6),
            ca_pem: r.get(7),
            host_subject: r.get(8),
            upstream_tls_channels: r.get(9),
            password_sealed: r.get(10),
        }),
    }))
}

/// Of `ids`, the tokens revoked (or whose target is gone).
///
/// # Errors
/// [`FleetError::Db`].
pub async fn revoked_among(client: &Client, ids: &[i64]) -> Result<Vec<i64>, FleetError> {
    let rows = client
        .query(
            "SELECT t.id FROM tokens t LEFT JOIN targets g ON g.name = t.target
             WHERE t.id = ANY($1) AND (t.revoked IS NOT NULL OR g.name IS NULL)",
            &[&ids],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Marks a token used now.
///
/// # Errors
/// [`FleetError::Db`].
pub async fn token_used(client: &impl GenericClient, id: i64, at: OffsetDateTime) -> Result<(), FleetError> {
    client
        .execute("UPDATE tokens SET first_used = coalesce(first_used, $2), last_used = $2 WHERE id = $1", &[&id, &at])
        .await?;
    Ok(())
}

/// Appends an audit event written by `node`. The event's `time` is RFC 3339
/// (now when empty).
///
/// # Errors
/// [`FleetError::Db`].
pub async fn insert_audit(client: &impl GenericClient, node: &str, ev: &AuditEvent) -> Result<(), FleetError> {
    let time = time::OffsetDateTime::parse(&ev.time, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| OffsetDateTime::now_utc());
    let session_id = ev.session_id.map(i64::from);
    let bytes = |b: Option<u64>| b.and_then(|b| i64::try_from(b).ok());
    client
        .execute(
            "INSERT INTO audit (time, node, event, client, channel, target, token_id, session_id, reason, c2s_bytes, s2c_bytes)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[
                &time,
                &node,
                &ev.event,
                &ev.client,
                &ev.channel,
                &ev.target,
                &ev.token_id,
                &session_id,
                &ev.reason,
                &bytes(ev.c2s_bytes),
                &bytes(ev.s2c_bytes),
            ],
        )
        .await?;
    Ok(())
}

/// Inserts or updates a channel of the session index.
///
/// # Errors
/// [`FleetError::Db`].
pub async fn upsert_index(client: &impl GenericClient, r: &IndexRow) -> Result<(), FleetError> {
    let bytes = |b: Option<u64>| b.and_then(|b| i64::try_from(b).ok());
    client
        .execute(
            "INSERT INTO session_channels (channel_key, node, session_id, target, token_id, client, channel, channel_id,
                 folder, opened, closed, c2s_bytes, s2c_bytes, end_reason)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
             ON CONFLICT (channel_key) DO UPDATE SET session_id = coalesce($3, session_channels.session_id),
                 folder = coalesce($9, session_channels.folder), closed = $11, c2s_bytes = $12, s2c_bytes = $13,
                 end_reason = $14",
            &[
                &r.channel_key,
                &r.node,
                &r.session_id.map(i64::from),
                &r.target,
                &r.token_id,
                &r.client,
                &r.channel,
                &i32::from(r.channel_id),
                &r.folder,
                &r.opened,
                &r.closed,
                &bytes(r.c2s_bytes),
                &bytes(r.s2c_bytes),
                &r.end_reason,
            ],
        )
        .await?;
    Ok(())
}

/// The session index, newest first; `live` keeps sessions with a channel
/// still open.
///
/// # Errors
/// [`FleetError::Db`].
pub async fn sessions(client: &Client, live: bool, limit: i64) -> Result<Vec<SessionRow>, FleetError> {
    let rows = client
        .query(
            "SELECT target, session_id, node, client, folder, started, ended, channels, c2s_bytes::bigint, s2c_bytes::bigint
             FROM sessions WHERE NOT $1 OR ended IS NULL ORDER BY started DESC, node LIMIT $2",
            &[&live, &limit],
        )
        .await?;
    let rfc = |t: OffsetDateTime| crate::report::rfc3339(t);
    Ok(rows
        .iter()
        .map(|r| SessionRow {
            target: r.get(0),
            session_id: r.get(1),
            node: r.get(2),
            client: r.get(3),
            folder: r.get(4),
            started: rfc(r.get(5)),
            ended: r.get::<_, Option<OffsetDateTime>>(6).map(rfc),
            channels: r.get(7),
            c2s_bytes: r.get(8),
            s2c_bytes: r.get(9),
        })
        .collect())
}

//! Schema migrations of the fleet database, kept in `src/fleet/migrations/`
//! and compiled in: `spicetap db migrate` applies the ones not yet applied,
//! each in its own transaction, recorded in `spicetap_migrations`.

use tokio_postgres::Client;

use super::FleetError;

/// Every migration: version and SQL text, in order.
pub const MIGRATIONS: &[(i32, &str)] = &[(1, include_str!("migrations/0001_initial.sql"))];

/// Applies the migrations newer than the database's version; returns the
/// versions applied. Concurrent runs (several nodes starting) serialise on
/// a transaction-scoped advisory lock.
///
/// # Errors
/// [`FleetError::Db`] when a statement fails (that migration is rolled back).
pub async fn migrate(client: &mut Client) -> Result<Vec<i32>, FleetError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS spicetap_migrations (
                 version integer PRIMARY KEY,
                 applied timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    let mut applied = Vec::new();
    for &(version, sql) in MIGRATIONS {
        let tx = client.transaction().await?;
        // "spicetap" as a 64-bit lock key.
        tx.execute("SELECT pg_advisory_xact_lock(7310575181402128752)", &[]).await?;
        let done = tx.query_opt("SELECT 1 FROM spicetap_migrations WHERE version = $1", &[&version]).await?;
        if done.is_some() {
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.execute("INSERT INTO spicetap_migrations (version) VALUES ($1)", &[&version]).await?;
        tx.commit().await?;
        applied.push(version);
    }
    Ok(applied)
}

/// The newest migration applied, or `None` on a database never migrated.
///
/// # Errors
/// [`FleetError::Db`].
pub async fn version(client: &Client) -> Result<Option<i32>, FleetError> {
    let exists = client.query_one("SELECT to_regclass('spicetap_migrations') IS NOT NULL", &[]).await?;
    if !exists.get::<_, bool>(0) {
        return Ok(None);
    }
    Ok(client.query_one("SELECT max(version) FROM spicetap_migrations", &[]).await?.get(0))
}

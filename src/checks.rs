//! Checks of a capture source — HO, or a site with upstream tables — and
//! the creation of what capture needs there, written once for both: every
//! check runs before anything is created, and each failure names the fix.

use tokio_postgres::Client;

use crate::capture::catalog;
use crate::error::{DbContext, Error, Result};
use crate::postgres::{ident, qualified};

/// Fails with the fix unless the server has `wal_level = logical`; `place`
/// says which server (`HO`, `site store-001`).
pub async fn require_logical(client: &Client, place: &str) -> Result<()> {
    let wal_level: String = client
        .query_one("SHOW wal_level", &[])
        .await
        .ctx(|| "reading wal_level".into())?
        .get(0);
    if wal_level != "logical" {
        return Err(Error::Setup(format!(
            "wal_level is '{wal_level}' at {place}; set wal_level = logical in postgresql.conf and restart PostgreSQL"
        )));
    }
    Ok(())
}

/// Checks that `slot` can be used or created in this database (a free
/// replication slot, a free WAL sender); returns whether it exists.
pub async fn slot_capacity(
    client: &Client,
    slot: &str,
    place: &str,
    setting: &str,
) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT current_setting('max_replication_slots')::int AS max_slots,
                    (SELECT count(*)::int FROM pg_replication_slots) AS used_slots,
                    (SELECT database::text FROM pg_replication_slots WHERE slot_name = $1) AS slot_db,
                    current_database()::text AS db,
                    current_setting('max_wal_senders')::int AS max_senders,
                    (SELECT count(*)::int FROM pg_stat_replication) AS used_senders",
            &[&slot],
        )
        .await
        .ctx(|| "reading replication settings".into())?;
    let (max_slots, used_slots): (i32, i32) = (row.get("max_slots"), row.get("used_slots"));
    let (max_senders, used_senders): (i32, i32) = (row.get("max_senders"), row.get("used_senders"));
    let slot_db: Option<String> = row.get("slot_db");
    let db: String = row.get("db");
    if let Some(other) = slot_db.as_ref().filter(|d| **d != db) {
        return Err(Error::Setup(format!(
            "replication slot {slot} belongs to database {other} on this server; set {setting} to a free name"
        )));
    }
    let exists = slot_db.is_some();
    if !exists && used_slots >= max_slots {
        return Err(Error::Setup(format!(
            "no free replication slot at {place} (max_replication_slots = {max_slots}, all in use); raise max_replication_slots in postgresql.conf and restart"
        )));
    }
    if used_senders >= max_senders {
        return Err(Error::Setup(format!(
            "no free WAL sender at {place} (max_wal_senders = {max_senders}, all in use); raise max_wal_senders in postgresql.conf and restart"
        )));
    }
    Ok(exists)
}

/// A table's key and replica identity, as capture needs them.
#[derive(Debug, Clone)]
pub struct Identity {
    pub oid: u32,
    /// The primary key's columns (empty without one).
    pub key: Vec<String>,
    /// REPLICA IDENTITY FULL: the old row comes whole with updates and deletes.
    pub full: bool,
}

/// Reads a table's key and replica identity; fails with the fix when the
/// table is missing or its updates and deletes could not be captured.
/// `what` names it in messages: `table`, `upstream table`.
pub async fn identity(
    client: &Client,
    name: &str,
    what: &str,
    place: &str,
    fix: &str,
) -> Result<Identity> {
    let oid = catalog::table_oid(client, name)
        .await?
        .ok_or_else(|| Error::Setup(format!("{what} {name} does not exist at {place}; {fix}")))?;
    let kind: i8 = client
        .query_one(
            "SELECT relreplident::\"char\" AS kind FROM pg_class WHERE oid = $1",
            &[&oid],
        )
        .await
        .ctx(|| format!("reading the replica identity of {name}"))?
        .get("kind");
    let key = catalog::key_columns(client, oid).await?;
    let q = qualified(name);
    if kind as u8 == b'n' {
        return Err(Error::Setup(format!(
            "{what} {name} has REPLICA IDENTITY NOTHING, so its updates and deletes cannot be captured; run ALTER TABLE {q} REPLICA IDENTITY DEFAULT (with a primary key) or FULL"
        )));
    }
    let full = kind as u8 == b'f';
    if key.is_empty() && !full {
        return Err(Error::Setup(format!(
            "{what} {name} has no primary key; add one (ALTER TABLE {q} ADD PRIMARY KEY (…)) or run ALTER TABLE {q} REPLICA IDENTITY FULL"
        )));
    }
    Ok(Identity { oid, key, full })
}

/// Creates the pgoutput slot `slot` unless it `exists`.
pub async fn create_slot(client: &Client, slot: &str, exists: bool) -> Result<()> {
    if !exists {
        client
            .execute(
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                &[&slot],
            )
            .await
            .ctx(|| format!("creating replication slot {slot}"))?;
    }
    Ok(())
}

const VIA_ROOT: &str = "publish_via_partition_root = true";

/// Creates publication `name` for `tables` (`schema.table` names), or sets
/// an existing one to exactly those tables. A partitioned table publishes
/// its changes as its root's (`publish_via_partition_root`), the name the
/// config and the sites know it by.
pub async fn ensure_publication(client: &Client, name: &str, tables: &[String]) -> Result<()> {
    let list = tables
        .iter()
        .map(|t| qualified(t))
        .collect::<Vec<_>>()
        .join(", ");
    let exists = client
        .query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&name])
        .await
        .ctx(|| "reading pg_publication".into())?
        .is_some();
    let statement = if exists {
        format!(
            "ALTER PUBLICATION {0} SET TABLE {list}; ALTER PUBLICATION {0} SET ({VIA_ROOT})",
            ident(name)
        )
    } else {
        format!(
            "CREATE PUBLICATION {} FOR TABLE {list} WITH ({VIA_ROOT})",
            ident(name)
        )
    };
    client
        .batch_execute(&statement)
        .await
        .ctx(|| format!("creating publication {name}"))
}

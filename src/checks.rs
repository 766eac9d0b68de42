//! Checks of a capture source — HO, or a site with upstream tables — and
//! the creation of what capture needs there, written once for both: every
//! check runs before anything is created, and each failure names the fix.

use tokio_postgres::Client;

use crate::capture::catalog;
use crate::error::{DbContext, Error, Result};
use crate::postgres::{ident, qualified};

/// Fails with the fix unless the server has `wal_level = logical`; `place`
/// says which server (`HO`, `site store-001`).
pub(crate) async fn require_logical(client: &Client, place: &str) -> Result<()> {
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
pub(crate) async fn slot_capacity(
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
pub(crate) struct Identity {
    pub(crate) oid: u32,
    /// The primary key's columns (empty without one).
    pub(crate) key: Vec<String>,
    /// REPLICA IDENTITY FULL: the old row comes whole with updates and
    /// deletes (a partitioned table: it and every partition).
    pub(crate) full: bool,
    /// The table and partitions without REPLICA IDENTITY FULL, quoted. A
    /// partition does not take its root's: PostgreSQL sends a row's old
    /// values as its partition's identity says.
    pub(crate) not_full: Vec<String>,
}

impl Identity {
    /// The statements that make the old row come whole.
    pub(crate) fn make_full(&self) -> String {
        self.not_full
            .iter()
            .map(|t| format!("ALTER TABLE {t} REPLICA IDENTITY FULL"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Reads a table's key and replica identity; fails with the fix when the
/// table is missing or its updates and deletes could not be captured.
/// `what` names it in messages: `table`, `upstream table`.
pub(crate) async fn identity(
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
    // The table, then its leaf partitions (pg_partition_tree gives none
    // for a table that is not partitioned).
    let not_full: Vec<String> = client
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname) AS name
               FROM (SELECT $1::oid AS relid, 0 AS level
                     UNION ALL
                     SELECT relid, level FROM pg_partition_tree($1::oid::regclass)
                      WHERE isleaf AND level > 0) t
               JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relreplident <> 'f'
              ORDER BY t.level, 1",
            &[&oid],
        )
        .await
        .ctx(|| format!("reading the replica identity of {name}'s partitions"))?
        .iter()
        .map(|r| r.get("name"))
        .collect();
    let full = kind as u8 == b'f';
    if key.is_empty() && !full {
        return Err(Error::Setup(format!(
            "{what} {name} has no primary key; add one (ALTER TABLE {q} ADD PRIMARY KEY (…)) or run ALTER TABLE {q} REPLICA IDENTITY FULL"
        )));
    }
    Ok(Identity {
        oid,
        key,
        full: not_full.is_empty(),
        not_full,
    })
}

/// Creates the pgoutput slot `slot` unless it `exists`.
pub(crate) async fn create_slot(client: &Client, slot: &str, exists: bool) -> Result<()> {
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

/// What publication `name` needs to cover exactly `tables`, checked before
/// anything is created: None when it does already, else the statement that
/// makes it so. Creating or changing a publication of tables needs their
/// ownership: a role without it gets the statement for the tables' owner
/// to run.
pub(crate) async fn publication_plan(
    client: &Client,
    name: &str,
    tables: &[String],
) -> Result<Option<String>> {
    let quoted: Vec<String> = tables.iter().map(|t| qualified(t)).collect();
    let row = client
        .query_one(
            "WITH want AS (SELECT to_regclass(x)::oid AS oid FROM unnest($2::text[]) x)
             SELECT p.oid IS NOT NULL AS found,
                    coalesce(NOT p.puballtables, false)
                    AND (SELECT coalesce(array_agg(oid ORDER BY oid), '{}') FROM want)
                      = (SELECT coalesce(array_agg(prrelid ORDER BY prrelid), '{}')
                           FROM pg_publication_rel WHERE prpubid = p.oid) AS same_tables,
                    coalesce(p.pubviaroot, false) AS via_root,
                    (SELECT coalesce(bool_and(pg_has_role(c.relowner, 'USAGE')), true)
                       FROM want w JOIN pg_class c ON c.oid = w.oid) AS owns_tables,
                    CASE WHEN p.oid IS NULL
                         THEN has_database_privilege(current_database(), 'CREATE')
                         ELSE pg_has_role(p.pubowner, 'USAGE') END AS owns_publication
               FROM (SELECT 1) one LEFT JOIN pg_publication p ON p.pubname = $1",
            &[&name, &quoted],
        )
        .await
        .ctx(|| "reading pg_publication".into())?;
    let flag = |c: &str| -> bool { row.get(c) };
    let (found, same_tables, via_root) = (flag("found"), flag("same_tables"), flag("via_root"));
    let (owns_tables, owns_publication) = (flag("owns_tables"), flag("owns_publication"));
    if found && same_tables && via_root {
        return Ok(None);
    }
    let (list, p) = (quoted.join(", "), ident(name));
    let (statement, may, what) = if found && same_tables {
        // Only the option is missing: the publication's owner sets it.
        (
            format!("ALTER PUBLICATION {p} SET ({VIA_ROOT})"),
            owns_publication,
            format!("publication {name} covers {list} but without {VIA_ROOT} (a partitioned table's rows must reach the sites as its root's), which only its owner may set"),
        )
    } else if tables.is_empty() {
        // Nothing goes down (the sites' tables only come up): a publication
        // of no table, which PostgreSQL cannot make of one with tables.
        let drop = if found {
            format!("DROP PUBLICATION {p}; ")
        } else {
            String::new()
        };
        (
            format!("{drop}CREATE PUBLICATION {p} WITH ({VIA_ROOT})"),
            owns_publication,
            format!("publication {name} must be of no table, which only its owner may make so"),
        )
    } else if found {
        (
            format!("ALTER PUBLICATION {p} SET TABLE {list}; ALTER PUBLICATION {p} SET ({VIA_ROOT})"),
            owns_tables && owns_publication,
            format!("publication {name} must cover exactly {list}, which only the tables' and the publication's owner may make so"),
        )
    } else {
        (
            format!("CREATE PUBLICATION {p} FOR TABLE {list} WITH ({VIA_ROOT})"),
            owns_tables && owns_publication,
            format!("publication {name} must be created for {list}, which only the tables' owner may do"),
        )
    };
    if !may {
        return Err(Error::Setup(format!(
            "{what}; as that owner run: `{statement}`"
        )));
    }
    Ok(Some(statement))
}

/// Runs what [`publication_plan`] said publication `name` needs.
pub(crate) async fn apply_publication(
    client: &Client,
    name: &str,
    plan: Option<String>,
) -> Result<()> {
    let Some(statement) = plan else {
        return Ok(());
    };
    client
        .batch_execute(&statement)
        .await
        .ctx(|| format!("creating publication {name}"))
}

/// Fails with the fix unless this session's role may create and read a
/// replication slot.
pub(crate) async fn require_replication(client: &Client, place: &str) -> Result<()> {
    let row = client
        .query_one(
            "SELECT current_user::text AS role,
                    (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user) AS ok",
            &[],
        )
        .await
        .ctx(|| "reading the role's attributes".into())?;
    if row.get("ok") {
        return Ok(());
    }
    let role: String = row.get("role");
    Err(Error::Setup(format!(
        "role {role} at {place} cannot use a replication slot; run ALTER ROLE {} REPLICATION",
        ident(&role)
    )))
}

/// Fails with the fix unless this session's role may create replication
/// origins (HO and sites with upstream tables mark their writes with one).
pub(crate) async fn require_origin_functions(client: &Client, place: &str) -> Result<()> {
    let ok: bool = client
        .query_one(
            "SELECT has_function_privilege('pg_replication_origin_create(text)', 'EXECUTE')
                AND has_function_privilege('pg_replication_origin_session_setup(text)', 'EXECUTE') AS ok",
            &[],
        )
        .await
        .ctx(|| "reading function privileges".into())?
        .get("ok");
    if ok {
        return Ok(());
    }
    Err(Error::Setup(format!(
        "this role at {place} may not create replication origins; GRANT EXECUTE ON FUNCTION pg_replication_origin_create(text), pg_replication_origin_session_setup(text) TO it (see sql/roles.sql)"
    )))
}

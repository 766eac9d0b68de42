//! Partitions that lose their rows without a change in the stream: a
//! TRUNCATE of one partition of a table published via its root is not
//! published (PostgreSQL sends TRUNCATE for published relations only), nor
//! is a DETACH or DROP of a partition. HO's worker watches each synced
//! partitioned table's leaf partitions (a truncated one gets a new
//! relfilenode) and has every active site reload a table that lost one.

use tokio_postgres::Client;

use crate::config::Config;
use crate::error::{DbContext, Result};
use crate::postgres::qualified;
use crate::protocol::SyncReason;
use crate::relay::Relay;

/// Compares the synced partitioned tables' leaf partitions with what HO
/// recorded; asks every active site to reload each table one of whose
/// partitions was truncated, detached or dropped since. Returns those
/// tables. A table seen for the first time is recorded only.
pub(super) async fn reload_emptied(
    cfg: &Config,
    sql: &Client,
    relay: &Relay,
) -> Result<Vec<String>> {
    let roots: Vec<String> = cfg.tables.iter().map(|t| t.name.clone()).collect();
    let quoted: Vec<String> = roots.iter().map(|r| qualified(r)).collect();
    let rows = sql
        .query(
            "WITH roots AS (
               SELECT r.name, c.oid FROM unnest($1::text[], $2::text[]) r (name, quoted)
                 JOIN pg_class c ON c.oid = to_regclass(r.quoted) AND c.relkind = 'p'
             ), now_ AS (
               SELECT r.name AS root, c.oid AS partition, c.relfilenode
                 FROM roots r CROSS JOIN LATERAL pg_partition_tree(r.oid) t
                 JOIN pg_class c ON c.oid = t.relid
                WHERE t.isleaf
             ), emptied AS (
               SELECT DISTINCT p.root FROM relaysync.partitions p
                 LEFT JOIN now_ n ON n.root = p.root AND n.partition = p.partition
                WHERE p.root IN (SELECT name FROM roots)
                  AND (n.partition IS NULL OR n.relfilenode <> p.relfilenode)
             ), gone AS (
               DELETE FROM relaysync.partitions p
                WHERE NOT EXISTS (SELECT 1 FROM now_ n WHERE n.root = p.root AND n.partition = p.partition)
             ), seen AS (
               INSERT INTO relaysync.partitions (root, partition, relfilenode)
               SELECT root, partition, relfilenode FROM now_
               ON CONFLICT (root, partition) DO UPDATE SET relfilenode = EXCLUDED.relfilenode
             )
             SELECT root FROM emptied ORDER BY root",
            &[&roots, &quoted],
        )
        .await
        .ctx(|| "reading the partitions of HO's partitioned tables".into())?;
    let emptied: Vec<String> = rows.iter().map(|r| r.get("root")).collect();
    for table in &emptied {
        tracing::warn!(
            table = %table,
            "a partition of this table was truncated, detached or dropped at HO, which PostgreSQL does not publish; every site reloads the table"
        );
        relay.request_reload(table, SyncReason::Truncated).await?;
    }
    Ok(emptied)
}

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

/// Installs (or renews) HO's event trigger `relaysync_partitions`: when a
/// partition of a synced partitioned table is made or attached, it writes
/// the table's partitions into HO's WAL in that transaction, so they reach
/// every site before any row of the new partition (see capture/shape.rs);
/// and when the table sends whole old rows (`REPLICA IDENTITY FULL`, which
/// routing needs), it makes the new partition do so too.
/// Made only when a synced table (`tables`) is partitioned. Returns what
/// `setup ho` says: done, or the step that needs a superuser.
pub(super) async fn install_trigger(
    sql: &Client,
    publication: &str,
    tables: &[String],
) -> Result<Option<String>> {
    let quoted: Vec<String> = tables.iter().map(|t| qualified(t)).collect();
    let partitioned: bool = sql
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM unnest($1::text[]) t
                             JOIN pg_class c ON c.oid = to_regclass(t) WHERE c.relkind = 'p')",
            &[&quoted],
        )
        .await
        .ctx(|| "reading which synced tables are partitioned".into())?
        .get(0);
    if !partitioned {
        return Ok(None);
    }
    let function = format!(
        "CREATE OR REPLACE FUNCTION relaysync.announce_partitions() RETURNS event_trigger
            LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
            AS $f$
         DECLARE
             root oid;
             part oid;
         BEGIN
             FOR root IN SELECT DISTINCT pg_partition_root(c.objid) FROM pg_event_trigger_ddl_commands() c
                          WHERE c.object_type = 'table' LOOP
                 CONTINUE WHEN root IS NULL OR NOT EXISTS (
                     SELECT 1 FROM pg_publication_tables t WHERE t.pubname = {pub}
                        AND to_regclass(quote_ident(t.schemaname) || '.' || quote_ident(t.tablename)) = root);
                 -- A root that sends whole old rows: its new partitions too.
                 FOR part IN SELECT p.oid FROM pg_partition_tree(root) t JOIN pg_class p ON p.oid = t.relid
                              WHERE t.level > 0 AND p.relkind = 'r' AND p.relreplident <> 'f'
                                AND (SELECT relreplident FROM pg_class WHERE oid = root) = 'f' LOOP
                     EXECUTE format('ALTER TABLE %s REPLICA IDENTITY FULL', part::regclass);
                 END LOOP;
                 PERFORM pg_logical_emit_message(true, {prefix}, (
                     SELECT json_build_object(
                              'root', rn.nspname || '.' || r.relname,
                              'partitions', json_agg(json_build_object(
                                  'name', pn.nspname || '.' || p.relname,
                                  'parent', qn.nspname || '.' || q.relname,
                                  'bound', pg_get_expr(p.relpartbound, p.oid),
                                  'partition_by', CASE WHEN p.relkind = 'p' THEN pg_get_partkeydef(p.oid) END)
                                ORDER BY t.level, p.oid))::text
                       FROM pg_partition_tree(root) t
                       JOIN pg_class p ON p.oid = t.relid JOIN pg_namespace pn ON pn.oid = p.relnamespace
                       JOIN pg_class q ON q.oid = t.parentrelid JOIN pg_namespace qn ON qn.oid = q.relnamespace
                       JOIN pg_class r ON r.oid = root JOIN pg_namespace rn ON rn.oid = r.relnamespace
                      WHERE t.level > 0
                      GROUP BY rn.nspname, r.relname));
             END LOOP;
         -- No EXCEPTION block: in its subtransaction the message would be
         -- decoded after the rows that follow it.
         END $f$",
        pub = crate::postgres::literal(publication),
        prefix = crate::postgres::literal(crate::capture::shape::PARTITIONS_MESSAGE),
    );
    let trigger = "DO $$ BEGIN
           IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'relaysync_partitions') THEN
             CREATE EVENT TRIGGER relaysync_partitions ON ddl_command_end
               WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE')
               EXECUTE FUNCTION relaysync.announce_partitions();
           END IF;
         END $$";
    let made = async {
        sql.batch_execute(&function).await?;
        sql.batch_execute(trigger).await
    };
    match made.await {
        Ok(()) => Ok(Some(
            "event trigger relaysync_partitions sends partitions made at HO to the sites".into(),
        )),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) => Ok(Some(
            "warning: a partition made at HO later reaches no site by itself, and rows in it fail there until the DBA makes it at each site: creating the event trigger that sends partitions needs a superuser; run `relaysync setup ho` once as one".into(),
        )),
        Err(e) => Err(e).ctx(|| "creating HO's event trigger relaysync_partitions".into()),
    }
}

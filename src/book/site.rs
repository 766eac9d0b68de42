//! A site's own bookkeeping: which site the database is and the last
//! packet it applied (`relaysync.site`), its record of the packets it
//! received ("received data", `relaysync.received_packets`), each table's
//! last full sync (`relaysync.table_sync`), and its wipe state.

use std::time::Duration;

use tokio_postgres::Client;

use crate::error::{DbContext, Result};
use crate::postgres::{literal, literal_array};
use crate::protocol::{AckStatus, PacketKind, PacketStatus};
use crate::relay::{Ack, PacketInfo};

/// Makes this database site `site`'s (once).
pub(crate) async fn register(client: &Client, site: &str) -> Result<()> {
    client
        .execute(
            "INSERT INTO relaysync.site (site) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&site],
        )
        .await
        .ctx(|| "writing relaysync.site".into())?;
    Ok(())
}

/// The site this database belongs to, if it was set up for one.
pub(crate) async fn owner(client: &Client) -> Result<Option<String>> {
    Ok(client
        .query_opt("SELECT site FROM relaysync.site", &[])
        .await
        .ctx(|| "reading relaysync.site".into())?
        .map(|r| r.get("site")))
}

/// The last packet the site applied.
pub(crate) async fn position(client: &Client, site: &str) -> Result<i64> {
    Ok(client
        .query_one(
            "SELECT applied_through FROM relaysync.site WHERE site = $1",
            &[&site],
        )
        .await
        .ctx(|| "reading relaysync.site".into())?
        .get("applied_through"))
}

/// Packets applied (or failed) whose acks are not known to have reached
/// the relay.
pub(crate) async fn unsent_acks(client: &Client) -> Result<Vec<Ack>> {
    let ctx = || "reading relaysync.received_packets".to_string();
    let rows = client
        .query(
            "SELECT packet_id, status, row_count, error FROM relaysync.received_packets
              WHERE NOT acked ORDER BY packet_id",
            &[],
        )
        .await
        .ctx(ctx)?;
    rows.iter()
        .map(|r| {
            let status: PacketStatus = r.try_get("status").ctx(ctx)?;
            Ok(Ack {
                packet_id: r.try_get("packet_id").ctx(ctx)?,
                status: match status {
                    PacketStatus::Processed => AckStatus::Processed,
                    PacketStatus::Held => AckStatus::Held,
                    _ => AckStatus::Failed,
                },
                rows: r.try_get("row_count").ctx(ctx)?,
                error: r.try_get("error").ctx(ctx)?,
            })
        })
        .collect()
}

/// Records that a full sync of group `group` loaded `rows` rows of `table`
/// (in the apply transaction).
pub(crate) async fn record_full_sync(
    client: &Client,
    table: &str,
    rows: i64,
    group: i64,
) -> Result<()> {
    client
        .execute(
            "INSERT INTO relaysync.table_sync (table_name, last_full_sync, rows, packet_group)
             VALUES ($1, now(), $2, $3)
             ON CONFLICT (table_name) DO UPDATE SET last_full_sync = now(), rows = EXCLUDED.rows,
               packet_group = EXCLUDED.packet_group",
            &[&table, &rows, &group],
        )
        .await
        .ctx(|| "writing relaysync.table_sync".into())?;
    Ok(())
}

/// The statement that ends an apply transaction at `site`: `packets`
/// (acked with `acks`) recorded as processed, the packets in `acked`
/// marked acked, and the position moved to the last packet. Numbers and
/// protocol words only, so literals are safe, and the commit goes with it
/// in one round trip.
pub(crate) fn applied(site: &str, packets: &[PacketInfo], acks: &[Ack], acked: &[i64]) -> String {
    format!(
        "WITH received AS (
           INSERT INTO relaysync.received_packets (packet_id, group_id, kind, row_count, status)
           SELECT u.id, u.group_id, u.kind, u.row_count, {processed}
             FROM unnest({ids}::int8[], {groups}::int8[], {kinds}::text[], {rows}::int8[])
                  AS u (id, group_id, kind, row_count)
           ON CONFLICT (packet_id) DO UPDATE SET status = {processed}, error = NULL, schema_sql = NULL,
             row_count = EXCLUDED.row_count, applied_at = now(), acked = false
         ), acked AS (
           UPDATE relaysync.received_packets SET acked = true WHERE packet_id = ANY({acked}::int8[])
         )
         UPDATE relaysync.site SET applied_through = {last}, last_sync_at = now(), last_success_at = now()
          WHERE site = {site}",
        processed = literal(PacketStatus::Processed.as_str()),
        ids = literal_array(packets.iter().map(|p| p.id.to_string())),
        groups = literal_array(packets.iter().map(|p| p.group_id.to_string())),
        kinds = literal_array(packets.iter().map(|p| literal(p.kind.as_str()))),
        rows = literal_array(acks.iter().map(|a| a.rows.to_string())),
        acked = literal_array(acked.iter().map(|id| id.to_string())),
        last = packets.last().map_or(0, |p| p.id),
        site = literal(site),
    )
}

/// Marks the packets `ids` acked at the relay.
pub(crate) async fn mark_acked(client: &Client, ids: &[i64]) -> Result<()> {
    client
        .execute(
            "UPDATE relaysync.received_packets SET acked = true WHERE packet_id = ANY($1)",
            &[&ids],
        )
        .await
        .ctx(|| "writing relaysync.received_packets".into())?;
    Ok(())
}

/// Records that packet `packet` (of group `group`, kind `kind`) failed
/// with `error` (or is held for the schema change `held`, as SQL), before
/// its FAILED (HELD) ack is sent.
pub(crate) async fn record_failure(
    client: &Client,
    site: &str,
    packet: (i64, i64, PacketKind),
    error: &str,
    held: Option<&str>,
) -> Result<()> {
    let (packet, group, kind) = packet;
    let status = match held {
        Some(_) => PacketStatus::Held,
        None => PacketStatus::Failed,
    };
    client
        .execute(
            "INSERT INTO relaysync.received_packets (packet_id, group_id, kind, row_count, status, error, schema_sql)
             VALUES ($1, $2, $3, 0, $5, $4, $6)
             ON CONFLICT (packet_id) DO UPDATE SET status = $5, error = EXCLUDED.error,
               schema_sql = EXCLUDED.schema_sql, applied_at = now(), acked = false",
            &[&packet, &group, &kind, &error, &status, &held],
        )
        .await
        .ctx(|| "writing relaysync.received_packets".into())?;
    client
        .execute(
            "UPDATE relaysync.site SET last_sync_at = now() WHERE site = $1",
            &[&site],
        )
        .await
        .ctx(|| "writing relaysync.site".into())?;
    Ok(())
}

/// Records a sync that found nothing to apply (at most once a minute).
pub(crate) async fn record_idle(client: &Client, site: &str) -> Result<()> {
    client
        .execute(
            "UPDATE relaysync.site SET last_sync_at = now(), last_success_at = now()
              WHERE site = $1 AND (last_sync_at IS NULL OR last_sync_at < now() - interval '1 minute')",
            &[&site],
        )
        .await
        .ctx(|| "writing relaysync.site".into())?;
    Ok(())
}

/// Purges the record of packets processed and acked more than `keep` ago.
pub(crate) async fn purge_received(client: &Client, keep: Duration) -> Result<()> {
    client
        .execute(
            "DELETE FROM relaysync.received_packets
              WHERE status = $2 AND acked AND applied_at < now() - make_interval(secs => $1)",
            &[&keep.as_secs_f64(), &PacketStatus::Processed],
        )
        .await
        .ctx(|| "purging relaysync.received_packets".into())?;
    Ok(())
}

/// Whether the last success is older than `after` and no wipe followed it.
pub(crate) async fn wipe_due(client: &Client, site: &str, after: Duration) -> Result<bool> {
    let row = client
        .query_opt(
            "SELECT last_success_at < now() - make_interval(secs => $2)
                    AND (wiped_at IS NULL OR wiped_at < last_success_at) AS due
               FROM relaysync.site WHERE site = $1",
            &[&site, &after.as_secs_f64()],
        )
        .await
        .ctx(|| "reading relaysync.site; has `relaysync setup pos` run?".into())?;
    Ok(row
        .and_then(|r| r.get::<_, Option<bool>>("due"))
        .unwrap_or(false))
}

/// Records a wipe, with the full sync to ask for (in the wipe's
/// transaction).
pub(crate) async fn record_wipe(
    client: &Client,
    site: &str,
) -> std::result::Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE relaysync.site SET wiped_at = now(), resync_pending = true WHERE site = $1",
            &[&site],
        )
        .await
        .map(|_| ())
}

/// Whether a wipe left a full sync to ask for.
pub(crate) async fn resync_pending(client: &Client, site: &str) -> Result<bool> {
    Ok(client
        .query_opt(
            "SELECT resync_pending FROM relaysync.site WHERE site = $1",
            &[&site],
        )
        .await
        .ctx(|| "reading relaysync.site".into())?
        .is_some_and(|r| r.get("resync_pending")))
}

/// The full sync a wipe left was asked for.
pub(crate) async fn resync_asked(client: &Client, site: &str) -> Result<()> {
    client
        .execute(
            "UPDATE relaysync.site SET resync_pending = false WHERE site = $1",
            &[&site],
        )
        .await
        .ctx(|| "writing relaysync.site".into())?;
    Ok(())
}

/// A packet this site holds for a schema change (see `apply/schema.rs`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct HeldPacket {
    pub packet: i64,
    /// What changed, and why the site did not follow by itself.
    pub error: String,
    /// The statements that make the site's table like HO's.
    pub sql: String,
}

/// The packets this site holds, oldest first.
pub(crate) async fn held(client: &Client) -> Result<Vec<HeldPacket>> {
    let rows = client
        .query(
            "SELECT packet_id, coalesce(error, ''), coalesce(schema_sql, '')
               FROM relaysync.received_packets WHERE status = $1 ORDER BY packet_id",
            &[&PacketStatus::Held],
        )
        .await
        .ctx(|| "reading relaysync.received_packets".into())?;
    Ok(rows
        .iter()
        .map(|r| HeldPacket {
            packet: r.get(0),
            error: r.get(1),
            sql: r.get(2),
        })
        .collect())
}

/// Runs the statements of the packets this site holds, in one transaction
/// (each change once, oldest first); returns them. The site's next sync
/// applies the packets.
pub(crate) async fn apply_held(client: &mut Client) -> Result<Vec<String>> {
    let mut seen = Vec::new();
    for h in held(client).await? {
        if !h.sql.is_empty() && !seen.contains(&h.sql) {
            seen.push(h.sql);
        }
    }
    let tx = client
        .transaction()
        .await
        .ctx(|| "BEGIN (schema apply)".into())?;
    for sql in &seen {
        tx.batch_execute(sql)
            .await
            .ctx(|| format!("running the held schema change (made by hand already? then run `relaysync pos sync --once`):\n{sql}\n"))?;
    }
    tx.commit().await.ctx(|| "COMMIT (schema apply)".into())?;
    Ok(seen)
}

/// How long ago this site's last successful sync was (None: never).
pub(crate) async fn last_success_ago(client: &Client, site: &str) -> Result<Option<Duration>> {
    let row = client
        .query_opt(
            "SELECT extract(epoch FROM now() - last_success_at)::float8 AS ago
               FROM relaysync.site WHERE site = $1",
            &[&site],
        )
        .await
        .ctx(|| "reading relaysync.site; has `relaysync setup pos` run?".into())?;
    Ok(row
        .and_then(|r| r.get::<_, Option<f64>>("ago"))
        .map(|s| Duration::from_secs_f64(s.max(0.0))))
}

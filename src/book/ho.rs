//! HO's own bookkeeping: the last up packet it merged
//! (`relaysync.up_state`) and its record of the packets it sent ("sent
//! data", `relaysync.sent_packets`, with the statuses the sites' acks
//! settled, copied from the relay from `relaysync.sent_position` on).

use std::time::Duration;

use tokio_postgres::Client;

use crate::error::{DbContext, Result};
use crate::protocol::PacketStatus;
use crate::relay::{Relay, SentPacket};

/// The public keys recorded per site (`relaysync site key`).
pub(crate) async fn site_keys(
    client: &Client,
) -> Result<std::collections::HashMap<String, Vec<crate::seal::PublicKey>>> {
    let rows = client
        .query(
            "SELECT site, public_key FROM relaysync.site_keys ORDER BY site, added_at",
            &[],
        )
        .await
        .ctx(|| "reading relaysync.site_keys".into())?;
    let mut keys: std::collections::HashMap<String, Vec<_>> = Default::default();
    for row in rows {
        let raw: Vec<u8> = row.get("public_key");
        keys.entry(row.get("site"))
            .or_default()
            .push(crate::seal::PublicKey::from_bytes(&raw)?);
    }
    Ok(keys)
}

/// Records `key` as one of `site`'s keys; false if it was already.
pub(crate) async fn add_site_key(
    client: &Client,
    site: &str,
    key: &crate::seal::PublicKey,
) -> Result<bool> {
    let n = client
        .execute(
            "INSERT INTO relaysync.site_keys (site, key_id, public_key) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[&site, &key.id(), &key.raw()],
        )
        .await
        .ctx(|| "writing relaysync.site_keys".into())?;
    Ok(n == 1)
}

/// Forgets `site`'s key `key_id`; false if HO did not hold it.
pub(crate) async fn revoke_site_key(client: &Client, site: &str, key_id: &str) -> Result<bool> {
    let n = client
        .execute(
            "DELETE FROM relaysync.site_keys WHERE site = $1 AND key_id = $2",
            &[&site, &key_id],
        )
        .await
        .ctx(|| "writing relaysync.site_keys".into())?;
    Ok(n == 1)
}

/// Packets written to HO's record per statement.
const RECORD_BATCH: usize = 2000;

/// The last up packet HO merged.
pub(crate) async fn merged_through(client: &Client) -> Result<i64> {
    Ok(client
        .query_one("SELECT applied_through FROM relaysync.up_state", &[])
        .await
        .ctx(|| "reading relaysync.up_state".into())?
        .get("applied_through"))
}

/// The statement that ends a merge transaction: HO merged up to `last`.
pub(crate) fn merged(last: i64) -> String {
    format!("UPDATE relaysync.up_state SET applied_through = {last}")
}

/// Copies the packets' statuses from the relay into HO's record; returns
/// the count per status.
pub(crate) async fn record_sent(sql: &Client, relay: &Relay) -> Result<Vec<(PacketStatus, i64)>> {
    let ctx = || "reading relaysync.sent_packets".to_string();
    let row = sql
        .query_one(
            "SELECT (SELECT coalesce(max(packet_id), 0) FROM relaysync.sent_packets) AS after,
                    (SELECT relay_xmin FROM relaysync.sent_position) AS xmin",
            &[],
        )
        .await
        .ctx(ctx)?;
    let (after, xmin): (i64, i64) = (row.get("after"), row.get("xmin"));
    let (sent, next) = relay.sent_since(after, xmin).await?;
    for chunk in sent.chunks(RECORD_BATCH) {
        write_sent(sql, chunk).await?;
    }
    sql.execute(
        "UPDATE relaysync.sent_position SET relay_xmin = $1",
        &[&next],
    )
    .await
    .ctx(|| "writing relaysync.sent_position".into())?;
    let rows = sql
        .query(
            "SELECT status, count(*) AS n FROM relaysync.sent_packets GROUP BY status ORDER BY status",
            &[],
        )
        .await
        .ctx(ctx)?;
    rows.iter()
        .map(|r| Ok((r.try_get("status").ctx(ctx)?, r.try_get("n").ctx(ctx)?)))
        .collect()
}

/// Writes (or updates the status and error of) packets in HO's record, in
/// one statement.
async fn write_sent(sql: &Client, sent: &[SentPacket]) -> Result<()> {
    let col = |f: fn(&SentPacket) -> i64| sent.iter().map(f).collect::<Vec<i64>>();
    let kinds: Vec<&str> = sent.iter().map(|s| s.packet.kind.as_str()).collect();
    let statuses: Vec<&str> = sent.iter().map(|s| s.packet.status.as_str()).collect();
    let targets: Vec<String> = sent
        .iter()
        .map(|s| serde_json::json!(s.packet.targets).to_string())
        .collect();
    let created: Vec<std::time::SystemTime> = sent.iter().map(|s| s.packet.created_at).collect();
    let errors: Vec<Option<&str>> = sent.iter().map(|s| s.error.as_deref()).collect();
    sql.execute(
        "INSERT INTO relaysync.sent_packets (packet_id, group_id, kind, targets, row_count,
            byte_count, created_at, status, error)
         SELECT i, g, k, ARRAY(SELECT jsonb_array_elements_text(t::jsonb)), r, b, c, s, e
           FROM unnest($1::int8[], $2::int8[], $3::text[], $4::text[], $5::int8[], $6::int8[],
                       $7::timestamptz[], $8::text[], $9::text[]) AS x (i, g, k, t, r, b, c, s, e)
         ON CONFLICT (packet_id) DO UPDATE SET status = EXCLUDED.status, error = EXCLUDED.error,
           targets = EXCLUDED.targets, updated_at = now()
         WHERE relaysync.sent_packets.status IS DISTINCT FROM EXCLUDED.status
            OR relaysync.sent_packets.error IS DISTINCT FROM EXCLUDED.error",
        &[
            &col(|s| s.packet.id),
            &col(|s| s.packet.group_id),
            &kinds,
            &targets,
            &col(|s| s.packet.row_count),
            &col(|s| s.packet.byte_count),
            &created,
            &statuses,
            &errors,
        ],
    )
    .await
    .ctx(|| "writing relaysync.sent_packets".into())?;
    Ok(())
}

/// Purges from HO's record the packets processed more than `keep` ago.
pub(crate) async fn purge_sent(sql: &Client, keep: Duration) -> Result<()> {
    sql.execute(
        "DELETE FROM relaysync.sent_packets
          WHERE status = $2 AND created_at < now() - make_interval(secs => $1)",
        &[&keep.as_secs_f64(), &PacketStatus::Processed],
    )
    .await
    .ctx(|| "purging relaysync.sent_packets".into())?;
    Ok(())
}

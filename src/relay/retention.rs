//! Retention: purging packets every target processed, expiring sites that
//! stay silent, and bringing an expired site back with a full sync.

use std::time::{Duration, Instant};

use super::Relay;
use crate::error::{DbContext, Result};
use crate::protocol::sql::*;
use crate::protocol::SyncReason;

/// The purge's record of what each site applied of the doomed packets, per
/// table (`relay.table_history`, read by `status --site`): its latest full
/// sync (a group purged over several batches adds up) and latest delta.
fn history_sql() -> String {
    format!(
        "done AS (
       SELECT a.site, pp.table_name, p.id, p.kind, p.group_id, p.created_at, pp.row_count
         FROM doomed d JOIN relay.packets p ON p.id = d.id
         JOIN relay.acks a ON a.packet_id = p.id AND a.status = {ACKED}
         JOIN relay.packet_parts pp ON pp.packet_id = p.id AND pp.target IN (a.site, {ALL})
        WHERE p.direction = {DOWN}
     ), latest AS (
       SELECT site, table_name,
              max(group_id) FILTER (WHERE kind = {SNAPSHOT}) AS full_group,
              max(id) FILTER (WHERE kind = {DELTA}) AS last_delta
         FROM done GROUP BY site, table_name
     ), history AS (
       INSERT INTO relay.table_history AS h (site, table_name, full_group, full_at, full_raw_rows, last_delta)
       SELECT l.site, l.table_name, l.full_group, f.at, f.raw, l.last_delta
         FROM latest l
         LEFT JOIN LATERAL (SELECT max(x.created_at) AS at, sum(x.row_count)::int8 AS raw FROM done x
                             WHERE x.site = l.site AND x.table_name = l.table_name
                               AND x.kind = {SNAPSHOT} AND x.group_id = l.full_group) f ON true
       ON CONFLICT (site, table_name) DO UPDATE SET
         full_at = CASE WHEN EXCLUDED.full_group IS NULL OR EXCLUDED.full_group < h.full_group THEN h.full_at
                        WHEN EXCLUDED.full_group = h.full_group THEN greatest(h.full_at, EXCLUDED.full_at)
                        ELSE EXCLUDED.full_at END,
         full_raw_rows = CASE WHEN EXCLUDED.full_group IS NULL OR EXCLUDED.full_group < h.full_group THEN h.full_raw_rows
                              WHEN EXCLUDED.full_group = h.full_group THEN h.full_raw_rows + EXCLUDED.full_raw_rows
                              ELSE EXCLUDED.full_raw_rows END,
         full_group = greatest(h.full_group, EXCLUDED.full_group),
         last_delta = greatest(h.last_delta, EXCLUDED.last_delta)
     )"
    )
}

/// Packets purged per statement: each statement is short, so capture and
/// apply never wait long on the purge.
const PURGE_BATCH: i64 = 1000;
/// The longest one purge round runs; the rest waits for the next round.
const PURGE_BUDGET: Duration = Duration::from_secs(2);

impl Relay {
    /// Removes packets every target processed more than `keep` ago, with
    /// their parts and acks, oldest first, in short batches; first records
    /// per site what its status needs of them. Returns the packets removed.
    pub(crate) async fn purge_processed(&self, keep: Duration) -> Result<u64> {
        let started = Instant::now();
        let mut purged = 0u64;
        loop {
            let rows = self
                .client
                .query(
                    &format!("WITH doomed AS (
                       SELECT id FROM relay.packets
                        WHERE status = {PROCESSED} AND created_at < now() - make_interval(secs => $1)
                        ORDER BY id LIMIT $2
                     ), floors AS (
                       UPDATE relay.sites s SET
                              applied_floor = greatest(s.applied_floor, f.through),
                              last_ack_floor = greatest(s.last_ack_floor, f.at)
                         FROM (SELECT a.site, max(a.packet_id) AS through, max(a.acked_at) AS at
                                 FROM relay.acks a JOIN doomed d ON d.id = a.packet_id
                                WHERE a.status = {ACKED} GROUP BY a.site) f
                        WHERE s.code = f.site
                     ), {history}
                     DELETE FROM relay.packets p USING doomed d WHERE p.id = d.id RETURNING p.id",
                     history = history_sql()),
                    &[&keep.as_secs_f64(), &PURGE_BATCH],
                )
                .await
                .ctx(|| "purging processed packets from the relay".into())?;
            purged += rows.len() as u64;
            if (rows.len() as i64) < PURGE_BATCH || started.elapsed() > PURGE_BUDGET {
                return Ok(purged);
            }
        }
    }

    /// Expires the sites that have acked nothing for `max_offline` (and were
    /// registered before that): they leave the targets of the packets they
    /// have not applied, which then settle and can be purged. Returns their
    /// codes.
    pub(crate) async fn expire_silent(&self, max_offline: Duration) -> Result<Vec<String>> {
        let tx = self.transaction().await?;
        let result = async {
            let codes: Vec<String> = self
                .client
                .query(
                    "UPDATE relay.sites s SET expired_at = now()
                      WHERE s.expired_at IS NULL
                        AND s.registered_at < now() - make_interval(secs => $1)
                        AND greatest((SELECT max(a.acked_at) FROM relay.acks a WHERE a.site = s.code),
                                     s.last_ack_floor, s.registered_at, s.rejoined_at)
                            < now() - make_interval(secs => $1)
                     RETURNING s.code",
                    &[&max_offline.as_secs_f64()],
                )
                .await?
                .iter()
                .map(|r| r.get("code"))
                .collect();
            if !codes.is_empty() {
                self.client
                    .execute(
                        &format!("WITH released AS (
                           UPDATE relay.packets p
                              SET targets = ARRAY(SELECT t FROM unnest(p.targets) t WHERE t <> ALL ($1))
                            WHERE p.direction = {DOWN} AND p.targets && $1
                              AND NOT EXISTS (SELECT 1 FROM relay.acks a
                                               WHERE a.packet_id = p.id AND a.site = ANY ($1))
                           RETURNING p.id)
                         SELECT count(*) FROM released"),
                        &[&codes],
                    )
                    .await?;
                // The `*` packets they were counted in and have not acked.
                self.client
                    .execute(
                        &format!("UPDATE relay.packets p SET target_count = p.target_count - n.k
                           FROM (SELECT q.id, count(*)::int AS k
                                   FROM relay.sites s
                                   JOIN relay.packets q ON q.id > s.first_packet
                                  WHERE s.code = ANY ($1) AND q.direction = {DOWN} AND q.targets = {ALL_ARRAY}
                                    AND NOT EXISTS (SELECT 1 FROM relay.acks a
                                                     WHERE a.packet_id = q.id AND a.site = s.code)
                                  GROUP BY q.id) n
                          WHERE p.id = n.id"),
                        &[&codes],
                    )
                    .await?;
            }
            Ok::<_, tokio_postgres::Error>(codes)
        }
        .await;
        let codes = result.ctx(|| "expiring silent sites".into())?;
        tx.commit(None).await?;
        if !codes.is_empty() {
            // The packets they left may now be processed by every target.
            self.client
                .batch_execute(
                    &format!("UPDATE relay.packets p SET status = {PROCESSED}, changed = pg_current_xact_id()
                      WHERE p.direction = {DOWN} AND p.status = {UPLOADED}
                        AND (SELECT count(*) FROM relay.acks a WHERE a.packet_id = p.id AND a.status = {ACKED})
                            >= coalesce(p.target_count, cardinality(p.targets))"),
                )
                .await
                .ctx(|| "settling the packets expired sites left".into())?;
        }
        Ok(codes)
    }

    /// Whether `site` is expired (it then asks for a full sync when it
    /// comes back, see [`Relay::rejoin`]).
    pub(crate) async fn is_expired(&self, site: &str) -> Result<bool> {
        Ok(self
            .client
            .query_opt(
                "SELECT expired_at IS NOT NULL AS expired FROM relay.sites WHERE code = $1",
                &[&site],
            )
            .await
            .ctx(|| "reading relay.sites".into())?
            .is_some_and(|r| r.get("expired")))
    }

    /// An expired site came back: it asks for a full sync (reason
    /// `expired`) unless it has asked already. HO's worker takes it back
    /// among the targets when it serves the request.
    pub(crate) async fn rejoin(&self, site: &str) -> Result<()> {
        self.client
            .execute(
                "INSERT INTO relay.sync_requests (site, reason)
                 SELECT $1, $2 WHERE NOT EXISTS (
                   SELECT 1 FROM relay.sync_requests WHERE site = $1 AND reason = $2 AND served_at IS NULL)",
                &[&site, &SyncReason::Expired],
            )
            .await
            .ctx(|| "asking for the full sync of an expired site".into())?;
        Ok(())
    }
}

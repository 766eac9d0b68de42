//! The site's side of the consumer: its position and received-packet
//! record in its own `relaysync` schema, full-sync bookkeeping per table,
//! progress of a full sync.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::applier::PartError;
use super::replica::apply_part;
use super::stage::Stages;
use crate::error::{DbContext, Result};
use crate::packet::Part;
use crate::postgres::{literal, literal_array};
use crate::progress::Progress;
use crate::protocol::{AckStatus, PacketKind, PacketStatus};
use crate::relay::{Ack, PacketInfo};

/// A site applying HO's down packets.
pub struct SiteApplier {
    site: String,
    /// Packets acked at the relay and not yet marked so at the site; the
    /// next transaction marks them (a crash first sends them again, which
    /// the relay takes as once).
    acked: Vec<i64>,
    /// When an idle sync last recorded itself.
    idle_recorded: Option<Instant>,
    /// Per table: rows loaded by a full sync in the open transaction.
    full: HashMap<String, i64>,
    progress: Option<Progress>,
}

impl SiteApplier {
    pub(super) fn new(site: &str) -> SiteApplier {
        SiteApplier {
            site: site.to_string(),
            acked: Vec::new(),
            idle_recorded: None,
            full: HashMap::new(),
            progress: None,
        }
    }

    pub(super) fn site(&self) -> &str {
        &self.site
    }

    pub(super) async fn position(&self, client: &Client) -> Result<i64> {
        Ok(client
            .query_one(
                "SELECT applied_through FROM relaysync.site WHERE site = $1",
                &[&self.site],
            )
            .await
            .ctx(|| "reading relaysync.site".into())?
            .get("applied_through"))
    }

    pub(super) async fn unsent_acks(&self, client: &Client) -> Result<Vec<Ack>> {
        let rows = client
            .query(
                "SELECT packet_id, status, row_count, error FROM relaysync.received_packets
                  WHERE NOT acked ORDER BY packet_id",
                &[],
            )
            .await
            .ctx(|| "reading relaysync.received_packets".into())?;
        rows.iter()
            .map(|r| {
                let status: PacketStatus = r
                    .try_get("status")
                    .ctx(|| "reading relaysync.received_packets".into())?;
                Ok(Ack {
                    packet_id: r.get("packet_id"),
                    status: if status == PacketStatus::Processed {
                        AckStatus::Processed
                    } else {
                        AckStatus::Failed
                    },
                    rows: r.get("row_count"),
                    error: r.get("error"),
                })
            })
            .collect()
    }

    pub(super) fn begin(&mut self, packets: &[PacketInfo]) {
        self.full.clear();
        self.progress = packets
            .iter()
            .any(|p| p.kind == PacketKind::Snapshot)
            .then(|| {
                let total: i64 = packets.iter().map(|p| p.row_count).sum();
                Progress::new(
                    format!("full sync at {}", self.site),
                    Some(total.max(0) as u64),
                )
            });
    }

    pub(super) async fn apply(
        &mut self,
        client: &Client,
        p: &PacketInfo,
        part: &Part,
        stages: &mut Stages,
    ) -> std::result::Result<u64, PartError> {
        if p.kind == PacketKind::Snapshot {
            let loaded = part.rows() - usize::from(part.has_truncate());
            *self.full.entry(part.table.clone()).or_default() += loaded as i64;
        }
        let n = apply_part(client, &self.site, part, stages).await?;
        if let Some(pr) = self.progress.as_mut() {
            pr.add(n);
        }
        Ok(n)
    }

    /// The received packets, the acks already sent, the position and the
    /// commit in one round trip (numbers and kinds only, so literals are
    /// safe); full-sync tables recorded first.
    pub(super) async fn commit(
        &mut self,
        client: &Client,
        packets: &[PacketInfo],
        acks: &[Ack],
    ) -> Result<()> {
        for (table, rows) in &self.full {
            client
                .execute(
                    "INSERT INTO relaysync.table_sync (table_name, last_full_sync, rows, packet_group)
                     VALUES ($1, now(), $2, $3)
                     ON CONFLICT (table_name) DO UPDATE SET last_full_sync = now(), rows = EXCLUDED.rows,
                       packet_group = EXCLUDED.packet_group",
                    &[table, rows, &packets[0].group_id],
                )
                .await
                .ctx(|| "writing relaysync.table_sync".into())?;
        }
        let last = packets.last().map_or(0, |p| p.id);
        let bookkeeping = format!(
            "WITH received AS (
               INSERT INTO relaysync.received_packets (packet_id, group_id, kind, row_count, status)
               SELECT u.id, u.group_id, u.kind, u.row_count, 'PROCESSED'
                 FROM unnest({ids}::int8[], {groups}::int8[], {kinds}::text[], {rows}::int8[])
                      AS u (id, group_id, kind, row_count)
               ON CONFLICT (packet_id) DO UPDATE SET status = 'PROCESSED', error = NULL,
                 row_count = EXCLUDED.row_count, applied_at = now(), acked = false
             ), acked AS (
               UPDATE relaysync.received_packets SET acked = true WHERE packet_id = ANY({acked}::int8[])
             )
             UPDATE relaysync.site SET applied_through = {last}, last_sync_at = now(), last_success_at = now()
              WHERE site = {site};
             COMMIT",
            ids = literal_array(packets.iter().map(|p| p.id.to_string())),
            groups = literal_array(packets.iter().map(|p| p.group_id.to_string())),
            kinds = literal_array(packets.iter().map(|p| literal(p.kind.as_str()))),
            rows = literal_array(acks.iter().map(|a| a.rows.to_string())),
            acked = literal_array(self.acked.iter().map(|id| id.to_string())),
            site = literal(&self.site),
        );
        if let Err(e) = client.batch_execute(&bookkeeping).await {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(e).ctx(|| "site: recording the applied packets".into());
        }
        self.acked.clear();
        if let Some(pr) = self.progress.take() {
            pr.finish();
        }
        Ok(())
    }

    /// Acks that reached the relay are marked at the site: with the next
    /// transaction, or `now` (a failure's, or those a crash left unsent).
    pub(super) async fn acked(&mut self, client: &Client, acks: &[Ack], now: bool) -> Result<()> {
        let ids: Vec<i64> = acks.iter().map(|a| a.packet_id).collect();
        if !now {
            self.acked.extend(ids);
            return Ok(());
        }
        client
            .execute(
                "UPDATE relaysync.received_packets SET acked = true WHERE packet_id = ANY($1)",
                &[&ids],
            )
            .await
            .ctx(|| "writing relaysync.received_packets".into())?;
        Ok(())
    }

    pub(super) async fn record_failure(
        &self,
        client: &Client,
        group: &[PacketInfo],
        packet: i64,
        error: &str,
    ) -> Result<()> {
        let p = group.iter().find(|p| p.id == packet).unwrap_or(&group[0]);
        client
            .execute(
                "INSERT INTO relaysync.received_packets (packet_id, group_id, kind, row_count, status, error)
                 VALUES ($1, $2, $3, 0, 'FAILED', $4)
                 ON CONFLICT (packet_id) DO UPDATE SET status = 'FAILED', error = EXCLUDED.error,
                   applied_at = now(), acked = false",
                &[&packet, &p.group_id, &p.kind, &error],
            )
            .await
            .ctx(|| "writing relaysync.received_packets".into())?;
        client
            .execute(
                "UPDATE relaysync.site SET last_sync_at = now() WHERE site = $1",
                &[&self.site],
            )
            .await
            .ctx(|| "writing relaysync.site".into())?;
        Ok(())
    }

    /// A sync that found nothing records itself at most once a minute: a
    /// streaming worker syncs many times a second.
    pub(super) async fn idle(&mut self, client: &Client) -> Result<()> {
        if self
            .idle_recorded
            .is_some_and(|t| t.elapsed() <= Duration::from_secs(60))
        {
            return Ok(());
        }
        client
            .execute(
                "UPDATE relaysync.site SET last_sync_at = now(), last_success_at = now()
                  WHERE site = $1 AND (last_sync_at IS NULL OR last_sync_at < now() - interval '1 minute')",
                &[&self.site],
            )
            .await
            .ctx(|| "writing relaysync.site".into())?;
        self.idle_recorded = Some(Instant::now());
        Ok(())
    }
}

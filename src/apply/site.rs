//! The site's side of the consumer: its position and received-packet
//! record in its own `relaysync` schema, full-sync bookkeeping per table,
//! progress of a full sync.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::applier::{Applier, PartError, Stop};
use super::replica::apply_part;
use super::stage::Stages;
use crate::book;
use crate::config::SchemaPolicy;
use crate::error::{DbContext, Result};
use crate::packet::Part;
use crate::postgres::Tx;
use crate::progress::Progress;
use crate::protocol::Target;
use crate::relay::{Ack, PacketInfo, Relay};

/// A site applying HO's down packets.
pub(crate) struct SiteApplier {
    site: String,
    target: Target,
    /// Packets acked at the relay and not yet marked so at the site; the
    /// next transaction marks them (a crash first sends them again, which
    /// the relay takes as once).
    acked: Vec<i64>,
    /// When an idle sync last recorded itself.
    idle_recorded: Option<Instant>,
    /// Per table: rows loaded by a full sync in the open transaction.
    full: HashMap<String, i64>,
    progress: Option<Progress>,
    /// Tables whose schema policy is not `propagate`.
    policies: HashMap<String, SchemaPolicy>,
    /// The packet whose held schema change HO approved.
    approved: Option<i64>,
}

impl SiteApplier {
    pub(crate) fn new(site: &str) -> SiteApplier {
        SiteApplier {
            site: site.to_string(),
            target: Target::Site(site.to_string()),
            acked: Vec::new(),
            idle_recorded: None,
            full: HashMap::new(),
            progress: None,
            policies: HashMap::new(),
            approved: None,
        }
    }

    /// With the tables' schema policies (see [`crate::config::SchemaPolicy`]).
    pub(crate) fn with_policies(mut self, policies: HashMap<String, SchemaPolicy>) -> Self {
        self.policies = policies;
        self
    }
}

impl Applier for SiteApplier {
    fn target(&self) -> &Target {
        &self.target
    }

    async fn position(&self, client: &Client) -> Result<i64> {
        book::site::position(client, &self.site).await
    }

    async fn unsent_acks(&self, client: &Client, _: &Relay, _: i64) -> Result<Vec<Ack>> {
        book::site::unsent_acks(client).await
    }

    fn begin(&mut self, _: &[PacketInfo], full_sync_rows: Option<u64>) {
        self.full.clear();
        self.progress = full_sync_rows
            .map(|total| Progress::new(format!("full sync at {}", self.site), Some(total)));
    }

    fn loaded(&mut self, table: &str, rows: i64) {
        *self.full.entry(table.to_string()).or_default() += rows;
    }

    async fn verify(
        &self,
        client: &Client,
        relay: &Relay,
        p: &PacketInfo,
    ) -> Result<std::result::Result<(), String>> {
        Ok(crate::verify::site::check(client, relay, &self.site, p.id)
            .await?
            .map(|_| ()))
    }

    async fn apply(
        &mut self,
        client: &Client,
        p: &PacketInfo,
        part: &Part,
        stages: &mut Stages,
    ) -> std::result::Result<u64, PartError> {
        let full_sync = p.kind == crate::protocol::PacketKind::Snapshot;
        let policy = self.policies.get(&part.table).copied().unwrap_or_default();
        let policy = match self.approved == Some(p.id) {
            true => super::schema::Policy::Approved,
            false => super::schema::Policy::Config(policy),
        };
        let left_out = super::schema::follow(client, part, stages, full_sync, policy).await?;
        let n = match left_out.is_empty() {
            true => apply_part(client, &self.site, part, stages).await?,
            false => {
                let part = part.without_columns(&left_out);
                apply_part(client, &self.site, &part, stages).await?
            }
        };
        if let Some(pr) = self.progress.as_mut() {
            pr.add(n);
        }
        Ok(n)
    }

    /// The received packets, the acks already sent, the position and the
    /// commit in one round trip; full-sync tables recorded first.
    async fn commit(&mut self, tx: Tx<'_>, packets: &[PacketInfo], acks: &[Ack]) -> Result<()> {
        for (table, rows) in &self.full {
            book::site::record_full_sync(&tx, table, *rows, packets[0].group_id).await?;
        }
        tx.commit_after(&book::site::applied(&self.site, packets, acks, &self.acked))
            .await
            .ctx(|| "site: recording the applied packets".into())?;
        self.acked.clear();
        if let Some(pr) = self.progress.take() {
            pr.finish();
        }
        Ok(())
    }

    /// Acks that reached the relay are marked at the site: with the next
    /// transaction, or `now` (a failure's, or those a crash left unsent).
    async fn acked(&mut self, client: &Client, acks: &[Ack], now: bool) -> Result<()> {
        let ids: Vec<i64> = acks.iter().map(|a| a.packet_id).collect();
        if !now {
            self.acked.extend(ids);
            return Ok(());
        }
        book::site::mark_acked(client, &ids).await
    }

    async fn record_failure(
        &self,
        client: &Client,
        group: &[PacketInfo],
        packet: i64,
        stop: &Stop,
    ) -> Result<()> {
        let p = group.iter().find(|p| p.id == packet).unwrap_or(&group[0]);
        let held = match stop {
            Stop::Held(held) => Some(held.sql.as_str()),
            Stop::Failed(_) => None,
        };
        let packet = (packet, p.group_id, p.kind);
        book::site::record_failure(client, &self.site, packet, stop.error(), held).await
    }

    fn approve(&mut self, packet: i64) {
        self.approved = Some(packet);
    }

    /// A sync that found nothing records itself at most once a minute: a
    /// streaming worker syncs many times a second.
    async fn idle(&mut self, client: &Client) -> Result<()> {
        if self
            .idle_recorded
            .is_some_and(|t| t.elapsed() <= Duration::from_secs(60))
        {
            return Ok(());
        }
        book::site::record_idle(client, &self.site).await?;
        self.idle_recorded = Some(Instant::now());
        Ok(())
    }
}

//! One transaction of packets, and what each kind of packet does in it:
//! the one match on [`PacketKind`] of the apply side. A new kind is an arm
//! here and its handler.

use std::collections::VecDeque;

use tokio_postgres::Client;

use super::applier::{self, Applier, PartError, Stop};
use super::consumer::{Consumer, Failure};
use super::stage::Stages;
use crate::error::{db_message, DbContext, Error, Result};
use crate::packet::read_part;
use crate::postgres::Tx;
use crate::protocol::PacketKind;
use crate::relay::{Ack, PacketInfo, Relay, StoredPart};
use crate::seal::Chains;

/// Whether a packet of `kind` is applied in a transaction of its own group
/// only (a full sync, a verify), rather than batched with the delta groups
/// around it.
pub(super) fn goes_alone(kind: PacketKind) -> bool {
    match kind {
        PacketKind::Delta => false,
        PacketKind::Snapshot | PacketKind::Verify => true,
    }
}

/// The rows of a full sync, when `packets` are one.
fn full_sync_rows(packets: &[PacketInfo]) -> Option<u64> {
    packets
        .iter()
        .any(|p| p.kind == PacketKind::Snapshot)
        .then(|| packets.iter().map(|p| p.row_count.max(0) as u64).sum())
}

impl<A: Applier> Consumer<A> {
    /// Applies whole groups (`packets`, in order) in one transaction; on a
    /// packet that cannot be applied, rolls back and names it.
    pub(super) async fn apply_batch(
        &mut self,
        client: &Client,
        relay: &Relay,
        packets: &[PacketInfo],
    ) -> Result<std::result::Result<Vec<Ack>, Failure>> {
        let started = std::time::Instant::now();
        // Outside the transaction: a refusal there must not abort it.
        self.applier.prepare(client).await?;
        let checks = relay.seals().checks();
        if checks && self.chains.is_none() {
            self.chains = Some(Chains::new(crate::book::chains::load(client).await?));
        }
        // Moved packet by packet; kept only if the transaction commits.
        let mut chains = self.chains.clone().unwrap_or_default();
        let tx = match begin(client).await? {
            Ok(tx) => tx,
            Err(refused) => return Ok(Err((packets[0].id, refused.into()))),
        };
        self.applier.begin(packets, full_sync_rows(packets));
        let target = self.applier.target().clone();
        let (mid, after_commit) = applier::crash_points(&target);
        let mut acks = Vec::with_capacity(packets.len());
        let mut fetched: VecDeque<StoredPart> = VecDeque::new();
        let mut fetched_to = 0usize;
        for (i, p) in packets.iter().enumerate() {
            if i == fetched_to {
                let ids = fetch_window(&packets[i..]);
                fetched_to = i + ids.len();
                fetched = relay.parts_of(&ids, &target).await?.into();
            }
            let mut parts = Vec::new();
            while fetched.front().is_some_and(|s| s.packet_id == p.id) {
                parts.push(fetched.pop_front().expect("front checked"));
            }
            // Nothing of a packet is applied before its seal is checked.
            if let Err(error) = relay.seals().check(p, &parts, &target, &mut chains) {
                tx.rollback().await;
                return Ok(Err((p.id, error.into())));
            }
            match self.apply_packet(&tx, relay, p, parts).await? {
                Ok(rows) => acks.push(Ack::processed(p.id, rows as i64)),
                Err(error) => {
                    tx.rollback().await;
                    return Ok(Err((p.id, error)));
                }
            }
            if i == 0 {
                crate::failpoint::hit(mid);
            }
        }
        if checks {
            crate::book::chains::save(&tx, &chains.take_moved()).await?;
        }
        self.applier.commit(tx, packets, &acks).await?;
        if checks {
            self.chains = Some(chains);
        }
        crate::telemetry::packets_applied(
            applier::direction(&target),
            packets.len(),
            started.elapsed(),
        );
        crate::failpoint::hit(after_commit);
        Ok(Ok(acks))
    }

    /// Applies packet `p` with its `parts` in the open transaction, as its
    /// kind says; Err(stop) fails (or holds) it.
    async fn apply_packet(
        &mut self,
        client: &Client,
        relay: &Relay,
        p: &PacketInfo,
        parts: Vec<StoredPart>,
    ) -> Result<std::result::Result<u64, Stop>> {
        match p.kind {
            PacketKind::Delta => self.apply_parts(client, p, parts, false).await,
            PacketKind::Snapshot => self.apply_parts(client, p, parts, true).await,
            PacketKind::Verify => match self.apply_parts(client, p, parts, false).await? {
                Ok(rows) => Ok(self
                    .applier
                    .verify(client, relay, p)
                    .await?
                    .map(|()| rows)
                    .map_err(Stop::from)),
                failed => Ok(failed),
            },
        }
    }

    /// Applies a packet's parts in order (`full_sync`: the applier is told
    /// what each loaded); the first that fails fails it.
    async fn apply_parts(
        &mut self,
        client: &Client,
        p: &PacketInfo,
        parts: Vec<StoredPart>,
        full_sync: bool,
    ) -> Result<std::result::Result<u64, Stop>> {
        let mut rows = 0;
        for stored in parts {
            match self.apply_stored(client, p, stored, full_sync).await? {
                Ok(n) => rows += n,
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok(rows))
    }

    /// Reads and applies one stored part; a part that is damaged or that the
    /// target refuses is the packet's failure.
    async fn apply_stored(
        &mut self,
        client: &Client,
        p: &PacketInfo,
        stored: StoredPart,
        full_sync: bool,
    ) -> Result<std::result::Result<u64, Stop>> {
        let part = match read_part(&stored.arrow_ipc) {
            Ok(part) => part,
            Err(e) => {
                return Ok(Err(Stop::Failed(format!(
                    "part {} of packet {} is not readable: {e}; the relay copy is damaged",
                    stored.table_name, p.id
                ))))
            }
        };
        if let Some(damage) = stored.damage(part.rows()) {
            return Ok(Err(Stop::Failed(format!(
                "part {} of packet {} is damaged: {damage}; the relay copy is not what was written",
                stored.table_name, p.id
            ))));
        }
        if part.table != stored.table_name {
            return Ok(Err(Stop::Failed(format!(
                "part says table {} but the relay row says {}",
                part.table, stored.table_name
            ))));
        }
        drop(stored);
        if full_sync {
            // A table's first part opens with the truncate that clears it.
            let loaded = part.rows() - usize::from(part.has_truncate());
            self.applier.loaded(&part.table, loaded as i64);
        }
        let direction = applier::direction(self.applier.target());
        match self.applier.apply(client, p, &part, &mut self.stages).await {
            Ok(n) => {
                crate::telemetry::part_applied(direction, &part.table, n);
                Ok(Ok(n))
            }
            Err(PartError::Refused(error)) => Ok(Err(error.into())),
            Err(PartError::Held(held)) => Ok(Err(Stop::Held(held))),
            Err(PartError::Db(e)) => {
                part_failure(&self.stages, &part.table, e).map(|e| Err(e.into()))
            }
        }
    }
}

/// Opens the transaction as PostgreSQL's apply workers do (no triggers, no
/// FK checks); Err(message) when the role may not.
async fn begin(client: &Client) -> Result<std::result::Result<Tx<'_>, String>> {
    // One round trip; a failed SET leaves nothing open.
    match Tx::begin(client, "BEGIN; SET LOCAL session_replication_role = replica").await {
        Ok(tx) => Ok(Ok(tx)),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) => {
            Ok(Err(format!(
                "cannot set session_replication_role ({}); connect the worker as a superuser or GRANT SET ON PARAMETER session_replication_role TO its role",
                db_message(&e)
            )))
        }
        Err(e) => Err(e).ctx(|| "BEGIN".into()),
    }
}

/// What a part that failed to apply says of its packet: the error to record
/// as FAILED; or, when the connection is out of step (a COPY refused at its
/// start), an error that makes the caller drop the connection, so that a
/// new one retries the packet.
fn part_failure(stages: &Stages, table: &str, e: tokio_postgres::Error) -> Result<String> {
    if stages.out_of_step() {
        return Err(Error::Db {
            context: format!("applying {table} (the connection is dropped and the packet retried)"),
            source: e,
        });
    }
    Ok(format!("{table}: {}", db_message(&e)))
}

/// The ids of the packets whose parts are fetched together: at most
/// FETCH_BYTES of them, or one packet's.
pub(super) fn fetch_window(packets: &[PacketInfo]) -> Vec<i64> {
    /// Compressed bytes of parts fetched from the relay in one query.
    const FETCH_BYTES: i64 = 8 << 20;
    let mut bytes = 0;
    let mut ids = Vec::new();
    for q in packets {
        if !ids.is_empty() && bytes + q.byte_count > FETCH_BYTES {
            break;
        }
        bytes += q.byte_count;
        ids.push(q.id);
    }
    ids
}

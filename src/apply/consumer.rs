//! The one loop that applies packets, in both directions.
//!
//! Exactly once, whoever applies:
//! - packets are applied in id order; a group (the packets HO stored in one
//!   relay transaction) in one transaction, together with the new position
//!   in the applier's own database, so a crash leaves all of it or none;
//! - acks go to the relay after the commit; those a crash interrupted are
//!   sent again when the next session starts;
//! - a packet that cannot be applied stops this stream there, acked FAILED
//!   with the error; the next sync tries it again.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::applier::{self, Applier, Stop};
use super::kinds::goes_alone;
use super::stage::Stages;
use crate::error::{Error, Result};
use crate::relay::{Ack, PacketInfo, Relay};

/// Consecutive delta groups applied in one transaction when the applier is
/// behind (a site catching up, HO with several sites' uploads waiting), up
/// to this many rows: each group stays whole, and one commit, one ack and
/// one round of bookkeeping serve them all.
const BATCH_ROWS: i64 = 100_000;

/// What one round of consuming did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Consumed {
    pub packets: u64,
    /// Rows the packets carried.
    pub rows: u64,
    /// Rows that changed something at HO (its merge only).
    pub merged: u64,
    /// Rows HO could not store (its merge only).
    pub rejected: u64,
    /// Acks an earlier run left unsent, sent now.
    pub acks_resent: u64,
    /// The packet the stream stopped at, and why.
    #[serde(serialize_with = "failed")]
    pub failed: Option<(i64, String)>,
    /// The stream stopped at a schema change the site does not make by
    /// itself (`failed` names it, with the change as SQL): held, not failed.
    pub held: bool,
    pub applied_through: i64,
}

/// A failed packet as `{"packet": …, "error": …}`, or null.
fn failed<S: serde::Serializer>(
    f: &Option<(i64, String)>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    #[derive(serde::Serialize)]
    struct Failed<'a> {
        packet: i64,
        error: &'a str,
    }
    let f = f.as_ref().map(|(packet, error)| Failed {
        packet: *packet,
        error,
    });
    serde::Serialize::serialize(&f, s)
}

impl Consumed {
    /// The failed packet as an error naming the retry, if one failed.
    pub(crate) fn failure(&self, applier: &impl Applier) -> Option<Error> {
        self.failed.as_ref().map(|(packet, error)| match self.held {
            true => Error::PacketHeld {
                at: applier::place(applier.target()),
                packet: *packet,
                error: error.clone(),
            },
            false => Error::PacketFailed {
                at: applier::place(applier.target()),
                packet: *packet,
                error: error.clone(),
                retry: applier::retry(applier.target()),
            },
        })
    }
}

/// A consumer of packets, kept across the syncs of a long-running worker.
pub(crate) struct Consumer<A> {
    pub(super) applier: A,
    pub(super) stages: Stages,
    /// The last packet applied: read from the applier's database on first use.
    applied: Option<i64>,
    /// How long acks of applied packets may wait to go to the relay
    /// together (zero: each round sends its own).
    ack_every: Duration,
    /// Acks not sent yet (recorded in the applier's database: a crash
    /// leaves them to be sent when the next session starts).
    unsent: Vec<Ack>,
    /// When the oldest unsent ack was made.
    unsent_since: Option<Instant>,
    /// The chains of signed packets followed: read from the applier's
    /// database on first use, when packets are checked.
    pub(super) chains: Option<crate::seal::Chains>,
}

/// A packet that failed (or is held), and why.
pub(super) type Failure = (i64, Stop);

impl<A: Applier> Consumer<A> {
    pub(crate) fn new(applier: A) -> Consumer<A> {
        Consumer {
            stages: Stages::default(),
            applier,
            applied: None,
            ack_every: Duration::ZERO,
            unsent: Vec::new(),
            unsent_since: None,
            chains: None,
        }
    }

    /// Lets acks wait up to about `every` to go to the relay together: a
    /// streaming worker applying many small packets then writes the relay
    /// (where every site's acks of a packet settle it) once per `every`
    /// instead of once per packet. Each target waits its own share of it,
    /// from half to one and a half times: the sites get the same packets
    /// at the same moment, and acks sent at the same moment wait for each
    /// other (the packets they settle are locked in turn), holding each
    /// site's next fetch back.
    pub(crate) fn set_ack_every(&mut self, every: Duration) {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.applier.target().as_str().hash(&mut h);
        let share = (h.finish() % 1000) as f64 / 1000.0;
        self.ack_every = every.mul_f64(0.5 + share);
    }

    /// When the unsent acks are due, if any.
    pub(crate) fn acks_due_at(&self) -> Option<Instant> {
        self.unsent_since.map(|t| t + self.ack_every)
    }

    /// Sends the unsent acks to the relay, then records them as sent.
    pub(crate) async fn send_acks(&mut self, client: &Client, relay: &Relay) -> Result<()> {
        if self.unsent.is_empty() {
            return Ok(());
        }
        relay.ack(self.applier.target(), &self.unsent).await?;
        let sent = std::mem::take(&mut self.unsent);
        self.unsent_since = None;
        self.applier.acked(client, &sent, false).await
    }

    /// Applies every packet for this applier, in order, and acks them;
    /// stops at the first that fails.
    pub(crate) async fn consume(&mut self, client: &Client, relay: &Relay) -> Result<Consumed> {
        let mut out = Consumed::default();
        let mut applied = match self.applied {
            Some(a) => a,
            None => {
                let a = self.applier.position(client).await?;
                let unmarked = self.applier.unsent_acks(client, relay, a).await?;
                let missing = relay.missing_acks(self.applier.target(), &unmarked).await?;
                relay.ack(self.applier.target(), &missing).await?;
                self.applier.acked(client, &unmarked, true).await?;
                out.acks_resent = missing.len() as u64;
                a
            }
        };
        self.applied = Some(applied);
        loop {
            let (groups, more) = relay
                .next_groups(
                    applier::direction(self.applier.target()),
                    self.applier.target(),
                    applied,
                )
                .await?;
            if groups.is_empty() {
                break;
            }
            // Packets stored meanwhile are for the next round (their NOTIFY
            // wakes a streaming worker for it).
            if !self.apply_groups(client, relay, &groups, &mut out).await? || !more {
                break;
            }
            applied = self.applied.unwrap_or(applied);
        }
        if self.acks_due_at().is_some_and(|t| t <= Instant::now()) {
            self.send_acks(client, relay).await?;
        }
        if out.packets == 0 && out.failed.is_none() {
            self.applier.idle(client).await?;
        }
        out.applied_through = self.applied.unwrap_or(applied);
        Ok(out)
    }

    /// Applies `groups` in order, consecutive delta groups together in one
    /// transaction; false when a packet failed (recorded in `out`).
    async fn apply_groups(
        &mut self,
        client: &Client,
        relay: &Relay,
        groups: &[Vec<PacketInfo>],
        out: &mut Consumed,
    ) -> Result<bool> {
        let mut last_log = Instant::now();
        let mut i = 0;
        // After a batch of groups fails, its groups go one by one, so the
        // ones before the failing packet commit and it is named exactly.
        let mut single_until = 0;
        let mut retried = None;
        let mut approved = None;
        while i < groups.len() {
            let n = if i < single_until {
                1
            } else {
                batch_len(&groups[i..])
            };
            let packets: Vec<PacketInfo> = groups[i..i + n].concat();
            let result = self.apply_batch(client, relay, &packets).await;
            match &result {
                Ok(Ok(_)) => self.stages.committed(),
                _ => self.stages.rolled_back(),
            }
            match result? {
                Ok(acks) => {
                    self.applied = packets.last().map(|p| p.id).or(self.applied);
                    let (merged, rejected) = self.applier.take_counts();
                    out.packets += acks.len() as u64;
                    out.rows += acks.iter().map(|a| a.rows as u64).sum::<u64>();
                    out.merged += merged;
                    out.rejected += rejected;
                    self.unsent.extend(acks);
                    self.unsent_since.get_or_insert_with(Instant::now);
                    if self.acks_due_at().is_some_and(|t| t <= Instant::now()) {
                        self.send_acks(client, relay).await?;
                    }
                    i += n;
                }
                Err((packet, stop)) => {
                    // A kept staging table may predate a change the DBA
                    // made to its target: retry with new ones first.
                    let had_kept = self.stages.reset(client).await;
                    if n > 1 {
                        single_until = i + n;
                        continue;
                    }
                    if had_kept && retried != Some(i) {
                        retried = Some(i);
                        continue;
                    }
                    // A held change HO approved is made now.
                    if matches!(stop, Stop::Held(_))
                        && approved != Some(packet)
                        && relay.schema_approved(self.applier.target(), packet).await?
                    {
                        self.applier.approve(packet);
                        approved = Some(packet);
                        continue;
                    }
                    self.fail(client, relay, &groups[i], packet, &stop).await?;
                    out.held = matches!(stop, Stop::Held(_));
                    out.failed = Some((packet, stop.error().to_string()));
                    return Ok(false);
                }
            }
            if last_log.elapsed() > Duration::from_secs(5) {
                last_log = Instant::now();
                tracing::info!(packets = out.packets, rows = out.rows, "applying");
            }
        }
        Ok(true)
    }

    /// Records a failed (held) packet and acks it FAILED (HELD): this
    /// stream stops there.
    async fn fail(
        &mut self,
        client: &Client,
        relay: &Relay,
        group: &[PacketInfo],
        packet: i64,
        stop: &Stop,
    ) -> Result<()> {
        match stop {
            Stop::Held(_) => crate::telemetry::packet_held(packet, stop.error()),
            Stop::Failed(_) => crate::telemetry::packet_failed(packet, stop.error()),
        }
        self.send_acks(client, relay).await?;
        self.applier
            .record_failure(client, group, packet, stop)
            .await?;
        let ack = [match stop {
            Stop::Held(held) => Ack::held(packet, &held.message),
            Stop::Failed(error) => Ack::failed(packet, error),
        }];
        relay.ack(self.applier.target(), &ack).await?;
        self.applier.acked(client, &ack, true).await
    }
}

/// How many of `groups` (at least one) to apply in one transaction: delta
/// groups up to BATCH_ROWS rows; a full sync goes alone.
fn batch_len(groups: &[Vec<PacketInfo>]) -> usize {
    let mut rows = 0;
    let mut n = 0;
    for g in groups {
        if g.iter().any(|p| goes_alone(p.kind)) {
            break;
        }
        rows += g.iter().map(|p| p.row_count).sum::<i64>();
        if n > 0 && rows > BATCH_ROWS {
            break;
        }
        n += 1;
    }
    n.max(1)
}

#[cfg(test)]
mod tests {
    use super::super::kinds::fetch_window;
    use super::*;
    use crate::protocol::{Origin, PacketKind, PacketStatus};

    fn packet(id: i64, group: i64, kind: PacketKind, rows: i64, bytes: i64) -> PacketInfo {
        PacketInfo {
            id,
            origin: Origin::Ho,
            group_id: group,
            kind,
            row_count: rows,
            byte_count: bytes,
            targets: vec!["s1".into()],
            status: PacketStatus::Uploaded,
            created_at: std::time::SystemTime::UNIX_EPOCH,
            signed: None,
            signature: None,
        }
    }

    #[test]
    fn delta_groups_batch_up_to_the_row_bound() {
        let g = |id, rows| vec![packet(id, id, PacketKind::Delta, rows, 10)];
        let groups = vec![g(1, 40_000), g(2, 40_000), g(3, 40_000), g(4, 1)];
        assert_eq!(batch_len(&groups), 2);
        assert_eq!(batch_len(&groups[2..]), 2);
        // A group larger than the bound still goes, alone.
        assert_eq!(batch_len(&[g(5, 500_000), g(6, 1)]), 1);
    }

    #[test]
    fn a_full_sync_goes_alone() {
        let delta = vec![packet(1, 1, PacketKind::Delta, 10, 10)];
        let snap = vec![
            packet(2, 2, PacketKind::Snapshot, 10, 10),
            packet(3, 2, PacketKind::Snapshot, 10, 10),
        ];
        assert_eq!(batch_len(&[delta.clone(), snap.clone(), delta.clone()]), 1);
        assert_eq!(batch_len(&[snap, delta]), 1);
    }

    #[test]
    fn fetch_windows_are_bounded_by_bytes() {
        let ps: Vec<PacketInfo> = (1..=5)
            .map(|i| packet(i, 1, PacketKind::Delta, 1, 3 << 20))
            .collect();
        assert_eq!(fetch_window(&ps), vec![1, 2]);
        let big = [packet(9, 9, PacketKind::Delta, 1, 100 << 20)];
        assert_eq!(fetch_window(&big), vec![9]);
    }
}

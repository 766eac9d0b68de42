//! Acknowledgements: a target's answer to each packet, and the packet's
//! status that follows from all of them.

use super::{get, Relay};
use crate::error::{DbContext, Result};
use crate::postgres::{literal, literal_array};
use crate::protocol::{AckStatus, Target};

/// An acknowledgement from a target (a site, or HO for up packets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ack {
    pub(crate) packet_id: i64,
    pub(crate) status: AckStatus,
    pub(crate) rows: i64,
    pub(crate) error: Option<String>,
}

impl Ack {
    /// The packet was applied with `rows` rows.
    pub(crate) fn processed(packet_id: i64, rows: i64) -> Ack {
        Ack {
            packet_id,
            status: AckStatus::Processed,
            rows,
            error: None,
        }
    }

    /// The packet could not be applied.
    pub(crate) fn failed(packet_id: i64, error: &str) -> Ack {
        Ack {
            packet_id,
            status: AckStatus::Failed,
            rows: 0,
            error: Some(error.to_string()),
        }
    }

    /// The packet waits for a schema change the site does not make by
    /// itself (`error` says which, as SQL).
    pub(crate) fn held(packet_id: i64, error: &str) -> Ack {
        Ack {
            status: AckStatus::Held,
            ..Ack::failed(packet_id, error)
        }
    }
}

impl Relay {
    /// Of `acks` (which this side's bookkeeping has not marked sent), those
    /// the relay does not hold as they are: what a crash left unsent. (The
    /// last acks of every run are marked only by the next transaction.)
    pub(crate) async fn missing_acks(&self, target: &Target, acks: &[Ack]) -> Result<Vec<Ack>> {
        if acks.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = acks.iter().map(|a| a.packet_id).collect();
        let rows = self
            .client
            .query(
                "SELECT packet_id, status FROM relay.acks WHERE site = $1 AND packet_id = ANY($2)",
                &[&target, &ids],
            )
            .await
            .ctx(|| "reading relay.acks".into())?;
        let held: Vec<(i64, AckStatus)> = rows
            .iter()
            .map(|r| {
                Ok((
                    get(r, "packet_id", "relay.acks")?,
                    get(r, "status", "relay.acks")?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(acks
            .iter()
            .filter(|a| !held.contains(&(a.packet_id, a.status)))
            .cloned()
            .collect())
    }

    /// Writes `target`'s acks and updates each packet's status: `PROCESSED`
    /// once every target acked it, `FAILED` while any target failed it.
    pub(crate) async fn ack(&self, target: &Target, acks: &[Ack]) -> Result<()> {
        if acks.is_empty() {
            return Ok(());
        }
        // One round trip. relay.settle locks the packets (ten sites ack the
        // same packets, and each holds the locks until its commit) and then
        // sets their status with a new snapshot, which sees the acks of
        // every site that committed before it. A site's role cannot update
        // packets itself: settle runs as the relay's owner.
        let ids = literal_array(acks.iter().map(|a| a.packet_id.to_string()));
        let statuses = literal_array(acks.iter().map(|a| literal(a.status.as_str())));
        let rows = literal_array(acks.iter().map(|a| a.rows.to_string()));
        let errors = literal_array(
            acks.iter()
                .map(|a| a.error.as_deref().map_or("NULL".to_string(), literal)),
        );
        let sql = format!(
            "INSERT INTO relay.acks (packet_id, site, status, rows, error)
               SELECT a.id, {target}, a.status, a.rows, a.error
                 FROM unnest({ids}::int8[], {statuses}::text[], {rows}::int8[], {errors}::text[])
                      AS a (id, status, rows, error)
                -- a packet purged meanwhile was processed by every target
                WHERE EXISTS (SELECT 1 FROM relay.packets p WHERE p.id = a.id)
             ON CONFLICT (packet_id, site) DO UPDATE SET status = EXCLUDED.status,
               rows = EXCLUDED.rows, error = EXCLUDED.error, acked_at = now();
             SELECT relay.settle({ids}::int8[])",
            target = literal(target.as_str()),
        );
        self.transact(&sql)
            .await
            .ctx(|| "writing relay.acks".into())
    }
}

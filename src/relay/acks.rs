//! Acknowledgements: a target's answer to each packet, and the packet's
//! status that follows from all of them.

use super::Relay;
use crate::error::{DbContext, Result};
use crate::postgres::{literal, literal_array};
use crate::protocol::AckStatus;

/// An acknowledgement from a target (a site, or HO for up packets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub packet_id: i64,
    pub status: AckStatus,
    pub rows: i64,
    pub error: Option<String>,
}

impl Ack {
    /// The packet was applied with `rows` rows.
    pub fn processed(packet_id: i64, rows: i64) -> Ack {
        Ack {
            packet_id,
            status: AckStatus::Processed,
            rows,
            error: None,
        }
    }

    /// The packet could not be applied.
    pub fn failed(packet_id: i64, error: &str) -> Ack {
        Ack {
            packet_id,
            status: AckStatus::Failed,
            rows: 0,
            error: Some(error.to_string()),
        }
    }
}

impl Relay {
    /// Writes `target`'s acks and updates each packet's status: `PROCESSED`
    /// once every target acked it, `FAILED` while any target failed it.
    pub async fn ack(&self, target: &str, acks: &[Ack]) -> Result<()> {
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
            "BEGIN;
             INSERT INTO relay.acks (packet_id, site, status, rows, error)
               SELECT a.id, {target}, a.status, a.rows, a.error
                 FROM unnest({ids}::int8[], {statuses}::text[], {rows}::int8[], {errors}::text[])
                      AS a (id, status, rows, error)
             ON CONFLICT (packet_id, site) DO UPDATE SET status = EXCLUDED.status,
               rows = EXCLUDED.rows, error = EXCLUDED.error, acked_at = now();
             SELECT relay.settle({ids}::int8[]);
             COMMIT;",
            target = literal(target),
        );
        let result = self
            .client
            .batch_execute(&sql)
            .await
            .ctx(|| "writing relay.acks".into());
        if result.is_err() {
            // A failed statement leaves the explicit transaction open and aborted.
            self.rollback().await;
        }
        result
    }
}

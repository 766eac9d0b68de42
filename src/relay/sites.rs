//! Registered sites, full-sync requests and capture positions.

use tokio_postgres::types::Type;

use super::{get, Relay};
use crate::error::{DbContext, Error, Result};
use crate::protocol::{Lsn, Origin, SyncReason};

/// A pending full-sync request.
#[derive(Debug, Clone)]
pub(crate) struct SyncRequest {
    pub(crate) id: i64,
    pub(crate) site: String,
    /// None: every configured table.
    pub(crate) tables: Option<Vec<String>>,
}

impl Relay {
    /// Codes of the registered sites.
    pub async fn sites(&self) -> Result<Vec<String>> {
        let rows = self
            .client
            .query("SELECT code FROM relay.sites ORDER BY code", &[])
            .await
            .ctx(|| "reading relay.sites".into())?;
        rows.iter().map(|r| get(r, "code", "relay.sites")).collect()
    }

    /// Codes of the registered sites that are not expired: the targets of
    /// new packets. Inside the down writer's transaction: it takes the down
    /// writers' lock first, so no site joins (see [`Relay::lock_down_ids`])
    /// between this reading and the writer's commit.
    pub(crate) async fn active_sites(&self) -> Result<Vec<String>> {
        self.lock_down_ids().await?;
        let rows = self
            .client
            .query(
                "SELECT code FROM relay.sites WHERE expired_at IS NULL ORDER BY code",
                &[],
            )
            .await
            .ctx(|| "reading relay.sites".into())?;
        rows.iter().map(|r| get(r, "code", "relay.sites")).collect()
    }

    /// Takes the down writers' transaction lock (the one
    /// [`Relay::insert_packet`] takes): a site that joins the `*` packets
    /// from the last id handed out (its `first_packet`) does so while no
    /// down packet is being written with the sites read before it joined.
    pub(super) async fn lock_down_ids(&self) -> Result<()> {
        self.client
            .execute(
                "SELECT pg_advisory_xact_lock(hashtext('relay.packets ' || $1))",
                &[&crate::protocol::Direction::Down],
            )
            .await
            .ctx(|| "locking the relay's down packets".into())?;
        Ok(())
    }

    /// Asks for a full sync of `tables` (None: all) at each of `sites`.
    pub(crate) async fn request_sync(
        &self,
        sites: &[String],
        tables: Option<&[String]>,
        reason: SyncReason,
    ) -> Result<()> {
        let tables: Option<Vec<String>> = tables.map(|t| t.to_vec());
        for site in sites {
            self.require_site(site).await?;
        }
        self.client
            .execute(
                "INSERT INTO relay.sync_requests (site, tables, reason) SELECT s, $2, $3 FROM unnest($1::text[]) s",
                &[&sites, &tables, &reason],
            )
            .await
            .ctx(|| "writing relay.sync_requests".into())?;
        Ok(())
    }

    /// Asks every active (not expired) site for a full sync of `table`:
    /// HO found a partition of it emptied without a change in the stream
    /// (`reason` truncated), or rows given values the stream does not carry
    /// (schema).
    pub(crate) async fn request_reload(&self, table: &str, reason: SyncReason) -> Result<()> {
        self.client
            .execute(
                "INSERT INTO relay.sync_requests (site, tables, reason)
                 SELECT code, ARRAY[$1], $2 FROM relay.sites WHERE expired_at IS NULL",
                &[&table, &reason],
            )
            .await
            .ctx(|| "writing relay.sync_requests".into())?;
        Ok(())
    }

    /// Full-sync requests not served yet, oldest first. A request of an
    /// expired site is widened to every table first: whatever brings it
    /// back (a table added, a push) must reload all it missed.
    pub(crate) async fn pending_requests(&self) -> Result<Vec<SyncRequest>> {
        let rows = self
            .client
            .query(
                "WITH widened AS (
                   UPDATE relay.sync_requests r SET tables = NULL
                     FROM relay.sites s
                    WHERE s.code = r.site AND s.expired_at IS NOT NULL
                      AND r.served_at IS NULL AND r.tables IS NOT NULL
                   RETURNING r.id)
                 SELECT id, site, CASE WHEN id IN (SELECT id FROM widened) THEN NULL ELSE tables END AS tables
                   FROM relay.sync_requests WHERE served_at IS NULL ORDER BY id",
                &[],
            )
            .await
            .ctx(|| "reading relay.sync_requests".into())?;
        let t = "relay.sync_requests";
        rows.iter()
            .map(|r| {
                Ok(SyncRequest {
                    id: get(r, "id", t)?,
                    site: get(r, "site", t)?,
                    tables: get(r, "tables", t)?,
                })
            })
            .collect()
    }
}

impl super::RelayTx<'_> {
    /// Marks requests served by a snapshot group (inside its transaction);
    /// an expired site among them that got every table (a request widened
    /// after it expired got a part only) is a target of new packets again.
    pub(crate) async fn mark_served(&self, ids: &[i64], group: Option<i64>) -> Result<()> {
        self.lock_down_ids().await?;
        self.client
            .execute(
                "WITH served AS (
                   UPDATE relay.sync_requests SET served_at = now(), group_id = $2 WHERE id = ANY($1)
                   RETURNING site, tables)
                 UPDATE relay.sites SET expired_at = NULL, first_packet = relay.last_packet_id(),
                        -- back in touch: max_offline counts from here
                        rejoined_at = now()
                  WHERE expired_at IS NOT NULL AND code IN (SELECT site FROM served WHERE tables IS NULL)",
                &[&ids, &group],
            )
            .await
            .ctx(|| "writing relay.sync_requests".into())?;
        Ok(())
    }
}

impl Relay {
    /// Fails with the fix when `site` is not registered.
    pub async fn require_site(&self, site: &str) -> Result<()> {
        self.first_packet(site).await.map(|_| ())
    }

    /// The last packet id before `site` joined the `*` packets (when it
    /// registered, or came back from expiry): it is a target of the `*`
    /// packets after it. Fails with the fix when `site` is not registered.
    pub async fn first_packet(&self, site: &str) -> Result<i64> {
        let row = self
            .client
            .query_opt(
                "SELECT first_packet FROM relay.sites WHERE code = $1",
                &[&site],
            )
            .await
            .ctx(|| "reading relay.sites".into())?;
        match row {
            Some(row) => get(&row, "first_packet", "relay.sites"),
            None => Err(Error::Setup(format!(
                "site '{site}' is not registered in the relay; run `relaysync site add {site}`"
            ))),
        }
    }

    /// The end LSN of the last transaction captured from `origin` (0 if none).
    pub(crate) async fn capture_lsn(&self, origin: &Origin) -> Result<Lsn> {
        let row = self
            .client
            .query_opt(
                "SELECT lsn FROM relay.capture_state WHERE origin = $1",
                &[origin],
            )
            .await
            .ctx(|| "reading relay.capture_state".into())?;
        match row {
            Some(r) => get(&r, "lsn", "relay.capture_state"),
            None => Ok(Lsn::from(0)),
        }
    }
}

impl super::RelayTx<'_> {
    /// Records the capture position (inside the packets' transaction).
    pub(crate) async fn set_capture_lsn(
        &self,
        origin: &Origin,
        slot: &str,
        lsn: Lsn,
    ) -> Result<()> {
        self.client
            .execute_typed(
                "INSERT INTO relay.capture_state (origin, slot, lsn) VALUES ($1, $2, $3)
                 ON CONFLICT (origin) DO UPDATE SET slot = EXCLUDED.slot,
                   lsn = greatest(relay.capture_state.lsn, EXCLUDED.lsn), updated_at = now()",
                &[
                    (origin, Type::TEXT),
                    (&slot, Type::TEXT),
                    (&lsn, Type::PG_LSN),
                ],
            )
            .await
            .ctx(|| "writing relay.capture_state".into())?;
        Ok(())
    }
}

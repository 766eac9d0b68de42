//! Verify requests, HO's hashes and the sites' results.

use super::{get, Relay};
use crate::error::{DbContext, Result};
use crate::protocol::sql::*;
use crate::protocol::VerifyStatus;

/// One bucket of a table's hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bucket {
    pub(crate) bucket: i32,
    pub(crate) rows: i64,
    /// The sum of the rows' hashes, as numeric text.
    pub(crate) hash: String,
}

/// A pending verify request.
#[derive(Debug, Clone)]
pub(crate) struct VerifyRequest {
    pub(crate) id: i64,
    pub(crate) site: String,
    /// None: every configured table.
    pub(crate) tables: Option<Vec<String>>,
}

/// HO's hashes of one table for one site (`*`: every site).
#[derive(Debug, Clone)]
pub(crate) struct Expected {
    pub(crate) site: String,
    pub(crate) table_name: String,
    pub(crate) buckets: Vec<Bucket>,
}

impl VerifyResult {
    /// Whether the site's table differs from HO's.
    pub fn drifted(&self) -> bool {
        self.status == VerifyStatus::Drift
    }
}

/// What a site found for one table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyResult {
    pub packet_id: i64,
    pub site: String,
    pub table_name: String,
    /// RFC 3339, UTC.
    pub checked_at: String,
    pub status: VerifyStatus,
    pub ho_rows: i64,
    pub site_rows: i64,
    pub detail: String,
    /// The site's rows of the table whose referenced row (through the
    /// site's foreign keys to other synced tables) it does not hold.
    pub orphans: i64,
}

impl Relay {
    /// Asks each of `sites` to verify `tables` (None: all).
    pub(crate) async fn request_verify(
        &self,
        sites: &[String],
        tables: Option<&[String]>,
    ) -> Result<()> {
        for site in sites {
            self.require_site(site).await?;
        }
        let tables: Option<Vec<String>> = tables.map(|t| t.to_vec());
        self.client
            .execute(
                "INSERT INTO relay.verify_requests (site, tables) SELECT s, $2 FROM unnest($1::text[]) s",
                &[&sites, &tables],
            )
            .await
            .ctx(|| "writing relay.verify_requests".into())?;
        Ok(())
    }

    /// Verify requests not served yet, oldest first.
    pub(crate) async fn pending_verifies(&self) -> Result<Vec<VerifyRequest>> {
        let t = "relay.verify_requests";
        let rows = self
            .client
            .query(
                "SELECT id, site, tables FROM relay.verify_requests WHERE served_at IS NULL ORDER BY id",
                &[],
            )
            .await
            .ctx(|| format!("reading {t}"))?;
        rows.iter()
            .map(|r| {
                Ok(VerifyRequest {
                    id: get(r, "id", t)?,
                    site: get(r, "site", t)?,
                    tables: get(r, "tables", t)?,
                })
            })
            .collect()
    }
}

impl super::RelayTx<'_> {
    /// Stores HO's hashes of verify packet `packet` and marks `requests`
    /// served by it (inside the packet's transaction).
    pub(crate) async fn store_expected(
        &self,
        packet: i64,
        expected: &[Expected],
        requests: &[i64],
    ) -> Result<()> {
        for e in expected {
            let buckets: Vec<i32> = e.buckets.iter().map(|b| b.bucket).collect();
            let rows: Vec<i64> = e.buckets.iter().map(|b| b.rows).collect();
            let hashes: Vec<String> = e.buckets.iter().map(|b| b.hash.clone()).collect();
            self.client
                .execute(
                    "INSERT INTO relay.verify_expected (packet_id, site, table_name, bucket, rows, hash)
                     SELECT $1, $2, $3, b, r, h::numeric
                       FROM unnest($4::int4[], $5::int8[], $6::text[]) AS u(b, r, h)",
                    &[&packet, &e.site, &e.table_name, &buckets, &rows, &hashes],
                )
                .await
                .ctx(|| "writing relay.verify_expected".into())?;
        }
        self.client
            .execute(
                "UPDATE relay.verify_requests SET served_at = now(), packet_id = $2 WHERE id = ANY($1)",
                &[&requests, &packet],
            )
            .await
            .ctx(|| "writing relay.verify_requests".into())?;
        Ok(())
    }
}

impl Relay {
    /// HO's hashes in verify packet `packet` for `site` (and for every site).
    pub(crate) async fn expected(&self, packet: i64, site: &str) -> Result<Vec<Expected>> {
        let t = "relay.verify_expected";
        let rows = self
            .client
            .query(
                &format!("SELECT site, table_name, bucket, rows, hash::text AS hash FROM relay.verify_expected
                  WHERE packet_id = $1 AND site IN ($2, {ALL}) ORDER BY table_name, bucket"),
                &[&packet, &site],
            )
            .await
            .ctx(|| format!("reading {t}"))?;
        let mut out: Vec<Expected> = Vec::new();
        for r in &rows {
            let table_name: String = get(r, "table_name", t)?;
            let bucket = Bucket {
                bucket: get(r, "bucket", t)?,
                rows: get(r, "rows", t)?,
                hash: get(r, "hash", t)?,
            };
            match out.last_mut() {
                Some(e) if e.table_name == table_name => e.buckets.push(bucket),
                _ => out.push(Expected {
                    site: get(r, "site", t)?,
                    table_name,
                    buckets: vec![bucket],
                }),
            }
        }
        Ok(out)
    }

    /// Records what a site found (once per packet, site and table).
    pub(crate) async fn record_verify(&self, r: &VerifyResult) -> Result<()> {
        self.client
            .execute(
                "INSERT INTO relay.verify_results (packet_id, site, table_name, status, ho_rows, site_rows, detail, orphans)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (packet_id, site, table_name) DO NOTHING",
                &[&r.packet_id, &r.site, &r.table_name, &r.status, &r.ho_rows, &r.site_rows, &r.detail, &r.orphans],
            )
            .await
            .ctx(|| "writing relay.verify_results".into())?;
        Ok(())
    }

    /// The latest result per site and table (`sites` empty: every site).
    pub(crate) async fn verify_results(&self, sites: &[String]) -> Result<Vec<VerifyResult>> {
        self.read_results(
            "SELECT DISTINCT ON (site, table_name) packet_id, site, table_name,
                    to_char(checked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS checked_at,
                    status, ho_rows, site_rows, detail, orphans
               FROM relay.verify_results WHERE cardinality($1::text[]) = 0 OR site = ANY($1)
              ORDER BY site, table_name, id DESC",
            &[&sites],
        )
        .await
    }

    /// Drift results HO has not logged yet, marked logged now.
    pub(crate) async fn take_unlogged_drift(&self) -> Result<Vec<VerifyResult>> {
        self.read_results(
            "UPDATE relay.verify_results SET ho_logged = true
              WHERE status = $1 AND NOT ho_logged
             RETURNING packet_id, site, table_name,
                    to_char(checked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS checked_at,
                    status, ho_rows, site_rows, detail, orphans",
            &[&VerifyStatus::Drift],
        )
        .await
    }

    async fn read_results(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<VerifyResult>> {
        let t = "relay.verify_results";
        let rows = self
            .client
            .query(sql, params)
            .await
            .ctx(|| format!("reading {t}"))?;
        rows.iter()
            .map(|r| {
                Ok(VerifyResult {
                    packet_id: get(r, "packet_id", t)?,
                    site: get(r, "site", t)?,
                    table_name: get(r, "table_name", t)?,
                    checked_at: get(r, "checked_at", t)?,
                    status: get(r, "status", t)?,
                    ho_rows: get(r, "ho_rows", t)?,
                    site_rows: get(r, "site_rows", t)?,
                    detail: get(r, "detail", t)?,
                    orphans: get(r, "orphans", t)?,
                })
            })
            .collect()
    }
}

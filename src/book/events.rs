//! The event log (`relaysync.event_log`, at HO and at each site): what
//! operators read as "User update succeeded (Device)", "Fail to save to the
//! server DB" and the like, one row per row merged, rejected, wiped or
//! found drifting.

use std::time::Duration;

use tokio_postgres::Client;

use crate::error::{DbContext, Error, Result};

/// HO merged a row a site sent.
pub const MERGED: &str = "User update succeeded (Device)";
/// HO could not store a row a site sent (the row is in `relaysync.rejects`).
pub const REJECTED: &str = "Fail to save to the server DB";
/// A site applied a row HO had merged from a site.
pub const MERGED_HERE: &str = "User update succeeded (HO)";
/// A site wiped its synced data (`[pos] wipe_after`).
pub const WIPED: &str = "Synced data wiped (no successful sync)";
/// Verify found a site's table different from HO's.
pub const DRIFT: &str = "Verify found drift";

/// The head of a set-based insert into the event log: a `SELECT` of
/// (site, table, key, event, detail) follows.
pub(crate) const INSERT: &str =
    "INSERT INTO relaysync.event_log (site, table_name, key, event, detail)";

/// The head of a set-based insert into HO's rejects: a `SELECT` of (site,
/// packet, table, key, row as jsonb, error) follows.
pub(crate) const INSERT_REJECTS: &str =
    "INSERT INTO relaysync.rejects (site, packet_id, table_name, key, row_data, error)";

/// One entry of an event log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Event {
    /// `YYYY-MM-DD HH:MM:SS`, in the database's time zone.
    pub at: String,
    /// The site the row came from or went to ('' when none).
    pub site: String,
    pub table: String,
    pub key: String,
    pub event: String,
    pub detail: String,
}

/// Logs one event about a whole table (no key).
pub(crate) async fn log(
    client: &Client,
    site: &str,
    table: &str,
    event: &str,
    detail: &str,
) -> std::result::Result<(), tokio_postgres::Error> {
    client
        .execute(
            &format!("{INSERT} VALUES ($1, $2, '', $3, $4)"),
            &[&site, &table, &event, &detail],
        )
        .await
        .map(|_| ())
}

/// The events logged in the last `since`, oldest first; `role` (`ho` or
/// `pos`) names the side in an error.
pub(crate) async fn since(client: &Client, since: Duration, role: &str) -> Result<Vec<Event>> {
    let rows = client
        .query(
            "SELECT to_char(at, 'YYYY-MM-DD HH24:MI:SS') AS at, coalesce(site, '') AS site,
                    table_name, key, event, coalesce(detail, '') AS detail
               FROM relaysync.event_log WHERE at >= now() - make_interval(secs => $1)
              ORDER BY id",
            &[&since.as_secs_f64()],
        )
        .await
        .map_err(|source| Error::Db {
            context: format!(
                "reading relaysync.event_log at {role}; has `relaysync setup {role}` run?"
            ),
            source,
        })?;
    let ctx = || "reading relaysync.event_log".to_string();
    rows.iter()
        .map(|r| {
            Ok(Event {
                at: r.try_get("at").ctx(ctx)?,
                site: r.try_get("site").ctx(ctx)?,
                table: r.try_get("table_name").ctx(ctx)?,
                key: r.try_get("key").ctx(ctx)?,
                event: r.try_get("event").ctx(ctx)?,
                detail: r.try_get("detail").ctx(ctx)?,
            })
        })
        .collect()
}

//! `[pos] wipe_after`: a site that has not synced successfully for that
//! long clears its copies of the down tables (a device unused for days
//! must not keep people's data), and asks for a full sync on its next
//! contact with the relay.
//!
//! Only the site's database is needed, so a site cut off from the relay
//! wipes too. Data the site has not uploaded is never deleted: a table that
//! is also in `[[upstream]]` is kept whole.

use std::time::Duration;

use tokio_postgres::Client;

use crate::config::Config;
use crate::error::{DbContext, Result};
use crate::postgres::{connect, qualified};
use crate::protocol::SyncReason;
use crate::relay::Relay;

/// The event a site logs when it wipes.
pub const EVENT_WIPED: &str = "Synced data wiped (no successful sync)";

/// What a wipe cleared.
#[derive(Debug, Clone)]
pub struct Wiped {
    pub tables: Vec<String>,
    pub rows: u64,
}

/// Clears the down tables if the last successful sync is older than
/// `[pos] wipe_after`; None when nothing was due.
pub async fn wipe_if_due(cfg: &Config) -> Result<Option<Wiped>> {
    let Some(after) = cfg.wipe_after()? else {
        return Ok(None);
    };
    let pos = cfg.pos()?;
    let client = connect("pos", &pos.url).await?;
    if !due(&client, &pos.site, after).await? {
        return Ok(None);
    }
    let tables: Vec<String> = cfg
        .tables
        .iter()
        .filter(|t| !cfg.upstream.iter().any(|u| u.name == t.name))
        .map(|t| t.name.clone())
        .collect();
    let wiped = wipe(&client, &pos.site, &tables, after).await?;
    tracing::warn!(site = %pos.site, tables = ?wiped.tables, rows = wiped.rows, "no successful sync for {after:?}: synced data wiped; the next contact brings a full sync");
    Ok(Some(wiped))
}

/// Whether the last success is older than `after` and no wipe followed it.
async fn due(client: &Client, site: &str, after: Duration) -> Result<bool> {
    let row = client
        .query_opt(
            "SELECT last_success_at < now() - make_interval(secs => $2)
                    AND (wiped_at IS NULL OR wiped_at < last_success_at) AS due
               FROM relaysync.site WHERE site = $1",
            &[&site, &after.as_secs_f64()],
        )
        .await
        .ctx(|| "reading relaysync.site; has `relaysync setup pos` run?".into())?;
    Ok(row
        .and_then(|r| r.get::<_, Option<bool>>("due"))
        .unwrap_or(false))
}

/// Deletes every row of `tables`, logs it and marks the resync to ask for,
/// in one transaction.
async fn wipe(client: &Client, site: &str, tables: &[String], after: Duration) -> Result<Wiped> {
    client
        .batch_execute("BEGIN; SET LOCAL session_replication_role = replica")
        .await
        .ctx(|| "wiping the site's synced data".into())?;
    let result = async {
        let mut total = 0u64;
        let why = format!(
            "no successful sync for {}",
            humantime::format_duration(after)
        );
        for t in tables {
            let n: i64 = client
                .query_one(
                    &format!(
                        "WITH d AS (DELETE FROM {} RETURNING 1) SELECT count(*) AS n FROM d",
                        qualified(t)
                    ),
                    &[],
                )
                .await?
                .get("n");
            client
                .execute(
                    "INSERT INTO relaysync.event_log (site, table_name, key, event, detail)
                     VALUES ($1, $2, '', $3, $4)",
                    &[&site, t, &EVENT_WIPED, &format!("{n} row(s); {why}")],
                )
                .await?;
            total += n as u64;
        }
        client
            .execute(
                "UPDATE relaysync.site SET wiped_at = now(), resync_pending = true WHERE site = $1",
                &[&site],
            )
            .await?;
        client.batch_execute("COMMIT").await?;
        Ok::<_, tokio_postgres::Error>(total)
    }
    .await;
    match result {
        Ok(rows) => Ok(Wiped {
            tables: tables.to_vec(),
            rows,
        }),
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e).ctx(|| "wiping the site's synced data".into())
        }
    }
}

/// After a wipe, asks the relay for this site's full sync (once).
pub(super) async fn request_resync(client: &Client, relay: &Relay, site: &str) -> Result<()> {
    let pending: bool = client
        .query_opt(
            "SELECT resync_pending FROM relaysync.site WHERE site = $1",
            &[&site],
        )
        .await
        .ctx(|| "reading relaysync.site".into())?
        .is_some_and(|r| r.get("resync_pending"));
    if pending {
        relay
            .request_sync(&[site.to_string()], None, SyncReason::Resync)
            .await?;
        client
            .execute(
                "UPDATE relaysync.site SET resync_pending = false WHERE site = $1",
                &[&site],
            )
            .await
            .ctx(|| "writing relaysync.site".into())?;
    }
    Ok(())
}

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

use crate::book;
use crate::config::Config;
use crate::error::{DbContext, Result};
use crate::postgres::{connect, qualified, Tx};
use crate::protocol::SyncReason;
use crate::relay::Relay;

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
    if !book::site::wipe_due(&client, &pos.site, after).await? {
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

/// Deletes every row of `tables`, logs it and marks the resync to ask for,
/// in one transaction.
async fn wipe(client: &Client, site: &str, tables: &[String], after: Duration) -> Result<Wiped> {
    let ctx = || "wiping the site's synced data".to_string();
    let tx = Tx::begin(
        client,
        "BEGIN; SET LOCAL session_replication_role = replica",
    )
    .await
    .ctx(ctx)?;
    let rows = async {
        let mut total = 0u64;
        let why = format!(
            "no successful sync for {}",
            humantime::format_duration(after)
        );
        for t in tables {
            let n: i64 = tx
                .query_one(
                    &format!(
                        "WITH d AS (DELETE FROM {} RETURNING 1) SELECT count(*) AS n FROM d",
                        qualified(t)
                    ),
                    &[],
                )
                .await?
                .get("n");
            let detail = format!("{n} row(s); {why}");
            book::events::log(&tx, site, t, book::events::WIPED, &detail).await?;
            total += n as u64;
        }
        book::site::record_wipe(&tx, site).await?;
        Ok::<_, tokio_postgres::Error>(total)
    }
    .await
    .ctx(ctx)?;
    tx.commit().await.ctx(ctx)?;
    Ok(Wiped {
        tables: tables.to_vec(),
        rows,
    })
}

/// After a wipe, asks the relay for this site's full sync (once).
pub(super) async fn request_resync(client: &Client, relay: &Relay, site: &str) -> Result<()> {
    if book::site::resync_pending(client, site).await? {
        relay
            .request_sync(&[site.to_string()], None, SyncReason::Resync)
            .await?;
        book::site::resync_asked(client, site).await?;
    }
    Ok(())
}

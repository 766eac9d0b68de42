//! Retention, run by HO's worker: packets every target processed are
//! purged after `[retention] keep_acked` (from the relay and from HO's
//! record), and sites silent for `max_offline` are expired.

use tokio_postgres::Client;

use crate::book;
use crate::config::Config;
use crate::error::Result;
use crate::relay::Relay;

/// What one round of retention did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Retained {
    /// Packets purged from the relay.
    pub purged: u64,
    /// Sites expired in this round.
    pub expired: Vec<String>,
}

/// Purges packets every target processed more than `[retention]
/// keep_acked` ago (from the relay and from HO's record) and expires the
/// sites silent for `max_offline`.
pub(crate) async fn retain(cfg: &Config, sql: &Client, relay: &Relay) -> Result<Retained> {
    let keep = cfg.keep_acked()?;
    let purged = relay.purge_processed(keep).await?;
    book::ho::purge_sent(sql, keep).await?;
    let expired = match cfg.max_offline()? {
        Some(max) => relay.expire_silent(max).await?,
        None => Vec::new(),
    };
    for site in &expired {
        tracing::warn!(site = %site, "site expired: it acked nothing for [retention] max_offline; its backlog is released and it gets a full sync when it comes back");
    }
    Ok(Retained { purged, expired })
}

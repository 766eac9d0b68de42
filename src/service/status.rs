//! Each site's status, one site's tables, and the latest verify results.

use std::time::Duration;

use crate::config::Config;
use crate::error::Result;
use crate::relay::{Relay, SiteStatus, TableStatus, VerifyResult};

/// Every registered site's status, and the tables whose latest verify
/// found drift.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub sites: Vec<SiteStatus>,
    pub drift: Vec<VerifyResult>,
}

/// The status of every registered site; one whose acks stopped for longer
/// than `stall_after` while packets wait is `Stalled` (see
/// [`stall_after`]).
pub async fn status(relay: &Relay, stall_after: Duration) -> Result<Status> {
    let mut sites = relay.site_status().await?;
    for s in &mut sites {
        s.stalled_after(stall_after);
    }
    let drift = relay
        .verify_results(&[])
        .await?
        .into_iter()
        .filter(VerifyResult::drifted)
        .collect();
    Ok(Status { sites, drift })
}

/// How long a site may leave packets waiting without an ack before it is
/// `Stalled`: two sync intervals and two network deadlines, at least two
/// minutes (a streaming site acks within seconds).
pub fn stall_after(cfg: &Config) -> Result<Duration> {
    let each = cfg.interval()? + cfg.deadline()?;
    Ok((each * 2).max(Duration::from_secs(120)))
}

/// One site's tables ("categories").
#[derive(Debug, Clone, serde::Serialize)]
pub struct SiteDetail {
    pub site: String,
    pub tables: Vec<TableStatus>,
}

/// Each published table's status at `site` (an error naming the fix when
/// it is not registered).
pub async fn site_detail(relay: &Relay, site: &str) -> Result<SiteDetail> {
    relay.require_site(site).await?;
    Ok(SiteDetail {
        site: site.to_string(),
        tables: relay.table_status(site).await?,
    })
}

/// The latest verify result per site and table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyResults {
    pub results: Vec<VerifyResult>,
}

/// The latest results of `sites` (empty: every site), for `tables` only
/// (empty: every table).
pub async fn verify_results(
    relay: &Relay,
    sites: &[String],
    tables: &[String],
) -> Result<VerifyResults> {
    let mut results = relay.verify_results(sites).await?;
    results.retain(|r| tables.is_empty() || tables.contains(&r.table_name));
    Ok(VerifyResults { results })
}

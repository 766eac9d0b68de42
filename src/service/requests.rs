//! What operators ask for: a reload of tables at sites (Sync Selective,
//! Sync All, a site's resync), a verify, the repair of what verify found.

use std::collections::BTreeMap;

use super::status::verify_results;
use crate::error::{Error, Result};
use crate::protocol::SyncReason;
use crate::relay::Relay;

/// Which sites a request is for.
#[derive(Debug, Clone)]
pub enum Sites {
    /// Every registered site.
    All,
    /// These sites.
    These(Vec<String>),
}

/// A request stored in the relay, served on HO's next sync.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Requested {
    pub sites: Vec<String>,
    /// Empty: every configured table.
    pub tables: Vec<String>,
}

/// The registered sites' codes.
pub async fn sites(relay: &Relay) -> Result<Vec<String>> {
    relay.sites().await
}

/// The sites `sites` names; an error naming the fix when there is none.
async fn chosen(relay: &Relay, sites: Sites) -> Result<Vec<String>> {
    let sites = match sites {
        Sites::All => relay.sites().await?,
        Sites::These(s) => s,
    };
    if sites.is_empty() {
        return Err(Error::Setup(
            "no site is registered; run `relaysync site add CODE` first".into(),
        ));
    }
    Ok(sites)
}

/// Sync Selective or Sync All: a full sync of `tables` (empty: all) at
/// `sites`.
pub async fn push(relay: &Relay, sites: Sites, tables: Vec<String>) -> Result<Requested> {
    let sites = chosen(relay, sites).await?;
    let asked = (!tables.is_empty()).then_some(&tables[..]);
    relay.request_sync(&sites, asked, SyncReason::Push).await?;
    Ok(Requested { sites, tables })
}

/// A clean reload of every table at `site`.
pub async fn resync(relay: &Relay, site: &str) -> Result<Requested> {
    let sites = vec![site.to_string()];
    relay.request_sync(&sites, None, SyncReason::Resync).await?;
    Ok(Requested {
        sites,
        tables: Vec::new(),
    })
}

/// Asks `sites` to verify `tables` (empty: all).
pub async fn verify(relay: &Relay, sites: Sites, tables: Vec<String>) -> Result<Requested> {
    let sites = chosen(relay, sites).await?;
    let asked = (!tables.is_empty()).then_some(&tables[..]);
    relay.request_verify(&sites, asked).await?;
    Ok(Requested { sites, tables })
}

/// The full syncs a repair asked for: site → drifting tables.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Repairs {
    pub repairs: BTreeMap<String, Vec<String>>,
}

/// Asks for a full sync of exactly the tables the latest results of
/// `sites` (empty: all) found drifting, at the drifting sites, among
/// `tables` (empty: all).
pub async fn repair(relay: &Relay, sites: &[String], tables: &[String]) -> Result<Repairs> {
    let mut repairs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in verify_results(relay, sites, tables).await?.results {
        if r.drifted() {
            repairs.entry(r.site).or_default().push(r.table_name);
        }
    }
    for (site, tables) in &repairs {
        relay
            .request_sync(std::slice::from_ref(site), Some(tables), SyncReason::Push)
            .await?;
    }
    Ok(Repairs { repairs })
}

//! `push`: Sync Selective and Sync All.

use relaysync::config::Config;
use relaysync::error::{Error, Result};
use relaysync::protocol::SyncReason;
use relaysync::relay::Relay;

/// Asks for a reload of `tables` (empty: all) at `sites` (or every site).
pub async fn run(cfg: &Config, sites: Vec<String>, all: bool, tables: Vec<String>) -> Result<()> {
    let tables = configured(cfg, tables)?;
    let relay = Relay::connect(&cfg.relay()?.url).await?;
    let sites = if all { relay.sites().await? } else { sites };
    if sites.is_empty() {
        return Err(Error::Setup(
            "no site is registered; run `relaysync site add CODE` first".into(),
        ));
    }
    let tables = (!tables.is_empty()).then_some(tables);
    relay
        .request_sync(&sites, tables.as_deref(), SyncReason::Push)
        .await?;
    println!(
        "full sync of {} requested for {}; served on HO's next sync",
        tables
            .as_ref()
            .map_or("every configured table".to_string(), |t| t.join(", ")),
        sites.join(", ")
    );
    Ok(())
}

/// `tables` as configured (either spelling: public."Store Items" or
/// public.Store Items); an error naming the configured ones for another.
pub(super) fn configured(cfg: &Config, tables: Vec<String>) -> Result<Vec<String>> {
    let tables: Vec<String> = tables
        .into_iter()
        .map(|t| relaysync::config::unquote_table(&t).unwrap_or(t))
        .collect();
    for t in &tables {
        if !cfg.tables.iter().any(|c| &c.name == t) {
            let known = cfg
                .tables
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Error::Config(format!(
                "table {t} is not in [[tables]] (configured: {known}); name only configured tables"
            )));
        }
    }
    Ok(tables)
}

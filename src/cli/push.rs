//! `push`: Sync Selective and Sync All.

use relaysync::config::Config;
use relaysync::error::{Error, Result};
use relaysync::relay::Relay;
use relaysync::service::{self, Sites};

/// Asks for a reload of `tables` (empty: all) at `sites` (or every site).
pub async fn run(
    cfg: &Config,
    sites: Vec<String>,
    all: bool,
    tables: Vec<String>,
    as_json: bool,
) -> Result<()> {
    let tables = configured(cfg, tables)?;
    let relay = Relay::connect(&cfg.relay()?.url).await?;
    let sites = if all { Sites::All } else { Sites::These(sites) };
    let view = service::push(&relay, sites, tables).await?;
    if as_json {
        super::json::print(&serde_json::json!({ "requested": view }));
        return Ok(());
    }
    println!(
        "full sync of {} requested for {}; served on HO's next sync",
        if view.tables.is_empty() {
            "every configured table".to_string()
        } else {
            view.tables.join(", ")
        },
        view.sites.join(", ")
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

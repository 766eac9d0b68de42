//! `status`: every site, or one site's tables.

use relaysync::config::Config;
use relaysync::error::Result;
use relaysync::relay::Relay;
use relaysync::service;

use super::{json, summary};

/// Prints the status of every site, or of `site`'s tables.
pub async fn run(cfg: &Config, site: Option<String>, as_json: bool) -> Result<()> {
    let relay = Relay::connect(&cfg.relay()?.url).await?;
    let Some(site) = site else {
        let view = service::status(&relay, service::stall_after(cfg)?).await?;
        if as_json {
            json::print(&view);
            return Ok(());
        }
        summary::status(&view.sites);
        for d in &view.drift {
            println!(
                "{}: drift in {} found by verify at {} ({}); repair: relaysync verify --repair --site {}",
                d.site, d.table_name, d.checked_at, d.detail, d.site
            );
        }
        return Ok(());
    };
    let view = service::site_detail(&relay, &site).await?;
    if as_json {
        json::print(&view);
        return Ok(());
    }
    println!(
        "{:<28} {:<12} {:<20} {:>9} {:>10} {:>8}  error",
        "table", "status", "last full sync", "rows", "last delta", "pending"
    );
    for t in &view.tables {
        println!(
            "{:<28} {:<12} {:<20} {:>9} {:>10} {:>8}  {}",
            t.table,
            t.state,
            t.last_full_sync
                .map_or("never".into(), service::format_time),
            t.full_sync_rows.map_or("-".into(), |v| v.to_string()),
            t.last_delta.map_or("-".into(), |v| v.to_string()),
            t.pending,
            t.error.as_deref().map_or(String::new(), |e| format!(
                "{e} (retry: relaysync pos sync --once)"
            )),
        );
    }
    Ok(())
}

//! `status`: every site, or one site's tables.

use relaysync::config::Config;
use relaysync::error::Result;
use relaysync::relay::{Relay, TableStatus};
use serde_json::json;

use super::{json as js, summary};

/// Prints the status of every site, or of `site`'s tables.
pub async fn run(cfg: &Config, site: Option<String>, as_json: bool) -> Result<()> {
    let relay = Relay::connect(&cfg.relay()?.url).await?;
    let Some(site) = site else {
        let statuses = relay.site_status().await?;
        let drift: Vec<_> = relay
            .verify_results(&[])
            .await?
            .into_iter()
            .filter(|r| r.status == "drift")
            .collect();
        if as_json {
            let mut v = js::status(&statuses);
            v["drift"] = json!(drift);
            js::print(&v);
        } else {
            summary::status(&statuses);
            for d in &drift {
                println!(
                    "{}: drift in {} found by verify at {} ({}); repair: relaysync verify --repair --site {}",
                    d.site, d.table_name, d.checked_at, d.detail, d.site
                );
            }
        }
        return Ok(());
    };
    relay.require_site(&site).await?;
    let tables = relay.table_status(&site).await?;
    if as_json {
        js::print(
            &json!({ "site": site, "tables": tables.iter().map(table_json).collect::<Vec<_>>() }),
        );
        return Ok(());
    }
    println!(
        "{:<28} {:<12} {:<20} {:>9} {:>10} {:>8}  error",
        "table", "status", "last full sync", "rows", "last delta", "pending"
    );
    for t in &tables {
        println!(
            "{:<28} {:<12} {:<20} {:>9} {:>10} {:>8}  {}",
            t.table,
            t.state,
            t.last_full_sync
                .map_or("never".into(), |x| humantime::format_rfc3339_seconds(x)
                    .to_string()),
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

fn table_json(t: &TableStatus) -> serde_json::Value {
    json!({
        "table": t.table,
        "status": t.state,
        "last_full_sync": js::time(t.last_full_sync),
        "full_sync_rows": t.full_sync_rows,
        "last_delta": t.last_delta,
        "pending": t.pending,
        "error": t.error,
    })
}

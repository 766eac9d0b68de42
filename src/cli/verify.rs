//! `verify`: ask sites to prove they equal HO; show the results; repair.

use std::collections::BTreeMap;

use serde_json::json;

use relaysync::config::Config;
use relaysync::error::{Error, Result};
use relaysync::protocol::SyncReason;
use relaysync::relay::{Relay, VerifyResult};

/// What `verify` was asked to do.
pub struct Args {
    pub sites: Vec<String>,
    pub all: bool,
    pub tables: Vec<String>,
    pub repair: bool,
    pub show: bool,
}

pub async fn run(cfg: &Config, args: Args, as_json: bool) -> Result<()> {
    let tables = super::push::configured(cfg, args.tables)?;
    let relay = Relay::connect(&cfg.relay()?.url).await?;
    if args.show {
        let results = chosen(&relay, &args.sites, &tables).await?;
        show(&results, as_json);
        return Ok(());
    }
    if args.repair {
        let results = chosen(&relay, &args.sites, &tables).await?;
        return repair(&relay, &results, as_json).await;
    }
    let sites = if args.all || args.sites.is_empty() {
        relay.sites().await?
    } else {
        args.sites
    };
    if sites.is_empty() {
        return Err(Error::Setup(
            "no site is registered; run `relaysync site add CODE` first".into(),
        ));
    }
    let asked = (!tables.is_empty()).then_some(tables);
    relay.request_verify(&sites, asked.as_deref()).await?;
    let tables = asked.unwrap_or_default();
    if as_json {
        println!(
            "{}",
            json!({"requested": {"sites": sites, "tables": tables}})
        );
    } else {
        println!(
            "verify of {} requested for {}; HO sends its hashes on its next sync, each site compares on its next; see `relaysync verify --show`",
            if tables.is_empty() { "every table".to_string() } else { tables.join(", ") },
            sites.join(", ")
        );
    }
    Ok(())
}

/// The latest results of `sites` (empty: all), only `tables` (empty: all).
async fn chosen(relay: &Relay, sites: &[String], tables: &[String]) -> Result<Vec<VerifyResult>> {
    let mut results = relay.verify_results(sites).await?;
    results.retain(|r| tables.is_empty() || tables.contains(&r.table_name));
    Ok(results)
}

fn show(results: &[VerifyResult], as_json: bool) {
    if as_json {
        println!("{}", json!({ "results": results }));
        return;
    }
    if results.is_empty() {
        println!("no verify results yet; run `relaysync verify`, then `ho sync` and `pos sync`");
        return;
    }
    println!(
        "{:<16} {:<28} {:<6} {:>10} {:>10}  {:<20}  detail",
        "site", "table", "status", "ho_rows", "site_rows", "checked_at"
    );
    for r in results {
        println!(
            "{:<16} {:<28} {:<6} {:>10} {:>10}  {:<20}  {}",
            r.site, r.table_name, r.status, r.ho_rows, r.site_rows, r.checked_at, r.detail
        );
    }
}

/// Asks for a full sync of exactly the drifting tables at the drifting sites.
async fn repair(relay: &Relay, results: &[VerifyResult], as_json: bool) -> Result<()> {
    let mut drift: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for r in results.iter().filter(|r| r.status == "drift") {
        drift.entry(&r.site).or_default().push(r.table_name.clone());
    }
    for (site, tables) in &drift {
        relay
            .request_sync(&[site.to_string()], Some(tables), SyncReason::Push)
            .await?;
    }
    if as_json {
        println!("{}", json!({ "repairs": drift }));
    } else if drift.is_empty() {
        println!("no drift in the latest verify results: nothing to repair");
    } else {
        for (site, tables) in &drift {
            println!(
                "full sync of {} requested for {site}; served on HO's next sync",
                tables.join(", ")
            );
        }
    }
    Ok(())
}

//! `verify`: ask sites to prove they equal HO; show the results; repair.

use serde_json::json;

use relaysync::config::Config;
use relaysync::error::Result;
use relaysync::relay::Relay;
use relaysync::service::{self, Sites};

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
        let view = service::verify_results(&relay, &args.sites, &tables).await?;
        show(&view, as_json);
        return Ok(());
    }
    if args.repair {
        let view = service::repair(&relay, &args.sites, &tables).await?;
        repaired(&view, as_json);
        return Ok(());
    }
    let sites = if args.all || args.sites.is_empty() {
        Sites::All
    } else {
        Sites::These(args.sites)
    };
    let view = service::verify(&relay, sites, tables).await?;
    if as_json {
        super::json::print(&json!({ "requested": view }));
    } else {
        println!(
            "verify of {} requested for {}; HO sends its hashes on its next sync, each site compares on its next; see `relaysync verify --show`",
            if view.tables.is_empty() { "every table".to_string() } else { view.tables.join(", ") },
            view.sites.join(", ")
        );
    }
    Ok(())
}

fn show(view: &service::VerifyResults, as_json: bool) {
    if as_json {
        super::json::print(view);
        return;
    }
    if view.results.is_empty() {
        println!("no verify results yet; run `relaysync verify`, then `ho sync` and `pos sync`");
        return;
    }
    println!(
        "{:<16} {:<28} {:<6} {:>10} {:>10} {:>8}  {:<20}  detail",
        "site", "table", "status", "ho_rows", "site_rows", "orphans", "checked_at"
    );
    for r in &view.results {
        println!(
            "{:<16} {:<28} {:<6} {:>10} {:>10} {:>8}  {:<20}  {}",
            r.site,
            r.table_name,
            r.status,
            r.ho_rows,
            r.site_rows,
            r.orphans,
            r.checked_at,
            r.detail
        );
    }
}

fn repaired(view: &service::Repairs, as_json: bool) {
    if as_json {
        super::json::print(view);
    } else if view.repairs.is_empty() {
        println!("no drift in the latest verify results: nothing to repair");
    } else {
        for (site, tables) in &view.repairs {
            println!(
                "full sync of {} requested for {site}; served on HO's next sync",
                tables.join(", ")
            );
        }
    }
}

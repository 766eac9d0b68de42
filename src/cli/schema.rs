//! `schema`: the schema changes at HO that sites hold, shown and applied.

use relaysync::config::Config;
use relaysync::error::Result;
use relaysync::relay::Relay;
use relaysync::service;

use super::{json, SchemaCommand};

pub async fn run(cfg: &Config, command: SchemaCommand, as_json: bool) -> Result<()> {
    match command {
        SchemaCommand::Show { site, pos: false } => {
            let relay = Relay::connect(&cfg.relay()?.url).await?;
            let view = service::held_at_sites(&relay, site.as_deref()).await?;
            if as_json {
                json::print(&view);
                return Ok(());
            }
            if view.held.is_empty() {
                println!("no site holds a schema change");
            }
            for h in &view.held {
                println!("site {} holds packet {}: {}\n", h.site, h.packet, h.error);
            }
        }
        SchemaCommand::Show { pos: true, .. } => {
            let client = relaysync::postgres::connect("pos", &cfg.pos()?.url).await?;
            let view = service::held_here(&client).await?;
            if as_json {
                json::print(&view);
                return Ok(());
            }
            if view.held.is_empty() {
                println!("this site holds no schema change");
            }
            for h in &view.held {
                println!("packet {}: {}\n", h.packet, h.error);
            }
        }
        SchemaCommand::Apply { sites, all } if all || !sites.is_empty() => {
            let relay = Relay::connect(&cfg.relay()?.url).await?;
            let mut approved = Vec::new();
            match all {
                true => approved = service::approve_held(&relay, None).await?.held,
                false => {
                    for site in &sites {
                        approved.extend(service::approve_held(&relay, Some(site)).await?.held);
                    }
                }
            }
            let view = service::HeldAtSites { held: approved };
            if as_json {
                json::print(&view);
                return Ok(());
            }
            if view.held.is_empty() {
                println!("no such site holds a schema change");
            }
            for h in &view.held {
                println!(
                    "approved: site {} makes the change packet {} waits for on its next sync",
                    h.site, h.packet
                );
            }
        }
        SchemaCommand::Apply { .. } => {
            let mut client = relaysync::postgres::connect("pos", &cfg.pos()?.url).await?;
            let view = service::apply_held(&mut client).await?;
            if as_json {
                json::print(&view);
                return Ok(());
            }
            if view.statements.is_empty() {
                println!("this site holds no schema change");
            }
            for sql in &view.statements {
                println!("{sql}");
            }
            if !view.statements.is_empty() {
                println!("done; the site's next sync applies the packets that waited (`relaysync pos sync --once` for one now)");
            }
        }
    }
    Ok(())
}

//! `site add|list`.

use relaysync::config::{check_site_code, Config};
use relaysync::error::Result;
use relaysync::relay::Relay;

use super::SiteCommand;

/// Registers or lists sites.
pub async fn run(cfg: &Config, command: SiteCommand) -> Result<()> {
    let relay = Relay::connect(&cfg.relay()?.url).await?;
    match command {
        SiteCommand::Add { code } => {
            check_site_code(&code)?;
            if relay.add_site(&code).await? {
                println!("site {code} registered; its first sync will be a full sync");
            } else {
                println!("site {code} was registered already");
            }
        }
        SiteCommand::List => {
            for s in relay.sites().await? {
                println!("{s}");
            }
        }
    }
    Ok(())
}

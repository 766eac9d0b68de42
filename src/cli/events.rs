//! `events`: the event log of HO or of this site.

use relaysync::config::Config;
use relaysync::error::Result;
use relaysync::service;

/// Prints the event log since `since` ago.
pub async fn run(cfg: &Config, since: String, pos: bool, as_json: bool) -> Result<()> {
    let since = service::parse_since(&since)?;
    let (role, url) = if pos {
        ("pos", &cfg.pos()?.url)
    } else {
        ("ho", &cfg.ho()?.url)
    };
    let client = relaysync::postgres::connect(role, url).await?;
    let view = service::events(&client, role, since).await?;
    if as_json {
        super::json::print(&view);
        return Ok(());
    }
    for e in &view.events {
        println!(
            "{}  {:<12} {:<20} {:<12} {}  {}",
            e.at, e.site, e.table, e.key, e.event, e.detail
        );
    }
    Ok(())
}

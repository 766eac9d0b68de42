//! `packets`: HO's sent data, or this site's received data.

use relaysync::book::records::Filter;
use relaysync::config::Config;
use relaysync::error::Result;
use relaysync::service;

/// Lists the packets of HO's record (or, with `pos`, this site's).
pub async fn run(
    cfg: &Config,
    site: Option<String>,
    status: Option<String>,
    since: Option<String>,
    pos: bool,
    as_json: bool,
) -> Result<()> {
    let filter = Filter {
        site,
        status: status.as_deref().map(service::parse_status).transpose()?,
        since: since.as_deref().map(service::parse_since).transpose()?,
    };
    let view = if pos {
        let client = relaysync::postgres::connect("pos", &cfg.pos()?.url).await?;
        service::received(&client, &filter).await?
    } else {
        let client = relaysync::postgres::connect("ho", &cfg.ho()?.url).await?;
        let relay = relaysync::relay::Relay::connect(&cfg.relay()?.url).await?;
        service::sent(&client, &relay, &filter).await?
    };
    if as_json {
        super::json::print(&view);
        return Ok(());
    }
    println!(
        "{:>8} {:>8} {:<9} {:>9} {:<20} {:<10} sites / error",
        "packet", "group", "kind", "rows", "at", "status"
    );
    for p in &view.packets {
        println!(
            "{:>8} {:>8} {:<9} {:>9} {:<20} {:<10} {}",
            p.packet,
            p.group,
            p.kind,
            p.rows,
            service::format_time(p.at),
            p.status,
            p.error.clone().unwrap_or_else(|| p.targets.join(","))
        );
    }
    Ok(())
}

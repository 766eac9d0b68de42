//! `packets`: HO's sent data, or this site's received data.

use relaysync::config::Config;
use relaysync::error::{Error, Result};
use relaysync::protocol::PacketStatus;
use relaysync::records::{self, Filter, PacketRecord};
use serde_json::json;

/// Lists the packets of HO's record (or, with `pos`, this site's).
pub async fn run(
    cfg: &Config,
    site: Option<String>,
    status: Option<String>,
    since: Option<String>,
    pos: bool,
    as_json: bool,
) -> Result<()> {
    let status = status
        .map(|s| {
            s.to_uppercase().parse::<PacketStatus>().map_err(|_| {
                Error::Config(format!("--status {s}: write UPLOADED, PROCESSED or FAILED"))
            })
        })
        .transpose()?;
    let since = since
        .map(|s| {
            humantime::parse_duration(&s)
                .map_err(|e| Error::Config(format!("--since {s}: {e}; write e.g. 1h, 1d or 7d")))
        })
        .transpose()?;
    let filter = Filter {
        site,
        status,
        since,
    };
    let list = if pos {
        let client = relaysync::postgres::connect("pos", &cfg.pos()?.url).await?;
        records::received(&client, &filter).await?
    } else {
        let client = relaysync::postgres::connect("ho", &cfg.ho()?.url).await?;
        records::sent(&client, &filter).await?
    };
    if as_json {
        super::json::print(&json!({ "packets": list.iter().map(record_json).collect::<Vec<_>>() }));
        return Ok(());
    }
    println!(
        "{:>8} {:>8} {:<9} {:>9} {:<20} {:<10} sites / error",
        "packet", "group", "kind", "rows", "at", "status"
    );
    for p in &list {
        println!(
            "{:>8} {:>8} {:<9} {:>9} {:<20} {:<10} {}",
            p.packet,
            p.group,
            p.kind,
            p.rows,
            humantime::format_rfc3339_seconds(p.at).to_string(),
            p.status,
            p.error.clone().unwrap_or_else(|| p.targets.join(","))
        );
    }
    Ok(())
}

fn record_json(p: &PacketRecord) -> serde_json::Value {
    json!({
        "packet": p.packet,
        "group": p.group,
        "kind": p.kind.as_str(),
        "targets": p.targets,
        "rows": p.rows,
        "at": super::json::time(Some(p.at)),
        "status": p.status.as_str(),
        "error": p.error,
    })
}

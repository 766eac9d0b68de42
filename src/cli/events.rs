//! `events`: the event log of HO or of this site.

use relaysync::config::Config;
use relaysync::error::{Error, Result};

/// Prints the event log since `since` ago.
pub async fn run(cfg: &Config, since: String, pos: bool, as_json: bool) -> Result<()> {
    let since = humantime::parse_duration(&since)
        .map_err(|e| Error::Config(format!("--since {since}: {e}; write e.g. 1h, 1d or 7d")))?;
    let (role, url) = if pos {
        ("pos", cfg.pos()?.url.clone())
    } else {
        ("ho", cfg.ho()?.url.clone())
    };
    let client = relaysync::postgres::connect(role, &url).await?;
    let rows = client
        .query(
            "SELECT to_char(at, 'YYYY-MM-DD HH24:MI:SS'), coalesce(site, ''), table_name, key, event,
                    coalesce(detail, '')
               FROM relaysync.event_log WHERE at >= now() - make_interval(secs => $1)
              ORDER BY id",
            &[&since.as_secs_f64()],
        )
        .await
        .map_err(|source| Error::Db {
            context: format!("reading relaysync.event_log at {role}; has `relaysync setup {role}` run?"),
            source,
        })?;
    if as_json {
        let events: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                let cols: Vec<&str> = (0..6).map(|i| r.get(i)).collect();
                serde_json::json!({
                    "at": cols[0], "site": cols[1], "table": cols[2], "key": cols[3],
                    "event": cols[4], "detail": cols[5],
                })
            })
            .collect();
        super::json::print(&serde_json::json!({ "events": events }));
        return Ok(());
    }
    for r in rows {
        let cols: Vec<&str> = (0..6).map(|i| r.get(i)).collect();
        println!(
            "{}  {:<12} {:<20} {:<12} {}  {}",
            cols[0], cols[1], cols[2], cols[3], cols[4], cols[5]
        );
    }
    Ok(())
}

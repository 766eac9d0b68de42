//! The doctor's HO checks: HO as a capture source.

use std::collections::{BTreeSet, HashMap};
use std::time::SystemTime;

use tokio_postgres::Client;

use super::{check_tls, clock_and_tls, skew, Report};
use crate::config::Config;
use crate::error::{chain, DbContext, Result};

/// A slot further behind than this is lagging.
const LAG_WARN_BYTES: i64 = 1 << 30;
/// Clocks further apart than this make ages and lags wrong.
const SKEW_WARN_SECONDS: f64 = 5.0;

/// Runs the HO checks; `relay_clock` is the relay's, when it was reached.
pub(super) async fn check(cfg: &Config, relay_clock: Option<SystemTime>, report: &mut Report) {
    let Ok(ho) = cfg.ho() else { return };
    let client = match crate::postgres::connect("ho", &ho.url).await {
        Ok(c) => c,
        Err(e) => return report.error("connect", chain(&e)),
    };
    report.ran("wal_level");
    if let Err(e) = crate::checks::require_logical(&client, "HO").await {
        report.error("wal_level", e.to_string());
    }
    if let Err(e) = check_slot(&client, &ho.slot, report).await {
        report.error("slot", chain(&e));
    }
    if let Err(e) = check_publication(&client, cfg, report).await {
        report.error("publication", chain(&e));
    }
    report.ran("keys");
    for t in &cfg.tables {
        let fix = "create it or fix [[tables]] name";
        if let Err(e) = crate::checks::identity(&client, &t.name, "table", "HO", fix).await {
            report.error("keys", e.to_string());
        }
    }
    report.ran("routing");
    match crate::route::check(&client, &cfg.routes()).await {
        Ok((_, orphans)) => orphans.into_iter().for_each(|o| report.warn("routing", o)),
        Err(e) => report.error("routing", chain(&e)),
    }
    if let Err(e) = check_drift(&client, cfg, report).await {
        report.error("column_drift", chain(&e));
    }
    if let Ok((now, ssl)) = clock_and_tls(&client).await {
        check_tls(report, "ho", &ho.url, ssl);
        report.ran("clock_skew");
        if let Some(relay) = relay_clock {
            let s = skew(now, relay);
            if s > SKEW_WARN_SECONDS {
                report.warn("clock_skew", format!("HO's clock and the relay's are {s:.0} s apart; run NTP (chrony or systemd-timesyncd) on both hosts"));
            }
        }
    }
}

/// The slot: present, not invalidated, not lagging, its WAL bounded.
async fn check_slot(client: &Client, slot: &str, report: &mut Report) -> Result<()> {
    report.ran("slot");
    report.ran("retained_wal");
    let row = client
        .query_one(
            "SELECT s.slot_name IS NOT NULL AS present, coalesce(s.active, false) AS active,
                    s.wal_status,
                    (pg_current_wal_lsn() - s.confirmed_flush_lsn)::int8 AS lag,
                    (pg_current_wal_lsn() - s.restart_lsn)::int8 AS retained,
                    current_setting('max_slot_wal_keep_size') AS keep
               FROM (SELECT 1) one
               LEFT JOIN pg_replication_slots s ON s.slot_name = $1 AND s.database = current_database()",
            &[&slot],
        )
        .await
        .ctx(|| "reading pg_replication_slots".into())?;
    let keep: String = row.get("keep");
    if keep == "-1" {
        report.warn("retained_wal", "max_slot_wal_keep_size is unset: an HO worker that stops for long can fill HO's disk with WAL; set it (e.g. max_slot_wal_keep_size = '50GB') in postgresql.conf and reload");
    }
    if !row.get::<_, bool>("present") {
        report.error(
            "slot",
            format!("replication slot {slot} does not exist at HO; run `relaysync setup ho`"),
        );
        return Ok(());
    }
    let wal_status: Option<String> = row.get("wal_status");
    if wal_status.as_deref() == Some("lost") {
        report.error("slot", format!("replication slot {slot} is invalidated (its WAL was removed, max_slot_wal_keep_size); drop it (SELECT pg_drop_replication_slot('{slot}')), run `relaysync setup ho`, then `relaysync push --all` to reload every site"));
        return Ok(());
    }
    let lag: Option<i64> = row.get("lag");
    if let Some(lag) = lag.filter(|l| *l > LAG_WARN_BYTES) {
        let active: bool = row.get("active");
        report.warn(
            "slot",
            format!(
                "replication slot {slot} is {} MB behind HO's WAL{}; run `relaysync ho sync --once` or keep `relaysync ho run` running",
                lag >> 20,
                if active { "" } else { " and no worker reads it" }
            ),
        );
    }
    let retained: Option<i64> = row.get("retained");
    if let (Some(retained), Some(limit)) = (retained, parse_size(&keep)) {
        if retained as f64 > 0.8 * limit as f64 {
            report.error("retained_wal", format!("slot {slot} holds {} MB of WAL, over 80% of max_slot_wal_keep_size ({keep}): it will be invalidated soon; run the HO worker now", retained >> 20));
        }
    }
    Ok(())
}

/// `max_slot_wal_keep_size` in bytes (PostgreSQL shows it with a unit).
fn parse_size(s: &str) -> Option<i64> {
    let digits: String = s.chars().take_while(|c| c.is_ascii_digit()).collect();
    let n: i64 = digits.parse().ok()?;
    let unit = s[digits.len()..].trim();
    let mult = match unit {
        "" | "MB" => 1 << 20,
        "kB" => 1 << 10,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        _ => return None,
    };
    Some(n * mult)
}

/// The publication holds exactly the configured tables.
async fn check_publication(client: &Client, cfg: &Config, report: &mut Report) -> Result<()> {
    report.ran("publication");
    let publication = &cfg.ho()?.publication;
    let published: BTreeSet<String> = client
        .query(
            "SELECT schemaname || '.' || tablename AS name FROM pg_publication_tables WHERE pubname = $1",
            &[publication],
        )
        .await
        .ctx(|| "reading pg_publication_tables".into())?
        .iter()
        .map(|r| r.get("name"))
        .collect();
    let configured: BTreeSet<String> = cfg.tables.iter().map(|t| t.name.clone()).collect();
    let missing: Vec<&String> = configured.difference(&published).collect();
    let extra: Vec<&String> = published.difference(&configured).collect();
    if !missing.is_empty() || !extra.is_empty() {
        report.error(
            "publication",
            format!("publication {publication} does not cover exactly [[tables]] (missing: {missing:?}, extra: {extra:?}); run `relaysync setup ho`"),
        );
    }
    Ok(())
}

/// HO's tables still have the columns `setup ho` published to the sites.
async fn check_drift(client: &Client, cfg: &Config, report: &mut Report) -> Result<()> {
    report.ran("column_drift");
    let relay = crate::relay::Relay::connect(&cfg.relay()?.url).await?;
    let published: HashMap<String, Vec<(String, String)>> = relay
        .published_tables()
        .await?
        .into_iter()
        .map(|t| (t.name, t.columns))
        .collect();
    for t in &cfg.tables {
        let Some(columns) = published.get(&t.name) else {
            report.error(
                "column_drift",
                format!(
                    "table {} is not published to the relay; run `relaysync setup ho`",
                    t.name
                ),
            );
            continue;
        };
        let Some(oid) = crate::capture::catalog::table_oid(client, &t.name).await? else {
            continue;
        };
        let now = crate::capture::catalog::column_types(client, oid).await?;
        if &now != columns {
            report.error(
                "column_drift",
                format!("table {} changed at HO since `relaysync setup ho` published it; change the sites' tables the same way, then run `relaysync setup ho` and `relaysync setup pos` at each site", t.name),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::parse_size("50GB"), Some(50 << 30));
        assert_eq!(super::parse_size("1024MB"), Some(1 << 30));
        assert_eq!(super::parse_size("-1"), None);
    }
}

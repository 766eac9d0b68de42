//! The doctor's relay and site checks.

use std::time::{Duration, SystemTime};

use super::{check_tls, clock_and_tls, Report};
use crate::book::{self, Side};
use crate::config::Config;
use crate::error::chain;
use crate::relay::migrate;
use crate::relay::Relay;

/// A site that has acked nothing for this long while packets wait is silent.
const SILENT_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Checks the relay: reachable, schema current, sites healthy, backlog,
/// TLS. Returns the relay's clock when it was reached.
pub(super) async fn check(cfg: &Config, report: &mut Report) -> Option<SystemTime> {
    let url = match cfg.relay() {
        Ok(r) => r.url.clone(),
        Err(e) => {
            report.error("config", e.to_string());
            return None;
        }
    };
    report.ran("relay_schema");
    let client = match crate::postgres::connect("relay", &url).await {
        Ok(c) => c,
        Err(e) => {
            report.error("connect", chain(&e));
            return None;
        }
    };
    match migrate::is_set_up(&client).await {
        Ok(false) => {
            report.error(
                "relay_schema",
                "the relay database has no relay schema; run `relaysync setup relay`",
            );
            return None;
        }
        Err(e) => report.error("relay_schema", chain(&e)),
        Ok(true) => match migrate::missing(&client).await {
            Ok(m) if !m.is_empty() => report.error(
                "relay_schema",
                format!("the relay schema lacks migration(s) {m:?} of this version; run `relaysync setup relay`"),
            ),
            Ok(_) => {}
            Err(e) => report.error("relay_schema", chain(&e)),
        },
    }
    drop(client);
    let relay = match Relay::connect(&url).await {
        Ok(r) => r,
        Err(e) => {
            report.error("connect", chain(&e));
            return None;
        }
    };
    let stall_after = crate::service::stall_after(cfg).unwrap_or(SILENT_AFTER);
    check_sites(&relay, stall_after, report).await;
    match relay.health().await {
        Ok(h) => {
            check_tls(report, "relay", &url, h.ssl);
            report.ran("purge_backlog");
            if h.processed_old > 0 {
                report.warn(
                    "purge_backlog",
                    format!("the relay keeps {} packet(s) every site processed more than a day ago; delete them (DELETE FROM relay.packets WHERE status = {} AND created_at < now() - interval '1 day')", h.processed_old, crate::protocol::sql::PROCESSED),
                );
            }
            Some(h.now)
        }
        Err(e) => {
            report.error("connect", chain(&e));
            None
        }
    }
}

/// Failed sites, and sites that have been silent while packets wait.
async fn check_sites(relay: &Relay, stall_after: Duration, report: &mut Report) {
    report.ran("sites");
    let statuses = match relay.site_status().await {
        Ok(s) => s,
        Err(e) => return report.error("sites", chain(&e)),
    };
    for s in statuses {
        if let Some(error) = &s.error {
            let finding = match s.state {
                crate::relay::HELD => format!(
                    "site {} holds a schema change at {error}\n(`relaysync schema show --site {}`)",
                    s.site, s.site
                ),
                _ => format!("site {} is Failed at {error}; fix the cause at the site, then run `relaysync pos sync --once` there", s.site),
            };
            report.error("sites", finding);
            continue;
        }
        let mut stalled = s.clone();
        stalled.stalled_after(stall_after);
        let silent = s.pending > 0
            && s.lag_seconds
                .is_some_and(|lag| lag > SILENT_AFTER.as_secs_f64());
        if stalled.state == "Stalled" && !silent {
            report.warn(
                "sites",
                format!(
                    "site {} has acked nothing for over {} s while {} packet(s) wait; check that its worker runs and reaches the relay (its log and /health)",
                    s.site,
                    stall_after.as_secs(),
                    s.pending
                ),
            );
        }
        if silent {
            report.warn(
                "sites",
                format!(
                    "site {} has {} packet(s) waiting, the oldest for {:.0} h; check that its worker runs (`relaysync pos run`, or cron)",
                    s.site,
                    s.pending,
                    s.lag_seconds.unwrap_or(0.0) / 3600.0
                ),
            );
        }
    }
}

/// Checks this site's database: reachable, set up, its tables as HO
/// published them.
pub(super) async fn check_site(cfg: &Config, report: &mut Report) {
    let Ok(pos) = cfg.pos() else { return };
    report.ran("site_schema");
    let client = match crate::postgres::connect("pos", &pos.url).await {
        Ok(c) => c,
        Err(e) => return report.error("connect", chain(&e)),
    };
    if let Ok((_, ssl)) = clock_and_tls(&client).await {
        check_tls(report, "pos", &pos.url, ssl);
    }
    match book::migrate::is_set_up(&client, Side::Site).await {
        Ok(true) => match book::migrate::missing(&client, Side::Site).await {
            Ok(m) if !m.is_empty() => report.error(
                "site_schema",
                format!("site {}'s bookkeeping schema lacks migration(s) {m:?} of this version; run `relaysync setup pos`", pos.site),
            ),
            Ok(_) => {}
            Err(e) => report.error("site_schema", chain(&e)),
        },
        Ok(false) => {
            return report.error(
                "site_schema",
                format!(
                    "site {}'s database is not set up; run `relaysync setup pos`",
                    pos.site
                ),
            )
        }
        Err(e) => return report.error("site_schema", chain(&e)),
    }
    let Ok(relay) = Relay::connect(&cfg.relay().map(|r| r.url.clone()).unwrap_or_default()).await
    else {
        return;
    };
    report.ran("column_drift");
    match relay.published_tables().await {
        Ok(published) => {
            for t in published
                .iter()
                .filter(|t| cfg.tables.iter().any(|c| c.name == t.name))
            {
                match crate::capture::catalog::table_oid(&client, &t.name).await {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        report.warn(
                            "column_drift",
                            format!(
                                "site {}: table {} is not at the site; its next full sync makes it (at HO: `relaysync push --site {} --table {}`)",
                                pos.site, t.name, pos.site, t.name
                            ),
                        );
                        continue;
                    }
                    Err(e) => {
                        report.error("column_drift", chain(&e));
                        continue;
                    }
                }
                if let Err(e) = crate::pos::check_table(&client, t).await {
                    report.error("column_drift", format!("site {}: {e}", pos.site));
                }
            }
        }
        Err(e) => report.error("column_drift", chain(&e)),
    }
}

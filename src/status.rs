//! Status per site, as the relay sees it: Not started, In progress, Success,
//! or Failed with the error (and retry).

use tokio_postgres::Client;

use crate::error::{DbContext, Result};

/// One site's status.
#[derive(Debug, Clone)]
pub struct SiteStatus {
    pub site: String,
    /// `Not started`, `In progress`, `Success` or `Failed`.
    pub state: String,
    /// Highest packet the site has applied.
    pub applied_through: Option<i64>,
    /// Packets for the site it has not applied yet.
    pub pending: i64,
    /// Age in seconds of the oldest pending packet.
    pub lag_seconds: Option<f64>,
    pub last_success: Option<std::time::SystemTime>,
    pub error: Option<String>,
}

/// The status of every registered site.
pub async fn sites(relay: &Client) -> Result<Vec<SiteStatus>> {
    let rows = relay
        .query(
            "SELECT s.code,
                    (SELECT max(a.packet_id) FROM relay.acks a WHERE a.site = s.code AND a.status = 'PROCESSED'),
                    (SELECT max(a.acked_at) FROM relay.acks a WHERE a.site = s.code AND a.status = 'PROCESSED'),
                    pend.n, pend.oldest,
                    (SELECT 'packet ' || a.packet_id || ': ' || a.error FROM relay.acks a
                      WHERE a.site = s.code AND a.status = 'FAILED' ORDER BY a.packet_id LIMIT 1),
                    req.unserved_first, req.open
               FROM relay.sites s
               CROSS JOIN LATERAL (
                 SELECT coalesce(bool_or(r.reason = 'first' AND r.served_at IS NULL), false) AS unserved_first,
                        count(*) FILTER (WHERE r.served_at IS NULL OR NOT EXISTS (
                          SELECT 1 FROM relay.acks a WHERE a.packet_id = r.group_id AND a.site = s.code
                             AND a.status = 'PROCESSED')) AS open
                   FROM relay.sync_requests r
                  WHERE r.site = s.code AND (r.group_id IS NOT NULL OR r.served_at IS NULL)) req
               CROSS JOIN LATERAL (
                 SELECT count(*) AS n, extract(epoch FROM now() - min(p.created_at))::float8 AS oldest
                   FROM relay.packets p
                  WHERE p.direction = 'down' AND s.code = ANY(p.targets)
                    AND NOT EXISTS (SELECT 1 FROM relay.acks a
                                     WHERE a.packet_id = p.id AND a.site = s.code AND a.status = 'PROCESSED')) pend
              ORDER BY s.code",
            &[],
        )
        .await
        .ctx(|| "reading site status from the relay".into())?;
    Ok(rows
        .iter()
        .map(|r| {
            let applied: Option<i64> = r.get(1);
            let pending: i64 = r.get(3);
            let error: Option<String> = r.get(5);
            let unserved_first: bool = r.get(6);
            let open_requests: i64 = r.get(7);
            let state = if error.is_some() {
                "Failed"
            } else if unserved_first {
                "Not started"
            } else if pending > 0 || open_requests > 0 {
                "In progress"
            } else {
                "Success"
            };
            SiteStatus {
                site: r.get(0),
                state: state.into(),
                applied_through: applied,
                pending,
                lag_seconds: r.get(4),
                last_success: r.get(2),
                error,
            }
        })
        .collect())
}

/// Prints the status table.
pub fn print(statuses: &[SiteStatus]) {
    println!(
        "{:<16} {:<12} {:>8} {:>8} {:>9}  last success / error",
        "site", "status", "through", "pending", "lag (s)"
    );
    for s in statuses {
        let last = s
            .last_success
            .map(|t| humantime::format_rfc3339_seconds(t).to_string())
            .unwrap_or_else(|| "never".into());
        let detail = match &s.error {
            Some(e) => format!("{e} (retry: relaysync pos sync --once)"),
            None => last,
        };
        println!(
            "{:<16} {:<12} {:>8} {:>8} {:>9}  {}",
            s.site,
            s.state,
            s.applied_through.map_or("-".into(), |v| v.to_string()),
            s.pending,
            s.lag_seconds.map_or("-".into(), |v| format!("{v:.1}")),
            detail
        );
    }
}

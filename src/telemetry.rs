//! Telemetry as named events: each function here writes the log line (if
//! any) and bumps the Prometheus metric, so the two never disagree. With
//! no recorder installed (one-shot commands) the metrics cost nothing.
//!
//! A long-running worker installs the recorder and serves `/metrics`
//! (Prometheus text) and `/health` (200 while the worker is healthy, see
//! [`Health`]) with [`serve`].

use std::net::SocketAddr;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub use crate::health::Health;

use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{Direction, PacketKind};

/// Buckets of the duration histograms, in seconds.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// A packet was written to the relay.
pub(crate) fn packet_stored(direction: Direction, kind: PacketKind, rows: i64, bytes: i64) {
    crate::health::delivered();
    let labels = [("direction", direction.as_str()), ("kind", kind.as_str())];
    counter!("relaysync_packets_stored_total", &labels).increment(1);
    counter!("relaysync_bytes_stored_total", &labels).increment(bytes.max(0) as u64);
    counter!("relaysync_rows_stored_total", &labels).increment(rows.max(0) as u64);
}

/// A part of `rows` rows of `table` was captured into a packet.
pub(crate) fn rows_captured(table: &str, rows: usize) {
    counter!("relaysync_rows_captured_total", "table" => table.to_string()).increment(rows as u64);
}

/// Captured transactions were committed to the relay, taking `took`.
pub(crate) fn capture_flushed(took: Duration) {
    histogram!("relaysync_capture_flush_duration_seconds").record(took.as_secs_f64());
}

/// A part of `table` was applied (at a site) or merged (at HO).
pub(crate) fn part_applied(direction: Direction, table: &str, rows: u64) {
    crate::health::delivered();
    counter!("relaysync_rows_applied_total", "direction" => direction.as_str(), "table" => table.to_string())
        .increment(rows);
}

/// A transaction of packets was committed by an applier, taking `took`.
pub(crate) fn packets_applied(direction: Direction, packets: usize, took: Duration) {
    tracing::debug!(
        direction = direction.as_str(),
        packets,
        took_ms = took.as_secs_f64() * 1e3,
        "packets applied"
    );
    counter!("relaysync_packets_applied_total", "direction" => direction.as_str())
        .increment(packets as u64);
    histogram!("relaysync_apply_duration_seconds", "direction" => direction.as_str())
        .record(took.as_secs_f64());
}

/// HO merged rows of `table` from a site: `merged` changed HO, `rejected`
/// could not be stored.
pub(crate) fn rows_merged(table: &str, merged: u64, rejected: u64) {
    counter!("relaysync_rows_merged_total", "table" => table.to_string()).increment(merged);
    counter!("relaysync_rows_rejected_total", "table" => table.to_string()).increment(rejected);
}

/// A connection to the `role` database (or its replication stream) was
/// found lost by its deadline and dropped.
pub(crate) fn connection_lost(role: &'static str) {
    counter!("relaysync_connections_lost_total", "role" => role).increment(1);
}

/// How often the rows routed to one unregistered site are logged again.
const UNREGISTERED_EVERY: Duration = Duration::from_secs(600);

/// Rows of `table` routed to `site`, which is not registered, were left
/// out. Logged the first time per table and site, then at most every ten
/// minutes with the rows left out since; counted in a metric. Whether it
/// logged.
pub(crate) fn rows_unregistered(table: &str, site: &str, rows: u64) -> bool {
    use std::collections::HashMap;
    use std::sync::{LazyLock, Mutex};
    use std::time::Instant;
    /// Per table and site: when last logged, and rows left out since.
    type Seen = HashMap<(String, String), (Instant, u64)>;
    static SEEN: LazyLock<Mutex<Seen>> = LazyLock::new(Mutex::default);
    counter!("relaysync_rows_unregistered_total", "table" => table.to_string(), "site" => site.to_string())
        .increment(rows);
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    let (logged, again) = match seen.entry((table.to_string(), site.to_string())) {
        std::collections::hash_map::Entry::Occupied(mut e) => {
            let (at, since) = e.get_mut();
            *since += rows;
            if at.elapsed() < UNREGISTERED_EVERY {
                return false;
            }
            (std::mem::replace(e.get_mut(), (Instant::now(), 0)).1, true)
        }
        std::collections::hash_map::Entry::Vacant(e) => {
            e.insert((Instant::now(), 0));
            (rows, false)
        }
    };
    tracing::warn!(
        table,
        site,
        rows = logged,
        again,
        "rows routed to a site that is not registered are not stored; `relaysync site add` it (its first sync loads them), or fix the routing column; this is logged again at most every 10 minutes"
    );
    true
}

/// A packet failed: the stream stops at it.
pub(crate) fn packet_failed(packet: i64, error: &str) {
    tracing::error!(packet, error = %error, "packet failed; this stream stops here until it applies");
    counter!("relaysync_packets_failed_total").increment(1);
}

/// A packet waits for a schema change the site does not make by itself.
pub(crate) fn packet_held(packet: i64, error: &str) {
    tracing::warn!(packet, error = %error, "packet held; this stream waits here for the schema change");
    counter!("relaysync_packets_held_total").increment(1);
}

/// A full sync was served for `sites`.
pub(crate) fn full_sync_served(sites: &[String], rows: u64, packets: u64) {
    tracing::info!(?sites, rows, packets, "full sync served");
    counter!("relaysync_full_syncs_served_total").increment(1);
    counter!("relaysync_full_sync_rows_total").increment(rows);
}

/// A worker's cycle failed; it is retried after `pause`, or stops.
pub(crate) fn cycle_failed(e: &Error, pause: Option<Duration>) {
    let kind = e.kind();
    counter!("relaysync_errors_total", "kind" => kind_name(kind)).increment(1);
    match pause {
        Some(pause) => {
            tracing::warn!(error = %crate::error::chain(e), ?kind, retry_in = ?pause, "cycle failed; retrying")
        }
        None => tracing::error!(error = %crate::error::chain(e), "stopping"),
    }
}

fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Config => "config",
        ErrorKind::Setup => "setup",
        ErrorKind::Transient => "transient",
        ErrorKind::Data => "data",
    }
}

/// HO's slot: bytes of WAL between HO's position and what the slot
/// confirmed, and bytes of WAL it keeps.
pub(crate) fn slot_sampled(lag_bytes: i64, retained_bytes: i64) {
    gauge!("relaysync_slot_lag_bytes").set(lag_bytes as f64);
    gauge!("relaysync_slot_retained_wal_bytes").set(retained_bytes as f64);
}

/// A site as HO sees it: packets waiting, and seconds since its last ack.
pub(crate) fn site_sampled(site: &str, pending: i64, since_ack: Option<f64>) {
    gauge!("relaysync_site_pending_packets", "site" => site.to_string()).set(pending as f64);
    if let Some(s) = since_ack {
        gauge!("relaysync_site_seconds_since_ack", "site" => site.to_string()).set(s);
    }
}

/// Installs the Prometheus recorder (once per process).
pub fn install() -> Result<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets(SECONDS_BUCKETS)
        .map_err(|e| Error::Config(format!("metrics: {e}")))?
        .install_recorder()
        .map_err(|e| Error::Config(format!("metrics: {e}")))
}

/// Serves `/metrics` and `/health` on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, metrics: PrometheusHandle, health: Health) -> Result<()> {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper::{Response, StatusCode};

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Io {
            context: format!("cannot listen on {addr} for metrics; choose a free address with --metrics or [metrics] listen"),
            source,
        })?;
    tracing::info!(%addr, "serving /metrics and /health");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (metrics, health) = (metrics.clone(), health.clone());
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (status, body) = match req.uri().path() {
                        "/metrics" => {
                            gauge!("relaysync_seconds_since_progress")
                                .set(health.since_progress().as_secs_f64());
                            metrics.run_upkeep();
                            (StatusCode::OK, metrics.render())
                        }
                        "/health" if health.healthy() => (StatusCode::OK, "ok\n".to_string()),
                        "/health" => (StatusCode::SERVICE_UNAVAILABLE, "unhealthy\n".to_string()),
                        _ => (
                            StatusCode::NOT_FOUND,
                            "try /metrics or /health\n".to_string(),
                        ),
                    };
                    let mut response = Response::new(Full::new(Bytes::from(body)));
                    *response.status_mut() = status;
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn rows_for_an_unregistered_site_are_logged_once_per_table_and_site() {
        let logged: Vec<bool> = [
            ("t1", "x9"),
            ("t1", "x9"),
            ("t2", "x9"),
            ("t1", "y9"),
            ("t1", "x9"),
        ]
        .iter()
        .map(|(table, site)| super::rows_unregistered(table, site, 10))
        .collect();
        assert_eq!(logged, [true, false, true, true, false]);
    }
}

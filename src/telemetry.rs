//! Telemetry as named events: each function here writes the log line (if
//! any) and bumps the Prometheus metric, so the two never disagree. With
//! no recorder installed (one-shot commands) the metrics cost nothing.
//!
//! A long-running worker installs the recorder and serves `/metrics`
//! (Prometheus text) and `/health` (200 while the worker is healthy, see
//! [`Health`]) with [`serve`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{Direction, PacketKind};

/// Buckets of the duration histograms, in seconds.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// A packet was written to the relay.
pub(crate) fn packet_stored(direction: Direction, kind: PacketKind, rows: i64, bytes: i64) {
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

/// A packet failed: the stream stops at it.
pub(crate) fn packet_failed(packet: i64, error: &str) {
    tracing::error!(packet, error = %error, "packet failed; this stream stops here until it applies");
    counter!("relaysync_packets_failed_total").increment(1);
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

/// Whether a worker is healthy: its last cycle succeeded recently enough,
/// or it is inside a long-running cycle (a live stream) that started after
/// its last failure.
#[derive(Debug, Clone)]
pub struct Health {
    inner: Arc<Mutex<HealthState>>,
}

#[derive(Debug)]
struct HealthState {
    /// How old the last success may be.
    stale_after: Duration,
    last_ok: Option<Instant>,
    last_err: Option<Instant>,
    cycle_since: Option<Instant>,
}

/// A cycle running this long is a live stream.
const LIVE_AFTER: Duration = Duration::from_secs(5);

impl Health {
    /// A worker whose cycles come every `interval` (zero: streaming).
    pub fn new(interval: Duration) -> Health {
        Health {
            inner: Arc::new(Mutex::new(HealthState {
                stale_after: interval * 2 + Duration::from_secs(60),
                last_ok: None,
                last_err: None,
                cycle_since: None,
            })),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HealthState) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A cycle starts.
    pub(crate) fn cycle_started(&self) {
        self.with(|h| h.cycle_since = Some(Instant::now()));
    }

    /// The cycle ended: well or not.
    pub(crate) fn cycle_ended(&self, ok: bool) {
        self.with(|h| {
            h.cycle_since = None;
            let now = Some(Instant::now());
            if ok {
                h.last_ok = now;
            } else {
                h.last_err = now;
            }
        });
    }

    /// Whether the worker is healthy now.
    pub(crate) fn healthy(&self) -> bool {
        self.with(|h| {
            let after_err = |t: Instant| h.last_err.is_none_or(|e| e < t);
            let live = h
                .cycle_since
                .is_some_and(|s| s.elapsed() >= LIVE_AFTER && after_err(s));
            let recent = h
                .last_ok
                .is_some_and(|t| t.elapsed() <= h.stale_after && after_err(t));
            live || recent
        })
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
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn health_follows_the_cycles() {
        let h = Health::new(Duration::from_secs(30));
        assert!(!h.healthy(), "nothing succeeded yet");
        h.cycle_started();
        h.cycle_ended(true);
        assert!(h.healthy());
        h.cycle_started();
        h.cycle_ended(false);
        assert!(!h.healthy(), "the last cycle failed");
        h.cycle_started();
        assert!(!h.healthy(), "a new cycle is not yet a live stream");
        tokio::time::sleep(LIVE_AFTER).await;
        // std's Instant does not follow tokio's paused clock: check the
        // rule on the state instead.
        h.cycle_ended(true);
        assert!(h.healthy());
    }
}

//! `ho run`: the HO worker under the supervisor, and the workers a
//! streaming HO runs beside its capture (the up-merger, the ack recorder
//! with its gauges and retention).

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_postgres::Client;

use super::{open, record_sent, retain, source, sync_on, Summary};
use crate::apply::{Consumer, HoMerger};
use crate::capture::{self, batch::Bounds, Mode};
use crate::config::Config;
use crate::error::{DbContext, Result};
use crate::postgres::Wake;
use crate::relay::Relay;
use crate::supervisor::{supervise, supervise_with, Running, Worker};

/// `ho run`: syncs every `[sync] interval`, or streams at `"0s"`, as
/// `running` says (until its shutdown). A failed cycle is retried with a
/// pause that grows; a setup error stops the worker with the fix. `report`
/// sees what each interval sync did.
pub async fn run(cfg: &Config, running: Running, report: impl FnMut(&Summary)) -> Result<()> {
    supervise_with(HoWorker::new(cfg, report)?, running).await
}

/// `ho run` for the supervisor: a sync every `interval`, or, at zero, a
/// stream that lasts until shutdown (restarted after a failure: capture
/// resumes from the relay's position, so nothing is lost or doubled).
struct HoWorker<R> {
    cfg: Config,
    interval: Duration,
    report: R,
}

impl<R: FnMut(&Summary)> HoWorker<R> {
    /// `report` is shown after each interval sync.
    fn new(cfg: &Config, report: R) -> Result<HoWorker<R>> {
        Ok(HoWorker {
            interval: cfg.interval()?,
            cfg: cfg.clone(),
            report,
        })
    }
}

impl<R: FnMut(&Summary)> Worker for HoWorker<R> {
    fn span(&self) -> tracing::Span {
        tracing::info_span!("worker", role = "ho")
    }

    async fn cycle(&mut self, shutdown: watch::Receiver<bool>) -> Result<()> {
        if self.interval.is_zero() {
            return stream(&self.cfg, shutdown).await;
        }
        let (sql, relay) = open(&self.cfg).await?;
        let summary = sync_on(&self.cfg, &sql, &relay).await?;
        (self.report)(&summary);
        sample(&sql, &relay, &self.cfg.ho()?.slot).await
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.interval).await
    }
}

/// Samples the gauges HO's worker serves: its slot's lag and retained WAL,
/// and each site's pending packets and time since its last ack.
async fn sample(sql: &Client, relay: &Relay, slot: &str) -> Result<()> {
    let row = sql
        .query_opt(
            "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::int8 AS lag,
                    (pg_current_wal_lsn() - restart_lsn)::int8 AS retained
               FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()",
            &[&slot],
        )
        .await
        .ctx(|| "reading pg_replication_slots".into())?;
    if let Some(r) = row {
        let lag: Option<i64> = r.get("lag");
        let retained: Option<i64> = r.get("retained");
        crate::telemetry::slot_sampled(lag.unwrap_or(0), retained.unwrap_or(0));
    }
    let now = std::time::SystemTime::now();
    for s in relay.site_status().await? {
        let since = s
            .last_success
            .and_then(|t| now.duration_since(t).ok())
            .map(|d| d.as_secs_f64());
        crate::telemetry::site_sampled(&s.site, s.pending, since);
    }
    Ok(())
}

/// Streams until shutdown, with the sites' acks recorded beside it.
async fn stream(cfg: &Config, shutdown: watch::Receiver<bool>) -> Result<()> {
    let (sql, relay) = open(cfg).await?;
    let acks = tokio::spawn(supervise(AckRecorder::new(cfg), shutdown.clone()));
    // The merger runs in this task (its apply is not Send) beside the capture.
    let merger = supervise(UpMerger::new(cfg), shutdown.clone());
    let (source, routes) = (source(cfg)?, cfg.routes());
    let captured = capture::capture(
        &sql,
        &relay,
        &source,
        &routes,
        Bounds::from(&cfg.packet),
        Mode::Stream {
            linger: capture::STREAM_LINGER,
        },
        shutdown,
    );
    tokio::pin!(merger, captured);
    let outcome = tokio::select! {
        outcome = &mut captured => outcome,
        // Stopped for good (shutdown, or a setup error it logged): the
        // capture still ends as it should.
        _ = &mut merger => captured.await,
    };
    acks.abort();
    let outcome = outcome?;
    tracing::info!(
        transactions = outcome.transactions,
        packets = outcome.packets,
        "ho stream stopped"
    );
    Ok(())
}

/// Merges what the sites send while HO streams, as soon as a site's NOTIFY
/// says it is there (and every few seconds, should the LISTEN connection
/// be gone).
struct UpMerger {
    cfg: Config,
    open: Option<(Client, Relay, Consumer<HoMerger>)>,
    wake: Wake,
}

/// How long a streaming HO worker waits for a site's NOTIFY before it
/// looks for uploads all the same.
const MERGE_POLL: Duration = Duration::from_secs(5);

impl UpMerger {
    fn new(cfg: &Config) -> UpMerger {
        UpMerger {
            cfg: cfg.clone(),
            open: None,
            wake: Wake::new(crate::relay::UP_PACKETS_CHANNEL),
        }
    }
}

impl Worker for UpMerger {
    fn span(&self) -> tracing::Span {
        tracing::info_span!("worker", role = "ho-merge")
    }

    async fn cycle(&mut self, _shutdown: watch::Receiver<bool>) -> Result<()> {
        self.wake.listen(&self.cfg.relay()?.url).await;
        if self.wake.lost() {
            // Its relay connection, opened alike, is suspect too.
            self.open = None;
        }
        let (sql, relay, consumer) = match self.open.as_mut() {
            Some(o) => o,
            None => {
                let (sql, relay) = open(&self.cfg).await?;
                let consumer = Consumer::new(HoMerger::new(&self.cfg.upstream));
                self.open.insert((sql, relay, consumer))
            }
        };
        match consumer.consume(sql, relay).await {
            Ok(merged) => {
                if merged.failed.is_some() {
                    // Reopened for the retry: a site key recorded since
                    // (`site key`) is then read.
                    self.open = None;
                }
                if merged.packets > 0 {
                    tracing::info!(
                        packets = merged.packets,
                        rows = merged.rows,
                        merged = merged.merged,
                        rejected = merged.rejected,
                        "merged uploads"
                    );
                }
                Ok(())
            }
            Err(e) => {
                self.open = None;
                Err(e)
            }
        }
    }

    async fn wait(&mut self) {
        self.wake.wait(MERGE_POLL).await
    }
}

/// How often a streaming HO worker samples its gauges (status per site
/// reads the relay's packets).
const SAMPLE_EVERY: Duration = Duration::from_secs(15);
/// How often a streaming HO worker purges and expires.
const RETAIN_EVERY: Duration = Duration::from_secs(60);

/// Records the sites' acks in HO every two seconds while HO streams, and
/// samples the gauges (and looks for partitions emptied unpublished).
struct AckRecorder {
    cfg: Config,
    open: Option<(Client, Relay)>,
    /// When the gauges were last sampled.
    sampled: Option<Instant>,
    /// When retention last ran.
    retained: Option<Instant>,
}

impl AckRecorder {
    fn new(cfg: &Config) -> AckRecorder {
        AckRecorder {
            cfg: cfg.clone(),
            open: None,
            sampled: None,
            retained: None,
        }
    }
}

impl Worker for AckRecorder {
    fn span(&self) -> tracing::Span {
        tracing::info_span!("worker", role = "ho-acks")
    }

    async fn cycle(&mut self, _shutdown: watch::Receiver<bool>) -> Result<()> {
        let (sql, relay) = match self.open.as_ref() {
            Some(o) => o,
            None => self.open.insert(open(&self.cfg).await?),
        };
        let mut result = record_sent(sql, relay).await.map(|_| ());
        if result.is_ok() && self.sampled.is_none_or(|t| t.elapsed() >= SAMPLE_EVERY) {
            result = sample(sql, relay, &self.cfg.ho()?.slot).await;
            if result.is_ok() {
                result = super::partitions::reload_emptied(&self.cfg, sql, relay)
                    .await
                    .map(|_| ());
            }
            if result.is_ok() {
                result = super::shapes::announce_changes(&self.cfg, sql, relay)
                    .await
                    .map(|_| ());
            }
            if result.is_ok() {
                result = super::keys::publish_highs(&self.cfg, sql, relay).await;
            }
            if result.is_ok() && self.retained.is_none_or(|t| t.elapsed() >= RETAIN_EVERY) {
                result = retain(&self.cfg, sql, relay).await.map(|_| ());
                self.retained = Some(Instant::now());
            }
            self.sampled = Some(Instant::now());
        }
        if result.is_err() {
            self.open = None;
        }
        result
    }

    async fn wait(&mut self) {
        tokio::time::sleep(Duration::from_secs(2)).await
    }
}

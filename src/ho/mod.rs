//! The HO worker: `setup ho`, `ho sync --once`, `ho run`.
//!
//! A sync merges what the sites sent up (through the [`Consumer`]), then
//! captures HO's changes into packets (which fans the merged rows out too),
//! serves pending full syncs, and copies the sites' acks into HO's own
//! record of what it sent.

mod setup;

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_postgres::Client;

pub use setup::setup;

use crate::apply::{Consumed, Consumer, HoMerger};
use crate::book::{self, Side};
use crate::capture::{self, batch::Bounds, snapshot::Served, Mode, Outcome, Source};
use crate::config::Config;
use crate::error::{DbContext, Error, Result};
use crate::postgres::{connect, Wake};
use crate::protocol::{Lsn, Origin, PacketStatus};
use crate::relay::Relay;
use crate::supervisor::{supervise, Worker};

/// What one `ho sync` did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Summary {
    #[serde(rename = "captured")]
    pub capture: Outcome,
    /// Site data merged into HO before the capture.
    pub merged: Consumed,
    /// Full syncs served after the capture.
    #[serde(rename = "full_syncs")]
    pub served: Vec<Served>,
    /// The verify packet sent after the capture, if any was asked for.
    pub verified: Option<crate::verify::ho::Sent>,
    /// Packets in HO's record by status.
    #[serde(serialize_with = "crate::service::by_status")]
    pub sent: Vec<(PacketStatus, i64)>,
    /// What retention removed.
    #[serde(rename = "retention")]
    pub retained: Retained,
    #[serde(rename = "seconds", serialize_with = "crate::service::seconds")]
    pub elapsed: Duration,
}

/// What one round of retention did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Retained {
    /// Packets purged from the relay.
    pub purged: u64,
    /// Sites expired in this round.
    pub expired: Vec<String>,
}

/// Purges packets every target processed more than `[retention]
/// keep_acked` ago (from the relay and from HO's record) and expires the
/// sites silent for `max_offline`.
pub async fn retain(cfg: &Config, sql: &Client, relay: &Relay) -> Result<Retained> {
    let keep = cfg.keep_acked()?;
    let purged = relay.purge_processed(keep).await?;
    book::ho::purge_sent(sql, keep).await?;
    let expired = match cfg.max_offline()? {
        Some(max) => relay.expire_silent(max).await?,
        None => Vec::new(),
    };
    for site in &expired {
        tracing::warn!(site = %site, "site expired: it acked nothing for [retention] max_offline; its backlog is released and it gets a full sync when it comes back");
    }
    Ok(Retained { purged, expired })
}

async fn open(cfg: &Config) -> Result<(Client, Relay)> {
    let ho = cfg.ho()?;
    let relay = Relay::connect(&cfg.relay()?.url).await?;
    let sql = connect("ho", &ho.url).await?;
    if !book::migrate::is_set_up(&sql, Side::Ho).await? {
        return Err(Error::Setup(
            "HO is not set up for relaysync; run `relaysync setup ho` first".into(),
        ));
    }
    Ok((sql, relay))
}

fn source(cfg: &Config) -> Result<Source> {
    let ho = cfg.ho()?;
    Ok(Source {
        url: ho.url.clone(),
        slot: ho.slot.clone(),
        publication: ho.publication.clone(),
        origin: Origin::Ho,
        skip_origin: None,
        targets: None,
    })
}

/// Merges, captures every change committed before the start, serves full
/// syncs, then records acks. An up packet that cannot be merged is in
/// `merged.failed` (see [`failure`]).
pub async fn sync_once(cfg: &Config) -> Result<Summary> {
    let (sql, relay) = open(cfg).await?;
    sync_on(cfg, &sql, &relay).await
}

/// One `ho sync` on connections the caller opened.
async fn sync_on(cfg: &Config, sql: &Client, relay: &Relay) -> Result<Summary> {
    let started = Instant::now();
    // Merge what the sites sent first: the capture then fans it out.
    let merged = Consumer::new(HoMerger::new(&cfg.upstream))
        .consume(sql, relay)
        .await?;
    // Before the capture: see crate::verify for why.
    let verifying = crate::verify::ho::lock(&cfg.ho()?.url, relay).await?;
    let through = verifying.as_ref().map(|l| l.lsn());
    let capture = capture_through(cfg, sql, relay, through).await?;
    let verified = match verifying {
        Some(locked) => Some(locked.send(relay).await?),
        None => None,
    };
    let served =
        capture::snapshot::serve(sql, relay, &cfg.routes(), Bounds::from(&cfg.packet)).await?;
    crate::verify::ho::log_drift(sql, relay).await?;
    let sent = record_sent(sql, relay).await?;
    let retained = retain(cfg, sql, relay).await?;
    Ok(Summary {
        capture,
        merged,
        served,
        verified,
        sent,
        retained,
        elapsed: started.elapsed(),
    })
}

/// Captures every change committed before the start and, when `through`
/// is given, at least up to there (a run may stop at a keepalive short of
/// it; then the next run takes the rest).
async fn capture_through(
    cfg: &Config,
    sql: &Client,
    relay: &Relay,
    through: Option<Lsn>,
) -> Result<Outcome> {
    let mut total = Outcome::default();
    for _ in 0..4 {
        let o = capture::capture(
            sql,
            relay,
            &source(cfg)?,
            &cfg.routes(),
            Bounds::from(&cfg.packet),
            Mode::Once,
            crate::shutdown::never(),
        )
        .await?;
        total.transactions += o.transactions;
        total.changes += o.changes;
        total.packets += o.packets;
        total.rows += o.rows;
        total.bytes += o.bytes;
        total.skipped_transactions += o.skipped_transactions;
        total.confirmed_lsn = o.confirmed_lsn;
        if through.is_none_or(|t| o.confirmed_lsn >= t) {
            break;
        }
    }
    Ok(total)
}

/// The up packet `summary` stopped at, as an error naming the retry.
pub fn failure(cfg: &Config, summary: &Summary) -> Option<Error> {
    summary.merged.failure(&HoMerger::new(&cfg.upstream))
}

/// Copies the packets' statuses from the relay into HO's own record
/// (`relaysync.sent_packets`); returns the count per status.
pub async fn record_sent(sql: &Client, relay: &Relay) -> Result<Vec<(PacketStatus, i64)>> {
    book::ho::record_sent(sql, relay).await
}

/// `ho run` for the supervisor: a sync every `interval`, or, at zero, a
/// stream that lasts until shutdown (restarted after a failure: capture
/// resumes from the relay's position, so nothing is lost or doubled).
pub struct HoWorker<R> {
    cfg: Config,
    interval: Duration,
    report: R,
}

impl<R: FnMut(&Summary)> HoWorker<R> {
    /// `report` is shown after each interval sync.
    pub fn new(cfg: &Config, report: R) -> Result<HoWorker<R>> {
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
/// samples the gauges.
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

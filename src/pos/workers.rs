//! `pos run`: the site worker under the supervisor, and beside it, when
//! it streams with upstream tables, the upload stream.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{up_source, wipe_if_due, Session, Summary};
use crate::capture::{self, batch::Bounds, Mode};
use crate::config::Config;
use crate::error::Result;
use crate::postgres::{connect, Wake};
use crate::relay::Relay;
use crate::supervisor::{supervise, supervise_with, Running, Worker};

/// `pos run`: syncs every `[sync] interval`, or at `"0s"` whenever HO
/// stores packets (and streams the upstream tables up as they change), as
/// `running` says (until its shutdown). A failed cycle is retried with a
/// pause that grows; a setup error stops the worker with the fix. `report`
/// sees each sync that did something (every sync, on an interval).
pub async fn run(cfg: &Config, running: Running, report: impl FnMut(&Summary)) -> Result<()> {
    let worker = PosWorker::new(cfg, report)?;
    if !worker.streams_upstream() {
        return supervise_with(worker, running).await;
    }
    // Both in this task (the apply is not Send). Each ends on shutdown, or
    // stops on an error that needs the DBA: then the whole worker stops
    // with it (an apply is undone whole).
    let upload = supervise(UpStreamer::new(cfg), running.shutdown.clone());
    let apply = supervise_with(worker, running);
    tokio::pin!(upload, apply);
    tokio::select! {
        uploaded = &mut upload => {
            uploaded?;
            apply.await
        }
        applied = &mut apply => {
            applied?;
            upload.await
        }
    }
}

/// A streaming `pos run`'s upload: the site's upstream tables streamed to
/// the relay as they change, as HO's stream does for the down tables (the
/// apply loop, [`PosWorker`], then leaves uploading to it).
struct UpStreamer {
    cfg: Config,
}

impl UpStreamer {
    fn new(cfg: &Config) -> UpStreamer {
        UpStreamer { cfg: cfg.clone() }
    }
}

impl Worker for UpStreamer {
    fn span(&self) -> tracing::Span {
        let site = self.cfg.pos.as_ref().map_or("", |p| p.site.as_str());
        tracing::info_span!("worker", role = "pos-upload", site = %site)
    }

    async fn cycle(&mut self, shutdown: watch::Receiver<bool>) -> Result<()> {
        let cfg = &self.cfg;
        let seals = crate::seal::Seals::for_pos(cfg.pos()?).await?;
        let relay = Relay::connect(&cfg.relay()?.url).await?.with_seals(seals);
        let client = connect("pos", &cfg.pos()?.url).await?;
        let outcome = capture::capture(
            &client,
            &relay,
            &up_source(cfg, &client).await?,
            &cfg.upstream_routes(),
            Bounds::from(&cfg.packet),
            Mode::Stream {
                linger: capture::STREAM_LINGER,
            },
            shutdown,
        )
        .await?;
        tracing::info!(
            transactions = outcome.transactions,
            packets = outcome.packets,
            "upload stream stopped"
        );
        Ok(())
    }

    async fn wait(&mut self) {
        tokio::time::sleep(Duration::from_secs(1)).await
    }
}

/// `pos run` for the supervisor: a sync every `interval`; at zero, a sync
/// whenever HO announces new packets (LISTEN), and every few seconds.
struct PosWorker<R> {
    cfg: Config,
    interval: Duration,
    session: Option<Session>,
    /// HO's NOTIFY wakes a streaming worker. The LISTEN connection is opened
    /// again whenever it is gone (the relay restarted, say); until then the
    /// worker syncs every few seconds.
    wake: Wake,
    /// When `[pos] wipe_after` was last checked.
    wipe_checked: Option<Instant>,
    report: R,
}

/// How long a streaming site worker holds acks back to send them together.
const STREAM_ACK_EVERY: Duration = Duration::from_secs(1);

/// How often a running site worker checks `[pos] wipe_after`.
const WIPE_CHECK_EVERY: Duration = Duration::from_secs(60);

impl<R: FnMut(&Summary)> PosWorker<R> {
    /// `report` is shown each sync that did something (every sync, on an
    /// interval).
    fn new(cfg: &Config, report: R) -> Result<PosWorker<R>> {
        Ok(PosWorker {
            interval: cfg.interval()?,
            cfg: cfg.clone(),
            session: None,
            wake: Wake::new(crate::relay::PACKETS_CHANNEL),
            wipe_checked: None,
            report,
        })
    }

    /// Whether an [`UpStreamer`] uploads beside this worker: streaming,
    /// with upstream tables.
    fn streams_upstream(&self) -> bool {
        self.interval.is_zero() && !self.cfg.upstream.is_empty()
    }

    /// LISTENs (streaming); a LISTEN connection the network lost means
    /// the session's relay connection is suspect too: a new session.
    async fn listen(&mut self) -> Result<()> {
        if self.interval.is_zero() {
            self.wake.listen(&self.cfg.relay()?.url).await;
            if self.wake.lost() {
                self.session = None;
            }
        }
        Ok(())
    }
}

impl<R: FnMut(&Summary)> Worker for PosWorker<R> {
    fn span(&self) -> tracing::Span {
        let site = self.cfg.pos.as_ref().map_or("", |p| p.site.as_str());
        tracing::info_span!("worker", role = "pos", site = %site)
    }

    async fn cycle(&mut self, _shutdown: watch::Receiver<bool>) -> Result<()> {
        if self
            .wipe_checked
            .is_none_or(|t| t.elapsed() >= WIPE_CHECK_EVERY)
        {
            // Before the relay is needed: a site cut off from it wipes too.
            if wipe_if_due(&self.cfg).await?.is_some() {
                // A new session asks for the full sync the wipe calls for.
                self.session = None;
            }
            self.wipe_checked = Some(Instant::now());
        }
        self.listen().await?;
        let upload = !self.streams_upstream();
        let streaming = self.interval.is_zero();
        let session = match self.session.as_mut() {
            Some(s) => s,
            None => {
                let mut session = Session::open(&self.cfg).await?;
                if streaming {
                    session.batch_acks(STREAM_ACK_EVERY);
                }
                self.session.insert(session)
            }
        };
        match session.sync_with(&self.cfg, upload).await {
            Ok(s) => {
                if s.did_something() || !self.interval.is_zero() {
                    (self.report)(&s);
                }
                Ok(())
            }
            Err(e) => {
                // Reconnect next time: a connection may be what failed.
                self.session = None;
                Err(e)
            }
        }
    }

    async fn stopping(&mut self) {
        if let Some(session) = self.session.as_mut() {
            // Otherwise the next session sends them.
            if let Err(e) = session.send_acks().await {
                tracing::warn!(error = %crate::error::chain(&e), "acks left for the next run");
            }
        }
    }

    async fn wait(&mut self) {
        let mut pause = if self.interval.is_zero() {
            Duration::from_secs(5)
        } else {
            self.interval
        };
        // Held-back acks go out when due, with or without new packets.
        if let Some(due) = self.session.as_ref().and_then(Session::acks_due_at) {
            pause = pause.min(due.saturating_duration_since(Instant::now()));
        }
        self.wake.wait(pause).await
    }
}

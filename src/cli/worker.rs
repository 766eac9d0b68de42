//! `ho sync|run`, `pos sync|run|resync`: the workers, once or supervised.

use std::sync::Arc;

use relaysync::book::Side;
use relaysync::config::Config;
use relaysync::console::{Console, Options};
use relaysync::error::Error;
use relaysync::error::Result;
use relaysync::relay::Relay;
use relaysync::telemetry::{self, Health};
use relaysync::Running;
use tokio::sync::Notify;

use super::{json, summary, PosCommand, RunArgs, WorkerCommand};

/// Serves /metrics and /health when asked to (`--metrics`, `[metrics]
/// listen`); the health the supervisor keeps.
async fn serve_metrics(cfg: &Config, args: &RunArgs) -> Result<Option<Health>> {
    let addr = match (args.metrics, &cfg.metrics.listen) {
        (Some(a), _) => a,
        (None, Some(text)) => text.parse().map_err(|e| {
            Error::Config(format!(
                "[metrics] listen = \"{text}\" is not host:port ({e}); write e.g. \"127.0.0.1:9187\""
            ))
        })?,
        (None, None) => return Ok(None),
    };
    let health = Health::new(cfg.interval()?, cfg.deadline()?);
    telemetry::serve(addr, telemetry::install()?, health.clone()).await?;
    Ok(Some(health))
}

/// Serves the console beside the worker when `[console] listen` is set;
/// the console wakes the worker through `now`.
async fn serve_console(
    cfg: &Config,
    side: Side,
    now: Arc<Notify>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    if cfg.console.listen.is_none() {
        return Ok(());
    }
    let mut opts = Options::from_config(cfg, side, None)?;
    opts.sync_now = Some(now);
    let console = Console::bind(cfg.clone(), opts).await?;
    tracing::info!(url = %console.url()?, "serving the console");
    tokio::spawn(console.run(async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    }));
    Ok(())
}

/// The HO worker.
pub async fn ho(cfg: &Config, command: WorkerCommand, as_json: bool) -> Result<()> {
    let report = move |s: &relaysync::ho::Summary| {
        if as_json {
            json::print(&relaysync::service::SyncReport::ho(s));
        } else {
            summary::ho(s);
        }
    };
    match command {
        WorkerCommand::Sync { .. } => {
            let s = relaysync::ho::sync_once(cfg).await?;
            report(&s);
            match relaysync::ho::failure(cfg, &s) {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
        WorkerCommand::Run(args) => {
            let health = serve_metrics(cfg, &args).await?;
            let now = Arc::new(Notify::new());
            let shutdown = relaysync::shutdown::on_signals();
            serve_console(cfg, Side::Ho, now.clone(), shutdown.clone()).await?;
            let running = Running::until(shutdown)
                .with_health(health)
                .with_sync_now(now);
            relaysync::ho::run(cfg, running, report).await
        }
    }
}

/// The site worker.
pub async fn pos(cfg: &Config, command: PosCommand, as_json: bool) -> Result<()> {
    let report = move |s: &relaysync::pos::Summary| {
        if as_json {
            json::print(&relaysync::service::SyncReport::pos(s));
        } else {
            summary::pos(s);
        }
    };
    match command {
        PosCommand::Sync { .. } => {
            if let Some(w) = relaysync::pos::wipe_if_due(cfg).await? {
                if !as_json {
                    summary::wiped(cfg, &w);
                }
            }
            let s = relaysync::pos::sync_once(cfg).await?;
            report(&s);
            match relaysync::pos::failure(&s) {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
        PosCommand::Run(args) => {
            let health = serve_metrics(cfg, &args).await?;
            let now = Arc::new(Notify::new());
            let shutdown = relaysync::shutdown::on_signals();
            serve_console(cfg, Side::Site, now.clone(), shutdown.clone()).await?;
            let running = Running::until(shutdown)
                .with_health(health)
                .with_sync_now(now);
            relaysync::pos::run(cfg, running, report).await
        }
        PosCommand::Resync => {
            let site = &cfg.pos()?.site;
            let relay = Relay::connect(&cfg.relay()?.url).await?;
            let view = relaysync::service::resync(&relay, site).await?;
            if as_json {
                json::print(&serde_json::json!({ "requested": view }));
            } else {
                println!("site {site}: clean resync requested; it is served on HO's next sync and applied on this site's next sync");
            }
            Ok(())
        }
    }
}

//! `ho sync|run`, `pos sync|run|resync`: the workers, once or supervised.

use relaysync::config::Config;
use relaysync::error::Result;
use relaysync::protocol::SyncReason;
use relaysync::relay::Relay;
use relaysync::supervisor::supervise;

use super::{json, summary, PosCommand, WorkerCommand};

/// The HO worker.
pub async fn ho(cfg: &Config, command: WorkerCommand, as_json: bool) -> Result<()> {
    let report = move |s: &relaysync::ho::Summary| {
        if as_json {
            json::print(&json::ho(s));
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
        WorkerCommand::Run => {
            let worker = relaysync::ho::HoWorker::new(cfg, report)?;
            supervise(worker, relaysync::shutdown::on_signals()).await
        }
    }
}

/// The site worker.
pub async fn pos(cfg: &Config, command: PosCommand, as_json: bool) -> Result<()> {
    let report = move |s: &relaysync::pos::Summary| {
        if as_json {
            json::print(&json::pos(s));
        } else {
            summary::pos(s);
        }
    };
    match command {
        PosCommand::Sync { .. } => {
            let mut session = relaysync::pos::Session::open(cfg).await?;
            let s = session.sync(cfg).await?;
            report(&s);
            match session.failure(&s) {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
        PosCommand::Run => {
            let worker = relaysync::pos::PosWorker::new(cfg, report)?;
            supervise(worker, relaysync::shutdown::on_signals()).await
        }
        PosCommand::Resync => {
            let site = cfg.pos()?.site.clone();
            let relay = Relay::connect(&cfg.relay()?.url).await?;
            relay
                .request_sync(std::slice::from_ref(&site), None, SyncReason::Resync)
                .await?;
            println!("site {site}: clean resync requested; it is served on HO's next sync and applied on this site's next sync");
            Ok(())
        }
    }
}

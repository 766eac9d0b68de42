//! `ho sync|run`, `pos sync|run|resync`: the workers, once or supervised.

use relaysync::config::Config;
use relaysync::error::Result;
use relaysync::protocol::SyncReason;
use relaysync::relay::Relay;
use relaysync::supervisor::supervise;

use super::{summary, PosCommand, WorkerCommand};

/// The HO worker.
pub async fn ho(cfg: &Config, command: WorkerCommand) -> Result<()> {
    match command {
        WorkerCommand::Sync { .. } => {
            let s = relaysync::ho::sync_once(cfg).await?;
            summary::ho(&s);
            match relaysync::ho::failure(cfg, &s) {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
        WorkerCommand::Run => {
            let worker = relaysync::ho::HoWorker::new(cfg, summary::ho)?;
            supervise(worker, relaysync::shutdown::on_signals()).await
        }
    }
}

/// The site worker.
pub async fn pos(cfg: &Config, command: PosCommand) -> Result<()> {
    match command {
        PosCommand::Sync { .. } => {
            let mut session = relaysync::pos::Session::open(cfg).await?;
            let s = session.sync(cfg).await?;
            summary::pos(&s);
            match session.failure(&s) {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
        PosCommand::Run => {
            let worker = relaysync::pos::PosWorker::new(cfg, summary::pos)?;
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

//! The HO worker: `setup ho`, `ho sync --once`, `ho run`.
//!
//! A sync merges what the sites sent up (through the [`Consumer`]), then
//! captures HO's changes into packets (which fans the merged rows out too),
//! serves pending full syncs, and copies the sites' acks into HO's own
//! record of what it sent.

mod keys;
mod partitions;
mod retain;
mod setup;
mod shapes;
mod workers;

use std::time::{Duration, Instant};

use tokio_postgres::Client;

pub(crate) use retain::retain;
pub use retain::Retained;
pub use setup::setup;
pub use workers::run;

use crate::apply::{Consumed, Consumer, HoMerger};
use crate::book::{self, Side};
use crate::capture::{self, batch::Bounds, snapshot::Served, Mode, Outcome, Source};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::postgres::connect;
use crate::protocol::{Lsn, Origin, PacketStatus};
use crate::relay::Relay;

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
    #[serde(serialize_with = "crate::serialize::by_status")]
    pub sent: Vec<(PacketStatus, i64)>,
    /// What retention removed.
    #[serde(rename = "retention")]
    pub retained: Retained,
    #[serde(rename = "seconds", serialize_with = "crate::serialize::seconds")]
    pub elapsed: Duration,
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
    let missing = book::migrate::missing(&sql, Side::Ho).await?;
    if !missing.is_empty() {
        return Err(Error::Setup(format!(
            "HO's relaysync schema lacks migration(s) {missing:?} of this version; run `relaysync setup ho`"
        )));
    }
    let relay = relay.with_seals(crate::seal::Seals::for_ho(ho, &sql).await?);
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
    // Partitions emptied unpublished: their tables' reload is served below.
    partitions::reload_emptied(cfg, sql, relay).await?;
    // Shapes changed with no row after them: captured below.
    shapes::announce_changes(cfg, sql, relay).await?;
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
    keys::publish_highs(cfg, sql, relay).await?;
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

//! The site worker: `setup pos`, `pos sync --once`, `pos run`.
//!
//! A sync uploads the site's upstream changes (the site's own capture),
//! then applies every packet for the site through the [`Consumer`], in
//! order, and acks them.

mod setup;
mod wipe;
mod workers;

use std::time::{Duration, Instant};

use tokio_postgres::Client;

pub(crate) use setup::check_table;
pub use setup::setup;
pub use wipe::{wipe_if_due, Wiped};
pub use workers::run;

use crate::apply::{Consumed, Consumer, SiteApplier};
use crate::book::{self, Side};
use crate::capture::{self, batch::Bounds, Mode, Source};
use crate::config::Config;
use crate::error::{DbContext, Error, Result};
use crate::postgres::connect;
use crate::protocol::{Origin, Target};
use crate::relay::Relay;

/// What one `pos sync` did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Summary {
    pub site: String,
    /// What went up to HO, when the site has upstream tables.
    pub uploaded: Option<capture::Outcome>,
    /// What was applied.
    pub applied: Consumed,
    #[serde(rename = "seconds", serialize_with = "crate::serialize::seconds")]
    pub elapsed: Duration,
}

impl Summary {
    /// Whether anything happened worth a line in a streaming worker's log.
    pub fn did_something(&self) -> bool {
        self.applied.packets > 0
            || self.applied.failed.is_some()
            || self.uploaded.as_ref().is_some_and(|u| u.changes > 0)
    }
}

/// Fetches, applies and acks every packet for this site, in order. A
/// packet that cannot be applied is in `applied.failed` (see [`failure`]).
pub async fn sync_once(cfg: &Config) -> Result<Summary> {
    let mut session = Session::open(cfg).await?;
    session.sync(cfg).await
}

/// The packet `summary` stopped at, as an error naming the retry.
pub fn failure(summary: &Summary) -> Option<Error> {
    summary.applied.failure(&SiteApplier::new(&summary.site))
}

/// A site worker's connections and position, kept across the syncs of `pos run`.
pub(crate) struct Session {
    client: Client,
    relay: Relay,
    site: String,
    /// Whether this session's writes are marked with the apply origin.
    origin_set: bool,
    consumer: Consumer<SiteApplier>,
    /// When [`Session::housekeeping`] last ran.
    housekept: Option<Instant>,
    /// Whether a full sync a wipe left pending was asked for (a wipe made
    /// while the session lasts ends it: see [`PosWorker`]).
    resync_checked: bool,
    /// Where HO's sequences stood when this site last followed them.
    key_highs: Vec<crate::relay::KeyHigh>,
}

/// How often a site session checks its expiry and purges its record.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(60);

impl Session {
    /// Connects to the relay and the site and checks both are set up.
    pub(crate) async fn open(cfg: &Config) -> Result<Session> {
        let pos = cfg.pos()?;
        let relay = Relay::connect(&cfg.relay()?.url)
            .await?
            .with_reader(cfg.relay()?.read_url.as_ref().map(|u| u.expose()))
            .await;
        relay.require_site(&pos.site).await?;
        let client = connect("pos", &pos.url).await?;
        let set_up = book::migrate::is_set_up(&client, Side::Site).await?
            && book::site::owner(&client).await?.as_ref() == Some(&pos.site);
        if !set_up {
            return Err(Error::Setup(format!(
                "this database is not set up for site '{}'; run `relaysync setup pos` first",
                pos.site
            )));
        }
        // Once the site's database is known to be set up: a signing site
        // keeps its chain numbers there.
        let relay = relay.with_seals(crate::seal::Seals::for_pos(pos).await?);
        Ok(Session {
            client,
            relay,
            site: pos.site.clone(),
            origin_set: false,
            consumer: Consumer::new(
                SiteApplier::new(&pos.site).with_policies(cfg.schema_policies()),
            ),
            housekept: None,
            resync_checked: false,
            key_highs: Vec::new(),
        })
    }

    /// Uploads, fetches, applies and acks, as `pos sync --once` does.
    pub(crate) async fn sync(&mut self, cfg: &Config) -> Result<Summary> {
        self.sync_with(cfg, true).await
    }

    /// [`Session::sync`]; without `upload` when an [`UpStreamer`] streams
    /// the upstream tables beside it.
    async fn sync_with(&mut self, cfg: &Config, upload: bool) -> Result<Summary> {
        let started = Instant::now();
        if !self.resync_checked {
            wipe::request_resync(&self.client, &self.relay, &self.site).await?;
            self.resync_checked = true;
        }
        let uploaded = if cfg.upstream.is_empty() {
            None
        } else if upload {
            Some(self.upload(cfg).await?)
        } else {
            self.mark_origin().await?;
            None
        };
        let applied = self.consumer.consume(&self.client, &self.relay).await?;
        self.follow_key_highs().await?;
        self.housekeeping(cfg).await?;
        Ok(Summary {
            site: self.site.clone(),
            uploaded,
            applied,
            elapsed: started.elapsed(),
        })
    }

    /// Moves this site's sequences past where HO's stand (when they moved):
    /// a key the site makes is then none HO used, even for rows of other
    /// sites this site does not hold.
    async fn follow_key_highs(&mut self) -> Result<()> {
        let highs = self.relay.key_highs().await?;
        if highs == self.key_highs {
            return Ok(());
        }
        crate::apply::sequence::follow(&self.client, &highs)
            .await
            .ctx(|| "moving this site's sequences past HO's".into())?;
        self.key_highs = highs;
        Ok(())
    }

    /// Now and then: an expired site asks to come back with a full sync,
    /// and the record of received packets is purged like the relay.
    async fn housekeeping(&mut self, cfg: &Config) -> Result<()> {
        if self
            .housekept
            .is_some_and(|t| t.elapsed() < HOUSEKEEPING_EVERY)
        {
            return Ok(());
        }
        if self.relay.is_expired(&self.site).await? {
            tracing::warn!(site = %self.site, "this site was expired; asking for a full sync");
            self.relay.rejoin(&self.site).await?;
        }
        book::site::purge_received(&self.client, cfg.keep_acked()?).await?;
        self.housekept = Some(Instant::now());
        Ok(())
    }

    /// Lets acks wait up to `every` to go to the relay together (a
    /// streaming worker: see [`Consumer::set_ack_every`]).
    fn batch_acks(&mut self, every: Duration) {
        self.consumer.set_ack_every(every);
    }

    /// Sends the acks this session holds back.
    async fn send_acks(&mut self) -> Result<()> {
        self.consumer.send_acks(&self.client, &self.relay).await
    }

    /// When the acks this session holds back are due, if any.
    fn acks_due_at(&self) -> Option<Instant> {
        self.consumer.acks_due_at()
    }

    /// Sends this site's new upstream changes to the relay.
    async fn upload(&mut self, cfg: &Config) -> Result<capture::Outcome> {
        let client = &self.client;
        let outcome = capture::capture(
            client,
            &self.relay,
            &up_source(cfg, client).await?,
            &cfg.upstream_routes(),
            Bounds::from(&cfg.packet),
            Mode::Once,
            crate::shutdown::never(),
        )
        .await?;
        self.mark_origin().await?;
        Ok(outcome)
    }

    /// Marks what this session applies so this site's capture skips it.
    async fn mark_origin(&mut self) -> Result<()> {
        if !self.origin_set {
            crate::apply::use_origin(&self.client, crate::APPLY_ORIGIN, "relaysync setup pos")
                .await?;
            self.origin_set = true;
        }
        Ok(())
    }
}

/// Where this site's upstream changes come from: its slot, skipping what
/// its applier wrote (that came from HO: never send it back).
async fn up_source(cfg: &Config, client: &Client) -> Result<Source> {
    let pos = cfg.pos()?;
    Ok(Source {
        url: pos.url.clone(),
        slot: pos.slot.clone(),
        publication: pos.publication.clone(),
        origin: Origin::Site(pos.site.clone()),
        skip_origin: Some(crate::apply::origin_name(client, crate::APPLY_ORIGIN).await?),
        targets: Some(vec![Target::Ho.to_string()]),
    })
}

//! What differs between the site's apply and HO's merge, behind one enum:
//! the consumer calls these, each side answers for itself.

use tokio_postgres::Client;

use super::merge::HoMerger;
use super::site::SiteApplier;
use super::stage::Stages;
use crate::config::UpstreamConfig;
use crate::error::Result;
use crate::packet::Part;
use crate::protocol::Direction;
use crate::relay::{Ack, PacketInfo};

/// A part the applier could not apply: the database refused it, or the
/// applier did (with the message that names the fix).
#[derive(Debug)]
pub(super) enum PartError {
    Db(tokio_postgres::Error),
    Refused(String),
}

impl From<tokio_postgres::Error> for PartError {
    fn from(e: tokio_postgres::Error) -> PartError {
        PartError::Db(e)
    }
}

/// Who applies packets, and how.
pub enum Applier {
    /// A site applying HO's down packets as a replica.
    Site(SiteApplier),
    /// HO merging the sites' up packets with each table's policy.
    Ho(HoMerger),
}

impl Applier {
    /// The site `site`'s applier.
    pub fn site(site: &str) -> Applier {
        Applier::Site(SiteApplier::new(site))
    }

    /// HO's merger of the `upstream` tables.
    pub fn ho(upstream: &[UpstreamConfig]) -> Applier {
        Applier::Ho(HoMerger::new(upstream))
    }

    /// The packets this applier takes.
    pub(super) fn direction(&self) -> Direction {
        match self {
            Applier::Site(_) => Direction::Down,
            Applier::Ho(_) => Direction::Up,
        }
    }

    /// The target packets name it by: the site code, or `ho`.
    pub(super) fn target(&self) -> &str {
        match self {
            Applier::Site(s) => s.site(),
            Applier::Ho(_) => "ho",
        }
    }

    /// Where a failure happened, for its message: `site s1`, `HO`.
    pub(super) fn place(&self) -> String {
        match self {
            Applier::Site(s) => format!("site {}", s.site()),
            Applier::Ho(_) => "HO".into(),
        }
    }

    /// The command that retries a failed packet.
    pub(super) fn retry(&self) -> &'static str {
        match self {
            Applier::Site(_) => "relaysync pos sync --once",
            Applier::Ho(_) => "relaysync ho sync --once",
        }
    }

    /// Crash points: in the middle of a transaction, and after its commit.
    pub(super) fn crash_points(&self) -> (&'static str, &'static str) {
        match self {
            Applier::Site(_) => ("pos_mid_apply", "pos_after_commit"),
            Applier::Ho(_) => ("ho_mid_merge", "ho_after_merge_commit"),
        }
    }

    /// The last packet applied, from this side's own bookkeeping.
    pub(super) async fn position(&self, client: &Client) -> Result<i64> {
        match self {
            Applier::Site(s) => s.position(client).await,
            Applier::Ho(h) => h.position(client).await,
        }
    }

    /// Acks a crash left unsent (packets applied but not acked).
    pub(super) async fn unsent_acks(
        &self,
        client: &Client,
        relay: &crate::relay::Relay,
        applied: i64,
    ) -> Result<Vec<Ack>> {
        match self {
            Applier::Site(s) => s.unsent_acks(client).await,
            Applier::Ho(_) => Ok(relay
                .unacked(Direction::Up, "ho", applied)
                .await?
                .iter()
                .map(|p| Ack::processed(p.id, p.row_count))
                .collect()),
        }
    }

    /// A verify packet, in the open transaction: a site compares its
    /// tables with HO's hashes; Err(message) fails the packet.
    pub(super) async fn verify(
        &self,
        client: &Client,
        relay: &crate::relay::Relay,
        p: &PacketInfo,
    ) -> Result<std::result::Result<(), String>> {
        match self {
            Applier::Site(s) => Ok(crate::verify::site::check(client, relay, s.site(), p.id)
                .await?
                .map(|_| ())),
            Applier::Ho(_) => Ok(Ok(())),
        }
    }

    /// Before the first transaction of a session.
    pub(super) async fn prepare(&mut self, client: &Client) -> Result<()> {
        match self {
            Applier::Site(_) => Ok(()),
            Applier::Ho(h) => h.prepare(client).await,
        }
    }

    /// A transaction of `packets` begins.
    pub(super) fn begin(&mut self, packets: &[PacketInfo]) {
        match self {
            Applier::Site(s) => s.begin(packets),
            Applier::Ho(h) => h.begin(),
        }
    }

    /// Applies one part of packet `p`; returns the rows it carried.
    pub(super) async fn apply(
        &mut self,
        client: &Client,
        p: &PacketInfo,
        part: &Part,
        stages: &mut Stages,
    ) -> std::result::Result<u64, PartError> {
        match self {
            Applier::Site(s) => s.apply(client, p, part, stages).await,
            Applier::Ho(h) => h.apply(client, p, part, stages).await,
        }
    }

    /// Records the position (and this side's bookkeeping) and commits.
    pub(super) async fn commit(
        &mut self,
        client: &Client,
        packets: &[PacketInfo],
        acks: &[Ack],
    ) -> Result<()> {
        match self {
            Applier::Site(s) => s.commit(client, packets, acks).await,
            Applier::Ho(h) => h.commit(client, packets).await,
        }
    }

    /// Rows merged and rejected by the last committed transaction.
    pub(super) fn take_counts(&mut self) -> (u64, u64) {
        match self {
            Applier::Site(_) => (0, 0),
            Applier::Ho(h) => h.take_counts(),
        }
    }

    /// These acks reached the relay.
    pub(super) async fn acked(&mut self, client: &Client, acks: &[Ack], now: bool) -> Result<()> {
        match self {
            Applier::Site(s) => s.acked(client, acks, now).await,
            Applier::Ho(_) => Ok(()),
        }
    }

    /// Packet `packet` of `group` failed with `error`: recorded before its
    /// FAILED ack is sent.
    pub(super) async fn record_failure(
        &self,
        client: &Client,
        group: &[PacketInfo],
        packet: i64,
        error: &str,
    ) -> Result<()> {
        match self {
            Applier::Site(s) => s.record_failure(client, group, packet, error).await,
            Applier::Ho(_) => Ok(()),
        }
    }

    /// A sync that applied nothing.
    pub(super) async fn idle(&mut self, client: &Client) -> Result<()> {
        match self {
            Applier::Site(s) => s.idle(client).await,
            Applier::Ho(_) => Ok(()),
        }
    }
}

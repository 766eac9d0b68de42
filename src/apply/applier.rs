//! What differs between the site's apply and HO's merge: the consumer
//! calls an [`Applier`]; each side implements what it needs and leaves the
//! rest to the defaults, so a feature of one side is one method with a
//! default, not an empty arm at the other.

use tokio_postgres::Client;

use super::stage::Stages;
use crate::error::Result;
use crate::packet::Part;
use crate::postgres::Tx;
use crate::protocol::{Direction, Target};
use crate::relay::{Ack, PacketInfo, Relay};

/// A part the applier could not apply: the database refused it, or the
/// applier did (with the message that names the fix).
#[derive(Debug)]
pub(crate) enum PartError {
    Db(tokio_postgres::Error),
    Refused(String),
    /// The part's table changed shape at HO in a way the site does not
    /// follow by itself: the packet waits for the change.
    Held(Held),
}

/// A schema change a packet waits for: why, and the statements that make
/// the site's table like HO's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Held {
    pub message: String,
    pub sql: String,
}

/// Why a packet was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop {
    /// It failed, with this error.
    Failed(String),
    /// It waits for a schema change.
    Held(Held),
}

impl Stop {
    /// What the packet's ack says.
    pub(crate) fn error(&self) -> &str {
        match self {
            Stop::Failed(error) => error,
            Stop::Held(held) => &held.message,
        }
    }
}

impl From<String> for Stop {
    fn from(error: String) -> Stop {
        Stop::Failed(error)
    }
}

impl From<tokio_postgres::Error> for PartError {
    fn from(e: tokio_postgres::Error) -> PartError {
        PartError::Db(e)
    }
}

/// Who applies packets, and how: a site applying HO's down packets as a
/// replica ([`super::SiteApplier`]), or HO merging the sites' up packets
/// with each table's policy ([`super::HoMerger`]).
pub(crate) trait Applier {
    /// The target packets name this applier by: the site, or HO.
    fn target(&self) -> &Target;

    /// The last packet applied, from this side's own bookkeeping.
    async fn position(&self, client: &Client) -> Result<i64>;

    /// Acks a crash left unsent (packets applied but not acked).
    async fn unsent_acks(&self, client: &Client, relay: &Relay, applied: i64) -> Result<Vec<Ack>>;

    /// Applies one part of packet `p` in the open transaction; returns the
    /// rows it carried.
    async fn apply(
        &mut self,
        client: &Client,
        p: &PacketInfo,
        part: &Part,
        stages: &mut Stages,
    ) -> std::result::Result<u64, PartError>;

    /// Records the position (and this side's bookkeeping) and commits.
    async fn commit(&mut self, tx: Tx<'_>, packets: &[PacketInfo], acks: &[Ack]) -> Result<()>;

    /// Before the first transaction of a session.
    async fn prepare(&mut self, _client: &Client) -> Result<()> {
        Ok(())
    }

    /// A transaction of `packets` begins; `full_sync_rows` when they are a
    /// full sync, with its rows.
    fn begin(&mut self, _packets: &[PacketInfo], _full_sync_rows: Option<u64>) {}

    /// A full sync loaded `rows` rows of `table` in the open transaction.
    fn loaded(&mut self, _table: &str, _rows: i64) {}

    /// A verify packet, in the open transaction: compares this side's
    /// tables with HO's hashes; Err(message) fails the packet.
    async fn verify(
        &self,
        _client: &Client,
        _relay: &Relay,
        _p: &PacketInfo,
    ) -> Result<std::result::Result<(), String>> {
        Ok(Err(
            "a verify packet is for a site; this relay holds one addressed elsewhere".into(),
        ))
    }

    /// Rows merged and rejected by the last committed transaction.
    fn take_counts(&mut self) -> (u64, u64) {
        (0, 0)
    }

    /// These acks reached the relay (`now`: record it at once, else with
    /// the next transaction).
    async fn acked(&mut self, _client: &Client, _acks: &[Ack], _now: bool) -> Result<()> {
        Ok(())
    }

    /// Packet `packet` of `group` stopped (failed, or held): recorded
    /// before its ack is sent.
    async fn record_failure(
        &self,
        _client: &Client,
        _group: &[PacketInfo],
        _packet: i64,
        _stop: &Stop,
    ) -> Result<()> {
        Ok(())
    }

    /// HO approved the schema change packet `packet` holds: the next try
    /// makes it, whatever it is.
    fn approve(&mut self, _packet: i64) {}

    /// A sync that applied nothing.
    async fn idle(&mut self, _client: &Client) -> Result<()> {
        Ok(())
    }
}

/// The packets an applier for `target` takes.
pub(super) fn direction(target: &Target) -> Direction {
    match target {
        Target::Ho => Direction::Up,
        _ => Direction::Down,
    }
}

/// Where a failure happened, for its message: `site s1`, `HO`.
pub(super) fn place(target: &Target) -> String {
    match target {
        Target::Ho => "HO".into(),
        t => format!("site {t}"),
    }
}

/// The command that retries a failed packet.
pub(super) fn retry(target: &Target) -> &'static str {
    match target {
        Target::Ho => "relaysync ho sync --once",
        _ => "relaysync pos sync --once",
    }
}

/// Crash points: in the middle of a transaction, and after its commit.
pub(super) fn crash_points(target: &Target) -> (&'static str, &'static str) {
    match target {
        Target::Ho => ("ho_mid_merge", "ho_after_merge_commit"),
        _ => ("pos_mid_apply", "pos_after_commit"),
    }
}

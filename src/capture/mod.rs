//! Capture: reads a logical replication slot (pgoutput, proto v1), turns the
//! changes into packets and stores them in the relay.
//!
//! Exactly once, from HO to the relay:
//! - packets and the end LSN of the last captured transaction are committed
//!   in one relay transaction (a "group": every packet of it shares its id);
//! - only then is that LSN confirmed to the slot, so the slot never passes
//!   what the relay holds;
//! - on restart, every transaction whose commit is below the relay's LSN is
//!   skipped, whatever the slot replays.
//!
//! A large transaction is cut into several packets as it streams (memory is
//! bounded by the packet bounds); they are all in one group, which a site
//! applies in one transaction.
//!
//! While streaming, HO serves full-sync requests between transactions, once
//! everything captured is stored (`snapshot.rs` says why that order is
//! consistent).
//!
//! The files: `stream.rs` is the loop, one method per event; `position.rs`
//! its decisions, without IO; `slot.rs` the replication connection;
//! `shape.rs` describes captured tables; `batch.rs` cuts changes into
//! packets, which the relay's one writer (`relay/writer.rs`) stores.

mod bag;
pub mod batch;
pub(crate) mod catalog;
mod copy_lines;
pub(crate) mod copy_text;
mod follow;
mod key_index;
pub(crate) mod parents;

mod position;
pub(crate) mod shape;
mod slot;
pub(crate) mod snapshot;
mod stream;

use std::time::Duration;

use crate::protocol::{Lsn, Origin};

pub(crate) use stream::capture;

/// Where changes come from: a database, its slot and publication.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub(crate) url: crate::postgres::DbUrl,
    pub(crate) slot: String,
    pub(crate) publication: String,
    /// HO, or a site for upstream capture.
    pub(crate) origin: Origin,
    /// Transactions of this replication origin are skipped (what our own
    /// applier wrote: no echo).
    pub(crate) skip_origin: Option<String>,
    /// The sites every packet is for; None: every registered site.
    pub(crate) targets: Option<Vec<String>>,
}

/// How long to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Up to the WAL position current at start, then return.
    Once,
    /// Until shutdown; what is pending is stored every `linger` between
    /// transactions.
    Stream { linger: Duration },
}

/// The `linger` of the streaming workers (HO's and a site's upload).
pub(crate) const STREAM_LINGER: Duration = Duration::from_millis(20);

/// What one capture run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub transactions: u64,
    pub changes: u64,
    pub packets: u64,
    pub rows: u64,
    pub bytes: u64,
    pub skipped_transactions: u64,
    /// What the relay holds and the slot is confirmed to.
    #[serde(serialize_with = "crate::serialize::display")]
    pub confirmed_lsn: Lsn,
}

impl Default for Outcome {
    fn default() -> Outcome {
        Outcome {
            transactions: 0,
            changes: 0,
            packets: 0,
            rows: 0,
            bytes: 0,
            skipped_transactions: 0,
            confirmed_lsn: Lsn::from(0),
        }
    }
}

//! Apply: the one consumer of packets, for both directions. A site applies
//! HO's down packets as a replica ([`replica`]); HO merges the sites' up
//! packets with each table's policy ([`merge`]). Everything else — the
//! order, one transaction per group (or per run of groups) with the
//! position recorded in it, acks after the commit, a failing packet that
//! stops the stream, acks re-sent after a crash — is written once, in
//! [`consumer`], and what differs is held by an [`Applier`].

mod applier;
mod consumer;
mod merge;
mod merge_sql;
mod origin;
mod replica;
mod sequence;
mod site;
mod stage;

pub use applier::Applier;
pub use consumer::{Consumed, Consumer};
pub use merge::{EVENT_MERGED, EVENT_REJECTED};
pub use origin::{ensure_origin, origin_name, use_origin};
pub use replica::EVENT_MERGED_HERE;

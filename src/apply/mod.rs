//! Apply: the one consumer of packets, for both directions. A site applies
//! HO's down packets as a replica ([`replica`]); HO merges the sites' up
//! packets with each table's policy ([`merge`]). Everything else — the
//! order, one transaction per group (or per run of groups) with the
//! position recorded in it, acks after the commit, a failing packet that
//! stops the stream, acks re-sent after a crash — is written once, in
//! [`consumer`]; what each packet kind does, in [`kinds`]; and what
//! differs between the sides is an [`applier::Applier`].

mod applier;
mod consumer;
mod kinds;
mod merge;
mod merge_sql;
mod origin;
mod replica;
mod schema;
pub(crate) mod sequence;
mod site;
mod stage;

pub use consumer::Consumed;
pub(crate) use consumer::Consumer;
pub(crate) use merge::HoMerger;
pub(crate) use origin::{ensure_origin, origin_name, use_origin};
pub(crate) use site::SiteApplier;

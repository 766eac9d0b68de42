//! The bookkeeping relaysync keeps in HO's and each site's own database,
//! schema `relaysync`: positions, HO's record of the packets it sent and a
//! site's of those it received, each table's last full sync, the event
//! log, HO's rejects. This module owns those tables, as `relay/` owns the
//! relay's: their migrations ([`migrate`]) and every statement on them;
//! nothing else spells their SQL.

pub mod audit;
pub(crate) mod chains;
pub mod events;
pub(crate) mod ho;
pub(crate) mod migrate;
pub mod records;
pub(crate) mod site;

pub use migrate::Side;

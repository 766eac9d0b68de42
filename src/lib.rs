//! relaysync keeps a head-office PostgreSQL database and many site databases
//! in sync through a relay database: HO changes are read from logical
//! replication, routed per site, stored as Arrow packets in the relay, and
//! applied at each site atomically, with acknowledgements back to HO.
//!
//! The stages follow the data: [`capture`] (decoding [`pgoutput`]) → [`route`] → [`packet`] →
//! [`relay`] → [`apply`]; [`ho`] and [`pos`] are the two workers.

pub(crate) mod apply;
pub mod book;
pub mod capture;
pub(crate) mod checks;
pub mod config;
pub mod console;
pub mod doctor;
pub mod error;
mod failpoint;
pub(crate) mod health;
pub mod ho;
pub mod packet;
pub mod pgoutput;
pub mod pos;
pub mod postgres;
pub mod progress;
pub mod protocol;
pub mod relay;
pub(crate) mod route;
pub mod seal;
mod serialize;
pub mod service;
pub mod shutdown;
pub(crate) mod supervisor;
pub mod telemetry;
pub(crate) mod verify;

pub use error::{Error, Result};
pub use supervisor::Running;

/// What the integration tests reach beyond the commands: built with the
/// `failpoints` feature (the tests' build) only.
#[cfg(feature = "failpoints")]
#[doc(hidden)]
pub mod testing {
    pub use crate::relay::writer::Writer;
}

/// The replication origin (with `_<database>` appended: origins are per
/// server) of what a site's applier writes: the site's own capture skips it,
/// so nothing echoes back up.
pub const APPLY_ORIGIN: &str = "relaysync_apply";
/// The replication origin (with `_<database>` appended) of what HO's applier
/// merges from the sites: HO's capture sends it down marked with this name,
/// and the sites log it.
pub const MERGE_ORIGIN: &str = "relaysync_up";

pub use error::chain as error_chain;

//! relaysync keeps a head-office PostgreSQL database and many site databases
//! in sync through a relay database: HO changes are read from logical
//! replication, routed per site, stored as Arrow packets in the relay, and
//! applied at each site atomically, with acknowledgements back to HO.
//!
//! The stages follow the data: [`capture`] → [`route`] → [`packet`] →
//! [`relay`] → [`apply`]; [`ho`] and [`pos`] are the two workers.

pub mod apply;
pub mod capture;
pub mod config;
pub mod error;
mod failpoint;
pub mod ho;
pub mod packet;
pub mod pos;
pub mod postgres;
pub mod progress;
pub mod relay;
pub mod route;
pub mod shutdown;
pub mod status;

pub use error::{Error, Result};

/// The replication origin (with `_<database>` appended: origins are per
/// server) of what a site's applier writes: the site's own capture skips it,
/// so nothing echoes back up.
pub const APPLY_ORIGIN: &str = "relaysync_apply";
/// The replication origin (with `_<database>` appended) of what HO's applier
/// merges from the sites: HO's capture sends it down marked with this name,
/// and the sites log it.
pub const MERGE_ORIGIN: &str = "relaysync_up";

/// An error and its causes on one line: `what: why: deeper why`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}

//! The operations operators run, as typed calls that return serializable
//! views: each site's status and a site's tables, HO's sent data and a
//! site's received data, the event log, verify results, and the requests
//! (Sync Selective, Sync All, resync, verify, repair), the schema changes
//! sites hold. The command line
//! prints the views as text or `--json`; a web console calls the same
//! functions. No SQL here: the views come from `relay/` and `book/`.

mod console;
mod keys;
mod records;
mod requests;
mod schema;
mod status;
mod sync;

use std::time::Duration;

pub use console::{
    audit, last_success_ago, packet_detail, record_action, synchronization, Audit, Synchronization,
};
pub use keys::{record_site_key, revoke_site_key, KeyRecorded};
pub use records::{events, received, sent, Events, Packets};
pub use requests::{push, repair, resync, sites, verify, Repairs, Requested, Sites};
pub use schema::{
    apply_held, approve_held, held_at_sites, held_here, HeldAtSites, HeldHere, SchemaApplied,
};
pub use status::{
    site_detail, stall_after, status, verify_results, SiteDetail, Status, VerifyResults,
};
pub use sync::SyncReport;

use crate::error::{Error, Result};
use crate::protocol::PacketStatus;

/// A `--since` (or a page's period): `1h`, `1d`, `7d`; the error names the
/// spelling.
pub fn parse_since(text: &str) -> Result<Duration> {
    humantime::parse_duration(text)
        .map_err(|e| Error::Config(format!("--since {text}: {e}; write e.g. 1h, 1d or 7d")))
}

/// A `--status` filter: UPLOADED, PROCESSED, FAILED or HELD, in any case.
pub fn parse_status(text: &str) -> Result<PacketStatus> {
    text.to_uppercase().parse().map_err(|_| {
        Error::Config(format!(
            "--status {text}: write UPLOADED, PROCESSED, FAILED or HELD"
        ))
    })
}

pub use crate::doctor::{run as doctor, Report};
pub use crate::serialize::format_time;

//! The operations operators run, as typed calls that return serializable
//! views: each site's status and a site's tables, HO's sent data and a
//! site's received data, the event log, verify results, and the requests
//! (Sync Selective, Sync All, resync, verify, repair). The command line
//! prints the views as text or `--json`; a web console calls the same
//! functions. No SQL here: the views come from `relay/` and `book/`.

mod records;
mod requests;
mod status;
mod sync;

use std::time::{Duration, SystemTime};

pub use records::{events, received, sent, Events, Packets};
pub use requests::{push, repair, resync, verify, Repairs, Requested, Sites};
pub use status::{site_detail, status, verify_results, SiteDetail, Status, VerifyResults};
pub use sync::SyncReport;

use crate::error::{Error, Result};
use crate::protocol::PacketStatus;

/// A `--since` (or a page's period): `1h`, `1d`, `7d`; the error names the
/// spelling.
pub fn parse_since(text: &str) -> Result<Duration> {
    humantime::parse_duration(text)
        .map_err(|e| Error::Config(format!("--since {text}: {e}; write e.g. 1h, 1d or 7d")))
}

/// A `--status` filter: UPLOADED, PROCESSED or FAILED, in any case.
pub fn parse_status(text: &str) -> Result<PacketStatus> {
    text.to_uppercase().parse().map_err(|_| {
        Error::Config(format!(
            "--status {text}: write UPLOADED, PROCESSED or FAILED"
        ))
    })
}

/// A time as views show it: RFC 3339, UTC, seconds.
pub fn format_time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Serializes a time as [`format_time`] does.
pub(crate) fn rfc3339<S: serde::Serializer>(
    t: &SystemTime,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&format_time(*t))
}

/// Serializes a value by its `Display` form (an LSN as `0/16B3748`).
pub(crate) fn display<S: serde::Serializer, T: std::fmt::Display>(
    v: &T,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// Serializes a duration as seconds.
pub(crate) fn seconds<S: serde::Serializer>(
    d: &Duration,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Serializes counts per packet status as `{"PROCESSED": n, …}`.
pub(crate) fn by_status<S: serde::Serializer>(
    counts: &[(PacketStatus, i64)],
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_map(counts.iter().map(|(st, n)| (st.as_str(), n)))
}

/// Serializes an optional time as [`format_time`] does, or null.
pub(crate) fn rfc3339_opt<S: serde::Serializer>(
    t: &Option<SystemTime>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, s),
        None => s.serialize_none(),
    }
}

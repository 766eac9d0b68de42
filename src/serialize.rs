//! How views serialize what has no serde form of its own: times (RFC 3339,
//! UTC, seconds), durations (seconds), LSNs (their text form) and counts
//! per packet status.

use std::time::{Duration, SystemTime};

use crate::protocol::PacketStatus;

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

//! `--json`: one JSON object per command on stdout, for scripts and tests.

use std::time::SystemTime;

use relaysync::apply::Consumed;
use relaysync::{ho, pos, relay::SiteStatus};
use serde_json::{json, Value};

/// Prints `value` as one line.
pub fn print(value: &Value) {
    println!("{value}");
}

/// A time as RFC 3339 (UTC, seconds).
pub fn time(t: Option<SystemTime>) -> Value {
    t.map_or(Value::Null, |t| {
        Value::String(humantime::format_rfc3339_seconds(t).to_string())
    })
}

fn consumed(c: &Consumed) -> Value {
    json!({
        "packets": c.packets,
        "rows": c.rows,
        "merged": c.merged,
        "rejected": c.rejected,
        "acks_resent": c.acks_resent,
        "applied_through": c.applied_through,
        "failed": c.failed.as_ref().map(|(packet, error)| json!({"packet": packet, "error": error})),
    })
}

/// What `ho sync` did.
pub fn ho(s: &ho::Summary) -> Value {
    let c = &s.capture;
    json!({
        "command": "ho sync",
        "merged": consumed(&s.merged),
        "captured": {
            "transactions": c.transactions,
            "changes": c.changes,
            "packets": c.packets,
            "rows": c.rows,
            "bytes": c.bytes,
            "skipped_transactions": c.skipped_transactions,
            "confirmed_lsn": c.confirmed_lsn.to_string(),
        },
        "full_syncs": s.served.iter().map(|f| json!({
            "sites": f.sites, "tables": f.tables, "group": f.group,
            "packets": f.packets, "rows": f.rows,
        })).collect::<Vec<_>>(),
        "sent": s.sent.iter().map(|(status, n)| (status.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "retention": { "purged": s.retained.purged, "expired": s.retained.expired },
        "seconds": s.elapsed.as_secs_f64(),
    })
}

/// What `pos sync` did.
pub fn pos(s: &pos::Summary) -> Value {
    json!({
        "command": "pos sync",
        "site": s.site,
        "uploaded": s.uploaded.as_ref().map(|u| json!({
            "transactions": u.transactions,
            "changes": u.changes,
            "packets": u.packets,
            "rows": u.rows,
        })),
        "applied": consumed(&s.applied),
        "seconds": s.elapsed.as_secs_f64(),
    })
}

/// Every site's status.
pub fn status(statuses: &[SiteStatus]) -> Value {
    json!({
        "sites": statuses.iter().map(|s| json!({
            "site": s.site,
            "status": s.state,
            "applied_through": s.applied_through,
            "pending": s.pending,
            "lag_seconds": s.lag_seconds,
            "last_success": time(s.last_success),
            "error": s.error,
            "expired_at": time(s.expired_at),
        })).collect::<Vec<_>>(),
    })
}

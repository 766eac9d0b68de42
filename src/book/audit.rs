//! The console's audit log (`relaysync.console_audit`, at HO and at each
//! site): which console user asked for what, and when.

use tokio_postgres::Client;

use crate::error::{DbContext, Result};

/// One action a console user took.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    /// `YYYY-MM-DD HH:MM:SS`, in the database's time zone.
    pub at: String,
    pub user: String,
    pub action: String,
    pub detail: String,
}

/// Records that `user` took `action`.
pub(crate) async fn record(client: &Client, user: &str, action: &str, detail: &str) -> Result<()> {
    client
        .execute(
            "INSERT INTO relaysync.console_audit (by_user, action, detail) VALUES ($1, $2, $3)",
            &[&user, &action, &detail],
        )
        .await
        .ctx(|| "recording a console action in relaysync.console_audit; has `relaysync setup` run since the upgrade?".into())?;
    Ok(())
}

/// The latest `limit` entries, newest first.
pub(crate) async fn latest(client: &Client, limit: i64) -> Result<Vec<AuditEntry>> {
    let ctx = || {
        "reading relaysync.console_audit; has `relaysync setup` run since the upgrade?".to_string()
    };
    let rows = client
        .query(
            "SELECT to_char(at, 'YYYY-MM-DD HH24:MI:SS') AS at, by_user, action, detail
               FROM relaysync.console_audit ORDER BY id DESC LIMIT $1",
            &[&limit],
        )
        .await
        .ctx(ctx)?;
    rows.iter()
        .map(|r| {
            Ok(AuditEntry {
                at: r.try_get("at").ctx(ctx)?,
                user: r.try_get("by_user").ctx(ctx)?,
                action: r.try_get("action").ctx(ctx)?,
                detail: r.try_get("detail").ctx(ctx)?,
            })
        })
        .collect()
}

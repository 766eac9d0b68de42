//! What the console needs beyond the command line's views: a site's own
//! synchronization view (both directions), and the audit log of console
//! actions.

use tokio_postgres::Client;

use crate::book::audit::{self, AuditEntry};
use crate::error::Result;
use crate::relay::{Relay, TableStatus, UploadStatus};

/// A site's Synchronization page: Server → Site per table, and Site →
/// Server.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Synchronization {
    pub site: String,
    /// The worst state of its tables: Failed, Held, In progress, Not
    /// started or Success.
    pub down_state: &'static str,
    pub down: Vec<TableStatus>,
    pub up: UploadStatus,
}

/// `site`'s synchronization in both directions, read through the relay
/// (as the site's own role: row-level security shows it its own packets).
pub async fn synchronization(relay: &Relay, site: &str) -> Result<Synchronization> {
    let down = relay.table_status(site).await?;
    let rank = |s: &str| match s {
        "Failed" => 0,
        crate::relay::HELD => 1,
        "In progress" => 2,
        "Not started" => 3,
        _ => 4,
    };
    let down_state = down
        .iter()
        .map(|t| t.state)
        .min_by_key(|s| rank(s))
        .unwrap_or("Not started");
    Ok(Synchronization {
        site: site.to_string(),
        down_state,
        down,
        up: relay.upload_status(site).await?,
    })
}

/// The console's audit log, newest first.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Audit {
    pub entries: Vec<AuditEntry>,
}

/// The latest `limit` console actions recorded in `client`'s database.
pub async fn audit(client: &Client, limit: i64) -> Result<Audit> {
    Ok(Audit {
        entries: audit::latest(client, limit).await?,
    })
}

/// Records that console user `user` took `action` (e.g. `Sync Selective`)
/// with `detail` (sites and tables).
pub async fn record_action(client: &Client, user: &str, action: &str, detail: &str) -> Result<()> {
    audit::record(client, user, action, detail).await
}

/// How long ago `site`'s last successful sync was, from its own database
/// (None: never).
pub async fn last_success_ago(site_db: &Client, site: &str) -> Result<Option<std::time::Duration>> {
    crate::book::site::last_success_ago(site_db, site).await
}

/// Packet `id` with its parts and acks, from the relay (None once purged).
pub async fn packet_detail(relay: &Relay, id: i64) -> Result<Option<crate::relay::PacketDetail>> {
    relay.packet_detail(id).await
}

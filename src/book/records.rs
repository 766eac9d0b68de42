//! The packet records operators read: HO's "sent data"
//! (`relaysync.sent_packets`, statuses copied from the sites' acks) and a
//! site's "received data" (`relaysync.received_packets`).

use std::time::{Duration, SystemTime};

use tokio_postgres::Client;

use crate::error::{DbContext, Result};
use crate::protocol::{PacketKind, PacketStatus, ALL_SITES};

/// Which packets to list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only packets for this site (HO's record).
    pub site: Option<String>,
    pub status: Option<PacketStatus>,
    /// Only packets this recent.
    pub since: Option<Duration>,
}

/// One packet in a record.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PacketRecord {
    pub packet: i64,
    pub group: i64,
    pub kind: PacketKind,
    /// The sites it is for (HO's record; empty at a site).
    pub targets: Vec<String>,
    pub rows: i64,
    /// When HO wrote it (HO's record) or the site applied it.
    #[serde(serialize_with = "crate::serialize::rfc3339")]
    pub at: SystemTime,
    pub status: PacketStatus,
    pub error: Option<String>,
}

fn since_secs(f: &Filter) -> Option<f64> {
    f.since.map(|d| d.as_secs_f64())
}

/// HO's record of the packets it sent. With a site in `f`, the packets
/// naming it and the `*` packets after `first_packet` (the site's: those
/// before it joined were not for it).
pub(crate) async fn sent(ho: &Client, f: &Filter, first_packet: i64) -> Result<Vec<PacketRecord>> {
    let status = f.status.map(|s| s.as_str());
    let rows = ho
        .query(
            "SELECT packet_id, group_id, kind, targets, row_count, created_at AS at, status, error
               FROM relaysync.sent_packets
              WHERE ($1::text IS NULL OR $1 = ANY(targets) OR ($4 = ANY(targets) AND packet_id > $5))
                AND ($2::text IS NULL OR status = $2)
                AND ($3::float8 IS NULL OR created_at >= now() - make_interval(secs => $3))
              ORDER BY packet_id",
            &[&f.site, &status, &since_secs(f), &ALL_SITES, &first_packet],
        )
        .await
        .ctx(|| "reading relaysync.sent_packets at HO; has `relaysync setup ho` run?".into())?;
    rows.iter().map(record).collect()
}

/// This site's record of the packets it received.
pub(crate) async fn received(site: &Client, f: &Filter) -> Result<Vec<PacketRecord>> {
    let status = f.status.map(|s| s.as_str());
    let rows = site
        .query(
            "SELECT packet_id, group_id, kind, '{}'::text[] AS targets, row_count, applied_at AS at,
                    status, error
               FROM relaysync.received_packets
              WHERE ($1::text IS NULL OR status = $1)
                AND ($2::float8 IS NULL OR applied_at >= now() - make_interval(secs => $2))
              ORDER BY packet_id",
            &[&status, &since_secs(f)],
        )
        .await
        .ctx(|| "reading relaysync.received_packets at the site; has `relaysync setup pos` run?".into())?;
    rows.iter().map(record).collect()
}

fn record(r: &tokio_postgres::Row) -> Result<PacketRecord> {
    let get = |e| -> crate::Error {
        crate::Error::Db {
            context: "reading a packet record".into(),
            source: e,
        }
    };
    Ok(PacketRecord {
        packet: r.try_get("packet_id").map_err(get)?,
        group: r.try_get("group_id").map_err(get)?,
        kind: r.try_get("kind").map_err(get)?,
        targets: r.try_get("targets").map_err(get)?,
        rows: r.try_get("row_count").map_err(get)?,
        at: r.try_get("at").map_err(get)?,
        status: r.try_get("status").map_err(get)?,
        error: r.try_get("error").map_err(get)?,
    })
}

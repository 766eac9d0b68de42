//! Full sync: the HO worker serves the sites' full-sync requests (first
//! contact, `push`, `pos resync`) as snapshot groups.
//!
//! Why the order of packets makes this consistent while HO keeps writing:
//! 1. The HO worker is the relay's single writer, and it serves requests
//!    only when every transaction it has captured is stored: every packet
//!    before the snapshot group holds transactions that committed before the
//!    capture's position, hence before the snapshot is taken.
//! 2. The snapshot (REPEATABLE READ) sees every transaction committed before
//!    it; those committed after the capture's position and before the
//!    snapshot are captured later, into packets after the snapshot group.
//! 3. A site applies the snapshot group in one transaction (clear, load) and
//!    then those later packets in order. Replaying a change the snapshot
//!    already holds is harmless: each change sets its key to HO's row as of
//!    that commit (or deletes it), so after the last change for a key the
//!    site has HO's row, whatever it had before.

use std::collections::{BTreeMap, BTreeSet};

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio_postgres::Client;

use super::batch::{Batcher, Bounds};
use super::copy_text::parse_line;
use super::shape;
use crate::error::{DbContext, Result};
use crate::postgres::{ident, qualified, Tx};
use crate::progress::Progress;
use crate::protocol::{Lsn, Origin, PacketKind};
use crate::relay::writer::Writer;
use crate::relay::Relay;
use crate::route::Route;

/// A full sync served: which sites, which tables, how much.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Served {
    pub sites: Vec<String>,
    pub tables: Vec<String>,
    pub group: Option<i64>,
    pub packets: u64,
    pub rows: u64,
}

/// Serves every pending request. Requests for the same tables share one
/// snapshot (a `route = "all"` table is stored once for all of them).
pub async fn serve(
    sql: &Client,
    relay: &Relay,
    tables: &[(String, Route)],
    bounds: Bounds,
) -> Result<Vec<Served>> {
    let pending = relay.pending_requests().await?;
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    let configured: BTreeSet<&str> = tables.iter().map(|(n, _)| n.as_str()).collect();
    let mut by_tables: BTreeMap<Vec<String>, (Vec<i64>, BTreeSet<String>)> = BTreeMap::new();
    for r in pending {
        let wanted: Vec<String> = match r.tables {
            None => configured.iter().map(|s| s.to_string()).collect(),
            Some(t) => t
                .into_iter()
                .filter(|t| configured.contains(t.as_str()))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
        };
        let entry = by_tables.entry(wanted).or_default();
        entry.0.push(r.id);
        entry.1.insert(r.site);
    }
    let mut served = Vec::new();
    for (names, (ids, sites)) in by_tables {
        let sites: Vec<String> = sites.into_iter().collect();
        let chosen: Vec<(String, Route)> = tables
            .iter()
            .filter(|(n, _)| names.contains(n))
            .cloned()
            .collect();
        let s = snapshot(sql, relay, &chosen, &sites, &ids, bounds).await?;
        crate::telemetry::full_sync_served(&s.sites, s.rows, s.packets);
        served.push(s);
    }
    Ok(served)
}

/// Writes one snapshot group of `tables` for `sites`, and marks `requests` served.
async fn snapshot(
    sql: &Client,
    relay: &Relay,
    tables: &[(String, Route)],
    sites: &[String],
    requests: &[i64],
    bounds: Bounds,
) -> Result<Served> {
    tracing::info!(sites = ?sites, tables = tables.len(), "full sync starting");
    let snapshot = Tx::begin(
        sql,
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;
         SET LOCAL DateStyle = ISO; SET LOCAL TimeZone = 'UTC'; SET LOCAL IntervalStyle = postgres;
         SET LOCAL extra_float_digits = 3; SET LOCAL bytea_output = hex;",
    )
    .await
    .ctx(|| "starting the full-sync snapshot at HO".into())?;
    let mut writer =
        Writer::new(relay, &Origin::Ho, PacketKind::Snapshot).for_sites(sites.to_vec());
    let result = write_snapshot(&snapshot, &mut writer, tables, sites, requests, bounds).await;
    // Read only: it wrote nothing to keep.
    snapshot.rollback().await;
    match result {
        Ok(rows) => Ok(Served {
            sites: sites.to_vec(),
            tables: tables.iter().map(|(n, _)| n.clone()).collect(),
            group: writer.group(),
            packets: writer.written().packets,
            rows,
        }),
        Err(e) => {
            writer.abort().await;
            Err(e)
        }
    }
}

/// Writes the snapshot group in the open HO transaction; returns its rows.
async fn write_snapshot(
    sql: &Client,
    writer: &mut Writer<'_>,
    tables: &[(String, Route)],
    sites: &[String],
    requests: &[i64],
    bounds: Bounds,
) -> Result<u64> {
    let lsn_row = sql
        .query_one("SELECT pg_current_wal_insert_lsn() AS lsn", &[])
        .await
        .ctx(|| "reading the WAL position".into())?;
    let lsn: Lsn = lsn_row
        .try_get("lsn")
        .ctx(|| "reading the WAL position".into())?;
    let mut batcher = Batcher::new(bounds);
    writer.tx().await?;
    let mut total = 0u64;
    for (i, (name, route)) in tables.iter().enumerate() {
        let table = Table {
            rel: i as u32,
            name,
            route,
        };
        total += copy_table(sql, writer, &mut batcher, &table, sites, lsn).await?;
    }
    batcher.seal();
    for draft in batcher.take_sealed() {
        writer.write(draft.to_write()).await?;
    }
    let group = writer.group();
    writer.tx().await?.mark_served(requests, group).await?;
    writer.commit().await?;
    Ok(total)
}

/// A table of a snapshot: the relation id the batcher knows it by.
struct Table<'t> {
    rel: u32,
    name: &'t str,
    route: &'t Route,
}

/// Copies the rows of `table` for `sites` into the batcher, after a truncate
/// (the site clears its rows of the table first, in the same transaction),
/// and writes the packets they fill; returns how many rows.
async fn copy_table(
    sql: &Client,
    writer: &mut Writer<'_>,
    batcher: &mut Batcher,
    table: &Table<'_>,
    sites: &[String],
    lsn: Lsn,
) -> Result<u64> {
    let (rel, name) = (table.rel, table.name);
    let captured = shape::captured(shape::of_table(sql, name).await?, table.route)?;
    let copy = copy_query(name, &captured.shape.columns, table.route, sites);
    batcher.relation(rel, captured);
    let lsn = u64::from(lsn);
    batcher.truncate(&[rel], lsn);
    let estimate: Option<i64> = sql
        .query_one(
            "SELECT reltuples::int8 FROM pg_class WHERE oid = to_regclass($1)",
            &[&qualified(name)],
        )
        .await
        .ok()
        .and_then(|r| r.get(0));
    let mut progress = Progress::new(
        format!("full sync {name}"),
        estimate.map(|n| n.max(0) as u64),
    );
    let stream = sql
        .copy_out(&copy)
        .await
        .ctx(|| format!("reading {name} at HO"))?;
    futures_util::pin_mut!(stream);
    // Bytes of a line not yet complete; the complete lines of each chunk are
    // read in place (the values are slices of them).
    let mut pending = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.ctx(|| format!("reading {name} at HO"))?;
        pending.extend_from_slice(&chunk);
        let Some(end) = pending.iter().rposition(|&b| b == b'\n') else {
            continue;
        };
        let lines = pending.split_to(end + 1).freeze();
        let mut n = 0u64;
        for line in lines[..end].split(|&b| b == b'\n') {
            batcher.insert(rel, parse_line(&lines.slice_ref(line)), lsn);
            n += 1;
        }
        progress.add(n);
        for draft in batcher.take_sealed() {
            writer.write(draft.to_write()).await?;
        }
    }
    let rows = progress.rows();
    progress.finish();
    Ok(rows)
}

/// The COPY of a table's `columns`, only the rows of `sites` when it is
/// routed by a column.
fn copy_query(
    name: &str,
    columns: &[crate::packet::ColumnShape],
    route: &Route,
    sites: &[String],
) -> String {
    let columns = columns
        .iter()
        .map(|c| ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ");
    let filter = match route {
        Route::All => String::new(),
        Route::Column(c) => {
            // COPY takes no parameters: the site codes are quoted literals.
            let list = sites
                .iter()
                .map(|s| crate::postgres::literal(s))
                .collect::<Vec<_>>()
                .join(", ");
            format!(" WHERE {}::text = ANY(ARRAY[{list}]::text[])", ident(c))
        }
    };
    format!(
        "COPY (SELECT {columns} FROM {}{filter}) TO STDOUT",
        qualified(name)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::ColumnShape;

    fn column(name: &str) -> ColumnShape {
        ColumnShape {
            name: name.into(),
            type_oid: 25,
            type_modifier: -1,
            pg_type: "text".into(),
        }
    }

    #[test]
    fn copies_every_row_or_the_sites_rows() {
        let columns = [column("id"), column("site_code")];
        assert_eq!(
            copy_query("public.items", &columns, &Route::All, &["s1".into()]),
            format!(
                "COPY (SELECT {}, {} FROM {}) TO STDOUT",
                ident("id"),
                ident("site_code"),
                qualified("public.items")
            )
        );
        let routed = copy_query(
            "public.prices",
            &columns,
            &Route::Column("site_code".into()),
            &["s1".into(), "s'2".into()],
        );
        assert!(
            routed.ends_with(&format!(
                " WHERE {}::text = ANY(ARRAY[{}, {}]::text[])) TO STDOUT",
                ident("site_code"),
                crate::postgres::literal("s1"),
                crate::postgres::literal("s'2")
            )),
            "{routed}"
        );
    }
}

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

use tokio_postgres::Client;

use super::batch::{Batcher, Bounds, Routing};
use super::copy_lines::{read_tx, CopyLines};
use super::shape;
use crate::error::{DbContext, Result};
use crate::postgres::{ident, qualified};
use crate::progress::Progress;
use crate::protocol::{Lsn, Origin, PacketKind};
use crate::relay::writer::Writer;
use crate::relay::Relay;
use crate::route::{Route, Tree, ALL_SITES};

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
    let tree = Tree::load(sql, tables).await?;
    let mut served = Vec::new();
    for (names, (ids, sites)) in by_tables {
        let sites: Vec<String> = sites.into_iter().collect();
        let chosen: Vec<(String, Route)> = tables
            .iter()
            .filter(|(n, _)| names.contains(n))
            .cloned()
            .collect();
        let group = Group {
            tables: &chosen,
            tree: &tree,
            sites: &sites,
            requests: &ids,
            every_table: names.len() == configured.len(),
        };
        let s = snapshot(sql, relay, &group, bounds).await?;
        crate::telemetry::full_sync_served(&s.sites, s.rows, s.packets);
        served.push(s);
    }
    Ok(served)
}

/// One snapshot group: its tables (with their links), for which sites, and
/// the requests it serves.
struct Group<'g> {
    tables: &'g [(String, Route)],
    tree: &'g Tree,
    sites: &'g [String],
    requests: &'g [i64],
    /// Whether it reloads every table: the sites' chains of signed packets
    /// then start over with it.
    every_table: bool,
}

/// Writes one snapshot group, and marks its requests served.
async fn snapshot(
    sql: &Client,
    relay: &Relay,
    group: &Group<'_>,
    bounds: Bounds,
) -> Result<Served> {
    let (tables, sites) = (group.tables, group.sites);
    tracing::info!(sites = ?sites, tables = tables.len(), "full sync starting");
    let snapshot = read_tx(sql)
        .await
        .ctx(|| "starting the full-sync snapshot at HO".into())?;
    let mut writer =
        Writer::new(relay, &Origin::Ho, PacketKind::Snapshot).for_sites(sites.to_vec());
    if group.every_table {
        writer = writer.resetting(sites.to_vec());
    }
    let result = write_snapshot(&snapshot, &mut writer, group, bounds).await;
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
    group: &Group<'_>,
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
    for (i, (name, route)) in group.tables.iter().enumerate() {
        let table = Table {
            rel: i as u32,
            name,
            route,
        };
        total += copy_table(sql, writer, &mut batcher, &table, group, lsn).await?;
    }
    batcher.seal();
    for draft in batcher.take_sealed() {
        writer.write(draft.to_write()).await?;
    }
    let served = writer.group();
    writer
        .tx()
        .await?
        .mark_served(group.requests, served)
        .await?;
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
    group: &Group<'_>,
    lsn: Lsn,
) -> Result<u64> {
    let (rel, name) = (table.rel, table.name);
    let mut captured = shape::captured(shape::of_table(sql, name).await?, table.route, group.tree)?;
    let copy = copy_query(name, &captured.shape.columns, table.route, group);
    if let Route::Parent(_) = table.route {
        // The COPY adds each row's site, computed at HO through its parents.
        captured.routing = Routing::Last;
    }
    // Rows are routed here without the stream's record of parent rows.
    captured.referenced = None;
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
    let mut lines = CopyLines::open(sql, &copy, format!("reading {name} at HO")).await?;
    while let Some(tuples) = lines.next().await? {
        let n = tuples.len() as u64;
        for values in tuples {
            batcher.insert(rel, values, lsn);
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

/// The COPY of a table's `columns`, only the rows of the group's sites
/// when it is routed by a column; routed by parent, each row's site follows
/// it (the sites' rows and those of every site).
fn copy_query(
    name: &str,
    columns: &[crate::packet::ColumnShape],
    route: &Route,
    group: &Group<'_>,
) -> String {
    let mut columns = columns
        .iter()
        .map(|c| ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ");
    // COPY takes no parameters: the site codes are quoted literals.
    let list = group
        .sites
        .iter()
        .map(|s| crate::postgres::literal(s))
        .collect::<Vec<_>>()
        .join(", ");
    let filter = match route {
        Route::All => String::new(),
        Route::Column(c) => {
            format!(" WHERE {}::text = ANY(ARRAY[{list}]::text[])", ident(c))
        }
        Route::Parent(_) => {
            let site = group.tree.site_expr(name, "relaysync_t");
            columns.push_str(&format!(", {site}"));
            format!(
                " relaysync_t WHERE {site} = ANY(ARRAY[{list}, {}]::text[])",
                crate::postgres::literal(ALL_SITES)
            )
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
            ..Default::default()
        }
    }

    fn group<'g>(tree: &'g Tree, sites: &'g [String]) -> Group<'g> {
        Group {
            tables: &[],
            tree,
            sites,
            requests: &[],
            every_table: true,
        }
    }

    #[test]
    fn copies_every_row_or_the_sites_rows() {
        let columns = [column("id"), column("site_code")];
        let tree = Tree::default();
        let s1 = ["s1".to_string()];
        assert_eq!(
            copy_query("public.items", &columns, &Route::All, &group(&tree, &s1)),
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
            &group(&tree, &["s1".into(), "s'2".into()]),
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

//! HO's side of verify: lock, capture, hash, send (see the module doc).

use std::collections::{BTreeMap, BTreeSet};

use tokio_postgres::Client;

use super::{hash_query, Bucket, Hashed, TEXT_FORMS};
use crate::book::events;
use crate::error::{DbContext, Error, Result};
use crate::postgres::{ident, literal, literal_array, qualified};
use crate::protocol::{Lsn, Origin, PacketKind};
use crate::relay::writer::Writer;
use crate::relay::{Expected, PublishedTable, Relay};
use crate::route::{Route, Tree, ALL_SITES};

/// Verify requests being served: HO's verified tables locked in SHARE mode
/// in an open REPEATABLE READ transaction of its own connection.
pub(crate) struct Locked {
    client: Client,
    /// The WAL position once locked: the capture must pass it first.
    lsn: Lsn,
    requests: Vec<i64>,
    sites: Vec<String>,
    tables: Vec<(PublishedTable, Route)>,
    /// The links of the tables routed by parent.
    tree: Tree,
}

/// A verify packet sent.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sent {
    pub packet: Option<i64>,
    pub sites: Vec<String>,
    pub tables: Vec<String>,
}

/// Locks the tables of the pending verify requests (None when there are
/// none); call before the capture, then [`Locked::send`] after it.
pub(crate) async fn lock(ho_url: &str, relay: &Relay) -> Result<Option<Locked>> {
    let pending = relay.pending_verifies().await?;
    if pending.is_empty() {
        return Ok(None);
    }
    let mut names: BTreeSet<String> = BTreeSet::new();
    let published = relay.published_tables().await?;
    for r in &pending {
        match &r.tables {
            None => names.extend(published.iter().map(|t| t.name.clone())),
            Some(t) => names.extend(t.iter().cloned()),
        }
    }
    let mut routes = Vec::new();
    for t in &published {
        routes.push((
            t.name.clone(),
            t.route.parse::<Route>().map_err(Error::Config)?,
        ));
    }
    let mut tables = Vec::new();
    for (t, (_, route)) in published.into_iter().zip(&routes) {
        if names.contains(&t.name) {
            tables.push((t, route.clone()));
        }
    }
    let active: BTreeSet<String> = relay.active_sites().await?.into_iter().collect();
    let sites: BTreeSet<String> = pending
        .iter()
        .filter(|r| active.contains(&r.site))
        .map(|r| r.site.clone())
        .collect();
    let client = crate::postgres::connect("ho", ho_url).await?;
    let tree = Tree::load(&client, &routes).await?;
    // A table routed by parent is hashed per site through its parents:
    // they are locked too.
    let mut locked: BTreeSet<String> = BTreeSet::new();
    for (t, _) in &tables {
        let mut at = Some(t.name.as_str());
        while let Some(name) = at {
            locked.insert(qualified(name));
            at = tree.link(name).map(|l| l.parent.as_str());
        }
    }
    let list = locked.into_iter().collect::<Vec<_>>().join(", ");
    take_locks(&client, &list).await?;
    // Under the locks: every write to the tables is in the WAL before this.
    let lsn: Lsn = client
        .query_one("SELECT pg_current_wal_insert_lsn() AS lsn", &[])
        .await
        .and_then(|r| r.try_get("lsn"))
        .ctx(|| "reading the WAL position".into())?;
    Ok(Some(Locked {
        client,
        lsn,
        requests: pending.iter().map(|r| r.id).collect(),
        sites: sites.into_iter().collect(),
        tables,
        tree,
    }))
}

/// Opens the REPEATABLE READ transaction and locks `list` in SHARE mode.
/// Each try waits at most 200 ms, less than PostgreSQL's deadlock_timeout,
/// so a writer holding one of the tables and waiting for another is never
/// chosen as a deadlock victim: this side gives up, rolls back, and tries
/// again (for up to a minute).
async fn take_locks(client: &Client, list: &str) -> Result<()> {
    let mut begin = format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ; SET LOCAL lock_timeout = '200ms'; {TEXT_FORMS}"
    );
    if !list.is_empty() {
        begin.push_str(&format!(" LOCK TABLE {list} IN SHARE MODE;"));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let Err(e) = client.batch_execute(&begin).await else {
            return Ok(());
        };
        let _ = client.batch_execute("ROLLBACK").await;
        let busy = e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE);
        if !busy || std::time::Instant::now() > deadline {
            return Err(e).ctx(|| {
                "locking the verified tables at HO in SHARE mode (the HO role needs UPDATE on them, or run the HO worker as their owner)".into()
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

impl Locked {
    /// Where the capture must have reached before [`Locked::send`].
    pub(crate) fn lsn(&self) -> Lsn {
        self.lsn
    }

    /// Hashes the tables in this snapshot and stores the verify packet with
    /// the hashes; commits, which lets HO's writers go on.
    pub(crate) async fn send(self, relay: &Relay) -> Result<Sent> {
        let result = self.write(relay).await;
        let _ = self.client.batch_execute("COMMIT").await;
        result
    }

    async fn write(&self, relay: &Relay) -> Result<Sent> {
        let lsn = self.lsn;
        let mut expected = Vec::new();
        for (t, route) in &self.tables {
            expected.extend(self.hash(t, route).await?);
        }
        let sent = Sent {
            packet: None,
            sites: self.sites.clone(),
            tables: self.tables.iter().map(|(t, _)| t.name.clone()).collect(),
        };
        // Through the one writer, in one relay transaction: the packet
        // (for the verified sites), HO's hashes for it and the requests
        // it serves.
        let mut writer =
            Writer::new(relay, &Origin::Ho, PacketKind::Verify).for_sites(self.sites.clone());
        let packet = writer.write_control(lsn).await?;
        let expected = if packet.is_some() { &expected[..] } else { &[] };
        writer
            .tx()
            .await?
            .store_expected(packet.unwrap_or(0), expected, &self.requests)
            .await?;
        writer.commit().await?;
        tracing::info!(sites = ?self.sites, tables = sent.tables.len(), "verify sent");
        Ok(Sent { packet, ..sent })
    }

    /// HO's buckets of one table per site (`*` when every site holds it
    /// whole); a site with none of its rows still gets an (empty) entry.
    async fn hash(&self, t: &PublishedTable, route: &Route) -> Result<Vec<Expected>> {
        let columns: Vec<String> = t.columns.iter().map(|(c, _)| c.clone()).collect();
        let hashed = Hashed {
            name: &t.name,
            columns: &columns,
            keys: &t.key_columns,
        };
        let list = literal_array(self.sites.iter().map(|s| literal(s)));
        let (group, filter, sites) = match (route, self.tree.root(&t.name)) {
            (Route::All, _) | (Route::Parent(_), Route::All) => {
                (literal(ALL_SITES), String::new(), vec![ALL_SITES.into()])
            }
            (Route::Column(c), _) => (
                format!("{}::text", ident(c)),
                format!("WHERE {}::text = ANY({list}::text[])", ident(c)),
                self.sites.clone(),
            ),
            (Route::Parent(_), _) => {
                let site = self.tree.site_expr(&t.name, &qualified(&t.name));
                (
                    site.clone(),
                    format!("WHERE {site} = ANY({list}::text[])"),
                    self.sites.clone(),
                )
            }
        };
        let rows = self
            .client
            .query(&hash_query(&hashed, &group, &filter), &[])
            .await
            .ctx(|| format!("hashing {} at HO", t.name))?;
        let mut by_site: BTreeMap<String, Vec<Bucket>> =
            sites.into_iter().map(|s| (s, Vec::new())).collect();
        for r in &rows {
            let site: String = r.get("site");
            by_site.entry(site).or_default().push(Bucket {
                bucket: r.get("bucket"),
                rows: r.get("rows"),
                hash: r.get("hash"),
            });
        }
        Ok(by_site
            .into_iter()
            .map(|(site, mut buckets)| {
                // Names the table even when the site has none of its rows.
                buckets.push(Bucket {
                    bucket: -1,
                    rows: 0,
                    hash: "0".into(),
                });
                Expected {
                    site,
                    table_name: t.name.clone(),
                    buckets,
                }
            })
            .collect())
    }
}

/// Logs in HO's event log the drift the sites found since the last call;
/// returns how many.
pub(crate) async fn log_drift(sql: &Client, relay: &Relay) -> Result<u64> {
    let drift = relay.take_unlogged_drift().await?;
    for d in &drift {
        events::log(sql, &d.site, &d.table_name, events::DRIFT, &d.detail)
            .await
            .ctx(|| "writing relaysync.event_log".into())?;
    }
    Ok(drift.len() as u64)
}

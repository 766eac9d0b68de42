//! The site worker: `setup pos`, `pos sync --once`, `pos run`.
//!
//! A site applies packets in id order. A group (the packets HO stored in one
//! relay transaction) is applied in one site transaction together with the
//! new `applied_through`, so a crash at any point leaves either all of it or
//! none of it; a site that is behind takes several whole groups in one
//! transaction. Acks go to the relay after the commit; the ones a crash
//! interrupted are sent again on the next run.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_postgres::Client;

use crate::apply::{apply_part, part_failure, Stages};
use crate::config::Config;
use crate::error::{db_message, DbContext, Error, Result};
use crate::packet::read_part;
use crate::postgres::{connect, literal, literal_array, qualified};
use crate::relay::migrate::{self, Target};
use crate::relay::{Ack, PacketInfo, Relay};

/// Checks the site's tables against HO's and creates the site's bookkeeping schema.
pub async fn setup(cfg: &Config) -> Result<Vec<String>> {
    let pos = cfg.pos()?;
    let relay = Relay::connect(&cfg.relay()?.url).await?;
    relay.require_site(&pos.site).await?;
    let mut client = connect("pos", &pos.url).await?;
    let published = relay
        .client
        .query(
            "SELECT name, key_columns, columns::text FROM relay.tables",
            &[],
        )
        .await
        .ctx(|| "reading relay.tables".into())?;
    let published: HashMap<String, (Vec<String>, String)> = published
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    for t in &cfg.tables {
        let Some((key, columns)) = published.get(&t.name) else {
            return Err(Error::Setup(format!(
                "HO has not published table {} to the relay; run `relaysync setup ho` with the same [[tables]]",
                t.name
            )));
        };
        let columns: Vec<serde_json::Value> = serde_json::from_str(columns).unwrap_or_default();
        check_table(&client, &t.name, key, &columns).await?;
    }
    let existing: Option<String> = if migrate::is_set_up(&client, Target::Pos).await? {
        client
            .query_opt("SELECT site FROM relaysync.site", &[])
            .await
            .ctx(|| "reading relaysync.site".into())?
            .map(|r| r.get(0))
    } else {
        None
    };
    if let Some(other) = existing.filter(|s| s != &pos.site) {
        return Err(Error::Setup(format!(
            "this database belongs to site '{other}'; give site '{}' its own database (or fix [pos] site)",
            pos.site
        )));
    }
    let upstream = check_upstream(&client, cfg).await?;
    migrate::migrate(&mut client, Target::Pos).await?;
    client
        .execute(
            "INSERT INTO relaysync.site (site) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&pos.site],
        )
        .await
        .ctx(|| "writing relaysync.site".into())?;
    let mut said = vec![format!(
        "site {}: {} table(s) checked, bookkeeping schema relaysync ready",
        pos.site,
        cfg.tables.len()
    )];
    if let Some(slot_exists) = upstream {
        prepare_upstream(&client, cfg, slot_exists).await?;
        said.push(format!(
            "upstream capture ready: publication {} and slot {} for {} table(s)",
            pos.publication,
            pos.slot,
            cfg.upstream.len()
        ));
    }
    Ok(said)
}

/// Checks the site for upstream capture (wal_level, free slot, keys) before
/// anything is created; returns whether the slot exists, or None without
/// upstream tables.
async fn check_upstream(client: &Client, cfg: &Config) -> Result<Option<bool>> {
    if cfg.upstream.is_empty() {
        return Ok(None);
    }
    let pos = cfg.pos()?;
    crate::postgres::require_logical(client, &format!("site {}", pos.site)).await?;
    let row = client
        .query_one(
            "SELECT (SELECT database::text FROM pg_replication_slots WHERE slot_name = $1),
                    (SELECT count(*)::int FROM pg_replication_slots) < current_setting('max_replication_slots')::int,
                    current_database()::text",
            &[&pos.slot],
        )
        .await
        .ctx(|| "reading replication slots".into())?;
    let (slot_db, free, db): (Option<String>, bool, String) = (row.get(0), row.get(1), row.get(2));
    if let Some(other) = slot_db.as_ref().filter(|d| **d != db) {
        return Err(Error::Setup(format!(
            "replication slot {} belongs to database {other} on this server; set [pos] slot to a free name",
            pos.slot
        )));
    }
    let exists = slot_db.is_some();
    if !exists && !free {
        return Err(Error::Setup(format!(
            "no free replication slot at site {} for its upstream tables; raise max_replication_slots and restart",
            pos.site
        )));
    }
    for u in &cfg.upstream {
        let oid = crate::capture::catalog::table_oid(client, &u.name)
            .await?
            .ok_or_else(|| {
                Error::Setup(format!(
                "upstream table {} does not exist at the site; create it or fix [[upstream]] name",
                u.name
            ))
            })?;
        let identity: i8 = client
            .query_one(
                "SELECT relreplident::\"char\" FROM pg_class WHERE oid = $1",
                &[&oid],
            )
            .await
            .ctx(|| format!("reading the replica identity of {}", u.name))?
            .get(0);
        if crate::capture::catalog::key_columns(client, oid)
            .await?
            .is_empty()
            && identity as u8 != b'f'
        {
            return Err(Error::Setup(format!(
                "upstream table {} has no primary key at the site; add one (ALTER TABLE {} ADD PRIMARY KEY (…))",
                u.name,
                qualified(&u.name)
            )));
        }
    }
    Ok(Some(exists))
}

/// Creates the publication, slot and replication origin of upstream capture.
async fn prepare_upstream(client: &Client, cfg: &Config, slot_exists: bool) -> Result<()> {
    let pos = cfg.pos()?;
    let tables: Vec<String> = cfg.upstream.iter().map(|u| u.name.clone()).collect();
    crate::postgres::ensure_publication(client, &pos.publication, &tables).await?;
    if !slot_exists {
        client
            .execute(
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                &[&pos.slot],
            )
            .await
            .ctx(|| format!("creating replication slot {}", pos.slot))?;
    }
    crate::ho::ensure_origin(client, crate::APPLY_ORIGIN).await?;
    Ok(())
}

/// Checks that a site table has HO's columns, types and a unique key.
async fn check_table(
    client: &Client,
    name: &str,
    key: &[String],
    columns: &[serde_json::Value],
) -> Result<()> {
    let q = qualified(name);
    let oid = crate::capture::catalog::table_oid(client, name).await?.ok_or_else(|| {
        Error::Setup(format!(
            "table {name} does not exist at the site; create it as at HO (pg_dump --schema-only -t {name} at HO, then psql at the site)"
        ))
    })?;
    let site_cols: HashMap<String, String> = crate::capture::catalog::column_types(client, oid)
        .await?
        .into_iter()
        .collect();
    for c in columns {
        let (Some(n), Some(t)) = (c["name"].as_str(), c["type"].as_str()) else {
            continue;
        };
        match site_cols.get(n) {
            None => {
                return Err(Error::Setup(format!(
                    "table {name} at the site lacks column {n}; run ALTER TABLE {q} ADD COLUMN {} {t}",
                    crate::postgres::ident(n)
                )))
            }
            Some(st) if st != t => {
                return Err(Error::Setup(format!(
                    "column {n} of {name} is {st} at the site but {t} at HO; run ALTER TABLE {q} ALTER COLUMN {} TYPE {t}",
                    crate::postgres::ident(n)
                )))
            }
            _ => {}
        }
    }
    if !key.is_empty() {
        let unique: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = $1 AND i.indisunique
                   AND i.indpred IS NULL AND i.indexprs IS NULL
                   AND (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a
                         WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey::int2[]))
                       = (SELECT array_agg(k ORDER BY k) FROM unnest($2::text[]) k))",
                &[&oid, &key],
            )
            .await
            .ctx(|| format!("reading the indexes of {name}"))?
            .get(0);
        if !unique {
            let cols = key
                .iter()
                .map(|k| crate::postgres::ident(k))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Error::Setup(format!(
                "table {name} at the site has no unique index on its key ({cols}); run ALTER TABLE {q} ADD PRIMARY KEY ({cols})"
            )));
        }
    }
    Ok(())
}

/// What one `pos sync` did.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub site: String,
    /// What went up to HO, when the site has upstream tables.
    pub uploaded: Option<crate::capture::Outcome>,
    pub packets: u64,
    pub rows: u64,
    pub acks_resent: u64,
    /// The packet the site's stream stopped at, and why.
    pub failed: Option<(i64, String)>,
    pub applied_through: i64,
    pub elapsed: Duration,
}

async fn open(cfg: &Config) -> Result<(Client, Relay, String)> {
    let pos = cfg.pos()?;
    let relay = Relay::connect(&cfg.relay()?.url).await?;
    relay.require_site(&pos.site).await?;
    let client = connect("pos", &pos.url).await?;
    let set_up = migrate::is_set_up(&client, Target::Pos).await?
        && client
            .query_opt("SELECT 1 FROM relaysync.site WHERE site = $1", &[&pos.site])
            .await
            .ctx(|| "reading relaysync.site".into())?
            .is_some();
    if !set_up {
        return Err(Error::Setup(format!(
            "this database is not set up for site '{}'; run `relaysync setup pos` first",
            pos.site
        )));
    }
    Ok((client, relay, pos.site.clone()))
}

/// Sends the acks a crash left unsent.
async fn resend_acks(client: &Client, relay: &Relay, site: &str) -> Result<u64> {
    let rows = client
        .query(
            "SELECT packet_id, status, row_count, error FROM relaysync.received_packets
              WHERE NOT acked ORDER BY packet_id",
            &[],
        )
        .await
        .ctx(|| "reading relaysync.received_packets".into())?;
    let acks: Vec<Ack> = rows
        .iter()
        .map(|r| Ack {
            packet_id: r.get(0),
            status: if r.get::<_, &str>(1) == "PROCESSED" {
                "PROCESSED"
            } else {
                "FAILED"
            },
            rows: r.get(2),
            error: r.get(3),
        })
        .collect();
    send_acks(client, relay, site, &acks).await?;
    Ok(acks.len() as u64)
}

async fn send_acks(client: &Client, relay: &Relay, site: &str, acks: &[Ack]) -> Result<()> {
    if acks.is_empty() {
        return Ok(());
    }
    relay.ack(site, acks).await?;
    let ids: Vec<i64> = acks.iter().map(|a| a.packet_id).collect();
    client
        .execute(
            "UPDATE relaysync.received_packets SET acked = true WHERE packet_id = ANY($1)",
            &[&ids],
        )
        .await
        .ctx(|| "writing relaysync.received_packets".into())?;
    Ok(())
}

/// Consecutive delta groups applied in one site transaction when a site is
/// behind, up to this many rows: each group stays whole, and one commit, one
/// ack and one round of bookkeeping serve them all.
const BATCH_ROWS: i64 = 100_000;
/// Compressed bytes of parts fetched from the relay in one query.
const FETCH_BYTES: i64 = 8 << 20;

/// How many of `groups` (at least one) to apply in one transaction.
fn batch_len(groups: &[Vec<PacketInfo>]) -> usize {
    let mut rows = 0;
    let mut n = 0;
    for g in groups {
        if g.iter().any(|p| p.kind != "delta") {
            break;
        }
        rows += g.iter().map(|p| p.row_count).sum::<i64>();
        if n > 0 && rows > BATCH_ROWS {
            break;
        }
        n += 1;
    }
    n.max(1)
}

/// Applies whole groups (`packets`, in order) in one transaction, marking
/// `acked` as acked at the relay; on failure returns the failing packet and
/// error. The caller tells `stages` whether the transaction committed.
async fn apply_packets(
    client: &Client,
    relay: &Relay,
    site: &str,
    packets: &[PacketInfo],
    acked: &[i64],
    stages: &mut Stages,
) -> Result<std::result::Result<Vec<Ack>, (i64, String)>> {
    // One round trip; a failed SET leaves the transaction aborted.
    if let Err(e) = client
        .batch_execute("BEGIN; SET LOCAL session_replication_role = replica")
        .await
    {
        client
            .batch_execute("ROLLBACK")
            .await
            .ctx(|| "site: ROLLBACK".into())?;
        return Ok(Err((packets[0].id, format!(
            "cannot set session_replication_role ({}); connect the site worker as a superuser or GRANT SET ON PARAMETER session_replication_role TO its role",
            db_message(&e)
        ))));
    }
    let mut acks = Vec::with_capacity(packets.len());
    let mut failure = None;
    let snapshot = packets.iter().any(|p| p.kind == "snapshot");
    // Per table: rows loaded by a full sync in this group.
    let mut full: HashMap<String, i64> = HashMap::new();
    let mut progress = snapshot.then(|| {
        let total: i64 = packets.iter().map(|p| p.row_count).sum();
        crate::progress::Progress::new(format!("full sync at {site}"), Some(total.max(0) as u64))
    });
    // The parts of packets up to `fetched_to`, fetched together (at most
    // FETCH_BYTES of them, or one packet's).
    let mut fetched: std::collections::VecDeque<(i64, crate::relay::StoredPart)> =
        Default::default();
    let mut fetched_to = 0usize;
    'packets: for (i, p) in packets.iter().enumerate() {
        if i == fetched_to {
            let mut bytes = 0;
            let mut ids = Vec::new();
            for q in &packets[i..] {
                if !ids.is_empty() && bytes + q.byte_count > FETCH_BYTES {
                    break;
                }
                bytes += q.byte_count;
                ids.push(q.id);
            }
            fetched_to = i + ids.len();
            fetched = relay.parts_of(&ids, site).await?.into();
        }
        let mut rows = 0u64;
        while fetched.front().is_some_and(|(id, _)| *id == p.id) {
            let (_, stored) = fetched.pop_front().expect("front checked");
            let part = match read_part(&stored.arrow_ipc) {
                Ok(part) => part,
                Err(e) => {
                    failure = Some((
                        p.id,
                        format!(
                            "part {} of packet {} is not readable: {e}; the relay copy is damaged",
                            stored.table_name, p.id
                        ),
                    ));
                    break 'packets;
                }
            };
            if part.table != stored.table_name {
                failure = Some((
                    p.id,
                    format!(
                        "part says table {} but the relay row says {}",
                        part.table, stored.table_name
                    ),
                ));
                break 'packets;
            }
            drop(stored);
            if p.kind == "snapshot" {
                let loaded = part.rows() - usize::from(part.has_truncate());
                *full.entry(part.table.clone()).or_default() += loaded as i64;
            }
            match apply_part(client, site, &part, stages).await {
                Ok(n) => {
                    rows += n;
                    if let Some(pr) = progress.as_mut() {
                        pr.add(n);
                    }
                }
                Err(e) => {
                    let error = part_failure(stages, "site: applying", &part.table, e)?;
                    failure = Some((p.id, error));
                    break 'packets;
                }
            }
        }
        acks.push(Ack {
            packet_id: p.id,
            status: "PROCESSED",
            rows: rows as i64,
            error: None,
        });
        if i == 0 {
            crate::failpoint::hit("pos_mid_apply");
        }
    }
    if let Some(f) = failure {
        client
            .batch_execute("ROLLBACK")
            .await
            .ctx(|| "site: ROLLBACK".into())?;
        return Ok(Err(f));
    }
    for (table, rows) in &full {
        client
            .execute(
                "INSERT INTO relaysync.table_sync (table_name, last_full_sync, rows, packet_group)
                 VALUES ($1, now(), $2, $3)
                 ON CONFLICT (table_name) DO UPDATE SET last_full_sync = now(), rows = EXCLUDED.rows,
                   packet_group = EXCLUDED.packet_group",
                &[table, rows, &packets[0].group_id],
            )
            .await
            .ctx(|| "writing relaysync.table_sync".into())?;
    }
    // The bookkeeping and the commit in one round trip (numbers and kinds
    // only, so literals are safe).
    let last = packets.last().map_or(0, |p| p.id);
    let bookkeeping = format!(
        "WITH received AS (
           INSERT INTO relaysync.received_packets (packet_id, group_id, kind, row_count, status)
           SELECT u.id, u.group_id, u.kind, u.row_count, 'PROCESSED'
             FROM unnest({ids}::int8[], {groups}::int8[], {kinds}::text[], {rows}::int8[])
                  AS u (id, group_id, kind, row_count)
           ON CONFLICT (packet_id) DO UPDATE SET status = 'PROCESSED', error = NULL,
             row_count = EXCLUDED.row_count, applied_at = now(), acked = false
         ), acked AS (
           UPDATE relaysync.received_packets SET acked = true WHERE packet_id = ANY({acked}::int8[])
         )
         UPDATE relaysync.site SET applied_through = {last}, last_sync_at = now(), last_success_at = now()
          WHERE site = {site};
         COMMIT",
        ids = literal_array(packets.iter().map(|p| p.id.to_string())),
        groups = literal_array(packets.iter().map(|p| p.group_id.to_string())),
        kinds = literal_array(packets.iter().map(|p| literal(&p.kind))),
        rows = literal_array(acks.iter().map(|a| a.rows.to_string())),
        acked = literal_array(acked.iter().map(|id| id.to_string())),
        site = literal(site),
    );
    if let Err(e) = client.batch_execute(&bookkeeping).await {
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(e).ctx(|| "site: recording the applied packets".into());
    }
    if let Some(pr) = progress {
        pr.finish();
    }
    crate::failpoint::hit("pos_after_commit");
    Ok(Ok(acks))
}

/// Fetches, applies and acks every packet for this site, in order.
pub async fn sync_once(cfg: &Config) -> Result<Summary> {
    let mut session = Session::open(cfg).await?;
    session.sync(cfg).await
}

/// A site worker's connections and position, kept across the syncs of `pos run`.
pub struct Session {
    client: Client,
    relay: Relay,
    site: String,
    /// Whether this session's writes are marked with the apply origin.
    origin_set: bool,
    /// The last packet applied: read from the site by the first sync.
    applied: Option<i64>,
    /// Packets acked at the relay and not yet marked so at the site; the next
    /// transaction marks them (a crash first sends them again, which the relay
    /// takes as once).
    acked: Vec<i64>,
    /// When an idle sync last recorded itself.
    idle_recorded: Option<Instant>,
    stages: Stages,
}

impl Session {
    /// Connects to the relay and the site and checks both are set up.
    pub async fn open(cfg: &Config) -> Result<Session> {
        let (client, relay, site) = open(cfg).await?;
        Ok(Session {
            client,
            relay,
            site,
            origin_set: false,
            applied: None,
            acked: Vec::new(),
            idle_recorded: None,
            stages: Stages::kept(),
        })
    }

    /// Uploads, fetches, applies and acks, as `pos sync --once` does.
    pub async fn sync(&mut self, cfg: &Config) -> Result<Summary> {
        let started = Instant::now();
        let site = self.site.clone();
        let mut summary = Summary {
            site: site.clone(),
            ..Summary::default()
        };
        if !cfg.upstream.is_empty() {
            summary.uploaded = Some(self.upload(cfg).await?);
        }
        let (client, relay) = (&self.client, &self.relay);
        let mut applied = match self.applied {
            Some(a) => a,
            None => {
                summary.acks_resent = resend_acks(client, relay, &site).await?;
                client
                    .query_one(
                        "SELECT applied_through FROM relaysync.site WHERE site = $1",
                        &[&site],
                    )
                    .await
                    .ctx(|| "reading relaysync.site".into())?
                    .get(0)
            }
        };
        self.applied = Some(applied);
        let mut last_log = Instant::now();
        loop {
            let groups = relay.next_groups("down", &site, applied).await?;
            if groups.is_empty() {
                break;
            }
            let mut i = 0;
            // After a batch of groups fails, its groups go one by one, so the
            // ones before the failing packet commit and it is named exactly.
            let mut single_until = 0;
            let mut retried = None;
            while i < groups.len() {
                let n = if i < single_until {
                    1
                } else {
                    batch_len(&groups[i..])
                };
                let packets: Vec<PacketInfo> = groups[i..i + n].concat();
                let applied_now = apply_packets(
                    client,
                    relay,
                    &site,
                    &packets,
                    &self.acked,
                    &mut self.stages,
                )
                .await;
                match &applied_now {
                    Ok(Ok(_)) => self.stages.committed(),
                    _ => self.stages.rolled_back(),
                }
                match applied_now? {
                    Ok(acks) => {
                        self.acked.clear();
                        applied = packets.last().map_or(applied, |p| p.id);
                        self.applied = Some(applied);
                        summary.packets += acks.len() as u64;
                        summary.rows += acks.iter().map(|a| a.rows as u64).sum::<u64>();
                        relay.ack(&site, &acks).await?;
                        self.acked.extend(acks.iter().map(|a| a.packet_id));
                        i += n;
                    }
                    Err(failure) => {
                        // A kept staging table may predate a change the DBA
                        // made to its target: retry with new ones first.
                        let had_kept = self.stages.reset(client).await;
                        if n > 1 {
                            single_until = i + n;
                            continue;
                        }
                        if had_kept && retried != Some(i) {
                            retried = Some(i);
                            continue;
                        }
                        let (packet, error) = failure;
                        record_failure(client, relay, &site, &groups[i], packet, &error).await?;
                        summary.failed = Some((packet, error));
                        summary.applied_through = applied;
                        summary.elapsed = started.elapsed();
                        return Ok(summary);
                    }
                }
                if last_log.elapsed() > Duration::from_secs(5) {
                    last_log = Instant::now();
                    tracing::info!(site = %site, packets = summary.packets, rows = summary.rows, "applying");
                }
            }
        }
        if summary.packets == 0
            && self
                .idle_recorded
                .is_none_or(|t| t.elapsed() > Duration::from_secs(60))
        {
            // A sync that found nothing records itself at most once a minute:
            // a streaming worker syncs many times a second.
            client
                .execute(
                    "UPDATE relaysync.site SET last_sync_at = now(), last_success_at = now()
                      WHERE site = $1 AND (last_sync_at IS NULL OR last_sync_at < now() - interval '1 minute')",
                    &[&site],
                )
                .await
                .ctx(|| "writing relaysync.site".into())?;
            self.idle_recorded = Some(Instant::now());
        }
        summary.applied_through = applied;
        summary.elapsed = started.elapsed();
        Ok(summary)
    }

    /// Sends this site's new upstream changes to the relay.
    async fn upload(&mut self, cfg: &Config) -> Result<crate::capture::Outcome> {
        let client = &self.client;
        let pos = cfg.pos()?;
        let source = crate::capture::Source {
            url: pos.url.clone(),
            slot: pos.slot.clone(),
            publication: pos.publication.clone(),
            origin: self.site.clone(),
            // What this site's applier wrote came from HO: never send it back.
            skip_origin: Some(crate::ho::origin_name(client, crate::APPLY_ORIGIN).await?),
            targets: Some(vec!["ho".into()]),
        };
        let bounds = crate::capture::batch::Bounds {
            max_rows: cfg.packet.max_rows,
            max_bytes: cfg.packet.max_bytes,
        };
        let outcome = crate::capture::capture(
            client,
            &self.relay,
            &source,
            &cfg.upstream_routes(),
            bounds,
            crate::capture::Mode::Once,
            crate::shutdown::never(),
        )
        .await?;
        // Mark what this session applies so this site's capture skips it.
        if !self.origin_set {
            crate::ho::use_origin(client, crate::APPLY_ORIGIN, "pos").await?;
            self.origin_set = true;
        }
        Ok(outcome)
    }
}

async fn record_failure(
    client: &Client,
    relay: &Relay,
    site: &str,
    group: &[PacketInfo],
    packet: i64,
    error: &str,
) -> Result<()> {
    tracing::error!(site = %site, packet, error = %error, "packet failed; this site's stream stops here until it applies");
    let p = group.iter().find(|p| p.id == packet).unwrap_or(&group[0]);
    client
        .execute(
            "INSERT INTO relaysync.received_packets (packet_id, group_id, kind, row_count, status, error)
             VALUES ($1, $2, $3, 0, 'FAILED', $4)
             ON CONFLICT (packet_id) DO UPDATE SET status = 'FAILED', error = EXCLUDED.error,
               applied_at = now(), acked = false",
            &[&packet, &p.group_id, &p.kind, &error],
        )
        .await
        .ctx(|| "writing relaysync.received_packets".into())?;
    client
        .execute(
            "UPDATE relaysync.site SET last_sync_at = now() WHERE site = $1",
            &[&site],
        )
        .await
        .ctx(|| "writing relaysync.site".into())?;
    send_acks(
        client,
        relay,
        site,
        &[Ack {
            packet_id: packet,
            status: "FAILED",
            rows: 0,
            error: Some(error.to_string()),
        }],
    )
    .await
}

/// Runs until shutdown: a sync every `interval`; at zero, a sync whenever HO
/// announces new packets (LISTEN relaysync_packets), and every few seconds.
pub async fn run(cfg: &Config, mut shutdown: watch::Receiver<bool>) -> Result<()> {
    let interval = cfg.interval()?;
    let relay_url = cfg.relay()?.url.clone();
    // Streaming: HO's NOTIFY wakes the worker. The LISTEN connection is
    // opened again whenever it is gone (the relay restarted, say); until
    // then the worker syncs every few seconds.
    let mut wake: Option<crate::postgres::Listener> = None;
    let pause = if interval.is_zero() {
        Duration::from_secs(5)
    } else {
        interval
    };
    let mut session: Option<Session> = None;
    loop {
        if interval.is_zero() && wake.as_ref().is_none_or(|w| w.is_closed()) {
            wake = match crate::postgres::listen(&relay_url, "relaysync_packets").await {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(error = %crate::error_chain(&e), "cannot LISTEN for new packets; polling");
                    None
                }
            };
        }
        let result = match session.as_mut() {
            Some(s) => s.sync(cfg).await,
            None => match Session::open(cfg).await {
                Ok(s) => session.insert(s).sync(cfg).await,
                Err(e) => Err(e),
            },
        };
        if result.is_err() {
            // Reconnect next time: a connection may be what failed.
            session = None;
        }
        match result {
            Ok(s)
                if s.packets > 0
                    || s.failed.is_some()
                    || s.uploaded.as_ref().is_some_and(|u| u.changes > 0)
                    || !interval.is_zero() =>
            {
                print_summary(&s)
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %crate::error_chain(&e), "pos sync failed; retrying"),
        }
        tokio::select! {
            _ = crate::shutdown::requested(&mut shutdown) => return Ok(()),
            _ = tokio::time::sleep(pause) => {}
            _ = async { match wake.as_mut() { Some(w) => { w.recv().await; } None => std::future::pending().await } } => {}
        }
        if let Some(w) = wake.as_mut() {
            while w.try_recv().is_ok() {}
        }
    }
}

/// Prints what a sync did.
pub fn print_summary(s: &Summary) {
    if let Some(up) = &s.uploaded {
        println!(
            "pos {}: uploaded {} transaction(s), {} change(s) in {} packet(s) for HO",
            s.site, up.transactions, up.changes, up.packets
        );
    }
    println!(
        "pos {}: applied {} packet(s), {} row(s) in {:.2}s; applied through packet {}",
        s.site,
        s.packets,
        s.rows,
        s.elapsed.as_secs_f64(),
        s.applied_through
    );
    if s.acks_resent > 0 {
        println!(
            "pos {}: re-sent {} ack(s) an earlier run left unsent",
            s.site, s.acks_resent
        );
    }
    if let Some((packet, error)) = &s.failed {
        println!("pos {}: packet {packet} FAILED: {error}", s.site);
        println!("pos {}: status Failed; fix the cause and run `relaysync pos sync --once` again to retry", s.site);
    }
}

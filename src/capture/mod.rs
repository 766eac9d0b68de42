//! Capture: reads a logical replication slot (pgoutput, proto v1), turns the
//! changes into packets and stores them in the relay.
//!
//! Exactly once, from HO to the relay:
//! - packets and the end LSN of the last captured transaction are committed
//!   in one relay transaction (a "group": every packet of it shares its id);
//! - only then is that LSN confirmed to the slot, so the slot never passes
//!   what the relay holds;
//! - on restart, every transaction whose commit is below the relay's LSN is
//!   skipped, whatever the slot replays.
//!
//! A large transaction is cut into several packets as it streams (memory is
//! bounded by the packet bounds); they are all in one group, which a site
//! applies in one transaction.

pub mod batch;
pub mod catalog;
pub mod copy_text;
pub mod pgoutput;
pub mod snapshot;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, ReplicationEvent, TlsConfig};
use tokio::sync::watch;
use tokio_postgres::config::Host;
use tokio_postgres::Client;

use self::batch::{Batcher, Bounds, Captured, PacketDraft};
use self::pgoutput::{Message, Relation};
use crate::error::{DbContext, Error, Result};
use crate::packet::{encode_part, ColumnShape, TableShape};
use crate::postgres::{format_lsn, parse_lsn};
use crate::relay::{NewPacket, Relay};
use crate::route::{Route, ALL_SITES};

/// Where changes come from: a database, its slot and publication.
#[derive(Debug, Clone)]
pub struct Source {
    pub url: String,
    pub slot: String,
    pub publication: String,
    /// `ho`, or a site code for upstream capture.
    pub origin: String,
    /// Transactions of this replication origin are skipped (what our own
    /// applier wrote: no echo).
    pub skip_origin: Option<String>,
    /// The sites every packet is for; None: every registered site.
    pub targets: Option<Vec<String>>,
}

/// How long to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Up to the WAL position current at start, then return.
    Once,
    /// Until shutdown; what is pending is stored every `linger` between
    /// transactions.
    Stream { linger: Duration },
}

/// What one capture run did.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub transactions: u64,
    pub changes: u64,
    pub packets: u64,
    pub rows: u64,
    pub bytes: u64,
    pub skipped_transactions: u64,
    pub confirmed_lsn: u64,
}

/// Writes sealed packets into the relay, one relay transaction per group.
pub(crate) struct Writer<'a> {
    relay: &'a Relay,
    origin: String,
    slot: String,
    kind: &'static str,
    /// The sites a `*` part is for: every registered site, or these.
    only_sites: Option<Vec<String>>,
    open: bool,
    group: Option<i64>,
    sites: Vec<String>,
    outcome: Outcome,
    /// When the last group was committed.
    last_flush: Instant,
}

impl<'a> Writer<'a> {
    /// A writer of `kind` packets (`delta` or `snapshot`) from `origin`.
    pub(crate) fn new(
        relay: &'a Relay,
        origin: &str,
        slot: &str,
        kind: &'static str,
    ) -> Writer<'a> {
        Writer {
            relay,
            origin: origin.to_string(),
            slot: slot.to_string(),
            kind,
            only_sites: None,
            open: false,
            group: None,
            sites: Vec::new(),
            outcome: Outcome::default(),
            last_flush: Instant::now(),
        }
    }

    /// Packets go to these sites only (a snapshot for the sites that asked).
    pub(crate) fn for_sites(mut self, sites: Vec<String>) -> Self {
        self.only_sites = Some(sites);
        self
    }

    /// The group being written, once its first packet is.
    pub(crate) fn group(&self) -> Option<i64> {
        self.group
    }

    /// What was written so far.
    pub(crate) fn outcome(&self) -> &Outcome {
        &self.outcome
    }

    /// Opens the relay transaction if needed.
    pub(crate) async fn begin(&mut self) -> Result<()> {
        if !self.open {
            self.relay.exec("BEGIN").await?;
            self.open = true;
            self.group = None;
            self.sites = match &self.only_sites {
                Some(s) => s.clone(),
                None => self.relay.sites().await?,
            };
        }
        Ok(())
    }

    pub(crate) async fn write(&mut self, draft: PacketDraft) -> Result<()> {
        self.begin().await?;
        let mut targets: Vec<String> = Vec::new();
        let mut parts = Vec::with_capacity(draft.parts.len());
        let mut rows = 0i64;
        let mut bytes = 0i64;
        for part in &draft.parts {
            if part.changes.is_empty() {
                continue;
            }
            if part.target == ALL_SITES {
                targets.extend(self.sites.iter().cloned());
            } else if self.sites.contains(&part.target) {
                targets.push(part.target.clone());
            } else {
                tracing::warn!(
                    table = %part.shape.name,
                    site = %part.target,
                    rows = part.changes.len(),
                    "rows routed to a site that is not registered are not stored; `relaysync site add` it, and its first sync loads them"
                );
                continue;
            }
            let ipc = encode_part(&part.shape, &part.changes)
                .map_err(|source| Error::Packet { packet: 0, source })?;
            rows += part.changes.len() as i64;
            bytes += ipc.len() as i64;
            parts.push((part, ipc));
        }
        targets.sort();
        targets.dedup();
        if parts.is_empty() || targets.is_empty() {
            return Ok(());
        }
        let id = self
            .relay
            .insert_packet(&NewPacket {
                direction: if self.origin == "ho" { "down" } else { "up" },
                origin: &self.origin,
                kind: self.kind,
                group_id: self.group,
                lsn_from: draft.lsn_from,
                lsn_to: draft.lsn_to,
                targets: &targets,
                row_count: rows,
                byte_count: bytes,
            })
            .await?;
        self.group.get_or_insert(id);
        for (seq, (part, ipc)) in parts.iter().enumerate() {
            self.relay
                .insert_part(
                    id,
                    seq as i32,
                    &part.shape.name,
                    &part.target,
                    part.changes.len() as i64,
                    ipc,
                )
                .await?;
        }
        tracing::debug!(packet = id, rows, bytes, "packet written");
        self.outcome.packets += 1;
        self.outcome.rows += rows as u64;
        self.outcome.bytes += bytes as u64;
        crate::failpoint::hit("capture_mid_group");
        Ok(())
    }

    /// Commits the open group (if any) with the capture position `lsn`.
    async fn commit(&mut self, lsn: u64) -> Result<()> {
        self.begin().await?;
        let result = self
            .relay
            .set_capture_lsn(&self.origin, &self.slot, lsn)
            .await;
        match result {
            Ok(()) => self.commit_group().await,
            Err(e) => {
                self.abort().await;
                Err(e)
            }
        }
    }

    /// Commits the open group, waking the site workers.
    pub(crate) async fn commit_group(&mut self) -> Result<()> {
        if !self.open {
            return Ok(());
        }
        self.open = false;
        let result = if self.group.is_some() {
            self.relay.exec("NOTIFY relaysync_packets; COMMIT").await
        } else {
            self.relay.exec("COMMIT").await
        };
        if result.is_err() {
            let _ = self.relay.exec("ROLLBACK").await;
        }
        result
    }

    /// Marks full-sync requests as served by `group`, in the open transaction.
    pub(crate) async fn relay_mark_served(
        &mut self,
        requests: &[i64],
        group: Option<i64>,
    ) -> Result<()> {
        self.begin().await?;
        self.relay.mark_served(requests, group).await
    }

    pub(crate) async fn abort(&mut self) {
        if self.open {
            let _ = self.relay.exec("ROLLBACK").await;
            self.open = false;
        }
    }
}

/// Builds the shape of a captured relation from its Relation message and the catalog.
async fn describe(sql: &Client, rel: &Relation, name: &str) -> Result<TableShape> {
    let types: HashMap<String, String> = catalog::column_types(sql, rel.id)
        .await?
        .into_iter()
        .collect();
    let columns: Vec<ColumnShape> = rel
        .columns
        .iter()
        .map(|c| ColumnShape {
            name: c.name.clone(),
            type_oid: c.type_oid,
            type_modifier: c.type_modifier,
            pg_type: types.get(&c.name).cloned().unwrap_or_else(|| "text".into()),
        })
        .collect();
    catalog::shape(sql, rel.id, name, columns).await
}

fn replication_config(source: &Source, start: u64) -> Result<ReplicationConfig> {
    let cfg = tokio_postgres::Config::from_str(&source.url)
        .map_err(|e| Error::Config(format!("url is not a PostgreSQL URL ({e})")))?;
    let host = match cfg.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let password = cfg
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    let user = cfg.get_user().unwrap_or("postgres").to_string();
    let db = cfg.get_dbname().unwrap_or(&user).to_string();
    Ok(ReplicationConfig::new(
        host,
        user,
        password,
        db,
        source.slot.clone(),
        source.publication.clone(),
    )
    .with_port(cfg.get_ports().first().copied().unwrap_or(5432))
    .with_tls(TlsConfig::disabled())
    .with_start_lsn(Lsn::from_u64(start))
    .with_ack_lsn(Lsn::from_u64(start))
    // Pin the text forms the packet encoder parses.
    .with_options("-c DateStyle=ISO -c TimeZone=UTC -c IntervalStyle=postgres -c extra_float_digits=3 -c bytea_output=hex")
    .with_status_interval(Duration::from_millis(200))
    .with_wakeup_interval(Duration::from_secs(1))
    .with_buffer_size(4096)
    .with_application_name(format!("relaysync-{}", source.origin)))
}

/// The slot's confirmed position; errors name the fix when it is missing or busy.
async fn slot_position(sql: &Client, slot: &str, origin: &str) -> Result<u64> {
    let setup = if origin == "ho" { "ho" } else { "pos" };
    let row = sql
        .query_opt(
            "SELECT confirmed_flush_lsn::text, active_pid FROM pg_replication_slots
              WHERE slot_name = $1 AND database = current_database()",
            &[&slot],
        )
        .await
        .ctx(|| "reading pg_replication_slots".into())?
        .ok_or_else(|| {
            Error::Setup(format!(
                "replication slot '{slot}' does not exist in this database; run `relaysync setup {setup}`"
            ))
        })?;
    if let Some(pid) = row.get::<_, Option<i32>>(1) {
        return Err(Error::Setup(format!(
            "replication slot '{slot}' is in use by process {pid}; is another relaysync worker running? stop it first"
        )));
    }
    Ok(row
        .get::<_, Option<&str>>(0)
        .and_then(parse_lsn)
        .unwrap_or(0))
}

/// Captures changes of `tables` from `source` into the relay.
pub async fn capture(
    sql: &Client,
    relay: &Relay,
    source: &Source,
    tables: &[(String, Route)],
    bounds: Bounds,
    mode: Mode,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Outcome> {
    let relay_lsn = relay.capture_lsn(&source.origin).await?;
    let slot_lsn = slot_position(sql, &source.slot, &source.origin).await?;
    let stop = match mode {
        Mode::Once => {
            let row = sql
                .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
                .await
                .ctx(|| "reading the current WAL position".into())?;
            let stop = parse_lsn(row.get(0)).unwrap_or(0);
            tracing::debug!(slot = %format_lsn(slot_lsn), relay = %format_lsn(relay_lsn), stop = %format_lsn(stop), "capture bounds");
            if slot_lsn.max(relay_lsn) >= stop {
                return Ok(Outcome {
                    confirmed_lsn: slot_lsn.max(relay_lsn),
                    ..Outcome::default()
                });
            }
            Some(stop)
        }
        Mode::Stream { .. } => None,
    };
    let linger = match mode {
        Mode::Stream { linger } => linger,
        Mode::Once => Duration::from_secs(3600),
    };
    let mut tick = tokio::time::interval(linger);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let start = relay_lsn;
    tracing::info!(origin = %source.origin, slot = %source.slot, from = %format_lsn(start.max(slot_lsn)),
        to = %stop.map(format_lsn).unwrap_or_else(|| "streaming".into()), "capture starting");
    let mut repl = ReplicationClient::connect(replication_config(source, start)?)
        .await
        .map_err(|e| replication_error(&source.origin, e))?;

    let routes: HashMap<&str, &Route> = tables.iter().map(|(n, r)| (n.as_str(), r)).collect();
    let mut batcher = Batcher::new(bounds);
    let mut writer = Writer::new(relay, &source.origin, &source.slot, "delta");
    if let Some(targets) = &source.targets {
        writer = writer.for_sites(targets.clone());
    }
    let mut in_txn = false;
    let mut skip = false;
    let mut txn_lsn = 0u64;
    let mut last_end = relay_lsn;
    let mut stored_end = relay_lsn;
    let mut last_progress = Instant::now();

    let mut last_requests_check = Instant::now();
    let mut last_idle_confirm = Instant::now();
    let result: Result<()> = async {
        loop {
            // While streaming, serve full-sync requests between transactions,
            // once everything captured is stored (see snapshot.rs for why).
            if stop.is_none()
                && source.origin == "ho"
                && !in_txn
                && last_requests_check.elapsed() >= Duration::from_secs(1)
            {
                last_requests_check = Instant::now();
                if last_end > stored_end {
                    flush(&mut batcher, &mut writer, last_end).await?;
                    stored_end = last_end;
                    confirm(&repl, stored_end);
                }
                for s in snapshot::serve(sql, relay, tables, bounds).await? {
                    tracing::info!(sites = ?s.sites, rows = s.rows, packets = s.packets, "full sync served");
                }
            }
            // One ticker, not a timer per event: the stream carries up to a
            // message per row.
            let event = tokio::select! {
                biased;
                _ = crate::shutdown::requested(&mut shutdown), if !in_txn => break,
                ev = repl.recv() => ev,
                _ = tick.tick(), if stop.is_none() => {
                    // Store what is pending between transactions.
                    if !in_txn && last_end > stored_end {
                        flush(&mut batcher, &mut writer, last_end).await?;
                        stored_end = last_end;
                        confirm(&repl, stored_end);
                    }
                    continue;
                }
            };
            let event = match event {
                Err(e) => return Err(replication_error(&source.origin, e)),
                Ok(None) => {
                    // The server closed it (a restart, a terminated walsender):
                    // worth a retry, unlike a setup error.
                    return Err(Error::StreamEnded { role: if source.origin == "ho" { "ho" } else { "pos" } });
                }
                Ok(Some(ev)) => ev,
            };
            match event {
                ReplicationEvent::Begin { final_lsn, .. } => {
                    if stop.is_some_and(|s| final_lsn.as_u64() >= s) {
                        break;
                    }
                    in_txn = true;
                    txn_lsn = final_lsn.as_u64();
                    skip = txn_lsn < relay_lsn;
                    batcher.set_origin(None);
                }
                ReplicationEvent::XLogData { data, .. } => {
                    let message = pgoutput::decode(data)?;
                    match message {
                        Message::Relation(rel) => {
                            let name = format!("{}.{}", rel.namespace, rel.name);
                            if let Some(route) = routes.get(name.as_str()) {
                                let shape = describe(sql, &rel, &name).await?;
                                let route_column = match route {
                                    Route::All => None,
                                    Route::Column(c) => Some(shape.columns.iter().position(|x| &x.name == c).ok_or_else(|| {
                                        Error::Setup(format!("routing column {c} is not a column of {name}; fix route in [[tables]]"))
                                    })?),
                                };
                                batcher.relation(rel.id, Captured { shape: Arc::new(shape), route: (*route).clone(), route_column });
                            }
                        }
                        Message::Origin { name, .. } => {
                            if source.skip_origin.as_deref() == Some(name.as_str()) {
                                skip = true;
                            } else if name.starts_with(crate::MERGE_ORIGIN) {
                                // HO's merges: marked so the sites log them.
                                batcher.set_origin(Some(crate::MERGE_ORIGIN.into()));
                            } else {
                                batcher.set_origin(Some(name.into()));
                            }
                        }
                        _ if skip => {}
                        Message::Insert { relation, new } => {
                            writer.outcome.changes += 1;
                            batcher.insert(relation, new, txn_lsn)
                        }
                        Message::Update { relation, old, new } => {
                            writer.outcome.changes += 1;
                            batcher.update(relation, old, new, txn_lsn)
                        }
                        Message::Delete { relation, old, .. } => {
                            writer.outcome.changes += 1;
                            batcher.delete(relation, old, txn_lsn)
                        }
                        Message::Truncate { relations, .. } => {
                            writer.outcome.changes += 1;
                            batcher.truncate(&relations, txn_lsn)
                        }
                        _ => {}
                    }
                    for draft in batcher.take_sealed() {
                        writer.write(draft).await?;
                    }
                    // The clock is read once per 4096 changes: per change, it shows in profiles.
                    if writer.outcome.changes.is_multiple_of(4096) && last_progress.elapsed() > Duration::from_secs(5) {
                        last_progress = Instant::now();
                        tracing::info!(changes = writer.outcome.changes, packets = writer.outcome.packets, "capturing");
                    }
                }
                ReplicationEvent::Commit { end_lsn, .. } => {
                    in_txn = false;
                    let end = end_lsn.as_u64();
                    if skip {
                        writer.outcome.skipped_transactions += 1;
                    } else {
                        writer.outcome.transactions += 1;
                        last_end = last_end.max(end);
                        // A group in progress (a large transaction) is stored at its commit.
                        if writer.open {
                            flush(&mut batcher, &mut writer, last_end).await?;
                            stored_end = last_end;
                            confirm(&repl, stored_end);
                        }
                    }
                    skip = false;
                    if stop.is_some_and(|s| end >= s) {
                        break;
                    }
                    // While streaming, a busy stream is stored at least this often.
                    if stop.is_none() && last_end > stored_end && writer.last_flush.elapsed() >= STREAM_FLUSH_EVERY {
                        flush(&mut batcher, &mut writer, last_end).await?;
                        stored_end = last_end;
                        confirm(&repl, stored_end);
                    }
                }
                ReplicationEvent::KeepAlive { wal_end, .. } => {
                    // Idle and everything captured is stored: the WAL up to
                    // here held nothing for us. Record that in the relay and
                    // confirm it, so the slot does not keep that WAL.
                    let w = wal_end.as_u64();
                    let finishing = !in_txn && stop.is_some_and(|s| w >= s);
                    if !in_txn
                        && last_end == stored_end
                        && batcher.is_empty()
                        && w > stored_end
                        && (finishing || last_idle_confirm.elapsed() >= Duration::from_secs(1))
                    {
                        writer.commit(w).await?;
                        last_end = w;
                        stored_end = w;
                        confirm(&repl, stored_end);
                        last_idle_confirm = Instant::now();
                    }
                    if finishing {
                        break;
                    }
                }
                ReplicationEvent::StoppedAt { .. } => break,
                ReplicationEvent::Message { .. } => {}
            }
        }
        if !in_txn && last_end > stored_end {
            flush(&mut batcher, &mut writer, last_end).await?;
            stored_end = last_end;
            confirm(&repl, stored_end);
        }
        Ok(())
    }
    .await;

    if let Err(e) = result {
        writer.abort().await;
        repl.abort();
        return Err(e);
    }
    // A transaction cut short by shutdown is not stored; the slot replays it next time.
    writer.abort().await;
    wait_confirmed(&repl, stored_end).await;
    repl.stop();
    let _ = repl.shutdown().await;
    let mut outcome = writer.outcome;
    outcome.confirmed_lsn = stored_end;
    Ok(outcome)
}

/// While streaming, the longest a committed transaction waits to be stored.
const STREAM_FLUSH_EVERY: Duration = Duration::from_millis(25);

/// Seals and writes what is pending, then commits the group at `lsn`.
async fn flush(batcher: &mut Batcher, writer: &mut Writer<'_>, lsn: u64) -> Result<()> {
    batcher.seal();
    for draft in batcher.take_sealed() {
        writer.write(draft).await?;
    }
    writer.commit(lsn).await?;
    writer.last_flush = Instant::now();
    crate::failpoint::hit("capture_after_relay_commit");
    Ok(())
}

/// Confirms `lsn` to the slot: the relay holds everything up to it.
fn confirm(repl: &ReplicationClient, lsn: u64) {
    if lsn > 0 {
        repl.update_applied_lsn(Lsn::from_u64(lsn));
    }
}

/// Waits (briefly) until the confirmation of `lsn` has been sent to the server.
async fn wait_confirmed(repl: &ReplicationClient, lsn: u64) {
    let metrics = repl.metrics();
    let deadline = Instant::now() + Duration::from_secs(5);
    while lsn > 0 && metrics.last_applied_lsn().as_u64() < lsn && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn replication_error(origin: &str, e: pgwire_replication::PgWireError) -> Error {
    Error::Replication {
        role: if origin == "ho" { "ho" } else { "pos" },
        source: e,
    }
}

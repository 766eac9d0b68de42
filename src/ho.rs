//! The HO worker: `setup ho`, `ho sync --once`, `ho run`.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_postgres::Client;

use crate::capture::{self, batch::Bounds, catalog, Mode, Outcome, Source};
use crate::config::Config;
use crate::error::{DbContext, Error, Result};
use crate::postgres::{connect, qualified};
use crate::relay::migrate::{self, Target};
use crate::relay::Relay;
use crate::route::Route;

/// Checks HO and prepares it: schema, publication, slot; publishes the
/// tables' shapes to the relay. Every check runs before anything is created.
pub async fn setup(cfg: &Config) -> Result<Vec<String>> {
    let ho = cfg.ho()?;
    let relay = Relay::connect(&cfg.relay()?.url).await?;
    let mut sql = connect("ho", &ho.url).await?;
    let mut said = Vec::new();

    crate::postgres::require_logical(&sql, "HO").await?;
    let row = sql
        .query_one(
            "SELECT current_setting('max_replication_slots')::int,
                    (SELECT count(*)::int FROM pg_replication_slots),
                    EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1),
                    current_setting('max_wal_senders')::int,
                    (SELECT count(*)::int FROM pg_stat_replication)",
            &[&ho.slot],
        )
        .await
        .ctx(|| "reading replication settings".into())?;
    let (max_slots, used_slots, slot_exists, max_senders, used_senders): (
        i32,
        i32,
        bool,
        i32,
        i32,
    ) = (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    if !slot_exists && used_slots >= max_slots {
        return Err(Error::Setup(format!(
            "no free replication slot at HO (max_replication_slots = {max_slots}, all in use); raise max_replication_slots in postgresql.conf and restart"
        )));
    }
    if used_senders >= max_senders {
        return Err(Error::Setup(format!(
            "no free WAL sender at HO (max_wal_senders = {max_senders}, all in use); raise max_wal_senders in postgresql.conf and restart"
        )));
    }
    if cfg.tables.is_empty() {
        return Err(Error::Config(
            "no [[tables]] in the config; add one per HO table to sync, e.g. [[tables]] name = \"public.items\"".into(),
        ));
    }

    let mut described = Vec::new();
    for (name, route) in cfg.routes() {
        let oid = catalog::table_oid(&sql, &name).await?.ok_or_else(|| {
            Error::Setup(format!(
                "table {name} does not exist at HO; create it or fix [[tables]] name"
            ))
        })?;
        let ident_kind: i8 = sql
            .query_one(
                "SELECT relreplident::\"char\" FROM pg_class WHERE oid = $1",
                &[&oid],
            )
            .await
            .ctx(|| format!("reading the replica identity of {name}"))?
            .get(0);
        let ident_kind = ident_kind as u8;
        let key = catalog::key_columns(&sql, oid).await?;
        let q = qualified(&name);
        if ident_kind == b'n' {
            return Err(Error::Setup(format!(
                "table {name} has REPLICA IDENTITY NOTHING, so its updates and deletes cannot be captured; run ALTER TABLE {q} REPLICA IDENTITY DEFAULT (with a primary key) or FULL"
            )));
        }
        if key.is_empty() && ident_kind != b'f' {
            return Err(Error::Setup(format!(
                "table {name} has no primary key; add one (ALTER TABLE {q} ADD PRIMARY KEY (…)) or run ALTER TABLE {q} REPLICA IDENTITY FULL"
            )));
        }
        let columns = catalog::column_types(&sql, oid).await?;
        if let Route::Column(c) = &route {
            if !columns.iter().any(|(n, _)| n == c) {
                return Err(Error::Setup(format!(
                    "route column:{c} of {name}: {name} has no column {c}; fix route in [[tables]]"
                )));
            }
            if ident_kind != b'f' && !key.contains(c) {
                return Err(Error::Setup(format!(
                    "route column:{c} of {name} needs the old row to move rows between sites; run ALTER TABLE {q} REPLICA IDENTITY FULL"
                )));
            }
        }
        described.push((name, route, key, columns));
    }

    for u in &cfg.upstream {
        let oid = catalog::table_oid(&sql, &u.name).await?.ok_or_else(|| {
            Error::Setup(format!(
                "upstream table {} does not exist at HO; create it as at the sites or fix [[upstream]] name",
                u.name
            ))
        })?;
        if u.merge != crate::config::Merge::Append
            && catalog::key_columns(&sql, oid).await?.is_empty()
        {
            return Err(Error::Setup(format!(
                "upstream table {} has no primary key at HO, so rows cannot be merged by key; add one (ALTER TABLE {} ADD PRIMARY KEY (…))",
                u.name,
                qualified(&u.name)
            )));
        }
    }

    migrate::migrate(&mut sql, Target::Ho).await?;
    if !cfg.upstream.is_empty() {
        let origin = ensure_origin(&sql, crate::MERGE_ORIGIN).await?;
        said.push(format!(
            "replication origin {origin} marks what HO merges from the sites"
        ));
    }
    let names: Vec<String> = described.iter().map(|(n, ..)| n.clone()).collect();
    crate::postgres::ensure_publication(&sql, &ho.publication, &names).await?;
    let table_list = names
        .iter()
        .map(|n| qualified(n))
        .collect::<Vec<_>>()
        .join(", ");
    said.push(format!(
        "publication {} covers {table_list}",
        ho.publication
    ));
    if !slot_exists {
        sql.execute(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&ho.slot],
        )
        .await
        .ctx(|| format!("creating replication slot {}", ho.slot))?;
        said.push(format!("replication slot {} created", ho.slot));
    } else {
        said.push(format!("replication slot {} exists", ho.slot));
    }
    for (name, route, key, columns) in &described {
        let cols = serde_json::to_string(
            &columns
                .iter()
                .map(|(n, t)| serde_json::json!({"name": n, "type": t}))
                .collect::<Vec<_>>(),
        )
        .unwrap_or_default();
        relay
            .client
            .execute(
                "INSERT INTO relay.tables (name, route, key_columns, columns) VALUES ($1, $2, $3, $4::text::jsonb)
                 ON CONFLICT (name) DO UPDATE SET route = EXCLUDED.route, key_columns = EXCLUDED.key_columns,
                   columns = EXCLUDED.columns, updated_at = now()",
                &[name, &route.to_string(), key, &cols],
            )
            .await
            .ctx(|| "writing relay.tables".into())?;
    }
    said.push(format!(
        "{} table(s) published to the relay",
        described.len()
    ));
    Ok(said)
}

/// The name of this database's replication origin `base`: origins are per
/// server, so the database's name is appended.
pub async fn origin_name(sql: &Client, base: &str) -> Result<String> {
    let row = sql
        .query_one("SELECT $1 || '_' || current_database()", &[&base])
        .await
        .ctx(|| "reading the database name".into())?;
    Ok(row.get(0))
}

/// Creates this database's replication origin `base` if it does not exist;
/// returns its name.
pub async fn ensure_origin(sql: &Client, base: &str) -> Result<String> {
    let name = origin_name(sql, base).await?;
    sql.execute(
        "SELECT pg_replication_origin_create($1)
          WHERE NOT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = $1)",
        &[&name],
    )
    .await
    .ctx(|| {
        format!(
            "creating replication origin {name}; it needs a superuser, or GRANT EXECUTE ON FUNCTION pg_replication_origin_create(text) to relaysync's role"
        )
    })?;
    Ok(name)
}

/// Marks this session's writes with this database's replication origin `base`.
pub async fn use_origin(sql: &Client, base: &str, setup: &str) -> Result<()> {
    let name = origin_name(sql, base).await?;
    sql.execute("SELECT pg_replication_origin_session_setup($1)", &[&name])
        .await
        .ctx(|| {
            format!(
                "marking this session with replication origin {name}; run `relaysync setup {setup}`, and stop any other worker on this database"
            )
        })?;
    Ok(())
}

/// What one `ho sync` did.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub capture: Outcome,
    /// Site data merged into HO before the capture.
    pub merged: crate::apply::merge::Outcome,
    /// Full syncs served after the capture.
    pub served: Vec<crate::capture::snapshot::Served>,
    /// Packets in HO's record by status.
    pub sent: Vec<(String, i64)>,
    pub elapsed: Duration,
}

async fn open(cfg: &Config) -> Result<(Client, Relay)> {
    let ho = cfg.ho()?;
    let relay = Relay::connect(&cfg.relay()?.url).await?;
    let sql = connect("ho", &ho.url).await?;
    if !migrate::is_set_up(&sql, Target::Ho).await? {
        return Err(Error::Setup(
            "HO is not set up for relaysync; run `relaysync setup ho` first".into(),
        ));
    }
    Ok((sql, relay))
}

fn source(cfg: &Config) -> Result<Source> {
    let ho = cfg.ho()?;
    Ok(Source {
        url: ho.url.clone(),
        slot: ho.slot.clone(),
        publication: ho.publication.clone(),
        origin: "ho".into(),
        skip_origin: None,
        targets: None,
    })
}

fn bounds(cfg: &Config) -> Bounds {
    Bounds {
        max_rows: cfg.packet.max_rows,
        max_bytes: cfg.packet.max_bytes,
    }
}

/// Captures every change committed before the start, then records acks.
pub async fn sync_once(cfg: &Config) -> Result<Summary> {
    let started = Instant::now();
    let (sql, relay) = open(cfg).await?;
    // Merge what the sites sent first: the capture then fans it out.
    let merged = crate::apply::merge::apply_up(&sql, &relay, &cfg.upstream).await?;
    let capture = capture::capture(
        &sql,
        &relay,
        &source(cfg)?,
        &cfg.routes(),
        bounds(cfg),
        Mode::Once,
        crate::shutdown::never(),
    )
    .await?;
    let served = crate::capture::snapshot::serve(&sql, &relay, &cfg.routes(), bounds(cfg)).await?;
    let sent = record_sent(&sql, &relay).await?;
    Ok(Summary {
        capture,
        merged,
        served,
        sent,
        elapsed: started.elapsed(),
    })
}

/// Copies the packets' statuses from the relay into HO's own record
/// (`relaysync.sent_packets`); returns the count per status.
pub async fn record_sent(sql: &Client, relay: &Relay) -> Result<Vec<(String, i64)>> {
    let row = sql
        .query_one(
            "SELECT coalesce(max(packet_id), 0),
                    coalesce(array_agg(packet_id) FILTER (WHERE status <> 'PROCESSED'), '{}')
               FROM relaysync.sent_packets",
            &[],
        )
        .await
        .ctx(|| "reading relaysync.sent_packets".into())?;
    let (after, open): (i64, Vec<i64>) = (row.get(0), row.get(1));
    for (p, error) in relay.packets_since(after, &open).await? {
        sql.execute(
            "INSERT INTO relaysync.sent_packets (packet_id, group_id, kind, targets, row_count,
                byte_count, created_at, status, error)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (packet_id) DO UPDATE SET status = EXCLUDED.status, error = EXCLUDED.error,
               targets = EXCLUDED.targets, updated_at = now()
             WHERE relaysync.sent_packets.status IS DISTINCT FROM EXCLUDED.status
                OR relaysync.sent_packets.error IS DISTINCT FROM EXCLUDED.error",
            &[
                &p.id,
                &p.group_id,
                &p.kind,
                &p.targets,
                &p.row_count,
                &p.byte_count,
                &p.created_at,
                &p.status,
                &error,
            ],
        )
        .await
        .ctx(|| "writing relaysync.sent_packets".into())?;
    }
    let rows = sql
        .query(
            "SELECT status, count(*) FROM relaysync.sent_packets GROUP BY status ORDER BY status",
            &[],
        )
        .await
        .ctx(|| "reading relaysync.sent_packets".into())?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Runs until shutdown: a sync every `interval`, or streaming when it is zero.
pub async fn run(cfg: &Config, mut shutdown: watch::Receiver<bool>) -> Result<()> {
    let interval = cfg.interval()?;
    if interval.is_zero() {
        return stream(cfg, shutdown).await;
    }
    loop {
        match sync_once(cfg).await {
            Ok(s) => print_summary(&s),
            // A failed round is retried at the next interval; the error is logged.
            Err(e) => {
                tracing::error!(error = %crate::error_chain(&e), "ho sync failed; retrying at the next interval")
            }
        }
        tokio::select! {
            _ = crate::shutdown::requested(&mut shutdown) => return Ok(()),
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Streams until shutdown. A failure of a database or of the network (the
/// relay restarting, say) is logged and the stream started again, after a
/// pause that doubles up to a minute: capture resumes from the relay's
/// position, so nothing is lost or doubled. A configuration or setup error
/// stops the worker, with its fix.
async fn stream(cfg: &Config, mut shutdown: watch::Receiver<bool>) -> Result<()> {
    let mut pause = Duration::from_secs(1);
    loop {
        let started = Instant::now();
        match stream_once(cfg, shutdown.clone()).await {
            Ok(()) => return Ok(()),
            Err(e @ (Error::Config(_) | Error::Setup(_))) => return Err(e),
            Err(e) => {
                if started.elapsed() > Duration::from_secs(60) {
                    pause = Duration::from_secs(1);
                }
                tracing::error!(error = %crate::error_chain(&e), retry_in = ?pause, "ho stream failed; starting it again");
            }
        }
        tokio::select! {
            _ = crate::shutdown::requested(&mut shutdown) => return Ok(()),
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(60));
    }
}

/// Records the sites' acks in HO every two seconds until shutdown,
/// reconnecting after a failure.
async fn record_acks(cfg: Config, mut shutdown: watch::Receiver<bool>) {
    loop {
        let result = async {
            let (sql, relay) = open(&cfg).await?;
            loop {
                record_sent(&sql, &relay).await?;
                tokio::select! {
                    _ = crate::shutdown::requested(&mut shutdown) => return Ok::<_, Error>(()),
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        }
        .await;
        match result {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "recording acks in HO failed; retrying")
            }
        }
        tokio::select! {
            _ = crate::shutdown::requested(&mut shutdown) => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

async fn stream_once(cfg: &Config, shutdown: watch::Receiver<bool>) -> Result<()> {
    let (sql, relay) = open(cfg).await?;
    let acks = tokio::spawn(record_acks(cfg.clone(), shutdown.clone()));
    let outcome = capture::capture(
        &sql,
        &relay,
        &source(cfg)?,
        &cfg.routes(),
        bounds(cfg),
        Mode::Stream {
            linger: Duration::from_millis(20),
        },
        shutdown,
    )
    .await;
    acks.abort();
    let outcome = outcome?;
    tracing::info!(
        transactions = outcome.transactions,
        packets = outcome.packets,
        "ho stream stopped"
    );
    Ok(())
}

/// Prints what a sync did, ending with the line operators look for.
pub fn print_summary(s: &Summary) {
    let m = &s.merged;
    if m.packets > 0 || m.failed.is_some() {
        println!(
            "ho: merged {} up packet(s) from the sites: {} row(s), {} changed HO, {} rejected (see relaysync events)",
            m.packets, m.rows, m.merged, m.rejected
        );
    }
    if let Some((packet, error)) = &m.failed {
        println!("ho: up packet {packet} FAILED: {error}; fix the cause and run `relaysync ho sync --once` again");
    }
    let c = &s.capture;
    println!(
        "ho: captured {} transaction(s), {} change(s) into {} packet(s): {} row(s), {} compressed, in {:.2}s",
        c.transactions,
        c.changes,
        c.packets,
        c.rows,
        human_bytes(c.bytes),
        s.elapsed.as_secs_f64()
    );
    for f in &s.served {
        println!(
            "ho: full sync for {}: {} table(s), {} row(s) in {} packet(s)",
            f.sites.join(", "),
            f.tables.len(),
            f.rows,
            f.packets
        );
    }
    if c.skipped_transactions > 0 {
        println!(
            "ho: skipped {} transaction(s) already in the relay",
            c.skipped_transactions
        );
    }
    let sent = s
        .sent
        .iter()
        .map(|(st, n)| format!("{n} {st}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "ho: sent packets: {}",
        if sent.is_empty() { "none".into() } else { sent }
    );
    println!("Sync process completed, flushing buffer.");
}

/// Formats a byte count for people.
pub fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

//! `relaysync bench`: relaysync beside PostgreSQL's own logical replication
//! (one CREATE SUBSCRIPTION per site), on the same throwaway clusters, in one
//! run, with the same settings for both.
//!
//! Each system gets its own table (`bench_rs`, `bench_native`) and runs its
//! workloads while the other is paused (relaysync's workers stopped, the
//! subscriptions disabled) and caught up, so neither pays for the other.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use relaysync::config::{Config, HoConfig, PosConfig, RelayConfig, TableConfig};
use relaysync::error::{DbContext, Error, Result};
use relaysync::postgres::connect;
use relaysync_cluster::Cluster;

use crate::demo::cluster_error;

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct Args {
    pub rows: u64,
    pub sites: usize,
    pub json: bool,
}

/// One line of the result table.
#[derive(Debug, Clone)]
pub struct Measure {
    pub name: &'static str,
    pub relaysync: f64,
    pub native: f64,
    pub unit: &'static str,
}

impl Measure {
    /// relaysync / native: lower is better.
    pub fn ratio(&self) -> f64 {
        if self.native > 0.0 {
            self.relaysync / self.native
        } else {
            f64::NAN
        }
    }
}

const SMALL_TXNS: u64 = 20_000;
const FANOUT_ROWS: u64 = 100_000;
const LATENCY_RATE: u64 = 1_000;
const LATENCY_SECONDS: u64 = 30;
const POLL: Duration = Duration::from_millis(20);

fn table_sql(name: &str, site: bool) -> String {
    format!(
        "CREATE TABLE public.{name} (id int8 PRIMARY KEY, name text, qty int, price numeric(10,2),
                                      at timestamptz NOT NULL DEFAULT clock_timestamp(){})",
        if site {
            ", applied_at timestamptz NOT NULL DEFAULT clock_timestamp()"
        } else {
            ""
        }
    )
}

/// The clusters, databases and running relaysync workers of a bench run.
struct Rig {
    ho: Cluster,
    relay: Cluster,
    site: Cluster,
    dir: PathBuf,
    codes: Vec<String>,
    workers: Vec<Child>,
    ho_worker: Option<u32>,
    peak_rss_kb: u64,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop_workers();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rig_config(rig: &Rig, site: usize) -> Config {
    Config {
        ho: Some(HoConfig {
            url: rig.ho.url("ho"),
            slot: "relaysync".into(),
            publication: "relaysync".into(),
        }),
        relay: Some(RelayConfig {
            url: rig.relay.url("relay"),
        }),
        pos: Some(PosConfig {
            site: rig.codes[site].clone(),
            url: rig.site.url(&format!("rs_{site:02}")),
            slot: "relaysync_up".into(),
            publication: "relaysync_up".into(),
        }),
        sync: relaysync::config::SyncConfig {
            interval: "0s".into(),
        },
        packet: Default::default(),
        tables: vec![TableConfig {
            name: "public.bench_rs".into(),
            route: "all".into(),
        }],
        upstream: Vec::new(),
    }
}

fn write_config(path: &Path, cfg: &Config) -> Result<()> {
    let (ho, relay, pos) = (cfg.ho()?, cfg.relay()?, cfg.pos()?);
    let text = format!(
        "[ho]\nurl = \"{}\"\n[relay]\nurl = \"{}\"\n[pos]\nsite = \"{}\"\nurl = \"{}\"\n[sync]\ninterval = \"0s\"\n\
         [[tables]]\nname = \"public.bench_rs\"\nroute = \"all\"\n",
        ho.url, relay.url, pos.site, pos.url
    );
    std::fs::write(path, text).map_err(|source| Error::Io {
        context: format!("writing {}", path.display()),
        source,
    })
}

/// Resident memory high-water mark of a process, in KiB.
fn peak_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds of a cluster so far: its postmaster and every process it
/// started (the ones gone included, through the postmaster's child times).
fn cluster_cpu(cluster: &Cluster) -> f64 {
    let Some(pm) = std::fs::read_to_string(cluster.dir().join("postmaster.pid"))
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
    else {
        return 0.0;
    };
    let mut total = cpu_seconds(pm) + children_cpu_seconds(pm);
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if stat_fields(pid).get(1).and_then(|p| p.parse::<u32>().ok()) == Some(pm) {
                total += cpu_seconds(pid);
            }
        }
    }
    total
}

/// The fields of `/proc/<pid>/stat` after the command name (state first).
fn stat_fields(pid: u32) -> Vec<String> {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Vec::new();
    };
    // The command name is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    rest.split_whitespace().map(str::to_string).collect()
}

fn clock_ticks(fields: &[String], at: std::ops::Range<usize>) -> f64 {
    let ticks: f64 = at
        .filter_map(|i| fields.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks / hz
}

/// CPU seconds a process has used (user + system).
fn cpu_seconds(pid: u32) -> f64 {
    clock_ticks(&stat_fields(pid), 11..13)
}

/// CPU seconds of a process's children that have exited.
fn children_cpu_seconds(pid: u32) -> f64 {
    clock_ticks(&stat_fields(pid), 13..15)
}

/// CPU seconds so far of each part of the rig: HO, relay and site clusters,
/// and relaysync's workers.
fn rig_cpu(rig: &Rig) -> [f64; 4] {
    [
        cluster_cpu(&rig.ho),
        cluster_cpu(&rig.relay),
        cluster_cpu(&rig.site),
        rig.workers.iter().map(|w| cpu_seconds(w.id())).sum(),
    ]
}

/// The CPU each part of the rig spent since `before`, for a progress line.
fn cpu_since(rig: &Rig, before: [f64; 4]) -> String {
    let now = rig_cpu(rig);
    format!(
        "CPU s: HO {:.2}, relay {:.2}, sites {:.2}, relaysync workers {:.2}",
        now[0] - before[0],
        now[1] - before[1],
        now[2] - before[2],
        now[3] - before[3],
    )
}

impl Rig {
    fn stop_workers(&mut self) {
        for w in &self.workers {
            self.peak_rss_kb = self.peak_rss_kb.max(peak_rss_kb(w.id()));
            // SAFETY: signalling our own child.
            unsafe {
                libc::kill(w.id() as libc::pid_t, libc::SIGTERM);
            }
        }
        for mut w in self.workers.drain(..) {
            let _ = w.wait();
        }
        self.ho_worker = None;
    }

    fn start_workers(&mut self) -> Result<()> {
        let exe = std::env::current_exe().map_err(|source| Error::Io {
            context: "finding the relaysync binary".into(),
            source,
        })?;
        let spawn = |config: &Path, role: &str| {
            Command::new(&exe)
                .arg("--config")
                .arg(config)
                .args([role, "run"])
                .env("RELAYSYNC_LOG", "error")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|source| Error::Io {
                    context: format!("starting relaysync {role} run"),
                    source,
                })
        };
        let ho = spawn(&self.dir.join("site_00.toml"), "ho")?;
        self.ho_worker = Some(ho.id());
        self.workers.push(ho);
        for i in 0..self.codes.len() {
            let w = spawn(&self.dir.join(format!("site_{i:02}.toml")), "pos")?;
            self.workers.push(w);
        }
        Ok(())
    }
}

async fn sql(url: &str) -> Result<Client> {
    connect("ho", url).await
}

async fn one_i64(c: &Client, q: &str) -> Result<i64> {
    Ok(c.query_one(q, &[]).await.ctx(|| q.to_string())?.get(0))
}

/// Waits until `query` gives `want` at every site; returns when.
async fn wait_sites(
    sites: &[Client],
    query: &str,
    want: i64,
    timeout: Duration,
) -> Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut all = true;
        for s in sites {
            if one_i64(s, query).await? != want {
                all = false;
                break;
            }
        }
        if all {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            return Err(Error::Setup(format!(
                "bench: the sites did not reach {want} for `{query}` within {timeout:?}"
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the slots named like `pattern` have confirmed HO's current position.
async fn catch_up(ho: &Client, pattern: &str) -> Result<()> {
    ho.batch_execute("SELECT pg_logical_emit_message(false, 'relaysync-bench', 'catch up')")
        .await
        .ctx(|| "writing a WAL marker".into())?;
    let target: String = ho
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .ctx(|| "reading the WAL position".into())?
        .get(0);
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let behind = one_i64(
            ho,
            &format!(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE '{pattern}'
                  AND (confirmed_flush_lsn IS NULL OR confirmed_flush_lsn < '{target}'::pg_lsn)"
            ),
        )
        .await?;
        if behind == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Setup(format!(
                "bench: slots {pattern} did not catch up"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A system under test: its table, its site databases, how to pause it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum System {
    Relaysync,
    Native,
}

impl System {
    fn table(self) -> &'static str {
        match self {
            System::Relaysync => "bench_rs",
            System::Native => "bench_native",
        }
    }
    fn slots(self) -> &'static str {
        match self {
            System::Relaysync => "relaysync",
            System::Native => "native_%",
        }
    }
}

struct Results {
    bulk_insert: f64,
    bulk_update: f64,
    small_txns: f64,
    fanout_cpu: f64,
    latencies: Vec<f64>,
    bytes_per_change: f64,
    /// HO's WAL position right after the bulk insert committed.
    after_bulk_insert: String,
}

/// HO-side CPU seconds of a system so far: its walsenders, and relaysync's
/// HO worker (also returned on its own).
async fn ho_cpu(ho: &Client, system: System, rig: &Rig) -> Result<(f64, f64)> {
    let pattern = match system {
        System::Relaysync => "relaysync-ho",
        System::Native => "native_%",
    };
    let rows = ho
        .query(
            "SELECT pid FROM pg_stat_replication WHERE application_name LIKE $1",
            &[&pattern],
        )
        .await
        .ctx(|| "reading pg_stat_replication".into())?;
    let walsenders: f64 = rows
        .iter()
        .map(|r| cpu_seconds(r.get::<_, i32>(0) as u32))
        .sum();
    let worker = match system {
        System::Relaysync => rig.ho_worker.map_or(0.0, cpu_seconds),
        System::Native => 0.0,
    };
    Ok((walsenders + worker, worker))
}

async fn run_system(
    rig: &Rig,
    system: System,
    args: Args,
    out: &mut dyn FnMut(&str),
) -> Result<Results> {
    let ho = sql(&rig.ho.url("ho")).await?;
    let t = system.table();
    let prefix = match system {
        System::Relaysync => "rs",
        System::Native => "native",
    };
    let mut sites = Vec::new();
    for i in 0..rig.codes.len() {
        sites.push(sql(&rig.site.url(&format!("{prefix}_{i:02}"))).await?);
    }
    let n = args.rows as i64;
    let long = Duration::from_secs(3600);
    let count = format!("SELECT count(*) FROM public.{t}");

    out(&format!("{}: bulk_insert of {n} rows", name(system)));
    let relay = sql(&rig.relay.url("relay")).await?;
    let relay_before = one_i64(
        &relay,
        "SELECT coalesce(sum(length(arrow_ipc)), 0)::int8 FROM relay.packet_parts",
    )
    .await?;
    let cpu_before = rig_cpu(rig);
    ho.execute(
        &format!("INSERT INTO public.{t} (id, name, qty, price) SELECT g, 'item ' || g, g % 1000, (g % 100000) / 100.0 FROM generate_series(1, $1::int8) g"),
        &[&n],
    )
    .await
    .ctx(|| "bulk insert at HO".into())?;
    let committed = Instant::now();
    let after_bulk_insert: String = ho
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .ctx(|| "reading the WAL position".into())?
        .get(0);
    let done = wait_sites(&sites, &count, n, long).await?;
    let bulk_insert = (done - committed).as_secs_f64();
    out(&format!(
        "{}: bulk_insert at every site after {bulk_insert:.3} s; {}",
        name(system),
        cpu_since(rig, cpu_before)
    ));
    let relay_after = one_i64(
        &relay,
        "SELECT coalesce(sum(length(arrow_ipc)), 0)::int8 FROM relay.packet_parts",
    )
    .await?;
    let bytes_per_change = (relay_after - relay_before) as f64 / n as f64;

    out(&format!("{}: bulk_update of {n} rows", name(system)));
    let cpu_before = rig_cpu(rig);
    ho.batch_execute(&format!("UPDATE public.{t} SET qty = qty + 1"))
        .await
        .ctx(|| "bulk update at HO".into())?;
    let committed = Instant::now();
    let want = one_i64(&ho, &format!("SELECT sum(qty)::int8 FROM public.{t}")).await?;
    let done = wait_sites(
        &sites,
        &format!("SELECT coalesce(sum(qty), 0)::int8 FROM public.{t}"),
        want,
        long,
    )
    .await?;
    let bulk_update = (done - committed).as_secs_f64();
    out(&format!(
        "{}: bulk_update at every site after {bulk_update:.3} s; {}",
        name(system),
        cpu_since(rig, cpu_before)
    ));

    out(&format!(
        "{}: small_txns, {SMALL_TXNS} single-row transactions",
        name(system)
    ));
    let insert = ho
        .prepare(&format!(
            "INSERT INTO public.{t} (id, name, qty) VALUES ($1, 'small', 1)"
        ))
        .await
        .ctx(|| "preparing".into())?;
    let base = n + 1;
    let cpu_before = rig_cpu(rig);
    ho.execute(&insert, &[&base])
        .await
        .ctx(|| "small insert".into())?;
    let first = Instant::now();
    for id in base + 1..base + SMALL_TXNS as i64 {
        ho.execute(&insert, &[&id])
            .await
            .ctx(|| "small insert".into())?;
    }
    let committed = first.elapsed().as_secs_f64();
    let done = wait_sites(&sites, &count, n + SMALL_TXNS as i64, long).await?;
    let small_txns = (done - first).as_secs_f64();
    out(&format!(
        "{}: small_txns committed at HO in {committed:.3} s, at every site after {small_txns:.3} s; {}",
        name(system),
        cpu_since(rig, cpu_before)
    ));

    out(&format!(
        "{}: HO CPU for {FANOUT_ROWS} changes to {} sites",
        name(system),
        rig.codes.len()
    ));
    let cpu_before = ho_cpu(&ho, system, rig).await?;
    let base = n + SMALL_TXNS as i64 + 1;
    ho.execute(
        &format!("INSERT INTO public.{t} (id, name, qty) SELECT g, 'fanout', 1 FROM generate_series($1::int8, $1::int8 + $2::int8 - 1) g"),
        &[&base, &(FANOUT_ROWS as i64)],
    )
    .await
    .ctx(|| "fanout insert".into())?;
    let total = n + (SMALL_TXNS + FANOUT_ROWS) as i64;
    wait_sites(&sites, &count, total, long).await?;
    let cpu_after = ho_cpu(&ho, system, rig).await?;
    let scale = 100_000.0 / FANOUT_ROWS as f64;
    let fanout_cpu = (cpu_after.0 - cpu_before.0) * scale;
    out(&format!(
        "{}: HO CPU {fanout_cpu:.3} s per 100k changes, of which the HO worker {:.3} s",
        name(system),
        (cpu_after.1 - cpu_before.1) * scale
    ));

    out(&format!(
        "{}: latency at {LATENCY_RATE} transactions/s for {LATENCY_SECONDS}s",
        name(system)
    ));
    let base = total + 1;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / LATENCY_RATE));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let steady = LATENCY_RATE * LATENCY_SECONDS;
    for i in 0..steady as i64 {
        tick.tick().await;
        ho.execute(&insert, &[&(base + i)])
            .await
            .ctx(|| "latency insert".into())?;
    }
    wait_sites(&sites, &count, total + steady as i64, long).await?;
    let mut latencies = Vec::new();
    for s in &sites {
        let rows = s
            .query(
                &format!("SELECT extract(epoch FROM applied_at - at)::float8 FROM public.{t} WHERE id >= $1"),
                &[&base],
            )
            .await
            .ctx(|| "reading latencies".into())?;
        latencies.extend(rows.iter().map(|r| r.get::<_, f64>(0)));
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    Ok(Results {
        bulk_insert,
        bulk_update,
        small_txns,
        fanout_cpu,
        latencies,
        bytes_per_change,
        after_bulk_insert,
    })
}

fn name(system: System) -> &'static str {
    match system {
        System::Relaysync => "relaysync",
        System::Native => "native",
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn build_rig(args: Args) -> Result<Rig> {
    let k = args.sites;
    let (ho, relay, site) = tokio::task::spawn_blocking(move || -> relaysync_cluster::Result<_> {
        let workers = format!("max_logical_replication_workers = {}", k + 4);
        let processes = format!("max_worker_processes = {}", k + 16);
        Ok((
            Cluster::start("bench-ho", &[])?,
            Cluster::start("bench-relay", &[])?,
            Cluster::start("bench-sites", &[&workers, &processes])?,
        ))
    })
    .await
    .expect("cluster start does not panic")
    .map_err(cluster_error)?;
    let dir = std::env::temp_dir().join(format!("relaysync-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
        context: format!("creating {}", dir.display()),
        source,
    })?;
    let rig = Rig {
        ho,
        relay,
        site,
        dir,
        codes: (0..k).map(|i| format!("site-{i:02}")).collect(),
        workers: Vec::new(),
        ho_worker: None,
        peak_rss_kb: 0,
    };
    rig.ho.create_database("ho").await.map_err(cluster_error)?;
    rig.relay
        .create_database("relay")
        .await
        .map_err(cluster_error)?;
    let ho = sql(&rig.ho.url("ho")).await?;
    ho.batch_execute(&format!(
        "{}; {};",
        table_sql("bench_rs", false),
        table_sql("bench_native", false)
    ))
    .await
    .ctx(|| "creating the bench tables at HO".into())?;
    for i in 0..k {
        for (prefix, table) in [("rs", "bench_rs"), ("native", "bench_native")] {
            let db = format!("{prefix}_{i:02}");
            rig.site.create_database(&db).await.map_err(cluster_error)?;
            sql(&rig.site.url(&db))
                .await?
                .batch_execute(&table_sql(table, true))
                .await
                .ctx(|| "creating the bench tables at the sites".into())?;
        }
    }
    // relaysync, as a DBA sets it up.
    let mut relay_client = connect("relay", &rig.relay.url("relay")).await?;
    relaysync::relay::migrate::migrate(&mut relay_client, relaysync::relay::migrate::Target::Relay)
        .await?;
    let relay = relaysync::relay::Relay::connect(&rig.relay.url("relay")).await?;
    for code in &rig.codes {
        relay.add_site_with_first_sync(code).await?;
    }
    relaysync::ho::setup(&rig_config(&rig, 0)).await?;
    for i in 0..k {
        let cfg = rig_config(&rig, i);
        relaysync::pos::setup(&cfg).await?;
        write_config(&rig.dir.join(format!("site_{i:02}.toml")), &cfg)?;
    }
    // PostgreSQL's own: a publication and one subscription per site.
    ho.batch_execute("CREATE PUBLICATION native_pub FOR TABLE public.bench_native")
        .await
        .ctx(|| "creating the native publication".into())?;
    for i in 0..k {
        let db = format!("native_{i:02}");
        sql(&rig.site.url(&db))
            .await?
            .batch_execute(&format!(
                "CREATE SUBSCRIPTION native_{i:02} CONNECTION 'host=127.0.0.1 port={} dbname=ho user=postgres'
                 PUBLICATION native_pub WITH (copy_data = false, enabled = false)",
                rig.ho.port()
            ))
            .await
            .ctx(|| "creating a native subscription".into())?;
    }
    Ok(rig)
}

async fn set_native(rig: &Rig, enabled: bool) -> Result<()> {
    for i in 0..rig.codes.len() {
        sql(&rig.site.url(&format!("native_{i:02}")))
            .await?
            .batch_execute(&format!(
                "ALTER SUBSCRIPTION native_{i:02} {}",
                if enabled { "ENABLE" } else { "DISABLE" }
            ))
            .await
            .ctx(|| "switching a native subscription".into())?;
    }
    Ok(())
}

/// The bytes of the pgoutput stream for relaysync's bulk insert, read back
/// through a slot made for the purpose.
async fn pgoutput_bytes(ho: &Client, from_slot: &str, upto: &str) -> Result<f64> {
    let row = ho
        .query_one(
            "SELECT coalesce(sum(length(data)), 0)::float8,
                    count(*) FILTER (WHERE get_byte(data, 0) IN (73, 85, 68))::float8
               FROM pg_logical_slot_get_binary_changes($1, $2::text::pg_lsn, NULL,
                    'proto_version', '1', 'publication_names', 'relaysync')",
            &[&from_slot, &upto],
        )
        .await
        .ctx(|| "reading the pgoutput stream".into())?;
    let (bytes, inserts): (f64, f64) = (row.get(0), row.get(1));
    Ok(if inserts > 0.0 {
        bytes / inserts
    } else {
        f64::NAN
    })
}

/// Runs the benchmark and prints the table (or JSON).
pub async fn run(args: Args) -> Result<Vec<Measure>> {
    if args.sites == 0 || args.rows == 0 {
        return Err(Error::Config(
            "bench needs --rows and --sites of at least 1".into(),
        ));
    }
    let json = args.json;
    let mut say = |m: &str| {
        if !json {
            eprintln!("bench: {m}");
        }
    };
    say(&format!(
        "starting clusters: HO, relay, and {} site databases per system",
        args.sites
    ));
    let mut rig = build_rig(args).await?;
    let ho = sql(&rig.ho.url("ho")).await?;

    // Native first, with relaysync stopped.
    set_native(&rig, true).await?;
    catch_up(&ho, System::Native.slots()).await?;
    let native = run_system(&rig, System::Native, args, &mut say).await?;
    set_native(&rig, false).await?;

    // relaysync, with the subscriptions disabled; a slot made now reads the
    // same changes as pgoutput sends them, for the relay_bytes comparison.
    rig.start_workers()?;
    catch_up(&ho, System::Relaysync.slots()).await?;
    ho.execute(
        "SELECT pg_create_logical_replication_slot('bench_wire', 'pgoutput')",
        &[],
    )
    .await
    .ctx(|| "creating the wire slot".into())?;
    let ours = run_system(&rig, System::Relaysync, args, &mut say).await?;
    rig.stop_workers();
    say("reading the pgoutput stream of the bulk insert");
    let wire = pgoutput_bytes(&ho, "bench_wire", &ours.after_bulk_insert).await?;
    let _ = ho
        .execute("SELECT pg_drop_replication_slot('bench_wire')", &[])
        .await;

    let results = vec![
        Measure {
            name: "bulk_insert",
            relaysync: ours.bulk_insert,
            native: native.bulk_insert,
            unit: "s",
        },
        Measure {
            name: "bulk_update",
            relaysync: ours.bulk_update,
            native: native.bulk_update,
            unit: "s",
        },
        Measure {
            name: "small_txns",
            relaysync: ours.small_txns,
            native: native.small_txns,
            unit: "s",
        },
        Measure {
            name: "fanout_ho_cpu",
            relaysync: ours.fanout_cpu,
            native: native.fanout_cpu,
            unit: "cpu s/100k changes",
        },
        Measure {
            name: "relay_bytes",
            relaysync: ours.bytes_per_change,
            native: wire,
            unit: "bytes/change",
        },
        Measure {
            name: "latency_p50",
            relaysync: percentile(&ours.latencies, 0.5),
            native: percentile(&native.latencies, 0.5),
            unit: "s",
        },
        Measure {
            name: "latency_p99",
            relaysync: percentile(&ours.latencies, 0.99),
            native: percentile(&native.latencies, 0.99),
            unit: "s",
        },
        Measure {
            name: "peak_rss_mb",
            relaysync: rig.peak_rss_kb as f64 / 1024.0,
            native: f64::NAN,
            unit: "MB",
        },
    ];
    print(&results, args, json);
    Ok(results)
}

fn machine() -> (String, usize, f64, String) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem_gb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let pg = relaysync_cluster::bindir()
        .ok()
        .and_then(|d| {
            Command::new(d.join("postgres"))
                .arg("--version")
                .output()
                .ok()
        })
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    (cpu, cores, mem_gb, pg)
}

fn number(v: f64) -> serde_json::Value {
    if v.is_finite() {
        serde_json::json!(v)
    } else {
        serde_json::Value::Null
    }
}

fn print(results: &[Measure], args: Args, json: bool) {
    let (cpu, cores, mem, pg) = machine();
    if json {
        let out = serde_json::json!({
            "results": results.iter().map(|m| serde_json::json!({
                "name": m.name, "relaysync": number(m.relaysync), "native": number(m.native),
                "unit": m.unit, "ratio": number(m.ratio()),
            })).collect::<Vec<_>>(),
            "machine": {"cpu": cpu, "cores": cores, "memory_gib": mem, "postgres": pg,
                        "rows": args.rows, "sites": args.sites},
        });
        println!("{out}");
        return;
    }
    println!(
        "relaysync bench: {} rows, {} sites; {cpu}, {cores} cores, {mem:.0} GiB; {pg}",
        args.rows, args.sites
    );
    println!(
        "{:<14} {:>12} {:>12}  {:<20} {:>7}",
        "workload", "relaysync", "native", "unit", "ratio"
    );
    let fmt = |v: f64| {
        if v.is_finite() {
            format!("{v:.3}")
        } else {
            "-".into()
        }
    };
    for m in results {
        println!(
            "{:<14} {:>12} {:>12}  {:<20} {:>7}",
            m.name,
            fmt(m.relaysync),
            fmt(m.native),
            m.unit,
            fmt(m.ratio())
        );
    }
    println!("(ratio = relaysync / native: lower is better)");
}

//! The workloads, run against one system at a time: a bulk insert, a bulk
//! update, many small transactions, HO's CPU for a fan-out to every site,
//! and latency at a steady rate.

use std::time::{Duration, Instant};

use relaysync::error::{DbContext, Result};
use tokio_postgres::{Client, Statement};

use super::measure::{cpu_since, ho_cpu, rig_cpu};
use super::rig::{sql, Rig};
use super::wait::{one_i64, wait_loaded, wait_sites};
use super::Args;

const SMALL_TXNS: u64 = 20_000;
const FANOUT_ROWS: u64 = 100_000;
const LATENCY_RATE: u64 = 1_000;
const LATENCY_SECONDS: u64 = 30;

/// The bytes a packet costs the relay beyond its row: its parts' Arrow
/// data, and the signed header and signature of a signed packet.
const RELAY_BYTES: &str =
    "SELECT ((SELECT coalesce(sum(length(arrow_ipc)), 0) FROM relay.packet_parts)
        + (SELECT coalesce(sum(coalesce(length(signed), 0) + coalesce(length(signature), 0)), 0)
             FROM relay.packets))::int8";

/// A system under test: its table, its site databases, how to pause it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum System {
    Relaysync,
    Native,
    /// Native through an intermediate server (see `native::cascade`).
    Cascade,
}

impl System {
    pub(super) fn table(self) -> &'static str {
        match self {
            System::Relaysync => "bench_rs",
            System::Native | System::Cascade => "bench_native",
        }
    }
    /// Its name in progress lines.
    fn name(self) -> &'static str {
        match self {
            System::Relaysync => "relaysync",
            System::Native => "native",
            System::Cascade => "native cascade",
        }
    }
    /// The prefix of its site databases.
    fn prefix(self) -> &'static str {
        match self {
            System::Relaysync => "rs",
            System::Native => "native",
            System::Cascade => "cascade",
        }
    }
    pub(super) fn slots(self) -> &'static str {
        match self {
            System::Relaysync => "relaysync",
            System::Native => "native_%",
            System::Cascade => "cascade_%",
        }
    }
}

/// What one system's run measured.
pub(super) struct Results {
    pub(super) bulk_insert: f64,
    pub(super) bulk_update: f64,
    pub(super) small_txns: f64,
    pub(super) fanout_cpu: f64,
    pub(super) latencies: Vec<f64>,
    pub(super) bytes_per_change: f64,
    /// HO's WAL position right after the bulk insert committed.
    pub(super) after_bulk_insert: String,
}

/// Runs every workload against `system`, telling `out` what it does.
pub(super) async fn run_system(
    rig: &Rig,
    system: System,
    args: Args,
    out: &mut dyn FnMut(&str),
) -> Result<Results> {
    let mut run = Run::open(rig, system, out).await?;
    let n = args.rows as i64;
    let (bulk_insert, bytes_per_change, after_bulk_insert) = run.bulk_insert(n).await?;
    let bulk_update = run.bulk_update(n).await?;
    let insert = run.small_insert().await?;
    let small_txns = run.small_txns(&insert, n).await?;
    let fanout_cpu = run.fanout(n).await?;
    let latencies = run.latencies(&insert).await?;
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

/// The latency run alone against `system`, running and caught up; with
/// `busy`, under a CPU hog on every core.
pub(super) async fn latency_run(
    rig: &Rig,
    system: System,
    busy: bool,
    out: &mut dyn FnMut(&str),
) -> Result<Vec<f64>> {
    let mut run = Run::open(rig, system, out).await?;
    let insert = run.small_insert().await?;
    let _hog = busy.then(|| {
        let hog = super::busy::Hog::start();
        run.say(&format!("a CPU hog spins {} threads", hog.threads()));
        hog
    });
    run.latencies(&insert).await
}

/// relaysync's workloads whose cost grows with the packets written, on a
/// table emptied first everywhere: the bulk insert of `n` rows (seconds,
/// relay bytes per change) and the small transactions after it (seconds).
pub(super) async fn packet_loads(
    rig: &Rig,
    n: i64,
    out: &mut dyn FnMut(&str),
) -> Result<(f64, f64, f64)> {
    let mut run = Run::open(rig, System::Relaysync, out).await?;
    run.ho
        .batch_execute(&format!("TRUNCATE public.{}", run.table))
        .await
        .ctx(|| "emptying the bench table at HO".into())?;
    wait_sites(&run.sites, &run.count, 0, Duration::from_secs(600)).await?;
    let (bulk_insert, bytes_per_change, _) = run.bulk_insert(n).await?;
    let insert = run.small_insert().await?;
    let small_txns = run.small_txns(&insert, n).await?;
    Ok((bulk_insert, bytes_per_change, small_txns))
}

/// One system's run: its connections, its table, where progress goes.
struct Run<'a> {
    rig: &'a Rig,
    system: System,
    ho: Client,
    sites: Vec<Client>,
    table: &'static str,
    /// The system's rows at a site.
    count: String,
    out: &'a mut dyn FnMut(&str),
}

impl<'a> Run<'a> {
    async fn open(rig: &'a Rig, system: System, out: &'a mut dyn FnMut(&str)) -> Result<Run<'a>> {
        let t = system.table();
        let mut sites = Vec::new();
        for i in 0..rig.codes.len() {
            sites.push(sql(&rig.site.url(&format!("{}_{i:02}", system.prefix()))).await?);
        }
        Ok(Run {
            rig,
            system,
            ho: sql(&rig.ho.url("ho")).await?,
            sites,
            table: t,
            count: format!("SELECT count(*) FROM public.{t}"),
            out,
        })
    }

    /// The single-row insert of the small transactions.
    async fn small_insert(&self) -> Result<Statement> {
        self.ho
            .prepare(&format!(
                "INSERT INTO public.{} (id, name, qty) VALUES ($1, 'small', 1)",
                self.table
            ))
            .await
            .ctx(|| "preparing".into())
    }

    fn say(&mut self, what: &str) {
        (self.out)(&format!("{}: {what}", self.system.name()));
    }

    /// Waits until HO has recorded every site's ack of every packet
    /// relaysync stored (its HO worker records them every two seconds);
    /// native has nothing to record.
    async fn settle(&self) -> Result<()> {
        if self.system != System::Relaysync {
            return Ok(());
        }
        let relay = sql(&self.rig.relay.url("relay")).await?;
        let last = one_i64(
            &relay,
            "SELECT coalesce(max(id), 0) FROM relay.packets WHERE direction = 'down'",
        )
        .await?;
        wait_sites(
            std::slice::from_ref(&self.ho),
            &format!(
                "SELECT (count(*) FILTER (WHERE status = 'UPLOADED') = 0
                         AND (count(*) FILTER (WHERE packet_id = {last} AND status = 'PROCESSED') = 1
                              OR {last} = 0))::int::int8
                   FROM relaysync.sent_packets"
            ),
            1,
            Duration::from_secs(120),
        )
        .await?;
        Ok(())
    }

    /// Waits until every site has the row with key `last` (an index probe:
    /// each system applies a transaction whole and in commit order), then
    /// checks that each holds `rows` rows; returns when the row was there.
    async fn wait_last(&self, last: i64, rows: i64) -> Result<Instant> {
        let t = self.table;
        wait_loaded(
            &self.sites,
            &format!("SELECT count(*) FROM public.{t} WHERE id = {last}"),
            1,
            &self.count,
            rows,
        )
        .await
    }

    /// `n` rows in one transaction: seconds until every site has them, relay
    /// bytes per row, and HO's WAL position right after the commit.
    async fn bulk_insert(&mut self, n: i64) -> Result<(f64, f64, String)> {
        let t = self.table;
        self.say(&format!("bulk_insert of {n} rows"));
        let relay = sql(&self.rig.relay.url("relay")).await?;
        let relay_before = one_i64(&relay, RELAY_BYTES).await?;
        let cpu_before = rig_cpu(self.rig);
        self.ho.execute(
            &format!("INSERT INTO public.{t} (id, name, qty, price) SELECT g, 'item ' || g, g % 1000, (g % 100000) / 100.0 FROM generate_series(1, $1::int8) g"),
            &[&n],
        )
        .await
        .ctx(|| "bulk insert at HO".into())?;
        let committed = Instant::now();
        let after_bulk_insert: String = self
            .ho
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .await
            .ctx(|| "reading the WAL position".into())?
            .get(0);
        let done = self.wait_last(n, n).await?;
        let bulk_insert = (done - committed).as_secs_f64();
        let cpu = cpu_since(self.rig, cpu_before);
        self.say(&format!(
            "bulk_insert at every site after {bulk_insert:.3} s; {cpu}"
        ));
        let relay_after = one_i64(&relay, RELAY_BYTES).await?;
        let bytes_per_change = (relay_after - relay_before) as f64 / n as f64;
        Ok((bulk_insert, bytes_per_change, after_bulk_insert))
    }

    /// Every row updated in one transaction: seconds until every site has it.
    async fn bulk_update(&mut self, n: i64) -> Result<f64> {
        let t = self.table;
        self.say(&format!("bulk_update of {n} rows"));
        let cpu_before = rig_cpu(self.rig);
        self.ho
            .batch_execute(&format!("UPDATE public.{t} SET qty = qty + 1"))
            .await
            .ctx(|| "bulk update at HO".into())?;
        let committed = Instant::now();
        let want = one_i64(&self.ho, &format!("SELECT sum(qty)::int8 FROM public.{t}")).await?;
        let last = format!("SELECT coalesce(max(qty), 0)::int8 FROM public.{t} WHERE id = {n}");
        let done = wait_loaded(
            &self.sites,
            &last,
            one_i64(&self.ho, &last).await?,
            &format!("SELECT coalesce(sum(qty), 0)::int8 FROM public.{t}"),
            want,
        )
        .await?;
        let bulk_update = (done - committed).as_secs_f64();
        let cpu = cpu_since(self.rig, cpu_before);
        self.say(&format!(
            "bulk_update at every site after {bulk_update:.3} s; {cpu}"
        ));
        Ok(bulk_update)
    }

    /// SMALL_TXNS single-row transactions after the `n` bulk rows: seconds
    /// from the first commit until every site has them all.
    async fn small_txns(&mut self, insert: &Statement, n: i64) -> Result<f64> {
        self.say(&format!("small_txns, {SMALL_TXNS} single-row transactions"));
        let base = n + 1;
        let cpu_before = rig_cpu(self.rig);
        self.ho
            .execute(insert, &[&base])
            .await
            .ctx(|| "small insert".into())?;
        let first = Instant::now();
        for id in base + 1..base + SMALL_TXNS as i64 {
            self.ho
                .execute(insert, &[&id])
                .await
                .ctx(|| "small insert".into())?;
        }
        let committed = first.elapsed().as_secs_f64();
        let done = self
            .wait_last(base + SMALL_TXNS as i64 - 1, n + SMALL_TXNS as i64)
            .await?;
        let small_txns = (done - first).as_secs_f64();
        let cpu = cpu_since(self.rig, cpu_before);
        self.say(&format!(
            "small_txns committed at HO in {committed:.3} s, at every site after {small_txns:.3} s; {cpu}"
        ));
        Ok(small_txns)
    }

    /// FANOUT_ROWS rows in one transaction to every site: HO's CPU seconds
    /// per 100k changes.
    async fn fanout(&mut self, n: i64) -> Result<f64> {
        let t = self.table;
        let sites = self.rig.codes.len();
        self.say(&format!(
            "HO CPU for {FANOUT_ROWS} changes to {sites} sites"
        ));
        // From a quiet HO: the earlier workloads' acks recorded first (the HO
        // worker records acks every two seconds; they would fall in this
        // window or not by chance). This load's own acks (of its two
        // packets: a cost per packet, not per change) are recorded after.
        self.settle().await?;
        let cpu_before = ho_cpu(&self.ho, self.system, self.rig).await?;
        let base = n + SMALL_TXNS as i64 + 1;
        self.ho.execute(
            &format!("INSERT INTO public.{t} (id, name, qty) SELECT g, 'fanout', 1 FROM generate_series($1::int8, $1::int8 + $2::int8 - 1) g"),
            &[&base, &(FANOUT_ROWS as i64)],
        )
        .await
        .ctx(|| "fanout insert".into())?;
        let total = n + (SMALL_TXNS + FANOUT_ROWS) as i64;
        self.wait_last(total, total).await?;
        let cpu_after = ho_cpu(&self.ho, self.system, self.rig).await?;
        let scale = 100_000.0 / FANOUT_ROWS as f64;
        let fanout_cpu = (cpu_after.0 - cpu_before.0) * scale;
        self.say(&format!(
            "HO CPU {fanout_cpu:.3} s per 100k changes, of which the HO worker {:.3} s",
            (cpu_after.1 - cpu_before.1) * scale
        ));
        Ok(fanout_cpu)
    }

    /// Single-row transactions at LATENCY_RATE a second for LATENCY_SECONDS
    /// after the rows the table holds (and one row first, which every site
    /// is waited for: the system is moving): each row's seconds from HO to
    /// its site, sorted.
    async fn latencies(&mut self, insert: &Statement) -> Result<Vec<f64>> {
        let t = self.table;
        let warm = one_i64(
            &self.ho,
            &format!("SELECT coalesce(max(id), 0) + 1 FROM public.{t}"),
        )
        .await?;
        self.ho
            .execute(insert, &[&warm])
            .await
            .ctx(|| "latency insert".into())?;
        wait_sites(
            &self.sites,
            &format!("SELECT count(*) FROM public.{t} WHERE id = {warm}"),
            1,
            Duration::from_secs(600),
        )
        .await?;
        self.say(&format!(
            "latency at {LATENCY_RATE} transactions/s for {LATENCY_SECONDS}s"
        ));
        let base = warm + 1;
        let cpu_before = rig_cpu(self.rig);
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / LATENCY_RATE));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let steady = (LATENCY_RATE * LATENCY_SECONDS) as i64;
        for i in 0..steady {
            tick.tick().await;
            self.ho
                .execute(insert, &[&(base + i)])
                .await
                .ctx(|| "latency insert".into())?;
        }
        let last = base + steady - 1;
        wait_loaded(
            &self.sites,
            &format!("SELECT count(*) FROM public.{t} WHERE id = {last}"),
            1,
            &format!("SELECT count(*) FROM public.{t} WHERE id >= {base}"),
            steady,
        )
        .await?;
        let cpu = cpu_since(self.rig, cpu_before);
        self.say(&format!("latency run done; {cpu}"));
        let mut latencies = Vec::new();
        for s in &self.sites {
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
        Ok(latencies)
    }
}

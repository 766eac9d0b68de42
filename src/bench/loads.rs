//! The two loads of a deployment's first days, each system while the other
//! is stopped, in databases of their own on the rig's clusters:
//!
//! - `full_sync`: N rows at HO to K sites registered at once. relaysync
//!   reads and encodes HO's table once for all of them; native copies it
//!   once per subscription (`copy_data = true`). `pg_dump | psql` into one
//!   site is timed beside, for reference.
//! - `up_events`: every site inserts its share of device events into an
//!   `append` upstream table, at once; seconds until HO holds them all.
//!   Native: HO subscribes to each site's publication.
//!
//! Both wait on a condition cheap to poll: a full sync lands in one
//! transaction at each site (relaysync's snapshot group, native's table
//! copy), so the last key being there means every row is; the row count is
//! checked once after.

use std::time::{Duration, Instant};

use relaysync::error::{DbContext, Error, Result};

use super::measure::ho_side_cpu;
use super::relaysync_loads::relaysync_loads;
use super::rig::{sql, Rig};
use super::wait::{wait_loaded, wait_sites};
use crate::demo::cluster_error;

/// What the two loads measured: `[relaysync, native]` each.
pub(super) struct Loads {
    pub(super) full_sync: [f64; 2],
    /// `pg_dump | psql` of the same table into one site.
    pub(super) dump: f64,
    pub(super) up_events: [f64; 2],
    /// HO-side CPU seconds during `up_events`.
    pub(super) up_ho_cpu: [f64; 2],
}

/// HO's table of the full sync, as `CREATE TABLE` for `name`.
fn full_table(name: &str) -> String {
    format!(
        "CREATE TABLE public.{name} (id int8 PRIMARY KEY, name text, qty int, price numeric(10,2),
                                      at timestamptz NOT NULL DEFAULT now())"
    )
}

/// The device events table, at the sites and at HO.
fn events_table(name: &str) -> String {
    format!(
        "CREATE TABLE public.{name} (site text, id int8, device text, kind text,
                                      at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (site, id))"
    )
}

/// Runs both loads through both systems: `rows` rows to every site and
/// `events` events in all up to HO.
pub(super) async fn run(
    rig: &mut Rig,
    rows: i64,
    events: i64,
    out: &mut dyn FnMut(&str),
) -> Result<Loads> {
    let k = rig.codes.len();
    let ho = sql(&rig.ho.url("ho")).await?;
    out(&format!("loads: {rows} rows at HO for the full syncs"));
    for t in ["full_native", "full_rs"] {
        ho.batch_execute(&format!(
            "{}; INSERT INTO public.{t} (id, name, qty, price)
               SELECT g, 'item ' || g, g % 1000, (g % 100000) / 100.0 FROM generate_series(1, {rows}) g",
            full_table(t)
        ))
        .await
        .ctx(|| format!("filling {t} at HO"))?;
        ho.batch_execute(&format!("VACUUM (ANALYZE) public.{t}"))
            .await
            .ctx(|| format!("vacuuming {t} at HO"))?;
    }
    ho.batch_execute(&format!(
        "{}; {};",
        events_table("events_native"),
        events_table("events_rs")
    ))
    .await
    .ctx(|| "creating the events tables at HO".into())?;
    for i in 0..k {
        for db in [format!("nload_{i:02}"), format!("rsload_{i:02}")] {
            rig.site.create_database(&db).await.map_err(cluster_error)?;
        }
        sql(&rig.site.url(&format!("nload_{i:02}")))
            .await?
            .batch_execute(&format!(
                "{}; {}; CREATE PUBLICATION native_up FOR TABLE public.events_native",
                full_table("full_native"),
                events_table("events_native")
            ))
            .await
            .ctx(|| "creating the native load tables at a site".into())?;
        sql(&rig.site.url(&format!("rsload_{i:02}")))
            .await?
            .batch_execute(&format!(
                "{}; {};",
                full_table("full_rs"),
                events_table("events_rs")
            ))
            .await
            .ctx(|| "creating relaysync's load tables at a site".into())?;
    }

    let dump = dump_restore(rig).await?;
    out(&format!(
        "loads: pg_dump | psql into one site in {dump:.3} s"
    ));
    let native_full = native_full_sync(rig, rows, out).await?;
    let (native_up, native_cpu) = native_up_events(rig, events, out).await?;
    let (rs_full, rs_up, rs_cpu) = relaysync_loads(rig, rows, events, out).await?;
    Ok(Loads {
        full_sync: [rs_full, native_full],
        dump,
        up_events: [rs_up, native_up],
        up_ho_cpu: [rs_cpu, native_cpu],
    })
}

/// `pg_dump -t full_native | psql` into an empty database at the sites' cluster.
async fn dump_restore(rig: &Rig) -> Result<f64> {
    rig.site
        .create_database("dump_ref")
        .await
        .map_err(cluster_error)?;
    let bin = relaysync_cluster::bindir().map_err(cluster_error)?;
    let script = format!(
        "{bin}/pg_dump -h 127.0.0.1 -p {} -U postgres -t public.full_native ho | {bin}/psql -q -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p {} -U postgres -d dump_ref >/dev/null",
        rig.ho.port(),
        rig.site.port(),
        bin = bin.display(),
    );
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .status()
    })
    .await
    .expect("pg_dump does not panic")
    .map_err(|source| Error::Io {
        context: "running pg_dump | psql".into(),
        source,
    })?;
    if !status.success() {
        return Err(Error::Setup(format!(
            "bench: pg_dump | psql failed: {status}"
        )));
    }
    Ok(started.elapsed().as_secs_f64())
}

/// K subscriptions with `copy_data = true`, made one after another: seconds
/// from the first until every site holds every row.
async fn native_full_sync(rig: &Rig, rows: i64, out: &mut dyn FnMut(&str)) -> Result<f64> {
    let k = rig.codes.len();
    out(&format!("native: full_sync of {rows} rows to {k} sites"));
    let ho = sql(&rig.ho.url("ho")).await?;
    ho.batch_execute("CREATE PUBLICATION native_full FOR TABLE public.full_native")
        .await
        .ctx(|| "creating the native full-sync publication".into())?;
    let mut sites = Vec::new();
    for i in 0..k {
        sites.push(sql(&rig.site.url(&format!("nload_{i:02}"))).await?);
    }
    let before = super::measure::rig_cpu(rig);
    let started = Instant::now();
    for (i, s) in sites.iter().enumerate() {
        s.batch_execute(&format!(
            "CREATE SUBSCRIPTION nfull_{i:02} CONNECTION 'host=127.0.0.1 port={} dbname=ho user=postgres'
             PUBLICATION native_full WITH (copy_data = true)",
            rig.ho.port()
        ))
        .await
        .ctx(|| "creating a native full-sync subscription".into())?;
    }
    let done = wait_loaded(
        &sites,
        &format!("SELECT count(*) FROM public.full_native WHERE id = {rows}"),
        1,
        "SELECT count(*) FROM public.full_native",
        rows,
    )
    .await?;
    let secs = (done - started).as_secs_f64();
    out(&format!(
        "native: full_sync at every site after {secs:.3} s; {}",
        super::measure::cpu_since(rig, before)
    ));
    for (i, s) in sites.iter().enumerate() {
        s.batch_execute(&format!("DROP SUBSCRIPTION nfull_{i:02}"))
            .await
            .ctx(|| "dropping a native full-sync subscription".into())?;
    }
    Ok(secs)
}

/// One subscription at HO per site; every site inserts its share at once:
/// seconds until HO holds them all, and HO's CPU seconds meanwhile.
async fn native_up_events(rig: &Rig, events: i64, out: &mut dyn FnMut(&str)) -> Result<(f64, f64)> {
    let k = rig.codes.len();
    out(&format!(
        "native: up_events, {events} events from {k} sites"
    ));
    let ho = sql(&rig.ho.url("ho")).await?;
    for i in 0..k {
        ho.batch_execute(&format!(
            "CREATE SUBSCRIPTION nup_{i:02} CONNECTION 'host=127.0.0.1 port={} dbname=nload_{i:02} user=postgres'
             PUBLICATION native_up WITH (copy_data = false)",
            rig.site.port()
        ))
        .await
        .ctx(|| "creating a native subscription at HO".into())?;
    }
    // Their workers running, as relaysync's are.
    wait_sites(
        std::slice::from_ref(&ho),
        "SELECT count(*) FROM pg_stat_subscription WHERE subname LIKE 'nup_%' AND pid IS NOT NULL",
        k as i64,
        Duration::from_secs(120),
    )
    .await?;
    let dbs: Vec<String> = (0..k).map(|i| format!("nload_{i:02}")).collect();
    let before = super::measure::rig_cpu(rig);
    let (up, cpu, committed) = up_events(rig, &dbs, "events_native", events, None).await?;
    out(&format!(
        "native: up_events committed at the sites in {committed:.3} s, at HO after {up:.3} s; HO CPU {cpu:.2} s; {}",
        super::measure::cpu_since(rig, before)
    ));
    for i in 0..k {
        ho.batch_execute(&format!("DROP SUBSCRIPTION nup_{i:02}"))
            .await
            .ctx(|| "dropping a native subscription at HO".into())?;
    }
    Ok((up, cpu))
}

/// Every site database of `dbs` inserts its share of `events` into `table`
/// in one transaction, all at once: seconds from the start until HO holds
/// them all, HO's CPU seconds (with the HO worker `ho_worker`) meanwhile,
/// and seconds until every site had committed.
pub(super) async fn up_events(
    rig: &Rig,
    dbs: &[String],
    table: &str,
    events: i64,
    ho_worker: Option<u32>,
) -> Result<(f64, f64, f64)> {
    let ho = sql(&rig.ho.url("ho")).await?;
    let share = events / dbs.len() as i64;
    let total = share * dbs.len() as i64;
    let mut sites = Vec::new();
    for db in dbs {
        sites.push(sql(&rig.site.url(db)).await?);
    }
    let cpu_before = ho_side_cpu(rig, ho_worker);
    let started = Instant::now();
    let insert = format!(
        "INSERT INTO public.{table} (site, id, device, kind)
         SELECT $1::text, g, 'door-' || (g % 16), 'badge' FROM generate_series(1, $2::int8) g"
    );
    let inserts = sites
        .iter()
        .zip(dbs)
        .map(|(s, db)| async { s.execute(insert.as_str(), &[db, &share]).await });
    for r in futures_util::future::join_all(inserts).await {
        r.ctx(|| "inserting events at a site".into())?;
    }
    let committed = started.elapsed().as_secs_f64();
    // Each site's events land in one transaction: its last one marks them all.
    let last: Vec<String> = dbs.iter().map(|db| format!("('{db}', {share})")).collect();
    let done = wait_loaded(
        std::slice::from_ref(&ho),
        &format!(
            "SELECT count(*) FROM public.{table} WHERE (site, id) IN ({})",
            last.join(", ")
        ),
        dbs.len() as i64,
        &format!("SELECT count(*) FROM public.{table}"),
        total,
    )
    .await?;
    let cpu = ho_side_cpu(rig, ho_worker) - cpu_before;
    Ok(((done - started).as_secs_f64(), cpu, committed))
}

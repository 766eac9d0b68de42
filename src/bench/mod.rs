//! `relaysync bench`: relaysync beside PostgreSQL's own logical replication
//! (one CREATE SUBSCRIPTION per site), on the same throwaway clusters, in one
//! run, with the same settings for both.
//!
//! Each system gets its own table (`bench_rs`, `bench_native`) and runs its
//! workloads while the other is paused (relaysync's workers stopped, the
//! subscriptions disabled) and caught up, so neither pays for the other.

mod busy;
mod fleet;
mod loads;
mod measure;
mod native;
mod relaysync_loads;
mod rig;
mod routing;
mod signing;
mod wait;
mod workloads;

use std::process::Command;

use relaysync::error::{DbContext, Error, Result};

pub use fleet::run as run_fleet;
use native::{pgoutput_bytes, set_native};
use rig::sql;
pub use routing::run as run_routing;
pub use signing::run as run_signing;
use wait::catch_up;
use workloads::{latency_run, run_system, Results, System};

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct Args {
    pub rows: u64,
    pub sites: usize,
    pub json: bool,
    /// The sites reach the relay as its owner (no row-level security).
    pub owner_sites: bool,
    /// Only `full_sync` and `up_events`.
    pub loads_only: bool,
    /// Only the latency runs (one hop, cascade, busy).
    pub latency_only: bool,
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

/// Runs the benchmark and prints the table (or JSON).
pub async fn run(args: Args) -> Result<Vec<Measure>> {
    if args.sites == 0 || args.rows == 0 {
        return Err(Error::Config(
            "bench needs --rows and --sites of at least 1".into(),
        ));
    }
    let json = args.json;
    let mut say = progress(json);
    say(&format!(
        "starting clusters: HO, relay, and {} site databases per system",
        args.sites
    ));
    let mut rig = rig::build(args).await?;

    let mut results = Vec::new();
    if !args.loads_only {
        results = main_workloads(&mut rig, args, &mut say).await?;
    }
    if !args.latency_only {
        let events = (args.rows / 10).max(args.sites as u64) as i64;
        let loads = loads::run(&mut rig, args.rows as i64, events, &mut say).await?;
        results.extend(load_measures(&loads));
    }
    // The workers of every workload stopped: their memory high-water mark.
    results.push(Measure {
        name: "peak_rss_mb",
        relaysync: rig.peak_rss_kb as f64 / 1024.0,
        native: f64::NAN,
        unit: "MB",
    });
    print(&results, args, json);
    Ok(results)
}

/// The workloads of a running deployment, native first (relaysync stopped),
/// then relaysync (the subscriptions disabled), then the latency of the
/// native cascade (both stopped); relaysync's and the cascade's latency a
/// second time under a CPU hog. With `latency_only`, the latency runs alone.
async fn main_workloads(
    rig: &mut rig::Rig,
    args: Args,
    say: &mut dyn FnMut(&str),
) -> Result<Vec<Measure>> {
    let ho = sql(&rig.ho.url("ho")).await?;
    set_native(rig, true).await?;
    catch_up(&ho, System::Native.slots()).await?;
    let (native, native_latency) = workloads_of(rig, System::Native, args, say).await?;
    set_native(rig, false).await?;

    rig.start_workers()?;
    catch_up(&ho, System::Relaysync.slots()).await?;
    // A slot made now reads the same changes as pgoutput sends them, for
    // the relay_bytes comparison.
    if !args.latency_only {
        ho.execute(
            "SELECT pg_create_logical_replication_slot('bench_wire', 'pgoutput')",
            &[],
        )
        .await
        .ctx(|| "creating the wire slot".into())?;
    }
    let (ours, ours_latency) = workloads_of(rig, System::Relaysync, args, say).await?;
    let ours_busy = latency_run(rig, System::Relaysync, true, say).await?;
    rig.stop_workers();

    say("native cascade: HO, a subscriber on the relay's server that publishes what it applies, a subscription to it per site");
    native::cascade(rig).await?;
    catch_up(&ho, System::Cascade.slots()).await?;
    let cascade = latency_run(rig, System::Cascade, false, say).await?;
    let cascade_busy = latency_run(rig, System::Cascade, true, say).await?;
    native::stop_cascade(rig).await?;

    let mut out = Vec::new();
    if let (Some(ours), Some(native)) = (ours, native) {
        say("reading the pgoutput stream of the bulk insert");
        let wire = pgoutput_bytes(&ho, "bench_wire", &ours.after_bulk_insert).await?;
        let _ = ho
            .execute("SELECT pg_drop_replication_slot('bench_wire')", &[])
            .await;
        out = measures(&ours, &native, wire);
    }
    out.extend(latency_measures(&Latencies {
        native: native_latency,
        ours: ours_latency,
        cascade,
        ours_busy,
        cascade_busy,
    }));
    Ok(out)
}

/// `system`'s workloads, running and caught up (with `latency_only`, its
/// latency run alone): their results, if run, and its latencies.
async fn workloads_of(
    rig: &rig::Rig,
    system: System,
    args: Args,
    say: &mut dyn FnMut(&str),
) -> Result<(Option<Results>, Vec<f64>)> {
    if args.latency_only {
        return Ok((None, latency_run(rig, system, false, say).await?));
    }
    let results = run_system(rig, system, args, say).await?;
    let latencies = results.latencies.clone();
    Ok((Some(results), latencies))
}

/// The latency runs' rows' seconds from HO to a site, each sorted.
struct Latencies {
    /// One-hop native (a subscription per site to HO).
    native: Vec<f64>,
    ours: Vec<f64>,
    /// Native through an intermediate server.
    cascade: Vec<f64>,
    /// relaysync under the CPU hog.
    ours_busy: Vec<f64>,
    /// The cascade under the CPU hog.
    cascade_busy: Vec<f64>,
}

/// The latency lines: relaysync against one-hop native, against the
/// cascade, and against the cascade under the CPU hog.
fn latency_measures(l: &Latencies) -> Vec<Measure> {
    let line = |name, ours: &[f64], native: &[f64], p| Measure {
        name,
        relaysync: percentile(ours, p),
        native: percentile(native, p),
        unit: "s",
    };
    vec![
        line("latency_p50", &l.ours, &l.native, 0.5),
        line("latency_p99", &l.ours, &l.native, 0.99),
        line("latency_p50_cascade", &l.ours, &l.cascade, 0.5),
        line("latency_p99_cascade", &l.ours, &l.cascade, 0.99),
        line("latency_p50_busy", &l.ours_busy, &l.cascade_busy, 0.5),
        line("latency_p99_busy", &l.ours_busy, &l.cascade_busy, 0.99),
    ]
}

/// The result table from both systems' runs, the pgoutput bytes per change
/// and the workers' peak memory.
fn measures(ours: &Results, native: &Results, wire: f64) -> Vec<Measure> {
    vec![
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
    ]
}

/// The full sync's and up_events' lines.
fn load_measures(loads: &loads::Loads) -> Vec<Measure> {
    vec![
        Measure {
            name: "full_sync",
            relaysync: loads.full_sync[0],
            native: loads.full_sync[1],
            unit: "s",
        },
        Measure {
            name: "pg_dump_psql",
            relaysync: f64::NAN,
            native: loads.dump,
            unit: "s (one site)",
        },
        Measure {
            name: "up_events",
            relaysync: loads.up_events[0],
            native: loads.up_events[1],
            unit: "s",
        },
        Measure {
            name: "up_events_ho_cpu",
            relaysync: loads.up_ho_cpu[0],
            native: loads.up_ho_cpu[1],
            unit: "cpu s",
        },
    ]
}

/// Where progress lines go: stderr, unless the output is JSON.
fn progress(json: bool) -> impl Fn(&str) {
    move |m: &str| {
        if !json {
            eprintln!("bench: {m}");
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
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
        "{:<19} {:>12} {:>12}  {:<20} {:>7}",
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
            "{:<19} {:>12} {:>12}  {:<20} {:>7}",
            m.name,
            fmt(m.relaysync),
            fmt(m.native),
            m.unit,
            fmt(m.ratio())
        );
    }
    println!("(ratio = relaysync / native: lower is better)");
}

//! `relaysync bench --fleet N`: what the number of registered sites costs.
//! The same scenario runs twice on throwaway clusters, with two registered
//! sites and with N, of which two run in both: the relay is first filled
//! with 100k packets for a site that never comes (as a fleet's silent
//! sites leave them), then come `site add` for every site, an idle `ho sync
//! --once`, an idle `pos sync --once`, a 10k-row delta to the running
//! sites and `status`, each timed as an operator runs it (the binary).
//! With N sites it then starts a streaming standby of the relay and
//! measures the relay primary's CPU per site sync, the sites reading
//! packets from the primary and from the standby (`[relay] read_url`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use relaysync::error::{DbContext, Error, Result};
use relaysync::relay::{role_name, Relay, SiteRole};
use relaysync_cluster::Cluster;

use super::measure::{cluster_cpu, spread};
use super::rig::{bench_config, cli, sql, start_clusters, table_sql, write_config};
use super::wait::wait_sites;
use crate::demo::cluster_error;

/// Sites that run in both scenarios.
const RUNNING: usize = 2;
/// Packets in the relay for a site that never comes.
const PREFILL: i64 = 100_000;
/// Rows of the delta sent to the running sites.
const DELTA_ROWS: i64 = 10_000;
/// Runs of each idle figure; the best counts.
const TRIES: usize = 3;
/// Rounds of the read_url figure, each reading once from the primary and
/// once from the standby.
const READ_ROUNDS: usize = 8;
/// Rows of each round's delta in the read_url figure.
const READ_ROWS: i64 = 100_000;

/// One scenario's figures.
#[derive(Debug, Clone)]
struct Figures {
    site_add: f64,
    idle_ho: f64,
    idle_pos: f64,
    delta: f64,
    status: f64,
    /// Relay-primary CPU per site sync, when measured.
    reads: Option<Reads>,
}

/// The relay primary's CPU (ms) per site sync of a delta, each round.
#[derive(Debug, Clone, Default)]
struct Reads {
    /// The sites reading packets from the primary.
    primary: Vec<f64>,
    /// The sites reading packets from a standby.
    standby: Vec<f64>,
}

/// Runs the scenario with two sites and with `fleet`, and prints both.
pub async fn run(fleet: usize, json: bool) -> Result<()> {
    if fleet < RUNNING {
        return Err(Error::Config(format!(
            "bench --fleet needs at least {RUNNING} sites"
        )));
    }
    let say = |m: &str| {
        if !json {
            eprintln!("bench: {m}");
        }
    };
    let two = scenario(RUNNING, &say, false).await?;
    let many = scenario(fleet, &say, true).await?;
    print(fleet, &two, &many, json);
    Ok(())
}

fn print(fleet: usize, two: &Figures, many: &Figures, json: bool) {
    // The mean, not the median: CPU time comes in clock ticks (10 ms),
    // coarse beside one round's figure; the mean of the rounds is finer.
    let mean_spread = |v: &[f64]| {
        let (_, min, max) = spread(v);
        (v.iter().sum::<f64>() / v.len() as f64, min, max)
    };
    let reads = many.reads.as_ref().map(|r| {
        let (primary, standby) = (mean_spread(&r.primary), mean_spread(&r.standby));
        (primary, standby, standby.0 / primary.0)
    });
    let rows = [
        ("site_add", many.site_add, two.site_add, "ms/site"),
        ("idle_ho_sync", many.idle_ho, two.idle_ho, "s"),
        ("idle_pos_sync", many.idle_pos, two.idle_pos, "s"),
        ("delta_10k", many.delta, two.delta, "s"),
        ("status", many.status, two.status, "s"),
    ];
    if json {
        let results: Vec<_> = rows
            .iter()
            .map(|(name, f, t, unit)| {
                serde_json::json!({"name": name, "fleet": f, "two_sites": t, "unit": unit,
                                   "ratio": f / t})
            })
            .collect();
        let read_url = reads.map(|(p, s, ratio)| {
            let figure = |(mean, min, max): (f64, f64, f64)| {
                serde_json::json!({"mean": mean, "min": min, "max": max})
            };
            serde_json::json!({"name": "relay_primary_cpu_per_site_sync", "unit": "ms",
                               "from_primary": figure(p), "from_standby": figure(s),
                               "ratio": ratio})
        });
        println!(
            "{}",
            serde_json::json!({ "results": results, "fleet": fleet, "read_url": read_url })
        );
        return;
    }
    println!("relaysync bench --fleet {fleet}: {RUNNING} sites running, {PREFILL} packets for a silent site");
    println!(
        "{:<14} {:>10} {:>10}  {:<8} {:>6}",
        "figure", "fleet", "two_sites", "unit", "ratio"
    );
    for (name, f, t, unit) in rows {
        println!("{name:<14} {f:>10.3} {t:>10.3}  {unit:<8} {:>6.2}", f / t);
    }
    if let Some(((p, p_min, p_max), (s, s_min, s_max), ratio)) = reads {
        println!(
            "relay primary CPU per site sync of a {READ_ROWS}-row delta ({fleet} sites, mean of \
             {READ_ROUNDS} rounds, min–max): reading from the primary {p:.1} ms ({p_min:.1}–{p_max:.1}), from a \
             standby ([relay] read_url) {s:.1} ms ({s_min:.1}–{s_max:.1}); ratio {ratio:.2}"
        );
    }
}

/// The clusters and files of one scenario.
struct Fleet {
    ho: Cluster,
    relay: Cluster,
    site: Cluster,
    dir: PathBuf,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn scenario(sites: usize, say: &dyn Fn(&str), reads: bool) -> Result<Figures> {
    say(&format!("{sites} registered sites: starting clusters"));
    let f = start(sites).await?;
    let relay = Relay::connect(&f.relay.url("relay")).await?;
    prefill(&f).await?;
    say(&format!("{sites} registered sites: site add"));
    let mut passwords = Vec::new();
    let started = Instant::now();
    for i in 0..sites {
        let code = code(i);
        let password = crate::cli::site::generate_password()?;
        let role = SiteRole::Create {
            name: role_name(&code)?,
            password: password.clone(),
        };
        relay.add_site(&code, &role).await?;
        if i < RUNNING {
            passwords.push(password);
        }
    }
    let site_add = started.elapsed().as_secs_f64() * 1000.0 / sites as f64;
    configure(&f, &passwords).await?;
    say(&format!("{sites} registered sites: first syncs"));
    let ho = f.dir.join("ho.toml");
    let site_cfg = |i: usize| f.dir.join(format!("site_{i}.toml"));
    cli(&ho, &["ho", "sync", "--once"])?;
    for i in 0..RUNNING {
        cli(&site_cfg(i), &["pos", "sync", "--once"])?;
    }
    // The statistics autovacuum keeps on a relay that has run for a while.
    sql(&f.relay.url("relay"))
        .await?
        .batch_execute("ANALYZE relay.packets, relay.acks, relay.sites, relay.sync_requests")
        .await
        .ctx(|| "analyzing the relay".into())?;
    say(&format!("{sites} registered sites: measuring"));
    let idle_ho = best(|| cli(&ho, &["ho", "sync", "--once"]))?;
    let idle_pos = best(|| cli(&site_cfg(0), &["pos", "sync", "--once"]))?;
    sql(&f.ho.url("ho"))
        .await?
        .execute(
            "INSERT INTO public.bench_rs (id, name, qty, price)
             SELECT g, 'item ' || g, g % 100, g / 100.0 FROM generate_series(1, $1::int8) g",
            &[&DELTA_ROWS],
        )
        .await
        .ctx(|| "writing the delta at HO".into())?;
    let started = Instant::now();
    cli(&ho, &["ho", "sync", "--once"])?;
    for i in 0..RUNNING {
        cli(&site_cfg(i), &["pos", "sync", "--once"])?;
    }
    let delta = started.elapsed().as_secs_f64();
    let status = best(|| cli(&ho, &["status", "--json"]))?;
    let reads = if reads {
        Some(standby_reads(&f, &passwords, say).await?)
    } else {
        None
    };
    Ok(Figures {
        site_add,
        idle_ho,
        idle_pos,
        delta,
        status,
        reads,
    })
}

/// Starts a streaming standby of the relay, then runs rounds of a
/// `READ_ROWS`-row update through HO and the running sites, the sites
/// reading packets from the primary and from the standby in turn; each
/// round, the relay primary's CPU (its walsender to the standby included)
/// per site sync.
async fn standby_reads(f: &Fleet, passwords: &[String], say: &dyn Fn(&str)) -> Result<Reads> {
    say("reading from a standby: starting it");
    let standby = f
        .relay
        .start_standby("fleet-standby")
        .map_err(cluster_error)?;
    let standby_config = |i: usize| f.dir.join(format!("site_{i}_standby.toml"));
    for (i, password) in passwords.iter().enumerate() {
        let role = role_name(&code(i))?;
        let mut cfg = site_config(f, i, f.relay.url_as(&role, password, "relay"));
        if let Some(relay) = cfg.relay.as_mut() {
            relay.read_url = Some(standby.url_as(&role, password, "relay").into());
        }
        write_config(&standby_config(i), &cfg)?;
    }
    let ho = sql(&f.ho.url("ho")).await?;
    let primary = sql(&f.relay.url("relay")).await?;
    let replica = [sql(&standby.url("relay")).await?];
    ho.execute(
        "INSERT INTO public.bench_rs (id, name, qty, price)
         SELECT g, 'item ' || g, g % 100, g / 100.0 FROM generate_series($1::int8 + 1, $2::int8) g",
        &[&DELTA_ROWS, &READ_ROWS],
    )
    .await
    .ctx(|| "writing the rows the rounds update at HO".into())?;
    cli(&f.dir.join("ho.toml"), &["ho", "sync", "--once"])?;
    for i in 0..RUNNING {
        cli(
            &f.dir.join(format!("site_{i}.toml")),
            &["pos", "sync", "--once"],
        )?;
    }
    let mut reads = Reads::default();
    for round in 0..READ_ROUNDS * 2 {
        let from_standby = round % 2 == 1;
        ho.execute(
            "UPDATE public.bench_rs SET qty = qty + 1 WHERE id <= $1",
            &[&READ_ROWS],
        )
        .await
        .ctx(|| "updating the rounds' rows at HO".into())?;
        cli(&f.dir.join("ho.toml"), &["ho", "sync", "--once"])?;
        // The packets are on the standby before the sites look there.
        let lsn: String = primary
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .ctx(|| "reading the relay's WAL position".into())?
            .get(0);
        wait_sites(
            &replica,
            &format!("SELECT (pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn)::int::int8"),
            1,
            Duration::from_secs(120),
        )
        .await?;
        let before = cluster_cpu(&f.relay);
        for i in 0..RUNNING {
            let config = if from_standby {
                standby_config(i)
            } else {
                f.dir.join(format!("site_{i}.toml"))
            };
            cli(&config, &["pos", "sync", "--once"])?;
        }
        let ms = (cluster_cpu(&f.relay) - before) * 1000.0 / RUNNING as f64;
        if from_standby {
            reads.standby.push(ms);
        } else {
            reads.primary.push(ms);
        }
    }
    Ok(reads)
}

/// A running site's config, reaching the relay at `relay_url`.
fn site_config(f: &Fleet, site: usize, relay_url: String) -> relaysync::config::Config {
    bench_config(
        f.ho.url("ho"),
        relay_url,
        code(site),
        f.site.url(&format!("rs_{site:02}")),
    )
}

fn code(i: usize) -> String {
    format!("site-{i:04}")
}

/// The clusters, HO's table and the running sites' databases.
async fn start(sites: usize) -> Result<Fleet> {
    let name = if sites == RUNNING {
        "fleet-two"
    } else {
        "fleet"
    };
    let (ho, relay, site, dir) = start_clusters(name, Vec::new(), Vec::new(), Vec::new()).await?;
    ho.create_database("ho").await.map_err(cluster_error)?;
    relay
        .create_database("relay")
        .await
        .map_err(cluster_error)?;
    sql(&ho.url("ho"))
        .await?
        .batch_execute(&table_sql("bench_rs", false))
        .await
        .ctx(|| "creating the bench table at HO".into())?;
    for i in 0..RUNNING {
        let db = format!("rs_{i:02}");
        site.create_database(&db).await.map_err(cluster_error)?;
        sql(&site.url(&db))
            .await?
            .batch_execute(&table_sql("bench_rs", true))
            .await
            .ctx(|| "creating the bench table at a site".into())?;
    }
    let mut client = relaysync::postgres::connect("relay", &relay.url("relay")).await?;
    relaysync::relay::migrate(&mut client).await?;
    Ok(Fleet {
        ho,
        relay,
        site,
        dir,
    })
}

/// 100k down packets (one small part each) for a site that never comes.
async fn prefill(f: &Fleet) -> Result<()> {
    sql(&f.relay.url("relay"))
        .await?
        .execute(
            "WITH p AS (
               INSERT INTO relay.packets (direction, origin, kind, group_id, targets, row_count, byte_count)
               SELECT 'down', 'ho', 'delta', 0, '{silent}', 1, 16 FROM generate_series(1, $1::int8)
               RETURNING id)
             INSERT INTO relay.packet_parts (packet_id, seq, table_name, target, row_count, arrow_ipc, checksum)
             SELECT id, 0, 'public.bench_rs', 'silent', 1, '\\x00'::bytea, sha256('\\x00'::bytea) FROM p",
            &[&PREFILL],
        )
        .await
        .ctx(|| "filling the relay".into())?;
    Ok(())
}

/// HO's config (the relay's owner) and each running site's (its own role).
async fn configure(f: &Fleet, passwords: &[String]) -> Result<()> {
    let ho = site_config(f, 0, f.relay.url("relay"));
    relaysync::ho::setup(&ho).await?;
    write_config(&f.dir.join("ho.toml"), &ho)?;
    for (i, password) in passwords.iter().enumerate() {
        let url = f.relay.url_as(&role_name(&code(i))?, password, "relay");
        let cfg = site_config(f, i, url);
        relaysync::pos::setup(&cfg).await?;
        write_config(&f.dir.join(format!("site_{i}.toml")), &cfg)?;
    }
    Ok(())
}

/// The best of a few runs.
fn best(run: impl Fn() -> Result<f64>) -> Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..TRIES {
        best = best.min(run()?);
    }
    Ok(best)
}

//! `relaysync bench --fleet N`: what the number of registered sites costs.
//! The same scenario runs twice on throwaway clusters, with two registered
//! sites and with N, of which two run in both: the relay is first filled
//! with 100k packets for a site that never comes (as a fleet's silent
//! sites leave them), then come `site add` for every site, an idle `ho sync
//! --once`, an idle `pos sync --once`, a 10k-row delta to the running
//! sites and `status`, each timed as an operator runs it (the binary).

use std::path::PathBuf;
use std::time::Instant;

use relaysync::error::{DbContext, Error, Result};
use relaysync::relay::{role_name, Relay, SiteRole};
use relaysync_cluster::Cluster;

use super::rig::{bench_config, cli, sql, start_clusters, table_sql, write_config};
use crate::demo::cluster_error;

/// Sites that run in both scenarios.
const RUNNING: usize = 2;
/// Packets in the relay for a site that never comes.
const PREFILL: i64 = 100_000;
/// Rows of the delta sent to the running sites.
const DELTA_ROWS: i64 = 10_000;
/// Runs of each idle figure; the best counts.
const TRIES: usize = 3;

/// One scenario's figures.
#[derive(Debug, Clone, Copy)]
struct Figures {
    site_add: f64,
    idle_ho: f64,
    idle_pos: f64,
    delta: f64,
    status: f64,
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
    let two = scenario(RUNNING, &say).await?;
    let many = scenario(fleet, &say).await?;
    print(fleet, &two, &many, json);
    Ok(())
}

fn print(fleet: usize, two: &Figures, many: &Figures, json: bool) {
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
        println!(
            "{}",
            serde_json::json!({ "results": results, "fleet": fleet })
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

async fn scenario(sites: usize, say: &dyn Fn(&str)) -> Result<Figures> {
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
    Ok(Figures {
        site_add,
        idle_ho,
        idle_pos,
        delta,
        status,
    })
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
    let config = |site: usize, relay_url: String| {
        bench_config(
            f.ho.url("ho"),
            relay_url,
            code(site),
            f.site.url(&format!("rs_{site:02}")),
        )
    };
    let ho = config(0, f.relay.url("relay"));
    relaysync::ho::setup(&ho).await?;
    write_config(&f.dir.join("ho.toml"), &ho)?;
    for (i, password) in passwords.iter().enumerate() {
        let url = f.relay.url_as(&role_name(&code(i))?, password, "relay");
        let cfg = config(i, url);
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

//! `relaysync bench --routing`: what routing by parent costs HO beside
//! routing by a column. HO holds N parent rows routed by their site column,
//! and two child tables: `child_col` routed by its own site column, and
//! `child_par` routed by its parent (`route = "parent:public.parent"`).
//! With every worker streaming, 100k child rows are inserted in one
//! transaction into one table, then into the other, a few times each; HO's
//! CPU (its cluster and relaysync's HO worker) per 100k changes is the
//! figure, medians with min–max.
//!
//! HO's memory for the parents' routes: the HO worker's resident memory,
//! started fresh once caught up, with the N parents and with none.

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use relaysync::error::{DbContext, Error, Result};
use relaysync::relay::{role_name, Relay, SiteRole};
use relaysync_cluster::Cluster;
use tokio_postgres::Client;

use super::measure::{cluster_cpu, cpu_seconds, rss_kb, spread};
use super::rig::{cli, spawn_worker, sql, start_clusters, write_file};
use crate::demo::cluster_error;

/// Child rows per run.
const CHANGES: i64 = 100_000;
/// Runs per route.
const RUNS: usize = 3;

const HO_SCHEMA: &str = "
CREATE TABLE public.parent (id int8 PRIMARY KEY, site text NOT NULL, name text);
CREATE TABLE public.child_col (id int8 PRIMARY KEY, parent_id int8 NOT NULL REFERENCES public.parent,
                               site text NOT NULL, qty int);
CREATE TABLE public.child_par (id int8 PRIMARY KEY, parent_id int8 NOT NULL REFERENCES public.parent, qty int);
ALTER TABLE public.parent REPLICA IDENTITY FULL;
ALTER TABLE public.child_col REPLICA IDENTITY FULL;
ALTER TABLE public.child_par REPLICA IDENTITY FULL;";

const SITE_SCHEMA: &str = "
CREATE TABLE public.parent (id int8 PRIMARY KEY, site text NOT NULL, name text);
CREATE TABLE public.child_col (id int8 PRIMARY KEY, parent_id int8 NOT NULL, site text NOT NULL, qty int);
CREATE TABLE public.child_par (id int8 PRIMARY KEY, parent_id int8 NOT NULL, qty int);";

const TABLES: &str = "[[tables]]\nname = \"public.parent\"\nroute = \"column:site\"\n\
[[tables]]\nname = \"public.child_col\"\nroute = \"column:site\"\n\
[[tables]]\nname = \"public.child_par\"\nroute = \"parent:public.parent\"\n";

/// The clusters, files and workers of the scenario.
struct Scene {
    ho: Cluster,
    relay: Cluster,
    site: Cluster,
    dir: PathBuf,
    sites: usize,
    ho_worker: Option<Child>,
    site_workers: Vec<Child>,
}

impl Drop for Scene {
    fn drop(&mut self) {
        self.stop_ho();
        for mut w in self.site_workers.drain(..) {
            stop(&mut w);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn stop(child: &mut Child) {
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let _ = child.wait();
}

fn code(i: usize) -> String {
    format!("site-{i:02}")
}

/// Runs the scenario with `parents` parent rows and `sites` sites, and prints it.
pub async fn run(parents: u64, sites: usize, json: bool) -> Result<()> {
    if parents == 0 || sites == 0 {
        return Err(Error::Config(
            "bench --routing needs --rows (parents) and --sites of at least 1".into(),
        ));
    }
    let say = |m: &str| {
        if !json {
            eprintln!("bench: {m}");
        }
    };
    say(&format!(
        "routing: {parents} parents, {sites} sites: starting clusters"
    ));
    let mut scene = start(sites).await?;
    let ho = sql(&scene.ho.url("ho")).await?;
    say("routing: HO's worker with no parent row");
    scene.start_ho()?;
    let empty_kb = scene.settled_rss(&ho).await?;
    say(&format!("routing: {parents} parents to the sites"));
    ho.execute(
        &format!(
            "INSERT INTO public.parent SELECT g, '{}' || lpad((g % {sites})::text, 2, '0'), 'p' || g
               FROM generate_series(1, $1::int8) g",
            "site-"
        ),
        &[&(parents as i64)],
    )
    .await
    .ctx(|| "inserting the parents".into())?;
    scene.wait_rows("public.parent", parents as i64).await?;
    say("routing: HO's worker started again, with the parents' routes");
    scene.stop_ho();
    let started = Instant::now();
    scene.start_ho()?;
    let full_kb = scene.settled_rss(&ho).await?;
    let startup = started.elapsed().as_secs_f64();
    let (mut column, mut parent) = (Vec::new(), Vec::new());
    let mut next = 1i64;
    for run in 0..RUNS {
        say(&format!("routing: run {} of {RUNS}", run + 1));
        column.push(
            scene
                .insert_children(&ho, "child_col", next, parents)
                .await?,
        );
        parent.push(
            scene
                .insert_children(&ho, "child_par", next, parents)
                .await?,
        );
        next += CHANGES;
    }
    print(
        parents,
        &column,
        &parent,
        (full_kb - empty_kb.min(full_kb)) as f64 / 1024.0,
        startup,
        json,
    );
    Ok(())
}

fn print(parents: u64, column: &[f64], parent: &[f64], routes_mb: f64, startup: f64, json: bool) {
    let (c, p) = (spread(column), spread(parent));
    let bytes_per_parent = routes_mb * 1024.0 * 1024.0 / parents as f64;
    if json {
        let out = serde_json::json!({
            "results": [
                {"name": "routed_by_parent_ho_cpu", "parent": p.0, "parent_min": p.1, "parent_max": p.2,
                 "column": c.0, "column_min": c.1, "column_max": c.2,
                 "unit": "cpu s/100k changes", "ratio": p.0 / c.0},
                {"name": "parent_routes_mb", "value": routes_mb, "parents": parents,
                 "bytes_per_parent": bytes_per_parent, "unit": "MB"},
                {"name": "ho_worker_start_s", "value": startup, "parents": parents, "unit": "s"},
            ],
        });
        println!("{out}");
        return;
    }
    println!("relaysync bench --routing: {parents} parents, {RUNS} runs of {CHANGES} child rows per route");
    println!(
        "routed_by_parent_ho_cpu: parent {:.3} ({:.3}–{:.3}), column {:.3} ({:.3}–{:.3}) cpu s/100k changes; ratio {:.2}",
        p.0, p.1, p.2, c.0, c.1, c.2, p.0 / c.0
    );
    println!(
        "parent_routes_mb: {routes_mb:.1} MB for {parents} parents ({bytes_per_parent:.0} bytes each), HO's worker caught up in {startup:.1} s"
    );
}

/// The clusters, the databases and schemas, the sites registered and set up.
async fn start(sites: usize) -> Result<Scene> {
    let senders = vec![format!("max_wal_senders = {}", 2 * sites + 8)];
    let (ho, relay, site, dir) =
        start_clusters("routing", senders.clone(), Vec::new(), senders).await?;
    ho.create_database("ho").await.map_err(cluster_error)?;
    relay
        .create_database("relay")
        .await
        .map_err(cluster_error)?;
    sql(&ho.url("ho"))
        .await?
        .batch_execute(HO_SCHEMA)
        .await
        .ctx(|| "creating HO's tables".into())?;
    let mut client = relaysync::postgres::connect("relay", &relay.url("relay")).await?;
    relaysync::relay::migrate(&mut client).await?;
    let relay_api = Relay::connect(&relay.url("relay")).await?;
    let scene = Scene {
        ho,
        relay,
        site,
        dir,
        sites,
        ho_worker: None,
        site_workers: Vec::new(),
    };
    let ho_cfg = scene.dir.join("ho.toml");
    write_file(&ho_cfg, &scene.config(0, &scene.relay.url("relay")))?;
    cli(&ho_cfg, &["setup", "ho"])?;
    let mut scene = scene;
    for i in 0..sites {
        let db = format!("rt_{i:02}");
        scene
            .site
            .create_database(&db)
            .await
            .map_err(cluster_error)?;
        sql(&scene.site.url(&db))
            .await?
            .batch_execute(SITE_SCHEMA)
            .await
            .ctx(|| "creating a site's tables".into())?;
        let password = crate::cli::site::generate_password()?;
        let role = role_name(&code(i))?;
        relay_api
            .add_site(
                &code(i),
                &SiteRole::Create {
                    name: role.clone(),
                    password: password.clone(),
                },
            )
            .await?;
        let path = scene.dir.join(format!("site_{i:02}.toml"));
        write_file(
            &path,
            &scene.config(i, &scene.relay.url_as(&role, &password, "relay")),
        )?;
        cli(&path, &["setup", "pos"])?;
        let worker = spawn_worker(&path, "pos")?;
        scene.site_workers.push(worker);
    }
    Ok(scene)
}

impl Scene {
    fn config(&self, site: usize, relay_url: &str) -> String {
        format!(
            "[ho]\nurl = \"{}\"\n[relay]\nurl = \"{relay_url}\"\n[pos]\nsite = \"{}\"\nurl = \"{}\"\n[sync]\ninterval = \"0s\"\n{TABLES}",
            self.ho.url("ho"),
            code(site),
            self.site.url(&format!("rt_{site:02}"))
        )
    }

    fn start_ho(&mut self) -> Result<()> {
        self.ho_worker = Some(spawn_worker(&self.dir.join("ho.toml"), "ho")?);
        Ok(())
    }

    fn stop_ho(&mut self) {
        if let Some(mut w) = self.ho_worker.take() {
            stop(&mut w);
        }
    }

    fn ho_cpu(&self) -> f64 {
        cluster_cpu(&self.ho) + self.ho_worker.as_ref().map_or(0.0, |w| cpu_seconds(w.id()))
    }

    /// The HO worker's resident memory once its slot is caught up with HO.
    async fn settled_rss(&self, ho: &Client) -> Result<u64> {
        let deadline = Instant::now() + Duration::from_secs(600);
        // A mark in HO's WAL: caught up once the slot is confirmed past it.
        let mark: tokio_postgres::types::PgLsn = ho
            .query_one("SELECT pg_logical_emit_message(false, 'bench', '')", &[])
            .await
            .ctx(|| "writing WAL at HO".into())?
            .get(0);
        let caught_up = "SELECT count(*) FROM pg_replication_slots
                          WHERE slot_name = 'relaysync' AND active AND confirmed_flush_lsn >= $1";
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let n: i64 = ho
                .query_one(caught_up, &[&mark])
                .await
                .ctx(|| caught_up.into())?
                .get(0);
            if n == 1 {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::Setup("bench: HO's worker did not catch up".into()));
            }
        }
        Ok(self.ho_worker.as_ref().map_or(0, |w| rss_kb(w.id())))
    }

    /// Waits until every site holds `rows` rows of `table` in all (each its own).
    async fn wait_rows(&self, table: &str, rows: i64) -> Result<()> {
        let mut clients = Vec::new();
        for i in 0..self.sites {
            clients.push(sql(&self.site.url(&format!("rt_{i:02}"))).await?);
        }
        let deadline = Instant::now() + Duration::from_secs(3600);
        let q = format!("SELECT count(*) FROM {table}");
        loop {
            let mut total = 0;
            for c in &clients {
                total += c
                    .query_one(&q, &[])
                    .await
                    .ctx(|| q.clone())?
                    .get::<_, i64>(0);
            }
            if total == rows {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Setup(format!(
                    "bench: the sites hold {total} rows of {table}, not {rows}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// CHANGES rows of `table` from id `first`, in one transaction, spread
    /// over the parents; HO's CPU seconds until every site has its own.
    async fn insert_children(
        &self,
        ho: &Client,
        table: &str,
        first: i64,
        parents: u64,
    ) -> Result<f64> {
        let before = self.ho_cpu();
        let site = if table == "child_col" {
            format!(
                ", 'site-' || lpad(((1 + g % {parents}) % {})::text, 2, '0')",
                self.sites
            )
        } else {
            String::new()
        };
        let cols = if table == "child_col" {
            "id, parent_id, qty, site"
        } else {
            "id, parent_id, qty"
        };
        ho.execute(
            &format!(
                "INSERT INTO public.{table} ({cols}) SELECT g, 1 + g % {parents}, 1{site}
                   FROM generate_series($1::int8, $1::int8 + $2::int8 - 1) g"
            ),
            &[&first, &CHANGES],
        )
        .await
        .ctx(|| format!("inserting into {table}"))?;
        self.wait_rows(&format!("public.{table}"), first + CHANGES - 1)
            .await?;
        Ok((self.ho_cpu() - before) * 100_000.0 / CHANGES as f64)
    }
}

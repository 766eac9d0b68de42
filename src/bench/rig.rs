//! The bench's rig: throwaway clusters (HO, relay, and one cluster holding
//! every site database of both systems), their tables, relaysync set up as
//! a DBA sets it up, and its workers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use relaysync::config::{Config, HoConfig, PosConfig, RelayConfig, TableConfig};
use relaysync::error::{DbContext, Error, Result};
use relaysync::postgres::connect;
use relaysync_cluster::Cluster;
use tokio_postgres::Client;

use super::measure::peak_rss_kb;
use super::Args;
use crate::demo::cluster_error;

pub(super) fn table_sql(name: &str, site: bool) -> String {
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
pub(super) struct Rig {
    pub(super) ho: Cluster,
    pub(super) relay: Cluster,
    pub(super) site: Cluster,
    pub(super) dir: PathBuf,
    pub(super) codes: Vec<String>,
    /// Each site's relay role and password (None: the sites reach the relay
    /// as its owner, bypassing row-level security, for comparison).
    pub(super) site_roles: Option<Vec<(String, String)>>,
    pub(super) workers: Vec<Child>,
    pub(super) ho_worker: Option<u32>,
    pub(super) peak_rss_kb: u64,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop_workers();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rig_config(rig: &Rig, site: usize) -> Config {
    let relay_url = match &rig.site_roles {
        Some(roles) => rig.relay.url_as(&roles[site].0, &roles[site].1, "relay"),
        None => rig.relay.url("relay"),
    };
    bench_config(
        rig.ho.url("ho"),
        relay_url,
        rig.codes[site].clone(),
        rig.site.url(&format!("rs_{site:02}")),
    )
}

/// A bench config: HO, the relay (as `relay_url`'s role) and site `code`,
/// streaming `public.bench_rs` to every site.
pub(super) fn bench_config(
    ho_url: String,
    relay_url: String,
    code: String,
    site_url: String,
) -> Config {
    Config {
        ho: Some(HoConfig {
            url: ho_url.into(),
            slot: "relaysync".into(),
            publication: "relaysync".into(),
            ..Default::default()
        }),
        relay: Some(RelayConfig {
            url: relay_url.into(),
            ..Default::default()
        }),
        pos: Some(PosConfig {
            site: code,
            url: site_url.into(),
            slot: "relaysync_up".into(),
            publication: "relaysync_up".into(),
            ..Default::default()
        }),
        sync: relaysync::config::SyncConfig {
            interval: "0s".into(),
            ..Default::default()
        },
        packet: Default::default(),
        tables: vec![TableConfig {
            name: "public.bench_rs".into(),
            route: "all".into(),
            schema: None,
        }],
        upstream: Vec::new(),
        metrics: Default::default(),
        retention: Default::default(),
        network: Default::default(),
        console: Default::default(),
    }
}

pub(super) fn write_config(path: &Path, cfg: &Config) -> Result<()> {
    write_signed_config(path, cfg, None)
}

/// [`write_config`]; with `signing` (HO's private key), HO signs with it
/// and the site trusts its public key (`signing`.pub).
pub(super) fn write_signed_config(path: &Path, cfg: &Config, signing: Option<&Path>) -> Result<()> {
    let (ho, relay, pos) = (cfg.ho()?, cfg.relay()?, cfg.pos()?);
    let (ho_key, pos_trust) = match signing {
        Some(key) => (
            format!("signing_key = \"{}\"\n", key.display()),
            format!("trust = \"{}.pub\"\n", key.display()),
        ),
        None => (String::new(), String::new()),
    };
    let read_url = relay
        .read_url
        .as_ref()
        .map(|u| format!("read_url = \"{}\"\n", u.expose()))
        .unwrap_or_default();
    let text = format!(
        "[ho]\nurl = \"{}\"\n{ho_key}[relay]\nurl = \"{}\"\n{read_url}[pos]\nsite = \"{}\"\nurl = \"{}\"\n{pos_trust}\
         [sync]\ninterval = \"0s\"\n[[tables]]\nname = \"public.bench_rs\"\nroute = \"all\"\n",
        ho.url.expose(),
        relay.url.expose(),
        pos.site,
        pos.url.expose()
    );
    write_file(path, &text)
}

/// Writes `text` to `path`.
pub(super) fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|source| Error::Io {
        context: format!("writing {}", path.display()),
        source,
    })
}

/// This very binary, which the bench runs as users run it.
pub(super) fn exe() -> Result<PathBuf> {
    std::env::current_exe().map_err(|source| Error::Io {
        context: "finding the relaysync binary".into(),
        source,
    })
}

/// Runs the binary with `config` and `args`; its wall time in seconds.
pub(super) fn cli(config: &Path, args: &[&str]) -> Result<f64> {
    let started = Instant::now();
    let out = Command::new(exe()?)
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RELAYSYNC_LOG", "error")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Io {
            context: format!("running relaysync {}", args.join(" ")),
            source,
        })?;
    let elapsed = started.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(Error::Config(format!(
            "relaysync {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(elapsed)
}

/// Starts `relaysync --config CONFIG ROLE run` (its log at
/// RELAYSYNC_BENCH_LOG, errors only by default).
pub(super) fn spawn_worker(config: &Path, role: &str) -> Result<Child> {
    Command::new(exe()?)
        .arg("--config")
        .arg(config)
        .args([role, "run"])
        .env(
            "RELAYSYNC_LOG",
            std::env::var("RELAYSYNC_BENCH_LOG").unwrap_or_else(|_| "error".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|source| Error::Io {
            context: format!("starting relaysync {role} run"),
            source,
        })
}

impl Rig {
    pub(super) fn stop_workers(&mut self) {
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

    /// Starts `relaysync --config CONFIG ROLE run` as a worker of the rig; returns its pid.
    pub(super) fn spawn(&mut self, config: &Path, role: &str) -> Result<u32> {
        let child = spawn_worker(config, role)?;
        let pid = child.id();
        self.workers.push(child);
        Ok(pid)
    }

    pub(super) fn start_workers(&mut self) -> Result<()> {
        let ho = self.spawn(&self.dir.join("ho.toml"), "ho")?;
        self.ho_worker = Some(ho);
        for i in 0..self.codes.len() {
            self.spawn(&self.dir.join(format!("site_{i:02}.toml")), "pos")?;
        }
        Ok(())
    }
}

pub(super) async fn sql(url: &str) -> Result<Client> {
    connect("ho", url).await
}

/// Starts HO's, the relay's and the sites' clusters (named `NAME-ho`, …;
/// the sites' with `site_settings`) and makes the run's directory.
pub(super) async fn start_clusters(
    name: &'static str,
    ho_settings: Vec<String>,
    relay_settings: Vec<String>,
    site_settings: Vec<String>,
) -> Result<(Cluster, Cluster, Cluster, PathBuf)> {
    let (ho, relay, site) = tokio::task::spawn_blocking(move || -> relaysync_cluster::Result<_> {
        let settings: Vec<&str> = site_settings.iter().map(String::as_str).collect();
        let ho_settings: Vec<&str> = ho_settings.iter().map(String::as_str).collect();
        let relay_settings: Vec<&str> = relay_settings.iter().map(String::as_str).collect();
        Ok((
            Cluster::start(&format!("{name}-ho"), &ho_settings)?,
            Cluster::start(&format!("{name}-relay"), &relay_settings)?,
            Cluster::start(&format!("{name}-sites"), &settings)?,
        ))
    })
    .await
    .expect("cluster start does not panic")
    .map_err(cluster_error)?;
    let dir = std::env::temp_dir().join(format!("relaysync-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
        context: format!("creating {}", dir.display()),
        source,
    })?;
    Ok((ho, relay, site, dir))
}

/// Starts the clusters and sets both systems up, each on its own table.
pub(super) async fn build(args: Args) -> Result<Rig> {
    let k = args.sites;
    // Native's apply workers, and during its full sync a table-sync worker
    // and a temporary slot per subscription; HO subscribes to every site
    // for up_events.
    let senders = (4 * k + 16).max(64);
    let wal = [
        format!("max_wal_senders = {senders}"),
        format!("max_replication_slots = {senders}"),
    ];
    let workers = |n: usize| {
        [
            format!("max_logical_replication_workers = {}", n + 4),
            format!("max_worker_processes = {}", n + 16),
        ]
    };
    // Commits as a production server makes them (the throwaway clusters
    // commit asynchronously): with asynchronous commits at HO, both systems
    // would see its changes only at the WAL writer's 200 ms rounds.
    // Native's apply workers choose their own (off), as they do anywhere.
    let durable = ["synchronous_commit = on".to_string()];
    let ho_settings = [wal.as_slice(), &workers(k), &durable].concat();
    // The sites' cluster also holds the native cascade's K subscriptions.
    let site_settings = [wal.as_slice(), &workers(3 * k), &durable].concat();
    let (ho, relay, site, dir) =
        start_clusters("bench", ho_settings, durable.to_vec(), site_settings).await?;
    let codes: Vec<String> = (0..k).map(|i| format!("site-{i:02}")).collect();
    let site_roles = if args.owner_sites {
        None
    } else {
        let mut roles = Vec::new();
        for code in &codes {
            let password = crate::cli::site::generate_password()?;
            roles.push((relaysync::relay::role_name(code)?, password));
        }
        Some(roles)
    };
    let rig = Rig {
        ho,
        relay,
        site,
        dir,
        codes,
        site_roles,
        workers: Vec::new(),
        ho_worker: None,
        peak_rss_kb: 0,
    };
    create_tables(&rig).await?;
    setup_relaysync(&rig).await?;
    super::native::subscribe(&rig).await?;
    Ok(rig)
}

/// The databases, and the two bench tables at HO and in each site database.
async fn create_tables(rig: &Rig) -> Result<()> {
    let k = rig.codes.len();
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
    Ok(())
}

/// relaysync, as a DBA sets it up.
async fn setup_relaysync(rig: &Rig) -> Result<()> {
    let k = rig.codes.len();
    let mut relay_client = connect("relay", &rig.relay.url("relay")).await?;
    relaysync::relay::migrate(&mut relay_client).await?;
    let relay = relaysync::relay::Relay::connect(&rig.relay.url("relay")).await?;
    for (i, code) in rig.codes.iter().enumerate() {
        let role = match &rig.site_roles {
            Some(roles) => relaysync::relay::SiteRole::Create {
                name: roles[i].0.clone(),
                password: roles[i].1.clone(),
            },
            // Bound to a role of its own all the same; the sites connect as the owner.
            None => relaysync::relay::SiteRole::Create {
                name: relaysync::relay::role_name(code)?,
                password: crate::cli::site::generate_password()?,
            },
        };
        relay.add_site(code, &role).await?;
    }
    relaysync::ho::setup(&ho_config(rig)).await?;
    for i in 0..k {
        relaysync::pos::setup(&rig_config(rig, i)).await?;
    }
    rig.write_configs(None)
}

/// HO's worker's config: it reaches the relay as its owner, whatever the
/// sites do.
fn ho_config(rig: &Rig) -> Config {
    let mut ho_cfg = rig_config(rig, 0);
    ho_cfg.relay = Some(RelayConfig {
        url: rig.relay.url("relay").into(),
        ..Default::default()
    });
    ho_cfg
}

impl Rig {
    /// Writes the workers' configs (`ho.toml`, `site_NN.toml`); with
    /// `signing` (HO's private key), HO signs and every site checks.
    pub(super) fn write_configs(&self, signing: Option<&Path>) -> Result<()> {
        write_signed_config(&self.dir.join("ho.toml"), &ho_config(self), signing)?;
        for i in 0..self.codes.len() {
            let path = self.dir.join(format!("site_{i:02}.toml"));
            write_signed_config(&path, &rig_config(self, i), signing)?;
        }
        Ok(())
    }
}

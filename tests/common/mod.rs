//! Test harness: one set of real PostgreSQL clusters per test binary (HO,
//! relay, two sites), a fresh database and slot per test, and the
//! `relaysync` binary run as users run it.
#![allow(dead_code)]

pub mod http;
pub mod proxy;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use relaysync_cluster::Cluster;
use tokio_postgres::{Client, NoTls};

pub const SITES: [&str; 2] = ["s1", "s2"];

pub struct Clusters {
    pub ho: Cluster,
    pub relay: Cluster,
    pub sites: Vec<Cluster>,
}

/// The clusters shared by every test of this binary; they are stopped and
/// removed by their watchdog when the test process exits.
pub fn clusters() -> &'static Clusters {
    static CLUSTERS: OnceLock<Clusters> = OnceLock::new();
    CLUSTERS.get_or_init(|| Clusters {
        ho: Cluster::start("test-ho", &[]).expect("start HO cluster"),
        relay: Cluster::start("test-relay", &[]).expect("start relay cluster"),
        sites: (0..2)
            .map(|i| Cluster::start(&format!("test-site{i}"), &[]).expect("start site cluster"))
            .collect(),
    })
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

pub async fn client(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}

async fn create_db(cluster: &Cluster, name: &str) {
    cluster
        .create_database(name)
        .await
        .expect("create database");
}

/// One test's databases, slot and config file.
pub struct Bed {
    pub name: String,
    pub ho_url: String,
    pub relay_url: String,
    pub site_urls: Vec<String>,
    pub dir: PathBuf,
    pub config: PathBuf,
    /// Site code → the relay URL of its own role (`add_site`): the site's
    /// `pos` commands reach the relay with it, under row-level security.
    pub site_relay_urls: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// Environment variables for the commands run as one site (`Some(i)`)
    /// or as any (`None`), e.g. each site's own key.
    pub env: std::sync::Mutex<Vec<(Option<usize>, String, String)>>,
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Bed {
    /// Fresh databases named after the test; `schema` is run at HO and at both sites.
    pub async fn new(test: &str, schema: &str, tables: &[(&str, &str)], extra: &str) -> Bed {
        let c = clusters();
        let name = format!("{test}_{}", NEXT.fetch_add(1, Ordering::Relaxed));
        create_db(&c.ho, &name).await;
        create_db(&c.relay, &name).await;
        for s in &c.sites {
            create_db(s, &name).await;
        }
        let dir = std::env::temp_dir().join(format!("relaysync-bed-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bed = Bed {
            ho_url: c.ho.url(&name),
            relay_url: c.relay.url(&name),
            site_urls: c.sites.iter().map(|s| s.url(&name)).collect(),
            config: dir.join("relaysync.toml"),
            dir,
            name,
            site_relay_urls: Default::default(),
            env: Default::default(),
        };
        bed.write_config(tables, extra);
        for url in std::iter::once(&bed.ho_url).chain(&bed.site_urls) {
            client(url)
                .await
                .batch_execute(schema)
                .await
                .expect("schema");
        }
        bed
    }

    pub fn write_config(&self, tables: &[(&str, &str)], extra: &str) {
        let mut s = format!(
            "[ho]\nurl = \"{}\"\nslot = \"{}\"\npublication = \"{}\"\n[relay]\nurl = \"{}\"\n[pos]\nsite = \"{}\"\nurl = \"{}\"\nslot = \"{}_up\"\n{extra}\n",
            self.ho_url, self.name, self.name, self.relay_url, SITES[0], self.site_urls[0], self.name
        );
        for (t, r) in tables {
            s.push_str(&format!("[[tables]]\nname = \"{t}\"\nroute = \"{r}\"\n"));
        }
        std::fs::write(&self.config, s).unwrap();
    }

    /// The command line for `args`, as site `site` (0 or 1).
    pub fn command(&self, site: usize, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_relaysync"));
        cmd.arg("--config")
            .arg(&self.config)
            .args(args)
            .env("RELAYSYNC__POS__SITE", SITES[site])
            .env("RELAYSYNC__POS__URL", &self.site_urls[site])
            .env_remove("RELAYSYNC_FAILPOINT")
            .stdin(Stdio::null());
        for (only, key, value) in self.env.lock().unwrap().iter() {
            if only.is_none_or(|i| i == site) {
                cmd.env(key, value);
            }
        }
        if args.first() == Some(&"pos") || args.starts_with(&["setup", "pos"]) {
            if let Some(url) = self.site_relay_urls.lock().unwrap().get(SITES[site]) {
                cmd.env("RELAYSYNC__RELAY__URL", url);
            }
        }
        cmd
    }

    /// `site add CODE --role R`, R a login role of this bed made as a DBA
    /// makes it (roles are shared by every database of the cluster); the
    /// site's `pos` commands then reach the relay as R.
    pub async fn add_site(&self, code: &str) {
        let role = format!("{}_{}", self.name, code).replace(['-', '.'], "_");
        self.relay()
            .await
            .batch_execute(&format!("CREATE ROLE \"{role}\" LOGIN"))
            .await
            .expect("create the site's role");
        self.ok(0, &["site", "add", code, "--role", &role]).await;
        let url = clusters()
            .relay
            .url(&self.name)
            .replacen("postgres@", &format!("{role}@"), 1);
        self.site_relay_urls
            .lock()
            .unwrap()
            .insert(code.to_string(), url);
    }

    /// Starts a long-running `relaysync args` (`ho run`, `pos run`) as site `site`.
    pub fn spawn(&self, site: usize, args: &[&str]) -> Worker {
        Worker::start(self.command(site, args))
    }

    /// Runs `relaysync args` as site `site` and returns its output.
    pub async fn run(&self, site: usize, args: &[&str]) -> Output {
        let mut cmd = self.command(site, args);
        tokio::task::spawn_blocking(move || cmd.output().expect("run relaysync"))
            .await
            .unwrap()
    }

    /// Runs and asserts success; returns stdout.
    pub async fn ok(&self, site: usize, args: &[&str]) -> String {
        let out = self.run(site, args).await;
        assert!(
            out.status.success(),
            "relaysync {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// setup relay, both sites added, setup ho, setup pos at both sites,
    /// without syncing.
    pub async fn register(&self) {
        self.ok(0, &["setup", "relay"]).await;
        for s in SITES {
            self.add_site(s).await;
        }
        self.ok(0, &["setup", "ho"]).await;
        if std::path::Path::new(&self.key(SITES[0])).exists() {
            for s in SITES {
                let public = format!("{}.pub", self.key(s));
                self.ok(0, &["site", "key", s, "--public-key", &public])
                    .await;
            }
        }
        self.ok(0, &["setup", "pos"]).await;
        self.ok(1, &["setup", "pos"]).await;
    }

    /// Where `keys generate` puts `who`'s private key (`ho`, a site code).
    pub fn key(&self, who: &str) -> String {
        self.dir
            .join(format!("{who}.pem"))
            .to_str()
            .unwrap()
            .to_string()
    }

    /// Every side signs what it writes and checks what it applies, as the
    /// README sets it up: a key for HO and each site (`keys generate`),
    /// named by [ho] signing_key, [pos] signing_key and [pos] trust (through
    /// the environment); `register` records the sites' keys at HO.
    pub async fn sign(&self) {
        for who in ["ho", SITES[0], SITES[1]] {
            self.ok(0, &["keys", "generate", "--out", &self.key(who)])
                .await;
        }
        let mut env = self.env.lock().unwrap();
        env.push((None, "RELAYSYNC__HO__SIGNING_KEY".into(), self.key("ho")));
        env.push((
            None,
            "RELAYSYNC__POS__TRUST".into(),
            format!("{}.pub", self.key("ho")),
        ));
        for (i, site) in SITES.iter().enumerate() {
            env.push((
                Some(i),
                "RELAYSYNC__POS__SIGNING_KEY".into(),
                self.key(site),
            ));
        }
    }

    /// `register`, then the sites' first (full) sync.
    pub async fn setup(&self) {
        self.register().await;
        self.sync_all().await;
    }

    /// Runs `relaysync args` as site `site` with a failpoint and asserts it
    /// was killed there (SIGKILL).
    pub async fn run_killed_at(&self, site: usize, args: &[&str], failpoint: &str) {
        use std::os::unix::process::ExitStatusExt;
        let mut cmd = self.command(site, args);
        cmd.env("RELAYSYNC_FAILPOINT", failpoint);
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(9),
            "relaysync {args:?} was not killed at {failpoint}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// ho sync, then pos sync at both sites, then ho sync again (acks).
    pub async fn sync_all(&self) {
        self.ok(0, &["ho", "sync", "--once"]).await;
        self.ok(0, &["pos", "sync", "--once"]).await;
        self.ok(1, &["pos", "sync", "--once"]).await;
        self.ok(0, &["ho", "sync", "--once"]).await;
    }

    pub async fn ho(&self) -> Client {
        client(&self.ho_url).await
    }
    pub async fn relay(&self) -> Client {
        client(&self.relay_url).await
    }
    pub async fn site(&self, i: usize) -> Client {
        client(&self.site_urls[i]).await
    }
}

/// Every row of `query`'s result as text, as a set.
pub async fn rows(c: &Client, query: &str) -> BTreeSet<String> {
    c.query(&format!("SELECT q::text FROM ({query}) q"), &[])
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Asserts that HO's rows of `query` (and only them) are at site `site`:
/// row-by-row equality, both ways (HO EXCEPT site, site EXCEPT HO).
pub async fn assert_same(bed: &Bed, site: usize, ho_query: &str, site_query: &str) {
    let ho = rows(&bed.ho().await, ho_query).await;
    let st = rows(&bed.site(site).await, site_query).await;
    let missing: Vec<_> = ho.difference(&st).collect();
    let extra: Vec<_> = st.difference(&ho).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "site {} differs from HO for {ho_query}:\n missing at the site: {missing:?}\n extra at the site: {extra:?}",
        SITES[site]
    );
}

/// Asserts that every site holds exactly HO's rows of `table`.
pub async fn assert_table_same_everywhere(bed: &Bed, table: &str) {
    let all = format!("SELECT * FROM {table}");
    for site in 0..SITES.len() {
        assert_same(bed, site, &all, &all).await;
    }
}

/// Asserts that site `site` holds exactly HO's rows of `table` whose
/// `column` names it (a table routed by that column).
pub async fn assert_routed_same(bed: &Bed, site: usize, table: &str, column: &str) {
    assert_same(
        bed,
        site,
        &format!("SELECT * FROM {table} WHERE {column} = '{}'", SITES[site]),
        &format!("SELECT * FROM {table}"),
    )
    .await;
}

/// Asserts that every packet in the relay is PROCESSED (acked by all).
pub async fn assert_all_processed(bed: &Bed) {
    let relay = bed.relay().await;
    let q = "SELECT count(*) FROM relay.packets WHERE status <> 'PROCESSED'";
    assert_eq!(count(&relay, q).await, 0);
}

/// The first column of every row of `query`, as i64 (ids, in its order).
pub async fn ids(c: &Client, query: &str) -> Vec<i64> {
    c.query(query, &[])
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Damages the parts of relay packet `packet` (an SQL expression for its
/// id): each part's Arrow stream becomes `arrow_ipc` (an SQL expression),
/// after a copy of the parts is kept for [`restore_parts`].
pub async fn damage_parts(relay: &Client, packet: &str, arrow_ipc: &str) {
    relay
        .batch_execute(&format!(
            "CREATE TABLE kept AS SELECT * FROM relay.packet_parts WHERE packet_id = {packet};
             UPDATE relay.packet_parts SET arrow_ipc = {arrow_ipc} WHERE packet_id = {packet}"
        ))
        .await
        .unwrap();
}

/// Puts back the parts [`damage_parts`] kept.
pub async fn restore_parts(relay: &Client) {
    relay
        .batch_execute(
            "UPDATE relay.packet_parts p SET arrow_ipc = k.arrow_ipc FROM kept k
              WHERE (p.packet_id, p.seq) = (k.packet_id, k.seq)",
        )
        .await
        .unwrap();
}

pub async fn count(c: &Client, query: &str) -> i64 {
    c.query_one(query, &[])
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .get(0)
}

/// Polls `cond` until it holds or `timeout` passes.
pub async fn wait_for<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A finished process: its output, peak resident memory and run time.
pub struct Measured {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
    pub peak_rss_mb: f64,
    pub elapsed: Duration,
}

impl Measured {
    /// Asserts the worker stayed under `mb` of resident memory.
    pub fn assert_peak_rss_under(&self, what: &str, mb: f64) {
        assert!(
            self.peak_rss_mb < mb,
            "{what} worker peak RSS {:.0} MB",
            self.peak_rss_mb
        );
    }
}

/// Runs `cmd` to the end and measures its peak RSS (from wait4's rusage).
// The child is reaped by wait4 itself, which std cannot see.
#[allow(clippy::zombie_processes)]
pub fn run_measured(mut cmd: Command) -> Measured {
    use std::io::Read;
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child, with valid out-pointers.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert!(pid > 0, "wait4 failed");
    Measured {
        success: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
        peak_rss_mb: usage.ru_maxrss as f64 / 1024.0,
        elapsed: started.elapsed(),
    }
}

/// A running `relaysync … run`, killed if dropped: a failing test must not
/// leave it behind (it would also keep the test's output open, so that
/// `cargo test` never ends).
pub struct Worker(Option<std::process::Child>);

impl Worker {
    pub fn start(mut cmd: Command) -> Worker {
        Worker(Some(cmd.spawn().expect("start relaysync")))
    }

    /// A child started elsewhere, e.g. with its stdout piped.
    pub fn adopt(child: std::process::Child) -> Worker {
        Worker(Some(child))
    }

    pub fn is_running(&mut self) -> bool {
        let child = self.0.as_mut().expect("a worker not yet stopped");
        child.try_wait().expect("wait for relaysync").is_none()
    }

    /// Asks it to stop (SIGTERM) and waits: how it ended, and what it
    /// wrote where its command piped it.
    pub fn stop(mut self) -> Output {
        let child = self.0.take().expect("a worker not yet stopped");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        child.wait_with_output().expect("wait for relaysync")
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Site `site` has been silent for two hours (its acks and every site's
/// registration moved back): with `max_offline = "1h"`, HO's next syncs
/// expire it.
pub async fn make_silent(relay: &Client, site: &str) {
    relay
        .batch_execute(&format!(
            "UPDATE relay.acks SET acked_at = acked_at - interval '2 hours' WHERE site = '{site}';
             UPDATE relay.sites SET registered_at = registered_at - interval '3 hours'"
        ))
        .await
        .unwrap();
}

/// The statements of the pagila schema (`../shared/pagila`, beside the
/// project) that start with each of `starts`, in that order.
pub fn pagila(starts: &[&str]) -> String {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/pagila/pagila-schema.sql");
    let schema = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    starts
        .iter()
        .map(|start| {
            let at = schema
                .find(start)
                .unwrap_or_else(|| panic!("no `{start}` in {}", path.display()));
            let end = at + schema[at..].find(";\n").expect("statements end with ;") + 1;
            format!("{}\n", &schema[at..end])
        })
        .collect()
}

/// pagila's customer table with the key's sequence made apart (its
/// default names it; it is not OWNED BY the column).
pub fn pagila_customer() -> String {
    pagila(&[
        "CREATE SEQUENCE public.customer_customer_id_seq",
        "CREATE TABLE public.customer (",
        "ALTER TABLE ONLY public.customer\n    ADD CONSTRAINT customer_pkey",
    ])
}

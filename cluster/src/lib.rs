//! Throwaway PostgreSQL clusters: initdb into a temporary directory, a free
//! port on 127.0.0.1, the unix socket in the same directory,
//! `wal_level = logical`. Used by relaysync's `demo` and `bench` commands and
//! by its tests; a crate of its own so that the library holds the sync engine
//! only.
//!
//! When running as root the cluster runs as the `postgres` user (initdb
//! refuses root). A small watchdog shell stops the server and removes the
//! directory when the owning process goes away, even after a kill -9;
//! `Drop` does the same at once.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

/// Why a cluster could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The machine lacks something the cluster needs; the message names the fix.
    #[error("{0}")]
    Setup(String),
    /// Local I/O failed (the cluster directory, a port, a process).
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A statement failed; `context` says what was being done.
    #[error("{context}")]
    Db {
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

/// The result of a cluster operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A running throwaway cluster.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    port: u16,
    watchdog: Child,
    /// Started by [`Cluster::start_tls`]: TCP takes only TLS and passwords.
    tls: bool,
    /// The user postgres runs as (when this process is root).
    user: Option<(u32, u32)>,
}

mod tls;

pub use tls::CERT_USER;

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// The directory of PostgreSQL's server binaries: `RELAYSYNC_PG_BINDIR`,
/// else `pg_config --bindir`, else the newest `/usr/lib/postgresql/*/bin`.
pub fn bindir() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("RELAYSYNC_PG_BINDIR") {
        return Ok(PathBuf::from(dir));
    }
    let has_server = |d: &Path| d.join("initdb").exists() && d.join("postgres").exists();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_server(&dir) {
            return Ok(dir);
        }
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse().ok()?;
            let d = e.path().join("bin");
            has_server(&d).then_some((v, d))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, d)| d).ok_or_else(|| {
        Error::Setup(
            "no PostgreSQL server binaries found (initdb, postgres); install PostgreSQL 14+ \
             (Debian: apt-get install postgresql) or set RELAYSYNC_PG_BINDIR"
                .into(),
        )
    })
}

/// uid and gid of the `postgres` user when running as root.
fn run_as() -> Result<Option<(u32, u32)>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = CString::new("postgres").expect("no NUL");
    // SAFETY: getpwnam returns NULL or a pointer to a static record we read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(Error::Setup(
            "running as root, PostgreSQL needs an unprivileged user: create one with `useradd postgres`".into(),
        ));
    }
    // SAFETY: pw is non-null and points to a valid passwd record.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok(Some((uid, gid)))
}

fn command(program: &Path, user: Option<(u32, u32)>) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(program);
    if let Some((uid, gid)) = user {
        c.uid(uid).gid(gid);
    }
    c
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("finding a free port"))?;
    Ok(l.local_addr().map_err(io("finding a free port"))?.port())
}

const WATCHDOG: &str = r#"
owner=$1; dir=$2; bin=$3
"$bin/postgres" -D "$dir" >"$dir/server.log" 2>&1 &
pid=$!
stop() { kill -INT $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"; exit 0; }
trap stop TERM INT
while [ -d "/proc/$owner" ] && kill -0 $pid 2>/dev/null; do sleep 1 & wait $!; done
stop
"#;

impl Cluster {
    /// Creates and starts a cluster named `name` (used in its directory name).
    /// `settings` are extra postgresql.conf lines.
    pub fn start(name: &str, settings: &[&str]) -> Result<Cluster> {
        Cluster::start_with(name, settings, None)
    }

    /// Like [`Cluster::start`], with `ssl = on`: a throwaway CA (its
    /// certificate in [`Cluster::ca_file`]) signs a server certificate for
    /// `localhost` and `127.0.0.1` (subjectAltNames), and pg_hba.conf takes
    /// TCP connections only over TLS with a SCRAM password (`hostssl …
    /// scram-sha-256`). [`Cluster::url`] then goes through the unix socket;
    /// [`Cluster::tls_url`] is how a user connects.
    pub fn start_tls(name: &str, settings: &[&str]) -> Result<Cluster> {
        Cluster::start_with(name, settings, Some(tls::ServerCert::AltNames))
    }

    /// [`Cluster::start_tls`] with an older kind of server certificate: no
    /// subjectAltName, its subject's CN `localhost` names the server.
    pub fn start_tls_common_name(name: &str, settings: &[&str]) -> Result<Cluster> {
        Cluster::start_with(name, settings, Some(tls::ServerCert::CommonName))
    }

    /// A new empty directory for a cluster named `name`, owned by `user`.
    fn new_dir(name: &str, user: Option<(u32, u32)>) -> Result<PathBuf> {
        let dir = std::env::temp_dir().join(format!(
            "relaysync-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(io(format!("giving {} to the postgres user", dir.display())))?;
        }
        Ok(dir)
    }

    fn start_with(name: &str, settings: &[&str], tls: Option<tls::ServerCert>) -> Result<Cluster> {
        let bin = bindir()?;
        let user = run_as()?;
        let dir = Cluster::new_dir(name, user)?;
        let out = command(&bin.join("initdb"), user)
            .args(["-D"])
            .arg(&dir)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .output()
            .map_err(io("running initdb"))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(Error::Setup(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        if let Some(cert) = tls {
            tls::prepare(&dir, user, cert)?;
        }
        let mut base = String::from(
            "wal_level = logical\nmax_replication_slots = 64\nmax_wal_senders = 64\n\
             max_connections = 200\nfsync = off\nfull_page_writes = off\n\
             synchronous_commit = off\nlogging_collector = off\n",
        );
        if tls.is_some() {
            base.push_str(tls::SETTINGS);
        }
        for s in settings {
            base.push_str(s);
            base.push('\n');
        }
        Cluster::launch(dir, user, &base, tls.is_some())
    }

    /// Starts postgres on the data directory `dir` (made by initdb or
    /// pg_basebackup) on a free port, its socket in `dir`, with `settings`
    /// appended to its postgresql.auto.conf.
    fn launch(
        dir: PathBuf,
        user: Option<(u32, u32)>,
        settings: &str,
        tls: bool,
    ) -> Result<Cluster> {
        let bin = bindir()?;
        let conf_path = dir.join("postgresql.auto.conf");
        let kept = std::fs::read_to_string(&conf_path).unwrap_or_default();
        let mut last_err = None;
        for _ in 0..5 {
            if let (Some(e), false) = (&last_err, dir.exists()) {
                // postgres exited, and its watchdog removed the directory.
                return Err(Error::Setup(format!("{e}")));
            }
            let port = free_port()?;
            let conf = format!(
                "{kept}\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n{settings}",
                dir.display()
            );
            std::fs::write(&conf_path, conf).map_err(io("writing postgresql.auto.conf"))?;
            if let Some((uid, gid)) = user {
                let _ = std::os::unix::fs::chown(&conf_path, Some(uid), Some(gid));
            }
            let watchdog = command(Path::new("/bin/sh"), user)
                .args(["-c", WATCHDOG, "watchdog"])
                .arg(std::process::id().to_string())
                .arg(&dir)
                .arg(&bin)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(io("starting postgres"))?;
            let mut cluster = Cluster {
                dir: dir.clone(),
                port,
                watchdog,
                tls,
                user,
            };
            match cluster.wait_ready(Duration::from_secs(60)) {
                Ok(()) => return Ok(cluster),
                Err(e) => {
                    let _ = cluster.watchdog.kill();
                    let _ = cluster.watchdog.wait();
                    // Keep the directory for the next try: forget without Drop.
                    std::mem::forget(cluster);
                    last_err = Some(e);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(last_err.unwrap_or_else(|| Error::Setup("postgres did not start".into())))
    }

    /// A streaming standby of this cluster (pg_basebackup -R): a copy that
    /// follows its WAL, read-only until [`Cluster::promote`].
    pub fn start_standby(&self, name: &str) -> Result<Cluster> {
        let bin = bindir()?;
        let dir = Cluster::new_dir(name, self.user)?;
        std::fs::remove_dir(&dir).map_err(io(format!("preparing {}", dir.display())))?;
        let out = command(&bin.join("pg_basebackup"), self.user)
            .arg("-D")
            .arg(&dir)
            .arg("-h")
            .arg(&self.dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-R",
                "-X",
                "stream",
                "--checkpoint=fast",
                "--no-sync",
            ])
            .output()
            .map_err(io("running pg_basebackup"))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(Error::Setup(format!(
                "pg_basebackup failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        // The primary's pid file and log came along with the copy.
        let _ = std::fs::remove_file(dir.join("postmaster.pid"));
        Cluster::launch(dir, self.user, "hot_standby = on\n", self.tls)
    }

    /// Stops the server (a fast shutdown: its standbys receive all of its
    /// WAL first) and waits until it is gone; its directory goes with it.
    pub fn stop(&self) {
        // SAFETY: sending SIGTERM to our own child process.
        unsafe {
            libc::kill(self.watchdog.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.dir.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Promotes a standby to a primary and waits until it takes writes.
    pub fn promote(&mut self) -> Result<()> {
        let bin = bindir()?;
        let out = command(&bin.join("pg_ctl"), self.user)
            .args(["promote", "-w", "-D"])
            .arg(&self.dir)
            .output()
            .map_err(io("running pg_ctl promote"))?;
        if !out.status.success() {
            return Err(Error::Setup(format!(
                "pg_ctl promote failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        self.wait_ready(Duration::from_secs(60))
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let pid_file = self.dir.join("postmaster.pid");
        loop {
            if let Ok(s) = std::fs::read_to_string(&pid_file) {
                let lines: Vec<&str> = s.lines().collect();
                // (A hot standby is "ready" once it takes read-only
                // connections.)
                if lines.len() >= 8
                    && lines[7].trim() == "ready"
                    && lines[3].trim() == self.port.to_string()
                {
                    return Ok(());
                }
            }
            if let Ok(Some(_)) = self.watchdog.try_wait() {
                let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
                return Err(Error::Setup(format!(
                    "postgres exited at start: {}",
                    log.trim()
                )));
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
                return Err(Error::Setup(format!(
                    "postgres in {} was not ready within {timeout:?}: {}",
                    self.dir.display(),
                    log.trim()
                )));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The TCP port the cluster listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the data and the unix socket.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A connection URL for `database` as the `postgres` superuser (through
    /// the unix socket on a TLS cluster, whose TCP connections need TLS and a
    /// password).
    pub fn url(&self, database: &str) -> String {
        if self.tls {
            let socket = self.dir.display().to_string().replace('/', "%2F");
            format!("postgres://postgres@{socket}:{}/{database}", self.port)
        } else {
            format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
        }
    }

    /// The CA certificate (PEM) that signed a TLS cluster's server
    /// certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join(tls::CA_FILE)
    }

    /// The client certificate and key (PEM) for [`CERT_USER`], whom a TLS
    /// cluster authenticates by certificate (`hostssl … cert`).
    pub fn client_cert(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.join(tls::CLIENT_CERT.0),
            self.dir.join(tls::CLIENT_CERT.1),
        )
    }

    /// A URL for `database` as `user` with `password` (letters and digits)
    /// over TLS, verified as libpq's `verify-full` does, on a cluster from
    /// [`Cluster::start_tls`].
    pub fn tls_url(&self, user: &str, password: &str, database: &str) -> String {
        format!(
            "postgres://{user}:{password}@localhost:{}/{database}?sslmode=verify-full&sslrootcert={}",
            self.port,
            self.ca_file().display()
        )
    }

    /// A connection URL for `database` as `user` with `password` (letters
    /// and digits).
    pub fn url_as(&self, user: &str, password: &str, database: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// Creates a database (no error if it exists).
    pub async fn create_database(&self, name: &str) -> Result<()> {
        let (client, connection) = tokio_postgres::connect(&self.url("postgres"), NoTls)
            .await
            .map_err(|source| Error::Db {
                context: format!("connecting to the cluster in {}", self.dir.display()),
                source,
            })?;
        tokio::spawn(connection);
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await
            .map_err(|source| Error::Db {
                context: "looking up a database".into(),
                source,
            })?;
        if exists.is_none() {
            client
                .batch_execute(&format!(
                    "CREATE DATABASE \"{}\"",
                    name.replace('"', "\"\"")
                ))
                .await
                .map_err(|source| Error::Db {
                    context: format!("creating database {name}"),
                    source,
                })?;
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SAFETY: sending SIGTERM to our own child process.
        unsafe {
            libc::kill(self.watchdog.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.watchdog.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

//! How relaysync's connections meet a network that fails silently: TCP
//! keepalives and `tcp_user_timeout` on every socket (libpq's URL settings,
//! or the defaults here), and `[network] deadline` on every round trip
//! (see watch.rs).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::config::{Host, TargetSessionAttrs};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::watch::{Layer, Monitor, WatchTls, Watched};

/// `[network] deadline` when not configured.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

static DEADLINE_MS: AtomicU64 = AtomicU64::new(DEFAULT_DEADLINE.as_millis() as u64);

/// Sets how long a round trip may go without a byte before the connection
/// is looked at (and dropped, unless its statement is still running), and
/// how long a replication stream may stay silent.
pub fn set_deadline(deadline: Duration) {
    DEADLINE_MS.store(deadline.as_millis().max(1) as u64, Ordering::Relaxed);
}

/// The deadline of every round trip (`[network] deadline`).
pub fn deadline() -> Duration {
    Duration::from_millis(DEADLINE_MS.load(Ordering::Relaxed))
}

/// libpq's TCP settings a URL may hold. They are read here, not by
/// tokio-postgres: it reads `tcp_user_timeout` in seconds (libpq: ms) and
/// knows no `keepalives_count`.
pub(crate) const TCP_KEYS: [&str; 6] = [
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "keepalives_retries",
    "tcp_user_timeout",
];

/// Keepalive probes start after this long idle,
pub(crate) const KEEPALIVES_IDLE: Duration = Duration::from_secs(30);
/// are sent this often,
pub(crate) const KEEPALIVES_INTERVAL: Duration = Duration::from_secs(10);
/// and this many unanswered ones end the connection.
pub(crate) const KEEPALIVES_COUNT: u32 = 3;

/// Applies the URL's TCP settings (`pairs`, libpq's units) to `config`, and
/// the defaults for those it does not give: keepalives after 30 s idle,
/// every 10 s, three unanswered end the connection; data unacknowledged for
/// twice the deadline ends it too.
pub(crate) fn tcp_settings(config: &mut Config, pairs: &[(String, String)]) -> Result<(), String> {
    config
        .keepalives(true)
        .keepalives_idle(KEEPALIVES_IDLE)
        .keepalives_interval(KEEPALIVES_INTERVAL)
        .keepalives_retries(KEEPALIVES_COUNT)
        .tcp_user_timeout(deadline() * 2);
    for (key, value) in pairs {
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{key} '{value}' is not a whole number"))
        };
        match key.as_str() {
            "keepalives" => {
                config.keepalives(number()? != 0);
            }
            "keepalives_idle" => {
                config.keepalives_idle(Duration::from_secs(number()?));
            }
            "keepalives_interval" => {
                config.keepalives_interval(Duration::from_secs(number()?));
            }
            "keepalives_count" | "keepalives_retries" => {
                config.keepalives_retries(number()? as u32);
            }
            // libpq: milliseconds; 0 leaves the system's default.
            "tcp_user_timeout" => {
                config.tcp_user_timeout(Duration::from_millis(number()?));
            }
            _ => {}
        }
    }
    Ok(())
}

/// A byte stream of either kind.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Stream = Watched<Box<dyn Io>>;

/// Why a connection could not be made.
pub(super) enum Failure {
    /// The server was reached and refused (or TLS failed).
    Pg(tokio_postgres::Error),
    /// No server could be reached.
    Io(io::Error),
}

/// Opens a connection as `config` says, trying its hosts in turn (skipping
/// a read-only one when `target_session_attrs=read-write`), with its socket
/// watched; the connection is driven in the background until the deadline
/// finds it dead.
pub(super) async fn connect(
    role: &'static str,
    config: &Config,
    connector: &MakeRustlsConnect,
) -> Result<Client, Failure> {
    let hosts = config.get_hosts();
    let ports = config.get_ports();
    let mut last = Failure::Io(io::Error::new(
        io::ErrorKind::InvalidInput,
        "the URL names no host",
    ));
    for (i, host) in hosts.iter().enumerate() {
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        // libpq's hostaddr: where to connect, the host naming the server.
        let addr = config.get_hostaddrs().get(i).copied();
        match connect_host(role, config, connector.clone(), (host, addr), port).await {
            Ok(client) => return Ok(client),
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn connect_host(
    role: &'static str,
    config: &Config,
    mut connector: MakeRustlsConnect,
    (host, addr): (&Host, Option<std::net::IpAddr>),
    port: u16,
) -> Result<Client, Failure> {
    let timeout = config.get_connect_timeout().copied();
    let (socket, hostname): (Box<dyn Io>, String) = match host {
        Host::Tcp(name) => (
            Box::new(tcp(config, name, addr, port, timeout).await?),
            name.clone(),
        ),
        Host::Unix(dir) => {
            let path = dir.join(format!(".s.PGSQL.{port}"));
            let socket = within(timeout, tokio::net::UnixStream::connect(path)).await?;
            (Box::new(socket), String::new())
        }
    };
    let monitor = Monitor::new();
    let stream = Watched::new(socket, monitor.clone(), Layer::Socket);
    let tls = MakeTlsConnect::<Stream>::make_tls_connect(&mut connector, &hostname)
        .map_err(|e| match e {})?;
    let tls = WatchTls {
        inner: tls,
        monitor: monitor.clone(),
    };
    // Boxed as Send: the compiler cannot otherwise prove the workers'
    // futures Send through tokio-postgres's generic connect.
    let raw: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send + '_>> =
        Box::pin(config.connect_raw(stream, tls));
    let (client, connection) = raw.await.map_err(Failure::Pg)?;
    monitor.start();
    let probe = Probe::new(config, &connector, role);
    tokio::spawn(drive(role, connection, monitor, probe));
    if config.get_target_session_attrs() == TargetSessionAttrs::ReadWrite {
        let read_only = client
            .query_one("SHOW transaction_read_only", &[])
            .await
            .map_err(Failure::Pg)?;
        if read_only.get::<_, String>(0) == "on" {
            return Err(Failure::Io(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the server is read-only (target_session_attrs=read-write)",
            )));
        }
    }
    Ok(client)
}

/// A TCP connection to `name:port` (each of its addresses in turn, or
/// `addr` when given), with the keepalive and user-timeout settings of
/// `config`.
pub(super) async fn tcp(
    config: &Config,
    name: &str,
    addr: Option<std::net::IpAddr>,
    port: u16,
    timeout: Option<Duration>,
) -> Result<tokio::net::TcpStream, Failure> {
    let addrs: Vec<std::net::SocketAddr> = match addr {
        Some(ip) => vec![(ip, port).into()],
        None => tokio::net::lookup_host((name.to_string(), port))
            .await
            .map_err(Failure::Io)?
            .collect(),
    };
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{name} has no address"));
    for addr in addrs {
        match within(timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(stream) => {
                set_options(config, &stream).map_err(Failure::Io)?;
                return Ok(stream);
            }
            Err(Failure::Io(e)) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(Failure::Io(last))
}

fn set_options(config: &Config, stream: &tokio::net::TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let socket = socket2::SockRef::from(stream);
    if config.get_keepalives() {
        let mut keepalive = socket2::TcpKeepalive::new().with_time(config.get_keepalives_idle());
        if let Some(interval) = config.get_keepalives_interval() {
            keepalive = keepalive.with_interval(interval);
        }
        if let Some(count) = config.get_keepalives_retries() {
            keepalive = keepalive.with_retries(count);
        }
        socket.set_tcp_keepalive(&keepalive)?;
    }
    #[cfg(target_os = "linux")]
    if let Some(t) = config.get_tcp_user_timeout() {
        socket.set_tcp_user_timeout(Some(*t))?;
    }
    Ok(())
}

async fn within<T>(
    timeout: Option<Duration>,
    connect: impl std::future::Future<Output = io::Result<T>>,
) -> Result<T, Failure> {
    let result = match timeout {
        Some(t) => tokio::time::timeout(t, connect)
            .await
            .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))),
        None => connect.await,
    };
    result.map_err(Failure::Io)
}

/// Drives `connection` until it ends or the watchdog finds it dead (then it
/// is dropped: every request on it fails as a lost connection).
async fn drive<C>(role: &'static str, connection: C, monitor: Arc<Monitor>, probe: Probe)
where
    C: std::future::Future<Output = Result<(), tokio_postgres::Error>>,
{
    tokio::select! {
        ended = connection => {
            if let Err(e) = ended {
                tracing::debug!(role, error = %e, "connection closed");
            }
        }
        silent = watchdog(&monitor, &probe) => {
            crate::telemetry::connection_lost(role);
            tracing::warn!(
                role,
                silent_s = silent.as_secs(),
                "no answer from the {role} database within [network] deadline; the connection is dropped and the step retried on a new one"
            );
        }
    }
}

/// Resolves when the connection owes an answer, the server is waiting on
/// the socket, nothing has moved for the deadline, and the server is not
/// running the statement: the answer was lost.
async fn watchdog(monitor: &Monitor, probe: &Probe) -> Duration {
    let deadline = deadline();
    let every = (deadline / 10).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(silent) = monitor.silent_for() else {
            continue;
        };
        if silent < deadline {
            continue;
        }
        if probe.running(deadline).await {
            monitor.still_running();
        } else if monitor.silent_for().is_some_and(|s| s >= silent) {
            return silent;
        }
    }
}

/// Looks at a connection's server process from a new connection.
struct Probe {
    config: Config,
    connector: MakeRustlsConnect,
    name: String,
}

impl Probe {
    fn new(config: &Config, connector: &MakeRustlsConnect, role: &str) -> Probe {
        let mut probe = config.clone();
        probe.application_name(format!("relaysync-{role}-probe"));
        Probe {
            config: probe,
            connector: connector.clone(),
            name: config.get_application_name().unwrap_or("").to_string(),
        }
    }

    /// Whether the connection's server process is running a statement (not
    /// waiting on the client): false if it cannot tell within `deadline`.
    async fn running(&self, deadline: Duration) -> bool {
        let look = async {
            let (client, connection) = self.config.connect(self.connector.clone()).await.ok()?;
            tokio::spawn(connection);
            let row = client
                .query_opt(
                    "SELECT state = 'active' AND wait_event IS DISTINCT FROM 'ClientRead'
                            AND wait_event IS DISTINCT FROM 'ClientWrite'
                       FROM pg_stat_activity WHERE application_name = $1",
                    &[&self.name],
                )
                .await
                .ok()?;
            row.and_then(|r| r.get::<_, Option<bool>>(0))
        };
        matches!(tokio::time::timeout(deadline, look).await, Ok(Some(true)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_settings_follow_libpq_and_default_otherwise() {
        let (c, _) = crate::postgres::tls::parse("relay", "postgres://u@h/db").unwrap();
        assert!(c.get_keepalives());
        assert_eq!(c.get_keepalives_idle(), KEEPALIVES_IDLE);
        assert_eq!(c.get_keepalives_retries(), Some(KEEPALIVES_COUNT));
        assert_eq!(c.get_tcp_user_timeout(), Some(&(deadline() * 2)));
        let url = "postgres://u@h/db?keepalives_idle=7&keepalives_count=2&tcp_user_timeout=1500&sslmode=disable";
        let (c, _) = crate::postgres::tls::parse("relay", url).unwrap();
        assert_eq!(c.get_keepalives_idle(), Duration::from_secs(7));
        assert_eq!(c.get_keepalives_retries(), Some(2));
        assert_eq!(c.get_tcp_user_timeout(), Some(&Duration::from_millis(1500)));
        let kv = "host=h user=u keepalives=0 keepalives_interval=3";
        let (c, _) = crate::postgres::tls::parse("relay", kv).unwrap();
        assert!(!c.get_keepalives());
        assert_eq!(c.get_keepalives_interval(), Some(Duration::from_secs(3)));
        let bad = crate::postgres::tls::parse("relay", "postgres://u@h/db?keepalives_idle=soon");
        assert!(bad.unwrap_err().to_string().contains("keepalives_idle"));
    }
}

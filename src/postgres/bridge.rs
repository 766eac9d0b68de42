//! The replication connection's TLS, made exactly as the ordinary
//! connections make theirs: relaysync opens the TCP connection (with the
//! URL's keepalives and `tcp_user_timeout`), asks the server for TLS and
//! verifies its certificate with the same settings and verifier, then hands
//! the replication protocol a private Unix socket joined to that stream.
//! So `sslmode`, `sslrootcert`, `hostaddr`, IP addresses in certificates
//! and the errors that name the fix are the same on every connection.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener};

use super::tls::{SslMode, Tls};
use crate::error::{Error, Result};

/// How long the replication protocol may take to reach the socket.
const ACCEPT_WAIT: Duration = Duration::from_secs(30);
/// How long the TCP connection and the TLS handshake may take.
const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// Where the server is, as the URL says.
pub(crate) struct Target<'a> {
    /// The name the certificate must carry (`host`).
    pub(crate) host: &'a str,
    /// Where to connect: `hostaddr` when given, else `host`.
    pub(crate) addr: String,
    pub(crate) port: u16,
}

/// Connects to `target` with `tls` (its mode not `disable`) and returns the
/// directory of a Unix socket that carries the connection, for one client:
/// the socket is `DIR/.s.PGSQL.PORT`, as PostgreSQL names its own. The
/// directory goes when that client disconnects (or never comes).
pub(crate) async fn open(
    section: &'static str,
    target: &Target<'_>,
    tls: &Tls,
    tcp: &tokio_postgres::Config,
) -> Result<PathBuf> {
    // What the user must change: a setting.
    let refused = |fix: String| {
        Error::Setup(format!(
            "cannot open the replication connection of {section} to {}:{}: {fix}",
            target.host, target.port
        ))
    };
    // The server not reached, or lost on the way: worth a retry.
    let unreachable = |source: std::io::Error| Error::Unreachable {
        role: section,
        target: super::describe(tcp),
        source,
    };
    let late = |what: &str| {
        unreachable(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no {what} within {CONNECT_WAIT:?}"),
        ))
    };
    let mut stream = tokio::time::timeout(
        CONNECT_WAIT,
        TcpStream::connect((target.addr.as_str(), target.port)),
    )
    .await
    .map_err(|_| late("answer"))?
    .map_err(unreachable)?;
    socket_options(&stream, tcp).map_err(unreachable)?;
    // PostgreSQL's SSLRequest: the server answers S (TLS) or N.
    stream
        .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .map_err(unreachable)?;
    let answer = stream.read_u8().await.map_err(unreachable)?;
    let io: Box<dyn Io> = match answer {
        b'S' => {
            let name = ServerName::try_from(target.host.to_string()).map_err(|e| {
                refused(format!(
                    "'{}' is not a host name ({e}); fix [{section}] url",
                    target.host
                ))
            })?;
            let connector = tokio_rustls::TlsConnector::from(Arc::new(tls.client_config()?));
            let tls_stream = tokio::time::timeout(CONNECT_WAIT, connector.connect(name, stream))
                .await
                .map_err(|_| late("TLS handshake"))?
                .map_err(|e| match super::tls::fix_for(section, &e) {
                    Some(fix) => refused(fix),
                    None => unreachable(e),
                })?;
            Box::new(tls_stream)
        }
        b'N' if tls.mode == SslMode::Prefer => Box::new(stream),
        _ => {
            return Err(refused(
                super::tls::fix_for(section, &NoTls)
                    .unwrap_or_else(|| "the server does not offer TLS".into()),
            ))
        }
    };
    let local = |e: std::io::Error| Error::Io {
        context: "making the replication connection's local socket".into(),
        source: e,
    };
    let dir = private_dir().map_err(local)?;
    let listener =
        UnixListener::bind(dir.join(format!(".s.PGSQL.{}", target.port))).map_err(local)?;
    let kept = dir.clone();
    tokio::spawn(async move {
        if let Ok(Ok((local, _))) = tokio::time::timeout(ACCEPT_WAIT, listener.accept()).await {
            drop(listener);
            let _ = std::fs::remove_dir_all(&kept);
            carry(local, io).await;
        }
        let _ = std::fs::remove_dir_all(&kept);
    });
    Ok(dir)
}

/// The server refused TLS: the words the fixes are found by.
#[derive(Debug)]
struct NoTls;

impl std::fmt::Display for NoTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("server does not support TLS")
    }
}

impl std::error::Error for NoTls {}

/// A byte stream of either kind.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Copies both ways until either side ends; then both are closed (a server
/// the network lost is not waited for).
async fn carry(local: tokio::net::UnixStream, remote: Box<dyn Io>) {
    let (mut local_read, mut local_write) = tokio::io::split(local);
    let (mut remote_read, mut remote_write) = tokio::io::split(remote);
    tokio::select! {
        _ = tokio::io::copy(&mut local_read, &mut remote_write) => {}
        _ = tokio::io::copy(&mut remote_read, &mut local_write) => {}
    }
}

/// The URL's keepalives and `tcp_user_timeout`, as the ordinary
/// connections set them.
fn socket_options(stream: &TcpStream, cfg: &tokio_postgres::Config) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let socket = socket2::SockRef::from(stream);
    if cfg.get_keepalives() {
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(cfg.get_keepalives_idle())
            .with_interval(
                cfg.get_keepalives_interval()
                    .unwrap_or(super::KEEPALIVES_INTERVAL),
            )
            .with_retries(
                cfg.get_keepalives_retries()
                    .unwrap_or(super::KEEPALIVES_COUNT),
            );
        socket.set_tcp_keepalive(&keepalive)?;
    }
    if let Some(timeout) = cfg.get_tcp_user_timeout() {
        socket.set_tcp_user_timeout(Some(*timeout))?;
    }
    Ok(())
}

/// A new directory only this user may enter.
fn private_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let dir = std::env::temp_dir().join(format!(
        "relaysync-replication-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

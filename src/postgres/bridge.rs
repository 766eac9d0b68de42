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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

use super::net::Io;
use super::tls::{SslMode, Tls};
use crate::error::{Error, Result};

/// How long the replication protocol may take to reach the socket.
const ACCEPT_WAIT: Duration = Duration::from_secs(30);
/// How long the TCP connection and the TLS handshake may take.
const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// Connects to `host` (at the URL's `hostaddr`, if any) and `port` with
/// `tls` (its mode not `disable`) and returns the directory of a Unix
/// socket that carries the connection, for one client: the socket is
/// `DIR/.s.PGSQL.PORT`, as PostgreSQL names its own. The directory goes
/// when that client disconnects (or never comes).
pub(crate) async fn open(
    section: &'static str,
    (host, port): (&str, u16),
    tls: &Tls,
    tcp: &tokio_postgres::Config,
) -> Result<PathBuf> {
    // What the user must change: a setting.
    let refused = |fix: String| {
        Error::Setup(format!(
            "cannot open the replication connection of {section} to {host}:{port}: {fix}"
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
    // As every connection's socket: each address in turn, the URL's
    // keepalives and tcp_user_timeout.
    let addr = tcp.get_hostaddrs().first().copied();
    let mut stream = match super::net::tcp(tcp, host, addr, port, Some(CONNECT_WAIT)).await {
        Ok(stream) => stream,
        Err(super::net::Failure::Io(e)) => return Err(unreachable(e)),
        Err(super::net::Failure::Pg(source)) => {
            return Err(Error::Connect {
                role: section,
                target: super::describe(tcp),
                source,
            })
        }
    };
    // PostgreSQL's SSLRequest: the server answers S (TLS) or N.
    stream
        .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .map_err(unreachable)?;
    let answer = stream.read_u8().await.map_err(unreachable)?;
    let io: Box<dyn Io> = match answer {
        b'S' => {
            let name = ServerName::try_from(host.to_string()).map_err(|e| {
                refused(format!(
                    "'{host}' is not a host name ({e}); fix [{section}] url"
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
    let listener = UnixListener::bind(dir.join(format!(".s.PGSQL.{port}"))).map_err(local)?;
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

//! PostgreSQL plumbing: ordinary SQL connections (TLS as the URL says),
//! LSNs, quoting.

pub(crate) mod bridge;
pub(crate) mod migrations;
mod net;
pub(crate) mod tls;
mod tx;
mod url;
mod watch;

pub use net::{deadline, set_deadline, DEFAULT_DEADLINE};
pub(crate) use net::{
    tcp_settings, KEEPALIVES_COUNT, KEEPALIVES_IDLE, KEEPALIVES_INTERVAL, TCP_KEYS,
};

pub(crate) use tx::Tx;

pub(crate) use url::resolve;
pub use url::{read_password_file, DbUrl, Password};

use std::time::Duration;

use tokio_postgres::config::Host;
use tokio_postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, Result};

/// The URL's settings and its TLS connector. Each connection gets an
/// `application_name` of its own (`relaysync-ROLE PID.N`): the deadline's
/// probe finds its server process by it.
fn prepare(role: &'static str, url: &str) -> Result<(tokio_postgres::Config, MakeRustlsConnect)> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let (mut config, tls) = tls::parse(role, url)?;
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    config.application_name(format!("relaysync-{role} {}{n}", own_prefix_of()));
    config.connect_timeout(Duration::from_secs(10));
    let connector = MakeRustlsConnect::new(tls.client_config()?);
    Ok((config, connector))
}

/// What the `application_name` of every connection this process opens
/// ends with, but for its number: `PID.`.
fn own_prefix_of() -> String {
    format!("{}.", std::process::id())
}

/// The start of the `application_name`s of this process's connections
/// (`relaysync-ROLE PID.`), as a LIKE pattern's start (`_` for the role).
pub(crate) fn own_prefix() -> String {
    format!("relaysync-% {}", own_prefix_of())
}

/// A failed connection as an error: a TLS problem names its fix.
fn connect_error(
    role: &'static str,
    config: &tokio_postgres::Config,
    failure: net::Failure,
) -> Error {
    let source = match failure {
        net::Failure::Pg(source) => source,
        net::Failure::Io(source) => {
            return Error::Unreachable {
                role,
                target: describe(config),
                source,
            }
        }
    };
    match tls::fix_for(role, &source) {
        Some(fix) => Error::Setup(format!(
            "cannot connect to the {role} database at {}: {fix}",
            describe(config)
        )),
        None => Error::Connect {
            role,
            target: describe(config),
            source,
        },
    }
}

/// Opens an SQL connection for `role` ("ho", "relay" or "pos") and drives it
/// in the background, with TCP keepalives and the round-trip deadline
/// (`[network] deadline`).
pub async fn connect(role: &'static str, url: &str) -> Result<Client> {
    let (config, connector) = prepare(role, url)?;
    net::connect(role, &config, &connector)
        .await
        .map_err(|failure| connect_error(role, &config, failure))
}

/// A connection that LISTENs on a channel; each notification wakes `recv`.
/// It is pinged every third of the deadline (and given half of it to
/// answer), so that a connection the network dropped silently is found
/// (and closed) like any other.
pub struct Listener {
    rx: tokio::sync::mpsc::Receiver<()>,
    ping: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.ping.abort();
    }
}

impl Listener {
    /// Waits for the next notification, or for the connection to be gone
    /// (a wake-up too: the caller opens a new one).
    pub async fn recv(&mut self) {
        let _ = self.rx.recv().await;
    }

    /// Whether the connection is gone (no notification will come).
    pub fn is_closed(&self) -> bool {
        self.rx.is_closed()
    }

    /// Takes a pending notification without waiting.
    pub fn try_recv(&mut self) -> Result<(), tokio::sync::mpsc::error::TryRecvError> {
        self.rx.try_recv()
    }
}

/// A streaming worker's wake-up: a NOTIFY on a relay channel, or a pause,
/// whichever comes first. The LISTEN connection is opened again whenever it
/// is gone (the relay restarted, or the network lost it); until then every
/// wait is the pause.
pub struct Wake {
    channel: &'static str,
    listener: Option<Listener>,
    /// The LISTEN connection was lost since [`Wake::lost`] was last asked.
    lost: bool,
}

impl Wake {
    pub fn new(channel: &'static str) -> Wake {
        Wake {
            channel,
            listener: None,
            lost: false,
        }
    }

    /// LISTENs on the relay at `url`, unless already listening.
    pub async fn listen(&mut self, url: &str) {
        match &self.listener {
            Some(l) if !l.is_closed() => return,
            Some(_) => self.lost = true,
            None => {}
        }
        self.listener = match listen(url, self.channel).await {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(channel = self.channel, error = %crate::error::chain(&e), "cannot LISTEN; polling");
                None
            }
        };
    }

    /// Whether the LISTEN connection was lost since last asked: the
    /// worker's other relay connections, opened alike, are suspect too.
    pub fn lost(&mut self) -> bool {
        std::mem::take(&mut self.lost)
    }

    /// Waits for a notification, the LISTEN connection's loss, or `pause`,
    /// and takes every notification pending: one wake-up serves them all.
    pub async fn wait(&mut self, pause: Duration) {
        match self.listener.as_mut() {
            Some(l) => {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = l.recv() => {}
                }
                while l.try_recv().is_ok() {}
            }
            None => tokio::time::sleep(pause).await,
        }
    }
}

/// Opens a relay connection that LISTENs on `channel`.
pub async fn listen(url: &str, channel: &str) -> Result<Listener> {
    use futures_util::StreamExt;
    let (config, connector) = prepare("relay", url)?;
    let (client, mut connection) = config
        .connect(connector)
        .await
        .map_err(|source| connect_error("relay", &config, net::Failure::Pg(source)))?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let (closed_tx, closed) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        let mut closed = closed;
        loop {
            tokio::select! {
                message = messages.next() => match message {
                    Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => {
                        let _ = tx.try_send(());
                    }
                    Some(Ok(_)) => {}
                    _ => break,
                },
                // The pinger gave up on the connection.
                _ = &mut closed => break,
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {}", ident(channel)))
        .await
        .map_err(|source| Error::Db {
            context: format!("LISTEN {channel}"),
            source,
        })?;
    let ping = tokio::spawn(async move {
        loop {
            tokio::time::sleep(deadline() / 3).await;
            let pinged = tokio::time::timeout(deadline() / 2, client.simple_query("")).await;
            if !matches!(pinged, Ok(Ok(_))) {
                crate::telemetry::connection_lost("relay");
                tracing::warn!("the LISTEN connection to the relay did not answer within [network] deadline; opening a new one");
                let _ = closed_tx.send(());
                return;
            }
        }
    });
    Ok(Listener { rx, ping })
}

/// `host:port/database` of a connection config, without secrets.
pub fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{host}:{port}/{}",
        config.get_dbname().unwrap_or("postgres")
    )
}

/// Quotes an identifier for SQL.
/// Values in the text forms pgoutput writes them in, the same at HO and at
/// the sites: `SET LOCAL`s for a transaction that reads or hashes values as text.
pub(crate) const TEXT_FORMS: &str = "SET LOCAL DateStyle = ISO; SET LOCAL TimeZone = 'UTC';
     SET LOCAL IntervalStyle = postgres; SET LOCAL extra_float_digits = 3;
     SET LOCAL bytea_output = hex;";

pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Splits `schema.table` into its two parts.
pub fn split_table(name: &str) -> Option<(&str, &str)> {
    let (s, t) = name.split_once('.')?;
    (!s.is_empty() && !t.is_empty() && !t.contains('.')).then_some((s, t))
}

/// Quotes `schema.table` for SQL.
pub fn qualified(name: &str) -> String {
    match split_table(name) {
        Some((s, t)) => format!("{}.{}", ident(s), ident(t)),
        None => ident(name),
    }
}

/// Quotes a string literal for SQL.
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// `ARRAY[a, b, …]` from SQL expressions (`ARRAY[]` needs a cast by the caller).
pub fn literal_array(items: impl Iterator<Item = String>) -> String {
    format!("ARRAY[{}]", items.collect::<Vec<_>>().join(", "))
}

/// Parses `X/Y` LSN text.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// Formats an LSN as `X/Y`.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_text() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("nope"), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(qualified("public.it\"ems"), "\"public\".\"it\"\"ems\"");
        assert_eq!(literal("o'k"), "'o''k'");
    }
}

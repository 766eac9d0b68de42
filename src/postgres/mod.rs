//! PostgreSQL plumbing: ordinary SQL connections (TLS as the URL says),
//! LSNs, quoting.

pub(crate) mod migrations;
pub(crate) mod tls;
mod tx;
mod url;

pub(crate) use tx::Tx;

pub(crate) use url::resolve;
pub use url::{read_password_file, DbUrl, Password};

use std::time::Duration;

use tokio_postgres::config::Host;
use tokio_postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, Result};

/// The URL's settings and its TLS connector.
fn prepare(role: &'static str, url: &str) -> Result<(tokio_postgres::Config, MakeRustlsConnect)> {
    let (mut config, tls) = tls::parse(role, url)?;
    config.application_name(format!("relaysync-{role}"));
    config.connect_timeout(std::time::Duration::from_secs(10));
    let connector = MakeRustlsConnect::new(tls.client_config()?);
    Ok((config, connector))
}

/// A failed connection as an error: a TLS problem names its fix.
fn connect_error(
    role: &'static str,
    config: &tokio_postgres::Config,
    source: tokio_postgres::Error,
) -> Error {
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
/// in the background.
pub async fn connect(role: &'static str, url: &str) -> Result<Client> {
    let (config, connector) = prepare(role, url)?;
    let (client, connection) = config
        .connect(connector)
        .await
        .map_err(|source| connect_error(role, &config, source))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(role, error = %e, "connection closed");
        }
    });
    Ok(client)
}

/// A connection that LISTENs on a channel; each notification wakes `recv`.
pub struct Listener {
    _client: Client,
    rx: tokio::sync::mpsc::Receiver<()>,
}

impl Listener {
    /// Waits for the next notification (forever, if the connection is gone).
    pub async fn recv(&mut self) {
        if self.rx.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
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
/// is gone (the relay restarted, say); until then every wait is the pause.
pub struct Wake {
    channel: &'static str,
    listener: Option<Listener>,
}

impl Wake {
    pub fn new(channel: &'static str) -> Wake {
        Wake {
            channel,
            listener: None,
        }
    }

    /// LISTENs on the relay at `url`, unless already listening.
    pub async fn listen(&mut self, url: &str) {
        if self.listener.as_ref().is_some_and(|l| !l.is_closed()) {
            return;
        }
        self.listener = match listen(url, self.channel).await {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(channel = self.channel, error = %crate::error::chain(&e), "cannot LISTEN; polling");
                None
            }
        };
    }

    /// Waits for a notification or `pause`, and takes every notification
    /// pending: one wake-up serves them all.
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
        .map_err(|source| connect_error("relay", &config, source))?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(_) = message {
                let _ = tx.try_send(());
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
    Ok(Listener {
        _client: client,
        rx,
    })
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

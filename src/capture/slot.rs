//! The replication connection: the slot's position, opening the stream,
//! reading its events and confirming positions to the slot.
//!
//! `pgwire_replication` has its own LSN type; it is converted to and from
//! [`Lsn`] here and nowhere else.

use std::time::{Duration, Instant};

use bytes::Bytes;
use pgwire_replication::{ReplicationClient, ReplicationConfig, ReplicationEvent};
use tokio_postgres::config::Host;
use tokio_postgres::Client;

use super::Source;
use crate::error::{DbContext, Error, Result};
use crate::protocol::{Lsn, Origin};

/// How often the stream reports the confirmed position to the server.
const STATUS_INTERVAL: Duration = Duration::from_millis(200);
/// How long a finishing run waits for its last confirmation to be sent.
const CONFIRM_WAIT: Duration = Duration::from_secs(5);

/// How long a slot held by a departing reader (the WAL sender of a run
/// that just ended) may take to become free.
const RELEASE_WAIT: Duration = Duration::from_secs(10);

/// The slot's confirmed position; errors name the fix when the slot is
/// missing or in use. A slot still held by a WAL sender that is shutting
/// down (the previous run's) is waited for, up to [`RELEASE_WAIT`]; one
/// held by a WAL sender that has heard nothing from its reader for longer
/// than the deadline (a stream the network lost) is ended.
pub(super) async fn position(sql: &Client, slot: &str, origin: &Origin) -> Result<Lsn> {
    let deadline = std::time::Instant::now() + RELEASE_WAIT;
    let lost_after = crate::postgres::deadline().as_secs_f64();
    loop {
        let row = sql
            .query_opt(
                "SELECT s.confirmed_flush_lsn, s.active_pid,
                        coalesce(r.reply_time, r.backend_start) < now() - make_interval(secs => $2) AS lost
                   FROM pg_replication_slots s
                   LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
                  WHERE s.slot_name = $1 AND s.database = current_database()",
                &[&slot, &lost_after],
            )
            .await
            .ctx(|| "reading pg_replication_slots".into())?
            .ok_or_else(|| {
                Error::Setup(format!(
                    "replication slot '{slot}' does not exist in this database; run `{}`",
                    origin.setup_command()
                ))
            })?;
        let active: Option<i32> = row
            .try_get("active_pid")
            .ctx(|| "reading pg_replication_slots".into())?;
        let lost: Option<bool> = row
            .try_get("lost")
            .ctx(|| "reading pg_replication_slots".into())?;
        match active {
            None => {
                let confirmed: Option<Lsn> = row
                    .try_get("confirmed_flush_lsn")
                    .ctx(|| "reading pg_replication_slots".into())?;
                return Ok(confirmed.unwrap_or(Lsn::from(0)));
            }
            Some(pid) if lost == Some(true) => end_lost_sender(sql, slot, pid).await,
            Some(pid) if std::time::Instant::now() >= deadline => {
                return Err(Error::Setup(format!(
                    "replication slot '{slot}' is in use by process {pid}; is another relaysync worker running? stop it first"
                )));
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Ends the WAL sender `pid` that holds `slot` for a reader it has not
/// heard from within the deadline (the server ends it by itself only after
/// its `wal_sender_timeout`).
async fn end_lost_sender(sql: &Client, slot: &str, pid: i32) {
    tracing::warn!(
        slot,
        pid,
        "the slot is held by a stream the network lost; ending its WAL sender"
    );
    if let Err(e) = sql
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
    {
        tracing::warn!(slot, pid, error = %e, "cannot end the WAL sender; waiting for the server's wal_sender_timeout");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Makes an idle server speak on its replication streams: a logical
/// decoding message (not captured) moves the WAL, and the WAL sender
/// answers with its keepalive.
pub(super) async fn heartbeat(sql: &Client) -> Result<()> {
    sql.execute(
        "SELECT pg_logical_emit_message(false, 'relaysync.heartbeat', '')",
        &[],
    )
    .await
    .ctx(|| "sending a heartbeat through the replication stream".into())?;
    Ok(())
}

/// The WAL position current now: where a `Mode::Once` run stops.
pub(super) async fn current_wal(sql: &Client) -> Result<Lsn> {
    let row = sql
        .query_one("SELECT pg_current_wal_insert_lsn() AS lsn", &[])
        .await
        .ctx(|| "reading the current WAL position".into())?;
    row.try_get("lsn")
        .ctx(|| "reading the current WAL position".into())
}

/// What the stream carries, in relaysync's types.
#[derive(Debug)]
pub(super) enum Event {
    /// A transaction starts; it commits at `final_lsn`.
    Begin { final_lsn: Lsn },
    /// A pgoutput message inside a transaction (or a Relation, Origin, …).
    Data(Bytes),
    /// The transaction ends; the next one starts after `end_lsn`.
    Commit { end_lsn: Lsn },
    /// A synced table's shape announced in HO's stream (see ho/shapes.rs).
    Shape(Bytes),
    /// A partitioned synced table's partitions, announced by HO's event
    /// trigger when one is made or attached (see ho/partitions.rs).
    Partitions(Bytes),
    /// The server's heartbeat: its WAL ends at `wal_end`.
    KeepAlive { wal_end: Lsn },
    /// The stop position was reached: nothing follows.
    Stopped,
    /// A logical decoding message: not captured.
    Ignored,
}

/// An open replication stream of a slot.
pub(super) struct SlotStream {
    client: ReplicationClient,
    origin: Origin,
}

impl SlotStream {
    /// Starts streaming `source`'s slot from `start`.
    pub(super) async fn connect(source: &Source, start: Lsn) -> Result<SlotStream> {
        let client = ReplicationClient::connect(config(source, start).await?)
            .await
            .map_err(|e| replication_error(&source.origin, e))?;
        Ok(SlotStream {
            client,
            origin: source.origin.clone(),
        })
    }

    /// The next event. A stream the server closed (a restart, a terminated
    /// WAL sender) is an error worth a retry, unlike a setup error.
    pub(super) async fn recv(&mut self) -> Result<Event> {
        let event = match self.client.recv().await {
            Err(e) => return Err(replication_error(&self.origin, e)),
            Ok(None) => {
                return Err(Error::StreamEnded {
                    role: self.origin.role(),
                })
            }
            Ok(Some(event)) => event,
        };
        Ok(match event {
            ReplicationEvent::Begin { final_lsn, .. } => Event::Begin {
                final_lsn: from_wire(final_lsn),
            },
            ReplicationEvent::XLogData { data, .. } => Event::Data(data),
            ReplicationEvent::Commit { end_lsn, .. } => Event::Commit {
                end_lsn: from_wire(end_lsn),
            },
            ReplicationEvent::KeepAlive { wal_end, .. } => Event::KeepAlive {
                wal_end: from_wire(wal_end),
            },
            ReplicationEvent::StoppedAt { .. } => Event::Stopped,
            ReplicationEvent::Message {
                transactional: true,
                prefix,
                content,
                ..
            } if prefix == super::shape::SHAPE_MESSAGE => Event::Shape(content),
            ReplicationEvent::Message {
                transactional: true,
                prefix,
                content,
                ..
            } if prefix == super::shape::PARTITIONS_MESSAGE => Event::Partitions(content),
            ReplicationEvent::Message { .. } => Event::Ignored,
        })
    }

    /// Confirms `lsn` to the slot: the relay holds everything up to it.
    pub(super) fn confirm(&self, lsn: Lsn) {
        if u64::from(lsn) > 0 {
            self.client.update_applied_lsn(to_wire(lsn));
        }
    }

    /// Ends the stream once the confirmation of `lsn` has been sent to the
    /// server (waiting briefly for it).
    pub(super) async fn finish(mut self, lsn: Lsn) {
        let metrics = self.client.metrics();
        let deadline = Instant::now() + CONFIRM_WAIT;
        while u64::from(lsn) > 0
            && from_wire(metrics.last_applied_lsn()) < lsn
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.client.stop();
        let _ = self.client.shutdown().await;
    }

    /// Ends the stream at once, confirming nothing more.
    pub(super) fn abort(mut self) {
        self.client.abort();
    }
}

/// The replication connection's settings, from the source's URL. Over
/// TCP with TLS, the connection is made here, as every other connection
/// is (see `postgres::bridge`), and the replication protocol runs on it
/// through a private Unix socket.
async fn config(source: &Source, start: Lsn) -> Result<ReplicationConfig> {
    let role = source.origin.role();
    let (cfg, tls) = crate::postgres::tls::parse(role, &source.url)?;
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let host = match cfg.get_hosts().first() {
        Some(Host::Tcp(h)) if tls.mode != crate::postgres::tls::SslMode::Disable => {
            crate::postgres::bridge::open(role, (h, port), &tls, &cfg)
                .await?
                .display()
                .to_string()
        }
        // libpq's hostaddr: where to connect.
        Some(Host::Tcp(h)) => cfg
            .get_hostaddrs()
            .first()
            .map_or_else(|| h.clone(), |a| a.to_string()),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let password = cfg
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    let user = cfg.get_user().unwrap_or("postgres").to_string();
    let db = cfg.get_dbname().unwrap_or(&user).to_string();
    Ok(ReplicationConfig::new(
        host,
        user,
        password,
        db,
        source.slot.clone(),
        source.publication.clone(),
    )
    .with_port(port)
    .with_tls(pgwire_replication::TlsConfig::disabled())
    .with_start_lsn(to_wire(start))
    .with_ack_lsn(to_wire(start))
    // Pin the text forms the packet encoder parses; and as this connection's
    // socket takes no options from here, have the server's end find a lost
    // connection: its keepalives (the ordinary connections' defaults), and a
    // WAL sender that hears nothing for twice the deadline ends.
    .with_options(format!(
        "-c DateStyle=ISO -c TimeZone=UTC -c IntervalStyle=postgres -c extra_float_digits=3 -c bytea_output=hex \
         -c tcp_keepalives_idle={} -c tcp_keepalives_interval={} -c tcp_keepalives_count={} \
         -c wal_sender_timeout={}",
        crate::postgres::KEEPALIVES_IDLE.as_secs(),
        crate::postgres::KEEPALIVES_INTERVAL.as_secs(),
        crate::postgres::KEEPALIVES_COUNT,
        (crate::postgres::deadline() * 2).as_millis()
    ))
    .with_status_interval(STATUS_INTERVAL)
    .with_wakeup_interval(Duration::from_secs(1))
    .with_buffer_size(4096)
    .with_application_name(format!("relaysync-{}", source.origin)))
}

fn replication_error(origin: &Origin, source: pgwire_replication::PgWireError) -> Error {
    if let Some(fix) = crate::postgres::tls::fix_for(origin.role(), &source) {
        return Error::Setup(format!(
            "cannot open the replication connection of {}: {fix}",
            origin.role()
        ));
    }
    Error::Replication {
        role: origin.role(),
        source,
    }
}

fn to_wire(lsn: Lsn) -> pgwire_replication::Lsn {
    pgwire_replication::Lsn::from_u64(lsn.into())
}

fn from_wire(lsn: pgwire_replication::Lsn) -> Lsn {
    Lsn::from(lsn.as_u64())
}

//! The relay database: its schema, and every query relaysync runs against
//! it. Nothing outside this module writes relay SQL; rows are read by
//! column name into the structs here.

pub(crate) mod migrate;

pub use migrate::migrate;

mod acks;
mod packets;
mod retention;
mod site_roles;
mod sites;
mod status;
mod tables;
mod verify;
pub(crate) mod writer;

use tokio_postgres::{Client, Row};

use crate::error::{DbContext, Error, Result};
use crate::postgres::Tx;
use crate::protocol::Direction;

pub(crate) use acks::Ack;
pub(crate) use packets::{checksum, NewPacket, NewPart, PacketInfo, SentPacket, StoredPart};
pub use site_roles::{role_name, Added, SiteRole};
pub use status::{
    AckDetail, HeldAck, PacketDetail, PartDetail, SiteStatus, TableStatus, UploadStatus, HELD,
};
pub(crate) use tables::{KeyHigh, PublishedTable};
pub use verify::VerifyResult;
pub(crate) use verify::{Bucket, Expected};

/// The channel HO notifies when it commits packets; streaming site workers
/// LISTEN on it.
pub(crate) const PACKETS_CHANNEL: &str = "relaysync_packets";
/// The channel a site notifies when it commits packets for HO; a streaming
/// HO worker LISTENs on it.
pub(crate) const UP_PACKETS_CHANNEL: &str = "relaysync_up_packets";

/// A connection to the relay database.
pub struct Relay {
    client: Client,
    /// The statements a worker runs at every sync, prepared once per
    /// connection (planning them, row-level security included, costs the
    /// relay more than running them).
    prepared: std::sync::Mutex<std::collections::HashMap<String, tokio_postgres::Statement>>,
    /// This side's signing key and the keys it trusts for what it applies.
    seals: crate::seal::Seals,
    /// A standby that packet listings and parts are read from (a site's
    /// `[relay] read_url`), with its own prepared statements.
    reader: Option<(
        Client,
        std::sync::Mutex<std::collections::HashMap<String, tokio_postgres::Statement>>,
    )>,
}

impl Relay {
    /// Connects and checks that `relaysync setup relay` has run.
    pub async fn connect(url: &str) -> Result<Relay> {
        let client = open(url).await?;
        if !migrate::is_set_up(&client).await? {
            return Err(Error::Setup(
                "the relay database has no relay schema; run `relaysync setup relay` first".into(),
            ));
        }
        Ok(Relay {
            client,
            prepared: Default::default(),
            seals: Default::default(),
            reader: None,
        })
    }

    /// Reads packet listings and parts from `read_url` (a standby) when
    /// given; everything else stays on this connection. A standby that
    /// cannot be reached (down, or not yet holding this site's role) is
    /// not a reason to stop: packets are read from the primary until the
    /// next session, with a warning.
    pub async fn with_reader(mut self, read_url: Option<&str>) -> Relay {
        let Some(url) = read_url else {
            return self;
        };
        match open(url).await {
            Ok(client) => self.reader = Some((client, Default::default())),
            Err(error) => tracing::warn!(
                %error,
                "reading packets from the relay's primary ([relay] url) for now: [relay] read_url cannot be used"
            ),
        }
        self
    }

    /// Where packet listings and parts are read: the reader, if any.
    fn reading(&self) -> &Client {
        self.reader.as_ref().map_or(&self.client, |(c, _)| c)
    }

    /// Packets written through this connection are signed, and those
    /// applied from it checked, as `seals` say.
    pub fn with_seals(mut self, seals: crate::seal::Seals) -> Relay {
        self.seals = seals;
        self
    }

    /// The signing key and the trusted keys.
    pub(crate) fn seals(&self) -> &crate::seal::Seals {
        &self.seals
    }

    /// `sql` with parameters of `types`, prepared on first use.
    async fn prepared(
        &self,
        sql: &str,
        types: &[tokio_postgres::types::Type],
    ) -> std::result::Result<tokio_postgres::Statement, tokio_postgres::Error> {
        prepare_cached(&self.client, &self.prepared, sql, types).await
    }

    /// [`Relay::prepared`], on the connection packets are read from.
    async fn prepared_for_reading(
        &self,
        sql: &str,
        types: &[tokio_postgres::types::Type],
    ) -> std::result::Result<tokio_postgres::Statement, tokio_postgres::Error> {
        match &self.reader {
            Some((client, cache)) => prepare_cached(client, cache, sql, types).await,
            None => self.prepared(sql, types).await,
        }
    }
}

/// A connection to the relay (or a standby of it) for [`Relay`]'s
/// prepared statements: they are planned once (left to choose, the
/// planner plans the parts' fetch afresh at every run).
async fn open(url: &str) -> Result<Client> {
    let client = crate::postgres::connect("relay", url).await?;
    client
        .batch_execute("SET plan_cache_mode = force_generic_plan")
        .await
        .ctx(|| "relay: SET plan_cache_mode".into())?;
    Ok(client)
}

/// `sql` prepared on `client`, once: `cache` keeps it.
async fn prepare_cached(
    client: &Client,
    cache: &std::sync::Mutex<std::collections::HashMap<String, tokio_postgres::Statement>>,
    sql: &str,
    types: &[tokio_postgres::types::Type],
) -> std::result::Result<tokio_postgres::Statement, tokio_postgres::Error> {
    let cached = cache.lock().expect("not poisoned").get(sql).cloned();
    if let Some(statement) = cached {
        return Ok(statement);
    }
    let statement = client.prepare_typed(sql, types).await?;
    cache
        .lock()
        .expect("not poisoned")
        .insert(sql.to_string(), statement.clone());
    Ok(statement)
}

impl Relay {
    /// Opens a transaction: what is written in it (packets, their parts,
    /// the capture position, served requests) becomes visible together at
    /// [`RelayTx::commit`]; dropped uncommitted, it is rolled back.
    pub(crate) async fn transaction(&self) -> Result<RelayTx<'_>> {
        let tx = Tx::begin(&self.client, "BEGIN")
            .await
            .ctx(|| "relay: BEGIN".into())?;
        Ok(RelayTx { relay: self, tx })
    }

    /// Runs `body` as one transaction in one round trip; rolled back on an
    /// error.
    async fn transact(&self, body: &str) -> std::result::Result<(), tokio_postgres::Error> {
        let tx = Tx::begin(&self.client, "BEGIN").await?;
        tx.commit_after(body).await
    }
}

/// An open relay transaction. It derefs to the [`Relay`]: reads run in it
/// too; what may only be written inside one (a packet, its parts, the
/// capture position) is a method of this type.
pub(crate) struct RelayTx<'a> {
    relay: &'a Relay,
    tx: Tx<'a>,
}

impl RelayTx<'_> {
    /// Commits; `notify` wakes the streaming workers that read packets of
    /// that direction, in the same round trip. On failure nothing is kept.
    pub(crate) async fn commit(self, notify: Option<Direction>) -> Result<()> {
        let last = match notify {
            Some(Direction::Down) => format!("NOTIFY {PACKETS_CHANNEL}"),
            Some(Direction::Up) => format!("NOTIFY {UP_PACKETS_CHANNEL}"),
            None => String::new(),
        };
        self.tx
            .commit_after(&last)
            .await
            .ctx(|| "relay: COMMIT".into())
    }
}

impl std::ops::Deref for RelayTx<'_> {
    type Target = Relay;

    fn deref(&self) -> &Relay {
        self.relay
    }
}

/// Reads column `name` of a relay row; a value of the wrong type or an
/// unknown protocol word is an error naming the table, not a panic.
fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    name: &str,
    table: &str,
) -> Result<T> {
    row.try_get(name)
        .ctx(|| format!("reading column {name} of {table}"))
}

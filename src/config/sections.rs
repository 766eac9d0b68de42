//! The sections of the configuration file, with their defaults.

use std::path::PathBuf;

use serde::Deserialize;

use crate::postgres::{DbUrl, Password};

/// `[retention]`: how long the relay and the records keep packets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Packets every target processed are purged after this.
    #[serde(default = "default_keep_acked")]
    pub keep_acked: String,
    /// A site that has acked nothing for this long is expired ("0s": never).
    #[serde(default = "default_max_offline")]
    pub max_offline: String,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            keep_acked: default_keep_acked(),
            max_offline: default_max_offline(),
        }
    }
}

fn default_keep_acked() -> String {
    "7d".into()
}
fn default_max_offline() -> String {
    "30d".into()
}

/// `[network]`: how long a connection may go without an answer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// A round trip (query, COPY, fetch) silent this long while its server
    /// is not running the statement, or a replication stream silent this
    /// long, is a lost connection: dropped, and the step retried on a new
    /// one. Default "30s".
    pub deadline: Option<String>,
}

/// `[metrics]`: where `ho run` and `pos run` serve `/metrics` and `/health`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `host:port`, e.g. `127.0.0.1:9187`; unset: no metrics served.
    pub listen: Option<String>,
}

/// `[console]`: the web console (`relaysync console`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// `host:port`; default `127.0.0.1:8443`. Anything but a loopback
    /// address needs `tls_cert` and `tls_key`.
    pub listen: Option<String>,
    /// The users file (`relaysync console user add`); default
    /// `relaysync-console-users.json` in the working directory.
    pub users: Option<PathBuf>,
    /// The certificate chain (PEM) to serve HTTPS with.
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub tls_key: Option<PathBuf>,
}

/// `[ho]`: the head-office database and its replication slot.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoConfig {
    pub url: DbUrl,
    /// A password kept out of the URL (or RELAYSYNC__HO__PASSWORD).
    #[serde(default)]
    pub password: Option<Password>,
    /// A file whose first line is the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default = "default_name")]
    pub slot: String,
    #[serde(default = "default_name")]
    pub publication: String,
    /// HO's Ed25519 private key (`relaysync keys generate`): every down
    /// packet is signed with it, and every site's upload must then be
    /// signed with the key `relaysync site key` recorded for that site.
    #[serde(default)]
    pub signing_key: Option<PathBuf>,
}

/// `[relay]`: the relay database between HO and the sites.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    pub url: DbUrl,
    /// Where a site reads packet listings and parts: a standby of the
    /// relay (or several: `host=a,b`). Acks, requests and everything else
    /// go to `url`. The password, when not in it, is `url`'s.
    #[serde(default)]
    pub read_url: Option<DbUrl>,
    /// A password kept out of the URL (or RELAYSYNC__RELAY__PASSWORD).
    #[serde(default)]
    pub password: Option<Password>,
    /// A file whose first line is the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

/// `[pos]`: this site's code and database.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PosConfig {
    pub site: String,
    pub url: DbUrl,
    /// A password kept out of the URL (or RELAYSYNC__POS__PASSWORD).
    #[serde(default)]
    pub password: Option<Password>,
    /// A file whose first line is the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The slot that captures this site's upstream tables; by default
    /// named after the site ([`up_name`]).
    #[serde(default)]
    pub slot: String,
    /// The publication of this site's upstream tables; by default named
    /// after the site ([`up_name`]).
    #[serde(default)]
    pub publication: String,
    /// After this long without a successful sync the site clears its
    /// copies of the down tables ("0s" or unset: never).
    #[serde(default)]
    pub wipe_after: Option<String>,
    /// This site's Ed25519 private key: its uploads are signed with it.
    #[serde(default)]
    pub signing_key: Option<PathBuf>,
    /// HO's public key(s) (PEM): only down packets signed by one of them
    /// are applied; unsigned or other packets fail.
    #[serde(default)]
    pub trust: Option<PathBuf>,
}

/// How HO merges an upstream table's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Merge {
    /// Insert; a row whose key HO has is ignored (device event logs).
    Append,
    /// A new key is inserted; for a key HO has, only HO's NULL or '' columns
    /// take the site's value: HO's values win.
    FillVacant,
    /// The site's row wins.
    Upsert,
}

/// What a delete at a site does at HO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Deletes {
    /// Nothing: a site's delete never deletes at HO.
    #[default]
    Ignore,
    /// HO deletes the row too.
    Apply,
}

/// `[[upstream]]`: one site table whose rows go up to HO.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `schema.table`, the same at the sites and at HO.
    pub name: String,
    pub merge: Merge,
    #[serde(default)]
    pub deletes: Deletes,
}

/// What a site does with a schema change of a synced table at HO (see
/// apply/schema.rs): `schema = "…"` on a `[[tables]]` entry, or for every
/// table in `[sync]`, in the site's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchemaPolicy {
    /// Make additive changes (columns, widenings, dropped NOT NULL, new
    /// partitions, a missing table for its full sync); hold the rest.
    #[default]
    Propagate,
    /// Hold every change until the DBA makes it (`relaysync schema apply`).
    Hold,
    /// Keep the site's columns: HO's new columns are left out of what the
    /// site applies; nothing is held for a column.
    Ignore,
}

/// `[sync]`: scheduling of `run`, and what sites do with schema changes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// Time between delta syncs; "0s" streams continuously.
    #[serde(default = "default_interval")]
    pub interval: String,
    /// The schema policy of tables that name none.
    #[serde(default)]
    pub schema: SchemaPolicy,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            interval: default_interval(),
            schema: SchemaPolicy::default(),
        }
    }
}

/// `[packet]`: bounds of one packet.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacketConfig {
    #[serde(default = "default_max_rows")]
    pub max_rows: usize,
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
}

impl Default for PacketConfig {
    fn default() -> Self {
        PacketConfig {
            max_rows: default_max_rows(),
            max_bytes: default_max_bytes(),
        }
    }
}

/// `[[tables]]`: one HO table synced down to the sites.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// `schema.table`.
    pub name: String,
    /// `all`, or `column:<name>`.
    #[serde(default = "default_route")]
    pub route: String,
    /// What the site does with HO's schema changes of this table (default:
    /// `[sync] schema`).
    #[serde(default)]
    pub schema: Option<SchemaPolicy>,
}

fn default_name() -> String {
    "relaysync".into()
}
fn default_interval() -> String {
    "30m".into()
}
fn default_route() -> String {
    "all".into()
}
fn default_max_rows() -> usize {
    50_000
}
fn default_max_bytes() -> usize {
    32 << 20
}

//! Packets: batches of changes encoded as Arrow IPC streams, one part per
//! (table, target).
//!
//! A part is a standard Arrow IPC stream (zstd-compressed bodies) that any
//! Arrow reader opens. Its data columns are typed from the PostgreSQL types
//! (see [`value`]); each field's metadata names the PostgreSQL type so the
//! apply side restores the exact value. Three meta columns follow the data:
//! `_op` (`I`, `U`, `D`, or `T` for a truncate), `_lsn` (the commit LSN) and
//! `_unchanged` (the names of columns whose unchanged TOAST value was not
//! sent; the receiver keeps its own). An optional `_origin` names the
//! replication origin of the change's transaction. The meta columns are
//! told from data columns by their field metadata ([`META_ROLE`]), never by
//! name: a table may have a column named `_op`.

pub(crate) mod copy_binary;
pub(crate) mod copy_out;
pub(crate) mod decode;
mod encode;
mod layout;
pub(crate) mod value;

pub use decode::{read_part, Part, PartColumn};
pub use encode::{encode_part, Change, Op};

use thiserror::Error;

/// Schema metadata key: the source table, `schema.table`.
pub const META_TABLE: &str = "relaysync.table";
/// Schema metadata key: the key columns, as a JSON array of names.
pub const META_KEY: &str = "relaysync.key";
/// Schema metadata key, on a part that announces a partitioned table's
/// partitions ([`PartitionShape`]s, as JSON; the part has no columns).
pub const META_PARTITIONS: &str = "relaysync.partitions";
/// Schema metadata key, on parts of a table other tables are routed by:
/// what a site deletes with a row of it ([`Cascade`]s, as JSON).
pub const META_CASCADE: &str = "relaysync.cascade";
/// Field metadata key: the column's PostgreSQL type, as `format_type` writes it.
pub const META_PG_TYPE: &str = "relaysync.pg_type";
/// Field metadata key: the column's PostgreSQL type OID.
pub const META_PG_OID: &str = "relaysync.pg_oid";
/// Field metadata key, on a column that is `NOT NULL` at HO: `true`.
pub const META_NOT_NULL: &str = "relaysync.not_null";
/// Field metadata key, on a column added at HO with a default that
/// PostgreSQL stored for the rows already there (no rewrite): that value,
/// as text. A site adding the column gives its rows the same value.
pub const META_MISSING: &str = "relaysync.missing";

/// Field metadata key that marks relaysync's bookkeeping columns, and says
/// which: [`ROLE_OP`], [`ROLE_LSN`], [`ROLE_UNCHANGED`], [`ROLE_ORIGIN`].
/// Data columns have none (and have [`META_PG_TYPE`]), so a data column may
/// bear any name, the bookkeeping columns' own names included.
pub const META_ROLE: &str = "relaysync.meta";
pub const ROLE_OP: &str = "op";
pub const ROLE_LSN: &str = "lsn";
pub const ROLE_UNCHANGED: &str = "unchanged";
pub const ROLE_ORIGIN: &str = "origin";

/// The meta column holding the operation.
pub const COL_OP: &str = "_op";
/// The meta column holding the commit LSN.
pub const COL_LSN: &str = "_lsn";
/// The meta column listing unchanged TOAST columns.
pub const COL_UNCHANGED: &str = "_unchanged";
/// The optional meta column naming the replication origin of a change
/// (`relaysync_up` for what HO merged from the sites); absent when none has one.
pub const COL_ORIGIN: &str = "_origin";

/// One column of a table as packets describe it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ColumnShape {
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
    /// The type as PostgreSQL names it, e.g. `numeric(10,2)` or `text[]`.
    pub pg_type: String,
    /// `NOT NULL` at HO.
    pub not_null: bool,
    /// The value rows that predate the column have (see [`META_MISSING`]).
    pub missing: Option<String>,
}

/// A partition of a partitioned table at HO, as a site makes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartitionShape {
    /// `schema.table`, unquoted.
    pub name: String,
    /// The table it is a partition of (the root, or a partition of it).
    pub parent: String,
    /// `FOR VALUES …` or `DEFAULT`, as `pg_get_expr` writes it.
    pub bound: String,
    /// Its own partition key when it is partitioned in turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_by: Option<String>,
}

/// The shape of a table: its qualified name, columns and key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableShape {
    /// `schema.table`, unquoted.
    pub name: String,
    pub columns: Vec<ColumnShape>,
    /// Indexes into `columns` of the key columns; empty for a table without a key.
    pub key: Vec<usize>,
    /// What a site deletes with a deleted row of this table: the rows of the
    /// tables routed by it that reference the row.
    pub cascade: Vec<Cascade>,
    /// A partitioned table's partitions, in the order a site makes them:
    /// sent only in a part that announces them (it has no columns).
    pub partitions: Vec<PartitionShape>,
}

/// A table routed by its parent (`route = "parent:…"`): a site that deletes
/// a parent row (a delete at HO, or the row moving to another site) deletes
/// the rows of `table` whose `columns` hold the parent's `references`, and
/// theirs in turn. HO routes a child row where its parent row goes, so a
/// child left behind at a site would be an orphan.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cascade {
    pub table: String,
    pub columns: Vec<String>,
    pub references: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Cascade>,
}

/// Why a packet part could not be encoded or read.
#[derive(Debug, Error)]
pub enum PacketError {
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("packet part is not a relaysync part: {0}")]
    Invalid(String),
}

//! The shape of a captured table, from a Relation message (streaming) or
//! from the catalog (full sync), and how its rows are routed.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::Client;

use super::batch::{Captured, Routing};
use super::catalog;
use crate::error::{DbContext, Error, Result};
use crate::packet::{ColumnShape, PartitionShape, TableShape};
use crate::pgoutput::Relation;
use crate::route::{Route, Tree};

/// The shape of relation `rel` named `name`, from its Relation message and
/// the catalog.
pub(super) async fn of_relation(sql: &Client, rel: &Relation, name: &str) -> Result<TableShape> {
    let mut known: HashMap<String, ColumnShape> = catalog::columns(sql, rel.id)
        .await?
        .into_iter()
        .map(|c| (c.name.clone(), c))
        .collect();
    let columns: Vec<ColumnShape> = rel
        .columns
        .iter()
        .map(|c| {
            let at_ho = known.remove(&c.name).unwrap_or_default();
            ColumnShape {
                name: c.name.clone(),
                type_oid: c.type_oid,
                type_modifier: c.type_modifier,
                pg_type: if at_ho.pg_type.is_empty() {
                    "text".into()
                } else {
                    at_ho.pg_type
                },
                not_null: at_ho.not_null,
                missing: at_ho.missing,
                // Only full syncs carry what makes the table at a site.
                identity: false,
                default: None,
            }
        })
        .collect();
    catalog::shape(sql, rel.id, name, columns).await
}

/// The shape of table `name` from the catalog (what a Relation message would say).
pub(crate) async fn of_table(sql: &Client, name: &str) -> Result<TableShape> {
    let oid = catalog::table_oid(sql, name).await?.ok_or_else(|| {
        Error::Setup(format!("table {name} does not exist at HO; fix [[tables]]"))
    })?;
    let columns = catalog::columns(sql, oid).await?;
    catalog::shape(sql, oid, name, columns).await
}

/// A table to capture with `shape`, routed by `route` (with the links of
/// `tree`); a routing column that is not one of its columns is a setup error.
pub(super) fn captured(mut shape: TableShape, route: &Route, tree: &Tree) -> Result<Captured> {
    let position = |shape: &TableShape, c: &str| {
        shape.columns.iter().position(|x| x.name == c).ok_or_else(|| {
            Error::Setup(format!(
                "column {c} of {} is not in its shape at HO; fix route in [[tables]], or run `relaysync setup ho` again",
                shape.name
            ))
        })
    };
    let routing = match (route, tree.link(&shape.name)) {
        (Route::All, _) => Routing::All,
        (Route::Column(c), _) => Routing::Column(position(&shape, c)?),
        (Route::Parent(parent), Some(link)) => Routing::Parent {
            parent: parent.clone(),
            columns: link
                .columns
                .iter()
                .map(|c| position(&shape, c))
                .collect::<Result<_>>()?,
        },
        (Route::Parent(parent), None) => {
            return Err(Error::Setup(format!(
                "route parent:{parent} of {}: no link to it is known; run `relaysync setup ho` to check the route",
                shape.name
            )))
        }
    };
    let referenced = tree
        .referenced(&shape.name)
        .map(|refs| {
            refs.iter()
                .map(|c| position(&shape, c))
                .collect::<Result<Vec<_>>>()
        })
        .transpose()?;
    shape.cascade = tree.cascade(&shape.name);
    Ok(Captured {
        shape: Arc::new(shape),
        routing,
        referenced,
    })
}

/// The prefix of the logical decoding message that carries a synced
/// table's shape through HO's stream (see ho/shapes.rs).
pub(crate) const SHAPE_MESSAGE: &str = "relaysync.shape";

/// A table's shape as the message carries it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ShapeMessage {
    oid: u32,
    table: String,
    columns: Vec<ColumnShape>,
    key: Vec<usize>,
}

/// Writes table `shape` (relation `oid`) into HO's WAL as a transactional
/// logical message, in the caller's open transaction: the stream takes it
/// at that position, before every change after it.
pub(crate) async fn announce(sql: &Client, oid: u32, shape: &TableShape) -> Result<()> {
    let content = serde_json::to_string(&ShapeMessage {
        oid,
        table: shape.name.clone(),
        columns: shape.columns.clone(),
        key: shape.key.clone(),
    })
    .unwrap_or_default();
    sql.execute(
        "SELECT pg_logical_emit_message(true, $1, $2)",
        &[&SHAPE_MESSAGE, &content],
    )
    .await
    .ctx(|| format!("announcing the shape of {}", shape.name))?;
    Ok(())
}

/// The relation and shape a shape message carries.
pub(super) fn from_message(content: &[u8]) -> Result<(u32, TableShape)> {
    let m: ShapeMessage = serde_json::from_slice(content).map_err(|e| {
        Error::Setup(format!(
            "a {SHAPE_MESSAGE} message in HO's stream is not a table shape ({e}); was it written by another program?"
        ))
    })?;
    if m.key.iter().any(|&k| k >= m.columns.len()) {
        return Err(Error::Setup(format!(
            "the {SHAPE_MESSAGE} message of {} names a key column it does not have",
            m.table
        )));
    }
    Ok((
        m.oid,
        TableShape {
            name: m.table,
            columns: m.columns,
            key: m.key,
            cascade: Vec::new(),
            partitions: Vec::new(),
        },
    ))
}

/// The prefix of the logical decoding message HO's event trigger writes
/// when a partition of a synced partitioned table is made or attached.
pub(crate) const PARTITIONS_MESSAGE: &str = "relaysync.partitions";

#[derive(Debug, serde::Deserialize)]
struct PartitionsMessage {
    root: String,
    partitions: Vec<PartitionShape>,
}

/// The root and the partitions a partitions message carries.
pub(super) fn partitions_from_message(content: &[u8]) -> Result<(String, Vec<PartitionShape>)> {
    let m: PartitionsMessage = serde_json::from_slice(content).map_err(|e| {
        Error::Setup(format!(
            "a {PARTITIONS_MESSAGE} message in HO's stream is not a list of partitions ({e}); run `relaysync setup ho` again to renew its event trigger"
        ))
    })?;
    Ok((m.root, m.partitions))
}

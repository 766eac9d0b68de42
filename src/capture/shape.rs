//! The shape of a captured table, from a Relation message (streaming) or
//! from the catalog (full sync), and how its rows are routed.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::Client;

use super::batch::{Captured, Routing};
use super::catalog;
use crate::error::{DbContext, Error, Result};
use crate::packet::{ColumnShape, TableShape};
use crate::pgoutput::Relation;
use crate::route::{Route, Tree};

/// The shape of relation `rel` named `name`, from its Relation message and
/// the catalog.
pub(super) async fn of_relation(sql: &Client, rel: &Relation, name: &str) -> Result<TableShape> {
    let types: HashMap<String, String> = catalog::column_types(sql, rel.id)
        .await?
        .into_iter()
        .collect();
    let columns: Vec<ColumnShape> = rel
        .columns
        .iter()
        .map(|c| ColumnShape {
            name: c.name.clone(),
            type_oid: c.type_oid,
            type_modifier: c.type_modifier,
            pg_type: types.get(&c.name).cloned().unwrap_or_else(|| "text".into()),
        })
        .collect();
    catalog::shape(sql, rel.id, name, columns).await
}

/// The shape of table `name` from the catalog (what a Relation message would say).
pub(super) async fn of_table(sql: &Client, name: &str) -> Result<TableShape> {
    let oid = catalog::table_oid(sql, name).await?.ok_or_else(|| {
        Error::Setup(format!("table {name} does not exist at HO; fix [[tables]]"))
    })?;
    let rows = sql
        .query(
            "SELECT attname::text AS name, atttypid AS type_oid, atttypmod AS type_modifier,
                    format_type(atttypid, atttypmod) AS pg_type
               FROM pg_attribute
              WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attgenerated = ''
              ORDER BY attnum",
            &[&oid],
        )
        .await
        .ctx(|| format!("reading the columns of {name}"))?;
    let columns: Vec<ColumnShape> = rows
        .iter()
        .map(|r| ColumnShape {
            name: r.get("name"),
            type_oid: r.get("type_oid"),
            type_modifier: r.get("type_modifier"),
            pg_type: r.get("pg_type"),
        })
        .collect();
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

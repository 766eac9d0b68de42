//! The shape of a captured table, from a Relation message (streaming) or
//! from the catalog (full sync), and how its rows are routed.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::Client;

use super::batch::Captured;
use super::catalog;
use crate::error::{DbContext, Error, Result};
use crate::packet::{ColumnShape, TableShape};
use crate::pgoutput::Relation;
use crate::route::Route;

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

/// A table to capture with `shape`, routed by `route`; a routing column
/// that is not one of its columns is a setup error.
pub(super) fn captured(shape: TableShape, route: &Route) -> Result<Captured> {
    let route_column = match route {
        Route::All => None,
        Route::Column(c) => Some(shape.columns.iter().position(|x| &x.name == c).ok_or_else(
            || {
                Error::Setup(format!(
                    "routing column {c} is not a column of {}; fix route in [[tables]]",
                    shape.name
                ))
            },
        )?),
    };
    Ok(Captured {
        shape: Arc::new(shape),
        route_column,
    })
}

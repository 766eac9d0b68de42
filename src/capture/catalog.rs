//! What the capture needs to know of a table beyond the Relation message:
//! each column's type as PostgreSQL names it, and the key.

use tokio_postgres::Client;

use crate::error::{DbContext, Result};
use crate::packet::{ColumnShape, TableShape};

/// The shape of table `relid` named `name` with these columns: its key
/// (see [`key_columns`]) as indexes into them.
pub(crate) async fn shape(
    client: &Client,
    relid: u32,
    name: &str,
    columns: Vec<ColumnShape>,
) -> Result<TableShape> {
    let key = key_columns(client, relid)
        .await?
        .iter()
        .filter_map(|k| columns.iter().position(|c| &c.name == k))
        .collect();
    Ok(TableShape {
        name: name.to_string(),
        columns,
        key,
        cascade: Vec::new(),
        partitions: Vec::new(),
    })
}

/// Key columns of a table, in index order: its primary key, else its replica
/// identity index; empty when it has neither.
pub(crate) async fn key_columns(client: &Client, relid: u32) -> Result<Vec<String>> {
    let row = client
        .query_opt(
            "SELECT array(SELECT a.attname::text
                            FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(n, o)
                            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n
                           ORDER BY k.o)
               FROM pg_index i
              WHERE i.indrelid = $1 AND (i.indisprimary OR i.indisreplident)
              ORDER BY i.indisprimary DESC LIMIT 1",
            &[&relid],
        )
        .await
        .ctx(|| "reading the key of a table".into())?;
    Ok(row.map(|r| r.get(0)).unwrap_or_default())
}

/// Each column's type as `format_type` names it, by column name.
pub(crate) async fn column_types(client: &Client, relid: u32) -> Result<Vec<(String, String)>> {
    let rows = client
        .query(
            "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute
              WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[&relid],
        )
        .await
        .ctx(|| "reading the columns of a table".into())?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// A table's columns as packets describe them (generated columns aside:
/// they are not sent), in order, with their identity and defaults (which
/// only full syncs and shape announcements carry, see capture/shape.rs).
pub(crate) async fn columns(client: &Client, relid: u32) -> Result<Vec<ColumnShape>> {
    let rows = client
        .query(
            "SELECT attname::text, atttypid, atttypmod, format_type(atttypid, atttypmod), attnotnull,
                    CASE WHEN atthasmissing THEN (attmissingval::text::text[])[1] END,
                    attidentity <> '', pg_get_expr(d.adbin, d.adrelid)
               FROM pg_attribute a
               LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
              WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attgenerated = ''
              ORDER BY attnum",
            &[&relid],
        )
        .await
        .ctx(|| "reading the columns of a table".into())?;
    Ok(rows
        .iter()
        .map(|r| ColumnShape {
            name: r.get(0),
            type_oid: r.get(1),
            type_modifier: r.get(2),
            pg_type: r.get(3),
            not_null: r.get(4),
            missing: r.get(5),
            identity: r.get(6),
            default: r.get(7),
        })
        .collect())
}

/// The oid of `schema.table`, if it exists.
pub(crate) async fn table_oid(client: &Client, name: &str) -> Result<Option<u32>> {
    let row = client
        .query_one(
            "SELECT to_regclass($1)::oid",
            &[&crate::postgres::qualified(name)],
        )
        .await
        .ctx(|| format!("looking up table {name}"))?;
    Ok(row.get(0))
}

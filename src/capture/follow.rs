//! Children follow a parent that moved: when a row of a table others are
//! routed by goes to another site, the capture reads its descendants from
//! HO (as HO holds them now) and adds them for the new site, at the end of
//! the transaction that moved it. The old site deletes them itself with
//! the parent (the part's cascade), so nothing stays behind as an orphan.
//!
//! Reading HO as it is now, not as of the move, is safe: the stream's later
//! changes to those rows come after, in order, and set each row to HO's.

use tokio_postgres::Client;

use super::batch::{Batcher, Move};
use super::copy_lines::{read_tx, CopyLines};
use super::parents::texts_of;
use super::{catalog, shape};
use crate::error::{DbContext, Error, Result};
use crate::postgres::{ident, qualified};
use crate::relay::writer::Writer;
use crate::route::Tree;

/// Parent keys per query.
const KEYS_PER_QUERY: usize = 500;

/// Adds the descendants of the moved rows `moves` to the batcher (packets
/// they fill go to `writer`); returns how many rows.
pub(super) async fn follow(
    sql: &Client,
    tree: &Tree,
    batcher: &mut Batcher,
    writer: &mut Writer<'_>,
    moves: Vec<Move>,
) -> Result<u64> {
    let Some(lsn) = moves.last().map(|m| m.lsn) else {
        return Ok(0);
    };
    // Per moved table, its keys in order, each once.
    let mut by_table: Vec<(String, Vec<Vec<String>>)> = Vec::new();
    for m in moves {
        let key = texts_of(&m.key);
        match by_table.iter_mut().find(|(t, _)| *t == m.table) {
            Some((_, keys)) if !keys.contains(&key) => keys.push(key),
            Some(_) => {}
            None => by_table.push((m.table, vec![key])),
        }
    }
    let tx = read_tx(sql)
        .await
        .ctx(|| "starting to read the children of moved rows at HO".into())?;
    let mut rows = 0;
    for (table, keys) in &by_table {
        for child in tree.descendants(table) {
            let (rel, columns) = registered(&tx, tree, batcher, child).await?;
            for chunk in keys.chunks(KEYS_PER_QUERY) {
                let copy = format!(
                    "COPY (SELECT {} FROM {} relaysync_d WHERE {}) TO STDOUT",
                    columns.join(", "),
                    qualified(child),
                    tree.below(child, table, "relaysync_d", chunk)
                );
                rows += copy_into(&tx, &copy, child, rel, lsn, batcher, writer).await?;
            }
        }
    }
    tx.rollback().await;
    if rows > 0 {
        tracing::debug!(rows, "children followed their moved parents");
    }
    Ok(rows)
}

/// The relation id of `table` in the batcher (registered from the catalog
/// when the stream has not described it yet) and its columns, as the
/// batcher knows them, for a SELECT list.
async fn registered(
    sql: &Client,
    tree: &Tree,
    batcher: &mut Batcher,
    table: &str,
) -> Result<(u32, Vec<String>)> {
    let rel = catalog::table_oid(sql, table).await?.ok_or_else(|| {
        Error::Setup(format!(
            "table {table} does not exist at HO; fix [[tables]]"
        ))
    })?;
    if !batcher.knows(rel) {
        let route = tree
            .route(table)
            .ok_or_else(|| Error::Setup(format!("{table} is not in [[tables]]")))?;
        let found = shape::of_table(sql, table).await?;
        batcher.relation(rel, shape::captured(found, route, tree)?);
    }
    let columns = batcher
        .columns_of(rel)
        .into_iter()
        .map(|c| format!("relaysync_d.{}", ident(&c)))
        .collect();
    Ok((rel, columns))
}

/// Runs `copy` and adds its rows as inserts of relation `rel`.
async fn copy_into(
    sql: &Client,
    copy: &str,
    table: &str,
    rel: u32,
    lsn: u64,
    batcher: &mut Batcher,
    writer: &mut Writer<'_>,
) -> Result<u64> {
    let what = format!("reading the rows of {table} that follow their parent");
    let mut lines = CopyLines::open(sql, copy, what).await?;
    let mut rows = 0;
    while let Some(tuples) = lines.next().await? {
        for values in tuples {
            batcher.insert_following(rel, values, lsn);
            rows += 1;
        }
        for draft in batcher.take_sealed() {
            writer.write(draft.to_write()).await?;
        }
    }
    Ok(rows)
}

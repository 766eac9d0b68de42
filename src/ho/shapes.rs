//! Schema changes of synced tables that no row carries through HO's
//! stream. pgoutput sends a table's shape (a Relation message) before the
//! first change of a row after a change of the table, so a column added
//! with no write after it would reach no site. HO's worker compares each
//! synced table's shape with the one published in the relay
//! (`relay.tables`) on every `ho sync` (every 15 s while streaming) and
//! announces each changed one in the stream itself: a transactional
//! logical message with the shape, written while it holds ACCESS SHARE on
//! the tables, so that no ALTER TABLE commits between reading the shape and
//! the message: the message stands where that shape is the table's. The
//! shape is then published.
//!
//! A column added with values PostgreSQL wrote into the rows (a volatile
//! default such as `clock_timestamp()` or `gen_random_uuid()`, an
//! identity) leaves those values out of the stream: every active site
//! reloads the table.

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::capture::{catalog, shape};
use crate::config::Config;
use crate::error::{DbContext, Error, Result};
use crate::postgres::{qualified, Tx};
use crate::protocol::SyncReason;
use crate::relay::{PublishedTable, Relay};

/// Announces the synced tables whose shape changed since it was
/// published; returns them.
pub(super) async fn announce_changes(
    cfg: &Config,
    sql: &Client,
    relay: &Relay,
) -> Result<Vec<String>> {
    let published = relay.published_by_name().await?;
    let mut tables: Vec<(&PublishedTable, u32)> = Vec::new();
    for t in &cfg.tables {
        let Some(p) = published.get(&t.name) else {
            continue;
        };
        // A table gone at HO is for `setup ho` and doctor to name.
        if let Some(oid) = catalog::table_oid(sql, &t.name).await? {
            tables.push((p, oid));
        }
    }
    if tables.is_empty() {
        return Ok(Vec::new());
    }
    let quoted: Vec<String> = tables.iter().map(|(t, _)| qualified(&t.name)).collect();
    let begin = format!(
        "BEGIN; SET LOCAL lock_timeout = '2s'; LOCK TABLE {} IN ACCESS SHARE MODE",
        quoted.join(", ")
    );
    let tx = match Tx::begin(sql, &begin).await {
        Ok(tx) => tx,
        // An ALTER TABLE waits or runs: the next check sees it committed.
        Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => return Ok(Vec::new()),
        Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
            let me: String = sql
                .query_one("SELECT current_user::text", &[])
                .await
                .ctx(|| "reading HO's role".into())?
                .get(0);
            return Err(Error::Setup(format!(
                "HO's worker may not read the synced tables ({}): it reads them for full syncs and to see their shapes change; run: `GRANT SELECT ON {} TO {}`",
                crate::error::db_message(&e),
                quoted.join(", "),
                crate::postgres::ident(&me)
            )));
        }
        Err(e) => return Err(e).ctx(|| "locking the synced tables to read their shapes".into()),
    };
    let mut changed = Vec::new();
    for (before, oid) in tables {
        let now = PublishedTable {
            name: before.name.clone(),
            route: before.route.clone(),
            key_columns: catalog::key_columns(&tx, oid).await?,
            columns: catalog::column_types(&tx, oid).await?,
        };
        if now.columns == before.columns && now.key_columns == before.key_columns {
            continue;
        }
        let table = shape::of_table(&tx, &now.name).await?;
        shape::announce(&tx, oid, &table).await?;
        let added: Vec<&str> = now
            .columns
            .iter()
            .filter(|(c, _)| !before.columns.iter().any(|(b, _)| b == c))
            .map(|(c, _)| c.as_str())
            .collect();
        let rewritten = written_by_postgres(&tx, oid, &added).await?;
        changed.push((now, rewritten));
    }
    tx.commit()
        .await
        .ctx(|| "announcing the synced tables' shapes".into())?;
    for (table, rewritten) in &changed {
        tracing::info!(table = %table.name, "the table's shape changed at HO; announced to the sites");
        relay.republish(table).await?;
        if !rewritten.is_empty() {
            tracing::warn!(
                table = %table.name,
                columns = ?rewritten,
                "columns added at HO with values PostgreSQL wrote into the rows (a volatile default, an identity), which the stream does not carry; every site reloads the table"
            );
            relay
                .request_reload(&table.name, SyncReason::Schema)
                .await?;
        }
    }
    Ok(changed.into_iter().map(|(t, _)| t.name).collect())
}

/// Of `columns` of relation `oid`, those whose values in the rows there
/// before them PostgreSQL computed row by row: a default it did not store
/// once as the value of every older row (`atthasmissing`), or an identity.
async fn written_by_postgres(sql: &Client, oid: u32, columns: &[&str]) -> Result<Vec<String>> {
    if columns.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sql
        .query(
            "SELECT attname::text FROM pg_attribute
              WHERE attrelid = $1 AND attname = ANY($2) AND attgenerated = ''
                AND ((atthasdef AND NOT atthasmissing) OR attidentity <> '')
              ORDER BY attnum",
            &[&oid, &columns],
        )
        .await
        .ctx(|| "reading the defaults of added columns".into())?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

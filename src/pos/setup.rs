//! `setup pos`: checks this site's tables against what HO published, and,
//! with upstream tables, the site as a capture source; then creates the
//! site's bookkeeping schema (and its publication, slot and origin).

use std::collections::HashMap;

use tokio_postgres::Client;

use crate::book::{self, Side};
use crate::checks;
use crate::config::Config;
use crate::error::{DbContext, Error, Result};
use crate::postgres::{connect, ident, qualified};
use crate::relay::{PublishedTable, Relay};

/// Checks the site's tables against HO's and creates the site's bookkeeping
/// schema; returns what it did, a line each.
pub async fn setup(cfg: &Config) -> Result<Vec<String>> {
    let pos = cfg.pos()?;
    let relay = Relay::connect(&cfg.relay()?.url).await?;
    relay.require_site(&pos.site).await?;
    let mut client = connect("pos", &pos.url).await?;
    let published = relay.published_by_name().await?;
    let mut made = Vec::new();
    for t in &cfg.tables {
        let Some(p) = published.get(&t.name) else {
            return Err(Error::Setup(format!(
                "HO has not published table {} to the relay; run `relaysync setup ho` with the same [[tables]]",
                t.name
            )));
        };
        match crate::capture::catalog::table_oid(&client, &t.name).await? {
            Some(_) => check_table(&client, p).await?,
            None => made.push(t.name.clone()),
        }
    }
    check_owner(&client, &pos.site).await?;
    let upstream = check_upstream(&client, cfg).await?;
    book::migrate::migrate(&mut client, Side::Site).await?;
    book::site::register(&client, &pos.site).await?;
    let mut said = vec![format!(
        "site {}: {} table(s) checked, bookkeeping schema relaysync ready",
        pos.site,
        cfg.tables.len() - made.len()
    )];
    if !made.is_empty() {
        said.push(format!(
            "not at the site yet: {}; the site's full sync of each makes it with HO's columns, types, NOT NULL and key (make it yourself first for its defaults, indexes and foreign keys)",
            made.join(", ")
        ));
    }
    for b in crate::apply::sequence::behind(&client, &cfg.written_tables())
        .await
        .ctx(|| "reading the sequences behind the synced tables".into())?
    {
        said.push(format!("warning: {}", b.warning("pos")));
    }
    if let Some((slot_exists, publication)) = upstream {
        checks::apply_publication(&client, &pos.publication, publication).await?;
        checks::create_slot(&client, &pos.slot, slot_exists).await?;
        crate::apply::ensure_origin(&client, crate::APPLY_ORIGIN).await?;
        said.push(format!(
            "upstream capture ready: publication {} and slot {} for {} table(s)",
            pos.publication,
            pos.slot,
            cfg.upstream.len()
        ));
    }
    Ok(said)
}

/// Fails when this database is already another site's.
async fn check_owner(client: &Client, site: &str) -> Result<()> {
    if !book::migrate::is_set_up(client, Side::Site).await? {
        return Ok(());
    }
    match book::site::owner(client).await? {
        Some(other) if other != site => Err(Error::Setup(format!(
            "this database belongs to site '{other}'; give site '{site}' its own database (or fix [pos] site)"
        ))),
        _ => Ok(()),
    }
}

/// Checks the site for upstream capture (wal_level, the role, free slot,
/// keys, the publication) before anything is created; returns whether the
/// slot exists and what the publication needs, or None without upstream
/// tables.
async fn check_upstream(client: &Client, cfg: &Config) -> Result<Option<(bool, Option<String>)>> {
    if cfg.upstream.is_empty() {
        return Ok(None);
    }
    let pos = cfg.pos()?;
    let place = format!("site {}", pos.site);
    checks::require_logical(client, &place).await?;
    checks::require_replication(client, &place).await?;
    checks::require_origin_functions(client, &place).await?;
    let exists = checks::slot_capacity(client, &pos.slot, &place, "[pos] slot").await?;
    for u in &cfg.upstream {
        checks::identity(
            client,
            &u.name,
            "upstream table",
            "the site",
            "create it or fix [[upstream]] name",
        )
        .await?;
    }
    let tables: Vec<String> = cfg.upstream.iter().map(|u| u.name.clone()).collect();
    let publication = checks::publication_plan(client, &pos.publication, &tables).await?;
    Ok(Some((exists, publication)))
}

/// Checks that a site table has HO's columns, types and a unique key.
pub(crate) async fn check_table(client: &Client, t: &PublishedTable) -> Result<()> {
    let name = &t.name;
    let q = qualified(name);
    let oid = crate::capture::catalog::table_oid(client, name).await?.ok_or_else(|| {
        Error::Setup(format!(
            "table {name} does not exist at the site; create it as at HO (pg_dump --schema-only -t {name} at HO, then psql at the site)"
        ))
    })?;
    let site_cols: HashMap<String, String> = crate::capture::catalog::column_types(client, oid)
        .await?
        .into_iter()
        .collect();
    for (n, ty) in &t.columns {
        match site_cols.get(n) {
            None => {
                return Err(Error::Setup(format!(
                    "table {name} at the site lacks column {n}; run ALTER TABLE {q} ADD COLUMN {} {ty}",
                    ident(n)
                )))
            }
            Some(st) if st != ty => {
                return Err(Error::Setup(format!(
                    "column {n} of {name} is {st} at the site but {ty} at HO; run ALTER TABLE {q} ALTER COLUMN {} TYPE {ty}",
                    ident(n)
                )))
            }
            _ => {}
        }
    }
    if !t.key_columns.is_empty() && !has_unique_index(client, oid, &t.key_columns).await? {
        let cols = t
            .key_columns
            .iter()
            .map(|k| ident(k))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(Error::Setup(format!(
            "table {name} at the site has no unique index on its key ({cols}); run ALTER TABLE {q} ADD PRIMARY KEY ({cols})"
        )));
    }
    Ok(())
}

/// Whether table `oid` has a unique index on exactly `key`.
async fn has_unique_index(client: &Client, oid: u32, key: &[String]) -> Result<bool> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = $1 AND i.indisunique
               AND i.indpred IS NULL AND i.indexprs IS NULL
               AND (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a
                     WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey::int2[]))
                   = (SELECT array_agg(k ORDER BY k) FROM unnest($2::text[]) k)) AS unique",
            &[&oid, &key],
        )
        .await
        .ctx(|| "reading the indexes of a site table".into())?
        .get("unique"))
}

//! `setup ho`: checks HO as a capture source (wal_level, a free slot and
//! WAL sender, keys and replica identity, routes, upstream tables) before
//! anything is created; then its schema, publication, slot and origin, and
//! the tables' shapes published to the relay.

use tokio_postgres::Client;

use crate::book::{self, Side};
use crate::capture::catalog;
use crate::checks;
use crate::config::{Config, Merge};
use crate::error::{Error, Result};
use crate::postgres::{connect, qualified};
use crate::relay::{PublishedTable, Relay};
use crate::route::{Route, Tree};

/// Checks HO and prepares it; returns what it did, a line each.
pub async fn setup(cfg: &Config) -> Result<Vec<String>> {
    let ho = cfg.ho()?;
    let relay = Relay::connect(&cfg.relay()?.url).await?;
    let mut sql = connect("ho", &ho.url).await?;
    let mut said = Vec::new();

    checks::require_logical(&sql, "HO").await?;
    checks::require_replication(&sql, "HO").await?;
    let slot_exists = checks::slot_capacity(&sql, &ho.slot, "HO", "[ho] slot").await?;
    if cfg.tables.is_empty() && cfg.upstream.is_empty() {
        return Err(Error::Config(
            "no [[tables]] and no [[upstream]] in the config; add one [[tables]] per HO table to send to the sites (e.g. [[tables]] name = \"public.items\"), or one [[upstream]] per site table to bring up".into(),
        ));
    }
    let routes = cfg.routes();
    let (tree, orphans) = crate::route::check(&sql, &routes).await?;
    let mut described = Vec::new();
    for (name, route) in &routes {
        described.push(check_table(&sql, name, route, &tree).await?);
    }
    said.extend(orphans.into_iter().map(|o| format!("warning: {o}")));
    check_upstream(&sql, cfg).await?;
    let names: Vec<String> = described.iter().map(|t| t.name.clone()).collect();
    let publication = checks::publication_plan(&sql, &ho.publication, &names).await?;

    book::migrate::migrate(&mut sql, Side::Ho).await?;
    if !cfg.upstream.is_empty() {
        let origin = crate::apply::ensure_origin(&sql, crate::MERGE_ORIGIN).await?;
        said.push(format!(
            "replication origin {origin} marks what HO merges from the sites"
        ));
    }
    checks::apply_publication(&sql, &ho.publication, publication).await?;
    let table_list = names
        .iter()
        .map(|n| qualified(n))
        .collect::<Vec<_>>()
        .join(", ");
    said.push(format!(
        "publication {} covers {table_list}",
        ho.publication
    ));
    if let Some(line) = super::partitions::install_trigger(&sql, &ho.publication, &names).await? {
        said.push(line);
    }
    checks::create_slot(&sql, &ho.slot, slot_exists).await?;
    said.push(format!(
        "replication slot {} {}",
        ho.slot,
        if slot_exists { "exists" } else { "created" }
    ));
    let published = relay.publish_tables(&described).await?;
    said.push(format!(
        "{} table(s) published to the relay",
        described.len()
    ));
    if !published.added.is_empty() && !relay.sites().await?.is_empty() {
        said.push(format!(
            "new table(s) {}: every site gets a full sync of them on the next `ho sync`",
            published.added.join(", ")
        ));
    }
    if !published.removed.is_empty() {
        said.push(format!(
            "no longer synced: {} (the sites keep their copies as they are)",
            published.removed.join(", ")
        ));
    }
    Ok(said)
}

/// Checks one synced table (key, replica identity, route) and reads its shape.
async fn check_table(
    sql: &Client,
    name: &str,
    route: &Route,
    tree: &Tree,
) -> Result<PublishedTable> {
    let id = checks::identity(sql, name, "table", "HO", "create it or fix [[tables]] name").await?;
    let columns = catalog::column_types(sql, id.oid).await?;
    // A row moving between sites is told by its old values: those that
    // route it (a route by parent), or that its children reference.
    let full_row = |what: String| {
        Error::Setup(format!(
            "{what}: HO must send the old row with updates; run: `{}`",
            id.make_full()
        ))
    };
    if let Some(link) = tree.link(name) {
        if !id.full && !link.columns.iter().all(|c| id.key.contains(c)) {
            return Err(full_row(format!(
                "route parent:{} of {name} follows its columns {}",
                link.parent,
                link.columns.join(", ")
            )));
        }
    }
    if let Some(refs) = tree.referenced(name) {
        if !id.full && !refs.iter().all(|c| id.key.contains(c)) {
            return Err(full_row(format!(
                "tables routed by {name} reference its columns {}",
                refs.join(", ")
            )));
        }
    }
    if let Route::Column(c) = route {
        if !columns.iter().any(|(n, _)| n == c) {
            return Err(Error::Setup(format!(
                "route column:{c} of {name}: {name} has no column {c}; fix route in [[tables]]"
            )));
        }
        if !id.full && !id.key.contains(c) {
            return Err(Error::Setup(format!(
                "route column:{c} of {name} needs the old row to move rows between sites; run: `{}`",
                id.make_full()
            )));
        }
    }
    Ok(PublishedTable {
        name: name.to_string(),
        route: route.to_string(),
        key_columns: id.key,
        columns,
    })
}

/// Checks that every upstream table exists at HO, with a key to merge by,
/// and that HO's role may mark its merges with a replication origin.
async fn check_upstream(sql: &Client, cfg: &Config) -> Result<()> {
    if !cfg.upstream.is_empty() {
        checks::require_origin_functions(sql, "HO").await?;
    }
    for u in &cfg.upstream {
        let oid = catalog::table_oid(sql, &u.name).await?.ok_or_else(|| {
            Error::Setup(format!(
                "upstream table {} does not exist at HO; create it as at the sites or fix [[upstream]] name",
                u.name
            ))
        })?;
        if u.merge != Merge::Append && catalog::key_columns(sql, oid).await?.is_empty() {
            return Err(Error::Setup(format!(
                "upstream table {} has no primary key at HO, so rows cannot be merged by key; add one (ALTER TABLE {} ADD PRIMARY KEY (…))",
                u.name,
                qualified(&u.name)
            )));
        }
    }
    Ok(())
}

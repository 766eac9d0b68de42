//! `relaysync demo`: the whole down path on throwaway clusters.

use std::time::Instant;

use relaysync::config::Config;
use relaysync::error::{DbContext, Error, Result};
use relaysync::postgres::connect;
use relaysync::relay::Relay;

mod clusters;

pub use clusters::Clusters;

const SCHEMA: &str = include_str!("../sql/demo_schema.sql");
const DATA: &str = include_str!("../sql/demo_data.sql");
const CHANGES: &str = include_str!("../sql/demo_changes.sql");
const SITE_CHANGES: &str = include_str!("../sql/demo_site_changes.sql");
const SITES: [&str; 2] = ["store-001", "store-002"];
const TABLES: [(&str, &str); 3] = [
    ("public.items", "all"),
    ("public.prices", "column:site_code"),
    ("public.users", "all"),
];

/// The code of site `i`.
fn site_code(i: usize) -> String {
    SITES
        .get(i)
        .map_or_else(|| format!("site-{i:03}"), |s| s.to_string())
}

/// A throwaway cluster's error as relaysync's.
pub fn cluster_error(e: relaysync_cluster::Error) -> Error {
    match e {
        relaysync_cluster::Error::Setup(message) => Error::Setup(message),
        relaysync_cluster::Error::Io { context, source } => Error::Io { context, source },
        relaysync_cluster::Error::Db { context, source } => Error::Db { context, source },
    }
}

async fn run_sql(url: &str, sql: &str) -> Result<()> {
    let client = connect("ho", url).await?;
    client
        .batch_execute(sql)
        .await
        .ctx(|| "running demo SQL".into())
}

/// Rows of `table` that differ between two databases (both directions).
pub async fn differences(
    a_url: &str,
    b_url: &str,
    table: &str,
    filter: &str,
) -> Result<(i64, i64)> {
    let a = connect("ho", a_url).await?;
    let b = connect("pos", b_url).await?;
    let q = format!(
        "SELECT count(*) FROM {} WHERE {filter}",
        relaysync::postgres::qualified(table)
    );
    let count_a: i64 = a
        .query_one(&q, &[])
        .await
        .ctx(|| "counting rows".into())?
        .get(0);
    let rows_a = a
        .query(
            &format!(
                "SELECT t::text FROM {} t WHERE {filter} ORDER BY 1",
                relaysync::postgres::qualified(table)
            ),
            &[],
        )
        .await
        .ctx(|| "reading rows".into())?;
    let rows_b = b
        .query(
            &format!(
                "SELECT t::text FROM {} t ORDER BY 1",
                relaysync::postgres::qualified(table)
            ),
            &[],
        )
        .await
        .ctx(|| "reading rows".into())?;
    let set_a: std::collections::BTreeSet<String> = rows_a.iter().map(|r| r.get(0)).collect();
    let set_b: std::collections::BTreeSet<String> = rows_b.iter().map(|r| r.get(0)).collect();
    let diff = set_a.symmetric_difference(&set_b).count() as i64;
    Ok((count_a, diff))
}

async fn sync_sites(clusters: &Clusters, tables: &[(&str, &str)]) -> Result<()> {
    for (i, code) in SITES.iter().enumerate() {
        println!("\n$ relaysync pos sync --once   # at {code}");
        crate::cli::summary::pos(&relaysync::pos::sync_once(&clusters.config(i, tables)).await?);
    }
    Ok(())
}

async fn ho_sync(cfg: &Config, why: &str) -> Result<()> {
    println!("\n$ relaysync ho sync --once{why}");
    crate::cli::summary::ho(&relaysync::ho::sync_once(cfg).await?);
    Ok(())
}

async fn print_events(url: &str) -> Result<()> {
    let client = connect("ho", url).await?;
    // Everything the demo logged: it ran in the last few seconds.
    let since = std::time::Duration::from_secs(24 * 3600);
    for e in relaysync::service::events(&client, "ho", since)
        .await?
        .events
    {
        println!(
            "  {:<10} {:<14} key {:<3} {}",
            e.site, e.table, e.key, e.event
        );
    }
    Ok(())
}

/// Runs the demo and prints what happened.
pub async fn run() -> Result<()> {
    let started = Instant::now();
    println!(
        "demo: starting throwaway PostgreSQL clusters (HO, relay, {} sites)…",
        SITES.len()
    );
    let clusters = Clusters::start(SITES.len()).await?;
    let ho_cfg = clusters.config(usize::MAX, &TABLES);
    let relay = set_up(&clusters, &ho_cfg).await?;
    print_status(&relay).await?;
    ho_sync(&ho_cfg, "   # serves each site's first sync: a full sync").await?;
    sync_sites(&clusters, &TABLES).await?;
    changes_at_ho(&clusters, &ho_cfg).await?;
    changes_at_a_site(&clusters, &ho_cfg).await?;
    print_status(&relay).await?;
    let all_equal = compare(&clusters).await?;
    println!(
        "\ndemo: {} in {:.1}s; the clusters are removed now.",
        if all_equal {
            "both sites equal HO and HO has every device event"
        } else {
            "SITES DIFFER FROM HO"
        },
        started.elapsed().as_secs_f64()
    );
    if !all_equal {
        return Err(Error::Setup(
            "the demo sites differ from HO; this is a bug, please report it".into(),
        ));
    }
    Ok(())
}

/// Loads the schema and HO's data, then sets relaysync up as a DBA does.
async fn set_up(clusters: &Clusters, ho_cfg: &Config) -> Result<Relay> {
    run_sql(&clusters.ho.url("ho"), SCHEMA).await?;
    run_sql(&clusters.ho.url("ho"), DATA).await?;
    for s in &clusters.sites {
        run_sql(&s.url("pos"), SCHEMA).await?;
    }
    let relay_url = &ho_cfg.relay()?.url;
    println!(
        "demo: HO at {} holds 4 items and 4 store prices; relay at {}; the sites are empty.\n\
         Every connection is TLS, verified against each cluster's throwaway CA \
         (sslmode=verify-full), with a password; each site reaches the relay with a role of its own.\n\
         Every packet is signed by its writer (HO's key, or the site's) and checked before it is applied \
         ([ho] signing_key, [pos] signing_key and trust; keys made by `relaysync keys generate`).",
        ho_cfg.ho()?.url,
        relay_url
    );

    let mut relay = connect("relay", relay_url).await?;
    println!("\n$ relaysync setup relay");
    relaysync::relay::migrate(&mut relay).await?;
    let relay = Relay::connect(relay_url).await?;
    for (code, (role, password)) in SITES.iter().zip(&clusters.site_roles) {
        let role = relaysync::relay::SiteRole::Create {
            name: role.clone(),
            password: password.clone(),
        };
        relay.add_site(code, &role).await?;
        println!(
            "$ relaysync site add {code}   # creates relay role {}",
            role.name()
        );
    }
    println!("$ relaysync setup ho");
    for line in relaysync::ho::setup(ho_cfg).await? {
        println!("ho: {line}");
    }
    // Each side signs what it writes and checks what it applies: the relay
    // carries packets, it cannot forge or alter them.
    let ho = connect("ho", &ho_cfg.ho()?.url).await?;
    for code in SITES.iter() {
        let public = format!("{}.pub", clusters.key(code).display());
        let key = relaysync::seal::PublicKey::load_all("--public-key", public.as_ref())?;
        relaysync::service::record_site_key(&ho, code, &key[0]).await?;
        println!("$ relaysync site key {code} --public-key {code}.pem.pub   # made by `relaysync keys generate --out {code}.pem` at {code}");
    }
    for (i, code) in SITES.iter().enumerate() {
        println!("$ relaysync setup pos   # at {code}");
        for line in relaysync::pos::setup(&clusters.config(i, &TABLES)).await? {
            println!("pos: {line}");
        }
    }
    Ok(relay)
}

/// `relaysync status`, as the command prints it.
async fn print_status(relay: &Relay) -> Result<()> {
    println!("\n$ relaysync status");
    crate::cli::summary::status(&relay.site_status().await?);
    Ok(())
}

/// HO's changes, synced down to both sites as deltas.
async fn changes_at_ho(clusters: &Clusters, ho_cfg: &Config) -> Result<()> {
    println!(
        "\ndemo: changes at HO:\n{}",
        CHANGES
            .lines()
            .filter(|l| !l.starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    run_sql(&clusters.ho.url("ho"), CHANGES).await?;
    ho_sync(ho_cfg, "").await?;
    sync_sites(clusters, &TABLES).await?;
    ho_sync(ho_cfg, "   # reads the acks back").await?;
    Ok(())
}

/// A site's changes, merged at HO and sent down to both sites.
async fn changes_at_a_site(clusters: &Clusters, ho_cfg: &Config) -> Result<()> {
    println!(
        "\ndemo: meanwhile at store-001:\n{}",
        SITE_CHANGES
            .lines()
            .filter(|l| !l.starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    run_sql(&clusters.sites[0].url("pos"), SITE_CHANGES).await?;
    println!("\n$ relaysync pos sync --once   # at store-001: uploads its changes");
    crate::cli::summary::pos(&relaysync::pos::sync_once(&clusters.config(0, &TABLES)).await?);
    ho_sync(
        ho_cfg,
        "   # merges them (HO's values win) and sends the merged users down",
    )
    .await?;
    sync_sites(clusters, &TABLES).await?;
    ho_sync(ho_cfg, "   # reads the acks back").await?;
    println!("\n$ relaysync events   # at HO");
    print_events(&clusters.ho.url("ho")).await?;
    println!("\n$ relaysync events --pos   # at store-002");
    print_events(&clusters.sites[1].url("pos")).await?;
    Ok(())
}

/// Compares each site with HO, row by row, and prints it: whether they are
/// equal and HO has every device event.
async fn compare(clusters: &Clusters) -> Result<bool> {
    println!("\ndemo: each site compared with HO, row by row:");
    let mut all_equal = true;
    for (i, code) in SITES.iter().enumerate() {
        let site_url = clusters.sites[i].url("pos");
        for (table, filter) in [
            ("public.items", "true".to_string()),
            ("public.prices", format!("site_code = '{code}'")),
            ("public.users", "true".to_string()),
        ] {
            let (rows, diff) =
                differences(&clusters.ho.url("ho"), &site_url, table, &filter).await?;
            all_equal &= diff == 0;
            println!(
                "  {code} {table:<14} {rows} row(s) at HO for this site, {}",
                if diff == 0 {
                    "identical at the site".to_string()
                } else {
                    format!("{diff} row(s) differ")
                }
            );
        }
    }
    let ho = connect("ho", &clusters.ho.url("ho")).await?;
    let events: i64 = ho
        .query_one("SELECT count(*) FROM public.device_events", &[])
        .await
        .ctx(|| "counting device events".into())?
        .get(0);
    println!("  HO holds {events} device event(s) from store-001 (20 logged there)");
    all_equal &= events == 20;
    Ok(all_equal)
}

//! relaysync's side of the two loads (see `loads.rs`): its own relay
//! database and site roles, the full sync, then the sites' uploads.

use std::path::Path;
use std::time::{Duration, Instant};

use relaysync::config::Config;
use relaysync::error::Result;
use relaysync::relay::{role_name, Relay, SiteRole};

use super::loads::up_events;
use super::rig::{sql, write_file, Rig};
use super::wait::{wait_loaded, wait_sites};
use crate::demo::cluster_error;

/// relaysync set up as a DBA does it for the load tables (a relay database
/// of their own, K new sites registered at once), its workers started: the
/// full sync's seconds, then up_events' seconds and HO CPU.
pub(super) async fn relaysync_loads(
    rig: &mut Rig,
    rows: i64,
    events: i64,
    out: &mut dyn FnMut(&str),
) -> Result<(f64, f64, f64)> {
    let k = rig.codes.len();
    let (codes, relay_urls) = load_sites(rig, k).await?;
    let down =
        "[sync]\ninterval = \"0s\"\n[[tables]]\nname = \"public.full_rs\"\nroute = \"all\"\n";
    let tables = format!("{down}[[upstream]]\nname = \"public.events_rs\"\nmerge = \"append\"\n");
    let ho_path = rig.dir.join("loads_ho.toml");
    write_file(
        &ho_path,
        &format!(
            "[ho]\nurl = \"{}\"\nslot = \"relaysync_loads\"\npublication = \"relaysync_loads\"\n\
             [relay]\nurl = \"{}\"\n{tables}",
            rig.ho.url("ho"),
            rig.relay.url("relay_loads"),
        ),
    )?;
    relaysync::ho::setup(&Config::load(&ho_path)?).await?;
    // The full sync first with the down table alone, as native's: sites
    // streaming their upstream tables from one shared cluster would each
    // decode every site's load (one cluster per site decodes its own).
    let dir = rig.dir.clone();
    let site_urls: Vec<String> = (0..k)
        .map(|i| rig.site.url(&format!("rsload_{i:02}")))
        .collect();
    let site_config = |i: usize, tables: &str| -> Result<std::path::PathBuf> {
        let path = dir.join(format!("loads_site_{i:02}.toml"));
        write_file(
            &path,
            &format!(
                "[relay]\nurl = \"{}\"\n[pos]\nsite = \"{}\"\nurl = \"{}\"\n{tables}",
                relay_urls[i], codes[i], site_urls[i],
            ),
        )?;
        Ok(path)
    };
    let mut site_paths = Vec::new();
    for i in 0..k {
        let path = site_config(i, down)?;
        relaysync::pos::setup(&Config::load(&path)?).await?;
        site_paths.push(path);
    }
    let mut sites = Vec::new();
    for i in 0..k {
        sites.push(sql(&rig.site.url(&format!("rsload_{i:02}"))).await?);
    }

    out(&format!("relaysync: full_sync of {rows} rows to {k} sites"));
    let before = super::measure::rig_cpu(rig);
    let started = Instant::now();
    rig.spawn(&ho_path, "ho")?;
    for p in &site_paths {
        rig.spawn(p, "pos")?;
    }
    let done = wait_loaded(
        &sites,
        &format!("SELECT count(*) FROM public.full_rs WHERE id = {rows}"),
        1,
        "SELECT count(*) FROM public.full_rs",
        rows,
    )
    .await?;
    let full = (done - started).as_secs_f64();
    out(&format!(
        "relaysync: full_sync at every site after {full:.3} s; {}",
        super::measure::cpu_since(rig, before)
    ));

    // Then the sites upload: set up for their upstream table, streaming it.
    rig.stop_workers();
    for i in 0..k {
        relaysync::pos::setup(&Config::load(&site_config(i, &tables)?)?).await?;
    }
    let (up, cpu) = relaysync_up_events(rig, &ho_path, &site_paths, events, out).await?;
    Ok((full, up, cpu))
}

/// Registers `k` sites in a new relay database, `relay_loads`, each with
/// its own role (or the owner's URL without `site_roles`); their codes and
/// relay URLs.
async fn load_sites(rig: &Rig, k: usize) -> Result<(Vec<String>, Vec<String>)> {
    rig.relay
        .create_database("relay_loads")
        .await
        .map_err(cluster_error)?;
    let mut owner = relaysync::postgres::connect("relay", &rig.relay.url("relay_loads")).await?;
    relaysync::relay::migrate(&mut owner).await?;
    let relay = Relay::connect(&rig.relay.url("relay_loads")).await?;
    let codes: Vec<String> = (0..k).map(|i| format!("load-{i:02}")).collect();
    let mut relay_urls = Vec::new();
    for code in &codes {
        let name = role_name(code)?;
        let password = crate::cli::site::generate_password()?;
        relay
            .add_site(
                code,
                &SiteRole::Create {
                    name: name.clone(),
                    password: password.clone(),
                },
            )
            .await?;
        relay_urls.push(if rig.site_roles.is_some() {
            rig.relay.url_as(&name, &password, "relay_loads")
        } else {
            rig.relay.url("relay_loads")
        });
    }
    Ok((codes, relay_urls))
}

/// The sites, set up for their upstream table, upload `events` events
/// while HO streams; (seconds until HO holds them, HO's CPU seconds).
async fn relaysync_up_events(
    rig: &mut Rig,
    ho_path: &Path,
    site_paths: &[std::path::PathBuf],
    events: i64,
    out: &mut dyn FnMut(&str),
) -> Result<(f64, f64)> {
    let k = site_paths.len();
    let ho_worker = rig.spawn(ho_path, "ho")?;
    for p in site_paths {
        rig.spawn(p, "pos")?;
    }
    let site_admin = sql(&rig.site.url("postgres")).await?;
    wait_sites(
        std::slice::from_ref(&site_admin),
        "SELECT count(*) FROM pg_replication_slots WHERE database LIKE 'rsload_%' AND active",
        k as i64,
        Duration::from_secs(120),
    )
    .await?;
    out(&format!(
        "relaysync: up_events, {events} events from {k} sites"
    ));
    let dbs: Vec<String> = (0..k).map(|i| format!("rsload_{i:02}")).collect();
    let before = super::measure::rig_cpu(rig);
    let result = up_events(rig, &dbs, "events_rs", events, Some(ho_worker)).await;
    let spent = super::measure::cpu_since(rig, before);
    rig.stop_workers();
    let (up, cpu, committed) = result?;
    out(&format!(
        "relaysync: up_events committed at the sites in {committed:.3} s, at HO after {up:.3} s; HO CPU {cpu:.2} s; {spent}"
    ));
    Ok((up, cpu))
}

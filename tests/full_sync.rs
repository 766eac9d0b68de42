//! Full sync: a site's first contact, Sync Selective / Sync All, clean
//! resync; consistent while HO writes, atomic at the site.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

const SCHEMA: &str = "
CREATE TABLE public.items (id int PRIMARY KEY, name text, qty int);
CREATE TABLE public.prices (site_code text, item_id int, price numeric(10,2), PRIMARY KEY (site_code, item_id));
";
const TABLES: &[(&str, &str)] = &[
    ("public.items", "all"),
    ("public.prices", "column:site_code"),
];

async fn load_ho(bed: &Bed, items: i32) {
    bed.ho()
        .await
        .execute(
            "INSERT INTO public.items SELECT g, 'item ' || g, g FROM generate_series(1, $1) g;",
            &[&items],
        )
        .await
        .unwrap();
    bed.ho()
        .await
        .batch_execute(
            "INSERT INTO public.prices SELECT s, g, g / 10.0 FROM generate_series(1, 500) g, unnest(ARRAY['s1', 's2', 's3']) s;",
        )
        .await
        .unwrap();
}

async fn assert_site_equals_ho(bed: &Bed, site: usize) {
    assert_same(
        bed,
        site,
        "SELECT * FROM public.items",
        "SELECT * FROM public.items",
    )
    .await;
    assert_prices_same(bed, site).await;
}

/// The site holds exactly HO's prices for it.
async fn assert_prices_same(bed: &Bed, site: usize) {
    assert_routed_same(bed, site, "public.prices", "site_code").await;
}

fn site_state(status: &str, site: &str) -> String {
    status
        .lines()
        .find(|l| l.starts_with(site))
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().skip(1).collect();
            match words.first() {
                Some(&"Not") | Some(&"In") => words[..2].join(" "),
                _ => words.first().map(|w| w.to_string()).unwrap_or_default(),
            }
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_contact_loads_every_routed_row_and_reports_status() {
    let bed = Bed::new("first_contact", SCHEMA, TABLES, "").await;
    load_ho(&bed, 3000).await;
    bed.register().await;
    let status = bed.ok(0, &["status"]).await;
    assert_eq!(site_state(&status, "s1"), "Not started", "{status}");
    let out = bed.ok(0, &["ho", "sync", "--once"]).await;
    assert!(
        out.contains("full sync for s1, s2: 2 table(s), 4000 row(s)"),
        "{out}"
    );
    // Served, but the site's worker has not run: a site that never synced
    // is Not started, however many sites the fleet has.
    let status = bed.ok(0, &["status"]).await;
    assert_eq!(site_state(&status, "s1"), "Not started", "{status}");
    let out = bed.ok(0, &["pos", "sync", "--once"]).await;
    assert!(out.contains("full sync at s1: 3500 rows"), "{out}");
    bed.ok(1, &["pos", "sync", "--once"]).await;
    for site in 0..2 {
        assert_site_equals_ho(&bed, site).await;
    }
    let status = bed.ok(0, &["status"]).await;
    assert_eq!(site_state(&status, "s1"), "Success", "{status}");
    // The site records each table's last full sync and row count.
    let site = bed.site(0).await;
    assert_eq!(
        rows(&site, "SELECT table_name, rows FROM relaysync.table_sync").await,
        [
            "(public.items,3000)".to_string(),
            "(public.prices,500)".to_string()
        ]
        .into()
    );
    // Only s1's and s2's prices were read: s3 is no site.
    let relay = bed.relay().await;
    assert_eq!(
        count(&relay, "SELECT coalesce(sum(t.row_count), 0)::int8 FROM relay.packet_parts t JOIN relay.packets p ON p.id = t.packet_id WHERE p.kind = 'snapshot' AND t.table_name = 'public.prices' AND t.target <> '*'").await,
        1000
    );
    // route = all is stored once for both sites.
    assert_eq!(
        count(&relay, "SELECT count(*) FROM relay.packet_parts t JOIN relay.packets p ON p.id = t.packet_id WHERE p.kind = 'snapshot' AND t.table_name = 'public.items' AND t.target <> '*'").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_while_ho_keeps_writing() {
    let bed = Bed::new("concurrent", SCHEMA, TABLES, "[packet]\nmax_rows = 2000").await;
    load_ho(&bed, 30_000).await;
    bed.register().await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let url = bed.ho_url.clone();
        tokio::spawn(async move {
            let ho = client(&url).await;
            let mut i = 0i32;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                ho.batch_execute(&format!(
                    "UPDATE public.items SET qty = qty + 1, name = 'u{i}' WHERE id = {};
                     INSERT INTO public.items VALUES ({}, 'new', {i});
                     DELETE FROM public.items WHERE id = {};
                     UPDATE public.prices SET price = price + 1 WHERE item_id = {} AND site_code = 's1';",
                    (i * 7919) % 30_000 + 1,
                    100_000 + i,
                    (i * 104_729) % 30_000 + 1,
                    i % 500 + 1,
                ))
                .await
                .unwrap();
            }
            i
        })
    };
    // Let the writer get going, then take the snapshot while it writes.
    wait_for(Duration::from_secs(10), "concurrent writes", || {
        let url = bed.ho_url.clone();
        async move {
            count(
                &client(&url).await,
                "SELECT count(*) FROM public.items WHERE id > 100000",
            )
            .await
                > 20
        }
    })
    .await;
    bed.ok(0, &["ho", "sync", "--once"]).await;
    bed.ok(0, &["pos", "sync", "--once"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // writes after the snapshot, too
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.unwrap();
    assert!(writes > 20, "only {writes} concurrent transactions");
    bed.sync_all().await;
    for site in 0..2 {
        assert_site_equals_ho(&bed, site).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_reloads_chosen_sites_only_and_removes_strays() {
    let bed = Bed::new("push", SCHEMA, TABLES, "").await;
    load_ho(&bed, 500).await;
    bed.register().await;
    bed.sync_all().await;
    // Strays at both sites: rows HO does not have.
    for site in 0..2 {
        bed.site(site)
            .await
            .batch_execute("INSERT INTO public.items VALUES (999999, 'stray', 0); DELETE FROM public.items WHERE id = 1;")
            .await
            .unwrap();
    }
    let s2 = bed.site(1).await;
    let s2_packets = count(&s2, "SELECT count(*) FROM relaysync.received_packets").await;
    bed.ok(0, &["push", "--site", "s1", "--table", "public.items"])
        .await;
    // A delta flows at the same time.
    bed.ho()
        .await
        .batch_execute("UPDATE public.items SET qty = -1 WHERE id = 2")
        .await
        .unwrap();
    bed.sync_all().await;
    assert_site_equals_ho(&bed, 0).await;
    // s2 got the delta and nothing else: its stray is still there.
    assert_eq!(
        count(&s2, "SELECT count(*) FROM public.items WHERE id = 999999").await,
        1
    );
    assert_eq!(
        count(&s2, "SELECT qty::int8 FROM public.items WHERE id = 2").await,
        -1
    );
    assert_eq!(
        count(&s2, "SELECT count(*) FROM relaysync.received_packets").await,
        s2_packets + 1
    );
    // Only the pushed table was reloaded at s1.
    let relay = bed.relay().await;
    assert_eq!(
        count(&relay, "SELECT count(DISTINCT t.table_name) FROM relay.packet_parts t JOIN relay.packets p ON p.id = t.packet_id WHERE p.kind = 'snapshot' AND p.targets = '{s1}'").await,
        1
    );
    // Sync All.
    bed.ok(0, &["push", "--all"]).await;
    bed.sync_all().await;
    assert_site_equals_ho(&bed, 1).await;
    // A clean resync asked by the site itself.
    bed.site(1)
        .await
        .batch_execute("DELETE FROM public.prices")
        .await
        .unwrap();
    let out = bed.ok(1, &["pos", "resync"]).await;
    assert!(out.contains("resync requested"), "{out}");
    bed.sync_all().await;
    assert_site_equals_ho(&bed, 1).await;
    // Bad requests name the fix.
    let out = bed.run(0, &["push", "--site", "nowhere"]).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("relaysync site add nowhere"));
    let out = bed
        .run(0, &["push", "--all", "--table", "public.nothing"])
        .await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in [[tables]]"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_full_sync_keeps_the_old_data_and_is_retried() {
    let bed = Bed::new("atomic", SCHEMA, TABLES, "[packet]\nmax_rows = 500").await;
    load_ho(&bed, 5000).await;
    bed.register().await;
    bed.sync_all().await;
    let before = rows(&bed.site(0).await, "SELECT * FROM public.items").await;
    bed.ho()
        .await
        .batch_execute("UPDATE public.items SET name = 'changed' WHERE id <= 2500")
        .await
        .unwrap();
    // The site's table no longer fits: a NOT NULL column HO does not have.
    bed.site(0)
        .await
        .batch_execute("ALTER TABLE public.items ADD COLUMN site_only int NOT NULL DEFAULT 0; ALTER TABLE public.items ALTER COLUMN site_only DROP DEFAULT;")
        .await
        .unwrap();
    bed.ok(0, &["push", "--site", "s1", "--table", "public.items"])
        .await;
    // Neither the delta before the push (its upserts) nor the snapshot fits.
    bed.ok(0, &["ho", "sync", "--once"]).await;
    let out = bed.run(0, &["pos", "sync", "--once"]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("site_only"), "{stderr}");
    let site = bed.site(0).await;
    let after_delta = rows(&site, "SELECT id, name, qty FROM public.items").await;
    assert_eq!(after_delta, before, "the site changed in a failed sync");
    let status = bed.ok(0, &["status"]).await;
    assert_eq!(site_state(&status, "s1"), "Failed", "{status}");
    // kill -9 in the middle of loading: the old data stays.
    site.batch_execute("ALTER TABLE public.items DROP COLUMN site_only")
        .await
        .unwrap();
    let mut cmd = bed.command(0, &["pos", "sync", "--once"]);
    cmd.env("RELAYSYNC_FAILPOINT", "pos_mid_apply");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        rows(&site, "SELECT id, name, qty FROM public.items").await,
        after_delta
    );
    // Fixed: a plain rerun succeeds.
    bed.ok(0, &["pos", "sync", "--once"]).await;
    assert_site_equals_ho(&bed, 0).await;
    bed.ok(0, &["ho", "sync", "--once"]).await;
    let status = bed.ok(0, &["status"]).await;
    assert_eq!(site_state(&status, "s1"), "Success", "{status}");
}

/// A table added to `[[tables]]` reaches every site with the rows HO had,
/// by re-running `setup ho` only; a table removed is no longer synced and
/// the sites keep their copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_added_later_is_fully_synced_and_a_removed_one_stops() {
    let bed = Bed::new("added", SCHEMA, &TABLES[..1], "").await;
    load_ho(&bed, 100).await;
    bed.setup().await;
    bed.write_config(TABLES, "");
    bed.ok(0, &["setup", "ho"]).await;
    bed.sync_all().await;
    for site in 0..2 {
        assert_site_equals_ho(&bed, site).await;
    }
    // Removed: HO's changes to it stay at HO, the sites keep what they had.
    bed.write_config(&TABLES[1..], "");
    bed.ok(0, &["setup", "ho"]).await;
    let ho = bed.ho().await;
    ho.batch_execute(
        "INSERT INTO public.items VALUES (1000, 'new', 1);
         INSERT INTO public.prices VALUES ('s1', 1000, 1), ('s2', 1000, 2);",
    )
    .await
    .unwrap();
    bed.sync_all().await;
    for site in 0..2 {
        let s = bed.site(site).await;
        assert_eq!(count(&s, "SELECT count(*) FROM public.items").await, 100);
        assert_prices_same(&bed, site).await;
    }
    assert_all_processed(&bed).await;
    let relay = bed.relay().await;
    assert_eq!(
        count(
            &relay,
            "SELECT count(*) FROM relay.tables WHERE name = 'public.items'"
        )
        .await,
        0
    );
}

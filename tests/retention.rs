//! `[retention]`: processed packets are purged (the relay stays flat under
//! a steady load), a silent site is expired and released, and comes back
//! with a full sync; status survives the purge.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const SCHEMA: &str = "CREATE TABLE public.items (id int PRIMARY KEY, name text);";

async fn status(bed: &Bed) -> Value {
    let out = bed.ok(0, &["status", "--json"]).await;
    serde_json::from_str(out.trim()).unwrap()
}

fn site<'a>(status: &'a Value, code: &str) -> &'a Value {
    status["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["site"] == code)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processed_packets_are_purged_and_status_survives() {
    let bed = Bed::new(
        "purge",
        SCHEMA,
        &[("public.items", "all")],
        "[retention]\nkeep_acked = \"1h\"\n",
    )
    .await;
    let ho = bed.ho().await;
    ho.batch_execute("INSERT INTO public.items VALUES (10, 'x'), (11, 'y'), (12, 'z')")
        .await
        .unwrap();
    bed.setup().await;
    ho.batch_execute("INSERT INTO public.items VALUES (1, 'a'), (2, 'b')")
        .await
        .unwrap();
    bed.ok(0, &["ho", "sync", "--once"]).await;
    bed.ok(0, &["pos", "sync", "--once"]).await;
    bed.ok(0, &["ho", "sync", "--once"]).await;
    let before = status(&bed).await;
    let tables = || async {
        let out = bed.ok(0, &["status", "--site", "s1", "--json"]).await;
        serde_json::from_str::<Value>(out.trim()).unwrap()
    };
    let relay = bed.relay().await;
    // Everything written so far is two hours old.
    relay
        .batch_execute("UPDATE relay.packets SET created_at = created_at - interval '2 hours'")
        .await
        .unwrap();
    let tables_before = tables().await;
    let items = &tables_before["tables"][0];
    assert_eq!(items["status"], "Success", "{tables_before}");
    assert_eq!(items["full_sync_rows"], 3, "{tables_before}");
    assert!(items["last_delta"].as_i64().is_some(), "{tables_before}");
    ho.batch_execute(
        "UPDATE relaysync.sent_packets SET created_at = created_at - interval '2 hours'",
    )
    .await
    .unwrap();
    bed.ok(0, &["ho", "sync", "--once"]).await;

    // s1 processed everything: gone. s2 has not applied the delta: kept.
    let left = count(&relay, "SELECT count(*) FROM relay.packets").await;
    assert_eq!(left, 1, "only the delta s2 has not applied is left");
    assert_eq!(
        count(&relay, "SELECT count(*) FROM relay.packet_parts").await,
        1
    );
    assert_eq!(
        count(
            &ho,
            "SELECT count(*) FROM relaysync.sent_packets WHERE status = 'PROCESSED'"
        )
        .await,
        0
    );
    let after = status(&bed).await;
    assert_eq!(site(&after, "s1")["status"], "Success", "{after}");
    assert_eq!(
        site(&after, "s1")["applied_through"],
        site(&before, "s1")["applied_through"],
        "{after}"
    );
    assert_eq!(site(&after, "s2")["status"], "In progress", "{after}");
    // The per-table history outlives the packets it came from.
    assert_eq!(tables().await, tables_before);
    // s2 still gets its packet.
    bed.ok(1, &["pos", "sync", "--once"]).await;
    assert_same(
        &bed,
        1,
        "SELECT * FROM public.items",
        "SELECT * FROM public.items",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_stays_flat_under_a_steady_load() {
    let bed = Bed::new(
        "flat",
        SCHEMA,
        &[("public.items", "all")],
        "[retention]\nkeep_acked = \"1s\"\n",
    )
    .await;
    bed.setup().await;
    let (ho, relay) = (bed.ho().await, bed.relay().await);
    let mut sizes = Vec::new();
    for round in 0..12 {
        let started = Instant::now();
        ho.batch_execute(&format!(
            "INSERT INTO public.items SELECT g, 'r{round}' FROM generate_series({0}, {0} + 199) g",
            round * 200
        ))
        .await
        .unwrap();
        bed.sync_all().await;
        // Each round spans keep_acked, so the round before is purgeable.
        wait_for(Duration::from_secs(5), "a round of keep_acked", || async {
            started.elapsed() >= Duration::from_millis(1100)
        })
        .await;
        sizes.push(count(&relay, "SELECT count(*) FROM relay.packets").await);
    }
    println!("relay packets per round: {sizes:?}");
    let most = *sizes[3..].iter().max().unwrap();
    assert!(most <= 4, "the relay keeps growing: {sizes:?}");
    assert_same(
        &bed,
        0,
        "SELECT * FROM public.items",
        "SELECT * FROM public.items",
    )
    .await;
    assert_same(
        &bed,
        1,
        "SELECT * FROM public.items",
        "SELECT * FROM public.items",
    )
    .await;
}

/// s2 has been silent for two hours (with `max_offline = "1h"`): a row
/// added at HO and HO's syncs expire it.
async fn expire_s2(bed: &Bed, ho: &tokio_postgres::Client, relay: &tokio_postgres::Client) {
    make_silent(relay, "s2").await;
    ho.batch_execute("INSERT INTO public.items VALUES (1, 'a')")
        .await
        .unwrap();
    bed.ok(0, &["ho", "sync", "--once"]).await;
    bed.ok(0, &["pos", "sync", "--once"]).await;
    bed.ok(0, &["ho", "sync", "--once"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_site_is_expired_released_and_comes_back_with_a_full_sync() {
    let bed = Bed::new(
        "expire",
        SCHEMA,
        &[("public.items", "all")],
        "[retention]\nmax_offline = \"1h\"\n",
    )
    .await;
    bed.setup().await;
    let (ho, relay) = (bed.ho().await, bed.relay().await);
    expire_s2(&bed, &ho, &relay).await;
    let st = status(&bed).await;
    assert_eq!(site(&st, "s2")["status"], "Expired", "{st}");
    assert_eq!(site(&st, "s2")["pending"], 0, "released: {st}");
    assert_eq!(site(&st, "s1")["status"], "Success", "{st}");
    assert_eq!(
        count(
            &relay,
            "SELECT count(*) FROM relay.packets WHERE status <> 'PROCESSED' AND direction = 'down'"
        )
        .await,
        0,
        "nothing waits for the expired site"
    );
    // More changes while s2 is away: not stored for it.
    ho.batch_execute(
        "INSERT INTO public.items VALUES (2, 'b'); UPDATE public.items SET name = 'c' WHERE id = 1",
    )
    .await
    .unwrap();
    bed.ok(0, &["ho", "sync", "--once"]).await;
    assert_eq!(
        count(&relay, "SELECT count(*) FROM relay.packets WHERE 's2' = ANY(targets) AND NOT EXISTS (SELECT 1 FROM relay.acks a WHERE a.packet_id = id AND a.site = 's2')").await,
        0
    );
    assert_eq!(
        count(&relay, "SELECT coalesce(max(target_count), 0)::int8 FROM relay.packets WHERE direction = 'down' AND status <> 'PROCESSED'").await,
        1,
        "the packets written while s2 is expired count s1 alone"
    );
    // s2 comes back: it asks, HO serves a full sync, s2 equals HO.
    bed.ok(1, &["pos", "sync", "--once"]).await;
    assert_eq!(
        count(
            &relay,
            "SELECT count(*) FROM relay.sync_requests WHERE site = 's2' AND reason = 'expired'"
        )
        .await,
        1
    );
    bed.sync_all().await;
    assert_same(
        &bed,
        1,
        "SELECT * FROM public.items",
        "SELECT * FROM public.items",
    )
    .await;
    let st = status(&bed).await;
    assert_eq!(site(&st, "s2")["status"], "Success", "{st}");
    // And it is a target again.
    ho.batch_execute("INSERT INTO public.items VALUES (3, 'd')")
        .await
        .unwrap();
    bed.sync_all().await;
    assert_same(
        &bed,
        1,
        "SELECT * FROM public.items",
        "SELECT * FROM public.items",
    )
    .await;
}

/// Coming back from Expired reloads every table, whatever request brings
/// the site back: here the full sync of a table added to `[[tables]]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_site_brought_back_by_an_added_table_reloads_every_table() {
    let schema = "CREATE TABLE public.items (id int PRIMARY KEY, name text);
                  CREATE TABLE public.prices (id int PRIMARY KEY, price numeric);";
    let retention = "[retention]\nmax_offline = \"1h\"\n";
    let bed = Bed::new(
        "expire_added",
        schema,
        &[("public.items", "all")],
        retention,
    )
    .await;
    bed.setup().await;
    let (ho, relay) = (bed.ho().await, bed.relay().await);
    expire_s2(&bed, &ho, &relay).await;
    assert_eq!(site(&status(&bed).await, "s2")["status"], "Expired");
    // Changes while s2 is away, then a table added.
    ho.batch_execute(
        "INSERT INTO public.items VALUES (2, 'b'); UPDATE public.items SET name = 'c' WHERE id = 1;
         INSERT INTO public.prices VALUES (1, 9.5);",
    )
    .await
    .unwrap();
    bed.ok(0, &["ho", "sync", "--once"]).await;
    bed.write_config(
        &[("public.items", "all"), ("public.prices", "all")],
        retention,
    );
    bed.ok(0, &["setup", "ho"]).await;
    bed.sync_all().await;
    bed.sync_all().await;
    for table in ["public.items", "public.prices"] {
        let all = format!("SELECT * FROM {table}");
        assert_same(&bed, 1, &all, &all).await;
    }
    let st = status(&bed).await;
    assert_eq!(site(&st, "s2")["status"], "Success", "{st}");
    // And verify, run as an operator would, finds both tables equal.
    bed.ok(0, &["verify", "--site", "s2"]).await;
    bed.sync_all().await;
    let out = bed
        .ok(0, &["--json", "verify", "--show", "--site", "s2"])
        .await;
    let shown: Value = serde_json::from_str(out.trim()).unwrap();
    let results = shown["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{shown}");
    assert!(results.iter().all(|r| r["status"] == "equal"), "{shown}");
}

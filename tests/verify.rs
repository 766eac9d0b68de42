//! verify: a site proves it equals HO at one point of the stream; drift is
//! found where it is, repaired, and not reported while HO keeps writing.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

const SCHEMA: &str = "
CREATE TABLE public.items (id int PRIMARY KEY, name text, price numeric, at timestamptz,
                           data jsonb, spot point, tags text[], raw bytea, f float8);
CREATE TABLE public.prices (site_code text, item_id int, price numeric(10,2), PRIMARY KEY (site_code, item_id));
CREATE TABLE public.log (msg text, n int);
ALTER TABLE public.log REPLICA IDENTITY FULL;
";
const TABLES: &[(&str, &str)] = &[
    ("public.items", "all"),
    ("public.prices", "column:site_code"),
    ("public.log", "all"),
];

async fn loaded_bed(test: &str) -> Bed {
    let bed = Bed::new(test, SCHEMA, TABLES, "").await;
    bed.ho()
        .await
        .batch_execute(
            "INSERT INTO public.items SELECT g, 'item ' || g, g / 7.0, '2024-01-01'::timestamptz + g * interval '1 hour',
                    jsonb_build_object('g', g), point(g, -g), ARRAY['a', g::text], decode(md5(g::text), 'hex'), g / 3.0
               FROM generate_series(1, 2000) g;
             INSERT INTO public.prices SELECT s, g, g / 10.0 FROM generate_series(1, 300) g, unnest(ARRAY['s1', 's2']) s;
             INSERT INTO public.log SELECT 'same', 1 FROM generate_series(1, 3);
             INSERT INTO public.log VALUES ('other', 2);",
        )
        .await
        .unwrap();
    bed.setup().await;
    bed
}

/// verify, then HO's sync and both sites' (and HO's again, which logs drift).
async fn verify_round(bed: &Bed, args: &[&str]) {
    let mut cmd = vec!["verify"];
    cmd.extend_from_slice(args);
    bed.ok(0, &cmd).await;
    bed.sync_all().await;
}

/// (site, table) → status, from `verify --show --json`.
async fn statuses(bed: &Bed) -> Vec<(String, String, String)> {
    let out = bed.ok(0, &["--json", "verify", "--show"]).await;
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    let mut s: Vec<(String, String, String)> = v["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            (
                r["site"].as_str().unwrap().to_string(),
                r["table_name"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    s.sort();
    s
}

fn expect(drift: &[(&str, &str)]) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for site in SITES {
        for t in ["public.items", "public.log", "public.prices"] {
            let status = if drift.contains(&(site, t)) {
                "drift"
            } else {
                "equal"
            };
            out.push((site.to_string(), t.to_string(), status.to_string()));
        }
    }
    out
}

#[tokio::test]
async fn drift_is_found_only_where_it_is_and_repaired() {
    let bed = loaded_bed("verify_drift").await;
    verify_round(&bed, &["--all"]).await;
    assert_eq!(statuses(&bed).await, expect(&[]));

    // Changed and deleted at s1, a copy of a keyless row added at s2.
    let s1 = bed.site(0).await;
    s1.batch_execute("UPDATE public.items SET name = 'changed' WHERE id = 17")
        .await
        .unwrap();
    s1.batch_execute("DELETE FROM public.prices WHERE item_id = 5")
        .await
        .unwrap();
    bed.site(1)
        .await
        .batch_execute("INSERT INTO public.log VALUES ('same', 1)")
        .await
        .unwrap();
    verify_round(&bed, &[]).await;
    let drift = [
        ("s1", "public.items"),
        ("s1", "public.prices"),
        ("s2", "public.log"),
    ];
    assert_eq!(statuses(&bed).await, expect(&drift));
    let out = bed
        .ok(0, &["--json", "verify", "--show", "--site", "s2"])
        .await;
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let log = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["table_name"] == "public.log")
        .unwrap();
    assert_eq!(
        (log["ho_rows"].as_i64(), log["site_rows"].as_i64()),
        (Some(4), Some(5))
    );
    let status = bed.ok(0, &["status"]).await;
    assert!(status.contains("s2: drift in public.log"), "{status}");
    assert!(!status.contains("s2: drift in public.items"), "{status}");
    let logged = "SELECT count(*) FROM relaysync.event_log WHERE event = 'Verify found drift'";
    assert_eq!(count(&bed.site(0).await, logged).await, 2);
    assert_eq!(count(&bed.site(1).await, logged).await, 1);
    assert_eq!(count(&bed.ho().await, logged).await, 3);

    // Repair reloads exactly those tables at those sites.
    let out = bed.ok(0, &["--json", "verify", "--repair"]).await;
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        v["repairs"],
        serde_json::json!({"s1": ["public.items", "public.prices"], "s2": ["public.log"]})
    );
    bed.sync_all().await;
    let requests =
        "SELECT count(*) FROM relay.sync_requests WHERE reason = 'push' AND served_at IS NOT NULL";
    assert_eq!(count(&bed.relay().await, requests).await, 2);
    verify_round(&bed, &["--all"]).await;
    assert_eq!(statuses(&bed).await, expect(&[]));
    assert_table_same_everywhere(&bed, "public.items").await;
    let status = bed.ok(0, &["status"]).await;
    assert!(!status.contains(": drift in"), "{status}");
}

#[tokio::test]
async fn a_converged_fleet_is_equal_while_ho_writes() {
    let bed = loaded_bed("verify_busy").await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let ho = bed.ho().await;
        tokio::spawn(async move {
            let mut i = 0i32;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                ho.execute(
                    "WITH u AS (UPDATE public.items SET name = 'w' || $1::int WHERE id = 1 + $1::int % 2000)
                     INSERT INTO public.prices VALUES ('s' || (1 + $1::int % 2), 1000 + $1::int, 1)",
                    &[&i],
                )
                .await
                .unwrap();
                ho.execute("INSERT INTO public.log VALUES ('busy', $1)", &[&i])
                    .await
                    .unwrap();
            }
            i
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..2 {
        verify_round(&bed, &["--all"]).await;
    }
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.unwrap();
    assert!(writes > 10, "HO wrote only {writes} times");
    assert_eq!(statuses(&bed).await, expect(&[]));
    let drift = "SELECT count(*) FROM relay.verify_results WHERE status <> 'equal'";
    assert_eq!(count(&bed.relay().await, drift).await, 0);
    let checked = "SELECT count(*) FROM relay.verify_results";
    assert_eq!(count(&bed.relay().await, checked).await, 12);
}

/// The cost of verify on a 1M-row table: seconds of HO's sync that serves
/// it and of the site's sync that checks it (run by hand:
/// `cargo test --release --test verify -- --ignored --nocapture`).
#[tokio::test]
#[ignore]
async fn cost_on_a_million_rows() {
    let bed = loaded_bed("verify_million").await;
    bed.ho()
        .await
        .batch_execute(
            "INSERT INTO public.items SELECT g, 'item ' || g, g / 7.0, now(), NULL, NULL, NULL, NULL, g
               FROM generate_series(2001, 1000000) g",
        )
        .await
        .unwrap();
    bed.sync_all().await;
    bed.ok(0, &["verify", "--site", "s1", "--table", "public.items"])
        .await;
    let started = std::time::Instant::now();
    bed.ok(0, &["ho", "sync", "--once"]).await;
    let ho = started.elapsed();
    let started = std::time::Instant::now();
    bed.ok(0, &["pos", "sync", "--once"]).await;
    let site = started.elapsed();
    let out = bed
        .ok(0, &["--json", "verify", "--show", "--site", "s1"])
        .await;
    assert!(out.contains("\"ho_rows\":1000000"), "{out}");
    assert!(!out.contains("drift"), "{out}");
    eprintln!("verify of 1M rows: HO sync {ho:?}, site sync {site:?}");
}

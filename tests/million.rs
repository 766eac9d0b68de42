//! A 1M-row HO transaction streams through in packets: several packets of
//! one group, applied at the site in one transaction, with each worker's
//! peak RSS under 200 MB.

mod common;

use common::*;

const ROWS: i64 = 1_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_million_row_transaction_arrives_whole_in_bounded_memory() {
    let bed = Bed::new(
        "million",
        "CREATE TABLE public.big (id int8 PRIMARY KEY, name text, qty int, price numeric(10,2), at timestamptz);",
        &[("public.big", "all")],
        "",
    )
    .await;
    bed.setup().await;
    let ho = bed.ho().await;
    ho.execute(
        "INSERT INTO public.big SELECT g, 'item ' || g, g % 1000, (g % 100000) / 100.0,
                '2024-01-01'::timestamptz + g * interval '1 second'
           FROM generate_series(1, $1::int8) g",
        &[&ROWS],
    )
    .await
    .unwrap();

    let cmd = bed.command(0, &["ho", "sync", "--once"]);
    let ho_run = tokio::task::spawn_blocking(move || run_measured(cmd))
        .await
        .unwrap();
    assert!(ho_run.success, "ho sync failed: {}", ho_run.stderr);
    let cmd = bed.command(0, &["pos", "sync", "--once"]);
    let pos_run = tokio::task::spawn_blocking(move || run_measured(cmd))
        .await
        .unwrap();
    assert!(pos_run.success, "pos sync failed: {}", pos_run.stderr);

    let relay = bed.relay().await;
    let packets = count(
        &relay,
        "SELECT count(*) FROM relay.packets WHERE kind = 'delta'",
    )
    .await;
    assert!(packets > 1, "one packet held the whole transaction");
    assert_eq!(
        count(
            &relay,
            "SELECT count(DISTINCT group_id) FROM relay.packets WHERE kind = 'delta'"
        )
        .await,
        1
    );
    let site = bed.site(0).await;
    // One group, one site transaction: every row has the same xmin.
    assert_eq!(
        count(&site, "SELECT count(DISTINCT xmin::text) FROM public.big").await,
        1
    );
    let digest = "SELECT md5(string_agg(b::text, '|' ORDER BY id)) FROM public.big b";
    let ho_digest: String = ho.query_one(digest, &[]).await.unwrap().get(0);
    let site_digest: String = site.query_one(digest, &[]).await.unwrap().get(0);
    assert_eq!(count(&site, "SELECT count(*) FROM public.big").await, ROWS);
    assert_eq!(ho_digest, site_digest, "site rows differ from HO");

    let total = ho_run.elapsed + pos_run.elapsed;
    println!(
        "1M-row transaction: ho sync {:.1}s (peak RSS {:.0} MB), pos sync {:.1}s (peak RSS {:.0} MB), {packets} packets, {:.0} rows/s end to end",
        ho_run.elapsed.as_secs_f64(),
        ho_run.peak_rss_mb,
        pos_run.elapsed.as_secs_f64(),
        pos_run.peak_rss_mb,
        ROWS as f64 / total.as_secs_f64()
    );
    assert!(
        ho_run.peak_rss_mb < 200.0,
        "ho worker peak RSS {:.0} MB",
        ho_run.peak_rss_mb
    );
    assert!(
        pos_run.peak_rss_mb < 200.0,
        "pos worker peak RSS {:.0} MB",
        pos_run.peak_rss_mb
    );
}

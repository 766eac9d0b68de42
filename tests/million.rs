//! A 1M-row HO transaction streams through in packets: several packets of
//! one group, applied at the site in one transaction, with each worker's
//! peak RSS under 200 MB.

mod common;

use std::time::Instant;

use common::*;

const ROWS: i64 = 1_000_000;
const TABLE: &str =
    "CREATE TABLE public.big (id int8 PRIMARY KEY, name text, qty int, price numeric(10,2), at timestamptz);";
const FILL: &str = "INSERT INTO public.big SELECT g, 'item ' || g, g % 1000, (g % 100000) / 100.0,
                '2024-01-01'::timestamptz + g * interval '1 second'
           FROM generate_series(1, $1::int8) g";
/// `ho sync` then `pos sync` at site s1, each measured.
async fn sync_measured(bed: &Bed) -> (Measured, Measured) {
    let mut runs = Vec::new();
    for role in ["ho", "pos"] {
        let cmd = bed.command(0, &[role, "sync", "--once"]);
        let run = tokio::task::spawn_blocking(move || run_measured(cmd))
            .await
            .unwrap();
        assert!(run.success, "{role} sync failed: {}", run.stderr);
        runs.push(run);
    }
    let pos = runs.pop().unwrap();
    (runs.pop().unwrap(), pos)
}

/// The big tests measure time and memory: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_million_row_transaction_arrives_whole_in_bounded_memory() {
    let _one = ONE_AT_A_TIME.lock().await;
    let bed = Bed::new("million", TABLE, &[("public.big", "all")], "").await;
    bed.setup().await;
    let ho = bed.ho().await;
    ho.execute(FILL, &[&ROWS]).await.unwrap();

    let (ho_run, pos_run) = sync_measured(&bed).await;

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
    // One group, one site transaction: its packets share its start time.
    assert_eq!(
        count(
            &site,
            "SELECT count(DISTINCT applied_at) FROM relaysync.received_packets WHERE kind = 'delta'"
        )
        .await,
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
    ho_run.assert_peak_rss_under("ho", 200.0);
    pos_run.assert_peak_rss_under("pos", 200.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_million_row_full_sync_streams_in_bounded_memory() {
    let _one = ONE_AT_A_TIME.lock().await;
    let bed = Bed::new("million_full", TABLE, &[("public.big", "all")], "").await;
    let ho = bed.ho().await;
    ho.execute(FILL, &[&ROWS]).await.unwrap();
    ho.batch_execute("ANALYZE public.big").await.unwrap();
    bed.ok(0, &["setup", "relay"]).await;
    bed.add_site(SITES[0]).await;
    bed.ok(0, &["setup", "ho"]).await;
    bed.ok(0, &["setup", "pos"]).await;

    let (ho_run, pos_run) = sync_measured(&bed).await;

    // Progress: not a terminal here, so lines on stdout, and a final one per table.
    assert!(
        ho_run
            .stdout
            .contains("full sync public.big: 1000000 rows in"),
        "{}",
        ho_run.stdout
    );
    assert!(
        pos_run.stdout.contains("full sync at s1: 1000000 rows in"),
        "{}",
        pos_run.stdout
    );
    if ho_run.elapsed.as_secs() > 4 {
        assert!(
            ho_run
                .stdout
                .lines()
                .filter(|l| l.contains("rows/s"))
                .count()
                >= 2,
            "{}",
            ho_run.stdout
        );
    }
    let site = bed.site(0).await;
    let digest = "SELECT md5(string_agg(b::text, '|' ORDER BY id)) FROM public.big b";
    let ho_digest: String = ho.query_one(digest, &[]).await.unwrap().get(0);
    let site_digest: String = site.query_one(digest, &[]).await.unwrap().get(0);
    assert_eq!(ho_digest, site_digest, "site rows differ from HO");
    assert_eq!(
        count(
            &site,
            "SELECT rows FROM relaysync.table_sync WHERE table_name = 'public.big'"
        )
        .await,
        ROWS
    );
    assert_eq!(
        count(
            &site,
            "SELECT count(DISTINCT applied_at) FROM relaysync.received_packets WHERE kind = 'snapshot'"
        )
        .await,
        1
    );

    // The same table through pg_dump | psql into an empty database at the site's cluster.
    let c = clusters();
    c.sites[0]
        .create_database(&format!("{}_dump", bed.name))
        .await
        .unwrap();
    let bin = relaysync_cluster::bindir().unwrap();
    let started = Instant::now();
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{}/pg_dump -h 127.0.0.1 -p {} -U postgres -t public.big {} | {}/psql -q -h 127.0.0.1 -p {} -U postgres -d {}_dump >/dev/null",
            bin.display(),
            c.ho.port(),
            bed.name,
            bin.display(),
            c.sites[0].port(),
            bed.name
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let dump = started.elapsed();
    let ours = ho_run.elapsed + pos_run.elapsed;
    println!(
        "1M-row full sync: relaysync {:.1}s ({:.0} rows/s; ho peak RSS {:.0} MB, pos peak RSS {:.0} MB) vs pg_dump | psql {:.1}s ({:.0} rows/s); ratio {:.2}",
        ours.as_secs_f64(),
        ROWS as f64 / ours.as_secs_f64(),
        ho_run.peak_rss_mb,
        pos_run.peak_rss_mb,
        dump.as_secs_f64(),
        ROWS as f64 / dump.as_secs_f64(),
        ours.as_secs_f64() / dump.as_secs_f64()
    );
    ho_run.assert_peak_rss_under("ho", 200.0);
    pos_run.assert_peak_rss_under("pos", 200.0);
}

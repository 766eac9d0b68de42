//! `ho run --metrics` and `pos run --metrics`: Prometheus text at /metrics
//! and a health check at /health, scraped from running workers.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::http::*;
use common::*;

const SCHEMA: &str = "CREATE TABLE public.items (id int PRIMARY KEY, name text);";

/// A set-up bed with HO's and site s1's streaming workers running, and the
/// addresses of their /metrics and /health.
async fn streaming_workers(name: &str) -> (Bed, String, String, [Worker; 2]) {
    let bed = Bed::new(
        name,
        SCHEMA,
        &[("public.items", "all")],
        "[sync]\ninterval = \"0s\"\n",
    )
    .await;
    bed.setup().await;
    let (ho_addr, pos_addr) = (free_addr(), free_addr());
    let mut ho = bed.command(0, &["ho", "run", "--metrics", &ho_addr]);
    ho.stdout(Stdio::null());
    let mut pos = bed.command(0, &["pos", "run", "--metrics", &pos_addr]);
    pos.stdout(Stdio::null());
    let workers = [Worker::start(ho), Worker::start(pos)];
    (bed, ho_addr, pos_addr, workers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_workers_serve_metrics_and_health() {
    let (bed, ho_addr, pos_addr, _workers) = streaming_workers("metrics").await;

    bed.ho()
        .await
        .batch_execute("INSERT INTO public.items SELECT g, 'n' || g FROM generate_series(1, 100) g")
        .await
        .unwrap();
    let site = bed.site(0).await;
    wait_for(Duration::from_secs(60), "rows at the site", || async {
        count(&site, "SELECT count(*) FROM public.items").await == 100
    })
    .await;
    // Data flows both ways through the workers' streams: both are healthy
    // now, not only once a first keepalive or interval has passed.
    assert_eq!(get(&ho_addr, "/health").map(|(c, _)| c), Some(200), "HO");
    assert_eq!(get(&pos_addr, "/health").map(|(c, _)| c), Some(200), "site");

    let (code, ho_metrics) = get(&ho_addr, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(
        sample(
            &ho_metrics,
            "relaysync_rows_captured_total{table=\"public.items\"}"
        ) >= Some(100.0),
        "{ho_metrics}"
    );
    assert!(
        sample(
            &ho_metrics,
            "relaysync_packets_stored_total{direction=\"down\",kind=\"delta\"}"
        ) >= Some(1.0),
        "{ho_metrics}"
    );
    assert!(
        ho_metrics.contains("relaysync_capture_flush_duration_seconds_bucket"),
        "{ho_metrics}"
    );
    assert!(
        sample(&ho_metrics, "relaysync_slot_lag_bytes").is_some(),
        "{ho_metrics}"
    );
    assert!(
        sample(&ho_metrics, "relaysync_site_pending_packets{site=\"s2\"}").is_some(),
        "{ho_metrics}"
    );

    let (_, pos_metrics) = get(&pos_addr, "/metrics").unwrap();
    // What an operator scrapes (shown with --nocapture).
    for line in ho_metrics.lines().chain(pos_metrics.lines()) {
        if line.starts_with("relaysync_") && !line.contains("_bucket") {
            println!("{line}");
        }
    }
    assert_eq!(
        sample(
            &pos_metrics,
            "relaysync_rows_applied_total{direction=\"down\",table=\"public.items\"}"
        ),
        Some(100.0),
        "{pos_metrics}"
    );
    assert!(
        pos_metrics.contains("relaysync_apply_duration_seconds_bucket"),
        "{pos_metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_keeps_failing_is_unhealthy() {
    let bed = Bed::new(
        "unhealthy",
        SCHEMA,
        &[("public.items", "all")],
        "[sync]\ninterval = \"0s\"\n",
    )
    .await;
    bed.setup().await;
    let addr = free_addr();
    let down = format!(
        "postgres://postgres@{}/nowhere?connect_timeout=1",
        free_addr()
    );
    let mut pos = bed.command(0, &["pos", "run", "--metrics", &addr]);
    pos.env("RELAYSYNC__POS__URL", &down)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _pos = Worker::start(pos);
    wait_for(Duration::from_secs(30), "an error counted", || async {
        get(&addr, "/metrics").is_some_and(|(_, b)| {
            sample(&b, "relaysync_errors_total{kind=\"transient\"}") >= Some(1.0)
        })
    })
    .await;
    assert_eq!(get(&addr, "/health").map(|(c, _)| c), Some(503));
}

/// A streaming worker is healthy once its stream is established, before
/// any data flows (not after a first keepalive or interval).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_workers_are_healthy_once_their_streams_are_up() {
    let (_bed, ho_addr, pos_addr, _workers) = streaming_workers("healthsoon").await;
    wait_for(Duration::from_secs(30), "both workers serving", || async {
        get(&ho_addr, "/health").is_some() && get(&pos_addr, "/health").is_some()
    })
    .await;
    let serving = std::time::Instant::now();
    wait_for(Duration::from_secs(3), "both workers healthy", || async {
        get(&ho_addr, "/health").is_some_and(|(c, _)| c == 200)
            && get(&pos_addr, "/health").is_some_and(|(c, _)| c == 200)
    })
    .await;
    println!("healthy {:?} after serving", serving.elapsed());
}

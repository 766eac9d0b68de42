//! `ho run --metrics` and `pos run --metrics`: Prometheus text at /metrics
//! and a health check at /health, scraped from running workers.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::Duration;

use common::*;

const SCHEMA: &str = "CREATE TABLE public.items (id int PRIMARY KEY, name text);";

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// GET `path` from `addr`: (status code, body); None while nothing listens.
fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((code, body))
}

/// The value of the sample `name{labels}` (labels as printed), if any.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_workers_serve_metrics_and_health() {
    let bed = Bed::new(
        "metrics",
        SCHEMA,
        &[("public.items", "all")],
        "[sync]\ninterval = \"0s\"\n",
    )
    .await;
    bed.setup().await;
    let (ho_addr, pos_addr) = (free_addr(), free_addr());
    let mut ho = bed.command(0, &["ho", "run", "--metrics", &ho_addr]);
    ho.stdout(Stdio::null());
    let _ho = Worker::start(ho);
    let mut pos = bed.command(0, &["pos", "run", "--metrics", &pos_addr]);
    pos.stdout(Stdio::null());
    let _pos = Worker::start(pos);

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
    wait_for(Duration::from_secs(60), "both workers healthy", || async {
        get(&ho_addr, "/health").is_some_and(|(c, _)| c == 200)
            && get(&pos_addr, "/health").is_some_and(|(c, _)| c == 200)
    })
    .await;

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

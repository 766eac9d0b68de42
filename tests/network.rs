//! A network that silently drops open connections (a proxy black-holes
//! them; new ones pass): every worker finds out within its deadline, says
//! so at /health, and carries on on new connections, losing and doubling
//! nothing. One connection kind at a time: the relay (HO's and the site's
//! workers), HO (its SQL and replication connections), the site database.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::http::{free_addr, get, sample};
use common::proxy::Proxy;
use common::*;

const SCHEMA: &str = "
CREATE TABLE public.items (id int PRIMARY KEY, name text);
CREATE TABLE public.device_events (site text, device int, seq int, kind text,
                                   PRIMARY KEY (site, device, seq));
";
const UPSTREAM: &str = "
[[upstream]]
name = \"public.device_events\"
merge = \"append\"
";
/// `[network] deadline` of these workers, in seconds.
const DEADLINE: u64 = 5;

/// `n` more items at HO and `n` more device events at site 0.
async fn more_rows(bed: &Bed, n: i32) {
    bed.ho()
        .await
        .execute(
            "INSERT INTO public.items SELECT g, 'n' || g
               FROM generate_series((SELECT coalesce(max(id), 0) + 1 FROM public.items),
                                    (SELECT coalesce(max(id), 0) FROM public.items) + $1) g",
            &[&n],
        )
        .await
        .unwrap();
    bed.site(0)
        .await
        .execute(
            "INSERT INTO public.device_events
             SELECT 's1', 1, g, 'door'
               FROM generate_series((SELECT coalesce(max(seq), 0) + 1 FROM public.device_events),
                                    (SELECT coalesce(max(seq), 0) FROM public.device_events) + $1) g",
            &[&n],
        )
        .await
        .unwrap();
}

/// Whether HO's items are at site 0 and site 0's events at HO, `total` each.
async fn flowed(bed: &Bed, total: i64) -> bool {
    let at_site = count(&bed.site(0).await, "SELECT count(*) FROM public.items").await;
    let at_ho = count(&bed.ho().await, "SELECT count(*) FROM public.device_events").await;
    at_site == total && at_ho == total
}

/// A worker's log file in the bed's directory.
fn log(bed: &Bed, name: &str) -> std::fs::File {
    std::fs::File::create(bed.dir.join(format!("{name}.log"))).unwrap()
}

fn health(addr: &str) -> Option<u16> {
    get(addr, "/health").map(|(code, _)| code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_holed_connections_are_dropped_and_data_flows_again() {
    let extra =
        format!("{UPSTREAM}[sync]\ninterval = \"0s\"\n[network]\ndeadline = \"{DEADLINE}s\"\n");
    let bed = Bed::new("hole", SCHEMA, &[("public.items", "all")], &extra).await;
    bed.setup().await;
    let c = clusters();
    let relay = Proxy::start(c.relay.port()).await;
    let ho = Proxy::start(c.ho.port()).await;
    let site = Proxy::start(c.sites[0].port()).await;
    let (ho_addr, pos_addr) = (free_addr(), free_addr());

    let mut ho_cmd = bed.command(0, &["ho", "run", "--metrics", &ho_addr]);
    ho_cmd
        .env("RELAYSYNC__HO__URL", ho.url(&bed.ho_url))
        .env("RELAYSYNC__RELAY__URL", relay.url(&bed.relay_url))
        .stdout(Stdio::null())
        .stderr(log(&bed, "ho"));
    let _ho_worker = Worker::start(ho_cmd);
    let site_relay = bed.site_relay_urls.lock().unwrap()["s1"].clone();
    let mut pos_cmd = bed.command(0, &["pos", "run", "--metrics", &pos_addr]);
    pos_cmd
        .env("RELAYSYNC__RELAY__URL", relay.url(&site_relay))
        .env("RELAYSYNC__POS__URL", site.url(&bed.site_urls[0]))
        .stdout(Stdio::null())
        .stderr(log(&bed, "pos"));
    let _pos_worker = Worker::start(pos_cmd);

    let mut total = 100;
    more_rows(&bed, 100).await;
    wait_for(Duration::from_secs(60), "the first rows both ways", || {
        flowed(&bed, total)
    })
    .await;
    wait_for(Duration::from_secs(30), "both workers healthy", || async {
        health(&ho_addr) == Some(200) && health(&pos_addr) == Some(200)
    })
    .await;

    // Which worker each hole stalls (HO's, the site's).
    let holes = [
        ("relay", &relay, true, true),
        ("ho", &ho, true, false),
        ("site", &site, false, true),
    ];
    for (name, proxy, stalls_ho, stalls_pos) in holes {
        proxy.black_hole();
        let hole = Instant::now();
        total += 100;
        more_rows(&bed, 100).await;
        let (mut ho_503, mut pos_503) = (false, false);
        while !flowed(&bed, total).await {
            assert!(
                hole.elapsed() < Duration::from_secs(120),
                "{name} hole: no data after 120 s"
            );
            ho_503 |= health(&ho_addr) == Some(503);
            pos_503 |= health(&pos_addr) == Some(503);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let took = hole.elapsed();
        println!("{name} hole: data flowed again after {took:?}");
        assert!(
            took <= Duration::from_secs(2 * DEADLINE),
            "{name} hole: data flowed again only after {took:?}, over twice the deadline"
        );
        // Unhealthy while stalled, healthy again after.
        wait_for(
            Duration::from_secs(30),
            "both workers healthy again",
            || async { health(&ho_addr) == Some(200) && health(&pos_addr) == Some(200) },
        )
        .await;
        assert!(
            ho_503 || !stalls_ho,
            "{name} hole: HO's /health never said 503"
        );
        assert!(
            pos_503 || !stalls_pos,
            "{name} hole: the site's /health never said 503"
        );
        // Nothing lost, nothing doubled.
        for table in ["public.items", "public.device_events"] {
            let all = format!("SELECT * FROM {table}");
            assert_same(&bed, 0, &all, &all).await;
        }
    }

    // Each stall was counted (and logged) a few times at most, not per retry.
    for (addr, worker) in [(&ho_addr, "ho"), (&pos_addr, "pos")] {
        let (_, metrics) = get(addr, "/metrics").unwrap();
        let lost: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("relaysync_connections_lost_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert!(
            (1.0..=12.0).contains(&lost),
            "{worker}: {lost} connections lost\n{metrics}"
        );
        assert!(
            sample(&metrics, "relaysync_seconds_since_progress") < Some(DEADLINE as f64),
            "{worker}\n{metrics}"
        );
    }
}

/// SIGTERM stops a worker within seconds while its step is blocked on a
/// connection the network lost (with a deadline far away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_blocked_on_a_lost_connection_stops_on_sigterm() {
    let extra = "[sync]\ninterval = \"0s\"\n[network]\ndeadline = \"300s\"\n";
    let bed = Bed::new("hole_stop", SCHEMA, &[("public.items", "all")], extra).await;
    bed.setup().await;
    let relay = Proxy::start(clusters().relay.port()).await;
    let site_relay = bed.site_relay_urls.lock().unwrap()["s1"].clone();
    let mut pos_cmd = bed.command(0, &["pos", "run"]);
    pos_cmd
        .env("RELAYSYNC__RELAY__URL", relay.url(&site_relay))
        .stdout(Stdio::null())
        .stderr(log(&bed, "pos"));
    let mut pos = Worker::start(pos_cmd);
    // Its first cycles pass; then every connection it has is lost, and its
    // next cycle (within its 5 s poll) waits on one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    relay.black_hole();
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(pos.is_running());
    let asked = Instant::now();
    let out = pos.stop();
    let took = asked.elapsed();
    assert!(out.status.success(), "{:?}", out.status);
    assert!(took < Duration::from_secs(9), "stopped only after {took:?}");
}

/// The deadline drops a connection whose answer was lost, and leaves alone
/// one whose statement runs longer than the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_statement_is_progress_a_lost_answer_is_not() {
    relaysync::postgres::set_deadline(Duration::from_secs(2));
    let c = clusters();
    let proxy = Proxy::start(c.ho.port()).await;
    let url = proxy.url(&c.ho.url("postgres"));
    let client = relaysync::postgres::connect("ho", &url).await.unwrap();
    let started = Instant::now();
    client.batch_execute("SELECT pg_sleep(5)").await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(5));

    proxy.black_hole();
    let started = Instant::now();
    let lost = client.batch_execute("SELECT 1").await;
    let took = started.elapsed();
    assert!(lost.is_err(), "a lost answer was waited for");
    assert!(
        (Duration::from_secs(2)..Duration::from_secs(6)).contains(&took),
        "dropped after {took:?}"
    );
    // A new connection through the same path works.
    let again = relaysync::postgres::connect("ho", &url).await.unwrap();
    again.batch_execute("SELECT 1").await.unwrap();
}

//! The relay fails over to its streaming standby: every relaysync
//! connection to the relay names both servers (`host=a,b`,
//! `target_session_attrs=read-write`), and the workers carry on with the
//! promoted standby.

mod common;

use std::time::Duration;

use common::*;

const SCHEMA: &str = "
CREATE TABLE public.items (id int PRIMARY KEY, site text NOT NULL, name text);
ALTER TABLE public.items REPLICA IDENTITY FULL;
CREATE TABLE public.device_events (site text, device int, seq int, kind text, PRIMARY KEY (site, device, seq));
";
const TABLES: &[(&str, &str)] = &[("public.items", "column:site")];
const EXTRA: &str = "
[[upstream]]
name = \"public.device_events\"
merge = \"append\"
[sync]
interval = \"0s\"
";

/// `url` (one host) naming `standby_port` after it, writable servers only.
fn both(url: &str, primary_port: u16, standby_port: u16) -> String {
    let one = format!("127.0.0.1:{primary_port}/");
    assert!(url.contains(&one), "{url}");
    let two = format!("127.0.0.1:{primary_port},127.0.0.1:{standby_port}/");
    let url = url.replacen(&one, &two, 1);
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}target_session_attrs=read-write")
}

/// HO writes a row for each site, and each site logs a device event, every
/// 20 ms, until `stop`.
async fn load(bed: &Bed, stop: tokio::sync::watch::Receiver<bool>) -> i32 {
    let ho = bed.ho().await;
    let sites = [bed.site(0).await, bed.site(1).await];
    let mut n = 0;
    while !*stop.borrow() {
        n += 1;
        ho.execute(
            "INSERT INTO public.items VALUES ($1, 's1', 'x'), ($1 + 1000000, 's2', 'y')",
            &[&n],
        )
        .await
        .unwrap();
        for (i, site) in sites.iter().enumerate() {
            site.execute(
                "INSERT INTO public.device_events VALUES ($1, 1, $2, 'door')",
                &[&SITES[i], &n],
            )
            .await
            .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_carry_on_when_the_relay_fails_over_to_its_standby() {
    let mut bed = Bed::new("failover", SCHEMA, TABLES, EXTRA).await;
    let primary = &clusters().relay;
    let mut standby = primary.start_standby("test-relay-standby").unwrap();
    bed.register().await;
    // From here on, every connection to the relay names both servers.
    let (p, s) = (primary.port(), standby.port());
    bed.relay_url = both(&bed.relay_url, p, s);
    bed.write_config(TABLES, EXTRA);
    for url in bed.site_relay_urls.lock().unwrap().values_mut() {
        *url = both(url, p, s);
    }
    bed.sync_all().await;

    let mut workers = vec![
        bed.spawn(0, &["ho", "run"]),
        bed.spawn(0, &["pos", "run"]),
        bed.spawn(1, &["pos", "run"]),
    ];
    let (stop_load, stopped) = tokio::sync::watch::channel(false);
    let load = {
        let bed = &bed;
        async move { load(bed, stopped).await }
    };
    let switch = async {
        // Under load, with packets and uploads flowing…
        let ho = bed.ho().await;
        wait_for(
            Duration::from_secs(60),
            "rows through the relay",
            || async {
                count(&bed.site(0).await, "SELECT count(*) FROM public.items").await > 20
                    && count(&ho, "SELECT count(*) FROM public.device_events").await > 20
            },
        )
        .await;
        // …the relay's primary stops and its standby is promoted.
        let t = std::time::Instant::now();
        tokio::task::block_in_place(|| {
            primary.stop();
            standby.promote().unwrap();
        });
        println!(
            "failover: primary stopped and standby promoted in {:?}",
            t.elapsed()
        );
        let relay = client(&format!("postgres://postgres@127.0.0.1:{s}/{}", bed.name)).await;
        let after = count(&relay, "SELECT coalesce(max(id), 0) FROM relay.packets").await;
        wait_for(
            Duration::from_secs(120),
            "packets on the promoted relay",
            || async {
                count(&relay, "SELECT coalesce(max(id), 0) FROM relay.packets").await > after + 20
            },
        )
        .await;
        println!(
            "failover: the workers wrote to the promoted relay {:?} after the switch",
            t.elapsed()
        );
        stop_load.send(true).unwrap();
    };
    let (written, ()) = tokio::join!(load, switch);

    // Both sites equal HO, every device event is at HO once, and no worker
    // ever exited.
    let ho = bed.ho().await;
    wait_for(Duration::from_secs(120), "both sites caught up", || async {
        let mut done = true;
        for (i, site) in SITES.iter().enumerate() {
            let at_ho = count(
                &ho,
                &format!("SELECT count(*) FROM public.items WHERE site = '{site}'"),
            )
            .await;
            done &= count(&bed.site(i).await, "SELECT count(*) FROM public.items").await == at_ho;
            done &= count(
                &ho,
                &format!("SELECT count(*) FROM public.device_events WHERE site = '{site}'"),
            )
            .await
                == i64::from(written);
        }
        done
    })
    .await;
    for (i, site) in SITES.iter().enumerate() {
        assert_routed_same(&bed, i, "public.items", "site").await;
        assert_same(
            &bed,
            i,
            &format!("SELECT * FROM public.device_events WHERE site = '{site}'"),
            "SELECT * FROM public.device_events",
        )
        .await;
    }
    assert_eq!(
        count(&ho, "SELECT count(*) FROM relaysync.rejects").await,
        0
    );
    for w in &mut workers {
        assert!(w.is_running(), "a worker exited during the failover");
    }
    println!(
        "failover: {written} rounds of load; sites equal HO, {} device events at HO once each",
        2 * written
    );
    for w in workers {
        w.stop();
    }
}

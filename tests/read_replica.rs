//! Sites read packets from a standby of the relay (`[relay] read_url`) and
//! write their acks to the primary.

mod common;

use std::time::Duration;

use common::*;

const SCHEMA: &str = "
CREATE TABLE public.items (id int PRIMARY KEY, site text NOT NULL, name text);
ALTER TABLE public.items REPLICA IDENTITY FULL;
";
const TABLES: &[(&str, &str)] = &[("public.items", "column:site")];
const EXTRA: &str = "
[sync]
interval = \"0s\"
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_reading_from_a_standby_converge_under_load() {
    let bed = Bed::new("read_replica", SCHEMA, TABLES, EXTRA).await;
    let primary = &clusters().relay;
    let standby = primary.start_standby("test-relay-reader").unwrap();
    bed.register().await;
    // The sites' roles reach the standby by replay: wait until it has
    // replayed everything the primary wrote so far.
    let on_primary = client(&format!(
        "postgres://postgres@127.0.0.1:{}/postgres",
        primary.port()
    ))
    .await;
    let lsn: String = on_primary
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let on_standby_server = client(&format!(
        "postgres://postgres@127.0.0.1:{}/postgres",
        standby.port()
    ))
    .await;
    wait_for(
        Duration::from_secs(60),
        "the standby replayed the site roles",
        || async {
            on_standby_server
                .query_one(
                    "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                    &[&lsn],
                )
                .await
                .unwrap()
                .get::<_, bool>(0)
        },
    )
    .await;
    // Each site reads from the standby, as its own role there too.
    let (p, s) = (
        format!("127.0.0.1:{}/", primary.port()),
        format!("127.0.0.1:{}/", standby.port()),
    );
    for (i, site) in SITES.iter().enumerate() {
        let url = bed.site_relay_urls.lock().unwrap()[*site].replacen(&p, &s, 1);
        bed.env
            .lock()
            .unwrap()
            .push((Some(i), "RELAYSYNC__RELAY__READ_URL".into(), url));
    }
    let mut workers = vec![
        bed.spawn(0, &["ho", "run"]),
        bed.spawn(0, &["pos", "run"]),
        bed.spawn(1, &["pos", "run"]),
    ];
    let ho = bed.ho().await;
    for n in 1..=200 {
        ho.execute(
            "INSERT INTO public.items VALUES ($1, 's1', 'x'), ($1 + 1000000, 's2', 'y')",
            &[&n],
        )
        .await
        .unwrap();
        if n % 50 == 0 {
            ho.execute(
                "UPDATE public.items SET name = name || '+' WHERE id % 7 = 0",
                &[],
            )
            .await
            .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sites = [bed.site(0).await, bed.site(1).await];
    wait_for(Duration::from_secs(120), "both sites equal HO", || async {
        let mut done = true;
        for (i, site) in SITES.iter().enumerate() {
            let at_ho = rows(
                &ho,
                &format!("SELECT * FROM public.items WHERE site = '{site}'"),
            )
            .await;
            done &= rows(&sites[i], "SELECT * FROM public.items").await == at_ho;
        }
        done
    })
    .await;
    for i in 0..SITES.len() {
        assert_routed_same(&bed, i, "public.items", "site").await;
    }
    // The standby served the sites' packet listings and parts; the acks
    // are on the primary (a standby takes no writes).
    let on_standby = client(&format!(
        "postgres://postgres@127.0.0.1:{}/{}",
        standby.port(),
        bed.name
    ))
    .await;
    let readers = count(
        &on_standby,
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND usename LIKE '%\\_s_' AND query LIKE '%relay.packet%'",
            bed.name
        ),
    )
    .await;
    assert!(
        readers >= 2,
        "site connections reading packets on the standby: {readers}"
    );
    let relay = bed.relay().await;
    wait_for(Duration::from_secs(30), "every packet acked", || async {
        count(
            &relay,
            "SELECT count(*) FROM relay.packets WHERE status <> 'PROCESSED'",
        )
        .await
            == 0
    })
    .await;
    for w in &mut workers {
        assert!(w.is_running());
    }
    for w in workers {
        w.stop();
    }
}

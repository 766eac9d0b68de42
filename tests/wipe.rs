//! `[pos] wipe_after`: a site without a successful sync for that long
//! clears its copies of the down tables, even cut off from the relay, keeps
//! what it has not uploaded, and full-syncs on its next contact.

mod common;

use common::*;

const SCHEMA: &str = "
CREATE TABLE public.items (id int PRIMARY KEY, name text);
CREATE TABLE public.device_events (id bigint PRIMARY KEY, what text);";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_unused_for_too_long_wipes_its_synced_data_then_full_syncs() {
    let bed = Bed::new(
        "wipe",
        SCHEMA,
        &[("public.items", "all")],
        "wipe_after = \"1h\"\n[[upstream]]\nname = \"public.device_events\"\nmerge = \"append\"\n",
    )
    .await;
    bed.setup().await;
    let ho = bed.ho().await;
    ho.batch_execute(
        "INSERT INTO public.items SELECT g, 'item ' || g FROM generate_series(1, 50) g",
    )
    .await
    .unwrap();
    bed.sync_all().await;
    let site = bed.site(0).await;
    assert_eq!(count(&site, "SELECT count(*) FROM public.items").await, 50);

    // An event logged at the site and not uploaded yet; the site's last
    // success two hours ago; the relay out of reach.
    site.batch_execute(
        "INSERT INTO public.device_events VALUES (1, 'door opened');
         UPDATE relaysync.site SET last_success_at = now() - interval '2 hours'",
    )
    .await
    .unwrap();
    let mut cut_off = bed.command(0, &["pos", "sync", "--once"]);
    cut_off.env(
        "RELAYSYNC__RELAY__URL",
        "postgres://postgres@127.0.0.1:1/relay?connect_timeout=1",
    );
    let out = tokio::task::spawn_blocking(move || cut_off.output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "the relay is out of reach");

    assert_eq!(
        count(&site, "SELECT count(*) FROM public.items").await,
        0,
        "down table wiped"
    );
    assert_eq!(
        count(&site, "SELECT count(*) FROM public.device_events").await,
        1,
        "not-uploaded site data kept"
    );
    assert_eq!(
        count(
            &site,
            "SELECT count(*) FROM relaysync.event_log WHERE event = 'Synced data wiped (no successful sync)'"
        )
        .await,
        1
    );
    // A second run does not wipe again.
    bed.run(0, &["pos", "sync", "--once"]).await;
    // Back in touch: the event goes up, a full sync comes down.
    bed.sync_all().await;
    bed.sync_all().await;
    assert_same(
        &bed,
        0,
        "SELECT * FROM public.items",
        "SELECT * FROM public.items",
    )
    .await;
    assert_eq!(
        count(&ho, "SELECT count(*) FROM public.device_events").await,
        1
    );
    assert_eq!(
        count(
            &site,
            "SELECT count(*) FROM relaysync.event_log WHERE event = 'Synced data wiped (no successful sync)'"
        )
        .await,
        1,
        "wiped once"
    );
}

//! Up: device event logs exactly once at HO, users merged with fill_vacant,
//! deletes ignored, rejects logged, no echo, offline sites catching up.

mod common;

use common::*;

const SCHEMA: &str = "
CREATE TABLE public.users (id int PRIMARY KEY, name text, email text, card text);
CREATE TABLE public.device_events (site text, device int, seq int, at timestamptz DEFAULT now(), kind text,
                                   PRIMARY KEY (site, device, seq));
";
const TABLES: &[(&str, &str)] = &[("public.users", "all")];
const UPSTREAM: &str = "
[[upstream]]
name = \"public.device_events\"
merge = \"append\"
[[upstream]]
name = \"public.users\"
merge = \"fill_vacant\"
deletes = \"ignore\"
";

async fn bed(name: &str, extra: &str) -> Bed {
    let bed = Bed::new(name, SCHEMA, TABLES, &format!("{UPSTREAM}{extra}")).await;
    // HO refuses e-mail addresses without '@'; the sites do not check.
    bed.ho()
        .await
        .batch_execute(
            "ALTER TABLE public.users ADD CONSTRAINT email_has_at CHECK (email IS NULL OR email = '' OR email LIKE '%@%');
             INSERT INTO public.users VALUES (1, 'Ann', NULL, ''), (2, 'Bob', 'bob@ho', 'B-HO');",
        )
        .await
        .unwrap();
    bed.setup().await;
    bed
}

async fn events_at(bed: &Bed, site: usize, n: i32) {
    bed.site(site)
        .await
        .execute(
            "INSERT INTO public.device_events (site, device, seq, kind)
             SELECT $1, 1, g, 'door' FROM generate_series((SELECT coalesce(max(seq), 0) + 1 FROM public.device_events), 
                                                          (SELECT coalesce(max(seq), 0) FROM public.device_events) + $2) g",
            &[&SITES[site], &n],
        )
        .await
        .unwrap();
}

async fn ho_events(bed: &Bed, site: &str) -> i64 {
    bed.ho()
        .await
        .query_one(
            "SELECT count(*) FROM public.device_events WHERE site = $1",
            &[&site],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_events_arrive_exactly_once_despite_kills() {
    let bed = bed("up_once", "[packet]\nmax_rows = 50").await;
    events_at(&bed, 0, 300).await;
    events_at(&bed, 1, 200).await;
    // Site s1's upload dies in the middle of a group, then after the relay commit.
    bed.run_killed_at(0, &["pos", "sync", "--once"], "capture_mid_group")
        .await;
    bed.run_killed_at(0, &["pos", "sync", "--once"], "capture_after_relay_commit")
        .await;
    bed.ok(0, &["pos", "sync", "--once"]).await;
    bed.ok(1, &["pos", "sync", "--once"]).await;
    // HO dies in the middle of merging, then between its commit and the ack.
    bed.run_killed_at(0, &["ho", "sync", "--once"], "ho_mid_merge")
        .await;
    assert_eq!(ho_events(&bed, "s1").await + ho_events(&bed, "s2").await, 0);
    bed.run_killed_at(0, &["ho", "sync", "--once"], "ho_after_merge_commit")
        .await;
    bed.ok(0, &["ho", "sync", "--once"]).await;
    assert_eq!(ho_events(&bed, "s1").await, 300);
    assert_eq!(ho_events(&bed, "s2").await, 200);
    // More events, more syncs, a repeated sync: still exactly once.
    events_at(&bed, 0, 100).await;
    bed.sync_all().await;
    bed.sync_all().await;
    assert_eq!(ho_events(&bed, "s1").await, 400);
    assert_eq!(ho_events(&bed, "s2").await, 200);
    assert_same(
        &bed,
        0,
        "SELECT site, device, seq, kind FROM public.device_events WHERE site = 's1'",
        "SELECT site, device, seq, kind FROM public.device_events",
    )
    .await;
    let relay = bed.relay().await;
    assert_eq!(
        count(
            &relay,
            "SELECT count(*) FROM relay.packets WHERE direction = 'up' AND status <> 'PROCESSED'"
        )
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_fill_only_vacant_fields_and_fan_out() {
    let bed = bed("fill_vacant", "").await;
    // At s1: user 1 edited (HO has no e-mail and an empty card), user 2's
    // filled fields edited, user 3 enrolled.
    bed.site(0)
        .await
        .batch_execute(
            "UPDATE public.users SET name = 'Annie', email = 'ann@s1', card = 'C-1' WHERE id = 1;
             UPDATE public.users SET name = 'Robert', email = 'robert@s1' WHERE id = 2;
             INSERT INTO public.users VALUES (3, 'Cid', 'cid@s1', 'C-3');",
        )
        .await
        .unwrap();
    bed.ok(0, &["pos", "sync", "--once"]).await;
    let out = bed.ok(0, &["ho", "sync", "--once"]).await;
    assert!(out.contains("merged 1 up packet(s)"), "{out}");
    let ho = bed.ho().await;
    assert_eq!(
        rows(&ho, "SELECT * FROM public.users").await,
        [
            "(1,Ann,ann@s1,C-1)".to_string(),
            "(2,Bob,bob@ho,B-HO)".to_string(),
            "(3,Cid,cid@s1,C-3)".to_string()
        ]
        .into()
    );
    // HO logged each merged row (user 2's edit lost: HO's row goes back down).
    assert_eq!(
        rows(&ho, "SELECT site, key, event FROM relaysync.event_log").await,
        [
            "(s1,1,\"User update succeeded (Device)\")".to_string(),
            "(s1,2,\"User update succeeded (Device)\")".to_string(),
            "(s1,3,\"User update succeeded (Device)\")".to_string()
        ]
        .into()
    );
    // The merged rows reach every site, the origin included.
    bed.ok(0, &["pos", "sync", "--once"]).await;
    bed.ok(1, &["pos", "sync", "--once"]).await;
    for site in 0..2 {
        assert_same(
            &bed,
            site,
            "SELECT * FROM public.users",
            "SELECT * FROM public.users",
        )
        .await;
        let logged = rows(
            &bed.site(site).await,
            "SELECT key, event FROM relaysync.event_log",
        )
        .await;
        assert!(
            logged.contains("(1,\"User update succeeded (HO)\")"),
            "{logged:?}"
        );
        assert!(
            logged.contains("(3,\"User update succeeded (HO)\")"),
            "{logged:?}"
        );
    }
    let listed = bed.ok(0, &["events"]).await;
    assert!(
        listed.contains("User update succeeded (Device)"),
        "{listed}"
    );
    let listed = bed.ok(0, &["events", "--pos"]).await;
    assert!(listed.contains("User update succeeded (HO)"), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_delete_never_deletes_at_ho() {
    let bed = bed("deletes_ignore", "").await;
    bed.site(1)
        .await
        .batch_execute("DELETE FROM public.users WHERE id = 1")
        .await
        .unwrap();
    bed.sync_all().await;
    bed.sync_all().await;
    assert_eq!(
        count(
            &bed.ho().await,
            "SELECT count(*) FROM public.users WHERE id = 1"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &bed.site(0).await,
            "SELECT count(*) FROM public.users WHERE id = 1"
        )
        .await,
        1
    );
    // The deleting site stays without the row until it reloads from HO.
    assert_eq!(
        count(
            &bed.site(1).await,
            "SELECT count(*) FROM public.users WHERE id = 1"
        )
        .await,
        0
    );
    bed.ok(1, &["pos", "resync"]).await;
    bed.sync_all().await;
    assert_same(
        &bed,
        1,
        "SELECT * FROM public.users",
        "SELECT * FROM public.users",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_echo_and_idle_syncs_add_nothing() {
    let bed = bed("no_echo", "").await;
    bed.site(0)
        .await
        .batch_execute("UPDATE public.users SET card = 'C-1' WHERE id = 1")
        .await
        .unwrap();
    for _ in 0..2 {
        bed.sync_all().await;
    }
    for site in 0..2 {
        assert_same(
            &bed,
            site,
            "SELECT * FROM public.users",
            "SELECT * FROM public.users",
        )
        .await;
    }
    let relay = bed.relay().await;
    let packets = count(&relay, "SELECT count(*) FROM relay.packets").await;
    // Converged: further syncs store nothing; the rows the sites applied
    // were not captured back up.
    for _ in 0..3 {
        bed.sync_all().await;
    }
    assert_eq!(
        count(&relay, "SELECT count(*) FROM relay.packets").await,
        packets
    );
    // An edit that HO's values win over: HO keeps its row and sends it back
    // to the site, which converges; then nothing more moves.
    bed.site(1)
        .await
        .batch_execute("UPDATE public.users SET name = 'Someone else' WHERE id = 2")
        .await
        .unwrap();
    bed.sync_all().await;
    bed.sync_all().await;
    for site in 0..2 {
        assert_same(
            &bed,
            site,
            "SELECT * FROM public.users",
            "SELECT * FROM public.users",
        )
        .await;
    }
    let packets = count(&relay, "SELECT count(*) FROM relay.packets").await;
    bed.sync_all().await;
    assert_eq!(
        count(&relay, "SELECT count(*) FROM relay.packets").await,
        packets
    );
    // A site row equal to HO's goes up, and HO's merge writes nothing: no
    // change comes back down.
    let down = "SELECT count(*) FROM relay.packets WHERE direction = 'down'";
    let up = "SELECT count(*) FROM relay.packets WHERE direction = 'up'";
    let (down_before, up_before) = (count(&relay, down).await, count(&relay, up).await);
    bed.site(0)
        .await
        .batch_execute("UPDATE public.users SET name = name")
        .await
        .unwrap();
    bed.sync_all().await;
    bed.sync_all().await;
    assert_eq!(count(&relay, up).await, up_before + 1);
    assert_eq!(count(&relay, down).await, down_before);
    assert_eq!(
        count(
            &bed.ho().await,
            "SELECT count(*) FROM public.users WHERE name = 'Bob'"
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_ho_cannot_store_are_rejected_and_the_rest_applied() {
    let bed = bed("rejects", "").await;
    bed.site(0)
        .await
        .batch_execute("INSERT INTO public.users VALUES (3, 'Bad', 'no-at-sign', 'C-3'), (4, 'Good', 'good@s1', 'C-4');")
        .await
        .unwrap();
    events_at(&bed, 0, 10).await;
    bed.ok(0, &["pos", "sync", "--once"]).await;
    let out = bed.ok(0, &["ho", "sync", "--once"]).await;
    assert!(out.contains("1 rejected"), "{out}");
    let ho = bed.ho().await;
    assert_eq!(
        count(&ho, "SELECT count(*) FROM public.users WHERE id = 4").await,
        1
    );
    assert_eq!(
        count(&ho, "SELECT count(*) FROM public.users WHERE id = 3").await,
        0
    );
    assert_eq!(ho_events(&bed, "s1").await, 10);
    assert_eq!(
        count(&ho, "SELECT count(*) FROM relaysync.rejects WHERE key = '3' AND error LIKE '%email_has_at%' AND row_data->>'email' = 'no-at-sign'").await,
        1
    );
    assert_eq!(
        count(&ho, "SELECT count(*) FROM relaysync.event_log WHERE key = '3' AND event = 'Fail to save to the server DB' AND detail LIKE '%email_has_at%'").await,
        1
    );
    // The site's own row is untouched.
    assert_eq!(
        count(
            &bed.site(0).await,
            "SELECT count(*) FROM public.users WHERE id = 3 AND email = 'no-at-sign'"
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_site_keeps_its_data_and_uploads_it_later() {
    let bed = bed("offline", "").await;
    events_at(&bed, 0, 25).await;
    let mut cmd = bed.command(0, &["pos", "sync", "--once"]);
    cmd.env(
        "RELAYSYNC__RELAY__URL",
        "postgres://postgres@127.0.0.1:1/relay",
    );
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cannot connect to the relay database"),
        "{stderr}"
    );
    events_at(&bed, 0, 5).await;
    bed.sync_all().await;
    assert_eq!(ho_events(&bed, "s1").await, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_device_events_reach_ho_in_one_sync() {
    let bed = bed("up_100k", "").await;
    events_at(&bed, 0, 100_000).await;
    let started = std::time::Instant::now();
    let up = bed.ok(0, &["pos", "sync", "--once"]).await;
    let uploaded = started.elapsed();
    let merged = bed.ok(0, &["ho", "sync", "--once"]).await;
    let total = started.elapsed();
    assert!(
        up.contains("uploaded 1 transaction(s), 100000 change(s)"),
        "{up}"
    );
    assert!(merged.contains("100000 row(s)"), "{merged}");
    assert_eq!(ho_events(&bed, "s1").await, 100_000);
    println!(
        "100k device events from one site to HO: {:.0} rows/s (pos sync {:.1}s, ho sync {:.1}s)",
        100_000.0 / total.as_secs_f64(),
        uploaded.as_secs_f64(),
        (total - uploaded).as_secs_f64()
    );
}

/// HO merges the uploads waiting for it (several sites' groups) in one
/// transaction; a packet it cannot apply is still named alone: the groups
/// before it commit, it is FAILED, the one after waits behind it, and once
/// the packet is readable again the rest merge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_uploads_merge_together_and_a_bad_one_fails_alone() {
    let bed = bed("up_batch", "").await;
    for (site, n) in [(0, 10), (1, 20), (0, 5)] {
        events_at(&bed, site, n).await;
        bed.ok(site, &["pos", "sync", "--once"]).await;
    }
    let relay = bed.relay().await;
    let up = |origin: &str| {
        format!("(SELECT id FROM relay.packets WHERE direction = 'up' AND origin = '{origin}' ORDER BY id LIMIT 1)")
    };
    assert_eq!(
        count(
            &relay,
            "SELECT count(DISTINCT group_id) FROM relay.packets WHERE direction = 'up'"
        )
        .await,
        3
    );
    // s2's upload is damaged in the relay.
    damage_parts(&relay, &up("s2"), "'\\x00'::bytea").await;
    let out = bed.run(0, &["ho", "sync", "--once"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(ho_events(&bed, "s1").await, 10);
    assert_eq!(ho_events(&bed, "s2").await, 0);
    assert_eq!(
        count(&relay, &format!("SELECT count(*) FROM relay.acks WHERE site = 'ho' AND status = 'FAILED' AND packet_id = {}", up("s2"))).await,
        1
    );
    assert_eq!(
        count(
            &relay,
            "SELECT count(*) FROM relay.acks WHERE site = 'ho' AND status = 'PROCESSED'"
        )
        .await,
        1
    );

    restore_parts(&relay).await;
    bed.ok(0, &["ho", "sync", "--once"]).await;
    assert_eq!(ho_events(&bed, "s1").await, 15);
    assert_eq!(ho_events(&bed, "s2").await, 20);
    assert_eq!(
        count(
            &relay,
            "SELECT count(*) FROM relay.acks WHERE site = 'ho' AND status = 'PROCESSED'"
        )
        .await,
        3
    );
}

/// The writer of `site`'s up packets, as its capture makes it.
fn up_writer<'a>(relay: &'a relaysync::relay::Relay, site: &str) -> relaysync::testing::Writer<'a> {
    use relaysync::protocol::{Origin, PacketKind};
    relaysync::testing::Writer::new(relay, &Origin::from(site), PacketKind::Delta)
        .for_sites(vec!["ho".to_string()])
}

/// Writes an up packet (without parts) in `writer`'s open transaction.
async fn insert_up_packet(writer: &mut relaysync::testing::Writer<'_>) -> i64 {
    let lsn = relaysync::protocol::Lsn::from(1);
    writer.write_control(lsn).await.unwrap().unwrap()
}

/// Sites upload at once, HO takes up packets by `id > last merged`: a packet
/// must never commit after a higher id is visible, or HO would pass it by.
/// The second writer waits for the first one's commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_packets_of_sites_uploading_at_once_commit_in_id_order() {
    use relaysync::relay::Relay;
    let bed = bed("uporder", "").await;
    let first = Relay::connect(&bed.relay_url).await.unwrap();
    let mut first = up_writer(&first, "s1");
    let a = insert_up_packet(&mut first).await;
    let url = bed.relay_url.clone();
    let second = tokio::spawn(async move {
        let relay = Relay::connect(&url).await.unwrap();
        let mut writer = up_writer(&relay, "s2");
        let b = insert_up_packet(&mut writer).await;
        writer.commit().await.unwrap();
        b
    });
    let relay = bed.relay().await;
    wait_for(
        std::time::Duration::from_secs(30),
        "the second writer to wait for the first",
        || async {
            count(
                &relay,
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
                    AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            )
            .await
                == 1
        },
    )
    .await;
    assert_eq!(
        count(
            &relay,
            &format!("SELECT count(*) FROM relay.packets WHERE direction = 'up' AND id >= {a}")
        )
        .await,
        0
    );
    first.commit().await.unwrap();
    let b = second.await.unwrap();
    assert!(b > a, "{b} > {a}");
}

/// Streaming workers (`[sync] interval = "0s"`) carry uploads too: a site
/// streams its upstream tables as they change, HO merges them as soon as
/// the site's NOTIFY arrives, and a user enrolled at one site reaches the
/// other through HO, with no sync run by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_workers_upload_merge_and_fan_out() {
    use std::time::Duration;
    let bed = bed("stream_up", "[sync]\ninterval = \"0s\"\n").await;
    let _workers = [
        bed.spawn(0, &["ho", "run"]),
        bed.spawn(0, &["pos", "run"]),
        bed.spawn(1, &["pos", "run"]),
    ];
    events_at(&bed, 0, 50).await;
    bed.site(1)
        .await
        .batch_execute("INSERT INTO public.users VALUES (7, 'Dee', 'dee@s2', 'C-7')")
        .await
        .unwrap();
    wait_for(Duration::from_secs(60), "the events at HO", || async {
        ho_events(&bed, SITES[0]).await == 50
    })
    .await;
    let s1 = bed.site(0).await;
    wait_for(
        Duration::from_secs(60),
        "the user at the other site",
        || async { count(&s1, "SELECT count(*) FROM public.users WHERE id = 7").await == 1 },
    )
    .await;
    for site in 0..2 {
        assert_same(
            &bed,
            site,
            "SELECT * FROM public.users",
            "SELECT * FROM public.users",
        )
        .await;
    }
    events_at(&bed, 0, 25).await;
    wait_for(Duration::from_secs(60), "more events at HO", || async {
        ho_events(&bed, SITES[0]).await == 75
    })
    .await;
}

/// New events go into HO's table by COPY; a packet holding a row HO has
/// already (a replay) or one it refuses falls back to the row-by-row merge:
/// the one it has is skipped, the refused one rejected, the rest appended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_events_skip_rows_ho_has_and_reject_rows_it_refuses() {
    let bed = bed("append_fallback", "").await;
    let ho = bed.ho().await;
    ho.batch_execute(
        "ALTER TABLE public.device_events ADD CONSTRAINT kind_known CHECK (kind <> 'bad');
         INSERT INTO public.device_events (site, device, seq, kind) VALUES ('s1', 1, 1, 'door');",
    )
    .await
    .unwrap();
    events_at(&bed, 0, 5).await;
    bed.site(0)
        .await
        .batch_execute(
            "INSERT INTO public.device_events (site, device, seq, kind) VALUES ('s1', 2, 1, 'bad')",
        )
        .await
        .unwrap();
    bed.ok(0, &["pos", "sync", "--once"]).await;
    bed.ok(0, &["ho", "sync", "--once"]).await;
    assert_eq!(
        count(
            &ho,
            "SELECT count(*) FROM public.device_events WHERE site = 's1' AND device = 1"
        )
        .await,
        5
    );
    assert_eq!(
        count(
            &ho,
            "SELECT count(*) FROM public.device_events WHERE kind = 'bad'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &ho,
            "SELECT count(*) FROM relaysync.rejects WHERE error LIKE '%kind_known%'"
        )
        .await,
        1
    );
    // A later packet of new events only goes by COPY again.
    events_at(&bed, 0, 3).await;
    bed.ok(0, &["pos", "sync", "--once"]).await;
    bed.ok(0, &["ho", "sync", "--once"]).await;
    assert_eq!(ho_events(&bed, "s1").await, 8);
}

/// A table routed by a site column and appended up from the sites, with an
/// identity key: a site sees only its own rows, yet the keys it makes are
/// none HO used (its sequence follows HO's through the relay); a key HO
/// holds for another row is never dropped silently: it is a reject with
/// the reason (the same row again, a replay, is still skipped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_keys_follow_ho_and_a_colliding_row_is_rejected_not_dropped() {
    let schema = "CREATE TABLE public.tickets (id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                                             site_code text NOT NULL, note text);
                  ALTER TABLE public.tickets REPLICA IDENTITY FULL;";
    let upstream = "[[upstream]]\nname = \"public.tickets\"\nmerge = \"append\"\n";
    let bed = Bed::new(
        "collide",
        schema,
        &[("public.tickets", "column:site_code")],
        upstream,
    )
    .await;
    bed.setup().await;
    let ho = bed.ho().await;
    ho.batch_execute(
        "INSERT INTO public.tickets (site_code, note) VALUES ('s2', 'for s2'), ('s2', 'again')",
    )
    .await
    .unwrap();
    bed.sync_all().await;
    // s1 holds none of them, but its sequence follows HO's: its own next
    // key is 3. A key given by hand that HO holds for s2's row is rejected.
    bed.site(0)
        .await
        .batch_execute(
            "INSERT INTO public.tickets (site_code, note) VALUES ('s1', 'made at s1');
             INSERT INTO public.tickets (id, site_code, note) VALUES (1, 's1', 'by hand');",
        )
        .await
        .unwrap();
    bed.ok(0, &["pos", "sync", "--once"]).await;
    bed.ok(0, &["ho", "sync", "--once"]).await;
    assert_eq!(
        count(
            &ho,
            "SELECT count(*) FROM public.tickets WHERE site_code = 's2'"
        )
        .await,
        2,
        "HO's rows are untouched"
    );
    assert_eq!(
        count(
            &ho,
            "SELECT count(*) FROM public.tickets WHERE id = 3 AND note = 'made at s1'"
        )
        .await,
        1,
        "the key s1 made is none HO used"
    );
    assert_eq!(
        count(&ho, "SELECT count(*) FROM relaysync.rejects WHERE site = 's1' AND key = '1' AND row_data->>'note' = 'by hand'").await,
        1
    );
    assert_eq!(
        count(&ho, "SELECT count(*) FROM relaysync.event_log WHERE site = 's1' AND key = '1' AND event = 'Fail to save to the server DB'").await,
        1
    );
}

/// A site's upstream table gains a column: HO, which keeps the master copy,
/// holds the upload with the statement that adds it at HO, and merges it,
/// the new column's values included, once the DBA has run it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_a_site_adds_is_held_at_ho_until_ho_has_it() {
    let bed = bed("up_column", "").await;
    bed.site(0)
        .await
        .batch_execute(
            "ALTER TABLE public.device_events ADD COLUMN door text;
             INSERT INTO public.device_events (site, device, seq, kind, door)
             VALUES ('s1', 1, 1, 'door', 'front'), ('s1', 1, 2, 'door', NULL);",
        )
        .await
        .unwrap();
    bed.ok(0, &["pos", "sync", "--once"]).await;
    assert!(!bed.run(0, &["ho", "sync", "--once"]).await.status.success());
    assert_eq!(ho_events(&bed, "s1").await, 0);
    let out = bed.ok(0, &["schema", "show", "--json"]).await;
    let held: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let error = held["held"][0]["error"].as_str().unwrap().to_string();
    let sql = error.lines().last().unwrap();
    assert!(
        sql.contains("ADD COLUMN IF NOT EXISTS \"door\" text"),
        "{error}"
    );
    bed.ho().await.batch_execute(sql).await.unwrap();
    bed.ok(0, &["ho", "sync", "--once"]).await;
    let q = "SELECT site, device, seq, kind, door FROM public.device_events WHERE site = 's1'";
    assert_same(&bed, 0, q, q).await;
    assert_eq!(ho_events(&bed, "s1").await, 2);
}

//! The down path end to end on real clusters: types, TOAST, routing,
//! several transactions, acks.

mod common;

use common::*;

const TYPES_SCHEMA: &str = r#"
CREATE TYPE mood AS ENUM ('happy', 'sad', 'it''s ok');
CREATE TABLE public.everything (
    id int8 PRIMARY KEY,
    i2 int2, i4 int4, i8 int8,
    n numeric(12,3), nu numeric,
    f8 float8, f4 float4, b bool,
    t text, vc varchar(20), bp char(5), ba bytea,
    d date, ts timestamp, tstz timestamptz, tm time, iv interval,
    u uuid, j json, jb jsonb, ia int[], ta text[], m mood
);
CREATE TABLE public.other (id int PRIMARY KEY, note text);
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_insert_update_delete_truncate_arrive_exactly() {
    let bed = Bed::new(
        "types",
        TYPES_SCHEMA,
        &[("public.everything", "all"), ("public.other", "all")],
        "",
    )
    .await;
    bed.setup().await;
    let ho = bed.ho().await;
    ho.batch_execute(
        r#"
        INSERT INTO public.everything VALUES
        (1, 1, 2, 3, 123456789.123, 3.14159265358979323846264338327950288419716939937510,
         1.5, 2.25, true,
         E'tab\there\nnewline "double" ''single'' back\\slash ü 日本 🎉 \r cr', 'varchar ü', 'ab',
         '\x00ff10'::bytea, '2024-02-29', '2024-05-06 07:08:09.123456', '2024-05-06 07:08:09.5+02',
         '23:59:59.999999', '1 year 2 mons 3 days 04:05:06.7', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
         '{"a": [1, 2, {"b": null}],  "s": "x\ty"}', '{"k": "v", "n": 1.5}', '{1,NULL,3}',
         '{"a b",NULL,"c,d","e\"f","g\\h"}', 'it''s ok'),
        (2, -32768, -2147483648, -9223372036854775808, 'NaN', 'NaN',
         'NaN', 'Infinity', false, '', '', '', '\x'::bytea, 'infinity', '-infinity', 'infinity',
         '00:00', '-1 days', '00000000-0000-0000-0000-000000000000', '[]', '{}', '{}', '{}', 'happy'),
        (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
         NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        (4, 32767, 2147483647, 9223372036854775807, -999999999.999, '1e-30'::numeric,
         '-Infinity', '-1.17549435e-38', true, 'x', 'y', 'z', '\xdeadbeef', '0044-03-15 BC',
         '1900-01-01 00:00:00', '1970-01-01 00:00:00+00', '12:00', '0', 'ffffffff-ffff-ffff-ffff-ffffffffffff',
         'null', 'null', '{{1,2},{3,4}}', '{""}', 'sad'),
        (5, 0, 0, 0, 0, '-0.000001', 4.9e-324, 1e-45, false, 'plain', 'v', 'b', '\x00', '2000-01-01',
         '2262-04-11 23:47:16.854775', '9999-12-31 23:59:59.999999+00', '00:00:00.000001', '1 microsecond',
         'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12', '1', '1', '{NULL}', '{NULL}', 'happy');
        "#,
    )
    .await
    .unwrap();
    ho.batch_execute(
        "UPDATE public.everything SET t = 'changed\\there', jb = '{\"changed\": true}', ia = NULL WHERE id = 1;
         UPDATE public.everything SET id = 40 WHERE id = 4;
         DELETE FROM public.everything WHERE id = 5;
         INSERT INTO public.other SELECT g, 'note ' || g FROM generate_series(1, 50) g;",
    )
    .await
    .unwrap();
    ho.batch_execute("BEGIN; TRUNCATE public.other; INSERT INTO public.other VALUES (7, 'after truncate'); COMMIT;")
        .await
        .unwrap();
    ho.batch_execute("UPDATE public.other SET note = 'last' WHERE id = 7")
        .await
        .unwrap();
    let out = bed.ok(0, &["ho", "sync", "--once"]).await;
    assert!(out.contains("captured 4 transaction(s)"), "{out}");
    assert!(
        out.trim_end()
            .ends_with("Sync process completed, flushing buffer."),
        "{out}"
    );
    bed.ok(0, &["pos", "sync", "--once"]).await;
    bed.ok(1, &["pos", "sync", "--once"]).await;
    for site in 0..2 {
        assert_same(
            &bed,
            site,
            "SELECT * FROM public.everything",
            "SELECT * FROM public.everything",
        )
        .await;
        assert_same(
            &bed,
            site,
            "SELECT * FROM public.other",
            "SELECT * FROM public.other",
        )
        .await;
    }
    let site = bed.site(1).await;
    assert_eq!(count(&site, "SELECT count(*) FROM public.other").await, 1);
    assert_eq!(
        count(&site, "SELECT count(*) FROM public.everything").await,
        4
    );
    // Row 3 is NULL in every column but the key.
    assert_eq!(
        count(&site, "SELECT count(*) FROM public.everything e WHERE id = 3 AND (SELECT count(*) FROM json_each(row_to_json(e)) WHERE value::text = 'null') = 23").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_toast_value_is_kept_at_the_site() {
    let bed = Bed::new(
        "toast",
        "CREATE TABLE public.docs (id int PRIMARY KEY, small int, body text);",
        &[("public.docs", "all")],
        "",
    )
    .await;
    bed.setup().await;
    let ho = bed.ho().await;
    ho.batch_execute(
        "INSERT INTO public.docs SELECT g, 0, (SELECT string_agg(md5(random()::text || g || s), '')
                                               FROM generate_series(1, 4000) s)
           FROM generate_series(1, 3) g",
    )
    .await
    .unwrap();
    bed.sync_all().await;
    ho.batch_execute("UPDATE public.docs SET small = small + 1")
        .await
        .unwrap();
    bed.ok(0, &["ho", "sync", "--once"]).await;
    // The update packet does not carry the 128 KB bodies.
    let relay = bed.relay().await;
    let last_bytes = count(
        &relay,
        "SELECT byte_count FROM relay.packets ORDER BY id DESC LIMIT 1",
    )
    .await;
    assert!(
        last_bytes < 16_000,
        "the update packet holds {last_bytes} bytes: TOAST was sent"
    );
    bed.ok(0, &["pos", "sync", "--once"]).await;
    bed.ok(1, &["pos", "sync", "--once"]).await;
    for site in 0..2 {
        assert_same(
            &bed,
            site,
            "SELECT id, small, md5(body) FROM public.docs",
            "SELECT id, small, md5(body) FROM public.docs",
        )
        .await;
    }
    assert_eq!(
        count(
            &bed.site(0).await,
            "SELECT count(*) FROM public.docs WHERE length(body) = 128000 AND small = 1"
        )
        .await,
        3
    );
}

const ROUTING_SCHEMA: &str = "
CREATE TABLE public.items (id int PRIMARY KEY, name text);
CREATE TABLE public.prices (site_code text, item_id int, price numeric(10,2), PRIMARY KEY (site_code, item_id));
CREATE TABLE public.stock (id int PRIMARY KEY, site_code text, qty int);
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_all_once_and_by_column_and_moves_rows() {
    let bed = Bed::new(
        "routing",
        ROUTING_SCHEMA,
        &[
            ("public.items", "all"),
            ("public.prices", "column:site_code"),
            ("public.stock", "column:site_code"),
        ],
        "",
    )
    .await;
    let ho = bed.ho().await;
    ho.batch_execute("ALTER TABLE public.stock REPLICA IDENTITY FULL")
        .await
        .unwrap();
    bed.setup().await;
    ho.batch_execute(
        "INSERT INTO public.items SELECT g, 'item ' || g FROM generate_series(1, 20) g;
         INSERT INTO public.prices SELECT s, g, g * 1.5 FROM generate_series(1, 10) g, unnest(ARRAY['s1', 's2']) s;
         INSERT INTO public.stock SELECT g, CASE WHEN g % 2 = 0 THEN 's1' ELSE 's2' END, g FROM generate_series(1, 10) g;",
    )
    .await
    .unwrap();
    bed.sync_all().await;
    ho.batch_execute(
        "UPDATE public.prices SET site_code = 's2', item_id = 100 WHERE site_code = 's1' AND item_id = 1;
         UPDATE public.stock SET site_code = 's2', qty = 99 WHERE id = 2;
         UPDATE public.stock SET site_code = 's1' WHERE id = 3;
         UPDATE public.items SET name = 'renamed' WHERE id = 5;",
    )
    .await
    .unwrap();
    bed.sync_all().await;
    for (site, code) in SITES.iter().enumerate() {
        assert_same(
            &bed,
            site,
            "SELECT * FROM public.items",
            "SELECT * FROM public.items",
        )
        .await;
        assert_same(
            &bed,
            site,
            &format!("SELECT * FROM public.prices WHERE site_code = '{code}'"),
            "SELECT * FROM public.prices",
        )
        .await;
        assert_same(
            &bed,
            site,
            &format!("SELECT * FROM public.stock WHERE site_code = '{code}'"),
            "SELECT * FROM public.stock",
        )
        .await;
    }
    assert_eq!(
        count(
            &bed.site(1).await,
            "SELECT count(*) FROM public.stock WHERE id IN (2, 3)"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &bed.site(0).await,
            "SELECT count(*) FROM public.stock WHERE id = 3"
        )
        .await,
        1
    );
    // route = all is stored once per packet, for every site at once.
    let relay = bed.relay().await;
    assert_eq!(
        count(&relay, "SELECT count(*) FROM relay.packet_parts WHERE table_name = 'public.items' AND target <> '*'").await,
        0
    );
    assert_eq!(
        count(&relay, "SELECT count(*) FROM relay.packet_parts WHERE table_name = 'public.items'").await,
        count(&relay, "SELECT count(DISTINCT packet_id) FROM relay.packet_parts WHERE table_name = 'public.items'").await,
    );
    assert_eq!(
        count(
            &relay,
            "SELECT sum(t.row_count)::int8 FROM relay.packet_parts t JOIN relay.packets p ON p.id = t.packet_id WHERE t.table_name = 'public.items' AND p.kind = 'delta'"
        )
        .await,
        21
    );
    // Column-routed parts name one site each.
    assert_eq!(
        count(&relay, "SELECT count(*) FROM relay.packet_parts t JOIN relay.packets p ON p.id = t.packet_id WHERE t.table_name = 'public.prices' AND t.target NOT IN ('s1', 's2') AND p.kind = 'delta'").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_all_storage_does_not_grow_with_sites() {
    // The same changes with two sites and with ten sites store the same bytes.
    let mut sizes = Vec::new();
    for sites in [2usize, 10] {
        let bed = Bed::new("fanout", ROUTING_SCHEMA, &[("public.items", "all")], "").await;
        bed.ok(0, &["setup", "relay"]).await;
        for i in 0..sites {
            bed.add_site(&format!("site{i}")).await;
        }
        bed.ok(0, &["setup", "ho"]).await;
        bed.ho()
            .await
            .batch_execute(
                "INSERT INTO public.items SELECT g, 'item ' || g FROM generate_series(1, 1000) g",
            )
            .await
            .unwrap();
        bed.ok(0, &["ho", "sync", "--once"]).await;
        let relay = bed.relay().await;
        let bytes = count(
            &relay,
            "SELECT sum(length(arrow_ipc))::int8 FROM relay.packet_parts t JOIN relay.packets p ON p.id = t.packet_id WHERE p.kind = 'delta'",
        )
        .await;
        let parts = count(&relay, "SELECT count(*) FROM relay.packet_parts t JOIN relay.packets p ON p.id = t.packet_id WHERE p.kind = 'delta'").await;
        // A packet for every site lists none: `*` and how many they are.
        let targets = count(
            &relay,
            "SELECT max(cardinality(targets))::int8 FROM relay.packets WHERE kind = 'delta'",
        )
        .await;
        let target_count = count(
            &relay,
            "SELECT max(target_count)::int8 FROM relay.packets WHERE kind = 'delta' AND targets = '{*}'",
        )
        .await;
        assert_eq!(parts, 1);
        assert_eq!(targets, 1);
        assert_eq!(target_count, sites as i64);
        sizes.push(bytes);
    }
    assert_eq!(
        sizes[0], sizes[1],
        "relay bytes grew with the number of sites: {sizes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_reach_the_relay_and_ho() {
    let bed = Bed::new(
        "acks",
        ROUTING_SCHEMA,
        &[
            ("public.items", "all"),
            ("public.prices", "column:site_code"),
        ],
        "",
    )
    .await;
    bed.setup().await;
    bed.ho()
        .await
        .batch_execute(
            "INSERT INTO public.items VALUES (1, 'a'), (2, 'b');
             INSERT INTO public.prices VALUES ('s1', 1, 1.0);",
        )
        .await
        .unwrap();
    bed.ok(0, &["ho", "sync", "--once"]).await;
    let relay = bed.relay().await;
    assert_eq!(
        count(
            &relay,
            "SELECT count(*) FROM relay.packets WHERE status = 'UPLOADED' AND kind = 'delta'"
        )
        .await,
        1
    );
    bed.ok(0, &["pos", "sync", "--once"]).await;
    assert_eq!(
        count(
            &relay,
            "SELECT count(*) FROM relay.acks a JOIN relay.packets p ON p.id = a.packet_id WHERE a.site = 's1' AND a.status = 'PROCESSED' AND p.kind = 'delta'"
        )
        .await,
        1
    );
    // Site s2 has not acked yet: the packet is not PROCESSED.
    assert_eq!(
        count(
            &relay,
            "SELECT count(*) FROM relay.packets WHERE status = 'UPLOADED' AND kind = 'delta'"
        )
        .await,
        1
    );
    bed.ok(1, &["pos", "sync", "--once"]).await;
    assert_eq!(
        count(
            &relay,
            "SELECT count(*) FROM relay.packets WHERE status = 'PROCESSED' AND kind = 'delta'"
        )
        .await,
        1
    );
    let ho = bed.ho().await;
    bed.ok(0, &["ho", "sync", "--once"]).await;
    assert_eq!(
        count(
            &ho,
            "SELECT count(*) FROM relaysync.sent_packets WHERE status = 'PROCESSED' AND kind = 'delta'"
        )
        .await,
        1
    );
    let status = bed.ok(0, &["status"]).await;
    assert!(
        status.lines().filter(|l| l.contains("Success")).count() == 2,
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packet_a_site_cannot_apply_fails_there_only_and_a_rerun_applies_it() {
    let bed = Bed::new("failed", ROUTING_SCHEMA, &[("public.items", "all")], "").await;
    bed.setup().await;
    // The DBA drops a column at site s2 after setup.
    bed.site(1)
        .await
        .batch_execute("ALTER TABLE public.items DROP COLUMN name")
        .await
        .unwrap();
    let ho = bed.ho().await;
    ho.batch_execute("INSERT INTO public.items VALUES (1, 'a'), (2, 'b')")
        .await
        .unwrap();
    bed.ok(0, &["ho", "sync", "--once"]).await;
    bed.ok(0, &["pos", "sync", "--once"]).await;
    let out = bed.run(1, &["pos", "sync", "--once"]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("column \"name\""), "{stderr}");
    let relay = bed.relay().await;
    assert_eq!(
        count(&relay, "SELECT count(*) FROM relay.acks WHERE site = 's2' AND status = 'FAILED' AND error LIKE '%column \"name\"%'").await,
        1
    );
    assert_eq!(
        count(
            &relay,
            "SELECT count(*) FROM relay.packets WHERE status = 'FAILED'"
        )
        .await,
        1
    );
    // HO's own record carries the site's error, not a column next to it.
    bed.ok(0, &["ho", "sync", "--once"]).await;
    assert_eq!(
        count(&ho, "SELECT count(*) FROM relaysync.sent_packets WHERE status = 'FAILED' AND error LIKE 's2: %column \"name\"%'").await,
        1
    );
    let status = bed.ok(0, &["status"]).await;
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("s2") && l.contains("Failed") && l.contains("retry")),
        "{status}"
    );
    // More changes: s1 goes on, s2 stays stopped at the failed packet.
    ho.batch_execute("INSERT INTO public.items VALUES (3, 'c')")
        .await
        .unwrap();
    bed.ok(0, &["ho", "sync", "--once"]).await;
    bed.ok(0, &["pos", "sync", "--once"]).await;
    assert!(!bed
        .run(1, &["pos", "sync", "--once"])
        .await
        .status
        .success());
    assert_same(
        &bed,
        0,
        "SELECT * FROM public.items",
        "SELECT * FROM public.items",
    )
    .await;
    assert_eq!(
        count(&bed.site(1).await, "SELECT count(*) FROM public.items").await,
        0
    );
    // The DBA fixes the table; a plain rerun applies everything in order.
    bed.site(1)
        .await
        .batch_execute("ALTER TABLE public.items ADD COLUMN name text")
        .await
        .unwrap();
    bed.ok(1, &["pos", "sync", "--once"]).await;
    assert_same(
        &bed,
        1,
        "SELECT * FROM public.items",
        "SELECT * FROM public.items",
    )
    .await;
    assert_eq!(
        count(
            &relay,
            "SELECT count(*) FROM relay.packets WHERE status <> 'PROCESSED'"
        )
        .await,
        0
    );
    bed.ok(0, &["ho", "sync", "--once"]).await;
    assert_eq!(
        count(
            &bed.ho().await,
            "SELECT count(*) FROM relaysync.sent_packets WHERE status <> 'PROCESSED'"
        )
        .await,
        0
    );
}

/// New rows go into a site's table by COPY; when the site has one of them
/// already (a replay, a row its DBA added), the part is upserted instead and
/// HO's values win.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_of_rows_a_site_has_already_are_upserted() {
    let bed = Bed::new("reinsert", ROUTING_SCHEMA, &[("public.items", "all")], "").await;
    bed.setup().await;
    bed.site(0)
        .await
        .batch_execute("INSERT INTO public.items VALUES (2, 'site copy')")
        .await
        .unwrap();
    bed.ho()
        .await
        .batch_execute("INSERT INTO public.items SELECT g, 'ho ' || g FROM generate_series(1, 3) g")
        .await
        .unwrap();
    bed.sync_all().await;
    for site in 0..2 {
        assert_same(
            &bed,
            site,
            "SELECT * FROM public.items",
            "SELECT * FROM public.items",
        )
        .await;
    }
    assert_eq!(
        count(
            &bed.relay().await,
            "SELECT count(*) FROM relay.packets WHERE status <> 'PROCESSED'"
        )
        .await,
        0
    );
}

/// A site that is behind applies its pending groups in one transaction; when
/// one of them fails there, the groups before it still commit and the
/// failing packet is the one reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_a_site_is_behind_on_apply_together_and_a_failure_is_pinned_to_its_packet() {
    let bed = Bed::new(
        "batched",
        ROUTING_SCHEMA,
        &[("public.items", "all"), ("public.stock", "all")],
        "",
    )
    .await;
    bed.setup().await;
    bed.site(1)
        .await
        .batch_execute("ALTER TABLE public.stock DROP COLUMN qty")
        .await
        .unwrap();
    let ho = bed.ho().await;
    // Three HO syncs: three groups.
    for sql in [
        "INSERT INTO public.items VALUES (1, 'a')",
        "INSERT INTO public.stock VALUES (1, 's1', 5)",
        "INSERT INTO public.items VALUES (2, 'b')",
    ] {
        ho.batch_execute(sql).await.unwrap();
        bed.ok(0, &["ho", "sync", "--once"]).await;
    }
    let relay = bed.relay().await;
    let groups = ids(
        &relay,
        "SELECT DISTINCT group_id FROM relay.packets WHERE kind = 'delta' ORDER BY 1",
    )
    .await;
    assert_eq!(groups.len(), 3, "{groups:?}");

    // s1 takes all three in one transaction: their packets share its start
    // time, now().
    bed.ok(0, &["pos", "sync", "--once"]).await;
    let s1 = bed.site(0).await;
    assert_eq!(
        count(
            &s1,
            "SELECT count(DISTINCT applied_at) FROM relaysync.received_packets WHERE kind = 'delta'"
        )
        .await,
        1
    );
    for table in ["public.items", "public.stock"] {
        let q = format!("SELECT * FROM {table}");
        assert_same(&bed, 0, &q, &q).await;
    }

    // s2 cannot apply the second group: the first commits, the second is
    // FAILED, the third waits behind it.
    assert!(!bed
        .run(1, &["pos", "sync", "--once"])
        .await
        .status
        .success());
    let s2 = bed.site(1).await;
    assert_eq!(
        count(&s2, "SELECT count(*) FROM public.items WHERE id = 1").await,
        1
    );
    assert_eq!(count(&s2, "SELECT count(*) FROM public.items").await, 1);
    assert_eq!(
        count(
            &s2,
            &format!(
                "SELECT count(*) FROM relaysync.received_packets
                  WHERE status = 'FAILED' AND group_id = {}",
                groups[1]
            )
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &relay,
            &format!(
                "SELECT count(*) FROM relay.acks a JOIN relay.packets p ON p.id = a.packet_id
                  WHERE a.site = 's2' AND a.status = 'FAILED' AND p.group_id = {}",
                groups[1]
            )
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &relay,
            "SELECT count(*) FROM relay.acks a JOIN relay.packets p ON p.id = a.packet_id
              WHERE a.site = 's2' AND a.status = 'PROCESSED' AND p.kind = 'delta'"
        )
        .await,
        1
    );

    // Fixed, a rerun applies the rest.
    s2.batch_execute("ALTER TABLE public.stock ADD COLUMN qty int")
        .await
        .unwrap();
    bed.ok(1, &["pos", "sync", "--once"]).await;
    for table in ["public.items", "public.stock"] {
        let q = format!("SELECT * FROM {table}");
        assert_same(&bed, 1, &q, &q).await;
    }
    assert_eq!(
        count(
            &relay,
            "SELECT count(*) FROM relay.packets WHERE kind = 'delta' AND status <> 'PROCESSED'"
        )
        .await,
        0
    );
}

/// A bed set up for `run` workers that stream (interval 0s), `table` routed
/// to all sites.
async fn streaming_bed(name: &str, table: &str) -> Bed {
    let bed = Bed::new(
        name,
        ROUTING_SCHEMA,
        &[(table, "all")],
        "[sync]\ninterval = \"0s\"",
    )
    .await;
    bed.setup().await;
    bed
}

/// A streaming site worker keeps its staging tables across syncs; when the
/// DBA changes a column's type at HO and the site, the next change still
/// applies (the worker restages instead of failing the packet).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_site_follows_a_column_type_change() {
    let bed = streaming_bed("retype", "public.stock").await;
    let mut pos_cmd = bed.command(0, &["pos", "run"]);
    pos_cmd.stderr(std::process::Stdio::piped());
    let pos_worker = Worker::start(pos_cmd);
    let ho = bed.ho().await;
    let site = bed.site(0).await;
    let arrived = |want: &'static str| {
        let site = &site;
        move || async move {
            count(
                site,
                &format!("SELECT count(*) FROM public.stock WHERE {want}"),
            )
            .await
                == 1
        }
    };
    ho.batch_execute("INSERT INTO public.stock VALUES (1, 's1', 5)")
        .await
        .unwrap();
    bed.ok(0, &["ho", "sync", "--once"]).await;
    wait_for(
        std::time::Duration::from_secs(30),
        "the first row",
        arrived("id = 1"),
    )
    .await;
    for db in [&ho, &site] {
        db.batch_execute("ALTER TABLE public.stock ALTER COLUMN qty TYPE numeric(10,2)")
            .await
            .unwrap();
    }
    ho.batch_execute("INSERT INTO public.stock VALUES (2, 's1', 2.5)")
        .await
        .unwrap();
    bed.ok(0, &["ho", "sync", "--once"]).await;
    wait_for(
        std::time::Duration::from_secs(30),
        "the row with a fractional quantity",
        arrived("id = 2 AND qty = 2.5"),
    )
    .await;
    let out = pos_worker.stop();
    assert!(out.status.success());
    // Never a failed packet, not even one a later retry applied.
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!log.contains("packet failed"), "{log}");
    assert_same(
        &bed,
        0,
        "SELECT * FROM public.stock",
        "SELECT * FROM public.stock",
    )
    .await;
    assert_eq!(
        count(
            &bed.relay().await,
            "SELECT count(*) FROM relay.acks WHERE status = 'FAILED'"
        )
        .await,
        0
    );
}

/// Inserts items `ids` named `name` at HO and waits until the site has them.
async fn insert_and_see(
    ho: &tokio_postgres::Client,
    site: &tokio_postgres::Client,
    name: &str,
    ids: std::ops::RangeInclusive<i32>,
) {
    ho.execute(
        "INSERT INTO public.items SELECT g, $3 FROM generate_series($1::int, $2::int) g",
        &[ids.start(), ids.end(), &name],
    )
    .await
    .unwrap();
    let q = format!(
        "SELECT count(*) FROM public.items WHERE id BETWEEN {} AND {}",
        ids.start(),
        ids.end()
    );
    let want = (ids.end() - ids.start() + 1) as i64;
    wait_for(std::time::Duration::from_secs(90), name, || async {
        count(site, &q).await == want
    })
    .await;
}

/// The relay goes away under streaming workers (every connection cut, new
/// ones refused for a while): both keep running, reconnect, LISTEN again,
/// and what HO committed meanwhile reaches the site.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_workers_ride_out_a_relay_outage() {
    use std::time::Duration;
    let bed = streaming_bed("outage", "public.items").await;
    let mut workers = [bed.spawn(0, &["ho", "run"]), bed.spawn(0, &["pos", "run"])];
    let ho = bed.ho().await;
    let site = bed.site(0).await;
    let rows_at_site = |want: i64| {
        let site = &site;
        move || async move { count(site, "SELECT count(*) FROM public.items").await == want }
    };
    let relay_admin = client(&clusters().relay.url("postgres")).await;
    let listening = || {
        let admin = &relay_admin;
        let db = bed.name.clone();
        async move {
            count(
                admin,
                &format!(
                    "SELECT count(*) FROM pg_stat_activity
                      WHERE datname = '{db}' AND query LIKE 'LISTEN%relaysync_packets%'"
                ),
            )
            .await
                == 1
        }
    };
    wait_for(
        Duration::from_secs(30),
        "the site worker to LISTEN",
        listening,
    )
    .await;
    insert_and_see(&ho, &site, "before", 1..=10).await;

    // The outage: refuse new connections, cut the open ones.
    relay_admin
        .batch_execute(&format!(
            "ALTER DATABASE {0} ALLOW_CONNECTIONS false;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{0}'",
            bed.name
        ))
        .await
        .unwrap();
    ho.batch_execute("INSERT INTO public.items SELECT g, 'during' FROM generate_series(11, 20) g")
        .await
        .unwrap();
    wait_for(Duration::from_secs(30), "the workers to try the relay again", || async {
        // Refused reconnections show in the relay's log only; give the
        // workers a moment by waiting for HO's slot to be idle.
        count(
            &ho,
            "SELECT count(*) FROM pg_replication_slots WHERE NOT active AND database = current_database()",
        )
        .await
            == 1
    })
    .await;
    for w in &mut workers {
        assert!(w.is_running(), "a worker exited during the outage");
    }
    relay_admin
        .batch_execute(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS true",
            bed.name
        ))
        .await
        .unwrap();

    wait_for(
        Duration::from_secs(90),
        "rows committed during the outage",
        rows_at_site(20),
    )
    .await;
    wait_for(
        Duration::from_secs(30),
        "the site worker to LISTEN again",
        listening,
    )
    .await;
    insert_and_see(&ho, &site, "after", 21..=30).await;
    assert_same(
        &bed,
        0,
        "SELECT * FROM public.items",
        "SELECT * FROM public.items",
    )
    .await;
    for w in workers {
        assert!(w.stop().status.success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_streams_changes_and_stops_gracefully_on_sigterm() {
    let bed = streaming_bed("streaming", "public.items").await;
    let workers = [bed.spawn(0, &["ho", "run"]), bed.spawn(1, &["pos", "run"])];
    let ho = bed.ho().await;
    let site = bed.site(1).await;
    for round in 0..3 {
        ho.execute(
            "INSERT INTO public.items SELECT g, 'x' FROM generate_series($1::int * 100 + 1, $1::int * 100 + 100) g",
            &[&round],
        )
        .await
        .unwrap();
        let want = (round as i64 + 1) * 100;
        wait_for(
            std::time::Duration::from_secs(30),
            "streamed rows at the site",
            || {
                let site = &site;
                async move { count(site, "SELECT count(*) FROM public.items").await == want }
            },
        )
        .await;
    }
    ho.execute("DELETE FROM public.items WHERE id % 2 = 0", &[])
        .await
        .unwrap();
    wait_for(
        std::time::Duration::from_secs(30),
        "streamed deletes at the site",
        || {
            let site = &site;
            async move { count(site, "SELECT count(*) FROM public.items").await == 150 }
        },
    )
    .await;
    assert_same(
        &bed,
        1,
        "SELECT * FROM public.items",
        "SELECT * FROM public.items",
    )
    .await;
    for w in workers {
        let status = w.stop().status;
        assert!(
            status.success(),
            "worker did not stop gracefully: {status:?}"
        );
    }
    // Acks flowed back while streaming: HO's record shows them.
    bed.ok(0, &["ho", "sync", "--once"]).await;
    let relay = bed.relay().await;
    assert_eq!(
        count(&relay, "SELECT count(*) FROM relay.packets p WHERE NOT EXISTS (SELECT 1 FROM relay.acks a WHERE a.packet_id = p.id AND a.site = 's2')").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_slot_does_not_hold_wal_for_unsynced_tables() {
    let bed = Bed::new("idle_slot", ROUTING_SCHEMA, &[("public.items", "all")], "").await;
    bed.setup().await;
    let ho = bed.ho().await;
    // Busy tables relaysync does not sync: the slot must move past their WAL.
    ho.batch_execute(
        "CREATE TABLE public.not_synced (id int PRIMARY KEY, body text);
         INSERT INTO public.not_synced SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g;",
    )
    .await
    .unwrap();
    let after: String = ho
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let out = bed.ok(0, &["ho", "sync", "--once"]).await;
    assert!(out.contains("captured 0 transaction(s)"), "{out}");
    wait_for(std::time::Duration::from_secs(10), "the slot to move past idle WAL", || {
        let (ho, after, slot) = (&ho, after.clone(), bed.name.clone());
        async move {
            ho.query_one(
                "SELECT confirmed_flush_lsn >= $1::text::pg_lsn FROM pg_replication_slots WHERE slot_name = $2",
                &[&after, &slot],
            )
            .await
            .unwrap()
            .get::<_, bool>(0)
        }
    })
    .await;
    // The relay records the same position: the slot never passes it.
    let relay_lsn: String = bed
        .relay()
        .await
        .query_one(
            "SELECT lsn::text FROM relay.capture_state WHERE origin = 'ho'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let ok: bool = ho
        .query_one(
            "SELECT confirmed_flush_lsn <= $1::text::pg_lsn FROM pg_replication_slots WHERE slot_name = $2",
            &[&relay_lsn, &bed.name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ok);
}

/// A site behind many packets for another site fetches its own through
/// indexes (relay.packet_targets, the `*` packets' index), not by reading
/// every packet after its position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_behind_other_sites_packets_reads_only_its_own() {
    const OTHERS: i64 = 20_000;
    let bed = Bed::new(
        "mixed_backlog",
        "CREATE TABLE public.items (id int PRIMARY KEY, site text NOT NULL, name text);
         ALTER TABLE public.items REPLICA IDENTITY FULL;",
        &[("public.items", "column:site")],
        "",
    )
    .await;
    bed.setup().await;
    let relay = bed.relay().await;
    // 20k packets for s2 (one part each, as HO writes them) after s1's
    // position, then HO's next packets for both sites.
    relay
        .execute(
            "WITH p AS (
               INSERT INTO relay.packets (direction, origin, kind, group_id, targets, row_count, byte_count)
               SELECT 'down', 'ho', 'delta', 0, '{s2}', 1, 16 FROM generate_series(1, $1::int8)
               RETURNING id)
             INSERT INTO relay.packet_parts (packet_id, seq, table_name, target, row_count, arrow_ipc, checksum)
             SELECT id, 0, 'public.items', 's2', 1, '\\x00'::bytea, sha256('\\x00'::bytea) FROM p",
            &[&OTHERS],
        )
        .await
        .unwrap();
    relay
        .batch_execute("ANALYZE relay.packets, relay.packet_targets")
        .await
        .unwrap();
    bed.ho()
        .await
        .batch_execute("INSERT INTO public.items VALUES (1, 's1', 'a'), (2, 's2', 'b')")
        .await
        .unwrap();
    bed.ok(0, &["ho", "sync", "--once"]).await;
    // Rows of relay.packets read by the site's sync: a backend's counts
    // reach the statistics when it exits, so each reading waits until no
    // other session is left in the relay's database (HO's sync, the site's).
    let quiet = || async {
        wait_for(
            std::time::Duration::from_secs(30),
            "the relay's other sessions ended",
            || async {
                count(
                    &relay,
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                      AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
                )
                .await
                    == 0
            },
        )
        .await;
        count(
            &relay,
            "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) FROM pg_stat_user_tables
              WHERE schemaname = 'relay' AND relname = 'packets'",
        )
        .await
    };
    let before = quiet().await;
    bed.ok(0, &["pos", "sync", "--once"]).await;
    let rows_read = quiet().await - before;
    assert_routed_same(&bed, 0, "public.items", "site").await;
    println!("relay.packets rows read by s1's sync behind {OTHERS} packets for s2: {rows_read}");
    assert!(
        rows_read < 1_000,
        "s1's sync read {rows_read} rows of relay.packets behind {OTHERS} packets for s2"
    );
}

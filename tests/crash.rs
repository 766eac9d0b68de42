//! Exactly once under kill -9: each worker is killed at chosen points (and
//! at random moments from outside), rerun, and the sites equal HO with
//! nothing doubled; the slot never confirms past what the relay committed.

mod common;

use std::time::Duration;

use common::*;

const SCHEMA: &str = "CREATE TABLE public.items (id int PRIMARY KEY, name text, qty int);";
const TABLES: &[(&str, &str)] = &[("public.items", "all")];
/// Small packets, so that one transaction makes a group of several.
const SMALL_PACKETS: &str = "[packet]\nmax_rows = 100";

/// The slot's confirmed LSN never passes the relay's captured LSN (or the
/// slot's starting point when nothing was captured yet).
async fn assert_slot_behind_relay(bed: &Bed, start: &str) {
    let ho = bed.ho().await;
    let relay = bed.relay().await;
    let relay_lsn: Option<String> = relay
        .query_opt(
            "SELECT lsn::text FROM relay.capture_state WHERE origin = 'ho'",
            &[],
        )
        .await
        .unwrap()
        .map(|r| r.get(0));
    let bound = relay_lsn.unwrap_or_else(|| start.to_string());
    let ok: bool = ho
        .query_one(
            "SELECT confirmed_flush_lsn <= greatest($1::text::pg_lsn, $2::text::pg_lsn)
               FROM pg_replication_slots WHERE slot_name = $3",
            &[&bound, &start, &bed.name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ok, "the slot confirmed past what the relay holds");
}

async fn slot_start(bed: &Bed) -> String {
    bed.ho()
        .await
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&bed.name],
        )
        .await
        .unwrap()
        .get(0)
}

async fn assert_converged(bed: &Bed) {
    bed.sync_all().await;
    for site in 0..2 {
        assert_same(
            bed,
            site,
            "SELECT * FROM public.items",
            "SELECT * FROM public.items",
        )
        .await;
    }
    // Nothing doubled in the relay: each captured row is stored once.
    let relay = bed.relay().await;
    let stored = count(
        &relay,
        "SELECT coalesce(sum(row_count), 0)::int8 FROM relay.packet_parts",
    )
    .await;
    let captured = count(&bed.ho().await, "SELECT count(*) FROM public.items").await;
    assert!(
        stored >= captured,
        "relay holds {stored} rows for {captured}"
    );
    assert_eq!(
        count(
            &relay,
            "SELECT count(*) FROM relay.packets WHERE status <> 'PROCESSED'"
        )
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ho_killed_in_the_middle_of_a_group() {
    let bed = Bed::new("ho_mid_group", SCHEMA, TABLES, SMALL_PACKETS).await;
    bed.setup().await;
    let start = slot_start(&bed).await;
    bed.ho()
        .await
        .batch_execute(
            "INSERT INTO public.items SELECT g, 'n' || g, g FROM generate_series(1, 1000) g",
        )
        .await
        .unwrap();
    bed.run_killed_at(0, &["ho", "sync", "--once"], "capture_mid_group")
        .await;
    let relay = bed.relay().await;
    assert_eq!(
        count(
            &relay,
            "SELECT count(*) FROM relay.packets WHERE kind = 'delta'"
        )
        .await,
        0,
        "a half group is visible"
    );
    assert_slot_behind_relay(&bed, &start).await;
    bed.ok(0, &["ho", "sync", "--once"]).await;
    assert_eq!(
        count(
            &relay,
            "SELECT count(*) FROM relay.packets WHERE kind = 'delta'"
        )
        .await,
        10
    );
    assert_eq!(
        count(
            &relay,
            "SELECT count(DISTINCT group_id) FROM relay.packets WHERE kind = 'delta'"
        )
        .await,
        1
    );
    assert_converged(&bed).await;
    assert_eq!(
        count(
            &relay,
            "SELECT sum(t.row_count)::int8 FROM relay.packet_parts t JOIN relay.packets p ON p.id = t.packet_id WHERE p.kind = 'delta'"
        )
        .await,
        1000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ho_killed_between_relay_commit_and_slot_confirmation() {
    let bed = Bed::new("ho_after_commit", SCHEMA, TABLES, "").await;
    bed.setup().await;
    let start = slot_start(&bed).await;
    let ho = bed.ho().await;
    ho.batch_execute(
        "INSERT INTO public.items SELECT g, 'n' || g, g FROM generate_series(1, 300) g",
    )
    .await
    .unwrap();
    ho.batch_execute("UPDATE public.items SET qty = qty + 1 WHERE id <= 10")
        .await
        .unwrap();
    bed.run_killed_at(0, &["ho", "sync", "--once"], "capture_after_relay_commit")
        .await;
    assert_slot_behind_relay(&bed, &start).await;
    let relay = bed.relay().await;
    let packets = count(
        &relay,
        "SELECT count(*) FROM relay.packets WHERE kind = 'delta'",
    )
    .await;
    assert_eq!(packets, 1);
    // The slot was not confirmed, but the relay has both transactions: the
    // rerun captures nothing again.
    let out = bed.ok(0, &["ho", "sync", "--once"]).await;
    assert!(out.contains("captured 0 transaction(s)"), "{out}");
    assert_eq!(
        count(
            &relay,
            "SELECT count(*) FROM relay.packets WHERE kind = 'delta'"
        )
        .await,
        packets
    );
    assert_slot_behind_relay(&bed, &start).await;
    ho.batch_execute("DELETE FROM public.items WHERE id = 7")
        .await
        .unwrap();
    let out = bed.ok(0, &["ho", "sync", "--once"]).await;
    assert!(out.contains("captured 1 transaction(s)"), "{out}");
    assert_eq!(
        count(
            &relay,
            "SELECT count(*) FROM relay.packets WHERE kind = 'delta'"
        )
        .await,
        packets + 1
    );
    assert_converged(&bed).await;
    assert_eq!(
        count(
            &relay,
            "SELECT sum(t.row_count)::int8 FROM relay.packet_parts t JOIN relay.packets p ON p.id = t.packet_id WHERE p.kind = 'delta'"
        )
        .await,
        301
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pos_killed_in_the_middle_of_applying_a_group() {
    let bed = Bed::new("pos_mid_apply", SCHEMA, TABLES, SMALL_PACKETS).await;
    bed.setup().await;
    bed.ho()
        .await
        .batch_execute(
            "INSERT INTO public.items SELECT g, 'n' || g, g FROM generate_series(1, 500) g",
        )
        .await
        .unwrap();
    bed.ok(0, &["ho", "sync", "--once"]).await;
    let site = bed.site(0).await;
    let before = count(&site, "SELECT applied_through FROM relaysync.site").await;
    bed.run_killed_at(0, &["pos", "sync", "--once"], "pos_mid_apply")
        .await;
    // The group is applied whole or not at all.
    assert_eq!(count(&site, "SELECT count(*) FROM public.items").await, 0);
    assert_eq!(
        count(&site, "SELECT applied_through FROM relaysync.site").await,
        before
    );
    assert_converged(&bed).await;
}

/// A run that ended normally leaves no ack unsent: the next run sends none
/// again (the relay's acks keep their time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_run_leaves_no_ack_to_resend() {
    let bed = Bed::new("no_resend", SCHEMA, TABLES, "").await;
    bed.setup().await;
    bed.ho()
        .await
        .batch_execute("INSERT INTO public.items VALUES (1, 'a', 1)")
        .await
        .unwrap();
    bed.sync_all().await;
    let relay = bed.relay().await;
    let acks = "SELECT packet_id, status, acked_at FROM relay.acks WHERE site = 's1'";
    let before = rows(&relay, acks).await;
    assert_eq!(before.len(), 2);
    bed.ok(0, &["pos", "sync", "--once"]).await;
    assert_eq!(rows(&relay, acks).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pos_killed_between_its_commit_and_the_ack() {
    let bed = Bed::new("pos_after_commit", SCHEMA, TABLES, "").await;
    bed.setup().await;
    let ho = bed.ho().await;
    ho.batch_execute(
        "INSERT INTO public.items SELECT g, 'n' || g, g FROM generate_series(1, 100) g",
    )
    .await
    .unwrap();
    bed.ok(0, &["ho", "sync", "--once"]).await;
    bed.run_killed_at(0, &["pos", "sync", "--once"], "pos_after_commit")
        .await;
    let relay = bed.relay().await;
    assert_eq!(
        count(&bed.site(0).await, "SELECT count(*) FROM public.items").await,
        100
    );
    assert_eq!(
        count(&relay, "SELECT count(*) FROM relay.acks a JOIN relay.packets p ON p.id = a.packet_id WHERE a.site = 's1' AND p.kind = 'delta'").await,
        0
    );
    let out = bed.ok(0, &["pos", "sync", "--once"]).await;
    assert!(out.contains("re-sent 1 ack(s)"), "{out}");
    assert!(out.contains("applied 0 packet(s)"), "{out}");
    assert_eq!(
        count(
            &relay,
            "SELECT count(*) FROM relay.acks a JOIN relay.packets p ON p.id = a.packet_id WHERE a.site = 's1' AND a.status = 'PROCESSED' AND p.kind = 'delta'"
        )
        .await,
        1
    );
    assert_converged(&bed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_killed_at_random_moments_converge() {
    let bed = Bed::new("random_kills", SCHEMA, TABLES, SMALL_PACKETS).await;
    bed.setup().await;
    let start = slot_start(&bed).await;
    let ho = bed.ho().await;
    for (round, delay_ms) in [30u64, 80, 150, 250, 400].into_iter().enumerate() {
        let base = round as i32 * 10_000;
        ho.execute(
            "INSERT INTO public.items SELECT g, 'r' || g, g FROM generate_series($1::int + 1, $1::int + 5000) g",
            &[&base],
        )
        .await
        .unwrap();
        ho.execute(
            "UPDATE public.items SET qty = qty + 1 WHERE id % 7 = $1",
            &[&(round as i32)],
        )
        .await
        .unwrap();
        for (site, args) in [
            (0usize, &["ho", "sync", "--once"][..]),
            (0, &["pos", "sync", "--once"][..]),
        ] {
            let mut child = bed
                .command(site, args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            let _ = child.kill(); // SIGKILL, wherever it is
            let _ = child.wait();
            assert_slot_behind_relay(&bed, &start).await;
        }
    }
    assert_converged(&bed).await;
}

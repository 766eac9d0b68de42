//! Signed packets against a relay that lies: its owner, with plain SQL,
//! forges, alters, retargets, replays, reorders and withholds packets and
//! forges an upload; each is refused where it would be applied, with
//! nothing applied, and traffic resumes once the relay is honest again.

mod common;

use std::time::Duration;

use serde_json::Value;

use common::*;

const SCHEMA: &str = "
CREATE TABLE public.items (id int PRIMARY KEY, name text);
CREATE TABLE public.prices (site_code text, item int, price numeric, PRIMARY KEY (site_code, item));
CREATE TABLE public.device_events (site text, device int, seq int, kind text, PRIMARY KEY (site, device, seq));
";
const TABLES: &[(&str, &str)] = &[
    ("public.items", "all"),
    ("public.prices", "column:site_code"),
];

/// A bed where HO signs and every site trusts HO's key only, and each site
/// signs its uploads with a key HO recorded.
async fn signed_bed(name: &str) -> Bed {
    signed_bed_with(name, "").await
}

/// [`signed_bed`] with `more` in every config.
async fn signed_bed_with(name: &str, more: &str) -> Bed {
    let upstream = "[[upstream]]\nname = \"public.device_events\"\nmerge = \"append\"\n";
    let bed = Bed::new(name, SCHEMA, TABLES, &format!("{more}{upstream}")).await;
    bed.sign().await;
    bed.setup().await;
    bed
}

/// `relaysync --json args` as site `site`: its JSON output, whatever its
/// exit status.
async fn json(bed: &Bed, site: usize, args: &[&str]) -> Value {
    let out = bed.run(site, &[&["--json"], args].concat()).await;
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("")).unwrap_or_else(|e| {
        panic!(
            "relaysync {args:?}: no JSON ({e}): {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `pos sync` at `site`: the packet it failed at, if any.
async fn pos_sync_fails_at(bed: &Bed, site: usize) -> Option<i64> {
    let out = json(bed, site, &["pos", "sync", "--once"]).await;
    out["applied"]["failed"]["packet"].as_i64()
}

/// The newest down packet for `target` (a site code, or `*`).
async fn newest_for(relay: &tokio_postgres::Client, target: &str) -> i64 {
    count(
        relay,
        &format!("SELECT max(id) FROM relay.packets WHERE direction = 'down' AND targets = '{{{target}}}'"),
    )
    .await
}

/// The relay's owner copies packet `of` into a new, unsigned packet of
/// `direction` from `origin` for `targets` (its parts for `part_target`,
/// an SQL expression over the copied part `x`): the new packet's id.
async fn forge_copy(
    relay: &tokio_postgres::Client,
    of: i64,
    (direction, origin, targets, part_target): (&str, &str, &str, &str),
) -> i64 {
    relay
        .batch_execute(&format!(
            "WITH n AS (SELECT nextval('relay.packets_id_seq') AS id),
                  p AS (INSERT INTO relay.packets (id, direction, origin, kind, group_id, targets, row_count, byte_count)
                        OVERRIDING SYSTEM VALUE SELECT id, '{direction}', '{origin}', 'delta', id, '{targets}', 1, 1 FROM n RETURNING id)
             INSERT INTO relay.packet_parts (packet_id, seq, table_name, target, row_count, arrow_ipc, checksum)
             SELECT p.id, x.seq, x.table_name, {part_target}, x.row_count, x.arrow_ipc, x.checksum
               FROM p, relay.packet_parts x WHERE x.packet_id = {of}"
        ))
        .await
        .unwrap();
    count(relay, "SELECT max(id) FROM relay.packets").await
}

/// The relay's owner gives packet `to` the signature of packet `from`.
async fn copy_signature(relay: &tokio_postgres::Client, to: i64, from: i64) {
    relay
        .batch_execute(&format!(
            "UPDATE relay.packets f SET signed = o.signed, signature = o.signature
               FROM relay.packets o WHERE f.id = {to} AND o.id = {from}"
        ))
        .await
        .unwrap();
}

/// The relay's owner removes packet `id`: the relay is honest again.
async fn remove(relay: &tokio_postgres::Client, id: i64) {
    relay
        .batch_execute(&format!("DELETE FROM relay.packets WHERE id = {id}"))
        .await
        .unwrap();
}

/// Device event `seq` at s1 (an upload's row).
async fn device_event(bed: &Bed, seq: i32) {
    bed.site(0)
        .await
        .execute(
            "INSERT INTO public.device_events VALUES ('s1', 1, $1, 'door')",
            &[&seq],
        )
        .await
        .unwrap();
}

/// Every relay superuser statement below is what the relay's owner can do.
async fn owner(bed: &Bed) -> tokio_postgres::Client {
    bed.relay().await
}

/// Site `site`'s prices, as text.
async fn prices(bed: &Bed, site: usize) -> Vec<String> {
    bed.site(site)
        .await
        .query(
            "SELECT price::int::text FROM public.prices ORDER BY item",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// HO sets site `site`'s price to `price` and stores the packet: its id.
async fn new_price(bed: &Bed, site: usize, price: i32) -> i64 {
    bed.ho()
        .await
        .execute(
            "UPDATE public.prices SET price = $2::int WHERE site_code = $1",
            &[&SITES[site], &price],
        )
        .await
        .unwrap();
    bed.ok(0, &["ho", "sync", "--once"]).await;
    newest_for(&bed.relay().await, SITES[site]).await
}

/// A [`signed_bed`] (with `more` in every config) where HO holds `items`
/// items and a price for each site, and both sites applied them.
async fn seeded(name: &str, more: &str, items: i32) -> (Bed, tokio_postgres::Client) {
    let bed = signed_bed_with(name, more).await;
    bed.ho()
        .await
        .execute(
            "INSERT INTO public.items SELECT g, 'item ' || g FROM generate_series(1, $1) g",
            &[&items],
        )
        .await
        .unwrap();
    bed.ho()
        .await
        .batch_execute("INSERT INTO public.prices VALUES ('s1', 1, 1), ('s2', 1, 2)")
        .await
        .unwrap();
    bed.ok(0, &["ho", "sync", "--once"]).await;
    assert_eq!(pos_sync_fails_at(&bed, 0).await, None);
    assert_eq!(pos_sync_fails_at(&bed, 1).await, None);
    let relay = owner(&bed).await;
    (bed, relay)
}

/// HO renames item `id` and stores the packet (for every site).
async fn rename_item(bed: &Bed, id: i32, name: &str) {
    bed.ho()
        .await
        .execute(
            "UPDATE public.items SET name = $2 WHERE id = $1",
            &[&id, &name],
        )
        .await
        .unwrap();
    bed.ok(0, &["ho", "sync", "--once"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_relay_is_refused_and_an_honest_one_resumes() {
    let (bed, relay) = seeded("sign_lies", "", 20).await;
    assert_eq!(
        count(
            &relay,
            "SELECT count(*) FROM relay.packets WHERE signature IS NULL"
        )
        .await,
        0,
        "every packet is signed"
    );
    assert_table_same_everywhere(&bed, "public.items").await;
    let items = newest_for(&relay, "*").await;

    // A forged packet: an applied packet's parts in a new, unsigned one
    // for s1; then the same with that packet's real signature (a replay).
    let forged = forge_copy(&relay, items, ("down", "ho", "{s1}", "'s1'")).await;
    bed.ho()
        .await
        .batch_execute("DELETE FROM public.items WHERE id <= 5")
        .await
        .unwrap();
    bed.ok(0, &["ho", "sync", "--once"]).await;
    let items_at_s1 = "SELECT count(*) FROM public.items";
    assert_eq!(pos_sync_fails_at(&bed, 0).await, Some(forged), "unsigned");
    assert_eq!(count(&bed.site(0).await, items_at_s1).await, 20);
    copy_signature(&relay, forged, items).await;
    assert_eq!(pos_sync_fails_at(&bed, 0).await, Some(forged), "replayed");
    assert_eq!(count(&bed.site(0).await, items_at_s1).await, 20);
    // Honest again: the forgery goes, and what HO sent since applies.
    remove(&relay, forged).await;
    assert_eq!(pos_sync_fails_at(&bed, 0).await, None);
    assert_eq!(pos_sync_fails_at(&bed, 1).await, None);
    assert_table_same_everywhere(&bed, "public.items").await;

    // A part altered, its checksum fixed: s1's new price packet carries the
    // bytes of s1's earlier one.
    let earlier = new_price(&bed, 0, 10).await;
    assert_eq!(pos_sync_fails_at(&bed, 0).await, None);
    let altered = new_price(&bed, 0, 11).await;
    relay
        .batch_execute(&format!(
            "CREATE TABLE kept AS SELECT * FROM relay.packet_parts WHERE packet_id = {altered};
             UPDATE relay.packet_parts a SET arrow_ipc = b.arrow_ipc, checksum = sha256(b.arrow_ipc)
               FROM relay.packet_parts b WHERE a.packet_id = {altered} AND b.packet_id = {earlier}"
        ))
        .await
        .unwrap();
    assert_eq!(pos_sync_fails_at(&bed, 0).await, Some(altered), "altered");
    assert_eq!(prices(&bed, 0).await, ["10"]);
    restore_parts(&relay).await;
    relay
        .batch_execute(&format!(
            "UPDATE relay.packet_parts SET checksum = sha256(arrow_ipc) WHERE packet_id = {altered}"
        ))
        .await
        .unwrap();
    assert_eq!(pos_sync_fails_at(&bed, 0).await, None);
    assert_eq!(prices(&bed, 0).await, ["11"]);

    // Two packets reordered: each carries the other's parts.
    let first = new_price(&bed, 0, 12).await;
    let second = new_price(&bed, 0, 13).await;
    let swap = format!(
        "UPDATE relay.packet_parts a SET arrow_ipc = b.arrow_ipc, checksum = b.checksum, row_count = b.row_count
           FROM relay.packet_parts b
          WHERE (a.packet_id, b.packet_id) IN (({first}, {second}), ({second}, {first})) AND a.seq = b.seq"
    );
    relay.batch_execute(&swap).await.unwrap();
    assert_eq!(pos_sync_fails_at(&bed, 0).await, Some(first), "reordered");
    assert_eq!(prices(&bed, 0).await, ["11"]);
    relay.batch_execute(&swap).await.unwrap();
    assert_eq!(pos_sync_fails_at(&bed, 0).await, None);
    assert_eq!(prices(&bed, 0).await, ["13"]);

    // s1's packet delivered to s2 (its targets and part changed).
    let misdelivered = new_price(&bed, 0, 14).await;
    let retarget = |to: &str| {
        format!(
            "UPDATE relay.packets SET targets = '{{{to}}}' WHERE id = {misdelivered};
             UPDATE relay.packet_parts SET target = '{to}' WHERE packet_id = {misdelivered}"
        )
    };
    relay.batch_execute(&retarget("s2")).await.unwrap();
    assert_eq!(
        pos_sync_fails_at(&bed, 1).await,
        Some(misdelivered),
        "retargeted"
    );
    assert_eq!(prices(&bed, 1).await, ["2"]);
    relay.batch_execute(&retarget("s1")).await.unwrap();
    // s2 failed it, and moves on once it is no longer listed for s2.
    assert_eq!(pos_sync_fails_at(&bed, 1).await, None);
    assert_eq!(pos_sync_fails_at(&bed, 0).await, None);
    assert_eq!(prices(&bed, 0).await, ["14"]);
    assert_eq!(prices(&bed, 1).await, ["2"]);
    for site in 0..2 {
        assert_routed_same(&bed, site, "public.prices", "site_code").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_upload_is_refused_at_ho() {
    let bed = signed_bed("sign_upload").await;
    let relay = owner(&bed).await;
    device_event(&bed, 1).await;
    assert_eq!(pos_sync_fails_at(&bed, 0).await, None);
    let merged = json(&bed, 0, &["ho", "sync", "--once"]).await;
    assert_eq!(merged["merged"]["failed"], Value::Null, "{merged}");
    let at_ho = "SELECT count(*) FROM public.device_events";
    assert_eq!(count(&bed.ho().await, at_ho).await, 1);
    let real = count(
        &relay,
        "SELECT max(id) FROM relay.packets WHERE direction = 'up'",
    )
    .await;

    // The relay's owner uploads as s1: a copy of s1's real upload, unsigned,
    // then with the real one's signature.
    let forged = forge_copy(&relay, real, ("up", "s1", "{ho}", "x.target")).await;
    bed.ho()
        .await
        .batch_execute("DELETE FROM public.device_events")
        .await
        .unwrap();
    let refused = json(&bed, 0, &["ho", "sync", "--once"]).await;
    assert_eq!(refused["merged"]["failed"]["packet"], forged, "{refused}");
    copy_signature(&relay, forged, real).await;
    let refused = json(&bed, 0, &["ho", "sync", "--once"]).await;
    assert_eq!(refused["merged"]["failed"]["packet"], forged, "{refused}");
    assert_eq!(count(&bed.ho().await, at_ho).await, 0, "nothing merged");
    let failed =
        format!("SELECT count(*) FROM relay.acks WHERE packet_id = {forged} AND status = 'FAILED'");
    assert_eq!(count(&relay, &failed).await, 1, "reported at the relay");

    // Honest again: s1's next event merges.
    remove(&relay, forged).await;
    device_event(&bed, 2).await;
    assert_eq!(pos_sync_fails_at(&bed, 0).await, None);
    let merged = json(&bed, 0, &["ho", "sync", "--once"]).await;
    assert_eq!(merged["merged"]["failed"], Value::Null, "{merged}");
    assert_eq!(count(&bed.ho().await, at_ho).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withheld_packet_is_reported_and_applied_once_delivered() {
    let (bed, relay) = seeded("sign_withheld", "", 5).await;

    // The relay's owner takes s1's next packet away and keeps it.
    let withheld = new_price(&bed, 0, 20).await;
    let after = new_price(&bed, 0, 21).await;
    relay
        .batch_execute(&format!(
            "CREATE TABLE held AS SELECT * FROM relay.packets WHERE id = {withheld};
             CREATE TABLE held_parts AS SELECT * FROM relay.packet_parts WHERE packet_id = {withheld};
             DELETE FROM relay.packets WHERE id = {withheld}"
        ))
        .await
        .unwrap();
    assert_eq!(pos_sync_fails_at(&bed, 0).await, Some(after), "a gap");
    assert_eq!(pos_sync_fails_at(&bed, 0).await, Some(after), "still");
    assert_eq!(prices(&bed, 0).await, ["1"], "nothing applied");
    // s2 follows its own chain and HO's packets for every site only.
    rename_item(&bed, 1, "renamed").await;
    assert_eq!(pos_sync_fails_at(&bed, 1).await, None);

    // Delivered late: s1 applies both, in order, and what came since.
    relay
        .batch_execute(
            "INSERT INTO relay.packets OVERRIDING SYSTEM VALUE SELECT * FROM held;
             INSERT INTO relay.packet_parts SELECT * FROM held_parts",
        )
        .await
        .unwrap();
    assert_eq!(pos_sync_fails_at(&bed, 0).await, None);
    assert_eq!(prices(&bed, 0).await, ["21"]);
    assert_table_same_everywhere(&bed, "public.items").await;

    // A packet for every site taken away: both sites see the gap.
    rename_item(&bed, 2, "once more").await;
    let dropped = newest_for(&relay, "*").await;
    rename_item(&bed, 3, "and again").await;
    let next = newest_for(&relay, "*").await;
    relay
        .batch_execute(&format!("DELETE FROM relay.packets WHERE id = {dropped}"))
        .await
        .unwrap();
    assert_eq!(pos_sync_fails_at(&bed, 0).await, Some(next));
    assert_eq!(pos_sync_fails_at(&bed, 1).await, Some(next));
    assert_eq!(
        count(
            &bed.site(1).await,
            "SELECT count(*) FROM public.items WHERE name = 'and again'"
        )
        .await,
        0,
        "nothing applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_site_comes_back_through_the_packets_released_for_it() {
    let retention = "[retention]\nmax_offline = \"1h\"\n";
    let (bed, relay) = seeded("sign_expired", retention, 5).await;
    let ho = bed.ho().await;
    // s2 goes silent with a packet of its own and one for every site
    // unapplied, and is expired: the relay releases them.
    new_price(&bed, 1, 3).await;
    ho.batch_execute("UPDATE public.items SET name = 'gone quiet' WHERE id = 1")
        .await
        .unwrap();
    make_silent(&relay, "s2").await;
    bed.ok(0, &["ho", "sync", "--once"]).await;
    bed.ok(0, &["pos", "sync", "--once"]).await;
    bed.ok(0, &["ho", "sync", "--once"]).await;
    assert_eq!(
        count(
            &relay,
            "SELECT count(*) FROM relay.sites WHERE code = 's2' AND expired_at IS NOT NULL"
        )
        .await,
        1
    );
    // While it is away (nothing is stored for it): its price and an item.
    ho.batch_execute(
        "UPDATE public.prices SET price = 4 WHERE site_code = 's2';
         UPDATE public.items SET name = 'while away' WHERE id = 2",
    )
    .await
    .unwrap();
    bed.ok(0, &["ho", "sync", "--once"]).await;
    // Back: the packets released for it leave gaps in its chains, which
    // its full sync starts over.
    assert_eq!(pos_sync_fails_at(&bed, 1).await, None);
    bed.sync_all().await;
    assert_eq!(pos_sync_fails_at(&bed, 1).await, None);
    assert_table_same_everywhere(&bed, "public.items").await;
    assert_eq!(prices(&bed, 1).await, ["4"]);
    // And its chains go on from the full sync.
    rename_item(&bed, 3, "back").await;
    new_price(&bed, 1, 5).await;
    assert_eq!(pos_sync_fails_at(&bed, 1).await, None);
    assert_eq!(pos_sync_fails_at(&bed, 0).await, None);
    assert_table_same_everywhere(&bed, "public.items").await;
    assert_eq!(prices(&bed, 1).await, ["5"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_rolls_a_chain_back_stops_hos_worker() {
    let (bed, relay) = seeded("sign_rollback", "", 5).await;
    // A streaming worker: one process, one record of what it stored.
    let mut cmd = bed.command(0, &["ho", "run"]);
    // Its error (what is tested) is not the suite's.
    cmd.env("RELAYSYNC__SYNC__INTERVAL", "0s")
        .stderr(std::process::Stdio::null());
    let mut worker = Worker::start(cmd);
    let ho = bed.ho().await;
    let before = newest_for(&relay, "*").await;
    keep_head(&relay, "ho", "*").await;
    ho.batch_execute("UPDATE public.items SET name = 'removed' WHERE id = 1")
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(60),
        "HO's worker to store the packet",
        || {
            let relay = &relay;
            async move { newest_for(relay, "*").await > before }
        },
    )
    .await;
    // The relay's owner removes it before any site applied it, and puts
    // the chain's head back: the next packet would take its place.
    roll_back(&relay, newest_for(&relay, "*").await).await;
    ho.batch_execute("UPDATE public.items SET name = 'next' WHERE id = 2")
        .await
        .unwrap();
    wait_for(Duration::from_secs(60), "HO's worker to stop", || {
        let stopped = !worker.is_running();
        async move { stopped }
    })
    .await;
    let after = format!("SELECT count(*) FROM relay.packets WHERE id > {before}");
    assert_eq!(count(&relay, &after).await, 0, "nothing written past it");
}

/// The relay's owner keeps the head of `origin`'s chain for `target`.
async fn keep_head(relay: &tokio_postgres::Client, origin: &str, target: &str) {
    relay
        .batch_execute(&format!(
            "CREATE TABLE head AS SELECT * FROM relay.chains WHERE origin = '{origin}' AND target = '{target}'"
        ))
        .await
        .unwrap();
}

/// The relay's owner removes packet `removed` before any site applied it
/// and puts the kept head back: the next packet would take its place.
async fn roll_back(relay: &tokio_postgres::Client, removed: i64) {
    relay
        .batch_execute(&format!(
            "DELETE FROM relay.packets WHERE id = {removed};
             UPDATE relay.chains c SET seq = h.seq, hash = h.hash FROM head h
              WHERE c.origin = h.origin AND c.target = h.target"
        ))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_rolled_back_between_runs_is_refused_by_hos_next_run() {
    let (bed, relay) = seeded("sign_rollback_runs", "", 5).await;
    let before = newest_for(&relay, "*").await;
    keep_head(&relay, "ho", "*").await;
    rename_item(&bed, 1, "removed").await;
    let removed = newest_for(&relay, "*").await;
    assert!(removed > before);
    roll_back(&relay, removed).await;
    bed.ho()
        .await
        .batch_execute("UPDATE public.items SET name = 'next' WHERE id = 2")
        .await
        .unwrap();
    let out = bed.run(0, &["ho", "sync", "--once"]).await;
    assert!(!out.status.success(), "HO's next run refuses to write");
    let after = format!("SELECT count(*) FROM relay.packets WHERE id > {before}");
    assert_eq!(count(&relay, &after).await, 0, "nothing written past it");
}

/// A relay that removes a site's newest upload and puts the site's chain
/// head back while the site's worker is stopped is refused by the site's
/// next run: a signing site keeps its chain numbers in its own database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_rolled_back_between_runs_is_refused_by_the_sites_next_upload() {
    let bed = signed_bed("sign_up_rollback").await;
    let relay = owner(&bed).await;
    let newest_up = "SELECT coalesce(max(id), 0) FROM relay.packets WHERE direction = 'up'";
    device_event(&bed, 1).await;
    assert_eq!(pos_sync_fails_at(&bed, 0).await, None);
    let before = count(&relay, newest_up).await;
    assert!(before > 0, "s1 uploaded");
    keep_head(&relay, "s1", "ho").await;
    device_event(&bed, 2).await;
    assert_eq!(pos_sync_fails_at(&bed, 0).await, None);
    let removed = count(&relay, newest_up).await;
    assert!(removed > before, "s1 uploaded again");
    roll_back(&relay, removed).await;
    device_event(&bed, 3).await;
    let out = bed.run(0, &["pos", "sync", "--once"]).await;
    assert!(
        !out.status.success(),
        "the site's next run refuses to upload"
    );
    let after =
        format!("SELECT count(*) FROM relay.packets WHERE direction = 'up' AND id > {before}");
    assert_eq!(count(&relay, &after).await, 0, "nothing uploaded past it");
}

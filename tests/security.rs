//! Trust: each site's relay role reaches only its own packets, parts, acks,
//! requests and capture position (row-level security, enforced by
//! PostgreSQL); `site add` creates or binds the role, `site remove` revokes
//! it; nothing needs a superuser at run time.

mod common;

use std::time::Duration;

use common::*;

const SCHEMA: &str = "
CREATE TABLE public.items (id int PRIMARY KEY, name text);
CREATE TABLE public.prices (site_code text, item_id int, price numeric(10,2), PRIMARY KEY (site_code, item_id));
";
const TABLES: &[(&str, &str)] = &[
    ("public.items", "all"),
    ("public.prices", "column:site_code"),
];

/// A bed whose relay is owned by a login role that is no superuser (only
/// CREATEROLE, for `site add`), as `sql/roles.sql` makes it.
async fn bed_with_plain_owner(test: &str) -> Bed {
    let mut bed = Bed::new(test, SCHEMA, TABLES, "").await;
    let owner = format!("{}_owner", bed.name);
    bed.relay()
        .await
        .batch_execute(&format!(
            "CREATE ROLE \"{owner}\" LOGIN CREATEROLE; GRANT CREATE ON DATABASE \"{}\" TO \"{owner}\";",
            bed.name
        ))
        .await
        .unwrap();
    bed.relay_url = bed.relay_url.replacen("postgres@", &format!("{owner}@"), 1);
    bed.write_config(TABLES, "");
    bed
}

/// Everything HO and the relay record, read as the superuser: ids,
/// statuses, targets, acks, requests, positions, parts.
async fn relay_record(bed: &Bed) -> Vec<String> {
    let relay = bed.relay().await;
    let ho = bed.ho().await;
    let mut all = Vec::new();
    for q in [
        "SELECT id, direction, origin, status, targets, group_id FROM relay.packets",
        "SELECT packet_id, seq, target, row_count, md5(arrow_ipc) FROM relay.packet_parts",
        "SELECT packet_id, site, status, rows, error FROM relay.acks",
        "SELECT id, site, tables, reason, served_at FROM relay.sync_requests",
        "SELECT code, role FROM relay.sites",
        // (HO's own position moves on with each sync)
        "SELECT origin, slot FROM relay.capture_state",
        "SELECT name, route FROM relay.tables",
    ] {
        all.extend(rows(&relay, q).await);
    }
    all.extend(
        rows(
            &ho,
            "SELECT packet_id, status, error FROM relaysync.sent_packets",
        )
        .await,
    );
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_role_reaches_only_its_own_rows() {
    let bed = bed_with_plain_owner("rls").await;
    bed.register().await;
    bed.sync_all().await;
    // Pending work for both sites: a row for each, and one for s2 alone.
    bed.ho()
        .await
        .batch_execute(
            "INSERT INTO public.items VALUES (1, 'one');
             INSERT INTO public.prices VALUES ('s1', 1, 1.5), ('s2', 1, 2.5);",
        )
        .await
        .unwrap();
    bed.ok(0, &["ho", "sync", "--once"]).await;
    bed.ho()
        .await
        .batch_execute("INSERT INTO public.prices VALUES ('s2', 2, 3.5)")
        .await
        .unwrap();
    bed.ok(0, &["ho", "sync", "--once"]).await;
    let relay = bed.relay().await;
    let only_s2 = ids(
        &relay,
        "SELECT id FROM relay.packets WHERE direction = 'down' AND NOT ('s1' = ANY (targets) OR targets = '{*}')",
    )
    .await;
    assert!(!only_s2.is_empty(), "a packet for s2 alone");
    let mine: i64 = count(
        &relay,
        "SELECT max(id) FROM relay.packets WHERE direction = 'down' AND ('s1' = ANY (targets) OR targets = '{*}')",
    )
    .await;
    let before = relay_record(&bed).await;
    let status_before = bed.ok(0, &["status"]).await;

    // HO approved a held change at s2 (see `schema apply --site`).
    relay
        .batch_execute(&format!(
            "INSERT INTO relay.schema_approvals (site, packet_id) VALUES ('s2', {})",
            only_s2[0]
        ))
        .await
        .unwrap();
    // What a purge kept of s2's tables (its console reads its own).
    relay
        .batch_execute(
            "INSERT INTO relay.table_history (site, table_name, last_delta) VALUES ('s2', 'public.items', 1), ('s1', 'public.items', 1)",
        )
        .await
        .unwrap();
    // Site s1's role, with plain SQL.
    let s1_url = bed.site_relay_urls.lock().unwrap()["s1"].clone();
    let s1 = client(&s1_url).await;
    // Reads: nothing of anybody else.
    for q in [
        "SELECT count(*) FROM relay.packets WHERE NOT (direction = 'down' AND ('s1' = ANY (targets) OR targets = '{*}'))",
        "SELECT count(*) FROM relay.packet_parts WHERE target NOT IN ('s1', '*')",
        "SELECT count(*) FROM relay.acks WHERE site <> 's1'",
        "SELECT count(*) FROM relay.sync_requests WHERE site <> 's1'",
        "SELECT count(*) FROM relay.sites WHERE code <> 's1'",
        "SELECT count(*) FROM relay.capture_state",
        "SELECT count(*) FROM relay.schema_approvals",
        "SELECT count(*) FROM relay.table_history WHERE site <> 's1'",
    ] {
        assert_eq!(count(&s1, q).await, 0, "{q}");
    }
    let parts_of_others: i64 = s1
        .query_one(
            "SELECT count(*) FROM relay.packet_parts WHERE packet_id = ANY ($1)",
            &[&only_s2],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(parts_of_others, 0, "parts of packets s1 is no target of");
    // What is its own it reads.
    assert!(count(&s1, "SELECT count(*) FROM relay.packets").await > 0);
    assert!(count(&s1, "SELECT count(*) FROM relay.acks").await > 0);
    assert_eq!(count(&s1, "SELECT count(*) FROM relay.sites").await, 1);
    assert_eq!(
        count(&s1, "SELECT count(*) FROM relay.table_history").await,
        1
    );

    // Writes: each refused, or touching nothing.
    let other = only_s2[0];
    let forbidden = [
        // an ack for another site, and one for a packet s1 is no target of
        format!("INSERT INTO relay.acks (packet_id, site, status) VALUES ({mine}, 's2', 'PROCESSED')"),
        format!("INSERT INTO relay.acks (packet_id, site, status) VALUES ({other}, 's1', 'PROCESSED')"),
        "UPDATE relay.acks SET status = 'PROCESSED', error = NULL WHERE site = 's2'".into(),
        "UPDATE relay.acks SET packet_id = packet_id".into(),
        "DELETE FROM relay.acks".into(),
        // packets: no down packets, no other origin, no updates or deletes
        "INSERT INTO relay.packets (direction, origin, kind, group_id, targets, row_count, byte_count)
           VALUES ('down', 'ho', 'delta', 1, ARRAY['s2'], 1, 1)".into(),
        "WITH n AS (SELECT nextval('relay.packets_id_seq') AS id)
         INSERT INTO relay.packets (id, direction, origin, kind, group_id, targets, row_count, byte_count)
           OVERRIDING SYSTEM VALUE SELECT id, 'up', 's2', 'delta', id, ARRAY['ho'], 1, 1 FROM n".into(),
        "INSERT INTO relay.packets (id, direction, origin, kind, group_id, targets, row_count, byte_count)
           OVERRIDING SYSTEM VALUE VALUES (999999999, 'up', 's1', 'delta', 999999999, ARRAY['ho'], 1, 1)".into(),
        // no site approves a schema change for itself
        format!("INSERT INTO relay.schema_approvals (site, packet_id) VALUES ('s1', {mine})"),
        "UPDATE relay.packets SET status = 'PROCESSED'".into(),
        "UPDATE relay.packets SET targets = targets || 's1'::text".into(),
        "DELETE FROM relay.packets".into(),
        "TRUNCATE relay.packets CASCADE".into(),
        // parts: none into others' packets, no changes
        format!("INSERT INTO relay.packet_parts (packet_id, seq, table_name, target, row_count, arrow_ipc)
           VALUES ({mine}, 99, 'public.items', 's1', 1, '\\x00')"),
        "UPDATE relay.packet_parts SET arrow_ipc = '\\x00'".into(),
        "DELETE FROM relay.packet_parts".into(),
        // requests, sites, tables, positions, history
        "INSERT INTO relay.sync_requests (site, reason) VALUES ('s2', 'resync')".into(),
        "INSERT INTO relay.sync_requests (site, reason, served_at) VALUES ('s1', 'resync', now())".into(),
        "UPDATE relay.sync_requests SET served_at = now()".into(),
        "DELETE FROM relay.sync_requests".into(),
        "INSERT INTO relay.sites (code) VALUES ('s3')".into(),
        "UPDATE relay.sites SET role = NULL".into(),
        "DELETE FROM relay.sites".into(),
        "UPDATE relay.tables SET route = 'all'".into(),
        "DELETE FROM relay.tables".into(),
        "INSERT INTO relay.capture_state (origin, slot, lsn) VALUES ('ho', 'x', '0/0')".into(),
        "UPDATE relay.capture_state SET lsn = '0/0'".into(),
        "DELETE FROM relay.schema_history".into(),
        "CREATE TABLE relay.mine (x int)".into(),
        "ALTER TABLE relay.packets DISABLE ROW LEVEL SECURITY".into(),
        "SET ROLE postgres".into(),
    ];
    for sql in &forbidden {
        match s1.execute(sql.as_str(), &[]).await {
            Err(_) => {}
            Ok(n) => assert_eq!(n, 0, "s1's role changed rows: {sql}"),
        }
    }
    // Recomputing statuses from the acks changes nothing.
    s1.batch_execute("SELECT relay.settle(array(SELECT id FROM relay.packets))")
        .await
        .unwrap();
    bed.ok(0, &["ho", "sync", "--once"]).await;
    assert_eq!(
        relay_record(&bed).await,
        before,
        "the relay or HO's record changed"
    );
    assert_eq!(
        bed.ok(0, &["status"]).await.lines().count(),
        status_before.lines().count()
    );

    // Its status shows its own site only.
    let out = bed
        .command(0, &["status"])
        .env("RELAYSYNC__RELAY__URL", &s1_url)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{status}");
    assert_eq!(
        status.lines().filter(|l| l.starts_with("s1 ")).count(),
        1,
        "{status}"
    );
    assert_eq!(
        status.lines().filter(|l| l.starts_with("s2 ")).count(),
        0,
        "{status}"
    );

    // What s1 may do it still does: fetch, apply, ack, ask for a resync.
    bed.ok(0, &["pos", "sync", "--once"]).await;
    bed.ok(0, &["pos", "resync"]).await;
    assert_eq!(
        count(
            &bed.relay().await,
            &format!("SELECT count(*) FROM relay.acks WHERE site = 's1' AND packet_id = {mine} AND status = 'PROCESSED'")
        )
        .await,
        1
    );
    assert_same(
        &bed,
        0,
        "SELECT * FROM public.prices WHERE site_code = 's1'",
        "SELECT * FROM public.prices",
    )
    .await;

    // Its acks: PROCESSED is final, FAILED carries its error.
    let processed = "SELECT count(*) FROM relay.acks WHERE site = 's1' AND status = 'PROCESSED'";
    let acked = count(&bed.relay().await, processed).await;
    assert!(acked > 0);
    for sql in [
        "UPDATE relay.acks SET status = 'FAILED'",
        "UPDATE relay.acks SET status = 'FAILED', error = 'forged'",
        "UPDATE relay.acks SET rows = rows + 1",
    ] {
        assert!(
            s1.execute(sql, &[]).await.is_err(),
            "s1 rewrote its acks: {sql}"
        );
    }
    assert!(s1
        .execute(
            &format!("INSERT INTO relay.acks (packet_id, site, status) VALUES ({mine}, 's1', 'FAILED') ON CONFLICT DO NOTHING"),
            &[]
        )
        .await
        .is_err());
    assert_eq!(count(&bed.relay().await, processed).await, acked);

    // A verify run for s2 alone: s1 reads none of its hashes, not even
    // those for every site.
    bed.ok(0, &["verify", "--site", "s2"]).await;
    bed.ok(0, &["ho", "sync", "--once"]).await;
    assert!(
        count(
            &bed.relay().await,
            "SELECT count(*) FROM relay.verify_expected"
        )
        .await
            > 0
    );
    assert_eq!(
        count(&s1, "SELECT count(*) FROM relay.verify_expected").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_add_creates_a_role_and_site_remove_revokes_it_with_its_pending_work() {
    let bed = bed_with_plain_owner("siterole").await;
    bed.register().await;
    bed.sync_all().await;
    // A role made by `site add`, password from a file.
    let file = bed.dir.join("pw");
    std::fs::write(&file, "Secret-from-file\n").unwrap();
    let code = "Shop-7.b";
    // With every log line on: neither the password nor its SCRAM verifier
    // appears.
    let added = bed
        .command(
            0,
            &[
                "site",
                "add",
                code,
                "--password-file",
                file.to_str().unwrap(),
            ],
        )
        .env("RELAYSYNC_LOG", "trace")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&added.stdout).into_owned();
    let log = String::from_utf8_lossy(&added.stderr).into_owned();
    assert!(added.status.success(), "{log}");
    assert!(log.contains("DEBUG"), "the log is on: {log}");
    assert!(!out.contains("Secret-from-file"), "{out}");
    let relay = bed.relay().await;
    let role = "relaysync_site_shop_7_b";
    let superuser = client(&bed.relay_url.replacen(
        &format!("{}_owner@", bed.name),
        "postgres@",
        1,
    ))
    .await;
    let verifier: String = superuser
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&role],
        )
        .await
        .unwrap()
        .get(0);
    assert!(verifier.starts_with("SCRAM-SHA-256$"));
    let hash = verifier.rsplit(':').next().unwrap();
    for secret in ["Secret-from-file", hash] {
        assert!(!log.contains(secret), "the log holds a secret: {log}");
    }
    let member = format!(
        "SELECT count(*) FROM pg_roles r WHERE r.rolname = '{role}' AND r.rolcanlogin AND NOT r.rolsuper
           AND pg_has_role(r.oid, 'relaysync_site', 'MEMBER')"
    );
    assert_eq!(count(&relay, &member).await, 1);
    // A second site whose code maps to the same role is refused, and the
    // fix it names works.
    let refused = bed.run(0, &["site", "add", "shop_7.b"]).await;
    assert!(!refused.status.success());
    let advice = String::from_utf8_lossy(&refused.stderr);
    let own = advice
        .split("--role ")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .unwrap_or_else(|| panic!("no role named in: {advice}"));
    assert_ne!(own, role, "{advice}");
    relay
        .batch_execute(&format!("CREATE ROLE {own} LOGIN PASSWORD 'x'"))
        .await
        .unwrap();
    bed.ok(0, &["site", "add", "shop_7.b", "--role", own]).await;
    bed.ok(0, &["site", "remove", "shop_7.b"]).await;
    relay
        .batch_execute(&format!("DROP ROLE {own}"))
        .await
        .unwrap();
    // A generated password, printed once.
    let out = bed.ok(0, &["site", "add", "gen-1"]).await;
    assert!(out
        .lines()
        .any(|l| l.contains("relaysync_site_gen_1") && l.contains("shown once")));

    // Pending work for the new site, then its removal.
    bed.ho()
        .await
        .batch_execute(&format!(
            "INSERT INTO public.prices VALUES ('{code}', 1, 9.5), ('s1', 1, 1.5)"
        ))
        .await
        .unwrap();
    bed.ok(0, &["ho", "sync", "--once"]).await;
    let for_code = format!("SELECT count(*) FROM relay.packets WHERE '{code}' = ANY (targets)");
    assert!(count(&relay, &for_code).await > 0);
    bed.ok(0, &["site", "remove", code]).await;
    assert_eq!(count(&relay, &for_code).await, 0);
    for q in [
        format!("SELECT count(*) FROM relay.packet_parts WHERE target = '{code}'"),
        format!("SELECT count(*) FROM relay.sync_requests WHERE site = '{code}'"),
        format!("SELECT count(*) FROM relay.sites WHERE code = '{code}'"),
        format!("SELECT count(*) FROM pg_roles WHERE rolname = '{role}'"),
    ] {
        assert_eq!(count(&relay, &q).await, 0, "{q}");
    }
    // s1's share of the same packets still arrives, and once gen-1 (which
    // never synced) is gone too, HO sees every packet acked.
    bed.ok(0, &["site", "remove", "gen-1"]).await;
    bed.sync_all().await;
    assert_same(
        &bed,
        0,
        "SELECT * FROM public.prices WHERE site_code = 's1'",
        "SELECT * FROM public.prices",
    )
    .await;
    assert_eq!(
        count(
            &relay,
            "SELECT count(*) FROM relay.packets WHERE direction = 'down' AND status <> 'PROCESSED'"
        )
        .await,
        0
    );
    // A bound role is only revoked: it stays, no longer a site role.
    bed.ok(0, &["site", "remove", "s2"]).await;
    let bound = format!("{}_s2", bed.name);
    assert_eq!(
        count(
            &relay,
            &format!("SELECT count(*) FROM pg_roles r WHERE r.rolname = '{bound}' AND NOT pg_has_role(r.oid, 'relaysync_site', 'MEMBER')")
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sites_acking_one_packet_take_turns_and_it_ends_processed() {
    let bed = bed_with_plain_owner("acks").await;
    bed.register().await;
    bed.sync_all().await;
    bed.ho()
        .await
        .batch_execute("INSERT INTO public.items VALUES (7, 'seven')")
        .await
        .unwrap();
    bed.ok(0, &["ho", "sync", "--once"]).await;
    let relay = bed.relay().await;
    let packet = count(&relay, "SELECT max(id) FROM relay.packets").await;
    let urls = bed.site_relay_urls.lock().unwrap().clone();
    let (a, b) = (client(&urls["s1"]).await, client(&urls["s2"]).await);
    let ack = |site: &str| {
        format!(
            "INSERT INTO relay.acks (packet_id, site, status) VALUES ({packet}, '{site}', 'PROCESSED')"
        )
    };
    // Both acks written, both transactions open: each holds its ack's key
    // lock on the packet. The first to settle must not wait for the other.
    a.batch_execute(&format!("BEGIN; {}", ack("s1")))
        .await
        .unwrap();
    b.batch_execute(&format!("BEGIN; {}", ack("s2")))
        .await
        .unwrap();
    let settle = format!("SELECT relay.settle(ARRAY[{packet}]::int8[])");
    tokio::time::timeout(Duration::from_secs(5), a.batch_execute(&settle))
        .await
        .expect("settling does not wait for the other site's open ack")
        .unwrap();
    let b_settles = tokio::spawn(async move {
        b.batch_execute(&format!("{settle}; COMMIT")).await.unwrap();
    });
    a.batch_execute("COMMIT").await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), b_settles)
        .await
        .expect("the second settle follows the first commit")
        .unwrap();
    let status: String = relay
        .query_one("SELECT status FROM relay.packets WHERE id = $1", &[&packet])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "PROCESSED");
}

/// The statement a setup error advises (the first `…` after "run: ").
fn advised(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "expected a setup error");
    let err = String::from_utf8_lossy(&out.stderr);
    err.split("run: `")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .unwrap_or_else(|| panic!("no statement advised: {err}"))
        .to_string()
}

/// Setup errors a DBA meets on a least-privilege setup name the statement
/// that fixes them, and running it does: a relay owner without CREATEROLE
/// (setup relay, site add), workers run as another role than the one that
/// ran `setup ho`, a publication that lacks only publish_via_partition_root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_errors_name_the_statement_that_fixes_them() {
    let bed = Bed::new("advice", SCHEMA, TABLES, "").await;
    // A relay server of its own: its group role does not exist yet.
    let server = relaysync_cluster::Cluster::start("test-relay-plain", &[]).unwrap();
    let admin = client(&server.url("postgres")).await;
    let owned = |owner: &str| {
        let owner = owner.to_string();
        let admin = &admin;
        let server = &server;
        async move {
            for statement in [
                format!("CREATE ROLE {owner} LOGIN"),
                format!("CREATE DATABASE {owner}"),
                format!("GRANT CREATE ON DATABASE {owner} TO {owner}"),
            ] {
                admin.batch_execute(&statement).await.unwrap();
            }
            server
                .url(&owner)
                .replacen("postgres@", &format!("{owner}@"), 1)
        }
    };
    let as_relay = |url: &str, args: &[&str]| {
        let mut cmd = bed.command(0, args);
        cmd.env("RELAYSYNC__RELAY__URL", url);
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
    };
    let first = owned("plain_owner").await;
    let out = as_relay(&first, &["setup", "relay"]).await.unwrap();
    admin.batch_execute(&advised(&out)).await.unwrap();
    assert!(as_relay(&first, &["setup", "relay"])
        .await
        .unwrap()
        .status
        .success());
    // A second relay database: the group exists, but site add makes roles.
    let second = owned("plain_owner2").await;
    assert!(as_relay(&second, &["setup", "relay"])
        .await
        .unwrap()
        .status
        .success());
    let out = as_relay(&second, &["site", "add", "shop-9"]).await.unwrap();
    admin.batch_execute(&advised(&out)).await.unwrap();
    assert!(as_relay(&second, &["site", "add", "shop-9"])
        .await
        .unwrap()
        .status
        .success());

    // HO set up by a superuser, its worker run as a role of its own.
    bed.setup().await;
    let ho = bed.ho().await;
    let role = format!("{}_ho", bed.name);
    ho.batch_execute(&format!("CREATE ROLE {role} LOGIN REPLICATION"))
        .await
        .unwrap();
    let ho_as_role = bed.ho_url.replacen("postgres@", &format!("{role}@"), 1);
    let sync = || {
        let mut cmd = bed.command(0, &["ho", "sync", "--once"]);
        cmd.env("RELAYSYNC__HO__URL", &ho_as_role);
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
    };
    // Its schema relaysync, then the synced tables it reads.
    for _ in 0..2 {
        let out = sync().await.unwrap();
        ho.batch_execute(&advised(&out)).await.unwrap();
    }
    let out = sync().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A publication of the right tables without publish_via_partition_root,
    // owned by another role: the advice sets that option only.
    let other = Bed::new("advice_pub", SCHEMA, TABLES, "").await;
    let ho = other.ho().await;
    let role = format!("{}_ho", other.name);
    ho.batch_execute(&format!(
        "CREATE PUBLICATION {p} FOR TABLE public.items, public.prices;
         CREATE ROLE {role} LOGIN REPLICATION; GRANT CREATE ON DATABASE {p} TO {role};",
        p = other.name
    ))
    .await
    .unwrap();
    other.ok(0, &["setup", "relay"]).await;
    let ho_as_role = other.ho_url.replacen("postgres@", &format!("{role}@"), 1);
    let setup = || {
        let mut cmd = other.command(0, &["setup", "ho"]);
        cmd.env("RELAYSYNC__HO__URL", &ho_as_role);
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
    };
    let statement = advised(&setup().await.unwrap());
    assert!(!statement.contains("SET TABLE"), "{statement}");
    ho.batch_execute(&statement).await.unwrap();
    let out = setup().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

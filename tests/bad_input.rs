//! Bad input gives one clear line naming the fix, a non-zero exit, no panic,
//! and no half-made state.

mod common;

use std::process::Output;

use common::*;
use relaysync_cluster::Cluster;

const SCHEMA: &str = "
CREATE TABLE public.items (id int PRIMARY KEY, name text);
CREATE TABLE public.nokey (a int, b text);
";

fn assert_one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected a failure, got success: {stderr}"
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_name_the_fix() {
    let bed = Bed::new("badcfg", SCHEMA, &[("public.items", "all")], "").await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_relaysync"))
        .args(["--config", "/nonexistent/relaysync.toml", "setup", "relay"])
        .output()
        .unwrap();
    assert_one_line_error(&out, "config file /nonexistent/relaysync.toml not found");

    std::fs::write(&bed.config, "[ho\nurl = ").unwrap();
    assert_one_line_error(&bed.run(0, &["setup", "relay"]).await, "relaysync.toml");

    std::fs::write(
        &bed.config,
        "[relay]\nurll = \"postgres://x@127.0.0.1/db\"\n",
    )
    .unwrap();
    assert_one_line_error(&bed.run(0, &["setup", "relay"]).await, "unknown field");

    std::fs::write(
        &bed.config,
        "[relay]\nurl = \"postgres://x@127.0.0.1/db\"\n[[tables]]\nname = \"items\"\n",
    )
    .unwrap();
    assert_one_line_error(
        &bed.run(0, &["setup", "relay"]).await,
        "schema-qualified, e.g. public.items",
    );

    std::fs::write(
        &bed.config,
        "[relay]\nurl = \"postgres://x@127.0.0.1/db\"\n[sync]\ninterval = \"often\"\n",
    )
    .unwrap();
    assert_one_line_error(&bed.run(0, &["setup", "relay"]).await, "[sync] interval");

    // A section the command needs is missing.
    std::fs::write(
        &bed.config,
        "[relay]\nurl = \"postgres://x@127.0.0.1/db\"\n",
    )
    .unwrap();
    assert_one_line_error(
        &bed.run(0, &["ho", "sync", "--once"]).await,
        "no [ho] section",
    );

    // An environment variable overrides the file.
    bed.write_config(&[("public.items", "all")], "");
    let mut cmd = bed.command(0, &["setup", "relay"]);
    cmd.env(
        "RELAYSYNC__RELAY__URL",
        "postgres://postgres@127.0.0.1:1/relay",
    );
    assert_one_line_error(
        &cmd.output().unwrap(),
        "cannot connect to the relay database at 127.0.0.1:1/relay",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_database() {
    let bed = Bed::new("unreachable", SCHEMA, &[("public.items", "all")], "").await;
    bed.ok(0, &["setup", "relay"]).await;
    let mut cmd = bed.command(0, &["setup", "ho"]);
    cmd.env("RELAYSYNC__HO__URL", "postgres://postgres@127.0.0.1:1/ho");
    assert_one_line_error(&cmd.output().unwrap(), "check [ho] url");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_level_not_logical() {
    let replica = Cluster::start("test-replica", &["wal_level = replica"]).unwrap();
    replica.create_database("ho").await.unwrap();
    let bed = Bed::new("wal_level", SCHEMA, &[("public.items", "all")], "").await;
    client(&replica.url("ho"))
        .await
        .batch_execute(SCHEMA)
        .await
        .unwrap();
    bed.ok(0, &["setup", "relay"]).await;
    let mut cmd = bed.command(0, &["setup", "ho"]);
    cmd.env("RELAYSYNC__HO__URL", replica.url("ho"));
    assert_one_line_error(
        &cmd.output().unwrap(),
        "wal_level is 'replica' at HO; set wal_level = logical in postgresql.conf and restart",
    );
    let ho = client(&replica.url("ho")).await;
    assert_eq!(count(&ho, "SELECT count(*) FROM pg_publication").await, 0);
    assert_eq!(
        count(
            &ho,
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'relaysync'"
        )
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_without_key_is_refused_before_anything_is_created() {
    let bed = Bed::new(
        "nokey",
        SCHEMA,
        &[("public.items", "all"), ("public.nokey", "all")],
        "",
    )
    .await;
    bed.ok(0, &["setup", "relay"]).await;
    assert_one_line_error(
        &bed.run(0, &["setup", "ho"]).await,
        "table public.nokey has no primary key; add one (ALTER TABLE \"public\".\"nokey\" ADD PRIMARY KEY (…)) or run ALTER TABLE \"public\".\"nokey\" REPLICA IDENTITY FULL",
    );
    let ho = bed.ho().await;
    assert_eq!(
        count(
            &ho,
            "SELECT count(*) FROM pg_publication WHERE pubname = current_database()"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &ho,
            "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &ho,
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'relaysync'"
        )
        .await,
        0
    );
    // REPLICA IDENTITY FULL is accepted.
    ho.batch_execute("ALTER TABLE public.nokey REPLICA IDENTITY FULL")
        .await
        .unwrap();
    bed.ok(0, &["setup", "ho"]).await;
    // Setup is idempotent.
    bed.ok(0, &["setup", "ho"]).await;
    bed.ok(0, &["setup", "relay"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_column_problems() {
    let bed = Bed::new(
        "badroute",
        "CREATE TABLE public.prices (id int PRIMARY KEY, site_code text);",
        &[("public.prices", "column:store")],
        "",
    )
    .await;
    bed.ok(0, &["setup", "relay"]).await;
    assert_one_line_error(&bed.run(0, &["setup", "ho"]).await, "has no column store");
    bed.write_config(&[("public.prices", "column:site_code")], "");
    assert_one_line_error(&bed.run(0, &["setup", "ho"]).await, "REPLICA IDENTITY FULL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_problems() {
    let bed = Bed::new("badsite", SCHEMA, &[("public.items", "all")], "").await;
    bed.ok(0, &["setup", "relay"]).await;
    assert_one_line_error(
        &bed.run(0, &["site", "add", "no spaces"]).await,
        "site code 'no spaces' is not valid",
    );
    // Nothing works before setup, and the message says which setup.
    assert_one_line_error(
        &bed.run(0, &["setup", "pos"]).await,
        "relaysync site add s1",
    );
    bed.add_site("s1").await;
    assert_one_line_error(
        &bed.run(0, &["ho", "sync", "--once"]).await,
        "run `relaysync setup ho` first",
    );
    assert_one_line_error(
        &bed.run(0, &["pos", "sync", "--once"]).await,
        "run `relaysync setup pos` first",
    );
    bed.ok(0, &["setup", "ho"]).await;
    // A site's URL pointing at HO's database: the fix is named, and HO's
    // database gets nothing of a site's.
    for args in [&["pos", "sync", "--once"][..], &["setup", "pos"]] {
        let mut cmd = bed.command(0, args);
        cmd.env("RELAYSYNC__POS__URL", &bed.ho_url);
        assert_one_line_error(&cmd.output().unwrap(), "[pos] url");
    }
    assert_eq!(
        count(
            &bed.ho().await,
            "SELECT count(*) FROM pg_class WHERE relname = 'site' AND relnamespace = 'relaysync'::regnamespace"
        )
        .await,
        0
    );
    // A site code far too long is not echoed whole.
    let long = "x".repeat(5000);
    let out = bed.run(0, &["site", "add", &long]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.len() < 400, "{} bytes", out.stderr.len());
    // A site table that lacks a column HO has.
    bed.site(0)
        .await
        .batch_execute("ALTER TABLE public.items DROP COLUMN name")
        .await
        .unwrap();
    assert_one_line_error(
        &bed.run(0, &["setup", "pos"]).await,
        "lacks column name; run ALTER TABLE \"public\".\"items\" ADD COLUMN \"name\" text",
    );
    assert_eq!(
        count(
            &bed.site(0).await,
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'relaysync'"
        )
        .await,
        0
    );
    bed.site(0)
        .await
        .batch_execute("ALTER TABLE public.items ADD COLUMN name text")
        .await
        .unwrap();
    bed.ok(0, &["setup", "pos"]).await;
    // A site that is not registered.
    let mut cmd = bed.command(0, &["pos", "sync", "--once"]);
    cmd.env("RELAYSYNC__POS__SITE", "nowhere");
    assert_one_line_error(
        &cmd.output().unwrap(),
        "site 'nowhere' is not registered in the relay; run `relaysync site add nowhere`",
    );
    // The same database cannot serve two sites.
    bed.add_site("s9").await;
    let mut cmd = bed.command(0, &["setup", "pos"]);
    cmd.env("RELAYSYNC__POS__SITE", "s9");
    cmd.env("RELAYSYNC__RELAY__URL", &bed.relay_url);
    assert_one_line_error(&cmd.output().unwrap(), "this database belongs to site 's1'");
}

#[test]
fn help_explains_the_commands() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_relaysync"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "setup",
        "site",
        "ho",
        "pos",
        "status",
        "demo",
        "RELAYSYNC__SECTION__KEY",
    ] {
        assert!(help.contains(word), "--help lacks {word}: {help}");
    }
}

/// A part swapped for another valid one (fewer rows than the relay says it
/// holds) is FAILED as damaged and never applied; restored, it applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swapped_part_is_failed_as_damaged_never_applied() {
    let bed = Bed::new("swapped", SCHEMA, &[("public.items", "all")], "").await;
    bed.setup().await;
    let ho = bed.ho().await;
    ho.batch_execute("INSERT INTO public.items VALUES (0, 'first')")
        .await
        .unwrap();
    bed.sync_all().await;
    ho.batch_execute("INSERT INTO public.items SELECT g, 'n' || g FROM generate_series(1, 20) g")
        .await
        .unwrap();
    bed.ok(0, &["ho", "sync", "--once"]).await;
    let relay = bed.relay().await;
    let last = "(SELECT max(packet_id) FROM relay.packet_parts)";
    damage_parts(
        &relay,
        last,
        &format!(
            "(SELECT arrow_ipc FROM relay.packet_parts
               WHERE packet_id < {last} AND table_name = 'public.items' AND row_count = 1
               ORDER BY packet_id DESC LIMIT 1)"
        ),
    )
    .await;
    let out = bed.run(0, &["pos", "sync", "--once"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        count(&relay, "SELECT count(*) FROM relay.acks WHERE site = 's1' AND status = 'FAILED' AND error LIKE '%damaged%'").await,
        1
    );
    assert_eq!(
        count(&bed.site(0).await, "SELECT count(*) FROM public.items").await,
        1
    );
    restore_parts(&relay).await;
    bed.ok(0, &["pos", "sync", "--once"]).await;
    assert_same(
        &bed,
        0,
        "SELECT * FROM public.items",
        "SELECT * FROM public.items",
    )
    .await;
}

//! `relaysync doctor`: problems made on purpose on real clusters, each
//! found with its fix; a healthy setup is found healthy.

mod common;

use common::*;
use serde_json::Value;

const SCHEMA: &str = "
CREATE TABLE public.items (id int PRIMARY KEY, name text);
CREATE TABLE public.prices (id int PRIMARY KEY, price numeric);";

async fn doctor(bed: &Bed) -> (Option<i32>, Value) {
    let out = bed.run(0, &["doctor", "--json"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {stdout} {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), report)
}

/// The checks that found something, with their severity.
fn found(report: &Value) -> Vec<(String, String)> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["severity"].as_str().unwrap().to_string(),
                f["check"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn bounded_wal(bed: &Bed) {
    let ho = bed.ho().await;
    ho.batch_execute("ALTER SYSTEM SET max_slot_wal_keep_size = '10GB'")
        .await
        .unwrap();
    ho.batch_execute("SELECT pg_reload_conf()").await.unwrap();
}

async fn bed(name: &str) -> Bed {
    let bed = Bed::new(
        name,
        SCHEMA,
        &[("public.items", "all"), ("public.prices", "all")],
        "",
    )
    .await;
    bed.sign().await;
    bed.setup().await;
    bounded_wal(&bed).await;
    bed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_setup_is_healthy() {
    let bed = bed("dochealthy").await;
    let (code, report) = doctor(&bed).await;
    assert_eq!(report["healthy"], true, "{report}");
    assert_eq!(code, Some(0));
    for check in [
        "wal_level",
        "slot",
        "publication",
        "keys",
        "column_drift",
        "relay_schema",
        "sites",
        "tls",
        "signing",
    ] {
        assert!(
            report["checked"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c == check),
            "{check} not checked: {report}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_problems_are_found_worst_first() {
    let bed = bed("docthree").await;
    // 1. The publication lost a table.
    let ho = bed.ho().await;
    ho.batch_execute(&format!(
        "ALTER PUBLICATION \"{}\" DROP TABLE public.prices",
        bed.name
    ))
    .await
    .unwrap();
    // 2. HO's table changed after setup.
    ho.batch_execute("ALTER TABLE public.items ADD COLUMN color text")
        .await
        .unwrap();
    // 3. A site fails a packet.
    bed.site(1)
        .await
        .batch_execute("ALTER TABLE public.items ADD CONSTRAINT short CHECK (length(name) < 5)")
        .await
        .unwrap();
    ho.batch_execute("INSERT INTO public.items (id, name) VALUES (9, 'far too long')")
        .await
        .unwrap();
    bed.ok(0, &["ho", "sync", "--once"]).await;
    assert!(!bed
        .run(1, &["pos", "sync", "--once"])
        .await
        .status
        .success());

    let (code, report) = doctor(&bed).await;
    assert_eq!(code, Some(1), "{report}");
    // What a DBA reads (shown with --nocapture).
    let text = bed.run(0, &["doctor"]).await;
    println!("{}", String::from_utf8_lossy(&text.stdout));
    let found = found(&report);
    for check in ["publication", "column_drift", "sites"] {
        assert!(
            found.contains(&("error".to_string(), check.to_string())),
            "{check} not found: {report}"
        );
    }
    let first_warning = found.iter().position(|(s, _)| s == "warning");
    let last_error = found.iter().rposition(|(s, _)| s == "error");
    if let (Some(w), Some(e)) = (first_warning, last_error) {
        assert!(e < w, "worst first: {report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_slot_and_relay_schema_are_found() {
    let bed = Bed::new("docempty", SCHEMA, &[("public.items", "all")], "").await;
    let (code, report) = doctor(&bed).await;
    assert_eq!(code, Some(1));
    let found = found(&report);
    assert!(
        found.contains(&("error".into(), "relay_schema".into())),
        "{report}"
    );
    assert!(found.contains(&("error".into(), "slot".into())), "{report}");
    assert!(
        found.contains(&("error".into(), "publication".into())),
        "{report}"
    );
}

/// A site configured as the README says (no `[ho]`, the relay reached as
/// the site's own role) checks the relay schema like HO does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_reaching_the_relay_as_its_role_checks_the_relay_schema() {
    let bed = bed("docsite").await;
    let relay_url = bed.site_relay_urls.lock().unwrap()["s1"].clone();
    let path = bed.dir.join("site.toml");
    std::fs::write(
        &path,
        format!(
            "[relay]\nurl = \"{relay_url}\"\n[pos]\nsite = \"s1\"\nurl = \"{}\"\ntrust = \"{}.pub\"\n\
             [[tables]]\nname = \"public.items\"\n[[tables]]\nname = \"public.prices\"\n",
            bed.site_urls[0],
            bed.key("ho")
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_relaysync"))
        .arg("--config")
        .arg(&path)
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {stdout} {}", String::from_utf8_lossy(&out.stderr)));
    assert!(
        report["checked"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "relay_schema"),
        "{report}"
    );
    assert_eq!(found(&report), Vec::<(String, String)>::new(), "{report}");
    assert_eq!(out.status.code(), Some(0), "{report}");
}

/// A setup without keys works, and the doctor says its packets are
/// unsigned, at HO and at the site.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_packets_are_a_warning() {
    let bed = Bed::new("docunsigned", SCHEMA, &[("public.items", "all")], "").await;
    bed.setup().await;
    bounded_wal(&bed).await;
    let (_, report) = doctor(&bed).await;
    let signing: Vec<_> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == "signing")
        .map(|f| f["severity"].as_str().unwrap())
        .collect();
    assert_eq!(signing, ["warning", "warning"], "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_behind_its_keys_is_a_warning() {
    // pagila's customer: the key's default names a sequence made apart.
    let bed = Bed::new(
        "docseq",
        &pagila_customer(),
        &[("public.customer", "all")],
        "",
    )
    .await;
    bed.sign().await;
    bed.setup().await;
    bounded_wal(&bed).await;
    let sequences = |report: &Value| {
        found(report)
            .into_iter()
            .filter(|(_, check)| check == "sequences")
            .map(|(severity, _)| severity)
            .collect::<Vec<_>>()
    };
    let (code, report) = doctor(&bed).await;
    assert_eq!(code, Some(0), "{report}");
    assert!(sequences(&report).is_empty(), "{report}");
    // Keys loaded by hand at HO, the sequence left behind them.
    let ho = bed.ho().await;
    ho.batch_execute(
        "INSERT INTO public.customer (customer_id, store_id, first_name, last_name, address_id)
         VALUES (1, 1, 'a', 'l', 1), (2, 1, 'b', 'l', 1)",
    )
    .await
    .unwrap();
    let (_, report) = doctor(&bed).await;
    assert_eq!(sequences(&report), ["warning"], "{report}");
    ho.batch_execute("SELECT setval('public.customer_customer_id_seq', 2)")
        .await
        .unwrap();
    let (_, report) = doctor(&bed).await;
    assert!(sequences(&report).is_empty(), "{report}");
    // At a site, `setup pos` names the sequence behind too.
    let site = bed.site(0).await;
    site.batch_execute(
        "INSERT INTO public.customer (customer_id, store_id, first_name, last_name, address_id)
         VALUES (100, 1, 'by hand', 'l', 1)",
    )
    .await
    .unwrap();
    let named = |out: std::process::Output| {
        String::from_utf8_lossy(&out.stdout).contains("customer_customer_id_seq")
    };
    assert!(named(bed.run(0, &["setup", "pos"]).await));
    site.batch_execute("SELECT setval('public.customer_customer_id_seq', 100)")
        .await
        .unwrap();
    assert!(!named(bed.run(0, &["setup", "pos"]).await));
}

//! `--json`: every command's summary as one JSON object on stdout.

mod common;

use common::*;
use serde_json::Value;

const SCHEMA: &str = "CREATE TABLE public.items (id int PRIMARY KEY, name text);";

async fn json(bed: &Bed, site: usize, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = bed.ok(site, &all).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON object: {out}");
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_status_and_events_print_one_json_object() {
    let bed = Bed::new("json", SCHEMA, &[("public.items", "all")], "").await;
    bed.setup().await;
    bed.ho()
        .await
        .batch_execute("INSERT INTO public.items VALUES (1, 'a'), (2, 'b'); UPDATE public.items SET name = 'c' WHERE id = 1;")
        .await
        .unwrap();

    let ho = json(&bed, 0, &["ho", "sync", "--once"]).await;
    assert_eq!(
        ho["captured"]["transactions"], 1,
        "one simple query, one transaction: {ho}"
    );
    assert_eq!(ho["captured"]["changes"], 3, "{ho}");
    assert_eq!(ho["merged"]["failed"], Value::Null, "{ho}");

    let pos = json(&bed, 0, &["pos", "sync", "--once"]).await;
    assert_eq!(pos["site"], "s1");
    assert!(pos["applied"]["packets"].as_u64().unwrap() >= 1, "{pos}");
    assert_eq!(pos["applied"]["rows"], 2, "compacted per key: {pos}");
    assert_eq!(pos["applied"]["failed"], Value::Null, "{pos}");
    assert_same(
        &bed,
        0,
        "SELECT * FROM public.items",
        "SELECT * FROM public.items",
    )
    .await;

    json(&bed, 0, &["ho", "sync", "--once"]).await;
    let status = json(&bed, 0, &["status"]).await;
    let sites = status["sites"].as_array().unwrap();
    let state = |code: &str| {
        sites
            .iter()
            .find(|s| s["site"] == code)
            .map(|s| s["status"].as_str().unwrap().to_string())
    };
    assert_eq!(state("s1").as_deref(), Some("Success"), "{status}");
    assert_eq!(state("s2").as_deref(), Some("In progress"), "{status}");

    let events = json(&bed, 0, &["events"]).await;
    assert!(events["events"].as_array().unwrap().is_empty(), "{events}");

    // One site's tables.
    let tables = json(&bed, 0, &["status", "--site", "s1"]).await;
    let items = &tables["tables"][0];
    assert_eq!(items["table"], "public.items", "{tables}");
    assert_eq!(items["status"], "Success", "{tables}");
    assert_eq!(
        items["full_sync_rows"], 0,
        "the first full sync found no rows: {tables}"
    );
    assert_eq!(items["pending"], 0, "{tables}");
    assert!(items["last_delta"].as_i64().is_some(), "{tables}");
    let s2 = json(&bed, 0, &["status", "--site", "s2"]).await;
    assert_eq!(s2["tables"][0]["status"], "In progress", "{s2}");
    assert_eq!(s2["tables"][0]["pending"], 1, "{s2}");

    // HO's sent data and the site's received data.
    let sent = json(&bed, 0, &["packets"]).await;
    let sent = sent["packets"].as_array().unwrap().clone();
    assert_eq!(sent.len(), 2, "the full sync and the delta: {sent:?}");
    let uploaded = json(&bed, 0, &["packets", "--status", "uploaded"]).await;
    assert_eq!(
        uploaded["packets"].as_array().unwrap().len(),
        1,
        "s2 has not applied the delta: {uploaded}"
    );
    let for_s1 = json(&bed, 0, &["packets", "--site", "s1", "--since", "1h"]).await;
    assert_eq!(for_s1["packets"].as_array().unwrap().len(), 2, "{for_s1}");
    // A site registered since was a target of none of them (the delta
    // went to every site registered then).
    bed.add_site("s3").await;
    let for_s3 = json(&bed, 0, &["packets", "--site", "s3"]).await;
    assert_eq!(for_s3["packets"], serde_json::json!([]), "{for_s3}");
    let unknown = bed.run(0, &["packets", "--site", "s9"]).await;
    assert_eq!(unknown.status.code(), Some(1));
    let received = json(&bed, 0, &["packets", "--pos"]).await;
    let received = received["packets"].as_array().unwrap().clone();
    assert_eq!(received.len(), 2, "{received:?}");
    assert!(
        received.iter().all(|p| p["status"] == "PROCESSED"),
        "{received:?}"
    );
    let bad = bed.run(0, &["packets", "--status", "DONE"]).await;
    assert_eq!(bad.status.code(), Some(1));
}

/// A site that applied packets is never "Not started": acks rewritten to
/// FAILED without an error text (as a relay could hold them from before it
/// kept acks moving forward only) make it Failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_that_applied_packets_is_never_not_started() {
    let bed = Bed::new("started", SCHEMA, &[("public.items", "all")], "").await;
    bed.setup().await;
    bed.relay()
        .await
        .batch_execute(
            "ALTER TABLE relay.acks DISABLE TRIGGER ack_moves;
             UPDATE relay.acks SET status = 'FAILED', error = NULL WHERE site = 's1';
             ALTER TABLE relay.acks ENABLE TRIGGER ack_moves;",
        )
        .await
        .unwrap();
    let status = json(&bed, 0, &["status"]).await;
    let s1 = status["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["site"] == "s1")
        .unwrap();
    assert_eq!(s1["status"], "Failed", "{status}");
    assert!(s1["error"].as_str().is_some(), "{status}");
}

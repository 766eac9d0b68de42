//! PostgreSQL's own logical replication, the other system: a publication at
//! HO and one subscription per site database, switched on while it runs its
//! workloads; and the size of the pgoutput stream relaysync's packets are
//! compared with.

use relaysync::error::{DbContext, Result};
use tokio_postgres::Client;

use super::rig::{sql, Rig};

/// A publication at HO and one subscription per site, created disabled.
pub(super) async fn subscribe(rig: &Rig) -> Result<()> {
    let ho = sql(&rig.ho.url("ho")).await?;
    let k = rig.codes.len();
    ho.batch_execute("CREATE PUBLICATION native_pub FOR TABLE public.bench_native")
        .await
        .ctx(|| "creating the native publication".into())?;
    for i in 0..k {
        let db = format!("native_{i:02}");
        sql(&rig.site.url(&db))
            .await?
            .batch_execute(&format!(
                "CREATE SUBSCRIPTION native_{i:02} CONNECTION 'host=127.0.0.1 port={} dbname=ho user=postgres'
                 PUBLICATION native_pub WITH (copy_data = false, enabled = false)",
                rig.ho.port()
            ))
            .await
            .ctx(|| "creating a native subscription".into())?;
    }
    Ok(())
}

/// Enables or disables every subscription.
pub(super) async fn set_native(rig: &Rig, enabled: bool) -> Result<()> {
    for i in 0..rig.codes.len() {
        sql(&rig.site.url(&format!("native_{i:02}")))
            .await?
            .batch_execute(&format!(
                "ALTER SUBSCRIPTION native_{i:02} {}",
                if enabled { "ENABLE" } else { "DISABLE" }
            ))
            .await
            .ctx(|| "switching a native subscription".into())?;
    }
    Ok(())
}

/// The bytes of the pgoutput stream for relaysync's bulk insert, read back
/// through a slot made for the purpose.
pub(super) async fn pgoutput_bytes(ho: &Client, from_slot: &str, upto: &str) -> Result<f64> {
    let row = ho
        .query_one(
            "SELECT coalesce(sum(length(data)), 0)::float8,
                    count(*) FILTER (WHERE get_byte(data, 0) IN (73, 85, 68))::float8
               FROM pg_logical_slot_get_binary_changes($1, $2::text::pg_lsn, NULL,
                    'proto_version', '1', 'publication_names', 'relaysync')",
            &[&from_slot, &upto],
        )
        .await
        .ctx(|| "reading the pgoutput stream".into())?;
    let (bytes, inserts): (f64, f64) = (row.get(0), row.get(1));
    Ok(if inserts > 0.0 {
        bytes / inserts
    } else {
        f64::NAN
    })
}

/// The cascaded peer, native replication through an intermediate server as
/// relaysync goes through its relay: a database on the relay's cluster
/// subscribes to HO's publication and publishes what it applies; one
/// database per site (`cascade_NN`) subscribes to it. Made when its runs
/// start (its slots start there), enabled.
pub(super) async fn cascade(rig: &Rig) -> Result<()> {
    rig.relay
        .create_database("cascade_mid")
        .await
        .map_err(crate::demo::cluster_error)?;
    let mid = sql(&rig.relay.url("cascade_mid")).await?;
    // The intermediate table has no applied_at: each site's is its own.
    // Its apply worker commits synchronously, as the relay's server does:
    // a walsender sends only WAL flushed to disk, and with the apply
    // workers' default (off) the WAL writer flushes it every
    // wal_writer_delay (200 ms), which the sites would wait for. (CREATE
    // SUBSCRIPTION makes its slot: a statement of its own.)
    for statement in [
        super::rig::table_sql("bench_native", false),
        "CREATE PUBLICATION cascade_pub FOR TABLE public.bench_native".into(),
        format!(
            "CREATE SUBSCRIPTION cascade_mid CONNECTION 'host=127.0.0.1 port={} dbname=ho user=postgres'
             PUBLICATION native_pub WITH (copy_data = false, synchronous_commit = on)",
            rig.ho.port()
        ),
    ] {
        mid.batch_execute(&statement)
            .await
            .ctx(|| "creating the cascade's intermediate database".into())?;
    }
    for i in 0..rig.codes.len() {
        let db = format!("cascade_{i:02}");
        rig.site
            .create_database(&db)
            .await
            .map_err(crate::demo::cluster_error)?;
        let site = sql(&rig.site.url(&db)).await?;
        for statement in [
            super::rig::table_sql("bench_native", true),
            format!(
                "CREATE SUBSCRIPTION cascade_{i:02} CONNECTION 'host=127.0.0.1 port={} dbname=cascade_mid user=postgres'
                 PUBLICATION cascade_pub WITH (copy_data = false)",
                rig.relay.port()
            ),
        ] {
            site.batch_execute(&statement)
                .await
                .ctx(|| "creating a cascaded site".into())?;
        }
    }
    Ok(())
}

/// Disables the cascade's subscriptions (its runs are over).
pub(super) async fn stop_cascade(rig: &Rig) -> Result<()> {
    sql(&rig.relay.url("cascade_mid"))
        .await?
        .batch_execute("ALTER SUBSCRIPTION cascade_mid DISABLE")
        .await
        .ctx(|| "disabling the cascade".into())?;
    for i in 0..rig.codes.len() {
        sql(&rig.site.url(&format!("cascade_{i:02}")))
            .await?
            .batch_execute(&format!("ALTER SUBSCRIPTION cascade_{i:02} DISABLE"))
            .await
            .ctx(|| "disabling the cascade".into())?;
    }
    Ok(())
}

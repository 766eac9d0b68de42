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

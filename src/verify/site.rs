//! The site's side of verify: hash its tables in the transaction that
//! applies the verify packet, compare with HO's, record and log.

use tokio_postgres::Client;

use super::{compare, hash_query, Bucket, Hashed, TEXT_FORMS};
use crate::book::events;
use crate::error::{db_message, Result};
use crate::postgres::literal;
use crate::protocol::VerifyStatus;
use crate::relay::{Relay, VerifyResult};

/// Checks verify packet `packet` at `site`, inside the open apply
/// transaction; Err(message) when the site's database refused a query (the
/// packet fails with it).
pub(crate) async fn check(
    client: &Client,
    relay: &Relay,
    site: &str,
    packet: i64,
) -> Result<std::result::Result<Vec<VerifyResult>, String>> {
    let expected = relay.expected(packet, site).await?;
    let published = relay.published_tables().await?;
    let mut results = Vec::new();
    if let Err(e) = client.batch_execute(TEXT_FORMS).await {
        return Ok(Err(db_message(&e)));
    }
    for e in &expected {
        let Some(t) = published.iter().find(|t| t.name == e.table_name) else {
            continue;
        };
        let columns: Vec<String> = t.columns.iter().map(|(c, _)| c.clone()).collect();
        let hashed = Hashed {
            name: &t.name,
            columns: &columns,
            keys: &t.key_columns,
        };
        let rows = match client
            .query(&hash_query(&hashed, &literal(site), ""), &[])
            .await
        {
            Ok(rows) => rows,
            Err(err) => return Ok(Err(format!("verify {}: {}", t.name, db_message(&err)))),
        };
        let mine: Vec<Bucket> = rows
            .iter()
            .map(|r| Bucket {
                bucket: r.get("bucket"),
                rows: r.get("rows"),
                hash: r.get("hash"),
            })
            .collect();
        let c = compare(&e.buckets, &mine);
        let result = VerifyResult {
            packet_id: packet,
            site: site.to_string(),
            table_name: t.name.clone(),
            checked_at: String::new(),
            status: if c.equal {
                VerifyStatus::Equal
            } else {
                VerifyStatus::Drift
            },
            ho_rows: c.ho_rows,
            site_rows: c.site_rows,
            detail: c.detail,
        };
        if !c.equal {
            tracing::warn!(table = %t.name, detail = %result.detail, "verify found drift");
            if let Err(err) =
                events::log(client, site, &t.name, events::DRIFT, &result.detail).await
            {
                return Ok(Err(db_message(&err)));
            }
        }
        relay.record_verify(&result).await?;
        results.push(result);
    }
    Ok(Ok(results))
}

//! The site's side of verify: hash its tables in the transaction that
//! applies the verify packet, compare with HO's, record and log.

use tokio_postgres::Client;

use super::{compare, hash_query, Bucket, Hashed, TEXT_FORMS};
use crate::book::events;
use crate::error::{db_message, Result};
use crate::postgres::{ident, literal, qualified};
use crate::protocol::VerifyStatus;
use crate::relay::{Relay, VerifyResult};
use crate::route::tree::{foreign_keys, ForeignKey};

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
    let names: Vec<&str> = published.iter().map(|t| t.name.as_str()).collect();
    let fks: Vec<ForeignKey> = foreign_keys(client, &names)
        .await?
        .into_iter()
        .filter(|f| names.contains(&f.parent.as_str()))
        .collect();
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
        let orphans = match orphans(client, &t.name, &fks).await {
            Ok(n) => n,
            Err(err) => return Ok(Err(format!("verify {}: {}", t.name, db_message(&err)))),
        };
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
            orphans,
        };
        if orphans > 0 {
            tracing::warn!(table = %t.name, orphans, "verify found rows whose referenced row this site does not hold");
        }
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

/// The rows of `table` at the site whose referenced row, through one of
/// the site's foreign keys `fks` from it, the site does not hold.
async fn orphans(
    client: &Client,
    table: &str,
    fks: &[ForeignKey],
) -> std::result::Result<i64, tokio_postgres::Error> {
    let missing: Vec<String> = fks
        .iter()
        .filter(|f| f.table == table)
        .map(|f| {
            let set = f
                .columns
                .iter()
                .map(|c| format!("c.{} IS NOT NULL", ident(c)))
                .collect::<Vec<_>>()
                .join(" AND ");
            let on = f
                .columns
                .iter()
                .zip(&f.references)
                .map(|(c, r)| format!("p.{} = c.{}", ident(r), ident(c)))
                .collect::<Vec<_>>()
                .join(" AND ");
            format!(
                "({set} AND NOT EXISTS (SELECT 1 FROM {} p WHERE {on}))",
                qualified(&f.parent)
            )
        })
        .collect();
    if missing.is_empty() {
        return Ok(0);
    }
    let q = format!(
        "SELECT count(*) FROM {} c WHERE {}",
        qualified(table),
        missing.join(" OR ")
    );
    Ok(client.query_one(&q, &[]).await?.get(0))
}

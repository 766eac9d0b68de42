//! Sequences behind the synced tables' key columns (owned, identity, or
//! named by a column's default) that would hand out a key the table holds
//! already: the next row made there fails with a duplicate key.

use super::Report;
use crate::config::Config;
use crate::error::chain;

const CHECK: &str = "sequences";

/// Checks the sequences of the synced and uploaded tables in the database
/// at `url` (`role`: `ho` or `pos`).
pub(super) async fn check(cfg: &Config, role: &'static str, url: &str, report: &mut Report) {
    let Ok(client) = crate::postgres::connect(role, url).await else {
        // The connection's own check reports it.
        return;
    };
    report.ran(CHECK);
    let mut tables: Vec<String> = cfg.tables.iter().map(|t| t.name.clone()).collect();
    tables.extend(cfg.upstream.iter().map(|t| t.name.clone()));
    tables.sort();
    tables.dedup();
    match crate::apply::sequence::behind(&client, &tables).await {
        Ok(behind) => {
            for b in behind {
                report.warn(
                    CHECK,
                    format!(
                        "at {role}, sequence {} of {}.{} hands out {} next but the column holds keys up to {}: the next row made there fails with a duplicate key; relaysync moves it when it applies rows if its role may (GRANT SELECT, UPDATE ON SEQUENCE {} TO the role), or run SELECT setval('{}', {})",
                        b.sequence, b.table, b.column, b.next, b.largest, b.sequence, b.sequence, b.largest
                    ),
                );
            }
        }
        Err(e) => report.error(
            CHECK,
            format!("reading the sequences at {role}: {}", chain(&e)),
        ),
    }
}

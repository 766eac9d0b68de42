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
    match crate::apply::sequence::behind(&client, &cfg.written_tables()).await {
        Ok(behind) => {
            for b in behind {
                report.warn(CHECK, b.warning(role));
            }
        }
        Err(e) => report.error(
            CHECK,
            format!("reading the sequences at {role}: {}", chain(&e)),
        ),
    }
}

//! Waiting on the systems measured: polls of a cheap condition, with a
//! deadline.

use std::time::{Duration, Instant};

use relaysync::error::{DbContext, Error, Result};
use tokio_postgres::Client;

/// How often a wait polls.
const POLL: Duration = Duration::from_millis(20);
/// How long the sites may take to catch up with a workload.
pub(super) const LONG: Duration = Duration::from_secs(3600);

pub(super) async fn one_i64(c: &Client, q: &str) -> Result<i64> {
    Ok(c.query_one(q, &[]).await.ctx(|| q.to_string())?.get(0))
}

/// Waits until `query` gives `want` at every client, then checks `count`
/// gives `rows` at each; returns when the first wait ended. The probe is
/// cheap (a key looked up); counting every row each poll would compete
/// with the systems measured for the machine's cores.
pub(super) async fn wait_loaded(
    clients: &[Client],
    query: &str,
    want: i64,
    count: &str,
    rows: i64,
) -> Result<Instant> {
    let done = wait_sites(clients, query, want, LONG).await?;
    for c in clients {
        let got = one_i64(c, count).await?;
        if got != rows {
            return Err(Error::Setup(format!(
                "bench: `{count}` gives {got}, not {rows}"
            )));
        }
    }
    Ok(done)
}

/// Waits until `query` gives `want` at every site; returns when.
pub(super) async fn wait_sites(
    sites: &[Client],
    query: &str,
    want: i64,
    timeout: Duration,
) -> Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut all = true;
        for s in sites {
            if one_i64(s, query).await? != want {
                all = false;
                break;
            }
        }
        if all {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            return Err(Error::Setup(format!(
                "bench: the sites did not reach {want} for `{query}` within {timeout:?}"
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the slots named like `pattern` have confirmed HO's current position.
pub(super) async fn catch_up(ho: &Client, pattern: &str) -> Result<()> {
    ho.batch_execute("SELECT pg_logical_emit_message(false, 'relaysync-bench', 'catch up')")
        .await
        .ctx(|| "writing a WAL marker".into())?;
    let target: String = ho
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .ctx(|| "reading the WAL position".into())?
        .get(0);
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let behind = one_i64(
            ho,
            &format!(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE '{pattern}'
                  AND (confirmed_flush_lsn IS NULL OR confirmed_flush_lsn < '{target}'::pg_lsn)"
            ),
        )
        .await?;
        if behind == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Setup(format!(
                "bench: slots {pattern} did not catch up"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

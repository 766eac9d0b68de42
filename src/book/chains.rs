//! `relaysync.chains` at a site and at HO: the last signed packet applied
//! in each chain the applier follows (see `seal`), written in the
//! transaction that applies it; at HO also the last number HO stored in
//! each of its own chains (origin `ho`), so a relay that goes back is seen
//! after a restart too.

use tokio_postgres::Client;

use crate::error::{DbContext, Result};
use crate::seal::{ChainKey, Head};

/// Every chain head recorded.
pub(crate) async fn load(client: &Client) -> Result<Vec<(ChainKey, Head)>> {
    let rows = client
        .query(
            "SELECT origin, target, seq, hash FROM relaysync.chains",
            &[],
        )
        .await
        .ctx(|| "reading relaysync.chains".into())?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                (r.get("origin"), r.get("target")),
                Head {
                    seq: r.get("seq"),
                    hash: r.get("hash"),
                },
            )
        })
        .collect())
}

/// Records `heads` (inside the applier's transaction).
pub(crate) async fn save(client: &Client, heads: &[(ChainKey, Head)]) -> Result<()> {
    upsert(client, heads, "").await
}

/// Records `heads` of the chains this side writes, each only forward.
pub(crate) async fn raise(client: &Client, heads: &[(ChainKey, Head)]) -> Result<()> {
    upsert(client, heads, "WHERE c.seq < EXCLUDED.seq").await
}

/// Writes `heads`, replacing a recorded head where `only` (SQL) holds.
async fn upsert(client: &Client, heads: &[(ChainKey, Head)], only: &str) -> Result<()> {
    if heads.is_empty() {
        return Ok(());
    }
    let origins: Vec<&str> = heads.iter().map(|((o, _), _)| o.as_str()).collect();
    let targets: Vec<&str> = heads.iter().map(|((_, t), _)| t.as_str()).collect();
    let seqs: Vec<i64> = heads.iter().map(|(_, h)| h.seq).collect();
    let hashes: Vec<&[u8]> = heads.iter().map(|(_, h)| h.hash.as_slice()).collect();
    client
        .execute(
            &format!(
                "INSERT INTO relaysync.chains AS c (origin, target, seq, hash)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::bytea[])
                 ON CONFLICT (origin, target) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash {only}"
            ),
            &[&origins, &targets, &seqs, &hashes],
        )
        .await
        .ctx(|| "writing relaysync.chains".into())?;
    Ok(())
}

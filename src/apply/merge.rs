//! Merging site data into HO: the up packets, applied with each upstream
//! table's policy, set-based. A row HO cannot store (a constraint it
//! breaks) goes to `relaysync.rejects` with its error and the rest of the
//! packet is applied: only then are rows tried one by one, to find it.

use tokio_postgres::Client;

use super::applier::{Applier, PartError};
use super::merge_sql::statements;
use super::stage::{stage_part, Stage, Stages};
use crate::book::{self, events};
use crate::config::{Merge, UpstreamConfig};
use crate::error::{db_message, DbContext, Result};
use crate::packet::{Op, Part};
use crate::postgres::{literal, Tx};
use crate::protocol::Target;
use crate::relay::{Ack, PacketInfo, Relay};

/// HO merging the sites' up packets.
pub(crate) struct HoMerger {
    upstream: Vec<UpstreamConfig>,
    /// Whether this session is marked with the merge origin.
    origin_set: bool,
    /// Rows merged and rejected in the open transaction.
    counts: (u64, u64),
    /// …and in the last committed one.
    committed: (u64, u64),
}

impl HoMerger {
    pub(crate) fn new(upstream: &[UpstreamConfig]) -> HoMerger {
        HoMerger {
            upstream: upstream.to_vec(),
            origin_set: false,
            counts: (0, 0),
            committed: (0, 0),
        }
    }
}

impl Applier for HoMerger {
    fn target(&self) -> &Target {
        &Target::Ho
    }

    async fn position(&self, client: &Client) -> Result<i64> {
        book::ho::merged_through(client).await
    }

    async fn unsent_acks(&self, _: &Client, relay: &Relay, applied: i64) -> Result<Vec<Ack>> {
        Ok(relay
            .unacked(crate::protocol::Direction::Up, &Target::Ho, applied)
            .await?
            .iter()
            .map(|p| Ack::processed(p.id, p.row_count))
            .collect())
    }

    /// What HO merges carries the merge origin down to the sites.
    async fn prepare(&mut self, client: &Client) -> Result<()> {
        if !self.origin_set {
            super::use_origin(client, crate::MERGE_ORIGIN, "relaysync setup ho").await?;
            self.origin_set = true;
        }
        Ok(())
    }

    fn begin(&mut self, _: &[PacketInfo], _: Option<u64>) {
        self.counts = (0, 0);
    }

    async fn apply(
        &mut self,
        client: &Client,
        p: &PacketInfo,
        part: &Part,
        stages: &mut Stages,
    ) -> std::result::Result<u64, PartError> {
        let Some(policy) = self.upstream.iter().find(|u| u.name == part.table) else {
            return Err(PartError::Refused(format!(
                "{} is not in HO's [[upstream]]; add it with its merge policy",
                part.table
            )));
        };
        super::schema::up_columns(client, part, p.origin.as_str(), stages).await?;
        let append = policy.merge == Merge::Append;
        // New rows to append go straight into the table by COPY; should one
        // be there already (a replay) or be refused, the COPY is undone and
        // the staged merge below skips or rejects it row by row.
        let copied = match append && inserts_only(part) {
            true => super::replica::copy_inserts(client, part, stages).await?,
            false => None,
        };
        let (rows, merged, rejected) = match copied {
            Some(n) => (n, n, 0),
            None => {
                // Appending reads the stage once, in any plan: no statistics needed.
                let st = stage_part(client, part, stages, !append).await?;
                let (merged, rejected) =
                    merge_part(client, &st, &part.table, p.origin.as_str(), p.id, policy).await?;
                (st.rows, merged, rejected)
            }
        };
        if merged > 0 {
            stages.sequences.catch_up(client, part).await?;
        }
        self.counts.0 += merged;
        self.counts.1 += rejected;
        crate::telemetry::rows_merged(&part.table, merged, rejected);
        Ok(rows)
    }

    async fn commit(&mut self, tx: Tx<'_>, packets: &[PacketInfo], _: &[Ack]) -> Result<()> {
        let last = packets.last().map_or(0, |p| p.id);
        tx.commit_after(&book::ho::merged(last))
            .await
            .ctx(|| "HO: recording the merged packets".into())?;
        self.committed = std::mem::take(&mut self.counts);
        Ok(())
    }

    fn take_counts(&mut self) -> (u64, u64) {
        std::mem::take(&mut self.committed)
    }
}

async fn run_all(
    client: &Client,
    sql: &[String],
) -> std::result::Result<u64, tokio_postgres::Error> {
    let mut n = 0u64;
    for q in sql {
        let row = client.query_one(q.as_str(), &[]).await?;
        n += row.get::<_, i64>(0) as u64;
    }
    Ok(n)
}

/// Whether a part holds new rows only (no update, delete or truncate).
fn inserts_only(part: &Part) -> bool {
    part.has_op(Op::Insert)
        && !part.has_op(Op::Update)
        && !part.has_op(Op::Delete)
        && !part.has_truncate()
        && !part.has_unchanged()
}

/// Merges one staged part: set-based; on an error, row by row to reject
/// only the rows HO cannot store. Returns (merged, rejected).
pub(super) async fn merge_part(
    client: &Client,
    st: &Stage,
    table: &str,
    site: &str,
    packet: i64,
    policy: &UpstreamConfig,
) -> std::result::Result<(u64, u64), tokio_postgres::Error> {
    let seq_col = &st.meta.seq;
    client.batch_execute("SAVEPOINT relaysync_bulk").await?;
    match run_all(client, &statements(st, table, site, policy, "true")).await {
        Ok(n) => {
            client
                .batch_execute("RELEASE SAVEPOINT relaysync_bulk")
                .await?;
            return Ok((n, 0));
        }
        Err(e) => {
            tracing::info!(table, site, error = %db_message(&e), "bulk merge failed; isolating the rows HO cannot store");
            client
                .batch_execute("ROLLBACK TO SAVEPOINT relaysync_bulk")
                .await?;
        }
    }
    let seqs: Vec<i64> = client
        .query(
            &format!("SELECT {seq_col} FROM {} ORDER BY {seq_col}", st.name),
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let (mut merged, mut rejected) = (0, 0);
    for seq in seqs {
        client.batch_execute("SAVEPOINT relaysync_row").await?;
        match run_all(
            client,
            &statements(st, table, site, policy, &format!("s.{seq_col} = {seq}")),
        )
        .await
        {
            Ok(n) => {
                merged += n;
                client
                    .batch_execute("RELEASE SAVEPOINT relaysync_row")
                    .await?;
            }
            Err(e) => {
                client
                    .batch_execute("ROLLBACK TO SAVEPOINT relaysync_row")
                    .await?;
                reject_row(client, st, table, site, packet, seq, &db_message(&e)).await?;
                rejected += 1;
            }
        }
    }
    Ok((merged, rejected))
}

/// Keeps a row HO cannot store in `relaysync.rejects`, with its error, and
/// logs it.
async fn reject_row(
    client: &Client,
    st: &Stage,
    table: &str,
    site: &str,
    packet: i64,
    seq: i64,
    error: &str,
) -> std::result::Result<(), tokio_postgres::Error> {
    let cols = st.cols.join(", ");
    let seq_col = &st.meta.seq;
    client
        .execute(
            &format!(
                "WITH r AS (SELECT {key} AS key, to_jsonb(x) AS row_data
                              FROM (SELECT {cols} FROM {stage} s WHERE {seq_col} = $1) x),
                      j AS ({rejects} SELECT $2, $3, $4, key, row_data, $5 FROM r)
                 {events} SELECT $2, $4, key, {event}, $5 FROM r",
                rejects = events::INSERT_REJECTS,
                events = events::INSERT,
                key = st.key_text("x"),
                stage = st.name,
                event = literal(events::REJECTED),
            ),
            &[&seq, &site, &packet, &table, &error],
        )
        .await?;
    Ok(())
}

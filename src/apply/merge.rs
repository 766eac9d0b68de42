//! Merging site data into HO: the up packets, applied with each upstream
//! table's policy, set-based. A row HO cannot store (a constraint it
//! breaks) goes to `relaysync.rejects` with its error and the rest of the
//! packet is applied: only then are rows tried one by one, to find it.

use tokio_postgres::Client;

use super::{part_failure, stage_part, Stage, Stages};
use crate::config::{Deletes, Merge, UpstreamConfig};
use crate::error::{db_message, DbContext, Result};
use crate::packet::read_part;
use crate::postgres::literal;
use crate::relay::{Ack, PacketInfo, Relay};

/// The event HO logs for each row merged from a site.
pub const EVENT_MERGED: &str = "User update succeeded (Device)";
/// The event HO logs for each row it could not store.
pub const EVENT_REJECTED: &str = "Fail to save to the server DB";

/// What one round of merging did.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub packets: u64,
    /// Rows the packets carried.
    pub rows: u64,
    /// Rows that changed something at HO.
    pub merged: u64,
    pub rejected: u64,
    /// The up packet HO stopped at, and why.
    pub failed: Option<(i64, String)>,
}

/// The statements that merge the staged rows selected by `filter` (an SQL
/// condition on `s`), each returning the number of rows it wrote.
fn statements(
    st: &Stage,
    table: &str,
    site: &str,
    policy: &UpstreamConfig,
    filter: &str,
) -> Vec<String> {
    let (target, stage) = (&st.target, &st.name);
    let cols = st.cols.join(", ");
    let s_cols = st
        .cols
        .iter()
        .map(|c| format!("s.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let non_key: Vec<&String> = st.cols.iter().filter(|c| !st.key.contains(c)).collect();
    let mut out = Vec::new();
    if policy.deletes == Deletes::Apply && !st.key.is_empty() {
        out.push(format!(
            "WITH d AS (DELETE FROM {target} t USING {stage} s
                         WHERE s.relaysync_op = 'D' AND {on} AND {filter} RETURNING 1)
             SELECT count(*) FROM d",
            on = st.key_match()
        ));
    }
    let upserts = format!("s.relaysync_op <> 'D' AND {filter}");
    let log = |rows: &str| {
        format!(
            "INSERT INTO relaysync.event_log (site, table_name, key, event, detail)
             SELECT {}, {}, m.key, {}, m.op FROM {rows} m",
            literal(site),
            literal(table),
            literal(EVENT_MERGED)
        )
    };
    let vacant = |t: &str| format!("({t} IS NULL OR {t}::text = '')");
    match policy.merge {
        Merge::Append => {
            out.push(format!(
                "WITH m AS (INSERT INTO {target} ({cols}) SELECT {s_cols} FROM {stage} s WHERE {upserts}
                            ON CONFLICT DO NOTHING RETURNING 1)
                 SELECT count(*) FROM m"
            ));
        }
        Merge::FillVacant | Merge::Upsert if !st.key.is_empty() => {
            let key_list = st.key.join(", ");
            // A site row that differs from HO's is written, so that HO's row
            // (filled, or as it was: HO's values win) goes back down and the
            // site converges; a row equal to HO's writes nothing.
            let changed: Vec<String> = non_key
                .iter()
                .map(|c| format!("t.{c}::text IS DISTINCT FROM EXCLUDED.{c}::text"))
                .collect();
            let set: Vec<String> = non_key
                .iter()
                .map(|c| {
                    if policy.merge == Merge::FillVacant {
                        format!(
                            "{c} = CASE WHEN {} AND NOT {} THEN EXCLUDED.{c} ELSE t.{c} END",
                            vacant(&format!("t.{c}")),
                            vacant(&format!("EXCLUDED.{c}"))
                        )
                    } else {
                        format!("{c} = EXCLUDED.{c}")
                    }
                })
                .collect();
            let conflict = if non_key.is_empty() {
                "DO NOTHING".to_string()
            } else {
                format!(
                    "DO UPDATE SET {} WHERE {}",
                    set.join(", "),
                    changed.join(" OR ")
                )
            };
            let key_text = st.key_text("t");
            // Rows whose unchanged TOAST values were not sent update what HO
            // has, column by column, never inserting.
            let (uset, uchanged): (Vec<String>, Vec<String>) = non_key
                .iter()
                .map(|c| {
                    let given = format!(
                        "NOT ({} = ANY(s.relaysync_unchanged))",
                        literal(c.trim_matches('"'))
                    );
                    let take = if policy.merge == Merge::FillVacant {
                        format!(
                            "{given} AND {} AND NOT {}",
                            vacant(&format!("t.{c}")),
                            vacant(&format!("s.{c}"))
                        )
                    } else {
                        given.clone()
                    };
                    (
                        format!("{c} = CASE WHEN {take} THEN s.{c} ELSE t.{c} END"),
                        format!("({given} AND t.{c}::text IS DISTINCT FROM s.{c}::text)"),
                    )
                })
                .unzip();
            out.push(format!(
                "WITH m AS (INSERT INTO {target} AS t ({cols})
                              SELECT {s_cols} FROM {stage} s WHERE {upserts} AND s.relaysync_unchanged IS NULL
                            ON CONFLICT ({key_list}) {conflict}
                            RETURNING {key_text} AS key, CASE WHEN xmax = 0 THEN 'I' ELSE 'U' END AS op),
                      e AS ({log})
                 SELECT count(*) FROM m",
                log = log("m")
            ));
            if !non_key.is_empty() {
                out.push(format!(
                    "WITH m AS (UPDATE {target} t SET {} FROM {stage} s
                                 WHERE {upserts} AND s.relaysync_unchanged IS NOT NULL AND {on} AND ({})
                                 RETURNING {key_text} AS key, 'U' AS op),
                          e AS ({log})
                     SELECT count(*) FROM m",
                    uset.join(", "),
                    uchanged.join(" OR "),
                    on = st.key_match(),
                    log = log("m")
                ));
            }
        }
        // Without a key there is nothing to merge into: insert.
        Merge::FillVacant | Merge::Upsert => {
            out.push(format!(
                "WITH m AS (INSERT INTO {target} ({cols}) SELECT {s_cols} FROM {stage} s WHERE {upserts} RETURNING 1)
                 SELECT count(*) FROM m"
            ));
        }
    }
    out
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

/// Merges one staged part: set-based; on an error, row by row to reject
/// only the rows HO cannot store. Returns (merged, rejected).
async fn merge_part(
    client: &Client,
    st: &Stage,
    table: &str,
    site: &str,
    packet: i64,
    policy: &UpstreamConfig,
) -> std::result::Result<(u64, u64), tokio_postgres::Error> {
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
            &format!(
                "SELECT relaysync_seq FROM {} ORDER BY relaysync_seq",
                st.name
            ),
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
            &statements(st, table, site, policy, &format!("s.relaysync_seq = {seq}")),
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
                let error = db_message(&e);
                let cols = st.cols.join(", ");
                client
                    .execute(
                        &format!(
                            "WITH r AS (SELECT {key} AS key, to_jsonb(x) AS row_data
                                          FROM (SELECT {cols} FROM {stage} s WHERE relaysync_seq = $1) x),
                                  j AS (INSERT INTO relaysync.rejects (site, packet_id, table_name, key, row_data, error)
                                        SELECT $2, $3, $4, key, row_data, $5 FROM r)
                             INSERT INTO relaysync.event_log (site, table_name, key, event, detail)
                             SELECT $2, $4, key, {event}, $5 FROM r",
                            key = st.key_text("x"),
                            stage = st.name,
                            event = literal(EVENT_REJECTED),
                        ),
                        &[&seq, &site, &packet, &table, &error],
                    )
                    .await?;
                rejected += 1;
            }
        }
    }
    Ok((merged, rejected))
}

/// Applies every up packet after HO's `applied_through`, in order, one group
/// per transaction with the new position; acks each to the relay.
pub async fn apply_up(
    client: &Client,
    relay: &Relay,
    upstream: &[UpstreamConfig],
) -> Result<Outcome> {
    let mut outcome = Outcome::default();
    let mut applied: i64 = client
        .query_one("SELECT applied_through FROM relaysync.up_state", &[])
        .await
        .ctx(|| "reading relaysync.up_state".into())?
        .get(0);
    // Acks a crash left unsent: HO applied these (they are at or below its position).
    let unacked: Vec<Ack> = relay
        .unacked("up", "ho", applied)
        .await?
        .iter()
        .map(|p| Ack {
            packet_id: p.id,
            status: "PROCESSED",
            rows: p.row_count,
            error: None,
        })
        .collect();
    relay.ack("ho", &unacked).await?;
    let mut origin_set = false;
    loop {
        let groups = relay.next_groups("up", "ho", applied).await?;
        if groups.is_empty() {
            break;
        }
        for group in groups {
            if !origin_set {
                // What HO merges carries this origin down to the sites.
                crate::ho::use_origin(client, crate::MERGE_ORIGIN, "ho").await?;
                origin_set = true;
            }
            match merge_group(client, relay, upstream, &group, &mut outcome).await? {
                Ok(acks) => {
                    applied = group.last().map_or(applied, |p| p.id);
                    relay.ack("ho", &acks).await?;
                }
                Err((packet, error)) => {
                    relay
                        .ack(
                            "ho",
                            &[Ack {
                                packet_id: packet,
                                status: "FAILED",
                                rows: 0,
                                error: Some(error.clone()),
                            }],
                        )
                        .await?;
                    outcome.failed = Some((packet, error));
                    return Ok(outcome);
                }
            }
        }
    }
    Ok(outcome)
}

async fn merge_group(
    client: &Client,
    relay: &Relay,
    upstream: &[UpstreamConfig],
    group: &[PacketInfo],
    outcome: &mut Outcome,
) -> Result<std::result::Result<Vec<Ack>, (i64, String)>> {
    client
        .batch_execute("BEGIN; SET LOCAL session_replication_role = replica;")
        .await
        .ctx(|| "HO: BEGIN".into())?;
    let mut acks = Vec::new();
    let mut stages = Stages::per_part();
    let mut counts = (0u64, 0u64, 0u64);
    let mut failure = None;
    'packets: for p in group {
        let mut rows = 0u64;
        for stored in relay.parts(p.id, "ho").await? {
            let part = match read_part(&stored.arrow_ipc) {
                Ok(part) => part,
                Err(e) => {
                    failure = Some((
                        p.id,
                        format!("part {} is not readable: {e}", stored.table_name),
                    ));
                    break 'packets;
                }
            };
            let Some(policy) = upstream.iter().find(|u| u.name == part.table) else {
                failure = Some((
                    p.id,
                    format!(
                        "{} is not in HO's [[upstream]]; add it with its merge policy",
                        part.table
                    ),
                ));
                break 'packets;
            };
            let result = async {
                let st = stage_part(client, &part, &mut stages, true).await?;
                let r = merge_part(client, &st, &part.table, &p.origin, p.id, policy).await?;
                client
                    .batch_execute(&format!("DROP TABLE {}", st.name))
                    .await?;
                Ok::<_, tokio_postgres::Error>((st.rows, r))
            }
            .await;
            match result {
                Ok((n, (merged, rejected))) => {
                    rows += n;
                    counts.0 += n;
                    counts.1 += merged;
                    counts.2 += rejected;
                }
                Err(e) => {
                    let error = part_failure(&stages, "HO: merging", &part.table, e)?;
                    failure = Some((p.id, error));
                    break 'packets;
                }
            }
        }
        acks.push(Ack {
            packet_id: p.id,
            status: "PROCESSED",
            rows: rows as i64,
            error: None,
        });
        crate::failpoint::hit("ho_mid_merge");
    }
    if let Some(f) = failure {
        client
            .batch_execute("ROLLBACK")
            .await
            .ctx(|| "HO: ROLLBACK".into())?;
        return Ok(Err(f));
    }
    let last = group.last().map_or(0, |p| p.id);
    client
        .execute(
            "UPDATE relaysync.up_state SET applied_through = $1",
            &[&last],
        )
        .await
        .ctx(|| "writing relaysync.up_state".into())?;
    client
        .batch_execute("COMMIT")
        .await
        .ctx(|| "HO: COMMIT".into())?;
    crate::failpoint::hit("ho_after_merge_commit");
    outcome.packets += acks.len() as u64;
    outcome.rows += counts.0;
    outcome.merged += counts.1;
    outcome.rejected += counts.2;
    Ok(Ok(acks))
}

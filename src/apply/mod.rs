//! Apply: loads the parts of a packet into a database inside the caller's
//! transaction, set-based. A part of new rows is COPYed straight into its
//! table; any other goes by COPY into a staging table, then one DELETE for
//! the deletes and one INSERT … ON CONFLICT for the upserts, setting only the
//! columns the change carries. Rows whose unchanged TOAST values were not
//! sent get an UPDATE that keeps the site's value of those columns.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::Client;

pub mod merge;

use crate::packet::{Op, Part};
use crate::postgres::{ident, literal, qualified};

/// Rows written per COPY chunk.
const CHUNK_BYTES: usize = 1 << 20;

/// A part loaded into a temporary staging table (dropped at commit): its
/// columns, then `relaysync_op`, `relaysync_unchanged`, `relaysync_origin`
/// and `relaysync_seq` (the row's place in the part).
pub(crate) struct Stage {
    pub name: String,
    pub target: String,
    /// The part's columns, quoted.
    pub cols: Vec<String>,
    /// The key columns, quoted.
    pub key: Vec<String>,
    pub rows: u64,
    /// Kept for the session: emptied, not dropped.
    pub kept: bool,
}

impl Stage {
    /// SQL that disposes of the table after use: a kept one is emptied at
    /// commit (or before its next load), any other is dropped.
    pub fn done(&self) -> String {
        if self.kept {
            String::new()
        } else {
            format!("DROP TABLE {};", self.name)
        }
    }

    /// `t.k = s.k AND …` over the key.
    pub fn key_match(&self) -> String {
        self.key
            .iter()
            .map(|k| format!("t.{k} = s.{k}"))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// The key as one text value, for logs.
    pub fn key_text(&self, alias: &str) -> String {
        if self.key.is_empty() {
            return "''".into();
        }
        format!(
            "concat_ws(',', {})",
            self.key
                .iter()
                .map(|k| format!("{alias}.{k}::text"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// Runs `copy` (a `COPY … FROM STDIN`) with the part's rows as `write` puts
/// them; returns the rows copied.
///
/// A COPY the server refuses at its start (before any row) leaves the
/// connection out of step: the client library has then sent one Sync too
/// many, and later replies would answer the wrong requests. `stages` is
/// marked so, and the caller must drop the connection without another
/// statement. (A refusal during the rows is clean.)
async fn copy_rows(
    client: &Client,
    copy: &str,
    part: &Part,
    write: fn(&Part, usize, &mut Vec<u8>),
    stages: &mut Stages,
) -> Result<u64, tokio_postgres::Error> {
    let sink = match client.copy_in(copy).await {
        Ok(sink) => sink,
        Err(e) => {
            stages.out_of_step = true;
            return Err(e);
        }
    };
    futures_util::pin_mut!(sink);
    let mut buf = Vec::with_capacity(CHUNK_BYTES + 4096);
    for b in 0..part.batch_count() {
        write(part, b, &mut buf);
        if buf.len() >= CHUNK_BYTES {
            sink.send(Bytes::from(std::mem::take(&mut buf))).await?;
        }
    }
    if !buf.is_empty() {
        sink.send(Bytes::from(buf)).await?;
    }
    sink.finish().await
}

/// What a part that failed to apply says of its packet: the error to record
/// as FAILED; or, when the connection is out of step (see [`copy_rows`]),
/// nothing: an error that makes the caller drop the connection, so that a
/// new one retries the packet. `doing` names the work: `site: applying`.
pub fn part_failure(
    stages: &Stages,
    doing: &str,
    table: &str,
    e: tokio_postgres::Error,
) -> crate::Result<String> {
    if stages.out_of_step() {
        return Err(crate::Error::Db {
            context: format!("{doing} {table} (the connection is dropped and the packet retried)"),
            source: e,
        });
    }
    Ok(format!("{table}: {}", crate::error::db_message(&e)))
}

/// The staging tables of one connection.
///
/// A site worker keeps one per table and column list for its whole session
/// (`ON COMMIT DELETE ROWS`): creating and dropping a temporary table costs
/// several times what applying a small part does. HO's merge makes a fresh
/// one per part, dropped at commit.
#[derive(Debug, Default)]
pub struct Stages {
    keep: bool,
    /// `target(columns)` → the kept table.
    kept: HashMap<String, String>,
    /// Kept tables created by the open transaction (a rollback drops them).
    created: Vec<String>,
    /// Kept tables loaded in the open transaction (emptied before reuse).
    loaded: HashSet<String>,
    made: usize,
    /// The connection is out of step (see [`copy_rows`]): drop it.
    out_of_step: bool,
}

impl Stages {
    /// Tables kept for the session.
    pub fn kept() -> Stages {
        Stages {
            keep: true,
            ..Stages::default()
        }
    }

    /// A fresh table per part, dropped at commit.
    pub fn per_part() -> Stages {
        Stages::default()
    }

    /// Whether the connection these tables live on must be dropped unused:
    /// a failure then says nothing about the data.
    pub fn out_of_step(&self) -> bool {
        self.out_of_step
    }

    /// The open transaction committed.
    pub fn committed(&mut self) {
        self.created.clear();
        self.loaded.clear();
    }

    /// The open transaction rolled back: the tables it made are gone.
    pub fn rolled_back(&mut self) {
        for key in self.created.drain(..) {
            self.kept.remove(&key);
        }
        self.loaded.clear();
    }

    /// Drops the kept tables, outside a transaction, so that the next part
    /// stages into tables shaped like the targets as they are now (a DBA may
    /// have altered one). Returns whether there were any.
    pub async fn reset(&mut self, client: &Client) -> bool {
        self.created.clear();
        self.loaded.clear();
        let names: Vec<String> = self.kept.drain().map(|(_, name)| name).collect();
        for name in &names {
            // The session may be gone; the tables are then gone with it.
            let _ = client
                .batch_execute(&format!("DROP TABLE IF EXISTS {name}"))
                .await;
        }
        !names.is_empty()
    }
}

/// COPYs a part's rows (truncate rows aside) into a staging table shaped
/// like the target's columns. `joined`: the statements that follow join the
/// stage with its target, so a large stage gets statistics for the planner
/// (an upsert alone reads it once in any plan and needs none).
pub(crate) async fn stage_part(
    client: &Client,
    part: &Part,
    stages: &mut Stages,
    joined: bool,
) -> Result<Stage, tokio_postgres::Error> {
    let target = qualified(&part.table);
    let cols: Vec<String> = part.columns.iter().map(|c| ident(&c.name)).collect();
    let col_list = cols.join(", ");
    let shape = format!("{target}({col_list})");
    let name = match stages.kept.get(&shape) {
        Some(name) if stages.keep => {
            let name = name.clone();
            if !stages.loaded.insert(name.clone()) {
                client.batch_execute(&format!("TRUNCATE {name}")).await?;
            }
            name
        }
        _ => {
            stages.made += 1;
            let name = format!("relaysync_stage_{}", stages.made);
            let on_commit = if stages.keep { "DELETE ROWS" } else { "DROP" };
            client
                .batch_execute(&format!(
                    "CREATE TEMP TABLE {name} ON COMMIT {on_commit} AS SELECT {col_list} FROM {target} WITH NO DATA;
                     ALTER TABLE {name} ADD COLUMN relaysync_op text, ADD COLUMN relaysync_unchanged text[],
                       ADD COLUMN relaysync_origin text,
                       ADD COLUMN relaysync_seq bigint GENERATED ALWAYS AS IDENTITY;"
                ))
                .await?;
            if stages.keep {
                stages.kept.insert(shape.clone(), name.clone());
                stages.created.push(shape);
                stages.loaded.insert(name.clone());
            }
            name
        }
    };
    let rows = copy_rows(
        client,
        &format!(
            "COPY {name} ({col_list}, relaysync_op, relaysync_unchanged, relaysync_origin) FROM STDIN"
        ),
        part,
        Part::write_copy_text,
        stages,
    )
    .await?;
    if joined && rows > 1000 {
        client.batch_execute(&format!("ANALYZE {name}")).await?;
    }
    Ok(Stage {
        name,
        target,
        cols,
        key: part.key.iter().map(|k| ident(k)).collect(),
        rows,
        kept: stages.keep,
    })
}

/// Applies one part at a site; returns the number of rows it carried (a
/// truncate is no row). Only the statements the part needs are run: most
/// parts have no deletes, no unchanged TOAST values and nothing HO merged.
pub async fn apply_part(
    client: &Client,
    site: &str,
    part: &Part,
    stages: &mut Stages,
) -> Result<u64, tokio_postgres::Error> {
    if part.has_truncate() {
        // DELETE rather than TRUNCATE: no lock upgrade, no foreign-key refusal
        // (replica mode leaves referential checks to the source).
        client
            .batch_execute(&format!("DELETE FROM {}", qualified(&part.table)))
            .await?;
    }
    if part.columns.is_empty() {
        return Ok(0);
    }
    let deletes = part.has_op(Op::Delete);
    let updates = part.has_op(Op::Update);
    let upserts = updates || part.has_op(Op::Insert);
    let unchanged = part.has_unchanged();
    let merged = part.has_origin(crate::MERGE_ORIGIN);
    if upserts && !updates && !deletes && !merged {
        if let Some(rows) = copy_inserts(client, part, stages).await? {
            return Ok(rows);
        }
    }
    let st = stage_part(client, part, stages, deletes || unchanged).await?;
    let (stage, target, cols) = (&st.name, &st.target, &st.cols);
    let col_list = cols.join(", ");
    let staged = st.rows;
    if staged == 0 {
        let done = st.done();
        if !done.is_empty() {
            client.batch_execute(&done).await?;
        }
        return Ok(0);
    }

    let key = &st.key;
    let mut sql = String::new();
    if key.is_empty() {
        // No key: a delete removes one row equal in every column.
        let row_t = cols
            .iter()
            .map(|c| format!("t.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let row_s = cols
            .iter()
            .map(|c| format!("s.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        if deletes {
            sql.push_str(&format!(
                "DELETE FROM {target} WHERE ctid IN (
                   SELECT (SELECT t.ctid FROM {target} t WHERE ({row_t}) IS NOT DISTINCT FROM ({row_s}) LIMIT 1)
                     FROM {stage} s WHERE s.relaysync_op = 'D');"
            ));
        }
        if upserts {
            sql.push_str(&format!(
                "INSERT INTO {target} ({col_list}) SELECT {col_list} FROM {stage} WHERE relaysync_op <> 'D';"
            ));
        }
    } else {
        let on = st.key_match();
        let key_list = key.join(", ");
        let non_key: Vec<&String> = cols.iter().filter(|c| !key.contains(c)).collect();
        let conflict = if non_key.is_empty() {
            "DO NOTHING".to_string()
        } else {
            format!(
                "DO UPDATE SET {}",
                non_key
                    .iter()
                    .map(|c| format!("{c} = EXCLUDED.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        if deletes {
            sql.push_str(&format!(
                "DELETE FROM {target} t USING {stage} s WHERE s.relaysync_op = 'D' AND {on};"
            ));
        }
        if upserts {
            sql.push_str(&format!(
                "INSERT INTO {target} ({col_list}) SELECT {col_list} FROM {stage}
                  WHERE relaysync_op <> 'D' AND relaysync_unchanged IS NULL
                 ON CONFLICT ({key_list}) {conflict};"
            ));
        }
        if unchanged && !non_key.is_empty() {
            let keep = part
                .columns
                .iter()
                .filter(|c| !part.key.contains(&c.name))
                .map(|c| {
                    let q = ident(&c.name);
                    format!(
                        "{q} = CASE WHEN {} = ANY(s.relaysync_unchanged) THEN t.{q} ELSE s.{q} END",
                        literal(&c.name)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            sql.push_str(&format!(
                "UPDATE {target} t SET {keep} FROM {stage} s
                  WHERE s.relaysync_op <> 'D' AND s.relaysync_unchanged IS NOT NULL AND {on};"
            ));
        }
    }
    // Rows HO merged from a site come back down marked with its origin:
    // the site logs each one.
    if merged {
        let key_text = st.key_text("s");
        sql.push_str(&format!(
            "INSERT INTO relaysync.event_log (site, table_name, key, event, detail)
             SELECT {site}, {table}, {key_text}, 'User update succeeded (HO)', relaysync_op
               FROM {stage} s WHERE relaysync_origin = {origin} AND relaysync_op <> 'D';",
            site = literal(site),
            table = literal(&part.table),
            origin = literal(crate::MERGE_ORIGIN),
        ));
    }
    sql.push_str(&st.done());
    if !sql.is_empty() {
        client.batch_execute(&sql).await?;
    }
    Ok(staged)
}

/// Inserts a part of inserts only by COPY straight into its table (new rows,
/// a full sync's load): no staging, and COPY's batched inserts. Rows the
/// site has already (a replay after a crash, a snapshot that overlapped)
/// make it fail: it is then undone and the caller takes the staged upsert.
///
/// Whatever would refuse the COPY at its start (a missing column, no INSERT
/// privilege, a generated column, row-level security) is checked first, in
/// the same round trip as the savepoint, and sends the part to the staged
/// path, which reports it; the check's lock on the table keeps it so until
/// the COPY.
async fn copy_inserts(
    client: &Client,
    part: &Part,
    stages: &mut Stages,
) -> Result<Option<u64>, tokio_postgres::Error> {
    let target = qualified(&part.table);
    let cols = part
        .columns
        .iter()
        .map(|c| ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ");
    let check = client
        .simple_query(&format!(
            "SAVEPOINT relaysync_copy;
             INSERT INTO {target} ({cols}) SELECT {cols} FROM {target} WHERE false;
             SELECT row_security_active({})",
            literal(&target)
        ))
        .await;
    let copyable = match check {
        Ok(messages) => !messages.iter().any(
            |m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("t")),
        ),
        Err(e) => {
            tracing::debug!(table = %part.table, error = %crate::error::db_message(&e), "no COPY into the table; staging");
            false
        }
    };
    let copied = if copyable {
        let copy = format!("COPY {target} ({cols}) FROM STDIN");
        match copy_rows(client, &copy, part, Part::write_copy_data, stages).await {
            Ok(rows) => Some(rows),
            Err(e) if stages.out_of_step => return Err(e),
            Err(e) => {
                tracing::debug!(table = %part.table, error = %crate::error::db_message(&e), "COPY of new rows refused; upserting them");
                None
            }
        }
    } else {
        None
    };
    let end = if copied.is_some() {
        "RELEASE SAVEPOINT relaysync_copy"
    } else {
        "ROLLBACK TO SAVEPOINT relaysync_copy; RELEASE SAVEPOINT relaysync_copy"
    };
    client.batch_execute(end).await?;
    Ok(copied)
}

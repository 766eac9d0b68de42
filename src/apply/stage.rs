//! Staging: a part's rows COPYed into a temporary table shaped like its
//! target, from which set-based statements apply or merge them.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::Client;

use crate::packet::copy_binary::{BINARY_HEADER, BINARY_TRAILER};
use crate::packet::Part;
use crate::postgres::{ident, qualified};

/// Rows written per COPY chunk.
const CHUNK_BYTES: usize = 1 << 20;

/// The bookkeeping columns of a staging table, named so that no column of
/// the part has their name: `relaysync_op`, `relaysync_unchanged`,
/// `relaysync_origin`, `relaysync_seq`, or with `relaysync1_`, … when a
/// column of the table starts with `relaysync_`.
#[derive(Debug, Clone)]
pub(crate) struct MetaCols {
    pub(crate) op: String,
    pub(crate) unchanged: String,
    pub(crate) origin: String,
    pub(crate) seq: String,
}

impl MetaCols {
    /// The names for a table whose columns are `columns` (unquoted).
    pub(crate) fn for_columns(columns: &[&str]) -> MetaCols {
        let prefix = (0..)
            .map(|n| match n {
                0 => "relaysync_".to_string(),
                n => format!("relaysync{n}_"),
            })
            .find(|p| !columns.iter().any(|c| c.starts_with(p.as_str())))
            .expect("a free prefix");
        MetaCols {
            op: format!("{prefix}op"),
            unchanged: format!("{prefix}unchanged"),
            origin: format!("{prefix}origin"),
            seq: format!("{prefix}seq"),
        }
    }
}

/// A part loaded into a temporary staging table (dropped at commit): its
/// columns, then the bookkeeping columns ([`MetaCols`]): the operation, the
/// unchanged TOAST columns, the origin and the row's place in the part.
pub(crate) struct Stage {
    pub(crate) name: String,
    pub(crate) target: String,
    /// The part's columns, quoted.
    pub(crate) cols: Vec<String>,
    /// The key columns, quoted.
    pub(crate) key: Vec<String>,
    pub(crate) rows: u64,
    pub(crate) meta: MetaCols,
}

impl Stage {
    /// The columns as `alias.c, …`.
    pub(crate) fn cols_of(&self, alias: &str) -> String {
        self.cols
            .iter()
            .map(|c| format!("{alias}.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `t.k = s.k AND …` over the key.
    pub(crate) fn key_match(&self) -> String {
        self.key
            .iter()
            .map(|k| format!("t.{k} = s.{k}"))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// The key as one text value, for logs.
    pub(crate) fn key_text(&self, alias: &str) -> String {
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

/// How a part's rows go to COPY: text or binary, with the staging table's
/// bookkeeping columns or the target's columns alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CopyForm {
    pub(crate) binary: bool,
    pub(crate) meta: bool,
}

impl CopyForm {
    /// The `WITH` of the COPY statement.
    pub(crate) fn options(self) -> &'static str {
        if self.binary {
            " WITH (FORMAT binary)"
        } else {
            ""
        }
    }
}

/// Runs `copy` (a `COPY … FROM STDIN`) with the part's rows in `form`;
/// returns the rows copied.
///
/// A COPY the server refuses at its start (before any row) leaves the
/// connection out of step: the client library has then sent one Sync too
/// many, and later replies would answer the wrong requests. `stages` is
/// marked so, and the caller must drop the connection without another
/// statement. (A refusal during the rows is clean.)
pub(super) async fn copy_rows(
    client: &Client,
    copy: &str,
    part: &Part,
    form: CopyForm,
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
    if form.binary {
        buf.extend_from_slice(BINARY_HEADER);
    }
    for b in 0..part.batch_count() {
        match (form.binary, form.meta) {
            (true, meta) => part.write_copy_binary(b, meta, &mut buf),
            (false, true) => part.write_copy_text(b, &mut buf),
            (false, false) => part.write_copy_data(b, &mut buf),
        }
        if buf.len() >= CHUNK_BYTES {
            sink.send(Bytes::from(std::mem::take(&mut buf))).await?;
        }
    }
    if form.binary {
        buf.extend_from_slice(BINARY_TRAILER);
    }
    if !buf.is_empty() {
        sink.send(Bytes::from(buf)).await?;
    }
    sink.finish().await
}

/// Whether `part` goes into `target` in binary: every column of the part
/// has, in the target, exactly the type its Arrow form stands for. The
/// target's column types are read once per session (and again after
/// [`Stages::reset`]).
pub(super) async fn binary_fits(
    client: &Client,
    target: &str,
    part: &Part,
    stages: &mut Stages,
) -> Result<bool, tokio_postgres::Error> {
    if !stages.column_types.contains_key(target) {
        let rows = client
            .query(
                "SELECT a.attname::text AS name,
                        (CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END)::int8 AS type_oid
                   FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
                  WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped",
                &[&target],
            )
            .await?;
        let types = rows
            .iter()
            .map(|r| {
                (
                    r.get::<_, String>("name"),
                    r.get::<_, i64>("type_oid") as u32,
                )
            })
            .collect();
        stages.column_types.insert(target.to_string(), types);
    }
    let types = &stages.column_types[target];
    let oids: Option<Vec<u32>> = part
        .columns
        .iter()
        .map(|c| types.get(&c.name).copied())
        .collect();
    Ok(oids.is_some_and(|oids| part.copies_in_binary(&oids)))
}

/// The staging tables of one connection.
///
/// A site worker and HO's merge keep one per table and column list for the
/// whole session (`ON COMMIT DELETE ROWS`): creating and dropping a
/// temporary table costs several times what applying a small part does.
#[derive(Debug, Default)]
pub(crate) struct Stages {
    /// `target(columns)` → the kept table.
    kept: HashMap<String, String>,
    /// Kept tables created by the open transaction (a rollback drops them).
    created: Vec<String>,
    /// Kept tables loaded in the open transaction (emptied before reuse).
    loaded: HashSet<String>,
    /// The connection is out of step (see [`copy_rows`]): drop it.
    out_of_step: bool,
    /// The sequences behind the targets' columns.
    pub(crate) sequences: super::sequence::Sequences,
    /// Each target's column types (domains as their base type), by name.
    column_types: HashMap<String, HashMap<String, u32>>,
    /// Whether new rows may be COPYed straight into a target (`target(columns)`).
    pub(crate) copyable: HashMap<String, bool>,
    /// Table shapes the site's tables are known to follow (see
    /// [`super::schema::follow`]), with the columns the site leaves out;
    /// those seen by the open transaction.
    shapes: HashMap<String, Vec<String>>,
    shapes_new: Vec<(String, Vec<String>)>,
}

impl Stages {
    /// Whether the connection these tables live on must be dropped unused:
    /// a failure then says nothing about the data.
    pub(crate) fn out_of_step(&self) -> bool {
        self.out_of_step
    }

    /// The open transaction committed.
    pub(crate) fn committed(&mut self) {
        self.created.clear();
        self.loaded.clear();
        self.shapes.extend(self.shapes_new.drain(..));
    }

    /// The open transaction rolled back: the tables it made are gone.
    pub(crate) fn rolled_back(&mut self) {
        for key in self.created.drain(..) {
            self.kept.remove(&key);
        }
        self.loaded.clear();
        self.shapes_new.clear();
    }

    /// Whether the target's table is known to follow this shape: then the
    /// part columns it leaves out.
    pub(crate) fn follows(&self, shape: &str) -> Option<Vec<String>> {
        self.shapes.get(shape).cloned().or_else(|| {
            self.shapes_new
                .iter()
                .find(|(s, _)| s == shape)
                .map(|(_, left)| left.clone())
        })
    }

    /// The open transaction made the target's table follow this shape,
    /// leaving out the part columns `left_out`.
    pub(crate) fn seen_shape(&mut self, shape: String, left_out: Vec<String>) {
        self.shapes_new.push((shape, left_out));
    }

    /// What is known of `target` (quoted) is out of date: it was altered.
    /// Its kept staging tables are left to the session's end.
    pub(crate) fn forget(&mut self, target: &str) {
        let prefix = format!("{target}(");
        self.kept.retain(|k, _| !k.starts_with(&prefix));
        self.copyable
            .retain(|k, _| !k.starts_with(&prefix) && k != target);
        self.column_types.remove(target);
        self.sequences.clear();
    }

    /// Drops the kept tables, outside a transaction, so that the next part
    /// stages into tables shaped like the targets as they are now (a DBA may
    /// have altered one). Returns whether there were any.
    pub(crate) async fn reset(&mut self, client: &Client) -> bool {
        self.created.clear();
        self.loaded.clear();
        self.sequences.clear();
        self.column_types.clear();
        self.copyable.clear();
        self.shapes.clear();
        self.shapes_new.clear();
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
    let names: Vec<&str> = part.columns.iter().map(|c| c.name.as_str()).collect();
    let meta = MetaCols::for_columns(&names);
    let MetaCols {
        op,
        unchanged,
        origin,
        seq,
    } = &meta;
    let name = match stages.kept.get(&shape) {
        Some(name) => {
            let name = name.clone();
            if !stages.loaded.insert(name.clone()) {
                client.batch_execute(&format!("TRUNCATE {name}")).await?;
            }
            name
        }
        _ => {
            // Unique in the process: a session may outlive its Stages.
            static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            let name = format!("relaysync_stage_{n}");
            client
                .batch_execute(&format!(
                    "CREATE TEMP TABLE {name} ON COMMIT DELETE ROWS AS SELECT {col_list} FROM {target} WITH NO DATA;
                     ALTER TABLE {name} ADD COLUMN {op} text, ADD COLUMN {unchanged} text[],
                       ADD COLUMN {origin} text,
                       ADD COLUMN {seq} bigint GENERATED ALWAYS AS IDENTITY;"
                ))
                .await?;
            stages.kept.insert(shape.clone(), name.clone());
            stages.created.push(shape);
            stages.loaded.insert(name.clone());
            name
        }
    };
    // The staging table's columns have the target's types.
    let form = CopyForm {
        binary: binary_fits(client, &target, part, stages).await?,
        meta: true,
    };
    let rows = copy_rows(
        client,
        &format!(
            "COPY {name} ({col_list}, {op}, {unchanged}, {origin}) FROM STDIN{}",
            form.options()
        ),
        part,
        form,
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
        meta,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bookkeeping_columns_take_a_prefix_no_column_has() {
        assert_eq!(MetaCols::for_columns(&["id", "_op"]).op, "relaysync_op");
        let m = MetaCols::for_columns(&["relaysync_op", "relaysync1_x"]);
        assert_eq!(
            (m.op.as_str(), m.seq.as_str()),
            ("relaysync2_op", "relaysync2_seq")
        );
    }
}

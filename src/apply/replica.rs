//! The site's apply of one part, as PostgreSQL's own apply workers do it
//! (inside the caller's transaction, with `session_replication_role =
//! replica`): a part of new rows is COPYed straight into its table; any
//! other goes through a staging table, then one DELETE for the deletes and
//! one INSERT … ON CONFLICT for the upserts, setting only the columns the
//! change carries. Rows whose unchanged TOAST values were not sent get an
//! UPDATE that keeps the site's value of those columns.

use tokio_postgres::Client;

use super::stage::{binary_fits, copy_rows, stage_part, CopyForm, Stage, Stages};
use crate::book::events;
use crate::packet::{Cascade, Op, Part};
use crate::postgres::{ident, literal, qualified};

/// Which statements a part needs: most parts have no deletes, no unchanged
/// TOAST values and nothing HO merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Needs {
    deletes: bool,
    upserts: bool,
    unchanged: bool,
    merged: bool,
}

impl Needs {
    fn of(part: &Part) -> Needs {
        let updates = part.has_op(Op::Update);
        Needs {
            deletes: part.has_op(Op::Delete),
            upserts: updates || part.has_op(Op::Insert),
            unchanged: part.has_unchanged(),
            merged: part.has_origin(crate::MERGE_ORIGIN),
        }
    }

    /// New rows only: they can be COPYed straight into the table.
    fn inserts_only(self, part: &Part) -> bool {
        self.upserts && !part.has_op(Op::Update) && !self.deletes && !self.merged
    }
}

/// Applies one part at a site; returns the number of rows it carried (a
/// truncate is no row). Only the statements the part needs are run.
pub(crate) async fn apply_part(
    client: &Client,
    site: &str,
    part: &Part,
    stages: &mut Stages,
) -> Result<u64, tokio_postgres::Error> {
    // A part with no row carries its table's shape only (see apply/schema.rs).
    if part.rows() == 0 {
        return Ok(0);
    }
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
    let needs = Needs::of(part);
    let rows = match needs.inserts_only(part) {
        true => copy_inserts(client, part, stages).await?,
        false => None,
    };
    let rows = match rows {
        Some(rows) => rows,
        None => apply_staged(client, site, part, stages, needs).await?,
    };
    if needs.upserts && rows > 0 {
        stages.sequences.catch_up(client, part).await?;
    }
    Ok(rows)
}

/// Applies a part through a staging table: the statements it needs.
async fn apply_staged(
    client: &Client,
    site: &str,
    part: &Part,
    stages: &mut Stages,
    needs: Needs,
) -> Result<u64, tokio_postgres::Error> {
    let st = stage_part(client, part, stages, needs.deletes || needs.unchanged).await?;
    let mut sql = String::new();
    if st.rows > 0 {
        sql = if st.key.is_empty() {
            keyless_statements(&st, needs)
        } else {
            keyed_statements(&st, part, needs)
        };
        if needs.merged {
            sql.push_str(&merged_events(&st, site, &part.table));
        }
    }
    if !sql.is_empty() {
        client.batch_execute(&sql).await?;
    }
    Ok(st.rows)
}

/// Without a key the table is a bag: each delete removes one row equal in
/// every column (as many as the part deletes of that row), compared by
/// text form so that types without equality (json, point) match; every
/// other row is inserted. (Compaction left only deletes of rows the site
/// had before the part.)
fn keyless_statements(st: &Stage, needs: Needs) -> String {
    let (stage, target, op_col) = (&st.name, &st.target, &st.meta.op);
    let col_list = st.cols.join(", ");
    let row = |alias: &str| format!("ROW({})::text", st.cols_of(alias));
    let mut sql = String::new();
    if needs.deletes {
        sql.push_str(&format!(
            "WITH d AS (SELECT {row_s} AS r, count(*) AS n FROM {stage} s
                         WHERE s.{op_col} = 'D' GROUP BY 1),
                  t AS (SELECT t.ctid, d.n, row_number() OVER (PARTITION BY d.r) AS i
                          FROM {target} t JOIN d ON {row_t} = d.r)
             DELETE FROM {target} WHERE ctid IN (SELECT ctid FROM t WHERE i <= n);",
            row_t = row("t"),
            row_s = row("s"),
        ));
    }
    if needs.upserts {
        sql.push_str(&format!(
            "INSERT INTO {target} ({col_list}) OVERRIDING SYSTEM VALUE SELECT {col_list} FROM {stage} WHERE {op_col} <> 'D';"
        ));
    }
    sql
}

/// With a key: one DELETE, one INSERT … ON CONFLICT setting the columns
/// the change carries, and an UPDATE keeping unchanged TOAST values.
fn keyed_statements(st: &Stage, part: &Part, needs: Needs) -> String {
    let (stage, target) = (&st.name, &st.target);
    let (op_col, unchanged_col) = (&st.meta.op, &st.meta.unchanged);
    let col_list = st.cols.join(", ");
    let on = st.key_match();
    let key_list = st.key.join(", ");
    let non_key: Vec<&String> = st.cols.iter().filter(|c| !st.key.contains(c)).collect();
    let conflict = if non_key.is_empty() {
        "DO NOTHING".to_string()
    } else {
        let set: Vec<String> = non_key
            .iter()
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .collect();
        format!("DO UPDATE SET {}", set.join(", "))
    };
    let mut sql = String::new();
    if needs.deletes {
        sql.push_str(&format!(
            "DELETE FROM {target} t USING {stage} s WHERE s.{op_col} = 'D' AND {on};"
        ));
        sql.push_str(&cascade_statement(st, &part.cascade));
    }
    if needs.upserts {
        sql.push_str(&format!(
            "INSERT INTO {target} ({col_list}) OVERRIDING SYSTEM VALUE SELECT {col_list} FROM {stage}
              WHERE {op_col} <> 'D' AND {unchanged_col} IS NULL
             ON CONFLICT ({key_list}) {conflict};"
        ));
    }
    if needs.unchanged && !non_key.is_empty() {
        let keep: Vec<String> = part
            .columns
            .iter()
            .filter(|c| !part.key.contains(&c.name))
            .map(|c| {
                let q = ident(&c.name);
                format!(
                    "{q} = CASE WHEN {} = ANY(s.{unchanged_col}) THEN t.{q} ELSE s.{q} END",
                    literal(&c.name)
                )
            })
            .collect();
        sql.push_str(&format!(
            "UPDATE {target} t SET {} FROM {stage} s
              WHERE s.{op_col} <> 'D' AND s.{unchanged_col} IS NOT NULL AND {on};",
            keep.join(", ")
        ));
    }
    sql
}

/// The rows of the tables routed by this one that reference a deleted row,
/// and theirs, deleted with it (one statement; nothing when none is routed
/// by it). HO routes a child row where its parent goes: a parent that left
/// the site takes its children along, and the site keeps no orphan.
fn cascade_statement(st: &Stage, cascade: &[Cascade]) -> String {
    if cascade.is_empty() {
        return String::new();
    }
    let refs = |list: &[Cascade]| -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in list.iter().flat_map(|c| &c.references) {
            if !out.contains(r) {
                out.push(r.clone());
            }
        }
        out
    };
    let cols = |alias: &str, names: &[String]| -> String {
        names
            .iter()
            .map(|c| format!("{alias}.{}", ident(c)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut ctes = vec![format!(
        "relaysync_c0 AS (SELECT DISTINCT {} FROM {} s WHERE s.{} = 'D')",
        cols("s", &refs(cascade)),
        st.name,
        st.meta.op
    )];
    // Breadth first: each table's deleted rows feed its children's delete.
    let mut queue: Vec<(String, &Cascade)> = cascade
        .iter()
        .map(|c| ("relaysync_c0".to_string(), c))
        .collect();
    while !queue.is_empty() {
        let (from, c) = queue.remove(0);
        let name = format!("relaysync_c{}", ctes.len());
        let on: Vec<String> = c
            .columns
            .iter()
            .zip(&c.references)
            .map(|(col, r)| format!("x.{} = p.{}", ident(col), ident(r)))
            .collect();
        let returning = match refs(&c.children) {
            r if r.is_empty() => "1".to_string(),
            r => cols("x", &r),
        };
        ctes.push(format!(
            "{name} AS (DELETE FROM {} x USING {from} p WHERE {} RETURNING {returning})",
            qualified(&c.table),
            on.join(" AND ")
        ));
        queue.extend(c.children.iter().map(|child| (name.clone(), child)));
    }
    format!("WITH {} SELECT 1;", ctes.join(",\n     "))
}

/// Rows HO merged from a site come back down marked with its origin: the
/// site logs each one.
fn merged_events(st: &Stage, site: &str, table: &str) -> String {
    let (op_col, origin_col) = (&st.meta.op, &st.meta.origin);
    format!(
        "{insert} SELECT {site}, {table}, {key_text}, {event}, {op_col}
           FROM {stage} s WHERE {origin_col} = {origin} AND {op_col} <> 'D';",
        insert = events::INSERT,
        site = literal(site),
        table = literal(table),
        key_text = st.key_text("s"),
        event = literal(events::MERGED_HERE),
        stage = st.name,
        origin = literal(crate::MERGE_ORIGIN),
    )
}

/// Inserts a part of inserts only by COPY straight into its table (new rows,
/// a full sync's load): no staging, and COPY's batched inserts. Rows the
/// site has already (a replay after a crash, a snapshot that overlapped)
/// make it fail: it is then undone and the caller takes the staged upsert.
///
/// Whatever would refuse the COPY at its start (a missing column, no INSERT
/// privilege, a generated column, row-level security) is checked first, in
/// the same round trip as the savepoint, once per target and session, and
/// sends the part to the staged path, which reports it.
pub(super) async fn copy_inserts(
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
    let shape = format!("{target}({cols})");
    let copyable = match stages.copyable.get(&shape) {
        // Known for this session: a change since (a revoked privilege, say)
        // refuses the COPY at its start, and the session starts over.
        Some(false) => return Ok(None),
        Some(true) => {
            client.batch_execute("SAVEPOINT relaysync_copy").await?;
            true
        }
        None => {
            let copyable = copy_check(client, &target, &cols, part).await;
            stages.copyable.insert(shape, copyable);
            copyable
        }
    };
    let copied = if copyable {
        let form = CopyForm {
            binary: binary_fits(client, &target, part, stages).await?,
            meta: false,
        };
        let copy = format!("COPY {target} ({cols}) FROM STDIN{}", form.options());
        match copy_rows(client, &copy, part, form, stages).await {
            Ok(rows) => Some(rows),
            Err(e) if stages.out_of_step() => return Err(e),
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

/// Opens the savepoint and checks, in the same round trip, what would refuse
/// a COPY of `cols` into `target` at its start.
async fn copy_check(client: &Client, target: &str, cols: &str, part: &Part) -> bool {
    let check = client
        .simple_query(&format!(
            "SAVEPOINT relaysync_copy;
             INSERT INTO {target} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM {target} WHERE false;
             SELECT row_security_active({})",
            literal(target)
        ))
        .await;
    match check {
        Ok(messages) => !messages.iter().any(
            |m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("t")),
        ),
        Err(e) => {
            tracing::debug!(table = %part.table, error = %crate::error::db_message(&e), "no COPY into the table; staging");
            false
        }
    }
}

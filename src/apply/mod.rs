//! Apply: loads the parts of a packet into a database inside the caller's
//! transaction, set-based: COPY into a staging table, then one DELETE for
//! the deletes and one INSERT … ON CONFLICT for the upserts, setting only the
//! columns the change carries. Rows whose unchanged TOAST values were not
//! sent get an UPDATE that keeps the site's value of those columns.

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::Client;

pub mod merge;

use crate::packet::Part;
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
}

impl Stage {
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

/// COPYs a part's rows (truncate rows aside) into a new staging table shaped
/// like the target's columns.
pub(crate) async fn stage_part(
    client: &Client,
    part: &Part,
    stage_no: usize,
) -> Result<Stage, tokio_postgres::Error> {
    let target = qualified(&part.table);
    let cols: Vec<String> = part.columns.iter().map(|c| ident(&c.name)).collect();
    let name = format!("relaysync_stage_{stage_no}");
    let col_list = cols.join(", ");
    client
        .batch_execute(&format!(
            "CREATE TEMP TABLE {name} ON COMMIT DROP AS SELECT {col_list} FROM {target} WITH NO DATA;
             ALTER TABLE {name} ADD COLUMN relaysync_op text, ADD COLUMN relaysync_unchanged text[],
               ADD COLUMN relaysync_origin text,
               ADD COLUMN relaysync_seq bigint GENERATED ALWAYS AS IDENTITY;"
        ))
        .await?;
    let sink = client
        .copy_in(&format!(
            "COPY {name} ({col_list}, relaysync_op, relaysync_unchanged, relaysync_origin) FROM STDIN"
        ))
        .await?;
    futures_util::pin_mut!(sink);
    let mut buf = Vec::with_capacity(CHUNK_BYTES + 4096);
    for b in 0..part.batch_count() {
        part.write_copy_text(b, &mut buf);
        if buf.len() >= CHUNK_BYTES {
            sink.send(Bytes::from(std::mem::take(&mut buf))).await?;
        }
    }
    if !buf.is_empty() {
        sink.send(Bytes::from(buf)).await?;
    }
    let rows = sink.finish().await?;
    if rows > 1000 {
        client.batch_execute(&format!("ANALYZE {name}")).await?;
    }
    Ok(Stage {
        name,
        target,
        cols,
        key: part.key.iter().map(|k| ident(k)).collect(),
        rows,
    })
}

/// Applies one part at a site; returns the number of rows it carried (a
/// truncate is no row).
pub async fn apply_part(
    client: &Client,
    site: &str,
    part: &Part,
    stage_no: usize,
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
    let st = stage_part(client, part, stage_no).await?;
    let (stage, target, cols) = (&st.name, &st.target, &st.cols);
    let col_list = cols.join(", ");
    let staged = st.rows;
    if staged == 0 {
        client.batch_execute(&format!("DROP TABLE {stage}")).await?;
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
        sql.push_str(&format!(
            "DELETE FROM {target} WHERE ctid IN (
               SELECT (SELECT t.ctid FROM {target} t WHERE ({row_t}) IS NOT DISTINCT FROM ({row_s}) LIMIT 1)
                 FROM {stage} s WHERE s.relaysync_op = 'D');
             INSERT INTO {target} ({col_list}) SELECT {col_list} FROM {stage} WHERE relaysync_op <> 'D';"
        ));
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
        sql.push_str(&format!(
            "DELETE FROM {target} t USING {stage} s WHERE s.relaysync_op = 'D' AND {on};
             INSERT INTO {target} ({col_list}) SELECT {col_list} FROM {stage}
              WHERE relaysync_op <> 'D' AND relaysync_unchanged IS NULL
             ON CONFLICT ({key_list}) {conflict};"
        ));
        if !non_key.is_empty() {
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
    let key_text = st.key_text("s");
    sql.push_str(&format!(
        "INSERT INTO relaysync.event_log (site, table_name, key, event, detail)
         SELECT {site}, {table}, {key_text}, 'User update succeeded (HO)', relaysync_op
           FROM {stage} s WHERE relaysync_origin = {origin} AND relaysync_op <> 'D';
         DROP TABLE {stage};",
        site = literal(site),
        table = literal(&part.table),
        origin = literal(crate::MERGE_ORIGIN),
    ));
    client.batch_execute(&sql).await?;
    Ok(staged)
}

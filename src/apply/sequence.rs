//! Sequences behind a table's columns (identity columns, `serial`): rows
//! applied with the source's keys leave them behind, and the next row the
//! database numbers itself would take a key already used. After applying
//! rows, each such sequence is moved past the column's largest value.

use std::collections::HashMap;

use tokio_postgres::Client;

use crate::packet::Part;
use crate::postgres::{ident, literal, qualified};

/// A column whose values a sequence hands out.
#[derive(Debug, Clone)]
pub(crate) struct Owned {
    column: String,
    /// The sequence, as a quoted, qualified name.
    sequence: String,
    start: i64,
}

/// The sequences of each table, read once per session.
#[derive(Debug, Default)]
pub(crate) struct Sequences(HashMap<String, Vec<Owned>>);

impl Sequences {
    /// Moves every ascending sequence behind a column of `part` past the
    /// largest value its column holds in the part's table.
    pub(crate) async fn catch_up(
        &mut self,
        client: &Client,
        part: &Part,
    ) -> Result<(), tokio_postgres::Error> {
        let target = qualified(&part.table);
        if !self.0.contains_key(&target) {
            let owned = owned_by(client, &target).await?;
            self.0.insert(target.clone(), owned);
        }
        let sql: String = self.0[&target]
            .iter()
            .filter(|o| part.columns.iter().any(|c| c.name == o.column))
            .map(|o| bump_sql(&target, o))
            .collect();
        if !sql.is_empty() {
            client.batch_execute(&sql).await?;
        }
        Ok(())
    }

    /// Forgets what it read (a DBA may have altered a table).
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }
}

async fn owned_by(client: &Client, target: &str) -> Result<Vec<Owned>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT a.attname::text AS column_name, d.objid::regclass::text AS sequence, s.seqstart AS start,
                    has_sequence_privilege(d.objid, 'SELECT') AND has_sequence_privilege(d.objid, 'UPDATE') AS may
               FROM pg_depend d
               JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
               JOIN pg_sequence s ON s.seqrelid = d.objid
              WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
                AND d.refobjid = $1::text::regclass AND d.deptype IN ('a', 'i')
                AND s.seqincrement > 0",
            &[&target],
        )
        .await?;
    let mut owned = Vec::new();
    for r in &rows {
        let o = Owned {
            column: r.get("column_name"),
            sequence: r.get("sequence"),
            start: r.get("start"),
        };
        // Applying goes on without it; the site's own rows may then take
        // keys HO used.
        if r.get("may") {
            owned.push(o);
        } else {
            tracing::warn!(table = %target, sequence = %o.sequence,
                "the role may not move this sequence past HO's keys; GRANT SELECT, UPDATE ON SEQUENCE to it (see sql/roles.sql)");
        }
    }
    Ok(owned)
}

/// The ascending sequences behind columns of `tables` (as configured:
/// `schema.table`) that this role may read: (table, column, last value).
pub(crate) async fn highs(
    client: &Client,
    tables: &[String],
) -> Result<Vec<(String, String, i64)>, tokio_postgres::Error> {
    let quoted: Vec<String> = tables.iter().map(|t| qualified(t)).collect();
    let rows = client
        .query(
            &format!(
                "{SEQUENCES_OF} AND {IS_SEQUENCE} has_sequence_privilege(d.objid, 'SELECT')
                      AND pg_sequence_last_value(d.objid) IS NOT NULL END"
            ),
            &[&tables, &quoted],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get("name"), r.get("column_name"), r.get("last")))
        .collect())
}

/// Moves each sequence behind a column of `highs`' tables past the value
/// HO's stands at (where it is behind and this role may); returns how many
/// moved.
pub(crate) async fn follow(
    client: &Client,
    highs: &[(String, String, i64)],
) -> Result<u64, tokio_postgres::Error> {
    let tables: Vec<String> = highs.iter().map(|h| h.0.clone()).collect();
    let quoted: Vec<String> = tables.iter().map(|t| qualified(t)).collect();
    let columns: Vec<&str> = highs.iter().map(|h| h.1.as_str()).collect();
    let values: Vec<i64> = highs.iter().map(|h| h.2).collect();
    let rows = client
        .query(
            &format!("WITH h AS (SELECT * FROM unnest($3::text[], $4::text[], $5::int8[]) h (name, col, high)),
                          seqs AS ({SEQUENCES_OF} AND {IS_SEQUENCE} has_sequence_privilege(d.objid, 'SELECT, UPDATE') END)
                      SELECT setval(seqs.seq, h.high) FROM seqs JOIN h ON h.name = seqs.name AND h.col = seqs.column_name
                       WHERE h.high > coalesce(seqs.last, seqs.start - 1)"),
            &[&tables, &quoted, &tables, &columns, &values],
        )
        .await?;
    Ok(rows.len() as u64)
}

/// The ascending sequences behind the columns of `$1` (names as
/// configured) / `$2` (quoted): name, column_name, seq, last, start.
const SEQUENCES_OF: &str =
    "SELECT t.name, a.attname::text AS column_name, d.objid::regclass AS seq,
            CASE WHEN s.seqincrement > 0 THEN pg_sequence_last_value(d.objid) END AS last,
            s.seqstart AS start
       FROM unnest($1::text[], $2::text[]) t (name, quoted)
       JOIN pg_depend d ON d.refobjid = to_regclass(t.quoted)
       JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
       JOIN pg_sequence s ON s.seqrelid = d.objid
      WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
        AND d.deptype IN ('a', 'i') AND s.seqincrement > 0";

/// Opens a condition on a sequence function of `d.objid` that the planner
/// cannot evaluate before the join with pg_sequence has left sequences
/// only (the functions refuse any other relation).
const IS_SEQUENCE: &str = "CASE WHEN s.seqincrement > 0 THEN";

/// Sets the sequence to the column's largest value when that is at or past
/// where the sequence stands.
fn bump_sql(target: &str, o: &Owned) -> String {
    let seq = literal(&o.sequence);
    format!(
        "SELECT setval({seq}, m) FROM (SELECT max({col})::int8 AS m FROM {target}) x
          WHERE m >= coalesce(pg_sequence_last_value({seq}), {start});",
        col = ident(&o.column),
        start = o.start,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_the_sequence_past_the_largest_value_only() {
        let o = Owned {
            column: "id".into(),
            sequence: "public.\"T_id_seq\"".into(),
            start: 1,
        };
        let sql = bump_sql("public.\"T\"", &o);
        assert!(
            sql.starts_with("SELECT setval('public.\"T_id_seq\"', m)"),
            "{sql}"
        );
        assert!(
            sql.contains("max(\"id\")::int8 AS m FROM public.\"T\""),
            "{sql}"
        );
        assert!(
            sql.contains(">= coalesce(pg_sequence_last_value('public.\"T_id_seq\"'), 1)"),
            "{sql}"
        );
    }
}

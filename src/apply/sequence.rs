//! Sequences behind a table's columns (identity columns, `serial`, a
//! default's `nextval` of a sequence made apart): rows
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
            &format!(
                "SELECT a.attname::text AS column_name, d.seq::regclass::text AS sequence, s.seqstart AS start,
                        has_sequence_privilege(d.seq, 'SELECT') AND has_sequence_privilege(d.seq, 'UPDATE') AS may
                   FROM {COLUMN_SEQUENCES} d
                   JOIN pg_attribute a ON a.attrelid = d.rel AND a.attnum = d.attnum
                   JOIN pg_sequence s ON s.seqrelid = d.seq
                  WHERE d.rel = $1::text::regclass AND s.seqincrement > 0"
            ),
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
                "{} AND {IS_SEQUENCE} has_sequence_privilege(d.seq, 'SELECT')
                      AND pg_sequence_last_value(d.seq) IS NOT NULL END",
                sequences_of()
            ),
            &[&tables, &quoted],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get("name"), r.get("column_name"), r.get("last")))
        .collect())
}

/// A sequence behind a column that hands out keys the table holds already.
#[derive(Debug)]
pub(crate) struct Behind {
    pub(crate) table: String,
    pub(crate) column: String,
    pub(crate) sequence: String,
    /// The largest value in the column.
    pub(crate) largest: i64,
    /// The value the sequence hands out next.
    pub(crate) next: i64,
}

impl Behind {
    /// What it means at `at` (`ho` or `pos`), and the fix.
    pub(crate) fn warning(&self, at: &str) -> String {
        format!(
            "at {at}, sequence {s} of {t}.{c} hands out {n} next but the column holds keys up to {m}: the next row made there fails with a duplicate key; relaysync moves it when it applies rows if its role may (GRANT SELECT, UPDATE ON SEQUENCE {s} TO the role), or run SELECT setval('{s}', {m})",
            s = self.sequence,
            t = self.table,
            c = self.column,
            n = self.next,
            m = self.largest
        )
    }
}

/// The ascending sequences behind columns of `tables` (as configured)
/// whose next value is at or below the column's largest.
pub(crate) async fn behind(
    client: &Client,
    tables: &[String],
) -> Result<Vec<Behind>, tokio_postgres::Error> {
    let quoted: Vec<String> = tables.iter().map(|t| qualified(t)).collect();
    let rows = client
        .query(
            &format!(
                "SELECT q.name, q.column_name, q.seq::text AS seq,
                        coalesce(q.last + 1, q.start) AS next
                   FROM ({} AND {IS_SEQUENCE} has_sequence_privilege(d.seq, 'SELECT') END) q",
                sequences_of()
            ),
            &[&tables, &quoted],
        )
        .await?;
    let mut out = Vec::new();
    for r in &rows {
        let (table, column): (String, String) = (r.get("name"), r.get("column_name"));
        let largest: Option<i64> = client
            .query_one(
                &format!(
                    "SELECT max({})::int8 FROM {}",
                    ident(&column),
                    qualified(&table)
                ),
                &[],
            )
            .await?
            .get(0);
        let next: i64 = r.get("next");
        if let Some(largest) = largest.filter(|&m| m >= next) {
            out.push(Behind {
                table,
                column,
                sequence: r.get("seq"),
                largest,
                next,
            });
        }
    }
    Ok(out)
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
                          seqs AS ({} AND {IS_SEQUENCE} has_sequence_privilege(d.seq, 'SELECT, UPDATE') END)
                      SELECT setval(seqs.seq, h.high) FROM seqs JOIN h ON h.name = seqs.name AND h.col = seqs.column_name
                       WHERE h.high > coalesce(seqs.last, seqs.start - 1)", sequences_of()),
            &[&tables, &quoted, &tables, &columns, &values],
        )
        .await?;
    Ok(rows.len() as u64)
}

/// The sequences behind columns, as rows (rel, attnum, seq): those a
/// column owns (`serial`, `OWNED BY`) or that make its identity, and those
/// its default takes `nextval` of without owning them (a legacy pattern:
/// `DEFAULT nextval('customer_customer_id_seq')` with the sequence made
/// apart).
const COLUMN_SEQUENCES: &str = "(SELECT d.refobjid AS rel, d.refobjsubid AS attnum, d.objid AS seq
        FROM pg_depend d
       WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
         AND d.deptype IN ('a', 'i')
      UNION
      SELECT ad.adrelid, ad.adnum, d.refobjid
        FROM pg_attrdef ad
        JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
                        AND d.refclassid = 'pg_class'::regclass AND d.deptype = 'n'
        JOIN pg_class c ON c.oid = d.refobjid AND c.relkind = 'S'
       WHERE pg_get_expr(ad.adbin, ad.adrelid) LIKE 'nextval(%')";

/// The ascending sequences behind the columns of `$1` (names as
/// configured) / `$2` (quoted): name, column_name, seq, last, start.
fn sequences_of() -> String {
    format!(
        "SELECT t.name, a.attname::text AS column_name, d.seq::regclass AS seq,
                CASE WHEN s.seqincrement > 0 THEN pg_sequence_last_value(d.seq) END AS last,
                s.seqstart AS start
           FROM unnest($1::text[], $2::text[]) t (name, quoted)
           JOIN {COLUMN_SEQUENCES} d ON d.rel = to_regclass(t.quoted)
           JOIN pg_attribute a ON a.attrelid = d.rel AND a.attnum = d.attnum
           JOIN pg_sequence s ON s.seqrelid = d.seq
          WHERE s.seqincrement > 0"
    )
}

/// Opens a condition on a sequence function of `d.seq` that the planner
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

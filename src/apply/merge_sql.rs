//! The SQL of HO's merge: one statement per policy (append, fill_vacant,
//! upsert; deletes ignored or applied), each over the staged rows a filter
//! selects and each returning the rows it wrote. Pure: unit-tested here.

use super::stage::Stage;
use crate::book::events;
use crate::config::{Deletes, Merge, UpstreamConfig};
use crate::postgres::literal;

/// The statements that merge the staged rows selected by `filter` (an SQL
/// condition on `s`), each returning the number of rows it wrote.
pub(super) fn statements(
    st: &Stage,
    table: &str,
    site: &str,
    policy: &UpstreamConfig,
    filter: &str,
) -> Vec<String> {
    let (target, stage, op_col) = (&st.target, &st.name, &st.meta.op);
    let cols = st.cols.join(", ");
    let s_cols = st.cols_of("s");
    let mut out = Vec::new();
    if policy.deletes == Deletes::Apply && !st.key.is_empty() {
        out.push(format!(
            "WITH d AS (DELETE FROM {target} t USING {stage} s
                         WHERE s.{op_col} = 'D' AND {on} AND {filter} RETURNING 1)
             SELECT count(*) FROM d",
            on = st.key_match()
        ));
    }
    let upserts = format!("s.{op_col} <> 'D' AND {filter}");
    let log = |rows: &str| {
        format!(
            "{} SELECT {}, {}, m.key, {}, m.op FROM {rows} m",
            events::INSERT,
            literal(site),
            literal(table),
            literal(events::MERGED)
        )
    };
    match policy.merge {
        Merge::Append => {
            // A key HO holds for another row (one a site made that HO used
            // already) is refused, so that the row is rejected with the
            // reason; the same row again (a replay) is skipped.
            if !st.key.is_empty() {
                out.push(format!(
                    "SELECT coalesce(max(relaysync.refuse(format(
                              'key (%s) of {table} holds another row at HO: the site made a key HO had used; its row is not stored (see README, keys made at sites)',
                              {key}))), 0)::int8
                       FROM {stage} s JOIN {target} t ON {on}
                      WHERE {upserts} AND ROW({s_cols})::text IS DISTINCT FROM ROW({t_cols})::text",
                    table = table.replace('\'', "''"),
                    key = st.key_text("s"),
                    on = st.key_match(),
                    t_cols = st.cols_of("t"),
                ));
            }
            out.push(format!(
                "WITH m AS (INSERT INTO {target} ({cols}) OVERRIDING SYSTEM VALUE SELECT {s_cols} FROM {stage} s WHERE {upserts}
                            ON CONFLICT DO NOTHING RETURNING 1)
                 SELECT count(*) FROM m"
            ));
        }
        Merge::FillVacant | Merge::Upsert if !st.key.is_empty() => {
            out.extend(by_key(st, policy, &upserts, &log));
        }
        // Without a key there is nothing to merge into: insert.
        Merge::FillVacant | Merge::Upsert => {
            out.push(format!(
                "WITH m AS (INSERT INTO {target} ({cols}) OVERRIDING SYSTEM VALUE SELECT {s_cols} FROM {stage} s WHERE {upserts} RETURNING 1)
                 SELECT count(*) FROM m"
            ));
        }
    }
    out
}

/// The statements that merge by key (fill_vacant, upsert): an INSERT … ON
/// CONFLICT for rows that carry every column, and an UPDATE column by column
/// for rows whose unchanged TOAST values were not sent. `upserts` selects
/// the staged rows; `log` writes their events.
fn by_key(
    st: &Stage,
    policy: &UpstreamConfig,
    upserts: &str,
    log: &dyn Fn(&str) -> String,
) -> Vec<String> {
    let (target, stage, unchanged_col) = (&st.target, &st.name, &st.meta.unchanged);
    let cols = st.cols.join(", ");
    let s_cols = st.cols_of("s");
    let non_key: Vec<&String> = st.cols.iter().filter(|c| !st.key.contains(c)).collect();
    let mut out = Vec::new();
    let key_list = st.key.join(", ");
    // A site row that differs from HO's is written, so that HO's row
    // (filled, or as it was: HO's values win) goes back down and the
    // site converges; a row equal to HO's writes nothing.
    let conflict = on_conflict(&non_key, policy.merge == Merge::FillVacant);
    let key_text = st.key_text("t");
    // Rows whose unchanged TOAST values were not sent update what HO
    // has, column by column, never inserting.
    let (uset, uchanged) =
        column_updates(&non_key, unchanged_col, policy.merge == Merge::FillVacant);
    out.push(format!(
        "WITH m AS (INSERT INTO {target} AS t ({cols}) OVERRIDING SYSTEM VALUE
                      SELECT {s_cols} FROM {stage} s WHERE {upserts} AND s.{unchanged_col} IS NULL
                    ON CONFLICT ({key_list}) {conflict}
                    RETURNING {key_text} AS key, CASE WHEN xmax = 0 THEN 'I' ELSE 'U' END AS op),
              e AS ({log})
         SELECT count(*) FROM m",
        log = log("m")
    ));
    if !non_key.is_empty() {
        out.push(format!(
            "WITH m AS (UPDATE {target} t SET {} FROM {stage} s
                         WHERE {upserts} AND s.{unchanged_col} IS NOT NULL AND {on} AND ({})
                         RETURNING {key_text} AS key, 'U' AS op),
                  e AS ({log})
             SELECT count(*) FROM m",
            uset.join(", "),
            uchanged.join(" OR "),
            on = st.key_match(),
            log = log("m")
        ));
    }
    out
}

/// `t.c IS NULL OR t.c = ''`: a column HO has no value in.
fn vacant(column: &str) -> String {
    format!("({column} IS NULL OR {column}::text = '')")
}

/// The ON CONFLICT clause of a merge by key. A site row that differs from
/// HO's is written, so that HO's row (filled, or as it was: HO's values
/// win) goes back down and the site converges; a row equal to HO's writes
/// nothing.
fn on_conflict(non_key: &[&String], fill_vacant: bool) -> String {
    if non_key.is_empty() {
        return "DO NOTHING".into();
    }
    let changed: Vec<String> = non_key
        .iter()
        .map(|c| format!("t.{c}::text IS DISTINCT FROM EXCLUDED.{c}::text"))
        .collect();
    let set: Vec<String> = non_key
        .iter()
        .map(|c| {
            if fill_vacant {
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
    format!(
        "DO UPDATE SET {} WHERE {}",
        set.join(", "),
        changed.join(" OR ")
    )
}

/// For rows whose unchanged TOAST values were not sent: the SET list that
/// updates HO column by column, and the conditions that say a column
/// changes something.
fn column_updates(
    non_key: &[&String],
    unchanged_col: &str,
    fill_vacant: bool,
) -> (Vec<String>, Vec<String>) {
    non_key
        .iter()
        .map(|c| {
            let given = format!(
                "NOT ({} = ANY(s.{unchanged_col}))",
                literal(&unquote_ident(c))
            );
            let take = if fill_vacant {
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
        .unzip()
}

/// A column's name from its quoted form (`"a""b"` → `a"b`), as the
/// part's list of unchanged columns holds it.
fn unquote_ident(quoted: &str) -> String {
    let inner = quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or(quoted);
    inner.replace("\"\"", "\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(cols: &[&str], key: &[&str]) -> Stage {
        Stage {
            name: "stage_1".into(),
            target: "\"public\".\"users\"".into(),
            cols: cols.iter().map(|c| format!("\"{c}\"")).collect(),
            key: key.iter().map(|c| format!("\"{c}\"")).collect(),
            rows: 1,
            meta: super::super::stage::MetaCols::for_columns(&[]),
        }
    }

    fn policy(merge: Merge, deletes: Deletes) -> UpstreamConfig {
        UpstreamConfig {
            name: "public.users".into(),
            merge,
            deletes,
        }
    }

    #[test]
    fn append_refuses_a_key_held_by_another_row_and_skips_a_replay() {
        let st = stage(&["id", "at"], &["id"]);
        let sql = statements(
            &st,
            "public.users",
            "s1",
            &policy(Merge::Append, Deletes::Ignore),
            "true",
        );
        assert_eq!(sql.len(), 2);
        assert!(sql[0].contains("relaysync.refuse("), "{}", sql[0]);
        assert!(sql[0].contains("IS DISTINCT FROM"), "{}", sql[0]);
        assert!(sql[1].contains("ON CONFLICT DO NOTHING"), "{}", sql[1]);
        assert!(
            !sql.iter().any(|q| q.contains("event_log")),
            "append logs nothing: {sql:?}"
        );
        // A bag has no key to collide on.
        let bag = stage(&["id", "at"], &[]);
        let sql = statements(
            &bag,
            "public.t",
            "s1",
            &policy(Merge::Append, Deletes::Ignore),
            "true",
        );
        assert_eq!(sql.len(), 1);
    }

    #[test]
    fn fill_vacant_fills_only_empty_columns_and_logs() {
        let st = stage(&["id", "name", "email"], &["id"]);
        let sql = statements(
            &st,
            "public.users",
            "s1",
            &policy(Merge::FillVacant, Deletes::Ignore),
            "true",
        );
        assert_eq!(
            sql.len(),
            2,
            "insert … on conflict, and the TOAST-keeping update"
        );
        let upsert = &sql[0];
        assert!(upsert.contains("ON CONFLICT (\"id\") DO UPDATE SET \"name\" = CASE WHEN (t.\"name\" IS NULL OR t.\"name\"::text = '') AND NOT (EXCLUDED.\"name\" IS NULL"), "{upsert}");
        assert!(
            upsert.contains("WHERE t.\"name\"::text IS DISTINCT FROM EXCLUDED.\"name\"::text OR"),
            "{upsert}"
        );
        assert!(
            upsert.contains("'User update succeeded (Device)'"),
            "{upsert}"
        );
        assert!(!upsert.contains("DELETE"), "deletes are ignored: {upsert}");
    }

    #[test]
    fn unchanged_columns_are_named_as_the_part_names_them() {
        let c = "\"a\"\"b\"".to_string();
        let (_, changed) = column_updates(&[&c], "relaysync_unchanged", false);
        assert!(
            changed[0].starts_with("(NOT ('a\"b' = ANY(s.relaysync_unchanged))"),
            "{}",
            changed[0]
        );
    }

    #[test]
    fn upsert_takes_the_site_row_and_deletes_when_asked() {
        let st = stage(&["id", "name"], &["id"]);
        let sql = statements(
            &st,
            "public.users",
            "s1",
            &policy(Merge::Upsert, Deletes::Apply),
            "s.relaysync_seq = 3",
        );
        assert!(sql[0].starts_with("WITH d AS (DELETE"), "{}", sql[0]);
        assert!(sql[0].contains("s.relaysync_seq = 3"), "{}", sql[0]);
        assert!(
            sql[1].contains("DO UPDATE SET \"name\" = EXCLUDED.\"name\" WHERE"),
            "{}",
            sql[1]
        );
    }

    #[test]
    fn a_key_alone_needs_no_update() {
        let st = stage(&["id"], &["id"]);
        let sql = statements(
            &st,
            "public.users",
            "s1",
            &policy(Merge::FillVacant, Deletes::Ignore),
            "true",
        );
        assert_eq!(sql.len(), 1);
        assert!(sql[0].contains("DO NOTHING"), "{}", sql[0]);
    }

    #[test]
    fn without_a_key_rows_are_inserted() {
        let st = stage(&["at", "what"], &[]);
        let sql = statements(
            &st,
            "public.events",
            "s1",
            &policy(Merge::Upsert, Deletes::Apply),
            "true",
        );
        assert_eq!(sql.len(), 1, "no delete without a key: {sql:?}");
        assert!(
            sql[0].contains("INSERT INTO") && !sql[0].contains("ON CONFLICT"),
            "{}",
            sql[0]
        );
    }
}

//! `verify`: proof that a site holds exactly HO's rows for it.
//!
//! Why HO's hashes and the site's describe the same point of the stream:
//! 1. HO serves verify requests in `ho sync` before its capture: it locks
//!    the verified tables in SHARE mode (writers wait, readers do not), so
//!    every write to them has committed before the lock is granted and none
//!    commits until the verify packet is stored.
//! 2. The capture that follows stores every one of those writes in packets
//!    before the verify packet, which HO writes with the hashes of its
//!    snapshot, taken under the lock; then it commits and the writers go on,
//!    into packets after it.
//! 3. A site applies packets in order, so when it applies the verify packet
//!    it holds what HO held under the lock. It hashes its tables in that
//!    transaction and records `equal` or `drift` in `relay.verify_results`.
//!
//! Hashes are computed in SQL (one pass of each table at each side, memory
//! bounded by the number of buckets): per bucket of keys, the row count and
//! the sum of a 60-bit hash of each row's text form. A sum is order-free and
//! counts identical rows as often as they occur, so a keyless table (a bag)
//! compares too.

pub(crate) mod ho;
pub(crate) mod site;

use std::collections::BTreeMap;

use crate::postgres::{ident, qualified};
pub(crate) use crate::relay::Bucket;

/// Buckets of keys per table: drift is located to one of them.
pub(crate) const BUCKETS: i32 = 64;

/// The same text forms at HO and at the sites (set in the hashing transaction).
pub(crate) use crate::postgres::TEXT_FORMS;

/// A table to hash: its name, HO's columns and key (empty: keyless).
#[derive(Debug, Clone)]
pub(crate) struct Hashed<'a> {
    pub(crate) name: &'a str,
    pub(crate) columns: &'a [String],
    pub(crate) keys: &'a [String],
}

/// The query that hashes `t`, grouped by `group` (an expression naming the
/// site the rows are for) and bucket, only the rows `filter` keeps;
/// columns `site`, `bucket`, `rows`, `hash`.
pub(crate) fn hash_query(t: &Hashed<'_>, group: &str, filter: &str) -> String {
    let row = |cols: &[String]| {
        let list = cols.iter().map(|c| ident(c)).collect::<Vec<_>>();
        format!("md5(ROW({})::text)", list.join(", "))
    };
    let key = if t.keys.is_empty() {
        row(t.columns)
    } else {
        row(t.keys)
    };
    format!(
        "SELECT site, bucket, count(*)::int8 AS rows, sum(h)::text AS hash FROM (
           SELECT {group} AS site,
                  (('x' || substr({key}, 1, 8))::bit(32)::int4 & {mask}) AS bucket,
                  ('x' || substr({row}, 1, 15))::bit(60)::int8 AS h
             FROM {table} {filter}) r
          GROUP BY site, bucket",
        mask = BUCKETS - 1,
        row = row(t.columns),
        table = qualified(t.name),
    )
}

/// What a site found for one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Comparison {
    pub(crate) equal: bool,
    pub(crate) ho_rows: i64,
    pub(crate) site_rows: i64,
    /// The buckets that differ, for people.
    pub(crate) detail: String,
}

/// Compares HO's buckets of a table with the site's.
pub(crate) fn compare(ho: &[Bucket], site: &[Bucket]) -> Comparison {
    let by = |bs: &[Bucket]| {
        bs.iter()
            .filter(|b| b.rows > 0)
            .map(|b| (b.bucket, (b.rows, b.hash.clone())))
            .collect::<BTreeMap<_, _>>()
    };
    let (h, s) = (by(ho), by(site));
    let mut differ: Vec<i32> = h
        .iter()
        .filter(|(b, v)| s.get(b) != Some(v))
        .map(|(b, _)| *b)
        .chain(s.keys().filter(|b| !h.contains_key(b)).copied())
        .collect();
    differ.sort_unstable();
    let ho_rows = ho.iter().map(|b| b.rows).sum();
    let site_rows = site.iter().map(|b| b.rows).sum();
    let detail = if differ.is_empty() {
        String::new()
    } else {
        let list = differ
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "{} of {BUCKETS} key buckets differ ({list}); HO {ho_rows} row(s), site {site_rows}",
            differ.len()
        )
    };
    Comparison {
        equal: differ.is_empty(),
        ho_rows,
        site_rows,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(bucket: i32, rows: i64, hash: &str) -> Bucket {
        Bucket {
            bucket,
            rows,
            hash: hash.into(),
        }
    }

    #[test]
    fn equal_buckets_are_equal_in_any_order() {
        let c = compare(
            &[b(1, 2, "10"), b(5, 1, "7")],
            &[b(5, 1, "7"), b(1, 2, "10")],
        );
        assert!(c.equal);
        assert_eq!((c.ho_rows, c.site_rows), (3, 3));
        assert_eq!(c.detail, "");
    }

    #[test]
    fn a_changed_missing_or_extra_bucket_is_drift() {
        let c = compare(
            &[b(1, 2, "10"), b(5, 1, "7")],
            &[b(1, 2, "11"), b(9, 1, "3")],
        );
        assert!(!c.equal);
        assert_eq!(
            c.detail,
            "3 of 64 key buckets differ (1, 5, 9); HO 3 row(s), site 3"
        );
    }

    #[test]
    fn the_query_hashes_keys_for_buckets_and_whole_rows() {
        let cols = ["id".to_string(), "name".to_string()];
        let keys = ["id".to_string()];
        let t = Hashed {
            name: "public.items",
            columns: &cols,
            keys: &keys,
        };
        let q = hash_query(&t, crate::protocol::sql::ALL, "");
        assert!(
            q.contains(&format!("md5(ROW({})::text)", ident("id"))),
            "{q}"
        );
        assert!(q.contains(&qualified("public.items")), "{q}");
        let keyless = Hashed { keys: &[], ..t };
        let q = hash_query(&keyless, crate::protocol::sql::ALL, "");
        assert!(
            !q.contains(&format!("md5(ROW({})::text)", ident("id"))),
            "{q}"
        );
    }
}

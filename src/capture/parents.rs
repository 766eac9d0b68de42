//! Where HO's capture sent each row of a parent table (a table others are
//! routed by, `route = "parent:…"`): the referenced columns' values → the
//! site (or `*`). Loaded from HO when the capture starts, then kept by the
//! stream, so a child row is routed without asking HO.
//!
//! Memory: one entry per parent row, its referenced values length-prefixed
//! in one boxed slice and a 4-byte site number (site codes are interned).
//! A parent row deleted in a transaction keeps its entry until the
//! transaction ends: its children's deletes may come after it (ON DELETE
//! CASCADE).

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::Client;

use super::batch::text_of;
use super::copy_lines::{read_tx, CopyLines};
use crate::error::{DbContext, Result};
use crate::pgoutput::Value;
use crate::postgres::{ident, qualified};
use crate::route::Tree;

/// Marks an entry whose row was deleted in the open transaction.
const DELETED: u32 = 1 << 31;

/// Where each parent table's rows went.
#[derive(Debug, Default)]
pub(crate) struct Parents {
    tables: HashMap<String, HashMap<Box<[u8]>, u32>>,
    sites: Vec<Arc<str>>,
    numbers: HashMap<Arc<str>, u32>,
    /// Entries marked deleted in the open transaction.
    deleted: Vec<(String, Box<[u8]>)>,
}

/// The referenced values `values[columns]` as one map key; None when one is NULL.
pub(crate) fn key_of(columns: &[usize], values: &[Value]) -> Option<Box<[u8]>> {
    let mut out = Vec::new();
    for &c in columns {
        let v = text_of(values.get(c)?)?;
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v);
    }
    Some(out.into_boxed_slice())
}

/// The values of a map key, as text (for SQL literals).
pub(crate) fn texts_of(key: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= key.len() {
        let len = u32::from_le_bytes(key[at..at + 4].try_into().unwrap_or([0; 4])) as usize;
        let end = (at + 4 + len).min(key.len());
        out.push(String::from_utf8_lossy(&key[at + 4..end]).into_owned());
        at = end;
    }
    out
}

impl Parents {
    fn number(&mut self, site: &str) -> u32 {
        if let Some(&n) = self.numbers.get(site) {
            return n;
        }
        let site: Arc<str> = Arc::from(site);
        let n = self.sites.len() as u32;
        self.sites.push(site.clone());
        self.numbers.insert(site, n);
        n
    }

    /// Records that the row of `table` with referenced values `key` went to
    /// `target` (None: to no site).
    pub(crate) fn set(&mut self, table: &str, key: Box<[u8]>, target: Option<&str>) {
        let n = target.map(|t| self.number(t));
        let map = match self.tables.get_mut(table) {
            Some(m) => m,
            None => self.tables.entry(table.to_string()).or_default(),
        };
        match n {
            Some(n) => {
                map.insert(key, n);
            }
            None => {
                map.remove(&key);
            }
        }
    }

    /// Where the row of `table` with referenced values `key` went.
    pub(crate) fn get(&self, table: &str, key: &[u8]) -> Option<&Arc<str>> {
        let n = self.tables.get(table)?.get(key)?;
        self.sites.get((n & !DELETED) as usize)
    }

    /// The row was deleted: its entry goes when the transaction ends.
    pub(crate) fn delete(&mut self, table: &str, key: Box<[u8]>) {
        if let Some(n) = self.tables.get_mut(table).and_then(|m| m.get_mut(&key)) {
            *n |= DELETED;
            self.deleted.push((table.to_string(), key));
        }
    }

    /// The transaction ended: entries of rows it deleted (and did not
    /// insert again) go.
    pub(crate) fn end_transaction(&mut self) {
        for (table, key) in std::mem::take(&mut self.deleted) {
            if let Some(map) = self.tables.get_mut(&table) {
                if map.get(&key).is_some_and(|n| n & DELETED != 0) {
                    map.remove(&key);
                }
            }
        }
    }

    /// Every row of `table` is gone (a truncate).
    pub(crate) fn clear(&mut self, table: &str) {
        if let Some(map) = self.tables.get_mut(table) {
            map.clear();
        }
    }

    /// Entries held, over all parent tables.
    pub(crate) fn len(&self) -> usize {
        self.tables.values().map(HashMap::len).sum()
    }
}

/// Reads where every parent row of `tree` goes, from HO as it is now (a
/// stream replayed from an older position corrects what changed since).
pub(crate) async fn load(sql: &Client, tree: &Tree, parents: &mut Parents) -> Result<()> {
    let tables: Vec<(String, Vec<String>)> = tree
        .parents()
        .into_iter()
        .filter_map(|t| Some((t.to_string(), tree.referenced(t)?.to_vec())))
        .collect();
    if tables.is_empty() {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let tx = read_tx(sql)
        .await
        .ctx(|| "starting to read the parent tables at HO".into())?;
    for (table, refs) in &tables {
        let cols: Vec<String> = refs
            .iter()
            .map(|c| format!("relaysync_t.{}", ident(c)))
            .collect();
        let copy = format!(
            "COPY (SELECT {}, {} FROM {} relaysync_t) TO STDOUT",
            cols.join(", "),
            tree.site_expr(table, "relaysync_t"),
            qualified(table)
        );
        let what = format!("reading where the rows of {table} go");
        let mut lines = CopyLines::open(&tx, &copy, what).await?;
        let columns: Vec<usize> = (0..refs.len()).collect();
        while let Some(tuples) = lines.next().await? {
            for values in tuples {
                let target = values
                    .last()
                    .and_then(text_of)
                    .map(|b| String::from_utf8_lossy(b).into_owned());
                if let Some(key) = key_of(&columns, &values) {
                    parents.set(table, key, target.as_deref());
                }
            }
        }
    }
    tx.rollback().await;
    tracing::info!(
        rows = parents.len(),
        ms = started.elapsed().as_millis() as u64,
        "parent routes loaded"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn t(s: &str) -> Value {
        Value::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn a_deleted_parent_routes_its_children_until_the_transaction_ends() {
        let mut p = Parents::default();
        let k = key_of(&[0], &[t("7"), t("x")]).unwrap();
        p.set("s.inv", k.clone(), Some("s1"));
        assert_eq!(p.get("s.inv", &k).map(|s| &**s), Some("s1"));
        p.delete("s.inv", k.clone());
        assert_eq!(p.get("s.inv", &k).map(|s| &**s), Some("s1"));
        p.end_transaction();
        assert_eq!(p.get("s.inv", &k), None);
        // Deleted and inserted again in one transaction: kept.
        p.set("s.inv", k.clone(), Some("s2"));
        p.delete("s.inv", k.clone());
        p.set("s.inv", k.clone(), Some("s3"));
        p.end_transaction();
        assert_eq!(p.get("s.inv", &k).map(|s| &**s), Some("s3"));
        assert_eq!(texts_of(&k), vec!["7".to_string()]);
        assert!(key_of(&[0], &[Value::Null]).is_none());
    }
}

//! Compaction of a keyless table's part (REPLICA IDENTITY FULL): the table
//! is a bag of rows, so a delete cancels one earlier insert of an equal row
//! in the same part, and every other change stays. What remains deletes
//! only rows the target had before the part, so applying its deletes
//! before its inserts gives the right count of each row.

use std::collections::HashMap;

use crate::packet::{Change, Op};
use crate::pgoutput::{Tuple, Value};

/// The inserts of a keyless part, by a hash of the whole row.
#[derive(Debug, Default)]
pub(crate) struct Bag {
    inserts: HashMap<u64, Vec<usize>>,
}

/// FNV-1a over every value, each tagged and length-prefixed.
fn row_hash(values: &Tuple) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for v in values {
        match v {
            Value::Null => eat(b"n"),
            Value::Unchanged => eat(b"u"),
            Value::Text(b) | Value::Binary(b) => {
                eat(b"t");
                eat(&(b.len() as u32).to_le_bytes());
                eat(b);
            }
        }
    }
    h
}

impl Bag {
    /// Adds `change` to the part's `changes`; returns how many rows the
    /// part grew by (-1 when a delete cancelled an insert).
    pub(crate) fn push(&mut self, changes: &mut Vec<Change>, change: Change) -> isize {
        let h = row_hash(&change.values);
        if change.op != Op::Delete {
            if change.op == Op::Insert {
                self.inserts.entry(h).or_default().push(changes.len());
            }
            changes.push(change);
            return 1;
        }
        let equal = self.inserts.get_mut(&h).and_then(|at| {
            let i = at
                .iter()
                .position(|&i| changes[i].values == change.values)?;
            Some(at.swap_remove(i))
        });
        let Some(at) = equal else {
            changes.push(change);
            return 1;
        };
        // The order of a keyless part's rows does not matter: move the last
        // row into the cancelled one's place.
        let last = changes.len() - 1;
        changes.swap_remove(at);
        if at != last && changes[at].op == Op::Insert {
            let moved = row_hash(&changes[at].values);
            if let Some(i) = self
                .inserts
                .get_mut(&moved)
                .and_then(|v| v.iter_mut().find(|i| **i == last))
            {
                *i = at;
            }
        }
        -1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn change(op: Op, v: &str) -> Change {
        Change {
            op,
            lsn: 1,
            values: vec![
                Value::Text(Bytes::copy_from_slice(v.as_bytes())),
                Value::Null,
            ],
            origin: None,
        }
    }

    fn count(changes: &[Change], op: Op, v: &str) -> usize {
        changes.iter().filter(|c| *c == &change(op, v)).count()
    }

    #[test]
    fn a_delete_cancels_one_equal_insert_and_keeps_the_rest() {
        let (mut bag, mut changes) = (Bag::default(), Vec::new());
        let mut rows = 0;
        for (op, v) in [
            (Op::Insert, "a"),
            (Op::Insert, "b"),
            (Op::Insert, "a"),
            (Op::Insert, "c"),
            (Op::Delete, "a"),
            (Op::Delete, "a"),
            (Op::Delete, "a"),
            (Op::Delete, "c"),
            (Op::Insert, "c"),
        ] {
            rows += bag.push(&mut changes, change(op, v));
        }
        assert_eq!(rows, changes.len() as isize);
        assert_eq!(changes.len(), 3);
        assert_eq!(count(&changes, Op::Insert, "a"), 0);
        assert_eq!(count(&changes, Op::Delete, "a"), 1);
        assert_eq!(count(&changes, Op::Insert, "b"), 1);
        assert_eq!(count(&changes, Op::Insert, "c"), 1);
    }
}

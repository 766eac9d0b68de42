//! Compaction's index: which row of a part holds a key, by a 64-bit hash
//! of the key values checked against the row's own key. Pure code.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use bytes::Bytes;

use super::batch::text_of;
use crate::packet::Change;
use crate::pgoutput::Tuple;

/// A hasher for keys that are already hashes.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// Key → row index within a part: a 64-bit hash of the key values, checked
/// against the row's own key; the rare keys whose hash another key took
/// go to a second, exact map.
#[derive(Debug, Default)]
pub(super) struct KeyIndex {
    by_hash: HashMap<u64, usize, BuildHasherDefault<IdentityHasher>>,
    collided: HashMap<Vec<Bytes>, usize>,
}

/// Where a change's key is in a part.
pub(super) enum Found {
    At(usize),
    /// Not there yet: insert at this slot.
    New(Slot),
    /// The change has no usable key (no key columns, or a NULL in them).
    NoKey,
}

pub(super) enum Slot {
    Hash(u64),
    Exact(Vec<Bytes>),
}

/// FNV-1a over the key values, each length-prefixed.
fn key_hash(key: &[usize], values: &Tuple) -> Option<u64> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &k in key {
        let v = text_of(values.get(k)?)?;
        for b in (v.len() as u32).to_le_bytes().iter().chain(v.iter()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    Some(h)
}

fn same_key(key: &[usize], a: &Tuple, b: &Tuple) -> bool {
    key.iter().all(
        |&k| match (a.get(k).and_then(text_of), b.get(k).and_then(text_of)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
    )
}

impl KeyIndex {
    pub(super) fn find(&self, key: &[usize], changes: &[Change], values: &Tuple) -> Found {
        if key.is_empty() {
            return Found::NoKey;
        }
        let Some(h) = key_hash(key, values) else {
            return Found::NoKey;
        };
        match self.by_hash.get(&h) {
            None => Found::New(Slot::Hash(h)),
            Some(&at) if same_key(key, &changes[at].values, values) => Found::At(at),
            Some(_) => {
                let exact: Vec<Bytes> = key
                    .iter()
                    .filter_map(|&k| values.get(k).and_then(text_of).cloned())
                    .collect();
                match self.collided.get(&exact) {
                    Some(&at) => Found::At(at),
                    None => Found::New(Slot::Exact(exact)),
                }
            }
        }
    }

    pub(super) fn insert(&mut self, slot: Slot, at: usize) {
        match slot {
            Slot::Hash(h) => {
                self.by_hash.insert(h, at);
            }
            Slot::Exact(k) => {
                self.collided.insert(k, at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Op;
    use crate::pgoutput::Value;

    fn t(s: &str) -> Value {
        Value::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn a_key_whose_hash_is_taken_still_compacts_exactly() {
        let key = [0usize];
        let a = vec![t("a"), t("1")];
        let b = vec![t("b"), t("2")];
        let change = |values: &Tuple| Change {
            op: Op::Insert,
            lsn: 1,
            values: values.clone(),
            origin: None,
        };
        let mut changes = vec![change(&a)];
        let mut idx = KeyIndex::default();
        // Make b's hash point at a's row, as a collision would.
        idx.by_hash.insert(key_hash(&key, &b).unwrap(), 0);
        let Found::New(slot) = idx.find(&key, &changes, &b) else {
            panic!("b was taken for a")
        };
        assert!(matches!(slot, Slot::Exact(_)));
        idx.insert(slot, 1);
        changes.push(change(&b));
        assert!(matches!(idx.find(&key, &changes, &b), Found::At(1)));
        assert!(matches!(
            idx.find(&key, &changes, &vec![Value::Null, t("3")]),
            Found::NoKey
        ));
    }
}

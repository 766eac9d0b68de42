//! Turning decoded changes into packet drafts: routing each change to its
//! target(s), compacting to the net effect per key within a packet, and
//! sealing a packet when it reaches its row or byte bound.
//!
//! Pure code, no IO: the capture loop feeds it and writes what it seals.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;

use super::bag::Bag;
use super::key_index::{Found, KeyIndex};
use super::parents::{key_of as refs_key, Parents};
use crate::packet::{Change, Op, PartitionShape, TableShape};
use crate::pgoutput::{OldKind, Tuple, Value};
use crate::protocol::Lsn;
use crate::relay::writer::{Draft, DraftPart};
use crate::route::ALL_SITES;

/// A captured table: its shape and how it is routed.
#[derive(Debug, Clone)]
pub struct Captured {
    pub shape: Arc<TableShape>,
    pub routing: Routing,
    /// When tables are routed by this one (`route = "parent:…"`): the
    /// indexes of the columns they reference; HO keeps where each row went.
    pub referenced: Option<Vec<usize>>,
}

/// Where a captured table's rows go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routing {
    /// To every site (`*`).
    All,
    /// To the site named in the column at this index.
    Column(usize),
    /// Where the row of `parent` its `columns` reference went.
    Parent { parent: String, columns: Vec<usize> },
    /// To the site named by the row's last value, which is not a column
    /// (a full sync's rows, their site computed at HO).
    Last,
}

/// A parent row that moved to another site: its children follow it (the
/// capture reads them from HO and adds them, at `lsn`, for the new site).
#[derive(Debug, Clone)]
pub struct Move {
    pub table: String,
    /// The row's referenced values.
    pub key: Box<[u8]>,
    pub lsn: u64,
}

/// The changes of one table for one target within a packet.
#[derive(Debug)]
pub struct PartDraft {
    pub shape: Arc<TableShape>,
    pub target: String,
    pub changes: Vec<Change>,
    /// Key → index in `changes`, for compaction.
    by_key: KeyIndex,
    /// A keyless table's inserts, for compaction.
    bag: Bag,
    /// Made to carry the table's shape (see [`Batcher::announce`]).
    announced: bool,
}

/// A packet ready to encode: its parts and the range of commit LSNs it holds.
#[derive(Debug, Default)]
pub struct PacketDraft {
    pub parts: Vec<PartDraft>,
    pub lsn_from: u64,
    pub lsn_to: u64,
    /// Changes captured into the packet, before compaction.
    pub captured: u64,
}

impl PacketDraft {
    /// The packet as the relay's writer takes it.
    pub(crate) fn to_write(&self) -> Draft<'_> {
        Draft {
            parts: self
                .parts
                .iter()
                .map(|p| DraftPart {
                    shape: &p.shape,
                    target: &p.target,
                    changes: &p.changes,
                    announced: p.announced,
                })
                .collect(),
            lsn_from: Lsn::from(self.lsn_from),
            lsn_to: Lsn::from(self.lsn_to),
        }
    }
}

/// Bounds of one packet.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub max_rows: usize,
    pub max_bytes: usize,
}

impl From<&crate::config::PacketConfig> for Bounds {
    /// The bounds `[packet]` sets.
    fn from(packet: &crate::config::PacketConfig) -> Bounds {
        Bounds {
            max_rows: packet.max_rows,
            max_bytes: packet.max_bytes,
        }
    }
}

/// Collects changes into packets.
#[derive(Debug)]
pub struct Batcher {
    bounds: Bounds,
    /// Shared, so that each change takes its table without copying it.
    tables: HashMap<u32, Arc<Captured>>,
    current: PacketDraft,
    part_index: HashMap<(String, String), usize>,
    last_part: Option<usize>,
    bytes: usize,
    rows: usize,
    sealed: Vec<PacketDraft>,
    /// The replication origin of the transaction being captured.
    origin: Option<Arc<str>>,
    /// Where parent rows went.
    parents: Parents,
    /// Moves of parent rows whose children are still to follow.
    moves: Vec<Move>,
    /// The open packet holds only moves: (table, key) of each. A move
    /// stands in a packet with other moves only, so that a site deletes a
    /// parent's children (the cascade) after every change before the move
    /// and before any after it.
    moved: Option<HashSet<(String, Box<[u8]>)>>,
    all: Arc<str>,
}

fn value_len(v: &Value) -> usize {
    match v {
        Value::Text(b) | Value::Binary(b) => b.len() + 8,
        _ => 8,
    }
}

pub(super) fn text_of(v: &Value) -> Option<&Bytes> {
    match v {
        Value::Text(b) | Value::Binary(b) => Some(b),
        _ => None,
    }
}

impl Batcher {
    /// A batcher that seals packets at `bounds`.
    pub fn new(bounds: Bounds) -> Batcher {
        Batcher {
            bounds,
            tables: HashMap::new(),
            current: PacketDraft::default(),
            part_index: HashMap::new(),
            last_part: None,
            bytes: 0,
            rows: 0,
            sealed: Vec::new(),
            origin: None,
            parents: Parents::default(),
            moves: Vec::new(),
            moved: None,
            all: Arc::from(ALL_SITES),
        }
    }

    /// The bounds packets are sealed at.
    pub fn bounds(&self) -> Bounds {
        self.bounds
    }

    /// Where parent rows went, to load before the stream starts.
    pub(crate) fn parents_mut(&mut self) -> &mut Parents {
        &mut self.parents
    }

    /// The column names of relation `rel` (none when unknown).
    pub fn columns_of(&self, rel: u32) -> Vec<String> {
        self.tables.get(&rel).map_or_else(Vec::new, |t| {
            t.shape.columns.iter().map(|c| c.name.clone()).collect()
        })
    }

    /// Whether relation `rel` is known.
    pub fn knows(&self, rel: u32) -> bool {
        self.tables.contains_key(&rel)
    }

    /// The transaction ends: moves whose children are to follow, oldest
    /// first. Entries of parent rows it deleted go.
    pub fn end_transaction(&mut self) -> Vec<Move> {
        self.parents.end_transaction();
        std::mem::take(&mut self.moves)
    }

    /// Registers (or re-registers after a schema change) a relation id.
    /// A changed shape seals the open packet first if it holds a part of the
    /// table: a part has one shape.
    pub fn relation(&mut self, id: u32, table: Captured) {
        if let Some(old) = self.tables.get(&id) {
            let name = &old.shape.name;
            if old.shape != table.shape && self.current.parts.iter().any(|p| &p.shape.name == name)
            {
                self.seal();
            }
        }
        self.tables.insert(id, Arc::new(table));
    }

    /// Table `root`'s partitions go to every site, at `lsn`, in a packet of
    /// their own: a part with no column or row that names them.
    pub fn announce_partitions(&mut self, root: String, partitions: Vec<PartitionShape>, lsn: u64) {
        self.seal();
        self.note(lsn);
        self.current.parts.push(PartDraft {
            shape: Arc::new(TableShape {
                name: root,
                partitions,
                ..Default::default()
            }),
            target: ALL_SITES.to_string(),
            changes: Vec::new(),
            by_key: KeyIndex::default(),
            bag: Bag::default(),
            announced: true,
        });
        self.seal();
    }

    /// Relation `id`'s shape goes to every site without a row, at `lsn`:
    /// an empty part (a schema change with no change of a row after it).
    pub fn announce(&mut self, id: u32, lsn: u64) {
        let Some(table) = self.tables.get(&id).cloned() else {
            return;
        };
        self.before_change();
        self.note(lsn);
        let all = self.all.clone();
        let i = self.part_for(&table, &all);
        self.current.parts[i].announced = true;
    }

    /// Sets the replication origin of the changes that follow (per transaction).
    pub fn set_origin(&mut self, origin: Option<Arc<str>>) {
        self.origin = origin;
    }

    /// Packets sealed since the last call, oldest first.
    pub fn take_sealed(&mut self) -> Vec<PacketDraft> {
        std::mem::take(&mut self.sealed)
    }

    /// True when the open packet holds no change.
    pub fn is_empty(&self) -> bool {
        self.current.captured == 0
    }

    /// Seals the open packet (if it holds anything).
    pub fn seal(&mut self) {
        if self.current.captured == 0 {
            return;
        }
        let draft = std::mem::take(&mut self.current);
        self.moved = None;
        self.part_index.clear();
        self.last_part = None;
        self.bytes = 0;
        self.rows = 0;
        self.sealed.push(draft);
    }

    /// The index of the part for (table, target), made when missing. Rows
    /// mostly go to the part the previous row went to: that is checked first.
    fn part_for(&mut self, table: &Captured, target: &str) -> usize {
        if let Some(i) = self.last_part {
            let p = &self.current.parts[i];
            if Arc::ptr_eq(&p.shape, &table.shape) && p.target == target {
                return i;
            }
        }
        let key = (table.shape.name.clone(), target.to_string());
        let idx = match self.part_index.get(&key) {
            Some(&i) => i,
            None => {
                self.current.parts.push(PartDraft {
                    shape: table.shape.clone(),
                    target: target.to_string(),
                    changes: Vec::new(),
                    by_key: KeyIndex::default(),
                    bag: Bag::default(),
                    announced: false,
                });
                self.part_index.insert(key, self.current.parts.len() - 1);
                self.current.parts.len() - 1
            }
        };
        self.last_part = Some(idx);
        idx
    }

    fn push(&mut self, table: &Captured, target: &str, op: Op, lsn: u64, values: Tuple) {
        let idx = self.part_for(table, target);
        let part = &mut self.current.parts[idx];
        self.bytes += values.iter().map(value_len).sum::<usize>();
        let mut change = Change {
            op,
            lsn,
            values,
            origin: self.origin.clone(),
        };
        let found = part
            .by_key
            .find(&part.shape.key, &part.changes, &change.values);
        match found {
            Found::At(at) => {
                let prev = &part.changes[at];
                if op != Op::Delete && prev.op != Op::Delete {
                    // Unchanged TOAST columns take the value of the earlier write.
                    for (i, v) in change.values.iter_mut().enumerate() {
                        if *v == Value::Unchanged {
                            *v = prev.values[i].clone();
                        }
                    }
                    if prev.op == Op::Insert {
                        change.op = Op::Insert;
                    }
                }
                part.changes[at] = change;
            }
            Found::New(slot) => {
                let at = part.changes.len();
                part.by_key.insert(slot, at);
                part.changes.push(change);
                self.rows += 1;
            }
            Found::NoKey if part.shape.key.is_empty() => {
                let grown = part.bag.push(&mut part.changes, change);
                self.rows = self.rows.saturating_add_signed(grown);
            }
            Found::NoKey => {
                part.changes.push(change);
                self.rows += 1;
            }
        }
    }

    /// The site a row goes to (`*`: every site); None for a row whose
    /// routing column is null, or whose parent row went to no site.
    fn target_of(&self, table: &Captured, values: &Tuple) -> Option<Arc<str>> {
        match &table.routing {
            Routing::All => Some(self.all.clone()),
            Routing::Column(c) => values
                .get(*c)
                .and_then(text_of)
                .map(|b| Arc::from(String::from_utf8_lossy(b))),
            Routing::Parent { parent, columns } => {
                let key = refs_key(columns, values)?;
                self.parents.get(parent, &key).cloned()
            }
            Routing::Last => values
                .last()
                .and_then(text_of)
                .map(|b| Arc::from(String::from_utf8_lossy(b))),
        }
    }

    /// Records where a row of a parent table went.
    fn keep(&mut self, table: &Captured, values: &Tuple, target: Option<&Arc<str>>) {
        if let Some(refs) = &table.referenced {
            if let Some(key) = refs_key(refs, values) {
                self.parents
                    .set(&table.shape.name, key, target.map(|t| &**t));
            }
        }
    }

    /// A change that is not a move: the open packet, if it holds moves, is sealed.
    fn before_change(&mut self) {
        if self.moved.is_some() {
            self.seal();
        }
    }

    /// A parent row moves: it goes into a packet of moves only, where it did
    /// not move before.
    fn before_move(&mut self, table: &Captured, values: &Tuple, lsn: u64) {
        let Some(key) = table.referenced.as_ref().and_then(|r| refs_key(r, values)) else {
            return;
        };
        let id = (table.shape.name.clone(), key.clone());
        let seal = match &self.moved {
            None => self.current.captured > 0,
            Some(moved) => moved.contains(&id),
        };
        if seal {
            self.seal();
        }
        self.moved.get_or_insert_with(HashSet::new).insert(id);
        self.moves.push(Move {
            table: table.shape.name.clone(),
            key,
            lsn,
        });
    }

    fn note(&mut self, lsn: u64) {
        if self.current.captured == 0 {
            self.current.lsn_from = lsn;
        }
        self.current.lsn_to = lsn;
        self.current.captured += 1;
    }

    fn check_bounds(&mut self) {
        if self.rows >= self.bounds.max_rows || self.bytes >= self.bounds.max_bytes {
            self.seal();
        }
    }

    /// An INSERT of the transaction committing at `lsn`.
    pub fn insert(&mut self, rel: u32, new: Tuple, lsn: u64) {
        self.before_change();
        self.insert_row(rel, new, lsn);
    }

    /// A child row read from HO that follows its parent's move: added to
    /// the open packet, whatever it holds (after it, a move seals it).
    pub fn insert_following(&mut self, rel: u32, new: Tuple, lsn: u64) {
        self.moved = None;
        self.insert_row(rel, new, lsn);
    }

    fn insert_row(&mut self, rel: u32, mut new: Tuple, lsn: u64) {
        let Some(table) = self.tables.get(&rel).cloned() else {
            return;
        };
        self.note(lsn);
        let target = self.target_of(&table, &new);
        if table.routing == Routing::Last {
            new.pop();
        }
        self.keep(&table, &new, target.as_ref());
        if let Some(target) = target {
            self.push(&table, &target, Op::Insert, lsn, new);
        }
        self.check_bounds();
    }

    /// An UPDATE; `old` is the old key ('K') or the whole old row ('O').
    pub fn update(&mut self, rel: u32, old: Option<(OldKind, Tuple)>, mut new: Tuple, lsn: u64) {
        let Some(table) = self.tables.get(&rel).cloned() else {
            return;
        };
        // A full old row (REPLICA IDENTITY FULL) holds the unchanged TOAST values.
        if let Some((OldKind::Full, old_row)) = &old {
            for (v, o) in new.iter_mut().zip(old_row) {
                if *v == Value::Unchanged {
                    *v = o.clone();
                }
            }
        }
        let key_of = |t: &Tuple| -> Vec<Option<Bytes>> {
            table
                .shape
                .key
                .iter()
                .map(|&k| t.get(k).and_then(text_of).cloned())
                .collect()
        };
        let new_target = self.target_of(&table, &new);
        let (old_target, old_key_changed) = match &old {
            Some((_, o)) => {
                let old_target = if table.routing != Routing::All {
                    self.target_of(&table, o)
                } else {
                    new_target.clone()
                };
                (
                    old_target,
                    !table.shape.key.is_empty() && key_of(o) != key_of(&new),
                )
            }
            None => (new_target.clone(), false),
        };
        let keyless = table.shape.key.is_empty();
        if table.referenced.is_some() && old_target != new_target {
            self.before_move(&table, &new, lsn);
        } else {
            self.before_change();
        }
        self.note(lsn);
        if let (Some(refs), Some((_, o))) = (&table.referenced, &old) {
            // The referenced values changed: the old ones' entry goes.
            match refs_key(refs, o) {
                Some(k) if Some(&k) != refs_key(refs, &new).as_ref() => {
                    self.parents.delete(&table.shape.name, k)
                }
                _ => {}
            }
        }
        self.keep(&table, &new, new_target.as_ref());
        if let Some((_, o)) = &old {
            if old_key_changed || old_target != new_target || keyless {
                if let Some(t) = &old_target {
                    self.push(&table, t, Op::Delete, lsn, o.clone());
                }
            }
        }
        if let Some(t) = &new_target {
            let moved = old_target.as_ref() != Some(t);
            let op = if moved || keyless {
                Op::Insert
            } else {
                Op::Update
            };
            self.push(&table, t, op, lsn, new);
        }
        self.check_bounds();
    }

    /// A DELETE; `old` is the old key or whole old row.
    pub fn delete(&mut self, rel: u32, old: Tuple, lsn: u64) {
        let Some(table) = self.tables.get(&rel).cloned() else {
            return;
        };
        self.before_change();
        self.note(lsn);
        if let Some(k) = table.referenced.as_ref().and_then(|r| refs_key(r, &old)) {
            self.parents.delete(&table.shape.name, k);
        }
        if let Some(target) = self.target_of(&table, &old) {
            self.push(&table, &target, Op::Delete, lsn, old);
        }
        self.check_bounds();
    }

    /// A TRUNCATE of some relations: it gets a packet of its own, after
    /// everything captured before it, so every site applies it in order.
    pub fn truncate(&mut self, rels: &[u32], lsn: u64) {
        let tables: Vec<Arc<Captured>> = rels
            .iter()
            .filter_map(|r| self.tables.get(r).cloned())
            .collect();
        if tables.is_empty() {
            return;
        }
        self.seal();
        for table in &tables {
            if table.referenced.is_some() {
                // Every row of it is gone: HO's children went with them.
                self.parents.clear(&table.shape.name);
            }
        }
        self.note(lsn);
        for table in &tables {
            let width = table.shape.columns.len();
            // A truncate reaches every site that may hold rows of the table.
            let change = Change {
                op: Op::Truncate,
                lsn,
                values: vec![Value::Null; width],
                origin: self.origin.clone(),
            };
            self.current.parts.push(PartDraft {
                shape: table.shape.clone(),
                target: ALL_SITES.to_string(),
                changes: vec![change],
                by_key: KeyIndex::default(),
                bag: Bag::default(),
                announced: false,
            });
        }
        self.seal();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::ColumnShape;

    fn table(route_column: Option<usize>) -> Captured {
        let routing = route_column.map_or(Routing::All, Routing::Column);
        let col = |n: &str| ColumnShape {
            name: n.into(),
            type_oid: 25,
            type_modifier: -1,
            pg_type: "text".into(),
            ..Default::default()
        };
        Captured {
            shape: Arc::new(TableShape {
                name: "public.t".into(),
                columns: vec![col("id"), col("site"), col("body")],
                key: vec![0],
                cascade: Vec::new(),
                partitions: Vec::new(),
            }),
            routing,
            referenced: None,
        }
    }

    fn t(s: &str) -> Value {
        Value::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn batcher(max_rows: usize) -> Batcher {
        Batcher::new(Bounds {
            max_rows,
            max_bytes: 1 << 30,
        })
    }

    #[test]
    fn compacts_to_the_last_write_per_key_and_fills_unchanged_toast() {
        let mut b = batcher(100);
        b.relation(1, table(None));
        b.insert(1, vec![t("1"), t("a"), t("big")], 10);
        b.update(1, None, vec![t("1"), t("b"), Value::Unchanged], 11);
        b.insert(1, vec![t("2"), t("a"), t("x")], 12);
        b.delete(1, vec![t("2"), Value::Null, Value::Null], 13);
        b.seal();
        let p = b.take_sealed().pop().unwrap();
        assert_eq!(p.captured, 4);
        assert_eq!((p.lsn_from, p.lsn_to), (10, 13));
        let part = &p.parts[0];
        assert_eq!(part.target, "*");
        assert_eq!(part.changes.len(), 2);
        assert_eq!(part.changes[0].op, Op::Insert);
        assert_eq!(part.changes[0].values, vec![t("1"), t("b"), t("big")]);
        assert_eq!(part.changes[1].op, Op::Delete);
    }

    #[test]
    fn routes_by_column_and_moves_rows() {
        let mut b = batcher(100);
        b.relation(1, table(Some(1)));
        b.insert(1, vec![t("1"), t("s1"), t("x")], 10);
        let old = (OldKind::Full, vec![t("1"), t("s1"), t("x")]);
        b.update(1, Some(old), vec![t("1"), t("s2"), Value::Unchanged], 11);
        b.seal();
        let p = b.take_sealed().pop().unwrap();
        let s1 = p.parts.iter().find(|p| p.target == "s1").unwrap();
        let s2 = p.parts.iter().find(|p| p.target == "s2").unwrap();
        assert_eq!(s1.changes.len(), 1);
        assert_eq!(s1.changes[0].op, Op::Delete);
        assert_eq!(s2.changes[0].op, Op::Insert);
        assert_eq!(s2.changes[0].values[2], t("x"));
    }

    #[test]
    fn key_change_deletes_the_old_key() {
        let mut b = batcher(100);
        b.relation(1, table(None));
        let old = (OldKind::Key, vec![t("1"), Value::Null, Value::Null]);
        b.update(1, Some(old), vec![t("9"), t("a"), t("b")], 11);
        b.seal();
        let p = b.take_sealed().pop().unwrap();
        let ops: Vec<Op> = p.parts[0].changes.iter().map(|c| c.op).collect();
        assert_eq!(ops, vec![Op::Delete, Op::Update]);
    }

    #[test]
    fn seals_at_the_row_bound_and_truncate_stands_alone() {
        let mut b = batcher(2);
        b.relation(1, table(None));
        for i in 0..5 {
            b.insert(1, vec![t(&i.to_string()), t("a"), t("b")], 10);
        }
        assert_eq!(b.take_sealed().len(), 2);
        b.truncate(&[1], 20);
        b.insert(1, vec![t("7"), t("a"), t("b")], 21);
        b.seal();
        let sealed = b.take_sealed();
        assert_eq!(sealed.len(), 3);
        assert_eq!(sealed[1].parts[0].changes[0].op, Op::Truncate);
        assert_eq!(sealed[2].parts[0].changes[0].values[0], t("7"));
    }
}

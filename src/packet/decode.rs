//! Reading a part back: the Arrow IPC stream into rows in PostgreSQL's COPY
//! text format, ready to load into a staging table.

use std::io::Cursor;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::ipc::reader::StreamReader;

use super::layout::{layout, Layout};
use super::{
    Cascade, PacketError, PartitionShape, META_CASCADE, META_KEY, META_PARTITIONS, META_TABLE,
};

/// A data column of a part: its name and PostgreSQL type, and what HO
/// says of it beyond the type (see [`super::ColumnShape`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartColumn {
    pub name: String,
    pub pg_type: String,
    pub not_null: bool,
    pub missing: Option<String>,
    pub identity: bool,
    pub default: Option<String>,
}

/// A decoded part: which table, which key, which columns, and the rows.
#[derive(Debug)]
pub struct Part {
    /// `schema.table`, unquoted.
    pub table: String,
    /// Key column names; empty for a table without a key.
    pub key: Vec<String>,
    pub columns: Vec<PartColumn>,
    /// What a site deletes with each deleted row (see [`Cascade`]).
    pub cascade: Vec<Cascade>,
    /// The partitions a part announces (see [`super::META_PARTITIONS`]).
    pub partitions: Vec<PartitionShape>,
    pub(super) layout: Layout,
    pub(super) batches: Vec<RecordBatch>,
    /// The operations its rows carry, each once.
    ops: Vec<super::Op>,
}

impl Part {
    /// The part without the data columns named in `names`: a site that keeps
    /// its own columns leaves HO's new ones out.
    pub fn without_columns(&self, names: &[String]) -> Part {
        let keep: Vec<usize> = (0..self.columns.len())
            .filter(|&i| !names.contains(&self.columns[i].name))
            .collect();
        let mut layout = self.layout.clone();
        layout.data = keep.iter().map(|&i| self.layout.data[i]).collect();
        Part {
            table: self.table.clone(),
            key: self.key.clone(),
            columns: keep.iter().map(|&i| self.columns[i].clone()).collect(),
            cascade: self.cascade.clone(),
            partitions: self.partitions.clone(),
            layout,
            batches: self.batches.clone(),
            ops: self.ops.clone(),
        }
    }
}

/// Reads and checks one part. Any bytes give an error or a part, never a
/// panic: the Arrow IPC reader can panic on some damaged inputs, so such a
/// panic is caught and reported as a damaged part.
pub fn read_part(bytes: &[u8]) -> Result<Part, PacketError> {
    check_buffer_sizes(bytes)?;
    std::panic::catch_unwind(|| read_part_unchecked(bytes)).unwrap_or_else(|_| {
        Err(PacketError::Invalid(
            "the Arrow IPC stream is damaged (the reader gave up on it)".into(),
        ))
    })
}

/// The largest buffer a part may ask to be decompressed into (Arrow's
/// offsets are 32-bit, so no buffer of a valid part is larger).
const MAX_BUFFER_BYTES: u64 = 1 << 31;

/// Checks what the Arrow reader trusts before it allocates: the length a
/// compressed buffer states must be the length its zstd frame records, and
/// sensible. A damaged length would otherwise ask for an allocation whose
/// failure aborts the process, which no `catch_unwind` stops. Framing errors
/// are left to the reader, which reports them.
fn check_buffer_sizes(bytes: &[u8]) -> Result<(), PacketError> {
    use arrow::ipc::MessageHeader;
    let invalid = |m: String| PacketError::Invalid(m);
    let word =
        |at: usize| -> Option<[u8; 4]> { bytes.get(at..at.checked_add(4)?)?.try_into().ok() };
    let mut at = 0usize;
    loop {
        let Some(mut len) = word(at) else {
            return Ok(());
        };
        if len == [0xff; 4] {
            at += 4;
            let Some(l) = word(at) else { return Ok(()) };
            len = l;
        }
        let Ok(meta_len) = usize::try_from(i32::from_le_bytes(len)) else {
            return Ok(());
        };
        if meta_len == 0 {
            return Ok(());
        }
        let meta_start = at + 4;
        let Some(meta) = meta_start
            .checked_add(meta_len)
            .and_then(|end| bytes.get(meta_start..end))
        else {
            return Ok(());
        };
        let message = arrow::ipc::root_as_message(meta)
            .map_err(|e| invalid(format!("a message header is damaged: {e}")))?;
        let Ok(body_len) = usize::try_from(message.bodyLength()) else {
            return Ok(());
        };
        let body_start = meta_start + meta_len;
        let Some(body) = body_start
            .checked_add(body_len)
            .and_then(|end| bytes.get(body_start..end))
        else {
            return Ok(());
        };
        if message.header_type() == MessageHeader::DictionaryBatch {
            return Err(invalid(
                "a part has a dictionary batch; relaysync writes none".into(),
            ));
        }
        check_compressed_buffers(&message, body)?;
        at = body_start + body_len;
    }
}

/// Checks that each zstd buffer of a record batch lies inside its message
/// `body` and states the size its frame confirms (at most
/// MAX_BUFFER_BYTES), before Arrow allocates for it.
fn check_compressed_buffers(
    message: &arrow::ipc::Message<'_>,
    body: &[u8],
) -> Result<(), PacketError> {
    use arrow::ipc::CompressionType;
    let invalid = |m: String| PacketError::Invalid(m);
    let Some(compression) = message
        .header_as_record_batch()
        .and_then(|rb| rb.compression())
    else {
        return Ok(());
    };
    if compression.codec() != CompressionType::ZSTD {
        return Err(invalid(
            "a part is compressed with a codec other than zstd".into(),
        ));
    }
    let buffers = message.header_as_record_batch().and_then(|rb| rb.buffers());
    for b in buffers.iter().flatten() {
        let range = usize::try_from(b.offset())
            .ok()
            .and_then(|off| Some(off..off.checked_add(usize::try_from(b.length()).ok()?)?));
        let Some(buf) = range.and_then(|r| body.get(r)) else {
            return Err(invalid("a buffer lies outside its message body".into()));
        };
        let Some((stated, frame)) = buf.split_first_chunk::<8>() else {
            continue;
        };
        let stated = i64::from_le_bytes(*stated);
        // -1: stored uncompressed; 0: empty; negative: the reader refuses it.
        if stated <= 0 {
            continue;
        }
        match zstd_safe::get_frame_content_size(frame) {
            Ok(Some(n)) if n == stated as u64 && n <= MAX_BUFFER_BYTES => {}
            _ => {
                return Err(invalid(format!(
                "a compressed buffer states {stated} bytes, which its zstd frame does not confirm"
            )))
            }
        }
    }
    Ok(())
}

fn read_part_unchecked(bytes: &[u8]) -> Result<Part, PacketError> {
    let invalid = |m: &str| PacketError::Invalid(m.to_string());
    let reader = StreamReader::try_new(Cursor::new(bytes), None)?;
    let schema = reader.schema();
    let meta = schema.metadata();
    let table = meta
        .get(META_TABLE)
        .ok_or_else(|| invalid("no relaysync.table in the schema metadata"))?
        .clone();
    let key: Vec<String> = serde_json::from_str(meta.get(META_KEY).map_or("[]", |s| s.as_str()))
        .map_err(|e| PacketError::Invalid(format!("relaysync.key is not a JSON list: {e}")))?;
    let cascade: Vec<Cascade> = match meta.get(META_CASCADE) {
        Some(s) => serde_json::from_str(s).map_err(|e| {
            PacketError::Invalid(format!("relaysync.cascade is not a list of cascades: {e}"))
        })?,
        None => Vec::new(),
    };
    let partitions: Vec<PartitionShape> = match meta.get(META_PARTITIONS) {
        Some(s) => serde_json::from_str(s).map_err(|e| {
            PacketError::Invalid(format!(
                "relaysync.partitions is not a list of partitions: {e}"
            ))
        })?,
        None => Vec::new(),
    };
    let (columns, layout) = layout(&schema)?;
    for k in &key {
        if !columns.iter().any(|c| &c.name == k) {
            return Err(PacketError::Invalid(format!(
                "key column {k} is not in the part"
            )));
        }
    }
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    let mut ops = Vec::new();
    for batch in &batches {
        let codes = batch
            .column(layout.op)
            .as_string_opt::<i32>()
            .ok_or_else(|| invalid("_op missing in a batch"))?;
        if codes.null_count() > 0 {
            return Err(invalid("_op holds a value other than I, U, D, T"));
        }
        for code in codes.iter().flatten() {
            let op = super::Op::from_code(code)
                .ok_or_else(|| invalid("_op holds a value other than I, U, D, T"))?;
            if !ops.contains(&op) {
                ops.push(op);
            }
        }
    }
    Ok(Part {
        table,
        key,
        columns,
        cascade,
        partitions,
        layout,
        batches,
        ops,
    })
}

impl Part {
    /// Number of rows in the part.
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// Number of record batches.
    pub fn batch_count(&self) -> usize {
        self.batches.len()
    }

    /// True when the part holds a truncate of its table.
    pub fn has_truncate(&self) -> bool {
        self.has_op(super::Op::Truncate)
    }

    /// True when some row's operation is `op`.
    pub fn has_op(&self, op: super::Op) -> bool {
        self.ops.contains(&op)
    }

    /// True when some row leaves out unchanged TOAST values.
    pub fn has_unchanged(&self) -> bool {
        let Some(at) = self.layout.unchanged else {
            return false;
        };
        self.batches.iter().any(|b| {
            let a = b.column(at);
            a.null_count() < a.len()
        })
    }

    /// True when some row carries the replication origin `name`.
    pub fn has_origin(&self, name: &str) -> bool {
        let Some(at) = self.layout.origin else {
            return false;
        };
        self.batches.iter().any(|b| {
            b.column(at)
                .as_string_opt::<i32>()
                .is_some_and(|o| o.iter().any(|v| v == Some(name)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{encode_part, Change, ColumnShape, Op, TableShape};
    use super::*;
    use crate::pgoutput::Value;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn shape() -> TableShape {
        let col = |name: &str, oid: u32, typmod: i32, pg: &str| ColumnShape {
            name: name.into(),
            type_oid: oid,
            type_modifier: typmod,
            pg_type: pg.into(),
            ..Default::default()
        };
        TableShape {
            name: "public.t".into(),
            columns: vec![
                col("id", 23, -1, "integer"),
                col("price", 1700, (10 << 16 | 2) + 4, "numeric(10,2)"),
                col("note", 25, -1, "text"),
                col("f", 701, -1, "double precision"),
                col("b", 17, -1, "bytea"),
            ],
            key: vec![0],
            cascade: Vec::new(),
            partitions: Vec::new(),
        }
    }

    fn t(s: &str) -> Value {
        Value::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn round_trip_to_copy_text() {
        let changes = vec![
            Change {
                op: Op::Insert,
                lsn: 10,
                values: vec![t("1"), t("12.50"), t("a\tb\\c\nd"), t("NaN"), t("\\x00ff")],
                origin: None,
            },
            Change {
                op: Op::Update,
                lsn: 11,
                values: vec![
                    t("2"),
                    Value::Null,
                    Value::Unchanged,
                    t("-Infinity"),
                    Value::Null,
                ],
                origin: None,
            },
            Change {
                op: Op::Delete,
                lsn: 12,
                values: vec![t("3"), Value::Null, Value::Null, Value::Null, Value::Null],
                origin: Some("up".into()),
            },
        ];
        let bytes = encode_part(&shape(), &changes).unwrap();
        let part = read_part(&bytes).unwrap();
        assert_eq!(part.table, "public.t");
        assert_eq!(part.key, vec!["id"]);
        assert_eq!(part.rows(), 3);
        let mut out = Vec::new();
        part.write_copy_text(0, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1\t12.50\ta\\tb\\\\c\\nd\tNaN\t\\\\x00ff\tI\t\\N\t\\N\n\
             2\t\\N\t\\N\t-Infinity\t\\N\tU\t{\"note\"}\t\\N\n\
             3\t\\N\t\\N\t\\N\t\\N\tD\t\\N\tup\n"
        );
    }

    #[test]
    fn data_columns_named_like_bookkeeping_round_trip() {
        let mut shape = shape();
        for (c, name) in shape
            .columns
            .iter_mut()
            .zip(["_op", "_lsn", "_unchanged", "_origin"])
        {
            c.name = name.into();
        }
        let changes = vec![Change {
            op: Op::Update,
            lsn: 1,
            values: vec![t("1"), t("2.00"), Value::Unchanged, t("1.5"), t("\\x01")],
            origin: Some("o".into()),
        }];
        let part = read_part(&encode_part(&shape, &changes).unwrap()).unwrap();
        let names: Vec<&str> = part.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["_op", "_lsn", "_unchanged", "_origin", "b"]);
        assert_eq!(part.key, vec!["_op"]);
        assert!(part.has_op(Op::Update) && part.has_unchanged() && part.has_origin("o"));
        let mut out = Vec::new();
        part.write_copy_text(0, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1\t2.00\t\\N\t1.5\t\\\\x01\tU\t{\"_unchanged\"}\to\n"
        );
    }

    #[test]
    fn a_value_that_does_not_fit_keeps_the_column_as_text() {
        let changes = vec![Change {
            op: Op::Insert,
            lsn: 1,
            values: vec![t("1"), t("NaN"), Value::Null, Value::Null, Value::Null],
            origin: None,
        }];
        let part = read_part(&encode_part(&shape(), &changes).unwrap()).unwrap();
        let mut out = Vec::new();
        part.write_copy_text(0, &mut out);
        assert!(String::from_utf8(out).unwrap().starts_with("1\tNaN\t"));
    }

    /// Every byte of a part set to values that turn a length into a huge
    /// one: each read is an error or a part, and never an abort.
    #[test]
    fn any_damaged_byte_is_an_error_not_an_abort() {
        let changes = vec![Change {
            op: Op::Insert,
            lsn: 1,
            values: vec![t("1"), t("2.00"), t("x"), t("1.5"), t("\\x01")],
            origin: Some("o".into()),
        }];
        let good = encode_part(&shape(), &changes).unwrap();
        let mut damaged = 0;
        for i in 0..good.len() {
            for byte in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut bytes = good.clone();
                bytes[i] = byte;
                if read_part(&bytes).is_err() {
                    damaged += 1;
                }
            }
        }
        assert!(damaged > 0);
    }

    proptest! {
        #[test]
        fn never_panics_on_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(part) = read_part(&data) {
                let mut out = Vec::new();
                for i in 0..part.batch_count() {
                    part.write_copy_text(i, &mut out);
                }
            }
        }

        #[test]
        fn never_panics_on_a_damaged_part(flip in 0usize..2000, byte in any::<u8>()) {
            let changes = vec![Change { op: Op::Insert, lsn: 1,
                values: vec![t("1"), t("2.00"), t("x"), t("1.5"), t("\\x01")], origin: Some("o".into()) }];
            let mut bytes = encode_part(&shape(), &changes).unwrap();
            let i = flip % bytes.len();
            bytes[i] = byte;
            if let Ok(part) = read_part(&bytes) {
                let mut out = Vec::new();
                for i in 0..part.batch_count() {
                    part.write_copy_text(i, &mut out);
                }
            }
        }
    }
}

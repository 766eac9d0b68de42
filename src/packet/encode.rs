//! Encoding a part: changes of one table for one target into an Arrow IPC stream.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder,
    Float32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder, ListBuilder,
    RecordBatch, StringBuilder, TimestampMicrosecondBuilder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow::ipc::CompressionType;

use super::value::{self, arrow_type};
use super::{
    PacketError, TableShape, COL_LSN, COL_OP, COL_ORIGIN, COL_UNCHANGED, META_CASCADE,
    META_DEFAULT, META_IDENTITY, META_KEY, META_MISSING, META_NOT_NULL, META_PARTITIONS,
    META_PG_OID, META_PG_TYPE, META_ROLE, META_TABLE, ROLE_LSN, ROLE_OP, ROLE_ORIGIN,
    ROLE_UNCHANGED,
};
use crate::pgoutput::Value;

/// What a change does to its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Insert,
    Update,
    Delete,
    /// Remove every row of the table (a TRUNCATE); carries no values.
    Truncate,
}

impl Op {
    /// The one-letter code stored in `_op`.
    pub fn code(self) -> &'static str {
        match self {
            Op::Insert => "I",
            Op::Update => "U",
            Op::Delete => "D",
            Op::Truncate => "T",
        }
    }

    /// The operation of a one-letter code.
    pub fn from_code(code: &str) -> Option<Op> {
        match code {
            "I" => Some(Op::Insert),
            "U" => Some(Op::Update),
            "D" => Some(Op::Delete),
            "T" => Some(Op::Truncate),
            _ => None,
        }
    }
}

/// One row change, with one value per column of its table's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub op: Op,
    pub lsn: u64,
    pub values: Vec<Value>,
    /// The replication origin of the change's transaction, if it had one.
    pub origin: Option<Arc<str>>,
}

fn text(v: &Value) -> Option<&[u8]> {
    match v {
        Value::Text(b) | Value::Binary(b) => Some(b),
        Value::Null | Value::Unchanged => None,
    }
}

/// Builds the typed array of one column, or `None` when some value does not
/// fit the typed form (the caller then stores the column as text).
fn typed_column(dt: &DataType, changes: &[Change], col: usize) -> Option<ArrayRef> {
    let n = changes.len();
    let vals = changes.iter().map(|c| c.values.get(col).and_then(text));
    macro_rules! build {
        ($builder:expr, $parse:expr) => {{
            let mut b = $builder;
            for v in vals {
                match v {
                    None => b.append_null(),
                    Some(s) => b.append_value($parse(s)?),
                }
            }
            Some(Arc::new(b.finish()) as ArrayRef)
        }};
    }
    match dt {
        DataType::Boolean => build!(BooleanBuilder::with_capacity(n), value::parse_bool),
        DataType::Int16 => build!(Int16Builder::with_capacity(n), value::parse_int::<i16>),
        DataType::Int32 => build!(Int32Builder::with_capacity(n), value::parse_int::<i32>),
        DataType::Int64 => build!(Int64Builder::with_capacity(n), value::parse_int::<i64>),
        DataType::Float32 => build!(Float32Builder::with_capacity(n), |s| {
            value::parse_float(s).map(|f| f as f32)
        }),
        DataType::Float64 => build!(Float64Builder::with_capacity(n), value::parse_float),
        DataType::Date32 => build!(Date32Builder::with_capacity(n), value::parse_date),
        DataType::Timestamp(_, tz) => {
            let utc = tz.is_some();
            let b = TimestampMicrosecondBuilder::with_capacity(n);
            let b = if utc { b.with_timezone("UTC") } else { b };
            build!(b, |s| value::parse_timestamp(s, utc))
        }
        DataType::Decimal128(p, s) => {
            let (p, s) = (*p, *s);
            let b = Decimal128Builder::with_capacity(n)
                .with_precision_and_scale(p, s)
                .ok()?;
            build!(b, |v| value::parse_decimal(v, p, s))
        }
        DataType::Binary => {
            let mut b = BinaryBuilder::with_capacity(n, 0);
            for v in vals {
                match v {
                    None => b.append_null(),
                    Some(s) => b.append_value(value::parse_bytea(s)?),
                }
            }
            Some(Arc::new(b.finish()))
        }
        _ => None,
    }
}

fn text_column(changes: &[Change], col: usize) -> ArrayRef {
    let mut b = StringBuilder::with_capacity(changes.len(), 0);
    for c in changes {
        match c.values.get(col).and_then(text) {
            // The text form of every PostgreSQL type is valid in the database
            // encoding (UTF8 is required); invalid bytes are replaced rather than lost silently.
            Some(s) => b.append_value(String::from_utf8_lossy(s)),
            None => b.append_null(),
        }
    }
    Arc::new(b.finish())
}

/// A bookkeeping field, marked as such in its metadata.
fn meta_field(name: &str, dt: DataType, role: &str) -> Field {
    let nullable = role != ROLE_OP && role != ROLE_LSN;
    Field::new(name, dt, nullable)
        .with_metadata(HashMap::from([(META_ROLE.to_string(), role.to_string())]))
}

/// Encodes the changes of one table as one Arrow IPC stream with zstd bodies.
pub fn encode_part(shape: &TableShape, changes: &[Change]) -> Result<Vec<u8>, PacketError> {
    let mut fields = Vec::with_capacity(shape.columns.len() + 3);
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(shape.columns.len() + 3);
    for (i, col) in shape.columns.iter().enumerate() {
        let dt = arrow_type(col.type_oid, col.type_modifier);
        let array = typed_column(&dt, changes, i).unwrap_or_else(|| text_column(changes, i));
        let mut meta = HashMap::from([
            (META_PG_TYPE.to_string(), col.pg_type.clone()),
            (META_PG_OID.to_string(), col.type_oid.to_string()),
        ]);
        if col.not_null {
            meta.insert(META_NOT_NULL.to_string(), "true".to_string());
        }
        if let Some(missing) = &col.missing {
            meta.insert(META_MISSING.to_string(), missing.clone());
        }
        if col.identity {
            meta.insert(META_IDENTITY.to_string(), "true".to_string());
        }
        if let Some(default) = &col.default {
            meta.insert(META_DEFAULT.to_string(), default.clone());
        }
        fields.push(Field::new(&col.name, array.data_type().clone(), true).with_metadata(meta));
        arrays.push(array);
    }

    let mut op = StringBuilder::with_capacity(changes.len(), changes.len());
    let mut lsn = UInt64Builder::with_capacity(changes.len());
    let mut unchanged = ListBuilder::new(StringBuilder::new());
    for c in changes {
        op.append_value(c.op.code());
        lsn.append_value(c.lsn);
        let mut any = false;
        for (i, v) in c.values.iter().enumerate() {
            if *v == Value::Unchanged {
                unchanged.values().append_value(&shape.columns[i].name);
                any = true;
            }
        }
        unchanged.append(any);
    }
    let unchanged = unchanged.finish();
    fields.push(meta_field(COL_OP, DataType::Utf8, ROLE_OP));
    fields.push(meta_field(COL_LSN, DataType::UInt64, ROLE_LSN));
    fields.push(meta_field(
        COL_UNCHANGED,
        unchanged.data_type().clone(),
        ROLE_UNCHANGED,
    ));
    arrays.push(Arc::new(op.finish()));
    arrays.push(Arc::new(lsn.finish()));
    arrays.push(Arc::new(unchanged));
    if changes.iter().any(|c| c.origin.is_some()) {
        let mut origin = StringBuilder::with_capacity(changes.len(), 0);
        for c in changes {
            origin.append_option(c.origin.as_deref());
        }
        fields.push(meta_field(COL_ORIGIN, DataType::Utf8, ROLE_ORIGIN));
        arrays.push(Arc::new(origin.finish()));
    }

    let key: Vec<String> = shape
        .key
        .iter()
        .map(|&i| shape.columns[i].name.clone())
        .collect();
    let mut meta = HashMap::from([
        (META_TABLE.to_string(), shape.name.clone()),
        (
            META_KEY.to_string(),
            serde_json::to_string(&key).unwrap_or_default(),
        ),
    ]);
    if !shape.partitions.is_empty() {
        meta.insert(
            META_PARTITIONS.to_string(),
            serde_json::to_string(&shape.partitions).unwrap_or_default(),
        );
    }
    if !shape.cascade.is_empty() {
        meta.insert(
            META_CASCADE.to_string(),
            serde_json::to_string(&shape.cascade).unwrap_or_default(),
        );
    }
    let schema = Arc::new(Schema::new_with_metadata(fields, meta));
    let batch = RecordBatch::try_new(schema.clone(), arrays)?;
    // Level 1: the fastest zstd; packets are still a fraction of pgoutput's bytes.
    let options = IpcWriteOptions::default()
        .try_with_compression(Some(CompressionType::ZSTD))?
        .try_with_compression_level(Some(1))?;
    let mut out = Vec::new();
    let mut writer = StreamWriter::try_new_with_options(&mut out, &schema, options)?;
    writer.write(&batch)?;
    writer.finish()?;
    drop(writer);
    Ok(out)
}

//! Writing a part's rows for PostgreSQL's COPY: text form (with the
//! bookkeeping columns, into a staging table) or the table's columns alone.

use arrow::array::{Array, AsArray, ListArray, StringArray};
use arrow::datatypes::DataType;

use super::value;
use super::Part;

/// Appends `s` escaped for COPY text format.
pub(crate) fn copy_escape(s: &[u8], out: &mut Vec<u8>) {
    for &b in s {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.push(b),
        }
    }
}

/// Writes value `row` of `array` in PostgreSQL text form, COPY-escaped; `\N` for NULL.
fn write_value(array: &dyn Array, row: usize, out: &mut Vec<u8>, scratch: &mut Vec<u8>) {
    use arrow::datatypes::{
        Date32Type, Decimal128Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type,
        TimestampMicrosecondType,
    };
    if array.is_null(row) {
        out.extend_from_slice(b"\\N");
        return;
    }
    scratch.clear();
    match array.data_type() {
        DataType::Utf8 => copy_escape(array.as_string::<i32>().value(row).as_bytes(), out),
        DataType::LargeUtf8 => copy_escape(array.as_string::<i64>().value(row).as_bytes(), out),
        DataType::Boolean => out.push(if array.as_boolean().value(row) {
            b't'
        } else {
            b'f'
        }),
        DataType::Int16 => write_display(array.as_primitive::<Int16Type>().value(row), out),
        DataType::Int32 => write_display(array.as_primitive::<Int32Type>().value(row), out),
        DataType::Int64 => write_display(array.as_primitive::<Int64Type>().value(row), out),
        DataType::Float32 => {
            value::format_float32(array.as_primitive::<Float32Type>().value(row), out)
        }
        DataType::Float64 => {
            value::format_float(array.as_primitive::<Float64Type>().value(row), out)
        }
        DataType::Date32 => value::format_date(array.as_primitive::<Date32Type>().value(row), out),
        DataType::Timestamp(_, tz) => value::format_timestamp(
            array.as_primitive::<TimestampMicrosecondType>().value(row),
            tz.is_some(),
            out,
        ),
        DataType::Decimal128(_, s) => {
            value::format_decimal(array.as_primitive::<Decimal128Type>().value(row), *s, out)
        }
        DataType::Binary => {
            value::format_bytea(array.as_binary::<i32>().value(row), scratch);
            copy_escape(scratch, out)
        }
        _ => out.extend_from_slice(b"\\N"),
    }
}

fn write_display(v: impl std::fmt::Display, out: &mut Vec<u8>) {
    use std::io::Write;
    let _ = write!(out, "{v}");
}

/// Writes a list of names as a PostgreSQL `text[]` literal.
fn write_name_array(names: &StringArray, out: &mut Vec<u8>) {
    let mut lit = Vec::from(&b"{"[..]);
    for (i, n) in names.iter().flatten().enumerate() {
        if i > 0 {
            lit.push(b',');
        }
        lit.push(b'"');
        for &b in n.as_bytes() {
            if b == b'"' || b == b'\\' {
                lit.push(b'\\');
            }
            lit.push(b);
        }
        lit.push(b'"');
    }
    lit.push(b'}');
    copy_escape(&lit, out);
}

/// One batch's columns by role: the data columns in order, and the
/// bookkeeping columns.
pub(super) struct BatchColumns<'a> {
    pub(crate) rows: usize,
    pub(crate) data: Vec<&'a dyn Array>,
    pub(crate) ops: &'a StringArray,
    pub(crate) unchanged: Option<&'a ListArray>,
    pub(crate) origin: Option<&'a StringArray>,
}

impl Part {
    /// Writes the rows of batch `index` as COPY text lines: the data columns,
    /// then `_op`, `_unchanged` as a `text[]`, and `_origin`. Truncate rows
    /// are skipped.
    pub fn write_copy_text(&self, index: usize, out: &mut Vec<u8>) {
        self.write_copy(index, out, true)
    }

    /// Writes the rows of batch `index` as COPY text lines of the data
    /// columns only, as the target table takes them. Truncate rows are
    /// skipped.
    pub(crate) fn write_copy_data(&self, index: usize, out: &mut Vec<u8>) {
        self.write_copy(index, out, false)
    }

    /// The columns of batch `index` by role, for writing its rows.
    pub(super) fn batch_columns(&self, index: usize) -> Option<BatchColumns<'_>> {
        let batch = self.batches.get(index)?;
        let layout = &self.layout;
        Some(BatchColumns {
            rows: batch.num_rows(),
            data: layout
                .data
                .iter()
                .map(|&i| batch.column(i).as_ref())
                .collect(),
            ops: batch
                .column(layout.op)
                .as_string_opt::<i32>()
                .expect("checked in read_part"),
            unchanged: layout
                .unchanged
                .and_then(|i| batch.column(i).as_any().downcast_ref::<ListArray>()),
            origin: layout
                .origin
                .and_then(|i| batch.column(i).as_string_opt::<i32>()),
        })
    }

    fn write_copy(&self, index: usize, out: &mut Vec<u8>, meta: bool) {
        let Some(BatchColumns {
            rows,
            data,
            ops,
            unchanged,
            origin,
        }) = self.batch_columns(index)
        else {
            return;
        };
        let mut scratch = Vec::new();
        for row in 0..rows {
            let op = ops.value(row);
            if op == "T" {
                continue;
            }
            if !meta {
                for (i, a) in data.iter().enumerate() {
                    if i > 0 {
                        out.push(b'\t');
                    }
                    write_value(*a, row, out, &mut scratch);
                }
                out.push(b'\n');
                continue;
            }
            for a in &data {
                write_value(*a, row, out, &mut scratch);
                out.push(b'\t');
            }
            out.extend_from_slice(op.as_bytes());
            out.push(b'\t');
            match unchanged {
                Some(u) if u.is_valid(row) => {
                    let names = u.value(row);
                    match names.as_any().downcast_ref::<StringArray>() {
                        Some(names) => write_name_array(names, out),
                        None => out.extend_from_slice(b"\\N"),
                    }
                }
                _ => out.extend_from_slice(b"\\N"),
            }
            out.push(b'\t');
            match origin {
                Some(o) if o.is_valid(row) => copy_escape(o.value(row).as_bytes(), out),
                _ => out.extend_from_slice(b"\\N"),
            }
            out.push(b'\n');
        }
    }
}

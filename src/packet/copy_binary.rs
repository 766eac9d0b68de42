//! Writing a part's rows in COPY's binary format: each typed Arrow value
//! goes out as the bytes PostgreSQL's receive function reads, with no text
//! to format here nor to parse at the server. Used when every column of the
//! part lands in a column of exactly the type its Arrow form stands for
//! ([`Part::copies_in_binary`]); any other part goes in text form.

use arrow::array::{Array, AsArray, StringArray};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int16Type, Int32Type,
    Int64Type, TimestampMicrosecondType,
};

use super::copy_out::BatchColumns;
use super::value::oid;
use super::Part;

/// The start of a binary COPY stream: signature, flags, header extension.
pub(crate) const BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The end of a binary COPY stream.
pub(crate) const BINARY_TRAILER: &[u8] = &(-1i16).to_be_bytes();

const TEXT: u32 = 25;
const VARCHAR: u32 = 1043;
const BPCHAR: u32 = 1042;
/// Microseconds from 1970-01-01 (Arrow's epoch) to 2000-01-01 (PostgreSQL's).
const EPOCH_SHIFT_MICROS: i64 = 946_684_800_000_000;
/// Days between the two epochs.
const EPOCH_SHIFT_DAYS: i32 = 10_957;
/// The largest numeric scale written in binary (its fraction, padded to
/// whole base-10000 digits, then fits an i128).
const MAX_BINARY_SCALE: i8 = 32;

/// Whether values of Arrow type `t` go in binary into a column of type `oid`.
fn fits(t: &DataType, column_oid: u32) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 => [TEXT, VARCHAR, BPCHAR].contains(&column_oid),
        DataType::Boolean => column_oid == oid::BOOL,
        DataType::Int16 => column_oid == oid::INT2,
        DataType::Int32 => column_oid == oid::INT4,
        DataType::Int64 => column_oid == oid::INT8,
        DataType::Float32 => column_oid == oid::FLOAT4,
        DataType::Float64 => column_oid == oid::FLOAT8,
        DataType::Date32 => column_oid == oid::DATE,
        DataType::Timestamp(_, None) => column_oid == oid::TIMESTAMP,
        DataType::Timestamp(_, Some(_)) => column_oid == oid::TIMESTAMPTZ,
        DataType::Decimal128(_, s) => column_oid == oid::NUMERIC && *s <= MAX_BINARY_SCALE,
        DataType::Binary => column_oid == oid::BYTEA,
        _ => false,
    }
}

/// Appends one field: its length, then its bytes.
fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Writes value `row` of `array` as a binary COPY field (length included).
fn write_value(array: &dyn Array, row: usize, out: &mut Vec<u8>) {
    if array.is_null(row) {
        out.extend_from_slice(&(-1i32).to_be_bytes());
        return;
    }
    match array.data_type() {
        DataType::Utf8 => field(out, array.as_string::<i32>().value(row).as_bytes()),
        DataType::LargeUtf8 => field(out, array.as_string::<i64>().value(row).as_bytes()),
        DataType::Boolean => field(out, &[u8::from(array.as_boolean().value(row))]),
        DataType::Int16 => field(
            out,
            &array.as_primitive::<Int16Type>().value(row).to_be_bytes(),
        ),
        DataType::Int32 => field(
            out,
            &array.as_primitive::<Int32Type>().value(row).to_be_bytes(),
        ),
        DataType::Int64 => field(
            out,
            &array.as_primitive::<Int64Type>().value(row).to_be_bytes(),
        ),
        DataType::Float32 => field(
            out,
            &array.as_primitive::<Float32Type>().value(row).to_be_bytes(),
        ),
        DataType::Float64 => field(
            out,
            &array.as_primitive::<Float64Type>().value(row).to_be_bytes(),
        ),
        DataType::Date32 => {
            let days = array.as_primitive::<Date32Type>().value(row) - EPOCH_SHIFT_DAYS;
            field(out, &days.to_be_bytes())
        }
        DataType::Timestamp(_, _) => {
            let micros =
                array.as_primitive::<TimestampMicrosecondType>().value(row) - EPOCH_SHIFT_MICROS;
            field(out, &micros.to_be_bytes())
        }
        DataType::Decimal128(_, s) => {
            write_numeric(array.as_primitive::<Decimal128Type>().value(row), *s, out)
        }
        DataType::Binary => field(out, array.as_binary::<i32>().value(row)),
        // `fits` let no other type through.
        _ => out.extend_from_slice(&(-1i32).to_be_bytes()),
    }
}

/// Writes `v` × 10^-`scale` as PostgreSQL's binary numeric: base-10000
/// digits, the weight of the first, the sign and the display scale.
fn write_numeric(v: i128, scale: i8, out: &mut Vec<u8>) {
    let scale = scale.clamp(0, MAX_BINARY_SCALE) as u32;
    let magnitude = v.unsigned_abs();
    let ten_s = 10u128.pow(scale);
    let (mut int, frac) = (magnitude / ten_s, magnitude % ten_s);
    // The fraction padded to whole base-10000 digits.
    let frac_digits = scale.div_ceil(4);
    let mut frac = frac * 10u128.pow(frac_digits * 4 - scale);
    let mut int_groups = Vec::new();
    while int > 0 {
        int_groups.push((int % 10_000) as i16);
        int /= 10_000;
    }
    int_groups.reverse();
    let mut frac_groups = vec![0i16; frac_digits as usize];
    for g in frac_groups.iter_mut().rev() {
        *g = (frac % 10_000) as i16;
        frac /= 10_000;
    }
    let mut weight = int_groups.len() as i16 - 1;
    let mut digits: Vec<i16> = int_groups.into_iter().chain(frac_groups).collect();
    let leading = digits.iter().take_while(|&&d| d == 0).count();
    digits.drain(..leading);
    weight -= leading as i16;
    while digits.last() == Some(&0) {
        digits.pop();
    }
    if digits.is_empty() {
        weight = 0;
    }
    let sign: u16 = if v < 0 && !digits.is_empty() {
        0x4000
    } else {
        0
    };
    out.extend_from_slice(&(8 + 2 * digits.len() as i32).to_be_bytes());
    out.extend_from_slice(&(digits.len() as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&(scale as i16).to_be_bytes());
    for d in digits {
        out.extend_from_slice(&d.to_be_bytes());
    }
}

/// Writes a list of names as a binary `text[]`.
fn write_name_array(names: &StringArray, out: &mut Vec<u8>) {
    let mut body = Vec::new();
    let n = names.iter().flatten().count() as i32;
    let dims = i32::from(n > 0);
    for v in [dims, 0, TEXT as i32] {
        body.extend_from_slice(&v.to_be_bytes());
    }
    if n > 0 {
        body.extend_from_slice(&n.to_be_bytes());
        body.extend_from_slice(&1i32.to_be_bytes());
        for name in names.iter().flatten() {
            field(&mut body, name.as_bytes());
        }
    }
    field(out, &body);
}

impl Part {
    /// Whether the part's data columns go in binary into columns of types
    /// `column_oids` (in the part's column order; a domain counts as its
    /// base type).
    pub(crate) fn copies_in_binary(&self, column_oids: &[u32]) -> bool {
        let Some(batch) = self.batches.first() else {
            return true;
        };
        self.layout.data.len() == column_oids.len()
            && self
                .layout
                .data
                .iter()
                .zip(column_oids)
                .all(|(&i, &o)| fits(batch.schema().field(i).data_type(), o))
    }

    /// Writes the rows of batch `index` as binary COPY tuples (no header nor
    /// trailer: see [`BINARY_HEADER`]): the data columns, then with `meta`
    /// the operation, the unchanged columns as a `text[]` and the origin.
    /// Truncate rows are skipped.
    pub(crate) fn write_copy_binary(&self, index: usize, meta: bool, out: &mut Vec<u8>) {
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
        let fields = (data.len() + if meta { 3 } else { 0 }) as i16;
        for row in 0..rows {
            let op = ops.value(row);
            if op == "T" {
                continue;
            }
            out.extend_from_slice(&fields.to_be_bytes());
            for a in &data {
                write_value(*a, row, out);
            }
            if !meta {
                continue;
            }
            field(out, op.as_bytes());
            match unchanged.filter(|u| u.is_valid(row)).and_then(|u| {
                let names = u.value(row);
                names.as_any().downcast_ref::<StringArray>().cloned()
            }) {
                Some(names) => write_name_array(&names, out),
                None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            }
            match origin {
                Some(o) if o.is_valid(row) => field(out, o.value(row).as_bytes()),
                _ => out.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(v: i128, scale: i8) -> (i16, i16, u16, i16, Vec<i16>) {
        let mut out = Vec::new();
        write_numeric(v, scale, &mut out);
        let word = |i: usize| i16::from_be_bytes([out[i], out[i + 1]]);
        let len = i32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize;
        assert_eq!(len, out.len() - 4);
        let n = word(4);
        let digits = (0..n as usize).map(|d| word(12 + 2 * d)).collect();
        (n, word(6), word(8) as u16, word(10), digits)
    }

    #[test]
    fn numerics_are_base_10000_digits_with_weight_sign_and_scale() {
        // 123.45
        assert_eq!(numeric(12345, 2), (2, 0, 0, 2, vec![123, 4500]));
        // -123.45
        assert_eq!(numeric(-12345, 2), (2, 0, 0x4000, 2, vec![123, 4500]));
        // 0.00, and -0.00 is plain zero
        assert_eq!(numeric(0, 2), (0, 0, 0, 2, vec![]));
        assert_eq!(numeric(-0, 2), (0, 0, 0, 2, vec![]));
        // 1000000 (scale 0): 100|0000, trailing zero digit dropped
        assert_eq!(numeric(1_000_000, 0), (1, 1, 0, 0, vec![100]));
        // 0.00000001 (scale 8): weight -2
        assert_eq!(numeric(1, 8), (1, -2, 0, 8, vec![1]));
        // 12345678.9 (scale 1)
        assert_eq!(
            numeric(123_456_789, 1),
            (3, 1, 0, 1, vec![1234, 5678, 9000])
        );
        // the largest numeric(38,0)
        let max = 10i128.pow(38) - 1;
        assert_eq!(numeric(max, 0).1, 9);
    }

    #[test]
    fn only_exact_types_go_in_binary() {
        assert!(fits(&DataType::Int32, oid::INT4));
        assert!(!fits(&DataType::Int32, oid::INT8));
        assert!(fits(&DataType::Utf8, VARCHAR));
        assert!(!fits(&DataType::Utf8, oid::NUMERIC));
        assert!(!fits(&DataType::Decimal128(38, 37), oid::NUMERIC));
        assert!(fits(&DataType::Decimal128(10, 2), oid::NUMERIC));
    }
}

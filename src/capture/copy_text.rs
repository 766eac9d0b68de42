//! Reading PostgreSQL's COPY text format (`COPY … TO STDOUT`): one line per
//! row, tab-separated, `\N` for NULL, backslash escapes. Pure code.

use bytes::{Bytes, BytesMut};

use crate::pgoutput::Value;

/// Splits one COPY text line (without its newline) into values: a field
/// without escapes is a slice of `line`, not a copy (a full sync reads
/// millions of them).
pub(crate) fn parse_line(line: &Bytes) -> Vec<Value> {
    let mut values = Vec::new();
    for field in line.split(|&b| b == b'\t') {
        if field == b"\\N" {
            values.push(Value::Null);
            continue;
        }
        if !field.contains(&b'\\') {
            values.push(Value::Text(line.slice_ref(field)));
            continue;
        }
        let mut out = BytesMut::with_capacity(field.len());
        let mut i = 0;
        while i < field.len() {
            let b = field[i];
            if b != b'\\' || i + 1 == field.len() {
                out.extend_from_slice(&[b]);
                i += 1;
                continue;
            }
            let e = field[i + 1];
            i += 2;
            let c = match e {
                b'b' => 8,
                b'f' => 12,
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                b'v' => 11,
                b'0'..=b'7' => {
                    // Up to three octal digits.
                    let mut v = u32::from(e - b'0');
                    let mut n = 1;
                    while n < 3 && i < field.len() && (b'0'..=b'7').contains(&field[i]) {
                        v = v * 8 + u32::from(field[i] - b'0');
                        i += 1;
                        n += 1;
                    }
                    (v & 0xff) as u8
                }
                b'x' => {
                    let mut v = 0u32;
                    let mut n = 0;
                    while n < 2 && i < field.len() && field[i].is_ascii_hexdigit() {
                        v = v * 16 + (field[i] as char).to_digit(16).unwrap_or(0);
                        i += 1;
                        n += 1;
                    }
                    if n == 0 {
                        b'x'
                    } else {
                        v as u8
                    }
                }
                other => other,
            };
            out.extend_from_slice(&[c]);
        }
        values.push(Value::Text(out.freeze()));
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::copy_out::copy_escape;
    use proptest::prelude::*;

    fn t(s: &str) -> Value {
        Value::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn fields_nulls_and_escapes() {
        assert_eq!(
            parse_line(&Bytes::from_static(b"1\t\\N\ta\\tb\\\\c\\nd\t")),
            vec![t("1"), Value::Null, t("a\tb\\c\nd"), t("")]
        );
        assert_eq!(
            parse_line(&Bytes::from_static(b"\\101\\x42")),
            vec![t("AB")]
        );
    }

    proptest! {
        #[test]
        fn reads_what_copy_escape_writes(fields in proptest::collection::vec(".*", 1..5)) {
            let mut line = Vec::new();
            for (i, f) in fields.iter().enumerate() {
                if i > 0 { line.push(b'\t'); }
                copy_escape(f.as_bytes(), &mut line);
            }
            let want: Vec<Value> = fields.iter().map(|f| t(f)).collect();
            prop_assert_eq!(parse_line(&Bytes::from(line)), want);
        }
    }
}

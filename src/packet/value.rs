//! Conversions between PostgreSQL's text form of a value and its typed Arrow
//! form: the mapping of DESIGN.md ("Packets").
//!
//! Parsing is strict: a text value that does not fit the typed form (a
//! numeric `NaN`, a date `infinity`, a year past 9999) returns `None`, and the
//! encoder then keeps the whole column as text for that part. Nothing is lost.

use arrow::datatypes::{DataType, TimeUnit};

/// PostgreSQL type OIDs with a typed Arrow form.
pub(crate) mod oid {
    pub(crate) const BOOL: u32 = 16;
    pub(crate) const BYTEA: u32 = 17;
    pub(crate) const INT8: u32 = 20;
    pub(crate) const INT2: u32 = 21;
    pub(crate) const INT4: u32 = 23;
    pub(crate) const FLOAT4: u32 = 700;
    pub(crate) const FLOAT8: u32 = 701;
    pub(crate) const DATE: u32 = 1082;
    pub(crate) const TIMESTAMP: u32 = 1114;
    pub(crate) const TIMESTAMPTZ: u32 = 1184;
    pub(crate) const NUMERIC: u32 = 1700;
}

/// The typed Arrow form of a PostgreSQL type; `Utf8` for the text form.
pub(crate) fn arrow_type(type_oid: u32, type_modifier: i32) -> DataType {
    match type_oid {
        oid::BOOL => DataType::Boolean,
        oid::BYTEA => DataType::Binary,
        oid::INT2 => DataType::Int16,
        oid::INT4 => DataType::Int32,
        oid::INT8 => DataType::Int64,
        oid::FLOAT4 => DataType::Float32,
        oid::FLOAT8 => DataType::Float64,
        oid::DATE => DataType::Date32,
        oid::TIMESTAMP => DataType::Timestamp(TimeUnit::Microsecond, None),
        oid::TIMESTAMPTZ => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        oid::NUMERIC => match numeric_precision_scale(type_modifier) {
            Some((p, s)) => DataType::Decimal128(p, s),
            None => DataType::Utf8,
        },
        _ => DataType::Utf8,
    }
}

/// Precision and scale of a constrained numeric that fits Decimal128.
fn numeric_precision_scale(type_modifier: i32) -> Option<(u8, i8)> {
    if type_modifier < 4 {
        return None;
    }
    let t = type_modifier - 4;
    let precision = (t >> 16) & 0xffff;
    // Since PostgreSQL 15 the scale is an 11-bit signed number.
    let scale = ((t & 0x7ff) ^ 0x400) - 0x400;
    if (1..=38).contains(&precision) && (0..=precision).contains(&scale) {
        Some((precision as u8, scale as i8))
    } else {
        None
    }
}

/// Parses PostgreSQL's `t`/`f`.
pub(crate) fn parse_bool(s: &[u8]) -> Option<bool> {
    match s {
        b"t" => Some(true),
        b"f" => Some(false),
        _ => None,
    }
}

/// Parses an integer of any width.
pub(crate) fn parse_int<T: std::str::FromStr>(s: &[u8]) -> Option<T> {
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// Parses float4/float8 text, including `NaN` and `±Infinity`.
pub(crate) fn parse_float(s: &[u8]) -> Option<f64> {
    match s {
        b"NaN" => Some(f64::NAN),
        b"Infinity" => Some(f64::INFINITY),
        b"-Infinity" => Some(f64::NEG_INFINITY),
        _ => {
            let s = std::str::from_utf8(s).ok()?;
            // Rust also reads "inf" and "nan": PostgreSQL never writes those.
            if s.bytes()
                .any(|b| b.is_ascii_alphabetic() && b != b'e' && b != b'E')
            {
                return None;
            }
            s.parse().ok()
        }
    }
}

/// Writes a float the way PostgreSQL reads it back exactly.
pub(crate) fn format_float(v: f64, out: &mut Vec<u8>) {
    use std::io::Write;
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if v == f64::INFINITY {
        out.extend_from_slice(b"Infinity");
    } else if v == f64::NEG_INFINITY {
        out.extend_from_slice(b"-Infinity");
    } else {
        // Debug prints the shortest text that round-trips.
        let _ = write!(out, "{v:?}");
    }
}

/// Writes a float4 the way PostgreSQL reads it back exactly.
pub(crate) fn format_float32(v: f32, out: &mut Vec<u8>) {
    use std::io::Write;
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if v == f32::INFINITY {
        out.extend_from_slice(b"Infinity");
    } else if v == f32::NEG_INFINITY {
        out.extend_from_slice(b"-Infinity");
    } else {
        let _ = write!(out, "{v:?}");
    }
}

/// Parses numeric text into a Decimal128 value of the given scale.
pub(crate) fn parse_decimal(s: &[u8], precision: u8, scale: i8) -> Option<i128> {
    let (neg, digits) = match s.first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let mut int_part = digits;
    let mut frac_part: &[u8] = &[];
    if let Some(dot) = digits.iter().position(|&b| b == b'.') {
        int_part = &digits[..dot];
        frac_part = &digits[dot + 1..];
    }
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    let scale = usize::try_from(scale).ok()?;
    if frac_part.len() > scale {
        return None;
    }
    let mut v: i128 = 0;
    let mut ndigits = 0usize;
    for &b in int_part.iter().chain(frac_part) {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
        ndigits += 1;
    }
    for _ in frac_part.len()..scale {
        v = v.checked_mul(10)?;
        ndigits += 1;
    }
    if ndigits > 39 || v >= 10i128.checked_pow(u32::from(precision))? {
        return None;
    }
    Some(if neg { -v } else { v })
}

/// Writes a Decimal128 value with its scale as PostgreSQL numeric text.
pub(crate) fn format_decimal(v: i128, scale: i8, out: &mut Vec<u8>) {
    let digits = v.unsigned_abs().to_string();
    if v < 0 {
        out.push(b'-');
    }
    let scale = usize::try_from(scale).unwrap_or(0);
    if scale == 0 {
        out.extend_from_slice(digits.as_bytes());
        return;
    }
    if digits.len() <= scale {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', scale - digits.len()));
        out.extend_from_slice(digits.as_bytes());
    } else {
        let (i, f) = digits.split_at(digits.len() - scale);
        out.extend_from_slice(i.as_bytes());
        out.push(b'.');
        out.extend_from_slice(f.as_bytes());
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a number of days since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// Parses ISO `YYYY-MM-DD` (years 1 to 9999) into days since the epoch.
pub(crate) fn parse_date(s: &[u8]) -> Option<i32> {
    if s.len() != 10 || s[4] != b'-' || s[7] != b'-' {
        return None;
    }
    let (y, m, d) = (digits(&s[..4])?, digits(&s[5..7])?, digits(&s[8..10])?);
    if y == 0 || !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    i32::try_from(days_from_civil(i64::from(y), m, d)).ok()
}

fn days_in_month(y: u32, m: u32) -> u32 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400) => 29,
        2 => 28,
        _ => 31,
    }
}

/// Writes days since the epoch as ISO `YYYY-MM-DD`.
pub(crate) fn format_date(days: i32, out: &mut Vec<u8>) {
    use std::io::Write;
    let (y, m, d) = civil_from_days(i64::from(days));
    let _ = write!(out, "{y:04}-{m:02}-{d:02}");
}

/// Parses `YYYY-MM-DD HH:MM:SS[.ffffff]` (and a `+00` suffix when `utc`) into
/// microseconds since the epoch.
pub(crate) fn parse_timestamp(s: &[u8], utc: bool) -> Option<i64> {
    let s = if utc { s.strip_suffix(b"+00")? } else { s };
    if s.len() < 19 || s[10] != b' ' || s[13] != b':' || s[16] != b':' {
        return None;
    }
    let days = i64::from(parse_date(&s[..10])?);
    let (h, mi, sec) = (
        digits(&s[11..13])?,
        digits(&s[14..16])?,
        digits(&s[17..19])?,
    );
    if h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let mut micros = 0i64;
    if s.len() > 19 {
        let frac = s[19..].strip_prefix(b".")?;
        if frac.is_empty() || frac.len() > 6 {
            return None;
        }
        micros = i64::from(digits(frac)?) * 10i64.pow(6 - frac.len() as u32);
    }
    Some(
        ((days * 24 + i64::from(h)) * 60 + i64::from(mi)) * 60_000_000
            + i64::from(sec) * 1_000_000
            + micros,
    )
}

/// Writes microseconds since the epoch as `YYYY-MM-DD HH:MM:SS.ffffff`
/// (with `+00` when `utc`).
pub(crate) fn format_timestamp(micros: i64, utc: bool, out: &mut Vec<u8>) {
    use std::io::Write;
    let days = micros.div_euclid(86_400_000_000);
    let rest = micros.rem_euclid(86_400_000_000);
    format_date(days as i32, out);
    let secs = rest / 1_000_000;
    let frac = rest % 1_000_000;
    let _ = write!(
        out,
        " {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    if frac != 0 {
        let _ = write!(out, ".{frac:06}");
    }
    if utc {
        out.extend_from_slice(b"+00");
    }
}

/// Parses bytea hex output (`\x0a1b`).
pub(crate) fn parse_bytea(s: &[u8]) -> Option<Vec<u8>> {
    let hex = s.strip_prefix(b"\\x")?;
    if hex.len() % 2 != 0 {
        return None;
    }
    hex.chunks(2)
        .map(|p| Some((hex_digit(p[0])? << 4) | hex_digit(p[1])?))
        .collect()
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Writes bytes as bytea hex input (`\x0a1b`).
pub(crate) fn format_bytea(v: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(b"\\x");
    for b in v {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 15)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn numeric_typmod() {
        // numeric(10,2): ((10 << 16) | 2) + 4
        assert_eq!(
            arrow_type(oid::NUMERIC, (10 << 16 | 2) + 4),
            DataType::Decimal128(10, 2)
        );
        assert_eq!(arrow_type(oid::NUMERIC, -1), DataType::Utf8);
        assert_eq!(arrow_type(oid::NUMERIC, (50 << 16) + 4), DataType::Utf8);
    }

    #[test]
    fn decimals() {
        assert_eq!(parse_decimal(b"123.45", 10, 2), Some(12345));
        assert_eq!(parse_decimal(b"-0.5", 10, 2), Some(-50));
        assert_eq!(parse_decimal(b"7", 10, 2), Some(700));
        assert_eq!(parse_decimal(b"NaN", 10, 2), None);
        assert_eq!(parse_decimal(b"1.234", 10, 2), None);
        let mut out = Vec::new();
        format_decimal(-50, 2, &mut out);
        assert_eq!(out, b"-0.50");
        out.clear();
        format_decimal(12345, 2, &mut out);
        assert_eq!(out, b"123.45");
    }

    #[test]
    fn dates_and_timestamps() {
        assert_eq!(parse_date(b"1970-01-01"), Some(0));
        assert_eq!(parse_date(b"2000-02-29"), Some(11016));
        assert_eq!(parse_date(b"2001-02-29"), None);
        assert_eq!(parse_date(b"infinity"), None);
        let t = parse_timestamp(b"2024-05-06 07:08:09.5", false).unwrap();
        let mut out = Vec::new();
        format_timestamp(t, false, &mut out);
        assert_eq!(out, b"2024-05-06 07:08:09.500000");
        let t = parse_timestamp(b"1969-12-31 23:59:59+00", true).unwrap();
        assert_eq!(t, -1_000_000);
        out.clear();
        format_timestamp(t, true, &mut out);
        assert_eq!(out, b"1969-12-31 23:59:59+00");
    }

    #[test]
    fn floats() {
        assert!(parse_float(b"NaN").unwrap().is_nan());
        assert_eq!(parse_float(b"-Infinity"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_float(b"inf"), None);
        assert_eq!(parse_float(b"1.5e+300"), Some(1.5e300));
    }

    proptest! {
        #[test]
        fn date_round_trip(days in -719_162i32..2_932_896) {
            let mut out = Vec::new();
            format_date(days, &mut out);
            prop_assert_eq!(parse_date(&out), Some(days));
        }

        #[test]
        fn timestamp_round_trip(micros in -62_135_596_800_000_000i64..253_402_300_799_999_999) {
            let mut out = Vec::new();
            format_timestamp(micros, true, &mut out);
            prop_assert_eq!(parse_timestamp(&out, true), Some(micros));
        }

        #[test]
        fn float_round_trip(v in any::<f64>()) {
            let mut out = Vec::new();
            format_float(v, &mut out);
            let back = parse_float(&out).unwrap();
            prop_assert!(back == v || (back.is_nan() && v.is_nan()));
        }

        #[test]
        fn decimal_round_trip(v in -9_999_999_999_i128..9_999_999_999) {
            let mut out = Vec::new();
            format_decimal(v, 2, &mut out);
            prop_assert_eq!(parse_decimal(&out, 12, 2), Some(v));
        }

        #[test]
        fn bytea_round_trip(v in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut out = Vec::new();
            format_bytea(&v, &mut out);
            prop_assert_eq!(parse_bytea(&out), Some(v));
        }
    }
}
